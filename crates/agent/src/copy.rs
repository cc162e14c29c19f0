//! `hangar cp` on a host: paths inside an instance's volume that cannot escape it, tar
//! streams out of a volume and into one, and copies between two volumes of this host
//! (reflinks inside the btrfs pool).
//!
//! **Paths.** The path the hub sends is relative to the volume's root. It is resolved
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from a descriptor of the
//! volume's root, so `..`, absolute symlinks and relative ones climbing out, and
//! `/proc` magic links fail in the kernel (EXDEV), whatever the tenant changes
//! meanwhile. Below that, a walk opens one name at a time with `O_NOFOLLOW` relative
//! to its directory's descriptor: symlinks inside a copied tree are copied as
//! symlinks, never followed. Every entry is first opened `O_PATH` and checked with
//! `fstat`: device files, fifos and sockets are refused before anything opens them
//! for reading, and what is read is the inode that was checked (reopened through
//! `/proc/self/fd`).
//!
//! **Writes** go into a staging directory at the volume's root
//! (`.hangar-copy-<n>`, root's, 0700: the tenant can neither enter nor rename it),
//! created and filled only through descriptors. Owners are the stream's ids (inside
//! ids: 0 is the instance's root) mapped into the target's range. Only once the whole
//! stream has arrived and the result has been checked against what is in place (a
//! file never replaces a directory; a directory merges into an existing one only with
//! `recursive`) are the entries renamed into place. A refused or broken copy removes
//! the staging directory and changes nothing else; leftovers of a killed agent go at
//! its next start.

use crate::drivers::volume::VolumeDriver;
use crate::endpoint::{check_peer, sandbox_id, EndpointState, EpError};
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use hangar_client::files::{byte_channel, ByteStream, ChannelReader};
use hangar_tls::serve::PeerInfo;
use hangar_types::files::{AgentCopy, AgentFilesQuery, FilesWritten, TAR_MEDIA_TYPE, VOLUME_MOUNT};
use hangar_types::idmap::IdRange;
use hangar_types::{ApiError, ErrorCode, VolumeId};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The staging directories of writes, at a volume's root.
pub const STAGING_PREFIX: &str = ".hangar-copy-";
/// The inside id of what has no id in the instance's range.
const NOBODY: u32 = 65534;

/// Why a copy was refused or failed; each is one `{code, message}`.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    /// What is in place does not allow the copy (an existing directory).
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Full(String),
    #[error("{0}")]
    Io(String),
}

impl CopyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CopyError::Refused(_) => ErrorCode::InvalidArgument,
            CopyError::NotFound(_) => ErrorCode::NotFound,
            CopyError::Exists(_) => ErrorCode::AlreadyExists,
            CopyError::Full(_) => ErrorCode::QuotaExceeded,
            CopyError::Io(_) => ErrorCode::Internal,
        }
    }
}

impl From<CopyError> for EpError {
    fn from(e: CopyError) -> Self {
        EpError(ApiError::new(e.code(), e.to_string()))
    }
}

/// The instance's view of a path relative to its volume, for messages.
fn shown(rel: &Path) -> String {
    let r = rel.to_string_lossy();
    if r.is_empty() { VOLUME_MOUNT.to_string() } else { format!("{VOLUME_MOUNT}/{}", r.trim_end_matches('/')) }
}

fn io_err(what: &str, e: impl Into<std::io::Error>) -> CopyError {
    let e: std::io::Error = e.into();
    match e.raw_os_error() {
        Some(c) if c == Errno::DQUOT.raw_os_error() || c == Errno::NOSPC.raw_os_error() => CopyError::Full(format!("the instance's volume is full (its disk quota): {what}")),
        _ => CopyError::Io(format!("{what}: {e}")),
    }
}

fn resolve_err(rel: &Path, e: Errno) -> CopyError {
    let p = shown(rel);
    match e {
        Errno::XDEV => CopyError::Refused(format!("'{p}' leads outside the instance's volume (a symlink pointing out of it): refused")),
        Errno::NOENT => CopyError::NotFound(format!("'{p}' does not exist in the instance")),
        Errno::NOTDIR => CopyError::NotFound(format!("'{p}': a part of the path is not a directory")),
        Errno::LOOP => CopyError::Refused(format!("'{p}': too many levels of symlinks")),
        e => io_err(&format!("cannot open '{p}'"), e),
    }
}

/// A descriptor of a volume's root.
fn open_root(path: &Path) -> Result<OwnedFd, CopyError> {
    rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).map_err(|e| io_err("cannot open the instance's volume", e))
}

/// `rel` (relative to the volume's root, '' is the root) opened `O_PATH`, following
/// symlinks only while they stay beneath the root.
fn resolve(root: BorrowedFd, rel: &Path) -> Result<OwnedFd, CopyError> {
    let p = rel.to_string_lossy();
    let p = p.trim_end_matches('/');
    if Path::new(p).components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(CopyError::Refused(format!("'{}' is not a path inside the volume (no '..', not absolute)", shown(rel))));
    }
    let p = if p.is_empty() { "." } else { p };
    rfs::openat2(root, p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS).map_err(|e| resolve_err(rel, e))
}

