//! The console's sessions: the table of logged-in browsers, the anti-forgery
//! token of each, and the throttle of failed logins.
//!
//! The table lives in memory only: a restart of the daemon logs every admin
//! out (they log in again with the token). A session remembers a fingerprint
//! of the admin token it logged in with, so a reload that changes (or removes)
//! `[admin] token` ends every session at its next request.
//! Session ids are looked up by their SHA-256, so the table is never probed
//! with the raw cookie value and a timing difference of the map reveals nothing
//! about a valid id.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// A session ends after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, however active.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// Failed logins allowed from one client address inside [`FAILURE_WINDOW`]
/// before the login refuses that address's every attempt until the window
/// has passed. Per address, so that someone guessing cannot lock the admins
/// out from elsewhere (behind a proxy every client shares its address).
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sessions kept at most; beyond, the one least recently used is ended.
const MAX_SESSIONS: usize = 1000;
/// Client addresses whose failures are remembered at most; beyond, the
/// failures of all addresses are forgotten rather than the table growing
/// without bound (a flood from many addresses gains a fresh window once).
const MAX_FAILING_CLIENTS: usize = 10_000;

/// The name of the session cookie.
pub const COOKIE: &str = "mtd_console";

/// One logged-in browser.
#[derive(Debug)]
struct Session {
    /// The anti-forgery token of every form this session is shown.
    csrf: String,
    /// HMAC of the admin token it logged in with (see [`Sessions::fingerprint`]).
    token_fingerprint: [u8; 32],
    created: Instant,
    last_seen: Instant,
}

/// What a request learns of a valid session.
#[derive(Debug, Clone)]
pub struct Valid {
    pub csrf: String,
}

/// Why a login attempt is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginRefused {
    /// The token did not match (or none is configured).
    WrongToken,
    /// Too many failures lately; retry after this long.
    Throttled(Duration),
}

/// The session table and the failed-login throttle of one daemon.
#[derive(Debug)]
pub struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
    /// Recent failed logins per client address.
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
    /// Key of the token fingerprints, random per process: a fingerprint in
    /// memory says nothing about the token outside this process.
    key: [u8; 32],
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            table: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            key: random(),
        }
    }
}

fn random() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

fn lookup_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    fn fingerprint(&self, token: &str) -> [u8; 32] {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Checks a login attempt from `client`: `presented` against the
    /// configured token (`None`: none configured, every attempt fails). On
    /// success, a new session; returns its id (the cookie value, 256 random
    /// bits in hex).
    pub fn login(
        &self,
        presented: &str,
        configured: Option<&str>,
        client: IpAddr,
        now: Instant,
    ) -> Result<String, LoginRefused> {
        {
            let mut table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            table.retain(|_, times| {
                times.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
                !times.is_empty()
            });
            if table.len() >= MAX_FAILING_CLIENTS && !table.contains_key(&client) {
                table.clear();
            }
            let failures = table.entry(client).or_default();
            if failures.len() >= MAX_FAILURES {
                // Refused without looking at the token: no guessing while throttled.
                let oldest = failures.iter().min().copied().unwrap_or(now);
                return Err(LoginRefused::Throttled(
                    FAILURE_WINDOW.saturating_sub(now.duration_since(oldest)),
                ));
            }
            let ok = configured.is_some_and(|expected| {
                !expected.is_empty()
                    && crate::http::admin::tokens_match(presented.as_bytes(), expected.as_bytes())
            });
            if !ok {
                failures.push(now);
                return Err(LoginRefused::WrongToken);
            }
            if failures.is_empty() {
                table.remove(&client);
            }
        }
        let id = hex::encode(random());
        let session = Session {
            csrf: hex::encode(random()),
            token_fingerprint: self.fingerprint(configured.unwrap_or_default()),
            created: now,
            last_seen: now,
        };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.retain(|_, s| alive(s, now));
        if table.len() >= MAX_SESSIONS {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        table.insert(lookup_key(&id), session);
        Ok(id)
    }

    /// The session of this cookie value if it is alive and was opened with
    /// the token configured now; marks it used. A dead one is removed.
    pub fn check(&self, id: &str, configured: Option<&str>, now: Instant) -> Option<Valid> {
        let key = lookup_key(id);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let session = table.get_mut(&key)?;
        let same_token = configured.is_some_and(|t| {
            !t.is_empty() && bool::from(self.fingerprint(t).ct_eq(&session.token_fingerprint))
        });
        if !same_token || !alive(session, now) {
            table.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(Valid {
            csrf: session.csrf.clone(),
        })
    }

    /// Ends the session of this cookie value (logout).
    pub fn end(&self, id: &str) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&lookup_key(id));
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) < IDLE_TIMEOUT
        && now.duration_since(s.created) < ABSOLUTE_TIMEOUT
}

