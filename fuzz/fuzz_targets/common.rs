//! A byte reader for the fuzz targets' input formats: little-endian integers,
//! zero once the input runs out, so that every input is valid and seed files are
//! easy to write by hand (see `make-corpus.py`).

#![allow(dead_code)]

pub struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Self { b }
    }

    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.b.len());
        let (h, t) = self.b.split_at(n);
        self.b = t;
        h
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.b.len())
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    pub fn u16(&mut self) -> u16 {
        let mut a = [0u8; 2];
        let s = self.bytes(2);
        a[..s.len()].copy_from_slice(s);
        u16::from_le_bytes(a)
    }

    pub fn u32(&mut self) -> u32 {
        let mut a = [0u8; 4];
        let s = self.bytes(4);
        a[..s.len()].copy_from_slice(s);
        u32::from_le_bytes(a)
    }
}

/// Chunk sizes for feeding a stream: a small LCG, so that chunking is part of the input.
pub struct Chunks {
    state: u32,
    max: u32,
}

impl Chunks {
    /// `max` 0 feeds everything at once.
    pub fn new(seed: u8, max: u16) -> Self {
        Self {
            state: u32::from(seed) | 1,
            max: u32::from(max),
        }
    }

    pub fn next(&mut self, left: usize) -> usize {
        if self.max == 0 {
            return left;
        }
        self.state = self.state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let n = 1 + (self.state >> 8) % self.max;
        (n as usize).min(left)
    }
}
