//! The IBM MaaS360 simulator (Cisco "MCMS" is MaaS360): the MaaS360 Web
//! Services API as `MDM-APIS.md` and `specs/maas360.md` describe it (written
//! from those files, not from the MaaS360 adapter).
//!
//! Vendor API under `http://ADDR/maas360`; every path carries the customer's
//! billing id, and every route also answers with a trailing `/`:
//!
//! | Request | Answer |
//! |---|---|
//! | `POST /auth-apis/auth/2.0/authenticate/customer/{billingId}` JSON `{"authRequest":{"maaS360AdminAuth":{billingID, platformID, appID, appVersion, appAccessKey, userName, password}}}` | 200 `{"authResponse":{"authToken","errorCode":0,"refreshToken"}}`; a wrong field is **also 200**: `{"authResponse":{"errorCode":1002,"errorDesc":"Invalid credentials"}}` (user name, password or billing id) or `{"authResponse":{"errorCode":1008,"errorDesc":"Invalid app details or access key"}}` (app id, app version, platform id, access key), no token |
//! | `POST /auth-apis/auth/1.0/authenticate/{billingId}` (same body) | the same without `refreshToken` |
//! | `POST /auth-apis/auth/2.0/refreshToken/customer/{billingId}` (the same wrapper with `refreshToken`, without `password`; `appAccessKey` optional) | a new `authToken` and a new `refreshToken` (the old one is spent); an unknown or spent refresh token → 200 with `errorCode` 1002 `Invalid credentials` |
//! | any other call without `Authorization: MaaS token="<authToken>"` of an issued token | 401 `{"errorResponse":{"errorCode":1007,"errorDesc":"Token invalid"}}` |
//! | any other call with a token past its lifetime (or expired by the control API) | 401 `{"errorResponse":{"errorCode":1007,"errorDesc":"Token expired."}}` |
//! | a call whose path names another billing id than the token's | 403 `{"errorResponse":{"errorCode":1013,"errorDesc":"Access denied…"}}` |
//! | `GET /device-apis/devices/2.0/search/customer/{billingId}?pageSize&pageNumber&deviceStatus` (also v1 `/device-apis/devices/1.0/search/{billingId}`) | `{"devices":{"count","pageNumber","pageSize","device":[…]}}` |
//! | `GET /device-apis/devices/1.0/core/{billingId}?deviceId=` | `{"device":{…}}`; unknown or missing id → 400, empty body |
//! | `GET /device-apis/devices/1.0/identity/{billingId}?deviceId=` | `{"deviceIdentity":{…,"customAttributes":{"customAttribute":…}}}`; unknown or missing id → 400, empty body |
//! | `GET /user-apis/user/1.0/search/{billingId}?includeAllUsers&pageSize&pageNumber` | `{"users":{"count","pageNumber","pageSize","user":[…]}}` |
//! | `POST /device-apis/devices/1.0/{lockDevice\|selectiveWipeDevice\|wipeDevice\|cancelPendingWipe\|revokeSelectiveWipe}/{billingId}`, form `deviceId` (`wipeDevice` also `notifyMe`, `notifyUser`: `Yes`/`No`, `notifyOthers`) | 200 `{"actionResponse":{"actionID":n,"actionStatus":0,"description","maas360DeviceID"}}`; unknown device → **200 with `actionStatus` 1** and a description; no `deviceId`, a bad `notify*` value or a body that is not `application/x-www-form-urlencoded` → 400, empty body |
//! | `POST /device-apis/devices/1.0/setCustomAttributeValue/{billingId}`, form `deviceId`, `attributeName`, `attributeValue` | `actionResponse` as above; the value is read back by `identity`; a name or value with `.` `<` `>` `\` `"` `'` → `actionStatus` 1; a name the customer has not defined (matched ignoring case; seeded: `MTD_Threat_Level`) → `actionStatus` 1, `Invalid attribute name: custom attribute NAME is not defined for this customer.` (**\[ours\]**) |
//!
//! Listings: `pageSize` only 25, 50, 100, 200 or 250 (default 250 for
//! devices, 50 for users), `pageNumber` from 1 (default 1); anything else →
//! 400 with an empty body. In the answer `count` is the number of matches,
//! `pageNumber` echoes the request and `pageSize` is **the number of records
//! on this page** (the one real sample shows `"pageSize":1` for one device,
//! and a public client stops paging when it reads 0). The XML→JSON quirks: a
//! page with exactly one record has it as an **object**, an empty page has
//! **no** `device`/`user` key. Devices are listed in insertion order.
//! `deviceStatus` is `Active` (default) or `Inactive` (seeded devices are
//! all `Active`; the control API can change that). Exact filters, matched
//! ignoring case and ANDed: `maas360DeviceId`, `udid`, `imeiMeid` (a
//! number-typed `imeiEsn` matches its digits), `wifiMacAddress` (the colon
//! form MaaS360 stores, `a4:e4:b8:73:a1:93`: a MAC without colons finds
//! nothing), `email`, `platformName`, `maas360ManagedStatus`, `userDomain`;
//! starts-with filters `partialDeviceName`, `partialUsername`,
//! `partialPhoneNumber`; `lastReportedAfterInEpochms`. An empty filter value
//! is ignored. Parameter names are case-sensitive (a Java servlet's are).
//! Users: `includeAllUsers` 0 (default: users with a device), 1 (all), 2
//! (users without a device); filters `partialUsername`,
//! `partialEmailAddress`, `domain`.
//!
//! Requests: bodies are JSON (the simulator does not speak XML: an auth body
//! that is not the JSON wrapper → 400, empty body) and answers are always
//! JSON. `Authorization` accepts the value in double quotes (what IBM
//! documents), single quotes (seen in a public client) or bare. Action
//! parameters may come in the form body or in the query string (both are
//! seen in public clients; the form wins); a request with a body must say
//! `Content-Type: application/x-www-form-urlencoded`.
//!
//! Rate limit (**\[ours\]**: IBM publishes no numbers): beyond 20 requests in
//! any rolling second per billing id (the one in the path, logins included)
//! → 429 `{"errorResponse":{"errorCode":1020,…}}` with `Retry-After`
//! (seconds). Refused requests do not count. The rate limit is checked
//! before the token.
//!
//! Error codes and bodies other than the `authResponse`/`actionResponse`
//! shapes are **\[ours\]** (1002 `Invalid credentials` is what a public
//! client's tests mock for a refused refresh; 1007 for token errors is a
//! weak source's claim). Injected faults answer: 400 → empty body; 401 →
//! `Token invalid`; 502/504 → the HTML page of a gateway; any other status
//! → the `errorResponse` JSON.
//!
//! Control API under `http://ADDR/_sim/maas360` (JSON), besides the shared
//! `/requests`, `/actions`, `/records`, `/faults` (see [`crate::core`]):
//! `POST /tokens/expire` (every issued auth token answers `Token expired.`
//! from now on); `PUT /tokens/lifetime` `{"seconds":N}` (tokens issued from
//! now on; 0 issues expired ones); `POST /tokens/revoke-refresh` (every
//! refresh token is refused from now on); `GET|PUT /rate-limit`
//! `{"requests_per_second":N}` (0 turns it off; GET also counts the refused
//! requests); `PUT /credentials` (`{"billing_id","app_id","app_version",
//! "platform_id","app_access_key","username","password"}`, each optional);
//! `GET|POST /devices` (list / add one device object with a new
//! `maas360DeviceID`); `POST /devices/generate` `{"count":N}`;
//! `GET|PUT|PATCH|DELETE /devices/{maas360DeviceID}` (PATCH sets the given
//! top-level fields); `GET|POST /users`; `GET|PATCH|DELETE
//! /users/{userName or userIdentifier}` (a changed `userName` or
//! `emailAddress` is written to the user's devices; DELETE clears the user
//! from them); `GET|POST|DELETE /action-failures` (POST
//! `{"device_id","action","description","count"}`: the next `count`
//! (default 1) matching actions on that device answer `actionStatus` 1 even
//! though it exists; `action` absent = any action); `GET /action-results`
//! (every `actionResponse` answered, not cleared by `DELETE /records`);
//! `GET /custom-attributes` (the values set, per device);
//! `GET|POST /custom-attribute-definitions` (the defined names; POST
//! `{"name"}` defines one); `PATCH|DELETE /custom-attribute-definitions/{name}`
//! (PATCH `{"name":"new"}` renames, the values follow; DELETE also drops the
//! values); `GET /devices/{id}/custom-attributes` (`{"name":"value"}`);
//! `PUT /devices/{id}/custom-attributes/{name}` with a JSON string or `null`
//! (a change behind the API's back, not recorded). In-process:
//! [`Maas360State::custom_attribute`], [`Maas360State::set_custom_attribute_value`],
//! [`Maas360State::define_custom_attribute`], [`Maas360State::rename_custom_attribute`],
//! [`Maas360State::remove_custom_attribute`].
//!
//! Recorded actions are named as in the path (`lockDevice`, …), except a
//! custom attribute write: `SetCustomAttribute:{attributeName}={attributeValue}`
//! (`SetCustomAttribute` when either is missing). A write MaaS360 refuses
//! with `actionStatus` 1 is still an HTTP 200 (and recorded so):
//! [`Maas360State::action_results`] tells them apart.
//!
//! Default credentials ([`Maas360Options::default`]): billing id `30012345`,
//! platform id `3`, app id `com.30012345.api`, app version `1.0`, app access
//! key `sim-app-access-key`, user `mtd-api`, password `sim-password`; tokens
//! live 3600 s.

