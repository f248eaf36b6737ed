//! Verbs: protection domain, memory regions, the completion queue on its completion
//! channel, and the RC queue pair's posting and polling (ibv_reg_mr(3), ibv_create_cq(3),
//! ibv_post_send(3), ibv_post_recv(3), ibv_poll_cq(3), ibv_req_notify_cq(3),
//! ibv_get_cq_event(3)).
//!
//! In NVMe/RDMA (NVMe-oF 1.1 §7.3) command and response capsules travel as SEND/RECV
//! messages, the target moves data with RDMA READ (host to controller) and RDMA WRITE
//! (controller to host) against the host's keyed SGL descriptors, and may answer with
//! SEND with Invalidate to invalidate the host's rkey (§7.3.3.2).

use std::alloc::Layout;
use std::ops::BitOr;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use smallvec::SmallVec;
use tokio::io::unix::AsyncFd;

use crate::cm::CmIdOwned;
use crate::error::{RdmaError, Result};
use crate::loader::Lib;
use crate::sys::*;

const NO_BIND: ibv_send_wr_bind_mw = ibv_send_wr_bind_mw {
    mw: std::ptr::null_mut(),
    rkey: 0,
    bind_info: ibv_mw_bind_info {
        mr: std::ptr::null_mut(),
        addr: 0,
        length: 0,
        mw_access_flags: 0,
    },
};

/// A raw fd that AsyncFd watches; the owner (the rdma-core object) closes it.
pub(crate) struct Fd(pub(crate) RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Puts `fd` in non-blocking mode and registers it with the current tokio reactor.
pub(crate) fn async_fd(fd: RawFd, what: &'static str) -> Result<AsyncFd<Fd>> {
    // SAFETY: fcntl on an fd owned by a live rdma-core object; only reads/sets flags.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(RdmaError::last("fcntl(O_NONBLOCK)"));
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(RdmaError::Call {
            call: what,
            source: std::io::Error::other("not inside a tokio runtime"),
        });
    }
    // SAFETY: fd belongs to an rdma-core channel that stays open for as long as this
    // AsyncFd: its owner (EventChannel / QueuePair) drops the AsyncFd before destroying
    // the channel, and the Fd wrapper always returns the same fd.
    unsafe { AsyncFd::register_with_interest(Fd(fd), tokio::io::Interest::READABLE) }.map_err(|e| {
        RdmaError::Call {
            call: what,
            source: e.into(),
        }
    })
}

/// Access rights of a [`MemoryRegion`] (`enum ibv_access_flags`, ibv_reg_mr(3)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access(i32);

impl Access {
    /// The local HCA may write the region (needed for RECV and RDMA READ targets).
    pub const LOCAL_WRITE: Access = Access(IBV_ACCESS_LOCAL_WRITE);
    /// The peer may RDMA WRITE into the region (needs LOCAL_WRITE too).
    pub const REMOTE_WRITE: Access = Access(IBV_ACCESS_REMOTE_WRITE);
    /// The peer may RDMA READ from the region.
    pub const REMOTE_READ: Access = Access(IBV_ACCESS_REMOTE_READ);
    /// Memory windows may be bound to the region ([`QueuePair::post_bind_mw`]).
    pub const MW_BIND: Access = Access(IBV_ACCESS_MW_BIND);
    /// Only local reads (SEND sources, RDMA WRITE sources).
    pub const NONE: Access = Access(0);
}

impl BitOr for Access {
    type Output = Access;
    fn bitor(self, o: Access) -> Access {
        Access(self.0 | o.0)
    }
}

/// A protection domain (ibv_alloc_pd(3)); shared by the QP and its memory regions, which
/// keep it alive. It also owns the connection's rdma_cm id: the device context the PD
/// belongs to is the id's (`cm_id->verbs`), so the id goes only after the PD (and so
/// after every memory region).
pub(crate) struct Pd {
    lib: &'static Lib,
    pub(crate) pd: *mut ibv_pd,
    pub(crate) cm: CmIdOwned,
}

// SAFETY: a PD is a handle to a kernel object; libibverbs' calls taking it are thread
// safe (rdma-core: "the verbs are thread safe"); Pd only frees it in Drop.
unsafe impl Send for Pd {}
// SAFETY: as above; Pd has no interior state besides the handle.
unsafe impl Sync for Pd {}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: pd came from ibv_alloc_pd and is freed once; every MR and the QP that
        // used it hold an Arc<Pd>, so none is left (else ibv_dealloc_pd returns EBUSY and
        // the PD leaks, which is safe). The cm id (field) is destroyed after this.
        unsafe { (self.lib.ibv_dealloc_pd)(self.pd) };
    }
}

/// An owned, page-aligned, zeroed buffer registered with ibv_reg_mr(3).
///
/// Rules (documented, as the hardware is outside Rust's borrow checker):
/// - The buffer must not be read (`as_slice`) in a range a posted RECV or RDMA READ is
///   filling, nor written (`as_mut_slice`) in a range a posted SEND or RDMA WRITE is
///   reading, until that work request's completion has been polled.
/// - Dropping a region deregisters it before the memory is freed, so a work request or
///   a peer still using its keys fails with a protection error completion instead of
///   touching freed memory. Keep regions alive as long as the [`QueuePair`] (own them in
///   the same structure, declared after the connection) to avoid such errors.
pub struct MemoryRegion {
    lib: &'static Lib,
    mr: NonNull<ibv_mr>,
    buf: NonNull<u8>,
    layout: Layout,
    lkey: u32,
    rkey: u32,
    _pd: Arc<Pd>,
}

