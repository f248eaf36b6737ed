//! The host (initiator) side of one queue's DH-HMAC-CHAP transaction, in the
//! order of Linux's `nvme_queue_auth_work` (drivers/nvme/host/auth.c):
//! Negotiate → Challenge → Reply → Success1 → [Success2], with AUTH_Failure2
//! sent when the host refuses what the controller sent.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::ffdhe::DhKeyPair;
use super::ids::{auth_id, auth_type, sc_c, DhGroup, FailureReason, HashId, REASON_CODE_FAILED};
use super::messages::{
    Challenge, Failure, Message, Negotiate, ProtocolDescriptor, Reply, Success1,
};
use super::outcome::{nonzero_seqnum, AuthFailure, AuthRng};
use super::response::{augmented_challenge, controller_response, host_response};
use super::secret::DhchapSecret;

/// Allocation length of the host's Authentication Receives: Linux's 4 KiB
/// `CHAP_BUF_SIZE`, enough for an ffdhe8192 Challenge (16 + 64 + 1024 bytes).
pub const RECEIVE_AL: u32 = 4096;

/// What the host authenticates with.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The host's secret (`nvme connect --dhchap-secret`).
    pub host_secret: DhchapSecret,
    /// The controller's secret (`--dhchap-ctrl-secret`): with it the host
    /// challenges the controller too and requires a correct R2 in Success1.
    pub ctrl_secret: Option<DhchapSecret>,
    /// Hashes offered, in the order sent (Linux offers all three).
    pub hashes: Vec<HashId>,
    /// DH groups offered, in the order sent (Linux offers all six).
    pub dh_groups: Vec<DhGroup>,
    /// NQN of the host.
    pub hostnqn: String,
    /// NQN of the subsystem.
    pub subnqn: String,
    /// Queue being authenticated (for logs).
    pub qid: u16,
    /// Transaction identifier; Linux takes it from a per-controller counter
    /// incremented for every transaction on any queue.
    pub t_id: u16,
}

impl HostConfig {
    /// Offers every hash and group, as Linux does; no controller secret.
    pub fn new(
        host_secret: DhchapSecret,
        hostnqn: &str,
        subnqn: &str,
        qid: u16,
        t_id: u16,
    ) -> Self {
        Self {
            host_secret,
            ctrl_secret: None,
            hashes: HashId::ALL.to_vec(),
            dh_groups: DhGroup::ALL.to_vec(),
            hostnqn: hostnqn.to_string(),
            subnqn: subnqn.to_string(),
            qid,
            t_id,
        }
    }
}

/// What the host does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Issue an Authentication Send with these bytes (TL = their length), then
    /// call [`HostAuth::next_step`] again.
    Send(Vec<u8>),
    /// Issue an Authentication Receive with this allocation length and pass the
    /// data to [`HostAuth::received`].
    Receive(u32),
    /// Authenticated (and the controller too, if a controller secret was given).
    Done,
    /// The transaction failed; any AUTH_Failure2 was already handed out as a `Send`.
    Failed(AuthFailure),
}

enum State {
    SendNegotiate,
    RecvChallenge,
    SendReply(Vec<u8>),
    RecvSuccess1,
    SendSuccess2,
    SendFailure2(FailureReason),
    Done,
    Failed(AuthFailure),
}

