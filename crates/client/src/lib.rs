//! Typed clients of hangar's HTTP APIs, shared by the CLI, the agent, the hub and the
//! harness:
//! - [`HubClient`]: the public /v1 API, authenticated with a bearer token;
//! - [`HostClient`]: the agent's calls to the hub (join, desired state, reports), mTLS;
//! - [`AgentClient`]: the hub's calls to an agent's endpoint (exec, logs, stats), mTLS.

pub mod onboarding;
pub mod session;

mod backups;
pub mod files;
mod transfer;
mod moves;

use hangar_types::api::*;
use hangar_types::protocol::{AgentReport, DesiredDoc, JoinRequest, JoinResponse};
use hangar_types::{ApiError, ErrorCode, Generation, OperationId, SandboxId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// Why a call failed: the server's `{code, message}`, or no answer at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}", .0.message)]
    Api(ApiError),
    #[error("cannot reach {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected answer from {url} (HTTP {status}): {body}")]
    Decode { url: String, status: u16, body: String },
    #[error("bad client setup: {0}")]
    Setup(String),
}

impl ClientError {
    /// The API error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// One HTTP connection pool to one base URL, JSON in and out.
#[derive(Clone, Debug)]
struct Transport {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    /// Kept for session upgrades, which need a client of their own (HTTP/1.1 only).
    tls: rustls::ClientConfig,
}

impl Transport {
    fn new(base: &str, tls: rustls::ClientConfig, token: Option<String>, timeout: Option<Duration>) -> Result<Self> {
        let mut b = reqwest::Client::builder().tls_backend_preconfigured(tls.clone()).connect_timeout(Duration::from_secs(5));
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        let http = b.build().map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Transport { base: base.trim_end_matches('/').to_string(), http, token, tls })
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<T> {
        self.call_capped(method, path, body, timeout, MAX_BODY).await
    }

    /// A call whose answer may be at most `max_body` bytes (longer is an error, never
    /// read into memory whole).
    async fn call_capped<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
        max_body: usize,
    ) -> Result<T> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|source| ClientError::Transport { url: url.clone(), source })?;
        let status = resp.status();
        let bytes = read_capped(resp, &url, max_body).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
                url,
                status: status.as_u16(),
                body: format!("{e}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(500)])),
            });
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => Err(ClientError::Api(e)),
            Err(_) => Err(ClientError::Decode {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned(),
            }),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call::<(), T>(reqwest::Method::GET, path, None, None).await
    }
    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(reqwest::Method::POST, path, Some(body), None).await
    }
    async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call::<(), T>(reqwest::Method::DELETE, path, None, None).await
    }
}

/// The largest answer any call reads.
const MAX_BODY: usize = 64 << 20;
/// The largest exec or logs answer: their text is capped at 1 MiB per stream by the
/// agent ([`EXEC_OUTPUT_MAX_BYTES`], [`LOGS_MAX_BYTES`]), which JSON escaping can grow.
const MAX_OUTPUT_BODY: usize = 16 << 20;

/// A timeout a little longer than an exec's own (which the agent enforces).
fn exec_call_timeout(req: &ExecRequest, margin: u64) -> Duration {
    Duration::from_secs(req.timeout_secs.unwrap_or(60).saturating_add(margin))
}

