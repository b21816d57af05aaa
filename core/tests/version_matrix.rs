//! Protocol evolution (docs/PROTOCOL.md, "Session" and "Evolving the protocol"): version
//! negotiation across a matrix of old and new builds, unknown features ignored, features
//! gating the messages they add, and messages from the future refused as bad frames.
//!
//! Sessions are driven against each other in memory, every message crossing through
//! `frame::encode` and `frame::decode` so the wire encoding is exercised too; the last test
//! runs a real node over iroh against a raw client.

mod common;

use std::collections::BTreeSet;

use common::*;
use covey_core::sync::WarnKind;
use covey_core::sync::engine::Snapshot;
use covey_core::sync::session::{
    FEATURES, MAX_FRAME_FEATURE, MIN_PROTOCOL_VERSION, Output, PROTOCOL_VERSION, SyncSession,
    SyncState, Timers,
};
use covey_core::testing::{
    Incoming, RECV_TIMEOUT, RawPeer, across_the_wire, one_group_view, sent_messages,
};
use covey_core::wire::WireError;
use covey_core::wire::entry::Id32;
use covey_core::wire::frame::{self, Head, Message, RefuseCode};
use covey_core::{Node, NodeConfig};
use iroh::SecretKey;

const GROUP: Id32 = [0x61; 32];
const AUTHOR_X: Id32 = [0x0a; 32];
const AUTHOR_Y: Id32 = [0x0b; 32];
const MAX_FRAME: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// In-memory sessions
// ---------------------------------------------------------------------------------------------

fn head(author: Id32, seq: u64) -> Head {
    Head { author, seq }
}

/// Carries a message across the wire: one frame out, its prefix checked, its body decoded.
fn wire(message: &Message) -> Message {
    across_the_wire(message, MAX_FRAME)
}

fn this_builds_features() -> Vec<String> {
    FEATURES.iter().map(|f| f.to_string()).collect()
}

/// Starts a session and returns the hello it sends (its only output).
fn hello_of(session: &mut SyncSession) -> Message {
    match &session.start([])[..] {
        [Output::Send(hello @ Message::Hello { .. })] => hello.clone(),
        other => panic!("start sent {other:?}"),
    }
}

fn timers() -> Timers {
    Timers {
        handshake_timeout_ms: 10_000,
        keepalive_ms: 5_000,
        idle_timeout_ms: 20_000,
        ..Timers::default()
    }
}

/// Asserts `out` is exactly a refusal for incompatible versions, as a side speaking `ours`
/// (version, min_version) says it to a peer speaking `theirs`; returns the `Refuse` sent.
fn assert_version_refusal(
    out: &[Output],
    ours: (u16, u16),
    theirs: (u16, u16),
    ctx: &str,
) -> Message {
    let [
        Output::Send(refuse),
        Output::Warn { kind, message },
        Output::Close { reason },
    ] = out
    else {
        panic!("{ctx}: expected Refuse, Warn, Close; got {out:?}");
    };
    let Message::Refuse { code, reason: sent } = wire(refuse) else {
        panic!("{ctx}: sent {refuse:?} instead of a Refuse");
    };
    assert_eq!(code, RefuseCode::IncompatibleVersion as u16, "{ctx}");
    assert_eq!(code, 1, "{ctx}: the documented code");
    assert_eq!(*kind, WarnKind::IncompatibleVersion, "{ctx}");
    let (v, min) = ours;
    let (pv, pmin) = theirs;
    for text in [&sent, message, reason] {
        assert!(
            text.contains(&format!("we speak {min}..={v}")),
            "{ctx}: {text:?} names our range first"
        );
        assert!(
            text.contains(&format!("peer speaks {pmin}..={pv}")),
            "{ctx}: {text:?} names the peer's range"
        );
        assert!(
            text.contains("incompatible protocol versions"),
            "{ctx}: {text:?}"
        );
    }
    refuse.clone()
}

// ---------------------------------------------------------------------------------------------
// The version matrix
// ---------------------------------------------------------------------------------------------

/// (version, min_version) of five builds: an old one, two that overlap it, two newer ones.
const BUILDS: [(u16, u16); 5] = [(1, 1), (2, 1), (2, 2), (3, 2), (3, 3)];

