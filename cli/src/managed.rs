//! Managed groups from the command line: creating one, its members and their roles, removing
//! a member, leaving, and invites (creating one and serving it until someone joins; accepting
//! one by link or by short code).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use covey_core::{
    CoveyError, EndpointId, ErrorKind, Event, GroupId, GroupInfo, Node, Result, SyncState,
};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{StopSignals, input, outln, render, resolve_group};

/// Longest a short code is answered (the core's limit), so the longest `invite create` waits.
const CODE_LIFETIME: Duration = Duration::from_millis(covey_core::MAX_CODE_TTL_MS);
/// How often `invite create` looks for a new member.
const MEMBER_POLL: Duration = Duration::from_millis(100);
/// After someone joins, how long `invite create` keeps serving at most, so the new member can
/// sync with it; it stops earlier once every new member's sync session has ended for
/// [`GONE_GRACE`].
const AFTER_JOIN: Duration = Duration::from_secs(10);
/// How long a new member's sync session must stay ended before `invite create` takes it as
/// gone (a session can end and come straight back, e.g. after a duplicate-connection
/// tie-break or when the joiner restarts its sessions).
const GONE_GRACE: Duration = Duration::from_secs(2);
/// How long `invite accept` keeps looking for a short code's inviter through the DHT (it is
/// joined in the background when the node opens, so the first search can find nothing).
const CODE_SEARCH: Duration = Duration::from_secs(20);
/// Pause between two searches for a short code's inviter.
const SEARCH_PAUSE: Duration = Duration::from_millis(500);
/// Longest `--sync-secs`.
const MAX_SYNC_SECS: u64 = 3600;
/// Longest invite link or code read from stdin.
const MAX_INVITE_BYTES: usize = 4096;

/// `covey invite ...`
#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Create an invite to a managed group (admins only) and serve it until someone joins.
    ///
    /// Prints the link, the short code and this node's ticket, then stays online answering
    /// the invite and syncing until someone joins through it (then up to 10 s more, until the
    /// new member's sync session ends), until the short code dies (at most 10 minutes), or
    /// until Ctrl-C / SIGTERM; then exits 0 saying who joined. An invite is answered only while
    /// a process on this data dir runs: every process binds a fresh port unless --bind gives a
    /// fixed one, so the link stays usable later only with a fixed --bind and `covey run` on
    /// it, and the short code, kept in memory, dies with this process.
    Create(CreateArgs),
    /// Join a managed group by an invite link or a short code, then sync briefly.
    ///
    /// A link names its inviter's address. A short code is found through the DHT, so this
    /// node needs the inviter (or a node that knows it) as a peer: pass `--bootstrap <ticket>`
    /// with the ticket `invite create` printed. Prints the group id.
    Accept(AcceptArgs),
}

/// Options of `covey invite create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The group: its 64-hex id, or the name of a joined group.
    #[arg(long, short)]
    group: String,
    /// How long the invite is answered, in seconds (1 s to 30 days); the short code lives at
    /// most 10 minutes of it.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    ttl: u64,
    /// Admit one joiner only.
    #[arg(long)]
    single_use: bool,
    /// Also show the link as a QR code (on stderr with --json).
    #[arg(long)]
    qr: bool,
    /// Print the invite and exit instead of serving it. No short code is printed (it would
    /// die with this process); the link is answered later only while a process on this data
    /// dir runs with the same fixed --bind address (e.g. `covey --bind ADDR run`).
    #[arg(long)]
    no_wait: bool,
    /// One JSON object per line: the invite, each member who joins, and how the wait ended.
    #[arg(long)]
    json: bool,
}

