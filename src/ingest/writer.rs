//! The one writer of agent events: a task that owns one SQLite connection
//! and commits the events of many requests per transaction (group commit).
//!
//! Why group commit: the time of an event post was not the disk (WAL with
//! `synchronous = NORMAL` does not sync at commit) but round trips and lock
//! waits. Each statement is a round trip to sqlx's worker thread of its
//! connection, and with one transaction per request every concurrent request
//! took `BEGIN IMMEDIATE` on its own pooled connection, where the losers
//! sleep in SQLite's busy handler instead of queueing (BENCHMARKS.md, "Event
//! ingest", has the measurements). Here requests queue in a bounded channel
//! instead, and the writer takes everything waiting (up to
//! [`MAX_GROUP_EVENTS`]) into one transaction of a fixed number of round
//! trips: `BEGIN IMMEDIATE`, the events (one statement, which also reads the
//! next action id), the cool-down reads (one, only for actions the cool-down
//! can stop), the actions and their audit rows (one round trip), `COMMIT`. While it commits, the next group gathers. Its statements
//! are prepared once on its own connection and stay cached.
//!
//! The writer also finds the requests' devices: a request arrives with its
//! events as parsed, and one statement on the writer's connection resolves
//! the devices of every request in the group (`WriterConn::resolve_devices`),
//! before the policy's store-free checks plan each event. A request saves
//! its own round trip to the pool, which cost a thread hand-off each way on
//! every event post (issue 19). A request naming a device the store does not
//! know goes back to its handler, which looks the device up at the MDMs (never
//! from here: the writer must not wait on the network) and submits it again
//! planned.
//!
//! **Two lanes: the actions that matter first.** A request with an event
//! the tenant's policy may answer with an action (`PolicyConfig::may_act`:
//! a lock, a Wi-Fi disconnect, a wipe) queues in the *urgent* lane, every
//! other request in the *bulk* lane, each with [`QUEUE_CAPACITY`] places.
//! The writer serves the urgent lane first, and a group that starts with an
//! urgent request takes no bulk ones, so it commits at once instead of with
//! up to 2,000 bulk events (a bulk group takes urgent requests that arrive
//! meanwhile); while urgent requests come in, bulk groups stay short
//! ([`BULK_GROUP_WHILE_URGENT`]). Why: with one FIFO queue, a lock posted
//! while 16 clients kept batches of `none` events queued waited for all of
//! them (its 202 at p50 128–148 ms, p99 239–269 ms in the ingest bench's
//! `e2a-burst`; 25–26 and 57–64 ms now), and a bulk flood that filled the
//! queue would have answered the lock 503. Requests in flight at once have
//! no order between them, so serving one lane first decides nothing
//! differently: within a lane the order stays, and events of one threat
//! take effect in `detected_at` order whatever the order they are written in.
//!
//! What does not change: each request's 202 is sent only after the commit
//! that holds its events (the writer answers each request's oneshot after
//! `COMMIT` returns), with the durability that commit always had: WAL with
//! `synchronous = NORMAL`, so an acknowledged event survives a crash or kill
//! of the process (not a power loss before the next checkpoint's sync).
//! Decisions are made in group order inside the transaction, with the
//! cool-down and the hourly cap seeing both the committed rows and the
//! actions decided earlier in the same group, so a group decides exactly as
//! the same requests would one after another. An event and its action are
//! in the same transaction.
//!
//! When a group fails: if the store cannot take writes (locked past the busy
//! timeout, read-only, disk full), every request of the group gets 503 and
//! nothing of the group is stored (the transaction rolls back). Any other
//! failure rolls the group back and writes its requests again one per
//! transaction, so one bad request cannot fail the others. A full queue
//! answers 503 with `Retry-After` at once rather than making the agent wait.

use super::{
    log_decision, plan_all, AgentEvent, Decision, IngestError, IngestOutcome, Planned, Resolved,
};
use crate::config::{Config, TenantConfig};
use crate::dispatch::DispatchHandle;
use crate::policy::{cap_since, Limits, Verdict};
use crate::shutdown::CancellationToken;
use crate::shutdown::Tasks;
use crate::store::{
    ActionId, ActionRecordKind, ActionState, DeviceId, Store, StoreError, ThreatEvent, WriterConn,
};
use crate::sync::SyncEngine;
use mtd_adapter::ActionKind;
use mtd_adapter::DeviceIdentifier;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Requests that may wait for the writer, in each lane. Beyond this, a
/// request gets 503 with `Retry-After` at once: the agent retries later
/// instead of piling up memory and latency here.
pub const QUEUE_CAPACITY: usize = 1024;

/// The most events one transaction takes (a request is never split, so a
/// group can exceed this by one request of up to 500). Bounds the time the
/// write lock is held and the size of each statement's JSON parameter.
pub const MAX_GROUP_EVENTS: usize = 2000;

/// The events of one request, planned, for one tenant.
#[derive(Debug)]
pub(crate) struct Request {
    pub tenant_id: String,
    pub limits: Limits,
    pub events: Vec<Planned>,
    /// The tenant's MDMs that take risk signals (see `SyncEngine::risk_signal_mdms`).
    pub signal_mdms: Vec<i64>,
    /// Monitor mode: risk signals are recorded `skipped`.
    pub monitor: bool,
}

impl Request {
    /// The planned events of a request of `tenant`.
    pub fn new(sync: &SyncEngine, tenant: &TenantConfig, events: Vec<Planned>) -> Self {
        Request {
            tenant_id: tenant.id.clone(),
            limits: Limits::of(tenant),
            events,
            signal_mdms: sync.risk_signal_mdms(tenant),
            monitor: tenant.policy.mode == crate::config::PolicyMode::Monitor,
        }
    }
}

