//! The Kademlia routing table: 256 buckets of up to `k` contacts, least-recently-seen first,
//! with ping-before-evict so long-lived contacts are kept, and a replacement cache per bucket.

use super::id::Key;

/// One known peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// The peer's id.
    pub id: Key,
    /// When we last heard from it (driver clock, ms).
    pub last_seen_ms: u64,
    /// Requests to it that failed since it last answered.
    pub failures: u8,
}

/// A bucket's pending liveness check of its least-recently-seen contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingPing {
    target: Key,
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Contact>,
    /// Newcomers that found the bucket full, most recent last.
    replacements: Vec<Key>,
    pending: Option<PendingPing>,
    /// Last time a lookup went through this bucket's range (for refresh).
    last_refresh_ms: u64,
}

/// What happened to a contact offered to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// It was already there; moved to most-recently-seen.
    Refreshed,
    /// It was added to a bucket with room.
    Added,
    /// The bucket is full: ping this least-recently-seen contact; if it fails to answer it is
    /// evicted and the newest replacement takes its place. The newcomer waits in the
    /// replacement cache.
    PingThenMaybeEvict(Key),
    /// The bucket is full and already checking a contact; the newcomer waits in the
    /// replacement cache.
    Cached,
    /// Our own id: never stored.
    IsSelf,
}

/// The routing table of one node.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    local: Key,
    k: usize,
    buckets: Vec<Bucket>,
}

/// Consecutive failures after which a contact is dropped even without a replacement.
pub const MAX_FAILURES: u8 = 3;

impl RoutingTable {
    /// An empty table for `local` with buckets of `k`.
    pub fn new(local: Key, k: usize) -> Self {
        Self {
            local,
            k: k.max(1),
            buckets: vec![Bucket::default(); 256],
        }
    }

