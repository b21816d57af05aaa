//! The clock both `governor` rate limiters run on (the sync session's `PeerLimiter` and the
//! DHT's `RequestLimiter`): governor's fake clock, moved forward to the millisecond time the
//! driver hands each call, so the machines stay sans-IO and a simulation stays deterministic.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock};

/// The furthest the clock runs from its start: governor's fake clock counts nanoseconds in a
/// `u64` and panics past ~584 years, so it stops at a century (a node up that long would find
/// its peers' budgets no longer refilling).
const MAX_CLOCK_MS: u64 = 100 * 365 * 24 * 3_600_000;

/// Governor's fake clock driven by driver milliseconds: never backwards, never past a century
/// from its start.
#[derive(Debug)]
pub(crate) struct DriverClock {
    clock: FakeRelativeClock,
    /// The driver time at which the clock read zero.
    start_ms: u64,
    /// The driver time the clock reads now.
    now_ms: u64,
}

impl DriverClock {
    /// A clock reading zero at driver time `start_ms`.
    pub(crate) fn starting_at(start_ms: u64) -> Self {
        Self {
            clock: FakeRelativeClock::default(),
            start_ms,
            now_ms: start_ms,
        }
    }

    /// A handle on the clock for a governor limiter (clones share one time).
    pub(crate) fn governor_clock(&self) -> FakeRelativeClock {
        self.clock.clone()
    }

    /// Moves the clock to `now_ms`; an earlier time counts as no time.
    pub(crate) fn advance_to(&mut self, now_ms: u64) {
        let now_ms = now_ms.min(self.start_ms.saturating_add(MAX_CLOCK_MS));
        if now_ms > self.now_ms {
            self.clock
                .advance(Duration::from_millis(now_ms - self.now_ms));
            self.now_ms = now_ms;
        }
    }

    /// The clock's reading, as governor measures.
    pub(crate) fn now(&self) -> <FakeRelativeClock as Clock>::Instant {
        self.clock.now()
    }

    /// The driver time the clock read zero at.
    pub(crate) fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// The driver time the clock reads now.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

/// `n` as a governor quota count; a zero (ruled out by the configs' validation) reads as one,
/// which keeps the conversion total.
pub(crate) fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_runs_backwards_nor_past_a_century() {
        let mut clock = DriverClock::starting_at(1_000);
        clock.advance_to(1_500);
        assert_eq!(clock.now_ms(), 1_500);
        clock.advance_to(1_200);
        assert_eq!(clock.now_ms(), 1_500, "an earlier time counts as no time");
        clock.advance_to(u64::MAX);
        assert_eq!(clock.now_ms(), 1_000 + MAX_CLOCK_MS);
    }
}
