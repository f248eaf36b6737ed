//! Protocol violations: each must end the connection with the Fatal Error Status
//! and Fatal Error Information that NVMe/TCP 1.0 §3.6.2.3 (and FreeBSD's
//! `nvmf_tcp_validate_pdu_header`) name, or, where the spec says so, close
//! silently or fail only the command. Nothing here may panic or allocate what a
//! hostile PLEN asks for.

use bytes::Bytes;
use nvmf_proto::cqe::Cqe;
use nvmf_proto::sqe::{io_opcode, SglDescriptor, Sqe};
use nvmf_proto::status::Status;
use nvmf_proto::tcp::error::FatalError;
use nvmf_proto::tcp::pdu::{flags, DataPdu, IcReq, IcResp, R2t, TermReq, CMD_HLEN};
use nvmf_proto::tcp::{
    ControllerEvent, ControllerQueue, ControllerQueueConfig, Decoder, DecoderConfig, Digests, Fes,
    HostData, HostEvent, HostQueue, HostQueueConfig, Pdu, PduEncoder, Side,
};

const BOTH: Digests = Digests {
    header: true,
    data: true,
};

// ---------------------------------------------------------------------------------
// Helpers.

fn icreq(pfv: u16, hpda: u8, digests: Digests) -> Vec<u8> {
    PduEncoder::default()
        .to_bytes(&Pdu::IcReq(IcReq {
            pfv,
            hpda,
            digests,
            maxr2t: 0,
        }))
        .to_vec()
}

fn icresp(digests: Digests, maxh2cdata: u32) -> Vec<u8> {
    PduEncoder::default()
        .to_bytes(&Pdu::IcResp(IcResp {
            pfv: 0,
            cpda: 0,
            digests,
            maxh2cdata,
        }))
        .to_vec()
}

fn enc(d: Digests) -> PduEncoder {
    PduEncoder::negotiated(d, 0)
}

fn read_sqe(cid: u16, len: u32) -> Sqe {
    let mut s = Sqe::rw(io_opcode::READ, 1, 0, 1, false);
    s.cid = cid;
    s.sgl1 = SglDescriptor::transport(len);
    s
}

fn write_sqe(cid: u16, len: u32) -> Sqe {
    let mut s = Sqe::rw(io_opcode::WRITE, 1, 0, 1, false);
    s.cid = cid;
    s.sgl1 = SglDescriptor::transport(len);
    s
}

fn capsule(e: PduEncoder, sqe: Sqe, data: &[u8]) -> Vec<u8> {
    e.to_bytes(&Pdu::CapsuleCmd {
        sqe,
        data: Bytes::copy_from_slice(data),
    })
    .to_vec()
}

fn h2c_data(e: PduEncoder, cid: u16, ttag: u16, datao: u32, data: &[u8], last: bool) -> Vec<u8> {
    e.to_bytes(&Pdu::H2CData(DataPdu {
        cccid: cid,
        ttag,
        datao,
        datal: data.len() as u32,
        last,
        success: false,
        data: Bytes::copy_from_slice(data),
    }))
    .to_vec()
}

/// A controller queue past ICReq/ICResp with the given digests.
fn ready_controller(cfg: ControllerQueueConfig, d: Digests) -> ControllerQueue {
    let mut c = ControllerQueue::new(cfg);
    c.receive(&icreq(0, 0, d));
    assert!(matches!(
        c.poll_event(),
        Some(ControllerEvent::Connected { .. })
    ));
    c.tx().take_all();
    c
}

/// A host queue past ICReq/ICResp.
fn ready_host(d: Digests) -> HostQueue {
    let mut h = HostQueue::new(HostQueueConfig {
        digests: d,
        ..HostQueueConfig::default()
    });
    h.tx().take_all();
    h.receive(&icresp(d, 8192));
    assert!(matches!(h.poll_event(), Some(HostEvent::Connected { .. })));
    h
}

/// Decodes the termination request at the end of `tx` (sent before negotiation
/// rules apply: no digests).
fn last_term(tx: &[u8], side: Side) -> TermReq {
    let mut off = 0;
    let mut last = None;
    while off + 8 <= tx.len() {
        let plen = u32::from_le_bytes(tx[off + 4..off + 8].try_into().unwrap()) as usize;
        last = Some(&tx[off..off + plen]);
        off += plen;
    }
    let pdu = last.expect("nothing sent");
    let mut d = Decoder::new(side, DecoderConfig::default());
    d.feed(pdu);
    match d.next_pdu().unwrap().unwrap().pdu {
        Pdu::C2HTermReq(t) | Pdu::H2CTermReq(t) => t,
        p => panic!("expected a TermReq, got {p:?}"),
    }
}

/// Runs the controller on `input` and returns (FES, FEI, TermReq error data) of the
/// termination, checking that the event and the C2HTermReq agree.
fn controller_fails(c: &mut ControllerQueue, input: &[u8]) -> (Option<Fes>, u32, Bytes) {
    c.receive(input);
    let mut fes_ev = None;
    let mut terminated = false;
    while let Some(ev) = c.poll_event() {
        if let ControllerEvent::Terminated { fes, .. } = ev {
            fes_ev = fes;
            terminated = true;
        }
    }
    assert!(terminated, "the connection did not end");
    assert!(c.is_terminated());
    let tx = c.tx().take_all();
    match fes_ev {
        Some(f) => {
            let t = last_term(&tx, Side::Host);
            assert_eq!(t.fes, f);
            assert!(t.data.len() <= 128);
            assert!(24 + t.data.len() <= 152);
            (Some(f), t.fei, t.data)
        }
        None => {
            assert!(tx.is_empty(), "a silent close sent {tx:02x?}");
            (None, 0, Bytes::new())
        }
    }
}

