//! Small networks of [`Dht`] machines driven by a test loop: behaviour of the whole node,
//! including each kind of bad input of the issue.

use std::collections::{BTreeMap, HashSet};

use iroh::SecretKey;

use super::proto::{self, Message, Request, Response};
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
    /// When set, the spy answers every request with 1500 copies of itself and 1500 of the
    /// asker.
    liar: bool,
}

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
            liar: false,
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
                        if let (true, Message::Request { id, .. }) = (self.liar, &message) {
                            let mut contacts = vec![to; 1500];
                            contacts.extend(std::iter::repeat_n(from, 1500));
                            let reply = Message::Response {
                                id: *id,
                                body: Response::Nodes { contacts },
                            };
                            self.inject(to, from, &reply);
                        }
                        self.spied.push((from, message));
                        continue;
                    }
                    let bytes = proto::encode(&message).unwrap();
                    self.seq += 1;
                    self.queue
                        .insert((self.now + LATENCY, self.seq), (from, to, bytes));
                }
                Action::Done { op, outcome, stats } => self.done.push((from, op, outcome, stats)),
            }
        }
    }

    /// Injects raw bytes from `from` (not necessarily a machine) to `to`.
    fn inject(&mut self, from: Key, to: Key, message: &Message) {
        let bytes = proto::encode(message).unwrap();
        self.seq += 1;
        self.queue
            .insert((self.now + LATENCY, self.seq), (from, to, bytes));
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
        let want: Vec<Key> = true_closest(&ids, &target, 9)
            .into_iter()
            .filter(|k| *k != from)
            .take(8)
            .collect();
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
    let answers: Vec<(bool, Option<proto::Refusal>)> = net
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
    use proto::Refusal::*;
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
    net.run();
    // The burst is answered, the rest dropped and counted.
    assert_eq!(net.spied.len(), 20);
    assert_eq!(net.nodes[&ids[0]].counters().rate_limited, 480);
    // After a second the peer has budget again.
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
    assert_eq!(net.spied.len(), 21);
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
    net.liar = true;
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
    let want: Vec<Key> = true_closest(&ids, &me, 9)
        .into_iter()
        .filter(|k| *k != me)
        .take(7)
        .collect();
    for w in &want {
        assert!(found.contains(w), "missing a true neighbour");
    }
    assert!(stats.failures >= 1, "the silent peer timed out");
    let c = net.nodes[&me].counters();
    assert!(c.contacts_truncated >= 2992, "{c:?}");
    assert!(c.contacts_ignored >= 8, "{c:?}");
    assert!(c.timeouts >= 1);
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
