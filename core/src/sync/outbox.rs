//! A peer's send queue, bounded by what it describes rather than by what it carries: control
//! messages (one frontier per group, at most one ping and one pong), acks merged per author,
//! and ranges of the log merged per (group, author). Entry bytes are read from the store
//! only when the link can take the next batch, so a slow or stalled peer costs the sender
//! O(groups × authors) memory however far behind it falls, and a burst of live pushes to
//! many peers costs each of them a range, not a copy of the entries.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::wire::entry::Id32;
use crate::wire::frame::{Head, Message};

use super::session::Output;

/// Control messages held at most; past it (a peer that never reads while its own frames
/// keep asking for answers), further ones are dropped and counted. Honest sessions queue
/// one hello, one frontier per group and a refusal.
pub const MAX_CONTROL_MESSAGES: usize = 4096;

/// The next thing a driver should send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// One message, as it is.
    Message(Message),
    /// The next batch of `(after_seq, up_to_seq]` of `author`'s log: read one bounded batch
    /// from the store, send it, and hand the rest back with [`Outbox::requeue_range`].
    Range {
        /// The group.
        group: Id32,
        /// Whose log.
        author: Id32,
        /// Last seq the peer holds.
        after_seq: u64,
        /// Last seq to send.
        up_to_seq: u64,
    },
    /// Finish the stream and end the session.
    Close,
}

/// One peer's pending sends.
#[derive(Debug, Default)]
pub struct Outbox {
    control: VecDeque<Message>,
    ping: Option<u64>,
    pong: Option<u64>,
    acks: BTreeMap<Id32, HashMap<Id32, u64>>,
    ranges: HashMap<(Id32, Id32), (u64, u64)>,
    turn: VecDeque<(Id32, Id32)>,
    closing: bool,
    dropped: u64,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the outputs that are sends (messages, ranges, close) and hands back the rest
    /// for the driver to carry out.
    pub fn push(&mut self, output: Output) -> Option<Output> {
        match output {
            Output::Send(message) => {
                self.push_message(message);
                None
            }
            Output::SendRange {
                group,
                author,
                after_seq,
                up_to_seq,
            } => {
                self.requeue_range(group, author, after_seq, up_to_seq);
                None
            }
            Output::Close { .. } => {
                self.closing = true;
                None
            }
            other => Some(other),
        }
    }

    /// Queues one message, merging where a newer one supersedes an older.
    pub fn push_message(&mut self, message: Message) {
        if self.closing && !matches!(message, Message::Refuse { .. }) {
            return;
        }
        match message {
            Message::Ping { nonce } => self.ping = Some(nonce),
            Message::Pong { nonce } => self.pong = Some(nonce),
            Message::Ack { group, heads } => {
                let acked = self.acks.entry(group).or_default();
                for head in heads {
                    let seq = acked.entry(head.author).or_insert(0);
                    *seq = (*seq).max(head.seq);
                }
            }
            other => {
                if self.control.len() >= MAX_CONTROL_MESSAGES {
                    self.dropped += 1;
                    return;
                }
                self.control.push_back(other);
            }
        }
    }

    /// Queues (or hands back the unsent rest of) a range, merged with any range already
    /// queued for the same log.
    pub fn requeue_range(&mut self, group: Id32, author: Id32, after_seq: u64, up_to_seq: u64) {
        if after_seq >= up_to_seq || self.closing {
            return;
        }
        match self.ranges.get_mut(&(group, author)) {
            Some((after, up_to)) => {
                *after = (*after).min(after_seq);
                *up_to = (*up_to).max(up_to_seq);
            }
            None => {
                self.ranges.insert((group, author), (after_seq, up_to_seq));
                self.turn.push_back((group, author));
            }
        }
    }

    /// The next send: control messages first (they are small and keep the session alive),
    /// then acks, then log ranges in turn so no author's backlog starves another's.
    pub fn next_work(&mut self) -> Option<Work> {
        if let Some(message) = self.control.pop_front() {
            return Some(Work::Message(message));
        }
        if self.closing {
            self.closing = false;
            self.clear();
            return Some(Work::Close);
        }
        if let Some(nonce) = self.pong.take() {
            return Some(Work::Message(Message::Pong { nonce }));
        }
        if let Some(nonce) = self.ping.take() {
            return Some(Work::Message(Message::Ping { nonce }));
        }
        if let Some((group, acked)) = self.acks.pop_first() {
            let mut heads: Vec<Head> = acked
                .into_iter()
                .map(|(author, seq)| Head { author, seq })
                .collect();
            heads.sort_by_key(|h| h.author);
            return Some(Work::Message(Message::Ack { group, heads }));
        }
        while let Some(key) = self.turn.pop_front() {
            if let Some((after_seq, up_to_seq)) = self.ranges.remove(&key) {
                return Some(Work::Range {
                    group: key.0,
                    author: key.1,
                    after_seq,
                    up_to_seq,
                });
            }
        }
        None
    }