/// A request's events as they arrived, for the writer to resolve and plan.
#[derive(Debug)]
pub(crate) struct Raw {
    /// The configuration the request was verified with.
    pub config: Arc<Config>,
    /// Its tenant, an index into `config.tenants`.
    pub tenant: usize,
    pub events: Vec<AgentEvent>,
    /// The adapters' facts for the policy's checks.
    pub sync: SyncEngine,
}

/// What a request gives the writer.
#[derive(Debug)]
pub(crate) enum Work {
    /// Events whose devices the writer finds in the store.
    Raw(Raw),
    /// Events already resolved and planned (after an on-demand lookup).
    Planned(Request),
}

impl Work {
    fn events(&self) -> usize {
        match self {
            Work::Raw(r) => r.events.len(),
            Work::Planned(r) => r.events.len(),
        }
    }

    /// Whether the request goes in the urgent lane: some event of it may be
    /// decided an action that reaches an MDM (see the module's docs).
    fn urgent(&self) -> bool {
        match self {
            Work::Raw(r) => {
                let policy = &r.config.tenants[r.tenant].policy;
                // Monitor mode records every action `skipped`: nothing to hurry.
                policy.mode != crate::config::PolicyMode::Monitor
                    && r.events.iter().any(|e| {
                        e.threat.status == super::ThreatStatus::Detected
                            && policy.may_act(&e.threat.threat_type, e.threat.severity)
                    })
            }
            Work::Planned(r) => r.events.iter().any(|e| e.may_send()),
        }
    }
}

/// The writer's answer to a request that did not fail.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Committed.
    Done(IngestOutcome),
    /// A device of the request is not in the store (or the store could not
    /// be read): nothing of it was written, the caller looks its devices up.
    NeedsLookup(Raw),
}

/// A request as queued, and where its answer goes.
#[derive(Debug)]
struct Incoming {
    work: Work,
    /// Queued in the urgent lane.
    urgent: bool,
    reply: oneshot::Sender<Result<Reply, IngestError>>,
}

/// A planned request in a group, and where its answer goes.
#[derive(Debug)]
struct Job {
    request: Request,
    reply: oneshot::Sender<Result<Reply, IngestError>>,
}

/// The way into the writer: cheap to clone, one per daemon (in `AppState`).
#[derive(Debug, Clone)]
pub struct IngestQueue {
    urgent: mpsc::Sender<Incoming>,
    bulk: mpsc::Sender<Incoming>,
    /// The other ends, until [`start_writer`] takes them.
    receivers: Arc<Mutex<Option<Lanes>>>,
}

/// The most events of a bulk group while urgent requests come in (one
/// started a group in the last [`URGENT_RECENT`]): an urgent request waits
/// for the bulk group being written, so that group is kept short. Measured
/// (`e2a-burst`, locks at 100/s during batches for 20,000 devices): the
/// lock's 202 at p99 157–187 ms with groups of 2,000, 57–64 ms with 500, for
/// 4–12 % of the burst's events/s. (When the burst repeats the same 1,000
/// devices the cost is 25 %: a big group collapses a device's repeated
/// threat updates into one.)
const BULK_GROUP_WHILE_URGENT: usize = 500;
const URGENT_RECENT: std::time::Duration = std::time::Duration::from_secs(1);

/// Groups in a row that may start with an urgent request while bulk ones
/// wait; then a bulk request starts the next, so a flood of urgent requests
/// slows the bulk lane down instead of stopping it.
const URGENT_STREAK: u32 = 8;

/// The writer's ends of the two lanes.
#[derive(Debug)]
struct Lanes {
    urgent: mpsc::Receiver<Incoming>,
    bulk: mpsc::Receiver<Incoming>,
    /// Groups started by an urgent request in a row (see [`URGENT_STREAK`]).
    streak: u32,
    /// When an urgent request last started a group.
    last_urgent: Option<std::time::Instant>,
}

impl Default for IngestQueue {
    fn default() -> Self {
        let (urgent, urgent_rx) = mpsc::channel(QUEUE_CAPACITY);
        let (bulk, bulk_rx) = mpsc::channel(QUEUE_CAPACITY);
        IngestQueue {
            urgent,
            bulk,
            receivers: Arc::new(Mutex::new(Some(Lanes {
                urgent: urgent_rx,
                bulk: bulk_rx,
                streak: 0,
                last_urgent: None,
            }))),
        }
    }
}

impl IngestQueue {
    /// A queue; nothing is written until [`start_writer`] runs its writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a request and waits for the commit that holds it (or for it
    /// to come back for a lookup).
    pub(crate) async fn submit(&self, work: Work) -> Result<Reply, IngestError> {
        let (reply, answer) = oneshot::channel();
        let urgent = work.urgent();
        let lane = if urgent { &self.urgent } else { &self.bulk };
        lane.try_send(Incoming {
            work,
            urgent,
            reply,
        })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => IngestError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => IngestError::WriterStopped,
        })?;
        // The writer answers every job it takes; a dropped sender means it stopped.
        answer
            .await
            .unwrap_or_else(|_| Err(IngestError::WriterStopped))
    }
}

