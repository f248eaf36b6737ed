//! The RDMA connection manager (rdma_cm(7), librdmacm): listening, connect requests with
//! their private data, accept/reject, the active side's address/route resolution and
//! connect, and the per-connection event stream (disconnect, device removal).
//!
//! NVMe/RDMA (NVMe-oF 1.1 §7.3.5) carries its queue parameters in the CM private data:
//! the host's RDMA_CM_REQUEST (recfmt, qid, hrqsize, hsqsize), the controller's
//! RDMA_CM_ACCEPT (recfmt, crqsize) or RDMA_CM_REJECT (recfmt, sts). This module moves the
//! bytes; their format belongs to nvmf-proto.
//!
//! Every event channel is non-blocking and watched by tokio's `AsyncFd`. Each connection
//! gets its own channel (rdma_migrate_id(3)) so that exactly one owner reads its events.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use tokio::io::unix::AsyncFd;

use crate::error::{RdmaError, Result};
use crate::loader::Lib;
use crate::sys::*;
use crate::verbs::{async_fd, query_device, DeviceAttrs, Fd, QpAttrs, QueuePair};

/// The NVMe/RDMA private data of the connection handshake is small (32 bytes, NVMe-oF 1.1
/// §7.3.5); the CM allows at most 255 here (`private_data_len` is a u8), and less on the
/// wire (IB/RoCE REQ: 56 bytes after rdma_cm's header, REP: 196, REJ: 148).
const MAX_PRIVATE_DATA: usize = 255;

/// A non-blocking rdma_cm event channel (rdma_create_event_channel(3)).
pub(crate) struct EventChannel {
    lib: &'static Lib,
    ch: *mut rdma_event_channel,
    afd: Option<AsyncFd<Fd>>,
}

impl EventChannel {
    fn new(lib: &'static Lib) -> Result<EventChannel> {
        // SAFETY: plain constructor; null on failure with errno set.
        let ch = unsafe { (lib.rdma_create_event_channel)() };
        if ch.is_null() {
            return Err(RdmaError::last("rdma_create_event_channel"));
        }
        let mut me = EventChannel { lib, ch, afd: None };
        // SAFETY: ch is the live channel just created.
        me.afd = Some(async_fd(
            unsafe { (*ch).fd },
            "AsyncFd(rdma_event_channel)",
        )?);
        Ok(me)
    }

    /// Takes one event if one is queued (rdma_get_cm_event(3) on the non-blocking fd),
    /// copies what we need out of it and acks it at once (rdma_ack_cm_event(3)), so that
    /// rdma_destroy_id / rdma_migrate_id never wait on it.
    fn try_next(&self) -> Result<Option<RawEvent>> {
        let mut ev: *mut rdma_cm_event = std::ptr::null_mut();
        // SAFETY: ch is live; ev is a valid out-pointer.
        let rc = unsafe { (self.lib.rdma_get_cm_event)(self.ch, &mut ev) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(RdmaError::Call {
                call: "rdma_get_cm_event",
                source: e,
            });
        }
        // SAFETY: ev is a valid event until acked below; for the connection events the
        // `conn` member of the param union is the active one (rdma_get_cm_event(3)), and
        // private_data points to private_data_len readable bytes.
        let raw = unsafe {
            let e = &*ev;
            let kind = e.event;
            let conn = matches!(
                kind,
                RDMA_CM_EVENT_CONNECT_REQUEST
                    | RDMA_CM_EVENT_CONNECT_RESPONSE
                    | RDMA_CM_EVENT_ESTABLISHED
                    | RDMA_CM_EVENT_REJECTED
            );
            let p = e.param.conn;
            let private_data = if conn && !p.private_data.is_null() && p.private_data_len > 0 {
                std::slice::from_raw_parts(p.private_data.cast::<u8>(), p.private_data_len as usize)
                    .to_vec()
            } else {
                Vec::new()
            };
            let peer = if kind == RDMA_CM_EVENT_CONNECT_REQUEST && !e.id.is_null() {
                sockaddr_to_std(&(*e.id).route.addr.dst_storage)
            } else {
                None
            };
            RawEvent {
                kind,
                name: self.lib.event_str(kind),
                status: e.status,
                id: e.id,
                private_data,
                peer,
                responder_resources: if conn { p.responder_resources } else { 0 },
                initiator_depth: if conn { p.initiator_depth } else { 0 },
            }
        };
        // SAFETY: ev came from rdma_get_cm_event and is acked exactly once; nothing
        // points into it afterwards (the private data was copied).
        unsafe { (self.lib.rdma_ack_cm_event)(ev) };
        Ok(Some(raw))
    }

