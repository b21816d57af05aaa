//! Moving operations on: a lookup asks the next closest nodes as answers come in and
//! requests fail or time out; when it ends, a read finishes with what it found and a write
//! stores on the closest nodes it found, then finishes with how many took it (a put also
//! checks that its record won). Followers of a coalesced read get the same outcome.

use super::operations::{Kind, Op, Phase};
use super::{Dht, OpId, Outcome, Output, Pending, Purpose};
use crate::dht::id::Key;
use crate::dht::lookup::LookupStats;
use crate::dht::messages::{Request, Response};
use crate::dht::record::{ProviderRecord, Record, RecordStore, pick_winner};
use crate::error::{CoveyError, ErrorKind};

impl<S: RecordStore> Dht<S> {
    /// A lookup step of `op_id` was answered by `from`: the lookup takes its contacts, a get
    /// or put keeps a valid record of the right key, a provider lookup keeps valid provider
    /// records; a response of the wrong kind counts as a failure of `from`.
    pub(super) fn on_lookup_response(
        &mut self,
        op_id: OpId,
        from: Key,
        body: Response,
        now_ms: u64,
    ) {
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

    /// A store of `op_id` was answered: an acceptance counts, and a refusal holding a valid
    /// record of the same key tells a put which record that node kept.
    pub(super) fn on_store_response(&mut self, op_id: OpId, body: Response, now_ms: u64) {
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

    /// Request `p` timed out: its peer counts as failed, in the routing table and for the
    /// operation that was waiting, which moves on without it.
    pub(super) fn on_failure(&mut self, p: Pending, now_ms: u64) {
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

    /// Moves operation `op_id` forward: sends what its lookup wants, and when the lookup is
    /// done, stores or finishes.
    pub(super) fn advance(&mut self, op_id: OpId, now_ms: u64) {
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
                    self.outputs.push_back(Output::Done {
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
        let last = self.outputs.iter().rev().find_map(|a| match a {
            Output::Done { op, outcome, stats } if *op == leader => Some((outcome.clone(), *stats)),
            _ => None,
        });
        if let Some((outcome, stats)) = last {
            for f in followers {
                self.outputs.push_back(Output::Done {
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
        let done = |outcome| Output::Done {
            op: op_id,
            outcome,
            stats,
        };
        let (request, record): (Request, Option<Record>) = match kind {
            Kind::FindNode => {
                self.outputs.push_back(done(Outcome::Nodes(closest)));
                return None;
            }
            Kind::Get { found } => {
                let local = self.store.get(&target, now_ms);
                let winner = pick_winner(found.iter().chain(local.iter()));
                self.outputs.push_back(done(Outcome::Record(winner)));
                return None;
            }
            Kind::Providers { found } => {
                let mut list: Vec<ProviderRecord> = found.values().cloned().collect();
                list.sort_by_key(|p| p.provider);
                self.outputs.push_back(done(Outcome::Providers(list)));
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
                    self.outputs
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
                        self.outputs.push_back(done(Outcome::Put(Err(e))));
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
