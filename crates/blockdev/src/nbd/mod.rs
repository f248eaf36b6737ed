//! A namespace as `/dev/nbdN`, through the kernel's NBD driver.
//!
//! Setup follows nbd-client's ioctl sequence: block size, size in blocks,
//! transmission flags (flush and FUA always; trim and write zeroes when the
//! controller's ONCS has Dataset Management and Write Zeroes), then the kernel's
//! end of a Unix socket pair, then `NBD_DO_IT` on a thread of its own until the
//! device is disconnected. No NBD timeout is set, so the kernel never fails a
//! request on its own: while the controller re-establishes a lost association
//! requests wait, and they fail only when the controller gives up
//! (ctrl-loss-tmo) and answers them with an error.

pub mod kernel;
pub mod serve;
pub mod wire;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::io::{BlockIo, Geometry, SinglePath};
use nvmf_host::Controller;

pub use serve::{serve, ServeError, Target};

/// Why a device could not be attached or detached.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// The namespace is not active on the controller.
    #[error("{0}")]
    Namespace(#[from] nvmf_host::Error),
    /// No NBD driver, or no free device.
    #[error("{0}")]
    NoDevice(String),
    /// An ioctl on the device failed.
    #[error("{what} on {}: {source}", dev.display())]
    Ioctl {
        /// The step.
        what: &'static str,
        /// The device.
        dev: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The block size cannot be an NBD block size (512 to 4096, a power of two).
    #[error("namespace {nsid} has {block_size}-byte blocks; NBD takes 512 to 4096")]
    BlockSize {
        /// Namespace ID.
        nsid: u32,
        /// Its block size.
        block_size: u32,
    },
}

/// A namespace attached to an NBD device; [`Self::detach`] takes it away.
#[derive(Debug)]
pub struct NbdDevice {
    path: PathBuf,
    nsid: u32,
    block_size: u32,
    size: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
    server: tokio::task::JoinHandle<Result<u64, ServeError>>,
}

impl NbdDevice {
    /// Binds a free `/dev/nbdN` to namespace `nsid` of `ctrl` (loading the nbd
    /// module if needed) and starts serving it. Needs root (CAP_SYS_ADMIN).
    pub async fn attach(ctrl: Controller, nsid: u32) -> Result<Self, NbdError> {
        let g = Geometry::of(&ctrl, nsid)?;
        Self::attach_io(SinglePath::new(ctrl, nsid), g).await
    }

    /// Binds a free `/dev/nbdN` to a namespace of geometry `g` whose operations
    /// `io` runs (one controller, or several paths), and starts serving it.
    pub async fn attach_io<B: BlockIo>(io: B, g: Geometry) -> Result<Self, NbdError> {
        let nsid = g.nsid;
        if !(512..=4096).contains(&g.block_size) || !g.block_size.is_power_of_two() {
            return Err(NbdError::BlockSize {
                nsid,
                block_size: g.block_size,
            });
        }
        let mut fl = wire::flags::HAS_FLAGS | wire::flags::SEND_FLUSH | wire::flags::SEND_FUA;
        if g.discard {
            fl |= wire::flags::SEND_TRIM;
        }
        if g.write_zeroes {
            fl |= wire::flags::SEND_WRITE_ZEROES;
        }
        let (bs, blocks) = (g.block_size, g.blocks);
        let (dev, path, kernel_end, ours) =
            tokio::task::spawn_blocking(move || configure(bs, blocks, fl))
                .await
                .map_err(|e| NbdError::NoDevice(format!("setup thread: {e}")))??;
        ours.set_nonblocking(true)
            .map_err(|e| NbdError::NoDevice(format!("socket: {e}")))?;
        let ours = tokio::net::UnixStream::from_std(ours)
            .map_err(|e| NbdError::NoDevice(format!("socket: {e}")))?;
        let target = Target::new(nsid, bs, blocks);
        let size = target.blocks.clone();
        let server = tokio::spawn(serve(ours, io, target));
        let p = path.clone();
        let thread = std::thread::Builder::new()
            .name(format!("nbd-{nsid}"))
            .spawn(move || {
                let r = kernel::ioctl(&dev, kernel::DO_IT, 0);
                let _ = kernel::ioctl(&dev, kernel::CLEAR_SOCK, 0);
                drop(kernel_end);
                tracing::debug!("{}: NBD_DO_IT returned: {r:?}", p.display());
                r
            })
            .map_err(|e| NbdError::NoDevice(format!("thread: {e}")))?;
        tracing::info!(
            "{}: namespace {nsid} ({} blocks of {bs} bytes)",
            path.display(),
            blocks
        );
        Ok(Self {
            path,
            nsid,
            block_size: bs,
            size,
            thread: Some(thread),
            server,
        })
    }

    /// Size in blocks, as last set.
    pub fn blocks(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Logical block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Gives the device a new size (the namespace was resized on the target):
    /// NBD_SET_SIZE_BLOCKS on the running device, which tells the kernel's block
    /// layer the new capacity (a change uevent).
    pub async fn resize(&self, blocks: u64) -> Result<(), NbdError> {
        let path = self.path.clone();
        let old = self.size.swap(blocks, Ordering::Relaxed);
        let r = tokio::task::spawn_blocking(move || {
            let dev = kernel::open(&path).map_err(|source| NbdError::Ioctl {
                what: "open",
                dev: path.clone(),
                source,
            })?;
            kernel::ioctl(&dev, kernel::SET_SIZE_BLOCKS, blocks).map_err(|source| NbdError::Ioctl {
                what: "NBD_SET_SIZE_BLOCKS",
                dev: path,
                source,
            })
        })
        .await
        .map_err(|e| NbdError::NoDevice(format!("resize thread: {e}")))?;
        if r.is_err() {
            self.size.store(old, Ordering::Relaxed);
        } else {
            tracing::info!(
                "{}: resized from {old} to {blocks} blocks",
                self.path.display()
            );
        }
        r
    }

    /// The device node, `/dev/nbdN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace it serves.
    pub fn nsid(&self) -> u32 {
        self.nsid
    }

    /// Disconnects the device (the kernel sends DISC, the device disappears as a
    /// disk) and waits for its server to end.
    pub async fn detach(mut self) -> Result<(), NbdError> {
        let path = self.path.clone();
        let thread = self.thread.take();
        tokio::task::spawn_blocking(move || {
            let dev = kernel::open(&path).map_err(|source| NbdError::Ioctl {
                what: "open",
                dev: path.clone(),
                source,
            })?;
            kernel::ioctl(&dev, kernel::DISCONNECT, 0).map_err(|source| NbdError::Ioctl {
                what: "NBD_DISCONNECT",
                dev: path.clone(),
                source,
            })?;
            if let Some(t) = thread {
                let _ = t.join();
            }
            Ok::<_, NbdError>(())
        })
        .await
        .map_err(|e| NbdError::NoDevice(format!("detach thread: {e}")))??;
        match tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.server).await {
            Ok(Ok(Ok(n))) => tracing::info!("{}: detached after {n} requests", self.path.display()),
            Ok(Ok(Err(e))) => tracing::warn!("{}: server ended: {e}", self.path.display()),
            _ => self.server.abort(),
        }
        Ok(())
    }
}

type Configured = (
    std::fs::File,
    PathBuf,
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
);

/// Finds a free device and configures it; returns it with both socket ends.
fn configure(bs: u32, blocks: u64, flags: u32) -> Result<Configured, NbdError> {
    kernel::ensure_module().map_err(|e| NbdError::NoDevice(e.to_string()))?;
    let mut last = None;
    for (_, path) in kernel::free_devices() {
        let Ok(dev) = kernel::open(&path) else {
            continue;
        };
        let (kernel_end, ours) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| NbdError::NoDevice(format!("socketpair: {e}")))?;
        let step = |what: &'static str, req, arg: u64| {
            kernel::ioctl(&dev, req, arg).map_err(|source| NbdError::Ioctl {
                what,
                dev: path.clone(),
                source,
            })
        };
        use std::os::fd::AsRawFd;
        let r = step("NBD_SET_BLKSIZE", kernel::SET_BLKSIZE, u64::from(bs))
            .and_then(|_| step("NBD_SET_SIZE_BLOCKS", kernel::SET_SIZE_BLOCKS, blocks))
            .and_then(|_| step("NBD_SET_FLAGS", kernel::SET_FLAGS, u64::from(flags)))
            .and_then(|_| {
                step(
                    "NBD_SET_SOCK",
                    kernel::SET_SOCK,
                    kernel_end.as_raw_fd() as u64,
                )
            });
        match r {
            Ok(()) => return Ok((dev, path, kernel_end, ours)),
            // Taken by someone else meanwhile: try the next one.
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        NbdError::NoDevice("no free /dev/nbdN (all are attached; see /sys/block/nbd*/pid)".into())
    }))
}
