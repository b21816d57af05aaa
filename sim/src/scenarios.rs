//! The scenarios of issue 4, each a function of a seed that runs to convergence and checks
//! every invariant ([`crate::check`]). The tests run them over several seeds; `sim-bench`
//! runs them to measure.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use covey_core::wire::entry::Id32;

use crate::check::{CheckReport, check_invariants, outbox_bound};
use crate::net::LinkConfig;
use crate::world::{Counters, NodeIdx, NodeOptions, Peaks, Sim, SimConfig, Stats};

/// How often scenarios look at the world while they drive it, ms.
pub const STEP_MS: u64 = 100;

/// What a scenario run came to.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Nodes simulated.
    pub nodes: usize,
    /// Entries published.
    pub published: u64,
    /// Virtual time at the end, ms.
    pub sim_ms: u64,
    /// Wall-clock time the run took.
    pub wall: Duration,
    /// Virtual time of the last publish, ms.
    pub last_publish_ms: u64,
    /// Virtual time from which the scenario measures convergence (the last publish, or the
    /// heal of a partition), ms.
    pub settle_from_ms: u64,
    /// Virtual time at which every member held everything, ms.
    pub converged_at_ms: u64,
    /// The run's fingerprint.
    pub trace_hash: String,
    /// Whole-run totals.
    pub stats: Stats,
    /// What the invariant check saw.
    pub check: CheckReport,
    /// Every node's counters, summed.
    pub counters: Counters,
}

impl RunReport {
    /// Virtual ms from [`RunReport::settle_from_ms`] until everyone held everything.
    pub fn convergence_ms(&self) -> u64 {
        self.converged_at_ms.saturating_sub(self.settle_from_ms)
    }

