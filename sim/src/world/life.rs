//! Node life cycle, groups and publishing.

use covey_core::wire::entry::EntryKind;

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------------
    // Node life cycle, groups, publishing
    // -----------------------------------------------------------------------------------------

    /// Puts a node in a group (storing the group and telling live sessions, as `join` does).
    pub fn join(&mut self, node: NodeIdx, group: Id32) -> Result<()> {
        let keys = self
            .groups
            .get(&group)
            .cloned()
            .ok_or_else(|| CoveyError::not_found("no such group in the simulation"))?;
        let now = self.now;
        let n = &mut self.nodes[node];
        if n.groups.contains_key(&group) {
            return Ok(());
        }
        n.groups.insert(group, keys.clone());
        let Some(live) = n.live.as_mut() else {
            return Ok(());
        };
        let row = GroupRow {
            group_id: group,
            name: hex::encode(&group[..4]),
            kind: 0,
            epoch: 0,
        };
        live.store.write(|tx| store::insert_group(tx, &row, now))?;
        live.max_lamport.insert(group, 0);
        live.held.insert(group, 0);
        let joined = self.joined(node);
        let view = self.with_store(node, |s| s.read(|c| engine::snapshot(c, &joined, &[group])))?;
        let me = self.nodes[node].id;
        for conn in self.registered(node) {
            let Some(peer) = self.session_mut(node, conn).map(|s| s.peer) else {
                continue;
            };
            let pair = keys.pair(&me, &self.nodes[peer].id);
            let joined = self.apply(node, conn, |d| d.on_group_joined(group, pair, &view));
            if let Some(((), rest)) = joined
                && !rest.is_empty()
            {
                self.error(format!("node {node}: on_group_joined asked for {rest:?}"));
            }
        }
        Ok(())
    }

    pub(super) fn joined(&self, node: NodeIdx) -> BTreeSet<Id32> {
        self.nodes[node].groups.keys().copied().collect()
    }

    pub(super) fn registered(&self, node: NodeIdx) -> Vec<ConnId> {
        self.nodes[node]
            .live
            .as_ref()
            .map(|l| l.registered.values().copied().collect())
            .unwrap_or_default()
    }

    /// Makes `from` keep a session with `to` up: remembered, and dialed with backoff now and
    /// after every loss, as `add_peer` does.
    pub fn connect(&mut self, from: NodeIdx, to: NodeIdx) {
        if from == to || self.nodes[from].scripted {
            return;
        }
        self.nodes[from].targets.insert(to);
        self.start_dialer(from, to);
    }

    pub(super) fn start_dialer(&mut self, node: NodeIdx, peer: NodeIdx) {
        let life = self.nodes[node].life;
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        if live.dialers.contains_key(&peer) {
            return;
        }
        live.dialers.insert(peer, Backoff::default());
        self.schedule(
            self.now,
            Ev::DialStep {
                node,
                life,
                peer,
                after_attempt: false,
            },
        );
    }

    /// Stops a node as a crash would: every session and in-memory state is gone; its store
    /// (a real SQLite file) and its keys stay on disk.
    pub fn crash(&mut self, node: NodeIdx) {
        let n = &mut self.nodes[node];
        let Some(live) = n.live.take() else {
            return;
        };
        n.life += 1;
        n.counters.crashes += 1;
        drop(live);
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.ends.contains(&node))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                for side in 0..2 {
                    if c.ends[side] == node {
                        c.open[side] = false;
                    }
                }
            }
            self.reap(id);
        }
    }

    /// Starts a stopped node: reopens its store, reloads its clocks and redials its peers.
    pub fn restart(&mut self, node: NodeIdx) -> Result<()> {
        if self.nodes[node].live.is_some() {
            return Ok(());
        }
        let n = &self.nodes[node];
        let store = Store::open(n.dir.path(), Durability::Normal)?;
        let mut max_lamport = BTreeMap::new();
        let mut held = BTreeMap::new();
        for group in n.groups.keys() {
            let row = GroupRow {
                group_id: *group,
                name: hex::encode(&group[..4]),
                kind: 0,
                epoch: 0,
            };
            store.write(|tx| store::insert_group(tx, &row, self.now))?;
            let (lamport, count) = store.read(|c| {
                let lamport = store::max_lamport(c, group)?;
                let count: u64 = store::frontier(c, group)?.iter().map(|h| h.seq).sum();
                Ok((lamport, count))
            })?;
            max_lamport.insert(*group, lamport);
            held.insert(*group, count);
        }
        self.nodes[node].live = Some(Live {
            store,
            max_lamport,
            held,
            sessions: BTreeMap::new(),
            registered: BTreeMap::new(),
            dialers: BTreeMap::new(),
            busy_until: 0,
        });
        let targets: Vec<NodeIdx> = self.nodes[node].targets.iter().copied().collect();
        for peer in targets {
            self.start_dialer(node, peer);
        }
        Ok(())
    }

    /// Publishes a payload as `node` in `group`, as `Node::publish` does: the next entry of
    /// its log with lamport = highest seen + 1, sealed, signed and stored in one transaction,
    /// then offered to every session. Returns the entry id, or `None` when the node is down.
    pub fn publish(&mut self, node: NodeIdx, group: Id32, payload: &[u8]) -> Result<Option<Id32>> {
        let Some(entry) = self.append(node, group, payload, EntryKind::Data)? else {
            return Ok(None);
        };
        let h = entry.header();
        let id = *entry.id();
        self.nodes[node].counters.sync.published += 1;
        self.ledger.entry(group).or_default().insert(
            (h.author, h.seq),
            LedgerEntry {
                id,
                lamport: h.lamport,
            },
        );
        self.last_publish_ms = self.now;
        Ok(Some(id))
    }

    /// Appends the next entry of `node`'s log in `group`, data or control (`Node::publish`
    /// and `Inner::publish_control`): lamport = highest seen + 1, sealed, signed and stored in
    /// one transaction, then offered to every session. `None` when the node is down.
    pub(super) fn append(
        &mut self,
        node: NodeIdx,
        group: Id32,
        payload: &[u8],
        kind: EntryKind,
    ) -> Result<Option<SignedEntry>> {
        let mut nonce = [0u8; 24];
        self.rng.fill(&mut nonce);
        let now = self.now;
        let n = &mut self.nodes[node];
        let Some(live) = n.live.as_mut() else {
            return Ok(None);
        };
        let keys = n
            .groups
            .get(&group)
            .ok_or_else(|| CoveyError::not_found("node is not in that group"))?;
        let draft = Draft {
            lamport: live.max_lamport.get(&group).copied().unwrap_or(0) + 1,
            timestamp_ms: EPOCH_MS + now,
            nonce,
            payload,
        };
        let secret = &n.secret;
        let (_, entry) = live.store.write(|tx| match kind {
            EntryKind::Data => engine::append_own_entry(tx, keys, secret, draft),
            EntryKind::Control => engine::append_own_control(tx, keys, secret, draft),
        })?;
        let h = entry.header();
        live.max_lamport.insert(group, h.lamport);
        *live.held.entry(group).or_insert(0) += 1;
        let head = Head {
            author: h.author,
            seq: h.seq,
        };
        for conn in self.registered(node) {
            self.fan_out(node, conn, group, head);
        }
        Ok(Some(entry))
    }

    /// Publishes `count` entries of `payload_bytes` each as `node` in one transaction (set-up
    /// of large backlogs; the same entry building as [`Sim::publish`]), then offers the new
    /// head to every session.
    pub fn publish_many(
        &mut self,
        node: NodeIdx,
        group: Id32,
        count: usize,
        payload_bytes: usize,
    ) -> Result<()> {
        let mut nonces = vec![[0u8; 24]; count];
        for nonce in &mut nonces {
            self.rng.fill(nonce);
        }
        let mut payload = vec![0u8; payload_bytes];
        self.rng.fill(&mut payload);
        let now = self.now;
        let n = &mut self.nodes[node];
        let Some(live) = n.live.as_mut() else {
            return Err(CoveyError::invalid("node is down"));
        };
        let keys = n
            .groups
            .get(&group)
            .ok_or_else(|| CoveyError::not_found("node is not in that group"))?;
        let first = live.max_lamport.get(&group).copied().unwrap_or(0) + 1;
        let secret = &n.secret;
        let entries = live.store.write(|tx| {
            let mut out = Vec::with_capacity(count);
            for (i, nonce) in nonces.iter().enumerate() {
                let draft = Draft {
                    lamport: first + i as u64,
                    timestamp_ms: EPOCH_MS + now,
                    nonce: *nonce,
                    payload: &payload,
                };
                let (_, e) = engine::append_own_entry(tx, keys, secret, draft)?;
                out.push((
                    e.header().author,
                    e.header().seq,
                    *e.id(),
                    e.header().lamport,
                ));
            }
            Ok(out)
        })?;
        let Some(&(author, last_seq, _, last_lamport)) = entries.last() else {
            return Ok(());
        };
        live.max_lamport.insert(group, last_lamport);
        *live.held.entry(group).or_insert(0) += count as u64;
        n.counters.sync.published += count as u64;
        let ledger = self.ledger.entry(group).or_default();
        for (author, seq, id, lamport) in entries {
            ledger.insert((author, seq), LedgerEntry { id, lamport });
        }
        self.last_publish_ms = now;
        let head = Head {
            author,
            seq: last_seq,
        };
        for conn in self.registered(node) {
            self.fan_out(node, conn, group, head);
        }
        Ok(())
    }

    /// Whether every member of every group is up and holds every entry published in it.
    pub fn converged(&self) -> bool {
        self.ledger.iter().all(|(group, entries)| {
            let want = entries.len() as u64;
            self.nodes
                .iter()
                .filter(|n| n.groups.contains_key(group) && !n.scripted)
                .all(|n| {
                    n.live
                        .as_ref()
                        .is_some_and(|l| l.held.get(group).copied().unwrap_or(0) == want)
                })
        })
    }
}
