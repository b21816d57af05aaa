//! Deterministic tests of the sync session machine (`sync::session`) and of batch verification
//! (`sync::verify`), with no network and no clock.
//!
//! The first half drives real `SyncSession`s pairwise through an in-memory network: one
//! in-order frame queue per direction (every message goes through `wire::frame::encode` and
//! `decode`), a seeded xorshift picking which queue delivers next, and per node a real SQLite
//! store in a temp dir fed by the real `verify::ingest`, mirrored by an in-memory log that is
//! the session's `LocalView`. The second half tests `verify::ingest` batch by batch.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use covey_core::crypto::Secret32;
use covey_core::crypto::aead::TAG_LEN;
use covey_core::store::{self, Durability, GroupRow, Store};
use covey_core::sync::WarnKind;
use covey_core::sync::session::{
    FEATURES, LocalView, MIN_PROTOCOL_VERSION, Output, PROTOCOL_VERSION, SyncSession, SyncState,
};
use covey_core::sync::verify::{self, Outcome, Rules};
use covey_core::wire::entry::{
    ENTRY_VERSION, EntryHeader, EntryKind, HEADER_LEN, Id32, SIGNATURE_LEN, SignedEntry,
};
use covey_core::wire::frame::{self, Head, LENGTH_PREFIX, Message, RefuseCode};
use iroh::SecretKey;

// ---------------------------------------------------------------------------------------------
// Fixtures shared by both halves
// ---------------------------------------------------------------------------------------------

/// The content key every test group seals with (verification never needs it; reads do).
const CONTENT_KEY: [u8; 32] = [0x42; 32];
/// Payload limit of the simulated nodes; ciphertexts may be this plus the AEAD tag.
const MAX_PAYLOAD: usize = 200;
const MAX_CT: usize = MAX_PAYLOAD + TAG_LEN;
/// Entries per `Message::Entries` frame when carrying out a `SendRange`: small, so catch-up
/// takes several frames and batch boundaries land everywhere.
const BATCH: usize = 7;
const MAX_FRAME: usize = 1 << 20;

fn gid(n: u8) -> Id32 {
    [0xA0 | n; 32]
}

fn author_key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

fn content_key() -> Secret32 {
    Secret32::from_bytes(CONTENT_KEY)
}

/// A small deterministic PRNG (xorshift64).
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        let mut rng = Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Seals one entry the way `publish_in` does, with a deterministic nonce and timestamp.
fn make_entry(
    secret: &SecretKey,
    group: Id32,
    seq: u64,
    prev: Id32,
    lamport: u64,
    epoch: u64,
    payload: &[u8],
) -> SignedEntry {
    let mut hasher = blake3::Hasher::new();
    hasher.update(secret.public().as_bytes());
    hasher.update(&group);
    hasher.update(&seq.to_be_bytes());
    hasher.update(payload);
    let mut nonce = [0u8; 24];
    nonce.copy_from_slice(&hasher.finalize().as_bytes()[..24]);
    let header = EntryHeader {
        version: ENTRY_VERSION,
        kind: EntryKind::Data,
        group_id: group,
        author: [0u8; 32],
        seq,
        prev,
        lamport,
        epoch,
        timestamp_ms: 1_700_000_000_000 + lamport,
        nonce,
    };
    SignedEntry::seal(header, &content_key(), secret, payload).expect("seal")
}

/// `n` entries of one author's log in `group`, seq 1..=n, hash-linked.
fn chain(secret: &SecretKey, group: Id32, n: u64, tag: &str) -> Vec<SignedEntry> {
    let mut out: Vec<SignedEntry> = Vec::new();
    for seq in 1..=n {
        let prev = out.last().map(|e| *e.id()).unwrap_or([0u8; 32]);
        let payload = format!("{tag} #{seq}");
        out.push(make_entry(
            secret,
            group,
            seq,
            prev,
            seq,
            0,
            payload.as_bytes(),
        ));
    }
    out
}

fn raws(entries: &[SignedEntry]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| e.raw().to_vec()).collect()
}

fn open_store(dir: &tempfile::TempDir, groups: &[Id32]) -> Store {
    let store = Store::open(dir.path(), Durability::Normal).expect("open store");
    for (i, g) in groups.iter().enumerate() {
        add_group(&store, *g, i as u64);
    }
    store
}

fn add_group(store: &Store, group: Id32, joined_ms: u64) {
    let row = GroupRow {
        group_id: group,
        name: hex::encode(&group[..4]),
        kind: 0,
        epoch: 0,
    };
    store
        .write(|tx| store::insert_group(tx, &row, joined_ms))
        .expect("insert group");
}

/// Every stored entry of `group`, in cursor order, with cursors checked strictly increasing.
fn stored_entries(store: &Store, group: &Id32) -> Vec<(u64, SignedEntry)> {
    let rows = store
        .read(|c| store::entries_after(c, group, 0, 1_000_000))
        .expect("read entries");
    let mut last = 0;
    rows.into_iter()
        .map(|row| {
            assert!(row.cursor > last, "cursors not strictly increasing");
            last = row.cursor;
            let entry = SignedEntry::decode(row.raw, usize::MAX).expect("stored entry decodes");
            (row.cursor, entry)
        })
        .collect()
}

