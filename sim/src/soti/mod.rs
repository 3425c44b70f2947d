//! The SOTI MobiControl simulator, written from `MDM-APIS.md` and SOTI's
//! Swagger 2.0 spec (not from the SOTI adapter).
//!
//! Vendor API, under `http://ADDR/MobiControl` (also `/mobicontrol`: the spec's
//! `basePath` is lower-case and IIS does not care):
//!
//! | Request | Answer |
//! |---|---|
//! | `POST /api/token` (Basic client id:secret, form `grant_type=password&username&password`) | `{"access_token","token_type":"bearer","expires_in"}`; wrong client → 401 `{"error":"invalid_client"}`; wrong user/password → 400 `{"error":"invalid_grant"}`; other grant → 400 `{"error":"unsupported_grant_type"}` |
//! | every other call without a valid, unexpired `Bearer` token | 401 `{"ErrorMessage":"Authorization has been denied for this request."}` |
//! | `GET /api/devices?skip&take&path&filter` | bare array; `filter` is `Prop:Value,Prop:Value` |
//! | `GET /api/devices/search?groupPath&filter&includeSubgroups&skip&take` | bare array; values double URL-encoded; see the `filter` module for the grammar |
//! | `GET /api/devices/{id}` (`id`, `mac:{MAC}`, `imei_meid_esn:{IMEI}`) | the device or 404 |
//! | `GET /api/devicegroups?parentPath` | `[{"Name","Path","Icon","Kind","ReferenceId"}]` |
//! | `POST /api/devices/{id}/actions` | 204 when the body has the spec's required fields for its `Action`, else 400 |
//! | `POST /api/devices/{id}/profiles/{profileId}/actions` body `"Install"`/`"Revoke"` | 204 |
//! | `GET /api/customattributes` | the custom attribute definitions `[{"Name","CustomAttributeDataType","EnumValues","PropagateToDevice","ReferenceId"}]` |
//! | `GET /api/devices/{id}/customAttributes` | `[{"Name","OriginName","Value","DataType","IsInherited"}]`, one per definition (`Value` `null` when unset); unknown device → 404 |
//! | `PUT /api/devices/{id}/customAttributes` `{"Attributes":[{"AttributeName","AttributeValue"}]}` | 200, empty body; an undefined name or a value its type refuses → 400 (nothing written); unknown device → 404 (see [`attributes`]) |
//!
//! Paging is plain slicing of the device list in insertion order: `skip`
//! (default 0) devices are left out and at most `take` (default: all) are
//! returned; there is no total, and a page shorter than `take` (possibly
//! empty) is the last. Errors: 400/404 `{"ErrorCode":0,"ErrorMessage","Data",
//! "HelpLink"}`; 401/403/5xx `{"ErrorMessage"}` (the spec's "API Errors").
//!
//! Control API under `http://ADDR/_sim/soti` (JSON), besides the shared
//! `/requests`, `/actions`, `/records`, `/faults` (see [`crate::core`]):
//! `POST /tokens/expire`; `PUT /tokens/lifetime` `{"seconds":N}`;
//! `GET|POST /devices` (list / add one device object);
//! `POST /devices/generate` `{"count":N}`; `GET|PUT|PATCH|DELETE
//! /devices/{ref}` (PATCH sets the given top-level fields, `null` included);
//! `PUT /devices/{ref}/user` (a `DeviceUserInfo` object or `null`);
//! `GET /users`; `PATCH|DELETE /users/{UserName}` (edit the user on every
//! device it has / set those devices' `DeviceUserInfo` to null);
//! `GET|POST /custom-attribute-definitions` (POST `{"Name",
//! "CustomAttributeDataType","EnumValues"}`, type `Text` when absent);
//! `PATCH|DELETE /custom-attribute-definitions/{name}` (PATCH `{"Name":"new"}`
//! renames; the values follow); `GET /devices/{ref}/custom-attributes`
//! (`{"Name": value or null}`); `PUT /devices/{ref}/custom-attributes/{name}`
//! with a JSON string or `null` (a change behind the API's back, not
//! recorded). The same in-process: [`SotiState::custom_attribute`],
//! [`SotiState::set_custom_attribute`], [`SotiState::define_custom_attribute`],
//! [`SotiState::rename_custom_attribute`], [`SotiState::remove_custom_attribute`].
//!
//! Default credentials ([`SotiOptions::default`]): client id `mtd-sim`,
//! client secret `sim-secret`, user `mtd-api`, password `sim-password`,
//! tokens valid 3600 s.

pub mod attributes;
pub(crate) mod filter;
pub(crate) mod seed;

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{FromRequestParts, Path, RawQuery, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    middleware::from_fn_with_state,
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use chrono::Utc;
use rand::{distributions::Alphanumeric, Rng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub use crate::core::ControlError;

use self::seed::Seeder;
use super::{
    core::{self, json_body, vendor_middleware, RecordedAction, SimCore},
    util::{base64_decode, lock, normalize_mac, percent_decode, read, strip_prefix_ci, write},
    SimKind,
};

pub const DEFAULT_CLIENT_ID: &str = "mtd-sim";
pub const DEFAULT_CLIENT_SECRET: &str = "sim-secret";
pub const DEFAULT_USERNAME: &str = "mtd-api";
pub const DEFAULT_PASSWORD: &str = "sim-password";
pub const DEFAULT_TOKEN_LIFETIME_SECONDS: u64 = 3600;

/// Credentials the simulated server accepts, and how long its tokens live.
#[derive(Clone, PartialEq, Eq)]
pub struct SotiOptions {
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
    /// `expires_in` of issued tokens; 0 issues tokens that are already expired.
    pub token_lifetime_seconds: u64,
}

impl Default for SotiOptions {
    fn default() -> Self {
        Self {
            client_id: DEFAULT_CLIENT_ID.into(),
            client_secret: DEFAULT_CLIENT_SECRET.into(),
            username: DEFAULT_USERNAME.into(),
            password: DEFAULT_PASSWORD.into(),
            token_lifetime_seconds: DEFAULT_TOKEN_LIFETIME_SECONDS,
        }
    }
}

impl fmt::Debug for SotiOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SotiOptions")
            .field("client_id", &self.client_id)
            .field("client_secret", &"**REDACTED**")
            .field("username", &self.username)
            .field("password", &"**REDACTED**")
            .field("token_lifetime_seconds", &self.token_lifetime_seconds)
            .finish()
    }
}

