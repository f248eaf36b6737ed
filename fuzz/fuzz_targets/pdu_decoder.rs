//! Arbitrary bytes into the NVMe/TCP PDU decoder, for either side, with an
//! arbitrary configuration, in arbitrary chunks.
//!
//! Oracles: no panic; the buffer never grows past what a validated PLEN needs;
//! feeding in chunks gives the same PDUs and the same error as feeding at once;
//! every accepted PDU re-encodes (PduEncoder, same settings) into bytes that decode
//! to the same PDU.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvmf_proto::tcp::error::FatalError;
use nvmf_proto::tcp::{Decoder, DecoderConfig, Pdu, PduEncoder, Side};

#[path = "common.rs"]
mod common;
use common::{Chunks, Reader};

// Input: flags (bit 0 host side, 1 negotiated from the start, 2 HDGST, 3 DDGST),
// PDA, MAX_ICD u16, MAX_DATA u32, chunk seed u8, chunk max u16, then the stream.

type Outcome = (Vec<(Pdu, bool, bool)>, Option<FatalError>);

/// Decodes `data`; each PDU comes with whether it was decoded after negotiation
/// and whether its data digest matched.
fn run(
    side: Side,
    neg: DecoderConfig,
    from_start: bool,
    data: &[u8],
    mut chunks: Chunks,
) -> Outcome {
    let limit = 256 * 1024 + (neg.max_icd.max(neg.max_data) as usize) * 2 + data.len();
    let mut d = Decoder::new(side, DecoderConfig::default());
    let mut negotiated = false;
    if from_start {
        d.set_negotiated(neg);
        negotiated = true;
    }
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let n = chunks.next(data.len() - off);
        d.feed(&data[off..off + n]);
        off += n;
        loop {
            match d.next_pdu() {
                Ok(Some(r)) => {
                    let ic = matches!(r.pdu, Pdu::IcReq(_) | Pdu::IcResp(_));
                    out.push((r.pdu, negotiated, r.data_digest_ok));
                    if ic && !negotiated {
                        d.set_negotiated(neg);
                        negotiated = true;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.header.len() <= 128);
                    return (out, Some(e));
                }
            }
            assert!(
                d.buffer_mut().capacity() <= limit,
                "decoder buffer grew to {}",
                d.buffer_mut().capacity()
            );
        }
        assert!(
            d.buffer_mut().capacity() <= limit,
            "decoder buffer grew to {}",
            d.buffer_mut().capacity()
        );
    }
    (out, None)
}

fuzz_target!(|input: &[u8]| {
    let mut r = Reader::new(input);
    let fl = r.u8();
    let side = if fl & 1 != 0 {
        Side::Host
    } else {
        Side::Controller
    };
    let from_start = fl & 2 != 0;
    let neg = DecoderConfig {
        hdgst: fl & 4 != 0,
        ddgst: fl & 8 != 0,
        rx_pda: (usize::from(r.u8() % 32) + 1) * 4,
        max_icd: u32::from(r.u16()),
        max_data: r.u32() % (1 << 20),
    };
    let (seed, max) = (r.u8(), r.u16());
    let data = r.rest();
    let whole = run(side, neg, from_start, data, Chunks::new(0, 0));
    let pieces = run(side, neg, from_start, data, Chunks::new(seed, max));
    assert_eq!(whole, pieces, "chunking changed the outcome");

    // Re-encode every accepted PDU and decode it again.
    for (pdu, negotiated, _) in &whole.0 {
        let enc = if *negotiated {
            PduEncoder {
                hdgst: neg.hdgst,
                ddgst: neg.ddgst,
                pda: neg.rx_pda,
            }
        } else {
            PduEncoder::default()
        };
        let bytes = enc.to_bytes(pdu);
        let mut d = Decoder::new(side, DecoderConfig::default());
        if *negotiated {
            d.set_negotiated(neg);
        }
        d.feed(&bytes);
        let r = d
            .next_pdu()
            .unwrap_or_else(|e| panic!("re-encoded {pdu:?} is rejected: {e:?}"))
            .expect("re-encoded PDU is incomplete");
        assert_eq!(&r.pdu, pdu);
        assert!(r.data_digest_ok);
        assert_eq!(d.buffered(), 0);
    }
});
