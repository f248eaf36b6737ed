//! The DH-HMAC-CHAP response computations (NVMe Base 2.0 §8.13.5.5-6), byte for
//! byte as Linux computes them (`nvme_auth_dhchap_setup_host_response` /
//! `_ctrl_response` in drivers/nvme/host/auth.c, `nvmet_auth_host_hash` /
//! `_ctrl_hash` in drivers/nvme/target/auth.c, `nvme_auth_augmented_challenge`
//! in drivers/nvme/common/auth.c), checked against a capture of Linux 6.12's host
//! and nvmet (see `tests/auth_linux_capture.rs`).

use zeroize::Zeroizing;

use super::digest;
use super::ids::HashId;

/// The augmented challenge of a DH exchange: `HMAC(H(shared_secret), challenge)`
/// with the negotiated hash, the key being the hash of the padded shared secret.
pub fn augmented_challenge(
    h: HashId,
    shared_secret: &[u8],
    challenge: &[u8],
) -> Zeroizing<Vec<u8>> {
    let hashed = digest::hash(h, shared_secret);
    digest::hmac(h, &hashed, &[challenge])
}

/// The host's response R1:
/// `HMAC(Kh', C1' || LE32(S1) || LE16(T_ID) || SC_C || "HostHost" || NQNh || 00h || NQNc)`
/// where `Kh'` is the transformed host key ([`DhchapSecret::transformed`] with
/// the host NQN) and `C1'` the challenge, augmented when a DH group is used.
///
/// [`DhchapSecret::transformed`]: super::DhchapSecret::transformed
#[allow(clippy::too_many_arguments)]
pub fn host_response(
    h: HashId,
    transformed_key: &[u8],
    challenge: &[u8],
    seqnum: u32,
    t_id: u16,
    sc_c: u8,
    hostnqn: &str,
    subnqn: &str,
) -> Zeroizing<Vec<u8>> {
    digest::hmac(
        h,
        transformed_key,
        &[
            challenge,
            &seqnum.to_le_bytes(),
            &t_id.to_le_bytes(),
            &[sc_c],
            b"HostHost",
            hostnqn.as_bytes(),
            &[0],
            subnqn.as_bytes(),
        ],
    )
}

/// The controller's response R2:
/// `HMAC(Kc', C2' || LE32(S2) || LE16(T_ID) || 00h || "Controller" || NQNc || 00h || NQNh)`
/// where `Kc'` is the transformed controller key (with the subsystem NQN). The
/// byte after T_ID is 0 in Linux whatever SC_C is.
pub fn controller_response(
    h: HashId,
    transformed_key: &[u8],
    challenge: &[u8],
    seqnum: u32,
    t_id: u16,
    subnqn: &str,
    hostnqn: &str,
) -> Zeroizing<Vec<u8>> {
    digest::hmac(
        h,
        transformed_key,
        &[
            challenge,
            &seqnum.to_le_bytes(),
            &t_id.to_le_bytes(),
            &[0],
            b"Controller",
            subnqn.as_bytes(),
            &[0],
            hostnqn.as_bytes(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_the_hash() {
        for h in HashId::ALL {
            let r = host_response(h, &[1; 32], &vec![2; h.digest_len()], 1, 2, 0, "a", "b");
            assert_eq!(r.len(), h.digest_len());
            let c = controller_response(h, &[1; 32], &vec![2; h.digest_len()], 1, 2, "b", "a");
            assert_ne!(r, c);
            assert_eq!(
                augmented_challenge(h, &[3; 256], &vec![2; h.digest_len()]).len(),
                h.digest_len()
            );
        }
    }
}
