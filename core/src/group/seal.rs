//! Sealing secrets to a member's X25519 key: each new epoch secret to every remaining member
//! (inside a control entry), and an invite's welcome to the joiner.
//!
//! Both are X25519 from a fresh ephemeral key, HKDF-SHA256 of the shared secret with the full
//! context as info, and XChaCha20-Poly1305 with that context as associated data, so a sealed
//! value opens only for its recipient, in its group, epoch or invite transcript.

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::control::{EpochBlock, MAX_MEMBERS, SEALED_SECRET_LEN, SealedSecret};
use crate::crypto::{Secret32, aead, kdf};
use crate::error::{CoveyError, Result};
use crate::wire::entry::Id32;

/// The label of the key an epoch secret is sealed under.
pub const EPOCH_SEAL_LABEL: &[u8] = b"covey/v2/epoch-seal";
/// The label of the key an invite's welcome is sealed under.
pub const WELCOME_SEAL_LABEL: &[u8] = b"covey/v2/invite-welcome";

/// This device's X25519 key, which epoch secrets and invite welcomes are sealed to. Kept in
/// the key store (`device-x25519`) beside the Ed25519 identity; zeroized on drop.
#[derive(Clone)]
pub struct DeviceKey(StaticSecret);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(<redacted>)")
    }
}

impl DeviceKey {
    /// A fresh random key.
    pub fn random() -> Self {
        Self::from_secret(&Secret32::random())
    }

    /// The key of these 32 secret bytes.
    pub fn from_secret(secret: &Secret32) -> Self {
        Self(StaticSecret::from(*secret.expose()))
    }

    /// The secret bytes, for the key store.
    pub fn to_secret(&self) -> Secret32 {
        Secret32::from_bytes(self.0.to_bytes())
    }

    /// The public key others seal to.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }

    /// The key shared with `their` public key; refused when it is all zeros (a low-order
    /// point, which would make the seal readable by anyone).
    pub fn shared(&self, their: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
        let shared = self.0.diffie_hellman(&PublicKey::from(*their));
        if !shared.was_contributory() {
            return Err(CoveyError::crypto(
                "an X25519 key of low order cannot be sealed to",
            ));
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

/// The context an epoch secret is sealed in: the group, the epoch, the ephemeral key, and the
/// recipient (node id and X25519 key).
/// The context (HKDF info and AEAD associated data) an epoch secret is sealed in.
pub fn epoch_context(
    group_ref: &Id32,
    epoch: u64,
    ephemeral: &[u8; 32],
    recipient: &Id32,
    recipient_x25519: &[u8; 32],
) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(EPOCH_SEAL_LABEL.len() + 32 + 8 + 96);
    ctx.extend_from_slice(EPOCH_SEAL_LABEL);
    ctx.extend_from_slice(group_ref);
    ctx.extend_from_slice(&epoch.to_be_bytes());
    ctx.extend_from_slice(ephemeral);
    ctx.extend_from_slice(recipient);
    ctx.extend_from_slice(recipient_x25519);
    ctx
}

/// The key a value is sealed under: HKDF-SHA256 of the X25519 shared secret, no salt, the
/// whole context as info.
pub fn seal_key(shared: &[u8; 32], context: &[u8]) -> Result<Secret32> {
    let mut key = Zeroizing::new([0u8; 32]);
    kdf::hkdf_sha256(None, shared, context, key.as_mut())?;
    Ok(Secret32::from_bytes(*key))
}

/// Seals epoch `epoch`'s `secret` of the group whose entries carry `group_ref` to each of
/// `recipients` (node id, X25519 public key): one fresh ephemeral key for the block, one key
/// per recipient (so a zero nonce is safe: each key seals one value).
pub fn seal_epoch_secret(
    secret: &Secret32,
    epoch: u64,
    group_ref: &Id32,
    recipients: &[(Id32, [u8; 32])],
) -> Result<EpochBlock> {
    seal_epoch_secret_with(&DeviceKey::random(), secret, epoch, group_ref, recipients)
}

/// [`seal_epoch_secret`] with a given ephemeral key (the protocol vectors fix it; a real
/// block always uses a fresh one).
pub fn seal_epoch_secret_with(
    ephemeral: &DeviceKey,
    secret: &Secret32,
    epoch: u64,
    group_ref: &Id32,
    recipients: &[(Id32, [u8; 32])],
) -> Result<EpochBlock> {
    if recipients.len() > MAX_MEMBERS {
        return Err(CoveyError::invalid(format!(
            "a group has at most {MAX_MEMBERS} members"
        )));
    }
    let ephemeral_public = ephemeral.public();
    let mut sorted: Vec<&(Id32, [u8; 32])> = recipients.iter().collect();
    sorted.sort_by_key(|(id, _)| *id);
    sorted.dedup_by_key(|(id, _)| *id);
    let mut secrets = Vec::with_capacity(sorted.len());
    for (recipient, x25519) in sorted {
        let context = epoch_context(group_ref, epoch, &ephemeral_public, recipient, x25519);
        let key = seal_key(&*ephemeral.shared(x25519)?, &context)?;
        let sealed = aead::seal(&key, &[0; aead::NONCE_LEN], &context, secret.expose())?;
        let sealed: [u8; SEALED_SECRET_LEN] = sealed
            .try_into()
            .map_err(|_| CoveyError::internal("sealed epoch secret has the wrong length"))?;
        secrets.push(SealedSecret {
            recipient: *recipient,
            sealed,
        });
    }
    Ok(EpochBlock {
        epoch,
        ephemeral: ephemeral_public,
        secrets,
    })
}

/// Opens the copy of `block`'s epoch secret sealed to this device (`me`, `device`), if the
/// block has one. A copy that does not open is a `Crypto` error: it was sealed to another
/// key, or tampered with.
pub fn open_epoch_secret(
    device: &DeviceKey,
    me: &Id32,
    group_ref: &Id32,
    block: &EpochBlock,
) -> Result<Option<Secret32>> {
    let Some(copy) = block.secrets.iter().find(|s| &s.recipient == me) else {
        return Ok(None);
    };
    let context = epoch_context(
        group_ref,
        block.epoch,
        &block.ephemeral,
        me,
        &device.public(),
    );
    let key = seal_key(&*device.shared(&block.ephemeral)?, &context)?;
    let plain = aead::open(&key, &[0; aead::NONCE_LEN], &context, &copy.sealed)
        .map_err(|_| CoveyError::crypto("the epoch secret sealed to this node does not open"))?;
    Secret32::from_slice(&plain)
        .map(Some)
        .ok_or_else(|| CoveyError::crypto("a sealed epoch secret is not 32 bytes"))
}

/// A value sealed to one X25519 key: the ephemeral public key, the nonce, and the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sealed {
    /// The sender's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// The AEAD nonce.
    pub nonce: [u8; aead::NONCE_LEN],
    /// The ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// Seals `plaintext` to `recipient_x25519`, bound to `transcript` (hashed into the key and
/// passed as associated data).
pub fn seal_to(
    recipient_x25519: &[u8; 32],
    transcript: &[u8; 32],
    plaintext: &[u8],
) -> Result<Sealed> {
    let ephemeral = DeviceKey::random();
    let public = ephemeral.public();
    let context = welcome_context(&public, recipient_x25519, transcript);
    let key = seal_key(&*ephemeral.shared(recipient_x25519)?, &context)?;
    let nonce = aead::random_nonce();
    Ok(Sealed {
        ephemeral: public,
        nonce,
        ciphertext: aead::seal(&key, &nonce, &context, plaintext)?,
    })
}

/// Opens what [`seal_to`] sealed to `device` under `transcript`.
pub fn open_from(
    device: &DeviceKey,
    transcript: &[u8; 32],
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>> {
    let context = welcome_context(&sealed.ephemeral, &device.public(), transcript);
    let key = seal_key(&*device.shared(&sealed.ephemeral)?, &context)?;
    aead::open(&key, &sealed.nonce, &context, &sealed.ciphertext)
        .map_err(|_| CoveyError::crypto("the invite's welcome does not open for this node"))
}

fn welcome_context(ephemeral: &[u8; 32], recipient: &[u8; 32], transcript: &[u8; 32]) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(WELCOME_SEAL_LABEL.len() + 96);
    ctx.extend_from_slice(WELCOME_SEAL_LABEL);
    ctx.extend_from_slice(ephemeral);
    ctx.extend_from_slice(recipient);
    ctx.extend_from_slice(transcript);
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_recipient_opens_its_own_copy_and_nobody_else_does() {
        let (a, b, c) = (DeviceKey::random(), DeviceKey::random(), DeviceKey::random());
        let secret = Secret32::random();
        let group = [5u8; 32];
        let block =
            seal_epoch_secret(&secret, 2, &group, &[([2; 32], b.public()), ([1; 32], a.public())])
                .unwrap();
        assert_eq!(block.secrets[0].recipient, [1; 32], "sorted by recipient");
        let got = open_epoch_secret(&a, &[1; 32], &group, &block).unwrap();
        assert_eq!(got, Some(secret.clone()));
        assert_eq!(open_epoch_secret(&b, &[2; 32], &group, &block).unwrap(), Some(secret));
        // Not a recipient: nothing to open.
        assert_eq!(open_epoch_secret(&c, &[3; 32], &group, &block).unwrap(), None);
        // Someone else's copy under our id, or another group or epoch: refused.
        assert!(open_epoch_secret(&c, &[1; 32], &group, &block).is_err());
        assert!(open_epoch_secret(&a, &[1; 32], &[6; 32], &block).is_err());
        let mut later = block.clone();
        later.epoch = 3;
        assert!(open_epoch_secret(&a, &[1; 32], &group, &later).is_err());
    }

    #[test]
    fn low_order_keys_are_refused() {
        let secret = Secret32::random();
        let err = seal_epoch_secret(&secret, 1, &[0; 32], &[([1; 32], [0; 32])]).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Crypto);
    }

    #[test]
    fn a_welcome_opens_only_under_its_transcript() {
        let joiner = DeviceKey::random();
        let sealed = seal_to(&joiner.public(), &[1; 32], b"welcome").unwrap();
        assert_eq!(&open_from(&joiner, &[1; 32], &sealed).unwrap()[..], b"welcome");
        assert!(open_from(&joiner, &[2; 32], &sealed).is_err());
        assert!(open_from(&DeviceKey::random(), &[1; 32], &sealed).is_err());
    }
}
