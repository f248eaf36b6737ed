//! NVMe/TCP secure channel (TLS 1.3 with pre-shared keys, NVMe/TCP Transport
//! Specification §3.6 and TP 8011): the PSK interchange format, the derivation
//! of retained and TLS PSKs, and PSK identities. The TLS handshake itself is in
//! `nvmf_transport::tls`.

mod psk;

pub use psk::{
    host_offers, target_lookup, ConfiguredPsk, Derivation, PskError, PskHash, PskIdentity,
    RetainedPsk, TlsPsk,
};
