//! Pass two: from the raw files to [`Config`], with every semantic check,
//! secret resolution, path resolution and default.
//!
//! Each file gets a [`FileCheck`] that collects its errors and warnings at
//! byte offsets; they are sorted by position and turned into
//! `FILE:LINE:COL: message` at the end. A check that fails records an error
//! and yields `None`; the final [`Config`] is built only when no file had an
//! error, so a `None` never goes unreported.

use super::diag::{ConfigError, ConfigErrors, Source};
use super::policy::{
    kind_keeps_groups, split_group, PolicyConfig, PolicyMode, Rule, Severity, ThreatPattern,
    KNOWN_CATEGORIES,
};
use super::raw::{
    RawCredentials, RawDuration, RawIse, RawMain, RawMdm, RawPolicy, RawSecret, RawTenant,
    RawTenantIse, DURATION_FORMS,
};
use super::tls::{TlsConfig, TlsKey};
use super::{
    AdminConfig, Config, Credentials, DispatchConfig, IseConfig, IseTenantConfig, IseThreshold,
    MainFile, MdmConfig, Permit, ServerConfig, StoreConfig, SyncConfig, TenantConfig,
    DEFAULT_ISE_QUERY_MAX_SIZE, MAX_ISE_QUERY_MAX_SIZE,
};
use mtd_adapter::{ActionKind, MdmKind, Secret};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use url::Url;

/// Loads the main file at `main_path` and every tenant file of its tenants
/// directory; relative paths are resolved against the directory of the file
/// that names them. Returns every error found, in file order.
pub fn load(main_path: &Path) -> Result<Config, ConfigErrors> {
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();

    let main_src = match read_source(main_path, "config file") {
        Ok(src) => src,
        Err(e) => return Err(ConfigErrors(vec![e])),
    };
    let mut fc = FileCheck::new(&main_src);
    let main = fc.check_main();
    fc.finish(&mut errors, &mut warnings);

    let mut tenants = Vec::new();
    if let Some((dir, dir_offset, dir_given)) = &main.tenants_dir {
        let mut seen = Seen::default();
        let ise_enabled = main.ise.as_ref().map(|i| i.enabled);
        match tenant_files(dir) {
            Ok(files) => {
                if files.is_empty() {
                    warnings.push(format!(
                        "{}: no tenant files (*.toml) in {}; the daemon serves no tenant",
                        main_src.location(*dir_offset),
                        dir.display()
                    ));
                }
                for file in files {
                    let src = match read_source(&file, "tenant file") {
                        Ok(src) => src,
                        Err(e) => {
                            errors.push(e);
                            continue;
                        }
                    };
                    let mut fc = FileCheck::new(&src);
                    if let Some(t) = fc.check_tenant(&mut seen, ise_enabled) {
                        tenants.push(t);
                    }
                    fc.finish(&mut errors, &mut warnings);
                }
            }
            Err(why) => {
                let key = if *dir_given {
                    "`tenants.dir`: "
                } else {
                    "`tenants.dir` (default \"tenants.d\"): "
                };
                errors.push(main_src.error_at(
                    *dir_offset,
                    format!("{key}the tenants directory {} {why}", dir.display()),
                ));
            }
        }
    }

    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    match main {
        MainParts {
            server: Some(server),
            store: Some(store),
            admin: Some(admin),
            sync: Some(sync),
            dispatch: Some(dispatch),
            ise: Some(ise),
            tenants_dir: Some((tenants_dir, _, _)),
        } => Ok(Config {
            main_path: main_path.to_path_buf(),
            server,
            store,
            admin,
            tenants_dir,
            sync,
            dispatch,
            ise,
            tenants,
            warnings,
        }),
        // Unreachable in practice: every `None` above was recorded as an error.
        _ => Err(ConfigErrors(vec![main_src.error_at(
            0,
            "the configuration is incomplete (internal error: a check failed without a message)",
        )])),
    }
}

/// Loads the main file alone: `[server]` and `[admin]`, checked as
/// [`load`] checks them, without reading the tenant files. For the commands
/// that talk to the running daemon (`status`, `actions`, …): they need its
/// address and token, and must work while a tenant file is being edited.
pub fn load_main(main_path: &Path) -> Result<MainFile, ConfigErrors> {
    let main_src = read_source(main_path, "config file").map_err(|e| ConfigErrors(vec![e]))?;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut fc = FileCheck::new(&main_src);
    let main = fc.check_main();
    fc.finish(&mut errors, &mut warnings);
    match main {
        MainParts {
            server: Some(server),
            admin: Some(admin),
            ..
        } if errors.is_empty() => Ok(MainFile {
            main_path: main_path.to_path_buf(),
            server,
            admin,
        }),
        _ if !errors.is_empty() => Err(ConfigErrors(errors)),
        _ => Err(ConfigErrors(vec![main_src.error_at(
            0,
            "the configuration is incomplete (internal error: a check failed without a message)",
        )])),
    }
}

fn read_source(path: &Path, what: &str) -> Result<Source, ConfigError> {
    std::fs::read_to_string(path)
        .map(|text| Source::new(path.to_path_buf(), text))
        .map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 1,
            col: 1,
            message: format!("cannot read {what}: {e}"),
        })
}

/// Every `*.toml` file in `dir`, sorted by name; `Err` says what is wrong with the directory.
fn tenant_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if !dir.exists() {
        return Err("does not exist".into());
    }
    if !dir.is_dir() {
        return Err("is not a directory".into());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot be read: {e}"))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot be read: {e}"))?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// What the main file yields; `None` where a check failed.
struct MainParts {
    server: Option<ServerConfig>,
    store: Option<StoreConfig>,
    admin: Option<AdminConfig>,
    sync: Option<SyncConfig>,
    dispatch: Option<DispatchConfig>,
    ise: Option<IseConfig>,
    /// The resolved directory, the offset to report problems with it at, and
    /// whether the key was given. `None` only if the main file is unusable.
    tenants_dir: Option<(PathBuf, usize, bool)>,
}

/// What earlier tenant files claimed, for the checks across tenants.
#[derive(Default)]
struct Seen {
    /// Tenant id → the file that uses it.
    ids: HashMap<String, PathBuf>,
    /// `[ise] username` → the tenant id (as written) and file that use it.
    ise_usernames: HashMap<String, (String, PathBuf)>,
}

/// The longest `[ise] username` accepted.
const MAX_ISE_USERNAME_CHARS: usize = 128;

