//! Redial backoff: exponential from a floor to a ceiling with random jitter, shared by the
//! iroh dialer and the simulator. The caller supplies randomness, so a seeded run replays.

use std::time::Duration;

/// First redial delay after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest redial delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One peer's redial schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next attempt: the current base plus up to half of it again,
    /// picked by `random`; the base then doubles up to [`BACKOFF_MAX`]. Jitter keeps peers
    /// that lost each other at the same moment from redialing in lockstep.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let half = self.base.as_millis() as u64 / 2;
        let jitter = if half == 0 { 0 } else { random % (half + 1) };
        let delay = self.base + Duration::from_millis(jitter);
        self.base = (self.base * 2).min(BACKOFF_MAX);
        delay
    }

    /// A connection succeeded (or the app asked to redial now): start from the floor again.
    pub fn reset(&mut self) {
        self.base = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_ceiling_with_bounded_jitter() {
        let mut b = Backoff::default();
        let first = b.next_delay(u64::MAX);
        assert!(first >= BACKOFF_MIN && first <= BACKOFF_MIN * 3 / 2);
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay(0);
        }
        assert_eq!(last, BACKOFF_MAX);
        assert!(b.next_delay(u64::MAX) <= BACKOFF_MAX * 3 / 2);
        b.reset();
        assert_eq!(b.next_delay(0), BACKOFF_MIN);
    }
}
