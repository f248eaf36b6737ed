//! In-band authentication of hosts (DH-HMAC-CHAP, NVMe Base 2.0 §8.13): the
//! checks of a host entry's secrets and algorithm names, and the per-queue
//! state that gates commands until the queue has authenticated.

use bytes::Bytes;
use nvmf_backend::SharedData;
use nvmf_proto::auth::{
    AuthFailure, ControllerAuth, ControllerConfig, DhGroup, DhchapSecret, HashId,
};
use nvmf_proto::fabrics::{fctype, AuthCommand};
use nvmf_proto::sqe::admin_opcode;
use nvmf_proto::{Cqe, Sqe, Status};
use nvmf_transport::ControllerQueuePair;
use tracing::{info, warn};

use crate::config::HostConfig;
use crate::queue::{Outcome, QueueTask};

/// Hash function names accepted in `dhchap_hash` (NVMe Base 2.0 Figure 416).
pub const HASH_NAMES: [&str; 3] = ["sha256", "sha384", "sha512"];
/// DH group names accepted in `dhchap_dhgroup` (NVMe Base 2.0 Figure 417).
pub const DHGROUP_NAMES: [&str; 6] = [
    "null",
    "ffdhe2048",
    "ffdhe3072",
    "ffdhe4096",
    "ffdhe6144",
    "ffdhe8192",
];

