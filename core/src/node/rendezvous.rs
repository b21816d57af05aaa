//! Group rendezvous: members of a group find each other through the DHT with nothing but a
//! bootstrap address configured.
//!
//! Each member announces itself as a provider of the group's rendezvous key for the current
//! time window (`GroupKeys::rendezvous_key`, a keyed hash under a key derived from the epoch
//! secret), and searches the providers of that key; members it finds and is not yet talking
//! to are dialed for sync and remembered like `add_peer`.
//!
//! An announcement names no node (protocol v2, `group::rendezvous`): its provider is a key
//! only members can derive, different for every member and every window, and the member's
//! address travels sealed to the group inside the record. Outsiders cannot compute the key,
//! and a key changes every window, so the DHT nodes holding the announcements learn neither
//! the group, nor the member's address, nor which announcements over time belong together
//! from what the records hold. The requests themselves still come over connections, which
//! show the holders the sender's node id: this module's requests carry no address hints
//! (the driver's quiet keys), but the transport cannot be hidden. PROTOCOL.md, "What
//! observers learn", says exactly what remains.
//!
//! Announcements cover the windows of `now - SKEW`, `now` and `now + SKEW`, so two members
//! whose clocks differ by up to [`CLOCK_SKEW_MS`] still meet in the window either one
//! searches.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use iroh::{EndpointAddr, EndpointId, TransportAddr};
use iroh_tickets::endpoint::EndpointTicket;

use super::inner::{Inner, Lifecycle, now_ms};
use crate::crypto::aead::{self, NONCE_LEN};
use crate::dht::record::{MAX_SEALED_BYTES, provider_key};
use crate::dht::{Key, Outcome, ProviderRecord};
use crate::error::{CoveyError, Result};
use crate::group::rendezvous::{self as sealing, SEALED_OVERHEAD};
use crate::group::{GroupKeys, rendezvous_window};
use crate::store;
use crate::wire::entry::Id32;

/// How far apart two members' clocks may be and still meet.
pub const CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;
/// How long one window stays announced: a window plus the skew, so it outlives the window it
/// names. Each record is signed for at most this long (and at most the DHT's provider TTL).
const ANNOUNCE_TTL_MS: u64 = crate::group::RENDEZVOUS_WINDOW_MS + CLOCK_SKEW_MS;
/// How often announcements are renewed (half their lifetime, as for any provider record).
const REANNOUNCE_MS: u64 = 30 * 60 * 1000;
/// First delay between searches that found nobody; it doubles up to the configured interval.
const FIRST_RETRY_MS: u64 = 1_000;
/// An announcement's expiry is lowered by a random amount below this, so the records one
/// member signs at one moment for two windows do not share an expiry a holder could match.
const EXPIRY_JITTER_MS: u64 = 60_000;
/// Most addresses sealed into an announcement, and kept from one found (as for a DHT hint).
const MAX_SEALED_ADDRS: usize = 8;

/// Where one group's rendezvous stands.
#[derive(Debug, Default)]
struct GroupRendezvous {
    /// Windows announced, and when.
    announced: BTreeSet<u64>,
    announced_at_ms: u64,
    next_search_ms: u64,
    retry_ms: u64,
}

/// The windows to announce in at `now_ms`.
fn announce_windows(now_ms: u64) -> BTreeSet<u64> {
    [
        now_ms.saturating_sub(CLOCK_SKEW_MS),
        now_ms,
        now_ms.saturating_add(CLOCK_SKEW_MS),
    ]
    .into_iter()
    .map(rendezvous_window)
    .collect()
}

/// The expiry of an announcement signed at `now_ms` to live `ttl_ms`, less a jitter drawn from
/// `random`: below [`EXPIRY_JITTER_MS`], and below half the lifetime should that be shorter.
fn announce_expiry(now_ms: u64, ttl_ms: u64, random: u64) -> u64 {
    let jitter = random % EXPIRY_JITTER_MS.min(ttl_ms / 2).max(1);
    now_ms.saturating_add(ttl_ms - jitter)
}

