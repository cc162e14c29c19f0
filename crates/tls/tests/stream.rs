//! `hangar_tls::stream::buffered` under a real TLS session: the same bytes arrive, with
//! a fraction of the reads on the transport (rustls alone reads 4 KiB at a time).

use hangar_tls::*;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

/// A transport that counts the reads that returned data (each a `read` system call on
/// a socket).
struct Counting {
    inner: DuplexStream,
    reads: Arc<AtomicUsize>,
}

impl AsyncRead for Counting {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counting {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Downloads `payload` over TLS on an in-memory transport; returns what arrived and the
/// reads the client made on its transport.
async fn download(payload: Vec<u8>, buffered: bool) -> (Vec<u8>, usize) {
    install_crypto_provider();
    let ca = Ca::generate("test CA").unwrap();
    let srv = ca.issue_server("hub", &["localhost".to_string()]).unwrap();
    let server_cfg = server_config(&srv.cert_pem, &srv.key_pem, None, false).unwrap();
    let (near, far) = tokio::io::duplex(4 << 20);
    let server = tokio::spawn(async move {
        let mut s = tokio_rustls::TlsAcceptor::from(server_cfg).accept(far).await.unwrap();
        s.write_all(&payload).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let reads = Arc::new(AtomicUsize::new(0));
    let transport = Counting { inner: near, reads: reads.clone() };
    let sn = rustls::pki_types::ServerName::try_from("localhost".to_string()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca.cert_pem(), None).unwrap()));
    let mut got = vec![];
    if buffered {
        connector.connect(sn, stream::buffered(transport)).await.unwrap().read_to_end(&mut got).await.unwrap();
    } else {
        connector.connect(sn, transport).await.unwrap().read_to_end(&mut got).await.unwrap();
    }
    server.await.unwrap();
    (got, reads.load(Ordering::Relaxed))
}

#[tokio::test]
async fn a_read_buffer_under_tls_cuts_the_transport_reads() {
    let payload: Vec<u8> = (0..2 << 20).map(|i| (i % 251) as u8).collect();
    let (plain, plain_reads) = download(payload.clone(), false).await;
    let (with_buffer, buffered_reads) = download(payload.clone(), true).await;
    assert!(plain == payload && with_buffer == payload, "the bytes differ");
    eprintln!("{buffered_reads} reads with the buffer, {plain_reads} without");
    // 2 MiB is 128 records: rustls alone reads at most one at a time.
    assert!(plain_reads >= 128, "rustls read {plain_reads} times without the buffer");
    assert!(buffered_reads * 3 <= plain_reads, "{buffered_reads} reads with the buffer, {plain_reads} without");
}
