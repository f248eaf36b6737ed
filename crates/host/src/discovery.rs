//! Reading a discovery controller's log page (NVMe Base 2.0 §5.16.1.23).

use nvmf_proto::fabrics::DISCOVERY_NQN;
use nvmf_proto::log::{lid, DiscoveryLog};
use nvmf_proto::tcp::HostData;
use nvmf_proto::Sqe;
use nvmf_transport::{HostConnection, TransportAddr};

use crate::assoc::{self, exec, MAX_TRANSFER_CAP};
use crate::error::{Error, Result};
use crate::options::ConnectOptions;

/// Connects to the discovery controller at `addr` (KATO 0), reads the whole
/// Discovery Log Page and disconnects. `hostnqn`: `None` for the default.
pub async fn discover(addr: TransportAddr, hostnqn: Option<&str>) -> Result<DiscoveryLog> {
    let mut opts = ConnectOptions::new(addr, DISCOVERY_NQN);
    if let Some(h) = hostnqn {
        opts.hostnqn = h.to_string();
    }
    discover_with(&opts).await
}

/// As [`discover`] with full options (digests, host ID); the subsystem NQN in
/// `opts` is replaced by the discovery NQN.
pub async fn discover_with(opts: &ConnectOptions) -> Result<DiscoveryLog> {
    let mut opts = opts.clone();
    opts.subnqn = DISCOVERY_NQN.to_string();
    opts.kato_ms = 0;
    opts.nr_io_queues = 0;
    let (mut admin, _cntlid, cap, _vs, id) = assoc::admin_bringup(&opts).await?;
    let page = 1u64 << (12 + u32::from(cap.mpsmin));
    let max = if id.mdts == 0 {
        MAX_TRANSFER_CAP
    } else {
        (page << id.mdts.min(20)).min(u64::from(MAX_TRANSFER_CAP)) as u32
    };
    let r = read_log(&mut admin, max).await;
    let _ = assoc::shutdown(&mut admin).await;
    admin.close().await;
    r
}

async fn read_range(conn: &mut HostConnection, len: u64, max: u32) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(u64::from(max)) as u32;
        let c = exec(
            conn,
            Sqe::get_log_page(lid::DISCOVERY, 0, n, off, false),
            HostData::FromController(n),
        )
        .await?;
        let d = c.data_contiguous();
        if d.len() < n as usize {
            return Err(Error::Invalid(format!(
                "the discovery controller returned {} bytes of log page where {n} were asked for",
                d.len()
            )));
        }
        out.extend_from_slice(&d);
        off += u64::from(n);
    }
    Ok(out)
}

async fn read_log(conn: &mut HostConnection, max: u32) -> Result<DiscoveryLog> {
    for _ in 0..10 {
        let hdr = DiscoveryLog::decode(&read_range(conn, 1024, max).await?);
        let numrec = hdr.numrec.min(4096);
        let full = read_range(conn, 1024 + numrec * 1024, max).await?;
        let log = DiscoveryLog::decode(&full);
        let again = DiscoveryLog::decode(&read_range(conn, 1024, max).await?);
        if again.genctr == hdr.genctr && log.genctr == hdr.genctr {
            return Ok(log);
        }
    }
    Err(Error::Invalid(
        "the discovery log kept changing (GENCTR) over 10 reads".into(),
    ))
}
