//! Sync: the sans-IO session state machine ([`proto`]), the per-peer send queue
//! ([`outbox`]), rate limits ([`limits`]), redial backoff ([`backoff`]) and batch
//! verification ([`verify`]). The iroh driver lives in `node::session`; the simulator in the
//! `covey-sim` crate drives the same pieces.

pub mod backoff;
pub mod engine;
pub mod limits;
pub mod outbox;
pub mod proto;
pub mod verify;
