//! The signed entry encoding (protocol v2). All integers are big-endian; the layout is:
//!
//! ```text
//! off  len  field
//!   0    1  version (2)
//!   1    1  kind (0 data, 1 control)
//!   2   32  group reference (the group's entry reference, not its id)
//!  34   32  author (Ed25519 public key)
//!  66    8  seq (1, 2, ...)
//!  74   32  prev: id of the author's previous entry in the group (zeros for seq 1)
//! 106    8  lamport clock
//! 114    8  epoch
//! 122    8  author timestamp, ms since the Unix epoch
//! 130   24  XChaCha20-Poly1305 nonce
//! 154    4  ciphertext length n
//! 158    n  ciphertext (payload sealed with the header, bytes 0..158, as associated data)
//! 158+n 64  Ed25519 signature over SIGNATURE_LABEL || BLAKE3(bytes 0..158+n)
//! ```
//!
//! An entry's id is the BLAKE3 hash of its whole encoding, signature included.

use iroh::{PublicKey, SecretKey, Signature};

use super::WireError;
use crate::crypto::{Secret32, aead};
use crate::error::{CoveyError, Result};

/// The entry format version this build writes and reads.
pub const ENTRY_VERSION: u8 = 2;
/// Length of the header, which is also the AEAD associated data.
pub const HEADER_LEN: usize = 158;
/// Length of the Ed25519 signature trailer.
pub const SIGNATURE_LEN: usize = 64;
/// Shortest valid entry: a header, an empty payload's AEAD tag, and a signature. Frames
/// refuse anything shorter up front, so a frame of tiny fake entries cannot cost a
/// receiver per-entry work out of proportion to its size.
pub const MIN_ENTRY_LEN: usize = HEADER_LEN + crate::crypto::aead::TAG_LEN + SIGNATURE_LEN;
/// Domain separation for entry signatures.
pub const SIGNATURE_LABEL: &[u8] = b"covey/v1/entry-signature";

/// A 32-byte identifier: group ids, entry ids and author keys.
pub type Id32 = [u8; 32];

/// What an entry carries: application data or group control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Application payload.
    Data,
    /// Group control (membership, epochs).
    Control,
}

impl EntryKind {
    fn to_byte(self) -> u8 {
        match self {
            EntryKind::Data => 0,
            EntryKind::Control => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(EntryKind::Data),
            1 => Some(EntryKind::Control),
            _ => None,
        }
    }
}

/// The signed, unencrypted header fields of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// Entry format version.
    pub version: u8,
    /// Data or control.
    pub kind: EntryKind,
    /// The group the entry belongs to, as its entry reference (`GroupKeys::entry_group`):
    /// only members can compute it, and it is not the group id apps show and share.
    pub group_ref: Id32,
    /// The author's Ed25519 public key (its node id).
    pub author: Id32,
    /// Position in the author's log for this group, from 1.
    pub seq: u64,
    /// Id of the author's previous entry in this group, zeros for seq 1.
    pub prev: Id32,
    /// Lamport clock: one more than the highest the author had seen in the group.
    pub lamport: u64,
    /// Group epoch whose key sealed the payload.
    pub epoch: u64,
    /// Author's wall clock at publish, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// AEAD nonce.
    pub nonce: [u8; aead::NONCE_LEN],
}

impl EntryHeader {
    fn encode_into(&self, out: &mut Vec<u8>, ciphertext_len: u32) {
        out.push(self.version);
        out.push(self.kind.to_byte());
        out.extend_from_slice(&self.group_ref);
        out.extend_from_slice(&self.author);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev);
        out.extend_from_slice(&self.lamport.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&ciphertext_len.to_be_bytes());
    }
}

/// A complete signed entry together with its encoding and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEntry {
    header: EntryHeader,
    raw: Vec<u8>,
    id: Id32,
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(read_array(bytes, at))
}

