//! Configuration: the main file and one file per tenant (CONTRACT §2), loaded,
//! checked and resolved once, into typed values the rest of the daemon trusts.
//!
//! This module owns every config key, its default, its checks and its error
//! messages, and the resolution of secrets (`{ env }`, `{ file }` or a literal)
//! into [`Secret`], which never prints its value.
//!
//! Loading is two passes per file. Pass one (`raw`) is plain serde into
//! structs that mirror the file, with `deny_unknown_fields` everywhere and a
//! [`toml::Spanned`] on every value pass two looks at; there is no
//! `#[serde(flatten)]` and no internally tagged or untagged enum, because those
//! buffer the input, which loses the spans and silently disables
//! `deny_unknown_fields`. Pass two (`check`) turns the raw values into the
//! types below, and every semantic error is reported at the span of the value
//! (or the table) at fault as `FILE:LINE:COL: message`, naming the key. Errors
//! are collected across all files, so one `check-config` run lists them all
//! (serde stops at the first error of a file; the other files are still checked).
//!
//! `[server] tls_cert`/`tls_key` are read, parsed and checked here too (the
//! key must belong to the certificate), so `check-config` catches a bad
//! certificate and the listener only builds its acceptor from [`TlsConfig`].

mod check;
mod diag;
mod policy;
mod raw;
#[cfg(test)]
mod tests;
mod tls;

use mtd_adapter::{ActionKind, MdmKind, Secret};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use url::Url;

pub use check::{load, load_main};
pub use diag::{ConfigError, ConfigErrors};
pub use policy::{
    group_contains, kind_keeps_groups, split_group, PolicyConfig, PolicyMode, Rule, Severity,
    ThreatPattern, KNOWN_CATEGORIES,
};
pub use tls::TlsConfig;

/// Everything `run` needs from the config files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The main file as given on the command line.
    pub main_path: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub admin: AdminConfig,
    /// The tenants directory, resolved against the main file's directory.
    pub tenants_dir: PathBuf,
    pub sync: SyncConfig,
    pub dispatch: DispatchConfig,
    /// `[ise]`: the Cisco ISE MDM API (CONTRACT §7).
    pub ise: IseConfig,
    /// One per `*.toml` file of the tenants directory, sorted by file name.
    pub tenants: Vec<TenantConfig>,
    /// `FILE:LINE:COL: message` lines to log at start (literal secrets,
    /// unknown threat categories, rules that can never act). Never contain a
    /// secret value.
    pub warnings: Vec<String>,
}

/// What [`load_main`] reads: the main file's address and admin token only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainFile {
    /// The main file as given on the command line.
    pub main_path: PathBuf,
    pub server: ServerConfig,
    pub admin: AdminConfig,
}

/// The config the daemon runs on, replaced whole by a reload (SIGHUP).
///
/// Readers take a snapshot with [`LiveConfig::load`] and keep it for one
/// request or one action, so a reload never changes the config under work in
/// flight; a lock held only to clone an `Arc` costs nothing next to a request.
#[derive(Debug, Clone)]
pub struct LiveConfig(Arc<RwLock<Arc<Config>>>);

impl LiveConfig {
    pub fn new(config: Config) -> Self {
        LiveConfig(Arc::new(RwLock::new(Arc::new(config))))
    }

    /// The current config.
    pub fn load(&self) -> Arc<Config> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `config` the current one; snapshots taken before keep the old one.
    pub fn replace(&self, config: Arc<Config>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Agent API, admin API, health and metrics. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Client connections open at a time; more wait in the kernel's backlog
    /// to be accepted. 1..=1,000,000, default 1024 (CONTRACT §6).
    pub max_connections: u32,
    /// A connection must complete a request head within this of opening, or
    /// of the first byte of its next request. Default 30 s (CONTRACT §6).
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    /// Default 30 s (CONTRACT §6).
    pub idle_timeout: Duration,
    /// `tls_cert` and `tls_key`: serve HTTPS with this certificate chain and
    /// key, loaded and checked at config load. `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
}

/// The limits of CONTRACT §6, the defaults of `[server]`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            tls: None,
        }
    }
}

