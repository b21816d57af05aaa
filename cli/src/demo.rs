//! `covey demo`: several embedded nodes on loopback, each in its own temp dir, join one
//! passphrase group, publish concurrently, and must converge on the same entries in the same
//! order with every payload decrypting to what its author published.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use covey_core::node::DEFAULT_MAX_PAYLOAD;
use covey_core::{CoveyError, Entry, EntryId, ErrorKind, GroupId, Node, NodeConfig, Result};

use crate::outln;

mod managed;

/// The demo group's name.
const GROUP: &str = "covey-demo";
/// The demo group's passphrase (the nodes are throwaway and loopback-only).
const PASSPHRASE: &str = "covey demo passphrase";
/// Most nodes the demo runs (each holds an Argon2id-derived key and an iroh endpoint).
const MAX_NODES: usize = 16;
/// Most entries each node publishes.
const MAX_ENTRIES: u32 = 100_000;
/// Most payload bytes published in all, so a typo cannot fill the disk.
const MAX_TOTAL_BYTES: u64 = 256 << 20;
/// How often convergence is polled.
const POLL: Duration = Duration::from_millis(20);

/// How the demo nodes are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Topology {
    /// Each node dials the next, and the last dials the first.
    Ring,
    /// Each node dials the next; the ends hear each other only through the middle.
    Line,
}

/// Options of `covey demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many nodes (2 to 16).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How many entries each node publishes.
    #[arg(long, default_value_t = 20)]
    entries: u32,
    /// Size of each payload in bytes (at most 1 MiB).
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// How the nodes are linked with add_peer.
    #[arg(long, value_enum, default_value_t = Topology::Ring)]
    topology: Topology,
    /// Give up (and exit 1) if the nodes have not converged this many seconds after
    /// publishing starts (with --managed: bounds each wait of the story).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    timeout_secs: u64,
    /// Run the managed-group story instead: three nodes A, B and C; A creates a group, B
    /// joins by link, C by short code, all publish, A removes C, and the demo checks that
    /// A's next entry reaches B but not C and that C's later entries reach nobody.
    #[arg(
        long,
        conflicts_with_all = ["nodes", "entries", "payload_bytes", "topology"]
    )]
    managed: bool,
}

impl DemoArgs {
    /// Refuses sizes the demo cannot or should not run.
    fn validate(&self) -> Result<()> {
        if !(2..=MAX_NODES).contains(&self.nodes) {
            return Err(CoveyError::invalid(format!(
                "--nodes must be 2 to {MAX_NODES}"
            )));
        }
        if !(1..=MAX_ENTRIES).contains(&self.entries) {
            return Err(CoveyError::invalid(format!(
                "--entries must be 1 to {MAX_ENTRIES}"
            )));
        }
        if self.payload_bytes > DEFAULT_MAX_PAYLOAD {
            return Err(CoveyError::invalid(format!(
                "--payload-bytes must be at most {DEFAULT_MAX_PAYLOAD}"
            )));
        }
        let total = self.nodes as u64 * u64::from(self.entries) * self.payload_bytes as u64;
        if total > MAX_TOTAL_BYTES {
            return Err(CoveyError::invalid(format!(
                "the demo would publish {total} payload bytes; keep nodes x entries x \
                 payload-bytes under {MAX_TOTAL_BYTES}"
            )));
        }
        if !(1..=3600).contains(&self.timeout_secs) {
            return Err(CoveyError::invalid("--timeout-secs must be 1 to 3600"));
        }
        Ok(())
    }

    /// The (dialer, dialed) pairs.
    fn links(&self) -> Vec<(usize, usize)> {
        let mut links: Vec<_> = (0..self.nodes.saturating_sub(1))
            .map(|i| (i, i + 1))
            .collect();
        if self.topology == Topology::Ring && self.nodes > 2 {
            links.push((self.nodes - 1, 0));
        }
        links
    }
}

/// The payload node `node` publishes as its `index`th entry: readable text, exactly `len`
/// bytes, different for every (node, index) as long as `len` allows.
fn payload(node: usize, index: u32, len: usize) -> Vec<u8> {
    let mut out = format!("node {node} entry {index} ").into_bytes();
    let mut k = 0usize;
    while out.len() < len {
        let letter = (node * 31 + index as usize * 7 + k) % 26;
        out.push(b'a' + letter as u8);
        k += 1;
    }
    out.truncate(len);
    out
}

