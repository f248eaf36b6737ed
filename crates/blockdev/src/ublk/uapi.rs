//! The ublk driver's user-space interface, from Linux
//! `include/uapi/linux/ublk_cmd.h` (ublk appeared in 6.0): the control and I/O
//! command codes, and the byte layout of the structures that cross it. The
//! structures are written and read as little-endian byte arrays (x86_64 and
//! aarch64 are little-endian; ublk exists only on Linux), so this module needs
//! no `unsafe` and its layouts are checked by the tests below.

/// The misc device every control command goes to.
pub const CONTROL: &str = "/dev/ublk-control";

/// `_IOC(dir, 'u', nr, size)`: the ioctl-style encoding of a command opcode,
/// which the kernel requires with `UBLK_F_CMD_IOCTL_ENCODE` and accepts always.
const fn ioc(dir: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | ((b'u' as u32) << 8) | nr
}
const IOR: u32 = 2;
const IOWR: u32 = 3;

/// `sizeof(struct ublksrv_ctrl_cmd)`: the payload of a control command, in the
/// 80-byte command area of a 128-byte SQE (IORING_SETUP_SQE128).
pub const CTRL_CMD_LEN: usize = 32;
/// `sizeof(struct ublksrv_io_cmd)`: an I/O command's payload (fits a 64-byte SQE).
pub const IO_CMD_LEN: usize = 16;
/// `sizeof(struct ublksrv_ctrl_dev_info)`.
pub const DEV_INFO_LEN: usize = 64;
/// `sizeof(struct ublksrv_io_desc)`: one request's descriptor in the shared
/// (mmap'ed) array of a queue, indexed by tag.
pub const IO_DESC_LEN: usize = 24;

/// Control command opcodes (`UBLK_U_CMD_*`).
pub mod cmd {
    use super::{ioc, CTRL_CMD_LEN, IOR, IOWR};
    const S: u32 = CTRL_CMD_LEN as u32;
    /// Create a device (`ublksrv_ctrl_dev_info` in and out).
    pub const ADD_DEV: u32 = ioc(IOWR, 0x04, S);
    /// Delete a stopped device; waits until its char device is closed.
    pub const DEL_DEV: u32 = ioc(IOWR, 0x05, S);
    /// Add the disk; waits until every queue fetched every tag. `data[0]` = pid.
    pub const START_DEV: u32 = ioc(IOWR, 0x06, S);
    /// Remove the disk and abort the queues' pending fetches.
    pub const STOP_DEV: u32 = ioc(IOWR, 0x07, S);
    /// Set `ublk_params` (only while the device is not started).
    pub const SET_PARAMS: u32 = ioc(IOWR, 0x08, S);
    /// The driver's feature flags (a u64), since 6.5.
    pub const GET_FEATURES: u32 = ioc(IOR, 0x13, S);
    /// New size in sectors in `data[0]`, on a live device; needs `UBLK_F_UPDATE_SIZE`.
    pub const UPDATE_SIZE: u32 = ioc(IOWR, 0x15, S);
}

/// I/O command opcodes (`UBLK_U_IO_*`), sent on `/dev/ublkcN`.
pub mod io_cmd {
    use super::{ioc, IOWR, IO_CMD_LEN};
    const S: u32 = IO_CMD_LEN as u32;
    /// Hand the driver a tag's buffer; completes when a request arrives on it.
    pub const FETCH_REQ: u32 = ioc(IOWR, 0x20, S);
    /// Complete the tag's request with `result`, and fetch the next one.
    pub const COMMIT_AND_FETCH_REQ: u32 = ioc(IOWR, 0x21, S);
}

/// Device flags (`UBLK_F_*`).
pub mod flags {
    /// Opcodes are ioctl-encoded.
    pub const CMD_IOCTL_ENCODE: u64 = 1 << 6;
    /// `UBLK_U_CMD_UPDATE_SIZE` is available (a kernel newer than 6.12).
    pub const UPDATE_SIZE: u64 = 1 << 10;
}

