//! The `webhook_signature` property: `bonopay_sync::webhook::verify`, which
//! receivers run on the `Bonopay-Signature` header of each delivery (any
//! client can send them one).
//!
//! Input layout (text, so the seeds are readable): the secret up to the
//! first `\n`, the header value up to the second, then `now window` (two
//! decimal numbers; `0 300` when unreadable) up to the third, and the
//! rest is the body.
//!
//! 1. `verify` never panics; a refusal is a typed
//!    [`WebhookSignatureError`];
//! 2. when it accepts, the header has a `t` within `window` of `now`, and
//!    one of its `v1` values is, case aside, what `sign` computes for that
//!    `t`, secret and body; `OutsideWindow` reports `now - t`;
//! 3. what `sign` produces for the header's `t` (or `now`; 0 for a time
//!    before 1970) verifies at that
//!    time, and changing one hex digit of it, one byte of the body, or the
//!    secret makes it fail.
//!
//! Compiled twice, like every property here (fuzz crate and stable replay).

use bonopay_sync::webhook::{WebhookSignatureError, sign, verify};

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted.
    Accepted,
    /// Refused, with the reason.
    Refused(WebhookSignatureError),
}

/// The parts of an input.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The subscriber's secret.
    pub secret: &'a [u8],
    /// The header value.
    pub header: String,
    /// The receiver's clock.
    pub now: i64,
    /// The replay window.
    pub window: u64,
    /// The raw body.
    pub body: &'a [u8],
}

/// Cuts an input into its parts (see the module docs).
#[must_use]
pub fn split(data: &[u8]) -> Input<'_> {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let secret = parts.next().unwrap_or_default();
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let clock = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let mut nums = clock.split_whitespace();
    let now = nums.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let window = nums.next().and_then(|n| n.parse().ok()).unwrap_or(300);
    let body = parts.next().unwrap_or_default();
    Input {
        secret,
        header,
        now,
        window,
        body,
    }
}

/// The header's first `t`, read naively (an oracle, not the parser).
fn stated_t(header: &str) -> Option<i64> {
    header
        .split(',')
        .find_map(|p| p.trim().strip_prefix("t="))
        .and_then(|t| t.parse().ok())
}

fn v1s(header: &str) -> Vec<String> {
    header
        .split(',')
        .filter_map(|p| p.trim().strip_prefix("v1="))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Checks the property on `data`, panicking on a violation.
#[allow(clippy::panic)]
#[must_use]
pub fn check(data: &[u8]) -> Outcome {
    let i = split(data);
    let got = verify(i.secret, &i.header, i.body, i.now, i.window);

    // 2. Acceptance means the genuine signature was there.
    match &got {
        Ok(()) => {
            let Some(t) = stated_t(&i.header) else {
                panic!("accepted a header with no readable t: {:?}", i.header);
            };
            assert!(i.now.abs_diff(t) <= i.window, "accepted outside the window");
            let genuine = sign(i.secret, t, i.body);
            let (_, hex) = genuine.split_once(",v1=").unwrap_or_default();
            assert!(
                v1s(&i.header).iter().any(|v| v == hex),
                "accepted without the genuine signature: {:?}",
                i.header
            );
        }
        Err(WebhookSignatureError::OutsideWindow { age_secs }) => {
            let t = stated_t(&i.header).unwrap_or_else(|| panic!("no t: {:?}", i.header));
            assert_eq!(*age_secs, i.now.saturating_sub(t));
            assert!(i.now.abs_diff(t) > i.window);
        }
        Err(_) => {}
    }

    // 3. What `sign` makes verifies, and one change breaks it.
    // (`sign` takes any i64 but the header format has no sign: a time
    // before 1970 is not a delivery time.)
    let t = stated_t(&i.header)
        .filter(|t| *t >= 0)
        .unwrap_or(i.now.max(0));
    let genuine = sign(i.secret, t, i.body);
    assert_eq!(
        verify(i.secret, &genuine, i.body, t, i.window),
        Ok(()),
        "sign's own header is refused: {genuine}"
    );
    let hex_from = genuine.len() - 64;
    let mut m = genuine.clone().into_bytes();
    for pos in (hex_from..m.len()).step_by(7) {
        m[pos] = if m[pos] == b'0' { b'1' } else { b'0' };
        let h = String::from_utf8_lossy(&m);
        assert_eq!(
            verify(i.secret, &h, i.body, t, i.window),
            Err(WebhookSignatureError::BadSignature),
            "a changed hex digit still verifies: {h}"
        );
        m[pos] = genuine.as_bytes()[pos];
    }
    if !i.body.is_empty() {
        let mut b = i.body.to_vec();
        let pos = b.len() / 2;
        b[pos] ^= 0x01;
        assert_eq!(
            verify(i.secret, &genuine, &b, t, i.window),
            Err(WebhookSignatureError::BadSignature),
            "a changed body still verifies"
        );
    }
    let mut other = i.secret.to_vec();
    other.push(b'x');
    assert_eq!(
        verify(&other, &genuine, i.body, t, i.window),
        Err(WebhookSignatureError::BadSignature),
        "another secret still verifies"
    );

    match got {
        Ok(()) => Outcome::Accepted,
        Err(e) => Outcome::Refused(e),
    }
}
