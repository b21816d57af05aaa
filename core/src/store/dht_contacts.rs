//! The `dht_contacts` table: DHT contacts seen answering, with an address ticket to dial them
//! by, so a node whose bootstrap tickets all fail can still rejoin the network it knew.

use rusqlite::{Connection, params};

use super::codec::{limit, to_sql};
use crate::error::Result;
use crate::wire::entry::Id32;

/// Replaces the cached DHT contacts with `contacts` (node id, address ticket, last seen).
pub(crate) fn replace_dht_contacts(
    conn: &Connection,
    contacts: &[(Id32, String, u64)],
) -> Result<()> {
    conn.execute("DELETE FROM dht_contacts", [])?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO dht_contacts (node_id, ticket, last_seen_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(node_id) DO UPDATE SET ticket = excluded.ticket,
             last_seen_ms = excluded.last_seen_ms",
    )?;
    for (id, ticket, seen) in contacts {
        stmt.execute(params![id, ticket, to_sql(*seen)?])?;
    }
    Ok(())
}

/// The tickets of at most `max` cached DHT contacts, most recently seen first.
pub(crate) fn dht_contacts(conn: &Connection, max: usize) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT ticket FROM dht_contacts ORDER BY last_seen_ms DESC, node_id LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit(max)], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, Store};

    #[test]
    fn dht_contacts_are_replaced_and_listed_most_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Normal).unwrap();
        let rows = vec![
            ([1; 32], "t1".to_owned(), 10),
            ([2; 32], "t2".to_owned(), 30),
            ([3; 32], "t3".to_owned(), 20),
        ];
        store.write(|tx| replace_dht_contacts(tx, &rows)).unwrap();
        assert_eq!(
            store.read(|c| dht_contacts(c, 10)).unwrap(),
            ["t2", "t3", "t1"]
        );
        assert_eq!(store.read(|c| dht_contacts(c, 1)).unwrap(), ["t2"]);
        store
            .write(|tx| replace_dht_contacts(tx, &rows[..1]))
            .unwrap();
        assert_eq!(store.read(|c| dht_contacts(c, 10)).unwrap(), ["t1"]);
        drop(store);
        let store = Store::open(dir.path(), Durability::Normal).unwrap();
        assert_eq!(store.read(|c| dht_contacts(c, 10)).unwrap(), ["t1"]);
    }
}
