//! Invites on a node: issuing them (`create_invite`), answering them over ALPN
//! `covey/invite/1` ([`InviteHandler`]), and accepting one (`accept_invite`).
//!
//! One exchange per connection, on one bidirectional stream of length-prefixed postcard
//! messages: the joiner sends a [`JoinRequest`]; for a short code the two run SPAKE2 and the
//! joiner confirms the key; the inviter checks the invite, publishes the joiner's `add`
//! control entry, and answers with the welcome sealed to the joiner's X25519 key under the
//! transcript (which binds the TLS session, both node ids, the joiner's key and the
//! credential), or with a refusal naming an error kind.

use std::sync::{Arc, Weak};
use std::time::Duration;

use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use serde::Serialize;
use serde::de::DeserializeOwned;
use spake2::{Ed25519Group, Password, Spake2};
use subtle::ConstantTimeEq;

use super::Node;
use super::inner::{GroupState, Inner, blocking, now_ms};
use super::managed::{Holder, build_managed, epoch_key_name, require_admin, stored_controls};
use super::setup::{group_key_name, parse_ticket};
use super::types::{Event, GroupInfo, Invite};
use crate::crypto::Secret32;
use crate::error::{CoveyError, ErrorKind, Result};
use crate::group::admission::control_record;
use crate::group::control::{ControlOp, Role};
use crate::group::invite::{
    CodeConfirm, INVITE_ALPN, INVITE_BINDING_LABEL, InviteLink, InviterReply, JoinRequest,
    MAX_CODE_ATTEMPTS, MAX_CODE_TTL_MS, MAX_INVITE_TTL_SECS, MAX_MESSAGE_BYTES,
    MAX_WELCOME_CONTROLS, ShortCode, Welcome, confirm_mac, group_tag, is_link, nameplate_root,
    secret_hash, spake_identities, transcript,
};
use crate::group::membership::Membership;
use crate::group::seal::{open_from, seal_to};
use crate::group::{GroupId, GroupKeys, GroupKind};
use crate::store::{self, GroupRow, InviteRow};
use crate::wire::entry::{Id32, SignedEntry};

/// How long one invite exchange may take, end to end.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long dialing an inviter may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A short code this node issued, waiting for its joiner.
#[derive(Debug)]
pub(super) struct CodeInvite {
    invite_id: [u8; 16],
    code: ShortCode,
    attempts: u32,
    expires_ms: u64,
}

/// Accepts `covey/invite/1` connections.
#[derive(Debug, Clone)]
pub(super) struct InviteHandler {
    inner: Weak<Inner>,
}

impl InviteHandler {
    pub(super) fn new(inner: &Arc<Inner>) -> Self {
        Self {
            inner: Arc::downgrade(inner),
        }
    }
}

impl ProtocolHandler for InviteHandler {
    async fn accept(&self, connection: Connection) -> std::result::Result<(), AcceptError> {
        let Some(inner) = self.inner.upgrade() else {
            return Ok(());
        };
        let peer = connection.remote_id();
        match tokio::time::timeout(EXCHANGE_TIMEOUT, answer(&inner, &connection)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::info!("invite exchange with {} failed: {e}", peer.fmt_short()),
            Err(_) => log::info!("invite exchange with {} timed out", peer.fmt_short()),
        }
        // Let the joiner read the last message before the connection goes.
        let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
        Ok(())
    }
}

async fn write_msg<T: Serialize>(send: &mut SendStream, msg: &T) -> Result<()> {
    let body = postcard::to_stdvec(msg)
        .map_err(|e| CoveyError::internal(format!("encoding an invite message: {e}")))?;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    send.write_all(&frame)
        .await
        .map_err(|e| CoveyError::network(format!("invite exchange: {e}")))
}

async fn read_msg<T: DeserializeOwned>(recv: &mut RecvStream) -> Result<T> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| CoveyError::network(format!("invite exchange: {e}")))?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(CoveyError::network(format!(
            "invite message of {len} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
        )));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| CoveyError::network(format!("invite exchange: {e}")))?;
    postcard::from_bytes(&body)
        .map_err(|e| CoveyError::network(format!("malformed invite message: {e}")))
}