    /// Our own id.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn local(&self) -> &Key {
        &self.local
    }

    /// Offers a contact we just heard from at `now_ms`.
    pub fn insert(&mut self, id: Key, now_ms: u64) -> Insert {
        let Some(index) = self.local.bucket_index(&id) else {
            return Insert::IsSelf;
        };
        let k = self.k;
        let bucket = &mut self.buckets[index];
        if let Some(pos) = bucket.entries.iter().position(|c| c.id == id) {
            let mut c = bucket.entries.remove(pos);
            c.last_seen_ms = now_ms;
            c.failures = 0;
            bucket.entries.push(c);
            if bucket.pending.is_some_and(|p| p.target == id) {
                bucket.pending = None;
            }
            return Insert::Refreshed;
        }
        if bucket.entries.len() < k {
            bucket.replacements.retain(|r| *r != id);
            bucket.entries.push(Contact {
                id,
                last_seen_ms: now_ms,
                failures: 0,
            });
            return Insert::Added;
        }
        bucket.replacements.retain(|r| *r != id);
        bucket.replacements.push(id);
        if bucket.replacements.len() > k {
            bucket.replacements.remove(0);
        }
        if bucket.pending.is_some() {
            return Insert::Cached;
        }
        let oldest = bucket.entries[0].id;
        bucket.pending = Some(PendingPing { target: oldest });
        Insert::PingThenMaybeEvict(oldest)
    }

    /// A request to `id` failed (timeout). A contact under an eviction ping, or one with a
    /// replacement waiting, or one that failed [`MAX_FAILURES`] times, is removed; returns
    /// whether it was.
    pub fn on_failure(&mut self, id: &Key) -> bool {
        let Some(index) = self.local.bucket_index(id) else {
            return false;
        };
        let bucket = &mut self.buckets[index];
        let Some(pos) = bucket.entries.iter().position(|c| c.id == *id) else {
            return false;
        };
        let pinged = bucket.pending.is_some_and(|p| p.target == *id);
        if pinged {
            bucket.pending = None;
        }
        let c = &mut bucket.entries[pos];
        c.failures = c.failures.saturating_add(1);
        let remove = pinged || !bucket.replacements.is_empty() || c.failures >= MAX_FAILURES;
        if remove {
            let removed = bucket.entries.remove(pos);
            if let Some(newcomer) = bucket.replacements.pop() {
                bucket.entries.push(Contact {
                    id: newcomer,
                    last_seen_ms: removed.last_seen_ms,
                    failures: 0,
                });
            }
        }
        remove
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: &Key) -> bool {
        self.local
            .bucket_index(id)
            .is_some_and(|i| self.buckets[i].entries.iter().any(|c| c.id == *id))
    }

    /// Removes `id` outright (for example when it proved hostile); returns whether it was there.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn remove(&mut self, id: &Key) -> bool {
        let Some(index) = self.local.bucket_index(id) else {
            return false;
        };
        let bucket = &mut self.buckets[index];
        let before = bucket.entries.len();
        bucket.entries.retain(|c| c.id != *id);
        bucket.replacements.retain(|r| r != id);
        before != bucket.entries.len()
    }

    /// Up to `n` contacts closest to `target`, closest first.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<Key> {
        let mut all: Vec<(super::id::Distance, Key)> = self
            .buckets
            .iter()
            .flat_map(|b| b.entries.iter())
            .map(|c| (c.id.distance(target), c.id))
            .collect();
        if all.len() > n && n > 0 {
            all.select_nth_unstable_by_key(n - 1, |(d, _)| *d);
            all.truncate(n);
        }
        all.sort_unstable_by_key(|(d, _)| *d);
        all.truncate(n);
        all.into_iter().map(|(_, id)| id).collect()
    }

    /// Number of contacts held.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.entries.len()).sum()
    }

    /// Whether the table holds no contact.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of ids waiting in replacement caches.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn replacement_len(&self) -> usize {
        self.buckets.iter().map(|b| b.replacements.len()).sum()
    }

    /// The contacts of bucket `index`, least recently seen first.
    pub fn bucket(&self, index: usize) -> &[Contact] {
        self.buckets
            .get(index)
            .map(|b| b.entries.as_slice())
            .unwrap_or(&[])
    }

    /// Notes that a lookup for `target` went through its bucket at `now_ms`.
    pub fn touch(&mut self, target: &Key, now_ms: u64) {
        if let Some(i) = self.local.bucket_index(target) {
            self.buckets[i].last_refresh_ms = now_ms;
        }
    }

    /// Buckets that no lookup went through for `interval_ms`, from the lowest one that can
    /// hold anyone (that of our nearest neighbour) up to the farthest; each wants a lookup of
    /// a random key in its range. Marks them refreshed at `now_ms`.
    pub fn due_for_refresh(&mut self, now_ms: u64, interval_ms: u64) -> Vec<usize> {
        let lowest = self
            .buckets
            .iter()
            .position(|b| !b.entries.is_empty())
            .unwrap_or(255);
        let mut due = Vec::new();
        for (i, b) in self.buckets.iter_mut().enumerate().skip(lowest) {
            if now_ms.saturating_sub(b.last_refresh_ms) >= interval_ms {
                b.last_refresh_ms = now_ms;
                due.push(i);
            }
        }
        due
    }

    /// Approximate heap bytes held (for memory estimates).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self
                .buckets
                .iter()
                .map(|b| {
                    b.entries.capacity() * std::mem::size_of::<Contact>()
                        + b.replacements.capacity() * std::mem::size_of::<Key>()
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key in bucket `index` of the all-zero local id, distinct per `n`.
    fn in_bucket(index: usize, n: u8) -> Key {
        let local = Key([0; 32]);
        let mut r = [0u8; 32];
        r[31] = n;
        r[30] = n.wrapping_mul(7);
        local.random_in_bucket(index, &r)
    }

    #[test]
    fn full_bucket_pings_oldest_and_keeps_it_when_it_answers() {
        let mut t = RoutingTable::new(Key([0; 32]), 3);
        let ids: Vec<Key> = (1..=5).map(|n| in_bucket(200, n)).collect();
        assert_eq!(t.insert(ids[0], 1), Insert::Added);
        assert_eq!(t.insert(ids[1], 2), Insert::Added);
        assert_eq!(t.insert(ids[2], 3), Insert::Added);
        assert_eq!(t.insert(ids[3], 4), Insert::PingThenMaybeEvict(ids[0]));
        // A second newcomer while the ping is out just waits.
        assert_eq!(t.insert(ids[4], 5), Insert::Cached);
        // The old contact answers: it stays, newest-seen now; newcomers stay out.
        assert_eq!(t.insert(ids[0], 6), Insert::Refreshed);
        assert!(t.contains(&ids[0]));
        assert!(!t.contains(&ids[3]) && !t.contains(&ids[4]));
        assert_eq!(t.bucket(200).last().map(|c| c.id), Some(ids[0]));
        assert_eq!(t.replacement_len(), 2);
        // Next newcomer pings the new least-recently-seen (ids[1]).
        let six = in_bucket(200, 6);
        assert_eq!(t.insert(six, 7), Insert::PingThenMaybeEvict(ids[1]));
        // It fails to answer: evicted, newest replacement promoted.
        assert!(t.on_failure(&ids[1]));
        assert!(!t.contains(&ids[1]));
        assert!(t.contains(&six));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn failures_without_replacement_drop_only_after_repeats() {
        let mut t = RoutingTable::new(Key([0; 32]), 20);
        let a = in_bucket(100, 1);
        t.insert(a, 0);
        assert!(!t.on_failure(&a));
        assert!(!t.on_failure(&a));
        assert!(t.contains(&a));
        assert!(t.on_failure(&a));
        assert!(!t.contains(&a));
        assert_eq!(t.insert(Key([0; 32]), 0), Insert::IsSelf);
        assert!(t.is_empty());
    }

    #[test]
    fn closest_is_sorted_by_xor_distance() {
        let mut t = RoutingTable::new(Key([0; 32]), 20);
        let mut all = Vec::new();
        for i in 0..200u8 {
            let id = in_bucket(50 + (i as usize % 150), i);
            t.insert(id, 0);
            all.push(id);
        }
        let target = in_bucket(120, 99);
        let got = t.closest(&target, 20);
        all.sort_by_key(|k| k.distance(&target));
        all.dedup();
        let want: Vec<Key> = all.into_iter().filter(|k| t.contains(k)).take(20).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn refresh_covers_buckets_from_nearest_neighbour_up() {
        let mut t = RoutingTable::new(Key([0; 32]), 20);
        t.insert(in_bucket(250, 1), 0);
        let due = t.due_for_refresh(3_600_000, 3_600_000);
        assert_eq!(due, (250..256).collect::<Vec<_>>());
        assert!(t.due_for_refresh(3_600_001, 3_600_000).is_empty());
        t.touch(&in_bucket(252, 3), 5_000_000);
        let due = t.due_for_refresh(7_200_000, 3_600_000);
        assert_eq!(due, vec![250, 251, 253, 254, 255]);
    }
}
