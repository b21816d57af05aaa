//! The DHT at 10,000 nodes (virtual time, seeded): lookup success and rounds with no dead
//! nodes, with 20% dead and under continuous churn; records on the k closest, read from
//! anywhere; one winner per sequence under concurrent compare-and-swap writers; records
//! surviving the departure of the nodes that first stored them.
//!
//! The 10,000-node network is bootstrapped once and cloned for each test.

use std::sync::OnceLock;

use covey_core::ErrorKind;
use covey_core::dht::Outcome;
use covey_sim::dht::{DhtSim, DhtSimConfig};
use iroh::SecretKey;

const SEED: u64 = 0x00c0_ffee;
const NODES: usize = 10_000;

fn network() -> DhtSim {
    static NET: OnceLock<DhtSim> = OnceLock::new();
    NET.get_or_init(|| DhtSim::new(DhtSimConfig::new(SEED, NODES)).expect("bootstrap"))
        .clone()
}

#[test]
fn lookups_meet_the_goals_with_no_and_with_20_percent_dead_nodes() {
    let mut net = network();
    assert_eq!(net.alive().len(), NODES);
    let r = net.measure_lookups(300).unwrap();
    assert_eq!(r.lookups, 300);
    assert!(r.success_rate() >= 0.999, "success {}", r.success_rate());
    assert!(
        r.median_rounds() <= 4,
        "median rounds {}",
        r.median_rounds()
    );
    assert!(
        r.median_messages() <= 40,
        "median messages {}",
        r.median_messages()
    );

    let killed = net.kill_fraction(0.2, &[]);
    assert_eq!(killed, NODES / 5);
    let r = net.measure_lookups(300).unwrap();
    assert!(r.success_rate() >= 0.99, "success {}", r.success_rate());
    assert!(
        r.median_rounds() <= 4,
        "median rounds {}",
        r.median_rounds()
    );
    assert!(r.p95_rounds() <= 8, "p95 rounds {}", r.p95_rounds());
    let (_, dropped) = net.message_counts();
    assert!(dropped > 0, "dead nodes were asked and stayed silent");
}

#[test]
fn lookups_succeed_under_continuous_churn() {
    let mut net = network();
    // Before each lookup two nodes leave and two new ones join: 400 departures in all.
    let r = net.measure_lookups_with_churn(200, 2).unwrap();
    assert_eq!(r.lookups, 200);
    assert_eq!(net.nodes().len(), NODES + 400);
    assert_eq!(net.alive().len(), NODES);
    assert!(r.success_rate() >= 0.99, "success {}", r.success_rate());
    assert!(
        r.median_rounds() <= 5,
        "median rounds {}",
        r.median_rounds()
    );
}

#[test]
fn records_are_stored_on_the_k_closest_and_found_from_anywhere() {
    let mut net = network();
    for i in 0..20 {
        let writer = net.random_alive().unwrap();
        let reader = net.random_alive().unwrap();
        let name = format!("record-{i}");
        let value = format!("value-{i}");
        let (outcome, _) = net
            .op(writer, |d, now| {
                d.put(name.as_bytes(), value.as_bytes(), 3_600_000, None, now)
            })
            .unwrap();
        assert_eq!(outcome, Outcome::Put(Ok(1)));
        let publisher = net.nodes()[writer].dht.id().0;
        let holders = net.holders(&publisher, name.as_bytes());
        assert!(holders.len() >= 18, "only {} holders", holders.len());
        let (got, stats) = net.get(reader, publisher, name.as_bytes()).unwrap();
        let got = got.expect("record found");
        assert_eq!((got.seq, got.value), (1, value.into_bytes()));
        assert!(stats.rounds <= 6);
    }
}

