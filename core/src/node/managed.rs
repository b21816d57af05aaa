//! Managed groups on a node: creating one, membership folded from its control entries,
//! removing a member (a new epoch), leaving, and keeping the node's state in step whenever a
//! control entry is stored.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Node;
use super::inner::{GroupState, Inner, blocking, now_ms};
use super::setup::group_key_name;
use super::types::{Event, GroupInfo};
use crate::crypto::{Secret32, aead};
use crate::error::{CoveyError, ErrorKind, Result};
use crate::group::admission::{EpochKeys, add_epoch_key, control_record_unverified};
use crate::group::control::{ControlOp, Role};
use crate::group::membership::{ControlRecord, Membership};
use crate::group::seal::{DeviceKey, open_epoch_secret, seal_epoch_secret};
use crate::group::{GroupId, GroupKeys, GroupKind};
use crate::keystore::KeyStore;
use crate::store::{self, GroupRow};
use crate::sync::WarnKind;
use crate::sync::engine;
use crate::wire::entry::{EntryKind, Id32, SignedEntry};

/// The key-store name of this device's X25519 key.
pub(super) const DEVICE_X25519_KEY: &str = "device-x25519";

/// The key-store name of the epoch secret carried by control entry `entry`.
pub(super) fn epoch_key_name(entry: &Id32) -> String {
    format!("epoch-{}", hex::encode(entry))
}

/// How long `leave_group` waits for a peer to acknowledge the leave before deleting.
const LEAVE_ACK_WAIT_MS: u64 = 5_000;

/// A managed group as this node holds it.
#[derive(Debug)]
pub(super) struct ManagedState {
    /// The creator, where the membership fold starts.
    pub(super) creator: Id32,
    /// The root secret (epoch 0's secret).
    pub(super) root: Secret32,
    /// Every control entry known (stored, or brought by an invite's welcome).
    pub(super) records: Vec<ControlRecord>,
    /// The fold of `records`.
    pub(super) membership: Membership,
    /// The epoch secrets held past epoch 0: (epoch, the control entry that started it,
    /// secret).
    pub(super) secrets: Vec<(u64, Id32, Secret32)>,
}

/// Loads this device's X25519 key from the key store, creating it on first use.
pub(super) fn load_or_create_device_key(keys: &dyn KeyStore) -> Result<DeviceKey> {
    match keys.load(DEVICE_X25519_KEY)? {
        Some(bytes) if !bytes.is_empty() => {
            let secret = Secret32::from_slice(&bytes).ok_or_else(|| {
                CoveyError::crypto(
                    "stored X25519 device key is not 32 bytes; refusing to replace it",
                )
            })?;
            Ok(DeviceKey::from_secret(&secret))
        }
        _ => {
            let key = DeviceKey::random();
            keys.store(DEVICE_X25519_KEY, key.to_secret().expose())?;
            Ok(key)
        }
    }
}

/// What a node needs to build a managed group's state.
pub(super) struct Holder<'a> {
    pub(super) key_store: &'a dyn KeyStore,
    pub(super) device: &'a DeviceKey,
    pub(super) me: Id32,
}

