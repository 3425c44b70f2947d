//! What the agent API does once a request is verified: activation (find the
//! device, on demand at the MDMs) and event ingest (events and the actions they
//! cause, committed in one transaction before the 202 by the one writer task,
//! [`start_writer`], which commits the events of many requests together).
//!
//! The HTTP layer (`http::agent`) only checks signatures, sizes and JSON shape
//! and calls these functions; the decision of each action goes through
//! [`crate::policy`], the one place every path to an MDM action passes.

pub mod signature;
mod types;
mod writer;

pub use signature::sign as sign_agent_request;
pub use types::{ActivateRequest, AgentDevice, AgentEvent, FieldError, Threat};
pub use writer::{start_writer, IngestQueue};

use crate::config::LiveConfig;
use crate::config::TenantConfig;
use crate::dispatch::DispatchHandle;
use crate::policy::{self, Limits, MdmFacts, Verdict};
use crate::shutdown::CancellationToken;
use crate::shutdown::Tasks;
use crate::store::{
    ActionRecordKind, ActivationInput, DeviceId, DeviceRef, EventIdentifiers, NewEvent, StoreError,
    StoredDevice, ThreatEvent, ThreatStatus,
};
use crate::sync::{LookupError, LookupOutcome};
use mtd_adapter::ActionKind;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// What the agent API's work needs: the store, the live config, the sync
/// engine (on-demand lookups), the dispatcher's wake handle and the queue to
/// the one writer. Cheap to clone; knows nothing of HTTP.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub store: crate::store::Store,
    pub config: LiveConfig,
    pub sync: crate::sync::SyncEngine,
    pub wake: DispatchHandle,
    /// Event posts go through here to the one writer ([`start_writer`]).
    pub queue: IngestQueue,
}

impl Ingest {
    /// Starts the writer (see [`start_writer`]) and the loop that decides,
    /// every `every`, the events whose device could not be looked up when
    /// they arrived. The loop ends with `cancel`; the writer with `stop`.
    pub fn start(
        &self,
        every: Duration,
        cancel: CancellationToken,
        stop: CancellationToken,
        tasks: &Tasks,
    ) {
        start_writer(
            &self.queue,
            self.store.clone(),
            self.wake.clone(),
            stop,
            tasks,
        );
        // Deferred decisions look devices up at MDMs that may be down (up to
        // the lookup budget per event): a task of their own.
        let state = self.clone();
        tasks.spawn_critical("the deferred-decision loop", async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = decide_deferred(&state).await {
                    tracing::warn!(error = %e, "Cannot decide deferred events; trying again later");
                }
            }
        });
    }
}

/// The answer of an activation.
#[derive(Debug)]
pub enum ActivateOutcome {
    Found(Box<StoredDevice>),
    NotEnrolled,
    /// An MDM could not be asked; the agent should try again after the delay.
    MdmUnavailable {
        retry_after: Duration,
    },
}

/// The answer of an event post: ids accepted now, and repeats of ids already stored.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted: Vec<String>,
    pub duplicates: Vec<String>,
}

/// Why an agent request could not be served. The variant says the answer
/// (503 with `Retry-After`, or 500); each keeps its cause for the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// The store cannot take writes now (disk full, read-only, locked): 503.
    /// Shared: one failed commit answers every request of its group.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Arc<StoreError>),
    /// The writer's queue is full: 503.
    #[error("the ingest queue is full")]
    QueueFull,
    /// The writer has stopped (shutdown): 503.
    #[error("the ingest writer has stopped")]
    WriterStopped,
    /// A store error a retry would not fix (a corrupt row, a refused write): 500.
    #[error("internal: {0}")]
    Internal(#[source] Arc<StoreError>),
    /// A task doing the request's work panicked (a bug): 500.
    #[error("internal: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
}

