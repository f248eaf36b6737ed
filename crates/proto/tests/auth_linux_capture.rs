//! Known answers from Linux: one capture (tcpdump on the guest's loopback) of
//! the Linux 6.12.117 host (Debian 13, nvme-cli 2.13) authenticating to Linux
//! nvmet with DH-HMAC-CHAP, made with /work/shared/linux-nvme-vm
//! (`run-vm.sh --kernel trixie`) and fixed keys from `nvme gen-dhchap-key
//! --secret=…`. Each transaction is replayed through our code with a random
//! source that hands out the kernel's own challenge values and sequence numbers:
//! our host must send the kernel host's bytes and our controller nvmet's bytes.
//!
//! Cases (qid 0 unless said): c1 hmac(sha256)/null, host key hh=00, one-way
//! (qid 0 and qid 1, T_ID 0 and 1); c2 hmac(sha384)/null, host key hh=02
//! (48 bytes), controller key hh=01 (32 bytes), bidirectional; c3
//! hmac(sha512)/null, host key hh=03, controller key hh=00 (64 bytes),
//! bidirectional; c4 hmac(sha256)/ffdhe2048 bidirectional (the DH private keys
//! are unknown, so only its layout and public values are checked).

use std::collections::VecDeque;

use nvmf_proto::auth::messages::{Challenge, Reply};
use nvmf_proto::auth::*;

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c-0b0a-0908-0706-050403020100";
const SUBNQN: &str = "nqn.2024-01.io.test:authcap";
const K1: &str = "DHHC-1:00:ERERERERERERERERERERERERERERERERERERERERERHYIEm8:";
const K2: &str =
    "DHHC-1:02:ixgPt9l5hDLzGixC8VMEFAAIrykjGviAZ+Pby78aB2yNgM3jorZfhCLuMDHjf7YM27mfXA==:";
const C2: &str = "DHHC-1:01:GiyftZaJuhdu+yKkTSqeGUD+K152ZtckFq2WubLwTynlGaH3:";
const K3: &str = "DHHC-1:03:fbaJca6pUadoDQHjvVLB8jOa51WjaxyoydvwRPTy3eHOotiDVtfN0niBCdC5eXm6Kb3CmeNUS0IH51aqYKSAm6SgZZM=:";
const C3: &str = "DHHC-1:00:VVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVY3C+eo=:";

const C1_Q0_NEGOTIATE: &str = concat!(
    "000000000000000101000306010203000000000000000000000000000000000000000000000000000000000102030405",
    "000000000000000000000000000000000000000000000000",
);

const C1_Q0_REPLY: &str = concat!(
    "0102000000002000000000006f73062874c935cf319a7cc41f7f660fb0f8a536154b1a43b73d665840f1b95190923561",
    "0000000000000000000000000000000000000000000000000000000000000000",
);

const C1_Q0_CHALLENGE: &str = "0101000000002000010000006e73062876effa2e514eabb94df11e756cb1dc24171004387ad0b038f274974e40ab72fa";

const C1_Q0_SUCCESS1: &str = "01030000000020000000000000000000";

const C1_Q1_NEGOTIATE: &str = concat!(
    "000000000100000101000306010203000000000000000000000000000000000000000000000000000000000102030405",
    "000000000000000000000000000000000000000000000000",
);

const C1_Q1_REPLY: &str = concat!(
    "01020000010020000000000071730628097252bc0e410bfb33b6a04ca2b22af7c2cbd107ec0615eb318316eac8fba21e",
    "0000000000000000000000000000000000000000000000000000000000000000",
);

const C1_Q1_CHALLENGE: &str = "01010000010020000100000070730628fd023808b332cf110cbdc68057aa93d810e47df723038f9a20f06e31314ee26d";

const C1_Q1_SUCCESS1: &str = "01030000010020000000000000000000";

const C2_Q0_NEGOTIATE: &str = concat!(
    "000000000000000101000306010203000000000000000000000000000000000000000000000000000000000102030405",
    "000000000000000000000000000000000000000000000000",
);

const C2_Q0_REPLY: &str = concat!(
    "01020000000030000100000075730628639610756123aa27a83e2a59563030dcc87d6a5a72ab8f4308877622f44c59c7",
    "6e99853020afd520e75fd5d69e7d7cb4c8874d471784e5fc78398059ad049f5f8c4496076419e1980a6662d55e399daf",
    "de5473689d6a23193135ce9c185d5dc7",
);

const C2_Q0_SUCCESS2: &str = "01040000000000000000000000000000";

const C2_Q0_CHALLENGE: &str = concat!(
    "010100000000300002000000747306282ac197f37a246bef390ae7cc7898fd82aeded699b6710a9f5dfa63e113c2a1f1",
    "11a396bb2fb8e830469c38c9d8eda9c6",
);