/// Options of `covey invite accept`.
#[derive(Debug, Args)]
pub struct AcceptArgs {
    /// The invite link (covey:invite/...) or short code (xxxx-xxxx); `-` reads it from the
    /// first line of stdin, which keeps it out of `ps` and shell history.
    #[arg(value_name = "LINK_OR_CODE")]
    invite: String,
    /// After joining, stay online up to this many seconds syncing, stopping as soon as this
    /// node is up to date with a member (0: exit at once; `covey run` syncs later).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    sync_secs: u64,
    /// Print one JSON object: the group, whether it got up to date, and the entries held.
    #[arg(long)]
    json: bool,
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One line on stderr (progress and hints, never data); a closed stderr is ignored.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "covey: {text}");
}

/// Whether `invite` is a link rather than a short code (the core's rule).
pub fn is_link(invite: &str) -> bool {
    covey_core::is_invite_link(invite)
}

/// The joined group `gid` as `groups()` reports it.
pub async fn group_info(node: &Node, gid: &GroupId) -> Result<GroupInfo> {
    node.groups()
        .await?
        .into_iter()
        .find(|g| &g.group_id == gid)
        .ok_or_else(|| CoveyError::not_found(format!("group {gid} is not joined here")))
}

/// The members of `gid` other than this node.
async fn others(node: &Node, gid: &GroupId) -> Result<BTreeSet<EndpointId>> {
    Ok(node
        .members(gid)
        .await?
        .into_iter()
        .filter(|m| !m.is_self)
        .map(|m| m.node_id)
        .collect())
}

/// How many entries of `gid` this node holds.
pub async fn entry_count(node: &Node, gid: &GroupId) -> Result<u64> {
    let mut count = 0u64;
    let mut cursor = 0;
    loop {
        let page = node.entries(gid, cursor, 1000).await?;
        let Some(last) = page.last() else {
            return Ok(count);
        };
        cursor = last.meta.cursor;
        count += page.len() as u64;
    }
}

/// `text` as a QR code drawn with unicode half blocks, two modules per character cell, with
/// its quiet zone. Drawn inverted (dark modules blank, light ones as blocks), the way the
/// qrcode crate's unicode renderer is meant for terminals: light text on a dark background
/// shows a dark-on-light code.
pub fn qr_text(text: &str) -> Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| CoveyError::invalid(format!("cannot draw the link as a QR code: {e}")))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// `covey group create`.
pub async fn group_create(node: &Node, name: &str, json: bool) -> Result<()> {
    let info = node.create_group(name).await?;
    if json {
        outln!("{}", render::group_json(&info))
    } else {
        outln!("{}", info.group_id)
    }
}

/// `covey group members`.
pub async fn members(node: &Node, group: &str, json: bool) -> Result<()> {
    let gid = resolve_group(node, group).await?;
    for m in node.members(&gid).await? {
        if json {
            outln!("{}", render::member_json(&m))?;
        } else {
            outln!("{}", render::member_text(&m))?;
        }
    }
    Ok(())
}

/// Reads a node id given on the command line.
fn parse_node_id(text: &str) -> Result<EndpointId> {
    text.trim()
        .parse::<EndpointId>()
        .map_err(|e| CoveyError::invalid(format!("{text:?} is not a node id: {e}")))
}

/// `covey group remove`.
pub async fn remove(node: &Node, group: &str, member: &str) -> Result<()> {
    let member = parse_node_id(member)?;
    let gid = resolve_group(node, group).await?;
    node.remove_member(&gid, &member).await?;
    let info = group_info(node, &gid).await?;
    outln!(
        "removed {member} from group {gid}: epoch {}, {} members",
        info.epoch,
        info.member_count
    )?;
    note(
        "the other members learn of it when they next sync with this node (`covey run`) or \
         with one that holds it",
    );
    Ok(())
}

/// `covey group leave`.
pub async fn leave(node: &Node, group: &str) -> Result<()> {
    let gid = resolve_group(node, group).await?;
    node.leave_group(&gid).await?;
    outln!("left group {gid}; its entries and secrets are deleted here")
}

