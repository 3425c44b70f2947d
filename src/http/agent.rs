//! The agent API of CONTRACT §3: `POST /v1/agent/activate` and
//! `POST /v1/agent/events`.
//!
//! Every check that does not need the store lives in front of the handlers,
//! in this order:
//!
//! 1. **Size.** The routes carry a [`DefaultBodyLimit`] of 1 MiB, and
//!    [`SignedAgent`] refuses a larger `Content-Length` before reading a byte;
//!    a chunked body is cut off by the same limit while it is read. Both give
//!    413 with our JSON body, and no signature work is done for them.
//! 2. **Signature.** [`SignedAgent`] consumes the raw body (the signature is
//!    over the exact bytes, so it must see them before any JSON parsing) and
//!    checks `X-Mtd-Signature: v1=<hex HMAC-SHA256(agent_secret,
//!    "<timestamp>.<body>")>` in constant time, with a 300 s window around
//!    the server's clock. Missing headers, a malformed or wrong signature, a
//!    stale or future timestamp and an unknown tenant all end in the same
//!    401 `{"error":"unauthorized"}`; the HMAC is computed in every case (with
//!    a dummy key for an unknown tenant) so the answer time does not tell them
//!    apart either. The reason goes to the log, never the secret or signature.
//! 3. **Shape.** The handler parses the verified bytes: unparseable JSON is
//!    400 `invalid_json`; a missing or wrongly typed field is 400
//!    `invalid_field` naming its path (`events[1].threat.severity`), found by
//!    `serde_path_to_error`; then the types' own `validate()` runs.
//!
//! Handlers then call one service function of [`crate::ingest`] and map its
//! answer; nothing is stored before all three checks have passed.

use super::{ApiError, AppState};
use crate::config::{Config, TenantConfig};
use crate::ingest::signature::{mac, SIGNATURE_SCHEME};
use crate::ingest::{self, ActivateOutcome, ActivateRequest, AgentEvent};
use crate::metrics;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::Mac;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The largest accepted body (CONTRACT §3: "Bodies over 1 MiB get 413").
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The most events one request may carry.
pub const MAX_EVENTS: usize = 500;
/// How far the agent's timestamp may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 300;

const TENANT_HEADER: &str = "x-mtd-tenant";
const TIMESTAMP_HEADER: &str = "x-mtd-timestamp";
const SIGNATURE_HEADER: &str = "x-mtd-signature";
/// Keys the HMAC for an unknown tenant, so that refusal costs the same work.
const DUMMY_KEY: &[u8] = b"mtd-connector: no such tenant, compute anyway";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/agent/activate", post(activate))
        .route("/v1/agent/events", post(events))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// `POST /v1/agent/activate`: the stored device, found on demand if needed.
#[tracing::instrument(name = "agent_activate", skip_all, fields(tenant = %agent.tenant().id))]
async fn activate(State(state): State<AppState>, agent: SignedAgent) -> Result<Response, ApiError> {
    let answer = async {
        let request: ActivateRequest = decode(parse_object(&agent.body)?)?;
        request.validate()?;
        match ingest::activate(&state.ingest, agent.tenant(), &request).await? {
            ActivateOutcome::Found(device) => Ok(Json(json!({ "device": device })).into_response()),
            ActivateOutcome::NotEnrolled => Err(ApiError::DeviceNotEnrolled),
            ActivateOutcome::MdmUnavailable { retry_after } => {
                Err(ApiError::MdmUnavailable { retry_after })
            }
        }
    };
    answer
        .await
        .inspect_err(|e| e.count_refusal(Some(&agent.tenant().id)))
}

