//! The DHT's [`RecordStore`] in the node's SQLite database (tables `dht_records` and
//! `dht_providers`), with the same merge rule and quotas as
//! [`MemoryStore`](crate::dht::MemoryStore). The `dht` module keeps the sans-IO machine and
//! the trait; the SQL is here, with the rest of the store's.
//!
//! - The versioned compare-and-swap is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE`
//!   statement: the row is written only when nothing live is held, the incoming sequence is
//!   higher, or it is the same record with a later expiry. The statement's own `WHERE` also
//!   carries the quotas (total records and records per publisher), so the check and the
//!   insert are one step of one transaction and no peer can grow the table past them.
//! - The byte quota ([`RecordQuotas::max_total_bytes`]) is checked against a running total
//!   of [`Record::stored_bytes`] kept in memory, not a `sum()` in that statement: a sum is a
//!   scan of the whole table (a few ms at 10,000 rows) that every write, updates included,
//!   would pay, where the running total costs nothing per write. The total is loaded with one
//!   `sum()` inside the first write's transaction, moved by exactly the bytes each committed
//!   write adds or replaces (an update counts its difference from the held row, not its
//!   whole size), and recounted inside every sweep's transaction, which runs on the
//!   replication timer next to a listing of every record anyway. Writes hold the total's
//!   lock across their transaction, so check, write and update are one step; the total is
//!   changed only after a commit, so a failed write leaves it right. It stays exact because
//!   this store (and its clones, which share it) is the only writer of `dht_records`: the
//!   node builds one per database and the directory lock keeps other processes out; anything
//!   else that changed the table would be picked up at the next sweep.
//! - `seq` and `expires_at_ms` are u64 from peers and may be anything up to `u64::MAX`; they
//!   use the store's ordered integer format ([`to_sql_ordered`]), so SQL comparisons agree
//!   with the u64 ones over the whole range (a sequence of `u64::MAX` is as valid here as in
//!   memory).
//! - The trait's infallible methods (`get`, `providers`, `sweep`, `records`, ...) log a store
//!   failure and answer as if nothing were held; the fallible ones return it as `Storage`.

use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use super::Store;
use super::codec::{column_bytes, column_ordered_u64, from_sql, limit, to_sql_ordered};
use crate::dht::id::Key;
use crate::dht::record::{
    MAX_NAME_LEN, MAX_SEALED_BYTES, MAX_VALUE_CEILING, Merge, ProviderRecord, Record, RecordQuotas,
    RecordStore, SIGNATURE_LEN, as_u64, fits_byte_quota, merge,
};
use crate::error::{CoveyError, ErrorKind, Result};

/// Records reaching a store are already validated; this re-checks only the sizes, so even a
/// caller that skipped validation cannot write a row larger than the record format allows.
fn check_sizes(name: usize, value: usize, signature: usize) -> Result<()> {
    if name > MAX_NAME_LEN || value > MAX_VALUE_CEILING || signature != SIGNATURE_LEN {
        return Err(CoveyError::invalid(format!(
            "record of name {name}, value {value}, signature {signature} bytes is out of bounds"
        )));
    }
    Ok(())
}

fn rate_limited(what: &str) -> CoveyError {
    CoveyError::new(ErrorKind::RateLimited, format!("{what} quota reached"))
}

/// How many rows a sweep dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepCounts {
    /// Expired records deleted.
    pub records: usize,
    /// Expired provider records deleted.
    pub providers: usize,
}

const RECORD_COLUMNS: &str = "publisher, name, value, seq, expires_at_ms, signature";

/// A [`Record`] from a row of [`RECORD_COLUMNS`].
fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        publisher: column_bytes(r, 0)?,
        name: r.get(1)?,
        value: r.get(2)?,
        seq: column_ordered_u64(r, 3)?,
        expires_at_ms: column_ordered_u64(r, 4)?,
        signature: r.get(5)?,
    })
}

const PROVIDER_COLUMNS: &str = "key, provider, expires_at_ms, signature";

/// What a provider row keeps in its `signature` column: the 64-byte signature, then the
/// record's sealed bytes (DHT protocol 2). The signature's length is fixed and checked
/// before any write, so the split on reading is unambiguous, and the schema of version 3
/// serves unchanged: a version 1 row reads back with nothing sealed (its signature, over the
/// old label, no longer verifies anywhere, and it expires within hours). The provider byte
/// sum (`length(signature)`) thereby counts the sealed bytes too.
fn provider_blob(record: &ProviderRecord) -> Vec<u8> {
    let mut blob = Vec::with_capacity(record.signature.len() + record.sealed.len());
    blob.extend_from_slice(&record.signature);
    blob.extend_from_slice(&record.sealed);
    blob
}

/// A [`ProviderRecord`] from a row of [`PROVIDER_COLUMNS`] (see [`provider_blob`]).
fn provider_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProviderRecord> {
    let mut signature: Vec<u8> = r.get(3)?;
    let sealed = if signature.len() > SIGNATURE_LEN {
        signature.split_off(SIGNATURE_LEN)
    } else {
        Vec::new()
    };
    Ok(ProviderRecord {
        key: column_bytes(r, 0)?,
        provider: column_bytes(r, 1)?,
        expires_at_ms: column_ordered_u64(r, 2)?,
        sealed,
        signature,
    })
}

/// Sum of [`Record::stored_bytes`] over every row: the same 80 fixed bytes
/// ([`RECORD_FIXED_BYTES`](crate::dht::record::RECORD_FIXED_BYTES)) plus the name, value and
/// signature lengths (all BLOBs, so `length` is in bytes).
const SUM_RECORD_BYTES: &str = "
    SELECT coalesce(sum(80 + length(name) + length(value) + length(signature)), 0)
    FROM dht_records";

/// The one statement that is the versioned compare-and-swap and the record quotas.
///
/// Nothing is written unless `?11` (the byte quota, checked by the caller against its
/// running total) allows it. A new (publisher, name) is inserted only while the table holds
/// fewer than `?9` records and the publisher fewer than `?10`; an existing one is replaced
/// only when the held copy has expired, the incoming sequence is higher, or it is the same
/// value at the same sequence with a later expiry. Zero changed rows means the record was not
/// written.
const PUT_RECORD: &str = "
    INSERT INTO dht_records (publisher, name, key, seq, value, expires_at_ms, signature)
    SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
    WHERE ?11
      AND (EXISTS (SELECT 1 FROM dht_records WHERE publisher = ?1 AND name = ?2)
           OR ((SELECT count(*) FROM dht_records) < ?9
               AND (SELECT count(*) FROM dht_records WHERE publisher = ?1) < ?10))
    ON CONFLICT (publisher, name) DO UPDATE SET
        seq = excluded.seq,
        value = excluded.value,
        expires_at_ms = excluded.expires_at_ms,
        signature = excluded.signature
    WHERE dht_records.expires_at_ms <= ?8
       OR excluded.seq > dht_records.seq
       OR (excluded.seq = dht_records.seq
           AND excluded.value = dht_records.value
           AND excluded.expires_at_ms > dht_records.expires_at_ms)";