/// Strips the `hmac(…)` wrapper nvmet's configfs uses (`hmac(sha256)`), so
/// either spelling is accepted.
pub fn hash_name(s: &str) -> &str {
    s.strip_prefix("hmac(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(s)
}

/// Checks one host entry: its secrets parse, a controller secret comes with a
/// host secret, and the algorithm names are known. The error names the field.
pub fn validate_host(h: &HostConfig) -> Result<(), (&'static str, String)> {
    for name in &h.dhchap_hashes {
        if !HASH_NAMES.contains(&hash_name(name)) {
            return Err((
                "dhchap_hash",
                format!("'{name}' is not one of sha256, sha384, sha512"),
            ));
        }
    }
    for name in &h.dhchap_dhgroups {
        if !DHGROUP_NAMES.contains(&name.as_str()) {
            return Err((
                "dhchap_dhgroup",
                format!("'{name}' is not one of {}", DHGROUP_NAMES.join(", ")),
            ));
        }
    }
    for (field, secret) in [
        ("dhchap_secret", &h.dhchap_secret),
        ("dhchap_ctrl_secret", &h.dhchap_ctrl_secret),
    ] {
        if let Some(s) = secret {
            DhchapSecret::parse(&s.0).map_err(|e| {
                (
                    field,
                    format!("{e} (expected DHHC-1:hh:base64: as `nvme gen-dhchap-key` prints it)"),
                )
            })?;
        }
    }
    if h.dhchap_ctrl_secret.is_some() && h.dhchap_secret.is_none() {
        return Err((
            "dhchap_ctrl_secret",
            "a controller secret needs a host secret (dhchap_secret) too".into(),
        ));
    }
    Ok(())
}

/// The hash IDs of a host entry's `dhchap_hash` names (all three when empty),
/// in the order given: the target picks the first one the host offers.
pub fn hashes_of(h: &HostConfig) -> Vec<HashId> {
    if h.dhchap_hashes.is_empty() {
        return HashId::ALL.to_vec();
    }
    h.dhchap_hashes
        .iter()
        .filter_map(|n| {
            HashId::ALL
                .into_iter()
                .find(|id| hash_name(id.name()) == hash_name(n))
        })
        .collect()
}

/// The DH groups of a host entry's `dhchap_dhgroup` names (all six when empty).
pub fn dhgroups_of(h: &HostConfig) -> Vec<DhGroup> {
    if h.dhchap_dhgroups.is_empty() {
        return DhGroup::ALL.to_vec();
    }
    h.dhchap_dhgroups
        .iter()
        .filter_map(|n| DhGroup::ALL.into_iter().find(|g| g.name() == n.as_str()))
        .collect()
}

/// The authentication state machine for one queue of `host`, when its entry
/// holds a secret; `None`: the queue needs no authentication.
pub fn queue_auth(
    host: Option<&HostConfig>,
    subnqn: &str,
    qid: u16,
) -> Option<Box<ControllerAuth>> {
    let h = host?;
    let secret = DhchapSecret::parse(&h.dhchap_secret.as_ref()?.0).ok()?;
    let mut cfg = ControllerConfig::new(secret, &h.nqn, subnqn, qid);
    cfg.ctrl_secret = h
        .dhchap_ctrl_secret
        .as_ref()
        .and_then(|s| DhchapSecret::parse(&s.0).ok());
    cfg.hashes = hashes_of(h);
    cfg.dh_groups = dhgroups_of(h);
    Some(Box::new(ControllerAuth::new(cfg)))
}

impl<C: ControllerQueuePair> QueueTask<C> {
    /// True while this queue must authenticate before running `sqe`: only
    /// Authentication Send/Receive run on a queue whose host has a secret and
    /// has not authenticated yet (NVMe Base 2.0 §8.13.1; status Authentication
    /// Required).
    pub(crate) fn auth_blocks(&self, sqe: &Sqe) -> bool {
        match &self.auth {
            Some(a) if !a.is_authenticated() => {
                !(sqe.opcode == admin_opcode::FABRICS
                    && matches!(sqe.fctype(), fctype::AUTH_SEND | fctype::AUTH_RECV))
            }
            _ => false,
        }
    }

    /// Authentication Send (`send`) or Receive on any queue (NVMe-oF 1.1a
    /// §6.3, TP 8006), in nvmet's manner: bad SECP/SPSP/length fields fail the
    /// command; a bad or refused message still completes with success, and the
    /// host learns the outcome from AUTH_Failure1 on its next Receive.
    pub(crate) fn auth_command(
        &mut self,
        sqe: &Sqe,
        data: &[Bytes],
        buffer_len: u32,
        send: bool,
    ) -> Outcome {
        let cid = sqe.cid;
        let cmd = AuthCommand::from_sqe(sqe);
        if cmd.check_dhchap().is_err() {
            return Outcome::Complete(Cqe::new(cid, Status::INVALID_FIELD.dnr()));
        }
        if send && self.auth.as_ref().is_some_and(|a| a.is_authenticated()) {
            // Re-authentication: it gets its own deadline.
            self.auth_since = Some(std::time::Instant::now());
        }
        let Some(auth) = self.auth.as_mut() else {
            // No secret for this host: nothing to authenticate (nvmet answers
            // the same way when the host has no key).
            return Outcome::Complete(Cqe::new(cid, Status::INVALID_FIELD.dnr()));
        };
        let was = auth.is_authenticated();
        if send {
            let payload: Vec<u8> = data.iter().flat_map(|b| b.iter().copied()).collect();
            if payload.len() != cmd.length as usize {
                return Outcome::Complete(Cqe::new(cid, Status::INVALID_FIELD.dnr()));
            }
            match auth.handle_send(&payload) {
                // Success2 completes a bidirectional transaction.
                Ok(()) => self.note_authenticated(was, "bidirectional"),
                Err(f) => self.auth_failed(f),
            }
            return Outcome::Complete(Cqe::new(cid, Status::SUCCESS));
        }
        match auth.handle_receive(cmd.length) {
            Ok(msg) => {
                let failed = auth.is_finished() && auth.failure().is_some();
                // Success1 fetched completes a one-way transaction.
                self.note_authenticated(was, "one-way");
                if failed {
                    // Failure1 handed out: the association ends once it is sent.
                    self.close_after_flush = true;
                }
                // nvmet transfers AL bytes: the message, then zeroes.
                let n = cmd.length.min(buffer_len) as usize;
                let mut out = msg;
                out.resize(n, 0);
                Outcome::Read(
                    SharedData::One(Bytes::from(out)),
                    Cqe::new(cid, Status::SUCCESS),
                )
            }
            Err(e) => {
                warn!(peer = %self.peer, hostnqn = %self.hostnqn(), "Authentication Receive: {e}");
                Outcome::Complete(Cqe::new(cid, Status::INVALID_FIELD.dnr()))
            }
        }
    }

    /// The host NQN of this queue's controller (empty before Connect).
    fn hostnqn(&self) -> &str {
        self.ctrl.as_ref().map_or("", |c| c.hostnqn.as_str())
    }

    /// Logs a transaction that has just authenticated the host (`was`: it
    /// already was before this message).
    fn note_authenticated(&self, was: bool, kind: &str) {
        let Some(a) = self.auth.as_ref().filter(|a| a.is_authenticated() && !was) else {
            return;
        };
        let (h, g) = a.negotiated().unwrap_or((HashId::Sha256, DhGroup::Null));
        info!(peer = %self.peer, hostnqn = %self.hostnqn(), qid = a.qid(),
              "host authenticated (DH-HMAC-CHAP {kind}, hash {h}, DH group {})", g.name());
    }

    fn auth_failed(&mut self, f: AuthFailure) {
        let qid = self.auth.as_ref().map(|a| a.qid()).unwrap_or_default();
        warn!(peer = %self.peer, hostnqn = %self.hostnqn(), qid, "authentication failed: {f}");
        if matches!(f, AuthFailure::PeerReported(_)) {
            // The host ended the transaction with AUTH_Failure2: nothing more
            // will come on this queue.
            self.close_after_flush = true;
        }
    }
}
