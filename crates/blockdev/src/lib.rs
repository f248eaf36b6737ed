//! # nvmf-blockdev: remote namespaces as local block devices
//!
//! The model's hosts give each remote namespace to the whole machine as a disk
//! (FreeBSD's `nda`, Linux's `/dev/nvmeXnY`). This crate does the same from user
//! space through one of two kernel front ends, behind one type, [`Disk`]:
//! ublk ([`UblkDevice`], `/dev/ublkbN`, Linux 6.0+: requests arrive as io_uring
//! command completions, one ublk queue per NVMe I/O queue) where the kernel has
//! it, else NBD ([`NbdDevice`], `/dev/nbdN`: requests over a socket pair). Both
//! turn block requests into [`BlockOp`]s that a [`BlockIo`] runs as NVMe
//! commands (read, write with FUA, flush, deallocate, write zeroes). Because the
//! controller re-establishes a lost association and re-sends what was in
//! flight, the device survives a target restart; I/O waits meanwhile, and fails
//! only after ctrl-loss-tmo.
//!
//! Layout: [`io`] (the block operations and the [`BlockIo`] a front end hands
//! them to; [`SinglePath`] runs them on one controller), [`multipath`] (one namespace over several controllers, ANA-aware,
//! with failover), [`disk`] (the choice),
//! [`ublk`] ([`ublk::uapi`] layouts, [`ublk::map`] request mapping, no I/O;
//! [`ublk::ctrl`] control commands and [`ublk::queue`] the per-queue threads,
//! with `unsafe` for io_uring and mmap), [`nbd::wire`] (the NBD transmission
//! structures, no I/O), [`mod@nbd::serve`] (the request loop, async),
//! [`nbd::kernel`] (the device's ioctl interface, `unsafe`).

pub mod disk;
pub mod io;
pub mod multipath;
pub mod nbd;
pub mod ublk;

pub use disk::{Choice, Disk, DiskError, Kind};
pub use io::{BlockIo, BlockOp, Geometry, SinglePath};
pub use multipath::{IoPolicy, Multipath};
pub use nbd::{NbdDevice, NbdError};
pub use ublk::{Queues, UblkDevice, UblkError};
