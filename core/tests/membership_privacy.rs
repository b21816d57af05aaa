//! Membership privacy of the sync protocol (v2) over real iroh on loopback: after both sides
//! say `Hello`, a node reveals nothing about any group (no `Frontier`, no heads, no `Prove`,
//! no count of its groups) to a peer until that peer proved membership of a group they share
//! with a `Prove` frame bound to this very TLS session, this pair and the dialer's role.
//!
//! The victim is a real [`Node`] in two passphrase groups, G (three entries of its own and two
//! of another member, so a frontier would carry two authors' heads) and G2 (one entry, so a
//! count of groups would show). The peers are raw iroh clients ([`RawPeer`] opened without a
//! group, so nothing they send or read is renamed); every byte the node writes on the sync
//! stream is captured as it arrived and checked twice:
//!
//! - frame by frame: the message variants, in order (a leak shows up as a `Frontier`,
//!   `Announce`, `Entries`, `Ack` or `Prove` where only the `Hello` may be);
//! - byte by byte: no 8-byte run of anything the node must keep to members appears anywhere
//!   in the stream: its node id and every author id of G's frontier, each group's id and
//!   entry-header name, and each group's session tag and both membership proofs for this
//!   pair and session.
//!
//! Where only the `Hello` may arrive, the captured stream must also equal, byte for byte, the
//! `Hello` this build sends with the victim's configured frame limit: it is computed from
//! constants alone, so it cannot say how many groups the node is in.
//!
//! Cases: a stranger; a member of a group the victim is not in (and what happens once the
//! victim joins it mid-session); a proof replayed on a new session and from another identity;
//! a proof for the wrong role; both sides of `MAX_PROOFS`; and two real members that still
//! converge.
//!
//! Run it in a network namespace with only loopback (see the repository's test notes):
//! nothing here needs or may reach another machine.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{GROUP, PASS, all_entries, connect, counters, open, wait_for_count, wait_until};
use covey_core::crypto::{Secret32, kdf};
use covey_core::group::{GroupKeys, ProofRole};
use covey_core::sync::session::{
    FEATURES, MAX_FRAME_FEATURE, MAX_PROOFS, MIN_PROOFS, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use covey_core::testing::{RawPeer, hello_message, session_binding};
use covey_core::wire::entry::Id32;
use covey_core::wire::frame::{self, Head, LENGTH_PREFIX, Message, RefuseCode};
use covey_core::{ErrorKind, GroupId, Node, NodeConfig};
use iroh::{Endpoint, EndpointId, SecretKey};

/// G2, the victim's second group: its passphrase (strong enough for the floor) and name.
const G2_PASS: &str = "quartz lantern oboe migrate 7305 tundra";
/// G2's name.
const G2_NAME: &str = "second-group";
/// H, a group the victim is not in (until one case makes it join): passphrase and name.
const H_PASS: &str = "velvet harbor kiwi 4418 glacier sonnet";
/// H's name.
const H_NAME: &str = "other-group";

/// How long the node must stay silent before a capture ends. The node answers a proof within
/// milliseconds on loopback; this leaves room for a loaded machine, so a leak that is merely
/// slow is still seen.
const QUIET: Duration = Duration::from_millis(1500);
/// How long the frames a capture waits for (the `Hello`, an answer to a valid proof) may take
/// to arrive at all: generous, since parallel tests run Argon2id meanwhile; a shortfall is a
/// failed assertion, not a hang.
const ARRIVAL: Duration = Duration::from_secs(10);
/// How long to wait for the node to notice a session ended, in seconds.
const REACT_SECS: u64 = 10;
/// Length of the runs of secret bytes looked for in what a peer received: short enough to
/// catch a truncated or partly copied secret, long enough (2^-64 per position) that the
/// random-looking bytes of a legitimate frame never match by chance.
const LEAK_WINDOW: usize = 8;
/// Most proofs one `Prove` frame of the at-limit case carries: 32 KiB of proofs, so the limit
/// is reached over several frames (the count is per session, not per frame).
const PROOFS_PER_FRAME: usize = 1024;

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// The keys of passphrase group `(pass, name)`, its root derived once per test binary in
/// `cell` (Argon2id is slow, and several tests need the same group).
fn cached_keys(cell: &'static OnceLock<Secret32>, pass: &str, name: &str) -> GroupKeys {
    GroupKeys::from_root(cell.get_or_init(|| kdf::passphrase_root(pass, name).expect("root")))
}

/// G's keys, as every member derives them.
fn g_keys() -> GroupKeys {
    static ROOT: OnceLock<Secret32> = OnceLock::new();
    cached_keys(&ROOT, PASS, GROUP)
}

/// G2's keys.
fn g2_keys() -> GroupKeys {
    static ROOT: OnceLock<Secret32> = OnceLock::new();
    cached_keys(&ROOT, G2_PASS, G2_NAME)
}

/// H's keys.
fn h_keys() -> GroupKeys {
    static ROOT: OnceLock<Secret32> = OnceLock::new();
    cached_keys(&ROOT, H_PASS, H_NAME)
}

/// `n` random 32-byte values: what a stranger can send as proofs, and the padding a real
/// dialer adds.
fn random_proofs(n: usize) -> Vec<Id32> {
    (0..n).map(|_| *Secret32::random().expose()).collect()
}

/// `real` proofs padded with random values to [`MIN_PROOFS`] and sorted, as a real dialer's
/// opening `Prove` looks: so each case's peer is indistinguishable from a member by shape.
fn padded(real: &[Id32]) -> Vec<Id32> {
    let mut proofs = real.to_vec();
    proofs.extend(random_proofs(MIN_PROOFS.saturating_sub(real.len())));
    proofs.sort_unstable();
    proofs
}

// ---------------------------------------------------------------------------------------------
// The victim
// ---------------------------------------------------------------------------------------------

/// A loopback node in G (its own three entries and two of another member) and G2 (one entry
/// of its own), with default limits (so a `Prove` of [`MAX_PROOFS`] proofs fits one frame).
struct Victim {
    _dir: tempfile::TempDir,
    node: Node,
    /// The frame limit it announces in its `Hello`.
    max_frame: usize,
    g: GroupKeys,
    g2: GroupKeys,
    /// G's frontier as the node holds it: author, highest seq.
    frontier: BTreeMap<Id32, u64>,
}

impl Victim {
    /// Opens the victim. The second author's entries come from a real member that syncs them
    /// over and shuts down, so the victim's G frontier names two authors.
    async fn open() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::loopback(dir.path());
        let max_frame = config.max_frame_bytes;
        let node = Node::open(config).await.expect("open the victim");
        let (g, g2) = (g_keys(), g2_keys());
        let gi = node.join_passphrase(PASS, GROUP).await.unwrap();
        let g2i = node.join_passphrase(G2_PASS, G2_NAME).await.unwrap();
        assert_eq!(gi.group_id, g.id, "the test derives G as the node does");
        assert_eq!(g2i.group_id, g2.id, "the test derives G2 as the node does");
        for i in 0..3 {
            node.publish(&g.id, format!("victim-{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        node.publish(&g2.id, b"only in G2", None).await.unwrap();

        let other_dir = tempfile::tempdir().unwrap();
        let other = open(other_dir.path()).await;
        other.join_passphrase(PASS, GROUP).await.unwrap();
        for i in 0..2 {
            other
                .publish(&g.id, format!("other-{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        connect(&other, &node).await;
        wait_for_count(&node, &g.id, 5, 20).await;
        other.shutdown().await.unwrap();

        let mut frontier = BTreeMap::new();
        for e in all_entries(&node, &g.id).await {
            let seq = frontier.entry(*e.meta.author.as_bytes()).or_insert(0);
            *seq = e.meta.seq.max(*seq);
        }
        assert_eq!(
            frontier,
            BTreeMap::from([
                (*node.node_id().as_bytes(), 3),
                (*other.node_id().as_bytes(), 2)
            ]),
            "G's frontier names the victim and the other member"
        );
        Self {
            _dir: dir,
            node,
            max_frame,
            g,
            g2,
            frontier,
        }
    }

    /// The victim's node id.
    fn id(&self) -> EndpointId {
        self.node.node_id()
    }

    /// Byte for byte, the frame the node's `Hello` must be: this build's versions and
    /// features and the configured frame limit, nothing that depends on the node's groups.
    fn expected_hello(&self) -> Vec<u8> {
        let mut features: Vec<String> = FEATURES.iter().map(|f| f.to_string()).collect();
        features.push(format!("{MAX_FRAME_FEATURE}{}", self.max_frame));
        frame::encode(&Message::Hello {
            version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
            features,
        })
        .unwrap()
    }

    /// What the node must not show a peer that proved nothing: its own id and the other
    /// author of G's frontier (the authors of both heads), and for each group what
    /// [`group_secrets`] lists.
    fn secrets(&self, peer: &RawPeer) -> Vec<(String, Id32)> {
        let mut out = vec![("the victim's node id".to_string(), *self.id().as_bytes())];
        for author in self.frontier.keys().filter(|a| *a != self.id().as_bytes()) {
            out.push(("the other member's author id".to_string(), *author));
        }
        out.extend(group_secrets("G", &self.g, self.id(), peer));
        out.extend(group_secrets("G2", &self.g2, self.id(), peer));
        out
    }

    /// Whether the node has a live session with `peer`.
    async fn has_session(&self, peer: EndpointId) -> bool {
        self.node
            .status()
            .await
            .unwrap()
            .connected_peers
            .contains(&peer)
    }

    /// Waits until the node no longer lists a session with `peer`.
    async fn wait_session_gone(&self, peer: EndpointId) {
        wait_until(
            REACT_SECS,
            "the victim to drop the peer's session",
            || async move { !self.has_session(peer).await },
        )
        .await;
    }

    /// Asserts the session with `peer` is still up on both ends: the node did not close the
    /// connection or finish its stream, and it still lists the peer.
    async fn assert_session_up(&self, peer: &RawPeer, got: &Capture, context: &str) {
        assert_eq!(got.end, StreamEnd::Open, "{context}: the node's stream");
        assert!(
            peer.conn.close_reason().is_none(),
            "{context}: the connection was closed: {:?}",
            peer.conn.close_reason()
        );
        assert!(
            self.has_session(peer.id()).await,
            "{context}: the node still lists the session"
        );
    }
}

/// What a group must not show a peer that has not proved it: its id, the name its entry
/// headers carry, its session tag between the node `node` and `peer`, and both sides'
/// membership proofs for this session (the node must neither prove first nor hand out the
/// proof a member would send).
fn group_secrets(
    name: &str,
    keys: &GroupKeys,
    node: EndpointId,
    peer: &RawPeer,
) -> Vec<(String, Id32)> {
    let pair = keys.pair(peer.id().as_bytes(), node.as_bytes());
    let binding = session_binding(&peer.conn);
    vec![
        (format!("{name}'s group id"), keys.id.0),
        (format!("{name}'s entry-header name"), keys.entry_group),
        (format!("{name}'s session tag for this pair"), pair.tag.0),
        (
            format!("{name}'s acceptor proof for this session"),
            pair.proof(ProofRole::Acceptor, &binding),
        ),
        (
            format!("{name}'s dialer proof for this session"),
            pair.proof(ProofRole::Dialer, &binding),
        ),
    ]
}

/// `peer`'s correct membership proof of the group of `keys` to `node` in this session, as
/// the dialer gives it (or as `role` would, to test the wrong one).
fn proof_of(keys: &GroupKeys, node: EndpointId, peer: &RawPeer, role: ProofRole) -> Id32 {
    keys.pair(peer.id().as_bytes(), node.as_bytes())
        .proof(role, &session_binding(&peer.conn))
}

// ---------------------------------------------------------------------------------------------
// Raw peers and what they receive
// ---------------------------------------------------------------------------------------------

/// A fresh loopback endpoint with a random identity: a peer the victim never met.
async fn fresh_endpoint() -> Endpoint {
    common::loopback_endpoint(SecretKey::generate()).await
}

/// Connects to the victim from `endpoint` with no group named (frames go out and come back
/// exactly as written and read), says `Hello` announcing no features (so the node has no
/// reason to send even a keepalive `Ping` during a capture) and sends `Prove` with `proofs`.
async fn hello_and_prove(endpoint: Endpoint, v: &Victim, proofs: Vec<Id32>) -> RawPeer {
    let mut peer = RawPeer::connect_on(endpoint, &v.node, None).await;
    peer.send(&hello_message(&[])).await;
    peer.send(&Message::Prove { proofs }).await;
    peer
}

/// How the node's half of the stream stood when a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    /// Still open: the node went quiet.
    Open,
    /// The node finished its half.
    Finished,
    /// The stream was reset or the connection closed.
    Lost,
}

/// Every byte the node wrote on the stream during a capture, as it arrived.
#[derive(Debug)]
struct Capture {
    bytes: Vec<u8>,
    end: StreamEnd,
}

/// One whole frame of a capture: its bytes (length prefix included) and what they decode to.
#[derive(Debug)]
struct Frame {
    bytes: Vec<u8>,
    message: Message,
}

/// How many whole frames `bytes` begins with (a partial one at the end is not counted).
fn whole_frames(bytes: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while let Some(prefix) = bytes.get(at..at + LENGTH_PREFIX) {
        let len = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
        if bytes.len() < at + LENGTH_PREFIX + len {
            break;
        }
        at += LENGTH_PREFIX + len;
        n += 1;
    }
    n
}

impl Capture {
    /// The capture split into frames; panics if it is not a sequence of whole, decodable
    /// frames (a node that sends garbage or stops mid-frame fails the test).
    fn frames(&self) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut rest = self.bytes.as_slice();
        while !rest.is_empty() {
            assert!(
                rest.len() >= LENGTH_PREFIX,
                "a partial length prefix at the end"
            );
            let prefix: [u8; LENGTH_PREFIX] = rest[..LENGTH_PREFIX].try_into().unwrap();
            let len = frame::frame_len(prefix, 16 << 20).expect("a sane frame length");
            let whole = LENGTH_PREFIX + len;
            assert!(rest.len() >= whole, "a partial frame at the end");
            let message = frame::decode(&rest[LENGTH_PREFIX..whole]).expect("a decodable frame");
            out.push(Frame {
                bytes: rest[..whole].to_vec(),
                message,
            });
            rest = &rest[whole..];
        }
        out
    }

    /// The variant of each frame, in order: what a failed assertion shows.
    fn kinds(&self) -> Vec<&'static str> {
        self.frames().iter().map(|f| kind(&f.message)).collect()
    }
}

/// A message's variant name.
fn kind(message: &Message) -> &'static str {
    match message {
        Message::Hello { .. } => "Hello",
        Message::Frontier { .. } => "Frontier",
        Message::Entries { .. } => "Entries",
        Message::Announce { .. } => "Announce",
        Message::Refuse { .. } => "Refuse",
        Message::Ack { .. } => "Ack",
        Message::Ping { .. } => "Ping",
        Message::Pong { .. } => "Pong",
        Message::Prove { .. } => "Prove",
    }
}

/// Reads the raw stream until `want` whole frames arrived (within [`ARRIVAL`]), then on
/// until the node is quiet for [`QUIET`] or ends the stream. Reading on after the expected
/// frames is the point: whatever the node sends besides them is captured too.
async fn capture(peer: &mut RawPeer, want: usize) -> Capture {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + ARRIVAL;
    loop {
        let arrived = whole_frames(&bytes) >= want;
        let wait = if arrived {
            QUIET
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match tokio::time::timeout(wait, peer.recv.read(&mut buf)).await {
            Err(_) => {
                // Quiet: the capture is over (or the expected frames never came, which the
                // caller's assertions on the frames report with what did come).
                return Capture {
                    bytes,
                    end: StreamEnd::Open,
                };
            }
            Ok(Ok(Some(n))) => bytes.extend_from_slice(&buf[..n]),
            Ok(Ok(None)) => {
                return Capture {
                    bytes,
                    end: StreamEnd::Finished,
                };
            }
            Ok(Err(_)) => {
                return Capture {
                    bytes,
                    end: StreamEnd::Lost,
                };
            }
        }
    }
}

/// The names of those `secrets` of which some run of [`LEAK_WINDOW`] bytes appears in
/// `bytes`, each with where (for failure messages): the one detector every case uses, so
/// the positive cases also show it finds what a real answer carries.
fn leaks(bytes: &[u8], secrets: &[(String, Id32)]) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for (name, secret) in secrets {
        for (at, run) in secret.windows(LEAK_WINDOW).enumerate() {
            if let Some(offset) = bytes.windows(LEAK_WINDOW).position(|w| w == run) {
                let end = at + LEAK_WINDOW;
                found.insert(
                    name.clone(),
                    format!("its bytes {at}..{end} at offset {offset}"),
                );
                break;
            }
        }
    }
    found
}

/// Asserts that no run of [`LEAK_WINDOW`] bytes of any of `secrets` appears in `bytes`.
fn assert_no_leak(bytes: &[u8], secrets: &[(String, Id32)], context: &str) {
    let found = leaks(bytes, secrets);
    assert!(
        found.is_empty(),
        "{context}: the peer received bytes of {found:?}"
    );
}

/// Asserts the peer received the node's `Hello` and nothing else: exactly one frame, equal
/// byte for byte to [`Victim::expected_hello`], holding none of the victim's secrets.
fn assert_only_hello(v: &Victim, peer: &RawPeer, got: &Capture, context: &str) {
    assert_eq!(got.kinds(), ["Hello"], "{context}: what the node sent");
    assert_eq!(
        got.bytes,
        v.expected_hello(),
        "{context}: the received bytes are exactly the group-independent Hello"
    );
    assert_no_leak(&got.bytes, &v.secrets(peer), context);
}

/// Asserts `frames` are the node's answer to a valid proof of G and nothing else: its own
/// `Prove` (padded to [`MIN_PROOFS`], sorted, holding its acceptor proof of G for this
/// session and none of G2) and G's `Frontier` under this pair's tag with exactly the heads
/// the victim holds. Proving G opens G alone: nothing of G2 is in the bytes.
fn assert_g_opened(v: &Victim, peer: &RawPeer, frames: &[Frame], context: &str) {
    let kinds: Vec<_> = frames.iter().map(|f| kind(&f.message)).collect();
    assert_eq!(kinds, ["Prove", "Frontier"], "{context}: the node's answer");
    let pair = v.g.pair(peer.id().as_bytes(), v.id().as_bytes());
    let Message::Prove { proofs } = &frames[0].message else {
        unreachable!()
    };
    assert_eq!(
        proofs.len(),
        MIN_PROOFS,
        "{context}: one real proof, padded"
    );
    assert!(
        proofs.windows(2).all(|w| w[0] < w[1]),
        "{context}: sorted and distinct, so position tells nothing"
    );
    assert!(
        proofs.contains(&proof_of(&v.g, v.id(), peer, ProofRole::Acceptor)),
        "{context}: the node proves G for this session, as the acceptor"
    );
    let Message::Frontier { group, heads } = &frames[1].message else {
        unreachable!()
    };
    assert_eq!(*group, pair.tag.0, "{context}: G by this pair's tag");
    let heads: BTreeMap<Id32, u64> = heads.iter().map(|h: &Head| (h.author, h.seq)).collect();
    assert_eq!(heads, v.frontier, "{context}: G's frontier, both authors");
    // Of everything kept to members, the answer carries exactly what opening G takes: both
    // authors of its heads, its tag and the node's proof; not G's id or entry-header name, not
    // the peer's own proof echoed, nothing of G2. (This also shows the detector the
    // Hello-only cases rely on finds these values in a real stream.)
    let answer: Vec<u8> = frames.iter().flat_map(|f| f.bytes.clone()).collect();
    let found: Vec<String> = leaks(&answer, &v.secrets(peer)).into_keys().collect();
    assert_eq!(
        found,
        [
            "G's acceptor proof for this session",
            "G's session tag for this pair",
            "the other member's author id",
            "the victim's node id",
        ],
        "{context}: what the answer to a proof of G reveals"
    );
}

/// Asserts the node refused the session for a protocol violation after the `Hello`: the
/// capture is the `Hello` then a `Refuse` of code 2 naming the proof limit, the node ended the
/// stream, closes the connection and drops the session; nothing secret is in the bytes.
async fn assert_refused_for_proofs(v: &Victim, peer: &RawPeer, got: &Capture, context: &str) {
    let frames = got.frames();
    let kinds: Vec<_> = frames.iter().map(|f| kind(&f.message)).collect();
    assert_eq!(kinds.last(), Some(&"Refuse"), "{context}: {kinds:?}");
    let Message::Refuse { code, reason } = &frames.last().unwrap().message else {
        unreachable!()
    };
    assert_eq!(
        *code,
        RefuseCode::ProtocolViolation as u16,
        "{context}: refuse code (reason: {reason})"
    );
    assert!(
        reason.contains(&MAX_PROOFS.to_string()),
        "{context}: the reason names the limit: {reason}"
    );
    assert_ne!(
        got.end,
        StreamEnd::Open,
        "{context}: the node ended the stream"
    );
    assert_no_leak(&got.bytes, &v.secrets(peer), context);
    peer.expect_closed(Duration::from_secs(REACT_SECS)).await;
    v.wait_session_gone(peer.id()).await;
}

// ---------------------------------------------------------------------------------------------
// 1. A stranger
// ---------------------------------------------------------------------------------------------

/// A stranger (no group keys) says hello and sends four random proofs: it receives the
/// node's `Hello`, byte for byte the group-independent one, and nothing else. The node keeps
/// the session open (it does not close on unmatched proofs, which would itself say they
/// were checked against something); the test asserts it is still up on both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_learns_only_the_hello() {
    let v = Victim::open().await;
    let mut peer = hello_and_prove(fresh_endpoint().await, &v, random_proofs(MIN_PROOFS)).await;
    let got = capture(&mut peer, 1).await;
    assert_only_hello(&v, &peer, &got, "stranger");
    v.assert_session_up(&peer, &got, "stranger").await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 2. A member of another group
// ---------------------------------------------------------------------------------------------

/// A member of H (a group the victim is not in) proves H correctly for its real session: it
/// receives only the `Hello`, and the session stays up. Then the victim joins H mid-session:
/// the proof it already holds now matches, so the node proves H and announces it (empty
/// heads), which shows the proof was valid all along; and still nothing of G or G2 arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_group_learns_only_the_hello() {
    let v = Victim::open().await;
    let h = h_keys();
    let mut peer = RawPeer::connect_on(fresh_endpoint().await, &v.node, None).await;
    let proof = proof_of(&h, v.id(), &peer, ProofRole::Dialer);
    peer.send(&hello_message(&[])).await;
    peer.send(&Message::Prove {
        proofs: padded(&[proof]),
    })
    .await;
    let got = capture(&mut peer, 1).await;
    assert_only_hello(&v, &peer, &got, "member of H");
    v.assert_session_up(&peer, &got, "member of H").await;

    // The positive side: once the victim is in H, H is what the pair shares.
    let joined = v.node.join_passphrase(H_PASS, H_NAME).await.unwrap();
    assert_eq!(joined.group_id, h.id);
    let got = capture(&mut peer, 2).await;
    let frames = got.frames();
    let kinds: Vec<_> = frames.iter().map(|f| kind(&f.message)).collect();
    assert_eq!(kinds, ["Prove", "Announce"], "after joining H");
    let Message::Prove { proofs } = &frames[0].message else {
        unreachable!()
    };
    assert_eq!(proofs.len(), MIN_PROOFS, "one real proof, padded");
    assert!(proofs.contains(&proof_of(&h, v.id(), &peer, ProofRole::Acceptor)));
    let tag = h.pair(peer.id().as_bytes(), v.id().as_bytes()).tag.0;
    assert_eq!(
        frames[1].message,
        Message::Announce {
            group: tag,
            heads: vec![]
        },
        "H announced under this pair's tag, with no heads yet"
    );
    assert_no_leak(&got.bytes, &v.secrets(&peer), "after joining H");
    v.assert_session_up(&peer, &got, "after joining H").await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 3. A replayed proof
// ---------------------------------------------------------------------------------------------

/// A member of G proves it on session 1 and gets the node's `Prove` and G's `Frontier` (the
/// positive side). Its proof bytes, sent again on session 2 from the same identity (a fresh
/// connection, so a fresh binding), get only the `Hello`; the correct proof for session 2
/// still opens G there (so it was the replay that was refused, not the session). The same
/// bytes from another identity get only the `Hello` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_proof_opens_nothing() {
    let v = Victim::open().await;
    let endpoint = fresh_endpoint().await;

    let mut first = RawPeer::connect_on(endpoint.clone(), &v.node, None).await;
    let old_binding = session_binding(&first.conn);
    let old_proof = proof_of(&v.g, v.id(), &first, ProofRole::Dialer);
    first.send(&hello_message(&[])).await;
    first
        .send(&Message::Prove {
            proofs: padded(&[old_proof]),
        })
        .await;
    let got = capture(&mut first, 3).await;
    let frames = got.frames();
    assert_eq!(frames[0].bytes, v.expected_hello(), "session 1: the Hello");
    assert_g_opened(&v, &first, &frames[1..], "session 1");
    v.assert_session_up(&first, &got, "session 1").await;
    // A second connection from the same identity is refused as a duplicate while the first
    // is up, so the first is closed and gone before the second is made.
    first.conn.close(0u32.into(), b"next session");
    v.wait_session_gone(endpoint.id()).await;

    let mut second = hello_and_prove(endpoint.clone(), &v, padded(&[old_proof])).await;
    assert_ne!(
        session_binding(&second.conn),
        old_binding,
        "a new connection exports a new binding (else this case proves nothing)"
    );
    let fresh_proof = proof_of(&v.g, v.id(), &second, ProofRole::Dialer);
    assert_ne!(fresh_proof, old_proof);
    let got = capture(&mut second, 1).await;
    assert_only_hello(&v, &second, &got, "session 2, replayed proof");
    v.assert_session_up(&second, &got, "session 2, replayed proof")
        .await;
    second
        .send(&Message::Prove {
            proofs: vec![fresh_proof],
        })
        .await;
    let got = capture(&mut second, 2).await;
    assert_g_opened(&v, &second, &got.frames(), "session 2, its own proof");

    // The same bytes from another identity: another pair, another binding.
    let mut other = hello_and_prove(fresh_endpoint().await, &v, padded(&[old_proof])).await;
    let got = capture(&mut other, 1).await;
    assert_only_hello(&v, &other, &got, "another identity, replayed proof");
    v.assert_session_up(&other, &got, "another identity, replayed proof")
        .await;

    second.close().await;
    other.close().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 4. A proof for the wrong role
// ---------------------------------------------------------------------------------------------

/// On a connection the peer dialed, the node never proves first, so there is nothing to
/// reflect. What a peer could still try is the acceptor's proof (right keys, right binding,
/// wrong role, which is also exactly the value the node itself would send): it gets only the
/// `Hello`. The dialer's proof on the same session then opens G, so the keys and binding were
/// right and only the role was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_for_the_wrong_role_opens_nothing() {
    let v = Victim::open().await;
    let mut peer = RawPeer::connect_on(fresh_endpoint().await, &v.node, None).await;
    let wrong = proof_of(&v.g, v.id(), &peer, ProofRole::Acceptor);
    let right = proof_of(&v.g, v.id(), &peer, ProofRole::Dialer);
    assert_ne!(wrong, right, "the role is part of the proof");
    peer.send(&hello_message(&[])).await;
    peer.send(&Message::Prove {
        proofs: padded(&[wrong]),
    })
    .await;
    let got = capture(&mut peer, 1).await;
    assert_only_hello(&v, &peer, &got, "acceptor's proof from the dialer");
    v.assert_session_up(&peer, &got, "acceptor's proof from the dialer")
        .await;

    peer.send(&Message::Prove {
        proofs: vec![right],
    })
    .await;
    let got = capture(&mut peer, 2).await;
    assert_g_opened(
        &v,
        &peer,
        &got.frames(),
        "dialer's proof after the wrong one",
    );
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 5. MAX_PROOFS
// ---------------------------------------------------------------------------------------------

/// Both sides of the per-session bound. A peer sends `MAX_PROOFS - 1` random proofs over
/// several frames (only the `Hello` comes back) and then its one correct proof, the
/// `MAX_PROOFS`th: the session is kept and G opens. One proof more, in a frame of its own, is
/// refused with a `Refuse` of code 2 (`ProtocolViolation`) and the session ends. Another peer
/// sends `MAX_PROOFS + 1` proofs in one frame, the last of them its correct proof of G: the
/// frame is refused before any proof counts, so it gets the `Hello` and the `Refuse` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_proofs_are_kept_and_one_more_is_refused() {
    let v = Victim::open().await;

    let mut peer = RawPeer::connect_on(fresh_endpoint().await, &v.node, None).await;
    peer.send(&hello_message(&[])).await;
    let noise = random_proofs(MAX_PROOFS - 1);
    for chunk in noise.chunks(PROOFS_PER_FRAME) {
        peer.send(&Message::Prove {
            proofs: chunk.to_vec(),
        })
        .await;
    }
    let got = capture(&mut peer, 1).await;
    assert_only_hello(&v, &peer, &got, "MAX_PROOFS - 1 random proofs");
    v.assert_session_up(&peer, &got, "MAX_PROOFS - 1 random proofs")
        .await;
    let right = proof_of(&v.g, v.id(), &peer, ProofRole::Dialer);
    peer.send(&Message::Prove {
        proofs: vec![right],
    })
    .await;
    let got = capture(&mut peer, 2).await;
    assert_g_opened(&v, &peer, &got.frames(), "the MAX_PROOFSth proof");
    v.assert_session_up(&peer, &got, "the MAX_PROOFSth proof")
        .await;
    peer.send(&Message::Prove {
        proofs: random_proofs(1),
    })
    .await;
    let got = capture(&mut peer, 1).await;
    assert_eq!(got.kinds(), ["Refuse"], "one proof past the limit");
    assert_refused_for_proofs(&v, &peer, &got, "one proof past the limit").await;
    peer.close().await;

    let mut peer = RawPeer::connect_on(fresh_endpoint().await, &v.node, None).await;
    let mut proofs = random_proofs(MAX_PROOFS);
    proofs.push(proof_of(&v.g, v.id(), &peer, ProofRole::Dialer));
    let prove = Message::Prove { proofs };
    assert!(
        frame::encode(&prove).unwrap().len() <= v.max_frame,
        "the over-limit Prove fits one frame, so it is the count that is refused"
    );
    peer.send(&hello_message(&[])).await;
    peer.send(&prove).await;
    let got = capture(&mut peer, 2).await;
    assert_eq!(
        got.kinds(),
        ["Hello", "Refuse"],
        "MAX_PROOFS + 1 in one frame"
    );
    assert_eq!(got.frames()[0].bytes, v.expected_hello());
    assert_refused_for_proofs(&v, &peer, &got, "MAX_PROOFS + 1 in one frame").await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 6. Members still sync
// ---------------------------------------------------------------------------------------------

/// Two real nodes in G, one dialing the other, converge both ways and then push a live entry,
/// rejecting nothing. The dialed one is also in G2, which the other is not in: G2 stays its
/// own (the other neither holds nor refused anything of it, so none was sent). The time to
/// converge is printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_still_converge() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let g = a.join_passphrase(PASS, GROUP).await.unwrap().group_id;
    let g2 = a.join_passphrase(G2_PASS, G2_NAME).await.unwrap().group_id;
    assert_eq!(b.join_passphrase(PASS, GROUP).await.unwrap().group_id, g);
    for i in 0..3 {
        a.publish(&g, format!("a{i}").as_bytes(), None)
            .await
            .unwrap();
        b.publish(&g, format!("b{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    a.publish(&g2, b"a's other group", None).await.unwrap();

    let started = Instant::now();
    connect(&b, &a).await;
    wait_for_count(&a, &g, 6, 20).await;
    wait_for_count(&b, &g, 6, 20).await;
    println!("two members converged in {:?}", started.elapsed());
    let ids = |entries: Vec<covey_core::Entry>| {
        let mut ids: Vec<_> = entries
            .into_iter()
            .map(|e| (e.meta.entry_id, e.payload))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(all_entries(&a, &g).await),
        ids(all_entries(&b, &g).await),
        "both hold the same entries of G"
    );

    let live = a.publish(&g, b"live", None).await.unwrap();
    wait_until(REACT_SECS, "the live entry to reach b", || async {
        b.entry(&g, &live.entry_id).await.unwrap().is_some()
    })
    .await;

    assert_group_unknown(&b, &g2).await;
    for node in [&a, &b] {
        let c = counters(node).await;
        assert_eq!(
            (c.rejected_frames, c.rejected_entries),
            (0, 0),
            "the sync rejected nothing"
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Asserts `node` is not in `group`: it lists only other groups and cannot read it.
async fn assert_group_unknown(node: &Node, group: &GroupId) {
    assert!(
        node.groups()
            .await
            .unwrap()
            .iter()
            .all(|g| g.group_id != *group),
        "the node lists the group"
    );
    assert!(
        node.entries(group, 0, 10)
            .await
            .is_err_and(|e| e.kind() == ErrorKind::NotFound),
        "the node reads the group"
    );
}