// SAFETY: the region owns its buffer exclusively (no aliasing Rust references are handed
// out except through &self/&mut self borrows); the MR handle is a kernel object.
unsafe impl Send for MemoryRegion {}
// SAFETY: shared access only reads (as_slice) or reads immutable keys.
unsafe impl Sync for MemoryRegion {}

impl std::fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegion")
            .field("addr", &self.buf.as_ptr())
            .field("len", &self.layout.size())
            .field("lkey", &self.lkey)
            .field("rkey", &self.rkey)
            .finish()
    }
}

/// The page size the buffers are aligned to.
const PAGE: usize = 4096;

impl MemoryRegion {
    fn new(lib: &'static Lib, pd: Arc<Pd>, len: usize, access: Access) -> Result<Self> {
        if len == 0 {
            return Err(RdmaError::InvalidArgument(
                "a memory region cannot be empty".into(),
            ));
        }
        let size = len.div_ceil(PAGE) * PAGE;
        let layout = Layout::from_size_align(size, PAGE)
            .map_err(|e| RdmaError::InvalidArgument(format!("region of {len} bytes: {e}")))?;
        // SAFETY: layout has a non-zero size.
        let buf = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).ok_or_else(|| {
            RdmaError::Call {
                call: "alloc",
                source: std::io::Error::from_raw_os_error(libc::ENOMEM),
            }
        })?;
        // SAFETY: pd is live (we hold the Arc), buf..buf+size is an allocation we own and
        // keep until after ibv_dereg_mr in Drop.
        let mr = unsafe { (lib.ibv_reg_mr)(pd.pd, buf.as_ptr().cast(), size, access.0) };
        let Some(mr) = NonNull::new(mr) else {
            let e = RdmaError::last("ibv_reg_mr");
            // SAFETY: allocated above with this layout, not registered.
            unsafe { std::alloc::dealloc(buf.as_ptr(), layout) };
            return Err(e);
        };
        // SAFETY: mr is a valid ibv_mr returned by ibv_reg_mr; lkey/rkey never change.
        let (lkey, rkey) = unsafe { ((*mr.as_ptr()).lkey, (*mr.as_ptr()).rkey) };
        Ok(MemoryRegion {
            lib,
            mr,
            buf,
            layout,
            lkey,
            rkey,
            _pd: pd,
        })
    }

    /// The local key (for SGEs of this QP's work requests).
    pub fn lkey(&self) -> u32 {
        self.lkey
    }

    /// The remote key the peer uses in RDMA READ/WRITE (NVMe keyed SGL "Key" field).
    pub fn rkey(&self) -> u32 {
        self.rkey
    }

    /// The virtual address of the first byte: the address the peer targets with this
    /// region's rkey (NVMe keyed SGL "Address" field).
    pub fn addr(&self) -> u64 {
        self.buf.as_ptr() as u64
    }

    /// The usable length (the requested length rounded up to whole pages).
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Never true (regions are at least a page); for clippy's len/is_empty pairing.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The buffer (see the rules on [`MemoryRegion`]).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: buf..buf+len is our zero-initialised allocation, live while self is.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr(), self.layout.size()) }
    }

    /// The buffer, writable (see the rules on [`MemoryRegion`]).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as as_slice; &mut self makes this the only Rust reference.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_ptr(), self.layout.size()) }
    }

    /// A scatter/gather element for `len` bytes at `offset` of this region.
    pub fn sge(&self, offset: usize, len: usize) -> Result<Sge> {
        self.check(offset, len)?;
        Ok(Sge {
            addr: self.addr() + offset as u64,
            length: len as u32,
            lkey: self.lkey,
        })
    }

    /// The (address, length, rkey) triple a peer needs to RDMA READ/WRITE `len` bytes at
    /// `offset` of this region (what a keyed SGL data block descriptor carries).
    pub fn remote(&self, offset: usize, len: usize) -> Result<RemoteBuf> {
        self.check(offset, len)?;
        Ok(RemoteBuf {
            addr: self.addr() + offset as u64,
            len: len as u32,
            rkey: self.rkey,
        })
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() && len <= u32::MAX as usize => Ok(()),
            _ => Err(RdmaError::InvalidArgument(format!(
                "{len} bytes at offset {offset} are outside the {}-byte region",
                self.len()
            ))),
        }
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: mr came from ibv_reg_mr and is deregistered once; after it returns the
        // HCA no longer accesses the buffer, so the buffer is freed after it.
        let rc = unsafe { (self.lib.ibv_dereg_mr)(self.mr.as_ptr()) };
        if rc == 0 {
            // SAFETY: allocated in new() with this layout.
            unsafe { std::alloc::dealloc(self.buf.as_ptr(), self.layout) };
        }
        // (on failure the buffer is leaked rather than freed under a live registration)
    }
}

/// A type 2 memory window (ibv_alloc_mw(3)), made by [`QueuePair::alloc_mw`] and bound
/// with [`QueuePair::post_bind_mw`]. Dropping it deallocates it (ibv_dealloc_mw), which
/// revokes its rkey.
pub struct MemoryWindow {
    mw: NonNull<ibv_mw>,
    rkey: std::sync::atomic::AtomicU32,
    _pd: Arc<Pd>,
}

