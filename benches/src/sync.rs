//! Part b, `sync`: a fresh node B joins and dials A, which already holds the entries; the time
//! from `add_peer` until B holds them all, against a raw iroh bi-stream carrying the same
//! number of messages of the entry's size, connect included. Diagnostics: the arrival timeline
//! of batches on B, process CPU, and each stage of catch-up (store read, encode, decode,
//! ingest) timed alone on one thread.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use covey_core::store as cstore;
use covey_core::sync::engine::{BATCH_MAX_ENTRIES, FRAME_ENVELOPE_ROOM};
use covey_core::sync::verify;
use covey_core::{Event, Node, Subscription, SyncCounters};
use serde::Serialize;

use crate::harness::{
    ENTRY_OVERHEAD, SYNC_DEADLINE, blocking, ingest_rules, insert_batches, open_group_store,
    progress, random_author, random_bytes, temp_dir,
};
use crate::nodes::BenchNode;
use crate::raw_iroh::raw_transfer;
use crate::report::{Goal, median, size};
use crate::sysinfo::process_cpu_s;

/// One two-node sync measurement at one payload size.
#[derive(Debug, Serialize)]
pub(crate) struct SyncResult {
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
    // The node's writer (`engine::read_range_batch`): at most BATCH_MAX_ENTRIES entries and
    // the frame less FRAME_ENVELOPE_ROOM per frame. Its constants, not copies, so the stages
    // keep timing the batches the node sends.
    let batch_bytes = max_frame - FRAME_ENVELOPE_ROOM;
    let frame_entries = (batch_bytes / entry_len).clamp(1, BATCH_MAX_ENTRIES as usize);
    let payload = random_bytes(payload_len);
    let mut author = random_author();
    let entries = (0..n)
        .map(|_| author.next(&payload))
        .collect::<covey_core::Result<Vec<_>>>()?;
    let me = *author.secret().public().as_bytes();
    let group = author.group();
    let src_dir = temp_dir("stages-src")?;
    let src = open_group_store(src_dir.path(), group)?;
    insert_batches(&src, &group, &entries, frame_entries)?;
    // Sender: read.
    let t = Instant::now();
    let mut batches: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut after = 0u64;
    while after < n as u64 {
        let rows = src
            .read(|c| {
                cstore::log_range(
                    c,
                    &group,
                    &me,
                    after,
                    n as u64,
                    BATCH_MAX_ENTRIES,
                    batch_bytes,
                )
            })
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
    let dst = open_group_store(dst_dir.path(), group)?;
    let rules = ingest_rules(author.keys());
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
    let ins = open_group_store(ins_dir.path(), group)?;
    let t = Instant::now();
    insert_batches(&ins, &group, &entries, frame_entries)?;
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

/// Part b at one payload size: A publishes `n` entries, then rounds of a fresh B catching up,
/// each after a raw transfer of the same bytes.
pub(crate) async fn bench(payload_len: usize, n: usize, rounds: usize) -> Result<SyncResult> {
    progress(format!("sync: {n} x {}", size(payload_len)));
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

/// The goals of part b: sync against raw iroh at 64 KiB, and no entry refused at any size.
pub(crate) fn goals(y: &SyncResult) -> Vec<Goal> {
    let mut goals = Vec::new();
    if y.payload_bytes == 64 * 1024 {
        goals.push(Goal::at_least("sync/raw iroh @64 KiB", y.ratio, 0.6));
    }
    goals.push(Goal::at_most(
        format!("B rejected entries @{}", size(y.payload_bytes)),
        y.b_counters.rejected_entries as f64,
        0.0,
    ));
    goals
}

/// Renders part b as text; `cpus` scales the CPU share.
pub(crate) fn render(s: &mut String, results: &[SyncResult], cpus: usize) {
    let _ = writeln!(
        s,
        "\n[b] two-node catch-up (payload MB/s, median of rounds)"
    );
    for y in results {
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
            100.0 * y.sync_cpu_s / (y.sync_s * cpus.max(1) as f64),
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
            c.received, c.duplicates, c.rejected_entries, c.rejected_frames, c.incompatible_peers
        );
    }
}
