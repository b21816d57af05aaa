//! The node's one SQLite database: schema, pragmas and the queries the node needs.
//!
//! Calls block; the node runs them on tokio's blocking pool. One connection writes and one
//! reads, so WAL lets reads (entry pages, catch-up ranges) proceed while a write commits.

mod lock;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

pub use lock::DirLock;

use crate::error::{CoveyError, Result};
use crate::wire::entry::{Id32, SignedEntry};
use crate::wire::frame::Head;

/// How hard commits push to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// WAL with `synchronous = NORMAL`: a commit survives a process crash; the last few may
    /// be lost on power failure.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is fsynced before it returns.
    Full,
}

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

/// A stored entry: its local cursor and encoding.
#[derive(Debug, Clone)]
pub struct StoredRow {
    /// Local, strictly increasing position.
    pub cursor: u64,
    /// The encoded signed entry.
    pub raw: Vec<u8>,
}

/// The database file name inside a data dir.
pub const DB_FILE: &str = "covey.db";

/// One SQLite database with a writer and a reader connection.
#[derive(Debug)]
pub struct Store {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    path: PathBuf,
}

fn configure(conn: &Connection, durability: Durability) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        },
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    // Checkpoint the WAL every 8192 pages rather than every 1000: a catch-up commits many
    // pages per batch and the default spent a fifth of its CPU checkpointing. An 8 MiB page
    // cache per connection keeps the indexes' upper levels hot during bulk ingest.
    conn.pragma_update(None, "wal_autocheckpoint", 8192)?;
    conn.pragma_update(None, "cache_size", -8192)?;
    Ok(())
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| CoveyError::invalid(format!("{v} does not fit the store")))
}

fn blob32(bytes: Vec<u8>) -> Result<Id32> {
    bytes
        .try_into()
        .map_err(|_| CoveyError::storage("corrupt store: id is not 32 bytes"))
}

impl Store {
    /// Opens (creating if needed) the database in `dir` and migrates it to the current schema.
    pub fn open(dir: &Path, durability: Durability) -> Result<Self> {
        let path = dir.join(DB_FILE);
        let mut writer = Connection::open(&path).map_err(|e| {
            CoveyError::storage(format!("cannot open database {}: {e}", path.display()))
        })?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CoveyError::storage(format!(
                "{} could not switch to WAL (got {mode})",
                path.display()
            )));
        }
        configure(&writer, durability)?;
        schema::migrate(&mut writer)?;
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&reader, durability)?;
        Ok(Self {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            path,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one write transaction, committed when `f` returns `Ok`.
    pub fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| CoveyError::internal("store writer lock poisoned"))?;
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Folds the write-ahead log back into the database file (at shutdown), so the data dir
    /// is one self-contained file when the node is closed.
    pub fn checkpoint(&self) -> Result<()> {
        let conn = self
            .writer
            .lock()
            .map_err(|_| CoveyError::internal("store writer lock poisoned"))?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Runs `f` on the read connection.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| CoveyError::internal("store reader lock poisoned"))?;
        f(&conn)
    }
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
        to_i64(group.epoch)?,
        to_i64(now_ms)?
    ])?;
    Ok(())
}

/// Every joined group, oldest first.
pub fn groups(conn: &Connection) -> Result<Vec<GroupRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT group_id, name, kind, epoch FROM groups ORDER BY joined_ms, name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u8>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, kind, epoch) = row?;
        out.push(GroupRow {
            group_id: blob32(id)?,
            name,
            kind,
            epoch: epoch as u64,
        });
    }
    Ok(out)
}

/// The author's newest entry in a group: its seq and id.
pub fn head(conn: &Connection, group: &Id32, author: &Id32) -> Result<Option<(u64, Id32)>> {
    let row = conn
        .prepare_cached(
            "SELECT seq, entry_id FROM entries WHERE group_id = ?1 AND author = ?2
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![group, author], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .optional()?;
    row.map(|(seq, id)| Ok((seq as u64, blob32(id)?)))
        .transpose()
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
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (author, seq) = row?;
        out.push(Head {
            author: blob32(author)?,
            seq: seq as u64,
        });
    }
    Ok(out)
}

