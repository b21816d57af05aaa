//! Checks a batch of received entries against the store and stores the good ones.
//!
//! Everything is checked before anything is stored: structure and limits, group, epoch, seq
//! continuity and hash chain, then signatures. Because each signed header carries its
//! predecessor's hash, one valid signature on the last entry of a contiguous run
//! authenticates the whole run; if that fails we fall back to one signature per entry and
//! keep the valid prefix.

use std::collections::{BTreeMap, HashSet};

use rusqlite::Connection;

use crate::crypto::Secret32;
use crate::error::Result;
use crate::store;
use crate::wire::entry::{EntryKind, Id32, SignedEntry};
use crate::wire::frame::Head;

/// Largest lamport clock accepted: far beyond any real history, and low enough that the next
/// publish (`max + 1`) still fits SQLite's signed 64-bit integers.
pub const MAX_LAMPORT: u64 = 1 << 62;

/// What a batch must satisfy to be stored.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The group the batch was sent for.
    pub group_id: Id32,
    /// The group's current epoch; later epochs are unknown to us.
    pub epoch: u64,
    /// Largest ciphertext accepted (payload limit plus tag).
    pub max_ciphertext: usize,
}

/// Why one entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Short stable reason, such as `bad-signature` or `seq-gap`.
    pub reason: &'static str,
    /// Human detail; empty after the first rejection of the same reason in a batch.
    pub detail: String,
}

/// The result of ingesting a batch.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Newly stored entries with their cursors, in store order.
    pub stored: Vec<(u64, SignedEntry)>,
    /// Entries we already had (a no-op).
    pub duplicates: u64,
    /// Author and seq of each entry we already had, so a session can tell a race from a
    /// replay.
    pub duplicate_heads: Vec<Head>,
    /// Entries refused, with why.
    pub rejected: Vec<Rejection>,
    /// Signatures verified (a measure of the run optimisation).
    pub signatures_checked: u64,
}

fn reject(out: &mut Outcome, reason: &'static str, detail: String) {
    // Only the first detail per reason is kept: a batch of thousands of bad entries must not
    // cost thousands of strings (callers report counts and the first detail).
    let detail = if out.rejected.iter().any(|r| r.reason == reason) {
        String::new()
    } else {
        detail
    };
    out.rejected.push(Rejection { reason, detail });
}

/// Verifies `raws` under `rules` and stores the valid ones through `conn` (a transaction),
/// as a node without the group key (a relay) does: signatures, chains and limits only.
#[cfg(any(test, feature = "test-utils"))]
pub fn ingest(conn: &Connection, rules: &Rules, raws: Vec<Vec<u8>>) -> Result<Outcome> {
    ingest_as_member(conn, rules, None, raws)
}

/// Like [`ingest`], and when `content_key` is given (a member), also authenticates every
/// payload, so an entry signed by a real author but sealed under another key is refused
/// instead of stored where it would break every later read.
#[cfg(any(test, feature = "test-utils"))]
pub fn ingest_as_member(
    conn: &Connection,
    rules: &Rules,
    content_key: Option<&Secret32>,
    raws: Vec<Vec<u8>>,
) -> Result<Outcome> {
    store_prepared(conn, rules, prepare(rules, content_key, raws))
}

/// A batch checked as far as it can be without the store: decoded, its group, ranges and
/// epoch checked, and (for a member) each payload's AEAD tried. Preparing the next batch
/// while the previous one commits takes this work out of the write transaction.
#[derive(Debug, Default)]
pub struct Prepared {
    by_author: BTreeMap<Id32, Vec<SignedEntry>>,
    rejected: Vec<Rejection>,
    /// Ids of entries whose payload does not open (members only).
    unopenable: HashSet<Id32>,
}

impl Prepared {
    /// How many entries are still to be checked against the store.
    pub fn len(&self) -> usize {
        self.by_author.values().map(Vec::len).sum()
    }

    /// Whether no entry is left to check against the store.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn is_empty(&self) -> bool {
        self.by_author.values().all(Vec::is_empty)
    }

    /// Appends another prepared batch of the same group (to store both in one transaction).
    pub fn merge(&mut self, other: Prepared) {
        for (author, entries) in other.by_author {
            self.by_author.entry(author).or_default().extend(entries);
        }
        self.rejected.extend(other.rejected);
        self.unopenable.extend(other.unopenable);
    }
}

