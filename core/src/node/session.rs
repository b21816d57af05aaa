//! Drives [`SyncSession`]s over iroh connections: one bi-stream per peer, a reader that
//! feeds frames to the machine and a writer that carries out its sends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use iroh::endpoint::{Connection, ReadExactError, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{EndpointAddr, EndpointId};
use tokio::sync::mpsc;

use super::inner::{BACKOFF_MAX, BACKOFF_MIN, Inner};
use super::{Event, SYNC_ALPN};
use crate::store;
use crate::sync::proto::{Output, SyncSession};
use crate::wire::WireError;
use crate::wire::entry::Id32;
use crate::wire::frame::{self, LENGTH_PREFIX, Message};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FRAME_BODY_TIMEOUT: Duration = Duration::from_secs(30);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const BATCH_MAX_ENTRIES: u32 = 1024;

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Outgoing,
    Incoming,
}

/// What the writer task does next.
#[derive(Debug)]
enum WriterCmd {
    Send(Message),
    Range {
        group: Id32,
        author: Id32,
        after_seq: u64,
        up_to_seq: u64,
    },
    Close,
}

/// A live session as the rest of the node sees it.
#[derive(Debug, Clone)]
pub(super) struct SessionHandle {
    serial: u64,
    direction: Direction,
    machine: Arc<Mutex<SyncSession>>,
    cmds: mpsc::UnboundedSender<WriterCmd>,
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

    fn contains(&self, peer: &EndpointId) -> bool {
        self.map
            .lock()
            .map(|m| m.contains_key(peer))
            .unwrap_or(false)
    }

