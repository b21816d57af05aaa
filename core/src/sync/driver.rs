//! The one driver core of a sync session, sans-IO: everything a transport does with a
//! session's machine except moving bytes and touching the disk.
//!
//! A [`SessionDriver`] owns the per-peer [`SyncSession`], its [`Outbox`], its
//! [`PeerLimiter`] and the pair's session tags, and decides the output policy: which frames
//! to write and in what order, when to read the next range batch from the store and what to
//! do with it, what to store and what follows a store (replay counting, acks, receipts, the
//! fan-out to the node's other sessions), which counters move, which warnings are raised and
//! how often, and when the session's timers next fire. It never touches a socket, a clock or
//! the disk: it asks for those through [`ReadStep`], [`Transmit`] and [`Action`], the way
//! `quinn-proto` asks `quinn` to send datagrams.
//!
//! Two transports carry out what it asks: the iroh driver (`node::sync_driver`, QUIC streams
//! and the blocking pool) and the simulator (`covey-sim`, virtual links and a virtual clock).
//! They keep only their sockets or links; a policy lives here once, so the simulator proves
//! the code that ships.

use std::collections::{BTreeMap, BTreeSet};

use crate::group::{PairKeys, ProofRole, SessionTag};
use crate::wire::WireError;
use crate::wire::entry::Id32;
use crate::wire::frame::{self, Head, Message, RefuseCode};

use super::WarnKind;
use super::engine::{FRAME_ENVELOPE_ROOM, Ingested, RangeBatch, Snapshot, rejection_summary};
use super::limits::{PeerLimiter, RateLimits};
use super::outbox::{Outbox, Work};
use super::session::{
    FrontiersNeeded, MAX_PROOFS, Output, SyncSession, SyncState, Timers, padded_proofs,
};

/// The driver's timings: one definition for both transports.
pub mod timing {
    /// How long a dial may take before it counts as failed, ms.
    pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
    /// How often a dial loop looks again while a session with its peer is up, ms.
    pub const DIAL_RECHECK_MS: u64 = 500;
    /// How long a dial loop lets a duplicate-connection tie-break settle after its session
    /// ended, before it looks again, ms.
    pub const AFTER_RUN_PAUSE_MS: u64 = 50;
    /// How long the writer is given to flush a final refusal after a session ends, ms.
    pub const WRITER_GRACE_MS: u64 = 2_000;
    /// How long the writer waits for the peer to acknowledge a finished stream before the
    /// connection is closed, ms.
    pub const FINISH_WAIT_MS: u64 = 1_000;
    /// How long reading goes on after the session's timers closed it (a handshake or idle
    /// timeout), so the queued close is written first, ms.
    pub const TIMER_CLOSE_LINGER_MS: u64 = 200;
    /// One rate-limit warning per peer per this long; every held-back frame is still
    /// counted, ms.
    pub const RATE_WARNING_EVERY_MS: u64 = 10_000;
    /// Longest single wait for a peer's rate budget before it is checked again, ms.
    pub const RATE_WAIT_MAX_MS: u64 = 1_000;
}

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We dialed.
    Outgoing,
    /// The peer dialed.
    Incoming,
}

/// The one-session-per-peer rule: when both sides dial at once, both keep the connection
/// dialed by the smaller node id, so they agree without talking. Given a new session's
/// direction and the direction of the one already registered with that peer (if any),
/// whether the new one is kept (replacing the old one).
pub fn keeps_new_session(
    me: &Id32,
    peer: &Id32,
    new: Direction,
    existing: Option<Direction>,
) -> bool {
    let preferred = if me < peer {
        Direction::Outgoing
    } else {
        Direction::Incoming
    };
    match existing {
        None => true,
        Some(existing) => new == preferred && existing != preferred,
    }
}

/// What ties a session to its connection: which side dialed, and the 32 bytes both ends
/// export from the connection's TLS session (RFC 5705, label [`SESSION_BINDING_LABEL`], no
/// context). Membership proofs are keyed hashes over it, so a proof is worth nothing in any
/// other session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionBinding {
    /// Which side opened the connection.
    pub direction: Direction,
    /// The exported keying material.
    pub binding: [u8; 32],
    /// A secret of this side alone, fresh per session, from which the random-looking padding
    /// of its proofs is drawn (a transport draws it from its CSPRNG; a simulator from its seed,
    /// so a run stays a function of the seed).
    pub padding_key: [u8; 32],
}

