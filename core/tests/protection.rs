//! Protection over real iroh connections on loopback: per-peer rate limits on frames and
//! bytes, the frame and handshake timeouts (the latter also for a peer that never opens its
//! stream), the keepalive failure detector, stream and connection bounds, refused frontiers
//! and acks past `MAX_SEQ`, claims past the node's own log that must not become receipts,
//! foreign-group entries, whole-log replays, redial after a peer comes back, and delivery
//! receipts between three nodes. Each case checks what the node reports (counters, `Warning` events, a `Refuse`
//! frame, a closed connection), that nothing it stored is lost, and, where it matters, that an
//! honest peer still syncs afterwards.
//!
//! Hostile peers are raw iroh clients speaking `covey/sync/1` frame by frame (the pattern of
//! `hostile_peer.rs`); timers and limits are shrunk through `NodeConfig` so every case takes
//! seconds.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use covey_core::crypto::{Secret32, aead, kdf};
use covey_core::group::GroupKeys;
use covey_core::node::SYNC_ALPN;
use covey_core::sync::limits::RateLimits;
use covey_core::sync::proto::{MAX_SEQ, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use covey_core::wire::entry::{ENTRY_VERSION, EntryHeader, EntryKind, Id32, SignedEntry};
use covey_core::wire::frame::{self, Head, LENGTH_PREFIX, Message, RefuseCode};
use covey_core::{
    Entry, EntryId, ErrorKind, Event, GroupId, Node, NodeConfig, Subscription, SyncCounters,
    SyncState,
};
use iroh::endpoint::{Connection, ReadExactError, RecvStream, SendStream};
use iroh::{Endpoint, EndpointId, SecretKey};
use iroh_tickets::endpoint::EndpointTicket;

/// The victim's payload limit; small so its frame limit (and so the byte burst) is small too.
const LIMIT: usize = 4096;
/// How long a raw peer waits for one frame unless told otherwise.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a node's reaction.
const REACT_SECS: u64 = 10;

// ---------------------------------------------------------------------------------------------
// Keys and entries
// ---------------------------------------------------------------------------------------------

/// The keys of the shared test group, derived once per test binary (Argon2id is slow).
fn group_keys() -> GroupKeys {
    static ROOT: OnceLock<Secret32> = OnceLock::new();
    GroupKeys::from_root(
        ROOT.get_or_init(|| kdf::passphrase_root(PASS, GROUP).expect("derive group root")),
    )
}

/// Keys of a group the victim never joined.
fn foreign_keys() -> GroupKeys {
    GroupKeys::from_root(&Secret32::from_bytes([0x44; 32]))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One author's log in one group, sealed with the crate's own `SignedEntry::seal`.
struct Author {
    secret: SecretKey,
    group: Id32,
    key: Secret32,
    seq: u64,
    prev: Id32,
}

impl Author {
    fn new(keys: &GroupKeys) -> Self {
        Self {
            secret: SecretKey::generate(),
            group: keys.id.0,
            key: keys.content_key.clone(),
            seq: 0,
            prev: [0; 32],
        }
    }

    fn id(&self) -> Id32 {
        *self.secret.public().as_bytes()
    }

    /// The next entry of the log, advancing it.
    fn next(&mut self, payload: &[u8]) -> SignedEntry {
        let header = EntryHeader {
            version: ENTRY_VERSION,
            kind: EntryKind::Data,
            group_id: self.group,
            author: self.id(),
            seq: self.seq + 1,
            prev: self.prev,
            lamport: 1_000 + self.seq + 1,
            epoch: 0,
            timestamp_ms: now_ms(),
            nonce: aead::random_nonce(),
        };
        let entry = SignedEntry::seal(header, &self.key, &self.secret, payload).expect("seal");
        self.seq = entry.header().seq;
        self.prev = *entry.id();
        entry
    }

    /// `n` more entries, each with a distinct payload of `size` bytes.
    fn batch(&mut self, n: usize, size: usize) -> Vec<SignedEntry> {
        (0..n)
            .map(|i| {
                let mut payload = format!("entry-{}-{i}-", self.seq).into_bytes();
                payload.resize(size.max(payload.len()), b'.');
                self.next(&payload)
            })
            .collect()
    }
}

fn raws(entries: &[SignedEntry]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| e.raw().to_vec()).collect()
}

// ---------------------------------------------------------------------------------------------
// The victim node
// ---------------------------------------------------------------------------------------------

/// A node in the test group holding three entries of its own, watched through a subscription.
struct Victim {
    _dir: tempfile::TempDir,
    node: Node,
    group: GroupId,
    keys: GroupKeys,
    sub: Subscription,
    /// What the node held before any abuse.
    baseline: Vec<Entry>,
    /// How many entries the node should hold now.
    expected: usize,
}

/// A loopback victim with the small payload limit and whatever `tune` changes.
async fn victim(tune: impl FnOnce(&mut NodeConfig)) -> Victim {
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
    Victim {
        _dir: dir,
        group: info.group_id,
        keys,
        sub,
        expected: baseline.len(),
        baseline,
        node,
    }
}

impl Victim {
    async fn counters(&self) -> SyncCounters {
        counters(&self.node).await
    }

    /// Waits for a `Warning` of `kind` and returns its message.
    async fn warning(&mut self, kind: &str) -> String {
        wait_warning(&mut self.sub, REACT_SECS, kind).await
    }

    /// Waits until the counters equal `want` (they are updated around the store commit).
    async fn expect_counters(&self, want: SyncCounters) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(REACT_SECS);
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
    async fn expect_stored_within(&mut self, more: usize, secs: u64) -> Vec<Entry> {
        self.expected += more;
        wait_for_count(&self.node, &self.group, self.expected, secs).await;
        self.assert_intact().await
    }

    async fn expect_stored(&mut self, more: usize) -> Vec<Entry> {
        self.expect_stored_within(more, REACT_SECS).await
    }

    /// Everything stored before the abuse is still there, byte for byte, each entry once.
    async fn assert_intact(&self) -> Vec<Entry> {
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
    async fn events_for(&mut self, ms: u64) -> Vec<Event> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.sub.recv()).await {
            out.push(ev);
        }
        out
    }

    async fn has(&self, entry: &SignedEntry) -> bool {
        self.node
            .entry(&self.group, &EntryId(*entry.id()))
            .await
            .unwrap()
            .is_some()
    }

    async fn connected(&self) -> Vec<EndpointId> {
        self.node.status().await.unwrap().connected_peers
    }

    /// Waits until the node has no live session left.
    async fn expect_no_sessions(&self) {
        let node = &self.node;
        wait_until(
            REACT_SECS,
            "every session of the victim to end",
            || async move { node.status().await.unwrap().connected_peers.is_empty() },
        )
        .await;
    }

    /// An honest node that joined the group and published two entries, not yet connected.
    async fn good_peer(&self) -> (tempfile::TempDir, Node) {
        let dir = tempfile::tempdir().unwrap();
        let good = Node::open(NodeConfig::loopback(dir.path()).with_max_payload(LIMIT))
            .await
            .unwrap();
        good.join_passphrase(PASS, GROUP).await.unwrap();
        for i in 0..2 {
            good.publish(&self.group, format!("good-{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        (dir, good)
    }

    /// An honest node joins, and the two sync both ways; the victim's count grows by what the
    /// honest node published.
    async fn good_peer_syncs(&mut self) {
        let good = self.good_peer().await;
        self.syncs_with(good).await;
    }

    /// `good` (from [`Victim::good_peer`]) connects, and the two sync both ways.
    async fn syncs_with(&mut self, (_dir, good): (tempfile::TempDir, Node)) {
        let before = self.counters().await;
        connect(&good, &self.node).await;
        let total = self.expected + 2;
        wait_for_count(&good, &self.group, total, 20).await;
        self.expect_stored_within(2, 20).await;
        let mut mine: Vec<_> = all_entries(&self.node, &self.group)
            .await
            .into_iter()
            .map(|e| e.meta.entry_id)
            .collect();
        let mut theirs: Vec<_> = all_entries(&good, &self.group)
            .await
            .into_iter()
            .map(|e| e.meta.entry_id)
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
        assert_eq!(counters(&good).await.rejected_entries, 0);
        good.shutdown().await.unwrap();
    }
}

/// `before` with `change` applied: the exact counters a case expects.
fn plus(before: &SyncCounters, change: impl FnOnce(&mut SyncCounters)) -> SyncCounters {
    let mut c = before.clone();
    change(&mut c);
    c
}

fn warnings_of<'a>(events: &'a [Event], kind: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning { kind: k, message } if k == kind => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The raw peer
// ---------------------------------------------------------------------------------------------

/// What a raw peer read next.
#[derive(Debug)]
enum Incoming {
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

/// Swaps the test group's id and its session tag in a message's group field, either way.
fn swap_group(message: Message, from: Id32, to: Id32) -> Message {
    let swap = |g: Id32| if g == from { to } else { g };
    match message {
        Message::Frontier { group, heads } => Message::Frontier {
            group: swap(group),
            heads,
        },
        Message::Announce { group, heads } => Message::Announce {
            group: swap(group),
            heads,
        },
        Message::Entries { group, entries } => Message::Entries {
            group: swap(group),
            entries,
        },
        Message::Ack { group, heads } => Message::Ack {
            group: swap(group),
            heads,
        },
        other => other,
    }
}

/// A bare iroh client speaking `covey/sync/1` frame by frame on one bi-stream.
struct RawPeer {
    endpoint: Endpoint,
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    /// The test group's session tag between this peer and the victim.
    tag: Id32,
}

/// Dials `node`'s sync protocol from `endpoint`.
async fn dial(endpoint: &Endpoint, node: &Node) -> Connection {
    let ticket: EndpointTicket = node.addr().await.unwrap().parse().unwrap();
    tokio::time::timeout(
        RECV_TIMEOUT,
        endpoint.connect(ticket.endpoint_addr().clone(), SYNC_ALPN),
    )
    .await
    .expect("connect timed out")
    .expect("connect")
}

impl RawPeer {
    async fn connect(node: &Node) -> Self {
        Self::connect_on(loopback_endpoint(SecretKey::generate()).await, node).await
    }

    /// Connects from an existing endpoint (several connections may share it).
    async fn connect_on(endpoint: Endpoint, node: &Node) -> Self {
        let conn = dial(&endpoint, node).await;
        let (send, recv) = conn.open_bi().await.expect("open_bi");
        let tag = group_keys().session_tag(endpoint.id().as_bytes(), node.node_id().as_bytes());
        Self {
            endpoint,
            conn,
            send,
            recv,
            tag,
        }
    }

    fn id(&self) -> EndpointId {
        self.endpoint.id()
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("write");
    }

    /// A message encoded as a real member would send it (the test group named by its tag).
    fn encode(&self, message: &Message) -> Vec<u8> {
        let message = swap_group(message.clone(), group_keys().id.0, self.tag);
        frame::encode(&message).unwrap()
    }

    async fn send(&mut self, message: &Message) {
        let bytes = self.encode(message);
        self.send_raw(&bytes).await;
    }

    async fn entries(&mut self, group: Id32, entries: Vec<Vec<u8>>) {
        self.send(&Message::Entries { group, entries }).await;
    }

    async fn next_within(&mut self, timeout: Duration) -> Incoming {
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

    /// The next frame, or `None` when the stream ended, closed or went quiet.
    async fn recv(&mut self) -> Option<Message> {
        match self.next_within(RECV_TIMEOUT).await {
            Incoming::Frame(m) => Some(m),
            Incoming::Bad(e) => panic!("node sent a bad frame: {e}"),
            _ => None,
        }
    }

    /// Says hello announcing `features` and expects the node's hello back.
    async fn hello(&mut self, features: &[&str]) {
        self.send(&Message::Hello {
            version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
            features: features.iter().map(|f| f.to_string()).collect(),
        })
        .await;
        match self.recv().await {
            Some(Message::Hello { version, .. }) => assert_eq!(version, PROTOCOL_VERSION),
            other => panic!("expected the node's hello, got {other:?}"),
        }
    }

    /// Reads until the node's `Refuse` (within `within`), then expects the connection to
    /// close; returns the refusal's code and reason.
    async fn expect_refuse_within(&mut self, within: Duration) -> (u16, String) {
        let deadline = Instant::now() + within;
        let refusal = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Incoming::Frame(Message::Refuse { code, reason }) => break (code, reason),
                Incoming::Frame(_) => continue,
                other => panic!("expected a Refuse frame, got {other:?}"),
            }
        };
        self.expect_closed(RECV_TIMEOUT).await;
        refusal
    }

    async fn expect_refuse(&mut self) -> (u16, String) {
        self.expect_refuse_within(RECV_TIMEOUT).await
    }

    /// Waits for the node to close the connection.
    async fn expect_closed(&self, within: Duration) {
        tokio::time::timeout(within, self.conn.closed())
            .await
            .expect("the node did not close the connection");
    }

    /// Reads frames until an `Entries` one, skipping the others.
    async fn expect_entries(&mut self) -> Vec<Vec<u8>> {
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
    async fn expect_ack(&mut self, author: Id32, seq: u64) {
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

    fn assert_alive(&self) {
        assert!(
            self.conn.close_reason().is_none(),
            "connection closed: {:?}",
            self.conn.close_reason()
        );
    }

    async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.close().await;
    }
}

/// A connected raw peer that said hello without optional features.
async fn session(v: &Victim) -> RawPeer {
    let mut peer = RawPeer::connect(&v.node).await;
    peer.hello(&[]).await;
    peer
}

// ---------------------------------------------------------------------------------------------
// 1, 2. Rate limits
// ---------------------------------------------------------------------------------------------

/// Single-entry `Entries` frames of `author`'s next `n` entries, encoded for `peer`.
fn entry_frames(peer: &RawPeer, author: &mut Author, n: usize, size: usize) -> Vec<Vec<u8>> {
    author
        .batch(n, size)
        .into_iter()
        .map(|e| {
            peer.encode(&Message::Entries {
                group: author.group,
                entries: vec![e.raw().to_vec()],
            })
        })
        .collect()
}

/// Sends `frames` one every `gap`, and expects them all stored without any being counted as
/// over the limit or any `rate-limited` warning.
async fn calm_peer_is_never_limited(v: &mut Victim, frames: usize, size: usize, gap: Duration) {
    let before = v.counters().await;
    let mut calm = session(v).await;
    let mut author = Author::new(&v.keys);
    for bytes in entry_frames(&calm, &mut author, frames, size) {
        calm.send_raw(&bytes).await;
        tokio::time::sleep(gap).await;
    }
    v.expect_stored(frames).await;
    v.expect_counters(plus(&before, |c| c.received += frames as u64))
        .await;
    let events = v.events_for(100).await;
    assert!(
        warnings_of(&events, "rate-limited").is_empty(),
        "a peer under its limit was warned about: {events:?}"
    );
    calm.assert_alive();
    calm.close().await;
}

/// Sends `frames` back to back from `peer`; returns how long the victim took to store them.
async fn flood(v: &mut Victim, peer: &mut RawPeer, frames: &[Vec<u8>]) -> Duration {
    let start = Instant::now();
    let send = async {
        for bytes in frames {
            peer.send_raw(bytes).await;
        }
    };
    let ((), _) = tokio::join!(send, v.expect_stored_within(frames.len(), 60));
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_rate_limit_slows_a_fast_peer_and_loses_nothing() {
    let (per_sec, burst) = (50u32, 20u32);
    let mut v = victim(|c| {
        c.rate_limits = RateLimits {
            frames_per_sec: per_sec,
            frame_burst: burst,
            ..RateLimits::default()
        }
    })
    .await;

    // Under the limit: 40 frames at 20 a second, twice the burst in all, never counted.
    calm_peer_is_never_limited(&mut v, 40, 16, Duration::from_millis(50)).await;
    assert_eq!(v.counters().await.rate_limited, 0);

    // Over it: 120 single-entry frames sent as fast as the link takes them.
    let before = v.counters().await;
    let n = 120usize;
    let mut fast = session(&v).await;
    let mut author = Author::new(&v.keys);
    let frames = entry_frames(&fast, &mut author, n, 16);
    let took = flood(&mut v, &mut fast, &frames).await;
    // The burst passes at once, the rest at the sustained rate (the hello took one frame of
    // the burst, which refilled while the handshake ran, so count the whole burst as free).
    let floor = Duration::from_millis((n as u64 - burst as u64) * 1000 / per_sec as u64);
    assert!(
        took >= floor * 8 / 10,
        "{n} frames at {per_sec}/s (burst {burst}) took only {took:?}; expected at least ~{floor:?}"
    );
    let after = v.counters().await;
    assert!(after.rate_limited > 0, "{after:?}");
    assert!(
        after.rate_limited <= n as u64,
        "each held-back frame is counted once: {after:?}"
    );
    assert_eq!(
        plus(&after, |c| c.rate_limited = before.rate_limited),
        plus(&before, |c| c.received += n as u64),
        "only received and rate_limited moved"
    );
    let events = v.events_for(200).await;
    let warned = warnings_of(&events, "rate-limited");
    assert_eq!(warned.len(), 1, "one warning per peer per 10 s: {warned:?}");
    assert!(
        warned[0].contains(&fast.id().fmt_short().to_string()),
        "the warning names the peer: {warned:?}"
    );
    // Every entry of the flood is there, once, in the author's order.
    let stored = v.assert_intact().await;
    let theirs: Vec<u64> = stored
        .iter()
        .filter(|e| e.meta.author == author.secret.public())
        .map(|e| e.meta.seq)
        .collect();
    assert_eq!(theirs, (1..=n as u64).collect::<Vec<_>>());
    fast.assert_alive();
    fast.close().await;
    v.good_peer_syncs().await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_rate_limit_slows_a_fast_peer_and_loses_nothing() {
    let per_sec: u32 = 64 * 1024;
    let mut v = victim(|c| {
        c.rate_limits = RateLimits {
            bytes_per_sec: per_sec,
            byte_burst: c.max_frame_bytes as u32,
            ..RateLimits::default()
        }
    })
    .await;
    let burst = (LIMIT + covey_core::node::FRAME_OVERHEAD) as u64;

    // Under the limit: 20 frames of ~4.3 KB, one every 100 ms (~44 KB/s, two thirds of the
    // limit), about 88 KB in all: more than the burst, so the rate is what lets them pass.
    calm_peer_is_never_limited(&mut v, 20, LIMIT, Duration::from_millis(100)).await;
    assert_eq!(v.counters().await.rate_limited, 0);

    // Over it: 48 such frames back to back.
    let before = v.counters().await;
    let n = 48usize;
    let mut fast = session(&v).await;
    let mut author = Author::new(&v.keys);
    let frames = entry_frames(&fast, &mut author, n, LIMIT);
    let total: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert!(total > 2 * burst, "the flood must outlast the burst");
    let took = flood(&mut v, &mut fast, &frames).await;
    let floor = Duration::from_millis((total - burst) * 1000 / per_sec as u64);
    assert!(
        took >= floor * 8 / 10,
        "{total} bytes at {per_sec} B/s (burst {burst}) took only {took:?}; expected ~{floor:?}"
    );
    let after = v.counters().await;
    assert!(after.rate_limited > 0, "{after:?}");
    assert_eq!(
        plus(&after, |c| c.rate_limited = before.rate_limited),
        plus(&before, |c| c.received += n as u64),
        "only received and rate_limited moved"
    );
    let events = v.events_for(200).await;
    assert_eq!(
        warnings_of(&events, "rate-limited").len(),
        1,
        "one warning per peer per 10 s: {events:?}"
    );
    let stored = v.assert_intact().await;
    let theirs: Vec<u64> = stored
        .iter()
        .filter(|e| e.meta.author == author.secret.public())
        .map(|e| e.meta.seq)
        .collect();
    assert_eq!(theirs, (1..=n as u64).collect::<Vec<_>>());
    fast.assert_alive();
    fast.close().await;
    v.good_peer_syncs().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 3. A frame that never completes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_never_completes_is_dropped_while_others_are_served() {
    let frame_timeout = Duration::from_millis(4000);
    let mut v = victim(|c| c.timers.frame_timeout_ms = frame_timeout.as_millis() as u64).await;
    // The honest node is ready before the stall starts (joining derives a key: slow).
    let good = v.good_peer().await;
    let before = v.counters().await;
    let mut staller = session(&v).await;
    // A length prefix promising 1000 bytes, then 10 of them, then nothing.
    let mut bytes = 1000u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 10]);
    let stalled_at = Instant::now();
    staller.send_raw(&bytes).await;

    // Meanwhile the victim serves an honest node, and the staller is still connected.
    v.syncs_with(good).await;
    assert!(
        stalled_at.elapsed() < frame_timeout,
        "the honest sync must finish inside the stall window for this test to mean anything"
    );
    staller.assert_alive();
    assert!(v.connected().await.contains(&staller.id()));

    let (code, reason) = staller
        .expect_refuse_within(frame_timeout + Duration::from_secs(REACT_SECS))
        .await;
    let held = stalled_at.elapsed();
    assert_eq!(code, RefuseCode::ProtocolViolation as u16, "{reason}");
    assert!(reason.contains("never completed"), "{reason}");
    assert!(
        held >= frame_timeout - Duration::from_millis(100),
        "dropped after {held:?}, before the frame timeout of {frame_timeout:?}"
    );
    let warning = v.warning("rejected-frame").await;
    assert!(
        warning.contains(&staller.id().fmt_short().to_string()),
        "{warning}"
    );
    v.expect_counters(plus(&before, |c| {
        c.received += 2;
        c.rejected_frames += 1;
    }))
    .await;
    v.assert_intact().await;
    let id = staller.id();
    let node = &v.node;
    wait_until(
        REACT_SECS,
        "the staller's session to be gone",
        || async move { !node.status().await.unwrap().connected_peers.contains(&id) },
    )
    .await;
    staller.close().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 4. Streams
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_open_more_than_two_streams() {
    let mut v = victim(|_| {}).await;
    let before = v.counters().await;
    let mut peer = session(&v).await;
    // A second bi stream fits the limit; the victim never reads it, so it stays open.
    let (mut extra, _extra_recv) = peer.conn.open_bi().await.expect("second bi stream");
    extra.write_all(&[0xAA; 1024]).await.unwrap();

    // A thousand more: none may open while those two are.
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let conn = peer.conn.clone();
        opens.spawn(async move { conn.open_bi().await.is_ok() });
    }
    let opened = tokio::time::timeout(Duration::from_millis(1500), async {
        let mut n = 0;
        while let Some(ok) = opens.join_next().await {
            n += usize::from(ok.unwrap());
        }
        n
    })
    .await;
    assert!(
        opened.is_err(),
        "stream opens beyond the limit completed: {opened:?}"
    );
    let done = opens.len();
    assert_eq!(done, 1000, "every extra open is still waiting for credit");
    opens.abort_all();
    // Unidirectional streams are not allowed at all.
    let uni = tokio::time::timeout(Duration::from_millis(500), peer.conn.open_uni()).await;
    assert!(uni.is_err(), "a uni stream opened: {uni:?}");

    // The session on the first stream still works.
    let mut author = Author::new(&v.keys);
    let batch = author.batch(3, 32);
    peer.entries(v.group.0, raws(&batch)).await;
    v.expect_stored(3).await;
    for e in &batch {
        assert!(v.has(e).await);
    }
    peer.assert_alive();
    v.expect_counters(plus(&before, |c| c.received += 3)).await;
    assert_eq!(v.connected().await, vec![peer.id()]);
    v.good_peer_syncs().await;
    peer.close().await;
    v.expect_no_sessions().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 5. Connections
// ---------------------------------------------------------------------------------------------

/// Connects from `endpoint`, says hello and reports whether the node answered with its own
/// hello (a live session) or closed the connection (a refused duplicate). Keeps the peer.
async fn try_session(endpoint: Endpoint, node: &Node) -> (bool, RawPeer) {
    let mut peer = RawPeer::connect_on(endpoint, node).await;
    peer.send(&Message::Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        features: vec![],
    })
    .await;
    let accepted = match peer.next_within(RECV_TIMEOUT).await {
        Incoming::Frame(Message::Hello { .. }) => true,
        Incoming::Frame(other) => panic!("frame before the node's hello: {other:?}"),
        Incoming::Closed | Incoming::Ended => false,
        other => panic!("neither a hello nor a close: {other:?}"),
    };
    (accepted, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_from_one_peer_keep_one_session_and_leak_none() {
    let mut v = victim(|_| {}).await;
    let before = v.counters().await;
    let endpoint = loopback_endpoint(SecretKey::generate()).await;
    let me = endpoint.id();

    // 50 in a row: each gets a session, and each session is gone once closed.
    for round in 0..50 {
        let (accepted, peer) = try_session(endpoint.clone(), &v.node).await;
        assert!(
            accepted,
            "round {round}: the node refused a lone connection"
        );
        assert_eq!(v.connected().await, vec![me], "round {round}");
        peer.conn.close(0u32.into(), b"next");
        v.expect_no_sessions().await;
    }
    let events = v.events_for(100).await;
    let ups = events
        .iter()
        .filter(|e| matches!(e, Event::PeerConnected { peer } if *peer == me))
        .count();
    let downs = events
        .iter()
        .filter(|e| matches!(e, Event::PeerDisconnected { peer } if *peer == me))
        .count();
    assert_eq!(
        (ups, downs),
        (50, 50),
        "one session up and down per connection"
    );

    // 20 at once: exactly one session, the others refused as duplicates.
    let mut tries = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let endpoint = endpoint.clone();
        let ticket = v.node.addr().await.unwrap();
        let node_id = v.node.node_id();
        tries.spawn(async move {
            let ticket: EndpointTicket = ticket.parse().unwrap();
            assert_eq!(ticket.endpoint_addr().id, node_id);
            let conn = tokio::time::timeout(
                RECV_TIMEOUT,
                endpoint.connect(ticket.endpoint_addr().clone(), SYNC_ALPN),
            )
            .await
            .expect("connect timed out")
            .expect("connect");
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let hello = frame::encode(&Message::Hello {
                version: PROTOCOL_VERSION,
                min_version: MIN_PROTOCOL_VERSION,
                features: vec![],
            })
            .unwrap();
            let _ = send.write_all(&hello).await;
            let mut prefix = [0u8; LENGTH_PREFIX];
            let accepted = tokio::time::timeout(RECV_TIMEOUT, recv.read_exact(&mut prefix))
                .await
                .expect("neither a hello nor a close")
                .is_ok();
            (accepted, conn, send, recv)
        });
    }
    let mut live = Vec::new();
    let mut refused = 0;
    while let Some(joined) = tries.join_next().await {
        let (accepted, conn, send, recv) = joined.unwrap();
        if accepted {
            live.push((conn, send, recv));
        } else {
            refused += 1;
        }
    }
    assert_eq!(
        live.len(),
        1,
        "exactly one concurrent connection gets a session"
    );
    assert_eq!(refused, 19);
    assert_eq!(v.connected().await, vec![me]);
    let (conn, _send, _recv) = live.pop().unwrap();
    conn.close(0u32.into(), b"done");
    v.expect_no_sessions().await;

    // Nothing was counted against the peer, nothing lost, and it can still come back.
    assert_eq!(v.counters().await, before);
    v.assert_intact().await;
    let (accepted, peer) = try_session(endpoint.clone(), &v.node).await;
    assert!(accepted);
    peer.close().await;
    v.expect_no_sessions().await;
    v.good_peer_syncs().await;
    v.expect_no_sessions().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 6. Heads past MAX_SEQ
// ---------------------------------------------------------------------------------------------

fn catching_up(events: &[Event]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            Event::SyncStateChanged {
                state: SyncState::CatchingUp,
                ..
            }
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_past_max_seq_are_refused_and_nothing_waits_on_them() {
    let mut v = victim(|_| {}).await;
    let someone = *SecretKey::generate().public().as_bytes();
    let own = *v.node.node_id().as_bytes();
    for (name, message) in [
        (
            "frontier",
            Message::Frontier {
                group: v.group.0,
                heads: vec![Head {
                    author: someone,
                    seq: u64::MAX,
                }],
            },
        ),
        (
            "ack",
            Message::Ack {
                group: v.group.0,
                heads: vec![Head {
                    author: own,
                    seq: u64::MAX,
                }],
            },
        ),
        (
            "announce",
            Message::Announce {
                group: v.group.0,
                heads: vec![
                    Head {
                        author: own,
                        seq: 1,
                    },
                    Head {
                        author: someone,
                        seq: MAX_SEQ + 1,
                    },
                ],
            },
        ),
    ] {
        let before = v.counters().await;
        let mut peer = session(&v).await;
        peer.send(&message).await;
        let (code, reason) = peer.expect_refuse().await;
        assert_eq!(
            code,
            RefuseCode::ProtocolViolation as u16,
            "{name}: {reason}"
        );
        assert!(reason.contains("beyond"), "{name}: {reason}");
        let warning = v.warning("protocol-violation").await;
        assert!(warning.contains("beyond"), "{name}: {warning}");
        v.expect_counters(plus(&before, |c| c.rejected_frames += 1))
            .await;
        v.assert_intact().await;
        v.expect_no_sessions().await;
        let events = v.events_for(300).await;
        assert!(
            !catching_up(&events),
            "{name}: the victim started waiting on the claim: {events:?}"
        );
        peer.close().await;
    }
    // Nothing of the refused acks was recorded as a receipt.
    let first = v.baseline[0].meta.entry_id;
    let receipt = v.node.delivery(&v.group, &first).await.unwrap();
    assert!(receipt.acked_by.is_empty(), "{receipt:?}");

    // The other side of the bound: MAX_SEQ itself is a (silly but legal) claim.
    let before = v.counters().await;
    let mut peer = session(&v).await;
    peer.send(&Message::Frontier {
        group: v.group.0,
        heads: vec![Head {
            author: someone,
            seq: MAX_SEQ,
        }],
    })
    .await;
    let events = v.events_for(500).await;
    assert!(catching_up(&events), "{events:?}");
    peer.assert_alive();
    assert_eq!(v.counters().await, before);
    // It costs the victim nothing but the session: closing it frees everything.
    peer.close().await;
    v.expect_no_sessions().await;

    // A claim the peer then honours ends in UpToDate: the states are observable.
    let mut peer = session(&v).await;
    let mut author = Author::new(&v.keys);
    let entry = author.next(b"promised");
    peer.send(&Message::Frontier {
        group: v.group.0,
        heads: vec![Head {
            author: author.id(),
            seq: 1,
        }],
    })
    .await;
    wait_event(&mut v.sub, REACT_SECS, |e| {
        matches!(
            e,
            Event::SyncStateChanged {
                state: SyncState::CatchingUp,
                ..
            }
        )
    })
    .await;
    peer.entries(v.group.0, raws(&[entry])).await;
    wait_event(&mut v.sub, REACT_SECS, |e| {
        matches!(
            e,
            Event::SyncStateChanged {
                state: SyncState::UpToDate,
                ..
            }
        )
    })
    .await;
    v.expect_stored(1).await;
    peer.close().await;
    v.good_peer_syncs().await;
    v.node.shutdown().await.unwrap();
}

/// A peer claims to hold more of the victim's own log than the victim ever wrote (well within
/// `MAX_SEQ`). Nobody can: the claim must not become a receipt for entries written later,
/// which that peer never received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_past_the_victims_own_log_is_no_receipt_for_later_entries() {
    let v = victim(|_| {}).await;
    let own = *v.node.node_id().as_bytes();
    let last_held = v.baseline.last().unwrap().meta.entry_id;
    for (name, claim) in [
        (
            "ack",
            Message::Ack {
                group: v.group.0,
                heads: vec![Head {
                    author: own,
                    seq: 1000,
                }],
            },
        ),
        (
            "frontier",
            Message::Frontier {
                group: v.group.0,
                heads: vec![Head {
                    author: own,
                    seq: 1000,
                }],
            },
        ),
    ] {
        let mut peer = session(&v).await;
        let liar = peer.id();
        peer.send(&claim).await;
        // The claim is processed: it covers what the victim does hold (the peer may have had
        // those from another member).
        let node = &v.node;
        wait_until(REACT_SECS, "the claim to be recorded", || async move {
            node.delivery(&v.group, &last_held)
                .await
                .is_ok_and(|d| d.acked_by.contains(&liar))
        })
        .await;
        let later = v
            .node
            .publish(&v.group, format!("after the {name}").as_bytes(), None)
            .await
            .unwrap();
        let receipt = v.node.delivery(&v.group, &later.entry_id).await.unwrap();
        assert!(
            !receipt.acked_by.contains(&liar) && !receipt.all_members,
            "{name}: an entry written after the claim reads as delivered to a peer that never got it: {receipt:?}"
        );
        peer.assert_alive();
        peer.close().await;
    }
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 7. Entries of a group the victim is not in
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_group_the_victim_is_not_in_are_rejected_and_not_stored() {
    let mut v = victim(|_| {}).await;
    let before = v.counters().await;
    let mut peer = session(&v).await;
    let foreign = foreign_keys();
    let mut stranger = Author::new(&foreign);
    let batch = stranger.batch(5, 32);
    // Named by the foreign group's own id: a group the victim does not know.
    peer.entries(foreign.id.0, raws(&batch)).await;
    let warning = v.warning("rejected-entry").await;
    assert!(warning.contains("not-in-group x5"), "{warning}");
    // Smuggled under the victim's own group tag: each entry names its real group.
    let more = stranger.batch(3, 32);
    peer.entries(v.group.0, raws(&more)).await;
    let warning = v.warning("rejected-entry").await;
    assert!(warning.contains("wrong-group x3"), "{warning}");
    // A frontier for the foreign group is none of the victim's business: no answer.
    peer.send(&Message::Frontier {
        group: foreign.id.0,
        heads: vec![Head {
            author: stranger.id(),
            seq: stranger.seq,
        }],
    })
    .await;
    v.expect_counters(plus(&before, |c| c.rejected_entries += 8))
        .await;
    v.assert_intact().await;
    for e in batch.iter().chain(&more) {
        assert!(!v.has(e).await);
    }
    assert!(
        v.node
            .entries(&foreign.id, 0, 10)
            .await
            .is_err_and(|e| e.kind() == covey_core::ErrorKind::NotFound),
        "the foreign group was not created"
    );
    assert_eq!(v.node.groups().await.unwrap().len(), 1);
    // The session goes on: a valid entry afterwards is stored.
    peer.assert_alive();
    let good = Author::new(&v.keys).next(b"after the strays");
    peer.entries(v.group.0, raws(std::slice::from_ref(&good)))
        .await;
    v.expect_stored(1).await;
    assert!(v.has(&good).await);
    v.expect_counters(plus(&before, |c| {
        c.rejected_entries += 8;
        c.received += 1;
    }))
    .await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 8. Replaying a whole log
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_log_is_counted_and_stored_once() {
    let mut v = victim(|_| {}).await;
    let before = v.counters().await;
    let mut peer = RawPeer::connect(&v.node).await;
    // With `acks`, the victim tells the peer what it stored, so re-sending it is a replay.
    peer.hello(&["acks"]).await;
    let mut author = Author::new(&v.keys);
    let own = author.batch(20, 64);
    peer.entries(v.group.0, raws(&own[..10])).await;
    peer.entries(v.group.0, raws(&own[10..])).await;
    peer.expect_ack(author.id(), 20).await;
    v.expect_stored(20).await;
    // Fetch the victim's whole log (its own entries) by claiming to hold nothing of it.
    peer.send(&Message::Frontier {
        group: v.group.0,
        heads: vec![Head {
            author: author.id(),
            seq: 20,
        }],
    })
    .await;
    let victims = peer.expect_entries().await;
    assert_eq!(victims.len(), 3);
    let mut log = victims.clone();
    log.extend(raws(&own));
    let n = log.len() as u64;
    assert_eq!(n, 23);
    v.expect_counters(plus(&before, |c| c.received += 20)).await;

    // The whole log, back in one frame, then again in frames of five.
    peer.entries(v.group.0, log.clone()).await;
    v.expect_counters(plus(&before, |c| {
        c.received += 20;
        c.duplicates += n;
        c.replayed += n;
    }))
    .await;
    for chunk in log.chunks(5) {
        peer.entries(v.group.0, chunk.to_vec()).await;
    }
    v.expect_counters(plus(&before, |c| {
        c.received += 20;
        c.duplicates += 2 * n;
        c.replayed += 2 * n;
    }))
    .await;
    let events = v.events_for(300).await;
    let warned = warnings_of(&events, "replayed-entries");
    assert_eq!(
        warned.len(),
        1,
        "one replay warning per session: {events:?}"
    );
    assert!(warned[0].contains("re-sent 23 entries"), "{warned:?}");
    assert!(
        warnings_of(&events, "rejected-entry").is_empty(),
        "{events:?}"
    );
    v.assert_intact().await;

    // The session is alive and the log goes on.
    peer.assert_alive();
    let next = author.next(b"after the replay");
    peer.entries(v.group.0, raws(std::slice::from_ref(&next)))
        .await;
    peer.expect_ack(author.id(), 21).await;
    v.expect_stored(1).await;
    assert!(v.has(&next).await);
    peer.close().await;
    v.good_peer_syncs().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 9. Handshake timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_says_hello_is_dropped_after_the_handshake_timeout() {
    let handshake = Duration::from_millis(1000);
    let mut v = victim(|c| c.timers.handshake_timeout_ms = handshake.as_millis() as u64).await;
    let before = v.counters().await;
    let mut peer = RawPeer::connect(&v.node).await;
    // Two bytes of a length prefix: the stream is open and seen, no hello ever comes.
    let started = Instant::now();
    peer.send_raw(&[0, 0]).await;
    match peer.next_within(RECV_TIMEOUT).await {
        Incoming::Frame(Message::Hello { .. }) => {}
        other => panic!("expected the node's hello, got {other:?}"),
    }
    peer.expect_closed(handshake + Duration::from_secs(REACT_SECS))
        .await;
    let held = started.elapsed();
    assert!(
        held >= handshake,
        "dropped after {held:?}, before the handshake timeout"
    );
    let warning = v.warning("handshake-timeout").await;
    assert!(warning.contains("1000 ms"), "{warning}");
    assert!(
        warning.contains(&peer.id().fmt_short().to_string()),
        "{warning}"
    );
    v.expect_no_sessions().await;
    assert_eq!(v.counters().await, before);
    v.assert_intact().await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_opens_no_stream_is_dropped_after_the_handshake_timeout() {
    let handshake = Duration::from_millis(1000);
    let mut v = victim(|c| c.timers.handshake_timeout_ms = handshake.as_millis() as u64).await;
    let before = v.counters().await;
    let endpoint = loopback_endpoint(SecretKey::generate()).await;
    let started = Instant::now();
    let conn = dial(&endpoint, &v.node).await;
    // Opened but never written to: the node cannot even see this stream.
    let (_send, _recv) = conn.open_bi().await.unwrap();
    let closed = tokio::time::timeout(handshake + Duration::from_secs(3), conn.closed()).await;
    assert!(
        closed.is_ok(),
        "a connection without a stream was held {:?}, well past the {handshake:?} handshake timeout",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= handshake,
        "dropped after {:?}, before the handshake timeout",
        started.elapsed()
    );
    let warning = v.warning("handshake-timeout").await;
    assert!(
        warning.contains(&endpoint.id().fmt_short().to_string()),
        "{warning}"
    );
    assert!(v.connected().await.is_empty());
    assert_eq!(v.counters().await, before);
    v.assert_intact().await;
    endpoint.close().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 10. Failure detector
// ---------------------------------------------------------------------------------------------

const KEEPALIVE_MS: u64 = 300;
const IDLE_MS: u64 = 1200;

async fn keepalive_victim() -> Victim {
    victim(|c| {
        c.timers.keepalive_ms = KEEPALIVE_MS;
        c.timers.idle_timeout_ms = IDLE_MS;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_keepalive_peer_is_pinged_then_timed_out() {
    let mut v = keepalive_victim().await;
    let before = v.counters().await;
    let mut peer = RawPeer::connect(&v.node).await;
    let spoke = Instant::now();
    peer.hello(&["keepalive"]).await;
    // The victim pings; the peer reads but never answers.
    let mut pings = 0;
    let ended = loop {
        match peer.next_within(Duration::from_millis(IDLE_MS * 4)).await {
            Incoming::Frame(Message::Ping { .. }) => pings += 1,
            Incoming::Frame(Message::Frontier { .. }) => {}
            Incoming::Frame(other) => panic!("unexpected frame {other:?}"),
            Incoming::Ended | Incoming::Closed => break spoke.elapsed(),
            other => panic!("the silent peer was never dropped: {other:?}"),
        }
    };
    assert!(pings >= 1, "no ping before the timeout");
    assert!(
        ended >= Duration::from_millis(IDLE_MS),
        "dropped after {ended:?}, before the idle timeout"
    );
    peer.expect_closed(RECV_TIMEOUT).await;
    let warning = v.warning("peer-timeout").await;
    assert!(
        warning.contains(&peer.id().fmt_short().to_string()),
        "{warning}"
    );
    let id = peer.id();
    wait_event(
        &mut v.sub,
        REACT_SECS,
        |e| matches!(e, Event::PeerDisconnected { peer } if *peer == id),
    )
    .await;
    v.expect_counters(plus(&before, |c| c.peer_timeouts += 1))
        .await;
    v.expect_no_sessions().await;
    v.assert_intact().await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_pings_stays_connected() {
    let mut v = keepalive_victim().await;
    let before = v.counters().await;
    let mut peer = RawPeer::connect(&v.node).await;
    peer.hello(&["keepalive"]).await;
    // Answer every ping for several idle timeouts, sending nothing else.
    let until = Instant::now() + Duration::from_millis(IDLE_MS * 3);
    let mut answered = 0;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match peer.next_within(left).await {
            Incoming::Frame(Message::Ping { nonce }) => {
                peer.send(&Message::Pong { nonce }).await;
                answered += 1;
            }
            Incoming::Frame(Message::Frontier { .. }) | Incoming::TimedOut => {}
            other => panic!("a peer answering pings lost its session: {other:?}"),
        }
    }
    assert!(answered >= 3, "only {answered} pings in {IDLE_MS} x 3 ms");
    peer.assert_alive();
    assert_eq!(v.connected().await, vec![peer.id()]);
    assert_eq!(v.counters().await, before);
    let events = v.events_for(100).await;
    assert!(
        warnings_of(&events, "peer-timeout").is_empty(),
        "{events:?}"
    );
    // And it still syncs.
    let entry = Author::new(&v.keys).next(b"still here");
    peer.entries(v.group.0, raws(std::slice::from_ref(&entry)))
        .await;
    v.expect_stored(1).await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_keepalive_is_neither_pinged_nor_timed_out() {
    let mut v = keepalive_victim().await;
    let before = v.counters().await;
    let mut peer = session(&v).await;
    let until = Instant::now() + Duration::from_millis(IDLE_MS * 2 + 500);
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match peer.next_within(left).await {
            Incoming::Frame(Message::Frontier { .. }) | Incoming::TimedOut => {}
            other => panic!("a silent peer without keepalive got {other:?}"),
        }
    }
    peer.assert_alive();
    assert_eq!(v.connected().await, vec![peer.id()]);
    assert_eq!(v.counters().await, before);
    let events = v.events_for(100).await;
    assert!(
        warnings_of(&events, "peer-timeout").is_empty(),
        "{events:?}"
    );
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 11. Redial after a peer comes back
// ---------------------------------------------------------------------------------------------

/// A loopback UDP port free right now, outside the ephemeral range: while B is down, no
/// endpoint another test binds to port 0 can be handed B's port.
fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16.min(ephemeral_low / 2);
    let span = u64::from(ephemeral_low - low);
    let seed = now_ms() ^ u64::from(std::process::id());
    (0..1000u64)
        .map(|i| low + ((seed + i * 7919) % span) as u16)
        .find(|&port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok())
        .expect("a free loopback port below the ephemeral range")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_reconnects_by_itself_when_its_peer_returns() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = free_port();
    let b_config = || {
        let mut c = NodeConfig::loopback(db.path());
        c.bind_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        c
    };
    let a = open(da.path()).await;
    let b = Node::open(b_config()).await.unwrap();
    let group = a.join_passphrase(PASS, GROUP).await.unwrap().group_id;
    b.join_passphrase(PASS, GROUP).await.unwrap();
    let b_id = b.node_id();
    let mut a_events = a.subscribe();
    connect(&a, &b).await;
    a.publish(&group, b"a-0", None).await.unwrap();
    wait_for_count(&b, &group, 1, 20).await;

    // B goes away; A notices.
    b.shutdown().await.unwrap();
    drop(b);
    wait_event(
        &mut a_events,
        REACT_SECS,
        |e| matches!(e, Event::PeerDisconnected { peer } if *peer == b_id),
    )
    .await;
    assert!(a.status().await.unwrap().connected_peers.is_empty());
    // Both write while apart (A now, B as soon as it is back), and A keeps redialing.
    for i in 1..=3 {
        a.publish(&group, format!("a-{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // B returns on the same port; A was never told, so any session is A's own redial
    // (B does not know A's address: only A added a peer).
    // The old endpoint's UDP socket is released when its last handle drops, which can be a
    // moment after `shutdown` returns: retry the bind briefly, as an app reopening on a fixed
    // port would.
    let mut reopened = None;
    for _ in 0..50 {
        match Node::open(b_config()).await {
            Ok(node) => {
                reopened = Some(node);
                break;
            }
            Err(e) if e.kind() == ErrorKind::Network => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("reopen B: {e:?}"),
        }
    }
    let b = reopened.expect("reopen B on its port within 5 s");
    assert_eq!(b.node_id(), b_id);
    assert_eq!(b.status().await.unwrap().known_peers, 0);
    for i in 0..3 {
        b.publish(&group, format!("b-{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    wait_event(
        &mut a_events,
        30,
        |e| matches!(e, Event::PeerConnected { peer } if *peer == b_id),
    )
    .await;
    wait_for_count(&a, &group, 7, 20).await;
    wait_for_count(&b, &group, 7, 20).await;
    let payloads = |entries: Vec<Entry>| {
        let mut p: Vec<Vec<u8>> = entries.into_iter().map(|e| e.payload).collect();
        p.sort();
        p
    };
    assert_eq!(
        payloads(all_entries(&a, &group).await),
        payloads(all_entries(&b, &group).await)
    );
    assert_eq!(counters(&a).await.rejected_entries, 0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 12. Delivery receipts between three nodes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_from_two_peers_show_and_survive_a_restart() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(dirs[0].path()).await;
    let b = open(dirs[1].path()).await;
    let c = open(dirs[2].path()).await;
    let group = a.join_passphrase(PASS, GROUP).await.unwrap().group_id;
    b.join_passphrase(PASS, GROUP).await.unwrap();
    c.join_passphrase(PASS, GROUP).await.unwrap();
    // A star around A: B and C only hear of each other through A.
    connect(&a, &b).await;
    connect(&a, &c).await;
    // Everyone writes once, so every node knows every member.
    b.publish(&group, b"from b", None).await.unwrap();
    c.publish(&group, b"from c", None).await.unwrap();
    for n in [&a, &b, &c] {
        wait_for_count(n, &group, 2, 20).await;
    }
    let mut sorted = vec![b.node_id(), c.node_id()];
    sorted.sort();

    let x = a.publish(&group, b"for everyone", None).await.unwrap();
    for n in [&b, &c] {
        wait_for_count(n, &group, 3, 20).await;
    }
    let (a_ref, want) = (&a, sorted.clone());
    wait_until(20, "B's and C's receipts for A's entry", || {
        let want = want.clone();
        async move {
            a_ref
                .delivery(&group, &x.entry_id)
                .await
                .is_ok_and(|d| d.acked_by == want && d.all_members)
        }
    })
    .await;

    // C goes away; an entry published now reaches B only, and the receipt says so.
    let c_id = c.node_id();
    c.shutdown().await.unwrap();
    let y = a.publish(&group, b"while c is away", None).await.unwrap();
    wait_for_count(&b, &group, 4, 20).await;
    let b_id = b.node_id();
    wait_until(20, "B's receipt for the second entry", || async move {
        a_ref
            .delivery(&group, &y.entry_id)
            .await
            .is_ok_and(|d| d.acked_by == vec![b_id])
    })
    .await;
    let partial = a.delivery(&group, &y.entry_id).await.unwrap();
    assert!(
        !partial.all_members,
        "C is a known member without it: {partial:?}"
    );
    assert!(!partial.acked_by.contains(&c_id));

    // After A restarts (B gone too), both receipts read the same from disk.
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    drop(a);
    let a = open(dirs[0].path()).await;
    let full = a.delivery(&group, &x.entry_id).await.unwrap();
    assert_eq!(full.acked_by, sorted);
    assert!(full.all_members);
    let partial = a.delivery(&group, &y.entry_id).await.unwrap();
    assert_eq!(partial.acked_by, vec![b_id]);
    assert!(!partial.all_members);
    a.shutdown().await.unwrap();
}
