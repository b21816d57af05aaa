//! The app's own secret store (iOS Keychain, Android Keystore), implemented in the foreign
//! language and adapted to `covey_core::KeyStore`.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// What an app's [`KeyStore`] raises when it cannot load or store a secret. Any exception it
/// raises, of this type or not, reaches the caller as `CoveyError.Storage`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum KeyStoreError {
    /// The store failed.
    #[error("key store failed: {message}")]
    Failed {
        /// Why (never the secret).
        message: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for KeyStoreError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed { message: e.reason }
    }
}

/// A store of named secrets the app implements: the device keys (names `device` and
/// `device-x25519`), one root secret per group (`group-<hex id>`) and one secret per epoch of a
/// managed group (`epoch-<64 hex>`). Names are ASCII `[a-z0-9-]`; values are at most a few
/// hundred bytes. Implementations must keep values private and never log them. Calls come
/// from a background thread.
///
/// There is no delete call: leaving a group deletes its secrets by storing an empty value
/// under each name, which Covey reads back as no secret. An implementation may remove the
/// item when it is given an empty value.
#[uniffi::export(foreign)]
pub trait KeyStore: Send + Sync {
    /// The secret stored under `name`, or `None` if there is none.
    fn load(&self, name: String) -> Result<Option<Vec<u8>>, KeyStoreError>;
    /// Stores `secret` under `name`, replacing any previous value.
    fn store(&self, name: String, secret: Vec<u8>) -> Result<(), KeyStoreError>;
}

/// Adapts an app's [`KeyStore`] to the core's trait; failures become `Storage` errors.
/// `delete` is the core's default, an empty value stored under the name, so the foreign
/// interface stays load and store only.
pub(crate) struct ForeignKeyStore {
    inner: Arc<dyn KeyStore>,
}

impl ForeignKeyStore {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn KeyStore>) -> Self {
        Self { inner }
    }
}

impl fmt::Debug for ForeignKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForeignKeyStore")
    }
}

impl covey_core::KeyStore for ForeignKeyStore {
    fn load(&self, name: &str) -> covey_core::Result<Option<Zeroizing<Vec<u8>>>> {
        self.inner
            .load(name.to_owned())
            .map(|v| v.map(Zeroizing::new))
            .map_err(|e| {
                covey_core::CoveyError::storage(format!(
                    "the app's key store failed to load {name:?}: {e}"
                ))
            })
    }

    fn store(&self, name: &str, secret: &[u8]) -> covey_core::Result<()> {
        self.inner
            .store(name.to_owned(), secret.to_vec())
            .map_err(|e| {
                covey_core::CoveyError::storage(format!(
                    "the app's key store failed to store {name:?}: {e}"
                ))
            })
    }
}
