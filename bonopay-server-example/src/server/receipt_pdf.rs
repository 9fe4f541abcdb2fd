//! The receipt as a PDF: A4, or an 80 mm roll (226.77 pt wide, as long as
//! the receipt).
//!
//! It lays out the same [`Receipt`] model as `receipt.txt`, in the base-14
//! font Courier (monospaced, so the columns of the text layout hold: 80
//! columns at 10 pt on A4, 48 columns at 7 pt on 80 mm), with headings in
//! Courier-Bold, and draws the DGI QR code (error-correction level M) from
//! filled rectangles below the security elements. Base-14 fonts need no
//! embedding.
//!
//! Text is encoded in WinAnsiEncoding (Windows-1252), which covers French:
//! é è à ç ô « » € … all print. A character outside it (Lingala ɛ ɔ, emoji,
//! CJK) prints as `?`; nothing fails. The receipt's fiscal data (codes,
//! numbers, amounts, the QR payload) is ASCII, so it is never affected.
//!
//! The output is deterministic: no creation date, no random file id, and
//! content streams are left uncompressed (a receipt is a few kilobytes), so
//! the same invoice always gives the same bytes and the text can be
//! searched in the file.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};
use qrcode::{Color, EcLevel, QrCode};

use super::receipt::Receipt;

/// Page formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFormat {
    /// ISO A4, 595 × 842 pt, paginated.
    A4,
    /// An 80 mm thermal roll: 226.77 pt wide, one page as long as the receipt.
    Roll80mm,
}

impl PageFormat {
    /// Parses `a4` or `80mm`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "a4" | "A4" => Some(Self::A4),
            "80mm" | "80" => Some(Self::Roll80mm),
            _ => None,
        }
    }
}

/// Layout constants of one format, in whole points (no float arithmetic).
struct Layout {
    /// Media box width (exact).
    width: f32,
    /// Width rounded down, for centring the QR code.
    width_pt: i32,
    columns: usize,
    font_size: f32,
    leading: i32,
    margin_x: i32,
    margin_y: i32,
    /// Side of one QR module.
    module: i32,
}

const A4_HEIGHT: i32 = 842;
/// Quiet zone around the QR code, in modules (ISO/IEC 18004).
const QUIET: i32 = 4;

impl Layout {
    fn of(format: PageFormat) -> Self {
        match format {
            PageFormat::A4 => Self {
                width: 595.0,
                width_pt: 595,
                columns: 80,
                font_size: 10.0,
                leading: 12,
                margin_x: 57,
                margin_y: 50,
                module: 4,
            },
            PageFormat::Roll80mm => Self {
                // 80 mm = 80 / 25.4 × 72 pt.
                width: 226.77,
                width_pt: 226,
                columns: 48,
                font_size: 7.0,
                leading: 9,
                margin_x: 12,
                margin_y: 14,
                module: 3,
            },
        }
    }
}

/// Encodes `text` in WinAnsiEncoding (Windows-1252); characters it lacks
/// become `?`.
#[must_use]
pub fn encode_win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| {
            let u = u32::from(c);
            match u {
                0x20..=0x7E | 0xA0..=0xFF => u8::try_from(u).unwrap_or(b'?'),
                _ => match c {
                    '€' => 0x80,
                    '‚' => 0x82,
                    'ƒ' => 0x83,
                    '„' => 0x84,
                    '…' => 0x85,
                    '†' => 0x86,
                    '‡' => 0x87,
                    'ˆ' => 0x88,
                    '‰' => 0x89,
                    'Š' => 0x8A,
                    '‹' => 0x8B,
                    'Œ' => 0x8C,
                    'Ž' => 0x8E,
                    '‘' => 0x91,
                    '’' => 0x92,
                    '“' => 0x93,
                    '”' => 0x94,
                    '•' => 0x95,
                    '–' => 0x96,
                    '—' => 0x97,
                    '˜' => 0x98,
                    '™' => 0x99,
                    'š' => 0x9A,
                    '›' => 0x9B,
                    'œ' => 0x9C,
                    'ž' => 0x9E,
                    'Ÿ' => 0x9F,
                    _ => b'?',
                },
            }
        })
        .collect()
}

/// Draws the QR code of `payload` with its top-left corner (quiet zone
/// included) at (`x`, `top`); returns its side in points.
fn draw_qr(
    content: &mut Content,
    payload: &str,
    x: i32,
    top: i32,
    module: i32,
) -> Result<i32, String> {
    let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
        .map_err(|e| format!("QR code: {e}"))?;
    let n = code.width();
    let colors = code.to_colors();
    let n_i32 = i32::try_from(n).map_err(|_| "QR code too large".to_owned())?;
    content.set_fill_gray(0.0);
    for (row, cells) in colors.chunks(n.max(1)).enumerate() {
        let row = i32::try_from(row).map_err(|_| "QR code too large".to_owned())?;
        let y = top - (QUIET + row + 1) * module;
        let mut col = 0usize;
        while col < cells.len() {
            if cells[col] == Color::Dark {
                let start = col;
                while col < cells.len() && cells[col] == Color::Dark {
                    col += 1;
                }
                let (s, e) = (
                    i32::try_from(start).map_err(|_| "QR code too large".to_owned())?,
                    i32::try_from(col).map_err(|_| "QR code too large".to_owned())?,
                );
                content.rect(
                    (x + (QUIET + s) * module) as f32,
                    y as f32,
                    ((e - s) * module) as f32,
                    module as f32,
                );
            } else {
                col += 1;
            }
        }
    }
    content.fill_nonzero();
    Ok((n_i32 + 2 * QUIET) * module)
}

