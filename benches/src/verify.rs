//! Part d, `verify`: `verify::ingest` of a contiguous run from one author in batches, which
//! checks one signature per run, against checking every entry's signature individually.
//! Diagnostics: decoding alone and the plain inserts alone, over the same entries.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Result, anyhow, ensure};
use covey_core::sync::verify;
use covey_core::wire::entry::SignedEntry;
use serde::Serialize;

use crate::harness::{
    ingest_rules, insert_batches, open_group_store, random_author, random_bytes, temp_dir,
};
use crate::report::{Goal, size};

/// Catch-up verification.
#[derive(Debug, Serialize)]
pub(crate) struct VerifyResult {
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

/// Part d.
pub(crate) fn bench(n: usize, batch: usize) -> Result<VerifyResult> {
    let payload_len = 1024;
    let payload = random_bytes(payload_len);
    let mut author = random_author();
    let raws: Vec<Vec<u8>> = (0..n)
        .map(|_| author.next(&payload).map(SignedEntry::into_raw))
        .collect::<covey_core::Result<_>>()?;
    let dir = temp_dir("verify")?;
    let store = open_group_store(dir.path(), author.group())?;
    let rules = ingest_rules(author.keys());
    let batches: Vec<Vec<Vec<u8>>> = raws.chunks(batch.max(1)).map(<[_]>::to_vec).collect();
    let nbatches = batches.len();
    // One signature per window of a run (`verify::MAX_UNSIGNED_RUN` entries vouched for by
    // the next signature; 1 KiB entries never reach the window's byte bound).
    let expected_sigs: u64 = batches
        .iter()
        .map(|b| b.len().div_ceil(verify::MAX_UNSIGNED_RUN + 1) as u64)
        .sum();
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
        sigs == expected_sigs,
        "ingest checked {sigs} signatures for {nbatches} batches (expected {expected_sigs}: one per window)"
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
    let insert_store = open_group_store(insert_dir.path(), author.group())?;
    let t = Instant::now();
    insert_batches(&insert_store, &author.group(), &decoded, batch)?;
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

/// The goal of part d: one signature checked per window of a contiguous run
/// (`verify::MAX_UNSIGNED_RUN` entries vouched for by the next signature), and no more.
pub(crate) fn goals(v: &VerifyResult) -> Vec<Goal> {
    let window = verify::MAX_UNSIGNED_RUN + 1;
    let batch = v.batch.max(1);
    let windows =
        (v.entries / batch) * batch.div_ceil(window) + (v.entries % batch).div_ceil(window);
    vec![Goal::at_most(
        "verify: signatures per window of a run",
        v.signatures_checked as f64 / windows.max(1) as f64,
        1.0,
    )]
}

/// Renders part d as text.
pub(crate) fn render(s: &mut String, v: &VerifyResult) {
    let payload = size(v.payload_bytes);
    let _ = writeln!(
        s,
        "\n[d] catch-up verification ({} x {payload} from one author, batches of {})",
        v.entries, v.batch
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
    let (estimate, speedup) = (v.per_entry_ingest_estimate_s, v.speedup);
    let _ = writeln!(
        s,
        "    ingest with a signature per entry (est.) {estimate:.3} s -> run signatures are {speedup:.1}x faster"
    );
    let _ = writeln!(
        s,
        "    diag: of ingest, decode alone {:.3} s, store insert alone {:.3} s (same batches, unchecked)",
        v.diag_decode_s, v.diag_insert_s
    );
}