/// `covey invite ...`.
pub async fn invite(node: &Node, cmd: InviteCommand, fixed_port: bool) -> Result<()> {
    match cmd {
        InviteCommand::Create(args) => invite_create(node, args, fixed_port).await,
        InviteCommand::Accept(args) => invite_accept(node, args).await,
    }
}

/// How serving an invite ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Someone joined and had time to sync.
    Joined,
    /// The short code died with nobody joining.
    Expired,
    /// A stop signal (its name).
    Stopped(&'static str),
    /// The node closed.
    Closed,
}

impl Ended {
    /// The reason as JSON shows it.
    fn as_str(self) -> &'static str {
        match self {
            Ended::Joined => "joined",
            Ended::Expired => "expired",
            Ended::Stopped(signal) => signal,
            Ended::Closed => "closed",
        }
    }
}

/// `covey invite create`: creates the invite, prints it, and (without --no-wait) serves it
/// until someone joins, the short code dies, or a stop signal.
async fn invite_create(node: &Node, args: CreateArgs, fixed_port: bool) -> Result<()> {
    let gid = resolve_group(node, &args.group).await?;
    // Installed before the invite exists, so no signal between printing and waiting is lost.
    let mut signals = if args.no_wait {
        None
    } else {
        Some(StopSignals::install()?)
    };
    let mut events = node.subscribe();
    let before = others(node, &gid).await?;
    let invite = node.create_invite(&gid, args.ttl, args.single_use).await?;
    let wait = Duration::from_secs(args.ttl).min(CODE_LIFETIME);
    let deadline = Instant::now() + wait;
    let code_expires_ms = invite
        .expires_at_ms
        .min(now_ms().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)));
    let info = group_info(node, &gid).await?;
    let ticket = node.addr().await?;
    let code = (!args.no_wait).then_some(invite.short_code.as_str());
    if args.json {
        outln!(
            "{}",
            json!({
                "event": "invite",
                "group_id": gid.to_string(),
                "name": info.name,
                "node_id": node.node_id().to_string(),
                "ticket": ticket,
                "link": invite.link,
                "short_code": code,
                "expires_at_ms": invite.expires_at_ms,
                "code_expires_at_ms": code.map(|_| code_expires_ms),
                "single_use": args.single_use,
            })
        )?;
    } else {
        outln!(
            "group {gid}  {}",
            render::terminal_safe(info.name.as_bytes())
        )?;
        outln!("link {}", invite.link)?;
        if let Some(code) = code {
            outln!("code {code}")?;
        }
        outln!("ticket {ticket}")?;
        let use_ = if args.single_use {
            "single use"
        } else {
            "reusable"
        };
        match code {
            Some(_) => outln!(
                "expires in {} s ({use_}); the short code in {} s",
                args.ttl,
                wait.as_secs()
            )?,
            None => outln!("expires in {} s ({use_})", args.ttl)?,
        }
    }
    if args.qr {
        let qr = qr_text(&invite.link)?;
        if args.json {
            let _ = writeln!(std::io::stderr(), "{qr}");
        } else {
            for line in qr.lines() {
                outln!("{line}")?;
            }
        }
    }
    let Some(signals) = signals.as_mut() else {
        note(&format!(
            "--no-wait: the short code dies with this process. The link is answered only \
             while a covey process on this data dir runs with the same --bind address{}",
            if fixed_port {
                " (e.g. `covey --bind ADDR run`)"
            } else {
                "; without a fixed --bind port it dies with this process too"
            }
        ));
        return Ok(());
    };
    note(&format!(
        "serving this invite until someone joins (at most {} s); Ctrl-C or SIGTERM stops. \
         The joiner runs `covey invite accept <link>`, or `covey --bootstrap <ticket> invite \
         accept <code>`.",
        wait.as_secs()
    ));
    let (joined, ended) = serve(
        node,
        &gid,
        &before,
        deadline,
        signals,
        &mut events,
        args.json,
    )
    .await?;
    if args.json {
        outln!(
            "{}",
            json!({
                "event": "done",
                "group_id": gid.to_string(),
                "reason": ended.as_str(),
                "joined": joined.iter().map(|j| j.to_string()).collect::<Vec<_>>(),
            })
        )?;
    } else if joined.is_empty() {
        match ended {
            Ended::Stopped(signal) => outln!("nobody joined: stopped by {signal}")?,
            Ended::Closed => outln!("nobody joined: the node closed")?,
            Ended::Joined | Ended::Expired => outln!("nobody joined: the short code expired")?,
        }
    } else {
        note(&format!(
            "{} joined; stopped serving the invite ({})",
            joined.len(),
            ended.as_str()
        ));
    }
    Ok(())
}

