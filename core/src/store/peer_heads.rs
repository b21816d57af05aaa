//! The `peer_heads` table: delivery receipts, the highest seq of each author's log that each
//! peer has acknowledged holding in a group.

use rusqlite::{Connection, params};

use super::codec::{column_bytes, column_u64, to_sql};
use crate::error::Result;
use crate::wire::entry::Id32;
use crate::wire::frame::Head;

/// Records the heads a peer has acknowledged holding in a group (its delivery receipts).
/// Each (peer, author) keeps the highest seq ever recorded: a peer's acknowledged frontier
/// never goes backwards, so a stale or reordered acknowledgement changes nothing. Heads whose
/// seq does not fit the store (above `i64::MAX`, which no real log reaches) are skipped. The
/// group must be stored (a foreign key); heads for an unknown group fail with `Storage`.
pub fn record_peer_heads(
    conn: &Connection,
    group: &Id32,
    peer: &Id32,
    heads: &[Head],
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO peer_heads (group_id, peer, author, seq) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(group_id, peer, author) DO UPDATE SET seq = max(seq, excluded.seq)",
    )?;
    for head in heads {
        // The peer's claim, not ours: one out of range is dropped, not an error for the rest.
        let Ok(seq) = to_sql(head.seq) else {
            log::debug!(
                "skipping an acknowledged head with seq {} out of range",
                head.seq
            );
            continue;
        };
        stmt.execute(params![group, peer, head.author, seq])?;
    }
    Ok(())
}

/// Every peer with an acknowledged head for `author`'s log in a group, and that head's seq,
/// ordered by peer.
pub(crate) fn peer_heads_for(
    conn: &Connection,
    group: &Id32,
    author: &Id32,
) -> Result<Vec<(Id32, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT peer, seq FROM peer_heads WHERE group_id = ?1 AND author = ?2 ORDER BY peer",
    )?;
    let rows = stmt.query_map(params![group, author], |r| {
        Ok((column_bytes(r, 0)?, column_u64(r, 1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Distinct peers that have acknowledged anything in a group, ordered.
pub(crate) fn peers_in_group(conn: &Connection, group: &Id32) -> Result<Vec<Id32>> {
    let mut stmt = conn
        .prepare_cached("SELECT DISTINCT peer FROM peer_heads WHERE group_id = ?1 ORDER BY peer")?;
    let rows = stmt.query_map(params![group], |r| column_bytes(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::store::testing::{group_row, head};
    use crate::store::{Durability, Store, insert_group};

    #[test]
    fn peer_heads_keep_the_max_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (g, other_g) = ([1; 32], [2; 32]);
        let (p, q) = ([0xaa; 32], [0xbb; 32]);
        {
            let store = Store::open(dir.path(), Durability::Normal).unwrap();
            store
                .write(|tx| {
                    insert_group(tx, &group_row(g), 1)?;
                    insert_group(tx, &group_row(other_g), 1)?;
                    record_peer_heads(tx, &g, &p, &[head(1, 5), head(2, 1)])?;
                    // Goes backwards for author 1 (ignored), forwards for author 2.
                    record_peer_heads(tx, &g, &p, &[head(1, 2), head(2, 4)])?;
                    record_peer_heads(tx, &g, &q, &[head(1, 6), head(3, 0)])?;
                    record_peer_heads(tx, &other_g, &p, &[head(1, 100)])?;
                    // Out of the store's range: skipped, not an error.
                    record_peer_heads(tx, &g, &q, &[head(4, u64::MAX)])
                })
                .unwrap();
        }
        let store = Store::open(dir.path(), Durability::Normal).unwrap();
        assert_eq!(
            store.read(|c| peer_heads_for(c, &g, &[1; 32])).unwrap(),
            vec![(p, 5), (q, 6)]
        );
        assert_eq!(
            store.read(|c| peer_heads_for(c, &g, &[2; 32])).unwrap(),
            vec![(p, 4)]
        );
        assert_eq!(
            store.read(|c| peer_heads_for(c, &g, &[4; 32])).unwrap(),
            vec![]
        );
        assert_eq!(store.read(|c| peers_in_group(c, &g)).unwrap(), vec![p, q]);
        assert_eq!(
            store
                .read(|c| peer_heads_for(c, &other_g, &[1; 32]))
                .unwrap(),
            vec![(p, 100)]
        );
        assert_eq!(
            store.read(|c| peers_in_group(c, &[3; 32])).unwrap(),
            Vec::<Id32>::new()
        );
    }

    #[test]
    fn peer_heads_need_a_stored_group_and_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Normal).unwrap();
        let err = store
            .write(|tx| record_peer_heads(tx, &[5; 32], &[6; 32], &[head(1, 1)]))
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Storage);
        store
            .write(|tx| {
                insert_group(tx, &group_row([5; 32]), 1)?;
                record_peer_heads(tx, &[5; 32], &[6; 32], &[head(1, 1)])
            })
            .unwrap();
        assert_eq!(
            store.read(|c| peers_in_group(c, &[5; 32])).unwrap(),
            vec![[6; 32]]
        );
        store
            .write(|tx| {
                tx.execute("DELETE FROM groups WHERE group_id = ?1", params![[5u8; 32]])?;
                Ok(())
            })
            .unwrap();
        assert_eq!(
            store.read(|c| peers_in_group(c, &[5; 32])).unwrap(),
            Vec::<Id32>::new()
        );
    }
}
