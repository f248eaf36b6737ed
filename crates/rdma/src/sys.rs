//! Hand-written `#[repr(C)]` declarations of the rdma-core structures, constants and
//! functions this crate uses, transcribed from `<infiniband/verbs.h>` and
//! `<rdma/rdma_cma.h>` (rdma-core 44; the ABI of these structures has been stable since
//! libibverbs 1.1 / librdmacm 1.0, which is why the symbols are versioned and old binaries
//! keep working).
//!
//! Two kinds of structures:
//! - **full**: ones this crate allocates or passes by value (`ibv_sge`, `ibv_send_wr`,
//!   `ibv_recv_wr`, `ibv_wc`, `ibv_qp_init_attr`, `rdma_conn_param`, `rdma_cm_event`,
//!   `ibv_mr`, `ibv_comp_channel`, `rdma_event_channel`): every field and the size match C.
//! - **prefix**: ones only ever reached through a pointer the library returned
//!   (`ibv_context`, `ibv_cq`, `ibv_qp`, `rdma_cm_id`): only the leading fields this crate
//!   reads are declared, and such a type is never constructed or sized in Rust.
//!
//! `tests/layout.rs` compiles a C program against the real headers and checks every size,
//! every offset and every constant declared here; run it after touching this file.
#![allow(non_camel_case_types, missing_docs)]

use std::ffi::{c_char, c_int, c_uint, c_void};

// ---------------------------------------------------------------- verbs.h ----

/// `struct ibv_sge` (full).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ibv_sge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// `struct ibv_recv_wr` (full).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ibv_recv_wr {
    pub wr_id: u64,
    pub next: *mut ibv_recv_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
}

/// `wr.rdma` of `struct ibv_send_wr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ibv_send_wr_rdma {
    pub remote_addr: u64,
    pub rkey: u32,
}

/// `union wr` of `struct ibv_send_wr`: `rdma` is the member this crate uses; `_atomic`
/// (remote_addr, compare_add, swap, rkey = 32 bytes) gives the union its size.
#[repr(C)]
#[derive(Clone, Copy)]
pub union ibv_send_wr_wr {
    pub rdma: ibv_send_wr_rdma,
    pub _atomic: [u64; 4],
}

/// `struct ibv_mw_bind_info` (full).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ibv_mw_bind_info {
    pub mr: *mut ibv_mr,
    pub addr: u64,
    pub length: u64,
    pub mw_access_flags: c_uint,
}

/// `bind_mw` of the last union of `struct ibv_send_wr` (the larger member; `tso` is a
/// pointer and two u16).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ibv_send_wr_bind_mw {
    pub mw: *mut ibv_mw,
    pub rkey: u32,
    pub bind_info: ibv_mw_bind_info,
}

/// `struct ibv_send_wr` (full).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ibv_send_wr {
    pub wr_id: u64,
    pub next: *mut ibv_send_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
    pub opcode: c_uint,
    pub send_flags: c_uint,
    /// `imm_data` / `invalidate_rkey` union.
    pub invalidate_rkey: u32,
    pub wr: ibv_send_wr_wr,
    /// `qp_type.xrc.remote_srqn`.
    pub qp_type_xrc_remote_srqn: u32,
    pub bind_mw: ibv_send_wr_bind_mw,
}

/// `struct ibv_wc` (full).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ibv_wc {
    pub wr_id: u64,
    pub status: c_uint,
    pub opcode: c_uint,
    pub vendor_err: u32,
    pub byte_len: u32,
    /// `imm_data` / `invalidated_rkey` union.
    pub invalidated_rkey: u32,
    pub qp_num: u32,
    pub src_qp: u32,
    pub wc_flags: c_uint,
    pub pkey_index: u16,
    pub slid: u16,
    pub sl: u8,
    pub dlid_path_bits: u8,
}

/// `struct ibv_qp_cap` (full).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ibv_qp_cap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// `struct ibv_qp_init_attr` (full).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ibv_qp_init_attr {
    pub qp_context: *mut c_void,
    pub send_cq: *mut ibv_cq,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut c_void,
    pub cap: ibv_qp_cap,
    pub qp_type: c_uint,
    pub sq_sig_all: c_int,
}

