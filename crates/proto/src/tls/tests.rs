//! Known answers from nvme-cli 2.13 / libnvme 1.13 in a Debian 13 guest
//! (tests/tls-kat/guest-kat.sh): `nvme gen-tls-key --secret=… --hmac=…` and
//! `nvme check-tls-key --keydata=… --identity=0|1 --insert`, then the `.nvme`
//! keyring's key descriptions (identities) and payloads (TLS PSKs).

use super::*;

const H: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
const S: &str = "nqn.2024-01.io.test:tls";
const KEY256: &str = "NVMeTLSkey-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
const KEY384: &str =
    "NVMeTLSkey-1:02:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vcSEgBQ==:";
const DIGEST256: &str = "EVt+vT1c76FojvAnaUYzg3jDUvxvh+SAHHUWiTIHOoQ=";
const DIGEST384: &str = "YoqunoxFp88Bzu8SNKeH43xfOEDUJJsyD0mWpMxjQFy8bQxlDPzO286gOqVvGjoV";

fn seq(n: u8) -> Vec<u8> {
    (0..n).collect()
}

#[test]
fn interchange_format_matches_nvme_cli() {
    let k = ConfiguredPsk::new(&seq(32), Some(PskHash::Sha256)).unwrap();
    assert_eq!(k.to_interchange().as_str(), KEY256);
    assert_eq!(ConfiguredPsk::parse(KEY256).unwrap(), k);
    let k = ConfiguredPsk::new(&seq(48), Some(PskHash::Sha384)).unwrap();
    assert_eq!(k.to_interchange().as_str(), KEY384);
    assert_eq!(ConfiguredPsk::parse(KEY384).unwrap(), k);
    assert_eq!(k.hash(), PskHash::Sha384);
    // no final ':' and whitespace are accepted
    assert!(ConfiguredPsk::parse(&format!(" {} \n", KEY256.trim_end_matches(':'))).is_ok());
}

#[test]
fn bad_keys_say_what_is_wrong() {
    assert_eq!(
        ConfiguredPsk::parse("DHHC-1:00:abc:"),
        Err(PskError::NotTlsKey)
    );
    assert!(matches!(
        ConfiguredPsk::parse("NVMeTLSkey-1:03:AAAA:"),
        Err(PskError::BadHash(_))
    ));
    assert_eq!(
        ConfiguredPsk::parse("NVMeTLSkey-1:01:!!!!:"),
        Err(PskError::BadBase64)
    );
    // a 48-byte key with hh 01
    assert!(matches!(
        ConfiguredPsk::parse(&KEY384.replace(":02:", ":01:")),
        Err(PskError::BadLength { hh: 1, .. })
    ));
    // one base64 character changed
    let bad = KEY256.replace("AAEC", "AAED");
    assert!(matches!(
        ConfiguredPsk::parse(&bad),
        Err(PskError::CrcMismatch { .. })
    ));
    let dbg = format!("{:?}", ConfiguredPsk::parse(KEY256).unwrap());
    assert!(!dbg.contains("AAEC"), "{dbg}");
}

#[test]
fn digest_and_identities_match_libnvme() {
    let r = ConfiguredPsk::parse(KEY256)
        .unwrap()
        .retained(H, Derivation::Compat);
    assert_eq!(r.digest(H, S), DIGEST256);
    assert_eq!(r.identity(0, H, S), format!("NVMe0R01 {H} {S}"));
    assert_eq!(r.identity(1, H, S), format!("NVMe1R01 {H} {S} {DIGEST256}"));
    let r = ConfiguredPsk::parse(KEY384)
        .unwrap()
        .retained(H, Derivation::Compat);
    assert_eq!(r.digest(H, S), DIGEST384);
    assert_eq!(
        r.tls_psk(1, H, S, Derivation::Compat).identity,
        format!("NVMe1R02 {H} {S} {DIGEST384}")
    );
    assert_eq!(
        r.tls_psk(0, H, S, Derivation::Compat).identity,
        format!("NVMe0R02 {H} {S}")
    );
}

