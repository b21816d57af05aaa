//! The payload of a control entry (entry kind 1) of a managed group: one membership change.
//!
//! The payload is sealed like any entry's, but under the group's control key (derived from
//! the root secret, the same in every epoch), so every member can fold the whole membership
//! history whichever epochs it holds. All integers are big-endian; the layout (PROTOCOL.md,
//! "Managed groups") is:
//!
//! ```text
//! op 1 add      member[32] role[1] x25519[32]
//! op 2 remove   member[32] cutoff[8] epoch-block
//! op 3 role     member[32] role[1]
//! op 4 leave    (nothing)
//! op 5 rotate   epoch-block
//! epoch-block   epoch[8] ephemeral[32] count[2] count × (recipient[32] sealed[48])
//! ```
//!
//! `sealed` is the new epoch secret sealed to the recipient's X25519 key
//! ([`super::seal::seal_epoch_secret`]). A decoder takes nothing on trust: every length is
//! checked, trailing bytes are refused, and a payload names at most [`MAX_MEMBERS`]
//! recipients.

use crate::error::{CoveyError, Result};
use crate::wire::entry::Id32;

/// Most members a managed group has, and so most recipients of one epoch change.
pub const MAX_MEMBERS: usize = 1024;

/// Bytes of one sealed epoch secret: the 32-byte secret and the AEAD tag.
pub const SEALED_SECRET_LEN: usize = 32 + crate::crypto::aead::TAG_LEN;

/// What a member may do in a managed group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads and writes entries.
    Member,
    /// A member that may also add and remove members, change roles and start epochs.
    Admin,
}

impl Role {
    /// The role's byte in a control payload.
    pub fn to_byte(self) -> u8 {
        match self {
            Role::Member => 1,
            Role::Admin => 2,
        }
    }

    /// Reads a role byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Role::Member),
            2 => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name, as the facade shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

/// The new epoch secret, sealed to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The member's node id.
    pub recipient: Id32,
    /// The epoch secret sealed to the member's X25519 key, with its tag.
    pub sealed: [u8; SEALED_SECRET_LEN],
}

/// The start of a new epoch: its number and its secret, sealed to every member it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochBlock {
    /// The epoch this entry starts.
    pub epoch: u64,
    /// The X25519 public key the secrets were sealed with (fresh for each block).
    pub ephemeral: [u8; 32],
    /// One sealed copy per recipient, sorted by recipient.
    pub secrets: Vec<SealedSecret>,
}

/// One membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOp {
    /// Adds `member` with `role` and the X25519 key epoch secrets are sealed to (or changes
    /// them for a member already in the group).
    Add {
        /// The member's node id.
        member: Id32,
        /// Its role.
        role: Role,
        /// Its X25519 public key.
        x25519: [u8; 32],
    },
    /// Removes `member`: its entries past `cutoff` (its highest seq the remover held) are
    /// refused, and `epoch` starts without it.
    Remove {
        /// The member's node id.
        member: Id32,
        /// The highest seq of the member's entries that stay valid.
        cutoff: u64,
        /// The epoch the removal starts.
        epoch: EpochBlock,
    },
    /// Changes the role of `member`.
    SetRole {
        /// The member's node id.
        member: Id32,
        /// Its new role.
        role: Role,
    },
    /// The author leaves the group; this is its last valid entry.
    Leave,
    /// Starts a new epoch without a membership change (an admin healing an epoch whose
    /// secret reached someone no longer in the group).
    Rotate {
        /// The epoch it starts.
        epoch: EpochBlock,
    },
}

impl ControlOp {
    fn op_byte(&self) -> u8 {
        match self {
            ControlOp::Add { .. } => 1,
            ControlOp::Remove { .. } => 2,
            ControlOp::SetRole { .. } => 3,
            ControlOp::Leave => 4,
            ControlOp::Rotate { .. } => 5,
        }
    }

    /// The epoch this change starts, if it starts one.
    pub fn epoch_block(&self) -> Option<&EpochBlock> {
        match self {
            ControlOp::Remove { epoch, .. } | ControlOp::Rotate { epoch } => Some(epoch),
            _ => None,
        }
    }

    /// The payload bytes of this change.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.op_byte()];
        match self {
            ControlOp::Add {
                member,
                role,
                x25519,
            } => {
                out.extend_from_slice(member);
                out.push(role.to_byte());
                out.extend_from_slice(x25519);
            }
            ControlOp::Remove {
                member,
                cutoff,
                epoch,
            } => {
                out.extend_from_slice(member);
                out.extend_from_slice(&cutoff.to_be_bytes());
                encode_block(epoch, &mut out);
            }
            ControlOp::SetRole { member, role } => {
                out.extend_from_slice(member);
                out.push(role.to_byte());
            }
            ControlOp::Leave => {}
            ControlOp::Rotate { epoch } => encode_block(epoch, &mut out),
        }
        out
    }

    /// Reads a control payload; anything malformed is an `InvalidInput` error naming why.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader { bytes, at: 0 };
        let op = r.u8()?;
        let out = match op {
            1 => ControlOp::Add {
                member: r.id()?,
                role: r.role()?,
                x25519: r.id()?,
            },
            2 => ControlOp::Remove {
                member: r.id()?,
                cutoff: r.u64()?,
                epoch: r.block()?,
            },
            3 => ControlOp::SetRole {
                member: r.id()?,
                role: r.role()?,
            },
            4 => ControlOp::Leave,
            5 => ControlOp::Rotate { epoch: r.block()? },
            other => return Err(malformed(format!("unknown control op {other}"))),
        };
        if r.at != bytes.len() {
            return Err(malformed(format!(
                "{} bytes after the control op",
                bytes.len() - r.at
            )));
        }
        Ok(out)
    }
}

