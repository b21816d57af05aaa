//! Checks a batch of received entries against the store and stores the good ones.
//!
//! Everything is checked before anything is stored: structure and limits, group, epoch, seq
//! continuity, hash chain and lamport bound, then signatures. Because each signed header
//! carries its predecessor's hash, one valid signature authenticates every entry it links to.
//! The verdict on an entry must not depend on how the entries were batched, so the rule
//! (PROTOCOL.md, "Validity rules") is per entry: it is valid when its own signature verifies,
//! or when an entry at most [`MAX_UNSIGNED_RUN`] seqs (and [`MAX_UNSIGNED_RUN_BYTES`]) later,
//! whose own signature verifies, links to it. Checking one signature per window is the fast
//! path; an entry whose window reaches past what has arrived is held back
//! ([`Unverified`]), neither stored nor forwarded, until the entries after it decide it.

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

/// Most an author's lamport clock may advance from one of its entries to the next (and the
/// most its first entry may carry). An honest author advances by how much the group moved
/// since its previous entry, nowhere near this; a member trying to jam the group's order by
/// pinning clocks at [`MAX_LAMPORT`] needs 2^30 entries to get there.
pub const MAX_LAMPORT_STEP: u64 = 1 << 32;

/// The lamport clock of an author's next entry, whose previous entry carries `prev` (0 for
/// none), when the highest clock it holds in the group plus one is `wanted`: at least
/// `prev + 1`, at most `prev + MAX_LAMPORT_STEP`, never past [`MAX_LAMPORT`]. Every entry a
/// publisher makes this way passes [`lamport_in_bounds`].
pub fn next_lamport(prev: u64, wanted: u64) -> u64 {
    wanted
        .max(prev.saturating_add(1))
        .min(prev.saturating_add(MAX_LAMPORT_STEP))
        .min(MAX_LAMPORT)
}

/// The lamport rule every node applies the same way, from the entry's own log alone: an
/// entry's clock is above its predecessor's (`prev`, 0 for seq 1) and at most
/// [`MAX_LAMPORT_STEP`] above it, both capped at [`MAX_LAMPORT`].
pub fn lamport_in_bounds(prev: u64, lamport: u64) -> bool {
    let low = prev.saturating_add(1).min(MAX_LAMPORT);
    let high = prev.saturating_add(MAX_LAMPORT_STEP).min(MAX_LAMPORT);
    (low..=high).contains(&lamport)
}

/// Most entries one verifying signature vouches for before it: an entry whose own signature
/// fails is valid only if an entry at most this many seqs later, whose signature verifies,
/// links to it. It bounds what a receiver holds while it waits for that entry.
pub const MAX_UNSIGNED_RUN: usize = 64;

/// Most bytes (encoded entries) a verifying signature vouches for before it: the entries from
/// an unverified one up to (not including) the verifying one total at most this.
pub const MAX_UNSIGNED_RUN_BYTES: usize = 2 << 20;

/// Most bytes of entries one session holds back waiting for a later signature, across all
/// groups and authors ([`Unverified`]). Honest authors sign every entry, so nothing is ever
/// held for them; past this, a run is dropped and arrives again in a later session.
pub const MAX_UNVERIFIED_BYTES: usize = 4 * MAX_UNSIGNED_RUN_BYTES;

/// The rejection reason of a held entry that was never decided valid: its own signature does
/// not verify, and no later entry vouched for it before another entry took its seq, the
/// session ended, or the session held too much.
pub const UNVERIFIED: &str = "unverified";

/// What a batch must satisfy to be stored.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The group the batch was sent for.
    pub group_id: Id32,
    /// What that group's entry headers carry in place of its id
    /// ([`GroupKeys::entry_group`](crate::group::GroupKeys::entry_group)).
    pub group_ref: Id32,
    /// The group's current epoch; later epochs are unknown to us.
    pub epoch: u64,
    /// Largest ciphertext accepted (payload limit plus tag).
    pub max_ciphertext: usize,
}

impl Rules {
    /// The rules of the group `keys` opens, at its current epoch, for ciphertexts up to
    /// `max_ciphertext` bytes.
    pub fn of(keys: &crate::group::GroupKeys, max_ciphertext: usize) -> Self {
        Self {
            group_id: keys.id.0,
            group_ref: keys.entry_group,
            epoch: keys.epoch,
            max_ciphertext,
        }
    }
}

