//! The gateway's connections and channels (russh server side).

use crate::{Backend, SessionStream};
use hangar_client::session::{write_frame, FrameReader};
use hangar_types::session::{Frame, SessionRequest};
use russh::keys::PrivateKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Tunables of the gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// How often a silent client is asked whether it is still there (three unanswered
    /// and the connection is closed).
    pub keepalive: Duration,
    /// Session channels open at once per tenant, over every connection; one more is
    /// refused ("resource shortage").
    pub max_sessions_per_tenant: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig { idle_timeout: Duration::from_secs(3600), keepalive: Duration::from_secs(30), max_sessions_per_tenant: 32 }
    }
}

/// The login shell: bash if the image has it, else sh; in /home (the exec's cwd).
const SHELL: &str = "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l";

/// The sftp subsystem: the image's own sftp server, wherever its distribution puts it.
const SFTP: &str = "for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server /usr/libexec/sftp-server; do \
    [ -x \"$p\" ] && exec \"$p\"; done; echo 'this instance has no sftp server (install openssh-sftp-server in its image)' >&2; exit 127";

/// Serves the gateway on `listener` until `shutdown` resolves; sessions still open then
/// go on until they end.
pub async fn serve(listener: TcpListener, key: PrivateKey, backend: Arc<dyn Backend>, cfg: GatewayConfig, shutdown: impl std::future::Future<Output = ()>) {
    let config = Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-hangar".into()),
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        keys: vec![key],
        inactivity_timeout: Some(cfg.idle_timeout),
        keepalive_interval: Some(cfg.keepalive),
        keepalive_max: 3,
        nodelay: true,
        // Every refusal takes as long, whatever was wrong (key, tenant, instance).
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        ..Default::default()
    });
    let counts: Arc<Mutex<HashMap<String, usize>>> = Default::default();
    tokio::pin!(shutdown);
    while let Some((tcp, addr)) = hangar_tls::serve::next_connection(&listener, shutdown.as_mut()).await {
        let conn = Conn { backend: backend.clone(), counts: counts.clone(), max: cfg.max_sessions_per_tenant, target: None, activity: Arc::new(Activity::new()), idle: cfg.idle_timeout, alive: None };
        let config = config.clone();
        tokio::spawn(async move {
            match russh::server::run_stream(config, tcp, conn).await {
                Ok(session) => {
                    if let Err(e) = session.await {
                        tracing::debug!(%addr, error = %e, "ssh connection ended with an error");
                    }
                }
                Err(e) => tracing::debug!(%addr, error = %e, "ssh handshake failed"),
            }
        });
    }
}

/// One client connection.
struct Conn {
    backend: Arc<dyn Backend>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    max: usize,
    /// (tenant, instance), once authenticated.
    target: Option<(String, String)>,
    activity: Arc<Activity>,
    idle: Duration,
    /// Dropped with the connection, which ends its idle watch.
    alive: Option<tokio::sync::oneshot::Sender<()>>,
}

/// When a connection last carried a session's bytes (either way). russh's own
/// inactivity timer counts keepalive replies as activity, so it never closes a
/// connection whose client is merely alive; this one does.
struct Activity {
    base: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { base: std::time::Instant::now(), last_ms: Default::default() }
    }

    fn touch(&self) {
        self.last_ms.store(self.base.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed)))
    }
}

/// Disconnects the connection once it has been idle for `idle`; ends with it.
async fn watch_idle(handle: russh::server::Handle, activity: Arc<Activity>, idle: Duration, mut gone: tokio::sync::oneshot::Receiver<()>) {
    let tick = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = &mut gone => return,
        }
        if activity.idle_for() >= idle {
            let why = format!("idle for {} s", idle.as_secs());
            let _ = handle.disconnect(russh::Disconnect::ByApplication, why, "en".into()).await;
            return;
        }
    }
}

/// One open session channel of a tenant, counted until dropped.
struct Slot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    tenant: String,
}

