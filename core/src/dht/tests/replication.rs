//! The upkeep timers: bucket refresh, record replication and provider re-announcement.

use super::*;

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
