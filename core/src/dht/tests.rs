//! Small networks of [`Dht`] machines driven by a test loop: behaviour of the whole node,
//! including each kind of bad input of the issue.

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
        while let Some(a) = self.nodes.get_mut(&from).and_then(|d| d.poll_action()) {
            match a {
                Action::Send { to, message } => {
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
                Action::Done { op, outcome, stats } => self.done.push((from, op, outcome, stats)),
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

#[test]
fn lookups_find_the_true_closest_nodes() {
    let mut net = Net::new(60, small_config());
    let ids = net.ids();
    for n in 0..10u8 {
        let target = Key([n.wrapping_mul(31); 32]);
        let from = ids[n as usize * 5];
        let now = net.now;
        let op = net.node(&from).find_node(target, now).unwrap();
        net.run();
        let (outcome, stats) = net.result(from, op);
        let want: Vec<Key> = closest_but(&ids, &target, from, 8);
        assert_eq!(outcome, Outcome::Nodes(want));
        assert!(stats.rounds >= 1 && stats.messages >= 8);
    }
}

#[test]
fn put_get_cas_and_conflicts() {
    let mut net = Net::new(40, small_config());
    let ids = net.ids();
    let (writer, reader) = (ids[3], ids[17]);
    let writer_pub = writer.0;
    let now = net.now;
    let op = net
        .node(&writer)
        .put(b"name", b"v1", 600_000, Some(0), now)
        .unwrap();
    net.run();
    assert_eq!(net.result(writer, op).0, Outcome::Put(Ok(1)));
    let now = net.now;
    let op = net
        .node(&writer)
        .put(b"name", b"v2", 600_000, None, now)
        .unwrap();
    net.run();
    assert_eq!(net.result(writer, op).0, Outcome::Put(Ok(2)));
    // A stale expected sequence is a conflict, and changes nothing.
    let now = net.now;
    let op = net
        .node(&writer)
        .put(b"name", b"v3", 600_000, Some(1), now)
        .unwrap();
    net.run();
    match net.result(writer, op).0 {
        Outcome::Put(Err(e)) => assert_eq!(e.kind(), ErrorKind::Conflict),
        other => panic!("{other:?}"),
    }
    let now = net.now;
    let op = net.node(&reader).get(&writer_pub, b"name", now).unwrap();
    net.run();
    match net.result(reader, op).0 {
        Outcome::Record(Some(r)) => {
            assert_eq!((r.seq, r.value.as_slice()), (2, &b"v2"[..]));
        }
        other => panic!("{other:?}"),
    }
    // Held on the k closest of the key.
    let key = super::record::record_key(&writer_pub, b"name");
    let holders = ids
        .iter()
        .filter(|id| net.nodes[*id].store().get(&key, net.now).is_some())
        .count();
    assert!(holders >= 8, "{holders}");
    // A missing record is None.
    let now = net.now;
    let op = net.node(&reader).get(&writer_pub, b"other", now).unwrap();
    net.run();
    assert_eq!(net.result(reader, op).0, Outcome::Record(None));
    // Oversized values and bad TTLs are refused up front.
    let now = net.now;
    assert!(
        net.node(&writer)
            .put(b"n", &[0; 1025], 1000, None, now)
            .is_err()
    );
    assert!(net.node(&writer).put(b"n", b"v", 0, None, now).is_err());
}

#[test]
fn bad_records_are_refused_and_counted() {
    let mut net = Net::new(10, small_config());
    let ids = net.ids();
    let target = ids[0];
    let attacker = secret(999);
    let attacker_id = Key(*attacker.public().as_bytes());
    let now = net.now;
    let good = Record::sign(&attacker, b"n", b"v", 5, now + 60_000).unwrap();
    let mut bad_sig = good.clone();
    bad_sig.value = b"forged".to_vec();
    let expired = Record::sign(&attacker, b"n", b"v", 6, now - 1).unwrap();
    let far = Record::sign(&attacker, b"n", b"v", 6, now + 365 * 24 * 3_600_000).unwrap();
    let big = Record::sign(&attacker, b"n", &[1; 2000], 6, now + 60_000).unwrap();
    let stale = Record::sign(&attacker, b"n", b"v", 4, now + 60_000).unwrap();
    let equal_other = Record::sign(&attacker, b"n", b"other", 5, now + 60_000).unwrap();
    net.spy = Some(attacker_id);
    for (i, r) in [good.clone(), bad_sig, expired, far, big, stale, equal_other]
        .into_iter()
        .enumerate()
    {
        net.inject(
            attacker_id,
            target,
            &Message::Request {
                id: i as u64,
                body: Request::Store { record: r },
            },
        );
    }
    net.run();
    let answers: Vec<(bool, Option<messages::Refusal>)> = net
        .spied
        .iter()
        .map(|(_, m)| match m {
            Message::Response {
                body: Response::Stored {
                    accepted, refusal, ..
                },
                ..
            } => (*accepted, *refusal),
            other => panic!("{other:?}"),
        })
        .collect();
    use messages::Refusal::*;
    assert_eq!(
        answers,
        vec![
            (true, None),
            (false, Some(Invalid)),
            (false, Some(Invalid)),
            (false, Some(Invalid)),
            (false, Some(Invalid)),
            (false, Some(Conflict)),
            (false, Some(Conflict)),
        ]
    );
    let c = net.nodes[&target].counters();
    assert_eq!((c.invalid_records, c.conflicts), (4, 2));
    assert_eq!(
        net.nodes[&target].store().get(&good.key(), net.now),
        Some(good)
    );
    // The one good record is the one row held.
    assert_eq!(net.nodes[&target].store().records().len(), 1);
    // Garbage bytes are counted, not answered.
    net.seq += 1;
    let when = net.now + LATENCY;
    net.queue
        .insert((when, net.seq), (attacker_id, target, vec![0xff; 40]));
    net.run();
    assert_eq!(net.nodes[&target].counters().undecodable, 1);
}

#[test]
fn find_node_floods_are_rate_limited() {
    let config = DhtConfig {
        requests_per_sec: 10,
        request_burst: 20,
        ..small_config()
    };
    let mut net = Net::new(5, config);
    let ids = net.ids();
    let attacker = Key([0xaa; 32]);
    net.spy = Some(attacker);
    for i in 0..500u64 {
        net.inject(
            attacker,
            ids[0],
            &Message::Request {
                id: i,
                body: Request::FindNode {
                    target: Key([1; 32]),
                },
            },
        );
    }
    let before = net.nodes[&ids[0]].counters();
    let table = net.nodes[&ids[0]].routing().len();
    net.run();
    // The burst is answered, the rest dropped and counted.
    assert_eq!(net.spied.len(), 20);
    let c = net.nodes[&ids[0]].counters();
    assert_eq!(c.rate_limited, 480);
    assert_eq!(c.requests_in - before.requests_in, 20);
    // The flood cost one routing-table entry, and nothing was sent on its behalf.
    assert_eq!(net.nodes[&ids[0]].routing().len(), table + 1);
    assert_eq!(c.requests_out, before.requests_out);
    // An honest peer asking in the same second is still answered by the flooded node, and
    // its lookup finds the true closest (the attacker is known to ids[0] but never answers).
    let honest = ids[1];
    let target = Key([1; 32]);
    let now = net.now;
    let op = net.node(&honest).find_node(target, now).unwrap();
    // The attacker, still out of budget, keeps trying alongside.
    net.inject(
        attacker,
        ids[0],
        &Message::Request {
            id: 800,
            body: Request::FindNode { target },
        },
    );
    net.run();
    let want: Vec<Key> = true_closest(&ids, &target, 5)
        .into_iter()
        .filter(|k| *k != honest)
        .collect();
    assert_eq!(net.result(honest, op).0, Outcome::Nodes(want));
    let c = net.nodes[&ids[0]].counters();
    assert_eq!(c.rate_limited, 481, "only the attacker was limited");
    assert!(c.requests_in > before.requests_in + 20);
    // Once its budget has refilled (a second at least), the peer is answered again.
    net.now += 1_000;
    net.inject(
        attacker,
        ids[0],
        &Message::Request {
            id: 900,
            body: Request::Ping,
        },
    );
    net.run();
    let answered = net
        .spied
        .iter()
        .filter(|(f, m)| *f == ids[0] && matches!(m, Message::Response { .. }))
        .count();
    assert_eq!(answered, 21);
}

#[test]
fn hostile_and_silent_peers_do_not_break_lookups() {
    let mut net = Net::new(40, small_config());
    let ids = net.ids();
    let me = ids[0];
    // A "peer" we know that answers every find_node with 3000 contacts made of itself
    // and us, and one that never answers.
    let liar = Key([0x11; 32]);
    let silent = Key([0x22; 32]);
    net.silent.insert(silent);
    net.spy = Some(liar);
    let now = net.now;
    net.node(&me).bootstrap(&[liar, silent], now).unwrap();
    net.responder = Some(Box::new(move |asker, _| {
        let mut contacts = vec![liar; 1500];
        contacts.extend(std::iter::repeat_n(asker, 1500));
        Response::Nodes { contacts }
    }));
    net.run();
    assert!(!net.spied.is_empty(), "the liar was asked");
    let (outcome, stats) = net
        .done
        .iter()
        .find(|(n, ..)| *n == me)
        .map(|(_, _, o, s)| (o.clone(), *s))
        .unwrap();
    let Outcome::Nodes(found) = outcome else {
        panic!()
    };
    assert!(!found.contains(&silent));
    let want: Vec<Key> = closest_but(&ids, &me, me, 7);
    for w in &want {
        assert!(found.contains(w), "missing a true neighbour");
    }
    assert!(stats.failures >= 1, "the silent peer timed out");
    // Each answer of the liar loses all but k = 8 of its 3000 contacts, and those 8 (copies
    // of itself) are ignored: nothing of it reaches the lookup or the table.
    let asked = net
        .spied_requests(me)
        .iter()
        .filter(|r| matches!(r, Request::FindNode { .. }))
        .count() as u64;
    assert!(asked >= 1);
    let c = net.nodes[&me].counters();
    assert_eq!(c.contacts_truncated, 2992 * asked, "{c:?}");
    assert_eq!(c.contacts_ignored, 8 * asked, "{c:?}");
    assert!(c.timeouts >= 1);
    assert!(net.nodes[&me].routing().len() <= ids.len() + 1);
}

#[test]
fn providers_are_announced_and_found() {
    let mut net = Net::new(30, small_config());
    let ids = net.ids();
    for p in &ids[..3] {
        let now = net.now;
        let op = net.node(p).provide(b"app-key", 3_600_000, now).unwrap();
        net.run();
        match net.result(*p, op).0 {
            Outcome::Provided(n) => assert!(n >= 8, "{n}"),
            other => panic!("{other:?}"),
        }
    }
    let now = net.now;
    let op = net.node(&ids[20]).providers(b"app-key", now).unwrap();
    net.run();
    let Outcome::Providers(list) = net.result(ids[20], op).0 else {
        panic!()
    };
    let mut got: Vec<[u8; 32]> = list.iter().map(|p| p.provider).collect();
    let mut want: Vec<[u8; 32]> = ids[..3].iter().map(|k| k.0).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let now = net.now;
    let op = net.node(&ids[20]).providers(b"nobody", now).unwrap();
    net.run();
    assert_eq!(net.result(ids[20], op).0, Outcome::Providers(vec![]));
}

#[test]
fn ping_before_evict_keeps_live_contacts_and_evicts_dead_ones() {
    let config = DhtConfig {
        k: 2,
        ..DhtConfig::default()
    };
    let mut net = Net::new(2, config);
    let ids = net.ids();
    let me = ids[0];
    // Fill one bucket of `me` with ids[1] and a dead contact, then offer a newcomer.
    let b1 = me.bucket_index(&ids[1]).unwrap();
    let dead = me.random_in_bucket(b1, &[3; 32]);
    let newcomer = me.random_in_bucket(b1, &[4; 32]);
    let now = net.now;
    net.node(&me).bootstrap(&[dead], now).unwrap();
    net.silent.insert(dead);
    net.spy = Some(newcomer);
    // ids[1] is the oldest: the newcomer's request makes `me` ping it; it answers and stays.
    net.inject(
        newcomer,
        me,
        &Message::Request {
            id: 1,
            body: Request::Ping,
        },
    );
    net.run();
    assert!(net.nodes[&me].routing().contains(&ids[1]));
    // `dead` failed during the bootstrap lookup already or fails the next ping: either way
    // it ends up replaced by the cached newcomer.
    net.inject(
        newcomer,
        me,
        &Message::Request {
            id: 2,
            body: Request::Ping,
        },
    );
    net.run();
    assert!(!net.nodes[&me].routing().contains(&dead));
    assert!(net.nodes[&me].routing().contains(&newcomer));
    assert!(net.nodes[&me].routing().contains(&ids[1]));
}

#[test]
fn refresh_and_replication_timers_fire_and_keep_records_alive() {
    let config = DhtConfig {
        refresh_interval_ms: 60_000,
        replicate_interval_ms: 120_000,
        ..small_config()
    };
    let mut net = Net::new(20, config);
    let ids = net.ids();
    let writer = ids[4];
    let now = net.now;
    let op = net
        .node(&writer)
        .put(b"timed", b"v", 100_000, None, now)
        .unwrap();
    net.run();
    assert_eq!(net.result(writer, op).0, Outcome::Put(Ok(1)));
    let first_expiry = now + 100_000;
    let sent_before = net.nodes[&ids[0]].counters().requests_out;
    assert!(net.nodes[&ids[0]].next_deadline() <= T0 + 60_000);
    // Past the original expiry and both timers: refresh lookups go out, the publisher
    // republishes with a fresh expiry, holders replicate, expired copies are swept.
    net.now = first_expiry.max(T0 + 120_000) + 1;
    let now = net.now;
    for id in &ids {
        net.node(id).handle_timeout(now);
        net.flush(*id);
    }
    net.run();
    assert!(net.nodes[&ids[0]].counters().requests_out > sent_before + 8);
    assert!(net.nodes[&ids[0]].next_deadline() > now);
    let key = super::record::record_key(&writer.0, b"timed");
    let fresh = ids
        .iter()
        .filter(|id| {
            net.nodes[*id]
                .store()
                .get(&key, net.now)
                .is_some_and(|r| r.expires_at_ms > first_expiry)
        })
        .count();
    assert!(fresh >= 8, "{fresh} holders with a renewed expiry");
    let now = net.now;
    let op = net.node(&ids[11]).get(&writer.0, b"timed", now).unwrap();
    net.run();
    assert!(matches!(net.result(ids[11], op).0, Outcome::Record(Some(r)) if r.value == b"v"));
}

#[test]
fn concurrent_reads_of_one_key_share_one_lookup() {
    // k = 20 in a 30-node network: no bucket overflows, so no eviction pings muddle the count.
    let mut net = Net::new(30, DhtConfig::default());
    let ids = net.ids();
    let (writer, reader) = (ids[2], ids[9]);
    let now = net.now;
    let op = net
        .node(&writer)
        .put(b"k", b"shared", 600_000, None, now)
        .unwrap();
    net.run();
    assert_eq!(net.result(writer, op).0, Outcome::Put(Ok(1)));
    let sent = net.nodes[&reader].counters().requests_out;
    let now = net.now;
    let a = net.node(&reader).get(&writer.0, b"k", now).unwrap();
    let b = net.node(&reader).get(&writer.0, b"k", now).unwrap();
    let c = net.node(&reader).get(&writer.0, b"other", now).unwrap();
    assert!(a != b && b != c);
    net.run();
    let (ra, sa) = net.result(reader, a);
    let (rb, sb) = net.result(reader, b);
    let (rc, sc) = net.result(reader, c);
    assert_eq!((&ra, sa), (&rb, sb));
    assert!(matches!(ra, Outcome::Record(Some(r)) if r.value == b"shared"));
    assert_eq!(rc, Outcome::Record(None));
    let counters = net.nodes[&reader].counters();
    assert_eq!(counters.coalesced, 1);
    assert_eq!(
        counters.requests_out - sent,
        u64::from(sa.messages + sc.messages),
        "the second get sent nothing of its own"
    );
}

#[test]
fn bad_stores_sent_to_every_holder_leave_the_honest_record_readable() {
    let mut net = Net::new(40, small_config());
    let ids = net.ids();
    let (writer, reader) = (ids[5], ids[30]);
    let ws = net.secrets[&writer].clone();
    for (value, seq) in [(&b"v1"[..], 1), (b"v2", 2)] {
        let now = net.now;
        let op = net
            .node(&writer)
            .put(b"name", value, 600_000, None, now)
            .unwrap();
        net.run();
        assert_eq!(net.result(writer, op).0, Outcome::Put(Ok(seq)));
    }
    let key = super::record::record_key(&writer.0, b"name");
    let holders: Vec<Key> = ids
        .iter()
        .copied()
        .filter(|id| net.nodes[id].store().get(&key, net.now).is_some())
        .collect();
    assert!(holders.len() >= 8, "{}", holders.len());
    let honest = net.nodes[&holders[0]].store().get(&key, net.now).unwrap();
    assert_eq!((honest.seq, honest.value.as_slice()), (2, &b"v2"[..]));
    // Every kind of bad store, each one that would win if it were taken. The stale and
    // equal-sequence ones are genuinely signed (a replay of the old record, an equivocating
    // writer); the others are signed by the writer too, so only the rule refuses them.
    let arrive = net.now + LATENCY;
    let max_ttl = small_config().limits.max_ttl_ms;
    let mut bad_sig = Record::sign(&ws, b"name", b"forged", 3, arrive + 60_000).unwrap();
    bad_sig.value = b"forged!".to_vec();
    use messages::Refusal::*;
    let bad: Vec<(&str, Record, messages::Refusal)> = vec![
        ("bad signature", bad_sig, Invalid),
        (
            "stale sequence",
            Record::sign(&ws, b"name", b"v1", 1, arrive + 60_000).unwrap(),
            Conflict,
        ),
        (
            "equal sequence, other value",
            Record::sign(&ws, b"name", b"other", 2, arrive + 60_000).unwrap(),
            Conflict,
        ),
        (
            "expired",
            Record::sign(&ws, b"name", b"forged", 3, arrive).unwrap(),
            Invalid,
        ),
        (
            "expiry too far",
            Record::sign(&ws, b"name", b"forged", 3, arrive + max_ttl + 1).unwrap(),
            Invalid,
        ),
        (
            "oversized",
            Record::sign(&ws, b"name", &[0; 1025], 3, arrive + 60_000).unwrap(),
            Invalid,
        ),
    ];
    let attacker = Key(*secret(999).public().as_bytes());
    net.spy = Some(attacker);
    let before: BTreeMap<Key, (DhtCounters, usize)> = holders
        .iter()
        .map(|h| {
            let d = &net.nodes[h];
            (*h, (d.counters(), d.store().records().len()))
        })
        .collect();
    for h in &holders {
        for (i, (_, r, _)) in bad.iter().enumerate() {
            net.inject(
                attacker,
                *h,
                &Message::Request {
                    id: i as u64,
                    body: Request::Store { record: r.clone() },
                },
            );
        }
    }
    net.run();
    // (a) Every one refused, for its reason.
    let mut answers = 0;
    for (from, m) in &net.spied {
        let Message::Response {
            id,
            body: Response::Stored {
                accepted, refusal, ..
            },
        } = m
        else {
            panic!("{m:?}")
        };
        let (what, _, why) = &bad[*id as usize];
        assert_eq!(
            (*accepted, *refusal),
            (false, Some(*why)),
            "{what} at {from:?}"
        );
        answers += 1;
    }
    assert_eq!(answers, holders.len() * bad.len());
    // (b) (c) Every holder kept its one row, the honest record, and counted 4 invalid
    // records and 2 conflicts.
    for h in &holders {
        let d = &net.nodes[h];
        let (c0, rows) = before[h];
        let c = d.counters();
        assert_eq!(c.invalid_records - c0.invalid_records, 4, "{h:?}");
        assert_eq!(c.conflicts - c0.conflicts, 2, "{h:?}");
        assert_eq!(d.store().records().len(), rows, "{h:?}");
        assert_eq!(d.store().get(&key, net.now), Some(honest.clone()), "{h:?}");
    }
    // (d) A reader still gets the honest record (the attacker, now in the holders' tables,
    // never answers a request: the get goes around it).
    assert!(!holders.contains(&reader));
    let now = net.now;
    let op = net.node(&reader).get(&writer.0, b"name", now).unwrap();
    net.run();
    assert_eq!(net.result(reader, op).0, Outcome::Record(Some(honest)));
}

#[test]
fn bad_records_in_value_responses_are_dropped_and_the_get_returns_the_honest_one() {
    let mut net = Net::new(40, small_config());
    let ids = net.ids();
    let writer = ids[3];
    let ws = net.secrets[&writer].clone();
    let now = net.now;
    let op = net
        .node(&writer)
        .put(b"name", b"honest", 600_000, None, now)
        .unwrap();
    net.run();
    assert_eq!(net.result(writer, op).0, Outcome::Put(Ok(1)));
    let key = super::record::record_key(&writer.0, b"name");
    let holder = ids
        .iter()
        .find(|id| net.nodes[*id].store().get(&key, net.now).is_some())
        .unwrap();
    let honest = net.nodes[holder].store().get(&key, net.now).unwrap();
    // A hostile node sitting right next to the key, known to everyone (it pinged them all).
    let liar = flip(key, 1);
    net.spy = Some(liar);
    for id in &ids {
        net.inject(
            liar,
            *id,
            &Message::Request {
                id: 0,
                body: Request::Ping,
            },
        );
    }
    net.run();
    let reader = ids
        .iter()
        .copied()
        .find(|id| *id != writer && net.nodes[id].store().get(&key, net.now).is_none())
        .unwrap();
    // Each bad copy has a higher sequence than the honest one: it would win if taken.
    let now = net.now;
    let max_ttl = small_config().limits.max_ttl_ms;
    let mut bad_sig = Record::sign(&ws, b"name", b"forged", 2, now + 60_000).unwrap();
    bad_sig.value = b"forged!".to_vec();
    let bad = [
        ("bad signature", bad_sig),
        (
            "another publisher's record (wrong key)",
            Record::sign(&secret(999), b"name", b"forged", 2, now + 60_000).unwrap(),
        ),
        (
            "expired",
            Record::sign(&ws, b"name", b"forged", 2, now - 1).unwrap(),
        ),
        (
            "expiry too far",
            Record::sign(&ws, b"name", b"forged", 2, now + max_ttl + 3_600_000).unwrap(),
        ),
        (
            "oversized",
            Record::sign(&ws, b"name", &[7; 1025], 2, now + 60_000).unwrap(),
        ),
    ];
    for (what, record) in bad {
        let before = net.nodes[&reader].counters();
        let outcome = get_through_liar(&mut net, reader, writer, key, &record, what);
        assert_eq!(outcome, Outcome::Record(Some(honest.clone())), "{what}");
        let c = net.nodes[&reader].counters();
        assert_eq!(c.invalid_records - before.invalid_records, 1, "{what}");
        assert_eq!(
            c.unexpected_responses, before.unexpected_responses,
            "{what}"
        );
        // Nobody took the bad copy in.
        for d in net.nodes.values() {
            assert!(d.store().records().iter().all(|r| *r != record), "{what}");
        }
    }
    // A valid but stale copy, or an equivocating copy of the same sequence, is no bad input
    // to a get: it just loses (to the higher sequence, to the majority of holders).
    for (what, record) in [
        (
            "stale",
            Record::sign(&ws, b"name", b"old", 0, now + 60_000).unwrap(),
        ),
        (
            "equal sequence, other value",
            Record::sign(&ws, b"name", b"other", 1, now + 60_000).unwrap(),
        ),
    ] {
        let outcome = get_through_liar(&mut net, reader, writer, key, &record, what);
        assert_eq!(outcome, Outcome::Record(Some(honest.clone())), "{what}");
    }
}

/// Has the spy answer every `FindValue` with `reply` (and anything else with no contacts),
/// runs a get of (`writer`, "name") on `reader`, checks the spy was asked, and returns the
/// outcome.
fn get_through_liar(
    net: &mut Net,
    reader: Key,
    writer: Key,
    key: Key,
    reply: &Record,
    what: &str,
) -> Outcome {
    let reply = reply.clone();
    net.responder = Some(Box::new(move |_, request| match request {
        Request::FindValue { .. } => Response::Value {
            record: Some(reply.clone()),
            contacts: vec![],
        },
        _ => Response::Nodes { contacts: vec![] },
    }));
    net.spied.clear();
    let now = net.now;
    let op = net.node(&reader).get(&writer.0, b"name", now).unwrap();
    net.run();
    assert!(
        net.spied_requests(reader)
            .contains(&Request::FindValue { key }),
        "{what}: the liar was asked"
    );
    net.result(reader, op).0
}

#[test]
fn value_size_and_expiry_limits_are_exact_at_the_boundary() {
    let config = DhtConfig {
        limits: RecordLimits {
            max_value: 300,
            max_ttl_ms: 100_000,
            ..RecordLimits::default()
        },
        ..small_config()
    };
    let mut net = Net::new(10, config);
    let ids = net.ids();
    let target = ids[0];
    let attacker = secret(999);
    let attacker_id = Key(*attacker.public().as_bytes());
    net.spy = Some(attacker_id);
    let arrive = net.now + LATENCY;
    let sign = |name: &[u8], len: usize, expires: u64| {
        Record::sign(&attacker, name, &vec![1; len], 1, expires).unwrap()
    };
    let cases = [
        (sign(b"at the size limit", 300, arrive + 1_000), true),
        (sign(b"a byte over", 301, arrive + 1_000), false),
        (sign(b"ttl at the limit", 1, arrive + 100_000), true),
        (sign(b"ttl a ms over", 1, arrive + 100_001), false),
        (sign(b"expires on arrival", 1, arrive), false),
        (sign(b"expires a ms later", 1, arrive + 1), true),
    ];
    for (i, (r, _)) in cases.iter().enumerate() {
        net.inject(
            attacker_id,
            target,
            &Message::Request {
                id: i as u64,
                body: Request::Store { record: r.clone() },
            },
        );
    }
    net.run();
    assert_eq!(net.now, arrive);
    let got: Vec<bool> = net
        .spied
        .iter()
        .map(|(_, m)| match m {
            Message::Response {
                body: Response::Stored { accepted, .. },
                ..
            } => *accepted,
            other => panic!("{other:?}"),
        })
        .collect();
    let want: Vec<bool> = cases.iter().map(|(_, ok)| *ok).collect();
    assert_eq!(got, want);
    let d = &net.nodes[&target];
    assert_eq!(d.counters().invalid_records, 3);
    assert_eq!(d.store().records().len(), 3);
    for (r, ok) in &cases {
        assert_eq!(d.store().get(&r.key(), arrive).is_some(), *ok);
    }
    // Through the API: a value of exactly the configured limit is put and read back; one
    // byte more, or a TTL past the limit, is refused before anything is sent.
    let (writer, reader) = (ids[2], ids[7]);
    let now = net.now;
    let op = net
        .node(&writer)
        .put(b"big", &[2; 300], 100_000, None, now)
        .unwrap();
    net.run();
    assert_eq!(net.result(writer, op).0, Outcome::Put(Ok(1)));
    let now = net.now;
    let op = net.node(&reader).get(&writer.0, b"big", now).unwrap();
    net.run();
    assert!(matches!(net.result(reader, op).0, Outcome::Record(Some(r)) if r.value == [2; 300]));
    let sent = net.nodes[&writer].counters().requests_out;
    let now = net.now;
    let e = net
        .node(&writer)
        .put(b"big", &[2; 301], 100_000, None, now)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = net
        .node(&writer)
        .put(b"big", b"v", 100_001, None, now)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(net.nodes[&writer].counters().requests_out, sent);
    assert_eq!(net.nodes[&writer].ops_running(), 0);
}

#[test]
fn a_flood_from_many_identities_is_bounded_by_the_tracked_peer_limit() {
    let config = DhtConfig {
        requests_per_sec: 10,
        request_burst: 20,
        max_tracked_peers: 8,
        ..small_config()
    };
    let mut net = Net::new(5, config);
    let ids = net.ids();
    let victim = ids[0];
    // Every honest peer's budget has long refilled: their limiter slots are free to reuse.
    net.now += 10_000;
    let table = net.nodes[&victim].routing().len();
    let before = net.nodes[&victim].counters();
    let sybils: Vec<Key> = (1..=100).map(|n| flip(Key([0xaa; 32]), n)).collect();
    for (i, s) in sybils.iter().enumerate() {
        net.inject(
            *s,
            victim,
            &Message::Request {
                id: i as u64,
                body: Request::FindNode { target: *s },
            },
        );
    }
    net.run();
    // Only as many identities as are tracked get an answer; the rest are dropped, counted.
    let c = net.nodes[&victim].counters();
    assert_eq!(c.requests_in - before.requests_in, 8);
    assert_eq!(c.rate_limited - before.rate_limited, 92);
    // Only those answered reached the routing table (as contacts or waiting replacements).
    let r = net.nodes[&victim].routing();
    let sybils_held = sybils.iter().filter(|s| r.contains(s)).count();
    assert!(sybils_held <= 8, "{sybils_held}");
    assert!(r.len() + r.replacement_len() <= table + 8);
    // Once the flooders' budgets refill (a token a tenth of a second), an honest peer is
    // served again and its lookup finds the true closest.
    net.now += 200;
    let honest = ids[1];
    let target = Key([1; 32]);
    let now = net.now;
    let op = net.node(&honest).find_node(target, now).unwrap();
    let limited = net.nodes[&victim].counters().rate_limited;
    net.run();
    let want: Vec<Key> = true_closest(&ids, &target, 5)
        .into_iter()
        .filter(|k| *k != honest)
        .collect();
    assert_eq!(net.result(honest, op).0, Outcome::Nodes(want));
    assert_eq!(net.nodes[&victim].counters().rate_limited, limited);
}

#[test]
fn a_peer_returning_thousands_of_contacts_adds_only_k_of_them() {
    let mut net = Net::new(40, small_config());
    let ids = net.ids();
    let me = ids[0];
    // The target, the liar and its made-up contacts all sit next to us, so the liar is asked
    // first and its 3000 contacts are closer to the target than any real node.
    let target = flip(me, 0x1_0000);
    let liar = flip(me, 1);
    let fakes: Vec<Key> = (1..=3000).map(|n| flip(target, n)).collect();
    net.plant_spy(liar, me);
    let reply = fakes.clone();
    net.responder = Some(Box::new(move |_, _| Response::Nodes {
        contacts: reply.clone(),
    }));
    let before = net.nodes[&me].counters();
    let now = net.now;
    let op = net.node(&me).find_node(target, now).unwrap();
    net.run();
    assert_eq!(net.spied_requests(me), vec![Request::FindNode { target }]);
    let (outcome, stats) = net.result(me, op);
    // (d) The lookup ends with the true closest: the liar (which did answer) and the honest
    // nodes, none of the made-up contacts.
    let mut everyone = ids.clone();
    everyone.push(liar);
    let want: Vec<Key> = closest_but(&everyone, &target, me, 8);
    assert_eq!(outcome, Outcome::Nodes(want));
    // (a) (c) All but k were dropped and counted; the k kept were each asked once, did not
    // answer (they do not exist) and cost a timeout each.
    let c = net.nodes[&me].counters();
    assert_eq!(c.contacts_truncated - before.contacts_truncated, 2992);
    assert_eq!(stats.contacts_truncated, 2992);
    assert_eq!(c.contacts_ignored, before.contacts_ignored);
    assert_eq!(c.timeouts - before.timeouts, 8);
    assert_eq!(stats.failures, 8);
    // (b) None of them entered the routing table.
    let r = net.nodes[&me].routing();
    assert!(fakes.iter().all(|f| !r.contains(f)));
    assert_eq!(net.nodes[&me].ops_running(), 0);
}

#[test]
fn a_response_over_the_frame_limit_is_undecodable_and_costs_one_timeout() {
    let mut net = Net::new(40, small_config());
    let ids = net.ids();
    let me = ids[0];
    let target = flip(me, 0x1_0000);
    let liar = flip(me, 1);
    net.plant_spy(liar, me);
    // 4000 contacts: 128 KB, past the 96 KB frame limit (our encoder would refuse it; the
    // liar does not use ours).
    let fakes: Vec<Key> = (1..=4000).map(|n| flip(target, n)).collect();
    let big = Message::Response {
        id: 0,
        body: Response::Nodes {
            contacts: fakes.clone(),
        },
    };
    assert!(postcard::to_stdvec(&big).unwrap().len() > messages::MAX_MESSAGE_BYTES);
    net.responder = Some(Box::new(move |_, _| Response::Nodes {
        contacts: fakes.clone(),
    }));
    let before = net.nodes[&me].counters();
    let now = net.now;
    let op = net.node(&me).find_node(target, now).unwrap();
    net.run();
    assert_eq!(net.spied_requests(me), vec![Request::FindNode { target }]);
    let (outcome, stats) = net.result(me, op);
    let c = net.nodes[&me].counters();
    assert_eq!(c.undecodable - before.undecodable, 1);
    assert_eq!(c.contacts_truncated, before.contacts_truncated);
    assert_eq!(c.timeouts - before.timeouts, 1);
    assert_eq!(stats.failures, 1);
    // The liar counts as silent: the lookup ends with the true closest honest nodes.
    let want: Vec<Key> = closest_but(&ids, &target, me, 8);
    assert_eq!(outcome, Outcome::Nodes(want));
}

#[test]
fn contacts_that_are_all_the_responder_or_all_the_requester_are_ignored() {
    let mut net = Net::new(40, small_config());
    let ids = net.ids();
    let me = ids[0];
    let target = flip(me, 0x1_0000);
    let liar = flip(me, 1);
    net.plant_spy(liar, me);
    let mut everyone = ids.clone();
    everyone.push(liar);
    let want: Vec<Key> = closest_but(&everyone, &target, me, 8);
    for (what, all_self) in [("all the responder", true), ("all the requester", false)] {
        // k copies: nothing is truncated, every one is ignored.
        net.responder = Some(Box::new(move |asker, _| Response::Nodes {
            contacts: vec![if all_self { liar } else { asker }; 8],
        }));
        net.spied.clear();
        let before = net.nodes[&me].counters();
        let table = net.nodes[&me].routing().len();
        let now = net.now;
        let op = net.node(&me).find_node(target, now).unwrap();
        net.run();
        assert_eq!(
            net.spied_requests(me),
            vec![Request::FindNode { target }],
            "{what}: asked once"
        );
        let (outcome, stats) = net.result(me, op);
        assert_eq!(outcome, Outcome::Nodes(want.clone()), "{what}");
        let c = net.nodes[&me].counters();
        assert_eq!(c.contacts_ignored - before.contacts_ignored, 8, "{what}");
        assert_eq!(stats.contacts_ignored, 8, "{what}");
        assert_eq!(c.contacts_truncated, before.contacts_truncated, "{what}");
        assert_eq!(c.timeouts, before.timeouts, "{what}");
        assert_eq!(stats.failures, 0, "{what}");
        assert!(!net.nodes[&me].routing().contains(&me));
        assert!(net.nodes[&me].routing().len() <= table, "{what}");
    }
}

#[test]
fn silent_peers_closest_to_the_target_cost_a_timeout_each_and_are_dropped() {
    let config = small_config();
    let mut net = Net::new(40, config);
    let ids = net.ids();
    let me = ids[0];
    let target = flip(me, 0x1_0000);
    // Four peers nearer the target than any live node, in our table, that never answer:
    // more than alpha, so for a while every request in flight is to one of them.
    let silent: Vec<Key> = (1..=4).map(|n| flip(target, n)).collect();
    for s in &silent {
        net.silent.insert(*s);
        net.inject(
            *s,
            me,
            &Message::Request {
                id: 0,
                body: Request::Ping,
            },
        );
    }
    net.run();
    assert!(silent.iter().all(|s| net.nodes[&me].routing().contains(s)));
    let want: Vec<Key> = closest_but(&ids, &target, me, 8);
    // A contact is dropped after MAX_FAILURES (3) failed requests: three lookups each pay
    // one timeout per silent peer, the fourth pays none.
    for round in 1..=4u64 {
        let before = net.nodes[&me].counters();
        let start = net.now;
        let now = net.now;
        let op = net.node(&me).find_node(target, now).unwrap();
        net.run();
        let (outcome, stats) = net.result(me, op);
        assert_eq!(outcome, Outcome::Nodes(want.clone()), "round {round}");
        let expected = if round <= 3 { 4 } else { 0 };
        let c = net.nodes[&me].counters();
        assert_eq!(c.timeouts - before.timeouts, expected, "round {round}");
        assert_eq!(u64::from(stats.failures), expected, "round {round}");
        // Alpha requests wait out their timeouts together: two timeouts' worth at most.
        assert!(
            net.now - start <= 2 * config.request_timeout_ms + 20 * LATENCY,
            "round {round}: {} ms",
            net.now - start
        );
        assert_eq!(net.nodes[&me].ops_running(), 0);
        let still = silent
            .iter()
            .filter(|s| net.nodes[&me].routing().contains(s))
            .count();
        assert_eq!(still, if round < 3 { 4 } else { 0 }, "round {round}");
    }
}

#[test]
fn a_response_of_the_wrong_kind_is_counted_and_the_lookup_goes_on() {
    let mut net = Net::new(40, small_config());
    let ids = net.ids();
    let me = ids[0];
    let target = flip(me, 0x1_0000);
    let liar = flip(me, 1);
    net.plant_spy(liar, me);
    // A pong to every find_node: well formed, but not an answer to the question.
    net.responder = Some(Box::new(|_, _| Response::Pong));
    let want: Vec<Key> = closest_but(&ids, &target, me, 8);
    let before = net.nodes[&me].counters();
    let now = net.now;
    let op = net.node(&me).find_node(target, now).unwrap();
    net.run();
    let (outcome, stats) = net.result(me, op);
    assert_eq!(outcome, Outcome::Nodes(want), "honest nodes still answer");
    assert_eq!(stats.failures, 1, "the liar failed this lookup");
    let c = net.nodes[&me].counters();
    assert_eq!(c.unexpected_responses - before.unexpected_responses, 1);
    assert_eq!(c.timeouts, before.timeouts, "answered, so no timeout");
    let failures = (0..256)
        .flat_map(|i| net.nodes[&me].routing().bucket(i).iter())
        .find(|contact| contact.id == liar)
        .map(|contact| contact.failures);
    assert_eq!(failures, Some(1), "the liar's failure is on its contact");
}

#[test]
fn provider_announcements_are_renewed_before_they_expire() {
    let mut net = Net::new(30, small_config());
    let ids = net.ids();
    let provider = ids[3];
    let t0 = net.now;
    // Provided for three hours; each announcement lives one hour (provider_ttl_ms).
    let op = net
        .node(&provider)
        .provide(b"long-lived", 3 * 3_600_000, t0)
        .unwrap();
    net.run();
    assert!(matches!(net.result(provider, op).0, Outcome::Provided(n) if n >= 8));
    assert!(net.nodes[&provider].next_deadline() <= t0 + 1_800_000);
    // Every 30 minutes for 2.5 hours every node's timers fire: the provider re-announces,
    // so at each point a lookup finds it with an expiry renewed past the first hour.
    for round in 1..=5u64 {
        net.now = t0 + round * 1_800_000 + 1;
        let now = net.now;
        for id in &ids {
            net.node(id).handle_timeout(now);
            net.flush(*id);
        }
        net.run();
        let now = net.now;
        let op = net.node(&ids[20]).providers(b"long-lived", now).unwrap();
        net.run();
        let Outcome::Providers(list) = net.result(ids[20], op).0 else {
            panic!("round {round}: not a providers outcome")
        };
        assert_eq!(list.len(), 1, "round {round}");
        assert_eq!(list[0].provider, provider.0);
        assert!(
            list[0].expires_at_ms > now + 1_800_000 - 10_000,
            "round {round}: renewed, not the first announcement"
        );
    }
    // Past the three hours the provider stops announcing and the record lapses.
    net.now = t0 + 4 * 3_600_000 + 1;
    let now = net.now;
    for id in &ids {
        net.node(id).handle_timeout(now);
        net.flush(*id);
    }
    net.run();
    let now = net.now;
    let op = net.node(&ids[20]).providers(b"long-lived", now).unwrap();
    net.run();
    assert_eq!(net.result(ids[20], op).0, Outcome::Providers(vec![]));
}

#[test]
fn provide_ttl_is_bounded_by_the_record_ttl_limit_on_both_sides() {
    let mut net = Net::new(5, small_config());
    let ids = net.ids();
    let max = small_config().limits.max_ttl_ms;
    let now = net.now;
    let node = net.node(&ids[1]);
    assert!(node.provide(b"k", max, now).is_ok());
    let err = node.provide(b"k", max + 1, now).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = node.provide(b"k", 0, now).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Misconfigured announcement lifetimes are refused up front.
    let bad = DhtConfig {
        reprovide_interval_ms: DhtConfig::default().provider_ttl_ms,
        ..DhtConfig::default()
    };
    assert!(bad.validate().is_err());
    let bad = DhtConfig {
        provider_ttl_ms: DhtConfig::default().limits.max_provider_ttl_ms + 1,
        ..DhtConfig::default()
    };
    assert!(bad.validate().is_err());
    assert!(DhtConfig::default().validate().is_ok());
}

#[test]
fn a_probed_peer_joins_the_routing_table_only_if_it_answers() {
    let mut net = Net::new(12, small_config());
    let ids = net.ids();
    let me = ids[0];
    // A node that never joined: `me` can only learn of it outside the DHT (as over a sync
    // connection).
    let s = secret(999);
    let d = Dht::new(
        s.clone(),
        MemoryStore::default(),
        small_config(),
        [9; 32],
        net.now,
    )
    .unwrap();
    let stranger = d.id();
    net.nodes.insert(stranger, d);
    net.secrets.insert(stranger, s);
    assert!(!net.nodes[&me].routing().contains(&stranger));
    let sent = net.nodes[&me].counters().requests_out;
    let now = net.now;
    // Probing ourselves or a known contact sends nothing.
    net.node(&me).probe(me, now);
    net.node(&me).probe(ids[1], now);
    net.flush(me);
    assert!(net.nodes[&me].routing().contains(&ids[1]));
    assert_eq!(net.nodes[&me].counters().requests_out, sent);
    // A silent peer is pinged once, times out, and never joins.
    let silent = flip(me, 7);
    net.silent.insert(silent);
    let timeouts = net.nodes[&me].counters().timeouts;
    net.node(&me).probe(silent, now);
    net.run();
    // A probe is no operation, so the test network's run leaves its timer alone: fire it.
    net.now += small_config().request_timeout_ms;
    let now = net.now;
    net.node(&me).handle_timeout(now);
    net.flush(me);
    assert_eq!(net.nodes[&me].counters().requests_out, sent + 1);
    assert_eq!(net.nodes[&me].counters().timeouts, timeouts + 1);
    assert!(!net.nodes[&me].routing().contains(&silent));
    // A peer that speaks the DHT answers the ping and joins.
    let now = net.now;
    net.node(&me).probe(stranger, now);
    net.run();
    assert!(net.nodes[&me].routing().contains(&stranger));
}
