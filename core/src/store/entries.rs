//! The `entries` table: every stored entry, by group, author and seq, with its local cursor.

use rusqlite::{Connection, OptionalExtension, params};

use super::codec::{column_bytes, column_u64, from_sql, to_sql};
use crate::error::Result;
use crate::wire::entry::{Id32, SignedEntry};
use crate::wire::frame::Head;

/// A stored entry: its local cursor and encoding.
#[derive(Debug, Clone)]
pub struct StoredRow {
    /// Local, strictly increasing position.
    pub cursor: u64,
    /// The encoded signed entry.
    pub raw: Vec<u8>,
}

/// An author's newest entry in a group: what the next entry of the log must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    /// Its seq.
    pub seq: u64,
    /// Its id (the next entry's `prev`).
    pub id: Id32,
    /// Its lamport clock (the next entry's lamport is bounded by it).
    pub lamport: u64,
}

impl LogHead {
    /// The head of a log that holds nothing yet: seq 0, zero id, lamport 0.
    pub const EMPTY: LogHead = LogHead {
        seq: 0,
        id: [0u8; 32],
        lamport: 0,
    };
}

/// The author's newest entry in a group.
pub fn head(conn: &Connection, group: &Id32, author: &Id32) -> Result<Option<LogHead>> {
    Ok(conn
        .prepare_cached(
            "SELECT seq, entry_id, lamport FROM entries WHERE group_id = ?1 AND author = ?2
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![group, author], |r| {
            Ok(LogHead {
                seq: column_u64(r, 0)?,
                id: column_bytes(r, 1)?,
                lamport: column_u64(r, 2)?,
            })
        })
        .optional()?)
}

/// The group's version vector. Logs are stored contiguously (only seq = head + 1 is ever
/// accepted), so the highest seq per author is the highest contiguous one.
pub fn frontier(conn: &Connection, group: &Id32) -> Result<Vec<Head>> {
    // A skip-scan over the (group_id, author, seq) index: one seek per author instead of a
    // walk over every entry of the group (which made each catch-up batch, and each ack, cost
    // time proportional to the whole log).
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE a(author) AS (
             SELECT (SELECT MIN(author) FROM entries WHERE group_id = ?1)
             UNION ALL
             SELECT (SELECT MIN(author) FROM entries WHERE group_id = ?1 AND author > a.author)
             FROM a WHERE a.author IS NOT NULL)
         SELECT author, (SELECT MAX(seq) FROM entries WHERE group_id = ?1 AND author = a.author)
         FROM a WHERE author IS NOT NULL ORDER BY author",
    )?;
    let rows = stmt.query_map(params![group], |r| {
        Ok(Head {
            author: column_bytes(r, 0)?,
            seq: column_u64(r, 1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The highest lamport clock stored for a group, 0 if none. A scan of the group (there is no
/// lamport index, which would cost every commit a page): the node calls it once per group at
/// open and keeps the value in memory.
pub fn max_lamport(conn: &Connection, group: &Id32) -> Result<u64> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT MAX(lamport) FROM entries WHERE group_id = ?1")?
        .query_row(params![group], |r| r.get(0))?;
    v.map_or(Ok(0), |v| from_sql(v, "the highest lamport clock"))
}

/// Whether an entry with this id is stored.
pub(crate) fn has_entry(conn: &Connection, entry_id: &Id32) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM entries WHERE entry_id = ?1")?
        .query_row(params![entry_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Stores a verified entry of `group` and returns its cursor. The group comes from the
/// caller, not the entry: a header carries only the group's entry reference.
pub fn insert_entry(conn: &Connection, group: &Id32, entry: &SignedEntry) -> Result<u64> {
    let h = entry.header();
    conn.prepare_cached(
        "INSERT INTO entries (entry_id, group_id, author, seq, lamport, timestamp_ms, raw)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        entry.id(),
        group,
        h.author,
        to_sql(h.seq)?,
        to_sql(h.lamport)?,
        to_sql(h.timestamp_ms)?,
        entry.raw()
    ])?;
    from_sql(conn.last_insert_rowid(), "a new entry's cursor")
}

fn stored_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredRow>> {
    let rows = stmt.query_map(params, |r| {
        Ok(StoredRow {
            cursor: column_u64(r, 0)?,
            raw: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Data entries of a group after a local cursor, oldest first (control entries are the
/// group's own bookkeeping, not the app's).
pub fn entries_after(
    conn: &Connection,
    group: &Id32,
    after_cursor: u64,
    limit: u32,
) -> Result<Vec<StoredRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT cursor, raw FROM entries WHERE group_id = ?1 AND cursor > ?2
         AND substr(raw, 2, 1) = x'00' ORDER BY cursor LIMIT ?3",
    )?;
    stored_rows(&mut stmt, params![group, to_sql(after_cursor)?, limit])
}

/// One entry by id.
pub(crate) fn entry_by_id(
    conn: &Connection,
    group: &Id32,
    entry_id: &Id32,
) -> Result<Option<StoredRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT cursor, raw FROM entries WHERE group_id = ?1 AND entry_id = ?2
         AND substr(raw, 2, 1) = x'00'",
    )?;
    Ok(stored_rows(&mut stmt, params![group, entry_id])?.pop())
}

/// The author and seq of one entry of a group, without reading its encoding.
pub(crate) fn entry_position(
    conn: &Connection,
    group: &Id32,
    entry_id: &Id32,
) -> Result<Option<(Id32, u64)>> {
    Ok(conn
        .prepare_cached("SELECT author, seq FROM entries WHERE group_id = ?1 AND entry_id = ?2")?
        .query_row(params![group, entry_id], |r| {
            Ok((column_bytes(r, 0)?, column_u64(r, 1)?))
        })
        .optional()?)
}

/// Most bytes postcard spends on a length prefix (a varint of a `usize`).
const LENGTH_VARINT_MAX: usize = 10;

/// Encoded entries of one author in `(after_seq, up_to_seq]`, at most `max_count` of them and
/// at most `max_bytes` once each entry's frame length prefix is counted (but always at least
/// one, so progress is made).
pub fn log_range(
    conn: &Connection,
    group: &Id32,
    author: &Id32,
    after_seq: u64,
    up_to_seq: u64,
    max_count: u32,
    max_bytes: usize,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, raw FROM entries WHERE group_id = ?1 AND author = ?2 AND seq > ?3 AND seq <= ?4
         ORDER BY seq LIMIT ?5",
    )?;
    let mut rows = stmt.query(params![
        group,
        author,
        to_sql(after_seq)?,
        // Every stored seq fits an i64, so asking up to u64::MAX means up to the last one.
        to_sql(up_to_seq.min(i64::MAX as u64))?,
        max_count
    ])?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let raw: Vec<u8> = row.get(1)?;
        // Each entry costs its bytes plus its length prefix in the frame (a varint).
        let cost = raw.len() + LENGTH_VARINT_MAX;
        if !out.is_empty() && bytes + cost > max_bytes {
            break;
        }
        bytes += cost;
        out.push((column_u64(row, 0)?, raw));
    }
    Ok(out)
}

/// Distinct authors seen in a group.
pub(crate) fn authors(conn: &Connection, group: &Id32) -> Result<Vec<Id32>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT author FROM entries WHERE group_id = ?1 ORDER BY author",
    )?;
    let rows = stmt.query_map(params![group], |r| column_bytes(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Number of entries stored, in all groups.
pub fn entry_count(conn: &Connection) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM entries")?
        .query_row([], |r| r.get(0))?;
    from_sql(n, "the entry count")
}
