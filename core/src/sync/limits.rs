//! Per-peer rate limits on incoming frames and bytes, on a clock the driver sets, so the
//! simulator and the iroh driver share one limiter (GCRA, from `governor`).

use std::time::Duration;

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::driver_clock::{DriverClock, nonzero};
use crate::error::{CoveyError, Result};

/// How fast one peer may send to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Frames per second, sustained.
    pub frames_per_sec: u32,
    /// Frames allowed in a burst above the sustained rate.
    pub frame_burst: u32,
    /// Bytes per second, sustained.
    pub bytes_per_sec: u32,
    /// Bytes allowed in a burst; at least the largest frame, so every legal frame can pass.
    pub byte_burst: u32,
}

impl Default for RateLimits {
    /// Far above what honest sync needs on one link (a catch-up runs at a few hundred MB/s
    /// and its frames are large; live pushes coalesce when the link is busy), low enough that
    /// one peer cannot monopolise the node.
    fn default() -> Self {
        Self {
            frames_per_sec: 20_000,
            frame_burst: 5_000,
            bytes_per_sec: 512 * 1024 * 1024,
            byte_burst: 128 * 1024 * 1024,
        }
    }
}

impl RateLimits {
    /// Checks the limits against the largest frame a peer may send.
    pub fn validate(&self, max_frame_bytes: usize) -> Result<()> {
        if self.frames_per_sec == 0
            || self.frame_burst == 0
            || self.bytes_per_sec == 0
            || self.byte_burst == 0
        {
            return Err(CoveyError::invalid("rate limits must be above zero"));
        }
        if (self.byte_burst as usize) < max_frame_bytes {
            return Err(CoveyError::invalid(format!(
                "byte burst {} is below the largest frame ({max_frame_bytes} bytes): such a frame could never pass",
                self.byte_burst
            )));
        }
        Ok(())
    }
}

type Gcra =
    RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<governor::nanos::Nanos>>;

/// One peer's limiter: a frame passes when both its frame and its byte budget allow it.
#[derive(Debug)]
pub struct PeerLimiter {
    clock: DriverClock,
    frames: Gcra,
    bytes: Gcra,
}

fn quota(per_sec: u32, burst: u32) -> Quota {
    // Period per cell in nanoseconds, so rates above 1/ns granularity still work.
    let period = Duration::from_nanos((1_000_000_000u64 / per_sec.max(1) as u64).max(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(nonzero(per_sec)))
        .allow_burst(nonzero(burst))
}

impl PeerLimiter {
    /// A limiter with full budgets at time zero.
    pub fn new(limits: RateLimits) -> Self {
        let clock = DriverClock::starting_at(0);
        Self {
            frames: RateLimiter::direct_with_clock(
                quota(limits.frames_per_sec, limits.frame_burst),
                clock.governor_clock(),
            ),
            bytes: RateLimiter::direct_with_clock(
                quota(limits.bytes_per_sec, limits.byte_burst),
                clock.governor_clock(),
            ),
            clock,
        }
    }

    /// Charges one frame of `bytes` at `now_ms` (the driver's monotonic clock). `Ok` when it
    /// may be processed now; `Err(wait_ms)` when the peer is over its budget: the driver waits
    /// that long (stops reading, so flow control slows the peer) and asks again.
    pub fn check(&mut self, now_ms: u64, bytes: usize) -> std::result::Result<(), u64> {
        self.clock.advance_to(now_ms);
        let now = self.clock.now();
        if let Err(not_until) = self.frames.check() {
            return Err(wait_ms(not_until.wait_time_from(now)));
        }
        let cells = nonzero(u32::try_from(bytes).unwrap_or(u32::MAX));
        match self.bytes.check_n(cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(wait_ms(not_until.wait_time_from(now))),
            // Larger than the whole burst: `RateLimits::validate` rules this out for legal
            // frames; the driver refuses the frame as oversized first.
            Err(_) => Err(u64::MAX),
        }
    }
}

fn wait_ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(fps: u32, fburst: u32, bps: u32, bburst: u32) -> RateLimits {
        RateLimits {
            frames_per_sec: fps,
            frame_burst: fburst,
            bytes_per_sec: bps,
            byte_burst: bburst,
        }
    }

    #[test]
    fn frame_budget_on_both_sides_of_the_limit() {
        let mut l = PeerLimiter::new(limits(10, 5, 1 << 30, 1 << 30));
        for _ in 0..5 {
            assert_eq!(l.check(0, 10), Ok(()));
        }
        let wait = l.check(0, 10).unwrap_err();
        assert!((1..=100).contains(&wait), "wait {wait}");
        // One period later exactly one more frame passes.
        assert_eq!(l.check(100, 10), Ok(()));
        assert!(l.check(100, 10).is_err());
    }

    #[test]
    fn byte_budget_on_both_sides_of_the_limit() {
        let mut l = PeerLimiter::new(limits(1_000_000, 1_000_000, 1000, 1000));
        assert_eq!(l.check(0, 1000), Ok(()));
        let wait = l.check(0, 1).unwrap_err();
        assert!(wait >= 1);
        assert_eq!(l.check(1000, 1000), Ok(()));
        assert_eq!(l.check(1000, 2000), Err(u64::MAX));
    }

    #[test]
    fn validation_rejects_unusable_limits() {
        assert!(limits(1, 1, 1, 100).validate(100).is_ok());
        assert!(limits(1, 1, 1, 99).validate(100).is_err());
        assert!(limits(0, 1, 1, 100).validate(100).is_err());
        assert!(RateLimits::default().validate(16 << 20).is_ok());
    }
}
