//! The AirWatch (Workspace ONE UEM) simulator: the AirWatch REST API as `MDM-APIS.md`
//! describes it (written from that file, not from the AirWatch adapter).
//!
//! Vendor API under `http://ADDR/airwatch`, at both `/API/…` and `/api/…`:
//!
//! | Request | Answer |
//! |---|---|
//! | any call without `Authorization: Basic` of a known account and the right `aw-tenant-code` | 401 `{"errorCode":1005,"message"}` |
//! | any call by the account without the REST API role (`mtd-noapi`) | 403 `{"errorCode":1013,"message"}` |
//! | any call once the rate-limit quota of the window is spent | 429 `{"errorCode":1020,"message"}` with `Retry-After` |
//! | `GET /API/mdm/devices/search?page&pagesize` (0-based, default 0 and 500) | `{"Devices":[…],"Page","PageSize","Total"}`; a page with no devices → 204, no body |
//! | `GET /API/mdm/devices?searchby=Udid\|Serialnumber\|Macaddress\|ImeiNumber&id=…` | the device, unwrapped; 404 when none |
//! | `GET /API/mdm/devices/{id}` | the device; 404 when none |
//! | `POST /API/mdm/devices/{id}/commands?command=…` (also `/API/mdm/devices/commands?command&searchby&id`) | 202, no body; unknown command → 400; unknown device → 404 |
//! | `POST /API/mdm/profiles/{profileId}/install` and `/remove`, body `{"SerialNumber":"…"}` (or `DeviceId`, `Udid`, `MacAddress`) | 200, no body; unknown device → 404; no identifier → 400 |
//! | `GET /API/system/users/search?page&pagesize` | `{"Users":[…],"Page","PageSize","Total"}`; empty page → 204 |
//! | `GET /API/system/groups/search?page&pagesize` (default: all) | `{"OrganizationGroups":[…],"TotalResults"}`; empty page → 204 |
//! | `GET /API/mdm/tags/search?name=…`, `POST /API/mdm/tags/{tagId}/adddevices` and `…/removedevices`, `GET /API/mdm/tags/{tagId}/devices` | the device tags: see [`tags`] |
//!
//! Query parameter names, `searchby` and `command` values, and looked-up
//! values are matched case-insensitively (ASP.NET binds them that way); a MAC
//! may come with or without separators. Every other error is
//! `{"errorCode":n,"message":"…","activityId":"…"}` (the codes are **\[ours\]**;
//! AirWatch documents the shape, not the numbers). An injected 502 or 504
//! fault answers an HTML page, as the load balancer in front of a real
//! server does; every other injected status answers the error JSON.
//!
//! Rate limit: a fixed quota per window of whole seconds, aligned to the
//! epoch (default 5000 per 60 s). Every authenticated answer carries
//! `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset`
//! (epoch seconds when the window ends). Refused credentials neither use
//! quota nor carry the headers (the quota belongs to a tenant, and a refused
//! request has none).
//!
//! Control API under `http://ADDR/_sim/airwatch` (JSON), besides the shared
//! `/requests`, `/actions`, `/records`, `/faults` (see [`crate::core`]):
//! `GET|PUT /rate-limit` (`{"limit","window_seconds"}`; a PUT starts a fresh
//! window); `PUT /credentials` (`{"username","password","api_key"}`, each
//! optional); `GET|POST /devices` (list / add one device object, `Id`
//! assigned when absent); `POST /devices/generate` `{"count":N}`;
//! `GET|PUT|PATCH|DELETE /devices/{id}` (PATCH sets the given top-level
//! fields); `GET|POST /users`; `GET|PATCH|DELETE /users/{id or UserName}`
//! (DELETE also clears the user from its devices); `GET /groups`;
//! `GET|POST /tags` (POST `{"name"}` creates one → 201 the tag);
//! `GET|PATCH|DELETE /tags/{name}` (PATCH `{"name":"new"}` renames, id and
//! devices stay); `PUT|DELETE /tags/{name}/devices/{id}` (tag or untag a
//! device behind the API's back, not recorded); `GET /devices/{id}/tags`
//! (the names of its tags). In-process: [`AirwatchState::tags`],
//! [`AirwatchState::device_tags`], [`AirwatchState::risk_levels`],
//! [`AirwatchState::tag_device`], [`AirwatchState::untag_device`],
//! [`AirwatchState::add_tag`], [`AirwatchState::rename_tag`],
//! [`AirwatchState::remove_tag`].
//!
//! Default credentials ([`AirwatchOptions::default`]): user `mtd-api`, password
//! `sim-password`, API key (`aw-tenant-code`) `sim-api-key`; the account
//! `mtd-noapi` / `sim-password` exists without the API role.

