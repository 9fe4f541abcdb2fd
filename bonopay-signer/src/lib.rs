#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

// ---- components (see README, "Modules") -------------------------------------
#[cfg(feature = "verifier")]
pub mod audit;
pub mod certification;
mod error;
pub mod event;
pub mod index;
#[cfg(feature = "render")]
pub mod render;
pub mod reports;
mod sealed;
#[cfg(feature = "sealing")]
pub mod sealing;
pub mod signer;

// ---- the embedder's API at the crate root ---------------------------------------
#[cfg(feature = "verifier")]
pub use audit::SignatureCheck;
pub use error::{SignerError, VerifyError};
#[cfg(feature = "render")]
pub use render::{RenderError, qr_png, qr_svg};
pub use reports::{
    IncompleteSale, PeriodKind, Report, ReportIdentity, ReportKind, SealedRef, X_SCHEMA, head_json,
};
pub use sealed::{
    AUTH_CODE_DOMAIN, BODY_DOMAIN, KeyLookup, SEAL_DOMAIN, SEALED_SCHEMA, SealTuple, SealedInvoice,
    SecurityElements, VERIFY_QR_PREFIX, VerifiedQr, auth_code_of, body_hash, format_auth_code,
    verify_qr,
};
#[cfg(feature = "sealing")]
pub use sealing::{
    Clock, Fiscalizer, FiscalizerConfig, ManualClock, ReplayCheck, SealError, Sealed, SystemClock,
};
#[cfg(feature = "aws-lc")]
pub use signer::AwsLcSigner;
#[cfg(feature = "testing")]
pub use signer::FaultySigner;
pub use signer::{
    Algorithm, DEVICE_DOMAIN, PublicKey, SignOutput, Signature, Signer, SimulatedDef,
    SoftwareSigner, device_digest, domain_digest, key_id_of, verify_output,
};
