-- Schema version 4: DHT contacts this node saw answer, with an address to dial them by, so a
-- node whose bootstrap tickets all fail can still rejoin the network it knew.
--
-- Edit nothing below: the statements are byte for byte as first shipped (SQLite keeps their
-- text in `sqlite_master`), and a shipped migration never changes; add a new file instead.

    CREATE TABLE dht_contacts (
        node_id       BLOB PRIMARY KEY CHECK (length(node_id) = 32),
        ticket        TEXT NOT NULL,
        last_seen_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;
