//! The simulator and the iroh transport cannot drift apart: the same scripted sessions, run
//! against a simulated node and against a real `Node` over iroh on loopback, get the same
//! frames back, in the same order, byte for byte.
//!
//! Both honest nodes have the same identity and the same group; both scripted peers have
//! the same identities and send the same frames, each after the honest node has answered
//! the one before. The scripts cover what the driver core decides: the hello and frontiers,
//! ingest followed by an ack, a replay (no frame), range batches sized to the frame limit,
//! a ping, and the refusal of a protocol violation.

use std::time::Duration;

use covey_core::crypto::kdf;
use covey_core::group::{GroupKeys, PairKeys, ProofRole};
use covey_core::sync::session::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use covey_core::testing::{Author, RawPeer, loopback_endpoint, session_binding};
use covey_core::wire::entry::Id32;
use covey_core::wire::frame::{self, Head, Message, RefuseCode};
use covey_core::{FileKeyStore, KeyStore, Node, NodeConfig};
use covey_sim::{NodeOptions, Sim, SimConfig};
use iroh::SecretKey;

const NODE_SECRET: [u8; 32] = [0x11; 32];
const PEER_A: [u8; 32] = [0x22; 32];
const PEER_B: [u8; 32] = [0x33; 32];
const AUTHOR: [u8; 32] = [0x44; 32];
const PASSPHRASE: &str = "drift test passphrase";
const GROUP_NAME: &str = "drift";
/// Large enough that three entries do not fit one frame: the range goes out in two batches.
const PAYLOAD_BYTES: usize = 400_000;
/// How long an answer may take over loopback before the honest node counts as quiet.
const QUIET: Duration = Duration::from_millis(600);
/// Virtual time the simulated node gets to answer each frame.
const SIM_STEP_MS: u64 = 300;

/// One scripted connection: the peer's secret and the frames it sends, one at a time.
struct Script {
    peer: [u8; 32],
    frames: Vec<Message>,
}

fn pair(keys: &GroupKeys, peer: &[u8; 32]) -> PairKeys {
    let node = *SecretKey::from_bytes(&NODE_SECRET).public().as_bytes();
    let peer = *SecretKey::from_bytes(peer).public().as_bytes();
    keys.pair(&node, &peer)
}

fn tag(keys: &GroupKeys, peer: &[u8; 32]) -> Id32 {
    pair(keys, peer).tag.0
}

/// Stands in a script for the peer's membership proof of the group, which depends on the
/// connection: each runner replaces it by the real proof for its connection ([`prove`]).
const PROOF_PLACEHOLDER: Id32 = [0xa5; 32];

fn prove_placeholder() -> Message {
    Message::Prove {
        proofs: vec![PROOF_PLACEHOLDER],
    }
}

/// `message` as the scripted peer sends it on a connection whose binding is `binding`: the
/// placeholder proof becomes the peer's real one.
fn prove(message: &Message, keys: &GroupKeys, peer: &[u8; 32], binding: &[u8; 32]) -> Message {
    match message {
        Message::Prove { proofs } if proofs == &[PROOF_PLACEHOLDER] => Message::Prove {
            proofs: vec![pair(keys, peer).proof(ProofRole::Dialer, binding)],
        },
        other => other.clone(),
    }
}

/// What the node sent, comparable across connections: each proof reads as whether it is the
/// node's proof of the group on this connection (`[1; 32]`) or padding (`[0; 32]`).
fn normalised(
    sent: Vec<Message>,
    keys: &GroupKeys,
    peer: &[u8; 32],
    binding: &[u8; 32],
) -> Vec<Message> {
    let node_proof = pair(keys, peer).proof(ProofRole::Acceptor, binding);
    sent.into_iter()
        .map(|m| match m {
            Message::Prove { proofs } => {
                let mut proofs: Vec<Id32> = proofs
                    .iter()
                    .map(|p| if *p == node_proof { [1; 32] } else { [0; 32] })
                    .collect();
                proofs.sort();
                Message::Prove { proofs }
            }
            other => other,
        })
        .collect()
}

fn hello() -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        features: vec!["acks".into(), "keepalive".into()],
    }
}

/// Peer A hands the node three entries of a third author (then one of them again); peer B
/// then catches up from the node, pings it, and breaks the protocol.
fn scripts(keys: &GroupKeys) -> Vec<Script> {
    let mut author = Author::new(SecretKey::from_bytes(&AUTHOR), keys.clone());
    let payload = vec![0x5a; PAYLOAD_BYTES];
    let entries: Vec<Vec<u8>> = author
        .chain(3, 1, &payload)
        .expect("forge entries")
        .into_iter()
        .map(|e| e.into_raw())
        .collect();
    let x = author.id();
    let (a, b) = (tag(keys, &PEER_A), tag(keys, &PEER_B));
    vec![
        Script {
            peer: PEER_A,
            frames: vec![
                hello(),
                prove_placeholder(),
                Message::Frontier {
                    group: a,
                    heads: vec![Head { author: x, seq: 3 }],
                },
                // Two frames: three entries would not fit one.
                Message::Entries {
                    group: a,
                    entries: entries[..2].to_vec(),
                },
                Message::Entries {
                    group: a,
                    entries: entries[2..].to_vec(),
                },
                Message::Entries {
                    group: a,
                    entries: entries[..1].to_vec(),
                },
            ],
        },
        Script {
            peer: PEER_B,
            frames: vec![
                hello(),
                prove_placeholder(),
                Message::Frontier {
                    group: b,
                    heads: vec![],
                },
                Message::Ack {
                    group: b,
                    heads: vec![Head { author: x, seq: 3 }],
                },
                Message::Ping { nonce: 7 },
                hello(),
            ],
        },
    ]
}

