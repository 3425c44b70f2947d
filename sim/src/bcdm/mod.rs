//! The SoftBank Business Concierge Device Management (BCDM) simulator,
//! written from `MDM-APIS.md` (BCDM section), not from the BCDM adapter: it
//! verifies signatures with its own HMAC code and lists devices through its
//! own structs.
//!
//! BCDM publishes no API; `MDM-APIS.md` fixes the design this project uses,
//! and this module serves exactly that under `http://ADDR/bcdm`:
//!
//! | Request | Answer |
//! |---|---|
//! | any request, before anything else | the signature check below; then the rate limit: more than 10 verified requests in any rolling second per access key → 429 `{"error":"rate_limited"}` with `Retry-After` (seconds) |
//! | `GET /api/v1/users?offset&limit` | `{"total":N,"users":[{"user_id","login_id","name","email"}]}` (`email` may be null) |
//! | `GET /api/v1/devices?offset&limit` | `{"total":N,"devices":[{"device_id","udid","serial_number","imei","wifi_mac","model","os_version","platform","user_id","ownership","last_checkin_at","compliant","passcode_enabled","encrypted","jailbroken","manufacturer","phone_number","mtd_risk_level"}]}` (`compliant` a boolean; the other posture fields boolean or string, or `null`; `mtd_risk_level` the level last written, `null` if never) |
//! | `GET /api/v1/devices?udid=\|serial_number=\|imei=\|wifi_mac=` | the same envelope with the 0 or 1 matching device (identifiers compared ignoring case, MACs in any separator form) |
//! | `GET /api/v1/devices/{device_id}` | the bare device, or 404 `{"error":"not_found"}` |
//! | `POST /api/v1/devices/{device_id}/actions` `{"action":"lock"\|"disconnect_wifi"\|"enterprise_wipe"\|"remote_wipe"}` | 202 `{"request_id"}`; unknown device 404; unknown action or bad body 400 `{"error":"invalid_action"}`; an action the console forbids ([`BcdmPermits`]) 403 `{"error":"action_not_permitted"}` |
//! | `PUT /api/v1/devices/{device_id}/risk` `{"level":"secured"\|"low"\|"medium"\|"high"\|"critical"}` | 204, no body; the device's `mtd_risk_level` is the level from then on (listing and lookup); unknown device 404; another level (the names are exact, lower case) or a bad body 400 `{"error":"invalid_level"}` |
//!
//! `offset` defaults to 0, `limit` to 100 and may be at most 200: anything
//! else that is not a non-negative integer (or a `limit` of 0 or over 200) is
//! 400 `{"error":"invalid_parameter"}`. Listings are in insertion order.
//!
//! Signatures: `X-BCDM-Signature` must be lowercase hex
//! HMAC-SHA256(secret_key, `METHOD\nPATH_WITH_QUERY\nTIMESTAMP\nhex(SHA-256(body))`),
//! where `PATH_WITH_QUERY` is the request target exactly as received (with
//! `/bcdm`, the raw query string) and `TIMESTAMP` the `X-BCDM-Timestamp`
//! header as sent. Checked in this order: unknown (or missing) access key →
//! 401 `{"error":"unauthorized"}`; timestamp more than 300 s away from the
//! simulator's clock → 401 `{"error":"stale_request"}` (a missing or
//! non-numeric timestamp is 401 `unauthorized`); wrong signature → 401
//! `{"error":"unauthorized"}`; `X-BCDM-DM-Code` not the key's DM code → 403
//! `{"error":"forbidden"}`. Every error is `{"error","message"}`.
//!
//! Control API under `http://ADDR/_sim/bcdm` (JSON), besides the shared
//! `/requests`, `/actions`, `/records`, `/faults` (see [`crate::core`]):
//! `GET|POST /devices` (list / add one device); `POST /devices/generate`
//! `{"count":N,"platform":"iOS"}` (platform optional: the seeded mix);
//! `GET|PUT|PATCH|DELETE /devices/{device_id}`; `GET|POST /users`;
//! `GET|PATCH|DELETE /users/{user_id}` (deleting a user clears `user_id` on
//! its devices); `GET|PUT|PATCH /permits` (`{"lock":true,…}`, PATCH takes
//! some of the four); `GET|PUT /rate-limit` `{"requests_per_second":N}` (0
//! turns the limit off; GET also says how many requests it refused);
//! `GET|PUT /clock` `{"skew_seconds":N}` (the simulator's clock runs N
//! seconds off, so correct clients look stale); `GET /accepted-actions`
//! (every 202 with its `request_id`; not cleared by `DELETE /records`);
//! `GET|PUT /devices/{device_id}/risk` (`{"level":"high"}` or
//! `{"level":null}`: the stored `mtd_risk_level`, set behind the API's back
//! and not recorded). In-process: [`BcdmState::risk_level`],
//! [`BcdmState::set_risk_level`].
//!
//! Recorded actions: an action is recorded under its `action` value, a risk
//! write as `Risk:{level}` (the `level` as sent; `Risk` when the body has
//! none), each with the status answered.
//!
//! Default credentials ([`BcdmOptions::default`]): access key
//! `sim-access-key`, secret key `sim-secret-key`, DM code `SIM-DM-001`.

pub(crate) mod seed;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, RwLock},
};

