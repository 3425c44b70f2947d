//! The settings of one IBM MaaS360 integration (Cisco MCMS).
//!
//! The daemon's config layer resolves secrets and builds these; this crate
//! only validates what it needs to talk to the server ([`Maas360Config::validate`]).

use mtd_adapter::http::HttpSettings;
use mtd_adapter::{AdapterError, Secret};
use url::Url;

/// Everything the adapter needs to reach one MaaS360 instance.
#[derive(Debug, Clone)]
pub struct Maas360Config {
    /// The integration's name in the connector's config (for logs and spans).
    pub name: String,
    /// The instance root (for example `https://services.fiberlink.com`);
    /// every path below it carries the billing id.
    pub base_url: Url,
    pub credentials: Maas360Credentials,
    /// Timeouts and the extra trust anchor (`ca_cert`).
    pub http: HttpSettings,
    /// Devices and users per search request (`pageSize`: 25, 50, 100, 200 or 250).
    pub page_size: u32,
}

/// The web-services credentials IBM provisions for a customer
/// (MDM-APIS.md): the billing id, the app registration and an administrator.
#[derive(Debug, Clone)]
pub struct Maas360Credentials {
    pub billing_id: String,
    pub app_id: String,
    pub app_version: String,
    pub platform_id: String,
    pub app_access_key: Secret,
    pub username: String,
    pub password: Secret,
}

impl Maas360Config {
    /// The largest page the search APIs allow.
    pub const DEFAULT_PAGE_SIZE: u32 = 250;
    /// The page sizes the search APIs accept.
    pub const PAGE_SIZES: [u32; 5] = [25, 50, 100, 200, 250];

    /// A config with the default transport settings and page size.
    pub fn new(name: impl Into<String>, base_url: Url, credentials: Maas360Credentials) -> Self {
        Maas360Config {
            name: name.into(),
            base_url,
            credentials,
            http: HttpSettings::default(),
            page_size: Self::DEFAULT_PAGE_SIZE,
        }
    }

    /// Checks what would otherwise fail only at the first request.
    pub fn validate(&self) -> Result<(), AdapterError> {
        let prefix = |what: &str| format!("MaaS360 `{}`: {what}", self.name);
        mtd_adapter::http::check_base_url(&self.base_url, "https://services.fiberlink.com")
            .map_err(|m| AdapterError::Config(prefix(&m)))?;
        let c = &self.credentials;
        for (key, value) in [
            ("billing_id", c.billing_id.as_str()),
            ("app_id", c.app_id.as_str()),
            ("app_version", c.app_version.as_str()),
            ("platform_id", c.platform_id.as_str()),
            ("username", c.username.as_str()),
        ] {
            if value.trim().is_empty() {
                return Err(AdapterError::Config(prefix(&format!("{key} is empty"))));
            }
        }
        if !c
            .billing_id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            // It is a path segment of every request.
            return Err(AdapterError::Config(prefix(
                "billing_id may hold only letters, digits, `-` and `_`",
            )));
        }
        if c.app_access_key.is_empty() {
            return Err(AdapterError::Config(prefix("app_access_key is empty")));
        }
        if c.password.is_empty() {
            return Err(AdapterError::Config(prefix("password is empty")));
        }
        if !Self::PAGE_SIZES.contains(&self.page_size) {
            return Err(AdapterError::Config(prefix(&format!(
                "page size {} is not one of 25, 50, 100, 200, 250",
                self.page_size
            ))));
        }
        Ok(())
    }
}