/// `struct ibv_mr` (full; allocated by the library, read here).
#[repr(C)]
#[derive(Debug)]
pub struct ibv_mr {
    pub context: *mut ibv_context,
    pub pd: *mut ibv_pd,
    pub addr: *mut c_void,
    pub length: usize,
    pub handle: u32,
    pub lkey: u32,
    pub rkey: u32,
}

/// `struct ibv_comp_channel` (full; allocated by the library).
#[repr(C)]
#[derive(Debug)]
pub struct ibv_comp_channel {
    pub context: *mut ibv_context,
    pub fd: c_int,
    pub refcnt: c_int,
}

/// `struct ibv_pd` (full).
#[repr(C)]
pub struct ibv_pd {
    pub context: *mut ibv_context,
    pub handle: u32,
}

/// `struct ibv_mw` (full; allocated by the provider).
#[repr(C)]
pub struct ibv_mw {
    pub context: *mut ibv_context,
    pub pd: *mut ibv_pd,
    pub rkey: u32,
    pub handle: u32,
    pub type_: c_uint,
}

/// `struct ibv_context_ops` (full: 32 function pointer slots). Only the slots the inline
/// verbs `ibv_alloc_mw`, `ibv_dealloc_mw`, `ibv_poll_cq`, `ibv_req_notify_cq`,
/// `ibv_post_send` and `ibv_post_recv` go through are typed; the others are opaque.
#[repr(C)]
pub struct ibv_context_ops {
    pub _slots_before_alloc_mw: [*mut c_void; 7],
    pub alloc_mw: Option<unsafe extern "C" fn(*mut ibv_pd, c_uint) -> *mut ibv_mw>,
    pub _bind_mw: *mut c_void,
    pub dealloc_mw: Option<unsafe extern "C" fn(*mut ibv_mw) -> c_int>,
    pub _compat_create_cq: *mut c_void,
    pub poll_cq: Option<unsafe extern "C" fn(*mut ibv_cq, c_int, *mut ibv_wc) -> c_int>,
    pub req_notify_cq: Option<unsafe extern "C" fn(*mut ibv_cq, c_int) -> c_int>,
    pub _slots_before_post_send: [*mut c_void; 12],
    pub post_send:
        Option<unsafe extern "C" fn(*mut ibv_qp, *mut ibv_send_wr, *mut *mut ibv_send_wr) -> c_int>,
    pub post_recv:
        Option<unsafe extern "C" fn(*mut ibv_qp, *mut ibv_recv_wr, *mut *mut ibv_recv_wr) -> c_int>,
    pub _slots_after_post_recv: [*mut c_void; 5],
}

/// `struct ibv_context` (prefix: `device`, `ops`).
#[repr(C)]
pub struct ibv_context {
    pub device: *mut c_void,
    pub ops: ibv_context_ops,
}

/// `struct ibv_cq` (prefix: `context`, `channel`).
#[repr(C)]
pub struct ibv_cq {
    pub context: *mut ibv_context,
    pub channel: *mut ibv_comp_channel,
}

/// `struct ibv_qp` (prefix up to `qp_num`).
#[repr(C)]
pub struct ibv_qp {
    pub context: *mut ibv_context,
    pub qp_context: *mut c_void,
    pub pd: *mut ibv_pd,
    pub send_cq: *mut ibv_cq,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut c_void,
    pub handle: u32,
    pub qp_num: u32,
}

/// `struct ibv_device_attr` (full; filled by ibv_query_device(3)).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ibv_device_attr {
    pub fw_ver: [c_char; 64],
    pub node_guid: u64,
    pub sys_image_guid: u64,
    pub max_mr_size: u64,
    pub page_size_cap: u64,
    pub vendor_id: u32,
    pub vendor_part_id: u32,
    pub hw_ver: u32,
    pub max_qp: c_int,
    pub max_qp_wr: c_int,
    pub device_cap_flags: c_uint,
    pub max_sge: c_int,
    pub max_sge_rd: c_int,
    pub max_cq: c_int,
    pub max_cqe: c_int,
    pub max_mr: c_int,
    pub max_pd: c_int,
    pub max_qp_rd_atom: c_int,
    pub max_ee_rd_atom: c_int,
    pub max_res_rd_atom: c_int,
    pub max_qp_init_rd_atom: c_int,
    pub max_ee_init_rd_atom: c_int,
    pub atomic_cap: c_uint,
    pub max_ee: c_int,
    pub max_rdd: c_int,
    pub max_mw: c_int,
    pub max_raw_ipv6_qp: c_int,
    pub max_raw_ethy_qp: c_int,
    pub max_mcast_grp: c_int,
    pub max_mcast_qp_attach: c_int,
    pub max_total_mcast_qp_attach: c_int,
    pub max_ah: c_int,
    pub max_fmr: c_int,
    pub max_map_per_fmr: c_int,
    pub max_srq: c_int,
    pub max_srq_wr: c_int,
    pub max_srq_sge: c_int,
    pub max_pkeys: u16,
    pub local_ca_ack_delay: u8,
    pub phys_port_cnt: u8,
}

