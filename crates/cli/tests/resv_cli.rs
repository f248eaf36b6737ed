//! `nvmf resv-*` from two hosts (two host daemons with their own host NQN and
//! host ID) against the real `nvmf target` binary, and a reservation on a file
//! namespace that survives a SIGKILL and restart of the target.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::{free_port, nvmf, ok, target};

const NQN: &str = "nqn.2024-01.io.nvmf-rs:default";

/// Writes one block from `run`'s host: Ok, or the error text.
fn write_block(run: &Path, fill: u8) -> Result<(), String> {
    let f = run.join("blk");
    std::fs::write(&f, vec![fill; 512]).unwrap();
    let o = nvmf(
        run,
        &["write", "nvme0n1", "-s", "4", "-d", f.to_str().unwrap()],
    );
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn report(run: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(run, &["resv-report", "nvme0n1", "--eds", "-o", "json"])).unwrap()
}

#[test]
fn two_hosts_write_exclusive_and_a_target_restart() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ns.img");
    let spec = format!("{},size=16M", img.display());
    let (port, disc) = (free_port(), free_port());
    let mut t = target(port, disc, &["--file", &spec]);
    let p = port.to_string();
    let hosts = [
        (dir.path().join("a"), "0000000a", "0xaa"),
        (dir.path().join("b"), "0000000b", "0xbb"),
    ];
    for (run, id, _) in &hosts {
        std::fs::create_dir_all(run).unwrap();
        let hostid = format!("{id}-0000-4000-8000-000000000000");
        let hostnqn = format!("nqn.2014-08.org.nvmexpress:uuid:{hostid}");
        ok(
            run,
            &[
                "connect",
                "-t",
                "tcp",
                "-a",
                "127.0.0.1",
                "-s",
                &p,
                "-n",
                NQN,
                "-q",
                &hostnqn,
                "-I",
                &hostid,
                "-c",
                "1",
                "-l",
                "60",
            ],
        );
    }
    let (a, b) = (&hosts[0].0, &hosts[1].0);
    // A registers with CPTPL = 11b (persist through power loss), B registers.
    let out = ok(
        a,
        &[
            "resv-register",
            "nvme0n1",
            "--nrkey",
            "0xaa",
            "--rrega",
            "0",
            "--cptpl",
            "3",
        ],
    );
    assert!(out.contains("success"), "{out}");
    ok(b, &["resv-register", "nvme0n1", "--nrkey", "0xbb"]);
    // A wrong key is refused.
    let o = nvmf(
        a,
        &["resv-acquire", "nvme0n1", "--crkey", "0xab", "--rtype", "1"],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Reservation Conflict"));
    ok(
        a,
        &[
            "resv-acquire",
            "nvme0n1",
            "--crkey",
            "0xaa",
            "--rtype",
            "1",
            "--racqa",
            "0",
        ],
    );
    // Write Exclusive: B may read but not write; A may write.
    let e = write_block(b, 0xb).unwrap_err();
    assert!(e.contains("Reservation Conflict"), "{e}");
    ok(
        b,
        &[
            "read",
            "nvme0n1",
            "-s",
            "4",
            "-d",
            b.join("r").to_str().unwrap(),
        ],
    );
    write_block(a, 0xa).unwrap();
    let r = report(b);
    assert_eq!(
        (
            r["rtype"].as_u64(),
            r["regctl"].as_u64(),
            r["ptpls"].as_u64()
        ),
        (Some(1), Some(2), Some(1))
    );
    let regs = r["regctlext"].as_array().unwrap();
    let holder = regs.iter().find(|x| x["rcsts"] == 1).unwrap();
    assert_eq!(holder["rkey"].as_u64(), Some(0xaa));
    assert_eq!(
        holder["hostid"].as_str(),
        Some("0000000a000040008000000000000000")
    );
    // EDS = 0 is refused (128-bit host IDs).
    assert!(!nvmf(b, &["resv-report", "nvme0n1", "-o", "json"])
        .status
        .success());

    // SIGKILL the target and start it again on the same file.
    t.0.kill().unwrap();
    t.0.wait().unwrap();
    let _t2 = target(port, disc, &["--file", &spec]);
    // The hosts reconnect (reconnect delay 1 s); the reservation is still there.
    let t0 = Instant::now();
    let r = loop {
        let o = nvmf(b, &["resv-report", "nvme0n1", "--eds", "-o", "json"]);
        if o.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no reconnect");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        (r["rtype"].as_u64(), r["regctl"].as_u64()),
        (Some(1), Some(2))
    );
    let e = write_block(b, 0xb).unwrap_err();
    assert!(e.contains("Reservation Conflict"), "{e}");
    // Release: B may write again.
    ok(
        a,
        &[
            "resv-release",
            "nvme0n1",
            "--crkey",
            "0xaa",
            "--rtype",
            "1",
            "--rrela",
            "0",
        ],
    );
    write_block(b, 0xb).unwrap();
    assert_eq!(report(a)["rtype"].as_u64(), Some(0));
    for (run, _, key) in &hosts {
        ok(
            run,
            &["resv-register", "nvme0n1", "--crkey", key, "--rrega", "1"],
        );
        ok(run, &["host-daemon", "--stop"]);
    }
}