/// Request opcodes in `ublksrv_io_desc.op_flags` bits 7:0 (`UBLK_IO_OP_*`).
pub mod op {
    /// Read.
    pub const READ: u8 = 0;
    /// Write.
    pub const WRITE: u8 = 1;
    /// Flush the volatile cache.
    pub const FLUSH: u8 = 2;
    /// Discard (trim).
    pub const DISCARD: u8 = 3;
    /// Write zeroes.
    pub const WRITE_ZEROES: u8 = 5;
}

/// Request flags in `op_flags` (`UBLK_IO_F_*`).
pub mod io_flags {
    /// Force unit access (REQ_FUA).
    pub const FUA: u32 = 1 << 13;
    /// Write zeroes must not deallocate (REQ_NOUNMAP).
    pub const NOUNMAP: u32 = 1 << 15;
}

/// `UBLK_IO_RES_ABORT`: the queue is going away; the tag gets no more requests.
pub const IO_RES_ABORT: i32 = -libc::ENODEV;

/// `UBLK_MAX_QUEUE_DEPTH`: the stride of the per-queue descriptor areas in the
/// char device's mmap space is sized for this many tags.
pub const MAX_QUEUE_DEPTH: usize = 4096;

/// `struct ublksrv_ctrl_cmd`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtrlCmd {
    /// Device ID (u32::MAX: let ADD_DEV pick one).
    pub dev_id: u32,
    /// Queue ID; u16::MAX for device commands.
    pub queue_id: u16,
    /// Length of the buffer at `addr`.
    pub len: u16,
    /// A buffer of ours the command reads or writes.
    pub addr: u64,
    /// Inline data (START_DEV's pid, UPDATE_SIZE's sectors).
    pub data: u64,
}

impl CtrlCmd {
    /// A device command with no buffer.
    pub fn dev(dev_id: u32) -> Self {
        Self {
            dev_id,
            queue_id: u16::MAX,
            ..Self::default()
        }
    }

    /// The 80-byte SQE command area holding it.
    pub fn to_sqe_cmd(self) -> [u8; 80] {
        let mut b = [0u8; 80];
        b[0..4].copy_from_slice(&self.dev_id.to_le_bytes());
        b[4..6].copy_from_slice(&self.queue_id.to_le_bytes());
        b[6..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.addr.to_le_bytes());
        b[16..24].copy_from_slice(&self.data.to_le_bytes());
        // dev_path_len, pad, reserved: zero (privileged devices only).
        b
    }
}

/// `struct ublksrv_ctrl_dev_info`, the fields this crate sets or reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DevInfo {
    /// Number of queues (the kernel caps it at the number of CPUs).
    pub nr_hw_queues: u16,
    /// Tags per queue.
    pub queue_depth: u16,
    /// Largest request in bytes (the size of each tag's buffer).
    pub max_io_buf_bytes: u32,
    /// Device ID.
    pub dev_id: u32,
    /// `UBLK_F_*`.
    pub flags: u64,
}

