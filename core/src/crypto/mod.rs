//! Cryptographic primitives: every key type zeroizes on drop and every derivation is
//! domain-separated with a `covey/v1/<purpose>` label.

inside_mod!(aead, kdf);
mod secret;

pub use secret::Secret32;
