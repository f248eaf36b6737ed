//! # nvmf-controller: the NVMe-oF target
//!
//! Subsystems with namespaces on the backends of `nvmf-backend`, served over
//! NVMe/TCP: the Fabrics commands (Connect, Property Get/Set, Disconnect), the
//! admin commands a Linux or SPDK host uses (Identify, Get Log Page, Get/Set
//! Features, Keep Alive, Asynchronous Event Request, Abort), the NVM I/O commands
//! (Read, Write with FUA, Flush, Write Zeroes, Dataset Management, Compare,
//! Verify, Copy, fused Compare and Write), reservations ([`reservation`]:
//! Register, Acquire, Release, Report, the notification log and event,
//! persistence through a target restart) and a
//! discovery controller. Configuration comes from a TOML file or flags
//! ([`config`]) and can be reloaded while hosts stay connected.

mod abort;
pub mod admin;
pub mod admission;
pub mod ana;
pub mod auth;
mod bufpool;
pub mod config;
pub mod control;
pub mod cpu_latency;
pub mod discovery;
mod fused;
pub mod io;
pub mod metrics;
mod nvm;
pub mod nvmetcli;
mod queue;
pub mod registry;
pub mod reservation;
pub mod server;
mod uring;
pub mod write_order;

pub use config::TargetConfig;
pub use server::{Target, TargetError};
