//! One full sync of one MDM: list groups, users and devices page by page into
//! the store, then decide on removals.
//!
//! Each page is one transaction, so memory does not grow with the number of
//! devices and a failed run leaves what it wrote tagged with a failed run.
//! Removal happens only after a complete listing, and is held (recorded on the
//! run, logged as an error) when it looks like a broken listing rather than a
//! real change: no devices where there were some, or more than
//! `max_removal_percent` of them gone. A second consecutive complete run that
//! still misses them confirms and applies the removal.

use super::worker::WorkerCtx;
use super::ProgressFn;
use crate::shutdown::CancellationToken;
use crate::store::{Pii, RunCounts, StoreError, SyncOutcome, SyncTrigger, UpsertCounts};
use futures::StreamExt;
use mtd_adapter::{AdapterError, PageStream};
use serde::Serialize;
use std::time::{Duration, Instant};

/// What one run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub tenant_id: String,
    pub mdm: String,
    pub mdm_id: i64,
    pub run_id: Option<i64>,
    pub trigger: &'static str,
    pub outcome: SyncOutcome,
    pub counts: RunCounts,
    /// Devices, users and groups seen in the listing.
    pub listed: u64,
    pub error: Option<String>,
    /// The adapter's error class (`unauthorized`, `unavailable`, …), when the MDM failed.
    pub error_class: Option<&'static str>,
    /// Why removals were held, when they were.
    pub held_reason: Option<String>,
    pub collisions: u64,
    #[serde(with = "duration_ms")]
    pub duration: Duration,
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Mdm(#[from] AdapterError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("interrupted by shutdown")]
    Interrupted,
}

#[derive(Default)]
struct Listed {
    counts: UpsertCounts,
    devices: u64,
    total: u64,
    skipped: u64,
}

pub(crate) async fn full_sync(
    ctx: &WorkerCtx,
    trigger: SyncTrigger,
    progress: Option<ProgressFn>,
    cancel: &CancellationToken,
) -> RunReport {
    let i = &ctx.integration;
    let started = Instant::now();
    let mut report = RunReport {
        tenant_id: i.tenant_id.clone(),
        mdm: i.name.clone(),
        mdm_id: i.mdm_id,
        run_id: None,
        trigger: trigger.as_str(),
        outcome: SyncOutcome::Failed,
        counts: RunCounts::default(),
        listed: 0,
        error: None,
        error_class: None,
        held_reason: None,
        collisions: 0,
        duration: Duration::ZERO,
    };
    let run_id = match ctx.store.start_sync_run(i.mdm_id, trigger).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(tenant = %i.tenant_id, mdm = %i.name, error = %e, "Cannot record the start of a full sync");
            report.error = Some(format!("store: {e}"));
            crate::metrics::sync_run(i.kind, report.outcome, started.elapsed());
            return report;
        }
    };
    report.run_id = Some(run_id);
    tracing::info!(tenant = %i.tenant_id, mdm = %i.name, run_id, trigger = trigger.as_str(), "Full sync started");

    let listed = list_everything(ctx, run_id, progress.as_ref(), cancel).await;
    let (outcome, counts, error) = match listed {
        Ok(listed) => {
            report.listed = listed.total;
            report.collisions = listed.counts.collisions;
            if report.collisions > 0 {
                tracing::warn!(
                    tenant = %i.tenant_id, mdm = %i.name, run_id, devices = report.collisions,
                    "Identity collisions: devices share a serial, IMEI, UDID or MAC; both records are kept and flagged, lookups take the most recently checked-in one"
                );
            }
            match decide_removals(ctx, run_id, &listed, &mut report).await {
                Ok(counts) => (SyncOutcome::Succeeded, counts, None),
                Err(e) => (SyncOutcome::Failed, partial(&listed), Some(e)),
            }
        }
        Err((e, listed)) => (SyncOutcome::Failed, partial(&listed), Some(e)),
    };
    if let Some(e) = &error {
        report.error_class = match e {
            RunError::Mdm(a) => Some(a.class()),
            RunError::Store(_) => Some("store"),
            RunError::Interrupted => Some("interrupted"),
        };
        report.error = Some(e.to_string());
    }
    report.outcome = outcome;
    report.counts = counts;
    if let Err(e) = ctx
        .store
        .finish_sync_run(run_id, outcome, counts, report.error.as_deref())
        .await
    {
        tracing::error!(tenant = %i.tenant_id, mdm = %i.name, run_id, error = %e, "Cannot record the end of a full sync");
    }
    report.duration = started.elapsed();
    crate::metrics::sync_run(i.kind, outcome, report.duration);
    match &report.error {
        None => tracing::info!(
            tenant = %i.tenant_id, mdm = %i.name, run_id,
            added = counts.added, updated = counts.updated, removed = counts.removed,
            skipped = counts.skipped, held_removals = counts.held_removals,
            seconds = report.duration.as_secs_f64(),
            "Full sync succeeded"
        ),
        Some(e) => tracing::warn!(
            tenant = %i.tenant_id, mdm = %i.name, run_id, error_class = report.error_class.unwrap_or("unknown"),
            error = %e, "Full sync failed; nothing was removed"
        ),
    }
    report
}

