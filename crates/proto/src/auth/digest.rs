//! Hash and HMAC by DH-HMAC-CHAP hash identifier (RustCrypto `sha2` + `hmac`).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

use super::ids::HashId;

/// HMAC of the concatenation of `parts` under `key`, with the hash `h`.
pub(crate) fn hmac(h: HashId, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        // HMAC takes a key of any length (RFC 2104 §2), so this cannot fail.
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .expect("HMAC accepts keys of any length");
        for p in parts {
            m.update(p);
        }
        Zeroizing::new(m.finalize().into_bytes().to_vec())
    }
    match h {
        HashId::Sha256 => run::<Hmac<Sha256>>(key, parts),
        HashId::Sha384 => run::<Hmac<Sha384>>(key, parts),
        HashId::Sha512 => run::<Hmac<Sha512>>(key, parts),
    }
}

/// Plain hash of `data` with `h`.
pub(crate) fn hash(h: HashId, data: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(match h {
        HashId::Sha256 => Sha256::digest(data).to_vec(),
        HashId::Sha384 => Sha384::digest(data).to_vec(),
        HashId::Sha512 => Sha512::digest(data).to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let out = hmac(
            HashId::Sha256,
            b"Jefe",
            &[b"what do ya want ", b"for nothing?"],
        );
        assert_eq!(
            out.as_slice(),
            &[
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
                0x64, 0xec, 0x38, 0x43
            ]
        );
        for h in HashId::ALL {
            assert_eq!(hmac(h, b"k", &[b"x"]).len(), h.digest_len());
            assert_eq!(hash(h, b"x").len(), h.digest_len());
        }
    }
}
