//! Preflight: before a target is added and before every backup, write, read, list and
//! delete a probe object, and say exactly which step failed and why.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::s3;
use crate::target::TargetSpec;

/// The probe steps, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeStep {
    Write,
    Read,
    List,
    Delete,
}

impl fmt::Display for ProbeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Write => "write",
            Self::Read => "read",
            Self::List => "list",
            Self::Delete => "delete",
        })
    }
}

/// Why a target failed its preflight. Each kind names what the user has to fix.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "bad credentials for {target}: the access key `{access_key}` is unknown or the secret key does not match ({detail})"
    )]
    BadCredentials { target: String, access_key: String, detail: String },
    #[error("bucket `{bucket}` does not exist at {endpoint}: create it or fix the target")]
    MissingBucket { bucket: String, endpoint: String },
    #[error(
        "no permission to {step} objects in {target} ({detail}): grant it to the access key"
    )]
    PermissionDenied { step: ProbeStep, target: String, detail: String },
    #[error("endpoint {endpoint} is unreachable: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("directory {} does not exist: create it (or mount the disk) first", path.display())]
    MissingDirectory { path: PathBuf },
    #[error("{} is full: the probe could not be written ({source})", path.display())]
    Full {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not writable: {source}", path.display())]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("probe {step} failed on {target}: {detail}")]
    StepFailed { step: ProbeStep, target: String, detail: String },
}

const PROBE_CONTENT: &[u8] = b"hangar backup target probe\n";

/// Checks that `target` can take backups: writes a probe object, reads it back, finds it
/// in a listing and deletes it. Blocking: call it from a blocking thread.
pub fn preflight(target: &TargetSpec) -> Result<(), PreflightError> {
    let probe_name = format!("hangar-preflight-{}", uuid::Uuid::new_v4());
    match target {
        TargetSpec::Dir { path } => preflight_dir(path, &probe_name),
        TargetSpec::S3 { .. } => preflight_s3(target, &probe_name),
    }
}

fn preflight_dir(dir: &Path, probe_name: &str) -> Result<(), PreflightError> {
    if !dir.is_dir() {
        return Err(PreflightError::MissingDirectory { path: dir.to_path_buf() });
    }
    let probe = dir.join(probe_name);
    let io_error = |step: ProbeStep, source: io::Error| match source.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            PreflightError::Full { path: dir.to_path_buf(), source }
        }
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            PreflightError::NotWritable { path: dir.to_path_buf(), source }
        }
        _ => PreflightError::StepFailed {
            step,
            target: format!("dir:{}", dir.display()),
            detail: source.to_string(),
        },
    };
    // sync_all so that a full disk shows up here and not later as a short pack.
    let write = || -> io::Result<()> {
        use io::Write;
        let mut file = std::fs::File::create_new(&probe)?;
        file.write_all(PROBE_CONTENT)?;
        file.sync_all()
    };
    if let Err(err) = write() {
        let _ = std::fs::remove_file(&probe);
        return Err(io_error(ProbeStep::Write, err));
    }
    let result = (|| {
        let read = std::fs::read(&probe).map_err(|err| io_error(ProbeStep::Read, err))?;
        if read != PROBE_CONTENT {
            return Err(mismatch(ProbeStep::Read, &format!("dir:{}", dir.display())));
        }
        let listed = std::fs::read_dir(dir)
            .and_then(|entries| {
                entries
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<io::Result<Vec<_>>>()
            })
            .map_err(|err| io_error(ProbeStep::List, err))?;
        if !listed.iter().any(|name| name == probe_name) {
            return Err(missing_from_listing(&format!("dir:{}", dir.display())));
        }
        Ok(())
    })();
    let delete = std::fs::remove_file(&probe).map_err(|err| io_error(ProbeStep::Delete, err));
    result.and(delete)
}

fn mismatch(step: ProbeStep, target: &str) -> PreflightError {
    PreflightError::StepFailed {
        step,
        target: target.to_string(),
        detail: "the probe read back differs from what was written".to_string(),
    }
}

fn missing_from_listing(target: &str) -> PreflightError {
    PreflightError::StepFailed {
        step: ProbeStep::List,
        target: target.to_string(),
        detail: "the probe just written is missing from the listing".to_string(),
    }
}

