//! Signed DHT records: mutable records under (publisher, name) with a sequence number and an
//! expiry, where the highest valid sequence wins; provider records with a TTL; and the
//! record-store trait with its in-memory implementation.

use std::collections::HashMap;

use iroh::{PublicKey, SecretKey, Signature};
use serde::{Deserialize, Serialize};

use super::id::Key;
use crate::error::{CoveyError, ErrorKind, Result};

/// Domain separation for record signatures.
pub const RECORD_SIGNATURE_LABEL: &[u8] = b"covey/v1/dht-record";
/// Domain separation for provider-record signatures. Version 2: the signed message also
/// covers the record's `sealed` bytes.
pub const PROVIDER_SIGNATURE_LABEL: &[u8] = b"covey/v2/dht-provider";
/// Label of the key a record is stored under.
pub const RECORD_KEY_LABEL: &[u8] = b"covey/v1/dht-record-key";
/// Label of the key a provider record is stored under.
pub const PROVIDER_KEY_LABEL: &[u8] = b"covey/v1/dht-provider-key";
/// Hard ceiling on a record value: no configuration goes above it.
pub const MAX_VALUE_CEILING: usize = 32 * 1024;
/// Longest record name.
pub const MAX_NAME_LEN: usize = 256;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Longest `sealed` blob a provider record may carry: room for a group rendezvous
/// announcement (a 24-byte nonce, an encrypted address and a 16-byte tag) and no more, so a
/// full `Providers` response (64 records) stays far below the message limit.
pub const MAX_SEALED_BYTES: usize = 512;
/// Fixed bytes every held record counts against [`RecordQuotas::max_total_bytes`] besides its
/// name, value and signature: the 32-byte publisher, the 32-byte key it is stored under, and
/// the 8-byte sequence and 8-byte expiry.
pub const RECORD_FIXED_BYTES: usize = 32 + 32 + 8 + 8;

/// Limits a node applies to the records it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// Largest value accepted (default 1 KiB, at most [`MAX_VALUE_CEILING`]).
    pub max_value: usize,
    /// Farthest expiry accepted, from now.
    pub max_ttl_ms: u64,
    /// Farthest provider-record expiry accepted, from now.
    pub max_provider_ttl_ms: u64,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_value: 1024,
            max_ttl_ms: 48 * 3600 * 1000,
            max_provider_ttl_ms: 2 * 3600 * 1000,
        }
    }
}

impl RecordLimits {
    /// Checks the limits are usable.
    pub fn validate(&self) -> Result<()> {
        if self.max_value == 0 || self.max_value > MAX_VALUE_CEILING {
            return Err(CoveyError::invalid(format!(
                "max value {} is outside 1 to {MAX_VALUE_CEILING} bytes",
                self.max_value
            )));
        }
        if self.max_ttl_ms == 0 || self.max_provider_ttl_ms == 0 {
            return Err(CoveyError::invalid("record TTL limits must be above zero"));
        }
        Ok(())
    }
}

/// A mutable record signed by its publisher.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Record {
    /// The publisher's Ed25519 public key (its node id).
    pub publisher: [u8; 32],
    /// The record's name within the publisher's namespace.
    pub name: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Sequence number: the highest valid one wins.
    pub seq: u64,
    /// Expiry, ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// Ed25519 signature over [`Record::signing_message`].
    pub signature: Vec<u8>,
}

/// The key a record of (`publisher`, `name`) lives under.
pub fn record_key(publisher: &[u8; 32], name: &[u8]) -> Key {
    Key::derive(RECORD_KEY_LABEL, &[publisher, name])
}

/// The key provider records for application key `key` live under.
pub fn provider_key(key: &[u8]) -> Key {
    Key::derive(PROVIDER_KEY_LABEL, &[key])
}

fn verify_sig(signer: &[u8; 32], message: &[u8], signature: &[u8]) -> Result<()> {
    let key = PublicKey::from_bytes(signer)
        .map_err(|_| CoveyError::crypto("signer is not a valid Ed25519 key"))?;
    let bytes: [u8; SIGNATURE_LEN] = signature
        .try_into()
        .map_err(|_| CoveyError::crypto("signature is not 64 bytes"))?;
    key.verify(message, &Signature::from_bytes(&bytes))
        .map_err(|_| CoveyError::crypto("signature does not verify"))
}

fn check_expiry(expires_at_ms: u64, now_ms: u64, max_ttl_ms: u64) -> Result<()> {
    if expires_at_ms <= now_ms {
        return Err(CoveyError::invalid("record expired"));
    }
    if expires_at_ms - now_ms > max_ttl_ms {
        return Err(CoveyError::invalid("record expiry too far in the future"));
    }
    Ok(())
}