/// Builds a managed group's state from its control entries (`raws`, stored and welcome ones)
/// and the secrets this node holds: the membership fold, the key of every epoch it can open
/// (epoch secrets sealed to it are opened and put in the key store on first sight), and the
/// keys of the newest epoch it holds, which it publishes in.
pub(super) fn build_managed(
    holder: &Holder<'_>,
    row: GroupRow,
    root: Secret32,
    creator: Id32,
    raws: Vec<Vec<u8>>,
    max_lamport: u64,
) -> Result<GroupState> {
    let base = GroupKeys::from_root(&root);
    let mut records = Vec::with_capacity(raws.len());
    for raw in raws {
        let entry = SignedEntry::decode(raw, usize::MAX)
            .map_err(|e| CoveyError::storage(format!("corrupt stored control entry: {e}")))?;
        match control_record_unverified(&entry, &base.control_key) {
            Ok(r) => records.push(r),
            // Verified when stored; one that no longer reads is corruption, said once here.
            Err(e) => log::warn!("a stored control entry does not read: {e}"),
        }
    }
    let membership = Membership::fold(creator, &records);
    let mut epoch_keys = EpochKeys::new();
    add_epoch_key(&mut epoch_keys, 0, &root);
    let mut secrets = Vec::new();
    for start in membership.epoch_starts() {
        let name = epoch_key_name(&start.entry);
        let held = match holder.key_store.load(&name)? {
            Some(bytes) if !bytes.is_empty() => {
                Some(Secret32::from_slice(&bytes).ok_or_else(|| {
                    CoveyError::crypto(format!("epoch secret {name} in the key store is corrupt"))
                })?)
            }
            _ => {
                let block = records
                    .iter()
                    .find(|r| r.id == start.entry)
                    .and_then(|r| r.op.epoch_block());
                let opened = match block {
                    // Refused at ingest when it does not open; a stored one that does not
                    // (a welcome's, or an older build's) leaves this node without the epoch.
                    Some(block) => {
                        match open_epoch_secret(holder.device, &holder.me, &base.entry_group, block)
                        {
                            Ok(opened) => opened,
                            Err(e) => {
                                log::warn!("epoch {} secret sealed to this node: {e}", start.epoch);
                                None
                            }
                        }
                    }
                    None => None,
                };
                if let Some(secret) = &opened {
                    holder.key_store.store(&name, secret.expose())?;
                }
                opened
            }
        };
        if let Some(secret) = held {
            add_epoch_key(&mut epoch_keys, start.epoch, &secret);
            secrets.push((start.epoch, start.entry, secret));
        }
    }
    // The current epoch's secret if held; else the newest held (a node removed, or not a
    // recipient yet, reads what it holds and cannot publish).
    let current = membership
        .current_start()
        .and_then(|c| secrets.iter().find(|(_, id, _)| *id == c.entry))
        .or_else(|| secrets.iter().max_by_key(|(e, _, _)| *e));
    let keys = match current {
        Some((epoch, _, secret)) => base.at_epoch(*epoch, secret),
        None => base.at_epoch(0, &root),
    };
    let row = GroupRow {
        epoch: keys.epoch,
        ..row
    };
    Ok(GroupState {
        row,
        keys,
        max_lamport: std::sync::atomic::AtomicU64::new(max_lamport),
        epoch_keys,
        managed: Some(ManagedState {
            creator,
            root,
            records,
            membership,
            secrets,
        }),
    })
}

/// The control entries of a managed group as the store holds them, welcome ones included.
pub(super) fn stored_controls(conn: &rusqlite::Connection, group: &Id32) -> Result<Vec<Vec<u8>>> {
    let mut raws = store::control_entries(conn, group)?;
    raws.extend(store::welcome_controls(conn, group)?);
    Ok(raws)
}

