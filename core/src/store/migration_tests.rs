//! One test per migration: a database built at the version before it (by applying the
//! migration files up to there) gets rows, is migrated one step, and keeps its rows while
//! gaining the new tables. Then the whole ladder, from every version, through `Store::open`.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::testing::{group_row, head};
use super::{
    DB_FILE, Durability, SqliteRecordStore, Store, dht_contacts, groups, insert_group,
    peer_heads_for, peers, put_peer, record_peer_heads, replace_dht_contacts, schema,
};

/// A database in `dir` at schema `version`, built by applying the migrations up to it, with
/// foreign keys enforced as the store enforces them.
fn database_at(dir: &Path, version: u32) -> Connection {
    let mut conn = Connection::open(dir.join(DB_FILE)).unwrap();
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    schema::migrate_to(&mut conn, version).unwrap();
    assert_eq!(schema::version(&conn).unwrap(), version);
    conn
}

/// Migrates `conn` one step, to `version`.
fn step_to(conn: &mut Connection, version: u32) {
    schema::migrate_to(conn, version).unwrap();
    assert_eq!(schema::version(conn).unwrap(), version);
}

/// The names of `table`'s columns, in order; empty when there is no such table.
fn columns(conn: &Connection, table: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
        .unwrap();
    stmt.query_map([table], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Whether an index named `name` exists.
fn has_index(conn: &Connection, name: &str) -> bool {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .unwrap()
    .is_some()
}

/// Stores entry `[0xee; 32]` of `author` at `seq` in group `[7; 32]` with plain SQL (the rows of
/// an old version are written as that version's code wrote them, not through today's queries).
fn put_entry_row(conn: &Connection, author: u8, seq: i64) {
    conn.execute(
        "INSERT INTO entries (entry_id, group_id, author, seq, lamport, timestamp_ms, raw)
         VALUES (?1, ?2, ?3, ?4, ?4, 1000, x'00')",
        params![[0xeeu8; 32], [7u8; 32], [author; 32], seq],
    )
    .unwrap();
}

/// Rows present since version 1: a group with one entry and its client id, and a peer.
fn put_version_1_rows(conn: &Connection) {
    insert_group(conn, &group_row([7; 32]), 1).unwrap();
    put_entry_row(conn, 1, 1);
    conn.execute(
        "INSERT INTO client_ids (group_id, client_id, entry_id, payload_mac)
         VALUES (?1, 'c1', ?2, ?3)",
        params![[7u8; 32], [0xeeu8; 32], [5u8; 32]],
    )
    .unwrap();
    put_peer(conn, &[9; 32], "ticket-9", 2).unwrap();
}

/// The rows of [`put_version_1_rows`] are all there.
fn assert_version_1_rows(conn: &Connection) {
    assert_eq!(groups(conn).unwrap(), vec![group_row([7; 32])]);
    assert_eq!(peers(conn).unwrap(), vec!["ticket-9".to_owned()]);
    let entries: i64 = conn
        .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(entries, 1);
    let client: Vec<u8> = conn
        .query_row(
            "SELECT entry_id FROM client_ids WHERE client_id = 'c1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(client, [0xee; 32]);
}

#[test]
fn migration_1_creates_groups_entries_client_ids_and_peers() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = database_at(dir.path(), 0);
    assert!(columns(&conn, "groups").is_empty(), "version 0 is empty");
    step_to(&mut conn, 1);
    assert_eq!(
        columns(&conn, "groups"),
        ["group_id", "name", "kind", "epoch", "joined_ms"]
    );
    assert_eq!(
        columns(&conn, "entries"),
        [
            "cursor",
            "entry_id",
            "group_id",
            "author",
            "seq",
            "lamport",
            "timestamp_ms",
            "raw"
        ]
    );
    assert!(has_index(&conn, "entries_group_cursor"));
    assert_eq!(
        columns(&conn, "client_ids"),
        ["group_id", "client_id", "entry_id", "payload_mac"]
    );
    assert_eq!(columns(&conn, "peers"), ["node_id", "ticket", "added_ms"]);
    assert!(columns(&conn, "peer_heads").is_empty());
    put_version_1_rows(&conn);
    assert_version_1_rows(&conn);
}

#[test]
fn migration_2_adds_peer_heads_keeping_version_1_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = database_at(dir.path(), 1);
    put_version_1_rows(&conn);
    step_to(&mut conn, 2);
    assert_version_1_rows(&conn);
    assert_eq!(
        columns(&conn, "peer_heads"),
        ["group_id", "peer", "author", "seq"]
    );
    assert!(columns(&conn, "dht_records").is_empty());
    record_peer_heads(&conn, &[7; 32], &[9; 32], &[head(1, 1)]).unwrap();
    assert_eq!(
        peer_heads_for(&conn, &[7; 32], &[1; 32]).unwrap(),
        vec![([9; 32], 1)]
    );
}

#[test]
fn migration_3_adds_the_dht_record_tables_keeping_version_2_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = database_at(dir.path(), 2);
    put_version_1_rows(&conn);
    record_peer_heads(&conn, &[7; 32], &[9; 32], &[head(1, 1)]).unwrap();
    step_to(&mut conn, 3);
    assert_version_1_rows(&conn);
    assert_eq!(
        peer_heads_for(&conn, &[7; 32], &[1; 32]).unwrap(),
        vec![([9; 32], 1)]
    );
    assert_eq!(
        columns(&conn, "dht_records"),
        [
            "publisher",
            "name",
            "key",
            "seq",
            "value",
            "expires_at_ms",
            "signature"
        ]
    );
    assert!(has_index(&conn, "dht_records_expiry"));
    assert_eq!(
        columns(&conn, "dht_providers"),
        ["id", "key", "provider", "expires_at_ms", "signature"]
    );
    assert!(has_index(&conn, "dht_providers_expiry"));
    assert!(columns(&conn, "dht_contacts").is_empty());
}

