//! Deterministic tests of the sync session machine (`sync::session`), the driver core that
//! every transport runs it through (`sync::driver`), and batch verification (`sync::verify`),
//! with no network and no clock.
//!
//! The first half runs nodes with real SQLite stores in a `covey_core::testing::SessionMesh`:
//! one in-order frame queue per direction (every message goes through `wire::frame::encode`
//! and `decode`), a seeded `Rng` picking which queue delivers next, and every session the one
//! `SessionDriver`. The second half tests the machine's handshake rules and `verify::ingest`
//! batch by batch.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

use covey_core::crypto::Secret32;
use covey_core::crypto::aead::TAG_LEN;
use covey_core::group::GroupKeys;
use covey_core::store::{self, Durability, GroupRow, Store};
use covey_core::sync::WarnKind;
use covey_core::sync::engine::Snapshot;
use covey_core::sync::session::{
    MIN_PROTOCOL_VERSION, Output, PROTOCOL_VERSION, SyncSession, SyncState,
};
use covey_core::sync::verify::{self, Outcome, Rules, Unverified};
use covey_core::testing::{Author, Rng, SessionMesh, assert_valid_chains};
use covey_core::wire::entry::{EntryKind, HEADER_LEN, Id32, SIGNATURE_LEN, SignedEntry};
use covey_core::wire::frame::{Head, Message, RefuseCode};
use iroh::SecretKey;

// ---------------------------------------------------------------------------------------------
// Fixtures shared by both halves
// ---------------------------------------------------------------------------------------------

/// Payload limit of the simulated nodes; ciphertexts may be this plus the AEAD tag.
const MAX_PAYLOAD: usize = 200;
const MAX_CT: usize = MAX_PAYLOAD + TAG_LEN;
/// Entries per `Message::Entries` frame when carrying out a range: small, so catch-up takes
/// several frames and batch boundaries land everywhere.
const BATCH: usize = 7;
/// Test groups are numbered; group `n`'s keys derive from a root of `n` bytes.
const GROUPS: u8 = 16;

fn group_keys(n: u8) -> GroupKeys {
    GroupKeys::from_root(&Secret32::from_bytes([n; 32]))
}

fn gid(n: u8) -> Id32 {
    group_keys(n).id.0
}

/// The keys of the test group whose id is `group`.
fn keys_of(group: Id32) -> GroupKeys {
    (0..GROUPS)
        .map(group_keys)
        .find(|k| k.id.0 == group)
        .unwrap_or_else(|| GroupKeys::from_root(&Secret32::from_bytes(group)))
}

fn author_key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

/// Seals one entry of `secret`'s log in `group` with this header, through the one forging
/// `Author` (deterministic nonce and timestamp).
fn make_entry(
    secret: &SecretKey,
    group: Id32,
    seq: u64,
    prev: Id32,
    lamport: u64,
    epoch: u64,
    payload: &[u8],
) -> SignedEntry {
    let author = Author::new(secret.clone(), keys_of(group));
    let mut header = author.header_at(seq, prev, lamport);
    header.epoch = epoch;
    author.seal(header, payload).expect("seal")
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
        let row = GroupRow {
            group_id: *g,
            name: hex::encode(&g[..4]),
            kind: 0,
            epoch: 0,
        };
        store
            .write(|tx| store::insert_group(tx, &row, i as u64))
            .expect("insert group");
    }
    store
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

/// A session mesh in a temp dir whose groups are named by id (see [`gid`]).
struct Sim {
    mesh: SessionMesh,
    _dir: tempfile::TempDir,
}

impl Sim {
    fn new(n: usize, seed: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            mesh: SessionMesh::new(dir.path(), n, seed, BATCH, MAX_PAYLOAD),
            _dir: dir,
        }
    }

    /// Joins the test group `group` at node `at`.
    fn join(&mut self, at: usize, group: Id32) {
        self.mesh.join(at, &keys_of(group));
    }
}

impl Deref for Sim {
    type Target = SessionMesh;
    fn deref(&self) -> &SessionMesh {
        &self.mesh
    }
}

