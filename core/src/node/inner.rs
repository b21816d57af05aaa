//! The state behind a [`super::Node`], shared with its background tasks.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use iroh::{Endpoint, EndpointAddr, EndpointId, SecretKey};
use tokio::sync::{Notify, broadcast, watch};

use super::managed::ManagedState;
use super::sync_driver::{self, Sessions};
use super::types::{EntryId, Event, NodeConfig, SyncCounters};
use crate::crypto::aead;
use crate::error::{CoveyError, Result};
use crate::group::admission::{EpochKeys, ManagedBatch, MemberContext};
use crate::group::seal::DeviceKey;
use crate::group::{GroupId, GroupKeys};
use crate::keystore::KeyStore;
use crate::store::{DirLock, GroupRow, Store};
use crate::sync::WarnKind;
use crate::sync::driver::Counter;
use crate::sync::engine::{self, Snapshot};
use crate::sync::session::SyncState;
use crate::sync::verify;
use crate::wire::entry::Id32;

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs blocking work (SQLite, Argon2id, key stores) on tokio's blocking pool, off the async
/// threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoveyError::internal(format!("blocking task failed: {e}")))?
}

/// A background task's view of the node's shutdown and pause switches.
pub(super) struct Lifecycle {
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) paused: watch::Receiver<bool>,
}

impl Lifecycle {
    pub(super) fn new(inner: &Inner) -> Self {
        Self {
            shutdown: inner.shutdown.subscribe(),
            paused: inner.paused.subscribe(),
        }
    }

    /// Waits out a pause. False once the node is shutting down: the task should end.
    pub(super) async fn running(&mut self) -> bool {
        loop {
            if *self.shutdown.borrow() {
                return false;
            }
            if !*self.paused.borrow() {
                return true;
            }
            tokio::select! {
                _ = self.paused.changed() => {}
                _ = self.shutdown.changed() => {}
            }
        }
    }
}

/// A joined group: its stored row, its keys, and the clock a publish needs.
#[derive(Debug)]
pub(super) struct GroupState {
    pub(super) row: GroupRow,
    /// The keys of the current epoch (the one this node publishes in).
    pub(super) keys: GroupKeys,
    /// Highest lamport clock stored in the group, kept here so a publish needs no query.
    pub(super) max_lamport: AtomicU64,
    /// The content key of every epoch this node holds, to read entries of any of them.
    pub(super) epoch_keys: EpochKeys,
    /// A managed group's membership and secrets; `None` for a passphrase group.
    pub(super) managed: Option<ManagedState>,
}

impl GroupState {
    /// A passphrase group's state: one epoch, no membership.
    pub(super) fn new(row: GroupRow, keys: GroupKeys, max_lamport: u64) -> Self {
        let epoch_keys = EpochKeys::from([(0, vec![keys.content_key.clone()])]);
        Self {
            row,
            keys,
            max_lamport: AtomicU64::new(max_lamport),
            epoch_keys,
            managed: None,
        }
    }

    /// Whether `peer` may sync this group with this node: anyone holding a passphrase
    /// group's keys; a member in the group now for a managed one.
    pub(super) fn admits(&self, peer: &Id32) -> bool {
        self.managed
            .as_ref()
            .is_none_or(|m| m.membership.is_active(peer))
    }
}

/// What the sync layer has seen since the node opened, reported by `status()`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) published: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) rejected_entries: AtomicU64,
    pub(super) rejected_frames: AtomicU64,
    pub(super) incompatible_peers: AtomicU64,
    pub(super) replayed: AtomicU64,
    pub(super) dropped_frames: AtomicU64,
    pub(super) rate_limited: AtomicU64,
    pub(super) peer_timeouts: AtomicU64,
}