impl IngestError {
    /// [`IngestError::Unavailable`] or [`IngestError::Internal`], as
    /// [`StoreError::is_unavailable`] says.
    pub fn store(e: Arc<StoreError>) -> Self {
        if e.is_unavailable() {
            IngestError::Unavailable(e)
        } else {
            IngestError::Internal(e)
        }
    }

    /// Whether the client should try again later (503) rather than this being a bug (500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            IngestError::Unavailable(_) | IngestError::QueueFull | IngestError::WriterStopped => {
                true
            }
            IngestError::Internal(_) | IngestError::Task(_) => false,
        }
    }
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        IngestError::store(Arc::new(e))
    }
}

/// How long an event post waits for an on-demand lookup of an unknown device
/// before it records the event without a device (decided later, see `deferred`).
const LOOKUP_BUDGET: Duration = Duration::from_secs(5);

/// `POST /v1/agent/activate`: the stored device, or an on-demand lookup.
pub async fn activate(
    state: &Ingest,
    tenant: &TenantConfig,
    req: &ActivateRequest,
) -> Result<ActivateOutcome, IngestError> {
    let ids = req.device.identifiers();
    match state.sync.lookup(&tenant.id, &ids).await {
        Ok(LookupOutcome::Found(device)) => {
            let input = ActivationInput {
                platform: req.platform.as_deref(),
                agent_version: req.agent_version.as_deref(),
                tracking_id_1: req.tracking_id_1.as_deref(),
                tracking_id_2: req.tracking_id_2.as_deref(),
            };
            let stored = state
                .store
                .record_activation(device.id, &input, chrono::Utc::now())
                .await?;
            Ok(ActivateOutcome::Found(
                stored.map(Box::new).unwrap_or(device),
            ))
        }
        Ok(LookupOutcome::NotEnrolled) => Ok(ActivateOutcome::NotEnrolled),
        Err(LookupError::Unavailable { retry_after, .. }) => Ok(ActivateOutcome::MdmUnavailable {
            retry_after: retry_after.unwrap_or(Duration::from_secs(30)),
        }),
        Err(LookupError::NoIdentifier) => Ok(ActivateOutcome::NotEnrolled),
        Err(LookupError::Store(e)) => Err(IngestError::store(e)),
        Err(LookupError::Task(e)) => Err(IngestError::Task(e)),
    }
}

/// `POST /v1/agent/events`: stores every new event and the action its policy
/// decides, in one transaction; repeats of a stored `event_id` change nothing.
///
/// The common case costs the request no store round trip of its own: the
/// events go to the writer task ([`start_writer`]) as they are, and the
/// writer finds the devices of every request it takes in one statement,
/// plans each event (the policy's checks that read no store) and commits
/// them together with the other requests waiting, answering once the commit
/// holding these events is done. A request with a device the store does not
/// know comes back here: its devices are looked up (which may call an MDM,
/// so never inside the writer), planned, and submitted again.
pub async fn ingest_events(
    state: &Ingest,
    config: Arc<crate::config::Config>,
    tenant: usize,
    events: Vec<AgentEvent>,
) -> Result<IngestOutcome, IngestError> {
    let raw = writer::Raw {
        config,
        tenant,
        events,
        sync: state.sync.clone(),
    };
    let raw = match state.queue.submit(writer::Work::Raw(raw)).await? {
        writer::Reply::Done(outcome) => return Ok(outcome),
        writer::Reply::NeedsLookup(raw) => raw,
    };
    let tenant = &raw.config.tenants[raw.tenant];
    let events = &raw.events;
    // Resolve devices before the write transaction: a lookup may call an MDM,
    // and the transaction must not wait on the network.
    let devices = resolve_all(state, &tenant.id, events).await?;
    let groups = groups_for_rules(state, tenant, devices.iter().filter_map(Resolved::id)).await?;

    let now = chrono::Utc::now();
    let planned = plan_all(&state.sync, tenant, events, devices, &groups, now);
    match state
        .queue
        .submit(writer::Work::Planned(writer::Request::new(
            &state.sync,
            tenant,
            planned,
        )))
        .await?
    {
        writer::Reply::Done(outcome) => Ok(outcome),
        writer::Reply::NeedsLookup(_) => Err(IngestError::Internal(Arc::new(StoreError::Corrupt(
            "the writer sent planned events back".into(),
        )))),
    }
}

