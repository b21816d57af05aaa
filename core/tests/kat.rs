//! Known-answer tests pinning covey-core's crypto primitives to their published vectors:
//!
//! - XChaCha20-Poly1305: draft-irtf-cfrg-xchacha-03, appendix A.3.1.
//! - Argon2id: RFC 9106, section 5.3.
//! - HKDF-SHA256: RFC 5869, appendix A.1 to A.3.
//!
//! Each expected value is copied from the spec, so a dependency bump or a refactor that
//! changes any output fails here loudly.

use covey_core::ErrorKind;
use covey_core::crypto::Secret32;
use covey_core::crypto::aead::{self, NONCE_LEN, TAG_LEN};
use covey_core::crypto::kdf;

/// Decodes hex, ignoring the whitespace used to lay vectors out as in the specs.
fn unhex(s: &str) -> Vec<u8> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(compact).expect("test vector is valid hex")
}

// ---------------------------------------------------------------------------------------------
// XChaCha20-Poly1305, draft-irtf-cfrg-xchacha-03 appendix A.3.1 (AEAD_XChaCha20_Poly1305)
// ---------------------------------------------------------------------------------------------

const XCHACHA_PLAINTEXT: &str = "
    4c616469657320616e642047656e746c656d656e206f662074686520636c6173
    73206f66202739393a204966204920636f756c64206f6666657220796f75206f
    6e6c79206f6e652074697020666f7220746865206675747572652c2073756e73
    637265656e20776f756c642062652069742e";
const XCHACHA_AAD: &str = "50515253c0c1c2c3c4c5c6c7";
const XCHACHA_KEY: &str = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f";
const XCHACHA_IV: &str = "404142434445464748494a4b4c4d4e4f5051525354555657";
const XCHACHA_CIPHERTEXT: &str = "
    bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb
    731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
    2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
    21f9664c97637da9768812f615c68b13b52e";
const XCHACHA_TAG: &str = "c0875924c1c7987947deafd8780acf49";

struct XChaChaVector {
    key: Secret32,
    nonce: [u8; NONCE_LEN],
    aad: Vec<u8>,
    plaintext: Vec<u8>,
    /// Ciphertext with the tag appended, as `seal` returns it.
    sealed: Vec<u8>,
}

fn xchacha_vector() -> XChaChaVector {
    let key = Secret32::from_slice(&unhex(XCHACHA_KEY)).expect("32-byte key");
    let nonce: [u8; NONCE_LEN] = unhex(XCHACHA_IV).try_into().expect("24-byte nonce");
    let mut sealed = unhex(XCHACHA_CIPHERTEXT);
    sealed.extend_from_slice(&unhex(XCHACHA_TAG));
    XChaChaVector {
        key,
        nonce,
        aad: unhex(XCHACHA_AAD),
        plaintext: unhex(XCHACHA_PLAINTEXT),
        sealed,
    }
}

#[test]
fn xchacha_vector_plaintext_is_the_published_sentence() {
    let v = xchacha_vector();
    assert_eq!(
        v.plaintext,
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for \
          the future, sunscreen would be it."
    );
    assert_eq!(v.plaintext.len(), 114);
    assert_eq!(v.sealed.len(), 114 + TAG_LEN);
}

#[test]
fn xchacha_seal_matches_draft_a_3_1() {
    let v = xchacha_vector();
    let sealed = aead::seal(&v.key, &v.nonce, &v.aad, &v.plaintext).expect("seal");
    assert_eq!(hex::encode(&sealed), hex::encode(&v.sealed));
}

#[test]
fn xchacha_open_matches_draft_a_3_1() {
    let v = xchacha_vector();
    let opened = aead::open(&v.key, &v.nonce, &v.aad, &v.sealed).expect("open");
    assert_eq!(opened.as_slice(), v.plaintext.as_slice());
}

/// Byte positions to tamper with in a buffer of `len` bytes: both ends, the middle, and a
/// few in between.
fn positions(len: usize) -> Vec<usize> {
    let mut out = vec![0, 1, len / 3, len / 2, len - 2, len - 1];
    out.sort_unstable();
    out.dedup();
    out
}

