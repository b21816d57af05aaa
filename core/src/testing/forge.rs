//! Hand-made entries for scripted peers, hostile-peer tests and benchmarks: a log of one author
//! in one group, signed and sealed for real, outside any store (what a peer holding a group key
//! could produce, honest or not).

use iroh::SecretKey;

use crate::Result;
use crate::crypto::{Secret32, aead};
use crate::group::GroupKeys;
use crate::wire::entry::{ENTRY_VERSION, EntryHeader, EntryKind, Id32, SignedEntry};

/// The lamport clock [`Author::next`] gives seq `n`: `LAMPORT_BASE + n`, ahead of what a fresh
/// node publishes, so a forged log interleaves after the node's own first entries.
pub const LAMPORT_BASE: u64 = 1_000;

/// Where an author's nonces and timestamps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Determinism {
    /// Derived from the author, group and seq; timestamps from the lamport clock: a seeded
    /// run (the simulator) replays byte for byte.
    Seeded,
    /// Random nonces and wall-clock timestamps, as a real node seals.
    Live,
}

/// One author's log in one group, built entry by entry.
#[derive(Debug)]
pub struct Author {
    secret: SecretKey,
    keys: GroupKeys,
    seq: u64,
    prev: Id32,
    determinism: Determinism,
}

impl Author {
    /// A fresh log (next seq 1) of `secret` in the group of `keys`, with nonces derived from
    /// the author, group and seq, so a run stays a function of its seed.
    pub fn new(secret: SecretKey, keys: GroupKeys) -> Self {
        Self {
            secret,
            keys,
            seq: 0,
            prev: [0; 32],
            determinism: Determinism::Seeded,
        }
    }

    /// A fresh log of a new random author in the group of `keys`, sealed as a live node
    /// seals: random nonces, wall-clock timestamps.
    pub fn random(keys: &GroupKeys) -> Self {
        Self {
            determinism: Determinism::Live,
            ..Self::new(
                SecretKey::from_bytes(Secret32::random().expose()),
                keys.clone(),
            )
        }
    }

    /// The author's id (its public key), as entry headers carry it.
    pub fn id(&self) -> Id32 {
        *self.secret.public().as_bytes()
    }

    /// The author's signing key (to forge a signature over a tampered header).
    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// The group's keys this author seals under.
    pub fn keys(&self) -> &GroupKeys {
        &self.keys
    }

    /// The group id.
    pub fn group(&self) -> Id32 {
        self.keys.id.0
    }

    /// The last seq written (0 before the first entry).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The id of the last entry written (zeros before the first).
    pub fn prev(&self) -> Id32 {
        self.prev
    }

    /// A data header of this author for `seq` after `prev` with lamport clock `lamport`.
    pub fn header_at(&self, seq: u64, prev: Id32, lamport: u64) -> EntryHeader {
        let (nonce, timestamp_ms) = match self.determinism {
            Determinism::Seeded => (self.derived_nonce(seq), 1_700_000_000_000 + lamport),
            Determinism::Live => (aead::random_nonce(), wall_clock_ms()),
        };
        EntryHeader {
            version: ENTRY_VERSION,
            kind: EntryKind::Data,
            group_ref: self.keys.entry_group,
            author: self.id(),
            seq,
            prev,
            lamport,
            epoch: self.keys.epoch,
            timestamp_ms,
            nonce,
        }
    }

    /// A data header for `seq` after `prev`, lamport [`LAMPORT_BASE`]` + seq` (a starting
    /// point to tamper with).
    pub fn header(&self, seq: u64, prev: Id32) -> EntryHeader {
        self.header_at(seq, prev, LAMPORT_BASE + seq)
    }

    /// `header` sealed under the group's content key and signed by this author.
    pub fn seal(&self, header: EntryHeader, payload: &[u8]) -> Result<SignedEntry> {
        SignedEntry::seal(header, &self.keys.content_key, &self.secret, payload)
    }

