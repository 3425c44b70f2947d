//! The sync engine: full syncs and on-demand device lookups, for every MDM of
//! every tenant.
//!
//! One worker per (tenant, MDM) takes full-sync requests from one bounded
//! channel (sent by the scheduler, the admin API, the `sync` command and once
//! at start), so two full syncs of one MDM never overlap; requests that arrive
//! during a run are coalesced into one follow-up run (atuin's sync loop). The
//! schedule is one timer task per integration on tokio's monotonic clock,
//! with a random offset (a wall-clock jump cannot stop it; see
//! `worker::next_due`).
//! On-demand lookups (agent activation, an event for an unknown device) do
//! not queue behind a running full sync: they go straight to the adapters
//! through [`ondemand`], with single flight and a short miss cache.

pub mod ondemand;
pub mod pii;
mod run;
mod worker;

pub use crate::adapters::{Backoff, IntegrationHealth};
pub use ondemand::{LookupError, LookupOutcome};
pub use run::RunReport;

use crate::shutdown::CancellationToken;
use crate::shutdown::Tasks;
use crate::store::{MdmId, Store, StoreError, SyncTrigger};
use mtd_adapter::{DeviceIdentifier, MdmAdapter, MdmKind};
use pii::KeyedMasker;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// One MDM of one tenant, as the engine drives it.
#[derive(Debug)]
pub struct Integration {
    pub tenant_id: String,
    /// The store's id of the integration.
    pub mdm_id: i64,
    pub name: String,
    pub kind: MdmKind,
    pub adapter: Arc<dyn MdmAdapter>,
    /// `false`: no scheduled sync (the initial sync, admin-triggered and
    /// on-demand syncs still run).
    pub background_sync: bool,
    /// `false` (`enabled = false`): configured but out of syncs, lookups and
    /// actions; `test-connection` still works.
    pub enabled: bool,
    /// `[mdm.risk_signal]` enabled: the attribute or tag prefix. A full sync
    /// then repairs levels the MDM holds that differ from the stored ones.
    pub risk_signal: Option<String>,
    /// Set when the MDM has `mask_pii = true`.
    pub masker: Option<Arc<KeyedMasker>>,
    /// Back-offs in effect, for the status API (shared with the adapter's instrumentation).
    pub health: Arc<IntegrationHealth>,
    /// The groups of this MDM that policy rules name (as the MDM names
    /// them), warned about once each when a finished sync did not list
    /// them. A reload that keeps the integration replaces them.
    pub rule_groups: RuleGroups,
}

/// The groups of one MDM that a tenant's rules are scoped to, and those
/// already warned about as missing.
#[derive(Debug, Default)]
pub struct RuleGroups {
    inner: std::sync::Mutex<(Vec<String>, std::collections::HashSet<String>)>,
}

impl RuleGroups {
    /// The groups of `mdm` named by the rules of `tenant`, without the MDM's
    /// name (a rule group belongs to the MDM with the longest name it starts
    /// with, followed by a space, as check-config resolves it).
    pub fn of(tenant: &crate::config::TenantConfig, mdm: &str) -> Self {
        let groups = Self::named(tenant, mdm);
        RuleGroups {
            inner: std::sync::Mutex::new((groups, Default::default())),
        }
    }

