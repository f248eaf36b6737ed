//! `nvmf target --listen rdma://...` where no RDMA device has the address:
//! the target must refuse to start with a message that says what NVMe/RDMA
//! needs, and an unknown transport scheme must be named. (The NVMe/RDMA path
//! itself runs against the Linux kernel host in the guest: tests/interop,
//! suite `rdma`.)

mod common;

use std::path::Path;

/// This machine (and CI's) has no RDMA device, so binding fails; on a machine
/// with one the bind may succeed and this check says nothing.
fn has_rdma_device() -> bool {
    std::fs::read_dir("/sys/class/infiniband").is_ok_and(|mut d| d.next().is_some())
}

#[test]
fn rdma_listen_without_a_device_is_refused_with_a_remedy() {
    if has_rdma_device() {
        eprintln!("note: an RDMA device is present; the refusal is not checked here");
        return;
    }
    let port = common::free_port().to_string();
    let listen = format!("rdma://127.0.0.1:{port}");
    let o = common::nvmf(
        Path::new("/nonexistent"),
        &["target", "--listen", &listen, "--memory", "16M"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "started without an RDMA device: {err}");
    assert!(err.contains("NVMe/RDMA"), "{err}");
    assert!(err.contains("rdma link add"), "no remedy in: {err}");
    assert!(
        !err.contains("another target"),
        "a TCP hint for an RDMA error: {err}"
    );
}

#[test]
fn unknown_transport_scheme_is_named() {
    let o = common::nvmf(
        Path::new("/nonexistent"),
        &[
            "target",
            "--listen",
            "fc://127.0.0.1:4420",
            "--memory",
            "16M",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("unknown transport 'fc'"), "{err}");
}