/// The pairs (in either order) that share no version, written out by hand from the rule
/// "peer.version >= our.min and our.version >= peer.min" rather than computed with it.
const DISJOINT: [((u16, u16), (u16, u16)); 5] = [
    ((1, 1), (2, 2)),
    ((1, 1), (3, 2)),
    ((1, 1), (3, 3)),
    ((2, 1), (3, 3)),
    ((2, 2), (3, 3)),
];

#[test]
fn version_matrix_ready_or_refused_on_both_sides() {
    let disjoint: BTreeSet<_> = DISJOINT
        .iter()
        .flat_map(|&(a, b)| [(a, b), (b, a)])
        .collect();
    let (mut ready_pairs, mut refused_pairs) = (0, 0);
    for ours in BUILDS {
        for theirs in BUILDS {
            let ctx = format!("ours {ours:?} vs theirs {theirs:?}");
            // Ours holds 3 entries of author X, theirs 2 of author Y.
            let view_a = one_group_view(GROUP, &[(AUTHOR_X, 3)]);
            let view_b = one_group_view(GROUP, &[(AUTHOR_Y, 2)]);
            let mut a = SyncSession::with_versions(ours.0, ours.1);
            let mut b = SyncSession::with_versions(theirs.0, theirs.1);
            let hello_a = hello_of(&mut a);
            let hello_b = hello_of(&mut b);
            assert_eq!(
                hello_a,
                Message::Hello {
                    version: ours.0,
                    min_version: ours.1,
                    features: this_builds_features(),
                },
                "{ctx}"
            );
            let out_a = a.on_message(wire(&hello_b), &view_a);
            let out_b = b.on_message(wire(&hello_a), &view_b);

            if disjoint.contains(&(ours, theirs)) {
                refused_pairs += 1;
                assert!(!a.is_ready() && !b.is_ready(), "{ctx}");
                let refuse_a =
                    assert_version_refusal(&out_a, ours, theirs, &format!("{ctx}: ours"));
                let refuse_b =
                    assert_version_refusal(&out_b, theirs, ours, &format!("{ctx}: theirs"));
                // Each refusal reaches a side that already closed: nothing more happens.
                assert!(a.on_message(wire(&refuse_b), &view_a).is_empty(), "{ctx}");
                assert!(b.on_message(wire(&refuse_a), &view_b).is_empty(), "{ctx}");
                assert!(a.on_tick(1_000_000).is_empty(), "{ctx}: closed for good");
                assert!(a.on_local_entry(GROUP, AUTHOR_X, 4).is_empty(), "{ctx}");
                continue;
            }

            ready_pairs += 1;
            assert!(a.is_ready() && b.is_ready(), "{ctx}");
            assert!(
                out_a.is_empty() && out_b.is_empty(),
                "{ctx}: nothing about the group before a proof"
            );
            let out_a = proved(&mut a, &view_a);
            let out_b = proved(&mut b, &view_b);
            assert_eq!(
                out_a,
                vec![Output::Send(Message::Frontier {
                    group: GROUP,
                    heads: vec![head(AUTHOR_X, 3)],
                })],
                "{ctx}: ours announces its frontier"
            );
            assert_eq!(
                out_b,
                vec![Output::Send(Message::Frontier {
                    group: GROUP,
                    heads: vec![head(AUTHOR_Y, 2)],
                })],
                "{ctx}: theirs announces its frontier"
            );
            // The frontiers cross: each side sends what the other lacks and waits for the rest.
            let got_a = a.on_message(wire(&sent_messages(&out_b)[0]), &view_a);
            let got_b = b.on_message(wire(&sent_messages(&out_a)[0]), &view_b);
            assert_eq!(
                got_a,
                vec![
                    Output::SendRange {
                        group: GROUP,
                        author: AUTHOR_X,
                        after_seq: 0,
                        up_to_seq: 3,
                    },
                    Output::StateChanged {
                        group: GROUP,
                        state: SyncState::CatchingUp,
                    },
                ],
                "{ctx}: ours"
            );
            assert_eq!(
                got_b,
                vec![
                    Output::SendRange {
                        group: GROUP,
                        author: AUTHOR_Y,
                        after_seq: 0,
                        up_to_seq: 2,
                    },
                    Output::StateChanged {
                        group: GROUP,
                        state: SyncState::CatchingUp,
                    },
                ],
                "{ctx}: theirs"
            );
        }
    }
    assert_eq!((ready_pairs, refused_pairs), (15, 10));
}

