//! Reading a discovery controller's log page (NVMe Base 2.0 §5.16.1.23), once
//! or from a persistent discovery controller that reports changes
//! (NVMe-oF 1.1 §5.3, Discovery Log Change notice).

use std::time::Duration;

use nvmf_proto::fabrics::DISCOVERY_NQN;
use nvmf_proto::features::{aec, aen_notice, aen_type, fid};
use nvmf_proto::log::{lid, DiscoveryLog};
use nvmf_proto::sqe::admin_opcode;
use nvmf_proto::tcp::HostData;
use nvmf_proto::Sqe;
use nvmf_transport::{HostConnection, TransportAddr};

use crate::assoc::{self, exec};
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
    let max = assoc::max_transfer(id.mdts, cap.mpsmin);
    let r = read_log(&mut admin, max).await;
    let _ = assoc::shutdown(&mut admin).await;
    admin.close().await;
    r
}

/// KATO of a persistent discovery controller when none is asked for: 30 s,
/// nvme-cli's `NVMF_DEF_DISC_TMO`.
pub const PERSISTENT_DISCOVERY_KATO_MS: u32 = 30_000;

/// A discovery controller that stays connected (`nvme discover -p`): it keeps
/// a Keep Alive Timeout, enables Discovery Log Change notices (Set Features
/// Asynchronous Event Configuration bit 31, Base 2.0 §5.27.1.7) and keeps one
/// Asynchronous Event Request outstanding, so the host learns when its log
/// changes (a subsystem, an allowed host or a referral added or removed)
/// instead of polling. Single task: the caller alternates [`Self::log`] and
/// [`Self::wait_change`], which sends the Keep Alives while it waits.
#[derive(Debug)]
pub struct PersistentDiscovery {
    conn: HostConnection,
    max: u32,
    kato: Duration,
    aer: Option<u16>,
    /// The notices the controller supports (Identify Controller OAES).
    notices: bool,
}

impl PersistentDiscovery {
    /// Connects to the discovery controller of `opts.addr` with KATO
    /// `opts.kato_ms` ([`PERSISTENT_DISCOVERY_KATO_MS`] if 0), enables the
    /// Discovery Log Change notice if the controller supports it (OAES bit 31).
    pub async fn connect(opts: &ConnectOptions) -> Result<Self> {
        let mut opts = opts.clone();
        opts.subnqn = DISCOVERY_NQN.to_string();
        opts.nr_io_queues = 0;
        let kato = if opts.kato_ms == 0 {
            PERSISTENT_DISCOVERY_KATO_MS
        } else {
            opts.kato_ms
        };
        let (mut conn, _cntlid, cap, _vs, id) = assoc::admin_bringup_kato(&opts, kato).await?;
        let max = assoc::max_transfer(id.mdts, cap.mpsmin);
        let notices = id.oaes & aec::DISCOVERY_LOG_CHANGE != 0;
        if notices {
            let mut s = Sqe::new(admin_opcode::SET_FEATURES);
            s.cdw10 = u32::from(fid::ASYNC_EVENT_CONFIG);
            s.cdw11 = aec::DISCOVERY_LOG_CHANGE;
            exec(&mut conn, s, HostData::None).await?;
        }
        Ok(Self {
            conn,
            max,
            kato: Duration::from_millis(u64::from(kato)),
            aer: None,
            notices,
        })
    }

    /// Whether the controller sends Discovery Log Change notices (else
    /// [`Self::wait_change`] polls the log every KATO/2).
    pub fn notices(&self) -> bool {
        self.notices
    }

    /// Reads the whole log (RAE clear: the next change raises a notice again).
    pub async fn log(&mut self) -> Result<DiscoveryLog> {
        read_log(&mut self.conn, self.max).await
    }

    /// Waits until the controller reports a Discovery Log Change (an
    /// Asynchronous Event Request completing with Notice F0h, log page 70h;
    /// Base 2.0 Figure 147), sending Keep Alive every KATO/2 meanwhile. Without
    /// notice support it returns when GENCTR differs from `genctr`. Other
    /// events are logged and waited through. An error means the association
    /// ended (the caller reconnects).
    pub async fn wait_change(&mut self, genctr: u64) -> Result<()> {
        let period = (self.kato / 2).max(Duration::from_millis(100));
        loop {
            if self.notices && self.aer.is_none() {
                let cid = self
                    .conn
                    .submit(Sqe::new(admin_opcode::ASYNC_EVENT_REQUEST), HostData::None)?;
                self.conn.kick()?;
                self.aer = Some(cid);
            }
            match tokio::time::timeout(period, self.conn.next_completion()).await {
                Ok(c) => {
                    let c = c?;
                    if Some(c.cqe.cid) != self.aer {
                        tracing::debug!("discovery: stray completion CID {}", c.cqe.cid);
                        continue;
                    }
                    self.aer = None;
                    if !c.cqe.status.is_success() {
                        return Err(Error::Invalid(format!(
                            "Asynchronous Event Request failed: {}",
                            c.cqe.status
                        )));
                    }
                    let dw0 = c.cqe.dw0;
                    let (t, info, log) = (dw0 & 7, (dw0 >> 8) & 0xff, (dw0 >> 16) & 0xff);
                    if t == u32::from(aen_type::NOTICE)
                        && info == u32::from(aen_notice::DISCOVERY_LOG_CHANGE)
                    {
                        return Ok(());
                    }
                    tracing::info!(
                        "discovery: asynchronous event type {t}, info {info:#x}, log {log:#x}"
                    );
                }
                Err(_) => {
                    // KATO/2 passed: Keep Alive (its completion is matched by
                    // CID; an event completing meanwhile stays queued).
                    exec(
                        &mut self.conn,
                        Sqe::new(admin_opcode::KEEP_ALIVE),
                        HostData::None,
                    )
                    .await?;
                    if !self.notices {
                        let hdr = DiscoveryLog::decode(
                            &read_range(&mut self.conn, 1024, self.max).await?,
                        );
                        if hdr.genctr != genctr {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Shuts the controller down (CC.SHN) and closes the connection.
    pub async fn close(mut self) {
        let _ = assoc::shutdown(&mut self.conn).await;
        self.conn.close().await;
    }
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
