//! `covey-bench`: the end-to-end benchmark harness of covey-core.
//!
//! Every goal is a ratio against a baseline measured in the same run, on the same machine,
//! interleaved round by round with the thing it is compared to, so a noisy neighbour slows
//! both sides alike:
//!
//! - `publish`: [`Node::publish`](covey_core::Node::publish) throughput against a raw SQLite
//!   insert per transaction, and against the "composed limit" (seal + sign + hash + the same
//!   raw insert, one thread).
//! - `sync`: two-node catch-up over iroh on loopback against a raw iroh bi-stream transfer of
//!   the same messages.
//! - `latency`: publish → `EntryReceived` on a connected, caught-up peer.
//! - `verify`: [`ingest`](covey_core::sync::verify::ingest) of a contiguous run (one
//!   signature per batch) against checking every signature individually.
//! - `catchup`: a stale node in one child process catches up on a backlog served by another
//!   (the harness re-executes itself), at two backlog sizes: MB/s against a raw iroh transfer,
//!   and both processes' peak RSS, which must not grow with the backlog (see [`catchup`]).
//! - `managed`: managed groups (see [`managed`]): building a removal's control entry at 100
//!   members against the bare sealing operations it consists of; `remove_member` end to end;
//!   a removal's new epoch reaching every member of a 30-node loopback group (as a star, and
//!   in the default configuration) against an ordinary publish reaching them; and invite
//!   accept by link and by short code against a plain `add_peer` and first sync.
//!
//! Next to each goal the report prints diagnostics that say where the time goes (the
//! `spawn_blocking` hop, catch-up stages timed alone, the arrival timeline of batches), so a
//! missed goal comes with its cause.
//!
//! This file holds the command line and the dispatch; each part lives in its own module
//! ([`publish`], [`sync`], [`latency`], [`verify`], [`catchup`], [`managed`]) with its result
//! type, its section of the text report and its goals. [`report`] assembles and prints the report,
//! [`sysinfo`] reads the machine's load, CPU and memory, and [`harness`], [`nodes`] and
//! [`raw_iroh`] hold what several parts use.
//!
//! Nothing leaves the machine: every node and endpoint binds `127.0.0.1`, with relays, address
//! lookup, port mapping and net-report probes off. Run it inside a network namespace:
//!
//! ```text
//! unshare -n sh -c 'ip link set lo up && covey-bench --quick'
//! ```

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::harness::{blocking, progress};
use crate::report::{Report, RunInfo, size};

mod catchup;
mod harness;
mod latency;
mod managed;
mod nodes;
mod publish;
mod raw_iroh;
mod report;
mod sync;
mod sysinfo;
mod verify;

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
    /// Managed groups: removal cost, epoch propagation in a loopback group, invite accept.
    Managed,
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
    /// Members of the group whose removal the managed part builds and calls.
    #[arg(long, default_value_t = 100)]
    managed_members: usize,
    /// Removal entries built per round in the managed part, each alternated with one batch of
    /// bare sealing operations (default 100); 0 skips it.
    #[arg(long)]
    managed_builds: Option<usize>,
    /// `remove_member` calls per round on a --managed-members group (default 10); 0 skips it.
    #[arg(long)]
    managed_removes: Option<usize>,
    /// Nodes of the loopback group a removal propagates through (default 30; under --quick
    /// 10); 0 skips it.
    #[arg(long)]
    managed_nodes: Option<usize>,
    /// Skip the managed part's invite accept measurement.
    #[arg(long)]
    managed_no_invites: bool,
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

    /// The (payload bytes, entries) of each measurement of `part` that runs: none when `part`
    /// is not in `selected` or measures at one size only, none for a count of 0.
    fn sizes(&self, part: Part, selected: &[Part]) -> Vec<(usize, usize)> {
        let sizes = match part {
            Part::Publish => [
                (256, self.count(self.publish_small, 20_000)),
                (64 * 1024, self.count(self.publish_large, 2_000)),
            ],
            Part::Sync => [
                (1024, self.count(self.sync_small, 10_000)),
                (64 * 1024, self.count(self.sync_large, 1_000)),
            ],
            Part::Latency | Part::Verify | Part::Catchup | Part::Managed => return Vec::new(),
        };
        if !selected.contains(&part) {
            return Vec::new();
        }
        sizes.into_iter().filter(|&(_, n)| n > 0).collect()
    }
}

