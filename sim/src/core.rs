//! What every vendor simulator shares: the request and action recorder, the
//! fault plan, the middleware that applies both to the vendor's paths, and the
//! common part of the control API (`/_sim/{kind}/requests`, `/actions`,
//! `/records`, `/faults`).
//!
//! A vendor module owns a [`SimCore`] and supplies two vendor-specific things:
//! which of its paths is the authentication endpoint (faults skip it unless a
//! fault says otherwise) and how an injected error status looks in its own
//! error JSON.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::{to_bytes, Body, Bytes},
    extract::{ConnectInfo, OriginalUri, Request, State},
    http::{header, HeaderValue, StatusCode, Uri},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{delete, get},
    Json, Router,
};
use chrono::{DateTime, Utc};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{conn::ConnHandle, util::lock, SimKind};

/// Request bodies larger than this are refused with 413 before recording.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One request to a vendor path, as received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Increases by one per recorded request, from 1.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub method: String,
    /// The request target exactly as sent: full path (with the vendor's base
    /// path) and raw query string, not decoded.
    pub path: String,
    /// Every header, in arrival order (values lossily decoded as UTF-8).
    pub headers: Vec<(String, String)>,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
    /// The status answered; `None` while in flight or when the connection was
    /// dropped without an answer.
    pub status: Option<u16>,
    /// Which injected fault, if any, decided the answer (`"status"`, `"html"`,
    /// `"redirect"`, `"drop"`, `"drop_after"`) or changed how it was served
    /// (`"repeat_page"`).
    pub fault: Option<String>,
}

