//! Records and enums that cross the boundary, and their conversions from core types.
//!
//! Ids cross as text: group and entry ids as 64 hex characters, node ids in iroh's text form.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::CoveyError;
use crate::keystore::{ForeignKeyStore, KeyStore};

/// How hard commits push to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Durability {
    /// WAL with `synchronous = NORMAL`: a commit survives a process crash; the last few may be
    /// lost on power failure. The default.
    Normal,
    /// `synchronous = FULL`: every commit is fsynced before it returns.
    Full,
}

impl From<Durability> for covey_core::Durability {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Normal => Self::Normal,
            Durability::Full => Self::Full,
        }
    }
}

/// How to open a node. Every field but `data_dir` has a default that works offline and sends
/// nothing beyond the peers it is given.
#[derive(uniffi::Record)]
pub struct NodeConfig {
    /// Where the database, lock and (by default) keys live; created on first use.
    pub data_dir: String,
    /// Socket address to bind, such as `127.0.0.1:0`; `None` binds any port on all interfaces.
    #[uniffi(default)]
    pub bind_addr: Option<String>,
    /// Address tickets of peers to dial at start (remembered like `add_peer`).
    #[uniffi(default)]
    pub bootstrap: Vec<String>,
    /// iroh relay URLs; empty means no relay, direct addresses only.
    #[uniffi(default)]
    pub relay_urls: Vec<String>,
    /// Where secrets live (Keychain, Android Keystore); `None` keeps 0600 files in `data_dir`.
    #[uniffi(default)]
    pub key_store: Option<Arc<dyn KeyStore>>,
    /// Commit durability; `None` means [`Durability::Normal`]. (Optional because uniffi has
    /// no enum literal defaults.)
    #[uniffi(default)]
    pub durability: Option<Durability>,
    /// Port mapping, net-report probes and DNS/pkarr address lookup; off by default.
    #[uniffi(default)]
    pub nat_traversal: bool,
    /// Largest payload accepted, from the app and from peers; `None` means 1 MiB. At most
    /// 64 MiB.
    #[uniffi(default)]
    pub max_payload_bytes: Option<u64>,
    /// Announce this node in the DHT rendezvous of each joined group and dial the members
    /// found there; `None` means on (the default). The DHT nodes holding the announcements
    /// cannot tell which group a key stands for, only that the nodes announcing one key in
    /// one hour share some group.
    #[uniffi(default)]
    pub dht_rendezvous: Option<bool>,
    /// Largest DHT record value this node publishes with `dht_put` and stores for others, in
    /// bytes; `None` means 1 KiB. From 1 byte to 32 KiB; anything else fails `open` with
    /// `InvalidInput`.
    #[uniffi(default)]
    pub dht_max_value_bytes: Option<u64>,
}

impl TryFrom<NodeConfig> for covey_core::NodeConfig {
    type Error = CoveyError;

    fn try_from(c: NodeConfig) -> Result<Self, CoveyError> {
        let mut config = covey_core::NodeConfig::new(PathBuf::from(c.data_dir));
        if let Some(bytes) = c.max_payload_bytes {
            // Core checks the range; this only keeps the frame-size sum from overflowing.
            let bytes = usize::try_from(bytes)
                .ok()
                .filter(|b| b.checked_add(covey_core::FRAME_OVERHEAD).is_some())
                .ok_or_else(|| {
                    CoveyError::invalid(format!("max_payload_bytes {bytes} is out of range"))
                })?;
            config = config.with_max_payload(bytes);
        }
        config.bind_addr = c
            .bind_addr
            .map(|a| {
                a.trim().parse::<SocketAddr>().map_err(|e| {
                    CoveyError::invalid(format!("bad bind_addr {a:?}: {e} (want ip:port)"))
                })
            })
            .transpose()?;
        config.bootstrap = c.bootstrap;
        config.relay_urls = c.relay_urls;
        config.key_store = c
            .key_store
            .map(|ks| Arc::new(ForeignKeyStore::new(ks)) as Arc<dyn covey_core::KeyStore>);
        config.durability = c.durability.unwrap_or(Durability::Normal).into();
        config.nat_traversal = c.nat_traversal;
        if let Some(on) = c.dht_rendezvous {
            config.dht.rendezvous = on;
        }
        if let Some(bytes) = c.dht_max_value_bytes {
            // Core checks the range (1 byte to 32 KiB); this only turns a u64 that does not
            // fit usize, or zero, into the same error before it gets there.
            let bytes = usize::try_from(bytes)
                .ok()
                .filter(|&b| b > 0)
                .ok_or_else(|| {
                    CoveyError::invalid(format!(
                        "dht_max_value_bytes {bytes} is out of range (1 byte to 32 KiB)"
                    ))
                })?;
            config.dht.protocol.limits.max_value = bytes;
        }
        Ok(config)
    }
}

