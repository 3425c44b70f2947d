//! The worker of one integration, and the schedule that feeds it.
//!
//! The worker owns its channel's receiver: it takes one request, drains every
//! request already waiting into the same run (coalescing), runs, answers them
//! all, and loops. After a failed run it retries by itself with capped
//! exponential backoff and jitter, for MDMs with `background_sync`.

use super::run::full_sync;
use super::{FullSyncRequest, Inner, Integration, SyncSettings};
use crate::shutdown::CancellationToken;
use crate::store::{Store, SyncOutcome, SyncTrigger};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub(crate) struct WorkerCtx {
    pub integration: Arc<Integration>,
    pub store: Store,
    pub settings: SyncSettings,
    /// Held for each run: shared with a worker of the same MDM that a reload replaced.
    pub run_lock: Arc<tokio::sync::Mutex<()>>,
}

pub(crate) async fn run(
    ctx: WorkerCtx,
    mut rx: mpsc::Receiver<FullSyncRequest>,
    cancel: CancellationToken,
) {
    let i = &ctx.integration;
    let mut failures: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    loop {
        let first = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            req = rx.recv() => match req {
                Some(req) => req,
                None => break,
            },
            _ = sleep_until(retry_at) => {
                tracing::info!(tenant = %i.tenant_id, mdm = %i.name, attempt = failures + 1, "Retrying the failed full sync");
                FullSyncRequest { trigger: SyncTrigger::Scheduled, reply: None, progress: None }
            }
        };
        let mut batch = vec![first];
        loop {
            // Everything that arrived while waiting (or during the last run) is served by this run.
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let trigger = batch[0].trigger;
            let progress = batch.iter().find_map(|r| r.progress.clone());
            let report = {
                let _only_run = ctx.run_lock.lock().await;
                full_sync(&ctx, trigger, progress, &cancel).await
            };
            let failed = report.outcome != SyncOutcome::Succeeded;
            for req in batch.drain(..) {
                if let Some(reply) = req.reply {
                    let _ = reply.send(report.clone());
                }
            }
            if failed {
                failures += 1;
                let retries = i.background_sync && i.enabled && !cancel.is_cancelled();
                let delay = retries.then(|| {
                    crate::backoff::delay(
                        ctx.settings.retry_base,
                        ctx.settings.retry_cap,
                        failures,
                        report.retry_after,
                    )
                });
                retry_at = delay.map(|d| Instant::now() + d);
                i.health.sync_failed(
                    failures,
                    delay
                        .and_then(|d| chrono::Duration::from_std(d).ok())
                        .map(|d| chrono::Utc::now() + d),
                );
                if let Some(delay) = delay {
                    tracing::warn!(
                        tenant = %i.tenant_id, mdm = %i.name, error_class = report.error_class.unwrap_or("store"),
                        retry_in_seconds = delay.as_secs(), failures,
                        "Full sync failed; retrying later"
                    );
                }
            } else {
                failures = 0;
                retry_at = None;
                i.health.sync_succeeded();
            }
            if cancel.is_cancelled() {
                return;
            }
            // Coalesced follow-up: one more run for whatever arrived during this one.
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When a repeating schedule is due next, given the slot it just fired for.
///
/// Normally `last_due + every`, which keeps the schedule in phase when a
/// run fires a little late. When it fired late by a whole interval or more
/// (the process was suspended, the runtime stalled, or a clock jumped
/// forward), that run stands for every slot missed meanwhile and the next
/// one is a full interval after it: no burst of catch-up runs, and never a
/// schedule that stops. A clock that went backwards never pushes the next
/// run more than one interval past `now`. Pure, so the jumps are
/// unit-tested; the timer drives it with tokio's monotonic clock, which a
/// change of the wall clock does not move at all.
pub(crate) fn next_due(last_due: Instant, now: Instant, every: Duration) -> Instant {
    let next = last_due + every;
    if next > now {
        next.min(now + every)
    } else {
        now + every
    }
}

/// The schedule of one integration (tenant, MDM name): every `every`, the
/// first `every + offset` from now (a random offset per integration keeps
/// many tenants from syncing in the same second). It looks the integration
/// up each time, so a reload that rebuilds or removes it, or turns
/// `background_sync` off, needs no new schedule; it ends with `cancel` or
/// the engine. A tick that finds a run still queued is coalesced into it.
pub(crate) async fn schedule_one(
    engine: std::sync::Weak<Inner>,
    key: (String, String),
    every: Duration,
    max_offset: Duration,
    cancel: CancellationToken,
) {
    let max_offset = max_offset.min(every / 2);
    let offset = if max_offset.is_zero() {
        Duration::ZERO
    } else {
        rand::thread_rng().gen_range(Duration::ZERO..max_offset)
    };
    let (tenant, name) = key;
    let mut due = Instant::now() + offset + every;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let tx = engine
            .workers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|w| {
                w.integration.tenant_id == tenant
                    && w.integration.name == name
                    && w.integration.background_sync
                    && w.integration.enabled
            })
            .map(|w| w.tx.clone());
        drop(engine);
        // None: removed by a reload, or background_sync turned off (for now).
        if let Some(tx) = tx {
            match super::enqueue(&tx, SyncTrigger::Scheduled, None, None) {
                Ok(super::Requested::Queued) => {
                    tracing::debug!(%tenant, mdm = %name, "Scheduled full sync queued")
                }
                Ok(super::Requested::Coalesced) => {
                    tracing::debug!(%tenant, mdm = %name, "Scheduled full sync coalesced with a queued one")
                }
                Err(_) => {}
            }
        }
        let now = Instant::now();
        if now >= due + every {
            tracing::info!(
                %tenant, mdm = %name, late_seconds = (now - due).as_secs(),
                "The scheduled full sync ran late by more than its interval (the process was suspended?); missed runs are not repeated"
            );
        }
        due = next_due(due, now, every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn the_next_slot_follows_the_last_one_when_on_time() {
        let t0 = Instant::now();
        assert_eq!(next_due(t0, t0, 4 * H), t0 + 4 * H);
        // A tick that fires a little late keeps the phase.
        assert_eq!(
            next_due(t0, t0 + Duration::from_millis(30), 4 * H),
            t0 + 4 * H
        );
        assert_eq!(
            next_due(t0, t0 + 4 * H - Duration::from_secs(1), 4 * H),
            t0 + 4 * H
        );
    }

    #[test]
    fn after_a_forward_jump_of_several_intervals_the_schedule_goes_on() {
        let t0 = Instant::now();
        // Slot t0 fired 13 h late (4 h interval): that run stands for the
        // 4, 8 and 12 h slots; the next is one interval later, and so on.
        let now = t0 + 13 * H;
        assert_eq!(next_due(t0, now, 4 * H), t0 + 17 * H);
        assert_eq!(next_due(t0 + 17 * H, t0 + 17 * H, 4 * H), t0 + 21 * H);
        // Exactly one interval late: the slot that is due now is this run.
        assert_eq!(next_due(t0, t0 + 4 * H, 4 * H), t0 + 8 * H);
        // A jump of a century, on a one-second schedule, neither overflows
        // nor stops it.
        let far = t0 + 24 * 365 * 100 * H;
        let next = next_due(t0, far, Duration::from_secs(1));
        assert!(next > far && next <= far + Duration::from_secs(1));
    }

    #[test]
    fn a_backward_jump_never_delays_the_next_run_by_more_than_one_interval() {
        let t0 = Instant::now();
        // The last slot lies in the "future" of a clock that went back 5 h.
        let last = t0 + 10 * H;
        let now = t0 + 5 * H;
        assert_eq!(next_due(last, now, 4 * H), now + 4 * H);
        // Within one interval it keeps the slot.
        assert_eq!(next_due(last, t0 + 9 * H, 4 * H), t0 + 13 * H);
    }

    #[test]
    fn the_schedule_fires_once_per_interval_before_and_after_a_long_gap() {
        let t0 = Instant::now();
        let every = Duration::from_secs(2);
        let mut due = t0 + every;
        let mut now = t0;
        let mut fired = Vec::new();
        // A clock read every 500 ms, that jumps 60 s ahead once.
        for step in 0..200 {
            now += if step == 50 {
                Duration::from_secs(60)
            } else {
                Duration::from_millis(500)
            };
            if due <= now {
                fired.push(now);
                due = next_due(due, now, every);
                assert!(due > now, "never due again at once");
            }
        }
        // 100 s of clock: about 26 s at 2 s per run besides the gap, and one
        // run for the gap itself.
        let after_gap = fired
            .iter()
            .filter(|at| **at > t0 + Duration::from_secs(80))
            .count();
        assert!(
            after_gap >= 10,
            "the schedule goes on after the jump: {}",
            fired.len()
        );
        for pair in fired.windows(2) {
            assert!(
                pair[1] - pair[0] >= every - Duration::from_millis(500),
                "no burst of catch-up runs"
            );
        }
    }
}
