//! The tunables of a DHT node ([`DhtConfig`]) and the check that they are usable.

use super::record::RecordLimits;
use crate::error::{CoveyError, Result};

/// Tunables of a DHT node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtConfig {
    /// Bucket size and replication factor.
    pub k: usize,
    /// Requests in flight per lookup.
    pub alpha: usize,
    /// How long a request may go unanswered before it counts as failed.
    pub request_timeout_ms: u64,
    /// How long a bucket may go without a lookup before it is refreshed.
    pub refresh_interval_ms: u64,
    /// How often held records are replicated to the current `k` closest, and own records
    /// and provider announcements republished.
    pub replicate_interval_ms: u64,
    /// Default provider-record lifetime.
    pub provider_ttl_ms: u64,
    /// How often our provider announcements are renewed: well inside their lifetime, so a
    /// provider never drops out between two announcements.
    pub reprovide_interval_ms: u64,
    /// Record limits.
    pub limits: RecordLimits,
    /// Requests per second one peer may make of us, sustained.
    pub requests_per_sec: u32,
    /// Requests one peer may make in a burst (a peer idle long enough has this many).
    pub request_burst: u32,
    /// Most peers whose request rate is tracked at once. A peer is forgotten once its burst
    /// has refilled (one request period after, as `governor` decides); while this many are
    /// tracked and none is forgotten, requests from new peers are refused.
    pub max_tracked_peers: usize,
    /// Most operations running at once.
    pub max_ops: usize,
}

impl Default for DhtConfig {
    /// The values the iroh driver runs with: Kademlia's usual `k` = 20 and `alpha` = 3,
    /// hourly upkeep, and a request budget far above what an honest peer's lookups need.
    fn default() -> Self {
        Self {
            k: 20,
            alpha: 3,
            request_timeout_ms: 2_000,
            refresh_interval_ms: 3_600_000,
            replicate_interval_ms: 3_600_000,
            provider_ttl_ms: 3_600_000,
            reprovide_interval_ms: 1_800_000,
            limits: RecordLimits::default(),
            requests_per_sec: 50,
            request_burst: 200,
            max_tracked_peers: 4096,
            max_ops: 1024,
        }
    }
}

impl DhtConfig {
    /// Checks the configuration is usable.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 || self.alpha == 0 || self.k > 64 {
            return Err(CoveyError::invalid("k must be 1..=64 and alpha above zero"));
        }
        if self.provider_ttl_ms == 0 || self.provider_ttl_ms > self.limits.max_provider_ttl_ms {
            return Err(CoveyError::invalid(
                "provider_ttl_ms must be above zero and within limits.max_provider_ttl_ms",
            ));
        }
        if self.reprovide_interval_ms == 0 || self.reprovide_interval_ms >= self.provider_ttl_ms {
            return Err(CoveyError::invalid(
                "reprovide_interval_ms must be above zero and below provider_ttl_ms",
            ));
        }
        if self.request_timeout_ms == 0 || self.requests_per_sec == 0 || self.request_burst == 0 {
            return Err(CoveyError::invalid("timeouts and rates must be above zero"));
        }
        self.limits.validate()
    }
}