/// `POST /v1/agent/events`: 202 once the events and their actions are committed.
#[tracing::instrument(name = "agent_events", skip_all, fields(tenant = %agent.tenant().id, events))]
async fn events(State(state): State<AppState>, agent: SignedAgent) -> Result<Response, ApiError> {
    let config = agent.config.clone();
    let tenant = &config.tenants[agent.tenant].id;
    let refused = |e: &ApiError| e.count_refusal(Some(tenant));
    let events = parse_events(&agent.body).inspect_err(refused)?;
    tracing::Span::current().record("events", events.len());
    metrics::agent_events_received(tenant, events.len());
    let outcome = ingest::ingest_events(&state.ingest, agent.config.clone(), agent.tenant, events)
        .await
        .map_err(ApiError::from)
        .inspect_err(refused)?;
    metrics::agent_events_stored(tenant, outcome.accepted.len(), outcome.duplicates.len());
    Ok((StatusCode::ACCEPTED, Json(outcome)).into_response())
}

/// A request whose signature checked out: its tenant and its raw body.
///
/// Consumes the body, so it must be a handler's last argument.
#[derive(Debug)]
pub struct SignedAgent {
    config: Arc<Config>,
    /// Index of the signing tenant in `config.tenants`.
    tenant: usize,
    /// The exact bytes that were signed.
    pub body: Bytes,
}

impl SignedAgent {
    pub fn tenant(&self) -> &TenantConfig {
        &self.config.tenants[self.tenant]
    }
}

impl FromRequest<AppState> for SignedAgent {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        // Size first: an oversized body is refused before any key is touched.
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            ApiError::PayloadTooLarge.count_refusal(None);
            return Err(ApiError::PayloadTooLarge);
        }
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::InvalidJson("the request body could not be read".into())
                }
            })
            .inspect_err(|e| e.count_refusal(None))?;

        let now = chrono::Utc::now().timestamp();
        let config = state.config.load();
        match verify(&config, &headers, &body, now) {
            Ok(tenant) => Ok(SignedAgent {
                config,
                tenant,
                body,
            }),
            Err(refusal) => {
                let tenant = printable(header(&headers, TENANT_HEADER).unwrap_or(""));
                match refusal {
                    // A known tenant's agent with a wrong key or a drifting
                    // clock is worth an operator's look.
                    Refusal::BadSignature | Refusal::StaleTimestamp => {
                        tracing::info!(tenant = %tenant, reason = refusal.as_str(), "Agent request refused")
                    }
                    // Scanners and broken clients: noise unless debugging.
                    Refusal::MissingHeaders | Refusal::UnknownTenant => {
                        tracing::debug!(tenant = %tenant, reason = refusal.as_str(), "Agent request refused")
                    }
                }
                ApiError::Unauthorized.count_refusal(None);
                Err(ApiError::Unauthorized)
            }
        }
    }
}

/// Why a request was refused: for the log only, the client sees one 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    MissingHeaders,
    UnknownTenant,
    StaleTimestamp,
    BadSignature,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::MissingHeaders => "missing or malformed signature headers",
            Refusal::UnknownTenant => "unknown tenant",
            Refusal::StaleTimestamp => "timestamp outside the 300 s window",
            Refusal::BadSignature => "signature does not match",
        }
    }
}

