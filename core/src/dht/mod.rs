//! A sans-IO Kademlia DHT.
//!
//! - `id`: 256-bit keys (node ids are Ed25519 public keys, the iroh `EndpointId`) and the
//!   XOR metric.
//! - `routing`: `k`-buckets with ping-before-evict and replacement caches.
//! - `lookup`: the iterative, `alpha`-parallel lookup state machine.
//! - `record`: signed mutable records (highest valid sequence wins), provider records, the
//!   record-store trait and its in-memory implementation. The SQLite implementation the node
//!   runs lives with the rest of the SQL, in `store::dht_records`.
//! - `messages`: the RPC messages on the wire and their bounded, total decoding.
//! - `rate_limit`: the per-peer budget of requests a node serves (`governor`'s GCRA on the
//!   machine's clock).
//! - `config`: `DhtConfig`, a node's tunables, and their validation.
//! - `machine`: `Dht`, one node: takes events (message in, timer fired, local command) and
//!   returns `Output`s (send, operation done). The iroh driver and the simulator run it.
//!
//! An app sees only the configuration ([`DhtConfig`], [`RecordLimits`], [`RecordQuotas`],
//! [`MAX_VALUE_CEILING`]) and [`DhtCounters`]; the machine is crate-private (public with the
//! `test-utils` feature, for the simulator and tests).

inside_mod!(config, id, lookup, machine, messages, record, routing);
mod rate_limit;

pub use config::DhtConfig;
pub use machine::DhtCounters;
pub use record::{MAX_VALUE_CEILING, RecordLimits, RecordQuotas};
inside_use!(id::{Distance, Key});
inside_use!(lookup::LookupStats);
inside_use!(machine::{Output, Dht, OpId, Outcome});
inside_use!(record::{ProviderRecord, Record, RecordStore});
#[cfg(any(test, feature = "test-utils"))]
#[allow(unused_imports)]
pub use record::MemoryStore;

#[cfg(test)]
mod tests;