/// The host side of one DH-HMAC-CHAP transaction on one queue. Sans-I/O: ask
/// [`HostAuth::next_step`] what to do, perform the command, report back.
pub struct HostAuth {
    cfg: HostConfig,
    rng: Box<dyn AuthRng>,
    state: State,
    hash: Option<HashId>,
    group: DhGroup,
    shared: Option<Zeroizing<Vec<u8>>>,
    s2: u32,
    c2: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for HostAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAuth")
            .field("qid", &self.cfg.qid)
            .field("t_id", &self.cfg.t_id)
            .field("hash", &self.hash)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl HostAuth {
    /// A transaction about to send AUTH_Negotiate, drawing randomness from the OS.
    pub fn new(cfg: HostConfig) -> Self {
        Self::with_rng(cfg, Box::new(rand::rngs::OsRng))
    }

    /// As [`HostAuth::new`] with a given random source.
    pub fn with_rng(cfg: HostConfig, rng: Box<dyn AuthRng>) -> Self {
        Self {
            cfg,
            rng,
            state: State::SendNegotiate,
            hash: None,
            group: DhGroup::Null,
            shared: None,
            s2: 0,
            c2: None,
        }
    }

    /// Hash and DH group the controller chose, once its Challenge was accepted.
    pub fn negotiated(&self) -> Option<(HashId, DhGroup)> {
        self.hash.map(|h| (h, self.group))
    }

    /// The next action. Calling it again without acting on a `Receive` returns
    /// the same `Receive`; a `Send` is handed out once.
    pub fn next_step(&mut self) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::SendNegotiate => {
                self.state = State::RecvChallenge;
                Step::Send(
                    Message::Negotiate(Negotiate {
                        t_id: self.cfg.t_id,
                        sc_c: sc_c::NONE,
                        protocols: vec![ProtocolDescriptor::dhchap(
                            self.cfg.hashes.iter().map(|h| h.id()).collect(),
                            self.cfg.dh_groups.iter().map(|g| g.id()).collect(),
                        )],
                    })
                    .encode(),
                )
            }
            State::RecvChallenge => {
                self.state = State::RecvChallenge;
                Step::Receive(RECEIVE_AL)
            }
            State::SendReply(b) => {
                self.state = State::RecvSuccess1;
                Step::Send(b)
            }
            State::RecvSuccess1 => {
                self.state = State::RecvSuccess1;
                Step::Receive(RECEIVE_AL)
            }
            State::SendSuccess2 => {
                self.state = State::Done;
                Step::Send(Message::Success2(self.cfg.t_id).encode())
            }
            State::SendFailure2(reason) => {
                self.state = State::Failed(AuthFailure::Refused(reason));
                Step::Send(
                    Message::Failure2(Failure {
                        t_id: self.cfg.t_id,
                        reason_code: REASON_CODE_FAILED,
                        reason,
                    })
                    .encode(),
                )
            }
            State::Done => Step::Done,
            State::Failed(f) => {
                self.state = State::Failed(f);
                Step::Failed(f)
            }
        }
    }

    /// An Authentication Send or Receive of this transaction completed with a
    /// non-zero NVMe status: the transaction is over (no Failure2 is sent).
    pub fn command_failed(&mut self, status: u16) {
        self.state = State::Failed(AuthFailure::Command(status));
        self.scrub();
    }

    /// The data of the Authentication Receive that [`Step::Receive`] asked for.
    pub fn received(&mut self, data: &[u8]) {
        let next = match std::mem::replace(&mut self.state, State::Done) {
            State::RecvChallenge => self.on_challenge(data),
            State::RecvSuccess1 => self.on_success1(data),
            // Data nobody asked for: a caller bug; end the transaction.
            _ => State::Failed(AuthFailure::Refused(FailureReason::INCORRECT_MESSAGE)),
        };
        if matches!(next, State::Failed(_) | State::SendFailure2(_)) {
            self.scrub();
        }
        self.state = next;
    }

    fn scrub(&mut self) {
        self.shared = None;
        self.c2 = None;
    }

    /// What `nvme_auth_receive_validate` does before a message is processed:
    /// Failure1 ends the transaction with the controller's reason; a wrong
    /// message or transaction ID ends it as "incorrect protocol message"; in
    /// neither case is a Failure2 sent. `Err(state)` is the state to move to.
    fn validate(&self, data: &[u8], expected: u8) -> Result<Message, State> {
        let failed = |r| Err(State::Failed(AuthFailure::Refused(r)));
        let (ty, id) = (data.first().copied(), data.get(1).copied());
        match Message::decode(data) {
            Ok(Message::Failure1(f)) => Err(State::Failed(AuthFailure::PeerReported(f.reason))),
            Ok(m) if m.t_id() != self.cfg.t_id => failed(FailureReason::INCORRECT_MESSAGE),
            Ok(m) => Ok(m),
            // The right message with a bad body: refused with a Failure2.
            Err(e) if ty == Some(auth_type::DHCHAP) && id == Some(expected) => {
                Err(State::SendFailure2(e.reason()))
            }
            Err(_) => failed(FailureReason::INCORRECT_MESSAGE),
        }
    }

    fn on_challenge(&mut self, data: &[u8]) -> State {
        let c = match self.validate(data, auth_id::CHALLENGE) {
            Ok(Message::Challenge(c)) => c,
            Ok(_) => return State::Failed(AuthFailure::Refused(FailureReason::INCORRECT_MESSAGE)),
            Err(s) => return s,
        };
        match self.reply(&c) {
            Ok(b) => State::SendReply(b),
            Err(r) => State::SendFailure2(r),
        }
    }

    /// Challenge checks of `nvme_auth_process_dhchap_challenge`, then R1 and the Reply.
    fn reply(&mut self, c: &Challenge) -> Result<Vec<u8>, FailureReason> {
        let hash = HashId::from_u8(c.hash_id)
            .filter(|h| self.cfg.hashes.contains(h))
            .ok_or(FailureReason::HASH_UNUSABLE)?;
        if c.challenge.len() != hash.digest_len() {
            return Err(FailureReason::HASH_UNUSABLE);
        }
        let group = DhGroup::from_u8(c.dh_group)
            .filter(|g| self.cfg.dh_groups.contains(g))
            .ok_or(FailureReason::DHGROUP_UNUSABLE)?;
        let mut host_value = Vec::new();
        let challenge = if group == DhGroup::Null {
            if !c.dh_value.is_empty() {
                return Err(FailureReason::INCORRECT_PAYLOAD);
            }
            Zeroizing::new(c.challenge.clone())
        } else {
            if c.dh_value.is_empty() {
                return Err(FailureReason::DHGROUP_UNUSABLE);
            }
            let dh = DhKeyPair::generate(group, self.rng.as_mut())
                .map_err(|_| FailureReason::DHGROUP_UNUSABLE)?;
            let shared = dh
                .shared_secret(&c.dh_value)
                .map_err(|_| FailureReason::INCORRECT_PAYLOAD)?;
            host_value = dh.public_value().to_vec();
            let aug = augmented_challenge(hash, &shared, &c.challenge);
            self.shared = Some(shared);
            aug
        };
        self.hash = Some(hash);
        self.group = group;
        let key = self.cfg.host_secret.transformed(&self.cfg.hostnqn);
        let response = host_response(
            hash,
            &key,
            &challenge,
            c.seqnum,
            self.cfg.t_id,
            sc_c::NONE,
            &self.cfg.hostnqn,
            &self.cfg.subnqn,
        );
        let c2 = if self.cfg.ctrl_secret.is_some() {
            let mut c2 = Zeroizing::new(vec![0u8; hash.digest_len()]);
            self.rng.fill_bytes(&mut c2);
            self.s2 = nonzero_seqnum(self.rng.as_mut());
            self.c2 = Some(c2.clone());
            Some(c2.to_vec())
        } else {
            // S2 = 0: no bidirectional authentication (Linux 6.12 sends a non-zero
            // S2 with CVALID clear; nvmet accepts both).
            self.s2 = 0;
            None
        };
        Ok(Message::Reply(Reply {
            t_id: self.cfg.t_id,
            seqnum: self.s2,
            response: response.to_vec(),
            challenge: c2,
            dh_value: host_value,
        })
        .encode())
    }

    fn on_success1(&mut self, data: &[u8]) -> State {
        let s = match self.validate(data, auth_id::SUCCESS1) {
            Ok(Message::Success1(s)) => s,
            Ok(_) => return State::Failed(AuthFailure::Refused(FailureReason::INCORRECT_MESSAGE)),
            Err(s) => return s,
        };
        match self.check_success1(&s) {
            Ok(()) if self.c2.is_some() => {
                self.scrub();
                State::SendSuccess2
            }
            Ok(()) => {
                self.scrub();
                State::Done
            }
            Err(r) => State::SendFailure2(r),
        }
    }

    /// Success1 checks of `nvme_auth_process_dhchap_success1`. Stricter than
    /// Linux in one way: having sent C2, the host requires R2 (Linux accepts a
    /// Success1 without RVALID).
    fn check_success1(&self, s: &Success1) -> Result<(), FailureReason> {
        let Some(hash) = self.hash else {
            return Err(FailureReason::INCORRECT_MESSAGE);
        };
        if usize::from(s.hl) != hash.digest_len() {
            return Err(FailureReason::HASH_UNUSABLE);
        }
        let (Some(c2), Some(secret)) = (&self.c2, &self.cfg.ctrl_secret) else {
            return Ok(());
        };
        let Some(rval) = &s.response else {
            return Err(FailureReason::FAILED);
        };
        let challenge = match &self.shared {
            Some(sh) => augmented_challenge(hash, sh, c2),
            None => c2.clone(),
        };
        let key = secret.transformed(&self.cfg.subnqn);
        let expected = controller_response(
            hash,
            &key,
            &challenge,
            self.s2,
            self.cfg.t_id,
            &self.cfg.subnqn,
            &self.cfg.hostnqn,
        );
        if bool::from(expected.as_slice().ct_eq(rval.as_slice())) {
            Ok(())
        } else {
            Err(FailureReason::FAILED)
        }
    }
}
