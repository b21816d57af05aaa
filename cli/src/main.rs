//! `covey`: a scripting CLI for a Covey node (one data dir, one node), and `covey demo`, which
//! runs several embedded nodes on loopback and checks that they converge.
//!
//! Every failure is printed as `error: <kind>: <message>` on stderr with exit code 1; usage
//! errors exit 2.
#![forbid(unsafe_code)]
#![warn(clippy::missing_docs_in_private_items)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod demo;
mod input;
mod managed;
mod render;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use covey_core::node::DEFAULT_MAX_PAYLOAD;
use covey_core::{CoveyError, ErrorKind, Event, GroupId, Node, NodeConfig, Result, SyncState};
use serde_json::json;

/// Entries fetched per page when listing.
const PAGE: u32 = 1000;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "covey",
    version,
    about = "End-to-end encrypted group sync over iroh: a scripting CLI for one Covey node",
    after_help = "Errors are printed as `error: <kind>: <message>` and exit 1. \
                  Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more."
)]
struct Cli {
    /// Options every command shares.
    #[command(flatten)]
    global: Global,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// Options shared by the commands that open the node in the data dir.
#[derive(Debug, Args)]
struct Global {
    /// The node's data dir [default: $HOME/.covey].
    ///
    /// Holds the database, keys and lock; created on first use. Only one process can have a
    /// data dir open at a time.
    #[arg(long, global = true, env = "COVEY_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Socket address to bind [default: 127.0.0.1 on a fresh port, this machine only].
    ///
    /// For example 0.0.0.0:7777 to be reachable from other machines (direct addresses only:
    /// no relay, no NAT traversal), or a fixed port for a ticket that stays valid across runs.
    #[arg(long, global = true, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Address ticket of a node to join the DHT through (repeatable); remembered as a peer.
    ///
    /// Group members find each other through the DHT, and `invite accept` finds a short code's
    /// inviter there: give the ticket `covey run` or `covey invite create` prints on the
    /// inviter, or of any node that knows it.
    #[arg(long, global = true, value_name = "TICKET")]
    bootstrap: Vec<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Create the node (or open it) and print its node id.
    Init,
    /// Print an address ticket (dialable only while this process runs: share `run`'s instead).
    ///
    /// Every process binds a fresh port, so this ticket is only dialable while this very
    /// process runs, which ends right after printing it. Share the ticket `covey run` prints at
    /// startup instead, or bind a fixed port with --bind to keep tickets valid across runs.
    Addr,
    /// Manage remembered peers.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Create, join, list and manage groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Invite devices into a managed group, or join one by invite.
    #[command(subcommand)]
    Invite(managed::InviteCommand),
    /// Publish one entry to a group and print its entry id, seq and cursor.
    ///
    /// The entry is stored (encrypted) locally at once and reaches peers while `covey run` is
    /// online on this data dir.
    Publish {
        /// The group: its 64-hex id, or the name of a joined group.
        #[arg(long, short)]
        group: String,
        /// An idempotency key: publishing again with the same client id and payload returns
        /// the first entry instead of a new one.
        #[arg(long, value_name = "ID")]
        client_id: Option<String>,
        /// Print the entry's metadata as one JSON object.
        #[arg(long)]
        json: bool,
        /// The payload text, or `-` to read the payload bytes from stdin (up to 1 MiB).
        #[arg(value_name = "TEXT_OR_-")]
        payload: String,
    },
    /// List a group's entries in local cursor order, oldest first.
    Entries {
        /// The group: its 64-hex id, or the name of a joined group.
        #[arg(long, short)]
        group: String,
        /// Only entries after this cursor (as printed by a previous listing).
        #[arg(long, default_value_t = 0, value_name = "CURSOR")]
        after: u64,
        /// At most this many entries (default: all).
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// One JSON object per line: cursor, entry_id, group_id, author, seq, lamport,
        /// timestamp_ms, and payload_utf8 (or payload_hex when the payload is not UTF-8).
        #[arg(long)]
        json: bool,
    },
    /// Print the node's state and counters.
    ///
    /// The sync counters count since this process opened the node, so in a one-shot `status`
    /// they are near zero; `covey run` and `covey demo` show them over a session.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Stay online syncing, printing the ticket to share and then events as they arrive.
    ///
    /// Syncs with remembered peers and anyone who dials in. Ctrl-C or SIGTERM shuts down
    /// cleanly (exit 0). While it runs it holds the data dir, so other covey commands on that
    /// dir are refused: publish from another data dir (another node in the group), or stop it
    /// first.
    Run {
        /// Print events as JSON objects, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Publish and look up signed records and providers in the DHT.
    ///
    /// The node dials its remembered peers for the lookup; a node with none still keeps its
    /// own records and answers for them.
    #[command(subcommand)]
    Dht(DhtCommand),
    /// Run N embedded nodes on loopback and check they converge.
    ///
    /// Each node gets its own temp dir; all join one passphrase group, link up in a ring (or
    /// line), publish concurrently, and must end up holding every entry in the same order with
    /// every payload decrypting to what was published. Exits 1 if they do not converge before
    /// the timeout. With --managed, three nodes run a managed group instead: A creates it, B
    /// joins by link, C by short code, all publish, A removes C, and the demo checks that what
    /// follows reaches B and never C. Ignores --data-dir, --bind and --bootstrap.
    Demo(demo::DemoArgs),
}

/// `covey peer ...`
#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Remember a peer by its address ticket; `covey run` keeps redialing it.
    Add {
        /// The peer's address ticket, as printed by its `covey run`.
        ticket: String,
    },
}

/// `covey dht ...`
#[derive(Debug, Subcommand)]
enum DhtCommand {
    /// Publish VALUE under (this node, NAME) and print its new sequence number.
    Put {
        /// The record's name in this node's namespace.
        name: String,
        /// The value text (at most 1 KiB).
        value: String,
        /// How long the record lives, in seconds.
        #[arg(long, default_value_t = 3600, value_name = "SECS")]
        ttl: u64,
        /// Compare-and-swap: fail unless the current sequence is this (0: no record yet).
        #[arg(long, value_name = "SEQ")]
        expected_seq: Option<u64>,
    },
    /// Look up PUBLISHER's record NAME and print its seq and value (exit 1 when none).
    Get {
        /// The publisher's node id.
        publisher: String,
        /// The record's name.
        name: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Announce this node as a provider of KEY.
    Provide {
        /// The key text.
        key: String,
        /// How long the announcement lives, in seconds.
        #[arg(long, default_value_t = 3600, value_name = "SECS")]
        ttl: u64,
    },
    /// List the providers of KEY, one node id per line.
    Providers {
        /// The key text.
        key: String,
    },
}

/// `covey group ...`
#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Join (or reopen) the passphrase group NAME and print its id.
    ///
    /// The passphrase is read from a no-echo prompt (typed twice) when stdin is a terminal,
    /// else from the first line of stdin; it is never a command-line argument. The same
    /// passphrase and name give the same group on every device.
    Join {
        /// The group's name (part of the key derivation: it must match on every device).
        name: String,
    },
    /// Create a managed group NAME, with this node its admin, and print its id.
    ///
    /// Others join it by invite (`covey invite create`), never by passphrase; its id and keys
    /// are random, not derived from the name.
    Create {
        /// The group's name, shown to every member (1 to 256 bytes).
        name: String,
        /// Print the group as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List joined groups: id, name, epoch, members known here.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List a group's members: node id, role (managed groups), last seq held here.
    ///
    /// A managed group's members are its members now, by its control entries; a passphrase
    /// group's are those this node knows of (authors seen, peers that acknowledged entries,
    /// and this node).
    Members {
        /// The group: its 64-hex id, or the name of a joined group.
        #[arg(
            long,
            short,
            value_name = "GROUP",
            required_unless_present = "group_arg",
            conflicts_with = "group_arg"
        )]
        group: Option<String>,
        /// The group as a positional argument (the older spelling of --group).
        #[arg(value_name = "GROUP", hide = true)]
        group_arg: Option<String>,
        /// One JSON object per line: node_id, role (null in a passphrase group), is_self,
        /// last_seq.
        #[arg(long)]
        json: bool,
    },
    /// Remove a member from a managed group (admins only); starts a new epoch.
    ///
    /// The removed node reads nothing published after this and its later entries are refused
    /// by every member. Stored here at once; the other members learn it when they next sync
    /// with this node (`covey run`) or with one that holds it.
    Remove {
        /// The group: its 64-hex id, or the name of a joined group.
        #[arg(long, short)]
        group: String,
        /// The member's node id (as `covey group members` prints it).
        #[arg(value_name = "NODE_ID")]
        member: String,
    },
    /// Leave a group and delete what this node holds of it (entries and secrets).
    ///
    /// In a managed group this node first publishes its leave and waits up to 5 s for a peer
    /// to acknowledge it, so the others learn of it.
    Leave {
        /// The group: its 64-hex id, or the name of a joined group.
        #[arg(long, short)]
        group: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // iroh warns about every peer that hangs up mid-handshake (each one-shot `covey` command
    // does); RUST_LOG still shows it.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,iroh=error"))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(&CoveyError::internal(format!(
                "cannot start the async runtime: {e}"
            )));
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // A blocking read of stdin left behind must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints `error: <kind>: <message>` and gives exit code 1.
fn fail(e: &CoveyError) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {e}");
    ExitCode::from(1)
}

