//! Ledger throughput: append in memory, SQLite with one fsync per append,
//! SQLite group commit at batch sizes 1, 8 and 64, chain verification, and
//! this machine's raw append+fdatasync rate measured the same way.
//!
//! Run with `cargo bench -p bonopay-benches --bench ledger`. Files live in
//! the system temp dir, which here is on the same ext4 disk as the project.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;

use bonopay_core::InvoiceType;
use bonopay_ledger::{
    ChainOnly, Entry, EntryKind, EntryMeta, Head, LedgerStore, MemoryStore, SqliteStore,
    verify_chain,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// A 2 KB payload, the size of a sealed 20-line invoice.
fn payload(seq: u64) -> Vec<u8> {
    let mut p = format!("{{\"seq\":{seq},\"pad\":\"");
    while p.len() < 2040 {
        p.push_str("0123456789abcdef");
    }
    p.push_str("\"}");
    p.into_bytes()
}

fn meta(time: i64) -> EntryMeta {
    EntryMeta {
        kind: EntryKind::Invoice,
        invoice_type: Some(InvoiceType::Fv),
        fiscal_year: 2026,
        time_ms: time,
    }
}

/// Prepares and seals the next `n` entries on top of `head`.
fn next_entries(head: &mut Head, n: usize) -> Vec<Entry> {
    (0..n)
        .map(|_| {
            let e = head
                .prepare(&meta(head.seq as i64))
                .unwrap()
                .seal(payload(head.seq + 1));
            *head = head.advance(&e);
            e
        })
        .collect()
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger_append");
    g.throughput(Throughput::Elements(1));

    let store = MemoryStore::new();
    let mut head = store.head("o").unwrap();
    g.bench_function("memory", |b| {
        b.iter(|| {
            let e = next_entries(&mut head, 1).pop().unwrap();
            store.append(black_box(&e)).unwrap();
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("fsync_each.db")).unwrap();
    let mut head = store.head("o").unwrap();
    g.bench_function("sqlite_fsync_each", |b| {
        b.iter(|| {
            let e = next_entries(&mut head, 1).pop().unwrap();
            store.append(black_box(&e)).unwrap();
        })
    });
    g.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger_group_commit");
    let dir = tempfile::tempdir().unwrap();
    for batch in [1usize, 8, 64] {
        let store = SqliteStore::open(dir.path().join(format!("group_{batch}.db"))).unwrap();
        let mut head = store.head("o").unwrap();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("sqlite_batch_{batch}"), |b| {
            b.iter(|| {
                let entries = next_entries(&mut head, batch);
                let results = store.append_batch(black_box(&entries));
                assert!(results.iter().all(Result::is_ok));
            })
        });
    }
    g.finish();
}

fn verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger_verify");
    let n = 10_000;
    let mut head = Head::genesis("o");
    let entries = next_entries(&mut head, n);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("chain_10k_entries", |b| {
        b.iter_batched(
            || entries.clone(),
            |es| {
                let r = verify_chain("o", es.into_iter().map(Ok), &ChainOnly);
                assert!(r.is_valid());
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn raw_fsync(c: &mut Criterion) {
    let mut g = c.benchmark_group("raw_disk");
    g.throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir().unwrap();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("raw.bin"))
        .unwrap();
    let block = vec![0x5au8; 4096];
    g.bench_function("append_4k_fdatasync", |b| {
        b.iter(|| {
            f.write_all(&block).unwrap();
            f.sync_data().unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, append, group_commit, verify, raw_fsync);
criterion_main!(benches);
