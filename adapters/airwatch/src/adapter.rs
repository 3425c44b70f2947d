//! [`AirwatchAdapter`]: the AirWatch REST API behind the [`MdmAdapter`] trait.
//!
//! Every request goes through [`AirwatchAdapter::send`]: it waits for the rate
//! limiter, adds the three headers AirWatch wants (Basic auth,
//! `aw-tenant-code`, `Accept`), reads the whole (page-sized) body, and feeds
//! the `x-ratelimit-*` headers of every answer back into the limiter.
//!
//! A device command counts as sent only on a 2xx with no body (MDM-APIS.md);
//! any other 2xx, or a 502/504, is `NoAnswer` (the MDM may have acted).
//!
//! The risk signal is one tag per level (`{name}_Low` … `{name}_Critical`,
//! created by the admin): see [`AirwatchAdapter::signal_risk`].

use crate::config::AirwatchConfig;
use crate::ratelimit::RateLimiter;
use crate::wire;
use async_trait::async_trait;
use base64::Engine as _;
use futures::StreamExt as _;
use mtd_adapter::http::{
    body_excerpt, build_client, classify_request_error, error_for_request_status, is_html_page,
    read_body, retry_after, undocumented_answer,
};
use mtd_adapter::{
    guard_listing, AdapterError, Capabilities, Device, DeviceIdentifier, Group, HealthReport,
    MdmAdapter, MdmCommand, MdmKind, Page, PageStream, Receipt, RiskReadBack, Secret, SignalLevel,
    User,
};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use tracing::Instrument as _;
use url::Url;

/// One AirWatch (Workspace ONE UEM) integration. Cheap to share: hold it as
/// `Arc<dyn MdmAdapter>`; the HTTP connection pool and the rate-limit state
/// are shared by every caller.
pub struct AirwatchAdapter {
    config: AirwatchConfig,
    client: reqwest::Client,
    /// `Basic base64(username:password)`, built once.
    authorization: Secret,
    limiter: RateLimiter,
    /// Level tag name → AirWatch tag id, for the risk signal's tags: found
    /// once by `tags/search`, then reused. A tag not found is not cached (the
    /// admin may create it any time); an id the server no longer knows (404)
    /// is dropped and searched again. A std `Mutex`: held for a map access,
    /// never across a request.
    tag_ids: Mutex<HashMap<String, u64>>,
}

impl fmt::Debug for AirwatchAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config's own Debug redacts the secrets; the client and the
        // limiter say nothing useful.
        f.debug_struct("AirwatchAdapter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// An answer whose status has not been judged yet.
struct Answer {
    /// The request's method: a POST is a command (see `ok_or_error`).
    method: Method,
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

/// The three listings: where they are and what their envelope calls things.
#[derive(Debug, Clone, Copy)]
enum Listing {
    Devices,
    Users,
    Groups,
}

impl Listing {
    fn path(self) -> &'static [&'static str] {
        match self {
            Listing::Devices => &["mdm", "devices", "search"],
            Listing::Users => &["system", "users", "search"],
            Listing::Groups => &["system", "groups", "search"],
        }
    }

    /// The array of records: `OrganizationGroups` is the v2 shape of the
    /// groups search, `LocationGroups` the v1 shape (public clients show both).
    fn item_keys(self) -> &'static [&'static str] {
        match self {
            Listing::Devices => &["Devices"],
            Listing::Users => &["Users"],
            Listing::Groups => &["OrganizationGroups", "LocationGroups"],
        }
    }

    fn total_keys(self) -> &'static [&'static str] {
        match self {
            Listing::Devices | Listing::Users => &["Total"],
            Listing::Groups => &["TotalResults", "Total"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Listing::Devices => "devices",
            Listing::Users => "users",
            Listing::Groups => "groups",
        }
    }
}

/// One page as the server sent it, before mapping.
struct RawPage {
    items: Vec<Value>,
    total: Option<u64>,
}

