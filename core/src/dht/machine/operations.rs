//! What an operation is (its kind and phase) and how each one starts: bootstrap, node
//! lookups, gets, puts, provider announcements and provider lookups, and probes of peers met
//! outside the DHT. Concurrent reads of one key share one lookup.

use std::collections::HashMap;

use iroh::SecretKey;

use super::{Dht, OpId, Purpose};
use crate::dht::id::Key;
use crate::dht::lookup::{Lookup, LookupStats};
use crate::dht::messages::Request;
use crate::dht::record::{
    MAX_NAME_LEN, ProviderRecord, Record, RecordStore, provider_key, record_key,
};
use crate::error::{CoveyError, ErrorKind, Result};

/// What an operation does, with what it has gathered so far.
#[derive(Debug, Clone)]
pub(super) enum Kind {
    FindNode,
    Get {
        found: Vec<Record>,
    },
    Put {
        signer: Option<Box<SecretKey>>,
        name: Vec<u8>,
        value: Vec<u8>,
        ttl_ms: u64,
        expected_seq: Option<u64>,
        found: Vec<Record>,
    },
    Provide {
        record: ProviderRecord,
    },
    Providers {
        found: HashMap<[u8; 32], ProviderRecord>,
    },
    Replicate {
        record: Record,
    },
}

/// Where an operation is: looking for the closest nodes, or storing on them.
#[derive(Debug, Clone)]
pub(super) enum Phase {
    Looking(Lookup),
    Storing {
        stats: LookupStats,
        waiting: usize,
        accepted: usize,
        record: Option<Record>,
        holdings: Vec<Record>,
    },
}

/// One running operation.
#[derive(Debug, Clone)]
pub(super) struct Op {
    pub(super) kind: Kind,
    pub(super) phase: Phase,
    /// Operations that asked for the same read while this one was looking: they finish
    /// with its outcome.
    pub(super) followers: Vec<OpId>,
}

impl<S: RecordStore> Dht<S> {
    /// Starts an operation of `kind` towards `target`, or, for a read of a key a running read
    /// is already looking up, makes it a follower of that one. Refused at `max_ops`.
    pub(super) fn new_op(&mut self, kind: Kind, target: Key, now_ms: u64) -> Result<OpId> {
        if self.ops.len() >= self.config.max_ops {
            return Err(CoveyError::new(
                ErrorKind::RateLimited,
                "too many DHT operations running",
            ));
        }
        let id = self.next_op;
        self.next_op += 1;
        // Concurrent reads of one key share one lookup.
        let read = |k: &Kind| match k {
            Kind::FindNode => Some(0u8),
            Kind::Get { .. } => Some(1),
            Kind::Providers { .. } => Some(2),
            _ => None,
        };
        if let Some(class) = read(&kind) {
            let leader = self.ops.values_mut().find(|op| {
                read(&op.kind) == Some(class)
                    && matches!(&op.phase, Phase::Looking(l) if *l.target() == target)
            });
            if let Some(leader) = leader {
                leader.followers.push(id);
                self.counters.coalesced += 1;
                return Ok(id);
            }
        }
        let seeds = self.routing.closest(&target, self.config.k);
        self.routing.touch(&target, now_ms);
        let lookup = Lookup::new(self.local, target, &seeds, self.config.k, self.config.alpha);
        self.ops.insert(
            id,
            Op {
                kind,
                phase: Phase::Looking(lookup),
                followers: Vec::new(),
            },
        );
        self.advance(id, now_ms);
        Ok(id)
    }

    /// Adds `seeds` (bootstrap peers) to the routing table and looks ourselves up, which
    /// fills the table and announces us to our neighbours.
    pub fn bootstrap(&mut self, seeds: &[Key], now_ms: u64) -> Result<OpId> {
        for s in seeds {
            self.routing.insert(*s, now_ms);
        }
        self.new_op(Kind::FindNode, self.local, now_ms)
    }

    /// Pings `peer`, a node met outside the DHT (over a sync connection, say): it joins the
    /// routing table only if it answers, so a peer that does not speak the DHT never does.
    /// Does nothing for ourselves or a peer already in the table.
    pub fn probe(&mut self, peer: Key, now_ms: u64) {
        if peer == self.local || self.routing.contains(&peer) {
            return;
        }
        self.send_request(peer, Request::Ping, Purpose::EvictPing, now_ms);
    }

