//! Typed identifiers: a `HostId` cannot be passed where an `InstanceId` is expected.
//!
//! Resources the hub tracks are UUIDs. Ids that become kernel object and file names
//! (sandboxes, volumes, snapshots) and API token ids are short strings, checked against
//! a safe alphabet when made from a string, so no path traversal or option injection
//! gets through: a value of one of these types is always safe to use as a name.

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

impl InstanceId {
    /// The instance's sandbox on its host (runtime container, cgroup, log file, volume,
    /// network namespace and veth are all named by it).
    pub fn sandbox_id(&self) -> SandboxId {
        SandboxId(self.short())
    }
}
typed_id!(
    /// Identifies a tenant.
    TenantId, "t"
);
typed_id!(
    /// Identifies an asynchronous operation.
    OperationId, "o"
);

/// A string refused as an id: says which alphabet the kind allows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {kind}: use {rule}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn lower_alnum_dash(b: u8) -> bool {
    lower_alnum(b) || b == b'-'
}

macro_rules! checked_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $rule:literal, $allowed:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            /// 1-64 bytes, each allowed by the kind's alphabet.
            fn try_from(s: String) -> Result<Self, IdError> {
                if !s.is_empty() && s.len() <= 64 && s.bytes().all($allowed) {
                    Ok(Self(s))
                } else {
                    Err(IdError { kind: $kind, value: s, rule: $rule })
                }
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::try_from(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<std::path::Path> for $name {
            fn as_ref(&self) -> &std::path::Path {
                self.0.as_ref()
            }
        }

        impl AsRef<std::ffi::OsStr> for $name {
            fn as_ref(&self) -> &std::ffi::OsStr {
                self.0.as_ref()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_id!(
    /// The kernel-facing id of an instance's sandbox: 1-64 of `a-z` and `0-9`, made by
    /// [`InstanceId::sandbox_id`]. Runtimes, volumes and networks name what they make
    /// for an instance by it.
    SandboxId, "sandbox id", "1-64 of a-z and 0-9", lower_alnum
);
checked_id!(
    /// A volume on a host: 1-64 of `a-z`, `0-9` and `-`. An instance's volume is named
    /// by its sandbox id (see `From<&SandboxId>`).
    VolumeId, "volume or snapshot id", "1-64 of a-z, 0-9 and '-'", lower_alnum_dash
);
checked_id!(
    /// A read-only snapshot of a volume: the alphabet of a [`VolumeId`].
    SnapshotId, "volume or snapshot id", "1-64 of a-z, 0-9 and '-'", lower_alnum_dash
);
checked_id!(
    /// Identifies an API token: 1-64 of `a-z`, `0-9` and `-`; [`TokenId::new`] makes
    /// them.
    TokenId, "token id", "1-64 of a-z, 0-9 and '-'", lower_alnum_dash
);

impl From<&SandboxId> for VolumeId {
    /// Every sandbox id is a volume id: the sandbox's own volume.
    fn from(sandbox: &SandboxId) -> VolumeId {
        VolumeId(sandbox.0.clone())
    }
}

impl TokenId {
    /// A fresh token id: the last 12 hex digits of a UUIDv7, which are random.
    pub fn new() -> Self {
        let s = Uuid::now_v7().simple().to_string();
        TokenId(s[s.len() - 12..].to_string())
    }
}

impl Default for TokenId {
    fn default() -> Self {
        Self::new()
    }
}

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
    fn sandbox_ids_are_the_short_instance_ids() {
        let i = InstanceId::new();
        assert_eq!(i.sandbox_id().as_str(), i.short());
        assert_eq!(i.sandbox_id().as_str().parse::<SandboxId>().unwrap(), i.sandbox_id());
        assert_eq!(VolumeId::from(&i.sandbox_id()).as_str(), i.short());
    }

    #[test]
    fn only_the_safe_alphabet_passes() {
        assert!("i0123abc".parse::<SandboxId>().is_ok());
        assert!("vol-a".parse::<VolumeId>().is_ok());
        assert!("snap-1".parse::<SnapshotId>().is_ok());
        assert!("t-admin".parse::<TokenId>().is_ok());
        assert!(SandboxId::from_str(&"a".repeat(64)).is_ok());
        let err = "vol-a".parse::<SandboxId>().unwrap_err();
        assert_eq!(err.to_string(), "'vol-a' is not a valid sandbox id: use 1-64 of a-z and 0-9", "sandbox ids have no dash");
        for bad in ["", "../etc", "A", "a/b", "a b", "\u{e9}", "--x\n", &"a".repeat(65)] {
            assert!(bad.parse::<SandboxId>().is_err(), "{bad:?} passed as a sandbox id");
            assert!(bad.parse::<VolumeId>().is_err(), "{bad:?} passed as a volume id");
            assert!(bad.parse::<TokenId>().is_err(), "{bad:?} passed as a token id");
        }
        assert_eq!("../etc".parse::<VolumeId>().unwrap_err().to_string(), "'../etc' is not a valid volume or snapshot id: use 1-64 of a-z, 0-9 and '-'");
    }

    #[test]
    fn checked_ids_are_plain_strings_on_the_wire_and_checked_there() {
        let t: TokenId = "0190f0d2ab12".parse().unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"0190f0d2ab12\"");
        assert_eq!(serde_json::from_str::<TokenId>("\"0190f0d2ab12\"").unwrap(), t);
        assert!(serde_json::from_str::<SandboxId>("\"../x\"").is_err());
    }

    #[test]
    fn fresh_token_ids_are_distinct_and_twelve_hex_digits() {
        let (a, b) = (TokenId::new(), TokenId::new());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 12);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn ids_round_trip_through_strings() {
        let a = HostId::new();
        let parsed: HostId = a.to_string().parse().unwrap();
        assert_eq!(a, parsed);
    }
}
