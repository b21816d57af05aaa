//! A [`RecordStore`] in the node's SQLite database, with the same merge rule and quotas as
//! [`MemoryStore`](super::record::MemoryStore).
//!
//! - The versioned compare-and-swap is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE`
//!   statement: the row is written only when nothing live is held, the incoming sequence is
//!   higher, or it is the same record with a later expiry. The statement's own `WHERE` also
//!   carries the quotas (total records and records per publisher), so the check and the
//!   insert are one step of one transaction and no peer can grow the table past them.
//! - `seq` and `expires_at_ms` are u64; SQLite integers are i64. They are stored as
//!   `v XOR 2^63` reinterpreted as i64, which keeps their order, so SQL comparisons agree with
//!   the u64 ones over the whole range (a sequence of `u64::MAX` is as valid here as in memory).
//! - The trait's infallible methods (`get`, `providers`, `sweep`, `records`, ...) log a store
//!   failure and answer as if nothing were held; the fallible ones return it as `Storage`.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::id::Key;
use super::record::{
    MAX_NAME_LEN, MAX_VALUE_CEILING, MemoryQuotas, Merge, ProviderRecord, Record, RecordStore,
    SIGNATURE_LEN, merge,
};
use crate::error::{CoveyError, ErrorKind, Result};
use crate::store::Store;

