//! libFuzzer entry of the `mcf_frame` property (`src/mcf_frame.rs`, where the
//! property is stated).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bonopay_fuzz::mcf_frame::check(data);
});