/// Every pair of the ten version ranges within 1..=4 (not only the five builds above): ready
/// on both sides exactly when the ranges overlap (70 of the 100 ordered pairs), each side
/// then knowing the other's features; refused on both sides otherwise.
#[test]
fn every_pair_of_ranges_up_to_version_4_is_ready_exactly_when_they_overlap() {
    let view = one_group_view(GROUP, &[]);
    let ranges: Vec<(u16, u16)> = (1..=4u16)
        .flat_map(|min| (min..=4).map(move |v| (v, min)))
        .collect();
    let mut compatible = 0;
    for &ours in &ranges {
        for &theirs in &ranges {
            let ctx = format!("ours {ours:?} vs theirs {theirs:?}");
            let mut a = SyncSession::with_versions(ours.0, ours.1);
            let mut b = SyncSession::with_versions(theirs.0, theirs.1);
            let hello_a = hello_of(&mut a);
            let hello_b = hello_of(&mut b);
            let out_a = a.on_message(wire(&hello_b), &view);
            let out_b = b.on_message(wire(&hello_a), &view);
            if ours.1.max(theirs.1) <= ours.0.min(theirs.0) {
                compatible += 1;
                assert!(a.is_ready() && b.is_ready(), "{ctx}");
                assert!(a.peer_features().contains("run-signatures"), "{ctx}");
                assert!(b.peer_features().contains("run-signatures"), "{ctx}");
            } else {
                assert!(!a.is_ready() && !b.is_ready(), "{ctx}");
                assert_version_refusal(&out_a, ours, theirs, &format!("{ctx}: ours"));
                assert_version_refusal(&out_b, theirs, ours, &format!("{ctx}: theirs"));
            }
        }
    }
    assert_eq!(ranges.len(), 10);
    assert_eq!(compatible, 70);
}

#[test]
fn this_build_against_a_newer_and_an_older_neighbour() {
    let view = one_group_view(GROUP, &[]);
    let ours = (PROTOCOL_VERSION, MIN_PROTOCOL_VERSION);
    // A newer build that still accepts ours talks to us.
    let mut s = SyncSession::new();
    hello_of(&mut s);
    let newer = Message::Hello {
        version: PROTOCOL_VERSION + 1,
        min_version: MIN_PROTOCOL_VERSION,
        features: vec!["future-x".into()],
    };
    let out = s.on_message(wire(&newer), &view);
    assert!(s.is_ready(), "{out:?}");
    // One that retired our version does not, and both of us say so.
    let mut s = SyncSession::new();
    hello_of(&mut s);
    let retired = (PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 1);
    let out = s.on_message(
        wire(&Message::Hello {
            version: retired.0,
            min_version: retired.1,
            features: vec![],
        }),
        &view,
    );
    assert_version_refusal(&out, ours, retired, "retired");
    // A peer whose range is upside down (min above version) meets nobody's range.
    let mut s = SyncSession::new();
    hello_of(&mut s);
    let out = s.on_message(
        wire(&Message::Hello {
            version: 1,
            min_version: 5,
            features: vec![],
        }),
        &view,
    );
    assert_version_refusal(&out, ours, (1, 5), "upside down");
}

// ---------------------------------------------------------------------------------------------
// Features
// ---------------------------------------------------------------------------------------------

/// The peer proved the group (the transport turned its proof into the group's id): what the
/// session says then, less its own proof in answer.
fn proved(s: &mut SyncSession, view: &Snapshot) -> Vec<Output> {
    s.on_message(
        Message::Prove {
            proofs: vec![GROUP],
        },
        view,
    )
    .into_iter()
    .filter(|o| !matches!(o, Output::Send(Message::Prove { .. })))
    .collect()
}

