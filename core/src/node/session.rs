//! Drives [`SyncSession`]s over iroh connections: one bi-stream per peer, a reader that
//! rate-limits and feeds frames to the machine, a writer that drains the peer's [`Outbox`]
//! (reading entry batches from the store only when the link can take them), and a timer
//! that runs the machine's keepalive and failure detector.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use iroh::endpoint::{Connection, ReadExactError, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{EndpointAddr, EndpointId};
use tokio::sync::{Notify, mpsc};

use super::inner::{Inner, Lifecycle};
use super::{Event, SYNC_ALPN};
use crate::store;
use crate::sync::backoff::Backoff;
use crate::sync::engine::{self, FRAME_ENVELOPE_ROOM, RangeBatch};
use crate::sync::limits::PeerLimiter;
use crate::sync::outbox::{Outbox, Work};
use crate::sync::proto::{DEFAULT_PEER_MAX_FRAME, Output, SyncSession};
use crate::sync::verify::Prepared;
use crate::wire::WireError;
use crate::wire::entry::Id32;
use crate::wire::frame::{self, LENGTH_PREFIX, Message};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the session timers run.
const TICK: Duration = Duration::from_millis(500);
/// One rate-limit warning per peer per this long; every held-back frame is still counted.
const RATE_WARNING_EVERY_MS: u64 = 10_000;

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Outgoing,
    Incoming,
}

/// A session's machine and send queue, locked together so what the machine decides is
/// queued in the order it decided it.
#[derive(Debug)]
struct PeerState {
    machine: SyncSession,
    outbox: Outbox,
}

/// A live session as the rest of the node sees it.
#[derive(Debug, Clone)]
pub(super) struct SessionHandle {
    serial: u64,
    direction: Direction,
    state: Arc<Mutex<PeerState>>,
    wake: Arc<Notify>,
    conn: Connection,
}

/// The table of live sessions, at most one per peer.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<EndpointId, SessionHandle>>,
    serial: AtomicU64,
}

impl Sessions {
    pub(super) fn peers(&self) -> Vec<EndpointId> {
        let mut v: Vec<_> = self
            .map
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    pub(super) fn contains(&self, peer: &EndpointId) -> bool {
        self.map
            .lock()
            .map(|m| m.contains_key(peer))
            .unwrap_or(false)
    }

    /// Runs `f` on every live session's machine and queues what it sends. Only sends are
    /// expected from the callers (local entries, joined groups); anything else is logged.
    pub(super) fn each(&self, mut f: impl FnMut(&mut SyncSession) -> Vec<Output>) {
        let handles: Vec<SessionHandle> = match self.map.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return,
        };
        for handle in handles {
            for rest in handle.apply(|m| f(m)) {
                log::debug!("session output outside a session task: {rest:?}");
            }
        }
    }

    pub(super) fn close_all(&self, reason: &str) {
        if let Ok(m) = self.map.lock() {
            for handle in m.values() {
                handle.conn.close(0u32.into(), reason.as_bytes());
            }
        }
    }

    pub(super) fn clear(&self) {
        if let Ok(mut m) = self.map.lock() {
            m.clear();
        }
    }

    /// Registers a session, keeping one per peer: when both sides dial at once, both keep the
    /// connection dialed by the smaller node id, so they agree without talking.
    fn register(&self, me: EndpointId, peer: EndpointId, handle: SessionHandle) -> bool {
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        let preferred = if me < peer {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        if let Some(existing) = map.get(&peer) {
            if handle.direction != preferred || existing.direction == preferred {
                return false;
            }
            existing.conn.close(0u32.into(), b"duplicate connection");
        }
        map.insert(peer, handle);
        true
    }

    fn unregister(&self, peer: &EndpointId, serial: u64) -> bool {
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        if map.get(peer).is_some_and(|h| h.serial == serial) {
            map.remove(peer);
            return true;
        }
        false
    }
}

impl SessionHandle {
    /// Runs `f` on the machine, queues its sends in the outbox, wakes the writer, and
    /// returns the outputs that are the caller's to carry out.
    fn apply(&self, f: impl FnOnce(&mut SyncSession) -> Vec<Output>) -> Vec<Output> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        let outputs = f(&mut state.machine);
        let rest: Vec<Output> = outputs
            .into_iter()
            .filter_map(|o| state.outbox.push(o))
            .collect();
        drop(state);
        self.wake.notify_one();
        rest
    }

