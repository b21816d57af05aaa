//! The invariants every simulated run is checked against once the network has healed and
//! every node is up again:
//!
//! - **no loss**: every entry in the ledger (everything any node published) is stored on
//!   every member of its group;
//! - **never twice**: each node stores each entry once (count equals the ledger's, ids are
//!   unique, cursors strictly increase);
//! - **valid chains**: per author, seqs run 1..=n, each entry names its predecessor's id, and
//!   the head's signature verifies (which, through the links, authenticates the chain);
//! - **convergent order**: sorting by (lamport, author, seq) gives the same sequence of ids on
//!   every member;
//! - **no leaks**: a node stores nothing of a group it is not in;
//! - **bounded memory**: each node's peak outbox size is within O(groups × authors) items and
//!   its peak buffered bytes per stream within one window plus one frame, whatever the backlog.

use std::collections::{BTreeMap, BTreeSet};

use covey_core::store;
use covey_core::wire::entry::Id32;

use crate::world::{Peaks, Sim};

/// Most violations listed in a failure message.
const MAX_LISTED: usize = 12;

/// What a successful check saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Nodes checked.
    pub nodes: usize,
    /// Stored entries checked across all nodes.
    pub entries: u64,
    /// The largest peaks over all nodes.
    pub peaks: Peaks,
    /// The outbox bound the busiest node was held to, items.
    pub outbox_bound: usize,
    /// The per-stream buffered-bytes bound (window plus one frame).
    pub window_bound: usize,
}

/// Outbox items a node in `groups` with these authors per group may hold at most: a hello, a
/// refusal, a frontier and an announce per group, a ping and a pong, and per group and author
/// one merged ack and one merged range. Nothing here grows with the backlog.
pub fn outbox_bound(authors_per_group: impl IntoIterator<Item = usize>) -> usize {
    4 + authors_per_group
        .into_iter()
        .map(|authors| 2 + 2 * authors)
        .sum::<usize>()
}

