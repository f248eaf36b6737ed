//! A CPU wake-up latency request (Linux PM QoS), held while the target runs.
//!
//! When a queue's thread sleeps and its core goes idle, waking it for the next
//! command costs what the idle state costs to leave. In a virtual machine whose
//! idle CPUs halt, that is an inter-processor interrupt and a VM exit: about
//! 14 µs of a 25 µs round trip at queue depth 1 on the machine of
//! docs/performance.md. A PM QoS request caps the exit latency the cpuidle
//! governor may choose for every CPU; with 0 an idle CPU polls in the kernel's
//! idle loop instead of halting (the cpuidle POLL state), so a wake-up is a flag
//! the waking CPU sets. The target itself still sleeps and uses no CPU time
//! while idle, but the idle cores spin, which costs power (or the host's CPU
//! time in a VM). That is a choice for whoever runs the machine, as tuned's
//! `latency-performance` profile makes it, so the target asks only when told.
//!
//! Interface: write the limit in microseconds as a native-endian `i32` to
//! `/dev/cpu_dma_latency` and keep the file open; closing it, or the process
//! ending in any way, withdraws the request. Reading the file gives the limit in
//! force, the smallest of all requests (Linux
//! Documentation/power/pm_qos_interface.rst, "CPU latency QoS").

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};

/// The PM QoS CPU latency device.
pub const CPU_DMA_LATENCY: &str = "/dev/cpu_dma_latency";

/// Why the request could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot request a CPU wake-up latency of {us} µs through {CPU_DMA_LATENCY} (it needs root, and a Linux kernel with PM QoS): {source}")]
pub struct CpuLatencyError {
    /// The latency asked for.
    pub us: u32,
    /// What the kernel said.
    #[source]
    pub source: std::io::Error,
}

/// A PM QoS CPU latency request, withdrawn when dropped.
#[derive(Debug)]
pub struct CpuLatencyRequest {
    _file: File,
    us: u32,
}

impl CpuLatencyRequest {
    /// Asks that no CPU take longer than `us` microseconds to wake up, until
    /// the request is dropped.
    pub fn new(us: u32) -> Result<Self, CpuLatencyError> {
        let err = |source| CpuLatencyError { us, source };
        let value = i32::try_from(us).map_err(|_| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "above the largest value the kernel takes",
            ))
        })?;
        let mut file = OpenOptions::new()
            .write(true)
            .open(CPU_DMA_LATENCY)
            .map_err(err)?;
        file.write_all(&value.to_ne_bytes()).map_err(err)?;
        Ok(Self { _file: file, us })
    }

    /// The latency asked for, in microseconds.
    pub fn us(&self) -> u32 {
        self.us
    }
}

/// The CPU wake-up latency limit in force, in microseconds: the smallest of
/// every process's requests, or the kernel's default (2,000,000,000: none)
/// without any.
pub fn current_limit() -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    File::open(CPU_DMA_LATENCY)?.read_exact(&mut b)?;
    Ok(u32::try_from(i32::from_ne_bytes(b)).unwrap_or(0))
}