pub(crate) mod seed;
pub mod tags;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, Request, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode},
    middleware::{from_fn_with_state, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use crate::core::ControlError;

use self::seed::{Seeder, ORG_GROUPS};
use super::{
    core::{self, json_body, vendor_middleware, RecordedAction, SimCore},
    util::{base64_decode, lock, normalize_mac, read, strip_prefix_ci, write},
    SimKind,
};

pub const DEFAULT_USERNAME: &str = "mtd-api";
pub const DEFAULT_PASSWORD: &str = "sim-password";
pub const DEFAULT_API_KEY: &str = "sim-api-key";
/// An account that logs in but lacks the REST API role: every call → 403.
pub const DEFAULT_NO_API_ROLE_USERNAME: &str = "mtd-noapi";
pub const DEFAULT_RATE_LIMIT: u32 = 5000;
pub const DEFAULT_RATE_LIMIT_WINDOW_SECONDS: u64 = 60;
/// AirWatch's default page size, used when `pagesize` is absent.
pub const DEFAULT_PAGE_SIZE: usize = 500;

/// The error codes of the simulated server (**\[ours\]**).
pub mod error_code {
    pub const UNAUTHORIZED: u32 = 1005;
    pub const FORBIDDEN: u32 = 1013;
    pub const NOT_FOUND: u32 = 1001;
    pub const INVALID_REQUEST: u32 = 1000;
    pub const RATE_LIMITED: u32 = 1020;
    pub const SERVER_ERROR: u32 = 1500;
}

/// Credentials the simulated server accepts, and its rate limit.
#[derive(Clone, PartialEq, Eq)]
pub struct AirwatchOptions {
    pub username: String,
    pub password: String,
    /// The tenant's REST API key, expected in `aw-tenant-code`.
    pub api_key: String,
    /// An account with the right password and key but no API role (403).
    pub no_api_role_username: String,
    pub no_api_role_password: String,
    /// Requests allowed per window.
    pub rate_limit: u32,
    pub rate_limit_window_seconds: u64,
}

impl Default for AirwatchOptions {
    fn default() -> Self {
        Self {
            username: DEFAULT_USERNAME.into(),
            password: DEFAULT_PASSWORD.into(),
            api_key: DEFAULT_API_KEY.into(),
            no_api_role_username: DEFAULT_NO_API_ROLE_USERNAME.into(),
            no_api_role_password: DEFAULT_PASSWORD.into(),
            rate_limit: DEFAULT_RATE_LIMIT,
            rate_limit_window_seconds: DEFAULT_RATE_LIMIT_WINDOW_SECONDS,
        }
    }
}

impl fmt::Debug for AirwatchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AirwatchOptions")
            .field("username", &self.username)
            .field("password", &"**REDACTED**")
            .field("api_key", &"**REDACTED**")
            .field("no_api_role_username", &self.no_api_role_username)
            .field("no_api_role_password", &"**REDACTED**")
            .field("rate_limit", &self.rate_limit)
            .field("rate_limit_window_seconds", &self.rate_limit_window_seconds)
            .finish()
    }
}

/// The rate limit as the control API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitStatus {
    pub limit: u32,
    pub window_seconds: u64,
    /// Requests left in the current window.
    pub remaining: u32,
    /// Epoch seconds when the current window ends.
    pub reset: u64,
}

/// The identifiers `searchby` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchBy {
    Udid,
    SerialNumber,
    MacAddress,
    ImeiNumber,
}

impl SearchBy {
    /// Parses a `searchby` value, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "udid" => Some(Self::Udid),
            "serialnumber" => Some(Self::SerialNumber),
            "macaddress" => Some(Self::MacAddress),
            "imeinumber" => Some(Self::ImeiNumber),
            _ => None,
        }
    }

    fn matches(self, device: &Value, wanted: &str) -> bool {
        let field = |name: &str| device.get(name).and_then(Value::as_str).unwrap_or_default();
        let wanted = wanted.trim();
        if wanted.is_empty() {
            return false;
        }
        match self {
            Self::Udid => field("Udid").eq_ignore_ascii_case(wanted),
            Self::SerialNumber => field("SerialNumber").eq_ignore_ascii_case(wanted),
            Self::MacAddress => normalize_mac(wanted)
                .is_some_and(|w| normalize_mac(field("MacAddress")).as_deref() == Some(&w)),
            Self::ImeiNumber => field("Imei") == wanted,
        }
    }
}

/// A fixed window of the rate limit.
#[derive(Debug)]
struct RateWindow {
    limit: u32,
    window_seconds: u64,
    /// Epoch second the current window started.
    start: u64,
    used: u32,
}

/// The outcome of taking one request from the quota.
struct Quota {
    limit: u32,
    remaining: u32,
    reset: u64,
    /// Seconds until the window ends, when the quota was already spent.
    refused_for: Option<u64>,
}

impl RateWindow {
    fn roll(&mut self, now: u64) {
        let start = now - now % self.window_seconds.max(1);
        if start != self.start {
            self.start = start;
            self.used = 0;
        }
    }

    fn reset(&self) -> u64 {
        self.start + self.window_seconds.max(1)
    }

    fn take(&mut self, now: u64) -> Quota {
        self.roll(now);
        let refused_for = if self.used >= self.limit {
            Some(self.reset().saturating_sub(now).max(1))
        } else {
            self.used += 1;
            None
        };
        Quota {
            limit: self.limit,
            remaining: self.limit.saturating_sub(self.used),
            reset: self.reset(),
            refused_for,
        }
    }
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The AirWatch simulator's state: devices, users, options, quota, recorder and
/// faults.
pub struct AirwatchState {
    core: Arc<SimCore>,
    options: RwLock<AirwatchOptions>,
    /// Insertion order is the listing order (paging slices it).
    devices: RwLock<Vec<Value>>,
    users: RwLock<Vec<Value>>,
    rate: Mutex<RateWindow>,
    /// Continues the seeded sequence for generated devices and assigned ids.
    seeder: Mutex<Seeder>,
    /// The device tags and their members (the risk signal's level tags).
    tags: RwLock<tags::Tags>,
}

impl fmt::Debug for AirwatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AirwatchState")
            .field("core", &self.core)
            .field("options", &*read(&self.options))
            .field("devices", &read(&self.devices).len())
            .field("users", &read(&self.users).len())
            .field("rate", &*lock(&self.rate))
            .finish()
    }
}

/// `Id` as AirWatch writes it (`{"Value":n}`), or a bare number.
fn id_of(record: &Value) -> Option<u64> {
    let id = record.get("Id")?;
    id.get("Value").unwrap_or(id).as_u64()
}

fn str_field<'a>(record: &'a Value, name: &str) -> &'a str {
    record.get(name).and_then(Value::as_str).unwrap_or_default()
}

impl AirwatchState {
    /// Seeds `devices` devices (and three users for every four devices) from
    /// `seed`.
    pub fn new(seed: u64, devices: usize, options: AirwatchOptions) -> Self {
        let mut seeder = Seeder::new(seed);
        let users = seeder.users((devices * 3 / 4).max(1));
        let seeded = seeder.devices(devices, &users);
        let rate = RateWindow {
            limit: options.rate_limit,
            window_seconds: options.rate_limit_window_seconds,
            start: 0,
            used: 0,
        };
        Self {
            // AirWatch has no token endpoint: faults apply to every path.
            core: Arc::new(SimCore::new(
                SimKind::Airwatch,
                |_| false,
                ("page", "0"),
                fault_response,
            )),
            options: RwLock::new(options),
            devices: RwLock::new(seeded),
            users: RwLock::new(users),
            rate: Mutex::new(rate),
            seeder: Mutex::new(seeder),
            tags: RwLock::new(tags::Tags::seeded()),
        }
    }

