//! `mtd-adapter-soti`: the [`MdmAdapter`](mtd_adapter::MdmAdapter) for SOTI
//! MobiControl, speaking its REST API (`{url}/api/…`, `url` ending in
//! `/MobiControl`) as SOTI's own Swagger 2.0 spec defines it.
//!
//! What it maps, and the choices that are not obvious:
//!
//! - **Login.** OAuth2 password grant at `POST /api/token`, the API client's
//!   id and secret in a Basic header. The token is cached and shared by all
//!   callers, renewed a margin before `expires_in` runs out (a tenth of the
//!   lifetime, at most 60 s), and requested again once after a 401.
//! - **Devices** are read with `GET /api/devices?skip=&take=` (a bare array)
//!   as a stream of pages, one page in memory at a time; the first page shorter
//!   than `take` is the last, so a listing that is an exact multiple of `take`
//!   ends with one empty page. `DeviceId` is the `mdm_device_id`, kept as SOTI
//!   writes it. Records without a `DeviceId` are skipped and counted in
//!   [`Page::skipped`](mtd_adapter::Page::skipped), not treated as errors.
//! - **Identifiers** are normalised with `mtd_adapter`'s `normalize_*`: the
//!   MAC from `MACAddress` (either `a4:67:06:0c:15:3d` or `D087E278B54B`;
//!   `WifiMAC` as a fallback), the IMEI from `IMEI_MEID_ESN`, the serial from
//!   `ManufacturerSerialNumber` (iOS) or `HardwareSerialNumber` (Android+ and
//!   others), whichever is present. SOTI keys iOS devices by their UDID, so an
//!   iOS device's `DeviceId` is also its `udid`.
//! - **Platform** from `Kind` (`Ios`, `iOS`, `AndroidPlus`, … compared
//!   case-insensitively), falling back to `Platform` and `Family`.
//! - **Groups** are paths: a device's group is its `Path` (`\\Company\Sales`),
//!   and [`groups`](mtd_adapter::MdmAdapter::groups) lists
//!   `GET /api/devicegroups` keyed by the same path.
//! - **Users come from devices.** MobiControl's user API lists console
//!   administrators, not device users, so [`users`](mtd_adapter::MdmAdapter::users)
//!   is empty (`Capabilities::user_listing` is false) and each device carries its
//!   user from `DeviceUserInfo`, keyed by `UserName` (else `UPN`, else `Email`);
//!   a device whose `DeviceUserInfo` is null or names nobody has no user.
//! - **Ownership is always `Unknown`.** SOTI's device objects have no ownership
//!   field (the spec has only hints such as Apple's `EnrollmentType` and
//!   Android Enterprise's `AfwManagementType`, which describe how a device is
//!   managed, not who owns it). Since the connector only ever sends a full
//!   wipe to corporate devices, **a wipe is never sent to a SOTI device** by
//!   the connector's policy; enterprise wipe and the other actions are.
//! - **Posture** (listing and lookup alike): `ComplianceStatus` → compliant;
//!   `Mode` `Active` → enrolled, any other mode (`Disabled`,
//!   `UnenrollPending…`, `Unenrolled…`) → not enrolled; `IsEncrypted` →
//!   encrypted; `PasscodeEnabled` → passcode; `IsOSSecure` `false` →
//!   compromised (jailbroken or rooted); `Manufacturer`; `PhoneNumber`. The
//!   spec has `IsEncrypted` and `IsOSSecure` on the iOS and Android kinds
//!   only, so Windows and Mac devices say nothing there (`None`). Booleans are
//!   read leniently (`true`, `"True"`, `1`); a blank or unreadable value is
//!   `None`, never a skipped record.
//! - **Lookups.** By `mdm_device_id`: `GET /api/devices/{id}`; by UDID: the
//!   same with the UDID in lower case (an iOS `DeviceId`); by MAC:
//!   `GET /api/devices/mac:{12 upper-case hex digits}` (the spec documents the
//!   `mac:` prefix, not the MAC's spelling); by IMEI and serial:
//!   `GET /api/devices/search` with a filter `Property='value'`, double
//!   URL-encoded as SOTI requires, because the spec allows `imei_meid_esn:`
//!   only for actions. A serial is looked up in `HardwareSerialNumber` first,
//!   then in `ManufacturerSerialNumber`. Unknown devices (404) are `Ok(None)`.
//! - **Actions** go to `POST /api/devices/{id}/actions` with the body SOTI's
//!   spec requires: lock = `Lock` with `AutogenerateNewPasscode: false`;
//!   **enterprise wipe = `Unenroll`** (SOTI has no action by that name;
//!   `Unenroll` removes the management configuration and all organisation
//!   data) with `RevokeCertificates: true`; wipe = `Wipe` with all eight of its
//!   required fields. Disconnecting Wi-Fi installs the configured profile
//!   (`POST /api/devices/{id}/profiles/{profileId}/actions`, body `"Install"`);
//!   removing it later is a separate command with body `"Revoke"`.
//! - **Risk signal** (CONTRACT §4): a device custom attribute of type text,
//!   defined once by the admin, named by `risk_signal.name`. Written with
//!   `PUT /api/devices/{id}/customAttributes`
//!   `{"Attributes":[{"AttributeName":"MTD_Threat_Level","AttributeValue":"High"}]}`
//!   (the spec's `CustomAttributeParameters`; values `Secured`, `Low`,
//!   `Medium`, `High`, `Critical`); only the spec's 200 counts. A 400 or 422
//!   for an attribute that `GET /api/customattributes` does not define is
//!   [`AdapterError::ActionNotPermitted`](mtd_adapter::AdapterError::ActionNotPermitted)
//!   naming the attribute to create.
//!   Read back per device with `GET /api/devices/{id}/customAttributes` (the
//!   `Value` of the entry whose `Name` is the attribute's, exactly or else
//!   ignoring case); `missing_risk_signal` asks the definitions.
//! - **Errors** keep SOTI's `ErrorCode`/`ErrorMessage` in the message (HTML
//!   error pages are reduced to their title) and map to [`AdapterError`]
//!   through `mtd_adapter::http`.
//!
//! [`AdapterError`]: mtd_adapter::AdapterError

mod adapter;
mod auth;
mod config;
mod wire;

pub use adapter::SotiAdapter;
pub use config::{SotiConfig, SotiCredentials};
