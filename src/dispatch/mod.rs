//! The dispatcher: sends due action rows to their MDMs.
//!
//! Durable work is a row, not a task: the dispatcher claims due rows with one
//! `UPDATE … RETURNING`, executes each through its adapter (at most
//! `per_mdm_concurrency` at a time per MDM), and moves the row on with an
//! audit row: `sent` with the MDM's receipt, `failed` with a due time
//! (exponential backoff with jitter, at least the MDM's `Retry-After`), or
//! `dead` (a permanent refusal at once, or after `max_attempts` /
//! `give_up_after`). A row a crash left claimed is retried at start when its
//! command is idempotent at the MDM, or when it never reached its MDM call
//! (rows wait claimed for their MDM's turn; a non-idempotent call is preceded
//! by a committed "sending" audit row); otherwise it is `dead` with a note to
//! check the console, so an action is never sent twice by the connector.
//!
//! Every write of the dispatcher (claims, "sending" rows, outcomes) goes to one
//! writer task that commits many per transaction ([`DispatchWriter`]): at 1,000
//! actions/s a transaction per action queued on SQLite's busy handler.

mod writer;
pub use writer::{DispatchWriter, MAX_GROUP_OPS};

use crate::config::LiveConfig;
use crate::policy;
use crate::shutdown::CancellationToken;
use crate::shutdown::Tasks;
use crate::store::{
    ActionRecordKind, ActionState, MdmId, NewAction, SendGate, StoreError, StoredAction,
    StoredDevice, Transition,
};
use chrono::Utc;
use mtd_adapter::{AdapterError, Device, DeviceIdentifier, MdmCommand};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Retry and concurrency settings.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Attempts before a retryable failure becomes `dead`.
    pub max_attempts: u32,
    /// Age of an action after which a retryable failure becomes `dead`.
    pub give_up_after: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Calls in flight per MDM.
    pub per_mdm_concurrency: usize,
    /// Rows claimed per round, and the bound of rows in flight overall (×8).
    pub batch: u32,
    /// How often due rows are looked for without a wake-up.
    pub poll: Duration,
    /// How often events whose device could not be looked up are retried.
    pub deferred_every: Duration,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            max_attempts: 12,
            give_up_after: Duration::from_secs(24 * 3600),
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(15 * 60),
            per_mdm_concurrency: 4,
            batch: 32,
            poll: Duration::from_millis(500),
            deferred_every: Duration::from_secs(30),
        }
    }
}

impl DispatchSettings {
    /// The defaults, with what `[dispatch]` of the main config sets.
    pub fn from_config(config: &crate::config::DispatchConfig) -> Self {
        DispatchSettings {
            max_attempts: config.max_attempts,
            give_up_after: config.give_up_after,
            per_mdm_concurrency: config.per_mdm_concurrency as usize,
            ..DispatchSettings::default()
        }
    }
}

/// Wakes the dispatcher when new pending rows were committed (ingest, approval).
#[derive(Debug, Clone, Default)]
pub struct DispatchHandle {
    notify: Arc<Notify>,
}

impl DispatchHandle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// What the dispatcher works with: the store, the live config, the sync
/// engine (adapters and fresh lookups) and its own wake handle. Cheap to
/// clone; knows nothing of HTTP.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub store: crate::store::Store,
    pub config: LiveConfig,
    pub sync: crate::sync::SyncEngine,
    pub wake: DispatchHandle,
    /// One lock per device with a risk signal in flight.
    pub signal_locks: SignalLocks,
    /// Where every write of the dispatcher goes (group commit).
    pub writer: DispatchWriter,
}

impl Dispatcher {
    /// Wakes the claim loop: new pending rows were committed.
    pub fn wake(&self) {
        self.wake.wake();
    }
}

/// What [`Dispatcher::try_dispatch_next`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatched {
    /// One due action was claimed and sent, or moved on with its reason.
    One,
    /// Nothing was due.
    Empty,
}

