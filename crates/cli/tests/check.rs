//! `nvmf check` against our own target (every rule must pass or be skipped with a
//! reason) and against small fake targets that break rules on purpose (the checker
//! must say FAIL for exactly those rules and exit 1).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};

mod common;
use common::{free_port, target, NVMF};

fn check(args: &[&str]) -> Output {
    Command::new(NVMF)
        .arg("check")
        .args(args)
        .env("NVMF_LOG", "warn")
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Verdict of rule `id`, or None if it is not in the report.
fn verdict<'a>(v: &'a serde_json::Value, id: &str) -> Option<&'a str> {
    v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["verdict"].as_str())
}

#[test]
fn our_target_meets_every_rule() {
    let (port, disc) = (free_port(), free_port());
    let _t = target(port, disc, &["--memory", "64M"]);
    let (p, d) = (port.to_string(), disc.to_string());
    let out = check(&[
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &p,
        "--discovery-port",
        &d,
        "-o",
        "json",
    ]);
    let v = json(&out);
    let rules = v["rules"].as_array().unwrap();
    for r in rules {
        let verdict = r["verdict"].as_str().unwrap();
        assert!(
            matches!(verdict, "PASS" | "SKIP" | "INFO"),
            "rule failed against our target: {r}"
        );
        assert!(!r["detail"].as_str().unwrap().is_empty(), "{r}");
        assert!(!r["section"].as_str().unwrap().is_empty(), "{r}");
    }
    assert_eq!(v["failed"], 0, "{v:#}");
    assert!(out.status.success(), "exit status {:?}", out.status);
    // Our target supports everything the checker tries: nothing may be skipped,
    // and every robustness rule must end with the right C2HTermReq (PASS, not
    // the INFO of a silent close).
    for id in [
        "tcp.icresp.maxh2cdata",
        "tcp.digest.valid",
        "disc.log.genctr",
        "disc.log.numrec",
        "disc.log.entries",
        "admin.enable",
        "admin.identify.iorcsz",
        "admin.unknown-opcode",
        "io.read",
        "io.read.lba-range",
        "io.write.in-capsule",
        "io.write.r2t",
        "io.write.r2t-small",
        "connect.unknown-subnqn",
        "robust.unknown-pdu-type",
        "robust.bad-hlen",
        "robust.plen-below-hlen",
        "robust.capsule-before-icreq",
        "robust.second-icreq",
        "robust.h2cdata-without-r2t",
        "robust.bad-header-digest",
    ] {
        assert_eq!(verdict(&v, id), Some("PASS"), "{id}: {v:#}");
    }
    assert_eq!(v["skipped"], 0, "{v:#}");

    // The text output: one line per rule and the summary; the same verdicts.
    let out = check(&["-a", "127.0.0.1", "-s", &p, "--discovery-port", &d]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), rules.len() + 1, "{text}");
    assert!(
        lines.last().unwrap().starts_with("summary: ") && text.contains(" 0 failed"),
        "{text}"
    );
    assert!(
        text.contains("PASS  robust.bad-hlen") && text.contains("[TCP 1.0"),
        "{text}"
    );

    // --read-only skips exactly the three write rules.
    let out = check(&[
        "-a",
        "127.0.0.1",
        "-s",
        &p,
        "--discovery-port",
        &d,
        "--read-only",
        "-o",
        "json",
    ]);
    let v = json(&out);
    assert_eq!(v["skipped"], 3, "{v:#}");
    assert_eq!(verdict(&v, "io.write.r2t"), Some("SKIP"));
}

/// How the fake target misbehaves.
#[derive(Clone, Copy)]
enum Fake {
    /// ICResp with PFV 1, CPDA 0, header digest enabled though not asked for,
    /// MAXH2CDATA 1000; then it closes.
    BadIcResp,
    /// A correct ICResp, then it reads whatever comes and never answers.
    Silent,
    /// A correct ICResp, then it closes as soon as anything more arrives (as
    /// nvmet does on a fatal error: no C2HTermReq).
    Closer,
}

