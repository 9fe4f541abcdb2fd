//! The ledger index names this crate writes and reads: how an invoice is
//! found by its idempotency key, authentication code or DGI code, and a
//! report or closing by its number or period.
//!
//! A leaf of the crate, like the byte formats: the sealing pipeline writes
//! these keys with each entry, and the audit exporter and the report code
//! read them. Changing a name is a storage migration.

/// `{merchant_nif}/{idempotency key}` → the sealed invoice (unique).
pub const IDEMPOTENCY: &str = "idempotency";
/// Authentication code → the sealed invoice (unique).
pub const AUTH_CODE: &str = "auth_code";
/// Original's authentication code → each credit note against it.
pub const CREDITS: &str = "credits";
/// `{original's code}/{n}` for the n-th credit note against an original
/// (unique): two credit notes checked against the same earlier state
/// (on two server instances) cannot both be sealed, so their quantities
/// can never together exceed what was sold.
pub const CREDIT_SEQ: &str = "credit_seq";
/// `{outlet}/{z_number}` → the Z report (unique).
pub const Z_REPORT: &str = "z_report";
/// `{outlet}/{a_number}` → the A report (unique).
pub const A_REPORT: &str = "a_report";
/// Outlet → every A report of the outlet.
pub const A_REPORTS: &str = "a_reports";
/// `{outlet}/{daily|monthly|yearly}/{label}` → the closing (unique: a
/// period is closed once).
pub const CLOSING: &str = "closing";
/// `{outlet}/{daily|monthly|yearly}` → every closing of that kind.
pub const CLOSINGS: &str = "closings";
/// `{outlet}:{seq}` of an invoice → its certification entry (unique:
/// an invoice is certified once).
pub const CERTIFICATION: &str = "certification";
/// The DGI's Code DEF/DGI → the certification entry (unique: one DGI
/// code certifies one invoice).
pub const DGI_CODE: &str = "dgi_code";
