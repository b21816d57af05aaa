//! `covey demo --managed`: three embedded nodes on loopback, each in its own temp dir, run the
//! managed-group story: A creates a group, B joins by link, C by short code (C finds A through
//! the DHT, bootstrapped on A), all three publish and converge, A removes C, and what A
//! publishes next reaches B and never C, while what C publishes after its removal reaches
//! nobody.

use std::future::Future;
use std::time::{Duration, Instant};

use covey_core::{CoveyError, ErrorKind, GroupId, Node, NodeConfig, Result};

use super::{POLL, all_entries, ms};
use crate::managed::{accept, group_info};
use crate::outln;

/// The demo group's name.
const GROUP: &str = "covey-managed-demo";
/// The nodes' names, in the order they are opened.
const NAMES: [&str; 3] = ["A", "B", "C"];
/// How long the demo keeps watching, after B has A's post-removal entry, that it does not
/// reach C and that C's reaches nobody.
const QUIET: Duration = Duration::from_secs(2);
/// What A publishes after removing C.
const AFTER: &str = "A: after removing C";
/// What C publishes after its removal.
const C_AFTER: &str = "C: after its removal";

/// Runs the story; an error means a step failed or did not happen within `timeout`.
pub async fn run(timeout: Duration) -> Result<()> {
    let mut dirs = Vec::with_capacity(NAMES.len());
    for _ in NAMES {
        dirs.push(
            tempfile::Builder::new()
                .prefix("covey-demo-")
                .tempdir()
                .map_err(|e| CoveyError::storage(format!("cannot create a temp dir: {e}")))?,
        );
    }
    let mut nodes: Vec<Node> = Vec::with_capacity(NAMES.len());
    let mut result = Ok(());
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = NodeConfig::loopback(dir.path());
        // C is handed A as its DHT bootstrap: a short code is found through the DHT.
        if i == 2 {
            match nodes.first() {
                Some(a) => match a.addr().await {
                    Ok(ticket) => config.bootstrap = vec![ticket],
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                },
                None => break,
            }
        }
        match Node::open(config).await {
            Ok(node) => nodes.push(node),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        result = match nodes.as_slice() {
            [a, b, c] => story(a, b, c, timeout).await,
            _ => Err(CoveyError::internal("the managed demo needs three nodes")),
        };
    }
    for (node, name) in nodes.iter().zip(NAMES) {
        if let Err(e) = node.shutdown().await {
            log::warn!("demo node {name} shutdown: {e}");
        }
    }
    // The nodes go before their dirs.
    drop(nodes);
    drop(dirs);
    result
}

