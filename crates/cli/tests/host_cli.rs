//! The host verbs and library against the real `nvmf target` binary, including
//! reconnect across a SIGKILL of the target.

use std::path::Path;
use std::time::Duration;

mod common;
use common::{free_port, nvmf, ok, target};

const NQN: &str = "nqn.2024-01.io.nvmf-rs:default";

/// Writes `data` to nvme0n1 with `nvmf write` over the blocks `range` names
/// (its -s/-c/-z flags), reads the same blocks back with `nvmf read`, and
/// returns what came back. `name` keeps the files of several calls apart.
fn write_then_read(run: &Path, name: &str, data: &[u8], range: &[&str]) -> Vec<u8> {
    let f = run.join(format!("{name}.in"));
    std::fs::write(&f, data).unwrap();
    let g = run.join(format!("{name}.out"));
    for (verb, file) in [("write", &f), ("read", &g)] {
        let mut args = vec![verb, "nvme0n1"];
        args.extend_from_slice(range);
        args.extend(["-d", file.to_str().unwrap()]);
        ok(run, &args);
    }
    std::fs::read(&g).unwrap()
}

#[test]
fn host_verbs_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let (port, disc) = (free_port(), free_port());
    let _t = target(port, disc, &["--memory", "64M"]);
    let p = port.to_string();
    let d = disc.to_string();

    let out = ok(
        run,
        &[
            "discover",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &d,
            "-o",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["subnqn"] == NQN),
        "{out}"
    );
    assert!(ok(run, &["discover", "-t", "tcp", "-a", "127.0.0.1", "-s", &p]).contains(NQN));

    let out = ok(
        run,
        &[
            "io-check",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &p,
            "-n",
            NQN,
            "-g",
            "-G",
            "-i",
            "2",
            "--bytes",
            "4M",
        ],
    );
    assert!(out.contains("PASS"), "{out}");
    let o = nvmf(
        run,
        &[
            "io-check",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &p,
            "-n",
            "nqn.2024-01.io.test:nope",
            "--bytes",
            "4k",
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nqn.2024-01.io.test:nope"));

    assert!(ok(
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
            "-i",
            "2"
        ]
    )
    .contains("nvme0"));
    assert!(run.join("host.sock").exists());
    let v: serde_json::Value = serde_json::from_str(&ok(run, &["list", "-o", "json"])).unwrap();
    assert_eq!(v["Devices"][0]["DevicePath"], "nvme0n1");
    assert_eq!(v["Devices"][0]["SectorSize"], 512);
    let v: serde_json::Value =
        serde_json::from_str(&ok(run, &["id-ctrl", "nvme0", "-o", "json"])).unwrap();
    assert_eq!(v["subnqn"], NQN);
    assert!(v["ioccsz"].as_u64().unwrap() >= 4);
    let v: serde_json::Value =
        serde_json::from_str(&ok(run, &["id-ns", "nvme0n1", "-o", "json"])).unwrap();
    assert_eq!(v["nsze"], 131072);
    ok(run, &["smart-log", "nvme0", "-o", "json"]);

    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    let back = write_then_read(run, "small", &data, &["-s", "10", "-c", "15", "-z", "8192"]);
    assert_eq!(back, data);

    // verify, compare and copy, with nvme-cli's flags.
    ok(run, &["verify", "nvme0n1", "-s", "10", "-c", "15"]);
    assert!(
        !nvmf(run, &["verify", "nvme0n1", "-s", "131071", "-c", "1"])
            .status
            .success()
    );
    let same = run.join("small.in");
    ok(
        run,
        &[
            "compare",
            "nvme0n1",
            "-s",
            "10",
            "-c",
            "15",
            "-d",
            same.to_str().unwrap(),
        ],
    );
    let mut other = data.clone();
    other[4000] ^= 1;
    let other_f = run.join("other.in");
    std::fs::write(&other_f, &other).unwrap();
    let o = nvmf(
        run,
        &[
            "compare",
            "nvme0n1",
            "-s",
            "10",
            "-c",
            "15",
            "-d",
            other_f.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Compare Failure"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    ok(
        run,
        &[
            "copy", "nvme0n1", "--sdlba", "1000", "--slbs", "10,20", "--blocks", "3,1", "-f",
        ],
    );
    let copied = run.join("copied.out");
    ok(
        run,
        &[
            "read",
            "nvme0n1",
            "-s",
            "1000",
            "-c",
            "5",
            "-d",
            copied.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        [&data[..4 * 512], &data[10 * 512..12 * 512]].concat()
    );

    // write-zeroes and dsm, with nvme-cli's flags, over the blocks 10..26
    // written above: blocks 12-13 zeroed, 20-21 deallocated (a memory
    // namespace reads them as zeroes), a hint-only dsm changes nothing.
    ok(run, &["write-zeroes", "nvme0n1", "-s", "12", "-c", "1"]);
    ok(
        run,
        &["dsm", "nvme0n1", "--slbs", "20", "--blocks", "2", "--ad"],
    );
    ok(
        run,
        &[
            "dsm", "nvme0n1", "-s", "14,16", "-b", "1,1", "-a", "1,2", "-r", "-w",
        ],
    );
    let zeroed = run.join("zeroed.out");
    ok(
        run,
        &[
            "read",
            "nvme0n1",
            "-s",
            "10",
            "-c",
            "15",
            "-d",
            zeroed.to_str().unwrap(),
        ],
    );
    let mut want = data.clone();
    want[2 * 512..4 * 512].fill(0);
    want[10 * 512..12 * 512].fill(0);
    assert!(
        std::fs::read(&zeroed).unwrap() == want,
        "write-zeroes/dsm read back differs"
    );
    let o = nvmf(run, &["dsm", "nvme0n1", "-s", "1,2", "-b", "1", "-d"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("give one block count per range"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = nvmf(run, &["write-zeroes", "nvme0n1", "-s", "131071", "-c", "1"]);
    assert!(!o.status.success());
    let o = nvmf(run, &["write-zeroes", "nvme0", "-s", "0"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needs a namespace such as nvme0n1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The most one command line moves: 65,536 blocks (32 MiB), as raw bytes
    // through the daemon's socket, and more read data outstanding per queue
    // than the target's send backlog limit.
    let big: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let back = write_then_read(run, "big", &big, &["-s", "0", "-c", "65535"]);
    assert!(back == big, "32 MiB read back differs");

    let o = nvmf(run, &["id-ctrl", "nvme9"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no controller nvme9"));
    assert!(ok(run, &["disconnect", "-n", NQN]).contains("disconnected 1"));
    let v: serde_json::Value = serde_json::from_str(&ok(run, &["list", "-o", "json"])).unwrap();
    assert!(v["Devices"].as_array().unwrap().is_empty());
    ok(run, &["host-daemon", "--stop"]);
}

#[test]
fn reconnect_after_target_sigkill() {
    use nvmf_host::{ConnectOptions, Controller, LinkState};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ns.img");
    let spec = format!("{},size=64M", file.display());
    let (port, disc) = (free_port(), free_port());
    let mut t = target(port, disc, &["--file", &spec]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut o = ConnectOptions::new(format!("127.0.0.1:{port}").parse().unwrap(), NQN);
        o.nr_io_queues = 2;
        o.reconnect_delay = Duration::from_millis(250);
        o.ctrl_loss_tmo = Some(Duration::from_secs(30));
        let c = Controller::connect(o).await.unwrap();
        let c2 = c.clone();
        let writer = tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60u64 {
                let d: Vec<u8> = (0..65536u32)
                    .map(|j| (j as u64 * 31 + i * 17) as u8)
                    .collect();
                let lba = i * 128;
                c2.write(1, lba, d.clone(), false).await.unwrap();
                acked.push((lba, d));
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            acked
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        t.0.kill().unwrap(); // SIGKILL
        t.0.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            matches!(c.state(), LinkState::Reconnecting { .. }),
            "{:?}",
            c.state()
        );
        let t2 = target(port, disc, &["--file", &spec]);
        let acked = tokio::time::timeout(Duration::from_secs(60), writer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.state(), LinkState::Live);
        assert_eq!(acked.len(), 60);
        for (lba, d) in acked {
            assert_eq!(c.read(1, lba, 128).await.unwrap(), d, "LBA {lba}");
        }
        c.disconnect().await.unwrap();
        drop(t2);
    });
}
