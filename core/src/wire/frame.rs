//! Sync frames: a 4-byte big-endian length, then one postcard-encoded [`Message`].

use serde::{Deserialize, Serialize};

use super::WireError;
use super::entry::Id32;

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX: usize = 4;

/// One author's highest contiguous seq in a group: an element of a version vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The author's node id.
    pub author: Id32,
    /// Highest contiguous seq held for that author.
    pub seq: u64,
}

/// A message of the `covey/sync/1` protocol (version 2). On the wire, the `group` of `Frontier`,
/// `Announce` and `Entries` is the group's per-pair session tag
/// (`group::GroupKeys::session_tag`), never its id; the node translates at the frame boundary,
/// so the session machine works with group ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message each side sends: what it speaks.
    Hello {
        /// Newest protocol version the sender speaks.
        version: u16,
        /// Oldest protocol version the sender still accepts.
        min_version: u16,
        /// Optional features the sender supports; unknown ones are ignored.
        features: Vec<String>,
    },
    /// The sender's version vector for one group it is in.
    Frontier {
        /// The group.
        group: Id32,
        /// Highest contiguous seq per author.
        heads: Vec<Head>,
    },
    /// A batch of encoded entries of one group, in per-author seq order.
    Entries {
        /// The group they belong to.
        group: Id32,
        /// Encoded [`super::entry::SignedEntry`]s.
        #[serde(with = "byte_strings")]
        entries: Vec<Vec<u8>>,
    },
    /// Like `Frontier`, sent when the sender joins a group mid-session: the receiver answers
    /// with its own frontier even if it sent one before (the sender was not in the group then,
    /// so it dropped it).
    Announce {
        /// The group just joined.
        group: Id32,
        /// Highest contiguous seq per author.
        heads: Vec<Head>,
    },
    /// The sender refuses the session, saying why, and closes it.
    Refuse {
        /// A stable code from [`RefuseCode`].
        code: u16,
        /// A human explanation.
        reason: String,
    },
    /// The sender now holds these heads of one group (feature `acks`): sent after it stores
    /// entries, so the receiver learns what reached it (delivery receipts) and stops pushing
    /// what it already has.
    Ack {
        /// The group.
        group: Id32,
        /// Heads that advanced, each the sender's highest contiguous seq for that author.
        heads: Vec<Head>,
    },
    /// A liveness probe (feature `keepalive`); the receiver answers with `Pong` carrying the
    /// same nonce.
    Ping {
        /// Echoed back in the `Pong`.
        nonce: u64,
    },
    /// The answer to a `Ping`.
    Pong {
        /// The `Ping`'s nonce.
        nonce: u64,
    },
    /// Membership proofs (protocol v2): one per group the sender proves it is in, each a
    /// keyed hash only a member can compute for this pair, this session and the sender's
    /// side (`group::PairKeys::proof`), padded with random values so a peer cannot count the
    /// sender's groups. Inside the node, the transport replaces each proof by the id of the
    /// group it proves (and drops what proves none of ours), as it renames session tags.
    Prove {
        /// The proofs, 32 bytes each.
        proofs: Vec<Id32>,
    },
}

impl Message {
    /// The group this message is about, if it is about one: on the wire the field holds the
    /// pair's session tag, inside the node the group id (see [`Message::map_group`]).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn group(&self) -> Option<&Id32> {
        match self {
            Message::Frontier { group, .. }
            | Message::Entries { group, .. }
            | Message::Announce { group, .. }
            | Message::Ack { group, .. } => Some(group),
            Message::Hello { .. }
            | Message::Refuse { .. }
            | Message::Ping { .. }
            | Message::Pong { .. }
            | Message::Prove { .. } => None,
        }
    }

    /// Renames the group this message is about with `map` (a group id to its session tag on
    /// the way out, a tag back to the id on the way in); a message about no group passes as it
    /// is.
    pub fn map_group(mut self, map: impl FnOnce(Id32) -> Id32) -> Message {
        match &mut self {
            Message::Frontier { group, .. }
            | Message::Entries { group, .. }
            | Message::Announce { group, .. }
            | Message::Ack { group, .. } => *group = map(*group),
            Message::Hello { .. }
            | Message::Refuse { .. }
            | Message::Ping { .. }
            | Message::Pong { .. }
            | Message::Prove { .. } => {}
        }
        self
    }
}

/// Why a session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum RefuseCode {
    /// No protocol version in common.
    IncompatibleVersion = 1,
    /// The peer sent a frame that broke the protocol.
    ProtocolViolation = 2,
    /// The node is shutting down or paused. Part of the protocol (a peer may send it); this
    /// node closes the connection instead, so it only ever decodes it.
    #[allow(dead_code)]
    GoingAway = 3,
}

/// Serializes a list of byte strings as serde bytes rather than sequences of `u8`: the same
/// postcard encoding (a varint length, then the bytes), copied in bulk instead of byte by byte.
mod byte_strings {
    use std::fmt;

    use serde::de::{SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    struct AsBytes<'a>(&'a [u8]);