/// Maps a u64 to an i64 keeping the order (`0` to `i64::MIN`, `u64::MAX` to `i64::MAX`).
fn enc(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

/// The inverse of [`enc`].
fn dec(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// A quota as an SQL integer (`usize` above `i64::MAX` means no limit).
fn quota(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn id32(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| CoveyError::storage("corrupt DHT store: id is not 32 bytes"))
}

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

type RecordRow = (Vec<u8>, Vec<u8>, Vec<u8>, i64, i64, Vec<u8>);

const RECORD_COLUMNS: &str = "publisher, name, value, seq, expires_at_ms, signature";

fn read_record_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_record((publisher, name, value, seq, expires, signature): RecordRow) -> Result<Record> {
    Ok(Record {
        publisher: id32(publisher)?,
        name,
        value,
        seq: dec(seq),
        expires_at_ms: dec(expires),
        signature,
    })
}

type ProviderRow = (Vec<u8>, Vec<u8>, i64, Vec<u8>);

const PROVIDER_COLUMNS: &str = "key, provider, expires_at_ms, signature";

fn read_provider_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProviderRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_provider((key, provider, expires, signature): ProviderRow) -> Result<ProviderRecord> {
    Ok(ProviderRecord {
        key: id32(key)?,
        provider: id32(provider)?,
        expires_at_ms: dec(expires),
        signature,
    })
}

/// The one statement that is the versioned compare-and-swap and the record quotas.
///
/// A new (publisher, name) is inserted only while the table holds fewer than `?9` records
/// and the publisher fewer than `?10`; an existing one is replaced only when the held copy
/// has expired, the incoming sequence is higher, or it is the same value at the same sequence
/// with a later expiry. Zero changed rows means the record was not written.
const PUT_RECORD: &str = "
    INSERT INTO dht_records (publisher, name, key, seq, value, expires_at_ms, signature)
    SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
    WHERE EXISTS (SELECT 1 FROM dht_records WHERE publisher = ?1 AND name = ?2)
       OR ((SELECT count(*) FROM dht_records) < ?9
           AND (SELECT count(*) FROM dht_records WHERE publisher = ?1) < ?10)
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
           AND (EXISTS (SELECT 1 FROM dht_providers WHERE key = ?1)
                OR (SELECT count(DISTINCT key) FROM dht_providers) < ?6))
    ON CONFLICT (key, provider) DO UPDATE SET
        expires_at_ms = excluded.expires_at_ms,
        signature = excluded.signature
    WHERE excluded.expires_at_ms > dht_providers.expires_at_ms";

/// A [`RecordStore`] kept in the node's SQLite [`Store`] (tables `dht_records` and
/// `dht_providers`, schema version 3), bounded by the same [`MemoryQuotas`] as the in-memory
/// store.
///
/// The quotas count rows and every row's size is bounded (name 256 bytes, value at most
/// [`MAX_VALUE_CEILING`], a 64-byte signature), so the disk the tables can take is bounded
/// too: at most `max_records` records of about 33 KiB each (about 330 MB at the default
/// 10,000; values are normally held to the configured 1 KiB by validation first) and
/// `max_provider_keys * max_providers_per_key` provider rows of about 140 bytes.
#[derive(Debug, Clone)]
pub struct SqliteRecordStore {
    store: Arc<Store>,
    quotas: MemoryQuotas,
}

impl SqliteRecordStore {
    /// A record store in `store`, bounded by `quotas`.
    pub fn new(store: Arc<Store>, quotas: MemoryQuotas) -> Self {
        Self { store, quotas }
    }

    /// The quotas this store enforces.
    pub fn quotas(&self) -> MemoryQuotas {
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
                .query_row(params![key.0, enc(now_ms)], read_record_row)
                .optional()?;
            row.map(to_record).transpose()
        })
    }

    /// [`RecordStore::providers`], with store failures returned.
    pub fn try_providers(
        &self,
        key: &Key,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<ProviderRecord>> {
        self.store.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {PROVIDER_COLUMNS} FROM dht_providers
                 WHERE key = ?1 AND expires_at_ms > ?2 ORDER BY id LIMIT ?3"
            ))?;
            let rows =
                stmt.query_map(params![key.0, enc(now_ms), quota(limit)], read_provider_row)?;
            rows.map(|r| to_provider(r?)).collect()
        })
    }

    /// Deletes every record and provider record expired at `now_ms`, in one transaction;
    /// returns how many of each.
    pub fn sweep_expired(&self, now_ms: u64) -> Result<SweepCounts> {
        self.store.write(|tx| {
            let records = tx
                .prepare_cached("DELETE FROM dht_records WHERE expires_at_ms <= ?1")?
                .execute(params![enc(now_ms)])?;
            let providers = tx
                .prepare_cached("DELETE FROM dht_providers WHERE expires_at_ms <= ?1")?
                .execute(params![enc(now_ms)])?;
            Ok(SweepCounts { records, providers })
        })
    }

    /// [`RecordStore::records`], with store failures returned.
    pub fn try_records(&self) -> Result<Vec<Record>> {
        self.store.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM dht_records ORDER BY publisher, name"
            ))?;
            let rows = stmt.query_map([], read_record_row)?;
            rows.map(|r| to_record(r?)).collect()
        })
    }

    /// [`RecordStore::provider_records`], with store failures returned.
    pub fn try_provider_records(&self) -> Result<Vec<ProviderRecord>> {
        self.store.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {PROVIDER_COLUMNS} FROM dht_providers ORDER BY id"
            ))?;
            let rows = stmt.query_map([], read_provider_row)?;
            rows.map(|r| to_provider(r?)).collect()
        })
    }

    /// Bytes of names, values and signatures held on disk (records and provider records),
    /// not counting SQLite's own overhead.
    pub fn stored_bytes(&self) -> Result<u64> {
        self.store.read(|c| {
            let records: i64 = c.query_row(
                "SELECT coalesce(sum(32 + 32 + length(name) + length(value) + length(signature)
                                     + 16), 0)
                 FROM dht_records",
                [],
                |r| r.get(0),
            )?;
            let providers: i64 = c.query_row(
                "SELECT coalesce(sum(32 + 32 + 8 + length(signature)), 0) FROM dht_providers",
                [],
                |r| r.get(0),
            )?;
            Ok(u64::try_from(records.saturating_add(providers)).unwrap_or(0))
        })
    }
}

