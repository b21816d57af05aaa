//! Connections (dialing, accepting, one session per peer, teardown) and the wire (ordered
//! streams with latency, jitter, loss, bandwidth, flow-control credit and partitions).

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------------
    // Connections
    // -----------------------------------------------------------------------------------------

    pub(super) fn reachable(&self, a: NodeIdx, b: NodeIdx) -> bool {
        self.is_up(b) && !self.is_cut(a, b) && !self.is_cut(b, a)
    }

    pub(super) fn on_dial_step(
        &mut self,
        node: NodeIdx,
        life: u64,
        peer: NodeIdx,
        after_attempt: bool,
    ) {
        if self.nodes[node].life != life {
            return;
        }
        let Some(live) = self.nodes[node].live.as_ref() else {
            return;
        };
        if !live.dialers.contains_key(&peer) {
            return;
        }
        let connected = live.registered.contains_key(&peer);
        let step = |after_attempt| Ev::DialStep {
            node,
            life,
            peer,
            after_attempt,
        };
        if after_attempt {
            if connected {
                self.schedule(self.now, step(false));
                return;
            }
            let random = self.net_rng.next_u64();
            let delay = self.nodes[node]
                .live
                .as_mut()
                .and_then(|l| l.dialers.get_mut(&peer))
                .map(|b| b.next_delay(random).as_millis() as u64)
                .unwrap_or(DIAL_RECHECK_MS);
            self.schedule(self.now + delay, step(false));
            return;
        }
        if connected {
            self.schedule(self.now + DIAL_RECHECK_MS, step(false));
            return;
        }
        self.attempt(node, peer, true);
    }

    /// Opens a connection from `a` to `b` (the handshake takes a round trip); on failure the
    /// dial loop hears of it after the connect timeout.
    pub(super) fn attempt(&mut self, a: NodeIdx, b: NodeIdx, dialed: bool) -> Option<ConnId> {
        if !self.reachable(a, b) {
            if dialed {
                let life = self.nodes[a].life;
                self.schedule(
                    self.now + self.config.connect_timeout_ms,
                    Ev::DialStep {
                        node: a,
                        life,
                        peer: b,
                        after_attempt: true,
                    },
                );
            }
            return None;
        }
        let id = self.next_conn;
        self.next_conn += 1;
        self.stats.connections += 1;
        self.conns.insert(
            id,
            Conn {
                ends: [a, b],
                life: [self.nodes[a].life, 0],
                open: [true, true],
                accepted: false,
                dialed,
                started: self.now,
                streams: [Stream::default(), Stream::default()],
                early: [VecDeque::new(), VecDeque::new()],
                pre_send: [VecDeque::new(), VecDeque::new()],
                // Drawn from the seed and the connection's number, not from the shared
                // stream, so adding it moved no other random choice of a seeded run.
                binding: Rng::new(self.config.seed ^ id.rotate_left(32)).bytes32(),
            },
        );
        let there = self.link_config(a, b).latency_ms;
        let back = self.link_config(b, a).latency_ms;
        self.schedule(self.now + there, Ev::ConnAccept { conn: id });
        self.schedule(self.now + there + back, Ev::ConnUp { conn: id });
        Some(id)
    }

    pub(super) fn on_accept(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (a, b) = (c.ends[0], c.ends[1]);
        if !self.is_up(b) || self.is_cut(a, b) {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.open[1] = false;
            }
            return;
        }
        let life = self.nodes[b].life;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.accepted = true;
            c.life[1] = life;
        }
        if !self.start_session(b, conn, Direction::Incoming) {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.open[1] = false;
            }
            self.notify_lost(conn, 0);
        }
    }

    pub(super) fn on_conn_up(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (a, b) = (c.ends[0], c.ends[1]);
        let dialed = c.dialed;
        let alive = self.nodes[a].live.is_some() && self.nodes[a].life == c.life[0];
        let reached = c.accepted && !self.is_cut(b, a);
        let refused = c.accepted && !c.open[1];
        let started = c.started;
        if !alive {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.open[0] = false;
            }
            self.reap(conn);
            return;
        }
        let life = self.nodes[a].life;
        let retry_at = |after: u64| Ev::DialStep {
            node: a,
            life,
            peer: b,
            after_attempt: after > 0,
        };
        if !reached {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.open[0] = false;
            }
            self.reap(conn);
            if dialed {
                self.schedule(started + self.config.connect_timeout_ms, retry_at(1));
            }
            return;
        }
        // The handshake completed: the dial loop starts over from the floor.
        if dialed
            && let Some(b_off) = self.nodes[a]
                .live
                .as_mut()
                .and_then(|l| l.dialers.get_mut(&b))
        {
            b_off.reset();
        }
        if refused || !self.start_session(a, conn, Direction::Outgoing) {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.open[0] = false;
            }
            if !refused {
                self.notify_lost(conn, 1);
            }
            self.reap(conn);
            if dialed {
                self.schedule(self.now + AFTER_RUN_PAUSE_MS, retry_at(1));
            }
        }
    }

    /// Registers and starts a session on `node` for `conn`. Honest nodes keep one session per
    /// peer: when both sides dial at once, both keep the connection dialed by the smaller
    /// node id (the real driver's rule). Returns false when refused.
    pub(super) fn start_session(
        &mut self,
        node: NodeIdx,
        conn: ConnId,
        direction: Direction,
    ) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        let side = usize::from(c.ends[1] == node);
        let peer = c.ends[1 - side];
        let dialed = c.dialed && side == 0;
        let scripted = self.nodes[node].scripted;
        let (me, them) = (self.nodes[node].id, self.nodes[peer].id);
        let mut replace = None;
        {
            let Some(live) = self.nodes[node].live.as_ref() else {
                return false;
            };
            if !scripted && let Some(existing) = live.registered.get(&peer) {
                let existing_dir = live.sessions.get(existing).map(|s| s.direction);
                if !keeps_new_session(&me, &them, direction, existing_dir) {
                    self.nodes[node].counters.sessions_refused += 1;
                    return false;
                }
                replace = Some(*existing);
            }
        }
        if let Some(old) = replace {
            self.teardown(node, old, End::Close);
        }
        let config = DriverConfig {
            max_frame_bytes: self.config.max_frame_bytes,
            rate_limits: self.nodes[node].rate_limits,
            timers: self.config.timers,
        };
        let tags = if scripted {
            Vec::new()
        } else {
            self.nodes[node]
                .groups
                .iter()
                // A managed group is synced only with its members now (the sync gate).
                .filter(|(id, _)| self.admits(node, id, &them))
                .map(|(id, keys)| (*id, keys.pair(&me, &them)))
                .collect()
        };
        let binding = match self.conns.get(&conn) {
            Some(c) => c.binding,
            None => return false,
        };
        let driver = SessionDriver::new(
            &config,
            tags,
            SessionBinding {
                direction,
                binding,
                // Per side and connection, from the seed: padding is random-looking to the
                // peer, and a run stays a function of its seed.
                padding_key: Rng::new(self.config.seed ^ conn.rotate_left(16) ^ side as u64)
                    .bytes32(),
            },
            format!("{peer}"),
            self.now,
        );
        let (early, pre_send) = match self.conns.get_mut(&conn) {
            Some(c) => (
                std::mem::take(&mut c.early[side]),
                std::mem::take(&mut c.pre_send[side]),
            ),
            None => (VecDeque::new(), VecDeque::new()),
        };
        let inbox_bytes = early.iter().map(Vec::len).sum();
        let session = Session {
            peer,
            side,
            direction,
            dialed,
            driver,
            inbox: early,
            inbox_bytes,
            step: ReadStep::Next,
            timer_at: None,
            read_scheduled: false,
            write_scheduled: false,
            closing: false,
            raw_out: pre_send,
            silent: false,
            fin: false,
            unverified: Unverified::default(),
        };
        let n = &mut self.nodes[node];
        let Some(live) = n.live.as_mut() else {
            return false;
        };
        live.sessions.insert(conn, session);
        if !scripted {
            live.registered.insert(peer, conn);
        }
        n.counters.sessions_opened += 1;
        let per_peer = live.sessions.values().filter(|s| s.peer == peer).count();
        n.peaks.max_sessions = n.peaks.max_sessions.max(live.sessions.len());
        n.peaks.max_sessions_per_peer = n.peaks.max_sessions_per_peer.max(per_peer);
        if scripted {
            self.wake_writer(node, conn);
        } else {
            self.apply(node, conn, |d| d.start());
        }
        if inbox_bytes > 0 {
            self.wake_reader(node, conn);
        }
        true
    }

    /// Tells the other end of `conn` (side `to`) that the connection closed, one trip later,
    /// if the link carries it.
    pub(super) fn notify_lost(&mut self, conn: ConnId, to: usize) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (from, dest) = (c.ends[1 - to], c.ends[to]);
        let lat = self.link_config(from, dest).latency_ms;
        self.schedule(self.now + lat, Ev::ConnLost { conn, to });
    }

    pub(super) fn on_conn_lost(&mut self, conn: ConnId, to: usize) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (from, node) = (c.ends[1 - to], c.ends[to]);
        if !c.open[to] || self.is_cut(from, node) {
            return;
        }
        if self.session_mut(node, conn).is_some() {
            self.teardown(node, conn, End::Quiet);
        } else if let Some(c) = self.conns.get_mut(&conn) {
            c.open[to] = false;
        }
        self.reap(conn);
    }

    /// Forgets a connection both of whose ends are closed.
    pub(super) fn reap(&mut self, conn: ConnId) {
        if self
            .conns
            .get(&conn)
            .is_some_and(|c| !c.open[0] && !c.open[1])
        {
            self.conns.remove(&conn);
        }
    }

    /// Ends `node`'s session on `conn`: unregisters it, frees its state, closes its side of
    /// the connection, and lets its dial loop go on.
    pub(super) fn teardown(&mut self, node: NodeIdx, conn: ConnId, end: End) {
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        let Some(mut session) = live.sessions.remove(&conn) else {
            return;
        };
        // What the session held back for a later signature is dropped with it, counted.
        session
            .driver
            .on_unverified_dropped(session.unverified.len());
        // Only counts and a warning: nothing that needs the session just removed.
        let actions = session.driver.take_actions();
        self.perform(node, conn, actions);
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        if live.registered.get(&session.peer) == Some(&conn) {
            live.registered.remove(&session.peer);
        }
        let dial_on = session.dialed && live.dialers.contains_key(&session.peer);
        self.nodes[node].counters.sync.dropped_frames += session.driver.dropped_sends();
        let side = session.side;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.open[side] = false;
        }
        match end {
            End::Fin => {
                self.send(conn, side, Item::Fin);
                // The writer waits up to a second for the FIN to be acknowledged, then closes
                // the connection.
                let other = 1 - side;
                if let Some(c) = self.conns.get(&conn) {
                    let lat = self.link_config(c.ends[side], c.ends[other]).latency_ms;
                    self.schedule(self.now + 1_000 + lat, Ev::ConnLost { conn, to: other });
                }
            }
            End::Close => self.notify_lost(conn, 1 - side),
            End::Quiet => {}
        }
        self.reap(conn);
        if dial_on {
            let life = self.nodes[node].life;
            self.schedule(
                self.now + AFTER_RUN_PAUSE_MS,
                Ev::DialStep {
                    node,
                    life,
                    peer: session.peer,
                    after_attempt: true,
                },
            );
        }
    }

    /// Marks a session as ending (its reader and timer stop) and gives its writer the real
    /// driver's grace period to flush a final refusal before the connection is closed.
    pub(super) fn begin_close(&mut self, node: NodeIdx, conn: ConnId, pause_ms: u64) {
        let Some(s) = self.session_mut(node, conn) else {
            return;
        };
        if s.closing {
            return;
        }
        s.closing = true;
        // What the driver asks on closing was carried out already, or is moot now.
        s.driver.close("session over");
        s.driver.take_actions();
        self.wake_writer(node, conn);
        self.schedule(
            self.now + pause_ms + WRITER_GRACE_MS,
            Ev::Teardown { node, conn },
        );
    }

    // -----------------------------------------------------------------------------------------
    // The wire
    // -----------------------------------------------------------------------------------------

    /// Puts an item on `conn`'s stream from side `side`: serialised at the link's bandwidth,
    /// delayed by propagation, jitter and loss, never before the previous item of the stream.
    pub(super) fn send(&mut self, conn: ConnId, side: usize, item: Item) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let (from, to) = (c.ends[side], c.ends[1 - side]);
        let size = item.len();
        let config = self.config.link;
        let link = self.links.entry((from, to)).or_insert(Link {
            config,
            cut: false,
            tx_free_at: 0,
        });
        let start = link.tx_free_at.max(self.now);
        let done = start + link.config.serialise_ms(size);
        link.tx_free_at = done;
        let delay = link.config.propagation_ms(&mut self.net_rng)
            + link.config.loss_delay_ms(&mut self.net_rng, size);
        let stream = &mut c.streams[side];
        let arrival = (done + delay).max(stream.last_arrival);
        stream.last_arrival = arrival;
        stream.in_flight += size;
        let in_flight = stream.in_flight;
        stream.queue.push_back((arrival, item));
        let schedule = !stream.scheduled;
        stream.scheduled = true;
        let peaks = &mut self.nodes[from].peaks;
        peaks.max_in_flight_bytes = peaks.max_in_flight_bytes.max(in_flight);
        if schedule {
            self.schedule(arrival, Ev::Deliver { conn, dir: side });
        }
    }

    pub(super) fn on_deliver(&mut self, conn: ConnId, dir: usize) {
        let now = self.now;
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (to, side) = (c.ends[1 - dir], 1 - dir);
        let cut = self.is_cut(c.ends[dir], to);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let stream = &mut c.streams[dir];
        stream.scheduled = false;
        let Some(&(arrival, _)) = stream.queue.front() else {
            return;
        };
        let retry = if arrival > now {
            Some(arrival)
        } else if cut {
            Some(now + CUT_RETRY_MS)
        } else {
            None
        };
        if let Some(at) = retry {
            stream.scheduled = true;
            self.schedule(at, Ev::Deliver { conn, dir });
            return;
        }
        let Some((_, item)) = stream.queue.pop_front() else {
            return;
        };
        let next = stream.queue.front().map(|(t, _)| (*t).max(now));
        stream.scheduled = next.is_some();
        let (open, life) = (c.open[side], c.life[side]);
        if let Some(at) = next {
            self.schedule(at, Ev::Deliver { conn, dir });
        }
        let receiver_alive = open && self.is_up(to) && self.nodes[to].life == life;
        if !receiver_alive {
            return;
        }
        match item {
            Item::Fin => {
                // The stream ended: what arrived before the FIN is still read first, unless
                // the session is already ending and reads no more.
                let Some(s) = self.session_mut(to, conn) else {
                    return;
                };
                if s.closing {
                    self.teardown(to, conn, End::Quiet);
                } else {
                    s.fin = true;
                    self.wake_reader(to, conn);
                }
            }
            Item::Frame(bytes) => {
                self.stats.frames += 1;
                self.stats.bytes += bytes.len() as u64;
                self.trace.update(&now.to_be_bytes());
                self.trace.update(&conn.to_be_bytes());
                self.trace.update(&[dir as u8]);
                self.trace.update(&(bytes.len() as u64).to_be_bytes());
                self.trace.update(&bytes);
                let len = bytes.len();
                match self.session_mut(to, conn) {
                    Some(s) => {
                        s.inbox.push_back(bytes);
                        s.inbox_bytes += len;
                        let held = s.inbox_bytes;
                        let peaks = &mut self.nodes[to].peaks;
                        peaks.max_inbox_bytes = peaks.max_inbox_bytes.max(held);
                        self.wake_reader(to, conn);
                    }
                    None => {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.early[side].push_back(bytes);
                        }
                    }
                }
            }
        }
    }

    /// The receiver read `bytes` from stream `dir`: the window opens again for the sender one
    /// trip later.
    pub(super) fn credit(&mut self, conn: ConnId, dir: usize, bytes: usize) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (sender, receiver) = (c.ends[dir], c.ends[1 - dir]);
        let config = self.link_config(receiver, sender);
        let delay =
            config.propagation_ms(&mut self.net_rng) + config.loss_delay_ms(&mut self.net_rng, 64);
        self.schedule(self.now + delay, Ev::Credit { conn, dir, bytes });
    }

    pub(super) fn on_credit(&mut self, conn: ConnId, dir: usize, bytes: usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let (sender, receiver) = (c.ends[dir], c.ends[1 - dir]);
        if self.links.get(&(receiver, sender)).is_some_and(|l| l.cut) {
            self.schedule(self.now + CUT_RETRY_MS, Ev::Credit { conn, dir, bytes });
            return;
        }
        let stream = &mut c.streams[dir];
        stream.in_flight = stream.in_flight.saturating_sub(bytes);
        self.wake_writer(sender, conn);
    }

    pub(super) fn session_mut(&mut self, node: NodeIdx, conn: ConnId) -> Option<&mut Session> {
        self.nodes
            .get_mut(node)?
            .live
            .as_mut()?
            .sessions
            .get_mut(&conn)
    }

    pub(super) fn wake_writer(&mut self, node: NodeIdx, conn: ConnId) {
        if let Some(s) = self.session_mut(node, conn)
            && !s.write_scheduled
        {
            s.write_scheduled = true;
            self.schedule(self.now, Ev::Write { node, conn });
        }
    }

    pub(super) fn wake_reader(&mut self, node: NodeIdx, conn: ConnId) {
        if let Some(s) = self.session_mut(node, conn)
            && !s.read_scheduled
        {
            s.read_scheduled = true;
            self.schedule(self.now, Ev::Read { node, conn });
        }
    }
}