// SAFETY: a handle to a kernel object; verbs on it are thread safe; the key is atomic.
unsafe impl Send for MemoryWindow {}
// SAFETY: as above.
unsafe impl Sync for MemoryWindow {}

impl std::fmt::Debug for MemoryWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryWindow")
            .field("rkey", &self.rkey())
            .finish()
    }
}

impl MemoryWindow {
    /// The key of the last bind (or the allocation's, before any bind).
    pub fn rkey(&self) -> u32 {
        self.rkey.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for MemoryWindow {
    fn drop(&mut self) {
        // SAFETY: mw came from ops.alloc_mw and is freed once through the slot the inline
        // ibv_dealloc_mw calls; the PD (held by _pd) is still live.
        unsafe {
            let ctx = (*self.mw.as_ptr()).context;
            if let Some(f) = (*ctx).ops.dealloc_mw {
                f(self.mw.as_ptr());
            }
        }
    }
}

/// One scatter/gather element (`struct ibv_sge`) inside a [`MemoryRegion`]; made by
/// [`MemoryRegion::sge`], so it always lies inside a region registered on this PD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sge {
    addr: u64,
    length: u32,
    lkey: u32,
}

impl Sge {
    /// Its length in bytes.
    pub fn len(&self) -> u32 {
        self.length
    }

    /// True for a zero-length element.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    fn raw(&self) -> ibv_sge {
        ibv_sge {
            addr: self.addr,
            length: self.length,
            lkey: self.lkey,
        }
    }
}

/// A peer's buffer as named by a keyed SGL descriptor: the target of RDMA READ/WRITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteBuf {
    /// The peer's virtual address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The peer's rkey.
    pub rkey: u32,
}

/// One send-queue work request for [`QueuePair::post_send_batch`].
#[derive(Debug, Clone, Copy)]
pub enum SendWr<'a> {
    /// SEND (or SEND with Invalidate of `invalidate_rkey`, NVMe-oF 1.1 §7.3.3.2).
    Send {
        /// Returned in the completion.
        wr_id: u64,
        /// The message, gathered.
        sges: &'a [Sge],
        /// Generate a completion (unsignaled WRs complete silently).
        signaled: bool,
        /// IBV_WR_SEND_WITH_INV with this rkey.
        invalidate_rkey: Option<u32>,
    },
    /// RDMA WRITE of the local `sges` to `remote`.
    Write {
        /// Returned in the completion.
        wr_id: u64,
        /// Local source.
        sges: &'a [Sge],
        /// Remote destination.
        remote: RemoteBuf,
        /// Generate a completion.
        signaled: bool,
    },
    /// RDMA READ of `remote` into the local `sges`.
    Read {
        /// Returned in the completion.
        wr_id: u64,
        /// Local destination (its region needs LOCAL_WRITE).
        sges: &'a [Sge],
        /// Remote source.
        remote: RemoteBuf,
        /// Generate a completion.
        signaled: bool,
    },
}

/// The opcode of a successful completion (`enum ibv_wc_opcode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Opcode {
    /// A SEND (or SEND with Invalidate) finished.
    Send,
    /// An RDMA WRITE finished.
    RdmaWrite,
    /// An RDMA READ finished (the data is in place).
    RdmaRead,
    /// A message arrived in a posted receive buffer.
    Recv,
    /// An RDMA WRITE with immediate consumed a receive.
    RecvRdmaWithImm,
    /// A memory window bind finished.
    BindMw,
    /// Anything else, or an error completion (whose opcode is undefined).
    #[default]
    Other,
}

/// A work completion (`struct ibv_wc`, ibv_poll_cq(3)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Completion {
    /// The wr_id given when posting.
    pub wr_id: u64,
    /// `enum ibv_wc_status`: 0 is success; see [`Completion::result`].
    pub status: u32,
    /// ibv_wc_status_str(3) of `status`.
    pub status_text: &'static str,
    /// Provider detail of an error.
    pub vendor_err: u32,
    /// What finished (valid only on success).
    pub opcode: Opcode,
    /// For receives: the message length.
    pub byte_len: u32,
    /// For a receive of a SEND with Invalidate: the rkey the HCA invalidated.
    pub invalidated_rkey: Option<u32>,
    /// For receives with immediate data: the data (network byte order as sent).
    pub imm_data: Option<u32>,
    /// The raw `wc_flags` (`enum ibv_wc_flags`).
    pub wc_flags: u32,
    /// The raw `imm_data` / `invalidated_rkey` union, whatever the flags say. Soft-RoCE
    /// (rdma_rxe) fills it for a SEND with Invalidate but flags it with the kernel's
    /// IB_WC_WITH_INVALIDATE (1 << 2), which verbs.h numbers IBV_WC_IP_CSUM_OK, instead
    /// of IBV_WC_WITH_INV (1 << 3), so [`Completion::invalidated_rkey`] stays `None`
    /// there (docs/rdma.md).
    pub ex_data: u32,
}

impl Completion {
    /// Ok on success, else the typed error with ibv_wc_status_str's text.
    pub fn result(&self) -> Result<()> {
        if self.status == IBV_WC_SUCCESS {
            Ok(())
        } else {
            Err(RdmaError::WorkCompletion {
                wr_id: self.wr_id,
                status: self.status,
                text: self.status_text,
                vendor_err: self.vendor_err,
            })
        }
    }
}

