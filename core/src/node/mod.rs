//! [`Node`]: the facade that wires identity, store, groups and sync together.

mod events;
mod session;
mod types;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iroh::endpoint::{PortmapperConfig, presets};
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr, EndpointId, NetReportConfig, RelayMode, RelayUrl, SecretKey};
use iroh_tickets::endpoint::EndpointTicket;
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, broadcast, watch};

pub use events::Subscription;
pub use types::*;

use crate::crypto::{Secret32, aead, kdf};
use crate::error::{CoveyError, ErrorKind, Result};
use crate::group::{GroupId, GroupKeys, GroupKind};
use crate::keystore::{FileKeyStore, KeyStore};
use crate::store::{self, DirLock, GroupRow, Store};
use crate::sync::proto::SyncState;
use crate::sync::verify;
use crate::wire::entry::{ENTRY_VERSION, EntryHeader, EntryKind, Id32, SignedEntry};
use crate::wire::frame::Head;
use session::Sessions;

/// The ALPN of the sync protocol.
pub const SYNC_ALPN: &[u8] = b"covey/sync/1";
const DEVICE_KEY: &str = "device";
const MAX_NAME_BYTES: usize = 256;
const MAX_CLIENT_ID_BYTES: usize = 256;
const MAX_PAGE: u32 = 10_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug)]
struct GroupState {
    row: GroupRow,
    keys: GroupKeys,
    /// Highest lamport clock stored in the group, kept here so a publish needs no query.
    max_lamport: AtomicU64,
}

