//! Covey core: end-to-end encrypted group sync over iroh with durable SQLite storage.
//!
//! Open a [`Node`] on a data dir, join a group with a passphrase, publish entries and read
//! them back; every node in the group converges on the same set of entries.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crypto;
pub mod dht;
pub mod error;
pub mod group;
pub mod keystore;
pub mod node;
pub mod store;
pub mod sync;
#[cfg(feature = "test-utils")]
pub mod testing;
pub mod wire;

pub use error::{CoveyError, ErrorKind, Result};
pub use group::{GroupId, GroupKind};
pub use iroh::EndpointId;
pub use keystore::{FileKeyStore, KeyStore};
pub use node::{
    Delivery, DhtRecord, DhtSettings, DhtStatus, Entry, EntryId, EntryMeta, Event, GroupInfo,
    Member, Node, NodeConfig, NodeStatus, Subscription, SyncCounters,
};
pub use store::Durability;
pub use sync::session::SyncState;
