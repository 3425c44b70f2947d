//! One full sync of one MDM: list groups, users and devices page by page into
//! the store, then decide on removals.
//!
//! Pages are written through the store's [`SyncWriter`], on a connection of
//! the run's own: while the next page is already fetched, it goes into the
//! same transaction, up to the writer's bound (records and age); when no
//! page is ready, what is written commits before the writer waits, so
//! SQLite's write lock is never held while the MDM answers. Memory does not
//! grow with the number of devices, and a failed run leaves what it wrote
//! tagged with a failed run. Fetching and writing overlap: a task of its own
//! fetches and parses the next page while the writer stores the previous
//! one, through a channel of one page (so at most three pages are held at
//! once).
//! Removal happens only after a complete listing, and is held (recorded on the
//! run, logged as an error) when it looks like a broken listing rather than a
//! real change: no devices where there were some, or more than
//! `max_removal_percent` of them gone. A second consecutive complete run that
//! still misses them confirms and applies the removal.

use super::worker::WorkerCtx;
use super::{Integration, ProgressFn};
use crate::shutdown::CancellationToken;
use crate::store::{
    Pii, RunCounts, StoreError, SyncOutcome, SyncTrigger, SyncWriter, UpsertCounts,
};
use futures::StreamExt;
use mtd_adapter::{guard_listing, AdapterError, Device, Group, Page, PageStream, User};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;

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
    /// How long the MDM asked to wait (`Retry-After`), when it did.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
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
    /// The fetching task ended without finishing the listing (it panicked).
    #[error("the listing stopped before its end (internal error)")]
    ListingAborted,
}

#[derive(Default)]
struct Listed {
    counts: UpsertCounts,
    devices: u64,
    /// Users of the user listing (not those embedded in devices).
    users: u64,
    total: u64,
    skipped: u64,
}

