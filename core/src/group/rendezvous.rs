//! Group rendezvous, protocol v2: what a member's announcement for one time window is made
//! of, derived from the group's rendezvous secret (itself derived from the epoch secret).
//!
//! A member announces itself under `provider_key(rendezvous_key(w))` (see
//! [`GroupKeys::rendezvous_key`]) with a provider record that names no node:
//!
//! - its **provider** is a per-window key, [`GroupKeys::rendezvous_identity`], which signs
//!   the record. Only members can derive it, it changes with every window, and it differs
//!   for every member, so a record's provider links neither two windows nor two groups;
//! - its **sealed** bytes are the member's dial address (`EndpointAddr`, postcard) encrypted
//!   to the group with [`seal`] under the window's key, [`GroupKeys::rendezvous_seal_key`],
//!   and a fresh random nonce, bound to the record by the associated data
//!   ([`associated_data`]: provider key, provider, expiry). To anyone without the
//!   group's secret they are random bytes.
//!
//! A member that finds a record opens it with [`open`] and checks that the provider is the
//! identity of the node inside for that window, so a record cannot be moved to another
//! window, key or expiry, nor claim another member's address under a key that is not that
//! member's.

use iroh::SecretKey;
use zeroize::Zeroizing;

use super::GroupKeys;
use crate::crypto::Secret32;
use crate::crypto::aead::{self, NONCE_LEN, TAG_LEN};
use crate::error::{CoveyError, Result};
use crate::wire::entry::Id32;

/// Domain separation of the per-window provider identity of a member.
pub const RENDEZVOUS_IDENTITY_LABEL: &[u8] = b"covey/v2/rendezvous-identity";
/// Domain separation of the per-window key addresses are sealed under.
pub const RENDEZVOUS_SEAL_LABEL: &[u8] = b"covey/v2/rendezvous-seal";
/// What sealing adds to the plaintext: the nonce in front and the tag behind.
pub const SEALED_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of the associated data: the provider key, the provider and the expiry.
pub const ASSOCIATED_DATA_LEN: usize = 32 + 32 + 8;

impl GroupKeys {
    /// The Ed25519 key member `node` announces itself with in rendezvous window `window`:
    /// the key whose seed is `BLAKE3-keyed(rendezvous_secret, RENDEZVOUS_IDENTITY_LABEL ||
    /// u64 BE window || node)`. Deterministic, so renewals within a window replace one
    /// record at its holders instead of adding more, and a finder can check the key belongs
    /// to the node the record seals; different in every window and for every member, and
    /// unrelated to `node` for anyone without the secret.
    pub fn rendezvous_identity(&self, window: u64, node: &Id32) -> SecretKey {
        let mut hasher = blake3::Hasher::new_keyed(self.rendezvous_secret.expose());
        hasher.update(RENDEZVOUS_IDENTITY_LABEL);
        hasher.update(&window.to_be_bytes());
        hasher.update(node);
        let seed = Zeroizing::new(*hasher.finalize().as_bytes());
        SecretKey::from_bytes(&seed)
    }

    /// The key members seal their addresses under in rendezvous window `window`:
    /// `BLAKE3-keyed(rendezvous_secret, RENDEZVOUS_SEAL_LABEL || u64 BE window)`.
    pub fn rendezvous_seal_key(&self, window: u64) -> Secret32 {
        let mut hasher = blake3::Hasher::new_keyed(self.rendezvous_secret.expose());
        hasher.update(RENDEZVOUS_SEAL_LABEL);
        hasher.update(&window.to_be_bytes());
        Secret32::from_bytes(*hasher.finalize().as_bytes())
    }
}

/// The associated data binding a sealed address to its record: `provider_key || provider ||
/// u64 BE expires_at_ms`. A blob copied into another record (another key, provider or
/// expiry) no longer opens.
pub fn associated_data(
    provider_key: &[u8; 32],
    provider: &[u8; 32],
    expires_at_ms: u64,
) -> [u8; ASSOCIATED_DATA_LEN] {
    let mut out = [0u8; ASSOCIATED_DATA_LEN];
    out[..32].copy_from_slice(provider_key);
    out[32..64].copy_from_slice(provider);
    out[64..].copy_from_slice(&expires_at_ms.to_be_bytes());
    out
}

