//! [`Node`]: the facade that wires identity, store, groups and sync together.

mod delivery;
mod dht_api;
mod dht_driver;
mod events;
mod inner;
mod invite;
mod managed;
mod publish;
mod rendezvous;
mod setup;
mod sync_driver;
mod types;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use iroh::EndpointId;
use iroh::protocol::Router;
use iroh_tickets::endpoint::EndpointTicket;
use tokio::sync::{Notify, broadcast, watch};

pub use delivery::Delivery;
pub use dht_api::DhtRecord;
pub use dht_driver::DHT_ALPN;
pub use events::Subscription;
pub use types::*;

use crate::crypto::{Secret32, kdf};
use crate::error::{CoveyError, Result};
use crate::group::invite::INVITE_ALPN;
use crate::group::{GroupId, GroupKeys, GroupKind};
use crate::keystore::{FileKeyStore, KeyStore};
use crate::store::{self, DirLock, GroupRow, Store};
use crate::wire::entry::Id32;
use inner::{Counters, GroupState, Inner, blocking, now_ms};
use publish::{meta_of, open_row, publish_in};
use setup::{bind_endpoint, group_key_name, load_or_create_identity, parse_ticket};
use sync_driver::Sessions;

/// The ALPN of the sync protocol.
pub const SYNC_ALPN: &[u8] = b"covey/sync/1";
const MAX_NAME_BYTES: usize = 256;
const MAX_CLIENT_ID_BYTES: usize = 256;
const MAX_PAGE: u32 = 10_000;

