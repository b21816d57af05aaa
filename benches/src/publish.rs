//! Part a, `publish`: [`Node::publish`] throughput, awaited one entry at a time, against a raw
//! SQLite insert per transaction and against the "composed limit" (seal + sign + hash + the
//! same raw insert on one thread). Diagnostics split publish's cost: covey's own insert, its
//! transaction without the async hop, and the `spawn_blocking` hop alone.
//!
//! [`Node::publish`]: covey_core::Node::publish

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, ensure};
use covey_core::crypto::aead;
use covey_core::store::{self as cstore, Store};
use covey_core::sync::engine;
use rusqlite::{Connection, params};
use serde::Serialize;
use tempfile::TempDir;

use crate::harness::{
    Author, ENTRY_OVERHEAD, blocking, now_ms, open_group_store, progress, random_author,
    random_bytes, temp_dir,
};
use crate::nodes::BenchNode;
use crate::report::{Goal, median, size};

/// One publish measurement at one payload size.
#[derive(Debug, Serialize)]
pub(crate) struct PublishResult {
    /// Payload bytes per entry.
    payload_bytes: usize,
    /// Encoded entry bytes (payload + header + tag + signature).
    entry_bytes: usize,
    /// Entries per round.
    entries: usize,
    /// `Node::publish`, sequentially awaited: median entries/s over rounds.
    publish_eps: f64,
    /// Raw SQLite baseline (WAL, synchronous=NORMAL, prepared INSERT, one transaction per
    /// row, no index): median entries/s.
    raw_sqlite_eps: f64,
    /// Composed limit: seal + sign + BLAKE3 + the raw insert, one thread: median entries/s.
    composed_eps: f64,
    /// Diagnostic: `store::insert_entry` of pre-sealed entries into covey's own schema
    /// (indexes, foreign key) through `Store::write`: median entries/s.
    diag_store_insert_eps: f64,
    /// Diagnostic: everything `publish` does in its transaction (head, max lamport, seal,
    /// insert into covey's schema) on one thread, without the async hop: median entries/s.
    diag_sync_publish_eps: f64,
    /// Diagnostic: microseconds of one `spawn_blocking` round trip on this runtime (the hop
    /// `publish` makes to reach the store), median of rounds.
    diag_blocking_hop_us: f64,
    /// Every round's (publish, raw, composed, store insert, sync publish) entries/s.
    rounds: Vec<[f64; 5]>,
    /// publish / raw SQLite.
    ratio_vs_sqlite: f64,
    /// publish / composed limit.
    ratio_vs_composed: f64,
}

/// Schema of the raw SQLite baseline: the columns of covey's `entries`, no index or constraint.
const RAW_SCHEMA: &str = "CREATE TABLE entries (
    cursor INTEGER PRIMARY KEY,
    entry_id BLOB NOT NULL,
    group_id BLOB NOT NULL,
    author BLOB NOT NULL,
    seq INTEGER NOT NULL,
    lamport INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    raw BLOB NOT NULL
)";

/// The raw baseline's prepared insert.
const RAW_INSERT: &str =
    "INSERT INTO entries (entry_id, group_id, author, seq, lamport, timestamp_ms, raw)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// A raw SQLite database for the baseline and the composed limit.
struct RawDb {
    /// The connection (WAL, synchronous=NORMAL).
    conn: Connection,
    /// Keeps the file alive.
    _dir: TempDir,
}

impl RawDb {
    /// Creates the database in a temp dir with covey's pragmas.
    fn create(tag: &str) -> Result<Self> {
        let dir = temp_dir(tag)?;
        let conn = Connection::open(dir.path().join("raw.db")).context("opening raw sqlite db")?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "raw db did not switch to WAL"
        );
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(RAW_SCHEMA)?;
        Ok(Self { conn, _dir: dir })
    }

    /// Inserts one row in its own transaction.
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        id: &[u8],
        group: &[u8],
        author: &[u8],
        seq: u64,
        lamport: u64,
        ts: u64,
        raw: &[u8],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.prepare_cached(RAW_INSERT)?.execute(params![
            id,
            group,
            author,
            seq as i64,
            lamport as i64,
            ts as i64,
            raw
        ])?;
        tx.commit()?;
        Ok(())
    }
}

