//! Sync: the sans-IO session state machine ([`proto`]) and batch verification ([`verify`]).
//! The iroh-driven side lives in `node::session`.

pub mod proto;
pub mod verify;