/// A device user as the control API lists it: the `DeviceUserInfo` object and
/// the devices that carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SotiUser {
    pub user: Value,
    pub device_ids: Vec<String>,
}

/// The SOTI simulator's state: devices, tokens, options, recorder and faults.
pub struct SotiState {
    core: Arc<SimCore>,
    options: RwLock<SotiOptions>,
    /// Insertion order is the listing order (paging slices it).
    devices: RwLock<Vec<Value>>,
    /// Issued tokens and when each expires.
    tokens: Mutex<HashMap<String, Instant>>,
    /// Continues the seeded sequence for generated devices.
    seeder: Mutex<Seeder>,
    /// Custom attribute definitions and the values set per device.
    attributes: RwLock<attributes::CustomAttributes>,
    /// Where each `DeviceId` (lowercase) was in `devices` when last looked
    /// at: a hint checked on every use, rebuilt when wrong, so a lookup by id
    /// does not scan thousands of devices per action call.
    positions: Mutex<HashMap<String, usize>>,
}

impl fmt::Debug for SotiState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SotiState")
            .field("core", &self.core)
            .field("options", &*read(&self.options))
            .field("devices", &read(&self.devices).len())
            .field("tokens", &lock(&self.tokens).len())
            .finish()
    }
}

fn is_token_path(path: &str) -> bool {
    path.to_ascii_lowercase()
        .trim_end_matches('/')
        .ends_with("/api/token")
}

impl SotiState {
    /// Seeds `devices` devices from `seed`.
    pub fn new(seed: u64, devices: usize, options: SotiOptions) -> Self {
        let mut seeder = Seeder::new(seed, devices);
        let seeded = seeder.devices(devices);
        Self {
            core: Arc::new(SimCore::new(
                SimKind::Soti,
                is_token_path,
                ("skip", "0"),
                fault_response,
            )),
            options: RwLock::new(options),
            devices: RwLock::new(seeded),
            tokens: Mutex::new(HashMap::new()),
            seeder: Mutex::new(seeder),
            attributes: RwLock::new(attributes::CustomAttributes::seeded()),
            positions: Mutex::new(HashMap::new()),
        }
    }

    /// Recorder and fault plan.
    pub fn core(&self) -> &SimCore {
        &self.core
    }

    pub fn options(&self) -> SotiOptions {
        read(&self.options).clone()
    }

    /// Replaces credentials and token lifetime (tokens already issued stay valid).
    pub fn set_options(&self, options: SotiOptions) {
        *write(&self.options) = options;
    }

