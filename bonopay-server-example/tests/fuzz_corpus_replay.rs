//! Stable replay of every fuzz corpus.
//!
//! `cargo fuzz` needs nightly; this test runs on stable in CI. It compiles
//! each fuzz target's property (`fuzz/src/<target>.rs`, the very file the
//! fuzz target calls) and runs every committed corpus file of that target
//! through it (see `fuzz/README.md` for the properties).
//!
//! Naming convention in the corpora: `valid_*` files must be accepted (for
//! `parse_canonicalize`, by both the parser and the tax computation);
//! `invalid_*` files must be refused; a few targets have a third class
//! (`readonly_*`, `badcheck_*`, `unreadable_*`, see each test). Other names
//! (inputs the fuzzer found) are only checked against the property.
//!
//! The seeds of the newer targets are real outputs of the code: the
//! ignored test `write_seed_corpora` (at the end) seals invoices, exports
//! bundles, signs webhooks, talks to the DGI simulator and writes the
//! configuration, then derives the malformed seeds from those.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../fuzz/src/parse_canonicalize.rs"]
mod parse_canonicalize;

#[path = "../../fuzz/src/bundle_verify.rs"]
mod bundle_verify;
#[path = "../../fuzz/src/config_json.rs"]
mod config_json;
#[path = "../../fuzz/src/dgi_reply.rs"]
mod dgi_reply;
#[path = "../../fuzz/src/mcf_frame.rs"]
mod mcf_frame;
#[path = "../../fuzz/src/sealed_payload.rs"]
mod sealed_payload;
#[path = "../../fuzz/src/verify_qr.rs"]
mod verify_qr;
#[path = "../../fuzz/src/webhook_signature.rs"]
mod webhook_signature;

use std::collections::BTreeSet;
use std::path::PathBuf;

use parse_canonicalize::{Outcome, check};

fn corpus_dir_of(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    corpus_of("parse_canonicalize")
}