impl Dispatcher {
    /// Claims the next due action and handles it in this task, the claim
    /// loop's step without its concurrency: tools and tests drain the queue
    /// with it (`while … == Dispatched::One {}`) instead of waiting for the
    /// background loop.
    pub async fn try_dispatch_next(
        &self,
        settings: &DispatchSettings,
    ) -> Result<Dispatched, StoreError> {
        let Some(row) = self.writer.claim(Utc::now(), 1).await?.into_iter().next() else {
            return Ok(Dispatched::Empty);
        };
        execute(self, settings, row, None).await;
        Ok(Dispatched::One)
    }
}

/// Recovers rows a crash left claimed, then runs the claim loop until `cancel`.
pub async fn start(
    state: Dispatcher,
    settings: DispatchSettings,
    cancel: CancellationToken,
    tasks: &Tasks,
) {
    // Stopped by the claim loop once its rows in flight are recorded.
    let writer_stop = CancellationToken::new();
    writer::start(&state.writer, writer_stop.clone(), tasks);
    recover(&state).await;
    let tracker = tasks.clone();
    tasks.spawn_critical(
        "the dispatcher",
        run(state, settings, cancel, tracker, writer_stop),
    );
}

async fn recover(state: &Dispatcher) {
    let claimed = match state.store.unfinished_claims().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Cannot read actions left claimed by the last stop");
            return;
        }
    };
    for row in claimed {
        let result = if is_idempotent(row.kind) {
            let note = format!(
                "claimed before the last stop and not finished; retried because {} is idempotent at the MDM",
                row.kind.command().map(|c| c.as_str()).unwrap_or("none")
            );
            tracing::warn!(action_id = row.id, kind = ?row.kind, "Retrying an action interrupted by the last stop");
            state.writer.release_claim(row.id, &note).await
        } else if !state.store.was_being_sent(row.id).await.unwrap_or(true) {
            // Claimed, but its MDM call had not started: nothing can have reached the MDM.
            let note = "claimed before the last stop but never sent (it was waiting for its turn); retried: it did not reach the MDM";
            tracing::warn!(action_id = row.id, kind = ?row.kind, "Retrying an action claimed but not sent before the last stop");
            state.writer.release_claim(row.id, note).await
        } else {
            let note = "interrupted while being sent at the last stop: it may have reached the MDM, and it is not idempotent, so it is not sent again; check the MDM console";
            tracing::error!(action_id = row.id, kind = ?row.kind, "Action interrupted while being sent; not retried: check the MDM console");
            transition(
                state,
                row.id,
                Transition::new(row.state, ActionState::Dead, note).reason(note),
            )
            .await
            .map(|_| ())
        };
        if let Err(e) = result {
            tracing::error!(action_id = row.id, error = %e, "Cannot recover an interrupted action");
        }
    }
}

/// Applies a transition and, once committed, counts the state the action
/// entered (`mtd_actions_total`, and the delivery time when sent).
async fn transition(
    state: &Dispatcher,
    id: i64,
    t: Transition,
) -> Result<StoredAction, StoreError> {
    transition_with(state, id, t, None).await
}

/// [`transition`], with a row recorded in the same transaction when it applies.
async fn transition_with(
    state: &Dispatcher,
    id: i64,
    t: Transition,
    follow_up: Option<NewAction>,
) -> Result<StoredAction, StoreError> {
    let row = stored(id, || {
        state.writer.transition(id, t.clone(), follow_up.clone())
    })
    .await?;
    record_moved(&row);
    if let Some(f) = &follow_up {
        crate::metrics::action_entered(f.kind.as_str(), f.state.as_str());
    }
    Ok(row)
}

/// Counts the state an action row entered (`mtd_actions_total`) and, when a
/// threat's action was sent, its delivery time. Call once the change is
/// committed; the admin API's approvals and cancels call it too.
pub fn record_moved(row: &StoredAction) {
    crate::metrics::action_entered(row.kind.as_str(), row.state.as_str());
    if row.state == ActionState::Sent && row.parent_action_id.is_none() {
        let sent = row.sent_at.unwrap_or_else(Utc::now);
        let seconds = (sent - row.created_at)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64();
        crate::metrics::action_delivered(row.kind.as_str(), seconds);
    }
}

/// How long a dispatcher write is retried while the store cannot take writes.
const STORE_RETRY_LIMIT: Duration = Duration::from_secs(3600);

