//! One iterative Kademlia lookup as a state machine: it says whom to ask next, learns from
//! answers and failures, and finishes when the `k` closest peers it has seen have all
//! answered or failed. At most `alpha` requests are in flight at once.

use std::collections::BTreeMap;

use super::id::{Distance, Key};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    InFlight,
    Answered,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    id: Key,
    state: State,
    /// The round in which this peer is (or would be) asked: 1 for the starting contacts,
    /// one more than the round of whoever told us about it.
    round: u32,
}

/// What a lookup did, for measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Requests sent.
    pub messages: u32,
    /// Sequential round trips: the highest round among the `k` closest peers that answered.
    pub rounds: u32,
    /// Requests that failed (timed out).
    pub failures: u32,
    /// Contacts dropped because a response held more than `k`.
    pub contacts_truncated: u32,
    /// Contacts ignored because they were us or the responder itself.
    pub contacts_ignored: u32,
}

/// An iterative lookup of one target.
#[derive(Debug, Clone)]
pub struct Lookup {
    local: Key,
    target: Key,
    k: usize,
    alpha: usize,
    peers: BTreeMap<Distance, Peer>,
    in_flight: usize,
    stats: LookupStats,
}

impl Lookup {
    /// A lookup of `target` by `local`, starting from `seeds` (usually the routing table's
    /// closest contacts).
    pub fn new(local: Key, target: Key, seeds: &[Key], k: usize, alpha: usize) -> Self {
        let mut l = Self {
            local,
            target,
            k: k.max(1),
            alpha: alpha.max(1),
            peers: BTreeMap::new(),
            in_flight: 0,
            stats: LookupStats::default(),
        };
        for id in seeds {
            l.add(*id, 1);
        }
        l
    }

    /// The key looked up.
    pub fn target(&self) -> &Key {
        &self.target
    }

    /// Counters so far.
    pub fn stats(&self) -> LookupStats {
        self.stats
    }

    fn cap(&self) -> usize {
        self.k * 8
    }

    fn add(&mut self, id: Key, round: u32) {
        if id == self.local {
            return;
        }
        let d = id.distance(&self.target);
        if self.peers.contains_key(&d) {
            return;
        }
        if self.peers.len() >= self.cap() {
            // Full: only a peer closer than the farthest not-yet-asked one gets in.
            let far = self
                .peers
                .iter()
                .rev()
                .find(|(_, p)| p.state == State::New)
                .map(|(d, _)| *d);
            match far {
                Some(far) if far > d => {
                    self.peers.remove(&far);
                }
                _ => return,
            }
        }
        self.peers.insert(
            d,
            Peer {
                id,
                state: State::New,
                round,
            },
        );
    }

    /// Peers to ask now (each is marked in flight). Empty when nothing more is to be asked
    /// right now: either requests are in flight or the lookup is finished.
    pub fn next_requests(&mut self) -> Vec<Key> {
        let mut out = Vec::new();
        if self.in_flight >= self.alpha {
            return out;
        }
        let mut seen = 0;
        for p in self.peers.values_mut() {
            if p.state == State::Failed {
                continue;
            }
            if seen >= self.k {
                break;
            }
            seen += 1;
            if p.state == State::New {
                p.state = State::InFlight;
                self.in_flight += 1;
                self.stats.messages += 1;
                out.push(p.id);
                if self.in_flight >= self.alpha {
                    break;
                }
            }
        }
        out
    }

    fn find(&mut self, id: &Key) -> Option<&mut Peer> {
        let d = id.distance(&self.target);
        self.peers.get_mut(&d).filter(|p| p.id == *id)
    }

    /// `from` answered with `contacts`. Returns false (and changes nothing) when no request
    /// to `from` was in flight.
    pub fn on_response(&mut self, from: &Key, contacts: &[Key]) -> bool {
        let round = match self.find(from) {
            Some(p) if p.state == State::InFlight => {
                p.state = State::Answered;
                p.round
            }
            _ => return false,
        };
        self.in_flight -= 1;
        let mut contacts = contacts;
        if contacts.len() > self.k {
            self.stats.contacts_truncated += (contacts.len() - self.k) as u32;
            contacts = &contacts[..self.k];
        }
        for c in contacts {
            if *c == self.local || c == from {
                self.stats.contacts_ignored += 1;
                continue;
            }
            self.add(*c, round + 1);
        }
        true
    }

