//! The Cisco ISE MDM API (CONTRACT §7): the connector as one more external
//! MDM server of a customer's ISE, so that devices with open threats lose
//! network access until they are clean.
//!
//! Every answer comes from the store alone (no MDM call, one indexed
//! statement: `store::ise`), so ISE's 200 ms budget holds while MDMs are slow
//! or down. ISE's actions go through the same decision as an agent event's
//! (`policy::static_checks`, then the cool-down and the hourly cap in one
//! write transaction) and reach the MDM only through the dispatcher.
//!
//! Why the user name selects the tenant: ISE has one set of credentials per
//! external MDM server and no tenant parameter; each tenant's ISE gets its
//! own user name, so a tenant's ISE can never name another tenant's device.

pub mod xml;

use crate::config::{Config, IseThreshold, LiveConfig, TenantConfig};
use crate::dispatch::DispatchHandle;
use crate::policy::{self, Limits, MdmFacts, Verdict};
use crate::store::{
    ActionRecordKind, DeviceId, IseCriterion, IseDeviceRow, NewAction, RiskLevel, Store, StoreError,
};
use crate::sync::SyncEngine;
use chrono::Utc;
use mtd_adapter::ActionKind;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use xml::{ActionResult, Compliance, DeviceKey, Identifier, IseDevice, MdmInfo};

/// The API path of each version, as `mdminfo` announces it. ISE stores it
/// when the server is saved: these paths must stay valid forever.
pub fn api_path(version: u8) -> String {
    format!("/ciscoise/mdmapi/v{version}")
}

/// What the product calls itself in `mdminfo`.
const VENDOR: &str = "mtd-connector";
const PRODUCT: &str = "mtd-connector";

/// The ISE service: authentication, queries, actions.
#[derive(Debug, Clone)]
pub struct Ise {
    pub store: Store,
    pub config: LiveConfig,
    pub sync: SyncEngine,
    pub wake: DispatchHandle,
}

/// A request that authenticated: the config it was checked against and the
/// tenant its user name selects.
#[derive(Debug, Clone)]
pub struct IseTenant {
    config: Arc<Config>,
    index: usize,
}

impl IseTenant {
    pub fn tenant(&self) -> &TenantConfig {
        &self.config.tenants[self.index]
    }

