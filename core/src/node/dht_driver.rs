//! The iroh driver of the DHT: runs one [`Dht`] state machine over ALPN `covey/dht/2`.
//!
//! One [`Dht`] sits behind an async mutex. Its record store is SQLite, so every call that
//! changes it (a local operation, a message in, a timer tick) is a [`Shared::step`]: it runs
//! on tokio's blocking pool, like the rest of the node's SQLite work, and then carries out
//! the outputs the machine queued: sends go out on their own tasks (bounded by a semaphore),
//! finished operations wake their callers through oneshot channels keyed by [`OpId`]. Only
//! reads of its in-memory state (next deadline, routing table, counters) run on the async
//! side.
//!
//! On the wire each message travels on its own bidirectional stream as one frame:
//! `u32 frame length | u32 message length | message | address hints`. The message is the
//! DHT's own encoding; the hints (postcard `Vec<EndpointAddr>`, bounded) carry the sender's
//! address and the addresses it knows for the contacts it names, so a node can dial peers it
//! learned of through a lookup without any address-lookup service. A hint is only a dialing
//! hint: iroh authenticates the peer's id on connect, so a wrong one only fails a dial.
//!
//! Group rendezvous asks for less: a request about a key the rendezvous marked quiet
//! ([`DhtDriver::quiet`]), and any `AddProvider` of a record with sealed bytes, goes with no
//! hints at all, so its frame names nothing of this node beyond what the connection itself
//! shows the receiver (the node id and the address it comes from); and a `Providers`
//! response names no address for a provider whose record is sealed (its provider is a
//! per-window key, not a node).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::{Connection, RecvStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointAddr, EndpointId, SecretKey};
use iroh_tickets::endpoint::EndpointTicket;
use tokio::sync::{Notify, Semaphore, oneshot};

use super::inner::{blocking, now_ms};
use super::setup::parse_ticket;
use super::types::{DhtSettings, DhtStatus};
use crate::dht::Key;
use crate::dht::machine::{Dht, OpId, Outcome, Output};
use crate::dht::messages::{self, MAX_MESSAGE_BYTES, Message, Request, Response};
use crate::error::{CoveyError, ErrorKind, Result};
use crate::store::{self, SqliteRecordStore, Store};

/// The ALPN of the DHT protocol.
pub const DHT_ALPN: &[u8] = messages::ALPN;
/// How long a caller waits for a DHT operation before `Timeout`.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing or reading one frame may take.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Most address hints carried in (or accepted from) one frame.
const MAX_HINTS: usize = 48;
/// Most socket addresses kept per hinted peer.
const MAX_ADDRS_PER_HINT: usize = 8;
/// Room for the hints in a frame.
const MAX_HINT_BYTES: usize = 16 * 1024;
/// Largest frame accepted.
const MAX_FRAME_BYTES: usize = 4 + MAX_MESSAGE_BYTES + MAX_HINT_BYTES;
/// Most peer addresses remembered.
const MAX_ADDRS: usize = 8192;
/// Most cached connections before closed ones are pruned.
const MAX_CONNS: usize = 1024;
/// Most sends in flight at once.
const MAX_SENDS: usize = 64;
/// Longest the timer sleeps without looking at the machine again.
const MAX_SLEEP_MS: u64 = 60_000;
/// How often the routing table's contacts are written to the store.
const SAVE_CONTACTS_EVERY: Duration = Duration::from_secs(600);
/// Buckets a joiner refreshes after its self-lookup (the farthest ones, which cover nearly
/// the whole id space): measured in the simulator to cut lookup rounds under churn.
const JOIN_REFRESH_BUCKETS: usize = 3;
/// Most keys marked quiet at once (a handful per joined group): past it a key is not marked,
/// and its requests carry hints as any other.
const MAX_QUIET_KEYS: usize = 16_384;

type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// The DHT of one node: the state machine, its connections and its waiting callers.
pub(super) struct DhtDriver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DhtDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhtDriver")
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

