//! The Cisco ISE MDM API's routes (CONTRACT §7; the service is
//! [`crate::ise`]): `/ciscoise/mdminfo` and, per version N, the
//! `/ciscoise/mdmapi/vN/…` paths `mdminfo` announces.
//!
//! Paths are served with and without the trailing slash, the action type in
//! the query or in the path (`…/action/actionType=pin_lock`, as Cisco
//! writes it), v1's path-style device queries too; a request's
//! `Content-Type` is never refused (MaaS360 documents ISE sending form and
//! multipart types). Answers are `application/xml`; errors are 400 with a
//! one-line text, 401 with no detail, 404 while `[ise] enabled` is off.

use super::AppState;
use crate::ise::{xml, DeviceQuery, Ise, IseError, IseTenant};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Instant;

/// ISE's bodies are small: an identifier, or a batch of `query_max_size`
/// MAC addresses (5,000 × ~30 bytes at most).
const MAX_BODY_BYTES: usize = 256 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ciscoise/mdminfo", get(mdminfo))
        .route("/ciscoise/mdminfo/", get(mdminfo))
        .route("/ciscoise/mdmapi/{version}/devices", get(devices))
        .route("/ciscoise/mdmapi/{version}/devices/", get(devices))
        .route(
            "/ciscoise/mdmapi/{version}/devices/{paging}/{filter}",
            get(devices_v1_all),
        )
        .route(
            "/ciscoise/mdmapi/{version}/devices/{paging}/{criterion}/{value}/{filter}",
            get(devices_v1),
        )
        .route("/ciscoise/mdmapi/{version}/batchdevices", post(batch))
        .route("/ciscoise/mdmapi/{version}/batchdevices/", post(batch))
        .route("/ciscoise/mdmapi/{version}/action", post(action))
        .route("/ciscoise/mdmapi/{version}/action/", post(action))
        .route(
            "/ciscoise/mdmapi/{version}/action/{spec}",
            post(action_in_path),
        )
        .route(
            "/ciscoise/mdmapi/{version}/sendmessage",
            post(message).put(message),
        )
        .route(
            "/ciscoise/mdmapi/{version}/sendmessage/",
            post(message).put(message),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

fn service(state: &AppState) -> Ise {
    state.ise.clone()
}

/// An answer or the error's response.
fn answer(
    result: Result<String, IseError>,
    tenant: Option<&IseTenant>,
    operation: &'static str,
    started: Instant,
) -> Response {
    match result {
        Ok(body) => {
            if let Some(t) = tenant {
                crate::metrics::ise_request(&t.tenant().id, operation, started.elapsed());
            }
            (
                StatusCode::OK,
                [(CONTENT_TYPE, "application/xml; charset=utf-8")],
                body,
            )
                .into_response()
        }
        Err(e) => error(e),
    }
}

fn error(e: IseError) -> Response {
    match e {
        IseError::Disabled => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        IseError::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, "Basic realm=\"mtd-connector\"")],
            "",
        )
            .into_response(),
        IseError::BadRequest(m) => (
            StatusCode::BAD_REQUEST,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{m}\n"),
        )
            .into_response(),
        IseError::Store(e) => {
            tracing::error!(error = %e, "Cannot answer Cisco ISE: the store failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<IseTenant, IseError> {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    service(state).authenticate(header)
}

/// `v1`, `v2`, `v3` (the path `mdminfo` announced); anything else is not ours.
fn version_of(segment: &str) -> Result<u8, IseError> {
    segment
        .strip_prefix('v')
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| (xml::MIN_VERSION..=xml::MAX_VERSION).contains(n))
        .ok_or_else(|| {
            IseError::BadRequest(format!(
                "unknown API version `{segment}`: the paths are /ciscoise/mdmapi/v1, v2 and v3"
            ))
        })
}

async fn mdminfo(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let started = Instant::now();
    let t = match authenticate(&state, &headers) {
        Ok(t) => t,
        Err(e) => return error(e),
    };
    let result = service(&state).mdm_info(&t, q.get("ise_api_version").map(String::as_str));
    answer(result, Some(&t), "mdminfo", started)
}

#[derive(Debug, Deserialize, Default)]
struct DevicesParams {
    paging: Option<String>,
    querycriteria: Option<String>,
    value: Option<String>,
    deviceidentifier: Option<String>,
}

async fn devices(
    State(state): State<AppState>,
    Path(version): Path<String>,
    headers: HeaderMap,
    Query(q): Query<DevicesParams>,
) -> Response {
    let query = DeviceQuery {
        paging: q.paging,
        querycriteria: q.querycriteria,
        value: q.value,
        deviceidentifier: q.deviceidentifier,
    };
    devices_answer(&state, &version, &headers, &query).await
}