use axum::{
    body::{to_bytes, Body, Bytes},
    extract::{OriginalUri, Path, RawQuery, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{from_fn_with_state, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub use crate::core::ControlError;

use self::seed::Seeder;
use super::{
    core::{self, json_body, vendor_middleware, RecordedAction, SimCore},
    util::{lock, normalize_mac, read, write, RollingLimit},
    SimKind,
};

pub use self::seed::{PLATFORM_ANDROID, PLATFORM_IOS};

pub const DEFAULT_ACCESS_KEY: &str = "sim-access-key";
pub const DEFAULT_SECRET_KEY: &str = "sim-secret-key";
pub const DEFAULT_DM_CODE: &str = "SIM-DM-001";
/// BCDM's documented limit: requests per access key in any rolling second.
pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 10;
/// How far a request's timestamp may be from the server's clock.
pub const MAX_TIMESTAMP_SKEW_SECONDS: i64 = 300;
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 200;

pub const ACCESS_KEY_HEADER: &str = "x-bcdm-access-key";
pub const DM_CODE_HEADER: &str = "x-bcdm-dm-code";
pub const TIMESTAMP_HEADER: &str = "x-bcdm-timestamp";
pub const SIGNATURE_HEADER: &str = "x-bcdm-signature";

/// Request bodies are buffered to be hashed; the shared middleware already
/// refused anything larger.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Credentials the simulated server accepts, the console's action permits,
/// the rate limit and the clock skew.
#[derive(Clone, PartialEq, Eq)]
pub struct BcdmOptions {
    pub access_key: String,
    pub secret_key: String,
    /// The DM code the access key belongs to.
    pub dm_code: String,
    pub permits: BcdmPermits,
    /// Verified requests per access key in any rolling second; 0 = no limit.
    pub rate_limit_per_second: u32,
    /// Added to the simulator's clock when it checks timestamps.
    pub clock_skew_seconds: i64,
}

impl Default for BcdmOptions {
    fn default() -> Self {
        Self {
            access_key: DEFAULT_ACCESS_KEY.into(),
            secret_key: DEFAULT_SECRET_KEY.into(),
            dm_code: DEFAULT_DM_CODE.into(),
            permits: BcdmPermits::default(),
            rate_limit_per_second: DEFAULT_RATE_LIMIT_PER_SECOND,
            clock_skew_seconds: 0,
        }
    }
}

impl fmt::Debug for BcdmOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BcdmOptions")
            .field("access_key", &self.access_key)
            .field("secret_key", &"**REDACTED**")
            .field("dm_code", &self.dm_code)
            .field("permits", &self.permits)
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("clock_skew_seconds", &self.clock_skew_seconds)
            .finish()
    }
}

/// The BCDM console's per-action settings: which MDM actions the API may
/// send. All permitted by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BcdmPermits {
    pub lock: bool,
    pub disconnect_wifi: bool,
    pub enterprise_wipe: bool,
    pub remote_wipe: bool,
}

impl Default for BcdmPermits {
    fn default() -> Self {
        Self {
            lock: true,
            disconnect_wifi: true,
            enterprise_wipe: true,
            remote_wipe: true,
        }
    }
}

impl BcdmPermits {
    pub fn allows(&self, action: BcdmAction) -> bool {
        match action {
            BcdmAction::Lock => self.lock,
            BcdmAction::DisconnectWifi => self.disconnect_wifi,
            BcdmAction::EnterpriseWipe => self.enterprise_wipe,
            BcdmAction::RemoteWipe => self.remote_wipe,
        }
    }

    pub fn set(&mut self, action: BcdmAction, permitted: bool) {
        match action {
            BcdmAction::Lock => self.lock = permitted,
            BcdmAction::DisconnectWifi => self.disconnect_wifi = permitted,
            BcdmAction::EnterpriseWipe => self.enterprise_wipe = permitted,
            BcdmAction::RemoteWipe => self.remote_wipe = permitted,
        }
    }
}

/// The MDM actions BCDM offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BcdmAction {
    Lock,
    DisconnectWifi,
    EnterpriseWipe,
    RemoteWipe,
}

impl BcdmAction {
    pub const ALL: [BcdmAction; 4] = [
        BcdmAction::Lock,
        BcdmAction::DisconnectWifi,
        BcdmAction::EnterpriseWipe,
        BcdmAction::RemoteWipe,
    ];

    /// The `action` value on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            BcdmAction::Lock => "lock",
            BcdmAction::DisconnectWifi => "disconnect_wifi",
            BcdmAction::EnterpriseWipe => "enterprise_wipe",
            BcdmAction::RemoteWipe => "remote_wipe",
        }
    }

    /// Exact wire names only: BCDM's API is lower-case snake case.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The console setting that permits the action, as the integration guide names it.
    pub fn console_setting(self) -> &'static str {
        match self {
            BcdmAction::Lock => "Remote lock",
            BcdmAction::DisconnectWifi => "Disconnect Wi-Fi",
            BcdmAction::EnterpriseWipe => "Enterprise Wipe (delete device registration)",
            BcdmAction::RemoteWipe => "Remote Wipe",
        }
    }
}

/// `"corporate"` or `"personal"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BcdmOwnership {
    Corporate,
    Personal,
}

/// A device exactly as the simulator lists it (every field always present,
/// `null` when unknown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BcdmDevice {
    pub device_id: String,
    #[serde(default)]
    pub udid: Option<String>,
    #[serde(default)]
    pub serial_number: Option<String>,
    #[serde(default)]
    pub imei: Option<String>,
    #[serde(default)]
    pub wifi_mac: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    /// `iOS`, `Android`, or whatever a test sets.
    pub platform: String,
    #[serde(default)]
    pub user_id: Option<String>,
    pub ownership: BcdmOwnership,
    /// RFC 3339.
    #[serde(default)]
    pub last_checkin_at: Option<String>,
    /// The MDM's compliance verdict; `true` when a device added through the
    /// control API does not say.
    #[serde(default = "compliant_unless_said")]
    pub compliant: bool,
    #[serde(default)]
    pub passcode_enabled: Option<bool>,
    #[serde(default)]
    pub encrypted: Option<bool>,
    #[serde(default)]
    pub jailbroken: Option<bool>,
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// E.164.
    #[serde(default)]
    pub phone_number: Option<String>,
    /// The risk level last written (`PUT /api/v1/devices/{device_id}/risk`),
    /// `null` if never.
    #[serde(default)]
    pub mtd_risk_level: Option<String>,
}