    /// Sets the `expires_in` of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        write(&self.options).token_lifetime_seconds = lifetime.as_secs();
    }

    /// Makes every issued token invalid now: the next API call answers 401.
    pub fn expire_tokens(&self) {
        lock(&self.tokens).clear();
    }

    /// Issues a token as `POST /api/token` would, for tests that do not care
    /// about the token dance.
    pub fn issue_token(&self) -> String {
        let lifetime = Duration::from_secs(read(&self.options).token_lifetime_seconds);
        let token: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(96)
            .map(char::from)
            .collect();
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        tokens.retain(|_, expiry| *expiry > now);
        tokens.insert(token.clone(), now + lifetime);
        token
    }

    fn token_is_valid(&self, token: &str) -> bool {
        lock(&self.tokens)
            .get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    /// All devices, in listing order.
    pub fn devices(&self) -> Vec<Value> {
        read(&self.devices).clone()
    }

    pub fn device_count(&self) -> usize {
        read(&self.devices).len()
    }

    /// The device a reference (`DeviceId`, `mac:…`, `imei_meid_esn:…`) names.
    pub fn device(&self, reference: &str) -> Option<Value> {
        let devices = read(&self.devices);
        self.position(&devices, reference)
            .map(|i| devices[i].clone())
    }

    /// [`find_device`], through `positions` for a plain `DeviceId`.
    fn position(&self, devices: &[Value], reference: &str) -> Option<usize> {
        let is_id = |i: usize| {
            devices
                .get(i)
                .and_then(|d| d.get("DeviceId"))
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case(reference))
        };
        let plain = strip_prefix_ci(reference, "mac:").is_none()
            && strip_prefix_ci(reference, "imei_meid_esn:").is_none();
        let mut positions = lock(&self.positions);
        if plain {
            if let Some(&i) = positions.get(&reference.to_ascii_lowercase()) {
                if is_id(i) {
                    return Some(i);
                }
            }
        }
        let found = find_device(devices, reference);
        if plain && found.is_some() {
            // Devices were added, removed or replaced since: index them again
            // (the first of equal ids, as the scan finds it).
            positions.clear();
            for (i, d) in devices.iter().enumerate() {
                if let Some(id) = d.get("DeviceId").and_then(Value::as_str) {
                    positions.entry(id.to_ascii_lowercase()).or_insert(i);
                }
            }
        }
        found
    }

    /// Appends a device object; it needs a unique string `DeviceId`.
    pub fn add_device(&self, device: Value) -> Result<(), ControlError> {
        let id = device
            .get("DeviceId")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ControlError::Invalid("a device needs a string `DeviceId`".into()))?
            .to_owned();
        let mut devices = write(&self.devices);
        if find_device(&devices, &id).is_some() {
            return Err(ControlError::Conflict(format!("device {id} exists")));
        }
        devices.push(device);
        Ok(())
    }

    /// Appends `count` newly generated devices (continuing the seeded
    /// sequence) and returns them.
    pub fn generate_devices(&self, count: usize) -> Vec<Value> {
        let new = lock(&self.seeder).devices(count);
        write(&self.devices).extend(new.iter().cloned());
        new
    }

    /// Removes a device (and its custom attribute values); later devices
    /// move up one place in the listing.
    pub fn remove_device(&self, reference: &str) -> Option<Value> {
        let removed = {
            let mut devices = write(&self.devices);
            find_device(&devices, reference).map(|i| devices.remove(i))
        };
        if let Some(id) = removed.as_ref().and_then(device_id_of) {
            write(&self.attributes).forget_device(&id);
        }
        removed
    }

    /// Sets the given top-level fields of a device (a `null` value is stored
    /// as `null`, not removed); returns the updated device.
    pub fn update_device(&self, reference: &str, fields: Map<String, Value>) -> Option<Value> {
        let mut devices = write(&self.devices);
        let i = find_device(&devices, reference)?;
        let object = devices[i].as_object_mut()?;
        for (k, v) in fields {
            object.insert(k, v);
        }
        Some(devices[i].clone())
    }

    /// Replaces a device object entirely (keeping its place in the listing).
    pub fn replace_device(&self, reference: &str, device: Value) -> Result<(), ControlError> {
        if !device.is_object() {
            return Err(ControlError::Invalid("a device is a JSON object".into()));
        }
        let mut devices = write(&self.devices);
        let i = find_device(&devices, reference).ok_or(ControlError::NotFound)?;
        devices[i] = device;
        Ok(())
    }

    /// Sets (`Some`) or clears (`None` → `DeviceUserInfo: null`) a device's user.
    pub fn set_device_user(&self, reference: &str, user: Option<Value>) -> Option<Value> {
        let mut fields = Map::new();
        fields.insert("DeviceUserInfo".into(), user.unwrap_or(Value::Null));
        self.update_device(reference, fields)
    }

    /// Every distinct device user (by `UserName`, case-insensitive), with the
    /// devices that carry it, in order of first appearance.
    pub fn users(&self) -> Vec<SotiUser> {
        let devices = read(&self.devices);
        let mut users: Vec<SotiUser> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for d in devices.iter() {
            let Some(user) = d.get("DeviceUserInfo").filter(|u| u.is_object()) else {
                continue;
            };
            let name = user
                .get("UserName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase();
            let id = d
                .get("DeviceId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match index.get(&name) {
                Some(&i) => users[i].device_ids.push(id),
                None => {
                    index.insert(name, users.len());
                    users.push(SotiUser {
                        user: user.clone(),
                        device_ids: vec![id],
                    });
                }
            }
        }
        users
    }

    /// Sets the given fields on the `DeviceUserInfo` of every device whose
    /// user is `user_name`; returns how many devices changed.
    pub fn update_user(&self, user_name: &str, fields: &Map<String, Value>) -> usize {
        self.edit_user(user_name, |user| {
            if let Some(object) = user.as_object_mut() {
                for (k, v) in fields {
                    object.insert(k.clone(), v.clone());
                }
            }
        })
    }

    /// Sets `DeviceUserInfo` to null on every device of `user_name`; returns
    /// how many devices changed.
    pub fn remove_user(&self, user_name: &str) -> usize {
        self.edit_user(user_name, |user| *user = Value::Null)
    }

    fn edit_user(&self, user_name: &str, mut edit: impl FnMut(&mut Value)) -> usize {
        let mut devices = write(&self.devices);
        let mut changed = 0;
        for d in devices.iter_mut() {
            let Some(user) = d.get_mut("DeviceUserInfo") else {
                continue;
            };
            let matches = user
                .get("UserName")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(user_name));
            if matches {
                edit(user);
                changed += 1;
            }
        }
        changed
    }

    /// Every group path: the seeded ones, those of current devices, and all
    /// their ancestors, sorted.
    pub fn group_paths(&self) -> Vec<String> {
        let devices = read(&self.devices);
        let leaves = seed::GROUP_PATHS.iter().map(|p| p.to_string()).chain(
            devices
                .iter()
                .filter_map(|d| d.get("Path").and_then(Value::as_str).map(str::to_owned)),
        );
        let mut all = BTreeSet::new();
        for leaf in leaves {
            let Some(rest) = leaf.strip_prefix(r"\\") else {
                continue;
            };
            let mut path = String::from(r"\\");
            for (i, part) in rest.split('\\').filter(|p| !p.is_empty()).enumerate() {
                if i > 0 {
                    path.push('\\');
                }
                path.push_str(part);
                all.insert(path.clone());
            }
        }
        all.into_iter().collect()
    }

    pub(crate) fn banner(&self, base_url: &str, control_url: &str) -> String {
        let o = read(&self.options);
        format!(
            "SOTI MobiControl simulator: {} devices\n  url:           {base_url}\n  client_id:     {}\n  client_secret: {}\n  username:      {}\n  password:      {}\n  control API:   {control_url}",
            read(&self.devices).len(),
            o.client_id,
            o.client_secret,
            o.username,
            o.password,
        )
    }
}

