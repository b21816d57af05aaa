//! Helpers shared by the tests that attack a node over real iroh connections on loopback
//! (`hostile_peer.rs`, `protection.rs`): the test group's keys, authors that seal entries with
//! the crate's own code, a watched victim node, an honest peer to sync with afterwards, and a
//! raw iroh client that speaks `covey/sync/1` frame by frame.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use covey_core::crypto::{Secret32, kdf};
use covey_core::group::GroupKeys;
use covey_core::testing::RawPeer;
use covey_core::wire::entry::SignedEntry;
use covey_core::{Entry, EntryId, Event, GroupId, Node, NodeConfig, Subscription, SyncCounters};
use iroh::EndpointId;

use super::{GROUP, PASS, all_entries, connect, counters, wait_for_count};
use super::{wait_until, wait_warning};

/// The victim's payload limit; small so its frame limit (and so the byte burst) is small too.
pub const LIMIT: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Keys and entries
// ---------------------------------------------------------------------------------------------

/// The keys of the shared test group, derived once per test binary (Argon2id is slow).
pub fn group_keys() -> GroupKeys {
    static ROOT: OnceLock<Secret32> = OnceLock::new();
    GroupKeys::from_root(
        ROOT.get_or_init(|| kdf::passphrase_root(PASS, GROUP).expect("derive group root")),
    )
}

/// Keys of a group the victim never joined.
pub fn foreign_keys() -> GroupKeys {
    GroupKeys::from_root(&Secret32::from_bytes([0x33; 32]))
}

/// Milliseconds since the Unix epoch, as an entry's timestamp.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `before` with `change` applied: the exact counters a case expects.
pub fn plus(before: &SyncCounters, change: impl FnOnce(&mut SyncCounters)) -> SyncCounters {
    let mut c = before.clone();
    change(&mut c);
    c
}

/// The messages of the `Warning` events of `kind` among `events`.
pub fn warnings_of<'a>(events: &'a [Event], kind: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning { kind: k, message } if k == kind => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The victim node and an honest peer
// ---------------------------------------------------------------------------------------------

/// A node in the test group holding three entries of its own, watched through a subscription.
pub struct Victim {
    _dir: tempfile::TempDir,
    pub node: Node,
    pub group: GroupId,
    pub keys: GroupKeys,
    pub sub: Subscription,
    /// What the node held before any abuse.
    pub baseline: Vec<Entry>,
    /// How many entries the node should hold now.
    pub expected: usize,
    /// How long to wait for the node's reaction, in seconds.
    pub react_secs: u64,
}

/// An honest node that joined the test group and published `published` entries of its own.
pub struct GoodPeer {
    _dir: tempfile::TempDir,
    pub node: Node,
    pub published: usize,
}