fn fake_target(mode: Fake) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || serve(s, mode));
        }
    });
    port
}

fn serve(mut s: TcpStream, mode: Fake) {
    let mut icreq = [0u8; 128];
    if s.read_exact(&mut icreq).is_err() {
        return;
    }
    let mut r = [0u8; 128];
    r[0] = 0x01; // ICResp
    r[2] = 128; // HLEN
    r[4] = 128; // PLEN
    let maxh2cdata: u32 = match mode {
        Fake::BadIcResp => {
            r[8] = 1; // PFV 1
            r[11] = 1; // header digest, whatever was asked
            1000
        }
        Fake::Silent | Fake::Closer => {
            r[11] = icreq[11] & 3;
            131072
        }
    };
    r[12..16].copy_from_slice(&maxh2cdata.to_le_bytes());
    if s.write_all(&r).is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    match mode {
        Fake::Silent => while matches!(s.read(&mut sink), Ok(n) if n > 0) {},
        Fake::Closer => {
            let _ = s.read(&mut sink);
        }
        Fake::BadIcResp => {}
    }
}

#[test]
fn a_bad_icresp_is_reported() {
    let port = fake_target(Fake::BadIcResp).to_string();
    let out = check(&["-a", "127.0.0.1", "-s", &port, "--timeout", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for id in [
        "tcp.icresp.pfv",
        "tcp.icresp.maxh2cdata",
        "tcp.icresp.dgst-unasked",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("FAIL  {id} "))),
            "{id} not FAILed:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("PASS  tcp.icresp.cpda ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("summary: ") && !l.contains(" 0 failed")),
        "{text}"
    );
}

#[test]
fn a_target_that_ignores_malformed_pdus_fails_the_robustness_rules() {
    let port = fake_target(Fake::Silent).to_string();
    let out = check(&[
        "-a",
        "127.0.0.1",
        "-s",
        &port,
        "-n",
        "nqn.2024-01.io.test:fake",
        "--timeout",
        "1",
        "-o",
        "json",
    ]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    // The ICResp itself is right.
    for id in ["tcp.icresp.pfv", "tcp.icresp.maxh2cdata"] {
        assert_eq!(verdict(&v, id), Some("PASS"), "{id}: {v:#}");
    }
    // Nothing is ever answered: Connect fails, and every malformed PDU leaves the
    // connection open (or, before ICReq, is answered with an ICResp).
    for id in [
        "admin.connect",
        "connect.unknown-subnqn",
        "robust.unknown-pdu-type",
        "robust.bad-hlen",
        "robust.plen-below-hlen",
        "robust.capsule-before-icreq",
        "robust.second-icreq",
        "robust.h2cdata-without-r2t",
        "robust.bad-header-digest",
    ] {
        assert_eq!(verdict(&v, id), Some("FAIL"), "{id}: {v:#}");
    }
}

#[test]
fn closing_without_a_termreq_is_info_not_pass() {
    let port = fake_target(Fake::Closer).to_string();
    let out = check(&[
        "-a",
        "127.0.0.1",
        "-s",
        &port,
        "-n",
        "nqn.2024-01.io.test:fake",
        "--timeout",
        "2",
        "-o",
        "json",
    ]);
    let v = json(&out);
    // Connect is never answered: a failure, so exit 1.
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    assert_eq!(verdict(&v, "admin.connect"), Some("FAIL"), "{v:#}");
    for id in [
        "robust.unknown-pdu-type",
        "robust.bad-hlen",
        "robust.plen-below-hlen",
        "robust.second-icreq",
        "robust.h2cdata-without-r2t",
        "robust.bad-header-digest",
    ] {
        assert_eq!(verdict(&v, id), Some("INFO"), "{id}: {v:#}");
    }
}