fn binding_of(conn: &Connection) -> Result<[u8; 32]> {
    let mut binding = [0u8; 32];
    conn.export_keying_material(&mut binding, INVITE_BINDING_LABEL, b"")
        .map_err(|e| CoveyError::network(format!("cannot bind the invite exchange: {e:?}")))?;
    Ok(binding)
}

fn denied(message: impl Into<String>) -> CoveyError {
    CoveyError::new(ErrorKind::PermissionDenied, message)
}

/// The error a refusal names, as the joiner reports it.
fn refusal_error(kind: &str, message: String) -> CoveyError {
    let kind = match kind {
        "PermissionDenied" => ErrorKind::PermissionDenied,
        "NotFound" => ErrorKind::NotFound,
        "InvalidInput" => ErrorKind::InvalidInput,
        "RateLimited" => ErrorKind::RateLimited,
        _ => ErrorKind::Network,
    };
    CoveyError::new(kind, format!("the inviter refused: {message}"))
}

/// The inviter's side of one exchange.
async fn answer(inner: &Arc<Inner>, conn: &Connection) -> Result<()> {
    let (mut send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| CoveyError::network(format!("invite exchange: {e}")))?;
    let outcome = check_and_welcome(inner, conn, &mut send, &mut recv).await;
    if let Err(e) = &outcome
        && matches!(
            e.kind(),
            ErrorKind::PermissionDenied | ErrorKind::NotFound | ErrorKind::InvalidInput
        )
    {
        let reply = InviterReply::Refused {
            kind: format!("{:?}", e.kind()),
            message: e.message().to_owned(),
        };
        write_msg(&mut send, &reply).await?;
    }
    let _ = send.finish();
    outcome
}

