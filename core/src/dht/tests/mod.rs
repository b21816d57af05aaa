//! Small networks of [`Dht`] machines driven by a test loop: behaviour of the whole node,
//! including each kind of bad input of the issue. This file is the test network; the tests
//! follow the machine's parts.

mod operations;
mod progress;
mod replication;
mod serve;

use std::collections::{BTreeMap, HashSet};

use iroh::SecretKey;

use super::messages::{self, Message, Request, Response};
use super::*;
use crate::error::ErrorKind;

const T0: u64 = 1_700_000_000_000;
const LATENCY: u64 = 10;

struct Net {
    nodes: BTreeMap<Key, Dht<MemoryStore>>,
    secrets: BTreeMap<Key, SecretKey>,
    silent: HashSet<Key>,
    queue: BTreeMap<(u64, u64), (Key, Key, Vec<u8>)>,
    seq: u64,
    now: u64,
    done: Vec<(Key, OpId, Outcome, LookupStats)>,
    /// Messages any node sent to `spy`, which is not a machine.
    spied: Vec<(Key, Message)>,
    spy: Option<Key>,
    /// When set, the spy answers every request made of it with what this returns (given the
    /// asker and the request); otherwise it never answers.
    responder: Option<Responder>,
}

/// A hostile peer's answer to (asker, request).
type Responder = Box<dyn FnMut(Key, &Request) -> Response>;

fn secret(n: u32) -> SecretKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[31] = 0x55;
    SecretKey::from_bytes(&b)
}

impl Net {
    fn new(n: u32, config: DhtConfig) -> Self {
        let mut net = Net {
            nodes: BTreeMap::new(),
            secrets: BTreeMap::new(),
            silent: HashSet::new(),
            queue: BTreeMap::new(),
            seq: 0,
            now: T0,
            done: Vec::new(),
            spied: Vec::new(),
            spy: None,
            responder: None,
        };
        let mut ids = Vec::new();
        for i in 0..n {
            let s = secret(i);
            let d = Dht::new(s.clone(), MemoryStore::default(), config, [i as u8; 32], T0).unwrap();
            let id = d.id();
            net.nodes.insert(id, d);
            net.secrets.insert(id, s);
            ids.push(id);
        }
        // Join one after another through the first node.
        for (i, id) in ids.iter().enumerate().skip(1) {
            let seeds = [ids[0], ids[i / 2]];
            let now = net.now;
            net.node(id).bootstrap(&seeds, now).unwrap();
            net.run();
        }
        net.done.clear();
        net
    }

    fn node(&mut self, id: &Key) -> &mut Dht<MemoryStore> {
        self.nodes.get_mut(id).unwrap()
    }

    fn flush(&mut self, from: Key) {
        while let Some(a) = self.nodes.get_mut(&from).and_then(|d| d.poll_output()) {
            match a {
                Output::Send { to, message } => {
                    if Some(to) == self.spy {
                        if let (Some(answer), Message::Request { id, body }) =
                            (self.responder.as_mut(), &message)
                        {
                            let reply = Message::Response {
                                id: *id,
                                body: answer(from, body),
                            };
                            // Straight to postcard: a hostile peer is not bound by our
                            // encoder's frame limit, only the receiver's decoder is.
                            self.inject_raw(to, from, postcard::to_stdvec(&reply).unwrap());
                        }
                        self.spied.push((from, message));
                        continue;
                    }
                    let bytes = messages::encode(&message).unwrap();
                    self.seq += 1;
                    self.queue
                        .insert((self.now + LATENCY, self.seq), (from, to, bytes));
                }
                Output::Done { op, outcome, stats } => self.done.push((from, op, outcome, stats)),
            }
        }
    }

    /// Injects a message from `from` (not necessarily a machine) to `to`.
    fn inject(&mut self, from: Key, to: Key, message: &Message) {
        self.inject_raw(from, to, messages::encode(message).unwrap());
    }

