//! A hash map keyed by 16-bit command identifiers, with a multiplicative hash.
//!
//! CIDs are small integers chosen by the host; hashing them with SipHash costs more
//! than the lookup itself. One multiplication by an odd constant (Fibonacci
//! hashing) is enough, and it must not be the identity: the standard map
//! (hashbrown) places an entry by the hash's low bits but tags it with the top
//! seven, and compares keys only where a tag matches. An identity hash of a
//! 16-bit CID has those top bits all zero, so every tag matched and a lookup
//! compared the key of every entry in its group of 16: at queue depth 128, 6 %
//! of the target's time at 4 KiB random reads went to those compares
//! (docs/performance.md). The product keeps the low bits a bijection of the
//! CID's low bits (the constant is odd) and fills the top bits from all of them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiplicative hasher for `u16` keys.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = ((self.0 << 8) | u64::from(*b)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n).wrapping_mul(FIBONACCI);
    }
}

/// 2^64 divided by the golden ratio, rounded to odd.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// Map from CID to per-command state.
pub type CidMap<V> = HashMap<u16, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// hashbrown tags an entry with the hash's top 7 bits: CIDs a host keeps
    /// outstanding together must not share one tag, or lookups compare keys
    /// one by one.
    #[test]
    fn consecutive_cids_get_varied_top_bits_and_distinct_low_bits() {
        let b = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (0u16..128).map(|cid| b.hash_one(cid)).collect();
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(tags.len() > 64, "only {} distinct tags", tags.len());
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 127).collect();
        assert_eq!(
            low.len(),
            128,
            "the low 7 bits are a bijection of the CID's"
        );
    }
}
