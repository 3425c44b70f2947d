//! Cisco ISE MDM API (CONTRACT §7).

pub mod xml;

#[cfg(test)]
pub(crate) mod spec_check;