impl Slot {
    fn take(counts: &Arc<Mutex<HashMap<String, usize>>>, tenant: &str, max: usize) -> Option<Slot> {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.entry(tenant.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot { counts: counts.clone(), tenant: tenant.to_string() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.tenant);
            }
        }
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        let Some((tenant, instance)) = user.split_once('.') else { return Ok(Auth::reject()) };
        let line = key.public_key.to_openssh().unwrap_or_default();
        let public = line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        if self.backend.authorize(tenant, instance, &public).await {
            self.target = Some((tenant.to_string(), instance.to_string()));
            return Ok(Auth::Accept);
        }
        Ok(Auth::reject())
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.activity.touch();
        let (alive, gone) = tokio::sync::oneshot::channel();
        self.alive = Some(alive);
        tokio::spawn(watch_idle(session.handle(), self.activity.clone(), self.idle, gone));
        Ok(())
    }

    async fn data(&mut self, _channel: ChannelId, _data: &[u8], _session: &mut Session) -> Result<(), Self::Error> {
        self.activity.touch();
        Ok(())
    }

    async fn channel_open_session(&mut self, channel: Channel<Msg>, reply: ChannelOpenHandle, _session: &mut Session) -> Result<(), Self::Error> {
        let Some(target) = self.target.clone() else {
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        let Some(slot) = Slot::take(&self.counts, &target.0, self.max) else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        reply.accept().await;
        let (backend, activity) = (self.backend.clone(), self.activity.clone());
        tokio::spawn(async move {
            run_channel(channel, backend, target, activity).await;
            drop(slot);
        });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(&mut self, channel: ChannelId, _name: &str, _value: &str, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(&mut self, channel: ChannelId, _data: &[u8], session: &mut Session) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(&mut self, channel: ChannelId, name: &str, session: &mut Session) -> Result<(), Self::Error> {
        if name == "sftp" {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}

/// Size of a PTY as the client asked for it (rows, columns).
fn size(rows: u32, cols: u32) -> (u16, u16) {
    (rows.min(u16::MAX as u32) as u16, cols.min(u16::MAX as u32) as u16)
}

/// One session channel: its requests up to shell, exec or subsystem, then one hub
/// session, bytes both ways, the exit status at the end.
async fn run_channel(mut channel: Channel<Msg>, backend: Arc<dyn Backend>, (tenant, instance): (String, String), activity: Arc<Activity>) {
    let mut pty: Option<(String, u16, u16)> = None;
    let mut env = BTreeMap::new();
    let command = loop {
        match channel.wait().await {
            Some(ChannelMsg::RequestPty { term, col_width, row_height, .. }) => {
                let (rows, cols) = size(row_height, col_width);
                pty = Some((term, rows, cols));
            }
            Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                if let Some(p) = &mut pty {
                    (p.1, p.2) = size(row_height, col_width);
                }
            }
            Some(ChannelMsg::SetEnv { variable_name, variable_value, .. }) => {
                env.insert(variable_name, variable_value);
            }
            Some(ChannelMsg::RequestShell { .. }) => break SHELL.to_string(),
            Some(ChannelMsg::Exec { command, .. }) => break String::from_utf8_lossy(&command).into_owned(),
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => {
                // sftp speaks binary on stdin and stdout: never with a terminal.
                pty = None;
                break SFTP.to_string();
            }
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let (rows, cols) = pty.as_ref().map(|p| (p.1, p.2)).unwrap_or((0, 0));
    if let Some((term, ..)) = &pty {
        env.insert("TERM".into(), term.clone());
    }
    let req = SessionRequest { command: vec!["/bin/sh".into(), "-c".into(), command], env, tty: pty.is_some(), rows, cols };
    let stream = match backend.open(&tenant, &instance, &req).await {
        Ok(s) => s,
        Err(m) => {
            let _ = channel.extended_data_bytes(1, format!("hangar: {m}\r\n").into_bytes()).await;
            let _ = channel.exit_status(255).await;
            let _ = channel.eof().await;
            let _ = channel.close().await;
            return;
        }
    };
    let (mut rd, wr) = channel.split();
    let (agent_rd, mut agent_wr) = tokio::io::split::<Box<dyn SessionStream>>(stream);
    let mut out = tokio::spawn(async move {
        let mut frames = FrameReader::new(agent_rd);
        loop {
            let next = frames.next().await;
            activity.touch();
            match next {
                Ok(Some(Frame::Stdout(b))) => {
                    if wr.data_bytes(b).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Frame::Stderr(b))) => {
                    if wr.extended_data_bytes(1, b).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Frame::Error(m))) => {
                    let _ = wr.extended_data_bytes(1, format!("hangar: {m}\r\n").into_bytes()).await;
                }
                Ok(Some(Frame::Exit(code))) => {
                    let _ = wr.exit_status(code as u32).await;
                    let _ = wr.eof().await;
                    let _ = wr.close().await;
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    // The agent or the hub's connection to it went away mid-session.
                    let _ = wr.extended_data_bytes(1, b"hangar: the connection to the instance was lost\r\n".to_vec()).await;
                    let _ = wr.eof().await;
                    let _ = wr.close().await;
                    return;
                }
            }
        }
    });
    let input = async {
        while let Some(msg) = rd.wait().await {
            let f = match msg {
                ChannelMsg::Data { data } => Frame::Stdin(data.to_vec()),
                ChannelMsg::Eof => Frame::StdinEof,
                ChannelMsg::WindowChange { col_width, row_height, .. } => {
                    let (rows, cols) = size(row_height, col_width);
                    Frame::Resize { rows, cols }
                }
                ChannelMsg::Close => break,
                _ => continue,
            };
            let sent = match &f {
                Frame::Stdin(b) => hangar_client::session::write_data(&mut agent_wr, b, Frame::Stdin).await,
                _ => write_frame(&mut agent_wr, &f).await,
            };
            if sent.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = &mut out => {}
        _ = input => {
            // The client closed the channel: dropping the agent's connection ends the
            // process in the sandbox.
            out.abort();
        }
    }
}