impl Inner {
    fn holder(&self) -> Holder<'_> {
        Holder {
            key_store: self.key_store.as_ref(),
            device: &self.device,
            me: *self.id.as_bytes(),
        }
    }

    /// Re-folds a managed group after control entries were stored, and brings the node in
    /// step: the new epoch's keys, entries of removed members past their cutoff deleted,
    /// sessions with removed members ended, sessions with new members opened to the group,
    /// events raised, and an epoch started if the fold asks this node to heal one.
    ///
    /// Boxed: healing an epoch publishes a control entry, which refreshes again.
    pub(super) fn refresh_managed(
        self: &Arc<Self>,
        group: Id32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>> {
        Box::pin(self.refresh_managed_now(group))
    }

    async fn refresh_managed_now(self: &Arc<Self>, group: Id32) -> Result<()> {
        let Some(old) = self.groups_read()?.get(&group).cloned() else {
            return Ok(());
        };
        let Some(old_managed) = &old.managed else {
            return Ok(());
        };
        let (row, root, creator) = (
            old.row.clone(),
            old_managed.root.clone(),
            old_managed.creator,
        );
        let lamport = old.max_lamport.load(Ordering::Acquire);
        let inner = self.clone();
        let (state, purged) = blocking(move || {
            let raws = inner.store.read(|c| stored_controls(c, &group))?;
            let state = build_managed(&inner.holder(), row, root, creator, raws, lamport)?;
            // Entries a removed member wrote past its cutoff, stored before the removal was
            // known here: every member refuses them now, so they go.
            let purged = match &state.managed {
                Some(m) => inner.store.write(|tx| {
                    let n = engine::purge_past_cutoffs(tx, &group, &m.membership)?;
                    store::set_group_epoch(tx, &group, state.row.epoch)?;
                    Ok(n)
                })?,
                None => 0,
            };
            Ok((state, purged))
        })
        .await?;
        if purged > 0 {
            self.entry_count.fetch_sub(purged, Ordering::AcqRel);
            self.counters
                .rejected_entries
                .fetch_add(purged, Ordering::Relaxed);
            self.warn(
                WarnKind::RejectedEntry,
                format!(
                    "{purged} entries of removed members, written past their removal, were refused and deleted"
                ),
            );
        }
        if let Some(m) = &state.managed {
            let seen: BTreeSet<Id32> = old_managed
                .membership
                .ignored()
                .iter()
                .map(|i| i.entry)
                .collect();
            for ignored in m
                .membership
                .ignored()
                .iter()
                .filter(|i| !seen.contains(&i.entry))
            {
                self.warn(
                    WarnKind::RejectedEntry,
                    format!(
                        "a control entry of {} in group {} has no effect ({})",
                        hex::encode(&ignored.author[..4]),
                        GroupId(group),
                        ignored.reason
                    ),
                );
            }
        }
        let state = Arc::new(state);
        let (old_epoch, new_epoch) = (old.keys.epoch, state.keys.epoch);
        let me = *self.id.as_bytes();
        // A node that leaves ends itself: that is no removal to report, and its sessions must
        // stay up to hand the leave to a peer.
        let leaving = self
            .leaving
            .lock()
            .map(|l| l.contains(&group))
            .unwrap_or(false);
        let (was_active, now_active) = (old.admits(&me), state.admits(&me) || leaving);
        let old_members: BTreeSet<Id32> =
            old_managed.membership.active().map(|(id, _)| *id).collect();
        let new_members: BTreeSet<Id32> = state
            .managed
            .as_ref()
            .map(|m| m.membership.active().map(|(id, _)| *id).collect())
            .unwrap_or_default();
        self.groups_write()?.insert(group, state.clone());
        if new_epoch != old_epoch {
            self.emit(Event::GroupChanged {
                group_id: GroupId(group),
                epoch: new_epoch,
            });
            self.rendezvous.notify_one();
        }
        if was_active && !now_active {
            self.warn(
                WarnKind::RemovedFromGroup,
                format!(
                    "this node was removed from group {}; it keeps what it holds and can publish no more there",
                    GroupId(group)
                ),
            );
            self.emit(Event::GroupChanged {
                group_id: GroupId(group),
                epoch: new_epoch,
            });
        }
        // Sessions with members who left the group end (they redial without it); sessions
        // with members who joined learn the group.
        let gone: BTreeSet<Id32> = old_members.difference(&new_members).copied().collect();
        let joined: BTreeSet<Id32> = new_members.difference(&old_members).copied().collect();
        if !gone.is_empty() || !joined.is_empty() || (was_active && !now_active) {
            let view = self.snapshot(vec![group]).await?;
            let lost_all = was_active && !now_active;
            self.sessions.each(|s, peer| {
                let p = *peer.as_bytes();
                if lost_all || gone.contains(&p) {
                    s.close("removed from a group");
                } else if joined.contains(&p) {
                    s.on_group_joined(group, state.keys.pair(&me, &p), &view);
                }
            });
        }
        if let Some(m) = &state.managed
            && now_active
            && m.membership.needs_rekey()
            && m.membership.healer() == Some(me)
        {
            // This node is the one admin the rule names to move the epoch past a secret that
            // reached someone no longer in the group; one healing at a time, so a refresh
            // while it runs does not start a second epoch.
            let first = self
                .healing
                .lock()
                .map(|mut h| h.insert(group))
                .unwrap_or(false);
            if first {
                let inner = self.clone();
                let task = tokio::spawn(async move {
                    if let Err(e) = inner.start_epoch(group, None).await {
                        log::warn!("healing epoch of group {} failed: {e}", GroupId(group));
                    }
                    if let Ok(mut healing) = inner.healing.lock() {
                        healing.remove(&group);
                    }
                });
                self.track(task);
            }
        }
        Ok(())
    }

    /// Appends `op` to this node's log in `group` as a control entry, tells the sessions, and
    /// re-folds the membership.
    pub(super) async fn publish_control(
        self: &Arc<Self>,
        group: Id32,
        op: ControlOp,
    ) -> Result<SignedEntry> {
        let state = self.group(&GroupId(group))?;
        let inner = self.clone();
        let payload = op.encode();
        let entry = blocking(move || {
            inner.write_counting(|tx| {
                let draft = engine::Draft {
                    lamport: state.max_lamport.load(Ordering::Acquire).saturating_add(1),
                    timestamp_ms: now_ms(),
                    nonce: aead::random_nonce(),
                    payload: &payload,
                };
                let (_, entry) = engine::append_own_control(tx, &state.keys, &inner.secret, draft)?;
                state
                    .max_lamport
                    .fetch_max(entry.header().lamport, Ordering::AcqRel);
                Ok((1, entry))
            })
        })
        .await?;
        let h = entry.header();
        let (a, s) = (h.author, h.seq);
        self.sessions
            .each(|sess, _| sess.on_local_entry(group, a, s));
        self.refresh_managed(group).await?;
        Ok(entry)
    }

    /// Starts a new epoch in `group`, removing `remove` (member, cutoff) if given: a fresh
    /// secret sealed to every member that stays, in one control entry.
    pub(super) async fn start_epoch(
        self: &Arc<Self>,
        group: Id32,
        remove: Option<Id32>,
    ) -> Result<()> {
        let state = self.group(&GroupId(group))?;
        let Some(m) = &state.managed else {
            return Err(passphrase_has_no_admin());
        };
        let recipients: Vec<(Id32, [u8; 32])> = m
            .membership
            .active()
            .filter(|(id, _)| Some(**id) != remove)
            .filter_map(|(id, s)| s.x25519.map(|x| (*id, x)))
            .collect();
        let epoch = m.membership.epoch().saturating_add(1);
        let secret = Secret32::random();
        let block = seal_epoch_secret(&secret, epoch, &state.keys.entry_group, &recipients)?;
        let op = match remove {
            Some(member) => {
                let cutoff = self
                    .store_read(move |c| Ok(store::head(c, &group, &member)?.map_or(0, |h| h.seq)))
                    .await?;
                ControlOp::Remove {
                    member,
                    cutoff,
                    epoch: block,
                }
            }
            None => ControlOp::Rotate { epoch: block },
        };
        self.publish_control(group, op).await?;
        Ok(())
    }
}

