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
