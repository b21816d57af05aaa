//! Managed groups over real iroh connections on loopback: create, invite by link and by
//! short code, remove a member (a new epoch), leave, and the bad inputs around them.

mod common;

use std::time::Duration;

use common::{all_entries, expect_err, open, wait_until};
use covey_core::{ErrorKind, Event, GroupId, GroupKind, Node, NodeConfig, Role};

/// A loopback node that knows `seed` as its DHT bootstrap (a short code is found through
/// the DHT).
async fn open_seeded(dir: &std::path::Path, seed: &Node) -> Node {
    let mut config = NodeConfig::loopback(dir);
    config.bootstrap = vec![seed.addr().await.expect("addr")];
    Node::open(config).await.expect("open node")
}

async fn payloads(node: &Node, group: &GroupId) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = all_entries(node, group)
        .await
        .into_iter()
        .map(|e| e.payload)
        .collect();
    out.sort();
    out
}

async fn wait_payloads(node: &Node, group: &GroupId, want: &[&[u8]], what: &str) {
    let mut want: Vec<Vec<u8>> = want.iter().map(|p| p.to_vec()).collect();
    want.sort();
    wait_until(20, what, || {
        let want = want.clone();
        async move { payloads(node, group).await == want }
    })
    .await;
}

/// The secrets in a data dir's default key store, by name.
fn key_store_secrets(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir.join("keys"))
        .unwrap()
        .map(|f| {
            let path = f.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .filter(|(_, secret)| secret.len() == 32)
        .collect()
}

async fn epoch_of(node: &Node, group: &GroupId) -> u64 {
    node.groups()
        .await
        .expect("groups")
        .into_iter()
        .find(|g| &g.group_id == group)
        .map(|g| g.epoch)
        .expect("group joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_devices_create_invite_by_link_and_code_then_remove_one() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(dirs[0].path()).await;
    let b = open(dirs[1].path()).await;
    let c = open_seeded(dirs[2].path(), &a).await;

    let info = a.create_group("family").await.unwrap();
    assert_eq!(info.kind, GroupKind::Managed);
    assert_eq!(info.epoch, 0);
    assert_eq!(info.member_count, 1);
    let g = info.group_id;
    let members = a.members(&g).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].role, Some(Role::Admin));

    // B joins by link, C by short code.
    let for_b = a.create_invite(&g, 3600, true).await.unwrap();
    assert!(for_b.link.starts_with("covey:invite/"));
    let joined = b.accept_invite(&for_b.link).await.unwrap();
    assert_eq!(joined.group_id, g);
    assert_eq!(joined.kind, GroupKind::Managed);
    assert_eq!(joined.name, "family");
    let for_c = a.create_invite(&g, 600, true).await.unwrap();
    assert_eq!(for_c.short_code.len(), 9, "xxxx-xxxx");
    let joined = c.accept_invite(&for_c.short_code).await.unwrap();
    assert_eq!(joined.group_id, g);

    a.publish(&g, b"from a", None).await.unwrap();
    b.publish(&g, b"from b", None).await.unwrap();
    c.publish(&g, b"from c", None).await.unwrap();
    let all: &[&[u8]] = &[b"from a", b"from b", b"from c"];
    for (node, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        wait_payloads(node, &g, all, &format!("{name} holds all three entries")).await;
    }
    let roles: Vec<Option<Role>> = a
        .members(&g)
        .await
        .unwrap()
        .iter()
        .map(|m| m.role)
        .collect();
    assert_eq!(roles.len(), 3);
    assert_eq!(roles.iter().filter(|r| **r == Some(Role::Admin)).count(), 1);
    wait_until(20, "b knows all three members", || async {
        b.members(&g).await.unwrap().len() == 3
    })
    .await;

    // A removes C: one control entry, a new epoch; B follows it.
    let mut b_events = b.subscribe();
    let mut c_events = c.subscribe();
    a.remove_member(&g, &c.node_id()).await.unwrap();
    assert_eq!(epoch_of(&a, &g).await, 1);
    assert_eq!(a.members(&g).await.unwrap().len(), 2);
    wait_until(20, "b reaches epoch 1", || async {
        epoch_of(&b, &g).await == 1
    })
    .await;
    common::wait_event(
        &mut b_events,
        10,
        |e| matches!(e, Event::GroupChanged { group_id, epoch: 1 } if *group_id == g),
    )
    .await;

    // What follows the removal reaches B, never C; what C publishes reaches nobody.
    a.publish(&g, b"after", None).await.unwrap();
    // C was told (the removal reached it before its session ended): it cannot publish.
    common::wait_warning(&mut c_events, 10, "removed-from-group").await;
    expect_err(
        c.publish(&g, b"c after removal", None).await,
        ErrorKind::PermissionDenied,
        "a removed member publishing",
    );
    wait_payloads(
        &b,
        &g,
        &[b"from a", b"from b", b"from c", b"after"],
        "b gets the post-removal entry",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!payloads(&c, &g).await.contains(&b"after".to_vec()));
    assert!(
        !payloads(&a, &g)
            .await
            .contains(&b"c after removal".to_vec())
    );
    assert!(
        !payloads(&b, &g)
            .await
            .contains(&b"c after removal".to_vec())
    );
    // C still reads what it held, and holds no key of the new epoch: A and B have the epoch-1
    // secret in their key stores, C has none.
    assert_eq!(epoch_of(&c, &g).await, 0);
    let epoch_keys = |dir: &std::path::Path| {
        key_store_secrets(dir)
            .into_iter()
            .filter(|(name, _)| name.starts_with("epoch-"))
            .map(|(_, secret)| secret)
            .collect::<Vec<_>>()
    };
    let (at_a, at_b, at_c) = (
        epoch_keys(dirs[0].path()),
        epoch_keys(dirs[1].path()),
        epoch_keys(dirs[2].path()),
    );
    assert_eq!(at_a.len(), 1);
    assert_eq!(at_a, at_b, "a and b hold the same epoch-1 secret");
    assert!(at_c.is_empty(), "c holds no epoch secret");

    // Entries from before the removal stay readable on A and B.
    assert!(payloads(&a, &g).await.contains(&b"from c".to_vec()));

    // Every secret lives in the key store, none in the SQLite files: the root, the epoch-1
    // secret, and the X25519 device key.
    let secrets = key_store_secrets(dirs[0].path());
    assert!(
        secrets.len() >= 4,
        "device, x25519, root and epoch keys: {}",
        secrets.len()
    );
    let names: Vec<&String> = secrets.iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n.starts_with("epoch-")), "{names:?}");
    for file in std::fs::read_dir(dirs[0].path()).unwrap() {
        let path = file.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for (name, secret) in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_slice()),
                "{} holds the secret {name}",
                path.display()
            );
        }
    }

    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_calls_are_refused_to_members_and_passphrase_groups() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(dirs[0].path()).await;
    let b = open(dirs[1].path()).await;
    let g = a.create_group("team").await.unwrap().group_id;
    let invite = a.create_invite(&g, 60, false).await.unwrap();
    b.accept_invite(&invite.link).await.unwrap();
    expect_err(
        b.remove_member(&g, &a.node_id()).await,
        ErrorKind::PermissionDenied,
        "a member removing an admin",
    );
    expect_err(
        b.create_invite(&g, 60, true).await,
        ErrorKind::PermissionDenied,
        "a member inviting",
    );
    expect_err(
        a.remove_member(&g, &a.node_id()).await,
        ErrorKind::InvalidInput,
        "an admin removing itself",
    );
    expect_err(
        a.create_invite(&g, 0, true).await,
        ErrorKind::InvalidInput,
        "a zero ttl",
    );
    let pass = a
        .join_passphrase("quartz ember lattice vole", "old-style")
        .await
        .unwrap();
    let err = expect_err(
        a.remove_member(&pass.group_id, &b.node_id()).await,
        ErrorKind::InvalidInput,
        "remove in a passphrase group",
    );
    assert!(
        err.message().contains("passphrase groups have no admin"),
        "{err}"
    );
    // A multi-use link admits a second joiner: accepting it again here is a no-op.
    let again = b.accept_invite(&invite.link).await.unwrap();
    assert_eq!(again.group_id, g);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_invites_are_refused_with_the_right_kind() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(dirs[0].path()).await;
    let b = open(dirs[1].path()).await;
    let c = open_seeded(dirs[2].path(), &a).await;
    let g = a.create_group("one").await.unwrap().group_id;
    let other = a.create_group("two").await.unwrap().group_id;

    // Reused single-use invite.
    let once = a.create_invite(&g, 60, true).await.unwrap();
    b.accept_invite(&once.link).await.unwrap();
    expect_err(
        c.accept_invite(&once.link).await,
        ErrorKind::PermissionDenied,
        "a used single-use link",
    );
    // Forged: the right id with another secret.
    let real = a.create_invite(&g, 60, true).await.unwrap();
    let mut forged = real.link.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let err = expect_err(
        c.accept_invite(&forged).await,
        ErrorKind::PermissionDenied,
        "a forged secret",
    );
    assert!(err.message().contains("not a valid invite"), "{err}");
    // An invite for another group: the link's group tag swapped for another group's.
    let for_other = a.create_invite(&other, 60, true).await.unwrap();
    let tag_of = |link: &str| link.rsplit('/').nth(2).unwrap().to_owned();
    let swapped = real
        .link
        .replace(&tag_of(&real.link), &tag_of(&for_other.link));
    let err = expect_err(
        c.accept_invite(&swapped).await,
        ErrorKind::PermissionDenied,
        "a link presented for another group",
    );
    assert!(err.message().contains("another group"), "{err}");
    // Expired.
    let short = a.create_invite(&g, 1, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let err = expect_err(
        c.accept_invite(&short.link).await,
        ErrorKind::PermissionDenied,
        "an expired link",
    );
    assert!(err.message().contains("expired"), "{err}");
    // Malformed.
    expect_err(
        c.accept_invite("covey:invite/x").await,
        ErrorKind::InvalidInput,
        "malformed link",
    );
    expect_err(
        c.accept_invite("not a code!").await,
        ErrorKind::InvalidInput,
        "malformed code",
    );
    // Wrong short codes: three attempts, then the code is dead even for the right one.
    let coded = a.create_invite(&g, 600, true).await.unwrap();
    let right = coded.short_code.clone();
    let wrong = {
        let mut chars: Vec<char> = right.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == '2' { '3' } else { '2' };
        chars.into_iter().collect::<String>()
    };
    for attempt in 0..3 {
        let err = expect_err(
            c.accept_invite(&wrong).await,
            ErrorKind::PermissionDenied,
            &format!("wrong code, attempt {attempt}"),
        );
        assert!(err.message().contains("wrong short code"), "{err}");
    }
    let err = expect_err(
        c.accept_invite(&right).await,
        ErrorKind::NotFound,
        "the right code after three wrong ones",
    );
    assert!(err.message().contains("no live short code"), "{err}");
    // Nothing was joined by any of these.
    assert!(c.groups().await.unwrap().is_empty());

    // The inviter offline: a clear, retryable Network error.
    let later = a.create_invite(&g, 600, true).await.unwrap();
    a.shutdown().await.unwrap();
    let err = expect_err(
        c.accept_invite(&later.link).await,
        ErrorKind::Network,
        "a link whose inviter is offline",
    );
    assert!(err.message().contains("try again"), "{err}");
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaving_deletes_the_group_here_and_tells_the_others() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(dirs[0].path()).await;
    let b = open(dirs[1].path()).await;
    let g = a.create_group("club").await.unwrap().group_id;
    b.accept_invite(&a.create_invite(&g, 60, true).await.unwrap().link)
        .await
        .unwrap();
    b.publish(&g, b"hello", None).await.unwrap();
    wait_payloads(&a, &g, &[b"hello"], "a gets b's entry").await;
    let keys_dir = dirs[1].path().join("keys");
    let key_files = || std::fs::read_dir(&keys_dir).unwrap().count();
    let before = key_files();

    let mut b_events = b.subscribe();
    b.leave_group(&g).await.unwrap();
    // Leaving is not being removed: no such warning.
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(100), b_events.recv()).await
    {
        assert!(
            !matches!(&event, Event::Warning { kind, .. } if kind == "removed-from-group"),
            "{event:?}"
        );
    }
    expect_err(
        b.entries(&g, 0, 10).await,
        ErrorKind::NotFound,
        "entries after leaving",
    );
    assert!(b.groups().await.unwrap().is_empty());
    assert_eq!(
        key_files(),
        before - 1,
        "the group's root secret is deleted"
    );
    wait_until(20, "a sees b gone", || async {
        a.members(&g).await.unwrap().len() == 1
    })
    .await;
    // What B wrote before leaving stays with A.
    assert_eq!(payloads(&a, &g).await, vec![b"hello".to_vec()]);
    // B's leave moved the epoch (its secret reached someone no longer in the group).
    wait_until(20, "a heals the epoch", || async {
        epoch_of(&a, &g).await == 1
    })
    .await;
    // Once: no second rotation follows.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(epoch_of(&a, &g).await, 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A loopback node bound to `port` (see `common::free_port`), so it can reopen at the address
