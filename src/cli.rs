//! The command line: one subcommand per job, each calling one library function.
//!
//! Exit codes: 0 success, 1 a runtime failure, 2 an invalid configuration
//! (CONTRACT §1: `check-config` exits 2 with `FILE:LINE:COL: message` lines).

use crate::app::App;
use crate::config::{self, Config};
use crate::telemetry::LogFormat;
use clap::{Parser, Subcommand};
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

/// The tenant (and optionally one of its MDMs) a command works on.
#[derive(Debug, clap::Args)]
pub struct TenantTarget {
    /// The main configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The tenant id.
    #[arg(long, value_name = "ID")]
    pub tenant: String,
    /// Only this MDM of the tenant (its `name`).
    #[arg(long, value_name = "NAME")]
    pub mdm: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: agent and admin API, health; until SIGINT/SIGTERM.
    Run {
        /// The main configuration file (TOML).
        #[arg(long, value_name = "FILE")]
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
        /// Devices per simulated MDM.
        #[arg(long, value_name = "N", default_value_t = 50)]
        devices: usize,
    },
    /// Validate the main file and every tenant file; print FILE:LINE:COL errors and exit 2 on any.
    CheckConfig {
        /// The main configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Log in to each MDM of a tenant and read one page; one diagnostic line per MDM.
    TestConnection(TenantTarget),
    /// A full sync now for one tenant (or one MDM), with progress; then the counts.
    Sync(TenantTarget),
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

async fn sync(path: &Path, tenant: String, mdm: Option<String>) -> ExitCode {
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
        devices: devices.max(5),
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