impl RecordedRequest {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One action call a vendor simulator received (accepted or rejected).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedAction {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub kind: SimKind,
    /// The device reference as it appeared in the request (e.g. `mac:…`).
    pub device_ref: String,
    /// The vendor's id of the device it resolved to, if it exists.
    pub device_id: Option<String>,
    /// The action name: SOTI's `Action` field, or `Install`/`Revoke` for a
    /// profile call (each vendor module says what it records). A risk
    /// signal write is named after what it writes: `SetCustomAttribute:{name}={value}`
    /// (SOTI, MaaS360; SOTI also `ClearCustomAttribute:{name}`),
    /// `AddTag:{tag}` / `RemoveTag:{tag}` (AirWatch, one per device),
    /// `Risk:{level}` (BCDM).
    pub action: String,
    /// For profile calls, the profile id.
    pub profile_id: Option<String>,
    /// The request body: parsed JSON when it was JSON, otherwise a string.
    pub body: Value,
    /// The status answered.
    pub status: u16,
}

/// An injected fault, as accepted by `POST /_sim/{kind}/faults` and by
/// [`SimCore::inject`]. Exactly one of `status`, `latency_ms`, `drop`,
/// `drop_after`, `redirect_to`, `repeat_page` is set (`redirect_to` may
/// carry a 3xx `status`).
///
/// ```json
/// {"status":503,"count":5}
/// {"status":429,"retry_after":2,"count":1}
/// {"status":429,"retry_after":18446744073709551615} // a huge Retry-After
/// {"latency_ms":250}                       // every request until cleared
/// {"drop":true,"count":1,"path_contains":"/devices"}
/// {"status":503,"probability":0.1,"seed":7} // 10 % of requests, replayable
/// {"drop_after":true,"count":1}            // served, then the answer is lost
/// {"redirect_to":"http://127.0.0.1:9/x"}   // 307 to another origin
/// {"status":200,"html":true}               // a sign-in page instead of the answer
/// {"repeat_page":true,"path_contains":"/devices"} // paging ignored: the first page forever
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Answer with this status (and the vendor's error body) instead of
    /// serving the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// With `status`: also send `Retry-After: <seconds>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Delay the request by this many milliseconds, then serve it normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Close the connection without any answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop: bool,
    /// Serve the request (an action takes effect and is recorded), then close
    /// the connection instead of answering: the client cannot tell whether
    /// the MDM acted, as when a response is lost on the way back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_after: bool,
    /// Answer a redirect to this `Location` (any string a header can carry:
    /// another origin, or a path on this one) instead of serving the
    /// request; with `status` (a 3xx) that status, else 307, which keeps the
    /// method and the body, as a client that follows it would resend them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    /// With `status`: the body is an HTML sign-in page (as a login portal or
    /// a proxy in front of the MDM answers), not the vendor's error JSON.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub html: bool,
    /// Serve the request as if it asked for the first page: the vendor's
    /// paging parameter (SOTI `skip`, AirWatch `page`, BCDM `offset`) is reset,
    /// so a listing gets the same page however far it pages, as from an MDM
    /// that ignores paging.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat_page: bool,
    /// How many matching requests this fault applies to; absent = all of them
    /// until the faults are cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Also apply to the vendor's authentication endpoint (off by default, so
    /// a "503 for the next 5 requests" hits API calls, not token requests).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_token: bool,
    /// Only apply to requests whose path contains this string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
    /// Apply to each matching request only with this probability (0 to 1),
    /// drawn from a generator of this fault's own seeded with `seed`: a flaky
    /// MDM ("30 % of requests fail") whose decisions replay for the same
    /// sequence of requests. `count` counts only the requests it applied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// The seed of `probability`'s generator (0 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Fault {
    /// Answer `status` instead of serving the request.
    pub fn status(status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// 429 with `Retry-After: retry_after_seconds`.
    pub fn rate_limited(retry_after_seconds: u64) -> Self {
        Self {
            status: Some(429),
            retry_after: Some(retry_after_seconds),
            ..Self::default()
        }
    }

    /// Delay requests by `latency`, then serve them.
    pub fn latency(latency: Duration) -> Self {
        Self {
            latency_ms: Some(latency.as_millis() as u64),
            ..Self::default()
        }
    }

    /// Close the connection without an answer.
    pub fn drop_connection() -> Self {
        Self {
            drop: true,
            ..Self::default()
        }
    }

    /// Serve the request, then close the connection without the answer.
    pub fn drop_answer() -> Self {
        Self {
            drop_after: true,
            ..Self::default()
        }
    }

    /// Answer `307 Temporary Redirect` with `Location: location`.
    pub fn redirect(location: impl Into<String>) -> Self {
        Self {
            redirect_to: Some(location.into()),
            ..Self::default()
        }
    }

    /// Answer `status` with an HTML sign-in page.
    pub fn html_page(status: u16) -> Self {
        Self {
            status: Some(status),
            html: true,
            ..Self::default()
        }
    }

    /// Serve every matching listing request as its first page.
    pub fn repeat_page() -> Self {
        Self {
            repeat_page: true,
            ..Self::default()
        }
    }

    /// Limit the fault to the next `count` matching requests.
    pub fn times(mut self, count: u32) -> Self {
        self.count = Some(count);
        self
    }

    /// Add `Retry-After` to a status fault.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Let the fault hit the authentication endpoint too.
    pub fn including_token(mut self) -> Self {
        self.include_token = true;
        self
    }

    /// Only requests whose path contains `fragment`.
    pub fn on_paths(mut self, fragment: impl Into<String>) -> Self {
        self.path_contains = Some(fragment.into());
        self
    }

    /// Apply to each matching request only with `probability` (0 to 1),
    /// decided by a generator seeded with `seed`.
    pub fn with_probability(mut self, probability: f64, seed: u64) -> Self {
        self.probability = Some(probability);
        self.seed = Some(seed);
        self
    }

    /// Checks that the fault says one thing and says it sensibly.
    pub fn validate(&self) -> Result<(), String> {
        let kinds = [
            // A redirect's status is part of the redirect.
            self.status.is_some() || self.redirect_to.is_some(),
            self.latency_ms.is_some(),
            self.drop,
            self.drop_after,
            self.repeat_page,
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if kinds != 1 {
            return Err(
                "a fault needs exactly one of `status`, `latency_ms`, `drop`, `drop_after`, `redirect_to`, `repeat_page`".into(),
            );
        }
        if let Some(status) = self.status {
            if StatusCode::from_u16(status).is_err() || status < 100 {
                return Err(format!("`status` {status} is not an HTTP status"));
            }
        }
        if let Some(location) = &self.redirect_to {
            if location.trim().is_empty() || HeaderValue::from_str(location).is_err() {
                return Err(format!(
                    "`redirect_to` {location:?} cannot be a Location header"
                ));
            }
            if self.status.is_some_and(|s| !(300..400).contains(&s)) {
                return Err("`status` with `redirect_to` must be a 3xx".into());
            }
        }
        if self.retry_after.is_some() && (self.status.is_none() || self.redirect_to.is_some()) {
            return Err("`retry_after` only goes with `status`".into());
        }
        if self.html && (self.status.is_none() || self.redirect_to.is_some()) {
            return Err("`html` only goes with `status`".into());
        }
        if let Some(p) = self.probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("`probability` {p} is not between 0 and 1"));
            }
        }
        if self.seed.is_some() && self.probability.is_none() {
            return Err("`seed` only goes with `probability`".into());
        }
        Ok(())
    }
}

