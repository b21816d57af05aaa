//! Criterion micro-benchmarks of covey-core's hot primitives:
//!
//! - entry seal + sign at 256 B, 1 KiB and 64 KiB,
//! - entry decode + signature check at the same sizes,
//! - XChaCha20-Poly1305 seal and open of 1 KiB,
//! - frame encode and decode of an `Entries` message carrying 100 × 1 KiB entries,
//! - `passphrase_root` (Argon2id, 64 MiB, t = 3), with a small sample size.
//!
//! Run with `cargo bench -p covey-bench --bench micro`.

use std::hint::black_box;
use std::time::Duration;

use covey_core::crypto::{Secret32, aead, kdf};
use covey_core::wire::entry::{ENTRY_VERSION, EntryHeader, EntryKind, SignedEntry};
use covey_core::wire::frame::{self, LENGTH_PREFIX, Message};
use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use criterion::{criterion_group, criterion_main};
use iroh::SecretKey;

/// Payload sizes of the entry benchmarks.
const SIZES: [(usize, &str); 3] = [(256, "256B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

/// A fixed header for `seq` in a fixed group.
fn header(seq: u64) -> EntryHeader {
    EntryHeader {
        version: ENTRY_VERSION,
        kind: EntryKind::Data,
        group_ref: [1u8; 32],
        author: [0u8; 32],
        seq,
        prev: [2u8; 32],
        lamport: seq,
        epoch: 0,
        timestamp_ms: 1_700_000_000_000,
        nonce: aead::random_nonce(),
    }
}

/// A fixed signing key and content key.
fn keys() -> (SecretKey, Secret32) {
    (
        SecretKey::from_bytes(&[7u8; 32]),
        Secret32::from_bytes([9u8; 32]),
    )
}

/// Fills `n` bytes with a repeating pattern (content does not affect these primitives).
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// Seals and signs one entry; panics with a message if the core refuses (a bench bug).
fn seal(secret: &SecretKey, key: &Secret32, plaintext: &[u8]) -> SignedEntry {
    match SignedEntry::seal(header(5), key, secret, plaintext) {
        Ok(e) => e,
        Err(e) => panic!("benchmark setup: sealing an entry failed: {e}"),
    }
}

/// Entry seal + sign (AEAD, BLAKE3 of the body, Ed25519, BLAKE3 id).
fn entry_seal(c: &mut Criterion) {
    let (secret, key) = keys();
    let mut g = c.benchmark_group("entry_seal_sign");
    for (len, name) in SIZES {
        let plaintext = payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched(
                || header(5),
                |h| SignedEntry::seal(h, &key, &secret, black_box(&plaintext)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Entry decode (structure, BLAKE3 id) + signature check.
fn entry_decode_verify(c: &mut Criterion) {
    let (secret, key) = keys();
    let mut g = c.benchmark_group("entry_decode_verify");
    for (len, name) in SIZES {
        let raw = seal(&secret, &key, &payload(len)).into_raw();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched(
                || raw.clone(),
                |raw| {
                    let entry = SignedEntry::decode(raw, usize::MAX)
                        .map_err(|e| e.to_string())
                        .and_then(|e| e.verify_signature().map_err(|e| e.to_string()));
                    if let Err(e) = entry {
                        panic!("benchmark: a valid entry failed to verify: {e}");
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// XChaCha20-Poly1305 seal and open of 1 KiB with 158 bytes of associated data.
fn aead_1k(c: &mut Criterion) {
    let key = Secret32::from_bytes([3u8; 32]);
    let nonce = [4u8; aead::NONCE_LEN];
    let ad = [5u8; 158];
    let plaintext = payload(1024);
    let ciphertext = match aead::seal(&key, &nonce, &ad, &plaintext) {
        Ok(ct) => ct,
        Err(e) => panic!("benchmark setup: aead seal failed: {e}"),
    };
    let mut g = c.benchmark_group("aead_1KiB");
    g.throughput(Throughput::Bytes(1024));
    g.bench_function("seal", |b| {
        b.iter(|| aead::seal(&key, &nonce, &ad, black_box(&plaintext)))
    });
    g.bench_function("open", |b| {
        b.iter(|| aead::open(&key, &nonce, &ad, black_box(&ciphertext)))
    });
    g.finish();
}

/// Frame encode and decode of an `Entries` message with 100 × 1 KiB entries.
fn frame_entries(c: &mut Criterion) {
    let (secret, key) = keys();
    let entries: Vec<Vec<u8>> = (0..100)
        .map(|_| seal(&secret, &key, &payload(1024)).into_raw())
        .collect();
    let message = Message::Entries {
        group: [1u8; 32],
        entries,
    };
    let encoded = match frame::encode(&message) {
        Ok(f) => f,
        Err(e) => panic!("benchmark setup: frame encode failed: {e}"),
    };
    let mut g = c.benchmark_group("frame_entries_100x1KiB");
    g.throughput(Throughput::Bytes(encoded.len() as u64));
    g.bench_function("encode", |b| b.iter(|| frame::encode(black_box(&message))));
    g.bench_function("decode", |b| {
        b.iter(|| frame::decode(black_box(&encoded[LENGTH_PREFIX..])))
    });
    g.finish();
}

/// `passphrase_root`: Argon2id at 64 MiB, t = 3, p = 1.
fn passphrase_root(c: &mut Criterion) {
    let mut g = c.benchmark_group("kdf");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(8));
    g.bench_function("passphrase_root_argon2id_64MiB", |b| {
        b.iter(|| kdf::passphrase_root(black_box("correct horse battery staple"), "bench"))
    });
    g.finish();
}

criterion_group!(
    benches,
    entry_seal,
    entry_decode_verify,
    aead_1k,
    frame_entries,
    passphrase_root
);
criterion_main!(benches);
