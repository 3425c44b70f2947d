//! The one back-off of everything that tries an MDM again: failed actions
//! (the dispatcher) and failed full syncs (the sync workers).
//!
//! Exponential from `base`, capped, with ±25 % jitter so that work that
//! failed together (a network outage) does not retry together, and never
//! shorter than the MDM's own `Retry-After`, which counts as at most one
//! hour (CONTRACT §4: "here and wherever the connector waits for an MDM").

use rand::Rng;
use std::time::Duration;

/// The longest wait an MDM's `Retry-After` can impose.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The wait before try `attempt + 1`, after `attempt` failures (1 = the
/// first failure): `base * 2^(attempt-1)` up to `cap`, jittered, and at
/// least `retry_after` (itself at most [`MAX_RETRY_AFTER`]).
pub fn delay(
    base: Duration,
    cap: Duration,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(cap);
    let jittered = exp.mul_f64(rand::thread_rng().gen_range(0.75..1.25));
    match retry_after {
        Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(10);
    const CAP: Duration = Duration::from_secs(60);

    #[test]
    fn the_delay_doubles_per_failure_within_its_jitter_and_is_capped() {
        let first = delay(BASE, CAP, 1, None);
        assert!(
            first >= Duration::from_millis(7500) && first <= Duration::from_millis(12500),
            "{first:?}"
        );
        let third = delay(BASE, CAP, 3, None);
        assert!(
            third >= Duration::from_secs(30) && third <= Duration::from_secs(50),
            "{third:?}"
        );
        for n in [5, 20, 40, u32::MAX] {
            assert!(delay(BASE, CAP, n, None) <= Duration::from_secs(75), "{n}");
        }
    }

    #[test]
    fn the_mdms_retry_after_is_honoured_up_to_one_hour() {
        let asked = Duration::from_secs(120);
        assert!(delay(BASE, CAP, 1, Some(asked)) >= asked);
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(delay(BASE, CAP, 1, Some(huge)), MAX_RETRY_AFTER);
        // A short Retry-After does not shorten the back-off.
        assert!(delay(BASE, CAP, 3, Some(Duration::from_secs(1))) >= Duration::from_secs(30));
    }
}