/// A fault in the plan, with what is left of its count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveFault {
    pub id: u64,
    #[serde(flatten)]
    pub fault: Fault,
    /// `None`: applies until cleared.
    pub remaining: Option<u32>,
}

/// A fault in the plan with the generator of its `probability`, if it has one.
#[derive(Debug)]
struct Planned {
    active: ActiveFault,
    rng: Option<StdRng>,
}

impl Planned {
    /// Whether the fault applies to this (matching) request: always without
    /// a probability, otherwise by one draw of its generator.
    fn fires(&mut self) -> bool {
        match (self.active.fault.probability, self.rng.as_mut()) {
            (Some(p), Some(rng)) => rng.gen_bool(p),
            _ => true,
        }
    }
}

/// What the fault plan decided for one request.
#[derive(Debug, Default)]
struct Decision {
    latency: Duration,
    /// Serve the request as its listing's first page.
    repeat_page: bool,
    outcome: Option<Outcome>,
}

#[derive(Debug)]
enum Outcome {
    Status {
        status: u16,
        retry_after: Option<u64>,
        html: bool,
    },
    Redirect {
        status: u16,
        location: String,
    },
    Drop,
    /// Serve, then drop the connection instead of answering.
    DropAfter,
}

/// Renders an injected status as the vendor would answer it.
pub(crate) type FaultResponder = fn(StatusCode, Option<u64>) -> Response;

/// The query parameter that selects a listing's page, and its value for the
/// first page (`("skip", "0")`), for the `repeat_page` fault.
pub(crate) type FirstPage = (&'static str, &'static str);

/// The recorder and fault plan of one vendor simulator.
pub struct SimCore {
    kind: SimKind,
    /// Tells the middleware which path is the vendor's token/auth endpoint.
    is_auth_path: fn(&str) -> bool,
    first_page: FirstPage,
    fault_responder: FaultResponder,
    next_request_seq: AtomicU64,
    next_action_seq: AtomicU64,
    next_fault_id: AtomicU64,
    // std mutexes: held only for short, non-async sections.
    requests: Mutex<Vec<RecordedRequest>>,
    actions: Mutex<Vec<RecordedAction>>,
    faults: Mutex<Vec<Planned>>,
}

impl std::fmt::Debug for SimCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCore")
            .field("kind", &self.kind)
            .field("requests", &lock(&self.requests).len())
            .field("actions", &lock(&self.actions).len())
            .field("faults", &self.faults())
            .finish()
    }
}

impl SimCore {
    pub(crate) fn new(
        kind: SimKind,
        is_auth_path: fn(&str) -> bool,
        first_page: FirstPage,
        fault_responder: FaultResponder,
    ) -> Self {
        Self {
            kind,
            is_auth_path,
            first_page,
            fault_responder,
            next_request_seq: AtomicU64::new(1),
            next_action_seq: AtomicU64::new(1),
            next_fault_id: AtomicU64::new(1),
            requests: Mutex::new(Vec::new()),
            actions: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
        }
    }

    pub fn kind(&self) -> SimKind {
        self.kind
    }

    /// Every recorded vendor request, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    /// Every recorded action call, oldest first.
    pub fn actions(&self) -> Vec<RecordedAction> {
        lock(&self.actions).clone()
    }

    /// How many action calls were recorded, without copying them (for
    /// benchmarks that poll while thousands arrive).
    pub fn action_count(&self) -> usize {
        lock(&self.actions).len()
    }

