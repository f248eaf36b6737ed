//! The controller (target) side of one queue's DH-HMAC-CHAP transaction,
//! ordered as Linux nvmet orders it (drivers/nvme/target/fabrics-cmd-auth.c):
//!
//! ```text
//! host  Auth Send    AUTH_Negotiate          -> handle_send
//! host  Auth Receive DH-HMAC-CHAP_Challenge  <- handle_receive
//! host  Auth Send    DH-HMAC-CHAP_Reply      -> handle_send (R1 checked here)
//! host  Auth Receive DH-HMAC-CHAP_Success1   <- handle_receive (carries R2 if asked)
//! host  Auth Send    DH-HMAC-CHAP_Success2   -> handle_send   (only if the host sent C2)
//! ```
//!
//! A failure found while handling a Send is answered by AUTH_Failure1 on the
//! next Receive; an AUTH_Failure2 from the host ends the transaction. Like
//! nvmet, both Authentication commands complete with a success status either
//! way: the outcome travels in the messages.
//!
//! Wiring it into a controller, as nvmet does:
//! - Connect (admin and every I/O queue) of a host with a configured secret:
//!   answer with ATR set ([`crate::fabrics::connect_response_dw0`]) and create
//!   one `ControllerAuth` for that queue.
//! - Until [`ControllerAuth::is_authenticated`], answer non-Fabrics commands on
//!   the queue with Authentication Required ([`crate::Status::AUTH_REQUIRED`],
//!   DNR) (`nvmet_check_auth_status`).
//! - Authentication Send/Receive: check the SQE with
//!   [`crate::fabrics::AuthCommand::check_dhchap`], then call `handle_send` /
//!   `handle_receive`. nvmet transfers exactly AL bytes on a Receive (the
//!   message, then zeros); the Linux host always uses AL = 4096.
//! - When [`ControllerAuth::is_finished`] with a failure, nvmet tears the
//!   controller down (`nvmet_ctrl_fatal_error`); it also resets a transaction
//!   left unfinished for KATO (120 s without KATO).
//!
//! One nvmet quirk is not copied: nvmet handles an AUTH_Failure2 (a "common"
//! message) in its Negotiate branch and so records "incorrect protocol
//! message"; here the host's own explanation is kept
//! ([`AuthFailure::PeerReported`]). Either way the transaction has failed.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::ffdhe::DhKeyPair;
use super::ids::{sc_c, DhGroup, FailureReason, HashId, DHCHAP_AUTH_ID, REASON_CODE_FAILED};
use super::messages::{
    Challenge, Failure, Message, Negotiate, Reply, Success1, CHALLENGE_HEADER_LEN, FAILURE_LEN,
    SUCCESS1_HEADER_LEN,
};
use super::outcome::{nonzero_seqnum, AuthFailure, AuthRng};
use super::response::{augmented_challenge, controller_response, host_response};
use super::secret::DhchapSecret;

/// What the controller knows about the host it authenticates.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The host's secret (nvmet `dhchap_key`).
    pub host_secret: DhchapSecret,
    /// The controller's secret for bidirectional authentication (nvmet
    /// `dhchap_ctrl_key`); a host that sends a challenge without one configured
    /// gets AUTH_Failure1 "authentication failed".
    pub ctrl_secret: Option<DhchapSecret>,
    /// Hashes allowed, most preferred first: the first one the host offers is used.
    pub hashes: Vec<HashId>,
    /// DH groups allowed, most preferred first.
    pub dh_groups: Vec<DhGroup>,
    /// NQN of the host (from Connect).
    pub hostnqn: String,
    /// NQN of the subsystem.
    pub subnqn: String,
    /// Queue being authenticated (only for logs; DH-HMAC-CHAP is the same on each).
    pub qid: u16,
}

impl ControllerConfig {
    /// A configuration allowing every hash (SHA-256 preferred, as nvmet's default)
    /// and every DH group (null preferred, as nvmet's default), without a
    /// controller secret.
    pub fn new(host_secret: DhchapSecret, hostnqn: &str, subnqn: &str, qid: u16) -> Self {
        Self {
            host_secret,
            ctrl_secret: None,
            hashes: HashId::ALL.to_vec(),
            dh_groups: DhGroup::ALL.to_vec(),
            hostnqn: hostnqn.to_string(),
            subnqn: subnqn.to_string(),
            qid,
        }
    }
}