/// Starts the writer on `tasks`. It writes through its own connection to
/// `store`'s database, wakes `dispatch` when it commits a pending action,
/// and, once `stop` is cancelled, writes what is still queued and exits.
/// Cancel `stop` only after the HTTP server has stopped: a request queued
/// after that gets 503.
pub fn start_writer(
    queue: &IngestQueue,
    store: Store,
    dispatch: DispatchHandle,
    stop: CancellationToken,
    tasks: &Tasks,
) {
    // Poisoning needs a panic while the lock is held, and nothing in the
    // block below can panic; `take` leaves `None` for a second start.
    let lanes = queue.receivers.lock().map(|mut r| r.take()).ok().flatten();
    let Some(lanes) = lanes else {
        tracing::error!("The ingest writer was started twice; the second start is ignored");
        return;
    };
    tasks.spawn_critical("the ingest writer", run(lanes, store, dispatch, stop));
}

impl Lanes {
    /// The request that starts the next group, urgent first (but see
    /// [`URGENT_STREAK`]), waiting for one; `None` once both lanes are
    /// closed and empty.
    async fn recv(&mut self) -> Option<Incoming> {
        let job = self.next().await;
        match &job {
            Some(job) if job.urgent => {
                self.streak += 1;
                self.last_urgent = Some(std::time::Instant::now());
            }
            _ => self.streak = 0,
        }
        job
    }

    async fn next(&mut self) -> Option<Incoming> {
        if self.streak >= URGENT_STREAK {
            if let Ok(job) = self.bulk.try_recv() {
                return Some(job);
            }
        }
        if let Ok(job) = self.urgent.try_recv() {
            return Some(job);
        }
        tokio::select! {
            biased;
            Some(job) = self.urgent.recv() => Some(job),
            Some(job) = self.bulk.recv() => Some(job),
            else => None,
        }
    }

    /// A request already waiting, urgent first; only urgent ones if `urgent_only`.
    fn try_recv(&mut self, urgent_only: bool) -> Option<Incoming> {
        match self.urgent.try_recv() {
            Ok(job) => Some(job),
            Err(_) if urgent_only => None,
            Err(_) => self.bulk.try_recv().ok(),
        }
    }

    /// No new requests; the ones queued can still be received.
    fn close(&mut self) {
        self.urgent.close();
        self.bulk.close();
    }
}

/// The group that starts with `first`: the requests waiting after it,
/// urgent ones first, up to [`MAX_GROUP_EVENTS`] (a request is never split:
/// the one that does not fit is returned, to start the next group). A group
/// that starts with an urgent request takes no bulk ones, so it commits in
/// about a millisecond instead of the time of a full group; a bulk group
/// while urgent requests come in takes up to [`BULK_GROUP_WHILE_URGENT`].
fn gather(first: Incoming, lanes: &mut Lanes) -> (Vec<Incoming>, Option<Incoming>) {
    let urgent_only = first.urgent;
    let max = if !urgent_only
        && lanes
            .last_urgent
            .is_some_and(|t| t.elapsed() < URGENT_RECENT)
    {
        BULK_GROUP_WHILE_URGENT
    } else {
        MAX_GROUP_EVENTS
    };
    let mut events = first.work.events();
    let mut group = vec![first];
    while events < max {
        match lanes.try_recv(urgent_only) {
            Some(job) if events + job.work.events() > max => {
                return (group, Some(job));
            }
            Some(job) => {
                events += job.work.events();
                group.push(job);
            }
            None => break,
        }
    }
    (group, None)
}

async fn run(mut lanes: Lanes, store: Store, dispatch: DispatchHandle, stop: CancellationToken) {
    let mut writer = Writer {
        store,
        conn: None,
        dispatch,
    };
    // A job taken from the queue that did not fit the last group.
    let mut carry: Option<Incoming> = None;
    let mut stopping = false;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None if stopping => match lanes.recv().await {
                Some(job) => job,
                None => break,
            },
            None => tokio::select! {
                job = lanes.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                () = stop.cancelled() => {
                    // No new jobs; the ones already queued are still written.
                    lanes.close();
                    stopping = true;
                    continue;
                }
            },
        };
        let (group, next) = gather(first, &mut lanes);
        carry = next;
        writer.write(group).await;
    }
    if let Some(conn) = writer.conn.take() {
        conn.close().await;
    }
}

struct Writer {
    /// The daemon's store: where the writer's own connection comes from.
    store: Store,
    /// The writer's own connection, opened on first use and again after it
    /// failed.
    conn: Option<WriterConn>,
    dispatch: DispatchHandle,
}

impl Writer {
    /// Writes a group and answers each of its jobs.
    async fn write(&mut self, incoming: Vec<Incoming>) {
        let conn = match self.conn().await {
            Ok(conn) => conn,
            Err(e) => {
                let error = IngestError::store(Arc::new(e));
                for job in incoming {
                    let _ = job.reply.send(Err(error.clone()));
                }
                return;
            }
        };
        let group = prepare(conn, incoming).await;
        if group.is_empty() {
            return;
        }
        let requests: Vec<&Request> = group.iter().map(|j| &j.request).collect();
        match write_group(conn, &requests).await {
            Ok(written) => self.answer(group, written),
            Err(e) if e.is_unavailable() || group.len() == 1 => {
                WriterConn::forget_if_broken(&mut self.conn, &e).await;
                answer_all_failed(group, e);
            }
            Err(e) => {
                tracing::warn!(requests = group.len(), error = %e, "A group of event posts failed; writing its requests one by one");
                for job in group {
                    let alone = match self.conn().await {
                        Ok(conn) => write_group(conn, &[&job.request]).await,
                        Err(e) => Err(e),
                    };
                    match alone {
                        Ok(written) => self.answer(vec![job], written),
                        Err(e) => {
                            WriterConn::forget_if_broken(&mut self.conn, &e).await;
                            answer_all_failed(vec![job], e);
                        }
                    }
                }
            }
        }
    }

