//! Finite-field Diffie-Hellman over the RFC 7919 groups ffdhe2048…ffdhe8192
//! (generator 2), as DH-HMAC-CHAP uses them (NVMe Base 2.0 §8.13.5.6).
//!
//! Public values and shared secrets are big-endian and left-padded with zeros to
//! the length of the prime, as Linux's `crypto/dh.c` writes them
//! (`mpi_write_to_sgl` pads to the buffer, which the NVMe code sizes with
//! `crypto_kpp_maxsize`). Exponentiation is `crypto-bigint`'s constant-time
//! Montgomery ladder with a fixed-size exponent, so its time does not depend on
//! the private key. The peer's value must satisfy 1 < y < p-1 (SP 800-56A
//! §5.6.2.3.1; with a safe prime that excludes the small subgroups).

use std::sync::{Arc, OnceLock};

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use rand::{CryptoRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use super::ids::DhGroup;

/// Why a Diffie-Hellman step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    /// The null group has no exchange.
    #[error("the null DH group has no Diffie-Hellman exchange")]
    NullGroup,
    /// The peer's public value is not as long as the group's prime.
    #[error("a DH public value of this group is {expected} bytes, not {got}")]
    WrongLength {
        /// Length of the prime.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// The peer's public value is 0, 1, p-1 or not below p.
    #[error("the peer's DH public value is outside 2..=p-2")]
    OutOfRange,
}

/// Compile-time hex decoding of the group constants (a bad digit or length
/// fails the build, never a run).
const fn hex<const N: usize>(s: &str) -> [u8; N] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'F' => c - b'A' + 10,
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a hex digit"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 2 * N, "hex constant of the wrong length");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// RFC 7919 Appendix A: the ffdhe2048 prime p (generator 2).
const FFDHE2048_P: [u8; 256] = hex(concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B423861285C97FFFFFFFFFFFFFFFF",
));
/// RFC 7919 Appendix A: the ffdhe3072 prime p (generator 2).
const FFDHE3072_P: [u8; 384] = hex(concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B",
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF",
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E",
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF",
));
/// RFC 7919 Appendix A: the ffdhe4096 prime p (generator 2).
const FFDHE4096_P: [u8; 512] = hex(concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B",
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF",
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E",
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB",
    "7930E9E4E58857B6AC7D5F42D69F6D187763CF1D5503400487F55BA57E31CC7A",
    "7135C886EFB4318AED6A1E012D9E6832A907600A918130C46DC778F971AD0038",
    "092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF",
    "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E655F6AFFFFFFFFFFFFFFFF",
));
/// RFC 7919 Appendix A: the ffdhe6144 prime p (generator 2).
const FFDHE6144_P: [u8; 768] = hex(concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B",
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF",
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E",
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB",
    "7930E9E4E58857B6AC7D5F42D69F6D187763CF1D5503400487F55BA57E31CC7A",
    "7135C886EFB4318AED6A1E012D9E6832A907600A918130C46DC778F971AD0038",
    "092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF",
    "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E0DD9020BFD64B645036C7A",
    "4E677D2C38532A3A23BA4442CAF53EA63BB454329B7624C8917BDD64B1C0FD4C",
    "B38E8C334C701C3ACDAD0657FCCFEC719B1F5C3E4E46041F388147FB4CFDB477",
    "A52471F7A9A96910B855322EDB6340D8A00EF092350511E30ABEC1FFF9E3A26E",
    "7FB29F8C183023C3587E38DA0077D9B4763E4E4B94B2BBC194C6651E77CAF992",
    "EEAAC0232A281BF6B3A739C1226116820AE8DB5847A67CBEF9C9091B462D538C",
    "D72B03746AE77F5E62292C311562A846505DC82DB854338AE49F5235C95B9117",
    "8CCF2DD5CACEF403EC9D1810C6272B045B3B71F9DC6B80D63FDD4A8E9ADB1E69",
    "62A69526D43161C1A41D570D7938DAD4A40E329CD0E40E65FFFFFFFFFFFFFFFF",
));
/// RFC 7919 Appendix A: the ffdhe8192 prime p (generator 2).
const FFDHE8192_P: [u8; 1024] = hex(concat!(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B",
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C",
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF",
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E",
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB",
    "7930E9E4E58857B6AC7D5F42D69F6D187763CF1D5503400487F55BA57E31CC7A",
    "7135C886EFB4318AED6A1E012D9E6832A907600A918130C46DC778F971AD0038",
    "092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF",
    "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E0DD9020BFD64B645036C7A",
    "4E677D2C38532A3A23BA4442CAF53EA63BB454329B7624C8917BDD64B1C0FD4C",
    "B38E8C334C701C3ACDAD0657FCCFEC719B1F5C3E4E46041F388147FB4CFDB477",
    "A52471F7A9A96910B855322EDB6340D8A00EF092350511E30ABEC1FFF9E3A26E",
    "7FB29F8C183023C3587E38DA0077D9B4763E4E4B94B2BBC194C6651E77CAF992",
    "EEAAC0232A281BF6B3A739C1226116820AE8DB5847A67CBEF9C9091B462D538C",
    "D72B03746AE77F5E62292C311562A846505DC82DB854338AE49F5235C95B9117",
    "8CCF2DD5CACEF403EC9D1810C6272B045B3B71F9DC6B80D63FDD4A8E9ADB1E69",
    "62A69526D43161C1A41D570D7938DAD4A40E329CCFF46AAA36AD004CF600C838",
    "1E425A31D951AE64FDB23FCEC9509D43687FEB69EDD1CC5E0B8CC3BDF64B10EF",
    "86B63142A3AB8829555B2F747C932665CB2C0F1CC01BD70229388839D2AF05E4",
    "54504AC78B7582822846C0BA35C35F5C59160CC046FD8251541FC68C9C86B022",
    "BB7099876A460E7451A8A93109703FEE1C217E6C3826E52C51AA691E0E423CFC",
    "99E9E31650C1217B624816CDAD9A95F9D5B8019488D9C0A0A1FE3075A577E231",
    "83F81D4A3F2FA4571EFC8CE0BA8A4FE8B6855DFE72B0A66EDED2FBABFBE58A30",
    "FAFABE1C5D71A87E2F741EF8C1FE86FEA6BBFDE530677F0D97D11D49F7A8443D",
    "0822E506A9F4614E011E2A94838FF88CD68C8BB7C5C6424CFFFFFFFFFFFFFFFF",
));