pub(crate) mod seed;

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{from_fn_with_state, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put, MethodRouter},
    Json, Router,
};
use chrono::{DateTime, Utc};
use rand::{distributions::Alphanumeric, Rng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

pub use crate::core::ControlError;

use self::seed::Seeder;
use super::{
    core::{self, json_body, vendor_middleware, RecordedAction, RecordedRequest, SimCore},
    util::{lock, read, strip_prefix_ci, write, RollingLimit},
    SimKind,
};

pub const DEFAULT_BILLING_ID: &str = "30012345";
pub const DEFAULT_PLATFORM_ID: &str = "3";
pub const DEFAULT_APP_ID: &str = "com.30012345.api";
pub const DEFAULT_APP_VERSION: &str = "1.0";
pub const DEFAULT_APP_ACCESS_KEY: &str = "sim-app-access-key";
pub const DEFAULT_USERNAME: &str = "mtd-api";
pub const DEFAULT_PASSWORD: &str = "sim-password";
/// IBM: "the authentication token is valid for 60 mins".
pub const DEFAULT_TOKEN_LIFETIME_SECONDS: u64 = 3600;
/// Requests per billing id in any rolling second (**\[ours\]**).
pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 20;
/// The only page sizes MaaS360 accepts.
pub const PAGE_SIZES: [usize; 5] = [25, 50, 100, 200, 250];
pub const DEFAULT_DEVICE_PAGE_SIZE: usize = 250;
pub const DEFAULT_USER_PAGE_SIZE: usize = 50;
/// The device actions the simulator answers (besides `setCustomAttributeValue`).
pub const ACTIONS: &[&str] = &[
    "lockDevice",
    "selectiveWipeDevice",
    "wipeDevice",
    "cancelPendingWipe",
    "revokeSelectiveWipe",
];
pub const SET_CUSTOM_ATTRIBUTE: &str = "setCustomAttributeValue";
/// The custom attribute the connector writes by default, defined at start.
pub const RISK_ATTRIBUTE: &str = "MTD_Threat_Level";

/// The body of a 401 for an unknown (or missing) token.
pub const TOKEN_INVALID: &str = "Token invalid";
/// The body of a 401 for a token past its lifetime.
pub const TOKEN_EXPIRED: &str = "Token expired.";
/// What a successful action answers (from the one real sample).
pub const ACTION_DONE: &str = "The action was executed successfully on the device.";
/// What an action on an unknown device answers (**\[ours\]**).
pub const UNKNOWN_DEVICE: &str = "Invalid device ID: no such device for this customer.";
/// What setting an attribute the customer has not defined answers
/// (**\[ours\]**), after `Invalid attribute name: custom attribute `.
pub const UNDEFINED_ATTRIBUTE: &str = "is not defined for this customer.";
/// What a failure planned by the control API answers unless it says otherwise.
pub const DEFAULT_ACTION_FAILURE: &str =
    "The action could not be executed on the device. Please try again later.";

/// The error codes of the simulated server (**\[ours\]** except where noted).
pub mod error_code {
    /// Login refused: wrong user name, password or billing id; also a
    /// refused refresh token (a public client's tests mock exactly this).
    pub const INVALID_CREDENTIALS: u32 = 1002;
    /// Login refused: wrong app id, app version, platform id or app access key.
    pub const INVALID_APP: u32 = 1008;
    /// Expired or unknown token on an API call.
    pub const TOKEN: u32 = 1007;
    /// The path's billing id is not the token's customer.
    pub const ACCESS_DENIED: u32 = 1013;
    pub const RATE_LIMITED: u32 = 1020;
    pub const SERVER_ERROR: u32 = 1500;
    pub const REQUEST_FAILED: u32 = 1000;
}

/// Credentials the simulated server accepts, token lifetime and rate limit.
#[derive(Clone, PartialEq, Eq)]
pub struct Maas360Options {
    pub billing_id: String,
    pub platform_id: String,
    pub app_id: String,
    pub app_version: String,
    pub app_access_key: String,
    pub username: String,
    pub password: String,
    /// Lifetime of issued auth tokens; 0 issues tokens already expired.
    pub token_lifetime_seconds: u64,
    /// Requests per billing id in any rolling second; 0 = no limit.
    pub rate_limit_per_second: u32,
}

impl Default for Maas360Options {
    fn default() -> Self {
        Self {
            billing_id: DEFAULT_BILLING_ID.into(),
            platform_id: DEFAULT_PLATFORM_ID.into(),
            app_id: DEFAULT_APP_ID.into(),
            app_version: DEFAULT_APP_VERSION.into(),
            app_access_key: DEFAULT_APP_ACCESS_KEY.into(),
            username: DEFAULT_USERNAME.into(),
            password: DEFAULT_PASSWORD.into(),
            token_lifetime_seconds: DEFAULT_TOKEN_LIFETIME_SECONDS,
            rate_limit_per_second: DEFAULT_RATE_LIMIT_PER_SECOND,
        }
    }
}

impl fmt::Debug for Maas360Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maas360Options")
            .field("billing_id", &self.billing_id)
            .field("platform_id", &self.platform_id)
            .field("app_id", &self.app_id)
            .field("app_version", &self.app_version)
            .field("app_access_key", &"**REDACTED**")
            .field("username", &self.username)
            .field("password", &"**REDACTED**")
            .field("token_lifetime_seconds", &self.token_lifetime_seconds)
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .finish()
    }
}

/// An action the control API set up to fail (`actionStatus` 1) on a device
/// that exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionFailure {
    /// The `maas360DeviceID` (matched ignoring case).
    pub device_id: String,
    /// Only this action (e.g. `wipeDevice`); `None`: any action, including
    /// `setCustomAttributeValue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The `description` to answer; `None`: [`DEFAULT_ACTION_FAILURE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How many matching actions still fail.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

impl ActionFailure {
    /// The next action of any kind on `device_id` fails.
    pub fn next(device_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            action: None,
            description: None,
            count: 1,
        }
    }

    /// Only `action` fails.
    pub fn of(mut self, action: impl Into<String>) -> Self {
        self.action = Some(action.into());
        self
    }

    /// Fail with this description.
    pub fn saying(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    fn matches(&self, action: &str, device_id: &str) -> bool {
        self.count > 0
            && self.device_id.eq_ignore_ascii_case(device_id.trim())
            && self
                .action
                .as_deref()
                .is_none_or(|a| a.eq_ignore_ascii_case(action))
    }
}

/// One `actionResponse` the simulator answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub at: DateTime<Utc>,
    /// The action as named in the path (`lockDevice`, …).
    pub action: String,
    /// The `deviceId` as sent.
    pub device_id: String,
    /// `None` when the action failed.
    pub action_id: Option<u64>,
    /// 0 success, 1 failure.
    pub action_status: u8,
    pub description: String,
}

/// An issued auth token.
#[derive(Debug)]
struct IssuedToken {
    billing_id: String,
    expires: Instant,
}

/// What an `Authorization` header amounts to.
#[derive(Debug, PartialEq, Eq)]
enum TokenCheck {
    /// An unexpired token of this billing id.
    Valid(String),
    Expired,
    Invalid,
}

/// How long the server remembers an expired token (to answer `Token
/// expired.` rather than `Token invalid`).
const EXPIRED_TOKEN_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// The first `actionID` handed out.
const FIRST_ACTION_ID: u64 = 128_294_549;

/// The MaaS360 simulator's state: users, devices, tokens, options, rate-limit
/// windows, planned action failures, recorder and faults.
pub struct Maas360State {
    core: Arc<SimCore>,
    options: RwLock<Maas360Options>,
    /// Insertion order is the listing order (paging slices it).
    devices: RwLock<Vec<Value>>,
    users: RwLock<Vec<Value>>,
    /// Continues the seeded sequence for generated devices.
    seeder: Mutex<Seeder>,
    tokens: Mutex<HashMap<String, IssuedToken>>,
    /// Refresh token → billing id.
    refresh_tokens: Mutex<HashMap<String, String>>,
    /// Per billing id, when each admitted request of the last second arrived.
    limit: RollingLimit,
    failures: Mutex<Vec<ActionFailure>>,
    results: Mutex<Vec<ActionResult>>,
    /// Per device id (upper-cased), the custom attributes set, in order.
    attributes: RwLock<HashMap<String, Vec<(String, String)>>>,
    /// The custom attributes the customer has defined (in the portal); only
    /// these can be set. Seeded with [`RISK_ATTRIBUTE`].
    attribute_names: RwLock<Vec<String>>,
    next_action_id: AtomicU64,
}

impl fmt::Debug for Maas360State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maas360State")
            .field("core", &self.core)
            .field("options", &*read(&self.options))
            .field("devices", &read(&self.devices).len())
            .field("users", &read(&self.users).len())
            .field("tokens", &lock(&self.tokens).len())
            .finish()
    }
}

/// The text of a field that may be a string or a number (`""` otherwise).
fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn field(record: &Value, name: &str) -> String {
    text(record.get(name))
}

