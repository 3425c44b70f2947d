//! The HTTP surface: agent API, admin API, admin console, Cisco ISE API, health and metrics on one listener
//! ([`serve`]: its connection limit and timeouts).
//!
//! Handlers are thin: extract, call one service function, map the result
//! through [`ApiError`], which gives user errors their status and a message and
//! internal errors a generic body (the cause goes to the log, never to a client).

mod admin;
mod agent;
mod console;
mod error;
mod health;
mod ise;
mod metrics;
mod openapi;
mod serve;

pub use crate::ingest::sign_agent_request;
pub use agent::parse_events as parse_agent_events;
pub use error::ApiError;
pub use serve::{serve, ServeLimits};

use axum::extract::{MatchedPath, Request};
use axum::Router;
use tower_http::trace::{DefaultOnFailure, DefaultOnRequest, DefaultOnResponse, TraceLayer};
use tracing::Level;

/// What every handler can reach: the services, shared.
pub type AppState = std::sync::Arc<crate::context::Services>;

/// All routes of the daemon, each request in a span of its own (see `request_span`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(openapi::routes())
        .merge(agent::routes())
        .merge(admin::routes())
        .merge(console::routes())
        .merge(ise::routes())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // "Started" and "finished" only at DEBUG: no INFO line per request.
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                // The handler logs a 500's cause at ERROR and a 503's at WARN;
                // another line per failed request would only repeat it.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

/// The span of a request: its method and the route it matched (`/v1/admin/tenants/{tenant}`),
/// never the raw URI (ids, query strings) nor a header (the agent's signature
/// and the admin token must not reach the log).
fn request_span(request: &Request) -> tracing::Span {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!("request", method = %request.method(), path)
}
