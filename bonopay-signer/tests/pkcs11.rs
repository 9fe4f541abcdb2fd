//! The PKCS#11 signer against a real SoftHSM2 token.
//!
//! SoftHSM reads its configuration from `SOFTHSM2_CONF` when the library is
//! initialized, once per process. Each test therefore runs in a child copy
//! of this test binary, started with its own `SOFTHSM2_CONF` and token
//! directory (no shared state, no `unsafe` environment changes). The token
//! and a non-extractable P-256 key are created inside it through cryptoki.
//!
//! Requires the `softhsm2` package (`.ci/run` installs it). Set
//! `BONOPAY_PKCS11_MODULE` to use another module path.
#![cfg(feature = "pkcs11")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use bonopay_signer::signer::pkcs11::{PinSource, Pkcs11Config, Pkcs11Signer, provision};
use bonopay_signer::{
    PublicKey, Signer, SignerError, SoftwareSigner, domain_digest, verify_output,
};
use zeroize::Zeroizing;

const CHILD: &str = "BONOPAY_SOFTHSM_CHILD";
const TOKEN: &str = "bono-test";
const PIN: &str = "1234";

fn module() -> PathBuf {
    std::env::var_os("BONOPAY_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
}

/// In the parent: prepares a fresh SoftHSM directory, reruns `test` in a
/// child process with `SOFTHSM2_CONF` pointing at it, asserts it passed, and
/// returns true. In the child: returns false, so the test body runs.
fn run_in_softhsm(test: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    assert!(
        module().exists(),
        "SoftHSM2 module not found at {}: install it with `apt-get install softhsm2` (as .ci/run does)",
        module().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens.display()),
    )
    .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .env("SOFTHSM2_CONF", &conf)
        .env("BONOPAY_TEST_PIN", PIN)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "child `{test}` failed:\n{text}"
    );
    true
}

fn config(key: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: module(),
        token_label: TOKEN.into(),
        key_label: key.into(),
        pin: PinSource::Env("BONOPAY_TEST_PIN".into()),
        sessions: 4,
    }
}

/// Generates a key pair labelled `label` on the test token; its public key.
fn generate(label: &str) -> PublicKey {
    provision::generate_key(
        &module(),
        TOKEN,
        &PinSource::Env("BONOPAY_TEST_PIN".into()),
        label,
    )
    .unwrap()
}

fn provisioned(key: &str) -> Pkcs11Signer {
    provision::init_token(&module(), TOKEN, "12345678", PIN).unwrap();
    let public = generate(key);
    let signer = Pkcs11Signer::open(&config(key)).unwrap();
    assert_eq!(signer.public_key().key_id(), public.key_id());
    signer
}

#[test]
fn softhsm_conformance_suite() {
    if run_in_softhsm("softhsm_conformance_suite") {
        return;
    }
    bonopay_signer::signer::conformance::run_all(Arc::new(provisioned("bono-seal")));
}

#[test]
fn softhsm_signatures_verify_across_backends() {
    if run_in_softhsm("softhsm_signatures_verify_across_backends") {
        return;
    }
    let hsm = provisioned("bono-seal");
    let d = domain_digest(b"x\0", &[b"cross"]);
    // The HSM signs with random nonces: verify, never compare bytes.
    let a = hsm.sign(&d).unwrap();
    let b = hsm.sign(&d).unwrap();
    assert_ne!(a.signature, b.signature, "CKM_ECDSA nonces are random");
    verify_output(hsm.public_key(), &d, &a).unwrap();
    verify_output(hsm.public_key(), &d, &b).unwrap();
    // A software key does not verify an HSM signature.
    let sw = SoftwareSigner::generate().unwrap();
    assert!(verify_output(sw.public_key(), &d, &a).is_err());
}

/// A session of the test's own on the token (read-write), logged in as
/// the user. Its cryptoki context is kept, not dropped: dropping a context
/// finalizes the library for the whole process, the signer's sessions
/// with it.
fn own_session() -> cryptoki::session::Session {
    let ctx = cryptoki::context::Pkcs11::new(module()).unwrap();
    // Already initialized by the signer, process-wide.
    let _ = ctx.initialize(cryptoki::context::CInitializeArgs::OsThreads);
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    std::mem::forget(ctx);
    // The login is the application's: the signer's may already hold it.
    let _ = session.login(
        cryptoki::session::UserType::User,
        Some(&cryptoki::types::AuthPin::new(PIN.into())),
    );
    session
}

/// Logs the application out of the token, as an HSM restart or a token
/// re-insert does: every session the signer holds is then no longer
/// logged in.
fn log_the_process_out() {
    own_session().logout().unwrap();
}