/// Finds a device by `DeviceId`, `mac:{MAC}` (either format, any case) or
/// `imei_meid_esn:{IMEI}`.
fn find_device(devices: &[Value], reference: &str) -> Option<usize> {
    let field = |d: &Value, name: &str| d.get(name).and_then(Value::as_str).map(str::to_owned);
    if let Some(mac) = strip_prefix_ci(reference, "mac:") {
        let wanted = normalize_mac(mac.trim())?;
        devices.iter().position(|d| {
            field(d, "MACAddress")
                .and_then(|m| normalize_mac(&m))
                .as_deref()
                == Some(wanted.as_str())
        })
    } else if let Some(imei) = strip_prefix_ci(reference, "imei_meid_esn:") {
        let wanted = imei.trim();
        if wanted.is_empty() {
            return None;
        }
        devices
            .iter()
            .position(|d| field(d, "IMEI_MEID_ESN").as_deref() == Some(wanted))
    } else {
        // Compared in place: this scan runs for every device call, and a
        // copy of each id made it the benchmarks' largest cost.
        devices.iter().position(|d| {
            d.get("DeviceId")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case(reference))
        })
    }
}

// ---------------------------------------------------------------- responses

/// SOTI's error JSON: 400/404/409/422 carry `ErrorCode`, `Data`, `HelpLink`;
/// 401/403/5xx only `ErrorMessage` (the spec's "API Errors" section).
fn soti_error(status: StatusCode, message: &str, data: Vec<String>) -> Response {
    let body = match status.as_u16() {
        400 | 404 | 409 | 422 => json!({
            "ErrorCode": 0,
            "ErrorMessage": message,
            "Data": data,
            "HelpLink": null,
        }),
        _ => json!({ "ErrorMessage": message }),
    };
    (status, Json(body)).into_response()
}

fn fault_response(status: StatusCode, retry_after: Option<u64>) -> Response {
    let message = match status.as_u16() {
        500 => "Internal Server Error",
        429 => "Too many requests. Try again later.",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    let mut response = soti_error(status, message, vec![]);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn unauthorized() -> Response {
    let mut response = soti_error(
        StatusCode::UNAUTHORIZED,
        "Authorization has been denied for this request.",
        vec![],
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn bad_request(message: &str) -> Response {
    soti_error(StatusCode::BAD_REQUEST, message, vec![])
}

fn device_not_found(reference: &str) -> Response {
    soti_error(
        StatusCode::NOT_FOUND,
        &format!("Device '{reference}' was not found."),
        vec![reference.to_owned()],
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

// --------------------------------------------------------------- vendor API

/// A request that carried a valid, unexpired bearer token.
struct Authorized;

impl FromRequestParts<Arc<SotiState>> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<SotiState>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| strip_prefix_ci(v.trim(), "Bearer "))
            .map(str::trim);
        match token {
            Some(token) if state.token_is_valid(token) => Ok(Authorized),
            _ => Err(unauthorized()),
        }
    }
}

/// Builds the SOTI routes: the vendor API under both base-path spellings and
/// the control API under `/_sim/soti`.
pub(crate) fn router(state: Arc<SotiState>) -> Router {
    let api = Router::new()
        .route("/api/token", post(token))
        .route("/api/devices", get(list_devices))
        .route("/api/devices/search", get(search_devices))
        .route("/api/devices/{id}", get(get_device))
        .route("/api/devices/{id}/actions", post(device_action))
        .route(
            "/api/devices/{id}/profiles/{profile_id}/actions",
            post(profile_action),
        )
        .route("/api/devicegroups", get(device_groups))
        .route(
            "/api/devices/{id}/customAttributes",
            get(attributes::device_attributes).put(attributes::put_device_attributes),
        )
        // IIS matches paths ignoring case; clients spell these both ways.
        .route(
            "/api/devices/{id}/customattributes",
            get(attributes::device_attributes).put(attributes::put_device_attributes),
        )
        .route("/api/customattributes", get(attributes::list_definitions))
        .route("/api/customAttributes", get(attributes::list_definitions))
        .fallback(|| async {
            soti_error(
                StatusCode::NOT_FOUND,
                "No HTTP resource was found that matches the request URI.",
                vec![],
            )
        })
        .with_state(state.clone())
        .layer(from_fn_with_state(state.core.clone(), vendor_middleware));
    let control = control_router(state.clone()).merge(core::control_router(state.core.clone()));
    Router::new()
        .nest(SimKind::Soti.base_path(), api.clone())
        .nest("/mobicontrol", api)
        .nest(&SimKind::Soti.control_path(), control)
}

async fn token(State(state): State<Arc<SotiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let options = state.options();
    let client = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| strip_prefix_ci(v.trim(), "Basic "))
        .and_then(base64_decode)
        .and_then(|raw| String::from_utf8(raw).ok());
    let client_ok = client
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(id, secret)| id == options.client_id && secret == options.client_secret);
    if !client_ok {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The client is not authorized.",
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("password") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only grant_type=password is supported.",
        );
    }
    let user_ok = form.get("username") == Some(&options.username)
        && form.get("password") == Some(&options.password);
    if !user_ok {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The user name or password is incorrect.",
        );
    }
    let access_token = state.issue_token();
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": options.token_lifetime_seconds,
        })),
    )
        .into_response()
}

/// Query parameters decoded once (by the HTTP layer's rules), names
/// lower-cased: ASP.NET binds them case-insensitively.
fn query_params(raw: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect()
}

/// The second decoding pass SOTI applies to path and filter values.
fn soti_value(params: &HashMap<String, String>, name: &str) -> Option<String> {
    params
        .get(name)
        .map(|v| percent_decode(v).into_owned())
        .filter(|v| !v.is_empty())
}

