//! The admin console (CONTRACT §8): server-rendered HTML at `/console/`
//! (`/` redirects there), for admins in a browser, with no JavaScript and no
//! external asset (one stylesheet, embedded in the binary).
//!
//! The admin token is asked once at `/console/login`; then an `HttpOnly`,
//! `SameSite=Strict` session cookie (`Secure` when the daemon serves HTTPS)
//! carries the session ([`session`]: in memory, so a restart logs admins out).
//! Every change is a form POST that must carry the session's anti-forgery
//! token and, when the browser sends an `Origin`, the daemon's own origin;
//! anything else is refused with 403 before it changes anything. The data
//! comes from the same store and service calls as the admin API's handlers
//! (`super::admin`), never from the HTTP API itself.

mod pages;
mod session;

use session::ABSOLUTE_TIMEOUT;

use super::admin::{self, AdminError};
use super::AppState;
use crate::actions::ActionsError;
use crate::store::{ActionFilter, ActionRecordKind, DeviceFilter, Page};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN,
    REFERRER_POLICY, RETRY_AFTER, SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::Markup;
use session::{LoginRefused, Sessions, Valid};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// The policy of every console answer: nothing but our own stylesheet and
/// images, no script at all, forms only to ourselves, never in a frame.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Rows of a device or action list page.
const PAGE_SIZE: u32 = 50;

/// The console's routes, with their own session table (one per router, so
/// one per daemon), merged into the daemon's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(to_console))
        .route("/console", get(to_console))
        .route("/console/", get(overview))
        .route("/console/style.css", get(stylesheet))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/tenants/{tenant}/devices", get(devices))
        .route("/console/tenants/{tenant}/devices/{device_id}", get(device))
        .route("/console/tenants/{tenant}/actions", get(actions))
        .route("/console/tenants/{tenant}/actions/{action_id}", get(action))
        .route(
            "/console/tenants/{tenant}/actions/{action_id}/approve",
            post(approve),
        )
        .route(
            "/console/tenants/{tenant}/actions/{action_id}/cancel",
            post(cancel),
        )
        .route("/console/tenants/{tenant}/sync", post(sync_now))
        .route(
            "/console/tenants/{tenant}/cancel-wipes",
            get(cancel_wipes_page).post(cancel_wipes),
        )
        .layer(Extension(Arc::new(Sessions::default())))
        .layer(middleware::from_fn(security_headers))
}

/// The headers of every console answer (pages, redirects, errors, the stylesheet).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn to_console() -> Response {
    see_other("/console/")
}

/// A 303 to `location` (after a POST, the browser GETs it).
fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        include_str!("style.css"),
    )
        .into_response()
}

/// What the console answers when a request cannot be served: a page with a
/// plain message (never a secret, never an internal cause: that goes to the log).
#[derive(Debug)]
enum ConsoleError {
    /// No valid session: to the login page.
    LoggedOut,
    /// A POST without the session's anti-forgery token, or from another origin.
    Forbidden(&'static str),
    Status(StatusCode, String),
}

impl From<AdminError> for ConsoleError {
    fn from(e: AdminError) -> Self {
        let (status, message) = match e {
            AdminError::TenantNotFound => (StatusCode::NOT_FOUND, "No tenant with this id.".into()),
            AdminError::Action(ActionsError::NotFound) => (
                StatusCode::NOT_FOUND,
                "The tenant has no action with this id.".into(),
            ),
            AdminError::Action(ActionsError::DeviceNotFound) => (
                StatusCode::NOT_FOUND,
                "The tenant has no device with this id.".into(),
            ),
            AdminError::Action(ActionsError::NotHeld(state)) => (
                StatusCode::CONFLICT,
                format!("Only a held action can be approved; this one is {state}."),
            ),
            AdminError::Action(ActionsError::NotCancellable { state, message }) => (
                StatusCode::CONFLICT,
                format!("This action ({state}) cannot be cancelled: {message}."),
            ),
            AdminError::MdmDisabled(mdm) => (
                StatusCode::CONFLICT,
                format!("MDM {mdm} has enabled = false in the tenant file: it is not synced."),
            ),
            AdminError::InvalidParam { name, message } => {
                (StatusCode::BAD_REQUEST, format!("{name}: {message}"))
            }
            other => {
                // The admin API's answer logs the cause (a 500 at ERROR, a
                // 503 at WARN) in the request's span; only its status is shown.
                let status = other.into_response().status();
                (
                    status,
                    "The request could not be carried out; the daemon's log has the cause.".into(),
                )
            }
        };
        ConsoleError::Status(status, message)
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match self {
            ConsoleError::LoggedOut => see_other("/console/login"),
            ConsoleError::Forbidden(why) => html(
                StatusCode::FORBIDDEN,
                pages::error(StatusCode::FORBIDDEN, why),
            ),
            ConsoleError::Status(status, message) => html(status, pages::error(status, &message)),
        }
    }
}

type Page_ = Result<Response, ConsoleError>;

/// The value of our cookie in the request, if any.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == session::COOKIE)
        .map(|(_, value)| value)
}

