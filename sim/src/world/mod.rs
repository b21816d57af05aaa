//! The simulated world: nodes with real stores, connections over a modelled network, and an
//! event queue on a virtual clock.
//!
//! Each honest node runs covey-core's sync driver core ([`SessionDriver`]) once per connected
//! peer, exactly as `covey_core::node::sync_driver` does over iroh: at most one live session
//! per peer ([`keeps_new_session`]), frames read and handed to the driver (which rate-limits
//! them and asks for the view its machine needs), the actions it asks for carried out (store
//! a batch with the shared [`engine::ingest_batch`], record receipts, fan newly stored heads
//! out to every session, count, warn, close), a writer that writes what the driver hands it
//! (range batches read from the store one at a time), a timer event at the driver's next
//! deadline, and dial loops that redial with [`Backoff`] on the driver's timings. The files of
//! this module keep only the virtual links: what to do is decided in covey-core, once.
//!
//! The network carries encoded frames (the same `wire::frame` encoding, groups renamed to
//! per-pair session tags by the driver). Each direction of a connection is one ordered stream
//! with a flow-control window: the writer takes the next work from the driver only while
//! fewer than `window_bytes` are unacknowledged, and the receiver returns credit when its
//! reader takes a frame, so a slow or stalled receiver back-pressures the sender.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::path::PathBuf;

use covey_core::SyncCounters;
use covey_core::crypto::Secret32;
use covey_core::crypto::aead::TAG_LEN;
use covey_core::group::GroupKeys;
use covey_core::store::{self, Durability, GroupRow, Store};
use covey_core::sync::WarnKind;
use covey_core::sync::backoff::Backoff;
use covey_core::sync::driver::timing::{
    AFTER_RUN_PAUSE_MS, CONNECT_TIMEOUT_MS, DIAL_RECHECK_MS, WRITER_GRACE_MS,
};
use covey_core::sync::driver::{
    Action, Direction, DriverConfig, ReadStep, SessionBinding, SessionDriver, Transmit,
    keeps_new_session,
};
use covey_core::sync::engine::{self, Draft};
use covey_core::sync::limits::RateLimits;
use covey_core::sync::session::Timers;
use covey_core::sync::verify::{self, Rules, Unverified};
use covey_core::wire::WireError;
use covey_core::wire::entry::{Id32, SignedEntry};
use covey_core::wire::frame::{self, Head, LENGTH_PREFIX, Message};
use covey_core::{CoveyError, Result};
use iroh::SecretKey;

use crate::net::LinkConfig;
use covey_core::testing::Rng;

mod conn;
mod driver;
mod life;
mod managed;
mod script;

/// A node's index in the simulation.
pub type NodeIdx = usize;
/// A connection's id, unique for the whole run.
pub type ConnId = u64;

/// Base of the simulated wall clock written into entries (ms since the Unix epoch).
pub const EPOCH_MS: u64 = 1_700_000_000_000;
/// How long a frame waits before it is offered again across a cut link, ms.
pub const CUT_RETRY_MS: u64 = 500;

/// How a simulation is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed everything random is drawn from.
    pub seed: u64,
    /// Links between nodes unless set otherwise with [`Sim::set_link`].
    pub link: LinkConfig,
    /// Flow-control window per stream direction, bytes (like a QUIC stream window).
    pub window_bytes: usize,
    /// Largest payload accepted from peers.
    pub max_payload_bytes: usize,
    /// Largest frame accepted, and the size ranges are batched to.
    pub max_frame_bytes: usize,
    /// Session timers.
    pub timers: Timers,
    /// Per-peer rate limits of every node unless set per node.
    pub rate_limits: RateLimits,
    /// How long a dial to an unreachable peer takes to fail, ms.
    pub connect_timeout_ms: u64,
    /// Where node stores are created; `None` uses the system temp dir. Defaults to
    /// [`STORE_DIR_ENV`] when set, else `/dev/shm` when it exists (a RAM disk: SQLite's
    /// checkpoint fsyncs would otherwise dominate a run's wall time; the semantics of a
    /// committed transaction are the same).
    pub store_root: Option<PathBuf>,
}