async fn check_and_welcome(
    inner: &Arc<Inner>,
    conn: &Connection,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<()> {
    let binding = binding_of(conn)?;
    let joiner = *conn.remote_id().as_bytes();
    let me = *inner.id.as_bytes();
    let request: JoinRequest = read_msg(recv).await?;
    let (invite_id, x25519, credential, tag) = match request {
        JoinRequest::Link {
            invite_id,
            secret,
            group_tag,
            x25519,
        } => {
            let mut credential = invite_id.to_vec();
            credential.extend_from_slice(&secret);
            let hash = secret_hash(&secret);
            (invite_id, x25519, credential, Some((group_tag, hash)))
        }
        JoinRequest::Code { nameplate, spake } => {
            let (invite_id, code) = inner.take_code_attempt(&nameplate)?;
            let (ids_a, ids_b) = spake_identities(&joiner, &me);
            let (state, msg_b) =
                Spake2::<Ed25519Group>::start_b(&Password::new(code.password()), &ids_a, &ids_b);
            write_msg(send, &InviterReply::Spake(msg_b)).await?;
            let key = state
                .finish(&spake)
                .map_err(|e| denied(format!("the short code exchange failed: {e:?}")))?;
            let confirm: CodeConfirm = read_msg(recv).await?;
            let t = transcript(&binding, &joiner, &me, &confirm.x25519, &key);
            if !bool::from(confirm.mac.ct_eq(&confirm_mac(&key, &t))) {
                let left = inner.code_attempts_left(&nameplate);
                return Err(denied(format!(
                    "wrong short code ({left} attempts left before the code is dead)"
                )));
            }
            inner.retire_code(&nameplate);
            (invite_id, confirm.x25519, key, None)
        }
    };
    let row = inner.claim_invite(invite_id, tag).await?;
    let state = inner.group(&GroupId(row.group_id))?;
    require_admin(&state, &me)
        .map_err(|_| denied("the inviter can no longer invite to this group"))?;
    let t = transcript(&binding, &joiner, &me, &x25519, &credential);
    inner
        .publish_control(
            row.group_id,
            ControlOp::Add {
                member: joiner,
                role: Role::Member,
                x25519,
            },
        )
        .await?;
    let welcome = inner.welcome(row.group_id).await?;
    let plain = postcard::to_stdvec(&welcome)
        .map_err(|e| CoveyError::internal(format!("encoding a welcome: {e}")))?;
    let plain = zeroize::Zeroizing::new(plain);
    let sealed = seal_to(&x25519, &t, &plain)?;
    write_msg(send, &InviterReply::Welcome(sealed)).await?;
    log::info!(
        "invited {} into group {}",
        conn.remote_id().fmt_short(),
        GroupId(row.group_id)
    );
    Ok(())
}

impl Inner {
    /// Counts an exchange against the short code of `nameplate` and returns its invite and
    /// code; the code dies at its expiry or after [`MAX_CODE_ATTEMPTS`] exchanges.
    fn take_code_attempt(&self, nameplate: &str) -> Result<([u8; 16], ShortCode)> {
        let mut codes = self
            .code_invites
            .lock()
            .map_err(|_| CoveyError::internal("code table lock poisoned"))?;
        let now = now_ms();
        codes.retain(|_, c| c.expires_ms > now && c.attempts < MAX_CODE_ATTEMPTS);
        let Some(code) = codes.get_mut(nameplate) else {
            return Err(CoveyError::not_found(
                "no live short code here: it expired, was used, or ran out of attempts",
            ));
        };
        code.attempts += 1;
        Ok((code.invite_id, code.code.clone()))
    }

    fn code_attempts_left(&self, nameplate: &str) -> u32 {
        self.code_invites
            .lock()
            .ok()
            .and_then(|c| c.get(nameplate).map(|c| MAX_CODE_ATTEMPTS - c.attempts))
            .unwrap_or(0)
    }

    fn retire_code(&self, nameplate: &str) {
        if let Ok(mut codes) = self.code_invites.lock() {
            codes.remove(nameplate);
        }
    }

    /// Checks invite `invite_id` (and, for a link, its secret's hash and group tag) and
    /// counts one use, in one transaction so a single-use invite admits one joiner.
    async fn claim_invite(
        &self,
        invite_id: [u8; 16],
        link: Option<([u8; 8], Id32)>,
    ) -> Result<InviteRow> {
        let store = self.store.clone();
        blocking(move || {
            store.write(|tx| {
                let invalid = || denied("not a valid invite for this node");
                let row = store::invite(tx, &invite_id)?.ok_or_else(invalid)?;
                if let Some((tag, hash)) = link {
                    if !bool::from(row.secret_hash.ct_eq(&hash)) {
                        return Err(invalid());
                    }
                    if group_tag(&GroupId(row.group_id)) != tag {
                        return Err(denied("this invite is for another group"));
                    }
                }
                if now_ms() >= row.expires_ms {
                    return Err(denied("this invite has expired"));
                }
                if row.single_use && row.uses > 0 {
                    return Err(denied("this single-use invite was already used"));
                }
                store::use_invite(tx, &invite_id)?;
                Ok(row)
            })
        })
        .await
    }

    /// What a new member of `group` is handed: its secrets and its control entries.
    async fn welcome(&self, group: Id32) -> Result<Welcome> {
        let state = self.group(&GroupId(group))?;
        let Some(m) = &state.managed else {
            return Err(CoveyError::internal("a welcome for a passphrase group"));
        };
        let controls = self.store_read(move |c| stored_controls(c, &group)).await?;
        if controls.len() > MAX_WELCOME_CONTROLS {
            return Err(CoveyError::invalid(format!(
                "the group has more than {MAX_WELCOME_CONTROLS} control entries to hand over"
            )));
        }
        Ok(Welcome {
            group_id: group,
            name: state.row.name.clone(),
            creator: m.creator,
            root: *m.root.expose(),
            epochs: m
                .secrets
                .iter()
                .map(|(e, id, s)| (*e, *id, *s.expose()))
                .collect(),
            controls,
        })
    }
}

/// The joiner's side: runs the exchange on `conn` and returns the opened welcome.
async fn join_over(
    inner: &Arc<Inner>,
    conn: &Connection,
    credential: &Credential,
) -> Result<Welcome> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| CoveyError::network(format!("invite exchange: {e}")))?;
    let binding = binding_of(conn)?;
    let me = *inner.id.as_bytes();
    let inviter = *conn.remote_id().as_bytes();
    let x25519 = inner.device.public();
    let key: Vec<u8> = match credential {
        Credential::Link(link) => {
            write_msg(
                &mut send,
                &JoinRequest::Link {
                    invite_id: link.invite_id,
                    secret: link.secret,
                    group_tag: link.group_tag,
                    x25519,
                },
            )
            .await?;
            let mut key = link.invite_id.to_vec();
            key.extend_from_slice(&link.secret);
            key
        }
        Credential::Code(code) => {
            let (ids_a, ids_b) = spake_identities(&me, &inviter);
            let (state, msg_a) =
                Spake2::<Ed25519Group>::start_a(&Password::new(code.password()), &ids_a, &ids_b);
            write_msg(
                &mut send,
                &JoinRequest::Code {
                    nameplate: code.nameplate().to_owned(),
                    spake: msg_a,
                },
            )
            .await?;
            let msg_b = match read_msg(&mut recv).await? {
                InviterReply::Spake(msg_b) => msg_b,
                InviterReply::Refused { kind, message } => {
                    return Err(refusal_error(&kind, message));
                }
                InviterReply::Welcome(_) => {
                    return Err(CoveyError::network("the inviter skipped the code exchange"));
                }
            };
            let key = state
                .finish(&msg_b)
                .map_err(|e| CoveyError::crypto(format!("short code exchange: {e:?}")))?;
            let t = transcript(&binding, &me, &inviter, &x25519, &key);
            write_msg(
                &mut send,
                &CodeConfirm {
                    mac: confirm_mac(&key, &t),
                    x25519,
                },
            )
            .await?;
            key
        }
    };
    let key = zeroize::Zeroizing::new(key);
    let t = transcript(&binding, &me, &inviter, &x25519, &key);
    let reply: InviterReply = read_msg(&mut recv).await?;
    let _ = send.finish();
    match reply {
        InviterReply::Welcome(sealed) => {
            let plain = open_from(&inner.device, &t, &sealed)?;
            postcard::from_bytes(&plain)
                .map_err(|e| CoveyError::crypto(format!("the welcome does not decode: {e}")))
        }
        InviterReply::Refused { kind, message } => Err(refusal_error(&kind, message)),
        InviterReply::Spake(_) => Err(CoveyError::network("unexpected message from the inviter")),
    }
}

