//! The settings of one SOTI MobiControl integration.
//!
//! The daemon's config layer resolves secrets and builds these; this crate
//! only validates what it needs to talk to the server ([`SotiConfig::validate`]).

use mtd_adapter::http::HttpSettings;
use mtd_adapter::{AdapterError, Secret};
use url::Url;

/// Everything the adapter needs to reach one MobiControl server.
#[derive(Debug, Clone)]
pub struct SotiConfig {
    /// The integration's name in the connector's config (for logs and spans).
    pub name: String,
    /// The server's base URL, ending in `/MobiControl` (for example
    /// `https://mc.example.com/MobiControl`); requests go to `{base_url}/api/…`.
    pub base_url: Url,
    pub credentials: SotiCredentials,
    /// Timeouts and the extra trust anchor (`ca_cert`).
    pub http: HttpSettings,
    /// The reference id of the Wi-Fi profile an admin prepared to cut a device
    /// off the network; installed by `disconnect_wifi`, revoked by
    /// `remove_wifi_profile`. Without it those two commands fail with
    /// [`AdapterError::Config`].
    pub wifi_disconnect_profile_id: Option<String>,
    /// Devices per listing request (`take`).
    pub page_size: u32,
}

/// The API client registered with `MCAdmin.exe APIClientAdd` and the
/// MobiControl administrator the adapter logs in as (OAuth2 password grant).
#[derive(Debug, Clone)]
pub struct SotiCredentials {
    pub client_id: String,
    pub client_secret: Secret,
    pub username: String,
    pub password: Secret,
}

impl SotiConfig {
    /// Devices per page when the config does not say: large enough to keep a
    /// 10,000-device listing to 20 requests, small enough for a quick answer.
    pub const DEFAULT_PAGE_SIZE: u32 = 500;

    /// A config with the default transport settings and page size, and no
    /// Wi-Fi profile.
    pub fn new(name: impl Into<String>, base_url: Url, credentials: SotiCredentials) -> Self {
        SotiConfig {
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
        let prefix = |what: &str| format!("SOTI `{}`: {what}", self.name);
        mtd_adapter::http::check_base_url(&self.base_url, "https://mc.example.com/MobiControl")
            .map_err(|m| AdapterError::Config(prefix(&m)))?;
        if self.credentials.client_id.trim().is_empty() {
            return Err(AdapterError::Config(prefix("client_id is empty")));
        }
        if self.credentials.client_id.contains(':') {
            // The Basic header joins id and secret with a colon (SOTI's docs:
            // "these fields cannot otherwise contain a colon").
            return Err(AdapterError::Config(prefix(
                "client_id must not contain `:`",
            )));
        }
        if self.credentials.client_secret.is_empty() {
            return Err(AdapterError::Config(prefix("client_secret is empty")));
        }
        if self.credentials.username.trim().is_empty() {
            return Err(AdapterError::Config(prefix("username is empty")));
        }
        if self.credentials.password.is_empty() {
            return Err(AdapterError::Config(prefix("password is empty")));
        }
        // `take` is an int32 in SOTI's spec.
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

    fn config() -> SotiConfig {
        SotiConfig::new(
            "soti-eu",
            Url::parse("https://mc.example.com/MobiControl").unwrap(),
            SotiCredentials {
                client_id: "client-id".into(),
                client_secret: Secret::new("client-secret-value"),
                username: "api-admin".into(),
                password: Secret::new("password-value"),
            },
        )
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let text = format!("{:?}", config());
        assert!(!text.contains("client-secret-value"), "{text}");
        assert!(!text.contains("password-value"), "{text}");
        assert!(text.contains("**REDACTED**"));
    }

    #[test]
    fn a_valid_config_passes_and_broken_ones_name_the_key() {
        config().validate().unwrap();
        let mut c = config();
        c.page_size = 0;
        assert!(c.validate().unwrap_err().to_string().contains("page_size"));
        let mut c = config();
        c.credentials.client_id = "a:b".into();
        assert!(c.validate().unwrap_err().to_string().contains("client_id"));
        let mut c = config();
        c.base_url = Url::parse("ftp://mc.example.com/MobiControl").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("url"));
    }

    #[test]
    fn a_blank_wifi_profile_id_counts_as_none() {
        let mut c = config();
        c.wifi_disconnect_profile_id = Some("  ".into());
        assert_eq!(c.wifi_profile_id(), None);
        c.wifi_disconnect_profile_id = Some("prof-1".into());
        assert_eq!(c.wifi_profile_id(), Some("prof-1"));
    }
}
