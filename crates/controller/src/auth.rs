//! In-band authentication of hosts (DH-HMAC-CHAP, NVMe Base 2.0 §8.13): the
//! checks of a host entry's secrets and algorithm names, and the per-queue
//! state that gates commands until the queue has authenticated.

use crate::config::HostConfig;

/// Hash function names accepted in `dhchap_hash` (NVMe Base 2.0 Figure 416).
pub const HASH_NAMES: [&str; 3] = ["sha256", "sha384", "sha512"];
/// DH group names accepted in `dhchap_dhgroup` (NVMe Base 2.0 Figure 417).
pub const DHGROUP_NAMES: [&str; 6] = [
    "null",
    "ffdhe2048",
    "ffdhe3072",
    "ffdhe4096",
    "ffdhe6144",
    "ffdhe8192",
];

/// Strips the `hmac(…)` wrapper nvmet's configfs uses (`hmac(sha256)`), so
/// either spelling is accepted.
pub fn hash_name(s: &str) -> &str {
    s.strip_prefix("hmac(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(s)
}

/// Checks one host entry: its secrets parse, a controller secret comes with a
/// host secret, and the algorithm names are known. The error names the field.
pub fn validate_host(h: &HostConfig) -> Result<(), (&'static str, String)> {
    for name in &h.dhchap_hashes {
        if !HASH_NAMES.contains(&hash_name(name)) {
            return Err((
                "dhchap_hash",
                format!("'{name}' is not one of sha256, sha384, sha512"),
            ));
        }
    }
    for name in &h.dhchap_dhgroups {
        if !DHGROUP_NAMES.contains(&name.as_str()) {
            return Err((
                "dhchap_dhgroup",
                format!("'{name}' is not one of {}", DHGROUP_NAMES.join(", ")),
            ));
        }
    }
    if h.dhchap_ctrl_secret.is_some() && h.dhchap_secret.is_none() {
        return Err((
            "dhchap_ctrl_secret",
            "a controller secret needs a host secret (dhchap_secret) too".into(),
        ));
    }
    Ok(())
}
