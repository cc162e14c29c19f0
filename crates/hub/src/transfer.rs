//! Host-to-host transfers, the hub's part (the one mechanism move and copy use; see
//! `hangar_types::transfer` and `hangar_agent::transfer`): issue a ticket for exactly
//! one transfer, record it, tell the target what to expect and the source what to send,
//! follow the source's progress to the end, and record how it ended.
//!
//! A caller uses [`Hub::transfer`] (issue and run, with a progress callback), or
//! [`Hub::transfer_issue`] then [`Hub::transfer_run`] to record the ticket's id first
//! (a move keeps it in its phase row). [`Hub::transfer_abort`] stops one on both
//! agents. A ticket that did not end (a hub killed mid-transfer) stays open in the store
//! until [`Hub::transfer_expire`] (the monitor) fails it once it is past its expiry and
//! its source no longer runs it.

use crate::error::{HubError, HubResult};
use crate::Hub;
use hangar_store::{HostRecord, TransferRecord};
use hangar_types::transfer::{Checksum, TransferExpect, TransferId, TransferObject, TransferSend, TransferState, TransferStatus, TransferTicket, TICKET_TTL_SECS};
use hangar_types::ErrorCode;
use sha2::{Digest, Sha256};
use std::time::Duration;
use time::OffsetDateTime;

/// How often the source's progress is read.
const POLL: Duration = Duration::from_millis(200);
/// A source that has not answered for this long (killed, cut off) fails the transfer.
const SOURCE_SILENT_MAX: Duration = Duration::from_secs(15);
/// A transfer whose bytes have not moved for this long fails (a stalled stream).
const STALL_MAX: Duration = Duration::from_secs(60);

/// A ticket with its secret, which only the source gets (the target gets its hash).
#[derive(Clone)]
pub struct IssuedTicket {
    pub ticket: TransferTicket,
    secret: String,
}

impl std::fmt::Debug for IssuedTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTicket").field("ticket", &self.ticket).finish_non_exhaustive()
    }
}

fn unavailable(m: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::Unavailable, m)
}

impl Hub {
    /// The endpoint and certificate fingerprints (current, and a staged renewal) of a
    /// host that can take part in a transfer.
    async fn transfer_peer(&self, host: &HostRecord) -> HubResult<(String, Vec<String>)> {
        let endpoint = host.endpoint.clone().ok_or_else(|| unavailable(format!("host '{}' has not reported an endpoint yet", host.name)))?;
        let mut pins: Vec<String> = host.cert_fingerprint.iter().cloned().collect();
        pins.extend(self.store.host_cert_next(host.id).await?);
        if pins.is_empty() {
            return Err(unavailable(format!("host '{}' has not joined", host.name)));
        }
        Ok((endpoint, pins))
    }

    /// Issues and records a ticket for one transfer of `object` from `source` to
    /// `target`, good for [`TICKET_TTL_SECS`].
    pub async fn transfer_issue(&self, source: &HostRecord, target: &HostRecord, object: TransferObject) -> HubResult<IssuedTicket> {
        if source.id == target.id {
            return Err(HubError::invalid(format!("a transfer needs two hosts; both are '{}'", source.name)));
        }
        let now = OffsetDateTime::now_utc();
        let expires_at = now + time::Duration::seconds(TICKET_TTL_SECS);
        let ticket = TransferTicket { id: TransferId::new(), source: source.id, target: target.id, object, expires_unix: expires_at.unix_timestamp() };
        let secret = hex::encode(rand::random::<[u8; 32]>());
        self.store
            .insert_transfer(&TransferRecord::issued(ticket.id, source.id, target.id, ticket.object.clone(), now, expires_at))
            .await?;
        Ok(IssuedTicket { ticket, secret })
    }