    /// Committed: metrics, logs, the dispatcher, then each request's answer.
    fn answer(&self, group: Vec<Job>, written: Written) {
        for d in &written.decided {
            crate::metrics::action_entered(d.kind.as_str(), d.state.as_str());
            if let Some(log) = &d.log {
                log_decision(
                    &log.tenant,
                    &log.event_id,
                    &log.threat,
                    log.action,
                    &log.verdict,
                );
            }
        }
        if written
            .decided
            .iter()
            .any(|d| d.state == ActionState::Pending)
        {
            self.dispatch.wake();
        }
        for (job, outcome) in group.into_iter().zip(written.outcomes) {
            // The client may have gone away; its events are stored all the same.
            let _ = job.reply.send(Ok(Reply::Done(outcome)));
        }
    }

    /// The writer's connection, opened if it has none.
    async fn conn(&mut self) -> Result<&mut WriterConn, StoreError> {
        WriterConn::in_slot(&mut self.conn, &self.store)
            .await
            .inspect_err(|e| {
                tracing::warn!(error = %e, "The ingest writer cannot open its connection");
            })
    }
}

/// Turns the group's raw requests into planned ones: the devices of all of
/// them found with one statement on the writer's connection (and their
/// groups with one more, when a rule of their tenant is scoped to groups),
/// then each event planned as `ingest_events` would plan it. A request with
/// a device the store does not know, or that the store could not resolve,
/// is answered [`Reply::NeedsLookup`] and leaves the group.
async fn prepare(conn: &mut WriterConn, incoming: Vec<Incoming>) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(incoming.len());
    let mut raws = Vec::new();
    for job in incoming {
        match job.work {
            Work::Planned(request) => jobs.push(Job {
                request,
                reply: job.reply,
            }),
            Work::Raw(raw) => raws.push((raw, job.reply)),
        }
    }
    if raws.is_empty() {
        return jobs;
    }
    // Each distinct (tenant, identifiers) once.
    let identifiers: Vec<Vec<Vec<DeviceIdentifier>>> = raws
        .iter()
        .map(|(raw, _)| raw.events.iter().map(|e| e.device.identifiers()).collect())
        .collect();
    let mut slot_of: HashMap<(&str, &[DeviceIdentifier]), usize> = HashMap::new();
    let mut asks: Vec<(&str, &[DeviceIdentifier])> = Vec::new();
    for ((raw, _), ids) in raws.iter().zip(&identifiers) {
        let tenant = raw.config.tenants[raw.tenant].id.as_str();
        for ids in ids {
            slot_of.entry((tenant, ids.as_slice())).or_insert_with(|| {
                asks.push((tenant, ids.as_slice()));
                asks.len() - 1
            });
        }
    }
    let found = match conn.resolve_devices(&asks).await {
        Ok(found) => found,
        Err(e) => {
            // The slow path reads the store again and answers its error.
            tracing::debug!(error = %e, "The ingest writer could not resolve devices; the requests look them up");
            drop(slot_of);
            drop(asks);
            for (raw, reply) in raws {
                let _ = reply.send(Ok(Reply::NeedsLookup(raw)));
            }
            return jobs;
        }
    };
    let now = chrono::Utc::now();
    let mut resolved_of: Vec<Option<Vec<Resolved>>> = Vec::with_capacity(raws.len());
    for ((raw, _), ids) in raws.iter().zip(&identifiers) {
        let tenant = raw.config.tenants[raw.tenant].id.as_str();
        let mut resolved = Vec::with_capacity(ids.len());
        for ids in ids {
            if ids.is_empty() {
                resolved.push(Resolved::NotEnrolled);
                continue;
            }
            match &found[slot_of[&(tenant, ids.as_slice())]] {
                Some(r) => {
                    if r.candidates > 1 {
                        tracing::info!(
                            tenant,
                            candidates = r.candidates,
                            picked_device_id = r.device.id,
                            "Identity collision: picked the most recently checked-in device"
                        );
                    }
                    resolved.push(Resolved::Found(Box::new(r.device.clone())));
                }
                None => break,
            }
        }
        resolved_of.push((resolved.len() == ids.len()).then_some(resolved));
    }
    drop(slot_of);
    drop(asks);
    // The groups of the devices, for tenants with rules scoped to groups.
    let mut scoped: Vec<i64> = raws
        .iter()
        .zip(&resolved_of)
        .filter(|((raw, _), _)| raw.config.tenants[raw.tenant].policy.has_group_rules())
        .flat_map(|(_, r)| r.iter().flatten().filter_map(Resolved::id))
        .collect();
    scoped.sort_unstable();
    scoped.dedup();
    let groups = if scoped.is_empty() {
        Ok(HashMap::new())
    } else {
        conn.group_names_of(&scoped).await
    };
    for ((raw, reply), resolved) in raws.into_iter().zip(resolved_of) {
        let (Some(resolved), Ok(groups)) = (resolved, &groups) else {
            let _ = reply.send(Ok(Reply::NeedsLookup(raw)));
            continue;
        };
        let tenant = &raw.config.tenants[raw.tenant];
        let planned = plan_all(&raw.sync, tenant, &raw.events, resolved, groups, now);
        jobs.push(Job {
            request: Request::new(&raw.sync, tenant, planned),
            reply,
        });
    }
    jobs
}