struct Shared {
    endpoint: Endpoint,
    store: Arc<Store>,
    settings: DhtSettings,
    /// A tokio mutex: a step holds it on the blocking pool while SQLite works, and waiting
    /// for it must not block a worker thread.
    dht: Arc<tokio::sync::Mutex<Dht<SqliteRecordStore>>>,
    waiters: Mutex<HashMap<OpId, oneshot::Sender<Outcome>>>,
    addrs: Mutex<HashMap<EndpointId, EndpointAddr>>,
    conns: Mutex<HashMap<EndpointId, Slot>>,
    wake: Notify,
    closed: AtomicBool,
    sends: Semaphore,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    frames_dropped: AtomicU64,
    dial_failures: AtomicU64,
    bootstrap_fallbacks: AtomicU64,
    /// Keys whose requests go without hints (group rendezvous), each until a time (ms).
    quiet: Mutex<HashMap<Key, u64>>,
    /// Rendezvous records found that did not open, or did not match the node they sealed.
    rendezvous_unopened: AtomicU64,
}

fn poisoned() -> CoveyError {
    CoveyError::internal("dht state lock poisoned")
}

fn key_of(id: &EndpointId) -> Key {
    Key(*id.as_bytes())
}

impl DhtDriver {
    /// A driver for the node `secret` on `endpoint`, holding records in `store`; starts its
    /// timer task.
    pub(super) fn start(
        endpoint: Endpoint,
        secret: SecretKey,
        store: Arc<Store>,
        settings: DhtSettings,
    ) -> Result<Self> {
        let seed: [u8; 32] = rand::random();
        let dht = Dht::new(
            secret,
            SqliteRecordStore::new(store.clone(), settings.quotas),
            settings.protocol,
            seed,
            now_ms(),
        )?;
        let shared = Arc::new(Shared {
            endpoint,
            store,
            settings,
            dht: Arc::new(tokio::sync::Mutex::new(dht)),
            waiters: Mutex::new(HashMap::new()),
            addrs: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            sends: Semaphore::new(MAX_SENDS),
            tasks: Mutex::new(Vec::new()),
            frames_dropped: AtomicU64::new(0),
            dial_failures: AtomicU64::new(0),
            bootstrap_fallbacks: AtomicU64::new(0),
            quiet: Mutex::new(HashMap::new()),
            rendezvous_unopened: AtomicU64::new(0),
        });
        let timer = tokio::spawn(timer_loop(shared.clone()));
        shared.track(timer);
        let saver = tokio::spawn(save_loop(shared.clone()));
        shared.track(saver);
        Ok(Self { shared })
    }

    /// Joins the network through `seeds` (the configured bootstrap tickets and remembered
    /// peers); when none of them answers, through the contacts cached in the store instead.
    /// Then refreshes the farthest buckets. Returns how many nodes answered the self-lookup.
    pub(super) async fn join(&self, seeds: Vec<EndpointAddr>) -> usize {
        let mut found = 0;
        if !seeds.is_empty() {
            found = self.bootstrap(&seeds).await;
        }
        if found == 0 {
            let limit = self.shared.settings.cached_contacts;
            let store = self.shared.store.clone();
            let cached = blocking(move || store.read(|c| store::dht_contacts(c, limit))).await;
            let cached: Vec<EndpointAddr> = match cached {
                Ok(tickets) => tickets
                    .iter()
                    .filter_map(|t| parse_ticket(t).ok())
                    .filter(|a| !seeds.iter().any(|s| s.id == a.id))
                    .collect(),
                Err(e) => {
                    log::warn!("cannot read cached dht contacts: {e}");
                    Vec::new()
                }
            };
            if !cached.is_empty() {
                log::info!(
                    "dht: {} bootstrap peers answered; trying {} cached contacts",
                    if seeds.is_empty() {
                        "no"
                    } else {
                        "none of the"
                    },
                    cached.len()
                );
                self.shared
                    .bootstrap_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                found = self.bootstrap(&cached).await;
            }
        }
        if found > 0 {
            let started = self
                .shared
                .step(|_, dht, now| dht.refresh_farthest(now, JOIN_REFRESH_BUCKETS))
                .await;
            if let Err(e) = started {
                log::debug!("dht join refresh not started: {e}");
            }
        }
        found
    }

