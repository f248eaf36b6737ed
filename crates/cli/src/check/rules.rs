//! The rules, in the order a host meets them: connection initialisation, digests,
//! discovery, the admin queue, an I/O queue, then malformed input on fresh
//! connections. Each rule records one line; a rule whose precondition failed is
//! skipped with the reason. Sources for every expectation: docs/check.md and
//! docs/spec-facts.md.

use std::time::{Duration, Instant};

use bytes::Bytes;
use nvmf_proto::fabrics::{CNTLID_DYNAMIC, DISCOVERY_NQN};
use nvmf_proto::identify::{cns, IdentifyController, IdentifyNamespace, IDENTIFY_SIZE};
use nvmf_proto::log::{lid, DiscoveryLog, DiscoveryLogEntry};
use nvmf_proto::registers::{self, Cap, Csts};
use nvmf_proto::sqe::{admin_opcode, io_opcode, Sqe};
use nvmf_proto::tcp::pdu::{CommonHeader, DataPdu, IcReq, TermReq, CMD_HLEN, PFV_1_0};
use nvmf_proto::tcp::{Digests, Pdu};

use super::conn::{status_text, term_text, Conn, RecvError};
use super::report::{Report, Verdict};
use super::Target;

const S_ICRESP: &str = "TCP 1.0 §3.6.2 Fig 16 ICResp";
const S_DIGEST: &str = "TCP 1.0 §3.6.1 digests, Fig 15-16";
const S_TERM: &str = "TCP 1.0 §3.6.2.3 Fig 17-18, §3.7";
const S_CONNECT: &str = "oF 1.1 §3.3 Connect, Fig 19-21";
const S_PROP: &str = "oF 1.1 §3.5 Property Get, Base 2.0 Fig 36";
const S_ENABLE: &str = "Base 2.0 §3.5 init, CAP.TO, CSTS.RDY";
const S_IDCTRL: &str = "Base 2.0 Fig 275 Identify Controller";
const S_IDFAB: &str = "oF 1.1 Fig 39, TCP 1.0 §3.3";
const S_KA: &str = "Base 2.0 Keep Alive (18h)";
const S_OPC: &str = "Base 2.0 generic status 01h";
const S_DLOG: &str = "Base 2.0 §5.16.1.23 Discovery Log";
const S_NS: &str = "NVM CS 1.0 Identify Namespace";
const S_READ: &str = "NVM CS 1.0 Read, TCP 1.0 C2HData";
const S_WRITE: &str = "NVM CS 1.0 Write, TCP 1.0 §3.3 ICD";
const S_R2T: &str = "NVM CS 1.0 Write, TCP 1.0 R2T/H2CData";

/// What the admin connection learned, for the I/O rules.
struct Admin {
    conn: Conn,
    cntlid: u16,
    ident: Option<IdentifyController>,
    subnqn: String,
}

/// Runs every rule in order.
pub fn run_all(t: &mut Target, r: &mut Report) {
    if !transport_rules(t, r) {
        return;
    }
    discovery_rules(t, r);
    match admin_rules(t, r) {
        Some(mut a) => io_rules(t, r, &mut a),
        None => {
            for id in [
                "io.connect",
                "io.identify-ns",
                "io.read",
                "io.read.lba-range",
            ] {
                r.add(id, Verdict::Skip, "-", "no admin queue".into());
            }
        }
    }
    unknown_subnqn_rule(t, r);
    robustness_rules(t, r);
}

fn pass_fail(r: &mut Report, id: &'static str, s: &'static str, ok: bool, detail: String) {
    r.add(
        id,
        if ok { Verdict::Pass } else { Verdict::Fail },
        s,
        detail,
    );
}

fn open(t: &Target) -> Result<Conn, String> {
    Conn::open(t.addr, t.timeout).map_err(|e| format!("connecting to {}: {e}", t.addr))
}

