//! The signer conformance suite against every software backend, key files,
//! and cross-backend checks (verify, never compare bytes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use bonopay_signer::signer::conformance::run_all;
use bonopay_signer::{
    FaultySigner, PublicKey, Signer, SignerError, SimulatedDef, SoftwareSigner, domain_digest,
    verify_output,
};

#[test]
fn p256_software_signer() {
    run_all(Arc::new(SoftwareSigner::generate().unwrap()));
}

#[test]
fn simulated_def_in_memory() {
    run_all(Arc::new(SimulatedDef::ephemeral("DEF-SIM-01").unwrap()));
}

#[test]
fn faulty_signer_while_up_is_transparent() {
    run_all(Arc::new(FaultySigner::new(
        SoftwareSigner::generate().unwrap(),
    )));
}

#[cfg(feature = "aws-lc")]
#[test]
fn aws_lc_signer() {
    let sw = SoftwareSigner::generate().unwrap();
    run_all(Arc::new(
        bonopay_signer::AwsLcSigner::from_pkcs8_pem(&sw.to_pkcs8_pem().unwrap()).unwrap(),
    ));
}

#[cfg(feature = "aws-lc")]
#[test]
fn p256_and_aws_lc_share_a_key_file_and_verify_each_other() {
    let sw = SoftwareSigner::generate().unwrap();
    let aws = bonopay_signer::AwsLcSigner::from_pkcs8_pem(&sw.to_pkcs8_pem().unwrap()).unwrap();
    assert_eq!(sw.key_id(), aws.key_id());
    let d = domain_digest(b"x\0", &[b"cross"]);
    // Each verifies under the other's public key; the bytes differ (p256 is
    // RFC 6979, aws-lc is randomized) and are not compared.
    verify_output(aws.public_key(), &d, &sw.sign(&d).unwrap()).unwrap();
    verify_output(sw.public_key(), &d, &aws.sign(&d).unwrap()).unwrap();
}

#[test]
fn key_files_round_trip_with_owner_only_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seal.pem");
    let a = SoftwareSigner::generate().unwrap();
    a.save(&path).unwrap();
    let b = SoftwareSigner::load(&path).unwrap();
    assert_eq!(a.key_id(), b.key_id());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    // Never overwrite an existing key.
    assert!(matches!(
        SoftwareSigner::generate().unwrap().save(&path),
        Err(SignerError::InvalidKey(_))
    ));
    assert_eq!(SoftwareSigner::load(&path).unwrap().key_id(), a.key_id());
}

#[test]
fn bad_key_files_give_errors_without_echoing_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pem");
    std::fs::write(
        &path,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = SoftwareSigner::load(&path).unwrap_err();
    assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    assert!(matches!(
        SoftwareSigner::load(&dir.path().join("missing.pem")),
        Err(SignerError::InvalidKey(_))
    ));
}

#[test]
fn simulated_def_counter_survives_restart_and_is_bound_to_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("def.pem");
    let d = domain_digest(b"x\0", &[b"def"]);
    let first = {
        let def = SimulatedDef::open("DEF-01", &key).unwrap();
        let _ = def.sign(&d).unwrap();
        def.sign(&d).unwrap()
    };
    assert_eq!(first.device_counter, Some(2));
    let def = SimulatedDef::open("DEF-01", &key).unwrap();
    assert_eq!(def.counter(), 2, "the counter persisted");
    let next = def.sign(&d).unwrap();
    assert_eq!(next.device_counter, Some(3), "never reused after a restart");
    verify_output(def.public_key(), &d, &first).unwrap();
    verify_output(def.public_key(), &d, &next).unwrap();
}

#[test]
fn faulty_signer_fails_when_told() {
    let s = FaultySigner::new(SoftwareSigner::generate().unwrap());
    let d = domain_digest(b"x\0", &[b"f"]);
    s.fail_nth(2);
    let _ = s.sign(&d).unwrap();
    let err = s.sign(&d).unwrap_err();
    assert!(err.is_retryable());
    let _ = s.sign(&d).unwrap();
    s.set_down(true);
    assert!(s.sign(&d).is_err());
    s.set_down(false);
    let _ = s.sign(&d).unwrap();
}

#[test]
fn public_key_parsing_refuses_garbage() {
    assert!(
        PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .is_err()
    );
    assert!(PublicKey::from_spki_der(&[0x30, 0x00]).is_err());
    assert!(PublicKey::from_sec1(&[4; 65]).is_err());
}

#[test]
fn debug_never_shows_the_private_key() {
    let s = SoftwareSigner::generate().unwrap();
    let der = s.to_pkcs8_der().unwrap();
    let pem = s.to_pkcs8_pem().unwrap();
    let dbg = format!("{s:?}");
    // The last 32 bytes of the PKCS#8 DER hold the public point's tail; the
    // private scalar sits in the middle. Check every 16-byte hex window.
    let h = hex::encode(&*der);
    for w in (0..h.len() - 32).step_by(8) {
        assert!(!dbg.contains(&h[w..w + 32]), "{dbg}");
    }
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!dbg.contains(&body[..20]), "{dbg}");
}
