//! Our operations against hostile or silent peers: bad records, oversized, wrong-kind or
//! empty responses, floods of contacts and silence cost bounded work and leave the outcome
//! honest.

use super::*;

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