/// Checks every invariant; the error lists what broke.
pub fn check_invariants(sim: &Sim) -> Result<CheckReport, String> {
    let mut problems: Vec<String> = Vec::new();
    let mut report = CheckReport {
        window_bound: sim.config().window_bytes + sim.config().max_frame_bytes,
        ..CheckReport::default()
    };
    for e in sim.errors().iter().take(MAX_LISTED) {
        problems.push(format!("driver error: {e}"));
    }
    let ledger = sim.ledger();
    // Authors per group: those who published in it, and at least its members.
    let mut authors: BTreeMap<Id32, usize> = BTreeMap::new();
    for group in sim.groups() {
        let published: BTreeSet<Id32> = ledger
            .get(&group)
            .map(|l| l.keys().map(|(a, _)| *a).collect())
            .unwrap_or_default();
        let members = (0..sim.node_count())
            .filter(|n| sim.is_member(*n, &group) && !sim.is_scripted(*n))
            .count();
        authors.insert(group, published.len().max(members));
    }
    let mut reference_order: BTreeMap<Id32, (usize, Vec<Id32>)> = BTreeMap::new();
    for node in 0..sim.node_count() {
        if sim.is_scripted(node) {
            continue;
        }
        if !sim.is_up(node) {
            problems.push(format!("node {node} is down at the end of the run"));
            continue;
        }
        report.nodes += 1;
        let mut member_total = 0u64;
        for group in sim.groups() {
            let entries = match sim.stored_entries(node, &group) {
                Ok(e) => e,
                Err(e) => {
                    problems.push(format!("node {node}: cannot read its store: {e}"));
                    continue;
                }
            };
            report.entries += entries.len() as u64;
            let gid = hex::encode(&group[..4]);
            if !sim.is_member(node, &group) {
                if !entries.is_empty() {
                    problems.push(format!(
                        "node {node} stores {} entries of group {gid} it is not in (leak)",
                        entries.len()
                    ));
                }
                continue;
            }
            member_total += entries.len() as u64;
            let want = ledger.get(&group).cloned().unwrap_or_default();
            // Never twice: cursors strictly increasing, ids unique, count equal.
            let mut last_cursor = 0;
            let mut ids = BTreeSet::new();
            for (cursor, entry) in &entries {
                if *cursor <= last_cursor {
                    problems.push(format!(
                        "node {node} group {gid}: cursor {cursor} after {last_cursor}"
                    ));
                }
                last_cursor = *cursor;
                if !ids.insert(*entry.id()) {
                    problems.push(format!(
                        "node {node} group {gid}: entry {} stored twice",
                        hex::encode(&entry.id()[..4])
                    ));
                }
                if sim
                    .group_keys(&group)
                    .is_none_or(|keys| entry.header().group_ref != keys.entry_group)
                {
                    problems.push(format!(
                        "node {node} group {gid}: holds an entry of another group"
                    ));
                }
            }
            if entries.len() != want.len() {
                problems.push(format!(
                    "node {node} group {gid}: holds {} entries, {} were published",
                    entries.len(),
                    want.len()
                ));
            }
            // No loss, and nothing that was never published.
            let wanted: BTreeSet<Id32> = want.values().map(|e| e.id).collect();
            let missing = wanted.difference(&ids).count();
            let extra = ids.difference(&wanted).count();
            if missing > 0 || extra > 0 {
                problems.push(format!(
                    "node {node} group {gid}: {missing} published entries missing, {extra} unknown entries held"
                ));
            }
            // Valid chains.
            let mut by_author: BTreeMap<Id32, Vec<&covey_core::wire::entry::SignedEntry>> =
                BTreeMap::new();
            for (_, e) in &entries {
                by_author.entry(e.header().author).or_default().push(e);
            }
            for (author, mut log) in by_author {
                log.sort_by_key(|e| e.header().seq);
                let who = hex::encode(&author[..4]);
                let mut prev = [0u8; 32];
                for (i, e) in log.iter().enumerate() {
                    let h = e.header();
                    if h.seq != i as u64 + 1 {
                        problems.push(format!(
                            "node {node} group {gid} author {who}: seq {} at position {}",
                            h.seq,
                            i + 1
                        ));
                        break;
                    }
                    if h.prev != prev {
                        problems.push(format!(
                            "node {node} group {gid} author {who}: seq {} does not link to its predecessor",
                            h.seq
                        ));
                        break;
                    }
                    prev = *e.id();
                }
                if let Some(head) = log.last()
                    && head.verify_signature().is_err()
                {
                    problems.push(format!(
                        "node {node} group {gid} author {who}: head signature does not verify"
                    ));
                }
            }
            // Convergent order.
            let mut ordered: Vec<(u64, Id32, u64, Id32)> = entries
                .iter()
                .map(|(_, e)| {
                    let h = e.header();
                    (h.lamport, h.author, h.seq, *e.id())
                })
                .collect();
            ordered.sort();
            let order: Vec<Id32> = ordered.into_iter().map(|(_, _, _, id)| id).collect();
            match reference_order.get(&group) {
                None => {
                    reference_order.insert(group, (node, order));
                }
                Some((first, reference)) => {
                    if let Some(at) = reference.iter().zip(&order).position(|(a, b)| a != b) {
                        problems.push(format!(
                            "node {node} group {gid}: order differs from node {first} at position {at}"
                        ));
                    } else if reference.len() != order.len() {
                        problems.push(format!(
                            "node {node} group {gid}: order has {} entries, node {first}'s {}",
                            order.len(),
                            reference.len()
                        ));
                    }
                }
            }
        }
        // Nothing outside the node's groups at all.
        match sim.with_store(node, |s| s.read(store::entry_count)) {
            Ok(total) if total != member_total => problems.push(format!(
                "node {node}: {total} entries stored, {member_total} in its groups"
            )),
            Ok(_) => {}
            Err(e) => problems.push(format!("node {node}: cannot count entries: {e}")),
        }
        // Bounded memory.
        let peaks = sim.peaks(node);
        report.peaks = report.peaks.merge(peaks);
        let bound = outbox_bound(
            sim.node_groups(node)
                .iter()
                .map(|g| authors.get(g).copied().unwrap_or(0)),
        );
        report.outbox_bound = report.outbox_bound.max(bound);
        if peaks.max_outbox_items > bound {
            problems.push(format!(
                "node {node}: outbox peaked at {} items, bound {bound}",
                peaks.max_outbox_items
            ));
        }
        if peaks.max_in_flight_bytes > report.window_bound {
            problems.push(format!(
                "node {node}: {} bytes in flight on one stream, bound {}",
                peaks.max_in_flight_bytes, report.window_bound
            ));
        }
        if peaks.max_inbox_bytes > report.window_bound {
            problems.push(format!(
                "node {node}: {} bytes buffered unread from one peer, bound {}",
                peaks.max_inbox_bytes, report.window_bound
            ));
        }
        if peaks.max_sessions_per_peer > 1 {
            problems.push(format!(
                "node {node}: {} live sessions with one peer at once",
                peaks.max_sessions_per_peer
            ));
        }
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        let total = problems.len();
        problems.truncate(MAX_LISTED);
        Err(format!(
            "{total} invariant violations at t={} ms:\n  {}",
            sim.now(),
            problems.join("\n  ")
        ))
    }
}
