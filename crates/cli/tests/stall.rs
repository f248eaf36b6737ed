//! 1,000 connections that send half a PDU and stall: the target's memory stays
//! bounded and a well-behaved host is still served. Measured on the real binary
//! (its VmRSS from /proc), not in-process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod common;
use common::{free_port, icreq, spawn_listening};

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn thousand_stalled_connections_stay_bounded() {
    let port = free_port();
    let guard = spawn_listening(
        &[
            "target",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--memory",
            "64M",
            "--threads",
            "1",
        ],
        port,
    );
    let pid = guard.0.id();
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid);
    // ICReq, then the first 40 bytes of a 1096-byte CapsuleCmd, then silence.
    let mut half = vec![0x04u8, 0, 72, 72];
    half.extend_from_slice(&1096u32.to_le_bytes());
    half.resize(40, 0);
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&icreq()).unwrap();
        s.write_all(&half).unwrap();
        conns.push(s);
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid);
    let per_conn = (after.saturating_sub(before) * 1024) / 1000;
    eprintln!("target VmRSS {before} KiB -> {after} KiB with 1000 stalled connections ({per_conn} bytes each)");
    assert!(
        per_conn < 64 * 1024,
        "each stalled connection costs {per_conn} bytes of RSS"
    );
    // A well-behaved connection is still answered.
    let mut good = TcpStream::connect(("127.0.0.1", port)).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    good.write_all(&icreq()).unwrap();
    let mut resp = [0u8; 128];
    good.read_exact(&mut resp).unwrap();
    assert_eq!(resp[0], 0x01, "ICResp");
}
