//! Schema migrations, tracked with `PRAGMA user_version`, each applied in one transaction.
//!
//! Each migration is a numbered SQL file in `store/migrations/`, built into the binary with
//! `include_str!`; file `NNNN_*.sql` moves the schema from version `NNNN - 1` to `NNNN`. A
//! shipped file never changes (SQLite keeps the text of its statements in `sqlite_master`, and
//! databases in the field were built from it): a schema change is a new file appended to
//! `MIGRATIONS`, with a test in `store/migration_tests.rs` that migrates a database holding
//! rows from the version before it.

use rusqlite::Connection;

use crate::error::{CoveyError, Result};

/// Every migration, in order; `MIGRATIONS[i]` moves the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_peer_heads.sql"),
    include_str!("migrations/0003_dht_records.sql"),
    include_str!("migrations/0004_dht_contacts.sql"),
    include_str!("migrations/0005_protocol_v2.sql"),
    include_str!("migrations/0006_managed_groups.sql"),
];

/// The schema version whose migration moves a database to protocol v2 entries.
const PROTOCOL_V2_SCHEMA: u32 = 5;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Refuses a database that holds protocol v1 entries: no node of protocol v2 accepts them
/// and only their authors could re-sign them, so the app must decide what to do with them
/// rather than have them dropped or a fresh store started over them.
fn refuse_v1_entries(conn: &Connection) -> Result<()> {
    let v1: i64 = conn.query_row(
        "SELECT COUNT(*) FROM entries WHERE substr(raw, 1, 1) = x'01'",
        [],
        |r| r.get(0),
    )?;
    if v1 > 0 {
        return Err(CoveyError::storage(format!(
            "the database holds {v1} entries of protocol v1, which this build (protocol v2) \
             can neither sync nor convert; open it with the Covey release that wrote it to \
             read them out, or move the data dir aside to start a new one"
        )));
    }
    Ok(())
}

/// Reads the current schema version.
pub fn version(conn: &Connection) -> Result<u32> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

/// Applies every migration past the database's version, each in its own transaction, so a
/// crash leaves the database at a whole version. A database from a newer build is refused.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// [`migrate`], stopping at version `target` (the migration tests build databases at every
/// earlier version this way).
pub(crate) fn migrate_to(conn: &mut Connection, target: u32) -> Result<()> {
    let current = version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(CoveyError::storage(format!(
            "database schema version {current} is newer than this build ({SCHEMA_VERSION}); upgrade Covey"
        )));
    }
    let target = target.min(SCHEMA_VERSION);
    for (from, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target as usize)
        .skip(current as usize)
    {
        let tx = conn.transaction()?;
        if from as u32 + 1 == PROTOCOL_V2_SCHEMA {
            refuse_v1_entries(&tx)?;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as u32 + 1)?;
        tx.commit()?;
        log::info!("store migrated to schema version {}", from + 1);
    }
    Ok(())
}
