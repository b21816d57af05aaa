//! The exported surface driven from Rust the way a foreign executor drives it: from plain
//! threads, with app-implemented listeners and key stores. Nodes bind 127.0.0.1 only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use covey_ffi::{
    CoveyError, Event, EventListener, KeyStore, KeyStoreError, ListenerError, Node, NodeConfig,
};

mod support;

use support::block_on;

/// The passphrase of the tests' group: strong enough for the floor (four uncommon words).
const PASS: &str = "quartz ember lattice vole";

fn config(dir: &std::path::Path) -> NodeConfig {
    support::loopback_config(dir)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    fn received(&self) -> usize {
        self.0
            .lock()
            .map(|es| {
                es.iter()
                    .filter(|e| matches!(e, Event::EntryReceived { .. }))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl EventListener for Recorder {
    fn on_event(&self, event: Event) -> Result<(), ListenerError> {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
        Ok(())
    }
}

/// Panics on every event: delivery to it and to others must go on.
#[derive(Default)]
struct Panicker(AtomicUsize);

impl EventListener for Panicker {
    fn on_event(&self, _event: Event) -> Result<(), ListenerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("listener bug");
    }
}

#[test]
fn two_nodes_sync_through_the_ffi_surface() {
    let tmp = tempfile::tempdir().unwrap();
    block_on(async {
        let a = Node::open(config(&tmp.path().join("a"))).await.unwrap();
        let b = Node::open(config(&tmp.path().join("b"))).await.unwrap();
        let rec = Arc::new(Recorder::default());
        let panicker = Arc::new(Panicker::default());
        let _sub1 = b.subscribe(rec.clone()).unwrap();
        let _sub2 = b.subscribe(panicker.clone()).unwrap();
        let ga = a.join_passphrase(PASS.into(), "g".into()).await.unwrap();
        let gb = b.join_passphrase(PASS.into(), "g".into()).await.unwrap();
        assert_eq!(ga.group_id, gb.group_id);
        b.add_peer(a.addr().await.unwrap()).await.unwrap();
        for i in 0..3u8 {
            a.publish(ga.group_id.clone(), vec![i; 256], None)
                .await
                .unwrap();
        }
        wait_until("three EntryReceived events", || rec.received() == 3);
        // GroupChanged, PeerConnected and three EntryReceived at least, despite every panic.
        wait_until("the panicking listener to be called on", || {
            panicker.0.load(Ordering::SeqCst) >= 5
        });
        let entries = b.entries(gb.group_id.clone(), 0, 10).await.unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].payload, vec![2u8; 256]);
        assert_eq!(entries[0].author, a.node_id());
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
        assert!(matches!(b.status().await, Err(CoveyError::Closed { .. })));
        assert!(matches!(
            b.subscribe(rec.clone()),
            Err(CoveyError::Closed { .. })
        ));
    });
}

#[test]
fn errors_map_by_kind() {
    let tmp = tempfile::tempdir().unwrap();
    block_on(async {
        let a = Node::open(config(&tmp.path().join("a"))).await.unwrap();
        let g = a.join_passphrase(PASS.into(), "g".into()).await.unwrap();
        assert!(matches!(
            a.add_peer("nope".into()).await,
            Err(CoveyError::InvalidInput { .. })
        ));
        assert!(matches!(
            a.publish("00".repeat(32), vec![1], None).await,
            Err(CoveyError::NotFound { .. })
        ));
        assert!(matches!(
            a.publish(g.group_id.clone(), vec![0; (1 << 20) + 1], None)
                .await,
            Err(CoveyError::InvalidInput { .. })
        ));
        a.publish(g.group_id.clone(), vec![1], Some("c".into()))
            .await
            .unwrap();
        assert!(matches!(
            a.publish(g.group_id.clone(), vec![2], Some("c".into()))
                .await,
            Err(CoveyError::IdempotencyConflict { .. })
        ));
        assert!(matches!(
            Node::open(config(&tmp.path().join("a"))).await,
            Err(CoveyError::Conflict { .. })
        ));
        let mut bad = config(&tmp.path().join("b"));
        bad.bind_addr = Some("localhost:0".into());
        assert!(matches!(
            Node::open(bad).await,
            Err(CoveyError::InvalidInput { .. })
        ));
        a.shutdown().await.unwrap();
    });
}

#[test]
fn delivery_of_a_local_entry_and_its_errors() {
    let tmp = tempfile::tempdir().unwrap();
    block_on(async {
        let a = Node::open(config(&tmp.path().join("a"))).await.unwrap();
        let g = a.join_passphrase(PASS.into(), "g".into()).await.unwrap();
        let meta = a.publish(g.group_id.clone(), vec![1], None).await.unwrap();
        let d = a
            .delivery(g.group_id.clone(), meta.entry_id.clone())
            .await
            .unwrap();
        assert!(d.acked_by.is_empty(), "{d:?}");
        assert!(!d.all_members);
        assert!(matches!(
            a.delivery(g.group_id.clone(), "00".repeat(32)).await,
            Err(CoveyError::NotFound { .. })
        ));
        assert!(matches!(
            a.delivery("00".repeat(32), meta.entry_id.clone()).await,
            Err(CoveyError::NotFound { .. })
        ));
        assert!(matches!(
            a.delivery(g.group_id.clone(), "zz".repeat(32)).await,
            Err(CoveyError::InvalidInput { .. })
        ));
        assert!(matches!(
            a.delivery("abc".into(), meta.entry_id.clone()).await,
            Err(CoveyError::InvalidInput { .. })
        ));
        a.shutdown().await.unwrap();
        assert!(matches!(
            a.delivery(g.group_id.clone(), meta.entry_id.clone()).await,
            Err(CoveyError::Closed { .. })
        ));
    });
}

#[test]
fn dht_records_and_providers_on_a_lone_node() {
    let tmp = tempfile::tempdir().unwrap();
    block_on(async {
        let a = Node::open(config(&tmp.path().join("a"))).await.unwrap();
        let seq = a.dht_put("n".into(), vec![7, 8], 60, None).await.unwrap();
        assert_eq!(seq, 1);
        let r = a.dht_get(a.node_id(), "n".into()).await.unwrap().unwrap();
        assert_eq!(r.publisher, a.node_id());
        assert_eq!(r.name, "n");
        assert_eq!(r.value, vec![7, 8]);
        assert_eq!(r.seq, 1);
        assert!(r.expires_at_ms > 0);
        assert!(matches!(
            a.dht_put("n".into(), vec![9], 60, Some(0)).await,
            Err(CoveyError::Conflict { .. })
        ));
        assert!(matches!(
            a.dht_put(String::new(), vec![9], 60, None).await,
            Err(CoveyError::InvalidInput { .. })
        ));
        assert!(matches!(
            a.dht_get("zz".into(), "n".into()).await,
            Err(CoveyError::InvalidInput { .. })
        ));
        assert!(
            a.dht_providers(b"unknown".to_vec())
                .await
                .unwrap()
                .is_empty()
        );
        a.shutdown().await.unwrap();
    });
}

#[test]
fn dht_status_and_value_limit_on_a_lone_node() {
    let tmp = tempfile::tempdir().unwrap();
    block_on(async {
        // The default limit is 1 KiB: 1024 bytes go in, 1025 do not.
        let a = Node::open(config(&tmp.path().join("a"))).await.unwrap();
        let status = a.status().await.unwrap();
        assert_eq!(status.dht.contacts, 0, "{:?}", status.dht);
        assert_eq!(status.dht.rendezvous_found, 0, "{:?}", status.dht);
        assert_eq!(status.dht.bootstrap_fallbacks, 0, "{:?}", status.dht);
        assert_eq!(a.dht_put("d".into(), vec![1; 1024], 60, None).await, Ok(1));
        let err = a
            .dht_put("d".into(), vec![1; 1025], 60, None)
            .await
            .unwrap_err();
        assert!(matches!(err, CoveyError::InvalidInput { .. }), "{err:?}");
        assert!(err.to_string().contains("1024"), "{err}");
        a.shutdown().await.unwrap();

        // A configured 2 KiB limit, with rendezvous off.
        let mut c = config(&tmp.path().join("b"));
        c.dht_max_value_bytes = Some(2048);
        c.dht_rendezvous = Some(false);
        let b = Node::open(c).await.unwrap();
        assert_eq!(b.dht_put("v".into(), vec![2; 2048], 60, None).await, Ok(1));
        let r = b.dht_get(b.node_id(), "v".into()).await.unwrap().unwrap();
        assert_eq!(r.value, vec![2; 2048]);
        let err = b
            .dht_put("v".into(), vec![2; 2049], 60, None)
            .await
            .unwrap_err();
        assert!(matches!(err, CoveyError::InvalidInput { .. }), "{err:?}");
        assert!(err.to_string().contains("2048"), "{err}");
        // The refused put changed nothing.
        let r = b.dht_get(b.node_id(), "v".into()).await.unwrap().unwrap();
        assert_eq!((r.seq, r.value.len()), (1, 2048));
        let status = b.status().await.unwrap();
        assert_eq!(status.dht.contacts, 0, "{:?}", status.dht);
        assert_eq!(status.dht.rendezvous_found, 0, "{:?}", status.dht);
        b.shutdown().await.unwrap();

        // The ceiling itself, 32 KiB, is allowed.
        let mut c = config(&tmp.path().join("c"));
        c.dht_max_value_bytes = Some(32 * 1024);
        let n = Node::open(c).await.unwrap();
        assert_eq!(
            n.dht_put("big".into(), vec![3; 32 * 1024], 60, None).await,
            Ok(1)
        );
        n.shutdown().await.unwrap();

        // Zero, above the 32 KiB ceiling, and far above it are refused at open.
        for (i, bytes) in [0, 32 * 1024 + 1, 40_000, u64::MAX].into_iter().enumerate() {
            let mut c = config(&tmp.path().join(format!("bad{i}")));
            c.dht_max_value_bytes = Some(bytes);
            let res = Node::open(c).await;
            assert!(
                matches!(res, Err(CoveyError::InvalidInput { .. })),
                "dht_max_value_bytes {bytes}: {:?}",
                res.err()
            );
        }
    });
}

#[derive(Default)]
struct MemKeys {
    secrets: Mutex<HashMap<String, Vec<u8>>>,
    stores: AtomicUsize,
}

impl KeyStore for MemKeys {
    fn load(&self, name: String) -> Result<Option<Vec<u8>>, KeyStoreError> {
        Ok(self.secrets.lock().unwrap().get(&name).cloned())
    }
    fn store(&self, name: String, secret: Vec<u8>) -> Result<(), KeyStoreError> {
        self.stores.fetch_add(1, Ordering::SeqCst);
        self.secrets.lock().unwrap().insert(name, secret);
        Ok(())
    }
}

struct FailingKeys;

impl KeyStore for FailingKeys {
    fn load(&self, _name: String) -> Result<Option<Vec<u8>>, KeyStoreError> {
        Err(KeyStoreError::Failed {
            message: "locked".into(),
        })
    }
    fn store(&self, _name: String, _secret: Vec<u8>) -> Result<(), KeyStoreError> {
        Err(KeyStoreError::Failed {
            message: "locked".into(),
        })
    }
}

#[test]
fn an_app_key_store_is_used_and_its_failures_are_storage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    block_on(async {
        let keys = Arc::new(MemKeys::default());
        let mut c = config(&tmp.path().join("a"));
        c.key_store = Some(keys.clone());
        let a = Node::open(c).await.unwrap();
        let id = a.node_id();
        assert!(keys.secrets.lock().unwrap().contains_key("device"));
        assert!(keys.secrets.lock().unwrap().contains_key("device-x25519"));
        a.shutdown().await.unwrap();
        let stores = keys.stores.load(Ordering::SeqCst);

        let mut c = config(&tmp.path().join("a"));
        c.key_store = Some(keys.clone());
        let again = Node::open(c).await.unwrap();
        assert_eq!(again.node_id(), id);
        // Loaded, not re-created.
        assert_eq!(keys.stores.load(Ordering::SeqCst), stores);
        again.shutdown().await.unwrap();

        let mut c = config(&tmp.path().join("b"));
        c.key_store = Some(Arc::new(FailingKeys));
        match Node::open(c).await {
            Err(CoveyError::Storage { message }) => {
                assert!(message.contains("app's key store"), "{message}")
            }
            other => panic!("expected Storage, got {:?}", other.map(|_| ())),
        }
    });
}