/// An event as the writer takes it: the row to insert and what is already
/// known of its decision.
#[derive(Debug)]
pub(crate) struct Planned {
    event: NewEvent,
    /// The stored device and its MDM, when known.
    device: Option<DeviceRef>,
    decision: Decision,
}

impl Planned {
    /// Whether its action may still reach an MDM: a rule's action that passed
    /// the checks needing no store (the writer's urgent lane).
    pub(crate) fn may_send(&self) -> bool {
        matches!(self.decision, Decision::Limited(kind) if kind != ActionKind::None)
    }
}

/// The part of an event's decision made before the write transaction.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    /// No MDM could be asked about the device: kept without an action,
    /// decided once the device is known (see `decide_deferred`).
    Deferred,
    /// No policy rule matches: the decision "none", recorded.
    NoRule,
    /// A `resolved` event: it changes the device's threats, and policy
    /// rules do not act on it, so there is no action record.
    Resolution,
    /// A rule's action that a check needing no store already decided
    /// (monitor mode, unknown device, permit, capability, ownership, `none`).
    Decided(ActionKind, Verdict),
    /// A rule's action that passed those checks: the cool-down and the
    /// hourly cap decide it inside the transaction, in order.
    Limited(ActionKind),
}

/// The groups of the devices, as rules name them, when a rule of the
/// tenant is scoped to groups (else nothing is read).
async fn groups_for_rules(
    state: &Ingest,
    tenant: &TenantConfig,
    devices: impl Iterator<Item = i64>,
) -> Result<std::collections::HashMap<i64, Vec<String>>, IngestError> {
    if !tenant.policy.has_group_rules() {
        return Ok(Default::default());
    }
    let mut ids: Vec<i64> = devices.collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(state.store.group_names_of(&ids).await?)
}