fn passphrase_has_no_admin() -> CoveyError {
    CoveyError::invalid("passphrase groups have no admin; create a managed group")
}

/// The state of `group` if it is managed and this node is an admin in it now.
pub(super) fn require_admin(state: &GroupState, me: &Id32) -> Result<()> {
    let Some(m) = &state.managed else {
        return Err(passphrase_has_no_admin());
    };
    match m.membership.role(me) {
        Some(Role::Admin) => Ok(()),
        Some(Role::Member) => Err(CoveyError::new(
            ErrorKind::PermissionDenied,
            "only an admin of the group can do this",
        )),
        None => Err(CoveyError::new(
            ErrorKind::PermissionDenied,
            "this node is no longer a member of the group",
        )),
    }
}

impl Node {
    /// Creates a managed group named `name`: a random root secret in the key store, this node
    /// its first admin. Its id and keys do not depend on the name.
    pub async fn create_group(&self, name: &str) -> Result<GroupInfo> {
        self.check_open()?;
        super::check_group_name(name)?;
        let inner = self.inner.clone();
        let root = Secret32::random();
        let keys = GroupKeys::from_root(&root);
        let id = keys.id;
        let row = GroupRow {
            group_id: id.0,
            name: name.to_owned(),
            kind: GroupKind::Managed.to_byte(),
            epoch: 0,
        };
        let me = *inner.id.as_bytes();
        let state = blocking({
            let inner = inner.clone();
            move || {
                inner.key_store.store(&group_key_name(&id), root.expose())?;
                let add = ControlOp::Add {
                    member: me,
                    role: Role::Admin,
                    x25519: inner.device.public(),
                };
                let payload = add.encode();
                inner.write_counting(|tx| {
                    store::insert_group(tx, &row, now_ms())?;
                    store::set_creator(tx, &id.0, &me)?;
                    let draft = engine::Draft {
                        lamport: 1,
                        timestamp_ms: now_ms(),
                        nonce: aead::random_nonce(),
                        payload: &payload,
                    };
                    engine::append_own_control(tx, &keys, &inner.secret, draft)?;
                    Ok((1, ()))
                })?;
                let raws = inner.store.read(|c| stored_controls(c, &id.0))?;
                build_managed(&inner.holder(), row, root, me, raws, 1)
            }
        })
        .await?;
        inner.groups_write()?.insert(id.0, Arc::new(state));
        inner.emit(Event::GroupChanged {
            group_id: id,
            epoch: 0,
        });
        inner.rendezvous.notify_one();
        self.group_info(&id).await
    }

