//! Arbitrary bytes → parse → canonicalize → parse → canonicalize (a fixed
//! point), then the tax computation (which must not panic).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bonopay_fuzz::parse_canonicalize::check(data);
});