/// ICReq/ICResp and digest negotiation. False if the target cannot be talked to at all.
fn transport_rules(t: &Target, r: &mut Report) -> bool {
    let mut c = match open(t) {
        Ok(c) => c,
        Err(e) => {
            r.add("tcp.connect", Verdict::Fail, "TCP 1.0 §3.3", e);
            return false;
        }
    };
    let ic = match c.icreq(Digests::default()) {
        Ok(ic) => ic,
        Err(e) => {
            r.add("tcp.icresp", Verdict::Fail, S_ICRESP, e);
            return false;
        }
    };
    r.add(
        "tcp.icresp",
        Verdict::Pass,
        S_ICRESP,
        "ICReq answered with a well-formed ICResp (HLEN 128, PLEN 128)".into(),
    );
    pass_fail(
        r,
        "tcp.icresp.pfv",
        S_ICRESP,
        ic.pfv == PFV_1_0,
        format!("PFV {}", ic.pfv),
    );
    pass_fail(
        r,
        "tcp.icresp.cpda",
        S_ICRESP,
        ic.cpda <= 31,
        format!(
            "CPDA {} (H2C data aligned to {} bytes)",
            ic.cpda,
            (u32::from(ic.cpda) + 1) * 4
        ),
    );
    pass_fail(
        r,
        "tcp.icresp.maxh2cdata",
        S_ICRESP,
        ic.maxh2cdata >= 4096 && ic.maxh2cdata % 4 == 0,
        format!(
            "MAXH2CDATA {} (must be >= 4096 and a multiple of 4)",
            ic.maxh2cdata
        ),
    );
    pass_fail(
        r,
        "tcp.icresp.dgst-unasked",
        S_DIGEST,
        ic.digests == Digests::default(),
        format!("no digest asked, DGST {:#x} enabled", ic.digests.to_u8()),
    );

    // Digests: ask for both; the target may enable either, neither or both
    // (support is optional) but never one not asked for.
    let both = Digests {
        header: true,
        data: true,
    };
    match open(t).and_then(|mut c| c.icreq(both).map(|ic| (c, ic))) {
        Err(e) => r.add("tcp.digest.negotiate", Verdict::Fail, S_DIGEST, e),
        Ok((mut c, ic)) => {
            r.add(
                "tcp.digest.negotiate",
                Verdict::Info,
                S_DIGEST,
                format!(
                    "asked header+data, target enabled header {} data {} (optional)",
                    ic.digests.header, ic.digests.data
                ),
            );
            if !ic.digests.header && !ic.digests.data {
                r.add(
                    "tcp.digest.valid",
                    Verdict::Skip,
                    S_DIGEST,
                    "the target enabled no digest".into(),
                );
            } else {
                // Connect to the discovery subsystem (every target has one) and
                // identify it: a CapsuleResp and a C2HData with digests.
                let res = c
                    .connect(
                        0,
                        31,
                        0,
                        CNTLID_DYNAMIC,
                        DISCOVERY_NQN,
                        &t.hostnqn,
                        t.hostid,
                    )
                    .and_then(|cqe| {
                        if !cqe.status.is_success() {
                            return Err(format!("Connect: {}", status_text(cqe.status)));
                        }
                        enable(&mut c, None)?;
                        c.command(Sqe::identify(cns::CONTROLLER, 0), &[], false, IDENTIFY_SIZE)
                    });
                match res {
                    Ok(res) => pass_fail(
                        r,
                        "tcp.digest.valid",
                        S_DIGEST,
                        res.data_digests_ok && res.cqe.status.is_success(),
                        format!(
                            "discovery Connect, enable, Identify: {}; {} header and {} data digests received, {}",
                            status_text(res.cqe.status),
                            c.hdgsts_seen,
                            c.ddgsts_seen,
                            if res.data_digests_ok { "all valid" } else { "a data digest was NOT valid" }
                        ),
                    ),
                    Err(e) => r.add(
                        "tcp.digest.valid",
                        Verdict::Fail,
                        S_DIGEST,
                        format!("discovery Connect + Identify with digests: {e}"),
                    ),
                }
            }
        }
    }
    true
}

