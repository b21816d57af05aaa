//! A deterministic simulation of the DHT: thousands of real [`covey_core::dht::Dht`] machines
//! exchanging real encoded messages over a virtual network with per-message latency, on a
//! virtual clock, with every random choice drawn from one seeded [`Rng`]. A run is a function
//! of its seed.
//!
//! Nodes join one after another through a few known nodes and look themselves up; the
//! measurement helpers then run lookups, puts and gets from random live nodes, kill nodes
//! (they stop answering) and churn the network.

use std::collections::{BTreeMap, HashMap};

use covey_core::dht::{
    Dht, DhtConfig, Key, LookupStats, MemoryStore, OpId, Outcome, Output, Record, RecordStore,
    messages,
};
use covey_core::error::{CoveyError, Result};
use iroh::SecretKey;

use covey_core::testing::Rng;

/// Virtual clock origin: a plausible wall-clock time, since record expiries are wall-clock.
pub const T0_MS: u64 = 1_700_000_000_000;

/// How a DHT simulation is set up.
#[derive(Debug, Clone, Copy)]
pub struct DhtSimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Nodes to start with.
    pub nodes: usize,
    /// Known nodes each joiner is given.
    pub bootstrap_peers: usize,
    /// Smallest one-way latency of a message, ms.
    pub latency_ms: u64,
    /// Extra uniform random latency, ms.
    pub jitter_ms: u64,
    /// Whether a joiner, after its self-lookup, also refreshes every bucket above its
    /// nearest neighbour's (the Kademlia join; fuller tables, about ten times the cost).
    pub join_refresh: bool,
    /// Otherwise, how many of its farthest buckets a joiner refreshes after its self-lookup.
    pub join_refresh_farthest: usize,
    /// The machines' configuration.
    pub dht: DhtConfig,
}

impl DhtSimConfig {
    /// `nodes` nodes, seed `seed`, 20–100 ms latency, default DHT settings except that the
    /// hourly refresh and replication timers are pushed out of reach (tests trigger
    /// replication explicitly; a 10,000-node refresh storm would dominate the run).
    pub fn new(seed: u64, nodes: usize) -> Self {
        Self {
            seed,
            nodes,
            bootstrap_peers: 3,
            latency_ms: 20,
            jitter_ms: 80,
            join_refresh: false,
            join_refresh_farthest: 3,
            dht: DhtConfig {
                refresh_interval_ms: u64::MAX / 4,
                replicate_interval_ms: u64::MAX / 4,
                ..DhtConfig::default()
            },
        }
    }
}

#[derive(Debug, Clone)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
    },
}

/// One simulated node.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// The machine.
    pub dht: Dht<MemoryStore>,
    /// Its identity.
    pub secret: SecretKey,
    /// Whether it still runs; a dead node receives nothing and sends nothing.
    pub alive: bool,
    timer_at: u64,
}

/// Outcome of a batch of lookups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LookupReport {
    /// Lookups run.
    pub lookups: usize,
    /// Lookups whose result held the live node closest to the target.
    pub successes: usize,
    /// Rounds of each lookup.
    pub rounds: Vec<u32>,
    /// Requests sent by each lookup.
    pub messages: Vec<u32>,
}

impl LookupReport {
    /// Fraction of lookups that succeeded.
    pub fn success_rate(&self) -> f64 {
        if self.lookups == 0 {
            0.0
        } else {
            self.successes as f64 / self.lookups as f64
        }
    }

    /// The `p`-quantile (0..=1) of `values`.
    pub fn quantile(values: &[u32], p: f64) -> u32 {
        if values.is_empty() {
            return 0;
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i.min(v.len() - 1)]
    }

    /// Median rounds.
    pub fn median_rounds(&self) -> u32 {
        Self::quantile(&self.rounds, 0.5)
    }

    /// 95th-percentile rounds.
    pub fn p95_rounds(&self) -> u32 {
        Self::quantile(&self.rounds, 0.95)
    }

    /// Median messages.
    pub fn median_messages(&self) -> u32 {
        Self::quantile(&self.messages, 0.5)
    }