    /// Learns `seeds` and looks ourselves up through them; how many nodes answered.
    async fn bootstrap(&self, seeds: &[EndpointAddr]) -> usize {
        for addr in seeds {
            self.shared.learn(addr.clone(), true);
        }
        let keys: Vec<Key> = seeds
            .iter()
            .filter(|a| a.id != self.shared.endpoint.id())
            .map(|a| key_of(&a.id))
            .collect();
        if keys.is_empty() {
            return 0;
        }
        match self.run(move |dht, now| dht.bootstrap(&keys, now)).await {
            Ok(Outcome::Nodes(nodes)) => nodes.len(),
            Ok(other) => {
                log::debug!("dht bootstrap ended with {other:?}");
                0
            }
            Err(e) => {
                log::debug!("dht bootstrap failed: {e}");
                0
            }
        }
    }

    /// A peer connected to us outside the DHT (a sync session): remember the address it
    /// connected from and ping it, so it joins the routing table if it speaks the DHT.
    pub(super) async fn observe(&self, peer: EndpointId) {
        if self.shared.closed.load(Ordering::Acquire) || peer == self.shared.endpoint.id() {
            return;
        }
        if let Some(info) = self.shared.endpoint.remote_info(peer).await {
            let addr = EndpointAddr::from_parts(peer, info.into_addrs().map(|a| a.into_addr()));
            self.shared.learn(addr, true);
        }
        if let Err(e) = self
            .shared
            .step(move |_, dht, now| dht.probe(key_of(&peer), now))
            .await
        {
            log::debug!("dht probe of {} not started: {e}", peer.fmt_short());
        }
    }

    /// Marks `key` quiet until `until_ms`: requests naming it (a node lookup of it, a
    /// provider lookup, an announcement under it) go without address hints. The rendezvous
    /// marks its provider keys, so the DHT nodes it asks learn nothing of this node from
    /// those frames beyond what their connection shows.
    pub(super) fn quiet(&self, key: Key, until_ms: u64) {
        let Ok(mut quiet) = self.shared.quiet.lock() else {
            return;
        };
        let now = now_ms();
        quiet.retain(|_, until| *until > now);
        if quiet.len() < MAX_QUIET_KEYS || quiet.contains_key(&key) {
            let until = quiet.entry(key).or_insert(until_ms);
            *until = (*until).max(until_ms);
        } else {
            log::debug!("dht: {MAX_QUIET_KEYS} quiet keys already, this one is not marked");
        }
    }

