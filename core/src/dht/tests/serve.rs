//! Serving other nodes under bad input: invalid records and stores are refused and counted,
//! floods from one peer or from many identities are rate limited.

use super::*;

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
fn bad_provider_records_are_refused_and_counted() {
    use crate::dht::record::{MAX_SEALED_BYTES, provider_key};
    let mut net = Net::new(10, small_config());
    let ids = net.ids();
    let target = ids[0];
    let attacker = secret(998);
    let attacker_id = Key(*attacker.public().as_bytes());
    let now = net.now;
    let key = provider_key(b"k");
    let at_limit =
        ProviderRecord::sign_sealed(&attacker, key, now + 60_000, vec![3; MAX_SEALED_BYTES])
            .unwrap();
    // Signed by the attacker but naming someone else as the provider.
    let mut other_signer = at_limit.clone();
    other_signer.provider = *secret(997).public().as_bytes();
    let mut tampered = at_limit.clone();
    tampered.sealed[10] ^= 0xff;
    net.spy = Some(attacker_id);
    for (i, r) in [at_limit.clone(), other_signer, tampered]
        .into_iter()
        .enumerate()
    {
        net.inject(
            attacker_id,
            target,
            &Message::Request {
                id: i as u64,
                body: Request::AddProvider { record: r },
            },
        );
    }
    net.run();
    let answers: Vec<bool> = net
        .spied
        .iter()
        .map(|(_, m)| match m {
            Message::Response {
                body: Response::ProviderAdded { accepted },
                ..
            } => *accepted,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(answers, vec![true, false, false]);
    assert_eq!(net.nodes[&target].counters().invalid_records, 2);
    assert_eq!(
        net.nodes[&target].store().provider_records(),
        vec![at_limit.clone()]
    );
    // One sealed byte over the bound does not even decode: counted, never answered.
    let mut over = at_limit;
    over.sealed.push(3);
    let bytes = postcard::to_stdvec(&Message::Request {
        id: 9,
        body: Request::AddProvider { record: over },
    })
    .unwrap();
    net.inject_raw(attacker_id, target, bytes);
    net.run();
    assert_eq!(net.nodes[&target].counters().undecodable, 1);
    assert_eq!(net.spied.len(), 3, "no answer to the oversized record");
    assert_eq!(net.nodes[&target].store().provider_records().len(), 1);
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
