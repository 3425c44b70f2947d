//! The sync engine (being written).
pub mod pii;
