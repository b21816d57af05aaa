//! Part c, `latency`: from `publish` on A until `EntryReceived` on B, a connected and caught-up
//! peer, sample by sample; a raw iroh ping-pong of one message of the entry's size gives the
//! transport's own scale.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use covey_core::Event;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::harness::{ENTRY_OVERHEAD, SYNC_DEADLINE, progress, random_bytes};
use crate::nodes::BenchNode;
use crate::raw_iroh::raw_rtt;
use crate::report::{Goal, Percentiles, size};

/// Longest one latency sample may take before the run is declared failed.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(10);

/// Publish → EntryReceived latency.
#[derive(Debug, Serialize)]
pub(crate) struct LatencyResult {
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

/// Part c.
pub(crate) async fn bench(samples: usize, gap_ms: u64) -> Result<LatencyResult> {
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

/// The goals of part c: end-to-end p50 and p99.
pub(crate) fn goals(l: &LatencyResult) -> Vec<Goal> {
    vec![
        Goal::at_most("latency p50 (ms)", l.end_to_end.p50_ms(), 2.0),
        Goal::at_most("latency p99 (ms)", l.end_to_end.p99_ms(), 10.0),
    ]
}

/// Renders part c as text.
pub(crate) fn render(s: &mut String, l: &LatencyResult) {
    let _ = writeln!(
        s,
        "\n[c] publish -> EntryReceived latency ({} samples, {} payload, {} ms apart)",
        l.samples,
        size(l.payload_bytes),
        l.gap_ms
    );
    l.end_to_end.render(s, "end to end");
    l.after_commit.render(s, "after publish returns");
    l.publish_call.render(s, "publish call");
    l.raw_rtt.render(s, "raw iroh ping-pong");
}