/// Runs a dispatcher write, again and again while the store is unavailable
/// (locked past its busy timeout, read-only, full), up to [`STORE_RETRY_LIMIT`].
/// Why: the row is claimed and the outcome of its MDM call exists only in
/// memory; a write given up at once left the row claimed until the next
/// start, which then retried a lock the MDM already had or gave up a wipe.
async fn stored<T, F, Fut>(action_id: i64, mut write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + STORE_RETRY_LIMIT;
    let mut delay = Duration::from_millis(100);
    loop {
        match write().await {
            Err(e) if e.is_unavailable() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(action_id, error = %e, retry_in_ms = delay.as_millis() as u64, "Cannot record an action's progress: the store is not writable; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Sending the same lock, profile install or profile removal twice has the
/// effect of sending it once; a wipe is not repeated on a maybe.
fn is_idempotent(kind: ActionRecordKind) -> bool {
    matches!(
        kind,
        ActionRecordKind::Lock
            | ActionRecordKind::DisconnectWifi
            | ActionRecordKind::RemoveWifiProfile
            // Writing a level the MDM already holds changes nothing.
            | ActionRecordKind::SignalRisk
    )
}

async fn run(
    state: Dispatcher,
    settings: DispatchSettings,
    cancel: CancellationToken,
    tasks: Tasks,
    writer_stop: CancellationToken,
) {
    let settings = Arc::new(settings);
    let per_mdm: Mutex<HashMap<MdmId, Arc<Semaphore>>> = Mutex::new(HashMap::new());
    // Bounds rows claimed but not finished, so a slow MDM cannot make this
    // process claim everything.
    let bound = settings.batch as usize * 8;
    let in_flight = Arc::new(Semaphore::new(bound));
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let room = in_flight.available_permits().min(settings.batch as usize) as u32;
        if room == 0 {
            // Every row in flight: wait until a batch of them is done (no
            // wake-up comes for that; waiting for the poll left the MDM idle).
            let batch = settings.batch.min(bound as u32);
            tokio::select! {
                _ = cancel.cancelled() => break,
                freed = in_flight.acquire_many(batch) => drop(freed),
            }
            continue;
        }
        let claimed = match state.writer.claim(Utc::now(), room).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot claim due actions; trying again");
                Vec::new()
            }
        };
        let full_round = claimed.len() as u32 == room;
        for row in claimed {
            let permit = in_flight
                .clone()
                .try_acquire_owned()
                .expect("claimed within the free permits");
            let mdm_limit = {
                let mut map = per_mdm.lock().expect("semaphore map lock");
                map.entry(MdmId(row.mdm_id.unwrap_or(0)))
                    .or_insert_with(|| Arc::new(Semaphore::new(settings.per_mdm_concurrency)))
                    .clone()
            };
            let (state, settings) = (state.clone(), settings.clone());
            tasks.spawn(async move {
                // The MDM's turn; `execute` gives it back once its call returned.
                let turn = mdm_limit.acquire_owned().await.ok();
                execute(&state, &settings, row, turn).await;
                drop(permit);
            });
        }
        if full_round {
            continue; // more may be due right now
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = state.wake.notify.notified() => {}
            _ = tokio::time::sleep(settings.poll) => {}
        }
    }
    tracing::debug!("Dispatcher stopped claiming");
    // The rows in flight record their outcome through the writer; then it
    // stops (the grace limit of the shutdown bounds this wait).
    let _all = in_flight.acquire_many(bound as u32).await;
    writer_stop.cancel();
}

/// Sends one claimed row and moves it on. Every error is recorded on the row.
/// Its span carries the tenant, the MDM (once known) and the action id, so
/// the log lines inside do not repeat them.
#[tracing::instrument(
    name = "dispatch",
    skip_all,
    fields(tenant = %row.tenant_id, mdm = tracing::field::Empty, action_id = row.id)
)]
async fn execute(
    state: &Dispatcher,
    settings: &DispatchSettings,
    row: StoredAction,
    mut turn: Option<OwnedSemaphorePermit>,
) {
    match try_execute(state, settings, &row, &mut turn).await {
        Ok(()) => {}
        // Cancelled by an admin while it was being prepared (before the gate).
        Err(StoreError::ActionStateChanged { actual, .. }) => {
            tracing::info!(state = %actual, "Action moved on while it was being prepared; not sent");
        }
        Err(e) => {
            // The store failed: the row stays claimed; the next start recovers it.
            tracing::error!(error = %e, "Cannot record the outcome of an action");
        }
    }
}