    /// Recorder and fault plan.
    pub fn core(&self) -> &SimCore {
        &self.core
    }

    pub fn options(&self) -> AirwatchOptions {
        read(&self.options).clone()
    }

    /// Replaces credentials and the rate limit (a fresh window starts).
    pub fn set_options(&self, options: AirwatchOptions) {
        self.set_rate_limit(options.rate_limit, options.rate_limit_window_seconds);
        *write(&self.options) = options;
    }

    /// Sets the quota per window and starts a fresh window.
    pub fn set_rate_limit(&self, limit: u32, window_seconds: u64) {
        // One lock at a time: `Debug` takes `options` before `rate`.
        {
            let mut rate = lock(&self.rate);
            rate.limit = limit;
            rate.window_seconds = window_seconds.max(1);
            rate.start = 0;
            rate.used = 0;
        }
        let mut options = write(&self.options);
        options.rate_limit = limit;
        options.rate_limit_window_seconds = window_seconds.max(1);
    }

    pub fn rate_limit(&self) -> RateLimitStatus {
        let mut rate = lock(&self.rate);
        rate.roll(epoch_seconds());
        RateLimitStatus {
            limit: rate.limit,
            window_seconds: rate.window_seconds,
            remaining: rate.limit.saturating_sub(rate.used),
            reset: rate.reset(),
        }
    }

    fn take_quota(&self) -> Quota {
        lock(&self.rate).take(epoch_seconds())
    }

    /// All devices, in listing order.
    pub fn devices(&self) -> Vec<Value> {
        read(&self.devices).clone()
    }

    /// Every device's `Id.Value`, in listing order.
    pub fn device_ids(&self) -> Vec<u64> {
        read(&self.devices).iter().filter_map(id_of).collect()
    }

    pub fn device_count(&self) -> usize {
        read(&self.devices).len()
    }

    /// The device with `Id.Value` `id`.
    pub fn device(&self, id: u64) -> Option<Value> {
        read(&self.devices)
            .iter()
            .find(|d| id_of(d) == Some(id))
            .cloned()
    }

    /// The device a `searchby` lookup finds (values case-insensitive, MACs in
    /// any format).
    pub fn find_device(&self, by: SearchBy, value: &str) -> Option<Value> {
        read(&self.devices)
            .iter()
            .find(|d| by.matches(d, value))
            .cloned()
    }

    /// Appends a device object; an absent `Id` is assigned, a present one
    /// must be unique. Returns the stored device.
    pub fn add_device(&self, mut device: Value) -> Result<Value, ControlError> {
        let Some(object) = device.as_object_mut() else {
            return Err(ControlError::Invalid("a device is a JSON object".into()));
        };
        let mut devices = write(&self.devices);
        let mut seeder = lock(&self.seeder);
        let id = match object.get("Id") {
            None | Some(Value::Null) => {
                let id = seeder.take_device_id();
                object.insert("Id".into(), json!({ "Value": id }));
                id
            }
            Some(_) => id_of(&device).ok_or_else(|| {
                ControlError::Invalid("`Id` must be {\"Value\": n} or a number".into())
            })?,
        };
        if devices.iter().any(|d| id_of(d) == Some(id)) {
            return Err(ControlError::Conflict(format!("device {id} exists")));
        }
        seeder.reserve_device_id(id);
        devices.push(device.clone());
        Ok(device)
    }

    /// Appends `count` newly generated devices (continuing the seeded
    /// sequence, users drawn from the current users) and returns them.
    pub fn generate_devices(&self, count: usize) -> Vec<Value> {
        let users = read(&self.users).clone();
        let new = lock(&self.seeder).devices(count, &users);
        write(&self.devices).extend(new.iter().cloned());
        new
    }

    /// Removes a device (and takes it out of every tag); later devices move
    /// up one place in the listing.
    pub fn remove_device(&self, id: u64) -> Option<Value> {
        let removed = {
            let mut devices = write(&self.devices);
            let i = devices.iter().position(|d| id_of(d) == Some(id))?;
            devices.remove(i)
        };
        write(&self.tags).forget_device(id);
        Some(removed)
    }

    /// Sets the given top-level fields of a device; returns the updated one.
    pub fn update_device(&self, id: u64, fields: Map<String, Value>) -> Option<Value> {
        let mut devices = write(&self.devices);
        let device = devices.iter_mut().find(|d| id_of(d) == Some(id))?;
        let object = device.as_object_mut()?;
        for (k, v) in fields {
            object.insert(k, v);
        }
        Some(device.clone())
    }

    /// Replaces a device object entirely (keeping its place and its `Id`
    /// when the new object has none).
    pub fn replace_device(&self, id: u64, mut device: Value) -> Result<(), ControlError> {
        let Some(object) = device.as_object_mut() else {
            return Err(ControlError::Invalid("a device is a JSON object".into()));
        };
        object.entry("Id").or_insert_with(|| json!({ "Value": id }));
        let mut devices = write(&self.devices);
        let slot = devices
            .iter_mut()
            .find(|d| id_of(d) == Some(id))
            .ok_or(ControlError::NotFound)?;
        *slot = device;
        Ok(())
    }

    /// All users, in listing order.
    pub fn users(&self) -> Vec<Value> {
        read(&self.users).clone()
    }

    /// A user by `Id.Value` or `UserName` (case-insensitive).
    pub fn user(&self, reference: &str) -> Option<Value> {
        let users = read(&self.users);
        find_user(&users, reference).map(|i| users[i].clone())
    }

