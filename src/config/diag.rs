//! Errors and warnings that point into a config file.
//!
//! toml reports byte spans; operators want `FILE:LINE:COL` and the dotted key
//! they have to fix. [`Source`] keeps the text of one file so both can be
//! derived: the position from a byte offset, and the key from the `key =` in
//! front of the offset plus the nearest `[table]` / `[[array]]` header above it
//! (toml's own type-mismatch messages do not name the key).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one config file, at a 1-based line and column (in characters).
///
/// The message names the offending key and never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one load, in file order, then line and column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One line per error, `FILE:LINE:COL: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The text of one config file, with an index of its line starts.
#[derive(Debug)]
pub(super) struct Source {
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(path: PathBuf, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            path,
            text,
            line_starts,
        }
    }

    /// The directory relative paths in this file are resolved against.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new(""))
    }

    /// 1-based (line, column) of a byte offset; the column counts characters.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            // `line_starts[0] == 0`, so `i >= 1` here.
            Err(i) => i - 1,
        };
        let col = self.text[self.line_starts[line]..offset].chars().count() + 1;
        (line + 1, col)
    }

    pub fn error_at(&self, offset: usize, message: impl Into<String>) -> ConfigError {
        let (line, col) = self.position(offset);
        ConfigError {
            file: self.path.clone(),
            line,
            col,
            message: message.into(),
        }
    }

    /// `FILE:LINE:COL` for warnings, which are plain strings.
    pub fn location(&self, offset: usize) -> String {
        let (line, col) = self.position(offset);
        format!("{}:{line}:{col}", self.path.display())
    }

    /// Turns a toml error into ours. Syntax errors (`syntax == true`) keep
    /// toml's message; deserialization errors get the dotted key in front,
    /// except "unknown field" ones, which already name the key.
    pub fn toml_error(&self, e: &toml::de::Error, syntax: bool) -> ConfigError {
        let span: Option<Range<usize>> = e.span();
        let offset = span.as_ref().map_or(0, |s| s.start);
        // toml's messages can span lines ("expected …" on a second line);
        // ours are one line each.
        let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        let message = if syntax {
            format!("invalid TOML: {message}")
        } else if message.starts_with("unknown field") || span.is_none() {
            message
        } else {
            match self.key_at(offset) {
                key if key.is_empty() => message,
                key => format!("`{key}`: {message}"),
            }
        };
        self.error_at(offset, message)
    }

    /// The dotted key whose value starts at `offset`, e.g. `mdm.credentials.password`:
    /// the nearest table header above the offset, plus the keys written on the
    /// offset's line in front of it (inline tables included).
    pub fn key_at(&self, offset: usize) -> String {
        let (line, _) = self.position(offset);
        let line_start = self.line_starts[line - 1];
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let prefix = &self.text[line_start..offset];
        let mut path = if prefix.trim_start().starts_with('[') {
            // The offset is on a header line: the header is the key.
            Vec::new()
        } else {
            self.header_above(line - 1)
        };
        path.extend(inline_keys(prefix));
        path.join(".")
    }

    /// The path of the nearest `[table]` or `[[array]]` header on a line before
    /// `line_index` (0-based), or the empty path for the root table.
    fn header_above(&self, line_index: usize) -> Vec<String> {
        for i in (0..line_index).rev() {
            let start = self.line_starts[i];
            let end = self
                .line_starts
                .get(i + 1)
                .copied()
                .unwrap_or(self.text.len());
            if let Some(path) = parse_header(&self.text[start..end]) {
                return path;
            }
        }
        Vec::new()
    }

    /// Offset of the header line `[dotted]` (or `[[dotted]]`) within `range`, if any.
    pub fn find_header(&self, range: Range<usize>, dotted: &str) -> Option<usize> {
        let end = range.end.min(self.text.len());
        self.line_starts
            .iter()
            .copied()
            .filter(|&s| s >= range.start && s < end)
            .find(|&s| {
                let line_end = self.text[s..].find('\n').map_or(self.text.len(), |i| s + i);
                parse_header(&self.text[s..line_end]).is_some_and(|p| p.join(".") == dotted)
            })
            .map(|s| s + (self.text[s..].len() - self.text[s..].trim_start().len()))
    }
}