/// What a joiner holds: a link, or a short code.
enum Credential {
    Link(InviteLink),
    Code(ShortCode),
}

/// Joins the group of an opened welcome: checks it (the root derives the group id, the link's
/// group tag matches, every control entry carries a valid signature, and the fold counts this
/// node in), then keeps its secrets in the key store and the group in the store.
fn join_welcome(
    inner: &Inner,
    welcome: &Welcome,
    tag: Option<[u8; 8]>,
) -> Result<Option<GroupState>> {
    let root = Secret32::from_bytes(welcome.root);
    let keys = GroupKeys::from_root(&root);
    if keys.id.0 != welcome.group_id {
        return Err(CoveyError::crypto(
            "the welcome's root secret does not derive its group id",
        ));
    }
    if let Some(tag) = tag
        && group_tag(&keys.id) != tag
    {
        return Err(CoveyError::crypto(
            "the inviter answered with another group than the invite names",
        ));
    }
    super::check_group_name(&welcome.name)?;
    let mut records = Vec::with_capacity(welcome.controls.len());
    let mut raws = Vec::with_capacity(welcome.controls.len());
    for raw in welcome.controls.iter().take(MAX_WELCOME_CONTROLS) {
        let entry = SignedEntry::decode(raw.clone(), MAX_MESSAGE_BYTES)
            .map_err(|e| CoveyError::crypto(format!("a welcome control entry: {e}")))?;
        if entry.header().group_ref != keys.entry_group {
            return Err(CoveyError::crypto(
                "a welcome control entry belongs to another group",
            ));
        }
        records.push(control_record(&entry, &keys.control_key)?);
        raws.push((*entry.id(), raw.clone()));
    }
    let me = *inner.id.as_bytes();
    if !Membership::fold(welcome.creator, &records).is_active(&me) {
        return Err(denied(
            "the welcome does not make this node a member (the inviter is no admin there)",
        ));
    }
    if inner.groups_read()?.contains_key(&keys.id.0) {
        return Ok(None);
    }
    inner
        .key_store
        .store(&group_key_name(&keys.id), root.expose())?;
    for (_, entry, secret) in &welcome.epochs {
        inner.key_store.store(&epoch_key_name(entry), secret)?;
    }
    let row = GroupRow {
        group_id: keys.id.0,
        name: welcome.name.clone(),
        kind: GroupKind::Managed.to_byte(),
        epoch: 0,
    };
    let gid = keys.id.0;
    inner.store.write(|tx| {
        store::insert_group(tx, &row, now_ms())?;
        store::set_creator(tx, &gid, &welcome.creator)?;
        store::put_welcome_controls(tx, &gid, &raws)
    })?;
    let controls = inner.store.read(|c| stored_controls(c, &gid))?;
    let holder = Holder {
        key_store: inner.key_store.as_ref(),
        device: &inner.device,
        me,
    };
    // This node's clock starts past every change it was handed, so its own entries (and any
    // change it makes) sort after its own add.
    let lamport = records.iter().map(|r| r.lamport).max().unwrap_or(0);
    build_managed(&holder, row, root, welcome.creator, controls, lamport).map(Some)
}

