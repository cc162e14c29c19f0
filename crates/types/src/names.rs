//! Validated names for tenants, instances, pools and hosts, and `tenant/name` references.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a name was refused. The message says what a valid name looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty: use 1 to 63 characters of a-z, 0-9 and '-'")]
    Empty,
    #[error("name '{0}' is longer than 63 characters")]
    TooLong(String),
    #[error("name '{0}' must start with a lowercase letter (a-z)")]
    BadStart(String),
    #[error("name '{0}' may only contain a-z, 0-9 and '-', and must not end with '-'")]
    BadChar(String),
    #[error("'{0}' is not a tenant/name reference: write it as TENANT/NAME, e.g. acme/web")]
    BadRef(String),
}

/// A DNS-label-like name: 1-63 of `[a-z0-9-]`, starting with a letter, not ending with `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > 63 {
            return Err(NameError::TooLong(s.to_string()));
        }
        if !s.as_bytes()[0].is_ascii_lowercase() {
            return Err(NameError::BadStart(s.to_string()));
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') || s.ends_with('-') {
            return Err(NameError::BadChar(s.to_string()));
        }
        Ok(Name(s.to_string()))
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        s.parse()
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `tenant/name`: how users address an instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InstanceRef {
    pub tenant: Name,
    pub name: Name,
}

impl FromStr for InstanceRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let (tenant, name) = s.split_once('/').ok_or_else(|| NameError::BadRef(s.to_string()))?;
        Ok(InstanceRef { tenant: tenant.parse()?, name: name.parse()? })
    }
}

impl fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, ok: bool) {
        assert_eq!(input.parse::<Name>().is_ok(), ok, "name {input:?}");
    }

    #[test]
    fn names() {
        check("acme", true);
        check("a", true);
        check("web-1", true);
        check(&"a".repeat(63), true);
        check(&"a".repeat(64), false);
        check("", false);
        check("1abc", false);
        check("-abc", false);
        check("abc-", false);
        check("Acme", false);
        check("a_b", false);
        check("a/b", false);
        check("a b", false);
        check("ü", false);
    }

    #[test]
    fn refs() {
        let r: InstanceRef = "acme/web".parse().unwrap();
        assert_eq!(r.to_string(), "acme/web");
        assert!("acme".parse::<InstanceRef>().is_err());
        assert!("acme/".parse::<InstanceRef>().is_err());
        assert!("acme/web/x".parse::<InstanceRef>().is_err());
    }

    #[test]
    fn names_deserialize_strictly() {
        assert!(serde_json::from_str::<Name>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<Name>("\"Not OK\"").is_err());
    }
}