const C2_Q0_SUCCESS1: &str = concat!(
    "01030000000030000100000000000000b4a61a90d97bc7f95f748a4f04fc3a3733e3e503e513aaf14d19e937b8f4b5ed",
    "d33ee2cb7729567683ae5fce92b793fd",
);

const C3_Q0_NEGOTIATE: &str = concat!(
    "000000000000000101000306010203000000000000000000000000000000000000000000000000000000000102030405",
    "000000000000000000000000000000000000000000000000",
);

const C3_Q0_REPLY: &str = concat!(
    "0102000000004000010000007b7306289ed1379cfaf24b5285ffb7e88f4c2e8cefba13184d118324a24b6d0062fe5d0e",
    "0df214cc403f9ae375d65a3d05a7866d07b3a4157d55ac7d06914655bb67582bc25a53ab4974e73dbb4ec1ca3ffcd2be",
    "50f0bc28e83b9d9861b22271bff307efef7250207c7cfa7e3a3234624f1e9a352d9b056d7dc68b84f8f9e614f1aa75de",
);

const C3_Q0_SUCCESS2: &str = "01040000000000000000000000000000";

const C3_Q0_CHALLENGE: &str = concat!(
    "0101000000004000030000007a730628712eb1da56c8aa4186ff289d823963e62c9619ce0043a71f7d03ef1c2130d377",
    "917072c3f5fa03d52589dd5437d43e6019b8ac88109359319fd05371c53b9b66",
);

const C3_Q0_SUCCESS1: &str = concat!(
    "01030000000040000100000000000000ba28b58d02bd7a80cc8fa15c2057712178f756c6e58870e1a7bbbca84ace600f",
    "c4b9c0b4aae54e78e6661313b9b1ab62e396253eab4a5ce0b730e1f09e4e2bbf",
);

const C4_Q0_NEGOTIATE: &str = concat!(
    "000000000000000101000306010203000000000000000000000000000000000000000000000000000000000102030405",
    "000000000000000000000000000000000000000000000000",
);

const C4_Q0_REPLY: &str = concat!(
    "01020000000020000100000181730628d10b56dfcdca4f65ae2b485fb451bf2febbf5664a1c38a824faeaa4629270621",
    "58e4582b0d3f0512cc0bdbdca03fe1fcdd2cc56a1d0efbba3d46561172cbaee32baf79f5b95f93702b4a2414a2ca5619",
    "353b8f2398adc4cd12494d45e76b936ee463e26d5af6fec191c8f996763e7608289fe3d46748c1f8b9c20350d1622d31",
    "23b2adadb6d4ac5be53858d05a1e434476bb76a7e76a45e6b6885da6932ad1e446bb0b60029c9e2a838e0aa88f947cb5",
    "a5dcbf49b6cc84f1a0976d833a26991c35fafa3b5c11685d68de2b48e84b159a640b8346172c9d08e58ca19ca8d2a11b",
    "2a3c3af17d1988432321c0c8f91317956341c0e5577e4f4c387ef587a04c25d500c5a6319a3ebc812beb40bf70005407",
    "5cdc9ad48d81d76317c3a873b62d0c0358237e551fda2ac4900e59b607d537ae02393101b64a41ec7a91d217f462167e",
);

const C4_Q0_SUCCESS2: &str = "01040000000000000000000000000000";

const C4_Q0_CHALLENGE: &str = concat!(
    "01010000000020000101000180730628f5d431a9954545b71bf51c36c1edc0b69cba35f1bb0a375de828d1dda260d16a",
    "aa62f216ce079f3b01099cd31c598cc7228aa3acd76fc87aeaec71af21686de086c44b0c472c3c72d8e676a3c6c2d106",
    "c9ff96ae61df9a9e972dcf5d1bb87c0981e523e0214874e1b539687067d4c45a1ef9f3ad9e99868366cdf4c70ffd4fbf",
    "d42e2798662f0a4404ffbac854aa560e11f26dee53ee9b01fefc3b04db71ed8a01ab75aee3b6b274842fd8815d909d8e",
    "32cdca8a6af1dbcc47f15484d932652963e9406af5439aab7e8a32f23eb533b9bcbfef9e58362cba1d8d0548e8e0b2bb",
    "3c43dca614364005eb589b26e6781ba39bb976f7283dcc902ac244e828092a202cb2e9bb004188067703223778a7b1cb",
    "b1495760e4fbe0ab3d2b44f90ccdc7ec",
);

