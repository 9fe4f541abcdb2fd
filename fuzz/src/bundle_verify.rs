//! The `bundle_verify` property: the audit bundle verifier
//! (`bonopay_signer::audit::Verifier`), which reads JSON Lines files that
//! auditors receive from anywhere.
//!
//! For any input bytes, cut into lines after each `\n` as `bonopay verify`
//! reads them:
//!
//! 1. `Verifier::new` on the first line either refuses it with a typed
//!    [`UnreadableBundle`] or starts; `feed` and `finish` never panic, and
//!    a report that says valid has no finding;
//! 2. `feed_batch` (signatures checked ahead on other threads) reaches
//!    exactly the same report as `feed`, line by line;
//! 3. a valid bundle stops being valid when its last line is dropped or
//!    when any one of about 16 sampled bytes is changed (the end line's
//!    SHA-256 covers every byte, the chain and signatures the rest).
//!
//! Compiled twice, like every property here (fuzz crate and stable replay).

use bonopay_signer::audit::{BundleReport, UnreadableBundle, Verifier};

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The first line is not a bundle header.
    Unreadable(UnreadableBundle),
    /// Read to the end, with the first problem found.
    Invalid,
    /// A valid bundle.
    Valid,
}

fn lines(data: &[u8]) -> Vec<Vec<u8>> {
    data.split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// Verifies `data` line by line (`feed`), as `bonopay verify` does.
///
/// # Errors
/// When the first line is not a bundle header.
pub fn verify(data: &[u8]) -> Result<BundleReport, UnreadableBundle> {
    let lines = lines(data);
    let first = lines.first().map_or(&[][..], Vec::as_slice);
    let mut v = Verifier::new(first)?;
    for l in lines.iter().skip(1) {
        v.feed(l, false);
    }
    Ok(v.finish())
}

fn verify_batched(data: &[u8]) -> Result<BundleReport, UnreadableBundle> {
    let lines = lines(data);
    let first = lines.first().map_or(&[][..], Vec::as_slice);
    let mut v = Verifier::new(first)?;
    if lines.len() > 1 {
        v.feed_batch(&lines[1..]);
    }
    Ok(v.finish())
}

/// Checks the property on `data`, panicking on a violation.
#[allow(clippy::panic)]
#[must_use]
pub fn check(data: &[u8]) -> Outcome {
    let one = verify(data);
    let batched = verify_batched(data);
    assert_eq!(one, batched, "feed_batch and feed disagree");
    let report = match one {
        Err(e) => return Outcome::Unreadable(e),
        Ok(r) => r,
    };
    assert_eq!(report.is_valid(), report.error.is_none());
    assert_eq!(report.to_json()["valid"], report.is_valid());
    if !report.is_valid() {
        return Outcome::Invalid;
    }

    // 3. Valid: dropping the last line, or changing a byte, is caught.
    let ls = lines(data);
    if ls.len() > 1 {
        let cut: usize = ls[..ls.len() - 1].iter().map(Vec::len).sum();
        if matches!(verify(&data[..cut]), Ok(r) if r.is_valid()) {
            panic!("a valid bundle without its last line is still valid");
        }
    }
    let mut m = data.to_vec();
    // The final newline is optional (the reader trims it): skip it.
    let body_len = data.strip_suffix(b"\n").unwrap_or(data).len();
    for pos in (0..body_len).step_by((body_len / 16).max(1)) {
        m[pos] ^= 0x01;
        if matches!(verify(&m), Ok(r) if r.is_valid()) {
            panic!("byte {pos} ^ 0x01 of a valid bundle is still valid");
        }
        m[pos] ^= 0x01;
    }
    Outcome::Valid
}
