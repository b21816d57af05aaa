//! Helpers shared by the tests that attack a node over real iroh connections on loopback
//! (`hostile_peer.rs`, `protection.rs`): the test group's keys, authors that seal entries with
//! the crate's own code, a watched victim node, an honest peer to sync with afterwards, and a
//! raw iroh client that speaks `covey/sync/1` frame by frame.

use std::borrow::Borrow;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use covey_core::crypto::{Secret32, aead, kdf};
use covey_core::group::GroupKeys;
use covey_core::node::SYNC_ALPN;
use covey_core::sync::session::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use covey_core::wire::entry::{ENTRY_VERSION, EntryHeader, EntryKind, Id32, SignedEntry};
use covey_core::wire::frame::{self, LENGTH_PREFIX, Message};
use covey_core::{Entry, EntryId, Event, GroupId, Node, NodeConfig, Subscription, SyncCounters};
use iroh::endpoint::{Connection, ReadExactError, RecvStream, SendStream};
use iroh::{Endpoint, EndpointId, SecretKey};
use iroh_tickets::endpoint::EndpointTicket;

use super::{GROUP, PASS, all_entries, connect, counters, loopback_endpoint, wait_for_count};
use super::{wait_until, wait_warning};

/// The victim's payload limit; small so its frame limit (and so the byte burst) is small too.
pub const LIMIT: usize = 4096;
/// How long a raw peer waits for one frame unless told otherwise.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Keys and entries
// ---------------------------------------------------------------------------------------------

/// The keys of the shared test group, derived once per test binary (Argon2id is slow).
pub fn group_keys() -> GroupKeys {
    static ROOT: OnceLock<Secret32> = OnceLock::new();
    GroupKeys::from_root(
        ROOT.get_or_init(|| kdf::passphrase_root(PASS, GROUP).expect("derive group root")),
    )
}

/// Keys of a group the victim never joined.
pub fn foreign_keys() -> GroupKeys {
    GroupKeys::from_root(&Secret32::from_bytes([0x33; 32]))
}

/// Milliseconds since the Unix epoch, as an entry's timestamp.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One author's log in one group, sealed with the crate's own `SignedEntry::seal`.
pub struct Author {
    pub secret: SecretKey,
    pub group: Id32,
    pub key: Secret32,
    pub seq: u64,
    pub prev: Id32,
}

impl Author {
    /// A new author with an empty log in the group of `keys`.
    pub fn new(keys: &GroupKeys) -> Self {
        Self {
            secret: SecretKey::generate(),
            group: keys.id.0,
            key: keys.content_key.clone(),
            seq: 0,
            prev: [0; 32],
        }
    }

    /// The author's id as it stands in entry headers.
    pub fn id(&self) -> Id32 {
        *self.secret.public().as_bytes()
    }

    /// A data header of this author for `seq` after `prev`, with a fresh nonce.
    pub fn header(&self, seq: u64, prev: Id32) -> EntryHeader {
        EntryHeader {
            version: ENTRY_VERSION,
            kind: EntryKind::Data,
            group_id: self.group,
            author: self.id(),
            seq,
            prev,
            lamport: 1_000 + seq,
            epoch: 0,
            timestamp_ms: now_ms(),
            nonce: aead::random_nonce(),
        }
    }

    /// `header` sealed under this author's key and signed by this author.
    pub fn seal(&self, header: EntryHeader, payload: &[u8]) -> SignedEntry {
        SignedEntry::seal(header, &self.key, &self.secret, payload).expect("seal")
    }

    /// The next entry of the log, without advancing it (a candidate to tamper with).
    pub fn peek(&self, payload: &[u8]) -> SignedEntry {
        self.seal(self.header(self.seq + 1, self.prev), payload)
    }

    /// The next entry of the log, advancing it.
    pub fn next(&mut self, payload: &[u8]) -> SignedEntry {
        let entry = self.peek(payload);
        self.seq = entry.header().seq;
        self.prev = *entry.id();
        entry
    }

    /// `n` more entries, each with a distinct payload of `size` bytes.
    pub fn batch(&mut self, n: usize, size: usize) -> Vec<SignedEntry> {
        (0..n)
            .map(|i| {
                let mut payload = format!("entry-{}-{i}-", self.seq).into_bytes();
                payload.resize(size.max(payload.len()), b'.');
                self.next(&payload)
            })
            .collect()
    }
}

