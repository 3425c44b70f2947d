//! SOTI's device filters.
//!
//! `GET /api/devices/search?filter=` takes an "advanced search expression".
//! The spec shows one example, `Manufacturer='Apple'` (sent as
//! `Manufacturer%3D%27Apple%27`, and double URL-encoded like every value), and
//! names the operators `=`, `<>`, `>`, `<`. This parser accepts:
//!
//! ```text
//! expr    := and ( OR and )*
//! and     := unary ( AND unary )*
//! unary   := NOT unary | '(' expr ')' | compare
//! compare := PROPERTY op value
//! op      := '=' | '<>' | '!=' | '>' | '<' | '>=' | '<='
//! value   := 'single quoted' ('' escapes a quote) | "double quoted" | bare word
//! ```
//!
//! Keywords, property names and string comparisons are case-insensitive.
//! A property a device does not have never matches (except with `<>`).
//! `GET /api/devices?filter=` takes the other documented syntax,
//! `Property1:Value1,Property2:Value2` (all must be equal).

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare {
        property: String,
        op: Op,
        value: Literal,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Literal {
    /// Quoted: always compared as a string.
    Text(String),
    /// Unquoted: a number, `true`/`false`, `null`, or a bare word.
    Bare(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Quoted(String),
    Op(Op),
    LParen,
    RParen,
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::LParen);
                i += 1;
            }
            ')' => {
                tokens.push(Token::RParen);
                i += 1;
            }
            '=' => {
                tokens.push(Token::Op(Op::Eq));
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                tokens.push(Token::Op(Op::Ne));
                i += 2;
            }
            '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('<', Some('>')) => (Op::Ne, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('<', _) => (Op::Lt, 1),
                    _ => (Op::Gt, 1),
                };
                tokens.push(Token::Op(op));
                i += len;
            }
            '\'' | '"' => {
                let quote = c;
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated {quote}quoted value")),
                        Some(&q) if q == quote => {
                            if chars.get(i + 1) == Some(&quote) {
                                text.push(quote);
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(&ch) => {
                            text.push(ch);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Quoted(text));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], '(' | ')' | '=' | '<' | '>' | '!' | '\'' | '"')
                {
                    i += 1;
                }
                if start == i {
                    return Err(format!("unexpected character `{c}`"));
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_keyword("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.peek_keyword("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek_keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        match self.tokens.get(self.pos).cloned() {
            Some(Token::LParen) => {
                self.pos += 1;
                let inner = self.or()?;
                match self.tokens.get(self.pos) {
                    Some(Token::RParen) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    _ => Err("missing `)`".into()),
                }
            }
            Some(Token::Ident(property)) => {
                self.pos += 1;
                let op = match self.tokens.get(self.pos) {
                    Some(Token::Op(op)) => *op,
                    _ => return Err(format!("expected an operator after `{property}`")),
                };
                self.pos += 1;
                let value = match self.tokens.get(self.pos).cloned() {
                    Some(Token::Quoted(text)) => Literal::Text(text),
                    Some(Token::Ident(word)) => Literal::Bare(word),
                    _ => return Err(format!("expected a value after `{property}`")),
                };
                self.pos += 1;
                Ok(Expr::Compare {
                    property,
                    op,
                    value,
                })
            }
            Some(other) => Err(format!("unexpected {other:?}")),
            None => Err("unexpected end of filter".into()),
        }
    }
}

/// Parses an advanced search expression. An empty filter is `None` (all).
pub(crate) fn parse(input: &str) -> Result<Option<Expr>, String> {
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut parser = Parser { tokens, pos: 0 };
    let expr = parser.or()?;
    if parser.pos != parser.tokens.len() {
        return Err(format!(
            "unexpected {:?} after the expression",
            parser.tokens[parser.pos]
        ));
    }
    Ok(Some(expr))
}

/// Looks up `property` in a device object, case-insensitively.
fn property<'a>(device: &'a Value, property: &str) -> Option<&'a Value> {
    let object = device.as_object()?;
    object.get(property).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(property))
            .map(|(_, v)| v)
    })
}

fn compare(actual: &Value, op: Op, literal: &Literal) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (actual, literal) {
        (Value::Number(n), Literal::Bare(w)) => match (n.as_f64(), w.parse::<f64>().ok()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
        (Value::Bool(b), Literal::Bare(w) | Literal::Text(w)) => {
            match w.to_ascii_lowercase().as_str() {
                "true" => Some(b.cmp(&true)),
                "false" => Some(b.cmp(&false)),
                _ => None,
            }
        }
        (Value::String(s), Literal::Text(w) | Literal::Bare(w)) => {
            Some(s.to_lowercase().cmp(&w.to_lowercase()))
        }
        (Value::Number(n), Literal::Text(w)) => Some(n.to_string().cmp(w)),
        (Value::Null, Literal::Bare(w)) if w.eq_ignore_ascii_case("null") => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ordering) {
        (Op::Ne, None) => true,
        (_, None) => false,
        (Op::Eq, Some(o)) => o == Ordering::Equal,
        (Op::Ne, Some(o)) => o != Ordering::Equal,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
    }
}

