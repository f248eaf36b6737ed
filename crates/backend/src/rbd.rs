//! A namespace on a Ceph RBD image, through librbd (Debian's `librbd1`).
//!
//! Ceph's own NVMe-oF gateway does the same with SPDK's RBD bdev. librbd is
//! loaded at run time (`dlopen` of `librbd.so.1` and `librados.so.2`), so the
//! `nvmf` binary builds and runs on machines without Ceph and only a namespace
//! that names an RBD image needs the libraries.
//!
//! Every operation goes through librbd's asynchronous entry points
//! (`rbd_aio_read2`, `rbd_aio_write2`, `rbd_aio_flush`, `rbd_aio_discard`,
//! `rbd_aio_write_zeroes`) and waits for its completion
//! (`rbd_aio_wait_for_complete`); the controller runs backend calls on its
//! blocking pool, so the commands of all queues are in flight in librbd at
//! once. A write whose data arrived in several PDUs is issued as one AIO per
//! piece, all in flight together, instead of being copied into one buffer.
//!
//! Mapping (librbd.h, Ceph 16): Read → `rbd_aio_read2`; Write →
//! `rbd_aio_write2`, and with FUA a flush after it (librbd has no per-write
//! FUA; with `rbd_cache` on, writes are acknowledged from the cache until a
//! flush, so the namespace reports a volatile write cache); Flush →
//! `rbd_aio_flush`; Dataset Management deallocate → `rbd_aio_discard` (reads
//! of discarded ranges return zeroes); Write Zeroes → `rbd_aio_write_zeroes`.
//! The image's size is the namespace's (`rbd_get_size`), in whole blocks.
//!
//! An image handle may be used from many threads at once (librbd serialises
//! internally per object, not per image), which is what makes
//! [`RbdBackend`] `Sync`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;

use crate::{check_access, check_block_size, Backend, BackendError, BackendInfo, Result};

type RadosT = *mut c_void;
type IoctxT = *mut c_void;
type ImageT = *mut c_void;
type CompletionT = *mut c_void;

/// The librados/librbd functions used, resolved once at open.
struct Api {
    _rados: libloading::Library,
    _rbd: libloading::Library,
    rados_create: unsafe extern "C" fn(*mut RadosT, *const c_char) -> c_int,
    rados_conf_read_file: unsafe extern "C" fn(RadosT, *const c_char) -> c_int,
    rados_conf_parse_env: unsafe extern "C" fn(RadosT, *const c_char) -> c_int,
    rados_conf_set: unsafe extern "C" fn(RadosT, *const c_char, *const c_char) -> c_int,
    rados_connect: unsafe extern "C" fn(RadosT) -> c_int,
    rados_shutdown: unsafe extern "C" fn(RadosT),
    rados_ioctx_create: unsafe extern "C" fn(RadosT, *const c_char, *mut IoctxT) -> c_int,
    rados_ioctx_destroy: unsafe extern "C" fn(IoctxT),
    rbd_open: unsafe extern "C" fn(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    rbd_close: unsafe extern "C" fn(ImageT) -> c_int,
    rbd_get_size: unsafe extern "C" fn(ImageT, *mut u64) -> c_int,
    rbd_aio_create_completion: unsafe extern "C" fn(
        *mut c_void,
        Option<unsafe extern "C" fn(CompletionT, *mut c_void)>,
        *mut CompletionT,
    ) -> c_int,
    rbd_aio_wait_for_complete: unsafe extern "C" fn(CompletionT) -> c_int,
    rbd_aio_get_return_value: unsafe extern "C" fn(CompletionT) -> isize,
    rbd_aio_release: unsafe extern "C" fn(CompletionT),
    rbd_aio_read2:
        unsafe extern "C" fn(ImageT, u64, usize, *mut c_char, CompletionT, c_int) -> c_int,
    rbd_aio_write2:
        unsafe extern "C" fn(ImageT, u64, usize, *const c_char, CompletionT, c_int) -> c_int,
    rbd_aio_flush: unsafe extern "C" fn(ImageT, CompletionT) -> c_int,
    rbd_aio_discard: unsafe extern "C" fn(ImageT, u64, u64, CompletionT) -> c_int,
    rbd_aio_write_zeroes:
        unsafe extern "C" fn(ImageT, u64, usize, CompletionT, c_int, c_int) -> c_int,
}

fn invalid(msg: String) -> BackendError {
    BackendError::InvalidConfig(msg)
}

impl Api {
    fn load() -> Result<Self> {
        // SAFETY: loading the system's librados/librbd runs their static
        // initialisers, which have no preconditions on the caller.
        let rados = unsafe { libloading::Library::new("librados.so.2") }.map_err(|e| {
            invalid(format!(
                "RBD namespaces need librados (Debian: apt-get install librbd1): {e}"
            ))
        })?;
        // SAFETY: as above.
        let rbd = unsafe { libloading::Library::new("librbd.so.1") }.map_err(|e| {
            invalid(format!(
                "RBD namespaces need librbd (Debian: apt-get install librbd1): {e}"
            ))
        })?;
        macro_rules! sym {
            ($lib:expr, $name:ident) => {{
                // SAFETY: the symbol is declared in librados.h / librbd.h with
                // exactly the signature of the field it is stored in.
                let s = unsafe { $lib.get(concat!(stringify!($name), "\0").as_bytes()) }
                    .map_err(|e| invalid(format!("{}: {e}", stringify!($name))))?;
                *s
            }};
        }
        Ok(Self {
            rados_create: sym!(rados, rados_create),
            rados_conf_read_file: sym!(rados, rados_conf_read_file),
            rados_conf_parse_env: sym!(rados, rados_conf_parse_env),
            rados_conf_set: sym!(rados, rados_conf_set),
            rados_connect: sym!(rados, rados_connect),
            rados_shutdown: sym!(rados, rados_shutdown),
            rados_ioctx_create: sym!(rados, rados_ioctx_create),
            rados_ioctx_destroy: sym!(rados, rados_ioctx_destroy),
            rbd_open: sym!(rbd, rbd_open),
            rbd_close: sym!(rbd, rbd_close),
            rbd_get_size: sym!(rbd, rbd_get_size),
            rbd_aio_create_completion: sym!(rbd, rbd_aio_create_completion),
            rbd_aio_wait_for_complete: sym!(rbd, rbd_aio_wait_for_complete),
            rbd_aio_get_return_value: sym!(rbd, rbd_aio_get_return_value),
            rbd_aio_release: sym!(rbd, rbd_aio_release),
            rbd_aio_read2: sym!(rbd, rbd_aio_read2),
            rbd_aio_write2: sym!(rbd, rbd_aio_write2),
            rbd_aio_flush: sym!(rbd, rbd_aio_flush),
            rbd_aio_discard: sym!(rbd, rbd_aio_discard),
            rbd_aio_write_zeroes: sym!(rbd, rbd_aio_write_zeroes),
            _rados: rados,
            _rbd: rbd,
        })
    }
}

/// Where the image is and how to reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdSpec {
    /// The pool.
    pub pool: String,
    /// The image in the pool.
    pub image: String,
    /// ceph.conf to read; None: librados's default search (`$CEPH_CONF`,
    /// /etc/ceph/ceph.conf, ...).
    pub conf: Option<std::path::PathBuf>,
    /// The client's Ceph user without `client.` (default `admin`).
    pub id: Option<String>,
}

