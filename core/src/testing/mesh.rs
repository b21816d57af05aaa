//! An in-memory mesh of sync sessions: nodes with real SQLite stores, each session the one
//! driver core ([`SessionDriver`]) every transport runs, frames carried through
//! `frame::encode`/`decode` over in-order queues, delivered one at a time in an order a seeded
//! [`Rng`] picks. No clock, no links, no loss: what it exercises is the protocol and the
//! driver's policies (ingest, fan-out, batching, sync states) under every interleaving. Two
//! nodes make the in-memory session pair; `covey-sim` adds time, networks and faults.
//!
//! Like the rest of `testing`, a broken invariant panics with the seed in its message.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use iroh::SecretKey;

use super::Rng;
use crate::crypto::Secret32;
use crate::group::GroupKeys;
use crate::store::{self, Durability, GroupRow, Store};
use crate::sync::SyncState;
use crate::sync::driver::{
    Action, Direction, DriverConfig, RangeRead, ReadStep, SessionBinding, SessionDriver, Transmit,
};
use crate::sync::engine::{self, Draft, RangeBatch};
use crate::sync::session::Timers;
use crate::sync::verify::{MAX_UNSIGNED_RUN, MAX_UNSIGNED_RUN_BYTES, Rules, Unverified};
use crate::sync::{RateLimits, WarnKind};
use crate::wire::entry::{Id32, SignedEntry};
use crate::wire::frame::{self, LENGTH_PREFIX, Message};

/// Most frames one run delivers before it counts as never settling.
const MAX_STEPS: u64 = 1_000_000;

/// One node of the mesh.
#[derive(Debug)]
pub struct MeshNode {
    secret: SecretKey,
    /// The node's store.
    pub store: Store,
    groups: BTreeMap<Id32, GroupKeys>,
    sessions: BTreeMap<usize, SessionDriver>,
    /// Per peer, the session's entries held back for a later signature.
    unverified: BTreeMap<usize, Unverified>,
    last_cursor: u64,
    /// Sync states its sessions reported: (peer, group, state).
    pub states: Vec<(usize, Id32, SyncState)>,
    /// Warnings its sessions raised: (peer, kind, message).
    pub warns: Vec<(usize, WarnKind, String)>,
    /// Peers whose session it closed.
    pub closes: Vec<usize>,
    /// Frontiers it sent: (peer, group).
    pub frontiers_sent: Vec<(usize, Id32)>,
    /// Batches it was asked to ingest: (peer, group).
    pub ingests: Vec<(usize, Id32)>,
    /// Entries stored from peers, over every ingest.
    pub stored: u64,
    /// Entries received that it already held.
    pub duplicates: u64,
    /// Every rejection, as `reason: detail`.
    pub rejected: Vec<String>,
}

impl MeshNode {
    /// The node's id, as entry headers carry it.
    pub fn me(&self) -> Id32 {
        *self.secret.public().as_bytes()
    }

    /// Whether the node is in `group`.
    pub fn is_in(&self, group: &Id32) -> bool {
        self.groups.contains_key(group)
    }

    /// The frontier a session would read for `group` (every group this node is in listed).
    pub fn snapshot(&self, load: &[Id32]) -> engine::Snapshot {
        let joined: BTreeSet<Id32> = self.groups.keys().copied().collect();
        self.store
            .read(|c| engine::snapshot(c, &joined, load))
            .unwrap_or_else(|e| panic!("reading a snapshot: {e}"))
    }

    fn record_cursor(&mut self, cursor: u64, ctx: &str) {
        assert!(
            cursor > self.last_cursor,
            "{ctx}: cursor {cursor} after {}",
            self.last_cursor
        );
        self.last_cursor = cursor;
    }
}

/// Nodes, the sessions between them and the frames in flight.
#[derive(Debug)]
pub struct SessionMesh {
    /// The nodes, by index.
    pub nodes: Vec<MeshNode>,
    /// In-order frame queues, keyed by (from, to).
    pub queues: BTreeMap<(usize, usize), VecDeque<Vec<u8>>>,
    /// Frames delivered so far.
    pub frames: u64,
    rng: Rng,
    ctx: String,
    config: DriverConfig,
    max_payload: usize,
    batch_entries: usize,
}

