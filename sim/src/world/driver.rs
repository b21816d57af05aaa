//! The virtual-link transport of sync sessions: carries out what covey-core's driver core
//! ([`SessionDriver`]) asks, the way `covey_core::node::sync_driver` does over iroh, on the
//! simulator's streams and clock. Every policy (what to send, counters, warnings, timings)
//! is the driver core's; this file only moves frames, runs store calls and schedules events.

use super::*;

/// Splits a frame into its message, as the real reader does: length prefix checked against
/// the frame limit, then a total decode.
fn parse_frame(bytes: &[u8], max_frame: usize) -> std::result::Result<Message, WireError> {
    let Some(prefix) = bytes.get(..LENGTH_PREFIX) else {
        return Err(WireError::Truncated("frame length prefix"));
    };
    let mut p = [0u8; LENGTH_PREFIX];
    p.copy_from_slice(prefix);
    let len = frame::frame_len(p, max_frame)?;
    let body = &bytes[LENGTH_PREFIX..];
    if body.len() != len {
        return Err(WireError::Truncated("frame body"));
    }
    frame::decode(body)
}

impl Sim {
    /// Runs `f` on the session's driver, wakes the writer, re-arms the session's timer, and
    /// returns what `f` returned with the actions the call queued (the caller's to carry
    /// out). `None` when there is no such session.
    pub(super) fn apply<R>(
        &mut self,
        node: NodeIdx,
        conn: ConnId,
        f: impl FnOnce(&mut SessionDriver) -> R,
    ) -> Option<(R, Vec<Action>)> {
        let s = self.session_mut(node, conn)?;
        let out = f(&mut s.driver);
        let actions = s.driver.take_actions();
        let len = s.driver.outbox_len();
        let peaks = &mut self.nodes[node].peaks;
        peaks.max_outbox_items = peaks.max_outbox_items.max(len);
        self.wake_writer(node, conn);
        self.arm_timer(node, conn);
        Some((out, actions))
    }

    /// Schedules the session's timer event at the driver's next deadline, unless one is
    /// already due by then.
    pub(super) fn arm_timer(&mut self, node: NodeIdx, conn: ConnId) {
        let now = self.now;
        let Some(s) = self.session_mut(node, conn) else {
            return;
        };
        let Some(at) = s.driver.poll_timeout() else {
            return;
        };
        let at = at.max(now);
        if s.timer_at.is_some_and(|t| t <= at && t >= now) {
            return;
        }
        s.timer_at = Some(at);
        self.schedule(at, Ev::SessionTick { node, conn });
    }

    pub(super) fn on_tick(&mut self, node: NodeIdx, conn: ConnId) {
        let now = self.now;
        let Some(s) = self.session_mut(node, conn) else {
            return;
        };
        if s.timer_at == Some(now) {
            s.timer_at = None;
        }
        if s.closing || s.driver.poll_timeout().is_none_or(|at| at > now) {
            self.arm_timer(node, conn);
            return;
        }
        if let Some(((), actions)) = self.apply(node, conn, |d| d.handle_timeout(now)) {
            self.perform(node, conn, actions);
        }
    }

