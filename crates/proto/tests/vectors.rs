//! Known-answer tests from real traffic: the Linux kernel NVMe/TCP host against the
//! Linux kernel target (nvmet), captured in `shared/vectors/*.pcap` and extracted
//! into `tests/vectors/*.bin` (see `tests/vectors/README.md`).
//!
//! * every PDU of every stream decodes, header and data digests verify;
//! * re-encoding each decoded PDU with [`PduEncoder`] gives back the kernel's bytes;
//! * field values match what `tshark -V` shows (ICReq/ICResp, Connect, Property
//!   Get/Set, Identify Controller/Namespace, NS descriptors, Discovery Log);
//! * a whole host→controller stream replayed into [`ControllerQueue`] (with an
//!   "app" that answers what nvmet answered) produces nvmet's exact bytes;
//! * the commands of a whole stream submitted to [`HostQueue`] produce the kernel
//!   host's exact bytes, and nvmet's responses complete them.

use std::collections::HashMap;

use bytes::Bytes;
use nvmf_proto::cqe::Cqe;
use nvmf_proto::fabrics::{fctype, ConnectCommand, ConnectData, PropertyCommand, DISCOVERY_NQN};
use nvmf_proto::identify::{
    decode_ns_list, ControllerType, IdentifyController, IdentifyNamespace, NsDescriptor,
};
use nvmf_proto::log::{adrfam, subtype, trtype, DiscoveryLog, DiscoveryLogEntry};
use nvmf_proto::registers::{self, Cap};
use nvmf_proto::sqe::{admin_opcode, DataDirection, Sqe, SGL_ICD, SGL_TRANSPORT_DATA_BLOCK};
use nvmf_proto::status::Status;
use nvmf_proto::tcp::digest::crc32c;
use nvmf_proto::tcp::pdu::flags;
use nvmf_proto::tcp::{
    ControllerEvent, ControllerQueue, ControllerQueueConfig, Decoder, DecoderConfig, Digests,
    HostData, HostEvent, HostQueue, HostQueueConfig, Pdu, PduEncoder, Received, Side,
};

/// The connections: `<name>-h2c.bin` and `<name>-c2h.bin` exist for each.
const CONNS: [&str; 5] = [
    "plain-conn1",   // nvme discover: admin queue to the discovery subsystem
    "plain-conn2",   // nvme connect: admin queue
    "plain-conn3",   // nvme connect: I/O queue 1, writes and reads
    "digests-conn1", // -g -G: admin queue
    "digests-conn2", // -g -G: I/O queue 1
];