impl Record {
    /// Signs a record of `name` = `value` at `seq`, expiring at `expires_at_ms`.
    pub fn sign(
        secret: &SecretKey,
        name: &[u8],
        value: &[u8],
        seq: u64,
        expires_at_ms: u64,
    ) -> Result<Self> {
        if name.len() > MAX_NAME_LEN {
            return Err(CoveyError::invalid(format!(
                "record name is {} bytes, limit {MAX_NAME_LEN}",
                name.len()
            )));
        }
        if value.len() > MAX_VALUE_CEILING {
            return Err(CoveyError::invalid(format!(
                "record value is {} bytes, limit {MAX_VALUE_CEILING}",
                value.len()
            )));
        }
        let mut r = Record {
            publisher: *secret.public().as_bytes(),
            name: name.to_vec(),
            value: value.to_vec(),
            seq,
            expires_at_ms,
            signature: Vec::new(),
        };
        r.signature = secret.sign(&r.signing_message()).to_bytes().to_vec();
        Ok(r)
    }

    /// What the signature covers: a label, then every field, length-prefixed.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut h = blake3::Hasher::new();
        h.update(&self.publisher);
        h.update(&(self.name.len() as u64).to_be_bytes());
        h.update(&self.name);
        h.update(&(self.value.len() as u64).to_be_bytes());
        h.update(&self.value);
        h.update(&self.seq.to_be_bytes());
        h.update(&self.expires_at_ms.to_be_bytes());
        let mut m = RECORD_SIGNATURE_LABEL.to_vec();
        m.extend_from_slice(h.finalize().as_bytes());
        m
    }

    /// The key this record lives under.
    pub fn key(&self) -> Key {
        record_key(&self.publisher, &self.name)
    }

    /// A stable fingerprint of the whole record, the deterministic tie-break between two
    /// different records of one sequence number.
    pub fn fingerprint(&self) -> [u8; 32] {
        *blake3::hash(&self.signing_message()).as_bytes()
    }

    /// Checks sizes, expiry and the signature at `now_ms`.
    pub fn validate(&self, now_ms: u64, limits: &RecordLimits) -> Result<()> {
        if self.name.len() > MAX_NAME_LEN {
            return Err(CoveyError::invalid("record name too long"));
        }
        if self.value.len() > limits.max_value.min(MAX_VALUE_CEILING) {
            return Err(CoveyError::invalid(format!(
                "record value is {} bytes, limit {}",
                self.value.len(),
                limits.max_value
            )));
        }
        check_expiry(self.expires_at_ms, now_ms, limits.max_ttl_ms)?;
        verify_sig(&self.publisher, &self.signing_message(), &self.signature)
    }

    /// The bytes this record counts against [`RecordQuotas::max_total_bytes`] while held:
    /// [`RECORD_FIXED_BYTES`] plus the lengths of its name, value and signature. Both stores
    /// use this one definition (the SQLite store computes the same sum in SQL), so a record
    /// costs the same wherever it is held; a store's own overhead (hash-map slots, SQLite
    /// pages) is not counted.
    pub fn stored_bytes(&self) -> usize {
        RECORD_FIXED_BYTES + self.name.len() + self.value.len() + self.signature.len()
    }

    /// Approximate heap bytes (for memory estimates).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn heap_bytes(&self) -> usize {
        self.name.capacity() + self.value.capacity() + self.signature.capacity()
    }
}

/// How an incoming record relates to the one held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Nothing held, or the incoming sequence is higher: store it.
    Replace,
    /// The same record (or the same value and seq with a later expiry, which is stored).
    Same {
        /// Whether the incoming copy extends the expiry and should be stored.
        extends: bool,
    },
}

/// "Highest valid sequence wins": whether `incoming` may replace `held`. A lower sequence is
/// stale and an equal sequence with a different value is a conflict; both are `Conflict`
/// errors, so the first record of a sequence a node accepts is the one it keeps.
pub fn merge(held: Option<&Record>, incoming: &Record) -> Result<Merge> {
    let Some(held) = held else {
        return Ok(Merge::Replace);
    };
    if incoming.seq > held.seq {
        return Ok(Merge::Replace);
    }
    if incoming.seq < held.seq {
        return Err(CoveyError::new(
            ErrorKind::Conflict,
            format!("stale sequence {} below {}", incoming.seq, held.seq),
        ));
    }
    if incoming.value != held.value {
        return Err(CoveyError::new(
            ErrorKind::Conflict,
            format!("sequence {} already holds a different value", incoming.seq),
        ));
    }
    Ok(Merge::Same {
        extends: incoming.expires_at_ms > held.expires_at_ms,
    })
}

