//! Header and data digests: CRC-32C (Castagnoli) as NVMe/TCP 1.0 §3.6.1 requires.
//! The digest is stored little-endian right after the header or the data.
//!
//! Two implementations, chosen once per process by what the CPU has:
//!
//! - with AVX-512 and VPCLMULQDQ, `crc-fast` (carry-less multiply folding, many
//!   independent loads): on this project's Zen 4 machines 57 GB/s on a warm
//!   128 KiB buffer against 25 GB/s, 20 against 12 GB/s on cold ones (namespace
//!   memory being read); with data digests on, 128 KiB reads went from 27.9k to
//!   36.1k IOPS and 4 KiB random reads at QD 128 from 340k to 395k (A/B,
//!   docs/performance.md);
//! - otherwise the `crc32c` crate (the SSE 4.2 `crc32` instruction, three streams
//!   interleaved), which on Zen 3 without AVX-512 was faster than `crc-fast` at
//!   data sizes (shared/research/rust-stack.md §1.3: 9.7 against 6.4 GiB/s at
//!   4 KiB).
//!
//! Both compute the same function (tests below check them against each other
//! and against RFC 3720's vectors), so which one ran never shows on the wire.

use std::sync::OnceLock;

/// Length of a digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// Buffers shorter than this always use the `crc32` instruction: for a header
/// the two are alike and the dispatch is not worth it.
const FOLD_MIN: usize = 256;

fn use_folding() -> bool {
    static FOLD: OnceLock<bool> = OnceLock::new();
    *FOLD.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("vpclmulqdq")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// CRC-32C of `data` (initial value and final XOR 0xFFFFFFFF, reflected).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// Continues a CRC-32C over a further piece, for data spread over several
/// buffers: `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    if data.len() >= FOLD_MIN && use_folding() {
        let mut d = crc_fast::Digest::new_with_init_state(
            crc_fast::CrcAlgorithm::Crc32Iscsi,
            u64::from(!crc),
        );
        d.update(data);
        d.finalize() as u32
    } else {
        crc32c::crc32c_append(crc, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // RFC 3720 §B.4 test vectors for CRC32C.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&inc), 0x46dd_794e);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c_append(crc32c(b"1234"), b"56789"), 0xe306_9283);
    }

    #[test]
    fn both_implementations_agree_at_every_size_and_split() {
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 7, 255, 256, 257, 1000, 4096, 4099, 65_536, 70_000] {
            let d = &data[..len];
            let reference = crc32c::crc32c(d);
            assert_eq!(crc32c(d), reference, "len {len}");
            let folded = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, d) as u32;
            assert_eq!(folded, reference, "crc-fast, len {len}");
            for cut in [0, 1, len / 3, len / 2, len.saturating_sub(300)] {
                let cut = cut.min(len);
                assert_eq!(
                    crc32c_append(crc32c(&d[..cut]), &d[cut..]),
                    reference,
                    "len {len} cut {cut}"
                );
            }
        }
    }
}
