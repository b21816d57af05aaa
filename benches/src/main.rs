//! `covey-bench`: the end-to-end benchmark harness of covey-core.
//!
//! Every goal is a ratio against a baseline measured in the same run, on the same machine,
//! interleaved round by round with the thing it is compared to, so a noisy neighbour slows
//! both sides alike:
//!
//! - `publish`: [`Node::publish`] throughput against a raw SQLite insert per transaction, and
//!   against the "composed limit" (seal + sign + hash + the same raw insert, one thread).
//! - `sync`: two-node catch-up over iroh on loopback against a raw iroh bi-stream transfer of
//!   the same messages.
//! - `latency`: publish → `EntryReceived` on a connected, caught-up peer.
//! - `verify`: [`verify::ingest`] of a contiguous run (one signature per batch) against
//!   checking every signature individually.
//! - `catchup`: a stale node in one child process catches up on a backlog served by another
//!   (the harness re-executes itself), at two backlog sizes: MB/s against a raw iroh transfer,
//!   and both processes' peak RSS, which must not grow with the backlog (see [`catchup`]).
//!
//! Next to each goal the report prints diagnostics that say where the time goes (the
//! `spawn_blocking` hop, catch-up stages timed alone, the arrival timeline of batches), so a
//! missed goal comes with its cause.
//!
//! Nothing leaves the machine: every node and endpoint binds `127.0.0.1`, with relays, address
//! lookup, port mapping and net-report probes off. Run it inside a network namespace:
//!
//! ```text
//! unshare -n sh -c 'ip link set lo up && covey-bench --quick'
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use covey_core::crypto::{Secret32, aead};
use covey_core::group::GroupKeys;
use covey_core::store::{self as cstore, GroupRow, Store};
use covey_core::sync::{engine, verify};
use covey_core::wire::entry::{
    ENTRY_VERSION, EntryHeader, EntryKind, HEADER_LEN, Id32, SIGNATURE_LEN, SignedEntry,
};
use covey_core::{Durability, Event, GroupId, Node, NodeConfig, Subscription, SyncCounters};
use iroh::endpoint::{PortmapperConfig, presets};
use iroh::{Endpoint, NetReportConfig, RelayMode, SecretKey};
use rusqlite::{Connection, params};
use serde::Serialize;
use tempfile::TempDir;
use tokio::sync::mpsc;

mod catchup;

/// Bytes an entry's encoding adds to its payload: header, AEAD tag and signature.
const ENTRY_OVERHEAD: usize = HEADER_LEN + aead::TAG_LEN + SIGNATURE_LEN;
/// The passphrase every benchmark node joins with.
const PASSPHRASE: &str = "covey-bench correct horse battery staple";
/// The group name every benchmark node joins.
const GROUP_NAME: &str = "covey-bench";
/// ALPN of the raw iroh transfer baseline.
const RAW_ALPN: &[u8] = b"covey-bench/raw/0";
/// Longest a sync or transfer may take before the run is declared failed.
const SYNC_DEADLINE: Duration = Duration::from_secs(300);
/// Longest one latency sample may take before the run is declared failed.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(10);

/// The parts of the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Part {
    /// Publish throughput against raw SQLite and the composed limit.
    Publish,
    /// Two-node catch-up against a raw iroh transfer.
    Sync,
    /// Publish → EntryReceived latency between connected nodes.
    Latency,
    /// Catch-up verification with run signatures against per-entry signatures.
    Verify,
    /// Stale-node catch-up between two child processes: MB/s and both processes' peak RSS.
    Catchup,
}

/// Command line of `covey-bench`.
#[derive(Debug, Parser)]
#[command(
    name = "covey-bench",
    about = "End-to-end benchmarks of covey-core; every goal is a ratio to a baseline measured in the same run",
    after_help = "Run inside a network namespace so nothing can leave the machine:\n  unshare -n sh -c 'ip link set lo up && covey-bench --quick'"
)]
struct Args {
    /// Parts to run (default: all of them).
    #[arg(value_enum)]
    parts: Vec<Part>,
    /// CI-sized run: every default count divided by 10 (explicit counts still win).
    #[arg(long)]
    quick: bool,
    /// Print the report as JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_file: Option<std::path::PathBuf>,
    /// Rounds of each measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Entries published per round at 256 B (default 20000); 0 skips it.
    #[arg(long)]
    publish_small: Option<usize>,
    /// Entries published per round at 64 KiB (default 2000); 0 skips it.
    #[arg(long)]
    publish_large: Option<usize>,
    /// Entries synced at 1 KiB (default 10000); 0 skips it.
    #[arg(long)]
    sync_small: Option<usize>,
    /// Entries synced at 64 KiB (default 1000); 0 skips it.
    #[arg(long)]
    sync_large: Option<usize>,
    /// Latency samples (default 1000); 0 skips the part.
    #[arg(long)]
    latency_samples: Option<usize>,
    /// Pause between latency samples, in ms.
    #[arg(long, default_value_t = 2)]
    latency_gap_ms: u64,
    /// Entries ingested by the verify part (default 10000); 0 skips the part.
    #[arg(long)]
    verify_entries: Option<usize>,
    /// Entries per ingested batch in the verify part.
    #[arg(long, default_value_t = 1000)]
    verify_batch: usize,
    /// Backlog sizes of the catchup part, comma-separated (default 10000,100000; under
    /// --quick 1000,10000); 0 skips the part. Peak RSS is compared between the smallest and
    /// the largest.
    #[arg(long, value_delimiter = ',')]
    catchup_entries: Option<Vec<usize>>,
    /// Payload bytes per entry in the catchup part.
    #[arg(long, default_value_t = 1024)]
    catchup_payload: usize,
}

