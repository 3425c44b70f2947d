//! `mtd-adapter-airwatch`: VMware AirWatch / Workspace ONE UEM, spoken as the
//! AirWatch REST API (`kind = "airwatch"`; earlier builds called it `mcms`,
//! which is MaaS360: see `mtd-adapter-maas360`).
//!
//! This crate implements [`mtd_adapter::MdmAdapter`] against `{base_url}/API/…`. Every request
//! carries `Authorization: Basic base64(username:password)`, the tenant's
//! REST API key as `aw-tenant-code`, and `Accept: application/json`.
//!
//! What it maps:
//! - **Devices** from `GET /API/mdm/devices/search?page=N&pagesize=M`
//!   (0-based pages) into [`mtd_adapter::Device`]: `Id.Value` → `mdm_device_id`
//!   (as a string), `Udid`, `SerialNumber`, `MacAddress`, `Imei` (normalised
//!   with `mtd_adapter::normalize_*`), `DeviceFriendlyName`, `Platform`
//!   (`Apple` → iOS), `Model`, `OperatingSystem`, `Ownership` (`C` corporate,
//!   `E` personal, `S` shared, anything else unknown), `LastSeen`, the user
//!   (`UserName`, `UserEmailAddress`) and the group (`LocationGroupName`).
//! - **Posture** (listing and lookup alike): `EnrollmentStatus` `Enrolled` →
//!   enrolled (any other status → not); `ComplianceStatus` `Compliant` /
//!   `NonCompliant` → compliant (`NotAvailable`, `PendingComplianceCheck`, …
//!   → `None`); `CompromisedStatus` (a boolean, also read from text) →
//!   compromised; `OEMInfo` → manufacturer; `PhoneNumber`. Encryption and
//!   passcode are `None`: MDM-APIS.md takes the listing not to say.
//! - **Users** from `GET /API/system/users/search` (same paging).
//! - **Groups** from `GET /API/system/groups/search`, the organisation groups.
//!   The adapter returns the group name as AirWatch has it; the connector
//!   prefixes the MDM's name when it shows groups to admins.
//! - **Lookup** by `searchby=Udid|Serialnumber|Macaddress|ImeiNumber&id=…`,
//!   or `GET /API/mdm/devices/{id}`; 404 or 204 means "unknown device".
//! - **Commands**: `POST /API/mdm/devices/{id}/commands?command=Lock`,
//!   `EnterpriseWipe`, `DeviceWipe` (empty body); disconnect Wi-Fi installs the
//!   configured profile with `POST /API/mdm/profiles/{profileId}/install`
//!   `{"SerialNumber":"…"}`, and the later removal posts the same body to
//!   `…/remove`. AirWatch does not remove the profile by itself.
//!
//! The choices that are not obvious:
//! - **Keys that join.** Devices name their user only by `UserName` and their
//!   group only by `LocationGroupName`, so users are keyed by `UserName` (not
//!   by their `Id.Value`) and groups by their `Name` (not by their `Id`), in
//!   the listings as in the devices: otherwise nothing would join.
//! - **Paging ends** at a 204 (AirWatch's answer for "no records", with no
//!   body), at an empty or short page, or once `(page + 1) * pagesize`
//!   reaches `Total`; no request is made past the end. A groups answer longer
//!   than the page size means the server ignored paging and ends it too.
//!   Only one page is held in memory at a time.
//! - **Lenient reading.** Records are read field by field (see `wire`):
//!   `Id` may be `{"Value":n}`, `n` or `"n"`; unknown fields are ignored; a
//!   record that cannot be mapped (no id) is skipped and counted in
//!   `Page::skipped` with the reason, never failing the page. `LastSeen`
//!   comes without a zone and is read as UTC; a zone, when present, is honoured.
//! - **Rate limits.** `x-ratelimit-limit/remaining/reset` are read from every
//!   answer into state shared by all callers of one adapter; when at most 5 %
//!   (and at least 2) of the quota is left, the next request waits for the
//!   reset (at most a minute) instead of running into 429. A 429 maps to
//!   `AdapterError::RateLimited` with its `Retry-After`, and holds back the
//!   other callers for that long as well.
//! - **Errors.** `{"errorCode":n,"message":"…"}` is kept as
//!   `errorCode n: …` in the error's message; an HTML page is reduced to its
//!   title; malformed JSON on a 2xx, or an HTML page answering a command, is
//!   `Decode` (a login portal's 200 must not count as a command sent).

mod adapter;
mod config;
mod ratelimit;
mod wire;

pub use adapter::AirwatchAdapter;
pub use config::{AirwatchConfig, AirwatchCredentials};