// enum ibv_wc_status
pub const IBV_WC_SUCCESS: c_uint = 0;
// enum ibv_wc_opcode
pub const IBV_WC_SEND: c_uint = 0;
pub const IBV_WC_RDMA_WRITE: c_uint = 1;
pub const IBV_WC_RDMA_READ: c_uint = 2;
pub const IBV_WC_BIND_MW: c_uint = 5;
pub const IBV_WC_RECV: c_uint = 128;
pub const IBV_WC_RECV_RDMA_WITH_IMM: c_uint = 129;
// enum ibv_wc_flags
pub const IBV_WC_WITH_IMM: c_uint = 1 << 1;
pub const IBV_WC_WITH_INV: c_uint = 1 << 3;
// enum ibv_wr_opcode
pub const IBV_WR_RDMA_WRITE: c_uint = 0;
pub const IBV_WR_SEND: c_uint = 2;
pub const IBV_WR_RDMA_READ: c_uint = 4;
pub const IBV_WR_BIND_MW: c_uint = 8;
pub const IBV_WR_SEND_WITH_INV: c_uint = 9;
// enum ibv_mw_type
pub const IBV_MW_TYPE_2: c_uint = 2;
// enum ibv_send_flags
pub const IBV_SEND_SIGNALED: c_uint = 1 << 1;
// enum ibv_access_flags
pub const IBV_ACCESS_LOCAL_WRITE: c_int = 1;
pub const IBV_ACCESS_REMOTE_WRITE: c_int = 1 << 1;
pub const IBV_ACCESS_REMOTE_READ: c_int = 1 << 2;
pub const IBV_ACCESS_MW_BIND: c_int = 1 << 4;
// enum ibv_qp_type
pub const IBV_QPT_RC: c_uint = 2;

// ------------------------------------------------------------- rdma_cma.h ----

/// `struct rdma_event_channel` (full).
#[repr(C)]
#[derive(Debug)]
pub struct rdma_event_channel {
    pub fd: c_int,
}

/// `struct rdma_addr` (prefix: the `src_storage` and `dst_storage` unions, each a
/// `struct sockaddr_storage`).
#[repr(C)]
pub struct rdma_addr {
    pub src_storage: libc::sockaddr_storage,
    pub dst_storage: libc::sockaddr_storage,
}

/// `struct rdma_route` (prefix: `addr`).
#[repr(C)]
pub struct rdma_route {
    pub addr: rdma_addr,
}

/// `struct rdma_cm_id` (prefix: `verbs`, `channel`, `context`, `qp`, `route.addr`).
#[repr(C)]
pub struct rdma_cm_id {
    pub verbs: *mut ibv_context,
    pub channel: *mut rdma_event_channel,
    pub context: *mut c_void,
    pub qp: *mut ibv_qp,
    pub route: rdma_route,
}

/// `struct rdma_conn_param` (full).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rdma_conn_param {
    pub private_data: *const c_void,
    pub private_data_len: u8,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub flow_control: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    pub srq: u8,
    pub qp_num: u32,
}

/// The `param` union of `struct rdma_cm_event`: `conn` is the member this crate reads;
/// `_ud` (`struct rdma_ud_param`: pointer, length, a 32-byte `ibv_ah_attr`, qp_num,
/// qkey) gives the union its size.
#[repr(C)]
#[derive(Clone, Copy)]
pub union rdma_cm_event_param {
    pub conn: rdma_conn_param,
    pub _ud: [u64; 7],
}

/// `struct rdma_cm_event` (full).
#[repr(C)]
pub struct rdma_cm_event {
    pub id: *mut rdma_cm_id,
    pub listen_id: *mut rdma_cm_id,
    pub event: c_uint,
    pub status: c_int,
    pub param: rdma_cm_event_param,
}

