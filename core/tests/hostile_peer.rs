//! Hostile peers at the network level: a raw iroh client on loopback speaks `covey/sync/1`
//! frame by frame and sends what a correct node never would. Each case checks the node's
//! observable reaction (a `Warning` event, a counter, a `Refuse` frame, a closed connection),
//! that valid entries sent alongside are stored, and that nothing stored before is lost.
//! Version negotiation, which two real nodes of one build cannot exercise, is tested on the
//! sans-IO session at the end.

mod common;

use std::time::Duration;

use common::hostile::*;
use common::*;
use covey_core::crypto::{Secret32, aead};
use covey_core::group::GroupKeys;
use covey_core::node::FRAME_OVERHEAD;
use covey_core::sync::session::{MIN_PROTOCOL_VERSION, Output, PROTOCOL_VERSION, SyncSession};
use covey_core::testing::{
    Author, RawPeer, by_small_order_key, hello_message, one_group_view, raws, sent_messages,
    with_mixed_order_r, with_non_canonical_s,
};
use covey_core::wire::entry::{
    EntryHeader, EntryKind, HEADER_LEN, SIGNATURE_LABEL, SIGNATURE_LEN, SignedEntry,
};
use covey_core::wire::frame::{self, LENGTH_PREFIX, Message, RefuseCode};
use covey_core::{Entry, EntryId, Event, SyncCounters};
use iroh::SecretKey;

/// How long to wait for a node's reaction.
const REACT_SECS: u64 = 5;
/// What this file's raw peers announce in their hello: a known feature and one nobody knows
/// (which must be ignored).
const HELLO_FEATURES: &[&str] = &["run-signatures", "x-unknown-feature/42"];

/// A victim with default timers whose reactions are awaited for [`REACT_SECS`].
async fn victim() -> Victim {
    Victim::open(REACT_SECS, |_| {}).await
}

// ---------------------------------------------------------------------------------------------
// Crafted entries
// ---------------------------------------------------------------------------------------------

/// The v1 header layout, written out independently of the crate (see `wire::entry` docs).
fn encode_header(h: &EntryHeader, ciphertext_len: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.push(h.version);
    out.push(match h.kind {
        EntryKind::Data => 0,
        EntryKind::Control => 1,
    });
    out.extend_from_slice(&h.group_ref);
    out.extend_from_slice(&h.author);
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.prev);
    out.extend_from_slice(&h.lamport.to_be_bytes());
    out.extend_from_slice(&h.epoch.to_be_bytes());
    out.extend_from_slice(&h.timestamp_ms.to_be_bytes());
    out.extend_from_slice(&h.nonce);
    out.extend_from_slice(&ciphertext_len.to_be_bytes());
    assert_eq!(out.len(), HEADER_LEN);
    out
}

/// An entry whose header says whatever `h` says (author included), sealed under `key` and
/// signed by `signer`, who need not be the author it claims.
fn forge(h: &EntryHeader, key: &Secret32, signer: &SecretKey, plaintext: &[u8]) -> Vec<u8> {
    let ct_len = u32::try_from(plaintext.len() + aead::TAG_LEN).unwrap();
    let mut raw = encode_header(h, ct_len);
    let ciphertext = aead::seal(key, &h.nonce, &raw[..HEADER_LEN], plaintext).unwrap();
    raw.extend_from_slice(&ciphertext);
    let mut message = SIGNATURE_LABEL.to_vec();
    message.extend_from_slice(blake3::hash(&raw).as_bytes());
    raw.extend_from_slice(&signer.sign(&message).to_bytes());
    raw
}

/// The first entry of a new author in the group of `keys`, its header changed by `change`
/// before sealing: validly signed, carrying whatever values `change` sets.
fn first_entry_with(
    keys: &GroupKeys,
    change: impl FnOnce(&mut EntryHeader),
    payload: &[u8],
) -> SignedEntry {
    let author = Author::random(keys);
    let mut h = author.header(1, [0; 32]);
    change(&mut h);
    author.seal(h, payload).unwrap()
}

/// `raw` with one bit flipped.
fn flipped(raw: &[u8], byte: usize, bit: u8) -> Vec<u8> {
    let mut out = raw.to_vec();
    out[byte] ^= 1 << bit;
    out
}

// ---------------------------------------------------------------------------------------------
// Frame-level abuse
// ---------------------------------------------------------------------------------------------

/// Asserts a refused session: the node's `Refuse` has `code`, a `Warning` of `kind` came,
/// and the counters moved by `change` only.
async fn expect_refused(
    v: &mut Victim,
    peer: &mut RawPeer,
    before: &SyncCounters,
    code: RefuseCode,
    kind: &str,
    change: impl FnOnce(&mut SyncCounters),
) -> (String, String) {
    let (got, reason) = peer.expect_refuse().await;
    assert_eq!(got, code as u16, "refuse code (reason: {reason})");
    let warning = v.warning(kind).await;
    v.expect_counters(plus(before, change)).await;
    v.assert_intact().await;
    (reason, warning)
}

/// Asserts a session refused for a protocol violation: [`expect_refused`] with code
/// `ProtocolViolation`, a `Warning` of `kind` and exactly one more rejected frame.
async fn expect_violation(
    v: &mut Victim,
    peer: &mut RawPeer,
    before: &SyncCounters,
    kind: &str,
) -> (String, String) {
    expect_refused(v, peer, before, RefuseCode::ProtocolViolation, kind, |c| {
        c.rejected_frames += 1
    })
    .await
}

