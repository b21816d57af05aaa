//! The records the facade hands to apps.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use iroh::EndpointId;

use crate::dht::{DhtConfig, DhtCounters, RecordQuotas};
use crate::error::{CoveyError, Result};
pub use crate::group::control::Role;
use crate::group::{GroupId, GroupKind, parse_id32};
use crate::keystore::KeyStore;
use crate::store::Durability;
use crate::sync::limits::RateLimits;
use crate::sync::session::{SyncState, Timers};
use crate::wire::entry::Id32;

/// Default largest payload accepted by `publish` and from peers: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// Room a frame needs beyond one maximal entry (header, signature, message framing).
pub const FRAME_OVERHEAD: usize = 64 * 1024;

/// How to open a node. Every field but `data_dir` has a default that works offline and
/// sends nothing beyond the peers it is given.
#[derive(Clone)]
pub struct NodeConfig {
    /// Where the database, lock and (by default) keys live; created on first use.
    pub data_dir: PathBuf,
    /// Socket address to bind; `None` binds any port on all interfaces.
    pub bind_addr: Option<std::net::SocketAddr>,
    /// Address tickets of peers to dial at start (remembered like `add_peer`).
    pub bootstrap: Vec<String>,
    /// iroh relay URLs; empty means no relay, direct addresses only.
    pub relay_urls: Vec<String>,
    /// Where secrets live; `None` uses 0600 files in the data dir.
    pub key_store: Option<Arc<dyn KeyStore>>,
    /// Commit durability.
    pub durability: Durability,
    /// Port mapping, net-report probes and DNS/pkarr address lookup; off by default.
    pub nat_traversal: bool,
    /// Largest payload accepted, from the app and from peers.
    pub max_payload_bytes: usize,
    /// Largest sync frame accepted; at least one maximal entry plus [`FRAME_OVERHEAD`].
    pub max_frame_bytes: usize,
    /// How fast each peer may send frames and bytes to this node.
    pub rate_limits: RateLimits,
    /// Handshake timeout, keepalive interval and idle timeout of sync sessions.
    pub timers: Timers,
    /// The DHT: its parameters, what this node holds for others, and group rendezvous.
    pub dht: DhtSettings,
}

/// How a node takes part in the DHT (`covey/dht/2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtSettings {
    /// Kademlia parameters, record limits (values 1 KiB by default, up to 32 KiB) and the
    /// per-peer request rate.
    pub protocol: DhtConfig,
    /// How much this node stores for others: records and provider records, in rows and
    /// bytes, in total and per publisher.
    pub quotas: RecordQuotas,
    /// Announce this node in the rendezvous of each joined group and connect to the members
    /// found there. Announcements are signed by a per-window identity derived from the group
    /// secret and carry the dial address sealed to the group, so the DHT nodes holding them
    /// cannot tell which group a key stands for nor whose record it is (they see only the
    /// node id of the connection that sent it; PROTOCOL.md, "What observers learn").
    pub rendezvous: bool,
    /// How often each group's rendezvous is searched for members (ms). Until a search finds
    /// one, searches back off from one second up to this.
    pub rendezvous_interval_ms: u64,
    /// Most DHT contacts kept in the store, so a node whose bootstrap tickets all fail can
    /// rejoin the network it knew.
    pub cached_contacts: usize,
}

impl Default for DhtSettings {
    fn default() -> Self {
        Self {
            protocol: DhtConfig::default(),
            quotas: RecordQuotas::default(),
            rendezvous: true,
            rendezvous_interval_ms: 300_000,
            cached_contacts: 64,
        }
    }
}