    /// Queues outputs (some possibly sends) and returns the rest.
    fn queue(&self, outputs: Vec<Output>) -> Vec<Output> {
        self.apply(|_| outputs)
    }
}

/// Accepts `covey/sync/1` connections.
#[derive(Debug, Clone)]
pub(super) struct SyncHandler {
    inner: Weak<Inner>,
}

impl SyncHandler {
    pub(super) fn new(inner: &Arc<Inner>) -> Self {
        Self {
            inner: Arc::downgrade(inner),
        }
    }
}

impl ProtocolHandler for SyncHandler {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        let Some(inner) = self.inner.upgrade() else {
            return Ok(());
        };
        if *inner.paused.borrow() || *inner.shutdown.borrow() {
            connection.close(1u32.into(), b"paused");
            return Ok(());
        }
        run(inner, connection, Direction::Incoming).await;
        Ok(())
    }
}

/// Dials `addr` and keeps a session with it up, redialing with backoff, until shutdown.
pub(super) async fn dial_loop(inner: Arc<Inner>, addr: EndpointAddr) {
    let peer = addr.id;
    let mut life = Lifecycle::new(&inner);
    let mut backoff = Backoff::default();
    while life.running().await {
        if inner.sessions.contains(&peer) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = life.shutdown.changed() => {}
            }
            continue;
        }
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            inner.endpoint.connect(addr.clone(), SYNC_ALPN),
        )
        .await;
        match attempt {
            Ok(Ok(conn)) => {
                backoff.reset();
                run(inner.clone(), conn, Direction::Outgoing).await;
                // Let a duplicate-connection tie-break settle before looking again.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Err(e)) => log::debug!("dial {} failed: {e}", peer.fmt_short()),
            Err(_) => log::debug!("dial {} timed out", peer.fmt_short()),
        }
        if inner.sessions.contains(&peer) {
            continue;
        }
        let delay = backoff.next_delay(rand::random());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = inner.redial.notified() => backoff.reset(),
            _ = life.shutdown.changed() => {}
        }
    }
}

/// Runs one session on `conn` until either side ends it.
async fn run(inner: Arc<Inner>, conn: Connection, direction: Direction) {
    let peer = conn.remote_id();
    let streams = match direction {
        Direction::Outgoing => conn.open_bi().await.map_err(|e| e.to_string()),
        // A stream is only visible once the peer writes to it; one that connects and never
        // does is held no longer than a peer that never says hello.
        Direction::Incoming => {
            let wait_ms = inner.config.timers.handshake_timeout_ms;
            match tokio::time::timeout(Duration::from_millis(wait_ms), conn.accept_bi()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => {
                    inner.warn(
                        "handshake-timeout",
                        format!(
                            "peer {}: opened no stream within {wait_ms} ms",
                            peer.fmt_short()
                        ),
                    );
                    conn.close(0u32.into(), b"handshake timeout");
                    return;
                }
            }
        }
    };
    let (send, recv) = match streams {
        Ok(s) => s,
        Err(e) => {
            log::debug!("session with {} did not start: {e}", peer.fmt_short());
            return;
        }
    };
    let serial = inner.sessions.serial.fetch_add(1, Ordering::Relaxed);
    let mut machine = SyncSession::new()
        .with_timers(inner.config.timers)
        .with_max_frame(inner.config.max_frame_bytes);
    machine.advance(inner.clock_ms());
    let handle = SessionHandle {
        serial,
        direction,
        state: Arc::new(Mutex::new(PeerState {
            machine,
            outbox: Outbox::new(),
        })),
        wake: Arc::new(Notify::new()),
        conn: conn.clone(),
    };
    if !inner.sessions.register(inner.id, peer, handle.clone()) {
        conn.close(0u32.into(), b"duplicate connection");
        return;
    }
    inner.emit(Event::PeerConnected { peer });
    log::debug!("session with {} up ({direction:?})", peer.fmt_short());
    // A sync peer is a likely DHT peer too, and its address is known now.
    let observer = inner.clone();
    tokio::spawn(async move { observer.dht.observe(peer).await });
    let writer = tokio::spawn(write_loop(inner.clone(), peer, send, handle.clone()));
    handle.apply(|m| m.start());
    let (ingest_tx, ingest_rx) = mpsc::channel(INGEST_QUEUE_FRAMES);
    let ingester = tokio::spawn(ingest_loop(inner.clone(), peer, handle.clone(), ingest_rx));
    tokio::select! {
        _ = read_loop(&inner, peer, recv, &handle, &ingest_tx) => {}
        _ = tick_loop(&inner, peer, &handle) => {}
    }
    // Batches already read are still stored (at most INGEST_QUEUE_FRAMES of them).
    drop(ingest_tx);
    let _ = ingester.await;
    handle.queue(vec![Output::Close {
        reason: "session over".into(),
    }]);
    // Give the writer a moment to flush a final refusal before the connection closes.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    if let Ok(state) = handle.state.lock() {
        inner
            .counters
            .dropped_frames
            .fetch_add(state.outbox.dropped(), Ordering::Relaxed);
    }
    if inner.sessions.unregister(&peer, serial) {
        inner.emit(Event::PeerDisconnected { peer });
    }
    conn.close(0u32.into(), b"bye");
    log::debug!("session with {} down", peer.fmt_short());
}

