//! A sandbox's workload log, capped and rotated while the workload runs, and read back
//! from its end.
//!
//! The workload's stdout and stderr are a FIFO in its bundle dir, never the log file
//! itself: the agent copies the FIFO into `<id>.log` and rotates it (`<id>.log.1`, ...)
//! at [`LogLimits::max_bytes`], keeping [`LogLimits::files`] files. So the disk a
//! workload's output takes is bounded (`max_bytes * files`) at every moment, not only
//! when some check runs (a copytruncate on each pass lets `yes` write gigabytes between
//! two passes, and loses lines in the copy). The workload holds the FIFO read-write, so
//! it never gets SIGPIPE: while no agent reads (a restart), its writes block once the
//! pipe buffer is full, and the next agent re-attaches to the FIFO when it lists the
//! sandbox. The copy is paced ([`PUMP_BYTES_PER_SEC`]) so a chatty workload cannot take
//! the agent's CPU; it waits instead. Memory is one buffer per sandbox.

use hangar_types::api::InstanceLogs;
use hangar_types::SandboxId;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

/// How much of a workload's output an agent keeps on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLimits {
    /// One log file's size before it is rotated.
    pub max_bytes: u64,
    /// Files kept, the live one included (at least 1).
    pub files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_bytes: 8 << 20, files: 3 }
    }
}

/// The FIFO a sandbox's stdout and stderr are, in its bundle dir.
pub const LOG_FIFO: &str = "log.fifo";

/// The most a pump copies per second for one sandbox; a workload writing faster waits.
const PUMP_BYTES_PER_SEC: u64 = 16 << 20;
/// The pump's one buffer.
const PUMP_CHUNK: usize = 64 << 10;
/// Reads back from a log file in blocks of this size.
const READ_BLOCK: usize = 64 << 10;

/// The `i`th rotated file of `log` (`<log>.<i>`); 0 is the live one.
pub fn generation(log: &Path, i: u32) -> PathBuf {
    if i == 0 {
        return log.to_path_buf();
    }
    let mut s = log.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Removes a log and every rotated file of it (for a deleted instance).
pub fn remove_logs(log: &Path) {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(f) = file.to_str() else { continue };
        let rotated = f.strip_prefix(name).and_then(|r| r.strip_prefix('.')).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if f == name || rotated {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Makes a fresh FIFO at `fifo` (0600) and opens it read-write: the workload's stdout
/// and stderr. Holding a read end too, the workload never gets SIGPIPE when no agent
/// reads; opening read-write never blocks.
pub fn workload_stdio(fifo: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::remove_file(fifo) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(crate::files::PRIVATE_FILE)).map_err(std::io::Error::from)?;
    std::fs::OpenOptions::new().read(true).write(true).open(fifo)
}

/// The copies from each sandbox's FIFO into its log, one task per sandbox.
pub struct LogPumps {
    limits: LogLimits,
    running: Mutex<HashMap<SandboxId, JoinHandle<()>>>,
}

impl LogPumps {
    pub fn new(limits: LogLimits) -> Self {
        LogPumps { limits: LogLimits { max_bytes: limits.max_bytes.max(4096), files: limits.files.max(1) }, running: Mutex::default() }
    }

    /// Starts copying `fifo` into `log` unless a copy for `id` runs already (an agent
    /// restarted: the sandbox's output waits in its FIFO).
    pub fn attach(&self, id: &SandboxId, fifo: &Path, log: &Path) -> std::io::Result<()> {
        if self.running.lock().unwrap_or_else(|p| p.into_inner()).get(id).is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        self.start(id, reader(fifo)?, log)
    }

    /// Copies what `rx` reads into `log` (for a sandbox just started). The copy ends
    /// when the last writer (the sandbox's last process) closes the FIFO.
    pub fn start(&self, id: &SandboxId, rx: tokio::net::unix::pipe::Receiver, log: &Path) -> std::io::Result<()> {
        let file = LogFile::open(log.to_path_buf(), self.limits)?;
        let sandbox = id.clone();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|_, h| !h.is_finished());
        // A copy of an earlier run of this sandbox keeps going until its FIFO closes.
        running.insert(id.clone(), tokio::spawn(async move { pump(rx, file, &sandbox).await }));
        Ok(())
    }
}

impl LogPumps {
    /// Appends `data` to `log` within the limits (a failed start's complaint, which
    /// no copy carried there).
    pub fn append(&self, log: &Path, data: &[u8]) -> std::io::Result<()> {
        LogFile::open(log.to_path_buf(), self.limits)?.append(data)
    }
}

/// The agent's end of a sandbox's FIFO (read-only: it sees the end of the output when
/// the sandbox's last process is gone).
pub fn reader(fifo: &Path) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::OpenOptions::new().open_receiver(fifo)
}