impl Node {
    /// Creates an invite to managed group `group_id` (admins only), answered for `ttl_secs`
    /// (1 s to 30 days), once if `single_use`: a link that carries this node's address, an
    /// invite id and a one-time secret (never the group's secrets), and a short code
    /// answered for at most 10 minutes while this node runs.
    pub async fn create_invite(
        &self,
        group_id: &GroupId,
        ttl_secs: u64,
        single_use: bool,
    ) -> Result<Invite> {
        self.check_open()?;
        if ttl_secs == 0 || ttl_secs > MAX_INVITE_TTL_SECS {
            return Err(CoveyError::invalid(format!(
                "ttl_secs must be 1 to {MAX_INVITE_TTL_SECS} (30 days)"
            )));
        }
        let state = self.inner.group(group_id)?;
        require_admin(&state, self.inner.id.as_bytes())?;
        let mut invite_id = [0u8; 16];
        rand::fill(&mut invite_id);
        let mut secret = zeroize::Zeroizing::new([0u8; 16]);
        rand::fill(secret.as_mut());
        let now = now_ms();
        let expires_ms = now.saturating_add(ttl_secs.saturating_mul(1000));
        let row = InviteRow {
            invite_id,
            group_id: group_id.0,
            secret_hash: secret_hash(&secret),
            expires_ms,
            single_use,
            uses: 0,
        };
        self.inner
            .store_write(move |tx| store::insert_invite(tx, &row))
            .await?;
        let link = InviteLink {
            ticket: self.addr().await?,
            invite_id,
            secret: *secret,
            group_tag: group_tag(group_id),
        };
        let code = {
            let mut codes = self
                .inner
                .code_invites
                .lock()
                .map_err(|_| CoveyError::internal("code table lock poisoned"))?;
            codes.retain(|_, c| c.expires_ms > now && c.attempts < MAX_CODE_ATTEMPTS);
            // A nameplate of its own among this node's live codes.
            let mut code = ShortCode::random();
            for _ in 0..64 {
                if !codes.contains_key(code.nameplate()) {
                    break;
                }
                code = ShortCode::random();
            }
            codes.insert(
                code.nameplate().to_owned(),
                CodeInvite {
                    invite_id,
                    code: code.clone(),
                    attempts: 0,
                    expires_ms: expires_ms.min(now.saturating_add(MAX_CODE_TTL_MS)),
                },
            );
            code
        };
        let keys = GroupKeys::from_root(&nameplate_root(code.nameplate()));
        match tokio::time::timeout(
            DIAL_TIMEOUT,
            super::rendezvous::announce_around_now(&self.inner, &keys),
        )
        .await
        {
            Ok(Ok(n)) => log::debug!("short code announced to {n} nodes"),
            Ok(Err(e)) => log::info!("short code not announced ({e}); the link still works"),
            Err(_) => log::info!("short code announcement timed out; the link still works"),
        }
        Ok(Invite {
            link: link.to_text(),
            short_code: code.display(),
            expires_at_ms: expires_ms,
        })
    }

