//! The OAuth2 access token: fetched once, shared, renewed before it expires.
//!
//! MobiControl hands out bearer tokens through the password grant and no
//! refresh token, so "renewal" is simply asking again. One `tokio::sync::Mutex`
//! guards the cached token *and* the request for a new one: a caller that finds
//! no usable token asks for one while holding the lock, so twenty callers that
//! arrive together cause one token request and then all use its answer.

use mtd_adapter::Secret;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token and the moment to stop using it.
#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    pub value: Secret,
    /// `expires_in` minus a margin, so a request never leaves with a token
    /// that dies on its way.
    pub renew_at: Instant,
}

impl CachedToken {
    pub fn new(value: Secret, expires_in: Duration, now: Instant) -> Self {
        CachedToken {
            value,
            renew_at: now + expires_in - renewal_margin(expires_in),
        }
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.renew_at
    }
}

/// A tenth of the lifetime, at most a minute: 60 s of a one-hour token.
pub(crate) fn renewal_margin(expires_in: Duration) -> Duration {
    (expires_in / 10).min(Duration::from_secs(60))
}

/// The shared slot. The lock is held across a token request on purpose (see
/// the module docs).
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    slot: Mutex<Option<CachedToken>>,
}

impl TokenCache {
    /// The cached token if it is still fresh, else the one `fetch` gets (which
    /// is then cached). Callers queued behind a fetch re-check after they get
    /// the lock and so reuse the token it brought.
    pub async fn get_or_fetch<F, Fut, E>(&self, fetch: F) -> Result<Secret, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<CachedToken, E>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(token) = slot.as_ref().filter(|t| t.is_fresh(Instant::now())) {
            return Ok(token.value.clone());
        }
        // Drop a stale token before asking, so a failed request leaves nothing stale behind.
        *slot = None;
        let token = fetch().await?;
        let value = token.value.clone();
        *slot = Some(token);
        Ok(value)
    }

    /// Forgets `used` after the server refused it (401). A token another
    /// caller already replaced is left alone, so one 401 does not throw away
    /// the fresh token of a concurrent renewal.
    pub async fn invalidate(&self, used: &Secret) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|t| &t.value == used) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn the_margin_is_a_tenth_of_the_lifetime_and_at_most_a_minute() {
        assert_eq!(
            renewal_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            renewal_margin(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(renewal_margin(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_reused_until_its_margin_and_renewed_after() {
        let cache = TokenCache::default();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(CachedToken::new(
                Secret::new(format!("t{n}")),
                Duration::from_secs(3600),
                Instant::now(),
            ))
        };
        assert_eq!(cache.get_or_fetch(fetch).await.unwrap().expose(), "t0");
        tokio::time::advance(Duration::from_secs(3539)).await;
        assert_eq!(cache.get_or_fetch(fetch).await.unwrap().expose(), "t0");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get_or_fetch(fetch).await.unwrap().expose(), "t1");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidating_a_replaced_token_keeps_the_new_one() {
        let cache = TokenCache::default();
        let mk = |v: &'static str| {
            move || async move {
                Ok::<_, ()>(CachedToken::new(
                    Secret::new(v),
                    Duration::from_secs(3600),
                    Instant::now(),
                ))
            }
        };
        let old = cache.get_or_fetch(mk("old")).await.unwrap();
        cache.invalidate(&old).await;
        let new = cache.get_or_fetch(mk("new")).await.unwrap();
        cache.invalidate(&old).await;
        assert_eq!(cache.get_or_fetch(mk("newer")).await.unwrap(), new);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(|| async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(CachedToken::new(
                            Secret::new("shared"),
                            Duration::from_secs(3600),
                            Instant::now(),
                        ))
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().expose(), "shared");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
}
