//! Group rendezvous: members of a group find each other through the DHT with nothing but a
//! bootstrap address configured.
//!
//! Each member announces itself as a provider of the group's rendezvous key for the current
//! time window (`GroupKeys::rendezvous_key`, a keyed hash under a key derived from the epoch
//! secret), and searches the providers of that key; members it finds and is not yet talking
//! to are dialed for sync and remembered like `add_peer`. Outsiders cannot compute the key,
//! and a key changes every window, so the DHT nodes holding the announcements learn neither
//! the group nor which announcements over time belong together. What they do learn is that
//! the nodes announcing one key within one window share some group: the price of meeting
//! through a public DHT, bounded to the `k` nodes closest to that hour's key.
//!
//! Announcements cover the windows of `now - SKEW`, `now` and `now + SKEW`, so two members
//! whose clocks differ by up to [`CLOCK_SKEW_MS`] still meet in the window either one
//! searches.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use iroh::EndpointId;
use iroh_tickets::endpoint::EndpointTicket;

use super::inner::{Inner, Lifecycle, now_ms};
use crate::dht::Outcome;
use crate::group::rendezvous_window;
use crate::store;
use crate::wire::entry::Id32;

/// How far apart two members' clocks may be and still meet.
pub const CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;
/// Lifetime of an announcement: a window plus the skew, so it outlives the window it names.
const ANNOUNCE_TTL_MS: u64 = crate::group::RENDEZVOUS_WINDOW_MS + CLOCK_SKEW_MS;
/// How often announcements are renewed (half their lifetime, as for any provider record).
const REANNOUNCE_MS: u64 = 30 * 60 * 1000;
/// First delay between searches that found nobody; it doubles up to the configured interval.
const FIRST_RETRY_MS: u64 = 1_000;

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

/// Runs every joined group's rendezvous until shutdown. `wake` is notified when a group is
/// joined, so a new member searches at once.
pub(super) async fn run(inner: Arc<Inner>) {
    let interval_ms = inner.config.dht.rendezvous_interval_ms;
    let mut life = Lifecycle::new(&inner);
    let mut groups: HashMap<Id32, GroupRendezvous> = HashMap::new();
    while life.running().await && !inner.closed.load(Ordering::Acquire) {
        // Keys are computed under the lock and the lock is let go before any await.
        let keys: Vec<(Id32, crate::group::GroupKeys)> = match inner.groups_read() {
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
                    let key = group_keys.rendezvous_key(*w);
                    let outcome = inner
                        .dht
                        .run(move |dht, now| dht.provide(&key, ANNOUNCE_TTL_MS, now))
                        .await;
                    if !matches!(outcome, Ok(Outcome::Provided(n)) if n > 0) {
                        ok = false;
                    }
                }
                // Until a whole announcement lands, it is retried with the next search.
                if ok {
                    state.announced = windows;
                    state.announced_at_ms = now;
                }
            }
            if now_ms() >= state.next_search_ms {
                let key = group_keys.rendezvous_key(rendezvous_window(now_ms()));
                let met = search(&inner, &key).await;
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

/// Searches the providers of `key` and dials the members found that this node is not
/// talking to yet. Returns whether any other member is known now (found or connected).
async fn search(inner: &Arc<Inner>, key: &[u8; 32]) -> bool {
    let key = *key;
    let providers = match inner
        .dht
        .run(move |dht, now| dht.providers(&key, now))
        .await
    {
        Ok(Outcome::Providers(p)) => p,
        Ok(other) => {
            log::debug!("rendezvous search ended with {other:?}");
            return false;
        }
        Err(e) => {
            log::debug!("rendezvous search failed: {e}");
            return false;
        }
    };
    let mut met = false;
    for p in providers {
        let Ok(peer) = EndpointId::from_bytes(&p.provider) else {
            continue;
        };
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
        let Some(addr) = inner.dht.addr_of(&peer) else {
            log::debug!("rendezvous found {} with no address", peer.fmt_short());
            continue;
        };
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

#[cfg(test)]
mod tests {
    use super::*;
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
}
