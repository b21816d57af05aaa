//! The DHT over real iroh on loopback: 30 nodes in one process, put/get, compare-and-swap,
//! providers, get latency, group rendezvous between members given only a bootstrap ticket
//! (what its observers see is `rendezvous_privacy.rs`),
//! bootstrap falling back to cached contacts, bad arguments and calls after shutdown.

mod common;

use std::time::{Duration, Instant};

use covey_core::{ErrorKind, Node, NodeConfig, Result};

const NODES: usize = 30;

/// Resident set size of this process in KiB, where /proc is available.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Retries `f` every 100 ms until it returns `Some`, or panics after `secs` naming `what`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not done after {secs}s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ok_or_log<T>(r: Result<T>, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("{what}: {e} (retrying)");
            None
        }
    }
}

/// Opens `NODES` loopback nodes; node `i` adds node 0 and up to two other earlier nodes.
async fn network(dirs: &[tempfile::TempDir]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let node = common::open(dir.path()).await;
        let mut seeds = vec![0, i / 2, i.saturating_sub(1)];
        seeds.sort_unstable();
        seeds.dedup();
        for s in seeds {
            if s < i {
                common::connect(&node, &nodes[s]).await;
            }
        }
        nodes.push(node);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_nodes_put_get_cas_providers() {
    let dirs: Vec<_> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let rss_before = rss_kib();
    let nodes = network(&dirs).await;
    let rss_after = rss_kib();
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        println!(
            "memory: {NODES} nodes added {} KiB RSS ({} KiB per node)",
            a.saturating_sub(b),
            a.saturating_sub(b) / NODES as u64
        );
    }
    // Let the bootstrap self-lookups settle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Put on one node, get from several others.
    let publisher = &nodes[7];
    let seq = eventually(20, "first put", || async {
        ok_or_log(
            publisher.dht_put("profile", b"hello dht", 600, None).await,
            "put",
        )
    })
    .await;
    assert!(seq >= 1);
    for reader in [0usize, 3, 12, 19, 25, 29] {
        let node = &nodes[reader];
        let record = eventually(20, "get from another node", || async {
            ok_or_log(node.dht_get(&publisher.node_id(), "profile").await, "get").flatten()
        })
        .await;
        assert_eq!(record.publisher, publisher.node_id());
        assert_eq!(record.name, "profile");
        assert_eq!(record.value, b"hello dht");
        assert_eq!(record.seq, seq, "node {reader} sees the published seq");
        assert!(record.expires_at_ms > 0);
    }
    // A name nobody published is None.
    let missing = nodes[4]
        .dht_get(&publisher.node_id(), "never-published")
        .await
        .unwrap();
    assert!(missing.is_none());

    // Compare-and-swap: the current sequence succeeds, a stale one is a Conflict.
    let writer = &nodes[11];
    let first = eventually(20, "cas first put", || async {
        ok_or_log(writer.dht_put("counter", b"1", 600, Some(0)).await, "put")
    })
    .await;
    let second = writer
        .dht_put("counter", b"2", 600, Some(first))
        .await
        .unwrap();
    assert!(second > first);
    common::expect_err(
        writer.dht_put("counter", b"3", 600, Some(first)).await,
        ErrorKind::Conflict,
        "stale expected_seq",
    );
    let seen = eventually(20, "cas result visible", || async {
        ok_or_log(nodes[22].dht_get(&writer.node_id(), "counter").await, "get")
            .flatten()
            .filter(|r| r.seq == second)
    })
    .await;
    assert_eq!(seen.value, b"2");

    // Providers: two nodes provide, a third finds both.
    let key = b"covey-test-rendezvous";
    for p in [3usize, 17] {
        let node = &nodes[p];
        eventually(20, "provide", || async {
            ok_or_log(node.dht_provide(key, 600).await, "provide")
        })
        .await;
    }
    let want = {
        let mut w = vec![nodes[3].node_id(), nodes[17].node_id()];
        w.sort();
        w
    };
    let found = eventually(20, "providers", || async {
        ok_or_log(nodes[26].dht_providers(key).await, "providers")
            .filter(|found| want.iter().all(|w| found.contains(w)))
    })
    .await;
    assert!(want.iter().all(|w| found.contains(w)));
    let none = nodes[26]
        .dht_providers(b"nobody provides this")
        .await
        .unwrap();
    assert!(none.is_empty());

    // Latency of dht_get over 100 gets from different nodes (printed, never asserted).
    let mut times = Vec::with_capacity(100);
    for i in 0..100 {
        let node = &nodes[(i * 7 + 1) % NODES];
        let start = Instant::now();
        let record = node.dht_get(&publisher.node_id(), "profile").await.unwrap();
        times.push(start.elapsed());
        assert_eq!(record.map(|r| r.value), Some(b"hello dht".to_vec()));
    }
    times.sort();
    println!(
        "dht_get latency over {} gets on {NODES} loopback nodes: p50 {:?}, p95 {:?}, max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() * 95 / 100],
        times[times.len() - 1]
    );

    for node in &nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_and_closed() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = common::open(da.path()).await;
    let b = common::open(db.path()).await;
    common::connect(&b, &a).await;
    let kind = ErrorKind::InvalidInput;
    common::expect_err(
        a.dht_put("big", &[0u8; 1025], 60, None).await,
        kind,
        "1025-byte value",
    );
    common::expect_err(a.dht_put("", b"v", 60, None).await, kind, "empty name");
    common::expect_err(
        a.dht_put(&"n".repeat(300), b"v", 60, None).await,
        kind,
        "300-byte name",
    );
    common::expect_err(a.dht_put("ttl", b"v", 0, None).await, kind, "zero ttl");
    common::expect_err(a.dht_get(&b.node_id(), "").await, kind, "get empty name");
    common::expect_err(a.dht_provide(b"", 60).await, kind, "empty provider key");
    common::expect_err(a.dht_provide(b"k", 0).await, kind, "zero provider ttl");
    common::expect_err(
        a.dht_providers(&[0u8; 2000]).await,
        kind,
        "huge provider key",
    );

    // A 1 KiB value is fine; the two nodes can exchange it.
    let seq = eventually(20, "put between two nodes", || async {
        ok_or_log(b.dht_put("ok", &[7u8; 1024], 60, None).await, "put")
    })
    .await;
    let got = a.dht_get(&b.node_id(), "ok").await.unwrap().unwrap();
    assert_eq!((got.seq, got.value.len()), (seq, 1024));

    a.shutdown().await.unwrap();
    let closed = ErrorKind::Closed;
    common::expect_err(
        a.dht_put("x", b"v", 60, None).await,
        closed,
        "put after shutdown",
    );
    common::expect_err(
        a.dht_get(&b.node_id(), "x").await,
        closed,
        "get after shutdown",
    );
    common::expect_err(
        a.dht_provide(b"k", 60).await,
        closed,
        "provide after shutdown",
    );
    common::expect_err(
        a.dht_providers(b"k").await,
        closed,
        "providers after shutdown",
    );
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_answers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path()).await;
    let start = Instant::now();
    let got = node.dht_get(&node.node_id(), "nothing").await.unwrap();
    assert!(got.is_none());
    // With no peers the node keeps its own record.
    let seq = node.dht_put("alone", b"v", 60, None).await.unwrap();
    let got = node
        .dht_get(&node.node_id(), "alone")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.seq, got.value), (seq, b"v".to_vec()));
    assert!(node.dht_providers(b"k").await.unwrap().is_empty());
    println!(
        "lone node: get, put and providers answered in {:?}",
        start.elapsed()
    );
    node.shutdown().await.unwrap();
}