fn host_fails(h: &mut HostQueue, input: &[u8]) -> (Option<Fes>, u32) {
    h.receive(input);
    let mut fes_ev = None;
    let mut terminated = false;
    while let Some(ev) = h.poll_event() {
        if let HostEvent::Terminated { fes, .. } = ev {
            fes_ev = fes;
            terminated = true;
        }
    }
    assert!(terminated, "the connection did not end");
    let tx = h.tx().take_all();
    match fes_ev {
        Some(f) => {
            let t = last_term(&tx, Side::Controller);
            assert_eq!(t.fes, f);
            (Some(f), t.fei)
        }
        None => {
            assert!(tx.is_empty());
            (None, 0)
        }
    }
}

fn decoder_err(side: Side, negotiated: Option<DecoderConfig>, input: &[u8]) -> FatalError {
    let mut d = Decoder::new(side, DecoderConfig::default());
    if let Some(c) = negotiated {
        d.set_negotiated(c);
    }
    d.feed(input);
    loop {
        match d.next_pdu() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error: decoder waits for more bytes"),
            Err(e) => return e,
        }
    }
}

/// A 24-byte PDU of type `t` with HLEN = PLEN = 24 and zero fields.
fn hdr24(t: u8) -> Vec<u8> {
    let mut v = vec![t, 0, 24, 0, 24, 0, 0, 0];
    v.resize(24, 0);
    v
}

fn plain() -> DecoderConfig {
    DecoderConfig::default()
}

// ---------------------------------------------------------------------------------
// Common header checks (the decoder).

#[test]
fn unknown_pdu_type_is_fes1_fei0() {
    for t in [0x08u8, 0x0a, 0x0b, 0x10, 0x7f, 0xff] {
        for side in [Side::Controller, Side::Host] {
            for negotiated in [None, Some(plain())] {
                let e = decoder_err(side, negotiated, &hdr24(t));
                assert_eq!(
                    (e.fes, e.fei),
                    (Some(Fes::InvalidHeaderField), 0),
                    "type {t:#x}"
                );
                // The error data is the offending header.
                assert_eq!(e.header[0], t);
            }
        }
    }
}

#[test]
fn wrong_direction_is_fes1_fei0() {
    // A controller receives only even types, a host only odd ones.
    for t in [0x01u8, 0x03, 0x05, 0x07, 0x09] {
        let e = decoder_err(Side::Controller, Some(plain()), &hdr24(t));
        assert_eq!(
            (e.fes, e.fei),
            (Some(Fes::InvalidHeaderField), 0),
            "type {t:#x}"
        );
    }
    for t in [0x00u8, 0x02, 0x04, 0x06] {
        let e = decoder_err(Side::Host, Some(plain()), &hdr24(t));
        assert_eq!(
            (e.fes, e.fei),
            (Some(Fes::InvalidHeaderField), 0),
            "type {t:#x}"
        );
    }
    // Through the queue: an R2T sent to a controller.
    let mut c = ready_controller(ControllerQueueConfig::default(), Digests::default());
    let r2t = enc(Digests::default()).to_bytes(&Pdu::R2T(R2t {
        cccid: 1,
        ttag: 0,
        r2to: 0,
        r2tl: 4096,
    }));
    let (fes, fei, data) = controller_fails(&mut c, &r2t);
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 0));
    assert_eq!(
        &data[..],
        &r2t[..8],
        "TermReq carries the offending common header (judged on its 8 bytes)"
    );
}

#[test]
fn capsule_before_icreq_is_fes2() {
    let mut c = ControllerQueue::new(ControllerQueueConfig::default());
    let (fes, fei, _) = controller_fails(
        &mut c,
        &capsule(PduEncoder::default(), read_sqe(1, 512), &[]),
    );
    assert_eq!((fes, fei), (Some(Fes::PduSequenceError), 0));
    // And on the host: a CapsuleResp before ICResp.
    let mut h = HostQueue::new(HostQueueConfig::default());
    h.tx().take_all();
    let resp = PduEncoder::default().to_bytes(&Pdu::CapsuleResp(Cqe::new(1, Status::SUCCESS)));
    assert_eq!(host_fails(&mut h, &resp), (Some(Fes::PduSequenceError), 0));
}

#[test]
fn second_icreq_is_fes1() {
    let mut c = ready_controller(ControllerQueueConfig::default(), Digests::default());
    let (fes, fei, _) = controller_fails(&mut c, &icreq(0, 0, Digests::default()));
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 0));
    let mut h = ready_host(Digests::default());
    assert_eq!(
        host_fails(&mut h, &icresp(Digests::default(), 8192)),
        (Some(Fes::InvalidHeaderField), 0)
    );
}

#[test]
fn bad_hlen_is_fei2() {
    let mut p = capsule(enc(Digests::default()), read_sqe(1, 512), &[]);
    for hlen in [0u8, 8, 71, 73, 128, 255] {
        p[2] = hlen;
        let e = decoder_err(Side::Controller, Some(plain()), &p);
        assert_eq!(
            (e.fes, e.fei),
            (Some(Fes::InvalidHeaderField), 2),
            "HLEN {hlen}"
        );
    }
    // ICReq with HLEN 24.
    let mut q = icreq(0, 0, Digests::default());
    q[2] = 24;
    let mut c = ControllerQueue::new(ControllerQueueConfig::default());
    let (fes, fei, _) = controller_fails(&mut c, &q);
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 2));
}