impl SessionMesh {
    /// `n` nodes with stores under `dir`, delivery order drawn from `seed`. Range batches
    /// carry at most `batch_entries` entries, so small logs still span several frames;
    /// payloads are at most `max_payload` bytes.
    pub fn new(dir: &Path, n: usize, seed: u64, batch_entries: usize, max_payload: usize) -> Self {
        let nodes = (0..n)
            .map(|i| {
                let node_dir = dir.join(format!("node-{i}"));
                std::fs::create_dir_all(&node_dir)
                    .unwrap_or_else(|e| panic!("creating {}: {e}", node_dir.display()));
                let store = Store::open(&node_dir, Durability::Normal)
                    .unwrap_or_else(|e| panic!("opening node {i}'s store: {e}"));
                let mut secret = [0u8; 32];
                secret[0] = i as u8 + 1;
                secret[1] = 0x5e;
                MeshNode {
                    secret: SecretKey::from_bytes(&secret),
                    store,
                    groups: BTreeMap::new(),
                    sessions: BTreeMap::new(),
                    unverified: BTreeMap::new(),
                    last_cursor: 0,
                    states: Vec::new(),
                    warns: Vec::new(),
                    closes: Vec::new(),
                    frontiers_sent: Vec::new(),
                    ingests: Vec::new(),
                    stored: 0,
                    duplicates: 0,
                    rejected: Vec::new(),
                }
            })
            .collect();
        Self {
            nodes,
            queues: BTreeMap::new(),
            frames: 0,
            rng: Rng::new(seed),
            ctx: format!("seed {seed}"),
            config: DriverConfig {
                max_frame_bytes: 1 << 20,
                rate_limits: RateLimits::default(),
                timers: Timers::default(),
            },
            max_payload,
            batch_entries: batch_entries.max(1),
        }
    }

    /// Joins the group of `keys` at node `at`, announcing it to live sessions as the node
    /// does.
    pub fn join(&mut self, at: usize, keys: &GroupKeys) {
        let group = keys.id.0;
        let node = &mut self.nodes[at];
        let row = GroupRow {
            group_id: group,
            name: "mesh".into(),
            kind: 0,
            epoch: keys.epoch,
        };
        let joined_ms = node.groups.len() as u64;
        node.store
            .write(|tx| store::insert_group(tx, &row, joined_ms))
            .unwrap_or_else(|e| panic!("node {at} joining: {e}"));
        node.groups.insert(group, keys.clone());
        let view = node.snapshot(&[group]);
        let me = node.me();
        let peers: Vec<usize> = node.sessions.keys().copied().collect();
        let peer_ids: Vec<(usize, Id32)> =
            peers.into_iter().map(|p| (p, self.nodes[p].me())).collect();
        let node = &mut self.nodes[at];
        for (peer, peer_id) in peer_ids {
            if let Some(session) = node.sessions.get_mut(&peer) {
                session.on_group_joined(group, keys.pair(&me, &peer_id), &view);
            }
        }
        self.settle(at);
    }

    /// Opens a session pair between `a` (which dials) and `b` and queues both hellos.
    pub fn connect(&mut self, a: usize, b: usize) {
        assert_ne!(a, b);
        // What both ends' TLS sessions would export; fresh per connection.
        let binding = Secret32::from_bytes(self.rng.bytes32());
        for (me, peer, direction) in [(a, b, Direction::Outgoing), (b, a, Direction::Incoming)] {
            let me_id = self.nodes[me].me();
            let peer_id = self.nodes[peer].me();
            let node = &self.nodes[me];
            let pairs: Vec<_> = node
                .groups
                .iter()
                .map(|(group, keys)| (*group, keys.pair(&me_id, &peer_id)))
                .collect();
            let session_binding = SessionBinding {
                direction,
                binding: *binding.expose(),
                padding_key: self.rng.bytes32(),
            };
            let mut session = SessionDriver::new(
                &self.config,
                pairs,
                session_binding,
                format!("{peer}"),
                self.frames,
            );
            session.start();
            let old = self.nodes[me].sessions.insert(peer, session);
            assert!(
                old.is_none(),
                "{}: {me} and {peer} already connected",
                self.ctx
            );
            self.settle(me);
        }
    }

