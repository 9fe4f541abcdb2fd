//! libFuzzer entry of the `bundle_verify` property (`src/bundle_verify.rs`, where the
//! property is stated).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bonopay_fuzz::bundle_verify::check(data);
});