fn preflight_s3(target: &TargetSpec, probe_name: &str) -> Result<(), PreflightError> {
    let TargetSpec::S3 { endpoint, bucket, access_key, .. } = target else {
        unreachable!("preflight_s3 is only called for S3 targets")
    };
    let shown = target.to_string();
    let classify = |step: ProbeStep, err: opendal::Error| {
        classify_s3(step, err, &shown, endpoint, bucket, access_key)
    };
    // No retries: preflight must answer quickly, and it reports what is wrong instead.
    let op = s3::operator(target, &target.key_prefix(""), false)
        .map_err(|err| classify(ProbeStep::Write, err))?;

    op.write(probe_name, PROBE_CONTENT.to_vec()).map_err(|err| classify(ProbeStep::Write, err))?;
    let result = (|| {
        let read = op.read(probe_name).map_err(|err| classify(ProbeStep::Read, err))?;
        if read.to_vec() != PROBE_CONTENT {
            return Err(mismatch(ProbeStep::Read, &shown));
        }
        // Recursive (no delimiter), the way the repository backend lists.
        let opts = opendal::options::ListOptions { recursive: true, ..Default::default() };
        let listed = op.list_options("", opts).map_err(|err| classify(ProbeStep::List, err))?;
        if !listed.iter().any(|entry| entry.name() == probe_name) {
            return Err(missing_from_listing(&shown));
        }
        Ok(())
    })();
    // Delete even when reading or listing failed, so a failing target keeps no probes.
    let delete = op.delete(probe_name).map_err(|err| classify(ProbeStep::Delete, err));
    result.and(delete)
}

/// Maps an S3 failure to what the user has to fix, from the S3 error code in the
/// response (AWS, MinIO, Ceph and moto all use AWS's codes) or the transport error.
fn classify_s3(
    step: ProbeStep,
    err: opendal::Error,
    target: &str,
    endpoint: &str,
    bucket: &str,
    access_key: &str,
) -> PreflightError {
    let detail = error_chain(&err);
    let has = |code: &str| detail.contains(code);
    if has("NoSuchBucket") {
        PreflightError::MissingBucket { bucket: bucket.to_string(), endpoint: endpoint.to_string() }
    } else if has("InvalidAccessKeyId") || has("SignatureDoesNotMatch") || has("InvalidToken") {
        PreflightError::BadCredentials {
            target: target.to_string(),
            access_key: access_key.to_string(),
            detail: s3_code(&detail).map_or(detail.clone(), str::to_string),
        }
    } else if err.kind() == opendal::ErrorKind::PermissionDenied || has("AccessDenied") {
        PreflightError::PermissionDenied {
            step,
            target: target.to_string(),
            detail: s3_code(&detail).unwrap_or("access denied").to_string(),
        }
    } else if is_transport_error(&err) {
        PreflightError::Unreachable { endpoint: endpoint.to_string(), detail }
    } else {
        PreflightError::StepFailed { step, target: target.to_string(), detail }
    }
}

/// The `<Code>` of an S3 error response quoted in an error message.
fn s3_code(detail: &str) -> Option<&str> {
    let start = detail.find("<Code>")? + "<Code>".len();
    let len = detail[start..].find("</Code>")?;
    Some(&detail[start..start + len])
}

/// A request that got no HTTP response at all (refused, reset, DNS, TLS, timeout).
fn is_transport_error(err: &opendal::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(reqwest_err) = cause.downcast_ref::<reqwest::Error>() {
            return reqwest_err.is_connect() || reqwest_err.is_timeout() || reqwest_err.is_request();
        }
        source = cause.source();
    }
    false
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_preflight_names_missing_and_read_only_directories() {
        let missing = PathBuf::from("/nonexistent/hangar-backups");
        let err = preflight(&TargetSpec::Dir { path: missing.clone() }).unwrap_err();
        assert!(matches!(err, PreflightError::MissingDirectory { ref path } if *path == missing));

        let dir = tempfile::tempdir().unwrap();
        preflight(&TargetSpec::Dir { path: dir.path().to_path_buf() }).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "probe left behind");

        // /proc refuses file creation even to root, like a read-only mount.
        let err = preflight(&TargetSpec::Dir { path: "/proc".into() }).unwrap_err();
        assert!(
            matches!(err, PreflightError::NotWritable { .. } | PreflightError::StepFailed { step: ProbeStep::Write, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn s3_code_is_read_from_the_response() {
        let body = "S3Error { code: x } <Error><Code>AccessDenied</Code><Message>no</Message>";
        assert_eq!(s3_code(body), Some("AccessDenied"));
        assert_eq!(s3_code("connection refused"), None);
    }
}
