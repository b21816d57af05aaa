//! Sync: the sans-IO session state machine ([`session`]), the one driver core every transport
//! runs it through ([`driver`]: output policy, ingest follow-up, fan-out, warnings, timers),
//! the per-peer send queue ([`outbox`]), rate limits ([`limits`]), redial backoff
//! ([`backoff`]), batch verification ([`verify`]) and the store glue ([`engine`]). The iroh
//! transport (`node::sync_driver`) and the simulator (`covey-sim`) carry out what the driver
//! core asks, over sockets or virtual links, and nothing else.

pub mod backoff;
pub mod driver;
pub mod engine;
pub mod limits;
pub mod outbox;
pub mod session;
pub mod verify;
mod warn;

pub use warn::WarnKind;
