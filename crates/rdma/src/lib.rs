//! nvmf-rdma: a small, safe, async binding of RDMA CM and verbs (rdma-core's librdmacm and
//! libibverbs) for the NVMe/RDMA transport (NVMe-oF 1.1 §7.3: command capsules over
//! SEND/RECV, data by RDMA READ and RDMA WRITE, SEND with Invalidate).
//!
//! This crate is the only place in nvmf-rs with RDMA `unsafe`. rdma-core is loaded with
//! `dlopen` on first use ([`loader::Lib::get`]), so binaries depending on this crate run
//! on machines without it and get [`RdmaError::Unavailable`] when they try RDMA.
//! See docs/rdma.md.
#![allow(unsafe_code)]

pub mod error;
pub mod loader;
#[doc(hidden)]
pub mod sys;

pub use error::{RdmaError, Result};
pub use loader::Lib;