#[test]
fn migration_4_adds_dht_contacts_keeping_version_3_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = database_at(dir.path(), 3);
    put_version_1_rows(&conn);
    record_peer_heads(&conn, &[7; 32], &[9; 32], &[head(1, 1)]).unwrap();
    conn.execute(
        "INSERT INTO dht_records (publisher, name, key, seq, value, expires_at_ms, signature)
         VALUES (?1, x'6e', ?2, 1, x'76', 5, zeroblob(64))",
        params![[3u8; 32], [4u8; 32]],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO dht_providers (key, provider, expires_at_ms, signature)
         VALUES (?1, ?2, 5, zeroblob(64))",
        params![[4u8; 32], [3u8; 32]],
    )
    .unwrap();
    step_to(&mut conn, 4);
    assert_version_1_rows(&conn);
    assert_eq!(
        peer_heads_for(&conn, &[7; 32], &[1; 32]).unwrap(),
        vec![([9; 32], 1)]
    );
    let dht_rows: (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM dht_records), (SELECT count(*) FROM dht_providers)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(dht_rows, (1, 1));
    assert_eq!(
        columns(&conn, "dht_contacts"),
        ["node_id", "ticket", "last_seen_ms"]
    );
    replace_dht_contacts(&conn, &[([8; 32], "ticket-8".to_owned(), 3)]).unwrap();
    assert_eq!(dht_contacts(&conn, 5).unwrap(), ["ticket-8"]);
}

#[test]
fn migration_5_refuses_protocol_v1_entries_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = database_at(dir.path(), 4);
    put_version_1_rows(&conn);
    // An entry as protocol v1 wrote it: its first byte, the entry version, is 1.
    conn.execute(
        "INSERT INTO entries (entry_id, group_id, author, seq, lamport, timestamp_ms, raw)
         VALUES (?1, ?2, ?3, 1, 1, 1000, x'0100')",
        params![[0xefu8; 32], [7u8; 32], [2u8; 32]],
    )
    .unwrap();
    let err = schema::migrate_to(&mut conn, 5).unwrap_err();
    assert_eq!(err.kind(), crate::error::ErrorKind::Storage);
    assert!(err.to_string().contains("1 entries of protocol v1"), "{err}");
    assert_eq!(schema::version(&conn).unwrap(), 4, "nothing migrated");
    let kept: i64 = conn
        .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 2, "no entry dropped");
    drop(conn);
    let refused = Store::open(dir.path(), Durability::Normal).err().unwrap();
    assert!(refused.to_string().contains("protocol v1"), "{refused}");

    // Without version-1 entries (rows of version 2 begin with 2) the step goes through.
    let dir = tempfile::tempdir().unwrap();
    let mut conn = database_at(dir.path(), 4);
    put_version_1_rows(&conn);
    step_to(&mut conn, 5);
    assert_version_1_rows(&conn);
}

#[test]
fn migration_6_adds_managed_group_tables_keeping_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = database_at(dir.path(), 5);
    put_version_1_rows(&conn);
    step_to(&mut conn, 6);
    assert_version_1_rows(&conn);
    // An existing group is a passphrase group: no creator.
    assert_eq!(super::creator(&conn, &[7; 32]).unwrap(), None);
    // The new columns and tables work against the rows that were there.
    super::set_creator(&conn, &[7; 32], &[3; 32]).unwrap();
    assert_eq!(super::creator(&conn, &[7; 32]).unwrap(), Some([3; 32]));
    let invite = super::InviteRow {
        invite_id: [1; 16],
        group_id: [7; 32],
        secret_hash: [2; 32],
        expires_ms: 10,
        single_use: true,
        uses: 0,
    };
    super::insert_invite(&conn, &invite).unwrap();
    super::use_invite(&conn, &[1; 16]).unwrap();
    assert_eq!(super::invite(&conn, &[1; 16]).unwrap().map(|r| r.uses), Some(1));
    super::put_welcome_controls(&conn, &[7; 32], &[([5; 32], vec![2, 1, 0])]).unwrap();
    assert_eq!(super::welcome_controls(&conn, &[7; 32]).unwrap(), vec![vec![2, 1, 0]]);
    // Control entries are found by their kind byte, data entries are not among them.
    assert!(super::control_entries(&conn, &[7; 32]).unwrap().is_empty());
    // Deleting the group takes its invites and welcome entries with it.
    super::delete_group(&conn, &[7; 32]).unwrap();
    assert_eq!(super::invite(&conn, &[1; 16]).unwrap(), None);
    assert!(super::welcome_controls(&conn, &[7; 32]).unwrap().is_empty());
}

#[test]
fn there_is_one_migration_test_per_migration() {
    // Adding a migration file without a `migration_N_...` test above fails here.
    let source = include_str!("migration_tests.rs");
    for n in 1..=schema::SCHEMA_VERSION {
        let name = format!("fn migration_{n}_");
        assert!(source.contains(&name), "no test for migration {n}");
    }
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
fn version_2_database_migrates_to_the_latest_keeping_its_rows() {
    use crate::dht::record::{ProviderRecord, Record, RecordQuotas, RecordStore, provider_key};

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