impl Counters {
    /// Adds to the counter the sync driver names.
    pub(super) fn add(&self, counter: Counter, by: u64) {
        let cell = match counter {
            Counter::Received => &self.received,
            Counter::Duplicates => &self.duplicates,
            Counter::RejectedEntries => &self.rejected_entries,
            Counter::RejectedFrames => &self.rejected_frames,
            Counter::IncompatiblePeers => &self.incompatible_peers,
            Counter::Replayed => &self.replayed,
            Counter::DroppedFrames => &self.dropped_frames,
            Counter::RateLimited => &self.rate_limited,
            Counter::PeerTimeouts => &self.peer_timeouts,
        };
        cell.fetch_add(by, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> SyncCounters {
        SyncCounters {
            published: self.published.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected_entries: self.rejected_entries.load(Ordering::Relaxed),
            rejected_frames: self.rejected_frames.load(Ordering::Relaxed),
            incompatible_peers: self.incompatible_peers.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            dropped_frames: self.dropped_frames.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            peer_timeouts: self.peer_timeouts.load(Ordering::Relaxed),
        }
    }
}

/// Shared state behind a [`Node`], reachable from its background tasks.
#[derive(Debug)]
pub(super) struct Inner {
    /// When the node opened: the zero of the monotonic clock sessions run on.
    pub(super) started: std::time::Instant,
    pub(super) config: NodeConfig,
    /// Where secrets live: the app's key store, or 0600 files in the data dir.
    pub(super) key_store: Arc<dyn KeyStore>,
    pub(super) secret: SecretKey,
    /// This device's X25519 key: epoch secrets and invite welcomes are sealed to it.
    pub(super) device: DeviceKey,
    /// Short codes of the invites this node issued, by nameplate; in memory only, so a code
    /// is answered only while this node runs.
    pub(super) code_invites: Mutex<HashMap<String, super::invite::CodeInvite>>,
    /// Managed groups this node is leaving (its own `leave` published, its data not yet
    /// deleted).
    pub(super) leaving: Mutex<HashSet<Id32>>,
    /// Managed groups whose epoch this node is healing (a `rotate` on its way).
    pub(super) healing: Mutex<HashSet<Id32>>,
    pub(super) id: EndpointId,
    pub(super) store: Arc<Store>,
    pub(super) groups: RwLock<HashMap<Id32, Arc<GroupState>>>,
    pub(super) sessions: Sessions,
    /// Taken at shutdown, which ends every subscription.
    pub(super) events: Mutex<Option<broadcast::Sender<Event>>>,
    pub(super) counters: Counters,
    pub(super) endpoint: Endpoint,
    pub(super) closed: AtomicBool,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) paused: watch::Sender<bool>,
    pub(super) redial: Notify,
    /// Wakes the rendezvous task (a group was joined).
    pub(super) rendezvous: Notify,
    /// Group members found through a rendezvous and dialed.
    pub(super) rendezvous_found: AtomicU64,
    /// Remembered and bootstrap peers, each with one dial loop.
    pub(super) dialing: Mutex<HashSet<EndpointId>>,
    /// Entries stored, all groups: counted once at open, then kept current.
    pub(super) entry_count: AtomicU64,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(super) lock: Mutex<Option<DirLock>>,
    /// The DHT driver (ALPN `covey/dht/2`).
    pub(super) dht: super::dht_driver::DhtDriver,
}

impl Inner {
    pub(super) fn emit(&self, event: Event) {
        // No subscribers is fine: events are a notification, the store is the truth.
        if let Ok(events) = self.events.lock()
            && let Some(tx) = events.as_ref()
        {
            let _ = tx.send(event);
        }
    }

    /// Runs a write transaction that stores `n` entries (as `f` reports) and keeps
    /// `entry_count` in step: raised before the commit, so `status()` never shows fewer entries
    /// than a reader can already see, and lowered again if the commit fails.
    pub(super) fn write_counting<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(u64, T)>,
    ) -> Result<T> {
        let mut added = 0;
        let result = self.store.write(|tx| {
            let (n, out) = f(tx)?;
            added = n;
            self.entry_count.fetch_add(n, Ordering::AcqRel);
            Ok(out)
        });
        if result.is_err() {
            self.entry_count.fetch_sub(added, Ordering::AcqRel);
        }
        result
    }

    pub(super) fn close_events(&self) {
        if let Ok(mut events) = self.events.lock() {
            events.take();
        }
    }

