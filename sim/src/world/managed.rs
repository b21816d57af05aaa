//! Managed groups in the simulation: the same control entries, membership fold, admission and
//! purge a node runs (`group::membership`, `group::admission`, `engine::purge_past_cutoffs`),
//! so concurrent membership changes can be played across partitions and delivery orders.
//!
//! What the simulation leaves out: data entries stay in epoch 0 (publishing here uses the
//! group's root keys), so it checks who is a member and which logs every node keeps, not the
//! content keys of later epochs (`core/tests/managed_groups.rs` covers those over iroh).

use covey_core::group::admission::{
    EpochKeys, ManagedBatch, MemberContext, control_record_unverified,
};
use covey_core::group::control::{ControlOp, Role};
use covey_core::group::membership::{ControlRecord, Membership};
use covey_core::group::seal::{DeviceKey, seal_epoch_secret};
use covey_core::wire::entry::EntryKind;

use super::*;

impl Sim {
    /// Creates a managed group whose creator (its first admin) is `creator`, which joins it
    /// and registers its X25519 key, as `Node::create_group` does. Returns the group id.
    pub fn add_managed_group(&mut self, creator: NodeIdx) -> Result<Id32> {
        let group = self.add_group();
        self.managed.insert(group, self.nodes[creator].id);
        self.join(creator, group)?;
        let op = ControlOp::Add {
            member: self.nodes[creator].id,
            role: Role::Admin,
            x25519: self.device(creator).public(),
        };
        self.publish_control(creator, group, op)?;
        Ok(group)
    }

    /// `admin` adds `joiner` to `group` with `role`, as an answered invite does: the add is
    /// published, and the joiner joins holding the admin's control entries (the welcome).
    pub fn invite(
        &mut self,
        admin: NodeIdx,
        group: Id32,
        joiner: NodeIdx,
        role: Role,
    ) -> Result<()> {
        let op = ControlOp::Add {
            member: self.nodes[joiner].id,
            role,
            x25519: self.device(joiner).public(),
        };
        self.publish_control(admin, group, op)?;
        let welcome = self.with_store(admin, |s| s.read(|c| store::control_entries(c, &group)))?;
        self.join(joiner, group)?;
        let raws: Vec<(Id32, Vec<u8>)> = welcome
            .into_iter()
            .filter_map(|raw| {
                let id = SignedEntry::decode(raw.clone(), usize::MAX)
                    .ok()?
                    .id()
                    .to_owned();
                Some((id, raw))
            })
            .collect();
        self.with_store(joiner, |s| {
            s.write(|tx| store::put_welcome_controls(tx, &group, &raws))
        })?;
        let lamport = self
            .membership_records(joiner, group)?
            .iter()
            .map(|r| r.lamport)
            .max();
        if let Some(live) = self.nodes[joiner].live.as_mut() {
            let clock = live.max_lamport.entry(group).or_insert(0);
            *clock = (*clock).max(lamport.unwrap_or(0));
        }
        Ok(())
    }

    /// `admin` removes `member` from `group` as `Node::remove_member` does: cutoff at the
    /// member's head as `admin` holds it, a new epoch sealed to the members that stay.
    pub fn remove(&mut self, admin: NodeIdx, group: Id32, member: NodeIdx) -> Result<()> {
        let target = self.nodes[member].id;
        let m = self.membership(admin, group)?;
        let cutoff = self.with_store(admin, |s| {
            s.read(|c| Ok(store::head(c, &group, &target)?.map_or(0, |h| h.seq)))
        })?;
        let recipients: Vec<(Id32, [u8; 32])> = m
            .active()
            .filter(|(id, _)| **id != target)
            .filter_map(|(id, s)| s.x25519.map(|x| (*id, x)))
            .collect();
        let keys = self
            .groups
            .get(&group)
            .cloned()
            .ok_or_else(|| CoveyError::not_found("no such group in the simulation"))?;
        let mut secret = [0u8; 32];
        self.rng.fill(&mut secret);
        let block = seal_epoch_secret(
            &Secret32::from_bytes(secret),
            m.epoch() + 1,
            &keys.entry_group,
            &recipients,
        )?;
        self.publish_control(
            admin,
            group,
            ControlOp::Remove {
                member: target,
                cutoff,
                epoch: block,
            },
        )?;
        Ok(())
    }

    /// Appends a control entry to `node`'s log as `Inner::publish_control` does (no admin
    /// check: the fold decides what it does), stores it and offers it to every session.
    pub fn publish_control(&mut self, node: NodeIdx, group: Id32, op: ControlOp) -> Result<()> {
        self.append(node, group, &op.encode(), EntryKind::Control)?
            .ok_or_else(|| CoveyError::invalid("node is down"))?;
        self.after_control(node, group)
    }

    /// The membership of `group` as `node` folds it from what it holds.
    pub fn membership(&self, node: NodeIdx, group: Id32) -> Result<Membership> {
        let creator = self
            .managed
            .get(&group)
            .copied()
            .ok_or_else(|| CoveyError::not_found("not a managed group"))?;
        Ok(Membership::fold(
            creator,
            &self.membership_records(node, group)?,
        ))
    }

