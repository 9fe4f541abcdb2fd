//! libFuzzer entry of the `dgi_reply` property (`src/dgi_reply.rs`, where the
//! property is stated).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bonopay_fuzz::dgi_reply::check(data);
});