impl ServerConfig {
    /// `https` when the listener serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The SQLite file, resolved against the main file's directory.
    /// Default `data/mtd-connector.db`.
    pub path: PathBuf,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminConfig {
    /// Bearer token for `/v1/admin/*`; `None`: the admin API refuses every request.
    pub token: Option<Secret>,
}

/// `[sync]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// The scheduled full sync; `None` (`"0"`) turns scheduling off. Default 4 h.
    pub full_sync_every: Option<Duration>,
    /// A sync that would remove more than this share of an MDM's devices waits
    /// for a second run to confirm. 0..=100, default 20.
    pub max_removal_percent: u8,
    /// Sync each enabled MDM when the daemon starts (an MDM added or
    /// enabled by a reload is synced either way). Default true; false for
    /// harnesses that fill the store through on-demand lookups (not in
    /// CONTRACT §2: the contract's behaviour is the default).
    pub initial_sync: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            full_sync_every: Some(Duration::from_secs(4 * 3600)),
            max_removal_percent: 20,
            initial_sync: true,
        }
    }
}

/// `[dispatch]`: how hard the dispatcher tries before an action is `dead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchConfig {
    /// Attempts of a retryable failure before the action is given up. 1..=1000, default 12.
    pub max_attempts: u32,
    /// An action still failing this long after it was decided is given up. Default 24 h.
    pub give_up_after: Duration,
    /// MDM calls in flight per MDM. 1..=64, default 4.
    pub per_mdm_concurrency: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            max_attempts: 12,
            give_up_after: Duration::from_secs(24 * 3600),
            per_mdm_concurrency: 4,
        }
    }
}

/// The main file's `[ise]`: the Cisco ISE MDM API (CONTRACT §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IseConfig {
    /// Serve the ISE MDM API on the listener. Default `false`.
    pub enabled: bool,
    /// The most devices one ISE answer holds: a page of the compliance
    /// listing, the identifiers of one batch query. 1..=5000, default 1000.
    /// Not in CONTRACT §2 (an extension; the contract names the value only).
    pub query_max_size: u32,
    /// Where ISE sends users whose device is not registered (the MDM
    /// enrolment portal, `mdminfo`'s redirect URL). Optional, http or https.
    /// Not in CONTRACT §2 (an extension).
    pub redirect_url: Option<Url>,
}

/// `[ise] query_max_size` when the main file gives none, and its bounds.
pub const DEFAULT_ISE_QUERY_MAX_SIZE: u32 = 1000;
pub const MAX_ISE_QUERY_MAX_SIZE: u32 = 5000;

impl Default for IseConfig {
    fn default() -> Self {
        IseConfig {
            enabled: false,
            query_max_size: DEFAULT_ISE_QUERY_MAX_SIZE,
            redirect_url: None,
        }
    }
}

/// A tenant's `[ise]`: the credentials its Cisco ISE uses (CONTRACT §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IseTenantConfig {
    /// The HTTP Basic user name; selects the tenant. Unique across tenants
    /// (compared exactly), 1 to 128 characters, no `:`.
    pub username: String,
    /// The HTTP Basic password.
    pub password: Secret,
    /// The risk level from which ISE is told the device is not compliant.
    /// Default `high`.
    pub noncompliant_at: IseThreshold,
}

/// `[ise] noncompliant_at`: a device whose risk level is at or above this is
/// reported not compliant. Ordered `Low < … < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum IseThreshold {
    Low,
    Medium,
    #[default]
    High,
    Critical,
}

impl IseThreshold {
    pub const ALL: [IseThreshold; 4] = [
        IseThreshold::Low,
        IseThreshold::Medium,
        IseThreshold::High,
        IseThreshold::Critical,
    ];

    /// As written in the config: `low`, `medium`, `high`, `critical`.
    pub fn as_str(self) -> &'static str {
        self.severity().as_str()
    }

    /// The threat severity (and risk level) of the same name.
    pub fn severity(self) -> Severity {
        match self {
            IseThreshold::Low => Severity::Low,
            IseThreshold::Medium => Severity::Medium,
            IseThreshold::High => Severity::High,
            IseThreshold::Critical => Severity::Critical,
        }
    }

    /// Whether a device at risk level `level` (`None`: secured) is not compliant.
    pub fn is_reached_by(self, level: Option<Severity>) -> bool {
        level.is_some_and(|l| l >= self.severity())
    }
}

impl std::fmt::Display for IseThreshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IseThreshold {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IseThreshold::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("unknown risk level `{s}`, expected one of: low, medium, high, critical")
            })
    }
}

/// One tenant file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    /// `[a-z0-9-]{1,63}`, unique across files.
    pub id: String,
    /// Default: the id.
    pub display_name: String,
    /// Key of the agents' request signatures.
    pub agent_secret: Secret,
    /// The file this tenant came from.
    pub source: PathBuf,
    pub mdms: Vec<MdmConfig>,
    pub policy: PolicyConfig,
    /// `[ise]`: this tenant's Cisco ISE credentials. `None`: no ISE for this tenant.
    pub ise: Option<IseTenantConfig>,
}