impl DhtSettings {
    fn validate(&self) -> Result<()> {
        self.protocol.validate()?;
        if self.rendezvous_interval_ms < 1_000 {
            return Err(CoveyError::invalid(
                "dht.rendezvous_interval_ms must be at least 1000",
            ));
        }
        if self.cached_contacts > 4096 {
            return Err(CoveyError::invalid(
                "dht.cached_contacts must be at most 4096",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("data_dir", &self.data_dir)
            .field("bind_addr", &self.bind_addr)
            .field("bootstrap", &self.bootstrap.len())
            .field("relay_urls", &self.relay_urls)
            .field("custom_key_store", &self.key_store.is_some())
            .field("durability", &self.durability)
            .field("nat_traversal", &self.nat_traversal)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("rate_limits", &self.rate_limits)
            .field("timers", &self.timers)
            .field("dht", &self.dht)
            .finish()
    }
}

impl NodeConfig {
    /// A config with every default for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            bind_addr: None,
            bootstrap: Vec::new(),
            relay_urls: Vec::new(),
            key_store: None,
            durability: Durability::Normal,
            nat_traversal: false,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD,
            max_frame_bytes: DEFAULT_MAX_PAYLOAD + FRAME_OVERHEAD,
            rate_limits: RateLimits::default(),
            timers: Timers::default(),
            dht: DhtSettings::default(),
        }
    }

    /// Binds to `127.0.0.1` on any port: what tests, demos and benchmarks use.
    pub fn loopback(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::new(data_dir);
        config.bind_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        config
    }

    /// Sets the payload limit and sizes the frame limit to fit it.
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self.max_frame_bytes = bytes + FRAME_OVERHEAD;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(CoveyError::invalid("data_dir must not be empty"));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > (64 << 20) {
            return Err(CoveyError::invalid(
                "max_payload_bytes must be between 1 byte and 64 MiB",
            ));
        }
        if self.max_frame_bytes < self.max_payload_bytes + FRAME_OVERHEAD {
            return Err(CoveyError::invalid(format!(
                "max_frame_bytes must be at least max_payload_bytes + {FRAME_OVERHEAD}"
            )));
        }
        self.rate_limits.validate(self.max_frame_bytes)?;
        self.dht.validate()?;
        let t = &self.timers;
        if t.keepalive_ms == 0
            || t.idle_timeout_ms <= t.keepalive_ms
            || t.handshake_timeout_ms == 0
            || t.frame_timeout_ms == 0
        {
            return Err(CoveyError::invalid(
                "timers: keepalive must be above zero and below the idle timeout; handshake and frame timeouts above zero",
            ));
        }
        Ok(())
    }
}

/// An entry id: BLAKE3 of the signed entry's encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub Id32);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({})", &hex::encode(self.0)[..12])
    }
}

impl FromStr for EntryId {
    type Err = CoveyError;

    fn from_str(s: &str) -> Result<Self> {
        parse_id32(s, "entry id").map(EntryId)
    }
}

/// A joined group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group id.
    pub group_id: GroupId,
    /// The name it was joined under.
    pub name: String,
    /// Current epoch.
    pub epoch: u64,
    /// How members join.
    pub kind: GroupKind,
    /// Members known to this node: authors seen, peers that acknowledged entries, and this
    /// node; equal to `members().len()`.
    pub member_count: u32,
}

/// An invite to a managed group ([`Node::create_invite`](super::Node::create_invite)).
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// The link, also the QR payload: the inviter's address, the invite id and a one-time
    /// secret (never the group's secrets).
    pub link: String,
    /// The short code a person can read out (`xxxx-xxxx`), answered while the inviter runs,
    /// for at most 10 minutes, with 3 attempts.
    pub short_code: String,
    /// When the invite stops being answered, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

impl std::fmt::Debug for Invite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The link and code are credentials: never printed.
        f.debug_struct("Invite")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// A member of a group as far as this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's node id.
    pub node_id: EndpointId,
    /// Whether it is this node.
    pub is_self: bool,
    /// Highest seq of theirs this node holds in the group.
    pub last_seq: u64,
    /// Its role in a managed group; `None` in a passphrase group, which has no roles.
    pub role: Option<Role>,
}

/// An entry's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Local, strictly increasing position.
    pub cursor: u64,
    /// Entry id.
    pub entry_id: EntryId,
    /// Its group.
    pub group_id: GroupId,
    /// Its author.
    pub author: EndpointId,
    /// Position in the author's log.
    pub seq: u64,
    /// Lamport clock; convergent order is (lamport, author, seq).
    pub lamport: u64,
    /// Author's clock at publish.
    pub timestamp_ms: u64,
}

/// An entry with its decrypted payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Metadata.
    pub meta: EntryMeta,
    /// The plaintext payload.
    pub payload: Vec<u8>,
}