/// The RFC 5705 exporter label of a session's binding.
pub const SESSION_BINDING_LABEL: &[u8] = b"covey/v2/session-binding";

/// What a node configures of its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// The largest frame this node accepts (announced to peers as `max-frame`).
    pub max_frame_bytes: usize,
    /// How fast one peer may send to us.
    pub rate_limits: RateLimits,
    /// Session timers.
    pub timers: Timers,
}

/// A counter of `SyncCounters` that moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Entries received from the peer and stored.
    Received,
    /// Entries received that were already held.
    Duplicates,
    /// Entries refused.
    RejectedEntries,
    /// Frames refused.
    RejectedFrames,
    /// Sessions refused for an incompatible protocol version.
    IncompatiblePeers,
    /// Entries the peer re-sent after being told we hold them.
    Replayed,
    /// Queued sends dropped.
    DroppedFrames,
    /// Frames held back by the peer's rate limit.
    RateLimited,
    /// Sessions closed by the failure detector.
    PeerTimeouts,
}

/// What the driver asks its transport to do, besides reading and writing frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Verify and store entries the peer sent for `group` (`engine::ingest_batch`, or
    /// `verify::prepare` then `engine::ingest_prepared`), then report with
    /// [`SessionDriver::on_ingested`] or [`SessionDriver::on_ingest_failed`].
    Ingest {
        /// The group (an id, renamed from the wire's tag).
        group: Id32,
        /// Encoded entries.
        entries: Vec<Vec<u8>>,
    },
    /// Record these heads as the peer's delivery receipts (`store::record_peer_heads`).
    /// Advisory: a failure loses no data, and the session goes on.
    RecordReceipts {
        /// The group.
        group: Id32,
        /// The peer's heads.
        heads: Vec<Head>,
    },
    /// Entries were newly stored: call [`SessionDriver::on_local_entry`] on every session of
    /// this node (this one included) for each head.
    FanOut {
        /// The group.
        group: Id32,
        /// Per author, the highest seq newly stored.
        heads: Vec<Head>,
    },
    /// A group's sync state with this peer changed: tell the app.
    StateChanged {
        /// The group.
        group: Id32,
        /// Its new state.
        state: SyncState,
    },
    /// Raise a `Warning` event (the message names the peer already).
    Warn {
        /// What it is about.
        kind: WarnKind,
        /// Human detail.
        message: String,
    },
    /// Add to a counter.
    Count {
        /// Which.
        counter: Counter,
        /// By how much.
        by: u64,
    },
    /// Stop reading from the peer `linger_ms` from now; the writer finishes what is queued,
    /// ending with the stream's finish ([`Transmit::Finish`]).
    Close {
        /// How long to go on reading first.
        linger_ms: u64,
    },
}

/// What the reader should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadStep {
    /// Nothing is pending: read the next frame and hand it to [`SessionDriver::on_frame`].
    Next,
    /// A frame is held back by the peer's rate limit: read nothing until `until` (driver
    /// ms), then call [`SessionDriver::poll_read`] again. While we do not read, the transport's
    /// flow control slows the peer down; nothing it sent is lost.
    WaitUntil(u64),
    /// Load these groups' frontiers (`engine::snapshot`, of the groups this node is in) and
    /// hand the view to [`SessionDriver::on_view`].
    Load(FrontiersNeeded),
    /// The session is closing: read no more.
    Stop,
}

/// One bounded batch of a log to read from the store for the writer
/// (`engine::read_range_batch` with these arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeRead {
    /// The group.
    pub group: Id32,
    /// Whose log.
    pub author: Id32,
    /// Last seq the peer holds.
    pub after_seq: u64,
    /// Last seq to send.
    pub up_to_seq: u64,
    /// The frame size the batch must fit: ours and the peer's limit, whichever is lower.
    pub max_frame: usize,
}