impl TenantConfig {
    /// The MDM a group belongs to and the MDM's own group name: for the
    /// display string `Acme SOTI \\Company\Sales`, the `[[mdm]]` named
    /// `Acme SOTI` and `\\Company\Sales`. `None` when no MDM of the tenant
    /// prefixes it. See [`split_group`].
    pub fn group_mdm<'a>(&self, group: &'a str) -> Option<(&MdmConfig, &'a str)> {
        let (name, rest) = split_group(group, self.mdms.iter().map(|m| m.name.as_str()))?;
        let mdm = self.mdms.iter().find(|m| m.name == name)?;
        Some((mdm, rest))
    }
}

/// One `[[mdm]]` of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmConfig {
    /// Unique in the tenant; prefixes group names.
    pub name: String,
    pub kind: MdmKind,
    /// http or https, with a host, without user info.
    pub url: Url,
    /// `false`: kept in the config but not synced, looked up or acted on
    /// (`test-connection` still works). Default `true`.
    pub enabled: bool,
    /// `false`: no scheduled sync; the initial sync when the MDM is added or
    /// enabled still runs. Default `true`.
    pub background_sync: bool,
    /// Default `false`.
    pub mask_pii: bool,
    /// Extra trust anchor for this MDM only, resolved against the tenant file's
    /// directory; checked to exist and be readable at load.
    pub ca_cert: Option<PathBuf>,
    /// soti, airwatch: the profile that takes a device off Wi-Fi. Required there
    /// when `permit.disconnect_wifi`; never set for maas360 and bcdm.
    pub wifi_disconnect_profile_id: Option<String>,
    /// soti, airwatch: when the connector revokes that profile again. Default 120,
    /// always > 0. Unused for bcdm (it removes its own profile) and maas360.
    pub wifi_profile_removal_minutes: u32,
    pub credentials: Credentials,
    pub permit: Permit,
    /// `[mdm.risk_signal]` with `enabled = true`: the connector keeps each
    /// device's risk level written in this MDM (CONTRACT §4). `None`: off.
    pub risk_signal: Option<RiskSignalConfig>,
}

/// `[mdm.risk_signal]`, when enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskSignalConfig {
    /// soti, maas360: the device custom attribute; airwatch: the tag prefix
    /// (`{name}_High`); bcdm: unused. Default `MTD_Threat_Level`.
    pub name: String,
}

/// The attribute or tag prefix when `[mdm.risk_signal]` gives none.
pub const DEFAULT_RISK_SIGNAL_NAME: &str = "MTD_Threat_Level";

/// `[mdm.credentials]`, complete for the entry's kind (see MDM-APIS.md).
///
/// Identifiers (`client_id`, `username`, `access_key`, `dm_code`) are plain
/// strings; everything that grants access is a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Soti {
        client_id: String,
        client_secret: Secret,
        username: String,
        password: Secret,
    },
    Maas360 {
        billing_id: String,
        app_id: String,
        app_version: String,
        platform_id: String,
        app_access_key: Secret,
        username: String,
        password: Secret,
    },
    Airwatch {
        username: String,
        password: Secret,
        api_key: Secret,
    },
    Bcdm {
        access_key: String,
        secret_key: Secret,
        dm_code: String,
    },
}

impl Credentials {
    pub fn kind(&self) -> MdmKind {
        match self {
            Credentials::Soti { .. } => MdmKind::Soti,
            Credentials::Maas360 { .. } => MdmKind::Maas360,
            Credentials::Airwatch { .. } => MdmKind::Airwatch,
            Credentials::Bcdm { .. } => MdmKind::Bcdm,
        }
    }
}

/// `[mdm.permit]`: which MDM actions the tenant allows on this MDM.
/// Only `lock` is on by default; Wi-Fi and destructive actions are opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    pub lock: bool,
    pub disconnect_wifi: bool,
    pub enterprise_wipe: bool,
    pub wipe: bool,
}

impl Default for Permit {
    fn default() -> Self {
        Permit {
            lock: true,
            disconnect_wifi: false,
            enterprise_wipe: false,
            wipe: false,
        }
    }
}

impl Permit {
    /// Whether the action may be sent to this MDM (`none` sends nothing, so always).
    pub fn allows(&self, action: ActionKind) -> bool {
        match action {
            ActionKind::None => true,
            ActionKind::Lock => self.lock,
            ActionKind::DisconnectWifi => self.disconnect_wifi,
            ActionKind::EnterpriseWipe => self.enterprise_wipe,
            ActionKind::Wipe => self.wipe,
        }
    }
}
