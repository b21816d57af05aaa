//! Who is in a managed group: the deterministic fold of its control entries.
//!
//! Every member computes membership the same way from the same set of control entries,
//! whatever order they arrived in (PROTOCOL.md, "Membership rule"):
//!
//! 1. Sort the control entries by `(lamport, entry id)`. Lamport clocks follow causality, so
//!    this order puts every change after the changes its author had seen; concurrent changes
//!    fall in the order of their ids.
//! 2. Start from the creator as the only member, an admin, and apply each entry in turn. An
//!    entry whose author is not a member at that point has no effect; add, remove, role
//!    change and rotate need an admin author (a member may re-add itself, to register its
//!    X25519 key, without raising its role); a removal names a member other than its author
//!    (an author leaves with `leave`); an epoch block must start the current epoch or the one
//!    after it.
//! 3. A removal or leave ends its member's log at a cutoff seq. An entry of that member past
//!    its cutoff is invalid everywhere, even one that sorted before the removal; so entries
//!    past the final cutoffs are dropped and the fold runs again, until nothing more drops.
//!
//! So two admins removing each other: the first in the order wins, and the other's removal
//! (past its author's cutoff) has no effect. An add racing a remove of the adder: if the
//! removal comes first, the add has no effect. The result is a pure function of the set.

use std::collections::{BTreeMap, BTreeSet};

use super::control::{ControlOp, MAX_MEMBERS, Role};
use crate::wire::entry::Id32;

/// One control entry, decoded: what the fold needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRecord {
    /// The entry's id.
    pub id: Id32,
    /// Its author.
    pub author: Id32,
    /// Its seq in the author's log.
    pub seq: u64,
    /// Its lamport clock.
    pub lamport: u64,
    /// The change it makes.
    pub op: ControlOp,
}

/// One member as the fold leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    /// Its role (the last one it held, for a former member).
    pub role: Role,
    /// The X25519 key epoch secrets are sealed to, once registered.
    pub x25519: Option<[u8; 32]>,
    /// For a removed or departed member, its highest seq that stays valid.
    pub cutoff: Option<u64>,
}

impl MemberState {
    /// Whether the member is in the group now.
    pub fn active(&self) -> bool {
        self.cutoff.is_none()
    }
}

/// A valid epoch start: the control entry that carries the epoch's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochStart {
    /// The epoch number.
    pub epoch: u64,
    /// The control entry whose epoch block seals the secret.
    pub entry: Id32,
}

/// Why a control entry had no effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The entry.
    pub entry: Id32,
    /// Its author.
    pub author: Id32,
    /// A short reason, such as `not-admin`.
    pub reason: &'static str,
}

/// The membership of a managed group, folded from its control entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    members: BTreeMap<Id32, MemberState>,
    epoch: u64,
    /// Every valid epoch start, in fold order.
    starts: Vec<EpochStart>,
    /// Who may hold the current epoch's secret: its recipients, and members added since
    /// (an invite hands them the current secret).
    holders: BTreeSet<Id32>,
    /// Entries with no effect, in fold order.
    ignored: Vec<Ignored>,
    /// Entries dropped for lying past their author's cutoff.
    past_cutoff: BTreeSet<Id32>,
}

impl Membership {
    /// The membership of a group created by `creator`, after `records` (in any order).
    pub fn fold(creator: Id32, records: &[ControlRecord]) -> Self {
        let mut sorted: Vec<&ControlRecord> = records.iter().collect();
        sorted.sort_by_key(|r| (r.lamport, r.id));
        sorted.dedup_by_key(|r| r.id);
        let mut dropped: BTreeSet<Id32> = BTreeSet::new();
        loop {
            let mut state = Self::fold_once(creator, &sorted, &dropped);
            let more: Vec<Id32> = sorted
                .iter()
                .filter(|r| !dropped.contains(&r.id) && !state.may_write(&r.author, r.seq))
                .map(|r| r.id)
                .collect();
            if more.is_empty() {
                state.past_cutoff = dropped;
                return state;
            }
            // Each round drops at least one more entry, so this ends within `records.len()`
            // rounds.
            dropped.extend(more);
        }
    }