fn sessions(parts: &Parts) -> Arc<Sessions> {
    // The layer in `routes` puts the table on every request of these routes.
    parts
        .extensions
        .get::<Arc<Sessions>>()
        .cloned()
        .expect("the console's routes carry the session table")
}

/// A request of a logged-in admin: the extractor of every page but the login.
#[derive(Debug)]
struct Admin {
    session: Valid,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ConsoleError> {
        let config = state.config.load();
        let token = config.admin.token.as_ref().map(|t| t.expose());
        let id = session_cookie(&parts.headers).ok_or(ConsoleError::LoggedOut)?;
        sessions(parts)
            .check(id, token, Instant::now())
            .map(|session| Admin { session })
            .ok_or(ConsoleError::LoggedOut)
    }
}

/// The session table, for the login and logout handlers.
struct Table(Arc<Sessions>);

impl<S: Send + Sync> FromRequestParts<S> for Table {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Table(sessions(parts)))
    }
}

/// The fields of a form body (`application/x-www-form-urlencoded`).
#[derive(Debug)]
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether a form POST comes from the daemon's own pages: its `Origin`, when
/// it names one, is the daemon's own (the scheme it serves and the host the
/// browser addressed). Our `Referrer-Policy: no-referrer` makes browsers send
/// `Origin: null` for our own forms, so `null` passes only when the browser's
/// `Sec-Fetch-Site` says `same-origin`; so does any `Sec-Fetch-Site` present.
fn same_origin(headers: &HeaderMap, uri: &Uri, https: bool) -> bool {
    let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if fetch_site.is_some_and(|v| v != b"same-origin") {
        return false;
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    if origin.as_bytes() == b"null" {
        return fetch_site.is_some();
    }
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let (Ok(origin), Some(host)) = (origin.to_str(), host) else {
        return false;
    };
    let scheme = if https { "https" } else { "http" };
    origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
}

fn https(state: &AppState) -> bool {
    state.config.load().server.tls.is_some()
}

/// The form of a change, after its checks: the daemon's origin and the
/// session's anti-forgery token, in constant time. A refusal changes nothing.
fn checked_form(
    admin: &Admin,
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<Form, ConsoleError> {
    if !same_origin(headers, uri, https(state)) {
        return Err(ConsoleError::Forbidden(
            "Refused: the form was sent from another site.",
        ));
    }
    let form = Form::parse(body);
    match form.get("csrf") {
        Some(t) if session::csrf_matches(t, &admin.session.csrf) => Ok(form),
        _ => Err(ConsoleError::Forbidden(
            "Refused: the form lacks a valid anti-forgery token. Reload the page and try again.",
        )),
    }
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Table(t): Table,
) -> Response {
    // Already logged in: straight to the console.
    let config = state.config.load();
    let token = config.admin.token.as_ref().map(|t| t.expose());
    if session_cookie(&headers).is_some_and(|id| t.check(id, token, Instant::now()).is_some()) {
        return see_other("/console/");
    }
    html(StatusCode::OK, pages::login(None))
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Table(t): Table,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> Response {
    if !same_origin(&headers, &uri, https(&state)) {
        return ConsoleError::Forbidden("Refused: the form was sent from another site.")
            .into_response();
    }
    let form = Form::parse(&body);
    let config = state.config.load();
    let configured = config.admin.token.as_ref().map(|t| t.expose());
    let presented = form.get("token").unwrap_or("").trim();
    // Every connection the daemon serves carries its peer (src/http/serve.rs);
    // a router driven without one (a test's oneshot) counts as one client.
    let client = peer.map_or(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        |Extension(ConnectInfo(a))| a.ip(),
    );
    match t.login(presented, configured, client, Instant::now()) {
        Ok(id) => {
            tracing::info!("Admin logged in to the console");
            let secure = if config.server.tls.is_some() {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{}={id}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={}{secure}",
                session::COOKIE,
                ABSOLUTE_TIMEOUT.as_secs()
            );
            let mut r = see_other("/console/");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(SET_COOKIE, v);
            }
            r
        }
        Err(LoginRefused::WrongToken) => {
            tracing::warn!("Console login refused: wrong admin token");
            let message = if configured.is_some_and(|t| !t.is_empty()) {
                "That is not the admin token."
            } else {
                "No admin token is configured: set `token` in [admin] of the main config file."
            };
            html(StatusCode::UNAUTHORIZED, pages::login(Some(message)))
        }
        Err(LoginRefused::Throttled(wait)) => {
            tracing::warn!("Console login refused: too many failed attempts");
            let secs = wait.as_secs().max(1);
            let mut r = html(
                StatusCode::TOO_MANY_REQUESTS,
                pages::login(Some(&format!(
                    "Too many failed logins: try again in {secs} seconds."
                ))),
            );
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            r
        }
    }
}

async fn logout(
    admin: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Table(t): Table,
    body: Bytes,
) -> Page_ {
    checked_form(&admin, &state, &headers, &uri, &body)?;
    if let Some(id) = session_cookie(&headers) {
        t.end(id);
    }
    let mut r = see_other("/console/login");
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0",
        session::COOKIE
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(r)
}

/// `/console/`: every tenant with its MDMs' health and its devices per risk level.
async fn overview(admin: Admin, State(state): State<AppState>) -> Page_ {
    let config = state.config.load();
    let mut tenants = Vec::new();
    for t in &config.tenants {
        tenants.push((t, admin::read_status(&state, t).await?));
    }
    Ok(html(
        StatusCode::OK,
        pages::overview(&admin.session.csrf, &tenants),
    ))
}

/// The query of a console list: parsed leniently in form (empty = absent)
/// but strictly in value (an unknown risk level is a 400, not "all").
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn one_of<T: Copy>(
    pairs: &[(String, String)],
    name: &str,
    values: &[(&str, T)],
) -> Result<Option<T>, ConsoleError> {
    param(pairs, name)
        .map(|v| {
            values
                .iter()
                .find(|(s, _)| *s == v)
                .map(|(_, t)| *t)
                .ok_or_else(|| {
                    ConsoleError::Status(
                        StatusCode::BAD_REQUEST,
                        format!("{name}: not one of the listed values"),
                    )
                })
        })
        .transpose()
}

fn after(pairs: &[(String, String)]) -> Result<Option<i64>, ConsoleError> {
    param(pairs, "after")
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ConsoleError::Status(StatusCode::BAD_REQUEST, "after: not a row id".into())
            })
        })
        .transpose()
}

