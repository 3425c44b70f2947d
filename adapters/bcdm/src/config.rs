//! The settings of one BCDM integration, as the admin copies them from the
//! BCDM console: the API server URL, the access key, the secret key (from the
//! downloaded CSV) and the DM code.

use mtd_adapter::http::HttpSettings;
use mtd_adapter::{AdapterError, Secret};
use reqwest::header::HeaderValue;
use url::Url;

/// One BCDM integration.
#[derive(Debug, Clone)]
pub struct BcdmConfig {
    /// The integration's name (for logs and spans).
    pub name: String,
    /// The connector's tenant id: users without an email get
    /// `<tenant_id>-user@qmpr.com` (the integration guide's rule).
    pub tenant_id: String,
    /// The API server URL, e.g. `https://star19extapi.bizconcier-dm.com`; a
    /// base path (`https://host/bcdm`) is kept in front of `/api/v1/…`.
    pub base_url: Url,
    pub credentials: BcdmCredentials,
    pub http: HttpSettings,
    /// Records per listing request (`limit`): default 100, at most 200.
    pub page_size: u32,
    /// The client-side limit: requests in any rolling second (default 10, BCDM's own limit).
    pub max_requests_per_second: u32,
}

/// The credentials the BCDM console issues for an API integration.
#[derive(Debug, Clone)]
pub struct BcdmCredentials {
    pub access_key: String,
    /// Signs every request; never sent.
    pub secret_key: Secret,
    /// The DM code the access key belongs to.
    pub dm_code: String,
}

impl BcdmConfig {
    pub const DEFAULT_PAGE_SIZE: u32 = 100;
    /// BCDM answers 400 to a larger `limit`.
    pub const MAX_PAGE_SIZE: u32 = 200;
    pub const DEFAULT_MAX_REQUESTS_PER_SECOND: u32 = 10;

    /// A config with the default page size, rate limit and HTTP settings.
    pub fn new(
        name: impl Into<String>,
        tenant_id: impl Into<String>,
        base_url: Url,
        credentials: BcdmCredentials,
    ) -> Self {
        BcdmConfig {
            name: name.into(),
            tenant_id: tenant_id.into(),
            base_url,
            credentials,
            http: HttpSettings::default(),
            page_size: Self::DEFAULT_PAGE_SIZE,
            max_requests_per_second: Self::DEFAULT_MAX_REQUESTS_PER_SECOND,
        }
    }

    /// Checks what would otherwise fail on every request, with the fix in the message.
    pub(crate) fn validate(&self) -> Result<(), AdapterError> {
        let config = |msg: String| Err(AdapterError::Config(msg));
        if let Err(m) = mtd_adapter::http::check_base_url(
            &self.base_url,
            "https://star19extapi.bizconcier-dm.com",
        ) {
            return config(format!("BCDM `{}`: {m}", self.name));
        }
        if self.tenant_id.trim().is_empty() {
            return config("the tenant id is empty (it names the placeholder email)".into());
        }
        for (field, value) in [
            ("access_key", &self.credentials.access_key),
            ("dm_code", &self.credentials.dm_code),
        ] {
            if value.trim().is_empty() {
                return config(format!(
                    "BCDM {field} is empty: copy it from the BCDM console"
                ));
            }
            if HeaderValue::from_str(value).is_err() {
                return config(format!(
                    "BCDM {field} holds characters that cannot go in an HTTP header (a line break?)"
                ));
            }
        }
        if self.credentials.secret_key.is_empty() {
            return config(
                "BCDM secret_key is empty: take it from the CSV the BCDM console offers for download"
                    .into(),
            );
        }
        if self.page_size == 0 || self.page_size > Self::MAX_PAGE_SIZE {
            return config(format!(
                "BCDM page_size {} is out of range: 1 to {} (default {})",
                self.page_size,
                Self::MAX_PAGE_SIZE,
                Self::DEFAULT_PAGE_SIZE
            ));
        }
        if self.max_requests_per_second == 0 {
            return config("BCDM max_requests_per_second must be at least 1 (default 10)".into());
        }
        Ok(())
    }
}
