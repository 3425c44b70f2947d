//! `mtd-adapter-maas360`: IBM MaaS360 (Cisco MCMS), spoken as the MaaS360
//! Web Services API (`kind = "maas360"`, alias `mcms`; MDM-APIS.md).
//!
//! What it speaks, every path carrying the customer's billing id:
//! - **Login** through Authentication 2.0:
//!   `POST /auth-apis/auth/2.0/authenticate/customer/{billingId}` with the
//!   JSON `authRequest`; then `Authorization: MaaS token="…"` on every call.
//!   One token per adapter, shared by all callers (`auth`), renewed after
//!   55 of its 60 minutes by `…/refreshToken/customer/{billingId}` (a full
//!   login when that fails), and by a full login once after a 401. A login
//!   refused with HTTP 200 and `errorCode` ≠ 0 is `Unauthorized` with the
//!   code and MaaS360's `errorDesc`.
//! - **Devices**: `GET /device-apis/devices/2.0/search/customer/{billingId}
//!   ?pageSize=&pageNumber=&deviceStatus=Active`, `pageNumber` from 1, to the
//!   first page shorter than `pageSize` (or `count`, which is each page's
//!   `total` for the listing guard). `maas360DeviceID` is the
//!   `mdm_device_id`; `udid`, `imeiEsn`, `wifiMacAddress` and
//!   `platformSerialNumber` are normalised with `mtd_adapter::normalize_*`;
//!   `ownership` `Corporate Owned` is corporate, `Employee Owned` personal,
//!   anything else unknown; `lastReported` has no zone and is UTC; the user
//!   is `username` (else `emailAddress`).
//! - **Posture** (listing and lookup alike, both are the search):
//!   `policyComplianceState` `In Compliance` / `Out of Compliance` →
//!   compliant; `maas360ManagedStatus` `Enrolled`, `Activated` → enrolled,
//!   `Control Removed`, `Pending Control Removed`, `User Removed Control`,
//!   `Not Enrolled`, `Inactive` → not; `encryptionStatus` `Encryption
//!   Complete`, `Encrypted` → encrypted, `Not Encrypted`, `Unencrypted`,
//!   `Not Supported` → not; `passcodeCompliance` `Compliant` → passcode,
//!   `Non Compliant`, `Not Compliant` → no passcode; `jailbreakStatus` `Yes`
//!   / `No` → compromised; `manufacturer`; `phoneNumber` (a number is its digits).
//!   Words are compared without case, spaces or punctuation; a blank or
//!   unknown word is `None`.
//! - **Users**: `GET /user-apis/user/1.0/search/{billingId}?includeAllUsers=1
//!   &pageSize=&pageNumber=`, keyed by `userName`, the key devices name
//!   their user by. **No groups**: the search answer names none.
//! - **Lookups**: the device search with one exact filter, `maas360DeviceId`,
//!   `udid`, `imeiMeid` or `wifiMacAddress` (`a4:e4:b8:73:a1:93`). **Serial:
//!   not searchable** at MaaS360: a lookup by serial is `Ok(None)` (as for
//!   any device MaaS360 does not know, so the other identifiers are still
//!   tried), and the device is found by the next full sync.
//! - **Commands**: `POST /device-apis/devices/1.0/{lockDevice|selectiveWipeDevice|wipeDevice}/{billingId}`
//!   with the form `deviceId=…` (a wipe also `notifyMe=No&notifyUser=No`).
//!   Only 200 with `actionStatus` 0 counts as sent (the `actionID` is the
//!   receipt's vendor reference); `actionStatus` 1 and a 400 are permanent
//!   refusals. Disconnect Wi-Fi has no MaaS360 call: it is not offered.
//! - **Risk signal**: the device custom attribute `risk_signal.name` (type
//!   text, defined once by the admin in the portal), written with
//!   `POST /device-apis/devices/1.0/setCustomAttributeValue/{billingId}` and
//!   the form `deviceId`, `attributeName`, `attributeValue` (`Secured`,
//!   `Low`, `Medium`, `High`, `Critical`), answered like a command; a
//!   refusal saying the attribute does not exist is `ActionNotPermitted`
//!   naming it. Read back per device from
//!   `GET /device-apis/devices/1.0/identity/{billingId}?deviceId=…`
//!   (`deviceIdentity.customAttributes.customAttribute`, one object or a
//!   list). No public call lists the attribute definitions, so
//!   `missing_risk_signal` is always empty.
//!
//! The lenient reading (numbers as strings, `""` as none, a list of one as
//! a bare object, a missing list as empty) is in `wire`.

mod adapter;
mod auth;
mod config;
mod wire;

pub use adapter::Maas360Adapter;
pub use config::{Maas360Config, Maas360Credentials};
