//! Group secrets and the keys derived from them.

use std::fmt;
use std::str::FromStr;

use crate::crypto::{Secret32, kdf};
use crate::error::{CoveyError, Result};
use crate::wire::entry::Id32;

/// A group's public id: HKDF of its root secret, so only members can compute it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub Id32);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({})", &hex::encode(self.0)[..12])
    }
}

impl FromStr for GroupId {
    type Err = CoveyError;

    fn from_str(s: &str) -> Result<Self> {
        parse_id32(s, "group id").map(GroupId)
    }
}

/// Parses 64 hex characters into 32 bytes, naming `what` in the error.
pub fn parse_id32(s: &str, what: &str) -> Result<Id32> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| CoveyError::invalid(format!("{what} must be 64 hex characters, got {s:?}")))?;
    Ok(out)
}

/// How members join a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// Anyone with the passphrase and the name is a member.
    Passphrase,
    /// Joined by invite; an admin manages members (a later release).
    Managed,
}

impl GroupKind {
    /// The value stored in the database.
    pub fn to_byte(self) -> u8 {
        match self {
            GroupKind::Passphrase => 0,
            GroupKind::Managed => 1,
        }
    }

    /// Reads the stored value.
    pub fn from_byte(b: u8) -> Result<Self> {
        match b {
            0 => Ok(GroupKind::Passphrase),
            1 => Ok(GroupKind::Managed),
            _ => Err(CoveyError::storage(format!("unknown group kind {b}"))),
        }
    }
}

/// The keys a member holds for one group at its current epoch.
#[derive(Debug, Clone)]
pub struct GroupKeys {
    /// The group id.
    pub id: GroupId,
    /// Current epoch.
    pub epoch: u64,
    /// AEAD key for entry payloads of this epoch.
    pub content_key: Secret32,
    /// Keyed-hash key binding client ids to payloads without storing plaintext hashes.
    pub idempotency_key: Secret32,
}

impl GroupKeys {
    /// Derives the epoch-0 keys from a group's root secret.
    pub fn from_root(root: &Secret32) -> Self {
        Self {
            id: GroupId(*kdf::derive(root, kdf::LABEL_GROUP_ID).expose()),
            epoch: 0,
            content_key: kdf::derive(root, kdf::LABEL_CONTENT_KEY),
            idempotency_key: kdf::derive(root, kdf::LABEL_IDEMPOTENCY_KEY),
        }
    }

    /// Keyed BLAKE3 of a payload, stored next to a client id.
    pub fn payload_mac(&self, payload: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(self.idempotency_key.expose(), payload).as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_domain_separated() {
        let root = Secret32::from_bytes([1; 32]);
        let keys = GroupKeys::from_root(&root);
        assert_ne!(&keys.id.0, keys.content_key.expose());
        assert_ne!(keys.content_key, keys.idempotency_key);
        let other = GroupKeys::from_root(&Secret32::from_bytes([2; 32]));
        assert_ne!(keys.id, other.id);
    }

    #[test]
    fn group_id_parses_its_display() {
        let id = GroupId([0xab; 32]);
        assert_eq!(id.to_string().parse::<GroupId>().unwrap(), id);
        assert!("zz".parse::<GroupId>().is_err());
        assert!("ab".repeat(31).parse::<GroupId>().is_err());
    }
}
