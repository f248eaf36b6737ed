//! The RBD backend against a real single-node Ceph cluster
//! (`scripts/ceph-cluster.sh`, started by scripts/test.sh's `rbd` stage, which
//! passes its ceph.conf as `NVMF_CEPH_CONF`): the backend's operations on an
//! image, then `nvmf target --rbd` served to our host's `io-check` and `perf`,
//! with the data checked in the image itself through `rbd export`.
//!
//! `#[ignore]`d: they need the cluster. By hand:
//!
//! ```sh
//! scripts/ceph-cluster.sh start /tmp/nvmf-ceph
//! NVMF_CEPH_CONF=/tmp/nvmf-ceph/ceph.conf cargo test -p nvmf-cli --test rbd -- --ignored
//! scripts/ceph-cluster.sh stop /tmp/nvmf-ceph
//! ```

use std::process::Command;

use nvmf_backend::{Backend, RbdBackend, RbdSpec};

mod common;
use common::{free_port, ok, target};

fn conf() -> String {
    std::env::var("NVMF_CEPH_CONF")
        .expect("NVMF_CEPH_CONF names the test cluster's ceph.conf (scripts/ceph-cluster.sh)")
}

/// `rbd ARGS` against the test cluster, which must succeed; its stdout.
fn rbd(args: &[&str]) -> Vec<u8> {
    let o = Command::new("rbd")
        .arg("-c")
        .arg(conf())
        .args(args)
        .output()
        .expect("run rbd (Debian's ceph-common)");
    assert!(
        o.status.success(),
        "rbd {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// A fresh image of `mib` MiB named after the test.
fn image(name: &str, mib: u32) -> RbdSpec {
    let _ = Command::new("rbd")
        .arg("-c")
        .arg(conf())
        .args(["rm", &format!("rbd/{name}")])
        .output();
    rbd(&[
        "create",
        &format!("rbd/{name}"),
        "--size",
        &format!("{mib}M"),
    ]);
    let mut s = RbdSpec::parse(&format!("rbd/{name}")).unwrap();
    s.conf = Some(conf().into());
    s
}

#[test]
#[ignore = "needs a Ceph cluster: scripts/test.sh's rbd stage"]
fn backend_operations_on_an_image() {
    let spec = image("nvmf-backend", 16);
    let b = RbdBackend::open(&spec, 4096).unwrap();
    assert_eq!(b.info().num_blocks, 16 * 256);
    assert_eq!(b.info().description, "rbd rbd/nvmf-backend");

    // A write in three pieces of odd sizes (as PDUs deliver them), read back.
    let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 7 + 3) as u8).collect();
    b.write_at(8192, &[&data[..100], &data[100..5000], &data[5000..]], true)
        .unwrap();
    let mut back = vec![0u8; data.len()];
    b.read_at(8192, &mut back).unwrap();
    assert_eq!(back, data);
    b.flush().unwrap();

    // Discard and write zeroes read back as zeroes; the neighbours stay.
    b.discard(8192, 4096).unwrap();
    b.write_zeroes(16384, 4096).unwrap();
    b.read_at(8192, &mut back).unwrap();
    assert!(back[..4096].iter().all(|&x| x == 0));
    assert_eq!(&back[4096..8192], &data[4096..8192]);
    assert!(back[8192..].iter().all(|&x| x == 0));

    // Bounds and alignment are checked before librbd is asked.
    let mut one = vec![0u8; 4096];
    assert!(b.read_at(16 << 20, &mut one).is_err());
    assert!(b.write_at(100, &[&one], false).is_err());

    // The data is in the image: rbd export sees the middle block.
    drop(b);
    let img = rbd(&["export", "rbd/nvmf-backend", "-"]);
    assert_eq!(&img[12288..16384], &data[4096..8192]);

    // Errors name what is wrong.
    let mut missing = spec.clone();
    missing.image = "no-such-image".into();
    let e = RbdBackend::open(&missing, 4096).unwrap_err().to_string();
    assert!(e.contains("no-such-image"), "{e}");
}

