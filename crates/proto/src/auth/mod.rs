//! DH-HMAC-CHAP in-band authentication (NVMe Base 2.0 §8.13, TP 8006), as Linux
//! implements it, without I/O.
//!
//! After a Connect whose completion has [`ATR`](crate::fabrics::authreq::ATR)
//! set, the host runs one authentication transaction on that queue through
//! Authentication Send (fctype 05h) and Receive (06h) with SECP E9h,
//! SPSP0 = SPSP1 = 01h ([`AuthCommand::dhchap`](crate::fabrics::AuthCommand::dhchap)):
//!
//! ```text
//! host → ctrl  AUTH_Negotiate           hashes and DH groups the host accepts
//! ctrl → host  DH-HMAC-CHAP_Challenge   hash, group, S1, C1, controller DH value
//! host → ctrl  DH-HMAC-CHAP_Reply       R1, [C2, S2], host DH value
//! ctrl → host  DH-HMAC-CHAP_Success1    [R2]
//! host → ctrl  DH-HMAC-CHAP_Success2    (only when the host sent C2)
//! ```
//!
//! `R1 = HMAC(Kh', C1' || S1 || T_ID || SC_C || "HostHost" || NQNh || 0 || NQNc)`
//! with the transformed host key `Kh'` ([`DhchapSecret::transformed`]) and `C1'`
//! = C1, or with a DH group `HMAC(H(g^xy mod p), C1)`; R2 likewise with
//! "Controller" and the NQNs swapped ([`response`]).
//!
//! Pieces: [`DhchapSecret`] (the `DHHC-1:hh:…:` key strings), [`messages`]
//! (wire formats), [`ffdhe`] (RFC 7919 groups), [`response`] (the HMACs) and
//! the two state machines, [`ControllerAuth`] and [`HostAuth`].
//!
//! # Example
//!
//! Both sides of a bidirectional exchange, the bytes passed by hand where a
//! transport would carry them in Authentication Send/Receive:
//!
//! ```
//! use nvmf_proto::auth::*;
//!
//! let hostnqn = "nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c-0b0a-0908-0706-050403020100";
//! let subnqn = "nqn.2024-01.io.test:sub1";
//! let host_key = DhchapSecret::parse("DHHC-1:00:ERERERERERERERERERERERERERERERERERERERERERHYIEm8:")?;
//! let ctrl_key = DhchapSecret::new(&[0x55; 32], Some(HashId::Sha256))?;
//!
//! // Target side: one per queue, from the host entry's configuration.
//! let mut ccfg = ControllerConfig::new(host_key.clone(), hostnqn, subnqn, 0);
//! ccfg.ctrl_secret = Some(ctrl_key.clone());
//! let mut ctrl = ControllerAuth::new(ccfg);
//!
//! // Host side.
//! let mut hcfg = HostConfig::new(host_key, hostnqn, subnqn, 0, /* t_id */ 0);
//! hcfg.ctrl_secret = Some(ctrl_key);
//! let mut host = HostAuth::new(hcfg);
//!
//! loop {
//!     match host.next_step() {
//!         // Authentication Send: the controller takes the payload.
//!         Step::Send(bytes) => { let _ = ctrl.handle_send(&bytes); }
//!         // Authentication Receive: the controller produces the data.
//!         Step::Receive(al) => {
//!             let data = ctrl.handle_receive(al).expect("AL of 4096 fits every message");
//!             host.received(&data);
//!         }
//!         Step::Done => break,
//!         Step::Failed(why) => panic!("{why}"),
//!     }
//! }
//! assert!(ctrl.is_authenticated());
//! assert_eq!(ctrl.negotiated(), Some((HashId::Sha256, DhGroup::Null)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod controller;
mod digest;
pub mod ffdhe;
mod host;
mod ids;
pub mod messages;
mod outcome;
pub mod response;
mod secret;

pub use controller::{AllocationTooSmall, ControllerAuth, ControllerConfig};
pub use host::{HostAuth, HostConfig, Step, RECEIVE_AL};
pub use ids::{
    auth_id, auth_type, sc_c, DhGroup, FailureReason, HashId, DHCHAP_AUTH_ID, MAX_DH_IDS,
    MAX_HASH_IDS, REASON_CODE_FAILED, SECP_NVME_AUTH, SPSP0_DHCHAP, SPSP1_DHCHAP,
};
pub use messages::{DecodeError, Message};
pub use outcome::{AuthFailure, AuthRng};
pub use secret::{DhchapSecret, SecretError};

#[cfg(test)]
mod tests;
