//! DH-HMAC-CHAP (nvmf_proto::auth) under arbitrary input.
//!
//! Input: a mode byte, then mode-specific bytes (little-endian, missing bytes
//! read as zero):
//! - mode % 4 == 0: the rest is one message for `Message::decode`; oracle: no
//!   panic, and what decodes re-encodes to bytes that decode to the same message.
//! - mode % 4 == 1: a ControllerAuth (hashes SHA-256/384/512, groups null and
//!   ffdhe2048, a controller secret) driven by operations: tag byte, then for an
//!   even tag a u16 length and that many bytes for `handle_send`, for an odd tag
//!   a u32 AL for `handle_receive`. Oracle: no panic; everything it returns
//!   decodes as Challenge, Success1 or Failure1 and fits AL; it is authenticated
//!   only after a Success1 went out.
//! - mode % 4 == 2: a HostAuth driven by `next_step`, every Receive answered
//!   with the next u16-length-prefixed chunk. Oracle: no panic; every Send
//!   decodes as Negotiate, Reply, Success2 or Failure2 with the host's T_ID.
//! - mode % 4 == 3: the rest, as lossy UTF-8, for `DhchapSecret::parse`;
//!   oracle: no panic, and a parsed secret formats back to a string that parses
//!   to the same secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvmf_proto::auth::{
    ControllerAuth, ControllerConfig, DhGroup, DhchapSecret, HashId, HostAuth, HostConfig, Message,
    Step,
};
use rand::SeedableRng;

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c-0b0a-0908-0706-050403020100";
const SUBNQN: &str = "nqn.2024-01.io.test:sub1";

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn secret(b: u8) -> DhchapSecret {
    DhchapSecret::new(&[b; 32], Some(HashId::Sha256)).unwrap()
}

fn rng(seed: u8) -> Box<rand::rngs::StdRng> {
    Box::new(rand::rngs::StdRng::seed_from_u64(u64::from(seed)))
}

fuzz_target!(|b: &[u8]| {
    let mut inp = Input(b);
    let mode = inp.u8();
    match mode % 4 {
        0 => {
            if let Ok(m) = Message::decode(inp.0) {
                let again = m.encode();
                assert_eq!(Message::decode(&again), Ok(m));
            }
        }
        1 => {
            let mut cfg = ControllerConfig::new(secret(1), HOSTNQN, SUBNQN, 0);
            cfg.ctrl_secret = Some(secret(2));
            cfg.dh_groups = vec![DhGroup::Null, DhGroup::Ffdhe2048];
            let mut ctrl = ControllerAuth::with_rng(cfg, rng(mode));
            let mut success1_sent = false;
            for _ in 0..16 {
                if inp.is_empty() {
                    break;
                }
                let tag = inp.u8();
                if tag % 2 == 0 {
                    let n = usize::from(inp.u16());
                    let msg = inp.bytes(n).to_vec();
                    let _ = ctrl.handle_send(&msg);
                } else {
                    let al = inp.u32();
                    if let Ok(out) = ctrl.handle_receive(al) {
                        assert!(out.len() <= al as usize);
                        match Message::decode(&out) {
                            Ok(Message::Success1(_)) => success1_sent = true,
                            Ok(Message::Challenge(_) | Message::Failure1(_)) => {}
                            other => panic!("controller sent {other:?}"),
                        }
                    }
                }
                if ctrl.is_authenticated() {
                    assert!(success1_sent, "authenticated before Success1");
                }
            }
            let _ = (ctrl.failure(), ctrl.negotiated(), ctrl.is_finished());
        }
        2 => {
            let t_id = inp.u16();
            let mut cfg = HostConfig::new(secret(1), HOSTNQN, SUBNQN, 0, t_id);
            if mode & 4 != 0 {
                cfg.ctrl_secret = Some(secret(2));
            }
            let mut host = HostAuth::with_rng(cfg, rng(mode));
            for _ in 0..16 {
                match host.next_step() {
                    Step::Send(out) => match Message::decode(&out) {
                        Ok(
                            m @ (Message::Negotiate(_)
                            | Message::Reply(_)
                            | Message::Success2(_)
                            | Message::Failure2(_)),
                        ) => assert_eq!(m.t_id(), t_id),
                        other => panic!("host sent {other:?}"),
                    },
                    Step::Receive(_) => {
                        let n = usize::from(inp.u16());
                        let data = inp.bytes(n).to_vec();
                        host.received(&data);
                    }
                    Step::Done | Step::Failed(_) => break,
                }
            }
        }
        _ => {
            let s = String::from_utf8_lossy(inp.0);
            if let Ok(k) = DhchapSecret::parse(&s) {
                assert_eq!(DhchapSecret::parse(&k.to_dhhc1()), Ok(k));
            }
        }
    }
});
