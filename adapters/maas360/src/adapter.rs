//! [`Maas360Adapter`]: the MaaS360 Web Services calls behind [`MdmAdapter`].
//!
//! Every data call goes through [`Maas360Adapter::call`]: it adds the shared
//! token (`Authorization: MaaS token="…"`), logs in again and repeats the
//! call once after a 401, repeats a read once after a short 429, and maps
//! failures with the `mtd_adapter::http` helpers (a POST is a command).
//!
//! A command counts as sent only on MaaS360's documented answer, 200 with
//! `actionResponse.actionStatus` 0; `actionStatus` 1 is a permanent refusal,
//! any other answer (or a 502/504) is `NoAnswer` (the MDM may have acted).
//! The risk signal's `setCustomAttributeValue` is answered the same way.

use crate::auth::{TokenCache, Tokens};
use crate::wire::{self, AuthAnswer, SearchPage};
use crate::Maas360Config;
use async_trait::async_trait;
use futures::StreamExt as _;
use mtd_adapter::http::{
    body_excerpt, build_client, classify_request_error, classify_send_error,
    error_for_request_status, error_for_status, read_body, retry_after, undocumented_answer,
};
use mtd_adapter::{
    guard_listing, AdapterError, Capabilities, Device, DeviceIdentifier, Group, HealthReport,
    MdmAdapter, MdmCommand, MdmKind, Page, PageStream, Receipt, RiskReadBack, Secret, SignalLevel,
    User,
};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument as _;
use url::Url;

/// The longest `Retry-After` a read waits out before it is repeated once; a
/// longer one (or a second 429) is the caller's to honour: the error carries it.
const MAX_READ_RETRY_WAIT: Duration = Duration::from_secs(5);
/// The wait before repeating a read answered 429 without `Retry-After`.
const DEFAULT_READ_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Devices per lookup: the smallest page the search takes, enough to see
/// that an identifier is on more than one device.
const LOOKUP_PAGE_SIZE: u32 = 25;
const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// One MaaS360 integration. Cheap to share (`Arc<dyn MdmAdapter>`): one HTTP
/// client and one token for all callers.
pub struct Maas360Adapter {
    config: Maas360Config,
    client: reqwest::Client,
    token: TokenCache,
}

impl fmt::Debug for Maas360Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config's Debug redacts its secrets; the token is never shown.
        f.debug_struct("Maas360Adapter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A successful (2xx) answer.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: String,
}

/// The two listings: where they are and what their envelope calls things.
#[derive(Debug, Clone, Copy)]
enum Listing {
    Devices,
    Users,
}

impl Listing {
    fn name(self) -> &'static str {
        match self {
            Listing::Devices => "devices",
            Listing::Users => "users",
        }
    }

    /// The envelope and the list inside it.
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            Listing::Devices => ("devices", "device"),
            Listing::Users => ("users", "user"),
        }
    }
}

/// The console-facing names of the commands MaaS360 offers.
fn action_name(command: MdmCommand) -> Option<&'static str> {
    match command {
        MdmCommand::Lock => Some("lockDevice"),
        MdmCommand::EnterpriseWipe => Some("selectiveWipeDevice"),
        MdmCommand::Wipe => Some("wipeDevice"),
        MdmCommand::DisconnectWifi | MdmCommand::RemoveWifiProfile => None,
    }
}

/// The form of a command, exactly as sent: `deviceId`, and for a full wipe
/// no notification to anyone (the connector reports the action itself).
fn action_form(command: MdmCommand, device_id: &str) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("deviceId", device_id);
    if command == MdmCommand::Wipe {
        form.append_pair("notifyMe", "No")
            .append_pair("notifyUser", "No");
    }
    form.finish()
}