/// The data dir: `--data-dir`, else COVEY_DATA_DIR (via clap), else `$HOME/.covey`.
fn data_dir(global: &Global) -> Result<PathBuf> {
    if let Some(dir) = &global.data_dir {
        if dir.as_os_str().is_empty() {
            return Err(CoveyError::invalid("--data-dir must not be empty"));
        }
        return Ok(dir.clone());
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".covey")),
        _ => Err(CoveyError::invalid(
            "no data dir: pass --data-dir or set COVEY_DATA_DIR (HOME is not set)",
        )),
    }
}

/// Opens the node in the data dir: loopback-only unless `--bind` says otherwise.
async fn open(global: &Global) -> Result<Node> {
    let mut config = NodeConfig::loopback(data_dir(global)?);
    if let Some(addr) = global.bind {
        config.bind_addr = Some(addr);
    }
    config.bootstrap = global
        .bootstrap
        .iter()
        .map(|t| t.trim().to_owned())
        .collect();
    Node::open(config).await
}

/// Runs the command: opens the node, does the work, and always shuts the node down.
async fn dispatch(cli: Cli) -> Result<()> {
    if let Command::Demo(args) = &cli.command {
        return demo::run(args).await;
    }
    let node = open(&cli.global).await?;
    // A link stays answerable across runs only when the node binds the same port every time.
    let fixed_port = cli.global.bind.is_some_and(|a| a.port() != 0);
    let result = command(&node, cli.command, fixed_port).await;
    let closed = node.shutdown().await;
    result.and(closed)
}