fn assert_crypto_failure(result: covey_core::Result<zeroize::Zeroizing<Vec<u8>>>, what: &str) {
    match result {
        Ok(_) => panic!("open accepted a message with {what}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Crypto, "{what}: {e}"),
    }
}

#[test]
fn xchacha_open_rejects_flipped_ciphertext_bits() {
    let v = xchacha_vector();
    let ct_len = v.sealed.len() - TAG_LEN;
    for pos in positions(ct_len) {
        for bit in [0u8, 3, 7] {
            let mut tampered = v.sealed.clone();
            tampered[pos] ^= 1 << bit;
            assert_crypto_failure(
                aead::open(&v.key, &v.nonce, &v.aad, &tampered),
                &format!("ciphertext byte {pos} bit {bit} flipped"),
            );
        }
    }
}

#[test]
fn xchacha_open_rejects_flipped_tag_bits() {
    let v = xchacha_vector();
    let ct_len = v.sealed.len() - TAG_LEN;
    for pos in positions(TAG_LEN) {
        for bit in [0u8, 3, 7] {
            let mut tampered = v.sealed.clone();
            tampered[ct_len + pos] ^= 1 << bit;
            assert_crypto_failure(
                aead::open(&v.key, &v.nonce, &v.aad, &tampered),
                &format!("tag byte {pos} bit {bit} flipped"),
            );
        }
    }
}

#[test]
fn xchacha_open_rejects_flipped_aad_bits() {
    let v = xchacha_vector();
    for pos in positions(v.aad.len()) {
        for bit in [0u8, 3, 7] {
            let mut aad = v.aad.clone();
            aad[pos] ^= 1 << bit;
            assert_crypto_failure(
                aead::open(&v.key, &v.nonce, &aad, &v.sealed),
                &format!("aad byte {pos} bit {bit} flipped"),
            );
        }
    }
}

#[test]
fn xchacha_open_rejects_flipped_nonce_bits() {
    let v = xchacha_vector();
    // Positions 0..16 feed HChaCha20, 16..24 feed the ChaCha20 nonce; cover both halves.
    for pos in positions(NONCE_LEN) {
        for bit in [0u8, 3, 7] {
            let mut nonce = v.nonce;
            nonce[pos] ^= 1 << bit;
            assert_crypto_failure(
                aead::open(&v.key, &nonce, &v.aad, &v.sealed),
                &format!("nonce byte {pos} bit {bit} flipped"),
            );
        }
    }
}

#[test]
fn xchacha_open_rejects_truncated_or_wrong_key() {
    let v = xchacha_vector();
    assert_crypto_failure(
        aead::open(&v.key, &v.nonce, &v.aad, &v.sealed[..v.sealed.len() - 1]),
        "the last byte removed",
    );
    assert_crypto_failure(
        aead::open(&v.key, &v.nonce, &v.aad, &v.sealed[..TAG_LEN - 1]),
        "less than a tag",
    );
    let mut other = *v.key.expose();
    other[31] ^= 1;
    assert_crypto_failure(
        aead::open(&Secret32::from_bytes(other), &v.nonce, &v.aad, &v.sealed),
        "a key with one bit flipped",
    );
}

// ---------------------------------------------------------------------------------------------
// Argon2id, RFC 9106 section 5.3
// ---------------------------------------------------------------------------------------------

#[test]
fn argon2id_keyed_matches_rfc9106_section_5_3() {
    let tag = kdf::argon2id_keyed(&[0x01; 32], &[0x02; 16], &[0x03; 8], &[0x04; 12], 32, 3, 4)
        .expect("argon2id");
    assert_eq!(
        hex::encode(tag.expose()),
        hex::encode(unhex(
            "0d 64 0d f5 8d 78 76 6c 08 c0 37 a3 4a 8b 53 c9
             d0 1e f0 45 2d 75 b6 5e b5 25 20 e9 6b 01 e6 59"
        ))
    );
}

#[test]
fn argon2id_keyed_depends_on_secret_and_associated_data() {
    let base = kdf::argon2id_keyed(&[0x01; 32], &[0x02; 16], &[0x03; 8], &[0x04; 12], 32, 3, 4)
        .expect("argon2id");
    let no_secret = kdf::argon2id_keyed(&[0x01; 32], &[0x02; 16], &[], &[0x04; 12], 32, 3, 4)
        .expect("argon2id");
    let no_ad =
        kdf::argon2id_keyed(&[0x01; 32], &[0x02; 16], &[0x03; 8], &[], 32, 3, 4).expect("argon2id");
    assert_ne!(base, no_secret);
    assert_ne!(base, no_ad);
    assert_ne!(no_secret, no_ad);
}

#[test]
fn argon2id_is_argon2id_keyed_with_empty_secret_and_ad() {
    let plain = kdf::argon2id(b"password", b"somesalt", 32, 3, 4).expect("argon2id");
    let keyed = kdf::argon2id_keyed(b"password", b"somesalt", &[], &[], 32, 3, 4).expect("keyed");
    assert_eq!(plain, keyed);
}

#[test]
fn argon2id_keyed_rejects_oversized_associated_data() {
    let err = kdf::argon2id_keyed(b"password", b"somesalt", &[], &[0u8; 33], 32, 3, 4)
        .expect_err("33 bytes of associated data");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn passphrase_root_is_deterministic_and_domain_separated() {
    let a = kdf::passphrase_root("correct horse battery staple", "family").expect("root");
    let b = kdf::passphrase_root("correct horse battery staple", "family").expect("root");
    assert_eq!(a, b, "same passphrase and name must give the same root");

    let other_name = kdf::passphrase_root("correct horse battery staple", "friends").expect("root");
    assert_ne!(
        a, other_name,
        "a different group name must give a different root"
    );

    let other_pass = kdf::passphrase_root("correct horse battery stapler", "family").expect("root");
    assert_ne!(
        a, other_pass,
        "a different passphrase must give a different root"
    );
}

#[test]
fn passphrase_root_rejects_an_empty_passphrase() {
    let err = kdf::passphrase_root("", "family").expect_err("empty passphrase");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn passphrase_salt_is_blake3_of_label_and_name() {
    for name in ["", "family", "a longer group name with spaces", "ünïcødé"] {
        let mut input = b"covey/v1/passphrase-salt".to_vec();
        input.extend_from_slice(name.as_bytes());
        let expected = *blake3::hash(&input).as_bytes();
        assert_eq!(kdf::passphrase_salt(name), expected, "name {name:?}");
    }
    assert_ne!(
        kdf::passphrase_salt("family"),
        kdf::passphrase_salt("friends")
    );
}

// ---------------------------------------------------------------------------------------------
// HKDF-SHA256, RFC 5869 appendix A.1 to A.3
// ---------------------------------------------------------------------------------------------

struct HkdfCase {
    name: &'static str,
    ikm: &'static str,
    /// `None` for the zero-length salt of test case 3.
    salt: Option<&'static str>,
    info: &'static str,
    okm: &'static str,
}

const HKDF_CASES: [HkdfCase; 3] = [
    HkdfCase {
        name: "A.1 basic test case with SHA-256",
        ikm: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        salt: Some("000102030405060708090a0b0c"),
        info: "f0f1f2f3f4f5f6f7f8f9",
        okm: "3cb25f25faacd57a90434f64d0362f2a
              2d2d0a90cf1a5a4c5db02d56ecc4c5bf
              34007208d5b887185865",
    },
    HkdfCase {
        name: "A.2 SHA-256 with longer inputs/outputs",
        ikm: "000102030405060708090a0b0c0d0e0f
              101112131415161718191a1b1c1d1e1f
              202122232425262728292a2b2c2d2e2f
              303132333435363738393a3b3c3d3e3f
              404142434445464748494a4b4c4d4e4f",
        salt: Some(
            "606162636465666768696a6b6c6d6e6f
             707172737475767778797a7b7c7d7e7f
             808182838485868788898a8b8c8d8e8f
             909192939495969798999a9b9c9d9e9f
             a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        ),
        info: "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf
               c0c1c2c3c4c5c6c7c8c9cacbcccdcecf
               d0d1d2d3d4d5d6d7d8d9dadbdcdddedf
               e0e1e2e3e4e5e6e7e8e9eaebecedeeef
               f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        okm: "b11e398dc80327a1c8e7f78c596a4934
              4f012eda2d4efad8a050cc4c19afa97c
              59045a99cac7827271cb41c65e590e09
              da3275600c2f09b8367793a9aca3db71
              cc30c58179ec3e87c14c01d5c1f3434f
              1d87",
    },
    HkdfCase {
        name: "A.3 SHA-256 with zero-length salt/info",
        ikm: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        salt: None,
        info: "",
        okm: "8da4e775a563c18f715f802a063c5a31
              b8a11f5c5ee1879ec3454e5f3c738d2d
              9d201395faa4b61a96c8",
    },
];

#[test]
fn hkdf_sha256_matches_rfc5869_test_cases_1_to_3() {
    let lengths = [(22, 13, 10, 42), (80, 80, 80, 82), (22, 0, 0, 42)];
    for (case, (ikm_len, salt_len, info_len, l)) in HKDF_CASES.iter().zip(lengths) {
        let ikm = unhex(case.ikm);
        let salt = case.salt.map(unhex);
        let info = unhex(case.info);
        let expected = unhex(case.okm);
        // The octet counts stated in the RFC, so a mangled vector cannot pass silently.
        assert_eq!(ikm.len(), ikm_len, "{}: IKM length", case.name);
        assert_eq!(
            salt.as_ref().map_or(0, Vec::len),
            salt_len,
            "{}: salt length",
            case.name
        );
        assert_eq!(info.len(), info_len, "{}: info length", case.name);
        assert_eq!(expected.len(), l, "{}: L", case.name);

        let mut okm = vec![0u8; l];
        kdf::hkdf_sha256(salt.as_deref(), &ikm, &info, &mut okm).expect(case.name);
        assert_eq!(hex::encode(&okm), hex::encode(&expected), "{}", case.name);
    }
}

#[test]
fn hkdf_sha256_empty_salt_equals_absent_salt() {
    // RFC 5869 section 2.2: an absent salt is HashLen zero bytes, and HMAC pads short keys
    // with zeros, so Some(&[]) and None must agree (test case 3 spells the salt as empty).
    let case = &HKDF_CASES[2];
    let ikm = unhex(case.ikm);
    let mut with_empty = [0u8; 42];
    kdf::hkdf_sha256(Some(&[]), &ikm, &[], &mut with_empty).expect("hkdf");
    assert_eq!(hex::encode(with_empty), hex::encode(unhex(case.okm)));
}

#[test]
fn hkdf_sha256_output_length_limit() {
    let ikm = [0x0bu8; 22];

    let mut max = vec![0u8; 8160];
    kdf::hkdf_sha256(None, &ikm, b"info", &mut max).expect("8160 bytes is allowed");
    assert!(max.iter().any(|&b| b != 0));

    let mut too_long = vec![0u8; 8161];
    let err = kdf::hkdf_sha256(None, &ikm, b"info", &mut too_long).expect_err("8161 bytes");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        too_long.iter().all(|&b| b == 0),
        "a rejected call must not write output"
    );

    let mut empty = [0u8; 0];
    kdf::hkdf_sha256(None, &ikm, b"info", &mut empty).expect("zero bytes is allowed");
}

#[test]
fn hkdf_sha256_prefix_property() {
    // HKDF-Expand output for length L is a prefix of the output for any longer length.
    let case = &HKDF_CASES[1];
    let salt = case.salt.map(unhex);
    let mut long = vec![0u8; 8160];
    kdf::hkdf_sha256(
        salt.as_deref(),
        &unhex(case.ikm),
        &unhex(case.info),
        &mut long,
    )
    .expect("hkdf");
    assert_eq!(hex::encode(&long[..82]), hex::encode(unhex(case.okm)));
}

#[test]
fn derive_is_hkdf_sha256_without_salt() {
    let secret = Secret32::from_bytes([0x42; 32]);
    for label in [
        kdf::LABEL_GROUP_ID,
        kdf::LABEL_CONTENT_KEY,
        kdf::LABEL_IDEMPOTENCY_KEY,
    ] {
        let mut expected = [0u8; 32];
        kdf::hkdf_sha256(None, secret.expose(), label.as_bytes(), &mut expected).expect("hkdf");
        assert_eq!(kdf::derive(&secret, label).expose(), &expected, "{label}");
    }
    assert_ne!(
        kdf::derive(&secret, kdf::LABEL_GROUP_ID),
        kdf::derive(&secret, kdf::LABEL_CONTENT_KEY)
    );
}
