//! Building, storing and reading back this node's entries.

use std::sync::atomic::Ordering;

use subtle::ConstantTimeEq;

use super::inner::{GroupState, Inner, now_ms};
use super::types::{Entry, EntryId, EntryMeta};
use crate::crypto::aead;
use crate::error::{CoveyError, ErrorKind, Result};
use crate::group::GroupId;
use crate::group::admission::open_payload;
use crate::store;
use crate::sync::engine;
use crate::wire::entry::SignedEntry;

pub(super) fn publish_in(
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
    // The same append the simulator's nodes use; the lamport clock is capped in there so
    // every honest clock stays within what peers accept.
    let draft = engine::Draft {
        lamport: group.max_lamport.load(Ordering::Acquire).saturating_add(1),
        timestamp_ms: now_ms(),
        nonce: aead::random_nonce(),
        payload,
    };
    let (cursor, entry) = engine::append_own_entry(tx, &group.keys, &inner.secret, draft)?;
    // Raised before commit; if the commit fails the clock is merely ahead, which is harmless.
    group
        .max_lamport
        .fetch_max(entry.header().lamport, Ordering::AcqRel);
    if let Some(cid) = client_id {
        store::put_client_id(tx, &gid, cid, entry.id(), &mac)?;
    }
    Ok((cursor, entry, true))
}

/// What the app sees of entry `entry` of group `group` stored at `cursor`.
pub(super) fn meta_of(group: GroupId, cursor: u64, entry: &SignedEntry) -> Result<EntryMeta> {
    let h = entry.header();
    Ok(EntryMeta {
        cursor,
        entry_id: EntryId(*entry.id()),
        group_id: group,
        author: iroh::PublicKey::from_bytes(&h.author)
            .map_err(|_| CoveyError::storage("stored entry has an invalid author"))?,
        seq: h.seq,
        lamport: h.lamport,
        timestamp_ms: h.timestamp_ms,
    })
}

/// Reads a stored data entry of `group`, opening its payload under its epoch's key.
pub(super) fn open_row(row: store::StoredRow, group: &GroupState) -> Result<Entry> {
    let entry = SignedEntry::decode(row.raw, usize::MAX)
        .map_err(|e| CoveyError::storage(format!("corrupt stored entry: {e}")))?;
    let payload = open_payload(&entry, &group.epoch_keys)?;
    Ok(Entry {
        meta: meta_of(group.keys.id, row.cursor, &entry)?,
        payload: payload.to_vec(),
    })
}