impl Maas360Adapter {
    /// Validates the config and builds the HTTP client (rustls, the per-MDM
    /// `ca_cert`, the timeouts). Sends nothing: the first call logs in.
    pub fn new(config: Maas360Config) -> Result<Self, AdapterError> {
        config.validate()?;
        let client = build_client(&config.http)?;
        Ok(Maas360Adapter {
            config,
            client,
            token: TokenCache::default(),
        })
    }

    /// The integration's config (the name for logs, the URL for messages).
    pub fn config(&self) -> &Maas360Config {
        &self.config
    }

    fn billing_id(&self) -> &str {
        &self.config.credentials.billing_id
    }

    /// `{base_url}/{segments…}`, each segment percent-encoded, whatever the
    /// base path ends with.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.base_url.clone();
        // `validate` refused cannot-be-a-base URLs, so this cannot fail.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn device_search_url(&self) -> Url {
        let billing = self.billing_id();
        self.url(&[
            "device-apis",
            "devices",
            "2.0",
            "search",
            "customer",
            billing,
        ])
    }

    /// A page of a listing: the URL with its query, in the documented order.
    fn listing_url(&self, listing: Listing, page_number: u32, page_size: u32) -> Url {
        let (page_size, page_number) = (page_size.to_string(), page_number.to_string());
        let (mut url, query): (Url, [(&str, &str); 3]) = match listing {
            Listing::Devices => (
                self.device_search_url(),
                [
                    ("pageSize", page_size.as_str()),
                    ("pageNumber", page_number.as_str()),
                    ("deviceStatus", "Active"),
                ],
            ),
            Listing::Users => (
                self.url(&["user-apis", "user", "1.0", "search", self.billing_id()]),
                [
                    ("includeAllUsers", "1"),
                    ("pageSize", page_size.as_str()),
                    ("pageNumber", page_number.as_str()),
                ],
            ),
        };
        url.query_pairs_mut().extend_pairs(query);
        url
    }

    // ------------------------------------------------------------ session

    /// The login body of Authentication 2.0; the password and the access key
    /// leave only in it (never logged: see [`Self::auth_request`]).
    fn login_body(&self) -> String {
        let c = &self.config.credentials;
        json!({"authRequest": {"maaS360AdminAuth": {
            "billingID": c.billing_id,
            "platformID": c.platform_id,
            "appID": c.app_id,
            "appVersion": c.app_version,
            "appAccessKey": c.app_access_key.expose(),
            "userName": c.username,
            "password": c.password.expose(),
        }}})
        .to_string()
    }

    /// The refresh body: the login's without `password` and `appAccessKey`,
    /// with the `refreshToken`.
    fn refresh_body(&self, refresh: &Secret) -> String {
        let c = &self.config.credentials;
        json!({"authRequest": {"maaS360AdminAuth": {
            "billingID": c.billing_id,
            "platformID": c.platform_id,
            "appID": c.app_id,
            "appVersion": c.app_version,
            "userName": c.username,
            "refreshToken": refresh.expose(),
        }}})
        .to_string()
    }

    /// `POST /auth-apis/auth/2.0/{operation}/customer/{billingId}` and its
    /// answer. A refusal is HTTP 200 with `errorCode` ≠ 0: `Unauthorized`
    /// naming the code and MaaS360's description. Neither body is ever
    /// echoed: one holds the password, the other the tokens.
    async fn auth_request(
        &self,
        operation: &'static str,
        body: String,
    ) -> Result<Tokens, AdapterError> {
        let url = self.url(&[
            "auth-apis",
            "auth",
            "2.0",
            operation,
            "customer",
            self.billing_id(),
        ]);
        let what = format!("POST {}", url.path());
        let obtained_at = Instant::now();
        tracing::debug!(mdm = %self.config.name, operation, "Asking MaaS360 for a token");
        let response = self
            .client
            .post(url)
            .header(CONTENT_TYPE, JSON)
            .header(ACCEPT, JSON)
            .body(body)
            .send()
            .await
            // A read: a login changes nothing at the MDM, so it is safe to repeat.
            .map_err(|e| classify_send_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = read_body(response, &Method::GET).await?;
        if !status.is_success() {
            return Err(error_for_status(
                status,
                &headers,
                format!("{what}: {}", body_excerpt(&text)),
            ));
        }
        match wire::auth_answer(&text) {
            Ok(AuthAnswer::Granted {
                auth_token,
                refresh_token,
            }) => {
                // The token goes into a quoted header value.
                if !auth_token.chars().all(|c| c.is_ascii_graphic() && c != '"') {
                    return Err(AdapterError::Decode(format!(
                        "{what}: the authToken holds characters a header cannot carry"
                    )));
                }
                Ok(Tokens {
                    auth: Secret::new(auth_token),
                    refresh: refresh_token.map(Secret::new),
                    obtained_at,
                })
            }
            Ok(AuthAnswer::Refused { code, description }) => {
                Err(AdapterError::Unauthorized(format!(
                    "MaaS360 refused the {operation} at {what}: errorCode {code}: {description}"
                )))
            }
            Err(why) => Err(AdapterError::Decode(format!(
                "{what}: the answer is not MaaS360's authResponse ({why})"
            ))),
        }
    }

    /// A full login with the administrator's credentials.
    async fn login(&self) -> Result<Tokens, AdapterError> {
        self.auth_request("authenticate", self.login_body()).await
    }

    /// A new token for a stale one: by its refresh token first, by a full
    /// login when that fails (or there is none).
    async fn renew(&self, refresh: Option<Secret>) -> Result<Tokens, AdapterError> {
        if let Some(refresh) = refresh {
            match self
                .auth_request("refreshToken", self.refresh_body(&refresh))
                .await
            {
                Ok(mut tokens) => {
                    // Kept when the answer carries no new one.
                    tokens.refresh = tokens.refresh.or(Some(refresh));
                    return Ok(tokens);
                }
                Err(e) => tracing::debug!(
                    mdm = %self.config.name, error_class = e.class(), error = %e,
                    "MaaS360 did not refresh the token; logging in again"
                ),
            }
        }
        self.login().await
    }

    async fn auth_token(&self) -> Result<Secret, AdapterError> {
        self.token.get_or_renew(|refresh| self.renew(refresh)).await
    }

    // ------------------------------------------------------------ calls

    /// Sends one request with `token`; a form body makes it a command.
    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        token: &Secret,
        form: Option<&str>,
    ) -> Result<reqwest::Response, AdapterError> {
        let mut authorization =
            HeaderValue::from_str(&format!("MaaS token=\"{}\"", token.expose())).map_err(|_| {
                AdapterError::Decode("the authToken cannot be sent in a header".into())
            })?;
        authorization.set_sensitive(true);
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, JSON);
        if let Some(form) = form {
            request = request.header(CONTENT_TYPE, FORM).body(form.to_string());
        }
        request
            .send()
            .await
            .map_err(|e| classify_request_error(method, &e))
    }

    /// One API call with the shared token. A 401 (`Token expired.`, `Token
    /// invalid`, or any other) drops the token and repeats the call once
    /// after a new login; a second 401 is the answer. A read answered 429
    /// with a short `Retry-After` is repeated once after it.
    async fn call(
        &self,
        method: Method,
        url: &Url,
        form: Option<&str>,
    ) -> Result<Answer, AdapterError> {
        let what = format!("{method} {}", url.path());
        let (mut logged_in_again, mut waited) = (false, false);
        loop {
            let token = self.auth_token().await?;
            let response = self.send_once(&method, url, &token, form).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = read_body(response, &method).await?;
            if status == StatusCode::UNAUTHORIZED && !logged_in_again {
                tracing::debug!(mdm = %self.config.name, request = %what, said = %body_excerpt(&body), "MaaS360 refused the token; logging in again");
                self.token.invalidate(&token).await;
                logged_in_again = true;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS && method == Method::GET && !waited {
                if let Some(wait) = short_wait(&headers) {
                    tracing::debug!(mdm = %self.config.name, request = %what, wait_ms = wait.as_millis() as u64, "MaaS360 rate-limited a read; repeating it once");
                    tokio::time::sleep(wait).await;
                    waited = true;
                    continue;
                }
            }
            if !status.is_success() {
                let message = format!("{what}: {}", body_excerpt(&body));
                return Err(error_for_request_status(&method, status, &headers, message));
            }
            return Ok(Answer { status, body });
        }
    }

    /// One search answer (`GET`), read as its envelope.
    async fn search(&self, url: &Url, listing: Listing) -> Result<SearchPage, AdapterError> {
        let answer = self.call(Method::GET, url, None).await?;
        let (envelope, item) = listing.keys();
        wire::search_page(&answer.body, envelope, item).map_err(|why| {
            AdapterError::Decode(format!(
                "GET {}: not a MaaS360 {} search answer ({why}); the answer began: {}",
                url.path(),
                listing.name(),
                body_excerpt(&answer.body)
            ))
        })
    }

    /// A listing as a stream of pages (`pageNumber` from 1), one request per
    /// page, so memory holds one page at most. It ends at an empty page, a
    /// page shorter than `pageSize`, or once `count` is reached: no request
    /// past the end. Guarded: `count` is each page's `total`, and a server
    /// that ignores `pageNumber` fails at the first repeated page.
    fn paged<T: Send + 'static>(
        &self,
        listing: Listing,
        map: fn(&Value) -> Result<T, String>,
        key: fn(&T) -> &str,
    ) -> PageStream<'_, T> {
        let page_size = self.config.page_size;
        let pages = futures::stream::unfold(Some(1u32), move |next| async move {
            let number = next?;
            let span = tracing::debug_span!("maas360_page", mdm = %self.config.name, listing = listing.name(), page = number);
            let url = self.listing_url(listing, number, page_size);
            let raw = match self.search(&url, listing).instrument(span).await {
                Ok(raw) => raw,
                Err(e) => return Some((Err(e), None)),
            };
            let n = raw.records.len() as u64;
            if n == 0 {
                return None;
            }
            let read_so_far = u64::from(number) * u64::from(page_size);
            // More than `pageSize` records: the server ignored paging and sent all.
            let more = n == u64::from(page_size)
                && raw.count.is_none_or(|count| read_so_far < count)
                && number < u32::MAX;
            let mut page = map_page(&self.config.name, listing, raw.records, map);
            page.total = raw.count;
            Some((Ok(page), more.then_some(number + 1)))
        })
        .boxed();
        guard_listing(pages, format!("MaaS360 {}", listing.name()), key)
    }

    // ------------------------------------------------------------ lookup

    /// The search filter for `id` and the values to try, in order. The serial
    /// is no search filter at MaaS360 (`None`). A UDID is tried as normalised
    /// (upper case) and then in lower case: the filter is exact and MaaS360
    /// keeps the UDID as the device reported it.
    fn lookup_filter(id: &DeviceIdentifier) -> Option<(&'static str, Vec<String>)> {
        match id {
            DeviceIdentifier::MdmDeviceId(v) => {
                Some(("maas360DeviceId", vec![v.trim().to_string()]))
            }
            DeviceIdentifier::Udid(v) => {
                let lower = v.to_ascii_lowercase();
                let mut values = vec![v.clone()];
                if lower != *v {
                    values.push(lower);
                }
                Some(("udid", values))
            }
            DeviceIdentifier::Imei(v) => Some(("imeiMeid", vec![v.clone()])),
            DeviceIdentifier::Mac(v) => Some(("wifiMacAddress", vec![wire::mac_for_search(v)])),
            DeviceIdentifier::Serial(_) => None,
        }
    }

    async fn lookup(&self, id: &DeviceIdentifier) -> Result<Option<Device>, AdapterError> {
        let Some((filter, values)) = Self::lookup_filter(id) else {
            tracing::debug!(mdm = %self.config.name, "MaaS360 cannot search by serial number; the next full sync finds the device");
            return Ok(None);
        };
        for value in values {
            if let Some(device) = self.search_one(id, filter, &value).await? {
                return Ok(Some(device));
            }
        }
        Ok(None)
    }

    /// The device search with one exact filter. Only a device that carries
    /// the identifier is taken (several: the one that reported last, as the
    /// store picks on a collision); devices that do not carry it mean the
    /// server did not apply the filter, which is an error, never a guess.
    async fn search_one(
        &self,
        id: &DeviceIdentifier,
        filter: &str,
        value: &str,
    ) -> Result<Option<Device>, AdapterError> {
        let mut url = self.device_search_url();
        url.query_pairs_mut()
            .append_pair("pageSize", &LOOKUP_PAGE_SIZE.to_string())
            .append_pair("pageNumber", "1")
            .append_pair("deviceStatus", "Active")
            .append_pair(filter, value);
        let page = self.search(&url, Listing::Devices).await?;
        let answered = page.records.len();
        let mut matches: Vec<Device> = page
            .records
            .iter()
            .filter_map(|r| wire::device(r).ok())
            .filter(|d| wire::carries(d, id))
            .collect();
        if matches.is_empty() && answered > 0 {
            return Err(AdapterError::Decode(format!(
                "GET {}: the search by {filter} answered {answered} device(s), none with that {}: the server did not apply the filter",
                url.path(),
                id.kind()
            )));
        }
        if matches.len() > 1 {
            tracing::info!(mdm = %self.config.name, identifier = id.kind(), candidates = matches.len(), "The identifier is on several MaaS360 devices; taking the one that reported last");
        }
        matches.sort_by_key(|d| d.last_checkin_at);
        Ok(matches.pop())
    }

    // ------------------------------------------------------------ commands

    async fn run_command(
        &self,
        command: MdmCommand,
        device: &Device,
    ) -> Result<Receipt, AdapterError> {
        let Some(action) = action_name(command) else {
            return Err(AdapterError::Unsupported(format!(
                "{command}: MaaS360 has no call to take a device off Wi-Fi"
            )));
        };
        let device_id = device.mdm_device_id.trim();
        if device_id.is_empty() {
            return Err(AdapterError::Config(
                "the device has no maas360DeviceID".into(),
            ));
        }
        let url = self.url(&["device-apis", "devices", "1.0", action, self.billing_id()]);
        let request = format!("POST {}", url.path());
        let form = action_form(command, device_id);
        let answer = self.call(Method::POST, &url, Some(&form)).await?;
        let receipt = judge_action(&request, answer, form)?;
        tracing::info!(
            status = receipt.status,
            action_id = receipt.vendor_reference.as_deref().unwrap_or(""),
            "MaaS360 accepted the command"
        );
        Ok(receipt)
    }
}

