//! `/healthz` (the process is up) and `/readyz` (store open and writable, config loaded).
//!
//! `/readyz` needs no token and may be polled hard, so it asks
//! [`crate::store::Store::readiness`], which does not queue on SQLite's write lock per call.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.store.readiness().await {
        Ok(()) => (
            StatusCode::OK,
            Json(
                json!({"status": "ready", "store": "ok", "tenants": state.config.load().tenants.len()}),
            ),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "Readiness check failed: the store is not writable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not_ready", "store": "unwritable"})),
            )
        }
    }
}