/// The work of each command that uses the node in the data dir; `fixed_port` says whether
/// `--bind` named a port.
async fn command(node: &Node, command: Command, fixed_port: bool) -> Result<()> {
    match command {
        Command::Init => outln!("{}", node.node_id()),
        Command::Addr => outln!("{}", node.addr().await?),
        Command::Peer(PeerCommand::Add { ticket }) => {
            node.add_peer(&ticket).await?;
            outln!("peer added; `covey run` will keep dialing it")
        }
        Command::Group(GroupCommand::Join { name }) => {
            let (pass, name) = tokio::task::spawn_blocking(move || {
                input::passphrase(&name).map(|pass| (pass, name))
            })
            .await
            .map_err(|e| CoveyError::internal(format!("passphrase reader failed: {e}")))??;
            let info = node.join_passphrase(&pass, &name).await?;
            outln!("{}", info.group_id)
        }
        Command::Group(GroupCommand::Create { name, json }) => {
            managed::group_create(node, &name, json).await
        }
        Command::Group(GroupCommand::List { json }) => group_list(node, json).await,
        Command::Group(GroupCommand::Members {
            group,
            group_arg,
            json,
        }) => {
            let group = group.or(group_arg).unwrap_or_default();
            managed::members(node, &group, json).await
        }
        Command::Group(GroupCommand::Remove { group, member }) => {
            managed::remove(node, &group, &member).await
        }
        Command::Group(GroupCommand::Leave { group }) => managed::leave(node, &group).await,
        Command::Invite(cmd) => managed::invite(node, cmd, fixed_port).await,
        Command::Publish {
            group,
            client_id,
            json,
            payload,
        } => {
            let gid = resolve_group(node, &group).await?;
            let bytes = if payload == "-" {
                tokio::task::spawn_blocking(|| input::payload_from_stdin(DEFAULT_MAX_PAYLOAD))
                    .await
                    .map_err(|e| CoveyError::internal(format!("stdin reader failed: {e}")))??
            } else {
                payload.into_bytes()
            };
            let meta = node.publish(&gid, &bytes, client_id.as_deref()).await?;
            if json {
                outln!("{}", render::meta_json(&meta))
            } else {
                outln!(
                    "entry {}  seq {}  cursor {}",
                    meta.entry_id,
                    meta.seq,
                    meta.cursor
                )
            }
        }
        Command::Entries {
            group,
            after,
            limit,
            json,
        } => entries(node, &group, after, limit, json).await,
        Command::Status { json } => {
            let status = node.status().await?;
            if json {
                outln!("{}", render::status_json(&status))
            } else {
                for line in render::status_text(&status) {
                    outln!("{line}")?;
                }
                Ok(())
            }
        }
        Command::Run { json } => run(node, json).await,
        Command::Dht(cmd) => dht(node, cmd).await,
        Command::Demo(_) => Err(CoveyError::internal("demo is dispatched before opening")),
    }
}

