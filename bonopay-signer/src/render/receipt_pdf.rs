//! The receipt as a PDF: A4, or an 80 mm roll (226.77 pt wide, as long as
//! the receipt).
//!
//! It lays out the same [`Receipt`] model as `receipt.txt`, in the base-14
//! font Courier (monospaced, so the columns of the text layout hold: 80
//! columns at 10 pt on A4, 48 columns at 7 pt on 80 mm), with headings in
//! Courier-Bold, and draws the QR code of [`Receipt::qr`] (error-correction
//! level M) from filled rectangles, right under the section it belongs to
//! ([`Receipt::qr_at`]). Base-14 fonts need no embedding.
//!
//! What is printed follows the receipt's certification state (see
//! [`super::receipt`]): on a facture normalisée the QR drawn is the DGI's
//! `qrCode` as returned, under the DGI's elements, and Bono Pay's seal
//! follows as text only; on a provisional or non-certified ticket the QR
//! drawn is Bono Pay's `BPV1:` verification payload, under Bono Pay's seal.
//! The "DUPLICATA" and "TICKET PROVISOIRE" mentions are headings, so they
//! print in bold, as the title does: staff must not mistake a reprint or a
//! provisional ticket for the original facture normalisée.
//!
//! Text is encoded in WinAnsiEncoding (Windows-1252), which covers French:
//! é è à ç ô « » € — … all print. A character outside it (Lingala ɛ ɔ,
//! emoji, CJK) prints as `?`; nothing fails. The receipt's fiscal data
//! (codes, numbers, amounts, the QR payload) is ASCII, so it is never
//! affected.
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
    /// Largest side of the QR code, quiet zone included: a long payload
    /// (Bono Pay's `BPV1:`) gets smaller modules instead of overflowing the
    /// roll or filling half an A4 page.
    qr_max: i32,
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
                qr_max: 300,
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
                qr_max: 226,
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

/// One thing placed on a page, top to bottom.
enum Item<'a> {
    /// A line of text, and whether it is a heading (bold).
    Line(&'a (String, bool)),
    /// The QR code.
    Qr,
}

/// Fills pages top to bottom, in points.
struct Pager<'a> {
    pages: Vec<Vec<Item<'a>>>,
    /// Height used on the last page.
    used: i32,
    /// Height available on a page.
    budget: i32,
}

impl<'a> Pager<'a> {
    /// Starts a new page unless the last one is empty.
    fn break_page(&mut self) {
        if self.pages.last().is_none_or(|p| !p.is_empty()) {
            self.pages.push(Vec::new());
            self.used = 0;
        }
    }

    /// Places `item`, `cost` high, on a new page when it does not fit.
    fn place(&mut self, item: Item<'a>, cost: i32) {
        if self.used + cost > self.budget {
            self.break_page();
        }
        if let Some(page) = self.pages.last_mut() {
            page.push(item);
        }
        self.used += cost;
    }

    /// Starts a new page when what follows, `cost` high, fits on an empty
    /// page but not on this one.
    fn keep_together(&mut self, cost: i32) {
        if self.used + cost > self.budget && cost <= self.budget {
            self.break_page();
        }
    }
}

/// Splits the parts of [`Receipt::styled_parts`] and the QR code (drawn
/// between the second and the third) into pages of `budget` points, lines
/// `leading` high and the QR `qr_cost` high.
fn paginate<'a>(
    [head, section, tail]: [&'a [(String, bool)]; 3],
    leading: i32,
    qr_cost: i32,
    budget: i32,
) -> Result<Vec<Vec<Item<'a>>>, String> {
    let section_lines = i32::try_from(section.len()).map_err(|_| "receipt too long".to_owned())?;
    let mut pager = Pager {
        pages: vec![Vec::new()],
        used: 0,
        budget,
    };
    for line in head {
        pager.place(Item::Line(line), leading);
    }
    pager.keep_together(section_lines * leading + qr_cost);
    for line in section {
        pager.place(Item::Line(line), leading);
    }
    pager.place(Item::Qr, qr_cost);
    for line in tail {
        pager.place(Item::Line(line), leading);
    }
    Ok(pager.pages)
}