/// A session of this build at t = 1000 that received `hello` and then the peer's proof of
/// the group; returns it and its outputs.
fn ready_with(hello: &Message, view: &Snapshot) -> (SyncSession, Vec<Output>) {
    let mut s = SyncSession::new().with_timers(timers());
    s.advance(1_000);
    hello_of(&mut s);
    let mut out = s.on_message(wire(hello), view);
    assert!(s.is_ready(), "{out:?}");
    assert!(
        out.is_empty(),
        "nothing about the group before a proof: {out:?}"
    );
    out.extend(proved(&mut s, view));
    (s, out)
}

fn hello_with(features: &[&str]) -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        features: features.iter().map(|f| f.to_string()).collect(),
    }
}

#[test]
fn unknown_features_are_ignored() {
    let view = one_group_view(GROUP, &[]);
    let (mut s, out) = ready_with(&hello_with(&["future-x"]), &view);
    assert_eq!(
        out,
        vec![Output::Send(Message::Frontier {
            group: GROUP,
            heads: vec![],
        })]
    );
    for known in FEATURES {
        assert!(
            !s.peer_features().contains(*known),
            "{known} was not announced"
        );
    }
    // The session works as usual: the peer's frontier starts a catch-up.
    let out = s.on_message(
        wire(&Message::Frontier {
            group: GROUP,
            heads: vec![head(AUTHOR_Y, 2)],
        }),
        &view,
    );
    assert!(
        out.contains(&Output::StateChanged {
            group: GROUP,
            state: SyncState::CatchingUp,
        }),
        "{out:?}"
    );
    // Unknown names next to known ones: the known ones take effect.
    let (s, _) = ready_with(
        &hello_with(&[
            "future-x",
            "acks",
            "x/y=z",
            "",
            "keepalive",
            &"z".repeat(300),
        ]),
        &view,
    );
    for f in ["acks", "keepalive"] {
        assert!(s.peer_features().contains(f), "{f}");
    }
}

#[test]
fn feature_names_are_compared_exactly() {
    // Near misses of `acks` and `keepalive` enable neither: no Ack, no Ping, no timeout.
    let (mut r, _) = catching_up(&hello_with(&["ACKS", "Keepalive", "acks ", " keepalive"]));
    let after = one_group_view(GROUP, &[(AUTHOR_Y, 2)]);
    assert_eq!(
        r.on_ingested(GROUP, &[head(AUTHOR_Y, 2)], &after),
        vec![
            received(),
            Output::StateChanged {
                group: GROUP,
                state: SyncState::UpToDate,
            }
        ]
    );
    let idle = timers().idle_timeout_ms;
    assert_eq!(tick_span(&mut r, 1_000, 1_000 + 3 * idle), vec![]);
    assert!(r.is_ready());
}

/// What `on_ingested` reports first after R stores Y 1..=2 from S: S holds them (a receipt).
fn received() -> Output {
    Output::PeerHeads {
        group: GROUP,
        heads: vec![head(AUTHOR_Y, 2)],
    }
}

/// Receiver R (this build, in the group, holding nothing) and sender S (holding two entries of
/// author Y) after their handshake and frontier exchange: R is catching up.
fn catching_up(r_hears: &Message) -> (SyncSession, SyncSession) {
    let view_r = one_group_view(GROUP, &[]);
    let view_s = one_group_view(GROUP, &[(AUTHOR_Y, 2)]);
    let (mut r, out_r) = ready_with(r_hears, &view_r);
    let mut s = SyncSession::new();
    hello_of(&mut s);
    let hello_r = hello_with(FEATURES);
    let out_s = s.on_message(wire(&hello_r), &view_s);
    assert!(out_s.is_empty(), "{out_s:?}");
    let out_s = proved(&mut s, &view_s);
    let got_r = r.on_message(wire(&sent_messages(&out_s)[0]), &view_r);
    assert_eq!(
        got_r,
        vec![Output::StateChanged {
            group: GROUP,
            state: SyncState::CatchingUp,
        },]
    );
    let got_s = s.on_message(wire(&sent_messages(&out_r)[0]), &view_s);
    assert_eq!(
        got_s[0],
        Output::SendRange {
            group: GROUP,
            author: AUTHOR_Y,
            after_seq: 0,
            up_to_seq: 2,
        }
    );
    (r, s)
}

