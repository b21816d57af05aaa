//! The upkeep a Kademlia node does on its timers: refreshing buckets no lookup went through,
//! replicating held records to the current closest nodes (republishing our own with a fresh
//! expiry), and renewing our provider announcements before they lapse.

use super::Dht;
use super::OpId;
use super::operations::Kind;
use crate::dht::id::Key;
use crate::dht::record::{ProviderRecord, Record, RecordStore};

impl<S: RecordStore> Dht<S> {
    /// Looks up a random key in every bucket, from our nearest neighbour's up, that no
    /// lookup went through for `stale_ms` (0: every such bucket, as after joining). Runs on
    /// the refresh timer; returns the operations started.
    pub fn refresh(&mut self, now_ms: u64, stale_ms: u64) -> Vec<OpId> {
        let mut ops = Vec::new();
        for index in self.routing.due_for_refresh(now_ms, stale_ms) {
            let random = self.random_key();
            let target = self.local.random_in_bucket(index, &random);
            // Best effort: at the op limit the bucket waits for the next round.
            if let Ok(op) = self.new_op(Kind::FindNode, target, now_ms) {
                ops.push(op);
            }
        }
        ops
    }

    /// Looks up a random key in each of the `buckets` farthest buckets (255, 254, ...), which
    /// between them cover all but a sliver of the network: a cheap way for a joiner to fill
    /// its table beyond what its self-lookup taught it. Returns the operations started.
    pub fn refresh_farthest(&mut self, now_ms: u64, buckets: usize) -> Vec<OpId> {
        let mut ops = Vec::new();
        for index in (256usize.saturating_sub(buckets.min(256))..256).rev() {
            let random = self.random_key();
            let target = self.local.random_in_bucket(index, &random);
            if let Ok(op) = self.new_op(Kind::FindNode, target, now_ms) {
                ops.push(op);
            }
        }
        ops
    }

    /// Replicates every record held to the current `k` closest nodes of its key, republishes
    /// our own records with a fresh expiry, and sweeps expired records. Runs on the
    /// replication timer; public so a driver or test can force a round.
    pub fn replicate(&mut self, now_ms: u64) {
        self.store.sweep(now_ms);
        let mut records = self.store.records();
        // Our own records: refresh their expiry (same seq, same value) and push them.
        let own: Vec<(Record, u64)> = self.published.values().cloned().collect();
        for (r, ttl) in own {
            let fresh = Record::sign(
                &self.secret,
                &r.name,
                &r.value,
                r.seq,
                now_ms.saturating_add(ttl.max(1)),
            );
            if let Ok(fresh) = fresh {
                self.published
                    .insert(fresh.name.clone(), (fresh.clone(), ttl));
                records.retain(|x| x.key() != fresh.key());
                records.push(fresh);
            }
        }
        records.sort_by_key(|r| r.key());
        for r in records {
            let key = r.key();
            let _ = self.new_op(Kind::Replicate { record: r }, key, now_ms);
        }
    }

    /// Re-announces every key we still provide, each with a fresh expiry (at most the
    /// provider lifetime). Runs on the re-provide timer; public so a driver or test can force
    /// a round.
    pub fn reprovide(&mut self, now_ms: u64) {
        self.providing.retain(|_, until| *until > now_ms);
        let mut providing: Vec<([u8; 32], u64)> =
            self.providing.iter().map(|(k, u)| (*k, *u)).collect();
        providing.sort_unstable();
        for (key, until) in providing {
            let ttl = until
                .saturating_sub(now_ms)
                .min(self.config.provider_ttl_ms);
            let record = ProviderRecord::sign(&self.secret, Key(key), now_ms.saturating_add(ttl));
            let _ = self.new_op(Kind::Provide { record }, Key(key), now_ms);
        }
    }

    /// A fresh pseudo-random key from the node's seed: refresh targets are reproducible
    /// from the seed, so a simulation run is too.
    fn random_key(&mut self) -> [u8; 32] {
        self.random_counter += 1;
        let mut h = blake3::Hasher::new();
        h.update(&self.random_state);
        h.update(&self.random_counter.to_be_bytes());
        *h.finalize().as_bytes()
    }
}