/// Renders `receipt` as a PDF in `format`.
///
/// # Errors
/// A message if the QR payload cannot be encoded (never for a sealed
/// invoice's or a DGI device's payload).
pub fn render_pdf(receipt: &Receipt, format: PageFormat) -> Result<Vec<u8>, String> {
    let l = Layout::of(format);
    let [head, section, tail] = receipt.styled_parts(l.columns);
    let modules = qr_modules(&receipt.qr)?;
    // The layout's module size, smaller when a long payload (Bono Pay's
    // `BPV1:`) would exceed the largest side otherwise.
    let module = l.module.min((l.qr_max / modules.max(1)).max(1));
    let qr_side = modules * module;
    // The QR takes one blank line above it, then its side.
    let qr_cost = l.leading + qr_side;
    let count = |n: usize| i32::try_from(n).map_err(|_| "receipt too long".to_owned());
    let line_count = count(head.len() + section.len() + tail.len())?;

    let height = match format {
        PageFormat::A4 => A4_HEIGHT,
        PageFormat::Roll80mm => 2 * l.margin_y + line_count * l.leading + qr_cost,
    };
    // Paginate: each page gets what fits in its height. The QR code is
    // never cut, and goes to a new page together with its section (the
    // elements it encodes), so a reader never finds a code far from its
    // labels.
    let pages = paginate(
        [&head, &section, &tail],
        l.leading,
        qr_cost,
        height - 2 * l.margin_y,
    )?;

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

    for (page_items, (page_id, content_id)) in pages.iter().zip(&page_ids) {
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
        // The top of the free space on the page.
        let mut top = height - l.margin_y;
        for item in page_items {
            match item {
                Item::Line((text, bold)) => {
                    let baseline = top - l.leading;
                    if !text.is_empty() {
                        content.begin_text();
                        content.set_font(if *bold { FONT_BOLD } else { FONT_REGULAR }, l.font_size);
                        content.next_line(l.margin_x as f32, baseline as f32);
                        content.show(Str(&encode_win_ansi(text)));
                        content.end_text();
                    }
                    top = baseline;
                }
                Item::Qr => {
                    let x = (l.width_pt - qr_side) / 2;
                    draw_qr(&mut content, &receipt.qr, x, top - l.leading, module)?;
                    top -= qr_cost;
                }
            }
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

    fn lines(prefix: &str, n: usize) -> Vec<(String, bool)> {
        (0..n).map(|i| (format!("{prefix}{i}"), false)).collect()
    }

    fn shape(pages: &[Vec<Item<'_>>]) -> Vec<Vec<String>> {
        pages
            .iter()
            .map(|p| {
                p.iter()
                    .map(|i| match i {
                        Item::Line((t, _)) => t.clone(),
                        Item::Qr => "QR".to_owned(),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_qr_code_stays_with_its_section() {
        let (head, section, tail) = (lines("h", 8), lines("s", 3), lines("t", 2));
        // Everything fits: one page.
        let pages = paginate([&head, &section, &tail], 10, 50, 200).unwrap();
        assert_eq!(shape(&pages).len(), 1);
        // The section and its QR (30 + 50) do not fit under the head (80):
        // they move together to the next page; the tail follows.
        let pages = shape(&paginate([&head, &section, &tail], 10, 50, 150).unwrap());
        assert_eq!(pages.len(), 2, "{pages:?}");
        assert_eq!(
            pages[0],
            lines("h", 8).into_iter().map(|l| l.0).collect::<Vec<_>>()
        );
        assert_eq!(pages[1], ["s0", "s1", "s2", "QR", "t0", "t1"]);
        // A section too tall for any page is laid out line by line.
        let long = lines("s", 20);
        let pages = shape(&paginate([&head, &long, &tail], 10, 50, 150).unwrap());
        assert_eq!(pages[0].len(), 15);
        assert!(pages.iter().all(|p| !p.is_empty()));
        assert_eq!(pages.concat().len(), 8 + 20 + 1 + 2);
    }

    #[test]
    fn formats_parse() {
        assert_eq!(PageFormat::parse("a4"), Some(PageFormat::A4));
        assert_eq!(PageFormat::parse("80mm"), Some(PageFormat::Roll80mm));
        assert_eq!(PageFormat::parse("58mm"), None);
    }
}