    /// Seqs 1 to `n` of this author's log, lamport clock = seq, with `payload(seq)`, each
    /// linking to the entry before as sent: the seqs `bad` picks carry a corrupted signature
    /// (the last byte flipped), as a member forging a run with unsigned entries makes it.
    pub fn forged_run(
        &self,
        n: u64,
        payload: impl Fn(u64) -> Vec<u8>,
        bad: impl Fn(u64) -> bool,
    ) -> Result<Vec<SignedEntry>> {
        let mut out: Vec<SignedEntry> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map(|e| *e.id()).unwrap_or([0u8; 32]);
            let entry = self.seal(self.header_at(seq, prev, seq), &payload(seq))?;
            out.push(if bad(seq) {
                let mut raw = entry.into_raw();
                if let Some(last) = raw.last_mut() {
                    *last ^= 0x01;
                }
                SignedEntry::decode(raw, usize::MAX)
                    .map_err(|e| crate::CoveyError::invalid(e.to_string()))?
            } else {
                entry
            });
        }
        Ok(out)
    }

    /// The next entry of the log, without advancing it (a candidate to tamper with).
    pub fn peek(&self, payload: &[u8]) -> Result<SignedEntry> {
        self.seal(self.header(self.seq + 1, self.prev), payload)
    }

    /// The next entry of the log with lamport [`LAMPORT_BASE`]` + seq`.
    pub fn next(&mut self, payload: &[u8]) -> Result<SignedEntry> {
        let entry = self.peek(payload)?;
        Ok(self.advance(entry))
    }

    /// The next entry of the log with lamport clock `lamport`.
    pub fn next_at(&mut self, lamport: u64, payload: &[u8]) -> Result<SignedEntry> {
        let entry = self.seal(self.header_at(self.seq + 1, self.prev, lamport), payload)?;
        Ok(self.advance(entry))
    }

    /// The next `n` entries with `payload`, lamport clocks counting up from `first_lamport`.
    pub fn chain(
        &mut self,
        n: usize,
        first_lamport: u64,
        payload: &[u8],
    ) -> Result<Vec<SignedEntry>> {
        (0..n as u64)
            .map(|i| self.next_at(first_lamport + i, payload))
            .collect()
    }

    /// The next `n` entries, each with a distinct payload of at least `size` bytes.
    pub fn batch(&mut self, n: usize, size: usize) -> Result<Vec<SignedEntry>> {
        (0..n)
            .map(|i| {
                let mut payload = format!("entry-{}-{i}-", self.seq).into_bytes();
                payload.resize(size.max(payload.len()), b'.');
                self.next(&payload)
            })
            .collect()
    }

    fn advance(&mut self, entry: SignedEntry) -> SignedEntry {
        self.seq = entry.header().seq;
        self.prev = *entry.id();
        entry
    }

    fn derived_nonce(&self, seq: u64) -> [u8; aead::NONCE_LEN] {
        let mut hasher = blake3::Hasher::new();
        // The label is kept from when this lived in covey-sim: seeded runs replay unchanged.
        hasher.update(b"covey-sim/forge-nonce");
        hasher.update(&self.id());
        hasher.update(&self.keys.id.0);
        hasher.update(&seq.to_be_bytes());
        let mut nonce = [0u8; aead::NONCE_LEN];
        nonce.copy_from_slice(&hasher.finalize().as_bytes()[..aead::NONCE_LEN]);
        nonce
    }
}

/// The wire bytes of `entries` (owned or borrowed), as an `Entries` frame carries them.
pub fn raws<E: std::borrow::Borrow<SignedEntry>>(entries: &[E]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| e.borrow().raw().to_vec()).collect()
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> GroupKeys {
        GroupKeys::from_root(&Secret32::from_bytes([9; 32]))
    }

    #[test]
    fn seeded_authors_replay_and_live_ones_do_not() {
        let secret = SecretKey::from_bytes(&[4; 32]);
        let a = Author::new(secret.clone(), keys())
            .next_at(5, b"x")
            .unwrap();
        let b = Author::new(secret, keys()).next_at(5, b"x").unwrap();
        assert_eq!(a.raw(), b.raw());
        let live = Author::random(&keys());
        let first = live.peek(b"x").unwrap();
        let again = live.peek(b"x").unwrap();
        assert_ne!(first.raw(), again.raw(), "live nonces are fresh each time");
    }

    #[test]
    fn a_log_chains_and_counts() {
        let mut author = Author::random(&keys());
        let entries = author.batch(3, 16).unwrap();
        assert_eq!(author.seq(), 3);
        assert_eq!(author.prev(), *entries[2].id());
        assert_eq!(entries[1].header().prev, *entries[0].id());
        assert_eq!(entries[2].header().lamport, LAMPORT_BASE + 3);
        let key = &author.keys().content_key;
        assert!(entries.iter().all(|e| e.open(key).unwrap().len() >= 16));
    }
}