    /// Looks up the `k` nodes closest to `target`.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn find_node(&mut self, target: Key, now_ms: u64) -> Result<OpId> {
        self.new_op(Kind::FindNode, target, now_ms)
    }

    /// Gets the record of (`publisher`, `name`).
    pub fn get(&mut self, publisher: &[u8; 32], name: &[u8], now_ms: u64) -> Result<OpId> {
        self.new_op(
            Kind::Get { found: Vec::new() },
            record_key(publisher, name),
            now_ms,
        )
    }

    /// Publishes `value` under (us, `name`) for `ttl_ms`. With `expected_seq` it is a
    /// compare-and-swap: it ends in `Conflict` unless the current sequence is `expected_seq`
    /// (0 for none). It also ends in `Conflict` when a concurrent writer won the sequence.
    pub fn put(
        &mut self,
        name: &[u8],
        value: &[u8],
        ttl_ms: u64,
        expected_seq: Option<u64>,
        now_ms: u64,
    ) -> Result<OpId> {
        self.put_inner(None, name, value, ttl_ms, expected_seq, now_ms)
    }

    /// Like [`Self::put`], but the record is published and signed by `signer` instead of this
    /// node (one identity writing from several devices). Such records are not republished by
    /// this node; the caller owns that key.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn put_as(
        &mut self,
        signer: &SecretKey,
        name: &[u8],
        value: &[u8],
        ttl_ms: u64,
        expected_seq: Option<u64>,
        now_ms: u64,
    ) -> Result<OpId> {
        self.put_inner(
            Some(Box::new(signer.clone())),
            name,
            value,
            ttl_ms,
            expected_seq,
            now_ms,
        )
    }

    /// [`Self::put`] and [`Self::put_as`]: checks the value against the limits, then looks
    /// up the current record of the key before signing the next sequence.
    fn put_inner(
        &mut self,
        signer: Option<Box<SecretKey>>,
        name: &[u8],
        value: &[u8],
        ttl_ms: u64,
        expected_seq: Option<u64>,
        now_ms: u64,
    ) -> Result<OpId> {
        if value.len() > self.config.limits.max_value {
            return Err(CoveyError::invalid(format!(
                "value is {} bytes, limit {}",
                value.len(),
                self.config.limits.max_value
            )));
        }
        if ttl_ms == 0 || ttl_ms > self.config.limits.max_ttl_ms {
            return Err(CoveyError::invalid(
                "ttl must be above zero and within the maximum",
            ));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(CoveyError::invalid("record name too long"));
        }
        let publisher = signer
            .as_ref()
            .map(|s| *s.public().as_bytes())
            .unwrap_or(self.local.0);
        let key = record_key(&publisher, name);
        self.new_op(
            Kind::Put {
                signer,
                name: name.to_vec(),
                value: value.to_vec(),
                ttl_ms,
                expected_seq,
                found: Vec::new(),
            },
            key,
            now_ms,
        )
    }

    /// Announces us as a provider of `key` for `ttl_ms` (re-announced on every replication
    /// tick until it lapses).
    pub fn provide(&mut self, key: &[u8], ttl_ms: u64, now_ms: u64) -> Result<OpId> {
        // `ttl_ms` is how long we keep announcing; each announcement itself lives at most
        // `provider_ttl_ms` and is renewed on the re-provide timer.
        if ttl_ms == 0 || ttl_ms > self.config.limits.max_ttl_ms {
            return Err(CoveyError::invalid(format!(
                "provider ttl must be above zero and at most {} s",
                self.config.limits.max_ttl_ms / 1000
            )));
        }
        let pk = provider_key(key);
        let expires = now_ms.saturating_add(ttl_ms.min(self.config.provider_ttl_ms.max(1)));
        self.providing.insert(pk.0, now_ms.saturating_add(ttl_ms));
        let record = ProviderRecord::sign(&self.secret, pk, expires);
        self.new_op(Kind::Provide { record }, pk, now_ms)
    }

    /// Sends `record`, a provider record signed elsewhere, to the `k` closest nodes of its
    /// key (and keeps a copy when this node is among them). Unlike [`Self::provide`], the
    /// record is not renewed on the re-provide timer: only its signer can re-sign it, and a
    /// group rendezvous record is signed by a per-window key and seals an address bound to
    /// its expiry, so the caller renews it. Fails with `InvalidInput` or `Crypto` for a
    /// record this node itself would refuse (a sealed blob over the bound, an expiry past
    /// `max_provider_ttl_ms`, a bad signature): every holder would refuse it too.
    pub fn provide_signed(&mut self, record: ProviderRecord, now_ms: u64) -> Result<OpId> {
        record.validate(now_ms, &self.config.limits)?;
        let key = Key(record.key);
        self.new_op(Kind::Provide { record }, key, now_ms)
    }

    /// Finds providers of `key`.
    pub fn providers(&mut self, key: &[u8], now_ms: u64) -> Result<OpId> {
        self.new_op(
            Kind::Providers {
                found: HashMap::new(),
            },
            provider_key(key),
            now_ms,
        )
    }
}
