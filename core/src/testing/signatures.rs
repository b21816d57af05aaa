//! The Ed25519 edge cases on which lax verifiers disagree (PROTOCOL.md, "Entries whose
//! signature must be refused"), made from a real entry: each result decodes as an entry, and a
//! node that verifies strictly refuses its signature.

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use iroh::SecretKey;
use sha2::{Digest, Sha512};

use crate::crypto::{Secret32, aead};
use crate::error::Result;
use crate::wire::entry::{HEADER_LEN, SIGNATURE_LEN, SignedEntry, signing_message};

/// The Ed25519 group order L, little-endian.
pub const ORDER_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The identity point's encoding: a public key of order 1.
pub const SMALL_ORDER_KEY: [u8; 32] = {
    let mut b = [0u8; 32];
    b[0] = 1;
    b
};

/// Offset of the author field in an entry header (after version, kind and group id).
const AUTHOR_AT: usize = 2 + 32;

/// `R = B`, `S = 1`: under [`SMALL_ORDER_KEY`] this satisfies the cofactorless equation for
/// every message, so only a check that refuses small-order keys catches it.
pub fn weak_key_signature() -> [u8; SIGNATURE_LEN] {
    let mut signature = [0u8; SIGNATURE_LEN];
    signature[..32].copy_from_slice(EdwardsPoint::mul_base(&Scalar::ONE).compress().as_bytes());
    signature[32] = 1;
    signature
}

/// `signature` with `S + L` in place of `S`: the same scalar, not canonically encoded.
pub fn non_canonical(signature: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut out = [0u8; SIGNATURE_LEN];
    out.copy_from_slice(&signature[..SIGNATURE_LEN]);
    let mut carry = 0u16;
    for (i, limb) in ORDER_L.iter().enumerate() {
        let sum = u16::from(out[32 + i]) + u16::from(*limb) + carry;
        out[32 + i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    // S < L < 2^253, so S + L < 2^254: no carry out.
    out
}

fn body(entry: &SignedEntry) -> &[u8] {
    &entry.raw()[..entry.raw().len() - SIGNATURE_LEN]
}

fn with_signature(body: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(signature);
    out
}

/// `entry` with its signature's `S` replaced by `S + L`.
pub fn with_non_canonical_s(entry: &SignedEntry) -> Vec<u8> {
    let raw = entry.raw();
    with_signature(
        body(entry),
        &non_canonical(&raw[raw.len() - SIGNATURE_LEN..]),
    )
}

/// `entry` claimed by [`SMALL_ORDER_KEY`]: the header's author replaced, `plaintext` sealed
/// again under `content_key` with that header, and signed with [`weak_key_signature`].
pub fn by_small_order_key(
    entry: &SignedEntry,
    content_key: &Secret32,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut body = entry.raw()[..HEADER_LEN].to_vec();
    body[AUTHOR_AT..AUTHOR_AT + 32].copy_from_slice(&SMALL_ORDER_KEY);
    let ciphertext = aead::seal(content_key, &entry.header().nonce, &body, plaintext)?;
    body.extend_from_slice(&ciphertext);
    Ok(with_signature(&body, &weak_key_signature()))
}

/// `entry`, which `author` signed, signed again by `author` with the nonce point `R + T` for a
/// point `T` of order 8 and `S = r + k·a` for that point: valid under the cofactored equation,
/// invalid under the cofactorless one.
pub fn with_mixed_order_r(entry: &SignedEntry, author: &SecretKey) -> Vec<u8> {
    let message = signing_message(body(entry));
    let expanded = Sha512::digest(author.to_bytes());
    let mut scalar = [0u8; 32];
    scalar.copy_from_slice(&expanded[..32]);
    scalar[0] &= 248;
    scalar[31] &= 127;
    scalar[31] |= 64;
    let a = Scalar::from_bytes_mod_order(scalar);
    let r = wide_scalar(&[&expanded[32..], &message]);
    let mixed = (EdwardsPoint::mul_base(&r) + EIGHT_TORSION[1]).compress();
    let k = challenge(mixed.as_bytes(), author.public().as_bytes(), &message);
    let s = r + k * a;
    let mut signature = [0u8; SIGNATURE_LEN];
    signature[..32].copy_from_slice(mixed.as_bytes());
    signature[32..].copy_from_slice(s.as_bytes());
    with_signature(body(entry), &signature)
}

/// The Ed25519 challenge `k = SHA-512(R || A || M) mod L`.
pub fn challenge(r: &[u8; 32], public: &[u8; 32], message: &[u8]) -> Scalar {
    wide_scalar(&[r, public, message])
}

fn wide_scalar(parts: &[&[u8]]) -> Scalar {
    let mut h = Sha512::new();
    for part in parts {
        h.update(part);
    }
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&h.finalize());
    Scalar::from_bytes_mod_order_wide(&wide)
}
