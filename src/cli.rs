//! The command line: one subcommand per job, each calling one library function.
//!
//! Exit codes: 0 success, 1 a runtime failure, 2 an invalid configuration
//! (CONTRACT §1: `check-config` exits 2 with `FILE:LINE:COL: message` lines).
//!
//! `status`, `actions`, `approve` and `cancel` ask the running daemon
//! ([`crate::client`]); `sync` does too when one runs on the config.
//! `--config` defaults to [`DEFAULT_CONFIG`], or `MTD_CONNECTOR_CONFIG`.

use crate::app::App;
use crate::client::{AdminClient, ClientError};
use crate::config::{self, Config};
use crate::telemetry::LogFormat;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "mtd-connector",
    version,
    about = "Connects a mobile threat defense service to the MDM systems of its customers"
)]
pub struct Cli {
    /// Log output: human-readable text, or JSON lines for machines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Where `--config` points when neither the option nor `MTD_CONNECTOR_CONFIG` is given.
pub const DEFAULT_CONFIG: &str = "/etc/mtd-connector/connector.toml";

/// The tenant (and optionally one of its MDMs) a command works on.
#[derive(Debug, clap::Args)]
pub struct TenantTarget {
    /// The main configuration file (TOML).
    #[arg(long, value_name = "FILE", env = "MTD_CONNECTOR_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The tenant id.
    #[arg(long, value_name = "ID")]
    pub tenant: String,
    /// Only this MDM of the tenant (its `name`).
    #[arg(long, value_name = "NAME")]
    pub mdm: Option<String>,
}

/// One action of a tenant.
#[derive(Debug, clap::Args)]
pub struct ActionTarget {
    /// The main configuration file (TOML): the daemon's address and admin token.
    #[arg(long, value_name = "FILE", env = "MTD_CONNECTOR_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The tenant id.
    #[arg(long, value_name = "ID")]
    pub tenant: String,
    /// The action's id (the first column of `actions`).
    #[arg(value_name = "ACTION_ID")]
    pub action_id: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: agent and admin API, health; until SIGINT/SIGTERM.
    Run {
        /// The main configuration file (TOML).
        #[arg(long, value_name = "FILE", env = "MTD_CONNECTOR_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// The whole product on this machine: simulated MDMs, a demo tenant per kind, the daemon, signed events, a summary.
    Demo {
        /// Stop after the summary; the exit status says whether every step worked.
        #[arg(long)]
        exit_after: bool,
        /// Where the daemon listens (a free port is used when it is taken).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Devices per simulated MDM (20 to 100000: the demo's events need
        /// devices of each platform and ownership in every simulator).
        #[arg(long, value_name = "N", default_value_t = 50,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(20..=100_000))]
        devices: usize,
    },
    /// Validate the main file and every tenant file; print FILE:LINE:COL errors and exit 2 on any.
    CheckConfig {
        /// The main configuration file (TOML).
        #[arg(long, value_name = "FILE", env = "MTD_CONNECTOR_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Log in to each MDM of a tenant and read one page; one diagnostic line per MDM.
    TestConnection(TenantTarget),
    /// A full sync now for one tenant (or one MDM), with progress; then the counts.
    /// Asked of the running daemon when one answers at `[server] listen`; in this process otherwise.
    Sync(TenantTarget),
    /// The running daemon's view: per tenant and MDM, health, last sync, back-off, actions, risk.
    Status {
        /// The main configuration file (TOML): the daemon's address and admin token.
        #[arg(long, value_name = "FILE", env = "MTD_CONNECTOR_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only this tenant.
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
        /// The daemon's answers as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A tenant's actions, newest first, from the running daemon.
    Actions {
        /// The main configuration file (TOML): the daemon's address and admin token.
        #[arg(long, value_name = "FILE", env = "MTD_CONNECTOR_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The tenant id.
        #[arg(long, value_name = "ID")]
        tenant: String,
        /// Only actions in this state: skipped, held, pending, sent, failed, dead, cancelled.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// At most this many actions.
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// The daemon's answer as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Approve a held action: the running daemon sends it to the MDM.
    Approve(ActionTarget),
    /// Cancel a held, pending or failed action: the running daemon never sends it.
    Cancel(ActionTarget),
    /// Serve the built-in MDM simulators alone (for tests, demos and benchmarks).
    Sim {
        /// Address to listen on; each vendor is served under its own base path.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8900")]
        listen: std::net::SocketAddr,
        /// Devices seeded per vendor.
        #[arg(long, value_name = "N", default_value_t = 50)]
        devices: usize,
        /// Which vendor to simulate: soti, maas360 (alias mcms), airwatch, bcdm, or all.
        #[arg(long, value_name = "KIND", default_value = "all")]
        kind: String,
        /// Seed of the generated data (the same seed gives the same devices).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Exit status for an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        // The demo's summary is the output; INFO lines would bury it (RUST_LOG still wins).
        Command::Demo { .. } => crate::telemetry::init_with_default(cli.log_format, "warn"),
        _ => crate::telemetry::init(cli.log_format),
    }
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => with_runtime(|| run(&config)),
        Command::Demo {
            exit_after,
            listen,
            devices,
        } => with_runtime(|| demo(exit_after, listen, devices)),
        Command::TestConnection(TenantTarget {
            config,
            tenant,
            mdm,
        }) => with_runtime(|| test_connection(&config, tenant, mdm)),
        Command::Sync(TenantTarget {
            config,
            tenant,
            mdm,
        }) => with_runtime(|| sync(&config, tenant, mdm)),
        Command::Sim {
            listen,
            devices,
            kind,
            seed,
        } => with_runtime(|| sim(listen, devices, kind, seed)),
        Command::Status {
            config,
            tenant,
            json,
        } => with_runtime(|| status(&config, tenant, json)),
        Command::Actions {
            config,
            tenant,
            state,
            limit,
            json,
        } => with_runtime(|| actions(&config, tenant, state, limit, json)),
        Command::Approve(target) => with_runtime(|| decide(target, Decision::Approve)),
        Command::Cancel(target) => with_runtime(|| decide(target, Decision::Cancel)),
    }
}

fn with_runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the config or prints its errors (one `FILE:LINE:COL: message` per line).
fn load_config(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        eprintln!(
            "{} error(s) in the configuration; nothing was started",
            errors.0.len()
        );
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(path: &Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    println!("{}: OK", path.display());
    println!("  store: {}", config.store.path.display());
    println!(
        "  listen: {}://{}",
        config.server.scheme(),
        config.server.listen
    );
    if let Some(tls) = &config.server.tls {
        println!(
            "  tls: {} ({} certificate(s)), key {}",
            tls.cert_path.display(),
            tls.chain.len(),
            tls.key_path.display()
        );
    }
    println!(
        "  ise: {}",
        if config.ise.enabled {
            "enabled"
        } else {
            "disabled"
        }
    );
    for t in &config.tenants {
        let mdms: Vec<String> = t
            .mdms
            .iter()
            .map(|m| {
                let off = if m.enabled { "" } else { ", disabled" };
                format!("\"{}\" ({}{off})", m.name, m.kind)
            })
            .collect();
        println!(
            "  tenant {} ({}): MDMs {}; policy {} with {} rule(s)",
            t.id,
            t.display_name,
            if mdms.is_empty() {
                "none".to_string()
            } else {
                mdms.join(", ")
            },
            t.policy.mode.as_str(),
            t.policy.rules.len()
        );
        // The user name only: the password is a secret.
        match &t.ise {
            Some(ise) => println!(
                "  tenant {}: ISE username \"{}\", not compliant from risk {}",
                t.id, ise.username, ise.noncompliant_at
            ),
            None if config.ise.enabled => {
                println!(
                    "  tenant {}: no [ise], no Cisco ISE can log in for it",
                    t.id
                )
            }
            None => {}
        }
    }
    ExitCode::SUCCESS
}

async fn run(path: &Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::reload::reload_on_sighup(app.state().clone());
    match app.run_until(crate::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn sim(listen: std::net::SocketAddr, devices: usize, kind: String, seed: u64) -> ExitCode {
    use mtd_sim::{SimKind, SimOptions};
    let kinds = if kind.eq_ignore_ascii_case("all") {
        SimKind::ALL.to_vec()
    } else {
        match kind.parse::<SimKind>() {
            Ok(k) => vec![k],
            Err(e) => {
                eprintln!("error: {e} (expected soti, maas360, airwatch, bcdm or all)");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = SimOptions {
        kinds,
        devices,
        seed,
        ..SimOptions::default()
    };
    match mtd_sim::serve_until(listener, options, crate::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn test_connection(path: &Path, tenant: String, mdm: Option<String>) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::ops::test_connection(&config, &tenant, mdm.as_deref()).await {
        Ok(lines) => {
            for d in &lines {
                println!("{}", d.line);
            }
            if lines.iter().all(|d| d.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The admin API's client for the daemon `path` configures, or the exit code
/// after printing why there is none.
fn admin_client(path: &Path) -> Result<AdminClient, ExitCode> {
    let main = config::load_main(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        ExitCode::from(EXIT_CONFIG)
    })?;
    AdminClient::new(&main).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

fn client_failed(e: ClientError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

async fn status(path: &Path, only: Option<String>, json: bool) -> ExitCode {
    let client = match admin_client(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let tenants = match client.get_all("/v1/admin/tenants", 100_000).await {
        Ok((t, _)) => t,
        Err(e) => return client_failed(e),
    };
    let selected: Vec<&serde_json::Value> = tenants
        .iter()
        .filter(|t| only.as_deref().is_none_or(|id| t["id"] == id))
        .collect();
    if let (Some(id), true) = (&only, selected.is_empty()) {
        let known: Vec<&str> = tenants.iter().filter_map(|t| t["id"].as_str()).collect();
        eprintln!(
            "error: the daemon has no tenant `{id}` (it has: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        return ExitCode::FAILURE;
    }
    let now = chrono::Utc::now();
    let mut text = format!("daemon {}: {} tenant(s)\n", client.url(), tenants.len());
    let mut all = Vec::new();
    for t in selected {
        let id = t["id"].as_str().unwrap_or_default();
        let path = format!("/v1/admin/tenants/{}/status", crate::client::segment(id));
        let s = match client.get(&path).await {
            Ok(s) => s,
            Err(e) => return client_failed(e),
        };
        text.push('\n');
        text.push_str(&crate::client::render_status(t, &s, now));
        all.push(serde_json::json!({"tenant": t, "status": s}));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"tenants": all})).unwrap_or_default()
        );
    } else {
        print!("{text}");
    }
    ExitCode::SUCCESS
}

async fn actions(
    path: &Path,
    tenant: String,
    state: Option<String>,
    limit: u32,
    json: bool,
) -> ExitCode {
    let client = match admin_client(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut query = format!(
        "/v1/admin/tenants/{}/actions?limit={}",
        crate::client::segment(&tenant),
        limit.clamp(1, 500)
    );
    if let Some(s) = &state {
        query.push_str(&format!("&state={}", crate::client::segment(s)));
    }
    let (items, more) = match client.get_all(&query, limit as usize).await {
        Ok(r) => r,
        Err(e) => return client_failed(e),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&items).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if items.is_empty() {
        match &state {
            Some(s) => println!("tenant {tenant}: no {s} action"),
            None => println!("tenant {tenant}: no action"),
        }
        return ExitCode::SUCCESS;
    }
    print!(
        "{}",
        crate::client::render_actions(&items, chrono::Utc::now())
    );
    if more {
        println!("(the newest {limit} shown; --limit N for more)");
    }
    ExitCode::SUCCESS
}

#[derive(Debug, Clone, Copy)]
enum Decision {
    Approve,
    Cancel,
}

async fn decide(target: ActionTarget, decision: Decision) -> ExitCode {
    let client = match admin_client(&target.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let verb = match decision {
        Decision::Approve => "approve",
        Decision::Cancel => "cancel",
    };
    let path = format!(
        "/v1/admin/tenants/{}/actions/{}/{verb}",
        crate::client::segment(&target.tenant),
        crate::client::segment(&target.action_id)
    );
    match client.post(&path).await {
        Ok(a) => {
            let device = match &a["device_id"] {
                serde_json::Value::Null => String::new(),
                d => format!(" of device {d}"),
            };
            println!(
                "action {} ({}{device}, {}): now {}",
                a["id"],
                a["kind"].as_str().unwrap_or("?"),
                a["mdm"].as_str().unwrap_or("no MDM"),
                a["state"].as_str().unwrap_or("?")
            );
            ExitCode::SUCCESS
        }
        Err(e) => client_failed(e),
    }
}

/// `sync`: through the daemon when one runs on the config, else in-process.
async fn sync(path: &Path, tenant: String, mdm: Option<String>) -> ExitCode {
    let client = match admin_client(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.daemon_present().await {
        Ok(false) => sync_in_process(path, tenant, mdm).await,
        Ok(true) => {
            let progress = std::io::stderr().is_terminal();
            match client
                .sync_and_follow(&tenant, mdm.as_deref(), progress)
                .await
            {
                Ok(runs) => {
                    for r in &runs {
                        println!("{}", r.line());
                    }
                    if runs.iter().all(|r| r.succeeded()) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e @ ClientError::Unreachable { .. }) => {
                    eprintln!("error: {e}");
                    eprintln!("(the daemon stopped answering: `mtd-connector status` shows how the sync ended once it runs again)");
                    ExitCode::FAILURE
                }
                Err(
                    e @ (ClientError::Unauthorized { .. }
                    | ClientError::NoToken { .. }
                    | ClientError::NotTheDaemon { .. }),
                ) => {
                    eprintln!("error: {e}");
                    eprintln!(
                        "(something answers at {}: the sync was not run in this process, so that two syncs never run on one MDM)",
                        client.url()
                    );
                    ExitCode::FAILURE
                }
                Err(e) => client_failed(e),
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("(cannot tell whether a daemon runs on this config: the sync was not run in this process)");
            ExitCode::FAILURE
        }
    }
}

async fn sync_in_process(path: &Path, tenant: String, mdm: Option<String>) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::ops::sync_now(config, &tenant, mdm.as_deref()).await {
        Ok(reports) => {
            for r in &reports {
                println!("{}", crate::ops::report_line(r));
            }
            if reports
                .iter()
                .all(|r| r.outcome == crate::store::SyncOutcome::Succeeded)
            {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(exit_after: bool, listen: std::net::SocketAddr, devices: usize) -> ExitCode {
    let options = crate::demo::DemoOptions {
        listen,
        devices,
        exit_after,
    };
    match crate::demo::run(options, crate::shutdown::signal()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: the demo could not run: {e:#}");
            ExitCode::FAILURE
        }
    }
}
