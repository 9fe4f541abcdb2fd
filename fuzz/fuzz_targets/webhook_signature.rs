//! libFuzzer entry of the `webhook_signature` property (`src/webhook_signature.rs`, where the
//! property is stated).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bonopay_fuzz::webhook_signature::check(data);
});