/// Raw SQLite baseline: `n` rows of `row_len` raw bytes, one transaction each. Entries/s.
fn run_raw_sqlite(db: &mut RawDb, start_seq: u64, n: usize, row_len: usize) -> Result<f64> {
    let raw = random_bytes(row_len);
    let group = [7u8; 32];
    let author = [9u8; 32];
    let t = Instant::now();
    for i in 0..n as u64 {
        let seq = start_seq + i;
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&seq.to_le_bytes());
        db.insert(&id, &group, &author, seq, seq, now_ms(), &raw)?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Composed limit: sign + seal + hash + the raw insert per entry, one thread. Entries/s.
fn run_composed(db: &mut RawDb, author: &mut Author, n: usize, payload: &[u8]) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        let entry = author.next(payload)?;
        let h = entry.header();
        db.insert(
            entry.id(),
            &h.group_ref,
            &h.author,
            h.seq,
            h.lamport,
            h.timestamp_ms,
            entry.raw(),
        )?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// A covey store with one group, for the diagnostics that use covey's schema.
struct CoveyDb {
    /// The store.
    store: Store,
    /// The author whose entries go in.
    author: Author,
    /// Keeps the files alive.
    _dir: TempDir,
}

impl CoveyDb {
    /// Opens a store in a temp dir and registers the author's group.
    fn create(tag: &str) -> Result<Self> {
        let dir = temp_dir(tag)?;
        let author = random_author();
        let store = open_group_store(dir.path(), author.group())?;
        Ok(Self {
            store,
            author,
            _dir: dir,
        })
    }
}

/// Diagnostic: `insert_entry` of pre-sealed entries into covey's schema. Entries/s.
fn run_store_insert(db: &mut CoveyDb, n: usize, payload: &[u8]) -> Result<f64> {
    let entries = (0..n)
        .map(|_| db.author.next(payload))
        .collect::<covey_core::Result<Vec<_>>>()?;
    let t = Instant::now();
    for entry in &entries {
        db.store
            .write(|tx| cstore::insert_entry(tx, &db.author.group(), entry))
            .map_err(|e| anyhow!("store insert: {e}"))?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Diagnostic: what `publish` does inside its transaction (the head query, seal, insert into
/// covey's schema; the lamport clock comes from memory, as in the node), synchronously on one
/// thread. Entries/s.
fn run_sync_publish(db: &mut CoveyDb, n: usize, payload: &[u8]) -> Result<f64> {
    let author = &db.author;
    let gid = author.group();
    let first_lamport = db
        .store
        .read(|c| cstore::max_lamport(c, &gid))
        .map_err(|e| anyhow!("max lamport: {e}"))?
        + 1;
    let t = Instant::now();
    for lamport in first_lamport..first_lamport + n as u64 {
        // The node's own append (head lookup, seal, sign, insert), minus the node around it.
        let draft = engine::Draft {
            lamport,
            timestamp_ms: now_ms(),
            nonce: aead::random_nonce(),
            payload,
        };
        db.store
            .write(|tx| engine::append_own_entry(tx, author.keys(), author.secret(), draft))
            .map_err(|e| anyhow!("sync publish: {e}"))?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Microseconds per `spawn_blocking` round trip of an empty closure, over `n` trips.
async fn blocking_hop_us(n: usize) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        tokio::task::spawn_blocking(|| ())
            .await
            .map_err(|e| anyhow!("spawn_blocking: {e}"))?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// `Node::publish` sequentially awaited. Entries/s.
async fn run_publish(node: &BenchNode, n: usize, payload: &[u8]) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        node.node
            .publish(&node.group, payload, None)
            .await
            .context("Node::publish")?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Runs `measure` on `subject` on the blocking pool (SQLite work must not stall the runtime
/// that drives the node) and hands the subject back with the figure for the next round.
async fn measure_blocking<S: Send + 'static>(
    mut subject: S,
    measure: impl FnOnce(&mut S) -> Result<f64> + Send + 'static,
) -> Result<(S, f64)> {
    blocking(move || {
        let figure = measure(&mut subject)?;
        Ok((subject, figure))
    })
    .await
}

/// Part a at one payload size: `n` entries per round through every subject, after a warm-up
/// round of a few.
pub(crate) async fn bench(payload_len: usize, n: usize, rounds: usize) -> Result<PublishResult> {
    progress(format!("publish: {n} x {} per round", size(payload_len)));
    let entry_len = payload_len + ENTRY_OVERHEAD;
    let payload = random_bytes(payload_len);
    let warmup = (n / 20).clamp(1, 500);
    let node = BenchNode::open("publish").await?;
    let mut raw = RawDb::create("raw-sqlite")?;
    let mut composed = (RawDb::create("composed")?, random_author());
    let mut store_db = CoveyDb::create("store-insert")?;
    let mut sync_db = CoveyDb::create("sync-publish")?;
    let mut next_seq = 1u64;
    let mut samples = Vec::new();
    for round in 0..=rounds {
        // Round 0 is a warm-up of every subject with a few entries, not recorded.
        let count = if round == 0 { warmup } else { n };
        let start = next_seq;
        let raw_eps;
        (raw, raw_eps) =
            measure_blocking(raw, move |db| run_raw_sqlite(db, start, count, entry_len)).await?;
        next_seq += count as u64;

        let payload2 = payload.clone();
        let composed_eps;
        (composed, composed_eps) = measure_blocking(composed, move |(db, author)| {
            run_composed(db, author, count, &payload2)
        })
        .await?;

        let publish_eps = run_publish(&node, count, &payload).await?;

        let payload2 = payload.clone();
        let store_eps;
        (store_db, store_eps) =
            measure_blocking(store_db, move |db| run_store_insert(db, count, &payload2)).await?;

        let payload2 = payload.clone();
        let sync_eps;
        (sync_db, sync_eps) =
            measure_blocking(sync_db, move |db| run_sync_publish(db, count, &payload2)).await?;

        if round > 0 {
            progress(format!(
                "publish {payload_len} B round {round}: publish {publish_eps:.0}/s, raw sqlite {raw_eps:.0}/s, composed {composed_eps:.0}/s, store insert {store_eps:.0}/s, sync publish {sync_eps:.0}/s"
            ));
            samples.push([publish_eps, raw_eps, composed_eps, store_eps, sync_eps]);
        }
    }
    let mut hops = Vec::new();
    for _ in 0..rounds {
        hops.push(blocking_hop_us(n).await?);
    }
    let status = node.node.status().await.context("status")?;
    ensure!(
        status.entries == (warmup + rounds * n) as u64,
        "publishing node holds {} entries, expected {}",
        status.entries,
        warmup + rounds * n
    );
    node.close().await?;
    let col = |i: usize| median(&samples.iter().map(|s| s[i]).collect::<Vec<_>>());
    let (publish_eps, raw_eps, composed_eps) = (col(0), col(1), col(2));
    Ok(PublishResult {
        payload_bytes: payload_len,
        entry_bytes: entry_len,
        entries: n,
        publish_eps,
        raw_sqlite_eps: raw_eps,
        composed_eps,
        diag_store_insert_eps: col(3),
        diag_sync_publish_eps: col(4),
        diag_blocking_hop_us: median(&hops),
        rounds: samples,
        ratio_vs_sqlite: publish_eps / raw_eps,
        ratio_vs_composed: publish_eps / composed_eps,
    })
}

/// The goals of part a: publish against raw SQLite and against the composed limit, at 256 B.
pub(crate) fn goals(p: &PublishResult) -> Vec<Goal> {
    if p.payload_bytes != 256 {
        return Vec::new();
    }
    vec![
        Goal::at_least("publish/raw sqlite @256 B", p.ratio_vs_sqlite, 0.3),
        Goal::at_least("publish/composed limit @256 B", p.ratio_vs_composed, 0.7),
    ]
}

/// Renders part a as text.
pub(crate) fn render(s: &mut String, results: &[PublishResult]) {
    let _ = writeln!(s, "\n[a] publish throughput (entries/s, median of rounds)");
    for p in results {
        let _ = writeln!(
            s,
            "  {:>7} payload ({} B entry), {} entries/round",
            size(p.payload_bytes),
            p.entry_bytes,
            p.entries
        );
        let _ = writeln!(
            s,
            "    Node::publish          {:>9.0}/s  {:>8.1} MB/s",
            p.publish_eps,
            p.publish_eps * p.payload_bytes as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "    raw sqlite insert      {:>9.0}/s   publish/raw      = {:.2}",
            p.raw_sqlite_eps, p.ratio_vs_sqlite
        );
        let _ = writeln!(
            s,
            "    composed limit         {:>9.0}/s   publish/composed = {:.2}",
            p.composed_eps, p.ratio_vs_composed
        );
        let _ = writeln!(
            s,
            "    diag: store insert     {:>9.0}/s   (covey schema, pre-sealed)",
            p.diag_store_insert_eps
        );
        let _ = writeln!(
            s,
            "    diag: sync publish     {:>9.0}/s   (publish's transaction, no async hop)",
            p.diag_sync_publish_eps
        );
        let _ = writeln!(
            s,
            "    diag: spawn_blocking round trip {:.1} us",
            p.diag_blocking_hop_us
        );
    }
}
