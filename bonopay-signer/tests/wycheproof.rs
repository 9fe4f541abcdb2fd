//! Wycheproof ECDSA P-256/SHA-256 vectors, DER and P1363 files, every test's
//! expected result, through our verifier. A copy lives in `tests/vectors`
//! so a clone is self-contained; it is checked against `../shared` when
//! that is present.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

use bonopay_signer::PublicKey;
use p256::ecdsa::Signature;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn load(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/wycheproof")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Returns (tests run, valid accepted, invalid rejected).
fn run(name: &str, parse: fn(&[u8]) -> Option<Signature>) -> (usize, usize, usize) {
    let file = load(name);
    let (mut n, mut ok, mut rejected) = (0, 0, 0);
    for group in file["testGroups"].as_array().unwrap() {
        let key = PublicKey::from_spki_der(
            &hex::decode(group["publicKeyDer"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        for t in group["tests"].as_array().unwrap() {
            n += 1;
            let id = t["tcId"].as_u64().unwrap();
            let msg = hex::decode(t["msg"].as_str().unwrap()).unwrap();
            let digest: [u8; 32] = Sha256::digest(&msg).into();
            let verdict = hex::decode(t["sig"].as_str().unwrap())
                .ok()
                .and_then(|b| parse(&b))
                .is_some_and(|sig| key.verify_digest_standard(&digest, &sig).is_ok());
            match t["result"].as_str().unwrap() {
                "valid" => {
                    assert!(verdict, "{name} tcId {id} ({}) must verify", t["comment"]);
                    ok += 1;
                }
                "invalid" => {
                    assert!(
                        !verdict,
                        "{name} tcId {id} ({}) must be rejected",
                        t["comment"]
                    );
                    rejected += 1;
                }
                other => panic!("{name} tcId {id}: unexpected result {other}"),
            }
        }
    }
    assert_eq!(
        n as u64,
        file["numberOfTests"].as_u64().unwrap(),
        "{name}: every test ran"
    );
    (n, ok, rejected)
}

#[test]
fn wycheproof_der() {
    let (n, ok, bad) = run("ecdsa_secp256r1_sha256_test.json", |b| {
        Signature::from_der(b).ok()
    });
    assert!(n >= 400 && ok > 0 && bad > 0, "{n} {ok} {bad}");
}

#[test]
fn wycheproof_p1363() {
    let (n, ok, bad) = run("ecdsa_secp256r1_sha256_p1363_test.json", |b| {
        Signature::from_slice(b).ok()
    });
    assert!(n >= 200 && ok > 0 && bad > 0, "{n} {ok} {bad}");
}

#[test]
fn strict_verifier_refuses_high_s_that_the_standard_accepts() {
    // Wycheproof marks high-S signatures valid (standard ECDSA accepts
    // them). Our seal verifier must not: the authentication code is derived
    // from the signature bytes, so a malleated twin must not verify.
    let file = load("ecdsa_secp256r1_sha256_p1363_test.json");
    let mut checked = 0;
    for group in file["testGroups"].as_array().unwrap() {
        let key = PublicKey::from_spki_der(
            &hex::decode(group["publicKeyDer"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        for t in group["tests"].as_array().unwrap() {
            let Ok(raw) = <[u8; 64]>::try_from(hex::decode(t["sig"].as_str().unwrap()).unwrap())
            else {
                continue;
            };
            let Ok(sig) = Signature::from_slice(&raw) else {
                continue;
            };
            if t["result"] != "valid" || sig.normalize_s().is_none() {
                continue;
            }
            let digest: [u8; 32] =
                Sha256::digest(hex::decode(t["msg"].as_str().unwrap()).unwrap()).into();
            key.verify_digest_standard(&digest, &sig).unwrap();
            assert_eq!(
                key.verify_digest(&digest, &bonopay_signer::Signature(raw)),
                Err(bonopay_signer::VerifyError::HighS),
                "tcId {}",
                t["tcId"]
            );
            // Normalized, it is one of ours.
            let low = bonopay_signer::Signature::from_raw_normalized(&raw).unwrap();
            key.verify_digest(&digest, &low).unwrap();
            checked += 1;
        }
    }
    assert!(checked > 0, "the file has valid high-S vectors");
}

#[test]
fn copies_match_the_shared_originals() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/wycheproof");
    if !shared.exists() {
        eprintln!("../shared not present; skipping the copy check");
        return;
    }
    for f in [
        "ecdsa_secp256r1_sha256_test.json",
        "ecdsa_secp256r1_sha256_p1363_test.json",
    ] {
        let ours = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors/wycheproof")
            .join(f);
        assert_eq!(
            std::fs::read(shared.join(f)).unwrap(),
            std::fs::read(ours).unwrap(),
            "{f}"
        );
    }
}