/// Opens the inode an `O_PATH` descriptor holds (the one that was checked).
fn reopen(fd: &OwnedFd, flags: OFlags, what: &Path) -> Result<OwnedFd, CopyError> {
    rfs::open(format!("/proc/self/fd/{}", fd.as_raw_fd()), flags | OFlags::CLOEXEC | OFlags::NOCTTY, Mode::empty()).map_err(|e| io_err(&format!("cannot open '{}'", shown(what)), e))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

fn kind_of(st: &rfs::Stat, what: &Path) -> Result<Kind, CopyError> {
    let refuse = |k: &str| Err(CopyError::Refused(format!("'{}' is {k}: only files, directories and symlinks are copied", shown(what))));
    match FileType::from_raw_mode(st.st_mode as _) {
        FileType::Directory => Ok(Kind::Dir),
        FileType::RegularFile => Ok(Kind::File),
        FileType::Symlink => Ok(Kind::Symlink),
        FileType::CharacterDevice | FileType::BlockDevice => refuse("a device file"),
        FileType::Fifo => refuse("a fifo"),
        FileType::Socket => refuse("a socket"),
        _ => refuse("of an unknown type"),
    }
}

/// An entry's metadata as a stream carries it: ids inside the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

impl Meta {
    fn of(st: &rfs::Stat, ids: IdRange) -> Meta {
        let inside = |h: u32| h.checked_sub(ids.base).filter(|i| *i < ids.size).unwrap_or(NOBODY);
        Meta { mode: st.st_mode & 0o7777, uid: inside(st.st_uid), gid: inside(st.st_gid), mtime: st.st_mtime, mtime_nsec: st.st_mtime_nsec as u32 }
    }

    fn times(&self) -> Timestamps {
        let t = Timespec { tv_sec: self.mtime, tv_nsec: self.mtime_nsec as _ };
        Timestamps { last_access: t, last_modification: t }
    }
}

/// A file's bytes: from a stream, or a file of this host (which may be cloned).
pub enum Data<'a> {
    Stream(&'a mut dyn Read),
    File(&'a std::fs::File),
}

/// Where a walk or a stream's entries go. Paths are relative, parents before children.
pub trait Sink {
    fn dir(&mut self, path: &Path, meta: &Meta) -> Result<(), CopyError>;
    fn file(&mut self, path: &Path, meta: &Meta, size: u64, data: Data<'_>) -> Result<(), CopyError>;
    fn symlink(&mut self, path: &Path, meta: &Meta, target: &Path) -> Result<(), CopyError>;
}

/// The name a copy of `rel` carries: its last component ('home' for the volume's root).
fn top_name(rel: &Path) -> PathBuf {
    rel.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(&VOLUME_MOUNT[1..]))
}

fn names_in(dir: &OwnedFd, what: &Path) -> Result<Vec<OsString>, CopyError> {
    let d = rfs::Dir::read_from(dir).map_err(|e| io_err(&format!("cannot list '{}'", shown(what)), e))?;
    let mut names = vec![];
    for e in d {
        let e = e.map_err(|e| io_err(&format!("cannot list '{}'", shown(what)), e))?;
        let n = OsStr::from_bytes(e.file_name().to_bytes());
        if n != "." && n != ".." {
            names.push(n.to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Reads `rel` in the volume (a directory only with `recursive`) into `sink`.
pub fn walk(root: BorrowedFd, rel: &Path, recursive: bool, ids: IdRange, sink: &mut dyn Sink) -> Result<(), CopyError> {
    let top = resolve(root, rel)?;
    let st = rfs::fstat(&top).map_err(|e| io_err("stat", e))?;
    let name = top_name(rel);
    let meta = Meta::of(&st, ids);
    match kind_of(&st, rel)? {
        Kind::File => {
            let f = std::fs::File::from(reopen(&top, OFlags::RDONLY, rel)?);
            sink.file(&name, &meta, st.st_size as u64, Data::File(&f))
        }
        Kind::Dir if !recursive => Err(CopyError::Refused(format!("'{}' is a directory: copy it with -r (recursive)", shown(rel)))),
        Kind::Dir => {
            let d = reopen(&top, OFlags::RDONLY | OFlags::DIRECTORY, rel)?;
            sink.dir(&name, &meta)?;
            walk_dir(&d, rel, &name, ids, sink)
        }
        // Followed by resolve: a symlink here is one the kernel would not follow.
        Kind::Symlink => Err(CopyError::Refused(format!("'{}' is a symlink that cannot be followed inside the volume", shown(rel)))),
    }
}

fn walk_dir(dir: &OwnedFd, src: &Path, at: &Path, ids: IdRange, sink: &mut dyn Sink) -> Result<(), CopyError> {
    for n in names_in(dir, src)? {
        let (src, path) = (src.join(&n), at.join(&n));
        let fd = match rfs::openat(dir, n.as_os_str(), OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            // Removed since the listing: it is not part of the copy.
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(io_err(&format!("cannot open '{}'", shown(&src)), e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| io_err("stat", e))?;
        let meta = Meta::of(&st, ids);
        match kind_of(&st, &src)? {
            Kind::File => {
                let f = std::fs::File::from(reopen(&fd, OFlags::RDONLY, &src)?);
                sink.file(&path, &meta, st.st_size as u64, Data::File(&f))?;
            }
            Kind::Dir => {
                let d = reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY, &src)?;
                sink.dir(&path, &meta)?;
                walk_dir(&d, &src, &path, ids, sink)?;
            }
            Kind::Symlink => {
                let t = rfs::readlinkat(dir, n.as_os_str(), Vec::new()).map_err(|e| io_err(&format!("cannot read the symlink '{}'", shown(&src)), e))?;
                sink.symlink(&path, &meta, Path::new(OsStr::from_bytes(t.as_bytes())))?;
            }
        }
    }
    Ok(())
}

/// A sink that only looks and counts: a walk through it refuses what a copy would
/// refuse, before anything is sent or written.
#[derive(Default)]
pub struct Check {
    pub written: FilesWritten,
    /// Whether the first entry (the copy's top) is a directory.
    pub top_dir: Option<bool>,
}

impl Sink for Check {
    fn dir(&mut self, _: &Path, _: &Meta) -> Result<(), CopyError> {
        self.top_dir.get_or_insert(true);
        self.written.entries += 1;
        Ok(())
    }
    fn file(&mut self, _: &Path, _: &Meta, size: u64, _: Data<'_>) -> Result<(), CopyError> {
        self.top_dir.get_or_insert(false);
        self.written.entries += 1;
        self.written.bytes += size;
        Ok(())
    }
    fn symlink(&mut self, _: &Path, _: &Meta, _: &Path) -> Result<(), CopyError> {
        self.top_dir.get_or_insert(false);
        self.written.entries += 1;
        Ok(())
    }
}

/// Reads exactly `left` bytes: a file that shrank since its size was taken is padded
/// with zeros, one that grew is cut, so the tar entry's size always holds.
struct Exact<'a> {
    inner: &'a mut dyn Read,
    left: u64,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes entries as a tar stream (GNU headers: long names, large files).
pub struct TarSink<W: std::io::Write> {
    b: tar::Builder<W>,
}

fn header(meta: &Meta, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode);
    h.set_uid(meta.uid as u64);
    h.set_gid(meta.gid as u64);
    h.set_mtime(meta.mtime.max(0) as u64);
    h.set_size(size);
    h
}

impl<W: std::io::Write> TarSink<W> {
    pub fn new(w: W) -> TarSink<W> {
        let mut b = tar::Builder::new(w);
        b.follow_symlinks(false);
        TarSink { b }
    }
    pub fn finish(mut self) -> Result<(), CopyError> {
        self.b.finish().map_err(|e| io_err("cannot end the stream", e))
    }
}

impl<W: std::io::Write> Sink for TarSink<W> {
    fn dir(&mut self, path: &Path, meta: &Meta) -> Result<(), CopyError> {
        let mut h = header(meta, tar::EntryType::Directory, 0);
        self.b.append_data(&mut h, path, std::io::empty()).map_err(|e| io_err("cannot send", e))
    }
    fn file(&mut self, path: &Path, meta: &Meta, size: u64, data: Data<'_>) -> Result<(), CopyError> {
        let mut h = header(meta, tar::EntryType::Regular, size);
        let mut f;
        let inner: &mut dyn Read = match data {
            Data::Stream(r) => r,
            Data::File(file) => {
                f = file;
                &mut f
            }
        };
        self.b.append_data(&mut h, path, Exact { inner, left: size }).map_err(|e| io_err("cannot send", e))
    }
    fn symlink(&mut self, path: &Path, meta: &Meta, target: &Path) -> Result<(), CopyError> {
        let mut h = header(meta, tar::EntryType::Symlink, 0);
        self.b.append_link(&mut h, path, target).map_err(|e| io_err("cannot send", e))
    }
}

/// Feeds a tar stream's entries to `sink`; directories only with `recursive`; any
/// other kind of entry (hard links, devices, fifos) is refused.
pub fn untar(r: impl Read, recursive: bool, sink: &mut dyn Sink) -> Result<(), CopyError> {
    let broken = |e: std::io::Error| CopyError::Refused(format!("the tar stream is not valid or was cut off: {e}"));
    let mut a = tar::Archive::new(r);
    for e in a.entries().map_err(broken)? {
        let mut e = e.map_err(broken)?;
        let path = e.path().map_err(broken)?.into_owned();
        let h = e.header();
        let id = |v: std::io::Result<u64>| v.ok().and_then(|v| u32::try_from(v).ok()).unwrap_or(NOBODY);
        let meta = Meta { mode: h.mode().map_err(broken)? & 0o7777, uid: id(h.uid()), gid: id(h.gid()), mtime: h.mtime().map_err(broken)? as i64, mtime_nsec: 0 };
        let kind = h.entry_type();
        let refuse = |k: &str| Err(CopyError::Refused(format!("'{}' in the stream is {k}: only files, directories and symlinks are copied", path.display())));
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = e.size();
                sink.file(&path, &meta, size, Data::Stream(&mut e))?;
            }
            tar::EntryType::Directory if !recursive => return Err(CopyError::Refused(format!("'{}' in the stream is a directory: copy it with -r (recursive)", path.display()))),
            tar::EntryType::Directory => sink.dir(&path, &meta)?,
            tar::EntryType::Symlink => {
                let target = e.link_name().map_err(broken)?.ok_or_else(|| CopyError::Refused(format!("symlink '{}' in the stream has no target", path.display())))?.into_owned();
                sink.symlink(&path, &meta, &target)?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {}
            tar::EntryType::Link => return refuse("a hard link"),
            tar::EntryType::Char | tar::EntryType::Block => return refuse("a device file"),
            tar::EntryType::Fifo => return refuse("a fifo"),
            _ => return refuse("of a kind hangar does not copy"),
        }
    }
    Ok(())
}

/// A write's staging directory at a volume's root, removed when dropped.
pub struct Staging {
    root: OwnedFd,
    name: OsString,
    pub dir: OwnedFd,
}

impl Staging {
    pub fn new(root: &OwnedFd) -> Result<Staging, CopyError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = OsString::from(format!("{STAGING_PREFIX}{}-{n}-{nanos}", std::process::id()));
        let root = root.try_clone().map_err(|e| io_err("dup", e))?;
        rfs::mkdirat(&root, name.as_os_str(), Mode::from_raw_mode(0o700)).map_err(|e| io_err("cannot create the staging directory", e))?;
        let dir = rfs::openat(&root, name.as_os_str(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty());
        let staging = Staging { root, name, dir: dir.map_err(|e| io_err("cannot open the staging directory", e))? };
        // Ours only if root owns it: nobody else may have slipped one in under its name.
        let st = rfs::fstat(&staging.dir).map_err(|e| io_err("stat", e))?;
        if st.st_uid != 0 || st.st_mode & 0o077 != 0 {
            return Err(CopyError::Io("the staging directory is not root's own: refused".into()));
        }
        Ok(staging)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(self.root.as_fd(), &self.name) {
            tracing::warn!(error = %e, "cannot remove a copy's staging directory; the next agent start retries");
        }
    }
}

/// Removes `name` in `dir` and everything below it, never following a symlink.
fn remove_tree(dir: BorrowedFd, name: &OsStr) -> std::io::Result<()> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode as _) == FileType::Directory {
        let sub = rfs::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
        for e in rfs::Dir::read_from(&sub)? {
            let e = e?;
            let n = OsStr::from_bytes(e.file_name().to_bytes());
            if n != "." && n != ".." {
                remove_tree(sub.as_fd(), n)?;
            }
        }
        rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rfs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

/// Writes entries under a staging directory, owners mapped into `ids`.
pub struct Stager<'a> {
    dir: &'a OwnedFd,
    ids: IdRange,
    dirs: Vec<(PathBuf, Meta)>,
    pub written: FilesWritten,
}

impl<'a> Stager<'a> {
    pub fn new(dir: &'a OwnedFd, ids: IdRange) -> Stager<'a> {
        Stager { dir, ids, dirs: vec![], written: FilesWritten::default() }
    }

    /// The directory `path` lies in, opened, and its last name. Only plain names:
    /// an absolute path or `..` in a stream is refused.
    fn parent(&self, path: &Path) -> Result<(OwnedFd, OsString), CopyError> {
        let mut names = vec![];
        for c in path.components() {
            match c {
                Component::Normal(n) => names.push(n.to_os_string()),
                Component::CurDir => {}
                _ => return Err(CopyError::Refused(format!("'{}' in the stream is absolute or holds '..': refused", path.display()))),
            }
        }
        let Some(last) = names.pop() else {
            return Err(CopyError::Refused("an entry of the stream has an empty name".into()));
        };
        let mut fd = self.dir.try_clone().map_err(|e| io_err("dup", e))?;
        for n in &names {
            fd = rfs::openat(&fd, n.as_os_str(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| CopyError::Refused(format!("'{}' in the stream does not follow its directory: {e}", path.display())))?;
        }
        Ok((fd, last))
    }

    fn owner(&self, meta: &Meta) -> (Option<rfs::Uid>, Option<rfs::Gid>) {
        let host = |i: u32| self.ids.host_id(i).unwrap_or(self.ids.base);
        (Some(rfs::Uid::from_raw(host(meta.uid))), Some(rfs::Gid::from_raw(host(meta.gid))))
    }

    /// Sets the directories' times last: writing their entries moved them.
    pub fn finish(&mut self) -> Result<(), CopyError> {
        for (path, meta) in self.dirs.iter().rev() {
            let (p, n) = self.parent(path)?;
            rfs::utimensat(&p, n.as_os_str(), &meta.times(), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io_err("cannot set a directory's times", e))?;
        }
        Ok(())
    }
}

fn exists_err(path: &Path) -> CopyError {
    CopyError::Refused(format!("'{}' appears twice in the stream", path.display()))
}

/// Copies `size` bytes of `src` into `dst`: a reflink when both lie in one btrfs
/// filesystem, else the kernel's copy, else a plain copy.
fn clone_or_copy(src: &std::fs::File, dst: &std::fs::File) -> std::io::Result<u64> {
    if rfs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(dst.metadata()?.len());
    }
    let mut total = 0u64;
    loop {
        match rfs::copy_file_range(src, None, dst, None, 1 << 30) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) if total == 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    let (mut s, mut d) = (src, dst);
    std::io::copy(&mut s, &mut d)
}

impl Sink for Stager<'_> {
    fn dir(&mut self, path: &Path, meta: &Meta) -> Result<(), CopyError> {
        let (p, n) = self.parent(path)?;
        match rfs::mkdirat(&p, n.as_os_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(exists_err(path)),
            Err(e) => return Err(io_err(&format!("cannot create '{}'", path.display()), e)),
        }
        let d = rfs::openat(&p, n.as_os_str(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).map_err(|e| io_err("open", e))?;
        let (u, g) = self.owner(meta);
        rfs::fchown(&d, u, g).map_err(|e| io_err("chown", e))?;
        rfs::fchmod(&d, Mode::from_raw_mode(meta.mode)).map_err(|e| io_err("chmod", e))?;
        self.dirs.push((path.to_path_buf(), *meta));
        self.written.entries += 1;
        Ok(())
    }

    fn file(&mut self, path: &Path, meta: &Meta, size: u64, data: Data<'_>) -> Result<(), CopyError> {
        let (p, n) = self.parent(path)?;
        let fd = match rfs::openat(&p, n.as_os_str(), OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => return Err(exists_err(path)),
            Err(e) => return Err(io_err(&format!("cannot create '{}'", path.display()), e)),
        };
        let mut f = std::fs::File::from(fd);
        let what = format!("cannot write '{}'", path.display());
        let n = match data {
            Data::Stream(r) => {
                let n = std::io::copy(&mut r.take(size), &mut f).map_err(|e| io_err(&what, e))?;
                if n != size {
                    return Err(CopyError::Refused(format!("the stream was cut off in '{}'", path.display())));
                }
                n
            }
            Data::File(src) => clone_or_copy(src, &f).map_err(|e| io_err(&what, e))?,
        };
        let (u, g) = self.owner(meta);
        // Owner first: a chown clears the set-id bits the mode may hold.
        rfs::fchown(&f, u, g).map_err(|e| io_err("chown", e))?;
        rfs::fchmod(&f, Mode::from_raw_mode(meta.mode)).map_err(|e| io_err("chmod", e))?;
        rfs::futimens(&f, &meta.times()).map_err(|e| io_err("cannot set a file's times", e))?;
        self.written.entries += 1;
        self.written.bytes += n;
        Ok(())
    }

    fn symlink(&mut self, path: &Path, meta: &Meta, target: &Path) -> Result<(), CopyError> {
        let (p, n) = self.parent(path)?;
        match rfs::symlinkat(target, &p, n.as_os_str()) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(exists_err(path)),
            Err(e) => return Err(io_err(&format!("cannot create '{}'", path.display()), e)),
        }
        let (u, g) = self.owner(meta);
        rfs::chownat(&p, n.as_os_str(), u, g, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io_err("chown", e))?;
        rfs::utimensat(&p, n.as_os_str(), &meta.times(), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io_err("cannot set a symlink's times", e))?;
        self.written.entries += 1;
        Ok(())
    }
}

/// Where a write puts what it staged.
pub enum Dest {
    /// An existing directory: every top entry goes in under its own name.
    Into(OwnedFd),
    /// A name in an existing directory: the one top entry takes it.
    As(OwnedFd, OsString),
}

/// Resolves a write's destination before anything is read or written.
pub fn dest(root: BorrowedFd, rel: &Path) -> Result<Dest, CopyError> {
    let text = rel.to_string_lossy();
    let want_dir = text.is_empty() || text.ends_with('/');
    let open_dir = |fd: &OwnedFd, what: &Path| reopen(fd, OFlags::RDONLY | OFlags::DIRECTORY, what);
    match resolve(root, rel) {
        Ok(fd) => {
            let st = rfs::fstat(&fd).map_err(|e| io_err("stat", e))?;
            match kind_of(&st, rel)? {
                Kind::Dir => Ok(Dest::Into(open_dir(&fd, rel)?)),
                _ if want_dir => Err(CopyError::NotFound(format!("'{}' is not a directory", shown(rel)))),
                _ => parent_of(root, rel),
            }
        }
        Err(CopyError::NotFound(_)) if !want_dir => parent_of(root, rel),
        Err(CopyError::NotFound(_)) => Err(CopyError::NotFound(format!("the directory '{}' does not exist in the instance", shown(rel)))),
        Err(e) => Err(e),
    }
}

fn parent_of(root: BorrowedFd, rel: &Path) -> Result<Dest, CopyError> {
    let name = rel.file_name().ok_or_else(|| CopyError::Refused(format!("'{}' names no file", shown(rel))))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    let fd = match resolve(root, parent) {
        Err(CopyError::NotFound(_)) => return Err(CopyError::NotFound(format!("the directory '{}' does not exist in the instance", shown(parent)))),
        r => r?,
    };
    let st = rfs::fstat(&fd).map_err(|e| io_err("stat", e))?;
    if kind_of(&st, parent)? != Kind::Dir {
        return Err(CopyError::NotFound(format!("'{}' is not a directory", shown(parent))));
    }
    Ok(Dest::As(reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY, parent)?, name.to_os_string()))
}

fn is_dir(dir: BorrowedFd, name: &OsStr) -> Result<Option<bool>, CopyError> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode as _) == FileType::Directory)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(io_err("stat", e)),
    }
}