/// The highest lamport clock stored for a group, 0 if none. A scan of the group (there is no
/// lamport index, which would cost every commit a page): the node calls it once per group at
/// open and keeps the value in memory.
pub fn max_lamport(conn: &Connection, group: &Id32) -> Result<u64> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT MAX(lamport) FROM entries WHERE group_id = ?1")?
        .query_row(params![group], |r| r.get(0))?;
    Ok(v.unwrap_or(0) as u64)
}

/// Whether an entry with this id is stored.
pub fn has_entry(conn: &Connection, entry_id: &Id32) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM entries WHERE entry_id = ?1")?
        .query_row(params![entry_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Stores a verified entry and returns its cursor.
pub fn insert_entry(conn: &Connection, entry: &SignedEntry) -> Result<u64> {
    let h = entry.header();
    conn.prepare_cached(
        "INSERT INTO entries (entry_id, group_id, author, seq, lamport, timestamp_ms, raw)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        entry.id(),
        h.group_id,
        h.author,
        to_i64(h.seq)?,
        to_i64(h.lamport)?,
        to_i64(h.timestamp_ms)?,
        entry.raw()
    ])?;
    Ok(conn.last_insert_rowid() as u64)
}

fn stored_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredRow>> {
    let rows = stmt.query_map(params, |r| {
        Ok(StoredRow {
            cursor: r.get::<_, i64>(0)? as u64,
            raw: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Entries of a group after a local cursor, oldest first.
pub fn entries_after(
    conn: &Connection,
    group: &Id32,
    after_cursor: u64,
    limit: u32,
) -> Result<Vec<StoredRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT cursor, raw FROM entries WHERE group_id = ?1 AND cursor > ?2
         ORDER BY cursor LIMIT ?3",
    )?;
    stored_rows(&mut stmt, params![group, to_i64(after_cursor)?, limit])
}

/// One entry by id.
pub fn entry_by_id(conn: &Connection, group: &Id32, entry_id: &Id32) -> Result<Option<StoredRow>> {
    let mut stmt = conn
        .prepare_cached("SELECT cursor, raw FROM entries WHERE group_id = ?1 AND entry_id = ?2")?;
    Ok(stored_rows(&mut stmt, params![group, entry_id])?.pop())
}

/// The author and seq of one entry of a group, without reading its encoding.
pub fn entry_position(
    conn: &Connection,
    group: &Id32,
    entry_id: &Id32,
) -> Result<Option<(Id32, u64)>> {
    let row = conn
        .prepare_cached("SELECT author, seq FROM entries WHERE group_id = ?1 AND entry_id = ?2")?
        .query_row(params![group, entry_id], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?;
    row.map(|(author, seq)| Ok((blob32(author)?, seq as u64)))
        .transpose()
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
        to_i64(after_seq)?,
        to_i64(up_to_seq.min(i64::MAX as u64))?,
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
        out.push((row.get::<_, i64>(0)? as u64, raw));
    }
    Ok(out)
}

/// Distinct authors seen in a group.
pub fn authors(conn: &Connection, group: &Id32) -> Result<Vec<Id32>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT author FROM entries WHERE group_id = ?1 ORDER BY author",
    )?;
    let rows = stmt.query_map(params![group], |r| r.get::<_, Vec<u8>>(0))?;
    rows.map(|r| blob32(r?)).collect()
}

/// Number of entries stored, in all groups.
pub fn entry_count(conn: &Connection) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM entries")?
        .query_row([], |r| r.get(0))?;
    Ok(n as u64)
}

/// The entry previously published under a client id, with the MAC of its payload.
pub fn client_id(
    conn: &Connection,
    group: &Id32,
    client_id: &str,
) -> Result<Option<(Id32, Vec<u8>)>> {
    let row = conn
        .prepare_cached(
            "SELECT entry_id, payload_mac FROM client_ids WHERE group_id = ?1 AND client_id = ?2",
        )?
        .query_row(params![group, client_id], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .optional()?;
    row.map(|(id, mac)| Ok((blob32(id)?, mac))).transpose()
}

/// Records the entry published under a client id.
pub fn put_client_id(
    conn: &Connection,
    group: &Id32,
    client_id: &str,
    entry_id: &Id32,
    payload_mac: &[u8; 32],
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO client_ids (group_id, client_id, entry_id, payload_mac) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![group, client_id, entry_id, payload_mac])?;
    Ok(())
}

/// Remembers a peer's address ticket, replacing an older one.
pub fn put_peer(conn: &Connection, node_id: &Id32, ticket: &str, now_ms: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO peers (node_id, ticket, added_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(node_id) DO UPDATE SET ticket = excluded.ticket",
    )?
    .execute(params![node_id, ticket, to_i64(now_ms)?])?;
    Ok(())
}

/// Every remembered peer's ticket.
pub fn peers(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT ticket FROM peers ORDER BY added_ms")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Replaces the cached DHT contacts with `contacts` (node id, address ticket, last seen).
pub fn replace_dht_contacts(conn: &Connection, contacts: &[(Id32, String, u64)]) -> Result<()> {
    conn.execute("DELETE FROM dht_contacts", [])?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO dht_contacts (node_id, ticket, last_seen_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(node_id) DO UPDATE SET ticket = excluded.ticket,
             last_seen_ms = excluded.last_seen_ms",
    )?;
    for (id, ticket, seen) in contacts {
        stmt.execute(params![id, ticket, to_i64(*seen)?])?;
    }
    Ok(())
}

/// The tickets of at most `limit` cached DHT contacts, most recently seen first.
pub fn dht_contacts(conn: &Connection, limit: usize) -> Result<Vec<String>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT ticket FROM dht_contacts ORDER BY last_seen_ms DESC, node_id LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Records the heads a peer has acknowledged holding in a group (its delivery receipts).
/// Each (peer, author) keeps the highest seq ever recorded: a peer's acknowledged frontier
/// never goes backwards, so a stale or reordered acknowledgement changes nothing. Heads whose
/// seq does not fit the store (above `i64::MAX`, which no real log reaches) are skipped. The
/// group must be stored (a foreign key); heads for an unknown group fail with `Storage`.
pub fn record_peer_heads(
    conn: &Connection,
    group: &Id32,
    peer: &Id32,
    heads: &[Head],
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO peer_heads (group_id, peer, author, seq) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(group_id, peer, author) DO UPDATE SET seq = max(seq, excluded.seq)",
    )?;
    for head in heads {
        let Ok(seq) = i64::try_from(head.seq) else {
            log::debug!(
                "skipping an acknowledged head with seq {} out of range",
                head.seq
            );
            continue;
        };
        stmt.execute(params![group, peer, head.author, seq])?;
    }
    Ok(())
}

/// Every peer with an acknowledged head for `author`'s log in a group, and that head's seq,
/// ordered by peer.
pub fn peer_heads_for(conn: &Connection, group: &Id32, author: &Id32) -> Result<Vec<(Id32, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT peer, seq FROM peer_heads WHERE group_id = ?1 AND author = ?2 ORDER BY peer",
    )?;
    let rows = stmt.query_map(params![group, author], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (peer, seq) = row?;
        out.push((blob32(peer)?, seq as u64));
    }
    Ok(out)
}

