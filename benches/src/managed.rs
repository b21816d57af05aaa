//! Part f, `managed`: managed groups (issue 13), in four measurements.
//!
//! 1. **Removal entry.** What `remove_member` computes at 100 members: a fresh epoch secret
//!    sealed with [`seal_epoch_secret`] to the 99 that stay, and the `ControlOp::Remove`
//!    carrying it encoded. Baseline: 99 bare operations in the same loop, build and baseline
//!    alternating rep by rep (each bare operation is one X25519 with [`DeviceKey::shared`],
//!    its context built with [`epoch_context`], one HKDF with [`seal_key`] and one
//!    `aead::seal` of 32 bytes). Goal: entry / bare <= 1.5.
//! 2. **`remove_member` end to end** on a node whose group has 100 members. The 99 others are
//!    `add` control entries the admin writes itself (`Node::publish_control_unchecked`, random
//!    node ids and X25519 keys): no nodes stand behind them, so nothing is sent, and what is
//!    timed is the node's own work (seal, cutoff read, commit, re-fold of every control
//!    entry, key store). Alternated with an ordinary `publish` of a payload of the removal's
//!    size on the same node. Reported, no goal.
//! 3. **Epoch propagation.** 30 real nodes in this process on 127.0.0.1 (10 under `--quick`),
//!    every member joined by a link invite from one admin; `accept_invite` dials the inviter
//!    and keeps it as a peer, as `add_peer` does. Run twice: as a star (the group rendezvous
//!    off, so each member knows only the admin and everything spreads through it) and in the
//!    default configuration (members also find each other through the group's rendezvous;
//!    at 30 nodes that is close to a full mesh). Each round, once the nodes are quiet: one
//!    ordinary `publish` on the admin (a payload the size of the removal's control entry) and
//!    the time until every other member has it, then one `remove_member` and the time until
//!    every remaining member holds the new epoch. Both are timed the same way, by each
//!    node's own event (`EntryReceived` of that entry, `GroupChanged` to that epoch, raised
//!    once `entry()` / `groups()` show it), recorded by a task per node; then every node's
//!    `groups()` is asked to confirm. Polling `groups()` as the clock was tried first: one
//!    pass over 29 nodes (a store read each) took about 100 ms on 2 cores, as long as what
//!    it measured. A fresh node then joins so the next round has as many nodes. Reported
//!    with removal / publish and the CPU the process spent on each; the goal is that no
//!    removed member holds the new epoch.
//! 4. **Invite accept.** `accept_invite(link)` and `accept_invite(short code)` (the code's
//!    path includes the DHT lookup of its nameplate through the inviter, the joiner's
//!    bootstrap, and the SPAKE2 exchange), each by a fresh node, and the time from the call
//!    until the joiner holds the inviter's first entry. Baseline: a fresh node in the
//!    passphrase benchmark group (Argon2id spent before the clock starts) calls `add_peer` on
//!    a node holding one entry and the time until it holds it, polled the same way: the same
//!    dial, session and first sync without the invite exchange, so the ratio is what the
//!    invite adds. A raw iroh cold connect and round trip gives the transport's scale.
//!    Reported, no goal.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use covey_core::crypto::{Secret32, aead};
use covey_core::group::control::{ControlOp, MAX_MEMBERS, Role};
use covey_core::group::seal::{
    DeviceKey, epoch_context, open_epoch_secret, seal_epoch_secret, seal_key,
};
use covey_core::wire::entry::Id32;
use covey_core::{EndpointId, EntryId, Event, GroupId, Node, NodeConfig};
use serde::Serialize;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::harness::{blocking, progress, random_bytes, temp_dir};
use crate::nodes::BenchNode;
use crate::raw_iroh::raw_connect_rtt;
use crate::report::{Goal, Percentiles, median};
use crate::sysinfo::process_cpu_s;

/// The name of every managed group the part creates.
const GROUP: &str = "covey-bench-managed";

/// Longest any wait of this part (setup, propagation, first entry) may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// Pause between two polling passes over the nodes.
const POLL_GAP: Duration = Duration::from_millis(1);

/// Most polling passes of one wait (with [`DEADLINE`], whichever comes first).
const MAX_POLL_PASSES: usize = 200_000;

/// How often measurement 3 reads the events the watchers recorded.
const EVENT_GAP: Duration = Duration::from_millis(2);

/// From when on measurement 3 also asks the nodes whose event has not come.
const STATE_CHECKS_AFTER: Duration = Duration::from_secs(1);

/// How often it asks them then.
const STATE_CHECK_GAP: Duration = Duration::from_millis(100);

/// CPU (in cores) under which the nodes of measurement 3 count as quiet before a round.
const QUIET_CORES: f64 = 0.2;

/// The window that CPU is measured over.
const QUIET_WINDOW: Duration = Duration::from_millis(250);

/// Longest wait for the nodes to be quiet before a round (it then starts anyway, and the
/// report shows the CPU they used).
const QUIET_WAIT: Duration = Duration::from_secs(30);

/// Bytes of the inviter's first entry in measurement 4.
const FIRST_ENTRY_BYTES: usize = 256;

/// Goal of measurement 1: the removal's entry against the bare operations.
const REMOVAL_BUILD_GOAL: f64 = 1.5;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ManagedPlan {
    /// Group size of measurements 1 and 2.
    pub(crate) members: usize,
    /// Removal entries built per round in measurement 1 (0 skips it).
    pub(crate) builds: usize,
    /// `remove_member` calls per round in measurement 2 (0 skips it).
    pub(crate) removes: usize,
    /// Nodes of the loopback group in measurement 3 (0 skips it).
    pub(crate) nodes: usize,
    /// Whether measurement 4 runs.
    pub(crate) invites: bool,
    /// Rounds of every measurement (removals in 3, joins of each kind in 4).
    pub(crate) rounds: usize,
}

