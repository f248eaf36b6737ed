//! A namespace as `/dev/ublkbN`, through the kernel's ublk driver (Linux 6.0+,
//! `drivers/block/ublk_drv.c`; interface in `include/uapi/linux/ublk_cmd.h`).
//!
//! Setup: ADD_DEV creates `/dev/ublkcN` with one ublk queue per NVMe I/O queue
//! of the controller (the kernel caps the count at the number of CPUs) and
//! `depth` tags each; SET_PARAMS gives the logical block size, the size, the
//! largest request ([`MAX_IO_BYTES`]), a volatile cache with FUA (so the block
//! layer sends flushes and FUA writes) and, per the controller's ONCS, discard
//! and write zeroes. Each queue then runs on a thread of its own
//! ([`queue`]) and fetches every tag; START_DEV adds the disk. Requests go to a
//! [`BlockIo`] on the caller's tokio runtime, many at once per queue.
//!
//! Resize: the driver can change a live device's size only with
//! UBLK_U_CMD_UPDATE_SIZE, which kernels that announce `UBLK_F_UPDATE_SIZE` in
//! GET_FEATURES have (6.12 does not). Without it [`UblkDevice::resize`] fails
//! with [`UblkError::ResizeUnsupported`] and the caller shows the new size by
//! removing the device and adding it again (SET_PARAMS is refused on a live
//! device). Detach: STOP_DEV removes the disk once its requests completed and
//! aborts the queues' fetches; the queue threads end, the char device is
//! closed, and DEL_DEV deletes the device.
//!
//! This crate talks to the driver with the `io-uring` crate directly rather than
//! through libublk, whose -sys crate runs bindgen (libclang) at build time.

pub mod ctrl;
pub mod map;
pub mod queue;
pub mod uapi;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::io::{BlockIo, Geometry};
use nvmf_host::Controller;

/// Largest request the device takes, in bytes: each tag has a buffer this size.
pub const MAX_IO_BYTES: u32 = 512 << 10;
/// Tags per ublk queue at most.
pub const MAX_DEPTH: u16 = 128;

/// Why a ublk device could not be made, resized or removed.
#[derive(Debug, thiserror::Error)]
pub enum UblkError {
    /// The namespace is not active on the controller.
    #[error("{0}")]
    Namespace(#[from] nvmf_host::Error),
    /// No ublk driver (`/dev/ublk-control` missing and `modprobe ublk_drv` failed).
    #[error("no ublk driver: {0}")]
    NoDriver(String),
    /// A control command or a step of the setup failed.
    #[error("{what} (ublk device {dev}): {source}")]
    Control {
        /// The step.
        what: &'static str,
        /// The device ID (u32::MAX before ADD_DEV gave one).
        dev: u32,
        /// The error.
        source: io::Error,
    },
    /// The block size cannot be a ublk logical block size.
    #[error("namespace {nsid} has {block_size}-byte blocks; ublk takes 512 to 4096")]
    BlockSize {
        /// Namespace ID.
        nsid: u32,
        /// Its block size.
        block_size: u32,
    },
    /// The driver lacks UBLK_U_CMD_UPDATE_SIZE (kernels up to at least 6.12).
    #[error("this kernel's ublk driver cannot resize a live device (no UBLK_F_UPDATE_SIZE)")]
    ResizeUnsupported,
    /// A setup thread failed.
    #[error("{0}")]
    Thread(String),
}

/// How many ublk queues, and how deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queues {
    /// Number of queues: the controller's I/O queue count.
    pub count: u16,
    /// Tags per queue: the controller's I/O queue size, at most [`MAX_DEPTH`].
    pub depth: u16,
}

impl Queues {
    /// One ublk queue per I/O queue of `ctrl`, as deep as its I/O queues (up to
    /// [`MAX_DEPTH`]).
    pub fn of(ctrl: &Controller) -> Self {
        let i = ctrl.info();
        Self::new(i.nr_io_queues, i.io_queue_size)
    }

    /// `count` queues of `depth` tags, kept within 1..=[`MAX_DEPTH`] tags and
    /// at least one queue.
    pub fn new(count: u16, depth: u16) -> Self {
        Self {
            count: count.max(1),
            depth: depth.clamp(1, MAX_DEPTH),
        }
    }
}

