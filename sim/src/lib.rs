//! A deterministic simulator for Covey sync.
//!
//! Nodes run `covey-core`'s one sync driver core (`sync::driver::SessionDriver`, which owns the
//! session machine, the outbox and the rate limiter) and its redial backoff over real SQLite
//! stores, exactly as the iroh transport runs them, on a virtual clock, with a seeded RNG
//! (`covey_core::testing::Rng`) and an in-memory network with
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
pub mod scenarios;
pub mod seeds;
pub mod world;

pub use covey_core::testing::Rng;
pub use net::LinkConfig;
pub use world::{ConnId, Counters, NodeIdx, NodeOptions, Peaks, Sim, SimConfig};
