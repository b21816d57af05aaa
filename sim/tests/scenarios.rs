//! The issue-4 scenarios, each over several seeds (set `COVEY_SIM_SEED` to run one). Every
//! scenario runs to convergence and passes `check::check_invariants`: no loss, nothing stored
//! twice, valid chains, one convergent order, no leaks across groups, bounded memory.

use covey_sim::check::outbox_bound;
use covey_sim::scenarios::{self, CatchUpParams, MeshParams};
use covey_sim::seeds::run_seeds;

const TARGET: &str = "scenarios";

/// A smaller lossy mesh, for the reproducibility test.
fn small_mesh() -> MeshParams {
    MeshParams {
        nodes: 12,
        publish_for_ms: 8_000,
        publish_chance: 0.05,
        ..MeshParams::default()
    }
}

#[test]
fn a_run_is_a_function_of_its_seed() {
    let params = small_mesh();
    let first = scenarios::lossy_mesh(11, &params).unwrap();
    let again = scenarios::lossy_mesh(11, &params).unwrap();
    let other = scenarios::lossy_mesh(12, &params).unwrap();
    assert!(first.published > 0 && first.stats.frames > 0);
    assert_eq!(first.trace_hash, again.trace_hash, "same seed, same run");
    assert_eq!(first.stats, again.stats);
    assert_eq!(first.counters, again.counters);
    assert_ne!(
        first.trace_hash, other.trace_hash,
        "another seed, another run"
    );
}

#[test]
fn a_fifty_node_group_converges_over_lossy_jittery_links() {
    let params = MeshParams::default();
    let reports = run_seeds(TARGET, "a_fifty_node_group", &[1, 2, 3], |seed| {
        let r = scenarios::lossy_mesh(seed, &params)?;
        if r.nodes != 50 || r.published < 100 {
            return Err(format!("too small a run: {r:?}"));
        }
        // Loss and jitter were felt: some entries arrived from several peers at once.
        if r.counters.sync.duplicates == 0 {
            return Err("no duplicate ever arrived: the network was not lossy or racy".into());
        }
        Ok(r)
    });
    for r in reports {
        eprintln!(
            "seed {}: {} entries, converged {} ms after the last publish, {:.0} node-s per wall s, peak outbox {} items",
            r.seed,
            r.published,
            r.convergence_ms(),
            r.node_seconds_per_wall_second(),
            r.check.peaks.max_outbox_items
        );
    }
}

#[test]
fn two_halves_publish_apart_then_heal_and_converge() {
    run_seeds(TARGET, "two_halves", &[1, 2, 3], |seed| {
        let r = scenarios::partition_heal(seed)?;
        // Cut sessions were noticed by the failure detector, not by luck.
        if r.counters.sync.peer_timeouts == 0 {
            return Err("no session timed out across the cut".into());
        }
        Ok(r)
    });
}

#[test]
fn a_tenth_of_the_nodes_crash_and_restart_repeatedly() {
    run_seeds(TARGET, "a_tenth_of_the_nodes_crash", &[1, 2, 3], |seed| {
        let r = scenarios::crash_restart(seed)?;
        if r.counters.crashes < 6 {
            return Err(format!("only {} crashes", r.counters.crashes));
        }
        Ok(r)
    });
}

#[test]
fn a_node_100k_entries_behind_catches_up_with_flat_memory() {
    let small = CatchUpParams {
        backlog: 5_000,
        ..CatchUpParams::default()
    };
    let big = CatchUpParams::default();
    run_seeds(TARGET, "a_node_100k_entries_behind", &[1], |seed| {
        let s = scenarios::catch_up(seed, &small)?;
        let b = scenarios::catch_up(seed, &big)?;
        eprintln!(
            "seed {seed}: {} entries in {:.2} simulated s ({:.1} MB/s simulated, {:.1} MB/s wall); \
             peak outbox source {} / stale {} items; peak in flight {} B; peak unread {} B \
             ({} entries: outbox {} / {}, in flight {} B)",
            b.backlog,
            b.catch_up_ms as f64 / 1000.0,
            b.sim_mb_per_s(),
            b.wall_mb_per_s(),
            b.source.max_outbox_items,
            b.receiver.max_outbox_items,
            b.source.max_in_flight_bytes,
            b.receiver.max_inbox_bytes,
            s.backlog,
            s.source.max_outbox_items,
            s.receiver.max_outbox_items,
            s.source.max_in_flight_bytes,
        );
        if b.live_published == 0 {
            return Err("no live entry was published during the catch-up".into());
        }
        // Memory flat in the backlog: 20x the backlog, the same handful of outbox items, and
        // never more than a window plus a frame in flight or unread.
        for r in [&s, &b] {
            for (who, p) in [("source", r.source), ("stale", r.receiver)] {
                if p.max_outbox_items > r.outbox_bound {
                    return Err(format!(
                        "{who} outbox peaked at {} items with a {} backlog",
                        p.max_outbox_items, r.backlog
                    ));
                }
                if p.max_in_flight_bytes > r.window_bound || p.max_inbox_bytes > r.window_bound {
                    return Err(format!("{who} buffered beyond the window: {p:?}"));
                }
            }
        }
        if b.source.max_outbox_items > s.source.max_outbox_items + 2 {
            return Err(format!(
                "outbox grew with the backlog: {} items at {}, {} at {}",
                s.source.max_outbox_items, s.backlog, b.source.max_outbox_items, b.backlog
            ));
        }
        // The window was actually used: the sender was back-pressured, not idle.
        if b.source.max_in_flight_bytes < (1 << 20) / 2 {
            return Err(format!(
                "only {} bytes ever in flight: flow control was never exercised",
                b.source.max_in_flight_bytes
            ));
        }
        Ok(())
    });
}