/// Picks the winner among copies of one record gathered from several nodes: the highest
/// sequence; among different values of that sequence, the one most nodes hold, ties broken by
/// the lowest fingerprint. Every reader that sees the same holders picks the same record.
pub fn pick_winner<'a>(copies: impl IntoIterator<Item = &'a Record>) -> Option<Record> {
    let copies: Vec<&Record> = copies.into_iter().collect();
    let top = copies.iter().map(|r| r.seq).max()?;
    let mut tally: HashMap<[u8; 32], (usize, &Record)> = HashMap::new();
    for r in copies.iter().filter(|r| r.seq == top) {
        // Same value with different expiries count as one candidate (keep the later expiry).
        let id = *blake3::hash(&r.value).as_bytes();
        let e = tally.entry(id).or_insert((0, r));
        e.0 += 1;
        if r.expires_at_ms > e.1.expires_at_ms {
            e.1 = r;
        }
    }
    tally
        .into_values()
        .max_by(|(na, ra), (nb, rb)| {
            na.cmp(nb)
                .then_with(|| rb.fingerprint().cmp(&ra.fingerprint()))
        })
        .map(|(_, r)| r.clone())
}

/// An announcement, signed by the provider, that it serves `key` until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProviderRecord {
    /// The provider key ([`provider_key`] of the application key).
    pub key: [u8; 32],
    /// The provider's Ed25519 public key: the key that signs. A node's id for an application
    /// announcement; a per-window key that names no node for a group rendezvous.
    pub provider: [u8; 32],
    /// Expiry, ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// Opaque bytes for whoever can read them, at most [`MAX_SEALED_BYTES`]: empty in an
    /// application announcement, the member's address sealed to the group in a rendezvous
    /// one. The DHT only bounds and signs them.
    pub sealed: Vec<u8>,
    /// Ed25519 signature over [`ProviderRecord::signing_message`].
    pub signature: Vec<u8>,
}

impl ProviderRecord {
    /// Signs an announcement that `secret`'s node provides `key` until `expires_at_ms`, with
    /// nothing sealed (an application announcement).
    pub fn sign(secret: &SecretKey, key: Key, expires_at_ms: u64) -> Self {
        Self::signed(secret, key, expires_at_ms, Vec::new())
    }

    /// Signs an announcement by `secret` of `key` until `expires_at_ms` carrying `sealed`.
    /// Fails with `InvalidInput` when `sealed` is over [`MAX_SEALED_BYTES`].
    pub fn sign_sealed(
        secret: &SecretKey,
        key: Key,
        expires_at_ms: u64,
        sealed: Vec<u8>,
    ) -> Result<Self> {
        check_sealed(sealed.len())?;
        Ok(Self::signed(secret, key, expires_at_ms, sealed))
    }

    fn signed(secret: &SecretKey, key: Key, expires_at_ms: u64, sealed: Vec<u8>) -> Self {
        let mut r = ProviderRecord {
            key: key.0,
            provider: *secret.public().as_bytes(),
            expires_at_ms,
            sealed,
            signature: Vec::new(),
        };
        r.signature = secret.sign(&r.signing_message()).to_bytes().to_vec();
        r
    }

    /// What the signature covers: the label, the key, the provider, the expiry (u64 BE),
    /// then the sealed bytes with their length (u64 BE) first, so no two field splits give
    /// the same message.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(PROVIDER_SIGNATURE_LABEL.len() + 80 + self.sealed.len());
        m.extend_from_slice(PROVIDER_SIGNATURE_LABEL);
        m.extend_from_slice(&self.key);
        m.extend_from_slice(&self.provider);
        m.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        m.extend_from_slice(&(self.sealed.len() as u64).to_be_bytes());
        m.extend_from_slice(&self.sealed);
        m
    }

    /// Checks the sealed size, expiry and signature at `now_ms`.
    pub fn validate(&self, now_ms: u64, limits: &RecordLimits) -> Result<()> {
        check_sealed(self.sealed.len())?;
        check_expiry(self.expires_at_ms, now_ms, limits.max_provider_ttl_ms)?;
        verify_sig(&self.provider, &self.signing_message(), &self.signature)
    }
}

/// A provider record's sealed bytes must fit [`MAX_SEALED_BYTES`].
fn check_sealed(len: usize) -> Result<()> {
    if len > MAX_SEALED_BYTES {
        return Err(CoveyError::invalid(format!(
            "provider record sealed bytes are {len}, limit {MAX_SEALED_BYTES}"
        )));
    }
    Ok(())
}