/// How members join a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum GroupKind {
    /// Anyone with the passphrase and the name is a member.
    Passphrase,
    /// Created with `create_group` or joined by invite; an admin manages members.
    Managed,
}

impl From<covey_core::GroupKind> for GroupKind {
    fn from(k: covey_core::GroupKind) -> Self {
        match k {
            covey_core::GroupKind::Passphrase => Self::Passphrase,
            covey_core::GroupKind::Managed => Self::Managed,
        }
    }
}

/// A joined group.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct GroupInfo {
    /// The group id, 64 hex characters.
    pub group_id: String,
    /// The name it was joined under.
    pub name: String,
    /// Current epoch.
    pub epoch: u64,
    /// How members join.
    pub kind: GroupKind,
    /// Its members (managed group), or the members known to this node (passphrase group:
    /// authors seen, peers that acknowledged entries, and this node); `members().len()`.
    pub member_count: u32,
}

impl From<covey_core::GroupInfo> for GroupInfo {
    fn from(g: covey_core::GroupInfo) -> Self {
        Self {
            group_id: g.group_id.to_string(),
            name: g.name,
            epoch: g.epoch,
            kind: g.kind.into(),
            member_count: g.member_count,
        }
    }
}

/// What a member may do in a managed group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum MemberRole {
    /// Reads and writes entries.
    Member,
    /// A member that may also invite and remove members.
    Admin,
}

impl From<covey_core::Role> for MemberRole {
    fn from(r: covey_core::Role) -> Self {
        match r {
            covey_core::Role::Member => Self::Member,
            covey_core::Role::Admin => Self::Admin,
        }
    }
}

/// A member of a group: in a managed group, its members now (by its control entries); in a
/// passphrase group, those known to this node.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Member {
    /// The member's node id.
    pub node_id: String,
    /// Whether it is this node.
    pub is_self: bool,
    /// Highest seq of theirs this node holds in the group.
    pub last_seq: u64,
    /// Its role in a managed group; `None` in a passphrase group, which has no roles.
    pub role: Option<MemberRole>,
}

impl From<covey_core::Member> for Member {
    fn from(m: covey_core::Member) -> Self {
        Self {
            node_id: m.node_id.to_string(),
            is_self: m.is_self,
            last_seq: m.last_seq,
            role: m.role.map(MemberRole::from),
        }
    }
}

/// An invite to a managed group, from `Node.create_invite`. The link and the short code are
/// credentials: hand them only to the person invited (this record's Rust `Debug` leaves
/// them out; foreign `toString`s do not, so do not log the record).
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct Invite {
    /// The link, also the QR payload (`covey:invite/...`): the inviter's address, an invite
    /// id and a one-time secret, never the group's secrets.
    pub link: String,
    /// The short code a person can read out (`xxxx-xxxx`), answered while the inviter runs,
    /// for at most 10 minutes, with 3 attempts. The joiner finds the inviter through the DHT.
    pub short_code: String,
    /// When the invite stops being answered, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

impl std::fmt::Debug for Invite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invite")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl From<covey_core::Invite> for Invite {
    fn from(i: covey_core::Invite) -> Self {
        Self {
            link: i.link,
            short_code: i.short_code,
            expires_at_ms: i.expires_at_ms,
        }
    }
}

/// An entry's metadata: an [`Entry`] without its payload.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EntryMeta {
    /// Local, strictly increasing position: page with `entries(group, after_cursor=…)`.
    pub cursor: u64,
    /// Entry id, 64 hex characters.
    pub entry_id: String,
    /// Its group.
    pub group_id: String,
    /// Its author's node id.
    pub author: String,
    /// Position in the author's log (1, 2, …).
    pub seq: u64,
    /// Lamport clock; convergent order is (lamport, author, seq).
    pub lamport: u64,
    /// Author's clock at publish, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