/// Checks that stored logs are valid chains: seq 1..=n per author, each linking to its
/// predecessor, every signature valid and every payload opening under the content key.
fn assert_valid_chains(entries: &[(u64, SignedEntry)], ctx: &str) {
    let mut by_author: BTreeMap<Id32, Vec<&SignedEntry>> = BTreeMap::new();
    for (_, e) in entries {
        by_author.entry(e.header().author).or_default().push(e);
    }
    let key = content_key();
    for (author, mut log) in by_author {
        log.sort_by_key(|e| e.header().seq);
        let mut prev = [0u8; 32];
        for (i, e) in log.iter().enumerate() {
            let who = hex::encode(&author[..4]);
            assert_eq!(
                e.header().seq,
                i as u64 + 1,
                "{ctx}: author {who} log not contiguous"
            );
            assert_eq!(
                e.header().prev,
                prev,
                "{ctx}: author {who} seq {} unlinked",
                i + 1
            );
            assert!(
                e.verify_signature().is_ok(),
                "{ctx}: author {who} seq {}",
                i + 1
            );
            assert!(
                e.open(&key).is_ok(),
                "{ctx}: author {who} seq {} opens",
                i + 1
            );
            prev = *e.id();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------------

/// A node's state as its sessions see it: groups and per-(group, author) logs in memory.
#[derive(Debug, Default)]
struct MemView {
    groups: BTreeSet<Id32>,
    logs: BTreeMap<(Id32, Id32), Vec<SignedEntry>>,
}

impl LocalView for MemView {
    fn has_group(&self, group: &Id32) -> bool {
        self.groups.contains(group)
    }

    fn groups(&self) -> Vec<Id32> {
        self.groups.iter().copied().collect()
    }

    fn frontier(&self, group: &Id32) -> Vec<Head> {
        self.logs
            .range((*group, [0u8; 32])..=(*group, [0xffu8; 32]))
            .filter(|(_, log)| !log.is_empty())
            .map(|((_, author), log)| Head {
                author: *author,
                seq: log.len() as u64,
            })
            .collect()
    }
}

struct SimNode {
    secret: SecretKey,
    _dir: tempfile::TempDir,
    store: Store,
    view: MemView,
    /// One session per connected peer, keyed by the peer's index.
    sessions: BTreeMap<usize, SyncSession>,
    last_cursor: u64,
    /// What the node's sessions asked for, by peer.
    states: Vec<(usize, Id32, SyncState)>,
    warns: Vec<(usize, &'static str, String)>,
    closes: Vec<(usize, String)>,
    frontiers_sent: Vec<(usize, Id32)>,
    ingests: Vec<(usize, Id32)>,
    /// Totals over every ingest.
    stored: u64,
    duplicates: u64,
    rejected: Vec<String>,
}

impl SimNode {
    fn me(&self) -> Id32 {
        *self.secret.public().as_bytes()
    }

    fn record_cursor(&mut self, cursor: u64, ctx: &str) {
        assert!(
            cursor > self.last_cursor,
            "{ctx}: cursor {cursor} after {}",
            self.last_cursor
        );
        self.last_cursor = cursor;
    }

    /// Verifies and stores a batch with the real `verify::ingest`, mirrors the result into the
    /// in-memory view and returns the heads newly stored per author (what the node reports).
    fn ingest(&mut self, group: Id32, entries: Vec<Vec<u8>>, ctx: &str) -> Vec<Head> {
        assert!(
            self.view.groups.contains(&group),
            "{ctx}: asked to ingest for a group the node is not in"
        );
        let rules = Rules {
            group_id: group,
            epoch: 0,
            max_ciphertext: MAX_CT,
        };
        let (outcome, frontier) = self
            .store
            .write(|tx| {
                let outcome = verify::ingest(tx, &rules, entries)?;
                let frontier = store::frontier(tx, &group)?;
                Ok((outcome, frontier))
            })
            .unwrap_or_else(|e| panic!("{ctx}: ingest failed: {e}"));
        let mut held: BTreeMap<Id32, u64> = BTreeMap::new();
        for (cursor, entry) in &outcome.stored {
            self.record_cursor(*cursor, ctx);
            let h = entry.header();
            let log = self.view.logs.entry((group, h.author)).or_default();
            assert_eq!(h.seq, log.len() as u64 + 1, "{ctx}: stored out of order");
            log.push(entry.clone());
            let seq = held.entry(h.author).or_insert(0);
            *seq = (*seq).max(h.seq);
        }
        assert_eq!(
            self.view.frontier(&group),
            frontier,
            "{ctx}: in-memory view diverged from store::frontier"
        );
        self.stored += outcome.stored.len() as u64;
        self.duplicates += outcome.duplicates;
        self.rejected.extend(
            outcome
                .rejected
                .iter()
                .map(|r| format!("{}: {}", r.reason, r.detail)),
        );
        held.into_iter()
            .map(|(author, seq)| Head { author, seq })
            .collect()
    }
}

struct Sim {
    nodes: Vec<SimNode>,
    /// In-order frame queues, keyed by (from, to).
    queues: BTreeMap<(usize, usize), VecDeque<Vec<u8>>>,
    rng: XorShift,
    ctx: String,
    frames: u64,
}

fn push_frame(
    queues: &mut BTreeMap<(usize, usize), VecDeque<Vec<u8>>>,
    from: usize,
    to: usize,
    message: &Message,
) {
    let bytes = frame::encode(message).expect("encode frame");
    queues.entry((from, to)).or_default().push_back(bytes);
}

impl Sim {
    fn new(n: usize, seed: u64) -> Self {
        let nodes = (0..n)
            .map(|i| {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = open_store(&dir, &[]);
                SimNode {
                    secret: author_key(i as u8 + 1),
                    _dir: dir,
                    store,
                    view: MemView::default(),
                    sessions: BTreeMap::new(),
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
            rng: XorShift::new(seed),
            ctx: format!("seed {seed}"),
            frames: 0,
        }
    }

    /// Joins `group` at node `at`, announcing it to live sessions as the node does.
    fn join(&mut self, at: usize, group: Id32) {
        let node = &mut self.nodes[at];
        add_group(&node.store, group, node.view.groups.len() as u64);
        node.view.groups.insert(group);
        let mut outputs = Vec::new();
        for (&peer, session) in node.sessions.iter_mut() {
            for o in session.on_group_joined(group, &node.view) {
                outputs.push((peer, o));
            }
        }
        self.carry_out(at, outputs);
    }

    /// Opens a session pair between `a` and `b` and queues both hellos.
    fn connect(&mut self, a: usize, b: usize) {
        assert_ne!(a, b);
        for (me, peer) in [(a, b), (b, a)] {
            let mut session = SyncSession::new();
            let start = session.start();
            let old = self.nodes[me].sessions.insert(peer, session);
            assert!(
                old.is_none(),
                "{}: {me} and {peer} already connected",
                self.ctx
            );
            self.carry_out(me, start.into_iter().map(|o| (peer, o)).collect());
        }
    }

    /// Drops the session pair and whatever was in flight between them.
    fn disconnect(&mut self, a: usize, b: usize) {
        self.nodes[a].sessions.remove(&b);
        self.nodes[b].sessions.remove(&a);
        self.queues.remove(&(a, b));
        self.queues.remove(&(b, a));
    }

    /// Publishes at node `at` the way `publish_in` does (seq and prev from the head, lamport
    /// one past the group's highest), then tells every session.
    fn publish(&mut self, at: usize, group: Id32, payload: &[u8]) -> SignedEntry {
        let ctx = self.ctx.clone();
        let node = &mut self.nodes[at];
        let me = node.me();
        let secret = node.secret.clone();
        let (cursor, entry) = node
            .store
            .write(|tx| {
                let (seq, prev) = match store::head(tx, &group, &me)? {
                    Some((seq, id)) => (seq + 1, id),
                    None => (1, [0u8; 32]),
                };
                let lamport = store::max_lamport(tx, &group)? + 1;
                let entry = make_entry(&secret, group, seq, prev, lamport, 0, payload);
                let cursor = store::insert_entry(tx, &entry)?;
                Ok((cursor, entry))
            })
            .unwrap_or_else(|e| panic!("{ctx}: publish failed: {e}"));
        node.record_cursor(cursor, &ctx);
        let log = node.view.logs.entry((group, me)).or_default();
        assert_eq!(entry.header().seq, log.len() as u64 + 1);
        log.push(entry.clone());
        let seq = entry.header().seq;
        let mut outputs = Vec::new();
        for (&peer, session) in node.sessions.iter_mut() {
            for o in session.on_local_entry(group, me, seq) {
                outputs.push((peer, o));
            }
        }
        self.carry_out(at, outputs);
        entry
    }

    /// Carries out a node's outputs, each tagged with the peer whose session produced it.
    fn carry_out(&mut self, at: usize, outputs: Vec<(usize, Output)>) {
        let mut work: VecDeque<(usize, Output)> = outputs.into();
        while let Some((peer, output)) = work.pop_front() {
            let node = &mut self.nodes[at];
            match output {
                Output::Send(message) => {
                    if let Message::Frontier { group, .. } = &message {
                        assert!(
                            node.view.groups.contains(group),
                            "{}: node {at} sent peer {peer} a Frontier for a group it is not in",
                            self.ctx
                        );
                        node.frontiers_sent.push((peer, *group));
                    }
                    push_frame(&mut self.queues, at, peer, &message);
                }
                Output::SendRange {
                    group,
                    author,
                    after_seq,
                    up_to_seq,
                } => {
                    assert!(
                        node.view.groups.contains(&group),
                        "{}: node {at} asked to send entries of a group it is not in",
                        self.ctx
                    );
                    let log = node.view.logs.get(&(group, author));
                    let log = log.map(Vec::as_slice).unwrap_or(&[]);
                    assert!(
                        after_seq < up_to_seq && up_to_seq as usize <= log.len(),
                        "{}: node {at} asked to send ({after_seq}, {up_to_seq}] of a log of {}",
                        self.ctx,
                        log.len()
                    );
                    for batch in log[after_seq as usize..up_to_seq as usize].chunks(BATCH) {
                        let message = Message::Entries {
                            group,
                            entries: raws(batch),
                        };
                        push_frame(&mut self.queues, at, peer, &message);
                    }
                }
                Output::Ingest { group, entries } => {
                    node.ingests.push((peer, group));
                    let held = node.ingest(group, entries, &self.ctx);
                    if let Some(session) = node.sessions.get_mut(&peer) {
                        for o in session.on_ingested(group, &held, &node.view) {
                            work.push_back((peer, o));
                        }
                    }
                    // Store and forward, as the node does: every session hears of what was
                    // stored, including the one it came from (which must not echo it back).
                    for head in &held {
                        for (&q, session) in node.sessions.iter_mut() {
                            for o in session.on_local_entry(group, head.author, head.seq) {
                                work.push_back((q, o));
                            }
                        }
                    }
                }
                Output::StateChanged { group, state } => node.states.push((peer, group, state)),
                // Receipts are the node's to persist; this harness checks delivery by content.
                Output::PeerHeads { .. } => {}
                Output::Warn { kind, message } => node.warns.push((peer, kind.as_str(), message)),
                Output::Rejected { reason, detail, .. } => {
                    node.warns
                        .push((peer, "rejected-entry", format!("{reason}: {detail}")))
                }
                Output::Close { reason } => node.closes.push((peer, reason)),
            }
        }
    }

    /// Delivers one frame from a randomly chosen non-empty queue; false when all are empty.
    fn step(&mut self) -> bool {
        let ready: Vec<(usize, usize)> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if ready.is_empty() {
            return false;
        }
        let (from, to) = ready[self.rng.below(ready.len())];
        let bytes = self
            .queues
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
            .expect("non-empty queue");
        self.frames += 1;
        let prefix: [u8; LENGTH_PREFIX] = bytes[..LENGTH_PREFIX].try_into().expect("prefix");
        let len = frame::frame_len(prefix, MAX_FRAME).expect("frame within limit");
        assert_eq!(
            len,
            bytes.len() - LENGTH_PREFIX,
            "{}: frame length",
            self.ctx
        );
        let message = frame::decode(&bytes[LENGTH_PREFIX..]).expect("frame decodes");
        let node = &mut self.nodes[to];
        let Some(session) = node.sessions.get_mut(&from) else {
            return true;
        };
        let outputs = session.on_message(message, &node.view);
        self.carry_out(to, outputs.into_iter().map(|o| (from, o)).collect());
        true
    }

    fn run(&mut self) {
        let mut steps = 0u64;
        while self.step() {
            steps += 1;
            assert!(steps < 1_000_000, "{}: no quiescence", self.ctx);
        }
    }

    /// Runs to quiescence while `publishes` entries are published at random nodes of `group`
    /// and `edges` come up at random moments, both interleaved with deliveries.
    fn run_live(&mut self, group: Id32, mut publishes: usize, mut edges: Vec<(usize, usize)>) {
        let members: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].view.groups.contains(&group))
            .collect();
        let mut n = 0;
        loop {
            let idle = self.queues.values().all(VecDeque::is_empty);
            if !edges.is_empty() && (idle || self.rng.below(6) == 0) {
                let (a, b) = edges.remove(0);
                self.connect(a, b);
            } else if publishes > 0 && (idle || self.rng.below(3) == 0) {
                let at = members[self.rng.below(members.len())];
                n += 1;
                self.publish(at, group, format!("live {n} at {at}").as_bytes());
                publishes -= 1;
            } else if !self.step() {
                break;
            }
        }
    }

    fn node_entries(&self, at: usize, group: &Id32) -> Vec<(u64, SignedEntry)> {
        stored_entries(&self.nodes[at].store, group)
    }

    /// Every member holds the same `total` entries of `group`, each once, as valid chains;
    /// nothing was rejected or warned about; every session with a member ended UpToDate.
    fn assert_converged(&self, group: Id32, members: &[usize], total: usize) {
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
            assert_valid_chains(&entries, &format!("{ctx}: node {i}"));
            let frontier = node
                .store
                .read(|c| store::frontier(c, &group))
                .expect("frontier");
            assert_eq!(frontier, node.view.frontier(&group), "{ctx}: node {i} view");
            match &reference {
                None => reference = Some(ids),
                Some(r) => assert_eq!(&ids, r, "{ctx}: node {i} holds other entries"),
            }
            assert!(
                node.rejected.is_empty(),
                "{ctx}: node {i} rejected {:?}",
                node.rejected
            );
            assert!(
                node.warns.is_empty(),
                "{ctx}: node {i} warned {:?}",
                node.warns
            );
            assert!(
                node.closes.is_empty(),
                "{ctx}: node {i} closed {:?}",
                node.closes
            );
            for &peer in node.sessions.keys() {
                if !members.contains(&peer) {
                    continue;
                }
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

    fn states_with(&self, at: usize, peer: usize, group: Id32) -> Vec<SyncState> {
        self.nodes[at]
            .states
            .iter()
            .filter(|(p, g, _)| *p == peer && *g == group)
            .map(|(_, _, s)| *s)
            .collect()
    }

    fn total_duplicates(&self) -> u64 {
        self.nodes.iter().map(|n| n.duplicates).sum()
    }
}

fn seed_history(sim: &mut Sim, at: usize, group: Id32, n: usize) {
    for k in 0..n {
        sim.publish(at, group, format!("history {k} of {at}").as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Session tests through the simulator
// ---------------------------------------------------------------------------------------------

#[test]
fn two_nodes_with_disjoint_histories_converge() {
    let g = gid(1);
    let mut sim = Sim::new(2, 7);
    sim.join(0, g);
    sim.join(1, g);
    seed_history(&mut sim, 0, g, 23);
    seed_history(&mut sim, 1, g, 9);
    sim.connect(0, 1);
    sim.run();
    sim.assert_converged(g, &[0, 1], 32);
    assert_eq!(
        sim.total_duplicates(),
        0,
        "nothing is sent twice between two nodes"
    );
    // 23 entries in batches of 7 are 4 frames; 9 are 2.
    assert_eq!(sim.nodes[1].ingests.len(), 4);
    assert_eq!(sim.nodes[0].ingests.len(), 2);
    assert_eq!(
        sim.frames,
        4 + 6 + 6,
        "hello and frontier each way, then the entry batches, each acknowledged"
    );
}

#[test]
fn three_nodes_in_a_line_converge_through_the_middle() {
    let g = gid(1);
    for seed in [1, 2, 3] {
        let mut sim = Sim::new(3, seed);
        for i in 0..3 {
            sim.join(i, g);
        }
        seed_history(&mut sim, 0, g, 17);
        seed_history(&mut sim, 1, g, 4);
        seed_history(&mut sim, 2, g, 11);
        sim.connect(0, 1);
        sim.connect(1, 2);
        sim.run();
        sim.assert_converged(g, &[0, 1, 2], 32);
        assert!(!sim.queues.contains_key(&(0, 2)) && !sim.queues.contains_key(&(2, 0)));
        assert_eq!(
            sim.total_duplicates(),
            0,
            "seed {seed}: a line carries each entry once"
        );
        // Node 2 received node 0's log, which only node 1 could have forwarded.
        let a = sim.nodes[0].me();
        let at_c = sim.node_entries(2, &g);
        assert_eq!(
            at_c.iter().filter(|(_, e)| e.header().author == a).count(),
            17
        );
    }
}

#[test]
fn publishing_while_live_reaches_everyone_exactly_once() {
    let g = gid(1);
    for seed in [11, 12, 13, 14] {
        // A line of four: every entry crosses up to three hops, each exactly once.
        let mut sim = Sim::new(4, seed);
        for i in 0..4 {
            sim.join(i, g);
        }
        seed_history(&mut sim, 0, g, 5);
        seed_history(&mut sim, 3, g, 8);
        sim.run_live(g, 40, vec![(0, 1), (1, 2), (2, 3)]);
        sim.assert_converged(g, &[0, 1, 2, 3], 53);
        assert_eq!(
            sim.total_duplicates(),
            0,
            "seed {seed}: an entry arrived twice"
        );
        let received: u64 = sim.nodes.iter().map(|n| n.stored).sum();
        assert_eq!(
            received,
            53 * 3,
            "seed {seed}: each node receives every other's entries"
        );
    }
}

#[test]
fn publishing_in_a_mesh_never_stores_an_entry_twice() {
    let g = gid(1);
    for seed in [21, 22, 23] {
        // A full mesh of four: entries arrive over several paths; duplicates are counted and
        // dropped by verify, never stored twice.
        let mut sim = Sim::new(4, seed);
        for i in 0..4 {
            sim.join(i, g);
        }
        seed_history(&mut sim, 1, g, 9);
        let edges = vec![(0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2)];
        sim.run_live(g, 30, edges);
        sim.assert_converged(g, &[0, 1, 2, 3], 39);
        let received: u64 = sim.nodes.iter().map(|n| n.stored).sum();
        assert_eq!(received, 39 * 3, "seed {seed}");
    }
}

#[test]
fn peer_outside_a_group_gets_nothing_and_reveals_nothing() {
    let (g1, g2) = (gid(1), gid(2));
    let mut sim = Sim::new(2, 5);
    // Node 0 is in g1 and g2; node 1 only in g2.
    sim.join(0, g1);
    sim.join(0, g2);
    sim.join(1, g2);
    seed_history(&mut sim, 0, g1, 12);
    seed_history(&mut sim, 0, g2, 3);
    seed_history(&mut sim, 1, g2, 4);
    sim.connect(0, 1);
    sim.run();
    sim.publish(0, g1, b"g1 live");
    sim.publish(0, g2, b"g2 live");
    sim.run();
    sim.assert_converged(g2, &[0, 1], 8);
    let n1 = &sim.nodes[1];
    assert!(
        sim.node_entries(1, &g1).is_empty(),
        "node 1 received g1 entries"
    );
    assert!(n1.ingests.iter().all(|(_, g)| *g == g2));
    assert_eq!(n1.frontiers_sent, vec![(0, g2)], "node 1 announced only g2");
    assert!(n1.states.iter().all(|(_, g, _)| *g == g2));
    assert!(n1.warns.is_empty(), "node 0 never sent node 1 g1 entries");
    let n0 = &sim.nodes[0];
    assert!(
        n0.states.iter().all(|(_, g, _)| *g == g2),
        "no sync state for g1 with node 1"
    );

    // Directly: node 1's session is told about g1 anyway.
    let view = &sim.nodes[1].view;
    let mut session = SyncSession::new();
    let _ = session.start();
    let _ = session.on_message(hello(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION), view);
    let frontier = Message::Frontier {
        group: g1,
        heads: vec![Head {
            author: [9; 32],
            seq: 40,
        }],
    };
    assert_eq!(
        session.on_message(frontier, view),
        vec![],
        "silent on a foreign frontier"
    );
    let entries = Message::Entries {
        group: g1,
        entries: raws(&chain(&author_key(9), g1, 2, "foreign")),
    };
    let out = session.on_message(entries, view);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        matches!(
            &out[0],
            Output::Rejected {
                count: 2,
                reason: "not-in-group",
                ..
            }
        ),
        "{out:?}"
    );
    assert!(session.on_local_entry(g1, [9; 32], 41).is_empty());
    assert!(session.on_ingested(g1, &[], view).is_empty());
    assert!(
        session.is_ready(),
        "a foreign group is not a reason to close"
    );
}

#[test]
fn sync_state_catching_up_then_up_to_date_when_behind() {
    let g = gid(1);
    let mut sim = Sim::new(2, 3);
    sim.join(0, g);
    sim.join(1, g);
    seed_history(&mut sim, 0, g, 20);
    sim.connect(0, 1);
    sim.run();
    sim.assert_converged(g, &[0, 1], 20);
    assert_eq!(
        sim.states_with(1, 0, g),
        vec![SyncState::CatchingUp, SyncState::UpToDate],
        "the node that was behind"
    );
    assert_eq!(
        sim.states_with(0, 1, g),
        vec![SyncState::UpToDate],
        "the node that was not"
    );
    // UpToDate only once all 20 arrived: 3 batches, the state changed on the last.
    assert_eq!(sim.nodes[1].ingests.len(), 3);

    // Reconnect with identical histories: straight to UpToDate on both sides.
    sim.disconnect(0, 1);
    sim.nodes[0].states.clear();
    sim.nodes[1].states.clear();
    sim.connect(0, 1);
    sim.run();
    assert_eq!(sim.states_with(0, 1, g), vec![SyncState::UpToDate]);
    assert_eq!(sim.states_with(1, 0, g), vec![SyncState::UpToDate]);
    assert_eq!(sim.nodes[1].ingests.len(), 3, "nothing was sent again");
}

#[test]
fn sync_state_is_per_group_and_both_sides_catch_up() {
    let (g1, g2) = (gid(1), gid(2));
    let mut sim = Sim::new(2, 4);
    for i in 0..2 {
        sim.join(i, g1);
        sim.join(i, g2);
    }
    seed_history(&mut sim, 0, g1, 9);
    seed_history(&mut sim, 1, g1, 2);
    seed_history(&mut sim, 0, g2, 3);
    sim.connect(0, 1);
    sim.run();
    sim.assert_converged(g1, &[0, 1], 11);
    sim.assert_converged(g2, &[0, 1], 3);
    let catching = vec![SyncState::CatchingUp, SyncState::UpToDate];
    assert_eq!(sim.states_with(0, 1, g1), catching);
    assert_eq!(sim.states_with(1, 0, g1), catching);
    assert_eq!(sim.states_with(0, 1, g2), vec![SyncState::UpToDate]);
    assert_eq!(sim.states_with(1, 0, g2), catching);
}

/// Bug probe: a group joined while a session is live must sync both ways over that session.
#[test]
fn group_joined_mid_session_syncs_both_ways() {
    let (g0, g1) = (gid(0), gid(1));
    let mut sim = Sim::new(2, 9);
    sim.join(0, g0);
    sim.join(1, g0);
    sim.join(1, g1);
    seed_history(&mut sim, 1, g1, 5);
    sim.connect(0, 1);
    sim.run();
    // Node 0 joins g1 now; node 1's g1 frontier went by at hello, when node 0 ignored it.
    sim.join(0, g1);
    sim.run();
    assert_eq!(
        sim.node_entries(0, &g1).len(),
        5,
        "the joiner receives the group's history"
    );
    sim.publish(0, g1, b"from the joiner");
    sim.publish(1, g1, b"from the old member");
    sim.run();
    assert_eq!(
        sim.node_entries(1, &g1).len(),
        7,
        "the joiner's entry never reached node 1 over the live session"
    );
    assert_eq!(sim.node_entries(0, &g1).len(), 7);
    assert_eq!(
        sim.states_with(0, 1, g1).last(),
        Some(&SyncState::UpToDate),
        "the joiner never hears the peer's g1 frontier, so reports no sync state"
    );
}

fn convergence_scenario(seed: u64) {
    let g = gid(3);
    let mut rng = XorShift::new(seed ^ 0xC0FFEE);
    let n = 3 + rng.below(3);
    let mut sim = Sim::new(n, seed);
    for i in 0..n {
        sim.join(i, g);
    }
    let mut total = 0;
    for i in 0..n {
        let k = rng.below(25);
        seed_history(&mut sim, i, g, k);
        total += k;
    }
    // A random spanning tree, sometimes with extra edges that make cycles.
    let mut edges = Vec::new();
    for i in 1..n {
        edges.push((rng.below(i), i));
    }
    let extra = rng.below(3);
    for _ in 0..extra {
        let (a, b) = (rng.below(n), rng.below(n));
        if a != b && !edges.contains(&(a, b)) && !edges.contains(&(b, a)) {
            edges.push((a, b));
        }
    }
    let tree = edges.len() == n - 1;
    rng.shuffle(&mut edges);
    let live = 5 + rng.below(30);
    sim.run_live(g, live, edges);
    total += live;
    let members: Vec<usize> = (0..n).collect();
    sim.assert_converged(g, &members, total);
    if tree {
        assert_eq!(
            sim.total_duplicates(),
            0,
            "seed {seed}: duplicates over a tree"
        );
    }
}

#[test]
fn convergence_over_20_seeds() {
    for seed in 1..=20 {
        // Every assertion inside names the seed; this also covers a panic that does not.
        if let Err(panic) = std::panic::catch_unwind(|| convergence_scenario(seed)) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("convergence failed with seed {seed}: {message}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session tests without the simulator: handshake rules
// ---------------------------------------------------------------------------------------------

fn hello(version: u16, min_version: u16) -> Message {
    Message::Hello {
        version,
        min_version,
        features: vec!["run-signatures".into(), "some-future-feature".into()],
    }
}

fn view_in(groups: &[Id32]) -> MemView {
    MemView {
        groups: groups.iter().copied().collect(),
        logs: BTreeMap::new(),
    }
}

fn assert_refusal(out: &[Output], code: RefuseCode, kind: &str, ctx: &str) {
    assert_eq!(out.len(), 3, "{ctx}: {out:?}");
    assert!(
        matches!(&out[0], Output::Send(Message::Refuse { code: c, .. }) if *c == code as u16),
        "{ctx}: {out:?}"
    );
    assert!(
        matches!(&out[1], Output::Warn { kind: k, .. } if k.as_str() == kind),
        "{ctx}: {out:?}"
    );
    assert!(matches!(&out[2], Output::Close { .. }), "{ctx}: {out:?}");
}

#[test]
fn messages_before_hello_are_a_protocol_violation() {
    let g = gid(1);
    let view = view_in(&[g]);
    let early = [
        Message::Frontier {
            group: g,
            heads: vec![],
        },
        Message::Entries {
            group: g,
            entries: raws(&chain(&author_key(3), g, 1, "early")),
        },
        Message::Entries {
            group: gid(7),
            entries: vec![],
        },
    ];
    for (i, message) in early.into_iter().enumerate() {
        let mut session = SyncSession::new();
        let start = session.start();
        assert!(matches!(&start[..], [Output::Send(Message::Hello { .. })]));
        let out = session.on_message(message, &view);
        assert_refusal(
            &out,
            RefuseCode::ProtocolViolation,
            "protocol-violation",
            &format!("#{i}"),
        );
        assert!(!session.is_ready());
        // Closed for good: a late hello and everything else is ignored.
        assert!(session.on_message(hello(1, 1), &view).is_empty());
        assert!(!session.is_ready());
        assert!(session.on_local_entry(g, [1; 32], 1).is_empty());
        assert!(session.on_group_joined(g, &view).is_empty());
    }
}

#[test]
fn second_hello_is_a_protocol_violation() {
    let (g1, g2) = (gid(1), gid(2));
    let view = view_in(&[g1, g2]);
    let mut session = SyncSession::new();
    let _ = session.start();
    let out = session.on_message(hello(1, 1), &view);
    assert!(session.is_ready());
    let announced: Vec<Id32> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send(Message::Frontier { group, .. }) => Some(*group),
            _ => None,
        })
        .collect();
    assert_eq!(announced, vec![g1, g2], "{out:?}");
    assert!(session.peer_features().contains("run-signatures"));
    assert!(
        !session.peer_features().contains("some-future-feature"),
        "unknown features are ignored, not kept"
    );
    let out = session.on_message(hello(1, 1), &view);
    assert_refusal(
        &out,
        RefuseCode::ProtocolViolation,
        "protocol-violation",
        "second hello",
    );
    assert!(!session.is_ready());
    let frontier = Message::Frontier {
        group: g1,
        heads: vec![],
    };
    assert!(session.on_message(frontier, &view).is_empty());
}

#[test]
fn refuse_from_the_peer_closes_without_answering() {
    let view = view_in(&[gid(1)]);
    for before_hello in [true, false] {
        let mut session = SyncSession::new();
        let _ = session.start();
        if !before_hello {
            let _ = session.on_message(hello(1, 1), &view);
        }
        let refuse = Message::Refuse {
            code: RefuseCode::GoingAway as u16,
            reason: "bye".into(),
        };
        let out = session.on_message(refuse, &view);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(
            &out[0],
            Output::Warn {
                kind: WarnKind::PeerRefused,
                ..
            }
        ));
        assert!(matches!(&out[1], Output::Close { .. }));
        assert!(!out.iter().any(|o| matches!(o, Output::Send(_))));
        assert!(!session.is_ready());
    }
}

#[test]
fn version_matrix() {
    let g = gid(1);
    let view = view_in(&[g]);
    let ranges: Vec<(u16, u16)> = (1..=4u16)
        .flat_map(|min| (min..=4).map(move |v| (min, v)))
        .collect();
    let mut compatible = 0;
    for &(amin, av) in &ranges {
        for &(bmin, bv) in &ranges {
            let ctx = format!("a {amin}..={av}, b {bmin}..={bv}");
            let mut a = SyncSession::with_versions(av, amin);
            let mut b = SyncSession::with_versions(bv, bmin);
            let hello_of = |out: Vec<Output>| match &out[..] {
                [Output::Send(m @ Message::Hello { .. })] => m.clone(),
                other => panic!("{ctx}: start gave {other:?}"),
            };
            let ha = hello_of(a.start());
            let hb = hello_of(b.start());
            assert_eq!(
                ha,
                Message::Hello {
                    version: av,
                    min_version: amin,
                    features: FEATURES.iter().map(|f| f.to_string()).collect(),
                },
                "{ctx}"
            );
            let out_a = a.on_message(hb, &view);
            let out_b = b.on_message(ha, &view);
            let overlap = amin.max(bmin) <= av.min(bv);
            for (name, session, out) in [("a", &a, &out_a), ("b", &b, &out_b)] {
                if overlap {
                    assert!(session.is_ready(), "{ctx}: {name} not ready");
                    assert!(session.peer_features().contains("run-signatures"), "{ctx}");
                    assert_eq!(out.len(), 1, "{ctx}: {name} {out:?}");
                    assert!(
                        matches!(&out[0], Output::Send(Message::Frontier { group, .. }) if *group == g),
                        "{ctx}: {name} {out:?}"
                    );
                } else {
                    assert!(!session.is_ready(), "{ctx}: {name} ready");
                    let what = format!("{ctx}: {name}");
                    assert_refusal(
                        out,
                        RefuseCode::IncompatibleVersion,
                        "incompatible-version",
                        &what,
                    );
                }
            }
            if overlap {
                compatible += 1;
            } else {
                // Each side's refusal reaches a side that already closed: silence.
                let refusal = |out: &[Output]| match &out[0] {
                    Output::Send(m) => m.clone(),
                    other => panic!("{ctx}: {other:?}"),
                };
                assert!(a.on_message(refusal(&out_b), &view).is_empty(), "{ctx}");
                assert!(b.on_message(refusal(&out_a), &view).is_empty(), "{ctx}");
            }
        }
    }
    // 10 ranges, 100 ordered pairs, 30 of them disjoint (one range entirely below the other).
    assert_eq!(ranges.len(), 10);
    assert_eq!(compatible, 70);

    // This build against its neighbours.
    let mut ours = SyncSession::new();
    let _ = ours.start();
    let out = ours.on_message(hello(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 1), &view);
    assert_refusal(
        &out,
        RefuseCode::IncompatibleVersion,
        "incompatible-version",
        "newer only",
    );
    let mut ours = SyncSession::new();
    let _ = ours.start();
    let _ = ours.on_message(hello(PROTOCOL_VERSION + 1, MIN_PROTOCOL_VERSION), &view);
    assert!(ours.is_ready(), "a newer peer that still accepts ours");
}

// ---------------------------------------------------------------------------------------------
// verify::ingest
// ---------------------------------------------------------------------------------------------

struct Db {
    _dir: tempfile::TempDir,
    store: Store,
    last_cursor: u64,
}

impl Db {
    fn new(groups: &[Id32]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(&dir, groups);
        Self {
            _dir: dir,
            store,
            last_cursor: 0,
        }
    }

    /// Ingests in one write transaction; checks cursors rise strictly, across calls too.
    fn ingest(&mut self, rules: &Rules, batch: Vec<Vec<u8>>) -> Outcome {
        let outcome = self
            .store
            .write(|tx| verify::ingest(tx, rules, batch))
            .expect("ingest");
        for (cursor, _) in &outcome.stored {
            assert!(
                *cursor > self.last_cursor,
                "cursor {cursor} after {}",
                self.last_cursor
            );
            self.last_cursor = *cursor;
        }
        outcome
    }

    fn frontier(&self, group: &Id32) -> Vec<Head> {
        self.store
            .read(|c| store::frontier(c, group))
            .expect("frontier")
    }
}

fn rules(group: Id32) -> Rules {
    Rules {
        group_id: group,
        epoch: 0,
        max_ciphertext: MAX_CT,
    }
}

fn reasons(outcome: &Outcome) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for r in &outcome.rejected {
        *out.entry(r.reason).or_insert(0) += 1;
    }
    out
}

fn stored_seqs(outcome: &Outcome) -> Vec<u64> {
    outcome.stored.iter().map(|(_, e)| e.header().seq).collect()
}

fn head(author: &SecretKey, seq: u64) -> Head {
    Head {
        author: *author.public().as_bytes(),
        seq,
    }
}

#[test]
fn contiguous_run_is_stored_with_one_signature_check() {
    let g = gid(1);
    let x = author_key(1);
    let entries = chain(&x, g, 50, "x");
    let mut db = Db::new(&[g]);
    let outcome = db.ingest(&rules(g), raws(&entries));
    assert_eq!(stored_seqs(&outcome), (1..=50).collect::<Vec<_>>());
    assert_eq!(outcome.signatures_checked, 1);
    assert_eq!(outcome.duplicates, 0);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    let ids: Vec<Id32> = outcome.stored.iter().map(|(_, e)| *e.id()).collect();
    let want: Vec<Id32> = entries.iter().map(|e| *e.id()).collect();
    assert_eq!(ids, want);
    assert_eq!(db.frontier(&g), vec![head(&x, 50)]);
    assert_valid_chains(&stored_entries(&db.store, &g), "run of 50");
}

fn corrupt_signature(entry: &SignedEntry) -> Vec<u8> {
    let mut raw = entry.raw().to_vec();
    let n = raw.len();
    raw[n - SIGNATURE_LEN + 5] ^= 0x20;
    raw[n - 1] ^= 0x01;
    raw
}

#[test]
fn bad_signature_on_the_last_entry_keeps_the_first_49() {
    let g = gid(1);
    let x = author_key(1);
    let entries = chain(&x, g, 50, "x");
    let mut batch = raws(&entries);
    batch[49] = corrupt_signature(&entries[49]);
    let mut db = Db::new(&[g]);
    let outcome = db.ingest(&rules(g), batch);
    assert_eq!(stored_seqs(&outcome), (1..=49).collect::<Vec<_>>());
    assert_eq!(reasons(&outcome), BTreeMap::from([("bad-signature", 1)]));
    assert!(
        outcome.rejected[0].detail.contains("seq 50"),
        "{:?}",
        outcome.rejected
    );
    // One check for the run, then one per entry to find the valid prefix.
    assert_eq!(outcome.signatures_checked, 1 + 50);
    assert_eq!(db.frontier(&g), vec![head(&x, 49)]);
    // The genuine 50th still goes in afterwards, alone, with one check.
    let outcome = db.ingest(&rules(g), raws(&entries[49..]));
    assert_eq!(stored_seqs(&outcome), vec![50]);
    assert_eq!(outcome.signatures_checked, 1);
}

#[test]
fn bad_signature_in_the_middle_breaks_the_chain_after_it() {
    let g = gid(1);
    let x = author_key(1);
    let entries = chain(&x, g, 50, "x");
    let mut batch = raws(&entries);
    // Entry 30's signature is corrupted, which changes its id: entry 31's prev no longer
    // matches, so the run ends at 30, whose signature then fails.
    batch[29] = corrupt_signature(&entries[29]);
    let mut db = Db::new(&[g]);
    let outcome = db.ingest(&rules(g), batch);
    assert_eq!(stored_seqs(&outcome), (1..=29).collect::<Vec<_>>());
    assert_eq!(
        reasons(&outcome),
        BTreeMap::from([("bad-signature", 1), ("broken-chain", 1), ("seq-gap", 19)])
    );
    assert_eq!(outcome.signatures_checked, 1 + 30);
    assert_eq!(db.frontier(&g), vec![head(&x, 29)]);
    // Resending the genuine tail completes the log.
    let outcome = db.ingest(&rules(g), raws(&entries[29..]));
    assert_eq!(stored_seqs(&outcome), (30..=50).collect::<Vec<_>>());
    assert_eq!(outcome.signatures_checked, 1);
}

#[test]
fn altered_bytes_in_the_middle_keep_only_the_valid_prefix() {
    let g = gid(1);
    let x = author_key(1);
    let entries = chain(&x, g, 50, "x");
    type Alter = fn(&mut Vec<u8>);
    let cases: [(&str, Alter, BTreeMap<&str, usize>, u64); 4] = [
        (
            "ciphertext byte",
            |raw| raw[HEADER_LEN + 2] ^= 0x04,
            BTreeMap::from([("bad-signature", 1), ("broken-chain", 1), ("seq-gap", 19)]),
            1 + 30,
        ),
        (
            "timestamp",
            |raw| raw[129] ^= 0x01,
            BTreeMap::from([("bad-signature", 1), ("broken-chain", 1), ("seq-gap", 19)]),
            1 + 30,
        ),
        (
            "seq field set to 31",
            |raw| raw[66..74].copy_from_slice(&31u64.to_be_bytes()),
            BTreeMap::from([("seq-gap", 21)]),
            1,
        ),
        (
            "prev field",
            |raw| raw[74] ^= 0xff,
            BTreeMap::from([("broken-chain", 1), ("seq-gap", 20)]),
            1,
        ),
    ];
    for (what, alter, want, checks) in cases {
        let mut batch = raws(&entries);
        alter(&mut batch[29]);
        let mut db = Db::new(&[g]);
        let outcome = db.ingest(&rules(g), batch);
        assert_eq!(
            stored_seqs(&outcome),
            (1..=29).collect::<Vec<_>>(),
            "{what}"
        );
        assert_eq!(reasons(&outcome), want, "{what}");
        assert_eq!(outcome.signatures_checked, checks, "{what}");
        assert_eq!(db.frontier(&g), vec![head(&x, 29)], "{what}");
    }
}

#[test]
fn duplicates_are_counted_not_rejected() {
    let g = gid(1);
    let x = author_key(1);
    let entries = chain(&x, g, 32, "x");
    let mut db = Db::new(&[g]);
    let first = db.ingest(&rules(g), raws(&entries[..20]));
    assert_eq!(first.stored.len(), 20);
    let outcome = db.ingest(&rules(g), raws(&entries[..30]));
    assert_eq!(outcome.duplicates, 20);
    assert_eq!(stored_seqs(&outcome), (21..=30).collect::<Vec<_>>());
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    assert_eq!(outcome.signatures_checked, 1);
    // The same batch again: all duplicates, nothing verified.
    let outcome = db.ingest(&rules(g), raws(&entries[..30]));
    assert_eq!(outcome.duplicates, 30);
    assert!(outcome.stored.is_empty() && outcome.rejected.is_empty());
    assert_eq!(outcome.signatures_checked, 0);
    // A duplicate inside one batch.
    let batch = raws(&[
        entries[30].clone(),
        entries[30].clone(),
        entries[31].clone(),
    ]);
    let outcome = db.ingest(&rules(g), batch);
    assert_eq!(stored_seqs(&outcome), vec![31, 32]);
    assert_eq!(outcome.duplicates, 1);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    assert_eq!(db.frontier(&g), vec![head(&x, 32)]);
}

#[test]
fn conflicting_entry_at_a_held_seq_is_rejected() {
    let g = gid(1);
    let x = author_key(1);
    let entries = chain(&x, g, 6, "x");
    let mut db = Db::new(&[g]);
    db.ingest(&rules(g), raws(&entries[..5]));
    // A validly signed fork of seq 3.
    let fork = make_entry(&x, g, 3, *entries[1].id(), 3, 0, b"a fork of 3");
    let outcome = db.ingest(&rules(g), raws(&[fork]));
    assert_eq!(reasons(&outcome), BTreeMap::from([("conflicting-seq", 1)]));
    assert_eq!(outcome.duplicates, 0);
    assert!(outcome.stored.is_empty());
    // A fork inside one batch: the first of the two at seq 6 wins, the other conflicts.
    let fork6 = make_entry(&x, g, 6, *entries[4].id(), 6, 0, b"a fork of 6");
    let outcome = db.ingest(&rules(g), raws(&[entries[5].clone(), fork6]));
    assert_eq!(stored_seqs(&outcome), vec![6]);
    assert_eq!(outcome.stored[0].1.id(), entries[5].id());
    assert_eq!(reasons(&outcome), BTreeMap::from([("conflicting-seq", 1)]));
    let held = stored_entries(&db.store, &g);
    assert_eq!(held.len(), 6);
    assert_valid_chains(&held, "after forks");
}

#[test]
fn wrong_group_is_rejected() {
    let (g1, g2) = (gid(1), gid(2));
    let (x, y) = (author_key(1), author_key(2));
    let mut db = Db::new(&[g1, g2]);
    let mut batch = raws(&chain(&x, g1, 4, "x"));
    batch.extend(raws(&chain(&y, g2, 3, "y")));
    let outcome = db.ingest(&rules(g1), batch);
    assert_eq!(stored_seqs(&outcome), vec![1, 2, 3, 4]);
    assert_eq!(reasons(&outcome), BTreeMap::from([("wrong-group", 3)]));
    assert!(db.frontier(&g2).is_empty());
    assert_eq!(db.frontier(&g1), vec![head(&x, 4)]);
}

#[test]
fn epoch_past_the_groups_is_rejected() {
    let g = gid(1);
    let x = author_key(1);
    let e1 = make_entry(&x, g, 1, [0; 32], 1, 0, b"epoch 0");
    let e2 = make_entry(&x, g, 2, *e1.id(), 2, 2, b"epoch 2");
    let e3 = make_entry(&x, g, 3, *e2.id(), 3, 3, b"epoch 3");
    let e4 = make_entry(&x, g, 4, *e3.id(), 4, 2, b"epoch 2 again");
    let mut db = Db::new(&[g]);
    let rules = Rules {
        epoch: 2,
        ..rules(g)
    };
    let outcome = db.ingest(&rules, raws(&[e1, e2, e3, e4]));
    // Older and current epochs pass; the next epoch is unknown, and seq 4 then has a gap.
    assert_eq!(stored_seqs(&outcome), vec![1, 2]);
    assert_eq!(
        reasons(&outcome),
        BTreeMap::from([("unknown-epoch", 1), ("seq-gap", 1)])
    );
}

#[test]
fn ciphertext_limit_is_exact() {
    let g = gid(1);
    let x = author_key(1);
    let p = 100;
    let at_limit = make_entry(&x, g, 1, [0; 32], 1, 0, &vec![b'a'; p]);
    let over = make_entry(&x, g, 2, *at_limit.id(), 2, 0, &vec![b'b'; p + 1]);
    let after = make_entry(&x, g, 3, *over.id(), 3, 0, b"small");
    let limit = p + TAG_LEN;
    assert_eq!(at_limit.raw().len(), HEADER_LEN + limit + SIGNATURE_LEN);
    let rules_at = Rules {
        max_ciphertext: limit,
        ..rules(g)
    };
    let mut db = Db::new(&[g]);
    let outcome = db.ingest(&rules_at, raws(&[at_limit.clone(), over.clone(), after]));
    assert_eq!(
        stored_seqs(&outcome),
        vec![1],
        "exactly at the limit is accepted"
    );
    assert_eq!(
        reasons(&outcome),
        BTreeMap::from([("malformed", 1), ("seq-gap", 1)])
    );
    let malformed = outcome
        .rejected
        .iter()
        .find(|r| r.reason == "malformed")
        .unwrap();
    assert!(
        malformed.detail.contains(&(limit + 1).to_string()),
        "{malformed:?}"
    );
    // One byte lower and the first is over too.
    let rules_below = Rules {
        max_ciphertext: limit - 1,
        ..rules(g)
    };
    let mut db = Db::new(&[g]);
    let outcome = db.ingest(&rules_below, raws(&[at_limit, over]));
    assert!(outcome.stored.is_empty());
    assert_eq!(reasons(&outcome), BTreeMap::from([("malformed", 2)]));
    // Truncated and padded encodings are malformed, not errors.
    let short = chain(&x, g, 1, "x")[0].raw()[..HEADER_LEN + 10].to_vec();
    let mut long = chain(&x, g, 1, "x")[0].raw().to_vec();
    long.push(0);
    let outcome = db.ingest(&rules(g), vec![short, long, vec![]]);
    assert_eq!(reasons(&outcome), BTreeMap::from([("malformed", 3)]));
}

#[test]
fn interleaved_out_of_order_authors_are_sorted_and_stored() {
    let g = gid(1);
    let (x, y) = (author_key(1), author_key(2));
    let xs = chain(&x, g, 20, "x");
    let ys = chain(&y, g, 20, "y");
    let mut batch: Vec<SignedEntry> = xs.iter().chain(ys.iter()).cloned().collect();
    XorShift::new(99).shuffle(&mut batch);
    let mut db = Db::new(&[g]);
    let outcome = db.ingest(&rules(g), raws(&batch));
    assert_eq!(outcome.stored.len(), 40);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    assert_eq!(outcome.signatures_checked, 2, "one per author's run");
    for author in [&x, &y] {
        let a = *author.public().as_bytes();
        let seqs: Vec<u64> = outcome
            .stored
            .iter()
            .filter(|(_, e)| e.header().author == a)
            .map(|(_, e)| e.header().seq)
            .collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    }
    let mut want = vec![head(&x, 20), head(&y, 20)];
    want.sort_by_key(|h| h.author);
    assert_eq!(db.frontier(&g), want);
    assert_valid_chains(&stored_entries(&db.store, &g), "two authors");
}

#[test]
fn seq_gap_stores_nothing_after_the_gap() {
    let g = gid(1);
    let x = author_key(1);
    let entries = chain(&x, g, 10, "x");
    let mut db = Db::new(&[g]);
    let mut batch = raws(&entries);
    batch.remove(4); // seq 5
    let outcome = db.ingest(&rules(g), batch);
    assert_eq!(stored_seqs(&outcome), vec![1, 2, 3, 4]);
    assert_eq!(reasons(&outcome), BTreeMap::from([("seq-gap", 5)]));
    assert!(
        outcome.rejected[0].detail.contains("seq 6"),
        "{:?}",
        outcome.rejected
    );
    assert_eq!(outcome.signatures_checked, 1);
    // A gap against the stored head: nothing stored, nothing verified.
    let outcome = db.ingest(&rules(g), raws(&entries[6..]));
    assert!(outcome.stored.is_empty());
    assert_eq!(reasons(&outcome), BTreeMap::from([("seq-gap", 4)]));
    assert_eq!(outcome.signatures_checked, 0);
    // Filling it stores the rest.
    let outcome = db.ingest(&rules(g), raws(&entries[4..]));
    assert_eq!(stored_seqs(&outcome), (5..=10).collect::<Vec<_>>());
    assert_eq!(db.frontier(&g), vec![head(&x, 10)]);
}

/// Bug probe: header fields are author-chosen; one a member signs with a lamport clock
/// beyond what SQLite's INTEGER holds must be a rejection, not a failed batch.
#[test]
fn out_of_range_lamport_is_rejected_not_a_failed_batch() {
    let g = gid(1);
    let (x, y) = (author_key(1), author_key(2));
    let mut batch = raws(&chain(&x, g, 5, "x"));
    let hostile = make_entry(&y, g, 1, [0; 32], u64::MAX, 0, b"lamport overflow");
    assert!(hostile.verify_signature().is_ok());
    batch.push(hostile.raw().to_vec());
    let db = Db::new(&[g]);
    let result = db.store.write(|tx| verify::ingest(tx, &rules(g), batch));
    let outcome = result.unwrap_or_else(|e| {
        panic!("one out-of-range entry failed the whole batch, 5 valid entries lost: {e}")
    });
    assert_eq!(outcome.stored.len(), 5);
    assert_eq!(outcome.rejected.len(), 1);
}

/// The lamport bound, on both sides: `MAX_LAMPORT` is stored, one more is rejected with a
/// reason, and a publish after the largest accepted clock still fits the store.
#[test]
fn lamport_bound_on_both_sides() {
    let g = gid(1);
    let (x, y) = (author_key(1), author_key(2));
    let db = Db::new(&[g]);
    let at = make_entry(&x, g, 1, [0; 32], verify::MAX_LAMPORT, 0, b"at the bound");
    let over = make_entry(
        &y,
        g,
        1,
        [0; 32],
        verify::MAX_LAMPORT + 1,
        0,
        b"over the bound",
    );
    let outcome = db
        .store
        .write(|tx| verify::ingest(tx, &rules(g), vec![at.raw().to_vec(), over.raw().to_vec()]))
        .unwrap();
    assert_eq!(outcome.stored.len(), 1);
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!(outcome.rejected[0].reason, "out-of-range");
    let next = db
        .store
        .read(|c| covey_core::store::max_lamport(c, &g))
        .unwrap()
        + 1;
    assert!(i64::try_from(next).is_ok());
}