    /// Waits for the next event.
    async fn next(&self) -> Result<RawEvent> {
        let afd = self.afd.as_ref().expect("fd lives as long as the channel");
        loop {
            if let Some(ev) = self.try_next()? {
                return Ok(ev);
            }
            let mut guard = afd.readable().await.map_err(|source| RdmaError::Call {
                call: "AsyncFd::readable(rdma_event_channel)",
                source,
            })?;
            match self.try_next()? {
                Some(ev) => return Ok(ev),
                None => guard.clear_ready(),
            }
        }
    }
}

// SAFETY: the channel is a file descriptor and the library's handle for it;
// rdma_get_cm_event on one channel from several threads is allowed by librdmacm
// (it reads the fd), and EventChannel only destroys it in Drop.
unsafe impl Send for EventChannel {}
// SAFETY: as above; &EventChannel only reads events (through the non-blocking fd).
unsafe impl Sync for EventChannel {}

impl Drop for EventChannel {
    fn drop(&mut self) {
        drop(self.afd.take());
        // SAFETY: ch is live, every id on it has been destroyed (CmIdOwned drops its id
        // before its channel) and every event acked; destroyed once.
        unsafe { (self.lib.rdma_destroy_event_channel)(self.ch) };
    }
}

/// An event, copied out of the library's `struct rdma_cm_event`.
pub(crate) struct RawEvent {
    kind: u32,
    name: &'static str,
    status: i32,
    id: *mut rdma_cm_id,
    private_data: Vec<u8>,
    peer: Option<SocketAddr>,
    responder_resources: u8,
    initiator_depth: u8,
}

/// An rdma_cm id with the event channel it reports on; destroys the id, then the channel.
pub(crate) struct CmIdOwned {
    pub(crate) lib: &'static Lib,
    pub(crate) id: *mut rdma_cm_id,
    chan: EventChannel,
}

impl CmIdOwned {
    fn new(lib: &'static Lib) -> Result<CmIdOwned> {
        let chan = EventChannel::new(lib)?;
        let mut id: *mut rdma_cm_id = std::ptr::null_mut();
        // SAFETY: chan is live; id is a valid out-pointer; RDMA_PS_TCP gives RC QPs.
        let rc =
            unsafe { (lib.rdma_create_id)(chan.ch, &mut id, std::ptr::null_mut(), RDMA_PS_TCP) };
        if rc != 0 {
            return Err(RdmaError::ret("rdma_create_id", rc));
        }
        Ok(CmIdOwned { lib, id, chan })
    }

    /// Waits for event `want`; REJECTED becomes [`RdmaError::Rejected`], anything else
    /// [`RdmaError::UnexpectedEvent`].
    async fn expect(&self, want: u32, what: &'static str) -> Result<RawEvent> {
        let ev = self.chan.next().await?;
        if ev.kind == want {
            return Ok(ev);
        }
        if ev.kind == RDMA_CM_EVENT_REJECTED {
            return Err(RdmaError::Rejected {
                status: ev.status,
                private_data: ev.private_data,
            });
        }
        Err(RdmaError::UnexpectedEvent {
            expected: what,
            got: ev.name,
            status: ev.status,
        })
    }
}

