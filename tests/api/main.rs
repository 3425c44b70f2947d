//! The daemon in process, over real HTTP on loopback, against the built-in
//! simulators (one test binary, zero2prod's `spawn_app`).

mod logs;
mod support;
mod sync;