/// `turn`: the MDM's permit (calls in flight per MDM), held while the row
/// is prepared and its MDM call runs, given back before the outcome is recorded.
async fn try_execute(
    state: &Dispatcher,
    settings: &DispatchSettings,
    row: &StoredAction,
    turn: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), StoreError> {
    let skip = |reason: String| {
        Transition::new(row.state, ActionState::Skipped, "skipped before sending").reason(reason)
    };
    let config = state.config.load();
    let Some(tenant) = config.tenants.iter().find(|t| t.id == row.tenant_id) else {
        transition(
            state,
            row.id,
            skip("the tenant is no longer configured".into()),
        )
        .await?;
        return Ok(());
    };
    let device = match row.device_id {
        Some(id) => state.store.get_device(id).await?,
        None => None,
    };
    let Some(mut device) = device else {
        transition(state, row.id, skip("device unknown".into())).await?;
        return Ok(());
    };
    let Some((integration, mdm)) = state.sync.mdm_of(tenant, device.mdm_id) else {
        transition(
            state,
            row.id,
            skip("the device's MDM is no longer configured".into()),
        )
        .await?;
        return Ok(());
    };
    tracing::Span::current().record("mdm", integration.name.as_str());
    if row.kind == ActionRecordKind::SignalRisk {
        return send_risk_signal(
            state,
            settings,
            row,
            (tenant, &device, &integration, mdm),
            turn,
        )
        .await;
    }
    let Some(command) = row.kind.command() else {
        transition(
            state,
            row.id,
            skip("policy action is none: recorded only".into()),
        )
        .await?;
        return Ok(());
    };

    // Fresh facts before destruction: the device as its MDM knows it now.
    if row.kind.is_destructive() {
        match fresh_facts(state, &integration, &mut device).await {
            Ok(None) => {}
            Ok(Some(reason)) => {
                transition(state, row.id, skip(reason)).await?;
                return Ok(());
            }
            Err(e) => return record_failure(state, settings, row, e).await,
        }
    }
    let capabilities = integration.adapter.capabilities();
    let facts = policy::MdmFacts::of(mdm, &capabilities);
    if let Some(reason) = policy::check_before_send(tenant, &device, facts, row.kind) {
        transition(state, row.id, skip(reason)).await?;
        return Ok(());
    }

    let removes_itself = integration.adapter.removes_wifi_profile_itself();
    if command == MdmCommand::DisconnectWifi && !removes_itself {
        if let Some(reason) = extend_wifi_removal(state, row, &device, mdm).await? {
            transition(state, row.id, skip(reason)).await?;
            return Ok(());
        }
    }

    // The gate of a non-idempotent call (a wipe): from here on no cancel
    // takes the row, and a committed "sending" audit row comes first (a row
    // still claimed after a crash with it as its last audit row was perhaps
    // sent, and is not repeated). Idempotent calls pass no gate: a claimed
    // lock is already "being sent" for a cancel, and a gate would cost a
    // write transaction per lock.
    let gate = if is_idempotent(row.kind) {
        SendGate::Go
    } else {
        let cap = row
            .kind
            .is_destructive()
            .then_some(tenant.policy.max_destructive_actions_per_hour);
        stored(row.id, || state.writer.begin_sending(row, cap, true)).await?
    };
    match gate {
        SendGate::Go => {}
        SendGate::Gone(now) => {
            let note = format!("not sent: the action became {now} while it waited for its turn");
            tracing::info!(state = %now, "Action not sent: it was cancelled or moved on while it waited");
            stored(row.id, || state.writer.note_not_sent(row.id, &note)).await?;
            return Ok(());
        }
        SendGate::Later(due) => {
            tracing::warn!(due = %due, "Hourly cap of destructive actions reached: the action waits");
            return Ok(());
        }
    }
    let started = std::time::Instant::now();
    let answer = integration
        .adapter
        .execute(command, &to_adapter_device(&device))
        .await;
    // The call is over: the MDM's next row may go while this one is recorded.
    drop(turn.take());
    match answer {
        Ok(receipt) => {
            // The removal row is committed with the `sent` transition.
            let removal = (command == MdmCommand::DisconnectWifi && !removes_itself)
                .then(|| wifi_removal(row, &device, &integration, mdm));
            record_sent(state, row, &integration.name, &receipt, started, removal).await?;
            tracing::info!(
                device_id = device.id,
                command = command.as_str(),
                "Action sent"
            );
            Ok(())
        }
        Err(e) => record_failure(state, settings, row, e).await,
    }
}