impl AirwatchAdapter {
    /// Validates the config and builds the HTTP client; sends nothing.
    pub fn new(config: AirwatchConfig) -> Result<Self, AdapterError> {
        config.validate()?;
        let client = build_client(&config.http)?;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            config.credentials.username,
            config.credentials.password.expose()
        ));
        Ok(AirwatchAdapter {
            config,
            client,
            authorization: Secret::new(format!("Basic {basic}")),
            limiter: RateLimiter::default(),
            tag_ids: Mutex::new(HashMap::new()),
        })
    }

    /// The integration's config (the name for logs, the URL for messages).
    pub fn config(&self) -> &AirwatchConfig {
        &self.config
    }

    /// `{base_url}/API/{segments…}`, whatever the base path ends with.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.base_url.clone();
        // `validate` rejected cannot-be-a-base URLs, so this cannot fail.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("API").extend(segments);
        }
        url
    }

    /// Sends one request and reads its answer, whatever the status.
    ///
    /// A POST without a JSON body is sent with an explicit
    /// `Content-Length: 0`: hyper sends no length for an empty body, and IIS
    /// front ends answer 411 to a POST without one.
    async fn send(
        &self,
        method: Method,
        url: Url,
        json_body: Option<String>,
    ) -> Result<Answer, AdapterError> {
        self.limiter.before_request(&self.config.name).await;
        let is_post = method == Method::POST;
        let mut request = self
            .client
            .request(method.clone(), url)
            .header(AUTHORIZATION, self.authorization.expose())
            .header("aw-tenant-code", self.config.credentials.api_key.expose())
            .header(ACCEPT, "application/json");
        request = match json_body {
            Some(body) => request.header(CONTENT_TYPE, "application/json").body(body),
            None if is_post => request.header(CONTENT_LENGTH, "0").body(Vec::<u8>::new()),
            None => request,
        };
        let classify = |e: reqwest::Error| classify_request_error(&method, &e);
        let response = request.send().await.map_err(classify)?;
        let status = response.status();
        let headers = response.headers().clone();
        self.limiter.observe(&headers);
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.limiter.observe_throttled(retry_after(&headers));
        }
        let body = read_body(response, &method).await?;
        Ok(Answer {
            method,
            status,
            headers,
            body,
        })
    }

    /// Fetches one page of a listing; `None` for the 204 "no records" answer.
    async fn fetch_page(
        &self,
        listing: Listing,
        page: u32,
    ) -> Result<Option<RawPage>, AdapterError> {
        let mut url = self.url(listing.path());
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("pagesize", &self.config.page_size.to_string());
        let answer = ok_or_error(self.send(Method::GET, url, None).await?)?;
        if answer.status == StatusCode::NO_CONTENT || answer.body.trim().is_empty() {
            return Ok(None);
        }
        let value = parse_json(&answer.body)?;
        let Value::Object(mut envelope) = value else {
            return Err(AdapterError::Decode(format!(
                "{} page {page}: expected a JSON object, got {}",
                listing.name(),
                body_excerpt(&answer.body)
            )));
        };
        let items = listing
            .item_keys()
            .iter()
            .find_map(|k| match envelope.remove(*k) {
                Some(Value::Array(items)) => Some(items),
                _ => None,
            })
            .unwrap_or_default();
        let envelope = Value::Object(envelope);
        let total = listing
            .total_keys()
            .iter()
            .find_map(|k| wire::count(&envelope, k));
        Ok(Some(RawPage { items, total }))
    }

    /// A listing as a stream of pages, one request per page, so memory holds
    /// one page at most. It ends at a 204, an empty or short page, or once
    /// `(page + 1) * pagesize` reaches `Total`: no request past the end.
    ///
    /// The stream is guarded ([`guard_listing`]): a server that ignores the
    /// page number fails the listing at the first repeated page.
    fn paged<T: Send + 'static>(
        &self,
        listing: Listing,
        map: fn(&Value) -> Result<T, String>,
        key: fn(&T) -> &str,
    ) -> PageStream<'_, T> {
        let page_size = u64::from(self.config.page_size);
        let pages = futures::stream::unfold(Some(0u32), move |next| async move {
            let page = next?;
            let span = tracing::debug_span!("airwatch_page", mdm = %self.config.name, listing = listing.name(), page);
            let raw = match self.fetch_page(listing, page).instrument(span).await {
                Err(e) => return Some((Err(e), None)),
                Ok(None) => return None,
                Ok(Some(raw)) => raw,
            };
            let n = raw.items.len() as u64;
            if n == 0 {
                return None;
            }
            let read_so_far = (u64::from(page) + 1) * page_size;
            let more = n == page_size
                && raw.total.is_none_or(|total| read_so_far < total)
                && page < u32::MAX;
            // n > page_size: the server ignored paging and sent everything.
            let mut out = map_page(&self.config.name, listing, raw.items, map);
            out.total = raw.total;
            Some((Ok(out), more.then_some(page + 1)))
        })
        .boxed();
        guard_listing(pages, format!("AirWatch {}", listing.name()), key)
    }

    async fn lookup(&self, id: &DeviceIdentifier) -> Result<Option<Device>, AdapterError> {
        let url = match id {
            DeviceIdentifier::MdmDeviceId(v) => {
                if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit()) {
                    // AirWatch device ids are integers: nothing else can match.
                    return Ok(None);
                }
                self.url(&["mdm", "devices", v])
            }
            other => {
                let (searchby, value) = match other {
                    DeviceIdentifier::Udid(v) => ("Udid", v.clone()),
                    DeviceIdentifier::Serial(v) => ("Serialnumber", v.clone()),
                    // The model keeps MACs as lower-case hex; the console
                    // shows (and stores) them in upper case.
                    DeviceIdentifier::Mac(v) => ("Macaddress", v.to_ascii_uppercase()),
                    DeviceIdentifier::Imei(v) => ("ImeiNumber", v.clone()),
                    DeviceIdentifier::MdmDeviceId(_) => unreachable!("handled above"),
                };
                let mut url = self.url(&["mdm", "devices"]);
                url.query_pairs_mut()
                    .append_pair("searchby", searchby)
                    .append_pair("id", &value);
                url
            }
        };
        let answer = self.send(Method::GET, url, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let answer = ok_or_error(answer)?;
        if answer.status == StatusCode::NO_CONTENT || answer.body.trim().is_empty() {
            return Ok(None);
        }
        let value = parse_json(&answer.body)?;
        // One unwrapped device; tolerate the search envelope too.
        let record = match value.get("Devices") {
            Some(Value::Array(items)) => match items.first() {
                Some(first) => first.clone(),
                None => return Ok(None),
            },
            _ => value,
        };
        wire::device(&record)
            .map(Some)
            .map_err(|reason| AdapterError::Decode(format!("lookup by {}: {reason}", id.kind())))
    }

    async fn run_command(
        &self,
        command: MdmCommand,
        device: &Device,
    ) -> Result<Receipt, AdapterError> {
        let (url, body) = match command {
            MdmCommand::Lock | MdmCommand::EnterpriseWipe | MdmCommand::Wipe => {
                let name = match command {
                    MdmCommand::Lock => "Lock",
                    MdmCommand::EnterpriseWipe => "EnterpriseWipe",
                    _ => "DeviceWipe",
                };
                let mut url = self.url(&["mdm", "devices", &device.mdm_device_id, "commands"]);
                url.query_pairs_mut().append_pair("command", name);
                (url, None)
            }
            MdmCommand::DisconnectWifi | MdmCommand::RemoveWifiProfile => {
                let profile = self.config.wifi_profile_id().ok_or_else(|| {
                    AdapterError::Config(format!(
                        "AirWatch `{}`: wifi_disconnect_profile_id is not set; `{command}` needs the \
                         id of the Wi-Fi profile prepared in the console",
                        self.config.name
                    ))
                })?;
                let serial = device.identifiers.serial.as_deref().ok_or_else(|| {
                    AdapterError::Config(format!(
                        "AirWatch `{}`: device {} has no serial number, which `{command}` needs \
                         (the profile call names the device by SerialNumber)",
                        self.config.name, device.mdm_device_id
                    ))
                })?;
                let verb = if command == MdmCommand::DisconnectWifi {
                    "install"
                } else {
                    "remove"
                };
                let url = self.url(&["mdm", "profiles", profile, verb]);
                let body = serde_json::json!({ "SerialNumber": serial }).to_string();
                (url, Some(body))
            }
        };
        let request = match url.query() {
            Some(q) => format!("POST {}?{q}", url.path()),
            None => format!("POST {}", url.path()),
        };
        let answer = self.send(Method::POST, url, body.clone()).await?;
        let answer = ok_or_error(answer)?;
        // Only the documented answer counts as sent: a device command is a 2xx
        // with no body. The profile calls' answer body is not documented, so
        // there only a page (a login portal, a proxy) is refused.
        let device_command = body.is_none();
        let documented = if device_command {
            answer.body.trim().is_empty()
        } else {
            !is_html_page(&answer.body)
        };
        if !documented {
            let expected = if device_command {
                "AirWatch's 2xx with no body"
            } else {
                "AirWatch's 2xx answer (not a page)"
            };
            return Err(undocumented_answer(
                &request,
                answer.status,
                &answer.body,
                expected,
            ));
        }
        tracing::info!(
            status = answer.status.as_u16(),
            "Command accepted by the MDM."
        );
        Ok(Receipt {
            request,
            request_body: body,
            status: answer.status.as_u16(),
            response_body: (!answer.body.trim().is_empty()).then_some(answer.body),
            vendor_reference: None,
        })
    }
}