impl Drop for CmIdOwned {
    fn drop(&mut self) {
        // SAFETY: id is live and destroyed once; its QP (if any) was destroyed first
        // (QueuePair's Drop) and all its events were acked at once (try_next). The channel
        // field drops after this.
        unsafe { (self.lib.rdma_destroy_id)(self.id) };
    }
}

// SAFETY: the id and channel are librdmacm handles whose calls are thread safe; the only
// state is the pointers, used through &self for thread-safe calls, freed in Drop.
unsafe impl Send for CmIdOwned {}
// SAFETY: as above.
unsafe impl Sync for CmIdOwned {}

/// Connection parameters for rdma_accept(3) / rdma_connect(3) (`struct rdma_conn_param`
/// without the private data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnParam {
    /// Outstanding RDMA READs the peer may issue to us (0xff: the device maximum).
    pub responder_resources: u8,
    /// Outstanding RDMA READs we may issue to the peer (0xff: the device maximum).
    pub initiator_depth: u8,
    /// Hardware flow control (ignored by iWARP / RoCE's usual rdma_cm).
    pub flow_control: u8,
    /// Transport retries (connect only).
    pub retry_count: u8,
    /// Receiver-not-ready retries; 7 = retry forever (what Linux nvme-rdma uses).
    pub rnr_retry_count: u8,
}

impl Default for ConnParam {
    fn default() -> Self {
        ConnParam {
            responder_resources: 0xff,
            initiator_depth: 0xff,
            flow_control: 1,
            retry_count: 7,
            rnr_retry_count: 7,
        }
    }
}

fn conn_param(p: &ConnParam, private_data: &[u8]) -> Result<rdma_conn_param> {
    if private_data.len() > MAX_PRIVATE_DATA {
        return Err(RdmaError::InvalidArgument(format!(
            "{} bytes of private data (at most {MAX_PRIVATE_DATA})",
            private_data.len()
        )));
    }
    Ok(rdma_conn_param {
        private_data: if private_data.is_empty() {
            std::ptr::null()
        } else {
            private_data.as_ptr().cast()
        },
        private_data_len: private_data.len() as u8,
        responder_resources: p.responder_resources,
        initiator_depth: p.initiator_depth,
        flow_control: p.flow_control,
        retry_count: p.retry_count,
        rnr_retry_count: p.rnr_retry_count,
        srq: 0,
        qp_num: 0,
    })
}

/// A listening rdma_cm id (rdma_bind_addr(3), rdma_listen(3)) on the passive (target)
/// side.
pub struct CmListener {
    cm: CmIdOwned,
}

impl std::fmt::Debug for CmListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmListener")
            .field("local", &self.local_addr())
            .finish()
    }
}

impl CmListener {
    /// Binds to `addr` (an address of an RDMA-capable netdev; port 4420 for NVMe/RDMA,
    /// NVMe-oF 1.1 §7.3.1) and listens. Needs a tokio runtime.
    pub fn bind(addr: SocketAddr, backlog: i32) -> Result<CmListener> {
        let lib = Lib::get()?;
        let cm = CmIdOwned::new(lib)?;
        let (mut sa, _len) = std_to_sockaddr(addr);
        // SAFETY: id is live; sa is a valid sockaddr of the family it says.
        let rc =
            unsafe { (lib.rdma_bind_addr)(cm.id, (&mut sa as *mut libc::sockaddr_storage).cast()) };
        if rc != 0 {
            return Err(RdmaError::ret("rdma_bind_addr", rc));
        }
        // SAFETY: id is bound.
        let rc = unsafe { (lib.rdma_listen)(cm.id, backlog) };
        if rc != 0 {
            return Err(RdmaError::ret("rdma_listen", rc));
        }
        Ok(CmListener { cm })
    }