/// Polls `check` until it holds; returns how long that took, or a `Timeout` error naming
/// `what`.
async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(CoveyError::new(
                ErrorKind::Timeout,
                format!("{what}: not within {} s", timeout.as_secs()),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The payloads `node` holds in `group`, as text.
async fn payloads(node: &Node, group: &GroupId) -> Result<Vec<String>> {
    Ok(all_entries(node, group)
        .await?
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect())
}

/// Whether `node` holds every payload of `want` in `group`.
async fn holds_all(node: &Node, group: &GroupId, want: &[String]) -> Result<bool> {
    let have = payloads(node, group).await?;
    Ok(want.iter().all(|w| have.contains(w)))
}

/// `node`'s epoch in `group`.
async fn epoch(node: &Node, group: &GroupId) -> Result<u64> {
    Ok(group_info(node, group).await?.epoch)
}

/// The members of `group` as `node` sees them, as `NAME role` with names for the demo nodes.
async fn roster(node: &Node, group: &GroupId, all: [&Node; 3]) -> Result<String> {
    let mut out = Vec::new();
    for m in node.members(group).await? {
        let name = all
            .iter()
            .zip(NAMES)
            .find(|(n, _)| n.node_id() == m.node_id)
            .map(|(_, name)| name.to_owned())
            .unwrap_or_else(|| m.node_id.fmt_short().to_string());
        let role = m.role.map(|r| r.as_str()).unwrap_or("-");
        out.push(format!("{name} {role}"));
    }
    out.sort();
    Ok(out.join(", "))
}

/// The story, step by step; each step prints what it showed.
async fn story(a: &Node, b: &Node, c: &Node, timeout: Duration) -> Result<()> {
    let all = [a, b, c];
    outln!("covey demo --managed: 3 nodes on 127.0.0.1, relays and discovery off")?;
    for (node, name) in all.iter().zip(NAMES) {
        let note = if name == "C" {
            "  (DHT bootstrap: A)"
        } else {
            ""
        };
        outln!("  {name}  {}{note}", node.node_id())?;
    }

    let info = a.create_group(GROUP).await?;
    let g = info.group_id;
    outln!(
        "1. A created managed group {g} {GROUP:?}: epoch {}, members: {}",
        info.epoch,
        roster(a, &g, all).await?
    )?;

    let started = Instant::now();
    let for_b = a.create_invite(&g, 600, true).await?;
    let joined = accept(b, &for_b.link).await?;
    if joined.group_id != g {
        return Err(CoveyError::internal("B joined another group than A's"));
    }
    outln!(
        "2. A made a single-use invite link; B accepted it and is a member ({} ms)",
        ms(started.elapsed())
    )?;

    let started = Instant::now();
    let for_c = a.create_invite(&g, 600, true).await?;
    let joined = accept(c, &for_c.short_code).await?;
    if joined.group_id != g {
        return Err(CoveyError::internal("C joined another group than A's"));
    }
    outln!(
        "3. A made short code {}; C found A through the DHT, ran the code exchange and is a \
         member ({} ms)",
        for_c.short_code,
        ms(started.elapsed())
    )?;
    outln!("   members as A sees them: {}", roster(a, &g, all).await?)?;

    let started = Instant::now();
    let mut first = Vec::new();
    for (node, name) in all.iter().zip(NAMES) {
        let text = format!("{name}: hello from {name}");
        node.publish(&g, text.as_bytes(), None).await?;
        first.push(text);
    }
    for (node, name) in all.iter().zip(NAMES) {
        wait_for(timeout, &format!("{name} holds all three entries"), || {
            holds_all(node, &g, &first)
        })
        .await?;
    }
    outln!(
        "4. A, B and C each published one entry; all three hold all 3 ({} ms)",
        ms(started.elapsed())
    )?;

    // C goes offline first, like a phone in a drawer: it will not hear of its removal, so
    // what it publishes next shows what the members do with a removed node's entries.
    c.pause().await?;
    let started = Instant::now();
    a.remove_member(&g, &c.node_id()).await?;
    let new_epoch = epoch(a, &g).await?;
    wait_for(timeout, "B follows A to the new epoch", || async move {
        Ok(epoch(b, &g).await? == new_epoch)
    })
    .await?;
    outln!(
        "5. C went offline; A removed C: epoch {new_epoch}, members: {}; B followed to epoch \
         {new_epoch} ({} ms)",
        roster(a, &g, all).await?,
        ms(started.elapsed())
    )?;

    let started = Instant::now();
    a.publish(&g, AFTER.as_bytes(), None).await?;
    // Offline, C has not heard of its removal: it publishes in the old epoch, and every
    // member refuses the entry. (A node that has heard refuses to publish at all.)
    let c_published = match c.publish(&g, C_AFTER.as_bytes(), None).await {
        Ok(_) => {
            outln!(
                "6. A published {AFTER:?}; C, offline at epoch {} and unaware of its removal, \
                 published {C_AFTER:?} and came back online",
                epoch(c, &g).await?
            )?;
            true
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            outln!(
                "6. A published {AFTER:?}; C, which has learned of its removal, was refused \
                 publishing {C_AFTER:?} on C itself ({})",
                e.kind()
            )?;
            false
        }
        Err(e) => return Err(e),
    };
    c.resume().await?;
    let after = [AFTER.to_owned()];
    wait_for(timeout, "B receives A's post-removal entry", || {
        holds_all(b, &g, &after)
    })
    .await?;
    outln!(
        "7. B received A's post-removal entry ({} ms)",
        ms(started.elapsed())
    )?;

    // Give the removed node every chance to get it (and its own entry every chance to spread).
    tokio::time::sleep(QUIET).await;
    let on_c = payloads(c, &g).await?;
    if on_c.iter().any(|p| p == AFTER) {
        return Err(CoveyError::crypto(
            "C, the removed node, holds A's post-removal entry",
        ));
    }
    outln!(
        "8. {} s later C holds {} entries, not A's post-removal one: C, the removed node, \
         could not read the post-removal entry",
        QUIET.as_secs(),
        on_c.len()
    )?;
    for (node, name) in [(a, "A"), (b, "B")] {
        if payloads(node, &g).await?.iter().any(|p| p == C_AFTER) {
            return Err(CoveyError::internal(format!(
                "{name} holds the entry C published after its removal"
            )));
        }
    }
    let (held_a, held_b) = (payloads(a, &g).await?.len(), payloads(b, &g).await?.len());
    let how = if c_published {
        "refused by every member"
    } else {
        "refused on C itself"
    };
    outln!(
        "   A holds {held_a} entries and B {held_b}, none of them C's post-removal one \
         ({how}): C's later publish reached nobody"
    )?;
    outln!("managed demo passed")
}