/// What a FIFO holds until its writers are gone, at most `max` bytes, waiting at most
/// `within` (a failed start's complaint).
pub async fn read_to_end(mut rx: tokio::net::unix::pipe::Receiver, max: usize, within: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    let _ = tokio::time::timeout(within, async {
        while let Ok(n) = rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n.min(max.saturating_sub(out.len()))]);
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn pump(mut rx: tokio::net::unix::pipe::Receiver, file: LogFile, id: &SandboxId) {
    let mut buf = vec![0u8; PUMP_CHUNK];
    // None once the log cannot be written: the FIFO is still drained (into nothing), a
    // workload must not block forever because its log is broken.
    let mut sink = Some(file);
    let mut window = tokio::time::Instant::now();
    let mut in_window = 0u64;
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "cannot read the workload's output; its log stops here");
                break;
            }
        };
        if let Some(mut file) = sink.take() {
            let chunk = buf[..n].to_vec();
            match tokio::task::spawn_blocking(move || file.append(&chunk).map(|()| file)).await {
                Ok(Ok(f)) => sink = Some(f),
                Ok(Err(e)) => tracing::warn!(sandbox = %id, error = %e, "cannot write the workload's log; its output is dropped"),
                Err(e) => tracing::warn!(sandbox = %id, error = %e, "the log writer failed; the workload's output is dropped"),
            }
        }
        in_window += n as u64;
        if in_window >= PUMP_BYTES_PER_SEC {
            tokio::time::sleep_until(window + Duration::from_secs(1)).await;
        }
        if window.elapsed() >= Duration::from_secs(1) {
            window = tokio::time::Instant::now();
            in_window = 0;
        }
    }
}

/// The live log file, with its size, rotating when full.
struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    limits: LogLimits,
}

impl LogFile {
    fn open(path: PathBuf, limits: LogLimits) -> std::io::Result<LogFile> {
        let file = std::fs::OpenOptions::new().create(true).append(true).mode(crate::files::PRIVATE_FILE).open(&path)?;
        // A log made by an older agent may be 0644: it holds the workload's output.
        crate::files::make_private(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile { path, file, size, limits })
    }

    /// Appends `data`, rotating whenever the live file is full. A rotation falls on a
    /// line end when the chunk has one, so lines are rarely split across files.
    fn append(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.size >= self.limits.max_bytes {
                self.rotate()?;
            }
            let room = (self.limits.max_bytes - self.size) as usize;
            let take = if data.len() <= room {
                data.len()
            } else {
                match data[..room].iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    // No line end fits: a fresh file takes the line unless it is empty.
                    None if self.size > 0 => 0,
                    None => room,
                }
            };
            if take == 0 {
                self.rotate()?;
                continue;
            }
            self.file.write_all(&data[..take])?;
            self.size += take as u64;
            data = &data[take..];
        }
        Ok(())
    }

    /// `<log>.<n-1>` is dropped, each `<log>.<i>` becomes `<log>.<i+1>`, the live file
    /// `<log>.1`, and a new live file starts.
    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.limits.files;
        if keep <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for i in (1..keep - 1).rev() {
            match std::fs::rename(generation(&self.path, i), generation(&self.path, i + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, generation(&self.path, 1))?;
        *self = LogFile::open(self.path.clone(), self.limits)?;
        Ok(())
    }
}

/// Where a reader is: a log file (by inode, which a rotation keeps) and an offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    ino: u64,
    offset: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ino, self.offset)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("after: '{s}' is not a cursor of an earlier logs answer");
        let (ino, offset) = s.split_once(':').ok_or_else(bad)?;
        Ok(Cursor { ino: ino.parse().map_err(|_| bad())?, offset: offset.parse().map_err(|_| bad())? })
    }
}

/// Splits bytes into lines (a last line without its end counts too).
fn lines_of(bytes: &[u8]) -> Vec<String> {
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if text.is_empty() && bytes.is_empty() {
        return vec![];
    }
    text.split(|&b| b == b'\n').map(|l| String::from_utf8_lossy(l).into_owned()).collect()
}