/// Bits of the private exponent per group: RFC 7919 Appendix A's "short
/// exponent" sizes (225, 275, 325, 375, 400 bits), rounded up to 64-bit limbs.
fn exponent_bits(g: DhGroup) -> u32 {
    match g {
        DhGroup::Null => 0,
        DhGroup::Ffdhe2048 => 256,
        DhGroup::Ffdhe3072 => 320,
        DhGroup::Ffdhe4096 => 384,
        DhGroup::Ffdhe6144 => 384,
        DhGroup::Ffdhe8192 => 448,
    }
}

fn prime(g: DhGroup) -> &'static [u8] {
    match g {
        DhGroup::Null => &[],
        DhGroup::Ffdhe2048 => &FFDHE2048_P,
        DhGroup::Ffdhe3072 => &FFDHE3072_P,
        DhGroup::Ffdhe4096 => &FFDHE4096_P,
        DhGroup::Ffdhe6144 => &FFDHE6144_P,
        DhGroup::Ffdhe8192 => &FFDHE8192_P,
    }
}

/// Montgomery parameters of a group's prime, computed once per process.
fn params(g: DhGroup) -> Option<Arc<BoxedMontyParams>> {
    static CACHE: [OnceLock<Arc<BoxedMontyParams>>; 6] = [const { OnceLock::new() }; 6];
    if g == DhGroup::Null {
        return None;
    }
    let cell = CACHE.get(usize::from(g.id()))?;
    Some(
        cell.get_or_init(|| {
            let p = prime(g);
            let bits = (p.len() * 8) as u32;
            // The RFC 7919 primes are odd and exactly `bits` long: these cannot fail.
            let p = BoxedUint::from_be_slice(p, bits).expect("a prime of its own length");
            let p = Odd::new(p).expect("RFC 7919 primes are odd");
            Arc::new(BoxedMontyParams::new(p))
        })
        .clone(),
    )
}

/// An ephemeral Diffie-Hellman key pair of one authentication transaction.
/// The private exponent is wiped on drop and never printed.
pub struct DhKeyPair {
    group: DhGroup,
    private: BoxedUint,
    public: Vec<u8>,
}