impl Maas360Adapter {
    /// `POST /device-apis/devices/1.0/setCustomAttributeValue/{billingId}`
    /// with the form `deviceId`, `attributeName`, `attributeValue`, answered
    /// as an action. A refusal (`actionStatus` 1) whose description says the
    /// attribute does not exist is the admin's to fix: `ActionNotPermitted`.
    async fn set_custom_attribute(
        &self,
        device: &Device,
        name: &str,
        value: &str,
    ) -> Result<Receipt, AdapterError> {
        let device_id = device.mdm_device_id.trim();
        if device_id.is_empty() {
            return Err(AdapterError::Config(
                "the device has no maas360DeviceID".into(),
            ));
        }
        if name.trim().is_empty() {
            return Err(AdapterError::Config(
                "the risk signal needs the name of a MaaS360 custom attribute".into(),
            ));
        }
        let url = self.url(&[
            "device-apis",
            "devices",
            "1.0",
            "setCustomAttributeValue",
            self.billing_id(),
        ]);
        let request = format!("POST {}", url.path());
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("deviceId", device_id)
            .append_pair("attributeName", name)
            .append_pair("attributeValue", value)
            .finish();
        let answer = self.call(Method::POST, &url, Some(&form)).await?;
        let description = wire::action_answer(&answer.body)
            .filter(|a| answer.status == StatusCode::OK && a.status == Some(1))
            .and_then(|a| a.description);
        match judge_action(&request, answer, form) {
            Err(AdapterError::Rejected { message, .. })
                if description
                    .as_deref()
                    .is_some_and(wire::says_attribute_unknown) =>
            {
                Err(AdapterError::ActionNotPermitted {
                    setting: format!(
                        "create the device custom attribute `{name}` (text) in the MaaS360 portal"
                    ),
                    message,
                })
            }
            other => other,
        }
    }