async fn case_oversized_length_prefix(v: &mut Victim) {
    let before = v.counters().await;
    let max_frame = LIMIT + FRAME_OVERHEAD;
    let mut peer = session(v, HELLO_FEATURES).await;
    // Claim one byte more than the node accepts, and start sending a body (in one write:
    // the node may close the connection as soon as it has read the prefix).
    let mut bytes = u32::try_from(max_frame + 1).unwrap().to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 64]);
    peer.send_raw(&bytes).await;
    let (reason, warning) = expect_violation(v, &mut peer, &before, "rejected-frame").await;
    assert!(reason.contains("too large"), "{reason}");
    assert!(warning.contains(&(max_frame + 1).to_string()), "{warning}");
    peer.close().await;

    // A prefix of u32::MAX is refused the same way, without allocating 4 GiB.
    let before = v.counters().await;
    let mut peer = RawPeer::connect(&v.node, &v.keys).await;
    peer.send_raw(&u32::MAX.to_be_bytes()).await;
    expect_violation(v, &mut peer, &before, "rejected-frame").await;
    peer.close().await;
}

async fn case_truncated_frame(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    let mut whole = frame::encode(&Message::Frontier {
        group: v.group.0,
        heads: vec![],
    })
    .unwrap();
    // The prefix promises 100 more bytes than we send before finishing the stream.
    let promised = whole.len() - LENGTH_PREFIX + 100;
    whole[..LENGTH_PREFIX].copy_from_slice(&u32::try_from(promised).unwrap().to_be_bytes());
    peer.send_raw(&whole).await;
    peer.finish();
    let (reason, _) = expect_violation(v, &mut peer, &before, "rejected-frame").await;
    assert!(reason.contains("truncated"), "{reason}");
    peer.close().await;

    // A stream that ends inside the length prefix is a broken frame too.
    let before = v.counters().await;
    let mut peer = RawPeer::connect(&v.node, &v.keys).await;
    peer.send_raw(&[0, 0]).await;
    peer.finish();
    expect_violation(v, &mut peer, &before, "rejected-frame").await;
    peer.close().await;
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

async fn case_garbage_frame(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    let mut body = noise(0x5eed_cafe, 200);
    body[0] = 0xff; // no such message variant
    assert!(frame::decode(&body).is_err(), "the garbage must not decode");
    let mut bytes = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    peer.send_raw(&bytes).await;
    let (reason, _) = expect_violation(v, &mut peer, &before, "rejected-frame").await;
    assert!(reason.contains("malformed"), "{reason}");
    peer.close().await;

    // A valid message followed by trailing garbage inside the same frame.
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    let mut frame_bytes = frame::encode(&Message::Frontier {
        group: v.group.0,
        heads: vec![],
    })
    .unwrap();
    frame_bytes.extend_from_slice(&[1, 2, 3]);
    let len = u32::try_from(frame_bytes.len() - LENGTH_PREFIX).unwrap();
    frame_bytes[..LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    peer.send_raw(&frame_bytes).await;
    expect_violation(v, &mut peer, &before, "rejected-frame").await;
    peer.close().await;
}

async fn case_message_before_hello(v: &mut Victim) {
    for early in [
        Message::Frontier {
            group: v.group.0,
            heads: vec![],
        },
        Message::Entries {
            group: v.group.0,
            entries: raws(&[&Author::random(&v.keys).next(b"too early").unwrap()]),
        },
    ] {
        let before = v.counters().await;
        let mut peer = RawPeer::connect(&v.node, &v.keys).await;
        peer.send(&early).await;
        let (reason, _) = expect_violation(v, &mut peer, &before, "protocol-violation").await;
        assert!(reason.contains("before hello"), "{reason}");
        peer.close().await;
    }

    // A second hello is a violation too.
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    peer.send(&hello_message(&[])).await;
    let (reason, _) = expect_violation(v, &mut peer, &before, "protocol-violation").await;
    assert!(reason.contains("second hello"), "{reason}");
    peer.close().await;
}

async fn case_incompatible_version(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = RawPeer::connect(&v.node, &v.keys).await;
    peer.send(&Message::Hello {
        version: 99,
        min_version: 99,
        features: vec![],
    })
    .await;
    let (reason, warning) = expect_refused(
        v,
        &mut peer,
        &before,
        RefuseCode::IncompatibleVersion,
        "incompatible-version",
        |c| c.incompatible_peers += 1,
    )
    .await;
    assert!(reason.contains("version"), "{reason}");
    assert!(
        reason.contains("99"),
        "the reason names the peer's versions: {reason}"
    );
    assert!(warning.contains("99"), "{warning}");
    peer.close().await;
}

// ---------------------------------------------------------------------------------------------
// Entry-level abuse (after a valid hello)
// ---------------------------------------------------------------------------------------------

/// Waits until rejected-entry warnings account for `n` rejected entries and returns one
/// line per rejected entry, `"<reason>: <warning>"`. The node warns once per batch with a
/// summary such as `rejected 2 entries (wrong-group x1, unknown-epoch x1); first: ...`, so the
/// reasons come back in the order they first appeared.
async fn rejections(v: &mut Victim, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let message = v.warning("rejected-entry").await;
        let summary = message
            .split_once(" entries (")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(inner, _)| inner.to_owned())
            .unwrap_or_else(|| panic!("unexpected rejection summary: {message}"));
        for part in summary.split(", ") {
            let (reason, count) = part
                .rsplit_once(" x")
                .unwrap_or_else(|| panic!("unexpected reason count in {message}"));
            let count: usize = count.parse().expect("count");
            for _ in 0..count {
                out.push(format!("{reason}: {message}"));
            }
        }
    }
    assert_eq!(out.len(), n, "more rejections than expected: {out:?}");
    out
}

