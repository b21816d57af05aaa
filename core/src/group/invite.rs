//! Invites to a managed group: the link (also a QR payload), the short code a person reads
//! out, and the messages of the invite protocol (ALPN `covey/invite/1`).
//!
//! A link carries the inviter's address ticket, a 16-byte invite id, a 16-byte one-time
//! invite secret and a short tag of the group; never the group's root or epoch secrets. A
//! short code is 8 characters of Crockford base32 (40 bits): the first two are its nameplate,
//! which finds the inviter through the DHT, and the whole code is the password of a SPAKE2
//! exchange, so a guesser gets one online try per exchange and the inviter allows
//! [`MAX_CODE_ATTEMPTS`]. Both end in a welcome: the group's secrets sealed to the joiner's
//! X25519 key (`seal::seal_to`) under the transcript of the exchange.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::GroupId;
use super::seal::Sealed;
use crate::error::{CoveyError, Result};
use crate::wire::entry::Id32;

/// The ALPN of the invite protocol.
pub const INVITE_ALPN: &[u8] = b"covey/invite/1";
/// What every link starts with.
pub const LINK_PREFIX: &str = "covey:invite/";
/// Characters of a short code (Crockford base32: no i, l, o or u).
pub const CODE_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Characters in a short code.
pub const CODE_LEN: usize = 8;
/// Characters of a short code that form its nameplate (how the joiner finds the inviter).
pub const NAMEPLATE_LEN: usize = 2;
/// Exchanges an inviter runs for one short code before the code is dead.
pub const MAX_CODE_ATTEMPTS: u32 = 3;
/// Longest a short code lives (and at most the invite's own lifetime): it is answered only
/// while its inviter runs, and found only in the rendezvous windows it was announced in.
pub const MAX_CODE_TTL_MS: u64 = 10 * 60 * 1000;
/// Longest an invite lives.
pub const MAX_INVITE_TTL_SECS: u64 = 30 * 24 * 3600;
/// Largest invite-protocol message (a welcome carries the group's control entries).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Most control entries a welcome carries.
pub const MAX_WELCOME_CONTROLS: usize = 4096;
/// The label of the TLS exporter an invite exchange is bound to.
pub const INVITE_BINDING_LABEL: &[u8] = b"covey/v2/invite-binding";
/// The label the transcript hash starts with.
pub const TRANSCRIPT_LABEL: &[u8] = b"covey/v2/invite-transcript";

/// The short tag of a group a link carries: enough for the inviter to refuse a link presented
/// for another group and for the joiner to check the welcome, without naming the group.
pub fn group_tag(group: &GroupId) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"covey/v2/invite-group");
    hasher.update(&group.0);
    let mut out = [0u8; 8];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    out
}

/// The hash an inviter keeps of an invite secret (never the secret).
pub fn secret_hash(secret: &[u8; 16]) -> Id32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"covey/v2/invite-secret");
    hasher.update(secret);
    *hasher.finalize().as_bytes()
}

/// A parsed invite link.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct InviteLink {
    /// The inviter's address ticket.
    pub ticket: String,
    /// The invite's id.
    pub invite_id: [u8; 16],
    /// The one-time invite secret.
    pub secret: [u8; 16],
    /// The group's tag ([`group_tag`]).
    pub group_tag: [u8; 8],
}

impl std::fmt::Debug for InviteLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteLink")
            .field("invite_id", &hex::encode(self.invite_id))
            .finish_non_exhaustive()
    }
}

impl InviteLink {
    /// The link's text: `covey:invite/<ticket>/<group tag>/<invite id>/<secret>`, hex.
    pub fn to_text(&self) -> String {
        format!(
            "{LINK_PREFIX}{}/{}/{}/{}",
            self.ticket,
            hex::encode(self.group_tag),
            hex::encode(self.invite_id),
            hex::encode(self.secret)
        )
    }

