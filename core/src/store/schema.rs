//! Schema migrations, tracked with `PRAGMA user_version`, each applied in one transaction.

use rusqlite::Connection;

use crate::error::{CoveyError, Result};

/// Every migration, in order; migration `i` moves the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 0 -> 1: groups, entries, idempotency keys and remembered peers.
    "
    CREATE TABLE groups (
        group_id   BLOB PRIMARY KEY NOT NULL CHECK (length(group_id) = 32),
        name       TEXT NOT NULL,
        kind       INTEGER NOT NULL,
        epoch      INTEGER NOT NULL,
        joined_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE entries (
        -- The rowid: strictly increasing as entries are stored. Without AUTOINCREMENT a cursor
        -- could be reused only after the newest row is deleted, which happens only when a whole
        -- group is dropped; AUTOINCREMENT would cost a page write on every commit.
        cursor        INTEGER PRIMARY KEY,
        entry_id      BLOB NOT NULL UNIQUE CHECK (length(entry_id) = 32),
        group_id      BLOB NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
        author        BLOB NOT NULL CHECK (length(author) = 32),
        seq           INTEGER NOT NULL CHECK (seq >= 1),
        lamport       INTEGER NOT NULL,
        timestamp_ms  INTEGER NOT NULL,
        raw           BLOB NOT NULL,
        UNIQUE (group_id, author, seq)
    );
    CREATE INDEX entries_group_cursor ON entries(group_id, cursor);

    CREATE TABLE client_ids (
        group_id      BLOB NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
        client_id     TEXT NOT NULL,
        entry_id      BLOB NOT NULL REFERENCES entries(entry_id) ON DELETE CASCADE,
        payload_mac   BLOB NOT NULL,
        PRIMARY KEY (group_id, client_id)
    ) WITHOUT ROWID;

    CREATE TABLE peers (
        node_id    BLOB PRIMARY KEY NOT NULL CHECK (length(node_id) = 32),
        ticket     TEXT NOT NULL,
        added_ms   INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 1 -> 2: delivery receipts. The highest contiguous seq of each author that each peer
    // has acknowledged holding in a group; it only ever grows.
    "
    CREATE TABLE peer_heads (
        group_id  BLOB NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
        peer      BLOB NOT NULL CHECK (length(peer) = 32),
        author    BLOB NOT NULL CHECK (length(author) = 32),
        seq       INTEGER NOT NULL CHECK (seq >= 0),
        PRIMARY KEY (group_id, peer, author)
    ) WITHOUT ROWID;
    ",
    // 2 -> 3: the DHT records this node holds for the network. `seq` and `expires_at_ms` are
    // u64 stored order-preserving as `(v XOR 2^63)` reinterpreted as i64 (see
    // `dht::sqlite_store`), so SQL comparisons match the u64 ones over the whole range.
    // `key` is the record's DHT key, derived from (publisher, name), for lookups by key.
    // Provider rows keep their rowid so listings come back in the order they were added.
    "
    CREATE TABLE dht_records (
        publisher      BLOB NOT NULL CHECK (length(publisher) = 32),
        name           BLOB NOT NULL CHECK (length(name) <= 256),
        key            BLOB NOT NULL UNIQUE CHECK (length(key) = 32),
        seq            INTEGER NOT NULL,
        value          BLOB NOT NULL,
        expires_at_ms  INTEGER NOT NULL,
        signature      BLOB NOT NULL,
        PRIMARY KEY (publisher, name)
    ) WITHOUT ROWID;
    CREATE INDEX dht_records_expiry ON dht_records(expires_at_ms);

    CREATE TABLE dht_providers (
        id             INTEGER PRIMARY KEY,
        key            BLOB NOT NULL CHECK (length(key) = 32),
        provider       BLOB NOT NULL CHECK (length(provider) = 32),
        expires_at_ms  INTEGER NOT NULL,
        signature      BLOB NOT NULL,
        UNIQUE (key, provider)
    );
    CREATE INDEX dht_providers_expiry ON dht_providers(expires_at_ms);
    ",
    // 3 -> 4: DHT contacts this node saw answer, with an address to dial them by, so a node
    // whose bootstrap tickets all fail can still rejoin the network it knew.
    "
    CREATE TABLE dht_contacts (
        node_id       BLOB PRIMARY KEY CHECK (length(node_id) = 32),
        ticket        TEXT NOT NULL,
        last_seen_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Reads the current schema version.
pub fn version(conn: &Connection) -> Result<u32> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

/// Applies every migration past the database's version, each in its own transaction, so a
/// crash leaves the database at a whole version.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let current = version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(CoveyError::storage(format!(
            "database schema version {current} is newer than this build ({SCHEMA_VERSION}); upgrade Covey"
        )));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as u32 + 1)?;
        tx.commit()?;
        log::info!("store migrated to schema version {}", from + 1);
    }
    Ok(())
}
