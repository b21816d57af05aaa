//! Turning node records into lines of text or JSON, and writing them to stdout without ever
//! panicking (a closed pipe is an error, not a crash).

use std::fmt;
use std::io::Write;

use covey_core::{
    CoveyError, Entry, EntryMeta, ErrorKind, GroupId, GroupInfo, Member, NodeStatus, Result,
};
use serde_json::{Value, json};

/// Writes one line to stdout and flushes it, so a reader piped to `covey run` sees each event
/// as it happens.
pub fn write_line(args: fmt::Arguments<'_>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| CoveyError::new(ErrorKind::Internal, format!("cannot write to stdout: {e}")))
}

/// `println!` that returns an error instead of panicking when stdout is gone.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::render::write_line(format_args!($($arg)*))
    };
}

/// The first 12 hex characters of a group id: enough to tell groups apart on screen.
pub fn short_group(id: &GroupId) -> String {
    let full = id.to_string();
    full.get(..12).unwrap_or(&full).to_owned()
}

/// Whether `c` must not reach a terminal raw: control characters (escape sequences could
/// rewrite the screen) and bidi overrides (they can make text read differently than it is).
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text from a peer made safe for one terminal line: lossy UTF-8 with control characters and
/// bidi overrides escaped (`\n`, `\u{1b}`), everything else as is.
pub fn terminal_safe(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// One entry as a line of text: cursor, short author, seq, lamport, payload.
pub fn entry_text(entry: &Entry) -> String {
    let m = &entry.meta;
    format!(
        "{:>6}  {}  seq {:<5} lamport {:<6} {}",
        m.cursor,
        m.author.fmt_short(),
        m.seq,
        m.lamport,
        terminal_safe(&entry.payload)
    )
}

/// One entry as a JSON object; the payload is `payload_utf8` when it is valid UTF-8 and
/// `payload_hex` otherwise, so no byte is ever lost.
pub fn entry_json(entry: &Entry) -> Value {
    let mut v = meta_json(&entry.meta);
    if let Value::Object(map) = &mut v {
        match std::str::from_utf8(&entry.payload) {
            Ok(text) => map.insert("payload_utf8".into(), Value::from(text)),
            Err(_) => map.insert(
                "payload_hex".into(),
                Value::from(hex::encode(&entry.payload)),
            ),
        };
    }
    v
}

/// An entry's metadata as a JSON object.
pub fn meta_json(m: &EntryMeta) -> Value {
    json!({
        "cursor": m.cursor,
        "entry_id": m.entry_id.to_string(),
        "group_id": m.group_id.to_string(),
        "author": m.author.to_string(),
        "seq": m.seq,
        "lamport": m.lamport,
        "timestamp_ms": m.timestamp_ms,
    })
}

/// A group as a JSON object (`covey group list --json` and friends).
pub fn group_json(g: &GroupInfo) -> Value {
    json!({
        "group_id": g.group_id.to_string(),
        "name": g.name,
        "epoch": g.epoch,
        "kind": format!("{:?}", g.kind).to_lowercase(),
        "member_count": g.member_count,
    })
}

/// A group member as a JSON object; `role` is null in a passphrase group.
pub fn member_json(m: &Member) -> Value {
    json!({
        "node_id": m.node_id.to_string(),
        "role": m.role.map(|r| r.as_str()),
        "is_self": m.is_self,
        "last_seq": m.last_seq,
    })
}

/// A group member as a line of text: node id, role (in a managed group), last seq.
pub fn member_text(m: &Member) -> String {
    let role = m
        .role
        .map(|r| format!("{:<6}  ", r.as_str()))
        .unwrap_or_default();
    let me = if m.is_self { "  (this node)" } else { "" };
    format!("{}  {role}last seq {}{me}", m.node_id, m.last_seq)
}

/// The node status as JSON.
pub fn status_json(s: &NodeStatus) -> Value {
    let c = &s.counters;
    let d = &s.dht;
    json!({
        "node_id": s.node_id.to_string(),
        "connected_peers": s.connected_peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "known_peers": s.known_peers,
        "groups": s.groups,
        "entries": s.entries,
        "paused": s.paused,
        "counters": {
            "published": c.published,
            "received": c.received,
            "duplicates": c.duplicates,
            "rejected_entries": c.rejected_entries,
            "rejected_frames": c.rejected_frames,
            "incompatible_peers": c.incompatible_peers,
            "replayed": c.replayed,
            "dropped_frames": c.dropped_frames,
            "rate_limited": c.rate_limited,
            "peer_timeouts": c.peer_timeouts,
        },
        "dht": {
            "contacts": d.contacts,
            "requests_in": d.counters.requests_in,
            "requests_out": d.counters.requests_out,
            "rate_limited": d.counters.rate_limited,
            "undecodable": d.counters.undecodable,
            "unexpected_responses": d.counters.unexpected_responses,
            "timeouts": d.counters.timeouts,
            "invalid_records": d.counters.invalid_records,
            "conflicts": d.counters.conflicts,
            "contacts_truncated": d.counters.contacts_truncated,
            "contacts_ignored": d.counters.contacts_ignored,
            "coalesced": d.counters.coalesced,
            "frames_dropped": d.frames_dropped,
            "dial_failures": d.dial_failures,
            "bootstrap_fallbacks": d.bootstrap_fallbacks,
            "rendezvous_found": d.rendezvous_found,
        },
    })
}

/// The node status as aligned lines of text.
pub fn status_text(s: &NodeStatus) -> Vec<String> {
    let c = &s.counters;
    let mut lines = vec![
        format!("node id     {}", s.node_id),
        format!("groups      {}", s.groups),
        format!("entries     {}", s.entries),
        format!(
            "peers       {} connected, {} known",
            s.connected_peers.len(),
            s.known_peers
        ),
    ];
    lines.extend(s.connected_peers.iter().map(|p| format!("  connected {p}")));
    lines.push(format!(
        "paused      {}",
        if s.paused { "yes" } else { "no" }
    ));
    lines.push(format!(
        "sync        published {}, received {}, duplicates {} (since this process opened the node)",
        c.published, c.received, c.duplicates
    ));
    lines.push(format!(
        "rejected    entries {}, frames {}, incompatible peers {}",
        c.rejected_entries, c.rejected_frames, c.incompatible_peers
    ));
    lines.push(format!(
        "protection  replayed {}, rate limited {}, dropped {}, peer timeouts {}",
        c.replayed, c.rate_limited, c.dropped_frames, c.peer_timeouts
    ));
    let d = &s.dht;
    lines.push(format!(
        "dht         {} contacts, requests {} in / {} out, timeouts {}, rendezvous found {}",
        d.contacts,
        d.counters.requests_in,
        d.counters.requests_out,
        d.counters.timeouts,
        d.rendezvous_found
    ));
    lines.push(format!(
        "dht refused rate limited {}, undecodable {}, invalid records {}, frames dropped {}",
        d.counters.rate_limited,
        d.counters.undecodable,
        d.counters.invalid_records,
        d.frames_dropped
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_safe_escapes_controls_and_bidi_but_keeps_text() {
        assert_eq!(terminal_safe(b"hello world"), "hello world");
        assert_eq!(terminal_safe("héllo ✓".as_bytes()), "héllo ✓");
        assert_eq!(terminal_safe(b"a\nb\x1b[2J"), "a\\nb\\u{1b}[2J");
        assert_eq!(terminal_safe("x\u{202e}y".as_bytes()), "x\\u{202e}y");
        assert_eq!(terminal_safe(&[0xff, b'a']), "\u{fffd}a");
    }
}