fn compliant_unless_said() -> bool {
    true
}

impl BcdmDevice {
    pub fn is_ios(&self) -> bool {
        self.platform.eq_ignore_ascii_case(PLATFORM_IOS)
    }
}

/// A user exactly as the simulator lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BcdmUser {
    pub user_id: String,
    pub login_id: String,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
}

/// An action the simulator accepted (answered 202).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedAction {
    pub request_id: String,
    pub device_id: String,
    pub action: BcdmAction,
    pub at: DateTime<Utc>,
}

/// The BCDM simulator's state: users, devices, options, rate-limit windows,
/// recorder and faults.
pub struct BcdmState {
    core: Arc<SimCore>,
    options: RwLock<BcdmOptions>,
    /// Insertion order is the listing order (paging slices it).
    users: RwLock<Vec<BcdmUser>>,
    devices: RwLock<Vec<BcdmDevice>>,
    /// Continues the seeded sequence for generated devices.
    seeder: Mutex<Seeder>,
    /// Per access key, when each admitted request of the last second arrived.
    limit: RollingLimit,
    accepted: Mutex<Vec<AcceptedAction>>,
}

impl fmt::Debug for BcdmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BcdmState")
            .field("core", &self.core)
            .field("options", &*read(&self.options))
            .field("users", &read(&self.users).len())
            .field("devices", &read(&self.devices).len())
            .finish()
    }
}

/// The identifiers a device listing can be filtered by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceLookup {
    pub udid: Option<String>,
    pub serial_number: Option<String>,
    pub imei: Option<String>,
    pub wifi_mac: Option<String>,
}

impl DeviceLookup {
    fn is_empty(&self) -> bool {
        *self == DeviceLookup::default()
    }

    /// Every given identifier matches: UDID and serial ignoring case and
    /// surrounding space, IMEI ignoring separators, MAC in any separator form.
    fn matches(&self, d: &BcdmDevice) -> bool {
        let text = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have
                .as_deref()
                .is_some_and(|h| !w.trim().is_empty() && h.trim().eq_ignore_ascii_case(w.trim())),
        };
        let digits = |s: &str| -> String { s.chars().filter(char::is_ascii_digit).collect() };
        let imei = match &self.imei {
            None => true,
            Some(w) => {
                let w = digits(w);
                !w.is_empty() && d.imei.as_deref().is_some_and(|h| digits(h) == w)
            }
        };
        let mac = match &self.wifi_mac {
            None => true,
            Some(w) => normalize_mac(w.trim()).is_some_and(|w| {
                d.wifi_mac.as_deref().and_then(normalize_mac).as_deref() == Some(w.as_str())
            }),
        };
        text(&self.udid, &d.udid) && text(&self.serial_number, &d.serial_number) && imei && mac
    }
}

impl BcdmState {
    /// Seeds `devices` devices (and about three users for every four devices) from `seed`.
    pub fn new(seed: u64, devices: usize, options: BcdmOptions) -> Self {
        let mut seeder = Seeder::new(seed);
        let users = seeder.users(Seeder::user_count_for(devices));
        let user_ids: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
        let seeded = seeder.devices(devices, &user_ids, None);
        Self {
            core: Arc::new(SimCore::new(
                SimKind::Bcdm,
                |_| false,
                ("offset", "0"),
                fault_response,
            )),
            options: RwLock::new(options),
            users: RwLock::new(users),
            devices: RwLock::new(seeded),
            seeder: Mutex::new(seeder),
            limit: RollingLimit::default(),
            accepted: Mutex::new(Vec::new()),
        }
    }

    /// Recorder and fault plan.
    pub fn core(&self) -> &SimCore {
        &self.core
    }

    pub fn options(&self) -> BcdmOptions {
        read(&self.options).clone()
    }

    /// Replaces every option at once.
    pub fn set_options(&self, options: BcdmOptions) {
        *write(&self.options) = options;
    }

    pub fn permits(&self) -> BcdmPermits {
        read(&self.options).permits
    }

    pub fn set_permits(&self, permits: BcdmPermits) {
        write(&self.options).permits = permits;
    }

    /// Permits or forbids one action, as the console's setting would.
    pub fn set_permit(&self, action: BcdmAction, permitted: bool) {
        write(&self.options).permits.set(action, permitted);
    }

    /// Requests per access key in any rolling second; 0 turns the limit off.
    pub fn set_rate_limit(&self, per_second: u32) {
        write(&self.options).rate_limit_per_second = per_second;
        self.limit.clear();
    }

    /// Runs the simulator's clock `seconds` off when it checks timestamps.
    pub fn set_clock_skew(&self, seconds: i64) {
        write(&self.options).clock_skew_seconds = seconds;
    }

    /// The recorded requests the rate limit refused (injected 429 faults are
    /// not counted). Cleared with the records.
    pub fn rate_limited_requests(&self) -> Vec<core::RecordedRequest> {
        self.core
            .requests()
            .into_iter()
            .filter(|r| r.status == Some(429) && r.fault.is_none())
            .collect()
    }

    /// Every action answered 202, oldest first.
    pub fn accepted_actions(&self) -> Vec<AcceptedAction> {
        lock(&self.accepted).clone()
    }