fn answer_all_failed(group: Vec<Job>, e: StoreError) {
    let error = IngestError::store(Arc::new(e));
    for job in group {
        let _ = job.reply.send(Err(error.clone()));
    }
}

/// What a committed group did.
struct Written {
    /// Per request, in order.
    outcomes: Vec<IngestOutcome>,
    /// Every action recorded, in order.
    decided: Vec<Decided>,
}

struct Decided {
    kind: ActionRecordKind,
    state: ActionState,
    /// For a rule's decision (a "no rule matches" is not logged).
    log: Option<DecisionLog>,
}

struct DecisionLog {
    tenant: String,
    event_id: String,
    threat: String,
    action: ActionKind,
    verdict: Verdict,
}

/// One transaction for the requests, in order; nothing of it stays if any
/// step fails (the transaction rolls back when dropped).
async fn write_group(conn: &mut WriterConn, requests: &[&Request]) -> Result<Written, StoreError> {
    let mut tx = conn.begin().await?;
    let now = chrono::Utc::now();
    let events: Vec<_> = requests
        .iter()
        .flat_map(|r| r.events.iter().map(|p| &p.event))
        .collect();
    let inserted = tx.insert_events(&events).await?;
    let rows = inserted.rows;

    // The threats of the new events of known devices, and their devices'
    // risk levels, in this transaction (CONTRACT §4: kept current with the event).
    let threat_events: Vec<ThreatEvent> = requests
        .iter()
        .flat_map(|r| r.events.iter())
        .zip(&rows)
        .filter_map(|(p, row)| {
            let device = p.device?;
            Some(ThreatEvent::of(&p.event, (*row)?, device.device.0))
        })
        .collect();
    let risk_changes = tx.apply_threat_events(&threat_events, now).await?;

    // The cool-down's view: the latest blocking action per (device, kind)
    // among the new events left to the limits, read once for the group and
    // kept current below as the group's own actions are decided.
    let mut recent: HashMap<(DeviceId, ActionRecordKind), Option<(ActionId, ActionState)>> =
        HashMap::new();
    let mut keys = Vec::new();
    let mut row = rows.iter();
    for r in requests {
        for p in &r.events {
            let new = row.next().is_some_and(Option::is_some);
            if let (true, Decision::Limited(action), Some(device)) = (new, &p.decision, p.device) {
                let key = (device.device, ActionRecordKind::from(*action));
                if recent.insert(key, None).is_none() {
                    keys.push((key.0, key.1, r.limits.cooldown_since(now)));
                }
            }
        }
    }
    for ((device, kind, _), found) in keys.iter().zip(tx.recent_actions(&keys).await?) {
        recent.insert((*device, *kind), found);
    }

    // Set whenever an event was recorded, and only new events get actions.
    let first_id = inserted.next_action_id.unwrap_or(0);
    let mut next_id = first_id;
    // Destructive actions of a tenant in the last hour, read when first needed.
    let mut destructive: HashMap<&str, u64> = HashMap::new();
    let mut actions = Vec::new();
    let mut decided = Vec::new();
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut row = rows.iter();
    for r in requests {
        let mut outcome = IngestOutcome::default();
        for p in &r.events {
            let event_id = &p.event.event_id;
            let Some(Some(event_row)) = row.next() else {
                outcome.duplicates.push(event_id.clone());
                continue;
            };
            outcome.accepted.push(event_id.clone());
            let (action, verdict) = match &p.decision {
                Decision::Deferred | Decision::Resolution => continue,
                Decision::NoRule => (
                    None,
                    Verdict::Skipped("no policy rule matches this threat".into()),
                ),
                Decision::Decided(action, verdict) => (Some(*action), verdict.clone()),
                Decision::Limited(action) => {
                    let verdict = match p.device.map(|d| d.device) {
                        Some(device) => {
                            let kind = ActionRecordKind::from(*action);
                            let seen = recent.get(&(device, kind)).copied().flatten();
                            let count = if action.is_destructive() && seen.is_none() {
                                match destructive.get(r.tenant_id.as_str()) {
                                    Some(n) => *n,
                                    None => {
                                        let n = tx
                                            .destructive_since(&r.tenant_id, cap_since(now))
                                            .await?;
                                        *destructive.entry(&r.tenant_id).or_insert(n)
                                    }
                                }
                            } else {
                                0
                            };
                            let verdict = r.limits.verdict(*action, seen, count);
                            match verdict {
                                Verdict::Pending => {
                                    recent.insert(
                                        (device, kind),
                                        Some((ActionId(next_id), ActionState::Pending)),
                                    );
                                    if action.is_destructive() {
                                        *destructive.entry(&r.tenant_id).or_default() += 1;
                                    }
                                }
                                Verdict::Held(_) => {
                                    recent.insert(
                                        (device, kind),
                                        Some((ActionId(next_id), ActionState::Held)),
                                    );
                                }
                                Verdict::Skipped(_) => {}
                            }
                            verdict
                        }
                        // `plan` only leaves known devices to the limits.
                        None => {
                            Verdict::Skipped("device unknown: no MDM of the tenant knows it".into())
                        }
                    };
                    (Some(*action), verdict)
                }
            };
            let row = verdict.new_action(&r.tenant_id, *event_row, p.device, action);
            let (kind, state) = (row.kind, row.state);
            actions.push(row);
            next_id += 1;
            decided.push(Decided {
                kind,
                state,
                log: action.map(|action| DecisionLog {
                    tenant: r.tenant_id.clone(),
                    event_id: event_id.clone(),
                    threat: p.event.threat_type.clone(),
                    action,
                    verdict,
                }),
            });
        }
        outcomes.push(outcome);
    }
    tx.insert_actions_numbered(first_id, &actions, now).await?;
    // After the numbered rows: the risk signals of the level changes.
    if !risk_changes.is_empty() {
        // Once per tenant (a group may hold several requests of one tenant;
        // MDM ids are the store's, unique across tenants).
        let mut seen: Vec<&str> = Vec::new();
        for r in requests {
            if seen.contains(&r.tenant_id.as_str()) {
                continue;
            }
            seen.push(&r.tenant_id);
            // It keeps only the changes of this tenant's signalling MDMs.
            let signalled = tx
                .signal_risk_changes(&r.tenant_id, &risk_changes, &r.signal_mdms, r.monitor, now)
                .await?;
            for (state, _) in signalled.new {
                decided.push(Decided {
                    kind: ActionRecordKind::SignalRisk,
                    state,
                    log: None,
                });
            }
        }
    }
    tx.commit().await?;
    Ok(Written { outcomes, decided })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_request() -> Request {
        Request {
            tenant_id: "acme".into(),
            limits: Limits {
                cooldown_minutes: 15,
                max_destructive_per_hour: 10,
            },
            events: Vec::new(),
            signal_mdms: Vec::new(),
            monitor: false,
        }
    }

    /// Lanes as the writer takes them, with `urgent` and `bulk` requests
    /// queued in each (named by their index in their lane's order).
    fn lanes_with(urgent: usize, bulk: usize) -> Lanes {
        let queue = IngestQueue::new();
        let mut lanes = queue.receivers.lock().unwrap().take().unwrap();
        for (n, lane, is_urgent) in [(urgent, &queue.urgent, true), (bulk, &queue.bulk, false)] {
            for _ in 0..n {
                let (reply, _) = oneshot::channel();
                let work = Work::Planned(empty_request());
                lane.try_send(Incoming {
                    work,
                    urgent: is_urgent,
                    reply,
                })
                .unwrap();
            }
        }
        lanes.close();
        lanes
    }

    #[tokio::test]
    async fn urgent_requests_start_groups_first_and_their_groups_take_no_bulk_ones() {
        let mut lanes = lanes_with(3, 2);
        let first = lanes.recv().await.unwrap();
        assert!(first.urgent);
        let (group, carry) = gather(first, &mut lanes);
        assert!(carry.is_none());
        assert_eq!(group.len(), 3, "the urgent ones, together");
        assert!(group.iter().all(|j| j.urgent));
        let first = lanes.recv().await.unwrap();
        assert!(!first.urgent);
        let (group, _) = gather(first, &mut lanes);
        assert_eq!(group.len(), 2);
        assert!(lanes.recv().await.is_none(), "closed and empty");
    }

    #[tokio::test]
    async fn a_flood_of_urgent_requests_lets_a_bulk_one_start_every_ninth_group() {
        let mut lanes = lanes_with(20, 2);
        let starts: Vec<bool> = {
            let mut v = Vec::new();
            while let Some(job) = lanes.recv().await {
                v.push(job.urgent);
            }
            v
        };
        let bulk_at: Vec<usize> = starts
            .iter()
            .enumerate()
            .filter(|(_, u)| !**u)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            bulk_at,
            [URGENT_STREAK as usize, 2 * URGENT_STREAK as usize + 1]
        );
        assert_eq!(starts.len(), 22);
    }

    #[tokio::test]
    async fn a_full_queue_answers_unavailable_at_once_instead_of_waiting() {
        // No writer runs: every submitted request stays queued.
        let queue = IngestQueue::new();
        let mut waiting = Vec::new();
        for _ in 0..QUEUE_CAPACITY {
            let queue = queue.clone();
            waiting.push(tokio::spawn(async move {
                queue.submit(Work::Planned(empty_request())).await
            }));
        }
        // Let every spawned submit reach the queue.
        while queue.bulk.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            queue.submit(Work::Planned(empty_request())),
        )
        .await
        .expect("answered at once");
        assert!(matches!(&answer, Err(IngestError::QueueFull)), "{answer:?}");
        for w in waiting {
            w.abort();
        }
    }

    #[tokio::test]
    async fn a_request_queued_when_the_writer_stops_is_still_written_and_a_later_one_gets_unavailable(
    ) {
        let (_dir, store, _) = crate::store::testutil::store_with_mdm().await;
        let queue = IngestQueue::new();
        let stop = CancellationToken::new();
        let tasks = Tasks::new();
        let queued = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.submit(Work::Planned(empty_request())).await })
        };
        while queue.bulk.capacity() == QUEUE_CAPACITY {
            tokio::task::yield_now().await;
        }
        stop.cancel();
        start_writer(&queue, store.clone(), DispatchHandle::new(), stop, &tasks);
        tasks.close();
        tasks.wait().await;
        assert!(
            matches!(queued.await.unwrap(), Ok(Reply::Done(o)) if o == IngestOutcome::default())
        );
        assert!(matches!(
            queue.submit(Work::Planned(empty_request())).await,
            Err(IngestError::WriterStopped)
        ));
    }
}

