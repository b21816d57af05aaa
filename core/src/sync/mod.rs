//! Sync: the sans-IO session state machine (`session`), the one driver core every transport
//! runs it through (`driver`: output policy, ingest follow-up, fan-out, warnings, timers),
//! the per-peer send queue (`outbox`), rate limits (`limits`), redial backoff
//! (`backoff`), batch verification (`verify`) and the store glue (`engine`). The iroh
//! transport (`node::sync_driver`) and the simulator (`covey-sim`) carry out what the driver
//! core asks, over sockets or virtual links, and nothing else.
//!
//! An app sees only [`RateLimits`], [`Timers`], [`SyncState`] and [`WarnKind`]; the machine
//! and the driver core are crate-private (public with the `test-utils` feature).

inside_mod!(backoff, driver, engine, limits, outbox, session, verify);
mod warn;

pub use limits::RateLimits;
pub use session::{SyncState, Timers};
pub use warn::WarnKind;