    /// All users, in listing order.
    pub fn users(&self) -> Vec<BcdmUser> {
        read(&self.users).clone()
    }

    pub fn user(&self, user_id: &str) -> Option<BcdmUser> {
        read(&self.users)
            .iter()
            .find(|u| u.user_id == user_id)
            .cloned()
    }

    /// Appends a user; its `user_id` must be new.
    pub fn add_user(&self, user: BcdmUser) -> Result<(), ControlError> {
        if user.user_id.trim().is_empty() {
            return Err(ControlError::Invalid("a user needs a `user_id`".into()));
        }
        let mut users = write(&self.users);
        if users.iter().any(|u| u.user_id == user.user_id) {
            return Err(ControlError::Conflict(format!(
                "user {} exists",
                user.user_id
            )));
        }
        users.push(user);
        Ok(())
    }

    /// Sets the given fields of a user; returns the updated user.
    pub fn update_user(
        &self,
        user_id: &str,
        fields: Map<String, Value>,
    ) -> Result<BcdmUser, ControlError> {
        let mut users = write(&self.users);
        let i = users
            .iter()
            .position(|u| u.user_id == user_id)
            .ok_or(ControlError::NotFound)?;
        let updated: BcdmUser = patch(&users[i], fields)?;
        if updated.user_id != user_id && users.iter().any(|u| u.user_id == updated.user_id) {
            return Err(ControlError::Conflict(format!(
                "user {} exists",
                updated.user_id
            )));
        }
        users[i] = updated.clone();
        Ok(updated)
    }

    /// Removes a user and clears `user_id` on its devices.
    pub fn remove_user(&self, user_id: &str) -> Option<BcdmUser> {
        let removed = {
            let mut users = write(&self.users);
            let i = users.iter().position(|u| u.user_id == user_id)?;
            users.remove(i)
        };
        for d in write(&self.devices).iter_mut() {
            if d.user_id.as_deref() == Some(user_id) {
                d.user_id = None;
            }
        }
        Some(removed)
    }

    /// All devices, in listing order.
    pub fn devices(&self) -> Vec<BcdmDevice> {
        read(&self.devices).clone()
    }

    pub fn device_count(&self) -> usize {
        read(&self.devices).len()
    }

    pub fn device(&self, device_id: &str) -> Option<BcdmDevice> {
        read(&self.devices)
            .iter()
            .find(|d| d.device_id == device_id)
            .cloned()
    }

    /// The devices a lookup finds (all devices for an empty lookup).
    pub fn find_devices(&self, lookup: &DeviceLookup) -> Vec<BcdmDevice> {
        read(&self.devices)
            .iter()
            .filter(|d| lookup.matches(d))
            .cloned()
            .collect()
    }

    /// Appends a device; its `device_id` must be new.
    pub fn add_device(&self, device: BcdmDevice) -> Result<(), ControlError> {
        if device.device_id.trim().is_empty() {
            return Err(ControlError::Invalid("a device needs a `device_id`".into()));
        }
        let mut devices = write(&self.devices);
        if devices.iter().any(|d| d.device_id == device.device_id) {
            return Err(ControlError::Conflict(format!(
                "device {} exists",
                device.device_id
            )));
        }
        devices.push(device);
        Ok(())
    }

    /// Appends `count` newly generated devices (continuing the seeded
    /// sequence, given to existing users) and returns them. `platform`
    /// forces the platform; `None` keeps the seeded mix.
    pub fn generate_devices(&self, count: usize, platform: Option<&str>) -> Vec<BcdmDevice> {
        let user_ids: Vec<String> = read(&self.users)
            .iter()
            .map(|u| u.user_id.clone())
            .collect();
        let new = lock(&self.seeder).devices(count, &user_ids, platform);
        write(&self.devices).extend(new.iter().cloned());
        new
    }

    /// Removes a device; later devices move up one place in the listing.
    pub fn remove_device(&self, device_id: &str) -> Option<BcdmDevice> {
        let mut devices = write(&self.devices);
        let i = devices.iter().position(|d| d.device_id == device_id)?;
        Some(devices.remove(i))
    }

    /// Sets the given fields of a device (`null` clears an optional field);
    /// returns the updated device.
    pub fn update_device(
        &self,
        device_id: &str,
        fields: Map<String, Value>,
    ) -> Result<BcdmDevice, ControlError> {
        let mut devices = write(&self.devices);
        let i = devices
            .iter()
            .position(|d| d.device_id == device_id)
            .ok_or(ControlError::NotFound)?;
        let updated: BcdmDevice = patch(&devices[i], fields)?;
        if updated.device_id != device_id
            && devices.iter().any(|d| d.device_id == updated.device_id)
        {
            return Err(ControlError::Conflict(format!(
                "device {} exists",
                updated.device_id
            )));
        }
        devices[i] = updated.clone();
        Ok(updated)
    }

    /// Replaces a device entirely, keeping its place in the listing.
    pub fn replace_device(&self, device_id: &str, device: BcdmDevice) -> Result<(), ControlError> {
        let mut fields = Map::new();
        // Serialising a plain struct of strings cannot fail.
        if let Value::Object(all) = serde_json::to_value(device).expect("a device serialises") {
            fields = all;
        }
        self.update_device(device_id, fields).map(|_| ())
    }

    /// The device's `mtd_risk_level` (`None`: never written, or no such device).
    pub fn risk_level(&self, device_id: &str) -> Option<String> {
        self.device(device_id)?.mtd_risk_level
    }