/// The held (publisher, name) row, expired or not.
fn held_record(c: &Connection, record: &Record) -> Result<Option<Record>> {
    let row = c
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM dht_records WHERE publisher = ?1 AND name = ?2"
        ))?
        .query_row(params![record.publisher, record.name], read_record_row)
        .optional()?;
    row.map(to_record).transpose()
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
        self.store.write(|tx| {
            // Read only to name the outcome: the statement below decides on its own.
            let held = held_record(tx, &record)?;
            let live = held.as_ref().filter(|r| r.expires_at_ms > now_ms);
            let changed = tx.prepare_cached(PUT_RECORD)?.execute(params![
                record.publisher,
                record.name,
                record.key().0,
                enc(record.seq),
                record.value,
                enc(record.expires_at_ms),
                record.signature,
                enc(now_ms),
                quota(quotas.max_records),
                quota(quotas.max_per_publisher),
            ])?;
            let expected = merge(live, &record);
            match (changed, expected) {
                (1, Ok(outcome @ (Merge::Replace | Merge::Same { extends: true }))) => Ok(outcome),
                (0, Ok(outcome @ Merge::Same { extends: false })) => Ok(outcome),
                (0, Err(conflict)) => Err(conflict),
                (0, Ok(Merge::Replace)) if held.is_none() => {
                    let total = count(tx, "SELECT count(*) FROM dht_records", [])?;
                    if total >= quota(quotas.max_records) {
                        Err(rate_limited("record"))
                    } else {
                        Err(rate_limited("per-publisher record"))
                    }
                }
                (changed, expected) => Err(CoveyError::internal(format!(
                    "DHT record store wrote {changed} rows where the merge rule says {expected:?}"
                ))),
            }
        })
    }

    fn add_provider(&mut self, record: ProviderRecord, _now_ms: u64) -> Result<()> {
        check_sizes(0, 0, record.signature.len())?;
        let quotas = self.quotas;
        self.store.write(|tx| {
            let changed = tx.prepare_cached(ADD_PROVIDER)?.execute(params![
                record.key,
                record.provider,
                enc(record.expires_at_ms),
                record.signature,
                quota(quotas.max_providers_per_key),
                quota(quotas.max_provider_keys),
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
            if for_key == 0 {
                Err(rate_limited("provider key"))
            } else {
                Err(rate_limited("providers-per-key"))
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

    fn provider_records(&self) -> Vec<ProviderRecord> {
        self.try_provider_records().unwrap_or_else(|e| {
            log::warn!("DHT provider listing failed: {e}");
            Vec::new()
        })
    }

    /// Records live on disk, not on the heap: only the handle counts.
    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use iroh::SecretKey;

    use super::*;
    use crate::dht::record::{MemoryStore, provider_key};
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
    /// both with `quotas`.
    fn on_both(quotas: MemoryQuotas, check: impl Fn(&mut dyn RecordStore)) {
        let mut memory = MemoryStore::new(quotas);
        check(&mut memory);
        let dir = tempfile::tempdir().unwrap();
        let mut sqlite = SqliteRecordStore::new(open(dir.path()), quotas);
        check(&mut sqlite);
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
            MemoryQuotas::default(),
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
            MemoryQuotas::default(),
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
            MemoryQuotas::default(),
            extreme_sequences_and_expiries_keep_their_order,
        );
    }

    const SMALL: MemoryQuotas = MemoryQuotas {
        max_records: 3,
        max_per_publisher: 2,
        max_providers_per_key: 2,
        max_provider_keys: 2,
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

    #[test]
    fn sweep_counts_records_and_providers_separately() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteRecordStore::new(open(dir.path()), MemoryQuotas::default());
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
            let mut store = SqliteRecordStore::new(open(dir.path()), MemoryQuotas::default());
            store.put(r.clone(), NOW).unwrap();
            store.add_provider(p.clone(), NOW).unwrap();
            assert!(store.stored_bytes().unwrap() > 0);
        }
        let mut store = SqliteRecordStore::new(open(dir.path()), MemoryQuotas::default());
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
        let mut store = SqliteRecordStore::new(open(dir.path()), MemoryQuotas::default());
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
    fn order_preserving_encoding_round_trips() {
        let samples = [
            0,
            1,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        for w in samples.windows(2) {
            assert!(enc(w[0]) < enc(w[1]), "{} vs {}", w[0], w[1]);
        }
        for v in samples {
            assert_eq!(dec(enc(v)), v);
        }
        assert_eq!(enc(0), i64::MIN);
        assert_eq!(enc(u64::MAX), i64::MAX);
    }

    #[test]
    fn a_dht_node_answers_store_requests_from_the_sqlite_store() {
        use crate::dht::proto::{Message, Refusal, Request, Response};
        use crate::dht::{Action, Dht, DhtConfig};

        let dir = tempfile::tempdir().unwrap();
        let store = SqliteRecordStore::new(open(dir.path()), MemoryQuotas::default());
        let mut dht = Dht::new(secret(1), store, DhtConfig::default(), [0; 32], NOW).unwrap();
        let peer = Key(*secret(2).public().as_bytes());
        let ask = |dht: &mut Dht<SqliteRecordStore>, id: u64, record: Record| {
            let body = Request::Store { record };
            dht.handle_message(peer, Message::Request { id, body }, NOW);
            loop {
                match dht.poll_action() {
                    Some(Action::Send {
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