/// `skip` (default 0) and `take` (default: all); anything but a non-negative
/// int32 is a contract error (boxed: a `Response` is a large error type).
fn paging(params: &HashMap<String, String>) -> Result<(usize, Option<usize>), Box<Response>> {
    let number = |name: &str| -> Result<Option<usize>, Box<Response>> {
        match params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => match v.parse::<i32>() {
                Ok(n) if n >= 0 => Ok(Some(n as usize)),
                _ => Err(Box::new(soti_error(
                    StatusCode::BAD_REQUEST,
                    &format!("The value '{v}' is not valid for {name}."),
                    vec![name.to_owned()],
                ))),
            },
        }
    };
    Ok((number("skip")?.unwrap_or(0), number("take")?))
}

fn page<'a>(
    matching: impl Iterator<Item = &'a Value>,
    skip: usize,
    take: Option<usize>,
) -> Vec<&'a Value> {
    matching
        .skip(skip)
        .take(take.unwrap_or(usize::MAX))
        .collect()
}

async fn list_devices(
    _: Authorized,
    State(state): State<Arc<SotiState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw);
    let (skip, take) = match paging(&params) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let pairs = match soti_value(&params, "filter").map(|f| filter::parse_pairs(&f)) {
        None => Vec::new(),
        Some(Ok(pairs)) => pairs,
        Some(Err(e)) => return bad_request(&format!("Invalid filter: {e}")),
    };
    let group = soti_value(&params, "path");
    let devices = read(&state.devices);
    let matching = devices.iter().filter(|d| {
        group.as_deref().is_none_or(|g| in_group(d, g, false)) && filter::matches_pairs(d, &pairs)
    });
    Json(page(matching, skip, take)).into_response()
}

fn in_group(device: &Value, group: &str, include_subgroups: bool) -> bool {
    let Some(path) = device.get("Path").and_then(Value::as_str) else {
        return false;
    };
    let (path, group) = (
        path.to_lowercase(),
        group.trim_end_matches('\\').to_lowercase(),
    );
    path == group || (include_subgroups && path.starts_with(&format!("{group}\\")))
}

fn reference_id(path: &str) -> String {
    let h = Sha256::digest(path.to_lowercase().as_bytes());
    let h = hex::encode(&h[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Resolves a `groupPath`/`parentPath` value (a path or `referenceId:…`) to a
/// known group path.
fn resolve_group(state: &SotiState, value: &str) -> Option<String> {
    let groups = state.group_paths();
    match strip_prefix_ci(value, "referenceId:") {
        Some(id) => groups
            .into_iter()
            .find(|g| reference_id(g).eq_ignore_ascii_case(id.trim())),
        None => {
            let wanted = value.trim_end_matches('\\');
            groups.into_iter().find(|g| g.eq_ignore_ascii_case(wanted))
        }
    }
}

fn group_not_found(value: &str) -> Response {
    soti_error(
        StatusCode::NOT_FOUND,
        &format!("Device group '{value}' was not found."),
        vec![value.to_owned()],
    )
}

async fn search_devices(
    _: Authorized,
    State(state): State<Arc<SotiState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw);
    let (skip, take) = match paging(&params) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let include_subgroups = match params
        .get("includesubgroups")
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => false,
        Some(v) if v.is_empty() || v == "false" => false,
        Some(v) if v == "true" => true,
        Some(v) => {
            return bad_request(&format!(
                "The value '{v}' is not valid for includeSubgroups."
            ))
        }
    };
    let group = match soti_value(&params, "grouppath") {
        None => None,
        Some(value) => match resolve_group(&state, &value) {
            Some(g) => Some(g),
            None => return group_not_found(&value),
        },
    };
    let expr = match soti_value(&params, "filter").map(|f| filter::parse(&f)) {
        None => None,
        Some(Ok(expr)) => expr,
        Some(Err(e)) => return bad_request(&format!("Invalid filter expression: {e}")),
    };
    let devices = read(&state.devices);
    let matching = devices.iter().filter(|d| {
        group
            .as_deref()
            .is_none_or(|g| in_group(d, g, include_subgroups))
            && expr.as_ref().is_none_or(|e| e.matches(d))
    });
    Json(page(matching, skip, take)).into_response()
}

async fn get_device(
    _: Authorized,
    State(state): State<Arc<SotiState>>,
    Path(id): Path<String>,
) -> Response {
    let reference = percent_decode(&id).into_owned();
    match state.device(&reference) {
        Some(device) => Json(device).into_response(),
        None => device_not_found(&reference),
    }
}

async fn device_groups(
    _: Authorized,
    State(state): State<Arc<SotiState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw);
    let groups = state.group_paths();
    let selected: Vec<&String> = match soti_value(&params, "parentpath") {
        None => groups.iter().collect(),
        Some(value) => {
            let Some(parent) = resolve_group(&state, &value) else {
                return group_not_found(&value);
            };
            let prefix = format!("{}\\", parent.to_lowercase());
            groups
                .iter()
                .filter(|g| {
                    let g = g.to_lowercase();
                    g.strip_prefix(&prefix)
                        .is_some_and(|rest| !rest.contains('\\'))
                })
                .collect()
        }
    };
    const ICONS: &[&str] = &["Yellow", "Blue", "Green", "Red", "Purple", "Cyan", "None"];
    let body: Vec<Value> = selected
        .into_iter()
        .map(|path| {
            let name = path
                .trim_start_matches('\\')
                .rsplit('\\')
                .next()
                .unwrap_or_default();
            let icon = ICONS[usize::from(Sha256::digest(path.as_bytes())[0]) % ICONS.len()];
            json!({
                "Name": name,
                "Path": path,
                "Icon": icon,
                "Kind": "Regular",
                "ReferenceId": reference_id(path),
            })
        })
        .collect();
    Json(body).into_response()
}

/// A property type in an action definition.
#[derive(Clone, Copy, Debug)]
enum FieldType {
    Bool,
    Str,
    Enum(&'static [&'static str]),
}

