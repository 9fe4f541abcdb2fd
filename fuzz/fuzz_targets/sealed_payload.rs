//! libFuzzer entry of the `sealed_payload` property (`src/sealed_payload.rs`, where the
//! property is stated).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bonopay_fuzz::sealed_payload::check(data);
});
