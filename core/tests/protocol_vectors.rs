//! Pins `docs/PROTOCOL.md` to the code, so the document a second implementation is written
//! from can never drift from what this one sends.
//!
//! The document is read at test time. Machine-readable parts of it:
//!
//! - fenced blocks ` ```hex vector=<name> ` hold a byte string that must equal what the code
//!   produces from the fixed inputs below, and must decode back to those inputs;
//! - fenced blocks ` ```hex negative=<name> ` hold a frame that must fail to decode (or a
//!   length prefix that must fail the frame limit); names starting `dht.` are DHT messages
//!   that `dht::messages::decode` must refuse, and names starting `entry.` are entries that
//!   decode but whose signature must be refused (`signatures.rs`);
//! - in both, whitespace is insignificant and `{xx*N}` stands for `N` bytes of value `xx`;
//! - the fenced block ` ```text encoding-examples ` lists postcard encodings of single values,
//!   one per line: `<type> <value> => <hex>` (encodes to and decodes from), `<type> <value> <=
//!   <hex>` (decodes from, never emitted) and `<type> ! <hex>` (must not decode);
//! - tables preceded by `<!-- table: <name> -->` (constants, message variants, features,
//!   refuse codes, the entry header layout; for the DHT its constants, variants, record
//!   layouts, transport addresses and rendezvous windows) are compared with the code cell by
//!   cell. The DHT driver's frame limits and the rendezvous timings are private constants of
//!   `core/src/node/dht_driver.rs` and `core/src/node/rendezvous.rs`, so the test reads them from
//!   those files' source.
//!
//! A mismatch fails with the block the document should contain, ready to paste.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::OnceLock;

use covey_core::crypto::aead::{NONCE_LEN, TAG_LEN};
use covey_core::crypto::{Secret32, kdf};
use covey_core::dht::messages::{
    self as dht_msg, MAX_MESSAGE_BYTES, MAX_PROVIDERS_PER_RESPONSE, Message as DhtMessage, Refusal,
    Request, Response,
};
use covey_core::dht::record::{
    self as dht_record, MAX_NAME_LEN, MAX_VALUE_CEILING, PROVIDER_KEY_LABEL,
    PROVIDER_SIGNATURE_LABEL, RECORD_KEY_LABEL, RECORD_SIGNATURE_LABEL,
};
use covey_core::dht::{DhtConfig, Key, ProviderRecord, Record, RecordLimits, RecordQuotas};
use covey_core::group::{GroupKeys, MEMBERSHIP_PROOF_LABEL, PairKeys, ProofRole};
use covey_core::group::{RENDEZVOUS_WINDOW_MS, rendezvous_window};
use covey_core::node::{DEFAULT_MAX_PAYLOAD, FRAME_OVERHEAD, SYNC_ALPN};
use covey_core::node::{DHT_ALPN, DhtSettings};
use covey_core::sync::driver::SESSION_BINDING_LABEL;
use covey_core::sync::limits::RateLimits;
use covey_core::sync::session::{
    FEATURES, MAX_PROOFS, MAX_SEQ, MIN_PROOFS, MIN_PROTOCOL_VERSION, Output, PROTOCOL_VERSION,
    SyncSession, Timers,
};
use covey_core::sync::verify::{
    MAX_LAMPORT, MAX_LAMPORT_STEP, MAX_UNSIGNED_RUN, MAX_UNSIGNED_RUN_BYTES, MAX_UNVERIFIED_BYTES,
};
use covey_core::wire::WireError;
use covey_core::wire::entry::{
    ENTRY_VERSION, EntryHeader, EntryKind, HEADER_LEN, Id32, SIGNATURE_LABEL, SIGNATURE_LEN,
    SignedEntry,
};
use covey_core::wire::frame::{self, Head, LENGTH_PREFIX, Message, RefuseCode};
use iroh::{EndpointAddr, SecretKey, TransportAddr};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[path = "protocol_vectors/managed.rs"]
mod managed;
#[path = "protocol_vectors/signatures.rs"]
mod signatures;

// ---------------------------------------------------------------------------------------------
// Reading the document
// ---------------------------------------------------------------------------------------------

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");

fn doc() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("cannot read {DOC_PATH}: {e}"))
    })
}

/// A fenced code block: its info string, its lines, and the line it starts on (1-based).
#[derive(Debug)]
struct Fenced {
    info: String,
    body: Vec<String>,
    line: usize,
}

fn fenced_blocks(text: &str) -> Vec<Fenced> {
    let mut out = Vec::new();
    let mut open: Option<Fenced> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some(Fenced {
                        info: info.trim().to_owned(),
                        body: Vec::new(),
                        line: i + 1,
                    });
                }
            }
            Some(mut block) => {
                if trimmed == "```" {
                    out.push(block);
                } else {
                    block.body.push(line.to_owned());
                    open = Some(block);
                }
            }
        }
    }
    assert!(
        open.is_none(),
        "PROTOCOL.md: a fenced block is never closed"
    );
    out
}

/// Decodes a hex block: whitespace is insignificant and `{xx*N}` stands for `N` bytes of
/// value `xx` (for the long runs of the DHT's oversized negatives).
fn unhex(s: &str, context: &str) -> Vec<u8> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = Vec::new();
    let mut rest = compact.as_str();
    while !rest.is_empty() {
        let (literal, run) = match rest.split_once('{') {
            Some((literal, tail)) => {
                let (run, after) = tail
                    .split_once('}')
                    .unwrap_or_else(|| panic!("{context}: unclosed {{ in {compact}"));
                rest = after;
                (literal, Some(run))
            }
            None => (std::mem::take(&mut rest), None),
        };
        out.extend(
            hex::decode(literal).unwrap_or_else(|e| panic!("{context}: not hex ({e}): {literal}")),
        );
        if let Some(run) = run {
            let bad = || -> ! { panic!("{context}: {{{run}}} is not {{xx*N}}") };
            let (byte, n) = run.split_once('*').unwrap_or_else(|| bad());
            let byte = match byte.len() {
                2 => u8::from_str_radix(byte, 16).unwrap_or_else(|_| bad()),
                _ => bad(),
            };
            let n: usize = n.parse().unwrap_or_else(|_| bad());
            out.extend(std::iter::repeat_n(byte, n));
        }
    }
    out
}

/// The ` ```hex <kind>=<name> ` blocks of the document, by name.
fn hex_blocks(kind: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for block in fenced_blocks(doc()) {
        let Some(attrs) = block.info.strip_prefix("hex ") else {
            continue;
        };
        let Some(name) = attrs.trim().strip_prefix(&format!("{kind}=")) else {
            continue;
        };
        let bytes = unhex(
            &block.body.join("\n"),
            &format!("PROTOCOL.md line {}", block.line),
        );
        let previous = out.insert(name.to_owned(), bytes);
        assert!(previous.is_none(), "PROTOCOL.md: {kind} {name} twice");
    }
    out
}

fn doc_vector(name: &str) -> Vec<u8> {
    hex_blocks("vector")
        .remove(name)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no vector {name}"))
}

/// The rows of the table after `<!-- table: <name> -->`, header row first, cells trimmed and
/// stripped of backticks.
fn table(name: &str) -> Vec<Vec<String>> {
    let marker = format!("<!-- table: {name} -->");
    let mut lines = doc().lines().skip_while(|l| l.trim() != marker);
    assert!(
        lines.next().is_some(),
        "PROTOCOL.md has no table marked {marker}"
    );
    let rows: Vec<Vec<String>> = lines
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect::<Vec<_>>()
        })
        .filter(|cells| {
            !cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        })
        .collect();
    assert!(rows.len() > 1, "table {name} has no rows");
    rows
}

/// The first whitespace-separated token of a cell (so `4611686018427387904 (2^62)` reads as
/// the number).
fn first_token(cell: &str) -> &str {
    cell.split_whitespace().next().unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// The fixed inputs every vector is computed from (PROTOCOL.md, "Test vectors")
// ---------------------------------------------------------------------------------------------

const PASSPHRASE: &str = "correct horse battery staple";
const GROUP_NAME: &str = "covey-test-vectors";
const SECRET_A: [u8; 32] = [0xa1; 32];
const SECRET_B: [u8; 32] = [0xb2; 32];
const PLAINTEXT: &[u8] = b"hello covey";
const TIMESTAMP_MS: u64 = 1_700_000_000_000;
const REFUSE_REASON: &str = "incompatible protocol versions: we speak 2..=2, peer speaks 9..=9";
/// What the vectors' TLS session exports (RFC 5705) as the session binding; a real one is
/// whatever the connection's TLS secrets give.
const BINDING: [u8; 32] = [0x5b; 32];
/// The padding of the vector `Prove` (a real node draws random-looking values).
const PADDING: [[u8; 32]; 3] = [[0x11; 32], [0x22; 32], [0x33; 32]];

fn nonce() -> [u8; NONCE_LEN] {
    std::array::from_fn(|i| i as u8)
}

fn default_max_frame() -> usize {
    DEFAULT_MAX_PAYLOAD + FRAME_OVERHEAD
}

struct Fixture {
    salt: [u8; 32],
    root: Secret32,
    keys: GroupKeys,
    a: Id32,
    b: Id32,
    tag: Id32,
    pair: PairKeys,
    header: EntryHeader,
    entry: SignedEntry,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let salt = kdf::passphrase_salt(GROUP_NAME);
        let root = kdf::passphrase_root(PASSPHRASE, GROUP_NAME).expect("argon2id");
        let keys = GroupKeys::from_root(&root);
        let secret_a = SecretKey::from_bytes(&SECRET_A);
        let a = *secret_a.public().as_bytes();
        let b = *SecretKey::from_bytes(&SECRET_B).public().as_bytes();
        let tag = keys.session_tag(&a, &b).0;
        let pair = keys.pair(&a, &b);
        let header = EntryHeader {
            version: ENTRY_VERSION,
            kind: EntryKind::Data,
            group_ref: keys.entry_group,
            author: a,
            seq: 1,
            prev: [0; 32],
            lamport: 1,
            epoch: 0,
            timestamp_ms: TIMESTAMP_MS,
            nonce: nonce(),
        };
        let entry = SignedEntry::seal(header.clone(), &keys.content_key, &secret_a, PLAINTEXT)
            .expect("seal the vector entry");
        Fixture {
            salt,
            root,
            keys,
            a,
            b,
            tag,
            pair,
            header,
            entry,
        }
    })
}

/// The vector `Prove` of node A dialing B: A's proof among fixed padding, sorted.
fn vector_prove(f: &Fixture) -> Message {
    let mut proofs = vec![f.pair.proof(ProofRole::Dialer, &BINDING)];
    proofs.extend(PADDING);
    proofs.sort();
    Message::Prove { proofs }
}

/// The hello a node with the default configuration sends: this build's version range, its
/// features, and its frame limit as the last one.
fn default_nodes_hello() -> Message {
    let mut session = SyncSession::new().with_max_frame(default_max_frame());
    match &session.start([])[..] {
        [Output::Send(hello @ Message::Hello { .. })] => hello.clone(),
        other => panic!("a session starts with its hello, not {other:?}"),
    }
}

/// Every message variant in declaration order: (vector name, variant index, input).
fn messages(f: &Fixture) -> Vec<(&'static str, u8, Message)> {
    vec![
        ("frame.hello", 0, default_nodes_hello()),
        (
            "frame.hello-future",
            0,
            Message::Hello {
                version: 300,
                min_version: 2,
                features: vec!["acks".into(), "future-x".into()],
            },
        ),
        (
            "frame.frontier",
            1,
            Message::Frontier {
                group: f.tag,
                heads: vec![
                    Head {
                        author: f.a,
                        seq: 1,
                    },
                    Head {
                        author: f.b,
                        seq: 300,
                    },
                ],
            },
        ),
        (
            "frame.entries",
            2,
            Message::Entries {
                group: f.tag,
                entries: vec![f.entry.raw().to_vec()],
            },
        ),
        (
            "frame.announce",
            3,
            Message::Announce {
                group: f.tag,
                heads: vec![],
            },
        ),
        (
            "frame.refuse",
            4,
            Message::Refuse {
                code: RefuseCode::IncompatibleVersion as u16,
                reason: REFUSE_REASON.into(),
            },
        ),
        (
            "frame.ack",
            5,
            Message::Ack {
                group: f.tag,
                heads: vec![Head {
                    author: f.a,
                    seq: 1,
                }],
            },
        ),
        ("frame.ping", 6, Message::Ping { nonce: 1 }),
        ("frame.pong", 7, Message::Pong { nonce: 1 }),
        ("frame.prove", 8, vector_prove(f)),
    ]
}