/// The device limits that matter for sizing NVMe/RDMA queues (`struct ibv_device_attr`,
/// ibv_query_device(3)): Linux nvmet-rdma bounds queue depths by `max_qp_wr`, SGEs by
/// `max_sge` and the RDMA READ depth by `max_qp_rd_atom` / `max_qp_init_rd_atom`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAttrs {
    /// Firmware version string.
    pub fw_ver: String,
    /// IEEE vendor id.
    pub vendor_id: u32,
    /// Vendor part id.
    pub vendor_part_id: u32,
    /// Largest memory region.
    pub max_mr_size: u64,
    /// Work requests per queue.
    pub max_qp_wr: u32,
    /// SGEs per work request.
    pub max_sge: u32,
    /// Completion queue entries.
    pub max_cqe: u32,
    /// Outstanding RDMA READs a QP can answer (responder resources).
    pub max_qp_rd_atom: u32,
    /// Outstanding RDMA READs a QP can issue (initiator depth).
    pub max_qp_init_rd_atom: u32,
    /// Memory windows (0: none).
    pub max_mw: u32,
    /// `enum ibv_device_cap_flags`.
    pub device_cap_flags: u32,
}

/// ibv_query_device(3) on `ctx`.
pub(crate) fn query_device(lib: &'static Lib, ctx: *mut ibv_context) -> Result<DeviceAttrs> {
    if ctx.is_null() {
        return Err(RdmaError::InvalidArgument(
            "the rdma_cm id has no device yet".into(),
        ));
    }
    // SAFETY: ibv_device_attr is plain old data; all-zero is valid.
    let mut a: ibv_device_attr = unsafe { std::mem::zeroed() };
    // SAFETY: ctx is a live device context (an id's `verbs`); a is a valid out-struct.
    let rc = unsafe { (lib.ibv_query_device)(ctx, &mut a) };
    if rc != 0 {
        return Err(RdmaError::ret("ibv_query_device", rc));
    }
    let fw: Vec<u8> = a
        .fw_ver
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let u = |v: i32| v.max(0) as u32;
    Ok(DeviceAttrs {
        fw_ver: String::from_utf8_lossy(&fw).into_owned(),
        vendor_id: a.vendor_id,
        vendor_part_id: a.vendor_part_id,
        max_mr_size: a.max_mr_size,
        max_qp_wr: u(a.max_qp_wr),
        max_sge: u(a.max_sge),
        max_cqe: u(a.max_cqe),
        max_qp_rd_atom: u(a.max_qp_rd_atom),
        max_qp_init_rd_atom: u(a.max_qp_init_rd_atom),
        max_mw: u(a.max_mw),
        device_cap_flags: a.device_cap_flags,
    })
}

/// Sizes of a queue pair and its completion queue (`struct ibv_qp_cap`, ibv_create_qp(3)).
#[derive(Debug, Clone, Copy)]
pub struct QpAttrs {
    /// Send queue depth (SENDs + RDMA READs/WRITEs outstanding).
    pub max_send_wr: u32,
    /// Receive queue depth.
    pub max_recv_wr: u32,
    /// SGEs per send WR.
    pub max_send_sge: u32,
    /// SGEs per receive WR.
    pub max_recv_sge: u32,
    /// Inline data bytes (0: none).
    pub max_inline_data: u32,
    /// Completion queue entries; 0 means max_send_wr + max_recv_wr.
    pub cq_entries: u32,
}

impl Default for QpAttrs {
    fn default() -> Self {
        QpAttrs {
            max_send_wr: 64,
            max_recv_wr: 64,
            max_send_sge: 4,
            max_recv_sge: 1,
            max_inline_data: 0,
            cq_entries: 0,
        }
    }
}

/// An RC queue pair with its own completion queue (shared by both queues) on a
/// non-blocking completion channel, its protection domain and its rdma_cm id.
///
/// Drop order: QP, CQ, completion channel, then (once the last [`MemoryRegion`] is gone)
/// PD, rdma_cm id, event channel.
pub struct QueuePair {
    lib: &'static Lib,
    qp: *mut ibv_qp,
    cq: *mut ibv_cq,
    comp: *mut ibv_comp_channel,
    comp_fd: Option<AsyncFd<Fd>>,
    caps: ibv_qp_cap,
    pub(crate) pd: Arc<Pd>,
}

// SAFETY: the QP, CQ and channel are kernel/provider objects whose verbs are thread safe
// (rdma-core providers lock their queues); QueuePair only destroys them in Drop.
unsafe impl Send for QueuePair {}
// SAFETY: as above: posting and polling from several threads is allowed by libibverbs.
unsafe impl Sync for QueuePair {}

impl std::fmt::Debug for QueuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuePair")
            .field("qp_num", &self.qp_num())
            .field("caps", &self.caps)
            .finish()
    }
}