fn load(name: &str) -> Vec<u8> {
    let p = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

struct Conn {
    name: &'static str,
    h2c: Vec<u8>,
    c2h: Vec<u8>,
}

impl Conn {
    fn load(name: &'static str) -> Self {
        Self {
            name,
            h2c: load(&format!("{name}-h2c.bin")),
            c2h: load(&format!("{name}-c2h.bin")),
        }
    }

    /// The digests ICResp enabled (byte 11 of the first c2h PDU).
    fn digests(&self) -> Digests {
        assert_eq!(
            self.c2h[0], 0x01,
            "{}: stream must start with ICResp",
            self.name
        );
        Digests::from_u8(self.c2h[11])
    }

    fn is_io_queue(&self) -> bool {
        self.name.ends_with("conn3") || self.name == "digests-conn2"
    }
}

fn all() -> Vec<Conn> {
    CONNS.iter().map(|n| Conn::load(n)).collect()
}

/// Splits a stream into PDUs at PLEN boundaries (independently of our decoder).
fn split(stream: &[u8]) -> Vec<&[u8]> {
    let mut v = Vec::new();
    let mut off = 0;
    while off < stream.len() {
        let plen = u32::from_le_bytes(stream[off + 4..off + 8].try_into().unwrap()) as usize;
        assert!(plen >= 8 && off + plen <= stream.len(), "bad PLEN at {off}");
        v.push(&stream[off..off + plen]);
        off += plen;
    }
    v
}

const BIG: DecoderConfig = DecoderConfig {
    hdgst: false,
    ddgst: false,
    rx_pda: 4,
    max_icd: 1 << 20,
    max_data: 1 << 24,
};

fn negotiated_cfg(d: Digests) -> DecoderConfig {
    DecoderConfig {
        hdgst: d.header,
        ddgst: d.data,
        ..BIG
    }
}

/// Decodes a whole stream, feeding it in pieces whose sizes `chunk` returns
/// (`usize::MAX` = everything at once).
fn decode_chunked(
    stream: &[u8],
    side: Side,
    digests: Digests,
    mut chunk: impl FnMut() -> usize,
) -> Vec<Received> {
    let mut d = Decoder::new(side, BIG);
    let mut out = Vec::new();
    let mut off = 0;
    while off < stream.len() {
        let n = chunk().clamp(1, stream.len() - off);
        d.feed(&stream[off..off + n]);
        off += n;
        loop {
            match d.next_pdu() {
                Ok(Some(r)) => {
                    if out.is_empty() {
                        d.set_negotiated(negotiated_cfg(digests));
                    }
                    out.push(r);
                }
                Ok(None) => break,
                Err(e) => panic!("fatal error after {} PDUs: {e:?}", out.len()),
            }
        }
    }
    assert_eq!(d.buffered(), 0, "bytes left over");
    out
}

fn decode_all(stream: &[u8], side: Side, digests: Digests) -> Vec<Received> {
    decode_chunked(stream, side, digests, || usize::MAX)
}

/// A small deterministic generator for chunk sizes.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

/// What happened on one connection, by CID.
struct Exchange {
    /// Commands in the order the host sent them, with in-capsule data.
    cmds: Vec<(Sqe, Bytes)>,
    /// H2CData payloads by CID.
    h2c_data: HashMap<u16, Vec<Bytes>>,
    /// C2HData payloads by CID.
    c2h_data: HashMap<u16, Vec<Bytes>>,
    /// CapsuleResp CQEs by CID.
    cqes: HashMap<u16, Cqe>,
}

impl Exchange {
    fn new(c: &Conn) -> Self {
        let d = c.digests();
        let h = decode_all(&c.h2c, Side::Controller, d);
        let r = decode_all(&c.c2h, Side::Host, d);
        let mut x = Exchange {
            cmds: Vec::new(),
            h2c_data: HashMap::new(),
            c2h_data: HashMap::new(),
            cqes: HashMap::new(),
        };
        for p in h {
            match p.pdu {
                Pdu::CapsuleCmd { sqe, data } => x.cmds.push((sqe, data)),
                Pdu::H2CData(d) => x.h2c_data.entry(d.cccid).or_default().push(d.data),
                _ => {}
            }
        }
        for p in r {
            match p.pdu {
                Pdu::C2HData(d) => x.c2h_data.entry(d.cccid).or_default().push(d.data),
                Pdu::CapsuleResp(c) => {
                    assert!(
                        x.cqes.insert(c.cid, c).is_none(),
                        "CID {} answered twice",
                        c.cid
                    );
                }
                _ => {}
            }
        }
        x
    }

    fn cmd(&self, cid: u16) -> &(Sqe, Bytes) {
        self.cmds.iter().find(|(s, _)| s.cid == cid).unwrap()
    }

    /// The read data of a command, in one buffer.
    fn read_data(&self, cid: u16) -> Vec<u8> {
        self.c2h_data[&cid]
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect()
    }

    /// The read data of the first command matching `f`.
    fn read_data_of(&self, f: impl Fn(&Sqe) -> bool) -> Vec<u8> {
        let (s, _) = self
            .cmds
            .iter()
            .find(|(s, _)| f(s))
            .expect("no such command");
        self.read_data(s.cid)
    }
}

/// Sets a u16 field of a raw PDU and recomputes its header digest if it has one.
fn patch_u16(pdu: &mut [u8], off: usize, v: u16) {
    pdu[off..off + 2].copy_from_slice(&v.to_le_bytes());
    if pdu[1] & flags::HDGSTF != 0 {
        let hlen = usize::from(pdu[2]);
        let c = crc32c(&pdu[..hlen]);
        pdu[hlen..hlen + 4].copy_from_slice(&c.to_le_bytes());
    }
}

/// Offset of the CID field in a PDU of this type (CapsuleCmd: SQE CDW0 bits 31:16;
/// CapsuleResp: CQE DW3 bits 15:0; data PDUs and R2T: CCCID).
fn cid_offset(pdu_type: u8) -> Option<usize> {
    match pdu_type {
        0x04 => Some(8 + 2),
        0x05 => Some(8 + 12),
        0x06 | 0x07 | 0x09 => Some(8),
        _ => None,
    }
}

fn cid_of(pdu: &[u8]) -> u16 {
    let o = cid_offset(pdu[0]).unwrap();
    u16::from_le_bytes([pdu[o], pdu[o + 1]])
}

/// Asserts two streams are equal PDU by PDU, with a readable message at the first difference.
fn assert_same_pdus(what: &str, ours: &[u8], theirs: &[u8]) {
    let a = split(ours);
    let b = split(theirs);
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        if x != y {
            let at = x.iter().zip(y.iter()).position(|(p, q)| p != q);
            panic!(
                "{what}: PDU {i} differs (type {:#x} vs {:#x}, len {} vs {}, first difference at byte {at:?})\nours:   {:02x?}\ntheirs: {:02x?}",
                x[0],
                y[0],
                x.len(),
                y.len(),
                &x[..x.len().min(96)],
                &y[..y.len().min(96)]
            );
        }
    }
    assert_eq!(a.len(), b.len(), "{what}: PDU count");
}

// ---------------------------------------------------------------------------------
// Decoding, digests, re-encoding.