#[test]
fn managed_group_through_the_ffi_surface() {
    use covey_ffi::{GroupKind, MemberRole};
    let tmp = tempfile::tempdir().unwrap();
    block_on(async {
        let keys = Arc::new(MemKeys::default());
        let a = Node::open(config(&tmp.path().join("a"))).await.unwrap();
        let mut c = config(&tmp.path().join("b"));
        c.key_store = Some(keys.clone());
        let b = Node::open(c).await.unwrap();
        assert!(keys.secrets.lock().unwrap().contains_key("device-x25519"));

        let info = a.create_group("family".into()).await.unwrap();
        assert_eq!(info.kind, GroupKind::Managed);
        assert_eq!((info.epoch, info.member_count), (0, 1));
        let g = info.group_id;
        let members = a.members(g.clone()).await.unwrap();
        assert_eq!(members[0].role, Some(MemberRole::Admin));

        let invite = a.create_invite(g.clone(), 3600, true).await.unwrap();
        assert!(invite.link.starts_with("covey:invite/"));
        assert_eq!(invite.short_code.len(), 9);
        assert!(invite.expires_at_ms > 0);
        // The credentials never reach a log through Debug.
        let shown = format!("{invite:?}");
        assert!(!shown.contains(&invite.link) && !shown.contains(&invite.short_code));
        let joined = b.accept_invite(invite.link.clone()).await.unwrap();
        assert_eq!(
            (joined.group_id.as_str(), joined.kind),
            (g.as_str(), GroupKind::Managed)
        );
        assert!(
            keys.secrets
                .lock()
                .unwrap()
                .contains_key(&format!("group-{g}"))
        );

        b.publish(g.clone(), b"from b".to_vec(), None)
            .await
            .unwrap();
        wait_until("a to get b's entry", || {
            block_on(a.entries(g.clone(), 0, 10)).is_ok_and(|es| es.len() == 1)
        });
        let roles: Vec<_> = a
            .members(g.clone())
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.node_id == b.node_id(), m.role))
            .collect();
        assert!(
            roles.contains(&(true, Some(MemberRole::Member))),
            "{roles:?}"
        );

        // Bad input: a member removing, a malformed node id, the used link, a passphrase
        // group, passphrase members with no role.
        assert!(matches!(
            b.remove_member(g.clone(), a.node_id()).await,
            Err(CoveyError::PermissionDenied { .. })
        ));
        assert!(matches!(
            b.create_invite(g.clone(), 60, true).await,
            Err(CoveyError::PermissionDenied { .. })
        ));
        assert!(matches!(
            a.remove_member(g.clone(), "not a node id".into()).await,
            Err(CoveyError::InvalidInput { .. })
        ));
        assert!(matches!(
            a.remove_member("zz".into(), b.node_id()).await,
            Err(CoveyError::InvalidInput { .. })
        ));
        assert!(matches!(
            a.create_invite(g.clone(), 0, true).await,
            Err(CoveyError::InvalidInput { .. })
        ));
        assert!(matches!(
            a.accept_invite("covey:invite/x".into()).await,
            Err(CoveyError::InvalidInput { .. })
        ));
        let pass = a.join_passphrase(PASS.into(), "old".into()).await.unwrap();
        match a.remove_member(pass.group_id.clone(), b.node_id()).await {
            Err(CoveyError::InvalidInput { message }) => {
                assert!(
                    message.contains("passphrase groups have no admin"),
                    "{message}"
                )
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        assert!(
            a.members(pass.group_id)
                .await
                .unwrap()
                .iter()
                .all(|m| m.role.is_none())
        );

        // B leaves: the group is gone there, and its secrets are emptied in the app's store
        // (the foreign KeyStore has no delete; the adapter stores an empty value).
        b.leave_group(g.clone()).await.unwrap();
        assert!(matches!(
            b.entries(g.clone(), 0, 10).await,
            Err(CoveyError::NotFound { .. })
        ));
        assert_eq!(
            keys.secrets.lock().unwrap().get(&format!("group-{g}")),
            Some(&Vec::new())
        );
        assert!(matches!(
            b.leave_group(g.clone()).await,
            Err(CoveyError::NotFound { .. })
        ));
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    });
}