    /// Appends a user; it needs a unique `UserName`; an absent `Id` is
    /// assigned.
    pub fn add_user(&self, mut user: Value) -> Result<Value, ControlError> {
        let name = str_field(&user, "UserName").to_owned();
        if name.is_empty() {
            return Err(ControlError::Invalid("a user needs a `UserName`".into()));
        }
        let Some(object) = user.as_object_mut() else {
            return Err(ControlError::Invalid("a user is a JSON object".into()));
        };
        let mut users = write(&self.users);
        if find_user(&users, &name).is_some() {
            return Err(ControlError::Conflict(format!("user {name} exists")));
        }
        let mut seeder = lock(&self.seeder);
        let id = match object.get("Id") {
            None | Some(Value::Null) => {
                let id = seeder.take_user_id();
                object.insert("Id".into(), json!({ "Value": id }));
                id
            }
            Some(_) => id_of(&user).ok_or_else(|| {
                ControlError::Invalid("`Id` must be {\"Value\": n} or a number".into())
            })?,
        };
        if users.iter().any(|u| id_of(u) == Some(id)) {
            return Err(ControlError::Conflict(format!("user {id} exists")));
        }
        seeder.reserve_user_id(id);
        users.push(user.clone());
        Ok(user)
    }

    /// Sets the given fields of a user. A changed `UserName` or `Email` is
    /// also written to the user's devices. Returns the updated user.
    pub fn update_user(&self, reference: &str, fields: Map<String, Value>) -> Option<Value> {
        let mut users = write(&self.users);
        let i = find_user(&users, reference)?;
        let old_name = str_field(&users[i], "UserName").to_owned();
        let object = users[i].as_object_mut()?;
        for (k, v) in fields {
            object.insert(k, v);
        }
        let user = users[i].clone();
        drop(users);
        let mut devices = write(&self.devices);
        for d in devices.iter_mut() {
            if !str_field(d, "UserName").eq_ignore_ascii_case(&old_name) || old_name.is_empty() {
                continue;
            }
            if let Some(object) = d.as_object_mut() {
                object.insert(
                    "UserName".into(),
                    user.get("UserName").cloned().unwrap_or_default(),
                );
                object.insert(
                    "UserEmailAddress".into(),
                    user.get("Email").cloned().unwrap_or(json!("")),
                );
            }
        }
        Some(user)
    }

    /// Removes a user and clears it from its devices (empty `UserName` and
    /// `UserEmailAddress`, no `UserId`); returns how many devices changed.
    pub fn remove_user(&self, reference: &str) -> Option<usize> {
        let mut users = write(&self.users);
        let i = find_user(&users, reference)?;
        let user = users.remove(i);
        drop(users);
        let name = str_field(&user, "UserName");
        let mut changed = 0;
        for d in write(&self.devices).iter_mut() {
            if name.is_empty() || !str_field(d, "UserName").eq_ignore_ascii_case(name) {
                continue;
            }
            if let Some(object) = d.as_object_mut() {
                object.insert("UserName".into(), json!(""));
                object.insert("UserEmailAddress".into(), json!(""));
                object.remove("UserId");
                changed += 1;
            }
        }
        Some(changed)
    }

    /// The organisation groups: the seeded tree plus any `LocationGroupName`
    /// a device carries that the tree lacks, with their device and user
    /// counts.
    pub fn groups(&self) -> Vec<Value> {
        let devices = read(&self.devices);
        let users = read(&self.users);
        let mut device_counts: HashMap<String, usize> = HashMap::new();
        for d in devices.iter() {
            *device_counts
                .entry(str_field(d, "LocationGroupName").to_lowercase())
                .or_default() += 1;
        }
        let mut user_counts: HashMap<String, usize> = HashMap::new();
        for u in users.iter() {
            *user_counts
                .entry(str_field(u, "Group").to_lowercase())
                .or_default() += 1;
        }
        let count = |m: &HashMap<String, usize>, name: &str| {
            m.get(&name.to_lowercase())
                .copied()
                .unwrap_or(0)
                .to_string()
        };
        let mut groups: Vec<Value> = ORG_GROUPS
            .iter()
            .map(|g| {
                let parent = g.parent.and_then(|p| ORG_GROUPS.iter().find(|x| x.id == p));
                json!({
                    "Id": { "Value": g.id },
                    "Name": g.name,
                    "GroupId": g.group_id,
                    "LocationGroupType": g.kind,
                    "Country": "Germany",
                    "Locale": "en-US",
                    "ParentLocationGroup": parent.map(|p| json!({
                        "Id": { "Value": p.id }, "Name": p.name, "Uuid": seed::group_uuid(p.id)
                    })),
                    "CreatedOn": seed::groups_created_on(),
                    "LgLevel": lg_level(g.id),
                    "Users": count(&user_counts, g.name),
                    "Admins": if g.kind == "Customer" { "2" } else { "0" },
                    "Devices": count(&device_counts, g.name),
                    "Uuid": seed::group_uuid(g.id),
                })
            })
            .collect();
        let mut extra: Vec<String> = Vec::new();
        for d in devices.iter() {
            let name = str_field(d, "LocationGroupName");
            if !name.is_empty()
                && seed::org_group(name).is_none()
                && !extra.iter().any(|e| e.eq_ignore_ascii_case(name))
            {
                extra.push(name.to_owned());
            }
        }
        for (i, name) in extra.into_iter().enumerate() {
            let id = 900 + i as u64;
            groups.push(json!({
                "Id": { "Value": id },
                "Name": name,
                "GroupId": name.to_lowercase().replace(' ', "-"),
                "LocationGroupType": "Container",
                "Country": "Germany",
                "Locale": "en-US",
                "ParentLocationGroup": { "Id": { "Value": 570 }, "Name": "Acme Corp", "Uuid": seed::group_uuid(570) },
                "CreatedOn": seed::groups_created_on(),
                "LgLevel": 2,
                "Users": count(&user_counts, &name),
                "Admins": "0",
                "Devices": count(&device_counts, &name),
                "Uuid": seed::group_uuid(id),
            }));
        }
        groups
    }

