//! Managed groups (PROTOCOL.md, "Managed groups" and "Managed group vectors"): the control
//! payloads, a signed control entry, an epoch secret sealed to a member, the keys of a new
//! epoch, and the invite protocol's hashes and first message; and control payloads that must
//! be refused.

use covey_core::crypto::{Secret32, kdf};
use covey_core::group::GroupKeys;
use covey_core::group::control::{ControlOp, Role};
use covey_core::group::invite::{JoinRequest, confirm_mac, group_tag, secret_hash, transcript};
use covey_core::group::seal::{
    DeviceKey, epoch_context, open_epoch_secret, seal_epoch_secret_with, seal_key,
};
use covey_core::wire::entry::{ENTRY_VERSION, EntryHeader, EntryKind, Id32, SignedEntry};
use iroh::SecretKey;

use super::{BINDING, SECRET_A, SECRET_B, TIMESTAMP_MS, doc_vector, nonce};

/// The managed group's root secret.
const ROOT: [u8; 32] = [0xc3; 32];
/// A's and B's X25519 device secrets.
const X25519_A: [u8; 32] = [0xd4; 32];
const X25519_B: [u8; 32] = [0xe5; 32];
/// The secret of epoch 1.
const EPOCH_1: [u8; 32] = [0xf6; 32];
/// The ephemeral X25519 secret of the epoch block.
const EPHEMERAL: [u8; 32] = [0x07; 32];
/// The invite's id and secret.
const INVITE_ID: [u8; 16] = [0x18; 16];
const INVITE_SECRET: [u8; 16] = [0x19; 16];
/// A SPAKE2 key, for the confirmation MAC.
const SPAKE_KEY: [u8; 32] = [0x2a; 32];
/// The rendezvous window of the epoch-1 vector.
const WINDOW: u64 = 493_000;

struct Managed {
    keys: GroupKeys,
    a: Id32,
    b: Id32,
    xa: DeviceKey,
    xb: DeviceKey,
}

fn managed() -> Managed {
    let keys = GroupKeys::from_root(&Secret32::from_bytes(ROOT));
    Managed {
        keys,
        a: *SecretKey::from_bytes(&SECRET_A).public().as_bytes(),
        b: *SecretKey::from_bytes(&SECRET_B).public().as_bytes(),
        xa: DeviceKey::from_secret(&Secret32::from_bytes(X25519_A)),
        xb: DeviceKey::from_secret(&Secret32::from_bytes(X25519_B)),
    }
}

fn add_b(m: &Managed) -> ControlOp {
    ControlOp::Add {
        member: m.b,
        role: Role::Member,
        x25519: m.xb.public(),
    }
}

fn remove_b(m: &Managed) -> ControlOp {
    let block = seal_epoch_secret_with(
        &DeviceKey::from_secret(&Secret32::from_bytes(EPHEMERAL)),
        &Secret32::from_bytes(EPOCH_1),
        1,
        &m.keys.entry_group,
        &[(m.a, m.xa.public())],
    )
    .expect("seal epoch 1");
    ControlOp::Remove {
        member: m.b,
        cutoff: 0,
        epoch: block,
    }
}

fn control_entry(m: &Managed) -> SignedEntry {
    let header = EntryHeader {
        version: ENTRY_VERSION,
        kind: EntryKind::Control,
        group_ref: m.keys.entry_group,
        author: m.a,
        seq: 1,
        prev: [0; 32],
        lamport: 1,
        epoch: 0,
        timestamp_ms: TIMESTAMP_MS,
        nonce: nonce(),
    };
    SignedEntry::seal(
        header,
        &m.keys.control_key,
        &SecretKey::from_bytes(&SECRET_A),
        &add_b(m).encode(),
    )
    .expect("seal the control entry")
}

fn ephemeral_public() -> [u8; 32] {
    DeviceKey::from_secret(&Secret32::from_bytes(EPHEMERAL)).public()
}

