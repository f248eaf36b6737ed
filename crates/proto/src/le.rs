//! Checked little-endian field access on byte slices.
//!
//! Every NVMe and NVMe/TCP field is little-endian (NVMe Base 2.0 §1.5 "Conventions").
//! These helpers never panic: a read past the end yields zero and a write past the end
//! is dropped. Decoders check the total length first, so the fallbacks are never seen
//! on valid input; they exist so that no input can reach a panic.

pub(crate) fn u8_at(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    b.get(off..off.saturating_add(2))
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map_or(0, u16::from_le_bytes)
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off.saturating_add(4))
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_le_bytes)
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off.saturating_add(8))
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

pub(crate) fn u128_at(b: &[u8], off: usize) -> u128 {
    b.get(off..off.saturating_add(16))
        .and_then(|s| <[u8; 16]>::try_from(s).ok())
        .map_or(0, u128::from_le_bytes)
}

pub(crate) fn array_at<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    b.get(off..off.saturating_add(N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}

pub(crate) fn put(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(s) = b.get_mut(off..off.saturating_add(v.len())) {
        s.copy_from_slice(v);
    }
}

pub(crate) fn put_u8(b: &mut [u8], off: usize, v: u8) {
    put(b, off, &[v]);
}

pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    put(b, off, &v.to_le_bytes());
}

pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    put(b, off, &v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    put(b, off, &v.to_le_bytes());
}

pub(crate) fn put_u128(b: &mut [u8], off: usize, v: u128) {
    put(b, off, &v.to_le_bytes());
}

/// Writes `s` as a fixed-width ASCII field padded with `pad` (spaces for SN/MN/FR,
/// NUL for NQNs and discovery-log strings), truncating at the field width (at a
/// character boundary, so the field stays valid UTF-8).
pub(crate) fn put_str(b: &mut [u8], off: usize, width: usize, s: &str, pad: u8) {
    if let Some(field) = b.get_mut(off..off.saturating_add(width)) {
        field.fill(pad);
        // Cut at a character boundary: never emit half of a UTF-8 sequence.
        let mut n = s.len().min(width);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        if let (Some(dst), Some(src)) = (field.get_mut(..n), s.as_bytes().get(..n)) {
            dst.copy_from_slice(src);
        }
    }
}

/// Reads a fixed-width ASCII field, stopping at the first NUL and trimming trailing
/// spaces. Bytes that are not UTF-8 are replaced, so any input decodes.
pub(crate) fn str_at(b: &[u8], off: usize, width: usize) -> String {
    let field = b.get(off..off.saturating_add(width)).unwrap_or(&[]);
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    let s = String::from_utf8_lossy(field.get(..end).unwrap_or(&[]));
    s.trim_end_matches(' ').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_are_zero_and_short_writes_dropped() {
        let b = [1u8, 2, 3];
        assert_eq!(u16_at(&b, 0), 0x0201);
        assert_eq!(u16_at(&b, 2), 0);
        assert_eq!(u64_at(&b, usize::MAX), 0);
        let mut m = [0u8; 3];
        put_u32(&mut m, 0, 0xffff_ffff);
        assert_eq!(m, [0, 0, 0]);
        put_str(&mut m, 0, 3, "abcd", b' ');
        assert_eq!(&m, b"abc");
        assert_eq!(str_at(b"ab \0zz", 0, 6), "ab");
    }
}