impl SignedEntry {
    /// Seals `plaintext` under `key` and signs the result as `secret`'s entry.
    /// `header.author` is overwritten with `secret`'s public key.
    pub fn seal(
        mut header: EntryHeader,
        key: &Secret32,
        secret: &SecretKey,
        plaintext: &[u8],
    ) -> Result<Self> {
        header.author = *secret.public().as_bytes();
        let ciphertext_len = plaintext.len() + aead::TAG_LEN;
        let ct_len_u32 = u32::try_from(ciphertext_len)
            .map_err(|_| CoveyError::invalid("payload too large for the entry format"))?;
        let mut raw = Vec::with_capacity(HEADER_LEN + ciphertext_len + SIGNATURE_LEN);
        header.encode_into(&mut raw, ct_len_u32);
        let ciphertext = aead::seal(key, &header.nonce, &raw[..HEADER_LEN], plaintext)?;
        raw.extend_from_slice(&ciphertext);
        let signature = secret.sign(&signing_message(&raw));
        raw.extend_from_slice(&signature.to_bytes());
        let id = *blake3::hash(&raw).as_bytes();
        Ok(Self { header, raw, id })
    }

    /// Parses an encoding; checks structure and limits only (see [`Self::verify_signature`]).
    pub fn decode(raw: Vec<u8>, max_ciphertext: usize) -> Result<Self, WireError> {
        if raw.len() < HEADER_LEN + SIGNATURE_LEN {
            return Err(WireError::Truncated(
                "entry shorter than header and signature",
            ));
        }
        let version = raw[0];
        if version != ENTRY_VERSION {
            return Err(WireError::Malformed(format!(
                "entry version {version} unknown"
            )));
        }
        let kind = EntryKind::from_byte(raw[1])
            .ok_or_else(|| WireError::Malformed(format!("entry kind {} unknown", raw[1])))?;
        let ct_len = u32::from_be_bytes(read_array(&raw, 154)) as usize;
        if ct_len > max_ciphertext {
            return Err(WireError::TooLarge {
                what: "ciphertext",
                len: ct_len,
                limit: max_ciphertext,
            });
        }
        if ct_len < aead::TAG_LEN {
            return Err(WireError::Malformed(
                "ciphertext shorter than its tag".into(),
            ));
        }
        let expected = HEADER_LEN + ct_len + SIGNATURE_LEN;
        if raw.len() < expected {
            return Err(WireError::Truncated(
                "entry ciphertext or signature cut short",
            ));
        }
        if raw.len() > expected {
            return Err(WireError::Malformed(
                "trailing bytes after entry signature".into(),
            ));
        }
        let seq = read_u64(&raw, 66);
        if seq == 0 {
            return Err(WireError::Malformed("entry seq 0".into()));
        }
        let header = EntryHeader {
            version,
            kind,
            group_ref: read_array(&raw, 2),
            author: read_array(&raw, 34),
            seq,
            prev: read_array(&raw, 74),
            lamport: read_u64(&raw, 106),
            epoch: read_u64(&raw, 114),
            timestamp_ms: read_u64(&raw, 122),
            nonce: read_array(&raw, 130),
        };
        let id = *blake3::hash(&raw).as_bytes();
        Ok(Self { header, raw, id })
    }

    /// Checks the Ed25519 signature against the header's author.
    pub fn verify_signature(&self) -> Result<()> {
        let author = PublicKey::from_bytes(&self.header.author)
            .map_err(|_| CoveyError::crypto("entry author is not a valid Ed25519 key"))?;
        let split = self.raw.len() - SIGNATURE_LEN;
        let signature = Signature::from_bytes(&read_array(&self.raw, split));
        author
            .verify(&signing_message(&self.raw[..split]), &signature)
            .map_err(|_| CoveyError::crypto("entry signature does not verify"))
    }

    /// Decrypts the payload with the group's content key for this entry's epoch.
    pub fn open(&self, key: &Secret32) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let end = self.raw.len() - SIGNATURE_LEN;
        aead::open(
            key,
            &self.header.nonce,
            &self.raw[..HEADER_LEN],
            &self.raw[HEADER_LEN..end],
        )
    }

    /// The parsed header.
    pub fn header(&self) -> &EntryHeader {
        &self.header
    }

    /// The entry id: BLAKE3 of the whole encoding.
    pub fn id(&self) -> &Id32 {
        &self.id
    }

    /// The whole encoding, as stored and sent.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Consumes the entry, returning its encoding.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }
}