const OBLITERATION_BEHAVIOR: &[&str] = &[
    "Default",
    "Always",
    "ObliterateWithWarning",
    "DoNotObliterate",
];
const DELIVERY_METHOD: &[&str] = &["MobiControl", "PlatformNotificationService", "Sms"];
const REMOTE_WIPE_TYPE: &[&str] = &[
    "None",
    "DoWipeProtected",
    "DoWipe",
    "DoWipePersistProvisionedData",
    "DoWipePersistUserData",
];

/// Property names and their types.
type Fields = &'static [(&'static str, FieldType)];

/// (required, optional) properties of the action definitions the connector
/// uses, from the spec's `LockAction`, `UnenrollAction`, `WipeAction`,
/// `CheckInAction` (each `allOf` `ActionBase`, which requires `Action`).
fn action_fields(action: &str) -> (Fields, Fields) {
    use FieldType::*;
    match action {
        "Lock" => (
            &[("AutogenerateNewPasscode", Bool)],
            &[("PhoneNumber", Str), ("Message", Str), ("Pin", Str)],
        ),
        "Unenroll" => (&[("RevokeCertificates", Bool)], &[]),
        "Wipe" => (
            &[
                ("WipeSdCard", Bool),
                ("BypassFactoryResetProtection", Bool),
                ("RevokeCertificates", Bool),
                ("RequestRequiresNetworkTether", Bool),
                ("ObliterationBehavior", Enum(OBLITERATION_BEHAVIOR)),
                ("PreserveDataPlan", Bool),
                ("DisallowProximitySetup", Bool),
                ("SendBy", Enum(DELIVERY_METHOD)),
            ],
            &[("Pin", Str), ("RemoteWipeType", Enum(REMOTE_WIPE_TYPE))],
        ),
        // CheckIn needs nothing more; the other actions are accepted on their
        // `Action` alone (the simulator does not model their parameters).
        _ => (&[], &[]),
    }
}

/// The spec's `DeviceAction` enum.
const DEVICE_ACTIONS: &[&str] = &[
    "CheckIn",
    "Wipe",
    "Lock",
    "Unenroll",
    "SendMessage",
    "Locate",
    "SendScript",
    "Delete",
    "Disable",
    "Enable",
    "Rename",
    "SetPasscode",
    "AppleSoftwareUpdateScan",
    "AppleSoftwareUpdateSchedule",
    "AppleSoftwareUpdateRefreshStatus",
    "SetDeviceName",
    "ResetPasscode",
    "AllowSotiSurf",
    "BlockSotiSurf",
    "ClearRestrictions",
    "BypassActivationLock",
    "SoftReset",
    "RemoteRing",
    "TurnOffSuspend",
    "StartTracking",
    "StopTracking",
    "ClearSotiSurfCache",
    "BlockSotiHub",
    "AllowSotiHub",
    "ClearSotiHubCache",
    "DisablePasscodeLock",
    "ScanForViruses",
    "UpdateVirusDefinitions",
    "SendTestPage",
    "FactoryReset",
    "EnableWorkProfile",
    "DisableWorkProfile",
    "SendSmsMessage",
    "SetWallpaper",
    "ResetUserBinding",
    "EnableLostMode",
    "DisableLostMode",
    "BlockExchangeAccess",
    "AllowExchangeAccess",
    "EnableAgentUpgrade",
    "DisableAgentUpgrade",
    "MigrateToELMAgent",
    "UpgradeAgentNow",
    "SyncFilesNow",
    "SendScriptViaSms",
    "EnrollInEFOTA",
    "LinuxSoftwareUpdateSchedule",
    "UpgradeFirmware",
    "UpdateManagementProfile",
    "SendScriptViaPns",
    "ResetContainerPasscode",
    "UpgradeAgent",
    "UpdateLicense",
    "PlaySound",
    "LinuxSoftwareUpdateScan",
    "SetFirmwarePassword",
    "UnlockUserAccount",
    "MigrateToAndroidEnterprise",
    "SharedDeviceLogout",
    "DeleteUser",
    "AdsInstallPlugIns",
    "SharedDeviceTroubleshoot",
    "MoveDevice",
    "ResetAccount",
    "ResetExchangeAccess",
    "AppFeedbackUpdate",
    "RefreshCellularPlans",
    "UpgradeFirmwareZebra",
    "EnableAdminMode",
    "DisableAdminMode",
    "EnableKioskMode",
    "DisableKioskMode",
    "RemoveUserAccounts",
    "GenerateMacOsPersonalRecoveryKey",
    "SharedIpadUserLogout",
    "ContactSabhaDevice",
    "SharedIpadUsersRemove",
    "SetRecoveryLock",
];

/// Checks an action body against the spec: property names and enum values
/// exactly as the spec spells them. Returns the action name, or the message
/// and the offending property names.
pub(crate) fn validate_action(body: &Value) -> Result<String, (String, Vec<String>)> {
    let Some(object) = body.as_object() else {
        return Err(("The action must be a JSON object.".into(), vec![]));
    };
    let action = match object.get("Action") {
        Some(Value::String(a)) if DEVICE_ACTIONS.contains(&a.as_str()) => a.clone(),
        Some(Value::String(a)) => {
            return Err((
                format!("'{a}' is not a valid device action."),
                vec!["Action".into()],
            ))
        }
        _ => {
            return Err((
                "The Action field is required.".into(),
                vec!["Action".into()],
            ))
        }
    };
    let (required, optional) = action_fields(&action);
    let mut missing = Vec::new();
    let mut invalid = Vec::new();
    for (name, ty) in required
        .iter()
        .map(|f| (f, true))
        .chain(optional.iter().map(|f| (f, false)))
    {
        let (name, kind) = (name.0, name.1);
        match object.get(name) {
            None | Some(Value::Null) => {
                if ty {
                    missing.push(name.to_owned());
                }
            }
            Some(value) => {
                let ok = match kind {
                    FieldType::Bool => value.is_boolean(),
                    FieldType::Str => value.is_string(),
                    FieldType::Enum(values) => value.as_str().is_some_and(|v| values.contains(&v)),
                };
                if !ok {
                    invalid.push(name.to_owned());
                }
            }
        }
    }
    if missing.is_empty() && invalid.is_empty() {
        return Ok(action);
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("required: {}", missing.join(", ")));
    }
    if !invalid.is_empty() {
        parts.push(format!("invalid value: {}", invalid.join(", ")));
    }
    missing.extend(invalid);
    Err((
        format!("The {action} action is invalid ({}).", parts.join("; ")),
        missing,
    ))
}