    /// Joins a managed group by an invite: a link (or QR payload), or a short code. Dials the
    /// inviter, proves the invite (or runs the code's PAKE), and receives the group's secrets
    /// sealed to this device. Fails with a retryable `Network` error when no inviter is
    /// reachable, `PermissionDenied` for an invite that is expired, used, forged or for another
    /// group, or a wrong code.
    pub async fn accept_invite(&self, invite: &str) -> Result<GroupInfo> {
        self.check_open()?;
        let (credential, candidates) = if is_link(invite) {
            let link = InviteLink::parse(invite)?;
            let addr = parse_ticket(&link.ticket)?;
            if addr.id == self.inner.id {
                return Err(CoveyError::invalid("that invite was issued by this node"));
            }
            (Credential::Link(link), vec![addr])
        } else {
            let code = ShortCode::parse(invite)?;
            let keys = GroupKeys::from_root(&nameplate_root(code.nameplate()));
            let found = super::rendezvous::find_around_now(&self.inner, &keys).await;
            (Credential::Code(code), found)
        };
        if candidates.is_empty() {
            return Err(CoveyError::network(
                "no inviter for this short code is reachable: a code is answered only while its inviter runs; try again when it is online, or use the link",
            ));
        }
        let tag = match &credential {
            Credential::Link(link) => Some(link.group_tag),
            Credential::Code(_) => None,
        };
        let mut last = None;
        for addr in candidates {
            let conn = match tokio::time::timeout(
                DIAL_TIMEOUT,
                self.inner.endpoint.connect(addr.clone(), INVITE_ALPN),
            )
            .await
            {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    last = Some(CoveyError::network(format!(
                        "the inviter {} is not reachable ({e}); invites are answered only while the inviter is online: try again",
                        addr.id.fmt_short()
                    )));
                    continue;
                }
                Err(_) => {
                    last = Some(CoveyError::network(format!(
                        "the inviter {} did not answer within {} s; invites are answered only while the inviter is online: try again",
                        addr.id.fmt_short(),
                        DIAL_TIMEOUT.as_secs()
                    )));
                    continue;
                }
            };
            let welcome = match tokio::time::timeout(
                EXCHANGE_TIMEOUT,
                join_over(&self.inner, &conn, &credential),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(CoveyError::new(
                    ErrorKind::Timeout,
                    "the invite exchange took too long",
                )),
            };
            conn.close(0u32.into(), b"done");
            let welcome = match welcome {
                Ok(w) => w,
                // A refusal is the inviter's answer: trying another candidate could burn its
                // code attempts too.
                Err(e) if e.kind() != ErrorKind::Network => return Err(e),
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let welcome_group = GroupId(welcome.group_id);
            let inner = self.inner.clone();
            let joined = blocking(move || join_welcome(&inner, &welcome, tag)).await?;
            let id = match joined {
                Some(state) => {
                    let id = state.keys.id;
                    self.inner.groups_write()?.insert(id.0, Arc::new(state));
                    self.inner.emit(Event::GroupChanged {
                        group_id: id,
                        epoch: self.inner.group(&id)?.keys.epoch,
                    });
                    id
                }
                // Already a member here: accepting again is a no-op.
                None => return self.group_info(&welcome_group).await,
            };
            self.inner.offer_group(id.0).await?;
            // Sync with the inviter at once, and remember it like an added peer.
            self.remember_peer(addr.clone()).await?;
            self.inner.dht.add_seed(addr.clone()).await;
            self.inner.clone().spawn_dialer(addr);
            self.inner.rendezvous.notify_one();
            return self.group_info(&id).await;
        }
        Err(last.unwrap_or_else(|| CoveyError::network("no inviter reachable")))
    }
}
