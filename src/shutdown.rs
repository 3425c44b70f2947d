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
pub async fn signal() {
    let ctrl_c = async {
        // If the handler cannot be installed we cannot be stopped by Ctrl-C,
        // but SIGTERM still works: wait forever on this branch instead of failing.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!(signal = "SIGINT", "Shutdown requested"),
        _ = term => tracing::info!(signal = "SIGTERM", "Shutdown requested"),
    }
}