    /// Forgets recorded requests and actions (sequence numbers keep growing).
    pub fn clear_records(&self) {
        lock(&self.requests).clear();
        lock(&self.actions).clear();
    }

    /// Adds a fault to the plan; returns its id.
    pub fn inject(&self, fault: Fault) -> Result<u64, String> {
        fault.validate()?;
        let id = self.next_fault_id.fetch_add(1, Ordering::Relaxed);
        let rng = fault
            .probability
            .map(|_| StdRng::seed_from_u64(fault.seed.unwrap_or(0)));
        lock(&self.faults).push(Planned {
            active: ActiveFault {
                id,
                remaining: fault.count,
                fault,
            },
            rng,
        });
        Ok(id)
    }

    /// The faults still in the plan.
    pub fn faults(&self) -> Vec<ActiveFault> {
        lock(&self.faults)
            .iter()
            .map(|p| p.active.clone())
            .collect()
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub(crate) fn record_action(&self, mut action: RecordedAction) {
        action.seq = self.next_action_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.actions).push(action);
    }

    fn begin_request(&self, mut request: RecordedRequest) -> u64 {
        let seq = self.next_request_seq.fetch_add(1, Ordering::Relaxed);
        request.seq = seq;
        lock(&self.requests).push(request);
        seq
    }

    fn finish_request(&self, seq: u64, status: Option<u16>, fault: Option<&str>) {
        let mut requests = lock(&self.requests);
        // Records are pushed in seq order, so a binary search finds ours unless
        // the records were cleared meanwhile (then there is nothing to update).
        if let Ok(i) = requests.binary_search_by_key(&seq, |r| r.seq) {
            requests[i].status = status;
            requests[i].fault = fault.map(str::to_owned);
        }
    }

    /// Consumes the faults that apply to a request to `path`: every matching
    /// latency fault adds its delay; the first matching status or drop fault
    /// decides the answer. A fault with a probability applies to a matching
    /// request only when its draw says so.
    #[cfg(test)]
    fn decide(&self, path: &str) -> Decision {
        self.decide_for(path, path)
    }

    /// As `decide`; `path_contains` is matched against the whole request
    /// target (path and query), so a fault can hit one page of a listing.
    fn decide_for(&self, path: &str, target: &str) -> Decision {
        let is_auth = (self.is_auth_path)(path);
        let mut decision = Decision::default();
        let mut faults = lock(&self.faults);
        for planned in faults.iter_mut() {
            let f = &planned.active.fault;
            if (is_auth && !f.include_token)
                || f.path_contains
                    .as_deref()
                    .is_some_and(|p| !target.contains(p))
            {
                continue;
            }
            // An outcome already decided leaves a status or drop fault unused,
            // so its draw is not spent either. Latency and repeat_page only
            // change how a request is served, so they always apply.
            let modifier = f.latency_ms.is_some() || f.repeat_page;
            if !modifier && decision.outcome.is_some() {
                continue;
            }
            if !planned.fires() {
                continue;
            }
            let active = &mut planned.active;
            let f = &active.fault;
            let consumed = if let Some(ms) = f.latency_ms {
                decision.latency += Duration::from_millis(ms);
                true
            } else if f.repeat_page {
                decision.repeat_page = true;
                true
            } else if decision.outcome.is_none() {
                decision.outcome = Some(if f.drop {
                    Outcome::Drop
                } else if f.drop_after {
                    Outcome::DropAfter
                } else if let Some(location) = &f.redirect_to {
                    Outcome::Redirect {
                        status: f.status.unwrap_or(307),
                        location: location.clone(),
                    }
                } else {
                    Outcome::Status {
                        // validate() guarantees one of the kinds is set.
                        status: f.status.unwrap_or(500),
                        retry_after: f.retry_after,
                        html: f.html,
                    }
                });
                true
            } else {
                false
            };
            if consumed {
                if let Some(n) = active.remaining.as_mut() {
                    *n = n.saturating_sub(1);
                }
            }
        }
        faults.retain(|p| p.active.remaining != Some(0));
        decision
    }
}