    pub(crate) fn banner(&self, base_url: &str, control_url: &str) -> String {
        let o = read(&self.options);
        format!(
            "AirWatch simulator: {} devices, {} users\n  url:           {base_url}\n  username:      {}\n  password:      {}\n  api_key:       {}\n  no API role:   {} / {}\n  rate limit:    {} per {} s\n  control API:   {control_url}",
            read(&self.devices).len(),
            read(&self.users).len(),
            o.username,
            o.password,
            o.api_key,
            o.no_api_role_username,
            o.no_api_role_password,
            o.rate_limit,
            o.rate_limit_window_seconds,
        )
    }
}

fn lg_level(id: u64) -> u32 {
    let mut level = 0;
    let mut current = ORG_GROUPS.iter().find(|g| g.id == id);
    while let Some(g) = current.and_then(|g| g.parent) {
        level += 1;
        current = ORG_GROUPS.iter().find(|x| x.id == g);
    }
    level
}

fn find_user(users: &[Value], reference: &str) -> Option<usize> {
    let reference = reference.trim();
    if let Ok(id) = reference.parse::<u64>() {
        if let Some(i) = users.iter().position(|u| id_of(u) == Some(id)) {
            return Some(i);
        }
    }
    users
        .iter()
        .position(|u| str_field(u, "UserName").eq_ignore_ascii_case(reference))
}

// ---------------------------------------------------------------- responses

/// AirWatch's error JSON. `activityId` is a fresh id per answer, as the real
/// server sends for support cases.
fn aw_error(status: StatusCode, code: u32, message: &str) -> Response {
    let activity: u64 = rand::random();
    (
        status,
        Json(json!({
            "errorCode": code,
            "message": message,
            "activityId": format!("{activity:016x}"),
        })),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    aw_error(
        StatusCode::BAD_REQUEST,
        error_code::INVALID_REQUEST,
        message,
    )
}

fn device_not_found() -> Response {
    aw_error(
        StatusCode::NOT_FOUND,
        error_code::NOT_FOUND,
        "Device not found for the given search criteria.",
    )
}

/// The HTML page a load balancer in front of the API answers.
fn html_page(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        ),
    )
        .into_response()
}

fn fault_response(status: StatusCode, retry_after: Option<u64>) -> Response {
    let mut response = match status.as_u16() {
        502 | 504 => html_page(status),
        401 => aw_error(
            status,
            error_code::UNAUTHORIZED,
            "User credentials are invalid.",
        ),
        403 => aw_error(
            status,
            error_code::FORBIDDEN,
            "User is not authorized to perform this operation.",
        ),
        404 => aw_error(
            status,
            error_code::NOT_FOUND,
            "The requested resource was not found.",
        ),
        429 => aw_error(
            status,
            error_code::RATE_LIMITED,
            "Rate limit exceeded. Try again later.",
        ),
        s if s >= 500 => aw_error(
            status,
            error_code::SERVER_ERROR,
            "An internal error occurred.",
        ),
        _ => aw_error(
            status,
            error_code::INVALID_REQUEST,
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

fn unauthorized(message: &str) -> Response {
    let mut response = aw_error(StatusCode::UNAUTHORIZED, error_code::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"AirWatch\""),
    );
    response
}

// --------------------------------------------------------------- vendor API

/// Builds the AirWatch routes: the vendor API under `/airwatch/API` and `/airwatch/api`,
/// and the control API under `/_sim/airwatch`.
pub(crate) fn router(state: Arc<AirwatchState>) -> Router {
    let api = Router::new()
        .route("/mdm/devices/search", get(search_devices))
        .route("/mdm/devices", get(lookup_device))
        .route("/mdm/devices/commands", post(command_by_search))
        .route("/mdm/devices/{id}", get(get_device))
        .route("/mdm/devices/{id}/commands", post(device_command))
        .route("/mdm/profiles/{profile_id}/install", post(profile_install))
        .route("/mdm/profiles/{profile_id}/remove", post(profile_remove))
        .route("/system/users/search", get(search_users))
        .route("/system/groups/search", get(search_groups))
        .route("/mdm/tags/search", get(tags::search_tags))
        .route("/mdm/tags/{tag_id}/adddevices", post(tags::add_devices))
        .route(
            "/mdm/tags/{tag_id}/removedevices",
            post(tags::remove_devices),
        )
        .route("/mdm/tags/{tag_id}/devices", get(tags::tag_devices))
        .fallback(|| async {
            aw_error(
                StatusCode::NOT_FOUND,
                error_code::NOT_FOUND,
                "No HTTP resource was found that matches the request URI.",
            )
        })
        .layer(from_fn_with_state(state.clone(), gatekeeper))
        .with_state(state.clone())
        .layer(from_fn_with_state(state.core.clone(), vendor_middleware));
    let control = control_router(state.clone()).merge(core::control_router(state.core.clone()));
    let base = SimKind::Airwatch.base_path();
    Router::new()
        .nest(&format!("{base}/API"), api.clone())
        .nest(&format!("{base}/api"), api)
        .nest(&SimKind::Airwatch.control_path(), control)
}

/// Whom the request's credentials name.
enum Caller {
    Api,
    NoApiRole,
}

/// `Err` is the 401 answer (boxed: a `Response` is a large error type).
fn authenticate(options: &AirwatchOptions, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| strip_prefix_ci(v.trim(), "Basic "))
        .and_then(base64_decode)
        .and_then(|raw| String::from_utf8(raw).ok());
    let Some((user, password)) = basic.as_deref().and_then(|b| b.split_once(':')) else {
        return Err(Box::new(unauthorized("User credentials are missing.")));
    };
    // AirWatch user names are case-insensitive; passwords are not.
    let caller = if user.eq_ignore_ascii_case(&options.username) && password == options.password {
        Caller::Api
    } else if user.eq_ignore_ascii_case(&options.no_api_role_username)
        && password == options.no_api_role_password
    {
        Caller::NoApiRole
    } else {
        return Err(Box::new(unauthorized("User credentials are invalid.")));
    };
    let key = headers
        .get("aw-tenant-code")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if key != Some(options.api_key.as_str()) {
        return Err(Box::new(unauthorized(
            "The aw-tenant-code header is missing or invalid.",
        )));
    }
    Ok(caller)
}

fn set_rate_headers(headers: &mut HeaderMap, quota: &Quota) {
    for (name, value) in [
        ("x-ratelimit-limit", u64::from(quota.limit)),
        ("x-ratelimit-remaining", u64::from(quota.remaining)),
        ("x-ratelimit-reset", quota.reset),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

/// Checks the credentials, then takes the request from the quota; every
/// answer to an authenticated request carries the rate-limit headers.
async fn gatekeeper(
    State(state): State<Arc<AirwatchState>>,
    request: Request,
    next: Next,
) -> Response {
    let options = state.options();
    match authenticate(&options, request.headers()) {
        Err(response) => return *response,
        Ok(Caller::NoApiRole) => {
            return aw_error(
                StatusCode::FORBIDDEN,
                error_code::FORBIDDEN,
                "User does not have the REST API role.",
            )
        }
        Ok(Caller::Api) => {}
    }
    let quota = state.take_quota();
    let mut response = match quota.refused_for {
        Some(seconds) => {
            let mut r = aw_error(
                StatusCode::TOO_MANY_REQUESTS,
                error_code::RATE_LIMITED,
                "Rate limit exceeded for this tenant. Try again later.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            r
        }
        None => next.run(request).await,
    };
    set_rate_headers(response.headers_mut(), &quota);
    response
}

/// Query parameters decoded once, names lower-cased: ASP.NET binds them
/// case-insensitively.
fn query_params(raw: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect()
}

/// `page` (0-based, default 0) and `pagesize` (default `default_size`, at
/// least 1); anything else is a 400 (boxed: a `Response` is a large error).
fn paging(
    params: &HashMap<String, String>,
    default_size: usize,
) -> Result<(usize, usize), Box<Response>> {
    let number = |name: &str, min: i64| -> Result<Option<usize>, Box<Response>> {
        match params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= min && n <= i64::from(i32::MAX) => Ok(Some(n as usize)),
                _ => Err(Box::new(bad_request(&format!(
                    "The value '{v}' is not valid for {name}."
                )))),
            },
        }
    };
    Ok((
        number("page", 0)?.unwrap_or(0),
        number("pagesize", 1)?.unwrap_or(default_size),
    ))
}

/// One page of `records` under `key`, or 204 when the page is empty.
fn paged(records: &[Value], key: &str, page: usize, page_size: usize) -> Response {
    let start = page.saturating_mul(page_size);
    let items: Vec<&Value> = records.iter().skip(start).take(page_size).collect();
    if items.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let mut body = Map::new();
    body.insert(key.into(), json!(items));
    body.insert("Page".into(), json!(page));
    body.insert("PageSize".into(), json!(page_size));
    body.insert("Total".into(), json!(records.len()));
    Json(Value::Object(body)).into_response()
}

async fn search_devices(
    State(state): State<Arc<AirwatchState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw);
    let (page, size) = match paging(&params, DEFAULT_PAGE_SIZE) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let devices = read(&state.devices);
    paged(&devices, "Devices", page, size)
}

async fn search_users(
    State(state): State<Arc<AirwatchState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw);
    let (page, size) = match paging(&params, DEFAULT_PAGE_SIZE) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let users = read(&state.users);
    paged(&users, "Users", page, size)
}

