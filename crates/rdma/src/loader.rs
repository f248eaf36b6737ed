//! Run-time loading of rdma-core: `libibverbs.so.1` and `librdmacm.so.1` are opened with
//! `dlopen` on first use and the functions this crate calls are resolved once into a
//! table of fn pointers ([`Lib`]). The `nvmf` binary therefore has no link-time
//! dependency on rdma-core and keeps working (TCP only) on machines without it; RDMA
//! calls then fail with [`RdmaError::Unavailable`]. Providers (librxe, libmlx5, ...)
//! are opened by libibverbs itself (ibv_get_device_list(3)).

use std::sync::OnceLock;

use libloading::Library;

use crate::error::RdmaError;
use crate::sys::*;

/// The rdma-core sonames loaded by default (the ABI versions of rdma-core since 2016).
pub const LIBIBVERBS: &str = "libibverbs.so.1";
/// See [`LIBIBVERBS`].
pub const LIBRDMACM: &str = "librdmacm.so.1";

/// The resolved function table. The two `Library` handles are kept so that the fn
/// pointers stay valid for as long as the table lives (for the process-wide table:
/// forever; it is never unloaded).
pub struct Lib {
    pub(crate) ibv_alloc_pd: IbvAllocPd,
    pub(crate) ibv_dealloc_pd: IbvDeallocPd,
    pub(crate) ibv_reg_mr: IbvRegMr,
    pub(crate) ibv_dereg_mr: IbvDeregMr,
    pub(crate) ibv_create_comp_channel: IbvCreateCompChannel,
    pub(crate) ibv_destroy_comp_channel: IbvDestroyCompChannel,
    pub(crate) ibv_create_cq: IbvCreateCq,
    pub(crate) ibv_destroy_cq: IbvDestroyCq,
    pub(crate) ibv_get_cq_event: IbvGetCqEvent,
    pub(crate) ibv_ack_cq_events: IbvAckCqEvents,
    pub(crate) ibv_wc_status_str: IbvWcStatusStr,
    pub(crate) ibv_query_device: IbvQueryDevice,
    pub(crate) rdma_create_event_channel: RdmaCreateEventChannel,
    pub(crate) rdma_destroy_event_channel: RdmaDestroyEventChannel,
    pub(crate) rdma_create_id: RdmaCreateId,
    pub(crate) rdma_destroy_id: RdmaDestroyId,
    pub(crate) rdma_bind_addr: RdmaBindAddr,
    pub(crate) rdma_listen: RdmaListen,
    pub(crate) rdma_get_cm_event: RdmaGetCmEvent,
    pub(crate) rdma_ack_cm_event: RdmaAckCmEvent,
    pub(crate) rdma_accept: RdmaAccept,
    pub(crate) rdma_reject: RdmaReject,
    pub(crate) rdma_connect: RdmaConnect,
    pub(crate) rdma_disconnect: RdmaDisconnect,
    pub(crate) rdma_resolve_addr: RdmaResolveAddr,
    pub(crate) rdma_resolve_route: RdmaResolveRoute,
    pub(crate) rdma_create_qp: RdmaCreateQp,
    pub(crate) rdma_destroy_qp: RdmaDestroyQp,
    pub(crate) rdma_migrate_id: RdmaMigrateId,
    pub(crate) rdma_event_str: RdmaEventStr,
    _verbs: Library,
    _cm: Library,
}

impl std::fmt::Debug for Lib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lib(rdma-core)")
    }
}

fn open(name: &'static str) -> Result<Library, RdmaError> {
    // SAFETY: loading a shared library runs its initialisers; libibverbs and librdmacm
    // are plain C libraries whose constructors only set up their own state (librdmacm's
    // reads no files until rdma_create_event_channel). A bogus name just fails.
    unsafe { Library::new(name) }.map_err(|e| RdmaError::Unavailable {
        lib: name,
        reason: e.to_string(),
    })
}

macro_rules! sym {
    ($lib:expr, $libname:expr, $name:ident) => {{
        // SAFETY: the symbol's type is the prototype transcribed in sys.rs from
        // verbs.h / rdma_cma.h (the default-versioned symbol dlsym returns is the one
        // those headers declare); the pointer is used only while the Library lives
        // (both are kept in the same Lib).
        let s = unsafe { $lib.get(concat!(stringify!($name), "\0").as_bytes()) }.map_err(|e| {
            RdmaError::Unavailable {
                lib: $libname,
                reason: e.to_string(),
            }
        })?;
        *s
    }};
}