#[cfg(test)]
mod raw_tests {
    use super::*;
    use crate::store::testutil::{store_with_device, store_with_mdm};
    use serde_json::json;

    /// The configuration of tenant `acme` with one SOTI MDM, loaded from
    /// files under `dir`; `policy` is appended to the tenant's file.
    fn config_in(dir: &std::path::Path, policy: &str) -> Arc<Config> {
        let root = dir.join("config");
        std::fs::create_dir_all(root.join("tenants.d")).unwrap();
        std::fs::write(
            root.join("connector.toml"),
            "[tenants]\ndir = \"tenants.d\"\n",
        )
        .unwrap();
        std::fs::write(
            root.join("tenants.d/acme.toml"),
            format!(
                "id = \"acme\"\nagent_secret = \"0123456789abcdef0123456789abcdef\"\n{policy}\
                 [[mdm]]\nname = \"Acme SOTI\"\nkind = \"soti\"\n\
                 url = \"https://acme.mobicontrol.example/MobiControl\"\n\
                 [mdm.credentials]\nclient_id = \"c\"\nclient_secret = \"s\"\n\
                 username = \"u\"\npassword = \"p\"\n"
            ),
        )
        .unwrap();
        Arc::new(crate::config::load(&root.join("connector.toml")).unwrap())
    }

