//! Plain-text layout for thermal printers (58 mm = 32 columns, 80 mm =
//! 48): a document is a list of width-independent [`Block`]s, laid out at
//! any width. Receipts and reports (X, Z, A, closings) share it, so they
//! wrap, centre and align alike.

use std::fmt::Write as _;

fn len(s: &str) -> usize {
    s.chars().count()
}

/// Splits `text` into lines of at most `width` characters, at spaces when
/// it can.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_owned();
        while len(&word) > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(head);
        }
        let extra = usize::from(!line.is_empty());
        if len(&line) + extra + len(&word) > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// One element of a document (a receipt, a report), before layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// Text, wrapped at spaces.
    Line(String),
    /// Centred text (headings, the seller), wrapped.
    Center(String),
    /// A label on the left and a value aligned right; on two lines when
    /// they do not fit.
    Pair(String, String),
    /// A full-width rule made of this character.
    Rule(char),
}

/// Lays `blocks` out at `width` columns: one string per line (without its
/// newline), each with whether it is a heading (a centred block), which
/// graphic renderers print in bold.
#[must_use]
pub fn lay_out(blocks: &[Block], width: usize) -> Vec<(String, bool)> {
    let mut lines = Vec::new();
    for b in blocks {
        let mut out = Out {
            text: String::new(),
            width,
        };
        match b {
            Block::Line(t) => out.line(t),
            Block::Center(t) => out.center(t),
            Block::Pair(l, r) => out.lr(l, r),
            Block::Rule(c) => out.rule(*c),
        }
        let heading = matches!(b, Block::Center(_));
        lines.extend(out.text.lines().map(|l| (l.to_owned(), heading)));
    }
    lines
}

/// `blocks` laid out at `width`, as text with a newline after each line.
#[must_use]
pub fn to_text(blocks: &[Block], width: usize) -> String {
    let mut t = String::new();
    for (l, _) in lay_out(blocks, width) {
        t.push_str(&l);
        t.push('\n');
    }
    t
}

struct Out {
    text: String,
    width: usize,
}

impl Out {
    fn line(&mut self, s: &str) {
        for l in wrap(s, self.width) {
            self.text.push_str(l.trim_end());
            self.text.push('\n');
        }
    }

    fn center(&mut self, s: &str) {
        for l in wrap(s, self.width) {
            let pad = (self.width - len(&l)) / 2;
            let _ = writeln!(self.text, "{}{}", " ".repeat(pad), l);
        }
    }

    /// `left` and `right` on one line, right-aligned; on two if they do
    /// not fit.
    fn lr(&mut self, left: &str, right: &str) {
        if len(left) + 1 + len(right) <= self.width {
            let pad = self.width - len(left) - len(right);
            let _ = writeln!(self.text, "{left}{}{right}", " ".repeat(pad));
        } else {
            self.line(left);
            let pad = self.width.saturating_sub(len(right));
            let _ = writeln!(self.text, "{}{right}", " ".repeat(pad));
        }
    }

    fn rule(&mut self, c: char) {
        let _ = writeln!(self.text, "{}", c.to_string().repeat(self.width));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn wrap_never_exceeds_the_width() {
        let text = "Savon de Marseille extra-doux parfumé à la lavande 0123456789012345678901234567890123456789";
        for w in [20, 32, 48] {
            let lines = wrap(text, w);
            assert!(lines.iter().all(|l| len(l) <= w), "{lines:?}");
            assert_eq!(
                lines.concat().replace(' ', ""),
                text.replace(' ', ""),
                "nothing lost"
            );
        }
    }

    #[test]
    fn pairs_align_right_or_split() {
        let blocks = [
            Block::Pair("ab".into(), "12".into()),
            Block::Pair("abcdefgh".into(), "1234".into()),
        ];
        assert_eq!(to_text(&blocks, 10), "ab      12\nabcdefgh\n      1234\n");
    }
}
