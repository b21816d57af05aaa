//! What the store keeps of managed groups: each group's creator, the invites this node
//! issued (a hash of each secret, never the secret), and its control entries.

use rusqlite::{Connection, OptionalExtension, params};

use super::codec::{column_u64, to_sql};
use crate::error::Result;
use crate::wire::entry::Id32;

/// Records `creator` as the first admin of managed group `group`.
pub fn set_creator(conn: &Connection, group: &Id32, creator: &Id32) -> Result<()> {
    conn.prepare_cached("UPDATE groups SET creator = ?2 WHERE group_id = ?1")?
        .execute(params![group, creator])?;
    Ok(())
}

/// The creator of managed group `group` (`None` for a passphrase group).
pub fn creator(conn: &Connection, group: &Id32) -> Result<Option<Id32>> {
    let bytes: Option<Option<Vec<u8>>> = conn
        .prepare_cached("SELECT creator FROM groups WHERE group_id = ?1")?
        .query_row(params![group], |r| r.get(0))
        .optional()?;
    Ok(bytes.flatten().and_then(|b| b.try_into().ok()))
}

/// The encodings of every control entry of `group`, in store order.
pub fn control_entries(conn: &Connection, group: &Id32) -> Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT raw FROM entries WHERE group_id = ?1 AND substr(raw, 2, 1) = x'01'
         ORDER BY cursor",
    )?;
    let rows = stmt.query_map(params![group], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Keeps the control entries an invite's welcome brought (already verified).
pub fn put_welcome_controls(conn: &Connection, group: &Id32, raws: &[(Id32, Vec<u8>)]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO welcome_controls (group_id, entry_id, raw) VALUES (?1, ?2, ?3)",
    )?;
    for (id, raw) in raws {
        stmt.execute(params![group, id, raw])?;
    }
    Ok(())
}

/// The control entries of `group` an invite's welcome brought.
pub fn welcome_controls(conn: &Connection, group: &Id32) -> Result<Vec<Vec<u8>>> {
    let mut stmt =
        conn.prepare_cached("SELECT raw FROM welcome_controls WHERE group_id = ?1 ORDER BY entry_id")?;
    let rows = stmt.query_map(params![group], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Deletes the entries of `author` in `group` past seq `cutoff` (a removed member's entries
/// stored before its removal was known); returns how many.
pub fn delete_past_cutoff(
    conn: &Connection,
    group: &Id32,
    author: &Id32,
    cutoff: u64,
) -> Result<u64> {
    let n = conn
        .prepare_cached("DELETE FROM entries WHERE group_id = ?1 AND author = ?2 AND seq > ?3")?
        .execute(params![group, author, to_sql(cutoff.min(i64::MAX as u64))?])?;
    Ok(n as u64)
}

/// Deletes `group` and everything stored of it (entries, client ids, receipts, invites);
/// returns how many entries went.
pub fn delete_group(conn: &Connection, group: &Id32) -> Result<u64> {
    let entries = conn
        .prepare_cached("DELETE FROM entries WHERE group_id = ?1")?
        .execute(params![group])?;
    conn.prepare_cached("DELETE FROM peer_heads WHERE group_id = ?1")?
        .execute(params![group])?;
    // Client ids and invites go with the group row (ON DELETE CASCADE), but not every
    // database enforces foreign keys, so they are deleted by name too.
    conn.prepare_cached("DELETE FROM client_ids WHERE group_id = ?1")?
        .execute(params![group])?;
    conn.prepare_cached("DELETE FROM invites WHERE group_id = ?1")?
        .execute(params![group])?;
    conn.prepare_cached("DELETE FROM welcome_controls WHERE group_id = ?1")?
        .execute(params![group])?;
    conn.prepare_cached("DELETE FROM groups WHERE group_id = ?1")?
        .execute(params![group])?;
    Ok(entries as u64)
}

/// An invite this node issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRow {
    /// The invite's id.
    pub invite_id: [u8; 16],
    /// The group it invites to.
    pub group_id: Id32,
    /// BLAKE3 of the invite secret (`group::invite::secret_hash`).
    pub secret_hash: Id32,
    /// When it stops being answered, ms since the Unix epoch.
    pub expires_ms: u64,
    /// Whether it is answered once only.
    pub single_use: bool,
    /// How many joiners it let in.
    pub uses: u64,
}

/// Remembers an issued invite.
pub fn insert_invite(conn: &Connection, invite: &InviteRow) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO invites (invite_id, group_id, secret_hash, expires_ms, single_use, uses)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        invite.invite_id,
        invite.group_id,
        invite.secret_hash,
        to_sql(invite.expires_ms)?,
        invite.single_use,
        to_sql(invite.uses)?
    ])?;
    Ok(())
}

/// The invite `invite_id` this node issued, if any.
pub fn invite(conn: &Connection, invite_id: &[u8; 16]) -> Result<Option<InviteRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT group_id, secret_hash, expires_ms, single_use, uses FROM invites
             WHERE invite_id = ?1",
        )?
        .query_row(params![invite_id], |r| {
            Ok(InviteRow {
                invite_id: *invite_id,
                group_id: super::codec::column_bytes(r, 0)?,
                secret_hash: super::codec::column_bytes(r, 1)?,
                expires_ms: column_u64(r, 2)?,
                single_use: r.get(3)?,
                uses: column_u64(r, 4)?,
            })
        })
        .optional()?)
}

/// Counts one use of an invite.
pub fn use_invite(conn: &Connection, invite_id: &[u8; 16]) -> Result<()> {
    conn.prepare_cached("UPDATE invites SET uses = uses + 1 WHERE invite_id = ?1")?
        .execute(params![invite_id])?;
    Ok(())
}