impl From<covey_core::EntryMeta> for EntryMeta {
    fn from(m: covey_core::EntryMeta) -> Self {
        Self {
            cursor: m.cursor,
            entry_id: m.entry_id.to_string(),
            group_id: m.group_id.to_string(),
            author: m.author.to_string(),
            seq: m.seq,
            lamport: m.lamport,
            timestamp_ms: m.timestamp_ms,
        }
    }
}

/// An entry with its decrypted payload.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Entry {
    /// Local, strictly increasing position.
    pub cursor: u64,
    /// Entry id, 64 hex characters.
    pub entry_id: String,
    /// Its group.
    pub group_id: String,
    /// Its author's node id.
    pub author: String,
    /// Position in the author's log (1, 2, …).
    pub seq: u64,
    /// Lamport clock; convergent order is (lamport, author, seq).
    pub lamport: u64,
    /// Author's clock at publish, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The plaintext payload.
    pub payload: Vec<u8>,
}

impl From<covey_core::Entry> for Entry {
    fn from(e: covey_core::Entry) -> Self {
        let m = EntryMeta::from(e.meta);
        Self {
            cursor: m.cursor,
            entry_id: m.entry_id,
            group_id: m.group_id,
            author: m.author,
            seq: m.seq,
            lamport: m.lamport,
            timestamp_ms: m.timestamp_ms,
            payload: e.payload,
        }
    }
}

/// Who has an entry, as far as this node knows: its delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Delivery {
    /// Node ids of the peers other than this node known to hold the entry, sorted: its author
    /// (when that is not this node) and every peer that has acknowledged it.
    pub acked_by: Vec<String>,
    /// Whether every member this node knows of, other than itself, is in `acked_by`. False
    /// when this node knows of no other member.
    pub all_members: bool,
}

impl From<covey_core::Delivery> for Delivery {
    fn from(d: covey_core::Delivery) -> Self {
        Self {
            acked_by: d.acked_by.iter().map(ToString::to_string).collect(),
            all_members: d.all_members,
        }
    }
}

/// A record read from the DHT: signed by its publisher, the highest valid sequence found.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DhtRecord {
    /// Node id of the node that published (and signed) the record.
    pub publisher: String,
    /// The record's name within the publisher's namespace.
    pub name: String,
    /// The value.
    pub value: Vec<u8>,
    /// Its sequence number (the first put is 1; each put raises it).
    pub seq: u64,
    /// When it expires, ms since the Unix epoch, unless republished.
    pub expires_at_ms: u64,
}

impl From<covey_core::DhtRecord> for DhtRecord {
    fn from(r: covey_core::DhtRecord) -> Self {
        Self {
            publisher: r.publisher.to_string(),
            name: r.name,
            value: r.value,
            seq: r.seq,
            expires_at_ms: r.expires_at_ms,
        }
    }
}

/// Counters of what the sync layer saw since the node opened.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
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
    /// Entries a peer re-sent after being told this node holds them.
    pub replayed: u64,
    /// Queued sends dropped because a peer would not read them.
    pub dropped_frames: u64,
    /// Frames held back because a peer exceeded its rate limit.
    pub rate_limited: u64,
    /// Sessions ended because the peer stopped answering keepalives.
    pub peer_timeouts: u64,
}

impl From<covey_core::SyncCounters> for SyncCounters {
    fn from(c: covey_core::SyncCounters) -> Self {
        Self {
            published: c.published,
            received: c.received,
            duplicates: c.duplicates,
            rejected_entries: c.rejected_entries,
            rejected_frames: c.rejected_frames,
            incompatible_peers: c.incompatible_peers,
            replayed: c.replayed,
            dropped_frames: c.dropped_frames,
            rate_limited: c.rate_limited,
            peer_timeouts: c.peer_timeouts,
        }
    }
}

