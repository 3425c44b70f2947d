//! The admin API's client, for the commands that talk to the running daemon
//! (`status`, `actions`, `approve`, `cancel`, and `sync` when a daemon runs).
//!
//! Where the daemon is comes from the main file alone ([`crate::config::load_main`]):
//! `[server] listen`, with an unspecified address (`0.0.0.0`, `::`) reached
//! on loopback, and `https` when `[server] tls_cert` is set. The TLS check
//! pins that very certificate instead of trusting a CA: the client connects
//! to an IP address the certificate need not name, and the config says
//! exactly which certificate the daemon serves. The token is `[admin] token`,
//! resolved as the daemon resolves it (`{ file }`, `{ env }`, literal).
//!
//! "A daemon runs on the config" ([`AdminClient::daemon_present`]) means:
//! a TCP connection to that address is accepted. Only a refused connection
//! means none; whatever accepts is then asked through the admin API, and a
//! refusal there is an error, so `sync` never starts a second engine beside
//! a daemon it could not talk to.

use crate::config::MainFile;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;

/// How long a connection to the daemon may take (it is on this machine).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to the daemon, in words an admin can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the daemon at {url}: {reason}; is `mtd-connector run` running on this config?")]
    Unreachable { url: String, reason: String },
    #[error("{config} sets no [admin] token: the daemon's admin API refuses every request without one (set it, then restart the daemon)")]
    NoToken { config: PathBuf },
    #[error("the daemon at {url} refused the admin token: the token that {config} names ([admin] token) is not the daemon's")]
    Unauthorized { url: String, config: PathBuf },
    #[error("the daemon has no tenant `{0}`")]
    UnknownTenant(String),
    #[error("tenant `{tenant}` has no action {id}")]
    UnknownAction { tenant: String, id: String },
    #[error("the daemon refused: {0}")]
    Refused(String),
    #[error("something answers at {url}, but not as the mtd-connector daemon does ({what})")]
    NotTheDaemon { url: String, what: String },
    #[error("cannot set up the connection to the daemon: {0}")]
    Setup(String),
}

/// A client of one daemon's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    /// `http://127.0.0.1:8080`, without a trailing slash.
    base: String,
    addr: SocketAddr,
    token: Option<mtd_adapter::Secret>,
    config: PathBuf,
}

/// Where a client connects for a daemon that listens on `listen`.
pub fn connect_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

impl AdminClient {
    /// A client for the daemon that `main` configures.
    pub fn new(main: &MainFile) -> Result<AdminClient, ClientError> {
        let addr = connect_address(main.server.listen);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mtd-connector-cli/", env!("CARGO_PKG_VERSION")));
        let scheme = match &main.server.tls {
            Some(tls) => {
                let leaf = tls.chain.first().ok_or_else(|| {
                    ClientError::Setup("[server] tls_cert holds no certificate".into())
                })?;
                builder = builder.use_preconfigured_tls(pinned_tls(leaf.clone())?);
                "https"
            }
            None => "http",
        };
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(AdminClient {
            http,
            base: format!("{scheme}://{addr}"),
            addr,
            token: main.admin.token.clone(),
            config: main.main_path.clone(),
        })
    }

    /// The daemon's base URL (`http://127.0.0.1:8080`).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Whether something accepts connections at the daemon's address (see
    /// the module's header). Refused: `Ok(false)`; accepted: `Ok(true)`;
    /// anything else (a timeout, say) cannot tell and is an error.
    pub async fn daemon_present(&self) -> Result<bool, ClientError> {
        if self.addr.port() == 0 {
            // A port chosen at start: no daemon can be found from this config.
            return Ok(false);
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(self.addr)).await
        {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(false),
            Ok(Err(e)) => Err(self.unreachable(io_words(&e))),
            Err(_) => {
                Err(self.unreachable(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))
            }
        }
    }

