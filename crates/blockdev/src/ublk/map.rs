//! ublk requests to [`BlockOp`]s and their results back, without I/O: the
//! driver describes a request in 512-byte sectors (`ublksrv_io_desc`,
//! `include/uapi/linux/ublk_cmd.h`); the namespace counts logical blocks.

use bytes::Bytes;

use super::uapi::{io_flags, op, IoDesc};
use crate::io::BlockOp;

/// A request decoded: the operation and the byte count a success reports.
#[derive(Debug, Clone)]
pub struct Request {
    /// What to run.
    pub op: BlockOp,
    /// Bytes the request covers (a read's data length; the result of a read or
    /// write on success).
    pub bytes: usize,
}

/// Decodes the request in `d` for a namespace of `block_size`-byte blocks.
/// `data` gives a write's payload (the tag's buffer, which the driver filled);
/// it is called only for writes. `Err` holds the negative errno to complete the
/// request with: an opcode this device did not announce, a range that is not
/// whole blocks, or a request larger than the buffer.
pub fn decode(
    d: &IoDesc,
    block_size: u32,
    max_bytes: usize,
    data: impl FnOnce(usize) -> Bytes,
) -> Result<Request, i32> {
    if d.op() == op::FLUSH {
        // A flush has no range: the driver leaves start_sector at all-ones
        // (blk_rq_pos of a flush request is -1), seen in the guest.
        return Ok(Request {
            op: BlockOp::Flush,
            bytes: 0,
        });
    }
    let bs = u64::from(block_size);
    let start = d.start_sector.checked_mul(512).ok_or(-libc::EINVAL)?;
    let len = u64::from(d.nr_sectors) * 512;
    if start % bs != 0 || len % bs != 0 {
        return Err(-libc::EINVAL);
    }
    let (slba, nlb) = (start / bs, len / bs);
    let fua = d.op_flags & io_flags::FUA != 0;
    let io_len = || -> Result<usize, i32> {
        let n = usize::try_from(len).map_err(|_| -libc::EINVAL)?;
        if n == 0 || n > max_bytes {
            Err(-libc::EINVAL)
        } else {
            Ok(n)
        }
    };
    let (op, bytes) = match d.op() {
        op::READ => (BlockOp::Read { slba, nlb }, io_len()?),
        op::WRITE => {
            let n = io_len()?;
            (
                BlockOp::Write {
                    slba,
                    data: data(n),
                    fua,
                },
                n,
            )
        }
        op::DISCARD if nlb > 0 => (BlockOp::Discard { slba, nlb }, 0),
        op::WRITE_ZEROES if nlb > 0 => (
            BlockOp::WriteZeroes {
                slba,
                nlb,
                // REQ_NOUNMAP: the blocks must stay allocated, so no DEAC.
                deac: d.op_flags & io_flags::NOUNMAP == 0,
                fua,
            },
            0,
        ),
        op::DISCARD | op::WRITE_ZEROES => return Err(-libc::EINVAL),
        _ => return Err(-libc::EOPNOTSUPP),
    };
    Ok(Request { op, bytes })
}