const C4_Q0_SUCCESS1: &str = "01030000000020000100000000000000bbcb6f3742f4c51e6914a182a3f2443a13f88f4259085c1bd1def2881c3ef6e4";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A "random" source that replays given bytes (the kernel's values).
struct Replay(VecDeque<u8>);

impl Replay {
    fn new(parts: &[&[u8]]) -> Box<Self> {
        Box::new(Self(parts.iter().flat_map(|p| p.iter().copied()).collect()))
    }
}

impl rand::RngCore for Replay {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest {
            *d = self.0.pop_front().expect("replay ran dry");
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl rand::CryptoRng for Replay {}

struct Capture {
    hash: HashId,
    t_id: u16,
    host_key: &'static str,
    ctrl_key: Option<&'static str>,
    negotiate: &'static str,
    challenge: &'static str,
    reply: &'static str,
    success1: &'static str,
    success2: Option<&'static str>,
}

fn challenge_of(c: &Capture) -> Challenge {
    match Message::decode(&hex(c.challenge)).unwrap() {
        Message::Challenge(ch) => ch,
        m => panic!("{m:?}"),
    }
}

fn reply_of(c: &Capture) -> Reply {
    match Message::decode(&hex(c.reply)).unwrap() {
        Message::Reply(r) => r,
        m => panic!("{m:?}"),
    }
}

/// Our host, given the kernel host's C2 and S2, sends the kernel host's bytes.
fn replay_host(c: &Capture) {
    let reply = reply_of(c);
    let mut cfg = HostConfig::new(
        DhchapSecret::parse(c.host_key).unwrap(),
        HOSTNQN,
        SUBNQN,
        0,
        c.t_id,
    );
    cfg.ctrl_secret = c.ctrl_key.map(|k| DhchapSecret::parse(k).unwrap());
    let c2 = reply.challenge.clone().unwrap_or_default();
    let rng = Replay::new(&[&c2, &reply.seqnum.to_le_bytes()]);
    let mut host = HostAuth::with_rng(cfg, rng);
    assert_eq!(host.next_step(), Step::Send(hex(c.negotiate)), "Negotiate");
    assert_eq!(host.next_step(), Step::Receive(4096), "the kernel's AL too");
    host.received(&hex(c.challenge));
    let Step::Send(ours) = host.next_step() else {
        panic!("no Reply")
    };
    let theirs = hex(c.reply);
    if c.ctrl_key.is_some() {
        assert_eq!(ours, theirs, "Reply");
    } else {
        // One-way: Linux 6.12 still sends a non-zero S2 (CVALID clear); we send 0.
        assert_eq!(ours[..12], theirs[..12]);
        assert_eq!(ours[12..16], [0; 4]);
        assert_eq!(ours[16..], theirs[16..], "R1");
    }
    assert_eq!(host.next_step(), Step::Receive(4096));
    host.received(&hex(c.success1));
    if let Some(s2) = c.success2 {
        assert_eq!(host.next_step(), Step::Send(hex(s2)), "Success2");
    }
    assert_eq!(host.next_step(), Step::Done);
    assert_eq!(host.negotiated(), Some((c.hash, DhGroup::Null)));
}

/// Our controller, given nvmet's S1 and C1, accepts the kernel host's Reply and
/// answers nvmet's Challenge and Success1 bytes.
fn replay_controller(c: &Capture) {
    let ch = challenge_of(c);
    let mut cfg =
        ControllerConfig::new(DhchapSecret::parse(c.host_key).unwrap(), HOSTNQN, SUBNQN, 0);
    cfg.ctrl_secret = c.ctrl_key.map(|k| DhchapSecret::parse(k).unwrap());
    cfg.hashes = vec![c.hash];
    cfg.dh_groups = vec![DhGroup::Null];
    let rng = Replay::new(&[&ch.seqnum.to_le_bytes(), &ch.challenge]);
    let mut ctrl = ControllerAuth::with_rng(cfg, rng);
    assert_eq!(ctrl.handle_send(&hex(c.negotiate)), Ok(()));
    assert_eq!(
        ctrl.handle_receive(4096).unwrap(),
        hex(c.challenge),
        "Challenge"
    );
    assert_eq!(
        ctrl.handle_send(&hex(c.reply)),
        Ok(()),
        "the kernel's R1 verifies"
    );
    assert_eq!(
        ctrl.handle_receive(4096).unwrap(),
        hex(c.success1),
        "Success1"
    );
    if let Some(s2) = c.success2 {
        assert!(!ctrl.is_authenticated());
        assert_eq!(ctrl.handle_send(&hex(s2)), Ok(()));
    }
    assert!(ctrl.is_authenticated());
}

fn captures() -> Vec<Capture> {
    vec![
        Capture {
            hash: HashId::Sha256,
            t_id: 0,
            host_key: K1,
            ctrl_key: None,
            negotiate: C1_Q0_NEGOTIATE,
            challenge: C1_Q0_CHALLENGE,
            reply: C1_Q0_REPLY,
            success1: C1_Q0_SUCCESS1,
            success2: None,
        },
        Capture {
            hash: HashId::Sha256,
            t_id: 1,
            host_key: K1,
            ctrl_key: None,
            negotiate: C1_Q1_NEGOTIATE,
            challenge: C1_Q1_CHALLENGE,
            reply: C1_Q1_REPLY,
            success1: C1_Q1_SUCCESS1,
            success2: None,
        },
        Capture {
            hash: HashId::Sha384,
            t_id: 0,
            host_key: K2,
            ctrl_key: Some(C2),
            negotiate: C2_Q0_NEGOTIATE,
            challenge: C2_Q0_CHALLENGE,
            reply: C2_Q0_REPLY,
            success1: C2_Q0_SUCCESS1,
            success2: Some(C2_Q0_SUCCESS2),
        },
        Capture {
            hash: HashId::Sha512,
            t_id: 0,
            host_key: K3,
            ctrl_key: Some(C3),
            negotiate: C3_Q0_NEGOTIATE,
            challenge: C3_Q0_CHALLENGE,
            reply: C3_Q0_REPLY,
            success1: C3_Q0_SUCCESS1,
            success2: Some(C3_Q0_SUCCESS2),
        },
    ]
}

#[test]
fn our_host_sends_the_linux_hosts_bytes() {
    for c in captures() {
        replay_host(&c);
    }
}

#[test]
fn our_controller_sends_nvmets_bytes_and_accepts_the_linux_host() {
    for c in captures() {
        replay_controller(&c);
    }
}

#[test]
fn responses_match_the_kernels() {
    for c in captures() {
        let ch = challenge_of(&c);
        let r = reply_of(&c);
        let host_key = DhchapSecret::parse(c.host_key).unwrap();
        let r1 = response::host_response(
            c.hash,
            &host_key.transformed(HOSTNQN),
            &ch.challenge,
            ch.seqnum,
            c.t_id,
            0,
            HOSTNQN,
            SUBNQN,
        );
        assert_eq!(r1.as_slice(), r.response.as_slice());
        if let Some(k) = c.ctrl_key {
            let s1 = match Message::decode(&hex(c.success1)).unwrap() {
                Message::Success1(s) => s,
                m => panic!("{m:?}"),
            };
            let r2 = response::controller_response(
                c.hash,
                &DhchapSecret::parse(k).unwrap().transformed(SUBNQN),
                r.challenge.as_deref().unwrap(),
                r.seqnum,
                c.t_id,
                SUBNQN,
                HOSTNQN,
            );
            assert_eq!(Some(r2.to_vec()), s1.response);
        }
    }
}

#[test]
fn ffdhe2048_exchange_layout_and_public_values() {
    let ch = match Message::decode(&hex(C4_Q0_CHALLENGE)).unwrap() {
        Message::Challenge(c) => c,
        m => panic!("{m:?}"),
    };
    assert_eq!((ch.hash_id, ch.dh_group), (1, 1));
    assert_eq!((ch.challenge.len(), ch.dh_value.len()), (32, 256));
    let r = match Message::decode(&hex(C4_Q0_REPLY)).unwrap() {
        Message::Reply(r) => r,
        m => panic!("{m:?}"),
    };
    assert_eq!((r.response.len(), r.dh_value.len()), (32, 256));
    assert!(r.challenge.is_some() && r.seqnum != 0);
    // Both kernel public values are valid ffdhe2048 values for us.
    let mine = ffdhe::DhKeyPair::generate(DhGroup::Ffdhe2048, &mut rand::rngs::OsRng).unwrap();
    assert!(mine.shared_secret(&ch.dh_value).is_ok());
    assert!(mine.shared_secret(&r.dh_value).is_ok());
    assert_eq!(hex(C4_Q0_NEGOTIATE), hex(C1_Q0_NEGOTIATE));
    assert_eq!(
        Message::decode(&hex(C4_Q0_SUCCESS2)),
        Ok(Message::Success2(0))
    );
    assert!(matches!(
        Message::decode(&hex(C4_Q0_SUCCESS1)),
        Ok(Message::Success1(s)) if s.response.as_ref().map(Vec::len) == Some(32)
    ));
}

#[test]
fn a_wrong_r1_from_the_capture_is_refused() {
    let c = &captures()[2];
    let ch = challenge_of(c);
    let mut cfg = ControllerConfig::new(DhchapSecret::parse(K1).unwrap(), HOSTNQN, SUBNQN, 0);
    cfg.hashes = vec![c.hash];
    let rng = Replay::new(&[&ch.seqnum.to_le_bytes(), &ch.challenge]);
    let mut ctrl = ControllerAuth::with_rng(cfg, rng);
    ctrl.handle_send(&hex(c.negotiate)).unwrap();
    ctrl.handle_receive(4096).unwrap();
    assert_eq!(
        ctrl.handle_send(&hex(c.reply)),
        Err(AuthFailure::Refused(FailureReason::FAILED))
    );
}
