//! The simulators and the real adapters against them, over loopback, in one
//! test binary (it was six): `sim_*` drive each simulator with a raw HTTP
//! client, `adapter_*` run each vendor's adapter against its simulator.

mod adapter_airwatch;
mod adapter_bcdm;
mod adapter_maas360;
mod adapter_soti;
mod sim_airwatch;
mod sim_bcdm;
mod sim_maas360;
mod sim_soti;
