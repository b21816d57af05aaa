//! DHT messages and their encoding: one postcard-encoded [`Message`] per frame. Decoding is
//! total and bounded: frames above [`MAX_MESSAGE_BYTES`] are refused before parsing, so no
//! list can hold more entries than the frame has bytes; values above the 32 KiB ceiling,
//! provider records sealing more than [`MAX_SEALED_BYTES`] and malformed signatures are
//! refused after parsing. Contact lists longer than `k` parse (a
//! peer may be buggy) and are truncated and counted by the lookup that receives them.

use serde::{Deserialize, Serialize};

use super::id::Key;
use super::record::{
    MAX_NAME_LEN, MAX_SEALED_BYTES, MAX_VALUE_CEILING, ProviderRecord, Record, SIGNATURE_LEN,
};
use crate::wire::WireError;

/// ALPN of the DHT protocol. Version 2 changed the provider record (its `sealed` field and
/// signing label); the DHT has no version negotiation, so the ALPN carries the version and a
/// version 1 node fails to connect instead of misreading records.
pub const ALPN: &[u8] = b"covey/dht/2";
/// Largest encoded message accepted: one largest record plus a full contact list, with room.
pub const MAX_MESSAGE_BYTES: usize = 96 * 1024;
/// Most provider records in one response.
pub const MAX_PROVIDERS_PER_RESPONSE: usize = 64;

/// A request one node sends another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Are you alive?
    Ping,
    /// The contacts you know closest to `target`.
    FindNode {
        /// The key looked up.
        target: Key,
    },
    /// The record under `key` if you hold it, and your contacts closest to it.
    FindValue {
        /// [`super::record::record_key`] of the record.
        key: Key,
    },
    /// Hold this record.
    Store {
        /// The record.
        record: Record,
    },
    /// Hold this provider record.
    AddProvider {
        /// The record.
        record: ProviderRecord,
    },
    /// The providers of `key` you hold, and your contacts closest to it.
    GetProviders {
        /// [`super::record::provider_key`] of the application key.
        key: Key,
    },
}

/// Why a store was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The record did not validate.
    Invalid,
    /// A record with a higher sequence, or another value at this sequence, is held.
    Conflict,
    /// The node's quota is reached.
    Full,
}

/// A response to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::FindNode`].
    Nodes {
        /// Closest contacts known (at most `k` from an honest peer).
        contacts: Vec<Key>,
    },
    /// Answer to [`Request::FindValue`].
    Value {
        /// The record held, if any.
        record: Option<Record>,
        /// Closest contacts known.
        contacts: Vec<Key>,
    },
    /// Answer to [`Request::Store`].
    Stored {
        /// Whether the record was stored (or the same one was already held).
        accepted: bool,
        /// Why not, when it was not.
        refusal: Option<Refusal>,
        /// The record held in its place, when refused for a conflict.
        held: Option<Record>,
    },
    /// Answer to [`Request::AddProvider`].
    ProviderAdded {
        /// Whether it was stored.
        accepted: bool,
    },
    /// Answer to [`Request::GetProviders`].
    Providers {
        /// Provider records held.
        providers: Vec<ProviderRecord>,
        /// Closest contacts known.
        contacts: Vec<Key>,
    },
}

/// What goes over the wire: a request or a response, tagged with the request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A request numbered `id` by its sender.
    Request {
        /// Request id, echoed in the response.
        id: u64,
        /// The request.
        body: Request,
    },
    /// The response to request `id`.
    Response {
        /// The request id answered.
        id: u64,
        /// The response.
        body: Response,
    },
}

