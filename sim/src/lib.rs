//! A deterministic simulator for Covey sync.
//!
//! Nodes run the real sans-IO sync machines of `covey-core` (`sync::session::SyncSession`,
//! `sync::outbox::Outbox`, `sync::limits::PeerLimiter`, `sync::backoff::Backoff`) over real
//! SQLite stores, driven the way the iroh driver drives them (through the shared
//! `sync::engine` glue), on a virtual clock, with a seeded RNG and an in-memory network with
//! latency, jitter, loss, bandwidth, flow-control windows, partitions and crashes. A run is a
//! function of its seed: [`world::Sim::trace_hash`] fingerprints it.
//!
//! - [`world`]: the simulation itself.
//! - [`net`]: the link model.
//! - [`check`]: the invariants every run is checked against.
//! - [`scenarios`]: the scenarios the tests and `sim-bench` run.
//! - [`seeds`]: running a scenario over several seeds, printing how to replay a failure.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod dht;
pub mod net;
pub mod rng;
pub mod scenarios;
pub mod seeds;
pub mod world;

pub use net::LinkConfig;
pub use rng::Rng;
pub use world::{ConnId, Counters, NodeIdx, NodeOptions, Peaks, Sim, SimConfig};
