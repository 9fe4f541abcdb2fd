//! libFuzzer entry of the `verify_qr` property (`src/verify_qr.rs`, where the
//! property is stated).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bonopay_fuzz::verify_qr::check(data);
});
