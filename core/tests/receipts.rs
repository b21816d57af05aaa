//! Delivery receipts over real iroh connections on loopback: a peer's acknowledgement shows in
//! `delivery`, is persisted, and survives a restart.

mod common;

use common::*;
use covey_core::{EntryId, ErrorKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_acknowledges_an_entry_and_the_receipt_survives_restart() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let group = a.join_passphrase(PASS, GROUP).await.unwrap().group_id;
    assert_eq!(
        b.join_passphrase(PASS, GROUP).await.unwrap().group_id,
        group
    );

    let meta = a.publish(&group, b"receipt me", None).await.unwrap();
    // Before any peer: nobody else has it, and nobody else is known.
    let before = a.delivery(&group, &meta.entry_id).await.unwrap();
    assert!(before.acked_by.is_empty(), "{before:?}");
    assert!(!before.all_members);
    // Unknown entry and unknown group are NotFound.
    expect_err(
        a.delivery(&group, &EntryId([0x42; 32])).await,
        ErrorKind::NotFound,
        "delivery of an unknown entry",
    );
    expect_err(
        a.delivery(&covey_core::GroupId([0x42; 32]), &meta.entry_id)
            .await,
        ErrorKind::NotFound,
        "delivery in an unknown group",
    );

    connect(&a, &b).await;
    wait_for_count(&b, &group, 1, 20).await;
    let entry_id = meta.entry_id;
    wait_until(20, "b's receipt for a's entry on a", || {
        let a = &a;
        let b_id = b.node_id();
        async move {
            a.delivery(&group, &entry_id)
                .await
                .map(|d| d.acked_by.contains(&b_id))
                .unwrap_or(false)
        }
    })
    .await;
    let acked = a.delivery(&group, &entry_id).await.unwrap();
    assert_eq!(acked.acked_by, vec![b.node_id()]);
    assert!(acked.all_members, "b is the only other member: {acked:?}");
    // b now counts as a member on a, with the seq of its own log (it authored nothing).
    let members = a.members(&group).await.unwrap();
    let b_member = members.iter().find(|m| m.node_id == b.node_id());
    assert_eq!(b_member.map(|m| (m.is_self, m.last_seq)), Some((false, 0)));
    // On b, the author a holds its own entry.
    let on_b = b.delivery(&group, &entry_id).await.unwrap();
    assert!(on_b.acked_by.contains(&a.node_id()), "{on_b:?}");

    // Receipts are persisted: after a restart, with b gone, a still lists b.
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    let a = open(da.path()).await;
    let after = a.delivery(&group, &entry_id).await.unwrap();
    assert_eq!(after.acked_by, vec![b.node_id()]);
    assert!(after.all_members);
    // A newer entry is not covered by b's old receipt.
    let newer = a.publish(&group, b"after restart", None).await.unwrap();
    let fresh = a.delivery(&group, &newer.entry_id).await.unwrap();
    assert!(fresh.acked_by.is_empty(), "{fresh:?}");
    assert!(!fresh.all_members, "b is a known member without this entry");
    a.shutdown().await.unwrap();
}
