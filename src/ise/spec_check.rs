//! Cisco's Swagger documents as a validator of the ISE API's answers, for
//! tests only: the unit tests of `xml` use it, and the daemon's HTTP tests
//! include this file (`#[path]`) to check what the live daemon answers. It
//! names no `crate::` item, so both can compile it.
//!
//! The documents are loaded from `tests/fixtures/cisco-ise/`; an answer is
//! checked against the definition of its `<name>` in its version's
//! document, with the allowances `xml`'s documentation argues for.

#![allow(dead_code)]

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;
use std::collections::BTreeSet;
use std::path::PathBuf;
use yaml_rust2::{Yaml, YamlLoader};

// --- fixtures --------------------------------------------------------

pub fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cisco-ise")
        .join(relative)
}

pub fn fixture(relative: &str) -> String {
    let path = fixture_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn example(name: &str) -> String {
    fixture(&format!("examples/{name}"))
}

/// Cisco's Swagger for a version: v3's own, or the v1/v2 document.
pub fn swagger(version: u8) -> Yaml {
    let file = if version >= 3 {
        "cisco-ise-mdm-mobile-device-management.yaml"
    } else {
        "cisco-ise-mdm-older-versions.yaml"
    };
    YamlLoader::load_from_str(&fixture(file))
        .expect("Cisco's Swagger is YAML")
        .remove(0)
}

// --- a small XML tree, read independently of `xml`'s reader ----------

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    /// The element's own character data, untrimmed.
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn at(&self, path: &str) -> &Node {
        path.split('/').fold(self, |node, name| {
            node.child(name)
                .unwrap_or_else(|| panic!("no <{name}> in <{}> (path {path})", node.name))
        })
    }

    pub fn has(&self, path: &str) -> bool {
        let mut node = self;
        for name in path.split('/') {
            match node.child(name) {
                Some(child) => node = child,
                None => return false,
            }
        }
        true
    }

    pub fn text_at(&self, path: &str) -> &str {
        &self.at(path).text
    }

    /// Every element name in the tree, at any depth.
    pub fn names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::from([self.name.clone()]);
        for child in &self.children {
            names.extend(child.names());
        }
        names
    }

    /// Texts trimmed, empty leaves (`<phone_number></phone_number>`)
    /// dropped: the form in which two documents mean the same.
    pub fn normalised(&self) -> Node {
        Node {
            name: self.name.clone(),
            text: self.text.trim().to_owned(),
            children: self
                .children
                .iter()
                .filter(|c| !(c.children.is_empty() && c.text.trim().is_empty()))
                .map(Node::normalised)
                .collect(),
        }
    }

    pub fn without(&self, name: &str) -> Node {
        Node {
            children: self
                .children
                .iter()
                .filter(|c| c.name != name)
                .map(|c| c.without(name))
                .collect(),
            ..self.clone()
        }
    }
}

pub fn tree(xml: &str) -> Result<Node, String> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Node> = Vec::new();
    let mut root = None;
    let new = |start: &BytesStart<'_>| Node {
        name: String::from_utf8(start.name().as_ref().to_vec()).expect("UTF-8 name"),
        text: String::new(),
        children: Vec::new(),
    };
    let mut close = |stack: &mut Vec<Node>, node: Node| match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => root = Some(node),
    };
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(s) => stack.push(new(&s)),
            Event::Empty(s) => close(&mut stack, new(&s)),
            Event::End(_) => {
                let node = stack.pop().ok_or("unbalanced")?;
                close(&mut stack, node);
            }
            Event::Text(t) => {
                let t = t.decode().map_err(|e| e.to_string())?;
                match stack.last_mut() {
                    Some(node) => node.text.push_str(&t),
                    None if t.trim().is_empty() => {}
                    None => return Err(format!("text outside the root: {t:?}")),
                }
            }
            Event::GeneralRef(r) => {
                let c = resolve(&r)?;
                stack
                    .last_mut()
                    .ok_or("reference outside the root")?
                    .text
                    .push(c);
            }
            Event::CData(c) => {
                let t = c.decode().map_err(|e| e.to_string())?;
                stack
                    .last_mut()
                    .ok_or("CDATA outside the root")?
                    .text
                    .push_str(&t);
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err("unclosed elements".into());
    }
    root.ok_or_else(|| "no root element".into())
}

/// A character or predefined entity reference.
fn resolve(reference: &BytesRef<'_>) -> Result<char, String> {
    if let Some(c) = reference.resolve_char_ref().map_err(|e| e.to_string())? {
        return Ok(c);
    }
    match reference.decode().map_err(|e| e.to_string())?.as_ref() {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        other => Err(format!("unknown entity &{other};")),
    }
}

