//! Query parameters of the admin API: parsed by hand so that every bad value
//! gets our 400 naming the parameter (axum's `Query` rejection has its own
//! body), unknown parameters are refused (a typo like `includeRemoved` must
//! not silently list something else), and the page cursor stays opaque.
//!
//! What is accepted is exactly what `openapi.json` says, so a fuzzer holding
//! the two together finds no gap: an empty value is refused rather than read
//! as absent (`?until=` is a mistake, not "no bound"; only `?cursor=` is the
//! first page, as CONTRACT §5 writes it), and a cursor is
//! lowercase hex of our prefix and a key of the list's own shape (the
//! document's `pattern`), so anything the pattern allows decodes.

use super::error::AdminError;
use crate::store::Page;
use chrono::{DateTime, Utc};

/// Rows per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest `limit` accepted.
pub const MAX_LIMIT: u32 = 500;

/// Marks (and versions) our cursors, so a random string is refused rather than misread.
const CURSOR_PREFIX: &str = "c1:";

/// The query parameters of one request.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses the raw query, refusing parameters not in `allowed`, repeated
    /// ones and empty values (leave a parameter out for no filter) except an
    /// empty `cursor`, which is the first page.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Params, AdminError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                return Err(AdminError::param(
                    &name,
                    format!("unknown parameter; expected one of: {}", allowed.join(", ")),
                ));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(AdminError::param(&name, "given more than once"));
            }
            // `?cursor=` is the first page (CONTRACT §5 writes `?cursor=&limit=`,
            // and clients build it so); any other empty value is a mistake.
            if value.is_empty() && name == "cursor" {
                continue;
            }
            if value.is_empty() {
                return Err(AdminError::param(
                    &name,
                    "must not be empty; leave the parameter out for no filter",
                ));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Params { pairs })
    }

    /// The value of a parameter, `None` when absent ([`Params::parse`] refused empty ones).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string)
    }

    /// `true` or `false`; absent is `false`.
    pub fn flag(&self, name: &str) -> Result<bool, AdminError> {
        match self.get(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(AdminError::param(name, "expected true or false")),
        }
    }

    /// A positive integer id.
    pub fn id(&self, name: &str) -> Result<Option<i64>, AdminError> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| AdminError::param(name, "expected a positive integer id"))
            })
            .transpose()
    }

    /// An RFC 3339 timestamp, e.g. `2026-11-22T10:00:00Z`.
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, AdminError> {
        self.get(name)
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| {
                        AdminError::param(
                            name,
                            format!("expected an RFC 3339 time like 2026-11-22T10:00:00Z ({e})"),
                        )
                    })
            })
            .transpose()
    }

    /// One of a closed set of values.
    pub fn one_of<T: Copy>(
        &self,
        name: &str,
        values: &[(&str, T)],
    ) -> Result<Option<T>, AdminError> {
        self.get(name)
            .map(|v| {
                values
                    .iter()
                    .find(|(s, _)| *s == v)
                    .map(|(_, t)| *t)
                    .ok_or_else(|| {
                        let names: Vec<&str> = values.iter().map(|(s, _)| *s).collect();
                        AdminError::param(name, format!("expected one of: {}", names.join(", ")))
                    })
            })
            .transpose()
    }

    /// `limit`: 1..=500, default 50.
    pub fn limit(&self) -> Result<u32, AdminError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    AdminError::param(
                        "limit",
                        format!("expected an integer from 1 to {MAX_LIMIT}"),
                    )
                }),
        }
    }

    /// The key a `cursor` carries (see [`cursor`]).
    pub fn cursor_key(&self) -> Result<Option<String>, AdminError> {
        self.get("cursor")
            .map(|c| decode_cursor(c).ok_or_else(bad_cursor))
            .transpose()
    }

    /// The `cursor` of the tenant list: a tenant id (`[a-z0-9-]{1,63}`).
    pub fn tenant_cursor(&self) -> Result<Option<String>, AdminError> {
        let key = self.cursor_key()?;
        let valid = |k: &str| {
            k.len() <= 63
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        match key {
            Some(k) if !valid(&k) => Err(bad_cursor()),
            key => Ok(key),
        }
    }

    /// `cursor` and `limit` of a list keyed by row id. The key is decimal
    /// digits; one beyond the largest id is past every row (an empty page).
    pub fn page(&self) -> Result<Page, AdminError> {
        let after = self
            .cursor_key()?
            .map(|k| {
                if !k.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad_cursor());
                }
                Ok(k.parse::<i64>().unwrap_or(i64::MAX))
            })
            .transpose()?;
        Ok(Page {
            after,
            limit: self.limit()?,
        })
    }
}