#[test]
fn every_pdu_decodes_with_valid_digests() {
    for c in all() {
        let d = c.digests();
        for (stream, side) in [(&c.h2c, Side::Controller), (&c.c2h, Side::Host)] {
            let raw = split(stream);
            let dec = decode_all(stream, side, d);
            assert_eq!(dec.len(), raw.len(), "{}: PDU count", c.name);
            for (r, p) in raw.iter().zip(&dec) {
                assert!(
                    p.data_digest_ok,
                    "{}: data digest of {:?}",
                    c.name,
                    p.pdu.pdu_type()
                );
                assert_eq!(r[0], p.pdu.pdu_type() as u8);
                // Every PDU after ICReq/ICResp carries HDGSTF exactly when negotiated,
                // and DDGSTF exactly when it has data and data digests are on.
                if r[0] > 1 {
                    assert_eq!(r[1] & flags::HDGSTF != 0, d.header, "{}", c.name);
                    let has_data = !p.pdu.data().is_empty();
                    assert_eq!(r[1] & flags::DDGSTF != 0, d.data && has_data, "{}", c.name);
                }
            }
        }
    }
}

#[test]
fn segmentation_invariance_on_real_streams() {
    let mut rng = Lcg(7);
    for c in all() {
        let d = c.digests();
        for (stream, side) in [(&c.h2c, Side::Controller), (&c.c2h, Side::Host)] {
            let whole = decode_all(stream, side, d);
            for max in [1u64, 7, 100, 5000] {
                let pieces = decode_chunked(stream, side, d, || 1 + rng.below(max));
                assert_eq!(pieces, whole, "{} in chunks of up to {max}", c.name);
            }
        }
    }
}

/// The digests are CRC-32C stored little-endian right after the header (HDGST,
/// covering exactly HLEN bytes) and right after the data (DDGST, covering only the
/// data, not the padding): computed here independently of the decoder.
#[test]
fn digest_byte_order_matches_the_kernel() {
    let mut hd = 0;
    let mut dd = 0;
    for name in ["digests-conn1", "digests-conn2"] {
        let c = Conn::load(name);
        for stream in [&c.h2c, &c.c2h] {
            for p in split(stream) {
                let (fl, hlen, pdo) = (p[1], usize::from(p[2]), usize::from(p[3]));
                if fl & flags::HDGSTF != 0 {
                    let want = crc32c(&p[..hlen]).to_le_bytes();
                    assert_eq!(
                        &p[hlen..hlen + 4],
                        &want,
                        "{name}: HDGST of type {:#x}",
                        p[0]
                    );
                    hd += 1;
                }
                if fl & flags::DDGSTF != 0 {
                    let end = p.len() - 4;
                    let want = crc32c(&p[pdo..end]).to_le_bytes();
                    assert_eq!(&p[end..], &want, "{name}: DDGST of type {:#x}", p[0]);
                    dd += 1;
                }
            }
        }
    }
    assert!(
        hd > 100 && dd > 20,
        "{hd} header digests, {dd} data digests"
    );
}

