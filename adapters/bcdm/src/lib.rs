//! `mtd-adapter-bcdm`: the adapter for SoftBank Business Concierge Device
//! Management (BCDM).
//!
//! **BCDM publishes no API documentation.** This adapter does not follow a
//! published API: it follows the design fixed in the project's `MDM-APIS.md`
//! (BCDM section), which is derived from the documented integration settings
//! of the MVISION Mobile BCDM integration guide: an API server URL, an access
//! key, a secret key and a DM code; iOS devices only; no groups; MDM actions
//! that the BCDM console permits or forbids one by one; and a disconnect-Wi-Fi
//! profile that BCDM removes by itself after the console's "Uninstall
//! Profile" time.
//!
//! What it speaks:
//! - every request signed ([`signature`]): `X-BCDM-Access-Key`,
//!   `X-BCDM-DM-Code`, `X-BCDM-Timestamp`, `X-BCDM-Signature`;
//! - `GET /api/v1/users` and `GET /api/v1/devices`, paged with
//!   `offset`/`limit` up to `total`. Only iOS devices are taken; the others
//!   are counted in [`Page::skipped`](mtd_adapter::Page) with a reason, never
//!   silently dropped. Users without an email get `<tenant_id>-user@qmpr.com`.
//!   A device carries only its user's id; the user's details come from the
//!   user listing;
//! - posture from the device object (listing and lookup alike): `compliant`,
//!   `passcode_enabled`, `encrypted`, `jailbroken` (booleans, `null` = not
//!   said; `"true"`/`"false"` and 1/0 are read too), `manufacturer`,
//!   `phone_number`. BCDM has no enrolment flag (`enrolled` is `None`);
//! - the risk signal: `PUT /api/v1/devices/{device_id}/risk` with
//!   `{"level":"secured"|"low"|"medium"|"high"|"critical"}` → 204, and read
//!   back from the listing: each device object's `mtd_risk_level` (the level
//!   last written, `null` if never) becomes `Device::reported_risk`
//!   ([`RiskReadBack::Listing`](mtd_adapter::RiskReadBack)); there is nothing
//!   to set up at BCDM, so `missing_risk_signal` is always empty;
//! - lookups by `udid`, `serial_number`, `imei`, `wifi_mac` (sent
//!   colon-separated in lower case, `a4:67:06:0c:15:3d`, the form iOS
//!   reports) and by `device_id`. A device BCDM knows but that is not iOS is
//!   answered as not found, consistent with the listings;
//! - actions `lock`, `disconnect_wifi`, `enterprise_wipe`, `remote_wipe`
//!   (202 with a `request_id`, kept as the receipt's vendor reference); a
//!   403 `action_not_permitted` becomes
//!   [`AdapterError::ActionNotPermitted`](mtd_adapter::AdapterError) naming
//!   the console setting to change. There is no profile removal command:
//!   [`Capabilities::removes_wifi_profile_itself`](mtd_adapter::Capabilities)
//!   is true and `RemoveWifiProfile` is unsupported;
//! - no groups.
//!
//! BCDM answers 429 above 10 requests in any rolling second per access key;
//! the adapter paces itself below that with a client-side limiter shared by
//! all its callers, so a full sync does not trip it.

mod adapter;
mod config;
mod limiter;
pub mod signature;
mod wire;

pub use adapter::BcdmAdapter;
pub use config::{BcdmConfig, BcdmCredentials};
