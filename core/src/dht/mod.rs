//! A sans-IO Kademlia DHT.
//!
//! - [`id`]: 256-bit keys (node ids are Ed25519 public keys, the iroh `EndpointId`) and the
//!   XOR metric.
//! - [`routing`]: `k`-buckets with ping-before-evict and replacement caches.
//! - [`lookup`]: the iterative, `alpha`-parallel lookup state machine.
//! - [`record`]: signed mutable records (highest valid sequence wins), provider records, the
//!   record-store trait and its in-memory implementation. The SQLite implementation the node
//!   runs lives with the rest of the SQL, in `store::dht_records`.
//! - [`proto`]: the RPC messages and their bounded, total decoding.
//! - [`machine`]: [`Dht`], one node: takes events (message in, timer fired, local command) and
//!   returns [`Action`]s (send, operation done). The iroh driver and the simulator run it.

pub mod id;
pub mod lookup;
pub mod machine;
pub mod proto;
pub mod record;
pub mod routing;

pub use id::{Distance, Key};
pub use lookup::LookupStats;
pub use machine::{Action, Dht, DhtConfig, DhtCounters, OpId, Outcome};
pub use record::{MemoryStore, ProviderRecord, Record, RecordLimits, RecordQuotas, RecordStore};

#[cfg(test)]
mod tests;