/// The address sealed into this node's announcements: its id and its addresses, direct ones
/// first, at most [`MAX_SEALED_ADDRS`] and as many as fit [`MAX_SEALED_BYTES`] once sealed.
/// Postcard-encoded, as a DHT hint is.
fn address_plaintext(addr: &EndpointAddr) -> Result<Vec<u8>> {
    let mut addrs: Vec<TransportAddr> = addr
        .addrs
        .iter()
        .filter(|a| matches!(a, TransportAddr::Ip(_)))
        .chain(
            addr.addrs
                .iter()
                .filter(|a| !matches!(a, TransportAddr::Ip(_))),
        )
        .take(MAX_SEALED_ADDRS)
        .cloned()
        .collect();
    loop {
        let bytes = postcard::to_stdvec(&EndpointAddr::from_parts(addr.id, addrs.clone()))
            .map_err(|e| CoveyError::internal(format!("encoding our address: {e}")))?;
        if bytes.len() + SEALED_OVERHEAD <= MAX_SEALED_BYTES {
            return Ok(bytes);
        }
        // Even the bare id fits, so this ends with at least that.
        if addrs.pop().is_none() {
            return Err(CoveyError::internal(
                "our address does not fit an announcement",
            ));
        }
    }
}

/// The announcement of `node` in `window` of the group of `keys`: a provider record of the
/// window's rendezvous provider key, provided and signed by the member's identity for the
/// window, expiring at `expires_at_ms`, sealing `address` (see [`address_plaintext`]) with
/// `nonce`.
fn announcement(
    keys: &GroupKeys,
    window: u64,
    node: &Id32,
    address: &[u8],
    expires_at_ms: u64,
    nonce: &[u8; NONCE_LEN],
) -> Result<ProviderRecord> {
    let identity = keys.rendezvous_identity(window, node);
    let key = provider_key(&keys.rendezvous_key(window));
    let provider = *identity.public().as_bytes();
    let associated = sealing::associated_data(&key.0, &provider, expires_at_ms);
    let sealed = sealing::seal(
        &keys.rendezvous_seal_key(window),
        nonce,
        &associated,
        address,
    )?;
    ProviderRecord::sign_sealed(&identity, key, expires_at_ms, sealed)
}

