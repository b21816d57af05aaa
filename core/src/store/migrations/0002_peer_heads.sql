-- Schema version 2: delivery receipts. The highest contiguous seq of each author that each
-- peer has acknowledged holding in a group; it only ever grows.
--
-- Edit nothing below: the statements are byte for byte as first shipped (SQLite keeps their
-- text in `sqlite_master`), and a shipped migration never changes; add a new file instead.

    CREATE TABLE peer_heads (
        group_id  BLOB NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
        peer      BLOB NOT NULL CHECK (length(peer) = 32),
        author    BLOB NOT NULL CHECK (length(author) = 32),
        seq       INTEGER NOT NULL CHECK (seq >= 0),
        PRIMARY KEY (group_id, peer, author)
    ) WITHOUT ROWID;
