//! `mtd-adapter`: the contract between the connector and one MDM.
//!
//! This crate owns the [`MdmAdapter`] trait, the shared model every vendor maps
//! into ([`Device`], [`User`], [`Group`], [`Ownership`], the identifiers), the
//! error type whose variants are the decisions callers make ([`AdapterError`]),
//! the [`Secret`] type for credentials, the HTTP client builder with the
//! per-MDM trust anchor, timeouts, redirect policy and answer size limit, and
//! the [`ListingGuard`] that makes every listing end.
//!
//! It knows nothing of sqlx or axum on purpose: a vendor crate depends only on
//! this crate, so it cannot reach the store or the HTTP layer of the daemon.

mod adapter;
mod error;
pub mod http;
mod ident;
mod listing;
mod model;
mod secret;

pub use adapter::{Capabilities, HealthReport, MdmAdapter, Page, PageStream, Receipt};
pub use error::{AdapterError, MAX_RETRY_AFTER};
pub use ident::{
    normalize_imei, normalize_mac, normalize_serial, normalize_udid, DeviceIdentifier,
};
pub use listing::{guard_listing, ListingGuard};
pub use model::{
    ActionKind, Device, Group, Identifiers, MdmCommand, MdmKind, Ownership, Platform, Posture,
    RiskReadBack, SignalLevel, User,
};
pub use secret::Secret;
