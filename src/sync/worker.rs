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
use tokio_util::task::TaskTracker;

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
                let retries = i.background_sync && !cancel.is_cancelled();
                let delay = retries.then(|| backoff(&ctx.settings, failures));
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

/// `base * 2^(failures-1)`, capped, with ±25 % jitter so that many MDMs that
/// failed together (a network outage) do not retry together.
pub(crate) fn backoff(settings: &SyncSettings, failures: u32) -> Duration {
    let exp = settings
        .retry_base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = exp.min(settings.retry_cap);
    let jitter = rand::thread_rng().gen_range(0.75..1.25);
    capped.mul_f64(jitter)
}

/// The scheduler of the periodic full syncs, stopped when `cancel` fires.
pub(crate) async fn scheduler(
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> Option<tokio_cron_scheduler::JobScheduler> {
    use tokio_cron_scheduler::JobScheduler;
    let scheduler = match JobScheduler::new().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot create the sync scheduler: scheduled syncs will not run");
            return None;
        }
    };
    if let Err(e) = scheduler.start().await {
        tracing::error!(error = %e, "Cannot start the sync scheduler: scheduled syncs will not run");
        return None;
    }
    let mut stopper = scheduler.clone();
    tasks.spawn(async move {
        cancel.cancelled().await;
        if let Err(e) = stopper.shutdown().await {
            tracing::warn!(error = %e, "The sync scheduler did not stop cleanly");
        }
    });
    Some(scheduler)
}

/// One repeated job for an integration (tenant, MDM name), shifted by a random
/// offset so that many tenants do not all start in the same second. The job
/// looks the integration up when it fires, so a reload that rebuilds or
/// removes the integration, or turns `background_sync` off, needs no new job.
pub(crate) async fn schedule_one(
    scheduler: &tokio_cron_scheduler::JobScheduler,
    engine: std::sync::Weak<Inner>,
    key: (String, String),
    every: Duration,
    max_offset: Duration,
) {
    use tokio_cron_scheduler::Job;
    let max_offset = max_offset.min(every / 2);
    let offset = if max_offset.is_zero() {
        Duration::ZERO
    } else {
        rand::thread_rng().gen_range(Duration::ZERO..max_offset)
    };
    let (tenant, name) = key.clone();
    let job = Job::new_repeated_async(every, move |_, _| {
        let engine = engine.clone();
        let (tenant, name) = key.clone();
        Box::pin(async move {
            tokio::time::sleep(offset).await;
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
                })
                .map(|w| w.tx.clone());
            let Some(tx) = tx else {
                return; // removed by a reload, or background_sync turned off
            };
            match super::enqueue(&tx, SyncTrigger::Scheduled, None, None) {
                Ok(super::Requested::Queued) => {
                    tracing::debug!(%tenant, mdm = %name, "Scheduled full sync queued")
                }
                Ok(super::Requested::Coalesced) => {
                    tracing::debug!(%tenant, mdm = %name, "Scheduled full sync coalesced with a queued one")
                }
                Err(_) => {}
            }
        })
    });
    match job {
        Ok(job) => {
            if let Err(e) = scheduler.add(job).await {
                tracing::error!(%tenant, mdm = %name, error = %e, "Cannot schedule the full sync");
            }
        }
        Err(e) => tracing::error!(error = %e, "Cannot build the sync schedule"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = SyncSettings {
            retry_base: Duration::from_secs(10),
            retry_cap: Duration::from_secs(60),
            ..Default::default()
        };
        let first = backoff(&s, 1);
        assert!(
            first >= Duration::from_millis(7500) && first <= Duration::from_millis(12500),
            "{first:?}"
        );
        let third = backoff(&s, 3);
        assert!(
            third >= Duration::from_secs(30) && third <= Duration::from_secs(50),
            "{third:?}"
        );
        for n in [5, 20, 40] {
            assert!(
                backoff(&s, n) <= Duration::from_secs(75),
                "capped (with jitter) at failure {n}"
            );
        }
    }
}