impl Victim {
    /// A loopback victim with the small payload limit and whatever `tune` changes, whose
    /// reactions are awaited for `react_secs`.
    pub async fn open(react_secs: u64, tune: impl FnOnce(&mut NodeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::loopback(dir.path()).with_max_payload(LIMIT);
        tune(&mut config);
        let node = Node::open(config).await.expect("open victim");
        let info = node.join_passphrase(PASS, GROUP).await.unwrap();
        let keys = group_keys();
        assert_eq!(info.group_id, keys.id, "test derivation matches the node's");
        for i in 0..3 {
            node.publish(&info.group_id, format!("victim-{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        let baseline = all_entries(&node, &info.group_id).await;
        let sub = node.subscribe();
        Self {
            _dir: dir,
            group: info.group_id,
            keys,
            sub,
            expected: baseline.len(),
            baseline,
            node,
            react_secs,
        }
    }

    /// The victim's sync counters now.
    pub async fn counters(&self) -> SyncCounters {
        counters(&self.node).await
    }

    /// Waits for a `Warning` of `kind` and returns its message.
    pub async fn warning(&mut self, kind: &str) -> String {
        wait_warning(&mut self.sub, self.react_secs, kind).await
    }

    /// Waits until the counters equal `want` (they are updated around the store commit).
    pub async fn expect_counters(&self, want: SyncCounters) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.react_secs);
        loop {
            let now = self.counters().await;
            if now == want {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("counters are {now:?}, expected {want:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Expects `more` newly stored entries within `secs` and checks the baseline is untouched.
    pub async fn expect_stored_within(&mut self, more: usize, secs: u64) -> Vec<Entry> {
        self.expected += more;
        wait_for_count(&self.node, &self.group, self.expected, secs).await;
        self.assert_intact().await
    }

    /// Expects `more` newly stored entries and checks the baseline is untouched.
    pub async fn expect_stored(&mut self, more: usize) -> Vec<Entry> {
        self.expect_stored_within(more, self.react_secs).await
    }

    /// Everything stored before the abuse is still there, byte for byte, each entry once, and
    /// the whole group is readable.
    pub async fn assert_intact(&self) -> Vec<Entry> {
        let now = all_entries(&self.node, &self.group).await;
        assert_eq!(now.len(), self.expected, "entry count");
        assert_eq!(
            &now[..self.baseline.len()],
            &self.baseline[..],
            "entries stored before the abuse changed"
        );
        let mut ids: Vec<EntryId> = now.iter().map(|e| e.meta.entry_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), now.len(), "an entry is stored twice");
        assert_eq!(
            self.node.status().await.unwrap().entries,
            self.expected as u64
        );
        now
    }

    /// Every event arriving within `ms`.
    pub async fn events_for(&mut self, ms: u64) -> Vec<Event> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.sub.recv()).await {
            out.push(ev);
        }
        out
    }

    /// Warnings arriving within `ms`, as (kind, message): context for failure messages.
    pub async fn warnings_for(&mut self, ms: u64) -> Vec<(String, String)> {
        self.events_for(ms)
            .await
            .into_iter()
            .filter_map(|ev| match ev {
                Event::Warning { kind, message } => Some((kind, message)),
                _ => None,
            })
            .collect()
    }

    /// Whether the victim stores `entry`.
    pub async fn has(&self, entry: &SignedEntry) -> bool {
        self.node
            .entry(&self.group, &EntryId(*entry.id()))
            .await
            .unwrap()
            .is_some()
    }

    /// Asserts the victim holds no group `group`: entries of a group it never joined did not
    /// create it.
    pub async fn assert_no_group(&self, group: &GroupId) {
        assert!(
            self.node
                .entries(group, 0, 10)
                .await
                .is_err_and(|e| e.kind() == covey_core::ErrorKind::NotFound),
            "the foreign group was not created"
        );
    }

    /// The peers the victim has a live session with.
    pub async fn connected(&self) -> Vec<EndpointId> {
        self.node.status().await.unwrap().connected_peers
    }

    /// Waits until the node has no live session left.
    pub async fn expect_no_sessions(&self) {
        let node = &self.node;
        wait_until(
            self.react_secs,
            "every session of the victim to end",
            || async move { node.status().await.unwrap().connected_peers.is_empty() },
        )
        .await;
    }

    /// An honest node that joined the group and published `n` entries, not yet connected.
    pub async fn good_peer(&self, n: usize) -> GoodPeer {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(NodeConfig::loopback(dir.path()).with_max_payload(LIMIT))
            .await
            .unwrap();
        node.join_passphrase(PASS, GROUP).await.unwrap();
        for i in 0..n {
            node.publish(&self.group, format!("good-{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        GoodPeer {
            _dir: dir,
            node,
            published: n,
        }
    }

    /// `good` connects and the two sync both ways: both end up with the same entries (ids and
    /// payloads), the victim's count grows by what `good` published, nothing of the victim's
    /// is lost, and the sync itself rejects nothing on either side. `good` stays up.
    pub async fn syncs_with(&mut self, good: &GoodPeer) {
        let before = self.counters().await;
        connect(&good.node, &self.node).await;
        let total = self.expected + good.published;
        wait_for_count(&good.node, &self.group, total, 20).await;
        self.expect_stored_within(good.published, 20).await;
        let mut mine: Vec<_> = all_entries(&self.node, &self.group)
            .await
            .into_iter()
            .map(|e| (e.meta.entry_id, e.payload))
            .collect();
        let mut theirs: Vec<_> = all_entries(&good.node, &self.group)
            .await
            .into_iter()
            .map(|e| (e.meta.entry_id, e.payload))
            .collect();
        mine.sort();
        theirs.sort();
        assert_eq!(
            mine, theirs,
            "the victim and the honest node hold the same entries"
        );
        let after = self.counters().await;
        assert_eq!(after.rejected_frames, before.rejected_frames);
        assert_eq!(after.rejected_entries, before.rejected_entries);
        assert_eq!(counters(&good.node).await.rejected_entries, 0);
    }

    /// An honest node with two entries joins and the two sync both ways (see
    /// [`Victim::syncs_with`]); then it shuts down.
    pub async fn good_peer_syncs(&mut self) {
        let good = self.good_peer(2).await;
        self.syncs_with(&good).await;
        good.node.shutdown().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The raw peer
// ---------------------------------------------------------------------------------------------

/// A raw peer connected to the victim that said hello announcing `features`.
pub async fn session(v: &Victim, features: &[&str]) -> RawPeer {
    let mut peer = RawPeer::connect(&v.node, &v.keys).await;
    peer.hello(features).await;
    peer
}