/// Which credential keys each kind takes (MDM-APIS.md), in the order of the docs.
fn credential_keys(kind: MdmKind) -> &'static [&'static str] {
    match kind {
        MdmKind::Soti => &["client_id", "client_secret", "username", "password"],
        MdmKind::Maas360 => &[
            "billing_id",
            "app_id",
            "app_version",
            "platform_id",
            "app_access_key",
            "username",
            "password",
        ],
        MdmKind::Airwatch => &["username", "password", "api_key"],
        MdmKind::Bcdm => &["access_key", "secret_key", "dm_code"],
    }
}

/// An admin token or agent secret shorter than this draws a warning at start.
const MIN_SECRET_BYTES: usize = 16;

/// Whether `url` points at this machine (plain http is fine there).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            let d = d.to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => false,
    }
}

/// Credential keys whose values grant access: a literal there draws a warning.
const SECRET_CREDENTIALS: [&str; 5] = [
    "client_secret",
    "password",
    "api_key",
    "secret_key",
    "app_access_key",
];

/// The checks of one file, collecting problems at byte offsets.
struct FileCheck<'s> {
    src: &'s Source,
    errors: Vec<(usize, String)>,
    warnings: Vec<(usize, String)>,
}

impl<'s> FileCheck<'s> {
    fn new(src: &'s Source) -> Self {
        FileCheck {
            src,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn error(&mut self, offset: usize, message: impl Into<String>) {
        self.errors.push((offset, message.into()));
    }

    fn warn(&mut self, offset: usize, message: impl Into<String>) {
        self.warnings.push((offset, message.into()));
    }

    /// Appends this file's problems, in position order, to the run's.
    fn finish(mut self, errors: &mut Vec<ConfigError>, warnings: &mut Vec<String>) {
        self.errors.sort_by_key(|(offset, _)| *offset);
        self.warnings.sort_by_key(|(offset, _)| *offset);
        errors.extend(
            self.errors
                .iter()
                .map(|(o, m)| self.src.error_at(*o, m.clone())),
        );
        warnings.extend(
            self.warnings
                .iter()
                .map(|(o, m)| format!("{}: {m}", self.src.location(*o))),
        );
    }

    /// Pass one for a whole file: syntax first (so syntax errors are not
    /// mistaken for a key's type error), then the typed structs.
    fn parse<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        if let Err(e) = toml::from_str::<toml::Table>(&self.src.text) {
            let offset = e.span().map_or(0, |s| s.start);
            let e = self.src.toml_error(&e, true);
            self.errors.push((offset, e.message));
            return None;
        }
        match toml::from_str::<T>(&self.src.text) {
            Ok(v) => Some(v),
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                let e = self.src.toml_error(&e, false);
                self.errors.push((offset, e.message));
                None
            }
        }
    }

    // ---- the main file -------------------------------------------------

