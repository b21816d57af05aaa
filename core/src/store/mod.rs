//! The node's one SQLite database: schema, pragmas and every SQL statement Covey runs.
//!
//! Calls block; the node runs them on tokio's blocking pool. One connection writes and one
//! reads, so WAL lets reads (entry pages, catch-up ranges) proceed while a write commits.
//!
//! - [`schema`]: the migrations (numbered SQL files in `migrations/`) and the version check.
//! - `codec`: how integers and fixed-size blobs sit in columns, for every query here.
//! - One module per table family, holding its queries: `groups`, `entries`, `client_ids`,
//!   `peers`, `peer_heads`, `dht_contacts`, and `dht_records` (the DHT's
//!   [`RecordStore`](crate::dht::RecordStore) on the `dht_records` and `dht_providers`
//!   tables).
//!
//! Query functions are `pub(crate)` unless a crate outside covey-core (the simulator, the
//! benchmarks, the integration tests) calls them.

mod client_ids;
mod codec;
mod dht_contacts;
mod dht_records;
mod entries;
mod groups;
mod lock;
mod managed;
#[cfg(test)]
mod migration_tests;
mod peer_heads;
mod peers;
inside_mod!(schema);
#[cfg(test)]
mod testing;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction};

pub(crate) use client_ids::{client_id, put_client_id};
pub(crate) use dht_contacts::{dht_contacts, replace_dht_contacts};
pub(crate) use dht_records::SqliteRecordStore;
pub use entries::{
    LogHead, StoredRow, entries_after, entry_count, frontier, head, insert_entry, log_range,
    max_lamport,
};
pub(crate) use entries::{authors, entry_by_id, entry_position, has_entry};
pub(crate) use groups::{groups, set_group_epoch};
pub use groups::{GroupRow, insert_group};
pub(crate) use lock::DirLock;
pub use managed::InviteRow;
pub use managed::{
    control_entries, creator, delete_group, delete_past_cutoff, insert_invite, invite, set_creator,
    use_invite, put_welcome_controls, welcome_controls,
};
pub use peer_heads::record_peer_heads;
pub(crate) use peer_heads::{peer_heads_for, peers_in_group};
pub(crate) use peers::{peers, put_peer};

use crate::error::{CoveyError, Result};

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

/// The database file name inside a data dir.
pub const DB_FILE: &str = "covey.db";

/// One SQLite database with a writer and a reader connection.
#[derive(Debug)]
pub struct Store {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
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
        })
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
    fn second_lock_on_a_dir_is_a_conflict_naming_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Conflict);
        assert!(err.message().contains(&dir.path().display().to_string()));
        drop(_first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
