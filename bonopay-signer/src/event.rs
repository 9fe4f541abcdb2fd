//! Signed events: the payload of every ledger entry the core writes that is
//! not an invoice (Z and A reports, closings, incomplete sales).
//!
//! ```text
//! payload   = JCS({"body": body, "device_counter"?: n, "signature": "<hex r‖s>"})
//! signature = Sign(SHA-256("bonopay/v1/event\0" ‖ JCS(body)))
//! ```
//!
//! The body names its `schema`, its place in the chain (`outlet`, `seq`,
//! `prev_hash`, `time_ms`) and the key (`key_id`), so a verifier binds
//! each signed event to exactly one ledger position, as for invoices.
//! See `docs/format.md`, "Reports and closings".

use bonopay_ledger::{Entry, EntryKind};
use serde_json::Value;

use crate::error::VerifyError;
use crate::sealed::KeyLookup;
use crate::signer::domain_digest;
use crate::signer::{SignOutput, verify_output};

/// `schema` of a sealed Z report.
pub const Z_SCHEMA: &str = "bonopay/z-report/v1";
/// `schema` of a sealed A report.
pub const A_SCHEMA: &str = "bonopay/a-report/v1";
/// `schema` of a sealed closing.
pub const CLOSING_SCHEMA: &str = "bonopay/closing/v1";
/// `schema` of a recorded incomplete sale.
pub const INCOMPLETE_SALE_SCHEMA: &str = "bonopay/incomplete-sale/v1";
/// `schema` of a certification entry's body.
pub const CERTIFICATION_SCHEMA: &str = "bonopay/certification/v1";

/// Domain tag of the signed event digest.
pub const EVENT_DOMAIN: &[u8] = b"bonopay/v1/event\0";

/// The schema an entry kind's event body must carry, for kinds that are
/// signed events.
#[must_use]
pub fn schema_of(kind: EntryKind) -> Option<&'static str> {
    match kind {
        EntryKind::ZReport => Some(Z_SCHEMA),
        EntryKind::AReport => Some(A_SCHEMA),
        EntryKind::Closing => Some(CLOSING_SCHEMA),
        EntryKind::IncompleteSale => Some(INCOMPLETE_SALE_SCHEMA),
        EntryKind::Certification => Some(CERTIFICATION_SCHEMA),
        _ => None,
    }
}

/// The digest signed for a body given as JCS bytes.
#[must_use]
pub fn event_digest(body_jcs: &[u8]) -> [u8; 32] {
    domain_digest(EVENT_DOMAIN, &[body_jcs])
}

/// The stored payload of a signed event.
#[must_use]
pub fn event_payload(body_jcs: &[u8], out: &SignOutput) -> Vec<u8> {
    let mut p = Vec::with_capacity(body_jcs.len() + 160);
    p.extend_from_slice(b"{\"body\":");
    p.extend_from_slice(body_jcs);
    if let Some(c) = out.device_counter {
        p.extend_from_slice(format!(",\"device_counter\":{c}").as_bytes());
    }
    p.extend_from_slice(b",\"signature\":\"");
    p.extend_from_slice(out.signature.to_hex().as_bytes());
    p.extend_from_slice(b"\"}");
    p
}

fn mismatch(why: impl Into<String>) -> VerifyError {
    VerifyError::Mismatch(why.into())
}

/// Reads a signed event's body without checking anything (for data this
/// process wrote and has just verified, or for rendering).
///
/// # Errors
/// [`VerifyError::Mismatch`] when the payload is not an event.
pub fn event_body(payload: &[u8]) -> Result<Value, VerifyError> {
    let mut v: Value =
        serde_json::from_slice(payload).map_err(|e| mismatch(format!("event payload: {e}")))?;
    match v.get_mut("body").map(Value::take) {
        Some(b @ Value::Object(_)) => Ok(b),
        _ => Err(mismatch("event payload has no body object")),
    }
}

/// Verifies a signed event entry: canonical bytes, schema for the entry's
/// kind, the body bound to the entry's position, and the signature under
/// the key the body names. Returns the body.
///
/// # Errors
/// [`VerifyError`] saying what does not hold.
pub fn verify_event(entry: &Entry, keys: &dyn KeyLookup) -> Result<Value, VerifyError> {
    let want_schema =
        schema_of(entry.kind).ok_or_else(|| mismatch(format!("{} is not an event", entry.kind)))?;
    let v: Value = serde_json::from_slice(&entry.payload)
        .map_err(|e| mismatch(format!("event payload: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| mismatch("event payload is not an object"))?;
    for k in obj.keys() {
        if !["body", "device_counter", "signature"].contains(&k.as_str()) {
            return Err(mismatch(format!("event payload has unknown member `{k}`")));
        }
    }
    let canonical = serde_json_canonicalizer::to_vec(&v).map_err(|e| mismatch(e.to_string()))?;
    if canonical != entry.payload {
        return Err(mismatch("event payload is not in canonical (JCS) form"));
    }
    let body = obj
        .get("body")
        .filter(|b| b.is_object())
        .ok_or_else(|| mismatch("event payload has no body object"))?;
    let s = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default();
    let n = |name: &str| body.get(name).and_then(Value::as_i64);
    if s("schema") != want_schema {
        return Err(mismatch(format!(
            "event schema `{}` where `{want_schema}` was expected",
            s("schema")
        )));
    }
    if s("outlet") != entry.outlet
        || n("seq") != i64::try_from(entry.seq).ok()
        || s("prev_hash") != hex::encode(entry.prev_hash)
        || n("time_ms") != Some(entry.time_ms)
    {
        return Err(mismatch(
            "the signed position (outlet, seq, prev_hash, time) is not the entry's",
        ));
    }
    if entry.kind == EntryKind::ZReport
        && body.get("z_number").and_then(Value::as_u64) != entry.z_number
    {
        return Err(mismatch("the signed Z number is not the entry's"));
    }
    let sig_hex = obj
        .get("signature")
        .and_then(Value::as_str)
        .ok_or_else(|| mismatch("event has no signature"))?;
    let bytes = hex::decode(sig_hex).map_err(|e| VerifyError::MalformedSignature(e.to_string()))?;
    let arr: [u8; 64] = bytes
        .try_into()
        .map_err(|_| VerifyError::MalformedSignature("not 64 bytes".into()))?;
    let device_counter = match obj.get("device_counter") {
        None => None,
        Some(c) => Some(c.as_u64().ok_or_else(|| mismatch("device_counter"))?),
    };
    let key_id = s("key_id");
    let key = keys
        .key(key_id)
        .ok_or_else(|| VerifyError::UnknownKey(key_id.to_owned()))?;
    let body_jcs = serde_json_canonicalizer::to_vec(body).map_err(|e| mismatch(e.to_string()))?;
    verify_output(
        key,
        &event_digest(&body_jcs),
        &SignOutput {
            signature: crate::signer::Signature(arr),
            device_counter,
        },
    )?;
    Ok(body.clone())
}
