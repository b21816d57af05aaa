//! Pins `docs/PROTOCOL.md` to the code, so the document a second implementation is written
//! from can never drift from what this one sends.
//!
//! The document is read at test time. Machine-readable parts of it:
//!
//! - fenced blocks ` ```hex vector=<name> ` hold a byte string that must equal what the code
//!   produces from the fixed inputs below, and must decode back to those inputs;
//! - fenced blocks ` ```hex negative=<name> ` hold a frame that must fail to decode (or a
//!   length prefix that must fail the frame limit);
//! - the fenced block ` ```text encoding-examples ` lists postcard encodings of single values,
//!   one per line: `<type> <value> => <hex>` (encodes to and decodes from), `<type> <value> <=
//!   <hex>` (decodes from, never emitted) and `<type> ! <hex>` (must not decode);
//! - tables preceded by `<!-- table: <name> -->` (constants, message variants, features,
//!   refuse codes, the entry header layout) are compared with the code cell by cell.
//!
//! A mismatch fails with the block the document should contain, ready to paste.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::OnceLock;

use covey_core::crypto::aead::{NONCE_LEN, TAG_LEN};
use covey_core::crypto::{Secret32, kdf};
use covey_core::group::GroupKeys;
use covey_core::node::{DEFAULT_MAX_PAYLOAD, FRAME_OVERHEAD, SYNC_ALPN};
use covey_core::sync::limits::RateLimits;
use covey_core::sync::proto::{FEATURES, MAX_SEQ, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, Timers};
use covey_core::sync::verify::MAX_LAMPORT;
use covey_core::wire::WireError;
use covey_core::wire::entry::{
    ENTRY_VERSION, EntryHeader, EntryKind, HEADER_LEN, Id32, SIGNATURE_LABEL, SIGNATURE_LEN,
    SignedEntry,
};
use covey_core::wire::frame::{self, Head, LENGTH_PREFIX, Message, RefuseCode};
use iroh::SecretKey;
use serde::Serialize;
use serde::de::DeserializeOwned;

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

fn unhex(s: &str, context: &str) -> Vec<u8> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&compact).unwrap_or_else(|e| panic!("{context}: not hex ({e}): {compact}"))
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
const REFUSE_REASON: &str = "incompatible protocol versions: we speak 1..=1, peer speaks 9..=9";

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
        let tag = keys.session_tag(&a, &b);
        let header = EntryHeader {
            version: ENTRY_VERSION,
            kind: EntryKind::Data,
            group_id: keys.id.0,
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
            header,
            entry,
        }
    })
}

/// Every message variant in declaration order: (vector name, variant index, input).
fn messages(f: &Fixture) -> Vec<(&'static str, u8, Message)> {
    vec![
        (
            "frame.hello",
            0,
            Message::Hello {
                version: 1,
                min_version: 1,
                features: vec!["run-signatures".into(), "acks".into(), "keepalive".into()],
            },
        ),
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
        ("unknown-variant", with_prefix(&[8])),
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
    v.into_iter().map(|(k, b)| (k.to_owned(), b)).collect()
}

/// The doc block for a vector, as it should read.
fn block_text(kind: &str, name: &str, bytes: &[u8]) -> String {
    let hex = hex::encode(bytes);
    let lines: Vec<&str> = hex
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
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
        (0..8).collect::<BTreeSet<u8>>(),
        "a vector for every variant"
    );
}

#[test]
fn frame_vectors_have_the_documented_field_layout() {
    // Spot checks of the layouts the tables describe, on the doc's bytes.
    let f = fixture();
    let hello = doc_vector("frame.hello");
    assert_eq!(&hello[..4], &[0, 0, 0, 34], "prefix");
    assert_eq!(
        &hello[4..8],
        &[0x00, 0x01, 0x01, 0x03],
        "variant, version, min, count"
    );
    assert_eq!(hello[8] as usize, "run-signatures".len());
    assert_eq!(&hello[9..23], b"run-signatures");

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
    let valid_hello = [0, 0x7f, 1, 0];
    assert!(frame::decode(&valid_hello).is_ok());
    let valid_refuse = [4, 1, 1, b'x'];
    assert!(frame::decode(&valid_refuse).is_ok());
    let unknown = &negatives["unknown-variant"][LENGTH_PREFIX..];
    let pong = [7, 1];
    assert!(frame::decode(&pong).is_ok(), "7 is the last variant");
    assert_eq!(unknown, &[8]);
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
    refused(patched(0, &[2]), max_ct, "version 2");
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
    // Either order of the pair gives the same tag; the group id never appears.
    let keys = &fixture().keys;
    let (a, b): (Id32, Id32) = (a.try_into().unwrap(), b.try_into().unwrap());
    assert_eq!(keys.session_tag(&a, &b), keys.session_tag(&b, &a));
    assert_ne!(keys.session_tag(&a, &b), keys.id.0);
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
        ("group_id", h.group_id.to_vec()),
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
