//! mtd-connector: connects a mobile threat defense service to the MDM systems
//! of its customers.
//!
//! The binary (`src/main.rs`) is thin: it parses the command line, sets up
//! tracing and calls one function of this library per command.

pub mod actions;
pub mod adapters;
pub mod app;
#[cfg(test)]
mod architecture;
pub mod backoff;
pub mod cli;
pub mod client;
pub mod config;
pub mod context;
pub mod demo;
pub mod dispatch;
pub mod http;
pub mod ingest;
pub mod ise;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod policy;
pub mod reload;
pub mod shutdown;
pub mod store;
pub mod sync;
pub mod telemetry;

/// The MDM simulators, from the `mtd-sim` crate (kept under this name so
/// `mtd_connector::sim::…` paths keep working).
pub use mtd_sim as sim;
