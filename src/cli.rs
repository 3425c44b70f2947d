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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: agent and admin API, health; until SIGINT/SIGTERM.
    Run {
        /// The main configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate the main file and every tenant file; print FILE:LINE:COL errors and exit 2 on any.
    CheckConfig {
        /// The main configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Exit status for an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    crate::telemetry::init(cli.log_format);
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => with_runtime(|| run(&config)),
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
    println!("  listen: {}", config.server.listen);
    for t in &config.tenants {
        let mdms: Vec<String> = t
            .mdms
            .iter()
            .map(|m| format!("\"{}\" ({})", m.name, m.kind))
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
    match app.run_until(crate::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
