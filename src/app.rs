//! The daemon: `App::build` opens the store, writes the configured tenants to
//! it and binds the listener; `App::run_until` serves until the shutdown future
//! resolves, then drains within the grace limit.
//!
//! Build binds and run serves (zero2prod): tests pass port 0, read
//! `local_addr()` and never sleep waiting for a server.

use crate::config::Config;
use crate::context::{tenant_records, Services};
use crate::dispatch::DispatchSettings;
use crate::http;
use crate::shutdown::{CancellationToken, GRACE};
use crate::store::Store;
use crate::sync::SyncEngine;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot open the store at {path}: {source}")]
    Store {
        path: String,
        source: crate::store::StoreError,
    },
    #[error("cannot set up MDM integration: {0}")]
    Integration(#[from] crate::sync::BuildIntegrationError),
    #[error("cannot listen on {addr}: {source} (is another process using the port? change [server] listen)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    state: Services,
    /// Background tasks (sync workers, dispatcher) register here so shutdown can wait for them.
    tasks: TaskTracker,
    /// Retry and concurrency of the dispatcher (defaults; tests shorten the delays).
    dispatch: DispatchSettings,
}

impl App {
    /// Opens the store (running migrations), records the tenants and MDM
    /// integrations of the config, and binds the listener.
    pub async fn build(config: Config) -> Result<App, BuildError> {
        Self::build_with_listener(config, None).await
    }

    /// As [`App::build`], on a listener the caller already bound (tests, the demo).
    pub async fn build_with_listener(
        config: Config,
        listener: Option<TcpListener>,
    ) -> Result<App, BuildError> {
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let store = Store::open(&config.store.path)
            .await
            .map_err(|source| BuildError::Store {
                path: config.store.path.display().to_string(),
                source,
            })?;
        let records = tenant_records(&config);
        let integrations =
            store
                .sync_tenants(&records)
                .await
                .map_err(|source| BuildError::Store {
                    path: config.store.path.display().to_string(),
                    source,
                })?;
        for i in integrations.iter().filter(|i| i.first_seen) {
            tracing::info!(tenant = %i.tenant_id, mdm = %i.name, kind = %i.kind, "New MDM integration recorded");
        }
        let interrupted =
            store
                .fail_interrupted_runs()
                .await
                .map_err(|source| BuildError::Store {
                    path: config.store.path.display().to_string(),
                    source,
                })?;
        if interrupted > 0 {
            tracing::warn!(
                runs = interrupted,
                "Full syncs cut short by the last stop were recorded as failed"
            );
        }
        let sync = SyncEngine::new(
            store.clone(),
            crate::sync::settings_from(&config.sync),
            crate::sync::integrations_from(&config, &store, &integrations).await?,
        );
        let listener = match listener {
            Some(l) => l,
            None => {
                let addr = config.server.listen;
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| BuildError::Bind { addr, source })?
            }
        };
        let dispatch = DispatchSettings::from_config(&config.dispatch);
        let state = Services::new(store, crate::config::LiveConfig::new(config), sync);
        Ok(App {
            listener,
            state,
            tasks: TaskTracker::new(),
            dispatch,
        })
    }

    /// The address the API listens on (the real port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// The store, for tests and commands that run beside the server.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Replaces the dispatcher's retry and concurrency settings (tests shorten the delays).
    pub fn with_dispatch_settings(mut self, settings: DispatchSettings) -> Self {
        self.dispatch = settings;
        self
    }

    /// What the handlers share; [`crate::reload::reload`] takes it.
    pub fn state(&self) -> &Services {
        &self.state
    }

    /// The sync engine (full syncs, on-demand lookups).
    pub fn sync(&self) -> &SyncEngine {
        &self.state.sync
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets in-flight
    /// requests and background tasks finish within [`GRACE`], closes the store.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let App {
            listener,
            state,
            tasks,
            dispatch,
        } = self;
        let cancel = CancellationToken::new();
        let addr = listener.local_addr()?;
        tracing::info!(%addr, tenants = state.config.load().tenants.len(), "Serving the agent and admin API");

        state.sync.start(cancel.clone(), &tasks).await;
        let deferred_every = dispatch.deferred_every;
        crate::dispatch::start(state.dispatch.clone(), dispatch, cancel.clone(), &tasks).await;
        // Stopped only once the server has drained: in-flight posts still get written.
        let writer_stop = CancellationToken::new();
        state
            .ingest
            .start(deferred_every, cancel.clone(), writer_stop.clone(), &tasks);
        let router = http::router(std::sync::Arc::new(state.clone()));
        let limits = http::ServeLimits::from(&state.config.load().server);
        let server = tokio::spawn(http::serve(listener, router, limits, cancel.clone()));

        shutdown.await;
        cancel.cancel();
        tasks.close();
        let drained = tokio::time::timeout(GRACE, async {
            let served = server.await;
            writer_stop.cancel();
            tasks.wait().await;
            served
        })
        .await;
        match drained {
            Ok(Ok(Ok(()))) => tracing::info!("Drained; stopping"),
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "The HTTP server failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "The HTTP server task died"),
            Err(_) => tracing::warn!(
                grace_seconds = GRACE.as_secs(),
                "In-flight work did not finish within the grace period; stopping anyway"
            ),
        }
        state.store.close().await;
        Ok(())
    }
}
