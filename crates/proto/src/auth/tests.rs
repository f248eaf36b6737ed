//! HostAuth ↔ ControllerAuth: every hash × DH group, with and without a
//! controller secret, the failure paths, and decoders under arbitrary input.

use proptest::prelude::*;
use rand::SeedableRng;

use super::*;

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c-0b0a-0908-0706-050403020100";
const SUBNQN: &str = "nqn.2024-01.io.test:sub1";

fn rng(seed: u64) -> Box<dyn AuthRng> {
    Box::new(rand::rngs::StdRng::seed_from_u64(seed))
}

fn key(b: u8, len: usize, hh: Option<HashId>) -> DhchapSecret {
    DhchapSecret::new(&vec![b; len], hh).unwrap()
}

struct Pair {
    host: HostAuth,
    ctrl: ControllerAuth,
    /// Every message, in order, as (from host?, bytes).
    log: Vec<(bool, Vec<u8>)>,
}

impl Pair {
    fn new(hcfg: HostConfig, ccfg: ControllerConfig, seed: u64) -> Self {
        Self {
            host: HostAuth::with_rng(hcfg, rng(seed)),
            ctrl: ControllerAuth::with_rng(ccfg, rng(seed ^ 0xC0FFEE)),
            log: Vec::new(),
        }
    }

    /// Runs the exchange to its end: the host's final step.
    fn run(&mut self) -> Step {
        for _ in 0..16 {
            match self.host.next_step() {
                Step::Send(b) => {
                    let _ = self.ctrl.handle_send(&b);
                    self.log.push((true, b));
                }
                Step::Receive(al) => {
                    let d = self.ctrl.handle_receive(al).unwrap();
                    self.host.received(&d);
                    self.log.push((false, d));
                }
                s => return s,
            }
        }
        panic!("the exchange did not end");
    }

    fn names(&self) -> Vec<&'static str> {
        self.log
            .iter()
            .map(|(_, b)| Message::decode(b).unwrap().name())
            .collect()
    }
}

fn configs(
    hash: HashId,
    group: DhGroup,
    host_key: DhchapSecret,
    ctrl_key: Option<DhchapSecret>,
) -> (HostConfig, ControllerConfig) {
    let mut h = HostConfig::new(host_key.clone(), HOSTNQN, SUBNQN, 0, 3);
    h.ctrl_secret = ctrl_key.clone();
    let mut c = ControllerConfig::new(host_key, HOSTNQN, SUBNQN, 0);
    c.ctrl_secret = ctrl_key;
    c.hashes = vec![hash];
    c.dh_groups = vec![group];
    (h, c)
}

fn succeeds(hash: HashId, group: DhGroup, bidirectional: bool, seed: u64) {
    let host_key = key(0x11, 32, Some(HashId::Sha256));
    let ctrl_key = bidirectional.then(|| key(0x22, 48, Some(HashId::Sha384)));
    let (h, c) = configs(hash, group, host_key, ctrl_key);
    let mut p = Pair::new(h, c, seed);
    assert_eq!(p.run(), Step::Done, "{hash} {group} bidi={bidirectional}");
    assert!(p.ctrl.is_authenticated());
    assert!(p.ctrl.is_finished());
    assert_eq!(p.ctrl.failure(), None);
    assert_eq!(p.host.negotiated(), Some((hash, group)));
    assert_eq!(p.ctrl.negotiated(), Some((hash, group)));
    let mut expect = vec![
        "AUTH_Negotiate",
        "DH-HMAC-CHAP_Challenge",
        "DH-HMAC-CHAP_Reply",
        "DH-HMAC-CHAP_Success1",
    ];
    if bidirectional {
        expect.push("DH-HMAC-CHAP_Success2");
    }
    assert_eq!(p.names(), expect);
    // Sizes: the Challenge carries HL + DHVLEN bytes, the Reply 2 HL + DHVLEN.
    let (hl, dl) = (hash.digest_len(), group.value_len());
    assert_eq!(p.log[1].1.len(), 16 + hl + dl);
    assert_eq!(p.log[2].1.len(), 16 + 2 * hl + dl);
    assert_eq!(p.log[3].1.len(), 16 + if bidirectional { hl } else { 0 });
    // Every message carries the host's T_ID.
    for (_, b) in &p.log {
        assert_eq!(Message::decode(b).unwrap().t_id(), 3);
    }
}

