//! Our host library against our target: asynchronous events that change what a
//! connected host sees (issue 12: a namespace added by a reload never appeared on
//! a connected host, because the host never enabled the notice).

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