/// What the writer should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Write this encoded frame (groups already renamed to session tags).
    Frame(Vec<u8>),
    /// Read this batch from the store and hand it to [`SessionDriver::on_range_batch`].
    Read(RangeRead),
    /// Finish the stream (wait up to [`timing::FINISH_WAIT_MS`] for the peer to take it)
    /// and close the connection.
    Finish,
    /// A frame could not be encoded: stop writing and close the connection.
    Abort(String),
}

/// What became of a range batch read for the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSend {
    /// The frame to write, if the batch made one.
    pub frame: Option<Vec<u8>>,
    /// The rest of the range, which the writer will be asked for next unless other work
    /// takes its turn: a transport may read it ahead while it writes this frame.
    pub next: Option<RangeRead>,
}

/// A frame read but not yet handed to the machine.
#[derive(Debug)]
struct Held {
    message: Message,
    bytes: usize,
    counted: bool,
}

/// One peer's sync session as every transport drives it. See the module docs.
#[derive(Debug)]
pub struct SessionDriver {
    machine: SyncSession,
    outbox: Outbox,
    limiter: PeerLimiter,
    max_frame_bytes: usize,
    /// Names the peer in warnings (`peer <label>: ...`).
    label: String,
    /// Group id -> its tag and proof key with this peer, and tag -> group id.
    pairs: BTreeMap<Id32, PairKeys>,
    groups_by_tag: BTreeMap<SessionTag, Id32>,
    /// Which side we are, and what this session's connection exports to bind proofs to it.
    role: ProofRole,
    binding: [u8; 32],
    padding_key: crate::crypto::Secret32,
    padded: u64,
    /// The proof the peer gives for each of our groups this session, and back.
    expected_proofs: BTreeMap<Id32, Id32>,
    /// Proofs the peer sent that prove none of our groups (yet: one may, once we join).
    unmatched_proofs: BTreeSet<Id32>,
    /// Proofs received this session, padding included ([`MAX_PROOFS`]).
    proofs_received: usize,
    held: Option<Held>,
    last_rate_warning: Option<u64>,
    closing: bool,
    actions: Vec<Action>,
}

impl SessionDriver {
    /// A session with a peer, started at `now_ms` (the transport's monotonic clock), knowing
    /// the pair keys of the groups this node is in (`(group id, keys)`), on a connection
    /// `direction` dialed whose TLS session exports `binding` (both ends export the same 32
    /// bytes; see PROTOCOL.md, "Membership proofs"); `label` names the peer in warnings.
    pub fn new(
        config: &DriverConfig,
        pairs: impl IntoIterator<Item = (Id32, PairKeys)>,
        session: SessionBinding,
        label: String,
        now_ms: u64,
    ) -> Self {
        Self::with_machine(
            config,
            SyncSession::new()
                .with_timers(config.timers)
                .with_max_frame(config.max_frame_bytes),
            pairs,
            session,
            label,
            now_ms,
        )
    }

    /// Like [`SessionDriver::new`] around a machine set up otherwise (other protocol
    /// versions, for tests of negotiation).
    pub fn with_machine(
        config: &DriverConfig,
        machine: SyncSession,
        pairs: impl IntoIterator<Item = (Id32, PairKeys)>,
        session: SessionBinding,
        label: String,
        now_ms: u64,
    ) -> Self {
        let mut machine = machine.dialing(session.direction == Direction::Outgoing);
        machine.advance(now_ms);
        let mut driver = Self {
            machine,
            outbox: Outbox::new(),
            limiter: PeerLimiter::new(config.rate_limits),
            max_frame_bytes: config.max_frame_bytes,
            label,
            pairs: BTreeMap::new(),
            groups_by_tag: BTreeMap::new(),
            role: match session.direction {
                Direction::Outgoing => ProofRole::Dialer,
                Direction::Incoming => ProofRole::Acceptor,
            },
            binding: session.binding,
            padding_key: crate::crypto::Secret32::from_bytes(session.padding_key),
            padded: 0,
            expected_proofs: BTreeMap::new(),
            unmatched_proofs: BTreeSet::new(),
            proofs_received: 0,
            held: None,
            last_rate_warning: None,
            closing: false,
            actions: Vec::new(),
        };
        for (group, keys) in pairs {
            driver.add_group(group, keys);
        }
        driver
    }