impl DevInfo {
    /// Its 64 bytes.
    pub fn to_bytes(self) -> [u8; DEV_INFO_LEN] {
        let mut b = [0u8; DEV_INFO_LEN];
        b[0..2].copy_from_slice(&self.nr_hw_queues.to_le_bytes());
        b[2..4].copy_from_slice(&self.queue_depth.to_le_bytes());
        b[8..12].copy_from_slice(&self.max_io_buf_bytes.to_le_bytes());
        b[12..16].copy_from_slice(&self.dev_id.to_le_bytes());
        b[16..20].copy_from_slice(&(-1i32).to_le_bytes()); // ublksrv_pid: none yet
        b[24..32].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// Reads it back (the kernel rewrites it on ADD_DEV).
    pub fn from_bytes(b: &[u8; DEV_INFO_LEN]) -> Self {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut f = [0u8; 8];
        f.copy_from_slice(&b[24..32]);
        Self {
            nr_hw_queues: u16_at(0),
            queue_depth: u16_at(2),
            max_io_buf_bytes: u32_at(8),
            dev_id: u32_at(12),
            flags: u64::from_le_bytes(f),
        }
    }
}

/// `ublk_params` types.
const PARAM_TYPE_BASIC: u32 = 1 << 0;
const PARAM_TYPE_DISCARD: u32 = 1 << 1;
/// `ublk_param_basic.attrs`: a volatile write cache (the kernel sends flushes).
const ATTR_VOLATILE_CACHE: u32 = 1 << 2;
/// `ublk_param_basic.attrs`: FUA writes are supported.
const ATTR_FUA: u32 = 1 << 3;
/// The bytes of `struct ublk_params` this crate sends: its header (len, types),
/// `ublk_param_basic` (offset 8, 32 bytes) and `ublk_param_discard` (offset
/// 40, 20 bytes). The kernel zeroes the rest (SET_PARAMS copies `len` bytes).
pub const PARAMS_LEN: usize = 60;

/// What SET_PARAMS says about the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Logical block size in bytes (512 to the page size, a power of two).
    pub block_size: u32,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Largest request in sectors.
    pub max_sectors: u32,
    /// Discard allowed, in sectors per request (0: none).
    pub max_discard_sectors: u32,
    /// Write zeroes allowed, in sectors per request (0: none).
    pub max_write_zeroes_sectors: u32,
}

impl Params {
    /// `struct ublk_params` up to and including the discard part.
    pub fn to_bytes(self) -> [u8; PARAMS_LEN] {
        let mut b = [0u8; PARAMS_LEN];
        let shift = self.block_size.trailing_zeros() as u8;
        let discard = self.max_discard_sectors > 0 || self.max_write_zeroes_sectors > 0;
        let types = PARAM_TYPE_BASIC | if discard { PARAM_TYPE_DISCARD } else { 0 };
        b[0..4].copy_from_slice(&(PARAMS_LEN as u32).to_le_bytes());
        b[4..8].copy_from_slice(&types.to_le_bytes());
        // basic
        b[8..12].copy_from_slice(&(ATTR_VOLATILE_CACHE | ATTR_FUA).to_le_bytes());
        b[12] = shift; // logical_bs_shift
        b[13] = shift; // physical_bs_shift
        b[14] = shift; // io_opt_shift
        b[15] = shift; // io_min_shift
        b[16..20].copy_from_slice(&self.max_sectors.to_le_bytes());
        // chunk_sectors (20..24) 0, virt_boundary_mask (32..40) 0
        b[24..32].copy_from_slice(&self.sectors.to_le_bytes());
        if discard {
            // discard_alignment 0; granularity one block; one segment a request
            b[44..48].copy_from_slice(&self.block_size.to_le_bytes());
            b[48..52].copy_from_slice(&self.max_discard_sectors.to_le_bytes());
            b[52..56].copy_from_slice(&self.max_write_zeroes_sectors.to_le_bytes());
            b[56..58].copy_from_slice(&1u16.to_le_bytes());
        }
        b
    }
}

/// `struct ublksrv_io_desc`: one request, as the driver wrote it for a tag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoDesc {
    /// Opcode in bits 7:0, `UBLK_IO_F_*` flags above.
    pub op_flags: u32,
    /// Length in 512-byte sectors.
    pub nr_sectors: u32,
    /// First sector.
    pub start_sector: u64,
}

impl IoDesc {
    /// Decodes the 24 bytes of a descriptor (addr, the last 8, is our buffer).
    pub fn from_bytes(b: &[u8; IO_DESC_LEN]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[8..16]);
        Self {
            op_flags: u32_at(0),
            nr_sectors: u32_at(4),
            start_sector: u64::from_le_bytes(s),
        }
    }

    /// The opcode.
    pub fn op(&self) -> u8 {
        (self.op_flags & 0xff) as u8
    }
}