impl std::fmt::Debug for DhKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhKeyPair")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Drop for DhKeyPair {
    fn drop(&mut self) {
        self.private.zeroize();
    }
}

impl DhKeyPair {
    /// Draws a private exponent from `rng` and computes the public value 2^x mod p.
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(
        group: DhGroup,
        rng: &mut R,
    ) -> Result<Self, DhError> {
        let params = params(group).ok_or(DhError::NullGroup)?;
        let bits = exponent_bits(group);
        let mut bytes = Zeroizing::new(vec![0u8; bits as usize / 8]);
        let private = loop {
            rng.fill_bytes(&mut bytes);
            let x = BoxedUint::from_be_slice(&bytes, bits).map_err(|_| DhError::OutOfRange)?;
            // x >= 2 (all but 2 of 2^bits values); checking a fresh random value
            // in variable time tells nothing about the kept one.
            if bool::from(x.is_nonzero()) && x != BoxedUint::one_with_precision(bits) {
                break x;
            }
        };
        let precision = params.bits_precision();
        let g = BoxedUint::from(2u64).widen(precision);
        let public = BoxedMontyForm::new_with_arc(g, params)
            .pow_bounded_exp(&private, bits)
            .retrieve()
            .to_be_bytes()
            .into_vec();
        Ok(Self {
            group,
            private,
            public,
        })
    }