fn open_sub(dir: BorrowedFd, name: &OsStr) -> Result<OwnedFd, CopyError> {
    rfs::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).map_err(|e| io_err("open", e))
}

/// Whether an entry (a directory or not) may go where `existing` is (a directory, not
/// one, or nothing): a file never replaces a directory, a directory never a file, and
/// directories merge only with `recursive`. Ok(true): a merge.
fn conflict(src_dir: bool, existing: Option<bool>, recursive: bool, at: &Path) -> Result<bool, CopyError> {
    match (src_dir, existing) {
        (_, None) | (false, Some(false)) => Ok(false),
        (false, Some(true)) => Err(CopyError::Exists(format!("'{}' is an existing directory: a file cannot replace it", shown(at)))),
        (true, Some(false)) => Err(CopyError::Exists(format!("'{}' exists and is not a directory", shown(at)))),
        (true, Some(true)) if !recursive => Err(CopyError::Exists(format!("'{}' is an existing directory: copy with -r to merge into it", shown(at)))),
        (true, Some(true)) => Ok(true),
    }
}

/// What a write of a top entry `top` (a directory or not) at `rel` would refuse, checked
/// before a transfer starts (the write checks everything again once staged).
pub fn check_dest(root: BorrowedFd, rel: &Path, recursive: bool, top: &OsStr, top_dir: bool) -> Result<(), CopyError> {
    let base = PathBuf::from(rel.to_string_lossy().trim_end_matches('/'));
    let (dir, name, at) = match dest(root, rel)? {
        Dest::Into(d) => (d, top.to_os_string(), base.join(top)),
        Dest::As(p, n) => (p, n, base),
    };
    conflict(top_dir, is_dir(dir.as_fd(), &name)?, recursive, &at).map(|_| ())
}

