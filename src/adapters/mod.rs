//! The adapter registry: one `match` from an MDM's configuration to its adapter.
//!
//! Four vendors are a closed set, so there is no plugin machinery: each arm
//! builds the vendor crate's own config (its credentials struct included) and
//! the result is held as `Arc<dyn MdmAdapter>` (atuin, Vector's closed enums).

mod health;
mod observed;

pub use health::{Backoff, IntegrationHealth};
pub use observed::InstrumentedAdapter;

use crate::config::{Credentials, MdmConfig, TenantConfig};
use mtd_adapter::http::HttpSettings;
use mtd_adapter::{AdapterError, MdmAdapter};
use std::sync::Arc;

/// Builds the adapter for one MDM of a tenant. Fails only on local problems
/// (an unreadable or invalid `ca_cert`); nothing is sent to the MDM here.
pub fn build(tenant: &TenantConfig, mdm: &MdmConfig) -> Result<Arc<dyn MdmAdapter>, AdapterError> {
    build_observed(tenant, mdm, None)
}

/// As [`build`]; the MDM's rate-limit answers also go to `health` (the status API's back-off).
pub fn build_observed(
    tenant: &TenantConfig,
    mdm: &MdmConfig,
    health: Option<Arc<IntegrationHealth>>,
) -> Result<Arc<dyn MdmAdapter>, AdapterError> {
    let http = http_settings(mdm)?;
    let adapter: Arc<dyn MdmAdapter> = match &mdm.credentials {
        Credentials::Soti {
            client_id,
            client_secret,
            username,
            password,
        } => Arc::new(mtd_adapter_soti::SotiAdapter::new(
            mtd_adapter_soti::SotiConfig {
                name: mdm.name.clone(),
                base_url: mdm.url.clone(),
                credentials: mtd_adapter_soti::SotiCredentials {
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    username: username.clone(),
                    password: password.clone(),
                },
                http,
                wifi_disconnect_profile_id: mdm.wifi_disconnect_profile_id.clone(),
                page_size: mtd_adapter_soti::SotiConfig::DEFAULT_PAGE_SIZE,
            },
        )?),
        Credentials::Maas360 {
            billing_id,
            app_id,
            app_version,
            platform_id,
            app_access_key,
            username,
            password,
        } => Arc::new(mtd_adapter_maas360::Maas360Adapter::new(
            mtd_adapter_maas360::Maas360Config {
                name: mdm.name.clone(),
                base_url: mdm.url.clone(),
                credentials: mtd_adapter_maas360::Maas360Credentials {
                    billing_id: billing_id.clone(),
                    app_id: app_id.clone(),
                    app_version: app_version.clone(),
                    platform_id: platform_id.clone(),
                    app_access_key: app_access_key.clone(),
                    username: username.clone(),
                    password: password.clone(),
                },
                http,
                page_size: mtd_adapter_maas360::Maas360Config::DEFAULT_PAGE_SIZE,
            },
        )?),
        Credentials::Airwatch {
            username,
            password,
            api_key,
        } => Arc::new(mtd_adapter_airwatch::AirwatchAdapter::new(
            mtd_adapter_airwatch::AirwatchConfig {
                name: mdm.name.clone(),
                base_url: mdm.url.clone(),
                credentials: mtd_adapter_airwatch::AirwatchCredentials {
                    username: username.clone(),
                    password: password.clone(),
                    api_key: api_key.clone(),
                },
                http,
                wifi_disconnect_profile_id: mdm.wifi_disconnect_profile_id.clone(),
                page_size: mtd_adapter_airwatch::AirwatchConfig::DEFAULT_PAGE_SIZE,
            },
        )?),
        Credentials::Bcdm {
            access_key,
            secret_key,
            dm_code,
        } => Arc::new(mtd_adapter_bcdm::BcdmAdapter::new(
            mtd_adapter_bcdm::BcdmConfig {
                name: mdm.name.clone(),
                tenant_id: tenant.id.clone(),
                base_url: mdm.url.clone(),
                credentials: mtd_adapter_bcdm::BcdmCredentials {
                    access_key: access_key.clone(),
                    secret_key: secret_key.clone(),
                    dm_code: dm_code.clone(),
                },
                http,
                // The largest page BCDM allows: a full sync is bounded by
                // its 10 requests per second, so fewer, larger pages halve
                // its floor (100,000 devices: 500 requests, not 1,000).
                page_size: mtd_adapter_bcdm::BcdmConfig::MAX_PAGE_SIZE,
                max_requests_per_second:
                    mtd_adapter_bcdm::BcdmConfig::DEFAULT_MAX_REQUESTS_PER_SECOND,
            },
        )?),
    };
    // Every call to the MDM is counted and timed, whoever makes it.
    Ok(observed::InstrumentedAdapter::wrap_observed(
        adapter, health,
    ))
}

fn http_settings(mdm: &MdmConfig) -> Result<HttpSettings, AdapterError> {
    let ca_cert_pem = match &mdm.ca_cert {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            AdapterError::Config(format!("cannot read ca_cert {}: {e}", path.display()))
        })?),
        None => None,
    };
    Ok(HttpSettings {
        ca_cert_pem,
        ..HttpSettings::default()
    })
}