/// its peers remember.
async fn open_at(dir: &std::path::Path, port: u16) -> Node {
    common::open_retrying(|| {
        let mut config = NodeConfig::loopback(dir);
        config.bind_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        config
    })
    .await
}

fn is_active(members: &[covey_core::Member], node: &Node) -> bool {
    members.iter().any(|m| m.node_id == node.node_id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_member_publishing_through_a_lagging_member_is_refused_and_purged() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let a = open_at(dirs[0].path(), ports[0]).await;
    let mut b = open_at(dirs[1].path(), ports[1]).await;
    let mut c = open_at(dirs[2].path(), ports[2]).await;
    let g = a.create_group("lagging").await.unwrap().group_id;
    b.accept_invite(&a.create_invite(&g, 60, true).await.unwrap().link)
        .await
        .unwrap();
    c.accept_invite(&a.create_invite(&g, 60, true).await.unwrap().link)
        .await
        .unwrap();
    c.publish(&g, b"c before", None).await.unwrap();
    for node in [&a, &b] {
        wait_payloads(node, &g, &[b"c before"], "c's entry everywhere").await;
    }
    wait_until(20, "b knows c", || async {
        is_active(&b.members(&g).await.unwrap(), &c)
    })
    .await;
    let c_id = c.node_id();
    // B and C go offline; A removes C and goes offline too.
    b.shutdown().await.unwrap();
    drop(b);
    c.shutdown().await.unwrap();
    drop(c);
    a.remove_member(&g, &c_id).await.unwrap();
    a.shutdown().await.unwrap();
    drop(a);
    // C comes back unaware, and keeps publishing: data, and a control entry making a
    // stranger an admin.
    c = open_at(dirs[2].path(), ports[2]).await;
    c.publish(&g, b"c after removal", None).await.unwrap();
    let stranger = iroh::SecretKey::from_bytes(&[0x42; 32]).public();
    c.publish_control_unchecked(
        &g,
        covey_core::group::control::ControlOp::Add {
            member: *stranger.as_bytes(),
            role: Role::Admin,
            x25519: [9; 32],
        },
    )
    .await
    .unwrap();
    // B comes back first and, not knowing of the removal, takes them from C.
    b = open_at(dirs[1].path(), ports[1]).await;
    let mut b_events = b.subscribe();
    wait_payloads(
        &b,
        &g,
        &[b"c before", b"c after removal"],
        "b takes c's late entry",
    )
    .await;
    // Then A comes back: B learns the removal and drops what C wrote past its cutoff.
    let a = open_at(dirs[0].path(), ports[0]).await;
    wait_until(30, "b reaches epoch 1", || async {
        epoch_of(&b, &g).await == 1
    })
    .await;
    wait_payloads(&b, &g, &[b"c before"], "b drops c's late entry").await;
    // (C's control entry was first reported as having no effect: C was never an admin.)
    common::wait_event(&mut b_events, 10, |e| {
        matches!(e, Event::Warning { kind, message }
            if kind == "rejected-entry" && message.contains("removed members"))
    })
    .await;
    assert!(common::counters(&b).await.rejected_entries >= 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(payloads(&a, &g).await, vec![b"c before".to_vec()]);
    for node in [&a, &b] {
        let members = node.members(&g).await.unwrap();
        assert_eq!(members.len(), 2, "c gone and the stranger never added");
        assert!(!members.iter().any(|m| m.node_id == stranger));
    }
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_members_removal_of_an_admin_has_no_effect_and_is_reported() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(dirs[0].path()).await;
    let b = open(dirs[1].path()).await;
    let g = a.create_group("coup").await.unwrap().group_id;
    b.accept_invite(&a.create_invite(&g, 60, true).await.unwrap().link)
        .await
        .unwrap();
    let mut a_events = a.subscribe();
    // B, a plain member, sends what a modified client could: a removal of the admin.
    let block = covey_core::group::seal::seal_epoch_secret(
        &covey_core::crypto::Secret32::random(),
        1,
        &b.entry_group(&g).unwrap(),
        &[(*b.node_id().as_bytes(), b.x25519_public())],
    )
    .unwrap();
    b.publish_control_unchecked(
        &g,
        covey_core::group::control::ControlOp::Remove {
            member: *a.node_id().as_bytes(),
            cutoff: 0,
            epoch: block,
        },
    )
    .await
    .unwrap();
    let warning = common::wait_warning(&mut a_events, 20, "rejected-entry").await;
    assert!(warning.contains("not-admin"), "{warning}");
    for node in [&a, &b] {
        assert_eq!(epoch_of(node, &g).await, 0);
        let members = node.members(&g).await.unwrap();
        assert!(is_active(&members, &a), "the admin is still in the group");
    }
    // A can still publish and B still reads it.
    a.publish(&g, b"still here", None).await.unwrap();
    wait_payloads(&b, &g, &[b"still here"], "b reads the admin's entry").await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_epoch_secret_sealed_to_another_key_is_refused() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(dirs[0].path()).await;
    let b = open(dirs[1].path()).await;
    let g = a.create_group("wrong key").await.unwrap().group_id;
    b.accept_invite(&a.create_invite(&g, 60, true).await.unwrap().link)
        .await
        .unwrap();
    wait_until(20, "a knows b", || async {
        a.members(&g).await.unwrap().len() == 2
    })
    .await;
    let mut b_events = b.subscribe();
    let before = common::counters(&b).await.rejected_entries;
    // A rotate whose copy for B is sealed to some other X25519 key.
    let other = covey_core::group::seal::DeviceKey::random();
    let block = covey_core::group::seal::seal_epoch_secret(
        &covey_core::crypto::Secret32::random(),
        1,
        &a.entry_group(&g).unwrap(),
        &[
            (*a.node_id().as_bytes(), a.x25519_public()),
            (*b.node_id().as_bytes(), other.public()),
        ],
    )
    .unwrap();
    a.publish_control_unchecked(
        &g,
        covey_core::group::control::ControlOp::Rotate { epoch: block },
    )
    .await
    .unwrap();
    assert_eq!(epoch_of(&a, &g).await, 1);
    let warning = common::wait_warning(&mut b_events, 20, "rejected-entry").await;
    assert!(warning.contains("does not open"), "{warning}");
    assert!(common::counters(&b).await.rejected_entries > before);
    assert_eq!(
        epoch_of(&b, &g).await,
        0,
        "b holds no secret it cannot open"
    );
    // B loses nothing it had, and its own entries still reach A.
    b.publish(&g, b"b still writes", None).await.unwrap();
    wait_payloads(&a, &g, &[b"b still writes"], "a gets b's entry").await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_removed_member_no_longer_finds_the_group_in_the_rendezvous() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(dirs[0].path()).await;
    let b = open_seeded(dirs[1].path(), &a).await;
    let c = open_seeded(dirs[2].path(), &a).await;
    let g = a.create_group("hide and seek").await.unwrap().group_id;
    for joiner in [&b, &c] {
        joiner
            .accept_invite(&a.create_invite(&g, 60, true).await.unwrap().link)
            .await
            .unwrap();
    }
    // Windows ahead of the clock, so only what this test announces is there.
    let now = covey_core::group::rendezvous_window(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    let (before, after) = (now + 100, now + 101);
    assert!(a.rendezvous_announce(&g, before).await.unwrap() >= 1);
    wait_until(10, "c finds a while a member", || async {
        c.rendezvous_find(&g, before)
            .await
            .unwrap()
            .contains(&a.node_id())
    })
    .await;
    a.remove_member(&g, &c.node_id()).await.unwrap();
    wait_until(20, "b reaches epoch 1", || async {
        epoch_of(&b, &g).await == 1
    })
    .await;
    assert!(a.rendezvous_announce(&g, after).await.unwrap() >= 1);
    assert!(b.rendezvous_announce(&g, after).await.unwrap() >= 1);
    wait_until(10, "b finds a in the new epoch", || async {
        b.rendezvous_find(&g, after)
            .await
            .unwrap()
            .contains(&a.node_id())
    })
    .await;
    // C, holding only epoch 0, searches the same window and finds nobody.
    for _ in 0..5 {
        assert!(c.rendezvous_find(&g, after).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}