// enum rdma_port_space
pub const RDMA_PS_TCP: c_uint = 0x0106;
// enum rdma_cm_event_type
pub const RDMA_CM_EVENT_ADDR_RESOLVED: c_uint = 0;
pub const RDMA_CM_EVENT_ADDR_ERROR: c_uint = 1;
pub const RDMA_CM_EVENT_ROUTE_RESOLVED: c_uint = 2;
pub const RDMA_CM_EVENT_ROUTE_ERROR: c_uint = 3;
pub const RDMA_CM_EVENT_CONNECT_REQUEST: c_uint = 4;
pub const RDMA_CM_EVENT_CONNECT_RESPONSE: c_uint = 5;
pub const RDMA_CM_EVENT_CONNECT_ERROR: c_uint = 6;
pub const RDMA_CM_EVENT_UNREACHABLE: c_uint = 7;
pub const RDMA_CM_EVENT_REJECTED: c_uint = 8;
pub const RDMA_CM_EVENT_ESTABLISHED: c_uint = 9;
pub const RDMA_CM_EVENT_DISCONNECTED: c_uint = 10;
pub const RDMA_CM_EVENT_DEVICE_REMOVAL: c_uint = 11;
pub const RDMA_CM_EVENT_ADDR_CHANGE: c_uint = 14;
pub const RDMA_CM_EVENT_TIMEWAIT_EXIT: c_uint = 15;

// ------------------------------------------------------------- functions ----

/// The exported (non-inline) functions used, resolved once by [`crate::loader::Lib`].
/// Signatures from verbs.h / rdma_cma.h.
pub type IbvAllocPd = unsafe extern "C" fn(*mut ibv_context) -> *mut ibv_pd;
pub type IbvDeallocPd = unsafe extern "C" fn(*mut ibv_pd) -> c_int;
pub type IbvRegMr = unsafe extern "C" fn(*mut ibv_pd, *mut c_void, usize, c_int) -> *mut ibv_mr;
pub type IbvDeregMr = unsafe extern "C" fn(*mut ibv_mr) -> c_int;
pub type IbvCreateCompChannel = unsafe extern "C" fn(*mut ibv_context) -> *mut ibv_comp_channel;
pub type IbvDestroyCompChannel = unsafe extern "C" fn(*mut ibv_comp_channel) -> c_int;
pub type IbvCreateCq = unsafe extern "C" fn(
    *mut ibv_context,
    c_int,
    *mut c_void,
    *mut ibv_comp_channel,
    c_int,
) -> *mut ibv_cq;
pub type IbvDestroyCq = unsafe extern "C" fn(*mut ibv_cq) -> c_int;
pub type IbvGetCqEvent =
    unsafe extern "C" fn(*mut ibv_comp_channel, *mut *mut ibv_cq, *mut *mut c_void) -> c_int;
pub type IbvAckCqEvents = unsafe extern "C" fn(*mut ibv_cq, c_uint);
pub type IbvQueryDevice = unsafe extern "C" fn(*mut ibv_context, *mut ibv_device_attr) -> c_int;
pub type IbvWcStatusStr = unsafe extern "C" fn(c_uint) -> *const c_char;

pub type RdmaCreateEventChannel = unsafe extern "C" fn() -> *mut rdma_event_channel;
pub type RdmaDestroyEventChannel = unsafe extern "C" fn(*mut rdma_event_channel);
pub type RdmaCreateId = unsafe extern "C" fn(
    *mut rdma_event_channel,
    *mut *mut rdma_cm_id,
    *mut c_void,
    c_uint,
) -> c_int;
pub type RdmaDestroyId = unsafe extern "C" fn(*mut rdma_cm_id) -> c_int;
pub type RdmaBindAddr = unsafe extern "C" fn(*mut rdma_cm_id, *mut libc::sockaddr) -> c_int;
pub type RdmaListen = unsafe extern "C" fn(*mut rdma_cm_id, c_int) -> c_int;
pub type RdmaGetCmEvent =
    unsafe extern "C" fn(*mut rdma_event_channel, *mut *mut rdma_cm_event) -> c_int;
