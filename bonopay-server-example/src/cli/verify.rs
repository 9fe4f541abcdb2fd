//! `bonopay verify BUNDLE`: checks an audit bundle offline, with nothing
//! but the bundle: the chain, the counters, every signature, and every Z
//! report, A report and closing recomputed from the entries.
//!
//! Exit codes: `0` valid; `1` invalid (the first bad entry and why are
//! printed); `2` when the bundle cannot be read.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use bonopay_signer::audit::{BundleReport, Step, Verifier};

use super::Failure;

/// Options of `bonopay verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle file (`-` for stdin).
    pub bundle: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Show each entry's hashes (expected previous hash, stated previous
    /// hash, recomputed payload and entry hash) up to the first break.
    #[arg(long)]
    pub explain: bool,
}

fn step_text(s: &Step) -> String {
    format!(
        "line {} seq {} {}\n  expected prev  {}\n  stated prev    {}\n  payload sha256 {}\n  computed hash  {}\n  stated hash    {}\n  => {}\n",
        s.line,
        s.seq,
        s.kind,
        s.expected_prev,
        s.prev_hash,
        s.payload_sha256,
        s.computed_hash,
        s.stated_hash,
        s.verdict
    )
}

fn step_json(s: &Step) -> serde_json::Value {
    serde_json::json!({
        "line": s.line, "seq": s.seq, "kind": s.kind,
        "expected_prev": s.expected_prev, "prev_hash": s.prev_hash,
        "payload_sha256": s.payload_sha256, "computed_hash": s.computed_hash,
        "stated_hash": s.stated_hash, "verdict": s.verdict,
    })
}

fn summary(r: &BundleReport) -> String {
    let c = &r.checked;
    let mut out = format!(
        "bundle of outlet {}: {}\n  entries {}..{} ({} checked: chain, counters, signatures)\n  invoices and credit notes: {}\n  recomputed from the entries: {} Z reports, {} A reports, {} closings\n  signature only (period starts before the bundle): {}\n  keys: {}\n  head: {}\n",
        r.outlet,
        if r.is_valid() { "VALID" } else { "INVALID" },
        r.first_seq,
        r.last_seq,
        c.entries,
        c.invoices,
        c.z_reports,
        c.a_reports,
        c.closings,
        c.not_recomputable,
        r.keys.join(", "),
        r.head_hash,
    );
    if let Some(e) = &r.error {
        out.push_str(&format!(
            "  FIRST PROBLEM at line {}{}: {}\n",
            e.line,
            e.seq.map(|s| format!(" (seq {s})")).unwrap_or_default(),
            e.reason
        ));
    }
    out
}

/// Verifies the bundle; `Failure::Broken` carries the report when it is
/// invalid.
///
/// # Errors
/// [`Failure::Message`] (exit 2) when the bundle cannot be read;
/// [`Failure::Broken`] (exit 1) when it is invalid.
pub fn run(args: &Args) -> Result<String, Failure> {
    let reader: Box<dyn BufRead> = if args.bundle.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f = File::open(&args.bundle)
            .map_err(|e| Failure::Message(format!("cannot read {}: {e}", args.bundle.display())))?;
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    verify_reader(reader, args)
}

fn verify_reader(mut reader: Box<dyn BufRead>, args: &Args) -> Result<String, Failure> {
    let read_err = |e: std::io::Error| Failure::Message(format!("cannot read the bundle: {e}"));
    let mut line = Vec::with_capacity(8192);
    if reader.read_until(b'\n', &mut line).map_err(read_err)? == 0 {
        return Err(Failure::Message("the bundle is empty".into()));
    }
    let mut v = Verifier::new(&line).map_err(|e| Failure::Message(e.to_string()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut steps = Vec::new();
    if args.explain {
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(read_err)? == 0 {
                break;
            }
            if let Some(step) = v.feed(&line, true) {
                if args.json {
                    steps.push(step_json(&step));
                } else {
                    let _ = out.write_all(step_text(&step).as_bytes());
                }
            }
        }
    } else {
        // Batches: signatures are checked on all cores ahead of the walk.
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(512);
        loop {
            let mut l = Vec::with_capacity(4096);
            let n = reader.read_until(b'\n', &mut l).map_err(read_err)?;
            if n > 0 {
                batch.push(l);
            }
            if (n == 0 || batch.len() == 512) && !batch.is_empty() {
                v.feed_batch(&batch);
                batch.clear();
                if v.failed() {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
    }
    let _ = out.flush();
    drop(out);
    let report = v.finish();
    let text = if args.json {
        let mut j = report.to_json();
        if args.explain {
            j["explain"] = serde_json::Value::Array(steps);
        }
        serde_json::to_string_pretty(&j).unwrap_or_default() + "\n"
    } else {
        summary(&report)
    };
    if report.is_valid() {
        Ok(text)
    } else {
        Err(Failure::Broken(text))
    }
}