/// Distinct peers that have acknowledged anything in a group, ordered.
pub fn peers_in_group(conn: &Connection, group: &Id32) -> Result<Vec<Id32>> {
    let mut stmt = conn
        .prepare_cached("SELECT DISTINCT peer FROM peer_heads WHERE group_id = ?1 ORDER BY peer")?;
    let rows = stmt.query_map(params![group], |r| r.get::<_, Vec<u8>>(0))?;
    rows.map(|r| blob32(r?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_from_empty_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), Durability::Normal).unwrap();
            let v = store.read(schema::version).unwrap();
            assert_eq!(v, schema::SCHEMA_VERSION);
            store
                .write(|tx| {
                    insert_group(
                        tx,
                        &GroupRow {
                            group_id: [1; 32],
                            name: "g".into(),
                            kind: 0,
                            epoch: 0,
                        },
                        5,
                    )
                })
                .unwrap();
        }
        let store = Store::open(dir.path(), Durability::Full).unwrap();
        assert_eq!(store.read(groups).unwrap().len(), 1);
        let fk: i64 = store
            .read(|c| Ok(c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn dht_contacts_are_replaced_and_listed_most_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Normal).unwrap();
        let rows = vec![
            ([1; 32], "t1".to_owned(), 10),
            ([2; 32], "t2".to_owned(), 30),
            ([3; 32], "t3".to_owned(), 20),
        ];
        store.write(|tx| replace_dht_contacts(tx, &rows)).unwrap();
        assert_eq!(
            store.read(|c| dht_contacts(c, 10)).unwrap(),
            ["t2", "t3", "t1"]
        );
        assert_eq!(store.read(|c| dht_contacts(c, 1)).unwrap(), ["t2"]);
        store
            .write(|tx| replace_dht_contacts(tx, &rows[..1]))
            .unwrap();
        assert_eq!(store.read(|c| dht_contacts(c, 10)).unwrap(), ["t1"]);
        drop(store);
        let store = Store::open(dir.path(), Durability::Normal).unwrap();
        assert_eq!(store.read(|c| dht_contacts(c, 10)).unwrap(), ["t1"]);
    }

    #[test]
    fn every_migration_applies_from_every_earlier_version() {
        for start in 0..=schema::SCHEMA_VERSION as usize {
            let dir = tempfile::tempdir().unwrap();
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            for (i, sql) in schema::MIGRATIONS.iter().enumerate().take(start) {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", i as u32 + 1)
                    .unwrap();
            }
            drop(conn);
            let store = Store::open(dir.path(), Durability::Normal).unwrap();
            assert_eq!(store.read(schema::version).unwrap(), schema::SCHEMA_VERSION);
        }
    }

    fn group_row(id: Id32) -> GroupRow {
        GroupRow {
            group_id: id,
            name: "g".into(),
            kind: 0,
            epoch: 0,
        }
    }

    fn head(author: u8, seq: u64) -> Head {
        Head {
            author: [author; 32],
            seq,
        }
    }

    #[test]
    fn version_1_database_migrates_to_2_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        insert_group(&conn, &group_row([7; 32]), 1).unwrap();
        put_peer(&conn, &[9; 32], "ticket-9", 2).unwrap();
        assert_eq!(schema::version(&conn).unwrap(), 1);
        let has_table = |c: &Connection| -> bool {
            c.query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'peer_heads'",
                [],
                |_| Ok(()),
            )
            .optional()
            .unwrap()
            .is_some()
        };
        assert!(!has_table(&conn), "version 1 has no peer_heads");
        drop(conn);

        let store = Store::open(dir.path(), Durability::Normal).unwrap();
        assert_eq!(store.read(schema::version).unwrap(), schema::SCHEMA_VERSION);
        assert!(store.read(|c| Ok(has_table(c))).unwrap());
        assert_eq!(store.read(groups).unwrap(), vec![group_row([7; 32])]);
        assert_eq!(store.read(peers).unwrap(), vec!["ticket-9".to_owned()]);
        // The new table works against the rows that were already there.
        store
            .write(|tx| record_peer_heads(tx, &[7; 32], &[9; 32], &[head(1, 3)]))
            .unwrap();
        assert_eq!(
            store
                .read(|c| peer_heads_for(c, &[7; 32], &[1; 32]))
                .unwrap(),
            vec![([9; 32], 3)]
        );
    }

    #[test]
    fn peer_heads_keep_the_max_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (g, other_g) = ([1; 32], [2; 32]);
        let (p, q) = ([0xaa; 32], [0xbb; 32]);
        {
            let store = Store::open(dir.path(), Durability::Normal).unwrap();
            store
                .write(|tx| {
                    insert_group(tx, &group_row(g), 1)?;
                    insert_group(tx, &group_row(other_g), 1)?;
                    record_peer_heads(tx, &g, &p, &[head(1, 5), head(2, 1)])?;
                    // Goes backwards for author 1 (ignored), forwards for author 2.
                    record_peer_heads(tx, &g, &p, &[head(1, 2), head(2, 4)])?;
                    record_peer_heads(tx, &g, &q, &[head(1, 6), head(3, 0)])?;
                    record_peer_heads(tx, &other_g, &p, &[head(1, 100)])?;
                    // Out of the store's range: skipped, not an error.
                    record_peer_heads(tx, &g, &q, &[head(4, u64::MAX)])
                })
                .unwrap();
        }
        let store = Store::open(dir.path(), Durability::Normal).unwrap();
        assert_eq!(
            store.read(|c| peer_heads_for(c, &g, &[1; 32])).unwrap(),
            vec![(p, 5), (q, 6)]
        );
        assert_eq!(
            store.read(|c| peer_heads_for(c, &g, &[2; 32])).unwrap(),
            vec![(p, 4)]
        );
        assert_eq!(
            store.read(|c| peer_heads_for(c, &g, &[4; 32])).unwrap(),
            vec![]
        );
        assert_eq!(store.read(|c| peers_in_group(c, &g)).unwrap(), vec![p, q]);
        assert_eq!(
            store
                .read(|c| peer_heads_for(c, &other_g, &[1; 32]))
                .unwrap(),
            vec![(p, 100)]
        );
        assert_eq!(
            store.read(|c| peers_in_group(c, &[3; 32])).unwrap(),
            Vec::<Id32>::new()
        );
    }

    #[test]
    fn peer_heads_need_a_stored_group_and_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Normal).unwrap();
        let err = store
            .write(|tx| record_peer_heads(tx, &[5; 32], &[6; 32], &[head(1, 1)]))
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Storage);
        store
            .write(|tx| {
                insert_group(tx, &group_row([5; 32]), 1)?;
                record_peer_heads(tx, &[5; 32], &[6; 32], &[head(1, 1)])
            })
            .unwrap();
        assert_eq!(
            store.read(|c| peers_in_group(c, &[5; 32])).unwrap(),
            vec![[6; 32]]
        );
        store
            .write(|tx| {
                tx.execute("DELETE FROM groups WHERE group_id = ?1", params![[5u8; 32]])?;
                Ok(())
            })
            .unwrap();
        assert_eq!(
            store.read(|c| peers_in_group(c, &[5; 32])).unwrap(),
            Vec::<Id32>::new()
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        drop(conn);
        let err = Store::open(dir.path(), Durability::Normal).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Storage);
        assert!(err.message().contains("newer"));
    }

    #[test]
    fn second_lock_on_a_dir_is_a_conflict_naming_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Conflict);
        assert!(err.message().contains(&dir.path().display().to_string()));
        drop(_first);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn version_2_database_migrates_to_the_latest_keeping_its_rows() {
        use crate::dht::record::{ProviderRecord, Record, RecordQuotas, RecordStore, provider_key};
        use crate::dht::sqlite_store::SqliteRecordStore;

        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().take(2) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i as u32 + 1)
                .unwrap();
        }
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        insert_group(&conn, &group_row([7; 32]), 1).unwrap();
        put_peer(&conn, &[9; 32], "ticket-9", 2).unwrap();
        record_peer_heads(&conn, &[7; 32], &[9; 32], &[head(1, 3), head(2, 8)]).unwrap();
        assert_eq!(schema::version(&conn).unwrap(), 2);
        let dht_tables = |c: &Connection| -> i64 {
            c.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'
                 AND name IN ('dht_records', 'dht_providers')",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(dht_tables(&conn), 0, "version 2 has no DHT tables");
        drop(conn);

        let store = std::sync::Arc::new(Store::open(dir.path(), Durability::Normal).unwrap());
        assert_eq!(store.read(schema::version).unwrap(), schema::SCHEMA_VERSION);
        assert_eq!(store.read(|c| Ok(dht_tables(c))).unwrap(), 2);
        assert!(store.read(|c| dht_contacts(c, 10)).unwrap().is_empty());
        assert_eq!(store.read(groups).unwrap(), vec![group_row([7; 32])]);
        assert_eq!(store.read(peers).unwrap(), vec!["ticket-9".to_owned()]);
        assert_eq!(
            store
                .read(|c| peer_heads_for(c, &[7; 32], &[1; 32]))
                .unwrap(),
            vec![([9; 32], 3)]
        );
        assert_eq!(
            store
                .read(|c| peer_heads_for(c, &[7; 32], &[2; 32]))
                .unwrap(),
            vec![([9; 32], 8)]
        );
        // The new tables work in the migrated database.
        let secret = iroh::SecretKey::from_bytes(&[4; 32]);
        let record = Record::sign(&secret, b"name", b"value", 1, 10_000).unwrap();
        let provider = ProviderRecord::sign(&secret, provider_key(b"app"), 10_000);
        let mut dht = SqliteRecordStore::new(store.clone(), RecordQuotas::default());
        dht.put(record.clone(), 5).unwrap();
        dht.add_provider(provider.clone(), 5).unwrap();
        assert_eq!(dht.get(&record.key(), 5), Some(record));
        assert_eq!(dht.provider_records(), vec![provider]);
    }
}
