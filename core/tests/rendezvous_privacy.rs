//! What observers of group rendezvous learn (PROTOCOL.md, "What observers learn"), over real
//! iroh on loopback.
//!
//! The observer is a raw DHT node ([`RawHolder`]): a bare iroh endpoint speaking
//! `covey/dht/2` frame by frame, the only DHT node the members know. It answers like a holder
//! with no contacts, keeps the provider records it is sent, and logs every frame it receives
//! byte for byte, so the tests can look at exactly what a holder of rendezvous records is
//! given:
//!
//! - what a holder receives names neither member (id or address), nor the group, nor any
//!   group key, and the rendezvous frames carry no hints, while the same detector finds the
//!   member in its other DHT frames; two members still meet through it;
//! - two windows' records of one member share no provider and no bytes beyond fixed framing;
//! - a non-member given the rendezvous key finds records but learns no member and opens
//!   nothing; forged records are refused or ignored and counted, by a searching member and
//!   by a real node asked to hold them.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use covey_core::crypto::{Secret32, kdf};
use covey_core::dht::messages::{self, Message, Request, Response};
use covey_core::dht::record::{MAX_SEALED_BYTES, provider_key};
use covey_core::dht::{Key, ProviderRecord, RecordLimits};
use covey_core::group::rendezvous::{self, ASSOCIATED_DATA_LEN};
use covey_core::group::{GroupKeys, rendezvous_window};
use covey_core::node::DHT_ALPN;
use covey_core::{Node, NodeConfig};
use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr, EndpointId, SecretKey, TransportAddr};
use iroh_tickets::endpoint::EndpointTicket;

use common::hostile::now_ms;

/// The passphrase of a second group, for the non-member.
const OTHER_PASS: &str = "quartz lantern oboe migrate 7305 tundra";
/// Largest frame the raw holder reads (the driver's own limit is about 112 KiB).
const MAX_FRAME: usize = 128 * 1024;

// ---------------------------------------------------------------------------------------------
// The raw holder
// ---------------------------------------------------------------------------------------------

/// One frame the holder received.
#[derive(Debug, Clone)]
struct Received {
    /// The node id of the connection it came on (what the transport shows).
    from: EndpointId,
    /// The whole frame, as received: both lengths, the message and the hints.
    frame: Vec<u8>,
    /// The message, if it decoded.
    message: Option<Message>,
    /// Bytes of hints after the message.
    hint_len: usize,
}

#[derive(Debug, Default)]
struct HolderState {
    frames: Vec<Received>,
    /// Provider records sent to it, by key: one per provider, the latest expiry.
    held: HashMap<Key, Vec<ProviderRecord>>,
    /// Records it also answers with for a key, as a hostile holder would.
    planted: HashMap<Key, Vec<ProviderRecord>>,
}

/// A bare DHT node on a raw endpoint: see the module doc.
struct RawHolder {
    endpoint: Endpoint,
    state: Arc<Mutex<HolderState>>,
    task: tokio::task::JoinHandle<()>,
}

