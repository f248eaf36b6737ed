//! Our host library against our target: asynchronous events that change what a
//! connected host sees (issue 12: a namespace added by a reload never appeared on
//! a connected host, because the host never enabled the notice), and the example
//! configuration of examples/ served for real.

use std::path::Path;
use std::time::{Duration, Instant};

use nvmf_controller::TargetConfig;
use nvmf_host::{ConnectOptions, Controller};

mod common;
use common::start;

const NQN: &str = "nqn.2024-01.io.nvmf-rs:events";

fn config(extra_ns: &str) -> TargetConfig {
    let text = format!(
        r#"
listen = ["127.0.0.1:0"]
[[subsystem]]
nqn = "{NQN}"
[[subsystem.namespace]]
nsid = 1
memory = "16M"
{extra_ns}
"#
    );
    TargetConfig::from_toml(&text, Path::new("test.toml")).unwrap()
}

async fn wait_for(c: &Controller, want: &[u32]) {
    let start = Instant::now();
    loop {
        let have: Vec<u32> = c.namespaces().iter().map(|n| n.nsid).collect();
        if have == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the host still sees namespaces {have:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_added_and_removed_by_a_reload_reach_a_connected_host() {
    let (t, addr) = start(&config("")).await;
    let mut o = ConnectOptions::new(addr, NQN);
    o.nr_io_queues = 1;
    let c = Controller::connect(o).await.unwrap();
    wait_for(&c, &[1]).await;

    t.reload(&config(
        "[[subsystem.namespace]]\nnsid = 7\nmemory = \"8M\"\nblock_size = 4096",
    ))
    .unwrap();
    wait_for(&c, &[1, 7]).await;
    let ns = c.namespace(7).unwrap();
    assert_eq!((ns.block_size, ns.size_bytes()), (4096, 8 << 20));
    c.write(7, 3, vec![0x5a; 4096], false).await.unwrap();
    assert_eq!(c.read(7, 3, 1).await.unwrap(), vec![0x5a; 4096]);

    t.reload(&config("")).unwrap();
    wait_for(&c, &[1]).await;
    assert!(c.read(7, 3, 1).await.is_err());
    c.disconnect().await.unwrap();
}

/// The example configuration in examples/ parses, and a target started from it
/// serves every subsystem it names (the README points users at it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/target.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Same file, but on free ports and with its files in a temporary directory.
    let dir = std::env::temp_dir().join(format!("nvmf-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = text
        .replace("127.0.0.1:4420", "127.0.0.1:0")
        .replace("127.0.0.1:4421", "127.0.0.2:0")
        .replace("127.0.0.1:9100", "127.0.0.1:0")
        .replace("/tmp/", &format!("{}/", dir.display()));
    let cfg = TargetConfig::from_toml(&text, &path).unwrap();
    assert_eq!(cfg.subsystems.len(), 2);
    let (t, addr) = start(&cfg).await;
    assert!(t.metrics_addr().is_some(), "the example serves metrics");
    for (nqn, nsids) in [
        ("nqn.2024-01.io.example:scratch", vec![1, 2]),
        ("nqn.2024-01.io.example:shared", vec![1]),
    ] {
        let mut o = ConnectOptions::new(addr, nqn);
        o.nr_io_queues = 1;
        let c = Controller::connect(o).await.unwrap();
        let have: Vec<u32> = c.namespaces().iter().map(|n| n.nsid).collect();
        assert_eq!(have, nsids, "{nqn}");
        c.write(nsids[0], 0, vec![1u8; 4096], false).await.unwrap();
        c.disconnect().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