    /// Milliseconds since the node opened, monotonic: the clock sync sessions run on.
    pub(super) fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) fn warn(&self, kind: WarnKind, message: String) {
        log::warn!("{kind}: {message}");
        self.emit(Event::Warning {
            kind: kind.as_str().to_owned(),
            message,
        });
    }

    pub(super) fn groups_read(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, HashMap<Id32, Arc<GroupState>>>> {
        self.groups
            .read()
            .map_err(|_| CoveyError::internal("group table lock poisoned"))
    }

    pub(super) fn groups_write(
        &self,
    ) -> Result<std::sync::RwLockWriteGuard<'_, HashMap<Id32, Arc<GroupState>>>> {
        self.groups
            .write()
            .map_err(|_| CoveyError::internal("group table lock poisoned"))
    }

    pub(super) fn group(&self, id: &GroupId) -> Result<Arc<GroupState>> {
        self.groups_read()?
            .get(&id.0)
            .cloned()
            .ok_or_else(|| CoveyError::not_found(format!("no group {id} on this node")))
    }

    pub(super) async fn store_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        blocking(move || store.read(f)).await
    }

    pub(super) async fn store_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        blocking(move || store.write(f)).await
    }

    /// Group membership and the frontiers of `load` for a session to read.
    pub(super) async fn snapshot(&self, load: Vec<Id32>) -> Result<Snapshot> {
        let joined: BTreeSet<Id32> = self.groups_read()?.keys().copied().collect();
        if !load.iter().any(|g| joined.contains(g)) {
            return Ok(Snapshot {
                groups: joined,
                frontiers: Default::default(),
            });
        }
        self.store_read(move |c| engine::snapshot(c, &joined, &load))
            .await
    }

    /// The verification rules and content key of a joined group.
    fn ingest_rules(&self, group: Id32) -> Result<(Arc<GroupState>, verify::Rules)> {
        let state = self
            .groups_read()?
            .get(&group)
            .cloned()
            .ok_or_else(|| CoveyError::not_found("entries for a group this node left"))?;
        let rules = verify::Rules::of(&state.keys, self.config.max_payload_bytes + aead::TAG_LEN);
        Ok((state, rules))
    }

    /// Decodes a batch from a peer and tries its payloads (`verify::prepare`), on the
    /// blocking pool and outside any transaction.
    pub(super) async fn prepare_batch(
        self: &Arc<Self>,
        group: Id32,
        entries: Vec<Vec<u8>>,
    ) -> Result<verify::Prepared> {
        let (state, rules) = self.ingest_rules(group)?;
        let inner = self.clone();
        blocking(move || {
            let Some(managed) = &state.managed else {
                return Ok(verify::prepare(
                    &rules,
                    Some(&state.keys.content_key),
                    entries,
                ));
            };
            // A managed group admits entries by membership, folded with the batch's own
            // control entries, and opens each under its epoch's key.
            let context = MemberContext {
                keys: &state.keys,
                creator: managed.creator,
                stored: &managed.records,
                epoch_keys: &state.epoch_keys,
                device: &inner.device,
                me: *inner.id.as_bytes(),
            };
            let batch = ManagedBatch::new(&context, &entries, rules.max_ciphertext);
            let rules = verify::Rules {
                epoch: batch.max_epoch(),
                ..rules
            };
            Ok(verify::prepare_admitted(&rules, &batch, entries))
        })
        .await
    }

    /// Verifies and stores a prepared batch from a peer and returns the outcome for the
    /// session's driver (which counts and reports it); [`Inner::announce_received`] then
    /// raises the events.
    pub(super) async fn ingest(
        self: &Arc<Self>,
        group: Id32,
        batch: verify::Prepared,
        held: &mut verify::Unverified,
    ) -> Result<engine::Ingested> {
        let (state, rules) = self.ingest_rules(group)?;
        let inner = self.clone();
        let mut session_held = std::mem::take(held);
        // The same verification and bookkeeping the simulator runs (`sync::engine`).
        let (done, session_held) = blocking(move || {
            let done = inner.write_counting(|tx| {
                let done = engine::ingest_prepared(tx, &rules, batch, &mut session_held)?;
                Ok((done.outcome.stored.len() as u64, done))
            });
            Ok((done, session_held))
        })
        .await?;
        // On a failed store the session ends, and what it held goes with it.
        *held = session_held;
        let done = done?;
        state
            .max_lamport
            .fetch_max(done.max_lamport, Ordering::AcqRel);
        if state.managed.is_some()
            && done
                .outcome
                .stored
                .iter()
                .any(|(_, e)| super::managed::is_control(e))
        {
            self.refresh_managed(group).await?;
        }
        Ok(done)
    }

    /// Offers a group this node just joined to every live session whose peer the group
    /// admits (each proves it and announces it, as far as the peer has proved it too).
    pub(super) async fn offer_group(&self, group: Id32) -> Result<()> {
        let view = self.snapshot(vec![group]).await?;
        let me = *self.id.as_bytes();
        let state = self.group(&GroupId(group))?;
        self.sessions.each(|s, peer| {
            if state.admits(peer.as_bytes()) {
                s.on_group_joined(group, state.keys.pair(&me, peer.as_bytes()), &view);
            }
        });
        Ok(())
    }

    /// Raises `EntryReceived` for each entry a batch stored.
    pub(super) fn announce_received(&self, group: Id32, done: &engine::Ingested) {
        // Decompressing an Ed25519 point costs microseconds: once per author, not per entry.
        let mut keys: HashMap<Id32, Option<iroh::PublicKey>> = HashMap::new();
        for (cursor, entry) in &done.outcome.stored {
            let h = entry.header();
            let key = *keys
                .entry(h.author)
                .or_insert_with(|| iroh::PublicKey::from_bytes(&h.author).ok());
            if let Some(author) = key {
                self.emit(Event::EntryReceived {
                    group_id: GroupId(group),
                    cursor: *cursor,
                    entry_id: EntryId(*entry.id()),
                    author,
                });
            }
        }
    }

    /// Keeps `task` so shutdown can stop it.
    pub(super) fn track(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    pub(super) fn spawn_dialer(self: Arc<Self>, addr: EndpointAddr) {
        let peer = addr.id;
        match self.dialing.lock() {
            Ok(mut dialing) => {
                if !dialing.insert(peer) {
                    return;
                }
            }
            Err(_) => return,
        }
        let inner = self.clone();
        let task = tokio::spawn(async move { sync_driver::dial_loop(inner, addr).await });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    pub(super) fn sync_state_changed(&self, group: Id32, state: SyncState) {
        self.emit(Event::SyncStateChanged {
            group_id: GroupId(group),
            state,
        });
    }
}