/// Whether `s` (staged) may go to `n` in `d`, everything below it included.
fn check_place(sdir: BorrowedFd, s: &OsStr, ddir: BorrowedFd, n: &OsStr, recursive: bool, at: &Path) -> Result<(), CopyError> {
    let src_dir = is_dir(sdir, s)?.unwrap_or(false);
    match conflict(src_dir, is_dir(ddir, n)?, recursive, at)? {
        false => Ok(()),
        true => {
            let (ss, dd) = (open_sub(sdir, s)?, open_sub(ddir, n)?);
            for c in names_in(&ss, at)? {
                check_place(ss.as_fd(), &c, dd.as_fd(), &c, recursive, &at.join(&c))?;
            }
            Ok(())
        }
    }
}

fn put(sdir: BorrowedFd, s: &OsStr, ddir: BorrowedFd, n: &OsStr, at: &Path) -> Result<(), CopyError> {
    if is_dir(sdir, s)? == Some(true) && is_dir(ddir, n)? == Some(true) {
        let (ss, dd) = (open_sub(sdir, s)?, open_sub(ddir, n)?);
        for c in names_in(&ss, at)? {
            put(ss.as_fd(), &c, dd.as_fd(), &c, &at.join(&c))?;
        }
        return rfs::unlinkat(sdir, s, AtFlags::REMOVEDIR).map_err(|e| io_err("rmdir", e));
    }
    let times = rfs::statat(sdir, s, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io_err("stat", e))?;
    rfs::renameat(sdir, s, ddir, n).map_err(|e| io_err(&format!("cannot put '{}' in place", shown(at)), e))?;
    // Moving a directory to another parent may touch its times: they are the copy's.
    let t = Timespec { tv_sec: times.st_mtime as _, tv_nsec: times.st_mtime_nsec as _ };
    let _ = rfs::utimensat(ddir, n, &Timestamps { last_access: t, last_modification: t }, AtFlags::SYMLINK_NOFOLLOW);
    Ok(())
}