/// The four level tags of the risk signal `name`, lowest level first:
/// `{name}_Low`, `{name}_Medium`, `{name}_High`, `{name}_Critical`
/// (`Secured` is being in none of them).
fn level_tags(name: &str) -> [(SignalLevel, String); 4] {
    [
        SignalLevel::Low,
        SignalLevel::Medium,
        SignalLevel::High,
        SignalLevel::Critical,
    ]
    .map(|level| (level, format!("{name}_{}", level.as_vendor())))
}

/// One tag change as made: its request line, and the status and body answered.
struct TagCall {
    request: String,
    status: u16,
    body: String,
}

/// The request line of a receipt: `POST /path` (with its query, if any).
fn request_line(method: &Method, url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{method} {}?{q}", url.path()),
        None => format!("{method} {}", url.path()),
    }
}

/// The tag whose `TagName` is exactly `name` in a `tags/search` answer
/// (`{"Tags":[{"Id":{"Value":n},"TagName":"…"}]}`; the search matches more
/// than the exact name).
fn tag_in_search(body: &Value, name: &str) -> Option<u64> {
    body.get("Tags")?
        .as_array()?
        .iter()
        .filter(|t| wire::text(t, "TagName").as_deref() == Some(name))
        .find_map(|t| wire::id(t, "Id")?.parse().ok())
}

