//! [`Node`]: the exported facade over `covey_core::Node`.

use std::str::FromStr;
use std::sync::Arc;

use covey_core::{EntryId, GroupId};
use tokio::sync::watch;

use crate::error::CoveyError;
use crate::events::{EventListener, Subscription};
use crate::runtime::{run, runtime};
use crate::types::{
    Delivery, DhtRecord, Entry, EntryMeta, GroupInfo, Invite, Member, NodeConfig, NodeStatus,
};

/// An embedded Covey node. Open one per data dir with `Node.open`; call `shutdown` when done
/// (a node that is garbage-collected without it is shut down in the background).
#[derive(Debug, uniffi::Object)]
pub struct Node {
    core: Arc<covey_core::Node>,
    /// Turns true on shutdown; ends every subscription's delivery.
    closed: watch::Sender<bool>,
}

fn group_id(text: &str) -> Result<GroupId, CoveyError> {
    GroupId::from_str(text).map_err(CoveyError::from)
}

fn entry_id(text: &str) -> Result<EntryId, CoveyError> {
    EntryId::from_str(text).map_err(CoveyError::from)
}

fn node_id(text: &str) -> Result<covey_core::EndpointId, CoveyError> {
    covey_core::EndpointId::from_str(text)
        .map_err(|_| CoveyError::invalid(format!("not a node id: {text:?}")))
}

impl Node {
    /// The core node, shared with a task on the runtime.
    fn core(&self) -> Arc<covey_core::Node> {
        self.core.clone()
    }

    /// Wraps an open core node.
    fn wrap(core: covey_core::Node) -> Arc<Self> {
        Arc::new(Self {
            core: Arc::new(core),
            closed: watch::channel(false).0,
        })
    }
}

#[uniffi::export]
impl Node {
    /// Opens the node in `config.data_dir`, creating it on first use, and starts syncing with
    /// remembered and bootstrap peers. Fails with `Conflict` if another node has the data dir
    /// open, `InvalidInput` for a malformed config.
    #[uniffi::constructor]
    pub async fn open(config: NodeConfig) -> Result<Arc<Self>, CoveyError> {
        let config = covey_core::NodeConfig::try_from(config)?;
        let core = run(covey_core::Node::open(config)).await?;
        Ok(Self::wrap(core))
    }

    /// This node's id (its Ed25519 public key, iroh's text form), stable across restarts.
    pub fn node_id(&self) -> String {
        self.core.node_id().to_string()
    }

    /// An address ticket (an iroh `EndpointTicket`) that others pass to `add_peer`.
    pub async fn addr(&self) -> Result<String, CoveyError> {
        let core = self.core();
        run(async move { core.addr().await }).await
    }

    /// Connects to a peer by address ticket and remembers it for redial after restarts.
    pub async fn add_peer(&self, addr: String) -> Result<(), CoveyError> {
        let core = self.core();
        run(async move { core.add_peer(&addr).await }).await
    }

    /// The node's state and counters.
    pub async fn status(&self) -> Result<NodeStatus, CoveyError> {
        let core = self.core();
        run(async move { core.status().await.map(NodeStatus::from) }).await
    }

    /// Delivers events from now on to `listener` until the returned subscription is cancelled
    /// or dropped, or the node shuts down.
    pub fn subscribe(
        &self,
        listener: Arc<dyn EventListener>,
    ) -> Result<Arc<Subscription>, CoveyError> {
        if *self.closed.borrow() {
            return Err(covey_core::CoveyError::closed().into());
        }
        Subscription::start(self.core.subscribe(), listener, self.closed.subscribe())
    }

    /// Joins (or re-opens) the passphrase group `name`: the same passphrase and name give the
    /// same group on every device. Deliberately slow (Argon2id, 64 MiB).
    pub async fn join_passphrase(
        &self,
        passphrase: String,
        name: String,
    ) -> Result<GroupInfo, CoveyError> {
        let core = self.core();
        let passphrase = zeroize::Zeroizing::new(passphrase);
        run(async move {
            core.join_passphrase(&passphrase, &name)
                .await
                .map(GroupInfo::from)
        })
        .await
    }

    /// Creates a managed group named `name`, with this node its first admin: a random root
    /// secret in the key store (the id does not depend on the name). Others join it with an
    /// invite from `create_invite`. Fails with `InvalidInput` for a name that is not 1 to 256
    /// bytes.
    pub async fn create_group(&self, name: String) -> Result<GroupInfo, CoveyError> {
        let core = self.core();
        run(async move { core.create_group(&name).await.map(GroupInfo::from) }).await
    }