/// Runs the machine's timers: handshake timeout, keepalive pings and the failure detector.
/// Returns when the machine ends the session.
async fn tick_loop(inner: &Arc<Inner>, peer: EndpointId, handle: &SessionHandle) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = inner.clock_ms();
        let outputs = handle.apply(|m| m.on_tick(now));
        let mut closing = false;
        for output in outputs {
            if let Output::Warn { kind, message } = output {
                if kind == "peer-timeout" {
                    inner.counters.peer_timeouts.fetch_add(1, Ordering::Relaxed);
                    closing = true;
                }
                if kind == "handshake-timeout" {
                    closing = true;
                }
                inner.warn(kind, format!("peer {}: {message}", peer.fmt_short()));
            }
        }
        if closing {
            // The writer has the close queued; give it a moment, then stop reading.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
    }
}

enum ReadFailure {
    /// The stream or connection ended; not the peer's fault as far as we can tell.
    Ended,
    /// The peer broke the framing.
    Bad(WireError),
}

/// Reads one frame; returns it with its size on the wire.
async fn read_frame(
    recv: &mut RecvStream,
    max_frame: usize,
    body_timeout: Duration,
) -> Result<(Message, usize), ReadFailure> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) | Err(ReadExactError::ReadError(_)) => {
            return Err(ReadFailure::Ended);
        }
        Err(ReadExactError::FinishedEarly(_)) => {
            return Err(ReadFailure::Bad(WireError::Truncated(
                "frame length prefix",
            )));
        }
    }
    let len = frame::frame_len(prefix, max_frame).map_err(ReadFailure::Bad)?;
    let mut body = vec![0u8; len];
    match tokio::time::timeout(body_timeout, recv.read_exact(&mut body)).await {
        Ok(Ok(())) => {}
        Ok(Err(ReadExactError::FinishedEarly(_))) => {
            return Err(ReadFailure::Bad(WireError::Truncated("frame body")));
        }
        Ok(Err(ReadExactError::ReadError(_))) => return Err(ReadFailure::Ended),
        Err(_) => {
            return Err(ReadFailure::Bad(WireError::Truncated(
                "frame body never completed",
            )));
        }
    }
    let message = frame::decode(&body).map_err(ReadFailure::Bad)?;
    Ok((message, LENGTH_PREFIX + len))
}