/// The device ids of a `tags/{id}/devices` answer (`{"Device":[{"DeviceId":n}]}`).
fn tagged_devices(body: &Value) -> HashSet<String> {
    body.get("Device")
        .and_then(Value::as_array)
        .map(|devices| {
            devices
                .iter()
                .filter_map(|d| wire::id(d, "DeviceId"))
                .collect()
        })
        .unwrap_or_default()
}

/// A `adddevices`/`removedevices` answer: a 2xx that is not a page, and,
/// when it is AirWatch's bulk result (`TotalItems`, `AcceptedItems`,
/// `FailedItems`, `Faults`), one without failed items.
fn judge_bulk(request: &str, answer: &Answer) -> Result<(), AdapterError> {
    if is_html_page(&answer.body) {
        return Err(undocumented_answer(
            request,
            answer.status,
            &answer.body,
            "AirWatch's 2xx answer (not a page)",
        ));
    }
    let Ok(value) = serde_json::from_str::<Value>(&answer.body) else {
        return Ok(());
    };
    if wire::count(&value, "FailedItems").unwrap_or(0) == 0 {
        return Ok(());
    }
    let faults: Vec<String> = value
        .pointer("/Faults/Fault")
        .and_then(Value::as_array)
        .map(|faults| {
            faults
                .iter()
                .map(|f| error_message(&f.to_string()))
                .collect()
        })
        .unwrap_or_default();
    Err(AdapterError::Rejected {
        status: answer.status.as_u16(),
        message: format!(
            "{request}: AirWatch did not take the device: {}",
            if faults.is_empty() {
                body_excerpt(&answer.body)
            } else {
                faults.join("; ")
            }
        ),
    })
}