    fn named(tenant: &crate::config::TenantConfig, mdm: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in tenant.policy.rules.iter().flat_map(|r| r.groups.iter()) {
            let owner = tenant
                .mdms
                .iter()
                .filter(|m| g.starts_with(&format!("{} ", m.name)))
                .max_by_key(|m| m.name.len());
            if owner.is_some_and(|m| m.name == mdm) {
                let name = g[mdm.len() + 1..].to_string();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    /// Takes the groups of a reloaded config; warnings start afresh.
    pub fn replace(&self, tenant: &crate::config::TenantConfig, mdm: &str) {
        let groups = Self::named(tenant, mdm);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner = (groups, Default::default());
    }

    /// The named groups not in `listed` that were not warned about yet;
    /// they count as warned from now on.
    pub(crate) fn newly_missing(&self, listed: &[String]) -> Vec<String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (groups, warned) = &mut *inner;
        let missing: Vec<String> = groups
            .iter()
            .filter(|g| !listed.contains(g) && !warned.contains(*g))
            .cloned()
            .collect();
        warned.extend(missing.iter().cloned());
        missing
    }
}

impl Integration {
    /// Stores a device an MDM call just returned outside a full sync (an
    /// on-demand lookup, the lookup before a destructive action), under this
    /// MDM's `mask_pii` exactly as a sync stores it: one path, so no caller
    /// can store a clear device name or user by forgetting the masker.
    pub(crate) async fn store_found_device(
        &self,
        store: &crate::store::Store,
        mut device: mtd_adapter::Device,
    ) -> Result<crate::store::DeviceUpsert, crate::store::StoreError> {
        let pii = match &self.masker {
            Some(m) => {
                m.mask_device(&mut device);
                crate::store::Pii::Masked(m.as_ref())
            }
            None => crate::store::Pii::Clear,
        };
        store.store_found_device(self.mdm_id, &device, pii).await
    }
}

/// Engine settings, from `[sync]` of the main config.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// `None`: no scheduled sync (the initial sync at start still runs).
    pub full_sync_every: Option<Duration>,
    pub max_removal_percent: u8,
    /// First retry delay after a failed run; doubles per failure, with jitter.
    pub retry_base: Duration,
    /// The longest retry delay.
    pub retry_cap: Duration,
    /// How long "no MDM knows this device" is remembered.
    pub miss_ttl: Duration,
    /// The largest random offset of the schedule per integration.
    pub max_schedule_offset: Duration,
    /// Sync each enabled MDM when the engine starts (`[sync] initial_sync`,
    /// default true). An MDM added or enabled by a reload is synced either
    /// way. Off for harnesses that fill the store through lookups.
    pub initial_sync: bool,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            full_sync_every: Some(Duration::from_secs(4 * 3600)),
            max_removal_percent: 20,
            retry_base: Duration::from_secs(30),
            retry_cap: Duration::from_secs(30 * 60),
            miss_ttl: Duration::from_secs(60),
            max_schedule_offset: Duration::from_secs(300),
            initial_sync: true,
        }
    }
}

/// Progress of a running full sync: (what is being listed, how many so far).
pub type ProgressFn = Arc<dyn Fn(&'static str, u64) + Send + Sync>;

/// A request to a worker. `reply` gets the report of the run that served it.
pub(crate) struct FullSyncRequest {
    pub trigger: SyncTrigger,
    pub reply: Option<oneshot::Sender<RunReport>>,
    pub progress: Option<ProgressFn>,
}

/// What became of a full-sync request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// A run will start for it.
    Queued,
    /// A run is already queued behind the current one; this request is served by it.
    Coalesced,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("tenant `{0}` is not configured")]
    UnknownTenant(String),
    #[error("tenant `{tenant}` has no MDM named `{mdm}`")]
    UnknownMdm { tenant: String, mdm: String },
    #[error("MDM `{mdm}` of tenant `{tenant}` is disabled (enabled = false)")]
    Disabled { tenant: String, mdm: String },
    #[error("the sync engine is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Worker {
    integration: Arc<Integration>,
    tx: mpsc::Sender<FullSyncRequest>,
    /// Taken by the task that runs the worker.
    rx: std::sync::Mutex<Option<mpsc::Receiver<FullSyncRequest>>>,
}

impl Worker {
    fn new(integration: Arc<Integration>) -> Arc<Worker> {
        let (tx, rx) = mpsc::channel(QUEUE);
        Arc::new(Worker {
            integration,
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        })
    }

    fn key(&self) -> (&str, &str) {
        (&self.integration.tenant_id, &self.integration.name)
    }
}

/// The engine; cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct SyncEngine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    settings: SyncSettings,
    /// In config order, per tenant; replaced by [`SyncEngine::apply`] on a reload.
    workers: std::sync::RwLock<Vec<Arc<Worker>>>,
    ondemand: ondemand::OnDemand,
    /// Set by `start`: where workers added by a reload are spawned.
    running: std::sync::Mutex<Option<Running>>,
    /// One per MDM (store id): a worker replaced by a reload finishes its run
    /// before the new one starts, so two full syncs of an MDM never overlap.
    run_locks: std::sync::Mutex<HashMap<MdmId, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Clone)]
struct Running {
    cancel: CancellationToken,
    tasks: Tasks,
    /// Initial syncs and the schedule (`false` for the `sync` command).
    background: bool,
    /// `full_sync_every`, when scheduled syncs run in this process.
    every: Option<Duration>,
    /// The integrations (tenant, MDM name) that have a schedule task.
    scheduled: Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("integrations", &self.workers().len())
            .finish()
    }
}

