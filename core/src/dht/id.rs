//! 256-bit Kademlia keys and the XOR metric.

use serde::{Deserialize, Serialize};

/// A point in the 256-bit key space: a node id (its Ed25519 public key, the iroh
/// `EndpointId`) or the hash of what is being looked up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key(pub [u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", hex::encode(&self.0[..6]))
    }
}

/// The XOR distance between two keys; compares as a 256-bit big-endian integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance(pub [u8; 32]);

impl Key {
    /// The XOR distance from `self` to `other`.
    pub fn distance(&self, other: &Key) -> Distance {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.0[i] ^ other.0[i];
        }
        Distance(out)
    }

    /// The bucket `other` falls in as seen from `self`: 255 for the far half of the key
    /// space down to 0 for the single nearest key; `None` when `other == self`.
    pub fn bucket_index(&self, other: &Key) -> Option<usize> {
        let d = self.distance(other);
        let lz = d.leading_zeros();
        if lz >= 256 { None } else { Some(255 - lz) }
    }

    /// A key in bucket `index` as seen from `self`, with the free low bits taken from
    /// `random` (so a refresh lookup can target a random point inside the bucket).
    pub fn random_in_bucket(&self, index: usize, random: &[u8; 32]) -> Key {
        let index = index.min(255);
        // Distance with its highest set bit at `index`: bits above are zero, bit `index` is
        // one, bits below come from `random`.
        let mut d = *random;
        let top_byte = 31 - index / 8;
        let bit = index % 8;
        for b in d.iter_mut().take(top_byte) {
            *b = 0;
        }
        let mask_below = (1u16 << bit) as u8 - 1; // bits strictly below `bit`
        d[top_byte] = (d[top_byte] & mask_below) | (1u8 << bit);
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.0[i] ^ d[i];
        }
        Key(out)
    }

    /// A domain-separated key from a label and parts: what records and provider keys hash to.
    pub fn derive(label: &[u8], parts: &[&[u8]]) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(&(label.len() as u64).to_be_bytes());
        h.update(label);
        for p in parts {
            h.update(&(p.len() as u64).to_be_bytes());
            h.update(p);
        }
        Key(*h.finalize().as_bytes())
    }
}

impl Distance {
    /// Number of leading zero bits (256 for distance zero).
    pub fn leading_zeros(&self) -> usize {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                n += b.leading_zeros() as usize;
                break;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(first: u8, last: u8) -> Key {
        let mut k = [0u8; 32];
        k[0] = first;
        k[31] = last;
        Key(k)
    }

    #[test]
    fn xor_distance_and_buckets() {
        let a = key(0, 0);
        assert_eq!(a.bucket_index(&a), None);
        assert_eq!(a.bucket_index(&key(0x80, 0)), Some(255));
        assert_eq!(a.bucket_index(&key(0x01, 0)), Some(248));
        assert_eq!(a.bucket_index(&key(0, 1)), Some(0));
        assert_eq!(a.bucket_index(&key(0, 3)), Some(1));
        assert!(a.distance(&key(0, 1)) < a.distance(&key(0, 2)));
        assert!(a.distance(&key(1, 0)) > a.distance(&key(0, 0xff)));
        // Symmetric.
        let b = key(0x42, 0x17);
        let c = key(0x13, 0x99);
        assert_eq!(b.distance(&c), c.distance(&b));
    }

    #[test]
    fn random_in_bucket_lands_in_that_bucket() {
        let me = key(0x5a, 0xa5);
        for index in [0usize, 1, 7, 8, 9, 100, 254, 255] {
            for seed in 0u8..8 {
                let target = me.random_in_bucket(index, &[seed.wrapping_mul(37); 32]);
                assert_eq!(me.bucket_index(&target), Some(index), "index {index}");
            }
        }
    }
}
