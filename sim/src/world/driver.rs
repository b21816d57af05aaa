//! The driver: what `node::session` does with a session's machine and outbox (reader with
//! rate limits, writer with bounded range batches, timers, ingest and fan-out).

use super::*;

/// Splits a frame into its message, as the real reader does: length prefix checked against
/// the frame limit, then a total decode.
fn parse_frame(bytes: &[u8], max_frame: usize) -> std::result::Result<Message, String> {
    let Some(prefix) = bytes.get(..LENGTH_PREFIX) else {
        return Err("truncated frame length prefix".into());
    };
    let mut p = [0u8; LENGTH_PREFIX];
    p.copy_from_slice(prefix);
    let len = frame::frame_len(p, max_frame).map_err(|e| e.to_string())?;
    let body = &bytes[LENGTH_PREFIX..];
    if body.len() != len {
        return Err(format!(
            "frame body of {} bytes, prefix says {len}",
            body.len()
        ));
    }
    frame::decode(body).map_err(|e| e.to_string())
}

impl Sim {
    // -----------------------------------------------------------------------------------------
    // The driver: what `node::session` does with a session's machine and outbox
    // -----------------------------------------------------------------------------------------

    /// Runs `f` on the session's machine and queues its sends in the outbox (waking the
    /// writer); returns the outputs that are the caller's to carry out.
    pub(super) fn apply(
        &mut self,
        node: NodeIdx,
        conn: ConnId,
        f: impl FnOnce(&mut SyncSession) -> Vec<Output>,
    ) -> Vec<Output> {
        let Some(s) = self.session_mut(node, conn) else {
            return Vec::new();
        };
        let outputs = f(&mut s.machine);
        let rest: Vec<Output> = outputs
            .into_iter()
            .filter_map(|o| s.outbox.push(o))
            .collect();
        let len = s.outbox.len();
        let peaks = &mut self.nodes[node].peaks;
        peaks.max_outbox_items = peaks.max_outbox_items.max(len);
        self.wake_writer(node, conn);
        rest
    }

    pub(super) fn on_tick(&mut self, node: NodeIdx, conn: ConnId) {
        let Some(s) = self.session_mut(node, conn) else {
            return;
        };
        if s.closing {
            return;
        }
        let now = self.now;
        let outputs = self.apply(node, conn, |m| m.on_tick(now));
        let mut closing = false;
        for output in outputs {
            if let Output::Warn { kind, .. } = output {
                if kind == "peer-timeout" {
                    self.nodes[node].counters.sync.peer_timeouts += 1;
                    closing = true;
                }
                if kind == "handshake-timeout" {
                    closing = true;
                }
                self.warn(node, kind);
            }
        }
        if closing {
            self.begin_close(node, conn, TICK_CLOSE_PAUSE_MS);
        } else {
            self.schedule(now + self.config.tick_ms, Ev::SessionTick { node, conn });
        }
    }

    pub(super) fn retag_out(&self, node: NodeIdx, peer: NodeIdx, message: Message) -> Message {
        let n = &self.nodes[node];
        let them = self.nodes[peer].id;
        engine::retag(message, |group| {
            n.groups
                .get(&group)
                .map(|k| k.session_tag(&n.id, &them))
                .unwrap_or(group)
        })
    }

    pub(super) fn on_write(&mut self, node: NodeIdx, conn: ConnId) {
        let window = self.config.window_bytes;
        let own_max_frame = self.config.max_frame_bytes;
        let Some(s) = self.session_mut(node, conn) else {
            return;
        };
        s.write_scheduled = false;
        // Batches fit both our frame limit and the one the peer announced, as in the driver.
        let max_frame = own_max_frame.min(s.machine.peer_max_frame());
        let (side, peer) = (s.side, s.peer);
        loop {
            let Some(c) = self.conns.get(&conn) else {
                return;
            };
            if c.streams[side].in_flight >= window {
                return;
            }
            let Some(s) = self.session_mut(node, conn) else {
                return;
            };
            if let Some(raw) = s.raw_out.pop_front() {
                self.send(conn, side, Item::Frame(raw));
                continue;
            }
            let Some(work) = s.outbox.next_work() else {
                return;
            };
            let message = match work {
                Work::Message(message) => message,
                Work::Range {
                    group,
                    author,
                    after_seq,
                    up_to_seq,
                } => {
                    let batch = self.with_store(node, |store| {
                        store.read(|c| {
                            engine::read_range_batch(
                                c, group, author, after_seq, up_to_seq, max_frame,
                            )
                        })
                    });
                    let batch = match batch {
                        Ok(b) => b,
                        Err(e) => {
                            self.error(format!("node {node}: reading entries to send: {e}"));
                            self.teardown(node, conn, End::Close);
                            return;
                        }
                    };
                    if let Some((after, up_to)) = batch.rest
                        && let Some(s) = self.session_mut(node, conn)
                    {
                        s.outbox.requeue_range(group, author, after, up_to);
                    }
                    match batch.message {
                        Some(m) => m,
                        None => continue,
                    }
                }
                Work::Close => {
                    self.teardown(node, conn, End::Fin);
                    return;
                }
            };
            let message = self.retag_out(node, peer, message);
            match frame::encode(&message) {
                Ok(bytes) => self.send(conn, side, Item::Frame(bytes)),
                Err(e) => {
                    self.error(format!("node {node}: cannot encode a frame: {e}"));
                    self.teardown(node, conn, End::Close);
                    return;
                }
            }
        }
    }

