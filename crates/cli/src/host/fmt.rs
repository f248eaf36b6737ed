//! Output of the host verbs: nvme-cli's JSON keys, aligned human text.

use nvmf_proto::identify::{IdentifyController, IdentifyNamespace};
use nvmf_proto::log::{DiscoveryLog, DiscoveryLogEntry, SmartLog};
use serde_json::{json, Value};

/// Hex of a byte string.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses hex; `None` on odd length or a non-hex character.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn trtype(v: u8) -> String {
    match v {
        1 => "rdma".into(),
        2 => "fc".into(),
        3 => "tcp".into(),
        0xfe => "loop".into(),
        x => format!("unknown ({x})"),
    }
}

fn adrfam(v: u8) -> String {
    match v {
        1 => "ipv4".into(),
        2 => "ipv6".into(),
        3 => "infiniband".into(),
        4 => "fibre-channel".into(),
        0xfe => "loop".into(),
        x => format!("unknown ({x})"),
    }
}

pub(crate) fn subtype(v: u8) -> String {
    match v {
        1 => "discovery subsystem referral".into(),
        2 => "nvme subsystem".into(),
        3 => "current discovery subsystem".into(),
        x => format!("unknown ({x})"),
    }
}

fn treq(v: u8) -> String {
    let mut s = match v & 3 {
        0 => "not specified".to_string(),
        1 => "required".into(),
        2 => "not required".into(),
        _ => "reserved".into(),
    };
    if v & 4 != 0 {
        s.push_str(", sq flow control disable supported");
    }
    s
}

fn eflags(v: u16) -> String {
    let mut f = Vec::new();
    if v & 1 != 0 {
        f.push("duplicate discovery information");
    }
    if v & 2 != 0 {
        f.push("explicit discovery connections");
    }
    if v & 4 != 0 {
        f.push("no cdc connectivity");
    }
    if f.is_empty() {
        "none".into()
    } else {
        f.join(", ")
    }
}

/// The RDMA TSAS fields as nvme-cli names them (`rdma_prtype`, ...), for an
/// RDMA entry.
fn rdma_fields(e: &DiscoveryLogEntry) -> Vec<(&'static str, String)> {
    use nvmf_proto::log::RdmaTsas;
    let Some(t) = e.rdma_tsas() else {
        return Vec::new();
    };
    let prtype = match t.prtype {
        RdmaTsas::PRTYPE_NOT_SPECIFIED => "not specified".to_string(),
        RdmaTsas::PRTYPE_IB => "infiniband".into(),
        RdmaTsas::PRTYPE_ROCE => "roce".into(),
        RdmaTsas::PRTYPE_ROCEV2 => "roce-v2".into(),
        RdmaTsas::PRTYPE_IWARP => "iwarp".into(),
        x => format!("unknown ({x})"),
    };
    let qptype = match t.qptype {
        RdmaTsas::QPTYPE_CONNECTED => "connected".to_string(),
        RdmaTsas::QPTYPE_DATAGRAM => "datagram".into(),
        x => format!("unknown ({x})"),
    };
    let cms = match t.cms {
        RdmaTsas::CMS_RDMA_CM => "rdma-cm".to_string(),
        x => format!("unknown ({x})"),
    };
    vec![
        ("rdma_prtype", prtype),
        ("rdma_qptype", qptype),
        ("rdma_cms", cms),
        ("rdma_pkey", format!("{:04x}", t.pkey)),
    ]
}

fn sectype(e: &DiscoveryLogEntry) -> String {
    if e.trtype != 3 {
        return "none".into();
    }
    match e.tsas[0] {
        0 => "none".into(),
        1 => "tls12".into(),
        2 => "tls13".into(),
        x => format!("unknown ({x})"),
    }
}

/// `nvme discover -o json`.
pub fn discovery_json(log: &DiscoveryLog) -> Value {
    let records: Vec<Value> = log
        .entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "trtype": trtype(e.trtype),
                "adrfam": adrfam(e.adrfam),
                "subtype": subtype(e.subtype),
                "treq": treq(e.treq),
                "portid": e.portid,
                "trsvcid": e.trsvcid,
                "subnqn": e.subnqn,
                "traddr": e.traddr,
                "eflags": eflags(e.eflags),
                "sectype": sectype(e),
                "cntlid": e.cntlid,
                "asqsz": e.asqsz,
            });
            for (k, f) in rdma_fields(e) {
                v[k] = json!(f);
            }
            v
        })
        .collect();
    json!({ "genctr": log.genctr, "records": records })
}