/// `covey dht ...`.
async fn dht(node: &Node, cmd: DhtCommand) -> Result<()> {
    match cmd {
        DhtCommand::Put {
            name,
            value,
            ttl,
            expected_seq,
        } => {
            let seq = node
                .dht_put(&name, value.as_bytes(), ttl, expected_seq)
                .await?;
            outln!("seq {seq}")
        }
        DhtCommand::Get {
            publisher,
            name,
            json,
        } => {
            let publisher = covey_core::EndpointId::from_str(publisher.trim())
                .map_err(|e| CoveyError::invalid(format!("publisher is not a node id: {e}")))?;
            let Some(record) = node.dht_get(&publisher, &name).await? else {
                return Err(CoveyError::not_found(format!(
                    "no record {name:?} of {publisher}"
                )));
            };
            let value = String::from_utf8_lossy(&record.value).into_owned();
            if json {
                outln!(
                    "{}",
                    json!({
                        "publisher": record.publisher.to_string(),
                        "name": record.name,
                        "seq": record.seq,
                        "expires_at_ms": record.expires_at_ms,
                        "value_utf8": value,
                    })
                )
            } else {
                outln!("seq {}  {value}", record.seq)
            }
        }
        DhtCommand::Provide { key, ttl } => {
            node.dht_provide(key.as_bytes(), ttl).await?;
            outln!("providing {key:?} for {ttl} s")
        }
        DhtCommand::Providers { key } => {
            for provider in node.dht_providers(key.as_bytes()).await? {
                outln!("{provider}")?;
            }
            Ok(())
        }
    }
}

/// `covey group list`.
async fn group_list(node: &Node, json: bool) -> Result<()> {
    for g in node.groups().await? {
        if json {
            outln!("{}", render::group_json(&g))?;
        } else {
            outln!(
                "{}  {}  epoch {}  members {}",
                g.group_id,
                render::terminal_safe(g.name.as_bytes()),
                g.epoch,
                g.member_count
            )?;
        }
    }
    Ok(())
}

/// Finds a joined group by 64-hex id or by name.
pub(crate) async fn resolve_group(node: &Node, key: &str) -> Result<GroupId> {
    let groups = node.groups().await?;
    if let Ok(id) = key.parse::<GroupId>()
        && groups.iter().any(|g| g.group_id == id)
    {
        return Ok(id);
    }
    let named: Vec<_> = groups.iter().filter(|g| g.name == key).collect();
    match named.as_slice() {
        [one] => Ok(one.group_id),
        [] => Err(CoveyError::not_found(format!(
            "no joined group with id or name {key:?} (see `covey group list`)"
        ))),
        many => Err(CoveyError::invalid(format!(
            "{} joined groups are named {key:?}; pass the group id instead",
            many.len()
        ))),
    }
}

/// `covey entries`: pages through the group from `after`, printing up to `limit` entries.
async fn entries(
    node: &Node,
    group: &str,
    after: u64,
    limit: Option<u64>,
    json: bool,
) -> Result<()> {
    if limit == Some(0) {
        return Err(CoveyError::invalid("--limit must be at least 1"));
    }
    let gid = resolve_group(node, group).await?;
    let mut remaining = limit.unwrap_or(u64::MAX);
    let mut cursor = after;
    while remaining > 0 {
        let want = u32::try_from(remaining.min(u64::from(PAGE))).unwrap_or(PAGE);
        let page = node.entries(&gid, cursor, want).await?;
        for entry in &page {
            if json {
                outln!("{}", render::entry_json(entry))?;
            } else {
                outln!("{}", render::entry_text(entry))?;
            }
        }
        let Some(last) = page.last() else { break };
        cursor = last.meta.cursor;
        remaining = remaining.saturating_sub(page.len() as u64);
        if page.len() < want as usize {
            break;
        }
    }
    Ok(())
}

