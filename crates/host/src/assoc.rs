//! Bringing an association up and down: the admin queue's bring-up sequence
//! (Connect, CAP/VS, CC.EN, CSTS.RDY, Identify, Number of Queues) and the I/O queue
//! connections (NVMe-oF 1.1 §3.3; the order FreeBSD's and Linux's hosts use).

use std::time::Duration;

use bytes::Bytes;
use nvmf_proto::fabrics::{
    authreq, ConnectCommand, ConnectData, PropertyCommand, CNTLID_DYNAMIC, DISCOVERY_NQN,
};
use nvmf_proto::features::{aec, fid, number_of_queues};
use nvmf_proto::identify::{cns, IdentifyController, IdentifyNamespace};
use nvmf_proto::registers::{self, Cap, Cc, Csts};
use nvmf_proto::sqe::admin_opcode;
use nvmf_proto::tcp::{Completion, Digests, HostData, HostQueueConfig};
use nvmf_proto::{Sqe, Status};
use nvmf_transport::addr::TransportKind;
use nvmf_transport::{HostConnection, TransportError};

use crate::error::{Error, Result};
use crate::options::{ConnectOptions, ADMIN_QUEUE_DEPTH};

/// Largest transfer per command when MDTS says "no limit".
pub const MAX_TRANSFER_CAP: u32 = 1 << 20;

/// The largest data transfer of one command, in bytes: MDTS is a power of two
/// in units of the minimum memory page size CAP.MPSMIN, 0 meaning no limit
/// (NVMe Base 2.0 §5.17.2.1, Identify Controller byte 77; §3.1.3, CAP).
/// Capped at [`MAX_TRANSFER_CAP`] either way. A command above it is an error
/// the controller may answer by ending the connection (SPDK's target sends a
/// C2HTermReq; ours answers Invalid Field in Command), so hosts split larger
/// I/O.
pub fn max_transfer(mdts: u8, mpsmin: u8) -> u32 {
    let page = 1u64 << (12 + u32::from(mpsmin.min(15)));
    if mdts == 0 {
        MAX_TRANSFER_CAP
    } else {
        (page << mdts.min(20)).min(u64::from(MAX_TRANSFER_CAP)) as u32
    }
}
/// How long one admin command of the bring-up may take.
pub(crate) const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// What the bring-up learnt about the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    /// Controller ID the controller gave the association.
    pub cntlid: u16,
    /// CAP property.
    pub cap: Cap,
    /// VS property.
    pub vs: u32,
    /// Identify Controller data.
    pub id: IdentifyController,
    /// I/O queues granted and connected.
    pub nr_io_queues: u16,
    /// Entries per I/O queue.
    pub io_queue_size: u16,
    /// In-capsule data limit of I/O queues (from IOCCSZ).
    pub io_icd: u32,
    /// Largest transfer per command in bytes (MDTS, capped at 1 MiB).
    pub max_transfer: u32,
    /// Digests in force.
    pub digests: Digests,
}

/// A live association: the admin connection, the I/O connections and what was learnt.
pub(crate) struct Association {
    pub admin: HostConnection,
    pub io: Vec<HostConnection>,
    pub info: ControllerInfo,
}

pub(crate) fn what(sqe: &Sqe) -> String {
    use nvmf_proto::fabrics::fctype;
    match sqe.opcode {
        admin_opcode::FABRICS => match sqe.fctype() {
            fctype::CONNECT => "Connect".into(),
            fctype::PROPERTY_GET => format!("Property Get {:#x}", sqe.cdw11),
            fctype::PROPERTY_SET => format!("Property Set {:#x}", sqe.cdw11),
            t => format!("Fabrics command {t:#x}"),
        },
        o => format!("command {o:#04x}"),
    }
}