/// Refuses a group name that is not 1 to [`MAX_NAME_BYTES`] bytes.
fn check_group_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(CoveyError::invalid(format!(
            "group name must be 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

/// An embedded Covey node. Open one per data dir; call [`Node::shutdown`] when done.
#[derive(Debug)]
pub struct Node {
    inner: Arc<Inner>,
    router: Router,
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
        let (store, secret, device, groups, entry_count) = {
            let key_store = key_store.clone();
            let dir = dir.clone();
            blocking(move || {
                let store = Store::open(&dir, durability)?;
                let secret = load_or_create_identity(key_store.as_ref())?;
                let device = managed::load_or_create_device_key(key_store.as_ref())?;
                let mut groups = HashMap::new();
                for row in store.read(store::groups)? {
                    let id = GroupId(row.group_id);
                    let bytes = match key_store.load(&group_key_name(&id))? {
                        Some(bytes) if !bytes.is_empty() => bytes,
                        _ => {
                            log::warn!("group {id} has no secret in the key store; skipping it");
                            continue;
                        }
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
                    let state = if GroupKind::from_byte(row.kind)? == GroupKind::Managed {
                        let gid = row.group_id;
                        let (creator, raws) = store.read(|c| {
                            Ok((store::creator(c, &gid)?, managed::stored_controls(c, &gid)?))
                        })?;
                        let creator = creator.ok_or_else(|| {
                            CoveyError::storage(format!("managed group {id} has no creator"))
                        })?;
                        let holder = managed::Holder {
                            key_store: key_store.as_ref(),
                            device: &device,
                            me: *secret.public().as_bytes(),
                        };
                        managed::build_managed(&holder, row, root, creator, raws, lamport)?
                    } else {
                        GroupState::new(row, keys, lamport)
                    };
                    groups.insert(state.row.group_id, Arc::new(state));
                }
                let count = store.read(store::entry_count)?;
                Ok((Arc::new(store), secret, device, groups, count))
            })
            .await?
        };
        let endpoint = bind_endpoint(&config, secret.clone()).await?;
        // DHT: one state machine per node, driven over `covey/dht/2`.
        let dht = dht_driver::DhtDriver::start(
            endpoint.clone(),
            secret.clone(),
            store.clone(),
            config.dht,
        )?;
        let (events, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            id: secret.public(),
            started: std::time::Instant::now(),
            secret,
            device,
            code_invites: Mutex::new(HashMap::new()),
            leaving: Mutex::new(HashSet::new()),
            healing: Mutex::new(HashSet::new()),
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
            rendezvous: Notify::new(),
            rendezvous_found: AtomicU64::new(0),
            dialing: Mutex::new(HashSet::new()),
            entry_count: AtomicU64::new(entry_count),
            tasks: Mutex::new(Vec::new()),
            lock: Mutex::new(Some(lock)),
            key_store,
            config,
            dht,
        });
        let router = Router::builder(endpoint)
            .accept(SYNC_ALPN, sync_driver::SyncHandler::new(&inner))
            .accept(DHT_ALPN, inner.dht.handler())
            .accept(INVITE_ALPN, invite::InviteHandler::new(&inner))
            .spawn();
        let node = Node { inner, router };
        log::info!(
            "covey node {} open in {}",
            node.inner.id.fmt_short(),
            dir.display()
        );
        let mut seeds = Vec::new();
        for ticket in node.inner.config.bootstrap.clone() {
            let addr = parse_ticket(&ticket)?;
            if addr.id == node.inner.id {
                return Err(CoveyError::invalid(
                    "a bootstrap ticket is this node's own address",
                ));
            }
            node.remember_peer(addr.clone()).await?;
            seeds.push(addr);
        }
        for ticket in node.inner.store_read(store::peers).await? {
            match parse_ticket(&ticket) {
                Ok(addr) if !seeds.iter().any(|s| s.id == addr.id) => seeds.push(addr),
                Ok(_) => {}
                Err(e) => log::warn!("ignoring a remembered peer: {e}"),
            }
        }
        for addr in &seeds {
            node.inner.clone().spawn_dialer(addr.clone());
        }
        // Join the DHT (falling back to cached contacts), then start the rendezvous, so its
        // first announcements go to a filled routing table.
        let joiner = node.inner.clone();
        let task = tokio::spawn(async move {
            let found = joiner.dht.join(seeds).await;
            log::debug!("dht joined through {found} nodes");
            if joiner.config.dht.rendezvous {
                rendezvous::run(joiner).await;
            }
        });
        node.inner.track(task);
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
        self.remember_peer(addr.clone()).await?;
        self.inner.dht.add_seed(addr.clone()).await;
        self.inner.clone().spawn_dialer(addr);
        Ok(())
    }

    /// Stores `addr` for redial after restarts.
    async fn remember_peer(&self, addr: iroh::EndpointAddr) -> Result<()> {
        let canonical = EndpointTicket::new(addr.clone()).to_string();
        let id = *addr.id.as_bytes();
        self.inner
            .store_write(move |tx| store::put_peer(tx, &id, &canonical, now_ms()))
            .await
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
        // Before the fields below: no std lock may be held across this await.
        let dht = self.inner.dht.status().await;
        Ok(NodeStatus {
            node_id: self.inner.id,
            connected_peers: self.inner.sessions.peers(),
            known_peers,
            groups: self.inner.groups_read()?.len() as u32,
            entries: self.inner.entry_count.load(Ordering::Relaxed),
            paused: *self.inner.paused.borrow(),
            counters: self.inner.counters.snapshot(),
            dht: DhtStatus {
                rendezvous_found: self.inner.rendezvous_found.load(Ordering::Relaxed),
                ..dht
            },
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
        check_group_name(name)?;
        let passphrase = zeroize::Zeroizing::new(passphrase.to_owned());
        let root = blocking({
            let name = name.to_owned();
            move || {
                // The strength floor first: a weak passphrase costs no Argon2id, no storage.
                crate::group::check_passphrase_strength(&passphrase, &name)?;
                kdf::passphrase_root(&passphrase, &name)
            }
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
            let key_store = self.inner.key_store.clone();
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
            self.inner.offer_group(id.0).await?;
            self.inner.rendezvous.notify_one();
        }
        self.group_info(&id).await
    }

    async fn group_info(&self, id: &GroupId) -> Result<GroupInfo> {
        let state = self.inner.group(id)?;
        Ok(GroupInfo {
            group_id: *id,
            name: state.row.name.clone(),
            epoch: state.keys.epoch,
            kind: GroupKind::from_byte(state.row.kind)?,
            member_count: self.members(id).await?.len() as u32,
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

    /// Members of a group. A managed group's are its members now, by its control entries,
    /// each with its role. A passphrase group's are those known to this node: every author
    /// seen, every peer that has acknowledged entries of the group (see [`Node::delivery`]),
    /// and this node.
    pub async fn members(&self, group_id: &GroupId) -> Result<Vec<Member>> {
        self.check_open()?;
        let state = self.inner.group(group_id)?;
        let gid = group_id.0;
        let (heads, peers) = self
            .inner
            .store_read(move |c| Ok((store::frontier(c, &gid)?, store::peers_in_group(c, &gid)?)))
            .await?;
        // Ordered by node id; a peer that authored nothing here has last_seq 0.
        let seqs: BTreeMap<Id32, u64> = heads.iter().map(|h| (h.author, h.seq)).collect();
        let me = self.inner.id;
        let mut known: BTreeMap<Id32, Option<Role>> = BTreeMap::new();
        match &state.managed {
            Some(m) => {
                for (id, member) in m.membership.active() {
                    known.insert(*id, Some(member.role));
                }
            }
            None => {
                for id in seqs.keys().chain(peers.iter()) {
                    known.insert(*id, None);
                }
                known.insert(*me.as_bytes(), None);
            }
        }
        Ok(known
            .iter()
            .filter_map(|(id, role)| {
                iroh::PublicKey::from_bytes(id).ok().map(|node_id| Member {
                    node_id,
                    is_self: node_id == me,
                    last_seq: seqs.get(id).copied().unwrap_or(0),
                    role: *role,
                })
            })
            .collect())
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
        if !group.admits(self.inner.id.as_bytes()) {
            return Err(CoveyError::new(
                crate::error::ErrorKind::PermissionDenied,
                format!(
                    "this node was removed from group {group_id} (or left it) and can publish there no more"
                ),
            ));
        }
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
        let meta = meta_of(*group_id, cursor, &entry)?;
        if fresh {
            self.inner
                .counters
                .published
                .fetch_add(1, Ordering::Relaxed);
            let h = entry.header();
            let (g, a, s) = (group_id.0, h.author, h.seq);
            self.inner
                .sessions
                .each(|sess, _| sess.on_local_entry(g, a, s));
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
        rows.into_iter().map(|row| open_row(row, &group)).collect()
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
        row.map(|r| open_row(r, &group)).transpose()
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
        match self.inner.dht.save_contacts().await {
            Ok(n) => log::debug!("dht: cached {n} contacts at shutdown"),
            Err(e) => log::warn!("cannot cache dht contacts at shutdown: {e}"),
        }
        self.inner.dht.shutdown();
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
        self.inner.dht.shutdown();
        self.inner.close_events();
    }
}
