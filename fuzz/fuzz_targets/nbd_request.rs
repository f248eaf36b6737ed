//! The NBD request and reply decoders of nvmf-blockdev (what the kernel's NBD
//! driver sends to `nvmf connect --block`): never panic, and a request that
//! decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvmf_blockdev::nbd::wire::{decode_reply, Request, REPLY_SIZE, REQUEST_SIZE};

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks(REQUEST_SIZE) {
        if let Ok(b) = <[u8; REQUEST_SIZE]>::try_from(chunk) {
            if let Ok(r) = Request::decode(&b) {
                assert_eq!(r.encode(), b);
            }
        }
    }
    if let Some(b) = data.get(..REPLY_SIZE) {
        let b: [u8; REPLY_SIZE] = b.try_into().expect("16 bytes");
        let _ = decode_reply(&b);
    }
});