#[test]
fn bad_pdo_is_fei3() {
    let e0 = enc(Digests::default());
    // PDO inside the header.
    let mut p = capsule(e0, write_sqe(1, 0), &[1u8; 64]);
    p[3] = 64;
    let e = decoder_err(Side::Controller, Some(plain()), &p);
    assert_eq!((e.fes, e.fei), (Some(Fes::InvalidHeaderField), 3));
    // PDO on a PDU type that carries no data (CapsuleResp, R2T at the host).
    let mut r = e0
        .to_bytes(&Pdu::CapsuleResp(Cqe::new(1, Status::SUCCESS)))
        .to_vec();
    r[3] = 24;
    let e = decoder_err(Side::Host, Some(plain()), &r);
    assert_eq!((e.fes, e.fei), (Some(Fes::InvalidHeaderField), 3));
    // PDO not a multiple of the receiver's alignment: the controller asked for
    // CPDA 3 (16 bytes); the host put data at 76 (= 72 + 4).
    let cfg = ControllerQueueConfig {
        cpda: 3,
        ..ControllerQueueConfig::default()
    };
    let mut c = ready_controller(cfg, Digests::default());
    let mut unaligned = capsule(
        PduEncoder::negotiated(Digests::default(), 0),
        write_sqe(1, 0),
        &[7u8; 16],
    );
    assert_eq!(unaligned[3], 72);
    unaligned[3] = 76;
    unaligned.extend_from_slice(&[0; 4]);
    let plen = unaligned.len() as u32;
    unaligned[4..8].copy_from_slice(&plen.to_le_bytes());
    let (fes, fei, _) = controller_fails(&mut c, &unaligned);
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 3));
    // H2CData with PDO 0 (data PDUs must carry data).
    let mut d = h2c_data(e0, 1, 0, 0, &[1; 8], true);
    d[3] = 0;
    d[4..8].copy_from_slice(&24u32.to_le_bytes());
    d.truncate(24);
    let e = decoder_err(Side::Controller, Some(plain()), &d);
    assert_eq!((e.fes, e.fei), (Some(Fes::InvalidHeaderField), 3));
}

/// PLEN that contradicts the header, from too small up to 0xFFFFFFFF: a TermReq,
/// and the decoder's buffer stays at its initial size.
#[test]
fn bad_plen_and_no_allocation() {
    let e0 = enc(Digests::default());
    let base = capsule(e0, read_sqe(1, 512), &[]);
    let with_data = capsule(e0, write_sqe(1, 0), &[9u8; 100]);
    let h2c = h2c_data(e0, 1, 0, 0, &[1; 8], true);
    let resp = e0
        .to_bytes(&Pdu::CapsuleResp(Cqe::new(1, Status::SUCCESS)))
        .to_vec();
    let cases: Vec<(Side, &[u8], u32, Fes)> = vec![
        // No data: PLEN must equal HLEN (+ HDGST).
        (Side::Controller, &base, 0, Fes::InvalidHeaderField),
        (Side::Controller, &base, 8, Fes::InvalidHeaderField),
        (Side::Controller, &base, 71, Fes::InvalidHeaderField),
        (Side::Controller, &base, 73, Fes::InvalidHeaderField),
        (
            Side::Controller,
            &base,
            0xFFFF_FFFF,
            Fes::InvalidHeaderField,
        ),
        (Side::Host, &resp, 23, Fes::InvalidHeaderField),
        (Side::Host, &resp, 0xFFFF_FFFF, Fes::InvalidHeaderField),
        // With data: PLEN must leave data after PDO, and no more than the limits.
        (Side::Controller, &with_data, 72, Fes::InvalidHeaderField),
        (Side::Controller, &with_data, 50, Fes::InvalidHeaderField),
        (
            Side::Controller,
            &with_data,
            72 + 8192 + 1,
            Fes::DataLimitExceeded,
        ),
        (
            Side::Controller,
            &with_data,
            0x8000_0000,
            Fes::DataLimitExceeded,
        ),
        (
            Side::Controller,
            &with_data,
            0xFFFF_FFFF,
            Fes::DataLimitExceeded,
        ),
        (Side::Controller, &h2c, 24, Fes::InvalidHeaderField),
        (Side::Controller, &h2c, 0xFFFF_FFFF, Fes::DataLimitExceeded),
    ];
    for (side, pdu, plen, want) in cases {
        let mut p = pdu.to_vec();
        p[4..8].copy_from_slice(&plen.to_le_bytes());
        let mut d = Decoder::new(side, DecoderConfig::default());
        d.set_negotiated(DecoderConfig::default());
        let cap0 = d.buffer_mut().capacity();
        // Only the header (at most 128 bytes): no data is needed to judge it.
        d.feed(&p[..p.len().min(72)]);
        let e = d.next_pdu().expect_err(&format!("PLEN {plen:#x}"));
        assert_eq!(e.fes, Some(want), "PLEN {plen:#x}: {e}");
        assert_eq!(e.fei, 4, "PLEN {plen:#x}");
        assert!(
            d.buffer_mut().capacity() <= cap0.max(64 * 1024),
            "the decoder allocated for PLEN {plen:#x}"
        );
    }
    // A TermReq with PLEN 0xFFFFFFFF closes silently, without allocating.
    let mut d = Decoder::new(Side::Controller, DecoderConfig::default());
    d.feed(&[0x02, 0, 24, 0, 0xff, 0xff, 0xff, 0xff]);
    d.feed(&[0; 16]);
    let e = d.next_pdu().unwrap_err();
    assert_eq!(e.fes, None);
    assert!(d.buffer_mut().capacity() <= 64 * 1024);
    // An ICReq with PLEN 0xFFFFFFFF before negotiation.
    let mut q = icreq(0, 0, Digests::default());
    q[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut c = ControllerQueue::new(ControllerQueueConfig::default());
    let (fes, fei, _) = controller_fails(&mut c, &q);
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 4));
}