/// Moves what is staged to `dest`, once every entry has been checked against what is there.
pub fn place(staging: &OwnedFd, dest: &Dest, recursive: bool, rel: &Path) -> Result<(), CopyError> {
    let tops = names_in(staging, Path::new(""))?;
    let base = rel.to_string_lossy().trim_end_matches('/').to_string();
    let moves: Vec<(OsString, BorrowedFd, OsString, PathBuf)> = match dest {
        Dest::Into(d) => tops.into_iter().map(|t| (t.clone(), d.as_fd(), t.clone(), Path::new(&base).join(&t))).collect(),
        Dest::As(p, n) => {
            if tops.len() != 1 {
                return Err(CopyError::Refused(format!("the stream holds {} top entries; write it into a directory, not as '{}'", tops.len(), shown(rel))));
            }
            vec![(tops[0].clone(), p.as_fd(), n.clone(), PathBuf::from(&base))]
        }
    };
    for (s, d, n, at) in &moves {
        check_place(staging.as_fd(), s, *d, n, recursive, at)?;
    }
    for (s, d, n, at) in &moves {
        put(staging.as_fd(), s, *d, n, at)?;
    }
    Ok(())
}

/// Writes the tar stream `r` to `rel` in the volume at `root_path`.
pub fn write_tar(root_path: &Path, rel: &Path, recursive: bool, ids: IdRange, r: impl Read) -> Result<FilesWritten, CopyError> {
    receive_tar(root_path, rel, recursive, ids, r, || true)
}

