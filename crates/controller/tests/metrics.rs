//! The metrics endpoint over real loopback TCP: I/O through a real target, then
//! `GET /metrics` and exact counts, checked by a strict exposition parser.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use nvmf_controller::config::{BackendSpec, Limits, NamespaceConfig, SubsystemConfig};
use nvmf_controller::TargetConfig;
use nvmf_proto::fabrics::{ConnectCommand, ConnectData, CNTLID_DYNAMIC};
use nvmf_proto::log::lid;
use nvmf_proto::sqe::io_opcode;
use nvmf_proto::tcp::{HostData, HostQueueConfig};
use nvmf_proto::Sqe;
use nvmf_transport::{HostConnection, TransportAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{enable, start};

const NQN: &str = "nqn.2024-01.io.nvmf-rs:metrics";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-00000000\"m\\";

/// 16 MiB memory namespace of 4 KiB blocks (4096 blocks).
fn config() -> TargetConfig {
    let mut c = TargetConfig::embedded_default();
    c.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.discovery_listen = vec![];
    c.subsystems = vec![SubsystemConfig {
        nqn: NQN.into(),
        serial: "sn".into(),
        model: "m".into(),
        cntlid_min: 1,
        cntlid_max: 0xFFEF,
        hosts: vec![],
        namespaces: vec![NamespaceConfig {
            nsid: 1,
            backend: BackendSpec::Memory { size: 16 << 20 },
            block_size: 4096,
            direct: Default::default(),
            uuid: None,
            ana_group: 1,
        }],
    }];
    c.limits = Limits::default();
    c.metrics = Some("127.0.0.1:0".parse().unwrap());
    c
}

/// Connects queue `qid` (KATO `kato_ms` on the admin queue); returns the CNTLID.
async fn connect(
    addr: &TransportAddr,
    qid: u16,
    cntlid: u16,
    kato_ms: u32,
) -> (HostConnection, u16) {
    let depth = 32;
    let mut c = HostConnection::connect(
        addr,
        HostQueueConfig {
            queue_depth: depth,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let cmd = ConnectCommand {
        recfmt: 0,
        qid,
        sqsize: depth - 1,
        cattr: 0,
        kato: kato_ms,
    };
    let data = ConnectData {
        hostid: [7; 16],
        cntlid,
        subnqn: NQN.into(),
        hostnqn: HOSTNQN.into(),
    };
    let r = common::send_connect(&mut c, &cmd, &data).await.unwrap();
    assert!(r.cqe.status.is_success(), "{:?}", r.cqe.status);
    (c, r.cqe.dw0 as u16)
}

/// One HTTP/1.1 request; returns (status line, headers, body).
async fn http(addr: std::net::SocketAddr, request: &str) -> (String, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut r = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut r))
        .await
        .unwrap()
        .unwrap();
    let r = String::from_utf8(r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    let len: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, body.len(), "Content-Length");
    (status.into(), headers.into(), body.into())
}

type Series = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Parses a label set `k="v",...` (exposition format 0.0.4 escapes).
fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        let mut k = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' {
                break;
            }
            k.push(c);
            it.next();
        }
        if k.is_empty() || !valid_name(&k) || k.contains(':') {
            return Err(format!("bad label name {k:?}"));
        }
        if it.next() != Some('=') || it.next() != Some('"') {
            return Err("expected =\"".into());
        }
        let mut v = String::new();
        loop {
            match it.next() {
                None => return Err("unterminated label value".into()),
                Some('"') => break,
                Some('\\') => match it.next() {
                    Some('\\') => v.push('\\'),
                    Some('"') => v.push('"'),
                    Some('n') => v.push('\n'),
                    o => return Err(format!("bad escape {o:?}")),
                },
                Some('\n') => return Err("raw newline in label value".into()),
                Some(c) => v.push(c),
            }
        }
        if out.iter().any(|(n, _): &(String, String)| *n == k) {
            return Err(format!("label {k} twice"));
        }
        out.push((k, v));
        match it.next() {
            None => return Ok(out),
            Some(',') => continue,
            Some(c) => return Err(format!("unexpected {c:?} after a label")),
        }
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// A strict reader of the text exposition format 0.0.4: every line is a HELP
/// or TYPE comment or `name{labels} value`; every sample's family has a TYPE
/// given before it (and once); counters end in `_total`; no series twice;
/// histogram buckets are cumulative and end with `+Inf` equal to `_count`.
fn parse_exposition(text: &str) -> Result<Series, String> {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut series = Series::new();
    for (i, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (kw, name, arg) = (w.next(), w.next(), w.next());
            let name = name.ok_or_else(|| err("comment without a name".into()))?;
            if !valid_name(name) {
                return Err(err("bad metric name".into()));
            }
            match (kw, arg) {
                (Some("TYPE"), Some(t)) => {
                    if !matches!(t, "counter" | "gauge" | "histogram") {
                        return Err(err(format!("type {t}")));
                    }
                    if t == "counter" && !name.ends_with("_total") {
                        return Err(err("counter without _total".into()));
                    }
                    if types.insert(name.into(), t.into()).is_some() {
                        return Err(err("TYPE twice".into()));
                    }
                }
                (Some("HELP"), Some(h)) if !h.is_empty() => {
                    if !helps.insert(name.into()) {
                        return Err(err("HELP twice".into()));
                    }
                }
                _ => return Err(err("unknown comment".into())),
            }
            continue;
        }
        let (name_labels, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| err("no value".into()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| err("bad value".into()))?,
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => {
                let l = l
                    .strip_suffix('}')
                    .ok_or_else(|| err("labels not closed".into()))?;
                (n, parse_labels(l).map_err(err)?)
            }
            None => (name_labels, vec![]),
        };
        if !valid_name(name) {
            return Err(err("bad metric name".into()));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        let Some(t) = types.get(family) else {
            return Err(err("sample without a TYPE before it".into()));
        };
        if !helps.contains(family) {
            return Err(err("sample without HELP".into()));
        }
        if t == "histogram" && family == name {
            return Err(err("histogram sample without _bucket/_sum/_count".into()));
        }
        if name.ends_with("_bucket") != labels.iter().any(|(k, _)| k == "le") {
            return Err(err("le only on buckets".into()));
        }
        if series.insert((name.into(), labels), value).is_some() {
            return Err(err("series twice".into()));
        }
    }
    // Check order within each histogram as the text gives it.
    let mut prev: HashMap<String, f64> = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (nl, v) = line.rsplit_once(' ').unwrap();
        if let Some((n, l)) = nl.split_once('{') {
            if let Some(fam) = n.strip_suffix("_bucket") {
                let l = parse_labels(l.strip_suffix('}').unwrap())?;
                let key = format!(
                    "{fam}{:?}",
                    l.iter().filter(|(k, _)| k != "le").collect::<Vec<_>>()
                );
                let v: f64 = v.parse().unwrap();
                let p = prev.insert(key.clone(), v).unwrap_or(0.0);
                if v < p {
                    return Err(format!("{key}: buckets not cumulative"));
                }
                if l.iter().any(|(k, x)| k == "le" && x == "+Inf") {
                    let count_line = format!(
                        "{fam}_count{{{}}} ",
                        l.iter()
                            .filter(|(k, _)| k != "le")
                            .map(|(k, x)| format!(
                                "{k}=\"{}\"",
                                x.replace('\\', "\\\\")
                                    .replace('"', "\\\"")
                                    .replace('\n', "\\n")
                            ))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    let c = text
                        .lines()
                        .find_map(|x| x.strip_prefix(&count_line))
                        .ok_or_else(|| format!("no {count_line}"))?;
                    if c.parse::<f64>().unwrap() != v {
                        return Err(format!("{key}: +Inf bucket {v} != count {c}"));
                    }
                    prev.remove(&key);
                }
            }
        }
    }
    Ok(series)
}

