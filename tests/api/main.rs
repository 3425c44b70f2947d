//! The daemon in process, over real HTTP on loopback, against the built-in
//! simulators (one test binary, zero2prod's `spawn_app`).

mod actions;
mod admin;
mod agent;
mod console;
mod ingest;
mod ise;
mod kinds;
mod logs;
mod metrics;
mod openapi;
mod outbound;
mod posture;
mod reload;
mod safety;
mod server;
mod signals;
mod support;
mod sync;
mod threats;
mod tls;