fn bad_cursor() -> AdminError {
    AdminError::param(
        "cursor",
        "not a cursor from this API; pass the next_cursor of the previous page",
    )
}

/// The opaque cursor for the row key `key` (a row id, or a tenant id).
pub fn cursor(key: &str) -> String {
    hex::encode(format!("{CURSOR_PREFIX}{key}"))
}

/// The key of a cursor: lowercase hex only (what [`cursor`] makes, and what
/// the document's pattern allows), of our prefix and a non-empty key.
fn decode_cursor(cursor: &str) -> Option<String> {
    if cursor.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let bytes = hex::decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(CURSOR_PREFIX)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Result<Params, AdminError> {
        Params::parse(
            Some(q),
            &["cursor", "limit", "include_removed", "since", "state"],
        )
    }

    fn field(e: AdminError) -> String {
        match e {
            AdminError::InvalidParam { name, .. } => name,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused_naming_cursor() {
        let p = params(&format!("cursor={}&limit=7", cursor("42"))).unwrap();
        assert_eq!(
            p.page().unwrap(),
            Page {
                after: Some(42),
                limit: 7
            }
        );
        let p = params("cursor=").unwrap();
        assert_eq!(
            p.page().unwrap(),
            Page {
                after: None,
                limit: DEFAULT_LIMIT
            }
        );
        // Past every id: an empty page, not an error.
        let p = params(&format!("cursor={}", cursor("99999999999999999999"))).unwrap();
        assert_eq!(p.page().unwrap().after, Some(i64::MAX));
        let upper = cursor("42").to_uppercase();
        for bad in [
            "42",
            "zz",
            &hex::encode("42"),
            &cursor("tenant-a"),
            &cursor("-1"),
            &cursor("+1"),
            &upper,
        ] {
            let e = params(&format!("cursor={bad}"))
                .unwrap()
                .page()
                .unwrap_err();
            assert_eq!(field(e), "cursor", "{bad}");
        }
        assert_eq!(
            decode_cursor(&cursor("tenant-a")).as_deref(),
            Some("tenant-a")
        );
    }

    #[test]
    fn bad_values_unknown_and_repeated_parameters_name_the_parameter() {
        for (q, name) in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=ten", "limit"),
            ("include_removed=yes", "include_removed"),
            ("since=yesterday", "since"),
            ("state=lost", "state"),
        ] {
            let p = params(q).unwrap();
            let e = p
                .limit()
                .and_then(|_| p.flag("include_removed"))
                .and_then(|_| p.time("since"))
                .and_then(|_| p.one_of("state", &[("held", 1)]))
                .unwrap_err();
            assert_eq!(field(e), name, "{q}");
        }
        assert_eq!(
            field(params("includeRemoved=true").unwrap_err()),
            "includeRemoved"
        );
        assert_eq!(field(params("limit=1&limit=2").unwrap_err()), "limit");
        // An empty value is a mistake, not "no filter".
        for name in ["limit", "since", "state"] {
            assert_eq!(field(params(&format!("{name}=")).unwrap_err()), name);
        }
        let p = params("limit=500&include_removed=true&since=2026-11-22T10:00:00%2B01:00").unwrap();
        assert_eq!(p.limit().unwrap(), 500);
        assert!(p.flag("include_removed").unwrap());
        assert_eq!(
            p.time("since").unwrap().unwrap().to_rfc3339(),
            "2026-11-22T09:00:00+00:00"
        );
    }
}
