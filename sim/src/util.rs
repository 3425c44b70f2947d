//! Small helpers the simulators share: poison-ignoring locks, percent-decoding (SOTI's
//! double URL encoding needs a second pass after the HTTP layer's first) and
//! base64 for `Authorization: Basic` headers.
//!
//! base64 is decoded by hand because the root package does not depend on the
//! `base64` crate; the decoder is small, strict about its alphabet, and
//! covered by the tests below.

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::Duration,
};
// tokio's clock, so tests that pause time move the window too.
use tokio::time::Instant;

/// Decodes `%XX` escapes once. A `+` is left alone (it is only a space in
/// form bodies, and the first decoding pass already handled that); a `%` not
/// followed by two hex digits is kept as is, which is what lenient servers do.
pub(crate) fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes standard (RFC 4648 §4) base64, padding optional. Returns `None` on
/// any character outside the alphabet or an impossible length.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    let unpadded = s.trim_end_matches('=');
    if s.len() - unpadded.len() > 2 || unpadded.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() * 3 / 4);
    let mut buf: u32 = 0;
    let mut bits = 0u32;
    for c in unpadded.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Keeps only the hex digits of a MAC address and upper-cases them, so that
/// `a4:67:06:0c:15:3d`, `A4-67-06-0C-15-3D` and `A467060C153D` compare equal.
/// Anything that is not 12 hex digits afterwards is not a MAC.
pub(crate) fn normalize_mac(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Some(hex.to_ascii_uppercase())
    } else {
        None
    }
}

/// Strips `prefix` from `s`, ignoring ASCII case.
pub(crate) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// Locks a mutex, ignoring poisoning: every critical section in the
/// simulators leaves the data consistent even if a panic unwinds through it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-locks, ignoring poisoning (see [`lock`]).
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-locks, ignoring poisoning (see [`lock`]).
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// A per-key limit of requests in any rolling second (BCDM per access key,
/// MaaS360 per billing id): a sliding log of the admitted requests.
#[derive(Debug, Default)]
pub(crate) struct RollingLimit {
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RollingLimit {
    const WINDOW: Duration = Duration::from_secs(1);

    /// Admits one request of `key` under `per_second` (0: no limit), or says
    /// how many whole seconds to wait (at least 1). Refused requests do not
    /// count, so a client that waits gets through.
    pub(crate) fn admit(&self, key: &str, per_second: u32) -> Result<(), u64> {
        if per_second == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut windows = lock(&self.windows);
        let window = windows.entry(key.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Self::WINDOW)
        {
            window.pop_front();
        }
        if window.len() >= per_second as usize {
            // The front entry is less than a second old, so this is at most 1.
            let wait = Self::WINDOW - now.duration_since(window[0]);
            return Err(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        window.push_back(now);
        Ok(())
    }

    /// Forgets every admitted request (a new limit starts afresh).
    pub(crate) fn clear(&self) {
        lock(&self.windows).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rolling_limit_admits_per_key_and_refuses_beyond_it() {
        let limit = RollingLimit::default();
        for _ in 0..3 {
            assert!(limit.admit("a", 3).is_ok());
        }
        assert_eq!(limit.admit("a", 3), Err(1));
        assert!(
            limit.admit("b", 3).is_ok(),
            "another key has its own window"
        );
        assert!(limit.admit("a", 0).is_ok(), "0 is no limit");
        limit.clear();
        assert!(limit.admit("a", 3).is_ok());
    }

    #[test]
    fn percent_decoding_twice_undoes_soti_double_encoding() {
        // What the HTTP layer hands us after its own (first) decoding pass.
        let once = "%5C%5CMy%20Company";
        assert_eq!(percent_decode(once), "\\\\My Company");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%zzb"), "a%zzb");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn base64_decodes_what_basic_auth_sends() {
        assert_eq!(
            base64_decode("QXBwbGljYXRpb24xOkFwcGxpY2F0aW9uMVBhc3N3b3Jk").unwrap(),
            b"Application1:Application1Password"
        );
        assert_eq!(
            base64_decode("bXRkLXNpbTpzaW0tc2VjcmV0").unwrap(),
            b"mtd-sim:sim-secret"
        );
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("YWI").unwrap(), b"ab");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("Y").is_none());
        assert!(base64_decode("Y!==").is_none());
        assert!(base64_decode("YQ===").is_none());
    }

    #[test]
    fn macs_in_either_format_normalise_to_the_same_string() {
        assert_eq!(
            normalize_mac("a4:67:06:0c:15:3d").as_deref(),
            Some("A467060C153D")
        );
        assert_eq!(
            normalize_mac("A467060C153D").as_deref(),
            Some("A467060C153D")
        );
        assert_eq!(
            normalize_mac("a4-67-06-0c-15-3d").as_deref(),
            Some("A467060C153D")
        );
        assert_eq!(normalize_mac("a4:67:06"), None);
        assert_eq!(normalize_mac("zz:67:06:0c:15:3d"), None);
    }
}
