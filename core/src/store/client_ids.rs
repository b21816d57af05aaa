//! The `client_ids` table: idempotency keys, the entry each client id was published as.

use rusqlite::{Connection, OptionalExtension, params};

use super::codec::column_bytes;
use crate::error::Result;
use crate::wire::entry::Id32;

/// The entry previously published under a client id, with the MAC of its payload.
pub(crate) fn client_id(
    conn: &Connection,
    group: &Id32,
    client_id: &str,
) -> Result<Option<(Id32, Vec<u8>)>> {
    Ok(conn
        .prepare_cached(
            "SELECT entry_id, payload_mac FROM client_ids WHERE group_id = ?1 AND client_id = ?2",
        )?
        .query_row(params![group, client_id], |r| {
            Ok((column_bytes(r, 0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .optional()?)
}

/// Records the entry published under a client id.
pub(crate) fn put_client_id(
    conn: &Connection,
    group: &Id32,
    client_id: &str,
    entry_id: &Id32,
    payload_mac: &[u8; 32],
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO client_ids (group_id, client_id, entry_id, payload_mac) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![group, client_id, entry_id, payload_mac])?;
    Ok(())
}