    /// Sets (or clears) a device's `mtd_risk_level` behind the API's back
    /// (not recorded, any text: a test can serve what no level is).
    pub fn set_risk_level(&self, device_id: &str, level: Option<&str>) -> Result<(), ControlError> {
        let mut devices = write(&self.devices);
        let device = devices
            .iter_mut()
            .find(|d| d.device_id == device_id)
            .ok_or(ControlError::NotFound)?;
        device.mtd_risk_level = level.map(str::to_owned);
        Ok(())
    }

    pub(crate) fn banner(&self, base_url: &str, control_url: &str) -> String {
        let o = read(&self.options);
        format!(
            "BCDM simulator: {} devices, {} users\n  url:           {base_url}\n  access_key:    {}\n  secret_key:    {}\n  dm_code:       {}\n  control API:   {control_url}",
            read(&self.devices).len(),
            read(&self.users).len(),
            o.access_key,
            o.secret_key,
            o.dm_code,
        )
    }

    /// Admits one verified request of `access_key` or says how many seconds
    /// to wait: a sliding log of the admitted requests of the last second.
    /// Refused requests do not count, so a client that waits gets through.
    fn admit(&self, access_key: &str) -> Result<(), u64> {
        let per_second = read(&self.options).rate_limit_per_second;
        self.limit.admit(access_key, per_second)
    }
}

/// Applies `fields` to `value` through its JSON form.
fn patch<T: Serialize + serde::de::DeserializeOwned>(
    value: &T,
    fields: Map<String, Value>,
) -> Result<T, ControlError> {
    let mut json = serde_json::to_value(value).expect("simulator records serialise");
    if let Value::Object(object) = &mut json {
        object.extend(fields);
    }
    serde_json::from_value(json).map_err(|e| ControlError::Invalid(format!("invalid fields: {e}")))
}

// ---------------------------------------------------------------- signatures

/// Lowercase hex HMAC-SHA256(secret, `METHOD\nTARGET\nTIMESTAMP\nhex(SHA-256(body))`).
fn signature(secret: &str, method: &str, target: &str, timestamp: &str, body: &[u8]) -> String {
    let to_sign = format!(
        "{method}\n{target}\n{timestamp}\n{}",
        hex::encode(Sha256::digest(body))
    );
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a request was refused before it reached a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rejection {
    UnknownKey,
    BadTimestamp,
    Stale,
    BadSignature,
    WrongDmCode,
}

impl Rejection {
    fn into_response(self) -> Response {
        let (status, error, message) = match self {
            Rejection::UnknownKey => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "The access key is not known.",
            ),
            Rejection::BadTimestamp => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "X-BCDM-Timestamp is missing or not unix seconds.",
            ),
            Rejection::Stale => (
                StatusCode::UNAUTHORIZED,
                "stale_request",
                "The request timestamp is more than 300 seconds from the server's clock.",
            ),
            Rejection::BadSignature => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "The signature does not match the request.",
            ),
            Rejection::WrongDmCode => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "The DM code does not belong to the access key.",
            ),
        };
        bcdm_error(status, error, message)
    }
}

/// The documented checks, in the documented order. `now` is the simulator's
/// clock in unix seconds (skew already applied).
fn verify(
    options: &BcdmOptions,
    now: i64,
    method: &str,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header(ACCESS_KEY_HEADER) != Some(options.access_key.as_str()) {
        return Err(Rejection::UnknownKey);
    }
    let timestamp = header(TIMESTAMP_HEADER).ok_or(Rejection::BadTimestamp)?;
    let seconds: i64 = timestamp.parse().map_err(|_| Rejection::BadTimestamp)?;
    if (now - seconds).abs() > MAX_TIMESTAMP_SKEW_SECONDS {
        return Err(Rejection::Stale);
    }
    let expected = signature(&options.secret_key, method, target, timestamp, body);
    let sent = header(SIGNATURE_HEADER).unwrap_or_default();
    if !constant_time_eq(expected.as_bytes(), sent.as_bytes()) {
        return Err(Rejection::BadSignature);
    }
    if header(DM_CODE_HEADER) != Some(options.dm_code.as_str()) {
        return Err(Rejection::WrongDmCode);
    }
    Ok(())
}

/// Middleware in front of every vendor route (inside the shared recorder):
/// verifies the signature over the raw request target and body, then applies
/// the rate limit. Handlers only ever see verified, admitted requests.
async fn gate(State(state): State<Arc<BcdmState>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    // Nested routers see a stripped URI; the signed target is the one sent.
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map(|o| o.0.clone())
        .unwrap_or_else(|| parts.uri.clone());
    let target = uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| uri.path().to_owned());
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let options = state.options();
    let now = Utc::now().timestamp() + options.clock_skew_seconds;
    if let Err(rejection) = verify(
        &options,
        now,
        parts.method.as_str(),
        &target,
        &parts.headers,
        &bytes,
    ) {
        return rejection.into_response();
    }
    if let Err(retry_after) = state.admit(&options.access_key) {
        let mut response = bcdm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!(
                "More than {} requests in one second for this access key.",
                options.rate_limit_per_second
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return response;
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

// ---------------------------------------------------------------- responses

/// BCDM's error JSON: `{"error","message"}`.
fn bcdm_error(status: StatusCode, error: &str, message: &str) -> Response {
    (status, Json(json!({ "error": error, "message": message }))).into_response()
}

fn fault_response(status: StatusCode, retry_after: Option<u64>) -> Response {
    let error = match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        429 => "rate_limited",
        503 => "service_unavailable",
        s if s >= 500 => "internal_error",
        _ => "error",
    };
    let mut response = bcdm_error(
        status,
        error,
        status.canonical_reason().unwrap_or("Injected fault."),
    );
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn device_not_found(device_id: &str) -> Response {
    bcdm_error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("Device '{device_id}' was not found."),
    )
}

// --------------------------------------------------------------- vendor API

/// Builds the BCDM routes: the vendor API under `/bcdm` and the control API
/// under `/_sim/bcdm`.
pub(crate) fn router(state: Arc<BcdmState>) -> Router {
    let api = Router::new()
        .route("/api/v1/users", get(list_users))
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{device_id}", get(get_device))
        .route("/api/v1/devices/{device_id}/actions", post(device_action))
        .route("/api/v1/devices/{device_id}/risk", put(put_risk))
        .fallback(|| async {
            bcdm_error(StatusCode::NOT_FOUND, "not_found", "No such API resource.")
        })
        .with_state(state.clone())
        // Inner: signature and rate limit; outer: record and apply faults.
        .layer(from_fn_with_state(state.clone(), gate))
        .layer(from_fn_with_state(state.core.clone(), vendor_middleware));
    let control = control_router(state.clone()).merge(core::control_router(state.core.clone()));
    Router::new()
        .nest(SimKind::Bcdm.base_path(), api)
        .nest(&SimKind::Bcdm.control_path(), control)
}

/// Query parameters decoded once; the first of a repeated name wins.
fn query_params(raw: Option<String>) -> HashMap<String, String> {
    let mut params = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        params
            .entry(k.into_owned())
            .or_insert_with(|| v.into_owned());
    }
    params
}