#[test]
fn a_slow_receiver_back_pressures_the_sender() {
    // The stale node processes 2 MB/s over a 1 Gbit/s link: the sender must wait on the
    // window, not buffer the backlog.
    let params = CatchUpParams {
        backlog: 20_000,
        receiver_bytes_per_ms: Some(2_000),
        ..CatchUpParams::default()
    };
    run_seeds(TARGET, "a_slow_receiver", &[1], |seed| {
        let r = scenarios::catch_up(seed, &params)?;
        let bytes = (r.backlog * (r.payload_bytes + 200)) as u64;
        // It cannot have gone faster than the receiver processes.
        if r.catch_up_ms < bytes / 2_000 {
            return Err(format!(
                "caught up in {} ms, faster than the receiver can read",
                r.catch_up_ms
            ));
        }
        if r.source.max_in_flight_bytes > r.window_bound
            || r.receiver.max_inbox_bytes > r.window_bound
        {
            return Err(format!(
                "buffers beyond the window: {:?} / {:?}",
                r.source, r.receiver
            ));
        }
        if r.source.max_outbox_items > outbox_bound([2]) {
            return Err(format!("outbox peaked at {}", r.source.max_outbox_items));
        }
        Ok(())
    });
}

#[test]
fn five_groups_sharing_peers_never_leak_entries() {
    run_seeds(TARGET, "five_groups_sharing_peers", &[1, 2, 3], |seed| {
        let r = scenarios::shared_groups(seed)?;
        if r.check.entries == 0 {
            return Err("nothing stored".into());
        }
        Ok(r)
    });
}

#[test]
fn two_nodes_publishing_at_the_same_instant_order_identically() {
    run_seeds(
        TARGET,
        "two_nodes_publishing_at_the_same_instant",
        &[1, 2, 3],
        |seed| {
            let r = scenarios::simultaneous(seed)?;
            if r.tied_rounds != 6 {
                return Err(format!("{} of 6 rounds tied", r.tied_rounds));
            }
            // Each publisher stored its own entry first, yet the convergent order is one.
            if r.local_orders_differed != 6 {
                return Err(format!(
                    "local orders differed in {} of 6 rounds",
                    r.local_orders_differed
                ));
            }
            Ok(r)
        },
    );
}

#[test]
fn the_invariant_check_catches_loss_and_leaks() {
    use covey_core::store::{self, GroupRow};
    use covey_core::testing::Author;
    use covey_sim::check::check_invariants;
    use covey_sim::{NodeOptions, Sim, SimConfig};

    let mut sim = Sim::new(SimConfig::new(5));
    let group = sim.add_group();
    let other = sim.add_group();
    let nodes: Vec<_> = (0..3)
        .map(|_| sim.add_node(NodeOptions::default()).unwrap())
        .collect();
    for &n in &nodes {
        sim.join(n, group).unwrap();
    }
    sim.connect(nodes[0], nodes[1]);
    for i in 0..3u8 {
        sim.publish(nodes[0], group, &[i; 10]).unwrap();
    }
    sim.run_for(5_000);
    // Node 2 was never connected: the check reports its loss.
    assert!(!sim.converged());
    let err = check_invariants(&sim).unwrap_err();
    assert!(
        err.contains("node 2") && err.contains("3 published entries missing"),
        "{err}"
    );

    sim.connect(nodes[2], nodes[1]);
    assert!(sim.run_until_converged(sim.now() + 30_000, 100).is_some());
    let report = check_invariants(&sim).unwrap();
    assert_eq!(report.entries, 9);

    // Plant an entry of a group node 2 is not in straight into its store: a leak.
    let keys = sim.group_keys(&other).unwrap().clone();
    let entry = Author::new(sim.node_secret(nodes[0]), keys)
        .next_at(1, b"leaked")
        .unwrap();
    sim.with_store(nodes[2], |st| {
        st.write(|tx| {
            let row = GroupRow {
                group_id: other,
                name: "other".into(),
                kind: 0,
                epoch: 0,
            };
            store::insert_group(tx, &row, 0)?;
            store::insert_entry(tx, &other, &entry)?;
            Ok(())
        })
    })
    .unwrap();
    let err = check_invariants(&sim).unwrap_err();
    assert!(
        err.contains("node 2 stores 1 entries of group") && err.contains("leak"),
        "{err}"
    );
}
