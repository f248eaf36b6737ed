//! # nvmf-blockdev: remote namespaces as local block devices
//!
//! The model's hosts give each remote namespace to the whole machine as a disk
//! (FreeBSD's `nda`, Linux's `/dev/nvmeXnY`). This crate does the same from user
//! space through the kernel's NBD driver: [`NbdDevice::attach`] binds a free
//! `/dev/nbdN` to one namespace of a [`nvmf_host::Controller`]; the kernel sends
//! block requests over a socket pair, and [`nbd::serve()`] turns each into NVMe
//! commands on the controller's I/O queues (read, write with FUA, flush,
//! deallocate, write zeroes). Because the controller re-establishes a lost
//! association and re-sends what was in flight, the device survives a target
//! restart; I/O waits meanwhile, and fails only after ctrl-loss-tmo.
//!
//! Layout: [`io`] (the block operations and the [`BlockIo`] a front end hands
//! them to; [`SinglePath`] runs them on one controller), [`multipath`] (one
//! namespace over several controllers, ANA-aware, with failover), [`nbd::wire`] (the NBD transmission structures, no I/O),
//! [`mod@nbd::serve`] (the request loop, async), [`nbd::kernel`] (the device's ioctl
//! interface, this crate's only `unsafe`).

pub mod io;
pub mod multipath;
pub mod nbd;

pub use io::{BlockIo, BlockOp, Geometry, SinglePath};
pub use multipath::{IoPolicy, Multipath};
pub use nbd::{NbdDevice, NbdError};