/// [`write_tar`] that puts what it staged in place only if `commit` (called once the
/// tar stream has ended) says so: a transfer's end frame must check first.
pub fn receive_tar(root_path: &Path, rel: &Path, recursive: bool, ids: IdRange, r: impl Read, commit: impl FnOnce() -> bool) -> Result<FilesWritten, CopyError> {
    let root = open_root(root_path)?;
    let dest = dest(root.as_fd(), rel)?;
    let staging = Staging::new(&root)?;
    let mut s = Stager::new(&staging.dir, ids);
    untar(r, recursive, &mut s)?;
    s.finish()?;
    if !commit() {
        return Err(CopyError::Refused("the stream did not check (byte count or SHA-256): nothing was written".into()));
    }
    place(&staging.dir, &dest, recursive, rel)?;
    Ok(s.written)
}

/// Writes `rel` of the volume at `root_path` as a tar stream into `w`.
pub fn send_tar(root_path: &Path, rel: &Path, recursive: bool, ids: IdRange, w: impl std::io::Write) -> Result<(), CopyError> {
    let root = open_root(root_path)?;
    let mut t = TarSink::new(w);
    walk(root.as_fd(), rel, recursive, ids, &mut t)?;
    t.finish()
}

/// Checks a copy's source (`top` unset: the whole tree, counted) or destination.
pub fn check(root_path: &Path, q: &hangar_types::files::AgentFilesCheck) -> Result<hangar_types::files::FilesChecked, CopyError> {
    let root = open_root(root_path)?;
    let ids = IdRange::at(q.uid_base);
    match &q.top {
        Some(top) => {
            check_dest(root.as_fd(), Path::new(&q.path), q.recursive, OsStr::new(top), q.top_dir)?;
            Ok(Default::default())
        }
        None => {
            let mut c = Check::default();
            walk(root.as_fd(), Path::new(&q.path), q.recursive, ids, &mut c)?;
            Ok(hangar_types::files::FilesChecked { written: c.written, top_dir: c.top_dir.unwrap_or(false) })
        }
    }
}

/// Copies between two volumes of this host: reflinks when the pool is btrfs.
pub fn copy_local(from_root: &Path, from: &Path, from_ids: IdRange, to_root: &Path, to: &Path, to_ids: IdRange, recursive: bool) -> Result<FilesWritten, CopyError> {
    let (src, dst) = (open_root(from_root)?, open_root(to_root)?);
    walk(src.as_fd(), from, recursive, from_ids, &mut Check::default())?;
    let dest = dest(dst.as_fd(), to)?;
    let staging = Staging::new(&dst)?;
    let mut s = Stager::new(&staging.dir, to_ids);
    walk(src.as_fd(), from, recursive, from_ids, &mut s)?;
    s.finish()?;
    place(&staging.dir, &dest, recursive, to)?;
    Ok(s.written)
}

/// A transfer's target, told to expect files at `to`: its volume is here and the
/// destination resolves (the hub checked the rest; the write checks all again).
pub fn expect_files(volumes: &dyn VolumeDriver, to: &hangar_types::files::AgentCopyEnd) -> Result<(), CopyError> {
    IdRange::at(to.uid_base).check().map_err(|m| CopyError::Refused(format!("uid_base: {m}")))?;
    let root = volumes.path(&VolumeId::from(&to.sandbox));
    if !root.is_dir() {
        return Err(CopyError::NotFound(format!("the volume of {} is not on this host", to.sandbox)));
    }
    dest(open_root(&root)?.as_fd(), Path::new(&to.path)).map(|_| ())
}