/// Where a node keeps the records it holds for the network. Implementations enforce their
/// own quotas; records reaching them are already validated.
pub trait RecordStore {
    /// The record of (`publisher`, `name`), if held and not expired at `now_ms`.
    fn get(&self, key: &Key, now_ms: u64) -> Option<Record>;
    /// Stores `record` under the merge rule ([`merge`]); `Conflict` when it loses.
    fn put(&mut self, record: Record, now_ms: u64) -> Result<Merge>;
    /// Adds or refreshes a provider record.
    fn add_provider(&mut self, record: ProviderRecord, now_ms: u64) -> Result<()>;
    /// Up to `limit` unexpired providers of `key`.
    fn providers(&self, key: &Key, now_ms: u64, limit: usize) -> Vec<ProviderRecord>;
    /// Drops everything expired at `now_ms`; returns how many.
    fn sweep(&mut self, now_ms: u64) -> usize;
    /// Every record held (for replication).
    fn records(&self) -> Vec<Record>;
    /// Every provider record held (for the simulator's and tests' checks on replication).
    #[cfg(any(test, feature = "test-utils"))]
    fn provider_records(&self) -> Vec<ProviderRecord>;
    /// Approximate bytes held (for the simulator's memory accounting).
    #[cfg(any(test, feature = "test-utils"))]
    fn heap_bytes(&self) -> usize;
}

/// Quotas on the DHT records a node holds for the network: how many records, bytes and
/// provider records its record store takes. The in-memory store and the SQLite one enforce
/// the same quotas, checked in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordQuotas {
    /// Most records held in total.
    pub max_records: usize,
    /// Most bytes of records held in total, each counted as `Record::stored_bytes`
    /// (default 64 MiB). The row quotas alone would let `max_records` records of up to
    /// [`MAX_VALUE_CEILING`] each in (about 330 MB at the defaults once a node raises its value
    /// limit); this caps the sum whatever the value limit. A write that would take the total
    /// above it is refused as `RateLimited`, unless it replaces a held record by one no
    /// larger, which never grows the total (so a store found over a lowered quota can still
    /// take updates while it drains).
    pub max_total_bytes: usize,
    /// Most records held per publisher.
    pub max_per_publisher: usize,
    /// Most provider records per key.
    pub max_providers_per_key: usize,
    /// Most provider keys held.
    pub max_provider_keys: usize,
    /// Most provider records held in total, all keys together (each about 140 bytes, up to
    /// about 650 with a full sealed blob): the per-key and key-count quotas alone would
    /// allow their product.
    pub max_provider_records: usize,
}

impl Default for RecordQuotas {
    fn default() -> Self {
        Self {
            max_records: 10_000,
            max_total_bytes: 64 * 1024 * 1024,
            max_per_publisher: 64,
            max_providers_per_key: 64,
            max_provider_keys: 10_000,
            max_provider_records: 20_000,
        }
    }
}

/// An in-memory [`RecordStore`] with quotas, for the simulator and tests.
#[cfg(any(test, feature = "test-utils"))]
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    quotas: RecordQuotas,
    records: HashMap<Key, Record>,
    /// Sum of [`Record::stored_bytes`] over `records` (expired ones too, until swept: they
    /// still take the space).
    record_bytes: usize,
    per_publisher: HashMap<[u8; 32], usize>,
    providers: HashMap<Key, Vec<ProviderRecord>>,
}

#[cfg(any(test, feature = "test-utils"))]
impl MemoryStore {
    /// An empty store with `quotas`.
    pub fn new(quotas: RecordQuotas) -> Self {
        Self {
            quotas,
            ..Self::default()
        }
    }

    /// Bytes of the records held, counted as [`Record::stored_bytes`] (expired records
    /// included until a sweep drops them).
    pub fn record_bytes(&self) -> usize {
        self.record_bytes
    }

    fn rate_limited(what: &str) -> CoveyError {
        CoveyError::new(ErrorKind::RateLimited, format!("{what} quota reached"))
    }
}

/// Whether replacing a held record of `held` bytes (0 when none) by one of `incoming` bytes
/// keeps a store of `total` bytes within `max`. A write that does not grow the record is
/// always allowed: it cannot add to the total, and refusing it would only keep a stale value.
pub(crate) fn fits_byte_quota(total: u64, held: u64, incoming: u64, max: u64) -> bool {
    incoming <= held || total.saturating_sub(held).saturating_add(incoming) <= max
}

/// A size or quota as u64 (lossless on every platform Rust supports; saturates otherwise).
pub(crate) fn as_u64(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(any(test, feature = "test-utils"))]
impl RecordStore for MemoryStore {
    fn get(&self, key: &Key, now_ms: u64) -> Option<Record> {
        self.records
            .get(key)
            .filter(|r| r.expires_at_ms > now_ms)
            .cloned()
    }