#[test]
fn acks_go_only_to_peers_that_announced_them() {
    let after = one_group_view(GROUP, &[(AUTHOR_Y, 2)]);
    let stored = [head(AUTHOR_Y, 2)];
    let up_to_date = Output::StateChanged {
        group: GROUP,
        state: SyncState::UpToDate,
    };

    // A peer that did not announce `acks` gets none.
    let (mut r, _) = catching_up(&hello_with(&["run-signatures", "keepalive", "future-x"]));
    let out = r.on_ingested(GROUP, &stored, &after);
    assert_eq!(
        out,
        vec![received(), up_to_date.clone()],
        "no Ack without the feature"
    );
    // Without an Ack, R never told the peer it holds Y 1..=2: a resend is not a replay.
    assert_eq!(
        r.count_replayed(GROUP, &[head(AUTHOR_Y, 1), head(AUTHOR_Y, 2)]),
        (0, vec![])
    );

    // A peer that did gets one, and it reaches the peer as a delivery receipt.
    let hello = hello_with(FEATURES);
    let (mut r, mut s) = catching_up(&hello);
    let out = r.on_ingested(GROUP, &stored, &after);
    let ack = Message::Ack {
        group: GROUP,
        heads: vec![head(AUTHOR_Y, 2)],
    };
    assert_eq!(out, vec![received(), Output::Send(ack.clone()), up_to_date]);
    let view_s = one_group_view(GROUP, &[(AUTHOR_Y, 2)]);
    assert_eq!(
        s.on_message(wire(&ack), &view_s),
        vec![Output::PeerHeads {
            group: GROUP,
            heads: vec![head(AUTHOR_Y, 2)],
        }]
    );
    // The same heads are not acknowledged twice (the peer's receipt is recorded again,
    // which is idempotent).
    assert_eq!(r.on_ingested(GROUP, &stored, &after), vec![received()]);
    // Having acknowledged Y 1..=2, entries of it sent again are replays, warned about once.
    let (n, warn) = r.count_replayed(GROUP, &[head(AUTHOR_Y, 1), head(AUTHOR_Y, 2)]);
    assert_eq!(n, 2);
    assert!(
        matches!(
            &warn[..],
            [Output::Warn {
                kind: WarnKind::ReplayedEntries,
                ..
            }]
        ),
        "{warn:?}"
    );
    assert_eq!(r.count_replayed(GROUP, &[head(AUTHOR_Y, 2)]), (1, vec![]));
}

/// Ticks `s` every 100 ms over `(from, to]` and returns what each tick output, with its time.
fn tick_span(s: &mut SyncSession, from: u64, to: u64) -> Vec<(u64, Output)> {
    let mut out = Vec::new();
    let mut t = from + 100;
    while t <= to {
        out.extend(s.on_tick(t).into_iter().map(|o| (t, o)));
        t += 100;
    }
    out
}

#[test]
fn a_peer_without_keepalive_is_never_pinged_nor_timed_out() {
    let view = one_group_view(GROUP, &[]);
    let (mut s, _) = ready_with(&hello_with(&["acks", "future-x"]), &view);
    let idle = timers().idle_timeout_ms;
    assert_eq!(tick_span(&mut s, 1_000, 1_000 + 10 * idle), vec![]);
    assert!(s.on_tick(u64::MAX / 2).is_empty());
    assert!(s.is_ready(), "silence is no reason to drop it");
    // It may still ping us, and is answered.
    assert_eq!(
        s.on_message(wire(&Message::Ping { nonce: 7 }), &view),
        vec![Output::Send(Message::Pong { nonce: 7 })]
    );
}