    /// Creates an invite to managed group `group_id` (admins only), answered for `ttl_secs`
    /// (1 s to 30 days), once if `single_use`: a link (also the QR payload) and a short code
    /// answered for at most 10 minutes while this node runs. Fails with `PermissionDenied`
    /// for a non-admin, `InvalidInput` for a ttl out of range or a passphrase group,
    /// `NotFound` for a group not joined here.
    pub async fn create_invite(
        &self,
        group_id: String,
        ttl_secs: u64,
        single_use: bool,
    ) -> Result<Invite, CoveyError> {
        let gid = self::group_id(&group_id)?;
        let core = self.core();
        run(async move {
            core.create_invite(&gid, ttl_secs, single_use)
                .await
                .map(Invite::from)
        })
        .await
    }

    /// Joins a managed group by `invite`: a link (`covey:invite/...`, or the QR payload) or a
    /// short code (`xxxx-xxxx`, found through the DHT, so this node needs a DHT peer that
    /// knows the inviter). Accepting an invite to a group already joined returns it again.
    /// Fails with a retryable `Network` error when no inviter is reachable,
    /// `PermissionDenied` for an invite that is expired, used, forged or for another group,
    /// or a wrong code, `InvalidInput` for a malformed one.
    pub async fn accept_invite(&self, invite: String) -> Result<GroupInfo, CoveyError> {
        let core = self.core();
        let invite = zeroize::Zeroizing::new(invite);
        run(async move { core.accept_invite(&invite).await.map(GroupInfo::from) }).await
    }

    /// Removes `member` (a node id) from managed group `group_id` (admins only): a new epoch
    /// whose secret only the remaining members get, so the removed node reads nothing
    /// published after it and its later entries are refused. Fails with `PermissionDenied`
    /// for a non-admin, `InvalidInput` for a passphrase group, a malformed node id or this
    /// node itself (use `leave_group`), `NotFound` for a group not joined here or a node
    /// that is not a member.
    pub async fn remove_member(&self, group_id: String, member: String) -> Result<(), CoveyError> {
        let gid = self::group_id(&group_id)?;
        let member = self::node_id(&member)?;
        let core = self.core();
        run(async move { core.remove_member(&gid, &member).await }).await
    }

    /// Leaves group `group_id` and deletes what this node holds of it: its entries, receipts
    /// and secrets (through the key store). In a managed group it first tells the other
    /// members, waiting up to 5 s for a peer to take the news. Later calls on the group fail
    /// with `NotFound`.
    pub async fn leave_group(&self, group_id: String) -> Result<(), CoveyError> {
        let gid = self::group_id(&group_id)?;
        let core = self.core();
        run(async move { core.leave_group(&gid).await }).await
    }

    /// Every joined group.
    pub async fn groups(&self) -> Result<Vec<GroupInfo>, CoveyError> {
        let core = self.core();
        run(async move {
            core.groups()
                .await
                .map(|gs| gs.into_iter().map(GroupInfo::from).collect())
        })
        .await
    }

    /// Members of a group: a managed group's members now, each with its `role`; a passphrase
    /// group's members known to this node (every author seen, every peer that has
    /// acknowledged entries of the group, and this node), with no role.
    pub async fn members(&self, group_id: String) -> Result<Vec<Member>, CoveyError> {
        let gid = self::group_id(&group_id)?;
        let core = self.core();
        run(async move {
            core.members(&gid)
                .await
                .map(|ms| ms.into_iter().map(Member::from).collect())
        })
        .await
    }

    /// Publishes `payload` to a group; returns once it is durable locally (peers get it in the
    /// background). A repeated `client_id` returns the first entry's meta; the same
    /// `client_id` with a different payload fails with `IdempotencyConflict`.
    #[uniffi::method(default(client_id = None))]
    pub async fn publish(
        &self,
        group_id: String,
        payload: Vec<u8>,
        client_id: Option<String>,
    ) -> Result<EntryMeta, CoveyError> {
        let gid = self::group_id(&group_id)?;
        let core = self.core();
        run(async move {
            core.publish(&gid, &payload, client_id.as_deref())
                .await
                .map(EntryMeta::from)
        })
        .await
    }