async fn search_groups(
    State(state): State<Arc<AirwatchState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw);
    let groups = state.groups();
    let (page, size) = match paging(&params, groups.len().max(1)) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let items: Vec<&Value> = groups
        .iter()
        .skip(page.saturating_mul(size))
        .take(size)
        .collect();
    if items.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    Json(json!({ "OrganizationGroups": items, "TotalResults": groups.len() })).into_response()
}

/// `searchby` and `id` from the query, or the 400 a missing or unknown
/// `searchby` gets.
fn search_criteria(params: &HashMap<String, String>) -> Result<(SearchBy, String), Box<Response>> {
    let by = params
        .get("searchby")
        .map(String::as_str)
        .unwrap_or_default();
    let Some(by) = SearchBy::parse(by) else {
        return Err(Box::new(bad_request(&format!(
            "Invalid searchby '{by}': expected Macaddress, Udid, Serialnumber or ImeiNumber."
        ))));
    };
    match params.get("id").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        Some(id) => Ok((by, id.to_owned())),
        None => Err(Box::new(bad_request("The id parameter is required."))),
    }
}

async fn lookup_device(
    State(state): State<Arc<AirwatchState>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw);
    let (by, id) = match search_criteria(&params) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match state.find_device(by, &id) {
        Some(device) => Json(device).into_response(),
        None => device_not_found(),
    }
}

async fn get_device(State(state): State<Arc<AirwatchState>>, Path(id): Path<String>) -> Response {
    match id
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|id| state.device(id))
    {
        Some(device) => Json(device).into_response(),
        None => device_not_found(),
    }
}

/// The commands the simulated server knows (its `command` values).
pub const COMMANDS: &[&str] = &[
    "Lock",
    "EnterpriseWipe",
    "DeviceWipe",
    "SyncDevice",
    "DeviceQuery",
    "ClearPasscode",
    "SoftReset",
    "Shutdown",
    "EnterpriseReset",
];