/// The managed-group part.
#[derive(Debug, Serialize)]
pub(crate) struct ManagedResult {
    /// Measurement 1: building the removal's control entry against bare operations.
    removal_entry: Option<RemovalEntry>,
    /// Measurement 2: `remove_member` end to end on a node with a 100-member group.
    remove_call: Option<RemoveCall>,
    /// Measurement 3: a removal's new epoch reaching every remaining member of a loopback
    /// group, as a star (rendezvous off) and as the default configuration makes it.
    propagation: Vec<Propagation>,
    /// Measurement 4: invite accept by link and by short code.
    invite: Option<InviteAccept>,
}

/// Measurement 1.
#[derive(Debug, Serialize)]
struct RemovalEntry {
    /// Members before the removal.
    members: usize,
    /// Members the new epoch secret is sealed to.
    recipients: usize,
    /// Entries built per round (and as many batches of bare operations).
    builds_per_round: usize,
    /// Bytes of the encoded `ControlOp::Remove`.
    payload_bytes: usize,
    /// Median over rounds of the mean µs of one entry (fresh secret, `seal_epoch_secret`,
    /// encode).
    entry_us: f64,
    /// Median over rounds of the mean µs of one batch of `recipients` bare operations.
    bare_us: f64,
    /// `bare_us / recipients`.
    bare_op_us: f64,
    /// Every round's (entry µs, bare batch µs, entry / bare).
    rounds: Vec<[f64; 3]>,
    /// Median over rounds of entry / bare (paired within each round).
    ratio: f64,
}

/// Measurement 2.
#[derive(Debug, Serialize)]
struct RemoveCall {
    /// Members of the group at each removal (the removed one included).
    members: usize,
    /// Removals per round (each round on a fresh node and group).
    removes_per_round: usize,
    /// Rounds.
    rounds: usize,
    /// Payload bytes of the ordinary publish it is alternated with (the removal's size).
    publish_payload_bytes: usize,
    /// `remove_member`, call to return.
    remove_member: Percentiles,
    /// `publish` of a payload of the removal's size on the same node, call to return.
    publish: Percentiles,
    /// p50 remove_member / p50 publish.
    ratio: f64,
    /// Diagnostic: median seconds to write the `members - 1` add entries of a round (setup).
    diag_setup_s: f64,
    /// Diagnostic: ms of building the removal's entry alone at the same size (measurement 1's
    /// median), when it ran: the share of `remove_member` that is sealing.
    diag_entry_build_ms: Option<f64>,
}

/// One round of measurement 3.
#[derive(Debug, Serialize)]
struct PropagationRound {
    /// Nodes in the group when the round starts.
    nodes: usize,
    /// Admin's sessions when the round starts.
    admin_peers: usize,
    /// Mean sessions of a member when the round starts.
    member_peers_mean: f64,
    /// From `publish` on the admin until the last other member raised `EntryReceived` for
    /// the entry, ms.
    publish_all_ms: f64,
    /// Median over members of the same, ms.
    publish_p50_ms: f64,
    /// From `remove_member` on the admin until the last remaining member raised
    /// `GroupChanged` for the new epoch (its `groups()` shows it from then on), ms.
    removal_all_ms: f64,
    /// Median over remaining members of the same, ms.
    removal_p50_ms: f64,
    /// The admin's `remove_member` call alone, ms.
    remove_call_ms: f64,
    /// Nodes timed by asking them because their event was missed (0 when every event came).
    state_checked: usize,
    /// Process CPU seconds (every node, all threads) from the publish until the last member
    /// had it.
    publish_cpu_s: f64,
    /// Process CPU seconds from `remove_member` until the last member had the new epoch.
    removal_cpu_s: f64,
    /// Cores the nodes used, idle, just before the round (see `quiet_wait_s`).
    idle_cores: f64,
    /// Seconds waited before the round for the nodes to fall quiet (under 0.2 cores over
    /// 250 ms; at most 30 s).
    quiet_wait_s: f64,
    /// removal_all_ms / publish_all_ms.
    ratio: f64,
}

/// Measurement 3 in one topology.
#[derive(Debug, Serialize)]
struct Propagation {
    /// How the nodes are connected (see [`topology`]).
    topology: &'static str,
    /// Whether the nodes run the group rendezvous (`NodeConfig.dht.rendezvous`).
    rendezvous: bool,
    /// Nodes of the group (admin included).
    nodes: usize,
    /// Payload bytes of the ordinary publish (the removal's control payload size).
    publish_payload_bytes: usize,
    /// Seconds to open the nodes and join them by link invites (setup).
    setup_s: f64,
    /// Every round.
    rounds: Vec<PropagationRound>,
    /// Median over rounds of `publish_all_ms`.
    publish_all_ms: f64,
    /// Median over rounds of `removal_all_ms`.
    removal_all_ms: f64,
    /// Median over rounds of the admin's `remove_member` call, ms.
    remove_call_ms: f64,
    /// Median over rounds of removal / publish.
    ratio: f64,
    /// Removed members that showed the new epoch after the others had it (must be 0).
    removed_at_new_epoch: usize,
}

/// Measurement 4.
#[derive(Debug, Serialize)]
struct InviteAccept {
    /// Joins of each kind.
    joins: usize,
    /// `accept_invite(link)`, call to return.
    link_accept: Percentiles,
    /// From `accept_invite(link)` until the joiner holds the inviter's first entry.
    link_first_entry: Percentiles,
    /// `accept_invite(short code)`, call to return (DHT lookup and SPAKE2 included).
    code_accept: Percentiles,
    /// From `accept_invite(short code)` until the joiner holds the inviter's first entry.
    code_first_entry: Percentiles,
    /// Baseline: from `add_peer` until a fresh passphrase-group node holds its peer's one
    /// entry (Argon2id before the clock).
    add_peer_first_entry: Percentiles,
    /// Scale: raw iroh cold connect (fresh endpoints) and one 256-byte round trip.
    raw_connect_rtt: Percentiles,
    /// Every join's (link accept, link first entry, code accept, code first entry, add_peer
    /// first entry, raw connect rtt) ms.
    rounds: Vec<[f64; 6]>,
    /// Median over rounds of link first entry / add_peer first entry.
    link_ratio: f64,
    /// Median over rounds of code first entry / add_peer first entry.
    code_ratio: f64,
    /// Median over rounds of link accept / raw connect rtt.
    link_accept_vs_raw: f64,
    /// Median over rounds of code accept / raw connect rtt.
    code_accept_vs_raw: f64,
}