/// Seals `plaintext` (a member's address) under `seal_key` with `nonce` (fresh and random
/// for every announcement; fixed only in test vectors) and `associated_data`: XChaCha20-
/// Poly1305, returned as `nonce || ciphertext || tag`, [`SEALED_OVERHEAD`] bytes longer than
/// the plaintext.
pub fn seal(
    seal_key: &Secret32,
    nonce: &[u8; NONCE_LEN],
    associated_data: &[u8; ASSOCIATED_DATA_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let ciphertext = aead::seal(seal_key, nonce, associated_data, plaintext)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens a blob made by [`seal`]. Fails with `Crypto` when it is shorter than a nonce and a
/// tag, or does not authenticate under `seal_key` and `associated_data` (another group,
/// another window, another record, or tampered bytes).
pub fn open(
    seal_key: &Secret32,
    sealed: &[u8],
    associated_data: &[u8; ASSOCIATED_DATA_LEN],
) -> Result<Zeroizing<Vec<u8>>> {
    let Some((nonce, ciphertext)) = sealed.split_first_chunk::<NONCE_LEN>() else {
        return Err(CoveyError::crypto("sealed address shorter than its nonce"));
    };
    if ciphertext.len() < TAG_LEN {
        return Err(CoveyError::crypto("sealed address shorter than its tag"));
    }
    aead::open(seal_key, nonce, associated_data, ciphertext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn keys(n: u8) -> GroupKeys {
        GroupKeys::from_root(&Secret32::from_bytes([n; 32]))
    }

    const NODE: Id32 = [0x0a; 32];
    const OTHER: Id32 = [0x0b; 32];

    #[test]
    fn identities_differ_per_window_member_and_group_and_name_no_node() {
        let g = keys(1);
        let id = |k: &GroupKeys, w, n: &Id32| *k.rendezvous_identity(w, n).public().as_bytes();
        assert_eq!(id(&g, 7, &NODE), id(&g, 7, &NODE), "deterministic");
        assert_ne!(id(&g, 7, &NODE), id(&g, 8, &NODE), "per window");
        assert_ne!(id(&g, 7, &NODE), id(&g, 7, &OTHER), "per member");
        assert_ne!(id(&g, 7, &NODE), id(&keys(2), 7, &NODE), "per group");
        assert_ne!(id(&g, 7, &NODE), NODE);
        assert_ne!(id(&g, 7, &NODE), g.rendezvous_key(7));
        // The seed is the documented keyed hash.
        let mut input = RENDEZVOUS_IDENTITY_LABEL.to_vec();
        input.extend_from_slice(&7u64.to_be_bytes());
        input.extend_from_slice(&NODE);
        let seed = blake3::keyed_hash(g.rendezvous_secret.expose(), &input);
        assert_eq!(g.rendezvous_identity(7, &NODE).to_bytes(), *seed.as_bytes());
    }

    #[test]
    fn seal_keys_differ_per_window_and_group_and_from_every_other_key() {
        let g = keys(1);
        let k7 = g.rendezvous_seal_key(7);
        assert_eq!(k7, g.rendezvous_seal_key(7));
        assert_ne!(k7, g.rendezvous_seal_key(8));
        assert_ne!(k7, keys(2).rendezvous_seal_key(7));
        assert_ne!(*k7.expose(), g.rendezvous_key(7));
        assert_ne!(k7, g.rendezvous_secret);
        assert_ne!(*k7.expose(), g.rendezvous_identity(7, &NODE).to_bytes());
        let mut input = RENDEZVOUS_SEAL_LABEL.to_vec();
        input.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(
            k7.expose(),
            blake3::keyed_hash(g.rendezvous_secret.expose(), &input).as_bytes()
        );
    }

    #[test]
    fn sealed_addresses_open_only_with_their_key_and_record() {
        let g = keys(1);
        let key = g.rendezvous_seal_key(7);
        let ad = associated_data(&[1; 32], &[2; 32], 99);
        let nonce = [5u8; NONCE_LEN];
        let sealed = seal(&key, &nonce, &ad, b"an address").unwrap();
        assert_eq!(sealed.len(), b"an address".len() + SEALED_OVERHEAD);
        assert_eq!(&sealed[..NONCE_LEN], &nonce);
        assert_eq!(open(&key, &sealed, &ad).unwrap().as_slice(), b"an address");
        assert_eq!(&ad[..32], &[1; 32]);
        assert_eq!(&ad[32..64], &[2; 32]);
        assert_eq!(&ad[64..], &99u64.to_be_bytes());

        let refused = |k: &Secret32, blob: &[u8], ad: &[u8; ASSOCIATED_DATA_LEN]| {
            open(k, blob, ad).unwrap_err().kind()
        };
        // Another window's key, another group's key.
        assert_eq!(
            refused(&g.rendezvous_seal_key(8), &sealed, &ad),
            ErrorKind::Crypto
        );
        assert_eq!(
            refused(&keys(2).rendezvous_seal_key(7), &sealed, &ad),
            ErrorKind::Crypto
        );
        // The blob moved to a record of another key, provider or expiry.
        for other in [
            associated_data(&[9; 32], &[2; 32], 99),
            associated_data(&[1; 32], &[9; 32], 99),
            associated_data(&[1; 32], &[2; 32], 100),
        ] {
            assert_eq!(refused(&key, &sealed, &other), ErrorKind::Crypto);
        }
        // Any flipped byte, and every truncation, down to nothing.
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x80;
            assert_eq!(refused(&key, &t, &ad), ErrorKind::Crypto, "byte {i}");
        }
        for cut in 0..sealed.len() {
            assert_eq!(
                refused(&key, &sealed[..cut], &ad),
                ErrorKind::Crypto,
                "{cut}"
            );
        }
        // Exactly a nonce and a tag is an empty plaintext; one byte less is refused.
        let empty = seal(&key, &nonce, &ad, b"").unwrap();
        assert_eq!(empty.len(), SEALED_OVERHEAD);
        assert!(open(&key, &empty, &ad).unwrap().is_empty());
        assert_eq!(
            refused(&key, &empty[..SEALED_OVERHEAD - 1], &ad),
            ErrorKind::Crypto
        );
        // Fresh nonces: the same address sealed twice shares nothing but its length.
        let a = seal(&key, &aead::random_nonce(), &ad, b"an address").unwrap();
        let b = seal(&key, &aead::random_nonce(), &ad, b"an address").unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a[NONCE_LEN..], b[NONCE_LEN..]);
    }
}