#[test]
#[ignore = "needs a Ceph cluster: scripts/test.sh's rbd stage"]
fn target_serves_an_image_to_io_check_and_perf() {
    image("nvmf-target", 64);
    let (port, disc) = (free_port(), free_port());
    let ns = format!("rbd/nvmf-target,conf={}", conf());
    let _t = target(
        port,
        disc,
        &[
            "--rbd",
            &ns,
            "--block-size",
            "4096",
            "--subnqn",
            "nqn.2024-01.io.test:rbd",
        ],
    );
    let run = tempfile::tempdir().unwrap();
    let p = port.to_string();
    let base = [
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &p,
        "-n",
        "nqn.2024-01.io.test:rbd",
    ];
    let pat = run.path().join("pattern");
    let mut args = vec!["io-check"];
    args.extend(base);
    args.extend(["--bytes", "8M", "--pattern-out", pat.to_str().unwrap()]);
    let out = ok(run.path(), &args);
    assert!(out.contains("PASS"), "{out}");

    // What io-check wrote is in the image.
    let written = std::fs::read(&pat).expect("io-check --pattern-out");
    let img = rbd(&["export", "rbd/nvmf-target", "-"]);
    assert_eq!(
        &img[..written.len()],
        &written[..],
        "the image holds the data io-check wrote"
    );

    // A second target on the same image (a gateway pair, as with ANA HA
    // pairs on a shared file): a host connected to it reads what went
    // through the first.
    let (port2, disc2) = (free_port(), free_port());
    let _t2 = target(
        port2,
        disc2,
        &[
            "--rbd",
            &ns,
            "--block-size",
            "4096",
            "--subnqn",
            "nqn.2024-01.io.test:rbd",
            "--cntlid-range",
            "1000-1999",
        ],
    );
    let p2 = port2.to_string();
    ok(
        run.path(),
        &[
            "connect",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &p2,
            "-n",
            "nqn.2024-01.io.test:rbd",
        ],
    );
    let got = run.path().join("via-second");
    ok(
        run.path(),
        &[
            "read",
            "nvme0n1",
            "-s",
            "0",
            "-c",
            "255",
            "-d",
            got.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(&got).unwrap(),
        &written[..256 * 4096],
        "the second gateway reads what the first wrote"
    );
    ok(run.path(), &["disconnect-all"]);
    // The host daemon this test started would outlive its run directory.
    ok(run.path(), &["host-daemon", "--stop"]);

    let mut args = vec!["perf"];
    args.extend(base);
    args.extend([
        "--rw",
        "randrw",
        "--bs",
        "4k",
        "--iodepth",
        "16",
        "--runtime",
        "3",
        "--size",
        "32M",
        "-o",
        "json",
    ]);
    let out = ok(run.path(), &args);
    let rep: serde_json::Value = serde_json::from_str(&out).expect("perf -o json");
    assert!(rep["total"]["iops"].as_f64().unwrap() > 0.0, "{out}");
    eprintln!("perf through our target on RBD: {}", rep["total"]);
}

/// Two `nvmf target` gateways on one RBD image form an HA pair with ANA: the
/// first port optimized, the second non-optimized, distinct CNTLID ranges.
/// Our multipath I/O (`nvmf_blockdev::Multipath`) prefers the optimized
/// gateway; when that gateway is killed mid-writes, the writes fail over to
/// the other with no error, and the image holds every acknowledged block.
#[test]
#[ignore = "needs a Ceph cluster: scripts/test.sh's rbd stage"]
fn two_gateways_on_one_image_fail_over_with_ana() {
    use nvmf_blockdev::{BlockIo, BlockOp, IoPolicy, Multipath};
    use nvmf_host::{ConnectOptions, Controller, TransportAddr};
    use std::time::Duration;

    image("nvmf-ha", 32);
    let ns = format!("rbd/nvmf-ha,conf={}", conf());
    let nqn = "nqn.2024-01.io.test:rbd-ha";
    let (p1, d1, p2, d2) = (free_port(), free_port(), free_port(), free_port());
    let mut gw1 = target(
        p1,
        d1,
        &[
            "--rbd",
            &ns,
            "--block-size",
            "4096",
            "--subnqn",
            nqn,
            "--cntlid-range",
            "1-99",
        ],
    );
    let ana2 = format!("127.0.0.1:{p2}=1:non-optimized");
    let _gw2 = target(
        p2,
        d2,
        &[
            "--rbd",
            &ns,
            "--block-size",
            "4096",
            "--subnqn",
            nqn,
            "--cntlid-range",
            "100-199",
            "--ana-state",
            &ana2,
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let connect = |port: u16| {
            let mut o = ConnectOptions::new(
                format!("127.0.0.1:{port}")
                    .parse::<TransportAddr>()
                    .unwrap(),
                nqn,
            );
            o.nr_io_queues = 1;
            o.ctrl_loss_tmo = Some(Duration::from_secs(2));
            o.reconnect_delay = Duration::from_secs(1);
            Controller::connect(o)
        };
        let (a, b) = (connect(p1).await.unwrap(), connect(p2).await.unwrap());
        let mp = Multipath::new(&a, 1, IoPolicy::RoundRobin);
        mp.add_path(&b, 1);
        let block = |i: u64| vec![(i as u8).wrapping_mul(31).wrapping_add(7); 4096];
        // Before the failure: only the optimized gateway carries I/O.
        for i in 0..64u64 {
            mp.submit(BlockOp::Write {
                slba: i,
                data: block(i).into(),
                fua: false,
            })
            .await
            .expect("write through the optimized gateway");
        }
        let paths = mp.paths();
        assert!(
            paths[0].commands >= 64 && paths[1].commands == 0,
            "ANA: optimized first: {:?}",
            paths
                .iter()
                .map(|p| (p.commands, p.ana))
                .collect::<Vec<_>>()
        );
        // The optimized gateway dies; writes carry on through the other.
        let writer = {
            let mp = mp.clone();
            tokio::spawn(async move {
                for i in 64..512u64 {
                    mp.submit(BlockOp::Write {
                        slba: i,
                        data: block(i).into(),
                        fua: false,
                    })
                    .await?;
                }
                mp.submit(BlockOp::Flush).await?;
                Ok::<_, nvmf_host::Error>(())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = gw1.0.kill();
        writer
            .await
            .unwrap()
            .expect("no write fails across the gateway failure");
        let paths = mp.paths();
        assert!(paths[1].commands > 0, "the non-optimized gateway took over");
        eprintln!(
            "FIGURE: RBD gateway pair: commands per gateway {:?}, failovers {:?}",
            paths.iter().map(|p| p.commands).collect::<Vec<_>>(),
            paths.iter().map(|p| p.failovers).collect::<Vec<_>>()
        );
    });
    // Every acknowledged block is in the image.
    let img = rbd(&["export", "rbd/nvmf-ha", "-"]);
    for i in 0..512usize {
        assert_eq!(
            img[i * 4096],
            (i as u8).wrapping_mul(31).wrapping_add(7),
            "block {i}"
        );
    }
}
