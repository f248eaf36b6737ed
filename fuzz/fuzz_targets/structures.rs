//! Arbitrary bytes into every structure decoder: no panic, and
//! decode → encode → decode is stable (the second encoding equals the first, and
//! fixed-layout structures keep every bit they model).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvmf_proto::cqe::{Cqe, CQE_SIZE};
use nvmf_proto::fabrics::{AuthCommand, ConnectCommand, ConnectData, PropertyCommand};
use nvmf_proto::identify::{
    decode_ns_list, encode_ns_list, IdentifyController, IdentifyNamespace, NsDescriptor,
    IDENTIFY_SIZE,
};
use nvmf_proto::log::{DiscoveryLog, DiscoveryLogEntry, ErrorLogEntry, FirmwareSlotLog, SmartLog};
use nvmf_proto::registers::{Cap, Cc, Csts};
use nvmf_proto::resv::{ReservationNotification, ReservationStatus, ResvCdw10, ResvKeys};
use nvmf_proto::sqe::{Sqe, SQE_SIZE};
use nvmf_proto::status::Status;

fuzz_target!(|b: &[u8]| {
    // SQE: all 64 bytes are kept.
    if let Some(s) = Sqe::from_slice(b) {
        assert_eq!(&s.encode()[..], &b[..SQE_SIZE]);
        let _ = (
            s.slba(),
            s.nlb(),
            s.fua(),
            s.data_direction(),
            s.log_page_params(),
        );
        let c = ConnectCommand::from_sqe(&s);
        assert_eq!(ConnectCommand::from_sqe(&c.to_sqe()), c);
        let p = PropertyCommand::from_sqe(&s);
        let _ = PropertyCommand::get_sqe(p.offset, p.eight_bytes);
        let a = AuthCommand::from_sqe(&s);
        assert_eq!(AuthCommand::from_sqe(&a.to_sqe(true)), a);
    }
    // CQE: all bits but the phase tag (bit 0 of the status field, reserved on fabrics).
    if let Some(a) = b.get(..CQE_SIZE) {
        let a: [u8; CQE_SIZE] = a.try_into().unwrap();
        let c = Cqe::decode(&a);
        let mut want = a;
        want[14] &= !1;
        assert_eq!(c.encode(), want);
        let _ = (
            c.result64(),
            c.status.name(),
            format!("{:?} {}", c.status, c.status),
        );
    }
    if let Some(v) = b.get(..2) {
        let f = u16::from_le_bytes([v[0], v[1]]);
        assert_eq!(Status::from_field(f).to_field(), f & !1);
    }
    if let Some(v) = b.get(..8) {
        let v = u64::from_le_bytes(v.try_into().unwrap());
        let cap = Cap::from_u64(v);
        assert_eq!(Cap::from_u64(cap.to_u64()), cap);
        let cc = Cc::from_u32(v as u32);
        assert_eq!(Cc::from_u32(cc.to_u32()), cc);
        let cs = Csts::from_u32(v as u32);
        assert_eq!(Csts::from_u32(cs.to_u32()), cs);
    }

    // Identify Controller. Strings that are not clean ASCII may change in the first
    // round (lossy UTF-8, cut to the field width, trailing spaces trimmed); after
    // that the value is a fixpoint, and a lossless first round gives stable bytes.
    let x = IdentifyController::decode(b);
    let e1 = x.encode();
    assert_eq!(e1.len(), IDENTIFY_SIZE);
    let x2 = IdentifyController::decode(&e1);
    let e2 = x2.encode();
    assert_eq!(
        IdentifyController::decode(&e2),
        x2,
        "Identify Controller: no fixpoint"
    );
    if x2 == x {
        assert_eq!(e2, e1, "Identify Controller encoding is not stable");
    }
    assert_eq!(
        (x2.ioccsz, x2.cntlid, x2.nn, x2.sgls),
        (x.ioccsz, x.cntlid, x.nn, x.sgls)
    );
    let _ = x.in_capsule_data_size();

    // Identify Namespace.
    let n = IdentifyNamespace::decode(b);
    let e1 = n.encode();
    let n2 = IdentifyNamespace::decode(&e1);
    assert_eq!(n2, n, "Identify Namespace does not round-trip");
    assert_eq!(n2.encode(), e1);
    let _ = n.block_size();

    // Namespace descriptor list: the list re-encodes as long as it fits the page.
    let l = NsDescriptor::decode_list(b);
    let e1 = NsDescriptor::encode_list(&l);
    let l2 = NsDescriptor::decode_list(&e1);
    assert!(l2.len() <= l.len());
    assert_eq!(&l[..l2.len()], &l2[..]);
    let size: usize = l
        .iter()
        .map(|d| {
            4 + match d {
                NsDescriptor::Eui64(_) => 8,
                NsDescriptor::Nguid(_) | NsDescriptor::Uuid(_) => 16,
                NsDescriptor::Csi(_) => 1,
            }
        })
        .sum();
    if size <= IDENTIFY_SIZE {
        assert_eq!(l2, l);
    }
    assert_eq!(NsDescriptor::encode_list(&l2), e1);

    // Namespace lists.
    let ids = decode_ns_list(b);
    let e1 = encode_ns_list(ids.iter().copied(), 0);
    let ids2 = decode_ns_list(&e1);
    assert_eq!(encode_ns_list(ids2.iter().copied(), 0), e1);

    // Discovery log.
    let d = DiscoveryLog::decode(b);
    assert!(d.entries.len() as u64 <= d.numrec);
    let e1 = d.encode();
    let d2 = DiscoveryLog::decode(&e1);
    let e2 = d2.encode();
    assert_eq!(DiscoveryLog::decode(&e2), d2, "discovery log: no fixpoint");
    if d2 == d {
        assert_eq!(e2, e1, "discovery log encoding is not stable");
    }
    assert_eq!(d2.entries.len(), d.entries.len());
    for (a, c) in d.entries.iter().zip(&d2.entries) {
        assert_eq!(
            (a.trtype, a.adrfam, a.subtype, a.portid, a.cntlid),
            (c.trtype, c.adrfam, c.subtype, c.portid, c.cntlid)
        );
        assert_eq!(a.tsas, c.tsas);
    }
    let e = DiscoveryLogEntry::decode(b);
    let e2 = DiscoveryLogEntry::decode(&e.encode());
    assert_eq!(DiscoveryLogEntry::decode(&e2.encode()), e2);

    // Connect data.
    if let Some(c) = ConnectData::decode(b) {
        let e1 = c.encode();
        let c2 = ConnectData::decode(&e1).unwrap();
        let e2 = c2.encode();
        assert_eq!(
            ConnectData::decode(&e2).unwrap(),
            c2,
            "Connect data: no fixpoint"
        );
        if c2 == c {
            assert_eq!(e2, e1, "Connect data encoding is not stable");
        }
        assert_eq!((c2.hostid, c2.cntlid), (c.hostid, c.cntlid));
    }

    // Log pages.
    let el = ErrorLogEntry::decode(b);
    assert_eq!(ErrorLogEntry::decode(&el.encode()), el);
    let sl = SmartLog::decode(b);
    assert_eq!(SmartLog::decode(&sl.encode()), sl);
    let fw = FirmwareSlotLog::decode(b);
    let fw2 = FirmwareSlotLog::decode(&fw.encode());
    assert_eq!(FirmwareSlotLog::decode(&fw2.encode()), fw2);

    // Reservations: status (both layouts), notification page, CDW10, keys.
    for eds in [false, true] {
        if let Some(r) = ReservationStatus::decode(b, eds) {
            assert!(r.regctl.len() <= usize::from(r.regctl_count));
            assert_eq!(ReservationStatus::decode(&r.encode(eds), eds), Some(r));
        }
    }
    if let Some(n) = ReservationNotification::decode(b) {
        assert_eq!(ReservationNotification::decode(&n.encode()), Some(n));
    }
    if let Some(v) = b.get(..4) {
        let c = ResvCdw10::from_u32(u32::from_le_bytes(v.try_into().unwrap()));
        assert_eq!(ResvCdw10::from_u32(c.to_u32()), c);
        let _ = (
            c.register_action(),
            c.acquire_action(),
            c.release_action(),
            c.cptpl(),
        );
    }
    if let Some(k) = ResvKeys::decode(b, true) {
        assert_eq!(ResvKeys::decode(&k.encode(), true), Some(k));
    }

    // NVMe/RDMA: CM private data (request, accept, reject) round trips, the
    // request checks never panic, and SGL1 parsed from any SQE re-encodes to
    // a descriptor that parses to the same value.
    use nvmf_proto::rdma::cm::{validate_request, CmAccept, CmLimits, CmReject, CmRequest};
    if let Ok(r) = CmRequest::decode(b) {
        assert_eq!(CmRequest::decode(&r.encode()), Ok(r));
    }
    if let Ok(a) = CmAccept::decode(b) {
        assert_eq!(CmAccept::decode(&a.encode()), Ok(a));
    }
    if let Ok(r) = CmReject::decode(b) {
        let _ = r.status.message();
        let _ = CmReject::decode(&r.encode());
    }
    let _ = validate_request(b, &CmLimits::default());
    if let Some(s) = Sqe::from_slice(b) {
        if let Ok(g) = nvmf_proto::rdma::RdmaSgl::from_descriptor(&s.sgl1) {
            assert_eq!(
                nvmf_proto::rdma::RdmaSgl::from_descriptor(&g.to_descriptor()),
                Ok(g)
            );
        }
    }
});
