//! Concurrent membership changes of a managed group across a partition, over jittery links
//! (so every seed delivers in another order): after the partition heals, every member folds
//! the same membership and holds the same logs, and the outcome is the one the rule
//! (PROTOCOL.md, "Membership rule") gives for the control entries that were published.

use std::collections::BTreeSet;

use covey_core::group::control::Role;
use covey_core::group::membership::Membership;
use covey_core::wire::entry::Id32;
use covey_sim::net::LinkConfig;
use covey_sim::seeds::run_seeds;
use covey_sim::world::{NodeIdx, NodeOptions, Sim, SimConfig};

const TARGET: &str = "membership";

fn sim(seed: u64) -> Sim {
    let mut config = SimConfig::new(seed);
    config.link = LinkConfig {
        latency_ms: 20,
        jitter_ms: 40,
        loss: 0.02,
        bandwidth_bytes_per_ms: 12_500,
    };
    Sim::new(config)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The members now, as one node folds them.
fn active(m: &Membership) -> BTreeSet<Id32> {
    m.active().map(|(id, _)| *id).collect()
}

/// Every node of `nodes` that the fold of `judge` keeps folds the same membership and holds
/// the same logs; returns that membership.
fn agree(sim: &Sim, group: Id32, nodes: &[NodeIdx], judge: NodeIdx) -> Result<Membership, String> {
    let m = sim.membership(judge, group).map_err(err)?;
    let frontier = sim.frontier(judge, &group).map_err(err)?;
    for &n in nodes {
        if !m.is_active(&sim.node_id(n)) {
            continue;
        }
        let other = sim.membership(n, group).map_err(err)?;
        if other != m {
            return Err(format!(
                "node {n} folds another membership than node {judge}"
            ));
        }
        if sim.frontier(n, &group).map_err(err)? != frontier {
            return Err(format!("node {n} holds other logs than node {judge}"));
        }
    }
    Ok(m)
}

/// Five nodes: 0 creates, 1 and 2 are admins, 3 and 4 members. A partition puts {0, 3} on one
/// side and {1, 2, 4} on the other. On the left, 0 removes 1 and 3 publishes; on the right,
/// 1 removes 0, 1 adds a sixth node (racing its own removal), and 4 publishes. Then the
/// partition heals.
#[test]
fn two_admins_removing_each_other_and_an_add_racing_a_removal_converge() {
    let reports = run_seeds(TARGET, "removing_each_other", &[1, 2, 3, 4, 5, 6], |seed| {
        let mut sim = sim(seed);
        let nodes: Vec<NodeIdx> = (0..6)
            .map(|_| sim.add_node(NodeOptions::default()))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let group = sim.add_managed_group(nodes[0]).map_err(err)?;
        for (n, role) in [
            (1, Role::Admin),
            (2, Role::Admin),
            (3, Role::Member),
            (4, Role::Member),
        ] {
            sim.invite(nodes[0], group, nodes[n], role).map_err(err)?;
        }
        for i in 0..5 {
            for j in i + 1..5 {
                sim.connect(nodes[i], nodes[j]);
            }
        }
        sim.run_for(20_000);
        let before = agree(&sim, group, &nodes[..5], nodes[0])?;
        if active(&before).len() != 5 {
            return Err(format!(
                "{} members before the partition",
                active(&before).len()
            ));
        }
        let (left, right) = (
            [nodes[0], nodes[3]],
            [nodes[1], nodes[2], nodes[4], nodes[5]],
        );
        sim.partition(&left, &right);
        sim.run_for(30_000);
        sim.remove(nodes[0], group, nodes[1]).map_err(err)?;
        sim.publish(nodes[3], group, b"left side").map_err(err)?;
        sim.remove(nodes[1], group, nodes[0]).map_err(err)?;
        sim.invite(nodes[1], group, nodes[5], Role::Member)
            .map_err(err)?;
        sim.connect(nodes[5], nodes[1]);
        sim.connect(nodes[5], nodes[2]);
        sim.publish(nodes[4], group, b"right side").map_err(err)?;
        sim.run_for(30_000);
        sim.heal_all();
        sim.run_for(120_000);

        // Everyone the rule keeps agrees, whichever side they were on.
        let judge = nodes[3];
        let m = agree(&sim, group, &nodes, judge)?;
        let (zero, one) = (sim.node_id(nodes[0]), sim.node_id(nodes[1]));
        if m.is_active(&zero) == m.is_active(&one) {
            return Err("exactly one of the two admins must remain".into());
        }
        // The sixth node was added by 1 while 0 removed 1: the add stands exactly when 1
        // kept its place (else it lies past 1's cutoff).
        if m.is_active(&sim.node_id(nodes[5])) != m.is_active(&one) {
            return Err("the add racing its author's removal did not follow the rule".into());
        }
        // Both sides' data made it everywhere the rule keeps.
        for n in [nodes[2], nodes[3], nodes[4]] {
            let payloads: usize = sim.stored_entries(n, &group).map_err(err)?.len();
            if payloads != 2 {
                return Err(format!("node {n} holds {payloads} data entries, not 2"));
            }
        }
        if m.epoch() != 1 {
            return Err(format!("epoch {} after one winning removal", m.epoch()));
        }
        let winner = if m.is_active(&zero) { 0 } else { 1 };
        Ok((seed, winner, active(&m).len()))
    });
    for (seed, winner, members) in &reports {
        eprintln!("seed {seed}: node {winner} kept its place, {members} members");
    }
}

/// A member removed on one side keeps publishing there; after the heal, its entries past the
/// cutoff are gone from every node the rule keeps, and nothing it added stays.
#[test]
fn a_removed_members_later_entries_are_dropped_everywhere_after_the_heal() {
    run_seeds(TARGET, "removed_keeps_publishing", &[1, 2, 3, 4], |seed| {
        let mut sim = sim(seed);
        let nodes: Vec<NodeIdx> = (0..4)
            .map(|_| sim.add_node(NodeOptions::default()))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let group = sim.add_managed_group(nodes[0]).map_err(err)?;
        for n in 1..4 {
            sim.invite(nodes[0], group, nodes[n], Role::Member)
                .map_err(err)?;
        }
        for i in 0..4 {
            for j in i + 1..4 {
                sim.connect(nodes[i], nodes[j]);
            }
        }
        sim.publish(nodes[3], group, b"before").map_err(err)?;
        sim.run_for(20_000);
        sim.partition(&[nodes[0], nodes[1]], &[nodes[2], nodes[3]]);
        sim.run_for(30_000);
        sim.remove(nodes[0], group, nodes[3]).map_err(err)?;
        for i in 0..3 {
            sim.publish(nodes[3], group, format!("after {i}").as_bytes())
                .map_err(err)?;
        }
        sim.run_for(20_000);
        // Node 2 took them, not knowing of the removal yet.
        let taken = sim.stored_entries(nodes[2], &group).map_err(err)?.len();
        if taken != 4 {
            return Err(format!(
                "node 2 holds {taken} data entries, not the removed member's 4: {:?}",
                sim.session_peers(nodes[2])
            ));
        }
        sim.heal_all();
        sim.run_for(120_000);
        let m = agree(&sim, group, &nodes, nodes[1])?;
        if m.is_active(&sim.node_id(nodes[3])) {
            return Err("node 3 is still a member".into());
        }
        for n in [nodes[0], nodes[1], nodes[2]] {
            let held = sim.stored_entries(n, &group).map_err(err)?.len();
            if held != 1 {
                return Err(format!(
                    "node {n} holds {held} data entries; only `before` stays"
                ));
            }
        }
        if sim.counters(nodes[2]).sync.rejected_entries < 3 {
            return Err("node 2 did not count the entries it dropped".into());
        }
        Ok(())
    });
}
