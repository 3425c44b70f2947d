//! [`BcdmAdapter`]: signed requests, paging, lookups, actions and the mapping
//! of BCDM's answers to [`AdapterError`].
//!
//! Every request goes through [`BcdmAdapter::send`], which waits for the
//! client-side limiter, then signs the final URL and body, so no request can
//! leave unsigned or unpaced.
//!
//! An action counts as sent only on BCDM's documented 202 with a
//! `request_id`; any other 2xx, or a 502/504, is `NoAnswer` (it may have
//! been acted on). A risk level counts as written only on the documented
//! 204; being a `PUT` of a value, it is safe to repeat, so its 502/504 is
//! `Unavailable` like a read's.

use crate::limiter::RateLimiter;
use crate::signature::{
    self, ACCESS_KEY_HEADER, DM_CODE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use crate::wire::{self, ActionAccepted, DevicesEnvelope, ErrorBody, UsersEnvelope, WireDevice};
use crate::BcdmConfig;
use async_trait::async_trait;
use futures::StreamExt;
use mtd_adapter::http::{
    body_excerpt, build_client, classify_request_error, error_for_request_status, read_body,
    undocumented_answer,
};
use mtd_adapter::{
    guard_listing, normalize_imei, normalize_mac, normalize_serial, normalize_udid, AdapterError,
    Capabilities, Device, DeviceIdentifier, Group, HealthReport, MdmAdapter, MdmCommand, MdmKind,
    Page, PageStream, Receipt, RiskReadBack, SignalLevel, User,
};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Duration;
use tracing::instrument;
use url::Url;

/// The limiter's window: the server's second, plus 10 ms for its clock's
/// granularity. The limiter counts each request until its answer is in, so
/// the network delay needs no slack here (see `limiter`).
const LIMIT_WINDOW: Duration = Duration::from_millis(1010);

/// The longest wait before a rate-limited read is repeated; a longer
/// `Retry-After` is the caller's to honour (the error carries it).
const MAX_READ_RETRY_WAIT: Duration = Duration::from_secs(5);

/// A BCDM integration (see the crate docs for the API it speaks).
#[derive(Debug)]
pub struct BcdmAdapter {
    config: BcdmConfig,
    client: reqwest::Client,
    /// Shared by every caller of this adapter (sync streams, lookups, actions).
    limiter: RateLimiter,
}

/// An answer as received: status, headers and the body as text.
struct Answer {
    /// The request's method: a POST is a command (see `error_from`).
    method: Method,
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl BcdmAdapter {
    /// Checks the config and builds the HTTP client; makes no request.
    pub fn new(config: BcdmConfig) -> Result<Self, AdapterError> {
        config.validate()?;
        let client = build_client(&config.http)?;
        let limiter = RateLimiter::new(config.max_requests_per_second, LIMIT_WINDOW);
        Ok(BcdmAdapter {
            config,
            client,
            limiter,
        })
    }

    /// The console setting that permits `command`, as the BCDM console names it.
    /// `None` for commands BCDM does not offer.
    pub fn console_setting(command: MdmCommand) -> Option<&'static str> {
        match command {
            MdmCommand::Lock => Some("Remote lock"),
            MdmCommand::DisconnectWifi => Some("Disconnect Wi-Fi"),
            MdmCommand::EnterpriseWipe => Some("Enterprise Wipe (delete device registration)"),
            MdmCommand::Wipe => Some("Remote Wipe"),
            MdmCommand::RemoveWifiProfile => None,
        }
    }

    /// The `action` value BCDM expects for `command`.
    fn action_name(command: MdmCommand) -> Option<&'static str> {
        match command {
            MdmCommand::Lock => Some("lock"),
            MdmCommand::DisconnectWifi => Some("disconnect_wifi"),
            MdmCommand::EnterpriseWipe => Some("enterprise_wipe"),
            MdmCommand::Wipe => Some("remote_wipe"),
            MdmCommand::RemoveWifiProfile => None,
        }
    }

    /// `{base_url}/api/v1/{segments…}?{query}`. Segments are percent-encoded
    /// one by one, so a device id cannot change the path's shape.
    fn endpoint(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.config.base_url.clone();
        {
            // `validate` has rejected URLs that cannot be a base.
            let mut path = url
                .path_segments_mut()
                .expect("the BCDM url was checked to be a base URL");
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one signed request after the limiter lets it go; its slot is
    /// held until the answer's head is in (or the request failed).
    ///
    /// The timestamp is taken after the wait, so a queued request is never
    /// signed with a time the server could find stale. The target that is
    /// signed comes from the very `Url` that is sent.
    async fn send(&self, method: Method, url: Url, body: Vec<u8>) -> Result<Answer, AdapterError> {
        let slot = self.limiter.acquire().await;
        let credentials = &self.config.credentials;
        let target = signature::request_target(&url);
        let timestamp = chrono::Utc::now().timestamp();
        let sig = signature::sign(
            credentials.secret_key.expose().as_bytes(),
            method.as_str(),
            &target,
            timestamp,
            &body,
        );
        let mut request = self
            .client
            .request(method.clone(), url)
            .header(ACCESS_KEY_HEADER, credentials.access_key.as_str())
            .header(DM_CODE_HEADER, credentials.dm_code.as_str())
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, sig)
            .header(ACCEPT, "application/json");
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        tracing::trace!(%method, target = %target, "Sending a signed BCDM request.");
        let classify = |e: reqwest::Error| classify_request_error(&method, &e);
        let response = request.send().await.map_err(classify)?;
        drop(slot);
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_body(response, &method).await?;
        Ok(Answer {
            method,
            status,
            headers,
            body,
        })
    }

    /// A signed GET whose 2xx answer is decoded as `T`.
    async fn get_json<T: DeserializeOwned>(
        &self,
        url: Url,
        what: &str,
    ) -> Result<Result<T, Answer>, AdapterError> {
        let mut answer = self.send(Method::GET, url.clone(), Vec::new()).await?;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            // Our pacing keeps under the limit as we send; arrivals jitter by
            // the network delay, so a busy host can still land an eleventh
            // request in the server's second. A read is safe to repeat: once,
            // after the wait the server asks for (bounded), so one stray 429
            // does not fail a whole listing.
            let wait = mtd_adapter::http::retry_after(&answer.headers)
                .unwrap_or(Duration::from_secs(1))
                .min(MAX_READ_RETRY_WAIT);
            tracing::debug!(mdm = %self.config.name, wait_ms = wait.as_millis() as u64, "BCDM rate-limited a read; repeating it once");
            tokio::time::sleep(wait).await;
            answer = self.send(Method::GET, url, Vec::new()).await?;
        }
        if !answer.status.is_success() {
            return Ok(Err(answer));
        }
        decode(&answer, what).map(Ok)
    }

    async fn devices_page(&self, offset: u64) -> Result<DevicesEnvelope, AdapterError> {
        let url = self.endpoint(&["devices"], &self.paging(offset));
        self.get_json(url, "the BCDM device list")
            .await?
            .map_err(|a| error_from(&a, None))
    }

    async fn users_page(&self, offset: u64) -> Result<UsersEnvelope, AdapterError> {
        let url = self.endpoint(&["users"], &self.paging(offset));
        self.get_json(url, "the BCDM user list")
            .await?
            .map_err(|a| error_from(&a, None))
    }

    fn paging(&self, offset: u64) -> [(&'static str, String); 2] {
        [
            ("offset", offset.to_string()),
            ("limit", self.config.page_size.to_string()),
        ]
    }

    /// `GET /api/v1/devices/{device_id}`: the bare device, 404 when unknown.
    async fn device_by_id(&self, device_id: &str) -> Result<Option<WireDevice>, AdapterError> {
        let url = self.endpoint(&["devices", device_id], &[]);
        match self.get_json(url, "the BCDM device").await? {
            Ok(device) => Ok(Some(device)),
            Err(answer) if answer.status == StatusCode::NOT_FOUND => Ok(None),
            Err(answer) => Err(error_from(&answer, None)),
        }
    }

    /// `GET /api/v1/devices?{param}={value}`: the envelope with 0 or 1 device.
    /// Should it hold more, the one whose identifier matches is taken.
    async fn device_by_query(
        &self,
        id: &DeviceIdentifier,
        param: &'static str,
        value: String,
    ) -> Result<Option<WireDevice>, AdapterError> {
        let url = self.endpoint(&["devices"], &[(param, value)]);
        let envelope: DevicesEnvelope = self
            .get_json(url, "the BCDM device lookup")
            .await?
            .map_err(|a| error_from(&a, None))?;
        let mut devices = envelope.devices;
        let pick = devices
            .iter()
            .position(|d| identifier_matches(d, id))
            .unwrap_or(0);
        Ok((!devices.is_empty()).then(|| devices.swap_remove(pick)))
    }
}

/// Whether `device` carries `id` (compared in normal form).
fn identifier_matches(device: &WireDevice, id: &DeviceIdentifier) -> bool {
    let same = |raw: &Option<String>, norm: fn(&str) -> Option<String>| {
        raw.as_deref().and_then(norm).as_deref() == norm(id.value()).as_deref()
    };
    match id {
        DeviceIdentifier::MdmDeviceId(v) => device.device_id == *v,
        DeviceIdentifier::Udid(_) => same(&device.udid, normalize_udid),
        DeviceIdentifier::Serial(_) => same(&device.serial_number, normalize_serial),
        DeviceIdentifier::Imei(_) => same(&device.imei, normalize_imei),
        DeviceIdentifier::Mac(_) => same(&device.wifi_mac, normalize_mac),
    }
}

/// Decodes a 2xx body; an HTML page or broken JSON is a [`AdapterError::Decode`].
fn decode<T: DeserializeOwned>(answer: &Answer, what: &str) -> Result<T, AdapterError> {
    serde_json::from_str(&answer.body).map_err(|e| {
        AdapterError::Decode(format!(
            "{what} is not the expected JSON ({e}); the body was: {}",
            body_excerpt(&answer.body)
        ))
    })
}

/// Maps a non-2xx answer. `setting` is the console setting of the action being
/// sent, if any: only an action's 403 `action_not_permitted` names one.
fn error_from(answer: &Answer, setting: Option<&'static str>) -> AdapterError {
    let parsed: Option<ErrorBody> = serde_json::from_str(&answer.body).ok();
    let (code, said) = match parsed {
        Some(body) if body.error.is_some() || body.message.is_some() => {
            let said = match (&body.error, &body.message) {
                (Some(e), Some(m)) => format!("{e}: {m}"),
                (Some(e), None) => e.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => unreachable!("one of them is set"),
            };
            (body.error.unwrap_or_default(), said)
        }
        _ => (String::new(), body_excerpt(&answer.body)),
    };
    match (answer.status.as_u16(), code.as_str()) {
        (401, "stale_request") => AdapterError::Unauthorized(format!(
            "clock skew: the BCDM server says the request timestamp is stale; \
             check this host's clock ({said})"
        )),
        (401, _) => AdapterError::Unauthorized(format!(
            "the BCDM server refused the access key or the signature: \
             check access_key and secret_key ({said})"
        )),
        (403, "action_not_permitted") => match setting {
            Some(setting) => AdapterError::ActionNotPermitted {
                setting: setting.to_string(),
                message: said,
            },
            None => AdapterError::Forbidden(said),
        },
        (403, "forbidden") => AdapterError::Forbidden(format!(
            "DM code does not match the access key: check dm_code ({said})"
        )),
        _ => error_for_request_status(&answer.method, answer.status, &answer.headers, said),
    }
}

#[async_trait]
impl MdmAdapter for BcdmAdapter {
    fn kind(&self) -> MdmKind {
        MdmKind::Bcdm
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            commands: [
                MdmCommand::Lock,
                MdmCommand::DisconnectWifi,
                MdmCommand::EnterpriseWipe,
                MdmCommand::Wipe,
            ]
            .into_iter()
            .collect(),
            removes_wifi_profile_itself: true,
            groups: false,
            user_listing: true,
        }
    }

    #[instrument(skip_all, fields(mdm = %self.config.name))]
    async fn health_check(&self) -> Result<HealthReport, AdapterError> {
        let page = wire::ios_page(self.devices_page(0).await?.devices);
        Ok(HealthReport {
            devices_on_first_page: page.items.len(),
        })
    }

    fn devices(&self) -> PageStream<'_, Device> {
        // The cursor is the next offset, or `None` once `total` is reached;
        // guarded, so a server that ignores the offset (with a total that
        // never comes) fails the listing at the first repeated page.
        let pages = futures::stream::try_unfold(Some(0u64), move |cursor| async move {
            let Some(offset) = cursor else {
                return Ok(None);
            };
            let envelope = self.devices_page(offset).await?;
            if envelope.devices.is_empty() {
                if offset < envelope.total {
                    tracing::warn!(
                        mdm = %self.config.name, offset, total = envelope.total,
                        "BCDM returned an empty device page before its total; ending the listing."
                    );
                }
                return Ok(None);
            }
            let next = offset + envelope.devices.len() as u64;
            let mut page = wire::ios_page(envelope.devices);
            page.total = Some(envelope.total);
            Ok(Some((page, (next < envelope.total).then_some(next))))
        })
        .boxed();
        guard_listing(pages, "BCDM devices", |d| &d.mdm_device_id)
    }

    fn users(&self) -> PageStream<'_, User> {
        let tenant_id = self.config.tenant_id.as_str();
        let pages = futures::stream::try_unfold(Some(0u64), move |cursor| async move {
            let Some(offset) = cursor else {
                return Ok(None);
            };
            let envelope = self.users_page(offset).await?;
            if envelope.users.is_empty() {
                if offset < envelope.total {
                    tracing::warn!(
                        mdm = %self.config.name, offset, total = envelope.total,
                        "BCDM returned an empty user page before its total; ending the listing."
                    );
                }
                return Ok(None);
            }
            let next = offset + envelope.users.len() as u64;
            let users = envelope
                .users
                .into_iter()
                .map(|u| u.into_user(tenant_id))
                .collect();
            let page = Page {
                total: Some(envelope.total),
                ..Page::of(users)
            };
            Ok(Some((page, (next < envelope.total).then_some(next))))
        })
        .boxed();
        guard_listing(pages, "BCDM users", |u| &u.mdm_user_id)
    }

    /// BCDM has no groups: every device belongs to the integration.
    fn groups(&self) -> PageStream<'_, Group> {
        futures::stream::empty().boxed()
    }

    #[instrument(skip_all, fields(mdm = %self.config.name, identifier = %id))]
    async fn lookup_device(&self, id: &DeviceIdentifier) -> Result<Option<Device>, AdapterError> {
        let found = match id {
            DeviceIdentifier::MdmDeviceId(device_id) => self.device_by_id(device_id).await?,
            DeviceIdentifier::Udid(v) => {
                let value = normalize_udid(v).unwrap_or_else(|| v.clone());
                self.device_by_query(id, "udid", value).await?
            }
            DeviceIdentifier::Serial(v) => {
                let value = normalize_serial(v).unwrap_or_else(|| v.clone());
                self.device_by_query(id, "serial_number", value).await?
            }
            DeviceIdentifier::Imei(v) => {
                let value = normalize_imei(v).unwrap_or_else(|| v.clone());
                self.device_by_query(id, "imei", value).await?
            }
            DeviceIdentifier::Mac(v) => {
                self.device_by_query(id, "wifi_mac", wire::mac_for_lookup(v))
                    .await?
            }
        };
        match found {
            Some(device) if device.is_ios() => Ok(Some(device.into_device())),
            Some(device) => {
                // Listings skip it too: the connector cannot manage it through BCDM.
                tracing::info!(
                    device_id = %device.device_id,
                    platform = device.platform.as_deref().unwrap_or("(none)"),
                    "BCDM knows the device, but it is not iOS; treating it as not found."
                );
                Ok(None)
            }
            None => Ok(None),
        }
    }

    #[instrument(skip_all, fields(mdm = %self.config.name, device_id = %device.mdm_device_id, command = %command))]
    async fn execute(&self, command: MdmCommand, device: &Device) -> Result<Receipt, AdapterError> {
        let (Some(action), Some(setting)) =
            (Self::action_name(command), Self::console_setting(command))
        else {
            return Err(AdapterError::Unsupported(format!(
                "{command}: BCDM removes its disconnect-Wi-Fi profile itself after the \
                 console's \"Uninstall Profile\" time; the connector sends no removal"
            )));
        };
        let body = serde_json::json!({ "action": action }).to_string();
        let url = self.endpoint(&["devices", &device.mdm_device_id, "actions"], &[]);
        let request = format!("POST {}", signature::request_target(&url));
        let answer = self
            .send(Method::POST, url, body.clone().into_bytes())
            .await?;
        if !answer.status.is_success() {
            return Err(error_from(&answer, Some(setting)));
        }
        // Only the documented answer counts as sent (CONTRACT §4): 202 with
        // the request id. Another 2xx (a sign-in page, an empty 202) may
        // have been acted on or not: the error says so.
        let vendor_reference = serde_json::from_str::<ActionAccepted>(&answer.body)
            .ok()
            .and_then(|a| a.request_id)
            .filter(|_| answer.status == StatusCode::ACCEPTED);
        let Some(vendor_reference) = vendor_reference else {
            return Err(undocumented_answer(
                &request,
                answer.status,
                &answer.body,
                r#"BCDM's 202 with {"request_id":"…"}"#,
            ));
        };
        let vendor_reference = Some(vendor_reference);
        Ok(Receipt {
            request,
            request_body: Some(body),
            status: answer.status.as_u16(),
            response_body: (!answer.body.is_empty()).then_some(answer.body),
            vendor_reference,
        })
    }

    /// `PUT /api/v1/devices/{device_id}/risk` with `{"level":"high"}` (the
    /// lower-case names), signed like every request; only BCDM's 204 counts
    /// as written. `name` is not used: BCDM keeps one level per device.
    #[instrument(skip_all, fields(mdm = %self.config.name, device_id = %device.mdm_device_id, level = level.as_lower()))]
    async fn signal_risk(
        &self,
        device: &Device,
        level: SignalLevel,
        name: &str,
    ) -> Result<Receipt, AdapterError> {
        let _ = name;
        if device.mdm_device_id.trim().is_empty() {
            return Err(AdapterError::Config(
                "the device has no BCDM device_id".into(),
            ));
        }
        let body = serde_json::json!({ "level": level.as_lower() }).to_string();
        let url = self.endpoint(&["devices", &device.mdm_device_id, "risk"], &[]);
        let request = format!("PUT {}", signature::request_target(&url));
        let answer = self
            .send(Method::PUT, url, body.clone().into_bytes())
            .await?;
        if !answer.status.is_success() {
            return Err(error_from(&answer, None));
        }
        if answer.status != StatusCode::NO_CONTENT || !answer.body.trim().is_empty() {
            return Err(undocumented_answer(
                &request,
                answer.status,
                &answer.body,
                "BCDM's 204 with no body",
            ));
        }
        tracing::info!(
            status = answer.status.as_u16(),
            "BCDM stored the risk level"
        );
        Ok(Receipt {
            request,
            request_body: Some(body),
            status: answer.status.as_u16(),
            response_body: None,
            vendor_reference: None,
        })
    }

    /// The listing says: each device object's `mtd_risk_level` is read into
    /// [`Device::reported_risk`], so [`MdmAdapter::read_risk`]'s default
    /// (the devices' own `reported_risk`) costs no request.
    fn risk_read_back(&self) -> Option<RiskReadBack> {
        Some(RiskReadBack::Listing)
    }
}