    fn put(&mut self, record: Record, now_ms: u64) -> Result<Merge> {
        let key = record.key();
        let held = self.records.get(&key).filter(|r| r.expires_at_ms > now_ms);
        let outcome = merge(held, &record)?;
        if !matches!(outcome, Merge::Replace | Merge::Same { extends: true }) {
            return Ok(outcome);
        }
        // Every check comes before any change, so a refused write leaves the store as it was.
        // An expired record not yet swept still takes its row and its bytes, so it counts as
        // held here: replacing it is an update, not a new record.
        let held_bytes = self.records.get(&key).map(Record::stored_bytes);
        let publisher_count = match held_bytes {
            Some(_) => None,
            None => {
                if self.records.len() >= self.quotas.max_records {
                    return Err(Self::rate_limited("record"));
                }
                let n = self
                    .per_publisher
                    .get(&record.publisher)
                    .copied()
                    .unwrap_or(0);
                if n >= self.quotas.max_per_publisher {
                    return Err(Self::rate_limited("per-publisher record"));
                }
                Some(n)
            }
        };
        let held_bytes = held_bytes.unwrap_or(0);
        let incoming = record.stored_bytes();
        if !fits_byte_quota(
            as_u64(self.record_bytes),
            as_u64(held_bytes),
            as_u64(incoming),
            as_u64(self.quotas.max_total_bytes),
        ) {
            return Err(Self::rate_limited("record byte"));
        }
        if let Some(n) = publisher_count {
            self.per_publisher.insert(record.publisher, n + 1);
        }
        self.record_bytes = self.record_bytes.saturating_sub(held_bytes) + incoming;
        self.records.insert(key, record);
        Ok(outcome)
    }

    fn add_provider(&mut self, record: ProviderRecord, _now_ms: u64) -> Result<()> {
        // Records reaching a store are validated; the size is checked again so that not
        // even a caller that skipped validation can hold more than the format allows.
        check_sealed(record.sealed.len())?;
        let key = Key(record.key);
        if !self.providers.contains_key(&key)
            && self.providers.len() >= self.quotas.max_provider_keys
        {
            return Err(Self::rate_limited("provider key"));
        }
        let held: usize = self.providers.values().map(Vec::len).sum();
        let list = self.providers.entry(key).or_default();
        if let Some(old) = list.iter_mut().find(|p| p.provider == record.provider) {
            if record.expires_at_ms > old.expires_at_ms {
                *old = record;
            }
            return Ok(());
        }
        let refusal = if list.len() >= self.quotas.max_providers_per_key {
            Some("providers-per-key")
        } else if held >= self.quotas.max_provider_records {
            Some("provider record")
        } else {
            None
        };
        if let Some(what) = refusal {
            // Never leave behind an empty list for a key that was refused.
            if list.is_empty() {
                self.providers.remove(&key);
            }
            return Err(Self::rate_limited(what));
        }
        list.push(record);
        Ok(())
    }

