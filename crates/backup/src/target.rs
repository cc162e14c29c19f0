//! Where backups go: a local directory or an S3-compatible bucket, as users write them
//! (`dir:/srv/backups`, `s3://bucket/prefix`) plus the S3 options given beside them.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A secret string (an S3 secret key): kept out of `Debug` and `Display` so it never
/// reaches logs, events or error messages. Serialized in clear because the hub stores it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that signs requests with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A backup target. One target holds many repositories (one per tenant), each under its
/// own path within the target.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetSpec {
    /// A directory on the host, which must already exist (a missing directory is often an
    /// unmounted disk, and writing backups to the root filesystem instead would be worse).
    Dir { path: PathBuf },
    /// An S3-compatible bucket.
    S3 {
        /// `http(s)://host[:port]` of the S3 API.
        endpoint: String,
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing `/`; may be empty.
        prefix: String,
        region: String,
        access_key: String,
        secret_key: Secret,
    },
}

/// The options `hangar backup target add` takes beside an `s3://` location.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Defaults to AWS's endpoint for the region.
    pub endpoint: Option<String>,
    /// Defaults to `us-east-1`.
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
}

/// Why a target location could not be parsed; names the part that is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetSpecError {
    #[error("unknown target location `{0}`: use dir:/absolute/path or s3://bucket/prefix")]
    UnknownScheme(String),
    #[error("directory target `{0}` must be an absolute path")]
    RelativeDir(String),
    #[error(
        "bucket name `{0}` is not valid: use 3 to 63 lowercase letters, digits, `.` or `-`"
    )]
    BadBucket(String),
    #[error("s3 target needs --{0}")]
    MissingS3Option(&'static str),
    #[error("endpoint `{0}` must start with http:// or https://")]
    BadEndpoint(String),
    #[error("repository path `{0}` must be relative, without `..` or empty parts")]
    BadRepoPath(String),
}

impl TargetSpec {
    /// Parses `dir:/srv/backups` or `s3://bucket/prefix`; `s3` holds the S3 options and
    /// is ignored for a directory.
    pub fn parse(location: &str, s3: S3Options) -> Result<Self, TargetSpecError> {
        if let Some(path) = location.strip_prefix("dir:") {
            if !Path::new(path).is_absolute() {
                return Err(TargetSpecError::RelativeDir(path.to_string()));
            }
            return Ok(Self::Dir { path: PathBuf::from(path) });
        }
        let Some(rest) = location.strip_prefix("s3://") else {
            return Err(TargetSpecError::UnknownScheme(location.to_string()));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            return Err(TargetSpecError::BadBucket(bucket.to_string()));
        }
        let region = s3.region.unwrap_or_else(|| "us-east-1".to_string());
        let endpoint = s3
            .endpoint
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(TargetSpecError::BadEndpoint(endpoint));
        }
        Ok(Self::S3 {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            region,
            access_key: s3
                .access_key
                .ok_or(TargetSpecError::MissingS3Option("access-key-file"))?,
            secret_key: s3
                .secret_key
                .ok_or(TargetSpecError::MissingS3Option("secret-key-file"))?,
        })
    }

    /// The location of the repository at `repo_path` in the form `restic -r` takes.
    pub fn restic_location(&self, repo_path: &str) -> String {
        match self {
            Self::Dir { path } => path.join(repo_path).display().to_string(),
            Self::S3 { endpoint, bucket, .. } => {
                format!("s3:{endpoint}/{bucket}/{}", self.key_prefix(repo_path))
            }
        }
    }

    /// The S3 key prefix (no leading or trailing `/`) of `repo_path`; for directories the
    /// relative path.
    pub(crate) fn key_prefix(&self, repo_path: &str) -> String {
        let prefix = match self {
            Self::Dir { .. } => "",
            Self::S3 { prefix, .. } => prefix.as_str(),
        };
        [prefix, repo_path.trim_matches('/')]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Repository paths are chosen by the hub (e.g. `tenants/acme`) but still checked, so a
/// bad one cannot escape the target.
pub(crate) fn check_repo_path(repo_path: &str) -> Result<(), TargetSpecError> {
    let bad = repo_path.is_empty()
        || repo_path.starts_with('/')
        || repo_path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(TargetSpecError::BadRepoPath(repo_path.to_string()));
    }
    Ok(())
}

fn valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-'])
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir { path } => write!(f, "dir:{}", path.display()),
            Self::S3 { endpoint, bucket, prefix, .. } if prefix.is_empty() => {
                write!(f, "s3://{bucket} at {endpoint}")
            }
            Self::S3 { endpoint, bucket, prefix, .. } => {
                write!(f, "s3://{bucket}/{prefix} at {endpoint}")
            }
        }
    }
}

impl fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir { path } => f.debug_struct("Dir").field("path", path).finish(),
            Self::S3 { endpoint, bucket, prefix, region, access_key, secret_key } => f
                .debug_struct("S3")
                .field("endpoint", endpoint)
                .field("bucket", bucket)
                .field("prefix", prefix)
                .field("region", region)
                .field("access_key", access_key)
                .field("secret_key", secret_key)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_opts() -> S3Options {
        S3Options {
            endpoint: Some("http://127.0.0.1:9000/".into()),
            region: None,
            access_key: Some("AKID".into()),
            secret_key: Some(Secret::new("very-secret")),
        }
    }

    #[test]
    fn parses_dir_and_s3_locations() {
        assert_eq!(
            TargetSpec::parse("dir:/srv/backups", S3Options::default()),
            Ok(TargetSpec::Dir { path: "/srv/backups".into() })
        );
        let s3 = TargetSpec::parse("s3://my-bucket/some/prefix/", s3_opts()).unwrap();
        assert_eq!(
            s3,
            TargetSpec::S3 {
                endpoint: "http://127.0.0.1:9000".into(),
                bucket: "my-bucket".into(),
                prefix: "some/prefix".into(),
                region: "us-east-1".into(),
                access_key: "AKID".into(),
                secret_key: Secret::new("very-secret"),
            }
        );
        assert_eq!(
            s3.restic_location("tenants/acme"),
            "s3:http://127.0.0.1:9000/my-bucket/some/prefix/tenants/acme"
        );
    }

    #[test]
    fn rejects_bad_locations_naming_the_part() {
        let cases = [
            ("dir:srv", TargetSpecError::RelativeDir("srv".into())),
            ("ftp://x", TargetSpecError::UnknownScheme("ftp://x".into())),
            ("s3://ab/x", TargetSpecError::BadBucket("ab".into())),
            ("s3://Upper/x", TargetSpecError::BadBucket("Upper".into())),
        ];
        for (location, want) in cases {
            assert_eq!(TargetSpec::parse(location, s3_opts()), Err(want), "{location}");
        }
        let no_secret = S3Options { secret_key: None, ..s3_opts() };
        assert_eq!(
            TargetSpec::parse("s3://bucket", no_secret),
            Err(TargetSpecError::MissingS3Option("secret-key-file"))
        );
        for bad in ["", "/abs", "a/../b", "a//b", "."] {
            assert!(check_repo_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_repo_path("tenants/acme").is_ok());
    }

    #[test]
    fn secret_key_never_shown() {
        let s3 = TargetSpec::parse("s3://bucket/p", s3_opts()).unwrap();
        let shown = format!("{s3:?} {s3} {s3:#?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("AKID"));
        // The hub stores targets, so serde round-trips the secret.
        let json = serde_json::to_string(&s3).unwrap();
        assert_eq!(serde_json::from_str::<TargetSpec>(&json).unwrap(), s3);
    }
}