/// Every committed file of `target`'s corpus, sorted by name.
fn corpus_of(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir_of(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus at {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_without_violating_the_property() {
    let files = corpus();
    assert!(
        files.len() >= 10,
        "the corpus has only {} files",
        files.len()
    );
    let mut accepted = 0;
    for (name, data) in &files {
        // A property violation panics inside `check`; name the file first.
        eprintln!("replaying {name}");
        let outcome = check(data);
        if name.starts_with("valid_") {
            assert_eq!(
                outcome,
                Outcome::Accepted { computes: true },
                "{name} should parse and compute"
            );
            accepted += 1;
        } else if name.starts_with("invalid_") {
            assert!(
                matches!(outcome, Outcome::Refused | Outcome::NotUtf8),
                "{name} should be refused, got {outcome:?}"
            );
        }
    }
    assert!(accepted >= 6, "only {accepted} valid seeds");
}

#[test]
fn corpus_covers_every_invoice_type_and_mode() {
    let mut seen = BTreeSet::new();
    for (name, data) in corpus() {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        let Ok(req) = bonopay_core::parse_invoice(text) else {
            continue;
        };
        seen.insert(req.invoice_type.as_str().to_owned());
        seen.insert(req.price_mode.as_str().to_owned());
        seen.insert(req.currency.as_str().to_owned());
        assert!(name.starts_with("valid_"), "{name} parses: name it valid_*");
    }
    for want in [
        "FV", "FT", "FA", "EV", "ET", "EA", "HT", "TTC", "CDF", "USD",
    ] {
        assert!(
            seen.contains(want),
            "no valid seed with {want}; seen {seen:?}"
        );
    }
}

#[test]
fn mutated_seeds_keep_the_property() {
    // A tiny deterministic stand-in for the fuzzer, so the stable test also
    // exercises inputs near the seeds: truncate each valid seed at several
    // points and flip single bytes.
    for (_, data) in corpus()
        .into_iter()
        .filter(|(n, _)| n.starts_with("valid_"))
    {
        let len = data.len();
        for cut in [1, len / 3, len / 2, len.saturating_sub(1)] {
            let _ = check(&data[..cut]);
        }
        for (i, pos) in (0..len).step_by(7).enumerate() {
            let mut m = data.clone();
            m[pos] ^= [0x01, 0x20, 0x0f, 0x40][i % 4];
            let _ = check(&m);
        }
    }
}

// ---- the other targets ---------------------------------------------------------

/// Replays `target`'s corpus through `check`, naming each file before it
/// runs (a violation panics inside `check`), and returns the outcomes.
fn replay<T>(target: &str, min_files: usize, check: impl Fn(&[u8]) -> T) -> Vec<(String, T)> {
    let files = corpus_of(target);
    assert!(
        files.len() >= min_files,
        "the {target} corpus has {} files, fewer than {min_files}",
        files.len()
    );
    files
        .into_iter()
        .map(|(name, data)| {
            eprintln!("replaying {target}/{name}");
            let out = check(&data);
            (name, out)
        })
        .collect()
}

/// Counts the files named `prefix*`, asserting each one's outcome.
fn expect<T: std::fmt::Debug>(
    outcomes: &[(String, T)],
    prefix: &str,
    ok: impl Fn(&T) -> bool,
) -> usize {
    let mut n = 0;
    for (name, out) in outcomes.iter().filter(|(n, _)| n.starts_with(prefix)) {
        assert!(ok(out), "{name}: unexpected outcome {out:?}");
        n += 1;
    }
    n
}

/// Deterministic near-misses of the `valid_*` seeds (a stand-in for the
/// fuzzer on stable): cuts and single-byte flips.
fn near_misses(target: &str, check: impl Fn(&[u8])) {
    for (_, data) in corpus_of(target)
        .into_iter()
        .filter(|(n, _)| n.starts_with("valid_"))
    {
        let len = data.len();
        for cut in [0, 1, len / 3, len / 2, len.saturating_sub(1)] {
            check(&data[..cut]);
        }
        let step = (len / 24).max(1);
        for (i, pos) in (0..len).step_by(step).enumerate() {
            let mut m = data.clone();
            m[pos] ^= [0x01, 0x20, 0x0f, 0x80][i % 4];
            check(&m);
        }
    }
}

#[test]
fn sealed_payload_corpus() {
    use sealed_payload::Outcome as O;
    let outcomes = replay("sealed_payload", 20, sealed_payload::check);
    assert!(expect(&outcomes, "valid_", |o| *o == O::Verified) >= 6);
    assert!(expect(&outcomes, "readonly_", |o| *o == O::ReadOnly) >= 2);
    assert!(expect(&outcomes, "invalid_", |o| *o == O::Refused) >= 8);
    // The seeds cover a device-backed seal (with a device counter).
    assert!(
        corpus_of("sealed_payload")
            .iter()
            .any(|(n, d)| n.starts_with("valid_")
                && String::from_utf8_lossy(d).contains("\"device_counter\""))
    );
    near_misses("sealed_payload", |d| {
        let _ = sealed_payload::check(d);
    });
}

#[test]
fn bundle_verify_corpus() {
    use bundle_verify::Outcome as O;
    let outcomes = replay("bundle_verify", 12, bundle_verify::check);
    assert!(expect(&outcomes, "valid_", |o| *o == O::Valid) >= 2);
    assert!(expect(&outcomes, "invalid_", |o| *o == O::Invalid) >= 5);
    assert!(expect(&outcomes, "unreadable_", |o| matches!(o, O::Unreadable(_))) >= 3);
    near_misses("bundle_verify", |d| {
        let _ = bundle_verify::check(d);
    });
}

#[test]
fn verify_qr_corpus() {
    use verify_qr::Outcome as O;
    let outcomes = replay("verify_qr", 12, verify_qr::check);
    assert!(expect(&outcomes, "valid_", |o| *o == O::Verified) >= 4);
    assert!(expect(&outcomes, "invalid_", |o| *o == O::Refused) >= 6);
    near_misses("verify_qr", |d| {
        let _ = verify_qr::check(d);
    });
}

#[test]
fn webhook_signature_corpus() {
    use webhook_signature::Outcome as O;
    let outcomes = replay("webhook_signature", 12, webhook_signature::check);
    assert!(expect(&outcomes, "valid_", |o| *o == O::Accepted) >= 3);
    assert!(expect(&outcomes, "invalid_", |o| matches!(o, O::Refused(_))) >= 8);
    near_misses("webhook_signature", |d| {
        let _ = webhook_signature::check(d);
    });
}

#[test]
fn dgi_reply_corpus() {
    use dgi_reply::Outcome as O;
    let outcomes = replay("dgi_reply", 12, dgi_reply::check);
    assert!(expect(&outcomes, "valid_", |o| matches!(o, O::Accepted { .. })) >= 5);
    assert!(expect(&outcomes, "invalid_", |o| matches!(o, O::Refused(_))) >= 5);
    // The status, submit and confirm replies each decode as their type.
    let typed = outcomes
        .iter()
        .filter(|(n, o)| {
            n.starts_with("valid_") && matches!(o, O::Accepted { decoded } if *decoded > 0)
        })
        .count();
    assert!(
        typed >= 3,
        "only {typed} valid seeds decode as a typed reply"
    );
    near_misses("dgi_reply", |d| {
        let _ = dgi_reply::check(d);
    });
}

/// The MCF frame seeds are written by hand (frames of the spec's
/// commands and replies, then damaged copies), not by
/// `write_seed_corpora`: the frame is a fixed byte format, not an output
/// that changes with the code.
#[test]
fn mcf_frame_corpus() {
    let outcomes = replay("mcf_frame", 8, mcf_frame::check);
    assert!(expect(&outcomes, "valid_", |o| o.frames > 0 && o.errors.is_empty()) >= 5);
    assert!(expect(&outcomes, "invalid_", |o| !o.errors.is_empty()) >= 4);
    near_misses("mcf_frame", |d| {
        let _ = mcf_frame::check(d);
    });
}

#[test]
fn config_json_corpus() {
    use config_json::Outcome as O;
    let outcomes = replay("config_json", 12, config_json::check);
    let pass = |o: &O| *o == O::Accepted { checks_pass: true };
    assert!(expect(&outcomes, "valid_", pass) >= 3);
    assert!(
        expect(&outcomes, "badcheck_", |o| *o
            == O::Accepted { checks_pass: false })
            >= 3
    );
    assert!(expect(&outcomes, "invalid_", |o| *o == O::Refused) >= 5);
    near_misses("config_json", |d| {
        let _ = config_json::check(d);
    });
}

// ---- the seed generator --------------------------------------------------------

/// Writes the seed corpora of the targets above from real outputs of the
/// code. Run it by hand when a format changes, then re-run the replay:
///
/// ```sh
/// cargo test -p bonopay-server-example --test fuzz_corpus_replay -- --ignored write_seed_corpora
/// ```
///
/// It only writes `valid_*`, `readonly_*`, `badcheck_*`, `invalid_*` and
/// `unreadable_*` files; inputs the fuzzer found are left alone.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seed_corpora() {
    seeds::write_all();
}

mod seeds {
    use std::sync::Arc;
    use std::time::Duration;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use bonopay_core::{Currency, parse_invoice};
    use bonopay_ledger::{LedgerStore, MemoryStore};
    use bonopay_signer::audit::{ExportRequest, Exporter};
    use bonopay_signer::{
        Fiscalizer, FiscalizerConfig, IncompleteSale, ManualClock, ReportIdentity, Sealed,
        Signer as _, SimulatedDef, SoftwareSigner,
    };
    use bonopay_sync::sim::{SimConfig, Simulator};
    use rust_decimal::Decimal;
    use serde_json::{Value, json};

    use super::{corpus_dir_of, corpus_of};

    /// 2026-11-28T08:00:00Z, 09:00 in Kinshasa.
    const T0: i64 = 1_795_852_800_000;
    const DAY: i64 = 86_400_000;
    const SEED_KEY: &str = include_str!("../../fuzz/keys/seed-signer.pem");

    fn write(target: &str, name: &str, data: &[u8]) {
        let dir = corpus_dir_of(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    }

    /// Removes the named seeds of a target (fuzzer finds are kept).
    fn clear(target: &str) {
        let dir = corpus_dir_of(target);
        if !dir.exists() {
            return;
        }
        for (name, _) in corpus_of(target) {
            if [
                "valid_",
                "readonly_",
                "badcheck_",
                "invalid_",
                "unreadable_",
            ]
            .iter()
            .any(|p| name.starts_with(p))
            {
                std::fs::remove_file(dir.join(&name)).unwrap();
            }
        }
    }

    pub fn write_all() {
        for t in [
            "sealed_payload",
            "bundle_verify",
            "verify_qr",
            "webhook_signature",
            "dgi_reply",
            "config_json",
        ] {
            clear(t);
        }
        let sealed = sealed_and_bundles();
        qr(&sealed);
        webhooks(&sealed);
        dgi(&sealed);
        config();
    }

    fn identity() -> ReportIdentity {
        ReportIdentity {
            merchant_nif: "A1309334L".into(),
            trade_name: "Alimentation La Gombe".into(),
        }
    }

    fn fiscalizer(signer: Arc<dyn bonopay_signer::Signer>) -> (Fiscalizer, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0));
        let mut config = FiscalizerConfig::new("NID-BONO-0001");
        let mut rates = bonopay_tax::FixedReferenceRates::default();
        rates.0.insert(Currency::Usd, Decimal::new(2850, 0));
        config.reference_rates = Arc::new(rates);
        let f = Fiscalizer::with_clock(
            Arc::new(MemoryStore::new()) as Arc<dyn LedgerStore>,
            signer,
            clock.clone(),
            config,
        );
        (f, clock)
    }

    /// Every valid invoice of the `parse_canonicalize` corpus that seals.
    fn invoices() -> Vec<(String, bonopay_core::ValidInvoice)> {
        corpus_of("parse_canonicalize")
            .into_iter()
            .filter(|(n, _)| n.starts_with("valid_"))
            .filter_map(|(n, d)| {
                let req = parse_invoice(std::str::from_utf8(&d).ok()?).ok()?;
                let stem = n.trim_start_matches("valid_").trim_end_matches(".json");
                Some((stem.to_owned(), req))
            })
            .collect()
    }

    /// A plain sale (the `fv_ttc` invoice).
    fn sale() -> (String, bonopay_core::ValidInvoice) {
        invoices().into_iter().find(|(s, _)| s == "fv_ttc").unwrap()
    }

    /// Seals the invoices, writes the sealed-payload seeds and the bundle
    /// seeds; returns the sealed invoices.
    fn sealed_and_bundles() -> Vec<Sealed> {
        let signer = Arc::new(SoftwareSigner::from_pkcs8_pem(SEED_KEY).unwrap());
        let key = signer.public_key().clone();
        let (f, clock) = fiscalizer(signer);
        let mut sealed = Vec::new();
        for (stem, req) in invoices() {
            match f.seal(&req, &format!("seed-{stem}").parse().unwrap()) {
                Ok(s) => {
                    write(
                        "sealed_payload",
                        &format!("valid_{stem}.json"),
                        &s.invoice.payload,
                    );
                    sealed.push(s);
                }
                Err(e) => eprintln!("{stem} does not seal here: {e}"),
            }
            clock.advance(60_000);
        }
        assert!(sealed.len() >= 6, "only {} invoices sealed", sealed.len());

        // A device-backed seal carries a device counter.
        let def = Arc::new(SimulatedDef::from_pkcs8_pem("NID-DEF-0001", SEED_KEY).unwrap());
        let (fd, _) = fiscalizer(def);
        let (stem, req) = sale();
        let s = fd.seal(&req, &"seed-def".parse().unwrap()).unwrap();
        assert!(s.invoice.device_counter.is_some());
        write(
            "sealed_payload",
            &format!("valid_device_{stem}.json"),
            &s.invoice.payload,
        );

        // Malformed payloads, derived from a real one.
        let p = sealed[0].invoice.payload.clone();
        let text = String::from_utf8(p.clone()).unwrap();
        let v: Value = serde_json::from_slice(&p).unwrap();
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        write("sealed_payload", "readonly_pretty_printed.json", &pretty);
        let mut other_key = v.clone();
        // Signed by nobody the seed key knows: the signature is another
        // real one, of another invoice.
        other_key["signature"] = json!(sealed[1].invoice.signature.to_hex());
        other_key["auth_code"] = json!(sealed[1].invoice.elements.authentication_code);
        let other_key = bonopay_core::jcs(&other_key.to_string()).unwrap();
        write(
            "sealed_payload",
            "readonly_swapped_signature.json",
            other_key.as_bytes(),
        );
        write("sealed_payload", "invalid_empty.json", b"");
        write(
            "sealed_payload",
            "invalid_truncated.json",
            &p[..p.len() / 2],
        );
        write("sealed_payload", "invalid_not_object.json", b"[1,2,3]");
        write(
            "sealed_payload",
            "invalid_not_utf8.bin",
            &[0xff, 0xfe, b'{', b'}'],
        );
        let mut m = v.clone();
        m.as_object_mut().unwrap().remove("tuple");
        write(
            "sealed_payload",
            "invalid_no_tuple.json",
            m.to_string().as_bytes(),
        );
        let mut m = v.clone();
        m["extra"] = json!(1);
        write(
            "sealed_payload",
            "invalid_unknown_member.json",
            m.to_string().as_bytes(),
        );
        let mut m = v.clone();
        m["signature"] = json!("00");
        write(
            "sealed_payload",
            "invalid_short_signature.json",
            m.to_string().as_bytes(),
        );
        let mut m = v.clone();
        m["auth_code"] = json!("AAAAAAAAAAAAAAAAAAAAAAAA");
        write(
            "sealed_payload",
            "invalid_wrong_auth_code.json",
            m.to_string().as_bytes(),
        );
        let mut m = v.clone();
        m["tuple"]["timestamp"] = json!("yesterday");
        write(
            "sealed_payload",
            "invalid_tuple_timestamp.json",
            m.to_string().as_bytes(),
        );
        let mut m = v.clone();
        m["device_counter"] = json!(-1);
        write(
            "sealed_payload",
            "invalid_device_counter.json",
            m.to_string().as_bytes(),
        );
        let mut m = v.clone();
        m["body"]["seq"] = json!(999);
        write(
            "sealed_payload",
            "invalid_body_seq.json",
            m.to_string().as_bytes(),
        );
        let tampered = text.replacen("\"outlet\":\"", "\"outlet\":\"x", 1);
        write(
            "sealed_payload",
            "invalid_tampered_outlet.json",
            tampered.as_bytes(),
        );
        // Duplicate members: the last one wins when reading (read_own), but
        // no canonical form has them (verify).
        let dup = text.replacen("{\"auth_code\"", "{\"auth_code\":\"X\",\"auth_code\"", 1);
        write(
            "sealed_payload",
            "readonly_duplicate_member.json",
            dup.as_bytes(),
        );

        // Found by the property: the signature in upper case was a second
        // spelling of the same seal that verified.
        let upper = text.replace(
            &sealed[0].invoice.signature.to_hex(),
            &sealed[0].invoice.signature.to_hex().to_ascii_uppercase(),
        );
        write(
            "sealed_payload",
            "invalid_uppercase_signature.json",
            upper.as_bytes(),
        );

        // The bundle: a few sales, a reduction and a USD sale, then every
        // other kind of entry over two days (small, so the fuzzer stays fast).
        let signer = Arc::new(SoftwareSigner::from_pkcs8_pem(SEED_KEY).unwrap());
        let (f, clock) = fiscalizer(signer);
        for (stem, req) in invoices()
            .into_iter()
            .filter(|(s, _)| ["fv_ttc", "fa_rrr", "fv_usd_ttc"].contains(&s.as_str()))
        {
            f.seal(&req, &format!("bundle-{stem}").parse().unwrap())
                .unwrap();
            clock.advance(60_000);
        }
        f.a_report("kin-01", &identity(), true).unwrap();
        f.record_incomplete_sale(
            "kin-01",
            &IncompleteSale {
                merchant_nif: "A1309334L".into(),
                pos_terminal_id: "till-1".into(),
                cashier_id: "c-07".into(),
                amount: Decimal::new(250_000, 2),
                reason: "client parti".into(),
            },
        )
        .unwrap();
        f.z_report("kin-01", &identity()).unwrap();
        clock.advance(DAY);
        let (stem, req) = sale();
        f.seal(&req, &format!("seed-day2-{stem}").parse().unwrap())
            .unwrap();
        f.close_periods("kin-01", &identity()).unwrap();
        f.z_report("kin-01", &identity()).unwrap();
        let export = |from_ms: Option<i64>| -> Vec<Vec<u8>> {
            let req = ExportRequest {
                outlet: "kin-01".into(),
                time_zone: chrono_tz::Africa::Kinshasa,
                from_ms,
                to_ms: None,
                keys: vec![key.clone()],
                created: "2026-11-30T10:00:00+01:00".into(),
            };
            Exporter::new(&**f.store(), &req)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        };
        let whole = export(None);
        let from_z = export(Some(T0 + DAY - 1));
        assert!(from_z.len() < whole.len());
        write("bundle_verify", "valid_whole_chain.jsonl", &whole.concat());
        write(
            "bundle_verify",
            "valid_from_z_report.jsonl",
            &from_z.concat(),
        );
        let n = whole.len();
        write(
            "bundle_verify",
            "invalid_no_end_line.jsonl",
            &whole[..n - 1].concat(),
        );
        let mut gap = whole.clone();
        gap.remove(2);
        write(
            "bundle_verify",
            "invalid_missing_entry.jsonl",
            &gap.concat(),
        );
        let mut swapped = whole.clone();
        swapped.swap(1, 2);
        write(
            "bundle_verify",
            "invalid_swapped_entries.jsonl",
            &swapped.concat(),
        );
        let mut after = whole.clone();
        after.push(whole[1].clone());
        write(
            "bundle_verify",
            "invalid_content_after_end.jsonl",
            &after.concat(),
        );
        let mut end: Value = serde_json::from_slice(&whole[n - 1]).unwrap();
        end["end"]["sha256"] = json!("0".repeat(64));
        let mut bad_end = whole.clone();
        bad_end[n - 1] = format!("{end}\n").into_bytes();
        write(
            "bundle_verify",
            "invalid_end_digest.jsonl",
            &bad_end.concat(),
        );
        let mut no_keys: Value = serde_json::from_slice(&whole[0]).unwrap();
        no_keys["bundle"]["keys"] = json!([]);
        let mut nk = whole.clone();
        nk[0] = format!("{no_keys}\n").into_bytes();
        write("bundle_verify", "invalid_no_keys.jsonl", &nk.concat());
        let mut tz: Value = serde_json::from_slice(&whole[0]).unwrap();
        tz["bundle"]["time_zone"] = json!("Mars/Olympus");
        let mut t = whole.clone();
        t[0] = format!("{tz}\n").into_bytes();
        write("bundle_verify", "invalid_time_zone.jsonl", &t.concat());
        let mut entry: Value = serde_json::from_slice(&whole[1]).unwrap();
        entry["entry"]["kind"] = json!("z_report");
        let mut k = whole.clone();
        k[1] = format!("{entry}\n").into_bytes();
        write("bundle_verify", "invalid_kind.jsonl", &k.concat());
        write("bundle_verify", "unreadable_empty.jsonl", b"");
        write(
            "bundle_verify",
            "unreadable_not_json.jsonl",
            b"PK\x03\x04 not a bundle\n",
        );
        let mut fmt: Value = serde_json::from_slice(&whole[0]).unwrap();
        fmt["bundle"]["format"] = json!("bonopay/audit-bundle/v2");
        let mut u = whole.clone();
        u[0] = format!("{fmt}\n").into_bytes();
        write(
            "bundle_verify",
            "unreadable_future_format.jsonl",
            &u.concat(),
        );
        write(
            "bundle_verify",
            "unreadable_no_bundle.jsonl",
            &whole[1..].concat(),
        );
        sealed
    }

    fn qr(sealed: &[Sealed]) {
        for (i, s) in sealed.iter().take(6).enumerate() {
            write(
                "verify_qr",
                &format!("valid_{i}.txt"),
                s.invoice.elements.verification_qr.as_bytes(),
            );
        }
        let q = &sealed[0].invoice.elements.verification_qr;
        let b64 = q.strip_prefix("BPV1:").unwrap();
        let raw = URL_SAFE_NO_PAD.decode(b64).unwrap();
        let v: Value = serde_json::from_slice(&raw).unwrap();
        let enc = |v: &Value| format!("BPV1:{}", URL_SAFE_NO_PAD.encode(v.to_string()));
        write("verify_qr", "invalid_empty.txt", b"");
        write("verify_qr", "invalid_prefix_only.txt", b"BPV1:");
        write(
            "verify_qr",
            "invalid_wrong_prefix.txt",
            format!("BPV2:{b64}").as_bytes(),
        );
        write(
            "verify_qr",
            "invalid_truncated.txt",
            &q.as_bytes()[..q.len() / 2],
        );
        write(
            "verify_qr",
            "invalid_padded_base64.txt",
            format!("{q}=").as_bytes(),
        );
        let mut m = v.clone();
        m["tuple"]["total"] = json!("1.00");
        write("verify_qr", "invalid_total_changed.txt", enc(&m).as_bytes());
        let mut m = v.clone();
        m["tuple"]["key_id"] = json!("p256:0000000000000000");
        write("verify_qr", "invalid_unknown_key.txt", enc(&m).as_bytes());
        let mut m = v.clone();
        m["signature"] = json!(sealed[1].invoice.signature.to_hex());
        write(
            "verify_qr",
            "invalid_other_signature.txt",
            enc(&m).as_bytes(),
        );
        let mut m = v.clone();
        m["extra"] = json!(true);
        write(
            "verify_qr",
            "invalid_unknown_member.txt",
            enc(&m).as_bytes(),
        );
        let mut m = v;
        m["device_counter"] = json!(7);
        write(
            "verify_qr",
            "invalid_device_counter_added.txt",
            enc(&m).as_bytes(),
        );
    }

    fn webhooks(sealed: &[Sealed]) {
        use bonopay_sync::webhook::sign;
        let secret = "whsec_seed_0123456789abcdef";
        let t: i64 = 1_795_852_800;
        let body = json!({
            "id": "invoice.sealed:kin-gombe-01:1",
            "type": "invoice.sealed",
            "data": {"auth_code": sealed[0].invoice.elements.authentication_code},
        })
        .to_string();
        let input = |secret: &str, header: &str, now: i64, body: &str| {
            format!("{secret}\n{header}\n{now} 300\n{body}").into_bytes()
        };
        let h = sign(secret.as_bytes(), t, body.as_bytes());
        let sig = h.split_once(",v1=").unwrap().1.to_owned();
        let old = sign(b"whsec_old", t, body.as_bytes());
        let old_sig = old.split_once(",v1=").unwrap().1;
        write(
            "webhook_signature",
            "valid_fresh.txt",
            &input(secret, &h, t + 30, &body),
        );
        write(
            "webhook_signature",
            "valid_rotation.txt",
            &input(
                secret,
                &format!("t={t},v1={old_sig},v2=x,v1={sig}"),
                t,
                &body,
            ),
        );
        write(
            "webhook_signature",
            "valid_spaced_upper.txt",
            &input(
                secret,
                &format!("t={t}, v1={}", sig.to_ascii_uppercase()),
                t - 300,
                &body,
            ),
        );
        let empty = sign(b"", 0, b"");
        write(
            "webhook_signature",
            "valid_empty_secret_body.txt",
            &input("", &empty, 0, ""),
        );
        let long_secret = "k".repeat(100);
        let hl = sign(long_secret.as_bytes(), t, body.as_bytes());
        write(
            "webhook_signature",
            "valid_long_secret.txt",
            &input(&long_secret, &hl, t, &body),
        );
        write(
            "webhook_signature",
            "invalid_stale.txt",
            &input(secret, &h, t + 301, &body),
        );
        write(
            "webhook_signature",
            "invalid_future.txt",
            &input(secret, &h, t - 301, &body),
        );
        write(
            "webhook_signature",
            "invalid_tampered_body.txt",
            &input(secret, &h, t, &body.replace("sealed", "seaLed")),
        );
        write(
            "webhook_signature",
            "invalid_other_secret.txt",
            &input("whsec_other", &h, t, &body),
        );
        for (name, header) in [
            ("empty", String::new()),
            ("garbage", "garbage".to_owned()),
            ("no_t", format!("v1={sig}")),
            ("no_v1", format!("t={t}")),
            ("negative_t", format!("t=-5,v1={sig}")),
            ("huge_t", format!("t=99999999999999999999,v1={sig}")),
            ("two_t", format!("t={t},t={t},v1={sig}")),
            ("short_v1", format!("t={t},v1={}", &sig[..63])),
            ("junk_element", format!("t={t},v1={sig},junk")),
            ("moved_t", format!("t={},v1={sig}", t + 1)),
        ] {
            write(
                "webhook_signature",
                &format!("invalid_{name}.txt"),
                &input(secret, &header, t, &body),
            );
        }
    }

    /// Real replies of the DGI simulator, over loopback HTTP.
    fn dgi(sealed: &[Sealed]) {
        let sim = Simulator::new(
            SimConfig::default(),
            Arc::new(bonopay_sync::sim::SystemClock),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let server = Arc::clone(&sim);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                server.serve(listener).await.unwrap();
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let base = format!("http://{addr}/api");
        let token = sim.issue_token(3600);
        let http = reqwest::blocking::Client::new();
        let save = |name: &str, r: reqwest::blocking::Response| -> Value {
            let status = r.status().as_u16();
            let body = r.bytes().unwrap();
            let mut data = format!("{status}\n").into_bytes();
            data.extend_from_slice(&body);
            write("dgi_reply", name, &data);
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(&token);
        save("valid_status_empty.json", get("/invoice").send().unwrap());
        let (request, totals) = bonopay_sync::dgi::map_sealed(&sealed[0].invoice).unwrap();
        let submitted = save(
            "valid_submitted.json",
            http.post(format!("{base}/invoice"))
                .bearer_auth(&token)
                .json(&request)
                .send()
                .unwrap(),
        );
        let uid = submitted["uid"].as_str().unwrap().to_owned();
        save("valid_status_pending.json", get("/invoice").send().unwrap());
        save(
            "valid_details_pending.json",
            get(&format!("/invoice/{uid}")).send().unwrap(),
        );
        save(
            "valid_confirmed.json",
            http.put(format!("{base}/invoice/{uid}/CONFIRM"))
                .bearer_auth(&token)
                .json(&totals)
                .send()
                .unwrap(),
        );
        save(
            "valid_tax_groups.json",
            get("/info/taxGroups").send().unwrap(),
        );
        // A second invoice, cancelled.
        let (request, _) = bonopay_sync::dgi::map_sealed(&sealed[1].invoice).unwrap();
        let s2 = save(
            "valid_submitted_2.json",
            http.post(format!("{base}/invoice"))
                .bearer_auth(&token)
                .json(&request)
                .send()
                .unwrap(),
        );
        let uid2 = s2["uid"].as_str().unwrap().to_owned();
        save(
            "valid_cancelled.json",
            http.put(format!("{base}/invoice/{uid2}/CANCEL"))
                .bearer_auth(&token)
                .send()
                .unwrap(),
        );
        // Refusals, as the e-MCF answers them.
        save(
            "invalid_confirm_unknown_uid.json",
            http.put(format!("{base}/invoice/{uid}/CONFIRM"))
                .bearer_auth(&token)
                .json(&totals)
                .send()
                .unwrap(),
        );
        save(
            "invalid_details_final.json",
            get(&format!("/invoice/{uid}")).send().unwrap(),
        );
        save(
            "invalid_bad_token.json",
            http.get(format!("{base}/invoice"))
                .bearer_auth("not-a-jwt")
                .send()
                .unwrap(),
        );
        save(
            "invalid_no_route.json",
            get("/info/nothing").send().unwrap(),
        );
        save(
            "invalid_not_json.json",
            http.post(format!("{base}/invoice"))
                .bearer_auth(&token)
                .body("{")
                .header("content-type", "application/json")
                .send()
                .unwrap(),
        );
        let mut bad = serde_json::to_value(&request).unwrap();
        bad["items"] = json!([]);
        save(
            "invalid_no_items.json",
            http.post(format!("{base}/invoice"))
                .bearer_auth(&token)
                .json(&bad)
                .send()
                .unwrap(),
        );
        // Transport-level oddities the real platform is known for, around
        // the simulator's own submit reply.
        let sub = String::from_utf8(
            std::fs::read(corpus_dir_of("dgi_reply").join("valid_submitted.json")).unwrap(),
        )
        .unwrap();
        let sub_body = sub.split_once('\n').unwrap().1;
        write(
            "dgi_reply",
            "valid_error_code_zero.json",
            format!("200\n{}", sub_body.replacen('{', "{\"errorCode\":0,", 1)).as_bytes(),
        );
        write("dgi_reply", "valid_empty_body.json", b"200\n \r\n");
        write(
            "dgi_reply",
            "invalid_gateway_html.json",
            b"502\n<html><body>Bad Gateway</body></html>",
        );
        write(
            "dgi_reply",
            "invalid_truncated.json",
            format!("200\n{}", &sub_body[..sub_body.len() / 2]).as_bytes(),
        );
        write(
            "dgi_reply",
            "invalid_forbidden.json",
            format!("403\n{sub_body}").as_bytes(),
        );
        write(
            "dgi_reply",
            "valid_string_amounts.json",
            format!("200\n{}", string_amounts(sub_body)).as_bytes(),
        );
    }

    /// The same reply with its amounts as JSON strings (a form the
    /// platform uses, read exactly).
    fn string_amounts(body: &str) -> String {
        let v: serde_json::Map<String, Value> = serde_json::from_str(body).unwrap();
        let m: serde_json::Map<String, Value> = v
            .into_iter()
            .map(|(k, v)| match v {
                Value::Number(n) => (k, Value::String(n.to_string())),
                other => (k, other),
            })
            .collect();
        Value::Object(m).to_string()
    }

    fn config() {
        use bonopay_server_example::datadir::{Config, parse_config};
        let pretty = |c: &Config| serde_json::to_string_pretty(c).unwrap() + "\n";
        write(
            "config_json",
            "valid_default.json",
            pretty(&Config::default()).as_bytes(),
        );
        // The example of the `datadir` module docs, with a PKCS#11 signer.
        let documented = json!({
            "nid": "BONOPAY-DEV-0001",
            "isf": "ISF-0001",
            "time_zone": "Africa/Kinshasa",
            "listen": "127.0.0.1:8080",
            "database": {"ledger": "ledger.db", "auth": "auth.db"},
            "signer": {"type": "software", "key_file": "keys/seal-p256.pem"},
            "limits": {"body_bytes": 1_048_576, "request_timeout_secs": 30},
            "reference_rates": {"USD": "2850.50"},
            "deliveries": {"smtp_url": "smtp://127.0.0.1:25", "smtp_from": "Bono Pay <recus@example.cd>",
                           "whatsapp_url": "https://example.cd/messages", "whatsapp_token": "t"},
            "dgi": {"url": "https://developper.dgirdc.cd/edef", "certification": "emcf",
                    "deadline_ms": 3000, "tokens": {"A1309334L": {"file": "tokens/A1309334L.jwt"}}},
            "merchants": [
                {"nif": "A1309334L", "name": "Alimentation La Gombe", "address": "Kinshasa, Gombe", "contact": "+243",
                 "outlets": [{"id": "kin-gombe-01", "time_zone": "Africa/Kinshasa", "certification": "emcf"},
                             {"id": "lubu-01", "time_zone": "Africa/Lubumbashi", "certification": "none"}]}
            ]
        });
        let c = parse_config(documented.to_string().as_bytes()).unwrap();
        write(
            "config_json",
            "valid_documented.json",
            pretty(&c).as_bytes(),
        );
        let mut p = documented.clone();
        p["signer"] = json!({"type": "pkcs11", "module": "/usr/lib/softhsm/libsofthsm2.so",
                             "token_label": "bonopay", "key_label": "seal", "pin_env": "BONOPAY_PKCS11_PIN"});
        p["database"] = json!({"url": "postgres://bonopay@db/bonopay"});
        let c = parse_config(p.to_string().as_bytes()).unwrap();
        write(
            "config_json",
            "valid_pkcs11_postgres.json",
            pretty(&c).as_bytes(),
        );
        let minimal = json!({"nid": "N1", "time_zone": "Africa/Lubumbashi"});
        parse_config(minimal.to_string().as_bytes()).unwrap();
        write(
            "config_json",
            "valid_minimal.json",
            minimal.to_string().as_bytes(),
        );
        let no_merchants = json!({"nid": "N1", "time_zone": "Africa/Kinshasa", "merchants": []});
        write(
            "config_json",
            "valid_no_merchants.json",
            no_merchants.to_string().as_bytes(),
        );

        let bad_check = |name: &str, f: &dyn Fn(&mut Value)| {
            let mut v = documented.clone();
            f(&mut v);
            write(
                "config_json",
                &format!("badcheck_{name}.json"),
                v.to_string().as_bytes(),
            );
        };
        bad_check("time_zone", &|v| v["time_zone"] = json!("Mars/Olympus"));
        bad_check("outlet_mode", &|v| {
            v["merchants"][0]["outlets"][0]["certification"] = json!("maybe")
        });
        bad_check("cdf_rate", &|v| v["reference_rates"] = json!({"CDF": "1"}));
        bad_check("rate_text", &|v| {
            v["reference_rates"] = json!({"USD": "1e3"})
        });
        bad_check("emcf_without_url", &|v| {
            v["dgi"].as_object_mut().unwrap().remove("url");
        });
        let invalid = |name: &str, f: &dyn Fn(&mut Value)| {
            let mut v = documented.clone();
            f(&mut v);
            write(
                "config_json",
                &format!("invalid_{name}.json"),
                v.to_string().as_bytes(),
            );
        };
        invalid("unknown_member", &|v| v["lisen"] = json!("x"));
        invalid("no_nid", &|v| {
            v.as_object_mut().unwrap().remove("nid");
        });
        invalid("signer_type", &|v| v["signer"]["type"] = json!("hsm"));
        invalid("negative_limit", &|v| v["limits"]["body_bytes"] = json!(-1));
        invalid("dgi_token_in_file", &|v| {
            v["dgi"]["token"] = json!("secret")
        });
        invalid("outlet_without_id", &|v| {
            v["merchants"][0]["outlets"] = json!([{}])
        });
        let text = pretty(&Config::default());
        write(
            "config_json",
            "invalid_truncated.json",
            &text.as_bytes()[..text.len() / 2],
        );
        write("config_json", "invalid_not_utf8.bin", &[b'{', 0xff, b'}']);
        write("config_json", "invalid_empty.json", b"");
    }
}
