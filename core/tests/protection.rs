//! Protection over real iroh connections on loopback: per-peer rate limits on frames and
//! bytes, the frame and handshake timeouts (the latter also for a peer that never opens its
//! stream), the keepalive failure detector, stream and connection bounds, refused frontiers
//! and acks past `MAX_SEQ`, claims past the node's own log that must not become receipts,
//! foreign-group entries, whole-log replays, redial after a peer comes back, and delivery
//! receipts between three nodes. Each case checks what the node reports (counters, `Warning` events, a `Refuse`
//! frame, a closed connection), that nothing it stored is lost, and, where it matters, that an
//! honest peer still syncs afterwards.
//!
//! Hostile peers are raw iroh clients speaking `covey/sync/1` frame by frame (the helpers in
//! `common/hostile.rs`, shared with `hostile_peer.rs`); timers and limits are shrunk through
//! `NodeConfig` so every case takes seconds.

mod common;

use std::time::{Duration, Instant};

use common::hostile::*;
use common::*;
use covey_core::sync::limits::RateLimits;
use covey_core::sync::session::MAX_SEQ;
use covey_core::testing::{
    Author, Incoming, RECV_TIMEOUT, RawPeer, dial, dial_ticket, hello_message, raws,
};
use covey_core::wire::frame::{self, Head, LENGTH_PREFIX, Message, RefuseCode};
use covey_core::{Entry, Event, Node, NodeConfig, SyncCounters, SyncState};
use iroh::{Endpoint, EndpointId, SecretKey};
use iroh_tickets::endpoint::EndpointTicket;

/// How long to wait for a node's reaction.
const REACT_SECS: u64 = 10;

/// A loopback victim with the small payload limit and whatever `tune` changes, whose
/// reactions are awaited for [`REACT_SECS`].
async fn victim(tune: impl FnOnce(&mut NodeConfig)) -> Victim {
    Victim::open(REACT_SECS, tune).await
}

/// Asserts that `warning` names `peer` by its short id.
fn assert_names(warning: &str, peer: EndpointId) {
    assert!(
        warning.contains(&peer.fmt_short().to_string()),
        "the warning names the peer {}: {warning}",
        peer.fmt_short()
    );
}

// ---------------------------------------------------------------------------------------------
// 1, 2. Rate limits
// ---------------------------------------------------------------------------------------------

/// Single-entry `Entries` frames of `author`'s next `n` entries, encoded for `peer`.
fn entry_frames(peer: &RawPeer, author: &mut Author, n: usize, size: usize) -> Vec<Vec<u8>> {
    author
        .batch(n, size)
        .unwrap()
        .into_iter()
        .map(|e| {
            peer.encode(&Message::Entries {
                group: author.group(),
                entries: vec![e.raw().to_vec()],
            })
        })
        .collect()
}

