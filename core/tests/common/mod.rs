//! Helpers shared by the integration tests: loopback nodes in temp dirs and waiting for
//! convergence with a deadline (a failed wait is a failed test, never a hang). The tests that
//! attack a node through a raw peer share [`hostile`] on top.
#![allow(dead_code)]

pub mod hostile;

use std::time::Duration;

use covey_core::{Event, GroupId, Node, NodeConfig, Subscription};

/// A passphrase group name used across tests.
pub const GROUP: &str = "test-group";
/// The passphrase used across tests.
pub const PASS: &str = "correct horse battery staple";

/// Opens a loopback node in `dir`.
pub async fn open(dir: &std::path::Path) -> Node {
    Node::open(NodeConfig::loopback(dir))
        .await
        .expect("open node")
}

/// Connects `a` to `b` by ticket.
pub async fn connect(a: &Node, b: &Node) {
    let ticket = b.addr().await.expect("addr");
    a.add_peer(&ticket).await.expect("add_peer");
}

/// Waits until `node` holds `count` entries in `group`, or panics after `secs`.
pub async fn wait_for_count(node: &Node, group: &GroupId, count: usize, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let n = all_entries(node, group).await.len();
        if n >= count {
            assert_eq!(n, count, "more entries than expected");
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "node {} has {n} of {count} entries after {secs}s",
                node.node_id().fmt_short()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every entry of a group on `node`, in cursor order.
pub async fn all_entries(node: &Node, group: &GroupId) -> Vec<covey_core::Entry> {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let page = node
            .entries(group, cursor, 1000)
            .await
            .expect("the group's entries are readable");
        let Some(last) = page.last() else { break };
        cursor = last.meta.cursor;
        out.extend(page);
    }
    out
}

/// Waits for the first event matching `pred`, or panics after `secs`.
pub async fn wait_event(sub: &mut Subscription, secs: u64, pred: impl Fn(&Event) -> bool) -> Event {
    let deadline = Duration::from_secs(secs);
    tokio::time::timeout(deadline, async {
        loop {
            match sub.recv().await {
                Some(e) if pred(&e) => return e,
                Some(_) => continue,
                None => panic!("subscription ended"),
            }
        }
    })
    .await
    .expect("event did not arrive in time")
}

/// Asserts that `result` failed with `kind` and returns the error; `what` names the call.
pub fn expect_err<T: std::fmt::Debug>(
    result: covey_core::Result<T>,
    kind: covey_core::ErrorKind,
    what: &str,
) -> covey_core::CoveyError {
    match result {
        Ok(v) => panic!("{what}: expected a {kind:?} error, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: wrong error kind ({e})");
            e
        }
    }
}

/// Polls `check` every 20 ms until it returns true, or panics after `secs` naming `what`.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sync counters of `node`.
pub async fn counters(node: &Node) -> covey_core::SyncCounters {
    node.status().await.expect("status").counters
}

/// Waits for a `Warning` of `kind` and returns its message, or panics after `secs`.
pub async fn wait_warning(sub: &mut Subscription, secs: u64, kind: &str) -> String {
    let ev = wait_event(
        sub,
        secs,
        |e| matches!(e, Event::Warning { kind: k, .. } if k == kind),
    )
    .await;
    match ev {
        Event::Warning { message, .. } => message,
        _ => unreachable!(),
    }
}

/// A raw iroh endpoint bound the way a default-config node binds (see
/// `covey_core::testing::loopback_endpoint`). Nothing leaves the machine.
pub async fn loopback_endpoint(secret: iroh::SecretKey) -> iroh::Endpoint {
    covey_core::testing::loopback_endpoint(secret)
        .await
        .expect("bind raw endpoint")
}

/// A loopback UDP port free right now, outside the ephemeral range: while a node that owns it
/// is down, no endpoint another test binds to port 0 can be handed its port.
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16.min(ephemeral_low / 2);
    let span = u64::from(ephemeral_low - low);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = now ^ u64::from(std::process::id());
    (0..1000u64)
        .map(|i| low + ((seed + i * 7919) % span) as u16)
        .find(|&port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok())
        .expect("a free loopback port below the ephemeral range")
}

/// Opens a node from `config()`, retrying for up to 5 s while its fixed port is still held:
/// the old endpoint's UDP socket is released when its last handle drops, which can be a
/// moment after `shutdown` returns (as an app reopening on a fixed port would retry).
pub async fn open_retrying(config: impl Fn() -> NodeConfig) -> Node {
    for _ in 0..50 {
        match Node::open(config()).await {
            Ok(node) => return node,
            Err(e) if e.kind() == covey_core::ErrorKind::Network => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("open node: {e:?}"),
        }
    }
    panic!("the node's port stayed taken for 5 s")
}