    /// The bound address (with the port chosen when 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the id is live; route.addr.src_storage holds the bound address.
        sockaddr_to_std(unsafe { &(*self.cm.id).route.addr.src_storage })
    }

    /// Waits for the next connect request (RDMA_CM_EVENT_CONNECT_REQUEST). The new id is
    /// moved to its own event channel before it is returned. Cancel-safe (an event is
    /// taken and turned into the result without an await in between).
    pub async fn accept_request(&self) -> Result<ConnectRequest> {
        loop {
            let ev = self.cm.chan.next().await?;
            match ev.kind {
                RDMA_CM_EVENT_CONNECT_REQUEST => {
                    let lib = self.cm.lib;
                    let chan = match EventChannel::new(lib) {
                        Ok(c) => c,
                        Err(e) => {
                            // SAFETY: ev.id is the new, unowned id; reject and free it.
                            unsafe {
                                (lib.rdma_reject)(ev.id, std::ptr::null(), 0);
                                (lib.rdma_destroy_id)(ev.id);
                            }
                            return Err(e);
                        }
                    };
                    // SAFETY: ev.id is the new id; its CONNECT_REQUEST event is acked,
                    // so rdma_migrate_id does not wait; chan is live.
                    let rc = unsafe { (lib.rdma_migrate_id)(ev.id, chan.ch) };
                    if rc != 0 {
                        let e = RdmaError::ret("rdma_migrate_id", rc);
                        // SAFETY: as above: reject and free the unowned id.
                        unsafe {
                            (lib.rdma_reject)(ev.id, std::ptr::null(), 0);
                            (lib.rdma_destroy_id)(ev.id);
                        }
                        return Err(e);
                    }
                    return Ok(ConnectRequest {
                        cm: CmIdOwned {
                            lib,
                            id: ev.id,
                            chan,
                        },
                        private_data: ev.private_data,
                        peer: ev.peer,
                        responder_resources: ev.responder_resources,
                        initiator_depth: ev.initiator_depth,
                    });
                }
                RDMA_CM_EVENT_DEVICE_REMOVAL => {
                    return Err(RdmaError::Disconnected { event: ev.name });
                }
                // ADDR_CHANGE and the like: nothing to do for a listener
                _ => continue,
            }
        }
    }
}

/// A peer's connect request, owning the new rdma_cm id (on its own event channel).
/// Dropped without accept or reject, the id is destroyed (the peer sees a reject or a
/// timeout).
pub struct ConnectRequest {
    cm: CmIdOwned,
    private_data: Vec<u8>,
    peer: Option<SocketAddr>,
    responder_resources: u8,
    initiator_depth: u8,
}

impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("peer", &self.peer)
            .field("private_data", &self.private_data)
            .field("responder_resources", &self.responder_resources)
            .field("initiator_depth", &self.initiator_depth)
            .finish()
    }
}

