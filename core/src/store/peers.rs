//! The `peers` table: address tickets of peers to redial after a restart.

use rusqlite::{Connection, params};

use super::codec::to_sql;
use crate::error::Result;
use crate::wire::entry::Id32;

/// Remembers a peer's address ticket, replacing an older one.
pub(crate) fn put_peer(conn: &Connection, node_id: &Id32, ticket: &str, now_ms: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO peers (node_id, ticket, added_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(node_id) DO UPDATE SET ticket = excluded.ticket",
    )?
    .execute(params![node_id, ticket, to_sql(now_ms)?])?;
    Ok(())
}

/// Every remembered peer's ticket.
pub(crate) fn peers(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT ticket FROM peers ORDER BY added_ms")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
