//! HTTP/1.1 forwarding over one connection, shared by the hub's proxy (to an agent,
//! over mutual TLS) and the agent's (to a sandbox, over TCP): bodies stream both ways,
//! and an `Upgrade` (websockets) that the far side accepts with 101 is spliced into a
//! byte pipe between the two connections.
//!
//! Hop-by-hop headers (RFC 9110 7.6.1, and any the `Connection` header names) are not
//! passed on, except `Connection: upgrade` and `Upgrade` on an upgrade request.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("the request failed: {0}")]
    Send(#[source] hyper::Error),
}

const HOP_BY_HOP: [&str; 8] = ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];

/// Whether a request asks to switch protocols (`Connection: upgrade` with `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Removes hop-by-hop headers; keeps `Connection: upgrade` and `Upgrade` when `upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_proto = headers.get(header::UPGRADE).cloned();
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    if let (true, Some(p)) = (upgrade, upgrade_proto) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, p);
    }
}

/// What follows the first `segments` segments of a request path, as it came
/// (percent-encoding kept, so it can go on unchanged), without its leading `/`.
pub fn path_after(path: &str, segments: usize) -> &str {
    let mut rest = path.trim_start_matches('/');
    for _ in 0..segments {
        rest = rest.split_once('/').map(|(_, r)| r).unwrap_or("");
    }
    rest
}

/// An HTTP/1.1 client connection ready to send on ([`send_on`]).
pub type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// The HTTP/1.1 handshake over `io`; the connection is driven on a task of its own
/// (with upgrades) until both sides are done with it.
pub async fn handshake<IO>(io: IO) -> Result<Sender, ForwardError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(ForwardError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "forwarded connection ended with an error");
        }
    });
    Ok(sender)
}

/// Sends `req` as HTTP/1.1 on `sender` and returns the answer with its body streaming.
/// If the request was an upgrade and the far side switches protocols, the two upgraded
/// connections are spliced on a task of their own. When the request was never sent
/// (the connection had closed), it comes back with the error, to be sent elsewhere.
pub async fn send_on(sender: &mut Sender, mut req: Request<Body>) -> Result<Response<Body>, (ForwardError, Option<Request<Body>>)> {
    let upgrade = is_upgrade(req.headers());
    // The far leg is HTTP/1.1 whatever the near one was (an HTTP/2 client's request
    // carries no Host header: its authority becomes one).
    let authority = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    if let (false, Some(v)) = (req.headers().contains_key(header::HOST), authority) {
        req.headers_mut().insert(header::HOST, v);
    }
    *req.version_mut() = axum::http::Version::HTTP_11;
    let downstream = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut resp = match sender.try_send_request(req).await {
        Ok(r) => r,
        Err(mut e) => {
            let unsent = e.take_message();
            return Err((ForwardError::Send(e.into_error()), unsent));
        }
    };
    let switched = resp.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(downstream)) = (switched, downstream) {
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(downstream, upstream) {
                Ok((down, up)) => {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up)).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade of a forwarded connection failed"),
            }
        });
    }
    strip_hop_by_hop(resp.headers_mut(), switched);
    Ok(resp.map(Body::new))
}

/// Idle connections kept per far side.
const POOL_IDLE_MAX: usize = 16;

/// Idle HTTP/1.1 connections by far side (e.g. an agent's endpoint), so a request need
/// not pay a TCP and TLS handshake. Upgrades never go back: their connection becomes
/// the pipe.
#[derive(Default)]
pub struct Pool {
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<Sender>>>,
}

impl Pool {
    /// An idle connection to `key` that can send now, if there is one.
    pub fn take(&self, key: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        // Closed ones go; busy ones (an answer still streaming) stay for later.
        list.retain(|s| !s.is_closed());
        let at = list.iter().position(|s| s.is_ready())?;
        Some(list.swap_remove(at))
    }

    /// Keeps a connection for later (it is ready again once its answer is read).
    pub fn put(&self, key: &str, s: Sender) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(key.to_string()).or_default();
        list.retain(|s| !s.is_closed());
        if list.len() < POOL_IDLE_MAX {
            list.push(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_of_a_path_keeps_its_encoding() {
        assert_eq!(path_after("/proxy/acme/web/8080/a%20b/c.txt", 4), "a%20b/c.txt");
        assert_eq!(path_after("/proxy/acme/web/8080/", 4), "");
        assert_eq!(path_after("/v1/sandboxes/s1/proxy/80/x", 5), "x");
        assert_eq!(path_after("/short", 4), "");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        assert!(!is_upgrade(&h));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["content-type"]);
    }

    #[test]
    fn an_upgrade_keeps_its_two_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("sec-websocket-key", HeaderValue::from_static("abc"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("sec-websocket-key").unwrap(), "abc");
    }
}
