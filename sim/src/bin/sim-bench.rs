//! Measures the simulator: the 50-node lossy scenario (simulated node-seconds per wall second,
//! convergence time) and the 100,000-entry catch-up (simulated throughput, peak outbox and
//! window memory).
//!
//! `cargo run --release --offline -p covey-sim --bin sim-bench -- [--seed N] [--only mesh|catchup|all]
//! [--backlog N]`

use std::process::ExitCode;

use covey_sim::scenarios::{self, CatchUpParams, MeshParams};
use covey_sim::seeds::parse_seed;

const USAGE: &str = "usage: sim-bench [--seed N] [--only mesh|catchup|all] [--backlog N] \
                     [--window BYTES] [--frame BYTES]";

struct Args {
    seed: u64,
    only: String,
    backlog: usize,
    window: Option<usize>,
    frame: Option<usize>,
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (Linux; clock
/// ticks assumed 100 Hz). `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seed: 1,
        only: "all".into(),
        backlog: 100_000,
        window: None,
        frame: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seed" => args.seed = parse_seed(&value()?).ok_or("--seed: not a number")?,
            "--only" => args.only = value()?,
            "--backlog" => {
                args.backlog = value()?.parse().map_err(|e| format!("--backlog: {e}"))?
            }
            "--window" => {
                args.window = Some(value()?.parse().map_err(|e| format!("--window: {e}"))?)
            }
            "--frame" => args.frame = Some(value()?.parse().map_err(|e| format!("--frame: {e}"))?),
            "-h" | "--help" => {
                return Err(USAGE.into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn mesh(seed: u64) -> Result<(), String> {
    let params = MeshParams::default();
    println!(
        "mesh: {} nodes, one group, {} ms ± {} ms links, {:.0}% loss, publishing for {} s (seed {seed})",
        params.nodes,
        params.link.latency_ms,
        params.link.jitter_ms,
        params.link.loss * 100.0,
        params.publish_for_ms / 1000
    );
    let cpu0 = cpu_seconds();
    let r = scenarios::lossy_mesh(seed, &params)?;
    let cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| b - a);
    println!("  published entries            {}", r.published);
    println!(
        "  simulated time               {:.1} s",
        r.sim_ms as f64 / 1000.0
    );
    println!(
        "  wall time                    {:.2} s",
        r.wall.as_secs_f64()
    );
    println!(
        "  node-seconds per wall second {:.0}",
        r.node_seconds_per_wall_second()
    );
    if let Some(cpu) = cpu {
        println!(
            "  CPU time                     {cpu:.2} s = {:.0} node-seconds per CPU second",
            r.nodes as f64 * r.sim_ms as f64 / 1000.0 / cpu.max(1e-9)
        );
    }
    println!(
        "  convergence                  {:.1} s after the last publish",
        r.convergence_ms() as f64 / 1000.0
    );
    println!(
        "  frames delivered             {} ({:.1} MB)",
        r.stats.frames,
        r.stats.bytes as f64 / 1e6
    );
    println!(
        "  duplicates received          {} ({:.2} per stored entry)",
        r.counters.sync.duplicates,
        r.counters.sync.duplicates as f64 / r.counters.sync.received.max(1) as f64
    );
    println!(
        "  peak outbox items            {} (bound {})",
        r.check.peaks.max_outbox_items, r.check.outbox_bound
    );
    println!(
        "  peak bytes in flight/stream  {} (bound {})",
        r.check.peaks.max_in_flight_bytes, r.check.window_bound
    );
    println!("  trace                        {}", r.trace_hash);
    Ok(())
}

fn catchup(
    seed: u64,
    backlog: usize,
    window: Option<usize>,
    frame: Option<usize>,
) -> Result<(), String> {
    let defaults = CatchUpParams::default();
    let params = CatchUpParams {
        backlog,
        window_bytes: window.unwrap_or(defaults.window_bytes),
        max_frame_bytes: frame.unwrap_or(defaults.max_frame_bytes),
        ..defaults
    };
    println!(
        "catch-up: {} × {} B entries over {} ms, {} Mbit/s, live entry every {} ms (seed {seed})",
        params.backlog,
        params.payload_bytes,
        params.link.latency_ms,
        params.link.bandwidth_bytes_per_ms * 8 / 1000,
        params.live_every_ms
    );
    println!(
        "  window {} B, frames up to {} B",
        params.window_bytes, params.max_frame_bytes
    );
    let cpu0 = cpu_seconds();
    let r = scenarios::catch_up(seed, &params)?;
    let cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| b - a);
    println!(
        "  backlog set-up (wall)        {:.2} s",
        r.wall_setup.as_secs_f64()
    );
    println!(
        "  catch-up (simulated)         {:.2} s = {:.1} MB/s",
        r.catch_up_ms as f64 / 1000.0,
        r.sim_mb_per_s()
    );
    println!(
        "  catch-up (wall)              {:.2} s = {:.1} MB/s",
        r.wall_catch_up.as_secs_f64(),
        r.wall_mb_per_s()
    );
    if let Some(cpu) = cpu {
        println!("  CPU time (set-up + catch-up) {cpu:.2} s");
    }
    println!("  live entries meanwhile       {}", r.live_published);
    println!(
        "  peak outbox items            source {} / stale {} (bound {})",
        r.source.max_outbox_items, r.receiver.max_outbox_items, r.outbox_bound
    );
    println!(
        "  peak bytes in flight/stream  source {} / stale {} (bound {})",
        r.source.max_in_flight_bytes, r.receiver.max_in_flight_bytes, r.window_bound
    );
    println!(
        "  peak unread bytes/stream     source {} / stale {}",
        r.source.max_inbox_bytes, r.receiver.max_inbox_bytes
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut result = Ok(());
    if matches!(args.only.as_str(), "all" | "mesh") {
        result = result.and_then(|()| mesh(args.seed));
    }
    if matches!(args.only.as_str(), "all" | "catchup") {
        result = result.and_then(|()| catchup(args.seed, args.backlog, args.window, args.frame));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failed (seed {}): {e}", args.seed);
            ExitCode::FAILURE
        }
    }
}