/// Counters of what the sync layer saw, since the node opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncCounters {
    /// Entries published here.
    pub published: u64,
    /// Entries received from peers and stored.
    pub received: u64,
    /// Entries received that were already held (no-ops).
    pub duplicates: u64,
    /// Entries refused (bad signature, chain, seq, group, epoch, size).
    pub rejected_entries: u64,
    /// Frames refused (oversized, truncated, undecodable, out of order).
    pub rejected_frames: u64,
    /// Sessions refused for an incompatible protocol version.
    pub incompatible_peers: u64,
    /// Entries a peer re-sent after we had told it we hold them (stored once, counted here).
    pub replayed: u64,
    /// Frames or queued sends dropped: sends a peer would not read, frames from a session
    /// that was already closing.
    pub dropped_frames: u64,
    /// Frames that arrived over a peer's rate limit and were held back until its budget
    /// refilled.
    pub rate_limited: u64,
    /// Sessions ended because the peer stopped answering (the failure detector).
    pub peer_timeouts: u64,
}

impl SyncCounters {
    /// Adds to the counter the sync driver core names (how a transport without atomics, the
    /// simulator, keeps the same counts at the same places).
    pub fn add(&mut self, counter: crate::sync::driver::Counter, by: u64) {
        use crate::sync::driver::Counter;
        let cell = match counter {
            Counter::Received => &mut self.received,
            Counter::Duplicates => &mut self.duplicates,
            Counter::RejectedEntries => &mut self.rejected_entries,
            Counter::RejectedFrames => &mut self.rejected_frames,
            Counter::IncompatiblePeers => &mut self.incompatible_peers,
            Counter::Replayed => &mut self.replayed,
            Counter::DroppedFrames => &mut self.dropped_frames,
            Counter::RateLimited => &mut self.rate_limited,
            Counter::PeerTimeouts => &mut self.peer_timeouts,
        };
        *cell += by;
    }
}

/// A snapshot of the node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node's id.
    pub node_id: EndpointId,
    /// Peers with a live sync session.
    pub connected_peers: Vec<EndpointId>,
    /// Peers remembered for redial.
    pub known_peers: u32,
    /// Groups joined.
    pub groups: u32,
    /// Entries stored, all groups.
    pub entries: u64,
    /// Whether the node is paused.
    pub paused: bool,
    /// Sync counters.
    pub counters: SyncCounters,
    /// The DHT's state and counters.
    pub dht: DhtStatus,
}

/// The DHT side of [`NodeStatus`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtStatus {
    /// Contacts in the routing table.
    pub contacts: u32,
    /// What the DHT state machine saw: requests, refusals, timeouts, rate limiting.
    pub counters: DhtCounters,
    /// Frames dropped before reaching the state machine (oversized, malformed, too slow).
    pub frames_dropped: u64,
    /// Dials to DHT peers that failed or timed out.
    pub dial_failures: u64,
    /// Times no bootstrap peer answered and the contacts cached in the store were used.
    pub bootstrap_fallbacks: u64,
    /// Group members found through a rendezvous and dialed.
    pub rendezvous_found: u64,
}

/// Something that happened, delivered to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An entry from a peer was stored.
    EntryReceived {
        /// Its group.
        group_id: GroupId,
        /// Its local cursor.
        cursor: u64,
        /// Its id.
        entry_id: EntryId,
        /// Its author.
        author: EndpointId,
    },
    /// A sync session with a peer started.
    PeerConnected {
        /// The peer.
        peer: EndpointId,
    },
    /// A sync session with a peer ended.
    PeerDisconnected {
        /// The peer.
        peer: EndpointId,
    },
    /// A group was joined or changed epoch.
    GroupChanged {
        /// The group.
        group_id: GroupId,
        /// Its epoch now.
        epoch: u64,
    },
    /// A group's sync state with a peer changed.
    SyncStateChanged {
        /// The group.
        group_id: GroupId,
        /// The state.
        state: SyncState,
    },
    /// Something the app should know about (a rejected entry, a refused peer), with why.
    Warning {
        /// Stable kind, such as `rejected-entry` or `incompatible-version`.
        kind: String,
        /// Human detail.
        message: String,
    },
}
