//! The store side of a sync session, sans-IO: the view the machine reads
//! ([`Snapshot`], [`snapshot`]), how a batch from a peer is verified and stored
//! ([`ingest_batch`], [`ingest_prepared`]), how a queued range becomes one bounded frame
//! ([`read_range_batch`]), and how this node appends to its own log ([`append_own_entry`]).
//! The driver core ([`super::driver`]) asks for these; each transport runs them on its own
//! thread or pool.

use std::collections::{BTreeMap, BTreeSet};

use iroh::SecretKey;
use rusqlite::Connection;

use crate::error::Result;
use crate::group::GroupKeys;
use crate::store;
use crate::wire::entry::{ENTRY_VERSION, EntryHeader, EntryKind, Id32, SignedEntry};
use crate::wire::frame::{Head, Message};

use super::session::LocalView;
use super::verify::{self, Outcome, Rules};

/// Most entries read from the store for one `Entries` frame.
pub const BATCH_MAX_ENTRIES: u32 = 1024;

/// Room left in a frame for the message envelope around a batch of entries.
pub const FRAME_ENVELOPE_ROOM: usize = 1024;

/// A read-only picture of local state for a session: the groups this node is in and the
/// frontiers a message needs (see [`super::session::SyncSession::frontiers_needed`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every group this node is in.
    pub groups: BTreeSet<Id32>,
    /// Frontiers of the groups that were loaded; any other group reads as empty.
    pub frontiers: BTreeMap<Id32, Vec<Head>>,
}

impl LocalView for Snapshot {
    fn has_group(&self, group: &Id32) -> bool {
        self.groups.contains(group)
    }

    fn groups(&self) -> Vec<Id32> {
        self.groups.iter().copied().collect()
    }

    fn frontier(&self, group: &Id32) -> Vec<Head> {
        self.frontiers.get(group).cloned().unwrap_or_default()
    }
}

/// Reads the frontiers of `load` into a [`Snapshot`] of `joined`.
pub fn snapshot(conn: &Connection, joined: &BTreeSet<Id32>, load: &[Id32]) -> Result<Snapshot> {
    let mut frontiers = BTreeMap::new();
    for group in load.iter().filter(|g| joined.contains(*g)) {
        frontiers.insert(*group, store::frontier(conn, group)?);
    }
    Ok(Snapshot {
        groups: joined.clone(),
        frontiers,
    })
}

/// What storing one batch from a peer came to, in the terms the session machine and the
/// driver need.
#[derive(Debug, Default)]
pub struct Ingested {
    /// The verifier's full outcome (stored entries with cursors, rejections, counts).
    pub outcome: Outcome,
    /// Per author, the highest seq newly stored, ordered by author: fan these out to every
    /// session with `on_local_entry`.
    pub stored: Vec<Head>,
    /// Per author, the highest seq the batch held (stored or already held), ordered by
    /// author: hand these to `on_ingested`.
    pub held: Vec<Head>,
    /// Each entry of the batch that was already held: hand these to `count_replayed`.
    pub duplicates: Vec<Head>,
    /// The group's frontier after the batch.
    pub frontier: Vec<Head>,
    /// Highest lamport clock among the newly stored entries (0 if none): the next publish
    /// must go past it.
    pub max_lamport: u64,
}

/// Verifies and stores a batch through `tx` (one write transaction) as a member holding
/// `content_key`, with the session's held-back entries `held`, and reads the group's new frontier in the same transaction.
#[cfg(any(test, feature = "test-utils"))]
pub fn ingest_batch(
    tx: &Connection,
    rules: &Rules,
    content_key: Option<&crate::crypto::Secret32>,
    held: &mut verify::Unverified,
    entries: Vec<Vec<u8>>,
) -> Result<Ingested> {
    ingest_prepared(tx, rules, verify::prepare(rules, content_key, entries), held)
}

/// Like [`ingest_batch`] for a batch already through [`verify::prepare`] (decoded and its
/// payloads tried off the write transaction). `held` is the session's held-back entries
/// ([`verify::Unverified`]): batches of one session go through here in order, with the same
/// `held`.
pub fn ingest_prepared(
    tx: &Connection,
    rules: &Rules,
    prepared: verify::Prepared,
    held: &mut verify::Unverified,
) -> Result<Ingested> {
    let outcome = verify::store_prepared(tx, rules, prepared, held)?;
    let frontier = store::frontier(tx, &rules.group_id)?;
    let mut newest: BTreeMap<Id32, u64> = BTreeMap::new();
    let mut max_lamport = 0;
    for (_, entry) in &outcome.stored {
        let h = entry.header();
        max_lamport = max_lamport.max(h.lamport);
        let seq = newest.entry(h.author).or_insert(0);
        *seq = (*seq).max(h.seq);
    }
    let to_heads = |m: &BTreeMap<Id32, u64>| -> Vec<Head> {
        m.iter()
            .map(|(author, seq)| Head {
                author: *author,
                seq: *seq,
            })
            .collect()
    };
    let stored = to_heads(&newest);
    for dup in &outcome.duplicate_heads {
        let seq = newest.entry(dup.author).or_insert(0);
        *seq = (*seq).max(dup.seq);
    }
    let held = to_heads(&newest);
    let duplicates = outcome.duplicate_heads.clone();
    Ok(Ingested {
        outcome,
        stored,
        held,
        duplicates,
        frontier,
        max_lamport,
    })
}

