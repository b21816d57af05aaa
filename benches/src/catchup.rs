//! Part e, `catchup`: a stale node catches up on a backlog held by another OS process.
//!
//! Both nodes run in child processes of the harness, which re-executes itself
//! (`std::env::current_exe()`) in two hidden sub-modes, so each node's peak RSS is its own and
//! starts from a fresh process for every measurement:
//!
//! - `covey-bench catchup-source --dir D --entries N --payload-bytes P` opens a loopback node
//!   on `D`, joins the benchmark group, publishes N entries through [`Node::publish`], prints
//!   `ready <ticket> <peak kB> <rss kB> <load s>` and serves until its stdin closes. It answers
//!   one-line commands on stdin: `reset` zeroes its peak RSS (`echo 5 > /proc/self/clear_refs`)
//!   and answers `reset <rss kB> <ok>`; `stats` answers
//!   `stats <peak kB> <rss kB> <cpu s> <anon kB> <file kB> <shmem kB>`. When stdin closes it
//!   shuts down and prints `done <peak kB> <rss kB>`.
//! - `covey-bench catchup-stale --dir D --entries N --ticket T` opens a fresh loopback node on
//!   `D` and joins the group (Argon2id's 64 MiB are spent here, before anything is measured),
//!   prints `ready <rss kB>` and waits for `go` on stdin. Then it zeroes its peak RSS, calls
//!   `add_peer(T)` and polls `status()` every 2 ms until it holds N entries, and prints
//!   `caught-up <s> <first entry s> <peak kB> <rss before kB> <cpu s> <anon kB> <file kB>
//!   <shmem kB> <received> <rejected entries> <rejected frames> <rss kB at each tenth,
//!   comma-separated>`. When stdin closes it shuts down and prints `done <peak kB> <rss kB>`.
//!
//! Every round the harness starts a fresh stale process against the same source, zeroes the
//! source's peak, says `go`, and collects both processes' figures. The report gives payload
//! MB/s, each process's peak RSS during the catch-up and its rise over the RSS before it, for
//! every backlog size, so "memory is flat in the backlog size" reads as the ratio of the peaks
//! at the largest and smallest backlog. The baseline is the `sync` part's raw iroh bi-stream
//! transfer (in the harness process, the same number of messages of the entry's size, connect
//! included), interleaved round by round.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::harness::{ENTRY_OVERHEAD, SYNC_DEADLINE, progress, random_bytes, temp_dir};
use crate::nodes::open_loopback_node;
use crate::raw_iroh::raw_transfer;
use crate::report::{Goal, median, size};
use crate::sysinfo::{peak_rss_kb, process_cpu_s, reset_peak_rss, rss_kb, rss_split_kb};

/// The hidden sub-command of the source process.
pub(crate) const SOURCE_MODE: &str = "catchup-source";
/// The hidden sub-command of the stale process.
pub(crate) const STALE_MODE: &str = "catchup-stale";

/// Largest peak RSS at the largest backlog over the peak at the smallest that still counts as
/// flat: with the default 10x backlog, memory that grew with it would give about 10.
const FLAT_RSS_RATIO: f64 = 1.25;

/// How often the stale node's `status()` is polled while it catches up.
const POLL: Duration = Duration::from_millis(2);

/// How long a child may take to answer a command.
const ANSWER: Duration = Duration::from_secs(30);

/// Environment variable naming a `perf record --control fifo:...` FIFO: when set, the stale
/// process writes `enable` to it just before `add_peer` and `disable` once it holds every
/// entry, so `perf record -D -1` samples only the catch-up (of both processes; perf follows
/// the children). A profiling aid; see README.md.
const PERF_CTL_ENV: &str = "COVEY_BENCH_PERF_CTL";