pub fn parsed(xml: &str) -> Node {
    tree(xml).unwrap_or_else(|e| panic!("{e}\n{xml}"))
}

// --- the validator: Cisco's definitions, loaded from the Swagger ------

#[derive(Debug, Clone)]
pub enum Schema {
    Object(Vec<(String, Schema)>),
    Boolean,
    Integer,
    Str,
}

impl Schema {
    pub fn from_yaml(def: &Yaml) -> Schema {
        match def["type"].as_str() {
            Some("object") => Schema::Object(
                def["properties"]
                    .as_hash()
                    .expect("an object has properties")
                    .iter()
                    .map(|(k, v)| (k.as_str().expect("a name").to_owned(), Schema::from_yaml(v)))
                    .collect(),
            ),
            Some("boolean") => Schema::Boolean,
            Some("integer") => Schema::Integer,
            Some("string") => Schema::Str,
            other => panic!("type {other:?} in {def:?}"),
        }
    }

    pub fn properties(&mut self, path: &[&str]) -> &mut Vec<(String, Schema)> {
        let Schema::Object(props) = self else {
            panic!("not an object at {path:?}")
        };
        match path.split_first() {
            None => props,
            Some((first, rest)) => props
                .iter_mut()
                .find(|(n, _)| n == first)
                .unwrap_or_else(|| panic!("no {first}"))
                .1
                .properties(rest),
        }
    }
}

/// The Swagger path serving a document `name`, and its HTTP method.
pub fn operation<'y>(swagger: &'y Yaml, name: &str) -> &'y Yaml {
    let (suffix, method) = match name {
        "mdminfo" => ("/ciscoise/mdminfo/", "get"),
        "attributes" => ("/devices/", "get"),
        "action" => ("/action/actionType=<action type>", "post"),
        "sendmessage" => ("/sendmessage", "put"),
        other => panic!("no document named {other}"),
    };
    let (_, path) = swagger["paths"]
        .as_hash()
        .expect("paths")
        .iter()
        .find(|(p, _)| p.as_str().is_some_and(|p| p.ends_with(suffix)))
        .unwrap_or_else(|| panic!("no path ending {suffix}"));
    &path[method]
}

/// The definition (name and YAML) of the 200 answer of a document.
pub fn response_definition(swagger: &Yaml, name: &str) -> (String, Yaml) {
    let reference = operation(swagger, name)["responses"][200]["schema"]["$ref"]
        .as_str()
        .expect("a $ref")
        .to_owned();
    let def_name = reference.trim_start_matches("#/definitions/").to_owned();
    let def = swagger["definitions"][def_name.as_str()].clone();
    assert!(!def.is_badvalue(), "{def_name} is defined");
    (def_name, def)
}