impl AirwatchAdapter {
    fn cached_tag(&self, tag: &str) -> Option<u64> {
        self.tag_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tag)
            .copied()
    }

    fn forget_tag(&self, tag: &str) {
        self.tag_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tag);
    }

    /// The id of the tag named exactly `tag`: from the cache, else from
    /// `GET /API/mdm/tags/search?name=…` (cached when found). `None`: no
    /// such tag (a 204 or no exact match).
    async fn tag_id(&self, tag: &str) -> Result<Option<u64>, AdapterError> {
        if let Some(id) = self.cached_tag(tag) {
            return Ok(Some(id));
        }
        let mut url = self.url(&["mdm", "tags", "search"]);
        url.query_pairs_mut().append_pair("name", tag);
        let answer = ok_or_error(self.send(Method::GET, url, None).await?)?;
        if answer.status == StatusCode::NO_CONTENT || answer.body.trim().is_empty() {
            return Ok(None);
        }
        let id = tag_in_search(&parse_json(&answer.body)?, tag);
        if let Some(id) = id {
            self.tag_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(tag.to_string(), id);
        }
        Ok(id)
    }

    /// Adds the device to (`adddevices`) or removes it from
    /// (`removedevices`) the tag named `tag`, body
    /// `{"BulkValues":{"Value":["<device Id>"]}}`; the call as made. `Ok(None)`
    /// when the tag does not exist; a cached id the server answers 404 for
    /// is searched again once (the tag may have been deleted or recreated).
    async fn tag_call(
        &self,
        tag: &str,
        verb: &str,
        device_id: &str,
        body: &str,
    ) -> Result<Option<TagCall>, AdapterError> {
        let mut searched_again = false;
        loop {
            let Some(id) = self.tag_id(tag).await? else {
                return Ok(None);
            };
            let url = self.url(&["mdm", "tags", &id.to_string(), verb]);
            let request = request_line(&Method::POST, &url);
            let answer = self.send(Method::POST, url, Some(body.to_string())).await?;
            if answer.status == StatusCode::NOT_FOUND && !searched_again {
                tracing::info!(mdm = %self.config.name, tag, tag_id = id, "AirWatch no longer knows the tag id; searching the tag again");
                self.forget_tag(tag);
                searched_again = true;
                continue;
            }
            if answer.status == StatusCode::NOT_FOUND {
                self.forget_tag(tag);
                return Ok(None);
            }
            let answer = ok_or_error(answer)?;
            judge_bulk(&request, &answer)?;
            tracing::debug!(
                device_id,
                tag,
                verb,
                status = answer.status.as_u16(),
                "AirWatch took the tag change"
            );
            return Ok(Some(TagCall {
                request,
                status: answer.status.as_u16(),
                body: answer.body,
            }));
        }
    }

    /// The ids of the devices in the tag `tag_id`
    /// (`GET /API/mdm/tags/{tagId}/devices`); `None` when the server no
    /// longer knows the tag (404).
    async fn tag_members(&self, tag_id: u64) -> Result<Option<HashSet<String>>, AdapterError> {
        let url = self.url(&["mdm", "tags", &tag_id.to_string(), "devices"]);
        let answer = self.send(Method::GET, url, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let answer = ok_or_error(answer)?;
        if answer.status == StatusCode::NO_CONTENT || answer.body.trim().is_empty() {
            return Ok(Some(HashSet::new()));
        }
        Ok(Some(tagged_devices(&parse_json(&answer.body)?)))
    }

    async fn write_level(
        &self,
        device: &Device,
        level: SignalLevel,
        name: &str,
    ) -> Result<Receipt, AdapterError> {
        let device_id = device.mdm_device_id.trim();
        if device_id.is_empty() || !device_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(AdapterError::Config(format!(
                "AirWatch device ids are numbers; `{}` is not one",
                device.mdm_device_id
            )));
        }
        if name.trim().is_empty() {
            return Err(AdapterError::Config(
                "the risk signal needs the prefix of the AirWatch level tags".into(),
            ));
        }
        let body = serde_json::json!({ "BulkValues": { "Value": [device_id] } }).to_string();
        let tags = level_tags(name);
        let mut calls: Vec<TagCall> = Vec::new();
        // First into the new level's tag, then out of the others: in between
        // the device is in two tags and reads as the higher level, never as
        // `Secured`.
        if let Some((_, tag)) = tags.iter().find(|(l, _)| *l == level) {
            match self.tag_call(tag, "adddevices", device_id, &body).await? {
                Some(call) => calls.push(call),
                None => {
                    return Err(AdapterError::ActionNotPermitted {
                        setting: format!("create the device tag `{tag}` in Workspace ONE UEM"),
                        message: format!("AirWatch has no tag named `{tag}`"),
                    })
                }
            }
        }
        let mut missing = Vec::new();
        for (_, tag) in tags.iter().filter(|(l, _)| *l != level) {
            match self
                .tag_call(tag, "removedevices", device_id, &body)
                .await?
            {
                Some(call) => calls.push(call),
                // A tag that does not exist holds no device.
                None => missing.push(tag.as_str()),
            }
        }
        let Some(first) = calls.first() else {
            // `Secured` and not one level tag: the risk signal is not set up.
            return Err(AdapterError::ActionNotPermitted {
                setting: format!(
                    "create the device tags `{}` in Workspace ONE UEM",
                    missing.join("`, `")
                ),
                message: format!("AirWatch has none of the level tags of `{name}`"),
            });
        };
        // The status is the first call's: the one that put the device into
        // its level (or, for `Secured`, took it out of the first tag).
        let status = first.status;
        let answers: Vec<&str> = calls
            .iter()
            .map(|c| c.body.trim())
            .filter(|b| !b.is_empty())
            .collect();
        Ok(Receipt {
            request: calls
                .iter()
                .map(|c| c.request.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            request_body: Some(body),
            status,
            response_body: (!answers.is_empty()).then(|| answers.join("; ")),
            vendor_reference: None,
        })
    }

    async fn read_levels(
        &self,
        devices: &[Device],
        name: &str,
    ) -> Result<Vec<Option<SignalLevel>>, AdapterError> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        // Per level (lowest first), the devices in its tag; a tag that does
        // not exist holds none.
        let mut members: Vec<(SignalLevel, HashSet<String>)> = Vec::new();
        for (level, tag) in level_tags(name) {
            let Some(id) = self.tag_id(&tag).await? else {
                continue;
            };
            match self.tag_members(id).await? {
                Some(ids) => members.push((level, ids)),
                None => self.forget_tag(&tag),
            }
        }
        if members.is_empty() {
            // No level tag at all: AirWatch holds no level for anyone.
            return Ok(vec![None; devices.len()]);
        }
        Ok(devices
            .iter()
            .map(|d| {
                let id = d.mdm_device_id.trim();
                let highest = members
                    .iter()
                    .rev()
                    .find(|(_, ids)| ids.contains(id))
                    .map(|(level, _)| *level);
                Some(highest.unwrap_or(SignalLevel::Secured))
            })
            .collect())
    }
}

