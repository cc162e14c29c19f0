//! Getting into a workspace: secrets an instance sees at `/run/secrets`, and proxy
//! tokens that open one port of one instance through the hub's HTTP proxy.
//!
//! Pure: names, limits and the documents the API and the hub-agent protocol carry.

use crate::names::Name;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The largest secret value, in bytes.
pub const SECRET_MAX_BYTES: usize = 64 * 1024;
/// The most secrets one instance may name.
pub const MAX_SECRETS_PER_INSTANCE: usize = 32;
/// A proxy token's lifetime when none is asked for.
pub const PROXY_TOKEN_DEFAULT_TTL_SECS: u64 = 3600;
/// The longest lifetime a proxy token may have (30 days).
pub const PROXY_TOKEN_MAX_TTL_SECS: u64 = 30 * 24 * 3600;
/// What every proxy token starts with, so a leaked one is recognisable.
pub const PROXY_TOKEN_PREFIX: &str = "hpt_";
/// The cookie a `?token=` visit sets, scoped to the proxied path.
pub const PROXY_COOKIE: &str = "hangar_proxy_token";

/// A secret's name: a [`Name`] (a-z, 0-9, '-', 1-63 characters), so it is also a safe
/// file name under `/run/secrets`. The error says what a valid name looks like.
pub fn parse_secret_name(s: &str) -> Result<Name, String> {
    s.parse::<Name>().map_err(|e| format!("secret {e}"))
}

/// The secrets an instance names: valid, at most [`MAX_SECRETS_PER_INSTANCE`], no
/// name twice.
pub fn check_secret_names(names: &[Name]) -> Result<(), String> {
    if names.len() > MAX_SECRETS_PER_INSTANCE {
        return Err(format!("secrets: {} named, an instance may name at most {MAX_SECRETS_PER_INSTANCE}", names.len()));
    }
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(format!("secrets: '{n}' is named twice"));
        }
    }
    Ok(())
}

/// A secret value's size, checked before anything is stored.
pub fn check_secret_value(value: &[u8]) -> Result<(), String> {
    if value.len() > SECRET_MAX_BYTES {
        return Err(format!("value: {} bytes, over the limit of {SECRET_MAX_BYTES} bytes (64 KiB)", value.len()));
    }
    Ok(())
}

/// `PUT /v1/tenants/{tenant}/secrets/{name}`: the value, base64 (standard alphabet).
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSet {
    /// The value, base64-encoded; at most 64 KiB once decoded.
    pub value_b64: String,
}

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSet { value_b64: <redacted> }")
    }
}

/// What the API shows of a secret: never its value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretInfo {
    pub tenant: Name,
    pub name: Name,
    pub size_bytes: u64,
    /// Grows with every change; instances see a changed value within one reconcile pass.
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Instances of the tenant that name it.
    #[serde(default)]
    pub used_by: Vec<Name>,
}

/// In a desired document: a secret an instance names, by name and version only (the
/// value never goes into a document an agent keeps on disk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretStamp {
    pub name: Name,
    pub version: i64,
}

/// `GET /v1/agent/instances/{id}/secrets` (mTLS): the values of the secrets the
/// instance names, for the agent of the host it is placed on.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSecrets {
    pub secrets: Vec<AgentSecret>,
}

#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSecret {
    pub name: Name,
    pub version: i64,
    pub value_b64: String,
}

impl std::fmt::Debug for AgentSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.secrets.iter().map(|s| s.name.as_str()).collect();
        write!(f, "AgentSecrets {{ names: {names:?}, values: <redacted> }}")
    }
}

/// `POST /v1/tenants/{tenant}/instances/{name}/proxy-tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyTokenCreate {
    /// The port inside the instance (1-65535).
    pub port: u16,
    /// Lifetime in seconds (default 3600, at most 30 days).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

impl ProxyTokenCreate {
    /// The lifetime to give, or what is wrong with the request (naming the field).
    pub fn ttl(&self) -> Result<u64, String> {
        if self.port == 0 {
            return Err("port: must be between 1 and 65535".into());
        }
        match self.ttl_secs {
            None => Ok(PROXY_TOKEN_DEFAULT_TTL_SECS),
            Some(0) => Err("ttl_secs: must be at least 1".into()),
            Some(t) if t > PROXY_TOKEN_MAX_TTL_SECS => Err(format!("ttl_secs: {t} is over the limit of {PROXY_TOKEN_MAX_TTL_SECS} (30 days)")),
            Some(t) => Ok(t),
        }
    }
}

/// A proxy token, as listed (never the secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProxyTokenInfo {
    pub id: String,
    pub tenant: Name,
    pub instance: Name,
    pub port: u16,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A new proxy token: the secret is shown this once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProxyTokenCreated {
    #[serde(flatten)]
    pub info: ProxyTokenInfo,
    pub token: String,
    /// The proxied path, `/proxy/{tenant}/{instance}/{port}/`.
    pub path: String,
}

/// The path prefix the hub proxies to `port` of `tenant/instance`.
pub fn proxy_path(tenant: &Name, instance: &Name, port: u16) -> String {
    format!("/proxy/{tenant}/{instance}/{port}/")
}

/// A `--ttl` value: seconds, or a number with `s`, `m`, `h` or `d`.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)).ok_or_else(|| format!("'{s}' is not a duration: write e.g. 90s, 30m, 1h or 7d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for ok in ["db-password", "a", "tls-key-2"] {
            assert!(parse_secret_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Db", "../etc", "a/b", "a.b", "-a", "a-", &"x".repeat(64)] {
            assert!(parse_secret_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secret_lists_and_sizes() {
        let n = |s: &str| s.parse::<Name>().unwrap();
        assert!(check_secret_names(&[n("a"), n("b")]).is_ok());
        assert!(check_secret_names(&[n("a"), n("a")]).unwrap_err().contains("twice"));
        let many: Vec<Name> = (0..33).map(|i| n(&format!("s{i}"))).collect();
        assert!(check_secret_names(&many).unwrap_err().contains("at most 32"));
        assert!(check_secret_value(&[0u8; SECRET_MAX_BYTES]).is_ok());
        assert!(check_secret_value(&vec![0u8; SECRET_MAX_BYTES + 1]).unwrap_err().contains("64 KiB"));
    }

    #[test]
    fn ttls() {
        for (s, want) in [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("7d", 604800)] {
            assert_eq!(parse_ttl(s), Ok(want), "{s}");
        }
        for bad in ["", "h", "1w", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
        let req = |port, ttl_secs| ProxyTokenCreate { port, ttl_secs };
        assert_eq!(req(80, None).ttl(), Ok(PROXY_TOKEN_DEFAULT_TTL_SECS));
        assert!(req(0, None).ttl().unwrap_err().starts_with("port"));
        assert!(req(80, Some(0)).ttl().unwrap_err().starts_with("ttl_secs"));
        assert!(req(80, Some(PROXY_TOKEN_MAX_TTL_SECS + 1)).ttl().unwrap_err().starts_with("ttl_secs"));
    }

    #[test]
    fn secrets_are_not_printed_by_debug() {
        let s = SecretSet { value_b64: "c2VjcmV0".into() };
        assert!(!format!("{s:?}").contains("c2VjcmV0"));
        let a = AgentSecrets { secrets: vec![AgentSecret { name: "a".parse().unwrap(), version: 1, value_b64: "c2VjcmV0".into() }] };
        assert!(!format!("{a:?}").contains("c2VjcmV0"));
    }
}
