//! The SSH gateway: plain OpenSSH clients (`ssh`, `scp`, `sftp`) into instances'
//! sandboxes. The user name `TENANT.INSTANCE` routes; public-key authentication is
//! checked against the tenant's registered keys; each session channel (shell, exec, or
//! the sftp subsystem, with or without a PTY) becomes one hub session
//! (`hangar_types::session`) to the instance's agent, so the gateway itself runs
//! nothing on the hub's machine.
//!
//! Depends on types, client (the session frames), tls (the accept loop) and russh; knows nothing of the
//! store or the hub: [`Backend`] is the hub's side (authorize a key, open a session),
//! wired by `hub serve`. That keeps russh and its crypto out of the hub crate's build.

mod gateway;
mod hostkey;

pub use gateway::{serve, GatewayConfig};
pub use hostkey::{host_key, known_hosts_line, HostKeyError};
/// What the host key is and how it is fingerprinted, for callers that show it.
pub use russh::keys::{HashAlg, PrivateKey};

use hangar_types::session::SessionRequest;
use tokio::io::{AsyncRead, AsyncWrite};

/// A session's byte stream (the upgraded connection to the agent).
pub trait SessionStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> SessionStream for T {}

/// What the gateway asks the hub.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Whether `public_key` (`TYPE BASE64`) may reach `tenant/instance`. One answer for
    /// every refusal, so a client cannot tell a wrong key from a wrong name.
    async fn authorize(&self, tenant: &str, instance: &str, public_key: &str) -> bool;
    /// Opens a session in the instance, or says why not (shown on the client's stderr).
    async fn open(&self, tenant: &str, instance: &str, req: &SessionRequest) -> Result<Box<dyn SessionStream>, String>;
}