    /// Up to `limit` entries of a group after `after_cursor` (0 for the start), in local order,
    /// oldest first. Pass the last entry's `cursor` to get the next page.
    pub async fn entries(
        &self,
        group_id: String,
        after_cursor: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, CoveyError> {
        let gid = self::group_id(&group_id)?;
        let core = self.core();
        run(async move {
            core.entries(&gid, after_cursor, limit)
                .await
                .map(|es| es.into_iter().map(Entry::from).collect())
        })
        .await
    }

    /// One entry by id, or `None` if this node does not hold it.
    pub async fn entry(
        &self,
        group_id: String,
        entry_id: String,
    ) -> Result<Option<Entry>, CoveyError> {
        let gid = self::group_id(&group_id)?;
        let eid = self::entry_id(&entry_id)?;
        let core = self.core();
        run(async move { core.entry(&gid, &eid).await.map(|e| e.map(Entry::from)) }).await
    }

    /// Delivery receipt of one entry: the peers known to hold it and whether every member this
    /// node knows of has it. Receipts persist across restarts. Fails with `NotFound` if the
    /// group is not joined or this node does not hold the entry, `InvalidInput` for an id that
    /// is not 64 hex characters.
    pub async fn delivery(
        &self,
        group_id: String,
        entry_id: String,
    ) -> Result<Delivery, CoveyError> {
        let gid = self::group_id(&group_id)?;
        let eid = self::entry_id(&entry_id)?;
        let core = self.core();
        run(async move { core.delivery(&gid, &eid).await.map(Delivery::from) }).await
    }

    /// Publishes `value` under (this node, `name`) for `ttl_secs`, signed by this node, and
    /// returns its new sequence number. With `expected_seq` it is a compare-and-swap: it fails
    /// with `Conflict` unless the current sequence is `expected_seq` (0: no record yet). Fails
    /// with `InvalidInput` for an empty or over-long name, an oversized value or a zero ttl.
    pub async fn dht_put(
        &self,
        name: String,
        value: Vec<u8>,
        ttl_secs: u64,
        expected_seq: Option<u64>,
    ) -> Result<u64, CoveyError> {
        let core = self.core();
        run(async move { core.dht_put(&name, &value, ttl_secs, expected_seq).await }).await
    }

    /// The record of (`publisher`, `name`) with the highest valid sequence found, or none.
    /// Fails with `InvalidInput` for a publisher that is not a node id or a bad name.
    pub async fn dht_get(
        &self,
        publisher: String,
        name: String,
    ) -> Result<Option<DhtRecord>, CoveyError> {
        let publisher = self::node_id(&publisher)?;
        let core = self.core();
        run(async move {
            core.dht_get(&publisher, &name)
                .await
                .map(|r| r.map(DhtRecord::from))
        })
        .await
    }

    /// Announces this node as a provider of `key` for `ttl_secs`. Fails with `Network` when no
    /// node accepted the announcement.
    pub async fn dht_provide(&self, key: Vec<u8>, ttl_secs: u64) -> Result<(), CoveyError> {
        let core = self.core();
        run(async move { core.dht_provide(&key, ttl_secs).await }).await
    }

    /// Node ids of the nodes currently announcing themselves as providers of `key`.
    pub async fn dht_providers(&self, key: Vec<u8>) -> Result<Vec<String>, CoveyError> {
        let core = self.core();
        run(async move {
            core.dht_providers(&key)
                .await
                .map(|ids| ids.iter().map(ToString::to_string).collect())
        })
        .await
    }

    /// Stops syncing (the app goes to the background) until `resume`.
    pub async fn pause(&self) -> Result<(), CoveyError> {
        let core = self.core();
        run(async move { core.pause().await }).await
    }

    /// Resumes syncing after `pause`.
    pub async fn resume(&self) -> Result<(), CoveyError> {
        let core = self.core();
        run(async move { core.resume().await }).await
    }

    /// Tells the node the network changed (Wi-Fi to cellular, say): it rebinds and redials now.
    pub async fn network_changed(&self) -> Result<(), CoveyError> {
        let core = self.core();
        run(async move { core.network_changed().await }).await
    }

    /// Closes sessions, ends subscriptions, flushes the database and releases the data dir.
    /// Later calls fail with `Closed`; calling it twice is fine.
    pub async fn shutdown(&self) -> Result<(), CoveyError> {
        let core = self.core();
        let result = run(async move { core.shutdown().await }).await;
        self.closed.send_replace(true);
        result
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.closed.send_replace(true);
        // Finish the node on the runtime: release the data dir lock and checkpoint, as an
        // explicit shutdown would (a no-op if that already happened).
        let core = self.core.clone();
        if let Ok(rt) = runtime() {
            rt.spawn(async move {
                if let Err(e) = core.shutdown().await {
                    log::warn!("shutdown of a dropped node failed: {e}");
                }
            });
        }
    }
}
