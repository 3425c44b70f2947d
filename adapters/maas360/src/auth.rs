//! The MaaS360 session: one auth token per adapter, shared by every caller,
//! renewed before its 60 minutes run out.
//!
//! One `tokio::sync::Mutex` guards the cached token *and* its renewal: a
//! caller that finds no usable token renews it while holding the lock, so
//! twenty callers that arrive together cause one login and all use its answer.
//!
//! Cancel safety: the slot is emptied before a renewal starts and filled only
//! with a complete answer, and the lock is a guard that a dropped future
//! releases. A caller dropped mid-login leaves either the old (stale) token,
//! never used again, or nothing: the next caller logs in afresh.

use mtd_adapter::{AdapterError, Secret};
use std::future::Future;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long MaaS360 keeps a token valid (IBM: 60 minutes).
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// When the adapter stops using a token: five minutes before its end, so no
/// request (nor a listing's next page) leaves with a token about to die.
pub(crate) const RENEW_AFTER: Duration = Duration::from_secs(TOKEN_LIFETIME.as_secs() - 5 * 60);

/// The answer of a login or a refresh.
#[derive(Debug, Clone)]
pub(crate) struct Tokens {
    pub auth: Secret,
    /// For `refreshToken`; `None` when the server gave none.
    pub refresh: Option<Secret>,
    /// When the request that brought them was sent (their lifetime starts
    /// no later than that).
    pub obtained_at: Instant,
}

impl Tokens {
    fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.obtained_at) < RENEW_AFTER
    }
}

/// The shared slot. The lock is held across a login on purpose (see the
/// module docs).
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    slot: Mutex<Option<Tokens>>,
}

impl TokenCache {
    /// The cached auth token while it is fresh; else the one `renew` brings,
    /// which is then cached. `renew` gets the refresh token of the stale
    /// session, if there is one (`None`: a full login is due).
    pub async fn get_or_renew<F, Fut>(&self, renew: F) -> Result<Secret, AdapterError>
    where
        F: FnOnce(Option<Secret>) -> Fut,
        Fut: Future<Output = Result<Tokens, AdapterError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(tokens) = slot.as_ref().filter(|t| t.is_fresh(Instant::now())) {
            return Ok(tokens.auth.clone());
        }
        // Emptied first: a failed (or dropped) renewal leaves nothing stale.
        let refresh = slot.take().and_then(|t| t.refresh);
        let tokens = renew(refresh).await?;
        let auth = tokens.auth.clone();
        *slot = Some(tokens);
        Ok(auth)
    }

    /// Forgets `used` after the server refused it (401), so the next call
    /// logs in afresh. A token another caller already replaced is left
    /// alone: one 401 does not throw away the fresh token of a concurrent login.
    pub async fn invalidate(&self, used: &Secret) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|t| &t.auth == used) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn tokens(auth: &str, refresh: Option<&str>) -> Tokens {
        Tokens {
            auth: Secret::new(auth),
            refresh: refresh.map(Secret::new),
            obtained_at: Instant::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_reused_for_55_minutes_then_renewed_with_its_refresh_token() {
        let cache = TokenCache::default();
        let seen: std::sync::Mutex<Vec<Option<String>>> = Default::default();
        let renew = |refresh: Option<Secret>| {
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(refresh.map(|r| r.expose().to_string()));
                seen.len()
            };
            async move { Ok(tokens(&format!("t{n}"), Some(&format!("r{n}")))) }
        };
        assert_eq!(cache.get_or_renew(renew).await.unwrap().expose(), "t1");
        tokio::time::advance(RENEW_AFTER - Duration::from_secs(1)).await;
        assert_eq!(cache.get_or_renew(renew).await.unwrap().expose(), "t1");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get_or_renew(renew).await.unwrap().expose(), "t2");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![None, Some("r1".to_string())],
            "the first renewal is a login, the second a refresh with the old refresh token"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_renewal_leaves_nothing_behind_and_the_next_one_is_a_login() {
        let cache = TokenCache::default();
        cache
            .get_or_renew(|_| async { Ok(tokens("old", Some("r-old"))) })
            .await
            .unwrap();
        tokio::time::advance(RENEW_AFTER).await;
        let failed = cache
            .get_or_renew(|_| async { Err(AdapterError::Timeout("login".into())) })
            .await;
        assert!(failed.is_err());
        let next = cache
            .get_or_renew(|refresh| async move {
                assert!(refresh.is_none(), "nothing stale is left to refresh");
                Ok(tokens("new", None))
            })
            .await
            .unwrap();
        assert_eq!(next.expose(), "new");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_dropped_mid_login_releases_the_lock_and_leaves_no_token() {
        let cache = Arc::new(TokenCache::default());
        let slow = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_renew(|_| async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(tokens("never", None))
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        slow.abort();
        assert!(slow.await.unwrap_err().is_cancelled());
        let t = tokio::time::timeout(
            Duration::from_secs(1),
            cache.get_or_renew(|refresh| async move {
                assert!(refresh.is_none());
                Ok(tokens("fresh", None))
            }),
        )
        .await
        .expect("the lock was released")
        .unwrap();
        assert_eq!(t.expose(), "fresh");
    }

    #[tokio::test(start_paused = true)]
    async fn invalidating_a_replaced_token_keeps_the_new_one() {
        let cache = TokenCache::default();
        let old = cache
            .get_or_renew(|_| async { Ok(tokens("old", None)) })
            .await
            .unwrap();
        cache.invalidate(&old).await;
        let new = cache
            .get_or_renew(|_| async { Ok(tokens("new", None)) })
            .await
            .unwrap();
        cache.invalidate(&old).await;
        let again = cache
            .get_or_renew(|_| async { Ok(tokens("newer", None)) })
            .await
            .unwrap();
        assert_eq!(again, new);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_login() {
        let cache = Arc::new(TokenCache::default());
        let logins = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, logins) = (cache.clone(), logins.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_renew(|_| async {
                            logins.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(tokens("shared", None))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().expose(), "shared");
        }
        assert_eq!(logins.load(Ordering::SeqCst), 1);
    }
}