/// Maps the records of one page, counting (not failing on) those that cannot be mapped.
fn map_page<T>(
    mdm: &str,
    listing: Listing,
    items: Vec<Value>,
    map: fn(&Value) -> Result<T, String>,
) -> Page<T> {
    let mut page = Page::of(Vec::with_capacity(items.len()));
    let mut reasons = BTreeSet::new();
    for item in &items {
        match map(item) {
            Ok(v) => page.items.push(v),
            Err(reason) => {
                page.skipped += 1;
                reasons.insert(reason);
            }
        }
    }
    if page.skipped > 0 {
        let reason = reasons.into_iter().collect::<Vec<_>>().join("; ");
        tracing::warn!(
            mdm,
            listing = listing.name(),
            skipped = page.skipped,
            reason = %reason,
            "Skipped records that cannot be mapped."
        );
        page.skip_reason = Some(reason);
    }
    page
}

/// Passes a 2xx answer on; turns anything else into its error class, with
/// AirWatch's `{"errorCode","message"}` kept in the message (a command's 502
/// or 504 is `NoAnswer`).
fn ok_or_error(answer: Answer) -> Result<Answer, AdapterError> {
    if answer.status.is_success() {
        return Ok(answer);
    }
    Err(error_for_request_status(
        &answer.method,
        answer.status,
        &answer.headers,
        error_message(&answer.body),
    ))
}

