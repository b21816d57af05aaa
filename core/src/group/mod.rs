//! Group secrets and the keys derived from them.

use std::fmt;
use std::str::FromStr;

use crate::crypto::{Secret32, kdf};
use crate::error::{CoveyError, Result};
use crate::wire::entry::Id32;

pub mod admission;
pub mod control;
pub mod invite;
pub mod membership;
mod passphrase;
pub mod rendezvous;
pub mod seal;

pub use passphrase::{MIN_PASSPHRASE_SCORE, check_passphrase_strength};

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
    /// Joined by invite; an admin manages members.
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
    /// Keyed-hash key for [`GroupKeys::session_tag`].
    pub session_tag_key: Secret32,
    /// Keyed-hash key for [`GroupKeys::rendezvous_key`], derived from the epoch secret.
    pub rendezvous_secret: Secret32,
    /// What entry headers carry in place of the group id: only members (and a node holding
    /// the group's relay capability) can compute it, and it is not the id apps show.
    pub entry_group: Id32,
    /// Keyed-hash key of the group's membership proofs ([`GroupKeys::pair`]).
    pub membership_key: Secret32,
    /// AEAD key of a managed group's control entries: derived from the root secret, so every
    /// member can read the whole membership history whichever epochs it holds.
    pub control_key: Secret32,
}

/// What names and proves a group between one pair of nodes: the session tag frames carry,
/// and the key of the membership proof a node must give before the pair reveals anything of
/// the group to each other. Both are keyed hashes of the pair, so they differ for every pair.
#[derive(Clone, PartialEq, Eq)]
pub struct PairKeys {
    /// The group's name in frames between the pair.
    pub tag: SessionTag,
    /// The key a membership proof is a keyed hash under ([`PairKeys::proof`]).
    pub proof_key: Secret32,
}

impl fmt::Debug for PairKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairKeys").field("tag", &self.tag).finish_non_exhaustive()
    }
}

/// Which side of a session a membership proof speaks for: part of what is hashed, so a peer
/// cannot answer a proof by sending it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofRole {
    /// The node that dialed the connection.
    Dialer = 0,
    /// The node that accepted it.
    Acceptor = 1,
}

/// The label hashed into every membership proof before the role and the session binding.
pub const MEMBERSHIP_PROOF_LABEL: &str = "covey/v2/membership-proof";

impl PairKeys {
    /// The membership proof `role` gives in the session whose TLS connection exports
    /// `binding`: `BLAKE3-keyed(proof_key, label || role || binding)`. Only members can
    /// compute it, and it is worth nothing in another session, to another pair, or from
    /// the other side.
    pub fn proof(&self, role: ProofRole, binding: &[u8; 32]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(self.proof_key.expose());
        hasher.update(MEMBERSHIP_PROOF_LABEL.as_bytes());
        hasher.update(&[role as u8]);
        hasher.update(binding);
        *hasher.finalize().as_bytes()
    }
}

/// The name a group goes by in the sync frames between one pair of nodes
/// ([`GroupKeys::session_tag`]). A type of its own so a wire tag can never be taken for a
/// group id: the two meet only where a transport renames a frame's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionTag(pub Id32);

impl SessionTag {
    /// The tag's bytes, as they appear on the wire.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn as_bytes(&self) -> &Id32 {
        &self.0
    }
}

impl AsRef<[u8]> for SessionTag {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Length of one rendezvous time window: fixed by the protocol, so every member derives the
/// same key for the same moment. One hour, the default provider-record lifetime.
pub const RENDEZVOUS_WINDOW_MS: u64 = 3_600_000;

/// The rendezvous window that `unix_ms` falls in.
pub fn rendezvous_window(unix_ms: u64) -> u64 {
    unix_ms / RENDEZVOUS_WINDOW_MS
}

impl GroupKeys {
    /// Derives the epoch-0 keys from a group's root secret.
    pub fn from_root(root: &Secret32) -> Self {
        Self {
            id: GroupId(*kdf::derive(root, kdf::LABEL_GROUP_ID).expose()),
            epoch: 0,
            content_key: kdf::derive(root, kdf::LABEL_CONTENT_KEY),
            idempotency_key: kdf::derive(root, kdf::LABEL_IDEMPOTENCY_KEY),
            session_tag_key: kdf::derive(root, kdf::LABEL_SESSION_TAG),
            rendezvous_secret: kdf::derive(root, kdf::LABEL_RENDEZVOUS),
            entry_group: *kdf::derive(root, kdf::LABEL_ENTRY_GROUP).expose(),
            membership_key: kdf::derive(root, kdf::LABEL_MEMBERSHIP),
            control_key: kdf::derive(root, kdf::LABEL_CONTROL_KEY),
        }
    }