/// Environment variable naming the directory node stores are created in.
pub const STORE_DIR_ENV: &str = "COVEY_SIM_DIR";

fn default_store_root() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(STORE_DIR_ENV) {
        return Some(PathBuf::from(dir));
    }
    let shm = PathBuf::from("/dev/shm");
    shm.is_dir().then_some(shm)
}

impl SimConfig {
    /// The node defaults (1 MiB payloads, 1 MiB + 64 KiB frames, default timers and rate
    /// limits), a 1 MiB window and default links.
    pub fn new(seed: u64) -> Self {
        let max_payload_bytes = 1 << 20;
        Self {
            seed,
            link: LinkConfig::default(),
            window_bytes: 1 << 20,
            max_payload_bytes,
            max_frame_bytes: max_payload_bytes + 64 * 1024,
            timers: Timers::default(),
            rate_limits: RateLimits::default(),
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            store_root: default_store_root(),
        }
    }
}

/// Per-node options.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Bytes per ms the node's reader processes; `None` processes instantly. A slow receiver.
    pub proc_bytes_per_ms: Option<u64>,
    /// Rate limits this node applies to each peer; `None` uses the config's.
    pub rate_limits: Option<RateLimits>,
    /// A scripted (adversarial) node: no session machine, no dial loops, no one-per-peer
    /// rule; the test sends its frames and reads what it receives.
    pub scripted: bool,
    /// The node's secret key; `None` draws one from the seed. A test that runs the same
    /// session through the simulator and a real node gives both the same identity.
    pub secret: Option<[u8; 32]>,
}

/// What a node's sync layer counted: the node's own `SyncCounters` (what `status()` reports),
/// plus what only the simulator sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// The counters a real node reports in `status()`, counted at the same places.
    pub sync: SyncCounters,
    /// Sessions registered.
    pub sessions_opened: u64,
    /// Connections refused because a session with that peer was already live.
    pub sessions_refused: u64,
    /// Sync state changes reported.
    pub state_changes: u64,
    /// Times this node crashed.
    pub crashes: u64,
}

/// The most a node held at once during the run: what its memory use is bounded by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peaks {
    /// Most items in one session's outbox.
    pub max_outbox_items: usize,
    /// Most unacknowledged bytes this node had in flight on one stream.
    pub max_in_flight_bytes: usize,
    /// Most bytes delivered to one session and not yet read.
    pub max_inbox_bytes: usize,
    /// Most live sessions at once.
    pub max_sessions: usize,
    /// Most live sessions with one peer at once.
    pub max_sessions_per_peer: usize,
}

impl Peaks {
    /// The larger of each field.
    pub fn merge(self, other: Peaks) -> Peaks {
        Peaks {
            max_outbox_items: self.max_outbox_items.max(other.max_outbox_items),
            max_in_flight_bytes: self.max_in_flight_bytes.max(other.max_in_flight_bytes),
            max_inbox_bytes: self.max_inbox_bytes.max(other.max_inbox_bytes),
            max_sessions: self.max_sessions.max(other.max_sessions),
            max_sessions_per_peer: self.max_sessions_per_peer.max(other.max_sessions_per_peer),
        }
    }
}

/// Whole-run totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events handled.
    pub events: u64,
    /// Frames delivered.
    pub frames: u64,
    /// Frame bytes delivered.
    pub bytes: u64,
    /// Connections opened.
    pub connections: u64,
}

/// One published entry as the global ledger knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Entry id.
    pub id: Id32,
    /// Its lamport clock.
    pub lamport: u64,
}

/// Every entry published in the run, per group, keyed by (author, seq).
pub type Ledger = BTreeMap<Id32, BTreeMap<(Id32, u64), LedgerEntry>>;

#[derive(Debug)]
enum Item {
    Frame(Vec<u8>),
    Fin,
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Frame(b) => b.len(),
            Item::Fin => 0,
        }
    }
}

