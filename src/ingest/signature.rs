//! The agent request signature (CONTRACT §3): `v1=<lowercase hex
//! HMAC-SHA256(agent_secret, "<timestamp>.<raw body>")>`. Computed here for
//! the agent API's check and for the agents' counterparts (the demo, tests,
//! benchmarks), so both sides share one definition.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The scheme prefix of `X-Mtd-Signature`; a new scheme would be `v2=`.
pub const SIGNATURE_SCHEME: &str = "v1=";

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The `X-Mtd-Signature` value for a request: `v1=<lowercase hex
/// HMAC-SHA256(secret, "<timestamp>.<body>")>`. For agents' counterparts:
/// tests, the demo and the benchmarks.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mac = mac(secret, timestamp.to_string().as_bytes(), body);
    format!(
        "{SIGNATURE_SCHEME}{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The MAC of a request, ready to finalise or to verify a signature against.
pub(crate) fn mac(key: &[u8], timestamp: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(timestamp);
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_is_lowercase_hex_hmac_over_timestamp_dot_body() {
        let expected = {
            let mut m = HmacSha256::new_from_slice(b"k").unwrap();
            m.update(b"1700000000.{}");
            hex::encode(m.finalize().into_bytes())
        };
        assert_eq!(sign(b"k", 1_700_000_000, b"{}"), format!("v1={expected}"));
        assert_eq!(expected.len(), 64);
        assert!(expected
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
    }
}