    /// Counts a rendezvous record that did not open or did not match.
    pub(super) fn count_unopened(&self) {
        self.shared
            .rendezvous_unopened
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Rendezvous records that did not open or did not match, since the node opened.
    #[cfg(any(test, feature = "test-utils"))]
    pub(super) fn unopened(&self) -> u64 {
        self.shared.rendezvous_unopened.load(Ordering::Relaxed)
    }

    /// Writes the routing table's freshest contacts with known addresses to the store.
    pub(super) async fn save_contacts(&self) -> Result<usize> {
        self.shared.save_contacts().await
    }

    /// The DHT's part of `status()`; `rendezvous_found` is the node's to fill in. Read from
    /// memory: no step, no SQLite.
    pub(super) async fn status(&self) -> DhtStatus {
        let (contacts, counters) = {
            let dht = self.shared.dht.lock().await;
            (dht.routing().len() as u32, dht.counters())
        };
        let s = &self.shared;
        DhtStatus {
            contacts,
            counters,
            frames_dropped: s.frames_dropped.load(Ordering::Relaxed),
            dial_failures: s.dial_failures.load(Ordering::Relaxed),
            bootstrap_fallbacks: s.bootstrap_fallbacks.load(Ordering::Relaxed),
            rendezvous_found: 0,
        }
    }

    /// The protocol handler to register on the router for [`DHT_ALPN`].
    pub(super) fn handler(&self) -> DhtHandler {
        DhtHandler {
            shared: self.shared.clone(),
        }
    }

    /// Learns `addr` and starts bootstrapping from it (a self-lookup through it, which goes on
    /// in the background).
    pub(super) async fn add_seed(&self, addr: EndpointAddr) {
        if self.shared.closed.load(Ordering::Acquire) || addr.id == self.shared.endpoint.id() {
            return;
        }
        let id = addr.id;
        self.shared.learn(addr, true);
        let started = self
            .shared
            .step(move |_, dht, now| dht.bootstrap(&[key_of(&id)], now))
            .await
            .and_then(|started| started);
        if let Err(e) = started {
            log::debug!("dht bootstrap from {} not started: {e}", id.fmt_short());
        }
    }

    /// Starts an operation with `start` and waits (at most [`OP_TIMEOUT`]) for its outcome.
    pub(super) async fn run(
        &self,
        start: impl FnOnce(&mut Dht<SqliteRecordStore>, u64) -> Result<OpId> + Send + 'static,
    ) -> Result<Outcome> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(CoveyError::closed());
        }
        let (tx, rx) = oneshot::channel();
        // The waiter is registered in the step that starts the operation, before its outputs
        // are carried out, so an outcome that is ready at once is not missed.
        let op = shared
            .step(move |shared, dht, now| -> Result<OpId> {
                let op = start(dht, now)?;
                shared
                    .waiters
                    .lock()
                    .map_err(|_| poisoned())?
                    .insert(op, tx);
                Ok(op)
            })
            .await??;
        match tokio::time::timeout(OP_TIMEOUT, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(CoveyError::closed()),
            Err(_) => {
                if let Ok(mut w) = shared.waiters.lock() {
                    w.remove(&op);
                }
                if shared.closed.load(Ordering::Acquire) {
                    return Err(CoveyError::closed());
                }
                Err(CoveyError::new(
                    ErrorKind::Timeout,
                    format!("dht operation did not finish within {OP_TIMEOUT:?}"),
                ))
            }
        }
    }

    /// Stops the timer, closes DHT connections and fails waiting callers with `Closed`.
    pub(super) fn shutdown(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.wake.notify_one();
        if let Ok(mut tasks) = self.shared.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        if let Ok(mut w) = self.shared.waiters.lock() {
            w.clear();
        }
        let slots: Vec<Slot> = match self.shared.conns.lock() {
            Ok(mut c) => c.drain().map(|(_, s)| s).collect(),
            Err(_) => Vec::new(),
        };
        for slot in slots {
            if let Ok(mut s) = slot.try_lock()
                && let Some(conn) = s.take()
            {
                conn.close(0u32.into(), b"shutting down");
            }
        }
    }
}