/// v1: `{api_path}/devices/{paging}/{criterion}/{value}/{filter}`.
async fn devices_v1(
    State(state): State<AppState>,
    Path((version, paging, criterion, value, _filter)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
    headers: HeaderMap,
) -> Response {
    let query = DeviceQuery {
        paging: Some(paging),
        querycriteria: Some(criterion),
        value: Some(value),
        deviceidentifier: None,
    };
    devices_answer(&state, &version, &headers, &query).await
}

/// v1: `{api_path}/devices/{paging}/all`, every device.
async fn devices_v1_all(
    State(state): State<AppState>,
    Path((version, paging, _filter)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let query = DeviceQuery {
        paging: Some(paging),
        ..DeviceQuery::default()
    };
    devices_answer(&state, &version, &headers, &query).await
}

async fn devices_answer(
    state: &AppState,
    version: &str,
    headers: &HeaderMap,
    query: &DeviceQuery,
) -> Response {
    let started = Instant::now();
    let t = match authenticate(state, headers) {
        Ok(t) => t,
        Err(e) => return error(e),
    };
    let version = match version_of(version) {
        Ok(v) => v,
        Err(e) => return error(e),
    };
    match service(state).devices(&t, version, query).await {
        Ok((operation, body)) => answer(Ok(body), Some(&t), operation, started),
        Err(e) => error(e),
    }
}

async fn batch(
    State(state): State<AppState>,
    Path(version): Path<String>,
    headers: HeaderMap,
    Query(q): Query<DevicesParams>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let t = match authenticate(&state, &headers) {
        Ok(t) => t,
        Err(e) => return error(e),
    };
    let result = async {
        let version = version_of(&version)?;
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let mut values = if body.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            xml::parse_batch_request(xml::request_xml(content_type, &body))
                .map_err(|e| IseError::BadRequest(format!("the body is not a batch query: {e}")))?
        };
        values.extend(q.value.iter().cloned());
        service(&state)
            .batch(&t, version, q.querycriteria.as_deref(), &values)
            .await
    }
    .await;
    answer(result, Some(&t), "batchdevices", started)
}

async fn action(
    State(state): State<AppState>,
    Path(version): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let action_type = q.get("actionType").cloned().unwrap_or_default();
    action_answer(&state, &version, &headers, &action_type, &body).await
}

/// `…/action/actionType=pin_lock`, Cisco's own way of writing it.
async fn action_in_path(
    State(state): State<AppState>,
    Path((version, spec)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let action_type = spec
        .strip_prefix("actionType=")
        .map(str::to_owned)
        .or_else(|| q.get("actionType").cloned())
        .unwrap_or(spec);
    action_answer(&state, &version, &headers, &action_type, &body).await
}

async fn action_answer(
    state: &AppState,
    version: &str,
    headers: &HeaderMap,
    action_type: &str,
    body: &[u8],
) -> Response {
    let started = Instant::now();
    let t = match authenticate(state, headers) {
        Ok(t) => t,
        Err(e) => return error(e),
    };
    let result = async {
        let version = version_of(version)?;
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let identifiers = xml::parse_action_request(xml::request_xml(content_type, body))
            .map_err(|e| IseError::BadRequest(format!("the body is not an action request: {e}")))?;
        service(state)
            .action(&t, version, action_type, &identifiers)
            .await
    }
    .await;
    answer(result, Some(&t), "action", started)
}

/// `sendmessage`: `mdminfo` says `messaging_support=false`; an ISE that
/// sends one anyway gets `message_status=false` for each device.
async fn message(
    State(state): State<AppState>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let t = match authenticate(&state, &headers) {
        Ok(t) => t,
        Err(e) => return error(e),
    };
    let result = (|| {
        let version = version_of(&version)?;
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let identifiers = xml::parse_message_request(xml::request_xml(content_type, &body))
            .map_err(|e| IseError::BadRequest(format!("the body is not a message request: {e}")))?;
        let results: Vec<xml::MessageResult> = identifiers
            .iter()
            .map(|i| {
                xml::MessageResult::not_supported(
                    i.device_key()
                        .unwrap_or_else(|| xml::DeviceKey::MacAddress(i.value().trim().to_owned())),
                )
            })
            .collect();
        Ok(xml::message_response(version, &results))
    })();
    answer(result, Some(&t), "sendmessage", started)
}