/// A PDU whose header is valid and whose PLEN is large but within the limits only
/// grows the buffer to PLEN, once the header is checked.
#[test]
fn buffer_grows_only_to_a_validated_plen() {
    let mut d = Decoder::new(
        Side::Controller,
        DecoderConfig {
            max_icd: 1 << 20,
            ..DecoderConfig::default()
        },
    );
    d.set_negotiated(DecoderConfig {
        max_icd: 1 << 20,
        ..DecoderConfig::default()
    });
    let p = capsule(
        enc(Digests::default()),
        write_sqe(1, 0),
        &vec![3u8; 1 << 20],
    );
    d.feed(&p[..100]);
    assert!(d.next_pdu().unwrap().is_none());
    assert!(d.buffer_mut().capacity() >= p.len());
    assert!(d.buffer_mut().capacity() <= 2 * p.len());
    assert_eq!(d.wanted(), p.len() - 100);
}

#[test]
fn header_digest_mismatch_is_fes3() {
    let mut c = ready_controller(ControllerQueueConfig::default(), BOTH);
    let mut p = capsule(enc(BOTH), read_sqe(1, 512), &[]);
    p[72] ^= 1;
    let (fes, _, data) = controller_fails(&mut c, &p);
    assert_eq!(fes, Some(Fes::HeaderDigestError));
    assert_eq!(&data[..], &p[..72]);
    // A changed header byte with the old digest.
    let mut c = ready_controller(ControllerQueueConfig::default(), BOTH);
    let mut p = capsule(enc(BOTH), read_sqe(1, 512), &[]);
    p[20] ^= 0x80;
    let (fes, _, _) = controller_fails(&mut c, &p);
    assert_eq!(fes, Some(Fes::HeaderDigestError));
    // At the host.
    let mut h = ready_host(BOTH);
    let cid = h
        .submit(read_sqe(0, 512), HostData::FromController(512))
        .unwrap();
    let mut r = enc(BOTH)
        .to_bytes(&Pdu::CapsuleResp(Cqe::new(cid, Status::SUCCESS)))
        .to_vec();
    r[24] ^= 0xff;
    assert_eq!(host_fails(&mut h, &r).0, Some(Fes::HeaderDigestError));
}

#[test]
fn digest_flags_must_match_negotiation_fei1() {
    // HDGSTF missing when header digests are on.
    let mut c = ready_controller(ControllerQueueConfig::default(), BOTH);
    let p = capsule(enc(Digests::default()), read_sqe(1, 512), &[]);
    let (fes, fei, _) = controller_fails(&mut c, &p);
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 1));
    // HDGSTF set when they are off.
    let mut c = ready_controller(ControllerQueueConfig::default(), Digests::default());
    let p = capsule(enc(BOTH), read_sqe(1, 512), &[]);
    let (fes, fei, _) = controller_fails(&mut c, &p);
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 1));
    // DDGSTF missing on a PDU with data when data digests are on.
    let hd_only = Digests {
        header: true,
        data: false,
    };
    let mut c = ready_controller(ControllerQueueConfig::default(), BOTH);
    let p = capsule(enc(hd_only), write_sqe(1, 0), &[5; 32]);
    let (fes, fei, _) = controller_fails(&mut c, &p);
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 1));
    // Flags a PDU type does not define: LAST_PDU on a capsule, SUCCESS on H2CData,
    // SUCCESS without LAST_PDU on C2HData.
    let mut p = capsule(enc(Digests::default()), read_sqe(1, 512), &[]);
    p[1] |= flags::LAST_PDU;
    let e = decoder_err(Side::Controller, Some(plain()), &p);
    assert_eq!((e.fes, e.fei), (Some(Fes::InvalidHeaderField), 1));
    let mut d = h2c_data(enc(Digests::default()), 1, 0, 0, &[1; 8], true);
    d[1] |= flags::SUCCESS;
    let e = decoder_err(Side::Controller, Some(plain()), &d);
    assert_eq!((e.fes, e.fei), (Some(Fes::InvalidHeaderField), 1));
    let mut h = ready_host(Digests::default());
    let cid = h
        .submit(read_sqe(0, 8), HostData::FromController(8))
        .unwrap();
    let mut c2h = enc(Digests::default())
        .to_bytes(&Pdu::C2HData(DataPdu {
            cccid: cid,
            ttag: 0,
            datao: 0,
            datal: 8,
            last: false,
            success: false,
            data: Bytes::from_static(&[1; 8]),
        }))
        .to_vec();
    c2h[1] |= flags::SUCCESS;
    assert_eq!(host_fails(&mut h, &c2h), (Some(Fes::InvalidHeaderField), 1));
}

#[test]
fn oversized_or_short_termreq_closes_silently() {
    for plen in [0u32, 8, 23, 153, 1000, u32::MAX] {
        let mut t = vec![0x02u8, 0, 24, 0];
        t.extend_from_slice(&plen.to_le_bytes());
        t.extend_from_slice(&[0; 16]);
        let mut c = ready_controller(ControllerQueueConfig::default(), Digests::default());
        let (fes, _, _) = controller_fails(&mut c, &t);
        assert_eq!(fes, None, "PLEN {plen}");
        let mut t = t.clone();
        t[0] = 0x03;
        let mut h = ready_host(Digests::default());
        assert_eq!(host_fails(&mut h, &t).0, None, "PLEN {plen}");
    }
    // HLEN other than 24 too.
    let mut c = ControllerQueue::new(ControllerQueueConfig::default());
    let mut t = vec![0x02, 0, 128, 0, 128, 0, 0, 0];
    t.resize(128, 0);
    let (fes, _, _) = controller_fails(&mut c, &t);
    assert_eq!(fes, None);
}

