//! The iroh transport of sync sessions: one bi-stream per peer, carried out for the sans-IO
//! driver core ([`SessionDriver`]). This file holds only what touches iroh, tokio and the
//! blocking pool: a reader that reads frames and the views the driver asks for, an ingester
//! that verifies and stores batches off the reader (two frames at most, merged into one
//! transaction), a writer that writes what the driver hands it (reading the next range batch
//! ahead while it writes), a timer that sleeps until the driver's next deadline, and the dial
//! loop. Every policy (what to send, counters, warnings, timings) is the driver core's.

use std::collections::{HashMap, VecDeque};
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
use crate::sync::WarnKind;
use crate::sync::backoff::Backoff;
use crate::sync::driver::{
    Action, Direction, DriverConfig, RangeRead, ReadStep, SESSION_BINDING_LABEL, SessionBinding,
    SessionDriver, Transmit, keeps_new_session, timing,
};
use crate::sync::engine::{self, RangeBatch};
use crate::sync::verify::{Prepared, Unverified};
use crate::wire::WireError;
use crate::wire::entry::Id32;
use crate::wire::frame::{self, LENGTH_PREFIX, Message};

/// A live session as the rest of the node sees it.
#[derive(Debug, Clone)]
pub(super) struct SessionHandle {
    serial: u64,
    direction: Direction,
    driver: Arc<Mutex<SessionDriver>>,
    /// Wakes the writer (something was queued) and the timer (its deadline came earlier).
    wake: Arc<Notify>,
    wake_timer: Arc<Notify>,
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

