//! A read buffer under TLS sessions that carry bulk bodies (the proxy's legs).
//!
//! rustls reads its socket into a buffer no larger than one record (~16 KiB), so a
//! streamed body costs a `read` system call per record at least (a 48 MiB download
//! about 3,100 per leg; `tests/stream.rs` counts 133 for 2 MiB). [`buffered`] puts a
//! [`READ_BUFFER`] buffer between the session and the socket: one system call fills it
//! with what the kernel has (several records) and rustls's reads are served from it (34
//! for the same 2 MiB). tokio-rustls already hands the HTTP layer every record ready in
//! one read, so nothing is needed above the session.

use tokio::io::{AsyncRead, AsyncWrite, BufReader};

/// The read buffer under a TLS session: four full records.
pub const READ_BUFFER: usize = 64 * 1024;

/// `io` with a [`READ_BUFFER`] read buffer; writes pass straight through (vectored
/// ones too).
pub fn buffered<T: AsyncRead + AsyncWrite>(io: T) -> BufReader<T> {
    BufReader::with_capacity(READ_BUFFER, io)
}
