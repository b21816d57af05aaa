//! The one error type of the bindings, and the error foreign callbacks return.

use covey_core::ErrorKind;

/// Every failure of a Covey call: a stable kind (the variant) and a human message.
///
/// Bindings get one exception class per kind (`CoveyError.InvalidInput` in Python,
/// `CoveyException.InvalidInput` in Kotlin, `CoveyError.InvalidInput` in Swift), each with its
/// `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum CoveyError {
    /// The caller passed something malformed or out of bounds.
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What was wrong.
        message: String,
    },
    /// The thing asked for does not exist here.
    #[error("not found: {message}")]
    NotFound {
        /// What was missing.
        message: String,
    },
    /// A compare-and-swap or state precondition failed (a data dir already open, say).
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicted.
        message: String,
    },
    /// A client id was reused with different content.
    #[error("idempotency conflict: {message}")]
    IdempotencyConflict {
        /// Which client id.
        message: String,
    },
    /// The caller is not allowed to do this.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// What was refused.
        message: String,
    },
    /// A signature, MAC or key derivation failed.
    #[error("crypto: {message}")]
    Crypto {
        /// What failed.
        message: String,
    },
    /// The local store, or the app's key store, failed or is unavailable.
    #[error("storage: {message}")]
    Storage {
        /// What failed.
        message: String,
    },
    /// A peer or the transport failed.
    #[error("network: {message}")]
    Network {
        /// What failed.
        message: String,
    },
    /// Something took longer than its limit.
    #[error("timeout: {message}")]
    Timeout {
        /// What timed out.
        message: String,
    },
    /// A rate limit was hit.
    #[error("rate limited: {message}")]
    RateLimited {
        /// Which limit.
        message: String,
    },
    /// The node has been shut down.
    #[error("closed: {message}")]
    Closed {
        /// Detail.
        message: String,
    },
    /// A bug: something that should not happen did (a panic in Rust lands here).
    #[error("internal: {message}")]
    Internal {
        /// Detail.
        message: String,
    },
}

impl CoveyError {
    /// Shorthand for [`CoveyError::InvalidInput`].
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            message: message.into(),
        }
    }
}

impl From<covey_core::CoveyError> for CoveyError {
    fn from(e: covey_core::CoveyError) -> Self {
        let message = e.message().to_owned();
        match e.kind() {
            ErrorKind::InvalidInput => Self::InvalidInput { message },
            ErrorKind::NotFound => Self::NotFound { message },
            ErrorKind::Conflict => Self::Conflict { message },
            ErrorKind::IdempotencyConflict => Self::IdempotencyConflict { message },
            ErrorKind::PermissionDenied => Self::PermissionDenied { message },
            ErrorKind::Crypto => Self::Crypto { message },
            ErrorKind::Storage => Self::Storage { message },
            ErrorKind::Network => Self::Network { message },
            ErrorKind::Timeout => Self::Timeout { message },
            ErrorKind::RateLimited => Self::RateLimited { message },
            ErrorKind::Closed => Self::Closed { message },
            ErrorKind::Internal => Self::Internal { message },
        }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for CoveyError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Internal {
            message: format!("app callback failed: {}", e.reason),
        }
    }
}

/// What an app's [`crate::EventListener`] or [`crate::Logger`] may raise. Any exception it
/// raises, of this type or not, is caught, logged and dropped: delivery goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ListenerError {
    /// The callback failed.
    #[error("callback failed: {message}")]
    Failed {
        /// Why.
        message: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ListenerError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed { message: e.reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_kind_maps_to_its_variant_with_the_message() {
        let kinds = [
            ErrorKind::InvalidInput,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::IdempotencyConflict,
            ErrorKind::PermissionDenied,
            ErrorKind::Crypto,
            ErrorKind::Storage,
            ErrorKind::Network,
            ErrorKind::Timeout,
            ErrorKind::RateLimited,
            ErrorKind::Closed,
            ErrorKind::Internal,
        ];
        for kind in kinds {
            let mapped = CoveyError::from(covey_core::CoveyError::new(kind, "why"));
            // The variant name is the core kind's name.
            let debug = format!("{mapped:?}");
            assert!(
                debug.starts_with(&format!("{kind:?} ")),
                "{kind:?} -> {debug}"
            );
            assert!(debug.contains("\"why\""), "{debug}");
        }
    }
}