impl ConnectRequest {
    /// The peer's private data as delivered by the CM (NVMe/RDMA: RDMA_CM_REQUEST,
    /// NVMe-oF 1.1 §7.3.5.1). On IB/RoCE this is the whole private data area of the
    /// request, zero-padded past what the peer sent.
    pub fn private_data(&self) -> &[u8] {
        &self.private_data
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// RDMA READs the peer may have outstanding against us: the request's
    /// initiator depth, which ib_cm reports to the passive side as its
    /// responder resources (the Linux NVMe/RDMA host asks for none).
    pub fn responder_resources(&self) -> u8 {
        self.responder_resources
    }

    /// RDMA READs we may have outstanding against the peer: the request's
    /// responder resources, reported to the passive side as its initiator
    /// depth (nvmet-rdma accepts with `min(this, max_qp_init_rd_atom)`).
    pub fn initiator_depth(&self) -> u8 {
        self.initiator_depth
    }

    /// The limits of the device the request came in on, to size the queue before
    /// [`ConnectRequest::create_qp`] (ibv_query_device(3)).
    pub fn device_attrs(&self) -> Result<DeviceAttrs> {
        // SAFETY: the id is live; a CONNECT_REQUEST id is bound to its device.
        query_device(self.cm.lib, unsafe { (*self.cm.id).verbs })
    }

    /// Rejects the request with `private_data` (NVMe/RDMA: RDMA_CM_REJECT, §7.3.5.2).
    pub fn reject(self, private_data: &[u8]) -> Result<()> {
        reject(&self.cm, private_data)
    }

    /// Creates the QP (PD, CQ on a completion channel, RC QP) so that receives can be
    /// posted before accepting.
    pub fn create_qp(self, attrs: &QpAttrs) -> Result<Accepting> {
        Ok(Accepting {
            qp: QueuePair::create(self.cm, attrs)?,
            peer_private_data: self.private_data,
        })
    }
}

fn reject(cm: &CmIdOwned, private_data: &[u8]) -> Result<()> {
    if private_data.len() > MAX_PRIVATE_DATA {
        return Err(RdmaError::InvalidArgument(format!(
            "{} bytes of reject private data",
            private_data.len()
        )));
    }
    // SAFETY: id is live with a pending connect request; private_data is readable for
    // its length during the call.
    let rc = unsafe {
        (cm.lib.rdma_reject)(
            cm.id,
            private_data.as_ptr().cast(),
            private_data.len() as u8,
        )
    };
    if rc != 0 {
        return Err(RdmaError::ret("rdma_reject", rc));
    }
    Ok(())
}

/// The passive side between creating the QP and accepting: post receives on [`qp`],
/// then [`accept`] (or [`reject`]).
///
/// [`qp`]: Accepting::qp
/// [`accept`]: Accepting::accept
/// [`reject`]: Accepting::reject
pub struct Accepting {
    qp: QueuePair,
    peer_private_data: Vec<u8>,
}

impl Accepting {
    /// The queue pair, to register memory and post receives before accepting.
    pub fn qp(&self) -> &QueuePair {
        &self.qp
    }

    /// Accepts with `private_data` (NVMe/RDMA: RDMA_CM_ACCEPT, §7.3.5.1) and waits for
    /// RDMA_CM_EVENT_ESTABLISHED (no timeout of its own: wrap it in one).
    pub async fn accept(self, private_data: &[u8], param: ConnParam) -> Result<Connection> {
        let cm = &self.qp.pd.cm;
        let rc = {
            // (p holds raw pointers: not kept across the await below, so the
            // future stays Send)
            let mut p = conn_param(&param, private_data)?;
            // SAFETY: id is live with a pending request and a QP; p and the private
            // data it points to are valid during the call.
            unsafe { (cm.lib.rdma_accept)(cm.id, &mut p) }
        };
        if rc != 0 {
            return Err(RdmaError::ret("rdma_accept", rc));
        }
        cm.expect(RDMA_CM_EVENT_ESTABLISHED, "RDMA_CM_EVENT_ESTABLISHED")
            .await?;
        Ok(Connection {
            qp: self.qp,
            peer_private_data: self.peer_private_data,
        })
    }

    /// Rejects with `private_data` after all.
    pub fn reject(self, private_data: &[u8]) -> Result<()> {
        reject(&self.qp.pd.cm, private_data)
    }
}

/// The active (host) side: resolve the address and route of `addr`, create the QP, then
/// [`Connecting::connect`].
pub async fn resolve(addr: SocketAddr, attrs: &QpAttrs, timeout_ms: i32) -> Result<Connecting> {
    let lib = Lib::get()?;
    let cm = CmIdOwned::new(lib)?;
    let (mut sa, _) = std_to_sockaddr(addr);
    // SAFETY: id is live; sa is a valid sockaddr; no source address (null).
    let rc = unsafe {
        (lib.rdma_resolve_addr)(
            cm.id,
            std::ptr::null_mut(),
            (&mut sa as *mut libc::sockaddr_storage).cast(),
            timeout_ms,
        )
    };
    if rc != 0 {
        return Err(RdmaError::ret("rdma_resolve_addr", rc));
    }
    cm.expect(RDMA_CM_EVENT_ADDR_RESOLVED, "RDMA_CM_EVENT_ADDR_RESOLVED")
        .await?;
    // SAFETY: the address is resolved.
    let rc = unsafe { (lib.rdma_resolve_route)(cm.id, timeout_ms) };
    if rc != 0 {
        return Err(RdmaError::ret("rdma_resolve_route", rc));
    }
    cm.expect(RDMA_CM_EVENT_ROUTE_RESOLVED, "RDMA_CM_EVENT_ROUTE_RESOLVED")
        .await?;
    Ok(Connecting {
        qp: QueuePair::create(cm, attrs)?,
    })
}

/// The active side between route resolution (with the QP created) and the connection:
/// post receives on [`Connecting::qp`], then connect.
pub struct Connecting {
    qp: QueuePair,
}

impl Connecting {
    /// The queue pair, to register memory and post receives before connecting.
    pub fn qp(&self) -> &QueuePair {
        &self.qp
    }