impl RbdSpec {
    /// Parses `POOL/IMAGE`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.split_once('/') {
            Some((p, i)) if !p.is_empty() && !i.is_empty() && !i.contains('/') => Ok(Self {
                pool: p.into(),
                image: i.into(),
                conf: None,
                id: None,
            }),
            _ => Err(format!("{s:?} is not POOL/IMAGE (for example rbd/disk1)")),
        }
    }
}

/// One in-flight AIO: created, submitted, then waited on and released.
struct Aio<'a> {
    api: &'a Api,
    c: CompletionT,
}

impl<'a> Aio<'a> {
    fn new(api: &'a Api) -> Result<Self> {
        let mut c = ptr::null_mut();
        // SAFETY: `c` is a valid out-pointer; no callback is registered (the
        // completion is waited on instead).
        let r = unsafe { (api.rbd_aio_create_completion)(ptr::null_mut(), None, &mut c) };
        if r < 0 || c.is_null() {
            return Err(os("rbd_aio_create_completion", r as isize));
        }
        Ok(Self { api, c })
    }

    /// Waits for the operation; its return value (bytes, or 0, or -errno).
    fn wait(self, what: &'static str) -> Result<isize> {
        // SAFETY: `self.c` is a live completion whose operation was submitted.
        unsafe { (self.api.rbd_aio_wait_for_complete)(self.c) };
        // SAFETY: the operation is complete, so its return value is final.
        let r = unsafe { (self.api.rbd_aio_get_return_value)(self.c) };
        if r < 0 {
            return Err(os(what, r));
        }
        Ok(r)
    }
}

impl Drop for Aio<'_> {
    fn drop(&mut self) {
        // SAFETY: released once; for a submitted operation only after
        // `wait` returned (wait consumes self, then drop runs), and an
        // unsubmitted completion may be released at any time.
        unsafe { (self.api.rbd_aio_release)(self.c) };
    }
}

/// A failed set-up step (`r` = -errno) as a configuration error naming the step.
fn setup_err(what: String, r: c_int) -> BackendError {
    invalid(format!("{what}: {}", std::io::Error::from_raw_os_error(-r)))
}