/// The value of a series whose labels include `want` (exactly one must match).
fn get(s: &Series, name: &str, want: &[(&str, &str)]) -> f64 {
    let m: Vec<f64> = s
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(m.len(), 1, "{name} {want:?}: {} series match", m.len());
    m[0]
}

async fn scrape(addr: std::net::SocketAddr) -> (String, Series) {
    let (status, headers, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let s = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    (body, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_counts_errors_and_the_exposition() {
    let (t, addr) = start(&config()).await;
    let maddr = t.metrics_addr().unwrap();
    let (mut admin, cntlid) = connect(&addr, 0, CNTLID_DYNAMIC, 30_000).await;
    enable(&mut admin).await;
    let (mut io, _) = connect(&addr, 1, cntlid, 0).await;
    let ns = [("subsystem", NQN), ("nsid", "1")];

    // Before any I/O: the namespace is listed, with zeros.
    let (_, s) = scrape(maddr).await;
    assert_eq!(
        get(
            &s,
            "nvmf_namespace_commands_total",
            &[ns[0], ns[1], ("kind", "read")]
        ),
        0.0
    );
    assert_eq!(get(&s, "nvmf_namespace_latency_seconds_count", &ns), 0.0);

    // 100 reads of 4 KiB.
    for i in 0..100u64 {
        let r = io
            .execute(
                Sqe::rw(io_opcode::READ, 1, i, 1, false),
                HostData::FromController(4096),
            )
            .await
            .unwrap();
        assert!(r.cqe.status.is_success());
    }
    let (body, s) = scrape(maddr).await;
    assert_eq!(
        get(
            &s,
            "nvmf_namespace_commands_total",
            &[ns[0], ns[1], ("kind", "read")]
        ),
        100.0
    );
    assert_eq!(
        get(
            &s,
            "nvmf_namespace_commands_total",
            &[ns[0], ns[1], ("kind", "write")]
        ),
        0.0
    );
    assert_eq!(get(&s, "nvmf_namespace_read_bytes_total", &ns), 409_600.0);
    assert_eq!(get(&s, "nvmf_namespace_latency_seconds_count", &ns), 100.0);
    assert_eq!(
        get(
            &s,
            "nvmf_namespace_latency_seconds_bucket",
            &[ns[0], ns[1], ("le", "+Inf")]
        ),
        100.0
    );
    assert!(get(&s, "nvmf_namespace_latency_seconds_sum", &ns) > 0.0);
    assert_eq!(
        get(
            &s,
            "nvmf_namespace_errors_total",
            &[ns[0], ns[1], ("sct", "generic")]
        ),
        0.0
    );
    // The queue view: this controller's I/O queue 1, with the host NQN escaped.
    let cs = cntlid.to_string();
    let q1 = [
        ("subsystem", NQN),
        ("ctrl", cs.as_str()),
        ("qid", "1"),
        ("hostnqn", HOSTNQN),
    ];
    assert_eq!(
        get(
            &s,
            "nvmf_queue_commands_total",
            &[q1[0], q1[1], q1[2], q1[3], ("kind", "read")]
        ),
        100.0
    );
    assert_eq!(get(&s, "nvmf_queue_read_bytes_total", &q1), 409_600.0);
    assert!(body.contains(
        r#"hostnqn="nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-00000000\"m\\""#
    ));
    // The admin queue's commands (property get/set) are counted as "other" on qid 0.
    let q0 = [("ctrl", cs.as_str()), ("qid", "0")];
    assert!(
        get(
            &s,
            "nvmf_queue_commands_total",
            &[q0[0], q0[1], ("kind", "other")]
        ) >= 3.0
    );
    assert_eq!(
        get(
            &s,
            "nvmf_subsystem_connects_accepted_total",
            &[("subsystem", NQN)]
        ),
        2.0
    );
    assert_eq!(
        get(
            &s,
            "nvmf_subsystem_controllers_created_total",
            &[("subsystem", NQN)]
        ),
        1.0
    );
    assert_eq!(
        get(&s, "nvmf_subsystem_controllers", &[("subsystem", NQN)]),
        1.0
    );
    assert_eq!(get(&s, "nvmf_tcp_connections_accepted_total", &[]), 2.0);

    // 10 writes of 8 KiB, then a read beyond the end (4096 blocks): LBA Out of
    // Range, a generic status (NVM Command Set 1.0: SCT 0h, SC 80h).
    for i in 0..10u64 {
        let r = io
            .execute(
                Sqe::rw(io_opcode::WRITE, 1, i * 2, 2, false),
                HostData::ToController(Bytes::from(vec![0xa5; 8192])),
            )
            .await
            .unwrap();
        assert!(r.cqe.status.is_success());
    }
    let r = io
        .execute(
            Sqe::rw(io_opcode::READ, 1, 4096, 1, false),
            HostData::FromController(4096),
        )
        .await
        .unwrap();
    assert!(!r.cqe.status.is_success());
    let (_, s) = scrape(maddr).await;
    assert_eq!(
        get(
            &s,
            "nvmf_namespace_commands_total",
            &[ns[0], ns[1], ("kind", "read")]
        ),
        101.0
    );
    assert_eq!(
        get(
            &s,
            "nvmf_namespace_commands_total",
            &[ns[0], ns[1], ("kind", "write")]
        ),
        10.0
    );
    assert_eq!(get(&s, "nvmf_namespace_read_bytes_total", &ns), 409_600.0);
    assert_eq!(get(&s, "nvmf_namespace_written_bytes_total", &ns), 81_920.0);
    assert_eq!(
        get(
            &s,
            "nvmf_namespace_errors_total",
            &[ns[0], ns[1], ("sct", "generic")]
        ),
        1.0
    );
    assert_eq!(get(&s, "nvmf_namespace_latency_seconds_count", &ns), 111.0);

    // The SMART log reads the same counters.
    let smart = admin
        .execute(
            Sqe::get_log_page(lid::SMART, u32::MAX, 512, 0, false),
            HostData::FromController(512),
        )
        .await
        .unwrap();
    let smart = nvmf_proto::log::SmartLog::decode(&smart.data_contiguous());
    assert_eq!((smart.host_reads, smart.host_writes), (101, 10));
    assert_eq!((smart.data_units_read, smart.data_units_written), (1, 1));

    // Only GET/HEAD /metrics.
    let (st, _, _) = http(maddr, "GET /other HTTP/1.1\r\n\r\n").await;
    assert_eq!(st, "HTTP/1.1 404 Not Found");
    let (st, _, _) = http(maddr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(st, "HTTP/1.1 405 Method Not Allowed");

    // The queue ends: its series go, the namespace keeps its counts.
    io.close().await;
    admin.close().await;
    let t0 = std::time::Instant::now();
    loop {
        let (_, s) = scrape(maddr).await;
        let gone = !s.keys().any(|(n, l)| {
            n == "nvmf_queue_commands_total" && l.iter().any(|(k, v)| k == "ctrl" && *v == cs)
        });
        if gone {
            assert_eq!(
                get(
                    &s,
                    "nvmf_namespace_commands_total",
                    &[ns[0], ns[1], ("kind", "read")]
                ),
                101.0
            );
            assert_eq!(get(&s, "nvmf_namespace_latency_seconds_count", &ns), 111.0);
            assert_eq!(
                get(&s, "nvmf_subsystem_controllers", &[("subsystem", NQN)]),
                0.0
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "queue series still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expiry_is_counted() {
    let (t, addr) = start(&config()).await;
    let maddr = t.metrics_addr().unwrap();
    // KATO 1 s; the target allows 1.5 KATO + 1 s before ending the association.
    let (mut admin, _) = connect(&addr, 0, CNTLID_DYNAMIC, 1000).await;
    enable(&mut admin).await;
    let (_, s) = scrape(maddr).await;
    assert_eq!(
        get(
            &s,
            "nvmf_subsystem_keep_alive_expiries_total",
            &[("subsystem", NQN)]
        ),
        0.0
    );
    let t0 = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, s) = scrape(maddr).await;
        if get(
            &s,
            "nvmf_subsystem_keep_alive_expiries_total",
            &[("subsystem", NQN)],
        ) == 1.0
        {
            assert!(t0.elapsed() >= Duration::from_millis(2000), "expired early");
            assert_eq!(
                get(&s, "nvmf_subsystem_controllers", &[("subsystem", NQN)]),
                0.0
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no keep-alive expiry counted"
        );
    }
    drop(admin);
}

#[test]
fn the_checker_refuses_malformed_expositions() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"v\\\"\"} 1\n";
    assert!(parse_exposition(ok).is_ok());
    for bad in [
        "a_total 1\n",                                                 // no TYPE
        "# HELP a x\n# TYPE a counter\na 1\n",                         // counter without _total
        "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"v} 1\n", // unterminated
        "# HELP a_total x\n# TYPE a_total counter\na_total 1\na_total 2\n", // twice
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 0\n",
        "# HELP g x\n# TYPE g gauge\ng{l=\"a\" 1\n",
        "# HELP g x\n# TYPE g gauge\ng one\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

/// A host's protocol error (an unknown PDU type after ICReq) is answered with a
/// C2HTermReq, counted; Connects to an unknown subsystem or an unknown
/// controller are counted as refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termreqs_and_refused_connects_are_counted() {
    use nvmf_proto::tcp::pdu::{IcReq, Pdu, PduEncoder, PFV_1_0};
    let (t, addr) = start(&config()).await;
    let maddr = t.metrics_addr().unwrap();
    let mut s = tokio::net::TcpStream::connect(addr.socket).await.unwrap();
    let icreq = PduEncoder::default().to_bytes(&Pdu::IcReq(IcReq {
        pfv: PFV_1_0,
        hpda: 0,
        digests: Default::default(),
        maxr2t: 0,
    }));
    s.write_all(&icreq).await.unwrap();
    let mut bad = vec![0u8; 24];
    (bad[0], bad[2], bad[4]) = (0x7f, 24, 24);
    s.write_all(&bad).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    // ICResp (128 bytes), then the C2HTermReq (type 3).
    assert_eq!(buf.get(128), Some(&3), "no C2HTermReq");

    for (subnqn, qid, cntlid) in [
        ("nqn.2024-01.io.nvmf-rs:nosuch", 0, CNTLID_DYNAMIC),
        (NQN, 1, 0x1234),
    ] {
        let mut c = HostConnection::connect(&addr, HostQueueConfig::default())
            .await
            .unwrap();
        let cmd = ConnectCommand {
            recfmt: 0,
            qid,
            sqsize: 31,
            cattr: 0,
            kato: 0,
        };
        let data = ConnectData {
            hostid: [7; 16],
            cntlid,
            subnqn: subnqn.into(),
            hostnqn: HOSTNQN.into(),
        };
        let r = common::send_connect(&mut c, &cmd, &data).await.unwrap();
        assert!(!r.cqe.status.is_success());
    }
    let (_, s) = scrape(maddr).await;
    assert_eq!(get(&s, "nvmf_termreqs_sent_total", &[]), 1.0);
    assert_eq!(get(&s, "nvmf_tcp_connections_accepted_total", &[]), 3.0);
    assert_eq!(get(&s, "nvmf_connects_unknown_subsystem_total", &[]), 1.0);
    assert_eq!(
        get(
            &s,
            "nvmf_subsystem_connects_rejected_total",
            &[("subsystem", NQN)]
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "nvmf_subsystem_connects_accepted_total",
            &[("subsystem", NQN)]
        ),
        0.0
    );
    // Before Connect the connection belonged to no subsystem.
    assert_eq!(
        get(
            &s,
            "nvmf_subsystem_termreqs_sent_total",
            &[("subsystem", NQN)]
        ),
        0.0
    );
}
