//! Properties checked by the fuzz targets. Each module is plain Rust over
//! `bonopay-core` and `bonopay-tax` (no libFuzzer), so the stable test
//! `bonopay-server-example/tests/fuzz_corpus_replay.rs` compiles the very
//! same file and replays the committed corpus through it.
#![forbid(unsafe_code)]

pub mod parse_canonicalize;
