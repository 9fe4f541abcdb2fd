//! Three `bonopay serve` processes over one PostgreSQL database, behind a
//! client that spreads requests over them: many tills on one outlet and on
//! several, the same idempotency keys sent to two instances at once, one
//! instance SIGKILLed mid-run (its clients retry elsewhere with the same
//! key), and every instance's sync agent uploading to one e-MCF simulator.
//! At the end: every chain verifies with gapless counters, each key sealed
//! exactly once, and each invoice confirmed at the DGI exactly once, the
//! uploads the killed instance had claimed included (they pass to the
//! others when its liveness lock goes, not after its 5-minute lease). (And
//! a webhook subscriber created through one instance is listed by another.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bonopay_ledger::{LedgerStore, PgStore, TestDb, verify_store};
use bonopay_signer::{PublicKey, SignatureCheck};
use common::*;
use serde_json::{Value, json};

const OUTLETS: [&str; 3] = ["kin-gombe-01", "kin-limete-02", "lub-03"];

fn post(
    http: &reqwest::blocking::Client,
    base: &str,
    key: &str,
    idem: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    let r = http
        .post(format!("{base}/v1/invoices"))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .json(body)
        .send()
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().ok()?))
}

#[test]
fn three_instances_one_database_no_gap_no_fork_each_key_once_each_upload_once() {
    let db = TestDb::create().unwrap();
    // The e-MCF simulator all instances upload to.
    let rt = runtime();
    let (sim, sim_url) = sim_on_loopback(&rt);
    let token = sim.issue_token(3600);

    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("BONOPAY_DATABASE_URL", db.url.as_str()),
        ("BONOPAY_DGI_URL", sim_url.as_str()),
        ("BONOPAY_DGI_TOKEN", token.as_str()),
        // The killed instance's claimed uploads pass to the others once
        // they have gone untouched for the DGI timeout plus 15 s.
        ("BONOPAY_DGI_TIMEOUT_SECS", "5"),
    ];
    let first = Server::start(&tmp.path().join("i0"), &env);
    let owner = first.owner(NIF_A);
    // The instances share one signing key (in production: one HSM key).
    share_keys(
        &tmp.path().join("i0"),
        &[tmp.path().join("i1"), tmp.path().join("i2")],
    );
    let mut servers = vec![
        Some(first),
        Some(Server::start(&tmp.path().join("i1"), &env)),
        Some(Server::start(&tmp.path().join("i2"), &env)),
    ];
    assert!(
        servers[1].as_ref().unwrap().owner_keys.is_empty(),
        "the database already had the owner key: no second bootstrap key"
    );
    let bases: Vec<String> = servers
        .iter()
        .map(|s| s.as_ref().unwrap().base.clone())
        .collect();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for o in &OUTLETS[1..] {
        let r = http
            .post(format!("{}/v1/outlets", bases[0]))
            .bearer_auth(&owner)
            .json(&json!({"id": o}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    }
    // Webhook subscribers live in the database too: created through one
    // instance, listed by another (Z reports only: no traffic here).
    let created: Value = http
        .post(format!("{}/v1/webhooks", bases[0]))
        .bearer_auth(&owner)
        .json(&json!({"url": "https://erp.example.cd/hooks", "events": ["report.z_closed"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let listed: Value = http
        .get(format!("{}/v1/webhooks", bases[1]))
        .bearer_auth(&owner)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed, json!([created["webhook"]]));
    assert!(
        !tmp.path().join("i1/auth.db").exists(),
        "nothing is kept in auth.db when the data lives in PostgreSQL"
    );

    // Tills: 6 on the hot outlet, 1 on each of the others; each sends 60
    // invoices, round robin over the instances, retrying a failed request
    // with the same key on the next instance.
    let alive = Arc::new(Mutex::new(vec![true, true, true]));
    let results: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let tills: Vec<(usize, &str)> = (0..6)
        .map(|t| (t, OUTLETS[0]))
        .chain([(6, OUTLETS[1]), (7, OUTLETS[2])])
        .collect();
    let handles: Vec<_> = tills
        .into_iter()
        .map(|(t, outlet)| {
            let (http, bases, owner) = (http.clone(), bases.clone(), owner.clone());
            let (alive, results) = (Arc::clone(&alive), Arc::clone(&results));
            std::thread::spawn(move || {
                for n in 0..60 {
                    let key = format!("till{t}-{n}");
                    let body = invoice_for(NIF_A, outlet);
                    let mut i = t + n;
                    let answer = loop {
                        let b = i % 3;
                        i += 1;
                        if !alive.lock().unwrap()[b] {
                            continue;
                        }
                        match post(&http, &bases[b], &owner, &key, &body) {
                            // 202: sealed, its DGI certification still under
                            // way (the e-MCF's 10 pending slots are shared).
                            Some((200..=202, v)) => break v,
                            Some((503, _)) | None => {} // down or busy: next instance
                            Some((s, v)) => panic!("{key}: {s} {v}"),
                        }
                    };
                    results.lock().unwrap().insert(key, answer);
                }
            })
        })
        .collect();

    // Meanwhile: the same keys sent to two instances at once.
    let dup_results: Vec<_> = (0..20)
        .map(|k| {
            let key = format!("dup-{k}");
            let body = invoice_for(NIF_A, OUTLETS[k % 3]);
            let (a, b) = std::thread::scope(|s| {
                let ha = s.spawn(|| post(&http, &bases[0], &owner, &key, &body));
                let hb = s.spawn(|| post(&http, &bases[1], &owner, &key, &body));
                (ha.join().unwrap(), hb.join().unwrap())
            });
            (key, a.unwrap(), b.unwrap())
        })
        .collect();

    // Kill instance 2 mid-run: once a fifth of the tills' invoices are in.
    while results.lock().unwrap().len() < 100 {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(servers[2].take());
    alive.lock().unwrap()[2] = false;
    let at_kill = results.lock().unwrap().len();

    for h in handles {
        h.join().unwrap();
    }
    eprintln!("instance 2 killed after {at_kill} of 480 till invoices");
    assert!(at_kill < 480, "the kill must land mid-run");

    // Duplicates: one seal each, the other answer its replay (the ledger
    // check below counts one entry per key); either may still be pending
    // its certification (202).
    for (key, (sa, va), (sb, vb)) in &dup_results {
        let mut statuses = [*sa, *sb];
        statuses.sort_unstable();
        assert!(
            matches!(statuses, [200, 201] | [200 | 201, 202] | [202, 202]),
            "{key}: {sa} {sb}"
        );
        assert_eq!(
            va["seal"]["authentication_code"], vb["seal"]["authentication_code"],
            "{key}"
        );
    }

    // The ledger: every chain verifies (hashes, gapless counters,
    // signatures) and holds exactly one entry per key.
    let store = PgStore::connect(&db.url, 2).unwrap();
    let keys: Vec<PublicKey> = std::fs::read_dir(tmp.path().join("i0/keys"))
        .unwrap()
        .filter_map(|f| {
            let p = f.unwrap().path();
            p.to_string_lossy()
                .ends_with(".pub.pem")
                .then(|| PublicKey::from_pem(&std::fs::read_to_string(p).unwrap()).unwrap())
        })
        .collect();
    assert!(!keys.is_empty());
    let mut total = 0;
    for o in OUTLETS {
        let r = verify_store(&store, o, &SignatureCheck::new(keys.clone()));
        assert!(r.is_valid(), "{o}: {:?}", r.error);
        total += r.head.counters.total;
    }
    let sealed_keys = results.lock().unwrap().len() as u64 + dup_results.len() as u64;
    assert_eq!(total, sealed_keys, "one entry per idempotency key");
    let codes: BTreeSet<String> = results
        .lock()
        .unwrap()
        .values()
        .map(|v| {
            v["seal"]["authentication_code"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(codes.len(), results.lock().unwrap().len());

    // The DGI: the two surviving agents upload everything, once.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if sim.confirms().len() as u64 >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {total} confirmed: {:?}",
            sim.confirms().len(),
            sim.stats()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let doubles = sim.double_confirms();
    let twice: Vec<_> = sim
        .confirms()
        .into_iter()
        .filter(|c| doubles.contains(&c.rn))
        .collect();
    assert!(doubles.is_empty(), "confirmed twice: {twice:#?}");
    assert_eq!(sim.confirms().len() as u64, total);
    // An instance killed between sending a CONFIRM and storing its answer
    // leaves that invoice certified at the DGI with its elements lost: the
    // e-MCF reports them to nobody, so it is dead-lettered for a person,
    // who reads them on the DGI portal and enters them (never re-posted).
    // The dead letter appears only once the killed instance's claim is
    // taken over (its takeover grace after the kill), which may be after
    // every CONFIRM reached the DGI: so this runs until all are synced.
    let resolve_lost_confirms = || {
        let mut resolved = 0;
        for o in OUTLETS {
            let head = store.head(o).unwrap();
            for seq in 1..=head.seq {
                let r = http
                    .get(format!("{}/v1/invoices/{o}:{seq}/dgi", bases[0]))
                    .bearer_auth(&owner)
                    .send()
                    .unwrap();
                if r.status().as_u16() != 200 {
                    continue;
                }
                let item: Value = r.json().unwrap();
                if item["state"] != "dead" {
                    continue;
                }
                let error = item["error"].as_str().unwrap_or_default();
                assert!(
                    error.starts_with(bonopay_sync::dgi::agent::LOST_CONFIRM),
                    "{item}"
                );
                let entry = store.entry(o, seq).unwrap().unwrap();
                let rn = bonopay_signer::certification::sfe_number_of(&entry).unwrap();
                let portal = sim.portal(NIF_A, Some(&rn));
                let elements = portal
                    .iter()
                    .find_map(|p| p.elements.clone())
                    .expect("certified at the DGI");
                let r = http
                    .post(format!("{}/v1/invoices/{o}:{seq}/dgi/resolve", bases[0]))
                    .bearer_auth(&owner)
                    .json(&elements)
                    .send()
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
                resolved += 1;
            }
        }
        resolved
    };
    let mut resolved = resolve_lost_confirms();
    eprintln!("lost CONFIRM answers resolved from the portal: {resolved}");
    // Every confirmation bound into the ledger: an item the killed
    // instance left `confirmed` is taken over once its grace is over.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let health: Value = http
            .get(format!("{}/v1/sync/health", bases[0]))
            .bearer_auth(&owner)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let synced: u64 = health["outlets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["counts"]["synced"].as_u64().unwrap_or(0))
            .sum();
        if synced == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{synced} of {total} synced: {health}"
        );
        std::thread::sleep(Duration::from_millis(200));
        resolved += resolve_lost_confirms();
    }
    eprintln!("lost CONFIRM answers resolved from the portal, in all: {resolved}");
    drop(servers);
}