/// Sends `frames` one every `gap`, and expects them all stored without any being counted as
/// over the limit or any `rate-limited` warning.
async fn calm_peer_is_never_limited(v: &mut Victim, frames: usize, size: usize, gap: Duration) {
    let before = v.counters().await;
    let mut calm = session(v, &[]).await;
    let mut author = Author::random(&v.keys);
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

/// What a flood of `n` entries of `author` from `fast` must leave once all are stored: some
/// frames were held back, each counted once, and no counter moved but `rate_limited` and
/// `received` (by `n`); one `rate-limited` warning came, naming the peer; every entry of the
/// flood is there, once, in the author's order; and the session is still up. Closes `fast`.
async fn expect_flood_held_back(
    v: &mut Victim,
    before: &SyncCounters,
    fast: RawPeer,
    author: &Author,
    n: usize,
) {
    let after = v.counters().await;
    assert!(after.rate_limited > before.rate_limited, "{after:?}");
    assert!(
        after.rate_limited - before.rate_limited <= n as u64,
        "each held-back frame is counted once: {after:?}"
    );
    assert_eq!(
        plus(&after, |c| c.rate_limited = before.rate_limited),
        plus(before, |c| c.received += n as u64),
        "only received and rate_limited moved"
    );
    let events = v.events_for(200).await;
    let warned = warnings_of(&events, "rate-limited");
    assert_eq!(warned.len(), 1, "one warning per peer per 10 s: {events:?}");
    assert_names(warned[0], fast.id());
    let stored = v.assert_intact().await;
    let theirs: Vec<u64> = stored
        .iter()
        .filter(|e| e.meta.author == author.secret().public())
        .map(|e| e.meta.seq)
        .collect();
    assert_eq!(theirs, (1..=n as u64).collect::<Vec<_>>());
    fast.assert_alive();
    fast.close().await;
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
    let mut fast = session(&v, &[]).await;
    let mut author = Author::random(&v.keys);
    let frames = entry_frames(&fast, &mut author, n, 16);
    let took = flood(&mut v, &mut fast, &frames).await;
    // The burst passes at once, the rest at the sustained rate (the hello took one frame of
    // the burst, which refilled while the handshake ran, so count the whole burst as free).
    let floor = Duration::from_millis((n as u64 - burst as u64) * 1000 / per_sec as u64);
    assert!(
        took >= floor * 8 / 10,
        "{n} frames at {per_sec}/s (burst {burst}) took only {took:?}; expected at least ~{floor:?}"
    );
    expect_flood_held_back(&mut v, &before, fast, &author, n).await;
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
    let mut fast = session(&v, &[]).await;
    let mut author = Author::random(&v.keys);
    let frames = entry_frames(&fast, &mut author, n, LIMIT);
    let total: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert!(total > 2 * burst, "the flood must outlast the burst");
    let took = flood(&mut v, &mut fast, &frames).await;
    let floor = Duration::from_millis((total - burst) * 1000 / per_sec as u64);
    assert!(
        took >= floor * 8 / 10,
        "{total} bytes at {per_sec} B/s (burst {burst}) took only {took:?}; expected ~{floor:?}"
    );
    expect_flood_held_back(&mut v, &before, fast, &author, n).await;
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
    let good = v.good_peer(2).await;
    let before = v.counters().await;
    let mut staller = session(&v, &[]).await;
    // A length prefix promising 1000 bytes, then 10 of them, then nothing.
    let mut bytes = 1000u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 10]);
    let stalled_at = Instant::now();
    staller.send_raw(&bytes).await;

    // Meanwhile the victim serves an honest node, and the staller is still connected.
    v.syncs_with(&good).await;
    good.node.shutdown().await.unwrap();
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
    assert_names(&warning, staller.id());
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
    let mut peer = session(&v, &[]).await;
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
    let mut author = Author::random(&v.keys);
    let batch = author.batch(3, 32).unwrap();
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
    let mut peer = RawPeer::connect_on(endpoint, node, Some(&group_keys())).await;
    peer.send(&hello_message(&[])).await;
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
            let conn = dial_ticket(&endpoint, &ticket).await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let hello = frame::encode(&hello_message(&[])).unwrap();
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

/// Whether some group went into `CatchingUp` among `events`.
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
        let mut peer = session(&v, &[]).await;
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
    let mut peer = session(&v, &[]).await;
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
    let mut peer = session(&v, &[]).await;
    let mut author = Author::random(&v.keys);
    let entry = author.next(b"promised").unwrap();
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
        let mut peer = session(&v, &[]).await;
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
    let mut peer = session(&v, &[]).await;
    let foreign = foreign_keys();
    let mut stranger = Author::random(&foreign);
    let batch = stranger.batch(5, 32).unwrap();
    // Named by the foreign group's own id: a group the victim does not know.
    peer.entries(foreign.id.0, raws(&batch)).await;
    let warning = v.warning("rejected-entry").await;
    assert!(warning.contains("not-in-group x5"), "{warning}");
    // Smuggled under the victim's own group tag: each entry names its real group.
    let more = stranger.batch(3, 32).unwrap();
    peer.entries(v.group.0, raws(&more)).await;
    let warning = v.warning("rejected-entry").await;
    assert!(warning.contains("wrong-group x3"), "{warning}");
    // A frontier for the foreign group is none of the victim's business: no answer.
    peer.send(&Message::Frontier {
        group: foreign.id.0,
        heads: vec![Head {
            author: stranger.id(),
            seq: stranger.seq(),
        }],
    })
    .await;
    v.expect_counters(plus(&before, |c| c.rejected_entries += 8))
        .await;
    v.assert_intact().await;
    for e in batch.iter().chain(&more) {
        assert!(!v.has(e).await);
    }
    v.assert_no_group(&foreign.id).await;
    assert_eq!(v.node.groups().await.unwrap().len(), 1);
    // The session goes on: a valid entry afterwards is stored.
    peer.assert_alive();
    let good = Author::random(&v.keys).next(b"after the strays").unwrap();
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
    let mut peer = RawPeer::connect(&v.node, &v.keys).await;
    // With `acks`, the victim tells the peer what it stored, so re-sending it is a replay.
    peer.hello(&["acks"]).await;
    let mut author = Author::random(&v.keys);
    let own = author.batch(20, 64).unwrap();
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
    let next = author.next(b"after the replay").unwrap();
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

/// The handshake timeout of [`handshake_victim`].
const HANDSHAKE: Duration = Duration::from_millis(1000);