    pub(super) fn on_write(&mut self, node: NodeIdx, conn: ConnId) {
        let window = self.config.window_bytes;
        let Some(s) = self.session_mut(node, conn) else {
            return;
        };
        s.write_scheduled = false;
        let side = s.side;
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
            let Some(next) = s.driver.poll_transmit() else {
                return;
            };
            let bytes = match next {
                Transmit::Frame(bytes) => bytes,
                Transmit::Read(read) => {
                    let batch = self.with_store(node, |store| {
                        store.read(|c| {
                            engine::read_range_batch(
                                c,
                                read.group,
                                read.author,
                                read.after_seq,
                                read.up_to_seq,
                                read.max_frame,
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
                    let Some((sent, actions)) =
                        self.apply(node, conn, |d| d.on_range_batch(read, batch))
                    else {
                        return;
                    };
                    if !self.perform(node, conn, actions) {
                        return;
                    }
                    match sent.frame {
                        Some(bytes) => bytes,
                        None => continue,
                    }
                }
                Transmit::Finish => {
                    self.teardown(node, conn, End::Fin);
                    return;
                }
                Transmit::Abort(why) => {
                    self.error(format!("node {node}: {why}"));
                    self.teardown(node, conn, End::Close);
                    return;
                }
            };
            self.send(conn, side, Item::Frame(bytes));
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
            let (step, handled_bytes) = match s.step.clone() {
                ReadStep::Stop => return,
                ReadStep::Next => {
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
                    (
                        self.apply(node, conn, |d| d.on_frame(now, parsed, bytes.len())),
                        None,
                    )
                }
                ReadStep::WaitUntil(at) if at > now => {
                    s.read_scheduled = true;
                    self.schedule(at, Ev::Read { node, conn });
                    return;
                }
                ReadStep::WaitUntil(_) => (self.apply(node, conn, |d| d.poll_read(now)), None),
                ReadStep::Load(needed) => {
                    let bytes = s.driver.held_bytes().unwrap_or(0);
                    let joined = self.joined(node);
                    let load = needed.groups(&joined);
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
                    let handled = self.apply(node, conn, |d| d.on_view(now, &view));
                    (handled, Some(bytes))
                }
            };
            let Some((step, actions)) = step else {
                return;
            };
            if !self.perform(node, conn, actions) {
                return;
            }
            let Some(s) = self.session_mut(node, conn) else {
                return;
            };
            s.step = step;
            // A frame the machine handled costs a slow receiver its processing time.
            if let Some(bytes) = handled_bytes
                && self.slow_reader(node, conn, bytes)
            {
                return;
            }
        }
    }

    /// A slow receiver (`proc_bytes_per_ms`) spends time on each frame it handles: true when
    /// it is busy past now (the next read is scheduled for when it is free).
    fn slow_reader(&mut self, node: NodeIdx, conn: ConnId, bytes: usize) -> bool {
        let now = self.now;
        let Some(rate) = self.nodes[node].proc_bytes_per_ms else {
            return false;
        };
        let Some(live) = self.nodes[node].live.as_mut() else {
            return false;
        };
        let cost = (bytes as u64).div_ceil(rate.max(1));
        live.busy_until = live.busy_until.max(now) + cost;
        let at = live.busy_until;
        if at <= now {
            return false;
        }
        if let Some(s) = self.session_mut(node, conn) {
            s.read_scheduled = true;
        }
        self.schedule(at, Ev::Read { node, conn });
        true
    }

    /// Carries out the driver's actions; false when the session is ending (it is then
    /// closing, with the driver's linger before the writer's grace).
    pub(super) fn perform(&mut self, node: NodeIdx, conn: ConnId, actions: Vec<Action>) -> bool {
        let mut queue: VecDeque<Action> = actions.into();
        let mut close = None;
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Ingest { group, entries } => {
                    queue.extend(self.ingest(node, conn, group, entries));
                }
                Action::RecordReceipts { group, heads } => {
                    let Some(peer) = self.session_mut(node, conn).map(|s| s.peer) else {
                        continue;
                    };
                    let peer_id = self.nodes[peer].id;
                    let saved = self.with_store(node, |store| {
                        store.write(|tx| store::record_peer_heads(tx, &group, &peer_id, &heads))
                    });
                    // Receipts are advisory: losing one never loses data.
                    if saved.is_err() {
                        self.warn(node, WarnKind::ReceiptNotRecorded.as_str());
                    }
                }
                Action::FanOut { group, heads } => {
                    for s in self.registered(node) {
                        for head in &heads {
                            self.fan_out(node, s, group, *head);
                        }
                    }
                }
                Action::StateChanged { .. } => self.nodes[node].counters.state_changes += 1,
                Action::Warn { kind, .. } => self.warn(node, kind.as_str()),
                Action::Count { counter, by } => self.nodes[node].counters.sync.add(counter, by),
                Action::Close { linger_ms } => {
                    close.get_or_insert(linger_ms);
                }
            }
        }
        match close {
            Some(linger_ms) => {
                self.begin_close(node, conn, linger_ms);
                false
            }
            None => true,
        }
    }

    /// Verifies and stores a batch from the peer on `conn`, then tells the driver. Returns
    /// the driver's further actions.
    pub(super) fn ingest(
        &mut self,
        node: NodeIdx,
        conn: ConnId,
        group: Id32,
        entries: Vec<Vec<u8>>,
    ) -> Vec<Action> {
        let now = self.now;
        let max_ciphertext = self.config.max_payload_bytes + TAG_LEN;
        // A managed group's batch is admitted by membership, as a node admits it.
        let prepared = match self.groups.get(&group) {
            Some(keys) => {
                let rules = Rules::of(keys, max_ciphertext);
                match self.managed_prepare(node, group, &rules, entries) {
                    Ok(Ok(prepared)) => Ok(prepared),
                    Ok(Err(entries)) => Ok(verify::prepare(
                        &rules,
                        self.nodes[node].groups.get(&group).map(|k| &k.content_key),
                        entries,
                    )),
                    Err(e) => Err(e),
                }
            }
            None => Err(CoveyError::not_found("entries for a group this node left")),
        };
        let n = &mut self.nodes[node];
        let result = match (prepared, n.groups.get(&group), n.live.as_mut()) {
            (Ok(prepared), Some(keys), Some(live)) => {
                let rules = Rules::of(keys, max_ciphertext);
                let Live {
                    store, sessions, ..
                } = live;
                match sessions.get_mut(&conn) {
                    Some(session) => store.write(|tx| {
                        engine::ingest_prepared(tx, &rules, prepared, &mut session.unverified)
                    }),
                    None => Err(CoveyError::not_found("entries for a session that ended")),
                }
            }
            (Err(e), _, _) => Err(e),
            _ => Err(CoveyError::not_found("entries for a group this node left")),
        };
        let done = match result {
            Ok(d) => d,
            Err(e) => {
                self.error(format!("node {node}: storing entries: {e}"));
                let failed = self.apply(node, conn, |d| d.on_ingest_failed(&e.to_string()));
                return failed.map(|(_, a)| a).unwrap_or_default();
            }
        };
        if let Some(live) = self.nodes[node].live.as_mut() {
            let lamport = live.max_lamport.entry(group).or_insert(0);
            *lamport = (*lamport).max(done.max_lamport);
            *live.held.entry(group).or_insert(0) += done.outcome.stored.len() as u64;
        }
        let control = done
            .outcome
            .stored
            .iter()
            .any(|(_, e)| e.header().kind == covey_core::wire::entry::EntryKind::Control);
        let actions = self
            .apply(node, conn, |d| d.on_ingested(now, group, &done))
            .map(|(_, a)| a)
            .unwrap_or_default();
        if control && let Err(e) = self.after_control(node, group) {
            self.error(format!("node {node}: applying control entries: {e}"));
        }
        actions
    }

    pub(super) fn fan_out(&mut self, node: NodeIdx, conn: ConnId, group: Id32, head: Head) {
        let Some(((), rest)) = self.apply(node, conn, |d| {
            d.on_local_entry(group, head.author, head.seq)
        }) else {
            return;
        };
        if !rest.is_empty() {
            self.error(format!(
                "node {node}: on_local_entry asked for more than sends: {rest:?}"
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
