//! The daemon as the benches that post to it start it: a config file loaded
//! through `config::load`, `App::build_with_listener` on port 0, served until
//! told to stop; the wait for an initial sync; a signed agent request.
//!
//! One copy for drift, signals, ise and ingest, which each had their own;
//! each bench still writes its own config (what it measures differs).

use mtd_connector::app::App;
use mtd_connector::dispatch::DispatchHandle;
use mtd_connector::http::sign_agent_request;
use mtd_connector::store::{Store, SyncOutcome};
use mtd_connector::sync::SyncEngine;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A daemon being served, with the handles the benches read it through.
pub struct Served {
    pub addr: SocketAddr,
    pub store: Store,
    pub engine: SyncEngine,
    /// Wakes the dispatcher (for rows a bench commits behind its back).
    pub wake: DispatchHandle,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Loads `config`, builds the app on a loopback port of its own and serves
/// it in a task.
pub async fn serve(config: &Path) -> Result<Served, String> {
    let config = mtd_connector::config::load(config).map_err(|e| format!("config:\n{e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind the app: {e}"))?;
    let app = App::build_with_listener(config, Some(listener))
        .await
        .map_err(|e| format!("build the app: {e}"))?;
    let addr = app.local_addr();
    let store = app.store().clone();
    let engine = app.sync().clone();
    let wake = app.state().dispatch.wake.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    Ok(Served {
        addr,
        store,
        engine,
        wake,
        stop,
        served,
    })
}

impl Served {
    /// The store's id of the first integration (the benches with one MDM).
    pub fn only_mdm(&self) -> Result<i64, String> {
        self.engine
            .integrations()
            .next()
            .map(|i| i.mdm_id)
            .ok_or_else(|| "the engine has no integration".to_string())
    }

    /// The store's id of `tenant`'s integration.
    pub fn mdm_of(&self, tenant: &str) -> Result<i64, String> {
        self.engine
            .integrations()
            .find(|i| i.tenant_id == tenant)
            .map(|i| i.mdm_id)
            .ok_or_else(|| format!("no integration for tenant {tenant}"))
    }

    /// Waits for the first finished run of `mdm_id` (the daemon's initial
    /// sync); an error when it failed or took longer than `limit`.
    pub async fn initial_sync(&self, mdm_id: i64, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let runs = self
                .store
                .sync_runs(mdm_id, 10)
                .await
                .map_err(|e| format!("read sync runs: {e}"))?;
            if let Some(run) = runs.iter().find(|r| r.finished_at.is_some()) {
                if run.outcome != SyncOutcome::Succeeded {
                    return Err(format!(
                        "the initial sync failed: {}",
                        run.error.as_deref().unwrap_or("?")
                    ));
                }
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                return Err(format!("the initial sync took over {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the daemon like SIGTERM, waiting at most 10 s (a dispatcher
    /// backlog must not hold the bench up).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.served).await;
    }
}

/// `POST /v1/agent/events` with `body`, signed as the tenant's agents sign.
pub fn signed_events(
    client: &reqwest::Client,
    addr: SocketAddr,
    tenant: &str,
    secret: &str,
    body: String,
) -> reqwest::RequestBuilder {
    let ts = chrono::Utc::now().timestamp();
    let sig = sign_agent_request(secret.as_bytes(), ts, body.as_bytes());
    client
        .post(format!("http://{addr}/v1/agent/events"))
        .header("Content-Type", "application/json")
        .header("X-Mtd-Tenant", tenant)
        .header("X-Mtd-Timestamp", ts.to_string())
        .header("X-Mtd-Signature", sig)
        .body(body)
}

/// Posts `body` until it is accepted (202), as an agent would: a 503 (a
/// full queue) is tried again shortly, a fresh signature each time; any
/// other answer is an error naming it.
pub async fn post_until_accepted(
    client: &reqwest::Client,
    addr: SocketAddr,
    tenant: &str,
    secret: &str,
    body: &str,
) -> Result<(), String> {
    loop {
        let r = signed_events(client, addr, tenant, secret, body.to_string())
            .send()
            .await
            .map_err(|e| format!("post: {e}"))?;
        match r.status().as_u16() {
            202 => return Ok(()),
            503 => tokio::time::sleep(Duration::from_millis(20)).await,
            s => {
                let text = r.text().await.unwrap_or_default();
                return Err(format!("{tenant}: events answered {s}: {text}"));
            }
        }
    }
}
