//! The sans-IO sync session: one per connected peer. It takes messages, local events and a
//! read-only view of the store, and returns [`Output`]s for a driver to carry out. It never
//! touches a socket, a clock or the disk, so it runs the same under iroh and a simulator.

use std::collections::{BTreeMap, BTreeSet};

use super::WarnKind;
use crate::wire::entry::Id32;
use crate::wire::frame::{Head, Message, RefuseCode};

/// Newest sync protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 2;
/// Oldest sync protocol version this build accepts. Version 1 revealed a node's groups to
/// anyone who connected and signed entries that name the group id, so it is not spoken.
pub const MIN_PROTOCOL_VERSION: u16 = 2;

/// Most membership proofs a peer may send in one session, padding included: far beyond the
/// groups any node is in, and a bound on what a peer can make us hash and hold.
pub const MAX_PROOFS: usize = 4096;

/// The fewest proofs an opening `Prove` carries: fewer real ones are padded up to this, and
/// more to the next power of two, so a peer learns at most the order of magnitude of the
/// sender's group count.
pub const MIN_PROOFS: usize = 4;
/// Optional features this build announces: `acks` (the peer may send `Ack`, and wants
/// them), `keepalive` (`Ping`/`Pong`, and an idle timeout). Unknown features are ignored; a
/// message a feature adds is only sent to peers that announced it.
pub const FEATURES: &[&str] = &["run-signatures", "acks", "keepalive"];

/// Prefix of the valued feature `max-frame=<bytes>`: the largest frame the sender accepts.
/// Batches sent to a peer are sized to fit its limit as well as ours; a peer that does not
/// announce one accepts [`DEFAULT_PEER_MAX_FRAME`].
pub const MAX_FRAME_FEATURE: &str = "max-frame=";

/// Most authors a session tracks per group for one peer. Far beyond any real group; a peer
/// naming more (to grow our memory) is a protocol violation.
pub const MAX_TRACKED_AUTHORS: usize = 65_536;

/// The frame limit assumed of a peer that announces none: the default node's.
pub const DEFAULT_PEER_MAX_FRAME: usize = (1 << 20) + 64 * 1024;

/// The smallest frame limit a peer's `max-frame=` is read as: room for one default entry.
pub const MIN_PEER_MAX_FRAME: usize = 64 * 1024;

/// The value of `max-frame=<bytes>`: one or more ASCII digits (no sign, no spaces) of a
/// number below 2^64, or `None` (the feature is then ignored). A value past what this
/// platform's `usize` holds reads as its maximum. Digits only, parsed as `u64`, so every
/// implementation and platform reads the same strings the same way.
pub fn parse_max_frame(value: &str) -> Option<usize> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bytes = value.parse::<u64>().ok()?;
    Some(usize::try_from(bytes).unwrap_or(usize::MAX))
}

/// Largest seq a head may claim: the same bound as lamport clocks, far past any real log.
/// A frontier beyond it (say `u64::MAX`) is a protocol violation, not a promise to wait on.
pub const MAX_SEQ: u64 = 1 << 62;

/// Session timers, in milliseconds of the driver's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// A peer that has not said hello this long after the session started is dropped.
    pub handshake_timeout_ms: u64,
    /// After this long without hearing from a peer, ping it.
    pub keepalive_ms: u64,
    /// After this long without hearing from a peer that speaks `keepalive`, it is gone.
    pub idle_timeout_ms: u64,
    /// A frame whose length prefix arrived must be complete within this long, or the
    /// session is closed (a peer that starts a frame and stalls holds nothing of ours).
    pub frame_timeout_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            handshake_timeout_ms: 10_000,
            keepalive_ms: 5_000,
            idle_timeout_ms: 20_000,
            frame_timeout_ms: 30_000,
        }
    }
}

/// What a session needs to know of local state.
pub trait LocalView {
    /// Whether this node is in `group`.
    fn has_group(&self, group: &Id32) -> bool;
    /// Every group this node is in.
    fn groups(&self) -> Vec<Id32>;
    /// This node's version vector for `group`.
    fn frontier(&self, group: &Id32) -> Vec<Head>;
}