async fn case_tampered_entries(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    let mut author = Author::random(&v.keys);
    let e1 = author.next(b"good one").unwrap();
    // Seq 2, three ways: a bit flipped in the header (lamport), in the ciphertext, in the
    // signature. Each goes alone after a valid entry, which must be stored regardless.
    let in_header = flipped(author.peek(b"two").unwrap().raw(), 106 + 7, 0);
    let in_ciphertext = flipped(author.peek(b"two").unwrap().raw(), HEADER_LEN + 3, 4);
    let sig = author.peek(b"two").unwrap();
    let in_signature = flipped(sig.raw(), sig.raw().len() - SIGNATURE_LEN + 10, 7);
    for bad in [&in_header, &in_ciphertext, &in_signature] {
        assert!(
            SignedEntry::decode(bad.clone(), usize::MAX).is_ok(),
            "still parses"
        );
    }

    // A flipped header or ciphertext bit breaks the payload's authentication: refused at
    // once. A flipped signature bit leaves an entry a later one could still vouch for
    // (PROTOCOL.md, "Validity rules"): it is held, neither stored nor refused, until the
    // genuine seq 2 takes its place.
    peer.entries(v.group.0, vec![e1.raw().to_vec(), in_header])
        .await;
    let why = rejections(v, 1).await;
    assert!(why[0].contains("undecryptable"), "{why:?}");
    v.expect_stored(1).await;
    assert!(v.has(&e1).await);

    peer.entries(v.group.0, vec![in_ciphertext]).await;
    let why = rejections(v, 1).await;
    assert!(why[0].contains("undecryptable"), "{why:?}");

    peer.entries(v.group.0, vec![in_signature]).await;

    // The log goes on with the genuine seq 2 and 3 in the same session.
    let e2 = author.next(b"two").unwrap();
    let e3 = author.next(b"three").unwrap();
    peer.entries(v.group.0, raws(&[&e2, &e3])).await;
    let why = rejections(v, 1).await;
    assert!(why[0].contains("unverified"), "{why:?}");
    let stored = v.expect_stored(2).await;
    let payloads: Vec<&[u8]> = stored[stored.len() - 3..]
        .iter()
        .map(|e| e.payload.as_slice())
        .collect();
    assert_eq!(payloads, [&b"good one"[..], b"two", b"three"]);
    v.expect_counters(plus(&before, |c| {
        c.received += 3;
        c.rejected_entries += 3;
    }))
    .await;
    peer.assert_alive();
    peer.close().await;
}

/// The Ed25519 edge cases of PROTOCOL.md ("Entries whose signature must be refused"), each as
/// seq 1 of a fresh author: a non-canonical S, a small-order key with the signature it makes
/// valid to a lax check, a mixed-order R that a cofactored check accepts. All are refused as
/// `bad-signature`; the authors' genuine entries are stored after them.
async fn case_lax_signatures(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    let mut canonical = Author::random(&v.keys);
    let mut mixed = Author::random(&v.keys);
    let weak = Author::random(&v.keys).peek(b"weak key").unwrap();
    let bad = [
        with_non_canonical_s(&canonical.peek(b"non-canonical S").unwrap()),
        by_small_order_key(&weak, &v.keys.content_key, b"weak key").unwrap(),
        with_mixed_order_r(&mixed.peek(b"mixed-order R").unwrap(), mixed.secret()),
    ];
    // Each is held (its own signature fails strictly, and nothing yet vouches for it), so
    // nothing is stored; the genuine entries then take two of their places, and the session's
    // end drops the third. All three are refused as `unverified`.
    for entry in bad {
        assert!(
            SignedEntry::decode(entry.clone(), usize::MAX).is_ok(),
            "still parses"
        );
        peer.entries(v.group.0, vec![entry]).await;
    }
    let good = [
        canonical.next(b"non-canonical S").unwrap(),
        mixed.next(b"mixed-order R").unwrap(),
    ];
    peer.entries(v.group.0, raws(&good)).await;
    let why = rejections(v, 2).await;
    assert!(why.iter().all(|w| w.contains("unverified")), "{why:?}");
    v.expect_stored(2).await;
    peer.assert_alive();
    peer.close().await;
    let why = rejections(v, 1).await;
    assert!(why[0].contains("unverified"), "{why:?}");
    v.expect_counters(plus(&before, |c| {
        c.received += 2;
        c.rejected_entries += 3;
    }))
    .await;
}

async fn case_wrong_group(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    // An entry of another group, validly signed, sent as the victim's group.
    let stray = Author::random(&foreign_keys())
        .next(b"from elsewhere")
        .unwrap();
    // An entry of the right group from an epoch the group has not reached.
    let future = first_entry_with(&v.keys, |h| h.epoch = 5, b"from the future");
    let good = Author::random(&v.keys).next(b"belongs here").unwrap();
    peer.entries(v.group.0, raws(&[&stray, &future, &good]))
        .await;
    let why = rejections(v, 2).await;
    assert!(why[0].contains("wrong-group"), "{why:?}");
    assert!(why[1].contains("unknown-epoch"), "{why:?}");
    v.expect_stored(1).await;
    assert!(v.has(&good).await && !v.has(&stray).await && !v.has(&future).await);
    v.expect_counters(plus(&before, |c| {
        c.received += 1;
        c.rejected_entries += 2;
    }))
    .await;
    peer.close().await;
}