/// The signals that end `covey run` (and `covey invite create`'s wait).
pub(crate) struct StopSignals {
    /// SIGINT (Ctrl-C).
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    /// SIGTERM.
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers (from then on these signals no longer kill the process).
    pub(crate) fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let err = |e: std::io::Error| {
                CoveyError::internal(format!("cannot install signal handlers: {e}"))
            };
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).map_err(err)?,
                terminate: signal(SignalKind::terminate()).map_err(err)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next stop signal and names it.
    pub(crate) async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// `covey run`: online until a stop signal, printing events.
async fn run(node: &Node, json: bool) -> Result<()> {
    let mut signals = StopSignals::install()?;
    // Subscribe before announcing the ticket so no event after it is missed.
    let mut events = node.subscribe();
    let ticket = node.addr().await?;
    if json {
        outln!(
            "{}",
            json!({"event": "online", "node_id": node.node_id().to_string(), "ticket": ticket})
        )?;
    } else {
        outln!("node {}", node.node_id())?;
        outln!("ticket {ticket}")?;
        for g in node.groups().await? {
            outln!(
                "group {}  {}",
                g.group_id,
                render::terminal_safe(g.name.as_bytes())
            )?;
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "covey: online; share the ticket above with peers. Ctrl-C or SIGTERM stops."
    );
    let why = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => print_event(node, event, json).await?,
                None => break "the node closed",
            },
            signal = signals.next() => break signal,
        }
    };
    log::info!("stopping: {why}");
    // A second signal while shutting down gives up on a clean shutdown.
    tokio::select! {
        result = node.shutdown() => result,
        signal = signals.next() => Err(CoveyError::new(
            ErrorKind::Closed,
            format!("{signal} again during shutdown; exiting without a clean shutdown"),
        )),
    }
}

/// Prints one event (an arriving entry with its payload).
async fn print_event(node: &Node, event: Event, json: bool) -> Result<()> {
    match event {
        Event::EntryReceived {
            group_id, entry_id, ..
        } => match node.entry(&group_id, &entry_id).await? {
            Some(entry) if json => {
                let mut v = render::entry_json(&entry);
                if let serde_json::Value::Object(map) = &mut v {
                    map.insert("event".into(), "entry".into());
                }
                outln!("{v}")
            }
            Some(entry) => outln!(
                "entry {}  {}",
                render::short_group(&group_id),
                render::entry_text(&entry)
            ),
            None => Ok(()),
        },
        Event::PeerConnected { peer } if json => {
            outln!(
                "{}",
                json!({"event": "peer-connected", "peer": peer.to_string()})
            )
        }
        Event::PeerConnected { peer } => outln!("peer-connected {peer}"),
        Event::PeerDisconnected { peer } if json => {
            outln!(
                "{}",
                json!({"event": "peer-disconnected", "peer": peer.to_string()})
            )
        }
        Event::PeerDisconnected { peer } => outln!("peer-disconnected {peer}"),
        Event::GroupChanged { group_id, epoch } if json => outln!(
            "{}",
            json!({"event": "group-changed", "group_id": group_id.to_string(), "epoch": epoch})
        ),
        Event::GroupChanged { group_id, epoch } => {
            outln!("group-changed {group_id}  epoch {epoch}")
        }
        Event::SyncStateChanged { group_id, state } => {
            let state = match state {
                SyncState::CatchingUp => "catching-up",
                SyncState::UpToDate => "up-to-date",
            };
            if json {
                outln!(
                    "{}",
                    json!({"event": "sync", "group_id": group_id.to_string(), "state": state})
                )
            } else {
                outln!("sync {}  {state}", render::short_group(&group_id))
            }
        }
        Event::Warning { kind, message } if json => {
            outln!(
                "{}",
                json!({"event": "warning", "kind": kind, "message": message})
            )
        }
        Event::Warning { kind, message } => outln!(
            "warning {}: {}",
            render::terminal_safe(kind.as_bytes()),
            render::terminal_safe(message.as_bytes())
        ),
    }
}
