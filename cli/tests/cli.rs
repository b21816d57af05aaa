//! End-to-end tests of the `covey` binary against temp data dirs. Nodes bind 127.0.0.1 only;
//! run these inside a loopback-only network namespace:
//! `unshare -n sh -c 'ip link set lo up && cargo test --release -p covey-cli'`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_covey");

/// What a finished run of the binary printed.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A `covey` command on data dir `dir`, with a clean environment for the knobs it reads.
fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(dir)
        .env_remove("COVEY_DATA_DIR")
        .env("RUST_LOG", "warn");
    cmd
}

/// Spawns `covey <args>` on `dir`, feeds `stdin` (or nothing), and waits at most `secs`,
/// killing the child and failing the test on a hang.
fn covey_with(dir: &Path, args: &[&str], stdin: Option<&[u8]>, secs: u64) -> Run {
    let mut child = command(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn covey");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.unwrap_or_default().to_vec();
    // Written from a thread so a child that never reads cannot block the test; dropping the
    // handle closes stdin.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = reader(child.stdout.take().expect("stdout"));
    let err = reader(child.stderr.take().expect("stderr"));
    let Some(status) = wait_deadline(&mut child, secs) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "covey {args:?} did not finish in {secs}s; stderr so far: {}",
            err.join().unwrap_or_default()
        )
    };
    let _ = writer.join();
    Run {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// `covey <args>` on `dir` with empty stdin and a 60 s limit.
fn covey(dir: &Path, args: &[&str]) -> Run {
    covey_with(dir, args, None, 60)
}

/// Reads a pipe to the end on a thread.
fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child` to exit, at most `secs`.
fn wait_deadline(child: &mut Child, secs: u64) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Joins the passphrase group `name` on `dir` and returns its id.
fn join(dir: &Path, name: &str, pass: &str) -> String {
    let run = covey_with(
        dir,
        &["group", "join", name],
        Some(format!("{pass}\n").as_bytes()),
        60,
    );
    assert_eq!(run.code(), Some(0), "{run:?}");
    run.stdout.trim().to_owned()
}

#[test]
fn init_twice_gives_the_same_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let first = covey(dir.path(), &["init"]);
    assert_eq!(first.code(), Some(0), "{first:?}");
    let id = first.stdout.trim();
    assert!(is_hex64(id), "node id {id:?}");
    let second = covey(dir.path(), &["init"]);
    assert_eq!(second.code(), Some(0), "{second:?}");
    assert_eq!(second.stdout.trim(), id);
}

#[test]
fn group_join_reads_the_passphrase_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let id = join(dir.path(), "family", "correct horse battery staple");
    assert!(is_hex64(&id), "group id {id:?}");
    // Same passphrase and name: same group, on another node too.
    let other = tempfile::tempdir().unwrap();
    assert_eq!(
        join(other.path(), "family", "correct horse battery staple"),
        id
    );
    assert_ne!(join(other.path(), "family", "another passphrase"), id);
    let list = covey(dir.path(), &["group", "list"]);
    assert_eq!(list.code(), Some(0), "{list:?}");
    assert!(list.stdout.contains(&id) && list.stdout.contains("family"));
}

#[test]
fn empty_passphrase_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    for input in [&b"\n"[..], b"", b"\r\n"] {
        let run = covey_with(dir.path(), &["group", "join", "family"], Some(input), 60);
        assert_eq!(run.code(), Some(1), "{run:?}");
        assert!(
            run.stderr.contains("error: InvalidInput:") && run.stderr.contains("passphrase"),
            "{run:?}"
        );
    }
}

#[test]
fn passphrase_is_never_a_command_line_argument() {
    let dir = tempfile::tempdir().unwrap();
    let run = covey(dir.path(), &["group", "join", "family", "hunter2"]);
    assert_eq!(run.code(), Some(2), "{run:?}");
}

#[test]
fn published_entries_read_back_as_json_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let gid = join(dir.path(), "notes", "hazel quiver tundra mosaic");
    let run = covey(dir.path(), &["publish", "--group", "notes", "hello covey"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    assert!(run.stdout.contains("seq 1") && run.stdout.contains("cursor"));
    // Binary bytes from stdin, addressed by group id.
    let raw = [0xffu8, 0x00, 0x01];
    let run = covey_with(dir.path(), &["publish", "-g", &gid, "-"], Some(&raw), 60);
    assert_eq!(run.code(), Some(0), "{run:?}");

    let run = covey(dir.path(), &["entries", "--group", "notes", "--json"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert_eq!(lines[0]["payload_utf8"], "hello covey");
    assert_eq!(lines[0]["group_id"], gid.as_str());
    assert_eq!(lines[0]["seq"], 1);
    for field in ["cursor", "entry_id", "author", "lamport", "timestamp_ms"] {
        assert!(!lines[0][field].is_null(), "missing {field}");
    }
    assert_eq!(lines[1]["payload_hex"], "ff0001");
    assert!(lines[1]["payload_utf8"].is_null());

    let run = covey(dir.path(), &["entries", "-g", "notes", "--limit", "1"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    assert_eq!(run.stdout.lines().count(), 1);
    assert!(run.stdout.contains("hello covey"));
    let cursor = lines[0]["cursor"].to_string();
    let run = covey(dir.path(), &["entries", "-g", "notes", "--after", &cursor]);
    assert_eq!(run.stdout.lines().count(), 1, "{run:?}");

    let run = covey(dir.path(), &["publish", "--group", "nope", "x"]);
    assert_eq!(run.code(), Some(1), "{run:?}");
    assert!(run.stderr.starts_with("error: NotFound:"), "{run:?}");
}

#[test]
fn peer_add_garbage_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let run = covey(dir.path(), &["peer", "add", "garbage"]);
    assert_eq!(run.code(), Some(1), "{run:?}");
    assert!(run.stderr.starts_with("error: InvalidInput:"), "{run:?}");
}

#[test]
fn second_process_on_a_running_data_dir_is_refused_and_run_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = command(dir.path())
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn covey run");
    let stdout = run.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = reader(run.stderr.take().expect("stderr"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let ticket = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("ticket ") => break line,
            Ok(_) => continue,
            Err(e) => {
                let _ = run.kill();
                panic!("no ticket line from `covey run`: {e}");
            }
        }
    };
    assert!(ticket.len() > "ticket ".len() + 20, "{ticket}");

    let second = covey(dir.path(), &["status"]);
    let pid = run.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert_eq!(second.code(), Some(1), "{second:?}");
    assert!(second.stderr.starts_with("error: Conflict:"), "{second:?}");
    assert!(
        second.stderr.contains(&dir.path().display().to_string()),
        "the error names the dir: {second:?}"
    );

    assert!(killed.map(|s| s.success()).unwrap_or(false), "kill -TERM");
    let status = wait_deadline(&mut run, 30);
    let Some(status) = status else {
        let _ = run.kill();
        panic!("`covey run` did not stop within 30 s of SIGTERM");
    };
    let stderr = stderr.join().unwrap_or_default();
    assert!(status.success(), "run exited {status:?}; stderr: {stderr}");

    // The lock is released: the dir opens again.
    let again = covey(dir.path(), &["status", "--json"]);
    assert_eq!(again.code(), Some(0), "{again:?}");
    let status: serde_json::Value = serde_json::from_str(again.stdout.trim()).expect("json");
    assert!(status["node_id"].is_string());
    // A lone node: an empty routing table, and no rendezvous partner found.
    assert_eq!(status["dht"]["contacts"], 0, "{status}");
    assert_eq!(status["dht"]["rendezvous_found"], 0, "{status}");
    assert!(status["dht"]["requests_in"].is_u64(), "{status}");
}

#[test]
fn demo_converges() {
    let dir = tempfile::tempdir().unwrap();
    let run = covey_with(
        dir.path(),
        &["demo", "--nodes", "3", "--entries", "10"],
        None,
        180,
    );
    assert_eq!(run.code(), Some(0), "{run:?}");
    assert!(run.stdout.lines().any(|l| l == "converged"), "{run:?}");
    assert!(run.stdout.contains("30/30"), "{run:?}");
}

#[test]
fn dht_put_get_compare_and_swap_and_providers_on_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let id = covey(dir.path(), &["init"]);
    let id = id.stdout.trim().to_string();
    // No DHT peers: the node keeps its own records and answers for them.
    let put = covey(dir.path(), &["dht", "put", "status", "at home"]);
    assert_eq!(put.code(), Some(0), "{put:?}");
    assert_eq!(put.stdout.trim(), "seq 1", "{put:?}");
    let get = covey(dir.path(), &["dht", "get", &id, "status", "--json"]);
    assert_eq!(get.code(), Some(0), "{get:?}");
    let record: serde_json::Value = serde_json::from_str(get.stdout.trim()).unwrap();
    assert_eq!(record["value_utf8"], "at home", "{get:?}");
    assert_eq!(record["seq"], 1, "{get:?}");
    assert_eq!(record["publisher"], id.as_str(), "{get:?}");
    // Compare-and-swap: the right expected seq moves it on, a stale one is a conflict.
    let cas = covey(
        dir.path(),
        &["dht", "put", "status", "out", "--expected-seq", "1"],
    );
    assert_eq!(cas.stdout.trim(), "seq 2", "{cas:?}");
    let stale = covey(
        dir.path(),
        &["dht", "put", "status", "again", "--expected-seq", "1"],
    );
    assert_eq!(stale.code(), Some(1), "{stale:?}");
    assert!(stale.stderr.contains("error: Conflict:"), "{stale:?}");
    let get = covey(dir.path(), &["dht", "get", &id, "status"]);
    assert_eq!(get.stdout.trim(), "seq 2  out", "{get:?}");
    // A missing record and a malformed publisher are errors of their kind.
    let missing = covey(dir.path(), &["dht", "get", &id, "nothing-here"]);
    assert_eq!(missing.code(), Some(1), "{missing:?}");
    assert!(missing.stderr.contains("error: NotFound:"), "{missing:?}");
    let bad = covey(dir.path(), &["dht", "get", "not-a-node-id", "status"]);
    assert_eq!(bad.code(), Some(1), "{bad:?}");
    assert!(bad.stderr.contains("error: InvalidInput:"), "{bad:?}");
    let provide = covey(dir.path(), &["dht", "provide", "photos"]);
    assert_eq!(provide.code(), Some(0), "{provide:?}");
    let providers = covey(dir.path(), &["dht", "providers", "photos"]);
    assert_eq!(providers.code(), Some(0), "{providers:?}");
}

/// A `covey` process left running, its stdout read line by line as it comes.
struct Running {
    child: Child,
    what: String,
    lines: mpsc::Receiver<String>,
    /// Every stdout line received so far.
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    /// Starts `covey <args>` on `dir` with no stdin.
    fn spawn(dir: &Path, args: &[&str]) -> Self {
        let mut child = command(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn covey");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Some(reader(child.stderr.take().expect("stderr")));
        Running {
            child,
            what: format!("covey {args:?}"),
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits at most `secs` for a stdout line that `matches`, and returns it; fails the test
    /// (after killing the process) on a timeout or an early exit.
    fn wait_line(&mut self, secs: u64, what: &str, matches: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|l| matches(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = self
                        .stderr
                        .take()
                        .and_then(|h| h.join().ok())
                        .unwrap_or_default();
                    panic!(
                        "{}: no line for {what} within {secs} s ({e}); stdout:\n{}\nstderr:\n{stderr}",
                        self.what,
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Waits at most `secs` for the process to exit; returns its status, every stdout line
    /// and its stderr.
    fn wait_exit(&mut self, secs: u64) -> (ExitStatus, Vec<String>, String) {
        let Some(status) = wait_deadline(&mut self.child, secs) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "{} did not exit within {secs} s; stdout:\n{}",
                self.what,
                self.seen.join("\n")
            );
        };
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (status, self.seen.clone(), stderr)
    }

    /// Sends SIGTERM and expects a clean exit within 30 s; returns every stdout line.
    fn stop(&mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(killed.map(|s| s.success()).unwrap_or(false), "kill -TERM");
        let (status, lines, stderr) = self.wait_exit(30);
        assert!(
            status.success(),
            "{} exited {status:?} on SIGTERM; stderr: {stderr}",
            self.what
        );
        lines
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback UDP port free a moment ago, for a node whose address must stay the same across
/// its processes (the namespace is the test's own, so nothing else takes it meanwhile).
fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
    socket.local_addr().expect("probe address").port()
}

/// One line of JSON.
fn json_of(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Whether `line` is a `covey run --json` entry event with payload `text`.
fn is_entry(line: &str, text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .map(|v| v["event"] == "entry" && v["payload_utf8"] == text)
        .unwrap_or(false)
}

/// The payloads `dir` holds in `group`, via `covey entries --json`.
fn payloads(dir: &Path, group: &str) -> Vec<String> {
    let run = covey(dir, &["entries", "-g", group, "--json"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    run.stdout
        .lines()
        .map(|l| {
            json_of(l)["payload_utf8"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The epoch of `group` on `dir`, via `covey group list --json`.
fn epoch_on(dir: &Path, group: &str) -> u64 {
    let run = covey(dir, &["group", "list", "--json"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    run.stdout
        .lines()
        .map(json_of)
        .find(|g| g["group_id"] == group)
        .and_then(|g| g["epoch"].as_u64())
        .unwrap_or_else(|| panic!("{group} not listed: {run:?}"))
}

/// `covey group members --json` on `dir`: (node id, role) pairs.
fn roles(dir: &Path, group: &str) -> Vec<(String, String)> {
    let run = covey(dir, &["group", "members", "-g", group, "--json"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    let mut out: Vec<(String, String)> = run
        .stdout
        .lines()
        .map(json_of)
        .map(|m| {
            (
                m["node_id"].as_str().unwrap_or_default().to_owned(),
                m["role"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// `pre` followed by `args`.
fn cat<'a>(pre: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    let mut all = pre.to_vec();
    all.extend_from_slice(args);
    all
}

/// Starts `covey run --json` on each of `nodes` (dir, extra global args).
fn run_all(nodes: &[(&Path, &[&str])]) -> Vec<Running> {
    nodes
        .iter()
        .map(|(dir, extra)| Running::spawn(dir, &cat(extra, &["run", "--json"])))
        .collect()
}

#[test]
fn managed_group_three_devices_invite_by_link_and_code_then_remove_one() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (a, b, c) = (a.path(), b.path(), c.path());
    // A keeps one address across its processes, so the links it hands out and the address B
    // and C remember for it stay valid.
    let bind = format!("127.0.0.1:{}", free_port());
    let on_a: &[&str] = &["--bind", &bind];

    let created = covey(a, &cat(on_a, &["group", "create", "family", "--json"]));
    assert_eq!(created.code(), Some(0), "{created:?}");
    let created = json_of(created.stdout.trim());
    assert_eq!(created["kind"], "managed", "{created}");
    assert_eq!(created["epoch"], 0, "{created}");
    let gid = created["group_id"].as_str().unwrap().to_owned();
    let id_of = |dir: &Path, args: &[&str]| {
        let run = covey(dir, args);
        assert_eq!(run.code(), Some(0), "{run:?}");
        run.stdout.trim().to_owned()
    };
    let a_id = &id_of(a, &cat(on_a, &["init"]));
    let b_id = &id_of(b, &["init"]);
    let c_id = &id_of(c, &["init"]);

    // B joins by link while A's `invite create` serves it.
    let mut inviting = Running::spawn(
        a,
        &cat(
            on_a,
            &["invite", "create", "-g", "family", "--single-use", "--json"],
        ),
    );
    let invite = json_of(&inviting.wait_line(60, "the invite", |l| l.contains("\"link\"")));
    let link = invite["link"].as_str().unwrap().to_owned();
    assert!(link.starts_with("covey:invite/"), "{invite}");
    assert_eq!(invite["group_id"], gid.as_str());
    let accepted = covey(b, &["invite", "accept", &link, "--json"]);
    assert_eq!(accepted.code(), Some(0), "{accepted:?}");
    let joined = json_of(accepted.stdout.trim());
    assert_eq!(joined["group_id"], gid.as_str(), "{accepted:?}");
    assert_eq!(joined["kind"], "managed", "{accepted:?}");
    assert_eq!(joined["name"], "family", "{accepted:?}");
    let (status, lines, stderr) = inviting.wait_exit(60);
    assert!(status.success(), "invite create: {status:?} {stderr}");
    let joined_ev = lines
        .iter()
        .map(|l| json_of(l))
        .find(|v| v["event"] == "joined")
        .unwrap_or_else(|| panic!("no joined event: {lines:?}"));
    assert_eq!(joined_ev["node_id"], b_id.as_str());
    let done = json_of(lines.last().unwrap());
    assert_eq!(done["event"], "done", "{lines:?}");
    assert_eq!(done["reason"], "joined", "{lines:?}");

    // A member is no admin: it cannot remove anyone.
    let refused = covey(b, &["group", "remove", "-g", "family", a_id]);
    assert_eq!(refused.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.starts_with("error: PermissionDenied:"),
        "{refused:?}"
    );

    // C joins by short code, finding A through the DHT with A as its bootstrap.
    let mut inviting = Running::spawn(a, &cat(on_a, &["invite", "create", "-g", &gid, "--json"]));
    let invite = json_of(&inviting.wait_line(60, "the invite", |l| l.contains("\"link\"")));
    let code = invite["short_code"].as_str().unwrap().to_owned();
    let ticket = invite["ticket"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 9, "{invite}");
    let accepted = covey(
        c,
        &["--bootstrap", &ticket, "invite", "accept", &code, "--json"],
    );
    assert_eq!(accepted.code(), Some(0), "{accepted:?}");
    let joined = json_of(accepted.stdout.trim());
    assert_eq!(joined["group_id"], gid.as_str(), "{accepted:?}");
    assert_eq!(joined["up_to_date"], true, "{accepted:?}");
    let (status, lines, stderr) = inviting.wait_exit(60);
    assert!(status.success(), "invite create: {status:?} {stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"joined\"") && l.contains(c_id.as_str())),
        "{lines:?}"
    );
    let mut want = vec![
        (a_id.clone(), "admin".to_owned()),
        (b_id.clone(), "member".to_owned()),
        (c_id.clone(), "member".to_owned()),
    ];
    want.sort();
    assert_eq!(roles(a, "family"), want);

    // Each publishes; online together, all three converge.
    for (dir, text) in [(a, "from a"), (b, "from b"), (c, "from c")] {
        let run = covey(dir, &["publish", "-g", "family", text]);
        assert_eq!(run.code(), Some(0), "{run:?}");
    }
    let mut runs = run_all(&[(a, on_a), (b, &[]), (c, &[])]);
    for (run, own) in runs.iter_mut().zip(["from a", "from b", "from c"]) {
        for text in ["from a", "from b", "from c"] {
            if text != own {
                run.wait_line(60, text, |l| is_entry(l, text));
            }
        }
    }
    for run in &mut runs {
        run.stop();
    }
    drop(runs);
    for dir in [a, b, c] {
        let mut held = payloads(dir, "family");
        held.sort();
        assert_eq!(held, ["from a", "from b", "from c"]);
    }

    // A removes C: a new epoch, which B learns when it next syncs with A.
    let removed = covey(a, &cat(on_a, &["group", "remove", "-g", "family", c_id]));
    assert_eq!(removed.code(), Some(0), "{removed:?}");
    assert!(removed.stdout.contains("epoch 1"), "{removed:?}");
    assert_eq!(roles(a, "family").len(), 2);
    let mut runs = run_all(&[(a, on_a), (b, &[])]);
    runs[1].wait_line(60, "B's epoch 1", |l| {
        l.contains("\"group-changed\"") && l.contains("\"epoch\":1")
    });
    for run in &mut runs {
        run.stop();
    }
    drop(runs);
    assert_eq!(epoch_on(b, &gid), 1);

    // What A publishes next reaches B and not C; what C publishes now reaches nobody.
    let run = covey(c, &["publish", "-g", "family", "c after removal"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    let run = covey(
        a,
        &cat(on_a, &["publish", "-g", "family", "a after removal"]),
    );
    assert_eq!(run.code(), Some(0), "{run:?}");
    let mut runs = run_all(&[(a, on_a), (b, &[]), (c, &[])]);
    runs[1].wait_line(60, "A's post-removal entry on B", |l| {
        is_entry(l, "a after removal")
    });
    // Time for anything that would leak to arrive.
    std::thread::sleep(Duration::from_secs(3));
    let outputs: Vec<Vec<String>> = runs.iter_mut().map(|r| r.stop()).collect();
    drop(runs);
    for (out, name) in outputs.iter().zip(["a", "b"]) {
        assert!(
            !out.iter().any(|l| is_entry(l, "c after removal")),
            "{name} got C's post-removal entry: {out:?}"
        );
    }
    assert!(
        !outputs[2].iter().any(|l| is_entry(l, "a after removal")),
        "C got A's post-removal entry: {:?}",
        outputs[2]
    );
    for dir in [a, b] {
        let held = payloads(dir, "family");
        assert!(held.iter().any(|p| p == "a after removal"), "{held:?}");
        assert!(!held.iter().any(|p| p == "c after removal"), "{held:?}");
        assert!(held.iter().any(|p| p == "from c"), "{held:?}");
    }
    // C never holds the new epoch's secret, nor what was published in it.
    let held = payloads(c, "family");
    assert!(!held.iter().any(|p| p == "a after removal"), "{held:?}");
    assert_eq!(epoch_on(c, &gid), 0);
}

#[test]
fn demo_managed_shows_the_removed_node_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let run = covey_with(dir.path(), &["demo", "--managed"], None, 180);
    assert_eq!(run.code(), Some(0), "{run:?}");
    assert!(
        run.stdout
            .contains("the removed node, could not read the post-removal entry"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("C's later publish reached nobody"),
        "{run:?}"
    );
    assert!(
        run.stdout.lines().any(|l| l == "managed demo passed"),
        "{run:?}"
    );
    // The managed story takes none of the passphrase demo's sizes.
    let run = covey(dir.path(), &["demo", "--managed", "--nodes", "4"]);
    assert_eq!(run.code(), Some(2), "{run:?}");
}

#[test]
fn managed_group_commands_on_one_node_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let gid = covey(dir, &["group", "create", "team"]);
    assert_eq!(gid.code(), Some(0), "{gid:?}");
    let gid = gid.stdout.trim().to_owned();
    assert!(is_hex64(&gid), "{gid}");
    let me = covey(dir, &["init"]).stdout.trim().to_owned();
    assert_eq!(roles(dir, "team"), [(me.clone(), "admin".to_owned())]);
    let text = covey(dir, &["group", "members", "-g", &gid]);
    assert!(
        text.stdout.contains("admin") && text.stdout.contains("(this node)"),
        "{text:?}"
    );
    // The older positional spelling still works.
    let text = covey(dir, &["group", "members", "team"]);
    assert_eq!(text.code(), Some(0), "{text:?}");

    // --no-wait prints the link (and a QR code) and exits; no short code, which would die
    // with the process.
    let run = covey(
        dir,
        &["invite", "create", "-g", "team", "--no-wait", "--qr"],
    );
    assert_eq!(run.code(), Some(0), "{run:?}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("link covey:invite/")),
        "{run:?}"
    );
    assert!(
        !run.stdout.lines().any(|l| l.starts_with("code ")),
        "{run:?}"
    );
    assert!(
        run.stdout
            .lines()
            .filter(|l| l.contains('\u{2588}'))
            .count()
            > 10,
        "a QR code: {run:?}"
    );

    // Served until a signal: exits 0 saying nobody joined.
    let mut serving = Running::spawn(dir, &["invite", "create", "-g", "team"]);
    serving.wait_line(60, "the short code", |l| l.starts_with("code "));
    let lines = serving.stop();
    assert!(
        lines
            .iter()
            .any(|l| l == "nobody joined: stopped by SIGTERM"),
        "{lines:?}"
    );

    // Malformed invites, bad node ids, and what a passphrase group cannot do.
    for bad in ["covey:invite/x", "not a code!", "covey:invite/a/b/c/d"] {
        let run = covey(dir, &["invite", "accept", bad]);
        assert_eq!(run.code(), Some(1), "{bad}: {run:?}");
        assert!(run.stderr.starts_with("error: InvalidInput:"), "{run:?}");
    }
    // `-` reads the invite from stdin.
    let run = covey_with(
        dir,
        &["invite", "accept", "-"],
        Some(b"covey:invite/x\n"),
        60,
    );
    assert_eq!(run.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.starts_with("error: InvalidInput:") && run.stderr.contains("invite link"),
        "{run:?}"
    );
    let run = covey(dir, &["group", "remove", "-g", "team", "not-a-node-id"]);
    assert_eq!(run.code(), Some(1), "{run:?}");
    assert!(run.stderr.starts_with("error: InvalidInput:"), "{run:?}");
    let run = covey(dir, &["group", "remove", "-g", "team", &me]);
    assert_eq!(run.code(), Some(1), "{run:?}");
    assert!(run.stderr.starts_with("error: InvalidInput:"), "{run:?}");
    join(dir, "club", "quartz ember lattice vole");
    let run = covey(dir, &["invite", "create", "-g", "club", "--no-wait"]);
    assert_eq!(run.code(), Some(1), "{run:?}");
    assert!(run.stderr.starts_with("error: InvalidInput:"), "{run:?}");
    // A well-formed short code with no node to search the DHT through.
    let other = tempfile::tempdir().unwrap();
    let run = covey(other.path(), &["invite", "accept", "abcd-efgh"]);
    assert_eq!(run.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.starts_with("error: Network:") && run.stderr.contains("--bootstrap"),
        "{run:?}"
    );

    let run = covey(dir, &["group", "leave", "-g", "team"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    let list = covey(dir, &["group", "list"]);
    assert!(!list.stdout.contains(&gid), "{list:?}");
}
