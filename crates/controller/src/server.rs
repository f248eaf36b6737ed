//! The NVMe/TCP server: listeners, connection admission and reload.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use nvmf_proto::tcp::{ControllerQueueConfig, Digests};
use nvmf_transport::addr::TransportKind;
use nvmf_transport::rdma::{RdmaListenConfig, RdmaListener};
use nvmf_transport::{Listener, TlsServerConfig, TransportAddr, TransportError};
use tracing::{info, warn};

use crate::admission::{Admission, Ticket, STRIKE_WINDOW};
use crate::config::{TargetConfig, Treq};
use crate::queue::{QueueTask, TargetCtx};
use crate::registry::{Registry, RegistryError, ReloadSummary};

/// Why the target could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A namespace could not be opened.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A listen address could not be bound.
    // The message holds the transport error's whole text, so it is not also
    // given as the source (the chain would print it twice).
    #[error("{0} (is another target already listening there? choose another with --listen)")]
    Listen(TransportError),
    /// An `rdma://` listen address could not be served.
    #[error("{0} (NVMe/RDMA needs rdma-core and an RDMA device holding that address: an RDMA NIC, or soft-RoCE with `rdma link add rxe0 type rxe netdev IFACE`)")]
    RdmaListen(TransportError),
    /// A socket option of the configuration could not be set.
    #[error("tcp_congestion: {0}")]
    SocketOption(TransportError),
    /// The CPU wake-up latency request (`cpu_latency_us`) was refused.
    #[error("cpu_latency_us: {0} (leave --cpu-latency-us out to run without it)")]
    CpuLatency(#[source] crate::cpu_latency::CpuLatencyError),
    /// The metrics address could not be bound.
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running target.
#[derive(Debug)]
pub struct Target {
    ctx: Arc<TargetCtx>,
    listeners: Vec<Arc<Listener>>,
    /// NVMe/RDMA listeners (`rdma://` listen addresses).
    rdma_listeners: Vec<Arc<RdmaListener>>,
    admission: Arc<Admission>,
    metrics: std::sync::Mutex<Option<tokio::net::TcpListener>>,
    metrics_addr: Option<std::net::SocketAddr>,
    /// Held for the target's life (`cpu_latency_us`); dropping it withdraws
    /// the request.
    cpu_latency: Option<crate::cpu_latency::CpuLatencyRequest>,
}

impl Target {
    /// Opens every namespace and binds every listen address.
    pub async fn bind(cfg: &TargetConfig) -> Result<Self, TargetError> {
        let registry = Arc::new(Registry::new(cfg)?);
        let l = &cfg.limits;
        let qcfg = ControllerQueueConfig {
            max_icd: 8192.max(l.in_capsule_data(TransportKind::Tcp)),
            maxh2cdata: l.max_h2c_data,
            allowed_digests: Digests {
                header: cfg.header_digest,
                data: cfg.data_digest,
            },
            cpda: 0,
            max_data_len: l.max_data_transfer,
            max_pending_r2t_bytes: l.max_pending_write_bytes,
            max_c2h_pdu: 256 * 1024,
            initial_queue_depth: 32,
        };
        let mut listeners = Vec::new();
        let mut ports = Vec::new();
        let tls = match &cfg.tls {
            None => None,
            Some(t) => Some(Arc::new(
                TlsServerConfig::new(t.keys.clone(), t.derivation).map_err(TargetError::Listen)?,
            )),
        };
        let mut port_treq = Vec::new();
        let mut rdma_listeners = Vec::new();
        let rcfg = RdmaListenConfig {
            max_icd: l.in_capsule_data(TransportKind::Rdma),
            max_data_len: l.max_data_transfer,
            max_io_queue_size: l.max_queue_depth,
            ..RdmaListenConfig::default()
        };
        for a in &cfg.listen {
            if a.kind == TransportKind::Rdma {
                let lis = RdmaListener::bind(a, rcfg).map_err(TargetError::RdmaListen)?;
                port_treq.push(None);
                ports.push(lis.local_addr());
                rdma_listeners.push(Arc::new(lis));
                continue;
            }
            let mut lis = Listener::bind(a, qcfg).await.map_err(TargetError::Listen)?;
            let treq = cfg.tls.as_ref().and_then(|t| t.treq_for(a));
            if let (Some(t), Some(treq)) = (&tls, treq) {
                match treq {
                    Treq::Required => lis.require_tls(t.clone()),
                    Treq::NotRequired => lis.allow_tls(t.clone()),
                }
            }
            port_treq.push(treq.filter(|_| tls.is_some()));
            ports.push(lis.local_addr());
            listeners.push(Arc::new(lis));
        }
        for a in &cfg.discovery_listen {
            if cfg.listen.contains(a) {
                continue;
            }
            match Listener::bind(a, qcfg).await {
                Ok(lis) => listeners.push(Arc::new(lis)),
                // The discovery port is a convenience; another target may hold it.
                Err(e) => warn!("discovery service not started on {a}: {e}"),
            }
        }
        // Set on the listening sockets, the accepted connections inherit it.
        if let Some(cc) = &cfg.tcp_congestion {
            for lis in &listeners {
                lis.set_tcp_congestion(cc)
                    .map_err(TargetError::SocketOption)?;
            }
        }
        let metrics = match cfg.metrics {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| TargetError::Metrics { addr, source })?,
            ),
            None => None,
        };
        let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
        let cpu_latency = match cfg.cpu_latency_us {
            Some(us) => Some(
                crate::cpu_latency::CpuLatencyRequest::new(us).map_err(TargetError::CpuLatency)?,
            ),
            None => None,
        };
        let ctx = Arc::new(TargetCtx {
            registry,
            limits: cfg.limits.clone(),
            ports,
            port_treq,
            busy_poll: crate::queue::PollPolicy {
                budget: std::time::Duration::from_micros(u64::from(cfg.busy_poll_us)),
                batch: cfg.busy_poll_batch,
            },
        });
        Ok(Self {
            ctx,
            listeners,
            rdma_listeners,
            admission: Arc::new(Admission::default()),
            metrics: std::sync::Mutex::new(metrics),
            metrics_addr,
            cpu_latency,
        })
    }

    /// The address serving `GET /metrics` (with the real port when 0 was asked
    /// for), if the configuration asked for one.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// The CPU wake-up latency this target holds a request for, in
    /// microseconds (`cpu_latency_us`), if any.
    pub fn cpu_latency_us(&self) -> Option<u32> {
        self.cpu_latency.as_ref().map(|r| r.us())
    }

    /// Addresses serving subsystems (with real ports when 0 was asked for).
    pub fn ports(&self) -> &[TransportAddr] {
        &self.ctx.ports
    }

    /// Every bound address, discovery-only ones included.
    pub fn bound(&self) -> Vec<TransportAddr> {
        self.listeners
            .iter()
            .map(|l| l.local_addr())
            .chain(self.rdma_listeners.iter().map(|l| l.local_addr()))
            .collect()
    }

    /// Subsystems and namespaces being served.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.ctx.registry
    }

    /// Applies a new configuration (subsystems, namespaces, allowed hosts) without
    /// a restart. Listen addresses and limits keep their start-up values.
    pub fn reload(&self, cfg: &TargetConfig) -> Result<ReloadSummary, TargetError> {
        Ok(self.ctx.registry.reload(cfg)?)
    }

    /// Accepts NVMe/RDMA hosts on `lis`: each connect request is checked,
    /// accepted and run on its own task, under the same admission rules as TCP.
    async fn serve_rdma(self: Arc<Self>, lis: Arc<RdmaListener>) {
        loop {
            let incoming = match lis.accept().await {
                Ok(i) => i,
                Err(e) => {
                    warn!("RDMA accept on {} failed: {e}", lis.local_addr());
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let ip = incoming
                .peer_addr()
                .map(|a| a.ip())
                .unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let Some(ticket) = self.admit(ip, "RDMA connection") else {
                drop(incoming);
                continue;
            };
            let ctx = self.ctx.clone();
            let adm = self.admission.clone();
            tokio::spawn(async move {
                if !ticket.delay.is_zero() {
                    tokio::time::sleep(ticket.delay).await;
                }
                match incoming.establish().await {
                    Ok(qp) => {
                        if QueueTask::run(qp, ctx).await {
                            let _ = adm.strike(ip, Instant::now());
                        }
                    }
                    Err(e) => {
                        warn!(%ip, "NVMe/RDMA connection not established: {e}");
                        let _ = adm.strike(ip, Instant::now());
                    }
                }
                drop(ticket);
            });
        }
    }

    /// Admits a new connection from `ip` under the connection limits, and
    /// counts it accepted or refused (`what` names it in the refusal's log
    /// line). Both transports' accept loops come through here.
    fn admit(&self, ip: IpAddr, what: &str) -> Option<Ticket> {
        let l = &self.ctx.limits;
        let m = &self.ctx.registry.metrics;
        let t = self.admission.admit(
            ip,
            l.max_connections,
            l.max_connections_per_host,
            Instant::now(),
        );
        let counter = if t.is_some() {
            &m.tcp_accepted
        } else {
            warn!(%ip, "{what} refused: connection limit reached");
            &m.tcp_refused
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        t
    }

    /// Accepts connections on every listener until the process ends; each
    /// connection runs on its own task.
    pub async fn serve(self: Arc<Self>) {
        let mut tasks = Vec::new();
        let metrics = self
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(l) = metrics {
            tasks.push(tokio::spawn(crate::metrics::serve(
                self.ctx.registry.clone(),
                l,
            )));
        }
        for lis in &self.listeners {
            let lis = lis.clone();
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match lis.accept().await {
                        Ok(mut conn) => {
                            let ip = conn
                                .peer_addr()
                                .map(|a| a.ip())
                                .unwrap_or(IpAddr::from([0, 0, 0, 0]));
                            let Some(ticket) = me.admit(ip, "connection") else {
                                drop(conn);
                                continue;
                            };
                            let ctx = me.ctx.clone();
                            let adm = me.admission.clone();
                            let tls = lis.tls().cloned();
                            let optional = lis.tls_optional();
                            tokio::spawn(async move {
                                if !ticket.delay.is_zero() {
                                    tokio::time::sleep(ticket.delay).await;
                                }
                                // A port that offers TLS without requiring it: a
                                // TLS record first means TLS, an ICReq means plain.
                                let tls = match (&tls, optional) {
                                    (Some(_), true) => {
                                        let mut b = [0u8; 1];
                                        let first = tokio::time::timeout(
                                            std::time::Duration::from_millis(ctx.limits.icreq_timeout_ms),
                                            conn.stream().peek(&mut b),
                                        )
                                        .await;
                                        match first {
                                            Ok(Ok(1)) if b[0] == nvmf_transport::tls::TLS_HANDSHAKE_RECORD => tls,
                                            _ => None,
                                        }
                                    }
                                    _ => tls,
                                };
                                if let Some(t) = &tls {
                                    if let Err(e) = conn.start_tls_server(t).await {
                                        warn!(%ip, "connection closed: {e}");
                                        let _ = adm.strike(ip, Instant::now());
                                        drop(ticket);
                                        return;
                                    }
                                }
                                if QueueTask::run(conn, ctx).await {
                                    if let Some(n) = adm.strike(ip, Instant::now()) {
                                        warn!(%ip, "{n} connections from this address sent malformed PDUs or missed deadlines within {} s; its new connections are now served one at a time, at growing intervals", STRIKE_WINDOW.as_secs());
                                    }
                                }
                                drop(ticket);
                            });
                        }
                        Err(e) => {
                            warn!("accept on {} failed: {e}", lis.local_addr());
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
        }
        for lis in &self.rdma_listeners {
            tasks.push(tokio::spawn(self.clone().serve_rdma(lis.clone())));
        }
        let bound: Vec<String> = self.bound().iter().map(ToString::to_string).collect();
        info!("serving on {}", bound.join(", "));
        for t in tasks {
            let _ = t.await;
        }
    }
}