async fn case_seq_gap(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    let mut author = Author::random(&v.keys);
    let e1 = author.next(b"one").unwrap();
    let e2 = author.next(b"two").unwrap();
    let e3 = author.next(b"three").unwrap();
    peer.entries(v.group.0, raws(&[&e1, &e3])).await;
    let why = rejections(v, 1).await;
    assert!(why[0].contains("seq-gap"), "{why:?}");
    v.expect_stored(1).await;
    assert!(v.has(&e1).await && !v.has(&e3).await);
    // Filling the gap later is fine.
    peer.entries(v.group.0, raws(&[&e2, &e3])).await;
    v.expect_stored(2).await;
    v.expect_counters(plus(&before, |c| {
        c.received += 3;
        c.rejected_entries += 1;
    }))
    .await;
    peer.close().await;
}

async fn case_forged_author(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    let mut attacker = Author::random(&v.keys);
    // The victim's own next seq, chained to its real head, signed by the attacker.
    let head = v.node.members(&v.group).await.unwrap();
    let own = head.iter().find(|m| m.is_self).unwrap();
    let own_entries: Vec<Entry> = all_entries(&v.node, &v.group)
        .await
        .into_iter()
        .filter(|e| e.meta.author == v.node.node_id())
        .collect();
    let last = own_entries.last().unwrap();
    assert_eq!(last.meta.seq, own.last_seq);
    let mut h = attacker.header(own.last_seq + 1, last.meta.entry_id.0);
    h.author = *v.node.node_id().as_bytes();
    let as_victim = forge(
        &h,
        &v.keys.content_key,
        attacker.secret(),
        b"I am the victim",
    );
    // Someone else entirely, signed by the attacker.
    let mut h = attacker.header(1, [0; 32]);
    h.author = *SecretKey::generate().public().as_bytes();
    let as_other = forge(
        &h,
        &v.keys.content_key,
        attacker.secret(),
        b"I am someone else",
    );
    let good = attacker.next(b"honest").unwrap();
    peer.entries(v.group.0, vec![as_victim, as_other, good.raw().to_vec()])
        .await;
    v.expect_stored(1).await;
    assert!(v.has(&good).await);
    // The forgeries could only be vouched for by their authors' keys: held until the
    // session ends, then refused.
    peer.close().await;
    let why = rejections(v, 2).await;
    assert!(why.iter().all(|w| w.contains("unverified")), "{why:?}");
    v.expect_counters(plus(&before, |c| {
        c.received += 1;
        c.rejected_entries += 2;
    }))
    .await;
    // The victim's own log is untouched and it goes on publishing at the next seq.
    let me = v.node.members(&v.group).await.unwrap();
    assert_eq!(
        me.iter().find(|m| m.is_self).unwrap().last_seq,
        own.last_seq
    );
    let next = v.node.publish(&v.group, b"still mine", None).await.unwrap();
    assert_eq!(next.seq, own.last_seq + 1);
    v.expected += 1;
    v.assert_intact().await;
}

async fn case_replay(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    let mut author = Author::random(&v.keys);
    let e1 = author.next(b"once").unwrap();
    let e2 = author.next(b"twice").unwrap();
    peer.entries(v.group.0, raws(&[&e1])).await;
    v.expect_stored(1).await;
    // The same entry again, then again inside a batch with a new one and its own copy.
    peer.entries(v.group.0, raws(&[&e1])).await;
    peer.entries(v.group.0, raws(&[&e1, &e2, &e2])).await;
    v.expect_stored(1).await;
    v.expect_counters(plus(&before, |c| {
        c.received += 2;
        c.duplicates += 3;
    }))
    .await;
    // The victim's own entries, fetched from it and replayed back.
    let before = v.counters().await;
    peer.send(&Message::Frontier {
        group: v.group.0,
        heads: vec![],
    })
    .await;
    let theirs = peer.expect_entries().await;
    assert!(!theirs.is_empty());
    let n = theirs.len() as u64;
    peer.entries(v.group.0, theirs).await;
    // The victim told this peer its frontier at hello, so sending those back is a replay,
    // not a race: counted as such (and warned about once per session).
    v.expect_counters(plus(&before, |c| {
        c.duplicates += n;
        c.replayed += n;
    }))
    .await;
    let warning = v.warning("replayed-entries").await;
    assert!(
        warning.contains(&format!("re-sent {n} entries")),
        "{warning}"
    );
    v.assert_intact().await;
    peer.assert_alive();
    peer.close().await;
}