impl Lib {
    /// Opens the two libraries by the given names (or paths) and resolves every function.
    /// [`Lib::get`] is the process-wide instance with the default sonames; this form
    /// exists for tests (a bogus name must give [`RdmaError::Unavailable`]).
    pub fn load(verbs: &'static str, cm: &'static str) -> Result<Lib, RdmaError> {
        let v = open(verbs)?;
        let c = open(cm)?;
        Ok(Lib {
            ibv_alloc_pd: sym!(v, verbs, ibv_alloc_pd),
            ibv_dealloc_pd: sym!(v, verbs, ibv_dealloc_pd),
            ibv_reg_mr: sym!(v, verbs, ibv_reg_mr),
            ibv_dereg_mr: sym!(v, verbs, ibv_dereg_mr),
            ibv_create_comp_channel: sym!(v, verbs, ibv_create_comp_channel),
            ibv_destroy_comp_channel: sym!(v, verbs, ibv_destroy_comp_channel),
            ibv_create_cq: sym!(v, verbs, ibv_create_cq),
            ibv_destroy_cq: sym!(v, verbs, ibv_destroy_cq),
            ibv_get_cq_event: sym!(v, verbs, ibv_get_cq_event),
            ibv_ack_cq_events: sym!(v, verbs, ibv_ack_cq_events),
            ibv_wc_status_str: sym!(v, verbs, ibv_wc_status_str),
            ibv_query_device: sym!(v, verbs, ibv_query_device),
            rdma_create_event_channel: sym!(c, cm, rdma_create_event_channel),
            rdma_destroy_event_channel: sym!(c, cm, rdma_destroy_event_channel),
            rdma_create_id: sym!(c, cm, rdma_create_id),
            rdma_destroy_id: sym!(c, cm, rdma_destroy_id),
            rdma_bind_addr: sym!(c, cm, rdma_bind_addr),
            rdma_listen: sym!(c, cm, rdma_listen),
            rdma_get_cm_event: sym!(c, cm, rdma_get_cm_event),
            rdma_ack_cm_event: sym!(c, cm, rdma_ack_cm_event),
            rdma_accept: sym!(c, cm, rdma_accept),
            rdma_reject: sym!(c, cm, rdma_reject),
            rdma_connect: sym!(c, cm, rdma_connect),
            rdma_disconnect: sym!(c, cm, rdma_disconnect),
            rdma_resolve_addr: sym!(c, cm, rdma_resolve_addr),
            rdma_resolve_route: sym!(c, cm, rdma_resolve_route),
            rdma_create_qp: sym!(c, cm, rdma_create_qp),
            rdma_destroy_qp: sym!(c, cm, rdma_destroy_qp),
            rdma_migrate_id: sym!(c, cm, rdma_migrate_id),
            rdma_event_str: sym!(c, cm, rdma_event_str),
            _verbs: v,
            _cm: c,
        })
    }

    /// The process-wide table, loaded on first call with [`LIBIBVERBS`] and [`LIBRDMACM`];
    /// the outcome (also a failure) is remembered.
    pub fn get() -> Result<&'static Lib, RdmaError> {
        static LIB: OnceLock<Result<Lib, (&'static str, String)>> = OnceLock::new();
        LIB.get_or_init(|| {
            Lib::load(LIBIBVERBS, LIBRDMACM).map_err(|e| match e {
                RdmaError::Unavailable { lib, reason } => (lib, reason),
                other => ("rdma-core", other.to_string()),
            })
        })
        .as_ref()
        .map_err(|(lib, reason)| RdmaError::Unavailable {
            lib,
            reason: reason.clone(),
        })
    }

    /// `ibv_wc_status_str(3)`: the text of a work completion status.
    pub(crate) fn wc_status_str(&self, status: u32) -> &'static str {
        // SAFETY: ibv_wc_status_str returns a pointer to a static string (also for
        // unknown values: "unknown"); the process-wide library is never unloaded, so
        // 'static holds for it (tests' own Lib instances do not call this).
        let p = unsafe { (self.ibv_wc_status_str)(status) };
        cstr_static(p)
    }

    /// `rdma_event_str(3)`: the name of a CM event type.
    pub(crate) fn event_str(&self, ev: u32) -> &'static str {
        // SAFETY: as for wc_status_str: a static string of librdmacm.
        let p = unsafe { (self.rdma_event_str)(ev) };
        cstr_static(p)
    }
}

fn cstr_static(p: *const std::ffi::c_char) -> &'static str {
    if p.is_null() {
        return "unknown";
    }
    // SAFETY: p is a NUL-terminated static string of the never-unloaded library.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_str()
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bogus_library_is_unavailable_with_a_fix() {
        let e = Lib::load("libibverbs-nvmf-rs-bogus.so.1", LIBRDMACM).unwrap_err();
        let RdmaError::Unavailable { lib, ref reason } = e else {
            panic!("expected Unavailable, got {e:?}");
        };
        assert_eq!(lib, "libibverbs-nvmf-rs-bogus.so.1");
        assert!(reason.contains("libibverbs-nvmf-rs-bogus"), "{reason}");
        let msg = e.to_string();
        assert!(msg.contains("install rdma-core"), "{msg}");
        assert!(
            msg.contains("libibverbs1") && msg.contains("librdmacm1"),
            "{msg}"
        );

        let e = Lib::load(LIBIBVERBS, "librdmacm-nvmf-rs-bogus.so.1");
        // where libibverbs itself is absent, that is the error; else librdmacm's
        match e {
            Err(RdmaError::Unavailable { lib, .. }) => {
                assert!(lib == LIBIBVERBS || lib == "librdmacm-nvmf-rs-bogus.so.1")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn a_library_without_the_symbols_is_unavailable() {
        // libc is present everywhere and has no ibv_alloc_pd: the symbol lookup must fail
        // as Unavailable, not crash
        match Lib::load("libc.so.6", "libc.so.6") {
            Err(RdmaError::Unavailable { lib, reason }) => {
                assert_eq!(lib, "libc.so.6");
                assert!(reason.contains("ibv_alloc_pd"), "{reason}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn loads_rdma_core_where_installed() {
        // This machine kind has rdma-core's libraries (libibverbs1, librdmacm1 come with
        // the -dev packages install-deps.sh installs); skip only where they are absent.
        let present = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libibverbs.so.1").exists()
            && std::path::Path::new("/usr/lib/x86_64-linux-gnu/librdmacm.so.1").exists();
        match Lib::get() {
            Ok(lib) => {
                assert_eq!(lib.wc_status_str(0), "success");
                assert_eq!(lib.wc_status_str(5), "Work Request Flushed Error");
                assert_eq!(
                    lib.event_str(crate::sys::RDMA_CM_EVENT_ESTABLISHED),
                    "RDMA_CM_EVENT_ESTABLISHED"
                );
            }
            Err(e) => assert!(!present, "rdma-core is installed but: {e}"),
        }
    }
}