/// Connect, Identify and Get Log Page 70h on the discovery controller.
fn discovery_rules(t: &mut Target, r: &mut Report) {
    let (addr, required) = t.disc;
    let mut c = match Conn::open(addr, t.timeout)
        .map_err(|e| format!("connecting to {addr}: {e}"))
        .and_then(|mut c| c.icreq(Digests::default()).map(|_| c))
    {
        Ok(c) => c,
        Err(e) => {
            let v = if required {
                Verdict::Fail
            } else {
                Verdict::Skip
            };
            r.add("disc.connect", v, S_CONNECT, e);
            return;
        }
    };
    let cqe = match c.connect(
        0,
        31,
        0,
        CNTLID_DYNAMIC,
        DISCOVERY_NQN,
        &t.hostnqn,
        t.hostid,
    ) {
        Ok(cqe) => cqe,
        Err(e) => {
            r.add("disc.connect", Verdict::Fail, S_CONNECT, e);
            return;
        }
    };
    if !cqe.status.is_success() {
        let v = if required {
            Verdict::Fail
        } else {
            Verdict::Info
        };
        r.add(
            "disc.connect",
            v,
            S_CONNECT,
            format!(
                "no discovery controller at {addr}: {}",
                status_text(cqe.status)
            ),
        );
        return;
    }
    let cntlid = (cqe.dw0 & 0xffff) as u16;
    pass_fail(
        r,
        "disc.connect",
        S_CONNECT,
        cntlid != CNTLID_DYNAMIC,
        format!("discovery NQN: success, CNTLID {cntlid:#x}"),
    );
    match enable(&mut c, None) {
        Ok(d) => r.add("disc.enable", Verdict::Pass, S_ENABLE, d),
        Err(e) => {
            r.add("disc.enable", Verdict::Fail, S_ENABLE, e);
            return;
        }
    }

    // Two-part read, as nvme-cli does: the header, then header and entries.
    let hdr = match c.data_in(Sqe::get_log_page(lid::DISCOVERY, 0, 1024, 0, false), 1024) {
        Ok(d) => DiscoveryLog::decode(&d),
        Err(e) => {
            r.add("disc.log.read", Verdict::Fail, S_DLOG, e);
            return;
        }
    };
    let n = hdr.numrec.min(64) as usize;
    let len = 1024 * (n + 1);
    let full = match c.data_in(
        Sqe::get_log_page(lid::DISCOVERY, 0, len as u32, 0, false),
        len,
    ) {
        Ok(d) => d,
        Err(e) => {
            r.add("disc.log.read", Verdict::Fail, S_DLOG, e);
            return;
        }
    };
    let log = DiscoveryLog::decode(&full);
    r.add(
        "disc.log.read",
        Verdict::Pass,
        S_DLOG,
        format!("{len} bytes in two reads (header, then header + {n} entries)"),
    );
    pass_fail(
        r,
        "disc.log.genctr",
        S_DLOG,
        log.genctr == hdr.genctr,
        format!(
            "GENCTR {} then {} across the two reads (nothing changed meanwhile)",
            hdr.genctr, log.genctr
        ),
    );
    pass_fail(
        r,
        "disc.log.numrec",
        S_DLOG,
        log.numrec == hdr.numrec && log.entries.len() == n && log.recfmt == 0,
        format!(
            "NUMREC {} ({} entries read), RECFMT {}",
            log.numrec,
            log.entries.len(),
            log.recfmt
        ),
    );
    let bad: Vec<String> = log
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| entry_problem(e).map(|p| format!("entry {i}: {p}")))
        .collect();
    pass_fail(
        r,
        "disc.log.entries",
        S_DLOG,
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{} entries with TRTYPE 3, ADRFAM 1/2, numeric TRSVCID, TRADDR and a valid SUBNQN",
                log.entries.len()
            )
        } else {
            bad.join("; ")
        },
    );
    if t.subnqn.is_none() {
        t.subnqn = log
            .entries
            .iter()
            .find(|e| e.subtype == nvmf_proto::log::subtype::NVME)
            .map(|e| e.subnqn.clone());
    }
    if let Some(s) = &t.subnqn {
        let listed = log.entries.iter().any(|e| &e.subnqn == s);
        r.add(
            "disc.log.lists-subsystem",
            Verdict::Info,
            S_DLOG,
            format!("{s} {}", if listed { "listed" } else { "not listed" }),
        );
    }
}

fn entry_problem(e: &DiscoveryLogEntry) -> Option<String> {
    if e.trtype != nvmf_proto::log::trtype::TCP {
        return Some(format!("TRTYPE {} (3 = TCP)", e.trtype));
    }
    if !matches!(e.adrfam, 1 | 2) {
        return Some(format!("ADRFAM {} (1 IPv4, 2 IPv6)", e.adrfam));
    }
    if e.trsvcid.parse::<u16>().is_err() {
        return Some(format!("TRSVCID '{}' is not a port", e.trsvcid));
    }
    if e.traddr.parse::<std::net::IpAddr>().is_err() {
        return Some(format!("TRADDR '{}' is not an IP address", e.traddr));
    }
    if let Err(m) = nvmf_proto::fabrics::validate_nqn(&e.subnqn) {
        return Some(format!("SUBNQN '{}': {m}", e.subnqn));
    }
    None
}

