//! Test support, behind the `test-utils` feature: what the simulator, the benchmarks and
//! covey-core's own integration tests need from the inside, defined once. Never enabled by
//! an app.
//!
//! - [`Author`]: one author's log in one group, built entry by entry outside any store
//!   (what a peer holding a group key could produce), with nonces derived from the author,
//!   group and seq so a seeded run replays.
//! - [`RawPeer`]: a bare iroh client speaking `covey/sync/1` frame by frame to a real node
//!   (with [`hello_message`], [`dial`] and what it reads, [`Incoming`]).
//! - [`SessionMesh`]: nodes with real stores whose sessions run the one driver core over
//!   in-memory frame queues, delivered in a seeded order (two nodes: the session pair).
//! - [`one_group_view`], [`sent_messages`], [`across_the_wire`]: for tests that drive the
//!   session machine by hand.
//! - [`with_non_canonical_s`], [`by_small_order_key`], [`with_mixed_order_r`]: the Ed25519
//!   edge cases a strict verifier refuses, made from a real entry.
//! - [`Rng`]: the seeded generator everything random in a simulation or a seeded test
//!   draws from, so a run is a function of its seed.
//! - [`loopback_endpoint`]: a raw iroh endpoint bound the way a default node binds.

mod forge;
mod mesh;
mod raw_peer;
mod rng;
mod session;
mod signatures;

pub use forge::{Author, LAMPORT_BASE, raws};
pub use mesh::{MeshNode, SessionMesh, assert_valid_chains};
pub use raw_peer::{
    Incoming, RECV_TIMEOUT, RawPeer, dial, dial_ticket, hello_message, session_binding,
};
pub use rng::{Rng, SplitMix64};
pub use session::{across_the_wire, one_group_view, sent_messages};
pub use signatures::{
    ORDER_L, SMALL_ORDER_KEY, by_small_order_key, challenge, non_canonical, weak_key_signature,
    with_mixed_order_r, with_non_canonical_s,
};

use iroh::endpoint::{PortmapperConfig, presets};

use crate::error::{CoveyError, Result};

/// A raw iroh endpoint with `secret`, bound to 127.0.0.1 only, with no relay, no address
/// lookup, no port mapping and no net-report probes: nothing it does leaves the machine. For
/// tests that speak a protocol frame by frame to a real node.
pub async fn loopback_endpoint(secret: iroh::SecretKey) -> Result<iroh::Endpoint> {
    iroh::Endpoint::builder(presets::Minimal)
        .clear_address_lookup()
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(iroh::NetReportConfig::minimal())
        .relay_mode(iroh::RelayMode::Disabled)
        .secret_key(secret)
        .clear_ip_transports()
        .bind_addr(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| CoveyError::invalid(format!("loopback bind address: {e}")))?
        .bind()
        .await
        .map_err(|e| CoveyError::network(format!("binding a loopback endpoint: {e}")))
}
