//! The daemon: `App::build` opens the store, writes the configured tenants to
//! it and binds the listener; `App::run_until` serves until the shutdown future
//! resolves, then drains within the grace limit.
//!
//! Build binds and run serves (zero2prod): tests pass port 0, read
//! `local_addr()` and never sleep waiting for a server. Under systemd,
//! `run_until` tells it `READY=1` once serving and `STOPPING=1` when it
//! drains ([`crate::notify`]).

use crate::config::Config;
use crate::context::{tenant_records, Services};
use crate::dispatch::DispatchSettings;
use crate::http;
use crate::shutdown::{CancellationToken, Tasks, GRACE};
use crate::store::Store;
use crate::sync::SyncEngine;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;

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
    /// Background tasks (sync workers, dispatcher, ingest writer): shutdown
    /// waits for them, and one that dies early stops the daemon.
    tasks: Tasks,
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
            tasks: Tasks::new(),
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
    /// A server that ends before `shutdown` (an error, a panic), or a
    /// background worker that dies, is logged at ERROR at once and stops the
    /// daemon the same way, with that error (the CLI exits non-zero).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.run_serving(shutdown, |listener, state, cancel| {
            let server = state.config.load().server.clone();
            let limits = http::ServeLimits::from(&server);
            // Built from what the config load read and checked; a reload
            // keeps `[server]` (a new certificate takes a restart).
            let tls = server
                .tls
                .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config));
            http::serve(listener, http::router(state), limits, tls, cancel)
        })
        .await
    }

    /// [`App::run_until`] with the HTTP server `serve` makes (tests give one that fails).
    async fn run_serving<S, F>(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        serve: S,
    ) -> std::io::Result<()>
    where
        S: FnOnce(TcpListener, std::sync::Arc<Services>, CancellationToken) -> F,
        F: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let App {
            listener,
            state,
            tasks,
            dispatch,
        } = self;
        let cancel = tasks.cancel_token();
        let addr = listener.local_addr()?;
        let config = state.config.load();
        let url = format!("{}://{addr}", config.server.scheme());
        tracing::info!(%addr, %url, tenants = config.tenants.len(), "Serving the agent and admin API");
        drop(config);

        state.sync.start(cancel.clone(), &tasks).await;
        let deferred_every = dispatch.deferred_every;
        crate::dispatch::start(state.dispatch.clone(), dispatch, cancel.clone(), &tasks).await;
        // Stopped only once the server has drained: in-flight posts still get written.
        let writer_stop = CancellationToken::new();
        state
            .ingest
            .start(deferred_every, cancel.clone(), writer_stop.clone(), &tasks);
        let mut server = tokio::spawn(serve(
            listener,
            std::sync::Arc::new(state.clone()),
            cancel.clone(),
        ));

        // systemd (Type=notify): the store is open, the listener bound and
        // served, the workers started; `systemctl start` returns now.
        crate::notify::notify(&format!("READY=1\nSTATUS=Serving on {url}"));

        // The server ends only when told to: ending before that (an error, a
        // panic) is noticed now, not at the next restart, and stops the daemon.
        let died = tokio::select! {
            _ = shutdown => None,
            served = &mut server => Some(early_death(served)),
            death = tasks.died() => Some(std::io::Error::other(death)),
        };
        crate::notify::notify("STOPPING=1\nSTATUS=Draining");
        cancel.cancel();
        tasks.close();
        if let Some(error) = died {
            tracing::error!(error = %error, "A part of the daemon stopped on its own; stopping the daemon");
            writer_stop.cancel();
            if tokio::time::timeout(GRACE, tasks.wait()).await.is_err() {
                tracing::warn!(
                    grace_seconds = GRACE.as_secs(),
                    "Background work did not finish within the grace period; stopping anyway"
                );
            }
            state.store.close().await;
            return Err(error);
        }
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

/// The error `run_until` returns for a server task that ended before shutdown.
fn early_death(served: Result<std::io::Result<()>, tokio::task::JoinError>) -> std::io::Error {
    match served {
        Ok(Err(e)) => e,
        Ok(Ok(())) => std::io::Error::other("the HTTP server stopped before shutdown"),
        Err(e) => std::io::Error::other(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    async fn app(dir: &Path) -> App {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let mut config = crate::config::load(&example).expect("the example config loads");
        config.store.path = dir.join("store.db");
        // No MDM to sync with: only the server matters here.
        config.tenants.clear();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        App::build_with_listener(config, Some(listener))
            .await
            .expect("the app builds")
    }

    /// A shutdown that never comes: the daemon must stop on its own.
    fn never() -> impl Future<Output = ()> + Send + 'static {
        std::future::pending()
    }

    #[tokio::test]
    async fn a_server_that_fails_early_stops_the_daemon_at_once_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path()).await;
        let run = app.run_serving(never(), |_, _, _| async {
            Err(std::io::Error::other("the listener broke"))
        });
        let result = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("noticed at once, not at shutdown");
        let error = result.expect_err("an error, for a non-zero exit");
        assert!(error.to_string().contains("the listener broke"), "{error}");
    }

    #[tokio::test]
    async fn a_background_worker_that_panics_stops_the_daemon_at_once_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path()).await;
        app.tasks
            .spawn_critical("the test worker", async { panic!("a bug in a worker") });
        let run = app.run_until(never());
        let result = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("noticed at once, not at shutdown");
        let error = result.expect_err("an error, for a non-zero exit");
        assert!(
            error
                .to_string()
                .contains("the test worker panicked: a bug in a worker"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_server_task_that_panics_stops_the_daemon_at_once_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path()).await;
        let run = app.run_serving(never(), |_, _, _| async { panic!("a bug in the server") });
        let result = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("noticed at once, not at shutdown");
        assert!(result.is_err());
    }
}