pub type RdmaAckCmEvent = unsafe extern "C" fn(*mut rdma_cm_event) -> c_int;
pub type RdmaAccept = unsafe extern "C" fn(*mut rdma_cm_id, *mut rdma_conn_param) -> c_int;
pub type RdmaReject = unsafe extern "C" fn(*mut rdma_cm_id, *const c_void, u8) -> c_int;
pub type RdmaConnect = unsafe extern "C" fn(*mut rdma_cm_id, *mut rdma_conn_param) -> c_int;
pub type RdmaDisconnect = unsafe extern "C" fn(*mut rdma_cm_id) -> c_int;
pub type RdmaResolveAddr =
    unsafe extern "C" fn(*mut rdma_cm_id, *mut libc::sockaddr, *mut libc::sockaddr, c_int) -> c_int;
pub type RdmaResolveRoute = unsafe extern "C" fn(*mut rdma_cm_id, c_int) -> c_int;
pub type RdmaCreateQp =
    unsafe extern "C" fn(*mut rdma_cm_id, *mut ibv_pd, *mut ibv_qp_init_attr) -> c_int;
pub type RdmaDestroyQp = unsafe extern "C" fn(*mut rdma_cm_id);
pub type RdmaMigrateId = unsafe extern "C" fn(*mut rdma_cm_id, *mut rdma_event_channel) -> c_int;
pub type RdmaEventStr = unsafe extern "C" fn(c_uint) -> *const c_char;