/// Makes sure the driver is there: `/dev/ublk-control`, loading `ublk_drv` if
/// needed.
pub fn ensure_driver() -> Result<(), UblkError> {
    let ctl = Path::new(uapi::CONTROL);
    if ctl.exists() {
        return Ok(());
    }
    let st = std::process::Command::new("modprobe")
        .arg("ublk_drv")
        .stderr(std::process::Stdio::null())
        .status();
    for _ in 0..20 {
        if ctl.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(UblkError::NoDriver(format!(
        "no {} and 'modprobe ublk_drv' {} (CONFIG_BLK_DEV_UBLK, Linux 6.0+)",
        uapi::CONTROL,
        match st {
            Ok(s) => format!("ended with {s}"),
            Err(e) => format!("could not run ({e})"),
        }
    )))
}

/// A namespace attached to a ublk device; [`Self::detach`] takes it away.
#[derive(Debug)]
pub struct UblkDevice {
    dev_id: u32,
    path: PathBuf,
    nsid: u32,
    block_size: u32,
    size: Arc<AtomicU64>,
    queues: Vec<(Arc<queue::Waker>, std::thread::JoinHandle<io::Result<u64>>)>,
    cdev: Option<Arc<File>>,
    update_size: bool,
}

fn ctl_err(what: &'static str, dev: u32) -> impl FnOnce(io::Error) -> UblkError {
    move |source| UblkError::Control { what, dev, source }
}

fn join_err(e: tokio::task::JoinError) -> UblkError {
    UblkError::Thread(format!("setup thread: {e}"))
}

impl UblkDevice {
    /// Exposes namespace `nsid` of `ctrl` as `/dev/ublkbN`, one ublk queue per
    /// I/O queue. Needs root (CAP_SYS_ADMIN).
    pub async fn attach(ctrl: Controller, nsid: u32) -> Result<Self, UblkError> {
        let g = Geometry::of(&ctrl, nsid)?;
        let q = Queues::of(&ctrl);
        Self::attach_io(crate::io::SinglePath::new(ctrl, nsid), g, q).await
    }

    /// Exposes a namespace of geometry `g`, whose operations `io` runs, as
    /// `/dev/ublkbN` with queues `q`, serving it on the current tokio runtime.
    pub async fn attach_io<B: BlockIo>(io: B, g: Geometry, q: Queues) -> Result<Self, UblkError> {
        let nsid = g.nsid;
        if !(512..=4096).contains(&g.block_size) || !g.block_size.is_power_of_two() {
            return Err(UblkError::BlockSize {
                nsid,
                block_size: g.block_size,
            });
        }
        let sectors =
            g.blocks
                .checked_mul(u64::from(g.block_size) / 512)
                .ok_or(UblkError::BlockSize {
                    nsid,
                    block_size: g.block_size,
                })?;
        // Discard and write zeroes carry no data: allow large ones, the
        // BlockIo splits them into NVMe commands.
        let big = u32::MAX >> 9 << 9;
        let params = uapi::Params {
            block_size: g.block_size,
            sectors,
            max_sectors: MAX_IO_BYTES / 512,
            max_discard_sectors: if g.discard { big } else { 0 },
            max_write_zeroes_sectors: if g.write_zeroes { big } else { 0 },
        };
        let (info, cdev, features) = tokio::task::spawn_blocking(move || {
            ensure_driver()?;
            let mut c =
                ctrl::Control::open().map_err(ctl_err("open /dev/ublk-control", u32::MAX))?;
            let features = c.features();
            let info = c
                .add(uapi::DevInfo {
                    nr_hw_queues: q.count,
                    queue_depth: q.depth,
                    max_io_buf_bytes: MAX_IO_BYTES,
                    dev_id: u32::MAX,
                    flags: uapi::flags::CMD_IOCTL_ENCODE | (features & uapi::flags::UPDATE_SIZE),
                })
                .map_err(ctl_err("ADD_DEV", u32::MAX))?;
            let id = info.dev_id;
            let opened = c
                .set_params(id, params)
                .map_err(ctl_err("SET_PARAMS", id))
                .and_then(|_| open_cdev(id));
            match opened {
                Ok(f) => Ok((info, f, features)),
                Err(e) => {
                    let _ = c.delete(id);
                    Err(e)
                }
            }
        })
        .await
        .map_err(join_err)??;
        let id = info.dev_id;
        let cdev = Arc::new(cdev);
        let handle = tokio::runtime::Handle::current();
        let mut queues = Vec::new();
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut err = None;
        for q_id in 0..info.nr_hw_queues {
            let waker = match queue::Waker::new() {
                Ok(w) => Arc::new(w),
                Err(e) => {
                    err = Some(UblkError::Control {
                        what: "eventfd",
                        dev: id,
                        source: e,
                    });
                    break;
                }
            };
            let setup = queue::Setup {
                q_id,
                depth: info.queue_depth,
                buf_bytes: info.max_io_buf_bytes as usize,
                cdev: cdev.clone(),
                io: io.clone(),
                block_size: g.block_size,
                handle: handle.clone(),
                waker: waker.clone(),
            };
            let tx = ready_tx.clone();
            match std::thread::Builder::new()
                .name(format!("ublk{id}q{q_id}"))
                .spawn(move || queue::run(setup, tx))
            {
                Ok(t) => queues.push((waker, t)),
                Err(e) => {
                    err = Some(UblkError::Control {
                        what: "queue thread",
                        dev: id,
                        source: e,
                    });
                    break;
                }
            }
        }
        drop(ready_tx);
        let n = queues.len();
        let started = tokio::task::spawn_blocking(move || -> Result<(), UblkError> {
            if let Some(e) = err {
                return Err(e);
            }
            for _ in 0..n {
                match ready_rx.recv() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        return Err(UblkError::Control {
                            what: "queue setup",
                            dev: id,
                            source: e,
                        })
                    }
                    Err(_) => return Err(UblkError::Thread("a queue thread ended".into())),
                }
            }
            let mut c = ctrl::Control::open().map_err(ctl_err("open /dev/ublk-control", id))?;
            c.start(id, std::process::id())
                .map_err(ctl_err("START_DEV", id))
        })
        .await
        .map_err(join_err)?;
        let mut dev = Self {
            dev_id: id,
            path: PathBuf::from(format!("/dev/ublkb{id}")),
            nsid,
            block_size: g.block_size,
            size: Arc::new(AtomicU64::new(g.blocks)),
            queues,
            cdev: Some(cdev),
            update_size: features & uapi::flags::UPDATE_SIZE != 0,
        };
        if let Err(e) = started {
            if let Err(t) = dev.teardown(false).await {
                tracing::warn!("ublk device {id}: cleaning up after a failed start: {t}");
            }
            return Err(e);
        }
        for _ in 0..100 {
            if dev.path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(
            "{}: namespace {nsid} ({} blocks of {} bytes), {} queues of {} tags, driver features {features:#x}{}",
            dev.path.display(),
            g.blocks,
            g.block_size,
            info.nr_hw_queues,
            info.queue_depth,
            if dev.update_size {
                ""
            } else {
                "; no live resize on this kernel"
            }
        );
        Ok(dev)
    }

    /// Size in blocks, as last set.
    pub fn blocks(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Logical block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The block device node, `/dev/ublkbN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace it serves.
    pub fn nsid(&self) -> u32 {
        self.nsid
    }

    /// Whether [`Self::resize`] can work on this kernel (UBLK_F_UPDATE_SIZE).
    pub fn can_resize(&self) -> bool {
        self.update_size
    }

    /// Gives the live device a new size with UBLK_U_CMD_UPDATE_SIZE; fails with
    /// [`UblkError::ResizeUnsupported`] on a kernel without it.
    pub async fn resize(&self, blocks: u64) -> Result<(), UblkError> {
        if !self.update_size {
            return Err(UblkError::ResizeUnsupported);
        }
        let (id, sectors) = (self.dev_id, blocks * u64::from(self.block_size / 512));
        tokio::task::spawn_blocking(move || {
            let mut c = ctrl::Control::open().map_err(ctl_err("open /dev/ublk-control", id))?;
            c.update_size(id, sectors)
                .map_err(ctl_err("UPDATE_SIZE", id))
        })
        .await
        .map_err(join_err)??;
        let old = self.size.swap(blocks, Ordering::Relaxed);
        tracing::info!(
            "{}: resized from {old} to {blocks} blocks",
            self.path.display()
        );
        Ok(())
    }

    /// Stops the device (the disk goes away once its requests completed), ends
    /// the queue threads and deletes the device.
    pub async fn detach(mut self) -> Result<(), UblkError> {
        self.teardown(true).await
    }

    async fn teardown(&mut self, started: bool) -> Result<(), UblkError> {
        let id = self.dev_id;
        let queues = std::mem::take(&mut self.queues);
        let cdev = self.cdev.take();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = ctrl::Control::open().map_err(ctl_err("open /dev/ublk-control", id))?;
            let stopped = if started {
                c.stop(id).map_err(ctl_err("STOP_DEV", id))
            } else {
                Ok(())
            };
            let mut served = 0;
            for (w, _) in &queues {
                w.stop();
            }
            for (_, t) in queues {
                match t.join() {
                    Ok(Ok(n)) => served += n,
                    Ok(Err(e)) => tracing::warn!("{}: queue: {e}", path.display()),
                    Err(_) => tracing::warn!("{}: a queue thread panicked", path.display()),
                }
            }
            drop(cdev);
            stopped?;
            c.delete(id).map_err(ctl_err("DEL_DEV", id))?;
            tracing::info!("{}: detached after {served} requests", path.display());
            Ok(())
        })
        .await
        .map_err(join_err)?
    }
}

/// Opens `/dev/ublkcN`, waiting briefly for its node to appear.
fn open_cdev(id: u32) -> Result<File, UblkError> {
    let p = format!("/dev/ublkc{id}");
    let mut last = None;
    for _ in 0..100 {
        match OpenOptions::new().read(true).write(true).open(&p) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
            Err(e) => {
                return Err(UblkError::Control {
                    what: "open char device",
                    dev: id,
                    source: e,
                })
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(UblkError::Control {
        what: "open char device",
        dev: id,
        source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
    })
}