/// Middleware for a vendor's router: records the request, applies the fault
/// plan, records the answer's status.
pub(crate) async fn vendor_middleware(
    State(core): State<Arc<SimCore>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    // Nested routers see a stripped URI; the original one is what was sent.
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map(|o| o.0.clone())
        .unwrap_or_else(|| parts.uri.clone());
    let path = uri.path().to_owned();
    let target = uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let seq = core.begin_request(RecordedRequest {
        seq: 0,
        at: Utc::now(),
        method: parts.method.to_string(),
        path: target.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        status: None,
        fault: None,
    });

    let decision = core.decide_for(&path, &target);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    if decision.repeat_page {
        // The router sees the rewritten query; the record (and BCDM's
        // signature check, which reads `OriginalUri`) keeps what was sent.
        parts.uri = with_param(&parts.uri, core.first_page);
    }
    let served_fault = decision.repeat_page.then_some("repeat_page");
    match decision.outcome {
        Some(Outcome::Status {
            status,
            retry_after,
            html,
        }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            core.finish_request(
                seq,
                Some(status),
                Some(if html { "html" } else { "status" }),
            );
            if !html {
                return (core.fault_responder)(code, retry_after);
            }
            let mut response = html_page(code);
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        Some(Outcome::Redirect { status, location }) => {
            core.finish_request(seq, Some(status), Some("redirect"));
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT);
            // validate() checked that the location is a header value.
            let location =
                HeaderValue::from_str(&location).unwrap_or_else(|_| HeaderValue::from_static("/"));
            (code, [(header::LOCATION, location)]).into_response()
        }
        Some(Outcome::Drop) => {
            core.finish_request(seq, None, Some("drop"));
            match parts.extensions.get::<ConnectInfo<ConnHandle>>() {
                Some(ConnectInfo(handle)) => handle.kill(),
                // Only happens if the router is served without SimListener.
                None => tracing::warn!("Cannot drop a connection not accepted by SimListener."),
            }
            // Never written: the killed stream refuses the write.
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Some(Outcome::DropAfter) => {
            let handle = parts.extensions.get::<ConnectInfo<ConnHandle>>().cloned();
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            core.finish_request(seq, None, Some("drop_after"));
            match handle {
                Some(ConnectInfo(handle)) => handle.kill(),
                None => tracing::warn!("Cannot drop a connection not accepted by SimListener."),
            }
            // Never written: the killed stream refuses the write.
            response
        }
        None => {
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            core.finish_request(seq, Some(response.status().as_u16()), served_fault);
            response
        }
    }
}

/// `uri` with the query parameter `name` (matched case-insensitively, as the
/// vendors bind them) set to `value`; the rest of the query is kept as sent.
fn with_param(uri: &Uri, (name, value): FirstPage) -> Uri {
    let Some(query) = uri.query() else {
        return uri.clone();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case(name) => format!("{k}={value}"),
            _ => pair.to_owned(),
        })
        .collect();
    let target = format!("{}?{}", uri.path(), query.join("&"));
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = target.parse().ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// What a login portal or a proxy in front of an MDM answers: a page for a
/// browser, whatever the status.
fn html_page(status: StatusCode) -> Response {
    const PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body><form method=\"post\" action=\"/login\"><input name=\"username\"><input type=\"password\" name=\"password\"><button>Sign in</button></form></body></html>\n";
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PAGE,
    )
        .into_response()
}

