//! The null backend: reads return zeroes, writes are accepted and dropped.
//!
//! What it is for: measuring the transport alone, as SPDK's Null bdev does
//! (shared/bench/reference.md gives SPDK's Null figures), and load tests that
//! need no storage. Reads share one static zero buffer (no copy, no
//! allocation); writes are bounds-checked and forgotten. Advertised as volatile.

use crate::{
    check_access, check_block_size, push_zeroes, whole_blocks, Backend, BackendInfo, Result,
    SharedData,
};

/// A namespace that stores nothing.
#[derive(Debug)]
pub struct NullBackend {
    info: BackendInfo,
}

impl NullBackend {
    /// A null namespace of `size_bytes` (rounded down to whole blocks).
    pub fn new(size_bytes: u64, block_size: u32) -> Result<Self> {
        check_block_size(block_size)?;
        let num_blocks = whole_blocks(size_bytes, block_size, || {
            format!("null namespace size {size_bytes}")
        })?;
        Ok(Self {
            info: BackendInfo {
                block_size,
                num_blocks,
                volatile: true,
                supports_discard: true,
                may_block: false,
                description: format!(
                    "null ({} bytes, {block_size}-byte blocks: reads zeroes, drops writes)",
                    num_blocks * u64::from(block_size)
                ),
            },
        })
    }
}

impl Backend for NullBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_access(&self.info, offset, buf.len() as u64)?;
        buf.fill(0);
        Ok(())
    }

    fn read_shared(&self, offset: u64, len: u64) -> Result<Option<SharedData>> {
        check_access(&self.info, offset, len)?;
        let mut parts = Vec::new();
        push_zeroes(&mut parts, len as usize);
        Ok(Some(SharedData::from_parts(parts)))
    }

    fn write_at(&self, offset: u64, data: &[&[u8]], _fua: bool) -> Result<()> {
        let total: u64 = data.iter().map(|d| d.len() as u64).sum();
        check_access(&self.info, offset, total)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        check_access(&self.info, offset, len)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_access(&self.info, offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendError;

    #[test]
    fn reads_zeroes_drops_writes_checks_ranges() {
        let n = NullBackend::new(1 << 20, 512).unwrap();
        n.write_at(0, &[&[7u8; 4096]], true).unwrap();
        let mut b = vec![9u8; 4096];
        n.read_at(0, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        let s = n.read_shared(4096, 300 * 1024).unwrap().unwrap();
        assert_eq!(s.len(), 300 * 1024);
        assert!(s.parts().iter().all(|p| p.iter().all(|&x| x == 0)));
        assert!(matches!(
            n.write_at(1 << 20, &[&[0u8; 512]], false),
            Err(BackendError::OutOfRange { .. })
        ));
        assert!(matches!(
            n.read_shared(100, 512),
            Err(BackendError::Misaligned { .. })
        ));
        assert!(NullBackend::new(100, 512).is_err());
    }
}
