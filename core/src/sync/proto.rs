//! The sans-IO sync session: one per connected peer. It takes messages, local events and a
//! read-only view of the store, and returns [`Output`]s for a driver to carry out. It never
//! touches a socket, a clock or the disk, so it runs the same under iroh and a simulator.

use std::collections::{HashMap, HashSet};

use crate::wire::entry::Id32;
use crate::wire::frame::{Head, Message, RefuseCode};

/// Newest sync protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Oldest sync protocol version this build accepts.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// Optional features this build announces.
pub const FEATURES: &[&str] = &["run-signatures"];

/// What a session needs to know of local state.
pub trait LocalView {
    /// Whether this node is in `group`.
    fn has_group(&self, group: &Id32) -> bool;
    /// Every group this node is in.
    fn groups(&self) -> Vec<Id32>;
    /// This node's version vector for `group`.
    fn frontier(&self, group: &Id32) -> Vec<Head>;
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
        /// Stable kind, such as `rejected-frame`.
        kind: &'static str,
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
    peer_has: HashMap<Id32, u64>,
    /// Authors for which the peer advertised more than we hold, and how much.
    awaiting: HashMap<Id32, u64>,
    /// Local entries committed after our frontier was read but before the peer's arrived;
    /// merged into the catch-up so none waits for its author's next entry.
    pending_local: HashMap<Id32, u64>,
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
    peer_features: HashSet<String>,
    groups: HashMap<Id32, PeerGroup>,
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
            peer_features: HashSet::new(),
            groups: HashMap::new(),
        }
    }

    /// Whether the handshake completed and the session is live.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Features the peer announced.
    pub fn peer_features(&self) -> &HashSet<String> {
        &self.peer_features
    }

    /// The first outputs of a session: our hello.
    pub fn start(&mut self) -> Vec<Output> {
        vec![Output::Send(Message::Hello {
            version: self.version,
            min_version: self.min_version,
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
        })]
    }

    fn violation(&mut self, what: String) -> Vec<Output> {
        self.phase = Phase::Closed;
        vec![
            Output::Send(Message::Refuse {
                code: RefuseCode::ProtocolViolation as u16,
                reason: what.clone(),
            }),
            Output::Warn {
                kind: "protocol-violation",
                message: what.clone(),
            },
            Output::Close { reason: what },
        ]
    }

    /// Handles one message from the peer.
    pub fn on_message(&mut self, message: Message, view: &impl LocalView) -> Vec<Output> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
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
                        kind: "peer-refused",
                        message: message.clone(),
                    },
                    Output::Close { reason: message },
                ]
            }
            _ if self.phase != Phase::Ready => self.violation("message before hello".to_string()),
            Message::Frontier { group, heads } => self.on_frontier(group, heads, view),
            Message::Announce { group, heads } => {
                if let Some(state) = self.groups.get_mut(&group) {
                    state.sent_frontier = false;
                }
                self.on_frontier(group, heads, view)
            }
            Message::Entries { group, entries } => {
                if !view.has_group(&group) {
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
            self.phase = Phase::Closed;
            let reason = format!(
                "incompatible protocol versions: we speak {}..={}, peer speaks {}..={}",
                self.min_version, self.version, min_version, version
            );
            return vec![
                Output::Send(Message::Refuse {
                    code: RefuseCode::IncompatibleVersion as u16,
                    reason: reason.clone(),
                }),
                Output::Warn {
                    kind: "incompatible-version",
                    message: reason.clone(),
                },
                Output::Close { reason },
            ];
        }
        self.phase = Phase::Ready;
        self.peer_features = features.into_iter().collect();
        let mut out = Vec::new();
        for group in view.groups() {
            out.extend(self.send_frontier(group, view));
        }
        out
    }

    fn send_frontier(&mut self, group: Id32, view: &impl LocalView) -> Vec<Output> {
        let state = self.groups.entry(group).or_default();
        if state.sent_frontier {
            return Vec::new();
        }
        state.sent_frontier = true;
        vec![Output::Send(Message::Frontier {
            group,
            heads: view.frontier(&group),
        })]
    }

    fn on_frontier(&mut self, group: Id32, heads: Vec<Head>, view: &impl LocalView) -> Vec<Output> {
        // A peer's groups that we are not in are none of our business, and we do not
        // reveal that we noticed.
        if !view.has_group(&group) {
            return Vec::new();
        }
        let mut out = self.send_frontier(group, view);
        let mut local: HashMap<Id32, u64> = view
            .frontier(&group)
            .into_iter()
            .map(|h| (h.author, h.seq))
            .collect();
        let state = self.groups.entry(group).or_default();
        state.frontier_received = true;
        for (author, seq) in state.pending_local.drain() {
            let ours = local.entry(author).or_insert(0);
            *ours = (*ours).max(seq);
        }
        for head in &heads {
            let known = state.peer_has.entry(head.author).or_insert(0);
            *known = (*known).max(head.seq);
            let ours = local.get(&head.author).copied().unwrap_or(0);
            if head.seq > ours {
                state.awaiting.insert(head.author, head.seq);
            }
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
        let Some(state) = self.groups.get_mut(&group) else {
            return Vec::new();
        };
        for head in held {
            let known = state.peer_has.entry(head.author).or_insert(0);
            *known = (*known).max(head.seq);
        }
        if state.awaiting.is_empty() {
            return Vec::new();
        }
        let local: HashMap<Id32, u64> = view
            .frontier(&group)
            .into_iter()
            .map(|h| (h.author, h.seq))
            .collect();
        state
            .awaiting
            .retain(|author, target| local.get(author).copied().unwrap_or(0) < *target);
        if state.awaiting.is_empty() {
            vec![Output::StateChanged {
                group,
                state: SyncState::UpToDate,
            }]
        } else {
            Vec::new()
        }
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

    /// This node joined a group while the session was live: announce it, asking the peer
    /// for its frontier in return (the one it sent at hello was dropped, as we were not in the
    /// group then).
    pub fn on_group_joined(&mut self, group: Id32, view: &impl LocalView) -> Vec<Output> {
        if self.phase != Phase::Ready {
            return Vec::new();
        }
        let state = self.groups.entry(group).or_default();
        if state.sent_frontier {
            return Vec::new();
        }
        state.sent_frontier = true;
        vec![Output::Send(Message::Announce {
            group,
            heads: view.frontier(&group),
        })]
    }
}