    /// The value of `name` on one device, from
    /// `GET /device-apis/devices/1.0/identity/{billingId}?deviceId=…`. A
    /// device MaaS360 does not know (its answer is a 400 with no body) holds
    /// nothing.
    async fn custom_attribute_of(
        &self,
        device_id: &str,
        name: &str,
    ) -> Result<Option<String>, AdapterError> {
        let mut url = self.url(&[
            "device-apis",
            "devices",
            "1.0",
            "identity",
            self.billing_id(),
        ]);
        url.query_pairs_mut().append_pair("deviceId", device_id);
        let answer = match self.call(Method::GET, &url, None).await {
            Ok(answer) => answer,
            Err(AdapterError::Rejected { status: 400, .. }) => {
                tracing::debug!(mdm = %self.config.name, device_id, "MaaS360 has no identity for the device (400)");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        wire::identity_attribute(&answer.body, name).map_err(|why| {
            AdapterError::Decode(format!(
                "GET {}: not a MaaS360 device identity ({why}); the answer began: {}",
                url.path(),
                body_excerpt(&answer.body)
            ))
        })
    }
}

/// The wait before repeating a read answered 429, if short enough to wait here.
fn short_wait(headers: &HeaderMap) -> Option<Duration> {
    let wait = retry_after(headers).unwrap_or(DEFAULT_READ_RETRY_WAIT);
    (wait <= MAX_READ_RETRY_WAIT).then_some(wait)
}

/// A command's 2xx answer: only 200 with `actionStatus` 0 counts as sent;
/// `actionStatus` 1 is MaaS360's refusal (permanent: retrying cannot help).
fn judge_action(request: &str, answer: Answer, form: String) -> Result<Receipt, AdapterError> {
    let parsed = wire::action_answer(&answer.body);
    match parsed {
        Some(a) if answer.status == StatusCode::OK && a.status == Some(0) => Ok(Receipt {
            request: request.to_string(),
            request_body: Some(form),
            status: answer.status.as_u16(),
            response_body: Some(answer.body),
            vendor_reference: a.action_id,
        }),
        Some(a) if answer.status == StatusCode::OK && a.status == Some(1) => {
            Err(AdapterError::Rejected {
                status: answer.status.as_u16(),
                message: format!(
                    "{request}: MaaS360 did not execute the action (actionStatus 1): {}",
                    a.description.as_deref().unwrap_or("(no description)")
                ),
            })
        }
        _ => Err(undocumented_answer(
            request,
            answer.status,
            &answer.body,
            "MaaS360's 200 with actionResponse.actionStatus 0",
        )),
    }
}

/// Maps the records of one page, counting (not failing on) those that cannot be mapped.
fn map_page<T>(
    mdm: &str,
    listing: Listing,
    records: Vec<Value>,
    map: fn(&Value) -> Result<T, String>,
) -> Page<T> {
    let mut page = Page::of(Vec::with_capacity(records.len()));
    let mut reasons = BTreeSet::new();
    for record in &records {
        match map(record) {
            Ok(item) => page.items.push(item),
            Err(reason) => {
                page.skipped += 1;
                reasons.insert(reason);
            }
        }
    }
    if page.skipped > 0 {
        let reason = reasons.into_iter().collect::<Vec<_>>().join("; ");
        tracing::warn!(mdm, listing = listing.name(), skipped = page.skipped, reason = %reason, "Skipped MaaS360 records that cannot be mapped");
        page.skip_reason = Some(reason);
    }
    page
}

#[async_trait]
impl MdmAdapter for Maas360Adapter {
    fn kind(&self) -> MdmKind {
        MdmKind::Maas360
    }

    /// Lock, enterprise wipe (selective wipe) and wipe; no Wi-Fi commands
    /// (MaaS360 has no such call: the daemon records those actions skipped),
    /// no groups (the search answer names none), and a user listing. The
    /// serial number is not searchable: a lookup by it finds nothing, and
    /// the next full sync finds the device.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            commands: [
                MdmCommand::Lock,
                MdmCommand::EnterpriseWipe,
                MdmCommand::Wipe,
            ]
            .into_iter()
            .collect(),
            removes_wifi_profile_itself: false,
            groups: false,
            user_listing: true,
        }
    }

    async fn health_check(&self) -> Result<HealthReport, AdapterError> {
        let span = tracing::info_span!("maas360_health_check", mdm = %self.config.name);
        let url = self.listing_url(Listing::Devices, 1, self.config.page_size);
        let page = self.search(&url, Listing::Devices).instrument(span).await?;
        Ok(HealthReport {
            devices_on_first_page: page.records.len(),
        })
    }

    fn devices(&self) -> PageStream<'_, Device> {
        self.paged(Listing::Devices, wire::device, |d| &d.mdm_device_id)
    }

    fn users(&self) -> PageStream<'_, User> {
        self.paged(Listing::Users, wire::user, |u| &u.mdm_user_id)
    }

    /// MaaS360 has device groups, but the device search names none, so the
    /// connector keeps no groups for it.
    fn groups(&self) -> PageStream<'_, Group> {
        futures::stream::empty().boxed()
    }

    async fn lookup_device(&self, id: &DeviceIdentifier) -> Result<Option<Device>, AdapterError> {
        let span =
            tracing::info_span!("maas360_lookup", mdm = %self.config.name, identifier = id.kind());
        self.lookup(id).instrument(span).await
    }

    async fn execute(&self, command: MdmCommand, device: &Device) -> Result<Receipt, AdapterError> {
        let span = tracing::info_span!(
            "maas360_command",
            mdm = %self.config.name,
            device_id = %device.mdm_device_id,
            command = command.as_str()
        );
        self.run_command(command, device).instrument(span).await
    }

    /// Writes the level (`Secured`, `Low`, …) into the device custom
    /// attribute `name` with `setCustomAttributeValue`.
    async fn signal_risk(
        &self,
        device: &Device,
        level: SignalLevel,
        name: &str,
    ) -> Result<Receipt, AdapterError> {
        let span = tracing::info_span!(
            "maas360_signal_risk",
            mdm = %self.config.name,
            device_id = %device.mdm_device_id,
            level = level.as_vendor()
        );
        let receipt = self
            .set_custom_attribute(device, name, level.as_vendor())
            .instrument(span.clone())
            .await?;
        span.in_scope(|| tracing::info!(status = receipt.status, "MaaS360 stored the risk level"));
        Ok(receipt)
    }

    /// One identity request per device.
    fn risk_read_back(&self) -> Option<RiskReadBack> {
        Some(RiskReadBack::PerDevice)
    }

    /// The custom attribute `name` of each device, from its identity, one
    /// request per device, in order. `None`: never written, blank, no level,
    /// or a device MaaS360 no longer knows.
    async fn read_risk(
        &self,
        devices: &[Device],
        name: &str,
    ) -> Result<Vec<Option<SignalLevel>>, AdapterError> {
        let span = tracing::info_span!("maas360_read_risk", mdm = %self.config.name, devices = devices.len());
        async {
            let mut levels = Vec::with_capacity(devices.len());
            for device in devices {
                let id = device.mdm_device_id.trim();
                let value = if id.is_empty() {
                    None
                } else {
                    self.custom_attribute_of(id, name).await?
                };
                levels.push(value.as_deref().and_then(SignalLevel::parse));
            }
            Ok(levels)
        }
        .instrument(span)
        .await
    }

    /// Always empty: no public MaaS360 call lists the custom attribute
    /// definitions of a customer (the identity of a device shows only the
    /// attributes set on it), so a missing attribute shows only when a
    /// write is refused (`ActionNotPermitted` naming it).
    async fn missing_risk_signal(&self, name: &str) -> Result<Vec<String>, AdapterError> {
        let _ = name;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_has_its_action_and_form() {
        assert_eq!(action_name(MdmCommand::Lock), Some("lockDevice"));
        assert_eq!(
            action_name(MdmCommand::EnterpriseWipe),
            Some("selectiveWipeDevice")
        );
        assert_eq!(action_name(MdmCommand::Wipe), Some("wipeDevice"));
        assert_eq!(action_name(MdmCommand::DisconnectWifi), None);
        assert_eq!(action_name(MdmCommand::RemoveWifiProfile), None);
        assert_eq!(action_form(MdmCommand::Lock, "a b&c"), "deviceId=a+b%26c");
        assert_eq!(
            action_form(MdmCommand::Wipe, "d1"),
            "deviceId=d1&notifyMe=No&notifyUser=No"
        );
    }

    #[test]
    fn only_a_200_with_action_status_0_counts_as_sent() {
        let answer = |status: u16, body: &str| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.to_string(),
        };
        let ok = r#"{"actionResponse":{"actionID":"77","actionStatus":0,"description":"done"}}"#;
        let r = judge_action("POST /x", answer(200, ok), "deviceId=d".into()).unwrap();
        assert_eq!(r.vendor_reference.as_deref(), Some("77"));
        assert_eq!(r.request_body.as_deref(), Some("deviceId=d"));
        let e = judge_action("POST /x", answer(202, ok), String::new()).unwrap_err();
        assert_eq!(e.class(), "no_answer", "{e}");
        let refused = r#"{"actionResponse":{"actionStatus":1,"description":"Device is inactive"}}"#;
        let e = judge_action("POST /x", answer(200, refused), String::new()).unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("Device is inactive"), "{e}");
        for body in [
            "<html><title>Sign in</title></html>",
            r#"{"actionResponse":{"actionStatus":2}}"#,
        ] {
            let e = judge_action("POST /x", answer(200, body), String::new()).unwrap_err();
            assert_eq!(e.class(), "no_answer", "{body}: {e}");
        }
    }

    #[test]
    fn a_serial_has_no_lookup_filter_and_a_udid_is_tried_in_both_cases() {
        assert!(Maas360Adapter::lookup_filter(&DeviceIdentifier::Serial("X".into())).is_none());
        let (filter, values) =
            Maas360Adapter::lookup_filter(&DeviceIdentifier::udid("00008030-001a").unwrap())
                .unwrap();
        assert_eq!(filter, "udid");
        assert_eq!(values, ["00008030-001A", "00008030-001a"]);
        let (_, values) =
            Maas360Adapter::lookup_filter(&DeviceIdentifier::udid("12345").unwrap()).unwrap();
        assert_eq!(
            values,
            ["12345"],
            "no second try when the case cannot differ"
        );
    }

    #[test]
    fn a_read_waits_out_a_short_retry_after_only() {
        let mut h = HeaderMap::new();
        assert_eq!(short_wait(&h), Some(DEFAULT_READ_RETRY_WAIT));
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("5"));
        assert_eq!(short_wait(&h), Some(Duration::from_secs(5)));
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("6"));
        assert_eq!(short_wait(&h), None);
    }
}