/// The DHT side of [`NodeStatus`]: the routing table's size and what the DHT saw since the
/// node opened.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DhtStatus {
    /// Contacts in the routing table.
    pub contacts: u32,
    /// Requests from DHT peers answered.
    pub requests_in: u64,
    /// Requests sent to DHT peers.
    pub requests_out: u64,
    /// Requests from peers dropped by the per-peer rate limit.
    pub rate_limited: u64,
    /// Requests to peers that timed out.
    pub timeouts: u64,
    /// Records or provider records refused (bad signature, expiry, size, wrong key).
    pub invalid_records: u64,
    /// Stores refused for a stale or conflicting sequence.
    pub conflicts: u64,
    /// DHT messages that failed to decode.
    pub undecodable: u64,
    /// Frames dropped before they were handled (oversized, malformed, too slow).
    pub frames_dropped: u64,
    /// Dials to DHT peers that failed or timed out.
    pub dial_failures: u64,
    /// Times no bootstrap peer answered and the contacts cached in the store were used.
    pub bootstrap_fallbacks: u64,
    /// Group members found through a rendezvous and dialed.
    pub rendezvous_found: u64,
}

impl From<covey_core::DhtStatus> for DhtStatus {
    fn from(s: covey_core::DhtStatus) -> Self {
        Self {
            contacts: s.contacts,
            requests_in: s.counters.requests_in,
            requests_out: s.counters.requests_out,
            rate_limited: s.counters.rate_limited,
            timeouts: s.counters.timeouts,
            invalid_records: s.counters.invalid_records,
            conflicts: s.counters.conflicts,
            undecodable: s.counters.undecodable,
            frames_dropped: s.frames_dropped,
            dial_failures: s.dial_failures,
            bootstrap_fallbacks: s.bootstrap_fallbacks,
            rendezvous_found: s.rendezvous_found,
        }
    }
}

/// A snapshot of the node's state.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NodeStatus {
    /// This node's id.
    pub node_id: String,
    /// Peers with a live sync session.
    pub connected_peers: Vec<String>,
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
    /// The DHT's routing table size and counters.
    pub dht: DhtStatus,
}

impl From<covey_core::NodeStatus> for NodeStatus {
    fn from(s: covey_core::NodeStatus) -> Self {
        Self {
            node_id: s.node_id.to_string(),
            connected_peers: s.connected_peers.iter().map(ToString::to_string).collect(),
            known_peers: s.known_peers,
            groups: s.groups,
            entries: s.entries,
            paused: s.paused,
            counters: s.counters.into(),
            dht: s.dht.into(),
        }
    }
}

/// A group's sync state with a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SyncState {
    /// The peer has entries we lack; they are arriving.
    CatchingUp,
    /// We hold everything the peer advertised.
    UpToDate,
}

impl From<covey_core::SyncState> for SyncState {
    fn from(s: covey_core::SyncState) -> Self {
        match s {
            covey_core::SyncState::CatchingUp => Self::CatchingUp,
            covey_core::SyncState::UpToDate => Self::UpToDate,
        }
    }
}

/// Something that happened, delivered to an [`crate::EventListener`].
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Event {
    /// An entry from a peer was stored.
    EntryReceived {
        /// Its group.
        group_id: String,
        /// Its local cursor.
        cursor: u64,
        /// Its id.
        entry_id: String,
        /// Its author.
        author: String,
    },
    /// A sync session with a peer started.
    PeerConnected {
        /// The peer.
        peer: String,
    },
    /// A sync session with a peer ended.
    PeerDisconnected {
        /// The peer.
        peer: String,
    },
    /// A group was joined or created, or changed epoch (a managed group's member was
    /// removed or left).
    GroupChanged {
        /// The group.
        group_id: String,
        /// Its epoch now.
        epoch: u64,
    },
    /// A group's sync state with a peer changed.
    SyncStateChanged {
        /// The group.
        group_id: String,
        /// The state.
        state: SyncState,
    },
    /// Something the app should know about (a rejected entry, a refused peer, dropped
    /// events), with why.
    Warning {
        /// Stable kind, such as `rejected-entry`, `incompatible-version`, `events-dropped` or
        /// `removed-from-group` (an admin removed this node from a managed group).
        kind: String,
        /// Human detail.
        message: String,
    },
}

