//! Properties checked by the fuzz targets. Each module is plain Rust over
//! the Bono Pay crates (no libFuzzer), so the stable test
//! `bonopay-server-example/tests/fuzz_corpus_replay.rs` compiles the very
//! same files and replays the committed corpora through them.
#![forbid(unsafe_code)]

pub mod bundle_verify;
#[cfg(feature = "config")]
pub mod config_json;
pub mod dgi_reply;
pub mod mcf_frame;
pub mod parse_canonicalize;
pub mod sealed_payload;
pub mod verify_qr;
pub mod webhook_signature;