impl Drop for DhtDriver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    /// Runs `f` on the machine and then carries out the outputs it queued, on tokio's
    /// blocking pool: whatever changes the machine may read or write its SQLite record store.
    /// The async lock is taken here, so a caller waits without blocking a worker thread, and
    /// it moves into the blocking task with `f`, so a step, once started, completes with its
    /// outputs even if its caller stops waiting.
    async fn step<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Shared, &mut Dht<SqliteRecordStore>, u64) -> T + Send + 'static,
    ) -> Result<T> {
        let mut dht = self.dht.clone().lock_owned().await;
        let shared = self.clone();
        blocking(move || {
            let out = f(&shared, &mut dht, now_ms());
            let outputs: Vec<Output> = std::iter::from_fn(|| dht.poll_output()).collect();
            drop(dht);
            shared.carry_out(outputs);
            Ok(out)
        })
        .await
    }

    async fn save_contacts(&self) -> Result<usize> {
        let mut contacts: Vec<(u64, [u8; 32])> = {
            let dht = self.dht.lock().await;
            let routing = dht.routing();
            (0..256)
                .flat_map(|i| routing.bucket(i).iter())
                .map(|c| (c.last_seen_ms, c.id.0))
                .collect()
        };
        contacts.sort_unstable_by(|a, b| b.cmp(a));
        let rows: Vec<([u8; 32], String, u64)> = {
            let addrs = self.addrs.lock().map_err(|_| poisoned())?;
            contacts
                .into_iter()
                .filter_map(|(seen, id)| {
                    let addr = addrs.get(&EndpointId::from_bytes(&id).ok()?)?;
                    Some((id, EndpointTicket::new(addr.clone()).to_string(), seen))
                })
                .take(self.settings.cached_contacts)
                .collect()
        };
        if rows.is_empty() {
            // Keep what an earlier run cached rather than forgetting the network.
            return Ok(0);
        }
        let n = rows.len();
        let store = self.store.clone();
        blocking(move || store.write(|tx| store::replace_dht_contacts(tx, &rows))).await?;
        Ok(n)
    }

    fn track(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    /// Remembers an address for dialing. `trusted` (the peer's own claim, or the app's
    /// ticket) replaces what we had; a third party's hint only fills a gap.
    fn learn(&self, addr: EndpointAddr, trusted: bool) {
        if addr.id == self.endpoint.id() || addr.ip_addrs().next().is_none() {
            return;
        }
        let Ok(mut addrs) = self.addrs.lock() else {
            return;
        };
        if addrs.contains_key(&addr.id) {
            if trusted {
                addrs.insert(addr.id, addr);
            }
        } else if addrs.len() < MAX_ADDRS {
            addrs.insert(addr.id, addr);
        }
    }

    /// Carries out outputs the machine queued (called by [`Shared::step`], on the blocking
    /// pool, where tokio's context is entered, so sends can still be spawned).
    fn carry_out(self: &Arc<Self>, outputs: Vec<Output>) {
        for action in outputs {
            match action {
                Output::Send { to, message } => self.spawn_send(to, message),
                Output::Done { op, outcome, .. } => {
                    let waiter = self.waiters.lock().ok().and_then(|mut w| w.remove(&op));
                    if let Some(tx) = waiter {
                        let _ = tx.send(outcome);
                    }
                }
            }
        }
        self.wake.notify_one();
    }

    fn spawn_send(self: &Arc<Self>, to: Key, message: Message) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let Ok(peer) = EndpointId::from_bytes(&to.0) else {
            return;
        };
        let frame = match self.frame(&message) {
            Ok(f) => f,
            Err(e) => {
                log::debug!("dht message to {} not encodable: {e}", peer.fmt_short());
                return;
            }
        };
        let shared = self.clone();
        let task = tokio::spawn(async move {
            let Ok(_permit) = shared.sends.acquire().await else {
                return;
            };
            for _ in 0..2 {
                let conn = match shared.connection(peer).await {
                    Ok(c) => c,
                    Err(e) => {
                        shared.dial_failures.fetch_add(1, Ordering::Relaxed);
                        log::debug!("dht dial {} failed: {e}", peer.fmt_short());
                        return;
                    }
                };
                match tokio::time::timeout(FRAME_TIMEOUT, write_frame(&conn, &frame)).await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => log::debug!("dht send to {} failed: {e}", peer.fmt_short()),
                    Err(_) => log::debug!("dht send to {} timed out", peer.fmt_short()),
                }
                shared.forget_conn(peer, &conn);
            }
        });
        self.track(task);
    }

    /// Whether requests about `key` go without hints now.
    fn is_quiet(&self, key: &Key) -> bool {
        let now = now_ms();
        self.quiet
            .lock()
            .map(|q| q.get(key).is_some_and(|until| *until > now))
            // A poisoned lock: err on the side of sending nothing.
            .unwrap_or(true)
    }

    /// Encodes `message` with our address and those of the contacts it names, or with no
    /// hints at all when [`hints_for`] says so.
    fn frame(&self, message: &Message) -> Result<Vec<u8>> {
        let body = messages::encode(message).map_err(|e| CoveyError::internal(e.to_string()))?;
        let hint_bytes = match hints_for(message, |k| self.is_quiet(k)) {
            Hints::Nothing => Vec::new(),
            Hints::Named(named) => {
                let mut hints: Vec<EndpointAddr> = vec![self.endpoint.addr()];
                if let Ok(addrs) = self.addrs.lock() {
                    for id in named {
                        if hints.len() >= MAX_HINTS {
                            break;
                        }
                        if let Ok(id) = EndpointId::from_bytes(&id)
                            && let Some(a) = addrs.get(&id)
                        {
                            hints.push(a.clone());
                        }
                    }
                }
                let hint_bytes = postcard::to_stdvec(&hints).unwrap_or_default();
                if hint_bytes.len() > MAX_HINT_BYTES {
                    Vec::new()
                } else {
                    hint_bytes
                }
            }
        };
        let len = 4 + body.len() + hint_bytes.len();
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&hint_bytes);
        Ok(out)
    }

    /// A frame arrived from `from` (authenticated by the connection).
    async fn on_frame(self: &Arc<Self>, from: EndpointId, frame: Vec<u8>) {
        let Some((len, rest)) = frame.split_first_chunk::<4>() else {
            self.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() || len > MAX_MESSAGE_BYTES {
            self.frames_dropped.fetch_add(1, Ordering::Relaxed);
            log::debug!("dht frame from {} malformed", from.fmt_short());
            return;
        }
        let (_, hints) = rest.split_at(len);
        if let Ok(hints) = postcard::from_bytes::<Vec<EndpointAddr>>(hints) {
            for mut hint in hints.into_iter().take(MAX_HINTS) {
                if hint.addrs.len() > MAX_ADDRS_PER_HINT {
                    hint.addrs = hint.addrs.into_iter().take(MAX_ADDRS_PER_HINT).collect();
                }
                let trusted = hint.id == from;
                self.learn(hint, trusted);
            }
        }
        // A sender that gave no address of its own (a quiet rendezvous request, or a peer
        // that sends no hints) is still known by what its connection shows, so it can be
        // answered later and named to others like any contact; only a gap is filled.
        let knows_sender = self
            .addrs
            .lock()
            .map(|a| a.contains_key(&from))
            .unwrap_or(true);
        if !knows_sender && let Some(info) = self.endpoint.remote_info(from).await {
            let seen = EndpointAddr::from_parts(from, info.into_addrs().map(|a| a.into_addr()));
            self.learn(seen, false);
        }
        // The message body: after the frame's own 4-byte length, `len` bytes (checked above).
        let handled = self
            .step(move |_, dht, now| dht.handle_bytes(key_of(&from), &frame[4..4 + len], now))
            .await;
        if let Err(e) = handled {
            log::warn!("dht frame from {} not handled: {e}", from.fmt_short());
        }
    }

    /// The connection to `peer`, dialing it when there is none.
    async fn connection(self: &Arc<Self>, peer: EndpointId) -> Result<Connection> {
        if self.closed.load(Ordering::Acquire) {
            return Err(CoveyError::closed());
        }
        let slot = self.slot(peer)?;
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref()
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let addr = self
            .addrs
            .lock()
            .ok()
            .and_then(|a| a.get(&peer).cloned())
            .unwrap_or_else(|| EndpointAddr::new(peer));
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.endpoint.connect(addr, DHT_ALPN))
            .await
            .map_err(|_| CoveyError::new(ErrorKind::Timeout, "dht dial timed out"))?
            .map_err(|e| CoveyError::network(format!("dht dial: {e}")))?;
        *guard = Some(conn.clone());
        drop(guard);
        let reader = tokio::spawn(serve(self.clone(), conn.clone()));
        self.track(reader);
        Ok(conn)
    }

    fn slot(&self, peer: EndpointId) -> Result<Slot> {
        let mut conns = self.conns.lock().map_err(|_| poisoned())?;
        if conns.len() >= MAX_CONNS && !conns.contains_key(&peer) {
            conns.retain(|_, s| match s.try_lock() {
                Ok(c) => c.as_ref().is_some_and(|c| c.close_reason().is_none()),
                Err(_) => true,
            });
        }
        Ok(conns.entry(peer).or_default().clone())
    }

    fn forget_conn(&self, peer: EndpointId, conn: &Connection) {
        let slot = self.conns.lock().ok().and_then(|c| c.get(&peer).cloned());
        if let Some(slot) = slot
            && let Ok(mut s) = slot.try_lock()
            && s.as_ref()
                .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            s.take();
        }
    }

    /// Keeps an incoming connection for sending back to its peer, if none is cached.
    fn adopt(&self, conn: &Connection) {
        if let Ok(slot) = self.slot(conn.remote_id())
            && let Ok(mut s) = slot.try_lock()
            && s.as_ref().is_none_or(|c| c.close_reason().is_some())
        {
            *s = Some(conn.clone());
        }
    }
}

