//! The one error type of the facade, with the stable kinds of API.md.

use std::fmt;

/// The stable kind of a [`CoveyError`]; bindings map it one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller passed something malformed or out of bounds.
    InvalidInput,
    /// The thing asked for does not exist here.
    NotFound,
    /// A compare-and-swap or state precondition failed.
    Conflict,
    /// A client id was reused with different content.
    IdempotencyConflict,
    /// The caller is not allowed to do this.
    PermissionDenied,
    /// A signature, MAC or key derivation failed.
    Crypto,
    /// The local store failed or is unavailable.
    Storage,
    /// A peer or the transport failed.
    Network,
    /// Something took longer than its limit.
    Timeout,
    /// A rate limit was hit.
    RateLimited,
    /// The node has been shut down.
    Closed,
    /// A bug: something that should not happen did.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An error with a stable [`ErrorKind`] and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CoveyError {
    kind: ErrorKind,
    message: String,
}

/// Result alias used across covey-core.
pub type Result<T, E = CoveyError> = std::result::Result<T, E>;

impl CoveyError {
    /// Creates an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message, without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Storage`].
    pub fn storage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Storage, message)
    }

    /// Shorthand for [`ErrorKind::Crypto`].
    pub fn crypto(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Crypto, message)
    }

    /// Shorthand for [`ErrorKind::Network`].
    pub fn network(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Network, message)
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Shorthand for [`ErrorKind::Closed`].
    pub fn closed() -> Self {
        Self::new(ErrorKind::Closed, "the node has been shut down")
    }
}

impl From<rusqlite::Error> for CoveyError {
    fn from(e: rusqlite::Error) -> Self {
        Self::storage(format!("sqlite: {e}"))
    }
}