    fn check_main(&mut self) -> MainParts {
        let Some(raw) = self.parse::<RawMain>() else {
            // The file is unusable, but the tenant files can still be checked
            // if the tenants directory can be read from it.
            let dir = toml::from_str::<toml::Table>(&self.src.text)
                .ok()
                .and_then(|t| t.get("tenants")?.get("dir")?.as_str().map(str::to_owned));
            // Without an explicit directory, a missing default one would
            // only add noise to the real error.
            return MainParts {
                server: None,
                store: None,
                admin: None,
                sync: None,
                dispatch: None,
                ise: None,
                tenants_dir: dir.map(|d| (self.src.dir().join(d), 0, true)),
            };
        };

        let defaults = ServerConfig::default();
        let listen = match &raw.server.listen {
            None => Some(defaults.listen),
            Some(l) => match l.get_ref().parse::<SocketAddr>() {
                Ok(listen) => Some(listen),
                Err(_) => {
                    self.error(
                        l.span().start,
                        format!(
                            "`server.listen`: invalid socket address `{}`, expected IP:PORT such as \"127.0.0.1:8080\"",
                            l.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let max_connections = match &raw.server.max_connections {
            None => Some(defaults.max_connections),
            Some(n) => self
                .int_in(n, "server.max_connections", 1, 1_000_000)
                .map(|n| n as u32),
        };
        let header_read_timeout = match &raw.server.header_read_timeout {
            None => Some(defaults.header_read_timeout),
            Some(d) => self.positive_duration(d, "server.header_read_timeout"),
        };
        let idle_timeout = match &raw.server.idle_timeout {
            None => Some(defaults.idle_timeout),
            Some(d) => self.positive_duration(d, "server.idle_timeout"),
        };
        let tls = self.tls(&raw.server.tls_cert, &raw.server.tls_key);
        let server = match (
            listen,
            max_connections,
            header_read_timeout,
            idle_timeout,
            tls,
        ) {
            (
                Some(listen),
                Some(max_connections),
                Some(header_read_timeout),
                Some(idle_timeout),
                Some(tls),
            ) => Some(ServerConfig {
                listen,
                max_connections,
                header_read_timeout,
                idle_timeout,
                tls,
            }),
            _ => None,
        };

        let store = match &raw.store.path {
            None => Some(StoreConfig {
                path: self.src.dir().join("data/mtd-connector.db"),
            }),
            Some(p) if p.get_ref().trim().is_empty() => {
                self.error(p.span().start, "`store.path` must not be empty");
                None
            }
            Some(p) => Some(StoreConfig {
                path: self.src.dir().join(p.get_ref()),
            }),
        };

        let admin = match &raw.admin.token {
            None => Some(AdminConfig { token: None }),
            Some(t) => self.resolve(t, "admin.token", true).map(|v| {
                if v.len() < MIN_SECRET_BYTES {
                    self.warn(
                        t.span().start,
                        format!(
                            "`admin.token` is shorter than {MIN_SECRET_BYTES} bytes: it can be guessed; \
                             use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)"
                        ),
                    );
                }
                AdminConfig {
                    token: Some(Secret::new(v)),
                }
            }),
        };

        let tenants_dir = match &raw.tenants.dir {
            None => (self.src.dir().join("tenants.d"), 0, false),
            Some(d) if d.get_ref().trim().is_empty() => {
                self.error(d.span().start, "`tenants.dir` must not be empty");
                (self.src.dir().join("tenants.d"), d.span().start, true)
            }
            Some(d) => (self.src.dir().join(d.get_ref()), d.span().start, true),
        };

        let full_sync_every = match &raw.sync.full_sync_every {
            None => Some(SyncConfig::default().full_sync_every),
            Some(d) => self.duration(d, "sync.full_sync_every"),
        };
        let max_removal_percent = match &raw.sync.max_removal_percent {
            None => Some(SyncConfig::default().max_removal_percent),
            Some(p) => self
                .int_in(p, "sync.max_removal_percent", 0, 100)
                .map(|p| p as u8),
        };
        let sync = match (full_sync_every, max_removal_percent) {
            (Some(full_sync_every), Some(max_removal_percent)) => Some(SyncConfig {
                full_sync_every,
                max_removal_percent,
                initial_sync: raw.sync.initial_sync.unwrap_or(true),
            }),
            _ => None,
        };

        let defaults = DispatchConfig::default();
        let max_attempts = match &raw.dispatch.max_attempts {
            None => Some(defaults.max_attempts),
            Some(n) => self
                .int_in(n, "dispatch.max_attempts", 1, 1000)
                .map(|n| n as u32),
        };
        let give_up_after = match &raw.dispatch.give_up_after {
            None => Some(defaults.give_up_after),
            Some(d) => match self.duration(d, "dispatch.give_up_after") {
                Some(Some(d)) => Some(d),
                Some(None) => {
                    self.error(
                        d.span().start,
                        "`dispatch.give_up_after` must be longer than 0: an action is never given up at once",
                    );
                    None
                }
                None => None,
            },
        };
        let per_mdm_concurrency = match &raw.dispatch.per_mdm_concurrency {
            None => Some(defaults.per_mdm_concurrency),
            Some(n) => self
                .int_in(n, "dispatch.per_mdm_concurrency", 1, 64)
                .map(|n| n as u32),
        };
        let dispatch = match (max_attempts, give_up_after, per_mdm_concurrency) {
            (Some(max_attempts), Some(give_up_after), Some(per_mdm_concurrency)) => {
                Some(DispatchConfig {
                    max_attempts,
                    give_up_after,
                    per_mdm_concurrency,
                })
            }
            _ => None,
        };

        let tls_given = raw.server.tls_cert.is_some() || raw.server.tls_key.is_some();
        let ise = self.check_main_ise(&raw.ise, tls_given);

        MainParts {
            server,
            store,
            admin,
            sync,
            dispatch,
            ise,
            tenants_dir: Some(tenants_dir),
        }
    }

    /// `[server] tls_cert` and `tls_key`: both or neither; both are read and
    /// checked now (see [`TlsConfig::load`]). `Some(None)`: plain HTTP.
    fn tls(
        &mut self,
        cert: &Option<Spanned<String>>,
        key: &Option<Spanned<String>>,
    ) -> Option<Option<TlsConfig>> {
        const BOTH: &str = "HTTPS needs both the certificate chain (`tls_cert`) and its private \
                            key (`tls_key`); leave both out to serve plain HTTP";
        let (cert, key) = match (cert, key) {
            (None, None) => return Some(None),
            (Some(c), None) => {
                self.error(
                    c.span().start,
                    format!("`server.tls_cert` is set but `server.tls_key` is not: {BOTH}"),
                );
                return None;
            }
            (None, Some(k)) => {
                self.error(
                    k.span().start,
                    format!("`server.tls_key` is set but `server.tls_cert` is not: {BOTH}"),
                );
                return None;
            }
            (Some(c), Some(k)) => (c, k),
        };
        let mut empty = false;
        for (v, name) in [(cert, "server.tls_cert"), (key, "server.tls_key")] {
            if v.get_ref().trim().is_empty() {
                self.error(v.span().start, format!("`{name}` must not be empty"));
                empty = true;
            }
        }
        if empty {
            return None;
        }
        let (cert_path, key_path) = (
            self.src.dir().join(cert.get_ref()),
            self.src.dir().join(key.get_ref()),
        );
        match TlsConfig::load(&cert_path, &key_path) {
            Ok(tls) => Some(Some(tls)),
            Err(problems) => {
                for (which, message) in problems {
                    let (at, name) = match which {
                        TlsKey::Cert => (cert.span().start, "server.tls_cert"),
                        TlsKey::Key => (key.span().start, "server.tls_key"),
                    };
                    self.error(at, format!("`{name}`: {message}"));
                }
                None
            }
        }
    }

    /// The main file's `[ise]`. `tls_given`: `[server]` names a certificate
    /// (without one, ISE needs a TLS proxy in front: a warning).
    fn check_main_ise(&mut self, raw: &RawIse, tls_given: bool) -> Option<IseConfig> {
        let enabled = raw.enabled.as_ref().is_some_and(|e| *e.get_ref());
        if let (true, Some(e), false) = (enabled, &raw.enabled, tls_given) {
            self.warn(
                e.span().start,
                "`ise.enabled`: Cisco ISE talks to an MDM server over HTTPS only, and \
                 `[server] tls_cert`/`tls_key` are not set: set them, or put a TLS proxy in front \
                 of the listener",
            );
        }
        let query_max_size = match &raw.query_max_size {
            None => Some(DEFAULT_ISE_QUERY_MAX_SIZE),
            Some(n) => self
                .int_in(
                    n,
                    "ise.query_max_size",
                    1,
                    i64::from(MAX_ISE_QUERY_MAX_SIZE),
                )
                .map(|n| n as u32),
        };
        let redirect_url = match &raw.redirect_url {
            None => Some(None),
            Some(u) => self
                .url(u, "ise.redirect_url", "https://enroll.example.com/")
                .map(Some),
        };
        Some(IseConfig {
            enabled,
            query_max_size: query_max_size?,
            redirect_url: redirect_url?,
        })
    }

    /// `"4h"`, `"90s"`, `"1h30m"` (humantime); `"0"` (or `0`) is off.
    fn duration(&mut self, d: &Spanned<RawDuration>, key: &str) -> Option<Option<Duration>> {
        let offset = d.span().start;
        match d.get_ref() {
            RawDuration::Number(0) => Some(None),
            RawDuration::Number(n) => {
                self.error(
                    offset,
                    format!("`{key}`: {n} has no unit; expected {DURATION_FORMS}"),
                );
                None
            }
            RawDuration::Text(t) if t.trim() == "0" => Some(None),
            RawDuration::Text(t) => match humantime::parse_duration(t.trim()) {
                Ok(d) if d.is_zero() => Some(None),
                Ok(d) => Some(Some(d)),
                Err(_) => {
                    self.error(
                        offset,
                        format!("`{key}`: invalid duration `{t}`, expected {DURATION_FORMS}"),
                    );
                    None
                }
            },
        }
    }

    /// A duration that must not be `0` (a timeout that never fires).
    fn positive_duration(&mut self, d: &Spanned<RawDuration>, key: &str) -> Option<Duration> {
        match self.duration(d, key) {
            Some(Some(d)) => Some(d),
            Some(None) => {
                self.error(
                    d.span().start,
                    format!("`{key}` must be longer than 0: a connection would never be closed"),
                );
                None
            }
            None => None,
        }
    }

    /// An integer in `min..=max`.
    fn int_in(&mut self, v: &Spanned<i64>, key: &str, min: i64, max: i64) -> Option<i64> {
        let n = *v.get_ref();
        if n < min {
            self.error(
                v.span().start,
                format!("`{key}` must be at least {min}, found {n}"),
            );
            None
        } else if n > max {
            self.error(
                v.span().start,
                format!("`{key}` must be at most {max}, found {n}"),
            );
            None
        } else {
            Some(n)
        }
    }

    fn u32_in(&mut self, v: &Spanned<i64>, key: &str, min: i64) -> Option<u32> {
        self.int_in(v, key, min, i64::from(u32::MAX))
            .map(|n| n as u32)
    }

    /// Resolves a secret (or a credential identifier, which takes the same
    /// forms). `warn_literal`: the value grants access, so a literal is
    /// flagged. No message here ever contains the value.
    fn resolve(
        &mut self,
        raw: &Spanned<RawSecret>,
        key: &str,
        warn_literal: bool,
    ) -> Option<String> {
        let offset = raw.span().start;
        let (value, origin) = match raw.get_ref() {
            RawSecret::Literal(v) => {
                if warn_literal {
                    self.warn(
                        offset,
                        format!("`{key}` is a literal; use {{ env = … }} or {{ file = … }} in production"),
                    );
                }
                (v.clone(), "the value".to_owned())
            }
            RawSecret::Env(var) => {
                if var.is_empty() {
                    self.error(offset, format!("`{key}`: `env` names no variable"));
                    return None;
                }
                match std::env::var(var) {
                    Ok(v) => (v, format!("environment variable {var}")),
                    Err(std::env::VarError::NotPresent) => {
                        self.error(
                            offset,
                            format!("`{key}`: environment variable {var} is not set"),
                        );
                        return None;
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        self.error(
                            offset,
                            format!("`{key}`: environment variable {var} is not valid UTF-8"),
                        );
                        return None;
                    }
                }
            }
            RawSecret::File(p) => {
                if p.is_empty() {
                    self.error(offset, format!("`{key}`: `file` names no file"));
                    return None;
                }
                let path = self.src.dir().join(p);
                match std::fs::read_to_string(&path) {
                    Ok(mut v) => {
                        // Files written by editors and `echo` end in a newline
                        // that is not part of the secret.
                        if v.ends_with('\n') {
                            v.pop();
                            if v.ends_with('\r') {
                                v.pop();
                            }
                        }
                        (v, format!("secret file {}", path.display()))
                    }
                    Err(e) => {
                        self.error(
                            offset,
                            format!("`{key}`: cannot read secret file {}: {e}", path.display()),
                        );
                        return None;
                    }
                }
            }
        };
        if value.is_empty() {
            self.error(offset, format!("`{key}` is empty ({origin} is empty)"));
            return None;
        }
        Some(value)
    }

    // ---- a tenant file -------------------------------------------------

    /// `ise_enabled`: the main file's `[ise] enabled` (`None`: the main file
    /// has errors of its own), for the warning about an `[ise]` with no effect.
    fn check_tenant(&mut self, seen: &mut Seen, ise_enabled: Option<bool>) -> Option<TenantConfig> {
        let seen_ids = &mut seen.ids;
        let raw = self.parse::<RawTenant>()?;

        let id = match &raw.id {
            None => {
                self.error(0, "`id` is required: the tenant id, [a-z0-9-]{1,63}");
                None
            }
            Some(id) => {
                let v = id.get_ref();
                let ok = (1..=63).contains(&v.len())
                    && v.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !ok {
                    self.error(
                        id.span().start,
                        format!(
                            "`id`: invalid tenant id `{v}`, expected 1 to 63 of a-z, 0-9 and -"
                        ),
                    );
                    None
                } else if let Some(first) = seen_ids.get(v) {
                    self.error(
                        id.span().start,
                        format!(
                            "`id`: tenant id `{v}` is already used by {}",
                            first.display()
                        ),
                    );
                    None
                } else {
                    seen_ids.insert(v.clone(), self.src.path.clone());
                    Some(v.clone())
                }
            }
        };

        let display_name = match &raw.display_name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.error(
                    n.span().start,
                    "`display_name` must not be empty (leave it out to use the id)",
                );
                None
            }
            Some(n) => Some(n.get_ref().clone()),
            None => id.clone(),
        };

        let agent_secret = match &raw.agent_secret {
            None => {
                self.error(
                    0,
                    "`agent_secret` is required: the key of the agents' request signatures, \
                     e.g. agent_secret = { env = \"TENANT_AGENT_SECRET\" }",
                );
                None
            }
            Some(s) => self.resolve(s, "agent_secret", true).map(|v| {
                if v.len() < MIN_SECRET_BYTES {
                    let tenant = raw.id.as_ref().map_or("", |id| id.get_ref().as_str());
                    self.warn(
                        s.span().start,
                        format!(
                            "`agent_secret` of tenant `{tenant}` is shorter than {MIN_SECRET_BYTES} bytes: \
                             agent signatures made with it can be forged; use at least {MIN_SECRET_BYTES} random bytes"
                        ),
                    );
                }
                Secret::new(v)
            }),
        };

        if raw.mdm.is_empty() {
            self.warn(
                0,
                "no [[mdm]] in this tenant: no device can be synced or acted on",
            );
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut mdms = Vec::new();
        let mut all_mdms_ok = true;
        for (i, entry) in raw.mdm.iter().enumerate() {
            // The entry's `[mdm.credentials]` header lies before the next `[[mdm]]`.
            let end = raw
                .mdm
                .get(i + 1)
                .map_or(self.src.text.len(), |next| next.span().start);
            let tenant = raw.id.as_ref().map_or("", |id| id.get_ref().as_str());
            match self.check_mdm(entry, end, &mut names, tenant) {
                Some(m) => mdms.push(m),
                None => all_mdms_ok = false,
            }
        }

        // The MDMs whose groups rules may name, as written: an entry with an
        // error of its own still counts, so its rules are not blamed for it.
        let mut group_mdms: Vec<(&str, Option<MdmKind>)> = Vec::new();
        for entry in &raw.mdm {
            let m = entry.get_ref();
            let Some(name) = m.name.as_ref().map(|n| n.get_ref().as_str()) else {
                continue;
            };
            if name.trim().is_empty() || group_mdms.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let kind = m.kind.as_ref().and_then(|k| k.get_ref().parse().ok());
            group_mdms.push((name, kind));
        }

        let policy = self.check_policy(&raw.policy, all_mdms_ok.then_some(&mdms[..]), &group_mdms);

        let tenant = raw.id.as_ref().map_or("", |id| id.get_ref().as_str());
        let ise = match &raw.ise {
            None => Some(None),
            Some(i) => self
                .check_tenant_ise(i, tenant, &mut seen.ise_usernames, ise_enabled)
                .map(Some),
        };

        Some(TenantConfig {
            id: id?,
            display_name: display_name?,
            agent_secret: agent_secret?,
            source: self.src.path.clone(),
            mdms: if all_mdms_ok { mdms } else { return None },
            policy: policy?,
            ise: ise?,
        })
    }

    /// A tenant's `[ise]`: the Basic credentials of its Cisco ISE. The user
    /// name selects the tenant, so it must be unique across tenant files.
    fn check_tenant_ise(
        &mut self,
        raw: &RawTenantIse,
        tenant: &str,
        usernames: &mut HashMap<String, (String, PathBuf)>,
        ise_enabled: Option<bool>,
    ) -> Option<IseTenantConfig> {
        // Where to report the section as a whole: its `[ise]` header, else
        // (dotted keys) its first key, else the start of the file.
        let table_at = self
            .src
            .find_header(0..self.src.text.len(), "ise")
            .or_else(|| {
                [
                    raw.username.as_ref().map(|v| v.span().start),
                    raw.password.as_ref().map(|v| v.span().start),
                    raw.noncompliant_at.as_ref().map(|v| v.span().start),
                ]
                .into_iter()
                .flatten()
                .min()
            })
            .unwrap_or(0);
        if ise_enabled == Some(false) {
            self.warn(
                table_at,
                format!(
                    "`[ise]` of tenant `{tenant}` has no effect: the Cisco ISE API is off \
                     (set `[ise] enabled = true` in the main file to serve it)"
                ),
            );
        }

        let username = match &raw.username {
            None => {
                self.error(
                    table_at,
                    "`ise.username` is required in [ise]: the HTTP Basic user name this \
                     tenant's Cisco ISE logs in with",
                );
                None
            }
            Some(u) => {
                let v = u.get_ref();
                let at = u.span().start;
                if v.trim().is_empty() {
                    self.error(at, "`ise.username` must not be empty");
                    None
                } else if v.chars().count() > MAX_ISE_USERNAME_CHARS {
                    self.error(
                        at,
                        format!(
                            "`ise.username` is longer than {MAX_ISE_USERNAME_CHARS} characters"
                        ),
                    );
                    None
                } else if v.contains(':') {
                    self.error(
                        at,
                        "`ise.username` must not contain `:`: HTTP Basic authentication \
                         cannot carry it in a user name",
                    );
                    None
                } else if v.chars().any(char::is_control) {
                    self.error(at, "`ise.username` must not contain control characters");
                    None
                } else if let Some((other, file)) = usernames.get(v) {
                    let by = if other.is_empty() {
                        file.display().to_string()
                    } else {
                        format!("tenant `{other}` ({})", file.display())
                    };
                    self.error(
                        at,
                        format!(
                            "`ise.username`: the ISE user name `{v}` is already used by {by}: \
                             it selects the tenant, so each tenant needs its own"
                        ),
                    );
                    None
                } else {
                    usernames.insert(v.clone(), (tenant.to_owned(), self.src.path.clone()));
                    Some(v.clone())
                }
            }
        };

        let password = match &raw.password {
            None => {
                self.error(
                    table_at,
                    "`ise.password` is required in [ise]: the HTTP Basic password of this \
                     tenant's Cisco ISE, e.g. password = { env = \"ACME_ISE_PASSWORD\" }",
                );
                None
            }
            Some(p) => self.resolve(p, "ise.password", true).map(Secret::new),
        };

        let noncompliant_at = match &raw.noncompliant_at {
            None => Some(IseThreshold::default()),
            Some(t) => match t.get_ref().parse::<IseThreshold>() {
                Ok(t) => Some(t),
                Err(msg) => {
                    self.error(t.span().start, format!("`ise.noncompliant_at`: {msg}"));
                    None
                }
            },
        };

        Some(IseTenantConfig {
            username: username?,
            password: password?,
            noncompliant_at: noncompliant_at?,
        })
    }

    fn check_mdm(
        &mut self,
        entry: &Spanned<RawMdm>,
        entry_end: usize,
        names: &mut HashMap<String, usize>,
        tenant: &str,
    ) -> Option<MdmConfig> {
        let at = entry.span().start;
        let m = entry.get_ref();

        let name = match &m.name {
            None => {
                self.error(at, "`mdm.name` is required");
                None
            }
            Some(n) if n.get_ref().trim().is_empty() => {
                self.error(n.span().start, "`mdm.name` must not be empty");
                None
            }
            Some(n) => {
                if let Some(line) = names.get(n.get_ref()) {
                    self.error(
                        n.span().start,
                        format!(
                            "`mdm.name`: duplicate MDM name `{}` in this tenant (first used on line {line})",
                            n.get_ref()
                        ),
                    );
                    None
                } else {
                    names.insert(n.get_ref().clone(), self.src.position(n.span().start).0);
                    Some(n.get_ref().clone())
                }
            }
        };

        let kind = match &m.kind {
            None => {
                self.error(
                    at,
                    "`mdm.kind` is required: soti, maas360 (alias: mcms), airwatch or bcdm",
                );
                None
            }
            Some(k) => match k.get_ref().parse::<MdmKind>() {
                // Earlier builds took `mcms` for AirWatch: such a file has AirWatch's `api_key`.
                Ok(MdmKind::Maas360)
                    if k.get_ref() == "mcms"
                        && m.credentials.as_ref().is_some_and(|c| c.api_key.is_some()) =>
                {
                    self.error(
                        k.span().start,
                        "`mdm.kind`: `mcms` is Cisco MCMS, which is IBM MaaS360, but these are AirWatch \
                         credentials (`api_key`): for VMware AirWatch / Workspace ONE UEM write `kind = \"airwatch\"`",
                    );
                    None
                }
                Ok(kind) => Some(kind),
                Err(msg) => {
                    self.error(k.span().start, format!("`mdm.kind`: {msg}"));
                    None
                }
            },
        };

        let url = match &m.url {
            None => {
                self.error(at, "`mdm.url` is required");
                None
            }
            Some(u) => self.url(u, "mdm.url", "https://mdm.example.com/MobiControl"),
        };
        if let (Some(u), Some(url)) = (&m.url, &url) {
            if url.scheme() == "http" && !is_loopback(url) {
                let mdm = name.as_deref().unwrap_or("");
                self.warn(
                    u.span().start,
                    format!(
                        "`mdm.url` of MDM `{mdm}` (tenant `{tenant}`) is plain http:// to {}, which is not \
                         this machine: its credentials and device data cross the network unencrypted; use https://",
                        url.host_str().unwrap_or("")
                    ),
                );
            }
        }

        let ca_cert = match &m.ca_cert {
            None => Some(None),
            Some(c) => {
                let path = self.src.dir().join(c.get_ref());
                let readable = std::fs::File::open(&path).and_then(|f| f.metadata());
                match readable {
                    Ok(meta) if meta.is_file() => Some(Some(path)),
                    Ok(_) => {
                        self.error(
                            c.span().start,
                            format!("`mdm.ca_cert`: {} is not a file", path.display()),
                        );
                        None
                    }
                    Err(e) => {
                        self.error(
                            c.span().start,
                            format!(
                                "`mdm.ca_cert`: cannot read CA certificate {}: {e}",
                                path.display()
                            ),
                        );
                        None
                    }
                }
            }
        };

        let permit = Permit {
            lock: m.permit.lock.unwrap_or(true),
            disconnect_wifi: m
                .permit
                .disconnect_wifi
                .as_ref()
                .is_some_and(|d| *d.get_ref()),
            enterprise_wipe: m.permit.enterprise_wipe.unwrap_or(false),
            wipe: m.permit.wipe.unwrap_or(false),
        };

        // The Wi-Fi profile keys: bcdm removes its own profile and takes neither.
        let mut wifi_ok = true;
        let mut profile_id = None;
        let mut removal_minutes = 120;
        if let Some(kind @ (MdmKind::Bcdm | MdmKind::Maas360)) = kind {
            let why = if kind == MdmKind::Bcdm {
                "BCDM removes its own disconnect-Wi-Fi profile (the removal time is set in the BCDM console)"
            } else {
                "MaaS360 has no call to take a device off Wi-Fi (a disconnect_wifi action is recorded skipped)"
            };
            for (key, offset) in [
                (
                    "wifi_disconnect_profile_id",
                    m.wifi_disconnect_profile_id
                        .as_ref()
                        .map(|v| v.span().start),
                ),
                (
                    "wifi_profile_removal_minutes",
                    m.wifi_profile_removal_minutes
                        .as_ref()
                        .map(|v| v.span().start),
                ),
            ] {
                if let Some(offset) = offset {
                    self.error(
                        offset,
                        format!("`mdm.{key}` is not accepted for kind {kind}: {why}"),
                    );
                    wifi_ok = false;
                }
            }
        } else {
            match &m.wifi_disconnect_profile_id {
                Some(p) if p.get_ref().trim().is_empty() => {
                    self.error(
                        p.span().start,
                        "`mdm.wifi_disconnect_profile_id` must not be empty",
                    );
                    wifi_ok = false;
                }
                Some(p) => profile_id = Some(p.get_ref().clone()),
                None => {
                    if let (Some(kind), Some(d)) = (kind, &m.permit.disconnect_wifi) {
                        if *d.get_ref() {
                            self.error(
                                d.span().start,
                                format!(
                                    "`mdm.wifi_disconnect_profile_id` is required for kind {kind} when \
                                     `mdm.permit.disconnect_wifi = true`: the profile that takes a device off Wi-Fi"
                                ),
                            );
                            wifi_ok = false;
                        }
                    }
                }
            }
            if let Some(minutes) = &m.wifi_profile_removal_minutes {
                match self.u32_in(minutes, "mdm.wifi_profile_removal_minutes", 1) {
                    Some(n) => removal_minutes = n,
                    None => wifi_ok = false,
                }
            }
        }

        let credentials = match kind {
            Some(kind) => self.credentials(m.credentials.as_ref(), kind, at, entry_end),
            None => None,
        };

        let mut risk_ok = true;
        let risk_signal = match &m.risk_signal {
            Some(r) if r.enabled.unwrap_or(false) => {
                let name = match &r.name {
                    None => Some(crate::config::DEFAULT_RISK_SIGNAL_NAME.to_string()),
                    Some(n) => {
                        let v = n.get_ref().trim();
                        let valid = !v.is_empty()
                            && v.len() <= 64
                            && v.chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                        if valid {
                            Some(v.to_string())
                        } else {
                            self.error(
                                n.span().start,
                                "`mdm.risk_signal.name`: 1 to 64 letters, digits, `_`, `-` or `.`                                  (the custom attribute, or the AirWatch tag prefix)",
                            );
                            risk_ok = false;
                            None
                        }
                    }
                };
                name.map(|name| crate::config::RiskSignalConfig { name })
            }
            _ => None,
        };
        if !risk_ok {
            return None;
        }

        Some(MdmConfig {
            name: name?,
            kind: kind?,
            url: url?,
            enabled: m.enabled.unwrap_or(true),
            background_sync: m.background_sync.unwrap_or(true),
            mask_pii: m.mask_pii.unwrap_or(false),
            ca_cert: ca_cert?,
            wifi_disconnect_profile_id: if wifi_ok { profile_id } else { return None },
            wifi_profile_removal_minutes: removal_minutes,
            credentials: credentials?,
            permit,
            risk_signal,
        })
    }

    /// An http or https URL with a host and no user info, at `key`;
    /// `example` is shown when it does not parse.
    fn url(&mut self, u: &Spanned<String>, key: &str, example: &str) -> Option<Url> {
        // The URL is never quoted back: it could carry user info.
        let offset = u.span().start;
        let url = match Url::parse(u.get_ref()) {
            Ok(url) => url,
            Err(e) => {
                self.error(
                    offset,
                    format!("`{key}`: not a valid URL ({e}); expected e.g. \"{example}\""),
                );
                return None;
            }
        };
        if url.scheme() != "http" && url.scheme() != "https" {
            self.error(
                offset,
                format!(
                    "`{key}`: scheme `{}` is not supported, expected http or https",
                    url.scheme()
                ),
            );
            return None;
        }
        if url.host_str().unwrap_or("").is_empty() {
            self.error(offset, format!("`{key}` has no host"));
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            let hint = if key == "mdm.url" {
                ": put them in [mdm.credentials]"
            } else {
                ""
            };
            self.error(
                offset,
                format!("`{key}` must not contain a user name or password{hint}"),
            );
            return None;
        }
        Some(url)
    }

    /// `[mdm.credentials]` complete for `kind`, with no key of another kind.
    fn credentials(
        &mut self,
        raw: Option<&RawCredentials>,
        kind: MdmKind,
        entry_at: usize,
        entry_end: usize,
    ) -> Option<Credentials> {
        let expected = credential_keys(kind);
        let Some(raw) = raw else {
            self.error(
                entry_at,
                format!(
                    "`mdm.credentials` is required for kind {kind} ({})",
                    expected.join(", ")
                ),
            );
            return None;
        };
        // Where to report a missing key: the `[mdm.credentials]` header, else
        // (inline table) the first key given, else the `[[mdm]]` entry.
        let table_at = self
            .src
            .find_header(entry_at..entry_end, "mdm.credentials")
            .or_else(|| {
                raw.entries()
                    .iter()
                    .filter_map(|(_, v)| v.map(|v| v.span().start))
                    .min()
            })
            .unwrap_or(entry_at);

        let mut values: HashMap<&str, String> = HashMap::new();
        let mut ok = true;
        for (key, value) in raw.entries() {
            let full = format!("mdm.credentials.{key}");
            match value {
                Some(v) if !expected.contains(&key) => {
                    self.error(
                        v.span().start,
                        format!(
                            "`{full}` is not a credential of kind {kind} (expected {})",
                            expected.join(", ")
                        ),
                    );
                    ok = false;
                }
                Some(v) => match self.resolve(v, &full, SECRET_CREDENTIALS.contains(&key)) {
                    Some(s) => {
                        values.insert(key, s);
                    }
                    None => ok = false,
                },
                None if expected.contains(&key) => {
                    self.error(table_at, format!("`{full}` is required for kind {kind}"));
                    ok = false;
                }
                None => {}
            }
        }
        if !ok {
            return None;
        }
        // Every expected key is in `values` now (a missing one set `ok = false`).
        let mut take = |k: &str| values.remove(k).unwrap_or_default();
        Some(match kind {
            MdmKind::Soti => Credentials::Soti {
                client_id: take("client_id"),
                client_secret: Secret::new(take("client_secret")),
                username: take("username"),
                password: Secret::new(take("password")),
            },
            MdmKind::Maas360 => Credentials::Maas360 {
                billing_id: take("billing_id"),
                app_id: take("app_id"),
                app_version: take("app_version"),
                platform_id: take("platform_id"),
                app_access_key: Secret::new(take("app_access_key")),
                username: take("username"),
                password: Secret::new(take("password")),
            },
            MdmKind::Airwatch => Credentials::Airwatch {
                username: take("username"),
                password: Secret::new(take("password")),
                api_key: Secret::new(take("api_key")),
            },
            MdmKind::Bcdm => Credentials::Bcdm {
                access_key: take("access_key"),
                secret_key: Secret::new(take("secret_key")),
                dm_code: take("dm_code"),
            },
        })
    }

    /// `[policy]`. `mdms` is `Some` when every MDM of the tenant checked out,
    /// so rules whose action no MDM permits can be flagged; `group_mdms` are
    /// the names (and kinds, where valid) of every `[[mdm]]` as written, which
    /// `groups` are checked against.
    fn check_policy(
        &mut self,
        raw: &RawPolicy,
        mdms: Option<&[MdmConfig]>,
        group_mdms: &[(&str, Option<MdmKind>)],
    ) -> Option<PolicyConfig> {
        let defaults = PolicyConfig::default();
        let mode = match &raw.mode {
            None => Some(defaults.mode),
            Some(m) => match m.get_ref().parse::<PolicyMode>() {
                Ok(mode) => Some(mode),
                Err(msg) => {
                    self.error(m.span().start, format!("`policy.mode`: {msg}"));
                    None
                }
            },
        };
        let cooldown = match &raw.action_cooldown_minutes {
            None => Some(defaults.action_cooldown_minutes),
            Some(v) => self.u32_in(v, "policy.action_cooldown_minutes", 0),
        };
        let max_destructive = match &raw.max_destructive_actions_per_hour {
            None => Some(defaults.max_destructive_actions_per_hour),
            Some(v) => self.u32_in(v, "policy.max_destructive_actions_per_hour", 0),
        };

        let mut rules: Vec<Rule> = Vec::new();
        // Per accepted rule: the offsets of its threat and action values.
        let mut offsets: Vec<(usize, usize)> = Vec::new();
        let mut rules_ok = true;
        for entry in &raw.rule {
            let at = entry.span().start;
            let r = entry.get_ref();
            let threat = match &r.threat {
                None => {
                    self.error(at, "`policy.rule.threat` is required: \"*\", \"category.*\" or \"category.name\"");
                    None
                }
                Some(t) => match t.get_ref().parse::<ThreatPattern>() {
                    Ok(p) => {
                        if let Some(c) = p.category() {
                            if !KNOWN_CATEGORIES.contains(&c) {
                                self.warn(
                                    t.span().start,
                                    format!(
                                        "`policy.rule.threat`: unknown threat category `{c}` (known: {})",
                                        KNOWN_CATEGORIES.join(", ")
                                    ),
                                );
                            }
                        }
                        Some((p, t.span().start))
                    }
                    Err(msg) => {
                        self.error(t.span().start, format!("`policy.rule.threat`: {msg}"));
                        None
                    }
                },
            };
            let min_severity = match &r.min_severity {
                None => Some(None),
                Some(s) => match s.get_ref().parse::<Severity>() {
                    Ok(s) => Some(Some(s)),
                    Err(msg) => {
                        self.error(s.span().start, format!("`policy.rule.min_severity`: {msg}"));
                        None
                    }
                },
            };
            let groups = match &r.groups {
                None => Some(Vec::new()),
                Some(items) => self.rule_groups(items, group_mdms),
            };
            let action = match &r.action {
                None => {
                    self.error(
                        at,
                        "`policy.rule.action` is required: none, lock, disconnect_wifi, enterprise_wipe or wipe",
                    );
                    None
                }
                Some(a) => match a.get_ref().parse::<ActionKind>() {
                    Ok(kind) => Some((kind, a.span().start)),
                    Err(msg) => {
                        self.error(a.span().start, format!("`policy.rule.action`: {msg}"));
                        None
                    }
                },
            };
            match (threat, min_severity, groups, action) {
                (
                    Some((threat, threat_at)),
                    Some(min_severity),
                    Some(groups),
                    Some((action, action_at)),
                ) => {
                    rules.push(Rule {
                        threat,
                        min_severity,
                        groups,
                        action,
                    });
                    offsets.push((threat_at, action_at));
                }
                _ => rules_ok = false,
            }
        }

        if rules_ok {
            self.rule_warnings(&rules, &offsets, mdms);
        }
        Some(PolicyConfig {
            mode: mode?,
            action_cooldown_minutes: cooldown?,
            max_destructive_actions_per_hour: max_destructive?,
            rules: if rules_ok { rules } else { return None },
        })
    }

    /// `policy.rule.groups`: each element a group of an MDM of this tenant
    /// that keeps groups, written `<MDM name> <the MDM's group name>`. Every
    /// bad element is reported at its own position; duplicates are harmless.
    fn rule_groups(
        &mut self,
        items: &[Spanned<toml::Value>],
        mdms: &[(&str, Option<MdmKind>)],
    ) -> Option<Vec<String>> {
        const FORM: &str =
            "the name of an [[mdm]] of this tenant, a space, then the MDM's group name, \
                            e.g. 'Acme SOTI \\\\Company\\Sales'";
        let mut groups = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            let at = item.span().start;
            let Some(group) = item.get_ref().as_str() else {
                self.error(
                    at,
                    format!(
                        "`policy.rule.groups`: a group must be a string ({FORM}), found {}",
                        a_toml_type(item.get_ref())
                    ),
                );
                ok = false;
                continue;
            };
            if group.trim().is_empty() {
                self.error(
                    at,
                    format!("`policy.rule.groups`: a group must not be empty: write {FORM}"),
                );
                ok = false;
                continue;
            }
            match split_group(group, mdms.iter().map(|(name, _)| *name)) {
                None => {
                    let known = if mdms.is_empty() {
                        "this tenant has no [[mdm]]".to_owned()
                    } else {
                        let names: Vec<String> =
                            mdms.iter().map(|(name, _)| format!("`{name}`")).collect();
                        format!("the MDMs of this tenant: {}", names.join(", "))
                    };
                    self.error(
                        at,
                        format!(
                            "`policy.rule.groups`: `{group}` does not start with the name of an MDM of this \
                             tenant followed by a space ({known})"
                        ),
                    );
                    ok = false;
                }
                Some((name, rest)) if rest.trim().is_empty() => {
                    self.error(
                        at,
                        format!(
                            "`policy.rule.groups`: `{group}` names the MDM `{name}` but none of its groups: \
                             write the MDM's group name after the space"
                        ),
                    );
                    ok = false;
                }
                Some((name, _)) => {
                    let kind = mdms.iter().find(|(n, _)| *n == name).and_then(|(_, k)| *k);
                    match kind {
                        Some(kind) if !kind_keeps_groups(kind) => {
                            self.error(
                                at,
                                format!(
                                    "`policy.rule.groups`: `{group}` names the MDM `{name}`, of kind {kind}: \
                                     maas360 and bcdm MDMs keep no groups, so no device would ever match \
                                     (only groups of soti and airwatch MDMs can be named)"
                                ),
                            );
                            ok = false;
                        }
                        _ => groups.push(group.to_owned()),
                    }
                }
            }
        }
        ok.then_some(groups)
    }

    /// Rules that can never act: shadowed by an earlier rule, or an action
    /// that no MDM of the tenant permits. Warnings, not errors: the config is
    /// consistent, just probably not what was meant.
    fn rule_warnings(
        &mut self,
        rules: &[Rule],
        offsets: &[(usize, usize)],
        mdms: Option<&[MdmConfig]>,
    ) {
        for (i, rule) in rules.iter().enumerate() {
            let shadow = rules[..i].iter().zip(offsets).find(|(earlier, _)| {
                earlier.threat.covers(&rule.threat)
                    && earlier.scope_covers(rule)
                    && match (earlier.min_severity, rule.min_severity) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(e), Some(r)) => e <= r,
                    }
            });
            if let Some((earlier, (earlier_at, _))) = shadow {
                self.warn(
                    offsets[i].0,
                    format!(
                        "`policy.rule.threat`: this rule never matches: the rule `{}` on line {} comes first \
                         and matches every threat (and device) this one does",
                        earlier.threat,
                        self.src.position(*earlier_at).0
                    ),
                );
            }
            if let Some(mdms) = mdms.filter(|m| !m.is_empty()) {
                // A rule with groups acts only on devices of the MDMs it names.
                let in_scope = |m: &&MdmConfig| {
                    rule.groups.is_empty()
                        || rule.groups.iter().any(|g| {
                            split_group(g, mdms.iter().map(|m| m.name.as_str()))
                                .is_some_and(|(name, _)| name == m.name)
                        })
                };
                if !mdms
                    .iter()
                    .filter(in_scope)
                    .any(|m| m.permit.allows(rule.action))
                {
                    let whose = if rule.groups.is_empty() {
                        "any MDM of this tenant"
                    } else {
                        "any MDM this rule's groups belong to"
                    };
                    self.warn(
                        offsets[i].1,
                        format!(
                            "`policy.rule.action`: `{}` is not permitted on {whose} \
                             (see [mdm.permit]); matching threats are recorded as skipped",
                            rule.action
                        ),
                    );
                }
            }
        }
    }
}

/// A TOML value's type with its article, for "found …" in messages (the value
/// itself is not quoted).
fn a_toml_type(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}