    /// Runs an issued ticket to its end: the target is told to expect it, the source to
    /// send it; the source's progress goes to `progress` (bytes never go down) and to
    /// the store. Ends Done only when both agents report it done with one checksum. On
    /// failure, both agents forget it (the target removes what it received) and the
    /// error says why; the ticket is recorded failed either way.
    pub async fn transfer_run(&self, t: &IssuedTicket, progress: &mut (dyn FnMut(&TransferStatus) + Send)) -> HubResult<TransferStatus> {
        let r = self.transfer_drive(t, progress).await;
        let (state, sha, error) = match &r {
            Ok(s) => (TransferState::Done, s.sha256.clone(), None),
            Err(e) => (TransferState::Failed, None, Some(e.0.message.clone())),
        };
        if r.is_err() {
            self.transfer_abort(&t.ticket).await;
        }
        self.store.finish_transfer(t.ticket.id, state, sha.as_deref(), error.as_deref()).await?;
        r
    }

    /// [`Hub::transfer_issue`] then [`Hub::transfer_run`].
    pub async fn transfer(&self, source: &HostRecord, target: &HostRecord, object: TransferObject, progress: &mut (dyn FnMut(&TransferStatus) + Send)) -> HubResult<TransferStatus> {
        let t = self.transfer_issue(source, target, object).await?;
        self.transfer_run(&t, progress).await
    }

    async fn transfer_hosts(&self, t: &TransferTicket) -> HubResult<(HostRecord, HostRecord)> {
        let get = |id| async move { self.store.get_host_by_id(id).await?.ok_or_else(|| unavailable(format!("host {id} of transfer {} is gone", t.id))) };
        Ok((get(t.source).await?, get(t.target).await?))
    }

    async fn transfer_drive(&self, t: &IssuedTicket, progress: &mut (dyn FnMut(&TransferStatus) + Send)) -> HubResult<TransferStatus> {
        let tk = &t.ticket;
        let (source, target) = self.transfer_hosts(tk).await?;
        let (source_endpoint, source_pins) = self.transfer_peer(&source).await?;
        let (target_endpoint, target_pins) = self.transfer_peer(&target).await?;
        let src = self.agent_client(&source, &source_endpoint).await?;
        let dst = self.agent_client(&target, &target_endpoint).await?;
        let expected = dst
            .transfer_expect(&TransferExpect {
            id: tk.id,
            object: tk.object.clone(),
            secret_sha256: hex::encode(Sha256::digest(t.secret.as_bytes())),
            source_fingerprints: source_pins,
            expires_unix: tk.expires_unix,
        })
        .await
        .map_err(|e| unavailable(format!("host '{}' cannot receive {}: {e}", target.name, tk.object)))?;
        crate::failpoint::hit("transfer-hub-expected");
        // The faster checksum when the target verifies it (an agent before BLAKE3 says
        // nothing: SHA-256; a source before it ignores the choice and says so itself).
        let checksum = if expected.checksums.contains(&Checksum::Blake3) { Checksum::Blake3 } else { Checksum::Sha256 };
        src.transfer_send(&TransferSend { id: tk.id, object: tk.object.clone(), target_endpoint, target_fingerprints: target_pins, secret: t.secret.clone(), checksum })
            .await
            .map_err(|e| unavailable(format!("host '{}' cannot send {}: {e}", source.name, tk.object)))?;
        let mut bytes = 0u64;
        let mut heard = tokio::time::Instant::now();
        let mut moved = heard;
        let st = loop {
            // A long-poll: a pass that ends is seen at once; an agent that answers early
            // (one that does not wait) is asked again only after POLL.
            let asked = tokio::time::Instant::now();
            let st = match src.transfer_status_wait(&tk.id, POLL).await {
                Ok(st) if !st.state.is_final() && asked.elapsed() < POLL => {
                    tokio::time::sleep_until(asked + POLL).await;
                    st
                }
                Ok(st) => st,
                Err(hangar_client::ClientError::Api(e)) if e.code == ErrorCode::NotFound => {
                    return Err(unavailable(format!("host '{}' no longer runs transfer {} (its agent restarted)", source.name, tk.id)));
                }
                Err(e) => {
                    if heard.elapsed() > SOURCE_SILENT_MAX {
                        return Err(unavailable(format!("host '{}' has not answered for {} s: {e}", source.name, SOURCE_SILENT_MAX.as_secs())));
                    }
                    tokio::time::sleep_until(asked + POLL).await;
                    continue;
                }
            };
            heard = tokio::time::Instant::now();
            if st.bytes > bytes {
                bytes = st.bytes;
                moved = heard;
                self.store.set_transfer_progress(tk.id, bytes).await?;
            } else if moved.elapsed() > STALL_MAX && !st.state.is_final() {
                return Err(unavailable(format!("transfer {} has not moved for {} s at {bytes} bytes", tk.id, STALL_MAX.as_secs())));
            }
            // Reported bytes never go down, whatever the agent says.
            progress(&TransferStatus { bytes, ..st.clone() });
            if st.state.is_final() {
                break st;
            }
        };
        if st.state == TransferState::Failed {
            return Err(unavailable(format!("transfer of {} from '{}' to '{}' failed: {}", tk.object, source.name, target.name, st.error.as_deref().unwrap_or("no reason given"))));
        }
        // The target's own word, not only the source's: it checked the stream.
        let got = dst.transfer_status(&tk.id).await.map_err(|e| unavailable(format!("host '{}' did not confirm transfer {}: {e}", target.name, tk.id)))?;
        if got.state != TransferState::Done || got.sha256 != st.sha256 || got.bytes != st.bytes {
            return Err(unavailable(format!("host '{}' reports transfer {} as {:?} with {} bytes, the source sent {}", target.name, tk.id, got.state, got.bytes, st.bytes)));
        }
        crate::failpoint::hit("transfer-hub-done");
        // Both sides forget it: the object is in place on the target.
        let _ = src.transfer_forget(&tk.id).await;
        let _ = dst.transfer_forget(&tk.id).await;
        Ok(st)
    }

