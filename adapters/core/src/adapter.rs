//! The `MdmAdapter` trait, shaped for its callers.
//!
//! - `test-connection` calls [`MdmAdapter::health_check`];
//! - the sync engine streams pages from [`MdmAdapter::devices`], [`MdmAdapter::users`]
//!   and [`MdmAdapter::groups`] straight into the store: a stream of pages keeps
//!   memory flat however many devices an MDM has;
//! - the on-demand sync calls [`MdmAdapter::lookup_device`];
//! - the dispatcher calls [`MdmAdapter::execute`] and keeps the [`Receipt`].
//!
//! Adapters are held as `Arc<dyn MdmAdapter>`, hence `async_trait` (native async
//! fns in traits are not object safe).

use crate::{
    AdapterError, Device, DeviceIdentifier, Group, MdmCommand, MdmKind, RiskReadBack, SignalLevel,
    User,
};
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One page of a listing. `skipped` counts records the adapter read but did
/// not map (for example BCDM's non-iOS devices), so they are reported, not lost.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub skipped: u64,
    /// Why records were skipped, when any were (for the sync run's record).
    pub skip_reason: Option<String>,
    /// How many records the whole listing has, where the MDM announces it
    /// on its pages (AirWatch `Total`, BCDM `total`; SOTI says nothing): a
    /// listing that reads more fails ([`crate::ListingGuard`]).
    pub total: Option<u64>,
}

impl<T> Page<T> {
    pub fn of(items: Vec<T>) -> Self {
        Page {
            items,
            skipped: 0,
            skip_reason: None,
            total: None,
        }
    }
}

/// A listing as a stream of pages; the first error ends it.
pub type PageStream<'a, T> = BoxStream<'a, Result<Page<T>, AdapterError>>;

/// What an adapter can do at its MDM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The commands this MDM offers.
    pub commands: BTreeSet<MdmCommand>,
    /// The MDM removes a disconnect-Wi-Fi profile by itself after its own
    /// timeout (BCDM): the connector then schedules no removal.
    pub removes_wifi_profile_itself: bool,
    /// The MDM has device groups.
    pub groups: bool,
    /// Users are a listing of their own (`false`: they come embedded in devices).
    pub user_listing: bool,
}

impl Capabilities {
    pub fn supports(&self, command: MdmCommand) -> bool {
        self.commands.contains(&command)
    }
}

/// The answer of a successful [`MdmAdapter::health_check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Devices on the first page read.
    pub devices_on_first_page: usize,
}

/// The proof of one command sent: what went out and what came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// e.g. `POST /MobiControl/api/devices/abc/actions`.
    pub request: String,
    /// The request body as sent (no credentials are ever in a body).
    pub request_body: Option<String>,
    pub status: u16,
    pub response_body: Option<String>,
    /// The MDM's own reference for the command, where it gives one (BCDM's `request_id`).
    pub vendor_reference: Option<String>,
}

/// One MDM integration, speaking that MDM's REST API.
#[async_trait]
pub trait MdmAdapter: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> MdmKind;

    fn capabilities(&self) -> Capabilities;

    /// Whether the MDM removes a disconnect-Wi-Fi profile by itself.
    fn removes_wifi_profile_itself(&self) -> bool {
        self.capabilities().removes_wifi_profile_itself
    }

    /// Logs in and reads one page of devices.
    async fn health_check(&self) -> Result<HealthReport, AdapterError>;

    /// Every device, page by page, to the end.
    fn devices(&self) -> PageStream<'_, Device>;

    /// Every user, page by page. Empty where users come embedded in devices
    /// (see [`Capabilities::user_listing`]).
    fn users(&self) -> PageStream<'_, User>;

    /// Every group, page by page. Empty where the MDM has no groups.
    fn groups(&self) -> PageStream<'_, Group>;

    /// One device by any identifier; `Ok(None)` when the MDM does not know it.
    async fn lookup_device(&self, id: &DeviceIdentifier) -> Result<Option<Device>, AdapterError>;

    /// Sends one command for one device (`device` as last read from this MDM).
    async fn execute(&self, command: MdmCommand, device: &Device) -> Result<Receipt, AdapterError>;

    /// Writes the device's risk level into the MDM under `name` (SOTI and
    /// MaaS360: the custom attribute; AirWatch: the tag prefix, one tag
    /// `{name}_{Level}` per level; BCDM: ignored). Idempotent: writing the
    /// level the MDM already holds changes nothing, so a retry after a
    /// crash is safe. A missing attribute or tag is a permanent refusal
    /// ([`AdapterError::ActionNotPermitted`] naming what to create).
    async fn signal_risk(
        &self,
        device: &Device,
        level: SignalLevel,
        name: &str,
    ) -> Result<Receipt, AdapterError> {
        let _ = (device, level, name);
        Err(AdapterError::Rejected {
            status: 0,
            message: format!("{} takes no risk signal", self.kind()),
        })
    }

    /// How this MDM reports the level back, if it does.
    fn risk_read_back(&self) -> Option<RiskReadBack> {
        None
    }

    /// The level the MDM holds for each of `devices` under `name`, in order
    /// (`None`: nothing written, or a value that is no level). For
    /// [`RiskReadBack::Bulk`] the MDM is asked once for all of them; for
    /// [`RiskReadBack::PerDevice`] once per device.
    async fn read_risk(
        &self,
        devices: &[Device],
        name: &str,
    ) -> Result<Vec<Option<SignalLevel>>, AdapterError> {
        let _ = name;
        Ok(devices.iter().map(|d| d.reported_risk).collect())
    }

    /// For `test-connection`: the attributes or tags `name` needs that the
    /// MDM does not have (empty: all there, or nothing to check).
    async fn missing_risk_signal(&self, name: &str) -> Result<Vec<String>, AdapterError> {
        let _ = name;
        Ok(Vec::new())
    }
}
