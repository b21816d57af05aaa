//! Strict signatures (PROTOCOL.md, "Entries whose signature must be refused"): the three
//! Ed25519 edge cases on which lax verifiers disagree, each as an entry that decodes but whose
//! signature a Covey node refuses, and proof that each really is the edge case it names (a
//! lax or cofactored verifier would accept it, or it is the valid signature in another form).

use covey_core::dht::{Record, RecordLimits};
use covey_core::testing::{
    SMALL_ORDER_KEY, by_small_order_key, challenge, non_canonical, weak_key_signature,
    with_mixed_order_r, with_non_canonical_s,
};
use covey_core::wire::entry::{SIGNATURE_LEN, SignedEntry};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use super::{PLAINTEXT, SECRET_A, fixture, signing_message};

fn body(raw: &[u8]) -> &[u8] {
    &raw[..raw.len() - SIGNATURE_LEN]
}

fn signature_of(raw: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut out = [0u8; SIGNATURE_LEN];
    out.copy_from_slice(&raw[raw.len() - SIGNATURE_LEN..]);
    out
}

fn point(bytes: &[u8]) -> EdwardsPoint {
    let mut b = [0u8; 32];
    b.copy_from_slice(bytes);
    CompressedEdwardsY(b)
        .decompress()
        .expect("a point on the curve")
}

/// The signature negatives, as the code computes them from the vector entry.
pub(super) fn signature_negatives() -> Vec<(&'static str, Vec<u8>)> {
    let f = fixture();
    let small = by_small_order_key(&f.entry, &f.keys.content_key, PLAINTEXT)
        .expect("seal under the changed header");
    let secret_a = iroh::SecretKey::from_bytes(&SECRET_A);
    vec![
        ("entry.non-canonical-s", with_non_canonical_s(&f.entry)),
        ("entry.small-order-key", small),
        (
            "entry.mixed-order-r",
            with_mixed_order_r(&f.entry, &secret_a),
        ),
    ]
}

fn decoded(name: &str, raw: &[u8]) -> SignedEntry {
    SignedEntry::decode(raw.to_vec(), usize::MAX).unwrap_or_else(|e| {
        panic!("{name}: the structure is valid, only the signature is not: {e}")
    })
}

#[test]
fn the_documented_signature_edge_cases_are_refused() {
    let negatives = super::hex_blocks("negative");
    let f = fixture();
    f.entry
        .verify_signature()
        .expect("the vector entry verifies");
    for (name, _) in signature_negatives() {
        let raw = &negatives[name];
        let entry = decoded(name, raw);
        assert!(entry.verify_signature().is_err(), "{name} verified");
    }

    // Non-canonical S is the valid signature's scalar, encoded otherwise.
    let raw = &negatives["entry.non-canonical-s"];
    let mut wide = [0u8; 64];
    wide[..32].copy_from_slice(&raw[raw.len() - 32..]);
    let reduced = Scalar::from_bytes_mod_order_wide(&wide);
    assert_eq!(reduced.as_bytes()[..], signature_of(f.entry.raw())[32..]);
    assert_ne!(raw[raw.len() - 32..], signature_of(f.entry.raw())[32..]);

    // The small-order key makes the signature valid under the lax (non-strict) check.
    let raw = &negatives["entry.small-order-key"];
    let key = VerifyingKey::from_bytes(&SMALL_ORDER_KEY).expect("the identity decodes as a key");
    assert!(key.is_weak());
    let signature = Signature::from_bytes(&signature_of(raw));
    let message = signing_message(body(raw));
    assert!(
        key.verify(&message, &signature).is_ok(),
        "lax verification accepts it"
    );
    assert!(key.verify_strict(&message, &signature).is_err());

    // The mixed-order R verifies under the cofactored equation only.
    let raw = &negatives["entry.mixed-order-r"];
    let signature = signature_of(raw);
    let message = signing_message(body(raw));
    let r = point(&signature[..32]);
    assert!(
        !r.is_small_order() && !r.is_torsion_free(),
        "R is of mixed order"
    );
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(
        signature[32..].try_into().unwrap(),
    ))
    .expect("S is canonical");
    let k = challenge(signature[..32].try_into().unwrap(), &f.a, &message);
    let residue = EdwardsPoint::mul_base(&s) - k * point(&f.a) - r;
    assert!(!residue.is_identity(), "the cofactorless equation fails");
    assert!(
        residue.mul_by_cofactor().is_identity(),
        "the cofactored one holds"
    );
}

#[test]
fn dht_records_are_verified_as_strictly() {
    let limits = RecordLimits::default();
    let now = 1_000;
    let secret = iroh::SecretKey::from_bytes(&SECRET_A);
    let good = Record::sign(&secret, b"name", b"value", 1, now + 60_000).expect("sign");
    good.validate(now, &limits).expect("a good record");

    let mut bad_s = good.clone();
    bad_s.signature = non_canonical(&good.signature).to_vec();
    assert!(bad_s.validate(now, &limits).is_err());

    let mut weak = good.clone();
    weak.publisher = SMALL_ORDER_KEY;
    let signature = weak_key_signature();
    weak.signature = signature.to_vec();
    let key = VerifyingKey::from_bytes(&SMALL_ORDER_KEY).expect("a key");
    let lax = key.verify(&weak.signing_message(), &Signature::from_bytes(&signature));
    assert!(lax.is_ok(), "lax verification accepts the weak-key record");
    assert!(weak.validate(now, &limits).is_err());
}
