//! `SotiAdapter`: the MobiControl REST calls behind [`MdmAdapter`].
//!
//! Every API call goes through [`SotiAdapter::call`], which adds the bearer
//! token, retries exactly once after a 401 with a new token, and turns
//! transport failures and error statuses into [`AdapterError`] with the
//! `mtd_adapter::http` helpers, keeping SOTI's `ErrorCode`/`ErrorMessage`.
//!
//! A command counts as sent only on SOTI's documented answer, 204 with no
//! body; any other 2xx, or a 502/504, is `NoAnswer` (the MDM may have acted).
//! A risk level (a device custom attribute, `PUT …/customAttributes`) counts
//! as written only on the spec's 200 that is not a page; being a `PUT` of a
//! value it is safe to repeat, so its 502/504 is `Unavailable` like a read's.
//! The device listing is guarded: SOTI announces no total, so only a repeated
//! page can show a server that ignores `skip`.

use crate::auth::{CachedToken, TokenCache};
use crate::wire::{
    attribute_is_defined, attribute_value, map_device, map_group, soti_error_message, WireToken,
};
use crate::SotiConfig;
use async_trait::async_trait;
use base64::Engine as _;
use futures::stream::{self, StreamExt};
use mtd_adapter::http::{
    body_excerpt, build_client, classify_request_error, classify_send_error,
    error_for_request_status, error_for_status, is_html_page, read_body, undocumented_answer,
};
use mtd_adapter::{
    guard_listing, AdapterError, Capabilities, Device, DeviceIdentifier, Group, HealthReport,
    MdmAdapter, MdmCommand, MdmKind, Page, PageStream, Receipt, RiskReadBack, Secret, SignalLevel,
    User,
};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// A token lifetime we believe at most (a day): bounds the `Instant`
/// arithmetic against a nonsensical `expires_in`.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Assumed when the token answer has no `expires_in`: short, so a wrong guess
/// costs one extra token request rather than a string of 401s.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// The MobiControl adapter. Cheap to share (`Arc<dyn MdmAdapter>`): one HTTP
/// client and one token for all callers.
#[derive(Debug)]
pub struct SotiAdapter {
    config: SotiConfig,
    client: reqwest::Client,
    token: TokenCache,
}

/// A successful answer: status and body (read whole; SOTI answers are pages).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: String,
}

impl SotiAdapter {
    /// Validates the config and builds the HTTP client (rustls, the per-MDM
    /// `ca_cert`, the timeouts). Sends nothing: the first call logs in.
    pub fn new(config: SotiConfig) -> Result<Self, AdapterError> {
        config.validate()?;
        let client = build_client(&config.http)?;
        Ok(SotiAdapter {
            config,
            client,
            token: TokenCache::default(),
        })
    }

    /// The integration's config (the name for logs, the URL for messages).
    pub fn config(&self) -> &SotiConfig {
        &self.config
    }