/// The side of the QR code of `payload`, quiet zone included, in modules.
fn qr_modules(payload: &str) -> Result<i32, String> {
    let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
        .map_err(|e| format!("QR code: {e}"))?;
    i32::try_from(code.width())
        .map(|w| w + 2 * QUIET)
        .map_err(|_| "QR code too large".to_owned())
}

const FONT_REGULAR: Name<'static> = Name(b"F1");
const FONT_BOLD: Name<'static> = Name(b"F2");

/// Renders `receipt` as a PDF in `format`.
///
/// # Errors
/// A message if the QR payload cannot be encoded (never for a sealed
/// invoice's payload).
pub fn render_pdf(receipt: &Receipt, format: PageFormat) -> Result<Vec<u8>, String> {
    let l = Layout::of(format);
    let lines = receipt.styled_lines(l.columns);
    let qr_side = qr_modules(&receipt.qr)? * l.module;
    let line_count = i32::try_from(lines.len()).map_err(|_| "receipt too long".to_owned())?;

    // Paginate: (lines, draws the QR) per page.
    let height = match format {
        PageFormat::A4 => A4_HEIGHT,
        PageFormat::Roll80mm => 2 * l.margin_y + line_count * l.leading + l.leading + qr_side,
    };
    let per_page = usize::try_from(((height - 2 * l.margin_y) / l.leading).max(1))
        .map_err(|_| "bad layout".to_owned())?;
    let mut pages: Vec<(&[(String, bool)], bool)> =
        lines.chunks(per_page).map(|c| (c, false)).collect();
    if pages.is_empty() {
        pages.push((&[], false));
    }
    // The QR goes under the last line, or on a page of its own.
    let last_used = i32::try_from(pages.last().map_or(0, |p| p.0.len()))
        .map_err(|_| "receipt too long".to_owned())?;
    if height - 2 * l.margin_y - last_used * l.leading - l.leading >= qr_side {
        if let Some(last) = pages.last_mut() {
            last.1 = true;
        }
    } else {
        pages.push((&[], true));
    }

    let catalog_id = Ref::new(1);
    let tree_id = Ref::new(2);
    let regular_id = Ref::new(3);
    let bold_id = Ref::new(4);
    let mut next = 5;
    let mut alloc = || {
        let r = Ref::new(next);
        next += 1;
        r
    };
    let page_ids: Vec<(Ref, Ref)> = pages.iter().map(|_| (alloc(), alloc())).collect();

    let mut pdf = Pdf::new();
    pdf.catalog(catalog_id).pages(tree_id);
    pdf.pages(tree_id)
        .kids(page_ids.iter().map(|p| p.0))
        .count(i32::try_from(page_ids.len()).map_err(|_| "too many pages".to_owned())?);
    pdf.type1_font(regular_id)
        .base_font(Name(b"Courier"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold_id)
        .base_font(Name(b"Courier-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));

    for ((page_lines, with_qr), (page_id, content_id)) in pages.iter().zip(&page_ids) {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, l.width, height as f32));
        page.parent(tree_id);
        page.contents(*content_id);
        let mut resources = page.resources();
        let mut fonts = resources.fonts();
        fonts.pair(FONT_REGULAR, regular_id);
        fonts.pair(FONT_BOLD, bold_id);
        fonts.finish();
        resources.finish();
        page.finish();

        let mut content = Content::new();
        let mut y = height - l.margin_y - l.leading;
        for (text, bold) in page_lines.iter() {
            if !text.is_empty() {
                content.begin_text();
                content.set_font(if *bold { FONT_BOLD } else { FONT_REGULAR }, l.font_size);
                content.next_line(l.margin_x as f32, y as f32);
                content.show(Str(&encode_win_ansi(text)));
                content.end_text();
            }
            y -= l.leading;
        }
        if *with_qr {
            let x = (l.width_pt - qr_side) / 2;
            draw_qr(&mut content, &receipt.qr, x, y, l.module)?;
        }
        pdf.stream(*content_id, &content.finish());
    }
    Ok(pdf.finish())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn win_ansi_covers_french_and_falls_back_to_a_question_mark() {
        assert_eq!(encode_win_ansi("Opérateur à €"), b"Op\xe9rateur \xe0 \x80");
        assert_eq!(
            encode_win_ansi("Œuvre «x» — ok"),
            b"\x8cuvre \xabx\xbb \x97 ok"
        );
        // Lingala open vowels, a CJK character and an emoji are not in WinAnsi.
        assert_eq!(encode_win_ansi("mɛ́ngɔ 中🙂"), b"m??ng? ??");
        // Control characters too.
        assert_eq!(encode_win_ansi("a\u{7}b"), b"a?b");
    }

    #[test]
    fn formats_parse() {
        assert_eq!(PageFormat::parse("a4"), Some(PageFormat::A4));
        assert_eq!(PageFormat::parse("80mm"), Some(PageFormat::Roll80mm));
        assert_eq!(PageFormat::parse("58mm"), None);
    }
}