impl Args {
    /// `explicit`, or `default` (divided by 10 under `--quick`).
    fn count(&self, explicit: Option<usize>, default: usize) -> usize {
        explicit.unwrap_or(if self.quick {
            (default / 10).max(1)
        } else {
            default
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Report types
// ---------------------------------------------------------------------------------------------

/// Where and how the run happened.
#[derive(Debug, Serialize)]
struct RunInfo {
    /// Crate version of the harness.
    version: &'static str,
    /// CPU model from /proc/cpuinfo.
    cpu: String,
    /// Logical CPUs available.
    cpus: usize,
    /// 1-minute load average when the run started.
    load_start: f64,
    /// 1-minute load average when the run ended.
    load_end: f64,
    /// Whether `--quick` was given.
    quick: bool,
    /// Rounds per measurement.
    rounds: usize,
    /// Wall time of the whole run, seconds.
    wall_s: f64,
    /// Cores' worth of CPU other processes used on average during the run: the noise.
    others_cores: f64,
}

/// One publish measurement at one payload size.
#[derive(Debug, Serialize)]
struct PublishResult {
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

/// One two-node sync measurement at one payload size.
#[derive(Debug, Serialize)]
struct SyncResult {
    /// Payload bytes per entry.
    payload_bytes: usize,
    /// Encoded entry bytes, also the raw baseline's message size.
    entry_bytes: usize,
    /// Entries A holds before B connects.
    entries: usize,
    /// Median seconds from `add_peer` until B holds every entry.
    sync_s: f64,
    /// Payload MB/s (10^6 bytes) of the median sync.
    sync_mbps: f64,
    /// Median seconds of the raw iroh baseline, connect included.
    raw_s: f64,
    /// Payload MB/s of the raw baseline (same bytes counted as for sync).
    raw_mbps: f64,
    /// Median seconds of the raw baseline's stream transfer alone (after connect).
    raw_transfer_only_s: f64,
    /// Process CPU seconds (both nodes, all threads) during the median-round sync.
    sync_cpu_s: f64,
    /// Process CPU seconds during the raw baseline.
    raw_cpu_s: f64,
    /// Every round's (sync, raw, raw transfer only, sync CPU, raw CPU) seconds.
    rounds: Vec<[f64; 5]>,
    /// Diagnostic: the sync path's stages run one at a time on one thread.
    stages: SyncStages,
    /// Diagnostic: when entries arrived on B in the last round.
    timeline: SyncTimeline,
    /// sync MB/s / raw MB/s.
    ratio: f64,
    /// B's counters after the last round.
    b_counters: CountersOut,
}

/// [`SyncCounters`] in a serializable form.
#[derive(Debug, Serialize)]
struct CountersOut {
    /// Entries published locally.
    published: u64,
    /// Entries received and stored.
    received: u64,
    /// Entries received that were already held.
    duplicates: u64,
    /// Entries refused.
    rejected_entries: u64,
    /// Frames refused.
    rejected_frames: u64,
    /// Sessions refused for an incompatible version.
    incompatible_peers: u64,
}

impl From<SyncCounters> for CountersOut {
    fn from(c: SyncCounters) -> Self {
        Self {
            published: c.published,
            received: c.received,
            duplicates: c.duplicates,
            rejected_entries: c.rejected_entries,
            rejected_frames: c.rejected_frames,
            incompatible_peers: c.incompatible_peers,
        }
    }
}

/// Percentiles of a set of durations, in ms.
#[derive(Debug, Serialize)]
struct Percentiles {
    /// Median.
    p50_ms: f64,
    /// 90th percentile.
    p90_ms: f64,
    /// 99th percentile.
    p99_ms: f64,
    /// Largest.
    max_ms: f64,
    /// Arithmetic mean.
    mean_ms: f64,
}

impl Percentiles {
    /// Percentiles of `samples` (need not be sorted; must not be empty).
    fn of(samples: &[Duration]) -> Self {
        let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1]
        };
        Self {
            p50_ms: pick(0.50),
            p90_ms: pick(0.90),
            p99_ms: pick(0.99),
            max_ms: v.last().copied().unwrap_or(0.0),
            mean_ms: v.iter().sum::<f64>() / v.len().max(1) as f64,
        }
    }
}

/// Publish → EntryReceived latency.
#[derive(Debug, Serialize)]
struct LatencyResult {
    /// Samples taken.
    samples: usize,
    /// Payload bytes per entry.
    payload_bytes: usize,
    /// Pause between samples, ms.
    gap_ms: u64,
    /// From calling `publish` on A until B's subscription yields the entry.
    end_to_end: Percentiles,
    /// From `publish` returning on A until B's subscription yields the entry.
    after_commit: Percentiles,
    /// `publish` alone on A (local commit).
    publish_call: Percentiles,
    /// Baseline: round trip of one 256-byte message on a raw iroh bi-stream (ping-pong).
    raw_rtt: Percentiles,
}

/// Catch-up verification.
#[derive(Debug, Serialize)]
struct VerifyResult {
    /// Entries ingested.
    entries: usize,
    /// Payload bytes per entry.
    payload_bytes: usize,
    /// Entries per ingested batch.
    batch: usize,
    /// Seconds for every batch through `verify::ingest` (each in its own transaction).
    ingest_s: f64,
    /// Payload MB/s of ingest.
    ingest_mbps: f64,
    /// Entries/s of ingest.
    ingest_eps: f64,
    /// Signatures `ingest` checked, all batches.
    signatures_checked: u64,
    /// Entries stored.
    stored: usize,
    /// Entries rejected (must be 0).
    rejected: usize,
    /// Seconds to check every entry's signature individually (entries decoded beforehand).
    individual_verify_s: f64,
    /// Signatures/s checked individually.
    individual_verify_per_s: f64,
    /// Payload MB/s if every signature is checked (signatures alone, no store).
    individual_verify_mbps: f64,
    /// Estimated seconds of ingest had it checked one signature per entry.
    per_entry_ingest_estimate_s: f64,
    /// per-entry estimate / measured ingest.
    speedup: f64,
    /// Diagnostic: seconds to decode every entry (structure checks and the BLAKE3 id).
    diag_decode_s: f64,
    /// Diagnostic: seconds to insert every entry, same batches, into a fresh store, unchecked.
    diag_insert_s: f64,
}

/// One goal and whether this run met it.
#[derive(Debug, Serialize)]
struct Goal {
    /// What is measured.
    name: String,
    /// The measured value.
    value: f64,
    /// `>=` or `<=`.
    op: &'static str,
    /// The target.
    target: f64,
    /// Whether the value meets the target.
    met: bool,
}

impl Goal {
    /// A goal met when `value >= target`.
    fn at_least(name: impl Into<String>, value: f64, target: f64) -> Self {
        Self {
            name: name.into(),
            value,
            op: ">=",
            target,
            met: value >= target,
        }
    }

    /// A goal met when `value <= target`.
    fn at_most(name: impl Into<String>, value: f64, target: f64) -> Self {
        Self {
            name: name.into(),
            value,
            op: "<=",
            target,
            met: value <= target,
        }
    }
}

/// The whole report.
#[derive(Debug, Serialize)]
struct Report {
    /// Run facts.
    run: RunInfo,
    /// Publish throughput per payload size.
    publish: Vec<PublishResult>,
    /// Two-node sync per payload size.
    sync: Vec<SyncResult>,
    /// Publish → receive latency.
    latency: Option<LatencyResult>,
    /// Catch-up verification.
    verify: Option<VerifyResult>,
    /// Stale-node catch-up between two child processes.
    catchup: Option<catchup::CatchupReport>,
    /// Goals and whether they were met.
    goals: Vec<Goal>,
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The median of `values` (0 when empty).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `n` random bytes.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::fill(v.as_mut_slice());
    v
}

/// Prints a progress line on stderr (stdout carries the report).
fn progress(msg: impl AsRef<str>) {
    eprintln!("[covey-bench] {}", msg.as_ref());
}

/// CPU seconds (user + system, all threads) this process has used, from /proc/self/stat
/// (10 ms resolution); NaN when unknown.
fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name start at field 3 (state); utime and stime
    // are fields 14 and 15, in clock ticks of 1/100 s on Linux.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// CPU seconds the whole machine has spent busy (not idle or waiting on I/O), from
/// /proc/stat; NaN when unknown.
fn machine_busy_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(line) = stat.lines().next() else {
        return f64::NAN;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return f64::NAN;
    }
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / 100.0
}

/// The 1-minute load average, or NaN when unknown.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The CPU model name, or "unknown".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A fresh temp dir named after `tag`.
fn temp_dir(tag: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("covey-bench-{tag}-"))
        .tempdir()
        .with_context(|| format!("creating a temp dir for {tag}"))
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("blocking benchmark task failed: {e}"))?
}