impl GroupState {
    fn new(row: GroupRow, keys: GroupKeys, max_lamport: u64) -> Self {
        Self {
            row,
            keys,
            max_lamport: AtomicU64::new(max_lamport),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    rejected_entries: AtomicU64,
    rejected_frames: AtomicU64,
    incompatible_peers: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SyncCounters {
        SyncCounters {
            published: self.published.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected_entries: self.rejected_entries.load(Ordering::Relaxed),
            rejected_frames: self.rejected_frames.load(Ordering::Relaxed),
            incompatible_peers: self.incompatible_peers.load(Ordering::Relaxed),
        }
    }
}

/// Shared state behind a [`Node`], reachable from its background tasks.
#[derive(Debug)]
struct Inner {
    config: NodeConfig,
    secret: SecretKey,
    id: EndpointId,
    store: Arc<Store>,
    groups: RwLock<HashMap<Id32, Arc<GroupState>>>,
    sessions: Sessions,
    /// Taken at shutdown, which ends every subscription.
    events: Mutex<Option<broadcast::Sender<Event>>>,
    counters: Counters,
    endpoint: Endpoint,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    paused: watch::Sender<bool>,
    redial: Notify,
    /// Remembered and bootstrap peers, each with one dial loop.
    dialing: Mutex<HashSet<EndpointId>>,
    /// Entries stored, all groups: counted once at open, then kept current.
    entry_count: AtomicU64,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    lock: Mutex<Option<DirLock>>,
}

/// An embedded Covey node. Open one per data dir; call [`Node::shutdown`] when done.
#[derive(Debug)]
pub struct Node {
    inner: Arc<Inner>,
    router: Router,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoveyError::internal(format!("blocking task failed: {e}")))?
}

fn parse_ticket(ticket: &str) -> Result<EndpointAddr> {
    let ticket = EndpointTicket::from_str(ticket.trim())
        .map_err(|e| CoveyError::invalid(format!("malformed address ticket: {e}")))?;
    Ok(ticket.endpoint_addr().clone())
}

fn load_or_create_identity(keys: &dyn KeyStore) -> Result<SecretKey> {
    match keys.load(DEVICE_KEY)? {
        Some(bytes) => {
            let secret = Secret32::from_slice(&bytes).ok_or_else(|| {
                CoveyError::crypto("stored device key is not 32 bytes; refusing to replace it")
            })?;
            Ok(SecretKey::from_bytes(secret.expose()))
        }
        None => {
            let secret = Secret32::random();
            keys.store(DEVICE_KEY, secret.expose())?;
            Ok(SecretKey::from_bytes(secret.expose()))
        }
    }
}

fn group_key_name(id: &GroupId) -> String {
    format!("group-{id}")
}

async fn bind_endpoint(config: &NodeConfig, secret: SecretKey) -> Result<Endpoint> {
    let mut builder = if config.nat_traversal {
        Endpoint::builder(presets::N0)
    } else {
        Endpoint::builder(presets::Minimal)
            .clear_address_lookup()
            .portmapper_config(PortmapperConfig::Disabled)
            .net_report_config(NetReportConfig::minimal())
    };
    builder = builder.secret_key(secret).alpns(vec![SYNC_ALPN.to_vec()]);
    builder = if config.relay_urls.is_empty() {
        builder.relay_mode(RelayMode::Disabled)
    } else {
        let urls = config
            .relay_urls
            .iter()
            .map(|u| {
                RelayUrl::from_str(u)
                    .map_err(|e| CoveyError::invalid(format!("bad relay url {u:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        builder.relay_mode(RelayMode::custom(urls))
    };
    if let Some(addr) = config.bind_addr {
        builder = builder
            .clear_ip_transports()
            .bind_addr(addr)
            .map_err(|e| CoveyError::invalid(format!("bad bind address {addr}: {e}")))?;
    }
    builder
        .bind()
        .await
        .map_err(|e| CoveyError::network(format!("cannot bind endpoint: {e}")))
}

impl Node {
    /// Opens the node in `config.data_dir`, creating it on first use, and starts syncing
    /// with remembered and bootstrap peers.
    pub async fn open(config: NodeConfig) -> Result<Self> {
        config.validate()?;
        for ticket in &config.bootstrap {
            parse_ticket(ticket)?;
        }
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| {
            CoveyError::storage(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let lock = DirLock::acquire(&dir)?;
        let key_store: Arc<dyn KeyStore> = match &config.key_store {
            Some(ks) => ks.clone(),
            None => Arc::new(FileKeyStore::new(&dir)),
        };
        let durability = config.durability;
        let (store, secret, groups, entry_count) = {
            let key_store = key_store.clone();
            let dir = dir.clone();
            blocking(move || {
                let store = Store::open(&dir, durability)?;
                let secret = load_or_create_identity(key_store.as_ref())?;
                let mut groups = HashMap::new();
                for row in store.read(store::groups)? {
                    let id = GroupId(row.group_id);
                    let Some(bytes) = key_store.load(&group_key_name(&id))? else {
                        log::warn!("group {id} has no secret in the key store; skipping it");
                        continue;
                    };
                    let root = Secret32::from_slice(&bytes).ok_or_else(|| {
                        CoveyError::crypto(format!("secret of group {id} is corrupt"))
                    })?;
                    let keys = GroupKeys::from_root(&root);
                    if keys.id != id {
                        return Err(CoveyError::crypto(format!(
                            "secret of group {id} derives another group id"
                        )));
                    }
                    let lamport = store.read(|c| store::max_lamport(c, &row.group_id))?;
                    groups.insert(row.group_id, Arc::new(GroupState::new(row, keys, lamport)));
                }
                let count = store.read(store::entry_count)?;
                Ok((Arc::new(store), secret, groups, count))
            })
            .await?
        };
        let endpoint = bind_endpoint(&config, secret.clone()).await?;
        let (events, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            id: secret.public(),
            secret,
            store,
            groups: RwLock::new(groups),
            sessions: Sessions::default(),
            events: Mutex::new(Some(events)),
            counters: Counters::default(),
            endpoint: endpoint.clone(),
            closed: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
            paused: watch::channel(false).0,
            redial: Notify::new(),
            dialing: Mutex::new(HashSet::new()),
            entry_count: AtomicU64::new(entry_count),
            tasks: Mutex::new(Vec::new()),
            lock: Mutex::new(Some(lock)),
            config,
        });
        let router = Router::builder(endpoint)
            .accept(SYNC_ALPN, session::SyncHandler::new(&inner))
            .spawn();
        let node = Node { inner, router };
        log::info!(
            "covey node {} open in {}",
            node.inner.id.fmt_short(),
            dir.display()
        );
        let remembered = node.inner.store_read(store::peers).await?;
        for ticket in remembered {
            match parse_ticket(&ticket) {
                Ok(addr) => node.inner.clone().spawn_dialer(addr),
                Err(e) => log::warn!("ignoring a remembered peer: {e}"),
            }
        }
        for ticket in node.inner.config.bootstrap.clone() {
            node.add_peer(&ticket).await?;
        }
        Ok(node)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(CoveyError::closed());
        }
        Ok(())
    }

    /// This node's id (its Ed25519 public key), stable across restarts.
    pub fn node_id(&self) -> EndpointId {
        self.inner.id
    }

    /// An address ticket others can pass to `add_peer` (any iroh tool can dial it).
    pub async fn addr(&self) -> Result<String> {
        self.check_open()?;
        Ok(EndpointTicket::new(self.inner.endpoint.addr()).to_string())
    }

    /// Connects to a peer by address ticket and remembers it for redial after restarts.
    pub async fn add_peer(&self, ticket: &str) -> Result<()> {
        self.check_open()?;
        let addr = parse_ticket(ticket)?;
        if addr.id == self.inner.id {
            return Err(CoveyError::invalid(
                "that ticket is this node's own address",
            ));
        }
        let canonical = EndpointTicket::new(addr.clone()).to_string();
        let id = *addr.id.as_bytes();
        self.inner
            .store_write(move |tx| store::put_peer(tx, &id, &canonical, now_ms()))
            .await?;
        self.inner.clone().spawn_dialer(addr);
        Ok(())
    }

    /// The node's state and counters.
    /// Answered from memory, without touching the database, so apps can poll it cheaply.
    pub async fn status(&self) -> Result<NodeStatus> {
        self.check_open()?;
        let known_peers = self
            .inner
            .dialing
            .lock()
            .map(|d| d.len() as u32)
            .unwrap_or(0);
        Ok(NodeStatus {
            node_id: self.inner.id,
            connected_peers: self.inner.sessions.peers(),
            known_peers,
            groups: self.inner.groups_read()?.len() as u32,
            entries: self.inner.entry_count.load(Ordering::Relaxed),
            paused: *self.inner.paused.borrow(),
            counters: self.inner.counters.snapshot(),
        })
    }

    /// Events from now on, until the subscription is dropped.
    pub fn subscribe(&self) -> Subscription {
        let rx = match self.inner.events.lock() {
            Ok(events) => events.as_ref().map(|tx| tx.subscribe()),
            Err(_) => None,
        };
        Subscription::new(rx)
    }

    /// Joins (or re-opens) the passphrase group `name`: the same passphrase and name give the
    /// same group on every device. Key derivation is deliberately slow (Argon2id, 64 MiB).
    pub async fn join_passphrase(&self, passphrase: &str, name: &str) -> Result<GroupInfo> {
        self.check_open()?;
        if passphrase.is_empty() {
            return Err(CoveyError::invalid("passphrase must not be empty"));
        }
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(CoveyError::invalid(format!(
                "group name must be 1 to {MAX_NAME_BYTES} bytes"
            )));
        }
        let passphrase = zeroize::Zeroizing::new(passphrase.to_owned());
        let root = blocking({
            let name = name.to_owned();
            move || kdf::passphrase_root(&passphrase, &name)
        })
        .await?;
        let keys = GroupKeys::from_root(&root);
        let id = keys.id;
        let row = GroupRow {
            group_id: id.0,
            name: name.to_owned(),
            kind: GroupKind::Passphrase.to_byte(),
            epoch: 0,
        };
        let already = self.inner.groups_read()?.contains_key(&id.0);
        if !already {
            let key_store = self.key_store();
            let row2 = row.clone();
            let store = self.inner.store.clone();
            blocking(move || {
                key_store.store(&group_key_name(&id), root.expose())?;
                store.write(|tx| store::insert_group(tx, &row2, now_ms()))
            })
            .await?;
            self.inner
                .groups_write()?
                .insert(id.0, Arc::new(GroupState::new(row, keys, 0)));
            self.inner.emit(Event::GroupChanged {
                group_id: id,
                epoch: 0,
            });
            let inner = self.inner.clone();
            let view = inner.snapshot(vec![id.0]).await?;
            inner.sessions.each(|s| s.on_group_joined(id.0, &view));
        }
        self.group_info(&id).await
    }

    fn key_store(&self) -> Arc<dyn KeyStore> {
        match &self.inner.config.key_store {
            Some(ks) => ks.clone(),
            None => Arc::new(FileKeyStore::new(&self.inner.config.data_dir)),
        }
    }

    async fn group_info(&self, id: &GroupId) -> Result<GroupInfo> {
        let state = self.inner.group(id)?;
        let gid = id.0;
        let me = *self.inner.id.as_bytes();
        let authors = self
            .inner
            .store_read(move |c| store::authors(c, &gid))
            .await?;
        let count = authors.len() + usize::from(!authors.contains(&me));
        Ok(GroupInfo {
            group_id: *id,
            name: state.row.name.clone(),
            epoch: state.row.epoch,
            kind: GroupKind::from_byte(state.row.kind)?,
            member_count: count as u32,
        })
    }

    /// Every joined group.
    pub async fn groups(&self) -> Result<Vec<GroupInfo>> {
        self.check_open()?;
        let mut ids: Vec<(String, GroupId)> = self
            .inner
            .groups_read()?
            .values()
            .map(|g| (g.row.name.clone(), g.keys.id))
            .collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for (_, id) in ids {
            out.push(self.group_info(&id).await?);
        }
        Ok(out)
    }

    /// Members of a group known to this node: every author seen, and this node.
    pub async fn members(&self, group_id: &GroupId) -> Result<Vec<Member>> {
        self.check_open()?;
        self.inner.group(group_id)?;
        let gid = group_id.0;
        let heads = self
            .inner
            .store_read(move |c| store::frontier(c, &gid))
            .await?;
        let me = self.inner.id;
        let mut out: Vec<Member> = heads
            .iter()
            .filter_map(|h| {
                iroh::PublicKey::from_bytes(&h.author)
                    .ok()
                    .map(|node_id| Member {
                        node_id,
                        is_self: node_id == me,
                        last_seq: h.seq,
                    })
            })
            .collect();
        if !out.iter().any(|m| m.is_self) {
            out.push(Member {
                node_id: me,
                is_self: true,
                last_seq: 0,
            });
        }
        Ok(out)
    }

    /// Publishes `payload` to a group. Returns once the entry is durable locally; peers get it
    /// in the background. A repeated `client_id` returns the first entry's meta; the same
    /// `client_id` with a different payload fails with `IdempotencyConflict`.
    pub async fn publish(
        &self,
        group_id: &GroupId,
        payload: &[u8],
        client_id: Option<&str>,
    ) -> Result<EntryMeta> {
        self.check_open()?;
        let limit = self.inner.config.max_payload_bytes;
        if payload.len() > limit {
            return Err(CoveyError::invalid(format!(
                "payload is {} bytes, over the {limit}-byte limit",
                payload.len()
            )));
        }
        if let Some(cid) = client_id
            && (cid.is_empty() || cid.len() > MAX_CLIENT_ID_BYTES)
        {
            return Err(CoveyError::invalid(format!(
                "client_id must be 1 to {MAX_CLIENT_ID_BYTES} bytes"
            )));
        }
        let group = self.inner.group(group_id)?;
        let inner = self.inner.clone();
        let payload = payload.to_vec();
        let client_id = client_id.map(str::to_owned);
        let (cursor, entry, fresh) = blocking(move || {
            inner.write_counting(|tx| {
                let out = publish_in(tx, &inner, &group, &payload, client_id.as_deref())?;
                Ok((u64::from(out.2), out))
            })
        })
        .await?;
        let meta = meta_of(cursor, &entry)?;
        if fresh {
            self.inner
                .counters
                .published
                .fetch_add(1, Ordering::Relaxed);
            let h = entry.header();
            let (g, a, s) = (h.group_id, h.author, h.seq);
            self.inner
                .sessions
                .each(|sess| sess.on_local_entry(g, a, s));
        }
        Ok(meta)
    }

    /// Entries of a group after `after_cursor` in local order, oldest first, at most `limit`.
    pub async fn entries(
        &self,
        group_id: &GroupId,
        after_cursor: u64,
        limit: u32,
    ) -> Result<Vec<Entry>> {
        self.check_open()?;
        if limit == 0 || limit > MAX_PAGE {
            return Err(CoveyError::invalid(format!(
                "limit must be 1 to {MAX_PAGE}"
            )));
        }
        let group = self.inner.group(group_id)?;
        let gid = group_id.0;
        let rows = self
            .inner
            .store_read(move |c| store::entries_after(c, &gid, after_cursor, limit))
            .await?;
        rows.into_iter()
            .map(|row| open_row(row, &group.keys))
            .collect()
    }

    /// One entry by id, or `None`.
    pub async fn entry(&self, group_id: &GroupId, entry_id: &EntryId) -> Result<Option<Entry>> {
        self.check_open()?;
        let group = self.inner.group(group_id)?;
        let (gid, eid) = (group_id.0, entry_id.0);
        let row = self
            .inner
            .store_read(move |c| store::entry_by_id(c, &gid, &eid))
            .await?;
        row.map(|r| open_row(r, &group.keys)).transpose()
    }

    /// Stops syncing (for an app going to the background): closes sessions, refuses new ones
    /// and stops redialing until [`Node::resume`].
    pub async fn pause(&self) -> Result<()> {
        self.check_open()?;
        self.inner.paused.send_replace(true);
        self.inner.sessions.close_all("paused");
        Ok(())
    }

    /// Resumes syncing after [`Node::pause`].
    pub async fn resume(&self) -> Result<()> {
        self.check_open()?;
        self.inner.paused.send_replace(false);
        self.inner.redial.notify_waiters();
        Ok(())
    }

    /// Tells the node the network changed (Wi-Fi to cellular, say): rebinds paths and redials
    /// peers now instead of after their backoff.
    pub async fn network_changed(&self) -> Result<()> {
        self.check_open()?;
        self.inner.endpoint.network_change().await;
        self.inner.redial.notify_waiters();
        Ok(())
    }

    /// Closes sessions, stops background work, checkpoints the database and releases the
    /// data dir lock. Later calls fail with `Closed`. Calling it twice is fine.
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.shutdown.send_replace(true);
        self.inner.sessions.close_all("shutting down");
        if let Err(e) = self.router.shutdown().await {
            log::warn!("router shutdown: {e}");
        }
        let tasks: Vec<_> = match self.inner.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        self.inner.sessions.clear();
        let store = self.inner.store.clone();
        if let Err(e) = blocking(move || store.checkpoint()).await {
            // The WAL is durable on its own; a failed checkpoint only leaves it un-merged.
            log::warn!("wal checkpoint at shutdown failed: {e}");
        }
        self.inner.close_events();
        if let Ok(mut lock) = self.inner.lock.lock() {
            lock.take();
        }
        log::info!("covey node {} shut down", self.inner.id.fmt_short());
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Without an explicit shutdown, at least stop the background tasks.
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.send_replace(true);
        if let Ok(tasks) = self.inner.tasks.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
        self.inner.sessions.close_all("node dropped");
        self.inner.close_events();
    }
}

fn publish_in(
    tx: &rusqlite::Transaction<'_>,
    inner: &Inner,
    group: &GroupState,
    payload: &[u8],
    client_id: Option<&str>,
) -> Result<(u64, SignedEntry, bool)> {
    let gid = group.keys.id.0;
    let mac = group.keys.payload_mac(payload);
    if let Some(cid) = client_id
        && let Some((entry_id, stored_mac)) = store::client_id(tx, &gid, cid)?
    {
        if !bool::from(stored_mac.as_slice().ct_eq(&mac)) {
            return Err(CoveyError::new(
                ErrorKind::IdempotencyConflict,
                format!("client_id {cid:?} was already used with a different payload"),
            ));
        }
        let row = store::entry_by_id(tx, &gid, &entry_id)?
            .ok_or_else(|| CoveyError::storage("client_id refers to a missing entry"))?;
        let entry = SignedEntry::decode(row.raw, usize::MAX)
            .map_err(|e| CoveyError::storage(format!("corrupt stored entry: {e}")))?;
        return Ok((row.cursor, entry, false));
    }
    let me = *inner.id.as_bytes();
    let (seq, prev) = match store::head(tx, &gid, &me)? {
        Some((seq, id)) => (seq + 1, id),
        None => (1, [0u8; 32]),
    };
    let header = EntryHeader {
        version: ENTRY_VERSION,
        kind: EntryKind::Data,
        group_id: gid,
        author: me,
        seq,
        prev,
        // Capped so every honest clock stays within what peers accept.
        lamport: (group.max_lamport.load(Ordering::Acquire) + 1).min(verify::MAX_LAMPORT),
        epoch: group.row.epoch,
        timestamp_ms: now_ms(),
        nonce: aead::random_nonce(),
    };
    let entry = SignedEntry::seal(header, &group.keys.content_key, &inner.secret, payload)?;
    let cursor = store::insert_entry(tx, &entry)?;
    // Raised before commit; if the commit fails the clock is merely ahead, which is harmless.
    group
        .max_lamport
        .fetch_max(entry.header().lamport, Ordering::AcqRel);
    if let Some(cid) = client_id {
        store::put_client_id(tx, &gid, cid, entry.id(), &mac)?;
    }
    Ok((cursor, entry, true))
}

fn meta_of(cursor: u64, entry: &SignedEntry) -> Result<EntryMeta> {
    let h = entry.header();
    Ok(EntryMeta {
        cursor,
        entry_id: EntryId(*entry.id()),
        group_id: GroupId(h.group_id),
        author: iroh::PublicKey::from_bytes(&h.author)
            .map_err(|_| CoveyError::storage("stored entry has an invalid author"))?,
        seq: h.seq,
        lamport: h.lamport,
        timestamp_ms: h.timestamp_ms,
    })
}

fn open_row(row: store::StoredRow, keys: &GroupKeys) -> Result<Entry> {
    let entry = SignedEntry::decode(row.raw, usize::MAX)
        .map_err(|e| CoveyError::storage(format!("corrupt stored entry: {e}")))?;
    let payload = entry.open(&keys.content_key)?;
    Ok(Entry {
        meta: meta_of(row.cursor, &entry)?,
        payload: payload.to_vec(),
    })
}

/// A read-only picture of local state for the sans-IO session.
#[derive(Debug, Default)]
struct Snapshot {
    groups: HashSet<Id32>,
    frontiers: HashMap<Id32, Vec<Head>>,
}

impl crate::sync::proto::LocalView for Snapshot {
    fn has_group(&self, group: &Id32) -> bool {
        self.groups.contains(group)
    }

    fn groups(&self) -> Vec<Id32> {
        let mut v: Vec<_> = self.groups.iter().copied().collect();
        v.sort();
        v
    }

    fn frontier(&self, group: &Id32) -> Vec<Head> {
        self.frontiers.get(group).cloned().unwrap_or_default()
    }
}

impl Inner {
    fn emit(&self, event: Event) {
        // No subscribers is fine: events are a notification, the store is the truth.
        if let Ok(events) = self.events.lock()
            && let Some(tx) = events.as_ref()
        {
            let _ = tx.send(event);
        }
    }

    /// Counts refused entries and reports them as one `rejected-entry` warning per batch (not
    /// per entry: a frame of tiny bad entries must not become a flood of events and logs).
    fn report_rejected(&self, peer: EndpointId, reasons: &[(&str, usize)], first_detail: &str) {
        let total: usize = reasons.iter().map(|(_, n)| n).sum();
        self.counters
            .rejected_entries
            .fetch_add(total as u64, Ordering::Relaxed);
        let summary: Vec<String> = reasons.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        self.warn(
            "rejected-entry",
            format!(
                "from {}: rejected {total} entries ({}); first: {first_detail}",
                peer.fmt_short(),
                summary.join(", ")
            ),
        );
    }

    /// Runs a write transaction that stores `n` entries (as `f` reports) and keeps
    /// `entry_count` in step: raised before the commit, so `status()` never shows fewer entries
    /// than a reader can already see, and lowered again if the commit fails.
    fn write_counting<T>(
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

    fn close_events(&self) {
        if let Ok(mut events) = self.events.lock() {
            events.take();
        }
    }

    fn warn(&self, kind: &str, message: String) {
        log::warn!("{kind}: {message}");
        self.emit(Event::Warning {
            kind: kind.to_owned(),
            message,
        });
    }

    fn groups_read(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, HashMap<Id32, Arc<GroupState>>>> {
        self.groups
            .read()
            .map_err(|_| CoveyError::internal("group table lock poisoned"))
    }

    fn groups_write(
        &self,
    ) -> Result<std::sync::RwLockWriteGuard<'_, HashMap<Id32, Arc<GroupState>>>> {
        self.groups
            .write()
            .map_err(|_| CoveyError::internal("group table lock poisoned"))
    }

    fn group(&self, id: &GroupId) -> Result<Arc<GroupState>> {
        self.groups_read()?
            .get(&id.0)
            .cloned()
            .ok_or_else(|| CoveyError::not_found(format!("no group {id} on this node")))
    }

    async fn store_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        blocking(move || store.read(f)).await
    }

    async fn store_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        blocking(move || store.write(f)).await
    }

    /// Group membership and the frontiers of `load` for a session to read.
    async fn snapshot(&self, load: Vec<Id32>) -> Result<Snapshot> {
        let groups: HashSet<Id32> = self.groups_read()?.keys().copied().collect();
        let load: Vec<Id32> = load.into_iter().filter(|g| groups.contains(g)).collect();
        let frontiers = if load.is_empty() {
            HashMap::new()
        } else {
            self.store_read(move |c| {
                load.into_iter()
                    .map(|g| Ok((g, store::frontier(c, &g)?)))
                    .collect::<Result<HashMap<_, _>>>()
            })
            .await?
        };
        Ok(Snapshot { groups, frontiers })
    }

    /// Verifies and stores a batch from `peer`; reports, counts and fans out the result.
    /// Returns the heads now held for the batch's authors and the group's new frontier.
    async fn ingest(
        self: &Arc<Self>,
        peer: EndpointId,
        group: Id32,
        entries: Vec<Vec<u8>>,
    ) -> Result<(Vec<Head>, Snapshot)> {
        let state = self
            .groups_read()?
            .get(&group)
            .cloned()
            .ok_or_else(|| CoveyError::not_found("entries for a group this node left"))?;
        let rules = verify::Rules {
            group_id: group,
            epoch: state.row.epoch,
            max_ciphertext: self.config.max_payload_bytes + aead::TAG_LEN,
        };
        let keys = state.clone();
        let inner = self.clone();
        let (outcome, frontier) = blocking(move || {
            inner.write_counting(|tx| {
                let outcome =
                    verify::ingest_as_member(tx, &rules, Some(&keys.keys.content_key), entries)?;
                let frontier = store::frontier(tx, &group)?;
                Ok((outcome.stored.len() as u64, (outcome, frontier)))
            })
        })
        .await?;
        let c = &self.counters;
        c.received
            .fetch_add(outcome.stored.len() as u64, Ordering::Relaxed);
        c.duplicates
            .fetch_add(outcome.duplicates, Ordering::Relaxed);
        if let Some(first) = outcome.rejected.first() {
            let mut reasons: Vec<(&str, usize)> = Vec::new();
            for r in &outcome.rejected {
                match reasons.iter_mut().find(|(k, _)| *k == r.reason) {
                    Some((_, n)) => *n += 1,
                    None => reasons.push((r.reason, 1)),
                }
            }
            self.report_rejected(peer, &reasons, &first.detail);
        }
        let mut newest: HashMap<Id32, u64> = HashMap::new();
        for (cursor, entry) in &outcome.stored {
            let h = entry.header();
            state.max_lamport.fetch_max(h.lamport, Ordering::AcqRel);
            let seq = newest.entry(h.author).or_insert(0);
            *seq = (*seq).max(h.seq);
            if let Ok(author) = iroh::PublicKey::from_bytes(&h.author) {
                self.emit(Event::EntryReceived {
                    group_id: GroupId(group),
                    cursor: *cursor,
                    entry_id: EntryId(*entry.id()),
                    author,
                });
            }
        }
        let held: Vec<Head> = newest
            .iter()
            .map(|(author, seq)| Head {
                author: *author,
                seq: *seq,
            })
            .collect();
        let mut view = Snapshot {
            groups: self.groups_read()?.keys().copied().collect(),
            frontiers: HashMap::new(),
        };
        view.frontiers.insert(group, frontier);
        Ok((held, view))
    }

    fn spawn_dialer(self: Arc<Self>, addr: EndpointAddr) {
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
        let task = tokio::spawn(async move { session::dial_loop(inner, addr).await });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    fn sync_state_changed(&self, group: Id32, state: SyncState) {
        self.emit(Event::SyncStateChanged {
            group_id: GroupId(group),
            state,
        });
    }
}

/// Backoff for redialing a peer: doubles from `BACKOFF_MIN` up to `BACKOFF_MAX`, with jitter.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