/// Runs the scripts against a simulated node; returns what each scripted peer received.
fn through_the_simulator(root: &covey_core::crypto::Secret32) -> Vec<Vec<Message>> {
    let mut sim = Sim::new(SimConfig::new(1));
    let group = sim.add_group_from_root(root);
    let node = sim
        .add_node(NodeOptions {
            secret: Some(NODE_SECRET),
            ..NodeOptions::default()
        })
        .expect("add node");
    sim.join(node, group).expect("join");
    let keys = sim.group_keys(&group).expect("group").clone();
    let mut received = Vec::new();
    for script in scripts(&keys) {
        let peer = sim
            .add_node(NodeOptions {
                scripted: true,
                secret: Some(script.peer),
                ..NodeOptions::default()
            })
            .expect("add scripted peer");
        let conn = sim.script_connect(peer, node).expect("connect");
        let binding = sim.script_binding(conn).expect("binding");
        sim.run_for(SIM_STEP_MS);
        for message in &script.frames {
            let message = prove(message, &keys, &script.peer, &binding);
            sim.script_send(peer, conn, &message).expect("send");
            sim.run_for(SIM_STEP_MS);
        }
        received.push(normalised(
            sim.script_received(peer, conn),
            &keys,
            &script.peer,
            &binding,
        ));
    }
    assert!(sim.errors().is_empty(), "{:?}", sim.errors());
    received
}

/// Runs the scripts against a real node over iroh on loopback.
async fn through_iroh() -> Vec<Vec<Message>> {
    let dir = tempfile::tempdir().expect("temp dir");
    FileKeyStore::new(dir.path())
        .store("device", &NODE_SECRET)
        .expect("seed the device key");
    let node = Node::open(NodeConfig::loopback(dir.path()))
        .await
        .expect("open node");
    node.join_passphrase(PASSPHRASE, GROUP_NAME)
        .await
        .expect("join");
    let root = kdf::passphrase_root(PASSPHRASE, GROUP_NAME).expect("root");
    let keys = GroupKeys::from_root(&root);
    let mut received = Vec::new();
    for script in scripts(&keys) {
        let endpoint = loopback_endpoint(SecretKey::from_bytes(&script.peer))
            .await
            .expect("raw endpoint");
        // No group naming: the frames go out with the tags the script wrote.
        let mut peer = RawPeer::connect_on(endpoint, &node, None).await;
        let binding = session_binding(&peer.conn);
        let mut got = Vec::new();
        for message in &script.frames {
            let message = prove(message, &keys, &script.peer, &binding);
            if peer.try_send(&message).await.is_err() {
                // The node ended the session; what it sent before is compared below.
                break;
            }
            got.extend(peer.drain(QUIET).await);
        }
        received.push(normalised(got, &keys, &script.peer, &binding));
        peer.close().await;
    }
    node.shutdown().await.expect("shutdown");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_and_iroh_send_the_same_frames_for_the_same_script() {
    let root = kdf::passphrase_root(PASSPHRASE, GROUP_NAME).expect("root");
    let simulated = tokio::task::spawn_blocking(move || through_the_simulator(&root))
        .await
        .expect("simulator");
    let real = through_iroh().await;
    assert_eq!(simulated.len(), real.len());
    for (i, (sim, real)) in simulated.iter().zip(&real).enumerate() {
        let encode = |ms: &[Message]| -> Vec<Vec<u8>> {
            ms.iter()
                .map(|m| frame::encode(m).expect("encode"))
                .collect()
        };
        assert_eq!(
            encode(sim),
            encode(real),
            "script {i}: the simulator sent {sim:#?}\nthe iroh node sent {real:#?}"
        );
    }
    // The scripts reached what they were written for: an ack after ingest, the catch-up in
    // two batches, the pong and the refusal.
    let kinds = |ms: &[Message]| -> Vec<&'static str> {
        ms.iter()
            .map(|m| match m {
                Message::Hello { .. } => "hello",
                Message::Frontier { .. } => "frontier",
                Message::Entries { .. } => "entries",
                Message::Announce { .. } => "announce",
                Message::Refuse { .. } => "refuse",
                Message::Ack { .. } => "ack",
                Message::Ping { .. } => "ping",
                Message::Pong { .. } => "pong",
                Message::Prove { .. } => "prove",
            })
            .collect()
    };
    assert_eq!(
        kinds(&real[0]),
        ["hello", "prove", "frontier", "ack", "ack"]
    );
    assert_eq!(
        kinds(&real[1]),
        [
            "hello", "prove", "frontier", "entries", "entries", "pong", "refuse"
        ]
    );
    // The node's answer proves the group once, padded to the minimum.
    let mut answer = vec![[0u8; 32]; 3];
    answer.push([1; 32]);
    assert_eq!(real[0][1], Message::Prove { proofs: answer });
    assert!(matches!(
        real[1].last(),
        Some(Message::Refuse { code, .. }) if *code == RefuseCode::ProtocolViolation as u16
    ));
}