#[test]
fn well_formed_termreq_from_the_peer_ends_without_reply() {
    let t = PduEncoder::default().to_bytes(&Pdu::H2CTermReq(TermReq {
        fes: Fes::HeaderDigestError,
        fei: 0,
        data: Bytes::from_static(&[0x04; 72]),
    }));
    assert_eq!(t.len(), 96);
    let mut c = ready_controller(ControllerQueueConfig::default(), BOTH);
    let (fes, _, _) = controller_fails(&mut c, &t);
    assert_eq!(fes, None, "no TermReq is sent back");
    // Max-size TermReq (152 bytes) before ICReq is accepted too.
    let t = PduEncoder::default().to_bytes(&Pdu::H2CTermReq(TermReq {
        fes: Fes::Other(0x55),
        fei: 7,
        data: Bytes::from_static(&[0; 128]),
    }));
    assert_eq!(t.len(), 152);
    let mut c = ControllerQueue::new(ControllerQueueConfig::default());
    assert_eq!(controller_fails(&mut c, &t).0, None);
    // The host reports the controller's FES.
    let t = PduEncoder::default().to_bytes(&Pdu::C2HTermReq(TermReq {
        fes: Fes::DataOutOfRange,
        fei: 12,
        data: Bytes::new(),
    }));
    let mut h = ready_host(Digests::default());
    h.receive(&t);
    let Some(HostEvent::Terminated { fes, .. }) = h.poll_event() else {
        panic!()
    };
    assert_eq!(fes, Some(Fes::DataOutOfRange));
    assert!(h.tx().take_all().is_empty());
}

// ---------------------------------------------------------------------------------
// ICReq parameters.

#[test]
fn unsupported_pfv_is_fes6_fei8() {
    for pfv in [1u16, 0x100, 0xffff] {
        let mut c = ControllerQueue::new(ControllerQueueConfig::default());
        let (fes, fei, data) = controller_fails(&mut c, &icreq(pfv, 0, Digests::default()));
        assert_eq!((fes, fei), (Some(Fes::UnsupportedParameter), 8));
        assert_eq!(data.len(), 128, "the ICReq header is the error data");
    }
}

#[test]
fn hpda_out_of_range_is_fes6_fei10() {
    let mut c = ControllerQueue::new(ControllerQueueConfig::default());
    let (fes, fei, _) = controller_fails(&mut c, &icreq(0, 32, Digests::default()));
    assert_eq!((fes, fei), (Some(Fes::UnsupportedParameter), 10));
}

#[test]
fn host_rejects_bad_icresp() {
    // A digest the host did not ask for.
    let mut h = HostQueue::new(HostQueueConfig::default());
    h.tx().take_all();
    assert_eq!(
        host_fails(&mut h, &icresp(BOTH, 8192)),
        (Some(Fes::UnsupportedParameter), 11)
    );
    // MAXH2CDATA below 4096 or not a multiple of 4.
    for m in [0u32, 4092, 4097, 8190] {
        let mut h = HostQueue::new(HostQueueConfig::default());
        h.tx().take_all();
        assert_eq!(
            host_fails(&mut h, &icresp(Digests::default(), m)),
            (Some(Fes::UnsupportedParameter), 12),
            "MAXH2CDATA {m}"
        );
    }
    // PFV.
    let mut r = icresp(Digests::default(), 8192);
    r[8] = 1;
    let mut h = HostQueue::new(HostQueueConfig::default());
    h.tx().take_all();
    assert_eq!(host_fails(&mut h, &r), (Some(Fes::UnsupportedParameter), 8));
}

// ---------------------------------------------------------------------------------
// Data transfer rules at the controller.

/// A connected controller with one outstanding 8 KiB write.
fn controller_with_write(d: Digests, request: bool) -> ControllerQueue {
    let mut c = ready_controller(
        ControllerQueueConfig {
            maxh2cdata: 4096,
            ..ControllerQueueConfig::default()
        },
        d,
    );
    c.receive(&capsule(enc(d), write_sqe(7, 8192), &[]));
    let Some(ControllerEvent::Command(ic)) = c.poll_event() else {
        panic!()
    };
    assert_eq!(ic.buffer_len, 8192);
    if request {
        c.request_data(7).unwrap();
        let r = c.tx().take_all();
        assert_eq!(r[0], 0x09, "an R2T");
    }
    c
}

#[test]
fn h2c_data_without_r2t_is_a_sequence_error() {
    let mut c = controller_with_write(Digests::default(), false);
    let p = h2c_data(enc(Digests::default()), 7, 0, 0, &[1; 4096], false);
    let (fes, fei, _) = controller_fails(&mut c, &p);
    assert_eq!((fes, fei), (Some(Fes::PduSequenceError), 8));
    // For a CID that is not outstanding at all: invalid CCCID.
    let mut c = controller_with_write(Digests::default(), true);
    let p = h2c_data(enc(Digests::default()), 8, 0, 0, &[1; 4096], false);
    let (fes, fei, _) = controller_fails(&mut c, &p);
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 8));
}

#[test]
fn h2c_data_with_wrong_ttag_is_fes1_fei10() {
    let mut c = controller_with_write(BOTH, true);
    let p = h2c_data(enc(BOTH), 7, 0x1234, 0, &[1; 4096], false);
    let (fes, fei, _) = controller_fails(&mut c, &p);
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 10));
}