/// Checks the three headers against the body; the index of the tenant on success.
///
/// Every path computes one HMAC over the body and compares it in constant
/// time, so a refusal costs the same whatever its reason.
fn verify(config: &Config, headers: &HeaderMap, body: &[u8], now: i64) -> Result<usize, Refusal> {
    let tenant = header(headers, TENANT_HEADER);
    let timestamp = header(headers, TIMESTAMP_HEADER);
    let signature = header(headers, SIGNATURE_HEADER)
        .and_then(|s| s.strip_prefix(SIGNATURE_SCHEME))
        .and_then(|s| hex::decode(s).ok());

    let index = tenant.and_then(|id| config.tenants.iter().position(|t| t.id == id));
    let key = match index {
        Some(i) => config.tenants[i].agent_secret.expose().as_bytes(),
        None => DUMMY_KEY,
    };
    let mac = mac(key, timestamp.unwrap_or("").as_bytes(), body);
    // An absent or undecodable signature compares as empty, which never matches.
    let signature_ok = mac
        .verify_slice(signature.as_deref().unwrap_or_default())
        .is_ok();

    let (Some(_), Some(timestamp), Some(_)) = (tenant, timestamp, signature.as_ref()) else {
        return Err(Refusal::MissingHeaders);
    };
    let Some(index) = index else {
        return Err(Refusal::UnknownTenant);
    };
    // Digits only: the signed text is the header as sent, so "+1" or " 1"
    // must not alias "1".
    let in_window = timestamp.bytes().all(|b| b.is_ascii_digit())
        && timestamp
            .parse::<i64>()
            .is_ok_and(|t| t.abs_diff(now) <= MAX_CLOCK_SKEW_SECONDS);
    if !in_window {
        return Err(Refusal::StaleTimestamp);
    }
    if !signature_ok {
        return Err(Refusal::BadSignature);
    }
    Ok(index)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The tenant header as it may appear in a log line: it is the client's
/// text, so it is cut short and stripped of control characters.
fn printable(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// The body as a JSON object, or 400 `invalid_json`.
fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidJson(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::InvalidJson(e.to_string())),
    }
}

/// A typed value, or 400 `invalid_field` with the path of the offending field.
fn decode<T: DeserializeOwned>(object: serde_json::Map<String, Value>) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(Value::Object(object)).map_err(|e| {
        let parent = e.path().to_string();
        let message = e.inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'));
        let field = match (parent.as_str(), missing) {
            (".", Some(name)) => name.to_string(),
            (_, Some(name)) => format!("{parent}.{name}"),
            (".", None) => String::new(),
            (_, None) => parent,
        };
        ApiError::InvalidField { field, message }
    })
}

#[derive(Deserialize)]
struct Batch {
    events: Vec<AgentEvent>,
}

/// One event, or `{"events":[…]}` of 1 to `MAX_EVENTS` (500), each validated.
///
/// Public for the ingest benchmark's baseline, which parses as the daemon does.
///
/// A well-formed body is parsed once, straight into the typed events; only
/// a body that fails that is parsed again through [`Value`], whose answers
/// name the offending field (the same answers as before, since the typed
/// parse of a well-formed body is the same as through `Value`).
pub fn parse_events(body: &[u8]) -> Result<Vec<AgentEvent>, ApiError> {
    let (events, batch) = match parse_typed(body) {
        Some(parsed) => parsed,
        None => parse_events_slowly(body)?,
    };
    for (i, event) in events.iter().enumerate() {
        event
            .validate()
            .map_err(|e| if batch { e.in_batch(i) } else { e })?;
    }
    Ok(events)
}

/// Whether the body may be a batch: it holds the text `"events"` somewhere.
fn has_events_key(body: &[u8]) -> bool {
    body.windows(8).any(|w| w == b"\"events\"")
}

/// The typed parse of a well-formed body, or `None` to take the slow path.
/// A body without `"events"` anywhere cannot be a batch; one with it is
/// taken as a batch here only when it parses as one, else the slow path
/// decides (it may be a single event with an "events" text in a value).
fn parse_typed(body: &[u8]) -> Option<(Vec<AgentEvent>, bool)> {
    if has_events_key(body) {
        let batch: Batch = serde_json::from_slice(body).ok()?;
        (!batch.events.is_empty() && batch.events.len() <= MAX_EVENTS)
            .then_some((batch.events, true))
    } else {
        serde_json::from_slice::<AgentEvent>(body)
            .ok()
            .map(|e| (vec![e], false))
    }
}