#[test]
fn identity_parse() {
    let id = PskIdentity::parse(&format!("NVMe1R02 {H} {S} {DIGEST384}")).unwrap();
    assert_eq!(
        (
            id.version,
            id.generated,
            id.hash,
            id.hostnqn.as_str(),
            id.subnqn.as_str()
        ),
        (1, false, PskHash::Sha384, H, S)
    );
    assert_eq!(id.digest.as_deref(), Some(DIGEST384));
    let id = PskIdentity::parse(&format!("NVMe0G01 {H} {S}")).unwrap();
    assert!(id.generated && id.digest.is_none());
    for bad in [
        "",
        "NVMe0R01",
        "NVMe0R03 h s",
        "NVMe2R01 h s d",
        "NVMe0R01 h s extra",
        "NVMe1R01 h s",
        "NVMe0R01  s",
        "XVMe0R01 h s",
    ] {
        assert!(PskIdentity::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn target_finds_what_the_host_offers() {
    let keys = [
        ConfiguredPsk::parse(KEY256).unwrap(),
        ConfiguredPsk::parse(KEY384).unwrap(),
    ];
    let offers = host_offers(&keys, H, S, Derivation::Spec);
    assert_eq!(offers.len(), 2);
    assert_eq!(offers[0].hash, PskHash::Sha384, "SHA-384 first, as Linux");
    for o in &offers {
        let t = target_lookup(o.identity.as_bytes(), &keys, Derivation::Spec).unwrap();
        assert_eq!(&t, o);
    }
    for v in [0, 1] {
        for d in Derivation::ALL {
            for k in &keys {
                let p = k.retained(H, d).tls_psk(v, H, S, d);
                assert_eq!(target_lookup(p.identity.as_bytes(), &keys, d).unwrap(), p);
            }
        }
    }
    // a v1 identity finds its derivation whatever the v0 default
    let p = keys[0]
        .retained(H, Derivation::Compat)
        .tls_psk(1, H, S, Derivation::Compat);
    assert_eq!(
        target_lookup(p.identity.as_bytes(), &keys, Derivation::Spec).unwrap(),
        p
    );
    // only the SHA-256 key configured: a SHA-384 identity finds nothing
    assert!(matches!(
        target_lookup(offers[0].identity.as_bytes(), &keys[..1], Derivation::Spec),
        Err(PskError::NoKey(_))
    ));
    // a v1 identity with another key's digest finds nothing
    let other = ConfiguredPsk::new(&[7u8; 32], Some(PskHash::Sha256)).unwrap();
    let p = other
        .retained(H, Derivation::Spec)
        .tls_psk(1, H, S, Derivation::Spec);
    let d = Derivation::Spec;
    assert!(matches!(
        target_lookup(p.identity.as_bytes(), &keys, d),
        Err(PskError::NoKey(_))
    ));
    assert!(matches!(
        target_lookup(format!("NVMe0G01 {H} {S}").as_bytes(), &keys, d),
        Err(PskError::Generated(_))
    ));
    assert!(matches!(
        target_lookup(b"\xff\xfe", &keys, d),
        Err(PskError::BadIdentity(_))
    ));
}

#[test]
fn untransformed_key_is_its_own_retained_psk() {
    let k = ConfiguredPsk::new(&seq(48), None).unwrap();
    assert_eq!(k.hash(), PskHash::Sha384);
    assert_eq!(k.retained(H, Derivation::Spec).key(), seq(48).as_slice());
    assert!(k.to_interchange().starts_with("NVMeTLSkey-1:00:"));
}

/// The specification's layout, against OpenSSL's HKDF (`openssl kdf … HKDF` with
/// the RFC 8446 HkdfLabel as hexinfo): an independent implementation.
#[test]
fn spec_retained_psk_matches_openssl_hkdf() {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
    let r = ConfiguredPsk::parse(KEY256)
        .unwrap()
        .retained(H, Derivation::Spec);
    assert_eq!(
        hex(r.key()),
        "F3930CBB56B7A6B7CFC81DCE792C0BB2E66AED4E48035F4EBE624D9A07AA681D"
    );
    let r = ConfiguredPsk::parse(KEY384)
        .unwrap()
        .retained(H, Derivation::Spec);
    assert_eq!(
        hex(r.key()),
        "DCB68C2C52576B7C19A488D07C1DC319FB62F9563A936B5F3839FE4B33F0CC8679E0003EC5877CB62C4016DE36840245"
    );
}