/// The receipts a peer's claimed heads are worth: only for logs we hold (a peer cannot grow
/// our receipt table with logs we have never seen), and never past what we hold (a claim
/// beyond our own head must not read as delivery of entries written later).
fn receipts(claimed: &[Head], local: &BTreeMap<Id32, u64>) -> Vec<Head> {
    claimed
        .iter()
        .filter_map(|h| {
            let ours = *local.get(&h.author)?;
            let seq = h.seq.min(ours);
            (seq > 0).then_some(Head {
                author: h.author,
                seq,
            })
        })
        .collect()
}

/// How many proofs a `Prove` carrying `real` of them is padded to: at least [`MIN_PROOFS`],
/// otherwise the next power of two.
pub fn padded_proofs(real: usize) -> usize {
    real.max(MIN_PROOFS).next_power_of_two()
}

/// The frontiers the machine reads while handling one message
/// ([`SyncSession::frontiers_needed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontiersNeeded {
    /// These groups' (those this node is in).
    Groups(Vec<Id32>),
    /// One group's (if this node is in it).
    Group(Id32),
    /// None.
    None,
}

impl FrontiersNeeded {
    /// The groups to load, of those in `joined`.
    pub fn groups(&self, joined: &BTreeSet<Id32>) -> Vec<Id32> {
        match self {
            FrontiersNeeded::Groups(groups) => groups
                .iter()
                .filter(|g| joined.contains(*g))
                .copied()
                .collect(),
            FrontiersNeeded::Group(g) if joined.contains(g) => vec![*g],
            FrontiersNeeded::Group(_) | FrontiersNeeded::None => Vec::new(),
        }
    }
}

/// How far a group is synced with one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// The peer has entries we lack; they are arriving.
    CatchingUp,
    /// We hold everything the peer advertised.
    UpToDate,
}

/// What a session asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this message.
    Send(Message),
    /// Stream `(after_seq, up_to_seq]` of `author`'s log in `group` from the store, in
    /// bounded batches.
    SendRange {
        /// The group.
        group: Id32,
        /// Whose log.
        author: Id32,
        /// Last seq the peer holds.
        after_seq: u64,
        /// Last seq to send.
        up_to_seq: u64,
    },
    /// Verify and store these entries, then report back with [`SyncSession::on_ingested`].
    Ingest {
        /// The group they were sent for.
        group: Id32,
        /// Encoded entries.
        entries: Vec<Vec<u8>>,
    },
    /// The peer holds at least these heads of a group (it said so in a frontier, an announce
    /// or an ack): record them as its delivery receipts.
    PeerHeads {
        /// The group.
        group: Id32,
        /// The peer's heads.
        heads: Vec<Head>,
    },
    /// A group's sync state with this peer changed.
    StateChanged {
        /// The group.
        group: Id32,
        /// Its new state.
        state: SyncState,
    },
    /// Entries refused without being looked at (a group this node is not in); the session
    /// goes on.
    Rejected {
        /// How many entries.
        count: usize,
        /// Stable reason, such as `not-in-group`.
        reason: &'static str,
        /// Human detail.
        detail: String,
    },
    /// Something the app should hear about; the session goes on.
    Warn {
        /// What it is about.
        kind: WarnKind,
        /// Human detail.
        message: String,
    },
    /// End the session (after sending whatever was output before).
    Close {
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Default)]
struct PeerGroup {
    /// Highest seq per author the peer holds or has been sent.
    peer_has: BTreeMap<Id32, u64>,
    /// Authors for which the peer advertised more than we hold, and how much.
    awaiting: BTreeMap<Id32, u64>,
    /// Local entries committed after our frontier was read but before the peer's arrived;
    /// merged into the catch-up so none waits for its author's next entry.
    pending_local: BTreeMap<Id32, u64>,
    /// What we told the peer we hold (frontier, announce, acks): entries at or below it that
    /// it sends anyway are replays.
    told: BTreeMap<Id32, u64>,
    sent_frontier: bool,
    frontier_received: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingHello,
    Ready,
    Closed,
}

