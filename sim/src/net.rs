//! The network model: per-link latency, jitter, loss and bandwidth.
//!
//! QUIC streams are reliable and ordered, so loss never drops or reorders a frame: each lost
//! packet costs its frame a retransmission delay, and a frame waits for the one before it on
//! the same stream (head-of-line blocking). A frame is `ceil(bytes / PACKET_BYTES)` packets;
//! it arrives once its unluckiest packet got through.

use covey_core::testing::Rng;

/// Payload bytes per simulated packet (about a QUIC packet on a 1280-byte MTU path).
pub const PACKET_BYTES: usize = 1200;

/// Most retransmissions one packet is charged for: with loss below one this is never reached
/// in practice; it keeps a pathological configuration (loss of 1) from looping.
pub const MAX_RETRANSMITS: u32 = 64;

/// How one direction of a link behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay, ms.
    pub latency_ms: u64,
    /// Extra delay drawn uniformly from `0..=jitter_ms` per frame, ms.
    pub jitter_ms: u64,
    /// Probability that a packet is lost (and retransmitted), `0.0..1.0`.
    pub loss: f64,
    /// Serialisation rate, bytes per ms (12_500 is 100 Mbit/s).
    pub bandwidth_bytes_per_ms: u64,
}

impl Default for LinkConfig {
    /// 20 ms one way, no jitter, no loss, 100 Mbit/s.
    fn default() -> Self {
        Self {
            latency_ms: 20,
            jitter_ms: 0,
            loss: 0.0,
            bandwidth_bytes_per_ms: 12_500,
        }
    }
}

impl LinkConfig {
    /// What one lost packet costs: QUIC declares a packet lost about 9/8 of a round trip after
    /// it was sent, then resends it.
    pub fn retransmit_ms(&self) -> u64 {
        (2 * self.latency_ms + self.jitter_ms / 2) * 9 / 8 + 1
    }

    /// Time to put `bytes` on the wire, ms (at least 0; a zero bandwidth counts as 1 B/ms).
    pub fn serialise_ms(&self, bytes: usize) -> u64 {
        let bw = self.bandwidth_bytes_per_ms.max(1);
        (bytes as u64).div_ceil(bw)
    }

    /// Extra delay from loss for a frame of `bytes`: the largest number of retransmissions any
    /// of its packets needed, times [`Self::retransmit_ms`]. Sampled exactly: the maximum of
    /// `k` geometric draws is below `m` with probability `(1 - loss^m)^k`.
    pub fn loss_delay_ms(&self, rng: &mut Rng, bytes: usize) -> u64 {
        if self.loss <= 0.0 {
            return 0;
        }
        let packets = bytes.div_ceil(PACKET_BYTES).max(1) as f64;
        let u = rng.unit();
        let mut m = 0u32;
        // Smallest m with P(max <= m) >= u, where P(max <= m) = (1 - loss^(m+1))^k.
        while m < MAX_RETRANSMITS {
            let p_all_within = (1.0 - self.loss.powi(m as i32 + 1)).powf(packets);
            if p_all_within >= u {
                break;
            }
            m += 1;
        }
        u64::from(m) * self.retransmit_ms()
    }

    /// Propagation plus jitter for one frame.
    pub fn propagation_ms(&self, rng: &mut Rng) -> u64 {
        self.latency_ms + rng.below(self.jitter_ms + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_loss_no_delay_and_big_frames_suffer_more_than_small() {
        let mut rng = Rng::new(3);
        let clean = LinkConfig::default();
        assert_eq!(clean.loss_delay_ms(&mut rng, 1 << 20), 0);
        let lossy = LinkConfig {
            loss: 0.2,
            ..LinkConfig::default()
        };
        let mean = |rng: &mut Rng, bytes: usize| -> f64 {
            (0..2000)
                .map(|_| lossy.loss_delay_ms(rng, bytes) as f64)
                .sum::<f64>()
                / 2000.0
        };
        let small = mean(&mut rng, 100);
        let big = mean(&mut rng, 1 << 20);
        let rto = lossy.retransmit_ms() as f64;
        // One packet: expected retransmissions p / (1 - p) = 0.25.
        assert!((0.15 * rto..0.35 * rto).contains(&small), "{small}");
        // 874 packets: the worst of them needs about four.
        assert!((3.0 * rto..6.0 * rto).contains(&big), "{big}");
        assert_eq!(clean.serialise_ms(12_500), 1);
        assert_eq!(clean.serialise_ms(12_501), 2);
    }
}