/// The wire bytes of `entries` (owned or borrowed), as an `Entries` frame carries them.
pub fn raws<E: Borrow<SignedEntry>>(entries: &[E]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| e.borrow().raw().to_vec()).collect()
}

/// `before` with `change` applied: the exact counters a case expects.
pub fn plus(before: &SyncCounters, change: impl FnOnce(&mut SyncCounters)) -> SyncCounters {
    let mut c = before.clone();
    change(&mut c);
    c
}

/// The messages of the `Warning` events of `kind` among `events`.
pub fn warnings_of<'a>(events: &'a [Event], kind: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning { kind: k, message } if k == kind => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The victim node and an honest peer
// ---------------------------------------------------------------------------------------------

/// A node in the test group holding three entries of its own, watched through a subscription.
pub struct Victim {
    _dir: tempfile::TempDir,
    pub node: Node,
    pub group: GroupId,
    pub keys: GroupKeys,
    pub sub: Subscription,
    /// What the node held before any abuse.
    pub baseline: Vec<Entry>,
    /// How many entries the node should hold now.
    pub expected: usize,
    /// How long to wait for the node's reaction, in seconds.
    pub react_secs: u64,
}

/// An honest node that joined the test group and published `published` entries of its own.
pub struct GoodPeer {
    _dir: tempfile::TempDir,
    pub node: Node,
    pub published: usize,
}