#[test]
fn reencoding_reproduces_the_kernel_bytes() {
    for c in all() {
        let d = c.digests();
        let enc = PduEncoder::negotiated(d, 0);
        for (stream, side) in [(&c.h2c, Side::Controller), (&c.c2h, Side::Host)] {
            let raw = split(stream);
            let dec = decode_all(stream, side, d);
            for (i, (r, p)) in raw.iter().zip(&dec).enumerate() {
                let e = if i == 0 { PduEncoder::default() } else { enc };
                let ours = e.to_bytes(&p.pdu);
                assert_eq!(&ours[..], *r, "{} PDU {i} ({:?})", c.name, p.pdu.pdu_type());
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Field values, as `tshark -r FILE -V` shows them.

#[test]
fn icreq_and_icresp_fields() {
    for c in all() {
        let want = if c.name.starts_with("digests") {
            Digests {
                header: true,
                data: true,
            }
        } else {
            Digests::default()
        };
        let h = decode_all(&c.h2c[..128], Side::Controller, want);
        let r = decode_all(&c.c2h[..128], Side::Host, want);
        // tshark: Pdu Version Format: 0, Host Pdu data alignment: 0,
        // Digest Types Enabled: 0 (3 with -g -G), Maximum r2ts per request: 0.
        let Pdu::IcReq(q) = h[0].pdu else { panic!() };
        assert_eq!(
            (q.pfv, q.hpda, q.digests, q.maxr2t),
            (0, 0, want, 0),
            "{}",
            c.name
        );
        // tshark: Controller Pdu data alignment: 0, "Maximum data capsules per r2t
        // supported" (MAXH2CDATA): 4194304.
        let Pdu::IcResp(s) = r[0].pdu else { panic!() };
        assert_eq!(
            (s.pfv, s.cpda, s.digests, s.maxh2cdata),
            (0, 0, want, 4_194_304),
            "{}",
            c.name
        );
    }
}

#[test]
fn connect_fields() {
    // (connection, QID, SQSIZE 0's based, KATO ms, CNTLID, SUBNQN, HOSTID)
    let cases = [
        (
            "plain-conn1",
            0,
            31,
            0,
            0xffff,
            DISCOVERY_NQN,
            "b95526ab89f24fdb92941928b5f8f512",
        ),
        (
            "plain-conn2",
            0,
            31,
            5000,
            0xffff,
            "nqn.2024-01.io.test:sub1",
            "6327e05a021146cea87dd124c4a29a18",
        ),
        (
            "plain-conn3",
            1,
            127,
            0,
            1,
            "nqn.2024-01.io.test:sub1",
            "6327e05a021146cea87dd124c4a29a18",
        ),
    ];
    for (name, qid, sqsize, kato, cntlid, subnqn, hostid) in cases {
        let c = Conn::load(name);
        let x = Exchange::new(&c);
        let (sqe, data) = &x.cmds[0];
        assert_eq!(sqe.opcode, admin_opcode::FABRICS);
        assert_eq!(sqe.fctype(), fctype::CONNECT);
        assert_eq!(sqe.cid, 0);
        assert_eq!(sqe.flags, 0x40, "PSDT = SGL");
        // SGL1: Data Block / Offset, address 0, length 1024 (tshark: "Descriptor
        // Type: 0x0 Data Block, Sub Type: 0x1 Offset, Length: 1024").
        assert_eq!(sqe.sgl1.type_byte, SGL_ICD);
        assert_eq!((sqe.sgl1.address, sqe.sgl1.length), (0, 1024));
        let cc = ConnectCommand::from_sqe(sqe);
        // tshark shows SQSIZE + 1 ("Submission Queue Size: 32"); the field is 0's based.
        assert_eq!(
            (cc.recfmt, cc.qid, cc.sqsize, cc.cattr, cc.kato),
            (0, qid, sqsize, 0, kato),
            "{name}"
        );
        assert!(!cc.sq_flow_control_disabled());
        let cd = ConnectData::decode(data).unwrap();
        assert_eq!(hex(&cd.hostid), hostid);
        assert_eq!(cd.cntlid, cntlid);
        assert_eq!(cd.subnqn, subnqn);
        assert_eq!(
            cd.hostnqn,
            "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000"
        );
        // Our encoder reproduces the kernel's 1024 bytes (NUL padded NQNs).
        assert_eq!(&cd.encode()[..], &data[..], "{name}");
        // tshark: Cqe "Controller ID: 0x0001" in DW0.
        let r = x.cqes[&0];
        assert_eq!(r.dw0 & 0xffff, 1);
        assert!(r.status.is_success());
    }
}

#[test]
fn property_get_and_set() {
    let c = Conn::load("plain-conn1");
    let x = Exchange::new(&c);
    // CID 1: Property Get CAP, 8 bytes (tshark: "Property Size: 8 bytes (0x1)",
    // "Offset: Controller Capabilities (0x00000000)").
    let (s, _) = x.cmd(1);
    assert_eq!(s.fctype(), fctype::PROPERTY_GET);
    assert_eq!(s.data_direction(), DataDirection::None);
    assert_eq!(s.sgl1.type_byte, SGL_TRANSPORT_DATA_BLOCK);
    let p = PropertyCommand::from_sqe(s);
    assert!(p.eight_bytes);
    assert_eq!(p.offset, registers::CAP);
    // tshark: "Controller Capabilities: 0x000008200f0003ff": MQES 1023 (1024
    // entries), TO 15 (7500 ms), CSS 0x41, MPSMIN = MPSMAX = 0 (4096 bytes).
    let cqe = x.cqes[&1];
    assert_eq!(cqe.result64(), 0x0000_0820_0f00_03ff);
    let cap = Cap::from_u64(cqe.result64());
    assert_eq!(
        (cap.mqes, cap.cqr, cap.to, cap.css),
        (1023, false, 15, 0x41)
    );
    assert_eq!((cap.mpsmin, cap.mpsmax), (0, 0));
    assert_eq!(cap.to_u64(), cqe.result64());
    // tshark: "SQ Head Pointer: 0x0002", "SQ Identifier: 0x0000".
    assert_eq!((cqe.sqhd, cqe.sqid, cqe.status), (2, 0, Status::SUCCESS));
    // CID 0x1000: Property Set CC = 0x00460060, 4 bytes.
    let p = PropertyCommand::from_sqe(&x.cmd(0x1000).0);
    assert_eq!(
        (p.eight_bytes, p.offset, p.value),
        (false, registers::CC, 0x0046_0060)
    );
    // CID 0x3000: Property Get CSTS = 1 (RDY); CID 0x3001: VS = 0x00010300.
    assert_eq!(
        PropertyCommand::from_sqe(&x.cmd(0x3000).0).offset,
        registers::CSTS
    );
    assert_eq!(x.cqes[&0x3000].result64(), 1);
    assert_eq!(
        PropertyCommand::from_sqe(&x.cmd(0x3001).0).offset,
        registers::VS
    );
    assert_eq!(x.cqes[&0x3001].dw0, registers::version(1, 3, 0));
    // The Asynchronous Event Request (CID 31) is aborted at shutdown with
    // Internal Error + DNR (status field 0x800c).
    assert_eq!(x.cmd(31).0.opcode, admin_opcode::ASYNC_EVENT_REQUEST);
    assert_eq!(x.cqes[&31].status, Status::INTERNAL_ERROR.dnr());
    assert_eq!(x.cqes[&31].status.to_field(), 0x800c);
}

#[test]
fn identify_controller_of_the_discovery_subsystem() {
    let x = Exchange::new(&Conn::load("plain-conn1"));
    let (s, _) = x.cmd(0x0e);
    assert_eq!(
        (s.opcode, s.cdw10, s.sgl1.length),
        (admin_opcode::IDENTIFY, 1, 4096)
    );
    let data = x.read_data(0x0e);
    assert_eq!(data.len(), 4096);
    let id = IdentifyController::decode(&data);
    assert_eq!(id.sn, "45c8a2366d6518c3f561");
    assert_eq!(id.mn, "Linux");
    assert_eq!(id.fr, "6.1.0-56"); // tshark shows it as hex 362e312e302d3536
    assert_eq!(id.cntlid, 1);
    assert_eq!(id.ver, 0x0001_0300);
    assert_eq!(id.oaes, 0x8000_0000);
    assert_eq!(id.cntrltype, ControllerType::Discovery);
    assert_eq!(id.maxcmd, 1024);
    assert_eq!(id.sgls, 0x0010_0001);
    assert_eq!(id.lpa & 0x04, 0x04, "extended data for Get Log Page");
    assert_eq!(id.subnqn, DISCOVERY_NQN);
    assert_eq!((id.ioccsz, id.iorcsz, id.icdoff), (0, 0, 0));
    assert_eq!(id.mdts, 0);
    assert_eq!(id.kas, 0);
}

#[test]
fn identify_controller_of_the_nvm_subsystem() {
    for name in ["plain-conn2", "digests-conn1"] {
        let x = Exchange::new(&Conn::load(name));
        let data = x.read_data_of(|s| s.opcode == admin_opcode::IDENTIFY && s.cdw10 == 1);
        let id = IdentifyController::decode(&data);
        assert_eq!(id.sn, "nvmevm0001");
        assert_eq!(id.mn, "linux-nvme-vm nvmet");
        assert_eq!(id.fr, "6.1.0-56");
        assert_eq!(id.cntlid, 1);
        assert_eq!(id.ver, 0x0001_0300);
        assert_eq!(id.ctratt, 0x41);
        assert_eq!(id.cntrltype, ControllerType::Io);
        assert_eq!(id.kas, 10);
        assert_eq!(id.maxcmd, 1024);
        assert_eq!(id.nn, 1024);
        assert_eq!(id.oncs, 0x000c);
        assert_eq!(id.vwc & 1, 1);
        assert_eq!(id.sgls, 0x0010_0001);
        assert_eq!(id.subnqn, "nqn.2024-01.io.test:sub1");
        // tshark: "IOCCSZ: 404 (16448 bytes)" -- it prints the value in hex: 0x404 =
        // 1028 units of 16 bytes = 16448 = 64-byte SQE + 16 KiB in-capsule data.
        // IORCSZ 1 (16 bytes), ICDOFF 0, FCATT 0 (dynamic controller model), MSDBD 1.
        assert_eq!((id.ioccsz, id.iorcsz, id.icdoff), (0x404, 1, 0));
        assert_eq!((id.fcatt, id.msdbd), (0, 1));
        assert_eq!(id.in_capsule_data_size(), 16384);
        // SQES/CQES: required 6/4 (64/16 bytes).
        assert_eq!(id.sqes & 0xf, 6);
        assert_eq!(id.cqes & 0xf, 4);
        // ANA (nvmet_execute_identify_ctrl): CMIC multi-port | multi-controller
        // | ANA, ANACAP bits 0-4, ANATT 10, ANAGRPMAX = NANAGRPID = 128; the
        // offsets our encoder uses read them back from the kernel's bytes.
        assert_eq!(id.cmic, 0x0b);
        assert_eq!((id.anatt, id.anacap), (10, 0x1f));
        assert_eq!((id.anagrpmax, id.nanagrpid), (128, 128));
    }
}

#[test]
fn identify_namespaces_and_descriptors() {
    let x = Exchange::new(&Conn::load("plain-conn2"));
    // CNS 02h active namespace list: 1, 2.
    let list = x.read_data_of(|s| s.opcode == admin_opcode::IDENTIFY && s.cdw10 == 2);
    assert_eq!(decode_ns_list(&list), vec![1, 2]);
    // CNS 00h: NSID 1 is 65536 blocks of 4096 bytes (the 256 MiB file), NSID 2 is
    // 2097152 blocks of 512 bytes.
    for (nsid, nsze, bs, nsfeat) in [(1u32, 65536u64, 4096u32, 0u8), (2, 2_097_152, 512, 0x12)] {
        let d = x
            .read_data_of(|s| s.opcode == admin_opcode::IDENTIFY && s.cdw10 == 0 && s.nsid == nsid);
        let ns = IdentifyNamespace::decode(&d);
        assert_eq!((ns.nsze, ns.ncap, ns.nuse), (nsze, nsze, nsze));
        assert_eq!((ns.nlbaf, ns.flbas, ns.nsfeat, ns.nmic), (0, 0, nsfeat, 1));
        assert_eq!(ns.block_size(), bs);
        assert_eq!(ns.anagrpid, 1);
        // CNS 03h: a UUID descriptor and the CSI descriptor (NVM).
        let d = x
            .read_data_of(|s| s.opcode == admin_opcode::IDENTIFY && s.cdw10 == 3 && s.nsid == nsid);
        let l = NsDescriptor::decode_list(&d);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(matches!(l[0], NsDescriptor::Uuid(_)));
        assert_eq!(l[1], NsDescriptor::Csi(0));
        // Our encoder writes the same page.
        assert_eq!(NsDescriptor::encode_list(&l), d);
    }
    let d = x.read_data_of(|s| s.opcode == admin_opcode::IDENTIFY && s.cdw10 == 3 && s.nsid == 1);
    assert_eq!(hex(&d[4..20]), "28a89cef1b54432fb79628feb812ecfe");
}

#[test]
fn discovery_log_page() {
    let x = Exchange::new(&Conn::load("plain-conn1"));
    // The host reads the 1024-byte header first (CID 0x11), then header and entries
    // (CID 0x100e, 3072 bytes).
    let (s, _) = x.cmd(0x11);
    assert_eq!(s.log_page_params(), (0x70, 1024, 0));
    let (s, _) = x.cmd(0x100e);
    assert_eq!(s.log_page_params(), (0x70, 3072, 0));
    let hdr = DiscoveryLog::decode(&x.read_data(0x11));
    assert_eq!((hdr.genctr, hdr.numrec, hdr.recfmt), (2, 2, 0));
    assert!(hdr.entries.is_empty());
    let raw = x.read_data(0x100e);
    let log = DiscoveryLog::decode(&raw);
    assert_eq!((log.genctr, log.numrec, log.recfmt), (2, 2, 0));
    assert_eq!(log.entries.len(), 2);
    for (e, st, nqn) in [
        (&log.entries[0], subtype::CURRENT_DISCOVERY, DISCOVERY_NQN),
        (&log.entries[1], subtype::NVME, "nqn.2024-01.io.test:sub1"),
    ] {
        assert_eq!(
            (e.trtype, e.adrfam, e.subtype),
            (trtype::TCP, adrfam::IPV4, st)
        );
        // TREQ 4: secure channel not specified, SQ flow control disable supported.
        assert_eq!(e.treq, 0x04);
        assert_eq!((e.portid, e.cntlid, e.asqsz, e.eflags), (1, 0xffff, 32, 0));
        assert_eq!(e.trsvcid, "4420");
        assert_eq!(e.traddr, "127.0.0.1");
        assert_eq!(e.subnqn, nqn);
        assert_eq!(e.tsas[0], 0, "SECTYPE none");
    }
    // nvmet pads TRSVCID and TRADDR with NULs, our encoder with spaces (both decode
    // the same); everything else re-encodes byte for byte.
    let ours = log.encode();
    assert_eq!(ours.len(), raw.len());
    assert_eq!(&ours[..1024], &raw[..1024]);
    // Spaces to NULs in TRSVCID (bytes 32..64) and TRADDR (512..768) only.
    let fix = |b: &[u8]| -> Vec<u8> {
        b.iter()
            .enumerate()
            .map(|(i, &c)| {
                let text = (32..64).contains(&i) || (512..768).contains(&i);
                if text && c == b' ' {
                    0
                } else {
                    c
                }
            })
            .collect()
    };
    for i in 0..2 {
        let o = 1024 + i * 1024;
        assert_eq!(fix(&ours[o..o + 1024]), &raw[o..o + 1024]);
        assert_eq!(
            DiscoveryLogEntry::decode(&ours[o..o + 1024]),
            DiscoveryLogEntry::decode(&raw[o..o + 1024])
        );
    }
}

#[test]
fn io_commands() {
    for name in ["plain-conn3", "digests-conn2"] {
        let x = Exchange::new(&Conn::load(name));
        let writes: Vec<_> = x.cmds.iter().filter(|(s, _)| s.opcode == 0x01).collect();
        let reads: Vec<_> = x.cmds.iter().filter(|(s, _)| s.opcode == 0x02).collect();
        assert_eq!(writes.len(), 5, "{name}");
        // The 4 KiB write goes in the capsule; the 64 KiB ones by R2T + H2CData.
        let (w0, icd) = writes[0];
        assert_eq!(
            (w0.sgl1.type_byte, w0.sgl1.length, icd.len()),
            (SGL_ICD, 4096, 4096)
        );
        assert_eq!((w0.nsid, w0.slba(), w0.nlb()), (1, 0, 1));
        for (w, d) in &writes[1..] {
            assert!(d.is_empty());
            assert_eq!(
                (w.sgl1.type_byte, w.sgl1.length),
                (SGL_TRANSPORT_DATA_BLOCK, 65536)
            );
            assert_eq!(w.nlb(), 16);
            let h: usize = x.h2c_data[&w.cid].iter().map(Bytes::len).sum();
            assert_eq!(h, 65536);
        }
        // What was written to LBA 0 (4 KiB blocks) is what the 64 KiB reads of
        // LBA 0 return first.
        let r = reads
            .iter()
            .find(|(s, _)| s.sgl1.length == 65536 && s.slba() == 0)
            .unwrap();
        let back = x.read_data(r.0.cid);
        let written: Vec<u8> = x.h2c_data[&writes[1].0.cid]
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect();
        assert_eq!(
            back, written,
            "{name}: read of LBA 0 returns the first 64 KiB write"
        );
        for (s, _) in x.cmds.iter() {
            assert!(x.cqes[&s.cid].status.is_success(), "{name}: CID {}", s.cid);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------
// Replays through the queue state machines.

/// Feeds the kernel host's stream into our ControllerQueue, PDU by PDU, with an app
/// that answers each command with what nvmet answered, and checks that our
/// controller sends nvmet's exact bytes (R2T TTAGs aside: nvmet numbers them from
/// its command slot, we from 0, so the host's H2CData TTAG is rewritten to ours and
/// our R2T TTAG back to nvmet's).
fn controller_replay(c: &Conn) {
    let d = c.digests();
    let x = Exchange::new(c);
    // nvmet's R2T TTAG per CID.
    let mut kernel_ttag = HashMap::new();
    for p in split(&c.c2h) {
        if p[0] == 0x09 {
            kernel_ttag.insert(cid_of(p), u16::from_le_bytes([p[10], p[11]]));
        }
    }
    let mut ctrl = ControllerQueue::new(ControllerQueueConfig {
        maxh2cdata: 0x40_0000,
        max_c2h_pdu: 1 << 20,
        ..ControllerQueueConfig::default()
    });
    let mut out = Vec::new();
    let mut our_ttag: HashMap<u16, u16> = HashMap::new();
    let mut deferred = Vec::new();
    let mut completed = 0;
    for raw in split(&c.h2c) {
        let mut raw = raw.to_vec();
        if raw[0] == 0x06 {
            let t = our_ttag[&cid_of(&raw)];
            patch_u16(&mut raw, 10, t);
        }
        ctrl.receive(&raw);
        while let Some(ev) = ctrl.poll_event() {
            match ev {
                ControllerEvent::Connected {
                    digests,
                    hpda,
                    maxr2t,
                } => {
                    assert_eq!((digests, hpda, maxr2t), (d, 0, 0));
                }
                ControllerEvent::Command(ic) => {
                    let s = ic.sqe;
                    let (ks, kd) = x.cmd(s.cid);
                    assert_eq!((&s, &ic.data), (ks, kd));
                    if s.opcode == admin_opcode::FABRICS && s.fctype() == fctype::CONNECT {
                        let cc = ConnectCommand::from_sqe(&s);
                        let icd = if cc.qid == 0 { 8192 } else { 16384 };
                        ctrl.set_connected(
                            cc.qid,
                            cc.sqsize + 1,
                            !cc.sq_flow_control_disabled(),
                            icd,
                        );
                    }
                    if s.opcode == admin_opcode::ASYNC_EVENT_REQUEST {
                        deferred.push(s.cid);
                        continue;
                    }
                    match s.data_direction() {
                        DataDirection::HostToController if ic.buffer_len > 0 => {
                            ctrl.request_data(s.cid).unwrap();
                            // The R2T just queued carries our TTAG.
                            let t = ctrl.tx().take_all();
                            let last = *split(&t).last().unwrap();
                            assert_eq!(last[0], 0x09);
                            our_ttag.insert(s.cid, u16::from_le_bytes([last[10], last[11]]));
                            out.extend_from_slice(&t);
                        }
                        _ => {
                            for chunk in x.c2h_data.get(&s.cid).into_iter().flatten() {
                                assert!(!ctrl.send_data(s.cid, chunk.clone(), true).unwrap());
                            }
                            ctrl.complete(x.cqes[&s.cid]);
                            completed += 1;
                        }
                    }
                }
                ControllerEvent::Data { cid, data } => {
                    let got: Vec<u8> = data.iter().flat_map(|b| b.iter().copied()).collect();
                    let want: Vec<u8> = x.h2c_data[&cid]
                        .iter()
                        .flat_map(|b| b.iter().copied())
                        .collect();
                    assert_eq!(got, want);
                    ctrl.complete(x.cqes[&cid]);
                    completed += 1;
                }
                e => panic!("{}: unexpected {e:?}", c.name),
            }
        }
        out.extend_from_slice(&ctrl.tx().take_all());
    }
    for cid in deferred {
        ctrl.complete(x.cqes[&cid]);
        completed += 1;
    }
    out.extend_from_slice(&ctrl.tx().take_all());
    assert!(!ctrl.is_terminated());
    assert_eq!(ctrl.outstanding(), 0);
    assert_eq!(completed, x.cmds.len());
    // Put nvmet's TTAGs into our R2Ts, then compare everything.
    let mut fixed = Vec::new();
    for p in split(&out) {
        let mut p = p.to_vec();
        if p[0] == 0x09 {
            let cid = cid_of(&p);
            assert_eq!(u16::from_le_bytes([p[10], p[11]]), our_ttag[&cid]);
            patch_u16(&mut p, 10, kernel_ttag[&cid]);
        }
        fixed.extend_from_slice(&p);
    }
    assert_same_pdus(c.name, &fixed, &c.c2h);
}

#[test]
fn controller_queue_replay_reproduces_nvmet() {
    for c in all() {
        controller_replay(&c);
    }
}

/// Submits the kernel host's commands to our HostQueue and checks that it sends the
/// kernel's exact bytes (CIDs aside: ours are allocated from 0, so they are mapped),
/// then feeds nvmet's responses (CIDs mapped to ours) in odd-sized chunks and checks
/// every command completes with nvmet's CQE and data.
fn host_replay(c: &Conn, seed: u64) {
    let d = c.digests();
    let x = Exchange::new(c);
    let kernel = split(&c.h2c);
    let mut host = HostQueue::new(HostQueueConfig {
        digests: d,
        hpda: 0,
        maxr2t: 0,
        max_icd: if c.is_io_queue() { 16384 } else { 8192 },
        max_c2h_data: 1 << 24,
        queue_depth: 256,
    });
    assert_eq!(host.tx().take_all(), kernel[0], "{}: ICReq", c.name);
    let c2h = split(&c.c2h);
    host.receive(c2h[0]);
    let Some(HostEvent::Connected {
        digests,
        cpda,
        maxh2cdata,
    }) = host.poll_event()
    else {
        panic!("no Connected")
    };
    assert_eq!((digests, cpda, maxh2cdata), (d, 0, 0x40_0000));
    // Submit every command in the kernel's order.
    let mut to_ours = HashMap::new();
    let mut to_kernel = HashMap::new();
    for (s, icd) in &x.cmds {
        let hd = if !icd.is_empty() {
            HostData::ToController(icd.clone())
        } else if s.sgl1.length == 0 {
            HostData::None
        } else if s.data_direction() == DataDirection::HostToController {
            let v: Vec<u8> = x.h2c_data[&s.cid]
                .iter()
                .flat_map(|b| b.iter().copied())
                .collect();
            HostData::ToController(Bytes::from(v))
        } else {
            HostData::FromController(s.sgl1.length)
        };
        let ours = host.submit(*s, hd).unwrap();
        assert!(
            to_ours.insert(s.cid, ours).is_none(),
            "kernel CID reused while outstanding"
        );
        to_kernel.insert(ours, s.cid);
    }
    // Our capsules with the kernel's CIDs are the kernel's capsules.
    let mut our_caps = Vec::new();
    for p in split(&host.tx().take_all()) {
        let mut p = p.to_vec();
        assert_eq!(p[0], 0x04);
        let k = to_kernel[&cid_of(&p)];
        patch_u16(&mut p, 10, k);
        our_caps.extend_from_slice(&p);
    }
    let kernel_caps: Vec<u8> = kernel
        .iter()
        .filter(|p| p[0] == 0x04)
        .flat_map(|p| p.iter().copied())
        .collect();
    assert_same_pdus(&format!("{} capsules", c.name), &our_caps, &kernel_caps);
    // nvmet's responses with our CIDs, in random chunks.
    let mut resp = Vec::new();
    for p in &c2h[1..] {
        let mut p = p.to_vec();
        let o = cid_offset(p[0]).unwrap();
        let k = u16::from_le_bytes([p[o], p[o + 1]]);
        patch_u16(&mut p, o, to_ours[&k]);
        resp.extend_from_slice(&p);
    }
    let mut rng = Lcg(seed);
    let mut off = 0;
    let mut done = HashMap::new();
    let mut our_h2c = Vec::new();
    while off < resp.len() {
        let n = (1 + rng.below(3000)).min(resp.len() - off);
        host.receive(&resp[off..off + n]);
        off += n;
        our_h2c.extend_from_slice(&host.tx().take_all());
        while let Some(ev) = host.poll_event() {
            let HostEvent::Completion(comp) = ev else {
                panic!("{}: {ev:?}", c.name)
            };
            let k = to_kernel[&comp.cqe.cid];
            let mut want = x.cqes[&k];
            want.cid = comp.cqe.cid;
            assert_eq!(comp.cqe, want);
            if let Some(chunks) = x.c2h_data.get(&k) {
                let w: Vec<u8> = chunks.iter().flat_map(|b| b.iter().copied()).collect();
                assert_eq!(comp.data_contiguous(), w);
            } else {
                assert!(comp.data.is_empty());
            }
            assert!(done.insert(k, ()).is_none(), "completed twice");
        }
    }
    assert!(!host.is_terminated());
    assert_eq!(done.len(), x.cmds.len(), "{}", c.name);
    assert_eq!(host.outstanding(), 0);
    // Our H2CData (answering nvmet's R2Ts) with the kernel's CIDs are the kernel's.
    let mut ours = Vec::new();
    for p in split(&our_h2c) {
        let mut p = p.to_vec();
        assert_eq!(p[0], 0x06);
        let k = to_kernel[&cid_of(&p)];
        patch_u16(&mut p, 8, k);
        ours.extend_from_slice(&p);
    }
    let theirs: Vec<u8> = kernel
        .iter()
        .filter(|p| p[0] == 0x06)
        .flat_map(|p| p.iter().copied())
        .collect();
    assert_same_pdus(&format!("{} H2CData", c.name), &ours, &theirs);
}

#[test]
fn host_queue_replay_reproduces_the_kernel_host() {
    for (i, c) in all().iter().enumerate() {
        host_replay(c, i as u64 + 1);
    }
}
