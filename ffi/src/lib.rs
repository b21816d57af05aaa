//! Covey's FFI layer: the facade of `covey-core` exported through uniffi to Swift, Kotlin and
//! Python (see `API.md` for the contract).
//!
//! This crate maps types and errors and owns the tokio runtime; it holds no protocol logic.
//! Every async export runs its core future on [`runtime`] and awaits the join handle, so it can
//! be polled from any foreign executor (Python asyncio, Kotlin coroutines, Swift concurrency)
//! without uniffi's tokio integration. A panic in core becomes [`CoveyError::Internal`]; it
//! never unwinds into foreign code.

#![warn(missing_docs)]

mod error;
mod events;
mod keystore;
mod logger;
mod node;
mod runtime;
mod types;

pub use error::{CoveyError, ListenerError};
pub use events::{EventListener, Subscription};
pub use keystore::{KeyStore, KeyStoreError};
pub use logger::{LogLevel, LogRecord, Logger, set_logger};
pub use node::Node;
pub use runtime::runtime;
pub use types::{
    Delivery, DhtRecord, DhtStatus, Durability, Entry, EntryMeta, Event, GroupInfo, GroupKind,
    Invite, Member, MemberRole, NodeConfig, NodeStatus, SyncCounters, SyncState,
};

uniffi::setup_scaffolding!();