    /// Stops a transfer on both agents (best effort: an agent that is down has
    /// forgotten it already); the target removes what it received of it.
    pub async fn transfer_abort(&self, t: &TransferTicket) {
        let Ok((source, target)) = self.transfer_hosts(t).await else { return };
        for h in [&source, &target] {
            if let Some(c) = self.transfer_client(h).await
                && let Err(e) = c.transfer_forget(&t.id).await
            {
                tracing::debug!(transfer = %t.id, host = %h.name, error = %e, "cannot stop a transfer");
            }
        }
    }

    /// The agent client of a host taking part in a transfer, if it can be made now.
    async fn transfer_client(&self, h: &HostRecord) -> Option<hangar_client::AgentClient> {
        let (endpoint, _) = self.transfer_peer(h).await.ok()?;
        self.agent_client(h, &endpoint).await.ok()
    }

    /// Fails open tickets past their expiry that no source runs any more (a hub killed
    /// mid-transfer left them): no leaked tickets. Returns how many were failed.
    pub async fn transfer_expire(&self) -> HubResult<usize> {
        let now = OffsetDateTime::now_utc();
        let mut n = 0;
        for r in self.store.list_open_transfers().await? {
            if r.expires_at > now {
                continue;
            }
            let ticket = TransferTicket { id: r.id, source: r.source, target: r.target, object: r.object.clone(), expires_unix: r.expires_at.unix_timestamp() };
            // A stream accepted before the expiry may still run on the source; one it
            // finished may be about to be confirmed by the hub that runs it.
            if let Ok((source, _)) = self.transfer_hosts(&ticket).await
                && let Some(c) = self.transfer_client(&source).await
            {
                let state = c.transfer_status(&r.id).await.map(|s| s.state).ok();
                let confirming = state == Some(TransferState::Done) && now - r.expires_at < time::Duration::minutes(5);
                if confirming || state.is_some_and(|s| !s.is_final()) {
                    continue;
                }
            }
            self.transfer_abort(&ticket).await;
            if self.store.finish_transfer(r.id, TransferState::Failed, None, Some("expired: no hub followed it to its end")).await? {
                n += 1;
            }
        }
        Ok(n)
    }
}
