//! The `groups` table: the groups this node has joined.

use rusqlite::{Connection, params};

use super::codec::{column_bytes, column_u64, to_sql};
use crate::error::Result;
use crate::wire::entry::Id32;

/// A group as the store remembers it (its secret lives in the key store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    /// Group id.
    pub group_id: Id32,
    /// Human name given at join.
    pub name: String,
    /// 0 passphrase, 1 managed.
    pub kind: u8,
    /// Current epoch.
    pub epoch: u64,
}

/// Remembers a joined group; joining again is a no-op.
pub fn insert_group(conn: &Connection, group: &GroupRow, now_ms: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO groups (group_id, name, kind, epoch, joined_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(group_id) DO NOTHING",
    )?
    .execute(params![
        group.group_id,
        group.name,
        group.kind,
        to_sql(group.epoch)?,
        to_sql(now_ms)?
    ])?;
    Ok(())
}

/// Every joined group, oldest first.
pub(crate) fn groups(conn: &Connection) -> Result<Vec<GroupRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT group_id, name, kind, epoch FROM groups ORDER BY joined_ms, name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(GroupRow {
            group_id: column_bytes(r, 0)?,
            name: r.get(1)?,
            kind: r.get(2)?,
            epoch: column_u64(r, 3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Records the current epoch of a group.
pub(crate) fn set_group_epoch(conn: &Connection, group: &Id32, epoch: u64) -> Result<()> {
    conn.prepare_cached("UPDATE groups SET epoch = ?2 WHERE group_id = ?1")?
        .execute(params![group, to_sql(epoch)?])?;
    Ok(())
}