/// The member a found record announces, if it is one: the record opens under the window's
/// seal key, holds exactly one address, and its provider is that node's identity for the
/// window. Fails with `Crypto` otherwise (another group's record, a forgery, a record moved
/// from another key, window or expiry).
fn open_announcement(
    keys: &GroupKeys,
    window: u64,
    record: &ProviderRecord,
) -> Result<EndpointAddr> {
    let associated = sealing::associated_data(&record.key, &record.provider, record.expires_at_ms);
    let plain = sealing::open(
        &keys.rendezvous_seal_key(window),
        &record.sealed,
        &associated,
    )?;
    let (mut addr, rest) = postcard::take_from_bytes::<EndpointAddr>(&plain)
        .map_err(|e| CoveyError::crypto(format!("sealed address does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(CoveyError::crypto("bytes after the sealed address"));
    }
    let expected = keys
        .rendezvous_identity(window, addr.id.as_bytes())
        .public();
    if expected.as_bytes() != &record.provider {
        return Err(CoveyError::crypto(
            "the provider is not the window identity of the node it seals",
        ));
    }
    if addr.addrs.len() > MAX_SEALED_ADDRS {
        addr.addrs = addr.addrs.into_iter().take(MAX_SEALED_ADDRS).collect();
    }
    Ok(addr)
}

/// Announces this node in `window` of the group of `keys`; returns how many nodes accepted
/// the announcement (this node among them when it is one of the closest).
async fn announce(inner: &Arc<Inner>, keys: &GroupKeys, window: u64) -> Result<usize> {
    let protocol = &inner.config.dht.protocol;
    let ttl = ANNOUNCE_TTL_MS
        .min(protocol.provider_ttl_ms)
        .min(protocol.limits.max_provider_ttl_ms);
    let now = now_ms();
    let expires = announce_expiry(now, ttl, rand::random());
    let address = address_plaintext(&inner.endpoint.addr())?;
    let record = announcement(
        keys,
        window,
        inner.id.as_bytes(),
        &address,
        expires,
        &aead::random_nonce(),
    )?;
    inner
        .dht
        .quiet(Key(record.key), now.saturating_add(ANNOUNCE_TTL_MS));
    match inner
        .dht
        .run(move |dht, now| dht.provide_signed(record, now))
        .await?
    {
        Outcome::Provided(n) => Ok(n),
        other => Err(CoveyError::internal(format!(
            "rendezvous announcement ended with {other:?}"
        ))),
    }
}

/// Runs every joined group's rendezvous until shutdown. `wake` is notified when a group is
/// joined, so a new member searches at once.
pub(super) async fn run(inner: Arc<Inner>) {
    let interval_ms = inner.config.dht.rendezvous_interval_ms;
    let mut life = Lifecycle::new(&inner);
    let mut groups: HashMap<Id32, GroupRendezvous> = HashMap::new();
    while life.running().await && !inner.closed.load(Ordering::Acquire) {
        // Keys are computed under the lock and the lock is let go before any await.
        let keys: Vec<(Id32, GroupKeys)> = match inner.groups_read() {
            Ok(g) => g.iter().map(|(id, s)| (*id, s.keys.clone())).collect(),
            Err(_) => return,
        };
        groups.retain(|id, _| keys.iter().any(|(k, _)| k == id));
        for (id, group_keys) in &keys {
            let state = groups.entry(*id).or_insert_with(|| GroupRendezvous {
                retry_ms: FIRST_RETRY_MS,
                ..Default::default()
            });
            let now = now_ms();
            let windows = announce_windows(now);
            if windows != state.announced
                || now >= state.announced_at_ms.saturating_add(REANNOUNCE_MS)
            {
                let mut ok = true;
                for w in &windows {
                    match announce(&inner, group_keys, *w).await {
                        Ok(n) if n > 0 => {}
                        Ok(_) => ok = false,
                        Err(e) => {
                            log::debug!("rendezvous announcement of window {w} failed: {e}");
                            ok = false;
                        }
                    }
                }
                // Until a whole announcement lands, it is retried with the next search.
                if ok {
                    state.announced = windows;
                    state.announced_at_ms = now;
                }
            }
            if now_ms() >= state.next_search_ms {
                let met = search(&inner, group_keys, rendezvous_window(now_ms())).await;
                let wait = if met { interval_ms } else { state.retry_ms };
                // Once members are found the search starts fast again if they all go away.
                state.retry_ms = if met {
                    FIRST_RETRY_MS
                } else {
                    state.retry_ms.saturating_mul(2).min(interval_ms)
                };
                state.next_search_ms = now_ms().saturating_add(wait);
            }
        }
        let next = groups
            .values()
            .map(|s| {
                let announce = if s.announced.is_empty() {
                    s.next_search_ms
                } else {
                    s.announced_at_ms.saturating_add(REANNOUNCE_MS)
                };
                s.next_search_ms.min(announce)
            })
            .min()
            .unwrap_or(u64::MAX);
        let wait = next.saturating_sub(now_ms()).clamp(50, interval_ms);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = inner.rendezvous.notified() => {}
            _ = life.shutdown.changed() => {}
            _ = life.paused.changed() => {}
        }
    }
}

/// The addresses announced in `window` under `keys`: the records found that open (one that
/// does not is counted and skipped). `None` when the search itself failed.
async fn found_in(inner: &Arc<Inner>, keys: &GroupKeys, window: u64) -> Option<Vec<EndpointAddr>> {
    let key = keys.rendezvous_key(window);
    inner
        .dht
        .quiet(provider_key(&key), now_ms().saturating_add(ANNOUNCE_TTL_MS));
    let providers = match inner
        .dht
        .run(move |dht, now| dht.providers(&key, now))
        .await
    {
        Ok(Outcome::Providers(p)) => p,
        Ok(other) => {
            log::debug!("rendezvous search ended with {other:?}");
            return None;
        }
        Err(e) => {
            log::debug!("rendezvous search failed: {e}");
            return None;
        }
    };
    let mut out = Vec::new();
    for record in providers {
        match open_announcement(keys, window, &record) {
            Ok(addr) => out.push(addr),
            Err(e) => {
                inner.dht.count_unopened();
                log::debug!("rendezvous record ignored: {e}");
            }
        }
    }
    Some(out)
}

/// Announces this node under `keys` (a short code's nameplate) in the windows around now;
/// returns how many nodes accepted the announcements.
pub(super) async fn announce_around_now(inner: &Arc<Inner>, keys: &GroupKeys) -> Result<usize> {
    let mut accepted = 0;
    for window in announce_windows(now_ms()) {
        accepted += announce(inner, keys, window).await?;
    }
    Ok(accepted)
}

/// The other nodes announced under `keys` in the windows around now, with their addresses.
pub(super) async fn find_around_now(inner: &Arc<Inner>, keys: &GroupKeys) -> Vec<EndpointAddr> {
    let mut out: Vec<EndpointAddr> = Vec::new();
    for window in announce_windows(now_ms()) {
        for addr in found_in(inner, keys, window).await.unwrap_or_default() {
            if addr.id != inner.id && !out.iter().any(|a| a.id == addr.id) {
                out.push(addr);
            }
        }
    }
    out
}

/// Searches the announcements of `window` of the group of `keys` and dials the members found
/// that this node is not talking to yet. A record that does not open is counted and
/// skipped. Returns whether any other member is known now (found or connected).
async fn search(inner: &Arc<Inner>, keys: &GroupKeys, window: u64) -> bool {
    let Some(found) = found_in(inner, keys, window).await else {
        return false;
    };
    let mut met = false;
    for addr in found {
        let peer: EndpointId = addr.id;
        if peer == inner.id {
            continue;
        }
        met = true;
        // Connected, or already being dialed (a member found before that is offline now):
        // the session or its dial loop has it, so it is not found again.
        let dialing = inner
            .dialing
            .lock()
            .map(|d| d.contains(&peer))
            .unwrap_or(true);
        if inner.sessions.contains(&peer) || dialing {
            continue;
        }
        if addr.addrs.is_empty() {
            log::debug!("rendezvous found {} with no address", peer.fmt_short());
            continue;
        }
        log::info!("rendezvous found group member {}", peer.fmt_short());
        inner.rendezvous_found.fetch_add(1, Ordering::Relaxed);
        let ticket = EndpointTicket::new(addr.clone()).to_string();
        let id = *peer.as_bytes();
        if let Err(e) = inner
            .store_write(move |tx| store::put_peer(tx, &id, &ticket, now_ms()))
            .await
        {
            log::warn!("cannot remember rendezvous peer: {e}");
        }
        inner.clone().spawn_dialer(addr);
    }
    met
}

/// Test hooks: what the rendezvous task does, on demand, for tests of what DHT nodes see.
#[cfg(any(test, feature = "test-utils"))]
impl super::Node {
    /// Announces this node in the rendezvous of `group` for `window` now, exactly as the
    /// rendezvous task announces the current windows (tests use it for a window the clock
    /// has not reached). Returns how many nodes accepted it.
    pub async fn rendezvous_announce(&self, group: &crate::GroupId, window: u64) -> Result<usize> {
        let keys = self.inner.group(group)?.keys.clone();
        announce(&self.inner, &keys, window).await
    }

    /// The nodes this node finds in the rendezvous of `group` for `window`, under the keys of
    /// the epoch it is in (tests search a window the clock has not reached).
    pub async fn rendezvous_find(
        &self,
        group: &crate::GroupId,
        window: u64,
    ) -> Result<Vec<EndpointId>> {
        let keys = self.inner.group(group)?.keys.clone();
        Ok(found_in(&self.inner, &keys, window)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.id)
            .filter(|id| *id != self.inner.id)
            .collect())
    }

    /// Rendezvous records this node found that did not open under its group's key or did not
    /// match the node they sealed, since it opened.
    pub fn rendezvous_unopened(&self) -> u64 {
        self.inner.dht.unopened()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secret32;
    use crate::dht::RecordLimits;
    use crate::error::ErrorKind;
    use crate::group::RENDEZVOUS_WINDOW_MS;

    #[test]
    fn announcements_cover_the_skew_on_both_sides_of_a_window_edge() {
        let edge = 100 * RENDEZVOUS_WINDOW_MS;
        assert_eq!(
            announce_windows(edge + RENDEZVOUS_WINDOW_MS / 2),
            [100].into()
        );
        assert_eq!(announce_windows(edge + 1), [99, 100].into());
        assert_eq!(announce_windows(edge - 1), [99, 100].into());
        // A member searching just past the edge with a clock up to the skew behind ours
        // searches window 99, which we announced while still in window 100's first minutes.
        let skew = CLOCK_SKEW_MS;
        assert!(announce_windows(edge + skew - 1).contains(&rendezvous_window(edge - 1)));
        assert!(!announce_windows(edge + skew + 1).contains(&99));
        assert!(announce_windows(edge - skew).contains(&rendezvous_window(edge)));
    }

    #[test]
    fn expiries_are_jittered_below_the_bound_and_still_outlive_the_skew() {
        let (now, ttl) = (1_000_000, 3_600_000);
        assert_eq!(announce_expiry(now, ttl, 0), now + ttl);
        assert_eq!(
            announce_expiry(now, ttl, EXPIRY_JITTER_MS - 1),
            now + ttl - (EXPIRY_JITTER_MS - 1)
        );
        assert_eq!(announce_expiry(now, ttl, EXPIRY_JITTER_MS), now + ttl);
        let spread: BTreeSet<u64> = (0..64u64)
            .map(|i| announce_expiry(now, ttl, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        assert!(spread.len() > 60, "jittered expiries differ");
        assert!(
            spread
                .iter()
                .all(|e| *e > now + ttl - EXPIRY_JITTER_MS && *e <= now + ttl)
        );
        // A lifetime shorter than the jitter keeps at least half of it.
        assert!(announce_expiry(now, 1_000, u64::MAX) > now + 500);
        assert_eq!(announce_expiry(now, 1, u64::MAX), now + 1);
        // With the default lifetime, the last record of a window (signed at the latest ten
        // minutes before its end) lives past the end plus the skew.
        let default_ttl = ANNOUNCE_TTL_MS.min(crate::dht::DhtConfig::default().provider_ttl_ms);
        assert!(default_ttl - EXPIRY_JITTER_MS > 2 * CLOCK_SKEW_MS);
    }

    fn group(n: u8) -> GroupKeys {
        GroupKeys::from_root(&Secret32::from_bytes([n; 32]))
    }

    fn member(n: u8, port: u16) -> EndpointAddr {
        let id = iroh::SecretKey::from_bytes(&[n; 32]).public();
        EndpointAddr::new(id).with_ip_addr(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    const W: u64 = 494_000;
    const EXPIRES: u64 = (W + 1) * RENDEZVOUS_WINDOW_MS;

    fn record_of(keys: &GroupKeys, window: u64, addr: &EndpointAddr) -> ProviderRecord {
        let plain = address_plaintext(addr).unwrap();
        announcement(
            keys,
            window,
            addr.id.as_bytes(),
            &plain,
            EXPIRES,
            &aead::random_nonce(),
        )
        .unwrap()
    }

    #[test]
    fn an_announcement_opens_to_its_member_for_the_group_and_window_only() {
        let (g, a) = (group(1), member(0xa1, 4242));
        let record = record_of(&g, W, &a);
        // A valid provider record of the window's key that names no node.
        record
            .validate(EXPIRES - 3_600_000, &RecordLimits::default())
            .unwrap();
        assert_eq!(record.key, provider_key(&g.rendezvous_key(W)).0);
        assert_ne!(record.provider, *a.id.as_bytes());
        assert_eq!(open_announcement(&g, W, &record).unwrap(), a);
        // Another group, another window: does not open.
        for (keys, window) in [(group(2), W), (group(1), W + 1)] {
            let err = open_announcement(&keys, window, &record).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Crypto);
        }
        // Two windows, two members: four different providers.
        let b = member(0xb2, 4243);
        let providers: BTreeSet<[u8; 32]> = [(W, &a), (W + 1, &a), (W, &b), (W + 1, &b)]
            .into_iter()
            .map(|(w, m)| record_of(&g, w, m).provider)
            .collect();
        assert_eq!(providers.len(), 4);
    }

    #[test]
    fn a_sealed_address_that_is_not_its_providers_member_is_refused() {
        let (g, a, b) = (group(1), member(0xa1, 4242), member(0xb2, 4243));
        // A member (who can seal) claims b's address under its own window identity.
        let identity = g.rendezvous_identity(W, a.id.as_bytes());
        let key = provider_key(&g.rendezvous_key(W));
        let provider = *identity.public().as_bytes();
        let ad = sealing::associated_data(&key.0, &provider, EXPIRES);
        let plain = address_plaintext(&b).unwrap();
        let sealed =
            sealing::seal(&g.rendezvous_seal_key(W), &[0; NONCE_LEN], &ad, &plain).unwrap();
        let claim = ProviderRecord::sign_sealed(&identity, key, EXPIRES, sealed).unwrap();
        let err = open_announcement(&g, W, &claim).unwrap_err();
        assert!(err.message().contains("window identity"), "{err}");
        // Garbage that opens but is not an address, and an address with bytes after it.
        for plain in [
            vec![0xff; 3],
            [address_plaintext(&a).unwrap(), vec![0]].concat(),
        ] {
            let sealed =
                sealing::seal(&g.rendezvous_seal_key(W), &[0; NONCE_LEN], &ad, &plain).unwrap();
            let bad = ProviderRecord::sign_sealed(&identity, key, EXPIRES, sealed).unwrap();
            assert_eq!(
                open_announcement(&g, W, &bad).unwrap_err().kind(),
                ErrorKind::Crypto
            );
        }
    }

    #[test]
    fn the_sealed_address_always_fits_the_sealed_bound() {
        let id = iroh::SecretKey::from_bytes(&[3; 32]).public();
        // Many IPv6 addresses and a relay: trimmed to at most eight, direct ones first.
        let mut addr =
            EndpointAddr::new(id).with_relay_url("https://relay.example/".parse().unwrap());
        for port in 0..40u16 {
            addr = addr.with_ip_addr(std::net::SocketAddr::from((
                [0x2001, 0xdb8, 0, 0, 0, 0, 0, port],
                port,
            )));
        }
        let plain = address_plaintext(&addr).unwrap();
        assert!(plain.len() + SEALED_OVERHEAD <= MAX_SEALED_BYTES);
        let back: EndpointAddr = postcard::from_bytes(&plain).unwrap();
        assert_eq!(back.id, id);
        assert_eq!(back.addrs.len(), MAX_SEALED_ADDRS);
        assert!(back.addrs.iter().all(|a| matches!(a, TransportAddr::Ip(_))));
        // One huge relay URL does not fit: it is dropped, the id stays.
        let long = format!("https://{}.example/", "r".repeat(600));
        let huge = EndpointAddr::new(id).with_relay_url(long.parse().unwrap());
        let plain = address_plaintext(&huge).unwrap();
        assert!(plain.len() + SEALED_OVERHEAD <= MAX_SEALED_BYTES);
        assert_eq!(
            postcard::from_bytes::<EndpointAddr>(&plain).unwrap(),
            EndpointAddr::new(id)
        );
        // A loopback member's record is well under the bound.
        let record = record_of(&group(1), W, &member(0xa1, 4242));
        assert!(record.sealed.len() < 100, "{}", record.sealed.len());
    }
}
