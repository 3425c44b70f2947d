//! The crate's module graph, checked: top-level modules depend on each other
//! in one direction only, from `cli` down to `store` and `config`.
//!
//! A test, not a tool: it reads `src/` and finds every `crate::<module>` a
//! top-level module names (in `use` lines and in paths), so a new import that
//! closes a cycle fails `cargo test` with the cycle spelled out, and
//! `cargo test --lib architecture -- --nocapture` prints the whole graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the top-level modules it names.
pub(crate) type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file belongs to: `src/sync/run.rs` → `sync`, `src/app.rs` → `app`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    // This file's own test strings name modules it does not depend on.
    (!matches!(name, "lib" | "main" | "architecture")).then(|| name.to_string())
}

/// Every top-level module named by `crate::x` or inside `use crate::{x, y::z}`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first segment of each item
            // at the top level of the braces.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphanumeric() || c == '_') => {
                        found.insert(ident(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The graph of `src/`, tests included (a test's imports are dependencies too).
pub(crate) fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let Some(module) = module_of(src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("a source file is readable");
        let entry = graph.entry(module.clone()).or_default();
        for named in named_modules(&text) {
            if named != module {
                entry.insert(named);
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// One cycle of the graph, if it has any (depth-first search).
pub(crate) fn a_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_read_from_paths_and_use_groups() {
        let named = named_modules(
            "use crate::{config::{A, B}, store, sync::x};\nfn f() { crate::metrics::inc(); }",
        );
        let want: BTreeSet<String> = ["config", "store", "sync", "metrics"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(named, want);
    }

    #[test]
    fn a_cycle_is_found_and_a_layered_graph_has_none() {
        let mut g = Graph::new();
        g.entry("a".into()).or_default().insert("b".into());
        g.entry("b".into()).or_default().insert("c".into());
        g.entry("c".into()).or_default();
        assert_eq!(a_cycle(&g), None);
        g.get_mut("c").unwrap().insert("a".into());
        assert_eq!(
            a_cycle(&g).unwrap(),
            vec!["a".to_string(), "b".into(), "c".into(), "a".into()]
        );
    }

    /// The crate's own graph: printed, and free of cycles.
    #[test]
    fn the_top_level_modules_depend_on_each_other_in_one_direction() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let graph = graph(&src);
        for (module, deps) in &graph {
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            println!("{module} -> {}", deps.join(", "));
        }
        if let Some(cycle) = a_cycle(&graph) {
            panic!(
                "import cycle between top-level modules: {}",
                cycle.join(" -> ")
            );
        }
    }
}