impl QueuePair {
    /// Creates PD, completion channel, CQ and an RC QP on `cm`'s device (rdma_create_qp(3)).
    pub(crate) fn create(cm: CmIdOwned, attrs: &QpAttrs) -> Result<QueuePair> {
        let lib = cm.lib;
        // SAFETY: cm.id is a live rdma_cm_id whose address (and so device) is resolved:
        // verbs is set for ids from a CONNECT_REQUEST or after ROUTE_RESOLVED.
        let ctx = unsafe { (*cm.id).verbs };
        if ctx.is_null() {
            return Err(RdmaError::InvalidArgument(
                "the rdma_cm id has no device yet".into(),
            ));
        }
        // SAFETY: ctx is the id's live device context.
        let pd = unsafe { (lib.ibv_alloc_pd)(ctx) };
        if pd.is_null() {
            return Err(RdmaError::last("ibv_alloc_pd"));
        }
        let pd = Arc::new(Pd { lib, pd, cm });
        // SAFETY: as above.
        let comp = unsafe { (lib.ibv_create_comp_channel)(ctx) };
        if comp.is_null() {
            return Err(RdmaError::last("ibv_create_comp_channel"));
        }
        let mut qp = QueuePair {
            lib,
            qp: std::ptr::null_mut(),
            cq: std::ptr::null_mut(),
            comp,
            comp_fd: None,
            caps: ibv_qp_cap::default(),
            pd,
        };
        // SAFETY: comp is the live channel just created.
        qp.comp_fd = Some(async_fd(
            unsafe { (*comp).fd },
            "AsyncFd(ibv_comp_channel)",
        )?);
        let cqe = if attrs.cq_entries > 0 {
            attrs.cq_entries
        } else {
            attrs.max_send_wr.saturating_add(attrs.max_recv_wr)
        }
        .min(i32::MAX as u32);
        // SAFETY: ctx and comp are live; cq_context is unused (null).
        let cq = unsafe { (lib.ibv_create_cq)(ctx, cqe as i32, std::ptr::null_mut(), comp, 0) };
        if cq.is_null() {
            return Err(RdmaError::last("ibv_create_cq"));
        }
        qp.cq = cq;
        let mut init = ibv_qp_init_attr {
            qp_context: std::ptr::null_mut(),
            send_cq: cq,
            recv_cq: cq,
            srq: std::ptr::null_mut(),
            cap: ibv_qp_cap {
                max_send_wr: attrs.max_send_wr,
                max_recv_wr: attrs.max_recv_wr,
                max_send_sge: attrs.max_send_sge,
                max_recv_sge: attrs.max_recv_sge,
                max_inline_data: attrs.max_inline_data,
            },
            qp_type: IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: id, pd and cq are live and on the same device; init is a valid
        // ibv_qp_init_attr that rdma_create_qp updates with the actual caps.
        let rc = unsafe { (lib.rdma_create_qp)(qp.pd.cm.id, qp.pd.pd, &mut init) };
        if rc != 0 {
            return Err(RdmaError::ret("rdma_create_qp", rc));
        }
        // SAFETY: rdma_create_qp succeeded, so id->qp is the new QP.
        qp.qp = unsafe { (*qp.pd.cm.id).qp };
        qp.caps = init.cap;
        Ok(qp)
    }

    /// The QP number (for logs).
    pub fn qp_num(&self) -> u32 {
        if self.qp.is_null() {
            return 0;
        }
        // SAFETY: qp is live while self is.
        unsafe { (*self.qp).qp_num }
    }

    /// The device's limits (ibv_query_device(3)).
    pub fn device_attrs(&self) -> Result<DeviceAttrs> {
        // SAFETY: the id is live and bound to a device (it has a QP).
        query_device(self.lib, unsafe { (*self.pd.cm.id).verbs })
    }

    /// SGEs per send WR the device granted.
    pub fn max_send_sge(&self) -> u32 {
        self.caps.max_send_sge
    }

    /// SGEs per receive WR the device granted.
    pub fn max_recv_sge(&self) -> u32 {
        self.caps.max_recv_sge
    }

    /// Inline bytes per send WR the device granted.
    pub fn max_inline_data(&self) -> u32 {
        self.caps.max_inline_data
    }

    /// The send-queue depth the device granted (>= the one asked for).
    pub fn max_send_wr(&self) -> u32 {
        self.caps.max_send_wr
    }

    /// The receive-queue depth the device granted.
    pub fn max_recv_wr(&self) -> u32 {
        self.caps.max_recv_wr
    }

    /// Allocates and registers a page-aligned region of at least `len` bytes on this QP's
    /// protection domain.
    pub fn register(&self, len: usize, access: Access) -> Result<MemoryRegion> {
        MemoryRegion::new(self.lib, self.pd.clone(), len, access)
    }

    /// Posts one receive buffer (ibv_post_recv(3)).
    pub fn post_recv(&self, wr_id: u64, sges: &[Sge]) -> Result<()> {
        self.post_recv_batch(&[(wr_id, sges)])
    }

    /// Posts several receives in one ibv_post_recv call.
    pub fn post_recv_batch(&self, wrs: &[(u64, &[Sge])]) -> Result<()> {
        if wrs.is_empty() {
            return Ok(());
        }
        // on the stack for the usual sizes: no allocation on the hot path
        let mut sg: SmallVec<[ibv_sge; 16]> = SmallVec::new();
        for (_, sges) in wrs {
            if sges.len() > self.caps.max_recv_sge as usize {
                return Err(RdmaError::InvalidArgument(format!(
                    "{} SGEs in a receive, the QP allows {}",
                    sges.len(),
                    self.caps.max_recv_sge
                )));
            }
            sg.extend(sges.iter().map(Sge::raw));
        }
        let mut raw: SmallVec<[ibv_recv_wr; 16]> = SmallVec::with_capacity(wrs.len());
        let mut at = 0usize;
        for (wr_id, sges) in wrs {
            raw.push(ibv_recv_wr {
                wr_id: *wr_id,
                next: std::ptr::null_mut(),
                // (at <= sg.len(); sg is complete and neither resized nor moved below)
                sg_list: sg.as_mut_ptr().wrapping_add(at),
                num_sge: sges.len() as i32,
            });
            at += sges.len();
        }
        let n = raw.len();
        let base = raw.as_mut_ptr();
        for i in 1..n {
            // SAFETY: i - 1 and i are < n, inside raw's buffer; linking through the one
            // raw pointer (not through new &mut borrows of raw) keeps base and the
            // links valid for the C call below.
            unsafe { (*base.add(i - 1)).next = base.add(i) };
        }
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: qp is live; its context's ops.post_recv is the provider's function (the
        // inline ibv_post_recv does exactly this call); the WR chain and SGE array live
        // until the call returns (the provider copies them into the queue).
        let rc = unsafe {
            let ctx = (*self.qp).context;
            match (*ctx).ops.post_recv {
                Some(f) => f(self.qp, base, &mut bad),
                None => libc::ENOSYS,
            }
        };
        if rc != 0 {
            return Err(RdmaError::ret("ibv_post_recv", rc));
        }
        Ok(())
    }

    /// Posts a SEND (with Invalidate of `invalidate_rkey` if given).
    pub fn post_send(
        &self,
        wr_id: u64,
        sges: &[Sge],
        signaled: bool,
        invalidate_rkey: Option<u32>,
    ) -> Result<()> {
        self.post_send_batch(&[SendWr::Send {
            wr_id,
            sges,
            signaled,
            invalidate_rkey,
        }])
    }

    /// Posts an RDMA READ of `remote` into `sges` (always signaled: the data is usable
    /// only after its completion).
    pub fn post_rdma_read(&self, wr_id: u64, sges: &[Sge], remote: RemoteBuf) -> Result<()> {
        self.post_send_batch(&[SendWr::Read {
            wr_id,
            sges,
            remote,
            signaled: true,
        }])
    }

    /// Posts an RDMA WRITE of `sges` to `remote`.
    pub fn post_rdma_write(
        &self,
        wr_id: u64,
        sges: &[Sge],
        remote: RemoteBuf,
        signaled: bool,
    ) -> Result<()> {
        self.post_send_batch(&[SendWr::Write {
            wr_id,
            sges,
            remote,
            signaled,
        }])
    }

    /// Posts several send-queue work requests chained in one ibv_post_send call (RDMA
    /// WRITEs of the data followed by the SEND of the response, as the NVMe/RDMA target's
    /// read path does). They execute in order.
    pub fn post_send_batch(&self, wrs: &[SendWr<'_>]) -> Result<()> {
        if wrs.is_empty() {
            return Ok(());
        }
        let sges_of = |w: &SendWr<'_>| -> usize {
            match w {
                SendWr::Send { sges, .. }
                | SendWr::Write { sges, .. }
                | SendWr::Read { sges, .. } => sges.len(),
            }
        };
        // on the stack for the usual sizes: no allocation on the hot path
        let mut sg: SmallVec<[ibv_sge; 16]> = SmallVec::new();
        for w in wrs {
            let (SendWr::Send { sges, .. }
            | SendWr::Write { sges, .. }
            | SendWr::Read { sges, .. }) = w;
            if sges.len() > self.caps.max_send_sge as usize {
                return Err(RdmaError::InvalidArgument(format!(
                    "{} SGEs in a send WR, the QP allows {}",
                    sges.len(),
                    self.caps.max_send_sge
                )));
            }
            sg.extend(sges.iter().map(Sge::raw));
        }
        let mut raw: SmallVec<[ibv_send_wr; 8]> = SmallVec::with_capacity(wrs.len());
        let mut at = 0usize;
        for w in wrs {
            let n = sges_of(w);
            let mut r = ibv_send_wr {
                wr_id: 0,
                next: std::ptr::null_mut(),
                sg_list: if n == 0 {
                    std::ptr::null_mut()
                } else {
                    sg.as_mut_ptr().wrapping_add(at)
                },
                num_sge: n as i32,
                opcode: 0,
                send_flags: 0,
                invalidate_rkey: 0,
                wr: ibv_send_wr_wr { _atomic: [0; 4] },
                qp_type_xrc_remote_srqn: 0,
                bind_mw: NO_BIND,
            };
            at += n;
            let flag = |s: bool| if s { IBV_SEND_SIGNALED } else { 0 };
            match *w {
                SendWr::Send {
                    wr_id,
                    signaled,
                    invalidate_rkey,
                    ..
                } => {
                    r.wr_id = wr_id;
                    r.send_flags = flag(signaled);
                    match invalidate_rkey {
                        Some(k) => {
                            r.opcode = IBV_WR_SEND_WITH_INV;
                            r.invalidate_rkey = k;
                        }
                        None => r.opcode = IBV_WR_SEND,
                    }
                }
                SendWr::Write {
                    wr_id,
                    remote,
                    signaled,
                    ..
                } => {
                    r.wr_id = wr_id;
                    r.send_flags = flag(signaled);
                    r.opcode = IBV_WR_RDMA_WRITE;
                    r.wr.rdma = ibv_send_wr_rdma {
                        remote_addr: remote.addr,
                        rkey: remote.rkey,
                    };
                }
                SendWr::Read {
                    wr_id,
                    remote,
                    signaled,
                    ..
                } => {
                    r.wr_id = wr_id;
                    r.send_flags = flag(signaled);
                    r.opcode = IBV_WR_RDMA_READ;
                    r.wr.rdma = ibv_send_wr_rdma {
                        remote_addr: remote.addr,
                        rkey: remote.rkey,
                    };
                }
            }
            raw.push(r);
        }
        let n = raw.len();
        let base = raw.as_mut_ptr();
        for i in 1..n {
            // SAFETY: i - 1 and i are < n, inside raw's buffer; linking through the one
            // raw pointer (not through new &mut borrows of raw) keeps base and the
            // links valid for the C call below.
            unsafe { (*base.add(i - 1)).next = base.add(i) };
        }
        // (raw and sg live until post_send_raw returns)
        self.post_send_raw(base)
    }

    /// Allocates a type 2 memory window on this QP's PD (ibv_alloc_mw(3)). Bound with
    /// [`QueuePair::post_bind_mw`], its rkey gives the peer access to part of a region
    /// and can be invalidated by the peer's SEND with Invalidate (NVMe-oF 1.1 §7.3.3.2:
    /// the host asks for it with a keyed SGL of sub type 0xF), after which it no longer
    /// grants access.
    pub fn alloc_mw(&self) -> Result<MemoryWindow> {
        // SAFETY: pd is live; alloc_mw is the slot the inline ibv_alloc_mw calls (which
        // fails with EOPNOTSUPP when the provider has none, as here).
        let mw = unsafe {
            let ctx = (*self.pd.pd).context;
            match (*ctx).ops.alloc_mw {
                Some(f) => f(self.pd.pd, IBV_MW_TYPE_2),
                None => {
                    return Err(RdmaError::Call {
                        call: "ibv_alloc_mw",
                        source: std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
                    })
                }
            }
        };
        let Some(mw) = NonNull::new(mw) else {
            return Err(RdmaError::last("ibv_alloc_mw"));
        };
        // SAFETY: mw is the live window just allocated.
        let rkey = unsafe { (*mw.as_ptr()).rkey };
        Ok(MemoryWindow {
            mw,
            rkey: std::sync::atomic::AtomicU32::new(rkey),
            _pd: self.pd.clone(),
        })
    }

    /// Posts a bind of the type 2 window `mw` to `len` bytes at `offset` of `mr` (whose
    /// access must include [`Access::MW_BIND`]) with a fresh key (ibv_inc_rkey of the
    /// last one; IBV_WR_BIND_MW, signaled); returns what the peer needs to use it. The
    /// window is usable once the completion ([`Opcode::BindMw`]) is polled.
    pub fn post_bind_mw(
        &self,
        wr_id: u64,
        mw: &MemoryWindow,
        mr: &MemoryRegion,
        offset: usize,
        len: usize,
        access: Access,
    ) -> Result<RemoteBuf> {
        mr.check(offset, len)?;
        let old = mw.rkey.load(std::sync::atomic::Ordering::Relaxed);
        // ibv_inc_rkey(3): the low byte is the consumer's key
        let rkey = (old & 0xffff_ff00) | (old.wrapping_add(1) & 0xff);
        let mut r = ibv_send_wr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: std::ptr::null_mut(),
            num_sge: 0,
            opcode: IBV_WR_BIND_MW,
            send_flags: IBV_SEND_SIGNALED,
            invalidate_rkey: 0,
            wr: ibv_send_wr_wr { _atomic: [0; 4] },
            qp_type_xrc_remote_srqn: 0,
            bind_mw: ibv_send_wr_bind_mw {
                mw: mw.mw.as_ptr(),
                rkey,
                bind_info: ibv_mw_bind_info {
                    mr: mr.mr.as_ptr(),
                    addr: mr.addr() + offset as u64,
                    length: len as u64,
                    mw_access_flags: access.0 as u32,
                },
            },
        };
        self.post_send_raw(&mut r)?;
        mw.rkey.store(rkey, std::sync::atomic::Ordering::Relaxed);
        Ok(RemoteBuf {
            addr: mr.addr() + offset as u64,
            len: len as u32,
            rkey,
        })
    }

    fn post_send_raw(&self, base: *mut ibv_send_wr) -> Result<()> {
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: qp is live; ops.post_send is what the inline ibv_post_send calls; the
        // caller's chain (and the SGE arrays it points to) is valid until this returns;
        // SGEs lie in regions registered on this QP's PD (Sge is only made by
        // MemoryRegion::sge; bind WRs name a live MR and MW of this PD) and remote
        // addresses are checked by the peer's HCA against its rkey.
        let rc = unsafe {
            let ctx = (*self.qp).context;
            match (*ctx).ops.post_send {
                Some(f) => f(self.qp, base, &mut bad),
                None => libc::ENOSYS,
            }
        };
        if rc != 0 {
            return Err(RdmaError::ret("ibv_post_send", rc));
        }
        Ok(())
    }

    /// Polls the completion queue without blocking (ibv_poll_cq(3)); returns how many of
    /// `out` were filled.
    pub fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        const CHUNK: usize = 32;
        let mut wc = [ibv_wc::default(); CHUNK];
        let mut done = 0;
        while done < out.len() {
            let want = (out.len() - done).min(CHUNK);
            // SAFETY: cq is live; ops.poll_cq is what the inline ibv_poll_cq calls; wc
            // has room for `want` entries.
            let n = unsafe {
                let ctx = (*self.cq).context;
                match (*ctx).ops.poll_cq {
                    Some(f) => f(self.cq, want as i32, wc.as_mut_ptr()),
                    None => -libc::ENOSYS,
                }
            };
            if n < 0 {
                return Err(RdmaError::ret("ibv_poll_cq", n));
            }
            let n = n as usize;
            for (o, w) in out[done..done + n].iter_mut().zip(&wc[..n]) {
                *o = self.completion(w);
            }
            done += n;
            if n < want {
                break;
            }
        }
        Ok(done)
    }