    /// `{base_url}/api/{segments…}`, each segment percent-encoded as a path segment.
    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.base_url.clone();
        url.path_segments_mut()
            // validate() refused cannot-be-a-base URLs, so there are segments.
            .expect("base_url is a base URL")
            .pop_if_empty()
            .push("api")
            .extend(segments);
        url
    }

    /// Asks the token endpoint for a new access token (OAuth2 password grant,
    /// the API client's id and secret in a Basic header).
    async fn request_token(&self) -> Result<CachedToken, AdapterError> {
        let creds = &self.config.credentials;
        let url = self.api_url(&["token"]);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            creds.client_id,
            creds.client_secret.expose()
        ));
        let mut auth = HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| {
            AdapterError::Config("client_id holds characters a header cannot carry".into())
        })?;
        auth.set_sensitive(true);
        tracing::debug!(mdm = %self.config.name, "Requesting a MobiControl access token");
        let resp = self
            .client
            .post(url)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .form(&[
                ("grant_type", "password"),
                ("username", creds.username.as_str()),
                ("password", creds.password.expose()),
            ])
            .send()
            .await
            .map_err(|e| classify_send_error(&e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        // Classified as a read: a token request changes nothing at the MDM.
        let body = read_body(resp, &Method::GET).await?;
        if !status.is_success() {
            return Err(token_error(status, &headers, &body));
        }
        // Never echo this body: it holds the token.
        let answer: WireToken = serde_json::from_str(&body).map_err(|e| {
            AdapterError::Decode(format!(
                "the token answer is not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let value = answer
            .access_token
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| AdapterError::Decode("the token answer has no access_token".into()))?;
        let lifetime = answer
            .expires_in
            .as_ref()
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME)
            .min(MAX_TOKEN_LIFETIME);
        Ok(CachedToken::new(
            Secret::new(value),
            lifetime,
            Instant::now(),
        ))
    }

    async fn access_token(&self) -> Result<Secret, AdapterError> {
        self.token.get_or_fetch(|| self.request_token()).await
    }

    /// One API call with the bearer token. A 401 drops the token and repeats
    /// the call once with a new one (tokens can be revoked or expire early);
    /// a second 401 is the answer.
    async fn call(
        &self,
        method: Method,
        url: &Url,
        body: Option<&str>,
    ) -> Result<Answer, AdapterError> {
        let what = format!("{method} {}", url.path());
        let mut retried = false;
        loop {
            let token = self.access_token().await?;
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose())
                .header(ACCEPT, "application/json");
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let classify = |e: reqwest::Error| classify_request_error(&method, &e);
            let resp = request.send().await.map_err(classify)?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !retried {
                tracing::debug!(mdm = %self.config.name, request = %what, "MobiControl refused the token; asking for a new one");
                self.token.invalidate(&token).await;
                retried = true;
                continue;
            }
            let headers = resp.headers().clone();
            let text = read_body(resp, &method).await?;
            if !status.is_success() {
                let said = soti_error_message(&text).unwrap_or_else(|| body_excerpt(&text));
                return Err(error_for_request_status(
                    &method,
                    status,
                    &headers,
                    format!("{what}: {said}"),
                ));
            }
            return Ok(Answer { status, body: text });
        }
    }

    /// `GET` and parse a JSON array of records (`null` counts as empty).
    async fn get_records(&self, url: &Url) -> Result<Vec<serde_json::Value>, AdapterError> {
        let answer = self.call(Method::GET, url, None).await?;
        let records: Option<Vec<serde_json::Value>> = serde_json::from_str(&answer.body)
            .map_err(|e| decode_error(url, "a JSON array", &e, &answer.body))?;
        Ok(records.unwrap_or_default())
    }

    /// One page of `GET /api/devices?skip=&take=`, as raw records.
    async fn device_page(
        &self,
        skip: u64,
        take: u32,
    ) -> Result<Vec<serde_json::Value>, AdapterError> {
        let mut url = self.api_url(&["devices"]);
        url.query_pairs_mut()
            .append_pair("skip", &skip.to_string())
            .append_pair("take", &take.to_string());
        self.get_records(&url).await
    }

    /// `GET /api/devices/{id}` (also `mac:{MAC}`): 404 means unknown.
    async fn get_device(&self, id: &str) -> Result<Option<Device>, AdapterError> {
        let url = self.api_url(&["devices", id]);
        let answer = match self.call(Method::GET, &url, None).await {
            Ok(a) => a,
            Err(AdapterError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let record: serde_json::Value = serde_json::from_str(&answer.body)
            .map_err(|e| decode_error(&url, "a device object", &e, &answer.body))?;
        if record.is_null() {
            return Ok(None);
        }
        map_device(record)
            .map(Some)
            .map_err(|why| AdapterError::Decode(format!("GET {}: {why}", url.path())))
    }

    /// `GET /api/devices/search?filter=…&skip=0&take=2` with a filter of the
    /// documented form `Property='value'`, double URL-encoded as SOTI requires.
    /// Two hits are an ambiguous identifier, not a guess.
    async fn search_one(
        &self,
        property: &str,
        value: &str,
    ) -> Result<Option<Device>, AdapterError> {
        let mut url = self.api_url(&["devices", "search"]);
        let filter = format!("{property}='{}'", value.replace('\'', "''"));
        url.set_query(Some(&format!(
            "filter={}&skip=0&take=2",
            double_encode(&filter)
        )));
        let mut records = self.get_records(&url).await?;
        match records.len() {
            0 => Ok(None),
            1 => map_device(records.remove(0))
                .map(Some)
                .map_err(|why| AdapterError::Decode(format!("GET {}: {why}", url.path()))),
            n => Err(AdapterError::Rejected {
                status: 200,
                message: format!(
                    "{property} {value} matches {n} or more devices at MobiControl; look the device up by another identifier"
                ),
            }),
        }
    }

    /// `POST` one command and keep the receipt. Only SOTI's documented
    /// answer, 204 with no body, counts as sent (a 2xx sign-in page does not).
    async fn post_command(&self, url: Url, body: String) -> Result<Receipt, AdapterError> {
        let answer = self.call(Method::POST, &url, Some(&body)).await?;
        let request = format!("POST {}", url.path());
        if answer.status != StatusCode::NO_CONTENT || !answer.body.trim().is_empty() {
            return Err(undocumented_answer(
                &request,
                answer.status,
                &answer.body,
                "MobiControl's 204 with no body",
            ));
        }
        Ok(Receipt {
            request,
            request_body: Some(body),
            status: answer.status.as_u16(),
            response_body: (!answer.body.trim().is_empty()).then_some(answer.body),
            vendor_reference: None,
        })
    }
}

impl SotiAdapter {
    /// `PUT /api/devices/{id}/customAttributes` with one attribute (the
    /// spec's `CustomAttributeParameters`). Only the spec's 200 counts as
    /// written (its body is not described: anything but a page is taken); a
    /// 400 or 422 for an attribute the server does not define is the admin's
    /// to fix, so it asks the definitions before it says so.
    async fn put_custom_attribute(
        &self,
        id: &str,
        name: &str,
        value: &str,
    ) -> Result<Receipt, AdapterError> {
        let url = self.api_url(&["devices", id, "customAttributes"]);
        let request = format!("PUT {}", url.path());
        let body = serde_json::json!({
            "Attributes": [{ "AttributeName": name, "AttributeValue": value }]
        })
        .to_string();
        let answer = match self.call(Method::PUT, &url, Some(&body)).await {
            Ok(answer) => answer,
            Err(AdapterError::Rejected { status, message }) if matches!(status, 400 | 422) => {
                return Err(self.refused_attribute(name, status, message).await)
            }
            Err(e) => return Err(e),
        };
        if answer.status != StatusCode::OK || is_html_page(&answer.body) {
            return Err(undocumented_answer(
                &request,
                answer.status,
                &answer.body,
                "MobiControl's 200",
            ));
        }
        Ok(Receipt {
            request,
            request_body: Some(body),
            status: answer.status.as_u16(),
            response_body: (!answer.body.trim().is_empty()).then_some(answer.body),
            vendor_reference: None,
        })
    }

    /// The error for a 400/422 answer to a custom attribute write: a
    /// permanent refusal naming what to create when the attribute is not
    /// defined at MobiControl, else the refusal as it came (also when the
    /// definitions cannot be read: nothing is guessed).
    async fn refused_attribute(&self, name: &str, status: u16, message: String) -> AdapterError {
        match self.custom_attribute_defined(name).await {
            Ok(false) => AdapterError::ActionNotPermitted {
                setting: format!(
                    "create the device custom attribute `{name}` (text) in MobiControl"
                ),
                message,
            },
            Ok(true) => AdapterError::Rejected { status, message },
            Err(e) => {
                tracing::debug!(mdm = %self.config.name, error = %e, "Could not read MobiControl's custom attribute definitions");
                AdapterError::Rejected { status, message }
            }
        }
    }

    /// Whether `GET /api/customattributes` lists a definition named `name`.
    async fn custom_attribute_defined(&self, name: &str) -> Result<bool, AdapterError> {
        let url = self.api_url(&["customattributes"]);
        let records = self.get_records(&url).await?;
        Ok(attribute_is_defined(&records, name))
    }

    /// The value of `name` on one device, from
    /// `GET /api/devices/{id}/customAttributes` (the spec's
    /// `CustomAttributeInfo` list). A device MobiControl does not know
    /// (404) holds nothing.
    async fn custom_attribute_of(
        &self,
        id: &str,
        name: &str,
    ) -> Result<Option<String>, AdapterError> {
        let url = self.api_url(&["devices", id, "customAttributes"]);
        match self.get_records(&url).await {
            Ok(records) => Ok(attribute_value(&records, name)),
            Err(AdapterError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The token endpoint's refusals. OAuth2 says 400 `invalid_grant` for a wrong
/// user/password and `invalid_client` for a wrong client; SOTI documents
/// neither, so those and 401 all mean "the credentials were refused".
fn token_error(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> AdapterError {
    let oauth_error = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string));
    let refused = status == StatusCode::UNAUTHORIZED
        || (status == StatusCode::BAD_REQUEST
            && matches!(
                oauth_error.as_deref(),
                Some("invalid_grant" | "invalid_client" | "unauthorized_client")
            ));
    if refused {
        return AdapterError::Unauthorized(format!(
            "MobiControl refused the credentials at POST /api/token ({}): check client_id/client_secret and username/password",
            oauth_error.as_deref().unwrap_or("401")
        ));
    }
    let said = oauth_error
        .or_else(|| soti_error_message(body))
        .unwrap_or_else(|| body_excerpt(body));
    error_for_status(status, headers, format!("POST /api/token: {said}"))
}

fn decode_error(url: &Url, expected: &str, e: &serde_json::Error, body: &str) -> AdapterError {
    AdapterError::Decode(format!(
        "GET {}: expected {expected} ({e}); the answer began: {}",
        url.path(),
        body_excerpt(body)
    ))
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a space
/// becomes `%20`, as in SOTI's example `%255C%255CMy%2520Company`).
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// SOTI's "double encoding" of query values: the server decodes twice.
pub(crate) fn double_encode(s: &str) -> String {
    encode_component(&encode_component(s))
}

/// `LockAction`: `AutogenerateNewPasscode` is required; no new passcode is
/// generated (the user's own passcode unlocks the device again).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct LockAction {
    action: &'static str,
    autogenerate_new_passcode: bool,
}

/// `UnenrollAction`: `RevokeCertificates` is required; revoked, so a device
/// that lost trust keeps no certificate issued by the organisation.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct UnenrollAction {
    action: &'static str,
    revoke_certificates: bool,
}

/// `WipeAction`: all eight required fields, each set to its least surprising
/// value (see [`wipe_action`]). `Pin` and `RemoteWipeType` are optional and
/// not sent.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct WipeAction {
    action: &'static str,
    wipe_sd_card: bool,
    bypass_factory_reset_protection: bool,
    revoke_certificates: bool,
    request_requires_network_tether: bool,
    obliteration_behavior: &'static str,
    preserve_data_plan: bool,
    disallow_proximity_setup: bool,
    send_by: &'static str,
}

/// The factory reset asked for and nothing beyond it: the SD card (often the
/// user's own) is left alone; factory-reset protection stays on so a thief
/// cannot reuse the device; certificates are revoked; the cellular plan is
/// kept; Apple's obliteration behaviour is its `Default`; the command goes
/// through the MobiControl agent (`SendBy: MobiControl`), not SMS.
fn wipe_action() -> WipeAction {
    WipeAction {
        action: "Wipe",
        wipe_sd_card: false,
        bypass_factory_reset_protection: false,
        revoke_certificates: true,
        request_requires_network_tether: false,
        obliteration_behavior: "Default",
        preserve_data_plan: true,
        disallow_proximity_setup: false,
        send_by: "MobiControl",
    }
}

/// The JSON body of each device action, exactly as SOTI's spec defines it.
fn action_body(command: MdmCommand) -> Option<String> {
    let json = match command {
        MdmCommand::Lock => serde_json::to_string(&LockAction {
            action: "Lock",
            autogenerate_new_passcode: false,
        }),
        MdmCommand::EnterpriseWipe => serde_json::to_string(&UnenrollAction {
            action: "Unenroll",
            revoke_certificates: true,
        }),
        MdmCommand::Wipe => serde_json::to_string(&wipe_action()),
        MdmCommand::DisconnectWifi | MdmCommand::RemoveWifiProfile => return None,
    };
    // Serialising these plain structs cannot fail.
    Some(json.expect("action bodies serialise"))
}

#[async_trait]
impl MdmAdapter for SotiAdapter {
    fn kind(&self) -> MdmKind {
        MdmKind::Soti
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            commands: BTreeSet::from([
                MdmCommand::Lock,
                MdmCommand::DisconnectWifi,
                MdmCommand::RemoveWifiProfile,
                MdmCommand::EnterpriseWipe,
                MdmCommand::Wipe,
            ]),
            removes_wifi_profile_itself: false,
            groups: true,
            user_listing: false,
        }
    }

    #[tracing::instrument(skip_all, fields(mdm = %self.config.name))]
    async fn health_check(&self) -> Result<HealthReport, AdapterError> {
        let records = self.device_page(0, self.config.page_size).await?;
        Ok(HealthReport {
            devices_on_first_page: records.len(),
        })
    }

    fn devices(&self) -> PageStream<'_, Device> {
        let take = self.config.page_size;
        // State: the next `skip`, or `None` once a short page said it was the last.
        // SOTI announces no total: only a repeated page can show that the
        // server ignores `skip` (and would answer full pages forever).
        let pages = stream::try_unfold(Some(0u64), move |next| async move {
            let Some(skip) = next else {
                return Ok(None);
            };
            let records = self.device_page(skip, take).await?;
            if records.is_empty() {
                // The end (an empty listing, or after a last page exactly `take` long).
                return Ok(None);
            }
            let read = records.len() as u64;
            let next = (read >= u64::from(take)).then_some(skip + read);
            Ok(Some((map_page(records, map_device), next)))
        })
        .boxed();
        guard_listing(pages, "MobiControl devices", |d| &d.mdm_device_id)
    }

    fn users(&self) -> PageStream<'_, User> {
        // MobiControl's users API lists console administrators; device users
        // come embedded in each device's `DeviceUserInfo`.
        stream::empty().boxed()
    }

    fn groups(&self) -> PageStream<'_, Group> {
        stream::once(async move {
            let url = self.api_url(&["devicegroups"]);
            let records = self.get_records(&url).await?;
            Ok(map_page(records, map_group))
        })
        .boxed()
    }

    #[tracing::instrument(skip_all, fields(mdm = %self.config.name, id = %id))]
    async fn lookup_device(&self, id: &DeviceIdentifier) -> Result<Option<Device>, AdapterError> {
        match id {
            DeviceIdentifier::MdmDeviceId(v) => self.get_device(v).await,
            // An iOS device's DeviceId is its UDID, in lower case.
            DeviceIdentifier::Udid(v) => self.get_device(&v.to_ascii_lowercase()).await,
            // The spec: GET /devices/{deviceId} takes `mac:` (12 upper-case hex
            // digits here; SOTI does not document the form further).
            DeviceIdentifier::Mac(v) => {
                self.get_device(&format!("mac:{}", v.to_ascii_uppercase()))
                    .await
            }
            // `imei_meid_esn:` is documented for actions only, so a read searches.
            DeviceIdentifier::Imei(v) => self.search_one("IMEI_MEID_ESN", v).await,
            // iOS keeps the serial in ManufacturerSerialNumber, Android+ in
            // HardwareSerialNumber; one simple filter each, as documented.
            DeviceIdentifier::Serial(v) => {
                match self.search_one("HardwareSerialNumber", v).await? {
                    Some(d) => Ok(Some(d)),
                    None => self.search_one("ManufacturerSerialNumber", v).await,
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(mdm = %self.config.name, device_id = %device.mdm_device_id, command = %command))]
    async fn execute(&self, command: MdmCommand, device: &Device) -> Result<Receipt, AdapterError> {
        let id = device.mdm_device_id.as_str();
        if id.trim().is_empty() {
            return Err(AdapterError::Config(
                "the device has no MobiControl DeviceId".into(),
            ));
        }
        let (url, body) = match command {
            MdmCommand::DisconnectWifi | MdmCommand::RemoveWifiProfile => {
                let profile = self.config.wifi_profile_id().ok_or_else(|| {
                    AdapterError::Config(format!(
                        "SOTI `{}` has no wifi_disconnect_profile_id: set it to the reference id of the Wi-Fi profile that disconnects a device",
                        self.config.name
                    ))
                })?;
                let verb = if command == MdmCommand::DisconnectWifi {
                    "Install"
                } else {
                    "Revoke"
                };
                // The body is a bare JSON string (`DeviceProfileAction`).
                (
                    self.api_url(&["devices", id, "profiles", profile, "actions"]),
                    serde_json::Value::from(verb).to_string(),
                )
            }
            _ => (
                self.api_url(&["devices", id, "actions"]),
                action_body(command).expect("device actions have a body"),
            ),
        };
        let receipt = self.post_command(url, body).await?;
        tracing::info!(status = receipt.status, "MobiControl accepted the command");
        Ok(receipt)
    }

    /// Writes the level (`Secured`, `Low`, …) into the device custom
    /// attribute `name`: `PUT /api/devices/{id}/customAttributes` with
    /// `{"Attributes":[{"AttributeName":name,"AttributeValue":"High"}]}`.
    #[tracing::instrument(skip_all, fields(mdm = %self.config.name, device_id = %device.mdm_device_id, level = level.as_vendor()))]
    async fn signal_risk(
        &self,
        device: &Device,
        level: SignalLevel,
        name: &str,
    ) -> Result<Receipt, AdapterError> {
        let id = device.mdm_device_id.as_str();
        if id.trim().is_empty() {
            return Err(AdapterError::Config(
                "the device has no MobiControl DeviceId".into(),
            ));
        }
        if name.trim().is_empty() {
            return Err(AdapterError::Config(
                "the risk signal needs the name of a MobiControl custom attribute".into(),
            ));
        }
        let receipt = self
            .put_custom_attribute(id, name, level.as_vendor())
            .await?;
        tracing::info!(status = receipt.status, "MobiControl stored the risk level");
        Ok(receipt)
    }

    /// One `GET /api/devices/{id}/customAttributes` per device.
    fn risk_read_back(&self) -> Option<RiskReadBack> {
        Some(RiskReadBack::PerDevice)
    }

    /// The value of the custom attribute `name` on each device, one request
    /// per device, in order. `None`: never written, blank, no level, or a
    /// device MobiControl no longer knows.
    #[tracing::instrument(skip_all, fields(mdm = %self.config.name, devices = devices.len()))]
    async fn read_risk(
        &self,
        devices: &[Device],
        name: &str,
    ) -> Result<Vec<Option<SignalLevel>>, AdapterError> {
        let mut levels = Vec::with_capacity(devices.len());
        for device in devices {
            let id = device.mdm_device_id.as_str();
            let value = if id.trim().is_empty() {
                None
            } else {
                self.custom_attribute_of(id, name).await?
            };
            levels.push(value.as_deref().and_then(SignalLevel::parse));
        }
        Ok(levels)
    }

    /// `[name]` when `GET /api/customattributes` has no definition of it.
    #[tracing::instrument(skip_all, fields(mdm = %self.config.name))]
    async fn missing_risk_signal(&self, name: &str) -> Result<Vec<String>, AdapterError> {
        Ok(if self.custom_attribute_defined(name).await? {
            Vec::new()
        } else {
            vec![name.to_string()]
        })
    }
}

/// Maps one page of records, counting (not failing on) the ones that do not map.
fn map_page<T>(
    records: Vec<serde_json::Value>,
    map: fn(serde_json::Value) -> Result<T, String>,
) -> Page<T> {
    let mut items = Vec::with_capacity(records.len());
    let mut skipped = 0u64;
    let mut reasons: Vec<String> = Vec::new();
    for record in records {
        match map(record) {
            Ok(item) => items.push(item),
            Err(why) => {
                skipped += 1;
                if !reasons.contains(&why) && reasons.len() < 5 {
                    reasons.push(why);
                }
            }
        }
    }
    if skipped > 0 {
        tracing::warn!(skipped, reasons = %reasons.join("; "), "Skipped MobiControl records that cannot be mapped");
    }
    Page {
        items,
        skipped,
        skip_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        total: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_double_encoded_as_soti_shows() {
        assert_eq!(double_encode("\\\\My Company"), "%255C%255CMy%2520Company");
        assert_eq!(
            double_encode("HardwareSerialNumber='R58M1'"),
            "HardwareSerialNumber%253D%2527R58M1%2527"
        );
    }

    #[test]
    fn the_lock_body_carries_the_required_field() {
        assert_eq!(
            action_body(MdmCommand::Lock).unwrap(),
            r#"{"Action":"Lock","AutogenerateNewPasscode":false}"#
        );
        assert_eq!(
            action_body(MdmCommand::EnterpriseWipe).unwrap(),
            r#"{"Action":"Unenroll","RevokeCertificates":true}"#
        );
        assert_eq!(action_body(MdmCommand::DisconnectWifi), None);
    }

    #[test]
    fn a_page_counts_unmappable_records_with_their_reason() {
        let page = map_page(
            vec![
                serde_json::json!({"DeviceId": "a"}),
                serde_json::json!({"Kind": "Ios"}),
                serde_json::json!({"Kind": "AndroidPlus"}),
            ],
            map_device,
        );
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.skipped, 2);
        assert_eq!(
            page.skip_reason.as_deref(),
            Some("device record without a DeviceId")
        );
    }
}