    /// The group of the key pair.
    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The public value, as long as the prime (DHVLEN).
    pub fn public_value(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret y^x mod p for the peer's public value `peer`, checked
    /// first to be of the right length and in 2..=p-2.
    pub fn shared_secret(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, DhError> {
        let params = params(self.group).ok_or(DhError::NullGroup)?;
        let expected = self.group.value_len();
        if peer.len() != expected {
            return Err(DhError::WrongLength {
                expected,
                got: peer.len(),
            });
        }
        let precision = params.bits_precision();
        let y = BoxedUint::from_be_slice(peer, precision).map_err(|_| DhError::OutOfRange)?;
        let one = BoxedUint::one_with_precision(precision);
        let p_minus_1 = params.modulus().as_ref().wrapping_sub(&one);
        // Public values: comparing them in variable time leaks nothing secret.
        if y <= one || y >= p_minus_1 {
            return Err(DhError::OutOfRange);
        }
        let mut s = BoxedMontyForm::new_with_arc(y, params)
            .pow_bounded_exp(&self.private, exponent_bits(self.group))
            .retrieve();
        let out = Zeroizing::new(s.to_be_bytes().into_vec());
        s.zeroize();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn primes_have_their_length_and_form() {
        for g in DhGroup::ALL.into_iter().skip(1) {
            let p = prime(g);
            assert_eq!(p.len(), g.value_len());
            // Every RFC 7919 prime starts and ends with 64 one bits.
            assert!(p[..8].iter().chain(&p[p.len() - 8..]).all(|&b| b == 0xFF));
            assert_eq!(&p[8..12], &[0xAD, 0xF8, 0x54, 0x58]);
        }
        assert_eq!(&FFDHE2048_P[248..], &[0xFF; 8]);
        assert_eq!(
            &FFDHE2048_P[240..248],
            &[0x88, 0x6B, 0x42, 0x38, 0x61, 0x28, 0x5C, 0x97]
        );
    }

    #[test]
    fn both_sides_agree_and_bad_values_are_refused() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for g in [DhGroup::Ffdhe2048, DhGroup::Ffdhe3072] {
            let a = DhKeyPair::generate(g, &mut rng).unwrap();
            let b = DhKeyPair::generate(g, &mut rng).unwrap();
            assert_eq!(a.public_value().len(), g.value_len());
            let s1 = a.shared_secret(b.public_value()).unwrap();
            let s2 = b.shared_secret(a.public_value()).unwrap();
            assert_eq!(s1, s2);
            assert_eq!(s1.len(), g.value_len());
            assert_ne!(a.public_value(), b.public_value());
            let n = g.value_len();
            let mut v = vec![0u8; n];
            assert_eq!(a.shared_secret(&v), Err(DhError::OutOfRange));
            v[n - 1] = 1;
            assert_eq!(a.shared_secret(&v), Err(DhError::OutOfRange));
            v[n - 1] = 2;
            assert!(a.shared_secret(&v).is_ok());
            let mut pm1 = prime(g).to_vec();
            pm1[n - 1] -= 1;
            assert_eq!(a.shared_secret(&pm1), Err(DhError::OutOfRange));
            assert_eq!(a.shared_secret(prime(g)), Err(DhError::OutOfRange));
            assert_eq!(
                a.shared_secret(&[0xFF; 4]),
                Err(DhError::WrongLength {
                    expected: n,
                    got: 4
                })
            );
            pm1[n - 1] -= 1; // p-2 is allowed
            assert!(a.shared_secret(&pm1).is_ok());
        }
        assert!(matches!(
            DhKeyPair::generate(DhGroup::Null, &mut rng),
            Err(DhError::NullGroup)
        ));
    }

    /// Hands out bytes i*mul+add (mod 256): a fixed private exponent.
    struct Pattern(u8, u8, u8);
    impl RngCore for Pattern {
        fn next_u32(&mut self) -> u32 {
            unimplemented!()
        }
        fn next_u64(&mut self) -> u64 {
            unimplemented!()
        }
        fn fill_bytes(&mut self, d: &mut [u8]) {
            for b in d {
                *b = self.0.wrapping_mul(self.1).wrapping_add(self.2);
                self.0 = self.0.wrapping_add(1);
            }
        }
        fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand::Error> {
            self.fill_bytes(d);
            Ok(())
        }
    }
    impl CryptoRng for Pattern {}

    fn sha256_hex(b: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    }

    /// Known answers from Python's `pow(2, x, p)` (independent big-integer code)
    /// for every group: SHA-256 of the public value 2^a and of the shared secret
    /// (2^b)^a, with a = bytes 01 08 0f … and b = bytes 05 12 1f … of the
    /// group's exponent length.
    #[test]
    fn known_answers_from_python_pow() {
        for (g, public, shared) in [
            (
                DhGroup::Ffdhe2048,
                "8b86d040edb2357dffadef05bd33eb7edb94f2d13b09bb155e5a12905eb3396e",
                "15e31e22f3993fbf4dc9944a33d6156192655685b334bbd344e7bd0a39b8925f",
            ),
            (
                DhGroup::Ffdhe3072,
                "34d04a5729fc64e329c7b7f8670b5898d7cb6c0d897609b50a67ff9457728cd3",
                "b229d17bf4dd257309dfcd60628dc7c01773f23c9bd62dea9d7f79a98843cbd3",
            ),
            (
                DhGroup::Ffdhe4096,
                "944152465b13e74867d9f1df028fa6d7618c435fb13f46851d2c27d58f8cd2d8",
                "0dd89b55f08bb52252959db860e75877dd7cd13688108ba3dd4a4be3ec3a443a",
            ),
            (
                DhGroup::Ffdhe6144,
                "54b09b577de2e998c50fd831130f802d4f671d17566e4725040fe25e68641871",
                "5980fa7fc2af1801daf41a9d87dcb55bf068493a189756c7da097d71bc524951",
            ),
            (
                DhGroup::Ffdhe8192,
                "ec9c45a5524e2ad993932b8258f184ffe866a70062c70376cdf255195b1b85ab",
                "00e915241e276b12c418dfd1a922ffcda25977fecd430c2a361573a03f851730",
            ),
        ] {
            let a = DhKeyPair::generate(g, &mut Pattern(0, 7, 1)).unwrap();
            let b = DhKeyPair::generate(g, &mut Pattern(0, 13, 5)).unwrap();
            assert_eq!(sha256_hex(a.public_value()), public, "{g}");
            let z = a.shared_secret(b.public_value()).unwrap();
            assert_eq!(sha256_hex(&z), shared, "{g}");
        }
    }

    #[test]
    fn two_to_the_x_for_a_known_x() {
        // x = 2^8 + 1 = 257 → 2^257 mod p = 2^257 (smaller than p).
        let params = params(DhGroup::Ffdhe2048).unwrap();
        let x = BoxedUint::from(257u64).widen(256);
        let g = BoxedUint::from(2u64).widen(2048);
        let y = BoxedMontyForm::new_with_arc(g, params)
            .pow_bounded_exp(&x, 256)
            .retrieve()
            .to_be_bytes();
        let mut expect = vec![0u8; 256];
        expect[256 - 33] = 2; // 2^257 = 0x02 followed by 32 zero bytes
        assert_eq!(&*y, expect.as_slice());
    }
}
