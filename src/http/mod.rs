//! The HTTP surface: agent API, admin API, health and metrics on one listener
//! ([`serve`]: its connection limit and timeouts).
//!
//! Handlers are thin: extract, call one service function, map the result
//! through [`ApiError`], which gives user errors their status and a message and
//! internal errors a generic body (the cause goes to the log, never to a client).

mod admin;
mod agent;
mod error;
mod health;
mod metrics;
mod openapi;
mod serve;

pub use agent::sign as sign_agent_request;
pub use error::ApiError;
pub use serve::{serve, ServeLimits};

use crate::config::LiveConfig;
use crate::store::Store;
use axum::Router;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    /// Replaced whole by a reload; take a snapshot with `config.load()`.
    pub config: LiveConfig,
    pub sync: crate::sync::SyncEngine,
    pub dispatch: crate::dispatch::DispatchHandle,
    /// Event posts go through here to the one writer (`ingest::writer`).
    pub ingest: crate::ingest::IngestQueue,
}

/// All routes of the daemon.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(openapi::routes())
        .merge(agent::routes())
        .merge(admin::routes())
        .with_state(state)
}
