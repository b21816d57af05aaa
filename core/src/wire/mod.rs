//! Everything that crosses the network: the signed entry encoding and the sync frames.
//! Decoding is total: any byte string yields a value or a [`WireError`], never a panic.

inside_mod!(entry, frame);

/// Why bytes from the network were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the encoding needs.
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// More bytes than a limit allows.
    #[error("too large: {what} is {len} bytes, limit {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// A field holds a value this version does not know.
    #[error("malformed: {0}")]
    Malformed(String),
}