    /// Removes `member` from managed group `group_id` (admins only): one control entry that
    /// starts a new epoch whose secret is sealed to every remaining member, so the removed
    /// node reads nothing published after it, cannot find the group's rendezvous, and has
    /// its later entries refused by every member.
    pub async fn remove_member(&self, group_id: &GroupId, member: &iroh::EndpointId) -> Result<()> {
        self.check_open()?;
        let state = self.inner.group(group_id)?;
        let me = *self.inner.id.as_bytes();
        require_admin(&state, &me)?;
        let target = *member.as_bytes();
        if target == me {
            return Err(CoveyError::invalid(
                "an admin leaves with leave_group, not by removing itself",
            ));
        }
        if !state.admits(&target) {
            return Err(CoveyError::not_found(format!(
                "{} is not a member of group {group_id}",
                member.fmt_short()
            )));
        }
        self.inner.start_epoch(group_id.0, Some(target)).await
    }

    /// Leaves group `group_id`: in a managed group, this node's own `leave` control entry,
    /// which it tries to hand to a peer for up to 5 seconds; then, in any group, deletes what
    /// it holds of the group here: its entries, receipts, client ids and invites, the group's
    /// root and epoch secrets in the key store, and the group itself.
    pub async fn leave_group(&self, group_id: &GroupId) -> Result<()> {
        self.check_open()?;
        let state = self.inner.group(group_id)?;
        let gid = group_id.0;
        let me = *self.inner.id.as_bytes();
        if state.managed.is_some() && state.admits(&me) {
            if let Ok(mut leaving) = self.inner.leaving.lock() {
                leaving.insert(gid);
            }
            let published = self.inner.publish_control(gid, ControlOp::Leave).await;
            if published.is_err()
                && let Ok(mut leaving) = self.inner.leaving.lock()
            {
                leaving.remove(&gid);
            }
            let entry = published?;
            let seq = entry.header().seq;
            let deadline = now_ms().saturating_add(LEAVE_ACK_WAIT_MS);
            loop {
                let acked = self
                    .inner
                    .store_read(move |c| {
                        Ok(store::peer_heads_for(c, &gid, &me)?
                            .iter()
                            .any(|(_, acked)| *acked >= seq))
                    })
                    .await?;
                if acked || now_ms() >= deadline {
                    if !acked {
                        log::warn!(
                            "left group {group_id} without a peer acknowledging it; members learn of it when they next sync with one that holds it, or never"
                        );
                    }
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        let secrets: Vec<Id32> = state
            .managed
            .as_ref()
            .map(|m| m.secrets.iter().map(|(_, id, _)| *id).collect())
            .unwrap_or_default();
        self.inner.groups_write()?.remove(&gid);
        if let Ok(mut leaving) = self.inner.leaving.lock() {
            leaving.remove(&gid);
        }
        let inner = self.inner.clone();
        let id = *group_id;
        let deleted = blocking(move || {
            let n = inner.store.write(|tx| store::delete_group(tx, &gid))?;
            inner.key_store.delete(&group_key_name(&id))?;
            for entry in &secrets {
                inner.key_store.delete(&epoch_key_name(entry))?;
            }
            Ok(n)
        })
        .await?;
        self.inner.entry_count.fetch_sub(deleted, Ordering::AcqRel);
        // Sessions hold the group in their state: they end and redial without it.
        self.inner.sessions.each(|s, _| s.close("left a group"));
        log::info!("left group {group_id}: deleted {deleted} entries and its secrets");
        Ok(())
    }
}

/// Whether `entry` is a control entry.
pub(super) fn is_control(entry: &SignedEntry) -> bool {
    entry.header().kind == EntryKind::Control
}

#[cfg(any(test, feature = "test-utils"))]
impl Node {
    /// Publishes `op` as this node's next control entry in `group` without the checks the
    /// facade makes (admin, membership): what a modified client could send. Tests use it to
    /// show what every other member does with such an entry.
    pub async fn publish_control_unchecked(&self, group: &GroupId, op: ControlOp) -> Result<()> {
        self.inner.publish_control(group.0, op).await.map(|_| ())
    }

    /// This node's X25519 public key (what an add names).
    pub fn x25519_public(&self) -> [u8; 32] {
        self.inner.device.public()
    }

    /// The entry reference of `group` (what sealed epoch secrets are bound to).
    pub fn entry_group(&self, group: &GroupId) -> Result<Id32> {
        Ok(self.inner.group(group)?.keys.entry_group)
    }
}