/// Requests waiting per worker before new ones are coalesced: one follow-up
/// run serves them all, so a small bound loses nothing.
const QUEUE: usize = 4;

/// What a reload changed in the engine.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Integrations new or rebuilt (their config changed): new workers.
    pub started: Vec<(String, String)>,
    /// Integrations gone: their workers finish the run in progress and stop.
    pub stopped: Vec<(String, String)>,
    pub kept: usize,
}

impl SyncEngine {
    /// Builds the engine; nothing runs until [`SyncEngine::start`].
    pub fn new(store: Store, settings: SyncSettings, integrations: Vec<Integration>) -> SyncEngine {
        let integrations: Vec<Arc<Integration>> = integrations.into_iter().map(Arc::new).collect();
        let workers = integrations.iter().cloned().map(Worker::new).collect();
        let ondemand = ondemand::OnDemand::new(store.clone(), integrations, settings.miss_ttl);
        SyncEngine {
            inner: Arc::new(Inner {
                store,
                settings,
                workers: std::sync::RwLock::new(workers),
                ondemand,
                running: std::sync::Mutex::new(None),
                run_locks: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    fn workers(&self) -> Vec<Arc<Worker>> {
        self.inner
            .workers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Spawns one worker per integration and the schedule, and queues the
    /// initial full sync of every MDM with `background_sync`. Everything stops
    /// when `cancel` fires; the tasks are tracked by `tasks` for the drain.
    pub async fn start(&self, cancel: CancellationToken, tasks: &Tasks) {
        self.start_with(cancel, tasks, true).await
    }

    /// Only the workers: no initial sync, no schedule (the `sync` command).
    pub async fn start_workers(&self, cancel: CancellationToken, tasks: &Tasks) {
        self.start_with(cancel, tasks, false).await
    }

    async fn start_with(&self, cancel: CancellationToken, tasks: &Tasks, background: bool) {
        let running = Running {
            cancel,
            tasks: tasks.clone(),
            background,
            every: self.inner.settings.full_sync_every.filter(|_| background),
            scheduled: Default::default(),
        };
        *self.inner.running.lock().expect("running lock") = Some(running.clone());
        let initial = self
            .inner
            .settings
            .initial_sync
            .then_some(SyncTrigger::Initial);
        for w in self.workers() {
            self.launch(&w, &running, initial).await;
        }
        if let Some(every) = running.every {
            tracing::info!(every_seconds = every.as_secs(), "Full sync scheduled");
        }
    }

    /// Spawns the task of a worker (once), queues its first sync (if any), schedules it.
    async fn launch(&self, w: &Arc<Worker>, running: &Running, first: Option<SyncTrigger>) {
        let Some(rx) = w.rx.lock().expect("worker receiver lock").take() else {
            return; // launched before: the task already owns the receiver
        };
        let run_lock = self
            .inner
            .run_locks
            .lock()
            .expect("run lock map")
            .entry(MdmId(w.integration.mdm_id))
            .or_default()
            .clone();
        let ctx = worker::WorkerCtx {
            integration: w.integration.clone(),
            store: self.inner.store.clone(),
            settings: self.inner.settings.clone(),
            run_lock,
        };
        let (tenant, name) = w.key();
        running.tasks.spawn_watched(
            format!("the sync worker of {tenant}/{name}"),
            worker::run(ctx, rx, running.cancel.clone()),
        );
        if !running.background {
            return;
        }
        // The initial sync of an MDM added or enabled always runs (the BCDM
        // guide's "Finish"); `background_sync = false` turns off the schedule only.
        if let Some(first) = first.filter(|_| w.integration.enabled) {
            let _ = self.enqueue(w, first, None, None);
        }
        if let Some(every) = running.every {
            let (tenant, name) = w.key();
            let key = (tenant.to_string(), name.to_string());
            if running
                .scheduled
                .lock()
                .expect("schedule set")
                .insert(key.clone())
            {
                running.tasks.spawn_watched(
                    format!("the sync schedule of {tenant}/{name}"),
                    worker::schedule_one(
                        Arc::downgrade(&self.inner),
                        key,
                        every,
                        self.inner.settings.max_schedule_offset,
                        running.cancel.clone(),
                    ),
                );
            }
        }
    }

    /// Replaces the integrations after a reload. An integration passed as the
    /// same `Arc` as before keeps its worker (and its queued requests); a new
    /// one gets a new worker, which starts with an initial sync when the engine
    /// runs in the background; a worker whose integration is gone finishes the
    /// run in progress and stops (its channel closes when it is dropped here).
    pub async fn apply(&self, integrations: Vec<Arc<Integration>>) -> Applied {
        let mut applied = Applied::default();
        let launch: Vec<Arc<Worker>>;
        {
            let mut workers = self
                .inner
                .workers
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let old = std::mem::take(&mut *workers);
            let mut fresh = Vec::new();
            for i in &integrations {
                match old.iter().find(|w| Arc::ptr_eq(&w.integration, i)) {
                    Some(w) => {
                        applied.kept += 1;
                        workers.push(w.clone());
                    }
                    None => {
                        let w = Worker::new(i.clone());
                        applied.started.push((i.tenant_id.clone(), i.name.clone()));
                        fresh.push(w.clone());
                        workers.push(w);
                    }
                }
            }
            for w in &old {
                if !workers.iter().any(|n| Arc::ptr_eq(n, w)) {
                    let (tenant, name) = w.key();
                    applied.stopped.push((tenant.to_string(), name.to_string()));
                }
            }
            launch = fresh;
        }
        self.inner.ondemand.set_integrations(integrations);
        let running = self.inner.running.lock().expect("running lock").clone();
        if let Some(running) = running {
            // Added, changed or enabled by a reload: synced at once.
            for w in &launch {
                self.launch(w, &running, Some(SyncTrigger::Initial)).await;
            }
        }
        applied
    }

    /// The integrations, in config order (a snapshot: a reload may change them).
    pub fn integrations(&self) -> impl Iterator<Item = Arc<Integration>> {
        self.workers().into_iter().map(|w| w.integration.clone())
    }

    /// The integration of a tenant's MDM, by the store's id.
    pub fn integration(&self, tenant: &str, mdm_id: i64) -> Option<Arc<Integration>> {
        self.workers()
            .into_iter()
            .find(|w| w.integration.tenant_id == tenant && w.integration.mdm_id == mdm_id)
            .map(|w| w.integration.clone())
    }

    /// The store's ids of a tenant's MDMs that take risk signals: enabled,
    /// with `[mdm.risk_signal] enabled = true`.
    pub fn risk_signal_mdms(&self, tenant: &crate::config::TenantConfig) -> Vec<i64> {
        self.workers()
            .into_iter()
            .filter(|w| w.integration.tenant_id == tenant.id && w.integration.enabled)
            .filter(|w| {
                tenant
                    .mdms
                    .iter()
                    .any(|m| m.name == w.integration.name && m.risk_signal.is_some())
            })
            .map(|w| w.integration.mdm_id)
            .collect()
    }

    /// The integration (adapter) and the `[[mdm]]` config of a device's MDM.
    pub fn mdm_of<'a>(
        &self,
        tenant: &'a crate::config::TenantConfig,
        mdm_id: i64,
    ) -> Option<(Arc<Integration>, &'a crate::config::MdmConfig)> {
        let integration = self.integration(&tenant.id, mdm_id)?;
        let config = tenant.mdms.iter().find(|m| m.name == integration.name)?;
        Some((integration, config))
    }

    fn workers_of(&self, tenant: &str, mdm: Option<&str>) -> Result<Vec<Arc<Worker>>, SyncError> {
        let of_tenant: Vec<Arc<Worker>> = self
            .workers()
            .into_iter()
            .filter(|w| w.integration.tenant_id == tenant)
            .collect();
        if of_tenant.is_empty() {
            return Err(SyncError::UnknownTenant(tenant.to_string()));
        }
        match mdm {
            // A disabled MDM is left out of a tenant's sync.
            None => Ok(of_tenant
                .into_iter()
                .filter(|w| w.integration.enabled)
                .collect()),
            Some(name) => {
                let one: Vec<Arc<Worker>> = of_tenant
                    .into_iter()
                    .filter(|w| w.integration.name == name)
                    .collect();
                if one.is_empty() {
                    Err(SyncError::UnknownMdm {
                        tenant: tenant.to_string(),
                        mdm: name.to_string(),
                    })
                } else if one.iter().all(|w| !w.integration.enabled) {
                    Err(SyncError::Disabled {
                        tenant: tenant.to_string(),
                        mdm: name.to_string(),
                    })
                } else {
                    Ok(one)
                }
            }
        }
    }

    fn enqueue(
        &self,
        w: &Worker,
        trigger: SyncTrigger,
        reply: Option<oneshot::Sender<RunReport>>,
        progress: Option<ProgressFn>,
    ) -> Result<Requested, SyncError> {
        enqueue(&w.tx, trigger, reply, progress)
    }

    /// Asks for a full sync of a tenant's MDMs (or one of them) without waiting.
    pub fn request_full_sync(
        &self,
        tenant: &str,
        mdm: Option<&str>,
        trigger: SyncTrigger,
    ) -> Result<Vec<(String, Requested)>, SyncError> {
        self.workers_of(tenant, mdm)?
            .into_iter()
            .map(|w| {
                Ok((
                    w.integration.name.clone(),
                    self.enqueue(&w, trigger, None, None)?,
                ))
            })
            .collect()
    }

    /// Runs a full sync of a tenant's MDMs (or one) and waits for the reports.
    /// A request that lands during a run is served by the follow-up run.
    pub async fn full_sync_now(
        &self,
        tenant: &str,
        mdm: Option<&str>,
        trigger: SyncTrigger,
        progress: Option<ProgressFn>,
    ) -> Result<Vec<RunReport>, SyncError> {
        let mut waits = Vec::new();
        for w in self.workers_of(tenant, mdm)? {
            let (tx, rx) = oneshot::channel();
            w.tx.send(FullSyncRequest {
                trigger,
                reply: Some(tx),
                progress: progress.clone(),
            })
            .await
            .map_err(|_| SyncError::ShuttingDown)?;
            waits.push(rx);
        }
        let mut reports = Vec::new();
        for rx in waits {
            reports.push(rx.await.map_err(|_| SyncError::ShuttingDown)?);
        }
        Ok(reports)
    }

    /// Finds a device by the identifiers an agent gave: in the store, else at
    /// the tenant's MDMs (on-demand device sync).
    pub async fn lookup(
        &self,
        tenant: &str,
        ids: &[DeviceIdentifier],
    ) -> Result<LookupOutcome, LookupError> {
        self.inner.ondemand.lookup(tenant, ids).await
    }

    /// The device if the store knows it by one of the identifiers; no MDM is asked.
    pub async fn find_known(
        &self,
        tenant: &str,
        ids: &[DeviceIdentifier],
    ) -> Result<Option<crate::store::StoredDevice>, StoreError> {
        self.inner.ondemand.find_known(tenant, ids).await
    }
}

fn enqueue(
    tx: &mpsc::Sender<FullSyncRequest>,
    trigger: SyncTrigger,
    reply: Option<oneshot::Sender<RunReport>>,
    progress: Option<ProgressFn>,
) -> Result<Requested, SyncError> {
    match tx.try_send(FullSyncRequest {
        trigger,
        reply,
        progress,
    }) {
        Ok(()) => Ok(Requested::Queued),
        // Full: runs are already queued behind the current one and will
        // pick up everything this request would have; nothing is lost.
        Err(mpsc::error::TrySendError::Full(_)) => Ok(Requested::Coalesced),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(SyncError::ShuttingDown),
    }
}

/// Builds the per-tenant maskers for the MDMs with `mask_pii` (the key lives in the store).
pub async fn masker_for(store: &Store, tenant: &str) -> Result<Arc<KeyedMasker>, StoreError> {
    Ok(Arc::new(KeyedMasker::new(store.pii_key(tenant).await?)))
}

/// Shared by the tests of the engine.
pub fn settings_from(config: &crate::config::SyncConfig) -> SyncSettings {
    SyncSettings {
        full_sync_every: config.full_sync_every,
        max_removal_percent: config.max_removal_percent,
        initial_sync: config.initial_sync,
        ..SyncSettings::default()
    }
}

/// Builds the engine's integrations from the config: an adapter per MDM
/// through the registry, the store's ids, and the maskers.
pub async fn integrations_from(
    config: &crate::config::Config,
    store: &Store,
    refs: &[crate::store::IntegrationRef],
) -> Result<Vec<Integration>, BuildIntegrationError> {
    let mut out = Vec::new();
    for tenant in &config.tenants {
        for mdm in &tenant.mdms {
            out.push(integration_for(tenant, mdm, store, refs).await?);
        }
    }
    Ok(out)
}

/// The integration of one `[[mdm]]`, with a new adapter.
pub async fn integration_for(
    tenant: &crate::config::TenantConfig,
    mdm: &crate::config::MdmConfig,
    store: &Store,
    refs: &[crate::store::IntegrationRef],
) -> Result<Integration, BuildIntegrationError> {
    let health = Arc::new(IntegrationHealth::default());
    let adapter =
        crate::adapters::build_observed(tenant, mdm, Some(health.clone())).map_err(|e| {
            BuildIntegrationError::Adapter {
                tenant: tenant.id.clone(),
                mdm: mdm.name.clone(),
                source: e,
            }
        })?;
    let mdm_id = refs
        .iter()
        .find(|r| r.tenant_id == tenant.id && r.name == mdm.name)
        .map(|r| r.id)
        .ok_or_else(|| BuildIntegrationError::NotRecorded {
            tenant: tenant.id.clone(),
            mdm: mdm.name.clone(),
        })?;
    let masker = if mdm.mask_pii {
        Some(masker_for(store, &tenant.id).await?)
    } else {
        None
    };
    Ok(Integration {
        tenant_id: tenant.id.clone(),
        mdm_id,
        name: mdm.name.clone(),
        kind: mdm.kind,
        adapter,
        background_sync: mdm.background_sync,
        enabled: mdm.enabled,
        risk_signal: mdm.risk_signal.as_ref().map(|r| r.name.clone()),
        masker,
        health,
        rule_groups: RuleGroups::of(tenant, &mdm.name),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BuildIntegrationError {
    #[error("tenant `{tenant}`, MDM `{mdm}`: {source}")]
    Adapter {
        tenant: String,
        mdm: String,
        source: mtd_adapter::AdapterError,
    },
    #[error("tenant `{tenant}`, MDM `{mdm}` is not in the store (a bug)")]
    NotRecorded { tenant: String, mdm: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::RuleGroups;

    /// A tenant with two MDMs whose names share a prefix, and rules naming
    /// groups of both.
    fn tenant() -> (tempfile::TempDir, crate::config::TenantConfig) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tenants.d")).unwrap();
        std::fs::write(dir.path().join("c.toml"), "[store]\npath = \"x.db\"\n").unwrap();
        std::fs::write(
            dir.path().join("tenants.d/acme.toml"),
            "id = \"acme\"\nagent_secret = \"0123456789abcdef0123\"\n\
             [[mdm]]\nname = \"Acme\"\nkind = \"airwatch\"\nurl = \"https://aw.example\"\n\
             [mdm.credentials]\nusername = \"u\"\npassword = \"p\"\napi_key = \"k\"\n\
             [[mdm]]\nname = \"Acme SOTI\"\nkind = \"soti\"\nurl = \"https://s.example/MobiControl\"\n\
             [mdm.credentials]\nclient_id = \"c\"\nclient_secret = \"s\"\nusername = \"u\"\npassword = \"p\"\n\
             [[policy.rule]]\nthreat = \"*\"\ngroups = ['Acme SOTI \\\\Acme\\Sales', 'Acme Berlin']\naction = \"none\"\n\
             [[policy.rule]]\nthreat = \"app.*\"\ngroups = ['Acme SOTI \\\\Acme\\Sales', 'Acme SOTI \\\\Acme\\Ops']\naction = \"none\"\n",
        )
        .unwrap();
        let config = crate::config::load(&dir.path().join("c.toml")).unwrap();
        (dir, config.tenants[0].clone())
    }

    #[test]
    fn a_missing_rule_group_is_reported_once_per_mdm_until_a_reload() {
        let (_dir, tenant) = tenant();
        let soti = RuleGroups::of(&tenant, "Acme SOTI");
        let aw = RuleGroups::of(&tenant, "Acme");
        // Each group goes to the MDM with the longest name it starts with.
        assert_eq!(aw.newly_missing(&[]), ["Berlin"]);
        let listed = [r"\\Acme\Sales".to_string()];
        assert_eq!(soti.newly_missing(&listed), [r"\\Acme\Ops"]);
        assert!(soti.newly_missing(&listed).is_empty(), "warned once");
        assert!(aw.newly_missing(&[]).is_empty());
        soti.replace(&tenant, "Acme SOTI");
        assert_eq!(soti.newly_missing(&[]), [r"\\Acme\Sales", r"\\Acme\Ops"]);
    }
}
