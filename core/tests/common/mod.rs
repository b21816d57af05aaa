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