/// The store-free half of [`ingest_as_member`]: see [`Prepared`].
pub fn prepare(rules: &Rules, content_key: Option<&Secret32>, raws: Vec<Vec<u8>>) -> Prepared {
    let mut out = Outcome::default();
    let mut unopenable = HashSet::new();
    let mut by_author: BTreeMap<Id32, Vec<SignedEntry>> = BTreeMap::new();
    for raw in raws {
        let entry = match SignedEntry::decode(raw, rules.max_ciphertext) {
            Ok(e) => e,
            Err(e) => {
                reject(&mut out, "malformed", e.to_string());
                continue;
            }
        };
        let h = entry.header();
        if h.kind != EntryKind::Data {
            // Kind 1 is reserved for control entries, which a later protocol version defines;
            // until then no node may store one, so every node agrees on the log.
            reject(
                &mut out,
                "malformed",
                "entry kind 1 (control) is reserved and refused".to_owned(),
            );
            continue;
        }
        if h.group_id != rules.group_id {
            reject(
                &mut out,
                "wrong-group",
                format!(
                    "entry of group {} sent as {}",
                    hex8(&h.group_id),
                    hex8(&rules.group_id)
                ),
            );
            continue;
        }
        if h.lamport > MAX_LAMPORT || h.timestamp_ms > i64::MAX as u64 {
            reject(
                &mut out,
                "out-of-range",
                format!(
                    "entry lamport {} or timestamp {} is beyond what any honest clock reaches",
                    h.lamport, h.timestamp_ms
                ),
            );
            continue;
        }
        if h.epoch > rules.epoch {
            reject(
                &mut out,
                "unknown-epoch",
                format!(
                    "entry epoch {} is past the group's epoch {}",
                    h.epoch, rules.epoch
                ),
            );
            continue;
        }
        if let Some(key) = content_key
            && entry.open(key).is_err()
        {
            unopenable.insert(*entry.id());
        }
        by_author.entry(h.author).or_default().push(entry);
    }
    Prepared {
        by_author,
        rejected: out.rejected,
        unopenable,
    }
}

/// The store half of [`ingest_as_member`]: chains against what is held, signatures, then
/// stores what passed, through `conn` (a transaction).
pub fn store_prepared(conn: &Connection, rules: &Rules, prepared: Prepared) -> Result<Outcome> {
    let Prepared {
        by_author,
        rejected,
        unopenable,
    } = prepared;
    let mut out = Outcome {
        rejected,
        ..Outcome::default()
    };
    for (author, mut entries) in by_author {
        entries.sort_by_key(|e| e.header().seq);
        let (mut head_seq, mut head_id) =
            store::head(conn, &rules.group_id, &author)?.unwrap_or((0, [0u8; 32]));
        let mut run: Vec<SignedEntry> = Vec::new();
        let mut broken = false;
        for entry in entries {
            let h = entry.header();
            if h.seq <= head_seq || run.last().is_some_and(|l| l.header().seq >= h.seq) {
                if store::has_entry(conn, entry.id())? || run.iter().any(|r| r.id() == entry.id()) {
                    out.duplicates += 1;
                    out.duplicate_heads.push(Head { author, seq: h.seq });
                } else {
                    reject(
                        &mut out,
                        "conflicting-seq",
                        format!(
                            "author {} seq {} differs from the entry already held",
                            hex8(&author),
                            h.seq
                        ),
                    );
                }
                continue;
            }
            if broken {
                reject(
                    &mut out,
                    "seq-gap",
                    format!(
                        "author {} seq {} follows a gap or rejected entry",
                        hex8(&author),
                        h.seq
                    ),
                );
                continue;
            }
            if h.seq != head_seq + 1 {
                broken = true;
                reject(
                    &mut out,
                    "seq-gap",
                    format!(
                        "author {} seq {} but we hold up to {}",
                        hex8(&author),
                        h.seq,
                        head_seq
                    ),
                );
                continue;
            }
            if h.prev != head_id {
                broken = true;
                reject(
                    &mut out,
                    "broken-chain",
                    format!(
                        "author {} seq {} does not link to seq {}",
                        hex8(&author),
                        h.seq,
                        head_seq
                    ),
                );
                continue;
            }
            head_seq = h.seq;
            head_id = *entry.id();
            run.push(entry);
        }
        let mut accepted = authenticate_run(run, &mut out);
        keep_decryptable(&mut accepted, &unopenable, &mut out);
        for entry in accepted {
            let cursor = store::insert_entry(conn, &entry)?;
            out.stored.push((cursor, entry));
        }
    }
    Ok(out)
}

/// Truncates an authenticated run at its first entry whose payload does not open; later
/// entries link to it, so they cannot be stored without it.
fn keep_decryptable(run: &mut Vec<SignedEntry>, unopenable: &HashSet<Id32>, out: &mut Outcome) {
    if unopenable.is_empty() {
        return;
    }
    let Some(bad) = run.iter().position(|e| unopenable.contains(e.id())) else {
        return;
    };
    for entry in run.drain(bad..) {
        let h = entry.header();
        reject(
            out,
            "undecryptable",
            format!(
                "author {} seq {}: payload does not open under the group key, or follows one that does not",
                hex8(&h.author),
                h.seq
            ),
        );
    }
}

/// Returns the authenticated prefix of a hash-linked run.
fn authenticate_run(mut run: Vec<SignedEntry>, out: &mut Outcome) -> Vec<SignedEntry> {
    let Some(last) = run.last() else {
        return run;
    };
    out.signatures_checked += 1;
    if last.verify_signature().is_ok() {
        return run;
    }
    // The run's last signature failed: find the valid prefix entry by entry.
    let mut valid = 0;
    for entry in &run {
        out.signatures_checked += 1;
        if entry.verify_signature().is_err() {
            break;
        }
        valid += 1;
    }
    for entry in run.drain(valid..) {
        let h = entry.header();
        reject(
            out,
            "bad-signature",
            format!(
                "author {} seq {}: signature invalid or follows one that is",
                hex8(&h.author),
                h.seq
            ),
        );
    }
    run
}

fn hex8(id: &Id32) -> String {
    hex::encode(&id[..4])
}