/// The message an author signs: a label and the BLAKE3 hash of header and ciphertext, so a
/// large payload is hashed once at BLAKE3 speed instead of twice by SHA-512 inside Ed25519.
pub(crate) fn signing_message(body: &[u8]) -> [u8; SIGNATURE_LABEL.len() + 32] {
    let mut msg = [0u8; SIGNATURE_LABEL.len() + 32];
    msg[..SIGNATURE_LABEL.len()].copy_from_slice(SIGNATURE_LABEL);
    msg[SIGNATURE_LABEL.len()..].copy_from_slice(blake3::hash(body).as_bytes());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64, prev: Id32) -> (SecretKey, Secret32, SignedEntry) {
        let secret = SecretKey::from_bytes(&[7u8; 32]);
        let key = Secret32::from_bytes([9u8; 32]);
        let header = EntryHeader {
            version: ENTRY_VERSION,
            kind: EntryKind::Data,
            group_ref: [1u8; 32],
            author: [0u8; 32],
            seq,
            prev,
            lamport: 3,
            epoch: 0,
            timestamp_ms: 1_700_000_000_000,
            nonce: [5u8; 24],
        };
        let entry = SignedEntry::seal(header, &key, &secret, b"hello covey").unwrap();
        (secret, key, entry)
    }

    #[test]
    fn round_trip_verifies_and_decrypts() {
        let (secret, key, entry) = sample(1, [0u8; 32]);
        let decoded = SignedEntry::decode(entry.raw().to_vec(), 1 << 20).unwrap();
        assert_eq!(decoded, entry);
        assert_eq!(decoded.header().author, *secret.public().as_bytes());
        decoded.verify_signature().unwrap();
        assert_eq!(decoded.open(&key).unwrap().as_slice(), b"hello covey");
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let (_, key, entry) = sample(2, [4u8; 32]);
        let raw = entry.raw().to_vec();
        for byte in 0..raw.len() {
            for bit in [0u8, 3, 7] {
                let mut bad = raw.clone();
                bad[byte] ^= 1 << bit;
                let caught = match SignedEntry::decode(bad, 1 << 20) {
                    Err(_) => true,
                    Ok(e) => e.verify_signature().is_err() || e.open(&key).is_err(),
                };
                assert!(caught, "flip at byte {byte} bit {bit} went unnoticed");
                // The signature alone must catch every flip that still parses.
            }
        }
    }

    #[test]
    fn signature_alone_catches_flips_that_parse() {
        let (_, _, entry) = sample(2, [4u8; 32]);
        let raw = entry.raw().to_vec();
        for byte in 0..raw.len() {
            let mut bad = raw.clone();
            bad[byte] ^= 0x10;
            if let Ok(e) = SignedEntry::decode(bad, 1 << 20) {
                assert!(e.verify_signature().is_err(), "byte {byte}");
            }
        }
    }

    #[test]
    fn decode_is_total_on_short_and_long_inputs() {
        let (_, _, entry) = sample(1, [0u8; 32]);
        let raw = entry.raw().to_vec();
        for len in 0..raw.len() {
            assert!(SignedEntry::decode(raw[..len].to_vec(), 1 << 20).is_err());
        }
        let mut long = raw.clone();
        long.push(0);
        assert!(SignedEntry::decode(long, 1 << 20).is_err());
    }

    #[test]
    fn ciphertext_limit_is_enforced_on_both_sides() {
        let (_, _, entry) = sample(1, [0u8; 32]);
        let ct_len = entry.raw().len() - HEADER_LEN - SIGNATURE_LEN;
        assert!(SignedEntry::decode(entry.raw().to_vec(), ct_len).is_ok());
        assert!(matches!(
            SignedEntry::decode(entry.raw().to_vec(), ct_len - 1),
            Err(WireError::TooLarge { .. })
        ));
    }
}