    /// The request to `from` failed. Returns false when none was in flight.
    pub fn on_failure(&mut self, from: &Key) -> bool {
        match self.find(from) {
            Some(p) if p.state == State::InFlight => p.state = State::Failed,
            _ => return false,
        }
        self.in_flight -= 1;
        self.stats.failures += 1;
        true
    }

    /// Whether the `k` closest peers not known to have failed have all answered.
    pub fn is_finished(&self) -> bool {
        self.in_flight == 0
            && self
                .peers
                .values()
                .filter(|p| p.state != State::Failed)
                .take(self.k)
                .all(|p| p.state == State::Answered)
    }

    /// Up to `k` peers that answered, closest first.
    pub fn closest_answered(&self) -> Vec<Key> {
        self.peers
            .values()
            .filter(|p| p.state == State::Answered)
            .take(self.k)
            .map(|p| p.id)
            .collect()
    }

    /// Final statistics: [`LookupStats::rounds`] is computed over the closest answered peers.
    pub fn finish_stats(&self) -> LookupStats {
        let mut s = self.stats;
        s.rounds = self
            .peers
            .values()
            .filter(|p| p.state == State::Answered)
            .take(self.k)
            .map(|p| p.round)
            .max()
            .unwrap_or(0);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> Key {
        let mut k = [0u8; 32];
        k[0..2].copy_from_slice(&n.to_be_bytes());
        Key(k)
    }

    #[test]
    fn asks_alpha_at_a_time_and_finishes_when_k_closest_answered() {
        let local = key(0xffff);
        let target = key(0);
        let mut l = Lookup::new(
            local,
            target,
            &[key(100), key(200), key(300), key(400)],
            2,
            3,
        );
        let first = l.next_requests();
        assert_eq!(first, vec![key(100), key(200)]); // only the 2 closest are worth asking
        assert!(l.next_requests().is_empty());
        assert!(l.on_response(&key(100), &[key(50), key(60)]));
        // Now 50 and 60 are the two closest and both get asked (three in flight with 200).
        assert_eq!(l.next_requests(), vec![key(50), key(60)]);
        assert!(l.on_failure(&key(50)));
        assert!(!l.on_failure(&key(50)), "no request in flight any more");
        // 60 (in flight) and 100 (answered) are now the two closest: nothing new to ask.
        assert!(l.next_requests().is_empty());
        assert!(!l.is_finished());
        assert!(l.on_response(&key(60), &[]));
        assert!(l.on_response(&key(200), &[]));
        assert!(l.next_requests().is_empty());
        assert!(l.is_finished());
        assert_eq!(l.closest_answered(), vec![key(60), key(100)]);
        let s = l.finish_stats();
        assert_eq!(s.messages, 4);
        assert_eq!(s.failures, 1);
        assert_eq!(s.rounds, 2);
    }

    #[test]
    fn hostile_contact_lists_are_truncated_and_self_references_ignored() {
        let local = key(0xffff);
        let mut l = Lookup::new(local, key(0), &[key(1000)], 20, 3);
        assert_eq!(l.next_requests(), vec![key(1000)]);
        let flood: Vec<Key> = (0..5000u16).map(|n| key(2000 + n)).collect();
        assert!(l.on_response(&key(1000), &flood));
        let s = l.stats();
        assert_eq!(s.contacts_truncated, 4980);
        assert!(l.peers.len() <= 20 * 8);
        // A peer answering with only itself and us adds nothing.
        let mut l = Lookup::new(local, key(0), &[key(7)], 20, 3);
        l.next_requests();
        assert!(l.on_response(&key(7), &[key(7), key(7), local]));
        assert_eq!(l.stats().contacts_ignored, 3);
        assert!(l.is_finished());
        assert_eq!(l.closest_answered(), vec![key(7)]);
        // An answer nobody asked for is refused.
        assert!(!l.on_response(&key(9), &[key(1)]));
    }

    #[test]
    fn a_silent_peer_only_costs_its_timeout() {
        let local = key(0xffff);
        let mut l = Lookup::new(local, key(0), &[key(10), key(20), key(30)], 20, 3);
        assert_eq!(l.next_requests().len(), 3);
        assert!(l.on_response(&key(20), &[key(5)]));
        assert_eq!(l.next_requests(), vec![key(5)]);
        assert!(l.on_response(&key(5), &[]));
        assert!(l.on_response(&key(30), &[]));
        assert!(!l.is_finished(), "key(10) still in flight");
        assert!(l.on_failure(&key(10)));
        assert!(l.is_finished());
        assert_eq!(l.closest_answered(), vec![key(5), key(20), key(30)]);
    }
}
