//! Bad input through the facade: every mistake an app can make is an error of the right kind,
//! never a panic or a hang, and nothing already stored is lost because of it.

mod common;

use std::time::Duration;

use common::*;
use covey_core::node::DEFAULT_MAX_PAYLOAD;
use covey_core::{Entry, EntryId, ErrorKind, GroupId, Node, NodeConfig};

/// A loopback node with a small payload limit, so limit tests stay fast.
const SMALL_LIMIT: usize = 4096;

async fn open_small(dir: &std::path::Path) -> Node {
    Node::open(NodeConfig::loopback(dir).with_max_payload(SMALL_LIMIT))
        .await
        .expect("open node")
}

/// A node in `dir` that joined the test group and published `n` entries.
async fn seeded(dir: &std::path::Path, n: usize) -> (Node, GroupId, Vec<Entry>) {
    let node = open_small(dir).await;
    let group = node.join_passphrase(PASS, GROUP).await.unwrap().group_id;
    for i in 0..n {
        node.publish(&group, format!("seed-{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    let entries = all_entries(&node, &group).await;
    assert_eq!(entries.len(), n);
    (node, group, entries)
}

/// Asserts the group still holds exactly `expected` (ids, cursors and payloads).
async fn assert_entries(node: &Node, group: &GroupId, expected: &[Entry]) {
    let now = all_entries(node, group).await;
    assert_eq!(now, expected, "stored entries changed");
    assert_eq!(node.status().await.unwrap().entries, expected.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_data_dir_is_invalid_input() {
    let err = expect_err(
        Node::open(NodeConfig::loopback("")).await,
        ErrorKind::InvalidInput,
        "open with an empty data_dir",
    );
    assert!(err.message().contains("data_dir"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_that_is_a_file_or_under_one_is_a_storage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();

    // The data dir is itself a regular file.
    let err = expect_err(
        Node::open(NodeConfig::loopback(&file)).await,
        ErrorKind::Storage,
        "open on a regular file",
    );
    assert!(err.message().contains("plain-file"), "{err}");

    // The data dir would have to be created under a regular file (root can write anywhere,
    // so this is the unwritable location a test can rely on).
    let under = file.join("sub");
    let err = expect_err(
        Node::open(NodeConfig::loopback(&under)).await,
        ErrorKind::Storage,
        "open under a regular file",
    );
    assert!(err.message().contains("sub"), "{err}");

    // Nothing was clobbered.
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_data_dir_twice_is_a_conflict_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (first, group, seeded_entries) = seeded(dir.path(), 3).await;

    let err = expect_err(
        Node::open(NodeConfig::loopback(dir.path())).await,
        ErrorKind::Conflict,
        "second open of an open data dir",
    );
    let shown = dir.path().display().to_string();
    assert!(
        err.message().contains(&shown),
        "message should name the dir {shown}: {err}"
    );

    // The first node is unaffected.
    assert_entries(&first, &group, &seeded_entries).await;
    let extra = first.publish(&group, b"still works", None).await.unwrap();
    let mut expected = seeded_entries.clone();
    expected.push(first.entry(&group, &extra.entry_id).await.unwrap().unwrap());
    first.shutdown().await.unwrap();

    // Released by shutdown, even while the first handle is still alive.
    let second = open_small(dir.path()).await;
    assert_eq!(second.node_id(), first.node_id());
    assert_entries(&second, &group, &expected).await;
    second.shutdown().await.unwrap();
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_database_is_a_storage_error_and_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("covey.db");
    let junk: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 13) as u8).collect();
    std::fs::write(&db, &junk).unwrap();
    expect_err(
        Node::open(NodeConfig::loopback(dir.path())).await,
        ErrorKind::Storage,
        "open on a corrupt database",
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        junk,
        "the corrupt file was modified"
    );
    // The failed open released the dir lock.
    std::fs::remove_file(&db).unwrap();
    let node = open_small(dir.path()).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_device_key_is_a_crypto_error_and_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_small(dir.path()).await;
    node.shutdown().await.unwrap();
    drop(node);
    let key = dir.path().join("keys").join("device.key");
    assert!(key.is_file(), "default key store layout changed");
    std::fs::write(&key, b"short").unwrap();
    expect_err(
        Node::open(NodeConfig::loopback(dir.path())).await,
        ErrorKind::Crypto,
        "open with a corrupt device key",
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        b"short",
        "device key was replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_values_are_invalid_input_and_release_the_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut zero = NodeConfig::loopback(dir.path());
    zero.max_payload_bytes = 0;
    expect_err(
        Node::open(zero).await,
        ErrorKind::InvalidInput,
        "max_payload 0",
    );
    let mut small_frame = NodeConfig::loopback(dir.path());
    small_frame.max_frame_bytes = small_frame.max_payload_bytes;
    expect_err(
        Node::open(small_frame).await,
        ErrorKind::InvalidInput,
        "frame limit below payload limit",
    );
    // A relay URL that does not parse (so nothing is ever dialed).
    let mut relay = NodeConfig::loopback(dir.path());
    relay.relay_urls = vec!["not a url".into()];
    expect_err(
        Node::open(relay).await,
        ErrorKind::InvalidInput,
        "unparsable relay url",
    );
    // A malformed bootstrap ticket.
    let mut boot = NodeConfig::loopback(dir.path());
    boot.bootstrap = vec!["not a ticket".into()];
    expect_err(
        Node::open(boot).await,
        ErrorKind::InvalidInput,
        "malformed bootstrap ticket",
    );
    // Rate limits: a byte burst below the largest frame could never pass one; exactly the
    // frame size is accepted.
    let mut burst = NodeConfig::loopback(dir.path());
    burst.rate_limits.byte_burst = burst.max_frame_bytes as u32 - 1;
    expect_err(
        Node::open(burst).await,
        ErrorKind::InvalidInput,
        "byte burst below the frame limit",
    );
    let mut zero_rate = NodeConfig::loopback(dir.path());
    zero_rate.rate_limits.frames_per_sec = 0;
    expect_err(
        Node::open(zero_rate).await,
        ErrorKind::InvalidInput,
        "zero frame rate",
    );
    // Timers: keepalive must come before the idle timeout.
    let mut timers = NodeConfig::loopback(dir.path());
    timers.timers.keepalive_ms = timers.timers.idle_timeout_ms;
    expect_err(
        Node::open(timers).await,
        ErrorKind::InvalidInput,
        "keepalive not below idle timeout",
    );
    let mut frame_timeout = NodeConfig::loopback(dir.path());
    frame_timeout.timers.frame_timeout_ms = 0;
    expect_err(
        Node::open(frame_timeout).await,
        ErrorKind::InvalidInput,
        "zero frame timeout",
    );
    // None of those left the dir locked, and limits exactly at their bounds are accepted.
    let mut at_bounds = NodeConfig::loopback(dir.path()).with_max_payload(SMALL_LIMIT);
    at_bounds.rate_limits.byte_burst = at_bounds.max_frame_bytes as u32;
    at_bounds.timers.keepalive_ms = at_bounds.timers.idle_timeout_ms - 1;
    let node = Node::open(at_bounds).await.expect("limits at their bounds");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_ticket_as_bootstrap_is_invalid_input_and_releases_the_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (node, group, seeded_entries) = seeded(dir.path(), 2).await;
    let own = node.addr().await.unwrap();
    node.shutdown().await.unwrap();
    drop(node);
    let mut config = NodeConfig::loopback(dir.path()).with_max_payload(SMALL_LIMIT);
    config.bootstrap = vec![own];
    expect_err(
        Node::open(config).await,
        ErrorKind::InvalidInput,
        "own ticket as bootstrap",
    );
    // The failed open let go of the data dir at once.
    let node = open_small(dir.path()).await;
    assert_entries(&node, &group, &seeded_entries).await;
    assert_eq!(node.status().await.unwrap().known_peers, 0);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_own_tickets_are_invalid_input() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open_small(da.path()).await;
    let b = open_small(db.path()).await;
    let good = b.addr().await.unwrap();
    let mut bad: Vec<String> = vec![
        String::new(),
        "   ".into(),
        "garbage".into(),
        "endpoint".into(),
        "endpoint!!!!".into(),
        "\u{1F600}".into(),
        format!("x{good}"),
        format!("{good}\0"),
    ];
    // Truncations of a valid ticket at several points.
    for cut in [1, 2, 5, good.len() / 2, good.len() - 10] {
        bad.push(good[..good.len() - cut].to_string());
    }
    for ticket in &bad {
        expect_err(
            a.add_peer(ticket).await,
            ErrorKind::InvalidInput,
            &format!("add_peer({ticket:?})"),
        );
    }
    let own = a.addr().await.unwrap();
    let err = expect_err(
        a.add_peer(&own).await,
        ErrorKind::InvalidInput,
        "add_peer(own ticket)",
    );
    assert!(err.message().contains("own"), "{err}");
    // Nothing bad was remembered; a good ticket still works afterwards.
    assert_eq!(a.status().await.unwrap().known_peers, 0);
    a.add_peer(&good).await.unwrap();
    assert_eq!(a.status().await.unwrap().known_peers, 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_group_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (node, group, seeded_entries) = seeded(dir.path(), 2).await;
    let stranger = GroupId([0x42; 32]);
    let some_entry = seeded_entries[0].meta.entry_id;

    expect_err(
        node.publish(&stranger, b"x", None).await,
        ErrorKind::NotFound,
        "publish to an unknown group",
    );
    expect_err(
        node.publish(&stranger, b"x", Some("cid")).await,
        ErrorKind::NotFound,
        "publish with client id to an unknown group",
    );
    expect_err(
        node.entries(&stranger, 0, 10).await,
        ErrorKind::NotFound,
        "entries of an unknown group",
    );
    expect_err(
        node.entry(&stranger, &some_entry).await,
        ErrorKind::NotFound,
        "entry of an unknown group",
    );
    expect_err(
        node.members(&stranger).await,
        ErrorKind::NotFound,
        "members of an unknown group",
    );
    // A known group and an unknown entry id is not an error, just nothing.
    assert!(
        node.entry(&group, &EntryId([9; 32]))
            .await
            .unwrap()
            .is_none()
    );
    // An entry id of one group does not leak through another group's id.
    assert!(
        node.entry(&group, &some_entry).await.unwrap().is_some(),
        "sanity"
    );

    // Ids from the app arrive as text: anything but 64 hex characters is InvalidInput.
    let valid = group.to_string();
    let upper = valid.to_uppercase();
    assert_eq!(
        upper.parse::<GroupId>().unwrap(),
        group,
        "hex is case-insensitive"
    );
    for text in [
        String::new(),
        "zz".into(),
        valid[..63].to_string(),
        format!("{valid}0"),
        format!("0x{}", &valid[2..]),
        format!(" {}", &valid[1..]),
        "g".repeat(64),
        "é".repeat(32),
    ] {
        expect_err(
            text.parse::<GroupId>(),
            ErrorKind::InvalidInput,
            &format!("group id {text:?}"),
        );
        expect_err(
            text.parse::<EntryId>(),
            ErrorKind::InvalidInput,
            &format!("entry id {text:?}"),
        );
    }
    assert_entries(&node, &group, &seeded_entries).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_passphrase_and_bad_group_names_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_small(dir.path()).await;
    expect_err(
        node.join_passphrase("", GROUP).await,
        ErrorKind::InvalidInput,
        "empty passphrase",
    );
    expect_err(
        node.join_passphrase(PASS, "").await,
        ErrorKind::InvalidInput,
        "empty group name",
    );
    expect_err(
        node.join_passphrase("", "").await,
        ErrorKind::InvalidInput,
        "empty passphrase and name",
    );
    expect_err(
        node.join_passphrase(PASS, &"n".repeat(257)).await,
        ErrorKind::InvalidInput,
        "257-byte group name",
    );
    assert!(
        node.groups().await.unwrap().is_empty(),
        "no group was joined"
    );
    // The limits are inclusive: a 256-byte name is fine.
    let long = node.join_passphrase(PASS, &"n".repeat(256)).await.unwrap();
    assert_eq!(long.name.len(), 256);
    assert_eq!(node.groups().await.unwrap().len(), 1);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_at_the_limit_is_accepted_and_one_byte_over_is_not() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, group, mut expected) = seeded(da.path(), 1).await;
    let at_limit: Vec<u8> = (0..SMALL_LIMIT).map(|i| (i % 251) as u8).collect();
    let meta = a.publish(&group, &at_limit, None).await.unwrap();
    let stored = a.entry(&group, &meta.entry_id).await.unwrap().unwrap();
    assert_eq!(stored.payload, at_limit);
    expected.push(stored);

    let over = vec![7u8; SMALL_LIMIT + 1];
    let err = expect_err(
        a.publish(&group, &over, None).await,
        ErrorKind::InvalidInput,
        "payload one byte over the limit",
    );
    assert!(err.message().contains(&SMALL_LIMIT.to_string()), "{err}");
    expect_err(
        a.publish(&group, &over, Some("over")).await,
        ErrorKind::InvalidInput,
        "oversized payload with a client id",
    );
    assert_entries(&a, &group, &expected).await;
    // The client id of the refused publish was not consumed.
    a.publish(&group, b"small", Some("over")).await.unwrap();
    expected = all_entries(&a, &group).await;
    assert_eq!(expected.len(), 3);

    // A peer with the same limit accepts the at-limit entry over the wire.
    let b = open_small(db.path()).await;
    b.join_passphrase(PASS, GROUP).await.unwrap();
    connect(&b, &a).await;
    wait_for_count(&b, &group, 3, 20).await;
    let got = b.entry(&group, &meta.entry_id).await.unwrap().unwrap();
    assert_eq!(got.payload, at_limit);
    assert_eq!(counters(&b).await.rejected_entries, 0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_payload_limit_is_one_mebibyte_on_both_sides() {
    assert_eq!(DEFAULT_MAX_PAYLOAD, 1 << 20);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path()).await;
    let group = a.join_passphrase(PASS, GROUP).await.unwrap().group_id;
    let at_limit: Vec<u8> = (0..DEFAULT_MAX_PAYLOAD).map(|i| (i % 253) as u8).collect();
    let meta = a.publish(&group, &at_limit, None).await.unwrap();
    expect_err(
        a.publish(&group, &vec![0u8; DEFAULT_MAX_PAYLOAD + 1], None)
            .await,
        ErrorKind::InvalidInput,
        "1 MiB + 1 payload",
    );
    assert_eq!(a.status().await.unwrap().entries, 1);
    // The receiving side accepts a maximal entry too.
    let b = open(db.path()).await;
    b.join_passphrase(PASS, GROUP).await.unwrap();
    connect(&b, &a).await;
    wait_for_count(&b, &group, 1, 20).await;
    let got = b.entry(&group, &meta.entry_id).await.unwrap().unwrap();
    assert_eq!(got.payload, at_limit);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_publish_returns_the_first_meta() {
    let dir = tempfile::tempdir().unwrap();
    let (node, group, _) = seeded(dir.path(), 1).await;
    let first = node
        .publish(&group, b"order #1", Some("client-1"))
        .await
        .unwrap();
    let again = node
        .publish(&group, b"order #1", Some("client-1"))
        .await
        .unwrap();
    assert_eq!(again, first, "same client id and payload: same meta");
    let entries = all_entries(&node, &group).await;
    assert_eq!(entries.len(), 2, "one entry stored for the client id");
    let before = counters(&node).await.published;

    let err = expect_err(
        node.publish(&group, b"order #2", Some("client-1")).await,
        ErrorKind::IdempotencyConflict,
        "same client id, different payload",
    );
    assert!(err.message().contains("client-1"), "{err}");
    assert_eq!(
        all_entries(&node, &group).await,
        entries,
        "first entry unchanged"
    );
    let kept = node.entry(&group, &first.entry_id).await.unwrap().unwrap();
    assert_eq!(kept.payload, b"order #1");
    assert_eq!(
        counters(&node).await.published,
        before,
        "nothing new published"
    );

    // Client ids are per content, not per payload: another id with the same payload is new.
    let other = node
        .publish(&group, b"order #1", Some("client-2"))
        .await
        .unwrap();
    assert_ne!(other.entry_id, first.entry_id);
    // Client id bounds.
    expect_err(
        node.publish(&group, b"x", Some("")).await,
        ErrorKind::InvalidInput,
        "empty client id",
    );
    expect_err(
        node.publish(&group, b"x", Some(&"c".repeat(257))).await,
        ErrorKind::InvalidInput,
        "257-byte client id",
    );
    node.publish(&group, b"x", Some(&"c".repeat(256)))
        .await
        .unwrap();
    assert_eq!(all_entries(&node, &group).await.len(), 4);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (node, group, _) = seeded(dir.path(), 1).await;
    let first = node
        .publish(&group, b"durable", Some("restart-cid"))
        .await
        .unwrap();
    let entries = all_entries(&node, &group).await;
    node.shutdown().await.unwrap();
    drop(node);

    let node = open_small(dir.path()).await;
    let again = node
        .publish(&group, b"durable", Some("restart-cid"))
        .await
        .unwrap();
    assert_eq!(again, first);
    expect_err(
        node.publish(&group, b"changed", Some("restart-cid")).await,
        ErrorKind::IdempotencyConflict,
        "conflicting payload after restart",
    );
    assert_entries(&node, &group, &entries).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_page_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let (node, group, seeded_entries) = seeded(dir.path(), 3).await;
    expect_err(
        node.entries(&group, 0, 0).await,
        ErrorKind::InvalidInput,
        "limit 0",
    );
    expect_err(
        node.entries(&group, 0, 10_001).await,
        ErrorKind::InvalidInput,
        "limit over the page maximum",
    );
    expect_err(
        node.entries(&group, 0, u32::MAX).await,
        ErrorKind::InvalidInput,
        "limit u32::MAX",
    );
    assert_eq!(
        node.entries(&group, 0, 10_000).await.unwrap(),
        seeded_entries
    );
    assert_eq!(
        node.entries(&group, 0, 1).await.unwrap(),
        seeded_entries[..1]
    );
    let last = seeded_entries.last().unwrap().meta.cursor;
    assert!(node.entries(&group, last, 10).await.unwrap().is_empty());
    assert!(
        node.entries(&group, i64::MAX as u64, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A cursor past anything the store can hold is either an empty page or InvalidInput,
    // never another kind of error.
    match node.entries(&group, u64::MAX, 10).await {
        Ok(page) => assert!(page.is_empty()),
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}"),
    }
    assert_entries(&node, &group, &seeded_entries).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_after_shutdown_is_closed() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (node, group, seeded_entries) = seeded(da.path(), 2).await;
    let other = open_small(db.path()).await;
    let ticket = other.addr().await.unwrap();
    let id = node.node_id();
    let eid = seeded_entries[0].meta.entry_id;
    node.shutdown().await.unwrap();

    use ErrorKind::Closed;
    expect_err(node.addr().await, Closed, "addr");
    expect_err(node.add_peer(&ticket).await, Closed, "add_peer");
    expect_err(node.add_peer("garbage").await, Closed, "add_peer(garbage)");
    expect_err(node.status().await, Closed, "status");
    expect_err(node.join_passphrase(PASS, GROUP).await, Closed, "join");
    expect_err(node.join_passphrase("", "").await, Closed, "join(bad)");
    expect_err(node.groups().await, Closed, "groups");
    expect_err(node.members(&group).await, Closed, "members");
    expect_err(node.publish(&group, b"late", None).await, Closed, "publish");
    expect_err(
        node.publish(&group, b"late", Some("cid")).await,
        Closed,
        "publish(cid)",
    );
    expect_err(node.entries(&group, 0, 10).await, Closed, "entries");
    expect_err(node.entries(&group, 0, 0).await, Closed, "entries(limit 0)");
    expect_err(node.entry(&group, &eid).await, Closed, "entry");
    expect_err(node.pause().await, Closed, "pause");
    expect_err(node.resume().await, Closed, "resume");
    expect_err(node.network_changed().await, Closed, "network_changed");
    // Idempotent shutdown; the id is still known.
    node.shutdown().await.unwrap();
    assert_eq!(node.node_id(), id);
    drop(node);

    // The data survived: reopen and read it back.
    let node = open_small(da.path()).await;
    assert_entries(&node, &group, &seeded_entries).await;
    node.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

/// Drains `sub` and reports whether it ended (returned `None`) within `secs`.
async fn ends_within(sub: &mut covey_core::Subscription, secs: u64) -> bool {
    tokio::time::timeout(Duration::from_secs(secs), async {
        while sub.recv().await.is_some() {}
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_taken_after_shutdown_ends_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_small(dir.path()).await;
    node.shutdown().await.unwrap();
    let mut late = node.subscribe();
    assert!(
        ends_within(&mut late, 2).await,
        "a subscription taken after shutdown never ends (recv waits forever)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_ends_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_small(dir.path()).await;
    let mut sub = node.subscribe();
    node.shutdown().await.unwrap();
    let ended = ends_within(&mut sub, 2).await;
    drop(node);
    assert!(
        ended,
        "a subscription keeps waiting after shutdown while the Node value is alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_ends_when_the_node_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_small(dir.path()).await;
    let mut sub = node.subscribe();
    node.shutdown().await.unwrap();
    drop(node);
    assert!(
        ends_within(&mut sub, 2).await,
        "a subscription outlived its node"
    );
}
