//! libFuzzer entry of the `config_json` property (`src/config_json.rs`, where the
//! property is stated).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bonopay_fuzz::config_json::check(data);
});