/// Part f: the measurements `plan` asks for.
pub(crate) async fn bench(plan: ManagedPlan) -> Result<ManagedResult> {
    let rounds = plan.rounds.max(1);
    let removal_entry = if plan.builds > 0 {
        progress(format!(
            "managed: removal entry at {} members, {} builds x {rounds} rounds",
            plan.members, plan.builds
        ));
        let (members, builds) = (plan.members, plan.builds);
        Some(
            blocking(move || removal_entry(members, builds, rounds))
                .await
                .context("removal entry")?,
        )
    } else {
        None
    };
    let remove_call = if plan.removes > 0 {
        progress(format!(
            "managed: remove_member on a {}-member group, {} removals x {rounds} rounds",
            plan.members, plan.removes
        ));
        let mut r = remove_call(plan.members, plan.removes, rounds)
            .await
            .context("remove_member end to end")?;
        r.diag_entry_build_ms = removal_entry.as_ref().map(|e| e.entry_us / 1e3);
        Some(r)
    } else {
        None
    };
    let mut propagations = Vec::new();
    if plan.nodes > 0 {
        for rendezvous in [false, true] {
            progress(format!(
                "managed: epoch propagation, {} loopback nodes, {rounds} removals, {}",
                plan.nodes,
                topology(rendezvous)
            ));
            propagations.push(
                propagation(plan.nodes, rounds, rendezvous)
                    .await
                    .with_context(|| format!("epoch propagation, {}", topology(rendezvous)))?,
            );
        }
    }
    let invite = if plan.invites {
        progress(format!(
            "managed: invite accept, {rounds} joins by link and by short code"
        ));
        Some(invite_accept(rounds).await.context("invite accept")?)
    } else {
        None
    };
    Ok(ManagedResult {
        removal_entry,
        remove_call,
        propagation: propagations,
        invite,
    })
}

/// 32 random bytes.
fn random_id() -> Id32 {
    let mut id = [0u8; 32];
    rand::fill(&mut id);
    id
}

/// A random node id that is a valid Ed25519 key (what `members()` and `remove_member` take).
fn random_endpoint() -> EndpointId {
    iroh::SecretKey::from_bytes(&random_id()).public()
}

/// The subject of measurement 1: what `remove_member` builds, from a fresh secret to the
/// encoded payload. Returns the payload.
fn build_removal(
    recipients: &[(Id32, [u8; 32])],
    group_ref: &Id32,
    removed: Id32,
) -> Result<Vec<u8>> {
    let secret = Secret32::random();
    let block = seal_epoch_secret(&secret, 1, group_ref, recipients)?;
    let op = ControlOp::Remove {
        member: removed,
        cutoff: 0,
        epoch: block,
    };
    Ok(op.encode())
}

/// The baseline of measurement 1: one bare sealing per recipient (context, X25519, HKDF,
/// AEAD of 32 bytes) under one ephemeral key. Returns the bytes sealed.
fn bare_ops(
    ephemeral: &DeviceKey,
    ephemeral_public: &[u8; 32],
    recipients: &[(Id32, [u8; 32])],
    group_ref: &Id32,
) -> Result<usize> {
    let secret = Secret32::random();
    let mut sealed_bytes = 0;
    for (recipient, x25519) in recipients {
        let context = epoch_context(group_ref, 1, ephemeral_public, recipient, x25519);
        let shared = ephemeral.shared(x25519)?;
        let key = seal_key(&shared, &context)?;
        let sealed = aead::seal(&key, &[0; aead::NONCE_LEN], &context, secret.expose())?;
        sealed_bytes += black_box(sealed).len();
    }
    Ok(sealed_bytes)
}

/// Measurement 1, on the calling (blocking) thread.
fn removal_entry(members: usize, builds: usize, rounds: usize) -> Result<RemovalEntry> {
    ensure!(
        (2..=MAX_MEMBERS).contains(&members),
        "--managed-members must be 2 to {MAX_MEMBERS}"
    );
    let keys: Vec<DeviceKey> = (1..members).map(|_| DeviceKey::random()).collect();
    let recipients: Vec<(Id32, [u8; 32])> =
        keys.iter().map(|k| (random_id(), k.public())).collect();
    let (group_ref, removed) = (random_id(), random_id());
    let ephemeral = DeviceKey::random();
    let ephemeral_public = ephemeral.public();
    // What is built is what a member opens: its copy of the secret is there, once.
    let payload = build_removal(&recipients, &group_ref, removed)?;
    let block = match ControlOp::decode(&payload)? {
        ControlOp::Remove { epoch, .. } => epoch,
        other => bail!("the removal decoded as {other:?}"),
    };
    ensure!(
        block.secrets.len() == recipients.len(),
        "the removal carries {} sealed secrets for {} recipients",
        block.secrets.len(),
        recipients.len()
    );
    ensure!(
        open_epoch_secret(&keys[0], &recipients[0].0, &group_ref, &block)?.is_some(),
        "a recipient cannot open its copy of the epoch secret"
    );
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        // Round 0 warms both up and is not recorded.
        let n = if round == 0 {
            builds.clamp(1, 5)
        } else {
            builds
        };
        let (mut entry, mut bare) = (Duration::ZERO, Duration::ZERO);
        for rep in 0..n {
            // Alternate which goes first, so neither always runs on a warmer cache.
            for build_turn in [rep % 2 == 0, rep % 2 == 1] {
                if build_turn {
                    let t = Instant::now();
                    black_box(build_removal(&recipients, &group_ref, removed)?);
                    entry += t.elapsed();
                } else {
                    let t = Instant::now();
                    black_box(bare_ops(
                        &ephemeral,
                        &ephemeral_public,
                        &recipients,
                        &group_ref,
                    )?);
                    bare += t.elapsed();
                }
            }
        }
        if round > 0 {
            let entry_us = entry.as_secs_f64() * 1e6 / n as f64;
            let bare_us = bare.as_secs_f64() * 1e6 / n as f64;
            progress(format!(
                "managed removal entry round {round}: entry {entry_us:.0} us, {} bare ops {bare_us:.0} us, ratio {:.3}",
                recipients.len(),
                entry_us / bare_us
            ));
            samples.push([entry_us, bare_us, entry_us / bare_us]);
        }
    }
    let col = |i: usize| median(&samples.iter().map(|s| s[i]).collect::<Vec<_>>());
    let bare_us = col(1);
    Ok(RemovalEntry {
        members,
        recipients: recipients.len(),
        builds_per_round: builds,
        payload_bytes: payload.len(),
        entry_us: col(0),
        bare_us,
        bare_op_us: bare_us / recipients.len() as f64,
        ratio: col(2),
        rounds: samples,
    })
}