fn body_value(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn record(
    state: &AirwatchState,
    device_ref: &str,
    device: Option<&Value>,
    action: &str,
    profile_id: Option<&str>,
    body: &Bytes,
    status: StatusCode,
) {
    state.core.record_action(RecordedAction {
        seq: 0,
        at: Utc::now(),
        kind: SimKind::Airwatch,
        device_ref: device_ref.to_owned(),
        device_id: device.and_then(id_of).map(|id| id.to_string()),
        action: action.to_owned(),
        profile_id: profile_id.map(str::to_owned),
        body: body_value(body),
        status: status.as_u16(),
    });
}

/// Runs `command` on `device` (already resolved from `device_ref`) and
/// records the call.
fn run_command(
    state: &AirwatchState,
    device_ref: &str,
    device: Option<Value>,
    params: &HashMap<String, String>,
    body: &Bytes,
) -> Response {
    let command = params.get("command").cloned().unwrap_or_default();
    let Some(device) = device else {
        record(
            state,
            device_ref,
            None,
            &command,
            None,
            body,
            StatusCode::NOT_FOUND,
        );
        return device_not_found();
    };
    let known = COMMANDS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(command.trim()));
    if !known {
        record(
            state,
            device_ref,
            Some(&device),
            &command,
            None,
            body,
            StatusCode::BAD_REQUEST,
        );
        return bad_request(&format!("Invalid command '{command}'."));
    }
    record(
        state,
        device_ref,
        Some(&device),
        &command,
        None,
        body,
        StatusCode::ACCEPTED,
    );
    StatusCode::ACCEPTED.into_response()
}

async fn device_command(
    State(state): State<Arc<AirwatchState>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = query_params(raw);
    let device = id.trim().parse::<u64>().ok().and_then(|i| state.device(i));
    run_command(&state, &id, device, &params, &body)
}

async fn command_by_search(
    State(state): State<Arc<AirwatchState>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = query_params(raw);
    let (by, id) = match search_criteria(&params) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let device = state.find_device(by, &id);
    run_command(&state, &id, device, &params, &body)
}

async fn profile_install(
    State(state): State<Arc<AirwatchState>>,
    Path(profile_id): Path<String>,
    body: Bytes,
) -> Response {
    profile_call(&state, &profile_id, "Install", &body)
}

async fn profile_remove(
    State(state): State<Arc<AirwatchState>>,
    Path(profile_id): Path<String>,
    body: Bytes,
) -> Response {
    profile_call(&state, &profile_id, "Remove", &body)
}