impl Expr {
    pub(crate) fn matches(&self, device: &Value) -> bool {
        match self {
            Expr::And(a, b) => a.matches(device) && b.matches(device),
            Expr::Or(a, b) => a.matches(device) || b.matches(device),
            Expr::Not(e) => !e.matches(device),
            Expr::Compare {
                property: name,
                op,
                value,
            } => match property(device, name) {
                Some(actual) => compare(actual, *op, value),
                None => *op == Op::Ne,
            },
        }
    }
}

/// Parses the `GET /api/devices` filter, `Property1:Value1,Property2:Value2`.
pub(crate) fn parse_pairs(input: &str) -> Result<Vec<(String, String)>, String> {
    input
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            part.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("`{part}` is not Property:Value"))
        })
        .collect()
}

/// Whether a device matches every `Property:Value` pair (case-insensitive).
pub(crate) fn matches_pairs(device: &Value, pairs: &[(String, String)]) -> bool {
    pairs.iter().all(|(name, wanted)| {
        property(device, name)
            .is_some_and(|actual| compare(actual, Op::Eq, &Literal::Bare(wanted.clone())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device() -> Value {
        json!({
            "DeviceId": "abc",
            "Manufacturer": "Apple",
            "ManufacturerSerialNumber": "F2LXK0ABHG7F",
            "IsAgentOnline": true,
            "Watermark": 42,
            "DeviceUserInfo": null
        })
    }

    #[test]
    fn the_spec_example_parses_and_matches() {
        let expr = parse("Manufacturer='Apple'").unwrap().unwrap();
        assert_eq!(
            expr,
            Expr::Compare {
                property: "Manufacturer".into(),
                op: Op::Eq,
                value: Literal::Text("Apple".into())
            }
        );
        assert!(expr.matches(&device()));
        assert!(!parse("Manufacturer='Samsung'")
            .unwrap()
            .unwrap()
            .matches(&device()));
    }

    #[test]
    fn serial_equality_is_case_insensitive_in_name_and_value() {
        let d = device();
        assert!(parse("ManufacturerSerialNumber = 'f2lxk0abhg7f'")
            .unwrap()
            .unwrap()
            .matches(&d));
        assert!(parse("manufacturerserialnumber='F2LXK0ABHG7F'")
            .unwrap()
            .unwrap()
            .matches(&d));
        // Android devices carry HardwareSerialNumber; an iOS device never matches it.
        assert!(!parse("HardwareSerialNumber='F2LXK0ABHG7F'")
            .unwrap()
            .unwrap()
            .matches(&d));
    }

    #[test]
    fn operators_combine_with_and_or_not_and_parentheses() {
        let d = device();
        let m = |f: &str| parse(f).unwrap().unwrap().matches(&d);
        assert!(m("Manufacturer='Apple' AND IsAgentOnline=true"));
        assert!(!m("Manufacturer='Apple' and IsAgentOnline=false"));
        assert!(m("Manufacturer='Samsung' OR Watermark>=42"));
        assert!(m("NOT (Manufacturer='Samsung' OR Watermark<10)"));
        assert!(m("Manufacturer<>'Samsung'"));
        assert!(m("Manufacturer != 'Samsung'"));
        assert!(m("Watermark > 41 AND Watermark < 43"));
        assert!(m("DeviceUserInfo = null"));
        assert!(m("Unknown <> 'x'"));
        assert!(!m("Unknown = 'x'"));
    }

    #[test]
    fn quotes_can_be_escaped_by_doubling() {
        let d = json!({ "DeviceName": "Anna's iPhone" });
        assert!(parse("DeviceName='Anna''s iPhone'")
            .unwrap()
            .unwrap()
            .matches(&d));
        assert!(parse("DeviceName=\"Anna's iPhone\"")
            .unwrap()
            .unwrap()
            .matches(&d));
    }

    #[test]
    fn malformed_filters_are_errors_and_empty_means_all() {
        assert_eq!(parse("   ").unwrap(), None);
        for bad in [
            "Manufacturer",
            "Manufacturer=",
            "Manufacturer='Apple",
            "(Manufacturer='Apple'",
            "Manufacturer='Apple' Model='x'",
            "= 'x'",
            "Manufacturer='Apple' AND",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn name_value_pairs_filter_by_equality() {
        let pairs = parse_pairs("Manufacturer:apple, IsAgentOnline:true").unwrap();
        assert!(matches_pairs(&device(), &pairs));
        let pairs = parse_pairs("Manufacturer:Samsung").unwrap();
        assert!(!matches_pairs(&device(), &pairs));
        assert!(parse_pairs("Manufacturer").is_err());
    }
}
