-- Schema version 3: the DHT records this node holds for the network. `seq` and
-- `expires_at_ms` are u64 stored order-preserving as `(v XOR 2^63)` reinterpreted as i64
-- (`store::codec::to_sql_ordered`), so SQL comparisons match the u64 ones over the whole range.
-- `key` is the record's DHT key, derived from (publisher, name), for lookups by key.
-- Provider rows keep their rowid so listings come back in the order they were added.
--
-- Edit nothing below: the statements are byte for byte as first shipped (SQLite keeps their
-- text in `sqlite_master`), and a shipped migration never changes; add a new file instead.

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