    /// rdma_connect(3) with `private_data` (NVMe/RDMA: RDMA_CM_REQUEST, §7.3.5.1); waits
    /// for ESTABLISHED. A reject comes back as [`RdmaError::Rejected`] with the peer's
    /// private data.
    pub async fn connect(self, private_data: &[u8], param: ConnParam) -> Result<Connection> {
        let cm = &self.qp.pd.cm;
        let rc = {
            let mut p = conn_param(&param, private_data)?;
            // SAFETY: id is live, route resolved, QP created; p is valid during the call.
            unsafe { (cm.lib.rdma_connect)(cm.id, &mut p) }
        };
        if rc != 0 {
            return Err(RdmaError::ret("rdma_connect", rc));
        }
        let ev = cm
            .expect(RDMA_CM_EVENT_ESTABLISHED, "RDMA_CM_EVENT_ESTABLISHED")
            .await?;
        Ok(Connection {
            qp: self.qp,
            peer_private_data: ev.private_data,
        })
    }
}

/// An established RC connection: its queue pair and its rdma_cm event stream.
/// Dropping it disconnects (rdma_disconnect(3)) and frees everything in order (see
/// [`QueuePair`]).
pub struct Connection {
    qp: QueuePair,
    peer_private_data: Vec<u8>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("qp", &self.qp).finish()
    }
}

/// What ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmEventKind {
    /// RDMA_CM_EVENT_DISCONNECTED: the peer (or we) disconnected.
    Disconnected,
    /// RDMA_CM_EVENT_DEVICE_REMOVAL: the device is going away; free everything now.
    DeviceRemoval,
    /// RDMA_CM_EVENT_TIMEWAIT_EXIT: the QP left timewait.
    TimewaitExit,
    /// Another event (name from rdma_event_str(3)).
    Other(&'static str),
}

impl Connection {
    /// The queue pair.
    pub fn qp(&self) -> &QueuePair {
        &self.qp
    }

    /// The peer's private data: on the active side the accept's (NVMe/RDMA:
    /// RDMA_CM_ACCEPT), on the passive side the request's.
    pub fn peer_private_data(&self) -> &[u8] {
        &self.peer_private_data
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the id is live; route.addr.dst_storage is the peer's address.
        sockaddr_to_std(unsafe { &(*self.qp.pd.cm.id).route.addr.dst_storage })
    }

    /// rdma_disconnect(3): moves the QP to the error state (outstanding work requests
    /// complete with IBV_WC_WR_FLUSH_ERR) and tells the peer.
    pub fn disconnect(&self) -> Result<()> {
        let cm = &self.qp.pd.cm;
        // SAFETY: id is live and connected.
        let rc = unsafe { (cm.lib.rdma_disconnect)(cm.id) };
        if rc != 0 {
            return Err(RdmaError::ret("rdma_disconnect", rc));
        }
        Ok(())
    }

    /// The next connection event, if one is queued (non-blocking).
    pub fn try_event(&self) -> Result<Option<CmEventKind>> {
        Ok(self.qp.pd.cm.chan.try_next()?.map(|e| kind(&e)))
    }

    /// Waits for the next connection event (typically [`CmEventKind::Disconnected`]).
    pub async fn next_event(&self) -> Result<CmEventKind> {
        Ok(kind(&self.qp.pd.cm.chan.next().await?))
    }