impl Victim {
    /// A loopback victim with the small payload limit and whatever `tune` changes, whose
    /// reactions are awaited for `react_secs`.
    pub async fn open(react_secs: u64, tune: impl FnOnce(&mut NodeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::loopback(dir.path()).with_max_payload(LIMIT);
        tune(&mut config);
        let node = Node::open(config).await.expect("open victim");
        let info = node.join_passphrase(PASS, GROUP).await.unwrap();
        let keys = group_keys();
        assert_eq!(info.group_id, keys.id, "test derivation matches the node's");
        for i in 0..3 {
            node.publish(&info.group_id, format!("victim-{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        let baseline = all_entries(&node, &info.group_id).await;
        let sub = node.subscribe();
        Self {
            _dir: dir,
            group: info.group_id,
            keys,
            sub,
            expected: baseline.len(),
            baseline,
            node,
            react_secs,
        }
    }

    /// The victim's sync counters now.
    pub async fn counters(&self) -> SyncCounters {
        counters(&self.node).await
    }

    /// Waits for a `Warning` of `kind` and returns its message.
    pub async fn warning(&mut self, kind: &str) -> String {
        wait_warning(&mut self.sub, self.react_secs, kind).await
    }

    /// Waits until the counters equal `want` (they are updated around the store commit).
    pub async fn expect_counters(&self, want: SyncCounters) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.react_secs);
        loop {
            let now = self.counters().await;
            if now == want {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("counters are {now:?}, expected {want:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Expects `more` newly stored entries within `secs` and checks the baseline is untouched.
    pub async fn expect_stored_within(&mut self, more: usize, secs: u64) -> Vec<Entry> {
        self.expected += more;
        wait_for_count(&self.node, &self.group, self.expected, secs).await;
        self.assert_intact().await
    }

    /// Expects `more` newly stored entries and checks the baseline is untouched.
    pub async fn expect_stored(&mut self, more: usize) -> Vec<Entry> {
        self.expect_stored_within(more, self.react_secs).await
    }

    /// Everything stored before the abuse is still there, byte for byte, each entry once, and
    /// the whole group is readable.
    pub async fn assert_intact(&self) -> Vec<Entry> {
        let now = all_entries(&self.node, &self.group).await;
        assert_eq!(now.len(), self.expected, "entry count");
        assert_eq!(
            &now[..self.baseline.len()],
            &self.baseline[..],
            "entries stored before the abuse changed"
        );
        let mut ids: Vec<EntryId> = now.iter().map(|e| e.meta.entry_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), now.len(), "an entry is stored twice");
        assert_eq!(
            self.node.status().await.unwrap().entries,
            self.expected as u64
        );
        now
    }

    /// Every event arriving within `ms`.
    pub async fn events_for(&mut self, ms: u64) -> Vec<Event> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.sub.recv()).await {
            out.push(ev);
        }
        out
    }

    /// Warnings arriving within `ms`, as (kind, message): context for failure messages.
    pub async fn warnings_for(&mut self, ms: u64) -> Vec<(String, String)> {
        self.events_for(ms)
            .await
            .into_iter()
            .filter_map(|ev| match ev {
                Event::Warning { kind, message } => Some((kind, message)),
                _ => None,
            })
            .collect()
    }

    /// Whether the victim stores `entry`.
    pub async fn has(&self, entry: &SignedEntry) -> bool {
        self.node
            .entry(&self.group, &EntryId(*entry.id()))
            .await
            .unwrap()
            .is_some()
    }

    /// Asserts the victim holds no group `group`: entries of a group it never joined did not
    /// create it.
    pub async fn assert_no_group(&self, group: &GroupId) {
        assert!(
            self.node
                .entries(group, 0, 10)
                .await
                .is_err_and(|e| e.kind() == covey_core::ErrorKind::NotFound),
            "the foreign group was not created"
        );
    }

    /// The peers the victim has a live session with.
    pub async fn connected(&self) -> Vec<EndpointId> {
        self.node.status().await.unwrap().connected_peers
    }

    /// Waits until the node has no live session left.
    pub async fn expect_no_sessions(&self) {
        let node = &self.node;
        wait_until(
            self.react_secs,
            "every session of the victim to end",
            || async move { node.status().await.unwrap().connected_peers.is_empty() },
        )
        .await;
    }

    /// An honest node that joined the group and published `n` entries, not yet connected.
    pub async fn good_peer(&self, n: usize) -> GoodPeer {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(NodeConfig::loopback(dir.path()).with_max_payload(LIMIT))
            .await
            .unwrap();
        node.join_passphrase(PASS, GROUP).await.unwrap();
        for i in 0..n {
            node.publish(&self.group, format!("good-{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        GoodPeer {
            _dir: dir,
            node,
            published: n,
        }
    }

    /// `good` connects and the two sync both ways: both end up with the same entries (ids and
    /// payloads), the victim's count grows by what `good` published, nothing of the victim's
    /// is lost, and the sync itself rejects nothing on either side. `good` stays up.
    pub async fn syncs_with(&mut self, good: &GoodPeer) {
        let before = self.counters().await;
        connect(&good.node, &self.node).await;
        let total = self.expected + good.published;
        wait_for_count(&good.node, &self.group, total, 20).await;
        self.expect_stored_within(good.published, 20).await;
        let mut mine: Vec<_> = all_entries(&self.node, &self.group)
            .await
            .into_iter()
            .map(|e| (e.meta.entry_id, e.payload))
            .collect();
        let mut theirs: Vec<_> = all_entries(&good.node, &self.group)
            .await
            .into_iter()
            .map(|e| (e.meta.entry_id, e.payload))
            .collect();
        mine.sort();
        theirs.sort();
        assert_eq!(
            mine, theirs,
            "the victim and the honest node hold the same entries"
        );
        let after = self.counters().await;
        assert_eq!(after.rejected_frames, before.rejected_frames);
        assert_eq!(after.rejected_entries, before.rejected_entries);
        assert_eq!(counters(&good.node).await.rejected_entries, 0);
    }

    /// An honest node with two entries joins and the two sync both ways (see
    /// [`Victim::syncs_with`]); then it shuts down.
    pub async fn good_peer_syncs(&mut self) {
        let good = self.good_peer(2).await;
        self.syncs_with(&good).await;
        good.node.shutdown().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The raw peer
// ---------------------------------------------------------------------------------------------

/// What a raw peer read next.
#[derive(Debug)]
pub enum Incoming {
    /// A whole frame, the test group named by its id.
    Frame(Message),
    /// The node finished its send stream.
    Ended,
    /// The stream or connection was closed or reset.
    Closed,
    /// Nothing within the timeout.
    TimedOut,
    /// The node sent something that is not a frame (a bug in the node).
    Bad(String),
}

/// A v1 hello announcing `features`.
pub fn hello_message(features: &[&str]) -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        features: features.iter().map(|f| f.to_string()).collect(),
    }
}

/// Swaps the test group's id and its session tag in a message's group field, either way.
fn swap_group(mut message: Message, from: Id32, to: Id32) -> Message {
    if let Message::Frontier { group, .. }
    | Message::Announce { group, .. }
    | Message::Entries { group, .. }
    | Message::Ack { group, .. } = &mut message
        && *group == from
    {
        *group = to;
    }
    message
}

/// Dials the sync protocol of the node behind `ticket` from `endpoint`.
pub async fn dial_ticket(endpoint: &Endpoint, ticket: &EndpointTicket) -> Connection {
    tokio::time::timeout(
        RECV_TIMEOUT,
        endpoint.connect(ticket.endpoint_addr().clone(), SYNC_ALPN),
    )
    .await
    .expect("connect timed out")
    .expect("connect")
}

/// Dials `node`'s sync protocol from `endpoint`.
pub async fn dial(endpoint: &Endpoint, node: &Node) -> Connection {
    let ticket: EndpointTicket = node.addr().await.unwrap().parse().unwrap();
    dial_ticket(endpoint, &ticket).await
}

/// A bare iroh client speaking `covey/sync/1` frame by frame on one bi-stream.
pub struct RawPeer {
    pub endpoint: Endpoint,
    pub conn: Connection,
    pub send: SendStream,
    pub recv: RecvStream,
    /// The test group's name on the wire between this peer and the victim (frames carry a
    /// per-pair session tag, never the group id).
    pub tag: Id32,
}

/// A raw peer connected to the victim that said hello announcing `features`.
pub async fn session(v: &Victim, features: &[&str]) -> RawPeer {
    let mut peer = RawPeer::connect(&v.node).await;
    peer.hello(features).await;
    peer
}

impl RawPeer {
    /// Connects to `node` from a fresh loopback endpoint and opens a stream; sends nothing.
    pub async fn connect(node: &Node) -> Self {
        Self::connect_on(loopback_endpoint(SecretKey::generate()).await, node).await
    }

    /// Connects from an existing endpoint (several connections may share it).
    pub async fn connect_on(endpoint: Endpoint, node: &Node) -> Self {
        let conn = dial(&endpoint, node).await;
        let (send, recv) = conn.open_bi().await.expect("open_bi");
        let tag = group_keys()
            .session_tag(endpoint.id().as_bytes(), node.node_id().as_bytes())
            .0;
        Self {
            endpoint,
            conn,
            send,
            recv,
            tag,
        }
    }

    /// This peer's endpoint id, as the victim sees it.
    pub fn id(&self) -> EndpointId {
        self.endpoint.id()
    }

    /// Writes `bytes` to the stream as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("write");
    }

    /// A message encoded as a real member would send it (the test group named by its tag).
    pub fn encode(&self, message: &Message) -> Vec<u8> {
        let message = swap_group(message.clone(), group_keys().id.0, self.tag);
        frame::encode(&message).unwrap()
    }

    /// Sends a message, naming the test group by its session tag as a real member would.
    pub async fn send(&mut self, message: &Message) {
        let bytes = self.encode(message);
        self.send_raw(&bytes).await;
    }

    /// Sends an `Entries` frame of `entries` for `group`.
    pub async fn entries(&mut self, group: Id32, entries: Vec<Vec<u8>>) {
        self.send(&Message::Entries { group, entries }).await;
    }

    /// Finishes our half of the stream.
    pub fn finish(&mut self) {
        self.send.finish().expect("finish");
    }

    /// What arrives next within `timeout`, the test group named by its id again.
    pub async fn next_within(&mut self, timeout: Duration) -> Incoming {
        let (tag, group) = (self.tag, group_keys().id.0);
        let recv = &mut self.recv;
        let read = async {
            let mut prefix = [0u8; LENGTH_PREFIX];
            match recv.read_exact(&mut prefix).await {
                Ok(()) => {}
                Err(ReadExactError::FinishedEarly(0)) => return Incoming::Ended,
                Err(ReadExactError::FinishedEarly(n)) => {
                    return Incoming::Bad(format!("stream ended {n} bytes into a prefix"));
                }
                Err(ReadExactError::ReadError(_)) => return Incoming::Closed,
            }
            let len = u32::from_be_bytes(prefix) as usize;
            if len > 16 << 20 {
                return Incoming::Bad(format!("frame of {len} bytes"));
            }
            let mut body = vec![0u8; len];
            if let Err(e) = recv.read_exact(&mut body).await {
                return Incoming::Bad(format!("frame body: {e}"));
            }
            match frame::decode(&body) {
                Ok(m) => Incoming::Frame(swap_group(m, tag, group)),
                Err(e) => Incoming::Bad(e.to_string()),
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or(Incoming::TimedOut)
    }

    /// What arrives next within [`RECV_TIMEOUT`].
    pub async fn next(&mut self) -> Incoming {
        self.next_within(RECV_TIMEOUT).await
    }

    /// The next frame, or `None` when the stream ended, closed or went quiet.
    pub async fn recv(&mut self) -> Option<Message> {
        match self.next().await {
            Incoming::Frame(m) => Some(m),
            Incoming::Bad(e) => panic!("node sent a bad frame: {e}"),
            _ => None,
        }
    }

    /// Expects the node's hello, which it sends first whatever we do, with this build's
    /// version range.
    pub async fn expect_hello(&mut self) {
        match self.recv().await {
            Some(Message::Hello {
                version,
                min_version,
                ..
            }) => {
                assert_eq!(version, PROTOCOL_VERSION);
                assert_eq!(min_version, MIN_PROTOCOL_VERSION);
            }
            other => panic!("expected the node's hello, got {other:?}"),
        }
    }

    /// Says a valid v1 hello announcing `features` and expects the node's hello back.
    pub async fn hello(&mut self, features: &[&str]) {
        self.send(&hello_message(features)).await;
        self.expect_hello().await;
    }

    /// Reads until the node's `Refuse` (within `within`), then expects the session to end
    /// (stream finished or reset, connection closed); returns the refusal's code and reason.
    pub async fn expect_refuse_within(&mut self, within: Duration) -> (u16, String) {
        let deadline = Instant::now() + within;
        let refusal = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Incoming::Frame(Message::Refuse { code, reason }) => break (code, reason),
                Incoming::Frame(_) => continue,
                other => panic!("expected a Refuse frame, got {other:?}"),
            }
        };
        match self.next().await {
            Incoming::Ended | Incoming::Closed => {}
            other => panic!("expected the session to end after Refuse, got {other:?}"),
        }
        self.expect_closed(RECV_TIMEOUT).await;
        refusal
    }

    /// [`RawPeer::expect_refuse_within`] with the usual [`RECV_TIMEOUT`].
    pub async fn expect_refuse(&mut self) -> (u16, String) {
        self.expect_refuse_within(RECV_TIMEOUT).await
    }

    /// Waits for the node to close the connection.
    pub async fn expect_closed(&self, within: Duration) {
        tokio::time::timeout(within, self.conn.closed())
            .await
            .expect("the node did not close the connection");
    }

    /// Reads frames until an `Entries` one of the test group, skipping the others.
    pub async fn expect_entries(&mut self) -> Vec<Vec<u8>> {
        loop {
            match self.recv().await {
                Some(Message::Entries { group, entries }) => {
                    assert_eq!(group, group_keys().id.0, "entries of the test group");
                    return entries;
                }
                Some(Message::Refuse { code, reason }) => {
                    panic!("node refused the session ({code}): {reason}")
                }
                Some(_) => continue,
                None => panic!("node sent no entries"),
            }
        }
    }

    /// Reads frames until an `Ack` covering `author` up to `seq`.
    pub async fn expect_ack(&mut self, author: Id32, seq: u64) {
        loop {
            match self.recv().await {
                Some(Message::Ack { heads, .. })
                    if heads.iter().any(|h| h.author == author && h.seq >= seq) =>
                {
                    return;
                }
                Some(_) => continue,
                None => panic!("node sent no ack for seq {seq}"),
            }
        }
    }

    /// The session is still up: the connection has not been closed.
    pub fn assert_alive(&self) {
        assert!(
            self.conn.close_reason().is_none(),
            "connection closed: {:?}",
            self.conn.close_reason()
        );
    }

    /// Closes the connection and the endpoint.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.close().await;
    }
}