/// One full sync of an integration. Its span carries the tenant, the MDM and
/// (once recorded) the run's id, so the lines logged inside it (the adapter's
/// too) need not repeat them.
#[tracing::instrument(
    name = "full_sync",
    skip_all,
    fields(tenant = %ctx.integration.tenant_id, mdm = %ctx.integration.name, run_id)
)]
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
        retry_after: None,
        held_reason: None,
        collisions: 0,
        duration: Duration::ZERO,
    };
    let run_id = match ctx.store.start_sync_run(i.mdm_id, trigger).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "Cannot record the start of a full sync");
            report.error = Some(format!("store: {e}"));
            crate::metrics::sync_run(
                i.kind.as_str(),
                outcome_label(report.outcome),
                started.elapsed(),
            );
            return report;
        }
    };
    report.run_id = Some(run_id);
    tracing::Span::current().record("run_id", run_id);
    tracing::info!(trigger = trigger.as_str(), "Full sync started");

    let listed = list_everything(ctx, run_id, progress.as_ref(), cancel).await;
    let (outcome, counts, error) = match listed {
        Ok(listed) => {
            report.listed = listed.total;
            report.collisions = listed.counts.collisions;
            if report.collisions > 0 {
                tracing::warn!(
                    devices = report.collisions,
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
        report.retry_after = match e {
            RunError::Mdm(a) => a.retry_after(),
            _ => None,
        };
        report.error_class = match e {
            RunError::Mdm(a) => Some(a.class()),
            RunError::Store(_) => Some("store"),
            RunError::Interrupted => Some("interrupted"),
            RunError::ListingAborted => Some("internal"),
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
        tracing::error!(error = %e, "Cannot record the end of a full sync");
    }
    report.duration = started.elapsed();
    if outcome == SyncOutcome::Succeeded {
        warn_missing_rule_groups(ctx).await;
        if let Err(e) = repair_risk_drift(ctx).await {
            tracing::warn!(error = %e, "Cannot compare the risk levels the MDM holds with the stored ones; the next full sync tries again");
        }
    }
    crate::metrics::sync_run(i.kind.as_str(), outcome_label(outcome), report.duration);
    match &report.error {
        None => tracing::info!(
            added = counts.added,
            updated = counts.updated,
            removed = counts.removed,
            skipped = counts.skipped,
            held_removals = counts.held_removals,
            seconds = report.duration.as_secs_f64(),
            "Full sync succeeded"
        ),
        Some(e) => tracing::warn!(
            error_class = report.error_class.unwrap_or("unknown"),
            error = %e, "Full sync failed; nothing was removed"
        ),
    }
    report
}

/// After a complete sync: a group a policy rule is scoped to that this MDM
/// did not list is warned about once (a typo in the tenant file, or a group
/// renamed at the MDM); not an error, since groups appear with syncs.
async fn warn_missing_rule_groups(ctx: &WorkerCtx) {
    let i = &ctx.integration;
    match ctx.store.live_group_names(i.mdm_id).await {
        Ok(listed) => {
            for group in i.rule_groups.newly_missing(&listed) {
                tracing::warn!(
                    group = %format!("{} {group}", i.name),
                    "A policy rule is scoped to a group this MDM did not list in its last full sync; the rule matches no device of it"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read the groups of the MDM to check the policy's groups")
        }
    }
}

/// Drift repair (issue 17): after a complete sync, the levels the MDM holds
/// (where it reports them) are compared with the stored ones, and each
/// difference (changed in the MDM's console, or a write lost) gets a new
/// `signal_risk`. The cost is bounded by how the MDM reports: free from the
/// listing, a few requests in bulk, or one request per device, and then
/// only for devices not `secured` or whose last signal is unconfirmed.
async fn repair_risk_drift(ctx: &WorkerCtx) -> Result<(), RunError> {
    let i = &ctx.integration;
    let (Some(name), Some(read_back)) = (&i.risk_signal, i.adapter.risk_read_back()) else {
        return Ok(());
    };
    // Before the stored levels are read: what is signalled after this was
    // compared against a level that may be gone.
    let compared_after = ctx.store.last_action_id().await?;
    let drift = match read_back {
        mtd_adapter::RiskReadBack::Listing => ctx.store.listing_risk_drift(i.mdm_id).await?,
        kind => {
            let all = kind == mtd_adapter::RiskReadBack::Bulk;
            let devices = ctx.store.devices_to_verify(i.mdm_id, all).await?;
            let mut drift = Vec::new();
            // Bulk: one read for every device; per device: in slices, so a
            // long read shows progress in the logs and memory stays flat.
            let chunk = if all { devices.len().max(1) } else { 200 };
            for slice in devices.chunks(chunk) {
                let asked: Vec<Device> = slice
                    .iter()
                    .map(crate::store::StoredDevice::to_adapter_device)
                    .collect();
                let held = i
                    .adapter
                    .read_risk(&asked, name)
                    .await
                    .map_err(RunError::Mdm)?;
                for (d, held) in slice.iter().zip(held) {
                    let held = held.map_or(crate::store::RiskLevel::Secured, Into::into);
                    if held != d.risk_level {
                        drift.push(crate::store::RiskChange {
                            device_id: d.id,
                            mdm_id: i.mdm_id,
                            from: held,
                            to: d.risk_level,
                        });
                    }
                }
            }
            drift
        }
    };
    let repaired = ctx
        .store
        .repair_risk_drift(&i.tenant_id, i.mdm_id, &drift, compared_after)
        .await?;
    if repaired > 0 {
        tracing::warn!(
            devices = repaired,
            "The MDM held other risk levels than the connector for some devices (changed at the MDM, or a write lost); writing them again"
        );
    }
    Ok(())
}

/// The `outcome` label of `mtd_sync_runs_total`.
fn outcome_label(outcome: SyncOutcome) -> &'static str {
    match outcome {
        SyncOutcome::Running => "running",
        SyncOutcome::Succeeded => "succeeded",
        SyncOutcome::Failed => "failed",
    }
}

fn partial(listed: &Listed) -> RunCounts {
    RunCounts {
        added: listed.counts.added,
        updated: listed.counts.updated,
        skipped: listed.skipped,
        ..Default::default()
    }
}

/// One page of a listing, handed from the fetching task to the writer.
enum Fetched {
    Groups(Page<Group>),
    Users(Page<User>),
    Devices(Page<Device>),
    /// Every listing ended without error. Without it, a closed channel
    /// means the fetching task died (a panic in an adapter), which must not
    /// pass for a complete listing: removals follow a complete listing.
    End,
}

/// Pages waiting in the channel between the fetching task and the writer.
/// With the page being fetched and the page being written, at most three
/// pages are in memory at once, whatever the size of the MDM.
const PAGES_AHEAD: usize = 1;

/// Aborts the fetching task when the run ends early (an error, a failed
/// write, shutdown): nothing is left fetching pages nobody will write.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The fetching side: lists groups, then users, then devices (which refer
/// to both), and sends each page as soon as it is parsed, so the next
/// page's HTTP request and JSON decoding overlap the writer's SQLite
/// transaction for the previous one. The channel is bounded, so a slow
/// writer slows the fetching instead of growing memory. The first error
/// ends the listing (a partial listing must never look complete).
///
/// Every listing is guarded here too, whatever the adapter does itself: a
/// listing that repeats a page or reads past the MDM's announced total fails
/// the run (CONTRACT §6), so an MDM that ignores paging cannot keep a run,
/// and the worker of a removed tenant, going forever.
async fn fetch_all(integration: Arc<Integration>, tx: mpsc::Sender<Result<Fetched, AdapterError>>) {
    let adapter = integration.adapter.as_ref();
    let name = integration.name.as_str();
    macro_rules! pump {
        ($stream:expr, |$page:ident| $wrap:expr) => {{
            let mut stream: PageStream<'_, _> = $stream;
            while let Some(page) = stream.next().await {
                let failed = page.is_err();
                let item = page.map(|#[allow(unused_mut)] mut $page| $wrap);
                // A closed channel: the writer has stopped, so stop too.
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        }};
    }
    let groups = guard_listing(adapter.groups(), format!("{name} groups"), group_id);
    pump!(groups, |page| Fetched::Groups(page));
    let users = guard_listing(adapter.users(), format!("{name} users"), user_id);
    pump!(users, |page| Fetched::Users(page));
    let devices = guard_listing(adapter.devices(), format!("{name} devices"), device_id);
    pump!(devices, |page| {
        // Masked here, off the writer's path; the store masks users itself.
        if let Some(m) = &integration.masker {
            page.items.iter_mut().for_each(|d| m.mask_device(d));
        }
        Fetched::Devices(page)
    });
    let _ = tx.send(Ok(Fetched::End)).await;
}

fn group_id(g: &Group) -> &str {
    &g.mdm_group_id
}

fn user_id(u: &User) -> &str {
    &u.mdm_user_id
}

fn device_id(d: &Device) -> &str {
    &d.mdm_device_id
}

/// Ends a listing that stopped early (the MDM failed, the listing was cut
/// off, shutdown): what was written is committed, as page-by-page
/// transactions would have left it, and its counts kept.
async fn stop(
    writer: SyncWriter,
    uncommitted: UpsertCounts,
    mut listed: Listed,
    error: RunError,
) -> Result<Listed, (RunError, Listed)> {
    match writer.close().await {
        Ok(()) => listed.counts += uncommitted,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot commit the pages written before the sync stopped")
        }
    }
    Err((error, listed))
}

/// Writes what [`fetch_all`] lists through a [`SyncWriter`] while it
/// fetches the next page: a page that is ready goes into the open
/// transaction (in chunks, see `SyncWriter::chunk_len`) until the writer is due
/// (its bound, or another writer waiting); none ready, the writer commits
/// before it waits.
async fn list_everything(
    ctx: &WorkerCtx,
    run_id: i64,
    progress: Option<&ProgressFn>,
    cancel: &CancellationToken,
) -> Result<Listed, (RunError, Listed)> {
    let i = &ctx.integration;
    let pii = match &i.masker {
        Some(m) => Pii::Masked(m.as_ref()),
        None => Pii::Clear,
    };
    let mut listed = Listed::default();
    let mut writer = match ctx.store.sync_writer(i.mdm_id, run_id).await {
        Ok(w) => w,
        Err(e) => return Err((RunError::Store(e), listed)),
    };
    // Device counts of the pages in the open transaction: they join the
    // run's counts when it commits (a failed write rolls them back).
    let mut uncommitted = UpsertCounts::default();
    let (tx, mut rx) = mpsc::channel(PAGES_AHEAD);
    // In the run's span, so the adapter's logs keep their tenant and MDM.
    let _fetching = AbortOnDrop(tokio::spawn(
        fetch_all(i.clone(), tx).instrument(tracing::Span::current()),
    ));
    // Records written so far, per listing (the progress lines).
    let (mut groups_seen, mut users_seen, mut devices_seen) = (0u64, 0u64, 0u64);

    // `$seen`: that listing's counter; `$in_run_counts`: whether the write's
    // counts join the run's (only devices: what an admin compares with the
    // MDM console).
    macro_rules! write_page {
        ($page:expr, $seen:ident, $what:literal, in_run_counts: $in_run_counts:literal, |$items:ident| $write:expr) => {{
            let page = $page;
            listed.total += page.items.len() as u64;
            listed.skipped += page.skipped;
            if let Some(reason) = &page.skip_reason {
                tracing::info!(skipped = page.skipped, reason = %reason, "Records skipped");
            }
            // In chunks while other writers are active (`SyncWriter::chunk_len`),
            // so that one waiting gets the lock after a chunk, not a page.
            let mut rest = &page.items[..];
            while !rest.is_empty() {
                let ($items, after) = rest.split_at(writer.chunk_len().min(rest.len()));
                rest = after;
                // Not raced with `cancel`: one chunk's write is short, and the
                // loop checks for shutdown before the next page. A failed write
                // drops the writer, which rolls its transaction back.
                let counted = match $write.await {
                    Ok(c) => c,
                    Err(e) => return Err((RunError::Store(e), listed)),
                };
                $seen += $items.len() as u64;
                if $in_run_counts {
                    uncommitted += counted;
                }
                if writer.due() {
                    if let Err(e) = writer.commit().await {
                        return Err((RunError::Store(e), listed));
                    }
                    listed.counts += std::mem::take(&mut uncommitted);
                }
            }
            // Once per page, as the MDM pages (a line each without a terminal).
            if let Some(p) = progress {
                p($what, $seen);
            }
        }};
    }

    loop {
        if cancel.is_cancelled() {
            return stop(writer, uncommitted, listed, RunError::Interrupted).await;
        }
        let next = match rx.try_recv() {
            Ok(next) => Some(next),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing to write until the MDM answers: commit first, so
                // the write lock is free while the fetch goes on.
                if let Err(e) = writer.commit().await {
                    return Err((RunError::Store(e), listed));
                }
                listed.counts += std::mem::take(&mut uncommitted);
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {
                        return stop(writer, uncommitted, listed, RunError::Interrupted).await
                    }
                    next = rx.recv() => next,
                }
            }
        };
        let fetched = match next {
            Some(Ok(f)) => f,
            Some(Err(e)) => return stop(writer, uncommitted, listed, RunError::Mdm(e)).await,
            None => return stop(writer, uncommitted, listed, RunError::ListingAborted).await,
        };
        match fetched {
            Fetched::Groups(page) => {
                write_page!(page, groups_seen, "groups", in_run_counts: false, |items| writer
                    .upsert_groups(items));
            }
            Fetched::Users(page) => {
                listed.users += page.items.len() as u64;
                write_page!(page, users_seen, "users", in_run_counts: false, |items| writer
                    .upsert_users(items, pii));
            }
            Fetched::Devices(page) => {
                listed.devices += page.items.len() as u64;
                write_page!(page, devices_seen, "devices", in_run_counts: true, |items| writer
                    .upsert_devices(items, pii));
            }
            Fetched::End => break,
        }
    }
    if let Err(e) = writer.close().await {
        return Err((RunError::Store(e), listed));
    }
    listed.counts += uncommitted;
    Ok(listed)
}

/// Why removing `unseen` of `live` records (`what`: devices or users) looks
/// like a broken listing rather than a real change, if it does.
fn suspicious_removal(
    what: &str,
    listed: u64,
    live: u64,
    unseen: u64,
    max_percent: u64,
) -> Option<String> {
    if unseen == 0 || live == 0 {
        None
    } else if listed == 0 {
        Some(format!(
            "the listing returned no {what} where {live} were known"
        ))
    } else if unseen * 100 > max_percent * live {
        Some(format!(
            "{unseen} of {live} {what} ({}%) would be removed, more than max_removal_percent = {max_percent}",
            unseen * 100 / live
        ))
    } else {
        None
    }
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
    let max = u64::from(ctx.settings.max_removal_percent);
    let live = ctx.store.live_device_count(i.mdm_id).await?;
    // Devices and users alike: a user listing that collapsed while the
    // devices stayed intact must not remove every user without a device.
    // (Where users come only embedded in devices, the device rule covers them.)
    let mut suspicious = suspicious_removal("devices", listed.devices, live, unseen.devices, max);
    if suspicious.is_none() && i.adapter.capabilities().user_listing {
        let live_users = ctx.store.live_user_count(i.mdm_id).await?;
        suspicious = suspicious_removal("users", listed.users, live_users, unseen.users, max);
    }
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
            counts.held_removals = unseen.devices + unseen.users;
            tracing::error!(
                held_devices = unseen.devices, held_users = unseen.users,
                reason = %reason,
                "Removals held: check the MDM; the next complete sync that confirms the absence applies them"
            );
            report.held_reason = Some(reason);
            return Ok(counts);
        }
        tracing::warn!(reason = %reason, "A second complete sync confirms the held removals; applying them");
    }
    let removed = ctx.store.remove_unseen(i.mdm_id, run_id).await?;
    counts.removed = removed.devices;
    if removed.users + removed.groups > 0 {
        tracing::info!(
            users = removed.users,
            groups = removed.groups,
            "Users and groups no longer listed were removed"
        );
    }
    Ok(counts)
}