/// A transfer's source, told to send `from`: everything a copy would refuse, refused now.
pub fn check_source(volumes: &dyn VolumeDriver, from: &hangar_types::files::AgentCopyEnd, recursive: bool) -> Result<(), CopyError> {
    let ids = IdRange::at(from.uid_base);
    ids.check().map_err(|m| CopyError::Refused(format!("uid_base: {m}")))?;
    let root = volumes.path(&VolumeId::from(&from.sandbox));
    if !root.is_dir() {
        return Err(CopyError::NotFound(format!("the volume of {} is not on this host", from.sandbox)));
    }
    walk(open_root(&root)?.as_fd(), Path::new(&from.path), recursive, ids, &mut Check::default())
}

/// Removes staging directories a killed agent left in its volumes.
pub async fn remove_leftovers(volumes: Arc<dyn VolumeDriver>) {
    let Ok(list) = volumes.list().await else { return };
    for vol in list {
        let root = volumes.path(&vol);
        let _ = tokio::task::spawn_blocking(move || {
            let Ok(fd) = open_root(&root) else { return };
            let Ok(names) = names_in(&fd, Path::new("")) else { return };
            for n in names.iter().filter(|n| n.as_bytes().starts_with(STAGING_PREFIX.as_bytes())) {
                match remove_tree(fd.as_fd(), n) {
                    Ok(()) => tracing::info!(volume = %root.display(), "removed the staging directory of an interrupted copy"),
                    Err(e) => tracing::warn!(volume = %root.display(), error = %e, "cannot remove the staging directory of an interrupted copy"),
                }
            }
        })
        .await;
    }
}

// ---- the endpoint ----

/// The endpoint's file routes (the hub's client certificate only).
pub fn routes(volumes: Arc<dyn VolumeDriver>) -> Router<EndpointState> {
    tokio::spawn(remove_leftovers(volumes));
    Router::new()
        .route("/v1/sandboxes/{id}/files", get(read).put(write))
        .route("/v1/sandboxes/{id}/files/check", get(check_route))
        .route("/v1/copies", post(copy))
}

fn ids_at(base: u32) -> Result<IdRange, EpError> {
    let ids = IdRange::at(base);
    ids.check().map_err(|m| EpError(ApiError::invalid(format!("uid_base: {m}"))))?;
    Ok(ids)
}

async fn volume_root(st: &EndpointState, sandbox: &hangar_types::SandboxId) -> Result<PathBuf, EpError> {
    let vol = VolumeId::from(sandbox);
    if !st.volumes.exists(&vol).await.unwrap_or(false) {
        return Err(EpError(ApiError::not_found(format!("the volume of {sandbox} is not on this host"))));
    }
    Ok(st.volumes.path(&vol))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, CopyError> + Send + 'static) -> Result<T, EpError> {
    Ok(tokio::task::spawn_blocking(f).await.map_err(|e| EpError(ApiError::internal(format!("copy worker failed: {e}"))))??)
}

async fn check_route(
    State(st): State<EndpointState>,
    Extension(peer): Extension<PeerInfo>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<hangar_types::files::AgentFilesCheck>,
) -> Result<Json<hangar_types::files::FilesChecked>, EpError> {
    check_peer(&st, &peer)?;
    let sandbox = sandbox_id(id)?;
    ids_at(q.uid_base)?;
    let root = volume_root(&st, &sandbox).await?;
    Ok(Json(blocking(move || check(&root, &q)).await?))
}

/// A tar stream of a path (checked whole before the first byte is sent).
async fn read(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, UrlPath(id): UrlPath<String>, Query(q): Query<AgentFilesQuery>) -> Result<Response, EpError> {
    check_peer(&st, &peer)?;
    let sandbox = sandbox_id(id)?;
    let ids = ids_at(q.uid_base)?;
    let root = volume_root(&st, &sandbox).await?;
    let (rel, recursive) = (PathBuf::from(&q.path), q.recursive);
    {
        let (root, rel) = (root.clone(), rel.clone());
        blocking(move || walk(open_root(&root)?.as_fd(), &rel, recursive, ids, &mut Check::default())).await?;
    }
    let (w, stream) = byte_channel();
    tokio::task::spawn_blocking(move || {
        let failer = w.clone();
        let sent = send_tar(&root, &rel, recursive, ids, w);
        if let Err(e) = sent {
            tracing::warn!(sandbox = %sandbox, error = %e, "file stream broken off");
            failer.fail(std::io::Error::other(e.to_string()));
        }
    });
    Ok(([(axum::http::header::CONTENT_TYPE, TAR_MEDIA_TYPE)], axum::body::Body::from_stream(stream)).into_response())
}

/// Writes a tar stream into the volume; nothing changes unless all of it arrived and fits.
async fn write(
    State(st): State<EndpointState>,
    Extension(peer): Extension<PeerInfo>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AgentFilesQuery>,
    body: axum::body::Body,
) -> Result<Json<FilesWritten>, EpError> {
    check_peer(&st, &peer)?;
    let sandbox = sandbox_id(id)?;
    let ids = ids_at(q.uid_base)?;
    let root = volume_root(&st, &sandbox).await?;
    let stream: ByteStream = Box::pin(body.into_data_stream().map(|r| r.map_err(std::io::Error::other)));
    let reader = ChannelReader::spawn(stream);
    let rel = PathBuf::from(&q.path);
    Ok(Json(blocking(move || write_tar(&root, &rel, q.recursive, ids, reader)).await?))
}