fn what_admin(sqe: &Sqe) -> String {
    match sqe.opcode {
        admin_opcode::IDENTIFY => {
            format!("Identify (CNS {:#x}, NSID {})", sqe.cdw10 & 0xff, sqe.nsid)
        }
        admin_opcode::GET_LOG_PAGE => format!("Get Log Page {:#04x}", sqe.cdw10 & 0xff),
        admin_opcode::SET_FEATURES => format!("Set Features {:#04x}", sqe.cdw10 & 0xff),
        admin_opcode::GET_FEATURES => format!("Get Features {:#04x}", sqe.cdw10 & 0xff),
        admin_opcode::KEEP_ALIVE => "Keep Alive".into(),
        admin_opcode::ASYNC_EVENT_REQUEST => "Asynchronous Event Request".into(),
        _ => what(sqe),
    }
}

/// Turns a completion with an error status into [`Error::Nvme`].
pub(crate) fn check(c: Completion, sqe: &Sqe, admin: bool) -> Result<Completion> {
    if c.cqe.status.is_success() {
        Ok(c)
    } else {
        let what = if admin { what_admin(sqe) } else { io_what(sqe) };
        Err(Error::Nvme {
            what,
            status: c.cqe.status,
        })
    }
}

fn io_what(sqe: &Sqe) -> String {
    use nvmf_proto::sqe::io_opcode;
    match sqe.opcode {
        io_opcode::READ => format!(
            "Read of {} blocks at LBA {} (NSID {})",
            sqe.nlb(),
            sqe.slba(),
            sqe.nsid
        ),
        io_opcode::WRITE => format!(
            "Write of {} blocks at LBA {} (NSID {})",
            sqe.nlb(),
            sqe.slba(),
            sqe.nsid
        ),
        io_opcode::FLUSH => format!("Flush (NSID {})", sqe.nsid),
        o => format!("I/O command {o:#04x}"),
    }
}

/// Executes one command on a connection the caller drives, with a timeout and status check.
pub(crate) async fn exec(
    conn: &mut HostConnection,
    sqe: Sqe,
    data: HostData,
) -> Result<Completion> {
    let c = tokio::time::timeout(ADMIN_TIMEOUT, conn.execute(sqe, data))
        .await
        .map_err(|_| {
            Error::Timeout(format!(
                "{} got no answer within {ADMIN_TIMEOUT:?}",
                what_admin(&sqe)
            ))
        })??;
    check(c, &sqe, true)
}

pub(crate) async fn prop_get(conn: &mut HostConnection, off: u32, eight: bool) -> Result<u64> {
    let c = exec(conn, PropertyCommand::get_sqe(off, eight), HostData::None).await?;
    Ok(if eight {
        c.cqe.result64()
    } else {
        u64::from(c.cqe.dw0)
    })
}

pub(crate) async fn prop_set(
    conn: &mut HostConnection,
    off: u32,
    eight: bool,
    v: u64,
) -> Result<()> {
    exec(
        conn,
        PropertyCommand::set_sqe(off, eight, v),
        HostData::None,
    )
    .await?;
    Ok(())
}

fn digests(opts: &ConnectOptions) -> Digests {
    Digests {
        header: opts.hdr_digest,
        data: opts.data_digest,
    }
}

/// Connects queue `qid` of `depth` commands on the transport `opts.addr`
/// names; `icd` is the in-capsule data the controller takes (known from
/// Identify for I/O queues; RDMA sizes its capsule buffers by it).
async fn queue_connect(
    opts: &ConnectOptions,
    qid: u16,
    depth: u16,
    icd: u32,
) -> Result<HostConnection> {
    match opts.addr.kind {
        TransportKind::Tcp => tcp_connect(opts, depth).await,
        TransportKind::Rdma => {
            if opts.tls_key.is_some() {
                return Err(Error::Transport(TransportError::Tls(
                    "TLS is an NVMe/TCP channel; NVMe/RDMA has none (drop --tls or use -t tcp)"
                        .into(),
                )));
            }
            HostConnection::connect_rdma(&opts.addr, qid, depth, icd)
                .await
                .map_err(|e| unreachable_or(opts, e))
        }
    }
}