    /// Learns one of our groups: its tag, and the proof the peer gives of it.
    fn add_group(&mut self, group: Id32, keys: PairKeys) {
        let peer_role = match self.role {
            ProofRole::Dialer => ProofRole::Acceptor,
            ProofRole::Acceptor => ProofRole::Dialer,
        };
        self.expected_proofs
            .insert(keys.proof(peer_role, &self.binding), group);
        self.groups_by_tag.insert(keys.tag, group);
        self.pairs.insert(group, keys);
    }

    /// The session's first output: our hello (and our proofs, when we dialed).
    pub fn start(&mut self) {
        let groups: Vec<Id32> = self.pairs.keys().copied().collect();
        let outputs = self.machine.start(groups);
        self.carry(outputs, 0);
    }

    /// The actions queued by the calls so far, in order. Call it after every call into the
    /// driver, under the same lock, and carry them out.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// The machine (for what a transport reports: RTT, negotiated version, features).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn machine(&self) -> &SyncSession {
        &self.machine
    }

    /// Whether the session is ending: nothing more is read.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Items waiting in the send queue.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Sends dropped from the queue so far (count them in `dropped_frames` when the session
    /// ends).
    pub fn dropped_sends(&self) -> u64 {
        self.outbox.dropped()
    }

    /// The largest frame sent to this peer: ours and its limit, whichever is lower.
    pub fn frame_limit(&self) -> usize {
        self.max_frame_bytes.min(self.machine.peer_max_frame())
    }

    // -----------------------------------------------------------------------------------------
    // Reading
    // -----------------------------------------------------------------------------------------

    /// One frame arrived (`frame` is its decoded body, or why it was refused before decoding;
    /// `wire_bytes` its size on the wire, prefix included). Returns what the reader does next.
    pub fn on_frame(
        &mut self,
        now_ms: u64,
        frame: Result<Message, WireError>,
        wire_bytes: usize,
    ) -> ReadStep {
        if self.closing {
            return ReadStep::Stop;
        }
        match frame {
            Ok(Message::Prove { proofs }) => {
                // An empty `Prove` counts as one: no frame is free of the bound.
                self.proofs_received = self.proofs_received.saturating_add(proofs.len().max(1));
                if self.proofs_received > MAX_PROOFS {
                    self.violation(format!("more than {MAX_PROOFS} membership proofs"));
                    return ReadStep::Stop;
                }
                let mut proved = Vec::new();
                for proof in proofs {
                    match self.expected_proofs.get(&proof) {
                        Some(group) => proved.push(*group),
                        None => {
                            self.unmatched_proofs.insert(proof);
                        }
                    }
                }
                self.held = Some(Held {
                    message: Message::Prove { proofs: proved },
                    bytes: wire_bytes,
                    counted: false,
                });
                self.poll_read(now_ms)
            }
            Ok(message) => {
                let message = message.map_group(|tag| {
                    // A tag that names none of our groups is left as it is: the machine
                    // treats it as a group this node is not in.
                    self.groups_by_tag
                        .get(&SessionTag(tag))
                        .copied()
                        .unwrap_or(tag)
                });
                self.held = Some(Held {
                    message,
                    bytes: wire_bytes,
                    counted: false,
                });
                self.poll_read(now_ms)
            }
            Err(e) => {
                self.count(Counter::RejectedFrames, 1);
                self.warn(
                    WarnKind::RejectedFrame,
                    format!("from {}: {e}; closing", self.label),
                );
                let reason = e.to_string();
                self.carry(
                    vec![
                        Output::Send(Message::Refuse {
                            code: RefuseCode::ProtocolViolation as u16,
                            reason: reason.clone(),
                        }),
                        Output::Close { reason },
                    ],
                    0,
                );
                ReadStep::Stop
            }
        }
    }

    /// Ends the session for a protocol violation the driver itself caught.
    fn violation(&mut self, reason: String) {
        self.carry(
            vec![
                Output::Send(Message::Refuse {
                    code: RefuseCode::ProtocolViolation as u16,
                    reason: reason.clone(),
                }),
                Output::Warn {
                    kind: WarnKind::ProtocolViolation,
                    message: reason.clone(),
                },
                Output::Close { reason },
            ],
            0,
        );
    }

    /// What the reader does next: wait out the peer's rate limit for the frame it holds,
    /// load what the machine needs for it, or read the next one.
    pub fn poll_read(&mut self, now_ms: u64) -> ReadStep {
        if self.closing {
            return ReadStep::Stop;
        }
        let Some(held) = self.held.as_mut() else {
            return ReadStep::Next;
        };
        if let Err(wait_ms) = self.limiter.check(now_ms, held.bytes) {
            if !held.counted {
                held.counted = true;
                self.count(Counter::RateLimited, 1);
                let due = self
                    .last_rate_warning
                    .is_none_or(|t| now_ms.saturating_sub(t) >= timing::RATE_WARNING_EVERY_MS);
                if due {
                    self.last_rate_warning = Some(now_ms);
                    self.warn(
                        WarnKind::RateLimited,
                        format!(
                            "peer {} is sending faster than its limit; reading from it is held back",
                            self.label
                        ),
                    );
                }
            }
            return ReadStep::WaitUntil(now_ms + wait_ms.min(timing::RATE_WAIT_MAX_MS));
        }
        ReadStep::Load(SyncSession::frontiers_needed(&held.message))
    }

    /// The view asked for by [`ReadStep::Load`]: hands the held frame to the machine. Then
    /// read the next frame, unless the session is closing.
    pub fn on_view(&mut self, now_ms: u64, view: &Snapshot) -> ReadStep {
        let Some(held) = self.held.take() else {
            return self.poll_read(now_ms);
        };
        self.machine.advance(now_ms);
        let outputs = self.machine.on_message(held.message, view);
        self.carry(outputs, 0);
        if self.closing {
            ReadStep::Stop
        } else {
            ReadStep::Next
        }
    }

    /// The frame's size on the wire of the frame held for the machine, if any (a transport
    /// that charges processing time per byte).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn held_bytes(&self) -> Option<usize> {
        self.held.as_ref().map(|h| h.bytes)
    }

    // -----------------------------------------------------------------------------------------
    // Storing
    // -----------------------------------------------------------------------------------------

    /// A batch asked for by [`Action::Ingest`] was verified and stored: counts it, tells the
    /// machine (replays, acks, progress), and asks for the fan-out of what was new.
    pub fn on_ingested(&mut self, now_ms: u64, group: Id32, done: &Ingested) {
        self.machine.advance(now_ms);
        let outcome = &done.outcome;
        self.count(Counter::Received, outcome.stored.len() as u64);
        self.count(Counter::Duplicates, outcome.duplicates);
        if let Some(first) = outcome.rejected.first() {
            let reasons = rejection_summary(outcome);
            self.report_rejected(&reasons, &first.detail);
        }
        let (replayed, mut outputs) = self.machine.count_replayed(group, &done.duplicates);
        self.count(Counter::Replayed, replayed);
        // The machine reads only this group's frontier after a store.
        let view = Snapshot {
            groups: BTreeSet::from([group]),
            frontiers: BTreeMap::from([(group, done.frontier.clone())]),
        };
        outputs.extend(self.machine.on_ingested(group, &done.held, &view));
        self.carry(outputs, 0);
        if !done.stored.is_empty() {
            self.actions.push(Action::FanOut {
                group,
                heads: done.stored.clone(),
            });
        }
    }

    /// The session ended holding `count` entries back for a later signature
    /// ([`super::verify::Unverified`]): they are dropped, and counted and reported as
    /// rejected (`unverified`), never dropped silently. A peer that has them valid sends them
    /// again, with what vouches for them, in a later session.
    pub fn on_unverified_dropped(&mut self, count: usize) {
        if count > 0 {
            self.report_rejected(
                &[(super::verify::UNVERIFIED, count)],
                "entries whose own signature fails, still waiting for a later one to vouch for them when the session ended",
            );
        }
    }

    /// A batch could not be stored (the store failed): the session ends, and the peer will
    /// send it again on the next one.
    pub fn on_ingest_failed(&mut self, error: &str) {
        self.warn(
            WarnKind::Storage,
            format!("could not store entries: {error}"),
        );
        self.carry(
            vec![Output::Close {
                reason: "cannot store entries".into(),
            }],
            0,
        );
    }

    // -----------------------------------------------------------------------------------------
    // Local events (from this node, or fanned out from another session)
    // -----------------------------------------------------------------------------------------

    /// An entry was stored locally (published here or received from any peer).
    pub fn on_local_entry(&mut self, group: Id32, author: Id32, seq: u64) {
        let outputs = self.machine.on_local_entry(group, author, seq);
        self.carry(outputs, 0);
    }

    /// This node joined `group` (whose keys with this peer are `keys`) while the session was
    /// live: prove it and announce it, as far as the peer has proved it too (a proof it sent
    /// earlier in the session may prove the new group).
    pub fn on_group_joined(&mut self, group: Id32, keys: PairKeys, view: &Snapshot) {
        self.add_group(group, keys);
        let peer_proved = self
            .expected_proofs
            .iter()
            .any(|(proof, g)| *g == group && self.unmatched_proofs.remove(proof));
        let outputs = self.machine.on_group_joined(group, peer_proved, view);
        self.carry(outputs, 0);
    }

    /// The session should end now (the node shuts down, the transport failed): the writer
    /// finishes what is queued.
    pub fn close(&mut self, reason: &str) {
        self.carry(
            vec![Output::Close {
                reason: reason.to_owned(),
            }],
            0,
        );
    }

    // -----------------------------------------------------------------------------------------
    // Timers
    // -----------------------------------------------------------------------------------------

    /// When [`SessionDriver::handle_timeout`] is next due (driver ms); `None` while nothing
    /// is timed.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.closing {
            return None;
        }
        self.machine.next_deadline()
    }

    /// The deadline passed: handshake timeout, keepalive ping, failure detector.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let outputs = self.machine.on_tick(now_ms);
        self.carry(outputs, timing::TIMER_CLOSE_LINGER_MS);
    }

    // -----------------------------------------------------------------------------------------
    // Writing
    // -----------------------------------------------------------------------------------------

    /// The writer's next step, when the link can take more; `None` when nothing is queued
    /// (wait to be woken).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let work = self.outbox.next_work()?;
        Some(match work {
            Work::Message(message) => self.encode(message),
            Work::Range {
                group,
                author,
                after_seq,
                up_to_seq,
            } => Transmit::Read(RangeRead {
                group,
                author,
                after_seq,
                up_to_seq,
                max_frame: self.frame_limit(),
            }),
            Work::Close => Transmit::Finish,
        })
    }

    /// The batch asked for by [`Transmit::Read`]: the rest of the range goes back in the
    /// queue, and the batch becomes a frame, unless it is one entry larger than the peer
    /// accepts (sending it would only get the session refused, again on every redial; the
    /// peer cannot take that log past there, so it is not sent past there).
    pub fn on_range_batch(&mut self, read: RangeRead, batch: RangeBatch) -> RangeSend {
        let Some(message) = batch.message else {
            return RangeSend {
                frame: None,
                next: None,
            };
        };
        if let Message::Entries { entries, .. } = &message
            && let [raw] = entries.as_slice()
            && raw.len() + FRAME_ENVELOPE_ROOM > self.frame_limit()
        {
            self.warn(
                WarnKind::EntryTooLargeForPeer,
                format!(
                    "an entry of {} bytes exceeds the frame limit peer {} announced; that log is not sent past it",
                    raw.len(),
                    self.label
                ),
            );
            return RangeSend {
                frame: None,
                next: None,
            };
        }
        let next = batch.rest.map(|(after_seq, up_to_seq)| {
            self.outbox
                .requeue_range(read.group, read.author, after_seq, up_to_seq);
            RangeRead {
                after_seq,
                up_to_seq,
                max_frame: self.frame_limit(),
                ..read
            }
        });
        match self.encode(message) {
            Transmit::Frame(bytes) => RangeSend {
                frame: Some(bytes),
                next,
            },
            _ => RangeSend {
                frame: None,
                next: None,
            },
        }
    }

    fn encode(&mut self, message: Message) -> Transmit {
        let message = match message {
            Message::Prove { proofs: groups } => Message::Prove {
                proofs: self.proofs_of(&groups),
            },
            other => other.map_group(|group| {
                self.pairs
                    .get(&group)
                    .map(|keys| keys.tag.0)
                    .unwrap_or(group)
            }),
        };
        match frame::encode(&message) {
            Ok(bytes) => Transmit::Frame(bytes),
            Err(e) => {
                log::error!("cannot encode a frame: {e}");
                Transmit::Abort(format!("cannot encode a frame: {e}"))
            }
        }
    }

    /// Our proofs of `groups` for this session, padded with random values to
    /// [`padded_proofs`] and sorted, so neither their number nor their order tells a peer
    /// more than the order of magnitude of our groups.
    fn proofs_of(&mut self, groups: &[Id32]) -> Vec<Id32> {
        let mut proofs: Vec<Id32> = groups
            .iter()
            .filter_map(|g| self.pairs.get(g))
            .map(|keys| keys.proof(self.role, &self.binding))
            .collect();
        let padded = padded_proofs(proofs.len());
        while proofs.len() < padded {
            // A keyed hash under a key only we hold looks like a proof to the peer.
            self.padded += 1;
            let filler = blake3::keyed_hash(self.padding_key.expose(), &self.padded.to_be_bytes());
            proofs.push(*filler.as_bytes());
        }
        proofs.sort_unstable();
        proofs
    }

    // -----------------------------------------------------------------------------------------
    // The output policy
    // -----------------------------------------------------------------------------------------

    /// Carries out the machine's outputs: sends go to the queue, the rest become actions,
    /// counters and warnings. A close stops reading after `close_linger_ms`.
    fn carry(&mut self, outputs: Vec<Output>, close_linger_ms: u64) {
        for output in outputs {
            let Some(output) = self.outbox.push(match output {
                Output::Close { reason } => {
                    if !self.closing {
                        self.closing = true;
                        self.held = None;
                        self.actions.push(Action::Close {
                            linger_ms: close_linger_ms,
                        });
                    }
                    Output::Close { reason }
                }
                other => other,
            }) else {
                continue;
            };
            match output {
                Output::Ingest { group, entries } => {
                    self.actions.push(Action::Ingest { group, entries })
                }
                Output::PeerHeads { group, heads } => {
                    self.actions.push(Action::RecordReceipts { group, heads })
                }
                Output::StateChanged { group, state } => {
                    self.actions.push(Action::StateChanged { group, state })
                }
                Output::Rejected {
                    count,
                    reason,
                    detail,
                } => self.report_rejected(&[(reason, count)], &detail),
                Output::Warn { kind, message } => {
                    match kind {
                        WarnKind::IncompatibleVersion => self.count(Counter::IncompatiblePeers, 1),
                        WarnKind::ProtocolViolation => self.count(Counter::RejectedFrames, 1),
                        WarnKind::PeerTimeout => self.count(Counter::PeerTimeouts, 1),
                        _ => {}
                    }
                    self.warn(kind, format!("peer {}: {message}", self.label));
                }
                // The outbox takes these.
                Output::Send(_) | Output::SendRange { .. } | Output::Close { .. } => {}
            }
        }
    }

    /// Counts refused entries and reports them as one `rejected-entry` warning per batch (not
    /// per entry: a frame of tiny bad entries must not become a flood of events and logs).
    fn report_rejected(&mut self, reasons: &[(&str, usize)], first_detail: &str) {
        let total: usize = reasons.iter().map(|(_, n)| n).sum();
        self.count(Counter::RejectedEntries, total as u64);
        let summary: Vec<String> = reasons.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        self.warn(
            WarnKind::RejectedEntry,
            format!(
                "from {}: rejected {total} entries ({}); first: {first_detail}",
                self.label,
                summary.join(", ")
            ),
        );
    }

    fn count(&mut self, counter: Counter, by: u64) {
        if by > 0 {
            self.actions.push(Action::Count { counter, by });
        }
    }

    fn warn(&mut self, kind: WarnKind, message: String) {
        self.actions.push(Action::Warn { kind, message });
    }
}
