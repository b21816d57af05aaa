//! A sans-IO Kademlia DHT.
//!
//! - [`id`]: 256-bit keys (node ids are Ed25519 public keys, the iroh `EndpointId`) and the
//!   XOR metric.
//! - [`routing`]: `k`-buckets with ping-before-evict and replacement caches.
//! - [`lookup`]: the iterative, `alpha`-parallel lookup state machine.
//! - [`record`]: signed mutable records (highest valid sequence wins), provider records, the
//!   record-store trait and its in-memory implementation. The SQLite implementation the node
//!   runs lives with the rest of the SQL, in `store::dht_records`.
//! - [`messages`]: the RPC messages on the wire and their bounded, total decoding.
//! - `rate_limit`: the per-peer budget of requests a node serves (`governor`'s GCRA on the
//!   machine's clock).
//! - [`config`]: [`DhtConfig`], a node's tunables, and their validation.
//! - [`machine`]: [`Dht`], one node: takes events (message in, timer fired, local command) and
//!   returns [`Action`]s (send, operation done). The iroh driver and the simulator run it.

pub mod config;
pub mod id;
pub mod lookup;
pub mod machine;
pub mod messages;
mod rate_limit;
pub mod record;
pub mod routing;

pub use config::DhtConfig;
pub use id::{Distance, Key};
pub use lookup::LookupStats;
pub use machine::{Action, Dht, DhtCounters, OpId, Outcome};
pub use record::{MemoryStore, ProviderRecord, Record, RecordLimits, RecordQuotas, RecordStore};

#[cfg(test)]
mod tests;