/// A transport error, as [`Error::Unreachable`] when it says the controller
/// could not be reached.
fn unreachable_or(opts: &ConnectOptions, e: TransportError) -> Error {
    match e {
        TransportError::Io { ref source, .. } => Error::Unreachable {
            addr: opts.addr.to_string(),
            reason: source.to_string(),
            transport: e,
        },
        TransportError::Timeout(ref m) => Error::Unreachable {
            addr: opts.addr.to_string(),
            reason: m.clone(),
            transport: e,
        },
        e => Error::Transport(e),
    }
}

async fn tcp_connect(opts: &ConnectOptions, depth: u16) -> Result<HostConnection> {
    let cfg = HostQueueConfig {
        digests: digests(opts),
        max_icd: 8192,
        queue_depth: depth,
        ..HostQueueConfig::default()
    };
    let tls = match &opts.tls_key {
        None => None,
        Some(k) => Some(
            nvmf_transport::TlsClientConfig::from_configured(
                k,
                &opts.hostnqn,
                &opts.subnqn,
                opts.tls_derivation,
            )
            .map_err(Error::Transport)?,
        ),
    };
    HostConnection::connect_with(&opts.addr, cfg, tls.as_ref())
        .await
        .map_err(|e| unreachable_or(opts, e))
}

fn connect_hint(opts: &ConnectOptions, c: &Completion) -> String {
    let s = c.cqe.status;
    if s.sct == Status::CONNECT_INVALID_PARAMETERS.sct
        && s.sc == Status::CONNECT_INVALID_PARAMETERS.sc
    {
        match c.cqe.dw0 & 0xffff {
            256 => format!(
                " — the target has no subsystem named {} (list them with: nvmf discover -t tcp -a {} -s {})",
                opts.subnqn,
                opts.addr.traddr(),
                opts.addr.trsvcid()
            ),
            512 => " — the target does not accept this host NQN (check -q / /etc/nvme/hostnqn)".into(),
            16 => " — the controller ID is not valid (the association may have been torn down)".into(),
            ipo => format!(" (invalid parameter at offset {ipo})"),
        }
    } else if s == Status::CONNECT_INVALID_HOST || (s.sct == 1 && s.sc == 0x84) {
        format!(
            " — host {} is not allowed to use {} (add it to the subsystem's allowed hosts)",
            opts.hostnqn, opts.subnqn
        )
    } else {
        String::new()
    }
}

/// Connect's CATTR (NVMe over Fabrics 1.1 Figure 20): bit 2 disables SQ flow
/// control when the options ask for it.
fn connect_cattr(opts: &ConnectOptions) -> u8 {
    if opts.disable_sqflow {
        nvmf_proto::fabrics::ConnectCommand::CATTR_DISABLE_SQ_FLOW_CONTROL
    } else {
        0
    }
}

async fn fabrics_connect(
    conn: &mut HostConnection,
    opts: &ConnectOptions,
    qid: u16,
    sqsize: u16,
    cntlid: u16,
    kato: u32,
) -> Result<u16> {
    let sqe = ConnectCommand {
        recfmt: 0,
        qid,
        sqsize,
        cattr: connect_cattr(opts),
        kato,
    }
    .to_sqe();
    let data = ConnectData {
        hostid: opts.hostid,
        cntlid,
        subnqn: opts.subnqn.clone(),
        hostnqn: opts.hostnqn.clone(),
    }
    .encode();
    let c = tokio::time::timeout(
        ADMIN_TIMEOUT,
        conn.execute(sqe, HostData::ToController(Bytes::copy_from_slice(&data))),
    )
    .await
    .map_err(|_| {
        Error::Timeout(format!(
            "Connect (QID {qid}) got no answer within {ADMIN_TIMEOUT:?}"
        ))
    })??;
    if !c.cqe.status.is_success() {
        return Err(Error::ConnectRejected {
            addr: opts.addr.to_string(),
            subnqn: opts.subnqn.clone(),
            status: c.cqe.status,
            hint: connect_hint(opts, &c),
        });
    }
    crate::auth::authenticate(conn, opts, qid, c.cqe.dw0 & authreq::ATR != 0).await?;
    Ok((c.cqe.dw0 & 0xffff) as u16)
}