/// Encodes a message.
pub fn encode(message: &Message) -> Result<Vec<u8>, WireError> {
    let out =
        postcard::to_stdvec(message).map_err(|e| WireError::Malformed(format!("encode: {e}")))?;
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge {
            what: "dht message",
            len: out.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    Ok(out)
}

fn check_record(r: &Record) -> Result<(), WireError> {
    if r.value.len() > MAX_VALUE_CEILING {
        return Err(WireError::TooLarge {
            what: "record value",
            len: r.value.len(),
            limit: MAX_VALUE_CEILING,
        });
    }
    if r.name.len() > MAX_NAME_LEN {
        return Err(WireError::TooLarge {
            what: "record name",
            len: r.name.len(),
            limit: MAX_NAME_LEN,
        });
    }
    if r.signature.len() != SIGNATURE_LEN {
        return Err(WireError::Malformed(
            "record signature is not 64 bytes".into(),
        ));
    }
    Ok(())
}

fn check_provider(p: &ProviderRecord) -> Result<(), WireError> {
    if p.sealed.len() > MAX_SEALED_BYTES {
        return Err(WireError::TooLarge {
            what: "provider sealed bytes",
            len: p.sealed.len(),
            limit: MAX_SEALED_BYTES,
        });
    }
    if p.signature.len() != SIGNATURE_LEN {
        return Err(WireError::Malformed(
            "provider signature is not 64 bytes".into(),
        ));
    }
    Ok(())
}

/// Decodes a message; any input yields a message or an error. Trailing bytes are an error.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge {
            what: "dht message",
            len: bytes.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let (message, rest) = postcard::take_from_bytes::<Message>(bytes)
        .map_err(|e| WireError::Malformed(format!("dht message: {e}")))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(
            "trailing bytes after dht message".into(),
        ));
    }
    match &message {
        Message::Request {
            body: Request::Store { record },
            ..
        } => check_record(record)?,
        Message::Request {
            body: Request::AddProvider { record },
            ..
        } => check_provider(record)?,
        Message::Response {
            body: Response::Value {
                record: Some(r), ..
            },
            ..
        }
        | Message::Response {
            body: Response::Stored { held: Some(r), .. },
            ..
        } => check_record(r)?,
        Message::Response {
            body: Response::Providers { providers, .. },
            ..
        } => {
            if providers.len() > MAX_PROVIDERS_PER_RESPONSE {
                return Err(WireError::TooLarge {
                    what: "provider list",
                    len: providers.len(),
                    limit: MAX_PROVIDERS_PER_RESPONSE,
                });
            }
            for p in providers {
                check_provider(p)?;
            }
        }
        _ => {}
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    fn roundtrip(m: Message) {
        let bytes = encode(&m).unwrap();
        assert_eq!(decode(&bytes).unwrap(), m);
    }

    #[test]
    fn every_message_round_trips() {
        let s = SecretKey::from_bytes(&[1; 32]);
        let record = Record::sign(&s, b"n", b"v", 3, 99).unwrap();
        let provider = ProviderRecord::sign(&s, Key([7; 32]), 99);
        let reqs = [
            Request::Ping,
            Request::FindNode {
                target: Key([1; 32]),
            },
            Request::FindValue { key: Key([2; 32]) },
            Request::Store {
                record: record.clone(),
            },
            Request::AddProvider {
                record: provider.clone(),
            },
            Request::GetProviders { key: Key([3; 32]) },
        ];
        for (i, body) in reqs.into_iter().enumerate() {
            roundtrip(Message::Request { id: i as u64, body });
        }
        let resps = [
            Response::Pong,
            Response::Nodes {
                contacts: vec![Key([4; 32]); 20],
            },
            Response::Value {
                record: Some(record.clone()),
                contacts: vec![],
            },
            Response::Stored {
                accepted: false,
                refusal: Some(Refusal::Conflict),
                held: Some(record),
            },
            Response::ProviderAdded { accepted: true },
            Response::Providers {
                providers: vec![provider],
                contacts: vec![Key([5; 32])],
            },
        ];
        for (i, body) in resps.into_iter().enumerate() {
            roundtrip(Message::Response {
                id: u64::MAX - i as u64,
                body,
            });
        }
    }

    #[test]
    fn decoding_is_total_and_bounded() {
        // Every prefix of a valid message, and garbage, decode to an error, never a panic.
        let s = SecretKey::from_bytes(&[1; 32]);
        let m = Message::Request {
            id: 7,
            body: Request::Store {
                record: Record::sign(&s, b"n", b"value", 1, 9).unwrap(),
            },
        };
        let bytes = encode(&m).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "prefix {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..300usize {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&junk);
        }
        // A huge length prefix for a contact list cannot allocate past the frame.
        let mut huge = vec![1u8, 0, 1]; // Response, id 0, Nodes
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode(&huge).is_err());
        assert!(decode(&vec![0u8; MAX_MESSAGE_BYTES + 1]).is_err());
    }

    #[test]
    fn oversized_values_and_bad_signatures_are_refused() {
        let s = SecretKey::from_bytes(&[1; 32]);
        let mut r = Record::sign(&s, b"n", b"v", 1, 9).unwrap();
        r.value = vec![0; MAX_VALUE_CEILING + 1];
        let bytes = postcard::to_stdvec(&Message::Request {
            id: 1,
            body: Request::Store { record: r },
        })
        .unwrap();
        assert!(matches!(
            decode(&bytes),
            Err(WireError::TooLarge {
                what: "record value",
                ..
            })
        ));
        let mut r = Record::sign(&s, b"n", b"v", 1, 9).unwrap();
        r.signature.pop();
        let bytes = postcard::to_stdvec(&Message::Response {
            id: 1,
            body: Response::Value {
                record: Some(r),
                contacts: vec![],
            },
        })
        .unwrap();
        assert!(matches!(decode(&bytes), Err(WireError::Malformed(_))));
        // Sealed bytes: at the limit they decode, one over they do not, in a request and in
        // a response alike.
        let sealed = |n: usize| {
            let mut p = ProviderRecord::sign(&s, Key([7; 32]), 9);
            p.sealed = vec![0xee; n];
            p
        };
        for n in [MAX_SEALED_BYTES, MAX_SEALED_BYTES + 1] {
            let add = postcard::to_stdvec(&Message::Request {
                id: 1,
                body: Request::AddProvider { record: sealed(n) },
            })
            .unwrap();
            let found = postcard::to_stdvec(&Message::Response {
                id: 1,
                body: Response::Providers {
                    providers: vec![sealed(0), sealed(n)],
                    contacts: vec![],
                },
            })
            .unwrap();
            for bytes in [add, found] {
                if n <= MAX_SEALED_BYTES {
                    assert!(decode(&bytes).is_ok(), "{n} sealed bytes");
                } else {
                    assert_eq!(
                        decode(&bytes),
                        Err(WireError::TooLarge {
                            what: "provider sealed bytes",
                            len: n,
                            limit: MAX_SEALED_BYTES
                        })
                    );
                }
            }
        }
        // A full response of the largest provider records still fits a message.
        let full = Message::Response {
            id: u64::MAX,
            body: Response::Providers {
                providers: vec![sealed(MAX_SEALED_BYTES); MAX_PROVIDERS_PER_RESPONSE],
                contacts: vec![Key([1; 32]); 20],
            },
        };
        assert!(encode(&full).is_ok());
        // Thousands of contacts still parse (the lookup truncates and counts them).
        let many = Message::Response {
            id: 1,
            body: Response::Nodes {
                contacts: vec![Key([9; 32]); 2000],
            },
        };
        let bytes = encode(&many).unwrap();
        assert!(
            matches!(decode(&bytes), Ok(Message::Response { body: Response::Nodes { contacts }, .. }) if contacts.len() == 2000)
        );
    }
}