    /// These keys at epoch `epoch`, whose secret is `secret`: the content key and the
    /// rendezvous key move with the epoch; everything derived from the root stays. Epoch 0's
    /// secret is the root itself, so `from_root(r).at_epoch(0, &r)` is `from_root(r)`.
    pub fn at_epoch(&self, epoch: u64, secret: &Secret32) -> Self {
        Self {
            epoch,
            content_key: kdf::derive(secret, kdf::LABEL_CONTENT_KEY),
            rendezvous_secret: kdf::derive(secret, kdf::LABEL_RENDEZVOUS),
            ..self.clone()
        }
    }

    /// The DHT provider key members announce themselves under during rendezvous window
    /// `window` (see [`rendezvous_window`]): keyed BLAKE3 of the window number (u64,
    /// big-endian) under a key derived from the epoch secret. Only members can compute it,
    /// and keys of two windows are unlinkable to anyone else, so an outsider can neither find
    /// a group's members nor follow one announcement from hour to hour.
    pub fn rendezvous_key(&self, window: u64) -> [u8; 32] {
        *blake3::keyed_hash(self.rendezvous_secret.expose(), &window.to_be_bytes()).as_bytes()
    }

    /// The name this group goes by in sync frames between nodes `a` and `b` (in either order):
    /// a keyed hash of the pair. Only members can compute it, so a peer outside the group
    /// learns neither the group id nor that this node is in it, and the same group looks
    /// unrelated between every other pair of nodes.
    pub fn session_tag(&self, a: &Id32, b: &Id32) -> SessionTag {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut hasher = blake3::Hasher::new_keyed(self.session_tag_key.expose());
        hasher.update(lo);
        hasher.update(hi);
        SessionTag(*hasher.finalize().as_bytes())
    }

    /// The tag and membership-proof key of this group between nodes `a` and `b` (in either
    /// order): the tag is [`GroupKeys::session_tag`]; the proof key is the same keyed hash of
    /// the pair under the membership key.
    pub fn pair(&self, a: &Id32, b: &Id32) -> PairKeys {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut hasher = blake3::Hasher::new_keyed(self.membership_key.expose());
        hasher.update(lo);
        hasher.update(hi);
        PairKeys {
            tag: self.session_tag(a, b),
            proof_key: Secret32::from_bytes(*hasher.finalize().as_bytes()),
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
    fn session_tags_are_symmetric_per_pair_and_hide_the_group_id() {
        let keys = GroupKeys::from_root(&Secret32::from_bytes([1; 32]));
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        assert_eq!(keys.session_tag(&a, &b), keys.session_tag(&b, &a));
        assert_ne!(keys.session_tag(&a, &b), keys.session_tag(&a, &c));
        assert_ne!(keys.session_tag(&a, &b).0, keys.id.0);
        let other = GroupKeys::from_root(&Secret32::from_bytes([2; 32]));
        assert_ne!(keys.session_tag(&a, &b), other.session_tag(&a, &b));
    }

    #[test]
    fn rendezvous_keys_change_per_window_and_per_group() {
        let keys = GroupKeys::from_root(&Secret32::from_bytes([1; 32]));
        let other = GroupKeys::from_root(&Secret32::from_bytes([2; 32]));
        assert_eq!(keys.rendezvous_key(7), keys.rendezvous_key(7));
        assert_ne!(keys.rendezvous_key(7), keys.rendezvous_key(8));
        assert_ne!(keys.rendezvous_key(7), other.rendezvous_key(7));
        assert_ne!(keys.rendezvous_key(7), keys.id.0);
        assert_eq!(rendezvous_window(RENDEZVOUS_WINDOW_MS - 1), 0);
        assert_eq!(rendezvous_window(RENDEZVOUS_WINDOW_MS), 1);
    }

    #[test]
    fn group_id_parses_its_display() {
        let id = GroupId([0xab; 32]);
        assert_eq!(id.to_string().parse::<GroupId>().unwrap(), id);
        assert!("zz".parse::<GroupId>().is_err());
        assert!("ab".repeat(31).parse::<GroupId>().is_err());
    }
}
