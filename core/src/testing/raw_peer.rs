//! A bare iroh client that speaks `covey/sync/1` frame by frame to a real node: what the
//! hostile-peer, protection and version tests attack a node with, and what the drift test
//! replays a script through.
//!
//! It is a test harness, so a failed connect, write or expectation panics with what went
//! wrong (a failed test), the way `assert!` does; reads never panic and say what came
//! instead ([`Incoming`]).

use std::time::{Duration, Instant};

use iroh::endpoint::{Connection, ReadExactError, RecvStream, SendStream};
use iroh::{Endpoint, EndpointId, SecretKey};
use iroh_tickets::endpoint::EndpointTicket;

use super::loopback_endpoint;
use crate::error::{CoveyError, Result};
use crate::group::{GroupKeys, ProofRole};
use crate::node::{Node, SYNC_ALPN};
use crate::sync::driver::SESSION_BINDING_LABEL;
use crate::sync::session::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::wire::entry::Id32;
use crate::wire::frame::{self, LENGTH_PREFIX, Message};

/// How long a raw peer waits for one frame, a connect or a close unless told otherwise.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest frame a raw peer reads; past it the node is sending garbage.
const MAX_READ_FRAME: usize = 16 << 20;

/// What a raw peer read next.
#[derive(Debug)]
pub enum Incoming {
    /// A whole frame (the named group by its id, see [`RawPeer::connect`]).
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

/// A hello of this build's version range announcing `features`.
pub fn hello_message(features: &[&str]) -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        features: features.iter().map(|f| f.to_string()).collect(),
    }
}

/// Dials the sync protocol of the node behind `ticket` from `endpoint`, within
/// [`RECV_TIMEOUT`].
pub async fn dial_ticket(endpoint: &Endpoint, ticket: &EndpointTicket) -> Result<Connection> {
    tokio::time::timeout(
        RECV_TIMEOUT,
        endpoint.connect(ticket.endpoint_addr().clone(), SYNC_ALPN),
    )
    .await
    .map_err(|_| CoveyError::network("connect timed out"))?
    .map_err(|e| CoveyError::network(format!("connect: {e}")))
}

/// Dials `node`'s sync protocol from `endpoint`.
pub async fn dial(endpoint: &Endpoint, node: &Node) -> Result<Connection> {
    let ticket: EndpointTicket = node
        .addr()
        .await?
        .parse()
        .map_err(|e| CoveyError::invalid(format!("the node's own ticket: {e}")))?;
    dial_ticket(endpoint, &ticket).await
}

/// A group as a raw peer names it: by id in the test's messages, by the pair's session tag
/// on the wire.
#[derive(Debug, Clone, Copy)]
struct Naming {
    group: Id32,
    tag: Id32,
    /// Our membership proof of the group in this session (we dialed).
    proof: Id32,
    /// The node's proof of the group in this session (it accepted).
    node_proof: Id32,
}

/// The 32 bytes both ends of `conn` export to bind membership proofs to the session.
pub fn session_binding(conn: &Connection) -> Id32 {
    let mut binding = [0u8; 32];
    conn.export_keying_material(&mut binding, SESSION_BINDING_LABEL, b"")
        .unwrap_or_else(|e| panic!("exporting the session binding: {e:?}"));
    binding
}

/// A bare iroh client speaking `covey/sync/1` frame by frame on one bi-stream.
#[derive(Debug)]
pub struct RawPeer {
    /// The peer's own endpoint (closed by [`RawPeer::close`]).
    pub endpoint: Endpoint,
    /// The connection to the node.
    pub conn: Connection,
    /// Our half of the stream.
    pub send: SendStream,
    /// The node's half of the stream.
    pub recv: RecvStream,
    naming: Option<Naming>,
}

impl RawPeer {
    /// Connects to `node` from a fresh loopback endpoint with a random identity and opens a
    /// stream; sends nothing. Messages about the group of `keys` are written and read with
    /// its id; on the wire they carry the pair's session tag, as a real member's do.
    pub async fn connect(node: &Node, keys: &GroupKeys) -> Self {
        Self::connect_on(fresh_endpoint().await, node, Some(keys)).await
    }

    /// Connects from an existing endpoint (several connections may share it). With `keys`,
    /// names that group as [`RawPeer::connect`] does; without, frames go out and come back
    /// exactly as written and read.
    pub async fn connect_on(endpoint: Endpoint, node: &Node, keys: Option<&GroupKeys>) -> Self {
        let conn = dial(&endpoint, node)
            .await
            .unwrap_or_else(|e| panic!("dialing the node: {e}"));
        let (send, recv) = conn
            .open_bi()
            .await
            .unwrap_or_else(|e| panic!("opening the sync stream: {e}"));
        let binding = session_binding(&conn);
        let naming = keys.map(|keys| {
            let pair = keys.pair(endpoint.id().as_bytes(), node.node_id().as_bytes());
            Naming {
                group: keys.id.0,
                tag: pair.tag.0,
                proof: pair.proof(ProofRole::Dialer, &binding),
                node_proof: pair.proof(ProofRole::Acceptor, &binding),
            }
        });
        Self {
            endpoint,
            conn,
            send,
            recv,
            naming,
        }
    }

    /// This peer's endpoint id, as the node sees it.
    pub fn id(&self) -> EndpointId {
        self.endpoint.id()
    }