fn os(what: &'static str, r: isize) -> BackendError {
    BackendError::io(what, std::io::Error::from_raw_os_error((-r) as i32))
}

/// A namespace on an RBD image.
pub struct RbdBackend {
    api: Api,
    cluster: RadosT,
    ioctx: IoctxT,
    image: ImageT,
    info: BackendInfo,
}

// SAFETY: the handles are owned by this value and freed once in Drop; librbd
// image handles, librados io contexts and cluster handles may be used from
// several threads at once (librbd.h and librados.h document them as
// thread-safe; SPDK's RBD bdev shares one image among its threads).
unsafe impl Send for RbdBackend {}
// SAFETY: as above: every method only passes the handles to librbd calls that
// are safe to make concurrently.
unsafe impl Sync for RbdBackend {}

impl std::fmt::Debug for RbdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdBackend")
            .field("info", &self.info)
            .finish()
    }
}

fn cstr(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| invalid(format!("{what} {s:?} contains a NUL byte")))
}

impl RbdBackend {
    /// Connects to the cluster and opens the image (its size, in whole blocks
    /// of `block_size`, is the namespace's).
    pub fn open(spec: &RbdSpec, block_size: u32) -> Result<Self> {
        check_block_size(block_size)?;
        let api = Api::load()?;
        let mut cluster = ptr::null_mut();
        let id = spec.id.as_deref().map(|i| cstr("Ceph id", i)).transpose()?;
        // SAFETY: `cluster` is a valid out-pointer; `id` is NUL-terminated or null.
        let r = unsafe {
            (api.rados_create)(
                &mut cluster,
                id.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
            )
        };
        if r < 0 {
            return Err(os("rados_create", r as isize));
        }
        // From here on Drop of this guard shuts the cluster handle down.
        let mut me = Self {
            api,
            cluster,
            ioctx: ptr::null_mut(),
            image: ptr::null_mut(),
            info: BackendInfo {
                block_size,
                num_blocks: 0,
                volatile: false,
                supports_discard: true,
                may_block: true,
                description: format!("rbd {}/{}", spec.pool, spec.image),
            },
        };
        let conf = spec
            .conf
            .as_ref()
            .map(|p| cstr("ceph.conf path", &p.to_string_lossy()))
            .transpose()?;
        // SAFETY: a live cluster handle and a NUL-terminated path or null
        // (null: librados's default search).
        let r = unsafe {
            (me.api.rados_conf_read_file)(
                me.cluster,
                conf.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
            )
        };
        if r < 0 {
            return Err(setup_err(
                format!(
                    "reading the Ceph configuration {}",
                    spec.conf
                        .as_deref()
                        .map_or("(default: $CEPH_CONF, /etc/ceph/ceph.conf)".into(), |p| p
                            .display()
                            .to_string())
                ),
                r,
            ));
        }
        // SAFETY: a live cluster handle; null means CEPH_ARGS.
        unsafe { (me.api.rados_conf_parse_env)(me.cluster, ptr::null()) };
        // A discard or write-zeroes of part of an object must zero that part:
        // librbd skips partial discards by default (rbd_skip_partial_discard),
        // and then a deallocated range would not read back as zeroes.
        // SAFETY: a live cluster handle and two NUL-terminated strings.
        let r = unsafe {
            (me.api.rados_conf_set)(
                me.cluster,
                c"rbd_skip_partial_discard".as_ptr(),
                c"false".as_ptr(),
            )
        };
        if r < 0 {
            return Err(os("rados_conf_set rbd_skip_partial_discard", r as isize));
        }
        // SAFETY: a live, configured cluster handle.
        let r = unsafe { (me.api.rados_connect)(me.cluster) };
        if r < 0 {
            return Err(setup_err("connecting to the Ceph cluster".into(), r));
        }
        let pool = cstr("pool", &spec.pool)?;
        let mut ioctx = ptr::null_mut();
        // SAFETY: a connected cluster, a NUL-terminated pool name, a valid out-pointer.
        let r = unsafe { (me.api.rados_ioctx_create)(me.cluster, pool.as_ptr(), &mut ioctx) };
        if r < 0 {
            return Err(setup_err(format!("opening pool {:?}", spec.pool), r));
        }
        me.ioctx = ioctx;
        let name = cstr("image", &spec.image)?;
        let mut image = ptr::null_mut();
        // SAFETY: a live io context, a NUL-terminated name, a valid
        // out-pointer, no snapshot (null).
        let r = unsafe { (me.api.rbd_open)(me.ioctx, name.as_ptr(), &mut image, ptr::null()) };
        if r < 0 {
            return Err(setup_err(
                format!("opening image {}/{}", spec.pool, spec.image),
                r,
            ));
        }
        me.image = image;
        let mut size = 0u64;
        // SAFETY: an open image and a valid out-pointer.
        let r = unsafe { (me.api.rbd_get_size)(me.image, &mut size) };
        if r < 0 {
            return Err(os("rbd_get_size", r as isize));
        }
        me.info.num_blocks = size / u64::from(block_size);
        if me.info.num_blocks == 0 {
            return Err(invalid(format!(
                "image {}/{} has {size} bytes, less than one {block_size}-byte block",
                spec.pool, spec.image
            )));
        }
        Ok(me)
    }