/// Bytes of a `ControlOp::Remove` payload sealing an epoch to `recipients` members.
fn remove_payload_len(recipients: usize) -> Result<usize> {
    let r: Vec<(Id32, [u8; 32])> = (0..recipients)
        .map(|_| (random_id(), DeviceKey::random().public()))
        .collect();
    Ok(build_removal(&r, &random_id(), random_id())?.len())
}

/// Adds a member with no node behind it: the admin's own `add` control entry for a random
/// node id and X25519 key.
async fn add_synthetic(node: &Node, group: &GroupId) -> Result<EndpointId> {
    let id = random_endpoint();
    node.publish_control_unchecked(
        group,
        ControlOp::Add {
            member: *id.as_bytes(),
            role: Role::Member,
            x25519: DeviceKey::random().public(),
        },
    )
    .await
    .context("writing a member's add entry")?;
    Ok(id)
}

/// The epoch `node` holds of `group`.
async fn epoch_of(node: &Node, group: &GroupId) -> Result<u64> {
    node.groups()
        .await
        .context("groups")?
        .into_iter()
        .find(|g| &g.group_id == group)
        .map(|g| g.epoch)
        .ok_or_else(|| anyhow!("the node holds no group {group}"))
}

/// Measurement 2: per round a fresh node and group of `members` (the admin and `members - 1`
/// add entries), then `removes` removals alternated with publishes; after each removal a new
/// add keeps the group at `members`.
async fn remove_call(members: usize, removes: usize, rounds: usize) -> Result<RemoveCall> {
    ensure!(
        (2..=MAX_MEMBERS).contains(&members),
        "--managed-members must be 2 to {MAX_MEMBERS}"
    );
    let payload = random_bytes(remove_payload_len(members - 1)?);
    let (mut removals, mut publishes, mut setups) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let dir = temp_dir("managed-remove")?;
        let node = Node::open(NodeConfig::loopback(dir.path()))
            .await
            .context("opening the admin node")?;
        let group = node.create_group(GROUP).await?.group_id;
        let t = Instant::now();
        let mut others = Vec::with_capacity(members);
        for _ in 1..members {
            others.push(add_synthetic(&node, &group).await?);
        }
        setups.push(t.elapsed().as_secs_f64());
        let count = node.members(&group).await?.len();
        ensure!(
            count == members,
            "the group has {count} members, not {members}"
        );
        // Warm-up, not recorded.
        node.publish(&group, &payload, None).await?;
        let mut round_removals = Vec::with_capacity(removes);
        for i in 0..removes {
            let target = others.remove(0);
            for remove_turn in [i % 2 == 1, i % 2 == 0] {
                let t = Instant::now();
                if remove_turn {
                    node.remove_member(&group, &target)
                        .await
                        .context("remove_member")?;
                    round_removals.push(t.elapsed());
                } else {
                    node.publish(&group, &payload, None)
                        .await
                        .context("publish")?;
                    publishes.push(t.elapsed());
                }
            }
            others.push(add_synthetic(&node, &group).await?);
        }
        let epoch = epoch_of(&node, &group).await?;
        ensure!(
            epoch == removes as u64,
            "after {removes} removals the group is at epoch {epoch}"
        );
        let count = node.members(&group).await?.len();
        ensure!(
            count == members,
            "the group has {count} members, not {members}"
        );
        let p50 = Percentiles::of(&round_removals).p50_ms();
        progress(format!(
            "managed remove_member round {round}: {removes} removals, p50 {p50:.3} ms; {} adds took {:.2} s",
            members - 1,
            setups.last().copied().unwrap_or_default()
        ));
        removals.extend(round_removals);
        node.shutdown().await.context("shutting the admin down")?;
    }
    let (remove_member, publish) = (Percentiles::of(&removals), Percentiles::of(&publishes));
    Ok(RemoveCall {
        members,
        removes_per_round: removes,
        rounds,
        publish_payload_bytes: payload.len(),
        ratio: remove_member.p50_ms() / publish.p50_ms(),
        remove_member,
        publish,
        diag_setup_s: median(&setups),
        diag_entry_build_ms: None,
    })
}

/// What a node is waited for.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// `groups()` shows the group at this epoch or later (`GroupChanged` says so).
    Epoch(GroupId, u64),
    /// `entry()` finds this entry (`EntryReceived` says so).
    Entry(GroupId, EntryId),
}

/// Whether `node` has what `want` names, by asking it (one store read).
async fn holds(node: &Node, want: Want) -> Result<bool> {
    match want {
        Want::Epoch(group, epoch) => Ok(epoch_of(node, &group).await? >= epoch),
        Want::Entry(group, id) => Ok(node.entry(&group, &id).await?.is_some()),
    }
}

/// Polls `nodes` in turn, every [`POLL_GAP`], until each has what `want` names; returns for
/// each the time from `start` at which it was first seen to have it.
async fn poll_until(nodes: &[&Node], want: Want, start: Instant) -> Result<Vec<Duration>> {
    let mut seen: Vec<Option<Duration>> = vec![None; nodes.len()];
    for _ in 0..MAX_POLL_PASSES {
        for (node, at) in nodes.iter().zip(seen.iter_mut()) {
            if at.is_none() && holds(node, want).await? {
                *at = Some(start.elapsed());
            }
        }
        if seen.iter().all(Option::is_some) {
            return Ok(seen.into_iter().flatten().collect());
        }
        if start.elapsed() > DEADLINE {
            break;
        }
        tokio::time::sleep(POLL_GAP).await;
    }
    let missing = seen.iter().filter(|s| s.is_none()).count();
    bail!(
        "{missing} of {} nodes still lack {want:?} after {:.1} s",
        nodes.len(),
        start.elapsed().as_secs_f64()
    )
}

