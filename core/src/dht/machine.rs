//! The sans-IO DHT node: routing table, record store, lookups and operations, driven by
//! events (a message arrived, time passed, the application asked for something) and
//! answering with [`Action`]s (send this message, this operation finished). The iroh driver
//! and the simulator run this same machine.

use std::collections::{HashMap, VecDeque};

use iroh::SecretKey;

use super::id::Key;
use super::lookup::{Lookup, LookupStats};
use super::messages::{self, MAX_PROVIDERS_PER_RESPONSE, Message, Refusal, Request, Response};
use super::record::{
    ProviderRecord, Record, RecordLimits, RecordStore, pick_winner, provider_key, record_key,
};
use super::routing::{Insert, RoutingTable};
use crate::error::{CoveyError, ErrorKind, Result};

/// Tunables of a DHT node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtConfig {
    /// Bucket size and replication factor.
    pub k: usize,
    /// Requests in flight per lookup.
    pub alpha: usize,
    /// How long a request may go unanswered before it counts as failed.
    pub request_timeout_ms: u64,
    /// How long a bucket may go without a lookup before it is refreshed.
    pub refresh_interval_ms: u64,
    /// How often held records are replicated to the current `k` closest, and own records
    /// and provider announcements republished.
    pub replicate_interval_ms: u64,
    /// Default provider-record lifetime.
    pub provider_ttl_ms: u64,
    /// How often our provider announcements are renewed: well inside their lifetime, so a
    /// provider never drops out between two announcements.
    pub reprovide_interval_ms: u64,
    /// Record limits.
    pub limits: RecordLimits,
    /// Requests per second one peer may make of us, sustained.
    pub requests_per_sec: u32,
    /// Requests one peer may make in a burst.
    pub request_burst: u32,
    /// Most peers whose request rate is tracked at once.
    pub max_tracked_peers: usize,
    /// Most operations running at once.
    pub max_ops: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            k: 20,
            alpha: 3,
            request_timeout_ms: 2_000,
            refresh_interval_ms: 3_600_000,
            replicate_interval_ms: 3_600_000,
            provider_ttl_ms: 3_600_000,
            reprovide_interval_ms: 1_800_000,
            limits: RecordLimits::default(),
            requests_per_sec: 50,
            request_burst: 200,
            max_tracked_peers: 4096,
            max_ops: 1024,
        }
    }
}

impl DhtConfig {
    /// Checks the configuration is usable.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 || self.alpha == 0 || self.k > 64 {
            return Err(CoveyError::invalid("k must be 1..=64 and alpha above zero"));
        }
        if self.provider_ttl_ms == 0 || self.provider_ttl_ms > self.limits.max_provider_ttl_ms {
            return Err(CoveyError::invalid(
                "provider_ttl_ms must be above zero and within limits.max_provider_ttl_ms",
            ));
        }
        if self.reprovide_interval_ms == 0 || self.reprovide_interval_ms >= self.provider_ttl_ms {
            return Err(CoveyError::invalid(
                "reprovide_interval_ms must be above zero and below provider_ttl_ms",
            ));
        }
        if self.request_timeout_ms == 0 || self.requests_per_sec == 0 || self.request_burst == 0 {
            return Err(CoveyError::invalid("timeouts and rates must be above zero"));
        }
        self.limits.validate()
    }
}

/// Identifies one operation started on a [`Dht`].
pub type OpId = u64;

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A node lookup (or bootstrap): the closest peers that answered, closest first.
    Nodes(Vec<Key>),
    /// A get: the winning record, if any node held one.
    Record(Option<Record>),
    /// A put: the new sequence number, or `Conflict` (stale `expected_seq` or lost race),
    /// or `Network` (no node took it).
    Put(Result<u64>),
    /// An announcement: how many nodes accepted it.
    Provided(usize),
    /// The providers found.
    Providers(Vec<ProviderRecord>),
    /// A replication round for one record: how many nodes accepted it.
    Replicated(usize),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `message` to `to`.
    Send {
        /// The recipient.
        to: Key,
        /// The message.
        message: Message,
    },
    /// Operation `op` finished.
    Done {
        /// The operation.
        op: OpId,
        /// Its result.
        outcome: Outcome,
        /// What its lookup cost.
        stats: LookupStats,
    },
}