impl DerefMut for Sim {
    fn deref_mut(&mut self) -> &mut SessionMesh {
        &mut self.mesh
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
        6 + 6 + 6,
        "hello, proof and frontier each way, then the entry batches, each acknowledged"
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
    let view = &sim.nodes[1].snapshot(&[g1, g2]);
    let mut session = SyncSession::new();
    let _ = session.start([]);
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
    let mut rng = Rng::new(seed ^ 0xC0FFEE);
    let n = 3 + rng.index(3);
    let mut sim = Sim::new(n, seed);
    for i in 0..n {
        sim.join(i, g);
    }
    let mut total = 0;
    for i in 0..n {
        let k = rng.index(25);
        seed_history(&mut sim, i, g, k);
        total += k;
    }
    // A random spanning tree, sometimes with extra edges that make cycles.
    let mut edges = Vec::new();
    for i in 1..n {
        edges.push((rng.index(i), i));
    }
    let extra = rng.index(3);
    for _ in 0..extra {
        let (a, b) = (rng.index(n), rng.index(n));
        if a != b && !edges.contains(&(a, b)) && !edges.contains(&(b, a)) {
            edges.push((a, b));
        }
    }
    let tree = edges.len() == n - 1;
    rng.shuffle(&mut edges);
    let live = 5 + rng.index(30);
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

fn view_in(groups: &[Id32]) -> Snapshot {
    Snapshot {
        groups: groups.iter().copied().collect(),
        frontiers: BTreeMap::new(),
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
        let start = session.start([]);
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
        assert!(session.on_group_joined(g, true, &view).is_empty());
    }
}

#[test]
fn second_hello_is_a_protocol_violation() {
    let (g1, g2) = (gid(1), gid(2));
    let view = view_in(&[g1, g2]);
    let mut session = SyncSession::new();
    let _ = session.start([]);
    let v = PROTOCOL_VERSION;
    let out = session.on_message(hello(v, v), &view);
    assert!(session.is_ready());
    assert!(
        out.is_empty(),
        "nothing about any group before a proof: {out:?}"
    );
    // The peer proves both groups (the transport turned its proofs into the group ids): the
    // acceptor proves them back and opens each with a frontier.
    let mut both = vec![g1, g2];
    both.sort();
    let out = session.on_message(
        Message::Prove {
            proofs: both.clone(),
        },
        &view,
    );
    assert!(
        matches!(&out[0], Output::Send(Message::Prove { proofs }) if *proofs == both),
        "{out:?}"
    );
    let announced: Vec<Id32> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send(Message::Frontier { group, .. }) => Some(*group),
            _ => None,
        })
        .collect();
    assert_eq!(announced, both, "both groups, in id order: {out:?}");
    assert!(session.peer_features().contains("run-signatures"));
    assert!(
        !session.peer_features().contains("some-future-feature"),
        "unknown features are ignored, not kept"
    );
    let out = session.on_message(hello(v, v), &view);
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
        let _ = session.start([]);
        if !before_hello {
            let _ = session.on_message(hello(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION), &view);
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

// ---------------------------------------------------------------------------------------------
// verify::ingest
// ---------------------------------------------------------------------------------------------

struct Db {
    _dir: tempfile::TempDir,
    store: Store,
    last_cursor: u64,
    /// What one session would hold back between its batches.
    held: Unverified,
}

impl Db {
    fn new(groups: &[Id32]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(&dir, groups);
        Self {
            _dir: dir,
            store,
            last_cursor: 0,
            held: Unverified::default(),
        }
    }

    /// Ingests in one write transaction, as one session's batches go in (with what it held
    /// back from the batches before); checks cursors rise strictly, across calls too.
    fn ingest(&mut self, rules: &Rules, batch: Vec<Vec<u8>>) -> Outcome {
        let held = &mut self.held;
        let outcome = self
            .store
            .write(|tx| verify::ingest_held(tx, rules, held, batch))
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
    Rules::of(&keys_of(group), MAX_CT)
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
    assert_valid_chains(
        &stored_entries(&db.store, &g),
        &keys_of(g).content_key,
        "run of 50",
    );
}

fn corrupt_signature(entry: &SignedEntry) -> Vec<u8> {
    let mut raw = entry.raw().to_vec();
    let n = raw.len();
    raw[n - SIGNATURE_LEN + 5] ^= 0x20;
    raw[n - 1] ^= 0x01;
    raw
}

#[test]
fn bad_signature_on_the_last_entry_keeps_the_first_49_and_holds_the_50th() {
    let g = gid(1);
    let x = author_key(1);
    let entries = chain(&x, g, 50, "x");
    let mut batch = raws(&entries);
    batch[49] = corrupt_signature(&entries[49]);
    let mut db = Db::new(&[g]);
    let outcome = db.ingest(&rules(g), batch);
    assert_eq!(stored_seqs(&outcome), (1..=49).collect::<Vec<_>>());
    // Nothing after it has arrived that could vouch for it: undecided, held, not rejected.
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    assert_eq!(outcome.held_back, 1);
    // The last fails, the 49th verifies and vouches for the 48 before it.
    assert_eq!(outcome.signatures_checked, 2);
    assert_eq!(db.frontier(&g), vec![head(&x, 49)]);
    // The genuine 50th takes the held one's place, with one check.
    let outcome = db.ingest(&rules(g), raws(&entries[49..]));
    assert_eq!(stored_seqs(&outcome), vec![50]);
    assert_eq!(outcome.signatures_checked, 1);
    assert_eq!(outcome.held_back, 0);
}

#[test]
fn bad_signature_in_the_middle_breaks_the_chain_after_it() {
    let g = gid(1);
    let x = author_key(1);
    let entries = chain(&x, g, 50, "x");
    let mut batch = raws(&entries);
    // Entry 30's signature is corrupted, which changes its id: entry 31's prev no longer
    // matches, so the run ends at 30, whose signature then fails; nothing that could vouch
    // for it follows, so it is held.
    batch[29] = corrupt_signature(&entries[29]);
    let mut db = Db::new(&[g]);
    let outcome = db.ingest(&rules(g), batch);
    assert_eq!(stored_seqs(&outcome), (1..=29).collect::<Vec<_>>());
    assert_eq!(
        reasons(&outcome),
        BTreeMap::from([("broken-chain", 1), ("seq-gap", 19)])
    );
    assert_eq!(outcome.held_back, 1);
    assert_eq!(outcome.signatures_checked, 2);
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
            BTreeMap::from([("broken-chain", 1), ("seq-gap", 19)]),
            2,
        ),
        (
            "timestamp",
            |raw| raw[129] ^= 0x01,
            BTreeMap::from([("broken-chain", 1), ("seq-gap", 19)]),
            2,
        ),
        (
            // Two entries now claim seq 31: the genuine one (whose signature verifies) keeps
            // it, and the altered one is refused; 31 to 50 then follow a gap.
            "seq field set to 31",
            |raw| raw[66..74].copy_from_slice(&31u64.to_be_bytes()),
            BTreeMap::from([("unverified", 1), ("seq-gap", 20)]),
            1 + 2,
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
    assert_valid_chains(&held, &keys_of(g).content_key, "after forks");
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

/// Kind 1 (control) exists only in managed groups: in a passphrase group it is refused as
/// malformed (and the data entry before it stored), so every node holds the same log.
#[test]
fn control_entries_are_refused_in_passphrase_groups() {
    let g = gid(1);
    let mut db = Db::new(&[g]);
    let author = Author::new(author_key(1), keys_of(g));
    let data = author
        .seal(author.header_at(1, [0; 32], 1), b"data")
        .expect("seal");
    let mut header = author.header_at(2, *data.id(), 2);
    header.kind = EntryKind::Control;
    let control = author.seal(header, b"control").expect("seal");
    let outcome = db.ingest(&rules(g), raws(&[data.clone(), control]));
    assert_eq!(stored_seqs(&outcome), vec![1]);
    assert_eq!(reasons(&outcome), BTreeMap::from([("malformed", 1)]));
    assert!(
        outcome.rejected[0].detail.contains("passphrase group"),
        "{:?}",
        outcome.rejected
    );
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
    Rng::new(99).shuffle(&mut batch);
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
    assert_valid_chains(
        &stored_entries(&db.store, &g),
        &keys_of(g).content_key,
        "two authors",
    );
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

/// The lamport rule, on both sides of each bound: an author's first clock is at most
/// `MAX_LAMPORT_STEP`, each next one above its previous and at most `MAX_LAMPORT_STEP` above
/// it; a clock past `MAX_LAMPORT` is out of range. What is refused is a rejected entry, and
/// nothing after it in that author's log goes in.
#[test]
fn lamport_bounds_on_both_sides() {
    use verify::{MAX_LAMPORT, MAX_LAMPORT_STEP};
    let g = gid(1);
    let db = Db::new(&[g]);
    let ingest = |entries: Vec<&SignedEntry>| {
        db.store
            .write(|tx| {
                verify::ingest(
                    tx,
                    &rules(g),
                    entries.iter().map(|e| e.raw().to_vec()).collect(),
                )
            })
            .expect("ingest")
    };
    // First entries: at the step stored, one past it refused.
    let (x, y) = (author_key(1), author_key(2));
    let x1 = make_entry(&x, g, 1, [0; 32], MAX_LAMPORT_STEP, 0, b"x1");
    let y1 = make_entry(&y, g, 1, [0; 32], MAX_LAMPORT_STEP + 1, 0, b"y1");
    let outcome = ingest(vec![&x1, &y1]);
    assert_eq!(outcome.stored.len(), 1);
    assert_eq!(
        reasons(&outcome),
        BTreeMap::from([("lamport-out-of-bounds", 1)])
    );
    // Next entries: not above the previous refused; one above it and a full step above it
    // stored; one past a full step refused, and what follows it with it.
    let prev = MAX_LAMPORT_STEP;
    let same = make_entry(&x, g, 2, *x1.id(), prev, 0, b"same clock");
    let outcome = ingest(vec![&same]);
    assert_eq!(
        reasons(&outcome),
        BTreeMap::from([("lamport-out-of-bounds", 1)])
    );
    let x2 = make_entry(&x, g, 2, *x1.id(), prev + 1, 0, b"x2");
    let x3 = make_entry(&x, g, 3, *x2.id(), prev + 1 + MAX_LAMPORT_STEP, 0, b"x3");
    let outcome = ingest(vec![&x2, &x3]);
    assert_eq!(outcome.stored.len(), 2, "{:?}", outcome.rejected);
    let prev = prev + 1 + MAX_LAMPORT_STEP;
    let over = make_entry(&x, g, 4, *x3.id(), prev + MAX_LAMPORT_STEP + 1, 0, b"jam");
    let after = make_entry(
        &x,
        g,
        5,
        *over.id(),
        prev + MAX_LAMPORT_STEP + 2,
        0,
        b"after",
    );
    let outcome = ingest(vec![&over, &after]);
    assert!(outcome.stored.is_empty());
    assert_eq!(
        reasons(&outcome),
        BTreeMap::from([("lamport-out-of-bounds", 1), ("seq-gap", 1)])
    );
    // The cap: at `MAX_LAMPORT` the clock may stay put, and nothing goes past it.
    assert!(verify::lamport_in_bounds(MAX_LAMPORT - 1, MAX_LAMPORT));
    assert!(verify::lamport_in_bounds(MAX_LAMPORT, MAX_LAMPORT));
    assert!(!verify::lamport_in_bounds(MAX_LAMPORT, MAX_LAMPORT + 1));
    assert!(!verify::lamport_in_bounds(MAX_LAMPORT, MAX_LAMPORT - 1));
    assert_eq!(
        verify::next_lamport(MAX_LAMPORT, MAX_LAMPORT + 1),
        MAX_LAMPORT
    );
    // A publisher never makes what the rule refuses: far ahead of its own log, it advances
    // one step; behind it, one past its previous entry.
    assert_eq!(verify::next_lamport(10, u64::MAX), 10 + MAX_LAMPORT_STEP);
    assert_eq!(verify::next_lamport(10, 3), 11);
    assert_eq!(verify::next_lamport(0, 1), 1);
    // Past `MAX_LAMPORT` is out of range, before any chain rule.
    let z = make_entry(&author_key(3), g, 1, [0; 32], MAX_LAMPORT + 1, 0, b"over");
    let outcome = ingest(vec![&z]);
    assert_eq!(reasons(&outcome), BTreeMap::from([("out-of-range", 1)]));
    let next = db
        .store
        .read(|c| covey_core::store::max_lamport(c, &g))
        .unwrap()
        + 1;
    assert!(i64::try_from(next).is_ok());
}

// ---------------------------------------------------------------------------------------------
// One verdict for every batching (PROTOCOL.md, "Validity rules", step 6)
// ---------------------------------------------------------------------------------------------

/// `n` entries of `secret`'s log in `group` whose signatures are corrupted where `bad` says,
/// each linking to the one before as sent (`Author::forged_run`).
fn forged_run(
    secret: &SecretKey,
    group: Id32,
    n: u64,
    bad: impl Fn(u64) -> bool,
) -> Vec<SignedEntry> {
    let run = Author::new(secret.clone(), keys_of(group))
        .forged_run(n, |seq| format!("forged #{seq}").into_bytes(), &bad)
        .expect("forge");
    for entry in run.iter().filter(|e| bad(e.header().seq)) {
        assert!(entry.verify_signature().is_err());
    }
    run
}

/// Ingests `run` in one session cut at the given boundaries; returns the seqs stored.
fn ingest_cut(group: Id32, run: &[SignedEntry], cuts: &[usize]) -> Vec<u64> {
    let mut db = Db::new(&[group]);
    let mut stored = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain([&run.len()]) {
        stored.extend(stored_seqs(&db.ingest(&rules(group), raws(&run[from..to]))));
        from = to;
    }
    stored
}

/// A run with bad signatures that later signatures vouch for is accepted whole, and one
/// whose bad signatures no later one vouches for is cut at the same entry, however the run
/// is split into batches: at every single boundary and at every pair of boundaries.
#[test]
fn a_runs_verdict_is_the_same_at_every_batch_boundary() {
    let g = gid(1);
    let x = author_key(1);
    let n = 12u64;
    // Seqs 5 and 6 are vouched for by 7; seq 12, the last, by nothing yet.
    let run = forged_run(&x, g, n, |seq| seq == 5 || seq == 6 || seq == 12);
    let whole = ingest_cut(g, &run, &[]);
    assert_eq!(
        whole,
        (1..n).collect::<Vec<_>>(),
        "the last waits, the rest go in"
    );
    for cut in 0..=run.len() {
        assert_eq!(ingest_cut(g, &run, &[cut]), whole, "cut at {cut}");
        for second in cut..=run.len() {
            assert_eq!(
                ingest_cut(g, &run, &[cut, second]),
                whole,
                "cuts at {cut} and {second}"
            );
        }
    }
}

/// The window on both sides of its entry limit: a bad signature vouched for by the entry
/// `MAX_UNSIGNED_RUN` later is valid, one needing `MAX_UNSIGNED_RUN + 1` is not; either way
/// the same at every batch boundary.
#[test]
fn the_signature_window_holds_on_both_sides_of_its_entry_limit() {
    let g = gid(1);
    let x = author_key(1);
    let k = verify::MAX_UNSIGNED_RUN as u64;
    // Bad from 3 to 3 + k - 1: seq 3's voucher is 3 + k, exactly at the limit.
    let at = forged_run(&x, g, k + 5, |seq| (3..3 + k).contains(&seq));
    // Bad from 3 to 3 + k: seq 3's nearest voucher is 3 + k + 1, one past it.
    let past = forged_run(&x, g, k + 5, |seq| (3..=3 + k).contains(&seq));
    for cut in (0..at.len())
        .step_by(7)
        .chain([1, 2, 3, k as usize, at.len()])
    {
        assert_eq!(
            ingest_cut(g, &at, &[cut]),
            (1..=k + 5).collect::<Vec<_>>(),
            "at the limit, cut at {cut}"
        );
        assert_eq!(
            ingest_cut(g, &past, &[cut]),
            vec![1, 2],
            "past the limit, cut at {cut}"
        );
    }
}

/// The window on both sides of its byte limit: the entries from the unverified one up to
/// its voucher may total `MAX_UNSIGNED_RUN_BYTES`, not more.
#[test]
fn the_signature_window_holds_on_both_sides_of_its_byte_limit() {
    let g = gid(1);
    let x = author_key(1);
    let payload = 100_000;
    let entry_len = payload + TAG_LEN + HEADER_LEN + SIGNATURE_LEN;
    let fits = verify::MAX_UNSIGNED_RUN_BYTES / entry_len;
    let big = Rules {
        max_ciphertext: payload + TAG_LEN,
        ..rules(g)
    };
    let run = |bad_until: u64| -> Vec<SignedEntry> {
        Author::new(x.clone(), keys_of(g))
            .forged_run(
                bad_until + 1,
                |seq| vec![seq as u8; payload],
                |seq| seq <= bad_until,
            )
            .expect("forge")
    };
    for (bad, want) in [(fits as u64, fits + 1), (fits as u64 + 1, 0)] {
        let entries = run(bad);
        for cut in [0, 1, fits, entries.len()] {
            let mut db = Db::new(&[g]);
            let mut stored = stored_seqs(&db.ingest(&big, raws(&entries[..cut])));
            stored.extend(stored_seqs(&db.ingest(&big, raws(&entries[cut..]))));
            assert_eq!(
                stored.len(),
                want,
                "{bad} bad entries of {entry_len} bytes, cut at {cut}"
            );
        }
    }
}

/// Over the mesh: the forged run reaches two more nodes through every batch size and a link
/// loss after every number of frames, and every node ends with the same log.
#[test]
fn nodes_reach_one_log_whatever_the_batches_and_link_losses() {
    let g = gid(1);
    let x = author_key(9);
    let n = 12u64;
    let run = forged_run(&x, g, n, |seq| seq == 5 || seq == 6);
    // One node received the run long ago (as its author's node would hold it); two others
    // sync from it and from each other.
    let setup = |batch: usize, seed: u64| -> (SessionMesh, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut mesh = SessionMesh::new(dir.path(), 3, seed, batch, MAX_PAYLOAD);
        for at in 0..3 {
            mesh.join(at, &keys_of(g));
        }
        mesh.nodes[0]
            .store
            .write(|tx| {
                for e in &run {
                    store::insert_entry(tx, &g, e)?;
                }
                Ok(())
            })
            .expect("seed node 0");
        (mesh, dir)
    };
    let all: Vec<Id32> = run.iter().map(|e| *e.id()).collect();
    let holds = |mesh: &SessionMesh, at: usize| -> Vec<Id32> {
        let mut ids: Vec<Id32> = mesh
            .node_entries(at, &g)
            .iter()
            .map(|(_, e)| *e.id())
            .collect();
        ids.sort();
        ids
    };
    let mut want = all.clone();
    want.sort();
    let mut runs = 0;
    for batch in 1..=n as usize {
        // How many frames a clean run takes, to cut it after every one of them.
        let (mut clean, _dir) = setup(batch, batch as u64);
        clean.connect(0, 1);
        clean.connect(1, 2);
        let mut frames = 0;
        while clean.step() {
            frames += 1;
        }
        for at in 0..3 {
            assert_eq!(holds(&clean, at), want, "batch {batch}: node {at}");
        }
        for lose_after in 0..=frames {
            let (mut mesh, _dir) = setup(batch, lose_after);
            mesh.connect(0, 1);
            mesh.connect(1, 2);
            for _ in 0..lose_after {
                mesh.step();
            }
            // Both links drop with whatever was in flight, and come back.
            mesh.disconnect(0, 1);
            mesh.disconnect(1, 2);
            mesh.connect(1, 0);
            mesh.connect(2, 1);
            mesh.run();
            for at in 0..3 {
                assert_eq!(
                    holds(&mesh, at),
                    want,
                    "batch {batch}, link lost after {lose_after} frames: node {at}"
                );
            }
            runs += 1;
        }
    }
    assert!(runs > 100, "{runs} runs");
}

/// Two entries at one seq in one batch (a held one and the genuine one merged into one
/// transaction, or a sender offering both): the one whose own signature verifies wins
/// whatever the order, and the other is refused.
#[test]
fn a_contested_seq_goes_to_the_entry_whose_signature_verifies() {
    let g = gid(1);
    let x = author_key(1);
    let genuine = chain(&x, g, 2, "x");
    let bad = corrupt_signature(&genuine[0]);
    for order in [
        [bad.clone(), genuine[0].raw().to_vec()],
        [genuine[0].raw().to_vec(), bad.clone()],
    ] {
        let mut db = Db::new(&[g]);
        let mut batch = order.to_vec();
        batch.push(genuine[1].raw().to_vec());
        let outcome = db.ingest(&rules(g), batch);
        assert_eq!(stored_seqs(&outcome), vec![1, 2]);
        assert_eq!(reasons(&outcome), BTreeMap::from([("unverified", 1)]));
        assert_eq!(db.frontier(&g), vec![head(&x, 2)]);
    }
}

/// The proof bound counts every `Prove` frame, an empty one as one proof, so a peer cannot
/// send proofs for free; and a `Prove` that matches none of our groups reads nothing from
/// the store, so its cost does not depend on how many groups the node is in.
#[test]
fn empty_proves_count_toward_the_bound_and_read_nothing() {
    use covey_core::sync::driver::{
        Direction, DriverConfig, ReadStep, SessionBinding, SessionDriver,
    };
    use covey_core::sync::limits::RateLimits;
    use covey_core::sync::session::{FrontiersNeeded, MAX_PROOFS, Timers};
    let (g1, g2) = (gid(1), gid(2));
    let config = DriverConfig {
        max_frame_bytes: 1 << 20,
        // Room for every frame of the test at once, so the limiter never holds one back.
        rate_limits: RateLimits {
            frame_burst: 10 * MAX_PROOFS as u32,
            ..RateLimits::default()
        },
        timers: Timers::default(),
    };
    let (me, peer) = ([1u8; 32], [2u8; 32]);
    let pairs = [g1, g2].map(|g| (g, keys_of(g).pair(&me, &peer)));
    let binding = SessionBinding {
        direction: Direction::Incoming,
        binding: [7; 32],
        padding_key: [8; 32],
    };
    let mut driver = SessionDriver::new(&config, pairs, binding, "peer".into(), 0);
    driver.start();
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        features: vec![],
    };
    let view = Snapshot {
        groups: [g1, g2].into(),
        frontiers: BTreeMap::new(),
    };
    let step = driver.on_frame(1, Ok(hello), 10);
    assert_eq!(step, ReadStep::Load(FrontiersNeeded::None));
    assert_eq!(driver.on_view(1, &view), ReadStep::Next);
    for i in 0..MAX_PROOFS {
        let step = driver.on_frame(2, Ok(Message::Prove { proofs: vec![] }), 6);
        assert_eq!(
            step,
            ReadStep::Load(FrontiersNeeded::Groups(vec![])),
            "proof frame {i}: nothing to read"
        );
        assert_eq!(driver.on_view(2, &view), ReadStep::Next, "frame {i}");
    }
    let step = driver.on_frame(3, Ok(Message::Prove { proofs: vec![] }), 6);
    assert_eq!(step, ReadStep::Stop, "one past the bound is a violation");
    assert!(driver.is_closing());
}