/// Entries held back by one session: runs whose signatures do not verify and whose deciding
/// entry has not arrived yet (see the module docs). Not stored and not forwarded; each is put
/// back in front of its author's next entries from the same peer, which decide it. One per
/// session, owned by whatever runs the session's ingests, in order.
#[derive(Debug, Default)]
pub struct Unverified {
    runs: BTreeMap<(Id32, Id32), Vec<SignedEntry>>,
    bytes: usize,
}

impl Unverified {
    /// Entries held, across groups and authors.
    pub fn len(&self) -> usize {
        self.runs.values().map(Vec::len).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    fn take(&mut self, group: &Id32, author: &Id32) -> Vec<SignedEntry> {
        let run = self.runs.remove(&(*group, *author)).unwrap_or_default();
        self.bytes -= run.iter().map(|e| e.raw().len()).sum::<usize>();
        run
    }

    /// Holds `run`, or hands it back when the session already holds too much.
    fn hold(
        &mut self,
        group: Id32,
        author: Id32,
        run: Vec<SignedEntry>,
    ) -> std::result::Result<(), Vec<SignedEntry>> {
        let bytes: usize = run.iter().map(|e| e.raw().len()).sum();
        if self.bytes + bytes > MAX_UNVERIFIED_BYTES {
            return Err(run);
        }
        self.bytes += bytes;
        self.runs.insert((group, author), run);
        Ok(())
    }
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
    /// Entries the session holds back after this batch, waiting for a later signature.
    pub held_back: usize,
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

/// Like [`ingest`], one batch of a session whose held-back entries are `held`.
#[cfg(any(test, feature = "test-utils"))]
pub fn ingest_held(
    conn: &Connection,
    rules: &Rules,
    held: &mut Unverified,
    raws: Vec<Vec<u8>>,
) -> Result<Outcome> {
    store_prepared(conn, rules, prepare(rules, None, raws), held)
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
    store_prepared(
        conn,
        rules,
        prepare(rules, content_key, raws),
        &mut Unverified::default(),
    )
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

/// What a node checks of each entry of a batch beyond [`Rules`], before the store: whether
/// the group admits it (its kind, and in a managed group its author's membership), and
/// whether its payload opens.
pub trait Admission {
    /// Why the group refuses `entry` (a short reason and a detail), or `None`.
    fn refuse(&self, entry: &SignedEntry) -> Option<(&'static str, String)>;
    /// Whether `entry`'s payload opens (always, for a node holding no key).
    fn opens(&self, entry: &SignedEntry) -> bool;
}

/// The admission of a passphrase group (or of a node holding no key, when `None`): data
/// entries only, each opening under the group's one content key.
#[derive(Debug, Clone, Copy)]
pub struct ContentKey<'a>(pub Option<&'a Secret32>);

impl Admission for ContentKey<'_> {
    fn refuse(&self, entry: &SignedEntry) -> Option<(&'static str, String)> {
        // Control entries belong to managed groups; a passphrase group has no admin, so no
        // node may store one and every node agrees on the log.
        (entry.header().kind != EntryKind::Data).then(|| {
            (
                "malformed",
                "a control entry (kind 1) in a passphrase group, which has none".to_owned(),
            )
        })
    }

    fn opens(&self, entry: &SignedEntry) -> bool {
        self.0.is_none_or(|key| entry.open(key).is_ok())
    }
}

/// The store-free half of [`ingest_as_member`]: see [`Prepared`].
pub fn prepare(rules: &Rules, content_key: Option<&Secret32>, raws: Vec<Vec<u8>>) -> Prepared {
    prepare_admitted(rules, &ContentKey(content_key), raws)
}

/// [`prepare`] under any [`Admission`] (a managed group's, `group::managed`).
pub fn prepare_admitted(rules: &Rules, admission: &dyn Admission, raws: Vec<Vec<u8>>) -> Prepared {
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
        if h.group_ref != rules.group_ref {
            reject(
                &mut out,
                "wrong-group",
                format!(
                    "entry of group reference {} sent for the group {}",
                    hex8(&h.group_ref),
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
        if let Some((reason, detail)) = admission.refuse(&entry) {
            reject(&mut out, reason, detail);
            continue;
        }
        if !admission.opens(&entry) {
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

/// The store half of [`ingest_as_member`]: chains and lamport bounds against what is held,
/// signatures, then stores what passed, through `conn` (a transaction). `held` is the
/// session's held-back entries: those of this group go back in front of the batch, and
/// what the batch leaves undecided is held there in turn.
pub fn store_prepared(
    conn: &Connection,
    rules: &Rules,
    prepared: Prepared,
    held: &mut Unverified,
) -> Result<Outcome> {
    let Prepared {
        mut by_author,
        rejected,
        unopenable,
    } = prepared;
    let mut out = Outcome {
        rejected,
        ..Outcome::default()
    };
    let waiting: Vec<Id32> = held
        .runs
        .keys()
        .filter(|(g, _)| *g == rules.group_id)
        .map(|(_, a)| *a)
        .collect();
    for author in waiting {
        let Some(fresh) = by_author.remove(&author) else {
            continue;
        };
        // Held entries go back in front of the author's new ones, except where a new entry
        // takes a held one's seq: a sender offering another entry at that seq (the genuine
        // one, whose own signature may verify) supersedes what was held from there on.
        let first_new = fresh.iter().map(|e| e.header().seq).min().unwrap_or(u64::MAX);
        let mut run = held.take(&rules.group_id, &author);
        let superseded = run.split_off(run.partition_point(|e| e.header().seq < first_new));
        reject_all(&mut out, UNVERIFIED, superseded);
        run.extend(fresh);
        by_author.insert(author, run);
    }
    for (author, mut entries) in by_author {
        entries.sort_by_key(|e| e.header().seq);
        let entries = one_per_seq(entries, &mut out);
        let mut head = store::head(conn, &rules.group_id, &author)?.unwrap_or(store::LogHead::EMPTY);
        let mut run: Vec<SignedEntry> = Vec::new();
        let mut broken = false;
        for entry in entries {
            let h = entry.header();
            if h.seq <= head.seq || run.last().is_some_and(|l| l.header().seq >= h.seq) {
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
            let refusal = if h.seq != head.seq + 1 {
                Some(("seq-gap", format!("but we hold up to {}", head.seq)))
            } else if h.prev != head.id {
                Some(("broken-chain", format!("does not link to seq {}", head.seq)))
            } else if !lamport_in_bounds(head.lamport, h.lamport) {
                Some((
                    "lamport-out-of-bounds",
                    format!(
                        "lamport {} after {}: an author's clock rises by 1 to {MAX_LAMPORT_STEP}",
                        h.lamport, head.lamport
                    ),
                ))
            } else {
                None
            };
            if let Some((reason, why)) = refusal {
                broken = true;
                reject(
                    &mut out,
                    reason,
                    format!("author {} seq {} {why}", hex8(&author), h.seq),
                );
                continue;
            }
            head = store::LogHead {
                seq: h.seq,
                id: *entry.id(),
                lamport: h.lamport,
            };
            run.push(entry);
        }
        let (accepted, undecided) = authenticate_run(run, &mut out);
        // Payloads are checked on the undecided run too, so what is held opens.
        let decided = accepted.len();
        let mut run = accepted;
        run.extend(undecided);
        keep_decryptable(&mut run, &unopenable, &mut out);
        let undecided = run.split_off(decided.min(run.len()));
        for entry in run {
            let cursor = store::insert_entry(conn, &rules.group_id, &entry)?;
            out.stored.push((cursor, entry));
        }
        if !undecided.is_empty()
            && let Err(dropped) = held.hold(rules.group_id, author, undecided)
        {
            reject_all(&mut out, UNVERIFIED, dropped);
        }
    }
    out.held_back = held.len();
    Ok(out)
}

/// Keeps one entry per seq of a batch sorted by seq (stably, so in the order offered). Two
/// different entries at one seq only come from a misbehaving sender, or from a held entry and
/// the one that takes its place: the first whose own signature verifies wins, else the last
/// offered; the others are refused (`unverified` when their signature fails, else
/// `conflicting-seq`). Signatures are checked only where a seq is contested.
fn one_per_seq(entries: Vec<SignedEntry>, out: &mut Outcome) -> Vec<SignedEntry> {
    let contested = entries.windows(2).any(|w| {
        w[0].header().seq == w[1].header().seq && w[0].id() != w[1].id()
    });
    if !contested {
        return entries;
    }
    let mut kept: Vec<SignedEntry> = Vec::with_capacity(entries.len());
    let mut rest = entries.into_iter().peekable();
    while let Some(first) = rest.next() {
        let seq = first.header().seq;
        let mut same = vec![first];
        while let Some(next) = rest.next_if(|e| e.header().seq == seq) {
            if same.iter().all(|e| e.id() != next.id()) {
                same.push(next);
            } else {
                // The same entry twice in one batch: one copy decides, the other is a
                // duplicate.
                out.duplicates += 1;
                out.duplicate_heads.push(Head {
                    author: next.header().author,
                    seq,
                });
            }
        }
        if same.len() == 1 {
            kept.extend(same);
            continue;
        }
        out.signatures_checked += same.len() as u64;
        let verified: Vec<bool> = same.iter().map(|e| e.verify_signature().is_ok()).collect();
        let winner = verified
            .iter()
            .position(|v| *v)
            .unwrap_or(same.len() - 1);
        for (i, entry) in same.into_iter().enumerate() {
            if i == winner {
                kept.push(entry);
            } else {
                let h = entry.header();
                let (reason, why) = if verified[i] {
                    ("conflicting-seq", "another entry at its seq was offered too")
                } else {
                    (UNVERIFIED, "its signature fails and another entry took its seq")
                };
                reject(
                    out,
                    reason,
                    format!("author {} seq {}: {why}", hex8(&h.author), h.seq),
                );
            }
        }
    }
    kept.sort_by_key(|e| e.header().seq);
    kept
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

/// Splits a hash-linked run (each entry linking to the one before, the first to what is
/// stored) into its valid prefix and the undecided rest, rejecting what is decided invalid.
///
/// Entry `i` is valid when its own signature verifies, or when a later entry `f` whose own
/// signature verifies lies within its window: `f - i <= MAX_UNSIGNED_RUN` and entries
/// `i..f` total at most `MAX_UNSIGNED_RUN_BYTES`. It is invalid when its signature fails and
/// its window closes within the run with no verifying entry; undecided when the window
/// reaches past the run's end. Going from the end, one signature per window is checked;
/// the others only when one fails, each at most once.
fn authenticate_run(
    mut run: Vec<SignedEntry>,
    out: &mut Outcome,
) -> (Vec<SignedEntry>, Vec<SignedEntry>) {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Verdict {
        Valid,
        Invalid,
        Undecided,
    }
    let n = run.len();
    let mut checked: Vec<Option<bool>> = vec![None; n];
    let mut verifies = |i: usize, out: &mut Outcome| -> bool {
        *checked[i].get_or_insert_with(|| {
            out.signatures_checked += 1;
            run[i].verify_signature().is_ok()
        })
    };
    let mut verdicts = vec![Verdict::Undecided; n];
    // The nearest entry after `i` known to verify.
    let mut nearest_ok: Option<usize> = None;
    for i in (0..n).rev() {
        let (end, closed) = window_end(&run, i);
        if nearest_ok.is_some_and(|f| f <= end) {
            verdicts[i] = Verdict::Valid;
        } else if verifies(i, out) {
            verdicts[i] = Verdict::Valid;
            nearest_ok = Some(i);
        } else if let Some(f) = (i + 1..=end).find(|&f| verifies(f, out)) {
            verdicts[i] = Verdict::Valid;
            nearest_ok = Some(f);
        } else if closed {
            verdicts[i] = Verdict::Invalid;
        }
    }
    // The valid prefix ends at the first entry that is not valid: what follows an invalid
    // entry can never link to the log, and what follows an undecided one waits with it.
    let Some(first) = verdicts.iter().position(|v| *v != Verdict::Valid) else {
        return (run, Vec::new());
    };
    let rest = run.split_off(first);
    if verdicts[first] == Verdict::Invalid {
        reject_all(out, "bad-signature", rest);
        return (run, Vec::new());
    }
    (run, rest)
}

/// The window of entry `i` in `run`: the last index a verifying signature may sit at to vouch
/// for it (at most [`MAX_UNSIGNED_RUN`] later, with entries `i..f` totalling at most
/// [`MAX_UNSIGNED_RUN_BYTES`]), and whether the window closes inside the run (`false`: it
/// reaches past the run's end, so entries still to come may decide it).
fn window_end(run: &[SignedEntry], i: usize) -> (usize, bool) {
    let mut bytes = 0usize;
    let mut f = i;
    loop {
        // May `f + 1` vouch for `i`? Entries `i..=f` count towards the bytes.
        bytes += run[f].raw().len();
        if f + 1 - i > MAX_UNSIGNED_RUN || bytes > MAX_UNSIGNED_RUN_BYTES {
            return (f, true);
        }
        if f + 1 == run.len() {
            return (f, false);
        }
        f += 1;
    }
}

/// Rejects every entry of `entries` for `reason`.
fn reject_all(out: &mut Outcome, reason: &'static str, entries: Vec<SignedEntry>) {
    for entry in entries {
        let h = entry.header();
        reject(
            out,
            reason,
            format!(
                "author {} seq {}: signature invalid, unverified, or follows one that is",
                hex8(&h.author),
                h.seq
            ),
        );
    }
}

fn hex8(id: &Id32) -> String {
    hex::encode(&id[..4])
}