    fn flush_now(&self) -> Result<()> {
        let a = Aio::new(&self.api)?;
        // SAFETY: an open image and a live completion.
        let r = unsafe { (self.api.rbd_aio_flush)(self.image, a.c) };
        if r < 0 {
            return Err(os("rbd_aio_flush", r as isize));
        }
        a.wait("rbd flush").map(|_| ())
    }
}

impl Drop for RbdBackend {
    fn drop(&mut self) {
        if !self.image.is_null() {
            // SAFETY: opened once in `open`, closed once here; no operation
            // is in flight (every call waits for its completions).
            unsafe { (self.api.rbd_close)(self.image) };
        }
        if !self.ioctx.is_null() {
            // SAFETY: created once in `open`, destroyed once, after the image.
            unsafe { (self.api.rados_ioctx_destroy)(self.ioctx) };
        }
        // SAFETY: created in `open`, shut down once, after everything it owns.
        unsafe { (self.api.rados_shutdown)(self.cluster) };
    }
}

impl Backend for RbdBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_access(&self.info, offset, buf.len() as u64)?;
        let a = Aio::new(&self.api)?;
        // SAFETY: `buf` outlives the operation (waited on below) and is
        // `buf.len()` bytes long; the image is open.
        let r = unsafe {
            (self.api.rbd_aio_read2)(
                self.image,
                offset,
                buf.len(),
                buf.as_mut_ptr().cast(),
                a.c,
                0,
            )
        };
        if r < 0 {
            return Err(os("rbd_aio_read2", r as isize));
        }
        let n = a.wait("rbd read")?;
        if n as usize != buf.len() {
            return Err(BackendError::io(
                "rbd read",
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{n} of {} bytes", buf.len()),
                ),
            ));
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[&[u8]], fua: bool) -> Result<()> {
        let len: u64 = data.iter().map(|d| d.len() as u64).sum();
        check_access(&self.info, offset, len)?;
        let mut inflight = Vec::with_capacity(data.len());
        let mut off = offset;
        let mut first_err = None;
        for d in data.iter().filter(|d| !d.is_empty()) {
            let a = Aio::new(&self.api)?;
            // SAFETY: `d` outlives the operation (every submitted AIO is
            // waited on below before returning); the image is open.
            let r = unsafe {
                (self.api.rbd_aio_write2)(self.image, off, d.len(), d.as_ptr().cast(), a.c, 0)
            };
            if r < 0 {
                first_err = Some(os("rbd_aio_write2", r as isize));
                break;
            }
            inflight.push(a);
            off += d.len() as u64;
        }
        for a in inflight {
            if let Err(e) = a.wait("rbd write") {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if fua {
            self.flush_now()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.flush_now()
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        check_access(&self.info, offset, len)?;
        let len = usize::try_from(len).map_err(|_| invalid("write zeroes too long".into()))?;
        let a = Aio::new(&self.api)?;
        // SAFETY: an open image and a live completion; no buffer is involved.
        let r = unsafe { (self.api.rbd_aio_write_zeroes)(self.image, offset, len, a.c, 0, 0) };
        if r < 0 {
            return Err(os("rbd_aio_write_zeroes", r as isize));
        }
        a.wait("rbd write zeroes").map(|_| ())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_access(&self.info, offset, len)?;
        let a = Aio::new(&self.api)?;
        // SAFETY: an open image and a live completion.
        let r = unsafe { (self.api.rbd_aio_discard)(self.image, offset, len, a.c) };
        if r < 0 {
            return Err(os("rbd_aio_discard", r as isize));
        }
        a.wait("rbd discard").map(|_| ())
    }
}

/// Whether librbd can be loaded here (for tests that need a cluster).
pub fn librbd_available() -> bool {
    Api::load().is_ok()
}

/// Opens namespace storage on an RBD image.
pub fn open(spec: &RbdSpec, block_size: u32) -> Result<std::sync::Arc<dyn Backend>> {
    Ok(std::sync::Arc::new(RbdBackend::open(spec, block_size)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parse() {
        let s = RbdSpec::parse("rbd/disk1").unwrap();
        assert_eq!((s.pool.as_str(), s.image.as_str()), ("rbd", "disk1"));
        for bad in ["rbd", "/x", "rbd/", "a/b/c", ""] {
            assert!(RbdSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nul_bytes_are_refused_before_librbd() {
        assert!(cstr("pool", "a\0b").is_err());
    }
}
