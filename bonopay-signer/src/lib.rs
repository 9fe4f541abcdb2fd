#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod bundle;
pub mod certification;

#[cfg(feature = "conformance")]
pub mod conformance;
mod device;
mod error;
pub mod event;
mod fiscalizer;
mod key;
pub mod layout;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod report;
mod reports;
mod sealed;
mod signer;
mod software;

pub use device::SimulatedDef;
pub use error::{SignerError, VerifyError};
pub use fiscalizer::{
    Clock, Fiscalizer, FiscalizerConfig, ManualClock, ReplayCheck, SealError, Sealed,
    SignatureCheck, SystemClock, index,
};
pub use key::{Algorithm, PublicKey, Signature, domain_digest, key_id_of};
pub use reports::{
    IncompleteSale, PeriodKind, Report, ReportIdentity, ReportKind, SealedRef, X_SCHEMA, head_json,
};
pub use sealed::{
    AUTH_CODE_DOMAIN, BODY_DOMAIN, KeyLookup, SEAL_DOMAIN, SEALED_SCHEMA, SealTuple, SealedInvoice,
    SecurityElements, VERIFY_QR_PREFIX, VerifiedQr, auth_code_of, body_hash, format_auth_code,
    qr_png, qr_svg, verify_qr,
};
pub use signer::{DEVICE_DOMAIN, FaultySigner, SignOutput, Signer, device_digest, verify_output};
#[cfg(feature = "aws-lc")]
pub use software::AwsLcSigner;
pub use software::SoftwareSigner;
