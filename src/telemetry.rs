//! Tracing setup: human-readable by default, JSON with `--log-format json`.
//!
//! Logs go to stderr so that command output on stdout (check-config, sync
//! counts, the demo summary) stays clean for pipes. `RUST_LOG` filters as usual.
//! Colours only when stderr is a terminal (and `NO_COLOR` is not set): a log
//! collected by journald, a file or a pipe gets plain text.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// The log output format (a global option of the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. Calling it twice is harmless (the second is ignored),
/// which keeps tests that build several apps in one process simple.
pub fn init(format: LogFormat) {
    init_with_default(format, "info")
}

/// As [`init`], with another level when `RUST_LOG` is not set (the demo keeps
/// its summary readable with `warn`).
pub fn init_with_default(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// Whether the log may carry ANSI colours: only on a terminal (https://no-color.org).
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