/// Every size, offset and constant declared above, as `(C expression, Rust value)`:
/// `tests/layout.rs` prints each C expression from a program compiled against the real
/// headers and compares. A declaration added above must be added here too.
pub fn layout_table() -> Vec<(&'static str, usize)> {
    use std::mem::{offset_of, size_of};
    macro_rules! size {
        ($t:ident) => {
            (
                concat!("sizeof(struct ", stringify!($t), ")"),
                size_of::<$t>(),
            )
        };
    }
    macro_rules! off {
        ($t:ident, $c:literal, $($f:tt)+) => {
            (
                concat!("offsetof(struct ", stringify!($t), ", ", $c, ")"),
                offset_of!($t, $($f)+),
            )
        };
        ($t:ident, $f:ident) => {
            (
                concat!("offsetof(struct ", stringify!($t), ", ", stringify!($f), ")"),
                offset_of!($t, $f),
            )
        };
    }
    macro_rules! cst {
        ($c:ident) => {
            (stringify!($c), $c as usize)
        };
    }
    vec![
        size!(ibv_sge),
        off!(ibv_sge, addr),
        off!(ibv_sge, length),
        off!(ibv_sge, lkey),
        size!(ibv_recv_wr),
        off!(ibv_recv_wr, wr_id),
        off!(ibv_recv_wr, next),
        off!(ibv_recv_wr, sg_list),
        off!(ibv_recv_wr, num_sge),
        size!(ibv_send_wr),
        off!(ibv_send_wr, wr_id),
        off!(ibv_send_wr, next),
        off!(ibv_send_wr, sg_list),
        off!(ibv_send_wr, num_sge),
        off!(ibv_send_wr, opcode),
        off!(ibv_send_wr, send_flags),
        off!(ibv_send_wr, invalidate_rkey),
        off!(ibv_send_wr, "wr.rdma.remote_addr", wr.rdma.remote_addr),
        off!(ibv_send_wr, "wr.rdma.rkey", wr.rdma.rkey),
        off!(
            ibv_send_wr,
            "qp_type.xrc.remote_srqn",
            qp_type_xrc_remote_srqn
        ),
        off!(ibv_send_wr, "bind_mw", bind_mw),
        off!(ibv_send_wr, "bind_mw.mw", bind_mw.mw),
        off!(ibv_send_wr, "bind_mw.rkey", bind_mw.rkey),
        off!(ibv_send_wr, "bind_mw.bind_info", bind_mw.bind_info),
        size!(ibv_mw_bind_info),
        off!(ibv_mw_bind_info, mr),
        off!(ibv_mw_bind_info, addr),
        off!(ibv_mw_bind_info, length),
        off!(ibv_mw_bind_info, mw_access_flags),
        size!(ibv_pd),
        off!(ibv_pd, context),
        off!(ibv_pd, handle),
        size!(ibv_mw),
        off!(ibv_mw, context),
        off!(ibv_mw, pd),
        off!(ibv_mw, rkey),
        off!(ibv_mw, handle),
        off!(ibv_mw, "type", type_),
        size!(ibv_wc),
        off!(ibv_wc, wr_id),
        off!(ibv_wc, status),
        off!(ibv_wc, opcode),
        off!(ibv_wc, vendor_err),
        off!(ibv_wc, byte_len),
        off!(ibv_wc, invalidated_rkey),
        off!(ibv_wc, qp_num),
        off!(ibv_wc, src_qp),
        off!(ibv_wc, wc_flags),
        off!(ibv_wc, pkey_index),
        off!(ibv_wc, slid),
        off!(ibv_wc, sl),
        off!(ibv_wc, dlid_path_bits),
        size!(ibv_qp_cap),
        off!(ibv_qp_cap, max_send_wr),
        off!(ibv_qp_cap, max_recv_wr),
        off!(ibv_qp_cap, max_send_sge),
        off!(ibv_qp_cap, max_recv_sge),
        off!(ibv_qp_cap, max_inline_data),
        size!(ibv_qp_init_attr),
        off!(ibv_qp_init_attr, qp_context),
        off!(ibv_qp_init_attr, send_cq),
        off!(ibv_qp_init_attr, recv_cq),
        off!(ibv_qp_init_attr, srq),
        off!(ibv_qp_init_attr, cap),
        off!(ibv_qp_init_attr, qp_type),
        off!(ibv_qp_init_attr, sq_sig_all),
        size!(ibv_mr),
        off!(ibv_mr, context),
        off!(ibv_mr, pd),
        off!(ibv_mr, addr),
        off!(ibv_mr, length),
        off!(ibv_mr, handle),
        off!(ibv_mr, lkey),
        off!(ibv_mr, rkey),
        size!(ibv_device_attr),
        off!(ibv_device_attr, fw_ver),
        off!(ibv_device_attr, node_guid),
        off!(ibv_device_attr, sys_image_guid),
        off!(ibv_device_attr, max_mr_size),
        off!(ibv_device_attr, page_size_cap),
        off!(ibv_device_attr, vendor_id),
        off!(ibv_device_attr, vendor_part_id),
        off!(ibv_device_attr, hw_ver),
        off!(ibv_device_attr, max_qp),
        off!(ibv_device_attr, max_qp_wr),
        off!(ibv_device_attr, device_cap_flags),
        off!(ibv_device_attr, max_sge),
        off!(ibv_device_attr, max_sge_rd),
        off!(ibv_device_attr, max_cq),
        off!(ibv_device_attr, max_cqe),
        off!(ibv_device_attr, max_mr),
        off!(ibv_device_attr, max_pd),
        off!(ibv_device_attr, max_qp_rd_atom),
        off!(ibv_device_attr, max_ee_rd_atom),
        off!(ibv_device_attr, max_res_rd_atom),
        off!(ibv_device_attr, max_qp_init_rd_atom),
        off!(ibv_device_attr, max_ee_init_rd_atom),
        off!(ibv_device_attr, atomic_cap),
        off!(ibv_device_attr, max_ee),
        off!(ibv_device_attr, max_rdd),
        off!(ibv_device_attr, max_mw),
        off!(ibv_device_attr, max_raw_ipv6_qp),
        off!(ibv_device_attr, max_raw_ethy_qp),
        off!(ibv_device_attr, max_mcast_grp),
        off!(ibv_device_attr, max_mcast_qp_attach),
        off!(ibv_device_attr, max_total_mcast_qp_attach),
        off!(ibv_device_attr, max_ah),
        off!(ibv_device_attr, max_fmr),
        off!(ibv_device_attr, max_map_per_fmr),
        off!(ibv_device_attr, max_srq),
        off!(ibv_device_attr, max_srq_wr),
        off!(ibv_device_attr, max_srq_sge),
        off!(ibv_device_attr, max_pkeys),
        off!(ibv_device_attr, local_ca_ack_delay),
        off!(ibv_device_attr, phys_port_cnt),
        size!(ibv_comp_channel),
        off!(ibv_comp_channel, context),
        off!(ibv_comp_channel, fd),
        off!(ibv_comp_channel, refcnt),
        size!(ibv_context_ops),
        off!(ibv_context_ops, alloc_mw),
        off!(ibv_context_ops, "bind_mw", _bind_mw),
        off!(ibv_context_ops, dealloc_mw),
        off!(ibv_context_ops, "_compat_create_cq", _compat_create_cq),
        off!(ibv_context_ops, poll_cq),
        off!(ibv_context_ops, req_notify_cq),
        off!(ibv_context_ops, post_send),
        off!(ibv_context_ops, post_recv),
        off!(ibv_context, device),
        off!(ibv_context, ops),
        off!(ibv_cq, context),
        off!(ibv_cq, channel),
        off!(ibv_qp, context),
        off!(ibv_qp, qp_context),
        off!(ibv_qp, pd),
        off!(ibv_qp, send_cq),
        off!(ibv_qp, recv_cq),
        off!(ibv_qp, srq),
        off!(ibv_qp, handle),
        off!(ibv_qp, qp_num),
        size!(rdma_event_channel),
        off!(rdma_event_channel, fd),
        off!(rdma_addr, src_storage),
        off!(rdma_addr, dst_storage),
        off!(rdma_route, addr),
        off!(rdma_cm_id, verbs),
        off!(rdma_cm_id, channel),
        off!(rdma_cm_id, context),
        off!(rdma_cm_id, qp),
        off!(rdma_cm_id, route),
        off!(rdma_cm_id, "route.addr.src_storage", route.addr.src_storage),
        off!(rdma_cm_id, "route.addr.dst_storage", route.addr.dst_storage),
        size!(rdma_conn_param),
        off!(rdma_conn_param, private_data),
        off!(rdma_conn_param, private_data_len),
        off!(rdma_conn_param, responder_resources),
        off!(rdma_conn_param, initiator_depth),
        off!(rdma_conn_param, flow_control),
        off!(rdma_conn_param, retry_count),
        off!(rdma_conn_param, rnr_retry_count),
        off!(rdma_conn_param, srq),
        off!(rdma_conn_param, qp_num),
        size!(rdma_cm_event),
        off!(rdma_cm_event, id),
        off!(rdma_cm_event, listen_id),
        off!(rdma_cm_event, event),
        off!(rdma_cm_event, status),
        off!(rdma_cm_event, param),
        off!(rdma_cm_event, "param.conn", param.conn),
        cst!(IBV_WC_SUCCESS),
        cst!(IBV_WC_SEND),
        cst!(IBV_WC_RDMA_WRITE),
        cst!(IBV_WC_RDMA_READ),
        cst!(IBV_WC_BIND_MW),
        cst!(IBV_WC_RECV),
        cst!(IBV_WC_RECV_RDMA_WITH_IMM),
        cst!(IBV_WC_WITH_IMM),
        cst!(IBV_WC_WITH_INV),
        cst!(IBV_WR_RDMA_WRITE),
        cst!(IBV_WR_SEND),
        cst!(IBV_WR_RDMA_READ),
        cst!(IBV_WR_BIND_MW),
        cst!(IBV_WR_SEND_WITH_INV),
        cst!(IBV_MW_TYPE_2),
        cst!(IBV_ACCESS_MW_BIND),
        cst!(IBV_SEND_SIGNALED),
        cst!(IBV_ACCESS_LOCAL_WRITE),
        cst!(IBV_ACCESS_REMOTE_WRITE),
        cst!(IBV_ACCESS_REMOTE_READ),
        cst!(IBV_QPT_RC),
        cst!(RDMA_PS_TCP),
        cst!(RDMA_CM_EVENT_ADDR_RESOLVED),
        cst!(RDMA_CM_EVENT_ADDR_ERROR),
        cst!(RDMA_CM_EVENT_ROUTE_RESOLVED),
        cst!(RDMA_CM_EVENT_ROUTE_ERROR),
        cst!(RDMA_CM_EVENT_CONNECT_REQUEST),
        cst!(RDMA_CM_EVENT_CONNECT_RESPONSE),
        cst!(RDMA_CM_EVENT_CONNECT_ERROR),
        cst!(RDMA_CM_EVENT_UNREACHABLE),
        cst!(RDMA_CM_EVENT_REJECTED),
        cst!(RDMA_CM_EVENT_ESTABLISHED),
        cst!(RDMA_CM_EVENT_DISCONNECTED),
        cst!(RDMA_CM_EVENT_DEVICE_REMOVAL),
        cst!(RDMA_CM_EVENT_ADDR_CHANGE),
        cst!(RDMA_CM_EVENT_TIMEWAIT_EXIT),
    ]
}