#[test]
fn concurrent_compare_and_swap_writers_get_one_winner_per_sequence() {
    let mut net = network();
    // One publisher identity used from four nodes at once.
    let publisher = SecretKey::from_bytes(&[42; 32]);
    let publisher_id = *publisher.public().as_bytes();
    let writers: Vec<usize> = (0..4).map(|_| net.random_alive().unwrap()).collect();
    let mut current = 0u64;
    let mut winners = Vec::new();
    for round in 0..5u64 {
        let mut ops = Vec::new();
        for (w, node) in writers.iter().enumerate() {
            let value = format!("round {round} writer {w}");
            let key = publisher.clone();
            let op = net
                .start(*node, |d, now| {
                    d.put_as(
                        &key,
                        b"cas",
                        value.as_bytes(),
                        3_600_000,
                        Some(current),
                        now,
                    )
                })
                .unwrap();
            ops.push((w, *node, op, value));
        }
        let mut won = Vec::new();
        for (w, node, op, value) in ops {
            match net.wait(node, op).unwrap().0 {
                Outcome::Put(Ok(seq)) => {
                    assert_eq!(seq, current + 1);
                    won.push((w, value));
                }
                Outcome::Put(Err(e)) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: winners {won:?}");
        // Every reader sees the winner's value at the new sequence; the next round expects it.
        let mut seen = current;
        for _ in 0..3 {
            let reader = net.random_alive().unwrap();
            let (got, _) = net.get(reader, publisher_id, b"cas").unwrap();
            let got = got.expect("record found");
            assert_eq!(got.seq, current + 1);
            assert_eq!(got.value, won[0].1.as_bytes());
            seen = got.seq;
        }
        winners.push(won[0].0);
        current = seen;
    }
    // A writer with a stale expectation is refused.
    let key = publisher.clone();
    let (outcome, _) = net
        .op(writers[0], |d, now| {
            d.put_as(&key, b"cas", b"late", 3_600_000, Some(1), now)
        })
        .unwrap();
    assert!(matches!(outcome, Outcome::Put(Err(e)) if e.kind() == ErrorKind::Conflict));
    assert_eq!(winners.len(), 5);
}

#[test]
fn records_survive_the_departure_of_the_nodes_that_first_stored_them() {
    let mut net = network();
    // Replication by holders: the publisher leaves, half the first holders leave, the rest
    // replicate, then they leave too.
    let publisher = net.random_alive().unwrap();
    let publisher_id = net.nodes()[publisher].dht.id().0;
    let (outcome, _) = net
        .op(publisher, |d, now| {
            d.put(b"kept", b"by holders", 3_600_000, None, now)
        })
        .unwrap();
    assert_eq!(outcome, Outcome::Put(Ok(1)));
    let first = net.holders(&publisher_id, b"kept");
    assert!(first.len() >= 18, "{}", first.len());
    net.kill(publisher);
    let (gone, stay) = first.split_at(first.len() / 2);
    for h in gone {
        net.kill(*h);
    }
    for h in stay {
        net.replicate(*h);
    }
    for h in stay {
        net.kill(*h);
    }
    let now_holders = net.holders(&publisher_id, b"kept");
    assert!(now_holders.len() >= 10, "{} new holders", now_holders.len());
    assert!(now_holders.iter().all(|h| !first.contains(h)));
    let reader = net.random_alive().unwrap();
    let (got, _) = net.get(reader, publisher_id, b"kept").unwrap();
    assert_eq!(got.map(|r| r.value), Some(b"by holders".to_vec()));

    // Republish by the publisher: every first holder leaves at once.
    let publisher = net.random_alive().unwrap();
    let publisher_id = net.nodes()[publisher].dht.id().0;
    net.op(publisher, |d, now| {
        d.put(b"again", b"by publisher", 3_600_000, None, now)
    })
    .unwrap();
    let first = net.holders(&publisher_id, b"again");
    for h in first.iter().filter(|h| **h != publisher) {
        net.kill(*h);
    }
    let reader = net.random_alive().unwrap();
    let (lost, _) = net.get(reader, publisher_id, b"again").unwrap();
    let alive_holders = net.holders(&publisher_id, b"again");
    assert!(
        lost.is_none() || alive_holders.contains(&publisher),
        "nobody but the publisher held it"
    );
    net.replicate(publisher);
    assert!(net.holders(&publisher_id, b"again").len() >= 10);
    let (got, _) = net.get(reader, publisher_id, b"again").unwrap();
    assert_eq!(got.map(|r| r.value), Some(b"by publisher".to_vec()));
}

#[test]
fn a_run_is_a_function_of_its_seed() {
    let run = |seed| {
        let mut sim = DhtSim::new(DhtSimConfig::new(seed, 300)).unwrap();
        let r = sim.measure_lookups(30).unwrap();
        (r, sim.message_counts(), sim.now())
    };
    let a = run(5);
    let b = run(5);
    let c = run(6);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.0.successes, 30);
}
