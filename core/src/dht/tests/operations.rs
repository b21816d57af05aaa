//! Starting operations and their outcomes: lookups, puts and gets (with compare-and-swap),
//! provider announcements and lookups, coalesced reads, the limits a caller meets, probes and
//! ping-before-evict.

use super::*;

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
fn records_signed_elsewhere_are_stored_and_found_intact_and_never_reprovided() {
    use crate::dht::record::{MAX_SEALED_BYTES, provider_key};
    let mut net = Net::new(30, small_config());
    let ids = net.ids();
    let (announcer, searcher) = (ids[2], ids[20]);
    // A provider key that is no node's id: the announcer sends it, but it names nobody.
    let ephemeral = secret(4242);
    let key = provider_key(b"rendezvous-app-key");
    let now = net.now;
    let record =
        ProviderRecord::sign_sealed(&ephemeral, key, now + 3_600_000, vec![0xab; 100]).unwrap();
    let op = net
        .node(&announcer)
        .provide_signed(record.clone(), now)
        .unwrap();
    net.run();
    match net.result(announcer, op).0 {
        Outcome::Provided(n) => assert!(n >= 8, "{n}"),
        other => panic!("{other:?}"),
    }
    // Holders keep it byte for byte, sealed bytes and all.
    let holders = net
        .nodes
        .values()
        .filter(|d| d.store().provider_records().contains(&record))
        .count();
    assert!(holders >= 8, "{holders} holders");
    let now = net.now;
    let op = net
        .node(&searcher)
        .providers(b"rendezvous-app-key", now)
        .unwrap();
    net.run();
    assert_eq!(
        net.result(searcher, op).0,
        Outcome::Providers(vec![record.clone()])
    );
    // The re-provide timer never re-signs it (it could only sign it as this node).
    let now = net.now;
    net.node(&announcer).reprovide(now);
    assert_eq!(net.nodes[&announcer].ops_running(), 0);

    // What every holder would refuse is refused before anything is sent.
    let sent = net.nodes[&announcer].counters().requests_out;
    let now = net.now;
    let mut forged = record.clone();
    forged.provider = *secret(4243).public().as_bytes();
    let mut oversized = record.clone();
    oversized.sealed = vec![0xab; MAX_SEALED_BYTES + 1];
    let max_ttl = small_config().limits.max_provider_ttl_ms;
    let too_long =
        ProviderRecord::sign_sealed(&ephemeral, key, now + max_ttl + 1, vec![1]).unwrap();
    let node = net.node(&announcer);
    assert_eq!(
        node.provide_signed(forged, now).unwrap_err().kind(),
        ErrorKind::Crypto
    );
    for bad in [oversized, too_long] {
        assert_eq!(
            node.provide_signed(bad, now).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
    assert_eq!(net.nodes[&announcer].counters().requests_out, sent);
    // At the bounds it goes out.
    let edge =
        ProviderRecord::sign_sealed(&ephemeral, key, now + max_ttl, vec![1; MAX_SEALED_BYTES])
            .unwrap();
    assert!(net.node(&announcer).provide_signed(edge, now).is_ok());
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