    /// Runs `f` on every live session's driver (local entries, joined groups). Those calls
    /// only queue sends; anything else they ask for is logged.
    pub(super) fn each(&self, mut f: impl FnMut(&mut SessionDriver, &EndpointId)) {
        let handles: Vec<(EndpointId, SessionHandle)> = match self.map.lock() {
            Ok(m) => m.iter().map(|(p, h)| (*p, h.clone())).collect(),
            Err(_) => return,
        };
        for (peer, handle) in handles {
            let actions = handle.call(|d| f(d, &peer));
            if !actions.is_empty() {
                log::debug!("session actions outside a session task: {actions:?}");
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

    /// Registers a session, keeping one per peer (the driver core's rule).
    fn register(&self, me: EndpointId, peer: EndpointId, handle: SessionHandle) -> bool {
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        let existing = map.get(&peer);
        if !keeps_new_session(
            me.as_bytes(),
            peer.as_bytes(),
            handle.direction,
            existing.map(|h| h.direction),
        ) {
            return false;
        }
        if let Some(existing) = existing {
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
    /// Runs `f` on the driver, wakes the writer and the timer, and returns the actions the
    /// call queued, which are the caller's to carry out.
    fn call<R>(&self, f: impl FnOnce(&mut SessionDriver) -> R) -> Vec<Action> {
        self.call_with(f).1
    }

    /// Like [`SessionHandle::call`], also returning what `f` returned.
    fn call_with<R>(&self, f: impl FnOnce(&mut SessionDriver) -> R) -> (Option<R>, Vec<Action>) {
        let Ok(mut driver) = self.driver.lock() else {
            return (None, Vec::new());
        };
        let deadline = driver.poll_timeout();
        let out = f(&mut driver);
        let actions = driver.take_actions();
        let next = driver.poll_timeout();
        drop(driver);
        self.wake.notify_one();
        // The timer sleeps until the deadline it last saw and looks again then: it needs
        // waking only when the deadline came earlier (most calls move it later, or not at all).
        if next.is_some_and(|at| deadline.is_none_or(|was| at < was)) {
            self.wake_timer.notify_one();
        }
        (Some(out), actions)
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

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Dials `addr` and keeps a session with it up, redialing with backoff, until shutdown.
pub(super) async fn dial_loop(inner: Arc<Inner>, addr: EndpointAddr) {
    let peer = addr.id;
    let mut life = Lifecycle::new(&inner);
    let mut backoff = Backoff::default();
    while life.running().await {
        if inner.sessions.contains(&peer) {
            tokio::select! {
                _ = tokio::time::sleep(ms(timing::DIAL_RECHECK_MS)) => {}
                _ = life.shutdown.changed() => {}
            }
            continue;
        }
        let attempt = tokio::time::timeout(
            ms(timing::CONNECT_TIMEOUT_MS),
            inner.endpoint.connect(addr.clone(), SYNC_ALPN),
        )
        .await;
        match attempt {
            Ok(Ok(conn)) => {
                backoff.reset();
                run(inner.clone(), conn, Direction::Outgoing).await;
                tokio::time::sleep(ms(timing::AFTER_RUN_PAUSE_MS)).await;
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

/// The driver core's settings from the node's config.
fn driver_config(inner: &Inner) -> DriverConfig {
    DriverConfig {
        max_frame_bytes: inner.config.max_frame_bytes,
        rate_limits: inner.config.rate_limits,
        timers: inner.config.timers,
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
            match tokio::time::timeout(ms(wait_ms), conn.accept_bi()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => {
                    inner.warn(
                        WarnKind::HandshakeTimeout,
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
    let pairs = match inner.groups_read() {
        Ok(groups) => groups
            .iter()
            // A managed group is proved and synced only with its members now.
            .filter(|(_, g)| g.admits(peer.as_bytes()))
            .map(|(id, g)| (*id, g.keys.pair(inner.id.as_bytes(), peer.as_bytes())))
            .collect::<Vec<_>>(),
        Err(_) => return,
    };
    // Both ends export the same bytes from this connection's TLS session: membership proofs
    // are bound to it, so none can be replayed on another connection.
    let mut binding = [0u8; 32];
    if let Err(e) = conn.export_keying_material(&mut binding, SESSION_BINDING_LABEL, b"") {
        log::warn!(
            "session with {}: cannot export the session binding: {e:?}",
            peer.fmt_short()
        );
        conn.close(0u32.into(), b"session closed");
        return;
    }
    let driver = SessionDriver::new(
        &driver_config(&inner),
        pairs,
        SessionBinding {
            direction,
            binding,
            padding_key: *crate::crypto::Secret32::random().expose(),
        },
        peer.fmt_short().to_string(),
        inner.clock_ms(),
    );
    let handle = SessionHandle {
        serial,
        direction,
        driver: Arc::new(Mutex::new(driver)),
        wake: Arc::new(Notify::new()),
        wake_timer: Arc::new(Notify::new()),
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
    let writer = tokio::spawn(write_loop(inner.clone(), send, handle.clone()));
    let started = handle.call(|d| d.start());
    let (ingest_tx, ingest_rx) = mpsc::channel(INGEST_QUEUE_FRAMES);
    let ingester = tokio::spawn(ingest_loop(inner.clone(), peer, handle.clone(), ingest_rx));
    let session = Session {
        inner: &inner,
        peer,
        handle: &handle,
    };
    if session.perform(started, Some(&ingest_tx)).await.is_none() {
        // Whichever ends the session lingers inside its own branch, so the other goes on
        // meanwhile (reading goes on while a timer's close is written).
        tokio::select! {
            _ = async {
                let linger = session.read_loop(recv, &ingest_tx).await;
                session.linger(linger).await;
            } => {}
            _ = async {
                let linger = session.timer_loop().await;
                session.linger(linger).await;
            } => {}
        }
    }
    // Batches already read are still stored (at most INGEST_QUEUE_FRAMES of them).
    drop(ingest_tx);
    let _ = ingester.await;
    handle.call(|d| d.close("session over"));
    // Give the writer a moment to flush a final refusal before the connection closes.
    let _ = tokio::time::timeout(ms(timing::WRITER_GRACE_MS), writer).await;
    if let Ok(driver) = handle.driver.lock() {
        inner
            .counters
            .dropped_frames
            .fetch_add(driver.dropped_sends(), Ordering::Relaxed);
    }
    if inner.sessions.unregister(&peer, serial) {
        inner.emit(Event::PeerDisconnected { peer });
    }
    conn.close(0u32.into(), b"bye");
    log::debug!("session with {} down", peer.fmt_short());
}

/// Batches waiting to be verified and stored, so the next frame is read and decoded while the
/// current one commits. Two frames at most: memory stays bounded and the peer is slowed by
/// QUIC flow control, not by our buffering.
type IngestQueue = mpsc::Sender<(Id32, Prepared)>;
const INGEST_QUEUE_FRAMES: usize = 2;
/// Most entries merged into one ingest transaction from queued frames.
const INGEST_MERGE_ENTRIES: usize = 4096;

/// One session's tasks' shared view: the node, the peer, the driver.
struct Session<'a> {
    inner: &'a Arc<Inner>,
    peer: EndpointId,
    handle: &'a SessionHandle,
}

impl Session<'_> {
    /// Reads frames and hands them to the driver until it stops reading; returns how long to
    /// go on before the session ends.
    async fn read_loop(&self, mut recv: RecvStream, ingest: &IngestQueue) -> u64 {
        let (inner, handle) = (self.inner, self.handle);
        let body_timeout = ms(inner.config.timers.frame_timeout_ms);
        let mut step = ReadStep::Next;
        loop {
            step = match step {
                ReadStep::Stop => return 0,
                ReadStep::Next => {
                    let read = read_frame(&mut recv, inner.config.max_frame_bytes, body_timeout);
                    let (frame, bytes) = match read.await {
                        Ok(read) => read,
                        Err(ReadFailure::Ended) => return 0,
                        Err(ReadFailure::Bad(e)) => (Err(e), 0),
                    };
                    let now = inner.clock_ms();
                    let (step, actions) = handle.call_with(|d| d.on_frame(now, frame, bytes));
                    if let Some(linger) = self.perform(actions, Some(ingest)).await {
                        return linger;
                    }
                    step.unwrap_or(ReadStep::Stop)
                }
                ReadStep::WaitUntil(until) => {
                    let wait = until.saturating_sub(inner.clock_ms());
                    tokio::time::sleep(ms(wait)).await;
                    let now = inner.clock_ms();
                    let (step, actions) = handle.call_with(|d| d.poll_read(now));
                    if let Some(linger) = self.perform(actions, Some(ingest)).await {
                        return linger;
                    }
                    step.unwrap_or(ReadStep::Stop)
                }
                ReadStep::Load(needed) => {
                    let load = match inner.groups_read() {
                        Ok(g) => needed.groups(&g.keys().copied().collect()),
                        Err(_) => return 0,
                    };
                    let view = match inner.snapshot(load).await {
                        Ok(v) => v,
                        Err(e) => {
                            log::error!("session with {}: {e}", self.peer.fmt_short());
                            return 0;
                        }
                    };
                    let now = inner.clock_ms();
                    let (step, actions) = handle.call_with(|d| d.on_view(now, &view));
                    if let Some(linger) = self.perform(actions, Some(ingest)).await {
                        return linger;
                    }
                    step.unwrap_or(ReadStep::Stop)
                }
            };
        }
    }

    /// Sleeps until the driver's next deadline (woken early whenever the driver was called)
    /// and runs its timers; returns how long to go on once they close the session.
    async fn timer_loop(&self) -> u64 {
        let (inner, handle) = (self.inner, self.handle);
        loop {
            let deadline = match handle.driver.lock() {
                Ok(d) => d.poll_timeout(),
                Err(_) => return 0,
            };
            match deadline {
                Some(at) if at <= inner.clock_ms() => {
                    let now = inner.clock_ms();
                    let actions = handle.call(|d| d.handle_timeout(now));
                    if let Some(linger) = self.perform(actions, None).await {
                        return linger;
                    }
                }
                Some(at) => {
                    let wait = at.saturating_sub(inner.clock_ms());
                    tokio::select! {
                        _ = tokio::time::sleep(ms(wait)) => {}
                        _ = handle.wake_timer.notified() => {}
                    }
                }
                None => handle.wake_timer.notified().await,
            }
        }
    }

    /// Goes on reading for `linger_ms` after the driver closed the session, so what it
    /// queued last is written first.
    async fn linger(&self, linger_ms: u64) {
        if linger_ms > 0 {
            tokio::time::sleep(ms(linger_ms)).await;
        }
    }

    /// Carries out the driver's actions. Batches to store go to `ingest` when given, and are
    /// stored here otherwise. Returns `Some(linger_ms)` once the session should end.
    async fn perform(&self, actions: Vec<Action>, ingest: Option<&IngestQueue>) -> Option<u64> {
        let (inner, peer) = (self.inner, self.peer);
        let mut queue: VecDeque<Action> = actions.into();
        let mut end = None;
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Ingest { group, entries } => {
                    // Decoding and the payload checks run here, off the write transaction,
                    // while the ingest task commits the previous batch.
                    let prepared = match inner.prepare_batch(group, entries).await {
                        Ok(p) => p,
                        Err(e) => {
                            log::warn!("entries from {}: {e}", peer.fmt_short());
                            return Some(0);
                        }
                    };
                    match ingest {
                        Some(q) => {
                            if q.send((group, prepared)).await.is_err() {
                                return Some(0);
                            }
                        }
                        // Only the ingest task performs without a queue, and what it performs
                        // (the driver's answer to a stored batch) never asks for an ingest;
                        // were it to, that batch would be stored without held-back entries,
                        // which can only hold back more, never accept less.
                        None => {
                            let mut held = Unverified::default();
                            queue.extend(self.store(group, prepared, &mut held).await)
                        }
                    }
                }
                Action::RecordReceipts { group, heads } => {
                    let store = inner.store.clone();
                    let peer_id = *peer.as_bytes();
                    let saved = super::inner::blocking(move || {
                        store.write(|tx| store::record_peer_heads(tx, &group, &peer_id, &heads))
                    })
                    .await;
                    if let Err(e) = saved {
                        // Receipts are advisory: losing one never loses data, and the
                        // session goes on; the app hears of it as the simulator counts it.
                        inner.warn(
                            WarnKind::ReceiptNotRecorded,
                            format!("recording receipts from {}: {e}", peer.fmt_short()),
                        );
                    }
                }
                Action::FanOut { group, heads } => {
                    for head in heads {
                        inner
                            .sessions
                            .each(|d, _| d.on_local_entry(group, head.author, head.seq));
                    }
                }
                Action::StateChanged { group, state } => inner.sync_state_changed(group, state),
                Action::Warn { kind, message } => inner.warn(kind, message),
                Action::Count { counter, by } => inner.counters.add(counter, by),
                Action::Close { linger_ms } => end = Some(end.unwrap_or(linger_ms)),
            }
        }
        end
    }

    /// Verifies and stores one prepared batch and tells the driver; returns its actions.
    async fn store(&self, group: Id32, batch: Prepared, held: &mut Unverified) -> Vec<Action> {
        let (inner, handle) = (self.inner, self.handle);
        match inner.ingest(group, batch, held).await {
            Ok(done) => {
                let now = inner.clock_ms();
                let actions = handle.call(|d| d.on_ingested(now, group, &done));
                // Counted before the app hears of the entries: a status read after an
                // `EntryReceived` event counts that entry.
                let (counts, rest): (Vec<Action>, Vec<Action>) = actions
                    .into_iter()
                    .partition(|a| matches!(a, Action::Count { .. }));
                for count in counts {
                    if let Action::Count { counter, by } = count {
                        inner.counters.add(counter, by);
                    }
                }
                inner.announce_received(group, &done);
                rest
            }
            Err(e) => {
                log::error!("storing entries from {}: {e}", self.peer.fmt_short());
                handle.conn.close(2u32.into(), b"cannot store entries");
                handle.call(|d| d.on_ingest_failed(&e.to_string()))
            }
        }
    }
}

/// Stores queued batches in order; ends the session if the store fails. What the session
/// still holds back for a later signature when it ends is reported as rejected.
async fn ingest_loop(
    inner: Arc<Inner>,
    peer: EndpointId,
    handle: SessionHandle,
    mut queue: mpsc::Receiver<(Id32, Prepared)>,
) {
    let session = Session {
        inner: &inner,
        peer,
        handle: &handle,
    };
    // Entries held back for a later signature: this session's, so its batches are stored in
    // order with it.
    let mut held = Unverified::default();
    store_queued(&session, &mut queue, &mut held).await;
    if !held.is_empty() {
        let actions = handle.call(|d| d.on_unverified_dropped(held.len()));
        session.perform(actions, None).await;
    }
}

/// The body of [`ingest_loop`]: returns when the queue closes or the session ends.
async fn store_queued(
    session: &Session<'_>,
    queue: &mut mpsc::Receiver<(Id32, Prepared)>,
    held: &mut Unverified,
) {
    while let Some((mut group, mut batch)) = queue.recv().await {
        // Batches already waiting for the same group go into the same transaction: one
        // commit and one frontier read for several frames while a catch-up streams in.
        while batch.len() < INGEST_MERGE_ENTRIES {
            match queue.try_recv() {
                Ok((next_group, more)) if next_group == group => batch.merge(more),
                Ok((next_group, more)) => {
                    let actions = session.store(group, batch, held).await;
                    if session.perform(actions, None).await.is_some() {
                        return;
                    }
                    (group, batch) = (next_group, more);
                }
                Err(_) => break,
            }
        }
        let actions = session.store(group, batch, held).await;
        if session.perform(actions, None).await.is_some() {
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

/// Reads one frame; returns its decoded body (or why it broke the framing) with its size on
/// the wire.
async fn read_frame(
    recv: &mut RecvStream,
    max_frame: usize,
    body_timeout: Duration,
) -> Result<(Result<Message, WireError>, usize), ReadFailure> {
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
    Ok((frame::decode(&body), LENGTH_PREFIX + len))
}

/// A batch read from the store, ahead of being needed.
type Batch = crate::error::Result<RangeBatch>;
struct Prefetch {
    read: RangeRead,
    task: tokio::task::JoinHandle<Batch>,
}

/// Writes what the driver hands it onto the stream. Entry batches are read from the store
/// one at a time (the next one while the current one is written), so what this holds is at
/// most two batches whatever the backlog; when the peer reads slowly, `write_all` waits on
/// QUIC flow control and live pushes merge into the queued ranges meanwhile.
async fn write_loop(inner: Arc<Inner>, mut send: SendStream, handle: SessionHandle) {
    let read = |r: RangeRead| {
        let store = inner.store.clone();
        tokio::task::spawn_blocking(move || {
            store.read(|c| {
                engine::read_range_batch(
                    c,
                    r.group,
                    r.author,
                    r.after_seq,
                    r.up_to_seq,
                    r.max_frame,
                )
            })
        })
    };
    let mut prefetch: Option<Prefetch> = None;
    loop {
        let next = match handle.driver.lock() {
            Ok(mut d) => d.poll_transmit(),
            Err(_) => return,
        };
        let Some(next) = next else {
            handle.wake.notified().await;
            continue;
        };
        let bytes = match next {
            Transmit::Frame(bytes) => bytes,
            Transmit::Read(r) => {
                // Only a batch read for exactly this range is used: one read for a range that
                // live pushes have since extended would end short of it.
                let task = match prefetch.take() {
                    Some(p) if p.read == r => p.task,
                    _ => read(r),
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
                let (sent, actions) = handle.call_with(|d| d.on_range_batch(r, batch));
                for action in actions {
                    match action {
                        Action::Warn { kind, message } => inner.warn(kind, message),
                        Action::Count { counter, by } => inner.counters.add(counter, by),
                        other => log::debug!("writer ignores {other:?}"),
                    }
                }
                let Some(sent) = sent else { return };
                prefetch = sent.next.map(|r| Prefetch {
                    read: r,
                    task: read(r),
                });
                match sent.frame {
                    Some(bytes) => bytes,
                    None => continue,
                }
            }
            Transmit::Finish => {
                let _ = send.finish();
                let _ = tokio::time::timeout(ms(timing::FINISH_WAIT_MS), send.stopped()).await;
                handle.conn.close(0u32.into(), b"session closed");
                return;
            }
            Transmit::Abort(_) => return,
        };
        if send.write_all(&bytes).await.is_err() {
            return;
        }
    }
}