    /// Runs `f` on every live session's machine and carries out what it returns.
    pub(super) fn each(&self, mut f: impl FnMut(&mut SyncSession) -> Vec<Output>) {
        let handles: Vec<SessionHandle> = match self.map.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return,
        };
        for handle in handles {
            let outputs = match handle.machine.lock() {
                Ok(mut m) => f(&mut m),
                Err(_) => continue,
            };
            for output in outputs {
                handle.forward(output);
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
    /// Sends writer-bound outputs to the writer; the rest are the caller's.
    fn forward(&self, output: Output) -> Option<Output> {
        let cmd = match output {
            Output::Send(m) => WriterCmd::Send(m),
            Output::SendRange {
                group,
                author,
                after_seq,
                up_to_seq,
            } => WriterCmd::Range {
                group,
                author,
                after_seq,
                up_to_seq,
            },
            Output::Close { .. } => WriterCmd::Close,
            other => return Some(other),
        };
        // The writer is gone only when the session is ending; nothing is lost, since the
        // next session starts from a fresh frontier exchange.
        let _ = self.cmds.send(cmd);
        None
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
    let mut shutdown = inner.shutdown.subscribe();
    let mut paused = inner.paused.subscribe();
    let mut backoff = BACKOFF_MIN;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if *paused.borrow() {
            tokio::select! {
                _ = paused.changed() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        if inner.sessions.contains(&peer) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => {}
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
                backoff = BACKOFF_MIN;
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
        let jitter = Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 2));
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = inner.redial.notified() => { backoff = BACKOFF_MIN; }
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Runs one session on `conn` until either side ends it.
async fn run(inner: Arc<Inner>, conn: Connection, direction: Direction) {
    let peer = conn.remote_id();
    let streams = match direction {
        Direction::Outgoing => conn.open_bi().await.map_err(|e| e.to_string()),
        Direction::Incoming => tokio::time::timeout(CONNECT_TIMEOUT, conn.accept_bi())
            .await
            .map_err(|_| "peer opened no stream".to_string())
            .and_then(|r| r.map_err(|e| e.to_string())),
    };
    let (send, recv) = match streams {
        Ok(s) => s,
        Err(e) => {
            log::debug!("session with {} did not start: {e}", peer.fmt_short());
            return;
        }
    };
    let (cmds, cmd_rx) = mpsc::unbounded_channel();
    let serial = inner.sessions.serial.fetch_add(1, Ordering::Relaxed);
    let machine = Arc::new(Mutex::new(SyncSession::new()));
    let handle = SessionHandle {
        serial,
        direction,
        machine: machine.clone(),
        cmds,
        conn: conn.clone(),
    };
    if !inner.sessions.register(inner.id, peer, handle.clone()) {
        conn.close(0u32.into(), b"duplicate connection");
        return;
    }
    inner.emit(Event::PeerConnected { peer });
    log::debug!("session with {} up ({direction:?})", peer.fmt_short());
    let writer = tokio::spawn(write_loop(inner.clone(), peer, send, cmd_rx));
    let start = machine.lock().map(|mut m| m.start()).unwrap_or_default();
    for output in start {
        handle.forward(output);
    }
    let (ingest_tx, ingest_rx) = mpsc::channel(INGEST_QUEUE_FRAMES);
    let ingester = tokio::spawn(ingest_loop(
        inner.clone(),
        peer,
        machine.clone(),
        handle.clone(),
        ingest_rx,
    ));
    read_loop(&inner, peer, recv, &machine, &handle, &ingest_tx).await;
    // Batches already read are still stored (at most INGEST_QUEUE_FRAMES of them).
    drop(ingest_tx);
    let _ = ingester.await;
    let _ = handle.cmds.send(WriterCmd::Close);
    drop(handle);
    // Give the writer a moment to flush a final refusal before the connection closes.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    if inner.sessions.unregister(&peer, serial) {
        inner.emit(Event::PeerDisconnected { peer });
    }
    conn.close(0u32.into(), b"bye");
    log::debug!("session with {} down", peer.fmt_short());
}

enum ReadFailure {
    /// The stream or connection ended; not the peer's fault as far as we can tell.
    Ended,
    /// The peer broke the framing.
    Bad(WireError),
}

async fn read_frame(recv: &mut RecvStream, max_frame: usize) -> Result<Message, ReadFailure> {
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
    match tokio::time::timeout(FRAME_BODY_TIMEOUT, recv.read_exact(&mut body)).await {
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
    frame::decode(&body).map_err(ReadFailure::Bad)
}

async fn read_loop(
    inner: &Arc<Inner>,
    peer: EndpointId,
    mut recv: RecvStream,
    machine: &Arc<Mutex<SyncSession>>,
    handle: &SessionHandle,
    ingest: &IngestQueue,
) {
    let mut first = true;
    loop {
        let next = read_frame(&mut recv, inner.config.max_frame_bytes);
        let result = if first {
            // A peer that connects and never says hello must not hold a session forever.
            match tokio::time::timeout(HELLO_TIMEOUT, next).await {
                Ok(r) => r,
                Err(_) => {
                    inner.warn(
                        "handshake-timeout",
                        format!("{} sent no hello", peer.fmt_short()),
                    );
                    return;
                }
            }
        } else {
            next.await
        };
        first = false;
        let message = match result {
            Ok(m) => retag(inner, &peer, m, Way::In),
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
                let _ = handle.cmds.send(WriterCmd::Send(Message::Refuse {
                    code: frame::RefuseCode::ProtocolViolation as u16,
                    reason: e.to_string(),
                }));
                return;
            }
        };
        let load = match &message {
            Message::Hello { .. } => inner
                .groups_read()
                .map(|g| g.keys().copied().collect())
                .unwrap_or_default(),
            Message::Frontier { group, .. } | Message::Announce { group, .. } => vec![*group],
            _ => Vec::new(),
        };
        let view = match inner.snapshot(load).await {
            Ok(v) => v,
            Err(e) => {
                log::error!("session with {}: {e}", peer.fmt_short());
                return;
            }
        };
        let outputs = match machine.lock() {
            Ok(mut m) => m.on_message(message, &view),
            Err(_) => return,
        };
        if !handle_outputs(inner, peer, machine, handle, outputs, Some(ingest)).await {
            return;
        }
    }
}

/// Batches waiting to be verified and stored, so the next frame is read and decoded while the
/// current one commits. Two frames at most: memory stays bounded and the peer is slowed by
/// QUIC flow control, not by our buffering.
type IngestQueue = mpsc::Sender<(Id32, Vec<Vec<u8>>)>;
const INGEST_QUEUE_FRAMES: usize = 2;

/// Stores queued batches in order; ends the session if the store fails.
async fn ingest_loop(
    inner: Arc<Inner>,
    peer: EndpointId,
    machine: Arc<Mutex<SyncSession>>,
    handle: SessionHandle,
    mut queue: mpsc::Receiver<(Id32, Vec<Vec<u8>>)>,
) {
    while let Some((group, entries)) = queue.recv().await {
        let batch = vec![Output::Ingest { group, entries }];
        if !handle_outputs(&inner, peer, &machine, &handle, batch, None).await {
            handle.conn.close(2u32.into(), b"cannot store entries");
            return;
        }
    }
}

/// Carries out a machine's outputs; false when the session should end. Batches to store go
/// to `ingest` when given, and are stored here otherwise.
async fn handle_outputs(
    inner: &Arc<Inner>,
    peer: EndpointId,
    machine: &Arc<Mutex<SyncSession>>,
    handle: &SessionHandle,
    outputs: Vec<Output>,
    ingest: Option<&IngestQueue>,
) -> bool {
    let mut queue: std::collections::VecDeque<Output> = outputs.into();
    let mut keep_going = true;
    while let Some(output) = queue.pop_front() {
        if matches!(output, Output::Close { .. }) {
            keep_going = false;
        }
        let Some(output) = handle.forward(output) else {
            continue;
        };
        match output {
            Output::Ingest { group, entries } if ingest.is_some() => {
                let Some(queue) = ingest else { continue };
                if queue.send((group, entries)).await.is_err() {
                    return false;
                }
            }
            Output::Ingest { group, entries } => match inner.ingest(peer, group, entries).await {
                Ok((held, view)) => {
                    let more = match machine.lock() {
                        Ok(mut m) => m.on_ingested(group, &held, &view),
                        Err(_) => return false,
                    };
                    queue.extend(more);
                    for head in held {
                        inner
                            .sessions
                            .each(|s| s.on_local_entry(group, head.author, head.seq));
                    }
                }
                Err(e) => {
                    log::error!("storing entries from {}: {e}", peer.fmt_short());
                    inner.warn("storage", format!("could not store entries: {e}"));
                    return false;
                }
            },
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
            Output::Send(_) | Output::SendRange { .. } | Output::Close { .. } => {}
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
    match message {
        Message::Frontier { group, heads } => Message::Frontier {
            group: map(group),
            heads,
        },
        Message::Announce { group, heads } => Message::Announce {
            group: map(group),
            heads,
        },
        Message::Entries { group, entries } => Message::Entries {
            group: map(group),
            entries,
        },
        other => other,
    }
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

async fn write_loop(
    inner: Arc<Inner>,
    peer: EndpointId,
    mut send: SendStream,
    mut cmds: mpsc::UnboundedReceiver<WriterCmd>,
) {
    // Entries per frame: leave room in the frame for the message envelope.
    let batch_bytes = inner.config.max_frame_bytes.saturating_sub(1024);
    while let Some(cmd) = cmds.recv().await {
        match cmd {
            WriterCmd::Send(message) => {
                if !write_frame(&inner, &peer, &mut send, message).await {
                    return;
                }
            }
            WriterCmd::Range {
                group,
                author,
                after_seq,
                up_to_seq,
            } => {
                // The next batch is read from the store while this one is written.
                let read = |from: u64| {
                    let store = inner.store.clone();
                    tokio::task::spawn_blocking(move || {
                        store.read(|c| {
                            store::log_range(
                                c,
                                &group,
                                &author,
                                from,
                                up_to_seq,
                                BATCH_MAX_ENTRIES,
                                batch_bytes,
                            )
                        })
                    })
                };
                let mut pending = (after_seq < up_to_seq).then(|| read(after_seq));
                while let Some(task) = pending.take() {
                    let rows = match task.await {
                        Ok(Ok(rows)) => rows,
                        Ok(Err(e)) => {
                            log::error!("reading entries to send: {e}");
                            return;
                        }
                        Err(e) => {
                            log::error!("reading entries to send: {e}");
                            return;
                        }
                    };
                    let Some(last) = rows.last().map(|(seq, _)| *seq) else {
                        break;
                    };
                    if last < up_to_seq {
                        pending = Some(read(last));
                    }
                    let entries = rows.into_iter().map(|(_, raw)| raw).collect();
                    let message = Message::Entries { group, entries };
                    if !write_frame(&inner, &peer, &mut send, message).await {
                        return;
                    }
                }
            }
            WriterCmd::Close => {
                let _ = send.finish();
                let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
                return;
            }
        }
    }
}
