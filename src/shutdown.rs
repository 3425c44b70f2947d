//! The one shutdown path: SIGINT or SIGTERM → one cancellation.
//!
//! Every long-running task holds a clone of the [`CancellationToken`] and stops
//! when it fires; `App::run_until` then waits for the tasks, bounded by a grace
//! limit, so a stuck task cannot keep the process alive forever (mini-redis).

use std::time::Duration;
pub use tokio_util::sync::CancellationToken;

/// How long in-flight work may take to finish after the signal.
pub const GRACE: Duration = Duration::from_secs(4);

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is
/// first polled: a SIGTERM that arrives while the daemon is still starting
/// (after it logged that it serves) is a shutdown request, not the default
/// action that kills the process. Call it inside the runtime.
pub fn signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // If a handler cannot be installed, that signal cannot stop us
        // gracefully; the other still works, so wait on it alone.
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            let recv = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = recv(interrupt) => tracing::info!(signal = "SIGINT", "Shutdown requested"),
                _ = recv(terminate) => tracing::info!(signal = "SIGTERM", "Shutdown requested"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!(signal = "SIGINT", "Shutdown requested");
    }
}

/// The daemon's background tasks: tracked, so the drain can wait for them,
/// and watched, so one that dies early is noticed at once instead of at the
/// next restart.
///
/// Why a wrapper and not the bare `TaskTracker`: a worker that panicked (or
/// returned while it should have run until shutdown) otherwise leaves a
/// daemon that answers HTTP but never sends an action or syncs again.
/// [`Tasks::died`] resolves with the first such death; `App::run_until`
/// stops the daemon with it (ERROR in the log, non-zero exit).
#[derive(Debug, Clone)]
pub struct Tasks {
    tracker: tokio_util::task::TaskTracker,
    cancel: CancellationToken,
    deaths: tokio::sync::mpsc::UnboundedSender<String>,
    died: std::sync::Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        let (deaths, died) = tokio::sync::mpsc::unbounded_channel();
        Tasks {
            tracker: tokio_util::task::TaskTracker::new(),
            cancel: CancellationToken::new(),
            deaths,
            died: std::sync::Arc::new(tokio::sync::Mutex::new(died)),
        }
    }

    /// The shutdown of these tasks: cancelled once, when the daemon stops.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// A task that may end on its own (one action's send): tracked only.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// A worker that runs until shutdown (the dispatcher, the ingest writer):
    /// a panic, or an end before the shutdown token fires, is a death.
    pub fn spawn_critical<F>(&self, name: impl Into<String>, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.watch(name.into(), true, task);
    }

    /// A worker that may end on its own (a sync worker whose MDM a reload
    /// removed): only a panic is a death.
    pub fn spawn_watched<F>(&self, name: impl Into<String>, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.watch(name.into(), false, task);
    }

    fn watch<F>(&self, name: String, until_shutdown: bool, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (cancel, deaths) = (self.cancel.clone(), self.deaths.clone());
        let inner = tokio::spawn(task);
        self.tracker.spawn(async move {
            let death = match inner.await {
                Err(e) if e.is_panic() => Some(format!("{name} panicked: {}", panic_text(e))),
                // Aborted: the runtime is going away.
                Err(_) => None,
                Ok(()) if until_shutdown && !cancel.is_cancelled() => {
                    Some(format!("{name} stopped before shutdown"))
                }
                Ok(()) => None,
            };
            if let Some(death) = death {
                let _ = deaths.send(death);
            }
        });
    }

    /// Resolves with the first death (never, while every worker lives).
    pub async fn died(&self) -> String {
        match self.died.lock().await.recv().await {
            Some(death) => death,
            // Unreachable: `self` holds a sender.
            None => std::future::pending().await,
        }
    }

    /// No new tasks after this; [`Tasks::wait`] resolves once all have ended.
    pub fn close(&self) {
        self.tracker.close();
    }

    pub async fn wait(&self) {
        self.tracker.wait().await
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn death_within(tasks: &Tasks, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, tasks.died()).await.ok()
    }

    #[tokio::test]
    async fn a_worker_that_panics_is_a_death_with_its_name_and_message() {
        let tasks = Tasks::new();
        tasks.spawn_watched("the sync worker of acme/SOTI", async { panic!("a bug") });
        let death = death_within(&tasks, Duration::from_secs(5)).await.unwrap();
        assert_eq!(death, "the sync worker of acme/SOTI panicked: a bug");
    }

    #[tokio::test]
    async fn a_critical_worker_that_returns_before_shutdown_is_a_death_and_after_it_is_not() {
        let tasks = Tasks::new();
        tasks.spawn_critical("the dispatcher", async {});
        let death = death_within(&tasks, Duration::from_secs(5)).await.unwrap();
        assert_eq!(death, "the dispatcher stopped before shutdown");

        let tasks = Tasks::new();
        let cancel = tasks.cancel_token();
        tasks.spawn_critical("the dispatcher", async move { cancel.cancelled().await });
        // A watched worker may end on its own; a plain task too.
        tasks.spawn_watched("a removed sync worker", async {});
        tasks.spawn(async {});
        tasks.cancel_token().cancel();
        tasks.close();
        tasks.wait().await;
        assert_eq!(death_within(&tasks, Duration::from_millis(100)).await, None);
    }
}