    /// The control entries `node` holds for `group`, stored and welcome ones, read.
    fn membership_records(&self, node: NodeIdx, group: Id32) -> Result<Vec<ControlRecord>> {
        let keys = self
            .groups
            .get(&group)
            .ok_or_else(|| CoveyError::not_found("no such group in the simulation"))?;
        let raws = self.with_store(node, |s| {
            s.read(|c| {
                let mut raws = store::control_entries(c, &group)?;
                raws.extend(store::welcome_controls(c, &group)?);
                Ok(raws)
            })
        })?;
        raws.into_iter()
            .map(|raw| {
                let entry = SignedEntry::decode(raw, usize::MAX)
                    .map_err(|e| CoveyError::storage(e.to_string()))?;
                control_record_unverified(&entry, &keys.control_key)
            })
            .collect()
    }

    /// This node's X25519 key: drawn from its Ed25519 secret, so it survives crashes as a key
    /// store would keep it.
    pub(super) fn device(&self, node: NodeIdx) -> DeviceKey {
        let seed = blake3::derive_key("covey-sim/x25519", &self.nodes[node].secret.to_bytes());
        DeviceKey::from_secret(&Secret32::from_bytes(seed))
    }

    /// Whether `node` syncs `group` with `peer`: anyone for a passphrase group, a member now
    /// for a managed one (the sync gate).
    pub(super) fn admits(&self, node: NodeIdx, group: &Id32, peer: &Id32) -> bool {
        if !self.managed.contains_key(group) {
            return true;
        }
        self.membership(node, *group)
            .map(|m| m.is_active(peer))
            .unwrap_or(false)
    }

    /// Checks a batch of a managed group as a member does (`ManagedBatch`), or `None` for a
    /// passphrase group.
    pub(super) fn managed_prepare(
        &self,
        node: NodeIdx,
        group: Id32,
        rules: &Rules,
        entries: Vec<Vec<u8>>,
    ) -> Result<std::result::Result<verify::Prepared, Vec<Vec<u8>>>> {
        let Some(creator) = self.managed.get(&group).copied() else {
            return Ok(Err(entries));
        };
        let keys = self
            .groups
            .get(&group)
            .ok_or_else(|| CoveyError::not_found("no such group in the simulation"))?;
        let stored = self.membership_records(node, group)?;
        // Data entries stay in epoch 0 here (see the module docs).
        let epoch_keys = EpochKeys::from([(0, vec![keys.content_key.clone()])]);
        let device = self.device(node);
        let context = MemberContext {
            keys,
            creator,
            stored: &stored,
            epoch_keys: &epoch_keys,
            device: &device,
            me: self.nodes[node].id,
        };
        let batch = ManagedBatch::new(&context, &entries, rules.max_ciphertext);
        let rules = Rules {
            epoch: batch.max_epoch(),
            ..*rules
        };
        Ok(Ok(verify::prepare_admitted(&rules, &batch, entries)))
    }

    /// After control entries were stored on `node`: drop what the membership now refuses
    /// (`engine::purge_past_cutoffs`), and end sessions with peers the group no longer admits.
    pub(super) fn after_control(&mut self, node: NodeIdx, group: Id32) -> Result<()> {
        let m = self.membership(node, group)?;
        let purged = match self.nodes[node].live.as_mut() {
            Some(live) => live
                .store
                .write(|tx| engine::purge_past_cutoffs(tx, &group, &m))?,
            None => 0,
        };
        if let Some(live) = self.nodes[node].live.as_mut() {
            let held = live.held.entry(group).or_insert(0);
            *held = held.saturating_sub(purged);
        }
        self.nodes[node].counters.sync.rejected_entries += purged;
        let me = self.nodes[node].id;
        let now_active: BTreeSet<Id32> = m.active().map(|(id, _)| *id).collect();
        // Peers that joined since this node last folded learn the group in their live
        // sessions, as `Inner::refresh_managed` offers it (a repeated offer is a no-op).
        let before = self
            .folds
            .insert((node, group), now_active.clone())
            .unwrap_or_default();
        let keys = self.groups.get(&group).cloned();
        for conn in self.registered(node) {
            let Some(peer) = self.session_mut(node, conn).map(|s| s.peer) else {
                continue;
            };
            let peer_id = self.nodes[peer].id;
            if !m.is_active(&peer_id) || !m.is_active(&me) {
                self.teardown(node, conn, End::Close);
            } else if !before.contains(&peer_id)
                && let Some(keys) = &keys
            {
                let joined = self.joined(node);
                let view =
                    self.with_store(node, |s| s.read(|c| engine::snapshot(c, &joined, &[group])))?;
                let pair = keys.pair(&me, &peer_id);
                let offered = self.apply(node, conn, |d| d.on_group_joined(group, pair, &view));
                if let Some(((), rest)) = offered
                    && !rest.is_empty()
                {
                    self.error(format!("node {node}: on_group_joined asked for {rest:?}"));
                }
            }
        }
        Ok(())
    }

    /// The heads of every log of `group` on `node` (control entries included): what "every
    /// node holds the same logs" compares.
    pub fn frontier(&self, node: NodeIdx, group: &Id32) -> Result<Vec<Head>> {
        self.with_store(node, |s| s.read(|c| store::frontier(c, group)))
    }
}