/// Serves the invite until someone joins (and their sync session has ended, or [`AFTER_JOIN`]
/// passes), `deadline`, a stop signal or the node closing. Prints each member who joins as it
/// is seen. Returns who joined and why it stopped.
async fn serve(
    node: &Node,
    gid: &GroupId,
    before: &BTreeSet<EndpointId>,
    deadline: Instant,
    signals: &mut StopSignals,
    events: &mut covey_core::Subscription,
    json: bool,
) -> Result<(Vec<EndpointId>, Ended)> {
    let mut joined: Vec<EndpointId> = Vec::new();
    // Peers whose sync session ended (and has not come back) since the wait began, and when.
    let mut gone: BTreeMap<EndpointId, Instant> = BTreeMap::new();
    let mut until = deadline;
    let mut poll = tokio::time::interval(MEMBER_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        // Once every new member has been gone for GONE_GRACE, they have what they came for.
        let all_gone = joined
            .iter()
            .map(|j| gone.get(j).copied())
            .collect::<Option<Vec<Instant>>>()
            .and_then(|times| times.into_iter().max())
            .filter(|_| !joined.is_empty());
        let wake = all_gone.map_or(until, |t| (t + GONE_GRACE).min(until));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                break if joined.is_empty() { Ended::Expired } else { Ended::Joined };
            }
            signal = signals.next() => break Ended::Stopped(signal),
            event = events.recv() => match event {
                Some(Event::PeerConnected { peer }) => {
                    gone.remove(&peer);
                }
                Some(Event::PeerDisconnected { peer }) => {
                    gone.insert(peer, Instant::now());
                }
                Some(_) => {}
                None => break Ended::Closed,
            },
            _ = poll.tick() => {
                for id in others(node, gid).await? {
                    if before.contains(&id) || joined.contains(&id) {
                        continue;
                    }
                    if joined.is_empty() {
                        until = Instant::now() + AFTER_JOIN;
                    }
                    joined.push(id);
                    if json {
                        outln!(
                            "{}",
                            json!({"event": "joined", "group_id": gid.to_string(), "node_id": id.to_string()})
                        )?;
                    } else {
                        outln!("joined {id}")?;
                    }
                }
            }
        }
    };
    Ok((joined, ended))
}

/// Accepts `invite` on `node`. A link is dialed at once. A short code's inviter is searched
/// for through the DHT, which the node joins in the background as it opens: while none is
/// found the search is repeated, for up to [`CODE_SEARCH`], when this node has any peer to
/// search through; with none, the error says to pass `--bootstrap`.
pub async fn accept(node: &Node, invite: &str) -> Result<GroupInfo> {
    let invite = invite.trim();
    let started = Instant::now();
    loop {
        let err = match node.accept_invite(invite).await {
            Err(e) if e.kind() == ErrorKind::Network => e,
            other => return other,
        };
        if is_link(invite) {
            return Err(err);
        }
        if node.status().await?.known_peers == 0 {
            return Err(CoveyError::network(format!(
                "{}. This node knows no other node to search the DHT through: pass \
                 --bootstrap <ticket of the inviter, or of a node that knows it>",
                err.message()
            )));
        }
        if started.elapsed() + SEARCH_PAUSE >= CODE_SEARCH {
            return Err(CoveyError::network(format!(
                "{} (searched for {} s)",
                err.message(),
                started.elapsed().as_secs()
            )));
        }
        log::info!("short code: no inviter found yet ({err}); searching again");
        tokio::time::sleep(SEARCH_PAUSE).await;
    }
}