fn device_id_of(device: &Value) -> String {
    field(device, "maas360DeviceID")
}

fn is_auth_path(path: &str) -> bool {
    path.contains("/auth-apis/")
}

/// The billing id a path names: the segment after `customer` (v2 style),
/// else the last segment (v1 style).
fn billing_id_of(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.iter().position(|s| *s == "customer") {
        Some(i) => segments.get(i + 1).map(|s| (*s).to_owned()),
        None if segments.len() > 1 => segments.last().map(|s| (*s).to_owned()),
        None => None,
    }
}

/// The token of `Authorization: MaaS token="…"` (also single-quoted or bare).
fn token_from(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let rest = strip_prefix_ci(value, "MaaS")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = strip_prefix_ci(rest.trim_start(), "token")?.trim_start();
    let rest = rest.strip_prefix('=')?.trim();
    let quoted = rest.len() >= 2
        && ((rest.starts_with('"') && rest.ends_with('"'))
            || (rest.starts_with('\'') && rest.ends_with('\'')));
    let token = if quoted {
        &rest[1..rest.len() - 1]
    } else {
        rest
    };
    (!token.is_empty()).then(|| token.to_owned())
}

fn random_token() -> String {
    let mut rng = rand::thread_rng();
    let h: String = (0..32)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect();
    let suffix: String = (&mut rng)
        .sample_iter(&Alphanumeric)
        .take(7)
        .map(char::from)
        .collect();
    format!(
        "{}-{}-{}-{}-{}-{suffix}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Maas360State {
    /// Seeds `devices` devices (and about three users for every four
    /// devices) from `seed`.
    pub fn new(seed: u64, devices: usize, options: Maas360Options) -> Self {
        let mut seeder = Seeder::new(seed);
        let users = seeder.users(Seeder::user_count_for(devices));
        let seeded = seeder.devices(devices, &users);
        Self {
            core: Arc::new(SimCore::new(
                SimKind::Maas360,
                is_auth_path,
                ("pageNumber", "1"),
                fault_response,
            )),
            options: RwLock::new(options),
            devices: RwLock::new(seeded),
            users: RwLock::new(users),
            seeder: Mutex::new(seeder),
            tokens: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            limit: RollingLimit::default(),
            failures: Mutex::new(Vec::new()),
            results: Mutex::new(Vec::new()),
            attributes: RwLock::new(HashMap::new()),
            attribute_names: RwLock::new(vec![RISK_ATTRIBUTE.to_owned()]),
            next_action_id: AtomicU64::new(FIRST_ACTION_ID),
        }
    }

    /// Recorder and fault plan.
    pub fn core(&self) -> &SimCore {
        &self.core
    }

    pub fn options(&self) -> Maas360Options {
        read(&self.options).clone()
    }

    /// Replaces every option at once (issued tokens stay valid; the rate
    /// limit starts afresh).
    pub fn set_options(&self, options: Maas360Options) {
        *write(&self.options) = options;
        self.limit.clear();
    }

    /// Sets the lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        write(&self.options).token_lifetime_seconds = lifetime.as_secs();
    }

    /// Expires every issued auth token now: the next API call with any of
    /// them answers 401 `Token expired.` (refresh tokens stay valid).
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for token in lock(&self.tokens).values_mut() {
            token.expires = token.expires.min(now);
        }
    }

    /// Makes every refresh token unknown: a refresh answers `errorCode` 1002.
    pub fn revoke_refresh_tokens(&self) {
        lock(&self.refresh_tokens).clear();
    }

    /// Issues an auth token (and its refresh token) for the configured
    /// billing id, as a login would, for tests that do not care about the
    /// login.
    pub fn issue_token(&self) -> String {
        let billing_id = read(&self.options).billing_id.clone();
        self.issue(&billing_id).0
    }

    /// A new (auth token, refresh token) pair for `billing_id`.
    fn issue(&self, billing_id: &str) -> (String, String) {
        let lifetime = Duration::from_secs(read(&self.options).token_lifetime_seconds);
        let token = random_token();
        let refresh = random_token();
        let now = Instant::now();
        {
            let mut tokens = lock(&self.tokens);
            tokens.retain(|_, t| t.expires + EXPIRED_TOKEN_MEMORY > now);
            tokens.insert(
                token.clone(),
                IssuedToken {
                    billing_id: billing_id.to_owned(),
                    expires: now + lifetime,
                },
            );
        }
        lock(&self.refresh_tokens).insert(refresh.clone(), billing_id.to_owned());
        (token, refresh)
    }

    fn check_token(&self, headers: &HeaderMap) -> TokenCheck {
        let Some(token) = token_from(headers) else {
            return TokenCheck::Invalid;
        };
        match lock(&self.tokens).get(&token) {
            None => TokenCheck::Invalid,
            Some(t) if t.expires <= Instant::now() => TokenCheck::Expired,
            Some(t) => TokenCheck::Valid(t.billing_id.clone()),
        }
    }

    /// Spends a refresh token of `billing_id`; `false` if it is not one.
    fn spend_refresh_token(&self, refresh: &str, billing_id: &str) -> bool {
        let mut refresh_tokens = lock(&self.refresh_tokens);
        if refresh_tokens.get(refresh).map(String::as_str) == Some(billing_id) {
            refresh_tokens.remove(refresh);
            true
        } else {
            false
        }
    }

    /// Requests per billing id in any rolling second; 0 turns the limit off.
    pub fn set_rate_limit(&self, per_second: u32) {
        write(&self.options).rate_limit_per_second = per_second;
        self.limit.clear();
    }

    /// The recorded requests the rate limit refused (injected 429 faults are
    /// not counted). Cleared with the records.
    pub fn rate_limited_requests(&self) -> Vec<RecordedRequest> {
        self.core
            .requests()
            .into_iter()
            .filter(|r| r.status == Some(429) && r.fault.is_none())
            .collect()
    }

    /// Admits one request for `billing_id` or says how many seconds to wait:
    /// a sliding log of the admitted requests of the last second.
    fn admit(&self, billing_id: &str) -> Result<(), u64> {
        let per_second = read(&self.options).rate_limit_per_second;
        self.limit.admit(billing_id, per_second)
    }

    /// Plans an `actionStatus` 1 answer for an existing device.
    pub fn fail_next_action(&self, failure: ActionFailure) -> Result<(), ControlError> {
        if failure.device_id.trim().is_empty() || failure.count == 0 {
            return Err(ControlError::Invalid(
                "an action failure needs a `device_id` and a `count` of at least 1".into(),
            ));
        }
        lock(&self.failures).push(failure);
        Ok(())
    }

    /// The planned failures not yet used up.
    pub fn action_failures(&self) -> Vec<ActionFailure> {
        lock(&self.failures).clone()
    }

    pub fn clear_action_failures(&self) {
        lock(&self.failures).clear();
    }

    /// Uses up one planned failure for `action` on `device_id`, if any;
    /// returns its description.
    fn take_failure(&self, action: &str, device_id: &str) -> Option<String> {
        let mut failures = lock(&self.failures);
        let i = failures.iter().position(|f| f.matches(action, device_id))?;
        failures[i].count -= 1;
        let description = failures[i]
            .description
            .clone()
            .unwrap_or_else(|| DEFAULT_ACTION_FAILURE.to_owned());
        if failures[i].count == 0 {
            failures.remove(i);
        }
        Some(description)
    }

    /// Every `actionResponse` answered, oldest first.
    pub fn action_results(&self) -> Vec<ActionResult> {
        lock(&self.results).clone()
    }

    /// The custom attributes set on a device, in the order first set.
    pub fn custom_attributes(&self, device_id: &str) -> Vec<(String, String)> {
        read(&self.attributes)
            .get(&device_id.trim().to_ascii_uppercase())
            .cloned()
            .unwrap_or_default()
    }

    /// The value of the custom attribute `name` (ignoring case) on a device;
    /// `None` when it was never set (or there is no such device).
    pub fn custom_attribute(&self, device_id: &str, name: &str) -> Option<String> {
        self.custom_attributes(device_id)
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(_, v)| v)
    }

    /// Sets (`Some`) or clears (`None`) a device's custom attribute behind
    /// the API's back, as an admin in the portal would: not recorded. The
    /// device must exist and the attribute be defined.
    pub fn set_custom_attribute_value(
        &self,
        device_id: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), ControlError> {
        let id = self
            .device(device_id)
            .map(|d| device_id_of(&d))
            .ok_or(ControlError::NotFound)?;
        let name = self.defined_name(name).ok_or_else(|| {
            ControlError::Invalid(format!("custom attribute {name} is not defined"))
        })?;
        let mut attributes = write(&self.attributes);
        let list = attributes.entry(id.to_ascii_uppercase()).or_default();
        match value {
            Some(value) => match list.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                Some(slot) => slot.1 = value.to_owned(),
                None => list.push((name, value.to_owned())),
            },
            None => list.retain(|(n, _)| !n.eq_ignore_ascii_case(&name)),
        }
        Ok(())
    }

    /// The custom attributes the customer has defined, in creation order.
    pub fn custom_attribute_names(&self) -> Vec<String> {
        read(&self.attribute_names).clone()
    }

    /// The defined spelling of `name` (matched ignoring case), if defined.
    fn defined_name(&self, name: &str) -> Option<String> {
        read(&self.attribute_names)
            .iter()
            .find(|n| n.eq_ignore_ascii_case(name.trim()))
            .cloned()
    }

    /// Defines a custom attribute, as an admin does in the portal.
    pub fn define_custom_attribute(&self, name: &str) -> Result<(), ControlError> {
        let name = name.trim();
        if name.is_empty() || name.contains(FORBIDDEN_ATTRIBUTE_CHARS) {
            return Err(ControlError::Invalid(
                "a custom attribute name is not empty and has none of . < > \\ \" '".into(),
            ));
        }
        let mut names = write(&self.attribute_names);
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(ControlError::Conflict(format!(
                "custom attribute {name} exists"
            )));
        }
        names.push(name.to_owned());
        Ok(())
    }

    /// Deletes a custom attribute and its value on every device; `false`
    /// when it was not defined.
    pub fn remove_custom_attribute(&self, name: &str) -> bool {
        let Some(name) = self.defined_name(name) else {
            return false;
        };
        write(&self.attribute_names).retain(|n| *n != name);
        for list in write(&self.attributes).values_mut() {
            list.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        }
        true
    }

    /// Renames a custom attribute; the values set on devices follow it.
    pub fn rename_custom_attribute(&self, from: &str, to: &str) -> Result<(), ControlError> {
        let to = to.trim();
        if to.is_empty() || to.contains(FORBIDDEN_ATTRIBUTE_CHARS) {
            return Err(ControlError::Invalid(
                "a custom attribute name is not empty and has none of . < > \\ \" '".into(),
            ));
        }
        let from = self.defined_name(from).ok_or(ControlError::NotFound)?;
        {
            let mut names = write(&self.attribute_names);
            if names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(to) && !n.eq_ignore_ascii_case(&from))
            {
                return Err(ControlError::Conflict(format!(
                    "custom attribute {to} exists"
                )));
            }
            for n in names.iter_mut().filter(|n| **n == from) {
                *n = to.to_owned();
            }
        }
        for list in write(&self.attributes).values_mut() {
            for (n, _) in list.iter_mut() {
                if n.eq_ignore_ascii_case(&from) {
                    *n = to.to_owned();
                }
            }
        }
        Ok(())
    }

    /// All devices, in listing order.
    pub fn devices(&self) -> Vec<Value> {
        read(&self.devices).clone()
    }

    /// Every device's `maas360DeviceID`, in listing order.
    pub fn device_ids(&self) -> Vec<String> {
        read(&self.devices).iter().map(device_id_of).collect()
    }

    pub fn device_count(&self) -> usize {
        read(&self.devices).len()
    }

    /// The device with this `maas360DeviceID` (ignoring case).
    pub fn device(&self, id: &str) -> Option<Value> {
        let devices = read(&self.devices);
        find_device(&devices, id).map(|i| devices[i].clone())
    }

    /// Appends a device object; it needs a new string `maas360DeviceID`.
    pub fn add_device(&self, device: Value) -> Result<Value, ControlError> {
        let id = device
            .get("maas360DeviceID")
            .and_then(Value::as_str)
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| {
                ControlError::Invalid("a device needs a string `maas360DeviceID`".into())
            })?
            .to_owned();
        if !device.is_object() {
            return Err(ControlError::Invalid("a device is a JSON object".into()));
        }
        // Seeder before devices, as `generate_devices` takes them.
        let mut seeder = lock(&self.seeder);
        let mut devices = write(&self.devices);
        if find_device(&devices, &id).is_some() {
            return Err(ControlError::Conflict(format!("device {id} exists")));
        }
        seeder.reserve("id", &id);
        devices.push(device.clone());
        Ok(device)
    }

    /// Appends `count` newly generated devices (continuing the seeded
    /// sequence, users drawn from the current users) and returns them.
    pub fn generate_devices(&self, count: usize) -> Vec<Value> {
        let users = read(&self.users).clone();
        let mut seeder = lock(&self.seeder);
        let mut devices = write(&self.devices);
        // Ids added through the control API are reserved, so none collides.
        let new = seeder.devices(count, &users);
        devices.extend(new.iter().cloned());
        new
    }

    /// Removes a device; later devices move up one place in the listing.
    pub fn remove_device(&self, id: &str) -> Option<Value> {
        let mut devices = write(&self.devices);
        find_device(&devices, id).map(|i| devices.remove(i))
    }

    /// Sets the given top-level fields of a device; returns the updated one.
    pub fn update_device(&self, id: &str, fields: Map<String, Value>) -> Option<Value> {
        let mut devices = write(&self.devices);
        let i = find_device(&devices, id)?;
        let object = devices[i].as_object_mut()?;
        for (k, v) in fields {
            object.insert(k, v);
        }
        Some(devices[i].clone())
    }

    /// Replaces a device object entirely (keeping its place, and its
    /// `maas360DeviceID` when the new object has none).
    pub fn replace_device(&self, id: &str, mut device: Value) -> Result<(), ControlError> {
        let Some(object) = device.as_object_mut() else {
            return Err(ControlError::Invalid("a device is a JSON object".into()));
        };
        let mut devices = write(&self.devices);
        let i = find_device(&devices, id).ok_or(ControlError::NotFound)?;
        object
            .entry("maas360DeviceID")
            .or_insert_with(|| json!(device_id_of(&devices[i])));
        devices[i] = device;
        Ok(())
    }

    /// All users, in listing order.
    pub fn users(&self) -> Vec<Value> {
        read(&self.users).clone()
    }

    /// A user by `userIdentifier` or `userName` (ignoring case).
    pub fn user(&self, reference: &str) -> Option<Value> {
        let users = read(&self.users);
        find_user(&users, reference).map(|i| users[i].clone())
    }

    /// Appends a user; it needs a new `userName`; an absent `userIdentifier`
    /// is assigned.
    pub fn add_user(&self, mut user: Value) -> Result<Value, ControlError> {
        let name = field(&user, "userName");
        if name.trim().is_empty() {
            return Err(ControlError::Invalid("a user needs a `userName`".into()));
        }
        let Some(object) = user.as_object_mut() else {
            return Err(ControlError::Invalid("a user is a JSON object".into()));
        };
        let mut users = write(&self.users);
        if find_user(&users, &name).is_some() {
            return Err(ControlError::Conflict(format!("user {name} exists")));
        }
        if text(object.get("userIdentifier")).is_empty() {
            let id: String = rand::thread_rng()
                .sample_iter(&Alphanumeric)
                .take(32)
                .map(|c| char::from(c).to_ascii_uppercase())
                .collect();
            object.insert("userIdentifier".into(), json!(id));
        }
        let id = text(object.get("userIdentifier"));
        if find_user(&users, &id).is_some() {
            return Err(ControlError::Conflict(format!("user {id} exists")));
        }
        users.push(user.clone());
        Ok(user)
    }

    /// Sets the given fields of a user. A changed `userName` or
    /// `emailAddress` is also written to the user's devices. Returns the
    /// updated user.
    pub fn update_user(&self, reference: &str, fields: Map<String, Value>) -> Option<Value> {
        let mut users = write(&self.users);
        let i = find_user(&users, reference)?;
        let old_name = field(&users[i], "userName");
        let object = users[i].as_object_mut()?;
        for (k, v) in fields {
            object.insert(k, v);
        }
        let user = users[i].clone();
        drop(users);
        if !old_name.is_empty() {
            for d in write(&self.devices).iter_mut() {
                if !field(d, "username").eq_ignore_ascii_case(&old_name) {
                    continue;
                }
                if let Some(object) = d.as_object_mut() {
                    object.insert("username".into(), json!(field(&user, "userName")));
                    object.insert("emailAddress".into(), json!(field(&user, "emailAddress")));
                }
            }
        }
        Some(user)
    }

    /// Removes a user and clears it from its devices (`username`,
    /// `emailAddress` and `userDomain` become `""`); returns how many
    /// devices changed.
    pub fn remove_user(&self, reference: &str) -> Option<usize> {
        let mut users = write(&self.users);
        let i = find_user(&users, reference)?;
        let user = users.remove(i);
        drop(users);
        let name = field(&user, "userName");
        let mut changed = 0;
        for d in write(&self.devices).iter_mut() {
            if name.is_empty() || !field(d, "username").eq_ignore_ascii_case(&name) {
                continue;
            }
            if let Some(object) = d.as_object_mut() {
                for key in ["username", "emailAddress", "userDomain"] {
                    object.insert(key.into(), json!(""));
                }
                changed += 1;
            }
        }
        Some(changed)
    }

    pub(crate) fn banner(&self, base_url: &str, control_url: &str) -> String {
        let o = read(&self.options);
        let limit = match o.rate_limit_per_second {
            0 => "none".to_owned(),
            n => format!("{n} per rolling second per billing id"),
        };
        format!(
            "MaaS360 simulator: {} devices, {} users\n  url:            {base_url}\n  billing_id:     {}\n  platform_id:    {}\n  app_id:         {}\n  app_version:    {}\n  app_access_key: {}\n  username:       {}\n  password:       {}\n  rate limit:     {limit}\n  control API:    {control_url}",
            read(&self.devices).len(),
            read(&self.users).len(),
            o.billing_id,
            o.platform_id,
            o.app_id,
            o.app_version,
            o.app_access_key,
            o.username,
            o.password,
        )
    }

    fn record_result(&self, result: ActionResult) {
        lock(&self.results).push(result);
    }
}

