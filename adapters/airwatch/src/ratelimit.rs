//! Respecting AirWatch's `x-ratelimit-*` headers.
//!
//! Every answer carries `x-ratelimit-limit`, `x-ratelimit-remaining` and
//! `x-ratelimit-reset` (epoch seconds). The adapter remembers the last values
//! in one `Mutex`'d state shared by every caller of this adapter (a sync and
//! the dispatcher may run at once), and before each request asks
//! [`RateLimiter::before_request`]: while the quota is nearly spent, the
//! request waits until the reset instead of running into 429s. Each request
//! also takes one unit off the remembered `remaining`, so concurrent callers
//! cannot all spend the last units between two answers.
//!
//! Waits are capped ([`RateLimiter::MAX_WAIT`]): a daily quota may reset hours
//! ahead, and a sync must not hang that long; after the cap the request goes
//! out and the server's answer (a 429 if still spent) decides.
//!
//! Time is `tokio::time`, so tests drive it with `tokio::time::pause()`.

use reqwest::header::HeaderMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The remembered quota of the current window.
#[derive(Debug, Default)]
struct State {
    limit: Option<u64>,
    remaining: Option<u64>,
    /// When the window resets, on the tokio clock; `None` when unknown.
    reset_at: Option<Instant>,
}

#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    // A std Mutex: it is never held across an await (the wait happens after
    // the guard is dropped), and it is only ever held for a few comparisons.
    state: Mutex<State>,
}

/// Why a request waits: what the log line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slowdown {
    pub wait: Duration,
    pub remaining: u64,
    pub limit: Option<u64>,
}

impl RateLimiter {
    /// The longest one request waits for a reset.
    pub const MAX_WAIT: Duration = Duration::from_secs(60);

    /// Values below this are seconds until the reset rather than an epoch
    /// (some gateways send the delta): 10^9 s is September 2001.
    const EPOCH_FLOOR: u64 = 1_000_000_000;

    /// Waits, if the quota is nearly spent, until the window resets.
    pub async fn before_request(&self, mdm: &str) {
        if let Some(s) = self.reserve(Instant::now()) {
            tracing::info!(
                mdm,
                remaining = s.remaining,
                limit = s.limit,
                wait_ms = s.wait.as_millis() as u64,
                "Rate limit nearly spent; slowing down until it resets."
            );
            tokio::time::sleep(s.wait).await;
        }
    }

    /// Takes one request from the quota, or says how long to wait first.
    pub(crate) fn reserve(&self, now: Instant) -> Option<Slowdown> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let reset_at = st.reset_at?;
        if now >= reset_at {
            // The window is over: the next answer tells the new quota.
            st.remaining = None;
            st.reset_at = None;
            return None;
        }
        let remaining = st.remaining?;
        if remaining <= Self::reserve_floor(st.limit) {
            return Some(Slowdown {
                wait: (reset_at - now).min(Self::MAX_WAIT),
                remaining,
                limit: st.limit,
            });
        }
        st.remaining = Some(remaining - 1);
        None
    }

    /// "Nearly spent": at most 5 % of the limit, and never fewer than 2 left
    /// (headroom for the other callers and for requests already in flight).
    fn reserve_floor(limit: Option<u64>) -> u64 {
        limit.map_or(2, |l| (l / 20).max(2))
    }

    /// Remembers the quota an answer reports (any status).
    pub fn observe(&self, headers: &HeaderMap) {
        let num =
            |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.observe_at(
            num("x-ratelimit-limit"),
            num("x-ratelimit-remaining"),
            num("x-ratelimit-reset"),
            now_ms,
            Instant::now(),
        );
    }

    /// [`Self::observe`] with the clocks given (wall clock in epoch
    /// milliseconds, to place the epoch-seconds reset on the tokio clock).
    pub(crate) fn observe_at(
        &self,
        limit: Option<u64>,
        remaining: Option<u64>,
        reset: Option<u64>,
        now_epoch_ms: u64,
        now: Instant,
    ) {
        if limit.is_none() && remaining.is_none() && reset.is_none() {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if limit.is_some() {
            st.limit = limit;
        }
        st.remaining = remaining;
        st.reset_at = reset.and_then(|r| {
            let until = if r < Self::EPOCH_FLOOR {
                Duration::from_secs(r)
            } else {
                Duration::from_millis(r.saturating_mul(1000).saturating_sub(now_epoch_ms))
            };
            // A reset centuries ahead is as good as an hour: waits are capped anyway.
            now.checked_add(until.min(mtd_adapter::MAX_RETRY_AFTER))
        });
    }

    /// A 429: the quota is spent until `Retry-After` (when given), for every
    /// caller of this adapter, not only the one that got it.
    pub fn observe_throttled(&self, retry_after: Option<Duration>) {
        let Some(after) = retry_after else { return };
        // At most an hour (CONTRACT §4); `checked_add`: no wait can panic here.
        let after = after.min(mtd_adapter::MAX_RETRY_AFTER);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.remaining = Some(0);
        st.reset_at = Instant::now().checked_add(after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_700_000_000_000;

    #[tokio::test(start_paused = true)]
    async fn a_spent_quota_delays_the_next_request_until_the_reset() {
        let rl = RateLimiter::default();
        let start = Instant::now();
        rl.observe_at(Some(100), Some(0), Some(NOW_MS / 1000 + 2), NOW_MS, start);
        rl.before_request("test").await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // The window is over: the next request goes at once.
        rl.before_request("test").await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_quota_costs_no_wait_but_is_counted_down() {
        let rl = RateLimiter::default();
        let now = Instant::now();
        rl.observe_at(Some(1000), Some(52), Some(NOW_MS / 1000 + 30), NOW_MS, now);
        // 5 % of 1000 is 50: two requests go, the third waits.
        assert_eq!(rl.reserve(now), None);
        assert_eq!(rl.reserve(now), None);
        let s = rl.reserve(now).unwrap();
        assert_eq!(s.remaining, 50);
        assert_eq!(s.wait, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_are_capped_and_missing_headers_change_nothing() {
        let rl = RateLimiter::default();
        let now = Instant::now();
        assert_eq!(rl.reserve(now), None);
        rl.observe_at(None, None, None, NOW_MS, now);
        assert_eq!(rl.reserve(now), None);
        rl.observe_at(Some(10), Some(1), Some(NOW_MS / 1000 + 86_400), NOW_MS, now);
        assert_eq!(rl.reserve(now).unwrap().wait, RateLimiter::MAX_WAIT);
        // A delta instead of an epoch is read as seconds from now.
        rl.observe_at(Some(10), Some(0), Some(3), NOW_MS, now);
        assert_eq!(rl.reserve(now).unwrap().wait, Duration::from_secs(3));
        // A reset in the past means the window is over.
        rl.observe_at(Some(10), Some(0), Some(NOW_MS / 1000 - 5), NOW_MS, now);
        assert_eq!(rl.reserve(now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_with_retry_after_holds_back_every_caller() {
        let rl = RateLimiter::default();
        let start = Instant::now();
        rl.observe_throttled(Some(Duration::from_secs(4)));
        rl.before_request("test").await;
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }
}