    /// Injects raw bytes from `from` (not necessarily a machine) to `to`, arriving after
    /// [`LATENCY`].
    fn inject_raw(&mut self, from: Key, to: Key, bytes: Vec<u8>) {
        self.seq += 1;
        self.queue
            .insert((self.now + LATENCY, self.seq), (from, to, bytes));
    }

    /// Makes `spy` a peer `of` knows: it pings `of`, which puts it in its routing table.
    fn plant_spy(&mut self, spy: Key, of: Key) {
        self.spy = Some(spy);
        self.inject(
            spy,
            of,
            &Message::Request {
                id: 0,
                body: Request::Ping,
            },
        );
        self.run();
        assert!(self.nodes[&of].routing().contains(&spy));
    }

    /// Requests `from` sent the spy.
    fn spied_requests(&self, from: Key) -> Vec<Request> {
        self.spied
            .iter()
            .filter(|(f, _)| *f == from)
            .filter_map(|(_, m)| match m {
                Message::Request { body, .. } => Some(body.clone()),
                Message::Response { .. } => None,
            })
            .collect()
    }

    /// Runs until nothing is queued and no request is pending.
    fn run(&mut self) {
        let ids: Vec<Key> = self.nodes.keys().copied().collect();
        for id in &ids {
            self.flush(*id);
        }
        loop {
            let next_msg = self.queue.keys().next().map(|(t, _)| *t);
            let next_timer = self
                .nodes
                .values()
                .map(|d| d.next_deadline())
                .min()
                .unwrap_or(u64::MAX);
            // Do not run the long refresh/replicate timers unless a request is pending.
            let pending_timer =
                if self.nodes.values().any(|d| d.ops_running() > 0) || next_msg.is_some() {
                    next_timer
                } else {
                    u64::MAX
                };
            let Some(t) = [next_msg.unwrap_or(u64::MAX), pending_timer]
                .into_iter()
                .min()
                .filter(|t| *t != u64::MAX)
            else {
                return;
            };
            if t > self.now + 600_000 {
                return;
            }
            self.now = self.now.max(t);
            if next_msg == Some(t) {
                let (k, (from, to, bytes)) = self.queue.pop_first().unwrap();
                let _ = k;
                if self.silent.contains(&to) {
                    continue;
                }
                let now = self.now;
                if let Some(d) = self.nodes.get_mut(&to) {
                    d.handle_bytes(from, &bytes, now);
                    self.flush(to);
                }
            } else {
                let now = self.now;
                for id in &ids {
                    if self.nodes[id].next_deadline() <= now {
                        self.node(id).handle_timeout(now);
                        self.flush(*id);
                    }
                }
            }
        }
    }

    fn result(&mut self, node: Key, op: OpId) -> (Outcome, LookupStats) {
        let i = self
            .done
            .iter()
            .position(|(n, o, _, _)| *n == node && *o == op)
            .expect("op finished");
        let (_, _, outcome, stats) = self.done.remove(i);
        (outcome, stats)
    }

    fn ids(&self) -> Vec<Key> {
        self.nodes.keys().copied().collect()
    }
}

fn true_closest(ids: &[Key], target: &Key, n: usize) -> Vec<Key> {
    let mut v = ids.to_vec();
    v.sort_by_key(|k| k.distance(target));
    v.truncate(n);
    v
}

/// The `n` keys of `ids` closest to `target`, leaving out `asker` (a lookup never returns
/// the node that runs it).
fn closest_but(ids: &[Key], target: &Key, asker: Key, n: usize) -> Vec<Key> {
    true_closest(ids, target, n + 1)
        .into_iter()
        .filter(|k| *k != asker)
        .take(n)
        .collect()
}

/// `k` with its low 32 bits XORed with `n`: the key at distance `n` from `k`.
fn flip(k: Key, n: u32) -> Key {
    let mut b = k.0;
    for (x, y) in b[28..].iter_mut().zip(n.to_be_bytes()) {
        *x ^= y;
    }
    Key(b)
}

fn small_config() -> DhtConfig {
    DhtConfig {
        k: 8,
        ..DhtConfig::default()
    }
}
