//! Typed identifiers: a `HostId` cannot be passed where an `InstanceId` is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered identifier (UUIDv7), so ids sort by creation.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            /// The short form used in kernel object names (cgroups, runc ids, links):
            /// a prefix and the last 12 hex digits, which are random in a UUIDv7.
            pub fn short(&self) -> String {
                let s = self.0.simple().to_string();
                format!("{}{}", $prefix, &s[s.len() - 12..])
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

typed_id!(
    /// Identifies a host (a machine running `hangar agent`).
    HostId, "h"
);
typed_id!(
    /// Identifies an instance (a workspace).
    InstanceId, "i"
);
typed_id!(
    /// Identifies a tenant.
    TenantId, "t"
);
typed_id!(
    /// Identifies an asynchronous operation.
    OperationId, "o"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_distinct_and_kernel_sized() {
        let a = InstanceId::new();
        let b = InstanceId::new();
        assert_ne!(a.short(), b.short());
        assert_eq!(a.short().len(), 13);
        assert!(a.short().starts_with('i'));
    }

    #[test]
    fn ids_round_trip_through_strings() {
        let a = HostId::new();
        let parsed: HostId = a.to_string().parse().unwrap();
        assert_eq!(a, parsed);
    }
}
