//! Progress and cancellation of one operation (backup, restore, check) on a repository.
//!
//! rustic_core has neither a progress callback per call nor cancellation: it reports
//! progress to the `ProgressBars` given when the repository is opened, and it ignores
//! errors of single source files. So a `Repo` keeps a slot for the running operation that
//! its progress relay and its backend guard read: the relay forwards byte counts to the
//! operation's callback, and the guard refuses to save a snapshot once the operation is
//! cancelled, which is what turns a cancelled backup into an error instead of a
//! snapshot of half the files.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, Progress as RusticProgressHandle, ProgressBars,
    ProgressType, ReadBackend, ReadSource, ReadSourceEntry, ReadSourceOpen, RusticError,
    RusticProgress, RusticResult, WriteBackend,
};

/// Cancels an operation from another thread: cheap to clone, all clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Progress of a running operation, as given to its callback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Files handed to the backup so far (backups only).
    pub files: u64,
    /// Bytes processed: read and chunked for a backup, written for a restore, read for a
    /// check with `read_data`.
    pub bytes: u64,
    /// Total bytes expected, once known.
    pub total_bytes: Option<u64>,
}

pub(crate) struct Operation {
    pub(crate) cancel: CancelToken,
    files: AtomicU64,
    bytes: AtomicU64,
    total: AtomicU64,
    callback: Box<dyn Fn(&Progress) + Send + Sync>,
}

impl Operation {
    pub(crate) fn new(
        cancel: CancelToken,
        callback: Box<dyn Fn(&Progress) + Send + Sync>,
    ) -> Self {
        Self {
            cancel,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total: AtomicU64::new(0),
            callback,
        }
    }

    fn report(&self) {
        let total = self.total.load(Ordering::Relaxed);
        (self.callback)(&Progress {
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            total_bytes: (total > 0).then_some(total),
        });
    }

    fn add_file(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }
}

/// The slot for the running operation, shared by a `Repo`, its progress relay and its
/// backend guard.
#[derive(Clone, Default)]
pub(crate) struct OperationSlot(Arc<Mutex<Option<Arc<Operation>>>>);

impl OperationSlot {
    pub(crate) fn current(&self) -> Option<Arc<Operation>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `op` the running operation until the guard is dropped.
    pub(crate) fn start(&self, op: Arc<Operation>) -> SlotGuard<'_> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(op);
        SlotGuard(self)
    }

    fn cancelled(&self) -> bool {
        self.current().is_some_and(|op| op.cancel.is_cancelled())
    }
}

pub(crate) struct SlotGuard<'a>(&'a OperationSlot);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl std::fmt::Debug for OperationSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperationSlot")
    }
}

/// rustic_core's progress bars, relayed to the running operation's callback. Only byte
/// progress is relayed: the spinners and counters are for index loading and the like.
#[derive(Debug)]
pub(crate) struct ProgressRelay(pub(crate) OperationSlot);

impl ProgressBars for ProgressRelay {
    fn progress(&self, progress_type: ProgressType, _prefix: &str) -> RusticProgressHandle {
        match progress_type {
            ProgressType::Bytes => RusticProgressHandle::new(BytesRelay(self.0.clone())),
            ProgressType::Spinner | ProgressType::Counter => RusticProgressHandle::hidden(),
        }
    }
}

#[derive(Debug)]
struct BytesRelay(OperationSlot);

impl RusticProgress for BytesRelay {
    /// Not hidden, so that the archiver computes the total size of a backup.
    fn is_hidden(&self) -> bool {
        false
    }

    fn set_length(&self, len: u64) {
        if let Some(op) = self.0.current() {
            op.total.store(len, Ordering::Relaxed);
            op.report();
        }
    }

    fn set_title(&self, _title: &str) {}

    fn inc(&self, inc: u64) {
        if let Some(op) = self.0.current() {
            op.bytes.fetch_add(inc, Ordering::Relaxed);
            op.report();
        }
    }

    fn finish(&self) {}
}

/// The repository's backend, refusing to save a snapshot for a cancelled operation.
/// Packs and indexes written before the cancel stay, so the next backup re-uses them.
#[derive(Debug)]
pub(crate) struct GuardedBackend {
    pub(crate) inner: Arc<dyn WriteBackend>,
    pub(crate) slot: OperationSlot,
}

pub(crate) const CANCELLED: &str = "operation cancelled";

impl ReadBackend for GuardedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        self.inner.list_with_size(tpe)
    }

    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        self.inner.list(tpe)
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.inner.read_full(tpe, id)
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        self.inner.read_partial(tpe, id, cacheable, offset, length)
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.inner.warmup_path(tpe, id)
    }
}

impl WriteBackend for GuardedBackend {
    fn create(&self) -> RusticResult<()> {
        self.inner.create()
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        if tpe == FileType::Snapshot && self.slot.cancelled() {
            return Err(RusticError::new(ErrorKind::Backend, CANCELLED));
        }
        self.inner.write_bytes(tpe, id, cacheable, content)
    }

    fn remove(&self, tpe: FileType, id: &Id, cacheable: bool) -> RusticResult<()> {
        self.inner.remove(tpe, id, cacheable)
    }
}

/// A backup source that stops handing out entries once the operation is cancelled and
/// counts the files it hands out.
pub(crate) struct CancellableSource<S> {
    pub(crate) inner: S,
    pub(crate) op: Arc<Operation>,
}

impl<S: ReadSource> ReadSource for CancellableSource<S>
where
    S::Open: Send,
    S::Iter: Send,
{
    type Open = CancellableOpen<S::Open>;
    type Iter = CancellableIter<S::Iter>;

    fn size(&self) -> RusticResult<Option<u64>> {
        self.inner.size()
    }

    fn entries(&self) -> Self::Iter {
        CancellableIter { inner: self.inner.entries(), op: self.op.clone() }
    }
}

pub(crate) struct CancellableIter<I> {
    inner: I,
    op: Arc<Operation>,
}

impl<I, O> Iterator for CancellableIter<I>
where
    I: Iterator<Item = RusticResult<ReadSourceEntry<O>>>,
{
    type Item = RusticResult<ReadSourceEntry<CancellableOpen<O>>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.op.cancel.is_cancelled() {
            return None;
        }
        let item = self.inner.next()?;
        Some(item.map(|entry| {
            if !entry.node.is_dir() {
                self.op.add_file();
            }
            ReadSourceEntry {
                path: entry.path,
                node: entry.node,
                open: entry.open.map(|inner| CancellableOpen { inner, op: self.op.clone() }),
            }
        }))
    }
}

pub(crate) struct CancellableOpen<O> {
    inner: O,
    op: Arc<Operation>,
}

impl<O: ReadSourceOpen> ReadSourceOpen for CancellableOpen<O> {
    type Reader = CancellableReader<O::Reader>;

    fn open(self) -> RusticResult<Self::Reader> {
        Ok(CancellableReader { inner: self.inner.open()?, op: self.op })
    }
}

/// Stops reading a (large) file as soon as the operation is cancelled.
pub(crate) struct CancellableReader<R> {
    inner: R,
    op: Arc<Operation>,
}

impl<R: Read> Read for CancellableReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.op.cancel.is_cancelled() {
            // Not `Interrupted`: readers retry that kind forever.
            return Err(io::Error::other(CANCELLED));
        }
        self.inner.read(buf)
    }
}