/// The Authentication Receive allocation length cannot hold the next message.
/// nvmet completes such a Receive with Internal Error (for the Challenge) or
/// Invalid Field in Command (otherwise); the transaction state does not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the next authentication message is {need} bytes, the allocation length {al}")]
pub struct AllocationTooSmall {
    /// Bytes the message needs.
    pub need: usize,
    /// AL of the command.
    pub al: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for AUTH_Negotiate.
    Negotiate,
    /// The next Receive gets the Challenge.
    Challenge,
    /// Waiting for the Reply.
    Reply,
    /// The next Receive gets Success1.
    Success1,
    /// Waiting for Success2 (bidirectional).
    Success2,
    /// The next Receive gets Failure1.
    Failure1,
    /// Authenticated, transaction over.
    Done,
    /// Failed, transaction over.
    Failed,
}

/// The controller side of one DH-HMAC-CHAP transaction on one queue. Sans-I/O:
/// feed it the payloads of Authentication Send and ask it for those of
/// Authentication Receive. Re-authentication is a new AUTH_Negotiate on the
/// same object. Timeouts (nvmet resets a transaction after KATO, or 120 s)
/// are the caller's: drop the object or call [`ControllerAuth::reset`].
pub struct ControllerAuth {
    cfg: ControllerConfig,
    rng: Box<dyn AuthRng>,
    step: Step,
    t_id: u16,
    hash: HashId,
    group: DhGroup,
    s1: u32,
    c1: Zeroizing<Vec<u8>>,
    dh: Option<DhKeyPair>,
    shared: Option<Zeroizing<Vec<u8>>>,
    s2: u32,
    c2: Option<Zeroizing<Vec<u8>>>,
    status: FailureReason,
    authenticated: bool,
    failure: Option<AuthFailure>,
}