#[test]
fn h2c_data_past_the_r2t_is_fes4() {
    let e0 = enc(Digests::default());
    // One PDU that overruns the 8 KiB requested.
    let mut c = controller_with_write(Digests::default(), true);
    c.receive(&h2c_data(e0, 7, 0, 0, &[1; 4096], false));
    let (fes, fei, _) = controller_fails(&mut c, &h2c_data(e0, 7, 0, 4096, &[1; 4100], true));
    // (4100 > MAXH2CDATA: the decoder stops it first, with FES 5.)
    assert_eq!((fes, fei), (Some(Fes::DataLimitExceeded), 4));
    let mut c = controller_with_write(Digests::default(), true);
    c.receive(&h2c_data(e0, 7, 0, 0, &[1; 4096], false));
    c.receive(&h2c_data(e0, 7, 0, 4096, &[1; 4092], false));
    let (fes, fei, _) = controller_fails(&mut c, &h2c_data(e0, 7, 0, 8188, &[1; 8], true));
    assert_eq!((fes, fei), (Some(Fes::DataOutOfRange), 12));
    // DATAO far past the end, and a DATAO + DATAL that wraps 32 bits.
    for datao in [8192u32, 0xFFFF_F000] {
        let mut c = controller_with_write(Digests::default(), true);
        let (fes, fei, _) = controller_fails(&mut c, &h2c_data(e0, 7, 0, datao, &[1; 4096], true));
        assert_eq!(
            (fes, fei),
            (Some(Fes::DataOutOfRange), 12),
            "DATAO {datao:#x}"
        );
    }
    // DATAO going backwards (data already received).
    let mut c = controller_with_write(Digests::default(), true);
    c.receive(&h2c_data(e0, 7, 0, 0, &[1; 4096], false));
    let (fes, _, _) = controller_fails(&mut c, &h2c_data(e0, 7, 0, 0, &[1; 4096], true));
    assert_eq!(fes, Some(Fes::DataOutOfRange));
    // A gap: DATAO ahead of what was received is a sequence error.
    let mut c = controller_with_write(Digests::default(), true);
    let (fes, fei, _) = controller_fails(&mut c, &h2c_data(e0, 7, 0, 4096, &[1; 4096], true));
    assert_eq!((fes, fei), (Some(Fes::PduSequenceError), 12));
    // LAST_PDU on a PDU that does not finish the R2T, or missing on the one that does.
    let mut c = controller_with_write(Digests::default(), true);
    let (fes, fei, _) = controller_fails(&mut c, &h2c_data(e0, 7, 0, 0, &[1; 4096], true));
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 1));
    let mut c = controller_with_write(Digests::default(), true);
    c.receive(&h2c_data(e0, 7, 0, 0, &[1; 4096], false));
    let (fes, fei, _) = controller_fails(&mut c, &h2c_data(e0, 7, 0, 4096, &[1; 4096], false));
    assert_eq!((fes, fei), (Some(Fes::InvalidHeaderField), 1));
}

#[test]
fn datal_over_maxh2cdata_is_fes5() {
    let mut c = controller_with_write(BOTH, true);
    let (fes, _, _) = controller_fails(&mut c, &h2c_data(enc(BOTH), 7, 0, 0, &[1; 8192], true));
    assert_eq!(fes, Some(Fes::DataLimitExceeded));
}

#[test]
fn datal_disagreeing_with_plen_is_fes1_fei16() {
    let mut p = h2c_data(enc(Digests::default()), 7, 0, 0, &[1; 4096], false);
    p[16..20].copy_from_slice(&4000u32.to_le_bytes());
    let e = decoder_err(Side::Controller, Some(plain()), &p);
    assert_eq!((e.fes, e.fei), (Some(Fes::InvalidHeaderField), 16));
}

#[test]
fn data_digest_error_fails_only_the_command() {
    // H2CData with a bad data digest: the command completes with Transient Transport
    // Error and the connection stays up.
    let mut c = controller_with_write(BOTH, true);
    c.receive(&h2c_data(enc(BOTH), 7, 0, 0, &[1; 4096], false));
    let mut p = h2c_data(enc(BOTH), 7, 0, 4096, &[1; 4096], true);
    let n = p.len();
    p[n - 1] ^= 1;
    c.receive(&p);
    assert_eq!(c.poll_event(), Some(ControllerEvent::Aborted { cid: 7 }));
    assert!(!c.is_terminated());
    assert_eq!(c.outstanding(), 0);
    let tx = c.tx().take_all();
    let mut d = Decoder::new(Side::Host, DecoderConfig::default());
    d.set_negotiated(DecoderConfig {
        hdgst: true,
        ddgst: true,
        ..DecoderConfig::default()
    });
    d.feed(&tx);
    let Pdu::CapsuleResp(cqe) = d.next_pdu().unwrap().unwrap().pdu else {
        panic!()
    };
    assert_eq!(
        (cqe.cid, cqe.status),
        (7, Status::TRANSIENT_TRANSPORT_ERROR)
    );
    // In-capsule data with a bad digest: same, without a Command event.
    let mut c = ready_controller(ControllerQueueConfig::default(), BOTH);
    let mut s = write_sqe(9, 0);
    s.sgl1 = SglDescriptor::in_capsule(100);
    let mut p = capsule(enc(BOTH), s, &[2; 100]);
    assert_eq!(p[8 + 24 + 15], 0x01, "SGL: in-capsule data");
    let n = p.len();
    p[n - 2] ^= 0x40;
    c.receive(&p);
    assert_eq!(c.poll_event(), None);
    assert!(!c.is_terminated());
    let tx = c.tx().take_all();
    let mut d = Decoder::new(Side::Host, DecoderConfig::default());
    d.set_negotiated(DecoderConfig {
        hdgst: true,
        ddgst: true,
        ..DecoderConfig::default()
    });
    d.feed(&tx);
    let Pdu::CapsuleResp(cqe) = d.next_pdu().unwrap().unwrap().pdu else {
        panic!()
    };
    assert_eq!(
        (cqe.cid, cqe.status),
        (9, Status::TRANSIENT_TRANSPORT_ERROR)
    );
}

// ---------------------------------------------------------------------------------
// Command-level rules.