/// A batch's rejections grouped by reason, in the order each reason first appeared.
pub fn rejection_summary(outcome: &Outcome) -> Vec<(&'static str, usize)> {
    let mut reasons: Vec<(&'static str, usize)> = Vec::new();
    for r in &outcome.rejected {
        match reasons.iter_mut().find(|(k, _)| *k == r.reason) {
            Some((_, n)) => *n += 1,
            None => reasons.push((r.reason, 1)),
        }
    }
    reasons
}

/// One frame's worth of a queued range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeBatch {
    /// The `Entries` message to send; `None` when the store holds nothing in the range (the
    /// range is then dropped).
    pub message: Option<Message>,
    /// The unsent rest, `(after_seq, up_to_seq)`, to hand back with `Outbox::requeue_range`.
    pub rest: Option<(u64, u64)>,
}

/// Reads the next batch of `(after_seq, up_to_seq]` of `author`'s log in `group`: at most
/// [`BATCH_MAX_ENTRIES`] entries and at most a frame of `max_frame_bytes` (always at least one
/// entry, so a range always makes progress).
pub fn read_range_batch(
    conn: &Connection,
    group: Id32,
    author: Id32,
    after_seq: u64,
    up_to_seq: u64,
    max_frame_bytes: usize,
) -> Result<RangeBatch> {
    let batch_bytes = max_frame_bytes.saturating_sub(FRAME_ENVELOPE_ROOM);
    let rows = store::log_range(
        conn,
        &group,
        &author,
        after_seq,
        up_to_seq,
        BATCH_MAX_ENTRIES,
        batch_bytes,
    )?;
    let Some(last) = rows.last().map(|(seq, _)| *seq) else {
        return Ok(RangeBatch {
            message: None,
            rest: None,
        });
    };
    let rest = (last < up_to_seq).then_some((last, up_to_seq));
    let entries = rows.into_iter().map(|(_, raw)| raw).collect();
    Ok(RangeBatch {
        message: Some(Message::Entries { group, entries }),
        rest,
    })
}

/// What a new entry of this node's own log is made of, apart from the log position the store
/// decides.
#[derive(Debug, Clone, Copy)]
pub struct Draft<'a> {
    /// Lamport clock: one more than the highest the node has seen in the group.
    pub lamport: u64,
    /// Author wall clock, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// AEAD nonce (random for real nodes; seeded in a simulation).
    pub nonce: [u8; crate::crypto::aead::NONCE_LEN],
    /// The plaintext payload.
    pub payload: &'a [u8],
}

/// Appends the next entry of `secret`'s log in the group of `keys` through `tx`: seq, prev and
/// the lamport bound from the stored head, sealed under the group's content key, signed,
/// inserted. Returns its cursor and the entry.
pub fn append_own_entry(
    tx: &Connection,
    keys: &GroupKeys,
    secret: &SecretKey,
    draft: Draft<'_>,
) -> Result<(u64, SignedEntry)> {
    append_own(tx, keys, secret, draft, EntryKind::Data)
}

/// Deletes the entries of `group` that lie past their author's cutoff in `membership`: a
/// removed member's entries stored before this node learnt of the removal, which every member
/// refuses, so every member ends with the same logs. Returns how many.
pub fn purge_past_cutoffs(
    tx: &Connection,
    group: &Id32,
    membership: &crate::group::membership::Membership,
) -> Result<u64> {
    let mut purged = 0;
    for (author, cutoff) in membership.cutoffs() {
        purged += store::delete_past_cutoff(tx, group, &author, cutoff)?;
    }
    Ok(purged)
}

/// Like [`append_own_entry`] for a control entry of a managed group: kind 1, sealed under the
/// group's control key (`group::control` is its payload).
pub fn append_own_control(
    tx: &Connection,
    keys: &GroupKeys,
    secret: &SecretKey,
    draft: Draft<'_>,
) -> Result<(u64, SignedEntry)> {
    append_own(tx, keys, secret, draft, EntryKind::Control)
}