    fn fold_once(creator: Id32, sorted: &[&ControlRecord], dropped: &BTreeSet<Id32>) -> Self {
        let mut state = Self {
            members: BTreeMap::from([(
                creator,
                MemberState {
                    role: Role::Admin,
                    x25519: None,
                    cutoff: None,
                },
            )]),
            epoch: 0,
            starts: Vec::new(),
            holders: BTreeSet::from([creator]),
            ignored: Vec::new(),
            past_cutoff: BTreeSet::new(),
        };
        for record in sorted.iter().filter(|r| !dropped.contains(&r.id)) {
            if let Err(reason) = state.apply(record) {
                state.ignored.push(Ignored {
                    entry: record.id,
                    author: record.author,
                    reason,
                });
            }
        }
        state
    }

    fn apply(&mut self, r: &ControlRecord) -> Result<(), &'static str> {
        let author_role = match self.members.get(&r.author) {
            Some(m) if m.active() => m.role,
            _ => return Err("author-not-a-member"),
        };
        let admin = author_role == Role::Admin;
        match &r.op {
            ControlOp::Add {
                member,
                role,
                x25519,
            } => {
                let self_update = *member == r.author && *role <= author_role;
                if !admin && !self_update {
                    return Err("not-admin");
                }
                let is_new = !self.is_active(member);
                if is_new && self.active_count() >= MAX_MEMBERS {
                    return Err("group-full");
                }
                self.members.insert(
                    *member,
                    MemberState {
                        role: *role,
                        x25519: Some(*x25519),
                        cutoff: None,
                    },
                );
                self.holders.insert(*member);
            }
            ControlOp::Remove {
                member,
                cutoff,
                epoch,
            } => {
                if !admin {
                    return Err("not-admin");
                }
                if *member == r.author {
                    return Err("remove-self");
                }
                if !self.is_active(member) {
                    return Err("not-a-member");
                }
                self.check_epoch(epoch.epoch)?;
                if let Some(m) = self.members.get_mut(member) {
                    m.cutoff = Some(*cutoff);
                }
                self.start_epoch(r.id, epoch);
            }
            ControlOp::SetRole { member, role } => {
                if !admin {
                    return Err("not-admin");
                }
                match self.members.get_mut(member) {
                    Some(m) if m.active() => m.role = *role,
                    _ => return Err("not-a-member"),
                }
            }
            ControlOp::Leave => {
                if let Some(m) = self.members.get_mut(&r.author) {
                    m.cutoff = Some(r.seq);
                }
            }
            ControlOp::Rotate { epoch } => {
                if !admin {
                    return Err("not-admin");
                }
                self.check_epoch(epoch.epoch)?;
                self.start_epoch(r.id, epoch);
            }
        }
        Ok(())
    }

    /// An epoch block starts the current epoch again (a concurrent start of the same number)
    /// or the next one; anything else has no effect.
    fn check_epoch(&self, epoch: u64) -> Result<(), &'static str> {
        if epoch == 0 || (epoch != self.epoch && epoch != self.epoch.saturating_add(1)) {
            return Err("epoch-out-of-order");
        }
        Ok(())
    }

    fn start_epoch(&mut self, entry: Id32, block: &super::control::EpochBlock) {
        self.epoch = block.epoch;
        self.starts.push(EpochStart {
            epoch: block.epoch,
            entry,
        });
        self.holders = block.secrets.iter().map(|s| s.recipient).collect();
    }

    fn active_count(&self) -> usize {
        self.members.values().filter(|m| m.active()).count()
    }

    /// Whether `node` is in the group now.
    pub fn is_active(&self, node: &Id32) -> bool {
        self.members.get(node).is_some_and(MemberState::active)
    }

    /// The role of `node`, if it is in the group now.
    pub fn role(&self, node: &Id32) -> Option<Role> {
        self.members
            .get(node)
            .filter(|m| m.active())
            .map(|m| m.role)
    }

    /// Whether an entry of `author` at `seq` is valid: the author is in the group, or was and
    /// the entry is within its cutoff.
    pub fn may_write(&self, author: &Id32, seq: u64) -> bool {
        match self.members.get(author) {
            Some(m) => m.cutoff.is_none_or(|c| seq <= c),
            None => false,
        }
    }

    /// Every member the fold knows of, former ones included.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn members(&self) -> &BTreeMap<Id32, MemberState> {
        &self.members
    }

    /// Members in the group now, with their X25519 keys where registered.
    pub fn active(&self) -> impl Iterator<Item = (&Id32, &MemberState)> {
        self.members.iter().filter(|(_, m)| m.active())
    }

    /// Each former member and its cutoff: its entries past it are invalid.
    pub fn cutoffs(&self) -> Vec<(Id32, u64)> {
        self.members
            .iter()
            .filter_map(|(id, m)| m.cutoff.map(|c| (*id, c)))
            .collect()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Every valid epoch start, in fold order; the last is the current epoch's.
    pub fn epoch_starts(&self) -> &[EpochStart] {
        &self.starts
    }

    /// The control entry whose secret is the current epoch's (`None`: epoch 0, the root).
    pub fn current_start(&self) -> Option<&EpochStart> {
        self.starts.last()
    }

    /// Entries with no effect, and why.
    pub fn ignored(&self) -> &[Ignored] {
        &self.ignored
    }

    /// Control entries dropped for lying past their author's cutoff.
    #[cfg(test)]
    pub fn past_cutoff(&self) -> &BTreeSet<Id32> {
        &self.past_cutoff
    }

    /// Whether someone no longer in the group may hold the current epoch's secret (it was
    /// sealed to them, or handed to them at an invite): the epoch must move again.
    pub fn needs_rekey(&self) -> bool {
        self.holders.iter().any(|h| !self.is_active(h))
    }

    /// The admin that starts the epoch [`Membership::needs_rekey`] asks for: the active
    /// admin with the lowest node id, so exactly one member acts.
    pub fn healer(&self) -> Option<Id32> {
        self.active()
            .find(|(_, m)| m.role == Role::Admin)
            .map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::control::{EpochBlock, SEALED_SECRET_LEN, SealedSecret};

    fn id(n: u8) -> Id32 {
        [n; 32]
    }

    fn block(epoch: u64, to: &[u8]) -> EpochBlock {
        EpochBlock {
            epoch,
            ephemeral: [0; 32],
            secrets: to
                .iter()
                .map(|n| SealedSecret {
                    recipient: id(*n),
                    sealed: [0; SEALED_SECRET_LEN],
                })
                .collect(),
        }
    }

    fn rec(entry: u8, author: u8, seq: u64, lamport: u64, op: ControlOp) -> ControlRecord {
        ControlRecord {
            id: id(entry),
            author: id(author),
            seq,
            lamport,
            op,
        }
    }

    fn add(member: u8, role: Role) -> ControlOp {
        ControlOp::Add {
            member: id(member),
            role,
            x25519: [member; 32],
        }
    }

    fn remove(member: u8, cutoff: u64, epoch: u64, to: &[u8]) -> ControlOp {
        ControlOp::Remove {
            member: id(member),
            cutoff,
            epoch: block(epoch, to),
        }
    }

    /// Every order of `records`, as delivery could bring them.
    fn permutations(records: &[ControlRecord]) -> Vec<Vec<ControlRecord>> {
        if records.len() <= 1 {
            return vec![records.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..records.len() {
            let mut rest = records.to_vec();
            let first = rest.remove(i);
            for mut tail in permutations(&rest) {
                tail.insert(0, first.clone());
                out.push(tail);
            }
        }
        out
    }

    fn same_in_every_order(creator: u8, records: &[ControlRecord]) -> Membership {
        let expected = Membership::fold(id(creator), records);
        for order in permutations(records) {
            assert_eq!(Membership::fold(id(creator), &order), expected);
        }
        expected
    }

    #[test]
    fn admins_add_and_members_cannot() {
        let m = same_in_every_order(
            1,
            &[
                rec(10, 1, 1, 1, add(1, Role::Admin)),
                rec(11, 1, 2, 2, add(2, Role::Member)),
                rec(12, 2, 1, 3, add(3, Role::Member)),
                rec(13, 2, 2, 4, add(2, Role::Admin)),
                rec(14, 2, 3, 5, add(2, Role::Member)),
            ],
        );
        assert!(m.is_active(&id(2)));
        assert!(!m.is_active(&id(3)), "a member cannot add");
        assert_eq!(m.role(&id(2)), Some(Role::Member), "nor raise its own role");
        let reasons: Vec<&str> = m.ignored().iter().map(|i| i.reason).collect();
        assert_eq!(reasons, ["not-admin", "not-admin"]);
        assert_eq!(m.members()[&id(2)].x25519, Some([2; 32]));
    }

    #[test]
    fn two_admins_removing_each_other_resolve_the_same_way_in_every_order() {
        let base = [
            rec(10, 1, 1, 1, add(1, Role::Admin)),
            rec(11, 1, 2, 2, add(2, Role::Admin)),
            rec(12, 1, 3, 3, add(3, Role::Member)),
        ];
        // Concurrent at lamport 4: entry 20 (1 removes 2) sorts before 21 (2 removes 1).
        let mut records = base.to_vec();
        records.push(rec(20, 1, 4, 4, remove(2, 0, 1, &[1, 3])));
        records.push(rec(21, 2, 1, 4, remove(1, 3, 1, &[2, 3])));
        let m = same_in_every_order(1, &records);
        assert!(m.is_active(&id(1)));
        assert!(!m.is_active(&id(2)));
        assert_eq!(m.epoch(), 1);
        assert_eq!(m.current_start().map(|s| s.entry), Some(id(20)));
        assert!(m.past_cutoff().contains(&id(21)), "2's removal lies past its cutoff");
        assert!(!m.may_write(&id(2), 1));
        assert!(!m.needs_rekey());
        // The other tie-break: ids swapped, so 2's removal of 1 comes first.
        let mut swapped = base.to_vec();
        swapped.push(rec(21, 1, 4, 4, remove(2, 0, 1, &[1, 3])));
        swapped.push(rec(20, 2, 1, 4, remove(1, 3, 1, &[2, 3])));
        let m = same_in_every_order(1, &swapped);
        assert!(!m.is_active(&id(1)) && m.is_active(&id(2)));
        assert!(m.may_write(&id(1), 3), "1's entries up to its cutoff stay");
        assert!(!m.may_write(&id(1), 4));
    }

    #[test]
    fn an_add_racing_the_removal_of_its_adder() {
        let records = [
            rec(10, 1, 1, 1, add(1, Role::Admin)),
            rec(11, 1, 2, 2, add(2, Role::Admin)),
            // 2 is removed at lamport 3, concurrently with 2 adding 4 at lamport 3.
            rec(30, 1, 3, 3, remove(2, 0, 1, &[1])),
            rec(31, 2, 1, 3, add(4, Role::Member)),
        ];
        let m = same_in_every_order(1, &records);
        assert!(!m.is_active(&id(4)), "the add lies past its author's cutoff");
        assert!(!m.may_write(&id(4), 1));
    }

    #[test]
    fn a_removed_member_cannot_write_past_its_cutoff_even_with_a_low_clock() {
        let records = [
            rec(10, 1, 1, 1, add(1, Role::Admin)),
            rec(11, 1, 2, 2, add(2, Role::Admin)),
            // 2's control entry at seq 5 carries a clock below the removal's.
            rec(12, 2, 5, 3, add(7, Role::Member)),
            rec(13, 1, 3, 10, remove(2, 4, 1, &[1])),
        ];
        let m = same_in_every_order(1, &records);
        assert!(m.may_write(&id(2), 4));
        assert!(!m.may_write(&id(2), 5));
        assert!(!m.is_active(&id(7)), "dropped past the cutoff, so the add never happened");
    }

    #[test]
    fn leave_and_concurrent_epochs_ask_for_a_rekey() {
        let records = [
            rec(10, 1, 1, 1, add(1, Role::Admin)),
            rec(11, 1, 2, 2, add(2, Role::Admin)),
            rec(12, 1, 3, 3, add(3, Role::Member)),
            rec(13, 1, 4, 4, add(4, Role::Member)),
            // Concurrent removals by two admins: each seals epoch 1 to whom it keeps.
            rec(20, 1, 5, 5, remove(3, 0, 1, &[1, 2, 4])),
            rec(21, 2, 1, 5, remove(4, 0, 1, &[1, 2, 3])),
        ];
        let m = same_in_every_order(1, &records);
        assert!(!m.is_active(&id(3)) && !m.is_active(&id(4)));
        assert_eq!(m.epoch(), 1);
        assert_eq!(m.epoch_starts().len(), 2);
        assert!(m.needs_rekey(), "3 holds the secret of entry 21, the current one");
        assert_eq!(m.healer(), Some(id(1)));
        let mut healed = records.to_vec();
        healed.push(rec(30, 1, 6, 6, ControlOp::Rotate {
            epoch: block(2, &[1, 2]),
        }));
        let m = Membership::fold(id(1), &healed);
        assert!(!m.needs_rekey());
        assert_eq!(m.epoch(), 2);
        // A member leaving holds the current secret: that asks for a rekey too.
        let left = [
            rec(10, 1, 1, 1, add(1, Role::Admin)),
            rec(11, 1, 2, 2, add(2, Role::Member)),
            rec(12, 2, 1, 3, ControlOp::Leave),
        ];
        let m = same_in_every_order(1, &left);
        assert!(!m.is_active(&id(2)) && m.may_write(&id(2), 1) && !m.may_write(&id(2), 2));
        assert!(m.needs_rekey());
    }

    #[test]
    fn epochs_move_one_at_a_time_and_strangers_change_nothing() {
        let records = [
            rec(10, 1, 1, 1, add(1, Role::Admin)),
            rec(11, 1, 2, 2, ControlOp::Rotate {
                epoch: block(5, &[1]),
            }),
            rec(12, 9, 1, 3, add(9, Role::Admin)),
        ];
        let m = same_in_every_order(1, &records);
        assert_eq!(m.epoch(), 0);
        let reasons: Vec<&str> = m.ignored().iter().map(|i| i.reason).collect();
        assert_eq!(reasons, ["epoch-out-of-order"]);
        assert!(!m.is_active(&id(9)));
        assert!(m.past_cutoff().contains(&id(12)), "a stranger's entries are never valid");
    }

    /// Partitions: members that saw different subsets converge once they hold the union.
    #[test]
    fn partitions_converge_on_the_union() {
        let all = [
            rec(10, 1, 1, 1, add(1, Role::Admin)),
            rec(11, 1, 2, 2, add(2, Role::Admin)),
            rec(12, 1, 3, 3, add(3, Role::Member)),
            rec(20, 1, 4, 4, remove(3, 0, 1, &[1, 2])),
            rec(21, 2, 1, 4, add(5, Role::Member)),
            rec(22, 2, 2, 5, remove(1, 4, 1, &[2, 5])),
        ];
        let whole = Membership::fold(id(1), &all);
        // Each side of a partition folds only part, then they merge in any order.
        for mask in 0u32..(1 << all.len()) {
            let (left, right): (Vec<_>, Vec<_>) =
                all.iter().cloned().enumerate().partition(|(i, _)| mask & (1 << i) != 0);
            let mut merged: Vec<ControlRecord> = right.into_iter().map(|(_, r)| r).collect();
            merged.extend(left.into_iter().map(|(_, r)| r));
            assert_eq!(Membership::fold(id(1), &merged), whole);
        }
        assert!(!whole.is_active(&id(3)));
    }
}