/// The per-device locks of risk signals: two signals of one device are never
/// in flight at once, so an older level cannot reach the MDM after a newer
/// one (each waits, then checks that no newer signal exists). They belong to
/// one dispatcher: a second daemon in the same process (tests, benches) has
/// its own, so tasks of an aborted one cannot block it.
#[derive(Debug, Clone, Default)]
pub struct SignalLocks {
    locks: Arc<Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>>,
}

impl SignalLocks {
    fn of(&self, device_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Forget locks nobody holds (only this map refers to them).
        if locks.len() > 1024 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(device_id).or_default().clone()
    }
}

/// Sends a `signal_risk` row: the device's level into its MDM (CONTRACT §4).
async fn send_risk_signal(
    state: &Dispatcher,
    settings: &DispatchSettings,
    row: &StoredAction,
    (tenant, device, integration, mdm): (
        &crate::config::TenantConfig,
        &StoredDevice,
        &crate::sync::Integration,
        &crate::config::MdmConfig,
    ),
    turn: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), StoreError> {
    let skip = |reason: String| {
        Transition::new(row.state, ActionState::Skipped, "skipped before sending").reason(reason)
    };
    let capabilities = integration.adapter.capabilities();
    let facts = policy::MdmFacts::of(mdm, &capabilities);
    if let Some(reason) = policy::check_before_send(tenant, device, facts, row.kind) {
        return transition(state, row.id, skip(reason)).await.map(drop);
    }
    let (Some(level), Some(signal)) = (row.signal_level, mdm.risk_signal.as_ref()) else {
        return transition(state, row.id, skip("no level to write".into()))
            .await
            .map(drop);
    };
    let lock = state.signal_locks.of(device.id);
    let _in_flight = lock.lock().await;
    if stored(row.id, || state.store.newer_risk_signal(device.id, row.id)).await? {
        let reason =
            "superseded: a newer level of the device was recorded before this one was sent";
        return transition(state, row.id, skip(reason.into()))
            .await
            .map(drop);
    }
    let started = std::time::Instant::now();
    let answer = integration
        .adapter
        .signal_risk(&to_adapter_device(device), level.signal(), &signal.name)
        .await;
    // The call is over; the device's signal lock is kept until the outcome is recorded.
    drop(turn.take());
    match answer {
        Ok(receipt) => {
            record_sent(state, row, &integration.name, &receipt, started, None).await?;
            tracing::info!(device_id = device.id, level = %level, "Risk level written to the MDM");
            Ok(())
        }
        Err(e) => record_failure(state, settings, row, e).await,
    }
}

/// Looks the device up at its MDM right before a destructive action and
/// stores what it learns (under `mask_pii`); `device` takes the fresh
/// ownership. `Some(reason)`: the action must be skipped (the MDM no longer
/// has the device, or its record is another device now).
async fn fresh_facts(
    state: &Dispatcher,
    integration: &crate::sync::Integration,
    device: &mut StoredDevice,
) -> Result<Option<String>, AdapterError> {
    let id = DeviceIdentifier::MdmDeviceId(device.mdm_device_id.clone());
    let Some(fresh) = integration.adapter.lookup_device(&id).await? else {
        return Ok(Some(
            "the MDM no longer has the device (checked right before sending)".into(),
        ));
    };
    if let Some(reason) = identity_changed(device, &fresh) {
        return Ok(Some(reason));
    }
    device.ownership = fresh.ownership;
    // Stored under `mask_pii` like a sync stores it (device name included).
    if let Err(e) = integration.store_found_device(&state.store, fresh).await {
        tracing::warn!(error = %e, "Cannot store the fresh device facts");
    }
    Ok(None)
}

