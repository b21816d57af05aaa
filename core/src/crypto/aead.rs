//! XChaCha20-Poly1305 with a random 24-byte nonce per message.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::Secret32;
use crate::error::{CoveyError, Result};

/// Nonce length of XChaCha20-Poly1305.
pub const NONCE_LEN: usize = 24;
/// Authentication tag length appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// A fresh random nonce; 192 bits make random nonces safe for any realistic message count.
pub fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    nonce
}

fn cipher(key: &Secret32) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&Key::from(*key.expose()))
}

/// Encrypts `plaintext`, binding `aad`; returns ciphertext with the tag appended.
pub fn seal(
    key: &Secret32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    cipher(key)
        .encrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CoveyError::crypto("encryption failed"))
}

/// Decrypts and authenticates `ciphertext` under `aad`.
pub fn open(
    key: &Secret32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    cipher(key)
        .decrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CoveyError::crypto("decryption failed: wrong key or tampered ciphertext"))
}
