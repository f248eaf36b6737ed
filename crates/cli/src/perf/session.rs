//! Association bring-up for `nvmf perf`, driven directly on transport queues
//! (no host library): Connect admin, enable, Identify, Number of Queues, then one
//! connection per I/O queue.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use nvmf_proto::fabrics::{ConnectCommand, ConnectData, PropertyCommand, CNTLID_DYNAMIC};
use nvmf_proto::identify::{cns, IdentifyController, IdentifyNamespace};
use nvmf_proto::registers::{self, Cap, Cc, Csts};
use nvmf_proto::sqe::admin_opcode;
use nvmf_proto::tcp::{Digests, HostData, HostQueueConfig};
use nvmf_proto::Sqe;
use nvmf_transport::{HostConnection, TransportAddr, TransportError};

/// Host NQN used by `nvmf perf`.
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6e766d66-7065-7266-0000-000000000001";
const HOSTID: [u8; 16] = *b"nvmf-perf-host01";
/// Admin queue depth.
const ADMIN_DEPTH: u16 = 32;
/// Keep Alive Timeout asked for in the admin Connect, in milliseconds.
pub const KATO_MS: u32 = 30_000;

/// What the admin queue learnt about the controller and namespace.
#[derive(Debug, Clone)]
pub struct Controller {
    /// Controller ID, for the I/O queues' Connect.
    pub cntlid: u16,
    /// Largest queue size (1-based) the controller supports.
    pub max_queue_depth: u16,
    /// In-capsule data size of I/O queues (from IOCCSZ).
    pub max_icd: u32,
    /// Largest data transfer of one command (MDTS), in bytes.
    pub max_transfer: u32,
    /// Logical block size of the namespace.
    pub block_size: u32,
    /// Namespace size in blocks.
    pub nsze: u64,
}

/// Maps a transport error at connect time to a message that says what to do.
pub fn connect_error(addr: &TransportAddr, e: TransportError) -> anyhow::Error {
    match &e {
        TransportError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            anyhow!(
                "cannot connect to {addr}: connection refused — is a target running? \
                 start one with: nvmf target --listen {addr}"
            )
        }
        TransportError::Io { source, .. } => anyhow!("cannot connect to {addr}: {source}"),
        _ => anyhow!("cannot connect to {addr}: {e}"),
    }
}

/// The configured TLS PSK of `nvmf perf --tls-key` (one per process).
static TLS_KEY: std::sync::OnceLock<nvmf_proto::tls::ConfiguredPsk> = std::sync::OnceLock::new();

/// Makes every queue of this process run over TLS with `k`.
pub fn set_tls_key(k: nvmf_proto::tls::ConfiguredPsk) {
    let _ = TLS_KEY.set(k);
}

/// Opens one queue's connection and sends Fabrics Connect. Returns the connection
/// and the CNTLID the controller answered with.
pub async fn connect_queue(
    addr: &TransportAddr,
    subnqn: &str,
    qid: u16,
    cntlid: u16,
    depth: u16,
    digests: Digests,
    sqfc_disable: bool,
) -> anyhow::Result<(HostConnection, u16)> {
    // SQSIZE is 0's based and must be at least 1 (a queue of 2 entries).
    let depth = depth.max(2);
    let tls = match TLS_KEY.get() {
        None => None,
        Some(k) => Some(
            nvmf_transport::TlsClientConfig::from_configured(
                k,
                HOSTNQN,
                subnqn,
                nvmf_proto::tls::Derivation::Spec,
            )
            .map_err(|e| connect_error(addr, e))?,
        ),
    };
    let mut c = HostConnection::connect_with(
        addr,
        HostQueueConfig {
            digests,
            queue_depth: depth,
            ..Default::default()
        },
        tls.as_ref(),
    )
    .await
    .map_err(|e| connect_error(addr, e))?;
    if digests.header && !c.digests.header || digests.data && !c.digests.data {
        bail!(
            "the target at {addr} refused the digests asked for (got header={}, data={})",
            c.digests.header,
            c.digests.data
        );
    }
    let cmd = ConnectCommand {
        recfmt: 0,
        qid,
        sqsize: depth - 1,
        cattr: if qid != 0 && sqfc_disable {
            ConnectCommand::CATTR_DISABLE_SQ_FLOW_CONTROL
        } else {
            0
        },
        kato: if qid == 0 { KATO_MS } else { 0 },
    };
    let data = ConnectData {
        hostid: HOSTID,
        cntlid,
        subnqn: subnqn.into(),
        hostnqn: HOSTNQN.into(),
    };
    let r = c
        .execute(
            cmd.to_sqe(),
            HostData::ToController(Bytes::copy_from_slice(&data.encode())),
        )
        .await
        .with_context(|| format!("Connect (QID {qid}) to {addr}"))?;
    if !r.cqe.status.is_success() {
        if qid == 0 {
            bail!(
                "Connect (admin queue) to {subnqn} at {addr} failed: {} — is the NQN right? (-n)",
                r.cqe.status
            );
        }
        bail!(
            "Connect (I/O queue {qid}, SQSIZE {}) to {subnqn} at {addr} failed: {} (attribute info 0x{:08x})",
            depth - 1,
            r.cqe.status,
            r.cqe.dw0
        );
    }
    Ok((c, r.cqe.dw0 as u16))
}