async fn copy(State(st): State<EndpointState>, Extension(peer): Extension<PeerInfo>, Json(req): Json<AgentCopy>) -> Result<Json<FilesWritten>, EpError> {
    check_peer(&st, &peer)?;
    let (from_ids, to_ids) = (ids_at(req.from.uid_base)?, ids_at(req.to.uid_base)?);
    let (from_root, to_root) = (volume_root(&st, &req.from.sandbox).await?, volume_root(&st, &req.to.sandbox).await?);
    let (from, to) = (PathBuf::from(&req.from.path), PathBuf::from(&req.to.path));
    Ok(Json(blocking(move || copy_local(&from_root, &from, from_ids, &to_root, &to, to_ids, req.recursive)).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn ids() -> IdRange {
        IdRange::at(1 << 20)
    }

    fn need_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(std::env::var("CI").is_err(), "these tests need root (chown, mknod) and CI is set");
        false
    }

    fn refused(root: &Path, rel: &str, recursive: bool) -> CopyError {
        let fd = open_root(root).unwrap();
        walk(fd.as_fd(), Path::new(rel), recursive, ids(), &mut Check::default()).unwrap_err()
    }

    #[test]
    fn paths_cannot_leave_the_volume() {
        if !need_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let vol = t.path().join("vol");
        std::fs::create_dir_all(vol.join("d")).unwrap();
        std::fs::write(t.path().join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", vol.join("d/up")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", vol.join("magic")).unwrap();
        std::os::unix::fs::symlink("d", vol.join("inside")).unwrap();
        std::fs::write(vol.join("d/f"), "ok").unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, vol.join("null0"), FileType::CharacterDevice, Mode::from_raw_mode(0o600), rustix::fs::makedev(1, 3)).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, vol.join("fifo"), FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        for p in ["abs/passwd", "d/up/secret", "magic/etc/passwd", "abs"] {
            let e = refused(&vol, p, true);
            assert!(matches!(e, CopyError::Refused(_)) && e.to_string().contains("outside the instance's volume"), "{p}: {e}");
        }
        assert!(refused(&vol, "d/../d/f", false).to_string().contains("not a path inside the volume"));
        assert!(refused(&vol, "null0", false).to_string().contains("device file"));
        assert!(refused(&vol, "fifo", false).to_string().contains("fifo"));
        assert!(refused(&vol, "", true).to_string().contains("fifo"), "a tree holding a fifo is refused whole");
        assert!(refused(&vol, "d", false).to_string().contains("-r"));
        // A symlink that stays inside is followed; inside a tree it is copied as a link.
        let fd = open_root(&vol).unwrap();
        let mut c = Check::default();
        walk(fd.as_fd(), Path::new("inside/f"), false, ids(), &mut c).unwrap();
        assert_eq!(c.written, FilesWritten { entries: 1, bytes: 2 });
        // Writes: a destination through an escaping link is refused before anything is read.
        assert!(matches!(dest(fd.as_fd(), Path::new("abs/")), Err(CopyError::Refused(_))));
        assert!(matches!(dest(fd.as_fd(), Path::new("d/up/x")), Err(CopyError::Refused(_))));
    }

    #[test]
    fn a_tree_round_trips_with_modes_times_links_and_ids() {
        if !need_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        std::fs::create_dir_all(src.join("proj/sub")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("proj/sub/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(src.join("proj/sub/run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("sub/run.sh", src.join("proj/link")).unwrap();
        std::os::unix::fs::chown(src.join("proj/sub/run.sh"), Some(ids().base + 1000), Some(ids().base + 1000)).unwrap();
        let set = |p: &Path, s: i64| rustix::fs::utimensat(rustix::fs::CWD, p, &Meta { mode: 0, uid: 0, gid: 0, mtime: s, mtime_nsec: 0 }.times(), AtFlags::SYMLINK_NOFOLLOW).unwrap();
        set(&src.join("proj/sub/run.sh"), 1_000_000_000);
        set(&src.join("proj/sub"), 1_100_000_000);
        let mut tar = vec![];
        send_tar(&src, Path::new("proj"), true, ids(), &mut tar).unwrap();
        let other = IdRange::at(3 << 20);
        let w = write_tar(&dst, Path::new(""), true, other, &tar[..]).unwrap();
        assert_eq!(w, FilesWritten { entries: 4, bytes: 10 });
        let m = std::fs::symlink_metadata(dst.join("proj/sub/run.sh")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.mtime(), m.uid(), m.gid()), (0o750, 1_000_000_000, other.base + 1000, other.base + 1000));
        assert_eq!(std::fs::metadata(dst.join("proj/sub")).unwrap().mtime(), 1_100_000_000);
        assert_eq!(std::fs::read_link(dst.join("proj/link")).unwrap(), Path::new("sub/run.sh"));
        // Again without -r: the stream's directories are refused, nothing changes.
        assert!(matches!(write_tar(&dst, Path::new(""), false, other, &tar[..]), Err(CopyError::Refused(_))));
        // A file onto the existing directory: 409, the directory stays.
        let mut one = vec![];
        let mut ts = TarSink::new(&mut one);
        ts.file(Path::new("proj"), &Meta { mode: 0o644, uid: 0, gid: 0, mtime: 0, mtime_nsec: 0 }, 1, Data::Stream(&mut &b"x"[..])).unwrap();
        ts.finish().unwrap();
        assert!(matches!(write_tar(&dst, Path::new(""), false, other, &one[..]), Err(CopyError::Exists(_))));
        assert!(dst.join("proj/sub").is_dir());
        // A cut stream: refused, nothing placed, no staging left.
        let cut = &tar[..tar.len() / 2];
        assert!(write_tar(&dst, Path::new("again"), true, other, cut).is_err());
        assert!(!dst.join("again").exists());
        let left: Vec<_> = std::fs::read_dir(&dst).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![OsString::from("proj")]);
        // Same host: a copy between two volumes, renamed on the way.
        let w = copy_local(&src, Path::new("proj"), ids(), &dst, Path::new("copy"), other, true).unwrap();
        assert_eq!(w.entries, 4);
        assert_eq!(std::fs::read(dst.join("copy/sub/run.sh")).unwrap(), b"#!/bin/sh\n");
    }
}
