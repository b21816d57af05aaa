//! How Covey's values sit in SQLite columns: every query in `store` converts integers and
//! fixed-size blobs through this module and nothing else.
//!
//! SQLite integers are i64; Covey's sequence numbers, cursors, clocks and times are u64.
//! Two column formats exist on disk and both stay as they are (databases in the field hold
//! them):
//!
//! - **Plain** ([`to_sql`], [`column_u64`]): the value as is. Every table but the DHT's uses
//!   it. Values above `i64::MAX` do not fit and are refused on write as `InvalidInput` (no
//!   log, clock or count gets there; ingest rejects entries that claim to); a negative value
//!   read back can only be corruption and is a `Storage` error naming the column.
//! - **Ordered** ([`to_sql_ordered`], [`column_ordered_u64`]): `v XOR 2^63` reinterpreted as
//!   i64, for the DHT tables, whose sequences and expiries come from peers and may be anything
//!   up to `u64::MAX`. It keeps the order, so SQL comparisons agree with the u64 ones over the
//!   whole range, and every i64 decodes, so it cannot fail.
//!
//! Ids, keys and MACs are fixed-size BLOBs read with [`column_bytes`], which names the column
//! when a blob has the wrong length. Column helpers return `rusqlite::Result` so they work
//! inside `query_map` closures; the error becomes a `Storage` [`CoveyError`] at the `?`.

use rusqlite::Row;
use rusqlite::types::{FromSqlError, Type};

use crate::error::{CoveyError, Result};

/// A value read from disk that its column cannot hold.
#[derive(Debug, thiserror::Error)]
#[error("corrupt store: column `{column}` holds {found}, expected {expected}")]
struct Corrupt {
    column: String,
    found: String,
    expected: String,
}

fn corrupt(
    row: &Row<'_>,
    idx: usize,
    ty: Type,
    found: String,
    expected: String,
) -> rusqlite::Error {
    let column = row
        .as_ref()
        .column_name(idx)
        .map_or_else(|_| format!("#{idx}"), str::to_owned);
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        ty,
        Box::new(Corrupt {
            column,
            found,
            expected,
        }),
    )
}

/// A u64 for a plain INTEGER column; above `i64::MAX` it does not fit (`InvalidInput`).
pub(crate) fn to_sql(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| CoveyError::invalid(format!("{v} does not fit the store")))
}

/// A plain integer read outside a row (an aggregate, a rowid) back to u64; `what` names it
/// in the `Storage` error a negative value gets.
pub(crate) fn from_sql(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| {
        CoveyError::storage(format!(
            "corrupt store: {what} is {v}, expected an unsigned integer"
        ))
    })
}

/// Column `idx` of `row`, a plain INTEGER column, as u64.
pub(crate) fn column_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v).map_err(|_| {
        corrupt(
            row,
            idx,
            Type::Integer,
            v.to_string(),
            "an unsigned integer".into(),
        )
    })
}

/// A u64 for an ordered INTEGER column (the DHT tables): `0` is `i64::MIN`, `u64::MAX` is
/// `i64::MAX`.
pub(crate) fn to_sql_ordered(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

/// The inverse of [`to_sql_ordered`] on a plain i64.
pub(crate) fn from_sql_ordered(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// Column `idx` of `row`, an ordered INTEGER column, as u64.
pub(crate) fn column_ordered_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    row.get::<_, i64>(idx).map(from_sql_ordered)
}

/// A count or limit for SQL: a `usize` above `i64::MAX` means no limit, so it saturates.
pub(crate) fn limit(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Column `idx` of `row`, a BLOB of exactly `N` bytes (an id, key or MAC).
pub(crate) fn column_bytes<const N: usize>(row: &Row<'_>, idx: usize) -> rusqlite::Result<[u8; N]> {
    let blob = row.get_ref(idx)?.as_blob().map_err(|e| match e {
        FromSqlError::InvalidType => {
            corrupt(row, idx, Type::Blob, "a non-blob".into(), "a blob".into())
        }
        other => rusqlite::Error::FromSqlConversionFailure(idx, Type::Blob, Box::new(other)),
    })?;
    <[u8; N]>::try_from(blob).map_err(|_| {
        corrupt(
            row,
            idx,
            Type::Blob,
            format!("{} bytes", blob.len()),
            format!("{N} bytes"),
        )
    })
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    #[test]
    fn plain_integers_round_trip_and_refuse_what_does_not_fit() {
        assert_eq!(to_sql(0).unwrap(), 0);
        assert_eq!(to_sql(i64::MAX as u64).unwrap(), i64::MAX);
        let err = to_sql(i64::MAX as u64 + 1).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert_eq!(from_sql(7, "a count").unwrap(), 7);
        let err = from_sql(-1, "a count").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Storage);
        assert!(err.message().contains("a count is -1"), "{err}");
    }

    #[test]
    fn order_preserving_encoding_round_trips() {
        let samples = [
            0,
            1,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        for w in samples.windows(2) {
            assert!(
                to_sql_ordered(w[0]) < to_sql_ordered(w[1]),
                "{} vs {}",
                w[0],
                w[1]
            );
        }
        for v in samples {
            assert_eq!(from_sql_ordered(to_sql_ordered(v)), v);
        }
        assert_eq!(to_sql_ordered(0), i64::MIN);
        assert_eq!(to_sql_ordered(u64::MAX), i64::MAX);
    }

    /// Reads the one row of `sql` with `read`, as a `Storage` error message on failure.
    fn read<T>(sql: &str, read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let conn = Connection::open_in_memory().unwrap();
        Ok(conn.query_row(sql, [], read)?)
    }

    #[test]
    fn bad_values_from_disk_are_storage_errors_naming_the_column() {
        assert_eq!(read("SELECT 5 AS seq", |r| column_u64(r, 0)).unwrap(), 5);
        let err = read("SELECT -5 AS seq", |r| column_u64(r, 0)).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Storage);
        assert!(err.message().contains("column `seq` holds -5"), "{err}");

        let id = read("SELECT zeroblob(32) AS author", |r| {
            column_bytes::<32>(r, 0)
        });
        assert_eq!(id.unwrap(), [0; 32]);
        let err = read("SELECT zeroblob(31) AS author", |r| {
            column_bytes::<32>(r, 0)
        })
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Storage);
        assert!(
            err.message().contains("column `author` holds 31 bytes"),
            "{err}"
        );
        let err = read("SELECT 'text' AS author", |r| column_bytes::<32>(r, 0)).unwrap_err();
        assert!(
            err.message().contains("column `author` holds a non-blob"),
            "{err}"
        );

        assert_eq!(
            read(
                "SELECT -9223372036854775808 AS seq",
                |r| column_ordered_u64(r, 0)
            )
            .unwrap(),
            0
        );
    }
}