/// Sets CC.EN and waits for CSTS.RDY; returns CAP and VS.
async fn enable(conn: &mut HostConnection) -> Result<(Cap, u32)> {
    let cap = Cap::from_u64(prop_get(conn, registers::CAP, true).await?);
    let vs = prop_get(conn, registers::VS, false).await? as u32;
    let cc = Cc {
        en: true,
        css: 0,
        mps: cap.mpsmin,
        ams: 0,
        shn: 0,
        iosqes: 6,
        iocqes: 4,
    };
    prop_set(conn, registers::CC, false, u64::from(cc.to_u32())).await?;
    let limit = Duration::from_millis(500 * u64::from(cap.to.max(1)));
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        let csts = Csts::from_u32(prop_get(conn, registers::CSTS, false).await? as u32);
        if csts.cfs {
            return Err(Error::NotReady(
                "the controller reports Controller Fatal Status (CSTS.CFS)".into(),
            ));
        }
        if csts.rdy {
            return Ok((cap, vs));
        }
        if start.elapsed() > limit {
            return Err(Error::NotReady(format!(
                "CSTS.RDY still 0 after {limit:?} (CAP.TO = {})",
                cap.to
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// Normal shutdown: CC.SHN = 01b, then wait (bounded) for CSTS.SHST = 10b.
pub(crate) async fn shutdown(conn: &mut HostConnection) -> Result<()> {
    let cc = prop_get(conn, registers::CC, false).await? as u32;
    let mut c = Cc::from_u32(cc);
    c.shn = 1;
    prop_set(conn, registers::CC, false, u64::from(c.to_u32())).await?;
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let csts = Csts::from_u32(prop_get(conn, registers::CSTS, false).await? as u32);
        if csts.shst == 2 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(Error::Timeout(
        "shutdown did not complete (CSTS.SHST) within 5 s".into(),
    ))
}

/// Brings up the admin queue of an association: Connect, enable, Identify Controller.
pub(crate) async fn admin_bringup(
    opts: &ConnectOptions,
) -> Result<(HostConnection, u16, Cap, u32, IdentifyController)> {
    let kato = if opts.subnqn == DISCOVERY_NQN {
        0
    } else {
        opts.kato_ms
    };
    admin_bringup_kato(opts, kato).await
}

/// As [`admin_bringup`] with the Keep Alive Timeout given: a persistent
/// discovery controller keeps one (NVMe-oF 1.1 §3.4, Base 2.0 §3.9).
pub(crate) async fn admin_bringup_kato(
    opts: &ConnectOptions,
    kato: u32,
) -> Result<(HostConnection, u16, Cap, u32, IdentifyController)> {
    let mut admin = queue_connect(opts, 0, ADMIN_QUEUE_DEPTH, 0).await?;
    let cntlid = fabrics_connect(
        &mut admin,
        opts,
        0,
        ADMIN_QUEUE_DEPTH - 1,
        CNTLID_DYNAMIC,
        kato,
    )
    .await?;
    let (cap, vs) = enable(&mut admin).await?;
    let c = exec(
        &mut admin,
        Sqe::identify(cns::CONTROLLER, 0),
        HostData::FromController(4096),
    )
    .await?;
    let id = IdentifyController::decode(&c.data_contiguous());
    Ok((admin, cntlid, cap, vs, id))
}

/// The notices the host acts on: namespace attributes (rescan), ANA change.
const AEN_WANTED: u32 = aec::NS_ATTRIBUTE | aec::ANA_CHANGE;

/// Enables the notices the controller supports (OAES) and the host acts on, with
/// Set Features Asynchronous Event Configuration (NVMe Base 2.0 §5.27.1.7); as
/// Linux's `nvme_enable_aen`. Without it a controller sends no notice, and a
/// namespace added on the target never appears on the host. A failure is logged,
/// not fatal: the association works without notices.
async fn enable_async_events(admin: &mut HostConnection, id: &IdentifyController) {
    let want = id.oaes & AEN_WANTED;
    if want == 0 {
        return;
    }
    let mut s = Sqe::new(admin_opcode::SET_FEATURES);
    s.cdw10 = u32::from(fid::ASYNC_EVENT_CONFIG);
    s.cdw11 = want;
    if let Err(e) = exec(admin, s, HostData::None).await {
        tracing::warn!("could not enable asynchronous event notices {want:#x}: {e}");
    }
}

/// Brings up a whole association.
pub(crate) async fn establish(opts: &ConnectOptions) -> Result<Association> {
    let (mut admin, cntlid, cap, vs, id) = admin_bringup(opts).await?;
    let mut granted = 0u16;
    if opts.nr_io_queues > 0 {
        let mut s = Sqe::new(admin_opcode::SET_FEATURES);
        s.cdw10 = u32::from(fid::NUMBER_OF_QUEUES);
        s.cdw11 = number_of_queues(opts.nr_io_queues, opts.nr_io_queues);
        let c = exec(&mut admin, s, HostData::None).await?;
        let nsqa = (c.cqe.dw0 & 0xffff) as u16;
        let ncqa = (c.cqe.dw0 >> 16) as u16;
        granted = opts
            .nr_io_queues
            .min(nsqa.saturating_add(1))
            .min(ncqa.saturating_add(1));
    }
    if !opts.is_discovery() {
        enable_async_events(&mut admin, &id).await;
    }
    let mut qsize = opts
        .queue_size
        .max(2)
        .min(cap.mqes.saturating_add(1).max(2));
    if id.maxcmd > 1 {
        qsize = qsize.min(id.maxcmd);
    }
    let io_icd = id.in_capsule_data_size();
    let max_transfer = max_transfer(id.mdts, cap.mpsmin);
    let mut io = Vec::with_capacity(usize::from(granted));
    for qid in 1..=granted {
        io.push(connect_io(opts, cntlid, qid, io_icd, qsize).await?);
    }
    let digests = admin.digests;
    Ok(Association {
        admin,
        io,
        info: ControllerInfo {
            cntlid,
            cap,
            vs,
            id,
            nr_io_queues: granted,
            io_queue_size: qsize,
            io_icd,
            max_transfer,
            digests,
        },
    })
}

/// Reads the active namespace list and each namespace's Identify data.
pub(crate) async fn read_namespaces_direct(
    conn: &mut HostConnection,
) -> Result<Vec<(u32, IdentifyNamespace)>> {
    let c = exec(
        conn,
        Sqe::identify(cns::ACTIVE_NS_LIST, 0),
        HostData::FromController(4096),
    )
    .await?;
    let ids = nvmf_proto::identify::decode_ns_list(&c.data_contiguous());
    let mut out = Vec::new();
    for nsid in ids {
        let c = exec(
            conn,
            Sqe::identify(cns::NAMESPACE, nsid),
            HostData::FromController(4096),
        )
        .await?;
        out.push((nsid, IdentifyNamespace::decode(&c.data_contiguous())));
    }
    Ok(out)
}

/// Connects one I/O queue of an existing association.
pub(crate) async fn connect_io(
    opts: &ConnectOptions,
    cntlid: u16,
    qid: u16,
    icd: u32,
    qsize: u16,
) -> Result<HostConnection> {
    let qsize = qsize.max(2);
    let mut c = queue_connect(opts, qid, qsize, icd).await?;
    fabrics_connect(&mut c, opts, qid, qsize - 1, cntlid, 0).await?;
    c.set_limits(icd, qsize);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_transfer_follows_mdts_and_mpsmin_and_is_capped() {
        assert_eq!(max_transfer(5, 0), 128 << 10); // SPDK's TCP default
        assert_eq!(max_transfer(8, 0), 1 << 20); // ours
        assert_eq!(max_transfer(2, 1), 32 << 10); // 8 KiB pages
        assert_eq!(max_transfer(0, 0), MAX_TRANSFER_CAP); // no limit
        assert_eq!(max_transfer(9, 0), MAX_TRANSFER_CAP);
        assert_eq!(max_transfer(255, 15), MAX_TRANSFER_CAP);
    }
}