/// `struct ublksrv_io_cmd`: FETCH_REQ / COMMIT_AND_FETCH_REQ's payload.
pub fn io_cmd(q_id: u16, tag: u16, result: i32, addr: u64) -> [u8; IO_CMD_LEN] {
    let mut b = [0u8; IO_CMD_LEN];
    b[0..2].copy_from_slice(&q_id.to_le_bytes());
    b[2..4].copy_from_slice(&tag.to_le_bytes());
    b[4..8].copy_from_slice(&result.to_le_bytes());
    b[8..16].copy_from_slice(&addr.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_match_the_header() {
        // Values as the C macros expand them (_IOWR('u', 4, 32) etc.).
        assert_eq!(cmd::ADD_DEV, 0xc020_7504);
        assert_eq!(cmd::DEL_DEV, 0xc020_7505);
        assert_eq!(cmd::START_DEV, 0xc020_7506);
        assert_eq!(cmd::STOP_DEV, 0xc020_7507);
        assert_eq!(cmd::SET_PARAMS, 0xc020_7508);
        assert_eq!(cmd::GET_FEATURES, 0x8020_7513);
        assert_eq!(cmd::UPDATE_SIZE, 0xc020_7515);
        assert_eq!(io_cmd::FETCH_REQ, 0xc010_7520);
        assert_eq!(io_cmd::COMMIT_AND_FETCH_REQ, 0xc010_7521);
    }

    #[test]
    fn ctrl_cmd_layout() {
        let c = CtrlCmd {
            dev_id: 7,
            queue_id: u16::MAX,
            len: 64,
            addr: 0x1122_3344_5566_7788,
            data: 42,
        }
        .to_sqe_cmd();
        assert_eq!(&c[0..4], &7u32.to_le_bytes());
        assert_eq!(&c[4..6], &[0xff, 0xff]);
        assert_eq!(&c[6..8], &64u16.to_le_bytes());
        assert_eq!(&c[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&c[16..24], &42u64.to_le_bytes());
        assert!(c[24..].iter().all(|&x| x == 0));
    }

    #[test]
    fn dev_info_round_trip() {
        let d = DevInfo {
            nr_hw_queues: 4,
            queue_depth: 128,
            max_io_buf_bytes: 512 << 10,
            dev_id: u32::MAX,
            flags: flags::CMD_IOCTL_ENCODE,
        };
        let b = d.to_bytes();
        assert_eq!(DevInfo::from_bytes(&b), d);
        assert_eq!(&b[16..20], &(-1i32).to_le_bytes());
    }

    #[test]
    fn params_layout() {
        let p = Params {
            block_size: 4096,
            sectors: 1 << 18,
            max_sectors: 1024,
            max_discard_sectors: 1 << 20,
            max_write_zeroes_sectors: 65536 * 8,
        }
        .to_bytes();
        assert_eq!(&p[0..4], &60u32.to_le_bytes());
        assert_eq!(&p[4..8], &3u32.to_le_bytes());
        assert_eq!(&p[8..12], &12u32.to_le_bytes());
        assert_eq!(p[12], 12);
        assert_eq!(&p[16..20], &1024u32.to_le_bytes());
        assert_eq!(&p[24..32], &(1u64 << 18).to_le_bytes());
        assert_eq!(&p[44..48], &4096u32.to_le_bytes());
        assert_eq!(&p[56..58], &1u16.to_le_bytes());
        let none = Params {
            block_size: 512,
            sectors: 8,
            max_sectors: 1024,
            max_discard_sectors: 0,
            max_write_zeroes_sectors: 0,
        }
        .to_bytes();
        assert_eq!(&none[4..8], &1u32.to_le_bytes());
        assert_eq!(none[12], 9);
        assert!(none[40..].iter().all(|&x| x == 0));
    }

    #[test]
    fn io_desc_decodes() {
        let mut b = [0u8; IO_DESC_LEN];
        b[0..4].copy_from_slice(&(u32::from(op::WRITE) | io_flags::FUA).to_le_bytes());
        b[4..8].copy_from_slice(&16u32.to_le_bytes());
        b[8..16].copy_from_slice(&800u64.to_le_bytes());
        let d = IoDesc::from_bytes(&b);
        assert_eq!(d.op(), op::WRITE);
        assert_eq!(d.nr_sectors, 16);
        assert_eq!(d.start_sector, 800);
        assert_ne!(d.op_flags & io_flags::FUA, 0);
    }
}