/// Constant-time equality of a presented anti-forgery token and the session's.
pub fn csrf_matches(presented: &str, expected: &str) -> bool {
    crate::http::admin::tokens_match(presented.as_bytes(), expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "console-test-token-0123456789";
    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_session_opens_only_with_the_configured_token() {
        let s = Sessions::default();
        let now = Instant::now();
        assert_eq!(
            s.login("wrong", Some(TOKEN), HERE, now),
            Err(LoginRefused::WrongToken)
        );
        assert_eq!(
            s.login(TOKEN, None, HERE, now),
            Err(LoginRefused::WrongToken)
        );
        assert_eq!(
            s.login("", Some(""), HERE, now),
            Err(LoginRefused::WrongToken)
        );
        let id = s.login(TOKEN, Some(TOKEN), HERE, now).unwrap();
        assert_eq!(id.len(), 64, "256 bits in hex");
        assert!(s.check(&id, Some(TOKEN), now).is_some());
        assert!(s.check("0".repeat(64).as_str(), Some(TOKEN), now).is_none());
    }

    #[test]
    fn a_session_ends_when_idle_too_long_or_too_old() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let id = s.login(TOKEN, Some(TOKEN), HERE, t0).unwrap();
        let later = t0 + IDLE_TIMEOUT + Duration::from_secs(1);
        assert!(s.check(&id, Some(TOKEN), later).is_none(), "idle");
        assert!(s.check(&id, Some(TOKEN), t0).is_none(), "removed for good");

        let id = s.login(TOKEN, Some(TOKEN), HERE, t0).unwrap();
        let mut t = t0;
        // Active every 20 minutes: alive until the absolute limit.
        while t + Duration::from_secs(20 * 60) < t0 + ABSOLUTE_TIMEOUT {
            t += Duration::from_secs(20 * 60);
            assert!(s.check(&id, Some(TOKEN), t).is_some());
        }
        assert!(s.check(&id, Some(TOKEN), t0 + ABSOLUTE_TIMEOUT).is_none());
    }

    #[test]
    fn a_changed_admin_token_ends_the_sessions_of_the_old_one() {
        let s = Sessions::default();
        let now = Instant::now();
        let id = s.login(TOKEN, Some(TOKEN), HERE, now).unwrap();
        assert!(s
            .check(&id, Some("another-token-0123456789"), now)
            .is_none());
        assert!(
            s.check(&id, Some(TOKEN), now).is_none(),
            "ended, not paused"
        );
        let id = s.login(TOKEN, Some(TOKEN), HERE, now).unwrap();
        assert!(s.check(&id, None, now).is_none(), "token removed");
    }

    #[test]
    fn repeated_failures_throttle_even_the_right_token() {
        let s = Sessions::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                s.login("guess", Some(TOKEN), HERE, t0),
                Err(LoginRefused::WrongToken)
            );
        }
        assert!(matches!(
            s.login(TOKEN, Some(TOKEN), HERE, t0 + Duration::from_secs(1)),
            Err(LoginRefused::Throttled(d)) if d <= FAILURE_WINDOW
        ));
        assert!(s
            .login(TOKEN, Some(TOKEN), HERE, t0 + FAILURE_WINDOW)
            .is_ok());
    }

    #[test]
    fn failures_from_one_address_do_not_lock_out_another() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let guesser = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));
        for _ in 0..MAX_FAILURES * 3 {
            let _ = s.login("guess", Some(TOKEN), guesser, t0);
        }
        assert!(matches!(
            s.login(TOKEN, Some(TOKEN), guesser, t0),
            Err(LoginRefused::Throttled(_))
        ));
        assert!(
            s.login(TOKEN, Some(TOKEN), HERE, t0).is_ok(),
            "the admin at another address logs in"
        );
    }

    #[test]
    fn logout_ends_the_session() {
        let s = Sessions::default();
        let now = Instant::now();
        let id = s.login(TOKEN, Some(TOKEN), HERE, now).unwrap();
        s.end(&id);
        assert!(s.check(&id, Some(TOKEN), now).is_none());
    }

    #[test]
    fn beyond_the_session_cap_the_least_recently_used_session_ends() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let ids: Vec<String> = (0..MAX_SESSIONS)
            .map(|i| {
                let at = t0 + Duration::from_millis(i as u64);
                s.login(TOKEN, Some(TOKEN), HERE, at).unwrap()
            })
            .collect();
        // The oldest login is used again: the second is now the least recently used.
        let later = t0 + Duration::from_secs(10);
        assert!(s.check(&ids[0], Some(TOKEN), later).is_some());
        let newest = s.login(TOKEN, Some(TOKEN), HERE, later).unwrap();

        let sessions = s.table.lock().unwrap().len();
        assert_eq!(
            sessions, MAX_SESSIONS,
            "the table does not grow past the cap"
        );
        assert!(
            s.check(&ids[1], Some(TOKEN), later).is_none(),
            "the least recently used session ended"
        );
        for id in [&ids[0], &ids[2], &ids[MAX_SESSIONS - 1], &newest] {
            assert!(s.check(id, Some(TOKEN), later).is_some());
        }
    }
}
