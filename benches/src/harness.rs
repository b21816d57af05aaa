//! What several parts share: the benchmark group every node joins, progress lines, temp dirs,
//! the hop to tokio's blocking pool, and hand-made entries in a bare covey store (a
//! [`random_author`], [`open_group_store`], [`insert_batches`], [`ingest_rules`]) for the parts that
//! measure below the node.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use covey_core::Durability;
use covey_core::crypto::{Secret32, aead};
use covey_core::group::GroupKeys;
use covey_core::store::{self as cstore, GroupRow, Store};
use covey_core::sync::verify;
pub(crate) use covey_core::testing::Author;
use covey_core::wire::entry::{HEADER_LEN, Id32, SIGNATURE_LEN, SignedEntry};
use tempfile::TempDir;

/// Bytes an entry's encoding adds to its payload: header, AEAD tag and signature.
pub(crate) const ENTRY_OVERHEAD: usize = HEADER_LEN + aead::TAG_LEN + SIGNATURE_LEN;

/// The passphrase every benchmark node joins with.
pub(crate) const PASSPHRASE: &str = "covey-bench correct horse battery staple";

/// The group name every benchmark node joins.
pub(crate) const GROUP_NAME: &str = "covey-bench";

/// Longest a sync or transfer may take before the run is declared failed.
pub(crate) const SYNC_DEADLINE: Duration = Duration::from_secs(300);

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `n` random bytes.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::fill(v.as_mut_slice());
    v
}

/// Prints a progress line on stderr (stdout carries the report).
pub(crate) fn progress(msg: impl AsRef<str>) {
    eprintln!("[covey-bench] {}", msg.as_ref());
}

/// A fresh temp dir named after `tag`.
pub(crate) fn temp_dir(tag: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("covey-bench-{tag}-"))
        .tempdir()
        .with_context(|| format!("creating a temp dir for {tag}"))
}

/// Runs `f` on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("blocking benchmark task failed: {e}"))?
}

/// A new random author in a new random group (the one forging `Author` of
/// `covey_core::testing`, sealing with random nonces as a live node does).
pub(crate) fn random_author() -> Author {
    Author::random(&GroupKeys::from_root(&Secret32::random()))
}

/// A covey store in `dir` with the group `group` registered.
pub(crate) fn open_group_store(dir: &Path, group: Id32) -> Result<Store> {
    let store =
        Store::open(dir, Durability::Normal).map_err(|e| anyhow!("opening covey store: {e}"))?;
    let row = GroupRow {
        group_id: group,
        name: "bench".into(),
        kind: 0,
        epoch: 0,
    };
    store
        .write(|tx| cstore::insert_group(tx, &row, now_ms()))
        .map_err(|e| anyhow!("registering group: {e}"))?;
    Ok(store)
}

/// Stores `entries` in `store` unchecked, `batch` to a transaction: the inserts alone, as
/// ingest does them after its checks, for the diagnostics that take catch-up apart.
pub(crate) fn insert_batches(
    store: &Store,
    group: &Id32,
    entries: &[SignedEntry],
    batch: usize,
) -> Result<()> {
    for chunk in entries.chunks(batch.max(1)) {
        store
            .write(|tx| {
                for e in chunk {
                    cstore::insert_entry(tx, group, e)?;
                }
                Ok(())
            })
            .map_err(|e| anyhow!("plain insert: {e}"))?;
    }
    Ok(())
}

/// The rules a member of the group of `keys` ingests entries under: epoch 0 and the node's
/// default payload limit, as every benchmark node has them.
pub(crate) fn ingest_rules(keys: &GroupKeys) -> verify::Rules {
    verify::Rules::of(keys, covey_core::node::DEFAULT_MAX_PAYLOAD + aead::TAG_LEN)
}
