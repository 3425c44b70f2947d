//! Typed ids of stored rows, where ids travel between modules: a device's id
//! and its MDM's id are both `i64` in SQLite, and a tuple of two of them is
//! easy to read back in the wrong order.
//!
//! Why only at the boundaries so far: the row structs (`StoredDevice`,
//! `StoredAction`) keep `i64` fields, which the admin API serialises as
//! numbers; the ids here are `#[serde(transparent)]` and
//! `#[sqlx(transparent)]`, so those fields can move to them without any
//! change on the wire or in the schema.

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// A stored device (`devices.id`).
    DeviceId
);
id!(
    /// An MDM integration of a tenant (`mdm_integrations.id`).
    MdmId
);
id!(
    /// An action record (`actions.id`).
    ActionId
);

/// A known device: its row and the MDM that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceRef {
    pub device: DeviceId,
    pub mdm: MdmId,
}

impl From<&super::StoredDevice> for DeviceRef {
    fn from(d: &super::StoredDevice) -> Self {
        DeviceRef {
            device: DeviceId(d.id),
            mdm: MdmId(d.mdm_id),
        }
    }
}
