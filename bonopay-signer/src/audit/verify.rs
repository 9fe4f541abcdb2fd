//! The offline verifier of an audit bundle: chain, counters, signatures,
//! certification links, and every report recomputed from the entries.

use std::collections::BTreeMap;
use std::str::FromStr;

use bonopay_ledger::{ChainOnly, Entry, EntryKind, Hash, Head, check_one};
use chrono::Datelike;
use chrono_tz::Tz;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{BUNDLE_FORMAT, CertificationLinks, SignatureCheck, head_from_json};
use crate::event::verify_event;
use crate::reports::{ArticleStats, Stats, counted, head_json, local_time};
use crate::sealed::KeyLookup;
use crate::signer::PublicKey;

// ---- verification ----------------------------------------------------------------

/// A bundle that cannot be read at all (exit code 2 of `bonopay verify`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnreadableBundle {
    /// The first line is not a bundle header of a known format.
    #[error("not an audit bundle: {0}")]
    NotABundle(String),
    /// A format this verifier does not know.
    #[error("unsupported bundle format `{0}` (this verifier reads {BUNDLE_FORMAT})")]
    UnsupportedFormat(String),
}

/// The first problem found, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Line of the bundle (1-based).
    pub line: u64,
    /// The entry's seq, when the problem is with an entry.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// Counts of what was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Entries walked (chain, counters, signatures).
    pub entries: u64,
    /// Invoices and credit notes.
    pub invoices: u64,
    /// Z reports whose totals were recomputed and matched.
    pub z_reports: u64,
    /// A reports whose quantities were recomputed and matched.
    pub a_reports: u64,
    /// Closings whose totals were recomputed and matched.
    pub closings: u64,
    /// Reports and closings that cover entries before the bundle's start,
    /// so their totals could not be recomputed (their signatures were
    /// checked).
    pub not_recomputable: u64,
    /// DGI certifications whose link to their invoice was checked.
    pub certifications: u64,
}

/// One step of `--explain`: the hashes of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Line of the bundle.
    pub line: u64,
    /// Entry seq as stated.
    pub seq: u64,
    /// Kind.
    pub kind: String,
    /// The previous entry's hash, as the walk computed it.
    pub expected_prev: String,
    /// `prev_hash` stated by the entry.
    pub prev_hash: String,
    /// `SHA-256(ledger-payload ‖ payload)`, recomputed.
    pub payload_sha256: String,
    /// `SHA-256(ledger-entry ‖ prev_hash ‖ header)`, recomputed.
    pub computed_hash: String,
    /// `entry_hash` stated by the bundle.
    pub stated_hash: String,
    /// `ok`, or what failed.
    pub verdict: String,
}

/// The outcome of verifying a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    /// Outlet.
    pub outlet: String,
    /// First seq in the bundle (0 when empty).
    pub first_seq: u64,
    /// Last seq verified.
    pub last_seq: u64,
    /// The last verified head hash.
    pub head_hash: String,
    /// Key ids in the bundle.
    pub keys: Vec<String>,
    /// What was checked.
    pub checked: Checked,
    /// The first problem; `None` when the bundle is valid.
    pub error: Option<Finding>,
}

impl BundleReport {
    /// Whether the bundle is valid.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.error.is_none()
    }

    /// As JSON (for `bonopay verify --json`).
    #[must_use]
    pub fn to_json(&self) -> Value {
        json!({
            "valid": self.is_valid(),
            "outlet": self.outlet,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head_hash": self.head_hash,
            "keys": self.keys,
            "checked": {
                "entries": self.checked.entries,
                "invoices": self.checked.invoices,
                "z_reports": self.checked.z_reports,
                "a_reports": self.checked.a_reports,
                "closings": self.checked.closings,
                "not_recomputable": self.checked.not_recomputable,
                "certifications": self.checked.certifications,
            },
            "error": self.error.as_ref().map(|f| json!({
                "line": f.line, "seq": f.seq, "reason": f.reason,
            })),
        })
    }
}

#[derive(Default)]
struct Period {
    stats: Stats,
    first: u64,
    last: u64,
}