    pub(super) fn on_read(&mut self, node: NodeIdx, conn: ConnId) {
        let max_frame = self.config.max_frame_bytes;
        let scripted = self.nodes[node].scripted;
        if let Some(s) = self.session_mut(node, conn) {
            s.read_scheduled = false;
        }
        loop {
            let now = self.now;
            let Some(s) = self.session_mut(node, conn) else {
                return;
            };
            if s.closing || (scripted && s.silent) {
                return;
            }
            if s.current.is_none() {
                let Some(bytes) = s.inbox.pop_front() else {
                    if s.fin {
                        self.teardown(node, conn, End::Quiet);
                    }
                    return;
                };
                s.inbox_bytes -= bytes.len();
                let from_peer = 1 - s.side;
                let parsed = parse_frame(&bytes, max_frame);
                self.credit(conn, from_peer, bytes.len());
                if scripted {
                    self.scripted_read(node, conn, parsed);
                    continue;
                }
                match parsed {
                    Ok(message) => {
                        let Some(s) = self.session_mut(node, conn) else {
                            return;
                        };
                        let message =
                            engine::retag(message, |tag| s.tags.get(&tag).copied().unwrap_or(tag));
                        s.current = Some(Pending {
                            message,
                            bytes: bytes.len(),
                            counted: false,
                        });
                    }
                    Err(e) => {
                        self.nodes[node].counters.sync.rejected_frames += 1;
                        self.warn(node, "rejected-frame");
                        self.apply(node, conn, |_| {
                            vec![
                                Output::Send(Message::Refuse {
                                    code: RefuseCode::ProtocolViolation as u16,
                                    reason: e.clone(),
                                }),
                                Output::Close { reason: e },
                            ]
                        });
                        self.begin_close(node, conn, 0);
                        return;
                    }
                }
            }
            // Throttle: over budget, the frame waits and nothing more is read.
            let Some(s) = self.session_mut(node, conn) else {
                return;
            };
            let Some(pending) = s.current.as_mut() else {
                return;
            };
            if let Err(wait) = s.limiter.check(now, pending.bytes) {
                let first = !pending.counted;
                pending.counted = true;
                let warn = first
                    && s.last_rate_warning
                        .is_none_or(|t| now.saturating_sub(t) >= RATE_WARNING_EVERY_MS);
                if warn {
                    s.last_rate_warning = Some(now);
                }
                s.read_scheduled = true;
                self.schedule(now + wait.min(1_000), Ev::Read { node, conn });
                if first {
                    self.nodes[node].counters.sync.rate_limited += 1;
                }
                if warn {
                    self.warn(node, "rate-limited");
                }
                return;
            }
            let Some(Pending { message, bytes, .. }) = s.current.take() else {
                return;
            };
            let joined = self.joined(node);
            let load = engine::groups_to_load(&message, &joined);
            let view = self.with_store(node, |store| {
                store.read(|c| engine::snapshot(c, &joined, &load))
            });
            let view = match view {
                Ok(v) => v,
                Err(e) => {
                    self.error(format!("node {node}: snapshot: {e}"));
                    self.begin_close(node, conn, 0);
                    return;
                }
            };
            let outputs = self.apply(node, conn, |m| {
                m.advance(now);
                m.on_message(message, &view)
            });
            if !self.handle_outputs(node, conn, outputs) {
                self.begin_close(node, conn, 0);
                return;
            }
            if let Some(rate) = self.nodes[node].proc_bytes_per_ms
                && let Some(live) = self.nodes[node].live.as_mut()
            {
                let cost = (bytes as u64).div_ceil(rate.max(1));
                live.busy_until = live.busy_until.max(now) + cost;
                let at = live.busy_until;
                if at > now {
                    if let Some(s) = self.session_mut(node, conn) {
                        s.read_scheduled = true;
                    }
                    self.schedule(at, Ev::Read { node, conn });
                    return;
                }
            }
        }
    }