fn encode(message: &Message) -> Vec<u8> {
    frame::encode(message).expect("encode")
}

fn with_prefix(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn signing_message(header_and_ciphertext: &[u8]) -> Vec<u8> {
    let mut out = SIGNATURE_LABEL.to_vec();
    out.extend_from_slice(blake3::hash(header_and_ciphertext).as_bytes());
    out
}

/// The positive vectors, as the code computes them.
fn expected_vectors() -> BTreeMap<String, Vec<u8>> {
    let f = fixture();
    let raw = f.entry.raw();
    let body_end = raw.len() - SIGNATURE_LEN;
    let mut v: Vec<(&str, Vec<u8>)> = vec![
        ("group.passphrase-salt", f.salt.to_vec()),
        ("group.root", f.root.expose().to_vec()),
        ("group.id", f.keys.id.0.to_vec()),
        ("group.content-key", f.keys.content_key.expose().to_vec()),
        (
            "group.session-tag-key",
            f.keys.session_tag_key.expose().to_vec(),
        ),
        ("node.a", f.a.to_vec()),
        ("node.b", f.b.to_vec()),
        ("group.session-tag", f.tag.to_vec()),
        ("group.entry-group", f.keys.entry_group.to_vec()),
        (
            "group.membership-key",
            f.keys.membership_key.expose().to_vec(),
        ),
        ("group.proof-key", f.pair.proof_key.expose().to_vec()),
        (
            "session.proof-dialer",
            f.pair.proof(ProofRole::Dialer, &BINDING).to_vec(),
        ),
        (
            "session.proof-acceptor",
            f.pair.proof(ProofRole::Acceptor, &BINDING).to_vec(),
        ),
        ("entry.header", raw[..HEADER_LEN].to_vec()),
        ("entry.ciphertext", raw[HEADER_LEN..body_end].to_vec()),
        ("entry.signing-message", signing_message(&raw[..body_end])),
        ("entry.signed", raw.to_vec()),
        ("entry.id", f.entry.id().to_vec()),
    ];
    let frames: Vec<(&str, Vec<u8>)> = messages(f)
        .into_iter()
        .map(|(name, _, m)| (name, encode(&m)))
        .collect();
    v.extend(frames);
    v.extend(managed::managed_vectors());
    v.extend(dht_vectors());
    v.into_iter().map(|(k, b)| (k.to_owned(), b)).collect()
}

/// The negative vectors, as the code computes them from the valid frames.
fn expected_negatives() -> BTreeMap<String, Vec<u8>> {
    let f = fixture();
    let ping = encode(&Message::Ping { nonce: 1 });
    let mut trailing = ping[LENGTH_PREFIX..].to_vec();
    trailing.push(0);
    let frontier = encode(&Message::Frontier {
        group: f.tag,
        heads: vec![],
    });
    let mut huge_count = vec![1u8];
    huge_count.extend_from_slice(&f.tag);
    huge_count.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let v: Vec<(&str, Vec<u8>)> = vec![
        ("unknown-variant", with_prefix(&[9])),
        ("future-variant", with_prefix(&[0xc8, 0x01])),
        ("trailing-byte", with_prefix(&trailing)),
        (
            "truncated-body",
            with_prefix(&frontier[LENGTH_PREFIX..LENGTH_PREFIX + 17]),
        ),
        ("varint-overflow", with_prefix(&[0, 0xff, 0xff, 0x04, 1, 0])),
        ("invalid-utf8", with_prefix(&[4, 1, 1, 0xff])),
        ("huge-count", with_prefix(&huge_count)),
        (
            "length-over-limit",
            ((default_max_frame() + 1) as u32).to_be_bytes().to_vec(),
        ),
    ];
    v.into_iter()
        .chain(dht_negatives())
        .chain(signatures::signature_negatives())
        .chain(managed::managed_negatives())
        .map(|(k, b)| (k.to_owned(), b))
        .collect()
}

/// The doc block for a vector, as it should read: 32 bytes a line, runs of 64 or more equal
/// bytes written `{xx*N}` on a line of their own.
fn block_text(kind: &str, name: &str, bytes: &[u8]) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut literal: Vec<u8> = Vec::new();
    let flush = |literal: &mut Vec<u8>, lines: &mut Vec<String>| {
        lines.extend(literal.chunks(32).map(hex::encode));
        literal.clear();
    };
    let mut at = 0;
    while at < bytes.len() {
        let run = bytes[at..].iter().take_while(|b| **b == bytes[at]).count();
        if run >= 64 {
            flush(&mut literal, &mut lines);
            lines.push(format!("{{{:02x}*{run}}}", bytes[at]));
        } else {
            literal.extend_from_slice(&bytes[at..at + run]);
        }
        at += run;
    }
    flush(&mut literal, &mut lines);
    format!("```hex {kind}={name}\n{}\n```", lines.join("\n"))
}

