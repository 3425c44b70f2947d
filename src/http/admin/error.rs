//! The admin API's errors: its own codes (unknown tenant or action, an action
//! in the wrong state) and everything else through the shared [`ApiError`].

use crate::actions::ActionsError;
use crate::http::ApiError;
use crate::store::StoreError;
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No, a malformed or a wrong bearer token, or none configured.
    #[error("unauthorized")]
    Unauthorized,
    #[error("tenant not found")]
    TenantNotFound,
    /// No such action, or one in the wrong state for the operation.
    #[error(transparent)]
    Action(ActionsError),
    /// A query parameter that is unknown or has a bad value.
    #[error("invalid parameter {name}: {message}")]
    InvalidParam { name: String, message: String },
    /// A sync asked of an MDM with `enabled = false`: 409.
    #[error("MDM `{0}` is disabled")]
    MdmDisabled(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl AdminError {
    pub fn param(name: &str, message: impl Into<String>) -> Self {
        AdminError::InvalidParam {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Api(e.into())
    }
}

impl From<ActionsError> for AdminError {
    fn from(e: ActionsError) -> Self {
        match e {
            ActionsError::Store(e) => e.into(),
            e => AdminError::Action(e),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match self {
            AdminError::Unauthorized => {
                let mut r = ApiError::Unauthorized.into_response();
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            AdminError::TenantNotFound => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "tenant_not_found"})),
            )
                .into_response(),
            AdminError::Action(ActionsError::NotFound) => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "action_not_found"})),
            )
                .into_response(),
            AdminError::Action(ActionsError::NotHeld(state)) => (
                StatusCode::CONFLICT,
                Json(json!({"error": "not_held", "state": state})),
            )
                .into_response(),
            AdminError::Action(ActionsError::NotCancellable { state, message }) => (
                StatusCode::CONFLICT,
                Json(json!({"error": "not_cancellable", "state": state, "message": message})),
            )
                .into_response(),
            AdminError::Action(ActionsError::DeviceNotFound) => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "device_not_found"})),
            )
                .into_response(),
            AdminError::Action(ActionsError::ThreatNotOpen) => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "threat_not_open"})),
            )
                .into_response(),
            AdminError::Action(ActionsError::Store(e)) => ApiError::from(e).into_response(),
            AdminError::InvalidParam { name, message } => ApiError::InvalidField {
                field: name,
                message,
            }
            .into_response(),
            AdminError::MdmDisabled(mdm) => (
                StatusCode::CONFLICT,
                Json(json!({
                    "error": "mdm_disabled",
                    "message": format!("MDM `{mdm}` has enabled = false in the tenant file"),
                })),
            )
                .into_response(),
            AdminError::Api(e) => e.into_response(),
        }
    }
}