/// The one statement that adds or refreshes a provider record within the provider quotas:
/// a new (key, provider) goes in only while the key has fewer than `?5` providers and, for a
/// key not yet held, fewer than `?6` keys are held; an existing one is refreshed only by a
/// later expiry.
const ADD_PROVIDER: &str = "
    INSERT INTO dht_providers (key, provider, expires_at_ms, signature)
    SELECT ?1, ?2, ?3, ?4
    WHERE EXISTS (SELECT 1 FROM dht_providers WHERE key = ?1 AND provider = ?2)
       OR ((SELECT count(*) FROM dht_providers WHERE key = ?1) < ?5
           AND (SELECT count(*) FROM dht_providers) < ?7
           AND (EXISTS (SELECT 1 FROM dht_providers WHERE key = ?1)
                OR (SELECT count(DISTINCT key) FROM dht_providers) < ?6))
    ON CONFLICT (key, provider) DO UPDATE SET
        expires_at_ms = excluded.expires_at_ms,
        signature = excluded.signature
    WHERE excluded.expires_at_ms > dht_providers.expires_at_ms";

/// A [`RecordStore`] kept in the node's SQLite [`Store`] (tables `dht_records` and
/// `dht_providers`, schema version 3), bounded by the same [`RecordQuotas`] as the in-memory
/// store.
///
/// The quotas count rows and every row's size is bounded (name 256 bytes, value at most
/// [`MAX_VALUE_CEILING`], a 64-byte signature), so the disk the tables can take is bounded
/// too: records take at most `max_total_bytes` counted as [`Record::stored_bytes`] (64 MiB
/// at the default) and never more than `max_records` rows, and there are at most
/// `max_provider_records` provider rows of about 140 bytes (at most `max_providers_per_key`
/// per key, `max_provider_keys` keys). SQLite's
/// pages add to that on disk (a row too large for its b-tree page spills into an overflow
/// page of its own), so the file can be a few times the counted bytes for mid-sized values.
///
/// The byte total is a running count shared by the clones of this store (see the module
/// doc); build one store per database.
#[derive(Debug, Clone)]
pub struct SqliteRecordStore {
    store: Arc<Store>,
    quotas: RecordQuotas,
    /// Running sum of [`Record::stored_bytes`] over `dht_records`; `None` until the first
    /// write loads it (so building the store cannot fail), and again after a failure to load.
    record_bytes: Arc<Mutex<Option<u64>>>,
}

impl SqliteRecordStore {
    /// A record store in `store`, bounded by `quotas`.
    pub fn new(store: Arc<Store>, quotas: RecordQuotas) -> Self {
        Self {
            store,
            quotas,
            record_bytes: Arc::new(Mutex::new(None)),
        }
    }

    fn lock_total(&self) -> Result<MutexGuard<'_, Option<u64>>> {
        self.record_bytes
            .lock()
            .map_err(|_| CoveyError::internal("DHT record byte total lock poisoned"))
    }

    /// Bytes of the records held, counted as [`Record::stored_bytes`] (expired records
    /// included until a sweep drops them): the running total the byte quota is checked
    /// against.
    // Read by the tests only; the node reports no store sizes (yet).
    #[cfg(test)]
    pub fn record_bytes(&self) -> Result<u64> {
        let mut total = self.lock_total()?;
        if let Some(t) = *total {
            return Ok(t);
        }
        // No write of this store can be under way while its lock is held, so what the read
        // connection sees is the table this store last committed.
        let t = self.store.read(sum_record_bytes)?;
        *total = Some(t);
        Ok(t)
    }

    /// The quotas this store enforces.
    // Read by the tests only; the node reports no store sizes (yet).
    #[cfg(test)]
    pub fn quotas(&self) -> RecordQuotas {
        self.quotas
    }

    /// [`RecordStore::get`], with store failures returned.
    pub fn try_get(&self, key: &Key, now_ms: u64) -> Result<Option<Record>> {
        self.store.read(|c| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM dht_records
                     WHERE key = ?1 AND expires_at_ms > ?2"
                ))?
                .query_row(params![key.0, to_sql_ordered(now_ms)], record_from_row)
                .optional()?;
            Ok(row)
        })
    }

    /// [`RecordStore::providers`], with store failures returned.
    pub fn try_providers(&self, key: &Key, now_ms: u64, max: usize) -> Result<Vec<ProviderRecord>> {
        self.store.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {PROVIDER_COLUMNS} FROM dht_providers
                 WHERE key = ?1 AND expires_at_ms > ?2 ORDER BY id LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![key.0, to_sql_ordered(now_ms), limit(max)],
                provider_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Deletes every record and provider record expired at `now_ms`, in one transaction;
    /// returns how many of each. The record byte total is recounted in the same transaction,
    /// so a sweep also corrects it should anything but this store have changed the table.
    pub fn sweep_expired(&self, now_ms: u64) -> Result<SweepCounts> {
        let mut total = self.lock_total()?;
        let (counts, bytes) = self.store.write(|tx| {
            let records = tx
                .prepare_cached("DELETE FROM dht_records WHERE expires_at_ms <= ?1")?
                .execute(params![to_sql_ordered(now_ms)])?;
            let providers = tx
                .prepare_cached("DELETE FROM dht_providers WHERE expires_at_ms <= ?1")?
                .execute(params![to_sql_ordered(now_ms)])?;
            Ok((SweepCounts { records, providers }, sum_record_bytes(tx)?))
        })?;
        *total = Some(bytes);
        Ok(counts)
    }

    /// [`RecordStore::records`], with store failures returned.
    pub fn try_records(&self) -> Result<Vec<Record>> {
        self.store.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM dht_records ORDER BY publisher, name"
            ))?;
            let rows = stmt.query_map([], record_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// [`RecordStore::provider_records`], with store failures returned.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn try_provider_records(&self) -> Result<Vec<ProviderRecord>> {
        self.store.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {PROVIDER_COLUMNS} FROM dht_providers ORDER BY id"
            ))?;
            let rows = stmt.query_map([], provider_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Bytes of names, values and signatures held on disk (records and provider records),
    /// not counting SQLite's own overhead.
    // Read by the tests only; the node reports no store sizes (yet).
    #[cfg(test)]
    pub fn stored_bytes(&self) -> Result<u64> {
        self.store.read(|c| {
            let records = sum_record_bytes(c)?;
            let providers: i64 = c.query_row(
                "SELECT coalesce(sum(32 + 32 + 8 + length(signature)), 0) FROM dht_providers",
                [],
                |r| r.get(0),
            )?;
            Ok(records.saturating_add(from_sql(providers, "the DHT provider byte sum")?))
        })
    }
}