fn find_device(devices: &[Value], id: &str) -> Option<usize> {
    let id = id.trim();
    if id.is_empty() {
        return None;
    }
    devices
        .iter()
        .position(|d| device_id_of(d).eq_ignore_ascii_case(id))
}

fn find_user(users: &[Value], reference: &str) -> Option<usize> {
    let reference = reference.trim();
    if reference.is_empty() {
        return None;
    }
    users
        .iter()
        .position(|u| field(u, "userIdentifier") == reference)
        .or_else(|| {
            users
                .iter()
                .position(|u| field(u, "userName").eq_ignore_ascii_case(reference))
        })
}

// ---------------------------------------------------------------- responses

/// The error JSON of the simulated server (**\[ours\]**).
fn maas_error(status: StatusCode, code: u32, description: &str) -> Response {
    (
        status,
        Json(json!({ "errorResponse": { "errorCode": code, "errorDesc": description } })),
    )
        .into_response()
}

fn token_error(description: &str) -> Response {
    maas_error(StatusCode::UNAUTHORIZED, error_code::TOKEN, description)
}

/// "A bad parameter gives 400 with no useful body."
fn bad_request() -> Response {
    StatusCode::BAD_REQUEST.into_response()
}

fn rate_limited(retry_after: u64) -> Response {
    let mut response = maas_error(
        StatusCode::TOO_MANY_REQUESTS,
        error_code::RATE_LIMITED,
        "Request limit exceeded for this customer. Try again later.",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// The page a gateway in front of the web services answers.
fn gateway_page(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=iso-8859-1")],
        format!(
            "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>{code} {reason}</title>\n</head><body>\n<h1>{reason}</h1>\n<p>The proxy server received an invalid response from an upstream server.</p>\n</body></html>\n"
        ),
    )
        .into_response()
}

fn fault_response(status: StatusCode, retry_after: Option<u64>) -> Response {
    let mut response = match status.as_u16() {
        400 => bad_request(),
        401 => token_error(TOKEN_INVALID),
        403 => maas_error(
            status,
            error_code::ACCESS_DENIED,
            "Access denied for this customer.",
        ),
        429 => maas_error(
            status,
            error_code::RATE_LIMITED,
            "Request limit exceeded for this customer. Try again later.",
        ),
        502 | 504 => gateway_page(status),
        s if s >= 500 => maas_error(
            status,
            error_code::SERVER_ERROR,
            "An internal error occurred while processing the request.",
        ),
        _ => maas_error(
            status,
            error_code::REQUEST_FAILED,
            status.canonical_reason().unwrap_or("Error"),
        ),
    };
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

// --------------------------------------------------------------- vendor API

type S = State<Arc<Maas360State>>;

/// `path` and `path/` (clients add the trailing slash) to the same handler.
fn both(
    router: Router<Arc<Maas360State>>,
    path: &str,
    method: MethodRouter<Arc<Maas360State>>,
) -> Router<Arc<Maas360State>> {
    router
        .route(path, method.clone())
        .route(&format!("{path}/"), method)
}

/// Builds the MaaS360 routes: the vendor API under `/maas360` and the control
/// API under `/_sim/maas360`.
pub(crate) fn router(state: Arc<Maas360State>) -> Router {
    let mut api = Router::new();
    for (path, method) in [
        (
            "/auth-apis/auth/2.0/authenticate/customer/{billing_id}",
            post(authenticate_v2),
        ),
        (
            "/auth-apis/auth/1.0/authenticate/{billing_id}",
            post(authenticate_v1),
        ),
        (
            "/auth-apis/auth/2.0/refreshToken/customer/{billing_id}",
            post(refresh),
        ),
        (
            "/device-apis/devices/2.0/search/customer/{billing_id}",
            get(search_devices),
        ),
        (
            "/device-apis/devices/1.0/{operation}/{billing_id}",
            get(device_get).post(device_post),
        ),
        ("/user-apis/user/1.0/search/{billing_id}", get(search_users)),
    ] {
        api = both(api, path, method);
    }
    let api = api
        .fallback(|| async { StatusCode::NOT_FOUND.into_response() })
        .with_state(state.clone())
        // Inner: rate limit and token; outer: record and apply faults.
        .layer(from_fn_with_state(state.clone(), gate))
        .layer(from_fn_with_state(state.core.clone(), vendor_middleware));
    let control = control_router(state.clone()).merge(core::control_router(state.core.clone()));
    Router::new()
        .nest(SimKind::Maas360.base_path(), api)
        .nest(&SimKind::Maas360.control_path(), control)
}

/// In front of every vendor route (inside the shared recorder): the rate
/// limit per billing id, then (except for the auth endpoints) the token and
/// its customer.
async fn gate(State(state): S, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let billing_id = billing_id_of(&path);
    if let Some(billing_id) = &billing_id {
        if let Err(wait) = state.admit(billing_id) {
            return rate_limited(wait);
        }
    }
    if !is_auth_path(&path) {
        match state.check_token(request.headers()) {
            TokenCheck::Invalid => return token_error(TOKEN_INVALID),
            TokenCheck::Expired => return token_error(TOKEN_EXPIRED),
            TokenCheck::Valid(token_billing_id) => {
                if billing_id.is_some_and(|b| b != token_billing_id) {
                    return maas_error(
                        StatusCode::FORBIDDEN,
                        error_code::ACCESS_DENIED,
                        "Access denied: the billing ID does not match the authenticated customer.",
                    );
                }
            }
        }
    }
    next.run(request).await
}

/// The `maaS360AdminAuth` object of an auth body; `None` when the body is
/// not that JSON.
fn admin_auth(body: &Bytes) -> Option<Map<String, Value>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value
        .get("authRequest")?
        .get("maaS360AdminAuth")?
        .as_object()
        .cloned()
}

fn auth_answer(inner: Value) -> Response {
    (StatusCode::OK, Json(json!({ "authResponse": inner }))).into_response()
}

fn auth_refused(code: u32, description: &str) -> Response {
    auth_answer(json!({ "errorCode": code, "errorDesc": description }))
}

/// Checks a login; `Err` is the refusing answer (HTTP 200, `errorCode` ≠ 0).
fn check_login(
    options: &Maas360Options,
    path_billing_id: &str,
    auth: &Map<String, Value>,
    with_secrets: bool,
) -> Result<(), Box<Response>> {
    let get = |name: &str| text(auth.get(name));
    let user_ok = path_billing_id == options.billing_id
        && get("billingID") == options.billing_id
        && get("userName").eq_ignore_ascii_case(&options.username)
        && (!with_secrets || get("password") == options.password);
    if !user_ok {
        return Err(Box::new(auth_refused(
            error_code::INVALID_CREDENTIALS,
            "Invalid credentials",
        )));
    }
    // A refresh may leave the access key out; if it sends one, it must fit.
    let key = get("appAccessKey");
    let key_ok = if with_secrets {
        key == options.app_access_key
    } else {
        !auth.contains_key("appAccessKey") || key == options.app_access_key
    };
    let app_ok = get("appID") == options.app_id
        && get("appVersion") == options.app_version
        && get("platformID") == options.platform_id
        && key_ok;
    if !app_ok {
        return Err(Box::new(auth_refused(
            error_code::INVALID_APP,
            "Invalid app details or access key",
        )));
    }
    Ok(())
}

fn authenticate(state: &Maas360State, billing_id: &str, body: &Bytes, v2: bool) -> Response {
    let Some(auth) = admin_auth(body) else {
        return bad_request();
    };
    let options = state.options();
    if let Err(refused) = check_login(&options, billing_id, &auth, true) {
        return *refused;
    }
    let (token, refresh) = state.issue(billing_id);
    if v2 {
        auth_answer(json!({ "authToken": token, "errorCode": 0, "refreshToken": refresh }))
    } else {
        auth_answer(json!({ "authToken": token, "errorCode": 0 }))
    }
}

async fn authenticate_v2(State(state): S, Path(billing_id): Path<String>, body: Bytes) -> Response {
    authenticate(&state, &billing_id, &body, true)
}

async fn authenticate_v1(State(state): S, Path(billing_id): Path<String>, body: Bytes) -> Response {
    authenticate(&state, &billing_id, &body, false)
}

async fn refresh(State(state): S, Path(billing_id): Path<String>, body: Bytes) -> Response {
    let Some(auth) = admin_auth(&body) else {
        return bad_request();
    };
    let options = state.options();
    let refresh_token = text(auth.get("refreshToken"));
    let known = check_login(&options, &billing_id, &auth, false).is_ok()
        && state.spend_refresh_token(&refresh_token, &billing_id);
    if !known {
        return auth_refused(error_code::INVALID_CREDENTIALS, "Invalid credentials");
    }
    let (token, refresh) = state.issue(&billing_id);
    auth_answer(json!({ "authToken": token, "errorCode": 0, "refreshToken": refresh }))
}

/// Query parameters decoded once; names case-sensitive; the first of a
/// repeated name wins.
fn query_params(raw: Option<&str>) -> HashMap<String, String> {
    let mut params = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        params
            .entry(k.into_owned())
            .or_insert_with(|| v.into_owned());
    }
    params
}