/// Verifies a bundle line by line, in constant memory per open period.
pub struct Verifier {
    line: u64,
    outlet: String,
    tz: Tz,
    keys: Vec<PublicKey>,
    check: SignatureCheck,
    head: Head,
    start: Head,
    first_seq: u64,
    hasher: Sha256,
    ended: bool,
    error: Option<Finding>,
    checked: Checked,
    /// Statistics since the last Z, when it (or the genesis) is in the bundle.
    session: Option<Stats>,
    last_z_seq: u64,
    articles: Option<ArticleStats>,
    /// The signature verdict of the next entry, when a batch checked it
    /// ahead on another thread (`Some(body)` for signed events).
    pre: Option<Result<Option<Value>, String>>,
    last_a: Option<(u64, u64)>,
    links: CertificationLinks,
    days: BTreeMap<String, Period>,
    months: BTreeMap<String, Period>,
    years: BTreeMap<String, Period>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("outlet", &self.outlet)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

fn hash_of(v: &Value) -> Option<Hash> {
    hex::decode(v.as_str()?).ok()?.try_into().ok()
}

impl Verifier {
    /// Starts from the bundle's first line.
    ///
    /// # Errors
    /// [`UnreadableBundle`] when it is not a bundle header.
    pub fn new(first_line: &[u8]) -> Result<Self, UnreadableBundle> {
        let v: Value = serde_json::from_slice(trim(first_line))
            .map_err(|e| UnreadableBundle::NotABundle(format!("line 1: {e}")))?;
        let b = v
            .get("bundle")
            .ok_or_else(|| UnreadableBundle::NotABundle("line 1 has no `bundle`".into()))?;
        let format = b["format"].as_str().unwrap_or_default();
        if format != BUNDLE_FORMAT {
            return Err(UnreadableBundle::UnsupportedFormat(format.to_owned()));
        }
        let outlet = b["outlet"]
            .as_str()
            .ok_or_else(|| UnreadableBundle::NotABundle("no outlet".into()))?
            .to_owned();
        let mut me = Self {
            line: 1,
            outlet: outlet.clone(),
            tz: chrono_tz::Africa::Kinshasa,
            keys: Vec::new(),
            check: SignatureCheck::new(Vec::new()),
            head: Head::genesis(&outlet),
            start: Head::genesis(&outlet),
            first_seq: 0,
            hasher: Sha256::new(),
            ended: false,
            error: None,
            checked: Checked::default(),
            session: None,
            last_z_seq: 0,
            articles: None,
            last_a: None,
            links: CertificationLinks::default(),
            days: BTreeMap::new(),
            months: BTreeMap::new(),
            years: BTreeMap::new(),
            pre: None,
        };
        me.hasher.update(first_line);
        match b["time_zone"].as_str().map(Tz::from_str) {
            Some(Ok(tz)) => me.tz = tz,
            _ => me.fail(None, "the header names no known time zone"),
        }
        for k in b["keys"].as_array().into_iter().flatten() {
            match PublicKey::from_pem(k["spki_pem"].as_str().unwrap_or_default()) {
                Ok(key) if Some(key.key_id()) == k["key_id"].as_str() => me.keys.push(key),
                Ok(key) => me.fail(
                    None,
                    &format!("key listed as {} has key id {}", k["key_id"], key.key_id()),
                ),
                Err(e) => me.fail(None, &format!("unreadable public key: {e}")),
            }
        }
        me.check = SignatureCheck::new(me.keys.clone());
        match head_from_json(&outlet, &b["start"]) {
            Some(h) => {
                if h.seq == 0 {
                    // From the genesis, every session and period is whole.
                    me.session = Some(Stats::default());
                    me.articles = Some(ArticleStats::default());
                    me.last_a = Some((0, 0));
                }
                me.head = h.clone();
                me.start = h;
            }
            None => me.fail(None, "the start head is malformed (or not the genesis)"),
        }
        Ok(me)
    }

    fn fail(&mut self, seq: Option<u64>, reason: &str) {
        if self.error.is_none() {
            self.error = Some(Finding {
                line: self.line,
                seq,
                reason: reason.to_owned(),
            });
        }
    }

