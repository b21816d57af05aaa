//! Scripted (adversarial) nodes: frames sent as given, everything received logged.

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------------
    // Scripted (adversarial) nodes
    // -----------------------------------------------------------------------------------------

    pub(super) fn scripted_read(
        &mut self,
        node: NodeIdx,
        conn: ConnId,
        parsed: std::result::Result<Message, WireError>,
    ) {
        let Ok(message) = parsed else {
            return;
        };
        let Some(s) = self.session_mut(node, conn) else {
            return;
        };
        if let Message::Ping { nonce } = message
            && let Ok(pong) = frame::encode(&Message::Pong { nonce })
        {
            s.raw_out.push_back(pong);
        }
        self.nodes[node]
            .script_log
            .entry(conn)
            .or_default()
            .push(message);
        self.wake_writer(node, conn);
    }

    /// A scripted node opens a connection to `victim` (no dial loop, no backoff). `None` when
    /// the victim is unreachable.
    pub fn script_connect(&mut self, adversary: NodeIdx, victim: NodeIdx) -> Option<ConnId> {
        if !self.nodes[adversary].scripted {
            return None;
        }
        self.attempt(adversary, victim, false)
    }

    /// The 32 bytes both ends of `conn` would export from its TLS session: what a scripted
    /// peer binds its membership proofs to (`group::PairKeys::proof`).
    pub fn script_binding(&self, conn: ConnId) -> Option<[u8; 32]> {
        self.conns.get(&conn).map(|c| c.binding)
    }

    /// A scripted node sends `message` on `conn` exactly as given (no renaming of groups).
    pub fn script_send(
        &mut self,
        adversary: NodeIdx,
        conn: ConnId,
        message: &Message,
    ) -> Result<()> {
        let bytes = frame::encode(message)
            .map_err(|e| CoveyError::invalid(format!("cannot encode: {e}")))?;
        self.script_send_raw(adversary, conn, bytes);
        Ok(())
    }

    /// A scripted node sends raw bytes as one frame on `conn`.
    pub fn script_send_raw(&mut self, adversary: NodeIdx, conn: ConnId, bytes: Vec<u8>) {
        if let Some(s) = self.session_mut(adversary, conn) {
            s.raw_out.push_back(bytes);
            self.wake_writer(adversary, conn);
        } else if let Some(c) = self.conns.get_mut(&conn)
            && c.ends[0] == adversary
        {
            c.pre_send[0].push_back(bytes);
        }
    }

    /// What a scripted node received on `conn` so far (also after the connection ended).
    pub fn script_received(&self, adversary: NodeIdx, conn: ConnId) -> Vec<Message> {
        self.nodes[adversary]
            .script_log
            .get(&conn)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the scripted node's side of `conn` is still open.
    pub fn script_open(&self, adversary: NodeIdx, conn: ConnId) -> bool {
        self.nodes[adversary]
            .live
            .as_ref()
            .is_some_and(|l| l.sessions.contains_key(&conn))
    }

    /// Makes a scripted node stop (or resume) reading and answering on `conn`: it returns no
    /// flow-control credit and no pongs while silent.
    pub fn script_set_silent(&mut self, adversary: NodeIdx, conn: ConnId, silent: bool) {
        if let Some(s) = self.session_mut(adversary, conn) {
            s.silent = silent;
            if !silent {
                self.wake_reader(adversary, conn);
            }
        }
    }
}
