//! Rows the store's tests put in databases.

use super::GroupRow;
use crate::wire::entry::Id32;
use crate::wire::frame::Head;

/// A passphrase group at epoch 0 named "g".
pub(super) fn group_row(id: Id32) -> GroupRow {
    GroupRow {
        group_id: id,
        name: "g".into(),
        kind: 0,
        epoch: 0,
    }
}

/// The head of `author`'s log (an id of that byte repeated) at `seq`.
pub(super) fn head(author: u8, seq: u64) -> Head {
    Head {
        author: [author; 32],
        seq,
    }
}