/// Reads an answer's body, refusing one longer than `max` as it arrives.
async fn read_capped(mut resp: reqwest::Response, url: &str, max: usize) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|source| ClientError::Transport { url: url.to_string(), source })? {
        if bytes.len() + chunk.len() > max {
            return Err(ClientError::Decode { url: url.to_string(), status: resp.status().as_u16(), body: format!("the answer is larger than {max} bytes") });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The query string of a logs call.
fn logs_query(q: &LogsQuery) -> String {
    let mut parts = vec![format!("tail={}", q.tail_lines())];
    if let Some(a) = &q.after {
        parts.push(format!("after={}", self::q(a)));
    }
    if let Some(w) = q.wait {
        parts.push(format!("wait={}", w.min(LOGS_MAX_WAIT_SECS)));
    }
    parts.join("&")
}

/// Percent-encodes one query value.
fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The public API, as a user (admin or tenant token).
#[derive(Clone, Debug)]
pub struct HubClient {
    t: Transport,
}

impl HubClient {
    /// `ca_pem`: the hub's CA, which the hub's server certificate chains to.
    pub fn new(hub_url: &str, ca_pem: &str, token: &str) -> Result<Self> {
        hangar_tls::install_crypto_provider();
        let tls = hangar_tls::client_config(ca_pem, None).map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(HubClient { t: Transport::new(hub_url, tls, Some(token.to_string()), None)? })
    }

    pub fn base_url(&self) -> &str {
        &self.t.base
    }

    /// Any call with any JSON body; answers the status and the JSON body as they came.
    /// For tools and tests that probe the API beyond the typed methods.
    pub async fn raw(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Result<(u16, serde_json::Value)> {
        let url = format!("{}{}", self.t.base, path);
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| ClientError::Setup(e.to_string()))?;
        let mut req = self.t.http.request(m, &url);
        if let Some(t) = &self.t.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.map_err(|source| ClientError::Transport { url: url.clone(), source })?;
        let status = resp.status().as_u16();
        let bytes = read_capped(resp, &url, MAX_BODY).await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)))
    }

    /// The same client with another token.
    pub fn with_token(&self, token: &str) -> HubClient {
        let mut t = self.t.clone();
        t.token = Some(token.to_string());
        HubClient { t }
    }

    pub async fn info(&self) -> Result<HubInfo> {
        self.t.get("/v1/info").await
    }
    pub async fn openapi(&self) -> Result<serde_json::Value> {
        self.t.get("/v1/openapi.json").await
    }

    // ---- tenants ----
    pub async fn tenant_create(&self, req: &TenantCreate) -> Result<Tenant> {
        self.t.post("/v1/tenants", req).await
    }
    pub async fn tenant_list(&self) -> Result<Vec<Tenant>> {
        self.t.get("/v1/tenants").await
    }
    pub async fn tenant_info(&self, tenant: &str) -> Result<TenantInfo> {
        self.t.get(&format!("/v1/tenants/{tenant}")).await
    }
    pub async fn tenant_destroy(&self, tenant: &str) -> Result<Tenant> {
        self.t.delete(&format!("/v1/tenants/{tenant}")).await
    }
    /// Starts `tenant destroy --force`: deletes the tenant's pools and instances, then
    /// the tenant, as one operation (`tenant.destroy`, with progress).
    pub async fn tenant_destroy_start(&self, tenant: &str) -> Result<Operation> {
        self.t.delete(&format!("/v1/tenants/{tenant}?force=true")).await
    }
    /// [`HubClient::tenant_destroy_start`], then waits up to `wait` for its end: the
    /// operation as it is then (succeeded, or still running).
    pub async fn tenant_destroy_force(&self, tenant: &str, wait: Duration) -> Result<Operation> {
        let op = self.tenant_destroy_start(tenant).await?;
        self.operation_wait_final(op.id, wait).await
    }

    // ---- instances ----
    pub async fn instance_create(&self, tenant: &str, req: &InstanceCreate) -> Result<Operation> {
        self.t.post(&format!("/v1/tenants/{tenant}/instances"), req).await
    }
    pub async fn instance_list(&self, tenant: Option<&str>) -> Result<Vec<Instance>> {
        match tenant {
            Some(t) => self.t.get(&format!("/v1/tenants/{t}/instances")).await,
            None => self.t.get("/v1/instances").await,
        }
    }
    pub async fn instance_get(&self, tenant: &str, name: &str) -> Result<Instance> {
        self.t.get(&format!("/v1/tenants/{tenant}/instances/{name}")).await
    }
    /// `action`: start, stop, warm, resume.
    pub async fn instance_action(&self, tenant: &str, name: &str, action: &str) -> Result<Operation> {
        self.t.post(&format!("/v1/tenants/{tenant}/instances/{name}/{action}"), &serde_json::json!({})).await
    }
    pub async fn instance_delete(&self, tenant: &str, name: &str) -> Result<Operation> {
        self.t.delete(&format!("/v1/tenants/{tenant}/instances/{name}")).await
    }
    pub async fn instance_exec(&self, tenant: &str, name: &str, req: &ExecRequest) -> Result<ExecResult> {
        self.t
            .call_capped(reqwest::Method::POST, &format!("/v1/tenants/{tenant}/instances/{name}/exec"), Some(req), Some(exec_call_timeout(req, 15)), MAX_OUTPUT_BODY)
            .await
    }
    pub async fn instance_logs(&self, tenant: &str, name: &str, lines: u32) -> Result<InstanceLogs> {
        self.instance_logs_query(tenant, name, &LogsQuery { tail: Some(lines), ..Default::default() }).await
    }
    /// The last lines, or with `after` those written since (waiting up to `wait`).
    pub async fn instance_logs_query(&self, tenant: &str, name: &str, q: &LogsQuery) -> Result<InstanceLogs> {
        let timeout = Duration::from_secs(q.wait_secs() + 20);
        let path = format!("/v1/tenants/{tenant}/instances/{name}/logs?{}", logs_query(q));
        self.t.call_capped::<(), _>(reqwest::Method::GET, &path, None, Some(timeout), MAX_OUTPUT_BODY).await
    }
    pub async fn instance_stats(&self, tenant: &str, name: &str) -> Result<InstanceStats> {
        self.t.get(&format!("/v1/tenants/{tenant}/instances/{name}/stats")).await
    }

    // ---- operations ----
    pub async fn operation_get(&self, id: OperationId) -> Result<Operation> {
        self.t.get(&format!("/v1/operations/{id}")).await
    }
    /// Waits up to `timeout` (server side, max 300 s) for the operation to finish.
    pub async fn operation_wait(&self, id: OperationId, timeout: Duration) -> Result<Operation> {
        let secs = timeout.as_secs().clamp(1, 300);
        self.t
            .call::<(), _>(
                reqwest::Method::GET,
                &format!("/v1/operations/{id}/wait?timeout={secs}"),
                None,
                Some(Duration::from_secs(secs + 15)),
            )
            .await
    }
    /// Waits until the operation is final, however long, polling the wait endpoint.
    pub async fn operation_wait_final(&self, id: OperationId, timeout: Duration) -> Result<Operation> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let op = self.operation_wait(id, left.min(Duration::from_secs(30)).max(Duration::from_secs(1))).await?;
            if op.status.is_final() || left.is_zero() {
                return Ok(op);
            }
        }
    }

    // ---- events ----
    pub async fn events(&self, tenant: Option<&str>, limit: u32) -> Result<Vec<Event>> {
        match tenant {
            Some(t) => self.t.get(&format!("/v1/events?tenant={}&limit={limit}", q(t))).await,
            None => self.t.get(&format!("/v1/events?limit={limit}")).await,
        }
    }

    // ---- hosts ----
    pub async fn host_add(&self, req: &HostAdd) -> Result<HostJoinToken> {
        self.t.post("/v1/hosts", req).await
    }
    pub async fn host_list(&self) -> Result<Vec<Host>> {
        self.t.get("/v1/hosts").await
    }
    pub async fn host_get(&self, name: &str) -> Result<Host> {
        self.t.get(&format!("/v1/hosts/{name}")).await
    }
    /// `drain`, `undrain`, `stop` or `start`. Stop and start wait for the provider.
    pub async fn host_action(&self, name: &str, action: &str) -> Result<Host> {
        self.t.call(reqwest::Method::POST, &format!("/v1/hosts/{name}/{action}"), Some(&serde_json::json!({})), Some(Duration::from_secs(180))).await
    }
    pub async fn host_remove(&self, name: &str) -> Result<Host> {
        self.t.call::<(), _>(reqwest::Method::DELETE, &format!("/v1/hosts/{name}"), None, Some(Duration::from_secs(180))).await
    }
    pub async fn host_status(&self, name: &str) -> Result<NodeStatus> {
        self.t.get(&format!("/v1/hosts/{name}/status")).await
    }
    pub async fn host_desired(&self, name: &str) -> Result<DesiredDoc> {
        self.t.get(&format!("/v1/hosts/{name}/desired")).await
    }

    pub async fn pool_create(&self, tenant: &str, req: &PoolCreate) -> Result<PoolInfo> {
        self.t.post(&format!("/v1/tenants/{tenant}/pools"), req).await
    }
    pub async fn pool_list(&self, tenant: &str) -> Result<Vec<PoolInfo>> {
        self.t.get(&format!("/v1/tenants/{tenant}/pools")).await
    }
    pub async fn pool_info(&self, tenant: &str, name: &str) -> Result<PoolInfo> {
        self.t.get(&format!("/v1/tenants/{tenant}/pools/{name}")).await
    }
    pub async fn pool_scale(&self, tenant: &str, name: &str, req: &PoolScale) -> Result<PoolInfo> {
        self.t.post(&format!("/v1/tenants/{tenant}/pools/{name}/scale"), req).await
    }
    pub async fn pool_delete(&self, tenant: &str, name: &str) -> Result<PoolInfo> {
        self.t.delete(&format!("/v1/tenants/{tenant}/pools/{name}")).await
    }
    /// Members of one pool.
    pub async fn pool_members(&self, tenant: &str, pool: &str) -> Result<Vec<Instance>> {
        self.t.get(&format!("/v1/tenants/{tenant}/instances?pool={}", q(pool))).await
    }

    /// Checks every host's tenant networking against the store and probes isolation.
    pub async fn net_verify(&self) -> Result<hangar_types::net::NetVerifyReport> {
        self.t.call::<(), _>(reqwest::Method::GET, "/v1/network/verify", None, Some(Duration::from_secs(300))).await
    }

    // ---- tokens ----
    pub async fn token_create(&self, req: &TokenCreate) -> Result<TokenCreated> {
        self.t.post("/v1/tokens", req).await
    }
    pub async fn token_list(&self) -> Result<Vec<Token>> {
        self.t.get("/v1/tokens").await
    }
    pub async fn token_revoke(&self, id: &str) -> Result<Token> {
        self.t.delete(&format!("/v1/tokens/{id}")).await
    }

    // ---- images (admins) ----
    pub async fn image_add(&self, req: &hangar_types::api::ImageCreate) -> Result<hangar_types::api::Image> {
        self.t.post("/v1/images", req).await
    }
    pub async fn image_list(&self) -> Result<Vec<hangar_types::api::Image>> {
        self.t.get("/v1/images").await
    }
    pub async fn image_remove(&self, name: &str) -> Result<hangar_types::api::Image> {
        self.t.delete(&format!("/v1/images/{name}")).await
    }

    // ---- secrets and proxy tokens (hangar_types::access) ----
    /// `value_b64`: the value, base64; it goes only into the request body.
    pub async fn secret_set(&self, tenant: &str, name: &str, req: &hangar_types::access::SecretSet) -> Result<hangar_types::access::SecretInfo> {
        self.t.call(reqwest::Method::PUT, &format!("/v1/tenants/{tenant}/secrets/{name}"), Some(req), None).await
    }
    pub async fn secret_list(&self, tenant: &str) -> Result<Vec<hangar_types::access::SecretInfo>> {
        self.t.get(&format!("/v1/tenants/{tenant}/secrets")).await
    }
    pub async fn secret_delete(&self, tenant: &str, name: &str, force: bool) -> Result<hangar_types::access::SecretInfo> {
        self.t.delete(&format!("/v1/tenants/{tenant}/secrets/{name}?force={force}")).await
    }
    pub async fn proxy_token_create(&self, tenant: &str, name: &str, req: &hangar_types::access::ProxyTokenCreate) -> Result<hangar_types::access::ProxyTokenCreated> {
        self.t.post(&format!("/v1/tenants/{tenant}/instances/{name}/proxy-tokens"), req).await
    }
    pub async fn proxy_token_list(&self, tenant: &str, name: &str) -> Result<Vec<hangar_types::access::ProxyTokenInfo>> {
        self.t.get(&format!("/v1/tenants/{tenant}/instances/{name}/proxy-tokens")).await
    }
    pub async fn proxy_token_revoke(&self, tenant: &str, name: &str, id: &str) -> Result<hangar_types::access::ProxyTokenInfo> {
        self.t.delete(&format!("/v1/tenants/{tenant}/instances/{name}/proxy-tokens/{id}")).await
    }
}