async fn admin(
    c: &mut HostConnection,
    sqe: Sqe,
    data: HostData,
    what: &str,
) -> anyhow::Result<nvmf_proto::tcp::Completion> {
    let r = c
        .execute(sqe, data)
        .await
        .with_context(|| format!("{what} on the admin queue"))?;
    if !r.cqe.status.is_success() {
        bail!("{what} failed: {}", r.cqe.status);
    }
    Ok(r)
}

/// Connects the admin queue, enables the controller, asks for `nr_io_queues`
/// I/O queues and identifies namespace `nsid`.
pub async fn bring_up(
    addr: &TransportAddr,
    subnqn: &str,
    nsid: u32,
    nr_io_queues: u16,
    digests: Digests,
) -> anyhow::Result<(HostConnection, Controller)> {
    let (mut c, cntlid) =
        connect_queue(addr, subnqn, 0, CNTLID_DYNAMIC, ADMIN_DEPTH, digests, false).await?;
    let cap = admin(
        &mut c,
        PropertyCommand::get_sqe(registers::CAP, true),
        HostData::None,
        "Property Get CAP",
    )
    .await?;
    let cap = Cap::from_u64(cap.cqe.result64());
    let cc = Cc {
        en: true,
        iosqes: 6,
        iocqes: 4,
        ..Default::default()
    };
    admin(
        &mut c,
        PropertyCommand::set_sqe(registers::CC, false, u64::from(cc.to_u32())),
        HostData::None,
        "Property Set CC",
    )
    .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = admin(
            &mut c,
            PropertyCommand::get_sqe(registers::CSTS, false),
            HostData::None,
            "Property Get CSTS",
        )
        .await?;
        if Csts::from_u32(s.cqe.dw0).rdy {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("the controller did not become ready (CSTS.RDY) within 5 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = admin(
        &mut c,
        Sqe::identify(cns::CONTROLLER, 0),
        HostData::FromController(4096),
        "Identify Controller",
    )
    .await?;
    let id = IdentifyController::decode(&id.data_contiguous());
    let mut nq = Sqe::new(admin_opcode::SET_FEATURES);
    nq.cdw10 = 0x07;
    let n = u32::from(nr_io_queues.saturating_sub(1));
    nq.cdw11 = (n << 16) | n;
    let r = admin(
        &mut c,
        nq,
        HostData::None,
        "Set Features (Number of Queues)",
    )
    .await?;
    let granted = (r.cqe.dw0 & 0xffff).min(r.cqe.dw0 >> 16) + 1;
    if granted < u32::from(nr_io_queues) {
        bail!("the controller grants {granted} I/O queues, {nr_io_queues} asked for (--numjobs)");
    }
    let ns = admin(
        &mut c,
        Sqe::identify(cns::NAMESPACE, nsid),
        HostData::FromController(4096),
        "Identify Namespace",
    )
    .await?;
    let ns = IdentifyNamespace::decode(&ns.data_contiguous());
    if ns.nsze == 0 {
        bail!("namespace {nsid} does not exist on {subnqn} (--nsid)");
    }
    Ok((
        c,
        Controller {
            cntlid,
            max_queue_depth: cap.mqes.saturating_add(1),
            max_icd: id.in_capsule_data_size(),
            max_transfer: nvmf_host::max_transfer(id.mdts, cap.mpsmin),
            block_size: ns.block_size(),
            nsze: ns.nsze,
        },
    ))
}
