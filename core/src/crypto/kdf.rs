//! Key derivation: Argon2id for passphrases, HKDF-SHA256 for everything derived from a secret.

use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, Version};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::Secret32;
use crate::error::{CoveyError, Result};

/// Argon2id memory cost in KiB, fixed by protocol v1 (64 MiB): every device must derive the
/// same key from the same passphrase, so this is never tuned per device.
pub const ARGON2_M_KIB: u32 = 64 * 1024;
/// Argon2id passes, fixed by protocol v1.
pub const ARGON2_T: u32 = 3;
/// Argon2id lanes, fixed by protocol v1.
pub const ARGON2_P: u32 = 1;

/// Label for the salt of passphrase groups.
pub const LABEL_PASSPHRASE_SALT: &str = "covey/v1/passphrase-salt";
/// Label deriving a group's public id from its root secret.
pub const LABEL_GROUP_ID: &str = "covey/v1/group-id";
/// Label deriving a group's content (AEAD) key from its epoch secret.
pub const LABEL_CONTENT_KEY: &str = "covey/v1/content-key";
/// Label deriving the key that names a group on the wire between two nodes.
pub const LABEL_SESSION_TAG: &str = "covey/v1/session-tag";
/// Label deriving the key that hashes client-id payloads for idempotency checks.
pub const LABEL_IDEMPOTENCY_KEY: &str = "covey/v1/idempotency-key";
/// Label deriving the key members announce themselves under in the DHT (group rendezvous).
pub const LABEL_RENDEZVOUS: &str = "covey/v1/rendezvous";
/// Label deriving the opaque group reference every entry header carries (protocol v2): a
/// value of its own, so a header names neither the group id apps see and share nor any other
/// key.
pub const LABEL_ENTRY_GROUP: &str = "covey/v2/entry-group";
/// Label deriving the key of a group's membership proofs (protocol v2).
pub const LABEL_MEMBERSHIP: &str = "covey/v2/membership";
/// Label deriving the AEAD key of a managed group's control entries (protocol v2).
pub const LABEL_CONTROL_KEY: &str = "covey/v2/control-key";

/// The salt of a passphrase group: BLAKE3 of the salt label followed by the group name,
/// so the same passphrase under two names gives two unrelated groups.
pub fn passphrase_salt(name: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(LABEL_PASSPHRASE_SALT.as_bytes());
    hasher.update(name.as_bytes());
    *hasher.finalize().as_bytes()
}

/// Argon2id (version 0x13) with explicit parameters and no secret or associated data; the
/// protocol uses [`passphrase_root`]. Equivalent to [`argon2id_keyed`] with both empty.
pub fn argon2id(password: &[u8], salt: &[u8], m_kib: u32, t: u32, p: u32) -> Result<Secret32> {
    argon2id_keyed(password, salt, &[], &[], m_kib, t, p)
}

/// Argon2id (version 0x13) in its general RFC 9106 form, producing a 32-byte tag.
///
/// `secret` is the optional key `K` (empty for none) and `associated_data` the optional
/// associated data `X` (empty for none, at most 32 bytes); `m_kib` is the memory cost in
/// KiB, `t` the number of passes and `p` the number of lanes. An empty secret and empty
/// associated data give exactly the unkeyed [`argon2id`].
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when `secret` or
/// `associated_data` is too long, and [`ErrorKind::Crypto`](crate::ErrorKind::Crypto) when
/// the cost parameters are out of range or hashing fails (for example a salt shorter than
/// 8 bytes).
pub fn argon2id_keyed(
    password: &[u8],
    salt: &[u8],
    secret: &[u8],
    associated_data: &[u8],
    m_kib: u32,
    t: u32,
    p: u32,
) -> Result<Secret32> {
    let data = AssociatedData::new(associated_data)
        .map_err(|e| CoveyError::invalid(format!("argon2 associated data: {e}")))?;
    let params = ParamsBuilder::new()
        .m_cost(m_kib)
        .t_cost(t)
        .p_cost(p)
        .data(data)
        .output_len(32)
        .build()
        .map_err(|e| CoveyError::crypto(format!("argon2 parameters: {e}")))?;
    let argon = Argon2::new_with_secret(secret, Algorithm::Argon2id, Version::V0x13, params)
        .map_err(|e| CoveyError::invalid(format!("argon2 secret: {e}")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password, salt, out.as_mut())
        .map_err(|e| CoveyError::crypto(format!("argon2: {e}")))?;
    Ok(Secret32::from_bytes(*out))
}

/// The epoch-0 root secret of a passphrase group (DESIGN.md, Groups).
pub fn passphrase_root(passphrase: &str, name: &str) -> Result<Secret32> {
    if passphrase.is_empty() {
        return Err(CoveyError::invalid("passphrase must not be empty"));
    }
    argon2id(
        passphrase.as_bytes(),
        &passphrase_salt(name),
        ARGON2_M_KIB,
        ARGON2_T,
        ARGON2_P,
    )
}

/// Largest output HKDF-SHA256 can produce: 255 blocks of 32 bytes (RFC 5869, section 2.3).
pub const HKDF_SHA256_MAX_OUT: usize = 255 * 32;

/// HKDF-SHA256 (RFC 5869): extract with `salt` (`None` means 32 zero bytes) from `ikm`, then
/// expand with `info` to fill `out` exactly.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when `out` is longer than
/// [`HKDF_SHA256_MAX_OUT`] (8160) bytes; `out` is left untouched then.
pub fn hkdf_sha256(salt: Option<&[u8]>, ikm: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    if out.len() > HKDF_SHA256_MAX_OUT {
        return Err(CoveyError::invalid(format!(
            "HKDF-SHA256 output of {} bytes exceeds the {HKDF_SHA256_MAX_OUT}-byte limit",
            out.len()
        )));
    }
    Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, out)
        .map_err(|e| CoveyError::invalid(format!("HKDF-SHA256 expand: {e}")))
}

/// HKDF-SHA256 of `secret` with no salt and `label` as info, producing 32 bytes.
pub fn derive(secret: &Secret32, label: &str) -> Secret32 {
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 255 * 32 byte limit, so this cannot fail.
    if hkdf_sha256(None, secret.expose(), label.as_bytes(), out.as_mut()).is_err() {
        unreachable!("HKDF-SHA256 expand of 32 bytes");
    }
    Secret32::from_bytes(*out)
}
