//! What an integration is waiting for right now, for the status API: the
//! worker's retry after failed full syncs, and the MDM's last rate-limit answer.
//!
//! Kept in memory on purpose: a back-off describes this process's next step
//! and means nothing after a restart, so the store does not hold it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct IntegrationHealth {
    state: Mutex<Backoff>,
}

/// The `backoff` object of `GET …/status`; absent fields are not in effect.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Backoff {
    /// Full syncs failed in a row; the next try is at `sync_retry_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_failures: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_retry_at: Option<DateTime<Utc>>,
    /// The MDM answered "too many requests"; it asked to wait until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limited_until: Option<DateTime<Utc>>,
}

impl IntegrationHealth {
    fn with<R>(&self, f: impl FnOnce(&mut Backoff) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A full sync failed for the `failures`-th time in a row; retried at `retry_at`
    /// (`None`: no automatic retry, e.g. `background_sync = false`).
    pub fn sync_failed(&self, failures: u32, retry_at: Option<DateTime<Utc>>) {
        self.with(|b| {
            b.sync_failures = Some(failures);
            b.sync_retry_at = retry_at;
        })
    }

    pub fn sync_succeeded(&self) {
        self.with(|b| {
            b.sync_failures = None;
            b.sync_retry_at = None;
        })
    }

    /// The MDM refused a request as rate limited, asking to wait `wait`
    /// (a short default when it did not say; at most an hour, CONTRACT §4).
    pub fn rate_limited(&self, wait: Option<Duration>) {
        let wait = wait
            .unwrap_or(Duration::from_secs(1))
            .min(mtd_adapter::MAX_RETRY_AFTER);
        // Cannot fail for an hour; checked all the same, never a panic here.
        let Some(until) = chrono::Duration::from_std(wait)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
        else {
            return;
        };
        self.with(|b| {
            if b.rate_limited_until.is_none_or(|t| t < until) {
                b.rate_limited_until = Some(until);
            }
        })
    }

    /// The back-off in effect now, or `None` when there is none.
    pub fn backoff(&self) -> Option<Backoff> {
        let now = Utc::now();
        self.with(|b| {
            if b.rate_limited_until.is_some_and(|t| t <= now) {
                b.rate_limited_until = None;
            }
            (*b != Backoff::default()).then(|| b.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_shows_while_it_lasts_and_clears() {
        let h = IntegrationHealth::default();
        assert_eq!(h.backoff(), None);
        let at = Utc::now() + chrono::Duration::seconds(30);
        h.sync_failed(2, Some(at));
        let b = h.backoff().unwrap();
        assert_eq!((b.sync_failures, b.sync_retry_at), (Some(2), Some(at)));
        h.rate_limited(Some(Duration::from_secs(60)));
        assert!(h.backoff().unwrap().rate_limited_until.unwrap() > at);
        h.sync_succeeded();
        assert!(h.backoff().unwrap().sync_failures.is_none());
        let h = IntegrationHealth::default();
        h.rate_limited(Some(Duration::ZERO));
        assert_eq!(h.backoff(), None, "an expired rate limit is not shown");
    }

    #[test]
    fn a_huge_retry_after_is_shown_as_one_hour_and_does_not_panic() {
        let h = IntegrationHealth::default();
        h.rate_limited(Some(Duration::from_secs(u64::MAX)));
        h.rate_limited(Some(Duration::MAX));
        let until = h.backoff().unwrap().rate_limited_until.unwrap();
        let wait = until - Utc::now();
        assert!(
            wait > chrono::Duration::minutes(59) && wait <= chrono::Duration::hours(1),
            "{wait}"
        );
    }
}