/// Waits, polling every 20 ms, until `check` holds; `what` names it in the error.
async fn wait_for<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{what}: not reached in {DEADLINE:?}")
}

/// An event a node raised, as the watchers record it.
#[derive(Debug, Clone, Copy)]
enum Seen {
    /// `GroupChanged`.
    Epoch(GroupId, u64),
    /// `EntryReceived`.
    Entry(EntryId),
}

/// A task per node recording when its `GroupChanged` and `EntryReceived` events arrive: the
/// clock of measurement 3.
struct Watchers {
    /// Where the tasks send (node number, event, arrival).
    tx: mpsc::UnboundedSender<(usize, Seen, Instant)>,
    /// What they sent.
    rx: mpsc::UnboundedReceiver<(usize, Seen, Instant)>,
    /// The tasks.
    tasks: Vec<JoinHandle<()>>,
}

impl Watchers {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx,
            tasks: Vec::new(),
        }
    }

    /// Starts recording `node`'s events as node number `n`.
    fn watch(&mut self, n: usize, node: &Node) {
        let mut sub = node.subscribe();
        let tx = self.tx.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(ev) = sub.recv().await {
                let at = Instant::now();
                let seen = match ev {
                    Event::GroupChanged { group_id, epoch } => Seen::Epoch(group_id, epoch),
                    Event::EntryReceived { entry_id, .. } => Seen::Entry(entry_id),
                    _ => continue,
                };
                if tx.send((n, seen, at)).is_err() {
                    return;
                }
            }
        }));
    }

    /// Everything recorded since the last call.
    fn drain(&mut self) -> Vec<(usize, Seen, Instant)> {
        let mut out = Vec::new();
        while let Ok(x) = self.rx.try_recv() {
            out.push(x);
        }
        out
    }

    /// Waits until every node of `peers` raised the event `want` names after `start`, and
    /// returns for each the time from `start` at which its watcher got it. Events are read
    /// every 2 ms, which costs the nodes nothing. From [`STATE_CHECKS_AFTER`] on, the nodes
    /// still missing theirs are asked every [`STATE_CHECK_GAP`] as well: one that has what
    /// `want` names by two checks in a row with no event (an event it dropped) is timed by
    /// the first of them, and counted in the second value returned.
    async fn wait_all(
        &mut self,
        peers: &[&Peer],
        want: Want,
        start: Instant,
    ) -> Result<(Vec<Duration>, usize)> {
        let mut at: Vec<Option<Duration>> = vec![None; peers.len()];
        let mut checked: Vec<Option<Duration>> = vec![None; peers.len()];
        let mut by_check = 0;
        let mut last_check = start;
        for _ in 0..MAX_POLL_PASSES {
            for (n, seen, t) in self.drain() {
                let Some(i) = peers.iter().position(|p| p.n == n) else {
                    continue;
                };
                let wanted = match (want, seen) {
                    (Want::Epoch(g, e), Seen::Epoch(h, f)) => g == h && f >= e,
                    (Want::Entry(_, id), Seen::Entry(got)) => id == got,
                    _ => false,
                };
                if wanted && t >= start && at[i].is_none() {
                    at[i] = Some(t.duration_since(start));
                }
            }
            if at.iter().all(Option::is_some) {
                return Ok((at.into_iter().flatten().collect(), by_check));
            }
            if start.elapsed() > DEADLINE {
                break;
            }
            if start.elapsed() >= STATE_CHECKS_AFTER && last_check.elapsed() >= STATE_CHECK_GAP {
                last_check = Instant::now();
                for (i, p) in peers.iter().enumerate() {
                    if at[i].is_some() || !holds(&p.node, want).await? {
                        continue;
                    }
                    match checked[i] {
                        None => checked[i] = Some(start.elapsed()),
                        Some(first) => {
                            at[i] = Some(first);
                            by_check += 1;
                        }
                    }
                }
            }
            tokio::time::sleep(EVENT_GAP).await;
        }
        let missing = at.iter().filter(|s| s.is_none()).count();
        bail!(
            "{missing} of {} nodes still lack {want:?} after {:.1} s",
            peers.len(),
            start.elapsed().as_secs_f64()
        )
    }

    fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// A loopback node of measurement 3 or 4 in its own temp dir.
struct Peer {
    /// Its number among the nodes of the measurement.
    n: usize,
    /// The node.
    node: Node,
    /// Keeps the data dir as long as the node.
    _dir: TempDir,
}

/// Opens a loopback node numbered `n`, with `bootstrap` as its DHT bootstrap if given, and
/// the group rendezvous on or off.
async fn open_peer(n: usize, bootstrap: Option<&str>, rendezvous: bool) -> Result<Peer> {
    let dir = temp_dir("managed")?;
    let mut config = NodeConfig::loopback(dir.path());
    if let Some(b) = bootstrap {
        config.bootstrap = vec![b.to_owned()];
    }
    config.dht.rendezvous = rendezvous;
    let node = Node::open(config)
        .await
        .with_context(|| format!("opening node {n}"))?;
    Ok(Peer { n, node, _dir: dir })
}