/// A disconnect while the profile of an earlier one is still installed
/// extends that profile's removal instead of sending again: `Some(reason)`
/// to skip this action with, when it did.
async fn extend_wifi_removal(
    state: &Dispatcher,
    row: &StoredAction,
    device: &StoredDevice,
    mdm: &crate::config::MdmConfig,
) -> Result<Option<String>, StoreError> {
    let Some(active) = state.store.active_wifi_removal(device.id).await? else {
        return Ok(None);
    };
    let due = Utc::now() + removal_delay(mdm);
    let note = format!("extended to {due} by action {}", row.id);
    let extended = stored(row.id, || state.writer.reschedule(active.id, due, &note)).await?;
    Ok(extended.then(|| format!("the disconnect-Wi-Fi profile is still installed (removal action {}); its removal was extended to {due}", active.id)))
}

fn removal_delay(mdm: &crate::config::MdmConfig) -> chrono::Duration {
    chrono::Duration::minutes(i64::from(mdm.wifi_profile_removal_minutes))
}

/// The follow-up that removes a disconnect-Wi-Fi profile again after
/// `wifi_profile_removal_minutes` (a durable row: it survives restarts).
fn wifi_removal(
    row: &StoredAction,
    device: &StoredDevice,
    integration: &crate::sync::Integration,
    mdm: &crate::config::MdmConfig,
) -> NewAction {
    NewAction {
        signal_level: None,
        tenant_id: row.tenant_id.clone(),
        event_id: None,
        device_id: Some(device.id),
        mdm_id: Some(integration.mdm_id),
        kind: ActionRecordKind::RemoveWifiProfile,
        parent_action_id: Some(row.id),
        state: ActionState::Pending,
        reason: Some(format!(
            "removes the disconnect-Wi-Fi profile of action {} after {} minutes",
            row.id, mdm.wifi_profile_removal_minutes
        )),
        next_attempt_at: Some(Utc::now() + removal_delay(mdm)),
    }
}

/// Moves a row to `sent` with the MDM's receipt (and records `follow_up`
/// in the same transaction).
async fn record_sent(
    state: &Dispatcher,
    row: &StoredAction,
    mdm: &str,
    receipt: &mtd_adapter::Receipt,
    started: std::time::Instant,
    follow_up: Option<NewAction>,
) -> Result<(), StoreError> {
    let receipt_json = serde_json::to_value(receipt).unwrap_or_default();
    let note = format!(
        "sent to MDM `{mdm}` (attempt {}, {} ms)",
        row.attempts,
        started.elapsed().as_millis()
    );
    transition_with(
        state,
        row.id,
        Transition::new(row.state, ActionState::Sent, note).receipt(receipt_json),
        follow_up,
    )
    .await?;
    Ok(())
}

async fn record_failure(
    state: &Dispatcher,
    settings: &DispatchSettings,
    row: &StoredAction,
    e: AdapterError,
) -> Result<(), StoreError> {
    let age = (Utc::now() - row.created_at).to_std().unwrap_or_default();
    let error = e.to_string();
    if matches!(e, AdapterError::NoAnswer(_)) && !is_idempotent(row.kind) {
        // At most once: the MDM may have wiped the device already.
        tracing::error!(error = %error, "No answer to a wipe: it may have reached the MDM and is not sent again; check the MDM console");
        let t = Transition::new(
            row.state,
            ActionState::Dead,
            "no answer from the MDM: it may have acted on the command, which is not idempotent, so it is not sent again; check the MDM console",
        )
        .reason(error.clone())
        .last_error(error);
        transition(state, row.id, t).await?;
    } else if !e.is_retryable() {
        tracing::error!(error_class = e.class(), error = %error, "The MDM refused the action; it is not retried: an operator must act");
        let t = Transition::new(
            row.state,
            ActionState::Dead,
            "permanent refusal by the MDM: not retried",
        )
        .reason(error.clone())
        .last_error(error);
        transition(state, row.id, t).await?;
    } else if row.attempts >= settings.max_attempts || age >= settings.give_up_after {
        tracing::error!(attempts = row.attempts, error = %error, "Gave up sending the action: an operator must act");
        let reason = format!(
            "gave up after {} attempts over {} minutes: {error}",
            row.attempts,
            age.as_secs() / 60
        );
        let t = Transition::new(row.state, ActionState::Dead, "gave up")
            .reason(reason)
            .last_error(error);
        transition(state, row.id, t).await?;
    } else {
        let delay = retry_delay(settings, row.attempts, e.retry_after());
        tracing::warn!(
            attempt = row.attempts,
            error_class = e.class(),
            retry_in_ms = delay.as_millis() as u64,
            "Action not delivered; retrying later"
        );
        let due = Utc::now()
            + chrono::Duration::from_std(delay).unwrap_or_else(|_| chrono::Duration::minutes(15));
        let note = format!(
            "attempt {} failed ({}); retry at {due}",
            row.attempts,
            e.class()
        );
        let t = Transition::new(row.state, ActionState::Failed, note)
            .last_error(error)
            .next_attempt_at(due);
        transition(state, row.id, t).await?;
    }
    Ok(())
}