/// `offset` (default 0) and `limit` (default 100, 1 to 200).
fn paging(params: &HashMap<String, String>) -> Result<(usize, usize), Box<Response>> {
    let invalid = |message: String| {
        Box::new(bcdm_error(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            &message,
        ))
    };
    let offset = match params.get("offset") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| invalid(format!("offset '{v}' is not a non-negative integer.")))?,
    };
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(invalid(format!(
                    "limit '{v}' must be an integer from 1 to {MAX_LIMIT}."
                )))
            }
        },
    };
    Ok((offset, limit))
}

async fn list_users(State(state): State<Arc<BcdmState>>, RawQuery(raw): RawQuery) -> Response {
    let (offset, limit) = match paging(&query_params(raw)) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let users = read(&state.users);
    let page: Vec<&BcdmUser> = users.iter().skip(offset).take(limit).collect();
    Json(json!({ "total": users.len(), "users": page })).into_response()
}

async fn list_devices(State(state): State<Arc<BcdmState>>, RawQuery(raw): RawQuery) -> Response {
    let params = query_params(raw);
    let (offset, limit) = match paging(&params) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let lookup = DeviceLookup {
        udid: params.get("udid").cloned(),
        serial_number: params.get("serial_number").cloned(),
        imei: params.get("imei").cloned(),
        wifi_mac: params.get("wifi_mac").cloned(),
    };
    let devices = read(&state.devices);
    let (total, page): (usize, Vec<&BcdmDevice>) = if lookup.is_empty() {
        (
            devices.len(),
            devices.iter().skip(offset).take(limit).collect(),
        )
    } else {
        let matching: Vec<&BcdmDevice> = devices.iter().filter(|d| lookup.matches(d)).collect();
        (
            matching.len(),
            matching.into_iter().skip(offset).take(limit).collect(),
        )
    };
    Json(json!({ "total": total, "devices": page })).into_response()
}

async fn get_device(
    State(state): State<Arc<BcdmState>>,
    Path(device_id): Path<String>,
) -> Response {
    match state.device(&device_id) {
        Some(device) => Json(device).into_response(),
        None => device_not_found(&device_id),
    }
}

async fn device_action(
    State(state): State<Arc<BcdmState>>,
    Path(device_id): Path<String>,
    body: Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let name = parsed
        .as_ref()
        .and_then(|b| b.get("action"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let known = state.device(&device_id).is_some();
    let response = if !known {
        device_not_found(&device_id)
    } else {
        match BcdmAction::parse(&name) {
            None => bcdm_error(
                StatusCode::BAD_REQUEST,
                "invalid_action",
                &format!(
                    "'action' must be one of lock, disconnect_wifi, enterprise_wipe, remote_wipe (got {name:?})."
                ),
            ),
            Some(action) if !state.permits().allows(action) => bcdm_error(
                StatusCode::FORBIDDEN,
                "action_not_permitted",
                &format!(
                    "The console does not permit '{}' for this DM code: enable \"{}\" in the BCDM console's settings.",
                    action.as_str(),
                    action.console_setting()
                ),
            ),
            Some(action) => {
                let request_id = new_request_id();
                lock(&state.accepted).push(AcceptedAction {
                    request_id: request_id.clone(),
                    device_id: device_id.clone(),
                    action,
                    at: Utc::now(),
                });
                (
                    StatusCode::ACCEPTED,
                    Json(json!({ "request_id": request_id })),
                )
                    .into_response()
            }
        }
    };
    state.core.record_action(RecordedAction {
        seq: 0,
        at: Utc::now(),
        kind: SimKind::Bcdm,
        device_ref: device_id.clone(),
        device_id: known.then_some(device_id),
        action: name,
        profile_id: None,
        body: parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned())),
        status: response.status().as_u16(),
    });
    response
}

/// The levels `PUT …/risk` takes, exactly as spelled.
pub const RISK_LEVELS: [&str; 5] = ["secured", "low", "medium", "high", "critical"];