#[test]
fn a_keepalive_peer_is_pinged_when_silent_and_dropped_after_the_idle_timeout() {
    let t = timers();
    let view = one_group_view(GROUP, &[]);
    // Our session and the peer's, both of this build, so both speak `keepalive`.
    let (mut ours, _) = ready_with(&hello_with(FEATURES), &view);
    let mut peer = SyncSession::new();
    let ours_hello = hello_with(FEATURES);
    hello_of(&mut peer);
    peer.on_message(wire(&ours_hello), &view);
    assert!(peer.is_ready());

    // Heard at 1000: the first ping goes out keepalive_ms later, not before.
    let ping_at = 1_000 + t.keepalive_ms;
    assert_eq!(
        tick_span(&mut ours, 1_000, ping_at),
        vec![(ping_at, Output::Send(Message::Ping { nonce: 1 }))]
    );
    // The peer answers; the pong arrives 500 ms after the ping and measures the round trip.
    let pong = peer.on_message(wire(&Message::Ping { nonce: 1 }), &view);
    assert_eq!(pong, vec![Output::Send(Message::Pong { nonce: 1 })]);
    let heard = ping_at + 500;
    assert!(tick_span(&mut ours, ping_at, heard - 100).is_empty());
    ours.advance(heard);
    assert!(
        ours.on_message(wire(&sent_messages(&pong)[0]), &view)
            .is_empty()
    );
    assert_eq!(ours.rtt_ms(), Some(500));

    // Then the peer goes silent: a ping every keepalive_ms, and gone after idle_timeout_ms.
    let gone_at = heard + t.idle_timeout_ms;
    let outputs = tick_span(&mut ours, heard, gone_at);
    let reason = format!("peer silent for {} ms", t.idle_timeout_ms);
    assert_eq!(
        outputs,
        vec![
            (heard + 5_000, Output::Send(Message::Ping { nonce: 2 })),
            (heard + 10_000, Output::Send(Message::Ping { nonce: 3 })),
            (heard + 15_000, Output::Send(Message::Ping { nonce: 4 })),
            (
                gone_at,
                Output::Warn {
                    kind: WarnKind::PeerTimeout,
                    message: reason.clone(),
                }
            ),
            (gone_at, Output::Close { reason }),
        ]
    );
    assert!(!ours.is_ready());
    assert!(ours.on_tick(gone_at + 60_000).is_empty(), "closed for good");
}