/// `(display name, type)` of each row of the devices query's `filter`
/// table.
pub fn filter_table(swagger: &Yaml) -> Vec<(String, String)> {
    let parameters = operation(swagger, "attributes")["parameters"]
        .as_vec()
        .expect("parameters");
    let filter = parameters
        .iter()
        .find(|p| p["name"].as_str() == Some("filter"))
        .expect("a filter parameter");
    let description = filter["description"].as_str().expect("a description");
    let strip_tags = |cell: &str| {
        let mut out = String::new();
        let mut in_tag = false;
        for c in cell.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    description
        .split("<tr>")
        .filter_map(|row| {
            let cells: Vec<String> = row
                .split("<td>")
                .skip(1)
                .map(|c| strip_tags(c.split("</td>").next().unwrap_or("")))
                .collect();
            (cells.len() >= 2 && cells[0] != "Attribute Name")
                .then(|| (cells[0].clone(), cells[1].clone()))
        })
        .collect()
}

/// What a version's answer `name` may hold: Cisco's definition, with the
/// allowances the module documentation argues for, each named here.
pub fn response_schema(version: u8, name: &str) -> Schema {
    let swagger = swagger(version);
    let (def_name, def) = response_definition(&swagger, name);
    assert_eq!(
        def["properties"]["name"]["example"].as_str(),
        Some(name),
        "{def_name} is the definition of name={name}"
    );
    let mut schema = Schema::from_yaml(&def);
    let device = ["deviceList", "device"];
    match name {
        "attributes" => {
            // Allowance 1: the attributes the `filter` table lists.
            let attributes = schema.properties(&["deviceList", "device", "attributes"]);
            let defined = attributes.clone();
            let squash = |s: &str| {
                s.chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
                    .to_ascii_lowercase()
            };
            let mut widened: Vec<(String, Schema)> = Vec::new();
            for (display, kind) in filter_table(&swagger) {
                let element = match display.as_str() {
                    // The definition's <compliance> object carries it.
                    "Compliance Status" => "compliance".to_owned(),
                    // "Time period in days": a query setting, not an
                    // attribute of a device.
                    "period" => continue,
                    _ => defined
                        .iter()
                        .find(|(n, _)| squash(n) == squash(&display))
                        .map_or_else(
                            || display.to_ascii_lowercase().replace(' ', "_"),
                            |(n, _)| n.clone(),
                        ),
                };
                let element_schema = match defined.iter().find(|(n, _)| *n == element) {
                    Some((_, s)) => s.clone(),
                    None if kind.eq_ignore_ascii_case("boolean") => Schema::Boolean,
                    None => Schema::Str,
                };
                if !widened.iter().any(|(n, _)| *n == element) {
                    widened.push((element, element_schema));
                }
            }
            for (n, s) in defined {
                if !widened.iter().any(|(w, _)| *w == n) {
                    widened.push((n, s));
                }
            }
            *attributes = widened;
            if version >= 3 {
                // Allowance 2: v3 keys legacy MAC queries and
                // deviceidentifier=macaddress listings by <macaddress>.
                schema
                    .properties(&device)
                    .insert(0, ("macaddress".into(), Schema::Str));
            }
        }
        "action" if version >= 3 => {
            schema
                .properties(&device)
                .insert(0, ("macaddress".into(), Schema::Str));
        }
        "sendmessage" => {
            // Allowance 3: the v1/v2 definition keys its devices by
            // nothing at all; MaaS360 keys them by <macaddress>. (v3: as
            // allowance 2.)
            schema
                .properties(&device)
                .insert(0, ("macaddress".into(), Schema::Str));
        }
        _ => {}
    }
    schema
}

/// Checks an answer against the version's Swagger: only defined element
/// names at each level, `device` the only one repeated, booleans exactly
/// `true`/`false`, integers integers, no text in an object, `api_version`
/// the version; with `in_order`, children in the definition's order.
pub fn validate(xml: &str, version: u8, in_order: bool) -> Result<(), String> {
    let root = tree(xml)?;
    if root.name != "ise_api" {
        return Err(format!("root <{}>", root.name));
    }
    let name = root.child("name").ok_or("no <name>")?.text.clone();
    let api_version = root
        .child("api_version")
        .ok_or("no <api_version>")?
        .text
        .clone();
    if api_version != version.to_string() {
        return Err(format!(
            "api_version {api_version}, validating as {version}"
        ));
    }
    if !matches!(
        name.as_str(),
        "mdminfo" | "attributes" | "action" | "sendmessage"
    ) {
        return Err(format!("no document is named {name:?}"));
    }
    check(&root, &response_schema(version, &name), "ise_api", in_order)
}

pub fn check(node: &Node, schema: &Schema, path: &str, in_order: bool) -> Result<(), String> {
    let leaf = |node: &Node| {
        if node.children.is_empty() {
            Ok(())
        } else {
            Err(format!("{path}: a {schema:?} holds elements"))
        }
    };
    match schema {
        Schema::Object(props) => {
            if !node.text.trim().is_empty() {
                return Err(format!("{path}: text {:?} in an object", node.text));
            }
            let mut last = 0;
            let mut seen = BTreeSet::new();
            for child in &node.children {
                let at = format!("{path}/{}", child.name);
                let index = props
                    .iter()
                    .position(|(n, _)| *n == child.name)
                    .ok_or_else(|| format!("{at}: not defined"))?;
                if child.name != "device" && !seen.insert(&child.name) {
                    return Err(format!("{at}: repeated"));
                }
                if in_order && index < last {
                    return Err(format!("{at}: out of the definition's order"));
                }
                last = index;
                check(child, &props[index].1, &at, in_order)?;
            }
            Ok(())
        }
        Schema::Boolean => {
            leaf(node)?;
            match node.text.as_str() {
                "true" | "false" => Ok(()),
                other => Err(format!("{path}: {other:?} is not a boolean")),
            }
        }
        Schema::Integer => {
            leaf(node)?;
            node.text
                .parse::<i64>()
                .map(drop)
                .map_err(|_| format!("{path}: {:?} is not an integer", node.text))
        }
        Schema::Str => leaf(node),
    }
}