    impl serde::Serialize for AsBytes<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }

    pub fn serialize<S: Serializer>(items: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(items.len()))?;
        for item in items {
            seq.serialize_element(&AsBytes(item))?;
        }
        seq.end()
    }

    struct ByteBuf(Vec<u8>);

    impl<'de> serde::Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct BytesVisitor;
            impl<'de> Visitor<'de> for BytesVisitor {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a byte string")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
            }
            deserializer.deserialize_bytes(BytesVisitor)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Vec<u8>>, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = Vec<Vec<u8>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of byte strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // The claimed length is untrusted: cap the up-front allocation.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(ByteBuf(item)) = seq.next_element()? {
                    if item.len() < crate::wire::entry::MIN_ENTRY_LEN {
                        return Err(serde::de::Error::invalid_length(
                            item.len(),
                            &"an entry of at least MIN_ENTRY_LEN bytes",
                        ));
                    }
                    out.push(item);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(ListVisitor)
    }
}

/// Encodes `message` as one frame, length prefix included.
pub fn encode(message: &Message) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; LENGTH_PREFIX];
    out = postcard::to_extend(message, out)
        .map_err(|e| WireError::Malformed(format!("encode: {e}")))?;
    let body_len = out.len() - LENGTH_PREFIX;
    let len = u32::try_from(body_len).map_err(|_| WireError::TooLarge {
        what: "frame",
        len: body_len,
        limit: u32::MAX as usize,
    })?;
    out[..LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Reads a length prefix and checks it against `max_frame`.
pub fn frame_len(prefix: [u8; LENGTH_PREFIX], max_frame: usize) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max_frame {
        return Err(WireError::TooLarge {
            what: "frame",
            len,
            limit: max_frame,
        });
    }
    Ok(len)
}

/// Decodes a frame body (without its prefix). Trailing bytes are an error.
pub fn decode(body: &[u8]) -> Result<Message, WireError> {
    let (message, rest) = postcard::take_from_bytes::<Message>(body)
        .map_err(|e| WireError::Malformed(format!("frame: {e}")))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed("trailing bytes after frame".into()));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::entry::MIN_ENTRY_LEN;

    fn roundtrip(message: Message) {
        let frame = encode(&message).unwrap();
        let prefix: [u8; 4] = frame[..4].try_into().unwrap();
        let len = frame_len(prefix, 1 << 20).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode(&frame[4..]).unwrap(), message);
    }

    #[test]
    fn messages_round_trip() {
        roundtrip(Message::Hello {
            version: 1,
            min_version: 1,
            features: vec!["x".into()],
        });
        roundtrip(Message::Frontier {
            group: [3; 32],
            heads: vec![Head {
                author: [4; 32],
                seq: u64::MAX,
            }],
        });
        roundtrip(Message::Entries {
            group: [3; 32],
            entries: vec![vec![1; MIN_ENTRY_LEN], vec![2; MIN_ENTRY_LEN + 1]],
        });
        roundtrip(Message::Announce {
            group: [5; 32],
            heads: vec![],
        });
        roundtrip(Message::Refuse {
            code: RefuseCode::IncompatibleVersion as u16,
            reason: "no".into(),
        });
        roundtrip(Message::Ack {
            group: [6; 32],
            heads: vec![Head {
                author: [7; 32],
                seq: 9,
            }],
        });
        roundtrip(Message::Ping { nonce: u64::MAX });
        roundtrip(Message::Pong { nonce: 0 });
    }

    #[test]
    fn entries_encode_like_plain_byte_vectors() {
        // The bulk byte-string encoding must stay wire-identical to serde's default for
        // Vec<Vec<u8>> (a varint count, then each as a varint length and its bytes).
        #[derive(Serialize)]
        enum Plain {
            _Hello,
            _Frontier,
            Entries { group: Id32, entries: Vec<Vec<u8>> },
        }
        let entries = vec![vec![1; MIN_ENTRY_LEN], vec![7; 300]];
        let ours = postcard::to_stdvec(&Message::Entries {
            group: [3; 32],
            entries: entries.clone(),
        })
        .unwrap();
        let plain = postcard::to_stdvec(&Plain::Entries {
            group: [3; 32],
            entries,
        })
        .unwrap();
        assert_eq!(ours, plain);
    }

    #[test]
    fn frame_limit_on_both_sides() {
        assert_eq!(frame_len(100u32.to_be_bytes(), 100).unwrap(), 100);
        assert!(matches!(
            frame_len(101u32.to_be_bytes(), 100),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let frame = encode(&Message::Entries {
            group: [3; 32],
            entries: vec![vec![9; MIN_ENTRY_LEN]; 3],
        })
        .unwrap();
        for len in 4..frame.len() {
            assert!(decode(&frame[4..len]).is_err(), "truncated at {len}");
        }
        let mut extra = frame[4..].to_vec();
        extra.push(0);
        assert!(decode(&extra).is_err());
        // Pseudo-random garbage: must never panic; a huge claimed length must not allocate it.
        let mut state = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
        assert!(decode(&[2, 3, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn entries_shorter_than_the_smallest_entry_are_refused_at_decode() {
        for (len, ok) in [(MIN_ENTRY_LEN - 1, false), (MIN_ENTRY_LEN, true)] {
            let frame = encode(&Message::Entries {
                group: [3; 32],
                entries: vec![vec![5; len]],
            })
            .unwrap();
            assert_eq!(decode(&frame[4..]).is_ok(), ok, "entry of {len} bytes");
        }
    }
}