/// CC.EN = 1 with IOSQES 6 (64 B) and IOCQES 4 (16 B), then CSTS.RDY within
/// CAP.TO (500 ms units; `cap` None: read it here).
fn enable(c: &mut Conn, cap: Option<Cap>) -> Result<String, String> {
    let cap = match cap {
        Some(cap) => cap,
        None => match c.prop_get(registers::CAP, true)? {
            Ok(v) => Cap::from_u64(v),
            Err(s) => return Err(format!("Property Get CAP: {}", status_text(s))),
        },
    };
    let to_ms = u64::from(cap.to.max(1)) * 500;
    let st = c.prop_set(registers::CC, false, 0x0046_0001)?;
    if !st.is_success() {
        return Err(format!("Property Set CC: {}", status_text(st)));
    }
    let t0 = Instant::now();
    loop {
        match c.prop_get(registers::CSTS, false)? {
            Ok(v) => {
                let csts = Csts::from_u32(v as u32);
                if csts.cfs {
                    return Err(format!("CSTS {v:#x}: CFS set"));
                }
                if csts.rdy {
                    return Ok(format!(
                        "CC.EN=1: CSTS.RDY after {} ms (CAP.TO {to_ms} ms)",
                        t0.elapsed().as_millis()
                    ));
                }
            }
            Err(s) => return Err(format!("Property Get CSTS: {}", status_text(s))),
        }
        if t0.elapsed() > Duration::from_millis(to_ms) {
            return Err(format!("CSTS.RDY still 0 after CAP.TO ({to_ms} ms)"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Admin queue Connect, properties, enable, Identify, Keep Alive, bad opcode.
fn admin_rules(t: &Target, r: &mut Report) -> Option<Admin> {
    let Some(subnqn) = t.subnqn.clone() else {
        r.add(
            "admin.connect",
            Verdict::Skip,
            S_CONNECT,
            "no subsystem NQN (-n) and none in the discovery log".into(),
        );
        return None;
    };
    let mut c = match open(t).and_then(|mut c| c.icreq(Digests::default()).map(|_| c)) {
        Ok(c) => c,
        Err(e) => {
            r.add("admin.connect", Verdict::Fail, S_CONNECT, e);
            return None;
        }
    };
    let cqe = match c.connect(0, 31, 30_000, CNTLID_DYNAMIC, &subnqn, &t.hostnqn, t.hostid) {
        Ok(c) => c,
        Err(e) => {
            r.add("admin.connect", Verdict::Fail, S_CONNECT, e);
            return None;
        }
    };
    if !cqe.status.is_success() {
        r.add(
            "admin.connect",
            Verdict::Fail,
            S_CONNECT,
            format!("{subnqn}: {}", status_text(cqe.status)),
        );
        return None;
    }
    let cntlid = (cqe.dw0 & 0xffff) as u16;
    pass_fail(
        r,
        "admin.connect",
        S_CONNECT,
        cntlid < 0xFFF0,
        format!("{subnqn}: success, CNTLID {cntlid:#x} (must be below FFF0h)"),
    );

    // Properties.
    let cap = match c.prop_get(registers::CAP, true) {
        Ok(Ok(v)) => {
            let cap = Cap::from_u64(v);
            pass_fail(
                r,
                "admin.prop.cap",
                S_PROP,
                cap.mqes >= 1,
                format!(
                    "CAP {v:#018x}: MQES {}, TO {} ({} ms), CSS {:#x}",
                    cap.mqes,
                    cap.to,
                    u32::from(cap.to) * 500,
                    cap.css
                ),
            );
            Some(cap)
        }
        Ok(Err(s)) => {
            r.add("admin.prop.cap", Verdict::Fail, S_PROP, status_text(s));
            None
        }
        Err(e) => {
            r.add("admin.prop.cap", Verdict::Fail, S_PROP, e);
            return None;
        }
    };
    match c.prop_get(registers::VS, false) {
        Ok(Ok(v)) => {
            let (maj, min, ter) = (v >> 16, (v >> 8) & 0xff, v & 0xff);
            pass_fail(
                r,
                "admin.prop.vs",
                S_PROP,
                (maj, min) >= (1, 2),
                format!("VS {maj}.{min}.{ter} (fabrics needs 1.2 or later)"),
            );
        }
        Ok(Err(s)) => r.add("admin.prop.vs", Verdict::Fail, S_PROP, status_text(s)),
        Err(e) => {
            r.add("admin.prop.vs", Verdict::Fail, S_PROP, e);
            return None;
        }
    }
    let enable = enable(&mut c, cap);
    match enable {
        Ok(d) => r.add("admin.enable", Verdict::Pass, S_ENABLE, d),
        Err(e) => {
            r.add("admin.enable", Verdict::Fail, S_ENABLE, e);
            return None;
        }
    }

    let ident = match c.command(Sqe::identify(cns::CONTROLLER, 0), &[], false, IDENTIFY_SIZE) {
        Ok(res) if res.cqe.status.is_success() => {
            let ok = res.anomalies.is_empty();
            pass_fail(
                r,
                "admin.identify",
                S_IDCTRL,
                ok,
                if ok {
                    format!("4096 bytes in {} C2HData PDU(s)", res.c2h_pdus)
                } else {
                    res.anomalies.join("; ")
                },
            );
            Some(IdentifyController::decode(&res.data))
        }
        Ok(res) => {
            r.add(
                "admin.identify",
                Verdict::Fail,
                S_IDCTRL,
                status_text(res.cqe.status),
            );
            None
        }
        Err(e) => {
            r.add("admin.identify", Verdict::Fail, S_IDCTRL, e);
            return None;
        }
    };
    if let Some(id) = &ident {
        pass_fail(
            r,
            "admin.identify.cntlid",
            S_IDCTRL,
            id.cntlid == cntlid,
            format!("CNTLID {:#x}, Connect returned {cntlid:#x}", id.cntlid),
        );
        pass_fail(
            r,
            "admin.identify.subnqn",
            S_IDCTRL,
            id.subnqn == subnqn,
            format!("SUBNQN '{}'", id.subnqn),
        );
        pass_fail(
            r,
            "admin.identify.ioccsz",
            S_IDFAB,
            id.ioccsz >= 4,
            format!(
                "IOCCSZ {} ({} bytes of in-capsule data; >= 4 = 64 B SQE)",
                id.ioccsz,
                (id.ioccsz as usize * 16).saturating_sub(64)
            ),
        );
        pass_fail(
            r,
            "admin.identify.iorcsz",
            S_IDFAB,
            id.iorcsz == 1,
            format!("IORCSZ {} (TCP: 1, a 16-byte CQE)", id.iorcsz),
        );
        pass_fail(
            r,
            "admin.identify.sgls",
            S_IDFAB,
            id.sgls & 3 != 0,
            format!("SGLS {:#010x} (bits 1:0 must show SGL support)", id.sgls),
        );
        pass_fail(
            r,
            "admin.identify.maxcmd",
            S_IDFAB,
            id.maxcmd != 0,
            format!("MAXCMD {} (fabrics: must be reported)", id.maxcmd),
        );
        r.add(
            "admin.identify.kas",
            Verdict::Info,
            S_IDCTRL,
            format!(
                "KAS {} ({} ms granularity), MDTS {}, NN {}",
                id.kas,
                u32::from(id.kas) * 100,
                id.mdts,
                id.nn
            ),
        );
    }

    match c.command(Sqe::new(admin_opcode::KEEP_ALIVE), &[], false, 0) {
        Ok(res) => pass_fail(
            r,
            "admin.keep-alive",
            S_KA,
            res.cqe.status.is_success(),
            status_text(res.cqe.status),
        ),
        Err(e) => r.add("admin.keep-alive", Verdict::Fail, S_KA, e),
    }
    // 3Ch: no admin command in Base 2.0, outside the vendor-specific range C0h-FFh.
    match c.command(Sqe::new(0x3C), &[], false, 0) {
        Ok(res) => {
            let s = res.cqe.status;
            pass_fail(
                r,
                "admin.unknown-opcode",
                S_OPC,
                (s.sct, s.sc) == (0, 0x01),
                format!("opcode 3Ch: {}", status_text(s)),
            );
        }
        Err(e) => r.add("admin.unknown-opcode", Verdict::Fail, S_OPC, e),
    }
    Some(Admin {
        conn: c,
        cntlid,
        ident,
        subnqn,
    })
}

/// Connect to a subsystem that does not exist: Connect Invalid Parameters on SUBNQN.
fn unknown_subnqn_rule(t: &Target, r: &mut Report) {
    let id = "connect.unknown-subnqn";
    let nqn = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-00000000c4ec";
    let res = open(t)
        .and_then(|mut c| c.icreq(Digests::default()).map(|_| c))
        .and_then(|mut c| c.connect(0, 31, 0, CNTLID_DYNAMIC, nqn, &t.hostnqn, t.hostid));
    match res {
        Ok(cqe) => {
            let s = cqe.status;
            let (ipo, iattr) = (cqe.dw0 & 0xffff, (cqe.dw0 >> 16) & 1);
            pass_fail(
                r,
                id,
                S_CONNECT,
                (s.sct, s.sc) == (1, 0x82) && iattr == 1 && ipo == 256,
                format!(
                    "{}, IATTR {iattr} IPO {ipo} (want SCT 1h SC 82h, IATTR 1, IPO 256 = SUBNQN)",
                    status_text(s)
                ),
            );
        }
        Err(e) => r.add(id, Verdict::Fail, S_CONNECT, e),
    }
}

/// I/O queue Connect, Identify Namespace, reads and writes.
fn io_rules(t: &Target, r: &mut Report, a: &mut Admin) {
    let mut io = match open(t).and_then(|mut c| c.icreq(Digests::default()).map(|_| c)) {
        Ok(c) => c,
        Err(e) => {
            r.add("io.connect", Verdict::Fail, S_CONNECT, e);
            return;
        }
    };
    match io.connect(1, 31, 0, a.cntlid, &a.subnqn, &t.hostnqn, t.hostid) {
        Ok(cqe) if cqe.status.is_success() => r.add(
            "io.connect",
            Verdict::Pass,
            S_CONNECT,
            format!("QID 1, SQSIZE 31, CNTLID {:#x}: success", a.cntlid),
        ),
        Ok(cqe) => {
            r.add(
                "io.connect",
                Verdict::Fail,
                S_CONNECT,
                status_text(cqe.status),
            );
            return;
        }
        Err(e) => {
            r.add("io.connect", Verdict::Fail, S_CONNECT, e);
            return;
        }
    }
    // First active namespace.
    let nsid = a
        .conn
        .data_in(Sqe::identify(cns::ACTIVE_NS_LIST, 0), IDENTIFY_SIZE)
        .ok()
        .and_then(|d| nvmf_proto::identify::decode_ns_list(&d).first().copied());
    let Some(nsid) = nsid else {
        r.add(
            "io.identify-ns",
            Verdict::Skip,
            S_NS,
            "no active namespace (Identify CNS 02h)".into(),
        );
        return;
    };
    let ns = match a
        .conn
        .data_in(Sqe::identify(cns::NAMESPACE, nsid), IDENTIFY_SIZE)
    {
        Ok(d) => IdentifyNamespace::decode(&d),
        Err(e) => {
            r.add("io.identify-ns", Verdict::Fail, S_NS, e);
            return;
        }
    };
    let bs = ns.block_size() as usize;
    let ok = ns.nsze > 0 && (512..=(1 << 16)).contains(&bs) && ns.ncap <= ns.nsze;
    pass_fail(
        r,
        "io.identify-ns",
        S_NS,
        ok,
        format!(
            "NSID {nsid}: NSZE {}, NCAP {}, block size {bs}",
            ns.nsze, ns.ncap
        ),
    );
    if !ok {
        return;
    }
    let read = |io: &mut Conn, lba: u64| {
        io.command(
            Sqe::rw(io_opcode::READ, nsid, lba, 1, false),
            &[],
            false,
            bs,
        )
    };
    match read(&mut io, 0) {
        Ok(res) => {
            let got: usize = res.data.len();
            pass_fail(
                r,
                "io.read",
                S_READ,
                res.cqe.status.is_success() && res.anomalies.is_empty() && res.c2h_pdus > 0,
                if res.anomalies.is_empty() {
                    format!(
                        "LBA 0, 1 block: {}, {got} bytes in {} C2HData PDU(s)",
                        status_text(res.cqe.status),
                        res.c2h_pdus
                    )
                } else {
                    res.anomalies.join("; ")
                },
            );
        }
        Err(e) => r.add("io.read", Verdict::Fail, S_READ, e),
    }
    match read(&mut io, ns.nsze) {
        Ok(res) => {
            let s = res.cqe.status;
            pass_fail(
                r,
                "io.read.lba-range",
                S_READ,
                (s.sct, s.sc) == (0, 0x80) && res.c2h_pdus == 0,
                format!(
                    "LBA NSZE ({}): {}, {} C2HData PDU(s)",
                    ns.nsze,
                    status_text(s),
                    res.c2h_pdus
                ),
            );
        }
        Err(e) => r.add("io.read.lba-range", Verdict::Fail, S_READ, e),
    }
    write_rules(t, r, a, &mut io, nsid, ns.nsze, bs);
}

/// Writes at the end of the namespace, reading back each time, and restores the
/// old contents: one block in the capsule; N blocks through R2T/H2CData, N
/// chosen so that the data is larger than the in-capsule data size (the case a
/// Linux host sends through R2T); then one block through R2T although it would
/// fit in the capsule (the host chooses, TCP 1.0 §3.3; nvmet waits for
/// in-capsule data that never comes). That last one runs last, as a target that
/// hangs there leaves the connection unusable.
fn write_rules(
    t: &Target,
    r: &mut Report,
    a: &Admin,
    io: &mut Conn,
    nsid: u32,
    nsze: u64,
    bs: usize,
) {
    const IDS: [&str; 3] = ["io.write.in-capsule", "io.write.r2t", "io.write.r2t-small"];
    if t.read_only {
        for id in IDS {
            r.add(id, Verdict::Skip, S_WRITE, "--read-only".into());
        }
        return;
    }
    let icd_max = a
        .ident
        .as_ref()
        .map_or(0, |i| (i.ioccsz as usize * 16).saturating_sub(64));
    let n = icd_max / bs + 1;
    if nsze < n as u64 || n > 1024 {
        for id in IDS {
            r.add(
                id,
                Verdict::Skip,
                S_WRITE,
                format!("{n} blocks needed past the {icd_max}-byte in-capsule size"),
            );
        }
        return;
    }
    let first = nsze - n as u64;
    let last = nsze - 1;
    let read = |io: &mut Conn, lba: u64, nb: usize| {
        io.command(
            Sqe::rw(io_opcode::READ, nsid, lba, nb as u32, false),
            &[],
            false,
            nb * bs,
        )
        .and_then(|res| {
            if res.cqe.status.is_success() {
                Ok(res.data)
            } else {
                Err(format!("read back: {}", status_text(res.cqe.status)))
            }
        })
    };
    let old = match read(io, first, n) {
        Ok(d) => d,
        Err(e) => {
            for id in IDS {
                r.add(
                    id,
                    Verdict::Skip,
                    S_WRITE,
                    format!("reading the old contents: {e}"),
                );
            }
            return;
        }
    };
    let pattern = |seed: u8, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
            .collect()
    };
    let write = |io: &mut Conn, lba: u64, data: &[u8], icd: bool| -> Result<String, String> {
        let nb = data.len() / bs;
        let res = io
            .command(
                Sqe::rw(io_opcode::WRITE, nsid, lba, nb as u32, false),
                data,
                icd,
                0,
            )
            .map_err(|e| format!("write: {e}"))?;
        if !res.cqe.status.is_success() {
            return Err(format!("write: {}", status_text(res.cqe.status)));
        }
        if !icd && res.r2ts == 0 {
            return Err("write completed without any R2T (where did the data come from?)".into());
        }
        let back = read(io, lba, nb)?;
        if back != data {
            return Err("read back differs from what was written".into());
        }
        Ok(format!(
            "LBA {lba}, {nb} block(s), {} bytes: {} R2T(s), read back equal",
            data.len(),
            res.r2ts
        ))
    };
    let old_last = old.get((n - 1) * bs..).unwrap_or(&[]).to_vec();
    if icd_max >= bs {
        match write(io, last, &pattern(1, bs), true) {
            Ok(d) => r.add("io.write.in-capsule", Verdict::Pass, S_WRITE, d),
            Err(e) => r.add("io.write.in-capsule", Verdict::Fail, S_WRITE, e),
        }
    } else {
        r.add(
            "io.write.in-capsule",
            Verdict::Skip,
            S_WRITE,
            format!("IOCCSZ allows {icd_max} bytes of in-capsule data, a block is {bs}"),
        );
    }
    match write(io, first, &pattern(7, n * bs), false) {
        Ok(d) => r.add("io.write.r2t", Verdict::Pass, S_R2T, d),
        Err(e) => r.add("io.write.r2t", Verdict::Fail, S_R2T, e),
    }
    if let Err(e) = write(io, first, &old, false) {
        r.add(
            "io.write.restore",
            Verdict::Fail,
            S_R2T,
            format!("restoring LBA {first}..={last}: {e}"),
        );
        return;
    }
    if n == 1 {
        r.add(
            "io.write.r2t-small",
            Verdict::Skip,
            S_R2T,
            "no in-capsule data: every write goes through R2T (io.write.r2t)".into(),
        );
        return;
    }
    match write(io, last, &pattern(9, bs), false) {
        Ok(d) => {
            r.add("io.write.r2t-small", Verdict::Pass, S_R2T, d);
            if let Err(e) = write(io, last, &old_last, icd_max >= bs) {
                r.add(
                    "io.write.restore",
                    Verdict::Fail,
                    S_R2T,
                    format!("restoring LBA {last}: {e}"),
                );
            }
        }
        Err(e) => r.add(
            "io.write.r2t-small",
            Verdict::Fail,
            S_R2T,
            format!("1 block ({bs} bytes <= {icd_max} in-capsule) through a transport SGL: {e}"),
        ),
    }
}

/// How a connection ended after a malformed PDU.
enum Ending {
    Term(TermReq),
    Closed,
    Other(String),
}

fn ending(c: &mut Conn) -> Ending {
    match c.recv() {
        Ok((Pdu::C2HTermReq(t), _)) => Ending::Term(t),
        Ok((p, _)) => Ending::Other(format!("answered with {:?}", p.pdu_type())),
        Err(RecvError::Closed) => Ending::Closed,
        Err(RecvError::Timeout) => {
            Ending::Other("the connection stayed open (no TermReq, no close)".into())
        }
        Err(e) => Ending::Other(e.to_string()),
    }
}

/// Sends `bytes` (after ICReq/ICResp when `init`) on a fresh connection and
/// judges the ending against the accepted (FES, FEI) pairs (`None` FEI: any).
fn robust(
    t: &Target,
    r: &mut Report,
    id: &'static str,
    init: Option<Digests>,
    build: impl FnOnce(&Conn) -> Vec<u8>,
    want: &[(u16, Option<u32>)],
) {
    let mut c = match open(t) {
        Ok(c) => c,
        Err(e) => {
            r.add(id, Verdict::Fail, S_TERM, e);
            return;
        }
    };
    if let Some(d) = init {
        match c.icreq(d) {
            Ok(ic) if d.header && !ic.digests.header => {
                r.add(
                    id,
                    Verdict::Skip,
                    S_TERM,
                    "the target does not enable header digests".into(),
                );
                return;
            }
            Ok(_) => {}
            Err(e) => {
                r.add(id, Verdict::Fail, S_TERM, e);
                return;
            }
        }
    }
    let b = build(&c);
    if let Err(e) = c.send_raw(&b) {
        r.add(id, Verdict::Fail, S_TERM, format!("sending: {e}"));
        return;
    }
    let end = ending(&mut c);
    drop(c);
    // The target must still serve new connections.
    let alive = open(t).and_then(|mut c| c.icreq(Digests::default()).map(|_| ()));
    let alive_txt = match &alive {
        Ok(()) => "; a new connection then works".to_string(),
        Err(e) => format!("; then a new connection FAILED: {e}"),
    };
    let want_txt: Vec<String> = want
        .iter()
        .map(|(f, i)| match i {
            Some(i) => format!("FES {f:#04x} FEI {i}"),
            None => format!("FES {f:#04x}"),
        })
        .collect();
    let want_txt = want_txt.join(" or ");
    let (v, d) = match end {
        Ending::Term(tr) => {
            let fes = tr.fes.to_u16();
            let ok = want
                .iter()
                .any(|(f, i)| *f == fes && i.is_none_or(|i| i == tr.fei));
            (
                if ok { Verdict::Pass } else { Verdict::Fail },
                format!("{} (want {want_txt})", term_text(&tr)),
            )
        }
        Ending::Closed => (
            Verdict::Info,
            format!("closed without a C2HTermReq (want {want_txt})"),
        ),
        Ending::Other(s) => (Verdict::Fail, s),
    };
    let v = if alive.is_err() { Verdict::Fail } else { v };
    r.add(id, v, S_TERM, format!("{d}{alive_txt}"));
}

/// Command identifier of the PDUs the robustness rules corrupt, so that a capture
/// checker can tell them from real malformed traffic
/// (tests/interop/check-capture.sh tolerates malformed frames carrying it).
pub const ROBUST_CID: u16 = 0xC4EC;

/// Malformed input, each on its own connection.
fn robustness_rules(t: &Target, r: &mut Report) {
    let plain = Some(Digests::default());
    let keep_alive = |c: &Conn| -> Vec<u8> {
        let mut s = Sqe::new(admin_opcode::KEEP_ALIVE);
        s.cid = ROBUST_CID;
        c.encoder()
            .to_bytes(&Pdu::CapsuleCmd {
                sqe: s,
                data: Bytes::new(),
            })
            .to_vec()
    };
    // PDU type 0Ah: host-to-controller direction (even) but not defined.
    robust(
        t,
        r,
        "robust.unknown-pdu-type",
        plain,
        |_| {
            let mut b = CommonHeader {
                pdu_type: 0x0A,
                flags: 0,
                hlen: 24,
                pdo: 0,
                plen: 24,
            }
            .encode()
            .to_vec();
            b.resize(24, 0);
            b
        },
        &[(1, Some(0))],
    );
    robust(
        t,
        r,
        "robust.bad-hlen",
        plain,
        |c| {
            let mut b = keep_alive(c);
            if let Some(h) = b.get_mut(2) {
                *h = (CMD_HLEN - 1) as u8;
            }
            b
        },
        &[(1, Some(2))],
    );
    robust(
        t,
        r,
        "robust.plen-below-hlen",
        plain,
        |c| {
            let mut b = keep_alive(c);
            if let Some(p) = b.get_mut(4..8) {
                p.copy_from_slice(&24u32.to_le_bytes());
            }
            b
        },
        &[(1, Some(4))],
    );
    robust(
        t,
        r,
        "robust.capsule-before-icreq",
        None,
        keep_alive,
        &[(2, None), (1, Some(0))],
    );
    robust(
        t,
        r,
        "robust.second-icreq",
        plain,
        |c| {
            c.encoder()
                .to_bytes(&Pdu::IcReq(IcReq {
                    pfv: PFV_1_0,
                    hpda: 0,
                    digests: Digests::default(),
                    maxr2t: 0,
                }))
                .to_vec()
        },
        &[(1, Some(0)), (2, None)],
    );
    robust(
        t,
        r,
        "robust.h2cdata-without-r2t",
        plain,
        |c| {
            c.encoder()
                .to_bytes(&Pdu::H2CData(DataPdu {
                    cccid: ROBUST_CID,
                    ttag: 0x4321,
                    datao: 0,
                    datal: 512,
                    last: true,
                    success: false,
                    data: Bytes::from(vec![0u8; 512]),
                }))
                .to_vec()
        },
        &[(1, Some(8)), (1, Some(10)), (2, None)],
    );
    robust(
        t,
        r,
        "robust.bad-header-digest",
        Some(Digests {
            header: true,
            data: false,
        }),
        |c| {
            let mut b = keep_alive(c);
            // The HDGST follows the 72-byte header; flip one of its bits.
            if let Some(x) = b.get_mut(CMD_HLEN) {
                *x ^= 0x01;
            }
            b
        },
        &[(3, None)],
    );
}
