//! Request signing: the HMAC-SHA256 signature every BCDM request carries.
//!
//! The design (the project's `MDM-APIS.md`, BCDM section) signs
//!
//! ```text
//! METHOD \n PATH_WITH_QUERY \n TIMESTAMP \n hex(SHA-256(body))
//! ```
//!
//! with the secret key, and sends the lowercase hex result in
//! `X-BCDM-Signature` beside `X-BCDM-Access-Key`, `X-BCDM-DM-Code` and
//! `X-BCDM-Timestamp` (unix seconds). `PATH_WITH_QUERY` is the request target
//! exactly as sent: the full path including any base path of the configured
//! URL, and the query string as sent (not re-ordered, not decoded). The adapter
//! therefore builds the final [`Url`] first and derives the signed target from
//! that same value with [`request_target`], so the two cannot differ.
//!
//! This module is BCDM's alone: no other vendor signs requests this way.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use url::Url;

/// The header naming the access key.
pub const ACCESS_KEY_HEADER: &str = "X-BCDM-Access-Key";
/// The header naming the DM code the access key belongs to.
pub const DM_CODE_HEADER: &str = "X-BCDM-DM-Code";
/// The header with the signing time, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-BCDM-Timestamp";
/// The header with the lowercase hex signature.
pub const SIGNATURE_HEADER: &str = "X-BCDM-Signature";

/// Lowercase hex SHA-256 of a body (`e3b0c442…b855` for an empty one).
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The string that is signed: `METHOD\nPATH_WITH_QUERY\nTIMESTAMP\nhex(SHA-256(body))`.
///
/// `method` is taken as given (HTTP methods are sent in upper case);
/// `path_with_query` must be the request target exactly as sent.
pub fn string_to_sign(method: &str, path_with_query: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "{method}\n{path_with_query}\n{timestamp}\n{}",
        body_sha256_hex(body)
    )
}

/// The signature: lowercase hex HMAC-SHA256(`secret_key`, [`string_to_sign`]).
///
/// `secret_key` is the secret key as the console gives it (the bytes of the
/// string from the downloaded CSV; it is not decoded first).
pub fn sign(
    secret_key: &[u8],
    method: &str,
    path_with_query: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    // HMAC takes a key of any length, so `new_from_slice` cannot fail here.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret_key).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(string_to_sign(method, path_with_query, timestamp, body).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The request target of `url` as it goes on the wire: its path, then `?` and
/// the query string when there is one, both exactly as the `Url` holds them.
pub fn request_target(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"bcdm-test-secret";

    #[test]
    fn the_sha256_of_an_empty_body_is_the_well_known_constant() {
        assert_eq!(
            body_sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_string_to_sign_joins_the_four_parts_with_newlines() {
        assert_eq!(
            string_to_sign(
                "GET",
                "/api/v1/devices?offset=0&limit=100",
                1_700_000_000,
                b""
            ),
            "GET\n/api/v1/devices?offset=0&limit=100\n1700000000\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    // The expected values below were computed once, independently of this code, with
    //   python3 -c 'import hmac,hashlib; s="GET\n/api/v1/devices?offset=0&limit=100\n1700000000\n"+hashlib.sha256(b"").hexdigest(); print(hmac.new(b"bcdm-test-secret", s.encode(), hashlib.sha256).hexdigest())'
    // and cross-checked with `printf '<the same string>' | openssl dgst -sha256 -hmac bcdm-test-secret`.
    #[test]
    fn a_get_with_an_empty_body_signs_to_the_fixed_vector() {
        assert_eq!(
            sign(
                SECRET,
                "GET",
                "/api/v1/devices?offset=0&limit=100",
                1_700_000_000,
                b""
            ),
            "4f1c77ab51cb6136cc314bbac80c9be0416663d7db368a3d4205260a73c9b39f"
        );
    }

    // Computed with python3 hmac/hashlib as above over
    //   "POST\n/api/v1/devices/dev-0001/actions\n1700000123\n" + sha256('{"action":"lock"}')
    // (sha256 of the body = 438eda6d…a765, also checked with `openssl dgst -sha256`),
    // and cross-checked with `openssl dgst -sha256 -hmac bcdm-test-secret`.
    #[test]
    fn a_post_with_a_json_body_signs_to_the_fixed_vector() {
        assert_eq!(
            body_sha256_hex(br#"{"action":"lock"}"#),
            "438eda6d174423859ff24edbf3c0a5553af700359405983fb9b3415d10a9a765"
        );
        assert_eq!(
            sign(
                SECRET,
                "POST",
                "/api/v1/devices/dev-0001/actions",
                1_700_000_123,
                br#"{"action":"lock"}"#
            ),
            "df7d946804db6181bb35071c30c849b3dc3670623a5a71a812f8cecb041b3a17"
        );
    }

    // Computed with python3 hmac/hashlib as above over
    //   "GET\n/bcdm/api/v1/devices?wifi_mac=a4%3A67%3A06%3A0c%3A15%3A3d\n1700000456\n" + sha256("").
    #[test]
    fn a_base_path_and_an_encoded_query_are_signed_as_sent() {
        let url = Url::parse(
            "https://bcdm.example/bcdm/api/v1/devices?wifi_mac=a4%3A67%3A06%3A0c%3A15%3A3d",
        )
        .unwrap();
        let target = request_target(&url);
        assert_eq!(
            target,
            "/bcdm/api/v1/devices?wifi_mac=a4%3A67%3A06%3A0c%3A15%3A3d"
        );
        assert_eq!(
            sign(SECRET, "GET", &target, 1_700_000_456, b""),
            "7bf54e4fd8d442192a079453c371ff94641722e8c95abb558d135f47b6760977"
        );
    }

    #[test]
    fn the_same_inputs_always_give_the_same_signature_and_any_change_gives_another() {
        let base = sign(SECRET, "POST", "/api/v1/devices/d/actions", 1, b"{}");
        assert_eq!(
            base,
            sign(SECRET, "POST", "/api/v1/devices/d/actions", 1, b"{}")
        );
        assert_eq!(base.len(), 64);
        assert!(base
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        for other in [
            sign(
                b"other-secret",
                "POST",
                "/api/v1/devices/d/actions",
                1,
                b"{}",
            ),
            sign(SECRET, "GET", "/api/v1/devices/d/actions", 1, b"{}"),
            sign(SECRET, "POST", "/api/v1/devices/e/actions", 1, b"{}"),
            sign(SECRET, "POST", "/api/v1/devices/d/actions", 2, b"{}"),
            sign(SECRET, "POST", "/api/v1/devices/d/actions", 1, b"{ }"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_url_without_a_query_has_no_question_mark_in_its_target() {
        let url = Url::parse("https://bcdm.example/api/v1/devices/abc").unwrap();
        assert_eq!(request_target(&url), "/api/v1/devices/abc");
    }
}
