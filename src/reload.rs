//! Reloading the config files without a restart (SIGHUP).
//!
//! A reload loads and checks every file as at start; any error keeps the
//! running config whole (never half a reload) and logs each `FILE:LINE:COL`.
//! Only a config that passes is applied: the store's tenant records, then the
//! config snapshot, then the sync engine. An MDM whose `[[mdm]]` is unchanged
//! keeps its worker and adapter (token, queued syncs, run in progress), so
//! work in flight is not dropped; a new or changed MDM gets a new worker that
//! starts with an initial sync. `[server]`, `[store]`, `[sync]` and `[dispatch]` need a restart.

use crate::config::{Config, ConfigErrors};
use crate::context::tenant_records;
use crate::context::Services;
use crate::store::StoreError;
use crate::sync::{Applied, BuildIntegrationError};
use std::sync::Arc;

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub tenants: usize,
    pub tenants_added: Vec<String>,
    pub tenants_removed: Vec<String>,
    pub mdms: Applied,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the config has errors; the previous config stays in effect:\n{0}")]
    Config(ConfigErrors),
    #[error("cannot record the tenants in the store; the previous config stays in effect: {0}")]
    Store(#[from] StoreError),
    #[error("cannot set up an MDM integration; the previous config stays in effect: {0}")]
    Integration(#[from] BuildIntegrationError),
}

/// Reloads the config from the files the daemon was started with.
pub async fn reload(state: &Services) -> Result<Reloaded, ReloadError> {
    let old = state.config.load();
    let mut new = crate::config::load(&old.main_path).map_err(ReloadError::Config)?;
    if new.server != old.server {
        tracing::warn!(
            "[server] changed: a restart is needed for it; still listening on {}",
            old.server.listen
        );
        new.server = old.server.clone();
    }
    if new.store != old.store {
        tracing::warn!(
            "[store] changed: a restart is needed for it; still using {}",
            old.store.path.display()
        );
        new.store = old.store.clone();
    }
    if new.sync != old.sync {
        tracing::warn!("[sync] changed: a restart is needed for it; the schedule stays as it was");
        new.sync = old.sync.clone();
    }
    if new.dispatch != old.dispatch {
        tracing::warn!(
            "[dispatch] changed: a restart is needed for it; the dispatcher keeps its settings"
        );
        new.dispatch = old.dispatch.clone();
    }

    let refs = state.store.sync_tenants(&tenant_records(&new)).await?;
    let integrations = match integrations(state, &old, &new, &refs).await {
        Ok(list) => list,
        Err(e) => {
            // Put the store's records back as the running config has them.
            if let Err(undo) = state.store.sync_tenants(&tenant_records(&old)).await {
                tracing::error!(error = %undo, "Cannot restore the tenant records after a failed reload");
            }
            return Err(e.into());
        }
    };
    for w in &new.warnings {
        tracing::warn!("{w}");
    }
    let ids = |c: &Config| c.tenants.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    let (before, after) = (ids(&old), ids(&new));
    // Config first: the new MDMs' devices only appear once their workers run.
    state.config.replace(Arc::new(new));
    Ok(Reloaded {
        tenants: after.len(),
        tenants_added: after
            .iter()
            .filter(|t| !before.contains(t))
            .cloned()
            .collect(),
        tenants_removed: before
            .iter()
            .filter(|t| !after.contains(t))
            .cloned()
            .collect(),
        mdms: state.sync.apply(integrations).await,
    })
}

/// The engine's integrations for `new`: the running one where its `[[mdm]]`
/// is unchanged, a new one (new adapter) otherwise.
async fn integrations(
    state: &Services,
    old: &Config,
    new: &Config,
    refs: &[crate::store::IntegrationRef],
) -> Result<Vec<Arc<crate::sync::Integration>>, BuildIntegrationError> {
    let running: Vec<_> = state.sync.integrations().collect();
    let mut out = Vec::new();
    for tenant in &new.tenants {
        for mdm in &tenant.mdms {
            let unchanged = old
                .tenants
                .iter()
                .find(|t| t.id == tenant.id)
                .and_then(|t| t.mdms.iter().find(|m| m.name == mdm.name))
                .is_some_and(|m| m == mdm);
            let keep = running
                .iter()
                .find(|i| unchanged && i.tenant_id == tenant.id && i.name == mdm.name)
                .cloned();
            match keep {
                Some(i) => {
                    i.rule_groups.replace(tenant, &mdm.name);
                    out.push(i)
                }
                None => {
                    let i = crate::sync::integration_for(tenant, mdm, &state.store, refs).await?;
                    out.push(Arc::new(i));
                }
            }
        }
    }
    Ok(out)
}

/// Starts reloading on every SIGHUP until the process ends. The handler is
/// installed before this returns: SIGHUP's default action ends the process.
pub fn reload_on_sighup(state: Services) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "Cannot listen for SIGHUP: a config change needs a restart");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!(signal = "SIGHUP", "Reloading the config");
                crate::notify::notify("RELOADING=1\nSTATUS=Reloading the config");
                let outcome = reload(&state).await;
                // Ready again either way: a refused reload keeps the old config running.
                let status = match &outcome {
                    Ok(_) => "STATUS=Config reloaded",
                    Err(_) => "STATUS=Reload refused; the previous config stays in effect",
                };
                log_outcome(outcome);
                crate::notify::notify(&format!("READY=1\n{status}"));
            }
        });
    }
    #[cfg(not(unix))]
    let _ = state;
}

/// One log line for the outcome of a reload (and one per config error).
pub fn log_outcome(outcome: Result<Reloaded, ReloadError>) {
    match outcome {
        Ok(r) => tracing::info!(
            tenants = r.tenants,
            tenants_added = ?r.tenants_added,
            tenants_removed = ?r.tenants_removed,
            mdms_started = r.mdms.started.len(),
            mdms_stopped = r.mdms.stopped.len(),
            mdms_kept = r.mdms.kept,
            "Config reloaded"
        ),
        Err(ReloadError::Config(errors)) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!(
                errors = errors.0.len(),
                "Reload refused: the config has errors; the previous config stays in effect"
            );
        }
        Err(e) => tracing::error!(error = %e, "Reload failed"),
    }
}