/// Finds the device a profile body names: `SerialNumber`, `DeviceId`, `Udid`
/// or `MacAddress` (the first present). `Err` when the body names none.
fn profile_target(state: &AirwatchState, body: &Value) -> Result<(String, Option<Value>), ()> {
    let text = |name: &str| {
        body.get(name)
            .and_then(|v| match v {
                Value::String(s) => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
    };
    if let Some(serial) = text("SerialNumber") {
        let device = state.find_device(SearchBy::SerialNumber, &serial);
        return Ok((serial, device));
    }
    if let Some(id) = text("DeviceId") {
        let device = id.parse::<u64>().ok().and_then(|i| state.device(i));
        return Ok((id, device));
    }
    if let Some(udid) = text("Udid") {
        let device = state.find_device(SearchBy::Udid, &udid);
        return Ok((udid, device));
    }
    if let Some(mac) = text("MacAddress") {
        let device = state.find_device(SearchBy::MacAddress, &mac);
        return Ok((mac, device));
    }
    Err(())
}

fn profile_call(state: &AirwatchState, profile_id: &str, action: &str, body: &Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let valid_profile = profile_id.trim().parse::<u64>().is_ok_and(|id| id > 0);
    let target = parsed
        .as_ref()
        .filter(|v| v.is_object())
        .map(|v| profile_target(state, v));
    let (reference, device) = match target {
        Some(Ok(found)) => found,
        _ => {
            record(
                state,
                "",
                None,
                action,
                Some(profile_id),
                body,
                StatusCode::BAD_REQUEST,
            );
            return bad_request(
                "The body must be a JSON object naming the device by SerialNumber, DeviceId, Udid or MacAddress.",
            );
        }
    };
    if !valid_profile {
        record(
            state,
            &reference,
            device.as_ref(),
            action,
            Some(profile_id),
            body,
            StatusCode::BAD_REQUEST,
        );
        return bad_request(&format!("Invalid profile id '{profile_id}'."));
    }
    let Some(device) = device else {
        record(
            state,
            &reference,
            None,
            action,
            Some(profile_id),
            body,
            StatusCode::NOT_FOUND,
        );
        return device_not_found();
    };
    record(
        state,
        &reference,
        Some(&device),
        action,
        Some(profile_id),
        body,
        StatusCode::OK,
    );
    StatusCode::OK.into_response()
}

// -------------------------------------------------------------- control API

fn control_router(state: Arc<AirwatchState>) -> Router {
    Router::new()
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
        .route("/groups", get(control_groups))
        .route("/tags", get(tags::control_tags).post(tags::control_add_tag))
        .route(
            "/tags/{name}",
            get(tags::control_tag)
                .patch(tags::control_rename_tag)
                .delete(tags::control_remove_tag),
        )
        .route(
            "/tags/{name}/devices/{id}",
            put(tags::control_tag_device).delete(tags::control_untag_device),
        )
        .route("/devices/{id}/tags", get(tags::control_device_tags))
        .with_state(state)
}

fn device_id_param(id: &str) -> Result<u64, ControlError> {
    id.trim().parse().map_err(|_| ControlError::NotFound)
}

async fn control_rate_limit(State(state): State<Arc<AirwatchState>>) -> Json<RateLimitStatus> {
    Json(state.rate_limit())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitSettings {
    limit: Option<u32>,
    window_seconds: Option<u64>,
}

async fn control_set_rate_limit(
    State(state): State<Arc<AirwatchState>>,
    body: Bytes,
) -> Result<Json<RateLimitStatus>, ControlError> {
    let settings: RateLimitSettings = json_body(&body)?;
    let current = state.options();
    let window = settings
        .window_seconds
        .unwrap_or(current.rate_limit_window_seconds);
    if window == 0 {
        return Err(ControlError::Invalid(
            "`window_seconds` must be at least 1".into(),
        ));
    }
    state.set_rate_limit(settings.limit.unwrap_or(current.rate_limit), window);
    Ok(Json(state.rate_limit()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: Option<String>,
    password: Option<String>,
    api_key: Option<String>,
}

async fn control_credentials(
    State(state): State<Arc<AirwatchState>>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let c: Credentials = json_body(&body)?;
    let mut options = write(&state.options);
    if let Some(u) = c.username {
        options.username = u;
    }
    if let Some(p) = c.password {
        options.password = p;
    }
    if let Some(k) = c.api_key {
        options.api_key = k;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn control_devices(State(state): State<Arc<AirwatchState>>) -> Json<Vec<Value>> {
    Json(state.devices())
}

async fn control_add_device(
    State(state): State<Arc<AirwatchState>>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let device = state.add_device(json_body(&body)?)?;
    Ok((StatusCode::CREATED, Json(device)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    count: usize,
}

async fn control_generate(
    State(state): State<Arc<AirwatchState>>,
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
    State(state): State<Arc<AirwatchState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ControlError> {
    state
        .device(device_id_param(&id)?)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_replace_device(
    State(state): State<Arc<AirwatchState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    state.replace_device(device_id_param(&id)?, json_body(&body)?)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn control_update_device(
    State(state): State<Arc<AirwatchState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ControlError> {
    let fields: Map<String, Value> = json_body(&body)?;
    state
        .update_device(device_id_param(&id)?, fields)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_remove_device(
    State(state): State<Arc<AirwatchState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ControlError> {
    state
        .remove_device(device_id_param(&id)?)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_users(State(state): State<Arc<AirwatchState>>) -> Json<Vec<Value>> {
    Json(state.users())
}

async fn control_add_user(
    State(state): State<Arc<AirwatchState>>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let user = state.add_user(json_body(&body)?)?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn control_user(
    State(state): State<Arc<AirwatchState>>,
    Path(reference): Path<String>,
) -> Result<Json<Value>, ControlError> {
    state
        .user(&reference)
        .map(Json)
        .ok_or(ControlError::NotFound)
}

async fn control_update_user(
    State(state): State<Arc<AirwatchState>>,
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
    State(state): State<Arc<AirwatchState>>,
    Path(reference): Path<String>,
) -> Result<Json<Value>, ControlError> {
    state
        .remove_user(&reference)
        .map(|n| Json(json!({ "devices": n })))
        .ok_or(ControlError::NotFound)
}

async fn control_groups(State(state): State<Arc<AirwatchState>>) -> Json<Vec<Value>> {
    Json(state.groups())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_found_by_every_searchby_in_any_case_and_mac_format() {
        let state = AirwatchState::new(5, 60, AirwatchOptions::default());
        for d in state.devices() {
            let udid = d["Udid"].as_str().unwrap();
            assert_eq!(
                state
                    .find_device(SearchBy::Udid, &udid.to_lowercase())
                    .unwrap(),
                d
            );
            assert_eq!(
                state
                    .find_device(SearchBy::Udid, &udid.to_uppercase())
                    .unwrap(),
                d
            );
            let serial = d["SerialNumber"].as_str().unwrap();
            assert_eq!(
                state
                    .find_device(SearchBy::SerialNumber, &serial.to_lowercase())
                    .unwrap(),
                d
            );
            let mac = d["MacAddress"].as_str().unwrap();
            let colons: Vec<String> = mac
                .as_bytes()
                .chunks(2)
                .map(|c| String::from_utf8_lossy(c).to_lowercase())
                .collect();
            assert_eq!(state.find_device(SearchBy::MacAddress, mac).unwrap(), d);
            assert_eq!(
                state
                    .find_device(SearchBy::MacAddress, &colons.join(":"))
                    .unwrap(),
                d
            );
            let imei = d["Imei"].as_str().unwrap();
            if !imei.is_empty() {
                assert_eq!(state.find_device(SearchBy::ImeiNumber, imei).unwrap(), d);
            }
        }
        assert!(state.find_device(SearchBy::ImeiNumber, "").is_none());
        assert!(state
            .find_device(SearchBy::MacAddress, "not-a-mac")
            .is_none());
        assert_eq!(
            SearchBy::parse("SERIALNUMBER"),
            Some(SearchBy::SerialNumber)
        );
        assert_eq!(SearchBy::parse("Imei"), None);
    }

    #[test]
    fn the_quota_is_spent_per_window_and_comes_back_in_the_next() {
        let mut w = RateWindow {
            limit: 2,
            window_seconds: 10,
            start: 0,
            used: 0,
        };
        let q = w.take(1_000_003);
        assert_eq!((q.remaining, q.reset, q.refused_for), (1, 1_000_010, None));
        assert_eq!(w.take(1_000_004).remaining, 0);
        let q = w.take(1_000_007);
        assert_eq!(q.refused_for, Some(3));
        assert_eq!(q.remaining, 0);
        let q = w.take(1_000_010);
        assert_eq!((q.remaining, q.reset, q.refused_for), (1, 1_000_020, None));
    }

    #[test]
    fn groups_cover_every_device_group_with_counts() {
        let state = AirwatchState::new(2, 200, AirwatchOptions::default());
        state
            .update_device(state.device_ids()[0], {
                let mut m = Map::new();
                m.insert("LocationGroupName".into(), json!("Pop-up Store"));
                m
            })
            .unwrap();
        let groups = state.groups();
        for d in state.devices() {
            let name = d["LocationGroupName"].as_str().unwrap();
            assert!(groups.iter().any(|g| g["Name"] == name), "{name}");
        }
        let total: usize = groups
            .iter()
            .map(|g| g["Devices"].as_str().unwrap().parse::<usize>().unwrap())
            .sum();
        assert_eq!(total, 200);
        let global = groups.iter().find(|g| g["Name"] == "Global").unwrap();
        assert!(global["ParentLocationGroup"].is_null());
        assert_eq!(global["LgLevel"], 0);
    }

    #[test]
    fn options_never_print_their_secrets() {
        let text = format!("{:?}", AirwatchOptions::default());
        assert!(!text.contains(DEFAULT_PASSWORD));
        assert!(!text.contains(DEFAULT_API_KEY));
    }
}