impl From<covey_core::Event> for Event {
    fn from(e: covey_core::Event) -> Self {
        use covey_core::Event as E;
        match e {
            E::EntryReceived {
                group_id,
                cursor,
                entry_id,
                author,
            } => Self::EntryReceived {
                group_id: group_id.to_string(),
                cursor,
                entry_id: entry_id.to_string(),
                author: author.to_string(),
            },
            E::PeerConnected { peer } => Self::PeerConnected {
                peer: peer.to_string(),
            },
            E::PeerDisconnected { peer } => Self::PeerDisconnected {
                peer: peer.to_string(),
            },
            E::GroupChanged { group_id, epoch } => Self::GroupChanged {
                group_id: group_id.to_string(),
                epoch,
            },
            E::SyncStateChanged { group_id, state } => Self::SyncStateChanged {
                group_id: group_id.to_string(),
                state: state.into(),
            },
            E::Warning { kind, message } => Self::Warning { kind, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &str) -> NodeConfig {
        NodeConfig {
            data_dir: dir.into(),
            bind_addr: None,
            bootstrap: Vec::new(),
            relay_urls: Vec::new(),
            key_store: None,
            durability: None,
            nat_traversal: false,
            max_payload_bytes: None,
            dht_rendezvous: None,
            dht_max_value_bytes: None,
        }
    }

    #[test]
    fn defaults_map_to_core_defaults() {
        let core = covey_core::NodeConfig::try_from(config("/tmp/x")).expect("valid");
        let want = covey_core::NodeConfig::new("/tmp/x");
        assert_eq!(format!("{core:?}"), format!("{want:?}"));
    }

    #[test]
    fn bad_bind_addr_and_huge_payload_limit_are_invalid_input() {
        let mut c = config("/tmp/x");
        c.bind_addr = Some("localhost".into());
        assert!(matches!(
            covey_core::NodeConfig::try_from(c),
            Err(CoveyError::InvalidInput { .. })
        ));
        let mut c = config("/tmp/x");
        c.max_payload_bytes = Some(u64::MAX);
        assert!(matches!(
            covey_core::NodeConfig::try_from(c),
            Err(CoveyError::InvalidInput { .. })
        ));
        let mut c = config("/tmp/x");
        c.bind_addr = Some("127.0.0.1:0".into());
        c.durability = Some(Durability::Full);
        c.max_payload_bytes = Some(4096);
        let core = covey_core::NodeConfig::try_from(c).expect("valid");
        assert_eq!(core.bind_addr, Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert_eq!(core.durability, covey_core::Durability::Full);
        assert_eq!(core.max_payload_bytes, 4096);
    }

    #[test]
    fn dht_settings_map_to_core_and_zero_or_unrepresentable_limits_are_invalid_input() {
        let core = covey_core::NodeConfig::try_from(config("/tmp/x")).expect("valid");
        assert!(core.dht.rendezvous);
        assert_eq!(core.dht.protocol.limits.max_value, 1024);

        let mut c = config("/tmp/x");
        c.dht_rendezvous = Some(false);
        c.dht_max_value_bytes = Some(2048);
        let core = covey_core::NodeConfig::try_from(c).expect("valid");
        assert!(!core.dht.rendezvous);
        assert_eq!(core.dht.protocol.limits.max_value, 2048);

        let mut c = config("/tmp/x");
        c.dht_rendezvous = Some(true);
        let core = covey_core::NodeConfig::try_from(c).expect("valid");
        assert!(core.dht.rendezvous);

        let mut c = config("/tmp/x");
        c.dht_max_value_bytes = Some(0);
        let err = covey_core::NodeConfig::try_from(c).expect_err("zero");
        assert!(matches!(err, CoveyError::InvalidInput { .. }), "{err:?}");
        assert!(err.to_string().contains("dht_max_value_bytes"), "{err}");

        // Above the ceiling core refuses it at open (see ffi/tests); a u64 that does not fit
        // a usize is refused here.
        if usize::try_from(u64::MAX).is_err() {
            let mut c = config("/tmp/x");
            c.dht_max_value_bytes = Some(u64::MAX);
            assert!(matches!(
                covey_core::NodeConfig::try_from(c),
                Err(CoveyError::InvalidInput { .. })
            ));
        }
    }
}
