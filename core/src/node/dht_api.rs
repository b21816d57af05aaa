//! The DHT calls of [`Node`]: signed mutable records and provider announcements.

use iroh::EndpointId;

use super::Node;
use crate::dht::Outcome;
use crate::dht::record::MAX_NAME_LEN;
use crate::error::{CoveyError, Result};

/// Longest application key accepted by [`Node::dht_provide`] and [`Node::dht_providers`].
const MAX_PROVIDER_KEY_BYTES: usize = 1024;

/// A record read from the DHT: signed by its publisher, the highest valid sequence found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtRecord {
    /// The node that published (and signed) the record.
    pub publisher: EndpointId,
    /// The record's name within the publisher's namespace.
    pub name: String,
    /// The value.
    pub value: Vec<u8>,
    /// Its sequence number (the first put is 1; each put raises it).
    pub seq: u64,
    /// When it expires, ms since the Unix epoch, unless republished.
    pub expires_at_ms: u64,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(CoveyError::invalid(format!(
            "record name must be 1 to {MAX_NAME_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > MAX_PROVIDER_KEY_BYTES {
        return Err(CoveyError::invalid(format!(
            "provider key must be 1 to {MAX_PROVIDER_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

fn ttl_ms(ttl_secs: u64) -> Result<u64> {
    if ttl_secs == 0 {
        return Err(CoveyError::invalid("ttl_secs must be above zero"));
    }
    Ok(ttl_secs.saturating_mul(1000))
}

fn unexpected(outcome: &Outcome) -> CoveyError {
    CoveyError::internal(format!("unexpected dht outcome {outcome:?}"))
}

impl Node {
    /// Publishes `value` under (this node, `name`) for `ttl_secs`, signed by this node, and
    /// returns its new sequence number. With `expected_seq` it is a compare-and-swap: it
    /// fails with `Conflict` unless the current sequence is `expected_seq` (0: no record
    /// yet). Fails with `InvalidInput` for an empty or over-long name, an oversized value
    /// (1 KiB by default) or a bad ttl, `Timeout` after about 10 s. The record is always
    /// kept locally as well, so a node with no DHT peers yet succeeds and serves it to peers
    /// that find it later.
    pub async fn dht_put(
        &self,
        name: &str,
        value: &[u8],
        ttl_secs: u64,
        expected_seq: Option<u64>,
    ) -> Result<u64> {
        self.check_open()?;
        check_name(name)?;
        let ttl = ttl_ms(ttl_secs)?;
        // The operation starts on the blocking pool (it writes the record locally first).
        let (name, value) = (name.as_bytes().to_vec(), value.to_vec());
        let outcome = self
            .inner
            .dht
            .run(move |dht, now| dht.put(&name, &value, ttl, expected_seq, now))
            .await?;
        match outcome {
            Outcome::Put(result) => result,
            other => Err(unexpected(&other)),
        }
    }

    /// The record of (`publisher`, `name`) with the highest valid sequence the network
    /// holds, or `None`. Fails with `Timeout` when the lookup cannot finish in about 10 s.
    pub async fn dht_get(&self, publisher: &EndpointId, name: &str) -> Result<Option<DhtRecord>> {
        self.check_open()?;
        check_name(name)?;
        let publisher_bytes = *publisher.as_bytes();
        let name_bytes = name.as_bytes().to_vec();
        let outcome = self
            .inner
            .dht
            .run(move |dht, now| dht.get(&publisher_bytes, &name_bytes, now))
            .await?;
        match outcome {
            Outcome::Record(record) => Ok(record.map(|r| DhtRecord {
                publisher: *publisher,
                name: String::from_utf8_lossy(&r.name).into_owned(),
                value: r.value,
                seq: r.seq,
                expires_at_ms: r.expires_at_ms,
            })),
            other => Err(unexpected(&other)),
        }
    }

    /// Announces this node as a provider of `key` for `ttl_secs` (at most 48 hours). Each
    /// announcement lives an hour and is renewed every 30 minutes while the ttl lasts.
    /// Fails with `Network` when no node accepted the announcement.
    pub async fn dht_provide(&self, key: &[u8], ttl_secs: u64) -> Result<()> {
        self.check_open()?;
        check_key(key)?;
        let ttl = ttl_ms(ttl_secs)?;
        let key = key.to_vec();
        let outcome = self
            .inner
            .dht
            .run(move |dht, now| dht.provide(&key, ttl, now))
            .await?;
        match outcome {
            Outcome::Provided(0) => Err(CoveyError::network(
                "no node accepted the provider announcement",
            )),
            Outcome::Provided(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The nodes currently announcing themselves as providers of `key`.
    pub async fn dht_providers(&self, key: &[u8]) -> Result<Vec<EndpointId>> {
        self.check_open()?;
        check_key(key)?;
        let key = key.to_vec();
        let outcome = self
            .inner
            .dht
            .run(move |dht, now| dht.providers(&key, now))
            .await?;
        match outcome {
            Outcome::Providers(records) => {
                let mut out: Vec<EndpointId> = records
                    .iter()
                    .filter_map(|p| EndpointId::from_bytes(&p.provider).ok())
                    .collect();
                out.sort();
                out.dedup();
                Ok(out)
            }
            other => Err(unexpected(&other)),
        }
    }
}