/// Shuts `peers` down all at once (a shutdown mostly waits for its connections to close).
async fn shutdown_all(peers: Vec<Peer>) -> Result<()> {
    let tasks: Vec<JoinHandle<Result<()>>> = peers
        .into_iter()
        .map(|p| {
            tokio::spawn(async move {
                match tokio::time::timeout(DEADLINE, p.node.shutdown()).await {
                    Ok(r) => r.with_context(|| format!("shutting node {} down", p.n)),
                    Err(_) => bail!("node {} did not shut down in {DEADLINE:?}", p.n),
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| anyhow!("shutdown task: {e}"))??;
    }
    Ok(())
}

/// Opens node `n` (rendezvous on or off) and joins it to `group` by `link`.
async fn join_by_link(link: &str, group: &GroupId, n: usize, rendezvous: bool) -> Result<Peer> {
    let peer = open_peer(n, None, rendezvous).await?;
    let joined = peer
        .node
        .accept_invite(link)
        .await
        .with_context(|| format!("node {n} accepting a link invite"))?;
    ensure!(&joined.group_id == group, "node {n} joined another group");
    Ok(peer)
}

/// Waits until the admin has a session with every member and every member knows every
/// member and holds `epoch`.
async fn wait_settled(admin: &Node, members: &[Peer], group: &GroupId, epoch: u64) -> Result<()> {
    let total = members.len() + 1;
    wait_for("the admin connected to every member", || async {
        let peers = admin.status().await?.connected_peers;
        Ok(members.iter().all(|m| peers.contains(&m.node.node_id())))
    })
    .await?;
    for m in members {
        wait_for(
            &format!("node {} knows all {total} members at epoch {epoch}", m.n),
            || async {
                Ok(m.node.members(group).await?.len() == total
                    && epoch_of(&m.node, group).await? == epoch)
            },
        )
        .await?;
    }
    Ok(())
}

/// Waits, up to [`QUIET_WAIT`], until the nodes of this process use less than
/// [`QUIET_CORES`] of CPU over [`QUIET_WINDOW`] (sessions, dials and rendezvous work after a
/// join settle down). Returns the cores used over the last window and the seconds waited.
async fn wait_quiet() -> (f64, f64) {
    let start = Instant::now();
    let mut cores = f64::NAN;
    while start.elapsed() < QUIET_WAIT {
        let cpu = process_cpu_s();
        let t = Instant::now();
        tokio::time::sleep(QUIET_WINDOW).await;
        cores = (process_cpu_s() - cpu) / t.elapsed().as_secs_f64();
        if cores < QUIET_CORES {
            break;
        }
    }
    (cores, start.elapsed().as_secs_f64())
}

/// How measurement 3's nodes are connected with the rendezvous on or off.
fn topology(rendezvous: bool) -> &'static str {
    if rendezvous {
        "mesh: default config, members also meet through the group rendezvous"
    } else {
        "star: rendezvous off, each member knows only the admin"
    }
}

/// Measurement 3 in one topology: every member joins by a link from the admin and dials it;
/// with `rendezvous` the members also find each other through the group's rendezvous.
async fn propagation(nodes: usize, rounds: usize, rendezvous: bool) -> Result<Propagation> {
    ensure!(
        (3..=MAX_MEMBERS).contains(&nodes),
        "--managed-nodes must be 3 to {MAX_MEMBERS} (an admin, one to remove, one that stays)"
    );
    let mut watchers = Watchers::new();
    let admin = open_peer(0, None, rendezvous).await?;
    let group = admin.node.create_group(GROUP).await?.group_id;
    let setup = Instant::now();
    let mut members = Vec::with_capacity(nodes);
    for n in 1..nodes {
        let link = admin.node.create_invite(&group, 600, true).await?.link;
        let m = join_by_link(&link, &group, n, rendezvous).await?;
        watchers.watch(n, &m.node);
        members.push(m);
    }
    wait_settled(&admin.node, &members, &group, 0).await?;
    let setup_s = setup.elapsed().as_secs_f64();
    progress(format!(
        "managed propagation: {nodes} nodes joined and settled in {setup_s:.2} s"
    ));
    // An ordinary entry as large as the removal's control entry.
    let payload = random_bytes(remove_payload_len(nodes - 1)?);
    // Warm-up, not recorded: every session carries one entry first.
    {
        let refs: Vec<&Node> = members.iter().map(|m| &m.node).collect();
        let meta = admin.node.publish(&group, &payload, None).await?;
        poll_until(&refs, Want::Entry(group, meta.entry_id), Instant::now()).await?;
    }
    let mut next = nodes;
    // The links for the nodes that replace removed ones, made while every node is up: once
    // a node is gone, `create_invite` waits seconds for the short code's announcement to it.
    let mut spare_links = Vec::with_capacity(rounds);
    for _ in 1..rounds {
        spare_links.push(admin.node.create_invite(&group, 600, true).await?.link);
    }
    let mut removed_at_new_epoch = 0;
    let mut gone = Vec::with_capacity(rounds);
    let mut out = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let epoch = round as u64;
        let (idle_cores, quiet_wait_s) = wait_quiet().await;
        let admin_peers = admin.node.status().await?.connected_peers.len();
        let mut member_peers = 0;
        for m in &members {
            member_peers += m.node.status().await?.connected_peers.len();
        }
        let member_peers_mean = member_peers as f64 / members.len() as f64;
        // The baseline: one ordinary publish reaching every other member.
        let refs: Vec<&Peer> = members.iter().collect();
        watchers.drain();
        let cpu = process_cpu_s();
        let t0 = Instant::now();
        let meta = admin.node.publish(&group, &payload, None).await?;
        let want = Want::Entry(group, meta.entry_id);
        let (publish_times, publish_checked) = watchers.wait_all(&refs, want, t0).await?;
        let publish_cpu_s = process_cpu_s() - cpu;
        // The removal of the longest-standing member.
        let target = members.remove(0);
        let refs: Vec<&Peer> = members.iter().collect();
        watchers.drain();
        let cpu = process_cpu_s();
        let t0 = Instant::now();
        admin
            .node
            .remove_member(&group, &target.node.node_id())
            .await
            .context("remove_member")?;
        let remove_call = t0.elapsed();
        let want = Want::Epoch(group, epoch);
        let (removal_times, removal_checked) = watchers.wait_all(&refs, want, t0).await?;
        let removal_cpu_s = process_cpu_s() - cpu;
        // What the events said, asked of every node: each remaining member's `groups()` shows
        // the new epoch, and the removed member's does not.
        let nodes_left: Vec<&Node> = members.iter().map(|m| &m.node).collect();
        poll_until(&nodes_left, want, Instant::now()).await?;
        if epoch_of(&target.node, &group).await? >= epoch {
            removed_at_new_epoch += 1;
        }
        // Its shutdown (seconds, mostly waiting for connections to close, little CPU) runs
        // on behind the next rounds, which start only once the nodes are quiet.
        gone.push(tokio::spawn(shutdown_all(vec![target])));
        let ms = |d: &[Duration]| -> (f64, f64) {
            let v: Vec<f64> = d.iter().map(|x| x.as_secs_f64() * 1e3).collect();
            (v.iter().copied().fold(0.0, f64::max), median(&v))
        };
        let (publish_all_ms, publish_p50_ms) = ms(&publish_times);
        let (removal_all_ms, removal_p50_ms) = ms(&removal_times);
        progress(format!(
            "managed propagation round {round}: publish reached {} members in {publish_all_ms:.1} ms, epoch {epoch} reached {} in {removal_all_ms:.1} ms (remove_member {:.1} ms)",
            publish_times.len(),
            removal_times.len(),
            remove_call.as_secs_f64() * 1e3
        ));
        out.push(PropagationRound {
            nodes: members.len() + 2,
            admin_peers,
            member_peers_mean,
            publish_all_ms,
            publish_p50_ms,
            removal_all_ms,
            removal_p50_ms,
            remove_call_ms: remove_call.as_secs_f64() * 1e3,
            state_checked: publish_checked + removal_checked,
            publish_cpu_s,
            removal_cpu_s,
            idle_cores,
            quiet_wait_s,
            ratio: removal_all_ms / publish_all_ms,
        });
        if let Some(link) = spare_links.pop() {
            // A fresh node takes the removed one's place.
            let m = join_by_link(&link, &group, next, rendezvous).await?;
            next += 1;
            watchers.watch(m.n, &m.node);
            members.push(m);
            wait_settled(&admin.node, &members, &group, epoch).await?;
        }
    }
    watchers.stop();
    members.push(admin);
    shutdown_all(members).await?;
    for g in gone {
        g.await.map_err(|e| anyhow!("shutdown task: {e}"))??;
    }
    let col = |f: fn(&PropagationRound) -> f64| median(&out.iter().map(f).collect::<Vec<_>>());
    Ok(Propagation {
        topology: topology(rendezvous),
        rendezvous,
        nodes,
        publish_payload_bytes: payload.len(),
        setup_s,
        publish_all_ms: col(|r| r.publish_all_ms),
        removal_all_ms: col(|r| r.removal_all_ms),
        remove_call_ms: col(|r| r.remove_call_ms),
        ratio: col(|r| r.ratio),
        removed_at_new_epoch,
        rounds: out,
    })
}

/// Polls `node` every [`POLL_GAP`] until it holds `entry`; the time from `start`.
async fn first_entry(node: &Node, group: GroupId, entry: EntryId, start: Instant) -> Result<f64> {
    let at = poll_until(&[node], Want::Entry(group, entry), start).await?;
    Ok(at[0].as_secs_f64() * 1e3)
}

/// One invite join: a fresh node accepts `invite`; (accept ms, first entry ms).
async fn join_once(
    joiner: &Node,
    invite: &str,
    group: GroupId,
    first: EntryId,
) -> Result<(f64, f64)> {
    let t = Instant::now();
    let joined = joiner
        .accept_invite(invite)
        .await
        .context("accept_invite")?;
    let accept = t.elapsed().as_secs_f64() * 1e3;
    ensure!(joined.group_id == group, "the joiner joined another group");
    let held = first_entry(joiner, group, first, t).await?;
    Ok((accept, held))
}

/// Measurement 4. Joiners stay up until the end, so the inviter's DHT contacts stay live.
async fn invite_accept(rounds: usize) -> Result<InviteAccept> {
    let inviter = open_peer(0, None, true).await?;
    let group = inviter.node.create_group(GROUP).await?.group_id;
    let first = inviter
        .node
        .publish(&group, &random_bytes(FIRST_ENTRY_BYTES), None)
        .await?
        .entry_id;
    let ticket = inviter.node.addr().await?;
    // The baseline's source, in the passphrase group (its Argon2id runs here).
    let source = BenchNode::open("managed-source").await?;
    let source_first = source
        .node
        .publish(&source.group, &random_bytes(FIRST_ENTRY_BYTES), None)
        .await?
        .entry_id;
    let source_ticket = source.node.addr().await?;
    let mut joiners = Vec::new();
    let mut closing = Vec::new();
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        // Round 0 warms every path up and is not recorded.
        let raw = raw_connect_rtt(FIRST_ENTRY_BYTES).await?.as_secs_f64() * 1e3;
        let fresh = BenchNode::open("managed-fresh").await?;
        let t = Instant::now();
        fresh
            .node
            .add_peer(&source_ticket)
            .await
            .context("add_peer")?;
        let base = first_entry(&fresh.node, fresh.group, source_first, t).await?;
        closing.push(tokio::spawn(fresh.close()));

        let link = inviter.node.create_invite(&group, 600, true).await?.link;
        let joiner = open_peer(joiners.len() + 1, None, true).await?;
        let (link_accept, link_held) = join_once(&joiner.node, &link, group, first).await?;
        joiners.push(joiner);

        let code = inviter
            .node
            .create_invite(&group, 600, true)
            .await?
            .short_code;
        let joiner = open_peer(joiners.len() + 1, Some(&ticket), true).await?;
        // The joiner has met its bootstrap before the code is typed.
        wait_for("the code joiner's DHT has a contact", || async {
            Ok(joiner.node.status().await?.dht.contacts > 0)
        })
        .await?;
        let (code_accept, code_held) = join_once(&joiner.node, &code, group, first).await?;
        joiners.push(joiner);
        if round > 0 {
            progress(format!(
                "managed invite round {round}: link accept {link_accept:.1} ms (entry at {link_held:.1}), code accept {code_accept:.1} ms (entry at {code_held:.1}), add_peer entry at {base:.1} ms, raw connect+rtt {raw:.2} ms"
            ));
            samples.push([link_accept, link_held, code_accept, code_held, base, raw]);
        }
    }
    closing.push(tokio::spawn(source.close()));
    joiners.push(inviter);
    shutdown_all(joiners).await?;
    for c in closing {
        c.await.map_err(|e| anyhow!("shutdown task: {e}"))??;
    }
    let pct = |i: usize| {
        Percentiles::of(
            &samples
                .iter()
                .map(|s| Duration::from_secs_f64(s[i] / 1e3))
                .collect::<Vec<_>>(),
        )
    };
    let ratio =
        |a: usize, b: usize| median(&samples.iter().map(|s| s[a] / s[b]).collect::<Vec<_>>());
    Ok(InviteAccept {
        joins: rounds,
        link_accept: pct(0),
        link_first_entry: pct(1),
        code_accept: pct(2),
        code_first_entry: pct(3),
        add_peer_first_entry: pct(4),
        raw_connect_rtt: pct(5),
        link_ratio: ratio(1, 4),
        code_ratio: ratio(3, 4),
        link_accept_vs_raw: ratio(0, 5),
        code_accept_vs_raw: ratio(2, 5),
        rounds: samples,
    })
}