    /// Drops the session pair and whatever was in flight between them.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        self.nodes[a].sessions.remove(&b);
        self.nodes[b].sessions.remove(&a);
        self.nodes[a].unverified.remove(&b);
        self.nodes[b].unverified.remove(&a);
        self.queues.remove(&(a, b));
        self.queues.remove(&(b, a));
    }

    /// Publishes at node `at` as the node does (`engine::append_own_entry`: seq and prev from
    /// the head, lamport one past the group's highest), then tells every session.
    pub fn publish(&mut self, at: usize, group: Id32, payload: &[u8]) -> SignedEntry {
        let ctx = self.ctx.clone();
        let mut nonce = [0u8; crate::crypto::aead::NONCE_LEN];
        self.rng.fill(&mut nonce);
        let node = &mut self.nodes[at];
        let keys = node
            .groups
            .get(&group)
            .unwrap_or_else(|| panic!("{ctx}: node {at} publishes in a group it is not in"))
            .clone();
        let secret = node.secret.clone();
        let (cursor, entry) = node
            .store
            .write(|tx| {
                let lamport = store::max_lamport(tx, &group)? + 1;
                let draft = Draft {
                    lamport,
                    timestamp_ms: 1_700_000_000_000 + lamport,
                    nonce,
                    payload,
                };
                engine::append_own_entry(tx, &keys, &secret, draft)
            })
            .unwrap_or_else(|e| panic!("{ctx}: publish failed: {e}"));
        node.record_cursor(cursor, &ctx);
        let (me, seq) = (node.me(), entry.header().seq);
        for session in node.sessions.values_mut() {
            session.on_local_entry(group, me, seq);
        }
        self.settle(at);
        entry
    }

    /// Carries out everything node `at`'s sessions asked for until none asks for more:
    /// actions (ingest, fan-out, states, warnings), then frames and range reads.
    fn settle(&mut self, at: usize) {
        loop {
            let mut progressed = false;
            let peers: Vec<usize> = self.nodes[at].sessions.keys().copied().collect();
            for peer in peers {
                progressed |= self.carry_actions(at, peer);
                progressed |= self.transmit(at, peer);
            }
            if !progressed {
                return;
            }
        }
    }

    fn carry_actions(&mut self, at: usize, peer: usize) -> bool {
        let ctx = self.ctx.clone();
        let now = self.frames;
        let max_ciphertext = self.max_payload + crate::crypto::aead::TAG_LEN;
        let node = &mut self.nodes[at];
        let Some(session) = node.sessions.get_mut(&peer) else {
            return false;
        };
        let actions = session.take_actions();
        let any = !actions.is_empty();
        for action in actions {
            match action {
                Action::Ingest { group, entries } => {
                    node.ingests.push((peer, group));
                    let keys = node.groups.get(&group).cloned().unwrap_or_else(|| {
                        panic!("{ctx}: node {at} asked to ingest for a group it is not in")
                    });
                    let rules = Rules::of(&keys, max_ciphertext);
                    let held = node.unverified.entry(peer).or_default();
                    let done = node
                        .store
                        .write(|tx| {
                            engine::ingest_batch(tx, &rules, Some(&keys.content_key), held, entries)
                        })
                        .unwrap_or_else(|e| panic!("{ctx}: ingest failed: {e}"));
                    for (cursor, _) in &done.outcome.stored {
                        node.record_cursor(*cursor, &ctx);
                    }
                    node.stored += done.outcome.stored.len() as u64;
                    node.duplicates += done.outcome.duplicates;
                    node.rejected.extend(
                        done.outcome
                            .rejected
                            .iter()
                            .map(|r| format!("{}: {}", r.reason, r.detail)),
                    );
                    if let Some(session) = node.sessions.get_mut(&peer) {
                        session.on_ingested(now, group, &done);
                    }
                }
                Action::FanOut { group, heads } => {
                    // Store and forward, as the node does: every session hears of what was
                    // stored, including the one it came from (which must not echo it back).
                    for session in node.sessions.values_mut() {
                        for head in &heads {
                            session.on_local_entry(group, head.author, head.seq);
                        }
                    }
                }
                Action::StateChanged { group, state } => node.states.push((peer, group, state)),
                Action::Warn { kind, message } => node.warns.push((peer, kind, message)),
                Action::Close { .. } => node.closes.push(peer),
                // Receipts are the node's to persist; the mesh checks delivery by content.
                Action::RecordReceipts { .. } | Action::Count { .. } => {}
            }
        }
        any
    }

    fn transmit(&mut self, at: usize, peer: usize) -> bool {
        let ctx = self.ctx.clone();
        let batch_entries = self.batch_entries;
        let peer_id = self.nodes[peer].me();
        let node = &mut self.nodes[at];
        let me = node.me();
        let mut sent = Vec::new();
        let Some(session) = node.sessions.get_mut(&peer) else {
            return false;
        };
        while let Some(transmit) = session.poll_transmit() {
            match transmit {
                Transmit::Frame(bytes) => sent.push(bytes),
                Transmit::Read(read) => {
                    let batch = read_batch(&node.store, read, batch_entries, &ctx);
                    if let Some(bytes) = session.on_range_batch(read, batch).frame {
                        sent.push(bytes);
                    }
                }
                Transmit::Finish | Transmit::Abort(_) => break,
            }
        }
        let any = !sent.is_empty();
        for bytes in sent {
            if let Ok(Message::Frontier { group: tag, .. }) = frame::decode(&bytes[LENGTH_PREFIX..])
            {
                let group = node
                    .groups
                    .iter()
                    .find(|(_, keys)| keys.session_tag(&me, &peer_id).0 == tag)
                    .map(|(g, _)| *g)
                    .unwrap_or_else(|| {
                        panic!("{ctx}: node {at} sent peer {peer} a frontier of no group it is in")
                    });
                node.frontiers_sent.push((peer, group));
            }
            self.queues.entry((at, peer)).or_default().push_back(bytes);
        }
        any
    }

    /// Delivers one frame from a randomly chosen non-empty queue; false when all are empty.
    pub fn step(&mut self) -> bool {
        let ready: Vec<(usize, usize)> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if ready.is_empty() {
            return false;
        }
        let (from, to) = ready[self.rng.index(ready.len())];
        let Some(bytes) = self
            .queues
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
        else {
            return false;
        };
        self.frames += 1;
        let ctx = &self.ctx;
        let prefix: [u8; LENGTH_PREFIX] = bytes[..LENGTH_PREFIX]
            .try_into()
            .unwrap_or_else(|_| panic!("{ctx}: a frame shorter than its prefix"));
        let len = frame::frame_len(prefix, self.config.max_frame_bytes)
            .unwrap_or_else(|e| panic!("{ctx}: frame length: {e}"));
        assert_eq!(len, bytes.len() - LENGTH_PREFIX, "{ctx}: frame length");
        let message = frame::decode(&bytes[LENGTH_PREFIX..]);
        let now = self.frames;
        let node = &mut self.nodes[to];
        let Some(session) = node.sessions.get_mut(&from) else {
            return true;
        };
        let mut read = session.on_frame(now, message, bytes.len());
        loop {
            match read {
                ReadStep::Load(needed) => {
                    let joined: BTreeSet<Id32> = node.groups.keys().copied().collect();
                    let load = needed.groups(&joined);
                    let view = node.snapshot(&load);
                    let Some(session) = node.sessions.get_mut(&from) else {
                        break;
                    };
                    read = session.on_view(now, &view);
                }
                ReadStep::WaitUntil(_) => panic!("{ctx}: rate limited in the mesh"),
                ReadStep::Next | ReadStep::Stop => break,
            }
        }
        self.settle(to);
        true
    }

    /// Delivers frames until none is in flight.
    pub fn run(&mut self) {
        let mut steps = 0u64;
        while self.step() {
            steps += 1;
            assert!(steps < MAX_STEPS, "{}: no quiescence", self.ctx);
        }
    }

    /// Runs to quiescence while `publishes` entries are published at random members of
    /// `group` and `edges` come up at random moments, both interleaved with deliveries.
    pub fn run_live(&mut self, group: Id32, mut publishes: usize, mut edges: Vec<(usize, usize)>) {
        let members: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_in(&group))
            .collect();
        let mut n = 0;
        let mut steps = 0u64;
        loop {
            steps += 1;
            assert!(steps < MAX_STEPS, "{}: no quiescence", self.ctx);
            let idle = self.queues.values().all(VecDeque::is_empty);
            if !edges.is_empty() && (idle || self.rng.below(6) == 0) {
                let (a, b) = edges.remove(0);
                self.connect(a, b);
            } else if publishes > 0 && (idle || self.rng.below(3) == 0) {
                let at = members[self.rng.index(members.len())];
                n += 1;
                self.publish(at, group, format!("live {n} at {at}").as_bytes());
                publishes -= 1;
            } else if !self.step() {
                break;
            }
        }
    }

    /// Node `at`'s entries of `group`, in cursor order.
    pub fn node_entries(&self, at: usize, group: &Id32) -> Vec<(u64, SignedEntry)> {
        let ctx = &self.ctx;
        let mut last = 0;
        self.nodes[at]
            .store
            .read(|c| store::entries_after(c, group, 0, u32::MAX))
            .unwrap_or_else(|e| panic!("{ctx}: reading node {at}'s entries: {e}"))
            .into_iter()
            .map(|row| {
                assert!(row.cursor > last, "{ctx}: node {at}'s cursors go backwards");
                last = row.cursor;
                let entry = SignedEntry::decode(row.raw, usize::MAX)
                    .unwrap_or_else(|e| panic!("{ctx}: node {at} holds a bad entry: {e}"));
                (row.cursor, entry)
            })
            .collect()
    }

    /// Every member holds the same `total` entries of `group`, each once, as valid chains;
    /// nothing was rejected or warned about (but replays, which crossing messages make
    /// possible in a mesh); every session between members ended UpToDate.
    pub fn assert_converged(&self, group: Id32, members: &[usize], total: usize) {
        let ctx = &self.ctx;
        assert!(
            self.queues.values().all(VecDeque::is_empty),
            "{ctx}: frames in flight"
        );
        let mut reference: Option<BTreeSet<Id32>> = None;
        for &i in members {
            let node = &self.nodes[i];
            let entries = self.node_entries(i, &group);
            assert_eq!(
                entries.len(),
                total,
                "{ctx}: node {i} holds {} of {total}",
                entries.len()
            );
            let ids: BTreeSet<Id32> = entries.iter().map(|(_, e)| *e.id()).collect();
            assert_eq!(
                ids.len(),
                entries.len(),
                "{ctx}: node {i} stored an entry twice"
            );
            let keys = node
                .groups
                .get(&group)
                .unwrap_or_else(|| panic!("{ctx}: node {i} is not in the group"));
            assert_valid_chains(&entries, &keys.content_key, &format!("{ctx}: node {i}"));
            match &reference {
                None => reference = Some(ids),
                Some(r) => assert_eq!(&ids, r, "{ctx}: node {i} holds other entries"),
            }
            assert!(
                node.rejected.is_empty(),
                "{ctx}: node {i} rejected {:?}",
                node.rejected
            );
            // A replay warning can be a race, not a fault: in a mesh an entry fanned out by
            // a peer may cross our ack of the same entry from another path on the wire.
            let warns: Vec<_> = node
                .warns
                .iter()
                .filter(|(_, kind, _)| *kind != WarnKind::ReplayedEntries)
                .collect();
            assert!(warns.is_empty(), "{ctx}: node {i} warned {warns:?}");
            assert!(
                node.closes.is_empty(),
                "{ctx}: node {i} closed {:?}",
                node.closes
            );
            for &peer in node.sessions.keys().filter(|p| members.contains(p)) {
                let last = node
                    .states
                    .iter()
                    .rev()
                    .find(|(p, g, _)| *p == peer && *g == group)
                    .map(|(_, _, s)| *s);
                assert_eq!(
                    last,
                    Some(SyncState::UpToDate),
                    "{ctx}: node {i}'s session with {peer} did not end UpToDate"
                );
            }
        }
    }

    /// The sync states node `at` reported for `group` with `peer`, in order.
    pub fn states_with(&self, at: usize, peer: usize, group: Id32) -> Vec<SyncState> {
        self.nodes[at]
            .states
            .iter()
            .filter(|(p, g, _)| *p == peer && *g == group)
            .map(|(_, _, s)| *s)
            .collect()
    }

    /// Duplicates received over all nodes.
    pub fn total_duplicates(&self) -> u64 {
        self.nodes.iter().map(|n| n.duplicates).sum()
    }
}