#[test]
fn a_peer_that_never_says_hello_is_dropped_after_the_handshake_timeout() {
    let mut s = SyncSession::new().with_timers(timers());
    s.advance(1_000);
    hello_of(&mut s);
    let deadline = 1_000 + timers().handshake_timeout_ms;
    let outputs = tick_span(&mut s, 1_000, deadline + 1_000);
    let reason = format!("no hello within {} ms", timers().handshake_timeout_ms);
    assert_eq!(
        outputs,
        vec![
            (
                deadline,
                Output::Warn {
                    kind: WarnKind::HandshakeTimeout,
                    message: reason.clone(),
                }
            ),
            (deadline, Output::Close { reason }),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Messages from the future
// ---------------------------------------------------------------------------------------------

fn varint(mut n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn unknown_variants_and_appended_fields_fail_to_decode() {
    // Variant index 200 (varint c8 01), the case PROTOCOL.md names.
    assert!(matches!(
        frame::decode(&[0xc8, 0x01]),
        Err(WireError::Malformed(_))
    ));
    // Every index past the last variant, with or without a plausible body after it.
    for index in (8..=300).chain([u16::MAX as u32, u32::MAX]) {
        let mut body = varint(index);
        assert!(frame::decode(&body).is_err(), "variant {index}");
        body.extend_from_slice(&[0; 40]);
        assert!(frame::decode(&body).is_err(), "variant {index} with a body");
    }
    // The known ones all decode, from a minimal instance of each.
    for index in 0..8u8 {
        let body: Vec<u8> = match index {
            1 | 2 | 3 | 5 => [vec![index], vec![0; 32], vec![0]].concat(),
            0 => vec![0, 1, 1, 0],
            4 => vec![4, 1, 0],
            _ => vec![index, 9],
        };
        assert!(frame::decode(&body).is_ok(), "variant {index}");
    }
    // A future version cannot append a field to an existing message: v1 refuses it.
    let mut ping_with_field = vec![6, 1];
    ping_with_field.extend_from_slice(&[0x2a]);
    assert!(matches!(
        frame::decode(&ping_with_field),
        Err(WireError::Malformed(m)) if m.contains("trailing")
    ));
}

// ---------------------------------------------------------------------------------------------
// Over real iroh
// ---------------------------------------------------------------------------------------------

/// Expects the node's hello with this build's features and frame limit.
async fn expect_this_builds_hello(peer: &mut RawPeer) {
    let features = peer.expect_hello().await;
    // A node also announces its frame limit (a valued feature).
    let mut expected = this_builds_features();
    expected.push(format!(
        "{MAX_FRAME_FEATURE}{}",
        NodeConfig::loopback("unused").max_frame_bytes
    ));
    assert_eq!(features, expected);
}

/// Expects a `Refuse` as the very next frame, then the end of the session; returns code and
/// reason.
async fn expect_refuse_next(peer: &mut RawPeer) -> (u16, String) {
    let refusal = match peer.next().await {
        Incoming::Frame(Message::Refuse { code, reason }) => (code, reason),
        other => panic!("expected a Refuse, got {other:?}"),
    };
    assert!(
        matches!(peer.next().await, Incoming::Ended | Incoming::Closed),
        "nothing follows a Refuse"
    );
    peer.expect_closed(RECV_TIMEOUT).await;
    refusal
}

async fn fresh_endpoint() -> iroh::Endpoint {
    loopback_endpoint(SecretKey::generate()).await
}

async fn wait_counters(node: &Node, what: &str, check: impl Fn(&covey_core::SyncCounters) -> bool) {
    wait_until(5, what, || async { check(&counters(node).await) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_an_incompatible_peer_and_a_frame_from_the_future_over_iroh() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(NodeConfig::loopback(dir.path()))
        .await
        .expect("open node");
    let mut events = node.subscribe();

    let ours = format!("{MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}");
    // A peer of protocol v1 (the last release before v2) and one that only speaks version
    // 9 are each refused with code 1, both ranges named.
    for (n, (version, min_version)) in [(1u16, 1u16), (9, 9)].into_iter().enumerate() {
        let mut peer = RawPeer::connect_on(fresh_endpoint().await, &node, None).await;
        peer.send(&Message::Hello {
            version,
            min_version,
            features: vec!["future-x".into()],
        })
        .await;
        expect_this_builds_hello(&mut peer).await;
        let (code, reason) = expect_refuse_next(&mut peer).await;
        let theirs = format!("{min_version}..={version}");
        assert_eq!(code, 1, "IncompatibleVersion ({reason})");
        assert!(reason.contains(&format!("we speak {ours}")), "{reason}");
        assert!(
            reason.contains(&format!("peer speaks {theirs}")),
            "{reason}"
        );
        let warning = wait_warning(&mut events, 5, "incompatible-version").await;
        assert!(
            warning.contains(&ours) && warning.contains(&theirs),
            "{warning}"
        );
        wait_counters(&node, "incompatible peers counted", |c| {
            c.incompatible_peers == n as u64 + 1 && c.rejected_frames == 0
        })
        .await;
        peer.close().await;
    }

    // A compatible peer that then sends variant 200 has sent a bad frame: refused with
    // code 2, counted as a rejected frame, and not as an incompatible peer.
    let mut peer = RawPeer::connect_on(fresh_endpoint().await, &node, None).await;
    peer.send(&hello_with(&["future-x"])).await;
    expect_this_builds_hello(&mut peer).await;
    peer.send_raw(&[0, 0, 0, 2, 0xc8, 0x01]).await;
    let (code, reason) = expect_refuse_next(&mut peer).await;
    assert_eq!(code, RefuseCode::ProtocolViolation as u16, "{reason}");
    let warning = wait_warning(&mut events, 5, "rejected-frame").await;
    assert!(!warning.is_empty());
    wait_counters(&node, "rejected_frames = 1", |c| {
        c.rejected_frames == 1 && c.incompatible_peers == 2
    })
    .await;
    peer.close().await;

    wait_until(5, "both refused sessions are gone", || async {
        node.status().await.unwrap().connected_peers.is_empty()
    })
    .await;
    node.shutdown().await.unwrap();
}