fn append_own(
    tx: &Connection,
    keys: &GroupKeys,
    secret: &SecretKey,
    draft: Draft<'_>,
    kind: EntryKind,
) -> Result<(u64, SignedEntry)> {
    let gid = keys.id.0;
    let me = *secret.public().as_bytes();
    let head = store::head(tx, &gid, &me)?.unwrap_or(store::LogHead::EMPTY);
    let header = EntryHeader {
        version: ENTRY_VERSION,
        kind,
        group_ref: keys.entry_group,
        author: me,
        seq: head.seq + 1,
        prev: head.id,
        lamport: verify::next_lamport(head.lamport, draft.lamport),
        epoch: keys.epoch,
        timestamp_ms: draft.timestamp_ms,
        nonce: draft.nonce,
    };
    let key = match kind {
        EntryKind::Data => &keys.content_key,
        EntryKind::Control => &keys.control_key,
    };
    let entry = SignedEntry::seal(header, key, secret, draft.payload)?;
    let cursor = store::insert_entry(tx, &gid, &entry)?;
    Ok((cursor, entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secret32;
    use crate::store::{Durability, GroupRow, Store};

    fn setup() -> (tempfile::TempDir, Store, GroupKeys, SecretKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Normal).unwrap();
        let keys = GroupKeys::from_root(&Secret32::from_bytes([7; 32]));
        let row = GroupRow {
            group_id: keys.id.0,
            name: "g".into(),
            kind: 0,
            epoch: 0,
        };
        store.write(|tx| store::insert_group(tx, &row, 0)).unwrap();
        (dir, store, keys, SecretKey::from_bytes(&[3; 32]))
    }

    fn draft(lamport: u64, payload: &[u8]) -> Draft<'_> {
        Draft {
            lamport,
            timestamp_ms: 1,
            nonce: [lamport as u8; 24],
            payload,
        }
    }

    #[test]
    fn own_entries_chain_and_batches_resume_where_they_stopped() {
        let (_dir, store, keys, secret) = setup();
        let payload = vec![0u8; 300];
        for i in 1..=10 {
            let (_, e) = store
                .write(|tx| append_own_entry(tx, &keys, &secret, draft(i, &payload)))
                .unwrap();
            assert_eq!(e.header().seq, i);
        }
        let me = *secret.public().as_bytes();
        // A frame that fits about three entries: the rest is handed back.
        let small_frame = FRAME_ENVELOPE_ROOM + 3 * 600;
        let batch = store
            .read(|c| read_range_batch(c, keys.id.0, me, 2, 10, small_frame))
            .unwrap();
        let Some(Message::Entries { entries, .. }) = &batch.message else {
            panic!("expected entries, got {batch:?}")
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(batch.rest, Some((5, 10)));
        let all = store
            .read(|c| read_range_batch(c, keys.id.0, me, 5, 10, 1 << 20))
            .unwrap();
        assert_eq!(all.rest, None);
        let empty = store
            .read(|c| read_range_batch(c, keys.id.0, me, 10, 20, 1 << 20))
            .unwrap();
        assert_eq!(
            empty,
            RangeBatch {
                message: None,
                rest: None
            }
        );
    }

    #[test]
    fn ingest_reports_stored_held_and_duplicates_per_author() {
        let (_src_dir, src, keys, secret) = setup();
        let (_dst_dir, dst, _, _) = setup();
        let mut raws = Vec::new();
        for i in 1..=4 {
            let (_, e) = src
                .write(|tx| append_own_entry(tx, &keys, &secret, draft(10 + i, b"x")))
                .unwrap();
            raws.push(e.into_raw());
        }
        let rules = Rules::of(&keys, 1024);
        let key = keys.content_key.clone();
        let first = dst
            .write(|tx| ingest_batch(tx, &rules, Some(&key), &mut Default::default(), raws[..2].to_vec()))
            .unwrap();
        let me = *secret.public().as_bytes();
        let head = |seq| Head { author: me, seq };
        assert_eq!(first.stored, vec![head(2)]);
        assert_eq!(first.held, vec![head(2)]);
        assert_eq!(first.frontier, vec![head(2)]);
        assert_eq!(first.max_lamport, 12);
        let second = dst
            .write(|tx| ingest_batch(tx, &rules, Some(&key), &mut Default::default(), raws.clone()))
            .unwrap();
        assert_eq!(second.stored, vec![head(4)]);
        assert_eq!(second.duplicates, vec![head(1), head(2)]);
        assert_eq!(second.held, vec![head(4)]);
        assert!(rejection_summary(&second.outcome).is_empty());
    }
}
