//! Control commands on `/dev/ublk-control`: io_uring passthrough commands
//! (IORING_OP_URING_CMD) in 128-byte SQEs, one at a time, each waited for.
//! The kernel requires SQE128 for them (`ublk_ctrl_uring_cmd` rejects a command
//! without IO_URING_F_SQE128).
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::uapi::{self, cmd, CtrlCmd, DevInfo, Params, DEV_INFO_LEN};

/// An open `/dev/ublk-control`.
pub struct Control {
    file: File,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
}

impl Control {
    /// Opens the control device.
    pub fn open() -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(uapi::CONTROL)?;
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(4)?;
        Ok(Self { file, ring })
    }

    /// Sends `c` as command `op`; the kernel's result (>= 0) or its errno.
    /// `buf`, when given, is what `c.addr` points at: it is borrowed mutably for
    /// the whole command, which this call waits for.
    fn run(&mut self, op: u32, mut c: CtrlCmd, mut buf: Option<&mut [u8]>) -> io::Result<i32> {
        if let Some(b) = &mut buf {
            c.addr = b.as_mut_ptr() as u64;
            c.len =
                u16::try_from(b.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        }
        let e = opcode::UringCmd80::new(types::Fd(self.file.as_raw_fd()), op)
            .cmd(c.to_sqe_cmd())
            .build()
            .user_data(u64::from(op));
        // SAFETY: the SQE names `self.file`'s descriptor, open for the whole call,
        // and (through `c.addr`) `buf`, which the exclusive borrow keeps alive
        // and unaliased; submit_and_wait below returns only after the kernel
        // completed the command, so nothing the SQE points at outlives it.
        unsafe {
            self.ring
                .submission()
                .push(&e)
                .map_err(|_| io::Error::other("control ring full"))?;
        }
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let cqe = self
            .ring
            .completion()
            .next()
            .ok_or_else(|| io::Error::other("no completion for a control command"))?;
        if cqe.result() < 0 {
            Err(io::Error::from_raw_os_error(-cqe.result()))
        } else {
            Ok(cqe.result())
        }
    }

    /// UBLK_U_CMD_GET_FEATURES: the driver's `UBLK_F_*` (0 on kernels before 6.5,
    /// which lack the command).
    pub fn features(&mut self) -> u64 {
        let mut b = [0u8; 8];
        match self.run(cmd::GET_FEATURES, CtrlCmd::dev(u32::MAX), Some(&mut b)) {
            Ok(_) => u64::from_le_bytes(b),
            Err(_) => 0,
        }
    }

    /// UBLK_U_CMD_ADD_DEV: creates `/dev/ublkcN`; returns the device info as the
    /// kernel settled it (its ID, and the queue count capped at the CPU count).
    pub fn add(&mut self, info: DevInfo) -> io::Result<DevInfo> {
        let mut b = info.to_bytes();
        self.run(cmd::ADD_DEV, CtrlCmd::dev(info.dev_id), Some(&mut b))?;
        let mut out = [0u8; DEV_INFO_LEN];
        out.copy_from_slice(&b);
        Ok(DevInfo::from_bytes(&out))
    }

    /// UBLK_U_CMD_SET_PARAMS.
    pub fn set_params(&mut self, dev_id: u32, p: Params) -> io::Result<()> {
        let mut b = p.to_bytes();
        self.run(cmd::SET_PARAMS, CtrlCmd::dev(dev_id), Some(&mut b))
            .map(|_| ())
    }

    /// UBLK_U_CMD_START_DEV: adds `/dev/ublkbN`; returns once every queue has
    /// fetched every tag.
    pub fn start(&mut self, dev_id: u32, pid: u32) -> io::Result<()> {
        let mut c = CtrlCmd::dev(dev_id);
        c.data = u64::from(pid);
        self.run(cmd::START_DEV, c, None).map(|_| ())
    }

    /// UBLK_U_CMD_STOP_DEV: removes the disk (after its requests completed).
    pub fn stop(&mut self, dev_id: u32) -> io::Result<()> {
        self.run(cmd::STOP_DEV, CtrlCmd::dev(dev_id), None)
            .map(|_| ())
    }

    /// UBLK_U_CMD_DEL_DEV: deletes the device; the kernel waits until
    /// `/dev/ublkcN` is closed and unmapped.
    pub fn delete(&mut self, dev_id: u32) -> io::Result<()> {
        self.run(cmd::DEL_DEV, CtrlCmd::dev(dev_id), None)
            .map(|_| ())
    }

    /// UBLK_U_CMD_UPDATE_SIZE: the live disk's new size in sectors.
    pub fn update_size(&mut self, dev_id: u32, sectors: u64) -> io::Result<()> {
        let mut c = CtrlCmd::dev(dev_id);
        c.data = sectors;
        self.run(cmd::UPDATE_SIZE, c, None).map(|_| ())
    }
}
