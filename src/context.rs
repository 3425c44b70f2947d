//! The services every part of the daemon shares, below HTTP: the context the
//! handlers hold (`State<Arc<Services>>`) and reload takes.
//!
//! Why per-service parts instead of one struct everyone takes: ingest and the
//! dispatcher each take only their own part ([`Ingest`], [`Dispatcher`]), so
//! neither names this module and the import graph stays one-directional
//! (`http` → `context` → `actions`/`ingest`/`ise` → `dispatch` → `policy` → `sync`
//! → `store`; `src/architecture.rs` checks it).

use crate::actions::Actions;
use crate::config::{Config, LiveConfig};
use crate::dispatch::{DispatchHandle, Dispatcher};
use crate::ingest::{Ingest, IngestQueue};
use crate::ise::Ise;
use crate::store::{MdmRecord, Store, TenantRecord};
use crate::sync::SyncEngine;

#[derive(Debug, Clone)]
pub struct Services {
    pub store: Store,
    /// Replaced whole by a reload; take a snapshot with `config.load()`.
    pub config: LiveConfig,
    pub sync: SyncEngine,
    /// Sends due actions to the MDMs; approvals and cancels go through it.
    pub dispatch: Dispatcher,
    /// Activation, event ingest and deferred decisions.
    pub ingest: Ingest,
    /// What admins do to action records: approve, cancel.
    pub actions: Actions,
    /// The Cisco ISE MDM API: queries from the store, actions as records.
    pub ise: Ise,
}

impl Services {
    pub fn new(store: Store, config: LiveConfig, sync: SyncEngine) -> Self {
        let wake = DispatchHandle::new();
        Services {
            dispatch: Dispatcher {
                store: store.clone(),
                config: config.clone(),
                sync: sync.clone(),
                wake: wake.clone(),
                signal_locks: Default::default(),
                writer: crate::dispatch::DispatchWriter::new(store.clone()),
            },
            ingest: Ingest {
                store: store.clone(),
                config: config.clone(),
                sync: sync.clone(),
                wake: wake.clone(),
                queue: IngestQueue::new(),
            },
            ise: Ise {
                store: store.clone(),
                config: config.clone(),
                sync: sync.clone(),
                wake: wake.clone(),
            },
            actions: Actions::new(store.clone(), wake),
            store,
            config,
            sync,
        }
    }
}

/// The tenants and MDM integrations of the config, as the store records them.
pub(crate) fn tenant_records(config: &Config) -> Vec<TenantRecord> {
    config
        .tenants
        .iter()
        .map(|t| TenantRecord {
            id: t.id.clone(),
            display_name: t.display_name.clone(),
            mdms: t
                .mdms
                .iter()
                .map(|m| MdmRecord {
                    name: m.name.clone(),
                    kind: m.kind,
                    url: m.url.to_string(),
                })
                .collect(),
        })
        .collect()
}
