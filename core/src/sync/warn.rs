//! The kinds of `Warning` a node reports. One enum for the session machine, the driver core,
//! both transports and the FFI, so a kind is never matched as a string and never misspelt.

use std::fmt;

/// What a `Warning` event is about. Its stable, kebab-case name ([`WarnKind::as_str`]) is the
/// `kind` string of `Event::Warning` that apps and the bindings see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WarnKind {
    /// A subscriber fell behind and missed events.
    EventsDropped,
    /// A peer did not say hello (or open its stream) in time.
    HandshakeTimeout,
    /// A peer stopped answering pings: the failure detector closed the session.
    PeerTimeout,
    /// A peer re-sent entries it had been told we hold.
    ReplayedEntries,
    /// A peer broke the protocol (a message out of order, a bad claim); the session closes.
    ProtocolViolation,
    /// A peer refused the session.
    PeerRefused,
    /// A peer speaks no protocol version we speak.
    IncompatibleVersion,
    /// A frame was refused before it was decoded (oversized, truncated, undecodable).
    RejectedFrame,
    /// A peer sends faster than its rate limit; reading from it is held back.
    RateLimited,
    /// Entries from a peer were refused (bad signature, chain, seq, group, epoch, size).
    RejectedEntry,
    /// An entry is larger than the peer accepts, so its log is not sent to it past there.
    EntryTooLargeForPeer,
    /// The local store failed.
    Storage,
    /// A peer's delivery receipts could not be recorded (advisory; nothing is lost).
    ReceiptNotRecorded,
    /// An admin removed this node from a managed group: it keeps what it holds and can
    /// publish there no more.
    RemovedFromGroup,
}

impl WarnKind {
    /// Every kind, in declaration order.
    pub const ALL: [WarnKind; 14] = [
        WarnKind::EventsDropped,
        WarnKind::HandshakeTimeout,
        WarnKind::PeerTimeout,
        WarnKind::ReplayedEntries,
        WarnKind::ProtocolViolation,
        WarnKind::PeerRefused,
        WarnKind::IncompatibleVersion,
        WarnKind::RejectedFrame,
        WarnKind::RateLimited,
        WarnKind::RejectedEntry,
        WarnKind::EntryTooLargeForPeer,
        WarnKind::Storage,
        WarnKind::ReceiptNotRecorded,
        WarnKind::RemovedFromGroup,
    ];

    /// The stable name apps see as `Event::Warning.kind`.
    pub const fn as_str(self) -> &'static str {
        match self {
            WarnKind::EventsDropped => "events-dropped",
            WarnKind::HandshakeTimeout => "handshake-timeout",
            WarnKind::PeerTimeout => "peer-timeout",
            WarnKind::ReplayedEntries => "replayed-entries",
            WarnKind::ProtocolViolation => "protocol-violation",
            WarnKind::PeerRefused => "peer-refused",
            WarnKind::IncompatibleVersion => "incompatible-version",
            WarnKind::RejectedFrame => "rejected-frame",
            WarnKind::RateLimited => "rate-limited",
            WarnKind::RejectedEntry => "rejected-entry",
            WarnKind::EntryTooLargeForPeer => "entry-too-large-for-peer",
            WarnKind::Storage => "storage",
            WarnKind::ReceiptNotRecorded => "receipt-not-recorded",
            WarnKind::RemovedFromGroup => "removed-from-group",
        }
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<WarnKind> {
        WarnKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for WarnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<&str> = WarnKind::ALL.iter().map(|k| k.as_str()).collect();
        for kind in WarnKind::ALL {
            assert_eq!(WarnKind::from_name(kind.as_str()), Some(kind));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), WarnKind::ALL.len());
        assert_eq!(WarnKind::from_name("no-such-kind"), None);
    }
}