#[derive(Debug, Default)]
struct Stream {
    queue: VecDeque<(u64, Item)>,
    last_arrival: u64,
    in_flight: usize,
    scheduled: bool,
}

#[derive(Debug)]
struct Conn {
    /// `[dialer, acceptor]`.
    ends: [NodeIdx; 2],
    life: [u64; 2],
    open: [bool; 2],
    accepted: bool,
    dialed: bool,
    started: u64,
    /// `streams[i]` carries frames from `ends[i]` to `ends[1 - i]`.
    streams: [Stream; 2],
    /// Frames that arrived before the receiving side's session started.
    early: [VecDeque<Vec<u8>>; 2],
    /// Frames a scripted side queued before its session started.
    pre_send: [VecDeque<Vec<u8>>; 2],
    /// What both ends' TLS sessions would export (membership proofs are bound to it).
    binding: [u8; 32],
}

#[derive(Debug)]
struct Link {
    config: LinkConfig,
    cut: bool,
    tx_free_at: u64,
}

#[derive(Debug)]
struct Session {
    peer: NodeIdx,
    side: usize,
    direction: Direction,
    dialed: bool,
    /// The driver core: machine, send queue, rate limiter, tags, output policy.
    driver: SessionDriver,
    inbox: VecDeque<Vec<u8>>,
    inbox_bytes: usize,
    /// Where the reader is: the driver's last answer.
    step: ReadStep,
    /// When the session's timer event is scheduled, if it is.
    timer_at: Option<u64>,
    read_scheduled: bool,
    write_scheduled: bool,
    closing: bool,
    raw_out: VecDeque<Vec<u8>>,
    silent: bool,
    /// The peer finished its stream: once the inbox is read, the session ends.
    fin: bool,
    /// Entries from the peer held back for a later signature (`verify::Unverified`).
    unverified: Unverified,
}

#[derive(Debug)]
struct Live {
    store: Store,
    max_lamport: BTreeMap<Id32, u64>,
    held: BTreeMap<Id32, u64>,
    sessions: BTreeMap<ConnId, Session>,
    registered: BTreeMap<NodeIdx, ConnId>,
    dialers: BTreeMap<NodeIdx, Backoff>,
    busy_until: u64,
}

#[derive(Debug)]
struct Node {
    secret: SecretKey,
    id: Id32,
    dir: tempfile::TempDir,
    scripted: bool,
    proc_bytes_per_ms: Option<u64>,
    rate_limits: RateLimits,
    /// The key store: survives crashes.
    groups: BTreeMap<Id32, GroupKeys>,
    /// Remembered peers: survive crashes.
    targets: BTreeSet<NodeIdx>,
    life: u64,
    live: Option<Live>,
    counters: Counters,
    peaks: Peaks,
    warnings: BTreeMap<String, u64>,
    /// What a scripted node received, per connection (kept after the connection ends).
    script_log: BTreeMap<ConnId, Vec<Message>>,
}

#[derive(Debug)]
enum Ev {
    SessionTick {
        node: NodeIdx,
        conn: ConnId,
    },
    DialStep {
        node: NodeIdx,
        life: u64,
        peer: NodeIdx,
        after_attempt: bool,
    },
    ConnAccept {
        conn: ConnId,
    },
    ConnUp {
        conn: ConnId,
    },
    Deliver {
        conn: ConnId,
        dir: usize,
    },
    Credit {
        conn: ConnId,
        dir: usize,
        bytes: usize,
    },
    Read {
        node: NodeIdx,
        conn: ConnId,
    },
    Write {
        node: NodeIdx,
        conn: ConnId,
    },
    Teardown {
        node: NodeIdx,
        conn: ConnId,
    },
    ConnLost {
        conn: ConnId,
        to: usize,
    },
}

#[derive(Debug)]
struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Our writer finished the stream: a FIN follows the last frame, then the connection
    /// closes.
    Fin,
    /// The connection is closed now; the peer hears of it after one trip, if the link is up.
    Close,
    /// The peer ended it: nothing more to tell.
    Quiet,
}