/// The result to commit for a request of `bytes` bytes that `outcome` ended:
/// the byte count for a read or write, 0 for the others, `-EIO` on an error
/// (the block layer reports BLK_STS_IOERR either way) and for a read that came
/// back short.
pub fn result(is_read: bool, bytes: usize, outcome: Result<usize, ()>) -> i32 {
    match outcome {
        Ok(n) if is_read && n != bytes => -libc::EIO,
        Ok(_) => i32::try_from(bytes).unwrap_or(-libc::EIO),
        Err(()) => -libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(opc: u8, flags: u32, start_sector: u64, nr_sectors: u32) -> IoDesc {
        IoDesc {
            op_flags: u32::from(opc) | flags,
            nr_sectors,
            start_sector,
        }
    }
    const MAX: usize = 512 << 10;
    fn no_data(_: usize) -> Bytes {
        panic!("only writes take data")
    }

    #[test]
    fn read_in_blocks_of_4k() {
        let r = decode(&desc(op::READ, 0, 16, 64), 4096, MAX, no_data).unwrap();
        assert!(matches!(r.op, BlockOp::Read { slba: 2, nlb: 8 }));
        assert_eq!(r.bytes, 32768);
    }

    #[test]
    fn write_takes_the_buffer_and_fua() {
        let r = decode(&desc(op::WRITE, io_flags::FUA, 3, 2), 512, MAX, |n| {
            Bytes::from(vec![7u8; n])
        })
        .unwrap();
        match r.op {
            BlockOp::Write { slba, data, fua } => {
                assert_eq!((slba, data.len(), fua), (3, 1024, true));
            }
            o => panic!("{o:?}"),
        }
        let r = decode(&desc(op::WRITE, 0, 0, 8), 4096, MAX, |n| {
            Bytes::from(vec![0; n])
        })
        .unwrap();
        assert!(matches!(r.op, BlockOp::Write { fua: false, .. }));
    }

    #[test]
    fn flush_discard_write_zeroes() {
        assert!(matches!(
            decode(&desc(op::FLUSH, 0, 0, 0), 4096, MAX, no_data)
                .unwrap()
                .op,
            BlockOp::Flush
        ));
        // the kernel's flush: no range, start sector all ones
        assert!(matches!(
            decode(&desc(op::FLUSH, 0, u64::MAX, 0), 4096, MAX, no_data)
                .unwrap()
                .op,
            BlockOp::Flush
        ));
        let r = decode(&desc(op::DISCARD, 0, 8 * 100, 8 * 256), 4096, MAX, no_data).unwrap();
        assert!(matches!(
            r.op,
            BlockOp::Discard {
                slba: 100,
                nlb: 256
            }
        ));
        assert_eq!(r.bytes, 0);
        // A discard may be larger than the I/O buffer: it carries no data.
        let big = decode(&desc(op::DISCARD, 0, 0, 1 << 21), 4096, MAX, no_data).unwrap();
        assert!(matches!(big.op, BlockOp::Discard { nlb: 262144, .. }));
        let wz = decode(&desc(op::WRITE_ZEROES, 0, 8, 8), 4096, MAX, no_data).unwrap();
        assert!(matches!(
            wz.op,
            BlockOp::WriteZeroes {
                slba: 1,
                nlb: 1,
                deac: true,
                fua: false
            }
        ));
        let wz = decode(
            &desc(op::WRITE_ZEROES, io_flags::NOUNMAP | io_flags::FUA, 8, 8),
            4096,
            MAX,
            no_data,
        )
        .unwrap();
        assert!(matches!(
            wz.op,
            BlockOp::WriteZeroes {
                deac: false,
                fua: true,
                ..
            }
        ));
    }

    #[test]
    fn rejects_what_it_cannot_run() {
        // not block-aligned for 4 KiB blocks
        assert_eq!(
            decode(&desc(op::READ, 0, 1, 8), 4096, MAX, no_data).unwrap_err(),
            -libc::EINVAL
        );
        assert_eq!(
            decode(&desc(op::READ, 0, 8, 4), 4096, MAX, no_data).unwrap_err(),
            -libc::EINVAL
        );
        // larger than the tag's buffer, or empty
        assert_eq!(
            decode(&desc(op::READ, 0, 0, 2048), 512, MAX, no_data).unwrap_err(),
            -libc::EINVAL
        );
        assert_eq!(
            decode(&desc(op::WRITE, 0, 0, 0), 512, MAX, no_data).unwrap_err(),
            -libc::EINVAL
        );
        assert_eq!(
            decode(&desc(op::DISCARD, 0, 0, 0), 512, MAX, no_data).unwrap_err(),
            -libc::EINVAL
        );
        // write same, zone operations: not announced
        assert_eq!(
            decode(&desc(4, 0, 0, 8), 512, MAX, no_data).unwrap_err(),
            -libc::EOPNOTSUPP
        );
        assert_eq!(
            decode(&desc(13, 0, 0, 8), 512, MAX, no_data).unwrap_err(),
            -libc::EOPNOTSUPP
        );
        // start sector overflow
        assert_eq!(
            decode(&desc(op::READ, 0, u64::MAX, 8), 512, MAX, no_data).unwrap_err(),
            -libc::EINVAL
        );
    }

    #[test]
    fn results() {
        assert_eq!(result(true, 4096, Ok(4096)), 4096);
        assert_eq!(result(true, 4096, Ok(512)), -libc::EIO);
        assert_eq!(result(false, 8192, Ok(0)), 8192);
        assert_eq!(result(false, 0, Ok(0)), 0);
        assert_eq!(result(false, 4096, Err(())), -libc::EIO);
    }
}