/// Reads at most `batch_entries` entries of `read`'s range (and at most a frame), the rest
/// handed back as the range's remainder.
fn read_batch(store: &Store, read: RangeRead, batch_entries: usize, ctx: &str) -> RangeBatch {
    let end = read
        .up_to_seq
        .min(read.after_seq.saturating_add(batch_entries as u64));
    let mut batch = store
        .read(|c| {
            engine::read_range_batch(
                c,
                read.group,
                read.author,
                read.after_seq,
                end,
                read.max_frame,
            )
        })
        .unwrap_or_else(|e| panic!("{ctx}: reading a range: {e}"));
    batch.rest = match batch.rest {
        Some((after, _)) => Some((after, read.up_to_seq)),
        None if batch.message.is_some() && end < read.up_to_seq => Some((end, read.up_to_seq)),
        None => None,
    };
    batch
}

/// Each author's entries form one chain: seqs 1..=n in order, each linking to the one before,
/// every entry valid by the signature rule (its own signature verifies, or a later entry's
/// within its window does: `verify::MAX_UNSIGNED_RUN`, `verify::MAX_UNSIGNED_RUN_BYTES`) and
/// every payload opening under `content_key`.
pub fn assert_valid_chains(entries: &[(u64, SignedEntry)], content_key: &Secret32, ctx: &str) {
    let mut by_author: BTreeMap<Id32, Vec<&SignedEntry>> = BTreeMap::new();
    for (_, e) in entries {
        by_author.entry(e.header().author).or_default().push(e);
    }
    for (author, mut log) in by_author {
        log.sort_by_key(|e| e.header().seq);
        let mut prev = [0u8; 32];
        for (i, e) in log.iter().enumerate() {
            let h = e.header();
            assert_eq!(h.seq, i as u64 + 1, "{ctx}: author {author:02x?} has a gap");
            assert_eq!(
                h.prev, prev,
                "{ctx}: author {author:02x?} seq {} breaks the chain",
                h.seq
            );
            if let Err(err) = e.verify_signature() {
                // Vouched for by an `f` in `(i, i + MAX_UNSIGNED_RUN]` whose signature
                // verifies, with entries `i..f` totalling at most `MAX_UNSIGNED_RUN_BYTES`.
                let mut bytes = 0usize;
                let mut vouched = false;
                for f in i + 1..log.len() {
                    bytes += log[f - 1].raw().len();
                    if f - i > MAX_UNSIGNED_RUN || bytes > MAX_UNSIGNED_RUN_BYTES {
                        break;
                    }
                    if log[f].verify_signature().is_ok() {
                        vouched = true;
                        break;
                    }
                }
                assert!(
                    vouched,
                    "{ctx}: author {author:02x?} seq {}: {err}, and no later entry vouches for it",
                    h.seq
                );
            }
            if let Err(e) = e.open(content_key) {
                panic!(
                    "{ctx}: author {author:02x?} seq {} does not open: {e}",
                    h.seq
                );
            }
            prev = *e.id();
        }
    }
}