/// A deterministic simulation of Covey nodes.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    rng: Rng,
    net_rng: Rng,
    nodes: Vec<Node>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    links: BTreeMap<(NodeIdx, NodeIdx), Link>,
    groups: BTreeMap<Id32, GroupKeys>,
    /// Managed groups, by id: their creator.
    managed: BTreeMap<Id32, Id32>,
    /// The members of each managed group as each node last folded them.
    folds: BTreeMap<(NodeIdx, Id32), BTreeSet<Id32>>,
    ledger: Ledger,
    trace: blake3::Hasher,
    stats: Stats,
    errors: Vec<String>,
    last_publish_ms: u64,
}

impl Sim {
    /// An empty world.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = Rng::new(config.seed);
        let net_rng = rng.fork();
        let mut trace = blake3::Hasher::new();
        trace.update(b"covey-sim/trace/v1");
        trace.update(&config.seed.to_be_bytes());
        Self {
            config,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            net_rng,
            nodes: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            links: BTreeMap::new(),
            groups: BTreeMap::new(),
            managed: BTreeMap::new(),
            folds: BTreeMap::new(),
            ledger: BTreeMap::new(),
            trace,
            stats: Stats::default(),
            errors: Vec::new(),
            last_publish_ms: 0,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Set-up and inspection
    // -----------------------------------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Virtual time, ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The scenario's random source (seeded; separate from the network's draws).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Whole-run totals.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Driver errors (store failures and the like); an honest run has none.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Every entry published so far.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Virtual time of the last publish, ms.
    pub fn last_publish_ms(&self) -> u64 {
        self.last_publish_ms
    }

    /// Creates a group with a root secret drawn from the seed and returns its id.
    pub fn add_group(&mut self) -> Id32 {
        let root = Secret32::from_bytes(self.rng.bytes32());
        self.add_group_from_root(&root)
    }

    /// Creates a group from a given root secret (a passphrase group's, say) and returns its
    /// id.
    pub fn add_group_from_root(&mut self, root: &Secret32) -> Id32 {
        let keys = GroupKeys::from_root(root);
        let id = keys.id.0;
        self.groups.insert(id, keys);
        self.ledger.entry(id).or_default();
        id
    }

    /// Every group's id.
    pub fn groups(&self) -> Vec<Id32> {
        self.groups.keys().copied().collect()
    }

    /// A group's keys.
    pub fn group_keys(&self, group: &Id32) -> Option<&GroupKeys> {
        self.groups.get(group)
    }

    /// Adds a node (up, with a fresh store in its own temp dir) and returns its index.
    pub fn add_node(&mut self, options: NodeOptions) -> Result<NodeIdx> {
        let drawn = self.rng.bytes32();
        let secret = SecretKey::from_bytes(&options.secret.unwrap_or(drawn));
        let id = *secret.public().as_bytes();
        let mut builder = tempfile::Builder::new();
        builder.prefix("covey-sim-node");
        let dir = match &self.config.store_root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
        .map_err(|e| CoveyError::storage(format!("cannot create a node dir: {e}")))?;
        let rate_limits = options.rate_limits.unwrap_or(self.config.rate_limits);
        rate_limits.validate(self.config.max_frame_bytes)?;
        self.nodes.push(Node {
            secret,
            id,
            dir,
            scripted: options.scripted,
            proc_bytes_per_ms: options.proc_bytes_per_ms,
            rate_limits,
            groups: BTreeMap::new(),
            targets: BTreeSet::new(),
            life: 0,
            live: None,
            counters: Counters::default(),
            peaks: Peaks::default(),
            warnings: BTreeMap::new(),
            script_log: BTreeMap::new(),
        });
        let idx = self.nodes.len() - 1;
        self.restart(idx)?;
        Ok(idx)
    }

    /// A node's id (its public key).
    pub fn node_id(&self, node: NodeIdx) -> Id32 {
        self.nodes[node].id
    }

    /// A node's secret key (to forge its entries in adversarial tests).
    pub fn node_secret(&self, node: NodeIdx) -> SecretKey {
        self.nodes[node].secret.clone()
    }

    /// Whether a node is scripted (adversarial).
    pub fn is_scripted(&self, node: NodeIdx) -> bool {
        self.nodes[node].scripted
    }

    /// Whether a node is running.
    pub fn is_up(&self, node: NodeIdx) -> bool {
        self.nodes[node].live.is_some()
    }

    /// A node's counters.
    pub fn counters(&self, node: NodeIdx) -> &Counters {
        &self.nodes[node].counters
    }

    /// A node's memory peaks.
    pub fn peaks(&self, node: NodeIdx) -> Peaks {
        self.nodes[node].peaks
    }

    /// Warnings a node reported, by kind.
    pub fn warnings(&self, node: NodeIdx) -> &BTreeMap<String, u64> {
        &self.nodes[node].warnings
    }

    /// The groups a node is in.
    pub fn node_groups(&self, node: NodeIdx) -> Vec<Id32> {
        self.nodes[node].groups.keys().copied().collect()
    }

    /// Whether a node is in a group.
    pub fn is_member(&self, node: NodeIdx, group: &Id32) -> bool {
        self.nodes[node].groups.contains_key(group)
    }

    /// The peers a node has a registered session with.
    pub fn session_peers(&self, node: NodeIdx) -> Vec<NodeIdx> {
        self.nodes[node]
            .live
            .as_ref()
            .map(|l| l.registered.keys().copied().collect())
            .unwrap_or_default()
    }

    /// A node's live sessions (registered or, for a scripted node, any), as (conn, peer).
    pub fn sessions(&self, node: NodeIdx) -> Vec<(ConnId, NodeIdx)> {
        self.nodes[node]
            .live
            .as_ref()
            .map(|l| l.sessions.iter().map(|(c, s)| (*c, s.peer)).collect())
            .unwrap_or_default()
    }

    /// Items in a node's outbox for `conn` (None when there is no such session).
    pub fn outbox_len(&self, node: NodeIdx, conn: ConnId) -> Option<usize> {
        self.nodes[node]
            .live
            .as_ref()
            .and_then(|l| l.sessions.get(&conn))
            .map(|s| s.driver.outbox_len())
    }

    /// How many entries of `group` a running node holds (tracked as it stores them).
    pub fn held(&self, node: NodeIdx, group: &Id32) -> u64 {
        self.nodes[node]
            .live
            .as_ref()
            .and_then(|l| l.held.get(group).copied())
            .unwrap_or(0)
    }

    /// Runs `f` on a running node's store.
    pub fn with_store<T>(&self, node: NodeIdx, f: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        let live = self.nodes[node]
            .live
            .as_ref()
            .ok_or_else(|| CoveyError::invalid(format!("node {node} is down")))?;
        f(&live.store)
    }

    /// Every stored entry of `group` on a running node, in cursor order, with its cursor.
    pub fn stored_entries(&self, node: NodeIdx, group: &Id32) -> Result<Vec<(u64, SignedEntry)>> {
        self.with_store(node, |store| {
            let mut out = Vec::new();
            let mut after = 0;
            loop {
                let rows = store.read(|c| store::entries_after(c, group, after, 10_000))?;
                let Some(last) = rows.last().map(|r| r.cursor) else {
                    break;
                };
                for row in rows {
                    let entry = SignedEntry::decode(row.raw, usize::MAX).map_err(|e| {
                        CoveyError::storage(format!("stored entry does not decode: {e}"))
                    })?;
                    out.push((row.cursor, entry));
                }
                after = last;
            }
            Ok(out)
        })
    }

    /// Sets both directions of the link between `a` and `b`.
    pub fn set_link(&mut self, a: NodeIdx, b: NodeIdx, config: LinkConfig) {
        for key in [(a, b), (b, a)] {
            self.link_mut(key.0, key.1).config = config;
        }
    }

    /// Cuts the link between `a` and `b`: nothing crosses it until [`Sim::heal`].
    pub fn cut(&mut self, a: NodeIdx, b: NodeIdx) {
        for key in [(a, b), (b, a)] {
            self.link_mut(key.0, key.1).cut = true;
        }
    }

    /// Restores the link between `a` and `b`.
    pub fn heal(&mut self, a: NodeIdx, b: NodeIdx) {
        for key in [(a, b), (b, a)] {
            self.link_mut(key.0, key.1).cut = false;
        }
    }

    /// Cuts every link between `left` and `right`.
    pub fn partition(&mut self, left: &[NodeIdx], right: &[NodeIdx]) {
        for &a in left {
            for &b in right {
                self.cut(a, b);
            }
        }
    }

    /// Restores every cut link.
    pub fn heal_all(&mut self) {
        for link in self.links.values_mut() {
            link.cut = false;
        }
    }

    fn link_mut(&mut self, from: NodeIdx, to: NodeIdx) -> &mut Link {
        let config = self.config.link;
        self.links.entry((from, to)).or_insert(Link {
            config,
            cut: false,
            tx_free_at: 0,
        })
    }

    fn link_config(&self, from: NodeIdx, to: NodeIdx) -> LinkConfig {
        self.links
            .get(&(from, to))
            .map(|l| l.config)
            .unwrap_or(self.config.link)
    }

    fn is_cut(&self, from: NodeIdx, to: NodeIdx) -> bool {
        self.links.get(&(from, to)).is_some_and(|l| l.cut)
    }

    fn error(&mut self, what: String) {
        self.errors.push(format!("t={} {what}", self.now));
    }

    fn warn(&mut self, node: NodeIdx, kind: &str) {
        *self.nodes[node]
            .warnings
            .entry(kind.to_owned())
            .or_insert(0) += 1;
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    // -----------------------------------------------------------------------------------------
    // Running
    // -----------------------------------------------------------------------------------------

    /// Handles every event due up to `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: u64) {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > t {
                break;
            }
            let Some(Reverse(ev)) = self.queue.pop() else {
                break;
            };
            self.now = ev.at;
            self.stats.events += 1;
            self.dispatch(ev.ev);
        }
        self.now = self.now.max(t);
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    /// Runs until [`Sim::converged`] holds, checking every `step_ms`, or until `deadline`.
    /// Returns the time it first held.
    pub fn run_until_converged(&mut self, deadline: u64, step_ms: u64) -> Option<u64> {
        loop {
            if self.converged() {
                return Some(self.now);
            }
            if self.now >= deadline {
                return None;
            }
            let next = (self.now + step_ms.max(1)).min(deadline);
            self.run_until(next);
        }
    }

