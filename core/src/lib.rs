//! Covey core: end-to-end encrypted group sync over iroh with durable SQLite storage.
//!
//! Open a [`Node`] on a data dir, join a group with a passphrase, publish entries and read
//! them back; every node in the group converges on the same set of entries.
//!
//! The crate's public surface is that facade: [`Node`], its configuration and records, the
//! errors, and the [`node`], [`sync`] and [`dht`] modules' configuration types. The inside
//! modules (the store, the session machine, the wire format, the crypto, the DHT machine) are
//! crate-private; the `test-utils` feature makes them public for the simulator, the
//! benchmarks and core's own integration tests, and adds `covey_core::testing`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Declares inside modules: public with the `test-utils` feature (the simulator, the
/// benchmarks and the integration tests drive them), crate-private otherwise, so an app's
/// `cargo doc` shows only the facade.
macro_rules! inside_mod {
    ($($name:ident),+ $(,)?) => {$(
        #[cfg(feature = "test-utils")]
        pub mod $name;
        #[cfg(not(feature = "test-utils"))]
        pub(crate) mod $name;
    )+};
}

/// Re-exports inside items: public with `test-utils`, crate-private otherwise (see
/// `inside_mod!`).
macro_rules! inside_use {
    ($($path:tt)+) => {
        #[cfg(feature = "test-utils")]
        pub use $($path)+;
        #[cfg(not(feature = "test-utils"))]
        #[allow(unused_imports)]
        pub(crate) use $($path)+;
    };
}

inside_mod!(crypto, group, store, wire);
pub mod dht;
mod driver_clock;
pub mod error;
pub mod keystore;
pub mod node;
pub mod sync;
#[cfg(feature = "test-utils")]
pub mod testing;

pub use dht::{DhtConfig, DhtCounters, RecordLimits, RecordQuotas};
pub use error::{CoveyError, ErrorKind, Result};
pub use group::invite::{MAX_CODE_TTL_MS, is_link as is_invite_link};
pub use group::{GroupId, GroupKind, MIN_PASSPHRASE_SCORE};
pub use iroh::EndpointId;
pub use keystore::{FileKeyStore, KeyStore};
pub use node::{DEFAULT_MAX_PAYLOAD, DHT_ALPN, FRAME_OVERHEAD, SYNC_ALPN};
pub use node::{
    Delivery, DhtRecord, DhtSettings, DhtStatus, Entry, EntryId, EntryMeta, Event, GroupInfo,
    Invite, Member, Node, NodeConfig, NodeStatus, Role, Subscription, SyncCounters,
};
pub use store::Durability;
pub use sync::{RateLimits, SyncState, Timers, WarnKind};