    /// Whether an error was found (later lines are then skipped).
    #[must_use]
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Feeds the next line. With `explain`, returns the entry's hash step.
    pub fn feed(&mut self, raw: &[u8], explain: bool) -> Option<Step> {
        self.line += 1;
        if self.error.is_some() {
            return None;
        }
        if self.ended {
            self.fail(None, "content after the end line");
            return None;
        }
        let v: Value = match serde_json::from_slice(trim(raw)) {
            Ok(v) => v,
            Err(e) => {
                self.fail(None, &format!("not JSON: {e}"));
                return None;
            }
        };
        if let Some(end) = v.get("end") {
            self.finish_end(end);
            return None;
        }
        self.hasher.update(raw);
        let Some(e) = v.get("entry") else {
            self.fail(None, "neither an entry nor the end line");
            return None;
        };
        self.entry(e, explain)
    }

    /// Feeds a run of lines, checking their signatures on all cores first
    /// (the costly part: P-256 verification), then walking them in order
    /// exactly as [`Verifier::feed`] does. Same outcome, faster.
    pub fn feed_batch(&mut self, lines: &[Vec<u8>]) {
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, 8);
        let chunk = lines.len().div_ceil(threads).max(1);
        let check = &self.check;
        let keys: &(dyn KeyLookup + Sync) = &self.keys;
        let verdicts: Vec<Option<Result<Option<Value>, String>>> = std::thread::scope(|s| {
            let hs: Vec<_> = lines
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|raw| {
                                let e = entry_of_line(raw)?;
                                Some(signature_verdict(check, keys, &e))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for (raw, v) in lines.iter().zip(verdicts) {
            if self.error.is_some() {
                break;
            }
            self.pre = v;
            self.feed(raw, false);
            self.pre = None;
        }
    }

    fn entry(&mut self, e: &Value, explain: bool) -> Option<Step> {
        let stated_seq = e["seq"].as_u64();
        let (Some(prev), Some(hash), Some(header), Some(payload)) = (
            hash_of(&e["prev_hash"]),
            hash_of(&e["entry_hash"]),
            e["header"].as_str(),
            e["payload"].as_str(),
        ) else {
            self.fail(stated_seq, "entry line is missing a field");
            return None;
        };
        let entry = Entry::from_parts(
            prev,
            hash,
            header.as_bytes().to_vec(),
            payload.as_bytes().to_vec(),
        );
        let before = self.head.clone();
        let mut step = explain.then(|| Step {
            line: self.line,
            seq: stated_seq.unwrap_or(0),
            kind: e["kind"].as_str().unwrap_or_default().to_owned(),
            expected_prev: hex::encode(before.hash),
            prev_hash: hex::encode(prev),
            payload_sha256: hex::encode(bonopay_ledger::payload_hash(payload.as_bytes())),
            computed_hash: hex::encode(bonopay_ledger::entry_hash(&prev, header.as_bytes())),
            stated_hash: hex::encode(hash),
            verdict: "ok".into(),
        });
        let position = self.checked.entries + 1;
        let result = check_one(&before, position, entry.clone(), &ChainOnly)
            .map_err(|e| e.to_string())
            .and_then(|next| {
                let entry = entry.map_err(|e| e.to_string())?;
                if e["kind"].as_str() != Some(entry.kind.as_str()) {
                    return Err(format!(
                        "the line says kind {} but the header says {}",
                        e["kind"], entry.kind
                    ));
                }
                self.content(&before, &entry)?;
                Ok((next, entry))
            });
        match result {
            Ok((next, entry)) => {
                if self.first_seq == 0 {
                    self.first_seq = entry.seq;
                }
                self.head = next;
                self.checked.entries += 1;
            }
            Err(reason) => {
                if let Some(s) = step.as_mut() {
                    s.verdict.clone_from(&reason);
                }
                self.fail(stated_seq, &reason);
            }
        }
        step
    }

    /// Signatures and report totals of one entry that chains correctly.
    fn content(&mut self, before: &Head, entry: &Entry) -> Result<(), String> {
        let first = self.checked.entries == 0;
        if first && self.start.seq > 0 && entry.kind != EntryKind::ZReport {
            return Err(
                "the bundle starts mid-chain but not at a Z report: its start cannot be authenticated"
                    .into(),
            );
        }
        let body = match self.pre.take() {
            Some(verdict) => verdict?,
            None => signature_verdict(&self.check, &self.keys, entry)?,
        };
        if entry.kind.is_numbered() {
            self.checked.invoices += 1;
        }
        self.links.see(entry)?;
        self.checked.certifications = self.links.certified();
        let date = local_time(entry.time_ms, self.tz)
            .ok_or("time out of range")?
            .date_naive();
        if counted(entry.kind) {
            let labels = [
                (date.format("%Y-%m-%d").to_string(), 0),
                (date.format("%Y-%m").to_string(), 1),
                (date.year().to_string(), 2),
            ];
            for (label, level) in labels {
                let map = match level {
                    0 => &mut self.days,
                    1 => &mut self.months,
                    _ => &mut self.years,
                };
                let p = map.entry(label).or_default();
                p.stats.add(entry).map_err(|e| e.to_string())?;
                if p.first == 0 {
                    p.first = entry.seq;
                }
                p.last = entry.seq;
            }
            if let Some(s) = self.session.as_mut() {
                s.add(entry).map_err(|e| e.to_string())?;
            }
        }
        if let Some(a) = self.articles.as_mut() {
            a.add(entry).map_err(|e| e.to_string())?;
        }
        let Some(body) = body else { return Ok(()) };
        match entry.kind {
            EntryKind::ZReport => self.z_report(before, entry, &body, first),
            EntryKind::AReport => self.a_report(entry, &body),
            EntryKind::Closing => self.closing(&body),
            _ => Ok(()),
        }
    }

    fn z_report(
        &mut self,
        before: &Head,
        entry: &Entry,
        body: &Value,
        first: bool,
    ) -> Result<(), String> {
        if body["closing_head"] != head_json(before) {
            return Err(format!(
                "Z report {}: its closing_head is not the ledger head before it",
                body["z_number"]
            ));
        }
        if first && self.start.seq > 0 {
            // The signed closing head is the bundle's start: from here on
            // the start is authenticated, and the next session is whole.
            self.session = Some(Stats::default());
            self.last_z_seq = entry.seq;
            self.checked.not_recomputable += 1;
            return Ok(());
        }
        match self.session.take() {
            Some(stats) => {
                let period = &body["period"];
                if period["previous_seq"].as_u64() != Some(self.last_z_seq)
                    || period["to_seq"].as_u64() != Some(entry.seq - 1)
                {
                    return Err(format!(
                        "Z report {}: its period {} is not the session since the previous Z (seq {}) up to seq {}",
                        body["z_number"],
                        period,
                        self.last_z_seq,
                        entry.seq - 1
                    ));
                }
                let mine = stats.to_json();
                if body["stats"] != mine {
                    return Err(format!(
                        "Z report {}: totals differ from the entries: {}",
                        body["z_number"],
                        first_difference(&body["stats"], &mine, "stats")
                    ));
                }
                self.checked.z_reports += 1;
            }
            None => self.checked.not_recomputable += 1,
        }
        self.session = Some(Stats::default());
        self.last_z_seq = entry.seq;
        Ok(())
    }

    fn a_report(&mut self, entry: &Entry, body: &Value) -> Result<(), String> {
        let n = body["a_number"].as_u64().unwrap_or(0);
        if let Some((prev_seq, prev_n)) = self.last_a {
            if n != prev_n + 1 || body["period"]["previous_seq"].as_u64() != Some(prev_seq) {
                return Err(format!(
                    "A report {n}: expected A report {} after the one at seq {prev_seq}",
                    prev_n + 1
                ));
            }
            let mine = self
                .articles
                .as_ref()
                .map(|a| serde_json::to_value(a.lines()).unwrap_or_default())
                .unwrap_or_default();
            if body["articles"] != mine {
                return Err(format!(
                    "A report {n}: quantities differ from the entries: {}",
                    first_difference(&body["articles"], &mine, "articles")
                ));
            }
            self.checked.a_reports += 1;
        } else {
            self.checked.not_recomputable += 1;
        }
        self.last_a = Some((entry.seq, n));
        self.articles = Some(ArticleStats::default());
        Ok(())
    }

    fn closing(&mut self, body: &Value) -> Result<(), String> {
        let period = &body["period"];
        let label = period["label"].as_str().unwrap_or_default().to_owned();
        let kind = period["kind"].as_str().unwrap_or_default();
        // Whole only if the bundle starts before the period does.
        let start_label = if self.start.seq == 0 {
            None
        } else {
            local_time(self.start.time_ms, self.tz).map(|t| {
                let d = t.date_naive();
                match kind {
                    "daily" => d.format("%Y-%m-%d").to_string(),
                    "monthly" => d.format("%Y-%m").to_string(),
                    _ => d.year().to_string(),
                }
            })
        };
        let map = match kind {
            "daily" => &mut self.days,
            "monthly" => &mut self.months,
            "yearly" => &mut self.years,
            other => return Err(format!("closing of unknown kind `{other}`")),
        };
        let got = map.remove(&label).unwrap_or_default();
        if start_label.is_some_and(|s| s >= label) {
            self.checked.not_recomputable += 1;
            return Ok(());
        }
        let mine = got.stats.to_json();
        if body["stats"] != mine {
            return Err(format!(
                "{kind} closing {label}: totals differ from the entries: {}",
                first_difference(&body["stats"], &mine, "stats")
            ));
        }
        if period["from_seq"].as_u64() != Some(got.first)
            || period["to_seq"].as_u64() != Some(got.last)
        {
            return Err(format!(
                "{kind} closing {label}: covers seq {}..{} but the period's entries are {}..{}",
                period["from_seq"], period["to_seq"], got.first, got.last
            ));
        }
        self.checked.closings += 1;
        Ok(())
    }

    fn finish_end(&mut self, end: &Value) {
        self.ended = true;
        let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if end["sha256"].as_str() != Some(digest.as_str()) {
            self.fail(
                None,
                "the end line's sha256 does not match the bundle's bytes (altered or truncated)",
            );
        } else if end["entries"].as_u64() != Some(self.checked.entries) {
            self.fail(
                None,
                &format!(
                    "the end line counts {} entries but the bundle holds {}",
                    end["entries"], self.checked.entries
                ),
            );
        } else if end["head"] != head_json(&self.head) {
            self.fail(None, "the end line's head is not the verified head");
        }
    }

    /// The outcome, once every line is fed.
    #[must_use]
    pub fn finish(mut self) -> BundleReport {
        if !self.ended {
            self.line += 1;
            self.fail(None, "the bundle has no end line (truncated)");
        }
        BundleReport {
            outlet: self.outlet,
            first_seq: self.first_seq,
            last_seq: self.head.seq,
            head_hash: hex::encode(self.head.hash),
            keys: self.keys.iter().map(|k| k.key_id().to_owned()).collect(),
            checked: self.checked,
            error: self.error,
        }
    }
}

fn trim(raw: &[u8]) -> &[u8] {
    raw.strip_suffix(b"\n").unwrap_or(raw)
}

/// Where two JSON values first differ, as `path: stated X, recomputed Y`.
fn first_difference(stated: &Value, mine: &Value, path: &str) -> String {
    match (stated, mine) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                if x != y {
                    return first_difference(x, y, &format!("{path}.{k}"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    return first_difference(x, y, &format!("{path}[{i}]"));
                }
            }
        }
        _ => {}
    }
    format!("{path}: stated {stated}, recomputed {mine}")
}

/// The entry an entry line states (without judging it), for the parallel
/// signature pass; `None` when the line is not one (the walk reports it).
fn entry_of_line(raw: &[u8]) -> Option<Entry> {
    let v: Value = serde_json::from_slice(trim(raw)).ok()?;
    let e = v.get("entry")?;
    Entry::from_parts(
        hash_of(&e["prev_hash"])?,
        hash_of(&e["entry_hash"])?,
        e["header"].as_str()?.as_bytes().to_vec(),
        e["payload"].as_str()?.as_bytes().to_vec(),
    )
    .ok()
}

/// Checks an entry's signature: the sealed invoice's, or the signed
/// event's (whose body is returned); other kinds carry none.
fn signature_verdict(
    check: &SignatureCheck,
    keys: &(dyn KeyLookup + Sync),
    entry: &Entry,
) -> Result<Option<Value>, String> {
    if crate::event::schema_of(entry.kind).is_some() {
        return verify_event(entry, keys)
            .map(Some)
            .map_err(|e| format!("signed {}: {e}", entry.kind));
    }
    check.check_signature(entry).map(|()| None)
}