    /// 95th-percentile messages.
    pub fn p95_messages(&self) -> u32 {
        Self::quantile(&self.messages, 0.95)
    }
}

/// The simulated network.
#[derive(Debug, Clone)]
pub struct DhtSim {
    config: DhtSimConfig,
    now: u64,
    rng: Rng,
    nodes: Vec<SimNode>,
    index: HashMap<Key, usize>,
    queue: BTreeMap<(u64, u64), Event>,
    seq: u64,
    done: HashMap<(usize, OpId), (Outcome, LookupStats)>,
    delivered: u64,
    dropped: u64,
}

impl DhtSim {
    /// Builds the network: `config.nodes` nodes join one after another, each through
    /// `bootstrap_peers` random earlier nodes, and look themselves up.
    pub fn new(config: DhtSimConfig) -> Result<Self> {
        let mut sim = Self {
            config,
            now: T0_MS,
            rng: Rng::new(config.seed),
            nodes: Vec::with_capacity(config.nodes),
            index: HashMap::with_capacity(config.nodes),
            queue: BTreeMap::new(),
            seq: 0,
            done: HashMap::new(),
            delivered: 0,
            dropped: 0,
        };
        for _ in 0..config.nodes {
            sim.join()?;
        }
        Ok(sim)
    }

    /// Current virtual time, ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// All nodes, dead ones included.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// Messages delivered and dropped (to dead nodes) so far.
    pub fn message_counts(&self) -> (u64, u64) {
        (self.delivered, self.dropped)
    }