/// `PUT /api/v1/devices/{device_id}/risk` `{"level":"high"}` → 204.
async fn put_risk(
    State(state): State<Arc<BcdmState>>,
    Path(device_id): Path<String>,
    body: Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let level = parsed
        .as_ref()
        .and_then(|b| b.get("level"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let known = state.device(&device_id).is_some();
    let response = match &level {
        _ if !known => device_not_found(&device_id),
        Some(level) if RISK_LEVELS.contains(&level.as_str()) => {
            // The device is known; it cannot vanish between the two locks
            // in a way that matters (then nothing is stored).
            let _ = state.set_risk_level(&device_id, Some(level));
            StatusCode::NO_CONTENT.into_response()
        }
        _ => bcdm_error(
            StatusCode::BAD_REQUEST,
            "invalid_level",
            &format!(
                "'level' must be one of {} (got {level:?}).",
                RISK_LEVELS.join(", ")
            ),
        ),
    };
    state.core.record_action(RecordedAction {
        seq: 0,
        at: Utc::now(),
        kind: SimKind::Bcdm,
        device_ref: device_id.clone(),
        device_id: known.then_some(device_id),
        action: match &level {
            Some(level) => format!("Risk:{level}"),
            None => "Risk".to_owned(),
        },
        profile_id: None,
        body: parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned())),
        status: response.status().as_u16(),
    });
    response
}

/// A random UUID-shaped id (version 4 layout).
fn new_request_id() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        8 | (b[8] & 0x3),
        &h[17..20],
        &h[20..32]
    )
}

// -------------------------------------------------------------- control API

fn control_router(state: Arc<BcdmState>) -> Router {
    Router::new()
        .route("/devices", get(control_devices).post(control_add_device))
        .route("/devices/generate", post(control_generate))
        .route(
            "/devices/{device_id}",
            get(control_device)
                .put(control_replace_device)
                .patch(control_update_device)
                .delete(control_remove_device),
        )
        .route("/users", get(control_users).post(control_add_user))
        .route(
            "/users/{user_id}",
            get(control_user)
                .patch(control_update_user)
                .delete(control_remove_user),
        )
        .route(
            "/permits",
            get(control_permits)
                .put(control_replace_permits)
                .patch(control_update_permits),
        )
        .route(
            "/rate-limit",
            get(control_rate_limit).put(control_set_rate_limit),
        )
        .route("/clock", get(control_clock).put(control_set_clock))
        .route("/accepted-actions", get(control_accepted))
        .route(
            "/devices/{device_id}/risk",
            get(control_risk).put(control_set_risk),
        )
        .with_state(state)
}

type S = State<Arc<BcdmState>>;

async fn control_devices(State(state): S) -> Json<Vec<BcdmDevice>> {
    Json(state.devices())
}

