//! The test-only controller of `tests/support`, as a program for trying the CLI:
//! `cargo run -p nvmf-host --example mini_target -- 127.0.0.1:4420 [MiB]`.

#[path = "../tests/support/mod.rs"]
mod support;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:4420".into());
    let mib: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let t = support::MiniTarget::start(&addr, support::store(mib << 20)).await;
    eprintln!("mini target: {} on {}", support::NQN, t.addr);
    let _ = tokio::signal::ctrl_c().await;
}