    /// Reads a link; `InvalidInput` naming what is wrong otherwise.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| CoveyError::invalid(format!("not a Covey invite link: {why}"));
        let rest = text
            .trim()
            .strip_prefix(LINK_PREFIX)
            .ok_or_else(|| bad("it does not start with covey:invite/"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [ticket, tag, id, secret] = parts.as_slice() else {
            return Err(bad("it needs four parts after the prefix"));
        };
        let mut link = InviteLink {
            ticket: (*ticket).to_owned(),
            invite_id: [0; 16],
            secret: [0; 16],
            group_tag: [0; 8],
        };
        hex::decode_to_slice(tag, &mut link.group_tag).map_err(|_| bad("bad group tag"))?;
        hex::decode_to_slice(id, &mut link.invite_id).map_err(|_| bad("bad invite id"))?;
        hex::decode_to_slice(secret, &mut link.secret).map_err(|_| bad("bad invite secret"))?;
        Ok(link)
    }
}

/// A short code, normalised: [`CODE_LEN`] characters of [`CODE_ALPHABET`].
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ShortCode(String);

impl std::fmt::Debug for ShortCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShortCode(<redacted>)")
    }
}

impl ShortCode {
    /// A fresh random code.
    pub fn random() -> Self {
        let mut bytes = [0u8; CODE_LEN];
        rand::fill(&mut bytes);
        let code = bytes
            .iter()
            .map(|b| CODE_ALPHABET[(*b & 31) as usize] as char)
            .collect();
        bytes.zeroize();
        Self(code)
    }

    /// Reads a code as a person typed it: case, spaces and dashes do not matter, and the
    /// look-alikes `i`, `l` (one) and `o` (zero) are read as Crockford reads them.
    pub fn parse(text: &str) -> Result<Self> {
        let mut code = String::with_capacity(CODE_LEN);
        for c in text.trim().chars() {
            let c = match c.to_ascii_lowercase() {
                '-' | ' ' => continue,
                'i' | 'l' => '1',
                'o' => '0',
                c => c,
            };
            if !c.is_ascii() || !CODE_ALPHABET.contains(&(c as u8)) {
                return Err(CoveyError::invalid(format!(
                    "a short code holds only the characters {}",
                    std::str::from_utf8(CODE_ALPHABET).unwrap_or_default()
                )));
            }
            code.push(c);
        }
        if code.len() != CODE_LEN {
            return Err(CoveyError::invalid(format!(
                "a short code has {CODE_LEN} characters, this one {}",
                code.len()
            )));
        }
        Ok(Self(code))
    }

    /// The code as shown to people: `xxxx-xxxx`.
    pub fn display(&self) -> String {
        format!("{}-{}", &self.0[..4], &self.0[4..])
    }

    /// The nameplate: the code's first characters, which find the inviter.
    pub fn nameplate(&self) -> &str {
        &self.0[..NAMEPLATE_LEN]
    }

    /// The SPAKE2 password: the whole code.
    pub fn password(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Whether `text` looks like a link (else it is read as a short code).
pub fn is_link(text: &str) -> bool {
    text.trim().starts_with(LINK_PREFIX)
}

/// The joiner's first message.
#[derive(Debug, Serialize, Deserialize)]
pub enum JoinRequest {
    /// Joining by link: the invite id and secret, and the joiner's X25519 key.
    Link {
        /// The invite's id.
        invite_id: [u8; 16],
        /// The invite secret.
        secret: [u8; 16],
        /// The group tag from the link.
        group_tag: [u8; 8],
        /// The joiner's X25519 public key.
        x25519: [u8; 32],
    },
    /// Joining by short code: the nameplate and the joiner's SPAKE2 message.
    Code {
        /// The code's nameplate.
        nameplate: String,
        /// SPAKE2 side A's message.
        spake: Vec<u8>,
    },
}

/// The joiner's second message in a code exchange: proof that it derived the same key, and
/// its X25519 key.
#[derive(Debug, Serialize, Deserialize)]
pub struct CodeConfirm {
    /// Keyed hash of the transcript under the SPAKE2 key ([`confirm_mac`]).
    pub mac: [u8; 32],
    /// The joiner's X25519 public key.
    pub x25519: [u8; 32],
}

/// What the inviter answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum InviterReply {
    /// SPAKE2 side B's message.
    Spake(Vec<u8>),
    /// The welcome, sealed to the joiner.
    Welcome(Sealed),
    /// The invite is refused: an error kind (`ErrorKind` as the facade names it) and why.
    Refused {
        /// `PermissionDenied`, `InvalidInput`, `NotFound` or `RateLimited`.
        kind: String,
        /// A human reason.
        message: String,
    },
}

/// What a welcome holds, sealed: everything a new member needs to take part.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Welcome {
    /// The group id.
    pub group_id: Id32,
    /// The group's name.
    pub name: String,
    /// The group's creator (its first admin).
    pub creator: Id32,
    /// The root secret.
    pub root: [u8; 32],
    /// Every epoch secret the inviter holds past epoch 0: (epoch, the control entry that
    /// started it, the secret).
    pub epochs: Vec<(u64, Id32, [u8; 32])>,
    /// The group's control entries as the inviter holds them (the joiner's add among them).
    pub controls: Vec<Vec<u8>>,
}