async fn control_add_device(State(state): S, body: Bytes) -> Result<Response, ControlError> {
    let device: BcdmDevice = json_body(&body)?;
    state.add_device(device.clone())?;
    Ok((StatusCode::CREATED, Json(device)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    count: usize,
    #[serde(default)]
    platform: Option<String>,
}

async fn control_generate(State(state): S, body: Bytes) -> Result<Response, ControlError> {
    let generate: Generate = json_body(&body)?;
    let new = state.generate_devices(generate.count, generate.platform.as_deref());
    Ok((StatusCode::CREATED, Json(new)).into_response())
}

async fn control_device(
    State(state): S,
    Path(id): Path<String>,
) -> Result<Json<BcdmDevice>, ControlError> {
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
) -> Result<Json<BcdmDevice>, ControlError> {
    state.update_device(&id, json_body(&body)?).map(Json)
}

async fn control_remove_device(
    State(state): S,
    Path(id): Path<String>,
) -> Result<Json<BcdmDevice>, ControlError> {
    state
        .remove_device(&id)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_risk(
    State(state): S,
    Path(id): Path<String>,
) -> Result<Json<Value>, ControlError> {
    let device = state.device(&id).ok_or(ControlError::NotFound)?;
    Ok(Json(json!({ "level": device.mtd_risk_level })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskLevel {
    level: Option<String>,
}

async fn control_set_risk(
    State(state): S,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let risk: RiskLevel = json_body(&body)?;
    state.set_risk_level(&id, risk.level.as_deref())?;
    Ok(StatusCode::NO_CONTENT)
}

async fn control_users(State(state): S) -> Json<Vec<BcdmUser>> {
    Json(state.users())
}

async fn control_add_user(State(state): S, body: Bytes) -> Result<Response, ControlError> {
    let user: BcdmUser = json_body(&body)?;
    state.add_user(user.clone())?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn control_user(
    State(state): S,
    Path(id): Path<String>,
) -> Result<Json<BcdmUser>, ControlError> {
    state.user(&id).map(Json).ok_or(ControlError::NotFound)
}

async fn control_update_user(
    State(state): S,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<BcdmUser>, ControlError> {
    state.update_user(&id, json_body(&body)?).map(Json)
}

async fn control_remove_user(
    State(state): S,
    Path(id): Path<String>,
) -> Result<Json<BcdmUser>, ControlError> {
    state
        .remove_user(&id)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_permits(State(state): S) -> Json<BcdmPermits> {
    Json(state.permits())
}

async fn control_replace_permits(
    State(state): S,
    body: Bytes,
) -> Result<Json<BcdmPermits>, ControlError> {
    let permits: BcdmPermits = json_body(&body)?;
    state.set_permits(permits);
    Ok(Json(permits))
}

async fn control_update_permits(
    State(state): S,
    body: Bytes,
) -> Result<Json<BcdmPermits>, ControlError> {
    let fields: HashMap<String, bool> = json_body(&body)?;
    let mut permits = state.permits();
    for (name, permitted) in fields {
        let action = BcdmAction::parse(&name).ok_or_else(|| {
            ControlError::Invalid(format!(
                "unknown action `{name}` (expected lock, disconnect_wifi, enterprise_wipe, remote_wipe)"
            ))
        })?;
        permits.set(action, permitted);
    }
    state.set_permits(permits);
    Ok(Json(permits))
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
struct Clock {
    skew_seconds: i64,
}

async fn control_clock(State(state): S) -> Json<Value> {
    Json(json!({ "skew_seconds": state.options().clock_skew_seconds }))
}

async fn control_set_clock(State(state): S, body: Bytes) -> Result<StatusCode, ControlError> {
    let clock: Clock = json_body(&body)?;
    state.set_clock_skew(clock.skew_seconds);
    Ok(StatusCode::NO_CONTENT)
}

async fn control_accepted(State(state): S) -> Json<Vec<AcceptedAction>> {
    Json(state.accepted_actions())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_headers(options: &BcdmOptions, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCESS_KEY_HEADER, options.access_key.parse().unwrap());
        h.insert(DM_CODE_HEADER, options.dm_code.parse().unwrap());
        h.insert(TIMESTAMP_HEADER, ts.to_string().parse().unwrap());
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h
    }

    #[test]
    fn the_signature_is_the_documented_hmac_over_fixed_vectors() {
        // Computed independently with openssl:
        // printf 'GET\n/bcdm/api/v1/devices?offset=0&limit=100\n1700000000\n<sha256 of "">' \
        //   | openssl dgst -sha256 -hmac sim-secret-key
        assert_eq!(
            signature(
                DEFAULT_SECRET_KEY,
                "GET",
                "/bcdm/api/v1/devices?offset=0&limit=100",
                "1700000000",
                b"",
            ),
            "5fe853d331d2b4bda6990fb1390b6c0d95aa4d29170f6a55fd659d7dff16f8cc"
        );
        assert_eq!(
            signature(
                DEFAULT_SECRET_KEY,
                "POST",
                "/bcdm/api/v1/devices/D000000001/actions",
                "1700000000",
                br#"{"action":"lock"}"#,
            ),
            "61fb36de7fd893b6beda24a8f7de510011f01df365ffbcbe71546c94abaa78f4"
        );
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        let o = BcdmOptions::default();
        let now = 1_700_000_000;
        let target = "/bcdm/api/v1/users";
        let good = signature(&o.secret_key, "GET", target, &now.to_string(), b"");
        assert_eq!(
            verify(&o, now, "GET", target, &signed_headers(&o, now, &good), b""),
            Ok(())
        );
        // Everything wrong at once: the access key is reported first.
        let mut all_wrong = signed_headers(&o, now - 301, "00");
        all_wrong.insert(ACCESS_KEY_HEADER, "nope".parse().unwrap());
        all_wrong.insert(DM_CODE_HEADER, "nope".parse().unwrap());
        assert_eq!(
            verify(&o, now, "GET", target, &all_wrong, b""),
            Err(Rejection::UnknownKey)
        );
        all_wrong.insert(ACCESS_KEY_HEADER, o.access_key.parse().unwrap());
        assert_eq!(
            verify(&o, now, "GET", target, &all_wrong, b""),
            Err(Rejection::Stale)
        );
        all_wrong.insert(TIMESTAMP_HEADER, now.to_string().parse().unwrap());
        assert_eq!(
            verify(&o, now, "GET", target, &all_wrong, b""),
            Err(Rejection::BadSignature)
        );
        all_wrong.insert(SIGNATURE_HEADER, good.parse().unwrap());
        assert_eq!(
            verify(&o, now, "GET", target, &all_wrong, b""),
            Err(Rejection::WrongDmCode)
        );
        // 300 s either way is still fresh (the signature covers the timestamp).
        for ts in [now - 300, now + 300] {
            let sig = signature(&o.secret_key, "GET", target, &ts.to_string(), b"");
            assert_eq!(
                verify(&o, now, "GET", target, &signed_headers(&o, ts, &sig), b""),
                Ok(())
            );
        }
        let mut upper = signed_headers(&o, now, &good.to_uppercase());
        assert_eq!(
            verify(&o, now, "GET", target, &upper, b""),
            Err(Rejection::BadSignature)
        );
        upper.remove(TIMESTAMP_HEADER);
        assert_eq!(
            verify(&o, now, "GET", target, &upper, b""),
            Err(Rejection::BadTimestamp)
        );
    }

    #[test]
    fn lookups_match_identifiers_ignoring_case_and_mac_separators() {
        let state = BcdmState::new(4, 60, BcdmOptions::default());
        for d in state.devices() {
            let mac = d.wifi_mac.clone().unwrap();
            let bare = normalize_mac(&mac).unwrap();
            for form in [
                mac.to_lowercase(),
                mac.to_uppercase(),
                bare.clone(),
                bare.to_lowercase(),
            ] {
                let found = state.find_devices(&DeviceLookup {
                    wifi_mac: Some(form),
                    ..DeviceLookup::default()
                });
                assert_eq!(found, vec![d.clone()]);
            }
            if let Some(udid) = &d.udid {
                for form in [udid.to_uppercase(), udid.to_lowercase()] {
                    let found = state.find_devices(&DeviceLookup {
                        udid: Some(form),
                        ..DeviceLookup::default()
                    });
                    assert_eq!(found, vec![d.clone()]);
                }
            }
        }
        assert!(state
            .find_devices(&DeviceLookup {
                imei: Some(String::new()),
                ..DeviceLookup::default()
            })
            .is_empty());
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, new_request_id());
    }

    #[test]
    fn options_never_print_the_secret_key() {
        assert!(!format!("{:?}", BcdmOptions::default()).contains(DEFAULT_SECRET_KEY));
    }
}
