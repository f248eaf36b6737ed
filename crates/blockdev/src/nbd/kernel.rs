//! The kernel side of an NBD device: finding a free `/dev/nbdN` and the ioctl
//! interface that configures and runs it (Linux `include/uapi/linux/nbd.h`, the
//! interface nbd-client uses). This module's `unsafe` is the
//! ioctl calls themselves, which have no safe binding in libc or rustix.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `_IO(0xab, nr)`: type 0xab in bits 15:8, no size, no direction.
const fn nbd_io(nr: u32) -> libc::Ioctl {
    ((0xab << 8) | nr) as libc::Ioctl
}

/// Hand the kernel its end of the socket.
pub const SET_SOCK: libc::Ioctl = nbd_io(0);
/// Logical block size in bytes.
pub const SET_BLKSIZE: libc::Ioctl = nbd_io(1);
/// Serve requests until the socket closes or NBD_DISCONNECT (blocks).
pub const DO_IT: libc::Ioctl = nbd_io(3);
/// Drop the socket after DO_IT returned.
pub const CLEAR_SOCK: libc::Ioctl = nbd_io(4);
/// Size in blocks.
pub const SET_SIZE_BLOCKS: libc::Ioctl = nbd_io(7);
/// Send DISC and stop.
pub const DISCONNECT: libc::Ioctl = nbd_io(8);
/// Transmission flags.
pub const SET_FLAGS: libc::Ioctl = nbd_io(10);

/// Runs one NBD ioctl, whose argument is an integer.
pub fn ioctl(dev: &File, req: libc::Ioctl, arg: u64) -> io::Result<()> {
    // SAFETY: `dev` is an open file, so its descriptor is valid for the call;
    // every NBD ioctl used here takes its argument by value (an integer or a
    // descriptor number), never as a pointer, so the kernel reads no memory of
    // ours and no Rust invariant can be broken by it.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), req, arg as libc::c_ulong) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Loads the nbd module when no device exists yet.
pub fn ensure_module() -> io::Result<()> {
    if Path::new("/sys/block/nbd0").exists() {
        return Ok(());
    }
    let st = std::process::Command::new("modprobe").arg("nbd").status();
    if Path::new("/sys/block/nbd0").exists() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no /dev/nbd0 and 'modprobe nbd' {}: this kernel has no NBD driver (CONFIG_BLK_DEV_NBD)",
            match st {
                Ok(s) => format!("ended with {s}"),
                Err(e) => format!("could not run ({e})"),
            }
        ),
    ))
}

/// The NBD devices that look free (no server attached, size 0), lowest first.
pub fn free_devices() -> Vec<(u32, PathBuf)> {
    let mut v = Vec::new();
    for i in 0..1024u32 {
        let sys = PathBuf::from(format!("/sys/block/nbd{i}"));
        if !sys.exists() {
            break;
        }
        let size = std::fs::read_to_string(sys.join("size")).unwrap_or_default();
        if sys.join("pid").exists() || size.trim() != "0" {
            continue;
        }
        v.push((i, PathBuf::from(format!("/dev/nbd{i}"))));
    }
    v
}

/// Opens a device node read-write.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}