/// What a frame's hints carry.
#[derive(Debug, PartialEq, Eq)]
enum Hints {
    /// Nothing: the frame names no address of ours.
    Nothing,
    /// Our own address first, then the address we know of each of these nodes, in order.
    Named(Vec<[u8; 32]>),
}

/// The hints `message` goes with. A request about a quiet key (`FindNode` of it,
/// `GetProviders` of it, `AddProvider` under it) and an `AddProvider` of a record with sealed
/// bytes get none: our own address in them would tell the receiver more about the member
/// announcing or searching than its connection does. Any other request carries our address;
/// a response also names its contacts and the providers of its application (unsealed)
/// records. A sealed record's provider is a per-window key, not a node: it has no address,
/// and even asking for one would only be a lookup of a stranger.
fn hints_for(message: &Message, is_quiet: impl Fn(&Key) -> bool) -> Hints {
    match message {
        Message::Request { body, .. } => {
            let quiet = match body {
                Request::FindNode { target: key } | Request::GetProviders { key } => is_quiet(key),
                Request::AddProvider { record } => {
                    !record.sealed.is_empty() || is_quiet(&Key(record.key))
                }
                Request::Ping | Request::FindValue { .. } | Request::Store { .. } => false,
            };
            if quiet {
                Hints::Nothing
            } else {
                Hints::Named(Vec::new())
            }
        }
        Message::Response { body, .. } => {
            let mut named: Vec<[u8; 32]> = Vec::new();
            match body {
                Response::Nodes { contacts }
                | Response::Value { contacts, .. }
                | Response::Providers { contacts, .. } => {
                    named.extend(contacts.iter().map(|k| k.0));
                }
                _ => {}
            }
            if let Response::Providers { providers, .. } = body {
                named.extend(
                    providers
                        .iter()
                        .filter(|p| p.sealed.is_empty())
                        .map(|p| p.provider),
                );
            }
            Hints::Named(named)
        }
    }
}

