//! Tampering with a real SQLite ledger file behind the library's back (plain
//! SQL on the file), and the verifier saying exactly where.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

use bonopay_core::InvoiceType;
use bonopay_ledger::conformance::invoice;
use bonopay_ledger::{
    ChainError, ChainOnly, ChainReport, Entry, Head, LedgerStore, LedgerStoreExt, SqliteStore,
    verify_store,
};
use rusqlite::{Connection, params};

const OUTLET: &str = "kin-gombe-01";

fn build(dir: &Path) -> (PathBuf, Vec<Entry>) {
    let path = dir.join("ledger.db");
    let store = SqliteStore::open(&path).unwrap();
    let entries = (0..12)
        .map(|i| {
            let t = if i % 4 == 3 {
                InvoiceType::Fa
            } else {
                InvoiceType::Fv
            };
            store
                .append_new(
                    OUTLET,
                    &invoice(t, 2026, 1_764_300_000_000 + i),
                    1,
                    &mut |p| {
                        format!(r#"{{"amount":"{}.00","seq":{}}}"#, 1000 + p.seq, p.seq)
                            .into_bytes()
                    },
                )
                .unwrap()
        })
        .collect();
    (path, entries)
}

fn tamper_and_verify(sql: &str) -> (ChainReport, Vec<Entry>) {
    let dir = tempfile::tempdir().unwrap();
    let (path, entries) = build(dir.path());
    let clean = verify_store(&SqliteStore::open(&path).unwrap(), OUTLET, &ChainOnly);
    assert!(clean.is_valid() && clean.verified == 12, "{clean:?}");
    Connection::open(&path).unwrap().execute_batch(sql).unwrap();
    let store = SqliteStore::open(&path).unwrap();
    (verify_store(&store, OUTLET, &ChainOnly), entries)
}

#[test]
fn a_changed_payload_byte_is_caught_at_its_entry() {
    // Change one digit of the amount inside entry 7's payload.
    let (r, _) = tamper_and_verify(
        "UPDATE entries SET payload = CAST(REPLACE(CAST(payload AS TEXT), '1007.00', '1907.00') AS BLOB) WHERE seq = 7",
    );
    assert_eq!(r.verified, 6);
    assert!(
        matches!(
            r.error,
            Some(ChainError::HeaderMismatch {
                position: 7,
                seq: 7,
                ..
            })
        ),
        "{:?}",
        r.error
    );
}

#[test]
fn a_changed_header_byte_is_caught_with_both_hashes() {
    let (r, entries) = tamper_and_verify(
        "UPDATE entries SET header = CAST(REPLACE(CAST(header AS TEXT), '\"time_ms\":1764300000006', '\"time_ms\":1764300000099') AS BLOB) WHERE seq = 7",
    );
    match r.error {
        Some(ChainError::HashMismatch {
            position: 7,
            seq: 7,
            stored,
            computed,
        }) => {
            assert_eq!(stored, entries[6].entry_hash);
            assert_ne!(computed, stored);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_changed_counter_column_is_caught() {
    let (r, _) = tamper_and_verify("UPDATE entries SET total_counter = 70 WHERE seq = 7");
    assert!(
        matches!(
            r.error,
            Some(ChainError::HeaderMismatch { position: 7, .. })
        ),
        "{:?}",
        r.error
    );
}

#[test]
fn a_changed_stored_hash_breaks_the_next_link() {
    let (r, _) = tamper_and_verify("UPDATE entries SET entry_hash = zeroblob(32) WHERE seq = 7");
    assert!(
        matches!(
            r.error,
            Some(ChainError::HashMismatch {
                position: 7,
                seq: 7,
                ..
            })
        ),
        "{:?}",
        r.error
    );
}

#[test]
fn a_deleted_entry_is_caught_where_it_was() {
    let (r, _) = tamper_and_verify("DELETE FROM entries WHERE seq = 7");
    assert_eq!(r.verified, 6);
    assert!(
        matches!(
            r.error,
            Some(ChainError::SequenceBreak {
                position: 7,
                expected_seq: 7,
                found_seq: 8
            })
        ),
        "{:?}",
        r.error
    );
}

#[test]
fn a_deleted_entry_with_renumbering_is_caught_as_a_broken_link() {
    let (r, entries) = tamper_and_verify(
        "DELETE FROM entries WHERE seq = 7; UPDATE entries SET seq = seq - 1 WHERE seq > 7",
    );
    match r.error {
        Some(ChainError::BrokenLink {
            position: 7,
            seq: 7,
            expected_prev,
            found_prev,
        }) => {
            assert_eq!(expected_prev, entries[5].entry_hash, "hash of entry 6");
            assert_eq!(
                found_prev, entries[6].entry_hash,
                "entry 8 points at the deleted entry 7"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_swapped_pair_is_caught() {
    let (r, _) = tamper_and_verify(
        "UPDATE entries SET seq = -1 WHERE seq = 7; UPDATE entries SET seq = 7 WHERE seq = 8;
         UPDATE entries SET seq = 8 WHERE seq = -1;",
    );
    assert!(
        matches!(
            r.error,
            Some(ChainError::BrokenLink {
                position: 7,
                seq: 7,
                ..
            })
        ),
        "{:?}",
        r.error
    );
}

#[test]
fn an_inserted_entry_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (path, entries) = build(dir.path());
    // Forge a perfectly linked entry after entry 6, shift the rest up and
    // insert it: the forgery itself links, but entry 7 (now at seq 8) does not.
    let mut head = Head::genesis(OUTLET);
    for e in &entries[..6] {
        head = head.advance(e);
    }
    let forged = head
        .prepare(&invoice(InvoiceType::Fv, 2026, 1_764_300_000_006))
        .unwrap()
        .seal(b"{\"forged\":1}".to_vec());
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("UPDATE entries SET seq = -seq WHERE seq >= 7; UPDATE entries SET seq = 1 - seq WHERE seq < 0;")
        .unwrap();
    let n = forged.fiscal_number.unwrap();
    conn.execute(
        "INSERT INTO entries (outlet, seq, kind, fiscal_year, time_ms, invoice_type, total_counter, type_counter,
                              z_number, prev_hash, entry_hash, header, payload)
         VALUES (?1, 7, 'invoice', 2026, ?2, 'FV', 7000, ?3, NULL, ?4, ?5, ?6, ?7)",
        params![OUTLET, forged.time_ms, n.type_counter as i64, &forged.prev_hash[..], &forged.entry_hash[..], forged.header, forged.payload],
    )
    .unwrap();
    drop(conn);
    let r = verify_store(&SqliteStore::open(&path).unwrap(), OUTLET, &ChainOnly);
    // total_counter 7000 in the column disagrees with the header: caught at 7.
    assert!(
        matches!(
            r.error,
            Some(ChainError::HeaderMismatch { position: 7, .. })
        ),
        "{:?}",
        r.error
    );

    // With a consistent counter column, the forgery passes and the next one breaks.
    let conn = Connection::open(&path).unwrap();
    // (An attacker with the file can drop the uniqueness index too.)
    conn.execute_batch("DROP INDEX entries_by_number").unwrap();
    conn.execute(
        "UPDATE entries SET total_counter = ?1 WHERE seq = 7",
        params![n.total as i64],
    )
    .unwrap();
    drop(conn);
    let r = verify_store(&SqliteStore::open(&path).unwrap(), OUTLET, &ChainOnly);
    match r.error {
        Some(ChainError::BrokenLink {
            position: 8,
            seq: 8,
            expected_prev,
            found_prev,
        }) => {
            assert_eq!(expected_prev, forged.entry_hash);
            assert_eq!(found_prev, entries[5].entry_hash);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_rewritten_head_row_is_caught() {
    let (r, _) = tamper_and_verify("UPDATE outlet_heads SET seq = 11");
    assert!(
        matches!(r.error, Some(ChainError::HeadMismatch { .. })),
        "{:?}",
        r.error
    );
}

#[test]
fn untouched_ledger_verifies_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (path, entries) = build(dir.path());
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        bonopay_ledger::MIGRATIONS.len() as u32
    );
    assert_eq!(store.head(OUTLET).unwrap().hash, entries[11].entry_hash);
    let r = verify_store(&store, OUTLET, &ChainOnly);
    assert!(r.is_valid(), "{:?}", r.error);
    assert_eq!(r.verified, 12);
}

#[test]
fn a_newer_schema_is_refused_not_downgraded() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = build(dir.path());
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn a_version_1_database_migrates_forward_and_keeps_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    // Build a schema-1 file by hand, as the first release wrote it.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(bonopay_ledger::MIGRATIONS[0]).unwrap();
    conn.execute_batch("PRAGMA user_version = 1").unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.schema_version().unwrap() as usize,
        bonopay_ledger::MIGRATIONS.len()
    );
    let e = store
        .append_new(OUTLET, &invoice(InvoiceType::Fv, 2026, 1), 1, &mut |_| {
            b"{}".to_vec()
        })
        .unwrap();
    assert_eq!(e.seq, 1);
    assert!(verify_store(&store, OUTLET, &ChainOnly).is_valid());
}