/// A DHT frame with no hints: `u32 BE frame length | u32 BE message length | message`.
fn frame_of(message: &[u8]) -> Vec<u8> {
    let mut out = ((4 + message.len()) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Splits a received frame into its message and its hint bytes.
fn split_frame(frame: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(frame.get(..4)?.try_into().ok()?) as usize;
    let rest = frame.get(4..)?;
    if rest.len() != len {
        return None;
    }
    let m = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let body = rest.get(4..)?;
    (m <= body.len()).then(|| body.split_at(m))
}

/// Writes `frame` on a new stream of `conn` and finishes it.
async fn send_frame(conn: &Connection, frame: &[u8]) {
    let (mut send, _recv) = conn.open_bi().await.expect("open a stream");
    send.write_all(frame).await.expect("write a frame");
    send.finish().expect("finish a stream");
}

impl RawHolder {
    async fn start() -> Self {
        let endpoint = common::loopback_endpoint(SecretKey::from_bytes(&[0x77; 32])).await;
        endpoint.set_alpns(vec![DHT_ALPN.to_vec()]);
        let state = Arc::new(Mutex::new(HolderState::default()));
        let task = tokio::spawn(Self::accept_loop(endpoint.clone(), state.clone()));
        Self {
            endpoint,
            state,
            task,
        }
    }

    async fn accept_loop(endpoint: Endpoint, state: Arc<Mutex<HolderState>>) {
        while let Some(incoming) = endpoint.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                // A node also dials its bootstrap peers over sync: that ALPN fails here.
                let Ok(conn) = incoming.await else {
                    return;
                };
                let from = conn.remote_id();
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let _ = send.finish();
                    let Ok(frame) = recv.read_to_end(MAX_FRAME).await else {
                        continue;
                    };
                    let reply = Self::receive(&state, from, frame);
                    if let Some(reply) = reply {
                        let bytes = messages::encode(&reply).expect("encode a reply");
                        send_frame(&conn, &frame_of(&bytes)).await;
                    }
                }
            });
        }
    }

    /// Logs `frame` and returns the answer of a holder with no contacts.
    fn receive(state: &Mutex<HolderState>, from: EndpointId, frame: Vec<u8>) -> Option<Message> {
        let (message, hint_len) = match split_frame(&frame) {
            Some((m, hints)) => (messages::decode(m).ok(), hints.len()),
            None => (None, 0),
        };
        let mut st = state.lock().unwrap();
        st.frames.push(Received {
            from,
            frame,
            message: message.clone(),
            hint_len,
        });
        let Some(Message::Request { id, body }) = message else {
            return None;
        };
        let body = match body {
            Request::Ping => Response::Pong,
            Request::FindNode { .. } => Response::Nodes { contacts: vec![] },
            Request::FindValue { .. } => Response::Value {
                record: None,
                contacts: vec![],
            },
            Request::Store { .. } => Response::Stored {
                accepted: false,
                refusal: Some(messages::Refusal::Full),
                held: None,
            },
            Request::AddProvider { record } => {
                let ok = record.validate(now_ms(), &RecordLimits::default()).is_ok();
                if ok {
                    let list = st.held.entry(Key(record.key)).or_default();
                    list.retain(|p| p.provider != record.provider);
                    list.push(record);
                }
                Response::ProviderAdded { accepted: ok }
            }
            Request::GetProviders { key } => {
                let mut providers = st.held.get(&key).cloned().unwrap_or_default();
                providers.extend(st.planted.get(&key).cloned().unwrap_or_default());
                providers.truncate(messages::MAX_PROVIDERS_PER_RESPONSE);
                Response::Providers {
                    providers,
                    contacts: vec![],
                }
            }
        };
        Some(Message::Response { id, body })
    }

    fn ticket(&self) -> String {
        EndpointTicket::new(self.endpoint.addr()).to_string()
    }

    fn frames(&self) -> Vec<Received> {
        self.state.lock().unwrap().frames.clone()
    }

    fn held(&self, key: &Key) -> Vec<ProviderRecord> {
        self.state
            .lock()
            .unwrap()
            .held
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    fn plant(&self, key: Key, records: Vec<ProviderRecord>) {
        self.state.lock().unwrap().planted.insert(key, records);
    }

    async fn close(self) {
        self.task.abort();
        self.endpoint.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A loopback node whose only bootstrap peer is the raw holder, searching every second.
async fn member_of(dir: &std::path::Path, holder: &RawHolder) -> Node {
    let mut config = NodeConfig::loopback(dir);
    config.bootstrap = vec![holder.ticket()];
    config.dht.rendezvous_interval_ms = 1_000;
    Node::open(config).await.expect("open a member")
}

fn endpoint_addr(ticket: &str) -> EndpointAddr {
    let ticket: EndpointTicket = ticket.parse().expect("a node's own ticket");
    ticket.endpoint_addr().clone()
}

/// Every way a node's socket addresses could appear in bytes: address and port big- and
/// little-endian, postcard's `SocketAddr` (address, then the port as a varint) and text.
fn address_encodings(addr: &EndpointAddr) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for ip in addr.ip_addrs() {
        let octets = match ip.ip() {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let port = ip.port();
        out.push((
            format!("{ip} BE"),
            [&octets[..], &port.to_be_bytes()].concat(),
        ));
        out.push((
            format!("{ip} LE"),
            [&octets[..], &port.to_le_bytes()].concat(),
        ));
        let postcard = postcard::to_stdvec(&TransportAddr::Ip(*ip)).unwrap();
        // The transport address's own tag byte is not part of the socket address.
        out.push((format!("{ip} postcard"), postcard[1..].to_vec()));
        out.push((format!("{ip} text"), ip.to_string().into_bytes()));
    }
    assert!(!out.is_empty(), "a loopback node has an IP address");
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The longest run of bytes found in both `a` and `b`.
fn longest_common_run(a: &[u8], b: &[u8]) -> usize {
    let mut best = 0;
    let mut prev = vec![0usize; b.len() + 1];
    for x in a {
        let mut row = vec![0usize; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            if x == y {
                row[j + 1] = prev[j] + 1;
                best = best.max(row[j + 1]);
            }
        }
        prev = row;
    }
    best
}

/// The address `record` seals, opened the way a member opens it, or why not.
fn open_record(keys: &GroupKeys, window: u64, record: &ProviderRecord) -> Option<EndpointAddr> {
    let ad = rendezvous::associated_data(&record.key, &record.provider, record.expires_at_ms);
    let plain = rendezvous::open(&keys.rendezvous_seal_key(window), &record.sealed, &ad).ok()?;
    postcard::from_bytes(&plain).ok()
}

fn group_keys(pass: &str) -> GroupKeys {
    GroupKeys::from_root(&kdf::passphrase_root(pass, common::GROUP).expect("group root"))
}

/// The rendezvous provider key of window `w` of the group of `keys`.
fn rendezvous_provider_key(keys: &GroupKeys, w: u64) -> Key {
    provider_key(&keys.rendezvous_key(w))
}

// ---------------------------------------------------------------------------------------------
// A holder of rendezvous records
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_learns_no_member_address_group_or_key_and_no_link_between_windows() {
    let holder = RawHolder::start().await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = member_of(da.path(), &holder).await;
    let b = member_of(db.path(), &holder).await;
    let keys = common::hostile::group_keys();
    let group = a
        .join_passphrase(common::PASS, common::GROUP)
        .await
        .unwrap();
    assert_eq!(group.group_id, keys.id);
    b.join_passphrase(common::PASS, common::GROUP)
        .await
        .unwrap();

    // (d) The members meet through the holder alone: it never names one to the other (its
    // answers have no contacts), so only the sealed addresses bring them together.
    a.publish(&group.group_id, b"met through a sealed address", None)
        .await
        .unwrap();
    common::wait_for_count(&b, &group.group_id, 1, 60).await;
    let (sa, sb) = (a.status().await.unwrap(), b.status().await.unwrap());
    assert!(sa.dht.rendezvous_found + sb.dht.rendezvous_found >= 1);
    assert_eq!(a.rendezvous_unopened() + b.rendezvous_unopened(), 0);

    // Both members' announcements of the current window, and A's of the next one (as A
    // would send them in the last ten minutes of this window).
    let w = rendezvous_window(now_ms());
    for node in [&a, &b] {
        assert!(node.rendezvous_announce(&group.group_id, w).await.unwrap() >= 1);
    }
    assert!(a.rendezvous_announce(&group.group_id, w + 1).await.unwrap() >= 1);

    let members = [
        (a.node_id(), endpoint_addr(&a.addr().await.unwrap())),
        (b.node_id(), endpoint_addr(&b.addr().await.unwrap())),
    ];
    // What must appear in nothing the rendezvous gives a holder.
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for (id, addr) in &members {
        secrets.push((
            format!("node id {}", id.fmt_short()),
            id.as_bytes().to_vec(),
        ));
        secrets.extend(address_encodings(addr));
    }
    secrets.push(("group id".into(), group.group_id.0.to_vec()));
    secrets.push((
        "rendezvous secret".into(),
        keys.rendezvous_secret.expose().to_vec(),
    ));
    for window in w - 1..=w + 2 {
        secrets.push((
            format!("rendezvous key {window}"),
            keys.rendezvous_key(window).to_vec(),
        ));
        secrets.push((
            format!("seal key {window}"),
            keys.rendezvous_seal_key(window).expose().to_vec(),
        ));
    }
    let rendezvous_keys: Vec<Key> = (w - 1..=w + 2)
        .map(|window| rendezvous_provider_key(&keys, window))
        .collect();

    // (a) Every frame the holder received about a rendezvous key: the announcements, the
    // node lookups that found where to put them, and the searches.
    let frames = holder.frames();
    let about_rendezvous = |m: &Message| match m {
        Message::Request { body, .. } => match body {
            Request::AddProvider { record } => rendezvous_keys.contains(&Key(record.key)),
            Request::GetProviders { key } | Request::FindNode { target: key } => {
                rendezvous_keys.contains(key)
            }
            _ => false,
        },
        Message::Response { .. } => false,
    };
    let rendezvous_frames: Vec<&Received> = frames
        .iter()
        .filter(|f| f.message.as_ref().is_some_and(about_rendezvous))
        .collect();
    let count = |pred: &dyn Fn(&Request) -> bool| {
        rendezvous_frames
            .iter()
            .filter(|f| matches!(&f.message, Some(Message::Request { body, .. }) if pred(body)))
            .count()
    };
    assert!(count(&|r| matches!(r, Request::AddProvider { .. })) >= 3);
    assert!(count(&|r| matches!(r, Request::GetProviders { .. })) >= 1);
    assert!(count(&|r| matches!(r, Request::FindNode { .. })) >= 1);
    for f in &rendezvous_frames {
        assert_eq!(f.hint_len, 0, "a rendezvous frame carries no hints: {f:?}");
        for (what, bytes) in &secrets {
            assert!(
                !contains(&f.frame, bytes),
                "a rendezvous frame from {} holds {what}",
                f.from.fmt_short()
            );
        }
    }
    // The same search finds the members in their other DHT frames (the join's lookup carries
    // the sender's address as a hint), so the check above could fail.
    for (id, addr) in &members {
        let other: Vec<&Received> = frames
            .iter()
            .filter(|f| f.from == *id && !rendezvous_frames.iter().any(|r| r.frame == f.frame))
            .collect();
        assert!(
            other.iter().any(|f| contains(&f.frame, id.as_bytes())
                && address_encodings(addr)
                    .iter()
                    .any(|(_, b)| contains(&f.frame, b))),
            "{}'s own hints name it in its non-rendezvous frames",
            id.fmt_short()
        );
        // What the holder does know: the connection's node id (transport level).
        assert!(rendezvous_frames.iter().any(|f| f.from == *id));
    }

    // (b) The records themselves: each opens (for a member) to its node, and no two of one
    // member's windows share a provider or anything beyond fixed framing.
    let record_of = |window: u64, node: &EndpointId| -> ProviderRecord {
        let mut found: Vec<ProviderRecord> = holder
            .held(&rendezvous_provider_key(&keys, window))
            .into_iter()
            .filter(|r| open_record(&keys, window, r).is_some_and(|addr| addr.id == *node))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one record of {} in window {window}",
            node.fmt_short()
        );
        found.remove(0)
    };
    let (a_now, a_next, b_now) = (
        record_of(w, &a.node_id()),
        record_of(w + 1, &a.node_id()),
        record_of(w, &b.node_id()),
    );
    assert_eq!(open_record(&keys, w, &a_now).unwrap(), members[0].1);
    let providers = [a_now.provider, a_next.provider, b_now.provider];
    for (i, p) in providers.iter().enumerate() {
        for (id, _) in &members {
            assert_ne!(p, id.as_bytes(), "a provider is a member's node id");
        }
        for q in &providers[i + 1..] {
            assert_ne!(p, q, "two records share a provider");
        }
    }
    assert_ne!(a_now.key, a_next.key);
    assert_ne!(
        a_now.expires_at_ms, a_next.expires_at_ms,
        "the expiries are jittered"
    );
    // A's two windows' records, as the holder has them, share no run of bytes longer than
    // what fixed framing and the time give: the expiry varints' high bytes (signed within a
    // second of each other), the sealed length and the signature's `40`.
    let (now_bytes, next_bytes) = (
        postcard::to_stdvec(&a_now).unwrap(),
        postcard::to_stdvec(&a_next).unwrap(),
    );
    let run = longest_common_run(&now_bytes, &next_bytes);
    assert!(
        run < 8,
        "A's records of two windows share a run of {run} bytes"
    );
    // Neither window's key opens the other window's record.
    assert!(open_record(&keys, w + 1, &a_now).is_none());
    assert!(open_record(&keys, w, &a_next).is_none());

    for node in [&a, &b] {
        node.shutdown().await.unwrap();
    }
    holder.close().await;
}

// ---------------------------------------------------------------------------------------------
// A non-member, and forged records
// ---------------------------------------------------------------------------------------------

/// A rendezvous record of window `w` made by `signer`, claiming `provider`, sealing `plain`
/// under `seal_key`.
fn forged(
    signer: &SecretKey,
    provider: [u8; 32],
    key: Key,
    expires: u64,
    seal_key: &Secret32,
    plain: &[u8],
) -> ProviderRecord {
    let ad: [u8; ASSOCIATED_DATA_LEN] = rendezvous::associated_data(&key.0, &provider, expires);
    let sealed = rendezvous::seal(seal_key, &[9; 24], &ad, plain).unwrap();
    let mut record = ProviderRecord::sign_sealed(signer, key, expires, sealed).unwrap();
    if record.provider != provider {
        // Signed by `signer`, claiming someone else: the signature no longer matches.
        record.provider = provider;
    }
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_member_opens_nothing_and_forged_records_are_ignored_and_counted() {
    let holder = RawHolder::start().await;
    let (da, dc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = member_of(da.path(), &holder).await;
    let c = member_of(dc.path(), &holder).await;
    let keys = common::hostile::group_keys();
    let other = group_keys(OTHER_PASS);
    let group = a
        .join_passphrase(common::PASS, common::GROUP)
        .await
        .unwrap();
    let c_group = c.join_passphrase(OTHER_PASS, common::GROUP).await.unwrap();
    assert_eq!(c_group.group_id, other.id);
    assert_ne!(c_group.group_id, group.group_id);

    // Both announce; A's record of this window reaches the holder.
    let w = rendezvous_window(now_ms());
    assert!(a.rendezvous_announce(&group.group_id, w).await.unwrap() >= 1);
    assert!(c.rendezvous_announce(&c_group.group_id, w).await.unwrap() >= 1);
    let key = rendezvous_provider_key(&keys, w);
    let a_identity = *keys
        .rendezvous_identity(w, a.node_id().as_bytes())
        .public()
        .as_bytes();
    let a_record = holder
        .held(&key)
        .into_iter()
        .find(|r| r.provider == a_identity)
        .expect("the holder has A's record");

    // (c) A non-member given the group's rendezvous key finds the record through the DHT, but
    // only its provider, which is not A.
    let found = c.dht_providers(&keys.rendezvous_key(w)).await.unwrap();
    assert_eq!(
        found.iter().map(|id| *id.as_bytes()).collect::<Vec<_>>(),
        vec![a_identity]
    );
    assert!(!found.contains(&a.node_id()));
    // And it cannot open what the record seals: not with its own group's key, nor with the
    // rendezvous key it was given, nor with a key made from the group id. A member can.
    let ad = rendezvous::associated_data(&a_record.key, &a_record.provider, a_record.expires_at_ms);
    for (what, guess) in [
        ("its own group's seal key", other.rendezvous_seal_key(w)),
        (
            "the rendezvous key",
            Secret32::from_bytes(keys.rendezvous_key(w)),
        ),
        ("the group id", Secret32::from_bytes(group.group_id.0)),
    ] {
        assert!(
            rendezvous::open(&guess, &a_record.sealed, &ad).is_err(),
            "{what} opens the record"
        );
    }
    assert!(open_record(&keys, w, &a_record).is_some_and(|addr| addr.id == a.node_id()));
    // The non-member's own rendezvous never met A, nor counted A's record.
    let sc = c.status().await.unwrap();
    assert_eq!(sc.dht.rendezvous_found, 0);
    assert!(!sc.connected_peers.contains(&a.node_id()));

    // Forgeries the holder serves to the non-member's own group (C is its only member). All
    // but the last are ignored; only the last, a well-formed record for a node that does not
    // exist, is a member found.
    let c_key = rendezvous_provider_key(&other, w);
    let seal = other.rendezvous_seal_key(w);
    let expires = now_ms() + 1_800_000;
    // Distinct signers: a search keeps one record per provider.
    let stranger = SecretKey::from_bytes(&[0x51; 32]);
    let outsider = SecretKey::from_bytes(&[0x52; 32]);
    let ghost = SecretKey::from_bytes(&[0x66; 32]).public();
    let ghost_addr = EndpointAddr::new(ghost).with_ip_addr(([127, 0, 0, 1], 9).into());
    let ghost_plain = postcard::to_stdvec(&ghost_addr).unwrap();
    let ghost_identity = other.rendezvous_identity(w, ghost.as_bytes());
    let ghost_provider = *ghost_identity.public().as_bytes();
    let plants = vec![
        // Signed by a stranger but claiming the ghost's identity: the DHT refuses it.
        forged(
            &stranger,
            ghost_provider,
            c_key,
            expires,
            &seal,
            &ghost_plain,
        ),
        // Signed correctly, but sealed under another group's key: does not open.
        forged(
            &stranger,
            *stranger.public().as_bytes(),
            c_key,
            expires,
            &keys.rendezvous_seal_key(w),
            &ghost_plain,
        ),
        // Opens, but its provider is not the identity of the node it seals.
        forged(
            &outsider,
            *outsider.public().as_bytes(),
            c_key,
            expires,
            &seal,
            &ghost_plain,
        ),
        // A's genuine record moved under this key: its signature covers its key.
        ProviderRecord {
            key: c_key.0,
            ..a_record.clone()
        },
        // Well formed: a member found (its address is a closed loopback port).
        forged(
            &ghost_identity,
            ghost_provider,
            c_key,
            expires,
            &seal,
            &ghost_plain,
        ),
    ];
    holder.plant(c_key, plants);
    common::wait_until(30, "the non-member's search sees the forgeries", || async {
        c.rendezvous_unopened() >= 2 && c.status().await.unwrap().dht.rendezvous_found >= 1
    })
    .await;
    // Several more searches: its own record and the forgeries are never found as members.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sc = c.status().await.unwrap();
    assert_eq!(
        sc.dht.rendezvous_found, 1,
        "only the well-formed record is a member"
    );
    let unopened = c.rendezvous_unopened();
    assert!(
        unopened >= 4 && unopened % 2 == 0,
        "two per search: {unopened}"
    );
    assert!(
        sc.dht.counters.invalid_records >= 2,
        "the forged signature and the moved record are refused: {:?}",
        sc.dht.counters
    );
    assert_eq!(
        a.rendezvous_unopened(),
        0,
        "A never sees the other group's records"
    );

    // A real node asked to hold forgeries: a raw peer it has never met sends it three
    // announcements of its own group's key.
    let raw = common::loopback_endpoint(SecretKey::from_bytes(&[0x42; 32])).await;
    let conn = raw
        .connect(endpoint_addr(&a.addr().await.unwrap()), DHT_ALPN)
        .await
        .unwrap();
    let before = a.status().await.unwrap().dht.counters;
    let raw_key = SecretKey::from_bytes(&[0x43; 32]);
    let at_bound =
        ProviderRecord::sign_sealed(&raw_key, key, expires, vec![0x5e; MAX_SEALED_BYTES]).unwrap();
    let mut over_bound = at_bound.clone();
    over_bound.sealed.push(0x5e);
    let mut other_signer = at_bound.clone();
    other_signer.provider = a_identity;
    for (id, record) in [(1u64, over_bound), (2, other_signer), (3, at_bound.clone())] {
        // Straight to postcard: the encoder would refuse the oversized one.
        let bytes = postcard::to_stdvec(&Message::Request {
            id,
            body: Request::AddProvider { record },
        })
        .unwrap();
        send_frame(&conn, &frame_of(&bytes)).await;
    }
    // A now knows the raw peer and may send it requests of its own on this connection too:
    // keep only the answers.
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while answers.len() < 2 {
        let (_send, mut recv) = tokio::time::timeout_at(deadline, conn.accept_bi())
            .await
            .expect("two answers within 10 s")
            .unwrap();
        let frame = recv.read_to_end(MAX_FRAME).await.unwrap();
        let (message, _) = split_frame(&frame).expect("a frame");
        let message = messages::decode(message).unwrap();
        if let Message::Response { id, .. } = message
            && (1..=3).contains(&id)
        {
            answers.push(message);
        }
    }
    answers.sort_by_key(|m| match m {
        Message::Response { id, .. } | Message::Request { id, .. } => *id,
    });
    assert_eq!(
        answers,
        vec![
            Message::Response {
                id: 2,
                body: Response::ProviderAdded { accepted: false }
            },
            Message::Response {
                id: 3,
                body: Response::ProviderAdded { accepted: true }
            },
        ],
        "the other signer is refused, the record at the bound is held, the one over is \
         never answered"
    );
    let after = a.status().await.unwrap().dht.counters;
    assert_eq!(
        after.undecodable,
        before.undecodable + 1,
        "one over the bound"
    );
    assert_eq!(
        after.invalid_records,
        before.invalid_records + 1,
        "the other signer"
    );

    raw.close().await;
    for node in [&a, &c] {
        node.shutdown().await.unwrap();
    }
    holder.close().await;
}
