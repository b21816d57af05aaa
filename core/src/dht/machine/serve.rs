//! Serving other nodes: each request from a peer within its rate budget (`dht::rate_limit`)
//! is answered from the routing table and the record store; a store or provider announcement
//! is validated before it is kept.

use super::{Dht, Output};
use crate::dht::id::Key;
use crate::dht::messages::{MAX_PROVIDERS_PER_RESPONSE, Message, Refusal, Request, Response};
use crate::dht::record::RecordStore;
use crate::error::ErrorKind;

impl<S: RecordStore> Dht<S> {
    /// Answers request `id` from `from`, unless `from` is over its rate budget: then the
    /// request is dropped unanswered and counted (the requester sees a timeout, and we spend
    /// nothing more on it).
    pub(super) fn serve(&mut self, from: Key, id: u64, body: Request, now_ms: u64) {
        if !self.limiter.allow(from, now_ms) {
            self.counters.rate_limited += 1;
            return;
        }
        self.counters.requests_in += 1;
        self.note_peer(from, now_ms);
        let response = self.answer(from, body, now_ms);
        self.outputs.push_back(Output::Send {
            to: from,
            message: Message::Response { id, body: response },
        });
    }

    /// The `k` contacts closest to `target`, leaving out `requester` (it knows itself).
    fn closest_for(&self, target: &Key, requester: &Key) -> Vec<Key> {
        let mut c = self.routing.closest(target, self.config.k + 1);
        c.retain(|k| k != requester);
        c.truncate(self.config.k);
        c
    }

    /// The response to `body`: contacts, records and providers from what we hold; a store
    /// or announcement is validated, then kept unless it conflicts or a quota is reached.
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
}