    /// Simulated node-seconds per wall-clock second.
    pub fn node_seconds_per_wall_second(&self) -> f64 {
        let wall = self.wall.as_secs_f64().max(1e-9);
        self.nodes as f64 * (self.sim_ms as f64 / 1000.0) / wall
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn random_payload(sim: &mut Sim, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    sim.rng().fill(&mut p);
    p
}

fn sum_counters(sim: &Sim) -> Counters {
    let mut total = Counters::default();
    for n in 0..sim.node_count() {
        let c = sim.counters(n);
        total.sync.published += c.sync.published;
        total.sync.received += c.sync.received;
        total.sync.duplicates += c.sync.duplicates;
        total.sync.rejected_entries += c.sync.rejected_entries;
        total.sync.rejected_frames += c.sync.rejected_frames;
        total.sync.incompatible_peers += c.sync.incompatible_peers;
        total.sync.replayed += c.sync.replayed;
        total.sync.dropped_frames += c.sync.dropped_frames;
        total.sync.rate_limited += c.sync.rate_limited;
        total.sync.peer_timeouts += c.sync.peer_timeouts;
        total.sessions_opened += c.sessions_opened;
        total.sessions_refused += c.sessions_refused;
        total.state_changes += c.state_changes;
        total.crashes += c.crashes;
    }
    total
}

/// Which members lag behind, for a failure message.
pub fn lag_summary(sim: &Sim) -> String {
    let mut lines = Vec::new();
    for (group, entries) in sim.ledger() {
        for node in 0..sim.node_count() {
            if !sim.is_member(node, group) {
                continue;
            }
            let held = sim.held(node, group);
            if !sim.is_up(node) || held != entries.len() as u64 {
                lines.push(format!(
                    "node {node} (up: {}) holds {held}/{} of group {}, sessions with {:?}",
                    sim.is_up(node),
                    entries.len(),
                    hex::encode(&group[..4]),
                    sim.session_peers(node)
                ));
            }
            if lines.len() >= 10 {
                return lines.join("; ");
            }
        }
    }
    lines.join("; ")
}

/// Runs until convergence (or `deadline`), checks the invariants and reports.
fn finish(
    mut sim: Sim,
    seed: u64,
    started: Instant,
    settle_from_ms: u64,
    deadline: u64,
) -> Result<RunReport, String> {
    let Some(converged_at_ms) = sim.run_until_converged(deadline, STEP_MS) else {
        return Err(format!(
            "no convergence by t={deadline} ms: {}",
            lag_summary(&sim)
        ));
    };
    // Let the last acks and pings settle, so the trace covers a quiet end.
    sim.run_for(1_000);
    let check = check_invariants(&sim)?;
    let trace_hash = sim.trace_hash().map_err(err)?;
    Ok(RunReport {
        seed,
        nodes: sim.node_count(),
        published: sim.ledger().values().map(|l| l.len() as u64).sum(),
        sim_ms: sim.now(),
        wall: started.elapsed(),
        last_publish_ms: sim.last_publish_ms(),
        settle_from_ms,
        converged_at_ms,
        trace_hash,
        stats: sim.stats(),
        check,
        counters: sum_counters(&sim),
    })
}

/// Every node publishes, each 100 ms step with probability `p`, one random payload in a
/// random group of its own, until `until`.
fn publish_randomly(
    sim: &mut Sim,
    nodes: &[NodeIdx],
    p: f64,
    payload_bytes: usize,
    until: u64,
) -> Result<(), String> {
    while sim.now() < until {
        let t = sim.now() + STEP_MS;
        sim.run_until(t);
        for &node in nodes {
            if !sim.is_up(node) || !sim.rng().chance(p) {
                continue;
            }
            let groups = sim.node_groups(node);
            if groups.is_empty() {
                continue;
            }
            let group = groups[sim.rng().index(groups.len())];
            let payload = random_payload(sim, payload_bytes);
            sim.publish(node, group, &payload).map_err(err)?;
        }
    }
    Ok(())
}

/// Adds `n` honest nodes.
fn add_nodes(sim: &mut Sim, n: usize) -> Result<Vec<NodeIdx>, String> {
    (0..n)
        .map(|_| sim.add_node(NodeOptions::default()).map_err(err))
        .collect()
}

/// `n` nodes in one group over 20 ms ± `jitter_ms` links losing `loss` of frames, dialed in a
/// ring plus random links, so one cut or one crash never leaves a node on its own.
fn ringed_group(
    seed: u64,
    n: usize,
    jitter_ms: u64,
    loss: f64,
) -> Result<(Sim, Id32, Vec<NodeIdx>), String> {
    let mut config = SimConfig::new(seed);
    config.link = LinkConfig {
        latency_ms: 20,
        jitter_ms,
        loss,
        bandwidth_bytes_per_ms: 12_500,
    };
    let mut sim = Sim::new(config);
    let group = sim.add_group();
    let nodes = add_nodes(&mut sim, n)?;
    for &node in &nodes {
        sim.join(node, group).map_err(err)?;
    }
    for i in 0..nodes.len() {
        sim.connect(nodes[i], nodes[(i + 1) % nodes.len()]);
    }
    connect_randomly(&mut sim, &nodes, 1);
    Ok((sim, group, nodes))
}

/// Dials that keep the graph connected: each node dials a random earlier one, plus `extra`
/// random others.
fn connect_randomly(sim: &mut Sim, nodes: &[NodeIdx], extra: usize) {
    for i in 1..nodes.len() {
        let j = sim.rng().index(i);
        sim.connect(nodes[i], nodes[j]);
    }
    for i in 0..nodes.len() {
        for _ in 0..extra {
            let k = sim.rng().index(nodes.len());
            if k != i {
                sim.connect(nodes[i], nodes[k]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (a) A large lossy mesh
// ---------------------------------------------------------------------------------------------

/// The 50-node lossy mesh.
#[derive(Debug, Clone)]
pub struct MeshParams {
    /// Nodes, all in one group.
    pub nodes: usize,
    /// Random dials per node beyond the one that keeps the graph connected.
    pub extra_dials: usize,
    /// Every link.
    pub link: LinkConfig,
    /// How long everyone publishes, ms.
    pub publish_for_ms: u64,
    /// Chance that a node publishes in a 100 ms step.
    pub publish_chance: f64,
    /// Payload size.
    pub payload_bytes: usize,
    /// Give up waiting for convergence this long after publishing stops, ms.
    pub settle_deadline_ms: u64,
}

impl Default for MeshParams {
    /// 50 nodes, three dials each, 30 ms ± 200 ms links with 20% loss, publishing for 20 s.
    fn default() -> Self {
        Self {
            nodes: 50,
            extra_dials: 2,
            link: LinkConfig {
                latency_ms: 30,
                jitter_ms: 200,
                loss: 0.2,
                bandwidth_bytes_per_ms: 12_500,
            },
            publish_for_ms: 20_000,
            publish_chance: 0.02,
            payload_bytes: 256,
            settle_deadline_ms: 300_000,
        }
    }
}

/// (a) Many nodes in one group over lossy, jittery links, everyone publishing for a while,
/// then quiet until everyone holds everything.
pub fn lossy_mesh(seed: u64, params: &MeshParams) -> Result<RunReport, String> {
    let started = Instant::now();
    let mut config = SimConfig::new(seed);
    config.link = params.link;
    let mut sim = Sim::new(config);
    let group = sim.add_group();
    let nodes = add_nodes(&mut sim, params.nodes)?;
    for &n in &nodes {
        sim.join(n, group).map_err(err)?;
    }
    connect_randomly(&mut sim, &nodes, params.extra_dials);
    publish_randomly(
        &mut sim,
        &nodes,
        params.publish_chance,
        params.payload_bytes,
        params.publish_for_ms,
    )?;
    let settle_from = sim.last_publish_ms();
    let deadline = sim.now() + params.settle_deadline_ms;
    finish(sim, seed, started, settle_from, deadline)
}

// ---------------------------------------------------------------------------------------------
// (b) Partition and heal
// ---------------------------------------------------------------------------------------------

/// (b) Two halves cut apart while both publish, then healed. Fails if an entry crossed the cut
/// while it was in place.
pub fn partition_heal(seed: u64) -> Result<RunReport, String> {
    let started = Instant::now();
    let (mut sim, group, nodes) = ringed_group(seed, 20, 30, 0.02)?;
    publish_randomly(&mut sim, &nodes, 0.03, 200, 5_000)?;
    let (left, right) = nodes.split_at(nodes.len() / 2);
    sim.partition(left, right);
    let cut_at = sim.now();
    publish_randomly(&mut sim, &nodes, 0.03, 200, cut_at + 45_000)?;
    // Nothing published on one side after the cut may have reached the other.
    for (side, other) in [(left, right), (right, left)] {
        let authors: BTreeSet<Id32> = other.iter().map(|n| sim.node_id(*n)).collect();
        for &node in side {
            let held = sim.stored_entries(node, &group).map_err(err)?;
            let crossed = held
                .iter()
                .filter(|(_, e)| {
                    authors.contains(&e.header().author)
                        && e.header().timestamp_ms > crate::world::EPOCH_MS + cut_at
                })
                .count();
            if crossed > 0 {
                return Err(format!(
                    "node {node} holds {crossed} entries published across the cut while it was in place"
                ));
            }
        }
    }
    if sim.converged() {
        return Err("converged while partitioned: the cut let entries through".into());
    }
    // The failure detector closed every session across the cut.
    for &node in left {
        let across: Vec<NodeIdx> = sim
            .session_peers(node)
            .into_iter()
            .filter(|p| right.contains(p))
            .collect();
        if !across.is_empty() {
            return Err(format!(
                "node {node} still has sessions across the cut with {across:?}"
            ));
        }
    }
    sim.heal_all();
    let healed_at = sim.now();
    finish(sim, seed, started, healed_at, healed_at + 240_000)
}

// ---------------------------------------------------------------------------------------------
// (c) Crashes and restarts
// ---------------------------------------------------------------------------------------------

/// (c) A tenth of the nodes crash and restart over and over while everyone publishes; their
/// stores survive, their sessions and memory do not.
pub fn crash_restart(seed: u64) -> Result<RunReport, String> {
    let started = Instant::now();
    let (mut sim, _, nodes) = ringed_group(seed, 20, 50, 0.05)?;
    let mut shuffled = nodes.clone();
    sim.rng().shuffle(&mut shuffled);
    let crashers: Vec<NodeIdx> = shuffled[..nodes.len() / 10].to_vec();
    let mut toggle_at: Vec<u64> = crashers
        .iter()
        .map(|_| 2_000 + sim_rng_range(&mut sim, 0, 3_000))
        .collect();
    let end = 60_000;
    while sim.now() < end {
        let until = sim.now() + STEP_MS;
        publish_randomly(&mut sim, &nodes, 0.03, 200, until)?;
        let now = sim.now();
        for (i, &node) in crashers.iter().enumerate() {
            if now < toggle_at[i] {
                continue;
            }
            if sim.is_up(node) {
                sim.crash(node);
                toggle_at[i] = now + sim_rng_range(&mut sim, 1_000, 4_000);
            } else {
                sim.restart(node).map_err(err)?;
                toggle_at[i] = now + sim_rng_range(&mut sim, 3_000, 8_000);
            }
        }
    }
    for &node in &crashers {
        sim.restart(node).map_err(err)?;
        let crashes = sim.counters(node).crashes;
        if crashes < 3 {
            return Err(format!("node {node} crashed only {crashes} times"));
        }
    }
    let settle_from = sim.now();
    finish(sim, seed, started, settle_from, settle_from + 240_000)
}

fn sim_rng_range(sim: &mut Sim, lo: u64, hi: u64) -> u64 {
    lo + sim.rng().below(hi.saturating_sub(lo) + 1)
}

// ---------------------------------------------------------------------------------------------
// (d) A stale node catching up
// ---------------------------------------------------------------------------------------------

/// One node far behind another.
#[derive(Debug, Clone)]
pub struct CatchUpParams {
    /// Entries the source holds that the stale node lacks.
    pub backlog: usize,
    /// Payload bytes per entry.
    pub payload_bytes: usize,
    /// The source also publishes one live entry this often during the catch-up, ms (0: no).
    pub live_every_ms: u64,
    /// The stale node processes this many bytes per ms (`None`: instantly).
    pub receiver_bytes_per_ms: Option<u64>,
    /// The link between them.
    pub link: LinkConfig,
    /// Flow-control window per stream direction, bytes.
    pub window_bytes: usize,
    /// Largest frame (and so largest batch of entries), bytes.
    pub max_frame_bytes: usize,
}

impl Default for CatchUpParams {
    /// 100,000 × 1 KiB over a 1 Gbit/s, 10 ms link, with a live entry every 50 ms.
    fn default() -> Self {
        Self {
            backlog: 100_000,
            payload_bytes: 1024,
            live_every_ms: 50,
            receiver_bytes_per_ms: None,
            link: LinkConfig {
                latency_ms: 10,
                jitter_ms: 2,
                loss: 0.0,
                bandwidth_bytes_per_ms: 125_000,
            },
            window_bytes: SimConfig::new(0).window_bytes,
            max_frame_bytes: SimConfig::new(0).max_frame_bytes,
        }
    }
}

/// What a catch-up came to.
#[derive(Debug, Clone)]
pub struct CatchUpReport {
    /// The seed.
    pub seed: u64,
    /// Backlog entries.
    pub backlog: usize,
    /// Payload bytes per entry.
    pub payload_bytes: usize,
    /// Virtual ms from the dial until the stale node held everything.
    pub catch_up_ms: u64,
    /// Wall time spent publishing the backlog.
    pub wall_setup: Duration,
    /// Wall time of the catch-up itself.
    pub wall_catch_up: Duration,
    /// Live entries published during the catch-up.
    pub live_published: u64,
    /// Peaks of the source (sender).
    pub source: Peaks,
    /// Peaks of the stale node (receiver).
    pub receiver: Peaks,
    /// The outbox bound both were held to.
    pub outbox_bound: usize,
    /// The buffered-bytes bound (window plus one frame).
    pub window_bound: usize,
    /// The run's fingerprint.
    pub trace_hash: String,
}

impl CatchUpReport {
    /// Payload megabytes (10^6) per simulated second.
    pub fn sim_mb_per_s(&self) -> f64 {
        let bytes = (self.backlog * self.payload_bytes) as f64;
        bytes / 1e6 / (self.catch_up_ms.max(1) as f64 / 1000.0)
    }

    /// Payload megabytes per wall-clock second of the catch-up.
    pub fn wall_mb_per_s(&self) -> f64 {
        let bytes = (self.backlog * self.payload_bytes) as f64;
        bytes / 1e6 / self.wall_catch_up.as_secs_f64().max(1e-9)
    }
}

/// (d) A fresh node dials one that holds a large backlog (and keeps publishing): it catches up
/// in bounded batches; neither side's outbox or buffers grow with the backlog.
pub fn catch_up(seed: u64, params: &CatchUpParams) -> Result<CatchUpReport, String> {
    let setup_started = Instant::now();
    let mut config = SimConfig::new(seed);
    config.link = params.link;
    config.window_bytes = params.window_bytes;
    config.max_frame_bytes = params.max_frame_bytes;
    let mut sim = Sim::new(config);
    let group = sim.add_group();
    let source = sim.add_node(NodeOptions::default()).map_err(err)?;
    let stale = sim
        .add_node(NodeOptions {
            proc_bytes_per_ms: params.receiver_bytes_per_ms,
            ..NodeOptions::default()
        })
        .map_err(err)?;
    sim.join(source, group).map_err(err)?;
    sim.join(stale, group).map_err(err)?;
    let mut left = params.backlog;
    while left > 0 {
        let chunk = left.min(10_000);
        sim.publish_many(source, group, chunk, params.payload_bytes)
            .map_err(err)?;
        left -= chunk;
    }
    let wall_setup = setup_started.elapsed();
    let started = Instant::now();
    let t0 = sim.now();
    sim.connect(stale, source);
    let deadline = t0 + 3_600_000;
    let mut live_published = 0;
    let mut next_live = t0 + params.live_every_ms;
    loop {
        if sim.held(stale, &group) >= params.backlog as u64 {
            break;
        }
        if sim.now() >= deadline {
            return Err(format!(
                "stale node holds {} of {} after {} ms",
                sim.held(stale, &group),
                params.backlog,
                deadline - t0
            ));
        }
        let step = if params.live_every_ms > 0 {
            next_live.min(sim.now() + STEP_MS)
        } else {
            sim.now() + STEP_MS
        };
        sim.run_until(step);
        if params.live_every_ms > 0 && sim.now() >= next_live {
            let payload = random_payload(&mut sim, params.payload_bytes);
            sim.publish(source, group, &payload).map_err(err)?;
            live_published += 1;
            next_live += params.live_every_ms;
        }
    }
    let Some(done) = sim.run_until_converged(deadline, 10) else {
        return Err(format!("live entries never arrived: {}", lag_summary(&sim)));
    };
    let wall_catch_up = started.elapsed();
    sim.run_for(1_000);
    let check = check_invariants(&sim)?;
    let bound = outbox_bound([2]);
    Ok(CatchUpReport {
        seed,
        backlog: params.backlog,
        payload_bytes: params.payload_bytes,
        catch_up_ms: done - t0,
        wall_setup,
        wall_catch_up,
        live_published,
        source: sim.peaks(source),
        receiver: sim.peaks(stale),
        outbox_bound: bound,
        window_bound: check.window_bound,
        trace_hash: sim.trace_hash().map_err(err)?,
    })
}

// ---------------------------------------------------------------------------------------------
// (e) Groups sharing peers
// ---------------------------------------------------------------------------------------------

/// (e) Five groups over one set of nodes, each node in one to three of them, sessions carrying
/// several groups at once. Entries reach every member of their group and nobody else (the
/// invariant check fails on any leak).
pub fn shared_groups(seed: u64) -> Result<RunReport, String> {
    let started = Instant::now();
    let mut config = SimConfig::new(seed);
    config.link = LinkConfig {
        latency_ms: 25,
        jitter_ms: 50,
        loss: 0.05,
        bandwidth_bytes_per_ms: 12_500,
    };
    let mut sim = Sim::new(config);
    let groups: Vec<Id32> = (0..5).map(|_| sim.add_group()).collect();
    let nodes = add_nodes(&mut sim, 30)?;
    let mut members: Vec<Vec<NodeIdx>> = vec![Vec::new(); groups.len()];
    for &n in &nodes {
        let k = 1 + sim.rng().index(3);
        let mut picks: Vec<usize> = (0..groups.len()).collect();
        sim.rng().shuffle(&mut picks);
        for &g in &picks[..k] {
            members[g].push(n);
        }
    }
    for (g, m) in members.iter_mut().enumerate() {
        while m.len() < 3 {
            let extra = nodes[sim.rng().index(nodes.len())];
            if !m.contains(&extra) {
                m.push(extra);
            }
        }
        m.sort();
        for &n in m.iter() {
            sim.join(n, groups[g]).map_err(err)?;
        }
        // Members of a group reach each other through members only: a ring per group.
        for i in 0..m.len() {
            sim.connect(m[i], m[(i + 1) % m.len()]);
        }
    }
    for &n in &nodes {
        let k = nodes[sim.rng().index(nodes.len())];
        sim.connect(n, k);
    }
    publish_randomly(&mut sim, &nodes, 0.03, 200, 25_000)?;
    let settle_from = sim.last_publish_ms();
    finish(sim, seed, started, settle_from, settle_from + 240_000)
}

// ---------------------------------------------------------------------------------------------
// (f) Publishing at the same instant
// ---------------------------------------------------------------------------------------------

/// What the simultaneous-publish scenario came to.
#[derive(Debug, Clone)]
pub struct TieReport {
    /// The run.
    pub run: RunReport,
    /// Rounds in which both entries carried the same lamport clock.
    pub tied_rounds: usize,
    /// Rounds in which the two publishers stored the pair in different local orders.
    pub local_orders_differed: usize,
}

/// (f) Two nodes publish at the same instant, round after round, with a third watching: the
/// entries tie on lamport, each publisher stores its own first, and every node still orders
/// them identically, breaking the tie by author (then seq).
pub fn simultaneous(seed: u64) -> Result<TieReport, String> {
    let started = Instant::now();
    let mut config = SimConfig::new(seed);
    config.link = LinkConfig {
        latency_ms: 40,
        jitter_ms: 10,
        loss: 0.0,
        bandwidth_bytes_per_ms: 12_500,
    };
    let mut sim = Sim::new(config);
    let group = sim.add_group();
    let nodes = add_nodes(&mut sim, 3)?;
    for &n in &nodes {
        sim.join(n, group).map_err(err)?;
    }
    sim.connect(nodes[0], nodes[1]);
    sim.connect(nodes[1], nodes[2]);
    sim.connect(nodes[2], nodes[0]);
    sim.run_for(2_000);
    let (a, b) = (nodes[0], nodes[1]);
    let mut tied_rounds = 0;
    let mut local_orders_differed = 0;
    for round in 0..6 {
        // Everyone holds everything, so both clocks agree before the round.
        if sim.run_until_converged(sim.now() + 60_000, 10).is_none() {
            return Err(format!("round {round}: no convergence before publishing"));
        }
        let ea = sim
            .publish(a, group, format!("a{round}").as_bytes())
            .map_err(err)?
            .ok_or("publisher a is down")?;
        let eb = sim
            .publish(b, group, format!("b{round}").as_bytes())
            .map_err(err)?
            .ok_or("publisher b is down")?;
        if sim.run_until_converged(sim.now() + 60_000, 10).is_none() {
            return Err(format!(
                "round {round}: no convergence: {}",
                lag_summary(&sim)
            ));
        }
        let lamport = |id: Id32| {
            sim.ledger()
                .get(&group)
                .and_then(|l| l.values().find(|e| e.id == id))
                .map(|e| e.lamport)
        };
        let (la, lb) = (lamport(ea), lamport(eb));
        if la.is_none() || la != lb {
            return Err(format!(
                "round {round}: lamports {la:?} and {lb:?} should tie"
            ));
        }
        tied_rounds += 1;
        // Local (cursor) order of the pair on each publisher, and the convergent order.
        let mut locals = Vec::new();
        for node in &nodes {
            let held = sim.stored_entries(*node, &group).map_err(err)?;
            let pos = |id: Id32| held.iter().position(|(_, e)| *e.id() == id);
            let (pa, pb) = (pos(ea), pos(eb));
            let (Some(pa), Some(pb)) = (pa, pb) else {
                return Err(format!("round {round}: node {node} lacks an entry"));
            };
            locals.push(pa < pb);
            let mut ordered: Vec<(u64, Id32, u64, Id32)> = held
                .iter()
                .map(|(_, e)| {
                    let h = e.header();
                    (h.lamport, h.author, h.seq, *e.id())
                })
                .collect();
            ordered.sort();
            let qa = ordered.iter().position(|x| x.3 == ea);
            let qb = ordered.iter().position(|x| x.3 == eb);
            let a_first = sim.node_id(a) < sim.node_id(b);
            if (qa < qb) != a_first {
                return Err(format!(
                    "round {round}: node {node} does not break the lamport tie by author"
                ));
            }
        }
        if locals[0] != locals[1] {
            local_orders_differed += 1;
        }
    }
    let settle_from = sim.last_publish_ms();
    let run = finish(sim, seed, started, settle_from, settle_from + 60_000)?;
    Ok(TieReport {
        run,
        tied_rounds,
        local_orders_differed,
    })
}
