//! Reading the e-MCF's replies: the error a reply carries (in a 2xx body
//! as in any other), the decoding of a reply into its wire type, the
//! details echo, and the comparison of the e-MCF's tax group table with
//! ours. Pure (no I/O): the HTTP transport and the fuzz target
//! `dgi_reply` run the very same code on the bytes received.

use rust_decimal::Decimal;
use serde_json::Value;

use super::transport::TransportError;
#[allow(unused_imports)] // for the docs
use super::wire::{DgiConfirmation, DgiStatus, DgiSubmitted};
use super::wire::{DgiErrorBody, DgiPendingEcho, number};

/// The error a reply carries, if any: a non-empty `errorCode` other than
/// `0` (\[G\]), in a 2xx reply as in any other.
#[must_use]
pub fn error_in(reply: &Value) -> Option<DgiErrorBody> {
    let code = match reply.get("errorCode")? {
        Value::Null => return None,
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    };
    if code.is_empty() || code == "0" {
        return None;
    }
    Some(DgiErrorBody {
        error_code: code,
        error_desc: reply
            .get("errorDesc")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// Reads an e-MCF reply from its HTTP status and raw body: the JSON (and
/// the text it was read from), or the error it carries. An `errorCode` in
/// a 2xx reply is a refusal like any other (\[I\], `dgi-emcf.md` §8); an
/// empty 2xx body is `null`. Pure (no I/O), so the HTTP transport and the
/// fuzz target `dgi_reply` run the very same code on the bytes received.
///
/// # Errors
/// [`TransportError::Unauthorized`] for 401 and 403,
/// [`TransportError::Unknown`] for a 5xx or an unreadable 2xx body (the
/// call may have taken effect), [`TransportError::Rejected`] otherwise.
pub fn read_reply(status: u16, body: &[u8]) -> Result<(Value, Vec<u8>), TransportError> {
    if (200..300).contains(&status) {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok((Value::Null, b"null".to_vec()));
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| TransportError::Unknown(format!("unreadable answer: {e}")))?;
        return match error_in(&v) {
            Some(b) => Err(TransportError::Rejected {
                status,
                code: b.error_code,
                desc: b.error_desc,
            }),
            None => Ok((v, body.to_vec())),
        };
    }
    if status == 401 || status == 403 {
        return Err(TransportError::Unauthorized(format!("HTTP {status}")));
    }
    let parsed = serde_json::from_slice::<Value>(body)
        .ok()
        .as_ref()
        .and_then(error_in);
    if (500..600).contains(&status) {
        return Err(TransportError::Unknown(match parsed {
            Some(b) => format!("HTTP {status}: error {}: {}", b.error_code, b.error_desc),
            None => format!("HTTP {status}"),
        }));
    }
    Err(match parsed {
        Some(DgiErrorBody {
            error_code,
            error_desc,
        }) => TransportError::Rejected {
            status,
            code: error_code,
            desc: error_desc,
        },
        None => TransportError::Rejected {
            status,
            code: status.to_string(),
            desc: String::from_utf8_lossy(body).chars().take(200).collect(),
        },
    })
}

/// A reply decoded as `T` ([`DgiStatus`], [`DgiSubmitted`],
/// [`DgiConfirmation`]): [`read_reply`], then `T` from the text, so amounts
/// are read exactly ([`number`]).
///
/// # Errors
/// As [`read_reply`]; [`TransportError::Unknown`] when the JSON is not a `T`.
pub fn decode_reply<T: serde::de::DeserializeOwned>(
    status: u16,
    body: &[u8],
) -> Result<T, TransportError> {
    let (_, text) = read_reply(status, body)?;
    serde_json::from_slice(&text)
        .map_err(|e| TransportError::Unknown(format!("unreadable answer: {e}")))
}

/// The `GET /api/invoice/{uid}` reply as a [`DgiPendingEcho`]: only `rn`
/// is read.
///
/// # Errors
/// [`TransportError::Unknown`] when the reply has no string `rn`.
pub fn pending_echo(v: Value) -> Result<DgiPendingEcho, TransportError> {
    let rn = v
        .get("rn")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| TransportError::Unknown("the details reply has no rn".into()))?;
    Ok(DgiPendingEcho { rn, raw: v })
}

/// Compares the e-MCF's tax group table (`GET /api/info/taxGroups`) with
/// ours. The reply's shape is not public (\[G\]): an object keyed by group
/// letter (`{"a": 0, "b": 16, …}` as in Benin), or a list of objects with
/// a group (`code`, `group`, `taxGroup` or `name`) and a rate (`rate`,
/// `value` or `taux`), are both read. Returns one line per difference;
/// empty when they agree.
#[must_use]
pub fn tax_group_differences(
    reply: &Value,
    ours: &std::collections::BTreeMap<String, Decimal>,
) -> Vec<String> {
    let mut theirs: std::collections::BTreeMap<String, Option<Decimal>> =
        std::collections::BTreeMap::new();
    let group_of = |k: &str| {
        let k = k.trim();
        (k.len() == 1 && k.chars().all(|c| c.is_ascii_alphabetic())).then(|| k.to_uppercase())
    };
    match reply {
        Value::Object(m) => {
            for (k, v) in m {
                if let Some(g) = group_of(k) {
                    theirs.insert(g, number::decimal_of(v));
                }
            }
        }
        Value::Array(list) => {
            for item in list {
                let g = ["code", "group", "taxGroup", "name"]
                    .iter()
                    .find_map(|k| item.get(*k).and_then(Value::as_str).and_then(group_of));
                let r = ["rate", "value", "taux"]
                    .iter()
                    .find_map(|k| item.get(*k).and_then(number::decimal_of));
                if let Some(g) = g {
                    theirs.insert(g, r);
                }
            }
        }
        _ => return vec!["the e-MCF's taxGroups reply is neither an object nor a list".into()],
    }
    if theirs.is_empty() {
        return vec!["the e-MCF's taxGroups reply names no group".into()];
    }
    let mut out = Vec::new();
    for (g, rate) in ours {
        match theirs.get(g) {
            None => out.push(format!("group {g}: not in the e-MCF's table")),
            Some(t) => {
                let (a, b) = (*rate, t.unwrap_or_default());
                if a != b {
                    out.push(format!("group {g}: our rate {a}%, the e-MCF's {b}%"));
                }
            }
        }
    }
    for g in theirs.keys() {
        // O and P are reserved slots of the MCF protocol (§1).
        if !ours.contains_key(g) && g != "O" && g != "P" {
            out.push(format!("group {g}: in the e-MCF's table, not in ours"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;
    #[test]
    fn an_error_code_is_found_in_any_reply() {
        assert_eq!(error_in(&json!({"uid": "x"})), None);
        assert_eq!(error_in(&json!({"uid": "x", "errorCode": null})), None);
        assert_eq!(error_in(&json!({"errorCode": ""})), None);
        assert_eq!(error_in(&json!({"errorCode": "0"})), None);
        let e = error_in(&json!({"errorCode": 10, "errorDesc": "pas encore"})).unwrap();
        assert_eq!(
            (e.error_code.as_str(), e.error_desc.as_str()),
            ("10", "pas encore")
        );
    }

    #[test]
    fn tax_tables_are_compared_in_both_shapes() {
        let ours: std::collections::BTreeMap<String, Decimal> = [
            ("A".to_owned(), Decimal::ZERO),
            ("B".to_owned(), Decimal::from(16)),
        ]
        .into_iter()
        .collect();
        assert!(tax_group_differences(&json!({"a": 0, "b": 16, "o": 0}), &ours).is_empty());
        let d = tax_group_differences(
            &json!([{"code": "A", "rate": 0}, {"code": "B", "rate": "18"}]),
            &ours,
        );
        assert_eq!(d, vec!["group B: our rate 16%, the e-MCF's 18%"]);
        let d = tax_group_differences(&json!({"a": 0}), &ours);
        assert_eq!(d, vec!["group B: not in the e-MCF's table"]);
    }
}