    fn threshold(&self) -> RiskLevel {
        match self.tenant().ise.as_ref().map(|i| i.noncompliant_at) {
            Some(IseThreshold::Low) => RiskLevel::Low,
            Some(IseThreshold::Medium) => RiskLevel::Medium,
            Some(IseThreshold::Critical) => RiskLevel::Critical,
            Some(IseThreshold::High) | None => RiskLevel::High,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IseError {
    /// `[ise] enabled` is not true in the main file: the API is not served.
    #[error("the Cisco ISE API is not enabled")]
    Disabled,
    /// Missing, malformed, unknown or wrong credentials (no detail given).
    #[error("unauthorized")]
    Unauthorized,
    /// A request ISE should not send: what is wrong with it.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A device query's parameters (v2/v3 query string, or v1's path).
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    /// `paging`: 0 for the first page, else the `paging_info` of the last answer.
    pub paging: Option<String>,
    pub querycriteria: Option<String>,
    pub value: Option<String>,
    /// v3 compliance listings: `guid` or `macaddress`.
    pub deviceidentifier: Option<String>,
}

/// ISE's action types and the action records they become.
fn action_of(action_type: &str) -> Option<ActionKind> {
    match action_type.trim() {
        "full_wipe" => Some(ActionKind::Wipe),
        "corporate_wipe" => Some(ActionKind::EnterpriseWipe),
        "pin_lock" => Some(ActionKind::Lock),
        _ => None,
    }
}

/// A version ISE asks for, as we answer it: the highest we speak at or
/// below it (an absent or unreadable one is v1, which has no parameter).
pub fn answered_version(asked: Option<&str>) -> Result<u8, IseError> {
    let Some(asked) = asked.map(str::trim) else {
        return Ok(xml::MIN_VERSION);
    };
    let n: u64 = asked.parse().map_err(|_| {
        IseError::BadRequest(format!(
            "ise_api_version must be a whole number, not `{asked}`"
        ))
    })?;
    if n < u64::from(xml::MIN_VERSION) {
        return Err(IseError::BadRequest(format!(
            "ise_api_version {n} does not exist: the first version is 1"
        )));
    }
    Ok(u8::try_from(n.min(u64::from(xml::MAX_VERSION))).unwrap_or(xml::MAX_VERSION))
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

impl Ise {
    /// The tenant whose `[ise] username` and password are in this
    /// `Authorization` header (HTTP Basic). The password is compared in
    /// constant time (of digests, so its length does not show either), and
    /// an unknown user name costs the same comparison.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<IseTenant, IseError> {
        let config = self.config.load();
        if !config.ise.enabled {
            return Err(IseError::Disabled);
        }
        let refused = || {
            crate::metrics::ise_auth_failed();
            IseError::Unauthorized
        };
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Err(refused());
        };
        let found = config.tenants.iter().position(|t| {
            t.ise
                .as_ref()
                .is_some_and(|i| i.username.as_bytes() == user.as_bytes())
        });
        let expected = found
            .and_then(|i| config.tenants[i].ise.as_ref())
            .map_or_else(
                || digest(b"\x00no such user\x00"),
                |i| digest(i.password.expose().as_bytes()),
            );
        let matches: bool = digest(password.as_bytes()).ct_eq(&expected).into();
        match found {
            Some(index) if matches => Ok(IseTenant { config, index }),
            _ => Err(refused()),
        }
    }

    /// `mdminfo` in the version answered for `asked`.
    pub fn mdm_info(&self, t: &IseTenant, asked: Option<&str>) -> Result<String, IseError> {
        let version = answered_version(asked)?;
        let redirect_url = t
            .config
            .ise
            .redirect_url
            .as_ref()
            .map(ToString::to_string)
            // Where the tenant's users enroll: its first enabled MDM.
            .or_else(|| {
                t.tenant()
                    .mdms
                    .iter()
                    .find(|m| m.enabled)
                    .map(|m| m.url.to_string())
            })
            .unwrap_or_default();
        Ok(xml::mdm_info(&MdmInfo {
            api_version: version,
            api_path: api_path(version),
            redirect_url,
            query_max_size: t.config.ise.query_max_size,
            vendor: VENDOR.into(),
            product_name: PRODUCT.into(),
            product_version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    /// A device query (`GET {api_path}/devices/…`): one device or user by an
    /// identifier, the compliance listing, or every device, a page at a time.
    /// Returns the operation (for metrics) and the document.
    pub async fn devices(
        &self,
        t: &IseTenant,
        version: u8,
        q: &DeviceQuery,
    ) -> Result<(&'static str, String), IseError> {
        let after = parse_paging(q.paging.as_deref())?;
        let criterion = q
            .querycriteria
            .as_deref()
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty());
        let value = q.value.as_deref().map(str::trim).unwrap_or_default();
        let key_by_guid = match q.deviceidentifier.as_deref().map(str::trim) {
            None | Some("") | Some("macaddress") => false,
            Some("guid") if version >= 3 => true,
            Some(other) => {
                return Err(IseError::BadRequest(format!(
                    "deviceidentifier must be macaddress{}, not `{other}`",
                    if version >= 3 { " or guid" } else { "" }
                )))
            }
        };
        let limit = t.config.ise.query_max_size;
        match criterion.as_deref() {
            None => {
                let (rows, more) = self
                    .store
                    .ise_all_devices(&t.tenant().id, after, limit)
                    .await?;
                let body = self.listing(t, version, &rows, more, key_by_guid, None);
                Ok(("devices", body))
            }
            Some("compliance") => {
                let want_compliant = match value.to_ascii_lowercase().as_str() {
                    "false" => false,
                    "true" => true,
                    _ => {
                        return Err(IseError::BadRequest(format!(
                        "querycriteria=compliance takes value=true or value=false, not `{value}`"
                    )))
                    }
                };
                if want_compliant {
                    // Rare (ISE polls the non-compliant ones): every device,
                    // filtered here.
                    let (rows, more) = self
                        .store
                        .ise_all_devices(&t.tenant().id, after, limit)
                        .await?;
                    let body = self.listing(t, version, &rows, more, key_by_guid, Some(true));
                    return Ok(("devices", body));
                }
                let (rows, more) = self
                    .store
                    .ise_noncompliant(&t.tenant().id, t.threshold(), after, limit)
                    .await?;
                let body = self.listing(t, version, &rows, more, key_by_guid, Some(false));
                Ok(("noncompliant", body))
            }
            Some(c) => {
                let Some(criterion) = criterion_of(c, version) else {
                    return Err(IseError::BadRequest(format!(
                        "unknown querycriteria `{c}`: macaddress, meid, udid, imei, username, serialnumber, compliance{}",
                        if version >= 3 { ", guid, guidhn" } else { "" }
                    )));
                };
                if value.is_empty() {
                    return Err(IseError::BadRequest(format!(
                        "querycriteria={c} needs a value"
                    )));
                }
                let body = self
                    .lookup(t, version, criterion, &[value], key_by_guid)
                    .await?;
                Ok(("devices", body))
            }
        }
    }

    /// `batchdevices`: the devices of many identifiers of one criterion
    /// (up to `query_max_size` of them), as one `attributes` document.
    pub async fn batch(
        &self,
        t: &IseTenant,
        version: u8,
        querycriteria: Option<&str>,
        values: &[String],
    ) -> Result<String, IseError> {
        let c = querycriteria
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "macaddress".into());
        let Some(criterion) = criterion_of(&c, version) else {
            return Err(IseError::BadRequest(format!(
                "unknown querycriteria `{c}` for batchdevices"
            )));
        };
        let max = t.config.ise.query_max_size as usize;
        if values.len() > max {
            return Err(IseError::BadRequest(format!(
                "{} identifiers in one batch; query_max_size is {max}",
                values.len()
            )));
        }
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        self.lookup(t, version, criterion, &values, false).await
    }

    async fn lookup(
        &self,
        t: &IseTenant,
        version: u8,
        criterion: Option<IseCriterion>,
        values: &[&str],
        key_by_guid: bool,
    ) -> Result<String, IseError> {
        // `guidhn` (a hostname): the store keeps no host names; no device matches.
        let Some(criterion) = criterion else {
            return Ok(xml::attributes(version, 0, &[]));
        };
        let rows = self
            .store
            .ise_devices(&t.tenant().id, criterion, values)
            .await?;
        let devices: Vec<IseDevice> = rows
            .iter()
            .filter_map(|r| {
                let key = match criterion {
                    // Keyed by what ISE asked with: the GUID it knows.
                    IseCriterion::Guid if version >= 3 => {
                        let asked = values
                            .iter()
                            .find(|v| matches_guid(r, v))
                            .map_or_else(|| guid_of(r), |v| v.trim().to_owned());
                        DeviceKey::Guid(asked)
                    }
                    _ => key_of(r, version, key_by_guid)?,
                };
                Some(self.device(t, version, r, key))
            })
            .collect();
        Ok(xml::attributes(version, 0, &devices))
    }

    fn listing(
        &self,
        t: &IseTenant,
        version: u8,
        rows: &[IseDeviceRow],
        more: bool,
        key_by_guid: bool,
        compliant: Option<bool>,
    ) -> String {
        let devices: Vec<IseDevice> = rows
            .iter()
            .filter_map(|r| {
                let key = key_of(r, version, key_by_guid)?;
                let d = self.device(t, version, r, key);
                compliant
                    .is_none_or(|want| d.compliance.status == want)
                    .then_some(d)
            })
            .collect();
        // The cursor is the last device id of the page: ISE sends it back as
        // `paging`; 0 ends the listing.
        let next = if more {
            rows.last().map_or(0, |r| r.device.id.max(0).unsigned_abs())
        } else {
            0
        };
        xml::attributes(version, next, &devices)
    }

    /// One device as ISE is told about it.
    fn device(&self, t: &IseTenant, version: u8, r: &IseDeviceRow, key: DeviceKey) -> IseDevice {
        let d = &r.device;
        let mdm = self.sync.integration(&t.tenant().id, d.mdm_id);
        let registered = mdm.as_ref().is_some_and(|i| i.enabled);
        let compliance = compliance(r, t.threshold());
        let mut out = IseDevice::new(key, registered, compliance);
        let p = &d.posture;
        out.disk_encryption_on = p.encrypted;
        out.pin_lock_on = p.passcode;
        out.jail_broken = p.compromised;
        out.manufacturer = p.manufacturer.clone();
        out.model = d.model.clone();
        // IMEIs are 15 digits; a 14-hex value in the same column is a MEID.
        if let Some(imei) = &d.identifiers.imei {
            if imei.len() == 14 && imei.chars().all(|c| c.is_ascii_hexdigit()) {
                out.meid = Some(imei.clone());
            } else {
                out.imei = Some(imei.clone());
            }
        }
        out.udid = d.identifiers.udid.clone();
        out.serial_number = d.identifiers.serial.clone();
        out.os_version = d.os_version.clone();
        out.phone_number = p.phone_number.clone();
        if version >= 3 {
            out.last_checkin_ms = d.last_checkin_at.map(|t| t.timestamp_millis());
            out.guid = Some(guid_of(r));
            out.macaddresses = d
                .identifiers
                .mac
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect();
        }
        out
    }

    /// An ISE action on the devices of `identifiers` (`full_wipe`,
    /// `corporate_wipe`, `pin_lock`): one action record per device found,
    /// decided as an agent event's action is; `action_status` is true only
    /// when the record is pending (accepted for delivery).
    pub async fn action(
        &self,
        t: &IseTenant,
        version: u8,
        action_type: &str,
        identifiers: &[Identifier],
    ) -> Result<String, IseError> {
        let Some(action) = action_of(action_type) else {
            return Err(IseError::BadRequest(format!(
                "unknown actionType `{}`: full_wipe, corporate_wipe or pin_lock",
                action_type.trim()
            )));
        };
        if identifiers.is_empty() {
            return Err(IseError::BadRequest(
                "the body names no device: <ise_api><identifier><macaddress>…</macaddress></identifier></ise_api>".into(),
            ));
        }
        let tenant = t.tenant();
        let mut results = Vec::with_capacity(identifiers.len());
        for identifier in identifiers {
            let key = identifier
                .device_key()
                .unwrap_or_else(|| DeviceKey::MacAddress(identifier.value().trim().to_owned()));
            let found = match criterion_of_identifier(identifier) {
                Some(c) => {
                    self.store
                        .ise_devices(&tenant.id, c, &[identifier.value()])
                        .await?
                }
                None => Vec::new(),
            };
            // With a collision the most recently checked-in device is the one
            // acted on, as for an agent's event.
            let Some(row) = found.into_iter().next() else {
                results.push(ActionResult {
                    key,
                    action_status: false,
                    failure_reason: Some("device unknown: no MDM of the tenant knows it".into()),
                });
                continue;
            };
            let verdict = self
                .decide(tenant, &row, action, action_type.trim())
                .await?;
            let (status, reason) = match &verdict {
                Verdict::Pending => (true, None),
                Verdict::Skipped(r) => (false, Some(format!("not sent: {r}"))),
                Verdict::Held(r) => (false, Some(format!("held for approval: {r}"))),
            };
            results.push(ActionResult {
                key,
                action_status: status,
                failure_reason: reason,
            });
        }
        Ok(xml::action_response(version, &results))
    }

    /// The decision and the action record, in one write transaction (the
    /// cool-down and the hourly cap count rows other writers add too).
    async fn decide(
        &self,
        tenant: &TenantConfig,
        row: &IseDeviceRow,
        action: ActionKind,
        action_type: &str,
    ) -> Result<Verdict, IseError> {
        let device = &row.device;
        let kind = ActionRecordKind::from(action);
        let mdm = self.sync.mdm_of(tenant, device.mdm_id);
        let caps = mdm.as_ref().map(|(i, _)| i.adapter.capabilities());
        let facts = mdm
            .as_ref()
            .zip(caps.as_ref())
            .map(|((_, config), caps)| MdmFacts::of(config, caps));
        let now = Utc::now();
        let mut tx = self.store.begin().await?;
        let verdict = match policy::static_checks(&tenant.policy, Some(device), facts, kind) {
            Some(reason) => Verdict::Skipped(reason),
            None => {
                let limits = Limits::of(tenant);
                let recent = tx
                    .recent_action(DeviceId(device.id), kind, limits.cooldown_since(now))
                    .await?;
                let destructive = if action.is_destructive() {
                    tx.destructive_since(&tenant.id, policy::cap_since(now))
                        .await?
                } else {
                    0
                };
                limits.verdict(action, recent, destructive)
            }
        };
        let (state, reason) = verdict.state_and_reason();
        // The source is in the reason, so the audit trail's first row says it.
        let source = format!("requested by Cisco ISE ({action_type})");
        let reason = Some(match reason {
            Some(r) => format!("{source}: {r}"),
            None => source,
        });
        let record = NewAction {
            tenant_id: tenant.id.clone(),
            event_id: None,
            device_id: Some(device.id),
            mdm_id: Some(device.mdm_id),
            kind,
            parent_action_id: None,
            state,
            reason,
            next_attempt_at: None,
            signal_level: None,
        };
        let id = tx.insert_action(&record).await?;
        tx.commit().await?;
        crate::metrics::action_entered(kind.as_str(), state.as_str());
        match &verdict {
            Verdict::Pending => {
                self.wake.wake();
                tracing::info!(tenant = %tenant.id, action_id = id, %action, "Action queued at Cisco ISE's request");
            }
            Verdict::Held(reason) => {
                tracing::warn!(tenant = %tenant.id, action_id = id, %action, %reason, "Action from Cisco ISE held for approval");
            }
            Verdict::Skipped(reason) => {
                tracing::info!(tenant = %tenant.id, action_id = id, %action, %reason, "Action from Cisco ISE skipped");
            }
        }
        Ok(verdict)
    }
}

/// `user:password` of a Basic `Authorization` header.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn parse_paging(paging: Option<&str>) -> Result<i64, IseError> {
    match paging.map(str::trim) {
        None | Some("") => Ok(0),
        Some(p) => p.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            IseError::BadRequest(format!(
                "paging must be 0 or the paging_info of the previous answer, not `{p}`"
            ))
        }),
    }
}

/// The store's criterion for ISE's `querycriteria` (`None` inside: a known
/// criterion nothing can match); outer `None`: unknown for this version.
fn criterion_of(c: &str, version: u8) -> Option<Option<IseCriterion>> {
    Some(Some(match c {
        "macaddress" => IseCriterion::MacAddress,
        "meid" => IseCriterion::Meid,
        "imei" => IseCriterion::Imei,
        "udid" => IseCriterion::Udid,
        "username" => IseCriterion::Username,
        "serialnumber" | "serial_number" => IseCriterion::SerialNumber,
        "guid" if version >= 3 => IseCriterion::Guid,
        "guidhn" if version >= 3 => return Some(None),
        _ => return None,
    }))
}

fn criterion_of_identifier(i: &Identifier) -> Option<IseCriterion> {
    Some(match i {
        Identifier::MacAddress(_) => IseCriterion::MacAddress,
        Identifier::Guid(_) => IseCriterion::Guid,
        Identifier::Udid(_) => IseCriterion::Udid,
        Identifier::Imei(_) => IseCriterion::Imei,
        Identifier::Meid(_) => IseCriterion::Meid,
        Identifier::SerialNumber(_) => IseCriterion::SerialNumber,
        Identifier::Username(_) => IseCriterion::Username,
        Identifier::Hostname(_) => return None,
    })
}

/// What a device is keyed by in an answer: its MAC (v1/v2, and v3 unless
/// asked for GUIDs), else in v3 its GUID. `None`: a v1/v2 answer cannot name
/// a device without a MAC address.
fn key_of(r: &IseDeviceRow, version: u8, by_guid: bool) -> Option<DeviceKey> {
    let mac = r
        .device
        .identifiers
        .mac
        .as_ref()
        .map(|m| m.to_ascii_uppercase());
    match (by_guid && version >= 3, mac) {
        (false, Some(mac)) => Some(DeviceKey::MacAddress(mac)),
        (_, _) if version >= 3 => Some(DeviceKey::Guid(guid_of(r))),
        _ => None,
    }
}

/// A device's GUID as we give it: its UDID, else its MDM's id for it (what
/// MDMs put in device certificates).
fn guid_of(r: &IseDeviceRow) -> String {
    r.device
        .identifiers
        .udid
        .clone()
        .unwrap_or_else(|| r.device.mdm_device_id.clone())
}

fn matches_guid(r: &IseDeviceRow, asked: &str) -> bool {
    let asked = asked.trim();
    r.device.mdm_device_id == asked
        || r.device
            .identifiers
            .udid
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(asked))
}

