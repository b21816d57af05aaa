//! How a member of a managed group checks a batch of entries (`sync::verify::Admission`):
//! control entries must carry their own valid signature and a well-formed change; every
//! entry's author must be allowed to write at its seq by the membership folded over the
//! stored control entries and the batch's own; payloads must open under the content key of
//! their epoch, including an epoch the batch itself starts and seals to this node.

use std::collections::{BTreeMap, HashMap};

use super::GroupKeys;
use super::control::ControlOp;
use super::membership::{ControlRecord, Membership};
use super::seal::{DeviceKey, open_epoch_secret};
use crate::crypto::{Secret32, kdf};
use crate::error::{CoveyError, Result};
use crate::sync::verify::Admission;
use crate::wire::entry::{EntryKind, Id32, SignedEntry};

/// The content keys of a group, per epoch: usually one per epoch, two or more where admins
/// started the same epoch concurrently (an entry opens under one of them).
pub type EpochKeys = BTreeMap<u64, Vec<Secret32>>;

/// Reads a control entry: its own signature (strictly, never vouched for by a later entry),
/// then its payload under the group's control key, then the change.
pub fn control_record(entry: &SignedEntry, control_key: &Secret32) -> Result<ControlRecord> {
    entry.verify_signature()?;
    control_record_unverified(entry, control_key)
}

/// [`control_record`] without the signature check, for entries the store already verified.
pub fn control_record_unverified(
    entry: &SignedEntry,
    control_key: &Secret32,
) -> Result<ControlRecord> {
    let h = entry.header();
    let payload = entry.open(control_key)?;
    Ok(ControlRecord {
        id: *entry.id(),
        author: h.author,
        seq: h.seq,
        lamport: h.lamport,
        op: ControlOp::decode(&payload)?,
    })
}

/// Adds the content key of epoch `epoch` with secret `secret` to `keys`, once.
pub fn add_epoch_key(keys: &mut EpochKeys, epoch: u64, secret: &Secret32) {
    let key = kdf::derive(secret, kdf::LABEL_CONTENT_KEY);
    let at = keys.entry(epoch).or_default();
    if !at.contains(&key) {
        at.push(key);
    }
}

/// What this node brings to checking a batch of one managed group.
#[derive(Debug)]
pub struct MemberContext<'a> {
    /// The group's keys.
    pub keys: &'a GroupKeys,
    /// The group's creator, where the fold starts.
    pub creator: Id32,
    /// The control entries already stored.
    pub stored: &'a [ControlRecord],
    /// The content keys this node holds.
    pub epoch_keys: &'a EpochKeys,
    /// This node's X25519 key and id, to open epoch secrets the batch seals to it.
    pub device: &'a DeviceKey,
    /// This node's id.
    pub me: Id32,
}

/// A batch of a managed group, ready to be checked entry by entry.
#[derive(Debug)]
pub struct ManagedBatch {
    /// The membership after the stored control entries and the batch's valid ones.
    pub membership: Membership,
    epoch_keys: EpochKeys,
    /// Control entries of the batch, by id: their record, or why they are refused.
    control: HashMap<Id32, std::result::Result<ControlRecord, String>>,
}

impl ManagedBatch {
    /// Reads the control entries among `raws` (only those: the kind byte is looked at
    /// first, so data entries cost nothing here) and folds them with the stored ones.
    pub fn new(ctx: &MemberContext<'_>, raws: &[Vec<u8>], max_ciphertext: usize) -> Self {
        let mut control = HashMap::new();
        let mut records = ctx.stored.to_vec();
        let mut epoch_keys = ctx.epoch_keys.clone();
        for raw in raws.iter().filter(|r| r.get(1) == Some(&1)) {
            let Ok(entry) = SignedEntry::decode(raw.clone(), max_ciphertext) else {
                continue;
            };
            if entry.header().kind != EntryKind::Control {
                continue;
            }
            let read = control_record(&entry, &ctx.keys.control_key)
                .and_then(|record| {
                    // A copy of a new epoch secret addressed to this node must open: one that
                    // does not (sealed to another key, or tampered with) is refused rather than
                    // stored where it would leave this node without the epoch.
                    if let Some(block) = record.op.epoch_block()
                        && let Some(secret) =
                            open_epoch_secret(ctx.device, &ctx.me, &ctx.keys.entry_group, block)?
                    {
                        add_epoch_key(&mut epoch_keys, block.epoch, &secret);
                    }
                    Ok(record)
                })
                .map_err(|e| e.to_string());
            if let Ok(record) = &read {
                records.push(record.clone());
            }
            control.insert(*entry.id(), read);
        }
        let membership = Membership::fold(ctx.creator, &records);
        Self {
            membership,
            epoch_keys,
            control,
        }
    }

    /// The highest epoch an entry of the batch may carry: the membership's, or the highest
    /// this node holds a key for.
    pub fn max_epoch(&self) -> u64 {
        let held = self.epoch_keys.keys().next_back().copied().unwrap_or(0);
        held.max(self.membership.epoch())
    }
}

impl Admission for ManagedBatch {
    fn refuse(&self, entry: &SignedEntry) -> Option<(&'static str, String)> {
        let h = entry.header();
        if h.kind == EntryKind::Control {
            match self.control.get(entry.id()) {
                Some(Ok(_)) => {}
                Some(Err(why)) => {
                    return Some(("bad-control", format!("control entry refused: {why}")));
                }
                None => {
                    return Some((
                        "bad-control",
                        "control entry was not read with its batch".to_owned(),
                    ));
                }
            }
        }
        if !self.membership.may_write(&h.author, h.seq) {
            return Some((
                NOT_A_MEMBER,
                format!(
                    "author {} seq {} is not a member of the group at that seq (never added, or removed before it)",
                    hex::encode(&h.author[..4]),
                    h.seq
                ),
            ));
        }
        None
    }

    fn opens(&self, entry: &SignedEntry) -> bool {
        let h = entry.header();
        if h.kind == EntryKind::Control {
            return true;
        }
        self.epoch_keys
            .get(&h.epoch)
            .is_some_and(|keys| keys.iter().any(|k| entry.open(k).is_ok()))
    }
}

/// The rejection reason of an entry whose author may not write at its seq.
pub const NOT_A_MEMBER: &str = "not-a-member";

/// Opens `entry`'s payload under the key of its epoch among `keys`.
pub fn open_payload(entry: &SignedEntry, keys: &EpochKeys) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let epoch = entry.header().epoch;
    let Some(candidates) = keys.get(&epoch) else {
        return Err(CoveyError::crypto(format!(
            "no key for epoch {epoch} on this node (it joined later, or was removed before it)"
        )));
    };
    let mut last = None;
    for key in candidates {
        match entry.open(key) {
            Ok(p) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| CoveyError::crypto("no key opens this entry")))
}
