//! The client-side rate limiter: at most N requests in any rolling window,
//! counted as the server counts them.
//!
//! BCDM answers 429 when one access key sends more than 10 requests in any
//! rolling second. A full sync pages through thousands of devices and the
//! dispatcher may send actions at the same time, so the adapter paces itself
//! rather than relying on 429 and `Retry-After` (a refused command is not
//! repeated: it would cost an action its retry delay).
//!
//! **Why completions, not starts.** The server counts *arrivals*, and a
//! request arrives somewhere between our start and the answer we receive.
//! Spacing starts a window apart (the first version) lets a slow request and
//! a fast one land in the same server second: ten sent at 0 that arrive at
//! 0.9 s, and an eleventh sent at 1.0 s that arrives at once, make eleven.
//! So each request holds a [`Permit`] until its answer's head is in, and a
//! slot is free again only one window after that *completion*. Then no
//! window can hold more than `max` arrivals: when a request starts, each of
//! the `max` others whose arrival could share its window is either still in
//! flight or completed less than a window ago, and both are counted. A few
//! milliseconds of each request's latency is the price.
//!
//! The log (requests in flight, completion times of the last ones) sits behind
//! a short std mutex that a dropped [`Permit`] also takes. Waiting callers
//! queue on a `tokio::sync::Mutex`, which is fair (FIFO): they are served in
//! arrival order and none starves. A caller dropped while it waits releases
//! its place and has recorded nothing. `tokio::time` is used throughout so
//! tests can run it under paused time.

use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    max: usize,
    window: Duration,
    /// The caller at the head of this queue is the one that may take the next slot.
    queue: Mutex<()>,
    log: StdMutex<Log>,
    /// Signalled when a request completes (a slot in flight turns into a timed one).
    completed: Notify,
}

#[derive(Debug, Default)]
struct Log {
    /// Requests started and not yet answered: each holds a slot.
    in_flight: usize,
    /// Completion times of recent requests, oldest first; each holds a slot
    /// until a window after it.
    completed: VecDeque<Instant>,
}

/// One request's slot: drop it when the answer's head is in (or the request
/// failed or was abandoned). Its completion time starts the slot's last window.
#[derive(Debug)]
#[must_use = "the slot is released when the permit is dropped"]
pub(crate) struct Permit<'a> {
    limiter: &'a RateLimiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut log = self.limiter.lock_log();
        log.in_flight = log.in_flight.saturating_sub(1);
        log.completed.push_back(Instant::now());
        while log.completed.len() > self.limiter.max {
            log.completed.pop_front();
        }
        drop(log);
        self.limiter.completed.notify_one();
    }
}

impl RateLimiter {
    /// `max` requests per `window`; `max` must be at least 1 (checked by the config).
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        let max = max.max(1) as usize;
        RateLimiter {
            max,
            window,
            queue: Mutex::new(()),
            log: StdMutex::new(Log {
                in_flight: 0,
                completed: VecDeque::with_capacity(max),
            }),
            completed: Notify::new(),
        }
    }

    fn lock_log(&self) -> std::sync::MutexGuard<'_, Log> {
        // The log is consistent after every statement, so a poisoned lock
        // (a panic elsewhere while holding it) leaves nothing half-done.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until one more request may start, and returns its slot.
    pub(crate) async fn acquire(&self) -> Permit<'_> {
        let _head = self.queue.lock().await;
        loop {
            // Registered before the log is read, so a completion between the
            // read and the wait is not missed.
            let completed = self.completed.notified();
            let wake_at = {
                let mut log = self.lock_log();
                let now = Instant::now();
                while log
                    .completed
                    .front()
                    .is_some_and(|&done| done + self.window <= now)
                {
                    log.completed.pop_front();
                }
                if log.in_flight + log.completed.len() < self.max {
                    log.in_flight += 1;
                    return Permit { limiter: self };
                }
                // Full: the oldest completion frees a slot a window after it;
                // if every slot is in flight, a completion comes first.
                log.completed.front().map(|&done| done + self.window)
            };
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => completed.await,
            }
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
                    drop(limiter.acquire().await);
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
        drop(limiter.acquire().await);
        drop(limiter.acquire().await);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = Instant::now();
        drop(limiter.acquire().await);
        assert_eq!(Instant::now(), before);
    }

    /// Sends one request through `limiter` over a simulated network: it
    /// reaches the server `to_server` after it starts (its arrival is logged)
    /// and its answer is back 10 ms later, when the slot is released.
    fn send(
        limiter: &Arc<RateLimiter>,
        arrivals: &Arc<StdMutex<Vec<Instant>>>,
        to_server: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let (limiter, arrivals) = (limiter.clone(), arrivals.clone());
        tokio::spawn(async move {
            let _slot = limiter.acquire().await;
            tokio::time::sleep(to_server).await;
            arrivals.lock().unwrap().push(Instant::now());
            tokio::time::sleep(Duration::from_millis(10)).await;
        })
    }

    /// Ten requests that take 900 ms to reach the server, then one that
    /// reaches it at once: spacing starts a second apart would land all
    /// eleven in the server's second (0.9 s to 1.0 s), and BCDM answers 429.
    #[tokio::test(start_paused = true)]
    async fn slow_arrivals_and_a_fast_one_never_crowd_the_servers_second() {
        let limiter = Arc::new(RateLimiter::new(10, Duration::from_secs(1)));
        let arrivals = Arc::new(StdMutex::new(Vec::new()));
        let mut requests: Vec<_> = (0..10)
            .map(|_| send(&limiter, &arrivals, Duration::from_millis(900)))
            .collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        requests.push(send(&limiter, &arrivals, Duration::ZERO));
        for request in requests {
            request.await.unwrap();
        }
        let arrivals = arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.len(), 11);
        assert_eq!(
            busiest_window(arrivals, Duration::from_secs(1)),
            10,
            "no more than ten requests reach the server within one second"
        );
    }

    /// When every slot is taken by a request still in flight, the next one
    /// waits for a completion and then a whole window.
    #[tokio::test(start_paused = true)]
    async fn with_every_slot_in_flight_the_next_waits_a_window_after_the_first_answer() {
        let limiter = Arc::new(RateLimiter::new(2, Duration::from_secs(1)));
        let begin = Instant::now();
        let first = limiter.acquire().await;
        let second = limiter.acquire().await;
        let third = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                drop(limiter.acquire().await);
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(second);
        assert_eq!(third.await.unwrap() - begin, Duration::from_secs(4));
    }

    /// A caller that gives up while it waits takes no slot: the next one
    /// gets the slot as soon as the window allows.
    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_waiting_takes_no_slot() {
        let limiter = RateLimiter::new(1, Duration::from_secs(1));
        let begin = Instant::now();
        drop(limiter.acquire().await);
        let gave_up = tokio::time::timeout(Duration::from_millis(300), limiter.acquire()).await;
        assert!(gave_up.is_err(), "the window was full");
        drop(limiter.acquire().await);
        assert_eq!(Instant::now() - begin, Duration::from_secs(1));
        let before = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(limiter.acquire().await);
        assert_eq!(
            Instant::now() - before,
            Duration::from_secs(1),
            "and then at once"
        );
    }
}
