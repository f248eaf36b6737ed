//! Helpers shared by the controller crate's integration tests (each test file
//! is its own crate, so not every file uses every helper).
#![allow(dead_code)]

use std::sync::Arc;

use nvmf_controller::{Target, TargetConfig};
use nvmf_proto::fabrics::PropertyCommand;
use nvmf_proto::log::{lid, DiscoveryLog};
use nvmf_proto::registers::{self, Cap, Cc, Csts};
use nvmf_proto::tcp::HostData;
use nvmf_proto::Sqe;
use nvmf_transport::{HostConnection, TransportAddr};

/// Binds and serves `cfg`; returns the target and its first port.
pub async fn start(cfg: &TargetConfig) -> (Arc<Target>, TransportAddr) {
    let t = Arc::new(Target::bind(cfg).await.unwrap());
    let addr = t.ports()[0];
    tokio::spawn(t.clone().serve());
    (t, addr)
}

/// Enables a connected admin queue (CAP, CC.EN, CSTS.RDY) of an I/O controller.
pub async fn enable(c: &mut HostConnection) {
    let cap = c
        .execute(
            PropertyCommand::get_sqe(registers::CAP, true),
            HostData::None,
        )
        .await
        .unwrap();
    let cap = Cap::from_u64(cap.cqe.result64());
    assert_eq!(cap.mqes, 127);
    let cc = Cc {
        en: true,
        iosqes: 6,
        iocqes: 4,
        ..Default::default()
    };
    let r = c
        .execute(
            PropertyCommand::set_sqe(registers::CC, false, u64::from(cc.to_u32())),
            HostData::None,
        )
        .await
        .unwrap();
    assert!(r.cqe.status.is_success());
    let s = c
        .execute(
            PropertyCommand::get_sqe(registers::CSTS, false),
            HostData::None,
        )
        .await
        .unwrap();
    assert!(Csts::from_u32(s.cqe.dw0).rdy);
}

/// Enables a connected discovery controller and reads its Discovery Log Page.
pub async fn read_discovery_log(d: &mut HostConnection) -> DiscoveryLog {
    let cc = Cc {
        en: true,
        ..Default::default()
    };
    d.execute(
        PropertyCommand::set_sqe(registers::CC, false, u64::from(cc.to_u32())),
        HostData::None,
    )
    .await
    .unwrap();
    let log = d
        .execute(
            Sqe::get_log_page(lid::DISCOVERY, 0, 4096, 0, false),
            HostData::FromController(4096),
        )
        .await
        .unwrap();
    DiscoveryLog::decode(&log.data_contiguous())
}

/// Sends Connect (`cmd` with its data `data`) on `c` and returns the completion,
/// whatever its status: each test checks what it expects of it.
pub async fn send_connect(
    c: &mut HostConnection,
    cmd: &nvmf_proto::fabrics::ConnectCommand,
    data: &nvmf_proto::fabrics::ConnectData,
) -> Result<nvmf_proto::tcp::Completion, nvmf_transport::TransportError> {
    c.execute(
        cmd.to_sqe(),
        HostData::ToController(bytes::Bytes::copy_from_slice(&data.encode())),
    )
    .await
}