async fn write_frame(conn: &Connection, frame: &[u8]) -> std::result::Result<(), String> {
    let (mut send, _recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(frame).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    Ok(())
}

async fn read_frame(recv: &mut RecvStream) -> std::result::Result<Vec<u8>, String> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(prefix) as usize;
    if !(4..=MAX_FRAME_BYTES).contains(&len) {
        return Err(format!("frame of {len} bytes"));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(body)
}

/// Reads frames off `conn` (one per stream) until it closes.
async fn serve(shared: Arc<Shared>, conn: Connection) {
    let from = conn.remote_id();
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        if shared.closed.load(Ordering::Acquire) {
            break;
        }
        let frame = tokio::time::timeout(FRAME_TIMEOUT, read_frame(&mut recv)).await;
        let _ = send.finish();
        match frame {
            Ok(Ok(bytes)) => shared.on_frame(from, bytes).await,
            Ok(Err(e)) => {
                shared.frames_dropped.fetch_add(1, Ordering::Relaxed);
                log::debug!("dht frame from {} dropped: {e}", from.fmt_short())
            }
            Err(_) => {
                shared.frames_dropped.fetch_add(1, Ordering::Relaxed);
                log::debug!("dht frame from {} timed out", from.fmt_short())
            }
        }
    }
}