/// [`SUM_RECORD_BYTES`] on `c`.
fn sum_record_bytes(c: &Connection) -> Result<u64> {
    let sum: i64 = c
        .prepare_cached(SUM_RECORD_BYTES)?
        .query_row([], |r| r.get(0))?;
    from_sql(sum, "the DHT record byte sum")
}

/// The held (publisher, name) row, expired or not.
fn held_record(c: &Connection, record: &Record) -> Result<Option<Record>> {
    let row = c
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM dht_records WHERE publisher = ?1 AND name = ?2"
        ))?
        .query_row(params![record.publisher, record.name], record_from_row)
        .optional()?;
    Ok(row)
}

fn count(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<i64> {
    Ok(c.prepare_cached(sql)?.query_row(p, |r| r.get(0))?)
}

impl RecordStore for SqliteRecordStore {
    fn get(&self, key: &Key, now_ms: u64) -> Option<Record> {
        self.try_get(key, now_ms).unwrap_or_else(|e| {
            log::warn!("DHT record store read failed: {e}");
            None
        })
    }

    fn put(&mut self, record: Record, now_ms: u64) -> Result<Merge> {
        check_sizes(
            record.name.len(),
            record.value.len(),
            record.signature.len(),
        )?;
        let quotas = self.quotas;
        let incoming = as_u64(record.stored_bytes());
        // Held across the transaction: the check against the total, the write and the update
        // of the total are one step for every clone of this store.
        let mut total = self.lock_total()?;
        let (outcome, after) = self.store.write(|tx| {
            let before = match *total {
                Some(t) => t,
                None => sum_record_bytes(tx)?,
            };
            // Read to name the outcome and to size the byte check; the statement below applies
            // the merge rule and the row quotas on its own.
            let held = held_record(tx, &record)?;
            let live = held.as_ref().filter(|r| r.expires_at_ms > now_ms);
            // An expired row not yet swept still takes its bytes, and a write replaces it, so
            // it is what the incoming record's size is compared with.
            let held_bytes = held.as_ref().map_or(0, |r| as_u64(r.stored_bytes()));
            let fits =
                fits_byte_quota(before, held_bytes, incoming, as_u64(quotas.max_total_bytes));
            let changed = tx.prepare_cached(PUT_RECORD)?.execute(params![
                record.publisher,
                record.name,
                record.key().0,
                to_sql_ordered(record.seq),
                record.value,
                to_sql_ordered(record.expires_at_ms),
                record.signature,
                to_sql_ordered(now_ms),
                limit(quotas.max_records),
                limit(quotas.max_per_publisher),
                fits,
            ])?;
            let expected = merge(live, &record);
            match (changed, expected) {
                (1, Ok(outcome @ (Merge::Replace | Merge::Same { extends: true }))) => {
                    // The held row's bytes leave the total and the new row's enter it.
                    let after = before.saturating_sub(held_bytes).saturating_add(incoming);
                    Ok((outcome, after))
                }
                (0, Ok(outcome @ Merge::Same { extends: false })) => Ok((outcome, before)),
                (0, Err(conflict)) => Err(conflict),
                // Which quota refused it, in the order the in-memory store checks them.
                (0, Ok(Merge::Replace)) if held.is_none() => {
                    let rows = count(tx, "SELECT count(*) FROM dht_records", [])?;
                    let by_publisher = count(
                        tx,
                        "SELECT count(*) FROM dht_records WHERE publisher = ?1",
                        params![record.publisher],
                    )?;
                    if rows >= limit(quotas.max_records) {
                        Err(rate_limited("record"))
                    } else if by_publisher >= limit(quotas.max_per_publisher) {
                        Err(rate_limited("per-publisher record"))
                    } else if !fits {
                        Err(rate_limited("record byte"))
                    } else {
                        Err(CoveyError::internal(
                            "DHT record store refused a new record within every quota",
                        ))
                    }
                }
                (0, Ok(Merge::Replace | Merge::Same { extends: true })) if !fits => {
                    Err(rate_limited("record byte"))
                }
                (changed, expected) => Err(CoveyError::internal(format!(
                    "DHT record store wrote {changed} rows where the merge rule says {expected:?}"
                ))),
            }
        })?;
        *total = Some(after);
        Ok(outcome)
    }

    fn add_provider(&mut self, record: ProviderRecord, _now_ms: u64) -> Result<()> {
        check_sizes(0, 0, record.signature.len())?;
        if record.sealed.len() > MAX_SEALED_BYTES {
            return Err(CoveyError::invalid(format!(
                "provider record of {} sealed bytes is out of bounds",
                record.sealed.len()
            )));
        }
        let quotas = self.quotas;
        let blob = provider_blob(&record);
        self.store.write(|tx| {
            let changed = tx.prepare_cached(ADD_PROVIDER)?.execute(params![
                record.key,
                record.provider,
                to_sql_ordered(record.expires_at_ms),
                blob,
                limit(quotas.max_providers_per_key),
                limit(quotas.max_provider_keys),
                limit(quotas.max_provider_records),
            ])?;
            if changed == 1 {
                return Ok(());
            }
            let held = count(
                tx,
                "SELECT count(*) FROM dht_providers WHERE key = ?1 AND provider = ?2",
                params![record.key, record.provider],
            )?;
            if held > 0 {
                // Already held with an expiry at least as late: nothing to do.
                return Ok(());
            }
            let for_key = count(
                tx,
                "SELECT count(*) FROM dht_providers WHERE key = ?1",
                params![record.key],
            )?;
            let all = count(tx, "SELECT count(*) FROM dht_providers", [])?;
            let keys = count(tx, "SELECT count(DISTINCT key) FROM dht_providers", [])?;
            // The same order of checks as the memory store, so both name the same quota.
            if for_key == 0 && keys >= limit(quotas.max_provider_keys) {
                Err(rate_limited("provider key"))
            } else if for_key >= limit(quotas.max_providers_per_key) {
                Err(rate_limited("providers-per-key"))
            } else if all >= limit(quotas.max_provider_records) {
                Err(rate_limited("provider record"))
            } else {
                Err(CoveyError::storage(
                    "DHT provider store refused a record no quota accounts for",
                ))
            }
        })
    }

    fn providers(&self, key: &Key, now_ms: u64, limit: usize) -> Vec<ProviderRecord> {
        self.try_providers(key, now_ms, limit).unwrap_or_else(|e| {
            log::warn!("DHT provider read failed: {e}");
            Vec::new()
        })
    }

    fn sweep(&mut self, now_ms: u64) -> usize {
        match self.sweep_expired(now_ms) {
            Ok(n) => n.records + n.providers,
            Err(e) => {
                log::warn!("DHT record sweep failed: {e}");
                0
            }
        }
    }

    fn records(&self) -> Vec<Record> {
        self.try_records().unwrap_or_else(|e| {
            log::warn!("DHT record listing failed: {e}");
            Vec::new()
        })
    }

    #[cfg(any(test, feature = "test-utils"))]
    fn provider_records(&self) -> Vec<ProviderRecord> {
        self.try_provider_records().unwrap_or_else(|e| {
            log::warn!("DHT provider listing failed: {e}");
            Vec::new()
        })
    }

    /// Records live on disk, not on the heap: only the handle counts.
    #[cfg(any(test, feature = "test-utils"))]
    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use iroh::SecretKey;

    use super::*;
    use crate::dht::record::{MemoryStore, RECORD_FIXED_BYTES, provider_key};
    use crate::store::Durability;

    const NOW: u64 = 1_000_000;

    fn secret(n: u8) -> SecretKey {
        SecretKey::from_bytes(&[n; 32])
    }

    fn rec(s: u8, name: &[u8], value: &[u8], seq: u64, expires: u64) -> Record {
        Record::sign(&secret(s), name, value, seq, expires).unwrap()
    }

    fn open(dir: &std::path::Path) -> Arc<Store> {
        Arc::new(Store::open(dir, Durability::Normal).unwrap())
    }

    /// Runs `check` against a fresh in-memory store and a fresh SQLite store on a real file,
    /// both with `quotas`, then checks each store's byte total still matches what it holds.
    fn on_both(quotas: RecordQuotas, check: impl Fn(&mut dyn RecordStore)) {
        let mut memory = MemoryStore::new(quotas);
        check(&mut memory);
        assert_eq!(memory.record_bytes(), held_bytes(&memory));
        let dir = tempfile::tempdir().unwrap();
        let mut sqlite = SqliteRecordStore::new(open(dir.path()), quotas);
        check(&mut sqlite);
        assert_total_is_exact(&sqlite);
    }

    /// Sum of [`Record::stored_bytes`] over every record `store` holds.
    fn held_bytes(store: &dyn RecordStore) -> usize {
        store.records().iter().map(Record::stored_bytes).sum()
    }

    /// The running total agrees with the table, counted both in SQL and in Rust.
    fn assert_total_is_exact(store: &SqliteRecordStore) {
        let in_sql = store.store.read(sum_record_bytes).unwrap();
        assert_eq!(store.record_bytes().unwrap(), in_sql);
        assert_eq!(in_sql, held_bytes(store) as u64);
    }

    fn kind(r: Result<Merge>) -> ErrorKind {
        r.unwrap_err().kind()
    }

    fn highest_sequence_wins_and_equal_sequence_conflicts(store: &mut dyn RecordStore) {
        let r1 = rec(3, b"n", b"a", 1, NOW + 10);
        let r2 = rec(3, b"n", b"b", 2, NOW + 10);
        let r2x = rec(3, b"n", b"c", 2, NOW + 10);
        let r2later = rec(3, b"n", b"b", 2, NOW + 20);
        assert_eq!(store.get(&r1.key(), NOW), None);
        assert_eq!(store.put(r1.clone(), NOW).unwrap(), Merge::Replace);
        assert_eq!(store.get(&r1.key(), NOW), Some(r1.clone()));
        assert_eq!(store.put(r2.clone(), NOW).unwrap(), Merge::Replace);
        assert_eq!(kind(store.put(r1, NOW)), ErrorKind::Conflict);
        assert_eq!(kind(store.put(r2x, NOW)), ErrorKind::Conflict);
        // A different value at the held sequence loses even with a later expiry.
        let r2x_later = rec(3, b"n", b"c", 2, NOW + 30);
        assert_eq!(kind(store.put(r2x_later, NOW)), ErrorKind::Conflict);
        assert_eq!(store.get(&r2.key(), NOW), Some(r2.clone()));
        assert_eq!(
            store.put(r2.clone(), NOW).unwrap(),
            Merge::Same { extends: false }
        );
        assert_eq!(
            store.put(r2later.clone(), NOW).unwrap(),
            Merge::Same { extends: true }
        );
        assert_eq!(store.get(&r2.key(), NOW), Some(r2later.clone()));
        // An earlier expiry of the same record does not shorten the held one.
        assert_eq!(
            store.put(r2.clone(), NOW).unwrap(),
            Merge::Same { extends: false }
        );
        assert_eq!(store.get(&r2.key(), NOW + 15), Some(r2later));
        assert_eq!(store.records().len(), 1);
        assert_eq!(store.sweep(NOW + 19), 0);
        assert_eq!(store.sweep(NOW + 20), 1);
        assert_eq!(store.get(&r2.key(), NOW), None);
        assert!(store.records().is_empty());
    }

    #[test]
    fn highest_sequence_wins_on_both_stores() {
        on_both(
            RecordQuotas::default(),
            highest_sequence_wins_and_equal_sequence_conflicts,
        );
    }

    fn expired_record_is_gone_and_any_sequence_replaces_it(store: &mut dyn RecordStore) {
        let old = rec(4, b"n", b"high", 9, NOW + 10);
        store.put(old.clone(), NOW).unwrap();
        assert_eq!(store.get(&old.key(), NOW + 9), Some(old.clone()));
        assert_eq!(store.get(&old.key(), NOW + 10), None);
        // Held but expired (not yet swept): a lower sequence now wins.
        let low = rec(4, b"n", b"low", 1, NOW + 50);
        assert_eq!(store.put(low.clone(), NOW + 10).unwrap(), Merge::Replace);
        assert_eq!(store.get(&old.key(), NOW + 10), Some(low));
    }

    #[test]
    fn expired_records_lose_on_both_stores() {
        on_both(
            RecordQuotas::default(),
            expired_record_is_gone_and_any_sequence_replaces_it,
        );
    }

    fn extreme_sequences_and_expiries_keep_their_order(store: &mut dyn RecordStore) {
        let mid = rec(5, b"n", b"a", i64::MAX as u64, u64::MAX - 1);
        let top = rec(5, b"n", b"b", u64::MAX, u64::MAX);
        assert_eq!(store.put(mid.clone(), NOW).unwrap(), Merge::Replace);
        assert_eq!(store.put(top.clone(), NOW).unwrap(), Merge::Replace);
        assert_eq!(kind(store.put(mid, NOW)), ErrorKind::Conflict);
        assert_eq!(store.get(&top.key(), u64::MAX - 1), Some(top.clone()));
        assert_eq!(store.get(&top.key(), u64::MAX), None);
        let zero = rec(6, b"z", b"", 0, NOW + 1);
        assert_eq!(store.put(zero.clone(), NOW).unwrap(), Merge::Replace);
        assert_eq!(store.get(&zero.key(), NOW), Some(zero));
    }

    #[test]
    fn full_u64_range_on_both_stores() {
        on_both(
            RecordQuotas::default(),
            extreme_sequences_and_expiries_keep_their_order,
        );
    }

    const SMALL: RecordQuotas = RecordQuotas {
        max_records: 3,
        max_total_bytes: usize::MAX,
        max_per_publisher: 2,
        max_providers_per_key: 2,
        max_provider_keys: 2,
        max_provider_records: 4,
    };

    fn per_publisher_quota(store: &mut dyn RecordStore) {
        // Exactly at the limit: accepted.
        store.put(rec(5, b"1", b"", 1, NOW + 9), NOW).unwrap();
        store.put(rec(5, b"2", b"", 1, NOW + 9), NOW).unwrap();
        // One over: refused, and nothing stored.
        let third = store.put(rec(5, b"3", b"", 1, NOW + 9), NOW).unwrap_err();
        assert_eq!(third.kind(), ErrorKind::RateLimited);
        assert!(third.message().contains("per-publisher"), "{third}");
        assert_eq!(store.get(&rec(5, b"3", b"", 1, NOW + 9).key(), NOW), None);
        // Updating a held name is not a new record: still accepted at the limit.
        assert_eq!(
            store.put(rec(5, b"1", b"x", 2, NOW + 9), NOW).unwrap(),
            Merge::Replace
        );
        // Another publisher has its own allowance.
        store.put(rec(6, b"1", b"", 1, NOW + 9), NOW).unwrap();
        assert_eq!(store.records().len(), 3);
    }

    #[test]
    fn per_publisher_quota_on_both_stores() {
        on_both(SMALL, per_publisher_quota);
    }

    fn total_quota(store: &mut dyn RecordStore) {
        for s in 1..=3 {
            store.put(rec(s, b"n", b"", 1, NOW + 9), NOW).unwrap();
        }
        assert_eq!(store.records().len(), 3);
        let over = store.put(rec(4, b"n", b"", 1, NOW + 9), NOW).unwrap_err();
        assert_eq!(over.kind(), ErrorKind::RateLimited);
        assert!(!over.message().contains("per-publisher"), "{over}");
        assert_eq!(store.records().len(), 3);
        // Held records still take new sequences when the store is full.
        assert_eq!(
            store.put(rec(2, b"n", b"v", 2, NOW + 9), NOW).unwrap(),
            Merge::Replace
        );
        // A conflict is still a conflict, not a quota error.
        assert_eq!(
            kind(store.put(rec(2, b"n", b"w", 2, NOW + 9), NOW)),
            ErrorKind::Conflict
        );
        // Sweeping frees room.
        assert_eq!(store.sweep(NOW + 9), 3);
        store.put(rec(4, b"n", b"", 1, NOW + 20), NOW + 9).unwrap();
    }

    #[test]
    fn total_quota_on_both_stores() {
        on_both(SMALL, total_quota);
    }

    const BYTE_LIMIT: usize = 1000;

    /// The default quotas with room for [`BYTE_LIMIT`] bytes of records.
    fn byte_quotas() -> RecordQuotas {
        RecordQuotas {
            max_total_bytes: BYTE_LIMIT,
            ..RecordQuotas::default()
        }
    }

    /// A record of `s`'s `name` that counts exactly `bytes` against the byte quota.
    fn sized(s: u8, name: &[u8], bytes: usize, seq: u64, expires: u64) -> Record {
        let fixed = RECORD_FIXED_BYTES + name.len() + SIGNATURE_LEN;
        let len = bytes
            .checked_sub(fixed)
            .expect("a record takes at least its fixed bytes");
        let value = vec![s; len];
        let r = rec(s, name, &value, seq, expires);
        assert_eq!(r.stored_bytes(), bytes);
        r
    }

    fn byte_quota(store: &mut dyn RecordStore) {
        let a = sized(1, b"a", 445, 1, NOW + 50);
        assert_eq!(store.put(a.clone(), NOW).unwrap(), Merge::Replace);
        // One byte over the quota: refused as a quota, nothing stored.
        let over = sized(2, b"b", BYTE_LIMIT - 445 + 1, 1, NOW + 9);
        let err = store.put(over.clone(), NOW).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert!(err.message().contains("record byte"), "{err}");
        assert_eq!(store.get(&over.key(), NOW), None);
        assert_eq!(held_bytes(store), 445);
        // Exactly at the quota: accepted.
        let b = sized(2, b"b", BYTE_LIMIT - 445, 1, NOW + 9);
        assert_eq!(store.put(b.clone(), NOW).unwrap(), Merge::Replace);
        assert_eq!(held_bytes(store), BYTE_LIMIT);
        // Full: even the smallest new record is refused.
        let tiny = rec(3, b"", b"", 1, NOW + 9);
        assert_eq!(kind(store.put(tiny.clone(), NOW)), ErrorKind::RateLimited);
        // A replacement that would grow past the quota is refused and the held copy kept.
        let bigger = sized(1, b"a", 446, 2, NOW + 50);
        assert_eq!(kind(store.put(bigger, NOW)), ErrorKind::RateLimited);
        assert_eq!(store.get(&a.key(), NOW), Some(a.clone()));
        // A losing record is still a conflict, not a quota error.
        assert_eq!(
            kind(store.put(rec(1, b"a", b"x", 1, NOW + 50), NOW)),
            ErrorKind::Conflict
        );
        // At the quota, the same record with a later expiry (no growth) is still taken.
        let a_later = sized(1, b"a", 445, 1, NOW + 60);
        assert_eq!(
            store.put(a_later.clone(), NOW).unwrap(),
            Merge::Same { extends: true }
        );
        assert_eq!(store.get(&a.key(), NOW + 55), Some(a_later));
        // A smaller replacement is accepted and gives back the difference...
        let smaller = sized(1, b"a", 245, 2, NOW + 60);
        assert_eq!(store.put(smaller, NOW).unwrap(), Merge::Replace);
        assert_eq!(held_bytes(store), BYTE_LIMIT - 200);
        // ...which a growing replacement may take again, counted as its growth over the held
        // row (445 - 245), not its whole size: exactly at the quota.
        let regrown = sized(1, b"a", 445, 3, NOW + 60);
        assert_eq!(store.put(regrown.clone(), NOW).unwrap(), Merge::Replace);
        assert_eq!(store.get(&a.key(), NOW), Some(regrown));
        assert_eq!(held_bytes(store), BYTE_LIMIT);
        // An expired record still takes its space until swept...
        assert_eq!(
            kind(store.put(tiny.clone(), NOW + 9)),
            ErrorKind::RateLimited
        );
        // ...and sweeping frees it.
        assert_eq!(store.sweep(NOW + 9), 1);
        assert_eq!(held_bytes(store), 445);
        let c = sized(3, b"c", BYTE_LIMIT - 445, 1, NOW + 50);
        assert_eq!(store.put(c.clone(), NOW + 9).unwrap(), Merge::Replace);
        assert_eq!(held_bytes(store), BYTE_LIMIT);
        // Replacing an expired, unswept record counts against the row it replaces too.
        let c_over = sized(3, b"c", BYTE_LIMIT - 445 + 1, 1, NOW + 100);
        assert_eq!(kind(store.put(c_over, NOW + 50)), ErrorKind::RateLimited);
        let c_new = sized(3, b"c", 300, 1, NOW + 100);
        assert_eq!(store.put(c_new.clone(), NOW + 50).unwrap(), Merge::Replace);
        assert_eq!(store.get(&c.key(), NOW + 50), Some(c_new));
        assert_eq!(held_bytes(store), 445 + 300);
    }

    #[test]
    fn byte_quota_on_both_stores() {
        on_both(byte_quotas(), byte_quota);
    }

    fn row_quota_is_named_before_byte_quota(store: &mut dyn RecordStore) {
        store
            .put(sized(1, b"a", BYTE_LIMIT, 1, NOW + 9), NOW)
            .unwrap();
        // Both the per-publisher and the byte quota refuse this one: the row quota is named.
        let err = store.put(rec(1, b"b", b"", 1, NOW + 9), NOW).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert!(err.message().contains("per-publisher"), "{err}");
        // Only the byte quota refuses this one.
        let err = store.put(rec(2, b"b", b"", 1, NOW + 9), NOW).unwrap_err();
        assert!(err.message().contains("record byte"), "{err}");
        assert_eq!(store.records().len(), 1);
    }

    #[test]
    fn quota_errors_name_the_same_quota_on_both_stores() {
        let quotas = RecordQuotas {
            max_per_publisher: 1,
            ..byte_quotas()
        };
        on_both(quotas, row_quota_is_named_before_byte_quota);
    }

    #[test]
    fn byte_total_survives_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let a = sized(1, b"a", 445, 1, NOW + 50);
        let b = sized(2, b"b", BYTE_LIMIT - 445, 1, NOW + 50);
        {
            let mut store = SqliteRecordStore::new(open(dir.path()), byte_quotas());
            store.put(a.clone(), NOW).unwrap();
            store.put(b.clone(), NOW).unwrap();
            assert_eq!(store.record_bytes().unwrap(), BYTE_LIMIT as u64);
        }
        // The first call after reopening is a write: it must load the total from the table
        // (a total starting at zero would take this record).
        let mut store = SqliteRecordStore::new(open(dir.path()), byte_quotas());
        let tiny = rec(3, b"", b"", 1, NOW + 9);
        assert_eq!(kind(store.put(tiny.clone(), NOW)), ErrorKind::RateLimited);
        assert_eq!(store.record_bytes().unwrap(), BYTE_LIMIT as u64);
        let smaller = sized(1, b"a", 245, 2, NOW + 50);
        assert_eq!(store.put(smaller, NOW).unwrap(), Merge::Replace);
        assert_eq!(store.record_bytes().unwrap(), BYTE_LIMIT as u64 - 200);
        assert_total_is_exact(&store);
        drop(store);

        // Reopened under a quota below what it holds: nothing grows, updates that do not grow
        // are still taken, and sweeping drains it.
        let lowered = RecordQuotas {
            max_total_bytes: 300,
            ..RecordQuotas::default()
        };
        let mut store = SqliteRecordStore::new(open(dir.path()), lowered);
        assert_eq!(store.record_bytes().unwrap(), BYTE_LIMIT as u64 - 200);
        assert_eq!(kind(store.put(tiny.clone(), NOW)), ErrorKind::RateLimited);
        let b_grown = sized(2, b"b", BYTE_LIMIT - 444, 2, NOW + 50);
        assert_eq!(kind(store.put(b_grown, NOW)), ErrorKind::RateLimited);
        assert_eq!(store.get(&b.key(), NOW), Some(b.clone()));
        let b_same = rec(2, b"b", &vec![9; b.value.len()], 2, NOW + 50);
        assert_eq!(store.put(b_same, NOW).unwrap(), Merge::Replace);
        let b_small = sized(2, b"b", 200, 3, NOW + 50);
        assert_eq!(store.put(b_small, NOW).unwrap(), Merge::Replace);
        assert_eq!(store.record_bytes().unwrap(), 245 + 200);
        assert_total_is_exact(&store);
        assert_eq!(store.sweep(NOW + 50), 2);
        assert_eq!(store.record_bytes().unwrap(), 0);
        store
            .put(sized(3, b"c", 300, 1, NOW + 90), NOW + 50)
            .unwrap();
        assert_eq!(store.record_bytes().unwrap(), 300);
    }

    #[test]
    fn clones_share_the_byte_total() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteRecordStore::new(open(dir.path()), byte_quotas());
        let mut clone = store.clone();
        clone
            .put(sized(1, b"a", BYTE_LIMIT - 200, 1, NOW + 9), NOW)
            .unwrap();
        // The original sees what the clone wrote: 201 more bytes would cross the quota.
        let err = store.put(sized(2, b"b", 201, 1, NOW + 9), NOW).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        store.put(sized(2, b"b", 200, 1, NOW + 9), NOW).unwrap();
        assert_eq!(clone.record_bytes().unwrap(), BYTE_LIMIT as u64);
        assert_total_is_exact(&store);
    }

    #[test]
    fn sweep_recounts_the_byte_total() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let mut store = SqliteRecordStore::new(db.clone(), byte_quotas());
        store
            .put(sized(1, b"a", BYTE_LIMIT, 1, NOW + 90), NOW)
            .unwrap();
        // Rows deleted behind the store's back are not seen by the running total...
        db.write(|tx| Ok(tx.execute("DELETE FROM dht_records", [])?))
            .unwrap();
        assert_eq!(store.record_bytes().unwrap(), BYTE_LIMIT as u64);
        assert_eq!(
            kind(store.put(rec(2, b"b", b"", 1, NOW + 9), NOW)),
            ErrorKind::RateLimited
        );
        // ...until a sweep, which recounts the table even when nothing expired.
        assert_eq!(store.sweep(NOW), 0);
        assert_eq!(store.record_bytes().unwrap(), 0);
        store
            .put(sized(2, b"b", BYTE_LIMIT, 1, NOW + 9), NOW)
            .unwrap();
        assert_total_is_exact(&store);
    }

    fn provider_quotas(store: &mut dyn RecordStore) {
        let key = provider_key(b"app");
        // Exactly at the per-key limit: accepted.
        for n in 10..12 {
            store
                .add_provider(ProviderRecord::sign(&secret(n), key, NOW + 9), NOW)
                .unwrap();
        }
        let over = store
            .add_provider(ProviderRecord::sign(&secret(12), key, NOW + 9), NOW)
            .unwrap_err();
        assert_eq!(over.kind(), ErrorKind::RateLimited);
        assert!(over.message().contains("providers-per-key"), "{over}");
        // A held provider refreshes even when the key is full, and only to a later expiry.
        let later = ProviderRecord::sign(&secret(10), key, NOW + 30);
        store.add_provider(later.clone(), NOW).unwrap();
        store
            .add_provider(ProviderRecord::sign(&secret(10), key, NOW + 5), NOW)
            .unwrap();
        assert_eq!(store.providers(&key, NOW + 9, 10), vec![later]);
        assert_eq!(store.providers(&key, NOW, 10).len(), 2);
        assert_eq!(store.providers(&key, NOW, 1).len(), 1);
        // Key quota: a second key fits, a third does not.
        let second = provider_key(b"second");
        store
            .add_provider(ProviderRecord::sign(&secret(10), second, NOW + 9), NOW)
            .unwrap();
        let third = store
            .add_provider(
                ProviderRecord::sign(&secret(10), provider_key(b"third"), NOW + 9),
                NOW,
            )
            .unwrap_err();
        assert_eq!(third.kind(), ErrorKind::RateLimited);
        assert!(third.message().contains("provider key"), "{third}");
        assert_eq!(store.provider_records().len(), 3);
        // Sweep drops the two expiring at NOW + 9, keeps the refreshed one.
        assert_eq!(store.sweep(NOW + 9), 2);
        assert_eq!(store.provider_records().len(), 1);
        assert_eq!(store.providers(&second, NOW, 10), vec![]);
    }

    #[test]
    fn provider_quotas_on_both_stores() {
        on_both(SMALL, provider_quotas);
    }

    fn sealed_bytes_are_kept(store: &mut dyn RecordStore) {
        let key = provider_key(b"sealed");
        let full = |n: u8, expires: u64, len: usize| {
            ProviderRecord::sign_sealed(&secret(n), key, expires, vec![n; len]).unwrap()
        };
        let plain = ProviderRecord::sign(&secret(1), key, NOW + 9);
        let sealed = full(2, NOW + 9, MAX_SEALED_BYTES);
        store.add_provider(plain.clone(), NOW).unwrap();
        store.add_provider(sealed.clone(), NOW).unwrap();
        let mut held = store.providers(&key, NOW, 10);
        held.sort_by_key(|p| p.provider);
        let mut want = vec![plain, sealed.clone()];
        want.sort_by_key(|p| p.provider);
        assert_eq!(held, want);
        for p in &held {
            assert!(
                p.validate(NOW, &crate::dht::record::RecordLimits::default())
                    .is_ok()
            );
        }
        // A later record of the same provider replaces its sealed bytes too.
        let renewed = full(2, NOW + 20, 40);
        store.add_provider(renewed.clone(), NOW).unwrap();
        assert_eq!(store.providers(&key, NOW + 10, 10), vec![renewed]);
        // One byte over the bound is refused by the store itself.
        let mut over = sealed;
        over.sealed.push(0);
        assert_eq!(
            store.add_provider(over, NOW).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn sealed_bytes_are_kept_on_both_stores() {
        on_both(RecordQuotas::default(), sealed_bytes_are_kept);
    }

    fn provider_total_quota(store: &mut dyn RecordStore) {
        // Three keys of up to two providers each, but four rows in all.
        let keys = [provider_key(b"a"), provider_key(b"b"), provider_key(b"c")];
        for (i, key) in keys.iter().take(2).enumerate() {
            for n in 0..2 {
                store
                    .add_provider(ProviderRecord::sign(&secret(20 + n), *key, NOW + 9), NOW)
                    .unwrap_or_else(|e| panic!("key {i} provider {n}: {e}"));
            }
        }
        assert_eq!(store.provider_records().len(), 4, "exactly at the total");
        // One over, on a key that still has room: refused by the total, nothing stored.
        let over = store
            .add_provider(ProviderRecord::sign(&secret(30), keys[2], NOW + 9), NOW)
            .unwrap_err();
        assert_eq!(over.kind(), ErrorKind::RateLimited);
        assert!(over.message().contains("provider record"), "{over}");
        assert_eq!(store.provider_records().len(), 4);
        assert!(store.providers(&keys[2], NOW, 10).is_empty());
        // A held provider still refreshes at the total.
        let later = ProviderRecord::sign(&secret(20), keys[0], NOW + 50);
        store.add_provider(later.clone(), NOW).unwrap();
        assert!(store.providers(&keys[0], NOW + 20, 10).contains(&later));
        // A sweep frees room for the refused one.
        assert_eq!(store.sweep(NOW + 9), 3);
        store
            .add_provider(
                ProviderRecord::sign(&secret(30), keys[2], NOW + 99),
                NOW + 9,
            )
            .unwrap();
        assert_eq!(store.provider_records().len(), 2);
    }

    #[test]
    fn provider_total_quota_on_both_stores() {
        on_both(
            RecordQuotas {
                max_provider_keys: 3,
                ..SMALL
            },
            provider_total_quota,
        );
    }

    #[test]
    fn sweep_counts_records_and_providers_separately() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteRecordStore::new(open(dir.path()), RecordQuotas::default());
        store.put(rec(1, b"a", b"", 1, NOW + 5), NOW).unwrap();
        store.put(rec(1, b"b", b"", 1, NOW + 6), NOW).unwrap();
        store.put(rec(2, b"a", b"", 1, NOW + 50), NOW).unwrap();
        let key = provider_key(b"k");
        store
            .add_provider(ProviderRecord::sign(&secret(3), key, NOW + 6), NOW)
            .unwrap();
        store
            .add_provider(ProviderRecord::sign(&secret(4), key, NOW + 60), NOW)
            .unwrap();
        assert_eq!(
            store.sweep_expired(NOW + 4).unwrap(),
            SweepCounts::default()
        );
        assert_eq!(
            store.sweep_expired(NOW + 6).unwrap(),
            SweepCounts {
                records: 2,
                providers: 1
            }
        );
        assert_eq!(store.records().len(), 1);
        assert_eq!(store.provider_records().len(), 1);
        assert_eq!(
            store.sweep_expired(NOW + 60).unwrap(),
            SweepCounts {
                records: 1,
                providers: 1
            }
        );
        assert_eq!(store.stored_bytes().unwrap(), 0);
    }

    #[test]
    fn records_and_providers_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let r = rec(7, b"name", b"value", 3, u64::MAX);
        let key = provider_key(b"k");
        let p = ProviderRecord::sign(&secret(8), key, NOW + 100);
        {
            let mut store = SqliteRecordStore::new(open(dir.path()), RecordQuotas::default());
            store.put(r.clone(), NOW).unwrap();
            store.add_provider(p.clone(), NOW).unwrap();
            assert!(store.stored_bytes().unwrap() > 0);
        }
        let mut store = SqliteRecordStore::new(open(dir.path()), RecordQuotas::default());
        assert_eq!(store.get(&r.key(), NOW), Some(r.clone()));
        assert_eq!(store.records(), vec![r.clone()]);
        assert_eq!(store.providers(&key, NOW, 5), vec![p.clone()]);
        assert_eq!(store.provider_records(), vec![p]);
        // The reopened store still enforces the sequence rule on what it reloaded.
        assert_eq!(
            kind(store.put(rec(7, b"name", b"other", 3, NOW + 9), NOW)),
            ErrorKind::Conflict
        );
        assert_eq!(
            kind(store.put(rec(7, b"name", b"value", 2, NOW + 9), NOW)),
            ErrorKind::Conflict
        );
        assert_eq!(store.get(&r.key(), NOW), Some(r));
    }

    #[test]
    fn quotas_hold_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SqliteRecordStore::new(open(dir.path()), SMALL);
            store.put(rec(1, b"a", b"", 1, NOW + 9), NOW).unwrap();
            store.put(rec(1, b"b", b"", 1, NOW + 9), NOW).unwrap();
        }
        let mut store = SqliteRecordStore::new(open(dir.path()), SMALL);
        assert_eq!(store.quotas(), SMALL);
        let err = store.put(rec(1, b"c", b"", 1, NOW + 9), NOW).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
    }

    #[test]
    fn oversized_rows_are_refused_before_touching_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteRecordStore::new(open(dir.path()), RecordQuotas::default());
        // At the ceilings: accepted.
        let name = vec![b'n'; MAX_NAME_LEN];
        let edge = rec(1, &name, &vec![0; MAX_VALUE_CEILING], 1, NOW + 9);
        assert_eq!(store.put(edge, NOW).unwrap(), Merge::Replace);
        // One byte over, or a signature of the wrong length: refused, nothing written.
        let mut big = rec(2, b"n", b"", 1, NOW + 9);
        big.value = vec![0; MAX_VALUE_CEILING + 1];
        assert_eq!(kind(store.put(big.clone(), NOW)), ErrorKind::InvalidInput);
        let mut long_name = rec(2, b"n", b"", 1, NOW + 9);
        long_name.name = vec![b'n'; MAX_NAME_LEN + 1];
        assert_eq!(kind(store.put(long_name, NOW)), ErrorKind::InvalidInput);
        let mut long_sig = rec(2, b"n", b"", 1, NOW + 9);
        long_sig.signature.push(0);
        assert_eq!(kind(store.put(long_sig, NOW)), ErrorKind::InvalidInput);
        let mut provider = ProviderRecord::sign(&secret(3), provider_key(b"k"), NOW + 9);
        provider.signature = vec![0; 4096];
        assert_eq!(
            store.add_provider(provider, NOW).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(store.records().len(), 1);
        assert_eq!(store.get(&big.key(), NOW), None);
        assert!(store.provider_records().is_empty());
    }

    #[test]
    fn a_dht_node_answers_store_requests_from_the_sqlite_store() {
        use crate::dht::messages::{Message, Refusal, Request, Response};
        use crate::dht::{Dht, DhtConfig, Output};

        let dir = tempfile::tempdir().unwrap();
        let store = SqliteRecordStore::new(open(dir.path()), RecordQuotas::default());
        let mut dht = Dht::new(secret(1), store, DhtConfig::default(), [0; 32], NOW).unwrap();
        let peer = Key(*secret(2).public().as_bytes());
        let ask = |dht: &mut Dht<SqliteRecordStore>, id: u64, record: Record| {
            let body = Request::Store { record };
            dht.handle_message(peer, Message::Request { id, body }, NOW);
            loop {
                match dht.poll_output() {
                    Some(Output::Send {
                        message: Message::Response { id: got, body },
                        ..
                    }) if got == id => return body,
                    Some(_) => continue,
                    None => panic!("no response to request {id}"),
                }
            }
        };
        let first = rec(3, b"n", b"a", 4, NOW + 1000);
        let answer = ask(&mut dht, 1, first.clone());
        assert!(
            matches!(answer, Response::Stored { accepted: true, .. }),
            "{answer:?}"
        );
        assert_eq!(dht.store().get(&first.key(), NOW), Some(first.clone()));
        let stale = rec(3, b"n", b"b", 3, NOW + 1000);
        let answer = ask(&mut dht, 2, stale);
        assert_eq!(
            answer,
            Response::Stored {
                accepted: false,
                refusal: Some(Refusal::Conflict),
                held: Some(first),
            }
        );
    }
}