    fn unreachable(&self, reason: String) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }

    /// `GET path` (from `/v1/admin/…` on), the answer's JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(reqwest::Method::GET, path).await
    }

    /// `POST path` without a body, the answer's JSON.
    pub async fn post(&self, path: &str) -> Result<Value, ClientError> {
        self.send(reqwest::Method::POST, path).await
    }

    async fn send(&self, method: reqwest::Method, path: &str) -> Result<Value, ClientError> {
        if self.addr.port() == 0 {
            return Err(self.unreachable(
                "[server] listen has port 0 (a free port chosen at start), so the config does not say where the daemon is".into(),
            ));
        }
        let token = self.token.as_ref().ok_or_else(|| ClientError::NoToken {
            config: self.config.clone(),
        })?;
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| self.unreachable(reqwest_words(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.unreachable(reqwest_words(&e)))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return json.ok_or_else(|| ClientError::NotTheDaemon {
                url: self.base.clone(),
                what: format!("HTTP {status} without a JSON body"),
            });
        }
        let Some(json) = json.filter(|j| j.get("error").is_some()) else {
            return Err(ClientError::NotTheDaemon {
                url: self.base.clone(),
                what: format!("HTTP {status}"),
            });
        };
        let code = json["error"].as_str().unwrap_or_default();
        Err(match (status.as_u16(), code) {
            (401, _) => ClientError::Unauthorized {
                url: self.base.clone(),
                config: self.config.clone(),
            },
            (_, "tenant_not_found") => ClientError::UnknownTenant(path_tenant(path)),
            (_, "action_not_found") => ClientError::UnknownAction {
                tenant: path_tenant(path),
                id: path_action(path),
            },
            (_, "not_held") => ClientError::Refused(format!(
                "action {} is {}, not held: only a held action can be approved",
                path_action(path),
                json["state"].as_str().unwrap_or("in another state")
            )),
            _ => ClientError::Refused(refusal_words(status.as_u16(), &json)),
        })
    }

    /// Every item of a paged list (`{"items": …, "next_cursor": …}`), up to `max`.
    pub async fn get_all(&self, path: &str, max: usize) -> Result<(Vec<Value>, bool), ClientError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let sep = if path.contains('?') { '&' } else { '?' };
        loop {
            let page_path = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_string(),
            };
            let page = self.get(&page_path).await?;
            let Some(list) = page["items"].as_array() else {
                return Err(ClientError::NotTheDaemon {
                    url: self.base.clone(),
                    what: "a list without `items`".into(),
                });
            };
            items.extend(list.iter().cloned());
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if items.len() >= max {
                let more = cursor.is_some() || items.len() > max;
                items.truncate(max);
                return Ok((items, more));
            }
            if cursor.is_none() {
                return Ok((items, false));
            }
        }
    }
}

/// The tenant id of `/v1/admin/tenants/{id}/…`.
fn path_tenant(path: &str) -> String {
    path.strip_prefix("/v1/admin/tenants/")
        .and_then(|rest| rest.split(['/', '?']).next())
        .map(percent_decode)
        .unwrap_or_default()
}

/// The action id of `…/actions/{id}/approve|cancel`.
fn path_action(path: &str) -> String {
    let mut parts = path.split('/');
    while let Some(p) = parts.next() {
        if p == "actions" {
            return parts.next().map(percent_decode).unwrap_or_default();
        }
    }
    String::new()
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// A path segment, percent-encoded (tenant ids are plain, but a typo need not be).
pub fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The daemon's error body in one line: its message, the field it names, its code.
fn refusal_words(status: u16, json: &Value) -> String {
    let code = json["error"].as_str().unwrap_or("error");
    let message = json["message"].as_str();
    match (json["field"].as_str(), message) {
        (Some(field), Some(m)) => format!("{field}: {m} (HTTP {status})"),
        (None, Some(m)) => format!("{m} (HTTP {status}, {code})"),
        (_, None) => format!("HTTP {status}, {code}"),
    }
}

/// The reason a request did not get an answer, in plain words.
fn reqwest_words(e: &reqwest::Error) -> String {
    // `io::Error::source` skips the error it wraps, so look inside by hand.
    let mut stack: Vec<&(dyn std::error::Error + 'static)> = vec![e];
    let mut io_seen: Option<&std::io::Error> = None;
    while let Some(s) = stack.pop() {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(_)) => {
                    "TLS handshake failed: the daemon's certificate is not the one [server] tls_cert names".into()
                }
                other => format!("TLS handshake failed: {other}"),
            };
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_seen.get_or_insert(io);
            if let Some(inner) = io.get_ref() {
                stack.push(inner);
            }
        }
        if let Some(next) = s.source() {
            stack.push(next);
        }
    }
    if let Some(io) = io_seen {
        return io_words(io);
    }
    if e.is_timeout() {
        return format!("no answer within {} s", REQUEST_TIMEOUT.as_secs());
    }
    // The outermost message with its causes, for the rare other case.
    let mut words = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        words.push_str(": ");
        words.push_str(&s.to_string());
        source = s.source();
    }
    words
}

fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "the connection was reset".into(),
        ConnectionAborted => "the connection was closed".into(),
        UnexpectedEof => "the connection was closed before an answer".into(),
        TimedOut => "the connection timed out".into(),
        AddrNotAvailable => "the address is not on this machine".into(),
        _ => e.to_string(),
    }
}

/// A rustls client config that trusts exactly `pinned` (the daemon's own
/// certificate from `[server] tls_cert`), whatever name it carries.
fn pinned_tls(
    pinned: rustls::pki_types::CertificateDer<'static>,
) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertificate {
        pinned,
        provider: provider.clone(),
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The daemon showed another certificate than the configured one.
#[derive(Debug, thiserror::Error)]
#[error("not the certificate [server] tls_cert names")]
struct NotPinned;

/// Accepts the one certificate the daemon is configured with; the handshake
/// signature is still checked against it, so only the key's holder passes.
#[derive(Debug)]
struct PinnedCertificate {
    pinned: rustls::pki_types::CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(NotPinned))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ---- `sync` through the daemon ------------------------------------------------

/// How often a followed sync run is looked at.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// One MDM's run as `sync` prints it, read from `…/sync-runs`.
#[derive(Debug, Clone)]
pub struct FollowedRun {
    pub mdm: String,
    pub run: Value,
}

impl FollowedRun {
    pub fn succeeded(&self) -> bool {
        self.run["outcome"].as_str() == Some("succeeded")
    }

    /// The same line as `sync` prints for a run in its own process.
    pub fn line(&self) -> String {
        let r = &self.run;
        let took = match (
            r["started_at"]
                .as_str()
                .and_then(|s| s.parse::<DateTime<Utc>>().ok()),
            r["finished_at"]
                .as_str()
                .and_then(|s| s.parse::<DateTime<Utc>>().ok()),
        ) {
            (Some(a), Some(b)) => (b - a).num_milliseconds().max(0) as f64 / 1000.0,
            _ => 0.0,
        };
        if self.succeeded() {
            let held = n(&r["held_removals"]);
            format!(
                "{}: succeeded in {took:.1} s: devices {} added, {} updated, {} removed, {} skipped{}",
                self.mdm,
                n(&r["added"]),
                n(&r["updated"]),
                n(&r["removed"]),
                n(&r["skipped"]),
                if held > 0 {
                    format!("; {held} removals held for a confirming sync")
                } else {
                    String::new()
                }
            )
        } else {
            format!(
                "{}: failed: {}; nothing was removed",
                self.mdm,
                r["error"].as_str().unwrap_or("unknown error")
            )
        }
    }
}

impl AdminClient {
    /// Asks the daemon for a full sync of the tenant (or one MDM) and
    /// follows each run to its end through `…/sync-runs`, with a spinner on
    /// a terminal (`progress`), a line per change of phase otherwise.
    ///
    /// The run a request caused is the first run of that MDM whose id is
    /// above the newest one before the request and which started after it
    /// (the daemon runs on this machine, on the same clock; a second of
    /// slack covers the store's rounding). A run already going when the
    /// request came is not it: the request waits behind it.
    pub async fn sync_and_follow(
        &self,
        tenant: &str,
        mdm: Option<&str>,
        progress: bool,
    ) -> Result<Vec<FollowedRun>, ClientError> {
        let t = segment(tenant);
        // The MDMs to watch, and the newest run of each before asking.
        let names: Vec<String> = match mdm {
            Some(m) => vec![m.to_string()],
            None => {
                let (tenants, _) = self.get_all("/v1/admin/tenants", 10_000).await?;
                let Some(this) = tenants.iter().find(|x| x["id"] == tenant) else {
                    return Err(ClientError::UnknownTenant(tenant.to_string()));
                };
                this["mdms"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|m| m["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            }
        };
        let mut baseline = std::collections::HashMap::new();
        for name in &names {
            baseline.insert(name.clone(), self.newest_run_id(&t, name).await?);
        }
        let asked_at = Utc::now() - chrono::Duration::seconds(1);
        let path = match mdm {
            Some(m) => format!("/v1/admin/tenants/{t}/sync?mdm={}", segment(m)),
            None => format!("/v1/admin/tenants/{t}/sync"),
        };
        let answer = self.post(&path).await?;
        let requested: Vec<String> = answer["mdms"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|m| m["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for name in requested {
            let after = baseline.get(&name).copied().flatten().unwrap_or(0);
            out.push(self.follow(&t, &name, after, asked_at, progress).await?);
        }
        Ok(out)
    }

    async fn newest_run_id(&self, t: &str, mdm: &str) -> Result<Option<i64>, ClientError> {
        let page = self
            .get(&format!(
                "/v1/admin/tenants/{t}/sync-runs?mdm={}&limit=1",
                segment(mdm)
            ))
            .await?;
        Ok(page["items"][0]["id"].as_i64())
    }

    async fn follow(
        &self,
        t: &str,
        mdm: &str,
        after: i64,
        asked_at: DateTime<Utc>,
        progress: bool,
    ) -> Result<FollowedRun, ClientError> {
        let bar = progress.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(format!("{mdm}: queued at the daemon"));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            eprintln!(
                "{mdm}: full sync requested from the daemon at {}",
                self.base
            );
        }
        let mut announced_start = false;
        let path = format!(
            "/v1/admin/tenants/{t}/sync-runs?mdm={}&limit=20",
            segment(mdm)
        );
        let result = loop {
            let page = match self.get(&path).await {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
            let ours = page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["id"].as_i64().is_some_and(|id| id > after))
                .filter(|r| {
                    r["started_at"]
                        .as_str()
                        .and_then(|s| s.parse::<DateTime<Utc>>().ok())
                        .is_some_and(|s| s >= asked_at)
                })
                .min_by_key(|r| r["id"].as_i64())
                .cloned();
            match ours {
                Some(run) if run["outcome"].as_str() != Some("running") => {
                    break Ok(FollowedRun {
                        mdm: mdm.to_string(),
                        run,
                    })
                }
                Some(run) => {
                    let since = when(&run["started_at"], Utc::now());
                    match &bar {
                        Some(b) => b.set_message(format!("{mdm}: running, started {since}")),
                        None if !announced_start => {
                            eprintln!("{mdm}: running (run {})", run["id"]);
                        }
                        None => {}
                    }
                    announced_start = true;
                }
                None => {}
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
        };
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        result
    }
}

// ---- What the commands print ------------------------------------------------

/// A time as the admin reads it: `2026-12-03 17:01:02 UTC (5 min ago)`.
pub fn when(t: &Value, now: DateTime<Utc>) -> String {
    let Some(t) = t.as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok()) else {
        return "never".into();
    };
    let secs = (now - t).num_seconds();
    let rel = if secs < 0 {
        format!("in {}", span(-secs))
    } else {
        format!("{} ago", span(secs))
    };
    format!("{} ({rel})", t.format("%Y-%m-%d %H:%M:%S UTC"))
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The risk levels in the order the status shows them.
const LEVELS: [&str; 5] = ["secured", "low", "medium", "high", "critical"];

/// `status` for one tenant: its line from `GET /v1/admin/tenants` and its `…/status`.
pub fn render_status(tenant: &Value, status: &Value, now: DateTime<Utc>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let id = tenant["id"].as_str().unwrap_or("?");
    let display = tenant["display_name"].as_str().unwrap_or("");
    let _ = writeln!(out, "tenant {id}  {display}");
    let risk = &status["devices_by_risk"];
    let levels: Vec<String> = LEVELS
        .iter()
        .map(|l| format!("{l} {}", n(&risk[*l])))
        .collect();
    let _ = writeln!(out, "  devices by risk  {}", levels.join(", "));
    let mdms = status["mdms"].as_array().cloned().unwrap_or_default();
    if mdms.is_empty() {
        let _ = writeln!(out, "  no MDM");
    }
    for m in &mdms {
        let _ = writeln!(
            out,
            "  MDM \"{}\" ({}): {}",
            m["name"].as_str().unwrap_or("?"),
            m["kind"].as_str().unwrap_or("?"),
            if m["enabled"].as_bool() == Some(true) {
                "enabled"
            } else {
                "DISABLED (enabled = false)"
            }
        );
        let row = |out: &mut String, label: &str, text: String| {
            let _ = writeln!(out, "    {label:<12}{text}");
        };
        let last = &m["last_sync"];
        let sync = if last.is_null() {
            "never".to_string()
        } else {
            let c = &last["counts"];
            let outcome = last["outcome"].as_str().unwrap_or("?");
            let at = if outcome == "running" {
                format!("since {}", when(&last["started_at"], now))
            } else {
                when(&last["finished_at"], now)
            };
            let mut s = format!(
                "{outcome} {at}, {}",
                last["trigger"].as_str().unwrap_or("?")
            );
            if outcome != "running" {
                let _ = write!(
                    s,
                    ": {} added, {} updated, {} removed, {} skipped",
                    n(&c["added"]),
                    n(&c["updated"]),
                    n(&c["removed"]),
                    n(&c["skipped"])
                );
            }
            if n(&last["held_removals"]) > 0 {
                let _ = write!(
                    s,
                    "; {} removals held for a confirming sync",
                    n(&last["held_removals"])
                );
            }
            if let Some(e) = last["error"].as_str() {
                let _ = write!(s, "; error: {e}");
            }
            s
        };
        row(&mut out, "last sync", sync);
        if !m["last_successful_sync_at"].is_null() && last["outcome"].as_str() != Some("succeeded")
        {
            row(
                &mut out,
                "last good",
                when(&m["last_successful_sync_at"], now),
            );
        }
        let failed = &m["failed_syncs_24h"];
        row(
            &mut out,
            "errors",
            match n(&failed["count"]) {
                0 => "no failed sync in 24 h".into(),
                k => format!(
                    "{k} failed sync(s) in 24 h, the last {}: {}",
                    when(&failed["last_error_at"], now),
                    failed["last_error"].as_str().unwrap_or("?")
                ),
            },
        );
        let b = &m["backoff"];
        let mut backoff = Vec::new();
        if let Some(k) = b["sync_failures"].as_u64() {
            backoff.push(match b.get("sync_retry_at") {
                Some(at) if !at.is_null() => {
                    format!("{k} failed sync(s) in a row, next try {}", when(at, now))
                }
                _ => format!("{k} failed sync(s) in a row, no automatic retry"),
            });
        }
        if let Some(at) = b.get("rate_limited_until").filter(|v| !v.is_null()) {
            backoff.push(format!("rate limited by the MDM until {}", when(at, now)));
        }
        row(
            &mut out,
            "back-off",
            if backoff.is_empty() {
                "none".into()
            } else {
                backoff.join("; ")
            },
        );
        let a = &m["actions"];
        row(
            &mut out,
            "actions",
            format!(
                "pending {}, held {}, dead {} ({} in 24 h), failed and waiting to retry {}",
                n(&a["pending"]),
                n(&a["held"]),
                n(&a["dead"]),
                n(&a["dead_24h"]),
                n(&a["failed"])
            ),
        );
        row(
            &mut out,
            "devices",
            format!(
                "{} ({} activated), identity collisions {}, Wi-Fi removals pending {}",
                n(&m["devices"]),
                n(&m["activated_devices"]),
                n(&m["identity_collisions"]),
                n(&m["pending_wifi_removals"])
            ),
        );
    }
    out
}

/// `actions`: one aligned line per action, with a header.
pub fn render_actions(items: &[Value], now: DateTime<Utc>) -> String {
    let rows: Vec<[String; 7]> = items
        .iter()
        .map(|a| {
            let device = match &a["device_id"] {
                Value::Null => "-".to_string(),
                d => d.to_string(),
            };
            let why = a["last_error"]
                .as_str()
                .filter(|_| matches!(a["state"].as_str(), Some("failed" | "dead")))
                .or(a["reason"].as_str())
                .unwrap_or("");
            [
                a["id"].to_string(),
                when(&a["created_at"], now),
                a["kind"].as_str().unwrap_or("?").to_string(),
                a["state"].as_str().unwrap_or("?").to_string(),
                a["mdm"].as_str().unwrap_or("-").to_string(),
                device,
                why.to_string(),
            ]
        })
        .collect();
    let header = [
        "ID", "CREATED", "ACTION", "STATE", "MDM", "DEVICE", "REASON",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unspecified_listen_address_is_reached_on_loopback() {
        assert_eq!(
            connect_address("0.0.0.0:9443".parse().unwrap()),
            "127.0.0.1:9443".parse().unwrap()
        );
        assert_eq!(
            connect_address("[::]:8080".parse().unwrap()),
            "[::1]:8080".parse().unwrap()
        );
        assert_eq!(
            connect_address("10.1.2.3:8080".parse().unwrap()),
            "10.1.2.3:8080".parse().unwrap()
        );
    }

    #[test]
    fn ids_are_read_back_from_the_path_for_the_error_words() {
        assert_eq!(path_tenant("/v1/admin/tenants/acme/status"), "acme");
        assert_eq!(path_tenant("/v1/admin/tenants/a%20b/actions?x=1"), "a b");
        assert_eq!(
            path_action("/v1/admin/tenants/acme/actions/42/approve"),
            "42"
        );
    }

    #[test]
    fn status_shows_health_backoff_actions_and_risk_in_words() {
        let now: DateTime<Utc> = "2026-12-03T17:10:00Z".parse().unwrap();
        let tenant = json!({"id": "acme", "display_name": "Acme Corp"});
        let status = json!({
            "devices_by_risk": {"secured": 40, "high": 2},
            "mdms": [{
                "name": "Acme SOTI", "kind": "soti", "enabled": true,
                "devices": 42, "activated_devices": 3,
                "last_successful_sync_at": "2026-12-03T16:00:00Z",
                "last_sync": {"trigger": "scheduled", "outcome": "failed",
                    "started_at": "2026-12-03T17:00:00Z", "finished_at": "2026-12-03T17:05:00Z",
                    "counts": {"added": 0, "updated": 0, "removed": 0, "skipped": 0},
                    "held_removals": 0, "error": "cannot connect"},
                "failed_syncs_24h": {"count": 2, "last_error": "cannot connect",
                    "last_error_at": "2026-12-03T17:05:00Z"},
                "actions": {"pending": 1, "held": 2, "failed": 0, "dead": 3, "dead_24h": 1},
                "pending_wifi_removals": 0, "identity_collisions": 0,
                "backoff": {"sync_failures": 2, "sync_retry_at": "2026-12-03T17:20:00Z"}
            }]
        });
        let text = render_status(&tenant, &status, now);
        for needle in [
            "tenant acme  Acme Corp",
            "devices by risk  secured 40, low 0, medium 0, high 2, critical 0",
            "MDM \"Acme SOTI\" (soti): enabled",
            "last sync   failed 2026-12-03 17:05:00 UTC (5 min ago), scheduled",
            "error: cannot connect",
            "last good   2026-12-03 16:00:00 UTC (1 h 10 min ago)",
            "2 failed sync(s) in 24 h",
            "back-off    2 failed sync(s) in a row, next try 2026-12-03 17:20:00 UTC (in 10 min)",
            "pending 1, held 2, dead 3 (1 in 24 h)",
            "devices     42 (3 activated)",
        ] {
            assert!(text.contains(needle), "`{needle}` missing:\n{text}");
        }
    }

    #[test]
    fn actions_are_one_aligned_line_each() {
        let now: DateTime<Utc> = "2026-12-03T17:10:00Z".parse().unwrap();
        let items = vec![
            json!({"id": 7, "created_at": "2026-12-03T17:09:00Z", "kind": "wipe", "state": "held",
                   "mdm": "Acme SOTI", "device_id": 12, "reason": "hourly cap reached"}),
            json!({"id": 123, "created_at": "2026-12-03T17:09:30Z", "kind": "lock", "state": "dead",
                   "mdm": null, "device_id": null, "reason": "x", "last_error": "403 forbidden"}),
        ];
        let text = render_actions(&items, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let col = |l: &str| {
            l.find("STATE")
                .or_else(|| l.find("held"))
                .or(l.find("dead"))
        };
        assert_eq!(col(lines[0]), col(lines[1]), "{text}");
        assert_eq!(col(lines[1]), col(lines[2]), "{text}");
        assert!(lines[1].ends_with("hourly cap reached"), "{text}");
        assert!(lines[2].ends_with("403 forbidden"), "{text}");
    }
}
