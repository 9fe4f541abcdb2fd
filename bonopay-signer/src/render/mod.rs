//! Presentation: receipts with the DGI's mandatory mentions, as thermal
//! text and PDF ([`receipt`], [`receipt_pdf`]), plain-text layout for
//! thermal printers ([`layout`]),
//! reports as text ([`crate::Report::text`]) and QR codes as SVG or PNG
//! ([`qr_svg`], [`qr_png`]).
//!
//! Nothing in sealing or verification depends on it; it is behind the
//! `render` feature (which pulls in `qrcode` and `png`), so the verifier
//! build for wasm leaves it out. Its failures are [`RenderError`]s, never
//! verification errors.

pub mod layout;
mod qr;
pub mod receipt;
pub mod receipt_pdf;
mod report;

pub use qr::{qr_png, qr_svg};

/// Why a document or an image could not be drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The text does not fit in a QR code (or the image would be too large).
    #[error("QR: {0}")]
    QrTooLong(String),
    /// The PNG encoder failed.
    #[error("PNG: {0}")]
    Png(String),
}

/// Paper widths of thermal printers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Paper {
    /// 58 mm: 32 columns.
    Mm58,
    /// 80 mm: 48 columns.
    Mm80,
}

impl Paper {
    /// Columns of the paper.
    #[must_use]
    pub const fn columns(self) -> usize {
        match self {
            Paper::Mm58 => 32,
            Paper::Mm80 => 48,
        }
    }

    /// From `58` or `80`.
    #[must_use]
    pub fn from_mm(mm: &str) -> Option<Self> {
        match mm {
            "58" | "58mm" => Some(Paper::Mm58),
            "80" | "80mm" => Some(Paper::Mm80),
            _ => None,
        }
    }
}