/// A parameter, `None` when absent or blank.
fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// `pageNumber` (from 1, default 1) and `pageSize` (one of [`PAGE_SIZES`]);
/// `None` is the 400.
fn paging(params: &HashMap<String, String>, default_size: usize) -> Option<(usize, usize)> {
    let size = match param(params, "pageSize") {
        None => default_size,
        Some(v) => v.parse().ok().filter(|s| PAGE_SIZES.contains(s))?,
    };
    let number = match param(params, "pageNumber") {
        None => 1,
        Some(v) => v.parse().ok().filter(|n: &usize| *n >= 1)?,
    };
    Some((number, size))
}

/// One page of `matched` as `{root:{count,pageNumber,pageSize,item}}`, with
/// the XML→JSON quirks: one record is an object, none is no key.
fn listing(root: &str, item: &str, matched: &[&Value], number: usize, size: usize) -> Response {
    let start = (number - 1).saturating_mul(size);
    let page: Vec<Value> = matched
        .iter()
        .skip(start)
        .take(size)
        .map(|v| (*v).clone())
        .collect();
    let mut inner = Map::new();
    inner.insert("count".into(), json!(matched.len()));
    inner.insert("pageNumber".into(), json!(number));
    inner.insert("pageSize".into(), json!(page.len()));
    match page.len() {
        0 => {}
        1 => {
            inner.insert(item.into(), page.into_iter().next().unwrap_or_default());
        }
        _ => {
            inner.insert(item.into(), Value::Array(page));
        }
    }
    let mut body = Map::new();
    body.insert(root.into(), Value::Object(inner));
    Json(Value::Object(body)).into_response()
}

