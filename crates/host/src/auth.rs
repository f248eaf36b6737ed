//! DH-HMAC-CHAP on the host side (NVMe Base 2.0 §8.13): after a Connect whose
//! completion asks for authentication (AUTHREQ.ATR), each queue runs one
//! transaction of Authentication Send/Receive commands before anything else,
//! as Linux's host does (`nvme_auth_negotiate` right after Connect).

use std::sync::atomic::{AtomicU16, Ordering};

use bytes::Bytes;
use nvmf_proto::auth::{AuthFailure, FailureReason, HostAuth, HostConfig, Step};
use nvmf_proto::fabrics::AuthCommand;
use nvmf_proto::tcp::HostData;
use nvmf_transport::HostConnection;

use crate::assoc::ADMIN_TIMEOUT;
use crate::error::{Error, Result};
use crate::options::ConnectOptions;

/// Transaction identifiers: a counter per process, as Linux keeps one per
/// controller (any value the host picks is valid; the controller echoes it).
static NEXT_TID: AtomicU16 = AtomicU16::new(1);

/// Authenticates one queue. `required`: the controller set ATR in the Connect
/// completion. With a controller secret the host authenticates even when not
/// asked, so that the controller must prove itself (a target that does not
/// know the host's key then fails it, rather than the host going on unproven).
pub(crate) async fn authenticate(
    conn: &mut HostConnection,
    opts: &ConnectOptions,
    qid: u16,
    required: bool,
) -> Result<()> {
    if !required && (opts.dhchap_ctrl_secret.is_none() || opts.is_discovery()) {
        return Ok(());
    }
    let fail = |reason: String, hint: &str| Error::Authentication {
        addr: opts.addr.to_string(),
        subnqn: opts.subnqn.clone(),
        qid,
        reason,
        hint: hint.to_string(),
    };
    let Some(secret) = opts.dhchap_secret.clone() else {
        return Err(fail(
            "the controller requires DH-HMAC-CHAP authentication".into(),
            " — give the host's key with --dhchap-secret (-S), as `nvme gen-dhchap-key` printed it for this host NQN",
        ));
    };
    let mut cfg = HostConfig::new(
        secret,
        &opts.hostnqn,
        &opts.subnqn,
        qid,
        NEXT_TID.fetch_add(1, Ordering::Relaxed),
    );
    cfg.ctrl_secret = opts.dhchap_ctrl_secret.clone();
    let bidirectional = cfg.ctrl_secret.is_some();
    let mut a = HostAuth::new(cfg);
    loop {
        match a.next_step() {
            Step::Send(msg) => {
                let sqe = AuthCommand::dhchap(msg.len() as u32).to_sqe(true);
                let c = tokio::time::timeout(
                    ADMIN_TIMEOUT,
                    conn.execute(sqe, HostData::ToController(Bytes::from(msg))),
                )
                .await
                .map_err(|_| Error::Timeout(format!("Authentication Send (QID {qid})")))??;
                if !c.cqe.status.is_success() {
                    a.command_failed(c.cqe.status.to_field());
                }
            }
            Step::Receive(al) => {
                let sqe = AuthCommand::dhchap(al).to_sqe(false);
                let c = tokio::time::timeout(
                    ADMIN_TIMEOUT,
                    conn.execute(sqe, HostData::FromController(al)),
                )
                .await
                .map_err(|_| Error::Timeout(format!("Authentication Receive (QID {qid})")))??;
                if c.cqe.status.is_success() {
                    a.received(&c.data_contiguous());
                } else {
                    a.command_failed(c.cqe.status.to_field());
                }
            }
            Step::Done => {
                if let Some((h, g)) = a.negotiated() {
                    tracing::debug!(
                        qid,
                        hash = h.name(),
                        dhgroup = g.name(),
                        bidirectional,
                        "authenticated"
                    );
                }
                return Ok(());
            }
            Step::Failed(f) => {
                let hint = match f {
                    AuthFailure::PeerReported(r)
                        if r == FailureReason::HASH_UNUSABLE || r == FailureReason::DHGROUP_UNUSABLE =>
                    {
                        " — the controller accepts none of the hash functions or DH groups offered (see its dhchap_hash / dhchap_dhgroup for this host)"
                    }
                    AuthFailure::PeerReported(_) => {
                        " — the controller rejected the host's response: check that --dhchap-secret is the key configured for this host NQN on the target"
                    }
                    AuthFailure::Refused(_) if bidirectional => {
                        " — the controller's response did not match --dhchap-ctrl-secret (or it sent an unexpected message)"
                    }
                    AuthFailure::Command(_) if !required => {
                        " — the controller does not authenticate this host (no key configured for it there); drop --dhchap-ctrl-secret or configure the host's keys on the target"
                    }
                    _ => "",
                };
                return Err(fail(f.to_string(), hint));
            }
        }
    }
}
