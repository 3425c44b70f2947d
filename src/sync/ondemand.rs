//! On-demand device sync: find a device by the identifiers an agent gave, in
//! the store first, else at the tenant's MDMs.
//!
//! Concurrent requests for the same identifiers share one lookup (single
//! flight: a shared future per key), and a miss is remembered for `miss_ttl`,
//! so a flood of events from an unknown device does not become a flood of MDM
//! calls. With a collision (two live devices sharing the identifier) the most
//! recently checked-in one is taken, and the decision is logged.
//! Each lookup runs as a task of its own, not in its callers: work that holds
//! an MDM's token lock must finish even when the agent that asked has gone.

use super::Integration;
use crate::store::{StoreError, StoredDevice};
use futures::future::{BoxFuture, FutureExt, Shared};
use mtd_adapter::DeviceIdentifier;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub enum LookupOutcome {
    /// Known (from the store, or just stored from an MDM).
    Found(Box<StoredDevice>),
    /// No MDM of the tenant knows the device.
    NotEnrolled,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// An MDM could not answer; the device may exist there.
    #[error("MDM `{mdm}` could not be asked: {message}")]
    Unavailable {
        mdm: String,
        retry_after: Option<Duration>,
        message: String,
    },
    /// The store failed; [`StoreError::is_unavailable`] tells "try again
    /// later" from a bug. Shared: every caller of one lookup gets it.
    #[error("store: {0}")]
    Store(#[source] Arc<StoreError>),
    /// The lookup's task panicked (a bug).
    #[error("the lookup task failed: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
    #[error("no identifier given")]
    NoIdentifier,
}

impl From<StoreError> for LookupError {
    fn from(e: StoreError) -> Self {
        LookupError::Store(Arc::new(e))
    }
}

type SharedLookup = Shared<BoxFuture<'static, Result<LookupOutcome, LookupError>>>;

pub(crate) struct OnDemand {
    state: Arc<State>,
}

struct State {
    store: crate::store::Store,
    /// Per tenant, in config order; replaced by a reload.
    by_tenant: std::sync::RwLock<HashMap<String, Vec<Arc<Integration>>>>,
    inflight: Mutex<HashMap<String, SharedLookup>>,
    misses: Mutex<MissCache>,
}

impl State {
    /// Whether a lookup of `key` found nothing at any MDM within the TTL.
    fn missed(&self, key: &str) -> bool {
        self.misses.lock().expect("miss cache lock").hit(key)
    }
}

/// "No MDM knows these identifiers", remembered for a while, in a bounded
/// map: agents can send any number of made-up identifiers, and memory must
/// not grow with them. Full, it forgets expired entries, then the oldest.
struct MissCache {
    ttl: Duration,
    cap: usize,
    at: HashMap<String, Instant>,
}

/// The most misses remembered at once (about 1 MiB of keys).
const MAX_MISSES: usize = 10_000;

impl MissCache {
    fn new(ttl: Duration, cap: usize) -> Self {
        MissCache {
            ttl,
            cap,
            at: HashMap::new(),
        }
    }

    /// Whether `key` missed within the TTL (an expired entry is dropped).
    fn hit(&mut self, key: &str) -> bool {
        match self.at.get(key) {
            Some(at) if at.elapsed() < self.ttl => true,
            Some(_) => {
                self.at.remove(key);
                false
            }
            None => false,
        }
    }

    fn insert(&mut self, key: String) {
        if self.at.len() >= self.cap && !self.at.contains_key(&key) {
            let ttl = self.ttl;
            self.at.retain(|_, at| at.elapsed() < ttl);
            if self.at.len() >= self.cap {
                if let Some(oldest) = self
                    .at
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
                {
                    self.at.remove(&oldest);
                }
            }
        }
        self.at.insert(key, Instant::now());
    }

    fn clear(&mut self) {
        self.at.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.at.len()
    }
}

impl OnDemand {
    pub fn new(
        store: crate::store::Store,
        integrations: Vec<Arc<Integration>>,
        miss_ttl: Duration,
    ) -> Self {
        OnDemand {
            state: Arc::new(State {
                store,
                by_tenant: std::sync::RwLock::new(by_tenant(integrations)),
                inflight: Mutex::new(HashMap::new()),
                misses: Mutex::new(MissCache::new(miss_ttl, MAX_MISSES)),
            }),
        }
    }

    /// The integrations after a reload. Misses are forgotten: a new MDM may
    /// know a device the old ones did not.
    pub fn set_integrations(&self, integrations: Vec<Arc<Integration>>) {
        *self
            .state
            .by_tenant
            .write()
            .unwrap_or_else(|e| e.into_inner()) = by_tenant(integrations);
        self.state.misses.lock().expect("miss cache lock").clear();
    }

    /// The device if the store knows it; no MDM is asked.
    pub async fn find_known(
        &self,
        tenant: &str,
        ids: &[DeviceIdentifier],
    ) -> Result<Option<StoredDevice>, StoreError> {
        find_in_store(&self.state.store, tenant, ids).await
    }

    pub async fn lookup(
        &self,
        tenant: &str,
        ids: &[DeviceIdentifier],
    ) -> Result<LookupOutcome, LookupError> {
        if ids.is_empty() {
            return Err(LookupError::NoIdentifier);
        }
        if let Some(found) = find_in_store(&self.state.store, tenant, ids).await? {
            return Ok(LookupOutcome::Found(Box::new(found)));
        }
        self.fly(tenant, ids).await
    }

    /// After a store miss: a remembered miss, else the one lookup in flight
    /// for these identifiers (started here if there is none).
    async fn fly(
        &self,
        tenant: &str,
        ids: &[DeviceIdentifier],
    ) -> Result<LookupOutcome, LookupError> {
        let mut sorted: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        sorted.sort();
        let key = format!("{tenant}|{}", sorted.join("|"));
        if self.state.missed(&key) {
            return Ok(LookupOutcome::NotEnrolled);
        }
        let shared = {
            let mut inflight = self.state.inflight.lock().expect("in-flight lock");
            inflight
                .entry(key.clone())
                .or_insert_with(|| {
                    let state = self.state.clone();
                    let (tenant, ids, key) = (tenant.to_string(), ids.to_vec(), key.clone());
                    // A task of its own: the lookup runs to its end even when
                    // every caller has gone (an agent that timed out), so it
                    // never sits unpolled holding an adapter's token lock or
                    // rate limiter, and it leaves the in-flight map itself.
                    let task = tokio::spawn(async move {
                        // Leaves the in-flight map however the lookup ends,
                        // a panic included: a key left behind would answer
                        // every later lookup of the device with that failure.
                        let _leave = LeaveInflight {
                            state: state.clone(),
                            key: key.clone(),
                        };
                        // The caller's store and miss checks ran before it
                        // took the map's lock: another lookup of the same
                        // identifiers may have stored the device, or
                        // remembered the miss, and left the map in between.
                        // Check both again before asking any MDM.
                        let known = match find_in_store(&state.store, &tenant, &ids).await {
                            Ok(Some(found)) => Some(Ok(LookupOutcome::Found(Box::new(found)))),
                            Ok(None) => {
                                state.missed(&key).then_some(Ok(LookupOutcome::NotEnrolled))
                            }
                            Err(e) => Some(Err(e.into())),
                        };
                        if let Some(result) = known {
                            return result;
                        }
                        let result = ask_mdms(&state, &tenant, &ids).await;
                        if matches!(result, Ok(LookupOutcome::NotEnrolled)) {
                            state
                                .misses
                                .lock()
                                .expect("miss cache lock")
                                .insert(key.clone());
                        }
                        // Later callers find the device in the store, or the
                        // miss above, once `_leave` removes the key.
                        result
                    });
                    async move {
                        task.await
                            .unwrap_or_else(|e| Err(LookupError::Task(Arc::new(e))))
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        shared.await
    }
}

/// Removes a lookup's key from the in-flight map when dropped.
struct LeaveInflight {
    state: Arc<State>,
    key: String,
}

impl Drop for LeaveInflight {
    fn drop(&mut self) {
        self.state
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

fn by_tenant(integrations: Vec<Arc<Integration>>) -> HashMap<String, Vec<Arc<Integration>>> {
    let mut by_tenant: HashMap<String, Vec<Arc<Integration>>> = HashMap::new();
    // A disabled MDM is not asked about devices (CONTRACT §2 `enabled`).
    for i in integrations.into_iter().filter(|i| i.enabled) {
        by_tenant.entry(i.tenant_id.clone()).or_default().push(i);
    }
    by_tenant
}

async fn find_in_store(
    store: &crate::store::Store,
    tenant: &str,
    ids: &[DeviceIdentifier],
) -> Result<Option<StoredDevice>, StoreError> {
    for id in ids {
        let found = store.find_devices(tenant, id).await?;
        if found.len() > 1 {
            tracing::info!(
                tenant,
                identifier = id.kind(),
                candidates = found.len(),
                picked_device_id = found[0].id,
                "Identity collision: picked the most recently checked-in device"
            );
        }
        if let Some(first) = found.into_iter().next() {
            return Ok(Some(first));
        }
    }
    Ok(None)
}

async fn ask_mdms(
    state: &State,
    tenant: &str,
    ids: &[DeviceIdentifier],
) -> Result<LookupOutcome, LookupError> {
    let integrations = state
        .by_tenant
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(tenant)
        .cloned();
    let Some(integrations) = integrations else {
        return Ok(LookupOutcome::NotEnrolled);
    };
    let mut failure: Option<LookupError> = None;
    for i in &integrations {
        for id in ids {
            match i.adapter.lookup_device(id).await {
                Ok(Some(device)) => {
                    let stored = i.store_found_device(&state.store, device).await?;
                    tracing::info!(
                        tenant, mdm = %i.name, identifier = id.kind(), device_id = stored.device.id,
                        added = stored.added, "On-demand lookup found the device"
                    );
                    return Ok(LookupOutcome::Found(Box::new(stored.device)));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(tenant, mdm = %i.name, identifier = id.kind(), error_class = e.class(), error = %e, "On-demand lookup failed");
                    failure.get_or_insert(LookupError::Unavailable {
                        mdm: i.name.clone(),
                        retry_after: e.retry_after(),
                        message: e.to_string(),
                    });
                    // The other identifiers would fail the same way at this MDM.
                    break;
                }
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!(
                tenant,
                identifiers = ids.len(),
                "On-demand lookup: no MDM of the tenant knows the device"
            );
            Ok(LookupOutcome::NotEnrolled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{device, store_with_mdm};
    use crate::store::{Pii, SyncTrigger};

    /// A caller whose store check missed can reach the in-flight map after
    /// another lookup of the same device has stored it and left the map
    /// (seen in CI: 50 concurrent lookups, two requests at the MDM). Its
    /// lookup must find the device stored, not ask the MDMs again. Here no
    /// MDM is configured, so asking them would answer "not enrolled".
    #[tokio::test]
    async fn a_lookup_that_missed_the_store_finds_what_another_lookup_stored_meanwhile() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let ondemand = OnDemand::new(store.clone(), Vec::new(), Duration::from_secs(60));
        let mut d = device("7");
        d.identifiers.serial = Some("C02XYZ".into());
        let run = store
            .start_sync_run(mdm, SyncTrigger::Scheduled)
            .await
            .unwrap();
        store
            .upsert_devices(run, mdm, &[d], Pii::Clear)
            .await
            .unwrap();
        let ids = [DeviceIdentifier::Serial("c02xyz".into())];
        match ondemand.fly("acme", &ids).await.unwrap() {
            LookupOutcome::Found(found) => assert_eq!(found.mdm_device_id, "7"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_miss_cache_stays_within_its_bound_and_forgets_the_oldest_first() {
        let mut misses = MissCache::new(Duration::from_secs(600), 3);
        for key in ["a", "b", "c", "d", "e"] {
            misses.insert(key.to_string());
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(misses.len(), 3);
        assert!(
            !misses.hit("a") && !misses.hit("b"),
            "the oldest went first"
        );
        assert!(misses.hit("c") && misses.hit("d") && misses.hit("e"));
        misses.insert("d".to_string());
        assert_eq!(misses.len(), 3, "a repeat does not evict");
    }

    #[test]
    fn an_expired_miss_is_forgotten_before_a_live_one() {
        let mut misses = MissCache::new(Duration::from_millis(30), 2);
        misses.insert("old".to_string());
        std::thread::sleep(Duration::from_millis(40));
        misses.insert("live".to_string());
        misses.insert("new".to_string());
        assert!(misses.hit("live") && misses.hit("new"));
        assert!(!misses.hit("old"));
    }
}