#[test]
fn softhsm_signer_recovers_when_the_token_drops_its_login() {
    if run_in_softhsm("softhsm_signer_recovers_when_the_token_drops_its_login") {
        return;
    }
    let hsm = provisioned("bono-seal");
    let d = domain_digest(b"x\0", &[b"recover"]);
    verify_output(hsm.public_key(), &d, &hsm.sign(&d).unwrap()).unwrap();
    log_the_process_out();
    // Every pooled session (4) meets the lost login once and recovers.
    for _ in 0..8 {
        let out = hsm.sign(&d).unwrap();
        verify_output(hsm.public_key(), &d, &out).unwrap();
    }
    // And again after a second loss, with concurrent signers.
    log_the_process_out();
    let hsm = Arc::new(hsm);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let hsm = Arc::clone(&hsm);
            std::thread::spawn(move || {
                for _ in 0..4 {
                    let out = hsm.sign(&d).unwrap();
                    verify_output(hsm.public_key(), &d, &out).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn softhsm_signer_refuses_another_key_under_its_label_after_a_loss() {
    if run_in_softhsm("softhsm_signer_refuses_another_key_under_its_label_after_a_loss") {
        return;
    }
    let hsm = provisioned("bono-seal");
    let d = domain_digest(b"x\0", &[b"swap"]);
    verify_output(hsm.public_key(), &d, &hsm.sign(&d).unwrap()).unwrap();
    // Someone replaces the key pair under the same label.
    let session = own_session();
    let label = cryptoki::object::Attribute::Label(b"bono-seal".to_vec());
    for key in session.find_objects(&[label]).unwrap() {
        session.destroy_object(key).unwrap();
    }
    let other = generate("bono-seal");
    assert_ne!(other.key_id(), hsm.public_key().key_id());
    session.logout().unwrap();
    // The signer notices the loss, finds a different key and refuses it:
    // it never signs with a key other than the one it was opened with.
    match hsm.sign(&d) {
        Err(SignerError::KeyNotFound(m)) => assert!(m.contains("another key"), "{m}"),
        other => panic!("expected KeyNotFound, got {other:?}"),
    }
}

#[test]
fn softhsm_a_label_naming_two_key_pairs_is_refused() {
    if run_in_softhsm("softhsm_a_label_naming_two_key_pairs_is_refused") {
        return;
    }
    drop(provisioned("bono-seal"));
    generate("bono-seal");
    match Pkcs11Signer::open(&config("bono-seal")) {
        Err(SignerError::KeyNotFound(m)) => assert!(m.contains("names 2 objects"), "{m}"),
        other => panic!("expected KeyNotFound, got {other:?}"),
    }
}

#[test]
fn softhsm_key_is_not_extractable() {
    if run_in_softhsm("softhsm_key_is_not_extractable") {
        return;
    }
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let _ = provisioned("bono-seal");
    let session = own_session();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"bono-seal".to_vec()),
        ])
        .unwrap()[0];
    let attrs = session
        .get_attributes(key, &[AttributeType::Extractable, AttributeType::Sensitive])
        .unwrap();
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(
        session
            .get_attributes(key, &[AttributeType::Value])
            .map(|a| a.is_empty())
            .unwrap_or(true)
    );
}

#[test]
fn softhsm_unavailable_token_errors_say_which() {
    if run_in_softhsm("softhsm_unavailable_token_errors_say_which") {
        return;
    }
    let _ = provisioned("bono-seal");
    // Library missing.
    let mut c = config("bono-seal");
    c.module = PathBuf::from("/nonexistent/libpkcs11.so");
    assert!(matches!(
        Pkcs11Signer::open(&c),
        Err(SignerError::LibraryUnavailable(_))
    ));
    // Token absent (never created, or removed).
    let mut c = config("bono-seal");
    c.token_label = "no-such-token".into();
    assert_eq!(
        Pkcs11Signer::open(&c).unwrap_err(),
        SignerError::TokenNotFound("no-such-token".into())
    );
    // Wrong PIN.
    let mut c = config("bono-seal");
    c.pin = PinSource::Value(Zeroizing::new("0000".into()));
    assert_eq!(
        Pkcs11Signer::open(&c).unwrap_err(),
        SignerError::PinIncorrect(TOKEN.into())
    );
    // PIN source missing.
    let mut c = config("bono-seal");
    c.pin = PinSource::Env("BONOPAY_NO_SUCH_PIN_VAR".into());
    assert!(matches!(
        Pkcs11Signer::open(&c),
        Err(SignerError::PinUnavailable(_))
    ));
    // Key absent.
    let c = config("no-such-key");
    assert_eq!(
        Pkcs11Signer::open(&c).unwrap_err(),
        SignerError::KeyNotFound("no-such-key".into())
    );
    // PIN from a file works.
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let mut c = config("bono-seal");
    c.pin = PinSource::File(pin_file);
    Pkcs11Signer::open(&c).unwrap();
}