/// The wait before the next attempt: the one back-off ([`crate::backoff`]),
/// never shorter than the MDM's `Retry-After`.
pub fn retry_delay(
    settings: &DispatchSettings,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Duration {
    crate::backoff::delay(
        settings.retry_base,
        settings.retry_cap,
        attempts,
        retry_after,
    )
}

/// Two records are not the same device if a hardware identifier both know differs.
fn identity_changed(stored: &StoredDevice, fresh: &Device) -> Option<String> {
    let pairs = [
        ("udid", &stored.identifiers.udid, &fresh.identifiers.udid),
        (
            "serial",
            &stored.identifiers.serial,
            &fresh.identifiers.serial,
        ),
        ("imei", &stored.identifiers.imei, &fresh.identifiers.imei),
    ];
    pairs.iter().find_map(|(name, a, b)| match (a, b) {
        (Some(a), Some(b)) if a != b => Some(format!(
            "the MDM's record {} now has another {name}: not the same device any more (checked right before sending)",
            stored.mdm_device_id
        )),
        _ => None,
    })
}

fn to_adapter_device(d: &StoredDevice) -> Device {
    d.to_adapter_device()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_honours_retry_after() {
        let s = DispatchSettings {
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(60),
            ..Default::default()
        };
        let first = retry_delay(&s, 1, None);
        assert!(first >= Duration::from_millis(1500) && first <= Duration::from_millis(2500));
        let fifth = retry_delay(&s, 5, None);
        assert!(fifth >= Duration::from_secs(24) && fifth <= Duration::from_secs(40));
        assert!(retry_delay(&s, 30, None) <= Duration::from_secs(75));
        assert!(retry_delay(&s, 1, Some(Duration::from_secs(9))) >= Duration::from_secs(9));
    }

    #[test]
    fn only_lock_and_profile_calls_are_retried_after_a_crash() {
        assert!(is_idempotent(ActionRecordKind::Lock));
        assert!(is_idempotent(ActionRecordKind::RemoveWifiProfile));
        assert!(!is_idempotent(ActionRecordKind::Wipe));
        assert!(!is_idempotent(ActionRecordKind::EnterpriseWipe));
    }

    #[test]
    fn the_dispatch_section_of_the_config_sets_the_limits_and_keeps_the_delays() {
        let config = crate::config::DispatchConfig {
            max_attempts: 3,
            give_up_after: Duration::from_secs(600),
            per_mdm_concurrency: 9,
        };
        let s = DispatchSettings::from_config(&config);
        assert_eq!(
            (s.max_attempts, s.give_up_after, s.per_mdm_concurrency),
            (3, Duration::from_secs(600), 9)
        );
        let d = DispatchSettings::default();
        assert_eq!(
            (s.retry_base, s.retry_cap, s.poll),
            (d.retry_base, d.retry_cap, d.poll)
        );
        let defaults = DispatchSettings::from_config(&crate::config::DispatchConfig::default());
        assert_eq!(
            (
                defaults.max_attempts,
                defaults.give_up_after,
                defaults.per_mdm_concurrency
            ),
            (d.max_attempts, d.give_up_after, d.per_mdm_concurrency),
            "the config's defaults are the dispatcher's"
        );
    }
}