/// A loopback node in its own temp dir, joined to the benchmark group.
struct BenchNode {
    /// The node.
    node: Node,
    /// The benchmark group.
    group: GroupId,
    /// Keeps the data dir alive as long as the node.
    _dir: TempDir,
}

impl BenchNode {
    /// Opens a loopback node named `tag` and joins the benchmark group (Argon2id runs here).
    async fn open(tag: &str) -> Result<Self> {
        let dir = temp_dir(tag)?;
        let node = Node::open(NodeConfig::loopback(dir.path()))
            .await
            .with_context(|| format!("opening loopback node {tag}"))?;
        let group = node
            .join_passphrase(PASSPHRASE, GROUP_NAME)
            .await
            .with_context(|| format!("node {tag} joining the benchmark group"))?
            .group_id;
        Ok(Self {
            node,
            group,
            _dir: dir,
        })
    }

    /// Shuts the node down.
    async fn close(self) -> Result<()> {
        self.node.shutdown().await.context("shutting a node down")
    }
}

/// A loopback-only raw iroh endpoint, configured like covey's own without NAT traversal.
async fn raw_endpoint(alpns: Vec<Vec<u8>>) -> Result<Endpoint> {
    let loopback: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    Endpoint::builder(presets::Minimal)
        .clear_address_lookup()
        .relay_mode(RelayMode::Disabled)
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal())
        .clear_ip_transports()
        .bind_addr(loopback)
        .map_err(|e| anyhow!("bad bind address {loopback}: {e}"))?
        .alpns(alpns)
        .bind()
        .await
        .map_err(|e| anyhow!("binding a raw loopback endpoint: {e}"))
}

// ---------------------------------------------------------------------------------------------
// a. Publish throughput
// ---------------------------------------------------------------------------------------------

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

/// A single author's log state for hand-made entries.
struct Author {
    /// Signing key.
    secret: SecretKey,
    /// The group's keys (id, epoch, content key), as a member node holds them.
    keys: GroupKeys,
    /// Last seq written.
    seq: u64,
    /// Id of the last entry written.
    prev: Id32,
}

impl Author {
    /// A fresh random author in a fresh random group.
    fn random() -> Self {
        Self {
            secret: SecretKey::from_bytes(Secret32::random().expose()),
            keys: GroupKeys::from_root(&Secret32::random()),
            seq: 0,
            prev: [0u8; 32],
        }
    }