/// The device search's filters (`None` from [`DeviceQuery::parse`] is a 400).
#[derive(Debug)]
struct DeviceQuery {
    status: String,
    /// (device field, wanted value) compared whole, ignoring case.
    exact: Vec<(&'static str, String)>,
    /// (device field, prefix) compared ignoring case.
    prefix: Vec<(&'static str, String)>,
    reported_after: Option<i64>,
}

const EXACT_FILTERS: &[(&str, &str)] = &[
    ("maas360DeviceId", "maas360DeviceID"),
    ("udid", "udid"),
    ("imeiMeid", "imeiEsn"),
    ("wifiMacAddress", "wifiMacAddress"),
    ("email", "emailAddress"),
    ("platformName", "platformName"),
    ("maas360ManagedStatus", "maas360ManagedStatus"),
    ("userDomain", "userDomain"),
    ("mailboxDeviceId", "mailboxDeviceId"),
];

const PREFIX_FILTERS: &[(&str, &str)] = &[
    ("partialDeviceName", "deviceName"),
    ("partialUsername", "username"),
    ("partialPhoneNumber", "phoneNumber"),
];

impl DeviceQuery {
    fn parse(params: &HashMap<String, String>) -> Option<Self> {
        let status = match param(params, "deviceStatus") {
            None => "Active".to_owned(),
            Some(s) if s.eq_ignore_ascii_case("active") => "Active".to_owned(),
            Some(s) if s.eq_ignore_ascii_case("inactive") => "Inactive".to_owned(),
            Some(_) => return None,
        };
        let reported_after = match param(params, "lastReportedAfterInEpochms") {
            None => None,
            Some(v) => Some(v.parse().ok()?),
        };
        let pick = |table: &[(&str, &'static str)]| -> Vec<(&'static str, String)> {
            table
                .iter()
                .filter_map(|(name, field)| param(params, name).map(|v| (*field, v.to_owned())))
                .collect()
        };
        Some(Self {
            status,
            exact: pick(EXACT_FILTERS),
            prefix: pick(PREFIX_FILTERS),
            reported_after,
        })
    }

    /// Runs for every stored device on every page of a listing, so the
    /// common case (the status alone) allocates nothing.
    fn matches(&self, device: &Value) -> bool {
        let status = match device.get("deviceStatus") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            Some(Value::String(_)) | None | Some(Value::Null) => "Active",
            Some(_) => return false,
        };
        status.eq_ignore_ascii_case(&self.status)
            && self
                .exact
                .iter()
                .all(|(f, want)| field(device, f).eq_ignore_ascii_case(want))
            && self.prefix.iter().all(|(f, want)| {
                let have = field(device, f).to_lowercase();
                have.starts_with(&want.to_lowercase())
            })
            && self.reported_after.is_none_or(|after| {
                device
                    .get("lastReportedInEpochms")
                    .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
                    .is_some_and(|t| t > after)
            })
    }
}

async fn search_devices(State(state): S, RawQuery(raw): RawQuery) -> Response {
    devices_page(&state, &query_params(raw.as_deref()))
}

fn devices_page(state: &Maas360State, params: &HashMap<String, String>) -> Response {
    let (Some((number, size)), Some(query)) = (
        paging(params, DEFAULT_DEVICE_PAGE_SIZE),
        DeviceQuery::parse(params),
    ) else {
        return bad_request();
    };
    let devices = read(&state.devices);
    let matched: Vec<&Value> = devices.iter().filter(|d| query.matches(d)).collect();
    listing("devices", "device", &matched, number, size)
}

async fn search_users(State(state): S, RawQuery(raw): RawQuery) -> Response {
    let params = query_params(raw.as_deref());
    let Some((number, size)) = paging(&params, DEFAULT_USER_PAGE_SIZE) else {
        return bad_request();
    };
    let include = match param(&params, "includeAllUsers") {
        None | Some("0") => 0,
        Some("1") => 1,
        Some("2") => 2,
        Some(_) => return bad_request(),
    };
    // Only 0 and 2 ask which users have a device. The set costs a pass over
    // every device on every page, which made the listing (`1`, what the
    // adapter asks for) quadratic in the fleet.
    let with_devices: std::collections::HashSet<String> = if include == 1 {
        Default::default()
    } else {
        read(&state.devices)
            .iter()
            .map(|d| field(d, "username").to_lowercase())
            .filter(|u| !u.is_empty())
            .collect()
    };
    let prefix = |name: &str| param(&params, name).map(str::to_lowercase);
    let (user_prefix, email_prefix) = (prefix("partialUsername"), prefix("partialEmailAddress"));
    let domain = param(&params, "domain");
    let users = read(&state.users);
    let matched: Vec<&Value> = users
        .iter()
        .filter(|u| {
            let has = || with_devices.contains(&field(u, "userName").to_lowercase());
            let included = match include {
                0 => has(),
                2 => !has(),
                _ => true,
            };
            included
                && user_prefix
                    .as_deref()
                    .is_none_or(|p| field(u, "userName").to_lowercase().starts_with(p))
                && email_prefix
                    .as_deref()
                    .is_none_or(|p| field(u, "emailAddress").to_lowercase().starts_with(p))
                && domain.is_none_or(|d| field(u, "domain").eq_ignore_ascii_case(d))
        })
        .collect();
    listing("users", "user", &matched, number, size)
}

/// `GET /device-apis/devices/1.0/{operation}/{billingId}`.
async fn device_get(
    State(state): S,
    Path((operation, _billing_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw.as_deref());
    match operation.as_str() {
        "search" => devices_page(&state, &params),
        "core" | "identity" => {
            let Some(device) = param(&params, "deviceId").and_then(|id| state.device(id)) else {
                return bad_request();
            };
            if operation == "core" {
                return Json(json!({ "device": device })).into_response();
            }
            let id = device_id_of(&device);
            let attributes: Vec<Value> = state
                .custom_attributes(&id)
                .into_iter()
                .map(|(name, value)| {
                    json!({ "customAttributeName": name, "customAttributeValue": value })
                })
                .collect();
            let mut custom = Map::new();
            match attributes.len() {
                0 => {}
                1 => {
                    custom.insert(
                        "customAttribute".into(),
                        attributes.into_iter().next().unwrap_or_default(),
                    );
                }
                _ => {
                    custom.insert("customAttribute".into(), Value::Array(attributes));
                }
            }
            Json(json!({ "deviceIdentity": {
                "maas360DeviceID": id,
                "customAssetNumber": field(&device, "customAssetNumber"),
                "owner": field(&device, "deviceOwner"),
                "ownership": field(&device, "ownership"),
                "vendor": "",
                "poNumber": "",
                "purchaseType": "",
                "purchaseDate": "",
                "purchasePrice": "",
                "warrantyNumber": "",
                "warrantyExpirationDate": "",
                "warrantyType": "",
                "office": "",
                "department": "",
                "customAttributes": custom,
            }}))
            .into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The parameters of an action: the query string, overridden by the form
/// body. `None` (the 400) when a body comes without the form content type
/// or the content type is another one.
fn action_params(
    headers: &HeaderMap,
    raw: Option<&str>,
    body: &Bytes,
) -> Option<HashMap<String, String>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match content_type.as_deref() {
        Some("application/x-www-form-urlencoded") => {}
        None if body.is_empty() => {}
        _ => return None,
    }
    let mut params = query_params(raw);
    for (k, v) in url::form_urlencoded::parse(body) {
        params.insert(k.into_owned(), v.into_owned());
    }
    Some(params)
}

/// `POST /device-apis/devices/1.0/{operation}/{billingId}`.
async fn device_post(
    State(state): S,
    Path((operation, _billing_id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let Some(action) = ACTIONS
        .iter()
        .chain([&SET_CUSTOM_ATTRIBUTE])
        .find(|a| **a == operation)
        .copied()
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let params = action_params(&headers, raw.as_deref(), &body);
    let device_ref = params
        .as_ref()
        .and_then(|p| param(p, "deviceId"))
        .unwrap_or_default()
        .to_owned();
    let device = state.device(&device_ref);
    // A custom attribute write is recorded as what it writes.
    let recorded_name = match &params {
        Some(p) if action == SET_CUSTOM_ATTRIBUTE => match (
            p.get("attributeName").map(|v| v.trim()),
            p.get("attributeValue").map(|v| v.trim()),
        ) {
            (Some(name), Some(value)) if !name.is_empty() => {
                format!("SetCustomAttribute:{name}={value}")
            }
            _ => "SetCustomAttribute".to_owned(),
        },
        None if action == SET_CUSTOM_ATTRIBUTE => "SetCustomAttribute".to_owned(),
        _ => action.to_owned(),
    };
    let record = |status: StatusCode| {
        state.core.record_action(RecordedAction {
            seq: 0,
            at: Utc::now(),
            kind: SimKind::Maas360,
            device_ref: device_ref.clone(),
            device_id: device.as_ref().map(device_id_of),
            action: recorded_name.clone(),
            profile_id: None,
            body: Value::String(String::from_utf8_lossy(&body).into_owned()),
            status: status.as_u16(),
        });
    };
    let Some(params) = params.filter(|_| !device_ref.is_empty()) else {
        record(StatusCode::BAD_REQUEST);
        return bad_request();
    };
    let valid = if action == "wipeDevice" {
        ["notifyMe", "notifyUser"].iter().all(|name| {
            param(&params, name)
                .is_none_or(|v| v.eq_ignore_ascii_case("yes") || v.eq_ignore_ascii_case("no"))
        })
    } else if action == SET_CUSTOM_ATTRIBUTE {
        param(&params, "attributeName").is_some() && params.contains_key("attributeValue")
    } else {
        true
    };
    if !valid {
        record(StatusCode::BAD_REQUEST);
        return bad_request();
    }
    record(StatusCode::OK);
    let outcome = match &device {
        None => Err(UNKNOWN_DEVICE.to_owned()),
        Some(device) => match state.take_failure(action, &device_id_of(device)) {
            Some(description) => Err(description),
            None if action == SET_CUSTOM_ATTRIBUTE => {
                set_custom_attribute(&state, &device_id_of(device), &params)
            }
            None => Ok(()),
        },
    };
    let (action_id, status, description) = match outcome {
        Ok(()) => (
            Some(state.next_action_id.fetch_add(1, Ordering::Relaxed)),
            0u8,
            ACTION_DONE.to_owned(),
        ),
        Err(description) => (None, 1u8, description),
    };
    state.record_result(ActionResult {
        at: Utc::now(),
        action: action.to_owned(),
        device_id: device_ref.clone(),
        action_id,
        action_status: status,
        description: description.clone(),
    });
    let mut inner = Map::new();
    if let Some(id) = action_id {
        inner.insert("actionID".into(), json!(id));
    }
    inner.insert("actionStatus".into(), json!(status));
    inner.insert("description".into(), json!(description));
    inner.insert(
        "maas360DeviceID".into(),
        json!(device.as_ref().map(device_id_of).unwrap_or(device_ref)),
    );
    Json(json!({ "actionResponse": inner })).into_response()
}

/// The characters IBM forbids in custom attribute names and values.
const FORBIDDEN_ATTRIBUTE_CHARS: &[char] = &['.', '<', '>', '\\', '"', '\''];

fn set_custom_attribute(
    state: &Maas360State,
    device_id: &str,
    params: &HashMap<String, String>,
) -> Result<(), String> {
    let name = params
        .get("attributeName")
        .map(|v| v.trim())
        .unwrap_or_default();
    let value = params
        .get("attributeValue")
        .map(|v| v.trim())
        .unwrap_or_default();
    if name.contains(FORBIDDEN_ATTRIBUTE_CHARS) || value.contains(FORBIDDEN_ATTRIBUTE_CHARS) {
        return Err(
            "Custom attribute names and values cannot contain . < > \\ \" or '.".to_owned(),
        );
    }
    let Some(name) = state.defined_name(name) else {
        return Err(format!(
            "Invalid attribute name: custom attribute {name} {UNDEFINED_ATTRIBUTE}"
        ));
    };
    let name = name.as_str();
    let mut attributes = write(&state.attributes);
    let list = attributes
        .entry(device_id.to_ascii_uppercase())
        .or_default();
    match list.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        Some(slot) => slot.1 = value.to_owned(),
        None => list.push((name.to_owned(), value.to_owned())),
    }
    Ok(())
}

// -------------------------------------------------------------- control API

fn control_router(state: Arc<Maas360State>) -> Router {
    Router::new()
        .route("/tokens/expire", post(control_expire_tokens))
        .route("/tokens/lifetime", put(control_token_lifetime))
        .route("/tokens/revoke-refresh", post(control_revoke_refresh))
        .route(
            "/rate-limit",
            get(control_rate_limit).put(control_set_rate_limit),
        )
        .route("/credentials", put(control_credentials))
        .route("/devices", get(control_devices).post(control_add_device))
        .route("/devices/generate", post(control_generate))
        .route(
            "/devices/{id}",
            get(control_device)
                .put(control_replace_device)
                .patch(control_update_device)
                .delete(control_remove_device),
        )
        .route("/users", get(control_users).post(control_add_user))
        .route(
            "/users/{reference}",
            get(control_user)
                .patch(control_update_user)
                .delete(control_remove_user),
        )
        .route(
            "/action-failures",
            get(control_failures)
                .post(control_add_failure)
                .delete(control_clear_failures),
        )
        .route("/action-results", get(control_results))
        .route("/custom-attributes", get(control_custom_attributes))
        .route(
            "/custom-attribute-definitions",
            get(control_attribute_names).post(control_define_attribute),
        )
        .route(
            "/custom-attribute-definitions/{name}",
            axum::routing::patch(control_rename_attribute).delete(control_remove_attribute),
        )
        .route(
            "/devices/{id}/custom-attributes",
            get(control_device_attributes),
        )
        .route(
            "/devices/{id}/custom-attributes/{name}",
            put(control_set_attribute),
        )
        .with_state(state)
}

async fn control_expire_tokens(State(state): S) -> StatusCode {
    state.expire_tokens();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lifetime {
    seconds: u64,
}

async fn control_token_lifetime(State(state): S, body: Bytes) -> Result<StatusCode, ControlError> {
    let lifetime: Lifetime = json_body(&body)?;
    state.set_token_lifetime(Duration::from_secs(lifetime.seconds));
    Ok(StatusCode::NO_CONTENT)
}

async fn control_revoke_refresh(State(state): S) -> StatusCode {
    state.revoke_refresh_tokens();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimit {
    requests_per_second: u32,
}

async fn control_rate_limit(State(state): S) -> Json<Value> {
    Json(json!({
        "requests_per_second": state.options().rate_limit_per_second,
        "rate_limited": state.rate_limited_requests().len(),
    }))
}

async fn control_set_rate_limit(State(state): S, body: Bytes) -> Result<StatusCode, ControlError> {
    let limit: RateLimit = json_body(&body)?;
    state.set_rate_limit(limit.requests_per_second);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    billing_id: Option<String>,
    platform_id: Option<String>,
    app_id: Option<String>,
    app_version: Option<String>,
    app_access_key: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

async fn control_credentials(State(state): S, body: Bytes) -> Result<StatusCode, ControlError> {
    let c: Credentials = json_body(&body)?;
    let mut guard = write(&state.options);
    let options = &mut *guard;
    for (slot, value) in [
        (&mut options.billing_id, c.billing_id),
        (&mut options.platform_id, c.platform_id),
        (&mut options.app_id, c.app_id),
        (&mut options.app_version, c.app_version),
        (&mut options.app_access_key, c.app_access_key),
        (&mut options.username, c.username),
        (&mut options.password, c.password),
    ] {
        if let Some(value) = value {
            *slot = value;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn control_devices(State(state): S) -> Json<Vec<Value>> {
    Json(state.devices())
}

async fn control_add_device(State(state): S, body: Bytes) -> Result<Response, ControlError> {
    let device = state.add_device(json_body(&body)?)?;
    Ok((StatusCode::CREATED, Json(device)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    count: usize,
}

async fn control_generate(State(state): S, body: Bytes) -> Result<Response, ControlError> {
    let generate: Generate = json_body(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(state.generate_devices(generate.count)),
    )
        .into_response())
}

async fn control_device(
    State(state): S,
    Path(id): Path<String>,
) -> Result<Json<Value>, ControlError> {
    state.device(&id).map(Json).ok_or(ControlError::NotFound)
}

async fn control_replace_device(
    State(state): S,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    state.replace_device(&id, json_body(&body)?)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn control_update_device(
    State(state): S,
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
    State(state): S,
    Path(id): Path<String>,
) -> Result<Json<Value>, ControlError> {
    state
        .remove_device(&id)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_users(State(state): S) -> Json<Vec<Value>> {
    Json(state.users())
}

async fn control_add_user(State(state): S, body: Bytes) -> Result<Response, ControlError> {
    let user = state.add_user(json_body(&body)?)?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn control_user(
    State(state): S,
    Path(reference): Path<String>,
) -> Result<Json<Value>, ControlError> {
    state
        .user(&reference)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_update_user(
    State(state): S,
    Path(reference): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ControlError> {
    let fields: Map<String, Value> = json_body(&body)?;
    state
        .update_user(&reference, fields)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_remove_user(
    State(state): S,
    Path(reference): Path<String>,
) -> Result<Json<Value>, ControlError> {
    state
        .remove_user(&reference)
        .map(|n| Json(json!({ "devices": n })))
        .ok_or(ControlError::NotFound)
}

async fn control_failures(State(state): S) -> Json<Vec<ActionFailure>> {
    Json(state.action_failures())
}

async fn control_add_failure(State(state): S, body: Bytes) -> Result<StatusCode, ControlError> {
    state.fail_next_action(json_body(&body)?)?;
    Ok(StatusCode::CREATED)
}

async fn control_clear_failures(State(state): S) -> StatusCode {
    state.clear_action_failures();
    StatusCode::NO_CONTENT
}

async fn control_results(State(state): S) -> Json<Vec<ActionResult>> {
    Json(state.action_results())
}

async fn control_custom_attributes(State(state): S) -> Json<Value> {
    let attributes = read(&state.attributes);
    let devices = read(&state.devices);
    let mut out = Map::new();
    for d in devices.iter() {
        let id = device_id_of(d);
        if let Some(list) = attributes.get(&id.to_ascii_uppercase()) {
            let map: Map<String, Value> = list.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
            out.insert(id, Value::Object(map));
        }
    }
    Json(Value::Object(out))
}

/// `GET /custom-attribute-definitions`: the defined names.
async fn control_attribute_names(State(state): S) -> Json<Vec<String>> {
    Json(state.custom_attribute_names())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributeName {
    name: String,
}

/// `POST /custom-attribute-definitions` `{"name"}`.
async fn control_define_attribute(State(state): S, body: Bytes) -> Result<Response, ControlError> {
    let new: AttributeName = json_body(&body)?;
    state.define_custom_attribute(&new.name)?;
    Ok((StatusCode::CREATED, Json(state.custom_attribute_names())).into_response())
}

/// `PATCH /custom-attribute-definitions/{name}` `{"name":"new"}`.
async fn control_rename_attribute(
    State(state): S,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let rename: AttributeName = json_body(&body)?;
    state.rename_custom_attribute(&name, &rename.name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /custom-attribute-definitions/{name}`.
async fn control_remove_attribute(
    State(state): S,
    Path(name): Path<String>,
) -> Result<StatusCode, ControlError> {
    if state.remove_custom_attribute(&name) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ControlError::NotFound)
    }
}

/// `GET /devices/{id}/custom-attributes`: `{"name": "value"}`.
async fn control_device_attributes(
    State(state): S,
    Path(id): Path<String>,
) -> Result<Json<Map<String, Value>>, ControlError> {
    if state.device(&id).is_none() {
        return Err(ControlError::NotFound);
    }
    Ok(Json(
        state
            .custom_attributes(&id)
            .into_iter()
            .map(|(n, v)| (n, Value::String(v)))
            .collect(),
    ))
}

/// `PUT /devices/{id}/custom-attributes/{name}` with a JSON string or `null`.
async fn control_set_attribute(
    State(state): S,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let value: Value = json_body(&body)?;
    let value = match &value {
        Value::Null => None,
        Value::String(s) => Some(s.as_str()),
        _ => return Err(ControlError::Invalid("a JSON string or null".into())),
    };
    state.set_custom_attribute_value(&id, &name, value)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        h
    }

    #[test]
    fn the_token_is_read_in_double_quotes_single_quotes_or_bare() {
        for value in [
            "MaaS token=\"abc-1\"",
            "MaaS token='abc-1'",
            "MaaS token=abc-1",
            "maas  TOKEN = \"abc-1\"",
        ] {
            assert_eq!(
                token_from(&headers(value)).as_deref(),
                Some("abc-1"),
                "{value}"
            );
        }
        for value in [
            "Bearer abc-1",
            "MaaStoken=\"abc-1\"",
            "MaaS token=\"\"",
            "MaaS token=",
        ] {
            assert_eq!(token_from(&headers(value)), None, "{value}");
        }
        assert_eq!(token_from(&HeaderMap::new()), None);
    }

    #[test]
    fn the_billing_id_comes_from_either_path_style() {
        assert_eq!(
            billing_id_of("/device-apis/devices/2.0/search/customer/300123/").as_deref(),
            Some("300123")
        );
        assert_eq!(
            billing_id_of("/user-apis/user/1.0/search/300123").as_deref(),
            Some("300123")
        );
        assert_eq!(
            billing_id_of("/action-apis/actions/1.0/customer/300123/action/MDM_LOCATE/device/x")
                .as_deref(),
            Some("300123")
        );
        assert_eq!(billing_id_of("/"), None);
    }

    #[test]
    fn a_login_checks_every_field_and_a_refresh_needs_no_secrets() {
        let o = Maas360Options::default();
        let good = json!({
            "billingID": o.billing_id, "platformID": o.platform_id, "appID": o.app_id,
            "appVersion": o.app_version, "appAccessKey": o.app_access_key,
            "userName": o.username, "password": o.password,
        });
        let good = good.as_object().unwrap().clone();
        assert!(check_login(&o, &o.billing_id, &good, true).is_ok());
        assert!(check_login(&o, "99999999", &good, true).is_err());
        for name in [
            "billingID",
            "userName",
            "password",
            "appID",
            "appVersion",
            "platformID",
            "appAccessKey",
        ] {
            let mut bad = good.clone();
            bad.insert(name.into(), json!("wrong"));
            assert!(
                check_login(&o, &o.billing_id, &bad, true).is_err(),
                "{name}"
            );
            let mut missing = good.clone();
            missing.remove(name);
            assert!(
                check_login(&o, &o.billing_id, &missing, true).is_err(),
                "{name}"
            );
        }
        // Numbers where strings are expected are read as their digits.
        let mut numeric = good.clone();
        numeric.insert("billingID".into(), json!(30012345));
        numeric.insert("platformID".into(), json!(3));
        assert!(check_login(&o, &o.billing_id, &numeric, true).is_ok());
        let mut refresh = good.clone();
        refresh.remove("password");
        refresh.remove("appAccessKey");
        assert!(check_login(&o, &o.billing_id, &refresh, false).is_ok());
        refresh.insert("appAccessKey".into(), json!("wrong"));
        assert!(check_login(&o, &o.billing_id, &refresh, false).is_err());
    }

    #[tokio::test]
    async fn expired_tokens_are_told_apart_from_unknown_ones() {
        let state = Maas360State::new(1, 5, Maas360Options::default());
        let token = state.issue_token();
        let auth = |t: &str| headers(&format!("MaaS token=\"{t}\""));
        assert_eq!(
            state.check_token(&auth(&token)),
            TokenCheck::Valid(DEFAULT_BILLING_ID.into())
        );
        assert_eq!(state.check_token(&auth("nope")), TokenCheck::Invalid);
        state.expire_tokens();
        assert_eq!(state.check_token(&auth(&token)), TokenCheck::Expired);
        state.set_token_lifetime(Duration::ZERO);
        let born_expired = state.issue_token();
        assert_eq!(state.check_token(&auth(&born_expired)), TokenCheck::Expired);
    }

    #[tokio::test]
    async fn the_rolling_second_admits_the_limit_per_billing_id() {
        let state = Maas360State::new(1, 1, Maas360Options::default());
        for _ in 0..20 {
            assert!(state.admit("1").is_ok());
        }
        assert_eq!(state.admit("1"), Err(1));
        assert!(
            state.admit("2").is_ok(),
            "another billing id has its own window"
        );
        state.set_rate_limit(0);
        assert!(state.admit("1").is_ok());
    }

    #[test]
    fn planned_failures_match_device_and_action_and_are_used_up() {
        let state = Maas360State::new(1, 3, Maas360Options::default());
        let id = state.device_ids()[0].clone();
        state
            .fail_next_action(ActionFailure::next(id.to_lowercase()).of("wipeDevice"))
            .unwrap();
        assert!(state.take_failure("lockDevice", &id).is_none());
        assert_eq!(
            state.take_failure("wipeDevice", &id).as_deref(),
            Some(DEFAULT_ACTION_FAILURE)
        );
        assert!(state.take_failure("wipeDevice", &id).is_none());
        assert!(state.action_failures().is_empty());
        assert!(state
            .fail_next_action(ActionFailure {
                count: 0,
                ..ActionFailure::next(id)
            })
            .is_err());
    }

    #[test]
    fn options_never_print_their_secrets() {
        let text = format!("{:?}", Maas360Options::default());
        assert!(!text.contains(DEFAULT_PASSWORD));
        assert!(!text.contains(DEFAULT_APP_ACCESS_KEY));
    }
}
