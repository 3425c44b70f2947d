//! `mtd-adapter-maas360`: IBM MaaS360 (Cisco MCMS), spoken as the MaaS360
//! Web Services API (`kind = "maas360"`, alias `mcms`). SCAFFOLD: the adapter
//! is being written; see MDM-APIS.md.

mod adapter;
mod config;

pub use adapter::Maas360Adapter;
pub use config::{Maas360Config, Maas360Credentials};