/// The last `n` lines of `log` and, when the live file has fewer, of its rotated files,
/// reading each from its end in blocks and never more than `max_bytes` in all. The cursor
/// points at the live file's end.
pub fn tail(log: &Path, n: usize, files: u32, max_bytes: usize) -> std::io::Result<InstanceLogs> {
    let cursor = match std::fs::metadata(log) {
        Ok(m) => Some(Cursor { ino: m.ino(), offset: m.len() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut lines: Vec<String> = vec![];
    let mut budget = max_bytes;
    let mut truncated = false;
    for i in 0..files.max(1) {
        if lines.len() >= n || budget == 0 {
            break;
        }
        let mut f = match std::fs::File::open(generation(log, i)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let (mut older, cut) = tail_of_file(&mut f, n - lines.len(), &mut budget)?;
        truncated |= cut;
        older.append(&mut lines);
        lines = older;
        if cut {
            break;
        }
    }
    Ok(InstanceLogs { lines, cursor: cursor.map(|c| c.to_string()), truncated })
}

/// The last `n` lines of one file, reading at most `budget` bytes (taken from it); true
/// when the budget ran out before `n` lines were found.
fn tail_of_file(f: &mut std::fs::File, n: usize, budget: &mut usize) -> std::io::Result<(Vec<String>, bool)> {
    let mut pos = f.metadata()?.len();
    let mut acc: Vec<u8> = vec![];
    // Line ends seen, not counting one that ends the file.
    let mut ends = 0usize;
    let mut block = vec![0u8; READ_BLOCK];
    while pos > 0 && ends < n && *budget > 0 {
        let take = (pos as usize).min(READ_BLOCK).min(*budget);
        pos -= take as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut block[..take])?;
        *budget -= take;
        let last_of_file = acc.is_empty();
        let piece = &block[..take];
        ends += piece.iter().filter(|&&b| b == b'\n').count();
        if last_of_file && piece.last() == Some(&b'\n') {
            ends -= 1;
        }
        acc.splice(0..0, piece.iter().copied());
    }
    let cut = pos > 0 && ends < n;
    let mut lines = lines_of(&acc);
    // The first line is partial unless the file starts there.
    if pos > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let keep = lines.len().saturating_sub(n);
    Ok((lines.split_off(keep), cut))
}

/// The lines written after `cursor` (none yet is an empty answer with the same cursor),
/// at most `max_bytes` of them. A cursor whose file was rotated away continues at the
/// oldest kept file with `truncated`; a rotated file read to its end continues in the
/// next newer one.
pub fn after(log: &Path, cursor: &str, files: u32, max_bytes: usize) -> Result<InstanceLogs, String> {
    let mut at: Cursor = cursor.parse()?;
    let io = |e: std::io::Error| format!("cannot read the log: {e}");
    let mut truncated = false;
    // The files by age, newest first, with their inodes.
    let kept: Vec<(PathBuf, u64)> = (0..files.max(1)).filter_map(|i| {
        let p = generation(log, i);
        std::fs::metadata(&p).ok().map(|m| (p, m.ino()))
    }).collect();
    if kept.is_empty() {
        return Ok(InstanceLogs { lines: vec![], cursor: Some(at.to_string()), truncated: false });
    }
    let mut idx = match kept.iter().position(|(_, ino)| *ino == at.ino) {
        Some(i) => i,
        None => {
            // Rotated away (or the live file was made anew): start at the oldest kept.
            let i = kept.len() - 1;
            truncated = true;
            at = Cursor { ino: kept[i].1, offset: 0 };
            i
        }
    };
    loop {
        let mut f = std::fs::File::open(&kept[idx].0).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        if at.offset > len {
            at.offset = 0;
        }
        if at.offset < len {
            let take = ((len - at.offset) as usize).min(max_bytes);
            let mut buf = vec![0u8; take];
            f.seek(SeekFrom::Start(at.offset)).map_err(io)?;
            f.read_exact(&mut buf).map_err(io)?;
            // Only whole lines, unless one line alone is larger than an answer, or the
            // file is rotated and will get no more.
            let whole = match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if take == max_bytes || idx > 0 => take,
                None => 0,
            };
            buf.truncate(whole);
            at.offset += whole as u64;
            return Ok(InstanceLogs { lines: lines_of(&buf), cursor: Some(at.to_string()), truncated: truncated || (whole == max_bytes && at.offset < len) });
        }
        if idx == 0 {
            return Ok(InstanceLogs { lines: vec![], cursor: Some(at.to_string()), truncated });
        }
        idx -= 1;
        at = Cursor { ino: kept[idx].1, offset: 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn limits(max_bytes: u64, files: u32) -> LogLimits {
        LogLimits { max_bytes, files }
    }

    fn numbered(from: usize, to: usize) -> String {
        (from..to).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn appends_rotate_at_the_cap_and_keep_the_file_count() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        let mut f = LogFile::open(log.clone(), limits(100, 3)).unwrap();
        for i in 0..200 {
            f.append(format!("line {i}\n").as_bytes()).unwrap();
        }
        let names: Vec<_> = (0..5).filter(|i| generation(&log, *i).exists()).collect();
        assert_eq!(names, [0, 1, 2], "the live file and two rotated ones");
        for i in 0..3 {
            let len = std::fs::metadata(generation(&log, i)).unwrap().len();
            assert!(len <= 100, "file {i} is {len} bytes, over the cap");
            assert!(std::fs::read_to_string(generation(&log, i)).unwrap().ends_with('\n'), "rotation falls on a line end");
        }
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(&log).unwrap().ends_with("line 199\n"));
        remove_logs(&log);
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "remove_logs removes the rotated files too");
    }

    #[test]
    fn one_line_longer_than_the_cap_is_cut_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        let mut f = LogFile::open(log.clone(), limits(4096, 2)).unwrap();
        f.append(&vec![b'y'; 10_000]).unwrap();
        assert!(std::fs::metadata(&log).unwrap().len() <= 4096);
        assert_eq!(std::fs::metadata(generation(&log, 1)).unwrap().len(), 4096);
    }

    #[test]
    fn tail_reads_the_last_lines_across_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        std::fs::write(generation(&log, 1), numbered(0, 50)).unwrap();
        std::fs::write(&log, numbered(50, 53)).unwrap();
        let t = tail(&log, 5, 3, 1 << 20).unwrap();
        assert_eq!(t.lines, ["line 48", "line 49", "line 50", "line 51", "line 52"]);
        assert!(!t.truncated);
        assert_eq!(tail(&log, 1, 3, 1 << 20).unwrap().lines, ["line 52"]);
        assert_eq!(tail(&log, 1000, 3, 1 << 20).unwrap().lines.len(), 53);
        // A partial last line counts.
        std::fs::write(&log, "a\nb").unwrap();
        assert_eq!(tail(&log, 2, 1, 1 << 20).unwrap().lines, ["a", "b"]);
        assert!(tail(&dir.path().join("none.log"), 5, 3, 1 << 20).unwrap().lines.is_empty());
    }

    #[test]
    fn tail_never_reads_more_than_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        std::fs::write(&log, numbered(0, 100_000)).unwrap();
        let t = tail(&log, 100_000, 1, 1000).unwrap();
        assert!(t.truncated);
        assert!(t.lines.iter().map(|l| l.len() + 1).sum::<usize>() <= 1000);
        assert_eq!(t.lines.last().map(String::as_str), Some("line 99999"));
        assert!(t.lines[0].starts_with("line "), "no partial first line: {:?}", t.lines[0]);
    }

    #[test]
    fn after_follows_new_lines_through_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        let mut f = LogFile::open(log.clone(), limits(60, 3)).unwrap();
        f.append(b"one\ntwo\n").unwrap();
        let t = tail(&log, 10, 3, 1 << 20).unwrap();
        assert_eq!(t.lines, ["one", "two"]);
        let c = t.cursor.unwrap();
        let none = after(&log, &c, 3, 1 << 20).unwrap();
        assert!(none.lines.is_empty());
        assert_eq!(none.cursor.as_deref(), Some(c.as_str()));
        f.append(b"three\npart").unwrap();
        let r = after(&log, &c, 3, 1 << 20).unwrap();
        assert_eq!(r.lines, ["three"], "a partial line waits for its end");
        f.append(b"ial\n").unwrap();
        // Rotate past the cursor's file: what it had left, then the new live file.
        f.append(numbered(0, 10).as_bytes()).unwrap();
        let mut seen = vec![];
        let mut c = r.cursor.unwrap();
        for _ in 0..10 {
            let r = after(&log, &c, 3, 1 << 20).unwrap();
            seen.extend(r.lines);
            c = r.cursor.unwrap();
        }
        assert_eq!(seen[0], "partial");
        assert_eq!(seen.last().map(String::as_str), Some("line 9"));
        assert!(after(&log, "nonsense", 3, 1 << 20).unwrap_err().contains("after"));
    }
}