/// Runs the selected parts and builds the report.
async fn run(args: &Args) -> Result<Report> {
    let started = Instant::now();
    let load_start = sysinfo::load_average();
    let (busy_start, own_start) = (sysinfo::machine_busy_s(), sysinfo::process_cpu_s());
    let parts: Vec<Part> = if args.parts.is_empty() {
        vec![
            Part::Publish,
            Part::Sync,
            Part::Latency,
            Part::Verify,
            Part::Catchup,
            Part::Managed,
        ]
    } else {
        args.parts.clone()
    };
    let rounds = args.rounds.max(1);
    let mut report = Report {
        run: RunInfo {
            version: env!("CARGO_PKG_VERSION"),
            cpu: sysinfo::cpu_model(),
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
        managed: None,
        goals: Vec::new(),
    };
    for (len, n) in args.sizes(Part::Publish, &parts) {
        let measured = publish::bench(len, n, rounds).await;
        let p = measured.with_context(|| format!("publish benchmark at {}", size(len)))?;
        report.goals.extend(publish::goals(&p));
        report.publish.push(p);
    }
    for (len, n) in args.sizes(Part::Sync, &parts) {
        let measured = sync::bench(len, n, rounds).await;
        let y = measured.with_context(|| format!("sync benchmark at {}", size(len)))?;
        report.goals.extend(sync::goals(&y));
        report.sync.push(y);
    }
    let latency_samples = args.count(args.latency_samples, 1_000);
    if parts.contains(&Part::Latency) && latency_samples > 0 {
        let n = latency_samples;
        progress(format!(
            "latency: {n} samples, {} ms apart",
            args.latency_gap_ms
        ));
        let l = latency::bench(n, args.latency_gap_ms)
            .await
            .context("latency benchmark")?;
        report.goals.extend(latency::goals(&l));
        report.latency = Some(l);
    }
    let verify_entries = args.count(args.verify_entries, 10_000);
    if parts.contains(&Part::Verify) && verify_entries > 0 {
        let n = verify_entries;
        let batch = args.verify_batch;
        progress(format!("verify: {n} x 1 KiB in batches of {batch}"));
        let v = blocking(move || verify::bench(n, batch))
            .await
            .context("verify benchmark")?;
        report.goals.extend(verify::goals(&v));
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
        let c = catchup::bench(&catchup_sizes, args.catchup_payload, rounds)
            .await
            .context("catchup benchmark")?;
        if let Some(c) = c {
            report.goals.extend(catchup::goals(&c));
            report.catchup = Some(c);
        }
    }
    if parts.contains(&Part::Managed) {
        let plan = managed::ManagedPlan {
            members: args.managed_members,
            builds: args.count(args.managed_builds, 100),
            removes: args.count(args.managed_removes, 10),
            nodes: args
                .managed_nodes
                .unwrap_or(if args.quick { 10 } else { 30 }),
            invites: !args.managed_no_invites,
            rounds,
        };
        let m = managed::bench(plan).await.context("managed benchmark")?;
        report.goals.extend(managed::goals(&m));
        report.managed = Some(m);
    }
    report.run.load_end = sysinfo::load_average();
    report.run.wall_s = started.elapsed().as_secs_f64();
    let others = (sysinfo::machine_busy_s() - busy_start) - (sysinfo::process_cpu_s() - own_start);
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
    let report = match runtime.block_on(run(&args)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("covey-bench: FAILED: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match report::output(&report, args.json, args.json_file.as_deref()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("covey-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