/// The slow path: through [`Value`], so each refusal names its field.
/// Returns the events unvalidated, and whether the body was a batch.
fn parse_events_slowly(body: &[u8]) -> Result<(Vec<AgentEvent>, bool), ApiError> {
    let object = parse_object(body)?;
    if !object.contains_key("events") {
        let event: AgentEvent = decode(object)?;
        return Ok((vec![event], false));
    }
    match object.get("events") {
        Some(Value::Array(list)) if list.len() > MAX_EVENTS => return Err(ApiError::TooManyEvents),
        Some(Value::Array(list)) if list.is_empty() => {
            return Err(ApiError::InvalidField {
                field: "events".into(),
                message: "must hold at least one event".into(),
            })
        }
        _ => {}
    }
    let batch: Batch = decode(object)?;
    Ok((batch.events, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<Vec<AgentEvent>, ApiError>) -> String {
        match r {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("expected invalid_field, got {other:?}"),
        }
    }

    const GOOD: &str = r#"{"event_id":"e1","detected_at":"2026-11-22T10:00:00Z","device":{"udid":"abc"},
        "threat":{"type":"network.arp_mitm","severity":"high"}}"#;

    #[test]
    fn a_missing_field_is_named_by_its_full_path() {
        let body = r#"{"event_id":"e1","detected_at":"2026-11-22T10:00:00Z","device":{"udid":"a"},"threat":{"type":"network.scan"}}"#;
        assert_eq!(field_of(parse_events(body.as_bytes())), "threat.severity");
        let body =
            r#"{"event_id":"e1","detected_at":"2026-11-22T10:00:00Z","device":{"udid":"a"}}"#;
        assert_eq!(field_of(parse_events(body.as_bytes())), "threat");
        let batch = format!(r#"{{"events":[{GOOD},{{"event_id":"e2"}}]}}"#);
        assert_eq!(
            field_of(parse_events(batch.as_bytes())),
            "events[1].detected_at"
        );
    }

    #[test]
    fn a_wrongly_typed_field_is_named_by_its_path() {
        let bad = GOOD.replace(r#""high""#, r#""extreme""#);
        assert_eq!(field_of(parse_events(bad.as_bytes())), "threat.severity");
        let bad = GOOD.replace(r#""2026-11-22T10:00:00Z""#, "12");
        assert_eq!(field_of(parse_events(bad.as_bytes())), "detected_at");
        let batch = format!(r#"{{"events":[{GOOD},{bad}]}}"#);
        assert_eq!(
            field_of(parse_events(batch.as_bytes())),
            "events[1].detected_at"
        );
        assert_eq!(field_of(parse_events(br#"{"events":{}}"#)), "events");
    }

    /// The typed parse (one pass) and the `Value` path give the same events
    /// for every well-formed body, including a single event whose values
    /// hold the text "events" (not a batch, so its refusals are not
    /// prefixed with `events[0]`).
    #[test]
    fn the_one_pass_parse_agrees_with_the_value_path() {
        let named = GOOD.replace(
            r#""severity":"high""#,
            r#""severity":"high","name":"\"events\"""#,
        );
        let bodies = [
            GOOD.to_string(),
            named.clone(),
            format!(r#"{{"events":[{GOOD},{named}]}}"#),
            format!(r#"{{"events":[{named}]}}"#),
        ];
        for body in &bodies {
            let (typed, batch) = parse_typed(body.as_bytes()).expect("well-formed");
            let (slow, slow_batch) = parse_events_slowly(body.as_bytes()).unwrap();
            assert_eq!(batch, slow_batch, "{body}");
            assert_eq!(format!("{typed:?}"), format!("{slow:?}"), "{body}");
        }
        assert!(!parse_typed(named.as_bytes()).unwrap().1);
        // A single event failing validation names its field without a batch prefix.
        let invalid = named.replace(r#""event_id":"e1""#, r#""event_id":"""#);
        assert_eq!(field_of(parse_events(invalid.as_bytes())), "event_id");
    }

    #[test]
    fn one_event_or_a_batch_is_accepted() {
        assert_eq!(parse_events(GOOD.as_bytes()).unwrap().len(), 1);
        let batch = format!(r#"{{"events":[{GOOD},{GOOD}]}}"#);
        assert_eq!(parse_events(batch.as_bytes()).unwrap().len(), 2);
    }
}