async fn case_conflicting_seq(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    let mut author = Author::random(&v.keys);
    let fork_base = (author.seq(), author.prev());
    let e1 = author.next(b"the real seq 1").unwrap();
    peer.entries(v.group.0, raws(&[&e1])).await;
    let stored = v.expect_stored(1).await;
    let kept = stored.last().unwrap().clone();
    // Same author and seq, different content.
    let rival = author
        .seal(
            author.header(fork_base.0 + 1, fork_base.1),
            b"a rival seq 1",
        )
        .unwrap();
    assert_ne!(rival.id(), e1.id());
    // And a fork at seq 2 that does not link to the held seq 1.
    let fork = author
        .seal(author.header(2, [0xee; 32]), b"forked seq 2")
        .unwrap();
    let e2 = author.next(b"the real seq 2").unwrap();
    peer.entries(v.group.0, raws(&[&rival])).await;
    let why = rejections(v, 1).await;
    assert!(why[0].contains("conflicting-seq"), "{why:?}");
    peer.entries(v.group.0, raws(&[&fork])).await;
    let why = rejections(v, 1).await;
    assert!(why[0].contains("broken-chain"), "{why:?}");
    peer.entries(v.group.0, raws(&[&e2])).await;
    v.expect_stored(1).await;
    let first = v
        .node
        .entry(&v.group, &EntryId(*e1.id()))
        .await
        .unwrap()
        .expect("the first seq 1 is kept");
    assert_eq!(first, kept);
    assert!(!v.has(&rival).await && !v.has(&fork).await);
    v.expect_counters(plus(&before, |c| {
        c.received += 2;
        c.rejected_entries += 2;
    }))
    .await;
    peer.close().await;
}

async fn case_group_not_joined(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    let foreign = foreign_keys();
    let mut stranger = Author::random(&foreign);
    let theirs = stranger.next(b"not for you").unwrap();
    // The foreign group's own id, so the batch is self-consistent, just not ours.
    peer.entries(foreign.id.0, raws(&[&theirs])).await;
    let why = rejections(v, 1).await;
    assert!(why[0].contains("not in"), "{why:?}");
    // The session goes on: a valid entry afterwards is stored.
    let good = Author::random(&v.keys)
        .next(b"after the stray batch")
        .unwrap();
    peer.entries(v.group.0, raws(&[&good])).await;
    v.expect_stored(1).await;
    v.assert_no_group(&foreign.id).await;
    v.expect_counters(plus(&before, |c| {
        c.received += 1;
        c.rejected_entries += 1;
    }))
    .await;
    peer.close().await;
}