    fn completion(&self, w: &ibv_wc) -> Completion {
        let ok = w.status == IBV_WC_SUCCESS;
        Completion {
            wr_id: w.wr_id,
            status: w.status,
            status_text: if ok {
                "success"
            } else {
                self.lib.wc_status_str(w.status)
            },
            vendor_err: w.vendor_err,
            opcode: match (ok, w.opcode) {
                (false, _) => Opcode::Other,
                (true, IBV_WC_SEND) => Opcode::Send,
                (true, IBV_WC_RDMA_WRITE) => Opcode::RdmaWrite,
                (true, IBV_WC_RDMA_READ) => Opcode::RdmaRead,
                (true, IBV_WC_BIND_MW) => Opcode::BindMw,
                (true, IBV_WC_RECV) => Opcode::Recv,
                (true, IBV_WC_RECV_RDMA_WITH_IMM) => Opcode::RecvRdmaWithImm,
                _ => Opcode::Other,
            },
            byte_len: w.byte_len,
            invalidated_rkey: (ok && w.wc_flags & IBV_WC_WITH_INV != 0)
                .then_some(w.invalidated_rkey),
            imm_data: (ok && w.wc_flags & IBV_WC_WITH_IMM != 0).then_some(w.invalidated_rkey),
            wc_flags: w.wc_flags,
            ex_data: w.invalidated_rkey,
        }
    }