    /// The named group's session tag between this peer and the node (zeros if none).
    pub fn tag(&self) -> Id32 {
        self.naming.map_or([0; 32], |n| n.tag)
    }

    /// Our membership proof of the named group in this session (zeros if none): what a
    /// member that dialed sends in its opening `Prove`.
    pub fn proof(&self) -> Id32 {
        self.naming.map_or([0; 32], |n| n.proof)
    }

    /// Writes `bytes` to the stream as they are.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| CoveyError::network(format!("write: {e}")))
    }

    /// Writes `bytes` to the stream as they are; panics if the write fails.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send_raw(bytes).await {
            panic!("{e}");
        }
    }

    /// A message encoded as a real member would send it (the named group by its tag).
    pub fn encode(&self, message: &Message) -> Vec<u8> {
        let message = match self.naming {
            Some(n) => rename(message.clone(), n.group, n.tag),
            None => message.clone(),
        };
        frame::encode(&message).unwrap_or_else(|e| panic!("encoding {message:?}: {e}"))
    }

    /// Sends a message as [`RawPeer::encode`] encodes it.
    pub async fn try_send(&mut self, message: &Message) -> Result<()> {
        let bytes = self.encode(message);
        self.try_send_raw(&bytes).await
    }

    /// Sends a message as [`RawPeer::encode`] encodes it; panics if the write fails.
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
        if let Err(e) = self.send.finish() {
            panic!("finishing the stream: {e}");
        }
    }

    /// What arrives next within `timeout` (the named group by its id again).
    pub async fn next_within(&mut self, timeout: Duration) -> Incoming {
        let naming = self.naming;
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
            let len = match frame::frame_len(prefix, MAX_READ_FRAME) {
                Ok(len) => len,
                Err(e) => return Incoming::Bad(e.to_string()),
            };
            let mut body = vec![0u8; len];
            if let Err(e) = recv.read_exact(&mut body).await {
                return Incoming::Bad(format!("frame body: {e}"));
            }
            match frame::decode(&body) {
                Ok(m) => Incoming::Frame(match naming {
                    // The node's proof of the named group reads as the group's id, as the
                    // node reads ours.
                    Some(n) => match m {
                        Message::Prove { proofs } if proofs.contains(&n.node_proof) => {
                            Message::Prove {
                                proofs: vec![n.group],
                            }
                        }
                        m => rename(m, n.tag, n.group),
                    },
                    None => m,
                }),
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

    /// Every frame the node sends until it is quiet for `quiet` or ends the stream; panics
    /// on a frame that does not decode.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Message> {
        let mut frames = Vec::new();
        loop {
            match self.next_within(quiet).await {
                Incoming::Frame(m) => frames.push(m),
                Incoming::Bad(e) => panic!("node sent a bad frame: {e}"),
                Incoming::Ended | Incoming::Closed | Incoming::TimedOut => return frames,
            }
        }
    }

    /// The next frame, or `None` when the stream ended, closed or went quiet; panics on a
    /// frame that does not decode.
    pub async fn recv(&mut self) -> Option<Message> {
        match self.next().await {
            Incoming::Frame(m) => Some(m),
            Incoming::Bad(e) => panic!("node sent a bad frame: {e}"),
            _ => None,
        }
    }

    /// Expects the node's hello, which it sends first whatever we do, with this build's
    /// version range; returns the features it announced.
    pub async fn expect_hello(&mut self) -> Vec<String> {
        match self.recv().await {
            Some(Message::Hello {
                version,
                min_version,
                features,
            }) => {
                assert_eq!(version, PROTOCOL_VERSION);
                assert_eq!(min_version, MIN_PROTOCOL_VERSION);
                features
            }
            other => panic!("expected the node's hello, got {other:?}"),
        }
    }

    /// Says a hello announcing `features` (and, when a group is named, proves membership of
    /// it as a member that dialed does) and expects the node's hello back.
    pub async fn hello(&mut self, features: &[&str]) {
        self.send(&hello_message(features)).await;
        if let Some(n) = self.naming {
            self.send(&Message::Prove {
                proofs: vec![n.proof],
            })
            .await;
        }
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

    /// [`RawPeer::expect_refuse_within`] with [`RECV_TIMEOUT`].
    pub async fn expect_refuse(&mut self) -> (u16, String) {
        self.expect_refuse_within(RECV_TIMEOUT).await
    }

    /// Waits for the node to close the connection.
    pub async fn expect_closed(&self, within: Duration) {
        if tokio::time::timeout(within, self.conn.closed())
            .await
            .is_err()
        {
            panic!("the node did not close the connection within {within:?}");
        }
    }

    /// Reads frames until an `Entries` one of the named group, skipping the others.
    pub async fn expect_entries(&mut self) -> Vec<Vec<u8>> {
        let want = self.naming.map(|n| n.group);
        loop {
            match self.recv().await {
                Some(Message::Entries { group, entries }) => {
                    assert_eq!(Some(group), want, "entries of the named group");
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

/// A loopback endpoint with a random identity; panics if it cannot bind.
async fn fresh_endpoint() -> Endpoint {
    loopback_endpoint(SecretKey::generate())
        .await
        .unwrap_or_else(|e| panic!("binding a raw peer's endpoint: {e}"))
}

/// `message` with its group `from` renamed `to` (a message about another group, or about
/// none, passes as it is).
fn rename(message: Message, from: Id32, to: Id32) -> Message {
    message.map_group(|g| if g == from { to } else { g })
}