/// `covey invite accept`: joins, prints the group id, then syncs for up to `--sync-secs`.
async fn invite_accept(node: &Node, args: AcceptArgs) -> Result<()> {
    if args.sync_secs > MAX_SYNC_SECS {
        return Err(CoveyError::invalid(format!(
            "--sync-secs must be at most {MAX_SYNC_SECS}"
        )));
    }
    let invite = if args.invite == "-" {
        let line = tokio::task::spawn_blocking(|| {
            input::first_line(std::io::stdin().lock(), MAX_INVITE_BYTES)
        })
        .await
        .map_err(|e| CoveyError::internal(format!("stdin reader failed: {e}")))??;
        line.trim().to_owned()
    } else {
        args.invite.clone()
    };
    if invite.trim().is_empty() {
        return Err(CoveyError::invalid("the invite link or code is empty"));
    }
    // Subscribed before joining, so the first sync of the group is not missed.
    let mut events = node.subscribe();
    let info = accept(node, &invite).await?;
    let gid = info.group_id;
    let name = render::terminal_safe(info.name.as_bytes());
    if !args.json {
        outln!("{gid}")?;
        note(&format!(
            "joined {name:?} ({} group, epoch {}, {} members)",
            format!("{:?}", info.kind).to_lowercase(),
            info.epoch,
            info.member_count
        ));
    }
    let up_to_date = if args.sync_secs == 0 {
        false
    } else {
        let mut signals = StopSignals::install()?;
        let deadline = Instant::now() + Duration::from_secs(args.sync_secs);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break false,
                _ = signals.next() => break false,
                event = events.recv() => match event {
                    Some(Event::SyncStateChanged { group_id, state: SyncState::UpToDate })
                        if group_id == gid => break true,
                    Some(_) => {}
                    None => break false,
                },
            }
        }
    };
    let entries = entry_count(node, &gid).await?;
    let info = group_info(node, &gid).await?;
    if args.json {
        let mut v = render::group_json(&info);
        if let Value::Object(map) = &mut v {
            map.insert("up_to_date".into(), up_to_date.into());
            map.insert("entries".into(), entries.into());
        }
        outln!("{v}")
    } else {
        if up_to_date {
            note(&format!(
                "up to date: {entries} entries of the group held here"
            ));
        } else if args.sync_secs > 0 {
            note(&format!(
                "not up to date after {} s ({entries} entries held); `covey run` syncs the rest",
                args.sync_secs
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_codes_are_told_apart() {
        assert!(is_link("covey:invite/abc/def"));
        assert!(is_link("  covey:invite/x\n"));
        assert!(!is_link("abcd-efgh"));
        assert!(!is_link("covey:invitee"));
    }

    #[test]
    fn qr_text_is_a_square_of_half_blocks() {
        let link = format!("covey:invite/{}", "a".repeat(200));
        let qr = qr_text(&link).unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        assert!(lines.len() > 10, "{qr}");
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width), "{qr}");
        // Two modules per row of text: about half as many lines as columns.
        assert!(
            lines.len() * 2 >= width && lines.len() * 2 <= width + 2,
            "{qr}"
        );
        assert!(
            qr.chars()
                .all(|c| matches!(c, ' ' | '\n' | '\u{2580}' | '\u{2584}' | '\u{2588}')),
            "{qr}"
        );
        // The quiet zone is light, drawn as full blocks.
        assert!(lines[0].chars().all(|c| c == '\u{2588}'), "{qr}");
    }
}
