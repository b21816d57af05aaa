//! Helpers for tests that drive the session machine (`sync::session::SyncSession`) by hand:
//! a local view to hand it, the wire between two machines, and what it sent.

use std::collections::{BTreeMap, BTreeSet};

use crate::sync::engine::Snapshot;
use crate::sync::session::Output;
use crate::wire::entry::Id32;
use crate::wire::frame::{self, Head, LENGTH_PREFIX, Message};

/// A node's view for the machine: in `group` alone, whose frontier is `heads`
/// (author, highest seq).
pub fn one_group_view(group: Id32, heads: &[(Id32, u64)]) -> Snapshot {
    let heads = heads
        .iter()
        .map(|&(author, seq)| Head { author, seq })
        .collect();
    Snapshot {
        groups: BTreeSet::from([group]),
        frontiers: BTreeMap::from([(group, heads)]),
    }
}

/// The messages among a machine's outputs, in order.
pub fn sent_messages(outputs: &[Output]) -> Vec<Message> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// Carries `message` across the wire: one frame out (at most `max_frame` bytes of body), its
/// prefix checked, its body decoded; panics if the wire changed it.
pub fn across_the_wire(message: &Message, max_frame: usize) -> Message {
    let bytes = frame::encode(message).unwrap_or_else(|e| panic!("encoding {message:?}: {e}"));
    let mut prefix = [0u8; LENGTH_PREFIX];
    prefix.copy_from_slice(&bytes[..LENGTH_PREFIX]);
    let len = frame::frame_len(prefix, max_frame)
        .unwrap_or_else(|e| panic!("a frame over the limit: {e}"));
    assert_eq!(
        len,
        bytes.len() - LENGTH_PREFIX,
        "the prefix counts the body"
    );
    let decoded = frame::decode(&bytes[LENGTH_PREFIX..])
        .unwrap_or_else(|e| panic!("decoding {message:?}: {e}"));
    assert_eq!(&decoded, message, "the wire changed the message");
    decoded
}