/// Sends `command` (`enable` or `disable`) to perf's control FIFO, if one is configured.
fn perf_ctl(command: &str) {
    let Some(path) = std::env::var_os(PERF_CTL_ENV) else {
        return;
    };
    let sent = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{command}"));
    if let Err(e) = sent {
        progress(format!("note: cannot write `{command}` to {path:?}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// The children
// ---------------------------------------------------------------------------------------------

/// Command line of the hidden source mode.
#[derive(Debug, Parser)]
#[command(name = "covey-bench catchup-source")]
struct SourceArgs {
    /// Data dir of the source node (the parent owns and removes it).
    #[arg(long)]
    dir: PathBuf,
    /// Entries to publish before serving.
    #[arg(long)]
    entries: usize,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
}

/// Command line of the hidden stale mode.
#[derive(Debug, Parser)]
#[command(name = "covey-bench catchup-stale")]
struct StaleArgs {
    /// Data dir of the stale node (the parent owns and removes it).
    #[arg(long)]
    dir: PathBuf,
    /// Entries to wait for.
    #[arg(long)]
    entries: usize,
    /// The source's address ticket.
    #[arg(long)]
    ticket: String,
}

/// Entry point of the hidden modes: `argv[1]` is [`SOURCE_MODE`] or [`STALE_MODE`].
pub(crate) fn child_main(mode: &str) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("covey-bench {mode}: cannot start the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let args = std::env::args_os().skip(1);
    let result = if mode == SOURCE_MODE {
        match SourceArgs::try_parse_from(args) {
            Ok(a) => runtime.block_on(source(&a)),
            Err(e) => e.exit(),
        }
    } else {
        match StaleArgs::try_parse_from(args) {
            Ok(a) => runtime.block_on(stale(&a)),
            Err(e) => e.exit(),
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("covey-bench {mode}: FAILED: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints one protocol line on stdout and flushes it.
fn say(line: String) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing to the parent")?;
    out.flush().context("flushing to the parent")
}

/// Lines of this process's stdin, read on a plain thread (the harness's tokio has no io-std).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, lines) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// The source node: publish, announce, serve until stdin closes.
async fn source(args: &SourceArgs) -> Result<()> {
    let (node, group) = open_loopback_node(&args.dir, "source").await?;
    let payload = random_bytes(args.payload_bytes);
    let t = Instant::now();
    for i in 0..args.entries {
        node.publish(&group, &payload, None)
            .await
            .with_context(|| format!("source publish {i}"))?;
    }
    let load_s = t.elapsed().as_secs_f64();
    let held = node.status().await.context("source status")?.entries;
    ensure!(
        held == args.entries as u64,
        "source holds {held} entries, expected {}",
        args.entries
    );
    let ticket = node.addr().await.context("source addr")?;
    say(format!(
        "ready {ticket} {} {} {load_s:.3}",
        peak_rss_kb(),
        rss_kb()
    ))?;
    let mut lines = stdin_lines();
    while let Some(line) = lines.recv().await {
        match line.trim() {
            "reset" => {
                let ok = reset_peak_rss();
                say(format!("reset {} {ok}", rss_kb()))?;
            }
            "stats" => {
                let [anon, file, shmem] = rss_split_kb();
                say(format!(
                    "stats {} {} {:.3} {anon} {file} {shmem}",
                    peak_rss_kb(),
                    rss_kb(),
                    process_cpu_s()
                ))?;
            }
            other => bail!("unknown command from the parent: {other:?}"),
        }
    }
    node.shutdown().await.context("source shutdown")?;
    say(format!("done {} {}", peak_rss_kb(), rss_kb()))
}

/// The stale node: open, wait for `go`, catch up, report, wait for stdin to close.
async fn stale(args: &StaleArgs) -> Result<()> {
    let (node, _group) = open_loopback_node(&args.dir, "stale").await?;
    say(format!("ready {}", rss_kb()))?;
    let mut lines = stdin_lines();
    match lines.recv().await.as_deref().map(str::trim) {
        Some("go") => {}
        Some(other) => bail!("expected `go` from the parent, got {other:?}"),
        None => bail!("the parent closed stdin before `go`"),
    }
    let reset = reset_peak_rss();
    let before_kb = rss_kb();
    let cpu0 = process_cpu_s();
    let target = args.entries as u64;
    let mut tenths: Vec<u64> = Vec::with_capacity(10);
    let mut first = None;
    perf_ctl("enable");
    let t = Instant::now();
    node.add_peer(&args.ticket)
        .await
        .context("stale node add_peer")?;
    let deadline = t + SYNC_DEADLINE;
    let status = loop {
        let status = node.status().await.context("stale status")?;
        let c = &status.counters;
        if c.rejected_frames > 0 || c.rejected_entries > 0 {
            perf_ctl("disable");
            bail!(
                "the stale node refused {} frames and {} entries during catch-up",
                c.rejected_frames,
                c.rejected_entries
            );
        }
        if first.is_none() && status.entries > 0 {
            first = Some(t.elapsed());
        }
        while (tenths.len() as u64) < 10
            && status.entries * 10 >= target * (tenths.len() as u64 + 1)
        {
            tenths.push(rss_kb());
        }
        if status.entries >= target {
            break status;
        }
        if Instant::now() > deadline {
            perf_ctl("disable");
            bail!(
                "stale node holds {} of {target} entries after {SYNC_DEADLINE:?}",
                status.entries
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let secs = t.elapsed().as_secs_f64();
    perf_ctl("disable");
    let cpu = process_cpu_s() - cpu0;
    let peak = if reset { peak_rss_kb() } else { 0 };
    let [anon, file, shmem] = rss_split_kb();
    let c = &status.counters;
    let tenths = tenths
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    say(format!(
        "caught-up {secs:.6} {:.6} {peak} {before_kb} {cpu:.3} {anon} {file} {shmem} {} {} {} {tenths}",
        first.map_or(secs, |d| d.as_secs_f64()),
        c.received,
        c.rejected_entries,
        c.rejected_frames,
    ))?;
    ensure!(
        status.entries == target,
        "stale node holds {} entries, expected {target}",
        status.entries
    );
    // Stay up (and connected) until the parent has asked the source for its figures.
    while lines.recv().await.is_some() {}
    node.shutdown().await.context("stale shutdown")?;
    say(format!("done {} {}", peak_rss_kb(), rss_kb()))
}

// ---------------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------------

/// A child process of the harness and the pipes to it.
struct ChildNode {
    /// What it is, for messages.
    role: &'static str,
    /// The child process.
    child: Child,
    /// Its stdin (commands); dropping it tells the child to stop.
    stdin: Option<ChildStdin>,
    /// Lines of its stdout, read on a plain thread.
    lines: mpsc::UnboundedReceiver<String>,
}

impl ChildNode {
    /// Starts the harness in hidden `mode` on the data dir `dir`, with more `flags` as
    /// (name, value) pairs.
    fn spawn(role: &'static str, mode: &str, dir: &Path, flags: &[(&str, &str)]) -> Result<Self> {
        let exe = std::env::current_exe().context("finding the harness's own executable")?;
        let mut command = Command::new(exe);
        command.arg(mode).arg("--dir").arg(dir);
        for (name, value) in flags {
            command.arg(name).arg(value);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the {role} process"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            role,
            child,
            stdin,
            lines,
        })
    }

    /// The next stdout line, which must start with `tag`; its other fields.
    async fn expect(&mut self, tag: &str, wait: Duration) -> Result<Vec<String>> {
        let role = self.role;
        let line = tokio::time::timeout(wait, self.lines.recv())
            .await
            .with_context(|| format!("the {role} process sent no `{tag}` in {wait:?}"))?
            .with_context(|| format!("the {role} process ended before `{tag}`"))?;
        let mut fields = line.split_whitespace().map(str::to_owned);
        ensure!(
            fields.next().as_deref() == Some(tag),
            "the {role} process said {line:?}, expected `{tag} ...`"
        );
        Ok(fields.collect())
    }

    /// Sends one command line.
    fn send(&mut self, command: &str) -> Result<()> {
        let role = self.role;
        let stdin = self
            .stdin
            .as_mut()
            .with_context(|| format!("{role} stdin closed"))?;
        writeln!(stdin, "{command}").with_context(|| format!("writing to the {role} process"))?;
        stdin
            .flush()
            .with_context(|| format!("flushing to the {role} process"))
    }

    /// Sends one command line and returns the fields of the answer, tagged like the command.
    async fn ask(&mut self, command: &str) -> Result<Vec<String>> {
        self.send(command)?;
        self.expect(command, ANSWER).await
    }

    /// Closes its stdin, waits for `done` and the exit. Returns its lifetime peak RSS, kB.
    async fn finish(mut self) -> Result<u64> {
        self.stdin.take();
        let done = self.expect("done", ANSWER).await?;
        let role = self.role;
        let status = tokio::task::spawn_blocking(move || self.child.wait())
            .await
            .map_err(|e| anyhow!("waiting for the {role} process: {e}"))?
            .with_context(|| format!("waiting for the {role} process"))?;
        ensure!(status.success(), "the {role} process exited with {status}");
        num(&done, 0)
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        // Only reached with the child still running when the run failed part-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Field `i` of a protocol line, parsed.
fn num<T: std::str::FromStr>(fields: &[String], i: usize) -> Result<T> {
    fields
        .get(i)
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("field {i} missing or malformed in {fields:?}"))
}

/// One catch-up round as measured.
#[derive(Debug, Clone)]
struct Round {
    /// Seconds from `add_peer` until the stale node held every entry.
    secs: f64,
    /// Seconds from `add_peer` until the first entry was stored.
    first_entry_s: f64,
    /// Stale process: RSS just before the catch-up, kB.
    stale_before_kb: u64,
    /// Stale process: peak RSS during the catch-up, kB.
    stale_peak_kb: u64,
    /// Source process: RSS just before the catch-up, kB.
    source_before_kb: u64,
    /// Source process: peak RSS during the catch-up, kB.
    source_peak_kb: u64,
    /// CPU seconds the stale process used during the catch-up.
    stale_cpu_s: f64,
    /// CPU seconds the source process used during the catch-up.
    source_cpu_s: f64,
    /// Whether both processes reset their peak RSS before the round.
    peak_reset: bool,
    /// RSS of the stale process at each tenth of the progress, kB.
    tenths: Vec<u64>,
    /// Stale process's RSS at the end as anonymous, file and shared memory, kB.
    stale_split_kb: [u64; 3],
    /// Source process's RSS at the end as anonymous, file and shared memory, kB.
    source_split_kb: [u64; 3],
    /// Entries the stale node received.
    received: u64,
    /// Entries it refused.
    rejected_entries: u64,
}

/// One catch-up at one backlog size.
#[derive(Debug, Serialize)]
pub(crate) struct CatchupResult {
    /// Entries in the backlog.
    pub(crate) entries: usize,
    /// Payload bytes per entry.
    pub(crate) payload_bytes: usize,
    /// Encoded entry bytes, also the raw baseline's message size.
    pub(crate) entry_bytes: usize,
    /// Seconds the source took to publish the backlog (setup, not measured).
    pub(crate) source_load_s: f64,
    /// Median seconds from `add_peer` until the stale node held every entry.
    pub(crate) catchup_s: f64,
    /// Payload MB/s (10^6 bytes) of the median catch-up.
    pub(crate) catchup_mbps: f64,
    /// Median seconds from `add_peer` until the first entry was stored.
    pub(crate) first_entry_s: f64,
    /// Median seconds of the raw iroh baseline (in-process, connect included).
    pub(crate) raw_s: f64,
    /// Payload MB/s of the raw baseline.
    pub(crate) raw_mbps: f64,
    /// catch-up MB/s / raw MB/s.
    pub(crate) ratio: f64,
    /// Stale process: RSS just before the catch-up, kB (median of rounds).
    pub(crate) stale_rss_before_kb: u64,
    /// Stale process: peak RSS during the catch-up, kB (largest of rounds).
    pub(crate) stale_peak_rss_kb: u64,
    /// Stale process: largest rise of the peak over the RSS before, kB.
    pub(crate) stale_peak_rise_kb: u64,
    /// Source process: RSS just before the catch-up, kB (median of rounds).
    pub(crate) source_rss_before_kb: u64,
    /// Source process: peak RSS while serving the catch-up, kB (largest of rounds).
    pub(crate) source_peak_rss_kb: u64,
    /// Source process: largest rise of the peak over the RSS before, kB.
    pub(crate) source_peak_rise_kb: u64,
    /// Source process: peak RSS while it joined and published the backlog (setup), kB.
    pub(crate) source_load_peak_rss_kb: u64,
    /// Source process: peak RSS over its whole life, as it printed at exit, kB.
    pub(crate) source_lifetime_peak_rss_kb: u64,
    /// Stale process: RSS at each tenth of the last round's progress, kB.
    pub(crate) stale_rss_by_tenth_kb: Vec<u64>,
    /// Stale process: RSS at the end of the last round as [anonymous, file, shared], kB.
    pub(crate) stale_rss_split_kb: [u64; 3],
    /// Source process: RSS at the end of the last round as [anonymous, file, shared], kB.
    pub(crate) source_rss_split_kb: [u64; 3],
    /// CPU seconds the stale process used during the median catch-up.
    pub(crate) stale_cpu_s: f64,
    /// CPU seconds the source process used during the median catch-up.
    pub(crate) source_cpu_s: f64,
    /// Whether both processes could reset their peak RSS before each round (if not, peaks
    /// include everything before).
    pub(crate) peak_reset: bool,
    /// Every round's (catch-up s, raw s, stale peak kB, source peak kB, stale CPU s, source
    /// CPU s).
    pub(crate) rounds: Vec<[f64; 6]>,
    /// Entries the stale node received in the last round.
    pub(crate) received: u64,
    /// Entries the stale node refused, all rounds.
    pub(crate) rejected_entries: u64,
}

/// The catch-up part over every backlog size.
#[derive(Debug, Serialize)]
pub(crate) struct CatchupReport {
    /// One result per backlog size, smallest first.
    pub(crate) runs: Vec<CatchupResult>,
    /// Stale process's peak RSS at the largest backlog / at the smallest.
    pub(crate) stale_peak_ratio: f64,
    /// Source's peak RSS at the largest backlog / at the smallest.
    pub(crate) source_peak_ratio: f64,
    /// Stale process's peak rise at the largest backlog / at the smallest.
    pub(crate) stale_rise_ratio: f64,
    /// Source's peak rise at the largest backlog / at the smallest.
    pub(crate) source_rise_ratio: f64,
    /// Largest backlog / smallest: what the ratios would be if memory grew with the backlog.
    pub(crate) backlog_ratio: f64,
}

/// One round: a fresh stale process catches up from the source.
async fn catchup_once(src: &mut ChildNode, ticket: &str, n: usize) -> Result<Round> {
    let dir = temp_dir("catchup-stale")?;
    let entries = n.to_string();
    let mut stale = ChildNode::spawn(
        "stale",
        STALE_MODE,
        dir.path(),
        &[("--entries", &entries), ("--ticket", ticket)],
    )?;
    stale.expect("ready", ANSWER).await?;
    let reset = src.ask("reset").await?;
    let source_before_kb: u64 = num(&reset, 0)?;
    let source_reset = reset.get(1).map(String::as_str) == Some("true");
    let source_cpu0: f64 = num(&src.ask("stats").await?, 2)?;
    stale.send("go")?;
    let done = stale
        .expect("caught-up", SYNC_DEADLINE + Duration::from_secs(10))
        .await?;
    let after = src.ask("stats").await?;
    stale.finish().await?;
    drop(dir);
    let stale_peak_kb: u64 = num(&done, 2)?;
    let tenths = done
        .get(11)
        .map(|t| t.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    Ok(Round {
        secs: num(&done, 0)?,
        first_entry_s: num(&done, 1)?,
        stale_before_kb: num(&done, 3)?,
        stale_peak_kb,
        source_before_kb,
        source_peak_kb: num(&after, 0)?,
        stale_cpu_s: num(&done, 4)?,
        source_cpu_s: num::<f64>(&after, 2)? - source_cpu0,
        peak_reset: source_reset && stale_peak_kb > 0,
        tenths,
        stale_split_kb: [num(&done, 5)?, num(&done, 6)?, num(&done, 7)?],
        source_split_kb: [num(&after, 3)?, num(&after, 4)?, num(&after, 5)?],
        received: num(&done, 8)?,
        rejected_entries: num(&done, 9)?,
    })
}

/// Part e at one backlog size.
async fn bench_catchup_one(n: usize, payload_len: usize, rounds: usize) -> Result<CatchupResult> {
    let entry_len = payload_len + ENTRY_OVERHEAD;
    let dir = temp_dir("catchup-source")?;
    progress(format!(
        "catchup {n} x {payload_len} B: the source process publishes the backlog"
    ));
    let (entries, payload) = (n.to_string(), payload_len.to_string());
    let mut src = ChildNode::spawn(
        "source",
        SOURCE_MODE,
        dir.path(),
        &[("--entries", &entries), ("--payload-bytes", &payload)],
    )?;
    // Publishing runs at roughly 10,000 entries/s; allow a generous margin.
    let ready = src
        .expect(
            "ready",
            SYNC_DEADLINE + Duration::from_secs(n as u64 / 1_000),
        )
        .await?;
    let ticket = ready
        .first()
        .context("ready line without a ticket")?
        .clone();
    let source_load_peak_rss_kb: u64 = num(&ready, 1)?;
    let source_load_s: f64 = num(&ready, 3)?;
    let payload_mb = (n * payload_len) as f64 / 1e6;
    // Warm-up raw transfer (the first connection pays one-time costs).
    raw_transfer(n.min(10), entry_len).await?;
    let mut samples: Vec<Round> = Vec::new();
    let mut raws = Vec::new();
    for round in 1..=rounds {
        let (raw_s, _, _) = raw_transfer(n, entry_len).await?;
        let r = catchup_once(&mut src, &ticket, n).await?;
        progress(format!(
            "catchup {n} x {payload_len} B round {round}: {:.3} s ({:.1} MB/s), raw iroh {raw_s:.3} s ({:.1} MB/s); \
             peak RSS stale {} MiB (+{}), source {} MiB (+{}); CPU stale {:.2} s, source {:.2} s",
            r.secs,
            payload_mb / r.secs,
            payload_mb / raw_s,
            r.stale_peak_kb / 1024,
            r.stale_peak_kb.saturating_sub(r.stale_before_kb) / 1024,
            r.source_peak_kb / 1024,
            r.source_peak_kb.saturating_sub(r.source_before_kb) / 1024,
            r.stale_cpu_s,
            r.source_cpu_s,
        ));
        samples.push(r);
        raws.push(raw_s);
    }
    let lifetime = src.finish().await?;
    drop(dir);
    let last = samples.last().context("no catch-up round ran")?;
    let col = |f: fn(&Round) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
    let max = |f: fn(&Round) -> u64| samples.iter().map(f).max().unwrap_or(0);
    let catchup_s = col(|r| r.secs);
    let raw_s = median(&raws);
    Ok(CatchupResult {
        entries: n,
        payload_bytes: payload_len,
        entry_bytes: entry_len,
        source_load_s,
        catchup_s,
        catchup_mbps: payload_mb / catchup_s,
        first_entry_s: col(|r| r.first_entry_s),
        raw_s,
        raw_mbps: payload_mb / raw_s,
        ratio: raw_s / catchup_s,
        stale_rss_before_kb: col(|r| r.stale_before_kb as f64) as u64,
        stale_peak_rss_kb: max(|r| r.stale_peak_kb),
        stale_peak_rise_kb: max(|r| r.stale_peak_kb.saturating_sub(r.stale_before_kb)),
        source_rss_before_kb: col(|r| r.source_before_kb as f64) as u64,
        source_peak_rss_kb: max(|r| r.source_peak_kb),
        source_peak_rise_kb: max(|r| r.source_peak_kb.saturating_sub(r.source_before_kb)),
        source_load_peak_rss_kb,
        source_lifetime_peak_rss_kb: lifetime,
        stale_rss_by_tenth_kb: last.tenths.clone(),
        stale_rss_split_kb: last.stale_split_kb,
        source_rss_split_kb: last.source_split_kb,
        stale_cpu_s: col(|r| r.stale_cpu_s),
        source_cpu_s: col(|r| r.source_cpu_s),
        peak_reset: samples.iter().all(|r| r.peak_reset),
        rounds: samples
            .iter()
            .zip(&raws)
            .map(|(r, raw)| {
                [
                    r.secs,
                    *raw,
                    r.stale_peak_kb as f64,
                    r.source_peak_kb as f64,
                    r.stale_cpu_s,
                    r.source_cpu_s,
                ]
            })
            .collect(),
        received: last.received,
        rejected_entries: samples.iter().map(|r| r.rejected_entries).sum(),
    })
}

/// Part e: every backlog size in `sizes` (zeros skipped), smallest first.
pub(crate) async fn bench(
    sizes: &[usize],
    payload_len: usize,
    rounds: usize,
) -> Result<Option<CatchupReport>> {
    let mut sizes: Vec<usize> = sizes.iter().copied().filter(|&n| n > 0).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut runs = Vec::new();
    for n in sizes {
        let r = bench_catchup_one(n, payload_len, rounds)
            .await
            .with_context(|| format!("catch-up of {n} entries"))?;
        runs.push(r);
    }
    let (Some(small), Some(large)) = (runs.first(), runs.last()) else {
        return Ok(None);
    };
    let ratio = |a: u64, b: u64| a as f64 / (b.max(1)) as f64;
    Ok(Some(CatchupReport {
        stale_peak_ratio: ratio(large.stale_peak_rss_kb, small.stale_peak_rss_kb),
        source_peak_ratio: ratio(large.source_peak_rss_kb, small.source_peak_rss_kb),
        stale_rise_ratio: ratio(large.stale_peak_rise_kb, small.stale_peak_rise_kb),
        source_rise_ratio: ratio(large.source_peak_rise_kb, small.source_peak_rise_kb),
        backlog_ratio: large.entries as f64 / small.entries as f64,
        runs,
    }))
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// The goals of part e: MB/s and no refused entry at the largest backlog, and both processes'
/// peak RSS flat between the smallest and the largest.
pub(crate) fn goals(c: &CatchupReport) -> Vec<Goal> {
    let mut goals = Vec::new();
    if let Some(large) = c.runs.last() {
        goals.push(Goal::at_least(
            format!(
                "catchup MB/s @{} x {}",
                large.entries,
                size(large.payload_bytes)
            ),
            large.catchup_mbps,
            100.0,
        ));
        goals.push(Goal::at_most(
            format!("catchup rejected entries @{}", large.entries),
            large.rejected_entries as f64,
            0.0,
        ));
    }
    if c.runs.len() > 1 {
        goals.push(Goal::at_most(
            "catchup stale peak RSS largest/smallest",
            c.stale_peak_ratio,
            FLAT_RSS_RATIO,
        ));
        goals.push(Goal::at_most(
            "catchup source peak RSS largest/smallest",
            c.source_peak_ratio,
            FLAT_RSS_RATIO,
        ));
    }
    goals
}

/// kB as MiB with one decimal.
fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// Renders part e as text.
pub(crate) fn render(s: &mut String, c: &CatchupReport) {
    let Some(first) = c.runs.first() else { return };
    let _ = writeln!(
        s,
        "\n[e] stale-node catch-up, two processes ({} payload, {} B entries; MB/s of payload, median of rounds)",
        size(first.payload_bytes),
        first.entry_bytes
    );
    for r in &c.runs {
        let _ = writeln!(
            s,
            "  {} entries (source published them in {:.1} s)",
            r.entries, r.source_load_s
        );
        let _ = writeln!(
            s,
            "    covey catch-up         {:>8.3} s  {:>8.1} MB/s  (first entry after {:.1} ms)",
            r.catchup_s,
            r.catchup_mbps,
            r.first_entry_s * 1e3
        );
        let _ = writeln!(
            s,
            "    raw iroh bi-stream     {:>8.3} s  {:>8.1} MB/s  ratio catch-up/raw = {:.2}",
            r.raw_s, r.raw_mbps, r.ratio
        );
        let per_entry = |cpu: f64| cpu * 1e6 / r.entries as f64;
        let _ = writeln!(
            s,
            "    stale process RSS      before {:>10}  peak {:>10}  rise {:>10}  CPU {:.2} s ({:.1} us/entry)",
            mib(r.stale_rss_before_kb),
            mib(r.stale_peak_rss_kb),
            mib(r.stale_peak_rise_kb),
            r.stale_cpu_s,
            per_entry(r.stale_cpu_s)
        );
        let _ = writeln!(
            s,
            "    source process RSS     before {:>10}  peak {:>10}  rise {:>10}  CPU {:.2} s ({:.1} us/entry)",
            mib(r.source_rss_before_kb),
            mib(r.source_peak_rss_kb),
            mib(r.source_peak_rise_kb),
            r.source_cpu_s,
            per_entry(r.source_cpu_s)
        );
        let _ = writeln!(
            s,
            "    diag: source peak while publishing {}, over its life {}; stale RSS by tenth of progress (MiB): {}",
            mib(r.source_load_peak_rss_kb),
            mib(r.source_lifetime_peak_rss_kb),
            r.stale_rss_by_tenth_kb
                .iter()
                .map(|kb| format!("{:.0}", *kb as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let split = |v: &[u64; 3]| {
            format!(
                "anon {:.1} + file {:.1} + shmem {:.1} MiB",
                v[0] as f64 / 1024.0,
                v[1] as f64 / 1024.0,
                v[2] as f64 / 1024.0
            )
        };
        let _ = writeln!(
            s,
            "    diag: RSS at the end, stale: {}; source: {}",
            split(&r.stale_rss_split_kb),
            split(&r.source_rss_split_kb)
        );
        if !r.peak_reset {
            let _ = writeln!(
                s,
                "    note: peak RSS could not be reset per round; peaks include what ran before"
            );
        }
    }
    if c.runs.len() > 1 {
        let _ = writeln!(
            s,
            "  flat in the backlog? {:.0}x the entries: peak RSS x{:.2} stale, x{:.2} source; rise x{:.2} stale, x{:.2} source",
            c.backlog_ratio,
            c.stale_peak_ratio,
            c.source_peak_ratio,
            c.stale_rise_ratio,
            c.source_rise_ratio
        );
    }
}