#[test]
fn every_hash_with_the_null_and_2048_groups_both_ways() {
    let mut seed = 1;
    for hash in HashId::ALL {
        for group in [DhGroup::Null, DhGroup::Ffdhe2048] {
            for bidi in [false, true] {
                succeeds(hash, group, bidi, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn every_larger_group_once() {
    // Each group with a different hash and direction, so that together with the
    // test above every hash × group pairing of the code paths runs.
    succeeds(HashId::Sha384, DhGroup::Ffdhe3072, true, 20);
    succeeds(HashId::Sha512, DhGroup::Ffdhe4096, false, 21);
    succeeds(HashId::Sha256, DhGroup::Ffdhe6144, true, 22);
    succeeds(HashId::Sha512, DhGroup::Ffdhe8192, true, 23);
}

#[test]
fn every_hash_times_every_group() {
    // The full matrix, one direction each, alternating.
    let mut seed = 100;
    for hash in HashId::ALL {
        for group in DhGroup::ALL {
            succeeds(hash, group, seed % 2 == 0, seed);
            seed += 1;
        }
    }
}

#[test]
fn wrong_host_key_gets_failure1() {
    let (mut h, c) = configs(
        HashId::Sha256,
        DhGroup::Ffdhe2048,
        key(0x11, 32, None),
        None,
    );
    h.host_secret = key(0x12, 32, None);
    let mut p = Pair::new(h, c, 5);
    let f = AuthFailure::PeerReported(FailureReason::FAILED);
    assert_eq!(p.run(), Step::Failed(f));
    assert_eq!(
        p.ctrl.failure(),
        Some(AuthFailure::Refused(FailureReason::FAILED))
    );
    assert!(!p.ctrl.is_authenticated());
    assert!(p.ctrl.is_finished());
    assert_eq!(p.names().last(), Some(&"AUTH_Failure1"));
}

#[test]
fn same_key_other_transform_is_a_wrong_key() {
    let (mut h, c) = configs(HashId::Sha512, DhGroup::Null, key(0x11, 32, None), None);
    h.host_secret = key(0x11, 32, Some(HashId::Sha256));
    let mut p = Pair::new(h, c, 6);
    assert!(matches!(
        p.run(),
        Step::Failed(AuthFailure::PeerReported(FailureReason::FAILED))
    ));
}

#[test]
fn wrong_controller_key_gets_failure2() {
    for group in [DhGroup::Null, DhGroup::Ffdhe2048] {
        let (mut h, c) = configs(
            HashId::Sha384,
            group,
            key(0x11, 32, None),
            Some(key(0x22, 32, None)),
        );
        h.ctrl_secret = Some(key(0x23, 32, None));
        let mut p = Pair::new(h, c, 7);
        assert_eq!(
            p.run(),
            Step::Failed(AuthFailure::Refused(FailureReason::FAILED))
        );
        assert_eq!(
            p.names(),
            [
                "AUTH_Negotiate",
                "DH-HMAC-CHAP_Challenge",
                "DH-HMAC-CHAP_Reply",
                "DH-HMAC-CHAP_Success1",
                "AUTH_Failure2"
            ]
        );
        assert!(!p.ctrl.is_authenticated());
        assert!(p.ctrl.is_finished());
        assert_eq!(
            p.ctrl.failure(),
            Some(AuthFailure::PeerReported(FailureReason::FAILED))
        );
    }
}

#[test]
fn host_asks_for_bidirectional_but_controller_has_no_key() {
    let (mut h, c) = configs(HashId::Sha256, DhGroup::Null, key(0x11, 32, None), None);
    h.ctrl_secret = Some(key(0x22, 32, None));
    let mut p = Pair::new(h, c, 8);
    assert_eq!(
        p.run(),
        Step::Failed(AuthFailure::PeerReported(FailureReason::FAILED))
    );
}

#[test]
fn unsupported_hash_and_group() {
    let (mut h, c) = configs(HashId::Sha512, DhGroup::Null, key(0x11, 32, None), None);
    h.hashes = vec![HashId::Sha256, HashId::Sha384];
    let mut p = Pair::new(h, c, 9);
    assert_eq!(
        p.run(),
        Step::Failed(AuthFailure::PeerReported(FailureReason::HASH_UNUSABLE))
    );
    assert_eq!(
        p.ctrl.failure(),
        Some(AuthFailure::Refused(FailureReason::HASH_UNUSABLE))
    );
    assert_eq!(p.names(), ["AUTH_Negotiate", "AUTH_Failure1"]);

    let (mut h, c) = configs(
        HashId::Sha256,
        DhGroup::Ffdhe4096,
        key(0x11, 32, None),
        None,
    );
    h.dh_groups = vec![DhGroup::Null, DhGroup::Ffdhe2048];
    let mut p = Pair::new(h, c, 10);
    assert_eq!(
        p.run(),
        Step::Failed(AuthFailure::PeerReported(FailureReason::DHGROUP_UNUSABLE))
    );
}

#[test]
fn host_refuses_a_challenge_it_did_not_offer() {
    // A controller choosing outside the host's list (a hostile or buggy one).
    let (h, _) = configs(HashId::Sha256, DhGroup::Null, key(0x11, 32, None), None);
    let mut hcfg = h;
    hcfg.dh_groups = vec![DhGroup::Null];
    let mut host = HostAuth::with_rng(hcfg, rng(1));
    assert!(matches!(host.next_step(), Step::Send(_)));
    assert_eq!(host.next_step(), Step::Receive(RECEIVE_AL));
    let ch = messages::Challenge {
        t_id: 3,
        hash_id: 1,
        dh_group: 1,
        seqnum: 1,
        challenge: vec![0; 32],
        dh_value: vec![2; 256],
    };
    host.received(&Message::Challenge(ch.clone()).encode());
    let Step::Send(b) = host.next_step() else {
        panic!()
    };
    assert!(matches!(
        Message::decode(&b),
        Ok(Message::Failure2(f)) if f.reason == FailureReason::DHGROUP_UNUSABLE && f.t_id == 3
    ));
    assert_eq!(
        host.next_step(),
        Step::Failed(AuthFailure::Refused(FailureReason::DHGROUP_UNUSABLE))
    );

    // Wrong transaction ID: refused without a Failure2, as Linux.
    let (h, _) = configs(HashId::Sha256, DhGroup::Null, key(0x11, 32, None), None);
    let mut host = HostAuth::with_rng(h, rng(1));
    host.next_step();
    host.next_step();
    let mut ch = ch;
    ch.t_id = 4;
    ch.dh_group = 0;
    ch.dh_value.clear();
    host.received(&Message::Challenge(ch).encode());
    assert_eq!(
        host.next_step(),
        Step::Failed(AuthFailure::Refused(FailureReason::INCORRECT_MESSAGE))
    );
}

#[test]
fn controller_rejects_out_of_order_and_restarts_on_negotiate() {
    let (h, c) = configs(HashId::Sha256, DhGroup::Null, key(0x11, 32, None), None);
    let mut ctrl = ControllerAuth::with_rng(c.clone(), rng(2));
    // A Success2 first.
    assert_eq!(
        ctrl.handle_send(&Message::Success2(3).encode()),
        Err(AuthFailure::Refused(FailureReason::INCORRECT_MESSAGE))
    );
    let f = ctrl.handle_receive(4096).unwrap();
    assert!(matches!(
        Message::decode(&f),
        Ok(Message::Failure1(f)) if f.reason == FailureReason::INCORRECT_MESSAGE && f.reason_code == 1
    ));
    assert!(ctrl.is_finished());

    // A Negotiate starts over; a full exchange then succeeds on the same object.
    let mut host = HostAuth::with_rng(h, rng(3));
    let Step::Send(neg) = host.next_step() else {
        panic!()
    };
    assert_eq!(ctrl.handle_send(&neg), Ok(()));
    assert_eq!(ctrl.failure(), None);
    // AL too small for the Challenge: an error, nothing changes.
    assert_eq!(
        ctrl.handle_receive(40),
        Err(AllocationTooSmall { need: 48, al: 40 })
    );
    let d = ctrl.handle_receive(4096).unwrap();
    host.next_step();
    host.received(&d);
    let Step::Send(reply) = host.next_step() else {
        panic!()
    };
    // The Reply of another transaction ID.
    let mut bad = reply.clone();
    bad[4] ^= 1;
    let mut other = ControllerAuth::with_rng(c, rng(2));
    let _ = other.handle_send(&neg);
    let _ = other.handle_receive(4096);
    assert_eq!(
        other.handle_send(&bad),
        Err(AuthFailure::Refused(FailureReason::INCORRECT_PAYLOAD))
    );
    // The right one.
    assert_eq!(ctrl.handle_send(&reply), Ok(()));
    let s1 = ctrl.handle_receive(4096).unwrap();
    assert!(ctrl.is_authenticated());
    host.next_step();
    host.received(&s1);
    assert_eq!(host.next_step(), Step::Done);
    // A Receive after the end: Failure1 "failed", as nvmet.
    let f = ctrl.handle_receive(4096).unwrap();
    assert!(matches!(Message::decode(&f), Ok(Message::Failure1(_))));
    assert!(!ctrl.is_authenticated());
}

#[test]
fn controller_refuses_secure_concatenation_and_bad_descriptors() {
    let (_, c) = configs(HashId::Sha256, DhGroup::Null, key(0x11, 32, None), None);
    let neg = |sc_c: u8, protocols: Vec<messages::ProtocolDescriptor>| {
        Message::Negotiate(messages::Negotiate {
            t_id: 1,
            sc_c,
            protocols,
        })
        .encode()
    };
    let good = || messages::ProtocolDescriptor::dhchap(vec![1], vec![0]);
    for (bytes, reason) in [
        (neg(1, vec![good()]), FailureReason::CONCAT_MISMATCH),
        (neg(0, vec![]), FailureReason::INCORRECT_PAYLOAD),
        (neg(0, vec![good(), good()]), FailureReason::HASH_UNUSABLE),
        (
            neg(
                0,
                vec![messages::ProtocolDescriptor {
                    auth_id: 2,
                    hashes: vec![1],
                    dh_groups: vec![0],
                }],
            ),
            FailureReason::INCORRECT_PAYLOAD,
        ),
        (
            neg(
                0,
                vec![messages::ProtocolDescriptor::dhchap(vec![9], vec![0])],
            ),
            FailureReason::HASH_UNUSABLE,
        ),
        (
            neg(
                0,
                vec![messages::ProtocolDescriptor::dhchap(vec![1], vec![1])],
            ),
            FailureReason::DHGROUP_UNUSABLE,
        ),
        (vec![0, 0, 0], FailureReason::INCORRECT_PAYLOAD),
    ] {
        let mut ctrl = ControllerAuth::with_rng(c.clone(), rng(4));
        assert_eq!(ctrl.handle_send(&bytes), Err(AuthFailure::Refused(reason)));
        let f = ctrl.handle_receive(8).unwrap();
        assert_eq!(
            Message::decode(&f),
            Ok(Message::Failure1(messages::Failure {
                t_id: if bytes.len() >= 6 { 1 } else { 0 },
                reason_code: REASON_CODE_FAILED,
                reason
            }))
        );
    }
}

#[test]
fn host_command_failure_ends_the_transaction() {
    let (h, _) = configs(HashId::Sha256, DhGroup::Null, key(0x11, 32, None), None);
    let mut host = HostAuth::with_rng(h, rng(1));
    host.next_step();
    host.command_failed(0x4191);
    assert_eq!(host.next_step(), Step::Failed(AuthFailure::Command(0x4191)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoder_never_panics(b in proptest::collection::vec(any::<u8>(), 0..1200)) {
        if let Ok(m) = Message::decode(&b) {
            // What decodes re-encodes to something that decodes to the same.
            let again = m.encode();
            prop_assert_eq!(Message::decode(&again), Ok(m));
        }
    }

    #[test]
    fn decoder_never_panics_on_message_shaped_input(
        ty in 0u8..2, id in prop_oneof![0u8..5, 0xF0u8..0xF2],
        rest in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut b = vec![ty, id, 0, 0];
        b.extend(rest);
        let _ = Message::decode(&b);
    }

    #[test]
    fn controller_never_panics(msgs in proptest::collection::vec(
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200), any::<u32>()), 0..8)
    ) {
        let (_, c) = configs(HashId::Sha256, DhGroup::Null, key(0x11, 32, None), Some(key(2, 32, None)));
        let mut ctrl = ControllerAuth::with_rng(c, rng(1));
        for (send, mut bytes, al) in msgs {
            if send {
                // Aim at the headers of real messages half the time.
                if bytes.len() >= 2 && al % 2 == 0 {
                    bytes[0] %= 2;
                    bytes[1] %= 5;
                }
                let _ = ctrl.handle_send(&bytes);
            } else {
                let _ = ctrl.handle_receive(al);
            }
        }
    }

    #[test]
    fn host_never_panics(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6)) {
        let (h, _) = configs(HashId::Sha256, DhGroup::Null, key(0x11, 32, None), Some(key(2, 32, None)));
        let mut host = HostAuth::with_rng(h, rng(1));
        for m in msgs {
            let _ = host.next_step();
            host.received(&m);
        }
        let _ = host.next_step();
    }

    #[test]
    fn secret_parser_never_panics(s in ".{0,120}") {
        let _ = DhchapSecret::parse(&s);
        let _ = DhchapSecret::parse(&format!("DHHC-1:01:{s}"));
    }

    #[test]
    fn secret_round_trip(key in proptest::collection::vec(any::<u8>(), 32..=32), hh in 0u8..4) {
        let s = DhchapSecret::new(&key, HashId::from_u8(hh)).unwrap();
        prop_assert_eq!(DhchapSecret::parse(&s.to_dhhc1()).unwrap(), s);
    }
}