#[test]
fn cid_reuse_while_in_flight_is_cid_conflict() {
    let mut c = ready_controller(ControllerQueueConfig::default(), Digests::default());
    let e0 = enc(Digests::default());
    c.receive(&capsule(e0, read_sqe(5, 4096), &[]));
    assert!(matches!(c.poll_event(), Some(ControllerEvent::Command(_))));
    c.receive(&capsule(e0, read_sqe(5, 512), &[]));
    assert_eq!(c.poll_event(), None, "the duplicate is not passed up");
    assert!(!c.is_terminated());
    assert_eq!(c.outstanding(), 1);
    let tx = c.tx().take_all();
    let mut d = Decoder::new(Side::Host, DecoderConfig::default());
    d.set_negotiated(DecoderConfig::default());
    d.feed(&tx);
    let Pdu::CapsuleResp(cqe) = d.next_pdu().unwrap().unwrap().pdu else {
        panic!()
    };
    assert_eq!(cqe.cid, 5);
    assert_eq!(cqe.status, Status::CID_CONFLICT.dnr());
    // The first command is still served normally.
    assert!(c.send_data(5, Bytes::from(vec![0u8; 4096]), false).is_ok());
    c.complete(Cqe::new(5, Status::SUCCESS));
    assert_eq!(c.outstanding(), 0);
    // And the CID is free again.
    c.receive(&capsule(e0, read_sqe(5, 512), &[]));
    assert!(matches!(c.poll_event(), Some(ControllerEvent::Command(_))));
}

#[test]
fn more_commands_than_the_queue_depth_is_fes2() {
    let mut c = ready_controller(ControllerQueueConfig::default(), Digests::default());
    c.set_connected(1, 4, true, 8192);
    let e0 = enc(Digests::default());
    for cid in 0..4 {
        c.receive(&capsule(e0, read_sqe(cid, 512), &[]));
        assert!(matches!(c.poll_event(), Some(ControllerEvent::Command(_))));
    }
    let (fes, fei, _) = controller_fails(&mut c, &capsule(e0, read_sqe(4, 512), &[]));
    assert_eq!((fes, fei), (Some(Fes::PduSequenceError), 0));
    // Before Connect the initial depth applies.
    let mut c = ready_controller(
        ControllerQueueConfig {
            initial_queue_depth: 2,
            ..ControllerQueueConfig::default()
        },
        Digests::default(),
    );
    c.receive(&capsule(e0, read_sqe(0, 512), &[]));
    c.receive(&capsule(e0, read_sqe(1, 512), &[]));
    let (fes, _, _) = controller_fails(&mut c, &capsule(e0, read_sqe(2, 512), &[]));
    assert_eq!(fes, Some(Fes::PduSequenceError));
}

#[test]
fn completions_free_queue_slots_and_report_sqhd() {
    let mut c = ready_controller(ControllerQueueConfig::default(), Digests::default());
    c.set_connected(1, 4, true, 8192);
    let e0 = enc(Digests::default());
    let mut sqhd = Vec::new();
    for cid in 0..20u16 {
        c.receive(&capsule(e0, read_sqe(cid, 512), &[]));
        assert!(matches!(c.poll_event(), Some(ControllerEvent::Command(_))));
        c.complete(Cqe::new(cid, Status::SUCCESS));
        let tx = c.tx().take_all();
        sqhd.push(u16::from_le_bytes([tx[16], tx[17]]));
        assert_eq!(u16::from_le_bytes([tx[18], tx[19]]), 1, "SQID");
    }
    // SQHD advances by one per completed command, modulo the SQ size.
    let want: Vec<u16> = (1..=20).map(|i| i % 4).collect();
    assert_eq!(sqhd, want);
}

#[test]
fn bad_sgl_fails_the_command_not_the_connection() {
    let mut c = ready_controller(ControllerQueueConfig::default(), Digests::default());
    let e0 = enc(Digests::default());
    // Keyed/other SGL type with a length.
    let mut s = read_sqe(1, 4096);
    s.sgl1.type_byte = 0x00;
    c.receive(&capsule(e0, s, &[]));
    // In-capsule SGL whose length disagrees with the data.
    let mut s = write_sqe(2, 0);
    s.sgl1 = SglDescriptor::in_capsule(64);
    c.receive(&capsule(e0, s, &[1; 32]));
    // In-capsule SGL with a non-zero offset.
    let mut s = write_sqe(3, 0);
    s.sgl1 = SglDescriptor::in_capsule(32);
    s.sgl1.address = 16;
    c.receive(&capsule(e0, s, &[1; 32]));
    // Data in the capsule but a transport SGL.
    c.receive(&capsule(e0, write_sqe(4, 32), &[1; 32]));
    // Buffer larger than MDTS.
    c.receive(&capsule(e0, read_sqe(5, (1 << 20) + 1), &[]));
    assert_eq!(c.poll_event(), None);
    assert!(!c.is_terminated());
    let tx = c.tx().take_all();
    let mut d = Decoder::new(Side::Host, DecoderConfig::default());
    d.set_negotiated(DecoderConfig::default());
    d.feed(&tx);
    let mut got = Vec::new();
    while let Some(r) = d.next_pdu().unwrap() {
        let Pdu::CapsuleResp(cqe) = r.pdu else {
            panic!()
        };
        got.push((cqe.cid, cqe.status));
    }
    assert_eq!(
        got,
        vec![
            (1, Status::SGL_DESCRIPTOR_TYPE_INVALID.dnr()),
            (2, Status::DATA_SGL_LENGTH_INVALID.dnr()),
            (3, Status::SGL_OFFSET_INVALID.dnr()),
            (4, Status::SGL_DESCRIPTOR_TYPE_INVALID.dnr()),
            (5, Status::INVALID_FIELD.dnr()),
        ]
    );
    assert_eq!(CMD_HLEN, 72);
}

// ---------------------------------------------------------------------------------
// Data transfer rules at the host.