/// One peer's sync session.
#[derive(Debug)]
pub struct SyncSession {
    phase: Phase,
    version: u16,
    min_version: u16,
    peer_features: BTreeSet<String>,
    groups: BTreeMap<Id32, PeerGroup>,
    timers: Timers,
    now_ms: u64,
    started_ms: u64,
    last_heard_ms: u64,
    ping: Option<(u64, u64)>,
    next_nonce: u64,
    rtt_ms: Option<u64>,
    warned_replay: bool,
    max_frame: Option<usize>,
    peer_max_frame: usize,
    negotiated: Option<u16>,
    /// Whether this side dialed: the dialer proves its groups first.
    dialer: bool,
    /// Our groups the peer proved it is in, this session.
    peer_proved: BTreeSet<Id32>,
    /// The groups we proved to the peer, this session.
    we_proved: BTreeSet<Id32>,
}

impl Default for SyncSession {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncSession {
    /// A session speaking this build's protocol versions.
    pub fn new() -> Self {
        Self::with_versions(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION)
    }

    /// A session announcing other versions (for tests of negotiation).
    pub fn with_versions(version: u16, min_version: u16) -> Self {
        Self {
            phase: Phase::AwaitingHello,
            version,
            min_version,
            peer_features: BTreeSet::new(),
            groups: BTreeMap::new(),
            timers: Timers::default(),
            now_ms: 0,
            started_ms: 0,
            last_heard_ms: 0,
            ping: None,
            next_nonce: 1,
            rtt_ms: None,
            warned_replay: false,
            max_frame: None,
            peer_max_frame: DEFAULT_PEER_MAX_FRAME,
            negotiated: None,
            dialer: false,
            peer_proved: BTreeSet::new(),
            we_proved: BTreeSet::new(),
        }
    }

    /// Marks this side as the one that dialed (the default is the acceptor): it opens with
    /// proofs of all its groups, where the acceptor only ever answers proofs it verified.
    pub fn dialing(mut self, dialer: bool) -> Self {
        self.dialer = dialer;
        self
    }

    /// Announces this node's frame limit to the peer (feature `max-frame=<bytes>`).
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = Some(bytes);
        self
    }

    /// The largest frame the peer accepts: what it announced, or the default.
    pub fn peer_max_frame(&self) -> usize {
        self.peer_max_frame
    }

