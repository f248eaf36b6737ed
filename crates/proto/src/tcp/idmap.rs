//! A hash map keyed by 16-bit command identifiers, with an identity hash.
//!
//! CIDs are small integers chosen by the host; hashing them with SipHash costs more
//! than the lookup itself. The identity hash spreads them well enough because the
//! table's mask takes the low bits, which hosts vary fastest.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Identity hasher for `u16` keys.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n);
    }
}

/// Map from CID to per-command state.
pub type CidMap<V> = HashMap<u16, V, BuildHasherDefault<IdHasher>>;