    /// A hash of everything delivered (time, connection, direction, bytes of every frame) and
    /// of every running node's stored entries in cursor order: two runs of one seed give the
    /// same hash.
    pub fn trace_hash(&self) -> Result<String> {
        let mut h = self.trace.clone();
        for node in 0..self.nodes.len() {
            if !self.is_up(node) {
                h.update(b"down");
                continue;
            }
            for group in self.groups.keys() {
                for (cursor, entry) in self.stored_entries(node, group)? {
                    h.update(&cursor.to_be_bytes());
                    h.update(entry.id());
                }
            }
        }
        Ok(h.finalize().to_hex().to_string())
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::SessionTick { node, conn } => self.on_tick(node, conn),
            Ev::DialStep {
                node,
                life,
                peer,
                after_attempt,
            } => self.on_dial_step(node, life, peer, after_attempt),
            Ev::ConnAccept { conn } => self.on_accept(conn),
            Ev::ConnUp { conn } => self.on_conn_up(conn),
            Ev::Deliver { conn, dir } => self.on_deliver(conn, dir),
            Ev::Credit { conn, dir, bytes } => self.on_credit(conn, dir, bytes),
            Ev::Read { node, conn } => self.on_read(node, conn),
            Ev::Write { node, conn } => self.on_write(node, conn),
            Ev::Teardown { node, conn } => {
                if self.session_mut(node, conn).is_some() {
                    self.teardown(node, conn, End::Close);
                }
            }
            Ev::ConnLost { conn, to } => self.on_conn_lost(conn, to),
        }
    }
}