    /// Indices of live nodes.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].alive)
            .collect()
    }

    /// A random live node.
    pub fn random_alive(&mut self) -> Option<usize> {
        let alive = self.alive();
        if alive.is_empty() {
            return None;
        }
        let i = self.rng.index(alive.len());
        Some(alive[i])
    }

    /// The simulation's RNG.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Adds one node, bootstraps it through random live nodes and runs its self-lookup to the
    /// end. Returns its index.
    pub fn join(&mut self) -> Result<usize> {
        let secret = SecretKey::from_bytes(&self.rng.bytes32());
        let seed = self.rng.bytes32();
        let dht = Dht::new(
            secret.clone(),
            MemoryStore::default(),
            self.config.dht,
            seed,
            self.now,
        )?;
        let idx = self.nodes.len();
        let id = dht.id();
        let alive = self.alive();
        let mut seeds = Vec::new();
        for _ in 0..self.config.bootstrap_peers.min(alive.len()) {
            let pick = alive[self.rng.index(alive.len())];
            seeds.push(self.nodes[pick].dht.id());
        }
        self.nodes.push(SimNode {
            dht,
            secret,
            alive: true,
            timer_at: u64::MAX,
        });
        self.index.insert(id, idx);
        if !seeds.is_empty() {
            let now = self.now;
            let op = self.nodes[idx].dht.bootstrap(&seeds, now)?;
            self.after(idx);
            self.wait(idx, op)?;
            if self.config.join_refresh {
                let now = self.now;
                let ops = self.nodes[idx].dht.refresh(now, 0);
                self.after(idx);
                for op in ops {
                    self.wait(idx, op)?;
                }
            } else if self.config.join_refresh_farthest > 0 {
                let now = self.now;
                let ops = self.nodes[idx]
                    .dht
                    .refresh_farthest(now, self.config.join_refresh_farthest);
                self.after(idx);
                for op in ops {
                    self.wait(idx, op)?;
                }
            }
        }
        Ok(idx)
    }

    /// Node `idx` stops: it receives and sends nothing from now on.
    pub fn kill(&mut self, idx: usize) {
        if let Some(n) = self.nodes.get_mut(idx) {
            n.alive = false;
        }
    }

    /// Kills a random `fraction` of the live nodes, sparing `keep`.
    pub fn kill_fraction(&mut self, fraction: f64, keep: &[usize]) -> usize {
        let mut alive: Vec<usize> = self
            .alive()
            .into_iter()
            .filter(|i| !keep.contains(i))
            .collect();
        self.rng.shuffle(&mut alive);
        let n = (alive.len() as f64 * fraction).round() as usize;
        for i in &alive[..n] {
            self.kill(*i);
        }
        n
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    /// Carries out node `idx`'s outputs and keeps its timer scheduled.
    fn after(&mut self, idx: usize) {
        while let Some(action) = self.nodes[idx].dht.poll_output() {
            match action {
                Output::Send { to, message } => {
                    let Some(&dest) = self.index.get(&to) else {
                        self.dropped += 1;
                        continue;
                    };
                    match messages::encode(&message) {
                        Ok(bytes) => {
                            let delay =
                                self.config.latency_ms + self.rng.below(self.config.jitter_ms + 1);
                            self.schedule(
                                self.now + delay,
                                Event::Deliver {
                                    from: idx,
                                    to: dest,
                                    bytes,
                                },
                            );
                        }
                        Err(_) => self.dropped += 1,
                    }
                }
                Output::Done { op, outcome, stats } => {
                    self.done.insert((idx, op), (outcome, stats));
                }
            }
        }
        let deadline = self.nodes[idx].dht.next_deadline();
        if deadline < self.nodes[idx].timer_at {
            self.nodes[idx].timer_at = deadline;
            self.schedule(deadline.max(self.now), Event::Timer { node: idx });
        }
    }

    /// Processes one event; false when none is left.
    fn step(&mut self) -> bool {
        let Some(((at, _), event)) = self.queue.pop_first() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        match event {
            Event::Deliver { from, to, bytes } => {
                if !self.nodes[to].alive || !self.nodes[from].alive {
                    self.dropped += 1;
                    return true;
                }
                self.delivered += 1;
                let from_id = self.nodes[from].dht.id();
                self.nodes[to].dht.handle_bytes(from_id, &bytes, now);
                self.after(to);
            }
            Event::Timer { node } => {
                if self.nodes[node].timer_at != at {
                    return true;
                }
                self.nodes[node].timer_at = u64::MAX;
                if self.nodes[node].alive {
                    self.nodes[node].dht.handle_timeout(now);
                    self.after(node);
                }
            }
        }
        true
    }

    /// Runs until operation `op` of node `idx` finishes; returns its outcome.
    pub fn wait(&mut self, idx: usize, op: OpId) -> Result<(Outcome, LookupStats)> {
        loop {
            if let Some(r) = self.done.remove(&(idx, op)) {
                return Ok(r);
            }
            if !self.step() {
                return Err(CoveyError::internal(
                    "simulation went idle before the operation finished",
                ));
            }
        }
    }

    /// Runs every event up to virtual time `until`.
    pub fn run_until(&mut self, until: u64) {
        while self
            .queue
            .first_key_value()
            .is_some_and(|((t, _), _)| *t <= until)
        {
            self.step();
        }
        self.now = self.now.max(until);
        self.done.clear();
    }

    /// Starts an operation on node `idx` with `start` without running the network (several
    /// can be started at one virtual instant, then [`Self::wait`]ed for).
    pub fn start(
        &mut self,
        idx: usize,
        start: impl FnOnce(&mut Dht<MemoryStore>, u64) -> Result<OpId>,
    ) -> Result<OpId> {
        let now = self.now;
        let op = start(&mut self.nodes[idx].dht, now)?;
        self.after(idx);
        Ok(op)
    }

    /// Starts an operation on node `idx` with `start`, then runs until it finishes.
    pub fn op(
        &mut self,
        idx: usize,
        start: impl FnOnce(&mut Dht<MemoryStore>, u64) -> Result<OpId>,
    ) -> Result<(Outcome, LookupStats)> {
        let now = self.now;
        let op = start(&mut self.nodes[idx].dht, now)?;
        self.after(idx);
        self.wait(idx, op)
    }

    /// The live node closest to `target` (brute force).
    pub fn closest_alive(&self, target: &Key) -> Option<Key> {
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.dht.id())
            .min_by_key(|id| id.distance(target))
    }

    /// Runs `count` lookups of random keys from random live nodes, one after another; a
    /// lookup succeeds when its result holds the live node closest to the target.
    pub fn measure_lookups(&mut self, count: usize) -> Result<LookupReport> {
        let mut report = LookupReport::default();
        for _ in 0..count {
            let Some(from) = self.random_alive() else {
                break;
            };
            let target = Key(self.rng.bytes32());
            let (outcome, stats) = self.op(from, |d, now| d.find_node(target, now))?;
            let want = self.closest_alive_except(&target, from);
            report.lookups += 1;
            if matches!((outcome, want), (Outcome::Nodes(found), Some(want)) if found.contains(&want))
            {
                report.successes += 1;
            }
            report.rounds.push(stats.rounds);
            report.messages.push(stats.messages);
        }
        Ok(report)
    }

    fn closest_alive_except(&self, target: &Key, except: usize) -> Option<Key> {
        let me = self.nodes[except].dht.id();
        self.nodes
            .iter()
            .filter(|n| n.alive && n.dht.id() != me)
            .map(|n| n.dht.id())
            .min_by_key(|id| id.distance(target))
    }

    /// Like [`Self::measure_lookups`], but the network churns while it runs: before each
    /// lookup, `per_lookup` random live nodes leave and as many new nodes join.
    pub fn measure_lookups_with_churn(
        &mut self,
        count: usize,
        per_lookup: usize,
    ) -> Result<LookupReport> {
        let mut report = LookupReport::default();
        for _ in 0..count {
            for _ in 0..per_lookup {
                if let Some(victim) = self.random_alive() {
                    self.kill(victim);
                }
                self.join()?;
            }
            let part = self.measure_lookups(1)?;
            report.lookups += part.lookups;
            report.successes += part.successes;
            report.rounds.extend(part.rounds);
            report.messages.extend(part.messages);
        }
        Ok(report)
    }

    /// Live nodes whose store holds the record of (`publisher`, `name`).
    pub fn holders(&self, publisher: &[u8; 32], name: &[u8]) -> Vec<usize> {
        let key = covey_core::dht::record::record_key(publisher, name);
        (0..self.nodes.len())
            .filter(|i| {
                self.nodes[*i].alive && self.nodes[*i].dht.store().get(&key, self.now).is_some()
            })
            .collect()
    }

    /// Gets (`publisher`, `name`) from node `idx`.
    pub fn get(
        &mut self,
        idx: usize,
        publisher: [u8; 32],
        name: &[u8],
    ) -> Result<(Option<Record>, LookupStats)> {
        let (outcome, stats) = self.op(idx, |d, now| d.get(&publisher, name, now))?;
        match outcome {
            Outcome::Record(r) => Ok((r, stats)),
            other => Err(CoveyError::internal(format!("get ended in {other:?}"))),
        }
    }

    /// Makes node `idx` replicate everything it holds (and republish its own records) now,
    /// and runs until that traffic settles.
    pub fn replicate(&mut self, idx: usize) {
        let now = self.now;
        self.nodes[idx].dht.replicate(now);
        self.after(idx);
        let until = self.now + 30_000;
        self.run_until(until);
    }

    /// Approximate heap bytes per live node: routing table, store, limiter and pending maps,
    /// plus the machine itself.
    pub fn bytes_per_node(&self) -> usize {
        let alive: Vec<&SimNode> = self.nodes.iter().filter(|n| n.alive).collect();
        if alive.is_empty() {
            return 0;
        }
        let total: usize = alive
            .iter()
            .map(|n| n.dht.heap_bytes() + std::mem::size_of::<Dht<MemoryStore>>())
            .sum();
        total / alive.len()
    }

    /// Mean routing-table size over live nodes.
    pub fn mean_table_size(&self) -> f64 {
        let alive: Vec<&SimNode> = self.nodes.iter().filter(|n| n.alive).collect();
        if alive.is_empty() {
            return 0.0;
        }
        alive.iter().map(|n| n.dht.routing().len()).sum::<usize>() as f64 / alive.len() as f64
    }
}