/// The transcript hash both sides bind the welcome to: the connection (its TLS exporter),
/// both node ids, the joiner's X25519 key and the credential (`credential` is the invite id
/// and secret for a link, the SPAKE2 key for a code).
pub fn transcript(
    binding: &[u8; 32],
    joiner: &Id32,
    inviter: &Id32,
    x25519: &[u8; 32],
    credential: &[u8],
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(TRANSCRIPT_LABEL);
    hasher.update(binding);
    hasher.update(joiner);
    hasher.update(inviter);
    hasher.update(x25519);
    hasher.update(credential);
    *hasher.finalize().as_bytes()
}

/// The joiner's key confirmation in a code exchange.
pub fn confirm_mac(spake_key: &[u8], transcript: &[u8; 32]) -> [u8; 32] {
    let key = blake3::derive_key("covey/v2/invite-code-confirm", spake_key);
    *blake3::keyed_hash(&key, transcript).as_bytes()
}

/// The SPAKE2 identities of a code exchange: the two node ids.
pub fn spake_identities(joiner: &Id32, inviter: &Id32) -> (spake2::Identity, spake2::Identity) {
    (spake2::Identity::new(joiner), spake2::Identity::new(inviter))
}

/// The key a nameplate's rendezvous is derived from: anyone with the nameplate can compute
/// it (it only finds the inviter; the code's secret part never leaves the PAKE).
pub fn nameplate_root(nameplate: &str) -> crate::crypto::Secret32 {
    crate::crypto::Secret32::from_bytes(blake3::derive_key(
        "covey/v2/invite-nameplate",
        nameplate.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_bad_ones_say_why() {
        let link = InviteLink {
            ticket: "endpointabc".into(),
            invite_id: [1; 16],
            secret: [2; 16],
            group_tag: [3; 8],
        };
        let text = link.to_text();
        assert_eq!(InviteLink::parse(&text).unwrap(), link);
        assert!(is_link(&text));
        for bad in [
            "covey:invite/x/y",
            "http://x",
            &text.replace("covey:invite/", "covey:invit/"),
            &format!("{text}/more"),
            &text[..text.len() - 2],
        ] {
            let err = InviteLink::parse(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn codes_are_read_as_people_type_them() {
        let code = ShortCode::random();
        let shown = code.display();
        assert_eq!(shown.len(), CODE_LEN + 1);
        assert_eq!(ShortCode::parse(&shown.to_uppercase()).unwrap(), code);
        assert_eq!(
            ShortCode::parse(" 1O2l-ab cd ").unwrap(),
            ShortCode::parse("1021abcd").unwrap()
        );
        assert!(ShortCode::parse("abc").is_err());
        assert!(ShortCode::parse("abcdefghj").is_err(), "nine characters");
        assert!(ShortCode::parse("abcdefg!").is_err());
        assert!(ShortCode::parse("abcdefgu").is_err(), "u is not in the alphabet");
        assert_eq!(code.nameplate().len(), NAMEPLATE_LEN);
    }

    #[test]
    fn spake2_agrees_only_on_the_same_code() {
        use spake2::{Ed25519Group, Password, Spake2};
        let (j, i) = spake_identities(&[1; 32], &[2; 32]);
        let code = ShortCode::random();
        let (a, msg_a) = Spake2::<Ed25519Group>::start_a(&Password::new(code.password()), &j, &i);
        let (b, msg_b) = Spake2::<Ed25519Group>::start_b(&Password::new(code.password()), &j, &i);
        assert_eq!(a.finish(&msg_b).unwrap(), b.finish(&msg_a).unwrap());
        let wrong = ShortCode::parse("00000000").unwrap();
        let (a, msg_a) = Spake2::<Ed25519Group>::start_a(&Password::new(wrong.password()), &j, &i);
        let (b, msg_b) = Spake2::<Ed25519Group>::start_b(&Password::new(code.password()), &j, &i);
        assert_ne!(a.finish(&msg_b).unwrap(), b.finish(&msg_a).unwrap());
    }
}