/// Each event planned with its resolved device and that device's groups.
fn plan_all(
    sync: &crate::sync::SyncEngine,
    tenant: &TenantConfig,
    events: &[AgentEvent],
    devices: Vec<Resolved>,
    groups: &std::collections::HashMap<i64, Vec<String>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Planned> {
    events
        .iter()
        .zip(devices)
        .map(|(e, resolved)| {
            let in_groups = resolved
                .id()
                .and_then(|id| groups.get(&id))
                .map_or(&[][..], Vec::as_slice);
            plan(sync, tenant, e, resolved, in_groups, now)
        })
        .collect()
}

fn plan(
    sync: &crate::sync::SyncEngine,
    tenant: &TenantConfig,
    e: &AgentEvent,
    resolved: Resolved,
    groups: &[String],
    now: chrono::DateTime<chrono::Utc>,
) -> Planned {
    let device = match &resolved {
        Resolved::Found(d) => Some(d.as_ref()),
        Resolved::NotEnrolled | Resolved::Failed => None,
    };
    let decision = if resolved == Resolved::Failed {
        Decision::Deferred
    } else if e.threat.status == ThreatStatus::Resolved {
        Decision::Resolution
    } else {
        match tenant
            .policy
            .decide(&e.threat.threat_type, e.threat.severity, groups)
        {
            None => Decision::NoRule,
            Some(rule) => match static_checks(sync, tenant, device, rule.action.into()) {
                Some(reason) => Decision::Decided(rule.action, Verdict::Skipped(reason)),
                // Only a known device passes the static checks.
                None if device.is_some() => Decision::Limited(rule.action),
                None => Decision::Decided(
                    rule.action,
                    Verdict::Skipped("device unknown: no MDM of the tenant knows it".into()),
                ),
            },
        }
    };
    Planned {
        event: NewEvent {
            tenant_id: tenant.id.clone(),
            event_id: e.event_id.clone(),
            device_id: device.map(|d| d.id),
            identifiers: EventIdentifiers {
                udid: e.device.udid.clone(),
                serial: e.device.serial.clone(),
                imei: e.device.imei.clone(),
                mac: e.device.mac.clone(),
                mdm_device_id: e.device.mdm_device_id.clone(),
            },
            threat_type: e.threat.threat_type.clone(),
            severity: e.threat.severity.as_str().to_string(),
            threat_name: e.threat.name.clone(),
            detected_at: e.detected_at,
            received_at: now,
            network: e.network.clone(),
            details: e.details.clone(),
            status: e.threat.status,
            threat_key: e.threat.key().to_string(),
            settled: decision != Decision::Deferred,
        },
        device: device.map(DeviceRef::from),
        decision,
    }
}

/// [`policy::static_checks`] for a device of the tenant, with its MDM's facts.
fn static_checks(
    sync: &crate::sync::SyncEngine,
    tenant: &TenantConfig,
    device: Option<&StoredDevice>,
    kind: ActionRecordKind,
) -> Option<String> {
    let mdm = device.and_then(|d| sync.mdm_of(tenant, d.mdm_id));
    let caps = mdm.as_ref().map(|(i, _)| i.adapter.capabilities());
    let facts = mdm
        .as_ref()
        .zip(caps.as_ref())
        .map(|((_, config), caps)| MdmFacts::of(config, caps));
    policy::static_checks(&tenant.policy, device, facts, kind)
}

fn log_decision(tenant: &str, event_id: &str, threat: &str, action: ActionKind, verdict: &Verdict) {
    if action == ActionKind::None {
        // "Record only", one per event: the action record is the trace.
        tracing::debug!(tenant, event_id, threat, %action, verdict = ?verdict, "Decision recorded");
        return;
    }
    match verdict {
        Verdict::Pending => {
            tracing::info!(tenant, event_id, threat, %action, "Action queued")
        }
        Verdict::Held(reason) => {
            tracing::warn!(tenant, event_id, %action, %reason, "Action held for approval")
        }
        Verdict::Skipped(reason) => {
            tracing::info!(tenant, event_id, %action, %reason, "Action skipped")
        }
    }
}

/// The most on-demand lookups (MDM calls) one request may cause; events of
/// further unknown devices are kept and decided when their device is known.
const MAX_LOOKUPS_PER_REQUEST: usize = 16;

/// Resolves the device of each event: from the store, else by an on-demand
/// lookup for the first [`MAX_LOOKUPS_PER_REQUEST`] unknown devices, run
/// concurrently within one [`LOOKUP_BUDGET`]; the rest are deferred.
async fn resolve_all(
    state: &Ingest,
    tenant: &str,
    events: &[AgentEvent],
) -> Result<Vec<Resolved>, IngestError> {
    let mut distinct: Vec<(Vec<mtd_adapter::DeviceIdentifier>, Option<Resolved>)> = Vec::new();
    let mut slot_of = Vec::with_capacity(events.len());
    for e in events {
        let ids = e.device.identifiers();
        let slot = match distinct.iter().position(|(k, _)| *k == ids) {
            Some(i) => i,
            None => {
                let known = if ids.is_empty() {
                    Some(Resolved::NotEnrolled)
                } else {
                    match state.sync.find_known(tenant, &ids).await {
                        Ok(found) => found.map(|d| Resolved::Found(Box::new(d))),
                        Err(e) => return Err(e.into()),
                    }
                };
                distinct.push((ids, known));
                distinct.len() - 1
            }
        };
        slot_of.push(slot);
    }
    let unknown: Vec<usize> = (0..distinct.len())
        .filter(|i| distinct[*i].1.is_none())
        .collect();
    if unknown.len() > MAX_LOOKUPS_PER_REQUEST {
        tracing::info!(
            tenant,
            unknown = unknown.len(),
            looked_up = MAX_LOOKUPS_PER_REQUEST,
            "More unknown devices in one request than it may look up; the other events are kept and decided when their device is known"
        );
    }
    let lookups = unknown
        .iter()
        .take(MAX_LOOKUPS_PER_REQUEST)
        .map(|i| resolve(state, tenant, &distinct[*i].0));
    let found = futures::future::join_all(lookups).await;
    for (i, resolved) in unknown.iter().zip(found) {
        distinct[*i].1 = Some(resolved?);
    }
    Ok(slot_of
        .into_iter()
        .map(|i| distinct[i].1.clone().unwrap_or(Resolved::Failed))
        .collect())
}

/// What an on-demand lookup said about an event's device.
#[derive(Debug, Clone, PartialEq)]
enum Resolved {
    Found(Box<StoredDevice>),
    NotEnrolled,
    /// No MDM could be asked in time: decide later.
    Failed,
}

impl Resolved {
    fn id(&self) -> Option<i64> {
        match self {
            Resolved::Found(d) => Some(d.id),
            Resolved::NotEnrolled | Resolved::Failed => None,
        }
    }
}

async fn resolve(
    state: &Ingest,
    tenant: &str,
    ids: &[mtd_adapter::DeviceIdentifier],
) -> Result<Resolved, IngestError> {
    match tokio::time::timeout(LOOKUP_BUDGET, state.sync.lookup(tenant, ids)).await {
        Ok(Ok(LookupOutcome::Found(d))) => Ok(Resolved::Found(d)),
        Ok(Ok(LookupOutcome::NotEnrolled)) | Ok(Err(LookupError::NoIdentifier)) => {
            Ok(Resolved::NotEnrolled)
        }
        Ok(Err(LookupError::Store(e))) => Err(IngestError::store(e)),
        Ok(Err(LookupError::Task(e))) => Err(IngestError::Task(e)),
        Ok(Err(e)) => {
            tracing::warn!(tenant, error = %e, "Device lookup failed; the event is kept and decided when the device is known");
            Ok(Resolved::Failed)
        }
        Err(_) => {
            tracing::warn!(tenant, "Device lookup took too long; the event is kept and decided when the device is known");
            Ok(Resolved::Failed)
        }
    }
}

/// Committed risk signals: their metric, and the dispatcher woken for pending ones.
fn signalled_metrics(wake: &DispatchHandle, signalled: &crate::store::Signalled) {
    for (state, _) in &signalled.new {
        crate::metrics::action_entered("signal_risk", state.as_str());
    }
    if signalled
        .new
        .iter()
        .any(|(s, _)| *s == crate::store::ActionState::Pending)
    {
        wake.wake();
    }
}

/// How long an event may wait for its device to become known.
const DEFER_LIMIT: chrono::Duration = chrono::Duration::hours(24);

/// Decides the events that arrived while their device could not be looked
/// up: once the device is found its action goes through the same policy; a
/// device no MDM knows (or still unknown after 24 hours) is `skipped`.
/// Returns how many events were decided.
pub async fn decide_deferred(state: &Ingest) -> Result<usize, IngestError> {
    let events = state.store.undecided_events(100).await?;
    let mut decided = 0;
    let config = state.config.load();
    for e in events {
        let Some(tenant) = config.tenants.iter().find(|t| t.id == e.tenant_id) else {
            continue;
        };
        let agent = AgentDevice {
            udid: e.identifiers.udid.clone(),
            serial: e.identifiers.serial.clone(),
            imei: e.identifiers.imei.clone(),
            mac: e.identifiers.mac.clone(),
            mdm_device_id: e.identifiers.mdm_device_id.clone(),
        };
        let resolved = resolve(state, &tenant.id, &agent.identifiers()).await?;
        let too_old = chrono::Utc::now() - e.received_at > DEFER_LIMIT;
        let device = match resolved {
            Resolved::Found(d) => Some(*d),
            Resolved::Failed if !too_old => continue,
            Resolved::Failed | Resolved::NotEnrolled => None,
        };
        // Stored from a validated `Severity`, so this parses; Low never widens a rule.
        let severity = e
            .severity
            .parse::<crate::config::Severity>()
            .unwrap_or(crate::config::Severity::Low);
        let mut tx = state.store.begin().await?;
        let now = chrono::Utc::now();
        let mut risk_changes = Vec::new();
        if let Some(d) = &device {
            tx.set_event_device(e.id, d.id).await?;
            risk_changes = tx
                .apply_threat_events(&[ThreatEvent::of_stored(&e, d.id)], now)
                .await?;
        }
        let monitor = tenant.policy.mode == crate::config::PolicyMode::Monitor;
        let signal_mdms = state.sync.risk_signal_mdms(tenant);
        if e.status == ThreatStatus::Resolved {
            // No decision to make: it changed the device's threats, if known.
            if device.is_none() {
                tx.settle_event(e.id, now).await?;
            }
            let signalled = tx
                .signal_risk_changes(&tenant.id, &risk_changes, &signal_mdms, monitor, now)
                .await?;
            tx.commit().await?;
            signalled_metrics(&state.wake, &signalled);
            decided += 1;
            continue;
        }
        let groups = groups_for_rules(state, tenant, device.iter().map(|d| d.id)).await?;
        let in_groups = device
            .as_ref()
            .and_then(|d| groups.get(&d.id))
            .map_or(&[][..], Vec::as_slice);
        let (action, verdict) = match tenant.policy.decide(&e.threat_type, severity, in_groups) {
            None => (
                ActionKind::None,
                Verdict::Skipped("no policy rule matches this threat".into()),
            ),
            Some(rule) if device.is_none() && too_old => (
                rule.action,
                Verdict::Skipped("device unknown: no MDM could be asked for 24 hours".into()),
            ),
            Some(rule) => {
                let kind = ActionRecordKind::from(rule.action);
                let verdict = match static_checks(&state.sync, tenant, device.as_ref(), kind) {
                    Some(reason) => Verdict::Skipped(reason),
                    None => {
                        // static_checks passes only a known device.
                        let device_id = DeviceId(device.as_ref().map_or(0, |d| d.id));
                        let limits = Limits::of(tenant);
                        let recent = tx
                            .recent_action(device_id, kind, limits.cooldown_since(now))
                            .await?;
                        let destructive = if rule.action.is_destructive() {
                            tx.destructive_since(&tenant.id, policy::cap_since(now))
                                .await?
                        } else {
                            0
                        };
                        limits.verdict(rule.action, recent, destructive)
                    }
                };
                (rule.action, verdict)
            }
        };
        let new_action = verdict.new_action(
            &tenant.id,
            e.id,
            device.as_ref().map(DeviceRef::from),
            Some(action),
        );
        tx.insert_action(&new_action).await?;
        let signalled = tx
            .signal_risk_changes(&tenant.id, &risk_changes, &signal_mdms, monitor, now)
            .await?;
        tx.commit().await?;
        signalled_metrics(&state.wake, &signalled);
        crate::metrics::action_entered(new_action.kind.as_str(), new_action.state.as_str());
        if verdict == Verdict::Pending {
            state.wake.wake();
        }
        if action == ActionKind::None {
            tracing::debug!(tenant = %tenant.id, event_id = %e.event_id, %action, verdict = ?verdict, "Deferred decision made");
        } else {
            tracing::info!(tenant = %tenant.id, event_id = %e.event_id, %action, verdict = ?verdict, "Deferred decision made");
        }
        decided += 1;
    }
    Ok(decided)
}