    /// The protocol version both sides speak (the lower of the two newest), once ready.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn negotiated_version(&self) -> Option<u16> {
        self.negotiated
    }

    /// Replaces the session's timers.
    pub fn with_timers(mut self, timers: Timers) -> Self {
        self.timers = timers;
        self
    }

    /// Sets the session's clock (milliseconds, monotonic, the driver's). Call it before
    /// handing the session anything, so what arrives is stamped with the right time. The
    /// first call also marks when the session started.
    pub fn advance(&mut self, now_ms: u64) {
        if self.started_ms == 0 && self.now_ms == 0 {
            self.started_ms = now_ms;
            self.last_heard_ms = now_ms;
        }
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// The timers fired (the driver calls this every second or so): drop a peer that never
    /// said hello or went silent, ping one that has been quiet. This is the failure detector:
    /// a peer is gone when it has not answered pings for `idle_timeout_ms`.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Output> {
        self.advance(now_ms);
        let silent = self.now_ms.saturating_sub(self.last_heard_ms);
        match self.phase {
            Phase::Closed => Vec::new(),
            Phase::AwaitingHello => {
                if self.now_ms.saturating_sub(self.started_ms) >= self.timers.handshake_timeout_ms {
                    self.phase = Phase::Closed;
                    let reason = format!("no hello within {} ms", self.timers.handshake_timeout_ms);
                    vec![
                        Output::Warn {
                            kind: WarnKind::HandshakeTimeout,
                            message: reason.clone(),
                        },
                        Output::Close { reason },
                    ]
                } else {
                    Vec::new()
                }
            }
            Phase::Ready if !self.peer_features.contains("keepalive") => Vec::new(),
            Phase::Ready => {
                if silent >= self.timers.idle_timeout_ms {
                    self.phase = Phase::Closed;
                    let reason = format!("peer silent for {silent} ms");
                    return vec![
                        Output::Warn {
                            kind: WarnKind::PeerTimeout,
                            message: reason.clone(),
                        },
                        Output::Close { reason },
                    ];
                }
                let ping_due = match self.ping {
                    None => silent >= self.timers.keepalive_ms,
                    Some((_, sent)) => self.now_ms.saturating_sub(sent) >= self.timers.keepalive_ms,
                };
                if !ping_due {
                    return Vec::new();
                }
                let nonce = self.next_nonce;
                self.next_nonce += 1;
                self.ping = Some((nonce, self.now_ms));
                vec![Output::Send(Message::Ping { nonce })]
            }
        }
    }

    /// When [`SyncSession::on_tick`] next has something to do (a handshake that times out,
    /// a ping that falls due, a silent peer that times out), in the driver's milliseconds;
    /// `None` while nothing is timed. The driver sleeps until then instead of ticking.
    pub fn next_deadline(&self) -> Option<u64> {
        match self.phase {
            Phase::Closed => None,
            Phase::AwaitingHello => Some(
                self.started_ms
                    .saturating_add(self.timers.handshake_timeout_ms),
            ),
            Phase::Ready if !self.peer_features.contains("keepalive") => None,
            Phase::Ready => {
                let idle = self
                    .last_heard_ms
                    .saturating_add(self.timers.idle_timeout_ms);
                let ping_from = match self.ping {
                    None => self.last_heard_ms,
                    Some((_, sent)) => sent,
                };
                Some(idle.min(ping_from.saturating_add(self.timers.keepalive_ms)))
            }
        }
    }

    /// The last round-trip time measured by a ping, in milliseconds.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn rtt_ms(&self) -> Option<u64> {
        self.rtt_ms
    }

    /// How many of `duplicates` (entries from this peer that we already held) were at or
    /// below what we had told it we hold: it had no reason to send them.
    pub fn count_replayed(&mut self, group: Id32, duplicates: &[Head]) -> (u64, Vec<Output>) {
        let Some(state) = self.groups.get(&group) else {
            return (0, Vec::new());
        };
        let replayed = duplicates
            .iter()
            .filter(|d| state.told.get(&d.author).is_some_and(|&told| d.seq <= told))
            .count() as u64;
        let mut out = Vec::new();
        if replayed > 0 && !self.warned_replay {
            self.warned_replay = true;
            out.push(Output::Warn {
                kind: WarnKind::ReplayedEntries,
                message: format!(
                    "peer re-sent {replayed} entries it had been told we hold (counted, not stored again)"
                ),
            });
        }
        (replayed, out)
    }

    fn peer_wants(&self, feature: &str) -> bool {
        self.peer_features.contains(feature)
    }

    /// Whether the handshake completed and the session is live.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Features the peer announced.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn peer_features(&self) -> &BTreeSet<String> {
        &self.peer_features
    }

    /// The first outputs of a session: our hello, and when we dialed, proofs of `groups`
    /// (the groups this node is in), padded by the transport. The acceptor proves nothing
    /// until the peer has proved a group they share, so a stranger who connects learns
    /// nothing but the hello.
    pub fn start(&mut self, groups: impl IntoIterator<Item = Id32>) -> Vec<Output> {
        let mut features: Vec<String> = FEATURES.iter().map(|f| f.to_string()).collect();
        if let Some(bytes) = self.max_frame {
            features.push(format!("{MAX_FRAME_FEATURE}{bytes}"));
        }
        let mut out = vec![Output::Send(Message::Hello {
            version: self.version,
            min_version: self.min_version,
            features,
        })];
        if self.dialer {
            let proofs: Vec<Id32> = groups.into_iter().collect();
            self.we_proved.extend(proofs.iter().copied());
            out.push(Output::Send(Message::Prove { proofs }));
        }
        out
    }

    /// Whether the pair may talk about `group`: we are in it, and each side has proved it is
    /// to the other. Until then every message about the group is treated as about a group we
    /// are not in.
    fn shared(&self, group: &Id32, view: &impl LocalView) -> bool {
        view.has_group(group) && self.peer_proved.contains(group) && self.we_proved.contains(group)
    }

    /// The peer proved it is in `groups` (the transport matched its proofs to ours): answer
    /// with our own proof where we have not given one, and open each group with a frontier.
    fn on_prove(&mut self, groups: Vec<Id32>, view: &impl LocalView) -> Vec<Output> {
        let mut answer = Vec::new();
        let mut opened = Vec::new();
        for group in groups {
            if !view.has_group(&group) || !self.peer_proved.insert(group) {
                continue;
            }
            if self.we_proved.insert(group) {
                answer.push(group);
            }
            opened.push(group);
        }
        let mut out = Vec::new();
        if !answer.is_empty() {
            out.push(Output::Send(Message::Prove { proofs: answer }));
        }
        for group in opened {
            out.extend(self.send_frontier(group, view));
        }
        out
    }

    fn violation(&mut self, what: String) -> Vec<Output> {
        self.refuse(RefuseCode::ProtocolViolation, WarnKind::ProtocolViolation, what)
    }

    /// Ends the session with a `Refuse`: tell the peer why, warn the app, close.
    fn refuse(&mut self, code: RefuseCode, kind: WarnKind, reason: String) -> Vec<Output> {
        self.phase = Phase::Closed;
        vec![
            Output::Send(Message::Refuse {
                code: code as u16,
                reason: reason.clone(),
            }),
            Output::Warn {
                kind,
                message: reason.clone(),
            },
            Output::Close { reason },
        ]
    }

    /// Which frontiers [`SyncSession::on_message`] reads from its view for `message`: the
    /// proved groups' for a `Prove` (it answers with a frontier per proved group), the named group's
    /// for a frontier, announce or ack, none otherwise (entries only ask whether we are in the
    /// group). The driver loads just these before handing the message over.
    pub fn frontiers_needed(message: &Message) -> FrontiersNeeded {
        match message {
            // Only the groups proved (already matched to ours): a peer whose proofs match
            // nothing costs no store read, and none proportional to our group count.
            Message::Prove { proofs } => FrontiersNeeded::Groups(proofs.clone()),
            Message::Frontier { group, .. }
            | Message::Announce { group, .. }
            | Message::Ack { group, .. } => FrontiersNeeded::Group(*group),
            Message::Hello { .. }
            | Message::Entries { .. }
            | Message::Refuse { .. }
            | Message::Ping { .. }
            | Message::Pong { .. } => FrontiersNeeded::None,
        }
    }

    /// Handles one message from the peer.
    pub fn on_message(&mut self, message: Message, view: &impl LocalView) -> Vec<Output> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        self.last_heard_ms = self.now_ms;
        match message {
            Message::Hello {
                version,
                min_version,
                features,
            } => self.on_hello(version, min_version, features, view),
            Message::Refuse { code, reason } => {
                self.phase = Phase::Closed;
                let message = format!("peer refused the session (code {code}): {reason}");
                vec![
                    Output::Warn {
                        kind: WarnKind::PeerRefused,
                        message: message.clone(),
                    },
                    Output::Close { reason: message },
                ]
            }
            _ if self.phase != Phase::Ready => self.violation("message before hello".to_string()),
            Message::Frontier { heads, .. }
            | Message::Announce { heads, .. }
            | Message::Ack { heads, .. }
                if heads.iter().any(|h| h.seq > MAX_SEQ) =>
            {
                self.violation(format!("a head claims a seq beyond {MAX_SEQ}"))
            }
            Message::Prove { proofs } => self.on_prove(proofs, view),
            Message::Frontier { group, heads } => self.on_frontier(group, heads, view),
            Message::Announce { group, heads } => {
                if !self.shared(&group, view) {
                    return Vec::new();
                }
                if let Some(state) = self.groups.get_mut(&group) {
                    state.sent_frontier = false;
                }
                self.on_frontier(group, heads, view)
            }
            Message::Ack { group, heads } => self.on_ack(group, heads, view),
            Message::Ping { nonce } => vec![Output::Send(Message::Pong { nonce })],
            Message::Pong { nonce } => {
                if let Some((expected, sent)) = self.ping
                    && expected == nonce
                {
                    self.rtt_ms = Some(self.now_ms.saturating_sub(sent));
                    self.ping = None;
                }
                Vec::new()
            }
            Message::Entries { group, entries } => {
                if !self.shared(&group, view) {
                    return vec![Output::Rejected {
                        count: entries.len(),
                        reason: "not-in-group",
                        detail: "entries for a group this node is not in".to_string(),
                    }];
                }
                vec![Output::Ingest { group, entries }]
            }
        }
    }

    fn on_hello(
        &mut self,
        version: u16,
        min_version: u16,
        features: Vec<String>,
        view: &impl LocalView,
    ) -> Vec<Output> {
        if self.phase != Phase::AwaitingHello {
            return self.violation("second hello".to_string());
        }
        if version < self.min_version || self.version < min_version {
            let reason = format!(
                "incompatible protocol versions: we speak {}..={}, peer speaks {}..={}",
                self.min_version, self.version, min_version, version
            );
            return self.refuse(
                RefuseCode::IncompatibleVersion,
                WarnKind::IncompatibleVersion,
                reason,
            );
        }
        self.phase = Phase::Ready;
        self.negotiated = Some(self.version.min(version));
        // Only features this build knows are kept: a hello stuffed with megabytes of unknown
        // feature names costs nothing past this point.
        for feature in features {
            if let Some(value) = feature.strip_prefix(MAX_FRAME_FEATURE) {
                if let Some(bytes) = parse_max_frame(value) {
                    // Never below what one default entry needs, never above our own reason.
                    self.peer_max_frame = bytes.max(MIN_PEER_MAX_FRAME);
                }
            } else if FEATURES.contains(&feature.as_str()) {
                self.peer_features.insert(feature);
            }
        }
        // Nothing about any group yet: frontiers follow proofs (`on_prove`).
        let shared: Vec<Id32> = view
            .groups()
            .into_iter()
            .filter(|g| self.shared(g, view))
            .collect();
        let mut out = Vec::new();
        for group in shared {
            out.extend(self.send_frontier(group, view));
        }
        out
    }

    fn send_frontier(&mut self, group: Id32, view: &impl LocalView) -> Vec<Output> {
        self.tell_frontier(group, view)
            .map(|heads| Output::Send(Message::Frontier { group, heads }))
            .into_iter()
            .collect()
    }

    /// Our frontier of `group`, once per session, remembered as what we told the peer we
    /// hold; `None` when it was sent already.
    fn tell_frontier(&mut self, group: Id32, view: &impl LocalView) -> Option<Vec<Head>> {
        let state = self.groups.entry(group).or_default();
        if state.sent_frontier {
            return None;
        }
        state.sent_frontier = true;
        let heads = view.frontier(&group);
        for h in &heads {
            state.told.insert(h.author, h.seq);
        }
        Some(heads)
    }

    fn on_ack(&mut self, group: Id32, heads: Vec<Head>, view: &impl LocalView) -> Vec<Output> {
        if !self.shared(&group, view) || heads.is_empty() {
            return Vec::new();
        }
        let local: BTreeMap<Id32, u64> = view
            .frontier(&group)
            .into_iter()
            .map(|h| (h.author, h.seq))
            .collect();
        let state = self.groups.entry(group).or_default();
        for head in &heads {
            if local.contains_key(&head.author) || state.peer_has.contains_key(&head.author) {
                let known = state.peer_has.entry(head.author).or_insert(0);
                *known = (*known).max(head.seq);
            }
        }
        let heads = receipts(&heads, &local);
        if heads.is_empty() {
            return Vec::new();
        }
        vec![Output::PeerHeads { group, heads }]
    }

    fn on_frontier(&mut self, group: Id32, heads: Vec<Head>, view: &impl LocalView) -> Vec<Output> {
        // A peer's groups that we are not in (or that it has not proved) are none of our
        // business, and we do not reveal that we noticed.
        if !self.shared(&group, view) {
            return Vec::new();
        }
        let mut out = self.send_frontier(group, view);
        let mut local: BTreeMap<Id32, u64> = view
            .frontier(&group)
            .into_iter()
            .map(|h| (h.author, h.seq))
            .collect();
        let state = self.groups.entry(group).or_default();
        state.frontier_received = true;
        for (author, seq) in std::mem::take(&mut state.pending_local) {
            let ours = local.entry(author).or_insert(0);
            *ours = (*ours).max(seq);
        }
        for head in &heads {
            let known = state.peer_has.entry(head.author).or_insert(0);
            *known = (*known).max(head.seq);
            let ours = local.get(&head.author).copied().unwrap_or(0);
            if head.seq > ours {
                // A repeated author counts with its highest seq, whatever the order.
                let awaited = state.awaiting.entry(head.author).or_insert(0);
                *awaited = (*awaited).max(head.seq);
            }
        }
        if state.peer_has.len() > MAX_TRACKED_AUTHORS {
            return self.violation(format!(
                "peer named more than {MAX_TRACKED_AUTHORS} authors in one group"
            ));
        }
        let known_heads = receipts(&heads, &local);
        if !known_heads.is_empty() {
            out.push(Output::PeerHeads {
                group,
                heads: known_heads,
            });
        }
        for (author, &ours) in &local {
            let known = state.peer_has.entry(*author).or_insert(0);
            if *known < ours {
                out.push(Output::SendRange {
                    group,
                    author: *author,
                    after_seq: *known,
                    up_to_seq: ours,
                });
                *known = ours;
            }
        }
        out.push(Output::StateChanged {
            group,
            state: if state.awaiting.is_empty() {
                SyncState::UpToDate
            } else {
                SyncState::CatchingUp
            },
        });
        out
    }

    /// Reports entries from this peer that were stored (or already held): the peer has them,
    /// so they are never sent back, and catch-up progress is re-evaluated.
    pub fn on_ingested(
        &mut self,
        group: Id32,
        held: &[Head],
        view: &impl LocalView,
    ) -> Vec<Output> {
        let acks = self.peer_wants("acks");
        let Some(state) = self.groups.get_mut(&group) else {
            return Vec::new();
        };
        for head in held {
            let known = state.peer_has.entry(head.author).or_insert(0);
            *known = (*known).max(head.seq);
        }
        // The peer sent these, so it holds them: a receipt, even for logs we first heard of
        // from it.
        let mut out = Vec::new();
        if !held.is_empty() {
            out.push(Output::PeerHeads {
                group,
                heads: held.to_vec(),
            });
        }
        if state.awaiting.is_empty() && (!acks || held.is_empty()) {
            return out;
        }
        let local: BTreeMap<Id32, u64> = view
            .frontier(&group)
            .into_iter()
            .map(|h| (h.author, h.seq))
            .collect();
        if acks {
            // Ack our contiguous frontier for the authors just touched: that is what a
            // receipt promises (we hold everything up to it), whatever the batch held.
            let mut heads: Vec<Head> = held
                .iter()
                .filter_map(|h| {
                    let seq = local.get(&h.author).copied().unwrap_or(0);
                    let told = state.told.entry(h.author).or_insert(0);
                    (seq > *told).then(|| {
                        *told = seq;
                        Head {
                            author: h.author,
                            seq,
                        }
                    })
                })
                .collect();
            heads.sort_by_key(|h| h.author);
            heads.dedup_by_key(|h| h.author);
            if !heads.is_empty() {
                out.push(Output::Send(Message::Ack { group, heads }));
            }
        }
        if !state.awaiting.is_empty() {
            state
                .awaiting
                .retain(|author, target| local.get(author).copied().unwrap_or(0) < *target);
            if state.awaiting.is_empty() {
                out.push(Output::StateChanged {
                    group,
                    state: SyncState::UpToDate,
                });
            }
        }
        out
    }

    /// A new entry was stored locally (published here or received from anyone): push it to
    /// this peer if it lacks it, together with anything before it that it also lacks.
    pub fn on_local_entry(&mut self, group: Id32, author: Id32, seq: u64) -> Vec<Output> {
        if self.phase != Phase::Ready {
            return Vec::new();
        }
        let Some(state) = self.groups.get_mut(&group) else {
            return Vec::new();
        };
        if !state.frontier_received {
            let pending = state.pending_local.entry(author).or_insert(0);
            *pending = (*pending).max(seq);
            return Vec::new();
        }
        let known = state.peer_has.entry(author).or_insert(0);
        if *known >= seq {
            return Vec::new();
        }
        let after_seq = *known;
        *known = seq;
        vec![Output::SendRange {
            group,
            author,
            after_seq,
            up_to_seq: seq,
        }]
    }

    /// This node joined a group while the session was live; `peer_proved` says whether a
    /// proof the peer sent earlier in the session proves it is in the group too. The dialer
    /// proves the new group at once; the acceptor only if the peer proved it. Once both have,
    /// announce it, asking the peer for its frontier in return.
    pub fn on_group_joined(
        &mut self,
        group: Id32,
        peer_proved: bool,
        view: &impl LocalView,
    ) -> Vec<Output> {
        if self.phase != Phase::Ready {
            return Vec::new();
        }
        if peer_proved {
            self.peer_proved.insert(group);
        }
        let mut out = Vec::new();
        if (self.dialer || peer_proved) && self.we_proved.insert(group) {
            out.push(Output::Send(Message::Prove {
                proofs: vec![group],
            }));
        }
        if self.shared(&group, view)
            && let Some(heads) = self.tell_frontier(group, view)
        {
            out.push(Output::Send(Message::Announce { group, heads }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_frame_values_are_digits_of_a_u64() {
        assert_eq!(parse_max_frame("1114112"), Some(1_114_112));
        assert_eq!(parse_max_frame("0"), Some(0));
        assert_eq!(parse_max_frame("00070000"), Some(70_000));
        assert_eq!(
            parse_max_frame("18446744073709551615"),
            Some(usize::try_from(u64::MAX).unwrap_or(usize::MAX))
        );
        for refused in ["", "+70000", "-1", " 70000", "70000 ", "7e4", "0x10000", "18446744073709551616"] {
            assert_eq!(parse_max_frame(refused), None, "{refused:?}");
        }
    }

    /// A view of one group whose frontier holds `author` up to `seq` (nothing when 0).
    fn holding(group: Id32, author: Id32, seq: u64) -> crate::sync::engine::Snapshot {
        let heads = if seq == 0 {
            Vec::new()
        } else {
            vec![Head { author, seq }]
        };
        crate::sync::engine::Snapshot {
            groups: [group].into(),
            frontiers: [(group, heads)].into(),
        }
    }

    #[test]
    fn heads_in_any_order_with_repeats_and_zeros_count_by_their_highest_seq() {
        let (group, author, nobody) = ([7; 32], [1; 32], [2; 32]);
        let mut s = SyncSession::new();
        let _ = s.start([]);
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
            features: vec![],
        };
        let _ = s.on_message(hello, &holding(group, author, 0));
        let _ = s.on_message(
            Message::Prove {
                proofs: vec![group],
            },
            &holding(group, author, 0),
        );
        let frontier = Message::Frontier {
            group,
            heads: vec![
                Head { author, seq: 5 },
                Head { author: nobody, seq: 0 },
                Head { author, seq: 3 },
            ],
        };
        let out = s.on_message(frontier, &holding(group, author, 0));
        let caught_up = |out: &[Output]| {
            out.iter().any(|o| {
                matches!(
                    o,
                    Output::StateChanged {
                        state: SyncState::UpToDate,
                        ..
                    }
                )
            })
        };
        assert!(
            out.contains(&Output::StateChanged {
                group,
                state: SyncState::CatchingUp,
            }),
            "{out:?}"
        );
        // Up to date only at seq 5, the highest the repeated author was named with.
        let out = s.on_ingested(group, &[Head { author, seq: 3 }], &holding(group, author, 3));
        assert!(!caught_up(&out), "{out:?}");
        let out = s.on_ingested(group, &[Head { author, seq: 5 }], &holding(group, author, 5));
        assert!(caught_up(&out), "{out:?}");
        assert!(s.is_ready(), "seq 0 and repeats are not violations");
    }

    #[test]
    fn a_peers_frame_limit_is_read_from_its_hello() {
        let view = crate::sync::engine::Snapshot::default();
        let limit = |features: &[&str]| {
            let mut s = SyncSession::new();
            let _ = s.start([]);
            let hello = Message::Hello {
                version: PROTOCOL_VERSION,
                min_version: MIN_PROTOCOL_VERSION,
                features: features.iter().map(|f| f.to_string()).collect(),
            };
            let _ = s.on_message(hello, &view);
            s.peer_max_frame()
        };
        assert_eq!(limit(&[]), DEFAULT_PEER_MAX_FRAME, "none announced");
        assert_eq!(limit(&["max-frame=200000"]), 200_000);
        assert_eq!(limit(&["max-frame=65536"]), MIN_PEER_MAX_FRAME, "at the floor");
        assert_eq!(limit(&["max-frame=65535"]), MIN_PEER_MAX_FRAME, "below it reads as it");
        assert_eq!(limit(&["max-frame=+200000"]), DEFAULT_PEER_MAX_FRAME, "ignored");
        assert_eq!(limit(&["max-frame=huge"]), DEFAULT_PEER_MAX_FRAME, "ignored");
    }
}