    /// While urgent requests come in, a bulk group stops at
    /// [`BULK_GROUP_WHILE_URGENT`] events; otherwise it takes up to
    /// [`MAX_GROUP_EVENTS`].
    #[tokio::test]
    async fn a_bulk_group_is_kept_short_while_urgent_requests_come_in() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "");
        let (_store_dir, store, _) = store_with_mdm().await;
        let sync = SyncEngine::new(store, Default::default(), Vec::new());
        let hundred: Vec<AgentEvent> = (0..100)
            .map(|i| {
                serde_json::from_value(json!({
                    "event_id": format!("e{i}"), "detected_at": "2026-11-22T10:00:00Z",
                    "device": {"mdm_device_id": "1"},
                    "threat": {"type": "network.scan", "severity": "low"}
                }))
                .unwrap()
            })
            .collect();
        let queue = IngestQueue::new();
        let mut lanes = queue.receivers.lock().unwrap().take().unwrap();
        let send = |lane: &mpsc::Sender<Incoming>, urgent: bool, events: usize| {
            let work = Work::Raw(Raw {
                config: config.clone(),
                tenant: 0,
                events: hundred[..events].to_vec(),
                sync: sync.clone(),
            });
            let (reply, _) = oneshot::channel();
            lane.try_send(Incoming {
                work,
                urgent,
                reply,
            })
            .unwrap();
        };
        let group_events =
            |group: &[Incoming]| group.iter().map(|j| j.work.events()).sum::<usize>();

        // No urgent request lately: a bulk group takes 2,000 events.
        for _ in 0..30 {
            send(&queue.bulk, false, 100);
        }
        let first = lanes.recv().await.unwrap();
        let (group, _) = gather(first, &mut lanes);
        assert_eq!(group_events(&group), MAX_GROUP_EVENTS);

        // An urgent request starts a group: the next bulk groups stop at 500.
        send(&queue.urgent, true, 1);
        let first = lanes.recv().await.unwrap();
        assert!(first.urgent);
        let (group, _) = gather(first, &mut lanes);
        assert_eq!(group_events(&group), 1, "the urgent group takes no bulk");
        let first = lanes.recv().await.unwrap();
        let (group, _) = gather(first, &mut lanes);
        assert_eq!(group_events(&group), BULK_GROUP_WHILE_URGENT);
    }

    /// A request goes in the urgent lane when some detected event of it may
    /// be answered with an action that reaches an MDM: not for `none` rules,
    /// `resolved` events, or a tenant in monitor mode.
    #[tokio::test]
    async fn the_urgent_lane_is_for_detected_events_a_rule_may_act_on_in_enforce_mode() {
        let dir = tempfile::tempdir().unwrap();
        let rules = "[[policy.rule]]\nthreat = \"device.*\"\naction = \"lock\"\n\
                     [[policy.rule]]\nthreat = \"*\"\naction = \"none\"\n";
        let enforce = config_in(&dir.path().join("enforce"), &format!("[policy]\n{rules}"));
        let monitor = config_in(
            &dir.path().join("monitor"),
            &format!("[policy]\nmode = \"monitor\"\n{rules}"),
        );
        let (_store_dir, store, _) = store_with_mdm().await;
        let sync = SyncEngine::new(store, Default::default(), Vec::new());
        let work = |config: &Arc<Config>, threats: &[(&str, &str)]| {
            let events = threats
                .iter()
                .enumerate()
                .map(|(i, (threat, status))| {
                    serde_json::from_value(json!({
                        "event_id": format!("e{i}"), "detected_at": "2026-11-22T10:00:00Z",
                        "device": {"mdm_device_id": "1"},
                        "threat": {"type": threat, "severity": "high", "status": status}
                    }))
                    .unwrap()
                })
                .collect();
            Work::Raw(Raw {
                config: config.clone(),
                tenant: 0,
                events,
                sync: sync.clone(),
            })
        };
        assert!(work(&enforce, &[("device.jailbroken_rooted", "detected")]).urgent());
        assert!(
            work(
                &enforce,
                &[
                    ("network.scan", "detected"),
                    ("device.usb_debugging", "detected")
                ]
            )
            .urgent(),
            "one event that may act is enough"
        );
        assert!(!work(&enforce, &[("network.scan", "detected")]).urgent());
        assert!(!work(&enforce, &[("device.jailbroken_rooted", "resolved")]).urgent());
        assert!(!work(&monitor, &[("device.jailbroken_rooted", "detected")]).urgent());
    }

    /// A request whose event the policy may answer with a lock queues in
    /// its own lane: when the bulk lane is full of `none` events it is still
    /// taken (one lane answered it 503), and the writer writes it first,
    /// ahead of the bulk requests queued before it.
    #[tokio::test]
    async fn a_request_that_may_lock_is_taken_when_bulk_is_full_and_written_first() {
        let (dir, store, _) = store_with_device("1").await;
        let config = config_in(
            dir.path(),
            "[[policy.rule]]\nthreat = \"device.jailbroken_rooted\"\naction = \"lock\"\n\
             [[policy.rule]]\nthreat = \"*\"\naction = \"none\"\n",
        );
        let sync = SyncEngine::new(store.clone(), Default::default(), Vec::new());
        let request = |event_id: String, threat: &str| {
            let event: AgentEvent = serde_json::from_value(json!({
                "event_id": event_id, "detected_at": "2026-11-22T10:00:00Z",
                "device": {"mdm_device_id": "1"},
                "threat": {"type": threat, "severity": "high"}
            }))
            .unwrap();
            Work::Raw(Raw {
                config: config.clone(),
                tenant: 0,
                events: vec![event],
                sync: sync.clone(),
            })
        };
        // No writer yet: everything submitted stays queued.
        let queue = IngestQueue::new();
        let mut bulk = tokio::task::JoinSet::new();
        for i in 0..QUEUE_CAPACITY {
            let (queue, work) = (
                queue.clone(),
                request(format!("bulk-{i}"), "network.arp_mitm"),
            );
            bulk.spawn(async move { queue.submit(work).await });
        }
        while queue.bulk.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = queue
            .submit(request("one-too-many".into(), "network.scan"))
            .await;
        assert!(
            matches!(refused, Err(IngestError::QueueFull)),
            "{refused:?}"
        );
        let urgent = {
            let (queue, work) = (
                queue.clone(),
                request("lock-me".into(), "device.jailbroken_rooted"),
            );
            tokio::spawn(async move { queue.submit(work).await })
        };
        while queue.urgent.capacity() == QUEUE_CAPACITY {
            assert!(!urgent.is_finished(), "{:?}", urgent.await);
            tokio::task::yield_now().await;
        }

        let (stop, tasks) = (CancellationToken::new(), Tasks::new());
        start_writer(
            &queue,
            store.clone(),
            DispatchHandle::new(),
            stop.clone(),
            &tasks,
        );
        match urgent.await.unwrap() {
            Ok(Reply::Done(outcome)) => assert_eq!(outcome.accepted, ["lock-me"]),
            other => panic!("expected the lock event written, got {other:?}"),
        }
        while let Some(answer) = bulk.join_next().await {
            assert!(matches!(answer.unwrap(), Ok(Reply::Done(_))));
        }
        let order: Vec<(String,)> =
            sqlx::query_as("SELECT event_id FROM threat_events ORDER BY id")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(order.len(), QUEUE_CAPACITY + 1);
        assert_eq!(
            order[0].0, "lock-me",
            "written ahead of the bulk queued before it"
        );
        assert_eq!(order[1].0, "bulk-0", "and the bulk lane in its own order");
        let lock: (String,) = sqlx::query_as(
            "SELECT a.kind FROM actions a JOIN threat_events e ON e.id = a.event_id WHERE e.event_id = 'lock-me'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(lock.0, "lock");
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }

    /// The writer resolves a raw request's devices itself: a request whose
    /// devices are all stored is committed at once, with the device on each
    /// event; one with a device the store does not know comes back whole
    /// for a lookup, and nothing of it is written.
    #[tokio::test]
    async fn a_raw_request_is_written_when_its_devices_are_stored_and_sent_back_when_not() {
        let (dir, store, _) = store_with_device("1").await;
        let config = config_in(dir.path(), "");
        let sync = SyncEngine::new(store.clone(), Default::default(), Vec::new());
        let queue = IngestQueue::new();
        let (stop, tasks) = (CancellationToken::new(), Tasks::new());
        start_writer(
            &queue,
            store.clone(),
            DispatchHandle::new(),
            stop.clone(),
            &tasks,
        );
        let event = |event_id: &str, id: &str| -> AgentEvent {
            serde_json::from_value(json!({
                "event_id": event_id, "detected_at": "2026-11-22T10:00:00Z",
                "device": {"mdm_device_id": id},
                "threat": {"type": "network.arp_mitm", "severity": "high"}
            }))
            .unwrap()
        };
        let raw = |events: Vec<AgentEvent>| {
            Work::Raw(Raw {
                config: config.clone(),
                tenant: 0,
                events,
                sync: sync.clone(),
            })
        };
        match queue
            .submit(raw(vec![event("e1", "1"), event("e2", " 1 ")]))
            .await
        {
            Ok(Reply::Done(outcome)) => assert_eq!(outcome.accepted, ["e1", "e2"]),
            other => panic!("expected the events written, got {other:?}"),
        }
        match queue
            .submit(raw(vec![event("e3", "1"), event("e4", "404")]))
            .await
        {
            Ok(Reply::NeedsLookup(back)) => {
                let ids: Vec<&str> = back.events.iter().map(|e| e.event_id.as_str()).collect();
                assert_eq!(ids, ["e3", "e4"]);
            }
            other => panic!("expected the request back, got {other:?}"),
        }
        let stored: Vec<(String, Option<i64>)> =
            sqlx::query_as("SELECT event_id, device_id FROM threat_events ORDER BY id")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(
            stored,
            [("e1".to_string(), Some(1)), ("e2".to_string(), Some(1))]
        );
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }
}
