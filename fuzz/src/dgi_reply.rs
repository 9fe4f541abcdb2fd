//! The `dgi_reply` property: how Bono Pay reads the DGI e-MCF's replies
//! (`bonopay_sync::dgi::read_reply`, `decode_reply`, `pending_echo`, the
//! `number` decimals, `parse_dgi_time`, `DgiElements::check`,
//! `tax_group_differences`). The HTTP transport (`bonopay_sync::dgi::http`)
//! hands the status and body bytes to exactly these functions.
//!
//! Input layout: the HTTP status in decimal up to the first `\n` (200 when
//! unreadable), then the body.
//!
//! 1. Nothing panics; every refusal is a typed `TransportError` of the
//!    right class: 401/403 `Unauthorized`, 5xx `Unknown`, other non-2xx
//!    `Rejected` with that status, a 2xx `Ok`, `Unknown` (unreadable) or
//!    `Rejected` only when the reply carries an `errorCode` other than
//!    empty, `0` or `null`;
//! 2. an accepted reply's text parses back to the value returned;
//! 3. what decodes as `DgiStatus`, `DgiSubmitted` or the CONFIRM elements
//!    serializes and decodes back to itself (amounts keep their exact
//!    digits and scale);
//! 4. the details reader returns the reply's own `rn`.
//!
//! Compiled twice, like every property here (fuzz crate and stable replay).

use std::collections::BTreeMap;

use bonopay_sync::dgi::{
    DgiConfirmation, DgiStatus, DgiSubmitted, TransportError, decode_reply, error_in, number,
    parse_dgi_time, pending_echo, read_reply, tax_group_differences,
};
use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `read_reply` accepted it; `decoded` counts the typed replies
    /// (status, submitted, CONFIRM elements) it also decodes as.
    Accepted {
        /// How many of the three typed decoders accepted it.
        decoded: u8,
    },
    /// Refused with this error.
    Refused(TransportError),
}

/// Cuts an input into status and body.
#[must_use]
pub fn split(data: &[u8]) -> (u16, &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => {
            let status = std::str::from_utf8(&data[..i])
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(200);
            (status, &data[i + 1..])
        }
        None => (200, data),
    }
}

/// Decodes as `T`; when it does, checks that `T` serializes and decodes
/// back to itself.
#[allow(clippy::panic)]
fn round_trip<T>(status: u16, body: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let t: T = decode_reply(status, body).ok()?;
    let text = match serde_json::to_vec(&t) {
        Ok(t) => t,
        Err(e) => panic!("a decoded reply does not serialize: {e}: {t:?}"),
    };
    match decode_reply::<T>(200, &text) {
        Ok(back) => {
            assert_eq!(back, t, "round trip changed the reply");
            // Decimals compare by value: compare the text too (scale).
            assert_eq!(
                serde_json::to_vec(&back).ok(),
                Some(text),
                "round trip changed the reply's text"
            );
        }
        Err(e) => panic!(
            "a decoded reply, re-serialized, is refused: {e}\n{}",
            String::from_utf8_lossy(&text)
        ),
    }
    Some(t)
}

/// Checks the property on `data`, panicking on a violation.
#[allow(clippy::panic)]
#[must_use]
pub fn check(data: &[u8]) -> Outcome {
    let (status, body) = split(data);
    let got = read_reply(status, body);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let carries_error = parsed.as_ref().and_then(error_in);

    // 1. The class of the outcome.
    match (&got, status) {
        (Err(TransportError::Unauthorized(_)), 401 | 403) => {}
        (_, 401 | 403) => panic!("{status} is not Unauthorized: {got:?}"),
        (Err(TransportError::Unknown(_)), 500..=599) => {}
        (_, 500..=599) => panic!("{status} is not Unknown: {got:?}"),
        (Ok(_), 200..=299) => assert!(carries_error.is_none(), "an errorCode was ignored"),
        (Err(TransportError::Unknown(_)), 200..=299) => {
            assert!(parsed.is_none(), "readable 2xx said unreadable");
        }
        (
            Err(TransportError::Rejected {
                status: s, code, ..
            }),
            200..=299,
        ) => {
            assert_eq!(*s, status);
            let Some(e) = &carries_error else {
                panic!("a 2xx without errorCode was rejected: {got:?}");
            };
            assert_eq!(&e.error_code, code);
            assert!(!code.is_empty() && code != "0");
        }
        (Err(TransportError::Rejected { status: s, .. }), _) => assert_eq!(*s, status),
        (other, _) => panic!("status {status}: unexpected outcome {other:?}"),
    }

    // Decimals and times as the agent reads them: no panic.
    let text = String::from_utf8_lossy(body);
    let _ = number::decimal_of_raw(&text);
    let _ = parse_dgi_time(&text);

    let (value, reply_text) = match got {
        Ok(ok) => ok,
        Err(e) => return Outcome::Refused(e),
    };
    // 2. The text is the value.
    match serde_json::from_slice::<serde_json::Value>(&reply_text) {
        Ok(v) => assert_eq!(v, value, "the reply text is not the value"),
        Err(e) => panic!("the accepted reply text does not parse: {e}"),
    }
    let _ = number::decimal_of(&value);
    let ours: BTreeMap<String, Decimal> = [("A", 0), ("B", 16), ("C", 8)]
        .into_iter()
        .map(|(g, r)| (g.to_owned(), Decimal::from(r)))
        .collect();
    let _ = tax_group_differences(&value, &ours);

    // 3. Typed replies round-trip.
    let mut decoded = 0;
    if let Some(s) = round_trip::<DgiStatus>(status, body) {
        decoded += 1;
        let _ = parse_dgi_time(&s.token_valid);
        let _ = parse_dgi_time(&s.server_date_time);
        for p in &s.pending {
            let _ = parse_dgi_time(&p.date);
        }
    }
    if round_trip::<DgiSubmitted>(status, body).is_some() {
        decoded += 1;
    }
    if let Some(c) = round_trip::<DgiConfirmation>(status, body) {
        decoded += 1;
        let _ = c.check();
        let _ = parse_dgi_time(&c.date_time);
    }

    // 4. The details reader reads `rn` and nothing else.
    let rn = value.get("rn").and_then(serde_json::Value::as_str);
    match (pending_echo(value.clone()), rn) {
        (Ok(echo), Some(rn)) => {
            assert_eq!(echo.rn, rn);
            assert_eq!(echo.raw, value);
        }
        (Err(TransportError::Unknown(_)), None) => {}
        (other, _) => panic!("details: {other:?} for rn {rn:?}"),
    }
    Outcome::Accepted { decoded }
}