    /// Waits until the connection is gone (DISCONNECTED or DEVICE_REMOVAL).
    pub async fn disconnected(&self) -> Result<CmEventKind> {
        loop {
            match self.next_event().await? {
                k @ (CmEventKind::Disconnected | CmEventKind::DeviceRemoval) => return Ok(k),
                _ => continue,
            }
        }
    }
}

fn kind(e: &RawEvent) -> CmEventKind {
    match e.kind {
        RDMA_CM_EVENT_DISCONNECTED => CmEventKind::Disconnected,
        RDMA_CM_EVENT_DEVICE_REMOVAL => CmEventKind::DeviceRemoval,
        RDMA_CM_EVENT_TIMEWAIT_EXIT => CmEventKind::TimewaitExit,
        _ => CmEventKind::Other(e.name),
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Best effort: already-disconnected ids return an error, which is fine.
        let _ = self.disconnect();
    }
}

/// `SocketAddr` to `struct sockaddr_storage`.
fn std_to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, usize) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage (which is designed for it).
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            (ss, std::mem::size_of::<libc::sockaddr_in>())
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            (ss, std::mem::size_of::<libc::sockaddr_in6>())
        }
    }
}

/// `struct sockaddr_storage` (AF_INET or AF_INET6) to `SocketAddr`.
fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((ss as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((ss as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in [
            "10.99.0.1:4420".parse::<SocketAddr>().unwrap(),
            "[fe80::1%3]:4420".parse().unwrap(),
            "0.0.0.0:0".parse().unwrap(),
        ] {
            let (ss, len) = std_to_sockaddr(a);
            assert!(len <= std::mem::size_of::<libc::sockaddr_storage>());
            assert_eq!(sockaddr_to_std(&ss), Some(a));
        }
        // SAFETY: all-zero sockaddr_storage is valid (AF_UNSPEC).
        let ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        assert_eq!(sockaddr_to_std(&ss), None);
    }

    #[test]
    fn too_much_private_data_is_refused() {
        let e = conn_param(&ConnParam::default(), &[0u8; 256]).unwrap_err();
        assert!(matches!(e, RdmaError::InvalidArgument(_)), "{e}");
        let p = conn_param(&ConnParam::default(), &[7u8; 32]).unwrap();
        assert_eq!(p.private_data_len, 32);
        assert_eq!(p.rnr_retry_count, 7);
        let p = conn_param(&ConnParam::default(), &[]).unwrap();
        assert!(p.private_data.is_null());
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;

    /// On a machine with rdma-core but no RDMA device (this build machine's kernel has no
    /// RDMA), binding fails with a typed error that says what is missing; with no
    /// rdma-core at all it is Unavailable. Where /dev/infiniband/rdma_cm exists the bind
    /// to an address with no RDMA device still fails (EADDRNOTAVAIL / ENODEV).
    #[tokio::test]
    async fn listen_without_rdma_device_fails_typed() {
        let e = CmListener::bind("192.0.2.1:4420".parse().unwrap(), 8).unwrap_err();
        match &e {
            RdmaError::Unavailable { .. } => {}
            RdmaError::Call { call, .. } => {
                assert!(
                    *call == "rdma_create_event_channel" || *call == "rdma_bind_addr",
                    "{e}"
                );
                if !std::path::Path::new("/dev/infiniband/rdma_cm").exists() {
                    assert_eq!(*call, "rdma_create_event_channel", "{e}");
                    assert!(e.to_string().contains("modprobe rdma_ucm"), "{e}");
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn listen_outside_a_runtime_is_an_error_not_a_panic() {
        if !std::path::Path::new("/dev/infiniband/rdma_cm").exists() {
            return; // the channel itself cannot be created here (see the test above)
        }
        let e = CmListener::bind("127.0.0.1:0".parse().unwrap(), 8).unwrap_err();
        assert!(e.to_string().contains("tokio runtime"), "{e}");
    }
}