/// `nvme discover` text.
pub fn discovery_text(log: &DiscoveryLog) -> String {
    let mut s = format!(
        "\nDiscovery Log Number of Records {}, Generation counter {}\n",
        log.numrec, log.genctr
    );
    for (i, e) in log.entries.iter().enumerate() {
        s += &format!("=====Discovery Log Entry {i}======\n");
        for (k, v) in [
            ("trtype", trtype(e.trtype)),
            ("adrfam", adrfam(e.adrfam)),
            ("subtype", subtype(e.subtype)),
            ("treq", treq(e.treq)),
            ("portid", e.portid.to_string()),
            ("trsvcid", e.trsvcid.clone()),
            ("subnqn", e.subnqn.clone()),
            ("traddr", e.traddr.clone()),
            ("eflags", eflags(e.eflags)),
            ("sectype", sectype(e)),
        ] {
            s += &format!("{:<8} {v}\n", format!("{k}:"));
        }
        for (k, v) in rdma_fields(e) {
            s += &format!("{:<12} {v}\n", format!("{k}:"));
        }
    }
    s
}

/// `nvme id-ctrl -o json` keys.
pub fn id_ctrl_json(c: &IdentifyController) -> Value {
    Value::Object(
        id_ctrl_fields(c)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn id_ctrl_fields(c: &IdentifyController) -> Vec<(&'static str, Value)> {
    let ieee = u32::from(c.ieee[0]) | (u32::from(c.ieee[1]) << 8) | (u32::from(c.ieee[2]) << 16);
    let cntrltype = match c.cntrltype {
        nvmf_proto::identify::ControllerType::NotReported => 0,
        nvmf_proto::identify::ControllerType::Io => 1,
        nvmf_proto::identify::ControllerType::Discovery => 2,
        nvmf_proto::identify::ControllerType::Administrative => 3,
    };
    let fields: Vec<(&str, Value)> = vec![
        ("vid", c.vid.into()),
        ("ssvid", c.ssvid.into()),
        ("sn", c.sn.clone().into()),
        ("mn", c.mn.clone().into()),
        ("fr", c.fr.clone().into()),
        ("rab", c.rab.into()),
        ("ieee", ieee.into()),
        ("cmic", c.cmic.into()),
        ("mdts", c.mdts.into()),
        ("cntlid", c.cntlid.into()),
        ("ver", c.ver.into()),
        ("oaes", c.oaes.into()),
        ("ctratt", c.ctratt.into()),
        ("cntrltype", cntrltype.into()),
        ("oacs", c.oacs.into()),
        ("acl", c.acl.into()),
        ("aerl", c.aerl.into()),
        ("frmw", c.frmw.into()),
        ("lpa", c.lpa.into()),
        ("elpe", c.elpe.into()),
        ("npss", c.npss.into()),
        ("wctemp", c.wctemp.into()),
        ("cctemp", c.cctemp.into()),
        (
            "tnvmcap",
            u64::try_from(c.tnvmcap).unwrap_or(u64::MAX).into(),
        ),
        ("kas", c.kas.into()),
        ("sqes", c.sqes.into()),
        ("cqes", c.cqes.into()),
        ("maxcmd", c.maxcmd.into()),
        ("nn", c.nn.into()),
        ("oncs", c.oncs.into()),
        ("fuses", c.fuses.into()),
        ("fna", c.fna.into()),
        ("vwc", c.vwc.into()),
        ("awun", c.awun.into()),
        ("awupf", c.awupf.into()),
        ("sgls", c.sgls.into()),
        ("mnan", c.mnan.into()),
        ("subnqn", c.subnqn.clone().into()),
        ("ioccsz", c.ioccsz.into()),
        ("iorcsz", c.iorcsz.into()),
        ("icdoff", c.icdoff.into()),
        ("fcatt", c.fcatt.into()),
        ("msdbd", c.msdbd.into()),
        ("ofcs", c.ofcs.into()),
    ];
    fields
}

fn kv_text(title: &str, fields: Vec<(&'static str, Value)>, keys_hex: &[&str]) -> String {
    let mut s = format!("{title}\n");
    {
        for (k, v) in fields {
            let val = match v {
                Value::String(x) => x.clone(),
                Value::Number(n) if keys_hex.contains(&k) => {
                    format!("{:#x}", n.as_u64().unwrap_or(0))
                }
                other => other.to_string(),
            };
            s += &format!("{k:<10}: {val}\n");
        }
    }
    s
}

/// `nvme id-ctrl` text.
pub fn id_ctrl_text(c: &IdentifyController) -> String {
    kv_text(
        "NVME Identify Controller:",
        id_ctrl_fields(c),
        &[
            "vid", "ssvid", "ieee", "cmic", "cntlid", "ver", "oaes", "ctratt", "oacs", "frmw",
            "lpa", "oncs", "fuses", "sgls", "vwc", "fcatt", "ofcs",
        ],
    )
}

/// `nvme id-ns -o json` keys.
pub fn id_ns_json(n: &IdentifyNamespace) -> Value {
    let lbafs: Vec<Value> = n
        .lbaf
        .iter()
        .map(|f| json!({"ms": f.ms, "ds": f.lbads, "rp": f.rp}))
        .collect();
    json!({
        "nsze": n.nsze, "ncap": n.ncap, "nuse": n.nuse, "nsfeat": n.nsfeat, "nlbaf": n.nlbaf,
        "flbas": n.flbas, "nmic": n.nmic, "dlfeat": n.dlfeat, "noiob": n.noiob,
        "nvmcap": n.nvmcap.to_string(), "anagrpid": n.anagrpid,
        "nguid": hex(&n.nguid), "eui64": hex(&n.eui64), "lbafs": lbafs,
    })
}

/// `nvme id-ns` text.
pub fn id_ns_text(nsid: u32, n: &IdentifyNamespace) -> String {
    let mut s = format!("NVME Identify Namespace {nsid}:\n");
    for (k, v) in [
        ("nsze", format!("{:#x}", n.nsze)),
        ("ncap", format!("{:#x}", n.ncap)),
        ("nuse", format!("{:#x}", n.nuse)),
        ("nsfeat", format!("{:#x}", n.nsfeat)),
        ("nlbaf", n.nlbaf.to_string()),
        ("flbas", format!("{:#x}", n.flbas)),
        ("nmic", n.nmic.to_string()),
        ("dlfeat", n.dlfeat.to_string()),
        ("noiob", n.noiob.to_string()),
        ("nvmcap", n.nvmcap.to_string()),
        ("anagrpid", n.anagrpid.to_string()),
        ("nguid", hex(&n.nguid)),
        ("eui64", hex(&n.eui64)),
    ] {
        s += &format!("{k:<10}: {v}\n");
    }
    for (i, f) in n.lbaf.iter().enumerate() {
        let inuse = if usize::from(n.flbas & 0xf) == i {
            " (in use)"
        } else {
            ""
        };
        s += &format!(
            "lbaf {i:>2} : ms:{:<3} lbads:{:<2} rp:{:#x}{inuse}\n",
            f.ms, f.lbads, f.rp
        );
    }
    s
}

/// `nvme smart-log -o json` keys.
pub fn smart_json(l: &SmartLog) -> Value {
    Value::Object(
        smart_fields(l)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn smart_fields(l: &SmartLog) -> Vec<(&'static str, Value)> {
    let v = json!({
        "critical_warning": l.critical_warning,
        "temperature": l.temperature,
        "avail_spare": l.avail_spare,
        "spare_thresh": l.spare_thresh,
        "percent_used": l.percent_used,
        "data_units_read": u64::try_from(l.data_units_read).unwrap_or(u64::MAX),
        "data_units_written": u64::try_from(l.data_units_written).unwrap_or(u64::MAX),
        "host_read_commands": u64::try_from(l.host_reads).unwrap_or(u64::MAX),
        "host_write_commands": u64::try_from(l.host_writes).unwrap_or(u64::MAX),
        "controller_busy_time": u64::try_from(l.ctrl_busy_time).unwrap_or(u64::MAX),
        "power_cycles": u64::try_from(l.power_cycles).unwrap_or(u64::MAX),
        "power_on_hours": u64::try_from(l.power_on_hours).unwrap_or(u64::MAX),
        "unsafe_shutdowns": u64::try_from(l.unsafe_shutdowns).unwrap_or(u64::MAX),
        "media_errors": u64::try_from(l.media_errors).unwrap_or(u64::MAX),
        "num_err_log_entries": u64::try_from(l.num_err_log_entries).unwrap_or(u64::MAX),
    });
    let order = [
        "critical_warning",
        "temperature",
        "avail_spare",
        "spare_thresh",
        "percent_used",
        "data_units_read",
        "data_units_written",
        "host_read_commands",
        "host_write_commands",
        "controller_busy_time",
        "power_cycles",
        "power_on_hours",
        "unsafe_shutdowns",
        "media_errors",
        "num_err_log_entries",
    ];
    order.iter().map(|k| (*k, v[*k].clone())).collect()
}

/// `nvme smart-log` text.
pub fn smart_text(dev: &str, l: &SmartLog) -> String {
    let mut s = format!("Smart Log for NVME device:{dev} namespace-id:ffffffff\n");
    {
        for (k, v) in smart_fields(l) {
            let v = if k == "temperature" {
                format!(
                    "{} °C ({} K)",
                    i32::from(l.temperature) - 273,
                    l.temperature
                )
            } else {
                v.to_string()
            };
            s += &format!("{k:<40}: {v}\n");
        }
    }
    s
}

/// An aligned table: header row, a dashed rule, rows.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join(" ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut s = line(header.iter().map(|h| h.to_string()).collect());
    s += &line(w.iter().map(|n| "-".repeat(*n)).collect());
    for r in rows {
        s += &line(r.clone());
    }
    s
}

/// Human size with decimal units, as nvme-cli's list.
pub fn human_size(b: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.2} {}", units[i])
}

/// `resv-report -o json`, with nvme-cli 2.13's keys (`gen`, `rtype`, `regctl`,
/// `ptpls`, `regctlext` (EDS) or `regctls` with `cntlid`, `rcsts`, `rkey`, `hostid`).
pub fn resv_report_json(st: &nvmf_proto::resv::ReservationStatus, eds: bool) -> Value {
    let regctls: Vec<Value> = st
        .regctl
        .iter()
        .map(|r| {
            let hostid = if eds { hex(&r.hostid) } else { hex(&r.hostid[..8]) };
            json!({"cntlid": r.cntlid, "rcsts": u8::from(r.holds), "rkey": r.rkey, "hostid": hostid})
        })
        .collect();
    // nvme-cli names the list "regctlext" for the extended structure.
    let list = if eds { "regctlext" } else { "regctls" };
    json!({"gen": st.gen, "rtype": st.rtype, "regctl": st.regctl_count, "ptpls": u8::from(st.ptpls),
           list: regctls})
}

/// `resv-report` as text, in nvme-cli's layout.
pub fn resv_report_text(st: &nvmf_proto::resv::ReservationStatus, eds: bool) -> String {
    let mut s = format!(
        "NVME Reservation status:\n\ngen       : {}\nrtype     : {}\nregctl    : {}\nptpls     : {}\n\n",
        st.gen, st.rtype, st.regctl_count, u8::from(st.ptpls)
    );
    for (i, r) in st.regctl.iter().enumerate() {
        let hostid = if eds {
            hex(&r.hostid)
        } else {
            hex(&r.hostid[..8])
        };
        s += &format!(
            "regctl[{i}] :\n  cntlid  : {:x}\n  rcsts   : {:x}\n  hostid  : {hostid}\n  rkey    : {:x}\n\n",
            r.cntlid,
            u8::from(r.holds),
            r.rkey
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvmf_proto::log::{DiscoveryLog, DiscoveryLogEntry, RdmaTsas};

    /// An RDMA entry prints its TSAS as nvme-cli does; a TCP entry does not.
    #[test]
    fn rdma_entries_show_their_tsas() {
        let mut rdma = DiscoveryLogEntry {
            subnqn: "nqn.2024-01.io.test:r".into(),
            traddr: "10.0.0.1".into(),
            trsvcid: "4420".into(),
            ..Default::default()
        };
        rdma.set_rdma(RdmaTsas {
            qptype: RdmaTsas::QPTYPE_CONNECTED,
            prtype: RdmaTsas::PRTYPE_NOT_SPECIFIED,
            cms: RdmaTsas::CMS_RDMA_CM,
            pkey: 0,
        });
        let tcp = DiscoveryLogEntry {
            trtype: 3,
            ..Default::default()
        };
        let log = DiscoveryLog {
            genctr: 1,
            numrec: 2,
            recfmt: 0,
            entries: vec![rdma, tcp],
        };
        let t = discovery_text(&log);
        assert!(t.contains("trtype:  rdma"), "{t}");
        assert!(t.contains("rdma_prtype: not specified"), "{t}");
        assert!(t.contains("rdma_qptype: connected"), "{t}");
        assert!(t.contains("rdma_cms:    rdma-cm"), "{t}");
        assert!(t.contains("rdma_pkey:   0000"), "{t}");
        assert_eq!(t.matches("rdma_cms").count(), 1, "{t}");
        let j = discovery_json(&log);
        assert_eq!(j["records"][0]["rdma_cms"], "rdma-cm");
        assert!(j["records"][1].get("rdma_cms").is_none());
    }
}