/// What happened on this node, for measurement and for tests of bad input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtCounters {
    /// Requests answered.
    pub requests_in: u64,
    /// Requests dropped by the per-peer rate limit.
    pub rate_limited: u64,
    /// Messages that failed to decode.
    pub undecodable: u64,
    /// Responses to no request in flight, or from the wrong peer.
    pub unexpected_responses: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Records or provider records refused (bad signature, expiry, size, wrong key).
    pub invalid_records: u64,
    /// Stores refused for a stale or conflicting sequence.
    pub conflicts: u64,
    /// Contacts dropped because a response held more than `k`.
    pub contacts_truncated: u64,
    /// Contacts ignored because they were us or the responder.
    pub contacts_ignored: u64,
    /// Requests sent.
    pub requests_out: u64,
    /// Reads (node lookups, gets, provider lookups) that joined an identical one already
    /// running instead of starting their own.
    pub coalesced: u64,
}

#[derive(Debug, Clone, Copy)]
enum Purpose {
    Lookup(OpId),
    Store(OpId),
    EvictPing,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    to: Key,
    deadline_ms: u64,
    purpose: Purpose,
}

#[derive(Debug, Clone)]
enum Kind {
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

#[derive(Debug, Clone)]
enum Phase {
    Looking(Lookup),
    Storing {
        stats: LookupStats,
        waiting: usize,
        accepted: usize,
        record: Option<Record>,
        holdings: Vec<Record>,
    },
}

#[derive(Debug, Clone)]
struct Op {
    kind: Kind,
    phase: Phase,
    /// Operations that asked for the same read while this one was looking: they finish
    /// with its outcome.
    followers: Vec<OpId>,
}

#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    milli_tokens: u64,
    last_ms: u64,
}

/// One DHT node.
#[derive(Debug, Clone)]
pub struct Dht<S: RecordStore> {
    secret: SecretKey,
    local: Key,
    config: DhtConfig,
    routing: RoutingTable,
    store: S,
    ops: HashMap<OpId, Op>,
    pending: HashMap<u64, Pending>,
    limiters: HashMap<Key, TokenBucket>,
    /// Our own records, with the TTL they were published for (for republishing).
    published: HashMap<Vec<u8>, (Record, u64)>,
    providing: HashMap<[u8; 32], u64>,
    next_request: u64,
    next_op: OpId,
    next_refresh_ms: u64,
    next_replicate_ms: u64,
    next_reprovide_ms: u64,
    random_state: [u8; 32],
    random_counter: u64,
    counters: DhtCounters,
    actions: VecDeque<Action>,
}

impl<S: RecordStore> Dht<S> {
    /// A node with identity `secret`, holding records in `store`; `seed` feeds the random
    /// refresh targets (any bytes; the driver picks them) and `now_ms` starts the timers.
    pub fn new(
        secret: SecretKey,
        store: S,
        config: DhtConfig,
        seed: [u8; 32],
        now_ms: u64,
    ) -> Result<Self> {
        config.validate()?;
        let local = Key(*secret.public().as_bytes());
        Ok(Self {
            routing: RoutingTable::new(local, config.k),
            secret,
            local,
            config,
            store,
            ops: HashMap::new(),
            pending: HashMap::new(),
            limiters: HashMap::new(),
            published: HashMap::new(),
            providing: HashMap::new(),
            next_request: 1,
            next_op: 1,
            next_refresh_ms: now_ms.saturating_add(config.refresh_interval_ms),
            next_replicate_ms: now_ms.saturating_add(config.replicate_interval_ms),
            next_reprovide_ms: now_ms.saturating_add(config.reprovide_interval_ms),
            random_state: seed,
            random_counter: 0,
            counters: DhtCounters::default(),
            actions: VecDeque::new(),
        })
    }

    /// Our id.
    pub fn id(&self) -> Key {
        self.local
    }

    /// The routing table.
    pub fn routing(&self) -> &RoutingTable {
        &self.routing
    }

    /// The record store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// What happened so far.
    pub fn counters(&self) -> DhtCounters {
        self.counters
    }

    /// Operations still running.
    pub fn ops_running(&self) -> usize {
        self.ops.len()
    }

    /// The next action to carry out, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest time [`Self::handle_timeout`] has work to do.
    pub fn next_deadline(&self) -> u64 {
        self.pending
            .values()
            .map(|p| p.deadline_ms)
            .min()
            .unwrap_or(u64::MAX)
            .min(self.next_refresh_ms)
            .min(self.next_replicate_ms)
            .min(self.next_reprovide_ms)
    }