    fn providers(&self, key: &Key, now_ms: u64, limit: usize) -> Vec<ProviderRecord> {
        self.providers
            .get(key)
            .map(|l| {
                l.iter()
                    .filter(|p| p.expires_at_ms > now_ms)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn sweep(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        let per_publisher = &mut self.per_publisher;
        let record_bytes = &mut self.record_bytes;
        self.records.retain(|_, r| {
            let keep = r.expires_at_ms > now_ms;
            if !keep {
                n += 1;
                *record_bytes = record_bytes.saturating_sub(r.stored_bytes());
                if let Some(c) = per_publisher.get_mut(&r.publisher) {
                    *c = c.saturating_sub(1);
                }
            }
            keep
        });
        self.per_publisher.retain(|_, c| *c > 0);
        for list in self.providers.values_mut() {
            let before = list.len();
            list.retain(|p| p.expires_at_ms > now_ms);
            n += before - list.len();
        }
        self.providers.retain(|_, l| !l.is_empty());
        n
    }

    fn records(&self) -> Vec<Record> {
        self.records.values().cloned().collect()
    }

    fn provider_records(&self) -> Vec<ProviderRecord> {
        self.providers.values().flatten().cloned().collect()
    }

    fn heap_bytes(&self) -> usize {
        let rec = std::mem::size_of::<(Key, Record)>();
        let prov = std::mem::size_of::<ProviderRecord>();
        self.records.capacity() * rec
            + self.records.values().map(Record::heap_bytes).sum::<usize>()
            + self
                .providers
                .values()
                .map(|l| {
                    l.capacity() * (prov + SIGNATURE_LEN)
                        + l.iter().map(|p| p.sealed.capacity()).sum::<usize>()
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(n: u8) -> SecretKey {
        SecretKey::from_bytes(&[n; 32])
    }

    const NOW: u64 = 1_000_000;

    #[test]
    fn validation_rejects_each_kind_of_bad_record() {
        let limits = RecordLimits::default();
        let good = Record::sign(&secret(1), b"name", b"value", 1, NOW + 1000).unwrap();
        assert!(good.validate(NOW, &limits).is_ok());

        let mut tampered = good.clone();
        tampered.value = b"other".to_vec();
        assert_eq!(
            tampered.validate(NOW, &limits).unwrap_err().kind(),
            ErrorKind::Crypto
        );
        let mut wrong_signer = good.clone();
        wrong_signer.publisher = *secret(2).public().as_bytes();
        assert_eq!(
            wrong_signer.validate(NOW, &limits).unwrap_err().kind(),
            ErrorKind::Crypto
        );
        let mut short_sig = good.clone();
        short_sig.signature.truncate(10);
        assert_eq!(
            short_sig.validate(NOW, &limits).unwrap_err().kind(),
            ErrorKind::Crypto
        );

        let expired = Record::sign(&secret(1), b"name", b"v", 1, NOW).unwrap();
        assert_eq!(
            expired.validate(NOW, &limits).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let far = Record::sign(&secret(1), b"name", b"v", 1, NOW + limits.max_ttl_ms + 1).unwrap();
        assert!(far.validate(NOW, &limits).is_err());
        let edge = Record::sign(&secret(1), b"name", b"v", 1, NOW + limits.max_ttl_ms).unwrap();
        assert!(edge.validate(NOW, &limits).is_ok());

        let big = Record::sign(&secret(1), b"name", &[0u8; 1025], 1, NOW + 1000).unwrap();
        assert_eq!(
            big.validate(NOW, &limits).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let roomy = RecordLimits {
            max_value: 2048,
            ..limits
        };
        assert!(big.validate(NOW, &roomy).is_ok());
        assert!(Record::sign(&secret(1), b"n", &[0u8; MAX_VALUE_CEILING + 1], 1, NOW).is_err());
        assert!(
            RecordLimits {
                max_value: MAX_VALUE_CEILING + 1,
                ..limits
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn highest_sequence_wins_and_equal_sequence_conflicts() {
        let s = secret(3);
        let mut store = MemoryStore::new(RecordQuotas::default());
        let r1 = Record::sign(&s, b"n", b"a", 1, NOW + 10).unwrap();
        let r2 = Record::sign(&s, b"n", b"b", 2, NOW + 10).unwrap();
        let r2x = Record::sign(&s, b"n", b"c", 2, NOW + 10).unwrap();
        let r2later = Record::sign(&s, b"n", b"b", 2, NOW + 20).unwrap();
        assert_eq!(store.put(r1.clone(), NOW).unwrap(), Merge::Replace);
        assert_eq!(store.put(r2.clone(), NOW).unwrap(), Merge::Replace);
        assert_eq!(store.put(r1, NOW).unwrap_err().kind(), ErrorKind::Conflict);
        assert_eq!(store.put(r2x, NOW).unwrap_err().kind(), ErrorKind::Conflict);
        assert_eq!(
            store.put(r2.clone(), NOW).unwrap(),
            Merge::Same { extends: false }
        );
        assert_eq!(
            store.put(r2later.clone(), NOW).unwrap(),
            Merge::Same { extends: true }
        );
        assert_eq!(store.get(&r2.key(), NOW), Some(r2later));
        assert_eq!(store.sweep(NOW + 20), 1);
        assert_eq!(store.get(&r2.key(), NOW), None);
    }

    #[test]
    fn winner_is_majority_of_top_sequence_then_fingerprint() {
        let s = secret(4);
        let a = Record::sign(&s, b"n", b"a", 5, NOW + 10).unwrap();
        let b = Record::sign(&s, b"n", b"b", 5, NOW + 10).unwrap();
        let old = Record::sign(&s, b"n", b"z", 4, NOW + 10).unwrap();
        assert_eq!(pick_winner([&a, &b, &b, &old, &old, &old]), Some(b.clone()));
        assert_eq!(pick_winner([&a, &a, &b]), Some(a.clone()));
        // A tie is broken the same way whatever the order.
        let w1 = pick_winner([&a, &b]);
        let w2 = pick_winner([&b, &a]);
        assert_eq!(w1, w2);
        assert!(w1.is_some());
        assert_eq!(pick_winner(std::iter::empty()), None);
    }

    #[test]
    fn value_limit_is_checked_on_both_sides() {
        let with = |max_value| RecordLimits {
            max_value,
            ..RecordLimits::default()
        };
        assert!(with(0).validate().is_err());
        assert!(with(1).validate().is_ok());
        assert!(with(MAX_VALUE_CEILING).validate().is_ok());
        assert!(with(MAX_VALUE_CEILING + 1).validate().is_err());
    }

    #[test]
    fn quotas_bound_the_store() {
        let quotas = RecordQuotas {
            max_records: 3,
            max_total_bytes: usize::MAX,
            max_per_publisher: 2,
            max_providers_per_key: 2,
            max_provider_keys: 1,
            max_provider_records: usize::MAX,
        };
        let mut store = MemoryStore::new(quotas);
        let s = secret(5);
        store
            .put(Record::sign(&s, b"1", b"", 1, NOW + 9).unwrap(), NOW)
            .unwrap();
        store
            .put(Record::sign(&s, b"2", b"", 1, NOW + 9).unwrap(), NOW)
            .unwrap();
        let third = store.put(Record::sign(&s, b"3", b"", 1, NOW + 9).unwrap(), NOW);
        assert_eq!(third.unwrap_err().kind(), ErrorKind::RateLimited);
        store
            .put(
                Record::sign(&secret(6), b"1", b"", 1, NOW + 9).unwrap(),
                NOW,
            )
            .unwrap();
        let full = store.put(
            Record::sign(&secret(7), b"1", b"", 1, NOW + 9).unwrap(),
            NOW,
        );
        assert_eq!(full.unwrap_err().kind(), ErrorKind::RateLimited);

        let key = provider_key(b"app");
        for n in 10..12 {
            store
                .add_provider(ProviderRecord::sign(&secret(n), key, NOW + 9), NOW)
                .unwrap();
        }
        assert!(
            store
                .add_provider(ProviderRecord::sign(&secret(12), key, NOW + 9), NOW)
                .is_err()
        );
        let other = provider_key(b"other");
        assert!(
            store
                .add_provider(ProviderRecord::sign(&secret(10), other, NOW + 9), NOW)
                .is_err()
        );
        assert_eq!(store.providers(&key, NOW, 10).len(), 2);
        assert_eq!(store.providers(&key, NOW + 9, 10).len(), 0);
    }

    #[test]
    fn stored_bytes_counts_name_value_signature_and_fixed_fields() {
        let r = Record::sign(&secret(1), b"name", b"value", 7, NOW + 10).unwrap();
        assert_eq!(RECORD_FIXED_BYTES, 80);
        assert_eq!(r.stored_bytes(), 80 + 4 + 5 + SIGNATURE_LEN);
        let empty = Record::sign(&secret(1), b"", b"", 7, NOW + 10).unwrap();
        assert_eq!(empty.stored_bytes(), 80 + SIGNATURE_LEN);
        assert_eq!(RecordQuotas::default().max_total_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn byte_quota_arithmetic() {
        // Growth within the quota, up to exactly the quota.
        assert!(fits_byte_quota(900, 0, 100, 1000));
        assert!(!fits_byte_quota(900, 0, 101, 1000));
        // A replacement counts only its growth over the held copy.
        assert!(fits_byte_quota(1000, 400, 400, 1000));
        assert!(fits_byte_quota(900, 400, 500, 1000));
        assert!(!fits_byte_quota(900, 400, 501, 1000));
        // Not growing is always allowed, even over the quota.
        assert!(fits_byte_quota(5000, 400, 300, 1000));
        assert!(!fits_byte_quota(5000, 400, 401, 1000));
        // No overflow at the extremes.
        assert!(!fits_byte_quota(u64::MAX, 0, 1, u64::MAX - 1));
        assert!(fits_byte_quota(u64::MAX, 0, 0, 0));
    }

    #[test]
    fn memory_store_over_a_lowered_byte_quota_takes_only_shrinking_updates() {
        let s = secret(9);
        let mut store = MemoryStore::new(RecordQuotas::default());
        let a = Record::sign(&s, b"a", &[1; 500], 1, NOW + 10).unwrap();
        let b = Record::sign(&s, b"b", &[2; 500], 1, NOW + 20).unwrap();
        store.put(a.clone(), NOW).unwrap();
        store.put(b.clone(), NOW).unwrap();
        let full = a.stored_bytes() + b.stored_bytes();
        assert_eq!(store.record_bytes(), full);
        // As if the node came back with a smaller quota than what it holds.
        store.quotas.max_total_bytes = 100;
        let grow = Record::sign(&s, b"a", &[1; 501], 2, NOW + 10).unwrap();
        assert_eq!(
            store.put(grow, NOW).unwrap_err().kind(),
            ErrorKind::RateLimited
        );
        assert_eq!(store.get(&a.key(), NOW), Some(a.clone()));
        let same_size = Record::sign(&s, b"a", &[3; 500], 2, NOW + 10).unwrap();
        assert_eq!(store.put(same_size.clone(), NOW).unwrap(), Merge::Replace);
        let shrink = Record::sign(&s, b"b", &[2; 10], 2, NOW + 20).unwrap();
        assert_eq!(store.put(shrink.clone(), NOW).unwrap(), Merge::Replace);
        assert_eq!(
            store.record_bytes(),
            same_size.stored_bytes() + shrink.stored_bytes()
        );
        let new = Record::sign(&s, b"c", b"", 1, NOW + 20).unwrap();
        assert_eq!(
            store.put(new, NOW).unwrap_err().kind(),
            ErrorKind::RateLimited
        );
        // Sweeping frees exactly what the expired record took.
        assert_eq!(store.sweep(NOW + 10), 1);
        assert_eq!(store.record_bytes(), shrink.stored_bytes());
        assert_eq!(store.records(), vec![shrink]);
    }

    #[test]
    fn sealed_bytes_are_bounded_on_both_sides_and_signed() {
        let limits = RecordLimits::default();
        let key = provider_key(b"k");
        let s = secret(8);
        let at_limit = ProviderRecord::sign_sealed(&s, key, NOW + 1000, vec![7; MAX_SEALED_BYTES])
            .expect("512 sealed bytes are allowed");
        assert!(at_limit.validate(NOW, &limits).is_ok());
        let over = ProviderRecord::sign_sealed(&s, key, NOW + 1000, vec![7; MAX_SEALED_BYTES + 1]);
        assert_eq!(over.unwrap_err().kind(), ErrorKind::InvalidInput);
        // A record grown past the bound after signing is refused for its size, before its
        // (now wrong) signature is even checked.
        let mut grown = at_limit.clone();
        grown.sealed.push(7);
        assert_eq!(
            grown.validate(NOW, &limits).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        // The sealed bytes are signed: changing one byte, or moving a byte between the
        // expiry and the blob, breaks the signature.
        let mut flipped = at_limit.clone();
        flipped.sealed[0] ^= 1;
        assert_eq!(
            flipped.validate(NOW, &limits).unwrap_err().kind(),
            ErrorKind::Crypto
        );
        let mut emptied = at_limit;
        emptied.sealed.clear();
        assert_eq!(
            emptied.validate(NOW, &limits).unwrap_err().kind(),
            ErrorKind::Crypto
        );
        // An application announcement has nothing sealed.
        assert!(ProviderRecord::sign(&s, key, NOW + 1000).sealed.is_empty());
    }

    #[test]
    fn provider_signing_message_is_label_fields_and_sealed_with_its_length() {
        let s = secret(8);
        let key = provider_key(b"k");
        let r =
            ProviderRecord::sign_sealed(&s, key, 0x0102_0304_0506_0708, b"abc".to_vec()).unwrap();
        let m = r.signing_message();
        let label = PROVIDER_SIGNATURE_LABEL;
        assert_eq!(label, b"covey/v2/dht-provider");
        assert_eq!(&m[..label.len()], label);
        let m = &m[label.len()..];
        assert_eq!(&m[..32], &key.0);
        assert_eq!(&m[32..64], s.public().as_bytes());
        assert_eq!(&m[64..72], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&m[72..80], &3u64.to_be_bytes());
        assert_eq!(&m[80..], b"abc");
        let empty = ProviderRecord::sign(&s, key, 9).signing_message();
        assert_eq!(empty.len(), label.len() + 80);
        assert_eq!(&empty[empty.len() - 8..], &[0; 8]);
    }

    #[test]
    fn provider_records_validate() {
        let limits = RecordLimits::default();
        let key = provider_key(b"k");
        let p = ProviderRecord::sign(&secret(8), key, NOW + 3_600_000);
        assert!(p.validate(NOW, &limits).is_ok());
        let mut forged = p.clone();
        forged.provider = *secret(9).public().as_bytes();
        assert!(forged.validate(NOW, &limits).is_err());
        assert!(p.validate(NOW + 3_600_000, &limits).is_err());
        let too_long = ProviderRecord::sign(&secret(8), key, NOW + limits.max_provider_ttl_ms + 1);
        assert!(too_long.validate(NOW, &limits).is_err());
    }
}