/// A positive id of the path, or the 404 of `missing`.
fn path_id(raw: &str, missing: ActionsError) -> Result<i64, ConsoleError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| AdminError::Action(missing).into())
}

/// The filters a device list page was asked for, to show them and page on.
#[derive(Debug, Default)]
pub(super) struct DeviceQuery {
    pub identifier: Option<String>,
    pub risk: Option<String>,
    pub activated: Option<String>,
    pub mdm: Option<String>,
}

/// `…/devices`: search by identifier, filter by risk, activation and MDM, paged.
async fn devices(
    admin: Admin,
    State(state): State<AppState>,
    axum::extract::Path(tenant_id): axum::extract::Path<String>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Page_ {
    let t = admin::tenant(&state, &tenant_id)?;
    let pairs = query_pairs(q.as_deref());
    let mdm_id = match param(&pairs, "mdm") {
        None => None,
        Some(name) => Some(
            state
                .sync
                .integrations()
                .find(|i| i.tenant_id == t.id && i.name == name)
                .map(|i| i.mdm_id)
                .ok_or_else(|| {
                    ConsoleError::Status(
                        StatusCode::BAD_REQUEST,
                        "mdm: the tenant has no MDM of that name".into(),
                    )
                })?,
        ),
    };
    let filter = DeviceFilter {
        identifier: param(&pairs, "identifier").map(str::to_string),
        risk: one_of(&pairs, "risk", admin::RISK_LEVELS)?,
        activated: one_of(&pairs, "activated", &[("true", true), ("false", false)])?,
        mdm_id,
        ..DeviceFilter::default()
    };
    let page = Page {
        after: after(&pairs)?,
        limit: PAGE_SIZE,
    };
    let listed = state
        .store
        .admin_devices(&t.id, &filter, page)
        .await
        .map_err(AdminError::from)?;
    let query = DeviceQuery {
        identifier: filter.identifier.clone(),
        risk: filter.risk.map(|r| r.as_str().to_string()),
        activated: param(&pairs, "activated").map(str::to_string),
        mdm: param(&pairs, "mdm").map(str::to_string),
    };
    Ok(html(
        StatusCode::OK,
        pages::devices(&admin.session.csrf, &t, &query, &listed),
    ))
}

/// `…/devices/{id}`: identifiers, posture, activation, open threats, recent actions.
async fn device(
    admin: Admin,
    State(state): State<AppState>,
    axum::extract::Path((tenant_id, raw)): axum::extract::Path<(String, String)>,
) -> Page_ {
    let t = admin::tenant(&state, &tenant_id)?;
    let id = path_id(&raw, ActionsError::DeviceNotFound)?;
    let detail = admin::read_device_detail(&state, &t.id, id).await?;
    Ok(html(
        StatusCode::OK,
        pages::device(&admin.session.csrf, &t, &detail),
    ))
}

/// `…/actions`: newest first, filtered by state, paged.
async fn actions(
    admin: Admin,
    State(state): State<AppState>,
    axum::extract::Path(tenant_id): axum::extract::Path<String>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Page_ {
    let t = admin::tenant(&state, &tenant_id)?;
    let pairs = query_pairs(q.as_deref());
    let filter = ActionFilter {
        state: one_of(&pairs, "state", admin::ACTION_STATES)?,
        ..ActionFilter::default()
    };
    let page = Page {
        after: after(&pairs)?,
        limit: PAGE_SIZE,
    };
    let listed = state
        .store
        .admin_actions(&t.id, &filter, page)
        .await
        .map_err(AdminError::from)?;
    Ok(html(
        StatusCode::OK,
        pages::actions(&admin.session.csrf, &t, filter.state, &listed),
    ))
}

/// `…/actions/{id}`: the action, its audit trail, Approve and Cancel.
async fn action(
    admin: Admin,
    State(state): State<AppState>,
    axum::extract::Path((tenant_id, raw)): axum::extract::Path<(String, String)>,
) -> Page_ {
    let t = admin::tenant(&state, &tenant_id)?;
    let id = path_id(&raw, ActionsError::NotFound)?;
    let a = state
        .store
        .admin_action(&t.id, id)
        .await
        .map_err(AdminError::from)?
        .ok_or(AdminError::Action(ActionsError::NotFound))?;
    let audit = state
        .store
        .action_audit(id)
        .await
        .map_err(AdminError::from)?;
    Ok(html(
        StatusCode::OK,
        pages::action(&admin.session.csrf, &t, &a, &audit),
    ))
}

/// Approve: a held action becomes pending. A destructive one (enterprise
/// wipe, wipe) first gets a confirmation page; only its form (`confirm=yes`)
/// approves.
async fn approve(
    admin: Admin,
    State(state): State<AppState>,
    axum::extract::Path((tenant_id, raw)): axum::extract::Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Page_ {
    let form = checked_form(&admin, &state, &headers, &uri, &body)?;
    let t = admin::tenant(&state, &tenant_id)?;
    let id = path_id(&raw, ActionsError::NotFound)?;
    let a = state
        .store
        .admin_action(&t.id, id)
        .await
        .map_err(AdminError::from)?
        .ok_or(AdminError::Action(ActionsError::NotFound))?;
    if a.action.kind.is_destructive() && form.get("confirm") != Some("yes") {
        return Ok(html(
            StatusCode::OK,
            pages::confirm_approve(&admin.session.csrf, &t, &a),
        ));
    }
    state
        .actions
        .approve(&t.id, id)
        .await
        .map_err(AdminError::from)?;
    Ok(see_other(&format!(
        "/console/tenants/{}/actions/{id}",
        t.id
    )))
}

async fn cancel(
    admin: Admin,
    State(state): State<AppState>,
    axum::extract::Path((tenant_id, raw)): axum::extract::Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Page_ {
    checked_form(&admin, &state, &headers, &uri, &body)?;
    let t = admin::tenant(&state, &tenant_id)?;
    let id = path_id(&raw, ActionsError::NotFound)?;
    state
        .actions
        .cancel(&t.id, id)
        .await
        .map_err(AdminError::from)?;
    Ok(see_other(&format!(
        "/console/tenants/{}/actions/{id}",
        t.id
    )))
}

/// "Sync now" of one MDM (form field `mdm`), as `POST …/sync?mdm=` does.
async fn sync_now(
    admin: Admin,
    State(state): State<AppState>,
    axum::extract::Path(tenant_id): axum::extract::Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Page_ {
    let form = checked_form(&admin, &state, &headers, &uri, &body)?;
    let t = admin::tenant(&state, &tenant_id)?;
    let mdm = form.get("mdm").filter(|m| !m.is_empty());
    let requested = admin::request_sync(&state, &t, mdm)?;
    tracing::info!(tenant = %t.id, mdms = requested.len(), "Full sync requested through the console");
    Ok(html(
        StatusCode::OK,
        pages::sync_requested(&admin.session.csrf, &t, &requested),
    ))
}

/// The confirmation page of "Cancel every pending wipe".
async fn cancel_wipes_page(
    admin: Admin,
    State(state): State<AppState>,
    axum::extract::Path(tenant_id): axum::extract::Path<String>,
) -> Page_ {
    let t = admin::tenant(&state, &tenant_id)?;
    let mut waiting = 0;
    for kind in [ActionRecordKind::EnterpriseWipe, ActionRecordKind::Wipe] {
        for s in [
            crate::store::ActionState::Held,
            crate::store::ActionState::Pending,
            crate::store::ActionState::Failed,
        ] {
            let filter = ActionFilter {
                state: Some(s),
                kind: Some(kind),
                device_id: None,
            };
            let page = Page {
                after: None,
                limit: 500,
            };
            waiting += state
                .store
                .admin_actions(&t.id, &filter, page)
                .await
                .map_err(AdminError::from)?
                .items
                .len();
        }
    }
    Ok(html(
        StatusCode::OK,
        pages::confirm_cancel_wipes(&admin.session.csrf, &t, waiting),
    ))
}

/// Cancels every enterprise wipe and wipe of the tenant not yet handed to
/// its MDM (`POST …/actions/cancel-destructive`), once confirmed.
async fn cancel_wipes(
    admin: Admin,
    State(state): State<AppState>,
    axum::extract::Path(tenant_id): axum::extract::Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Page_ {
    let form = checked_form(&admin, &state, &headers, &uri, &body)?;
    let t = admin::tenant(&state, &tenant_id)?;
    if form.get("confirm") != Some("yes") {
        return Ok(see_other(&format!(
            "/console/tenants/{}/cancel-wipes",
            t.id
        )));
    }
    let ids = state
        .actions
        .cancel_destructive(&t.id)
        .await
        .map_err(AdminError::from)?;
    Ok(html(
        StatusCode::OK,
        pages::wipes_cancelled(&admin.session.csrf, &t, &ids),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; mtd_console=abc; b=2")]);
        assert_eq!(session_cookie(&h), Some("abc"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "mtd_console=xyz")]);
        assert_eq!(session_cookie(&h), Some("xyz"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "mtd_consolex=1")])),
            None
        );
    }

    #[test]
    fn only_the_daemons_own_origin_passes() {
        let uri: Uri = "/console/logout".parse().unwrap();
        let host = ("host", "127.0.0.1:8080");
        let own = headers(&[host, ("origin", "http://127.0.0.1:8080")]);
        assert!(same_origin(&own, &uri, false));
        assert!(!same_origin(&own, &uri, true), "https is another origin");
        for bad in ["http://evil.example", "null", "http://127.0.0.1:8081"] {
            let h = headers(&[host, ("origin", bad)]);
            assert!(!same_origin(&h, &uri, false), "{bad}");
        }
        assert!(same_origin(&headers(&[host]), &uri, false), "no Origin");
        // What a current browser sends for our forms under no-referrer.
        let ours = headers(&[host, ("origin", "null"), ("sec-fetch-site", "same-origin")]);
        assert!(same_origin(&ours, &uri, false));
        for site in ["cross-site", "same-site", "none"] {
            let h = headers(&[host, ("origin", "null"), ("sec-fetch-site", site)]);
            assert!(!same_origin(&h, &uri, false), "{site}");
            let h = headers(&[
                host,
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", site),
            ]);
            assert!(!same_origin(&h, &uri, false), "{site}");
        }
    }
}
