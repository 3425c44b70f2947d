//! The client-side rate limiter: at most N requests in any rolling window.
//!
//! BCDM answers 429 when one access key sends more than 10 requests in any
//! rolling second. A full sync pages through thousands of devices and the
//! dispatcher may send actions at the same time, so the adapter paces itself
//! rather than relying on 429 and `Retry-After`.
//!
//! A sliding window log: the start times of the last `max` requests. A caller
//! may start when fewer than `max` starts lie inside the window ending now;
//! otherwise it sleeps until the oldest one leaves the window. The log sits
//! behind a `tokio::sync::Mutex` that the waiting caller holds while it sleeps:
//! tokio's mutex is fair (FIFO), so concurrent callers are served in arrival
//! order and none starves. A caller dropped while it waits releases the lock
//! and has recorded nothing. `tokio::time` is used throughout so tests can
//! run it under paused time.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    max: usize,
    window: Duration,
    /// Start times of the most recent requests, oldest first (at most `max`).
    starts: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    /// `max` requests per `window`; `max` must be at least 1 (checked by the config).
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        let max = max.max(1) as usize;
        RateLimiter {
            max,
            window,
            starts: Mutex::new(VecDeque::with_capacity(max)),
        }
    }

    /// Waits until one more request may start, and records its start.
    pub(crate) async fn acquire(&self) {
        let mut starts = self.starts.lock().await;
        loop {
            let now = Instant::now();
            while starts
                .front()
                .is_some_and(|&oldest| oldest + self.window <= now)
            {
                starts.pop_front();
            }
            if starts.len() < self.max {
                starts.push_back(now);
                return;
            }
            // The window is full, so it holds at least one start.
            let oldest = *starts.front().expect("a full window is not empty");
            tokio::time::sleep_until(oldest + self.window).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The largest number of instants inside any half-open window `[t, t + window)`.
    fn busiest_window(mut times: Vec<Instant>, window: Duration) -> usize {
        times.sort();
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|&&t| t < times[i] + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn twenty_five_requests_at_ten_per_second_take_two_seconds_and_never_crowd_a_second() {
        let limiter = Arc::new(RateLimiter::new(10, Duration::from_secs(1)));
        let begin = Instant::now();
        let tasks: Vec<_> = (0..25)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        let last = *times.iter().max().unwrap();
        assert!(
            last - begin >= Duration::from_secs(2),
            "took {:?}",
            last - begin
        );
        assert!(busiest_window(times.clone(), Duration::from_secs(1)) <= 10);
        // The first ten go at once: the limiter does not slow a burst that fits.
        assert_eq!(times.iter().filter(|&&t| t == begin).count(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_after_a_quiet_second_goes_at_once() {
        let limiter = RateLimiter::new(2, Duration::from_secs(1));
        limiter.acquire().await;
        limiter.acquire().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = Instant::now();
        limiter.acquire().await;
        assert_eq!(Instant::now(), before);
    }
}