/// Runs the machine's timers until shutdown.
async fn timer_loop(shared: Arc<Shared>) {
    loop {
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let deadline = shared.dht.lock().await.next_deadline();
        let now = now_ms();
        if deadline <= now {
            if let Err(e) = shared.step(move |_, dht, _| dht.handle_timeout(now)).await {
                log::warn!("dht timers not run: {e}");
            }
            // Never spin: at least a few ms between ticks.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let wait = (deadline - now).min(MAX_SLEEP_MS);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = shared.wake.notified() => {}
        }
    }
}

/// Writes the routing table's contacts to the store now and then, so a restart can rejoin
/// through them even if the node is not shut down cleanly.
async fn save_loop(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(SAVE_CONTACTS_EVERY).await;
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        match shared.save_contacts().await {
            Ok(n) => log::debug!("dht: cached {n} contacts"),
            Err(e) => log::warn!("cannot cache dht contacts: {e}"),
        }
    }
}

/// Accepts `covey/dht/2` connections.
#[derive(Clone)]
pub(super) struct DhtHandler {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DhtHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhtHandler").finish()
    }
}

impl ProtocolHandler for DhtHandler {
    async fn accept(&self, connection: Connection) -> std::result::Result<(), AcceptError> {
        if self.shared.closed.load(Ordering::Acquire) {
            connection.close(1u32.into(), b"closed");
            return Ok(());
        }
        self.shared.adopt(&connection);
        serve(self.shared.clone(), connection).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::ProviderRecord;
    use crate::dht::record::provider_key;

    #[test]
    fn rendezvous_requests_carry_no_hints_and_sealed_providers_are_never_named() {
        let quiet_key = provider_key(b"rendezvous");
        let loud_key = provider_key(b"app");
        let is_quiet = |k: &Key| *k == quiet_key;
        let request = |body| Message::Request { id: 1, body };
        let own = |body| hints_for(&request(body), is_quiet);
        let member = SecretKey::from_bytes(&[1; 32]);
        let plain = ProviderRecord::sign(&member, loud_key, 9);
        let sealed = ProviderRecord::sign_sealed(&member, loud_key, 9, vec![1]).unwrap();
        let plain_quiet = ProviderRecord::sign(&member, quiet_key, 9);
        // Rendezvous requests: nothing.
        for body in [
            Request::FindNode { target: quiet_key },
            Request::GetProviders { key: quiet_key },
            Request::AddProvider {
                record: plain_quiet,
            },
            Request::AddProvider {
                record: sealed.clone(),
            },
        ] {
            assert_eq!(own(body.clone()), Hints::Nothing, "{body:?}");
        }
        // Everything else: our own address.
        for body in [
            Request::Ping,
            Request::FindNode { target: loud_key },
            Request::GetProviders { key: loud_key },
            Request::FindValue { key: quiet_key },
            Request::AddProvider {
                record: plain.clone(),
            },
        ] {
            assert_eq!(own(body.clone()), Hints::Named(vec![]), "{body:?}");
        }
        // A Providers response names its contacts and its unsealed providers only.
        let contact = Key([9; 32]);
        let response = Message::Response {
            id: 1,
            body: Response::Providers {
                providers: vec![sealed, plain.clone()],
                contacts: vec![contact],
            },
        };
        assert_eq!(
            hints_for(&response, is_quiet),
            Hints::Named(vec![contact.0, plain.provider])
        );
    }
}
