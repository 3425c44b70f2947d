//! One error type for every handler.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The store cannot take writes (disk full, read-only, locked): try again later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure: the client gets a generic body.
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "Store unavailable");
                let mut r = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "unavailable"})),
                )
                    .into_response();
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("5"),
                );
                r
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "Internal error while serving a request");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "internal"})),
                )
                    .into_response()
            }
        }
    }
}