/// Opens a loopback node whose only configured peer is `bootstrap`, searching rendezvous
/// every second.
async fn open_with_bootstrap(dir: &std::path::Path, bootstrap: &Node) -> Node {
    let mut config = NodeConfig::loopback(dir);
    config.bootstrap = vec![bootstrap.addr().await.unwrap()];
    config.dht.rendezvous_interval_ms = 1_000;
    Node::open(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rendezvous_brings_members_together_from_only_a_bootstrap_ticket() {
    // 27 nodes form the network; two members and one outsider join it, 30 in all.
    let dirs: Vec<_> = (0..NODES - 3)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let nodes = network(&dirs).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Each member knows one different network node and nothing about the other member.
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = open_with_bootstrap(da.path(), &nodes[5]).await;
    let b = open_with_bootstrap(db.path(), &nodes[20]).await;
    // The outsider has the group's name but not its passphrase: another group entirely.
    let c = open_with_bootstrap(dc.path(), &nodes[12]).await;
    let started = Instant::now();
    let group = a
        .join_passphrase(common::PASS, common::GROUP)
        .await
        .unwrap();
    let group_b = b
        .join_passphrase(common::PASS, common::GROUP)
        .await
        .unwrap();
    assert_eq!(group.group_id, group_b.group_id);
    let other = c
        .join_passphrase("not the passphrase", common::GROUP)
        .await
        .unwrap();
    assert_ne!(other.group_id, group.group_id);

    a.publish(&group.group_id, b"found you", None)
        .await
        .unwrap();
    common::wait_for_count(&b, &group.group_id, 1, 60).await;
    let got = common::all_entries(&b, &group.group_id).await;
    assert_eq!(got[0].payload, b"found you");
    assert_eq!(got[0].meta.author, a.node_id());
    println!(
        "rendezvous: members met and synced {:?} after joining",
        started.elapsed()
    );
    let (sa, sb) = (a.status().await.unwrap(), b.status().await.unwrap());
    assert!(
        sa.connected_peers.contains(&b.node_id()) || sb.connected_peers.contains(&a.node_id()),
        "the members are connected"
    );
    assert!(
        sa.dht.rendezvous_found + sb.dht.rendezvous_found >= 1,
        "a member was found through the rendezvous"
    );
    // Each remembered the other (as add_peer would) or was dialed by it.
    assert!(sa.dht.contacts > 0 && sb.dht.contacts > 0);

    // Every record the members found opened: nobody here forges.
    assert_eq!(a.rendezvous_unopened() + b.rendezvous_unopened(), 0);

    // Give the outsider a few search rounds: it must find neither member, and it never even
    // sees the group's records (another group's key is another key).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sc = c.status().await.unwrap();
    assert_eq!(sc.dht.rendezvous_found, 0, "the outsider found nobody");
    assert_eq!(c.rendezvous_unopened(), 0);
    assert!(!sc.connected_peers.contains(&a.node_id()));
    assert!(!sc.connected_peers.contains(&b.node_id()));
    assert!(common::all_entries(&c, &other.group_id).await.is_empty());
    // Nor can anyone look the members up by what an outsider knows: the group's public id.
    assert!(
        nodes[9]
            .dht_providers(&group.group_id.0)
            .await
            .unwrap()
            .is_empty()
    );

    // A member that goes away stays announced until its record expires; the others dial it
    // (once) but do not count it as found again at every search.
    let found_before = a.status().await.unwrap().dht.rendezvous_found;
    b.shutdown().await.unwrap();
    // Searches run every second, each up to a request timeout (2 s) longer while the dead
    // member is still in routing tables: 10 s is several searches.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let found_after = a.status().await.unwrap().dht.rendezvous_found;
    assert!(
        found_after <= found_before + 1,
        "found {found_before} then {found_after} over several searches"
    );
    for node in [&a, &c] {
        node.shutdown().await.unwrap();
    }
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_falls_back_to_contacts_cached_in_the_store() {
    let dirs: Vec<_> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = network(&dirs).await;
    let publisher = &nodes[6];
    eventually(20, "put", || async {
        ok_or_log(
            publisher.dht_put("cached", b"still here", 600, None).await,
            "put",
        )
    })
    .await;

    // A node whose only configured peer is node 1 joins, reads, and shuts down cleanly.
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::loopback(dir.path());
    config.bootstrap = vec![nodes[1].addr().await.unwrap()];
    let joiner = Node::open(config.clone()).await.unwrap();
    eventually(20, "first get", || async {
        ok_or_log(joiner.dht_get(&publisher.node_id(), "cached").await, "get").flatten()
    })
    .await;
    let status = joiner.status().await.unwrap();
    assert_eq!(status.dht.bootstrap_fallbacks, 0, "the ticket worked");
    assert!(status.dht.contacts > 1);
    joiner.shutdown().await.unwrap();

    // Its bootstrap node goes away for good; the same config now names a dead peer. A record
    // published meanwhile can only be read through the network.
    nodes[1].shutdown().await.unwrap();
    eventually(20, "put while the joiner is away", || async {
        ok_or_log(publisher.dht_put("fresh", b"new", 600, None).await, "put")
    })
    .await;
    let joiner = Node::open(config).await.unwrap();
    common::wait_until(30, "fallback to cached contacts", || async {
        joiner.status().await.unwrap().dht.bootstrap_fallbacks == 1
    })
    .await;
    let record = eventually(20, "get after fallback", || async {
        ok_or_log(joiner.dht_get(&publisher.node_id(), "cached").await, "get").flatten()
    })
    .await;
    assert_eq!(record.value, b"still here");
    let fresh = eventually(20, "get of a record put while away", || async {
        ok_or_log(joiner.dht_get(&publisher.node_id(), "fresh").await, "get").flatten()
    })
    .await;
    assert_eq!(fresh.value, b"new");
    assert!(joiner.status().await.unwrap().dht.contacts > 1);
    joiner.shutdown().await.unwrap();
    for (i, node) in nodes.iter().enumerate() {
        if i != 1 {
            node.shutdown().await.unwrap();
        }
    }
}

/// Writes `bytes` as one stream to `conn` and finishes it.
async fn send_stream(conn: &iroh::endpoint::Connection, bytes: &[u8]) {
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
}

/// A DHT frame as the driver writes it: `u32 frame length | u32 message length | message`,
/// with no address hints.
fn dht_frame(message: &[u8]) -> Vec<u8> {
    let mut out = ((4 + message.len()) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_dht_frames_are_dropped_and_counted_and_the_node_still_answers() {
    use covey_core::dht::messages::{self, Message, Request, Response};
    use covey_core::node::DHT_ALPN;

    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path()).await;
    let ticket: iroh_tickets::endpoint::EndpointTicket =
        node.addr().await.unwrap().parse().unwrap();
    let raw = common::loopback_endpoint(iroh::SecretKey::from_bytes(&[42; 32])).await;
    let conn = raw
        .connect(ticket.endpoint_addr().clone(), DHT_ALPN)
        .await
        .unwrap();

    // A frame length far over the limit, a message length past the frame's end, a message
    // that does not decode, and a frame that never completes.
    send_stream(&conn, &u32::MAX.to_be_bytes()).await;
    let mut past_end = 8u32.to_be_bytes().to_vec();
    past_end.extend_from_slice(&100u32.to_be_bytes());
    past_end.extend_from_slice(&[0; 4]);
    send_stream(&conn, &past_end).await;
    send_stream(&conn, &dht_frame(&[0xff, 0xff, 0xff])).await;
    let (mut stalled, _r) = conn.open_bi().await.unwrap();
    stalled.write_all(&100u32.to_be_bytes()).await.unwrap();

    common::wait_until(20, "hostile frames counted", || async {
        let d = node.status().await.unwrap().dht;
        d.frames_dropped >= 3 && d.counters.undecodable >= 1
    })
    .await;
    let d = node.status().await.unwrap().dht;
    assert_eq!(d.counters.undecodable, 1, "{d:?}");
    assert_eq!(d.counters.requests_in, 0, "nothing hostile was answered");

    // The same connection still gets an answer to an honest ping, on a stream of its own.
    let ping = messages::encode(&Message::Request {
        id: 77,
        body: Request::Ping,
    })
    .unwrap();
    send_stream(&conn, &dht_frame(&ping)).await;
    let (_send, mut recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let frame = recv.read_to_end(64 * 1024).await.unwrap();
    let len = u32::from_be_bytes(frame[4..8].try_into().unwrap()) as usize;
    let answer = messages::decode(&frame[8..8 + len]).unwrap();
    assert_eq!(
        answer,
        Message::Response {
            id: 77,
            body: Response::Pong
        }
    );
    assert_eq!(node.status().await.unwrap().dht.counters.requests_in, 1);
    drop(stalled);
    node.shutdown().await.unwrap();
    raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_without_hints_is_known_by_the_address_its_connection_shows() {
    use covey_core::dht::Key;
    use covey_core::dht::messages::{self, Message, Request, Response};
    use covey_core::node::DHT_ALPN;
    use iroh::EndpointAddr;

    let dir = tempfile::tempdir().unwrap();
    let node = common::open(dir.path()).await;
    let ticket: iroh_tickets::endpoint::EndpointTicket =
        node.addr().await.unwrap().parse().unwrap();
    // A quiet peer pings the node with no hints at all, as a rendezvous request goes.
    let quiet = common::loopback_endpoint(iroh::SecretKey::from_bytes(&[43; 32])).await;
    let quiet_conn = quiet
        .connect(ticket.endpoint_addr().clone(), DHT_ALPN)
        .await
        .unwrap();
    let ping = messages::encode(&Message::Request {
        id: 1,
        body: Request::Ping,
    })
    .unwrap();
    send_stream(&quiet_conn, &dht_frame(&ping)).await;
    common::wait_until(20, "the ping answered", || async {
        node.status().await.unwrap().dht.counters.requests_in == 1
    })
    .await;

    // Another peer asks for the nodes closest to the quiet one: the answer names it, with the
    // address its connection came from as the hint.
    let asker = common::loopback_endpoint(iroh::SecretKey::from_bytes(&[44; 32])).await;
    let conn = asker
        .connect(ticket.endpoint_addr().clone(), DHT_ALPN)
        .await
        .unwrap();
    let quiet_id = quiet.id();
    let find = messages::encode(&Message::Request {
        id: 2,
        body: Request::FindNode {
            target: Key(*quiet_id.as_bytes()),
        },
    })
    .unwrap();
    send_stream(&conn, &dht_frame(&find)).await;
    let (_send, mut recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let frame = recv.read_to_end(64 * 1024).await.unwrap();
    let len = u32::from_be_bytes(frame[4..8].try_into().unwrap()) as usize;
    assert_eq!(
        messages::decode(&frame[8..8 + len]).unwrap(),
        Message::Response {
            id: 2,
            body: Response::Nodes {
                contacts: vec![Key(*quiet_id.as_bytes())]
            }
        }
    );
    let hints: Vec<EndpointAddr> = postcard::from_bytes(&frame[8 + len..]).unwrap();
    let quiet_bound = quiet.bound_sockets();
    let hint = hints
        .iter()
        .find(|h| h.id == quiet_id)
        .expect("a hint for the quiet peer");
    assert!(
        hint.ip_addrs().any(|a| quiet_bound.contains(a)),
        "{hint:?} is where the quiet peer's connection came from ({quiet_bound:?})"
    );
    node.shutdown().await.unwrap();
    quiet.close().await;
    asker.close().await;
}