/// A victim that drops a peer which has not said hello within [`HANDSHAKE`].
async fn handshake_victim() -> Victim {
    victim(|c| c.timers.handshake_timeout_ms = HANDSHAKE.as_millis() as u64).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_says_hello_is_dropped_after_the_handshake_timeout() {
    let mut v = handshake_victim().await;
    let before = v.counters().await;
    let mut peer = RawPeer::connect(&v.node, &v.keys).await;
    // Two bytes of a length prefix: the stream is open and seen, no hello ever comes.
    let started = Instant::now();
    peer.send_raw(&[0, 0]).await;
    match peer.next_within(RECV_TIMEOUT).await {
        Incoming::Frame(Message::Hello { .. }) => {}
        other => panic!("expected the node's hello, got {other:?}"),
    }
    peer.expect_closed(HANDSHAKE + Duration::from_secs(REACT_SECS))
        .await;
    let held = started.elapsed();
    assert!(
        held >= HANDSHAKE,
        "dropped after {held:?}, before the handshake timeout"
    );
    let warning = v.warning("handshake-timeout").await;
    assert!(warning.contains("1000 ms"), "{warning}");
    assert_names(&warning, peer.id());
    v.expect_no_sessions().await;
    assert_eq!(v.counters().await, before);
    v.assert_intact().await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_opens_no_stream_is_dropped_after_the_handshake_timeout() {
    let mut v = handshake_victim().await;
    let before = v.counters().await;
    let endpoint = loopback_endpoint(SecretKey::generate()).await;
    let started = Instant::now();
    let conn = dial(&endpoint, &v.node).await.unwrap();
    // Opened but never written to: the node cannot even see this stream.
    let (_send, _recv) = conn.open_bi().await.unwrap();
    let closed = tokio::time::timeout(HANDSHAKE + Duration::from_secs(3), conn.closed()).await;
    assert!(
        closed.is_ok(),
        "a connection without a stream was held {:?}, well past the {HANDSHAKE:?} handshake timeout",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= HANDSHAKE,
        "dropped after {:?}, before the handshake timeout",
        started.elapsed()
    );
    let warning = v.warning("handshake-timeout").await;
    assert_names(&warning, endpoint.id());
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

/// A victim that pings a peer not heard from for [`KEEPALIVE_MS`] and drops one that speaks
/// `keepalive` after [`IDLE_MS`] of silence.
async fn keepalive_victim() -> Victim {
    victim(|c| {
        c.timers.keepalive_ms = KEEPALIVE_MS;
        c.timers.idle_timeout_ms = IDLE_MS;
    })
    .await
}

/// Asserts that `peer` kept its session, the victim's only one, that the counters have not
/// moved since `before`, and that no `peer-timeout` warning comes.
async fn assert_kept(v: &mut Victim, peer: &RawPeer, before: &SyncCounters) {
    peer.assert_alive();
    assert_eq!(v.connected().await, vec![peer.id()]);
    assert_eq!(&v.counters().await, before);
    let events = v.events_for(100).await;
    assert!(
        warnings_of(&events, "peer-timeout").is_empty(),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_keepalive_peer_is_pinged_then_timed_out() {
    let mut v = keepalive_victim().await;
    let before = v.counters().await;
    let mut peer = RawPeer::connect(&v.node, &v.keys).await;
    let spoke = Instant::now();
    peer.hello(&["keepalive"]).await;
    // The victim pings; the peer reads but never answers.
    let mut pings = 0;
    let ended = loop {
        match peer.next_within(Duration::from_millis(IDLE_MS * 4)).await {
            Incoming::Frame(Message::Ping { .. }) => pings += 1,
            Incoming::Frame(Message::Prove { .. } | Message::Frontier { .. }) => {}
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
    assert_names(&warning, peer.id());
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
    let mut peer = RawPeer::connect(&v.node, &v.keys).await;
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
            Incoming::Frame(Message::Prove { .. } | Message::Frontier { .. })
            | Incoming::TimedOut => {}
            other => panic!("a peer answering pings lost its session: {other:?}"),
        }
    }
    assert!(answered >= 3, "only {answered} pings in {IDLE_MS} x 3 ms");
    assert_kept(&mut v, &peer, &before).await;
    // And it still syncs.
    let entry = Author::random(&v.keys).next(b"still here").unwrap();
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
    let mut peer = session(&v, &[]).await;
    let until = Instant::now() + Duration::from_millis(IDLE_MS * 2 + 500);
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match peer.next_within(left).await {
            Incoming::Frame(Message::Prove { .. } | Message::Frontier { .. })
            | Incoming::TimedOut => {}
            other => panic!("a silent peer without keepalive got {other:?}"),
        }
    }
    assert_kept(&mut v, &peer, &before).await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 11. Redial after a peer comes back
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_reconnects_by_itself_when_its_peer_returns() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = common::free_port();
    // B takes no part in rendezvous: it must not learn A's address there (it would remember
    // it and could dial A itself), so a session after B returns is A's own redial.
    let b_config = || {
        let mut c = NodeConfig::loopback(db.path());
        c.bind_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        c.dht.rendezvous = false;
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
    let b = common::open_retrying(b_config).await;
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