async fn case_oversized_entry(v: &mut Victim) {
    let before = v.counters().await;
    let mut peer = session(v, HELLO_FEATURES).await;
    let mut author = Author::random(&v.keys);
    let too_big = author.peek(&vec![1u8; LIMIT + 1]).unwrap();
    let at_limit = author.next(&vec![2u8; LIMIT]).unwrap();
    peer.entries(v.group.0, raws(&[&too_big, &at_limit])).await;
    let why = rejections(v, 1).await;
    assert!(why[0].contains("too large"), "{why:?}");
    let stored = v.expect_stored(1).await;
    assert_eq!(stored.last().unwrap().payload, vec![2u8; LIMIT]);
    v.expect_counters(plus(&before, |c| {
        c.received += 1;
        c.rejected_entries += 1;
    }))
    .await;
    peer.close().await;
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn crafted_entries_match_the_real_encoding() {
    // The forging helper must write exactly what the crate writes, or the forged-author
    // case would test the helper instead of the node.
    let keys = foreign_keys();
    let author = Author::random(&keys);
    let header = author.header(7, [3; 32]);
    let real = author.seal(header.clone(), b"payload").unwrap();
    let crafted = forge(&header, &keys.content_key, author.secret(), b"payload");
    assert_eq!(crafted, real.raw());
    assert_eq!(
        SignedEntry::decode(crafted, usize::MAX).unwrap().id(),
        real.id()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length_prefix_is_refused() {
    let mut v = victim().await;
    case_oversized_length_prefix(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_is_refused() {
    let mut v = victim().await;
    case_truncated_frame(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frame_is_refused() {
    let mut v = victim().await;
    case_garbage_frame(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_before_hello_is_a_protocol_violation() {
    let mut v = victim().await;
    case_message_before_hello(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_version_is_refused_with_a_reason() {
    let mut v = victim().await;
    case_incompatible_version(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_entries_are_rejected_and_valid_ones_stored() {
    let mut v = victim().await;
    case_tampered_entries(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lax_signatures_are_refused_as_protocol_md_requires() {
    let mut v = victim().await;
    case_lax_signatures(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_of_another_group_is_rejected() {
    let mut v = victim().await;
    case_wrong_group(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_gap_is_rejected_until_filled() {
    let mut v = victim().await;
    case_seq_gap(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_authors_are_rejected() {
    let mut v = victim().await;
    case_forged_author(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_entries_are_counted_duplicates_not_errors() {
    let mut v = victim().await;
    case_replay(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_entry_at_an_existing_seq_is_rejected() {
    let mut v = victim().await;
    case_conflicting_seq(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_for_a_group_not_joined_are_rejected() {
    let mut v = victim().await;
    case_group_not_joined(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_over_the_payload_limit_is_rejected() {
    let mut v = victim().await;
    case_oversized_entry(&mut v).await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_all_the_abuse_a_good_peer_still_syncs() {
    let mut v = victim().await;
    case_oversized_length_prefix(&mut v).await;
    case_truncated_frame(&mut v).await;
    case_garbage_frame(&mut v).await;
    case_message_before_hello(&mut v).await;
    case_incompatible_version(&mut v).await;
    case_tampered_entries(&mut v).await;
    case_wrong_group(&mut v).await;
    case_seq_gap(&mut v).await;
    case_forged_author(&mut v).await;
    case_replay(&mut v).await;
    case_conflicting_seq(&mut v).await;
    case_group_not_joined(&mut v).await;
    case_oversized_entry(&mut v).await;
    let abused = v.counters().await;
    assert_eq!(abused.rejected_frames, 9);
    assert_eq!(abused.rejected_entries, 12);
    assert_eq!(abused.incompatible_peers, 1);

    // A normal node joins and syncs both ways, adding no rejections on either side.
    let good = v.good_peer(3).await;
    v.syncs_with(&good).await;
    // A live entry still flows.
    let mut sub = good.node.subscribe();
    let live = v
        .node
        .publish(&v.group, b"live after abuse", None)
        .await
        .unwrap();
    wait_event(
        &mut sub,
        10,
        |e| matches!(e, Event::EntryReceived { entry_id, .. } if *entry_id == live.entry_id),
    )
    .await;
    good.node.shutdown().await.unwrap();
    v.node.shutdown().await.unwrap();
}

/// Waits until the victim has judged `entry`, the only entry sent to it (stored or rejected),
/// counts it in `v.expected` if it was stored, and returns whether it was.
async fn judged(v: &mut Victim, entry: &SignedEntry) -> bool {
    let node = &v.node;
    wait_until(REACT_SECS, "the entry is processed", || async move {
        let c = counters(node).await;
        c.received + c.rejected_entries > 0
    })
    .await;
    let stored = v.has(entry).await;
    if stored {
        v.expected += 1;
    }
    stored
}

// Cases where a validly signed entry carries content the node cannot use. These go beyond
// the signature checks: a member (or anyone who learned the group id) can send them.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecryptable_entry_is_rejected_and_history_stays_readable() {
    let mut v = victim().await;
    let before = v.counters().await;
    let mut peer = session(&v, HELLO_FEATURES).await;
    // Right group id, validly signed, but sealed under a key that is not the group's.
    let mut keys = v.keys.clone();
    keys.content_key = Secret32::from_bytes([0x55; 32]);
    let mut wrong_key = Author::random(&keys);
    let sealed_wrong = wrong_key.next(b"nobody can read this").unwrap();
    let good = Author::random(&v.keys).next(b"readable").unwrap();
    peer.entries(v.group.0, raws(&[&sealed_wrong, &good])).await;
    let (vr, gr) = (&v, &good);
    wait_until(REACT_SECS, "the valid entry is stored", || async move {
        vr.has(gr).await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let page = v.node.entries(&v.group, 0, 100).await;
    assert!(
        page.is_ok(),
        "one undecryptable entry from a peer makes the whole history unreadable: {:?}",
        page.err()
    );
    let why = rejections(&mut v, 1).await;
    assert!(!why.is_empty());
    v.expect_stored(1).await;
    v.expect_counters(plus(&before, |c| {
        c.received += 1;
        c.rejected_entries += 1;
    }))
    .await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_clock_values_are_rejected_without_losing_the_batch() {
    let mut v = victim().await;
    let before = v.counters().await;
    let mut peer = session(&v, HELLO_FEATURES).await;
    let good = Author::random(&v.keys).next(b"good, same batch").unwrap();
    let huge_lamport = first_entry_with(&v.keys, |h| h.lamport = u64::MAX, b"lamport u64::MAX");
    let huge_clock = first_entry_with(
        &v.keys,
        |h| h.timestamp_ms = u64::MAX,
        b"timestamp u64::MAX",
    );
    peer.entries(v.group.0, raws(&[&good, &huge_lamport, &huge_clock]))
        .await;
    let stored = tokio::time::timeout(Duration::from_secs(REACT_SECS), async {
        while !v.has(&good).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if stored.is_err() {
        let seen = v.warnings_for(500).await;
        panic!(
            "a valid entry was lost because other entries in its batch had clock values \
             the store cannot hold; warnings: {seen:?}; session closed: {:?}",
            peer.conn.close_reason()
        );
    }
    let why = rejections(&mut v, 2).await;
    assert_eq!(why.len(), 2);
    v.expect_stored(1).await;
    // The session survives: another valid entry is stored.
    let later = Author::random(&v.keys).next(b"later").unwrap();
    peer.entries(v.group.0, raws(&[&later])).await;
    v.expect_stored(1).await;
    v.expect_counters(plus(&before, |c| {
        c.received += 2;
        c.rejected_entries += 2;
    }))
    .await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_exhaust_the_lamport_clock() {
    let mut v = victim().await;
    let mut peer = session(&v, HELLO_FEATURES).await;
    let max_clock = first_entry_with(
        &v.keys,
        |h| h.lamport = i64::MAX as u64,
        b"lamport i64::MAX",
    );
    peer.entries(v.group.0, raws(&[&max_clock])).await;
    // Whether the node stores or rejects it, it must be able to publish afterwards.
    let stored = judged(&mut v, &max_clock).await;
    let published = v
        .node
        .publish(&v.group, b"after the clock jump", None)
        .await;
    assert!(
        published.is_ok(),
        "one entry with lamport i64::MAX (stored: {stored}) stops this node from \
         publishing: {:?}",
        published.err()
    );
    v.expected += 1;
    v.assert_intact().await;
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lamport_at_the_accepted_maximum_does_not_stop_replication() {
    // The largest lamport a node accepts from a peer; an honest node that stored it
    // publishes at max + 1 from then on, and every other member must still accept that.
    let mut v = victim().await;
    let mut peer = session(&v, HELLO_FEATURES).await;
    let jump = first_entry_with(
        &v.keys,
        |h| h.lamport = covey_core::sync::verify::MAX_LAMPORT,
        b"lamport at the maximum",
    );
    peer.entries(v.group.0, raws(&[&jump])).await;
    judged(&mut v, &jump).await;
    peer.close().await;
    let after = v
        .node
        .publish(&v.group, b"published after the jump", None)
        .await
        .expect("publish after the clock jump");
    v.expected += 1;

    // A good member syncs with the victim and must get the victim's new entry.
    let good = v.good_peer(0).await;
    let mut sub = good.node.subscribe();
    connect(&good.node, &v.node).await;
    let got = tokio::time::timeout(Duration::from_secs(REACT_SECS), async {
        loop {
            if good
                .node
                .entry(&v.group, &after.entry_id)
                .await
                .unwrap()
                .is_some()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if got.is_err() {
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await
        {
            if let Event::Warning { kind, message } = ev {
                seen.push((kind, message));
            }
        }
        panic!(
            "the victim's entry published after a peer's lamport {} (lamport {}) never \
             reached a good member; its warnings: {seen:?}",
            covey_core::sync::verify::MAX_LAMPORT,
            after.lamport
        );
    }
    v.assert_intact().await;
    good.node.shutdown().await.unwrap();
    v.node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Version negotiation on the sans-IO session
// ---------------------------------------------------------------------------------------------

/// Starts `session` and returns its hello, asserting it sends nothing else.
fn only_hello(session: &mut SyncSession) -> Message {
    let out = sent_messages(&session.start([]));
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0], Message::Hello { .. }));
    out[0].clone()
}

/// Runs the hello exchange of two sessions and lets each see the other's replies.
fn negotiate(a: (u16, u16), b: (u16, u16)) -> [(SyncSession, Vec<Output>); 2] {
    let view = one_group_view([1; 32], &[]);
    let mut sa = SyncSession::with_versions(a.0, a.1);
    let mut sb = SyncSession::with_versions(b.0, b.1);
    let (ha, hb) = (only_hello(&mut sa), only_hello(&mut sb));
    let out_a = sa.on_message(hb, &view);
    let out_b = sb.on_message(ha, &view);
    // Each side now hears what the other answered (a refusal, when there is one).
    for m in sent_messages(&out_b) {
        assert!(sa.on_message(m, &view).is_empty() || sa.is_ready());
    }
    for m in sent_messages(&out_a) {
        assert!(sb.on_message(m, &view).is_empty() || sb.is_ready());
    }
    [(sa, out_a), (sb, out_b)]
}

#[test]
fn overlapping_versions_negotiate_to_ready() {
    for (a, b) in [
        ((1, 1), (1, 1)),
        ((2, 1), (1, 1)),
        ((3, 1), (2, 2)),
        ((5, 2), (3, 3)),
        ((7, 3), (9, 7)),
        (
            (PROTOCOL_VERSION, MIN_PROTOCOL_VERSION),
            (PROTOCOL_VERSION + 1, MIN_PROTOCOL_VERSION),
        ),
    ] {
        for (side, (mut session, out)) in negotiate(a, b).into_iter().enumerate() {
            assert!(session.is_ready(), "{a:?} vs {b:?}: side {side} not ready");
            assert!(
                !out.iter()
                    .any(|o| matches!(o, Output::Close { .. } | Output::Warn { .. })),
                "{a:?} vs {b:?}: side {side} said {out:?}"
            );
            // Ready, yet nothing about any group until the peer proves one.
            assert!(
                sent_messages(&out).is_empty(),
                "{a:?} vs {b:?}: side {side} said {out:?} before any proof"
            );
            let view = one_group_view([1; 32], &[]);
            let proved = session.on_message(
                Message::Prove {
                    proofs: vec![[1; 32]],
                },
                &view,
            );
            assert!(
                sent_messages(&proved)
                    .iter()
                    .any(|m| matches!(m, Message::Frontier { .. })),
                "{a:?} vs {b:?}: side {side} announced no frontier after a proof"
            );
        }
    }
}

#[test]
fn unknown_hello_features_are_ignored() {
    let view = one_group_view([1; 32], &[]);
    let mut session = SyncSession::new();
    session.start([]);
    let features = vec![
        "run-signatures".to_string(),
        "x-teleport/9".to_string(),
        String::new(),
        "ü".repeat(300),
    ];
    let out = session.on_message(
        Message::Hello {
            version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
            features: features.clone(),
        },
        &view,
    );
    assert!(session.is_ready());
    assert!(!out.iter().any(|o| matches!(o, Output::Close { .. })));
    // Known features are kept; unknown ones are dropped rather than held for the session.
    assert!(session.peer_features().contains("run-signatures"));
    assert_eq!(
        session.peer_features().len(),
        1,
        "{:?}",
        session.peer_features()
    );
    // And the session works: once the peer proved the group, entries for it are handed on
    // for ingest.
    let _ = session.on_message(
        Message::Prove {
            proofs: vec![[1; 32]],
        },
        &view,
    );
    let out = session.on_message(
        Message::Entries {
            group: [1; 32],
            entries: vec![vec![1, 2, 3]],
        },
        &view,
    );
    assert!(matches!(out.as_slice(), [Output::Ingest { .. }]), "{out:?}");
}

#[test]
fn sans_io_message_before_hello_is_refused() {
    let view = one_group_view([1; 32], &[]);
    let mut session = SyncSession::new();
    session.start([]);
    let out = session.on_message(
        Message::Entries {
            group: [1; 32],
            entries: vec![],
        },
        &view,
    );
    assert!(!session.is_ready());
    assert!(matches!(
        sent_messages(&out).as_slice(),
        [Message::Refuse { code, .. }] if *code == RefuseCode::ProtocolViolation as u16
    ));
    assert!(matches!(out.last(), Some(Output::Close { .. })));
    // A closed session ignores everything after, a hello included.
    let late = session.on_message(hello_message(&[]), &view);
    assert!(late.is_empty() && !session.is_ready());
}

/// A peer that completes the handshake but is not in the group learns nothing about it: every
/// frame names the group by a per-pair session tag, never by its id, and the tag differs for
/// every pair of nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_never_see_the_group_id_on_the_wire() {
    let v = victim().await;
    let group_id = v.keys.id.0;
    let mut tags = Vec::new();
    for _ in 0..2 {
        let mut peer = session(&v, HELLO_FEATURES).await;
        // Collect every byte the node sends next, raw, until it goes quiet.
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Ok(Some(n))) =
            tokio::time::timeout(Duration::from_millis(500), peer.recv.read(&mut buf)).await
        {
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(
            seen.windows(32).any(|w| w == peer.tag()),
            "the node announced the group under the pair's tag"
        );
        assert!(
            !seen.windows(32).any(|w| w == group_id),
            "the group id itself never crosses the wire"
        );
        tags.push(peer.tag());
        peer.close().await;
    }
    assert_ne!(tags[0], tags[1], "each pair of nodes sees a different tag");
}

// ---------------------------------------------------------------------------------------------
// Protocol v2 entry rules over real iroh: the lamport bound and the signature window
// ---------------------------------------------------------------------------------------------

/// An author's clock may rise by at most `MAX_LAMPORT_STEP` per entry: the entry at exactly
/// the step is stored, the one past it refused (`lamport-out-of-bounds`) with what follows it,
/// and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_author_jamming_the_lamport_clock_is_refused_at_the_bound() {
    use covey_core::sync::verify::MAX_LAMPORT_STEP;
    let mut v = victim().await;
    let before = v.counters().await;
    let mut peer = session(&v, HELLO_FEATURES).await;
    let mut author = Author::random(&v.keys);
    let first = author
        .next_at(MAX_LAMPORT_STEP, b"first, at the step")
        .unwrap();
    let second = author
        .next_at(MAX_LAMPORT_STEP * 2, b"a full step later")
        .unwrap();
    peer.entries(v.group.0, raws(&[&first, &second])).await;
    v.expect_stored(2).await;
    let jam = author
        .next_at(MAX_LAMPORT_STEP * 3 + 1, b"one past the step")
        .unwrap();
    let after = author
        .next_at(MAX_LAMPORT_STEP * 3 + 2, b"after it")
        .unwrap();
    peer.entries(v.group.0, raws(&[&jam, &after])).await;
    let why = rejections(&mut v, 2).await;
    assert!(why[0].contains("lamport-out-of-bounds"), "{why:?}");
    assert!(!v.has(&jam).await && !v.has(&after).await);
    v.expect_counters(plus(&before, |c| {
        c.received += 2;
        c.rejected_entries += 2;
    }))
    .await;
    peer.assert_alive();
    peer.close().await;
    v.node.shutdown().await.unwrap();
}

/// `n` entries of a fresh author whose signatures are corrupted where `bad` says.
fn forged_run(keys: &GroupKeys, n: u64, bad: impl Fn(u64) -> bool) -> Vec<SignedEntry> {
    Author::random(keys)
        .forged_run(n, |seq| format!("#{seq}").into_bytes(), bad)
        .unwrap()
}

/// The signature window on both sides of its limit over real iroh, with the run split over
/// frames: bad signatures vouched for by an entry `MAX_UNSIGNED_RUN` later are stored; one
/// further and the first bad one is refused with everything after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signature_window_holds_on_both_sides_over_iroh() {
    use covey_core::sync::verify::MAX_UNSIGNED_RUN;
    let mut v = victim().await;
    let before = v.counters().await;
    let mut peer = session(&v, HELLO_FEATURES).await;
    let k = MAX_UNSIGNED_RUN as u64;
    // Seqs 2..=k+1 bad: seq 2's voucher, k + 2, sits exactly at the limit.
    let at = forged_run(&v.keys, k + 2, |seq| (2..=k + 1).contains(&seq));
    // Seqs 2..=k+2 bad: seq 2's nearest voucher, k + 3, is one past it.
    let past = forged_run(&v.keys, k + 3, |seq| (2..=k + 2).contains(&seq));
    for run in [&at, &past] {
        // Three frames, cut inside the bad stretch.
        for part in [&run[..5], &run[5..40], &run[40..]] {
            peer.entries(v.group.0, raws(&part.iter().collect::<Vec<_>>()))
                .await;
        }
    }
    v.expect_stored(at.len() + 1).await;
    assert!(v.has(at.last().unwrap()).await && v.has(&at[1]).await);
    assert!(v.has(&past[0]).await && !v.has(&past[1]).await);
    let why = rejections(&mut v, past.len() - 1).await;
    assert!(why.iter().all(|w| w.contains("bad-signature")), "{why:?}");
    v.expect_counters(plus(&before, |c| {
        c.received += at.len() as u64 + 1;
        c.rejected_entries += past.len() as u64 - 1;
    }))
    .await;
    peer.assert_alive();
    peer.close().await;
    v.node.shutdown().await.unwrap();
}