#[test]
fn host_checks_r2t_and_c2h_data() {
    let e0 = enc(Digests::default());
    let r2t = |cid, r2to, r2tl| {
        e0.to_bytes(&Pdu::R2T(R2t {
            cccid: cid,
            ttag: 1,
            r2to,
            r2tl,
        }))
    };
    // R2T for a command that is not outstanding.
    let mut h = ready_host(Digests::default());
    assert_eq!(
        host_fails(&mut h, &r2t(3, 0, 4096)),
        (Some(Fes::InvalidHeaderField), 8)
    );
    // R2T for a read.
    let mut h = ready_host(Digests::default());
    let cid = h
        .submit(read_sqe(0, 4096), HostData::FromController(4096))
        .unwrap();
    assert_eq!(
        host_fails(&mut h, &r2t(cid, 0, 4096)),
        (Some(Fes::InvalidHeaderField), 8)
    );
    // R2T beyond the write buffer, and with zero length.
    let mut h = ready_host(Digests::default());
    let cid = h
        .submit(
            write_sqe(0, 0),
            HostData::ToController(Bytes::from(vec![1u8; 16384])),
        )
        .unwrap();
    assert_eq!(
        host_fails(&mut h, &r2t(cid, 8192, 8193)),
        (Some(Fes::DataOutOfRange), 12)
    );
    let mut h = ready_host(Digests::default());
    let cid = h
        .submit(
            write_sqe(0, 0),
            HostData::ToController(Bytes::from(vec![1u8; 16384])),
        )
        .unwrap();
    assert_eq!(
        host_fails(&mut h, &r2t(cid, 0, 0)),
        (Some(Fes::InvalidHeaderField), 16)
    );
    // C2HData beyond the read buffer, out of order, for an unknown command.
    let c2h = |cid, datao, n: usize| {
        e0.to_bytes(&Pdu::C2HData(DataPdu {
            cccid: cid,
            ttag: 0,
            datao,
            datal: n as u32,
            last: true,
            success: false,
            data: Bytes::from(vec![0u8; n]),
        }))
    };
    let mut h = ready_host(Digests::default());
    let cid = h
        .submit(read_sqe(0, 4096), HostData::FromController(4096))
        .unwrap();
    assert_eq!(
        host_fails(&mut h, &c2h(cid, 0, 4100)),
        (Some(Fes::DataOutOfRange), 12)
    );
    let mut h = ready_host(Digests::default());
    let cid = h
        .submit(read_sqe(0, 4096), HostData::FromController(4096))
        .unwrap();
    assert_eq!(
        host_fails(&mut h, &c2h(cid, 512, 512)),
        (Some(Fes::PduSequenceError), 12)
    );
    let mut h = ready_host(Digests::default());
    assert_eq!(
        host_fails(&mut h, &c2h(9, 0, 512)),
        (Some(Fes::InvalidHeaderField), 8)
    );
    // A response for a command that is not outstanding.
    let mut h = ready_host(Digests::default());
    let r = e0.to_bytes(&Pdu::CapsuleResp(Cqe::new(77, Status::SUCCESS)));
    assert_eq!(host_fails(&mut h, &r).0, Some(Fes::InvalidHeaderField));
}

#[test]
fn host_data_digest_error_fails_the_command() {
    let mut h = ready_host(BOTH);
    let cid = h
        .submit(read_sqe(0, 512), HostData::FromController(512))
        .unwrap();
    let mut p = enc(BOTH)
        .to_bytes(&Pdu::C2HData(DataPdu {
            cccid: cid,
            ttag: 0,
            datao: 0,
            datal: 512,
            last: true,
            success: false,
            data: Bytes::from(vec![3u8; 512]),
        }))
        .to_vec();
    let n = p.len();
    p[n - 4] ^= 1;
    h.receive(&p);
    h.receive(&enc(BOTH).to_bytes(&Pdu::CapsuleResp(Cqe::new(cid, Status::SUCCESS))));
    let Some(HostEvent::Completion(c)) = h.poll_event() else {
        panic!()
    };
    assert_eq!(c.cqe.status, Status::TRANSIENT_TRANSPORT_ERROR);
    assert!(h.is_connected());
}

/// SPDK's host completes its outstanding AERs itself at detach and reuses their
/// CIDs (`nvme_tcp_admin_qpair_abort_aers`): on the admin queue a command with an
/// outstanding AER's CID drops the AER (`Abandoned`, no CQE) and is taken; any
/// other outstanding command's CID is still a conflict.
#[test]
fn reused_aer_cid_on_the_admin_queue_abandons_the_aer() {
    let mut c = ready_controller(ControllerQueueConfig::default(), Digests::default());
    let e0 = enc(Digests::default());
    let aer = Sqe {
        opcode: 0x0c,
        cid: 3,
        sgl1: nvmf_proto::sqe::SglDescriptor::transport(0),
        ..Sqe::default()
    };
    c.receive(&capsule(e0, aer, &[]));
    assert!(matches!(c.poll_event(), Some(ControllerEvent::Command(_))));
    assert_eq!(c.outstanding(), 1);
    let get = nvmf_proto::fabrics::PropertyCommand::get_sqe(nvmf_proto::registers::CC, false);
    let get = Sqe { cid: 3, ..get };
    c.receive(&capsule(e0, get, &[]));
    assert_eq!(c.poll_event(), Some(ControllerEvent::Abandoned { cid: 3 }));
    let Some(ControllerEvent::Command(ic)) = c.poll_event() else {
        panic!("the Property Get is passed up")
    };
    assert_eq!(ic.sqe.opcode, 0x7f);
    assert_eq!(c.outstanding(), 1);
    assert!(c.tx().take_all().is_empty(), "no CQE for the dropped AER");
    // The Property Get (not an AER) holds CID 3 now: reusing it is a conflict.
    c.receive(&capsule(e0, Sqe { cid: 3, ..get }, &[]));
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.outstanding(), 1);
}
