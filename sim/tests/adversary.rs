//! Bad input in the simulator: a scripted peer sends hand-made frames to an honest node (the
//! victim, driven like a real node). Each case is bounded, answered or disconnected, counted,
//! and loses no stored data. Several seeds each (set `COVEY_SIM_SEED` to run one).

use std::collections::BTreeSet;

use covey_core::group::ProofRole;
use covey_core::store;
use covey_core::sync::limits::RateLimits;
use covey_core::sync::session::{FEATURES, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use covey_core::testing::Author;
use covey_core::wire::entry::{Id32, SignedEntry};
use covey_core::wire::frame::{Head, Message, RefuseCode};
use covey_sim::seeds::run_seeds;
use covey_sim::{ConnId, LinkConfig, NodeIdx, NodeOptions, Sim, SimConfig};

const TARGET: &str = "adversary";
const SEEDS: &[u64] = &[1, 2, 3];

struct Setup {
    sim: Sim,
    group: Id32,
    victim: NodeIdx,
    adversary: NodeIdx,
}

fn setup(seed: u64, victim: NodeOptions) -> Result<Setup, String> {
    let mut config = SimConfig::new(seed);
    config.link = LinkConfig {
        latency_ms: 10,
        jitter_ms: 5,
        loss: 0.0,
        bandwidth_bytes_per_ms: 12_500,
    };
    let mut sim = Sim::new(config);
    let group = sim.add_group();
    let victim = sim.add_node(victim).map_err(|e| e.to_string())?;
    let adversary = sim
        .add_node(NodeOptions {
            scripted: true,
            ..NodeOptions::default()
        })
        .map_err(|e| e.to_string())?;
    sim.join(victim, group).map_err(|e| e.to_string())?;
    sim.join(adversary, group).map_err(|e| e.to_string())?;
    Ok(Setup {
        sim,
        group,
        victim,
        adversary,
    })
}

fn hello() -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
    }
}

impl Setup {
    /// A new honest node in the group (not connected to anyone yet).
    fn honest_member(&mut self) -> Result<NodeIdx, String> {
        let node = self
            .sim
            .add_node(NodeOptions::default())
            .map_err(|e| e.to_string())?;
        self.sim.join(node, self.group).map_err(|e| e.to_string())?;
        Ok(node)
    }

    /// The group's name on the wire between the adversary and the victim.
    fn tag(&self, group: Id32) -> Id32 {
        let keys = self.sim.group_keys(&group).expect("group exists");
        keys.session_tag(
            &self.sim.node_id(self.adversary),
            &self.sim.node_id(self.victim),
        )
        .0
    }

    /// The adversary's membership proof of the group on `conn` (it dialed).
    fn proof(&self, conn: ConnId) -> Result<Id32, String> {
        let keys = self.sim.group_keys(&self.group).ok_or("no group")?;
        let binding = self.sim.script_binding(conn).ok_or("no connection")?;
        let pair = keys.pair(
            &self.sim.node_id(self.adversary),
            &self.sim.node_id(self.victim),
        );
        Ok(pair.proof(ProofRole::Dialer, &binding))
    }

    /// Opens a connection, says hello on it and proves membership of the group, as a member
    /// that dials does.
    fn connect(&mut self) -> Result<ConnId, String> {
        let conn = self
            .sim
            .script_connect(self.adversary, self.victim)
            .ok_or("victim unreachable")?;
        self.sim
            .script_send(self.adversary, conn, &hello())
            .map_err(|e| e.to_string())?;
        let proofs = vec![self.proof(conn)?];
        self.sim
            .script_send(self.adversary, conn, &Message::Prove { proofs })
            .map_err(|e| e.to_string())?;
        self.sim.run_for(200);
        Ok(conn)
    }

    fn send(&mut self, conn: ConnId, message: &Message) -> Result<(), String> {
        self.sim
            .script_send(self.adversary, conn, message)
            .map_err(|e| e.to_string())
    }

