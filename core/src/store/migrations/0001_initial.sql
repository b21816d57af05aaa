-- Schema version 1: groups, entries, idempotency keys (client ids) and remembered peers.
--
-- Edit nothing below: the statements are byte for byte as first shipped (SQLite keeps their
-- text in `sqlite_master`), and a shipped migration never changes; add a new file instead.

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
