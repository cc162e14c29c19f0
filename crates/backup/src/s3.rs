//! The S3 target: an OpenDAL operator with only its S3 service, behind rustic_core's
//! backend traits, laid out exactly as restic lays out an S3 repository
//! (`config`, `keys/<id>`, `data/<2 hex>/<id>`, ...).
//!
//! Unlike rustic_backend's generic OpenDAL backend, listing errors are returned rather
//! than skipped: a repository that silently lists fewer packs or snapshots than it has
//! would make prune delete live data.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use opendal::blocking::Operator;
use opendal::options::{ListOptions, ReadOptions};
use opendal::services::S3;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult,
    WriteBackend,
};
use tokio::runtime::Runtime;

use crate::target::TargetSpec;

/// How long to wait for a TCP/TLS connection before calling an endpoint unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries for a repository's requests (not for preflight, which must answer quickly).
const REPO_RETRIES: usize = 4;

/// OpenDAL is async; its blocking operator runs requests on this runtime, so callers of
/// this crate need none (and must not call it from an async task: use a blocking thread).
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hangar-backup-s3")
            .enable_all()
            .build()
            .expect("building the S3 client runtime (threads, timers) failed")
    })
}

/// One reqwest client for all S3 operators: reqwest's `rustls` feature uses aws-lc-rs,
/// the only TLS provider in the tree.
fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).build()?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

/// A blocking S3 operator rooted at `root` (a key prefix) of the target's bucket.
pub(crate) fn operator(
    target: &TargetSpec,
    root: &str,
    retries: bool,
) -> Result<Operator, opendal::Error> {
    let TargetSpec::S3 { endpoint, bucket, region, access_key, secret_key, .. } = target else {
        unreachable!("s3::operator is only called for S3 targets")
    };
    let builder = S3::default()
        .endpoint(endpoint)
        .bucket(bucket)
        .region(region)
        .root(&format!("/{root}"))
        .access_key_id(access_key)
        .secret_access_key(secret_key.expose())
        // Credentials come from the target only, never from the host's environment,
        // ~/.aws or an EC2 metadata endpoint.
        .disable_config_load()
        .disable_ec2_metadata();
    let client = http_client().map_err(|err| {
        opendal::Error::new(opendal::ErrorKind::Unexpected, "building the HTTP client failed")
            .set_source(err)
    })?;
    let mut op = opendal::Operator::new(builder)?;
    let transport = opendal::HttpTransporter::new(
        opendal_http_transport_reqwest::ReqwestTransport::new(client),
    );
    let context = op.context().with_http_transport(transport);
    op = op.with_context(context);
    if retries {
        op = op.layer(opendal::layers::RetryLayer::new().with_max_times(REPO_RETRIES).with_jitter());
    }
    let _guard = runtime().enter();
    Operator::new(op)
}

/// A restic repository in an S3 bucket.
#[derive(Debug)]
pub(crate) struct S3Backend {
    op: Operator,
    location: String,
}

impl S3Backend {
    pub(crate) fn new(target: &TargetSpec, repo_path: &str) -> RusticResult<Self> {
        let root = target.key_prefix(repo_path);
        let op = operator(target, &root, true).map_err(|err| {
            RusticError::with_source(ErrorKind::Backend, "opening S3 target `{location}` failed", err)
                .attach_context("location", target.to_string())
        })?;
        Ok(Self { op, location: target.restic_location(repo_path) })
    }

    fn path(tpe: FileType, id: &Id) -> String {
        let hex = id.to_hex();
        match tpe {
            FileType::Config => "config".to_string(),
            FileType::Pack => format!("data/{}/{}", &hex[..2], &hex[..]),
            _ => format!("{}/{}", tpe.dirname(), &hex[..]),
        }
    }

    fn backend_error(
        &self,
        what: &'static str,
        path: &str,
        err: opendal::Error,
    ) -> Box<RusticError> {
        RusticError::with_source(ErrorKind::Backend, "{what} `{path}` in `{location}` failed", err)
            .attach_context("what", what)
            .attach_context("path", path.to_string())
            .attach_context("location", self.location.clone())
    }
}

impl ReadBackend for S3Backend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            return match self.op.stat("config") {
                Ok(meta) => Ok(vec![(Id::default(), size_u32(meta.content_length()))]),
                Err(err) if err.kind() == opendal::ErrorKind::NotFound => Ok(Vec::new()),
                Err(err) => Err(self.backend_error("stat", "config", err)),
            };
        }
        let dir = format!("{}/", tpe.dirname());
        let opts = ListOptions { recursive: true, ..Default::default() };
        let lister = self
            .op
            .lister_options(&dir, opts)
            .map_err(|err| self.backend_error("listing", &dir, err))?;
        let mut found = Vec::new();
        for entry in lister {
            let entry = entry.map_err(|err| self.backend_error("listing", &dir, err))?;
            if !entry.metadata().is_file() {
                continue;
            }
            // Files that are not named by an id (e.g. left by other tools) are not part
            // of the repository, as restic also ignores them.
            if let Some(id) = Id::parse_some(entry.name(), tpe) {
                found.push((id, size_u32(entry.metadata().content_length())));
            }
        }
        Ok(found)
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let path = Self::path(tpe, id);
        self.op
            .read(&path)
            .map(|buf| buf.to_bytes())
            .map_err(|err| self.backend_error("reading", &path, err))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let path = Self::path(tpe, id);
        let range = u64::from(offset)..u64::from(offset) + u64::from(length);
        let opts = ReadOptions { range: range.into(), ..Default::default() };
        self.op
            .read_options(&path, opts)
            .map(|buf| buf.to_bytes())
            .map_err(|err| self.backend_error("reading", &path, err))
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        Self::path(tpe, id)
    }
}

impl WriteBackend for S3Backend {
    /// S3 has no directories: restic creates none there either.
    fn create(&self) -> RusticResult<()> {
        Ok(())
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let path = Self::path(tpe, id);
        self.op
            .write(&path, content.into_vec())
            .map(|_| ())
            .map_err(|err| self.backend_error("writing", &path, err))
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let path = Self::path(tpe, id);
        self.op.delete(&path).map_err(|err| self.backend_error("deleting", &path, err))
    }
}

/// Repository files are far below 4 GiB (packs are at most a few hundred MiB); a bigger
/// one is not a restic file and is listed with size 0 so that check reports it.
fn size_u32(len: u64) -> u32 {
    u32::try_from(len).unwrap_or(0)
}

/// Deletes every object under the repository's prefix.
pub(crate) fn delete_all(target: &TargetSpec, repo_path: &str) -> Result<(), opendal::Error> {
    let op = operator(target, &target.key_prefix(repo_path), true)?;
    let opts = opendal::options::DeleteOptions { recursive: true, ..Default::default() };
    op.delete_options("/", opts)
}