    fn forged_chain(&self, group: Id32, n: usize) -> Result<Vec<SignedEntry>, String> {
        let keys = self.sim.group_keys(&group).ok_or("no group")?.clone();
        let mut author = Author::new(self.sim.node_secret(self.adversary), keys);
        author.chain(n, 1, b"forged").map_err(|e| e.to_string())
    }

    fn stored(&self, node: NodeIdx, group: Id32) -> Result<Vec<SignedEntry>, String> {
        Ok(self
            .sim
            .stored_entries(node, &group)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    fn victim_sessions_with_adversary(&self) -> usize {
        self.sim
            .sessions(self.victim)
            .iter()
            .filter(|(_, p)| *p == self.adversary)
            .count()
    }

    fn warnings(&self, kind: &str) -> u64 {
        self.sim
            .warnings(self.victim)
            .get(kind)
            .copied()
            .unwrap_or(0)
    }
}

/// The stored entries are exactly `expected`, once each, in valid chains.
fn assert_intact(stored: &[SignedEntry], expected: &[Id32]) -> Result<(), String> {
    let ids: Vec<Id32> = stored.iter().map(|e| *e.id()).collect();
    let unique: BTreeSet<Id32> = ids.iter().copied().collect();
    if unique.len() != ids.len() {
        return Err("an entry is stored twice".into());
    }
    let want: BTreeSet<Id32> = expected.iter().copied().collect();
    if unique != want {
        return Err(format!(
            "stored {} entries, expected {} ({} missing)",
            unique.len(),
            want.len(),
            want.difference(&unique).count()
        ));
    }
    let mut by_author: std::collections::BTreeMap<Id32, Vec<&SignedEntry>> = Default::default();
    for e in stored {
        by_author.entry(e.header().author).or_default().push(e);
    }
    for log in by_author.values_mut() {
        log.sort_by_key(|e| e.header().seq);
        let mut prev = [0u8; 32];
        for (i, e) in log.iter().enumerate() {
            if e.header().seq != i as u64 + 1 || e.header().prev != prev {
                return Err("a stored chain is broken".into());
            }
            prev = *e.id();
        }
    }
    Ok(())
}

#[test]
fn frames_faster_than_the_limit_are_throttled_and_nothing_is_lost() {
    run_seeds(TARGET, "frames_faster_than_the_limit", SEEDS, |seed| {
        let limits = RateLimits {
            frames_per_sec: 100,
            frame_burst: 10,
            ..RateLimits::default()
        };
        let mut s = setup(
            seed,
            NodeOptions {
                rate_limits: Some(limits),
                ..NodeOptions::default()
            },
        )?;
        let conn = s.connect()?;
        let chain = s.forged_chain(s.group, 300)?;
        let tag = s.tag(s.group);
        // 300 frames at once, one entry each: three seconds' worth at 100 frames/s.
        for e in &chain {
            s.send(
                conn,
                &Message::Entries {
                    group: tag,
                    entries: vec![e.raw().to_vec()],
                },
            )?;
        }
        s.sim.run_for(1_000);
        let after_1s = s.sim.held(s.victim, &s.group);
        if !(50..250).contains(&after_1s) {
            return Err(format!(
                "{after_1s} of 300 stored after 1 s: the limit did not pace processing"
            ));
        }
        s.sim.run_for(10_000);
        let c = s.sim.counters(s.victim).clone();
        if c.sync.rate_limited < 100 {
            return Err(format!(
                "only {} frames counted as rate-limited",
                c.sync.rate_limited
            ));
        }
        if s.warnings("rate-limited") != 1 {
            return Err(format!(
                "{} rate-limit warnings: expected one per 10 s",
                s.warnings("rate-limited")
            ));
        }
        if c.sync.received != 300 || c.sync.rejected_entries != 0 || c.sync.rejected_frames != 0 {
            return Err(format!("not every throttled frame was processed: {c:?}"));
        }
        if s.victim_sessions_with_adversary() != 1 {
            return Err("throttling closed the session".into());
        }
        let expected: Vec<Id32> = chain.iter().map(|e| *e.id()).collect();
        assert_intact(&s.stored(s.victim, s.group)?, &expected)?;
        let p = s.sim.peaks(s.victim);
        let bound = s.sim.config().window_bytes + s.sim.config().max_frame_bytes;
        if p.max_inbox_bytes > bound {
            return Err(format!("victim buffered {} bytes", p.max_inbox_bytes));
        }
        Ok(())
    });
}

#[test]
fn a_frontier_of_u64_max_closes_the_session_as_a_violation() {
    run_seeds(TARGET, "a_frontier_of_u64_max", SEEDS, |seed| {
        let mut s = setup(seed, NodeOptions::default())?;
        let mut own = Vec::new();
        for i in 0..20u8 {
            let id = s
                .sim
                .publish(s.victim, s.group, &[i; 64])
                .map_err(|e| e.to_string())?
                .ok_or("victim down")?;
            own.push(id);
        }
        let conn = s.connect()?;
        let tag = s.tag(s.group);
        let victim_id = s.sim.node_id(s.victim);
        s.send(
            conn,
            &Message::Frontier {
                group: tag,
                heads: vec![Head {
                    author: victim_id,
                    seq: u64::MAX,
                }],
            },
        )?;
        s.sim.run_for(5_000);
        let c = s.sim.counters(s.victim).clone();
        if c.sync.rejected_frames != 1 || s.warnings("protocol-violation") != 1 {
            return Err(format!("violation not counted once: {c:?}"));
        }
        if s.victim_sessions_with_adversary() != 0 {
            return Err("the session outlived the violation".into());
        }
        let got = s.sim.script_received(s.adversary, conn);
        let refused = got.iter().any(|m| {
            matches!(m, Message::Refuse { code, .. } if *code == RefuseCode::ProtocolViolation as u16)
        });
        if !refused {
            return Err(format!("no protocol-violation refusal was sent: {got:?}"));
        }
        if s.sim.script_open(s.adversary, conn) {
            return Err("the connection is still open on the adversary's side".into());
        }
        assert_intact(&s.stored(s.victim, s.group)?, &own)
    });
}

#[test]
fn entries_for_a_group_the_victim_is_not_in_are_rejected_and_counted() {
    run_seeds(
        TARGET,
        "entries_for_a_group_the_victim_is_not_in",
        SEEDS,
        |seed| {
            let mut s = setup(seed, NodeOptions::default())?;
            let other = s.sim.add_group();
            s.sim.join(s.adversary, other).map_err(|e| e.to_string())?;
            let conn = s.connect()?;
            let foreign = s.forged_chain(other, 5)?;
            let raws: Vec<Vec<u8>> = foreign.iter().map(|e| e.raw().to_vec()).collect();
            // Named by the pair's session tag for that group, and by its bare id.
            let tag = s.tag(other);
            for group in [tag, other] {
                s.send(
                    conn,
                    &Message::Entries {
                        group,
                        entries: raws.clone(),
                    },
                )?;
            }
            s.sim.run_for(1_000);
            let c = s.sim.counters(s.victim).clone();
            if c.sync.rejected_entries != 10 || c.sync.received != 0 {
                return Err(format!("foreign entries not rejected and counted: {c:?}"));
            }
            if s.warnings("rejected-entry") != 2 {
                return Err(format!(
                    "{} rejected-entry warnings, expected one per frame",
                    s.warnings("rejected-entry")
                ));
            }
            if !s.stored(s.victim, other)?.is_empty() {
                return Err("the victim stored entries of a group it is not in".into());
            }
            // The session goes on: the same peer's entries for a shared group are stored.
            if s.victim_sessions_with_adversary() != 1 {
                return Err("rejecting foreign entries closed the session".into());
            }
            let ours = s.forged_chain(s.group, 3)?;
            let tag = s.tag(s.group);
            s.send(
                conn,
                &Message::Entries {
                    group: tag,
                    entries: ours.iter().map(|e| e.raw().to_vec()).collect(),
                },
            )?;
            s.sim.run_for(1_000);
            let expected: Vec<Id32> = ours.iter().map(|e| *e.id()).collect();
            assert_intact(&s.stored(s.victim, s.group)?, &expected)?;
            let total = s
                .sim
                .with_store(s.victim, |st| st.read(store::entry_count))
                .map_err(|e| e.to_string())?;
            if total != 3 {
                return Err(format!("victim stores {total} entries in all, expected 3"));
            }
            Ok(())
        },
    );
}

#[test]
fn a_replayed_log_is_counted_and_never_stored_twice() {
    run_seeds(TARGET, "a_replayed_log", SEEDS, |seed| {
        let mut s = setup(seed, NodeOptions::default())?;
        // An honest peer publishes 50 entries; the victim syncs them; the peer goes away.
        let honest = s.honest_member()?;
        for i in 0..50u8 {
            s.sim
                .publish(honest, s.group, &[i; 100])
                .map_err(|e| e.to_string())?;
        }
        s.sim.connect(s.victim, honest);
        if s.sim
            .run_until_converged(s.sim.now() + 30_000, 100)
            .is_none()
        {
            return Err("the victim never synced the honest log".into());
        }
        s.sim.crash(honest);
        let log = s.stored(s.victim, s.group)?;
        let expected: Vec<Id32> = log.iter().map(|e| *e.id()).collect();
        let before = s.sim.counters(s.victim).clone();
        // The adversary hears the victim's frontier (it holds all 50), then replays them all.
        let conn = s.connect()?;
        s.sim.run_for(500);
        let honest_id = s.sim.node_id(honest);
        let told = s.sim.script_received(s.adversary, conn).iter().any(|m| {
            matches!(m, Message::Frontier { heads, .. }
                if heads.iter().any(|h| h.author == honest_id && h.seq == 50))
        });
        if !told {
            return Err("the victim never told its frontier".into());
        }
        let tag = s.tag(s.group);
        for batch in log.chunks(10) {
            s.send(
                conn,
                &Message::Entries {
                    group: tag,
                    entries: batch.iter().map(|e| e.raw().to_vec()).collect(),
                },
            )?;
        }
        s.sim.run_for(2_000);
        let c = s.sim.counters(s.victim).clone();
        if c.sync.duplicates - before.sync.duplicates != 50
            || c.sync.replayed - before.sync.replayed != 50
        {
            return Err(format!(
                "replay not counted: duplicates +{}, replayed +{}",
                c.sync.duplicates - before.sync.duplicates,
                c.sync.replayed - before.sync.replayed
            ));
        }
        if c.sync.received != before.sync.received
            || c.sync.rejected_entries != before.sync.rejected_entries
        {
            return Err(format!("the replay changed what is stored: {c:?}"));
        }
        if s.warnings("replayed-entries") != 1 {
            return Err("no single replay warning".into());
        }
        assert_intact(&s.stored(s.victim, s.group)?, &expected)
    });
}

#[test]
fn a_peer_gone_silent_is_dropped_and_its_memory_freed() {
    run_seeds(TARGET, "a_peer_gone_silent", SEEDS, |seed| {
        let mut s = setup(seed, NodeOptions::default())?;
        let conn = s.connect()?;
        let chain = s.forged_chain(s.group, 5)?;
        let tag = s.tag(s.group);
        // A frontier first, so the victim treats it as a live peer and pushes to it.
        s.send(
            conn,
            &Message::Frontier {
                group: tag,
                heads: vec![],
            },
        )?;
        s.send(
            conn,
            &Message::Entries {
                group: tag,
                entries: chain.iter().map(|e| e.raw().to_vec()).collect(),
            },
        )?;
        s.sim.run_for(1_000);
        if s.sim.held(s.victim, &s.group) != 5 {
            return Err("the entries before the silence were not stored".into());
        }
        // The adversary stops reading and answering; the victim keeps publishing 8 KiB
        // entries, 3 MB in all: far more than the window.
        s.sim.script_set_silent(s.adversary, conn, true);
        let silent_at = s.sim.now();
        let mut own: Vec<Id32> = chain.iter().map(|e| *e.id()).collect();
        let payload = vec![7u8; 8 * 1024];
        let mut gone_at = None;
        for _ in 0..400 {
            s.sim.run_for(100);
            if let Some(id) = s
                .sim
                .publish(s.victim, s.group, &payload)
                .map_err(|e| e.to_string())?
            {
                own.push(id);
            }
            if gone_at.is_none() && s.victim_sessions_with_adversary() == 0 {
                gone_at = Some(s.sim.now());
            }
        }
        let Some(gone_at) = gone_at else {
            return Err("the silent peer's session was never closed".into());
        };
        // The victim last heard from it just before the silence (the entries, a second
        // earlier); it pings, waits out the idle timeout, and closes within a tick and the
        // writer's grace period.
        let idle = s.sim.config().timers.idle_timeout_ms;
        let took = gone_at - silent_at;
        if took < idle - 1_000 || took > idle + 3_000 {
            return Err(format!(
                "closed {took} ms after the silence, idle timeout {idle} ms"
            ));
        }
        let c = s.sim.counters(s.victim).clone();
        if c.sync.peer_timeouts != 1 || s.warnings("peer-timeout") != 1 {
            return Err(format!("the failure detector did not count it: {c:?}"));
        }
        if s.sim.outbox_len(s.victim, conn).is_some() {
            return Err("the victim still holds the session's outbox".into());
        }
        let p = s.sim.peaks(s.victim);
        let window = s.sim.config().window_bytes;
        let bound = window + s.sim.config().max_frame_bytes;
        if p.max_in_flight_bytes > bound || p.max_in_flight_bytes < window / 2 {
            return Err(format!(
                "victim had {} bytes in flight (window {window}): expected it to fill the window and stop",
                p.max_in_flight_bytes
            ));
        }
        if p.max_outbox_items > 10 {
            return Err(format!(
                "victim's outbox grew to {} items",
                p.max_outbox_items
            ));
        }
        assert_intact(&s.stored(s.victim, s.group)?, &own)
    });
}

#[test]
fn many_sessions_in_a_row_leave_one_live_per_peer() {
    run_seeds(TARGET, "many_sessions_in_a_row", SEEDS, |seed| {
        let mut s = setup(seed, NodeOptions::default())?;
        // An honest peer keeps syncing with the victim meanwhile.
        let honest = s.honest_member()?;
        s.sim.connect(honest, s.victim);
        let mut conns = Vec::new();
        for i in 0..200u8 {
            if let Some(conn) = s.sim.script_connect(s.adversary, s.victim) {
                s.sim
                    .script_send(s.adversary, conn, &hello())
                    .map_err(|e| e.to_string())?;
                conns.push(conn);
            }
            if i % 20 == 0 {
                s.sim
                    .publish(honest, s.group, &[i; 32])
                    .map_err(|e| e.to_string())?;
            }
            s.sim.run_for(20);
        }
        s.sim.run_for(3_000);
        let c = s.sim.counters(s.victim).clone();
        let p = s.sim.peaks(s.victim);
        if conns.len() != 200 {
            return Err(format!("only {} connections opened", conns.len()));
        }
        if p.max_sessions_per_peer != 1 || s.victim_sessions_with_adversary() != 1 {
            return Err(format!(
                "{} sessions with one peer at once (now {})",
                p.max_sessions_per_peer,
                s.victim_sessions_with_adversary()
            ));
        }
        // One adversary session and the honest one were registered; 199 were refused.
        if c.sessions_refused != 199 {
            return Err(format!(
                "{} connections refused, expected 199",
                c.sessions_refused
            ));
        }
        if p.max_sessions > 2 {
            return Err(format!("victim held {} sessions at once", p.max_sessions));
        }
        let open = conns
            .iter()
            .filter(|c| s.sim.script_open(s.adversary, **c))
            .count();
        if open != 1 {
            return Err(format!("{open} of the adversary's connections still open"));
        }
        if !s.sim.converged() {
            return Err("the honest peer's entries did not reach the victim".into());
        }
        let honest_log = s.stored(honest, s.group)?;
        let expected: Vec<Id32> = honest_log.iter().map(|e| *e.id()).collect();
        assert_intact(&s.stored(s.victim, s.group)?, &expected)
    });
}