impl std::fmt::Debug for ControllerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerAuth")
            .field("qid", &self.cfg.qid)
            .field("step", &self.step)
            .field("t_id", &self.t_id)
            .field("hash", &self.hash)
            .field("group", &self.group)
            .field("authenticated", &self.authenticated)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl ControllerAuth {
    /// A transaction waiting for AUTH_Negotiate, drawing randomness from the OS.
    pub fn new(cfg: ControllerConfig) -> Self {
        Self::with_rng(cfg, Box::new(rand::rngs::OsRng))
    }

    /// As [`ControllerAuth::new`] with a given random source (tests, deterministic fuzzing).
    pub fn with_rng(cfg: ControllerConfig, rng: Box<dyn AuthRng>) -> Self {
        Self {
            cfg,
            rng,
            step: Step::Negotiate,
            t_id: 0,
            hash: HashId::Sha256,
            group: DhGroup::Null,
            s1: 0,
            c1: Zeroizing::new(Vec::new()),
            dh: None,
            shared: None,
            s2: 0,
            c2: None,
            status: FailureReason::FAILED,
            authenticated: false,
            failure: None,
        }
    }

    /// Forgets the transaction (nvmet's expiry): the next message must be AUTH_Negotiate.
    pub fn reset(&mut self) {
        self.step = Step::Negotiate;
        self.c1 = Zeroizing::new(Vec::new());
        self.dh = None;
        self.shared = None;
        self.c2 = None;
        self.s1 = 0;
        self.s2 = 0;
        self.authenticated = false;
        self.failure = None;
    }

    /// True once the host is authenticated: after Success1 was fetched without a
    /// controller challenge, or after Success2.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Why the transaction failed, if it did: `Refused` once this side decided
    /// to answer with AUTH_Failure1, `PeerReported` after the host's AUTH_Failure2.
    pub fn failure(&self) -> Option<AuthFailure> {
        self.failure
    }

    /// True when the transaction is over (authenticated, or failed and the
    /// Failure1 fetched or a Failure2 received). nvmet tears the controller down
    /// after a failed transaction.
    pub fn is_finished(&self) -> bool {
        matches!(self.step, Step::Done | Step::Failed)
    }

    /// Hash and DH group chosen by the negotiation, once it succeeded.
    pub fn negotiated(&self) -> Option<(HashId, DhGroup)> {
        (!matches!(self.step, Step::Negotiate) && self.failure.is_none())
            .then_some((self.hash, self.group))
    }

    /// Queue being authenticated.
    pub fn qid(&self) -> u16 {
        self.cfg.qid
    }

    fn fail(&mut self, reason: FailureReason) -> Result<(), AuthFailure> {
        self.step = Step::Failure1;
        self.status = reason;
        self.authenticated = false;
        let f = AuthFailure::Refused(reason);
        self.failure = Some(f);
        Err(f)
    }

    /// Handles the data of an Authentication Send. `Err` says the transaction
    /// failed with this message (the host learns it from AUTH_Failure1 on its
    /// next Receive, or it reported the failure itself); the command still
    /// completes successfully, as in nvmet. The caller checks SECP/SPSP/TL first
    /// ([`crate::fabrics::AuthCommand::check_dhchap`]).
    pub fn handle_send(&mut self, payload: &[u8]) -> Result<(), AuthFailure> {
        let msg = match Message::decode(payload) {
            Ok(m) => m,
            Err(e) => return self.fail(e.reason()),
        };
        match msg {
            Message::Negotiate(n) => {
                // A Negotiate restarts the transaction at any step (re-authentication).
                self.reset();
                self.t_id = n.t_id;
                match self.negotiate(&n) {
                    Ok(()) => {
                        self.step = Step::Challenge;
                        Ok(())
                    }
                    Err(r) => self.fail(r),
                }
            }
            Message::Failure2(f) => {
                self.step = Step::Failed;
                self.authenticated = false;
                let f = AuthFailure::PeerReported(f.reason);
                self.failure = Some(f);
                Err(f)
            }
            Message::Reply(r) if self.step == Step::Reply => {
                if r.t_id != self.t_id {
                    return self.fail(FailureReason::INCORRECT_PAYLOAD);
                }
                match self.check_reply(&r) {
                    Ok(()) => {
                        self.step = Step::Success1;
                        Ok(())
                    }
                    Err(reason) => self.fail(reason),
                }
            }
            Message::Success2(t_id) if self.step == Step::Success2 => {
                if t_id != self.t_id {
                    return self.fail(FailureReason::INCORRECT_PAYLOAD);
                }
                self.step = Step::Done;
                self.authenticated = true;
                self.c2 = None;
                self.shared = None;
                Ok(())
            }
            // A message out of order, or one only a controller sends.
            _ => self.fail(FailureReason::INCORRECT_MESSAGE),
        }
    }

    /// AUTH_Negotiate checks, as nvmet_auth_negotiate: secure concatenation is
    /// not supported; one DH-HMAC-CHAP descriptor; the first allowed hash and
    /// group the host offers win (nvmet's own order is: the configured one if
    /// offered, else the first the host lists).
    fn negotiate(&mut self, n: &Negotiate) -> Result<(), FailureReason> {
        if n.sc_c != sc_c::NONE {
            return Err(FailureReason::CONCAT_MISMATCH);
        }
        let [p] = n.protocols.as_slice() else {
            return Err(if n.protocols.is_empty() {
                FailureReason::INCORRECT_PAYLOAD
            } else {
                FailureReason::HASH_UNUSABLE
            });
        };
        if p.auth_id != DHCHAP_AUTH_ID {
            return Err(FailureReason::INCORRECT_PAYLOAD);
        }
        self.hash = *self
            .cfg
            .hashes
            .iter()
            .find(|h| p.hashes.contains(&h.id()))
            .ok_or(FailureReason::HASH_UNUSABLE)?;
        self.group = *self
            .cfg
            .dh_groups
            .iter()
            .find(|g| p.dh_groups.contains(&g.id()))
            .ok_or(FailureReason::DHGROUP_UNUSABLE)?;
        Ok(())
    }

    /// DH-HMAC-CHAP_Reply checks, as nvmet_auth_reply.
    fn check_reply(&mut self, r: &Reply) -> Result<(), FailureReason> {
        let hl = self.hash.digest_len();
        if r.response.len() != hl {
            return Err(FailureReason::FAILED);
        }
        let challenge = match &self.dh {
            None if r.dh_value.is_empty() => self.c1.clone(),
            None => return Err(FailureReason::INCORRECT_PAYLOAD),
            Some(_) if r.dh_value.is_empty() => return Err(FailureReason::INCORRECT_PAYLOAD),
            Some(dh) => {
                let shared = dh
                    .shared_secret(&r.dh_value)
                    .map_err(|_| FailureReason::DHGROUP_UNUSABLE)?;
                let aug = augmented_challenge(self.hash, &shared, &self.c1);
                self.shared = Some(shared);
                aug
            }
        };
        let key = self.cfg.host_secret.transformed(&self.cfg.hostnqn);
        let expected = host_response(
            self.hash,
            &key,
            &challenge,
            self.s1,
            self.t_id,
            sc_c::NONE,
            &self.cfg.hostnqn,
            &self.cfg.subnqn,
        );
        if !bool::from(expected.as_slice().ct_eq(&r.response)) {
            return Err(FailureReason::FAILED);
        }
        // S2 = 0 with a C2 means "no bidirectional authentication" (NVMe Base 2.2
        // §8.3.4.5.4; nvmet drops the C2).
        match &r.challenge {
            Some(c2) if r.seqnum != 0 => {
                if self.cfg.ctrl_secret.is_none() {
                    // nvmet finds this when building Success1; same answer on the wire.
                    return Err(FailureReason::FAILED);
                }
                self.c2 = Some(Zeroizing::new(c2.clone()));
                self.s2 = r.seqnum;
            }
            _ => {
                self.c2 = None;
                self.s2 = 0;
            }
        }
        Ok(())
    }

    /// The data for an Authentication Receive with allocation length `al`: the
    /// Challenge, Success1 or Failure1, exactly the message's length (nvmet
    /// transfers AL bytes, the message then zeros; pad if the transport needs it).
    /// A Receive out of turn gets Failure1 "authentication failed", as in nvmet.
    pub fn handle_receive(&mut self, al: u32) -> Result<Vec<u8>, AllocationTooSmall> {
        let fits = |need: usize| {
            if (al as usize) < need {
                Err(AllocationTooSmall { need, al })
            } else {
                Ok(())
            }
        };
        match self.step {
            Step::Challenge => {
                let hl = self.hash.digest_len();
                fits(CHALLENGE_HEADER_LEN + hl + self.group.value_len())?;
                self.s1 = nonzero_seqnum(self.rng.as_mut());
                let mut c1 = Zeroizing::new(vec![0u8; hl]);
                self.rng.fill_bytes(&mut c1);
                self.c1 = c1;
                let dh_value = if self.group == DhGroup::Null {
                    self.dh = None;
                    Vec::new()
                } else {
                    match DhKeyPair::generate(self.group, self.rng.as_mut()) {
                        Ok(dh) => {
                            let v = dh.public_value().to_vec();
                            self.dh = Some(dh);
                            v
                        }
                        Err(_) => {
                            let _ = self.fail(FailureReason::DHGROUP_UNUSABLE);
                            return self.handle_receive(al);
                        }
                    }
                };
                self.step = Step::Reply;
                Ok(Message::Challenge(Challenge {
                    t_id: self.t_id,
                    hash_id: self.hash.id(),
                    dh_group: self.group.id(),
                    seqnum: self.s1,
                    challenge: self.c1.to_vec(),
                    dh_value,
                })
                .encode())
            }
            Step::Success1 => {
                let hl = self.hash.digest_len();
                let bidirectional = self.c2.is_some();
                fits(SUCCESS1_HEADER_LEN + if bidirectional { hl } else { 0 })?;
                let response = match (&self.c2, &self.cfg.ctrl_secret) {
                    (Some(c2), Some(secret)) => {
                        let challenge = match &self.shared {
                            Some(s) => augmented_challenge(self.hash, s, c2),
                            None => c2.clone(),
                        };
                        let key = secret.transformed(&self.cfg.subnqn);
                        Some(
                            controller_response(
                                self.hash,
                                &key,
                                &challenge,
                                self.s2,
                                self.t_id,
                                &self.cfg.subnqn,
                                &self.cfg.hostnqn,
                            )
                            .to_vec(),
                        )
                    }
                    _ => None,
                };
                if bidirectional {
                    self.step = Step::Success2;
                } else {
                    self.step = Step::Done;
                    self.authenticated = true;
                    self.shared = None;
                }
                Ok(Message::Success1(Success1 {
                    t_id: self.t_id,
                    hl: hl as u8,
                    response,
                })
                .encode())
            }
            Step::Failure1 => {
                fits(FAILURE_LEN)?;
                self.step = Step::Failed;
                Ok(self.failure1())
            }
            Step::Negotiate | Step::Reply | Step::Success2 | Step::Done | Step::Failed => {
                fits(FAILURE_LEN)?;
                let _ = self.fail(FailureReason::FAILED);
                self.step = Step::Failed;
                Ok(self.failure1())
            }
        }
    }

    fn failure1(&mut self) -> Vec<u8> {
        self.dh = None;
        self.shared = None;
        self.c2 = None;
        Message::Failure1(Failure {
            t_id: self.t_id,
            reason_code: REASON_CODE_FAILED,
            reason: self.status,
        })
        .encode()
    }
}
