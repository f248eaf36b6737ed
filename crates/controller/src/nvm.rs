//! Verify and Copy (NVM Command Set Specification 1.0 §3.3.4 and §3.3.1).
//!
//! Both run where the other I/O commands of their namespace run (inline for
//! memory namespaces, on the blocking pool for files and devices), from
//! [`crate::io::run_io`].

use bytes::Bytes;
use nvmf_proto::sqe::CopySourceRange;
use nvmf_proto::{Sqe, Status};

use crate::bufpool::PoolBuf;
use crate::io::{backend_status, lba_range};
use crate::registry::Namespace;

/// Verify reads the range in pieces of this many bytes (it moves no data, so
/// a 65536-block Verify must not allocate the whole range at once).
const VERIFY_CHUNK: u64 = 1 << 20;

/// Copy limits advertised in Identify Namespace (NVM Command Set 1.0 Figure 97)
/// and enforced by [`copy`]. The whole copy is read before any of it is
/// written, so MCL bounds the memory one Copy takes (4 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyLimits {
    /// MSSRL: most blocks in one source range (1 MiB).
    pub mssrl: u16,
    /// MCL: most blocks in all source ranges together (4 MiB).
    pub mcl: u32,
    /// MSRC: most source ranges, 0's based (128 ranges: a 4 KiB range list).
    pub msrc: u8,
}

impl CopyLimits {
    /// The limits of a namespace with `block_size`-byte blocks.
    pub fn for_block_size(block_size: u32) -> Self {
        let bs = block_size.max(1);
        Self {
            mssrl: ((1u32 << 20) / bs).clamp(1, u32::from(u16::MAX)) as u16,
            mcl: ((4u32 << 20) / bs).max(1),
            msrc: 127,
        }
    }
}

/// Verify (NVM Command Set 1.0 §3.3.4): reads every block of the range from
/// the backend and discards it; success means it all could be read. LBA
/// range errors are LBA Out of Range; a read failure is Unrecovered Read Error.
pub fn verify(ns: &Namespace, sqe: &Sqe) -> Result<(), Status> {
    let (off, len) = lba_range(ns, sqe.slba(), u64::from(sqe.nlb()))?;
    let be = &ns.backend;
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(VERIFY_CHUNK);
        let mut buf = PoolBuf::take(n as usize);
        be.read_at(off + done, buf.as_mut_slice())
            .map_err(|e| backend_status(&e, false))?;
        done += n;
    }
    Ok(())
}

/// Copy (NVM Command Set 1.0 §3.3.1) with Source Range Entries format 0:
/// reads every source range, in order, then writes them as one run at SDLBA
/// (CDW10-11), with FUA (CDW12 bit 30) if asked. Refuses a descriptor format
/// other than 0 (Invalid Field in Command), a range list of the wrong size
/// (Data SGL Length Invalid), more ranges than MSRC + 1, a range longer than
/// MSSRL or a total longer than MCL (Command Size Limit Exceeded), and ranges
/// outside the namespace (LBA Out of Range). Nothing is written unless every
/// check passed and every source was read, so on failure CQE DW0 stays 0
/// (the spec's "no data was written to the destination"). Returns the bytes
/// written.
pub fn copy(ns: &Namespace, sqe: &Sqe, data: &[Bytes]) -> Result<u64, Status> {
    let info = ns.backend.info();
    let limits = CopyLimits::for_block_size(info.block_size);
    let nr = (sqe.cdw12 & 0xff) as usize + 1;
    let format = (sqe.cdw12 >> 8) & 0xf;
    if format != 0 {
        return Err(Status::INVALID_FIELD.dnr());
    }
    let raw: Vec<u8> = data.iter().flat_map(|b| b.iter().copied()).collect();
    if raw.len() != nr * CopySourceRange::SIZE {
        return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
    }
    if nr > usize::from(limits.msrc) + 1 {
        return Err(Status::CMD_SIZE_LIMIT_EXCEEDED.dnr());
    }
    let ranges =
        CopySourceRange::decode_list(&raw, nr).ok_or(Status::DATA_SGL_LENGTH_INVALID.dnr())?;
    let mut total = 0u64;
    let mut sources = Vec::with_capacity(nr);
    for r in &ranges {
        if r.nlb > u32::from(limits.mssrl) {
            return Err(Status::CMD_SIZE_LIMIT_EXCEEDED.dnr());
        }
        total += u64::from(r.nlb);
        if total > u64::from(limits.mcl) {
            return Err(Status::CMD_SIZE_LIMIT_EXCEEDED.dnr());
        }
        sources.push(lba_range(ns, r.slba, u64::from(r.nlb))?);
    }
    let (dst, len) = lba_range(ns, sqe.slba(), total)?;
    let mut buf = PoolBuf::take(len as usize);
    let mut at = 0usize;
    for (off, n) in sources {
        let n = n as usize;
        ns.backend
            .read_at(off, &mut buf.as_mut_slice()[at..at + n])
            .map_err(|e| backend_status(&e, false))?;
        at += n;
    }
    let fua = sqe.fua();
    ns.backend
        .write_at(dst, &[buf.as_ref()], fua)
        .map_err(|e| backend_status(&e, true))?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_scale_with_block_size() {
        let l = CopyLimits::for_block_size(4096);
        assert_eq!((l.mssrl, l.mcl, l.msrc), (256, 1024, 127));
        let l = CopyLimits::for_block_size(512);
        assert_eq!((l.mssrl, l.mcl, l.msrc), (2048, 8192, 127));
    }
}