    /// Carries out the outputs that are not sends; false when the session should end.
    pub(super) fn handle_outputs(
        &mut self,
        node: NodeIdx,
        conn: ConnId,
        outputs: Vec<Output>,
    ) -> bool {
        let mut queue: VecDeque<Output> = outputs.into();
        let mut keep_going = true;
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Send(_) | Output::SendRange { .. } => {
                    let rest = self.apply(node, conn, |_| vec![output]);
                    queue.extend(rest);
                }
                Output::Close { .. } => {
                    keep_going = false;
                    self.apply(node, conn, |_| vec![output]);
                }
                Output::Ingest { group, entries } => {
                    match self.ingest(node, conn, group, entries) {
                        Some(more) => queue.extend(more),
                        None => return false,
                    }
                }
                Output::PeerHeads { group, heads } => {
                    let Some(peer) = self.session_mut(node, conn).map(|s| s.peer) else {
                        continue;
                    };
                    let peer_id = self.nodes[peer].id;
                    let saved = self.with_store(node, |store| {
                        store.write(|tx| store::record_peer_heads(tx, &group, &peer_id, &heads))
                    });
                    // Receipts are advisory: losing one never loses data.
                    if saved.is_err() {
                        self.warn(node, "receipt-not-recorded");
                    }
                }
                Output::StateChanged { .. } => self.nodes[node].counters.state_changes += 1,
                Output::Rejected { count, .. } => {
                    self.nodes[node].counters.sync.rejected_entries += count as u64;
                    self.warn(node, "rejected-entry");
                }
                Output::Warn { kind, .. } => {
                    match kind {
                        "incompatible-version" => {
                            self.nodes[node].counters.sync.incompatible_peers += 1;
                        }
                        "protocol-violation" => self.nodes[node].counters.sync.rejected_frames += 1,
                        _ => {}
                    }
                    self.warn(node, kind);
                }
            }
        }
        keep_going
    }

    /// Verifies and stores a batch from the peer on `conn`, then tells the machine (replays,
    /// `on_ingested`) and every session (`on_local_entry` for each newly stored head). Returns
    /// the machine's further outputs, or `None` when the store failed.
    pub(super) fn ingest(
        &mut self,
        node: NodeIdx,
        conn: ConnId,
        group: Id32,
        entries: Vec<Vec<u8>>,
    ) -> Option<Vec<Output>> {
        let max_ciphertext = self.config.max_payload_bytes + TAG_LEN;
        let joined = self.joined(node);
        let n = &mut self.nodes[node];
        let Some(keys) = n.groups.get(&group) else {
            self.error(format!("node {node}: entries for a group it left"));
            return None;
        };
        let live = n.live.as_mut()?;
        let rules = Rules {
            group_id: group,
            epoch: keys.epoch,
            max_ciphertext,
        };
        let result = live
            .store
            .write(|tx| engine::ingest_batch(tx, &rules, Some(&keys.content_key), entries));
        let done = match result {
            Ok(d) => d,
            Err(e) => {
                self.error(format!("node {node}: storing entries: {e}"));
                return None;
            }
        };
        let stored = done.outcome.stored.len() as u64;
        let lamport = live.max_lamport.entry(group).or_insert(0);
        *lamport = (*lamport).max(done.max_lamport);
        *live.held.entry(group).or_insert(0) += stored;
        let c = &mut n.counters;
        c.sync.received += stored;
        c.sync.duplicates += done.outcome.duplicates;
        let rejected: usize = engine::rejection_summary(&done.outcome)
            .iter()
            .map(|(_, k)| k)
            .sum();
        if rejected > 0 {
            c.sync.rejected_entries += rejected as u64;
            self.warn(node, "rejected-entry");
        }
        let mut view = Snapshot {
            groups: joined,
            ..Snapshot::default()
        };
        view.frontiers.insert(group, done.frontier.clone());
        let mut replayed = 0;
        let more = self.apply(node, conn, |m| {
            let (n, mut out) = m.count_replayed(group, &done.duplicates);
            replayed = n;
            out.extend(m.on_ingested(group, &done.held, &view));
            out
        });
        self.nodes[node].counters.sync.replayed += replayed;
        let sessions = self.registered(node);
        for head in &done.stored {
            for s in &sessions {
                self.fan_out(node, *s, group, *head);
            }
        }
        Some(more)
    }

    pub(super) fn fan_out(&mut self, node: NodeIdx, conn: ConnId, group: Id32, head: Head) {
        let rest = self.apply(node, conn, |m| {
            m.on_local_entry(group, head.author, head.seq)
        });
        if !rest.is_empty() {
            self.error(format!(
                "node {node}: on_local_entry produced non-send outputs: {rest:?}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_like_the_real_reader() {
        let bytes = frame::encode(&Message::Ping { nonce: 7 }).unwrap();
        assert_eq!(parse_frame(&bytes, 1 << 20), Ok(Message::Ping { nonce: 7 }));
        assert!(parse_frame(&bytes[..2], 1 << 20).is_err());
        assert!(parse_frame(&bytes[..bytes.len() - 1], 1 << 20).is_err());
        assert!(parse_frame(&bytes, 1).is_err());
    }
}