/// Compliant unless the risk level reaches the tenant's `noncompliant_at`
/// or the MDM reports the device not compliant; the reason names the open
/// threat types, the remediation says what the user can do.
fn compliance(r: &IseDeviceRow, at: RiskLevel) -> Compliance {
    let at_risk = r.device.risk_level >= at;
    let mdm_says_no = r.device.posture.compliant == Some(false);
    if !at_risk && !mdm_says_no {
        return Compliance {
            status: true,
            failure_reason: None,
            remediation: None,
        };
    }
    let mut reasons = Vec::new();
    let mut remedies = Vec::new();
    if at_risk {
        reasons.push(format!(
            "{} risk: open threats {}",
            r.device.risk_level.as_str(),
            r.open_threats.join(", ")
        ));
        remedies.push(
            "Open the MTD app on the device and follow its steps to remove the threats; network access returns once they are resolved",
        );
    }
    if mdm_says_no {
        reasons.push("the MDM reports the device not compliant".to_owned());
        remedies.push("Bring the device back into compliance with the company's MDM policy (see the MDM app on the device)");
    }
    Compliance {
        status: false,
        failure_reason: Some(reasons.join("; ")),
        remediation: Some(remedies.join(". ")),
    }
}

#[cfg(test)]
pub(crate) mod spec_check;
