//! Cryptographic primitives: every key type zeroizes on drop and every derivation is
//! domain-separated with a `covey/v1/<purpose>` label.

pub mod aead;
pub mod kdf;
mod secret;

pub use secret::Secret32;