/// `[a.b]` / `[[a.b]]` (with an optional comment) → `["a", "b"]`.
fn parse_header(line: &str) -> Option<Vec<String>> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let close = inner.find(']')?;
    let path: Vec<String> = inner[..close]
        .split('.')
        .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
        .collect();
    if path.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(path)
}

/// The keys open at the end of `prefix`, one line of TOML up to a value:
/// `a = { b = 1, c = ` → `["a", "c"]`. A small tokenizer, good enough for
/// naming a key in an error: it knows strings, `=`, `{`, `}`, `[`, `]`, `,` and `#`.
fn inline_keys(prefix: &str) -> Vec<String> {
    // One slot per nesting level: the key whose value is being written there.
    let mut frames: Vec<Option<Vec<String>>> = vec![None];
    // Key parts read since the last delimiter (`a.b` or `"quoted"`).
    let mut pending: Vec<String> = Vec::new();
    let mut chars = prefix.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => break,
            '"' | '\'' => {
                let mut s = String::new();
                while let Some(d) = chars.next() {
                    if d == c {
                        break;
                    }
                    if d == '\\' && c == '"' {
                        if let Some(e) = chars.next() {
                            s.push(e);
                        }
                        continue;
                    }
                    s.push(d);
                }
                pending.push(s);
            }
            '.' => {}
            '=' => {
                if let Some(slot) = frames.last_mut() {
                    *slot = Some(std::mem::take(&mut pending));
                }
            }
            '{' | '[' => {
                pending.clear();
                frames.push(None);
            }
            '}' | ']' => {
                pending.clear();
                if frames.len() > 1 {
                    frames.pop();
                }
            }
            ',' => {
                pending.clear();
                if let Some(slot) = frames.last_mut() {
                    *slot = None;
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                let mut s = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == '-' {
                        s.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                pending.push(s);
            }
            _ => pending.clear(),
        }
    }
    frames.into_iter().flatten().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Source {
        Source::new(PathBuf::from("t.toml"), text.to_owned())
    }

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let s = src("a = 1\nbé = \"x\"\n");
        assert_eq!(s.position(0), (1, 1));
        assert_eq!(s.position(6), (2, 1));
        let x = s.text.find("\"x").unwrap();
        assert_eq!(s.position(x), (2, 6));
    }

    #[test]
    fn the_key_of_a_value_includes_its_table_header_and_inline_tables() {
        let text = "id = 1\n[[mdm]]\nname = \"a\"\n[mdm.credentials]\npassword = 5\n[mdm.permit]\nx = { lock = \"yes\", wipe = 1 }\n";
        let s = src(text);
        assert_eq!(s.key_at(text.find('1').unwrap()), "id");
        assert_eq!(s.key_at(text.find("\"a\"").unwrap()), "mdm.name");
        assert_eq!(
            s.key_at(text.find('5').unwrap()),
            "mdm.credentials.password"
        );
        assert_eq!(s.key_at(text.find("\"yes\"").unwrap()), "mdm.permit.x.lock");
        assert_eq!(s.key_at(text.rfind('1').unwrap()), "mdm.permit.x.wipe");
    }

    #[test]
    fn a_header_is_found_inside_a_byte_range() {
        let text = "[[mdm]]\nname = \"a\"\n  [ mdm.credentials ] # c\nx = 1\n";
        let s = src(text);
        let at = s.find_header(0..text.len(), "mdm.credentials").unwrap();
        assert_eq!(s.position(at), (3, 3));
        assert!(s.find_header(0..5, "mdm.credentials").is_none());
    }

    #[test]
    fn errors_display_as_file_line_col_message_one_per_line() {
        let e = ConfigErrors(vec![
            src("").error_at(0, "first"),
            src("a\nb").error_at(2, "second"),
        ]);
        assert_eq!(e.to_string(), "t.toml:1:1: first\nt.toml:2:1: second");
    }
}
