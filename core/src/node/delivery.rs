//! Delivery receipts: which peers have acknowledged holding an entry.
//!
//! A peer acknowledges the entries it holds by the heads it reports (the highest contiguous seq
//! per author). The session records those heads in the store (`store::record_peer_heads`),
//! keeping the highest per (peer, author), so receipts survive a restart and never go
//! backwards. Logs are contiguous, so a head of seq `n` for an author covers every entry of
//! that author up to `n`.

use std::collections::BTreeSet;

use iroh::EndpointId;

use super::Node;
use super::types::EntryId;
use crate::error::{CoveyError, Result};
use crate::group::GroupId;
use crate::store;
use crate::wire::entry::Id32;

/// Who has an entry, as far as this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Peers other than this node known to hold the entry, sorted: its author (when that is not
    /// this node) and every peer that has acknowledged the author's log up to the entry.
    pub acked_by: Vec<EndpointId>,
    /// Whether every member this node knows of, other than itself, is in `acked_by`. False when
    /// this node knows of no other member: nobody else has acknowledged the entry.
    pub all_members: bool,
}

/// Computes a receipt from what the store knows.
///
/// `author` and `seq` locate the entry; `me` is this node; `heads` holds each peer's
/// acknowledged seq for `author`'s log; `members` is every member known in the group (authors
/// of its log and peers that acknowledged anything; it may include `me`).
fn delivery_from(
    author: EndpointId,
    seq: u64,
    me: EndpointId,
    heads: &[(EndpointId, u64)],
    members: &[EndpointId],
) -> Delivery {
    let mut acked: BTreeSet<EndpointId> = heads
        .iter()
        .filter(|(peer, acked_seq)| *peer != me && *acked_seq >= seq)
        .map(|(peer, _)| *peer)
        .collect();
    // The author holds its own entry.
    if author != me {
        acked.insert(author);
    }
    let others: BTreeSet<EndpointId> = members
        .iter()
        .chain(heads.iter().map(|(peer, _)| peer))
        .chain(std::iter::once(&author))
        .filter(|m| **m != me)
        .copied()
        .collect();
    let all_members = !others.is_empty() && others.is_subset(&acked);
    Delivery {
        acked_by: acked.into_iter().collect(),
        all_members,
    }
}

/// Node ids from stored ids, skipping any that is not a valid key (the store only holds ids of
/// verified authors and authenticated peers, so none should be).
fn endpoint_ids(ids: impl IntoIterator<Item = Id32>) -> Vec<EndpointId> {
    ids.into_iter()
        .filter_map(|id| EndpointId::from_bytes(&id).ok())
        .collect()
}

impl Node {
    /// Delivery receipt of one entry of a group: the peers known to hold it and whether every
    /// member this node knows of has it. Receipts are persisted, so they survive a restart.
    /// Fails with `NotFound` if the group is not joined or this node does not hold the entry.
    pub async fn delivery(&self, group_id: &GroupId, entry_id: &EntryId) -> Result<Delivery> {
        self.check_open()?;
        self.inner.group(group_id)?;
        let (gid, eid) = (group_id.0, entry_id.0);
        let found = self
            .inner
            .store_read(move |c| {
                let Some((author, seq)) = store::entry_position(c, &gid, &eid)? else {
                    return Ok(None);
                };
                let heads = store::peer_heads_for(c, &gid, &author)?;
                let mut members = store::authors(c, &gid)?;
                members.extend(store::peers_in_group(c, &gid)?);
                Ok(Some((author, seq, heads, members)))
            })
            .await?;
        let Some((author, seq, heads, members)) = found else {
            return Err(CoveyError::not_found(format!(
                "no entry {entry_id} in group {group_id} on this node"
            )));
        };
        let author = EndpointId::from_bytes(&author)
            .map_err(|_| CoveyError::storage("stored entry has an invalid author"))?;
        let heads: Vec<(EndpointId, u64)> = heads
            .into_iter()
            .filter_map(|(peer, s)| EndpointId::from_bytes(&peer).ok().map(|p| (p, s)))
            .collect();
        Ok(delivery_from(
            author,
            seq,
            self.inner.id,
            &heads,
            &endpoint_ids(members),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[n; 32]).public()
    }

    fn sorted(mut ids: Vec<EndpointId>) -> Vec<EndpointId> {
        ids.sort();
        ids
    }

    #[test]
    fn own_entry_nobody_else_known_is_not_delivered() {
        let me = id(1);
        let d = delivery_from(me, 1, me, &[], &[me]);
        assert_eq!(
            d,
            Delivery {
                acked_by: vec![],
                all_members: false
            }
        );
    }

    #[test]
    fn peers_at_or_past_the_seq_ack_and_those_behind_do_not() {
        let (me, p, q, r) = (id(1), id(2), id(3), id(4));
        let heads = [(p, 3), (q, 5), (r, 2)];
        let d = delivery_from(me, 3, me, &heads, &[me, p, q, r]);
        assert_eq!(d.acked_by, sorted(vec![p, q]));
        assert!(!d.all_members, "r is behind");
        let heads = [(p, 3), (q, 5), (r, 3)];
        let d = delivery_from(me, 3, me, &heads, &[me, p, q, r]);
        assert_eq!(d.acked_by, sorted(vec![p, q, r]));
        assert!(d.all_members);
    }

    #[test]
    fn a_known_member_without_a_receipt_blocks_all_members() {
        let (me, p, q) = (id(1), id(2), id(3));
        // q authored something (it is a member) but never acknowledged this log.
        let d = delivery_from(me, 1, me, &[(p, 1)], &[me, p, q]);
        assert_eq!(d.acked_by, vec![p]);
        assert!(!d.all_members);
    }

    #[test]
    fn a_peer_only_known_from_receipts_counts_as_a_member() {
        let (me, p, q) = (id(1), id(2), id(3));
        // Members passed in lack q, but q has a (stale) receipt for this log.
        let d = delivery_from(me, 4, me, &[(p, 4), (q, 1)], &[me, p]);
        assert_eq!(d.acked_by, vec![p]);
        assert!(!d.all_members);
    }

    #[test]
    fn the_author_holds_its_own_entry() {
        let (me, author, p) = (id(1), id(2), id(3));
        // Received from `author`; nobody else acknowledged yet.
        let d = delivery_from(author, 7, me, &[], &[me, author]);
        assert_eq!(d.acked_by, vec![author]);
        assert!(d.all_members, "the author is the only other member");
        // A third member that has not acknowledged keeps it from being everyone.
        let d = delivery_from(author, 7, me, &[(p, 6)], &[me, author, p]);
        assert_eq!(d.acked_by, vec![author]);
        assert!(!d.all_members);
        // The author's own receipt does not duplicate it.
        let d = delivery_from(author, 7, me, &[(author, 7), (p, 9)], &[me, author, p]);
        assert_eq!(d.acked_by, sorted(vec![author, p]));
        assert!(d.all_members);
    }

    #[test]
    fn a_receipt_from_this_node_itself_is_ignored() {
        let (me, p) = (id(1), id(2));
        let d = delivery_from(me, 1, me, &[(me, 10)], &[me, p]);
        assert_eq!(d.acked_by, Vec::<EndpointId>::new());
        assert!(!d.all_members);
    }
}
