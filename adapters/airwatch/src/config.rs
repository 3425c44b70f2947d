//! The settings of one AirWatch (Workspace ONE UEM) integration.
//!
//! The daemon's config layer resolves secrets and builds these; this crate
//! only validates what it needs to talk to the server ([`AirwatchConfig::validate`]).

use mtd_adapter::http::HttpSettings;
use mtd_adapter::{AdapterError, Secret};
use reqwest::header::HeaderValue;
use url::Url;

/// Everything the adapter needs to reach one AirWatch / Workspace ONE UEM API server.
#[derive(Debug, Clone)]
pub struct AirwatchConfig {
    /// The integration's name in the connector's config (for logs and spans).
    pub name: String,
    /// The API server's base URL (for example `https://as1506.awmdm.com`);
    /// requests go to `{base_url}/API/…`.
    pub base_url: Url,
    pub credentials: AirwatchCredentials,
    /// Timeouts and the extra trust anchor (`ca_cert`).
    pub http: HttpSettings,
    /// The numeric id of the Wi-Fi profile an admin prepared to cut a device
    /// off the network; installed by `disconnect_wifi`, removed by
    /// `remove_wifi_profile`. Without it those two commands fail with
    /// [`AdapterError::Config`].
    pub wifi_disconnect_profile_id: Option<String>,
    /// Records per listing request (`pagesize`).
    pub page_size: u32,
}

/// The AirWatch administrator account the adapter acts as (HTTP Basic) and
/// the tenant's REST API key (sent as `aw-tenant-code`).
#[derive(Debug, Clone)]
pub struct AirwatchCredentials {
    pub username: String,
    pub password: Secret,
    pub api_key: Secret,
}

impl AirwatchConfig {
    /// Records per page when the config does not say: AirWatch's own default
    /// page size, and a 10,000-device listing in 20 requests.
    pub const DEFAULT_PAGE_SIZE: u32 = 500;

    /// A config with the default transport settings and page size, and no
    /// Wi-Fi profile.
    pub fn new(name: impl Into<String>, base_url: Url, credentials: AirwatchCredentials) -> Self {
        AirwatchConfig {
            name: name.into(),
            base_url,
            credentials,
            http: HttpSettings::default(),
            wifi_disconnect_profile_id: None,
            page_size: Self::DEFAULT_PAGE_SIZE,
        }
    }

    /// Checks what would otherwise fail only at the first request.
    pub fn validate(&self) -> Result<(), AdapterError> {
        let prefix = |what: &str| format!("AirWatch `{}`: {what}", self.name);
        mtd_adapter::http::check_base_url(&self.base_url, "https://as1506.awmdm.com")
            .map_err(|m| AdapterError::Config(prefix(&m)))?;
        if self.credentials.username.trim().is_empty() {
            return Err(AdapterError::Config(prefix("username is empty")));
        }
        if self.credentials.username.contains(':') {
            // HTTP Basic joins user name and password with a colon (RFC 7617).
            return Err(AdapterError::Config(prefix(
                "username must not contain `:`",
            )));
        }
        if self.credentials.password.is_empty() {
            return Err(AdapterError::Config(prefix("password is empty")));
        }
        if self.credentials.api_key.is_empty() {
            return Err(AdapterError::Config(prefix("api_key is empty")));
        }
        if HeaderValue::from_str(self.credentials.api_key.expose()).is_err() {
            // Checked here so that the first request cannot fail on it; the
            // message must not show the value.
            return Err(AdapterError::Config(prefix(
                "api_key holds characters that cannot be sent in an HTTP header",
            )));
        }
        // `pagesize` is an int32 in the AirWatch API.
        if self.page_size == 0 || self.page_size > i32::MAX as u32 {
            return Err(AdapterError::Config(prefix(
                "page_size must be between 1 and 2147483647",
            )));
        }
        Ok(())
    }

    /// The Wi-Fi profile id, when one is configured (blank counts as none).
    pub(crate) fn wifi_profile_id(&self) -> Option<&str> {
        self.wifi_disconnect_profile_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AirwatchConfig {
        AirwatchConfig::new(
            "airwatch-eu",
            Url::parse("https://as1506.awmdm.com").unwrap(),
            AirwatchCredentials {
                username: "api-admin".into(),
                password: Secret::new("password-value"),
                api_key: Secret::new("tenant-code-value"),
            },
        )
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let text = format!("{:?}", config());
        assert!(!text.contains("password-value"), "{text}");
        assert!(!text.contains("tenant-code-value"), "{text}");
        assert!(text.contains("**REDACTED**"));
    }

    #[test]
    fn a_valid_config_passes_and_broken_ones_name_the_key() {
        config().validate().unwrap();
        let mut c = config();
        c.page_size = 0;
        assert!(c.validate().unwrap_err().to_string().contains("page_size"));
        let mut c = config();
        c.credentials.username = "a:b".into();
        assert!(c.validate().unwrap_err().to_string().contains("username"));
        let mut c = config();
        c.credentials.api_key = Secret::new("");
        assert!(c.validate().unwrap_err().to_string().contains("api_key"));
        let mut c = config();
        c.credentials.api_key = Secret::new("bad\nkey");
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("api_key") && !e.contains("bad"), "{e}");
        let mut c = config();
        c.base_url = Url::parse("ftp://as1506.awmdm.com").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("url"));
    }

    #[test]
    fn a_blank_wifi_profile_id_counts_as_none() {
        let mut c = config();
        c.wifi_disconnect_profile_id = Some("  ".into());
        assert_eq!(c.wifi_profile_id(), None);
        c.wifi_disconnect_profile_id = Some("4711".into());
        assert_eq!(c.wifi_profile_id(), Some("4711"));
    }
}