    /// Seals the author's next entry (random nonce, chained to the previous one).
    fn next(&mut self, payload: &[u8]) -> Result<SignedEntry> {
        let header = EntryHeader {
            version: ENTRY_VERSION,
            kind: EntryKind::Data,
            group_id: self.keys.id.0,
            author: [0u8; 32],
            seq: self.seq + 1,
            prev: self.prev,
            lamport: self.seq + 1,
            epoch: 0,
            timestamp_ms: now_ms(),
            nonce: aead::random_nonce(),
        };
        let entry = SignedEntry::seal(header, &self.keys.content_key, &self.secret, payload)
            .map_err(|e| anyhow!("sealing entry: {e}"))?;
        self.seq += 1;
        self.prev = *entry.id();
        Ok(entry)
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
            &h.group_id,
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
        let store = Store::open(dir.path(), Durability::Normal)
            .map_err(|e| anyhow!("opening covey store: {e}"))?;
        let author = Author::random();
        let row = GroupRow {
            group_id: author.keys.id.0,
            name: "bench".into(),
            kind: 0,
            epoch: 0,
        };
        store
            .write(|tx| cstore::insert_group(tx, &row, now_ms()))
            .map_err(|e| anyhow!("registering bench group: {e}"))?;
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
        .collect::<Result<Vec<_>>>()?;
    let t = Instant::now();
    for entry in &entries {
        db.store
            .write(|tx| cstore::insert_entry(tx, entry))
            .map_err(|e| anyhow!("store insert: {e}"))?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Diagnostic: what `publish` does inside its transaction (the head query, seal, insert into
/// covey's schema; the lamport clock comes from memory, as in the node), synchronously on one
/// thread. Entries/s.
fn run_sync_publish(db: &mut CoveyDb, n: usize, payload: &[u8]) -> Result<f64> {
    let author = &db.author;
    let gid = author.keys.id.0;
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
            .write(|tx| engine::append_own_entry(tx, &author.keys, &author.secret, draft))
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

/// Part a at one payload size.
async fn bench_publish(payload_len: usize, n: usize, rounds: usize) -> Result<PublishResult> {
    let entry_len = payload_len + ENTRY_OVERHEAD;
    let payload = random_bytes(payload_len);
    let warmup = (n / 20).clamp(1, 500);
    let node = BenchNode::open("publish").await?;
    let mut raw = Some(RawDb::create("raw-sqlite")?);
    let mut composed = Some((RawDb::create("composed")?, Author::random()));
    let mut store_db = Some(CoveyDb::create("store-insert")?);
    let mut sync_db = Some(CoveyDb::create("sync-publish")?);
    let mut next_seq = 1u64;
    let mut samples = Vec::new();
    for round in 0..=rounds {
        // Round 0 is a warm-up of every subject with a few entries, not recorded.
        let count = if round == 0 { warmup } else { n };
        let payload2 = payload.clone();
        let mut db = raw.take().context("raw db")?;
        let start = next_seq;
        let (db, raw_eps) = blocking(move || {
            let eps = run_raw_sqlite(&mut db, start, count, entry_len)?;
            Ok((db, eps))
        })
        .await?;
        raw = Some(db);
        next_seq += count as u64;

        let (mut db, mut author) = composed.take().context("composed db")?;
        let (db, author, composed_eps) = blocking(move || {
            let eps = run_composed(&mut db, &mut author, count, &payload2)?;
            Ok((db, author, eps))
        })
        .await?;
        composed = Some((db, author));

        let publish_eps = run_publish(&node, count, &payload).await?;

        let mut db = store_db.take().context("store db")?;
        let payload2 = payload.clone();
        let (db, store_eps) = blocking(move || {
            let eps = run_store_insert(&mut db, count, &payload2)?;
            Ok((db, eps))
        })
        .await?;
        store_db = Some(db);

        let mut db = sync_db.take().context("sync-publish db")?;
        let payload2 = payload.clone();
        let (db, sync_eps) = blocking(move || {
            let eps = run_sync_publish(&mut db, count, &payload2)?;
            Ok((db, eps))
        })
        .await?;
        sync_db = Some(db);

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

// ---------------------------------------------------------------------------------------------
// b. Two-node sync
// ---------------------------------------------------------------------------------------------

/// Waits until `node` holds at least `target` entries, counting `EntryReceived` events and
/// checking `status()` when events may have been dropped or every 25 ms. Returns when it
/// first saw the count reached; records each event's arrival in `arrivals`.
async fn wait_for_entries(
    node: &Node,
    sub: &mut Subscription,
    target: u64,
    arrivals: &mut Vec<Instant>,
) -> Result<Instant> {
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    let mut seen = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    loop {
        tokio::select! {
            ev = sub.recv() => match ev {
                Some(Event::EntryReceived { .. }) => {
                    arrivals.push(Instant::now());
                    seen += 1;
                    if seen >= target {
                        return Ok(Instant::now());
                    }
                }
                Some(Event::Warning { kind, message }) => {
                    if kind == "rejected-frame" {
                        // The sender would send the same frame again after the redial, so the
                        // catch-up could never finish: fail now with the reason.
                        bail!(
                            "the receiving node refused a sync frame, so catch-up cannot finish \
                             ({message})"
                        );
                    }
                    if kind == "events-dropped" {
                        progress(format!("note: {message}; falling back to status()"));
                    } else {
                        progress(format!("warning from node: {kind}: {message}"));
                    }
                }
                Some(_) => {}
                None => bail!("subscription ended while waiting for entries"),
            },
            _ = tick.tick() => {
                let entries = node.status().await.context("status")?.entries;
                if entries >= target {
                    return Ok(Instant::now());
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("node holds {entries} of {target} entries after {SYNC_DEADLINE:?}");
                }
            }
        }
    }
}

/// One two-node catch-up: a fresh B joins and dials A. Seconds, process CPU seconds, B's
/// counters and the arrival timeline.
async fn sync_once(
    a: &BenchNode,
    a_ticket: &str,
    n: usize,
) -> Result<(f64, f64, SyncCounters, SyncTimeline)> {
    let b = BenchNode::open("sync-b").await?;
    ensure!(b.group == a.group, "nodes derived different group ids");
    let mut sub = b.node.subscribe();
    let cpu = process_cpu_s();
    let t = Instant::now();
    b.node.add_peer(a_ticket).await.context("B add_peer A")?;
    let mut arrivals = Vec::with_capacity(n);
    let done = wait_for_entries(&b.node, &mut sub, n as u64, &mut arrivals).await?;
    let secs = done.duration_since(t).as_secs_f64();
    let timeline = SyncTimeline::of(t, &arrivals);
    let cpu = process_cpu_s() - cpu;
    let status = b.node.status().await.context("B status")?;
    ensure!(
        status.entries == n as u64,
        "B holds {} entries, expected {n}",
        status.entries
    );
    b.close().await?;
    Ok((secs, cpu, status.counters, timeline))
}

/// When B's entries arrived: batches show as bursts of `EntryReceived` events.
#[derive(Debug, Default, Serialize)]
struct SyncTimeline {
    /// From `add_peer` to the first entry stored on B, ms.
    first_entry_ms: f64,
    /// Bursts of events (one per ingested batch); a gap over 0.2 ms starts a new one.
    batches: usize,
    /// Median time between the starts of consecutive batches, ms.
    batch_interval_p50_ms: f64,
    /// Longest time between the starts of consecutive batches, ms.
    batch_interval_max_ms: f64,
}

impl SyncTimeline {
    /// The timeline of `arrivals` after `start`.
    fn of(start: Instant, arrivals: &[Instant]) -> Self {
        let Some(first) = arrivals.first() else {
            return Self::default();
        };
        let mut starts = vec![*first];
        for w in arrivals.windows(2) {
            if w[1].duration_since(w[0]) > Duration::from_micros(200) {
                starts.push(w[1]);
            }
        }
        let intervals: Vec<f64> = starts
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1e3)
            .collect();
        Self {
            first_entry_ms: first.duration_since(start).as_secs_f64() * 1e3,
            batches: starts.len(),
            batch_interval_p50_ms: median(&intervals),
            batch_interval_max_ms: intervals.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// The stages of catch-up, each timed alone on one thread over the same entries.
#[derive(Debug, Serialize)]
struct SyncStages {
    /// Entries per `Entries` frame, as the node's writer batches them.
    frame_entries: usize,
    /// Frames.
    frames: usize,
    /// Sender: `store::log_range` reads of every batch.
    store_read_s: f64,
    /// Sender: `frame::encode` of every batch.
    frame_encode_s: f64,
    /// Receiver: `frame::decode` of every frame.
    frame_decode_s: f64,
    /// Receiver: `verify::ingest` of every batch, one transaction each.
    ingest_s: f64,
    /// Receiver, inside ingest: the plain inserts alone (same batches, fresh store).
    store_insert_s: f64,
    /// Sum of the five stages (`store_insert_s` is part of `ingest_s`, not added again).
    sum_s: f64,
}

/// Times each stage of catch-up alone: what one entry costs the sender's store read, the
/// frame encode and decode, and the receiver's ingest, without the network or overlap.
fn sync_stages(payload_len: usize, n: usize) -> Result<SyncStages> {
    let entry_len = payload_len + ENTRY_OVERHEAD;
    let max_frame = covey_core::node::DEFAULT_MAX_PAYLOAD + covey_core::node::FRAME_OVERHEAD;
    // The node's writer: at most 1024 entries and max_frame - 1024 raw bytes per frame.
    let batch_bytes = max_frame - 1024;
    let frame_entries = (batch_bytes / entry_len).clamp(1, 1024);
    let payload = random_bytes(payload_len);
    let mut author = Author::random();
    let entries = (0..n)
        .map(|_| author.next(&payload))
        .collect::<Result<Vec<_>>>()?;
    let me = *author.secret.public().as_bytes();
    let group = author.keys.id.0;
    let src_dir = temp_dir("stages-src")?;
    let src = open_verify_store(src_dir.path(), group)?;
    for chunk in entries.chunks(frame_entries) {
        src.write(|tx| {
            for e in chunk {
                cstore::insert_entry(tx, e)?;
            }
            Ok(())
        })
        .map_err(|e| anyhow!("filling source store: {e}"))?;
    }
    // Sender: read.
    let t = Instant::now();
    let mut batches: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut after = 0u64;
    while after < n as u64 {
        let rows = src
            .read(|c| cstore::log_range(c, &group, &me, after, n as u64, 1024, batch_bytes))
            .map_err(|e| anyhow!("log_range: {e}"))?;
        let Some(last) = rows.last().map(|(seq, _)| *seq) else {
            break;
        };
        after = last;
        batches.push(rows.into_iter().map(|(_, raw)| raw).collect());
    }
    let store_read_s = t.elapsed().as_secs_f64();
    ensure!(after == n as u64, "log_range stopped at {after} of {n}");
    // Sender: encode.
    let t = Instant::now();
    let mut frames = Vec::with_capacity(batches.len());
    for entries in batches {
        let message = covey_core::wire::frame::Message::Entries { group, entries };
        frames.push(covey_core::wire::frame::encode(&message).map_err(|e| anyhow!("encode: {e}"))?);
    }
    let frame_encode_s = t.elapsed().as_secs_f64();
    // Receiver: decode.
    let t = Instant::now();
    let mut received = Vec::with_capacity(frames.len());
    for f in &frames {
        match covey_core::wire::frame::decode(&f[covey_core::wire::frame::LENGTH_PREFIX..])
            .map_err(|e| anyhow!("decode: {e}"))?
        {
            covey_core::wire::frame::Message::Entries { entries, .. } => received.push(entries),
            other => bail!("decoded an unexpected message {other:?}"),
        }
    }
    let frame_decode_s = t.elapsed().as_secs_f64();
    let nframes = frames.len();
    drop(frames);
    // Receiver: ingest.
    let dst_dir = temp_dir("stages-dst")?;
    let dst = open_verify_store(dst_dir.path(), group)?;
    let rules = verify::Rules {
        group_id: group,
        epoch: 0,
        max_ciphertext: covey_core::node::DEFAULT_MAX_PAYLOAD + aead::TAG_LEN,
    };
    let t = Instant::now();
    let mut stored = 0;
    for batch in received {
        let outcome = dst
            .write(|tx| verify::ingest(tx, &rules, batch))
            .map_err(|e| anyhow!("ingest: {e}"))?;
        stored += outcome.stored.len();
    }
    let ingest_s = t.elapsed().as_secs_f64();
    ensure!(stored == n, "ingest stored {stored} of {n}");
    // Receiver: the inserts alone.
    let ins_dir = temp_dir("stages-insert")?;
    let ins = open_verify_store(ins_dir.path(), group)?;
    let t = Instant::now();
    for chunk in entries.chunks(frame_entries) {
        ins.write(|tx| {
            for e in chunk {
                cstore::insert_entry(tx, e)?;
            }
            Ok(())
        })
        .map_err(|e| anyhow!("plain insert: {e}"))?;
    }
    let store_insert_s = t.elapsed().as_secs_f64();
    Ok(SyncStages {
        frame_entries,
        frames: nframes,
        store_read_s,
        frame_encode_s,
        frame_decode_s,
        ingest_s,
        store_insert_s,
        sum_s: store_read_s + frame_encode_s + frame_decode_s + ingest_s,
    })
}

/// Raw baseline: `n` length-prefixed messages of `len` bytes over one iroh bi-stream.
/// Returns (seconds including connect, seconds of the stream transfer alone, process CPU
/// seconds).
async fn raw_transfer(n: usize, len: usize) -> Result<(f64, f64, f64)> {
    let server = raw_endpoint(vec![RAW_ALPN.to_vec()]).await?;
    let client = raw_endpoint(Vec::new()).await?;
    let addr = server.addr();
    let accept = {
        let server = server.clone();
        tokio::spawn(async move {
            let incoming = server.accept().await.context("server endpoint closed")?;
            let conn = incoming.await.context("accepting raw connection")?;
            let (_send, mut recv) = conn.accept_bi().await.context("accept_bi")?;
            let mut buf = vec![0u8; len];
            let mut prefix = [0u8; 4];
            for i in 0..n {
                recv.read_exact(&mut prefix)
                    .await
                    .with_context(|| format!("reading prefix {i}"))?;
                let l = u32::from_be_bytes(prefix) as usize;
                ensure!(l == len, "message {i} claims {l} bytes, expected {len}");
                recv.read_exact(&mut buf[..l])
                    .await
                    .with_context(|| format!("reading message {i}"))?;
            }
            let done = Instant::now();
            conn.close(0u32.into(), b"done");
            Ok::<_, anyhow::Error>(done)
        })
    };
    let mut message = Vec::with_capacity(4 + len);
    message.extend_from_slice(&(len as u32).to_be_bytes());
    message.extend_from_slice(&random_bytes(len));
    let cpu = process_cpu_s();
    let t0 = Instant::now();
    let conn = client
        .connect(addr, RAW_ALPN)
        .await
        .map_err(|e| anyhow!("raw connect: {e}"))?;
    let (mut send, _recv) = conn.open_bi().await.context("open_bi")?;
    let t1 = Instant::now();
    for i in 0..n {
        send.write_all(&message)
            .await
            .with_context(|| format!("writing message {i}"))?;
    }
    send.finish().context("finish")?;
    let done = tokio::time::timeout(SYNC_DEADLINE, accept)
        .await
        .context("raw transfer timed out")?
        .context("raw receiver task")??;
    let cpu = process_cpu_s() - cpu;
    conn.close(0u32.into(), b"done");
    client.close().await;
    server.close().await;
    Ok((
        done.duration_since(t0).as_secs_f64(),
        done.duration_since(t1).as_secs_f64(),
        cpu,
    ))
}

/// Part b at one payload size.
async fn bench_sync(payload_len: usize, n: usize, rounds: usize) -> Result<SyncResult> {
    let entry_len = payload_len + ENTRY_OVERHEAD;
    let a = BenchNode::open("sync-a").await?;
    let payload = random_bytes(payload_len);
    progress(format!("sync {payload_len} B: A publishes {n} entries"));
    for _ in 0..n {
        a.node
            .publish(&a.group, &payload, None)
            .await
            .context("A publish")?;
    }
    let ticket = a.node.addr().await.context("A addr")?;
    let payload_mb = (n * payload_len) as f64 / 1e6;
    let mut samples = Vec::new();
    let mut counters = SyncCounters::default();
    let mut timeline = SyncTimeline::default();
    // Warm-up raw transfer (first connection pays one-time costs).
    raw_transfer(n.min(10), entry_len).await?;
    for round in 1..=rounds {
        let (raw_s, raw_only_s, raw_cpu) = raw_transfer(n, entry_len).await?;
        let (sync_s, sync_cpu, c, tl) = sync_once(&a, &ticket, n).await?;
        counters = c;
        timeline = tl;
        progress(format!(
            "sync {payload_len} B round {round}: covey {sync_s:.3} s ({:.1} MB/s), raw iroh {raw_s:.3} s ({:.1} MB/s; {raw_only_s:.3} s after connect)",
            payload_mb / sync_s,
            payload_mb / raw_s
        ));
        samples.push([sync_s, raw_s, raw_only_s, sync_cpu, raw_cpu]);
    }
    a.close().await?;
    let stages = blocking(move || sync_stages(payload_len, n)).await?;
    let col = |i: usize| median(&samples.iter().map(|s| s[i]).collect::<Vec<_>>());
    let (sync_s, raw_s) = (col(0), col(1));
    Ok(SyncResult {
        payload_bytes: payload_len,
        entry_bytes: entry_len,
        entries: n,
        sync_s,
        sync_mbps: payload_mb / sync_s,
        raw_s,
        raw_mbps: payload_mb / raw_s,
        raw_transfer_only_s: col(2),
        sync_cpu_s: col(3),
        raw_cpu_s: col(4),
        stages,
        timeline,
        rounds: samples,
        ratio: raw_s / sync_s,
        b_counters: counters.into(),
    })
}

// ---------------------------------------------------------------------------------------------
// c. Latency
// ---------------------------------------------------------------------------------------------

/// Raw iroh ping-pong: `n` round trips of a `len`-byte message on one bi-stream.
async fn raw_rtt(n: usize, len: usize) -> Result<Vec<Duration>> {
    let server = raw_endpoint(vec![RAW_ALPN.to_vec()]).await?;
    let client = raw_endpoint(Vec::new()).await?;
    let addr = server.addr();
    let echo = {
        let server = server.clone();
        tokio::spawn(async move {
            let incoming = server.accept().await.context("server endpoint closed")?;
            let conn = incoming.await.context("accepting raw connection")?;
            let (mut send, mut recv) = conn.accept_bi().await.context("accept_bi")?;
            let mut buf = vec![0u8; len];
            for _ in 0..n {
                recv.read_exact(&mut buf).await.context("echo read")?;
                send.write_all(&buf).await.context("echo write")?;
            }
            let _ = send.finish();
            conn.closed().await;
            Ok::<_, anyhow::Error>(())
        })
    };
    let conn = client
        .connect(addr, RAW_ALPN)
        .await
        .map_err(|e| anyhow!("raw connect: {e}"))?;
    let (mut send, mut recv) = conn.open_bi().await.context("open_bi")?;
    let msg = random_bytes(len);
    let mut back = vec![0u8; len];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        send.write_all(&msg).await.context("ping write")?;
        recv.read_exact(&mut back).await.context("pong read")?;
        out.push(t.elapsed());
    }
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(5), echo).await;
    client.close().await;
    server.close().await;
    Ok(out)
}

/// Part c.
async fn bench_latency(samples: usize, gap_ms: u64) -> Result<LatencyResult> {
    let payload_len = 256;
    let payload = random_bytes(payload_len);
    let a = BenchNode::open("latency-a").await?;
    let b = BenchNode::open("latency-b").await?;
    // B records the arrival time of every EntryReceived in its own task, so the timestamp
    // does not wait for the publisher's loop.
    let mut sub = b.node.subscribe();
    let (tx, mut arrivals) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(async move {
        while let Some(ev) = sub.recv().await {
            let at = Instant::now();
            match ev {
                // The guard forwards the arrival; it fails only once the publisher has gone.
                Event::EntryReceived { entry_id, .. } if tx.send((entry_id, at)).is_err() => {
                    return;
                }
                Event::Warning { kind, message } => {
                    progress(format!("warning from B: {kind}: {message}"));
                }
                _ => {}
            }
        }
    });
    let ticket = a.node.addr().await.context("A addr")?;
    b.node.add_peer(&ticket).await.context("B add_peer A")?;
    let warmup = 20;
    let mut e2e = Vec::with_capacity(samples);
    let mut after = Vec::with_capacity(samples);
    let mut call = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let t0 = Instant::now();
        let meta = a
            .node
            .publish(&a.group, &payload, None)
            .await
            .context("A publish")?;
        let t1 = Instant::now();
        let wait = if i < warmup {
            // The first entries may wait for the connection and frontier exchange.
            SYNC_DEADLINE
        } else {
            SAMPLE_DEADLINE
        };
        let arrived = tokio::time::timeout(wait, async {
            while let Some((id, at)) = arrivals.recv().await {
                if id == meta.entry_id {
                    return Some(at);
                }
            }
            None
        })
        .await
        .with_context(|| format!("latency sample {i}: entry did not reach B in {wait:?}"))?
        .context("B's event recorder stopped")?;
        if i >= warmup {
            e2e.push(arrived.duration_since(t0));
            after.push(arrived.duration_since(t1));
            call.push(t1.duration_since(t0));
        }
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
    }
    let status = b.node.status().await.context("B status")?;
    ensure!(
        status.counters.rejected_entries == 0,
        "B rejected entries during the latency run"
    );
    recorder.abort();
    a.close().await?;
    b.close().await?;
    let rtt = raw_rtt(samples, payload_len + ENTRY_OVERHEAD).await?;
    Ok(LatencyResult {
        samples,
        payload_bytes: payload_len,
        gap_ms,
        end_to_end: Percentiles::of(&e2e),
        after_commit: Percentiles::of(&after),
        publish_call: Percentiles::of(&call),
        raw_rtt: Percentiles::of(&rtt),
    })
}

// ---------------------------------------------------------------------------------------------
// d. Catch-up verification
// ---------------------------------------------------------------------------------------------

/// Part d.
fn bench_verify(n: usize, batch: usize) -> Result<VerifyResult> {
    let payload_len = 1024;
    let payload = random_bytes(payload_len);
    let mut author = Author::random();
    let raws: Vec<Vec<u8>> = (0..n)
        .map(|_| author.next(&payload).map(SignedEntry::into_raw))
        .collect::<Result<_>>()?;
    let dir = temp_dir("verify")?;
    let store = open_verify_store(dir.path(), author.keys.id.0)?;
    let rules = verify::Rules {
        group_id: author.keys.id.0,
        epoch: 0,
        max_ciphertext: covey_core::node::DEFAULT_MAX_PAYLOAD + aead::TAG_LEN,
    };
    let batches: Vec<Vec<Vec<u8>>> = raws.chunks(batch.max(1)).map(<[_]>::to_vec).collect();
    let nbatches = batches.len();
    let (mut stored, mut rejected, mut sigs) = (0usize, 0usize, 0u64);
    let t = Instant::now();
    for b in batches {
        let outcome = store
            .write(|tx| verify::ingest(tx, &rules, b))
            .map_err(|e| anyhow!("ingest: {e}"))?;
        stored += outcome.stored.len();
        rejected += outcome.rejected.len();
        sigs += outcome.signatures_checked;
    }
    let ingest_s = t.elapsed().as_secs_f64();
    ensure!(
        stored == n && rejected == 0,
        "ingest stored {stored} and rejected {rejected} of {n}"
    );
    ensure!(
        sigs == nbatches as u64,
        "ingest checked {sigs} signatures for {nbatches} batches (expected one per run)"
    );
    let t = Instant::now();
    let decoded = raws
        .into_iter()
        .map(|r| SignedEntry::decode(r, usize::MAX).map_err(|e| anyhow!("decode: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let decode_s = t.elapsed().as_secs_f64();
    // The store's share: the same entries inserted in the same batches into a fresh store,
    // with no checks at all.
    let insert_dir = temp_dir("verify-insert")?;
    let insert_store = open_verify_store(insert_dir.path(), author.keys.id.0)?;
    let t = Instant::now();
    for chunk in decoded.chunks(batch.max(1)) {
        insert_store
            .write(|tx| {
                for e in chunk {
                    cstore::insert_entry(tx, e)?;
                }
                Ok(())
            })
            .map_err(|e| anyhow!("plain insert: {e}"))?;
    }
    let insert_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for e in &decoded {
        e.verify_signature()
            .map_err(|err| anyhow!("individual verify: {err}"))?;
    }
    let individual_s = t.elapsed().as_secs_f64();
    let per_sig = individual_s / n as f64;
    let estimate = ingest_s + (n as f64 - sigs as f64) * per_sig;
    let payload_mb = (n * payload_len) as f64 / 1e6;
    Ok(VerifyResult {
        entries: n,
        payload_bytes: payload_len,
        batch,
        ingest_s,
        ingest_mbps: payload_mb / ingest_s,
        ingest_eps: n as f64 / ingest_s,
        signatures_checked: sigs,
        stored,
        rejected,
        individual_verify_s: individual_s,
        individual_verify_per_s: n as f64 / individual_s,
        individual_verify_mbps: payload_mb / individual_s,
        per_entry_ingest_estimate_s: estimate,
        speedup: estimate / ingest_s,
        diag_decode_s: decode_s,
        diag_insert_s: insert_s,
    })
}

/// A covey store in `dir` with the group `group` registered.
fn open_verify_store(dir: &Path, group: Id32) -> Result<Store> {
    let store =
        Store::open(dir, Durability::Normal).map_err(|e| anyhow!("opening covey store: {e}"))?;
    let row = GroupRow {
        group_id: group,
        name: "verify".into(),
        kind: 0,
        epoch: 0,
    };
    store
        .write(|tx| cstore::insert_group(tx, &row, now_ms()))
        .map_err(|e| anyhow!("registering group: {e}"))?;
    Ok(store)
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// A human-readable byte size.
fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Renders `report` as text.
fn render(report: &Report) -> String {
    let mut s = String::new();
    let r = &report.run;
    let _ = writeln!(s, "covey-bench {} report", r.version);
    let _ = writeln!(
        s,
        "machine: {} ({} CPUs), load {:.2} -> {:.2}, {} round(s){}, {:.1} s wall",
        r.cpu,
        r.cpus,
        r.load_start,
        r.load_end,
        r.rounds,
        if r.quick { ", --quick" } else { "" },
        r.wall_s
    );
    let _ = writeln!(
        s,
        "other processes used {:.2} of {} cores on average during the run (noise)",
        r.others_cores, r.cpus
    );
    if !report.publish.is_empty() {
        let _ = writeln!(s, "\n[a] publish throughput (entries/s, median of rounds)");
        for p in &report.publish {
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
    if !report.sync.is_empty() {
        let _ = writeln!(
            s,
            "\n[b] two-node catch-up (payload MB/s, median of rounds)"
        );
        for y in &report.sync {
            let _ = writeln!(
                s,
                "  {} x {} payload ({} B entries)",
                y.entries,
                size(y.payload_bytes),
                y.entry_bytes
            );
            let _ = writeln!(
                s,
                "    covey sync             {:>8.3} s  {:>8.1} MB/s",
                y.sync_s, y.sync_mbps
            );
            let _ = writeln!(
                s,
                "    raw iroh bi-stream     {:>8.3} s  {:>8.1} MB/s  ({:.3} s after connect)",
                y.raw_s, y.raw_mbps, y.raw_transfer_only_s
            );
            let _ = writeln!(s, "    ratio sync/raw = {:.2}", y.ratio);
            let _ = writeln!(
                s,
                "    process CPU: sync {:.2} s ({:.0}% of 2 cores over its wall time), raw {:.2} s",
                y.sync_cpu_s,
                100.0 * y.sync_cpu_s / (y.sync_s * report.run.cpus.max(1) as f64),
                y.raw_cpu_s
            );
            let tl = &y.timeline;
            let _ = writeln!(
                s,
                "    diag: last round, first entry on B after {:.1} ms, {} batches, one every {:.2} ms (p50), longest gap {:.2} ms",
                tl.first_entry_ms, tl.batches, tl.batch_interval_p50_ms, tl.batch_interval_max_ms
            );
            let st = &y.stages;
            let _ = writeln!(
                s,
                "    diag: stages alone, one thread ({} frames of {} entries): store read {:.3} s, \
                 encode {:.3} s, decode {:.3} s, ingest {:.3} s (of which plain insert {:.3} s); sum {:.3} s",
                st.frames,
                st.frame_entries,
                st.store_read_s,
                st.frame_encode_s,
                st.frame_decode_s,
                st.ingest_s,
                st.store_insert_s,
                st.sum_s
            );
            let c = &y.b_counters;
            let _ = writeln!(
                s,
                "    B counters: received {} duplicates {} rejected_entries {} rejected_frames {} incompatible_peers {}",
                c.received,
                c.duplicates,
                c.rejected_entries,
                c.rejected_frames,
                c.incompatible_peers
            );
        }
    }
    if let Some(l) = &report.latency {
        let _ = writeln!(
            s,
            "\n[c] publish -> EntryReceived latency ({} samples, {} payload, {} ms apart)",
            l.samples,
            size(l.payload_bytes),
            l.gap_ms
        );
        let line = |s: &mut String, name: &str, p: &Percentiles| {
            let _ = writeln!(
                s,
                "    {name:<22} p50 {:>7.3}  p90 {:>7.3}  p99 {:>7.3}  max {:>7.3}  mean {:>7.3} ms",
                p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.mean_ms
            );
        };
        line(&mut s, "end to end", &l.end_to_end);
        line(&mut s, "after publish returns", &l.after_commit);
        line(&mut s, "publish call", &l.publish_call);
        line(&mut s, "raw iroh ping-pong", &l.raw_rtt);
    }
    if let Some(v) = &report.verify {
        let _ = writeln!(
            s,
            "\n[d] catch-up verification ({} x {} from one author, batches of {})",
            v.entries,
            size(v.payload_bytes),
            v.batch
        );
        let _ = writeln!(
            s,
            "    verify::ingest         {:>8.3} s  {:>8.1} MB/s  {:>8.0} entries/s  signatures checked {}",
            v.ingest_s, v.ingest_mbps, v.ingest_eps, v.signatures_checked
        );
        let _ = writeln!(
            s,
            "    every sig individually {:>8.3} s  {:>8.1} MB/s  {:>8.0} sigs/s (signatures alone)",
            v.individual_verify_s, v.individual_verify_mbps, v.individual_verify_per_s
        );
        let _ = writeln!(
            s,
            "    ingest with a signature per entry (est.) {:.3} s -> run signatures are {:.1}x faster",
            v.per_entry_ingest_estimate_s, v.speedup
        );
        let _ = writeln!(
            s,
            "    diag: of ingest, decode alone {:.3} s, store insert alone {:.3} s (same batches, unchecked)",
            v.diag_decode_s, v.diag_insert_s
        );
    }
    if let Some(c) = &report.catchup {
        catchup::render(&mut s, c);
    }
    if !report.goals.is_empty() {
        let _ = writeln!(s, "\ngoals");
        for g in &report.goals {
            let _ = writeln!(
                s,
                "  [{}] {:<44} {:>8.3} {} {}",
                if g.met { "met " } else { "MISS" },
                g.name,
                g.value,
                g.op,
                g.target
            );
        }
    }
    s
}

/// Runs the selected parts and builds the report.
async fn run(args: &Args) -> Result<Report> {
    let started = Instant::now();
    let load_start = load_average();
    let (busy_start, own_start) = (machine_busy_s(), process_cpu_s());
    let parts: Vec<Part> = if args.parts.is_empty() {
        vec![
            Part::Publish,
            Part::Sync,
            Part::Latency,
            Part::Verify,
            Part::Catchup,
        ]
    } else {
        args.parts.clone()
    };
    let rounds = args.rounds.max(1);
    let mut report = Report {
        run: RunInfo {
            version: env!("CARGO_PKG_VERSION"),
            cpu: cpu_model(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_start,
            load_end: f64::NAN,
            quick: args.quick,
            rounds,
            wall_s: 0.0,
            others_cores: f64::NAN,
        },
        publish: Vec::new(),
        sync: Vec::new(),
        latency: None,
        verify: None,
        catchup: None,
        goals: Vec::new(),
    };
    if parts.contains(&Part::Publish) {
        for (len, n) in [
            (256, args.count(args.publish_small, 20_000)),
            (64 * 1024, args.count(args.publish_large, 2_000)),
        ] {
            if n == 0 {
                continue;
            }
            progress(format!("publish: {n} x {} per round", size(len)));
            let p = bench_publish(len, n, rounds)
                .await
                .with_context(|| format!("publish benchmark at {}", size(len)))?;
            if len == 256 {
                report.goals.push(Goal::at_least(
                    "publish/raw sqlite @256 B",
                    p.ratio_vs_sqlite,
                    0.3,
                ));
                report.goals.push(Goal::at_least(
                    "publish/composed limit @256 B",
                    p.ratio_vs_composed,
                    0.7,
                ));
            }
            report.publish.push(p);
        }
    }
    if parts.contains(&Part::Sync) {
        for (len, n) in [
            (1024, args.count(args.sync_small, 10_000)),
            (64 * 1024, args.count(args.sync_large, 1_000)),
        ] {
            if n == 0 {
                continue;
            }
            progress(format!("sync: {n} x {}", size(len)));
            let y = bench_sync(len, n, rounds)
                .await
                .with_context(|| format!("sync benchmark at {}", size(len)))?;
            if len == 64 * 1024 {
                report
                    .goals
                    .push(Goal::at_least("sync/raw iroh @64 KiB", y.ratio, 0.6));
            }
            report.goals.push(Goal::at_most(
                format!("B rejected entries @{}", size(len)),
                y.b_counters.rejected_entries as f64,
                0.0,
            ));
            report.sync.push(y);
        }
    }
    let latency_samples = args.count(args.latency_samples, 1_000);
    if parts.contains(&Part::Latency) && latency_samples > 0 {
        let n = latency_samples;
        progress(format!(
            "latency: {n} samples, {} ms apart",
            args.latency_gap_ms
        ));
        let l = bench_latency(n, args.latency_gap_ms)
            .await
            .context("latency benchmark")?;
        report
            .goals
            .push(Goal::at_most("latency p50 (ms)", l.end_to_end.p50_ms, 2.0));
        report
            .goals
            .push(Goal::at_most("latency p99 (ms)", l.end_to_end.p99_ms, 10.0));
        report.latency = Some(l);
    }
    let verify_entries = args.count(args.verify_entries, 10_000);
    if parts.contains(&Part::Verify) && verify_entries > 0 {
        let n = verify_entries;
        let batch = args.verify_batch;
        progress(format!("verify: {n} x 1 KiB in batches of {batch}"));
        let v = blocking(move || bench_verify(n, batch))
            .await
            .context("verify benchmark")?;
        report.goals.push(Goal::at_most(
            "verify: signatures per batch",
            v.signatures_checked as f64 / v.entries.div_ceil(v.batch.max(1)) as f64,
            1.0,
        ));
        report.verify = Some(v);
    }
    let catchup_sizes = args.catchup_entries.clone().unwrap_or_else(|| {
        if args.quick {
            vec![1_000, 10_000]
        } else {
            vec![10_000, 100_000]
        }
    });
    if parts.contains(&Part::Catchup) && catchup_sizes.iter().any(|&n| n > 0) {
        progress(format!(
            "catchup: {catchup_sizes:?} x {}, stale and source nodes in child processes",
            size(args.catchup_payload)
        ));
        let c = catchup::bench_catchup(&catchup_sizes, args.catchup_payload, rounds)
            .await
            .context("catchup benchmark")?;
        if let Some(c) = c {
            if let Some(large) = c.runs.last() {
                report.goals.push(Goal::at_least(
                    format!(
                        "catchup MB/s @{} x {}",
                        large.entries,
                        size(large.payload_bytes)
                    ),
                    large.catchup_mbps,
                    100.0,
                ));
                report.goals.push(Goal::at_most(
                    format!("catchup rejected entries @{}", large.entries),
                    large.rejected_entries as f64,
                    0.0,
                ));
            }
            if c.runs.len() > 1 {
                report.goals.push(Goal::at_most(
                    "catchup stale peak RSS largest/smallest",
                    c.stale_peak_ratio,
                    catchup::FLAT_RSS_RATIO,
                ));
                report.goals.push(Goal::at_most(
                    "catchup source peak RSS largest/smallest",
                    c.source_peak_ratio,
                    catchup::FLAT_RSS_RATIO,
                ));
            }
            report.catchup = Some(c);
        }
    }
    report.run.load_end = load_average();
    report.run.wall_s = started.elapsed().as_secs_f64();
    let others = (machine_busy_s() - busy_start) - (process_cpu_s() - own_start);
    report.run.others_cores = (others / report.run.wall_s).max(0.0);
    Ok(report)
}

/// Entry point: parses arguments, runs, prints the report.
fn main() -> std::process::ExitCode {
    if let Some(mode) = std::env::args_os().nth(1)
        && let Some(mode) = [catchup::SOURCE_MODE, catchup::STALE_MODE]
            .into_iter()
            .find(|m| mode == *m)
    {
        return catchup::child_main(mode);
    }
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("covey-bench: cannot start the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(report) => {
            if let Some(path) = &args.json_file {
                let written = serde_json::to_vec_pretty(&report)
                    .map_err(|e| e.to_string())
                    .and_then(|j| std::fs::write(path, j).map_err(|e| e.to_string()));
                if let Err(e) = written {
                    eprintln!("covey-bench: cannot write {}: {e}", path.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("covey-bench: cannot encode the report: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", render(&report));
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("covey-bench: FAILED: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