/// The control routes every vendor shares, to be nested under `/_sim/{kind}`.
pub(crate) fn control_router(core: Arc<SimCore>) -> Router {
    Router::new()
        .route("/requests", get(list_requests))
        .route("/actions", get(list_actions))
        .route("/records", delete(clear_records))
        .route(
            "/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .with_state(core)
}

async fn list_requests(State(core): State<Arc<SimCore>>) -> Json<Vec<RecordedRequest>> {
    Json(core.requests())
}

async fn list_actions(State(core): State<Arc<SimCore>>) -> Json<Vec<RecordedAction>> {
    Json(core.actions())
}

async fn clear_records(State(core): State<Arc<SimCore>>) -> StatusCode {
    core.clear_records();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(core): State<Arc<SimCore>>) -> Json<Vec<ActiveFault>> {
    Json(core.faults())
}

async fn add_fault(State(core): State<Arc<SimCore>>, body: axum::body::Bytes) -> Response {
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match core.inject(fault) {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn clear_faults(State(core): State<Arc<SimCore>>) -> StatusCode {
    core.clear_faults();
    StatusCode::NO_CONTENT
}

/// Why a control operation failed (every vendor's control API answers with it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no such device or user")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = match self {
            ControlError::NotFound => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        control_error(status, &self.to_string())
    }
}

/// Parses a control API request body, a malformed one as [`ControlError::Invalid`].
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ControlError> {
    serde_json::from_slice(body)
        .map_err(|e| ControlError::Invalid(format!("invalid JSON body: {e}")))
}

/// Errors of the control API (not a vendor shape: `{"error": "…"}`).
pub(crate) fn control_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> SimCore {
        SimCore::new(
            SimKind::Soti,
            |p| p.ends_with("/token"),
            ("skip", "0"),
            |s, _| s.into_response(),
        )
    }

    #[test]
    fn the_outbound_safety_faults_parse_and_check_their_companions() {
        let parsed: Fault =
            serde_json::from_str(r#"{"redirect_to":"http://127.0.0.1:9/steal","count":1}"#)
                .unwrap();
        assert_eq!(parsed, Fault::redirect("http://127.0.0.1:9/steal").times(1));
        assert!(parsed.validate().is_ok());
        let mut found = Fault::redirect("/MobiControl/api/devices");
        found.status = Some(302);
        assert!(found.validate().is_ok(), "a relative Location and a 3xx");
        found.status = Some(200);
        assert!(found.validate().is_err(), "a redirect's status is a 3xx");
        assert!(Fault::redirect("").validate().is_err());
        assert!(Fault::redirect("http://a/\nX-Injected: 1")
            .validate()
            .is_err());
        let mut two = Fault::redirect("http://a/");
        two.drop = true;
        assert!(two.validate().is_err());

        let parsed: Fault = serde_json::from_str(r#"{"status":200,"html":true}"#).unwrap();
        assert_eq!(parsed, Fault::html_page(200));
        assert!(parsed.validate().is_ok());
        let mut html_alone = Fault::repeat_page();
        html_alone.html = true;
        assert!(html_alone.validate().is_err(), "`html` goes with `status`");

        let parsed: Fault =
            serde_json::from_str(r#"{"repeat_page":true,"path_contains":"/devices"}"#).unwrap();
        assert_eq!(parsed, Fault::repeat_page().on_paths("/devices"));
        assert!(parsed.validate().is_ok());
        let mut repeat_and_status = Fault::repeat_page();
        repeat_and_status.status = Some(503);
        assert!(repeat_and_status.validate().is_err());

        let huge: Fault =
            serde_json::from_str(r#"{"status":429,"retry_after":18446744073709551615}"#).unwrap();
        assert_eq!(huge, Fault::rate_limited(u64::MAX));
        assert!(huge.validate().is_ok());
        let mut redirect_retry = Fault::redirect("http://a/");
        redirect_retry.retry_after = Some(1);
        assert!(redirect_retry.validate().is_err());
    }

    #[test]
    fn repeat_page_applies_with_a_status_fault_and_a_redirect_decides_the_answer() {
        let core = core();
        core.inject(Fault::repeat_page().on_paths("/devices"))
            .unwrap();
        core.inject(Fault::redirect("http://127.0.0.1:9/x").times(1))
            .unwrap();
        let d = core.decide("/x/api/devices");
        assert!(d.repeat_page);
        assert!(matches!(
            d.outcome,
            Some(Outcome::Redirect { status: 307, ref location }) if location == "http://127.0.0.1:9/x"
        ));
        let d = core.decide("/x/api/devices");
        assert!(d.repeat_page, "until cleared");
        assert!(d.outcome.is_none());
        assert!(!core.decide("/x/api/devicegroups").repeat_page);
    }

    #[test]
    fn the_first_page_rewrite_resets_only_the_paging_parameter() {
        let uri: Uri = "/api/devices?Skip=500&take=100&filter=a%253Db"
            .parse()
            .unwrap();
        assert_eq!(
            with_param(&uri, ("skip", "0")).to_string(),
            "/api/devices?Skip=0&take=100&filter=a%253Db"
        );
        let uri: Uri = "/API/mdm/devices/search?page=3&pagesize=500"
            .parse()
            .unwrap();
        assert_eq!(
            with_param(&uri, ("page", "0")).to_string(),
            "/API/mdm/devices/search?page=0&pagesize=500"
        );
        let uri: Uri = "/api/v1/devices".parse().unwrap();
        assert_eq!(with_param(&uri, ("offset", "0")), uri);
    }

    #[test]
    fn faults_are_consumed_per_matching_request_and_skip_the_token_path() {
        let core = core();
        core.inject(Fault::status(503).times(2)).unwrap();
        assert!(core.decide("/x/api/token").outcome.is_none());
        assert!(matches!(
            core.decide("/x/api/devices").outcome,
            Some(Outcome::Status { status: 503, .. })
        ));
        assert!(core.decide("/x/api/devices").outcome.is_some());
        assert!(core.decide("/x/api/devices").outcome.is_none());
        assert!(core.faults().is_empty());
    }

    #[test]
    fn latency_adds_up_and_a_single_outcome_wins() {
        let core = core();
        core.inject(Fault::latency(Duration::from_millis(10)))
            .unwrap();
        core.inject(Fault::drop_connection().times(1).on_paths("/devices"))
            .unwrap();
        core.inject(Fault::status(500).times(1).including_token())
            .unwrap();
        let d = core.decide("/x/api/token");
        assert_eq!(d.latency, Duration::ZERO);
        assert!(matches!(
            d.outcome,
            Some(Outcome::Status { status: 500, .. })
        ));
        let d = core.decide("/x/api/devices");
        assert_eq!(d.latency, Duration::from_millis(10));
        assert!(matches!(d.outcome, Some(Outcome::Drop)));
        // The unlimited latency fault stays.
        assert_eq!(core.faults().len(), 1);
    }

    #[test]
    fn a_probable_fault_hits_about_its_share_and_the_same_seed_replays_it() {
        let run = |seed| {
            let core = core();
            core.inject(Fault::status(503).with_probability(0.3, seed))
                .unwrap();
            (0..2000)
                .map(|_| core.decide("/x/api/devices").outcome.is_some())
                .collect::<Vec<bool>>()
        };
        let first = run(7);
        let hits = first.iter().filter(|h| **h).count();
        assert!((500..700).contains(&hits), "{hits} of 2000");
        assert_eq!(first, run(7), "the same seed gives the same decisions");
        assert_ne!(first, run(8));
    }

    #[test]
    fn a_probable_fault_counts_only_the_requests_it_hit() {
        let core = core();
        core.inject(Fault::drop_connection().times(3).with_probability(0.5, 1))
            .unwrap();
        let hits = (0..100)
            .filter(|_| core.decide("/x/api/devices").outcome.is_some())
            .count();
        assert_eq!(hits, 3);
        assert!(core.faults().is_empty());
    }

    #[test]
    fn faults_that_say_nothing_or_two_things_are_refused() {
        assert!(Fault::default().validate().is_err());
        let mut both = Fault::status(503);
        both.drop = true;
        assert!(both.validate().is_err());
        assert!(Fault::status(42).validate().is_err());
        assert!(Fault::rate_limited(2).validate().is_ok());
        let parsed: Fault =
            serde_json::from_str(r#"{"status":429,"retry_after":2,"count":1}"#).unwrap();
        assert_eq!(parsed, Fault::rate_limited(2).times(1));
        assert!(serde_json::from_str::<Fault>(r#"{"stauts":429}"#).is_err());
        assert!(Fault::status(503)
            .with_probability(1.5, 1)
            .validate()
            .is_err());
        let mut seed_alone = Fault::status(503);
        seed_alone.seed = Some(1);
        assert!(seed_alone.validate().is_err());
        let parsed: Fault =
            serde_json::from_str(r#"{"status":503,"probability":0.3,"seed":9}"#).unwrap();
        assert_eq!(parsed, Fault::status(503).with_probability(0.3, 9));
    }
}