fn compare(kind: &str, expected: &BTreeMap<String, Vec<u8>>) {
    let documented = hex_blocks(kind);
    let mut problems = Vec::new();
    for (name, bytes) in expected {
        match documented.get(name) {
            Some(doc) if doc == bytes => {}
            Some(_) => problems.push(format!(
                "{kind} {name} is stale; it should read:\n{}",
                block_text(kind, name, bytes)
            )),
            None => problems.push(format!(
                "{kind} {name} is missing; add:\n{}",
                block_text(kind, name, bytes)
            )),
        }
    }
    for name in documented.keys() {
        if !expected.contains_key(name) {
            problems.push(format!(
                "{kind} {name} is in PROTOCOL.md but no test checks it"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "PROTOCOL.md does not match the code:\n\n{}",
        problems.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Vectors
// ---------------------------------------------------------------------------------------------

#[test]
fn every_vector_in_the_doc_is_what_the_code_produces() {
    compare("vector", &expected_vectors());
}

#[test]
fn every_negative_vector_in_the_doc_is_checked() {
    compare("negative", &expected_negatives());
}

#[test]
fn frame_vectors_decode_to_their_documented_inputs() {
    let f = fixture();
    let max_frame = default_max_frame();
    let mut seen_variants = BTreeSet::new();
    for (name, index, message) in messages(f) {
        let bytes = doc_vector(name);
        let prefix: [u8; LENGTH_PREFIX] = bytes[..LENGTH_PREFIX].try_into().unwrap();
        let len = frame::frame_len(prefix, max_frame).expect(name);
        assert_eq!(
            len,
            bytes.len() - LENGTH_PREFIX,
            "{name}: the prefix is the body length"
        );
        let body = &bytes[LENGTH_PREFIX..];
        assert_eq!(body[0], index, "{name}: variant index");
        seen_variants.insert(index);
        assert_eq!(frame::decode(body).expect(name), message, "{name}");
        assert_eq!(encode(&message), bytes, "{name}: re-encoding");
    }
    assert_eq!(
        seen_variants,
        (0..9).collect::<BTreeSet<u8>>(),
        "a vector for every variant"
    );
}

#[test]
fn frame_vectors_have_the_documented_field_layout() {
    // Spot checks of the layouts the tables describe, on the doc's bytes.
    let f = fixture();
    let hello = doc_vector("frame.hello");
    assert_eq!(&hello[..4], &[0, 0, 0, 52], "prefix");
    assert_eq!(
        &hello[4..8],
        &[0x00, 0x02, 0x02, 0x04],
        "variant, version, min, count"
    );
    assert!(
        hello.ends_with(b"\x11max-frame=1114112"),
        "the frame limit, last"
    );
    assert_eq!(hello[8] as usize, "run-signatures".len());
    assert_eq!(&hello[9..23], b"run-signatures");

    // Prove: the variant, the count, then 32 raw bytes per proof, sorted.
    let prove = doc_vector("frame.prove");
    assert_eq!(&prove[4..6], &[0x08, 0x04], "variant, count");
    assert_eq!(prove.len(), 4 + 2 + 4 * 32);
    let proofs: Vec<&[u8]> = prove[6..].chunks(32).collect();
    assert!(proofs.windows(2).all(|w| w[0] < w[1]), "sorted");
    assert!(proofs.contains(&&f.pair.proof(ProofRole::Dialer, &BINDING)[..]));

    let future = doc_vector("frame.hello-future");
    assert_eq!(
        &future[4..8],
        &[0x00, 0xac, 0x02, 0x02],
        "300 is two varint bytes"
    );

    let frontier = doc_vector("frame.frontier");
    assert_eq!(frontier[4], 1);
    assert_eq!(
        &frontier[5..37],
        &f.tag,
        "the group is named by its session tag"
    );
    assert_eq!(frontier[37], 2, "head count");
    assert_eq!(&frontier[38..70], &f.a);
    assert_eq!(frontier[70], 1, "seq 1");
    assert_eq!(&frontier[71..103], &f.b);
    assert_eq!(&frontier[103..], &[0xac, 0x02], "seq 300");

    let entries = doc_vector("frame.entries");
    let raw = f.entry.raw();
    assert_eq!(&entries[5..37], &f.tag);
    assert_eq!(entries[37], 1, "entry count");
    // A 249-byte entry: its length is a two-byte varint, then the entry verbatim.
    assert_eq!(raw.len(), 249);
    assert_eq!(&entries[38..40], &[0xf9, 0x01]);
    assert_eq!(&entries[40..], raw);

    let refuse = doc_vector("frame.refuse");
    assert_eq!(&refuse[4..7], &[4, 1, REFUSE_REASON.len() as u8]);
    assert_eq!(&refuse[7..], REFUSE_REASON.as_bytes());

    assert_eq!(doc_vector("frame.ping"), [0, 0, 0, 2, 6, 1]);
    assert_eq!(doc_vector("frame.pong"), [0, 0, 0, 2, 7, 1]);
}

#[test]
fn negative_vectors_fail_to_decode() {
    let negatives = hex_blocks("negative");
    let max_frame = default_max_frame();
    for (name, bytes) in &negatives {
        if name.starts_with("dht.") {
            continue; // dht_negative_vectors_fail_to_decode
        }
        if name.starts_with("entry.") {
            continue; // signatures::the_documented_signature_edge_cases_are_refused
        }
        if name.starts_with("control.") {
            continue; // managed::the_documented_control_payloads_decode_and_the_negatives_do_not
        }
        if name == "length-over-limit" {
            let prefix: [u8; LENGTH_PREFIX] = bytes.as_slice().try_into().expect("a bare prefix");
            assert_eq!(
                frame::frame_len(prefix, max_frame),
                Err(WireError::TooLarge {
                    what: "frame",
                    len: max_frame + 1,
                    limit: max_frame
                })
            );
            // The limit itself is allowed.
            let at_limit = (max_frame as u32).to_be_bytes();
            assert_eq!(frame::frame_len(at_limit, max_frame), Ok(max_frame));
            continue;
        }
        // Every other negative is well framed: only its body is wrong.
        let prefix: [u8; LENGTH_PREFIX] = bytes[..LENGTH_PREFIX].try_into().unwrap();
        let len = frame::frame_len(prefix, max_frame).expect(name);
        assert_eq!(len, bytes.len() - LENGTH_PREFIX, "{name}: framing");
        let body = &bytes[LENGTH_PREFIX..];
        match frame::decode(body) {
            Err(WireError::Malformed(_)) => {}
            other => panic!("negative {name} decoded to {other:?}"),
        }
    }
    // The mutations are the documented ones: each negative is one step from a valid frame.
    let trailing = &negatives["trailing-byte"][LENGTH_PREFIX..];
    assert_eq!(
        frame::decode(&trailing[..trailing.len() - 1]),
        Ok(Message::Ping { nonce: 1 })
    );
    // A non-minimal variant index decodes, as the document says (`86 00` is index 6).
    assert_eq!(
        frame::decode(&[0x86, 0x00, 0x01]),
        Ok(Message::Ping { nonce: 1 })
    );
    let valid_hello = [0, 0x7f, 1, 0];
    assert!(frame::decode(&valid_hello).is_ok());
    let valid_refuse = [4, 1, 1, b'x'];
    assert!(frame::decode(&valid_refuse).is_ok());
    let unknown = &negatives["unknown-variant"][LENGTH_PREFIX..];
    let prove = [8, 0];
    assert!(frame::decode(&prove).is_ok(), "8 is the last variant");
    assert_eq!(unknown, &[9]);
}

#[test]
fn entry_vector_decodes_verifies_and_opens() {
    let f = fixture();
    let raw = doc_vector("entry.signed");
    let max_ciphertext = DEFAULT_MAX_PAYLOAD + TAG_LEN;
    let entry = SignedEntry::decode(raw.clone(), max_ciphertext).expect("decode the vector");
    assert_eq!(entry.header(), &f.header, "header fields");
    entry.verify_signature().expect("signature verifies");
    assert_eq!(
        entry.open(&f.keys.content_key).expect("opens").as_slice(),
        PLAINTEXT
    );
    // Id, parts and the signed message, recomputed from the documented bytes alone.
    assert_eq!(
        blake3::hash(&raw).as_bytes().to_vec(),
        doc_vector("entry.id")
    );
    let header = doc_vector("entry.header");
    let ciphertext = doc_vector("entry.ciphertext");
    assert_eq!(raw[..HEADER_LEN], header[..]);
    assert_eq!(raw.len(), HEADER_LEN + ciphertext.len() + SIGNATURE_LEN);
    assert_eq!(
        raw[HEADER_LEN..HEADER_LEN + ciphertext.len()],
        ciphertext[..]
    );
    assert_eq!(ciphertext.len(), PLAINTEXT.len() + TAG_LEN);
    let mut body = header.clone();
    body.extend_from_slice(&ciphertext);
    let message = doc_vector("entry.signing-message");
    assert_eq!(signing_message(&body), message);
    let author = iroh::PublicKey::from_bytes(&doc_vector("node.a").try_into().unwrap()).unwrap();
    let signature: [u8; 64] = raw[raw.len() - SIGNATURE_LEN..].try_into().unwrap();
    author
        .verify(&message, &iroh::Signature::from_bytes(&signature))
        .expect("the trailer is an Ed25519 signature of the signing message");
    // The AEAD binds the header: the same ciphertext under another header does not open.
    let mut moved = raw.clone();
    moved[106 + 7] ^= 1; // lamport
    let moved = SignedEntry::decode(moved, max_ciphertext).unwrap();
    assert!(moved.open(&f.keys.content_key).is_err());
    assert!(moved.verify_signature().is_err());
}

#[test]
fn entry_validity_rules_hold_on_the_vector() {
    let raw = doc_vector("entry.signed");
    let max_ct = DEFAULT_MAX_PAYLOAD + TAG_LEN;
    let ct_len = raw.len() - HEADER_LEN - SIGNATURE_LEN;
    let patched = |at: usize, bytes: &[u8]| {
        let mut r = raw.clone();
        r[at..at + bytes.len()].copy_from_slice(bytes);
        r
    };
    let refused = |r: Vec<u8>, max: usize, what: &str| {
        assert!(
            SignedEntry::decode(r, max).is_err(),
            "{what} must not decode"
        );
    };
    refused(patched(0, &[1]), max_ct, "version 1");
    refused(patched(0, &[3]), max_ct, "version 3");
    refused(patched(1, &[2]), max_ct, "kind 2");
    refused(patched(66, &0u64.to_be_bytes()), max_ct, "seq 0");
    refused(
        patched(154, &((ct_len + 1) as u32).to_be_bytes()),
        max_ct,
        "a ciphertext length past the end",
    );
    refused(
        patched(154, &((TAG_LEN - 1) as u32).to_be_bytes()),
        max_ct,
        "a ciphertext shorter than its tag",
    );
    let mut long = raw.clone();
    long.push(0);
    refused(long, max_ct, "a trailing byte");
    refused(raw[..raw.len() - 1].to_vec(), max_ct, "a missing byte");
    refused(raw.clone(), ct_len - 1, "a ciphertext over the limit");
    assert!(
        SignedEntry::decode(raw.clone(), ct_len).is_ok(),
        "at the limit"
    );
    // Control entries decode like data entries (kind 1).
    let control = SignedEntry::decode(patched(1, &[1]), max_ct).unwrap();
    assert_eq!(control.header().kind, EntryKind::Control);
    assert!(control.verify_signature().is_err(), "kind is signed");
    // The signature trailer is checked against the author in the header.
    let flipped = patched(raw.len() - 1, &[raw[raw.len() - 1] ^ 1]);
    let flipped = SignedEntry::decode(flipped, max_ct).unwrap();
    assert!(flipped.verify_signature().is_err());
}

#[test]
fn key_vectors_follow_the_documented_derivations() {
    // Recomputed from the documented inputs with the primitives named in PROTOCOL.md, not
    // through covey's own helpers.
    let salt = doc_vector("group.passphrase-salt");
    let mut h = blake3::Hasher::new();
    h.update(b"covey/v1/passphrase-salt");
    h.update(GROUP_NAME.as_bytes());
    assert_eq!(h.finalize().as_bytes().to_vec(), salt);

    let root = doc_vector("group.root");
    let argon = kdf::argon2id(PASSPHRASE.as_bytes(), &salt, 65536, 3, 1).unwrap();
    assert_eq!(argon.expose().to_vec(), root);

    for (name, label) in [
        ("group.id", "covey/v1/group-id"),
        ("group.content-key", "covey/v1/content-key"),
        ("group.session-tag-key", "covey/v1/session-tag"),
        ("group.entry-group", "covey/v2/entry-group"),
        ("group.membership-key", "covey/v2/membership"),
    ] {
        let mut out = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(None, &root)
            .expand(label.as_bytes(), &mut out)
            .unwrap();
        assert_eq!(out.to_vec(), doc_vector(name), "{name}");
        // No salt is the same as 32 zero bytes (RFC 5869, section 2.2).
        let mut zero_salt = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(&[0u8; 32]), &root)
            .expand(label.as_bytes(), &mut zero_salt)
            .unwrap();
        assert_eq!(zero_salt, out);
    }

    let a = doc_vector("node.a");
    let b = doc_vector("node.b");
    assert_eq!(
        a,
        SecretKey::from_bytes(&SECRET_A)
            .public()
            .as_bytes()
            .to_vec()
    );
    assert_eq!(
        b,
        SecretKey::from_bytes(&SECRET_B)
            .public()
            .as_bytes()
            .to_vec()
    );
    let tag_key: [u8; 32] = doc_vector("group.session-tag-key").try_into().unwrap();
    let (lo, hi) = if a <= b { (&a, &b) } else { (&b, &a) };
    let tag = blake3::keyed_hash(&tag_key, &[lo.as_slice(), hi.as_slice()].concat());
    assert_eq!(tag.as_bytes().to_vec(), doc_vector("group.session-tag"));
    // The pair's proof key: the same keyed hash of the pair under the membership key; each
    // side's proof a keyed hash under it of the label, the role byte and the binding.
    let membership_key: [u8; 32] = doc_vector("group.membership-key").try_into().unwrap();
    let proof_key = blake3::keyed_hash(&membership_key, &[lo.as_slice(), hi.as_slice()].concat());
    assert_eq!(proof_key.as_bytes().to_vec(), doc_vector("group.proof-key"));
    assert_eq!(MEMBERSHIP_PROOF_LABEL, "covey/v2/membership-proof");
    for (role, name) in [(0u8, "session.proof-dialer"), (1, "session.proof-acceptor")] {
        let input = [MEMBERSHIP_PROOF_LABEL.as_bytes(), &[role], &BINDING].concat();
        let proof = blake3::keyed_hash(proof_key.as_bytes(), &input);
        assert_eq!(proof.as_bytes().to_vec(), doc_vector(name), "{name}");
    }
    // The vector Prove carries the dialer's proof among its padding.
    let prove = doc_vector("frame.prove");
    let dialer = doc_vector("session.proof-dialer");
    assert!(prove.windows(32).any(|w| w == dialer.as_slice()));
    // Either order of the pair gives the same tag; the group id never appears.
    let keys = &fixture().keys;
    let (a, b): (Id32, Id32) = (a.try_into().unwrap(), b.try_into().unwrap());
    assert_eq!(keys.session_tag(&a, &b), keys.session_tag(&b, &a));
    assert_ne!(keys.session_tag(&a, &b).0, keys.id.0);
    assert_ne!(
        keys.entry_group, keys.id.0,
        "headers never carry the group id"
    );
}

// ---------------------------------------------------------------------------------------------
// Encoding examples (postcard rules)
// ---------------------------------------------------------------------------------------------

fn check_value<T>(line: &str, op: &str, value: Option<T>, bytes: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let decoded = postcard::take_from_bytes::<T>(bytes);
    match (op, value) {
        ("!", _) => assert!(
            !matches!(decoded, Ok((_, rest)) if rest.is_empty()),
            "{line}: decoded to {:?}",
            decoded.map(|(v, _)| v)
        ),
        (_, Some(value)) => {
            let (got, rest) = decoded.unwrap_or_else(|e| panic!("{line}: does not decode: {e}"));
            assert!(rest.is_empty(), "{line}: {} bytes left over", rest.len());
            assert_eq!(got, value, "{line}: decodes to");
            if op == "=>" {
                assert_eq!(
                    hex::encode(postcard::to_stdvec(&value).unwrap()),
                    hex::encode(bytes),
                    "{line}: encodes to"
                );
            } else {
                assert_ne!(
                    postcard::to_stdvec(&value).unwrap(),
                    bytes,
                    "{line}: a lenient form differs from the canonical one"
                );
            }
        }
        (_, None) => panic!("{line}: no value"),
    }
}

fn quoted(s: &str, line: &str) -> Vec<String> {
    let parts: Vec<&str> = s.split('"').collect();
    assert!(parts.len() % 2 == 1, "{line}: unbalanced quotes");
    parts
        .iter()
        .skip(1)
        .step_by(2)
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn encoding_examples_are_postcards_encodings() {
    let block = fenced_blocks(doc())
        .into_iter()
        .find(|b| b.info == "text encoding-examples")
        .expect("PROTOCOL.md has a ```text encoding-examples block");
    let mut types = BTreeSet::new();
    let mut ops = BTreeSet::new();
    for line in block
        .body
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
    {
        let (op, left, right) = if let Some((l, r)) = line.split_once("=>") {
            ("=>", l, r)
        } else if let Some((l, r)) = line.split_once("<=") {
            ("<=", l, r)
        } else {
            panic!("{line}: no => or <=");
        };
        let (ty, value) = left.trim().split_once(' ').unwrap_or((left.trim(), ""));
        let value = value.trim();
        let op = if value == "!" { "!" } else { op };
        let bytes = unhex(right, line);
        types.insert(ty.to_owned());
        ops.insert(op);
        let num = |v: &str| -> Option<u64> {
            (op != "!").then(|| v.parse::<u64>().unwrap_or_else(|e| panic!("{line}: {e}")))
        };
        match ty {
            "u8" => check_value(line, op, num(value).map(|n| n as u8), &bytes),
            "u16" => check_value(line, op, num(value).map(|n| n as u16), &bytes),
            "u32" => check_value(line, op, num(value).map(|n| n as u32), &bytes),
            "u64" => check_value(line, op, num(value), &bytes),
            "string" => {
                let v = (op != "!").then(|| quoted(value, line).remove(0));
                check_value(line, op, v, &bytes)
            }
            "strings" => {
                let v = (op != "!").then(|| quoted(value, line));
                check_value(line, op, v, &bytes)
            }
            "bytes" => {
                let v = (op != "!").then(|| unhex(value, line));
                check_value(line, op, v, &bytes)
            }
            "id32" => {
                let v = (op != "!").then(|| [unhex(value, line)[0]; 32]);
                check_value(line, op, v, &bytes)
            }
            "head" => {
                let v = (op != "!").then(|| {
                    let (author, seq) = value.split_once(' ').expect("head <byte> <seq>");
                    Head {
                        author: [unhex(author, line)[0]; 32],
                        seq: seq.trim().parse().unwrap(),
                    }
                });
                check_value(line, op, v, &bytes)
            }
            other => panic!("{line}: unknown type {other}"),
        }
    }
    // The block covers every encoding rule the document states.
    let want: BTreeSet<String> = [
        "u8", "u16", "u32", "u64", "string", "strings", "bytes", "id32", "head",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(types, want, "encoding-examples covers each type");
    assert_eq!(ops, BTreeSet::from(["!", "<=", "=>"]));
}

#[test]
fn entries_byte_strings_are_plain_postcard_byte_vectors() {
    // The bulk codec of `Entries` must be wire-identical to postcard's Vec<Vec<u8>>: the
    // document describes it that way.
    #[derive(Serialize)]
    enum Plain {
        _Hello,
        _Frontier,
        Entries { group: Id32, entries: Vec<Vec<u8>> },
    }
    let f = fixture();
    let entries = vec![f.entry.raw().to_vec(), vec![], vec![0x5a; 200]];
    let plain = postcard::to_stdvec(&Plain::Entries {
        group: f.tag,
        entries: entries.clone(),
    })
    .unwrap();
    let ours = encode(&Message::Entries {
        group: f.tag,
        entries,
    });
    assert_eq!(ours[LENGTH_PREFIX..], plain[..]);
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

#[test]
fn constants_table_matches_the_code() {
    let timers = Timers::default();
    let limits = RateLimits::default();
    let want: BTreeMap<&str, String> = [
        ("ALPN", String::from_utf8(SYNC_ALPN.to_vec()).unwrap()),
        ("PROTOCOL_VERSION", PROTOCOL_VERSION.to_string()),
        ("MIN_PROTOCOL_VERSION", MIN_PROTOCOL_VERSION.to_string()),
        ("ENTRY_VERSION", ENTRY_VERSION.to_string()),
        ("LENGTH_PREFIX", LENGTH_PREFIX.to_string()),
        ("DEFAULT_MAX_PAYLOAD", DEFAULT_MAX_PAYLOAD.to_string()),
        ("FRAME_OVERHEAD", FRAME_OVERHEAD.to_string()),
        ("DEFAULT_MAX_FRAME", default_max_frame().to_string()),
        ("HEADER_LEN", HEADER_LEN.to_string()),
        ("NONCE_LEN", NONCE_LEN.to_string()),
        ("TAG_LEN", TAG_LEN.to_string()),
        ("SIGNATURE_LEN", SIGNATURE_LEN.to_string()),
        (
            "MIN_ENTRY_LEN",
            (HEADER_LEN + TAG_LEN + SIGNATURE_LEN).to_string(),
        ),
        ("MAX_SEQ", MAX_SEQ.to_string()),
        ("MAX_LAMPORT", MAX_LAMPORT.to_string()),
        ("MAX_LAMPORT_STEP", MAX_LAMPORT_STEP.to_string()),
        ("MAX_UNSIGNED_RUN", MAX_UNSIGNED_RUN.to_string()),
        ("MAX_UNSIGNED_RUN_BYTES", MAX_UNSIGNED_RUN_BYTES.to_string()),
        ("MAX_UNVERIFIED_BYTES", MAX_UNVERIFIED_BYTES.to_string()),
        ("MAX_PROOFS", MAX_PROOFS.to_string()),
        ("MIN_PROOFS", MIN_PROOFS.to_string()),
        (
            "SESSION_BINDING_LABEL",
            String::from_utf8(SESSION_BINDING_LABEL.to_vec()).unwrap(),
        ),
        ("MAX_TIMESTAMP_MS", i64::MAX.to_string()),
        (
            "handshake_timeout_ms",
            timers.handshake_timeout_ms.to_string(),
        ),
        ("keepalive_ms", timers.keepalive_ms.to_string()),
        ("idle_timeout_ms", timers.idle_timeout_ms.to_string()),
        ("frame_timeout_ms", timers.frame_timeout_ms.to_string()),
        ("frames_per_sec", limits.frames_per_sec.to_string()),
        ("frame_burst", limits.frame_burst.to_string()),
        ("bytes_per_sec", limits.bytes_per_sec.to_string()),
        ("byte_burst", limits.byte_burst.to_string()),
    ]
    .into_iter()
    .collect();
    let rows = table("constants");
    assert_eq!(rows[0][0], "constant");
    let got: BTreeMap<&str, &str> = rows[1..]
        .iter()
        .map(|r| (r[0].as_str(), first_token(&r[1])))
        .collect();
    assert_eq!(got.len(), rows.len() - 1, "a constant is listed twice");
    let want_ref: BTreeMap<&str, &str> = want.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(got, want_ref);
    assert_eq!(MAX_SEQ, 1 << 62);
}

#[test]
fn variant_table_matches_the_encoding() {
    let rows = table("variants");
    assert_eq!(rows[0][0], "index");
    let got: Vec<(u8, String)> = rows[1..]
        .iter()
        .map(|r| (r[0].parse().unwrap(), r[1].clone()))
        .collect();
    let f = fixture();
    let mut want: Vec<(u8, String)> = Vec::new();
    for (name, index, message) in messages(f) {
        let variant = format!("{message:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(encode(&message)[LENGTH_PREFIX], index, "{name}");
        if !want.iter().any(|(i, _)| *i == index) {
            want.push((index, variant));
        }
    }
    assert_eq!(got, want);
}

#[test]
fn feature_table_lists_exactly_what_this_build_announces() {
    let rows = table("features");
    assert_eq!(rows[0][0], "feature");
    let got: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(got, FEATURES, "in announcement order");
}

#[test]
fn refuse_code_table_matches_the_code() {
    let rows = table("refuse-codes");
    assert_eq!(rows[0][0], "code");
    let got: Vec<(u16, &str)> = rows[1..]
        .iter()
        .map(|r| (r[0].parse().unwrap(), r[1].as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                RefuseCode::IncompatibleVersion as u16,
                "IncompatibleVersion"
            ),
            (RefuseCode::ProtocolViolation as u16, "ProtocolViolation"),
            (RefuseCode::GoingAway as u16, "GoingAway"),
        ]
    );
}

#[test]
fn entry_layout_table_matches_the_vector() {
    let f = fixture();
    let h = &f.header;
    let raw = doc_vector("entry.signed");
    let ct_len = (raw.len() - HEADER_LEN - SIGNATURE_LEN) as u32;
    let fields: Vec<(&str, Vec<u8>)> = vec![
        ("version", vec![h.version]),
        ("kind", vec![0]),
        ("group_ref", h.group_ref.to_vec()),
        ("author", h.author.to_vec()),
        ("seq", h.seq.to_be_bytes().to_vec()),
        ("prev", h.prev.to_vec()),
        ("lamport", h.lamport.to_be_bytes().to_vec()),
        ("epoch", h.epoch.to_be_bytes().to_vec()),
        ("timestamp_ms", h.timestamp_ms.to_be_bytes().to_vec()),
        ("nonce", h.nonce.to_vec()),
        ("ciphertext_len", ct_len.to_be_bytes().to_vec()),
    ];
    let rows = table("entry-header");
    assert_eq!(rows[0][..3], ["offset", "length", "field"]);
    let mut at = 0;
    for (row, (name, bytes)) in rows[1..].iter().zip(&fields) {
        let offset: usize = row[0].parse().unwrap();
        let len: usize = row[1].parse().unwrap();
        assert_eq!(row[2], *name);
        assert_eq!(offset, at, "{name} starts where the previous field ends");
        assert_eq!(len, bytes.len(), "{name} length");
        assert_eq!(
            &raw[offset..offset + len],
            &bytes[..],
            "{name} in the vector"
        );
        at += len;
    }
    assert_eq!(rows.len() - 1, fields.len(), "one row per header field");
    assert_eq!(at, HEADER_LEN);
}

// ---------------------------------------------------------------------------------------------
// The DHT (PROTOCOL.md, "The DHT protocol" and "DHT test vectors")
// ---------------------------------------------------------------------------------------------

use covey_core::dht::record::MAX_SEALED_BYTES;
use covey_core::group::rendezvous::{
    self as rendezvous, ASSOCIATED_DATA_LEN, RENDEZVOUS_IDENTITY_LABEL, RENDEZVOUS_SEAL_LABEL,
    SEALED_OVERHEAD,
};

const DHT_SECRET: [u8; 32] = [0x07; 32];
const RECORD_NAME: &[u8] = b"covey-test";
/// The application key of P's own provider record (nothing sealed).
const APP_PROVIDER_KEY: &[u8] = b"covey-test";
/// The nonce P's rendezvous announcement is sealed with in the vectors (a node draws a fresh
/// random one for every announcement).
const RENDEZVOUS_NONCE: [u8; NONCE_LEN] = [
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
];
const RECORD_VALUE: &[u8] = b"hello dht";
const RECORD_SEQ: u64 = 1;
const RECORD_EXPIRES_MS: u64 = 1_700_003_600_000;
const RENDEZVOUS_ROOT: [u8; 32] = [0x01; 32];
const RENDEZVOUS_WINDOW: u64 = 494_000;
const PROVIDER_EXPIRES_MS: u64 = 1_778_403_600_000;
const HINT_ADDR: &str = "127.0.0.1:4242";
const DRIVER_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/node/dht_driver.rs");
const RENDEZVOUS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/node/rendezvous.rs");

struct DhtFixture {
    p: [u8; 32],
    record: Record,
    rendezvous: GroupKeys,
    app_key: [u8; 32],
    provider_key: Key,
    /// P's application announcement of [`APP_PROVIDER_KEY`]: nothing sealed.
    provider: ProviderRecord,
    /// P's address at [`HINT_ADDR`], as a hint and as the rendezvous record seals it.
    p_addr: EndpointAddr,
    /// P's window identity in the rendezvous group.
    identity: SecretKey,
    seal_key: Secret32,
    /// P's rendezvous announcement of window 494000, sealed with [`RENDEZVOUS_NONCE`].
    announcement: ProviderRecord,
    hints: Vec<EndpointAddr>,
}

fn dht_fixture() -> &'static DhtFixture {
    static FIXTURE: OnceLock<DhtFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let secret = SecretKey::from_bytes(&DHT_SECRET);
        let p = *secret.public().as_bytes();
        let record = Record::sign(
            &secret,
            RECORD_NAME,
            RECORD_VALUE,
            RECORD_SEQ,
            RECORD_EXPIRES_MS,
        )
        .expect("sign the vector record");
        let rendezvous = GroupKeys::from_root(&Secret32::from_bytes(RENDEZVOUS_ROOT));
        let app_key = rendezvous.rendezvous_key(RENDEZVOUS_WINDOW);
        let provider_key = dht_record::provider_key(&app_key);
        let provider = ProviderRecord::sign(
            &secret,
            dht_record::provider_key(APP_PROVIDER_KEY),
            PROVIDER_EXPIRES_MS,
        );
        let p_addr = EndpointAddr::new(secret.public()).with_ip_addr(HINT_ADDR.parse().unwrap());
        // The announcement as a member builds it: the window identity signs, the address is
        // sealed to the window's key, bound to the record by the associated data.
        let identity = rendezvous.rendezvous_identity(RENDEZVOUS_WINDOW, &p);
        let seal_key = rendezvous.rendezvous_seal_key(RENDEZVOUS_WINDOW);
        let associated = rendezvous::associated_data(
            &provider_key.0,
            identity.public().as_bytes(),
            PROVIDER_EXPIRES_MS,
        );
        let plaintext = postcard::to_stdvec(&p_addr).unwrap();
        let sealed =
            rendezvous::seal(&seal_key, &RENDEZVOUS_NONCE, &associated, &plaintext).unwrap();
        let announcement =
            ProviderRecord::sign_sealed(&identity, provider_key, PROVIDER_EXPIRES_MS, sealed)
                .expect("sign the vector announcement");
        DhtFixture {
            p,
            record,
            rendezvous,
            app_key,
            provider_key,
            provider,
            hints: vec![p_addr.clone()],
            p_addr,
            identity,
            seal_key,
            announcement,
        }
    })
}

/// Every DHT message vector: (name, input). Sent by P; contacts are the sync vectors' A and B.
fn dht_messages() -> Vec<(&'static str, DhtMessage)> {
    let f = dht_fixture();
    let (a, b) = (Key(fixture().a), Key(fixture().b));
    let request = |id, body| DhtMessage::Request { id, body };
    let response = |id, body| DhtMessage::Response { id, body };
    vec![
        ("dht.ping", request(1, Request::Ping)),
        ("dht.pong", response(1, Response::Pong)),
        ("dht.find-node", request(2, Request::FindNode { target: b })),
        (
            "dht.nodes",
            response(
                2,
                Response::Nodes {
                    contacts: vec![a, b],
                },
            ),
        ),
        (
            "dht.find-value",
            request(
                3,
                Request::FindValue {
                    key: f.record.key(),
                },
            ),
        ),
        (
            "dht.value",
            response(
                3,
                Response::Value {
                    record: Some(f.record.clone()),
                    contacts: vec![a],
                },
            ),
        ),
        (
            "dht.store",
            request(
                4,
                Request::Store {
                    record: f.record.clone(),
                },
            ),
        ),
        (
            "dht.stored",
            response(
                4,
                Response::Stored {
                    accepted: true,
                    refusal: None,
                    held: None,
                },
            ),
        ),
        (
            "dht.stored-conflict",
            response(
                300,
                Response::Stored {
                    accepted: false,
                    refusal: Some(Refusal::Conflict),
                    held: Some(f.record.clone()),
                },
            ),
        ),
        (
            "dht.stored-invalid",
            response(
                301,
                Response::Stored {
                    accepted: false,
                    refusal: Some(Refusal::Invalid),
                    held: None,
                },
            ),
        ),
        (
            "dht.stored-full",
            response(
                302,
                Response::Stored {
                    accepted: false,
                    refusal: Some(Refusal::Full),
                    held: None,
                },
            ),
        ),
        (
            "dht.add-provider",
            request(
                5,
                Request::AddProvider {
                    record: f.announcement.clone(),
                },
            ),
        ),
        (
            "dht.provider-added",
            response(5, Response::ProviderAdded { accepted: true }),
        ),
        (
            "dht.get-providers",
            request(
                6,
                Request::GetProviders {
                    key: f.provider_key,
                },
            ),
        ),
        (
            "dht.providers",
            response(
                6,
                Response::Providers {
                    providers: vec![f.announcement.clone()],
                    contacts: vec![a, b],
                },
            ),
        ),
    ]
}

fn dht_encode(message: &DhtMessage) -> Vec<u8> {
    dht_msg::encode(message).expect("encode a dht message")
}

/// A driver frame, built from the layout PROTOCOL.md gives (the driver's own builder is
/// private): `u32 BE frame length | u32 BE message length | message | hints`.
fn dht_frame(message: &[u8], hints: &[u8]) -> Vec<u8> {
    let len = 4 + message.len() + hints.len();
    let mut out = (len as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.extend_from_slice(hints);
    out
}

fn dht_vectors() -> Vec<(&'static str, Vec<u8>)> {
    let f = dht_fixture();
    let hints = postcard::to_stdvec(&f.hints).unwrap();
    let ping = dht_encode(&DhtMessage::Request {
        id: 1,
        body: Request::Ping,
    });
    let mut v: Vec<(&str, Vec<u8>)> = vec![
        ("dht.node-p", f.p.to_vec()),
        ("dht.record-key", f.record.key().0.to_vec()),
        ("dht.record.signing-message", f.record.signing_message()),
        ("dht.record.signature", f.record.signature.clone()),
        ("dht.record", postcard::to_stdvec(&f.record).unwrap()),
        (
            "rendezvous.secret",
            f.rendezvous.rendezvous_secret.expose().to_vec(),
        ),
        ("rendezvous.key", f.app_key.to_vec()),
        ("rendezvous.provider-key", f.provider_key.0.to_vec()),
        (
            "dht.app-provider-key",
            dht_record::provider_key(APP_PROVIDER_KEY).0.to_vec(),
        ),
        ("dht.provider.signing-message", f.provider.signing_message()),
        ("dht.provider.signature", f.provider.signature.clone()),
        (
            "dht.provider-record",
            postcard::to_stdvec(&f.provider).unwrap(),
        ),
        ("rendezvous.identity-seed", f.identity.to_bytes().to_vec()),
        (
            "rendezvous.provider",
            f.identity.public().as_bytes().to_vec(),
        ),
        ("rendezvous.seal-key", f.seal_key.expose().to_vec()),
        (
            "rendezvous.address",
            postcard::to_stdvec(&f.p_addr).unwrap(),
        ),
        (
            "rendezvous.associated-data",
            rendezvous::associated_data(
                &f.announcement.key,
                &f.announcement.provider,
                f.announcement.expires_at_ms,
            )
            .to_vec(),
        ),
        ("rendezvous.sealed", f.announcement.sealed.clone()),
        (
            "rendezvous.signing-message",
            f.announcement.signing_message(),
        ),
        (
            "rendezvous.record",
            postcard::to_stdvec(&f.announcement).unwrap(),
        ),
        ("dht.hints", hints.clone()),
        ("dht.frame", dht_frame(&ping, &hints)),
    ];
    v.extend(dht_messages().into_iter().map(|(n, m)| (n, dht_encode(&m))));
    v
}

fn dht_negatives() -> Vec<(&'static str, Vec<u8>)> {
    let f = dht_fixture();
    let store = |record: Record| {
        postcard::to_stdvec(&DhtMessage::Request {
            id: 4,
            body: Request::Store { record },
        })
        .unwrap()
    };
    let long_name = Record {
        name: vec![b'n'; MAX_NAME_LEN + 1],
        ..f.record.clone()
    };
    let big_value = Record {
        value: vec![0; MAX_VALUE_CEILING + 1],
        ..f.record.clone()
    };
    let mut short_sig = f.record.clone();
    short_sig.signature.pop();
    let add_provider = |record: ProviderRecord| {
        postcard::to_stdvec(&DhtMessage::Request {
            id: 5,
            body: Request::AddProvider { record },
        })
        .unwrap()
    };
    let mut short_provider = f.announcement.clone();
    short_provider.signature.pop();
    let mut sealed_over = f.announcement.clone();
    sealed_over.sealed = vec![0x5e; MAX_SEALED_BYTES + 1];
    let full = dht_encode(&DhtMessage::Request {
        id: 4,
        body: Request::Store {
            record: f.record.clone(),
        },
    });
    let mut trailing = dht_encode(&DhtMessage::Request {
        id: 1,
        body: Request::Ping,
    });
    trailing.push(0);
    vec![
        ("dht.truncated", full[..full.len() - 1].to_vec()),
        ("dht.unknown-message", vec![2]),
        ("dht.unknown-request", vec![0, 1, 6]),
        ("dht.unknown-response", vec![1, 1, 6]),
        ("dht.unknown-refusal", vec![1, 7, 3, 0, 1, 3, 0]),
        ("dht.bad-bool", vec![1, 5, 4, 2]),
        ("dht.bad-option", vec![1, 3, 2, 2, 0]),
        (
            "dht.huge-contact-count",
            vec![1, 2, 1, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
        ("dht.name-over-limit", store(long_name)),
        ("dht.value-over-ceiling", store(big_value)),
        ("dht.short-signature", store(short_sig)),
        ("dht.provider-short-signature", add_provider(short_provider)),
        ("dht.provider-sealed-over-limit", add_provider(sealed_over)),
        (
            "dht.providers-over-limit",
            zero_providers(MAX_PROVIDERS_PER_RESPONSE + 1),
        ),
        ("dht.trailing-byte", trailing),
        ("dht.message-over-limit", vec![0; MAX_MESSAGE_BYTES + 1]),
    ]
}

/// `Providers` (id 6) holding `n` all-zero provider records (67 zero bytes each: the record
/// fields are never checked against each other before the count is).
fn zero_providers(n: usize) -> Vec<u8> {
    let zero = ProviderRecord {
        key: [0; 32],
        provider: [0; 32],
        expires_at_ms: 0,
        sealed: Vec::new(),
        signature: Vec::new(),
    };
    postcard::to_stdvec(&DhtMessage::Response {
        id: 6,
        body: Response::Providers {
            providers: vec![zero; n],
            contacts: vec![],
        },
    })
    .unwrap()
}

/// Reads a LEB128 varint at `*at`, moving past it.
fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = bytes[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint too long")
}

/// The top-level field names of a `Debug` rendering such as `Name { a: 1, b: [2, 3] }`.
fn debug_fields(debug: &str) -> Vec<String> {
    let Some(open) = debug.find(" { ") else {
        return Vec::new();
    };
    let inner = &debug[open + 3..debug.len() - 2];
    let mut fields = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                fields.push(inner[start..i].to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.push(inner[start..].to_owned());
    fields
        .iter()
        .map(|f| f.split(':').next().unwrap().trim().to_owned())
        .collect()
}

/// The variant name of a `Debug` rendering.
fn debug_variant(debug: &str) -> String {
    debug.split([' ', '{', '(']).next().unwrap().to_owned()
}

#[test]
fn dht_message_vectors_decode_to_their_inputs() {
    let mut requests = BTreeSet::new();
    let mut responses = BTreeSet::new();
    for (name, message) in dht_messages() {
        let bytes = doc_vector(name);
        assert_eq!(
            dht_msg::decode(&bytes).expect(name),
            message,
            "{name}: decodes"
        );
        assert_eq!(dht_encode(&message), bytes, "{name}: re-encoding");
        // Envelope: variant index, then the id as a varint, then the body.
        let mut at = 1;
        let id = read_varint(&bytes, &mut at);
        match &message {
            DhtMessage::Request { id: want, body } => {
                assert_eq!(bytes[0], 0, "{name}");
                assert_eq!(id, *want, "{name}");
                assert_eq!(
                    bytes[at..],
                    postcard::to_stdvec(body).unwrap()[..],
                    "{name}"
                );
                requests.insert(bytes[at]);
            }
            DhtMessage::Response { id: want, body } => {
                assert_eq!(bytes[0], 1, "{name}");
                assert_eq!(id, *want, "{name}");
                assert_eq!(
                    bytes[at..],
                    postcard::to_stdvec(body).unwrap()[..],
                    "{name}"
                );
                responses.insert(bytes[at]);
            }
        }
    }
    let all: BTreeSet<u8> = (0..6).collect();
    assert_eq!(requests, all, "a vector for every request");
    assert_eq!(responses, all, "a vector for every response");

    // Spot checks of the layouts the document spells out.
    let f = dht_fixture();
    let (a, b) = (fixture().a, fixture().b);
    assert_eq!(doc_vector("dht.ping"), [0, 1, 0]);
    assert_eq!(doc_vector("dht.pong"), [1, 1, 0]);
    let find = doc_vector("dht.find-node");
    assert_eq!(&find[..3], &[0, 2, 1]);
    assert_eq!(&find[3..], &b);
    let nodes = doc_vector("dht.nodes");
    assert_eq!(
        &nodes[..4],
        &[1, 2, 1, 2],
        "Response, id 2, Nodes, 2 contacts"
    );
    assert_eq!(&nodes[4..36], &a);
    assert_eq!(&nodes[36..], &b);
    let record = doc_vector("dht.record");
    let store = doc_vector("dht.store");
    assert_eq!(&store[..3], &[0, 4, 3]);
    assert_eq!(
        &store[3..],
        &record[..],
        "Store carries the record verbatim"
    );
    let value = doc_vector("dht.value");
    assert_eq!(&value[..4], &[1, 3, 2, 1], "Some(record)");
    assert_eq!(&value[4..4 + record.len()], &record[..]);
    assert_eq!(&value[4 + record.len()..5 + record.len()], &[1]);
    assert_eq!(&value[5 + record.len()..], &a);
    assert_eq!(doc_vector("dht.stored"), [1, 4, 3, 1, 0, 0]);
    let conflict = doc_vector("dht.stored-conflict");
    assert_eq!(&conflict[..7], &[1, 0xac, 0x02, 3, 0, 1, 1]);
    assert_eq!(conflict[7], 1, "Some(held)");
    assert_eq!(&conflict[8..], &record[..]);
    assert_eq!(
        doc_vector("dht.stored-invalid"),
        [1, 0xad, 0x02, 3, 0, 1, 0, 0]
    );
    assert_eq!(
        doc_vector("dht.stored-full"),
        [1, 0xae, 0x02, 3, 0, 1, 2, 0]
    );
    let provider = doc_vector("rendezvous.record");
    let add = doc_vector("dht.add-provider");
    assert_eq!(&add[..3], &[0, 5, 4]);
    assert_eq!(&add[3..], &provider[..]);
    assert_eq!(doc_vector("dht.provider-added"), [1, 5, 4, 1]);
    let get = doc_vector("dht.get-providers");
    assert_eq!(&get[..3], &[0, 6, 5]);
    assert_eq!(&get[3..], &f.provider_key.0);
    let providers = doc_vector("dht.providers");
    assert_eq!(&providers[..4], &[1, 6, 5, 1]);
    let end = 4 + provider.len();
    assert_eq!(&providers[4..end], &provider[..]);
    assert_eq!(providers[end], 2);
    assert_eq!(&providers[end + 1..end + 33], &a);
    assert_eq!(&providers[end + 33..], &b);
}

#[test]
fn dht_record_vectors_follow_the_documented_rules() {
    let f = dht_fixture();
    let p = doc_vector("dht.node-p");
    assert_eq!(
        p,
        SecretKey::from_bytes(&DHT_SECRET)
            .public()
            .as_bytes()
            .to_vec()
    );
    let record: Record = postcard::from_bytes(&doc_vector("dht.record")).unwrap();
    assert_eq!(record, f.record);
    assert_eq!(
        (
            &record.publisher[..],
            &record.name[..],
            &record.value[..],
            record.seq,
            record.expires_at_ms
        ),
        (
            &p[..],
            RECORD_NAME,
            RECORD_VALUE,
            RECORD_SEQ,
            RECORD_EXPIRES_MS
        )
    );
    // The signed message, from the documented formula with plain BLAKE3.
    let mut h = blake3::Hasher::new();
    h.update(&p);
    h.update(&(RECORD_NAME.len() as u64).to_be_bytes());
    h.update(RECORD_NAME);
    h.update(&(RECORD_VALUE.len() as u64).to_be_bytes());
    h.update(RECORD_VALUE);
    h.update(&RECORD_SEQ.to_be_bytes());
    h.update(&RECORD_EXPIRES_MS.to_be_bytes());
    let mut message = b"covey/v1/dht-record".to_vec();
    message.extend_from_slice(h.finalize().as_bytes());
    assert_eq!(message, doc_vector("dht.record.signing-message"));
    let signature: [u8; 64] = doc_vector("dht.record.signature").try_into().unwrap();
    assert_eq!(record.signature, signature);
    let key = iroh::PublicKey::from_bytes(&p.clone().try_into().unwrap()).unwrap();
    key.verify(&message, &iroh::Signature::from_bytes(&signature))
        .expect("the record signature verifies");
    // Valid an hour before it expires; any change to a signed field breaks it.
    let limits = RecordLimits::default();
    let now = RECORD_EXPIRES_MS - 3_600_000;
    record.validate(now, &limits).expect("valid record");
    for tamper in [
        |r: &mut Record| r.seq += 1,
        |r: &mut Record| r.expires_at_ms += 1,
        |r: &mut Record| r.value.push(b'!'),
        |r: &mut Record| r.name.push(b'!'),
    ] {
        let mut r = record.clone();
        tamper(&mut r);
        assert!(r.validate(now, &limits).is_err());
    }
    assert!(
        record.validate(RECORD_EXPIRES_MS, &limits).is_err(),
        "expired"
    );

    // The provider record: P's own announcement, nothing sealed.
    let provider: ProviderRecord =
        postcard::from_bytes(&doc_vector("dht.provider-record")).unwrap();
    assert_eq!(provider, f.provider);
    assert_eq!(provider.provider.to_vec(), p);
    assert_eq!(provider.key.to_vec(), doc_vector("dht.app-provider-key"));
    assert_eq!(provider.expires_at_ms, PROVIDER_EXPIRES_MS);
    assert!(provider.sealed.is_empty());
    let mut message = b"covey/v2/dht-provider".to_vec();
    message.extend_from_slice(&provider.key);
    message.extend_from_slice(&provider.provider);
    message.extend_from_slice(&PROVIDER_EXPIRES_MS.to_be_bytes());
    message.extend_from_slice(&0u64.to_be_bytes());
    assert_eq!(message, doc_vector("dht.provider.signing-message"));
    assert_eq!(message.len(), 101);
    let signature: [u8; 64] = doc_vector("dht.provider.signature").try_into().unwrap();
    assert_eq!(provider.signature, signature);
    key.verify(&message, &iroh::Signature::from_bytes(&signature))
        .expect("the provider signature verifies");
    provider
        .validate(PROVIDER_EXPIRES_MS - 3_600_000, &limits)
        .expect("valid provider record");
    assert!(
        provider
            .validate(
                PROVIDER_EXPIRES_MS - limits.max_provider_ttl_ms - 1,
                &limits
            )
            .is_err(),
        "an expiry too far ahead"
    );
}

#[test]
fn dht_record_layout_tables_match_the_vectors() {
    let f = dht_fixture();
    fn pc<T: Serialize>(v: &T) -> Vec<u8> {
        postcard::to_stdvec(v).unwrap()
    }
    let r = &f.record;
    let p = &f.announcement;
    // Each field's encoding, as postcard writes it on its own.
    let record_fields: Vec<(&str, Vec<u8>)> = vec![
        ("publisher", pc(&r.publisher)),
        ("name", pc(&r.name)),
        ("value", pc(&r.value)),
        ("seq", pc(&r.seq)),
        ("expires_at_ms", pc(&r.expires_at_ms)),
        ("signature", pc(&r.signature)),
    ];
    let provider_fields: Vec<(&str, Vec<u8>)> = vec![
        ("key", pc(&p.key)),
        ("provider", pc(&p.provider)),
        ("expires_at_ms", pc(&p.expires_at_ms)),
        ("sealed", pc(&p.sealed)),
        ("signature", pc(&p.signature)),
    ];
    for (table_name, vector, debug, fields) in [
        ("dht-record", "dht.record", format!("{r:?}"), record_fields),
        (
            "dht-provider-record",
            "rendezvous.record",
            format!("{p:?}"),
            provider_fields,
        ),
    ] {
        let rows = table(table_name);
        assert_eq!(rows[0][..2], ["field", "type"]);
        let names: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
        assert_eq!(names, debug_fields(&debug), "{table_name}: fields in order");
        // Walk the vector by the documented types; each field holds its value's encoding.
        let bytes = doc_vector(vector);
        let mut at = 0;
        for (row, (name, want)) in rows[1..].iter().zip(&fields) {
            assert_eq!(row[0], *name, "{table_name}");
            let start = at;
            match row[1].as_str() {
                "[u8; 32]" => at += 32,
                "u64" => {
                    read_varint(&bytes, &mut at);
                }
                "bytes" => {
                    let n = read_varint(&bytes, &mut at) as usize;
                    at += n;
                }
                other => panic!("{table_name}: unknown type {other}"),
            }
            assert_eq!(&bytes[start..at], &want[..], "{table_name}: {name}");
        }
        assert_eq!(
            rows.len() - 1,
            fields.len(),
            "{table_name}: one row per field"
        );
        assert_eq!(at, bytes.len(), "{table_name}: the fields fill the vector");
    }
    // The signature is always the count 64 (`40`) and 64 bytes.
    assert_eq!(pc(&r.signature)[0], 0x40);
    assert_eq!(pc(&r.signature).len(), 65);
}

#[test]
fn dht_key_derivations_follow_the_documented_formula() {
    // Key::derive recomputed with plain BLAKE3.
    let derive = |label: &[u8], parts: &[&[u8]]| {
        let mut h = blake3::Hasher::new();
        h.update(&(label.len() as u64).to_be_bytes());
        h.update(label);
        for p in parts {
            h.update(&(p.len() as u64).to_be_bytes());
            h.update(p);
        }
        h.finalize().as_bytes().to_vec()
    };
    let p = doc_vector("dht.node-p");
    assert_eq!(
        derive(b"covey/v1/dht-record-key", &[&p, RECORD_NAME]),
        doc_vector("dht.record-key")
    );
    let app = doc_vector("rendezvous.key");
    assert_eq!(
        derive(b"covey/v1/dht-provider-key", &[&app]),
        doc_vector("rendezvous.provider-key")
    );
    assert_eq!(
        derive(b"covey/v1/dht-provider-key", &[APP_PROVIDER_KEY]),
        doc_vector("dht.app-provider-key")
    );
    // And the code's own helpers agree.
    let p32: [u8; 32] = p.clone().try_into().unwrap();
    assert_eq!(
        dht_record::record_key(&p32, RECORD_NAME).0.to_vec(),
        doc_vector("dht.record-key")
    );
    assert_eq!(
        Key::derive(b"x", &[b"a", b"bc"]).0.to_vec(),
        derive(b"x", &[b"a", b"bc"])
    );
    // Length prefixes keep part boundaries apart.
    assert_ne!(
        Key::derive(b"x", &[b"ab", b"c"]),
        Key::derive(b"x", &[b"a", b"bc"])
    );
}

#[test]
fn rendezvous_vectors_follow_the_documented_derivation() {
    let keys = GroupKeys::from_root(&Secret32::from_bytes(RENDEZVOUS_ROOT));
    let secret = doc_vector("rendezvous.secret");
    assert_eq!(keys.rendezvous_secret.expose().to_vec(), secret);
    assert_eq!(
        kdf::derive(
            &Secret32::from_bytes(RENDEZVOUS_ROOT),
            kdf::LABEL_RENDEZVOUS
        )
        .expose()
        .to_vec(),
        secret
    );
    let mut out = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, &RENDEZVOUS_ROOT)
        .expand(b"covey/v1/rendezvous", &mut out)
        .unwrap();
    assert_eq!(out.to_vec(), secret);
    let secret32: [u8; 32] = secret.try_into().unwrap();
    let key = blake3::keyed_hash(&secret32, &RENDEZVOUS_WINDOW.to_be_bytes());
    assert_eq!(key.as_bytes().to_vec(), doc_vector("rendezvous.key"));
    assert_eq!(
        keys.rendezvous_key(RENDEZVOUS_WINDOW).to_vec(),
        doc_vector("rendezvous.key")
    );
    assert_eq!(
        rendezvous_window(RENDEZVOUS_WINDOW * RENDEZVOUS_WINDOW_MS),
        RENDEZVOUS_WINDOW
    );
    assert_eq!(
        rendezvous_window((RENDEZVOUS_WINDOW + 1) * RENDEZVOUS_WINDOW_MS - 1),
        RENDEZVOUS_WINDOW
    );
    assert_ne!(
        keys.rendezvous_key(RENDEZVOUS_WINDOW + 1),
        key.as_bytes()[..]
    );
    // The provider key of the rendezvous key, through the code's helper.
    assert_eq!(
        dht_record::provider_key(&keys.rendezvous_key(RENDEZVOUS_WINDOW))
            .0
            .to_vec(),
        doc_vector("rendezvous.provider-key")
    );
}

/// Whether `needle` occurs in `haystack`.
fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn rendezvous_announcement_vectors_follow_the_documented_derivation() {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let f = dht_fixture();
    let secret: [u8; 32] = doc_vector("rendezvous.secret").try_into().unwrap();
    let p = doc_vector("dht.node-p");
    let window = RENDEZVOUS_WINDOW.to_be_bytes();

    // The identity: its seed is the keyed hash of the label, the window and P; the Ed25519
    // key of that seed (computed here with ed25519-dalek) is the record's provider.
    assert_eq!(RENDEZVOUS_IDENTITY_LABEL, b"covey/v2/rendezvous-identity");
    let seed = blake3::keyed_hash(&secret, &[RENDEZVOUS_IDENTITY_LABEL, &window, &p].concat());
    assert_eq!(
        seed.as_bytes().to_vec(),
        doc_vector("rendezvous.identity-seed")
    );
    let provider = doc_vector("rendezvous.provider");
    assert_eq!(
        ed25519_dalek::SigningKey::from_bytes(seed.as_bytes())
            .verifying_key()
            .to_bytes()
            .to_vec(),
        provider
    );
    assert_ne!(provider, p, "the provider is not P");

    // The seal key, and the associated data: provider key, provider, expiry.
    assert_eq!(RENDEZVOUS_SEAL_LABEL, b"covey/v2/rendezvous-seal");
    let seal_key = blake3::keyed_hash(&secret, &[RENDEZVOUS_SEAL_LABEL, &window].concat());
    assert_eq!(
        seal_key.as_bytes().to_vec(),
        doc_vector("rendezvous.seal-key")
    );
    let provider_key = doc_vector("rendezvous.provider-key");
    let associated = [
        &provider_key[..],
        &provider[..],
        &PROVIDER_EXPIRES_MS.to_be_bytes(),
    ]
    .concat();
    assert_eq!(associated, doc_vector("rendezvous.associated-data"));
    assert_eq!(associated.len(), ASSOCIATED_DATA_LEN);

    // The address is P's hint, the one entry of the hint list.
    let address = doc_vector("rendezvous.address");
    assert_eq!(
        postcard::from_bytes::<EndpointAddr>(&address).unwrap(),
        f.p_addr
    );
    assert_eq!(&doc_vector("dht.hints")[1..], &address[..]);

    // Sealed: the nonce, then XChaCha20-Poly1305 of the address (computed here with the
    // cipher crate directly, both ways).
    let sealed = doc_vector("rendezvous.sealed");
    assert_eq!(&sealed[..NONCE_LEN], &RENDEZVOUS_NONCE);
    assert_eq!(sealed.len(), address.len() + SEALED_OVERHEAD);
    // As the document's prose says: a 41-byte address, 81 sealed bytes (the varint `51`).
    assert_eq!((address.len(), sealed.len()), (41, 81));
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(&chacha20poly1305::Key::from(
        *seal_key.as_bytes(),
    ));
    let nonce = chacha20poly1305::XNonce::from(RENDEZVOUS_NONCE);
    let opened = cipher
        .decrypt(
            &nonce,
            Payload {
                msg: &sealed[NONCE_LEN..],
                aad: &associated,
            },
        )
        .expect("the documented blob opens under the documented key");
    assert_eq!(opened, address);
    let resealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &address,
                aad: &associated,
            },
        )
        .unwrap();
    assert_eq!(&sealed[NONCE_LEN..], &resealed[..]);

    // The record: its signing message (the sealed bytes after their u64 BE length) and its
    // signature by the provider key.
    let message = [
        &b"covey/v2/dht-provider"[..],
        &provider_key,
        &provider,
        &PROVIDER_EXPIRES_MS.to_be_bytes(),
        &(sealed.len() as u64).to_be_bytes(),
        &sealed,
    ]
    .concat();
    assert_eq!(message, doc_vector("rendezvous.signing-message"));
    let record: ProviderRecord = postcard::from_bytes(&doc_vector("rendezvous.record")).unwrap();
    assert_eq!(record, f.announcement);
    assert_eq!(
        (&record.key[..], &record.provider[..], record.expires_at_ms),
        (&provider_key[..], &provider[..], PROVIDER_EXPIRES_MS)
    );
    assert_eq!(record.sealed, sealed);
    let signature: [u8; 64] = record.signature.clone().try_into().unwrap();
    iroh::PublicKey::from_bytes(&provider.clone().try_into().unwrap())
        .unwrap()
        .verify(&message, &iroh::Signature::from_bytes(&signature))
        .expect("the announcement's signature verifies under its provider");
    let limits = RecordLimits::default();
    record
        .validate(PROVIDER_EXPIRES_MS - 3_600_000, &limits)
        .expect("a valid provider record");

    // Nothing in the record names P or its address in the clear.
    let bytes = doc_vector("rendezvous.record");
    assert!(!contains_bytes(&bytes, &p));
    assert!(!contains_bytes(&bytes, &address));
    assert!(!contains_bytes(&bytes, &[127, 0, 0, 1]));
    assert!(!contains_bytes(&bytes, &doc_vector("rendezvous.key")));

    // The code's helpers agree; the blob opens under this window's key of this group only.
    let keys = &f.rendezvous;
    let ad: [u8; ASSOCIATED_DATA_LEN] = associated.clone().try_into().unwrap();
    assert_eq!(
        rendezvous::open(&keys.rendezvous_seal_key(RENDEZVOUS_WINDOW), &sealed, &ad)
            .unwrap()
            .as_slice(),
        &address[..]
    );
    let other_group = GroupKeys::from_root(&Secret32::from_bytes([0x02; 32]));
    for wrong in [
        keys.rendezvous_seal_key(RENDEZVOUS_WINDOW + 1),
        other_group.rendezvous_seal_key(RENDEZVOUS_WINDOW),
    ] {
        assert!(rendezvous::open(&wrong, &sealed, &ad).is_err());
    }
    // The next window: another provider for P, another seal key.
    assert_ne!(
        keys.rendezvous_identity(RENDEZVOUS_WINDOW + 1, &f.p)
            .public()
            .as_bytes()
            .to_vec(),
        provider
    );
    assert_ne!(
        keys.rendezvous_seal_key(RENDEZVOUS_WINDOW + 1)
            .expose()
            .to_vec(),
        doc_vector("rendezvous.seal-key")
    );
}

#[test]
fn rendezvous_window_table_follows_the_rule() {
    let skew_ms = node_constants()["CLOCK_SKEW_MS"];
    let rows = table("rendezvous-windows");
    assert_eq!(
        rows[0][..3],
        ["now (unix ms)", "announced under", "searched under"]
    );
    let list = |cell: &str| -> Vec<u64> {
        cell.split(',')
            .map(|n| n.trim().parse().unwrap_or_else(|e| panic!("{cell}: {e}")))
            .collect()
    };
    for row in &rows[1..] {
        let now: u64 = first_token(&row[0]).parse().unwrap();
        let mut announce = vec![
            rendezvous_window(now.saturating_sub(skew_ms)),
            rendezvous_window(now),
            rendezvous_window(now + skew_ms),
        ];
        announce.dedup();
        assert_eq!(list(&row[1]), announce, "announce windows at {now}");
        assert_eq!(
            list(&row[2]),
            vec![rendezvous_window(now)],
            "search at {now}"
        );
    }
    assert!(
        rows.len() >= 4,
        "a row each for the start, middle and end of a window"
    );
}

#[test]
fn dht_hints_and_frame_follow_the_documented_layout() {
    let f = dht_fixture();
    let hints = doc_vector("dht.hints");
    let decoded: Vec<EndpointAddr> = postcard::from_bytes(&hints).unwrap();
    assert_eq!(decoded, f.hints);
    assert_eq!(decoded[0].id.as_bytes().to_vec(), doc_vector("dht.node-p"));
    assert_eq!(
        decoded[0].ip_addrs().collect::<Vec<_>>(),
        vec![&HINT_ADDR.parse::<std::net::SocketAddr>().unwrap()]
    );
    // Count, id, address count, then `Ip` (1), `V4` (0), the octets and the port varint.
    assert_eq!(hints[0], 1);
    assert_eq!(&hints[33..], &[1, 1, 0, 127, 0, 0, 1, 0x92, 0x21]);

    // The frame, split the way the driver reads it.
    let frame = doc_vector("dht.frame");
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let rest = &frame[4..];
    let message_len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
    let (message, tail) = rest[4..].split_at(message_len);
    assert_eq!(
        dht_msg::decode(message).unwrap(),
        DhtMessage::Request {
            id: 1,
            body: Request::Ping
        }
    );
    assert_eq!(message, doc_vector("dht.ping"));
    assert_eq!(tail, &hints[..]);
    // Bytes after the hints are ignored by the hint decoder (postcard's `from_bytes`).
    let mut padded = hints.clone();
    padded.extend_from_slice(&[0xff; 3]);
    assert_eq!(
        postcard::from_bytes::<Vec<EndpointAddr>>(&padded).unwrap(),
        f.hints
    );
    // No hints at all (an empty tail) is not a hint list.
    assert!(postcard::from_bytes::<Vec<EndpointAddr>>(&[]).is_err());
}

#[test]
fn transport_address_table_matches_postcard() {
    let rows = table("dht-transport-addr");
    assert_eq!(rows[0][..2], ["address", "encoding"]);
    let mut kinds = BTreeSet::new();
    for row in &rows[1..] {
        let (kind, value) = row[0].split_once(' ').expect("<kind> <value>");
        let addr = match kind {
            "Relay" => TransportAddr::Relay(value.parse().unwrap()),
            "Ip" => TransportAddr::Ip(value.parse().unwrap()),
            other => panic!("unknown address kind {other}"),
        };
        kinds.insert(kind.to_owned());
        let bytes = unhex(&row[1], &row[0]);
        assert_eq!(
            hex::encode(postcard::to_stdvec(&addr).unwrap()),
            hex::encode(&bytes),
            "{}",
            row[0]
        );
        assert_eq!(
            postcard::from_bytes::<TransportAddr>(&bytes).unwrap(),
            addr,
            "{}",
            row[0]
        );
    }
    assert_eq!(kinds.len(), 2);
}

#[test]
fn dht_negative_vectors_fail_to_decode() {
    let negatives: BTreeMap<String, Vec<u8>> = hex_blocks("negative")
        .into_iter()
        .filter(|(k, _)| k.starts_with("dht."))
        .collect();
    assert!(negatives.len() >= 10);
    for (name, bytes) in &negatives {
        let decoded = dht_msg::decode(bytes);
        assert!(decoded.is_err(), "negative {name} decoded to {decoded:?}");
    }
    // The refusals are the documented ones.
    let too_large = |name: &str, what: &'static str, len: usize, limit: usize| {
        assert_eq!(
            dht_msg::decode(&negatives[name]),
            Err(WireError::TooLarge { what, len, limit }),
            "{name}"
        );
    };
    too_large(
        "dht.name-over-limit",
        "record name",
        MAX_NAME_LEN + 1,
        MAX_NAME_LEN,
    );
    too_large(
        "dht.value-over-ceiling",
        "record value",
        MAX_VALUE_CEILING + 1,
        MAX_VALUE_CEILING,
    );
    too_large(
        "dht.providers-over-limit",
        "provider list",
        MAX_PROVIDERS_PER_RESPONSE + 1,
        MAX_PROVIDERS_PER_RESPONSE,
    );
    too_large(
        "dht.message-over-limit",
        "dht message",
        MAX_MESSAGE_BYTES + 1,
        MAX_MESSAGE_BYTES,
    );
    too_large(
        "dht.provider-sealed-over-limit",
        "provider sealed bytes",
        MAX_SEALED_BYTES + 1,
        MAX_SEALED_BYTES,
    );
    // One sealed byte fewer decodes (the signature no longer verifies, which is the
    // receiver's validity check, not the decoder's).
    let mut at_limit = dht_fixture().announcement.clone();
    at_limit.sealed = vec![0x5e; MAX_SEALED_BYTES];
    let add = DhtMessage::Request {
        id: 5,
        body: Request::AddProvider { record: at_limit },
    };
    assert_eq!(dht_msg::decode(&dht_encode(&add)), Ok(add));
    // Each is one step from a valid message.
    let store = doc_vector("dht.store");
    for cut in 0..store.len() {
        assert!(dht_msg::decode(&store[..cut]).is_err(), "prefix {cut}");
    }
    let trailing = &negatives["dht.trailing-byte"];
    assert_eq!(
        dht_msg::decode(&trailing[..trailing.len() - 1]),
        Ok(DhtMessage::Request {
            id: 1,
            body: Request::Ping
        })
    );
    for ok in [
        &[1u8, 7, 3, 0, 1, 2, 0][..], // refusal 2 (Full)
        &[1, 5, 4, 1],                // accepted: true
        &[1, 3, 2, 0, 0],             // record: None, no contacts
        &[1, 2, 1, 0],                // no contacts
    ] {
        assert!(dht_msg::decode(ok).is_ok(), "{ok:?}");
    }
    // 64 zero records pass the count check and fail only on their empty signatures.
    assert!(matches!(
        dht_msg::decode(&zero_providers(MAX_PROVIDERS_PER_RESPONSE)),
        Err(WireError::Malformed(_))
    ));
    let f = dht_fixture();
    let at_limits = Record {
        name: vec![b'n'; MAX_NAME_LEN],
        value: vec![0; MAX_VALUE_CEILING],
        ..f.record.clone()
    };
    let bytes = postcard::to_stdvec(&DhtMessage::Request {
        id: 4,
        body: Request::Store { record: at_limits },
    })
    .unwrap();
    assert!(
        dht_msg::decode(&bytes).is_ok(),
        "name and value at their limits"
    );
    let sixty_four = DhtMessage::Response {
        id: 6,
        body: Response::Providers {
            providers: vec![f.provider.clone(); MAX_PROVIDERS_PER_RESPONSE],
            contacts: vec![],
        },
    };
    assert!(dht_msg::decode(&dht_encode(&sixty_four)).is_ok());
    // Contact lists are bounded only by the message size: more than k still decode.
    let many = DhtMessage::Response {
        id: 2,
        body: Response::Nodes {
            contacts: vec![Key([9; 32]); 2000],
        },
    };
    assert!(dht_msg::decode(&dht_encode(&many)).is_ok());
}

#[test]
fn dht_variant_table_matches_the_encoding() {
    let rows = table("dht-variants");
    assert_eq!(rows[0][..4], ["type", "index", "variant", "fields"]);
    let mut want: Vec<(String, u8, String, Vec<String>)> = Vec::new();
    let mut add = |ty: &str, bytes: Vec<u8>, debug: String| {
        let variant = debug_variant(&debug);
        if !want.iter().any(|(t, _, v, _)| t == ty && *v == variant) {
            want.push((ty.to_owned(), bytes[0], variant, debug_fields(&debug)));
        }
    };
    for message in [
        DhtMessage::Request {
            id: 0,
            body: Request::Ping,
        },
        DhtMessage::Response {
            id: 0,
            body: Response::Pong,
        },
    ] {
        add("Message", dht_encode(&message), format!("{message:?}"));
    }
    for (_, message) in dht_messages() {
        match message {
            DhtMessage::Request { body, .. } => add(
                "Request",
                postcard::to_stdvec(&body).unwrap(),
                format!("{body:?}"),
            ),
            DhtMessage::Response { body, .. } => add(
                "Response",
                postcard::to_stdvec(&body).unwrap(),
                format!("{body:?}"),
            ),
        }
    }
    for refusal in [Refusal::Invalid, Refusal::Conflict, Refusal::Full] {
        add(
            "Refusal",
            postcard::to_stdvec(&refusal).unwrap(),
            format!("{refusal:?}"),
        );
    }
    let order = ["Message", "Request", "Response", "Refusal"];
    want.sort_by_key(|w| (order.iter().position(|o| *o == w.0), w.1));
    let got: Vec<(String, u8, String, Vec<String>)> = rows[1..]
        .iter()
        .map(|r| {
            let fields = if r[3] == "—" {
                Vec::new()
            } else {
                r[3].split(',')
                    .map(|f| f.split(':').next().unwrap().trim().to_owned())
                    .collect()
            };
            (r[0].clone(), r[1].parse().unwrap(), r[2].clone(), fields)
        })
        .collect();
    assert_eq!(got, want);
}

/// The private constants of the DHT driver and the rendezvous task, read from their source:
/// `const NAME: T = <expr>;` (optionally `pub` or `pub(super)`) with `<expr>` a sum of
/// products of integers, earlier constants, `RENDEZVOUS_WINDOW_MS`, `MAX_MESSAGE_BYTES` and
/// `Duration::from_secs(n)` or `from_millis(n)` (as ms).
fn node_constants() -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    out.insert("MAX_MESSAGE_BYTES".into(), MAX_MESSAGE_BYTES as u64);
    out.insert(
        "crate::group::RENDEZVOUS_WINDOW_MS".into(),
        RENDEZVOUS_WINDOW_MS,
    );
    for path in [DRIVER_PATH, RENDEZVOUS_PATH] {
        let source =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        for line in source.lines() {
            let line = line.trim();
            let line = line
                .strip_prefix("pub(super) ")
                .or_else(|| line.strip_prefix("pub "))
                .unwrap_or(line);
            let Some(rest) = line.strip_prefix("const ") else {
                continue;
            };
            let Some((name, rest)) = rest.split_once(':') else {
                continue;
            };
            let Some((_, expr)) = rest.split_once('=') else {
                continue;
            };
            let expr = expr.trim().trim_end_matches(';');
            let factor = |f: &str| -> Option<u64> {
                let f = f.trim();
                let call = |prefix: &str| {
                    f.strip_prefix(prefix)
                        .and_then(|n| n.strip_suffix(')'))
                        .and_then(|n| n.replace('_', "").parse::<u64>().ok())
                };
                if let Some(secs) = call("Duration::from_secs(") {
                    return Some(secs * 1000);
                }
                if let Some(ms) = call("Duration::from_millis(") {
                    return Some(ms);
                }
                f.replace('_', "")
                    .parse()
                    .ok()
                    .or_else(|| out.get(f).copied())
            };
            let value: Option<u64> = expr
                .split('+')
                .map(|term| term.split('*').map(factor).product::<Option<u64>>())
                .sum();
            if let Some(v) = value {
                out.insert(name.trim().to_owned(), v);
            }
        }
    }
    out
}

#[test]
fn dht_constants_table_matches_the_code() {
    let config = DhtConfig::default();
    let limits = RecordLimits::default();
    let quotas = RecordQuotas::default();
    let settings = DhtSettings::default();
    let driver = node_constants();
    let from_driver = |name: &str| -> String {
        driver
            .get(name)
            .unwrap_or_else(|| panic!("{DRIVER_PATH} or {RENDEZVOUS_PATH} has no constant {name}"))
            .to_string()
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let want: BTreeMap<&str, String> = [
        ("DHT_ALPN", text(DHT_ALPN)),
        ("MAX_MESSAGE_BYTES", MAX_MESSAGE_BYTES.to_string()),
        (
            "MAX_PROVIDERS_PER_RESPONSE",
            MAX_PROVIDERS_PER_RESPONSE.to_string(),
        ),
        ("MAX_NAME_LEN", MAX_NAME_LEN.to_string()),
        ("MAX_VALUE_CEILING", MAX_VALUE_CEILING.to_string()),
        ("SIGNATURE_LEN", dht_record::SIGNATURE_LEN.to_string()),
        ("RECORD_SIGNATURE_LABEL", text(RECORD_SIGNATURE_LABEL)),
        ("PROVIDER_SIGNATURE_LABEL", text(PROVIDER_SIGNATURE_LABEL)),
        ("RECORD_KEY_LABEL", text(RECORD_KEY_LABEL)),
        ("PROVIDER_KEY_LABEL", text(PROVIDER_KEY_LABEL)),
        ("MAX_SEALED_BYTES", MAX_SEALED_BYTES.to_string()),
        ("LABEL_RENDEZVOUS", kdf::LABEL_RENDEZVOUS.to_owned()),
        ("RENDEZVOUS_IDENTITY_LABEL", text(RENDEZVOUS_IDENTITY_LABEL)),
        ("RENDEZVOUS_SEAL_LABEL", text(RENDEZVOUS_SEAL_LABEL)),
        ("RENDEZVOUS_WINDOW_MS", RENDEZVOUS_WINDOW_MS.to_string()),
        ("MAX_HINTS", from_driver("MAX_HINTS")),
        ("MAX_ADDRS_PER_HINT", from_driver("MAX_ADDRS_PER_HINT")),
        ("MAX_HINT_BYTES", from_driver("MAX_HINT_BYTES")),
        ("MAX_FRAME_BYTES", from_driver("MAX_FRAME_BYTES")),
        ("FRAME_TIMEOUT", from_driver("FRAME_TIMEOUT")),
        ("CONNECT_TIMEOUT", from_driver("CONNECT_TIMEOUT")),
        ("JOIN_REFRESH_BUCKETS", from_driver("JOIN_REFRESH_BUCKETS")),
        ("CLOCK_SKEW_MS", from_driver("CLOCK_SKEW_MS")),
        ("ANNOUNCE_TTL_MS", from_driver("ANNOUNCE_TTL_MS")),
        ("REANNOUNCE_MS", from_driver("REANNOUNCE_MS")),
        ("FIRST_RETRY_MS", from_driver("FIRST_RETRY_MS")),
        ("EXPIRY_JITTER_MS", from_driver("EXPIRY_JITTER_MS")),
        ("MAX_SEALED_ADDRS", from_driver("MAX_SEALED_ADDRS")),
        (
            "rendezvous_interval_ms",
            settings.rendezvous_interval_ms.to_string(),
        ),
        ("k", config.k.to_string()),
        ("alpha", config.alpha.to_string()),
        ("request_timeout_ms", config.request_timeout_ms.to_string()),
        (
            "refresh_interval_ms",
            config.refresh_interval_ms.to_string(),
        ),
        (
            "replicate_interval_ms",
            config.replicate_interval_ms.to_string(),
        ),
        ("provider_ttl_ms", config.provider_ttl_ms.to_string()),
        (
            "reprovide_interval_ms",
            config.reprovide_interval_ms.to_string(),
        ),
        ("requests_per_sec", config.requests_per_sec.to_string()),
        ("request_burst", config.request_burst.to_string()),
        ("max_value", limits.max_value.to_string()),
        ("max_ttl_ms", limits.max_ttl_ms.to_string()),
        (
            "max_provider_ttl_ms",
            limits.max_provider_ttl_ms.to_string(),
        ),
        (
            "max_providers_per_key",
            quotas.max_providers_per_key.to_string(),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(config.limits, limits, "the DHT's default limits");
    assert_eq!(
        settings.protocol, config,
        "the node runs the DHT's defaults"
    );
    assert_eq!(settings.quotas, quotas, "the node's default store quotas");
    assert!(settings.rendezvous, "rendezvous is on by default");
    let rows = table("dht-constants");
    assert_eq!(rows[0][0], "constant");
    let got: BTreeMap<&str, &str> = rows[1..]
        .iter()
        .map(|r| (r[0].as_str(), first_token(&r[1])))
        .collect();
    assert_eq!(got.len(), rows.len() - 1, "a constant is listed twice");
    let want_ref: BTreeMap<&str, &str> = want.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(got, want_ref);
    assert_eq!(
        driver["MAX_FRAME_BYTES"],
        (4 + MAX_MESSAGE_BYTES) as u64 + driver["MAX_HINT_BYTES"]
    );
}
