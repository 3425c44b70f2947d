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

pub use crate::ingest::sign_agent_request;
pub use error::ApiError;
pub use serve::{serve, ServeLimits};

use axum::Router;

/// What every handler can reach: the services, shared.
pub type AppState = std::sync::Arc<crate::context::Services>;

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
