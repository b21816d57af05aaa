//! The per-peer limit on the requests a node serves: each peer may make `request_burst`
//! requests at once and `requests_per_sec` sustained. The decision is `governor`'s GCRA, as
//! in `sync::limits`, on a clock the machine sets from each event's `now_ms`, so the machine
//! stays sans-IO and a simulation stays deterministic. At most `max_tracked_peers` peers are
//! tracked; while that many are inside their budget window, a new peer is refused, so a flood
//! from many identities costs bounded memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::id::Key;
use crate::driver_clock::{DriverClock, nonzero};

/// Each tracked peer's GCRA state: its theoretical arrival time, in nanoseconds from the
/// limiter's start. A handle: the governor limiter reads and updates the table through one,
/// [`RequestLimiter`] counts and looks up peers through another (governor's own hash-map
/// store cannot say whether it holds a key, which the tracked-peer bound needs).
#[derive(Debug, Default)]
struct PeerStates(Arc<Mutex<HashMap<Key, Nanos>>>);

impl PeerStates {
    /// Another handle to the same table.
    fn share(&self) -> Self {
        Self(Arc::clone(&self.0))
    }

    /// A new table with the same contents.
    fn deep_copy(&self) -> Self {
        Self(Arc::new(Mutex::new(self.peers().clone())))
    }

    fn peers(&self) -> MutexGuard<'_, HashMap<Key, Nanos>> {
        // Nothing panics while holding the lock; were it poisoned, the table is still whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StateStore for PeerStates {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut peers = self.peers();
        // A refused request leaves the table as it was: an untracked peer stays untracked.
        let (outcome, tat) = f(peers.get(key).copied())?;
        peers.insert(*key, tat);
        Ok(outcome)
    }
}

impl ShrinkableKeyedStateStore<Key> for PeerStates {
    fn retain_recent(&self, drop_below: Nanos) {
        self.peers().retain(|_, tat| *tat > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.peers().shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.peers().len()
    }

    fn is_empty(&self) -> bool {
        self.peers().is_empty()
    }
}

type Gcra = RateLimiter<Key, PeerStates, FakeRelativeClock, NoOpMiddleware<Nanos>>;

/// Decides which peers' requests are served.
#[derive(Debug)]
pub(crate) struct RequestLimiter {
    quota: Quota,
    max_tracked: usize,
    clock: DriverClock,
    peers: PeerStates,
    gcra: Gcra,
}

impl RequestLimiter {
    /// A limiter tracking no peer, its clock at `now_ms`.
    pub(crate) fn new(requests_per_sec: u32, burst: u32, max_tracked: usize, now_ms: u64) -> Self {
        let quota = Quota::per_second(nonzero(requests_per_sec)).allow_burst(nonzero(burst));
        Self::with_state(quota, max_tracked, now_ms, now_ms, PeerStates::default())
    }

    /// A limiter over `peers`, whose states were measured from `start_ms`, its clock at
    /// `clock_ms`.
    fn with_state(
        quota: Quota,
        max_tracked: usize,
        start_ms: u64,
        clock_ms: u64,
        peers: PeerStates,
    ) -> Self {
        let mut clock = DriverClock::starting_at(start_ms);
        // Governor measures from the clock's reading when the limiter is made: zero, which
        // stands for `start_ms`.
        let gcra = RateLimiter::new(quota, peers.share(), clock.governor_clock());
        clock.advance_to(clock_ms);
        Self {
            quota,
            max_tracked,
            clock,
            peers,
            gcra,
        }
    }

    /// Charges one request from `peer` at `now_ms`: true when it is within the peer's budget
    /// and there is room to track the peer.
    pub(crate) fn allow(&mut self, peer: Key, now_ms: u64) -> bool {
        self.clock.advance_to(now_ms);
        if self.gcra.len() >= self.max_tracked && !self.peers.peers().contains_key(&peer) {
            // Forget the peers whose budget has refilled: they are idle, and a fresh state
            // serves them the same when they come back.
            self.gcra.retain_recent();
            if self.gcra.len() >= self.max_tracked {
                return false;
            }
        }
        self.gcra.check_key(&peer).is_ok()
    }

    /// Peers tracked now.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.gcra.len()
    }

    /// Approximate heap bytes of the peer table.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.peers.peers().capacity() * std::mem::size_of::<(Key, Nanos)>()
    }
}

impl Clone for RequestLimiter {
    /// An independent copy: clones of governor's fake clock share one time, so the copy
    /// gets its own clock and peer table, set to the same time and states.
    fn clone(&self) -> Self {
        Self::with_state(
            self.quota,
            self.max_tracked,
            self.clock.start_ms(),
            self.clock.now_ms(),
            self.peers.deep_copy(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> Key {
        Key([n; 32])
    }

    #[test]
    fn a_burst_passes_then_one_request_per_period() {
        let mut l = RequestLimiter::new(10, 20, 8, 5_000);
        for _ in 0..20 {
            assert!(l.allow(peer(1), 5_000));
        }
        assert!(!l.allow(peer(1), 5_000));
        // Another peer has its own budget.
        assert!(l.allow(peer(2), 5_000));
        // A tenth of a second refills one request, not two.
        assert!(!l.allow(peer(1), 5_099));
        assert!(l.allow(peer(1), 5_100));
        assert!(!l.allow(peer(1), 5_100));
        // A clock that runs backwards gives nothing back.
        assert!(!l.allow(peer(1), 4_000));
    }

    #[test]
    fn tracked_peers_are_bounded_and_idle_ones_make_room() {
        let mut l = RequestLimiter::new(10, 20, 2, 0);
        assert!(l.allow(peer(1), 0));
        assert!(l.allow(peer(2), 0));
        // Both are inside their window: a third peer is refused and not tracked.
        assert!(!l.allow(peer(3), 50));
        assert_eq!(l.tracked(), 2);
        // A tracked peer is still served.
        assert!(l.allow(peer(1), 50));
        // Peer 2's budget refilled at 100 ms; governor forgets it one period later.
        assert!(!l.allow(peer(3), 150));
        assert!(l.allow(peer(3), 200));
        assert_eq!(l.tracked(), 2);
    }

    #[test]
    fn a_clone_keeps_its_own_clock_and_peers() {
        let mut a = RequestLimiter::new(10, 1, 8, 0);
        assert!(a.allow(peer(1), 0));
        let mut b = a.clone();
        assert!(b.allow(peer(1), 100));
        assert!(!b.allow(peer(1), 100));
        // The copy's clock and its charge left the original alone: at 50 ms its budget is
        // still empty, at 100 ms it has one request.
        assert!(!a.allow(peer(1), 50));
        assert!(a.allow(peer(1), 100));
    }

    #[test]
    fn a_clock_past_a_century_does_not_panic() {
        let mut l = RequestLimiter::new(10, 1, 8, 0);
        assert!(l.allow(peer(1), 0));
        assert!(l.allow(peer(1), u64::MAX));
        assert!(!l.allow(peer(1), u64::MAX));
    }
}
