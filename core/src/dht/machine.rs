//! The sans-IO DHT node: routing table, record store, lookups and operations, driven by
//! events (a message arrived, time passed, the application asked for something) and
//! answering with [`Output`]s (send this message, this operation finished). The iroh driver
//! and the simulator run this same machine.
//!
//! This file holds the node's state and routes each event to the part that handles it; the
//! parts are child modules so they share the node's private fields and nothing else does:
//! - `serve`: answering requests from other nodes, within each peer's rate budget;
//! - `operations`: what an operation is, and starting one (bootstrap, find, get, put,
//!   provide, providers, probe);
//! - `progress`: moving operations on as responses arrive and requests time out, through
//!   the lookup and then the store phase, to their outcome;
//! - `replication`: the upkeep timers' work (bucket refresh, record replication, provider
//!   re-announcement).

mod operations;
mod progress;
mod replication;
mod serve;

use std::collections::{HashMap, VecDeque};

use iroh::SecretKey;

use super::config::DhtConfig;
use super::id::Key;
use super::lookup::LookupStats;
use super::messages::{self, Message, Request};
use super::rate_limit::RequestLimiter;
use super::record::{ProviderRecord, Record, RecordStore};
use super::routing::{Insert, RoutingTable};
use crate::error::Result;
use operations::Op;

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
pub enum Output {
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

/// Why a request was sent, so its response or timeout reaches what is waiting for it.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// A lookup step of this operation.
    Lookup(OpId),
    /// A store (or provider announcement) of this operation.
    Store(OpId),
    /// A liveness check: of a bucket's oldest contact before a newcomer may replace it, or of
    /// a probed peer. Its answer counts only through the routing table.
    EvictPing,
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
struct Pending {
    to: Key,
    deadline_ms: u64,
    purpose: Purpose,
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
    limiter: RequestLimiter,
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
    outputs: VecDeque<Output>,
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
            limiter: RequestLimiter::new(
                config.requests_per_sec,
                config.request_burst,
                config.max_tracked_peers,
                now_ms,
            ),
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
            outputs: VecDeque::new(),
        })
    }

    /// Our id.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn id(&self) -> Key {
        self.local
    }

    /// The routing table.
    pub fn routing(&self) -> &RoutingTable {
        &self.routing
    }

    /// The record store.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn store(&self) -> &S {
        &self.store
    }

    /// What happened so far.
    pub fn counters(&self) -> DhtCounters {
        self.counters
    }

    /// Operations still running.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn ops_running(&self) -> usize {
        self.ops.len()
    }

    /// The next action to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
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
    #[cfg(any(test, feature = "test-utils"))]
    pub fn heap_bytes(&self) -> usize {
        self.routing.heap_bytes()
            + self.store.heap_bytes()
            + self.limiter.heap_bytes()
            + self.pending.capacity() * std::mem::size_of::<(u64, Pending)>()
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
            Message::Request { id, body } => self.serve(from, id, body, now_ms),
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

    /// Sends `body` to `to` and waits for its answer until the request timeout.
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
        self.outputs.push_back(Output::Send {
            to,
            message: Message::Request { id, body },
        });
    }

    /// A peer was heard from: it joins the routing table, or, when its bucket is full, the
    /// bucket's oldest contact is pinged and replaced only if it does not answer.
    fn note_peer(&mut self, peer: Key, now_ms: u64) {
        if let Insert::PingThenMaybeEvict(oldest) = self.routing.insert(peer, now_ms) {
            self.send_request(oldest, Request::Ping, Purpose::EvictPing, now_ms);
        }
    }
}