/// Milliseconds, for printing.
fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Runs the demo; an error means it did not converge (or could not run).
pub async fn run(args: &DemoArgs) -> Result<()> {
    args.validate()?;
    if args.managed {
        return managed::run(Duration::from_secs(args.timeout_secs)).await;
    }
    let mut dirs = Vec::with_capacity(args.nodes);
    for _ in 0..args.nodes {
        let dir = tempfile::Builder::new()
            .prefix("covey-demo-")
            .tempdir()
            .map_err(|e| CoveyError::storage(format!("cannot create a temp dir: {e}")))?;
        dirs.push(dir);
    }
    let mut nodes = Vec::with_capacity(args.nodes);
    let mut result = Ok(());
    for dir in &dirs {
        match Node::open(NodeConfig::loopback(dir.path())).await {
            Ok(node) => nodes.push(Arc::new(node)),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        result = scenario(&nodes, args).await;
    }
    for node in &nodes {
        if let Err(e) = node.shutdown().await {
            log::warn!("demo node {} shutdown: {e}", node.node_id().fmt_short());
        }
    }
    // The nodes go before their dirs.
    drop(nodes);
    drop(dirs);
    result
}

/// Joins, links, publishes, waits and checks.
async fn scenario(nodes: &[Arc<Node>], args: &DemoArgs) -> Result<()> {
    let n = nodes.len();
    let per_node = args.entries;
    let total = n as u64 * u64::from(per_node);
    let links = args.links();
    let shown: Vec<String> = links.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    outln!(
        "covey demo: {n} nodes on 127.0.0.1, {} {}, {per_node} entries of {} B from each",
        format!("{:?}", args.topology).to_lowercase(),
        shown.join(" "),
        args.payload_bytes
    )?;
    for (i, node) in nodes.iter().enumerate() {
        outln!("  node {i}  {}", node.node_id())?;
    }

    let joined = Instant::now();
    let mut group: Option<GroupId> = None;
    for node in nodes {
        let id = node.join_passphrase(PASSPHRASE, GROUP).await?.group_id;
        match group {
            None => group = Some(id),
            Some(g) if g != id => {
                return Err(CoveyError::internal(
                    "the same passphrase and name gave different group ids",
                ));
            }
            Some(_) => {}
        }
    }
    let group = group.ok_or_else(|| CoveyError::internal("no demo nodes"))?;
    outln!(
        "group {group} {GROUP:?}: joined by all {n} with one passphrase (Argon2id, {} ms)",
        ms(joined.elapsed())
    )?;

    for &(a, b) in &links {
        let ticket = nodes[b].addr().await?;
        nodes[a].add_peer(&ticket).await?;
    }

    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, node) in nodes.iter().enumerate() {
        let node = node.clone();
        let len = args.payload_bytes;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per_node as usize);
            for j in 0..per_node {
                ids.push(
                    node.publish(&group, &payload(i, j, len), None)
                        .await?
                        .entry_id,
                );
            }
            Ok::<_, CoveyError>(ids)
        }));
    }
    let mut expected: HashMap<EntryId, (usize, u32)> = HashMap::new();
    let mut first_error = None;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(ids)) => {
                for (j, id) in (0..per_node).zip(ids) {
                    expected.insert(id, (i, j));
                }
            }
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => {
                first_error = first_error.or(Some(CoveyError::internal(format!(
                    "publisher of node {i} failed: {e}"
                ))))
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    outln!(
        "published {per_node} entries from each node concurrently ({total} in all) in {} ms",
        ms(start.elapsed())
    )?;

    let converged = wait_for_counts(nodes, total, start, args.timeout_secs).await?;
    let copies = check_order_and_payloads(nodes, &group, &expected, args.payload_bytes).await?;
    outln!(
        "converged in {} ms: every node holds {total}/{total} entries in identical \
         (lamport, author, seq) order",
        ms(converged)
    )?;
    for (i, node) in nodes.iter().enumerate() {
        let s = node.status().await?;
        let c = &s.counters;
        outln!(
            "  node {i}  published {}  holds {}  received {}  duplicates {}  \
             rejected entries {} frames {}  dht contacts {} rendezvous found {}",
            c.published,
            s.entries,
            c.received,
            c.duplicates,
            c.rejected_entries,
            c.rejected_frames,
            s.dht.contacts,
            s.dht.rendezvous_found
        )?;
    }
    outln!("payloads: all {copies} held copies decrypted to exactly what was published")?;
    outln!("converged")
}