    /// Whether nothing is queued.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn is_empty(&self) -> bool {
        self.control.is_empty()
            && !self.closing
            && self.ping.is_none()
            && self.pong.is_none()
            && self.acks.is_empty()
            && self.ranges.is_empty()
    }

    /// How many items are held (messages, acked authors, ranges): what the outbox costs in
    /// memory, independent of how many entries the ranges span.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn len(&self) -> usize {
        self.control.len()
            + usize::from(self.ping.is_some())
            + usize::from(self.pong.is_some())
            + self.acks.values().map(HashMap::len).sum::<usize>()
            + self.ranges.len()
    }

    /// Control messages dropped because the peer would not read them.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn clear(&mut self) {
        self.ping = None;
        self.pong = None;
        self.acks.clear();
        self.ranges.clear();
        self.turn.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(outbox: &mut Outbox, after: u64, up_to: u64) {
        outbox.push(Output::SendRange {
            group: [1; 32],
            author: [2; 32],
            after_seq: after,
            up_to_seq: up_to,
        });
    }

    #[test]
    fn ranges_of_one_log_merge_into_one_item() {
        let mut o = Outbox::new();
        for seq in 0..10_000 {
            range(&mut o, seq, seq + 1);
        }
        assert_eq!(o.len(), 1);
        assert_eq!(
            o.next_work(),
            Some(Work::Range {
                group: [1; 32],
                author: [2; 32],
                after_seq: 0,
                up_to_seq: 10_000
            })
        );
        assert_eq!(o.next_work(), None);
        assert!(o.is_empty());
    }

    #[test]
    fn control_goes_before_ranges_and_acks_merge() {
        let mut o = Outbox::new();
        range(&mut o, 0, 5);
        for seq in 1..=3 {
            o.push_message(Message::Ack {
                group: [1; 32],
                heads: vec![Head {
                    author: [9; 32],
                    seq,
                }],
            });
        }
        o.push_message(Message::Ping { nonce: 1 });
        o.push_message(Message::Ping { nonce: 2 });
        o.push_message(Message::Frontier {
            group: [1; 32],
            heads: vec![],
        });
        assert!(matches!(
            o.next_work(),
            Some(Work::Message(Message::Frontier { .. }))
        ));
        assert_eq!(
            o.next_work(),
            Some(Work::Message(Message::Ping { nonce: 2 }))
        );
        assert_eq!(
            o.next_work(),
            Some(Work::Message(Message::Ack {
                group: [1; 32],
                heads: vec![Head {
                    author: [9; 32],
                    seq: 3
                }]
            }))
        );
        assert!(matches!(o.next_work(), Some(Work::Range { .. })));
        assert_eq!(o.next_work(), None);
    }

    #[test]
    fn control_queue_is_bounded_on_both_sides() {
        let mut o = Outbox::new();
        for i in 0..MAX_CONTROL_MESSAGES {
            o.push_message(Message::Refuse {
                code: 0,
                reason: i.to_string(),
            });
        }
        assert_eq!(o.dropped(), 0);
        o.push_message(Message::Refuse {
            code: 0,
            reason: "one too many".into(),
        });
        assert_eq!(o.dropped(), 1);
        assert_eq!(o.len(), MAX_CONTROL_MESSAGES);
    }

    #[test]
    fn close_flushes_control_and_drops_the_rest() {
        let mut o = Outbox::new();
        range(&mut o, 0, 5);
        o.push(Output::Send(Message::Refuse {
            code: 2,
            reason: "bye".into(),
        }));
        o.push(Output::Close { reason: "x".into() });
        range(&mut o, 5, 9);
        assert!(matches!(
            o.next_work(),
            Some(Work::Message(Message::Refuse { .. }))
        ));
        assert_eq!(o.next_work(), Some(Work::Close));
        assert_eq!(o.next_work(), None);
    }

    #[test]
    fn backlogs_take_turns() {
        let mut o = Outbox::new();
        o.requeue_range([1; 32], [2; 32], 0, 100);
        o.requeue_range([1; 32], [3; 32], 0, 100);
        let Some(Work::Range { author, .. }) = o.next_work() else {
            panic!("expected a range")
        };
        assert_eq!(author, [2; 32]);
        o.requeue_range([1; 32], [2; 32], 10, 100);
        let Some(Work::Range { author, .. }) = o.next_work() else {
            panic!("expected a range")
        };
        assert_eq!(author, [3; 32]);
    }
}
