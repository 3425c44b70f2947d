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
