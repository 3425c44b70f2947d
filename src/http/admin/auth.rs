//! The admin API's bearer-token check, as an extractor: a handler that takes
//! [`AdminAuth`] runs only for a request that presented the configured token.
//!
//! Every refusal (no header, a malformed one, another scheme, a wrong token,
//! or no token configured at all) gets the same 401 body, so a client learns
//! nothing about which. The presented token is never logged, and it is
//! compared in constant time: both tokens are put through HMAC-SHA256 under a
//! fixed key and the two tags are compared with `hmac`'s constant-time
//! `verify_slice`, so the comparison takes the same time wherever the tokens
//! differ, and even for a token of another length.

use super::error::AdminError;
use crate::http::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Once;

/// Proof that the request carried the admin token.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth(());

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AdminError> {
        let config = state.config.load();
        let Some(expected) = config.admin.token.as_ref().filter(|t| !t.is_empty()) else {
            static WARNED: Once = Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "Admin API request refused: no admin token is configured; set `token` in [admin] of the main config file"
                );
            });
            return Err(AdminError::Unauthorized);
        };
        let presented = bearer_token(&parts.headers).ok_or(AdminError::Unauthorized)?;
        if tokens_match(presented.as_bytes(), expected.expose().as_bytes()) {
            Ok(AdminAuth(()))
        } else {
            Err(AdminError::Unauthorized)
        }
    }
}

/// The token of the one `Authorization: Bearer <token>` header (the scheme is
/// case-insensitive, RFC 7235); `None` for anything else.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && !token.contains(char::is_whitespace))
    .then_some(token)
}

/// Constant-time equality of two tokens (see the module comment); the
/// console's login uses it too.
pub(in crate::http) fn tokens_match(presented: &[u8], expected: &[u8]) -> bool {
    // The key only makes the tags fixed-length digests; it is not a secret.
    const KEY: &[u8] = b"mtd-connector admin token comparison";
    let tag = |token: &[u8]| {
        // HMAC accepts a key of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY).expect("HMAC takes any key length");
        mac.update(token);
        mac
    };
    let want = tag(expected).finalize().into_bytes();
    tag(presented).verify_slice(&want).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_one_well_formed_bearer_header_yields_a_token() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Some("abc"));
        assert_eq!(bearer_token(&headers(&["bearer  abc "])), Some("abc"));
        for bad in [
            &[][..],
            &["Bearer"],
            &["Bearer "],
            &["Basic abc"],
            &["abc"],
            &["Bearer a b"],
            &["Bearer abc", "Bearer abc"],
        ] {
            assert_eq!(bearer_token(&headers(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match(b"secret-token", b"secret-token"));
        assert!(!tokens_match(b"secret-tokeN", b"secret-token"));
        assert!(!tokens_match(b"secret", b"secret-token"));
        assert!(!tokens_match(b"", b"secret-token"));
    }
}