/// `errorCode 1001: message` from the vendor's error JSON, or an excerpt of
/// whatever else came (an HTML page is reduced to its title).
pub(crate) fn error_message(body: &str) -> String {
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(body) {
        let field = |names: &[&str]| {
            names.iter().find_map(|n| match o.get(*n) {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
        };
        let code = field(&["errorCode", "ErrorCode"]);
        let message = field(&["message", "Message"]);
        match (code, message) {
            (Some(c), Some(m)) => return format!("errorCode {c}: {m}"),
            (Some(c), None) => return format!("errorCode {c}"),
            (None, Some(m)) => return m,
            (None, None) => {}
        }
    }
    body_excerpt(body)
}

fn parse_json(body: &str) -> Result<Value, AdapterError> {
    serde_json::from_str(body)
        .map_err(|e| AdapterError::Decode(format!("{e}; body: {}", body_excerpt(body))))
}

#[async_trait]
impl MdmAdapter for AirwatchAdapter {
    fn kind(&self) -> MdmKind {
        MdmKind::Airwatch
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            commands: [
                MdmCommand::Lock,
                MdmCommand::DisconnectWifi,
                MdmCommand::RemoveWifiProfile,
                MdmCommand::EnterpriseWipe,
                MdmCommand::Wipe,
            ]
            .into_iter()
            .collect(),
            removes_wifi_profile_itself: false,
            groups: true,
            user_listing: true,
        }
    }

    async fn health_check(&self) -> Result<HealthReport, AdapterError> {
        let span = tracing::info_span!("airwatch_health_check", mdm = %self.config.name);
        let page = self
            .fetch_page(Listing::Devices, 0)
            .instrument(span)
            .await?;
        Ok(HealthReport {
            devices_on_first_page: page.map_or(0, |p| p.items.len()),
        })
    }

    fn devices(&self) -> PageStream<'_, Device> {
        self.paged(Listing::Devices, wire::device, |d| &d.mdm_device_id)
    }

    fn users(&self) -> PageStream<'_, User> {
        self.paged(Listing::Users, wire::user, |u| &u.mdm_user_id)
    }

    fn groups(&self) -> PageStream<'_, Group> {
        self.paged(Listing::Groups, wire::group, |g| &g.mdm_group_id)
    }

    async fn lookup_device(&self, id: &DeviceIdentifier) -> Result<Option<Device>, AdapterError> {
        let span =
            tracing::info_span!("airwatch_lookup", mdm = %self.config.name, identifier = id.kind());
        self.lookup(id).instrument(span).await
    }

    async fn execute(&self, command: MdmCommand, device: &Device) -> Result<Receipt, AdapterError> {
        let span = tracing::info_span!(
            "airwatch_command",
            mdm = %self.config.name,
            device_id = %device.mdm_device_id,
            command = command.as_str()
        );
        self.run_command(command, device).instrument(span).await
    }

    /// Puts the device into the tag `{name}_{Level}` and takes it out of the
    /// other three level tags (`Secured`: out of all four), with
    /// `POST /API/mdm/tags/{tagId}/adddevices` and `…/removedevices`, body
    /// `{"BulkValues":{"Value":["<device Id>"]}}`. The new level's tag comes
    /// first. Repeating it changes nothing. The new level's tag missing is
    /// [`AdapterError::ActionNotPermitted`] naming the tag to create; the
    /// other tags missing hold no device and are skipped (all four missing:
    /// refused too). The receipt lists every call made, `; `-separated.
    async fn signal_risk(
        &self,
        device: &Device,
        level: SignalLevel,
        name: &str,
    ) -> Result<Receipt, AdapterError> {
        let span = tracing::info_span!(
            "airwatch_signal_risk",
            mdm = %self.config.name,
            device_id = %device.mdm_device_id,
            level = level.as_vendor()
        );
        let receipt = self
            .write_level(device, level, name)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| tracing::info!("AirWatch tagged the device with its risk level."));
        Ok(receipt)
    }

    /// The members of the four level tags, one request per tag.
    fn risk_read_back(&self) -> Option<RiskReadBack> {
        Some(RiskReadBack::Bulk)
    }

    /// Reads the members of each level tag once (`GET
    /// /API/mdm/tags/{tagId}/devices`), then each device's level: the
    /// highest tag it is in, `Secured` in none. With no level tag at all
    /// AirWatch holds no level: `None` for every device.
    async fn read_risk(
        &self,
        devices: &[Device],
        name: &str,
    ) -> Result<Vec<Option<SignalLevel>>, AdapterError> {
        let span = tracing::info_span!("airwatch_read_risk", mdm = %self.config.name, devices = devices.len());
        self.read_levels(devices, name).instrument(span).await
    }

    /// The level tags AirWatch does not have, lowest level first. Searched
    /// afresh (not from the cache), so a tag deleted since it was found is
    /// reported; the cache is updated with what the search says.
    async fn missing_risk_signal(&self, name: &str) -> Result<Vec<String>, AdapterError> {
        let mut missing = Vec::new();
        for (_, tag) in level_tags(name) {
            self.forget_tag(&tag);
            if self.tag_id(&tag).await?.is_none() {
                missing.push(tag);
            }
        }
        Ok(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_tags_are_the_prefix_and_the_capitalised_level_lowest_first() {
        let tags = level_tags("MTD_Threat_Level");
        assert_eq!(
            tags.map(|(l, n)| (l, n)),
            [
                (SignalLevel::Low, "MTD_Threat_Level_Low".to_string()),
                (SignalLevel::Medium, "MTD_Threat_Level_Medium".to_string()),
                (SignalLevel::High, "MTD_Threat_Level_High".to_string()),
                (
                    SignalLevel::Critical,
                    "MTD_Threat_Level_Critical".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_tag_search_answer_gives_the_id_of_the_exact_name_only() {
        let body = serde_json::json!({"Tags": [
            {"Id": {"Value": 7}, "TagName": "Risk_High_Old"},
            {"Id": 8, "TagName": "risk_high"},
            {"Id": {"Value": "9"}, "TagName": "Risk_High"},
        ]});
        assert_eq!(tag_in_search(&body, "Risk_High"), Some(9));
        assert_eq!(tag_in_search(&body, "Risk_Low"), None);
        assert_eq!(tag_in_search(&serde_json::json!({}), "Risk_High"), None);
    }

    #[test]
    fn tag_members_are_read_in_every_id_shape() {
        let body = serde_json::json!({"Device": [
            {"DeviceId": 1}, {"DeviceId": {"Value": 2}}, {"DeviceId": "3"}, {"DeviceId": null}
        ]});
        let ids = tagged_devices(&body);
        assert_eq!(ids.len(), 3);
        assert!(["1", "2", "3"].iter().all(|id| ids.contains(*id)));
        assert!(tagged_devices(&serde_json::json!({"Device": null})).is_empty());
    }

    #[test]
    fn a_bulk_answer_counts_only_without_failed_items() {
        let answer = |body: &str| Answer {
            method: Method::POST,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: body.to_string(),
        };
        for ok in [
            "",
            r#"{"TotalItems":1,"AcceptedItems":1,"FailedItems":0}"#,
            "true",
        ] {
            judge_bulk("POST /x", &answer(ok)).unwrap();
        }
        let e = judge_bulk(
            "POST /x",
            &answer(r#"{"TotalItems":1,"AcceptedItems":0,"FailedItems":1,"Faults":{"Fault":[{"ErrorCode":1001,"ItemValue":"4","Message":"Device not found."}]}}"#),
        )
        .unwrap_err();
        assert_eq!(e.class(), "rejected");
        assert!(e.to_string().contains("Device not found."), "{e}");
        let e = judge_bulk("POST /x", &answer("<html><title>Sign in</title></html>")).unwrap_err();
        assert_eq!(e.class(), "no_answer");
    }

    #[test]
    fn error_json_keeps_code_and_message_and_other_bodies_are_excerpted() {
        assert_eq!(
            error_message(r#"{"errorCode":1001,"message":"Invalid page size"}"#),
            "errorCode 1001: Invalid page size"
        );
        assert_eq!(
            error_message("<html><head><title>Service Unavailable</title></head></html>"),
            "HTML page: Service Unavailable"
        );
        assert_eq!(error_message(""), "(empty body)");
    }
}
