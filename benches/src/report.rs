//! The report: run facts, goals, the statistics every part uses (medians, percentiles, byte
//! sizes), and its output as text or JSON. Each part renders its own section and states its
//! own goals; this module puts them together in a fixed order, so the report reads the same
//! from run to run and stays comparable with earlier ones.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::catchup::CatchupReport;
use crate::latency::LatencyResult;
use crate::managed::ManagedResult;
use crate::publish::PublishResult;
use crate::sync::SyncResult;
use crate::verify::VerifyResult;
use crate::{catchup, latency, managed, publish, sync, verify};

/// Where and how the run happened.
#[derive(Debug, Serialize)]
pub(crate) struct RunInfo {
    /// Crate version of the harness.
    pub(crate) version: &'static str,
    /// CPU model from /proc/cpuinfo.
    pub(crate) cpu: String,
    /// Logical CPUs available.
    pub(crate) cpus: usize,
    /// 1-minute load average when the run started.
    pub(crate) load_start: f64,
    /// 1-minute load average when the run ended.
    pub(crate) load_end: f64,
    /// Whether `--quick` was given.
    pub(crate) quick: bool,
    /// Rounds per measurement.
    pub(crate) rounds: usize,
    /// Wall time of the whole run, seconds.
    pub(crate) wall_s: f64,
    /// Cores' worth of CPU other processes used on average during the run: the noise.
    pub(crate) others_cores: f64,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Run facts.
    pub(crate) run: RunInfo,
    /// Publish throughput per payload size.
    pub(crate) publish: Vec<PublishResult>,
    /// Two-node sync per payload size.
    pub(crate) sync: Vec<SyncResult>,
    /// Publish → receive latency.
    pub(crate) latency: Option<LatencyResult>,
    /// Catch-up verification.
    pub(crate) verify: Option<VerifyResult>,
    /// Stale-node catch-up between two child processes.
    pub(crate) catchup: Option<CatchupReport>,
    /// Managed groups: removal cost, epoch propagation, invite accept.
    pub(crate) managed: Option<ManagedResult>,
    /// Goals and whether they were met.
    pub(crate) goals: Vec<Goal>,
}

/// One goal and whether this run met it.
#[derive(Debug, Serialize)]
pub(crate) struct Goal {
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
    pub(crate) fn at_least(name: impl Into<String>, value: f64, target: f64) -> Self {
        Self {
            name: name.into(),
            value,
            op: ">=",
            target,
            met: value >= target,
        }
    }

    /// A goal met when `value <= target`.
    pub(crate) fn at_most(name: impl Into<String>, value: f64, target: f64) -> Self {
        Self {
            name: name.into(),
            value,
            op: "<=",
            target,
            met: value <= target,
        }
    }
}

/// Percentiles of a set of durations, in ms.
#[derive(Debug, Serialize)]
pub(crate) struct Percentiles {
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
    pub(crate) fn of(samples: &[Duration]) -> Self {
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

    /// The median, in ms.
    pub(crate) fn p50_ms(&self) -> f64 {
        self.p50_ms
    }

    /// The 99th percentile, in ms.
    pub(crate) fn p99_ms(&self) -> f64 {
        self.p99_ms
    }

    /// Renders one line of the text report: `name`, then every figure.
    pub(crate) fn render(&self, s: &mut String, name: &str) {
        let _ = writeln!(
            s,
            "    {name:<22} p50 {:>7.3}  p90 {:>7.3}  p99 {:>7.3}  max {:>7.3}  mean {:>7.3} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.mean_ms
        );
    }
}

/// The median of `values` (0 when empty).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A human-readable byte size.
pub(crate) fn size(bytes: usize) -> String {
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
        publish::render(&mut s, &report.publish);
    }
    if !report.sync.is_empty() {
        sync::render(&mut s, &report.sync, r.cpus);
    }
    if let Some(l) = &report.latency {
        latency::render(&mut s, l);
    }
    if let Some(v) = &report.verify {
        verify::render(&mut s, v);
    }
    if let Some(c) = &report.catchup {
        catchup::render(&mut s, c);
    }
    if let Some(m) = &report.managed {
        managed::render(&mut s, m);
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

/// Writes `report`: as JSON to `json_file` when given, then on stdout as JSON when `json`,
/// else as text.
pub(crate) fn output(report: &Report, json: bool, json_file: Option<&Path>) -> Result<()> {
    if let Some(path) = json_file {
        let j = serde_json::to_vec_pretty(report).context("cannot encode the report")?;
        std::fs::write(path, j).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if json {
        let j = serde_json::to_string_pretty(report).context("cannot encode the report")?;
        println!("{j}");
    } else {
        print!("{}", render(report));
    }
    Ok(())
}