fn encode_block(block: &EpochBlock, out: &mut Vec<u8>) {
    out.extend_from_slice(&block.epoch.to_be_bytes());
    out.extend_from_slice(&block.ephemeral);
    // Encoders are only handed blocks built for at most MAX_MEMBERS recipients.
    out.extend_from_slice(&(block.secrets.len().min(u16::MAX as usize) as u16).to_be_bytes());
    for s in block.secrets.iter().take(u16::MAX as usize) {
        out.extend_from_slice(&s.recipient);
        out.extend_from_slice(&s.sealed);
    }
}

fn malformed(why: String) -> CoveyError {
    CoveyError::invalid(format!("malformed control payload: {why}"))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.at.checked_add(N).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(malformed(format!("truncated at byte {}", self.at)));
        };
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn id(&mut self) -> Result<Id32> {
        self.take()
    }

    fn role(&mut self) -> Result<Role> {
        let b = self.u8()?;
        Role::from_byte(b).ok_or_else(|| malformed(format!("unknown role {b}")))
    }

    fn block(&mut self) -> Result<EpochBlock> {
        let epoch = self.u64()?;
        let ephemeral = self.id()?;
        let count = u16::from_be_bytes(self.take()?) as usize;
        if count > MAX_MEMBERS {
            return Err(malformed(format!(
                "{count} sealed secrets, more than the {MAX_MEMBERS} members a group has"
            )));
        }
        let mut secrets = Vec::with_capacity(count);
        for _ in 0..count {
            let recipient = self.id()?;
            let sealed = self.take()?;
            if secrets
                .last()
                .is_some_and(|s: &SealedSecret| s.recipient >= recipient)
            {
                return Err(malformed(
                    "sealed secrets are not sorted by recipient, or repeat one".to_owned(),
                ));
            }
            secrets.push(SealedSecret { recipient, sealed });
        }
        Ok(EpochBlock {
            epoch,
            ephemeral,
            secrets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: usize) -> EpochBlock {
        EpochBlock {
            epoch: 3,
            ephemeral: [9; 32],
            secrets: (0..n)
                .map(|i| SealedSecret {
                    recipient: {
                        let mut r = [0u8; 32];
                        r[..2].copy_from_slice(&(i as u16).to_be_bytes());
                        r
                    },
                    sealed: [7; SEALED_SECRET_LEN],
                })
                .collect(),
        }
    }

    #[test]
    fn every_op_round_trips() {
        let ops = [
            ControlOp::Add {
                member: [1; 32],
                role: Role::Admin,
                x25519: [2; 32],
            },
            ControlOp::Remove {
                member: [3; 32],
                cutoff: 17,
                epoch: block(3),
            },
            ControlOp::SetRole {
                member: [4; 32],
                role: Role::Member,
            },
            ControlOp::Leave,
            ControlOp::Rotate { epoch: block(0) },
        ];
        for op in ops {
            assert_eq!(ControlOp::decode(&op.encode()).unwrap(), op);
        }
    }

    #[test]
    fn truncations_trailing_bytes_and_unknown_values_are_refused() {
        let op = ControlOp::Remove {
            member: [3; 32],
            cutoff: 17,
            epoch: block(2),
        };
        let bytes = op.encode();
        for len in 0..bytes.len() {
            assert!(ControlOp::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(ControlOp::decode(&long).is_err());
        assert!(ControlOp::decode(&[9]).is_err());
        let mut bad_role = ControlOp::SetRole {
            member: [4; 32],
            role: Role::Member,
        }
        .encode();
        bad_role[33] = 0;
        assert!(ControlOp::decode(&bad_role).is_err());
    }

    #[test]
    fn recipients_are_bounded_and_sorted() {
        let at_limit = ControlOp::Rotate {
            epoch: block(MAX_MEMBERS),
        };
        assert!(ControlOp::decode(&at_limit.encode()).is_ok());
        let over = ControlOp::Rotate {
            epoch: block(MAX_MEMBERS + 1),
        };
        let err = ControlOp::decode(&over.encode()).unwrap_err();
        assert!(err.message().contains("1025 sealed secrets"), "{err}");
        let mut unsorted = block(2);
        unsorted.secrets.reverse();
        assert!(ControlOp::decode(&ControlOp::Rotate { epoch: unsorted }.encode()).is_err());
    }
}