/// The managed-group vectors, as the code computes them.
pub(super) fn managed_vectors() -> Vec<(&'static str, Vec<u8>)> {
    let m = managed();
    let epoch_1 = m.keys.at_epoch(1, &Secret32::from_bytes(EPOCH_1));
    let shared = DeviceKey::from_secret(&Secret32::from_bytes(EPHEMERAL))
        .shared(&m.xa.public())
        .expect("x25519");
    let context = epoch_context(
        &m.keys.entry_group,
        1,
        &ephemeral_public(),
        &m.a,
        &m.xa.public(),
    );
    let mut credential = INVITE_ID.to_vec();
    credential.extend_from_slice(&INVITE_SECRET);
    let t = transcript(&BINDING, &m.b, &m.a, &m.xb.public(), &credential);
    let join = JoinRequest::Link {
        invite_id: INVITE_ID,
        secret: INVITE_SECRET,
        group_tag: group_tag(&m.keys.id),
        x25519: m.xb.public(),
    };
    vec![
        ("managed.id", m.keys.id.0.to_vec()),
        ("managed.entry-group", m.keys.entry_group.to_vec()),
        ("managed.control-key", m.keys.control_key.expose().to_vec()),
        ("managed.x25519-a", m.xa.public().to_vec()),
        ("managed.x25519-b", m.xb.public().to_vec()),
        ("control.add", add_b(&m).encode()),
        ("control.entry-add", control_entry(&m).raw().to_vec()),
        ("epoch.shared-a", shared.to_vec()),
        (
            "epoch.seal-key-a",
            seal_key(&shared, &context).expect("hkdf").expose().to_vec(),
        ),
        ("control.remove", remove_b(&m).encode()),
        ("epoch.content-key-1", epoch_1.content_key.expose().to_vec()),
        (
            "epoch.rendezvous-key-1",
            epoch_1.rendezvous_key(WINDOW).to_vec(),
        ),
        ("invite.group-tag", group_tag(&m.keys.id).to_vec()),
        ("invite.secret-hash", secret_hash(&INVITE_SECRET).to_vec()),
        ("invite.transcript", t.to_vec()),
        (
            "invite.join-link",
            postcard::to_stdvec(&join).expect("postcard"),
        ),
        ("invite.confirm-mac", confirm_mac(&SPAKE_KEY, &t).to_vec()),
    ]
}

/// Control payloads that must be refused, one step from a valid one.
pub(super) fn managed_negatives() -> Vec<(&'static str, Vec<u8>)> {
    let m = managed();
    let add = add_b(&m).encode();
    let remove = remove_b(&m).encode();
    let mut trailing = add.clone();
    trailing.push(0);
    let mut bad_role = add.clone();
    bad_role[33] = 0;
    // A rotate to two recipients, B's copy listed before A's although A's id sorts first.
    let (lo, hi) = if m.a < m.b { (m.a, m.b) } else { (m.b, m.a) };
    let mut unsorted = vec![5];
    unsorted.extend_from_slice(&1u64.to_be_bytes());
    unsorted.extend_from_slice(&ephemeral_public());
    unsorted.extend_from_slice(&2u16.to_be_bytes());
    for id in [hi, lo] {
        unsorted.extend_from_slice(&id);
        unsorted.extend_from_slice(&[0u8; 48]);
    }
    let mut too_many = vec![5];
    too_many.extend_from_slice(&1u64.to_be_bytes());
    too_many.extend_from_slice(&ephemeral_public());
    too_many.extend_from_slice(&1025u16.to_be_bytes());
    vec![
        ("control.unknown-op", vec![9]),
        ("control.trailing-byte", trailing),
        ("control.truncated", remove[..remove.len() - 1].to_vec()),
        ("control.bad-role", bad_role),
        ("control.unsorted-recipients", unsorted),
        ("control.too-many-recipients", too_many),
    ]
}

#[test]
fn the_documented_control_payloads_decode_and_the_negatives_do_not() {
    let m = managed();
    assert_eq!(
        ControlOp::decode(&doc_vector("control.add")).unwrap(),
        add_b(&m)
    );
    assert_eq!(
        ControlOp::decode(&doc_vector("control.remove")).unwrap(),
        remove_b(&m)
    );
    for (name, bytes) in managed_negatives() {
        assert_eq!(
            bytes,
            super::hex_blocks("negative")[name],
            "{name} is documented"
        );
        assert!(ControlOp::decode(&bytes).is_err(), "{name} must be refused");
    }
}

#[test]
fn the_documented_control_entry_verifies_and_opens_under_the_control_key() {
    let m = managed();
    let raw = doc_vector("control.entry-add");
    let entry = SignedEntry::decode(raw, usize::MAX).expect("decode");
    assert_eq!(entry.header().kind, EntryKind::Control);
    entry.verify_signature().expect("signature");
    let payload = entry
        .open(&m.keys.control_key)
        .expect("opens under the control key");
    assert_eq!(&payload[..], &doc_vector("control.add")[..]);
    assert!(
        entry.open(&m.keys.content_key).is_err(),
        "not under the content key"
    );
}

#[test]
fn the_documented_epoch_secret_opens_for_its_recipient_only() {
    let m = managed();
    let ControlOp::Remove { epoch, .. } = ControlOp::decode(&doc_vector("control.remove")).unwrap()
    else {
        panic!("a remove")
    };
    let opened = open_epoch_secret(&m.xa, &m.a, &m.keys.entry_group, &epoch).unwrap();
    assert_eq!(opened, Some(Secret32::from_bytes(EPOCH_1)));
    assert_eq!(
        open_epoch_secret(&m.xb, &m.b, &m.keys.entry_group, &epoch).unwrap(),
        None
    );
    // The documented derivations, recomputed from their primitives.
    let shared = doc_vector("epoch.shared-a");
    assert_eq!(
        shared,
        x25519_dalek::x25519(EPHEMERAL, m.xa.public()).to_vec(),
        "X25519(ephemeral, A's key)"
    );
    let content = kdf::derive(&Secret32::from_bytes(EPOCH_1), kdf::LABEL_CONTENT_KEY);
    assert_eq!(doc_vector("epoch.content-key-1"), content.expose().to_vec());
}
