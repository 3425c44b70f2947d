//! One error type for every handler.
//!
//! Client errors carry what the client needs to fix its request (a status, a
//! stable `error` code and, for 400s, a message or the offending field).
//! Server-side failures get a generic body; their cause goes to the log in the
//! request span, never to the client.

use crate::ingest::{FieldError, IngestError};
use crate::store::StoreError;
use axum::http::header::{CONNECTION, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::time::Duration;

/// How long clients are told to wait when the store cannot take writes.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The cause of a server-side failure, kept for the log (and its `source()` chain).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A bad or missing signature, a stale timestamp or an unknown tenant. One
    /// variant on purpose: the client must not be able to tell which.
    #[error("unauthorized")]
    Unauthorized,
    /// The body is over the endpoint's size limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The body is not JSON (or not a JSON object).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A field is missing, wrongly typed or not acceptable; `field` is its path,
    /// e.g. `events[1].threat.severity`.
    #[error("invalid field {field}: {message}")]
    InvalidField { field: String, message: String },
    /// A batch of events over the per-request limit.
    #[error("too many events")]
    TooManyEvents,
    /// No MDM of the tenant knows the device.
    #[error("device not enrolled")]
    DeviceNotEnrolled,
    /// An MDM could not be asked; the client should retry after the delay.
    #[error("MDM unavailable")]
    MdmUnavailable { retry_after: Duration },
    /// The store cannot take writes (disk full, read-only, locked) or the
    /// service is stopping: try again later.
    #[error("unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// A bug or an unexpected failure (a corrupt row, a panicked task): the
    /// client gets a generic body.
    #[error("internal error: {0}")]
    Internal(#[source] BoxError),
}

impl ApiError {
    /// The `error` code of the answer's body, also the metrics' `reason` label.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::TooManyEvents => "too_many_events",
            ApiError::DeviceNotEnrolled => "device_not_enrolled",
            ApiError::MdmUnavailable { .. } => "mdm_unavailable",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Counts an agent request answered with this error in
    /// `mtd_agent_requests_refused_total`; `tenant` only when its signature
    /// was verified. A device no MDM knows (404) is an answer, not a refusal.
    pub(crate) fn count_refusal(&self, tenant: Option<&str>) {
        if !matches!(self, ApiError::DeviceNotEnrolled) {
            crate::metrics::agent_refused(tenant, self.code());
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::InvalidField {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(Box::new(e))
        } else {
            ApiError::Internal(Box::new(e))
        }
    }
}

/// 503 when the store cannot take the request now ([`StoreError::is_unavailable`]),
/// else 500: a corrupt row or a refused write does not get better by retrying.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(Box::new(e))
        } else {
            ApiError::Internal(Box::new(e))
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized => {
                reply(StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}))
            }
            ApiError::PayloadTooLarge => {
                // The body was not read, so the server closes the connection
                // after this answer; saying so keeps a keep-alive client from
                // sending its next request on it (RFC 9112, section 9.6).
                let mut response = reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json!({"error": "payload_too_large"}),
                );
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                response
            }
            ApiError::InvalidJson(message) => {
                tracing::debug!(%message, "Request refused: the body is not JSON");
                reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_json", "message": message}),
                )
            }
            ApiError::InvalidField { field, message } => {
                tracing::debug!(%field, %message, "Request refused: invalid field");
                reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_field", "field": field, "message": message}),
                )
            }
            ApiError::TooManyEvents => {
                reply(StatusCode::BAD_REQUEST, json!({"error": "too_many_events"}))
            }
            ApiError::DeviceNotEnrolled => reply(
                StatusCode::NOT_FOUND,
                json!({"error": "device_not_enrolled"}),
            ),
            ApiError::MdmUnavailable { retry_after } => with_retry_after(
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "mdm_unavailable"}),
                ),
                retry_after,
            ),
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "Store unavailable");
                with_retry_after(
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"error": "unavailable"}),
                    ),
                    STORE_RETRY_AFTER,
                )
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "Internal error while serving a request");
                reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "internal"}),
                )
            }
        }
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// `Retry-After` in whole seconds, rounded up and at least 1 (0 would invite a
/// tight retry loop).
fn with_retry_after(mut response: Response, after: Duration) -> Response {
    let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn corrupt() -> StoreError {
        StoreError::Corrupt("action state `sideways`".into())
    }

    fn locked() -> StoreError {
        // What sqlx reports when the pool cannot hand out a connection in time.
        StoreError::Database(sqlx::Error::PoolTimedOut)
    }

    fn answer(e: impl Into<ApiError>) -> Response {
        e.into().into_response()
    }

    #[test]
    fn a_store_error_that_retrying_cannot_fix_is_a_500_without_retry_after() {
        for response in [
            answer(corrupt()),
            answer(IngestError::from(corrupt())),
            answer(IngestError::store(Arc::new(corrupt()))),
        ] {
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(response.headers().get(RETRY_AFTER).is_none());
        }
    }

    #[test]
    fn an_unavailable_store_is_a_503_with_retry_after() {
        assert!(locked().is_unavailable());
        for response in [
            answer(locked()),
            answer(IngestError::from(locked())),
            answer(IngestError::QueueFull),
            answer(IngestError::WriterStopped),
        ] {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[RETRY_AFTER], "5");
        }
    }

    #[test]
    fn the_cause_is_kept_as_the_source() {
        let e = ApiError::from(IngestError::from(corrupt()));
        let ingest = std::error::Error::source(&e).expect("a source");
        // Shared between the requests of one failed commit, hence the Arc.
        let store = ingest.source().expect("the store error");
        assert!(matches!(
            store.downcast_ref::<Arc<StoreError>>().map(|e| &**e),
            Some(StoreError::Corrupt(_))
        ));
    }
}