    fn req_notify(&self) -> Result<()> {
        // SAFETY: cq is live; ops.req_notify_cq is what the inline ibv_req_notify_cq
        // calls; solicited_only = 0 arms for any completion.
        let rc = unsafe {
            let ctx = (*self.cq).context;
            match (*ctx).ops.req_notify_cq {
                Some(f) => f(self.cq, 0),
                None => libc::ENOSYS,
            }
        };
        if rc != 0 {
            return Err(RdmaError::ret("ibv_req_notify_cq", rc));
        }
        Ok(())
    }

    /// Waits until at least one completion is available and returns it (and up to
    /// `out.len()`): polls; if empty, arms the CQ (ibv_req_notify_cq), polls once more to
    /// close the race with a completion that arrived before arming, then waits for the
    /// completion channel's fd, takes the event with ibv_get_cq_event and acks it.
    ///
    /// Cancel-safe: completions are only taken from the CQ by synchronous code that then
    /// returns, so dropping the future at its await point loses nothing.
    pub async fn wait_completions(&self, out: &mut [Completion]) -> Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let afd = self
            .comp_fd
            .as_ref()
            .expect("comp fd lives as long as the QP");
        loop {
            let n = self.poll(out)?;
            if n > 0 {
                return Ok(n);
            }
            self.req_notify()?;
            let n = self.poll(out)?;
            if n > 0 {
                return Ok(n);
            }
            loop {
                let mut guard = afd.readable().await.map_err(|source| RdmaError::Call {
                    call: "AsyncFd::readable(ibv_comp_channel)",
                    source,
                })?;
                let mut ev_cq: *mut ibv_cq = std::ptr::null_mut();
                let mut ev_ctx: *mut std::ffi::c_void = std::ptr::null_mut();
                // SAFETY: comp is live and non-blocking; the out-pointers are valid.
                let rc = unsafe { (self.lib.ibv_get_cq_event)(self.comp, &mut ev_cq, &mut ev_ctx) };
                if rc == 0 {
                    // SAFETY: ev_cq is our CQ (the only one on this channel); every event
                    // is acked at once so ibv_destroy_cq never waits.
                    unsafe { (self.lib.ibv_ack_cq_events)(ev_cq, 1) };
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                return Err(RdmaError::Call {
                    call: "ibv_get_cq_event",
                    source: e,
                });
            }
        }
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: each object was created by create() and is destroyed once, in the order
        // the verbs require: the QP before its CQ, the CQ (all of its events acked) before
        // its channel; the channel's fd is deregistered from the reactor before the
        // channel closes it. The PD and the cm id go with the fields afterwards.
        unsafe {
            if !self.qp.is_null() {
                (self.lib.rdma_destroy_qp)(self.pd.cm.id);
            }
            if !self.cq.is_null() {
                (self.lib.ibv_destroy_cq)(self.cq);
            }
            drop(self.comp_fd.take());
            (self.lib.ibv_destroy_comp_channel)(self.comp);
        }
    }
}