fn parse_body(body: &Bytes) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

fn record(
    state: &SotiState,
    device_ref: &str,
    device_id: Option<String>,
    action: String,
    profile_id: Option<String>,
    body: &Bytes,
    status: StatusCode,
) {
    state.core.record_action(RecordedAction {
        seq: 0,
        at: Utc::now(),
        kind: SimKind::Soti,
        device_ref: device_ref.to_owned(),
        device_id,
        action,
        profile_id,
        body: parse_body(body)
            .unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned())),
        status: status.as_u16(),
    });
}

fn device_id_of(device: &Value) -> Option<String> {
    device
        .get("DeviceId")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

async fn device_action(
    _: Authorized,
    State(state): State<Arc<SotiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let reference = percent_decode(&id).into_owned();
    let parsed = parse_body(&body);
    let name = parsed
        .as_ref()
        .and_then(|b| b.get("Action"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(device) = state.device(&reference) else {
        record(
            &state,
            &reference,
            None,
            name,
            None,
            &body,
            StatusCode::NOT_FOUND,
        );
        return device_not_found(&reference);
    };
    let device_id = device_id_of(&device);
    let outcome = match parsed {
        None => Err(("The request body is not valid JSON.".to_owned(), vec![])),
        Some(value) => validate_action(&value),
    };
    match outcome {
        Ok(_) => {
            record(
                &state,
                &reference,
                device_id,
                name,
                None,
                &body,
                StatusCode::NO_CONTENT,
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Err((message, data)) => {
            record(
                &state,
                &reference,
                device_id,
                name,
                None,
                &body,
                StatusCode::BAD_REQUEST,
            );
            soti_error(StatusCode::BAD_REQUEST, &message, data)
        }
    }
}

async fn profile_action(
    _: Authorized,
    State(state): State<Arc<SotiState>>,
    Path((id, profile_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let reference = percent_decode(&id).into_owned();
    let profile_id = percent_decode(&profile_id).into_owned();
    // The body is a bare JSON string; the spec's enum says `Install`/`Revoke`
    // and its prose says 'install'/'revoke', so the case is not significant.
    let action = parse_body(&body).and_then(|v| v.as_str().map(str::to_owned));
    let name = action.clone().unwrap_or_default();
    let Some(device) = state.device(&reference) else {
        record(
            &state,
            &reference,
            None,
            name,
            Some(profile_id),
            &body,
            StatusCode::NOT_FOUND,
        );
        return device_not_found(&reference);
    };
    let device_id = device_id_of(&device);
    let valid = action
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case("Install") || a.eq_ignore_ascii_case("Revoke"));
    if valid {
        record(
            &state,
            &reference,
            device_id,
            name,
            Some(profile_id),
            &body,
            StatusCode::NO_CONTENT,
        );
        StatusCode::NO_CONTENT.into_response()
    } else {
        record(
            &state,
            &reference,
            device_id,
            name,
            Some(profile_id),
            &body,
            StatusCode::BAD_REQUEST,
        );
        soti_error(
            StatusCode::BAD_REQUEST,
            "The body must be the JSON string \"Install\" or \"Revoke\".",
            vec!["action".into()],
        )
    }
}

// -------------------------------------------------------------- control API

fn control_router(state: Arc<SotiState>) -> Router {
    Router::new()
        .route("/tokens/expire", post(control_expire_tokens))
        .route("/tokens/lifetime", put(control_token_lifetime))
        .route("/devices", get(control_devices).post(control_add_device))
        .route("/devices/generate", post(control_generate))
        .route(
            "/devices/{id}",
            get(control_device)
                .put(control_replace_device)
                .patch(control_update_device)
                .delete(control_remove_device),
        )
        .route("/devices/{id}/user", put(control_set_user))
        .route(
            "/devices/{id}/custom-attributes",
            get(attributes::control_device_attributes),
        )
        .route(
            "/devices/{id}/custom-attributes/{name}",
            put(attributes::control_set_attribute),
        )
        .route(
            "/custom-attribute-definitions",
            get(attributes::control_definitions).post(attributes::control_define),
        )
        .route(
            "/custom-attribute-definitions/{name}",
            axum::routing::patch(attributes::control_rename).delete(attributes::control_remove),
        )
        .route("/users", get(control_users))
        .route(
            "/users/{user_name}",
            axum::routing::patch(control_update_user).delete(control_remove_user),
        )
        .with_state(state)
}

async fn control_expire_tokens(State(state): State<Arc<SotiState>>) -> StatusCode {
    state.expire_tokens();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lifetime {
    seconds: u64,
}

async fn control_token_lifetime(
    State(state): State<Arc<SotiState>>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let lifetime: Lifetime = json_body(&body)?;
    state.set_token_lifetime(Duration::from_secs(lifetime.seconds));
    Ok(StatusCode::NO_CONTENT)
}

async fn control_devices(State(state): State<Arc<SotiState>>) -> Json<Vec<Value>> {
    Json(state.devices())
}

async fn control_add_device(
    State(state): State<Arc<SotiState>>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let device: Value = json_body(&body)?;
    state.add_device(device.clone())?;
    Ok((StatusCode::CREATED, Json(device)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    count: usize,
}

async fn control_generate(
    State(state): State<Arc<SotiState>>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let generate: Generate = json_body(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(state.generate_devices(generate.count)),
    )
        .into_response())
}

async fn control_device(
    State(state): State<Arc<SotiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ControlError> {
    state.device(&id).map(Json).ok_or(ControlError::NotFound)
}

async fn control_replace_device(
    State(state): State<Arc<SotiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    state.replace_device(&id, json_body(&body)?)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn control_update_device(
    State(state): State<Arc<SotiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ControlError> {
    let fields: Map<String, Value> = json_body(&body)?;
    state
        .update_device(&id, fields)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_remove_device(
    State(state): State<Arc<SotiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ControlError> {
    state
        .remove_device(&id)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_set_user(
    State(state): State<Arc<SotiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ControlError> {
    let user: Value = json_body(&body)?;
    let user = match user {
        Value::Null => None,
        Value::Object(_) => Some(user),
        _ => {
            return Err(ControlError::Invalid(
                "a DeviceUserInfo object or null".into(),
            ))
        }
    };
    state
        .set_device_user(&id, user)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_users(State(state): State<Arc<SotiState>>) -> Json<Vec<SotiUser>> {
    Json(state.users())
}

async fn control_update_user(
    State(state): State<Arc<SotiState>>,
    Path(user_name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ControlError> {
    let fields: Map<String, Value> = json_body(&body)?;
    match state.update_user(&user_name, &fields) {
        0 => Err(ControlError::NotFound),
        n => Ok(Json(json!({ "devices": n }))),
    }
}

async fn control_remove_user(
    State(state): State<Arc<SotiState>>,
    Path(user_name): Path<String>,
) -> Result<Json<Value>, ControlError> {
    match state.remove_user(&user_name) {
        0 => Err(ControlError::NotFound),
        n => Ok(Json(json!({ "devices": n }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_bodies_need_the_fields_the_spec_requires() {
        assert_eq!(
            validate_action(&json!({"Action":"Lock","AutogenerateNewPasscode":false})).unwrap(),
            "Lock"
        );
        let (_, data) = validate_action(&json!({"Action":"Lock"})).unwrap_err();
        assert_eq!(data, vec!["AutogenerateNewPasscode"]);
        let (_, data) =
            validate_action(&json!({"Action":"Lock","AutogenerateNewPasscode":"no"})).unwrap_err();
        assert_eq!(data, vec!["AutogenerateNewPasscode"]);
        assert!(validate_action(&json!({"Action":"Unenroll","RevokeCertificates":true})).is_ok());
        assert!(validate_action(&json!({"Action":"Unenroll"})).is_err());
        assert!(validate_action(&json!({"Action":"CheckIn"})).is_ok());
        assert!(validate_action(&json!({"Action":"EnterpriseWipe"})).is_err());
        assert!(
            validate_action(&json!({"action":"Lock","AutogenerateNewPasscode":false})).is_err()
        );
        let wipe = json!({
            "Action":"Wipe","WipeSdCard":false,"BypassFactoryResetProtection":false,
            "RevokeCertificates":true,"RequestRequiresNetworkTether":false,
            "ObliterationBehavior":"Default","PreserveDataPlan":false,
            "DisallowProximitySetup":false,"SendBy":"MobiControl"
        });
        assert!(validate_action(&wipe).is_ok());
        let mut bad = wipe.clone();
        bad["SendBy"] = json!("Carrier pigeon");
        bad.as_object_mut().unwrap().remove("PreserveDataPlan");
        let (_, data) = validate_action(&bad).unwrap_err();
        assert_eq!(data, vec!["PreserveDataPlan", "SendBy"]);
    }

    #[test]
    fn devices_are_found_by_id_mac_in_either_format_and_imei() {
        let state = SotiState::new(5, 50, SotiOptions::default());
        for d in state.devices() {
            let id = d["DeviceId"].as_str().unwrap();
            assert_eq!(state.device(&id.to_uppercase()).unwrap(), d);
            let mac = normalize_mac(d["MACAddress"].as_str().unwrap()).unwrap();
            let colons: Vec<String> = mac
                .as_bytes()
                .chunks(2)
                .map(|c| String::from_utf8_lossy(c).to_lowercase())
                .collect();
            assert_eq!(state.device(&format!("mac:{mac}")).unwrap(), d);
            assert_eq!(
                state.device(&format!("MAC:{}", colons.join(":"))).unwrap(),
                d
            );
            let imei = d["IMEI_MEID_ESN"].as_str().unwrap();
            if !imei.is_empty() {
                assert_eq!(state.device(&format!("imei_meid_esn:{imei}")).unwrap(), d);
            }
        }
        assert!(state.device("mac:not-a-mac").is_none());
        assert!(state.device("imei_meid_esn:").is_none());
    }

    #[test]
    fn group_paths_include_every_ancestor() {
        let state = SotiState::new(1, 10, SotiOptions::default());
        let groups = state.group_paths();
        for g in [
            r"\\Acme",
            r"\\Acme\Engineering",
            r"\\Acme\Engineering\Berlin",
            r"\\Acme\Sales\Retail Stores",
        ] {
            assert!(groups.iter().any(|x| x == g), "{g} missing from {groups:?}");
        }
    }

    #[test]
    fn options_never_print_their_secrets() {
        let text = format!("{:?}", SotiOptions::default());
        assert!(!text.contains(DEFAULT_CLIENT_SECRET));
        assert!(!text.contains(DEFAULT_PASSWORD));
    }
}
