//! Hand-made entries for scripted peers: a log of one author in one group, signed and sealed
//! for real, outside any store (what a hostile peer holding a group key could produce).

use crate::Result;
use crate::group::GroupKeys;
use crate::wire::entry::{ENTRY_VERSION, EntryHeader, EntryKind, Id32, SignedEntry};
use iroh::SecretKey;

/// One author's log in one group, built entry by entry.
#[derive(Debug)]
pub struct Author {
    secret: SecretKey,
    keys: GroupKeys,
    seq: u64,
    prev: Id32,
}

impl Author {
    /// A fresh log (next seq 1) of `secret` in the group of `keys`.
    pub fn new(secret: SecretKey, keys: GroupKeys) -> Self {
        Self {
            secret,
            keys,
            seq: 0,
            prev: [0; 32],
        }
    }

    /// The author's id (its public key).
    pub fn id(&self) -> Id32 {
        *self.secret.public().as_bytes()
    }

    /// The next entry of the log with this lamport clock; the nonce is derived from the
    /// author, group and seq, so a run stays a function of its seed.
    pub fn next(&mut self, lamport: u64, payload: &[u8]) -> Result<SignedEntry> {
        let seq = self.seq + 1;
        let mut hasher = blake3::Hasher::new();
        // The label is kept from when this lived in covey-sim: seeded runs replay unchanged.
        hasher.update(b"covey-sim/forge-nonce");
        hasher.update(&self.id());
        hasher.update(&self.keys.id.0);
        hasher.update(&seq.to_be_bytes());
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&hasher.finalize().as_bytes()[..24]);
        let header = EntryHeader {
            version: ENTRY_VERSION,
            kind: EntryKind::Data,
            group_id: self.keys.id.0,
            author: self.id(),
            seq,
            prev: self.prev,
            lamport,
            epoch: self.keys.epoch,
            timestamp_ms: 1_700_000_000_000 + lamport,
            nonce,
        };
        let entry = SignedEntry::seal(header, &self.keys.content_key, &self.secret, payload)?;
        self.seq = seq;
        self.prev = *entry.id();
        Ok(entry)
    }

    /// The next `n` entries, lamport clocks counting up from `first_lamport`.
    pub fn chain(
        &mut self,
        n: usize,
        first_lamport: u64,
        payload: &[u8],
    ) -> Result<Vec<SignedEntry>> {
        (0..n as u64)
            .map(|i| self.next(first_lamport + i, payload))
            .collect()
    }
}