fn partial(listed: &Listed) -> RunCounts {
    RunCounts {
        added: listed.counts.added,
        updated: listed.counts.updated,
        skipped: listed.skipped,
        ..Default::default()
    }
}

/// Groups first, then users, then devices (which refer to both).
async fn list_everything(
    ctx: &WorkerCtx,
    run_id: i64,
    progress: Option<&ProgressFn>,
    cancel: &CancellationToken,
) -> Result<Listed, (RunError, Listed)> {
    let i = &ctx.integration;
    let adapter = i.adapter.as_ref();
    let pii = match &i.masker {
        Some(m) => Pii::Masked(m.as_ref()),
        None => Pii::Clear,
    };
    let mut listed = Listed::default();

    macro_rules! drain {
        ($stream:expr, $what:literal, |$page:ident| $write:expr) => {{
            let mut stream: PageStream<'_, _> = $stream;
            let mut seen = 0u64;
            let mut counted = UpsertCounts::default();
            loop {
                let next = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err((RunError::Interrupted, listed)),
                    next = stream.next() => next,
                };
                let Some(page) = next else { break };
                #[allow(unused_mut)] // only the device listing masks names in place
                let mut $page = match page {
                    Ok(p) => p,
                    Err(e) => return Err((RunError::Mdm(e), listed)),
                };
                seen += $page.items.len() as u64;
                listed.total += $page.items.len() as u64;
                listed.skipped += $page.skipped;
                if let Some(reason) = &$page.skip_reason {
                    tracing::info!(tenant = %i.tenant_id, mdm = %i.name, skipped = $page.skipped, reason = %reason, "Records skipped");
                }
                match $write {
                    Ok(c) => counted += c,
                    Err(e) => return Err((RunError::Store(e), listed)),
                }
                if let Some(p) = progress {
                    p($what, seen);
                }
            }
            (seen, counted)
        }};
    }

    drain!(adapter.groups(), "groups", |page| ctx
        .store
        .upsert_groups(run_id, i.mdm_id, &page.items)
        .await);
    drain!(adapter.users(), "users", |page| ctx
        .store
        .upsert_users(run_id, i.mdm_id, &page.items, pii)
        .await);
    // Run counts are devices: what an admin compares with the MDM console.
    (listed.devices, listed.counts) = drain!(adapter.devices(), "devices", |page| {
        if let Some(m) = &i.masker {
            page.items.iter_mut().for_each(|d| m.mask_device(d));
        }
        ctx.store
            .upsert_devices(run_id, i.mdm_id, &page.items, pii)
            .await
    });
    Ok(listed)
}

async fn decide_removals(
    ctx: &WorkerCtx,
    run_id: i64,
    listed: &Listed,
    report: &mut RunReport,
) -> Result<RunCounts, RunError> {
    let i = &ctx.integration;
    let mut counts = partial(listed);
    let unseen = ctx.store.unseen_counts(i.mdm_id, run_id).await?;
    if unseen.devices + unseen.users + unseen.groups == 0 {
        return Ok(counts);
    }
    let live = ctx.store.live_device_count(i.mdm_id).await?;
    let max = u64::from(ctx.settings.max_removal_percent);
    let suspicious = if listed.devices == 0 && live > 0 {
        Some(format!(
            "the listing returned no devices where {live} were known"
        ))
    } else if live > 0 && unseen.devices * 100 > max * live {
        Some(format!(
            "{} of {live} devices ({}%) would be removed, more than max_removal_percent = {max}",
            unseen.devices,
            unseen.devices * 100 / live
        ))
    } else {
        None
    };
    if let Some(reason) = suspicious {
        // The previous complete run held removals too: this run confirms the absence.
        let previous = ctx
            .store
            .sync_runs(i.mdm_id, 2)
            .await?
            .into_iter()
            .find(|r| r.id != run_id);
        let confirmed =
            previous.is_some_and(|r| r.outcome == SyncOutcome::Succeeded && r.held_removals > 0);
        if !confirmed {
            counts.held_removals = unseen.devices;
            tracing::error!(
                tenant = %i.tenant_id, mdm = %i.name, run_id, held_devices = unseen.devices, held_users = unseen.users,
                reason = %reason,
                "Removals held: check the MDM; the next complete sync that confirms the absence applies them"
            );
            report.held_reason = Some(reason);
            return Ok(counts);
        }
        tracing::warn!(tenant = %i.tenant_id, mdm = %i.name, run_id, reason = %reason, "A second complete sync confirms the held removals; applying them");
    }
    let removed = ctx.store.remove_unseen(i.mdm_id, run_id).await?;
    counts.removed = removed.devices;
    if removed.users + removed.groups > 0 {
        tracing::info!(tenant = %i.tenant_id, mdm = %i.name, run_id, users = removed.users, groups = removed.groups, "Users and groups no longer listed were removed");
    }
    Ok(counts)
}