/// Waits until the peer's rate limits allow a frame of `bytes`: while it is over budget we
/// stop reading, so QUIC flow control slows it down and nothing it sent is lost.
async fn throttle(
    inner: &Inner,
    peer: EndpointId,
    limiter: &mut PeerLimiter,
    bytes: usize,
    last_warning: &mut Option<u64>,
) {
    let mut counted = false;
    loop {
        let now = inner.clock_ms();
        let Err(wait_ms) = limiter.check(now, bytes) else {
            return;
        };
        if !counted {
            counted = true;
            inner.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            if last_warning.is_none_or(|t| now.saturating_sub(t) >= RATE_WARNING_EVERY_MS) {
                *last_warning = Some(now);
                inner.warn(
                    "rate-limited",
                    format!(
                        "peer {} is sending faster than its limit; reading from it is held back",
                        peer.fmt_short()
                    ),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(wait_ms.min(1000))).await;
    }
}

async fn read_loop(
    inner: &Arc<Inner>,
    peer: EndpointId,
    mut recv: RecvStream,
    handle: &SessionHandle,
    ingest: &IngestQueue,
) {
    let mut limiter = PeerLimiter::new(inner.config.rate_limits);
    let mut last_warning = None;
    let body_timeout = Duration::from_millis(inner.config.timers.frame_timeout_ms);
    loop {
        let read = read_frame(&mut recv, inner.config.max_frame_bytes, body_timeout);
        let (message, bytes) = match read.await {
            Ok((m, bytes)) => (retag(inner, &peer, m, Way::In), bytes),
            Err(ReadFailure::Ended) => return,
            Err(ReadFailure::Bad(e)) => {
                inner
                    .counters
                    .rejected_frames
                    .fetch_add(1, Ordering::Relaxed);
                inner.warn(
                    "rejected-frame",
                    format!("from {}: {e}; closing", peer.fmt_short()),
                );
                handle.queue(vec![
                    Output::Send(Message::Refuse {
                        code: frame::RefuseCode::ProtocolViolation as u16,
                        reason: e.to_string(),
                    }),
                    Output::Close {
                        reason: e.to_string(),
                    },
                ]);
                return;
            }
        };
        throttle(inner, peer, &mut limiter, bytes, &mut last_warning).await;
        let load = match &message {
            Message::Hello { .. } => inner
                .groups_read()
                .map(|g| g.keys().copied().collect())
                .unwrap_or_default(),
            Message::Frontier { group, .. }
            | Message::Announce { group, .. }
            | Message::Ack { group, .. } => vec![*group],
            _ => Vec::new(),
        };
        let view = match inner.snapshot(load).await {
            Ok(v) => v,
            Err(e) => {
                log::error!("session with {}: {e}", peer.fmt_short());
                return;
            }
        };
        let now = inner.clock_ms();
        let outputs = handle.apply(|m| {
            m.advance(now);
            m.on_message(message, &view)
        });
        if !handle_outputs(inner, peer, handle, outputs, Some(ingest)).await {
            return;
        }
    }
}

/// Batches waiting to be verified and stored, so the next frame is read and decoded while the
/// current one commits. Two frames at most: memory stays bounded and the peer is slowed by
/// QUIC flow control, not by our buffering.
type IngestQueue = mpsc::Sender<(Id32, Prepared)>;
const INGEST_QUEUE_FRAMES: usize = 2;
/// Most entries merged into one ingest transaction from queued frames.
const INGEST_MERGE_ENTRIES: usize = 4096;

/// Stores queued batches in order; ends the session if the store fails.
async fn ingest_loop(
    inner: Arc<Inner>,
    peer: EndpointId,
    handle: SessionHandle,
    mut queue: mpsc::Receiver<(Id32, Prepared)>,
) {
    while let Some((mut group, mut batch)) = queue.recv().await {
        // Batches already waiting for the same group go into the same transaction: one
        // commit and one frontier read for several frames while a catch-up streams in.
        while batch.len() < INGEST_MERGE_ENTRIES {
            match queue.try_recv() {
                Ok((next_group, more)) if next_group == group => batch.merge(more),
                Ok((next_group, more)) => {
                    if !store_and_follow(&inner, peer, &handle, group, batch).await {
                        return;
                    }
                    (group, batch) = (next_group, more);
                }
                Err(_) => break,
            }
        }
        if !store_and_follow(&inner, peer, &handle, group, batch).await {
            return;
        }
    }
}

/// Stores one prepared batch and carries out what the machine says next; false (and the
/// connection closed) when the store failed.
async fn store_and_follow(
    inner: &Arc<Inner>,
    peer: EndpointId,
    handle: &SessionHandle,
    group: Id32,
    batch: Prepared,
) -> bool {
    let ok = match store_batch(inner, peer, handle, group, batch).await {
        Some(more) => handle_outputs(inner, peer, handle, more, None).await,
        None => false,
    };
    if !ok {
        handle.conn.close(2u32.into(), b"cannot store entries");
    }
    ok
}

/// Verifies against the store and stores a prepared batch from `peer`, tells the machine,
/// and pushes what was new to every other session. Returns the machine's outputs, or `None`
/// when the store failed.
async fn store_batch(
    inner: &Arc<Inner>,
    peer: EndpointId,
    handle: &SessionHandle,
    group: Id32,
    batch: Prepared,
) -> Option<Vec<Output>> {
    match inner.ingest(peer, group, batch).await {
        Ok(done) => {
            let mut replayed = 0;
            let more = handle.apply(|m| {
                let (n, mut out) = m.count_replayed(group, &done.duplicates);
                replayed = n;
                out.extend(m.on_ingested(group, &done.held, &done.view));
                out
            });
            if replayed > 0 {
                inner
                    .counters
                    .replayed
                    .fetch_add(replayed, Ordering::Relaxed);
            }
            for head in done.stored {
                inner
                    .sessions
                    .each(|s| s.on_local_entry(group, head.author, head.seq));
            }
            Some(more)
        }
        Err(e) => {
            log::error!("storing entries from {}: {e}", peer.fmt_short());
            inner.warn("storage", format!("could not store entries: {e}"));
            None
        }
    }
}

/// Carries out the outputs that are not sends (those are queued already); false when the
/// session should end. Batches to store go to `ingest` when given, and are stored here
/// otherwise.
async fn handle_outputs(
    inner: &Arc<Inner>,
    peer: EndpointId,
    handle: &SessionHandle,
    outputs: Vec<Output>,
    ingest: Option<&IngestQueue>,
) -> bool {
    let mut queue: std::collections::VecDeque<Output> = outputs.into();
    let mut keep_going = true;
    while let Some(output) = queue.pop_front() {
        match output {
            Output::Send(_) | Output::SendRange { .. } => {
                queue.extend(handle.queue(vec![output]));
            }
            Output::Close { .. } => {
                keep_going = false;
                handle.queue(vec![output]);
            }
            Output::Ingest { group, entries } => {
                // Decoding and the payload checks run here, off the write transaction, while
                // the ingest task commits the previous batch.
                let prepared = match inner.prepare_batch(group, entries).await {
                    Ok(p) => p,
                    Err(e) => {
                        log::warn!("entries from {}: {e}", peer.fmt_short());
                        return false;
                    }
                };
                match ingest {
                    Some(q) => {
                        if q.send((group, prepared)).await.is_err() {
                            return false;
                        }
                    }
                    None => match store_batch(inner, peer, handle, group, prepared).await {
                        Some(more) => queue.extend(more),
                        None => return false,
                    },
                }
            }
            Output::PeerHeads { group, heads } => {
                let store = inner.store.clone();
                let peer_id = *peer.as_bytes();
                let saved = super::inner::blocking(move || {
                    store.write(|tx| store::record_peer_heads(tx, &group, &peer_id, &heads))
                })
                .await;
                if let Err(e) = saved {
                    // Receipts are advisory: losing one never loses data, so the session goes on.
                    log::warn!("recording receipts from {}: {e}", peer.fmt_short());
                }
            }
            Output::StateChanged { group, state } => inner.sync_state_changed(group, state),
            Output::Rejected {
                count,
                reason,
                detail,
            } => inner.report_rejected(peer, &[(reason, count)], &detail),
            Output::Warn { kind, message } => {
                match kind {
                    "incompatible-version" => {
                        inner
                            .counters
                            .incompatible_peers
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    "protocol-violation" => {
                        inner
                            .counters
                            .rejected_frames
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                inner.warn(kind, format!("peer {}: {message}", peer.fmt_short()));
            }
        }
    }
    keep_going
}

/// Which way a message crosses the wire, for [`retag`].
#[derive(Debug, Clone, Copy)]
enum Way {
    Out,
    In,
}

/// Renames the group a message is about between its id (inside this node) and its session
/// tag (on the wire, see `GroupKeys::session_tag`), so frames never carry a group id. An
/// incoming tag that matches none of our groups is left as it is: the session machine treats
/// it as a group this node is not in.
fn retag(inner: &Inner, peer: &EndpointId, message: Message, way: Way) -> Message {
    let map = |group: Id32| -> Id32 {
        let Ok(groups) = inner.groups_read() else {
            return group;
        };
        let (me, them) = (inner.id.as_bytes(), peer.as_bytes());
        match way {
            Way::Out => groups
                .get(&group)
                .map(|g| g.keys.session_tag(me, them))
                .unwrap_or(group),
            Way::In => groups
                .values()
                .find(|g| g.keys.session_tag(me, them) == group)
                .map(|g| g.keys.id.0)
                .unwrap_or(group),
        }
    };
    engine::retag(message, map)
}

async fn write_frame(
    inner: &Inner,
    peer: &EndpointId,
    send: &mut SendStream,
    message: Message,
) -> bool {
    match frame::encode(&retag(inner, peer, message, Way::Out)) {
        Ok(bytes) => send.write_all(&bytes).await.is_ok(),
        Err(e) => {
            log::error!("cannot encode frame: {e}");
            false
        }
    }
}

/// A batch read from the store, ahead of being needed.
type Batch = crate::error::Result<RangeBatch>;
struct Prefetch {
    group: Id32,
    author: Id32,
    from: u64,
    task: tokio::task::JoinHandle<Batch>,
}

/// Drains the peer's outbox onto the stream. Entry batches are read from the store one at a
/// time (the next one while the current one is written), so what this holds is at most two
/// batches whatever the backlog; when the peer reads slowly, `write_all` waits on QUIC flow
/// control and live pushes merge into the queued ranges meanwhile.
async fn write_loop(
    inner: Arc<Inner>,
    peer: EndpointId,
    mut send: SendStream,
    handle: SessionHandle,
) {
    // Frames fit both our limit and the one the peer announced.
    let frame_limit = || {
        let theirs = handle
            .state
            .lock()
            .map(|s| s.machine.peer_max_frame())
            .unwrap_or(DEFAULT_PEER_MAX_FRAME);
        inner.config.max_frame_bytes.min(theirs)
    };
    let read = |group: Id32, author: Id32, from: u64, up_to: u64| {
        let limit = frame_limit();
        let store = inner.store.clone();
        tokio::task::spawn_blocking(move || {
            store.read(|c| engine::read_range_batch(c, group, author, from, up_to, limit))
        })
    };
    let mut prefetch: Option<Prefetch> = None;
    loop {
        let work = match handle.state.lock() {
            Ok(mut state) => state.outbox.next_work(),
            Err(_) => return,
        };
        let Some(work) = work else {
            handle.wake.notified().await;
            continue;
        };
        match work {
            Work::Message(message) => {
                if !write_frame(&inner, &peer, &mut send, message).await {
                    return;
                }
            }
            Work::Range {
                group,
                author,
                after_seq,
                up_to_seq,
            } => {
                let task = match prefetch.take() {
                    Some(p) if p.group == group && p.author == author && p.from == after_seq => {
                        p.task
                    }
                    _ => read(group, author, after_seq, up_to_seq),
                };
                let batch = match task.await {
                    Ok(Ok(batch)) => batch,
                    Ok(Err(e)) => {
                        log::error!("reading entries to send: {e}");
                        return;
                    }
                    Err(e) => {
                        log::error!("reading entries to send: {e}");
                        return;
                    }
                };
                let Some(message) = batch.message else {
                    continue;
                };
                if let Message::Entries { entries, .. } = &message
                    && let [raw] = entries.as_slice()
                    && raw.len() + FRAME_ENVELOPE_ROOM > frame_limit()
                {
                    // One entry larger than the peer accepts: sending it would only get the
                    // session refused, again on every redial. The peer cannot take this log
                    // past here (its payload limit is below this entry's), so stop.
                    prefetch = None;
                    inner.warn(
                        "entry-too-large-for-peer",
                        format!(
                            "an entry of {} bytes exceeds the frame limit peer {} announced; that log is not sent past it",
                            raw.len(),
                            peer.fmt_short()
                        ),
                    );
                    continue;
                }
                if let Some((last, up_to)) = batch.rest {
                    if let Ok(mut state) = handle.state.lock() {
                        state.outbox.requeue_range(group, author, last, up_to);
                    }
                    prefetch = Some(Prefetch {
                        group,
                        author,
                        from: last,
                        task: read(group, author, last, up_to),
                    });
                }
                if !write_frame(&inner, &peer, &mut send, message).await {
                    return;
                }
            }
            Work::Close => {
                let _ = send.finish();
                let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
                handle.conn.close(0u32.into(), b"session closed");
                return;
            }
        }
    }
}