/// The agent's calls to the hub, over mutual TLS with the host certificate.
#[derive(Clone, Debug)]
pub struct HostClient {
    t: Transport,
}

impl HostClient {
    pub fn new(hub_url: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self> {
        hangar_tls::install_crypto_provider();
        let tls = hangar_tls::client_config(ca_pem, Some((cert_pem, key_pem))).map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(HostClient { t: Transport::new(hub_url, tls, None, None)? })
    }

    /// Joins with a one-time token. The token pins the hub's CA by fingerprint, so the
    /// CA is fetched over an unverified connection and trusted only if it matches.
    pub async fn join(hub_url: &str, req: &JoinRequest, ca_fingerprint: &str) -> Result<JoinResponse> {
        hangar_tls::install_crypto_provider();
        let insecure = Transport::new(hub_url, hangar_tls::insecure_fetch_config(), None, Some(Duration::from_secs(30)))?;
        let ca: serde_json::Value = insecure.get("/v1/agent/ca").await?;
        let ca_pem = ca["ca_pem"].as_str().ok_or_else(|| ClientError::Setup("hub sent no CA certificate".into()))?;
        let got = hangar_tls::fingerprint_pem(ca_pem).map_err(|e| ClientError::Setup(e.to_string()))?;
        if !got.starts_with(ca_fingerprint) || ca_fingerprint.len() < 16 {
            return Err(ClientError::Setup(format!(
                "the hub's CA fingerprint {got} does not match the join token's pin {ca_fingerprint}: wrong hub, or someone in between"
            )));
        }
        let tls = hangar_tls::client_config(ca_pem, None).map_err(|e| ClientError::Setup(e.to_string()))?;
        let verified = Transport::new(hub_url, tls, None, Some(Duration::from_secs(30)))?;
        verified.post("/v1/agent/join", req).await
    }

    /// Long-polls the desired state: answers as soon as the host's generation is above
    /// `after` (at once without one), or after `wait` with the current document.
    pub async fn desired(&self, after: Option<Generation>, wait: Duration) -> Result<DesiredDoc> {
        let after = after.map(|g| format!("after={g}&")).unwrap_or_default();
        self.t
            .call::<(), _>(
                reqwest::Method::GET,
                &format!("/v1/agent/desired?{after}wait={}", wait.as_secs()),
                None,
                Some(wait + Duration::from_secs(15)),
            )
            .await
    }

    pub async fn report(&self, report: &AgentReport) -> Result<serde_json::Value> {
        self.t.call(reqwest::Method::POST, "/v1/agent/report", Some(report), Some(Duration::from_secs(30))).await
    }

    /// Whether this host may take a scheduled snapshot of `instance` now (a 422 when
    /// its tenant is at its disk quota).
    pub async fn snapshot_admission(&self, instance: hangar_types::InstanceId) -> Result<hangar_types::snapshots::SnapshotAdmission> {
        self.t.call::<(), _>(reqwest::Method::POST, &format!("/v1/agent/instances/{instance}/snapshot-admission"), None, Some(Duration::from_secs(10))).await
    }

    /// The values of the secrets an instance placed on this host names.
    pub async fn secrets(&self, instance: hangar_types::InstanceId) -> Result<hangar_types::access::AgentSecrets> {
        self.t.call::<(), _>(reqwest::Method::GET, &format!("/v1/agent/instances/{instance}/secrets"), None, Some(Duration::from_secs(30))).await
    }

    /// A new host certificate for the key behind `req.csr_pem`.
    pub async fn renew(&self, req: &hangar_types::protocol::RenewRequest) -> Result<hangar_types::protocol::RenewResponse> {
        self.t.call(reqwest::Method::POST, "/v1/agent/renew", Some(req), Some(Duration::from_secs(30))).await
    }
}

/// The longest any hub-to-agent call without its own deadline may take.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The hub's calls to an agent's endpoint, over mutual TLS with the hub's client certificate.
#[derive(Clone, Debug)]
pub struct AgentClient {
    t: Transport,
}

impl AgentClient {
    pub fn new(endpoint: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self> {
        hangar_tls::install_crypto_provider();
        let tls = hangar_tls::client_config(ca_pem, Some((cert_pem, key_pem))).map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(AgentClient { t: Transport::new(endpoint, tls, None, None)? })
    }

    /// With a ready TLS configuration (the hub pins the host's certificate); every call
    /// has an overall deadline ([`AGENT_CALL_TIMEOUT`] unless the call sets its own).
    pub fn pinned(endpoint: &str, tls: rustls::ClientConfig) -> Result<Self> {
        Ok(AgentClient { t: Transport::new(endpoint, tls, None, Some(AGENT_CALL_TIMEOUT))? })
    }

    pub async fn exec(&self, sandbox: &SandboxId, req: &ExecRequest) -> Result<ExecResult> {
        self.t.call_capped(reqwest::Method::POST, &format!("/v1/sandboxes/{sandbox}/exec"), Some(req), Some(exec_call_timeout(req, 10)), MAX_OUTPUT_BODY).await
    }
    pub async fn logs(&self, sandbox: &SandboxId, q: &LogsQuery) -> Result<InstanceLogs> {
        let timeout = Duration::from_secs(q.wait_secs() + 10);
        self.t.call_capped::<(), _>(reqwest::Method::GET, &format!("/v1/sandboxes/{sandbox}/logs?{}", logs_query(q)), None, Some(timeout), MAX_OUTPUT_BODY).await
    }
    pub async fn stats(&self, sandbox: &SandboxId) -> Result<InstanceStats> {
        self.t.get(&format!("/v1/sandboxes/{sandbox}/stats")).await
    }
    pub async fn network(&self) -> Result<hangar_types::net::NetReport> {
        self.t.get("/v1/network").await
    }
    pub async fn status(&self) -> Result<NodeStatus> {
        self.t.call::<(), _>(reqwest::Method::GET, "/v1/status", None, Some(Duration::from_secs(20))).await
    }
}

// ---- snapshots ----
impl HubClient {
    pub async fn snapshot_create(&self, tenant: &str, instance: &str, req: &SnapshotCreate) -> Result<Snapshot> {
        self.t.post(&format!("/v1/tenants/{tenant}/instances/{instance}/snapshots"), req).await
    }
    pub async fn snapshot_list(&self, tenant: &str, instance: &str) -> Result<Vec<Snapshot>> {
        self.t.get(&format!("/v1/tenants/{tenant}/instances/{instance}/snapshots")).await
    }
    pub async fn snapshot_delete(&self, tenant: &str, instance: &str, name: &str) -> Result<Snapshot> {
        self.t.delete(&format!("/v1/tenants/{tenant}/instances/{instance}/snapshots/{}", q(name))).await
    }
    pub async fn snapshot_restore(&self, tenant: &str, instance: &str, name: &str, req: &SnapshotRestore) -> Result<SnapshotRestored> {
        self.t.post(&format!("/v1/tenants/{tenant}/instances/{instance}/snapshots/{}/restore", q(name)), req).await
    }
    pub async fn snapshot_schedule_set(&self, tenant: &str, instance: &str, req: &SnapshotScheduleSet) -> Result<SnapshotScheduleInfo> {
        self.t.call(reqwest::Method::PUT, &format!("/v1/tenants/{tenant}/instances/{instance}/snapshot-schedule"), Some(req), None).await
    }
    pub async fn snapshot_schedule_get(&self, tenant: &str, instance: &str) -> Result<SnapshotScheduleInfo> {
        self.t.get(&format!("/v1/tenants/{tenant}/instances/{instance}/snapshot-schedule")).await
    }
}

/// Interactive sessions (`instance exec -it`, the SSH gateway): the request, then the
/// upgraded connection carrying [`hangar_types::session::Frame`]s.
impl HubClient {
    pub async fn instance_session(&self, tenant: &str, name: &str, req: &hangar_types::session::SessionRequest) -> Result<session::Upgraded> {
        session::open(&self.t, &format!("/v1/tenants/{tenant}/instances/{name}/session"), req).await
    }
}

impl AgentClient {
    pub async fn snapshot_list(&self, sandbox: &SandboxId) -> Result<Vec<hangar_types::protocol::ObservedSnapshot>> {
        self.t.get(&format!("/v1/sandboxes/{sandbox}/snapshots")).await
    }
    pub async fn snapshot_create(&self, sandbox: &SandboxId, req: &hangar_types::snapshots::AgentSnapshotCreate) -> Result<hangar_types::protocol::ObservedSnapshot> {
        self.t.post(&format!("/v1/sandboxes/{sandbox}/snapshots"), req).await
    }
    pub async fn snapshot_delete(&self, sandbox: &SandboxId, name: &hangar_types::SnapshotId) -> Result<serde_json::Value> {
        self.t.delete(&format!("/v1/sandboxes/{sandbox}/snapshots/{name}")).await
    }
    pub async fn snapshot_restore(&self, sandbox: &SandboxId, name: &hangar_types::SnapshotId, req: &hangar_types::snapshots::AgentSnapshotRestore) -> Result<hangar_types::protocol::ObservedSnapshot> {
        self.t.post(&format!("/v1/sandboxes/{sandbox}/snapshots/{name}/restore"), req).await
    }
    pub async fn session(&self, sandbox: &SandboxId, req: &hangar_types::session::SessionRequest) -> Result<session::Upgraded> {
        session::open(&self.t, &format!("/v1/sandboxes/{sandbox}/session"), req).await
    }
}

/// SSH keys and the SSH gateway.
impl HubClient {
    pub async fn ssh_key_add(&self, tenant: &str, req: &SshKeyAdd) -> Result<SshKey> {
        self.t.post(&format!("/v1/tenants/{tenant}/ssh-keys"), req).await
    }
    pub async fn ssh_key_list(&self, tenant: &str) -> Result<Vec<SshKey>> {
        self.t.get(&format!("/v1/tenants/{tenant}/ssh-keys")).await
    }
    pub async fn ssh_key_remove(&self, tenant: &str, name: &str) -> Result<SshKey> {
        self.t.delete(&format!("/v1/tenants/{tenant}/ssh-keys/{name}")).await
    }
    pub async fn ssh_gateway(&self) -> Result<SshGateway> {
        self.t.get("/v1/ssh").await
    }
}
