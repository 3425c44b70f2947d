//! The reliability suite (issue 9, section 2): what the daemon promises when
//! things go wrong. One module per scenario, each a named test:
//!
//! - `crash`: `kill -9` of the real binary while four clients post 2,000
//!   signed events; after a restart nothing acknowledged is lost and every
//!   action reaches its MDM exactly once (twice only for an idempotent action
//!   the audit trail shows was in flight at the kill).
//! - `mdm_faults`: 30 % of MDM requests fail in four ways, for every kind:
//!   every action is delivered exactly once and no full sync removes a device
//!   that still exists.
//! - `store_unwritable`: another process holds SQLite's write lock: 503 and a
//!   failing `/readyz`, nothing acknowledged lost, service back afterwards.
//! - `schedule`: the daemon suspended for several sync intervals (what a
//!   wall-clock jump looks like to a scheduler): scheduled syncs go on.
//! - `bad_input`: property tests at the agent API and the config loader.
//! - `security`: tenant isolation, admin authentication, and no secret in
//!   logs, metrics or admin API answers.
//! - `signal_crash`: `kill -9` between a risk-level change and its write to
//!   the MDM; after the restart the level reaches the MDM once.
//!
//! The in-process helpers of `tests/api` are reused as they are; `support`
//! adds the real binary, signing with any key, and direct store reads.

// The api suite's helpers, shared rather than copied; not every one is used here.
#[allow(dead_code)]
#[path = "../api/support.rs"]
mod api;
#[allow(dead_code)]
#[path = "../api/logs.rs"]
mod logs;

mod bad_input;
mod crash;
mod mdm_faults;
mod schedule;
mod security;
mod signal_crash;
mod store_unwritable;
mod support;