/// Polls until every node holds `total` entries; returns the time since `start`, or a
/// `Timeout` error saying who lacks what.
async fn wait_for_counts(
    nodes: &[Arc<Node>],
    total: u64,
    start: Instant,
    timeout_secs: u64,
) -> Result<Duration> {
    let deadline = start + Duration::from_secs(timeout_secs);
    loop {
        let mut counts = Vec::with_capacity(nodes.len());
        for node in nodes {
            counts.push(node.status().await?.entries);
        }
        if counts.iter().all(|&c| c == total) {
            return Ok(start.elapsed());
        }
        if let Some(i) = counts.iter().position(|&c| c > total) {
            return Err(CoveyError::internal(format!(
                "node {i} holds {} entries, more than the {total} published",
                counts[i]
            )));
        }
        if Instant::now() >= deadline {
            let lacking: Vec<String> = counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c < total)
                .map(|(i, c)| format!("node {i} holds {c}"))
                .collect();
            return Err(CoveyError::new(
                ErrorKind::Timeout,
                format!(
                    "not converged within {timeout_secs} s: {} of {total}",
                    lacking.join(", ")
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every entry of `group` on `node`, in cursor order.
pub(crate) async fn all_entries(node: &Node, group: &GroupId) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let page = node.entries(group, cursor, 1000).await?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        cursor = last.meta.cursor;
        out.extend(page);
    }
}

/// Checks that every node holds exactly the published entries, each decrypting to what its
/// author published, and that all sort into the same convergent order. Returns how many
/// entry copies were checked.
async fn check_order_and_payloads(
    nodes: &[Arc<Node>],
    group: &GroupId,
    expected: &HashMap<EntryId, (usize, u32)>,
    len: usize,
) -> Result<usize> {
    let mut reference: Option<Vec<EntryId>> = None;
    let mut copies = 0;
    for (i, node) in nodes.iter().enumerate() {
        let mut entries = all_entries(node, group).await?;
        let distinct: HashSet<_> = entries.iter().map(|e| e.meta.entry_id).collect();
        if distinct.len() != expected.len() || entries.len() != expected.len() {
            return Err(CoveyError::internal(format!(
                "node {i} holds {} entries ({} distinct), expected {}",
                entries.len(),
                distinct.len(),
                expected.len()
            )));
        }
        for e in &entries {
            let Some(&(author, index)) = expected.get(&e.meta.entry_id) else {
                return Err(CoveyError::internal(format!(
                    "node {i} holds entry {} that nobody published",
                    e.meta.entry_id
                )));
            };
            if e.meta.author != nodes[author].node_id() || e.payload != payload(author, index, len)
            {
                return Err(CoveyError::crypto(format!(
                    "node {i}: entry {} does not decrypt to what node {author} published",
                    e.meta.entry_id
                )));
            }
            copies += 1;
        }
        entries.sort_by_key(|e| (e.meta.lamport, e.meta.author, e.meta.seq));
        let order: Vec<EntryId> = entries.iter().map(|e| e.meta.entry_id).collect();
        match &reference {
            None => reference = Some(order),
            Some(first) => {
                if let Some(pos) = first.iter().zip(&order).position(|(a, b)| a != b) {
                    return Err(CoveyError::internal(format!(
                        "node {i} orders the entries differently from node 0 (first at {pos})"
                    )));
                }
            }
        }
    }
    Ok(copies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_length_and_differs_per_entry() {
        assert_eq!(payload(0, 0, 256).len(), 256);
        assert_eq!(payload(2, 9, 5), b"node ");
        assert!(payload(0, 0, 0).is_empty());
        assert_ne!(payload(0, 1, 64), payload(1, 0, 64));
    }

    #[test]
    fn ring_closes_and_line_does_not() {
        let mut args = DemoArgs {
            nodes: 3,
            entries: 1,
            payload_bytes: 1,
            topology: Topology::Ring,
            timeout_secs: 1,
            managed: false,
        };
        assert_eq!(args.links(), vec![(0, 1), (1, 2), (2, 0)]);
        args.topology = Topology::Line;
        assert_eq!(args.links(), vec![(0, 1), (1, 2)]);
        args.nodes = 1;
        assert!(args.validate().is_err());
    }
}