    /// Approximate heap bytes of the routing table and store (for memory estimates).
    pub fn heap_bytes(&self) -> usize {
        self.routing.heap_bytes()
            + self.store.heap_bytes()
            + self.limiters.capacity() * std::mem::size_of::<(Key, TokenBucket)>()
            + self.pending.capacity() * std::mem::size_of::<(u64, Pending)>()
    }

    fn random_key(&mut self) -> [u8; 32] {
        self.random_counter += 1;
        let mut h = blake3::Hasher::new();
        h.update(&self.random_state);
        h.update(&self.random_counter.to_be_bytes());
        *h.finalize().as_bytes()
    }

    fn new_op(&mut self, kind: Kind, target: Key, now_ms: u64) -> Result<OpId> {
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
        if name.len() > super::record::MAX_NAME_LEN {
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

    fn send_request(&mut self, to: Key, body: Request, purpose: Purpose, now_ms: u64) {
        let id = self.next_request;
        self.next_request += 1;
        self.pending.insert(
            id,
            Pending {
                to,
                deadline_ms: now_ms.saturating_add(self.config.request_timeout_ms),
                purpose,
            },
        );
        self.counters.requests_out += 1;
        self.actions.push_back(Action::Send {
            to,
            message: Message::Request { id, body },
        });
    }

    fn note_peer(&mut self, peer: Key, now_ms: u64) {
        if let Insert::PingThenMaybeEvict(oldest) = self.routing.insert(peer, now_ms) {
            self.send_request(oldest, Request::Ping, Purpose::EvictPing, now_ms);
        }
    }

    fn allow(&mut self, peer: Key, now_ms: u64) -> bool {
        let cap = u64::from(self.config.request_burst) * 1000;
        let rate = u64::from(self.config.requests_per_sec);
        if self.limiters.len() >= self.config.max_tracked_peers
            && !self.limiters.contains_key(&peer)
        {
            // Forget peers whose budget has refilled: they are idle.
            self.limiters.retain(|_, b| {
                b.milli_tokens + now_ms.saturating_sub(b.last_ms).saturating_mul(rate) < cap
            });
            if self.limiters.len() >= self.config.max_tracked_peers {
                return false;
            }
        }
        let b = self.limiters.entry(peer).or_insert(TokenBucket {
            milli_tokens: cap,
            last_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(b.last_ms);
        b.milli_tokens = (b.milli_tokens + elapsed.saturating_mul(rate)).min(cap);
        b.last_ms = b.last_ms.max(now_ms);
        if b.milli_tokens >= 1000 {
            b.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Bytes arrived from `from` (an authenticated peer id). Undecodable bytes are counted
    /// and dropped.
    pub fn handle_bytes(&mut self, from: Key, bytes: &[u8], now_ms: u64) {
        match messages::decode(bytes) {
            Ok(m) => self.handle_message(from, m, now_ms),
            Err(_) => self.counters.undecodable += 1,
        }
    }

    /// A message arrived from `from`.
    pub fn handle_message(&mut self, from: Key, message: Message, now_ms: u64) {
        if from == self.local {
            return;
        }
        match message {
            Message::Request { id, body } => {
                if !self.allow(from, now_ms) {
                    self.counters.rate_limited += 1;
                    return;
                }
                self.counters.requests_in += 1;
                self.note_peer(from, now_ms);
                let response = self.answer(from, body, now_ms);
                self.actions.push_back(Action::Send {
                    to: from,
                    message: Message::Response { id, body: response },
                });
            }
            Message::Response { id, body } => {
                let Some(p) = self.pending.get(&id).copied() else {
                    self.counters.unexpected_responses += 1;
                    return;
                };
                if p.to != from {
                    self.counters.unexpected_responses += 1;
                    return;
                }
                self.pending.remove(&id);
                self.note_peer(from, now_ms);
                match p.purpose {
                    Purpose::EvictPing => {}
                    Purpose::Lookup(op) => self.on_lookup_response(op, from, body, now_ms),
                    Purpose::Store(op) => self.on_store_response(op, body, now_ms),
                }
            }
        }
    }

    fn closest_for(&self, target: &Key, requester: &Key) -> Vec<Key> {
        let mut c = self.routing.closest(target, self.config.k + 1);
        c.retain(|k| k != requester);
        c.truncate(self.config.k);
        c
    }

    fn answer(&mut self, from: Key, body: Request, now_ms: u64) -> Response {
        match body {
            Request::Ping => Response::Pong,
            Request::FindNode { target } => Response::Nodes {
                contacts: self.closest_for(&target, &from),
            },
            Request::FindValue { key } => Response::Value {
                record: self.store.get(&key, now_ms),
                contacts: self.closest_for(&key, &from),
            },
            Request::GetProviders { key } => Response::Providers {
                providers: self
                    .store
                    .providers(&key, now_ms, MAX_PROVIDERS_PER_RESPONSE),
                contacts: self.closest_for(&key, &from),
            },
            Request::Store { record } => {
                if record.validate(now_ms, &self.config.limits).is_err() {
                    self.counters.invalid_records += 1;
                    return Response::Stored {
                        accepted: false,
                        refusal: Some(Refusal::Invalid),
                        held: None,
                    };
                }
                let key = record.key();
                match self.store.put(record, now_ms) {
                    Ok(_) => Response::Stored {
                        accepted: true,
                        refusal: None,
                        held: None,
                    },
                    Err(e) if e.kind() == ErrorKind::Conflict => {
                        self.counters.conflicts += 1;
                        Response::Stored {
                            accepted: false,
                            refusal: Some(Refusal::Conflict),
                            held: self.store.get(&key, now_ms),
                        }
                    }
                    Err(_) => Response::Stored {
                        accepted: false,
                        refusal: Some(Refusal::Full),
                        held: None,
                    },
                }
            }
            Request::AddProvider { record } => {
                if record.validate(now_ms, &self.config.limits).is_err() {
                    self.counters.invalid_records += 1;
                    return Response::ProviderAdded { accepted: false };
                }
                Response::ProviderAdded {
                    accepted: self.store.add_provider(record, now_ms).is_ok(),
                }
            }
        }
    }

    fn on_lookup_response(&mut self, op_id: OpId, from: Key, body: Response, now_ms: u64) {
        let limits = self.config.limits;
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let Phase::Looking(lookup) = &mut op.phase else {
            return;
        };
        let target = *lookup.target();
        let before = lookup.stats();
        let mut invalid = 0;
        let mut wrong_kind = false;
        let accepted = match body {
            Response::Nodes { contacts } => lookup.on_response(&from, &contacts),
            Response::Value { record, contacts } => {
                let ok = lookup.on_response(&from, &contacts);
                if let (true, Some(r)) = (ok, record) {
                    let valid = r.key() == target && r.validate(now_ms, &limits).is_ok();
                    match &mut op.kind {
                        Kind::Get { found } | Kind::Put { found, .. } if valid => found.push(r),
                        _ => invalid += 1,
                    }
                }
                ok
            }
            Response::Providers {
                providers,
                contacts,
            } => {
                let ok = lookup.on_response(&from, &contacts);
                if let (true, Kind::Providers { found }) = (ok, &mut op.kind) {
                    for p in providers {
                        if p.key == target.0 && p.validate(now_ms, &limits).is_ok() {
                            found.insert(p.provider, p);
                        } else {
                            invalid += 1;
                        }
                    }
                }
                ok
            }
            // Any other response to a lookup request is a protocol error: the peer counts as
            // failed for this lookup and in the routing table, and is counted below.
            _ => {
                lookup.on_failure(&from);
                wrong_kind = true;
                false
            }
        };
        let after = lookup.stats();
        self.counters.contacts_truncated +=
            u64::from(after.contacts_truncated - before.contacts_truncated);
        self.counters.contacts_ignored +=
            u64::from(after.contacts_ignored - before.contacts_ignored);
        self.counters.invalid_records += invalid;
        if !accepted {
            self.counters.unexpected_responses += 1;
        }
        if wrong_kind {
            self.routing.on_failure(&from);
        }
        self.advance(op_id, now_ms);
    }

    fn on_store_response(&mut self, op_id: OpId, body: Response, now_ms: u64) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let Phase::Storing {
            waiting,
            accepted,
            record,
            holdings,
            ..
        } = &mut op.phase
        else {
            return;
        };
        *waiting = waiting.saturating_sub(1);
        match body {
            Response::Stored { accepted: true, .. }
            | Response::ProviderAdded { accepted: true } => {
                *accepted += 1;
                if let Some(r) = record {
                    holdings.push(r.clone());
                }
            }
            Response::Stored { held: Some(h), .. } => {
                if let Some(r) = record {
                    // Only a valid record of the same key counts as a holding.
                    if h.key() == r.key() && h.validate(now_ms, &self.config.limits).is_ok() {
                        holdings.push(h);
                    }
                }
            }
            _ => {}
        }
        self.advance(op_id, now_ms);
    }

    fn on_failure(&mut self, p: Pending, now_ms: u64) {
        self.counters.timeouts += 1;
        self.routing.on_failure(&p.to);
        match p.purpose {
            Purpose::EvictPing => {}
            Purpose::Lookup(op_id) => {
                if let Some(Op {
                    phase: Phase::Looking(l),
                    ..
                }) = self.ops.get_mut(&op_id)
                {
                    l.on_failure(&p.to);
                }
                self.advance(op_id, now_ms);
            }
            Purpose::Store(op_id) => {
                if let Some(Op {
                    phase: Phase::Storing { waiting, .. },
                    ..
                }) = self.ops.get_mut(&op_id)
                {
                    *waiting = waiting.saturating_sub(1);
                }
                self.advance(op_id, now_ms);
            }
        }
    }

    /// Time passed: expires requests, refreshes stale buckets, replicates records.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let mut expired: Vec<(u64, Pending)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(id, p)| (*id, *p))
            .collect();
        expired.sort_unstable_by_key(|(id, _)| *id);
        for (id, p) in expired {
            self.pending.remove(&id);
            self.on_failure(p, now_ms);
        }
        if now_ms >= self.next_refresh_ms {
            self.next_refresh_ms = now_ms.saturating_add(self.config.refresh_interval_ms);
            self.refresh(now_ms, self.config.refresh_interval_ms);
        }
        if now_ms >= self.next_replicate_ms {
            self.next_replicate_ms = now_ms.saturating_add(self.config.replicate_interval_ms);
            self.replicate(now_ms);
        }
        if now_ms >= self.next_reprovide_ms {
            self.next_reprovide_ms = now_ms.saturating_add(self.config.reprovide_interval_ms);
            self.reprovide(now_ms);
        }
    }

    /// Looks up a random key in every bucket, from our nearest neighbour's up, that no
    /// lookup went through for `stale_ms` (0: every such bucket, as after joining). Runs on
    /// the refresh timer; returns the operations started.
    pub fn refresh(&mut self, now_ms: u64, stale_ms: u64) -> Vec<OpId> {
        let mut ops = Vec::new();
        for index in self.routing.due_for_refresh(now_ms, stale_ms) {
            let random = self.random_key();
            let target = self.local.random_in_bucket(index, &random);
            // Best effort: at the op limit the bucket waits for the next round.
            if let Ok(op) = self.new_op(Kind::FindNode, target, now_ms) {
                ops.push(op);
            }
        }
        ops
    }

    /// Looks up a random key in each of the `buckets` farthest buckets (255, 254, ...), which
    /// between them cover all but a sliver of the network: a cheap way for a joiner to fill
    /// its table beyond what its self-lookup taught it. Returns the operations started.
    pub fn refresh_farthest(&mut self, now_ms: u64, buckets: usize) -> Vec<OpId> {
        let mut ops = Vec::new();
        for index in (256usize.saturating_sub(buckets.min(256))..256).rev() {
            let random = self.random_key();
            let target = self.local.random_in_bucket(index, &random);
            if let Ok(op) = self.new_op(Kind::FindNode, target, now_ms) {
                ops.push(op);
            }
        }
        ops
    }

    /// Replicates every record held to the current `k` closest nodes of its key, republishes
    /// our own records with a fresh expiry, and sweeps expired records. Runs on the
    /// replication timer; public so a driver or test can force a round.
    pub fn replicate(&mut self, now_ms: u64) {
        self.store.sweep(now_ms);
        let mut records = self.store.records();
        // Our own records: refresh their expiry (same seq, same value) and push them.
        let own: Vec<(Record, u64)> = self.published.values().cloned().collect();
        for (r, ttl) in own {
            let fresh = Record::sign(
                &self.secret,
                &r.name,
                &r.value,
                r.seq,
                now_ms.saturating_add(ttl.max(1)),
            );
            if let Ok(fresh) = fresh {
                self.published
                    .insert(fresh.name.clone(), (fresh.clone(), ttl));
                records.retain(|x| x.key() != fresh.key());
                records.push(fresh);
            }
        }
        records.sort_by_key(|r| r.key());
        for r in records {
            let key = r.key();
            let _ = self.new_op(Kind::Replicate { record: r }, key, now_ms);
        }
    }

    /// Re-announces every key we still provide, each with a fresh expiry (at most the
    /// provider lifetime). Runs on the re-provide timer; public so a driver or test can force
    /// a round.
    pub fn reprovide(&mut self, now_ms: u64) {
        self.providing.retain(|_, until| *until > now_ms);
        let mut providing: Vec<([u8; 32], u64)> =
            self.providing.iter().map(|(k, u)| (*k, *u)).collect();
        providing.sort_unstable();
        for (key, until) in providing {
            let ttl = until
                .saturating_sub(now_ms)
                .min(self.config.provider_ttl_ms);
            let record = ProviderRecord::sign(&self.secret, Key(key), now_ms.saturating_add(ttl));
            let _ = self.new_op(Kind::Provide { record }, Key(key), now_ms);
        }
    }

    /// Moves operation `op_id` forward: sends what its lookup wants, and when the lookup is
    /// done, stores or finishes.
    fn advance(&mut self, op_id: OpId, now_ms: u64) {
        let Some(mut op) = self.ops.remove(&op_id) else {
            return;
        };
        loop {
            match &mut op.phase {
                Phase::Looking(lookup) => {
                    let next = lookup.next_requests();
                    if !next.is_empty() {
                        let body = match &op.kind {
                            Kind::Get { .. } | Kind::Put { .. } => Request::FindValue {
                                key: *lookup.target(),
                            },
                            Kind::Providers { .. } => Request::GetProviders {
                                key: *lookup.target(),
                            },
                            _ => Request::FindNode {
                                target: *lookup.target(),
                            },
                        };
                        for to in next {
                            self.send_request(to, body.clone(), Purpose::Lookup(op_id), now_ms);
                        }
                        self.ops.insert(op_id, op);
                        return;
                    }
                    if !lookup.is_finished() {
                        self.ops.insert(op_id, op);
                        return;
                    }
                    let stats = lookup.finish_stats();
                    let closest = lookup.closest_answered();
                    let target = *lookup.target();
                    match self.after_lookup(op_id, &mut op.kind, target, stats, closest, now_ms) {
                        Some(phase) => op.phase = phase,
                        None => {
                            self.finish_followers(op_id, &op.followers);
                            return;
                        }
                    }
                }
                Phase::Storing {
                    stats,
                    waiting,
                    accepted,
                    record,
                    holdings,
                } => {
                    if *waiting > 0 {
                        self.ops.insert(op_id, op);
                        return;
                    }
                    let stats = *stats;
                    let outcome = match &op.kind {
                        Kind::Put { ttl_ms, signer, .. } => {
                            let mine = record.as_ref().map(Record::fingerprint);
                            match pick_winner(holdings.iter()) {
                                None => Outcome::Put(Err(CoveyError::network(
                                    "no node stored the record",
                                ))),
                                Some(w)
                                    if Some(w.fingerprint()) == mine
                                        || record.as_ref().is_some_and(|r| {
                                            r.seq == w.seq && r.value == w.value
                                        }) =>
                                {
                                    if let Some(r) = record.take() {
                                        let seq = r.seq;
                                        if signer.is_none() {
                                            self.published.insert(r.name.clone(), (r, *ttl_ms));
                                        }
                                        Outcome::Put(Ok(seq))
                                    } else {
                                        Outcome::Put(Err(CoveyError::internal(
                                            "put lost its record",
                                        )))
                                    }
                                }
                                Some(w) => Outcome::Put(Err(CoveyError::new(
                                    ErrorKind::Conflict,
                                    format!("another write won sequence {}", w.seq),
                                ))),
                            }
                        }
                        Kind::Provide { .. } => Outcome::Provided(*accepted),
                        _ => Outcome::Replicated(*accepted),
                    };
                    self.actions.push_back(Action::Done {
                        op: op_id,
                        outcome,
                        stats,
                    });
                    return;
                }
            }
        }
    }

    /// Gives every follower of `leader` the outcome `leader` just finished with.
    fn finish_followers(&mut self, leader: OpId, followers: &[OpId]) {
        if followers.is_empty() {
            return;
        }
        let last = self.actions.iter().rev().find_map(|a| match a {
            Action::Done { op, outcome, stats } if *op == leader => Some((outcome.clone(), *stats)),
            _ => None,
        });
        if let Some((outcome, stats)) = last {
            for f in followers {
                self.actions.push_back(Action::Done {
                    op: *f,
                    outcome: outcome.clone(),
                    stats,
                });
            }
        }
    }

    /// The lookup of an operation finished: returns the storing phase to enter, or `None`
    /// when the operation finished here.
    fn after_lookup(
        &mut self,
        op_id: OpId,
        kind: &mut Kind,
        target: Key,
        stats: LookupStats,
        closest: Vec<Key>,
        now_ms: u64,
    ) -> Option<Phase> {
        let done = |outcome| Action::Done {
            op: op_id,
            outcome,
            stats,
        };
        let (request, record): (Request, Option<Record>) = match kind {
            Kind::FindNode => {
                self.actions.push_back(done(Outcome::Nodes(closest)));
                return None;
            }
            Kind::Get { found } => {
                let local = self.store.get(&target, now_ms);
                let winner = pick_winner(found.iter().chain(local.iter()));
                self.actions.push_back(done(Outcome::Record(winner)));
                return None;
            }
            Kind::Providers { found } => {
                let mut list: Vec<ProviderRecord> = found.values().cloned().collect();
                list.sort_by_key(|p| p.provider);
                self.actions.push_back(done(Outcome::Providers(list)));
                return None;
            }
            Kind::Put {
                signer,
                name,
                value,
                ttl_ms,
                expected_seq,
                found,
            } => {
                let local = self.store.get(&target, now_ms);
                let mine = match signer {
                    None => self.published.get(name.as_slice()).map(|(r, _)| r.clone()),
                    Some(_) => None,
                };
                let current = pick_winner(found.iter().chain(local.iter()).chain(mine.iter()))
                    .map(|r| r.seq)
                    .unwrap_or(0);
                if let Some(expected) = expected_seq.filter(|e| *e != current) {
                    self.actions
                        .push_back(done(Outcome::Put(Err(CoveyError::new(
                            ErrorKind::Conflict,
                            format!("expected sequence {expected}, current is {current}"),
                        )))));
                    return None;
                }
                let record = match Record::sign(
                    signer.as_deref().unwrap_or(&self.secret),
                    name,
                    value,
                    current + 1,
                    now_ms.saturating_add(*ttl_ms),
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        self.actions.push_back(done(Outcome::Put(Err(e))));
                        return None;
                    }
                };
                (
                    Request::Store {
                        record: record.clone(),
                    },
                    Some(record),
                )
            }
            Kind::Replicate { record } => (
                Request::Store {
                    record: record.clone(),
                },
                Some(record.clone()),
            ),
            Kind::Provide { record } => (
                Request::AddProvider {
                    record: record.clone(),
                },
                None,
            ),
        };
        // Store on the k closest; we hold a copy ourselves when we are among them.
        let mut holdings = Vec::new();
        let mut accepted = 0;
        if let Some(r) = &record {
            let key = r.key();
            let me_close = closest.len() < self.config.k
                || closest
                    .last()
                    .is_some_and(|far| self.local.distance(&key) < far.distance(&key));
            if me_close {
                match self.store.put(r.clone(), now_ms) {
                    Ok(_) => {
                        accepted += 1;
                        holdings.push(r.clone());
                    }
                    Err(_) => {
                        if let Some(h) = self.store.get(&key, now_ms) {
                            holdings.push(h);
                        }
                    }
                }
            }
        } else if let Request::AddProvider { record } = &request {
            let key = Key(record.key);
            let me_close = closest.len() < self.config.k
                || closest
                    .last()
                    .is_some_and(|far| self.local.distance(&key) < far.distance(&key));
            if me_close && self.store.add_provider(record.clone(), now_ms).is_ok() {
                accepted += 1;
            }
        }
        for to in &closest {
            self.send_request(*to, request.clone(), Purpose::Store(op_id), now_ms);
        }
        Some(Phase::Storing {
            stats,
            waiting: closest.len(),
            accepted,
            record,
            holdings,
        })
    }
}