/// The goals of part f: the removal's entry within 1.5x of the bare operations, and no
/// removed member holding the new epoch.
pub(crate) fn goals(m: &ManagedResult) -> Vec<Goal> {
    let mut goals = Vec::new();
    if let Some(e) = &m.removal_entry {
        goals.push(Goal::at_most(
            format!("managed removal entry/bare ops @{} members", e.members),
            e.ratio,
            REMOVAL_BUILD_GOAL,
        ));
    }
    if !m.propagation.is_empty() {
        let removed: usize = m.propagation.iter().map(|p| p.removed_at_new_epoch).sum();
        goals.push(Goal::at_most(
            "managed removed members at the new epoch",
            removed as f64,
            0.0,
        ));
    }
    goals
}

/// Renders part f as text.
pub(crate) fn render(s: &mut String, m: &ManagedResult) {
    let _ = writeln!(s, "\n[f] managed groups");
    if let Some(e) = &m.removal_entry {
        let _ = writeln!(
            s,
            "  removal entry at {} members ({} recipients, {} B payload), {} builds/round, median of {} rounds",
            e.members,
            e.recipients,
            e.payload_bytes,
            e.builds_per_round,
            e.rounds.len()
        );
        let _ = writeln!(
            s,
            "    secret + seal_epoch_secret + encode {:>9.1} us",
            e.entry_us
        );
        let _ = writeln!(
            s,
            "    {} bare ops (X25519, HKDF, seal)  {:>9.1} us  ({:.1} us each)",
            e.recipients, e.bare_us, e.bare_op_us
        );
        let _ = writeln!(s, "    ratio entry/bare = {:.3}", e.ratio);
    }
    if let Some(r) = &m.remove_call {
        let _ = writeln!(
            s,
            "  remove_member end to end, {}-member group, {} removals x {} rounds",
            r.members, r.removes_per_round, r.rounds
        );
        let _ = writeln!(
            s,
            "    (the {} others are add entries the admin wrote itself, no nodes behind them: nothing is sent)",
            r.members - 1
        );
        r.remove_member.render(s, "remove_member");
        r.publish
            .render(s, &format!("publish {} B", r.publish_payload_bytes));
        let _ = writeln!(
            s,
            "    ratio remove_member/publish (p50) = {:.2}; setup: {} adds in {:.2} s",
            r.ratio,
            r.members - 1,
            r.diag_setup_s
        );
        if let Some(build) = r.diag_entry_build_ms {
            let _ = writeln!(
                s,
                "    diag: building the entry alone (above) {build:.2} ms of the p50; the rest is commit, re-fold and key store"
            );
        }
    }
    for p in &m.propagation {
        let _ = writeln!(
            s,
            "  removal -> every remaining member at the new epoch, {} loopback nodes joined by links from the admin",
            p.nodes
        );
        let _ = writeln!(
            s,
            "  {} (timed by each node's events, then checked with groups())",
            p.topology
        );
        for (i, r) in p.rounds.iter().enumerate() {
            let _ = writeln!(
                s,
                "    round {}: {} nodes, admin {} sessions, a member {:.1}; idle {:.2} cores before it{}",
                i + 1,
                r.nodes,
                r.admin_peers,
                r.member_peers_mean,
                r.idle_cores,
                if r.state_checked > 0 {
                    format!("; {} nodes timed by asking (event missed)", r.state_checked)
                } else {
                    String::new()
                }
            );
            let _ = writeln!(
                s,
                "      publish -> {:>3} members {:>8.1} ms (p50 {:>6.1})  CPU {:.2} s",
                r.nodes - 1,
                r.publish_all_ms,
                r.publish_p50_ms,
                r.publish_cpu_s
            );
            let _ = writeln!(
                s,
                "      remove  -> {:>3} members {:>8.1} ms (p50 {:>6.1})  CPU {:.2} s; remove_member call {:.1} ms",
                r.nodes - 2,
                r.removal_all_ms,
                r.removal_p50_ms,
                r.removal_cpu_s,
                r.remove_call_ms
            );
        }
        let _ = writeln!(
            s,
            "    median: removal {:.1} ms, publish of {} B {:.1} ms, ratio removal/publish = {:.2}; remove_member call {:.1} ms",
            p.removal_all_ms, p.publish_payload_bytes, p.publish_all_ms, p.ratio, p.remove_call_ms
        );
        let _ = writeln!(
            s,
            "    removed members at the new epoch: {}; setup {:.1} s",
            p.removed_at_new_epoch, p.setup_s
        );
    }
    if let Some(i) = &m.invite {
        let _ = writeln!(
            s,
            "  invite accept on loopback, {} joins of each kind (fresh joiner each)",
            i.joins
        );
        i.link_accept.render(s, "accept(link)");
        i.link_first_entry.render(s, "link -> first entry");
        i.code_accept.render(s, "accept(short code)");
        i.code_first_entry.render(s, "code -> first entry");
        i.add_peer_first_entry.render(s, "add_peer -> entry");
        i.raw_connect_rtt.render(s, "raw connect + rtt");
        let _ = writeln!(
            s,
            "    first entry vs add_peer (passphrase group, Argon2id before the clock): link {:.2}x, code {:.2}x",
            i.link_ratio, i.code_ratio
        );
        let _ = writeln!(
            s,
            "    accept vs raw iroh cold connect + round trip: link {:.1}x, code {:.1}x",
            i.link_accept_vs_raw, i.code_accept_vs_raw
        );
    }
}
