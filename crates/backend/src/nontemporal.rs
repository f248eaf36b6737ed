//! Copies into namespace memory that bypass the cache.
//!
//! A 4 KiB random write over a namespace larger than the cache lands on lines
//! the CPU does not hold: an ordinary store first reads each line from memory
//! (read for ownership) and then evicts it again, so the copy costs a memory
//! read and a write per line and stalls on the reads. Non-temporal (streaming)
//! stores fill whole lines in write-combining buffers and send them to memory
//! without reading them first. The data is not wanted in the cache anyway: the
//! next access to a random block is far away. Measured in docs/performance.md.

/// Copies `src` into `dst` (equal lengths) with streaming stores for the
/// 16-byte-aligned middle and ordinary copies for the ends, then fences so the
/// stores are visible to any thread that later acquires what the caller
/// releases (streaming stores are not ordered by x86's usual rules).
pub(crate) fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_streaming needs equal lengths");
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        let (d_head, d_rest) = dst.split_at_mut(head);
        let (s_head, s_rest) = src.split_at(head);
        d_head.copy_from_slice(s_head);
        let body = d_rest.len() & !15;
        let (d_body, d_tail) = d_rest.split_at_mut(body);
        let (s_body, s_tail) = s_rest.split_at(body);
        for (d, s) in d_body.chunks_exact_mut(16).zip(s_body.chunks_exact(16)) {
            #[allow(unsafe_code)]
            // SAFETY: `d` and `s` are 16 bytes each (chunks_exact); `d` starts
            // 16-byte aligned (the head above reached the alignment and every
            // chunk is 16 long), as the streaming store requires, and `d` is
            // borrowed mutably, so nothing else reads or writes it meanwhile. The
            // load is unaligned (`loadu`). SSE2 is part of the x86-64 baseline.
            unsafe {
                _mm_stream_si128(
                    d.as_mut_ptr().cast::<__m128i>(),
                    _mm_loadu_si128(s.as_ptr().cast::<__m128i>()),
                );
            }
        }
        d_tail.copy_from_slice(s_tail);
        #[allow(unsafe_code)]
        // SAFETY: SFENCE has no operands and no preconditions; SSE is part of
        // the x86-64 baseline, so the CPU has it.
        unsafe {
            _mm_sfence()
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::copy_streaming;

    #[test]
    fn every_alignment_and_length_copies_exactly() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..20 {
            for len in [0, 1, 15, 16, 17, 31, 32, 64, 100, 255, 280] {
                let mut dst = vec![0xeeu8; 300];
                copy_streaming(&mut dst[start..start + len], &src[..len]);
                assert_eq!(&dst[start..start + len], &src[..len]);
                assert!(dst[..start].iter().all(|&b| b == 0xee));
                assert!(dst[start + len..].iter().all(|&b| b == 0xee));
            }
        }
    }
}
