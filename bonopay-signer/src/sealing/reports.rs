//! X, Z and A reports, closings and incomplete sales over the store:
//! computed from the ledger with the pure accumulators of
//! [`crate::reports`] and, except for X, sealed into it as signed events.
//! The part of the reports component that reads the store and signs lives
//! here, with the pipeline whose outlet lock and trusted clock it shares.
//!
//! **Sessions.** An outlet's session is the stretch of chain since its last
//! Z report (or since the genesis). X shows the session's statistics; Z
//! shows them and closes the session by appending itself, with the next Z
//! number and the ledger head it closed. **A reports** run from the last A
//! report in the same way, per article.
//!
//! **Closings.** A daily closing seals the statistics of one business day,
//! the entries whose trusted time falls on that date in the outlet's time
//! zone (Africa/Kinshasa or Africa/Lubumbashi, from the tz database). A
//! monthly closing is the merge of that month's daily closings, a yearly
//! closing the merge of its monthly ones. [`Fiscalizer::close_periods`]
//! seals every period that has ended and is not closed yet; a period is
//! closed at most once (a unique ledger index key).
//!
//! **Memory.** Everything streams over the store's paged iterator into the
//! additive accumulators of [`crate::reports`]. A Z report computes the bulk
//! of its statistics before it takes the outlet lock, and only the entries
//! appended meanwhile under it, so tills are blocked for that remainder,
//! not for the whole session.

use std::collections::BTreeMap;

use bonopay_ledger::{Entry, EntryKind, EntryMeta, Head, IndexKey, LedgerError, Prepared};
use chrono::{DateTime, Datelike, NaiveDate};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use super::{Fiscalizer, SealError, lock_for};
use crate::event::{event_body, event_digest, event_payload};
use crate::index;
use crate::reports::{
    A_SCHEMA, ArticleStats, CLOSING_SCHEMA, INCOMPLETE_SALE_SCHEMA, IncompleteSale, PeriodKind,
    Report, ReportIdentity, ReportKind, SealedRef, Stats, X_SCHEMA, Z_SCHEMA, counted, dec2,
    head_json, local_time,
};

fn rfc3339(t: &DateTime<Tz>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

fn storage(e: LedgerError) -> SealError {
    SealError::Storage(e)
}

fn corrupt_entry(e: impl std::fmt::Display) -> SealError {
    SealError::Storage(LedgerError::Corrupt(e.to_string()))
}

impl Fiscalizer {
    /// The latest entry found under a non-unique index (max seq).
    fn last_indexed(&self, name: &str, value: &str) -> Result<Option<(u64, Value)>, SealError> {
        let hits = self.store.find_index(name, value).map_err(storage)?;
        let Some(seq) = hits.iter().map(|(_, s)| *s).max() else {
            return Ok(None);
        };
        let outlet = hits
            .iter()
            .find(|(_, s)| *s == seq)
            .map(|(o, _)| o.clone())
            .unwrap_or_default();
        let entry = self
            .store
            .entry(&outlet, seq)
            .map_err(storage)?
            .ok_or_else(|| corrupt_entry(format!("index {name} points at missing {seq}")))?;
        Ok(Some((
            seq,
            event_body(&entry.payload).map_err(SealError::Corrupt)?,
        )))
    }

    /// The outlet's last Z report: its seq and body.
    fn last_z(&self, outlet: &str, z_number: u64) -> Result<Option<(u64, Value)>, SealError> {
        if z_number == 0 {
            return Ok(None);
        }
        self.last_indexed(index::Z_REPORT, &format!("{outlet}/{z_number}"))
    }

    /// Feeds entries `from..=to` of `outlet` to `f`, streaming.
    fn scan(
        &self,
        outlet: &str,
        from: u64,
        to: u64,
        mut f: impl FnMut(&Entry) -> Result<bool, SealError>,
    ) -> Result<(), SealError> {
        if from > to {
            return Ok(());
        }
        for item in self.store.iter_from(outlet, from) {
            let e = item.map_err(storage)?;
            if e.seq > to || !f(&e)? {
                break;
            }
        }
        Ok(())
    }

    fn session_stats(&self, outlet: &str, from: u64, to: u64) -> Result<Stats, SealError> {
        let mut stats = Stats::default();
        self.scan(outlet, from, to, |e| {
            stats.add(e).map_err(corrupt_entry)?;
            Ok(true)
        })?;
        Ok(stats)
    }

    fn identity_fields(&self, m: &mut Map<String, Value>, id: &ReportIdentity, outlet: &str) {
        m.insert("merchant_nif".into(), json!(id.merchant_nif));
        m.insert("trade_name".into(), json!(id.trade_name));
        m.insert("nid".into(), json!(self.config.nid));
        m.insert("outlet".into(), json!(outlet));
        m.insert("time_zone".into(), json!(self.time_zone(outlet).name()));
        if let Some(isf) = &self.config.isf {
            m.insert("isf".into(), json!(isf));
        }
    }

    /// Appends one signed event under the outlet lock. `build` is called
    /// with the head, the prepared position and the trusted local time, and
    /// returns the event's own fields and index keys; it is called again
    /// if another writer moved the head. Nothing is appended if `build` or
    /// the signer fails.
    pub(crate) fn seal_event<F>(
        &self,
        outlet: &str,
        kind: EntryKind,
        mut build: F,
    ) -> Result<Report, SealError>
    where
        F: FnMut(
            &Head,
            &Prepared,
            &DateTime<Tz>,
        ) -> Result<(Map<String, Value>, Vec<IndexKey>), SealError>,
    {
        let lock = lock_for(&self.outlet_locks, outlet);
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut attempts = 0;
        loop {
            attempts += 1;
            // The stored head, not the predicted one: a report covers only
            // committed entries. Invoices still queued for commit were
            // placed before it and commit first, so this append then
            // conflicts and the next attempt includes them.
            self.forget_head(outlet);
            let head = self.store.head(outlet).map_err(storage)?;
            let (time_ms, local) = self.trusted_time(&head)?;
            let meta = EntryMeta {
                kind,
                invoice_type: None,
                fiscal_year: local.year(),
                time_ms,
            };
            let prepared = head.prepare(&meta).map_err(storage)?;
            let (mut body, keys) = build(&head, &prepared, &local)?;
            body.insert("algorithm".into(), json!(self.signer.algorithm().as_str()));
            body.insert("key_id".into(), json!(self.signer.key_id()));
            body.insert("nid".into(), json!(self.config.nid));
            body.insert("outlet".into(), json!(outlet));
            body.insert("prev_hash".into(), json!(hex::encode(prepared.prev_hash)));
            body.insert("seq".into(), json!(prepared.seq));
            body.insert("time_ms".into(), json!(time_ms));
            body.insert("time_zone".into(), json!(self.time_zone(outlet).name()));
            body.insert("timestamp".into(), json!(rfc3339(&local)));
            let body = Value::Object(body);
            let body_jcs = serde_json_canonicalizer::to_vec(&body)
                .map_err(|e| corrupt_entry(format!("event body: {e}")))?;
            let out = self
                .signer
                .sign(&event_digest(&body_jcs))
                .map_err(SealError::SignerUnavailable)?;
            let payload = event_payload(&body_jcs, &out);
            let entry = prepared.seal(payload).with_index(keys);
            match self.store.append(&entry) {
                Ok(head) => {
                    self.remember_head(head);
                    let kind = match kind {
                        EntryKind::ZReport => ReportKind::Z,
                        EntryKind::AReport => ReportKind::A,
                        EntryKind::Closing => ReportKind::Closing,
                        _ => ReportKind::IncompleteSale,
                    };
                    return Ok(Report {
                        kind,
                        body,
                        sealed: Some(SealedRef {
                            seq: entry.seq,
                            entry_hash: hex::encode(entry.entry_hash),
                            signature: out.signature.to_hex(),
                        }),
                    });
                }
                Err(LedgerError::Conflict { .. })
                    if attempts <= self.config.max_conflict_retries =>
                {
                    self.forget_head(outlet);
                }
                Err(e) => {
                    self.forget_head(outlet);
                    return Err(storage(e));
                }
            }
        }
    }

    /// The X report: the current session's statistics, without closing it.
    ///
    /// # Errors
    /// [`SealError::Storage`] when the ledger cannot be read.
    pub fn x_report(&self, outlet: &str, id: &ReportIdentity) -> Result<Report, SealError> {
        let head = self.store.head(outlet).map_err(storage)?;
        let last_z = self.last_z(outlet, head.z_number)?;
        let prev_seq = last_z.as_ref().map_or(0, |(s, _)| *s);
        let stats = self.session_stats(outlet, prev_seq + 1, head.seq)?;
        let tz = self.time_zone(outlet);
        let now = self.clock.now_ms().max(head.time_ms);
        let local = local_time(now, tz).ok_or_else(|| corrupt_entry("time out of range"))?;
        let mut m = Map::new();
        self.identity_fields(&mut m, id, outlet);
        m.insert("schema".into(), json!(X_SCHEMA));
        m.insert("timestamp".into(), json!(rfc3339(&local)));
        m.insert("next_z_number".into(), json!(head.z_number + 1));
        m.insert(
            "period".into(),
            period_json(prev_seq, head.seq, last_z.as_ref().map(|(_, b)| b)),
        );
        m.insert("head".into(), head_json(&head));
        m.insert("stats".into(), stats.to_json());
        Ok(Report {
            kind: ReportKind::X,
            body: Value::Object(m),
            sealed: None,
        })
    }

    /// The Z report: the session's statistics, sealed into the chain with
    /// the next Z number and the head it closes. The next session starts
    /// after it.
    ///
    /// # Errors
    /// [`SealError`]; nothing is appended on error.
    pub fn z_report(&self, outlet: &str, id: &ReportIdentity) -> Result<Report, SealError> {
        // The bulk, before taking the outlet lock.
        let head0 = self.store.head(outlet).map_err(storage)?;
        let mut base_z = head0.z_number;
        let mut last_z = self.last_z(outlet, base_z)?;
        let mut prev_seq = last_z.as_ref().map_or(0, |(s, _)| *s);
        let mut stats = self.session_stats(outlet, prev_seq + 1, head0.seq)?;
        let mut covered = head0.seq;
        self.seal_event(outlet, EntryKind::ZReport, |head, prepared, _| {
            if head.z_number != base_z || head.seq < covered {
                // Another Z (another process) closed the session meanwhile,
                // or the chain is not what we read: start over, locked.
                base_z = head.z_number;
                last_z = self.last_z(outlet, base_z)?;
                prev_seq = last_z.as_ref().map_or(0, |(s, _)| *s);
                stats = Stats::default();
                covered = prev_seq;
            }
            let mut rest = Stats::default();
            self.scan(outlet, covered + 1, head.seq, |e| {
                rest.add(e).map_err(corrupt_entry)?;
                Ok(true)
            })?;
            stats.merge(&rest);
            covered = head.seq;
            let z = prepared.z_number.unwrap_or(head.z_number + 1);
            let mut m = Map::new();
            self.identity_fields(&mut m, id, outlet);
            m.insert("schema".into(), json!(Z_SCHEMA));
            m.insert("z_number".into(), json!(z));
            m.insert(
                "period".into(),
                period_json(prev_seq, head.seq, last_z.as_ref().map(|(_, b)| b)),
            );
            m.insert("closing_head".into(), head_json(head));
            m.insert("stats".into(), stats.to_json());
            Ok((
                m,
                vec![IndexKey::unique(index::Z_REPORT, format!("{outlet}/{z}"))],
            ))
        })
    }

    /// The A report: per article, quantities sold and returned since the
    /// last A report. With `seal`, it is appended to the chain and the next
    /// A report starts after it; without, it is a preview.
    ///
    /// # Errors
    /// [`SealError`]; nothing is appended on error.
    pub fn a_report(
        &self,
        outlet: &str,
        id: &ReportIdentity,
        seal: bool,
    ) -> Result<Report, SealError> {
        let compute = |head: &Head| -> Result<(Map<String, Value>, u64), SealError> {
            let last = self.last_indexed(index::A_REPORTS, outlet)?;
            let prev_seq = last.as_ref().map_or(0, |(s, _)| *s);
            let a_number = last
                .as_ref()
                .and_then(|(_, b)| b.get("a_number").and_then(Value::as_u64))
                .unwrap_or(0)
                + 1;
            let mut articles = ArticleStats::default();
            self.scan(outlet, prev_seq + 1, head.seq, |e| {
                articles.add(e).map_err(corrupt_entry)?;
                Ok(true)
            })?;
            let mut m = Map::new();
            self.identity_fields(&mut m, id, outlet);
            m.insert("schema".into(), json!(A_SCHEMA));
            m.insert("a_number".into(), json!(a_number));
            m.insert(
                "period".into(),
                period_json(prev_seq, head.seq, last.as_ref().map(|(_, b)| b)),
            );
            m.insert(
                "articles".into(),
                serde_json::to_value(articles.lines()).unwrap_or_default(),
            );
            Ok((m, a_number))
        };
        if !seal {
            let head = self.store.head(outlet).map_err(storage)?;
            let (mut m, _) = compute(&head)?;
            let tz = self.time_zone(outlet);
            let now = self.clock.now_ms().max(head.time_ms);
            let local = local_time(now, tz).ok_or_else(|| corrupt_entry("time out of range"))?;
            m.insert("timestamp".into(), json!(rfc3339(&local)));
            m.insert("preview".into(), json!(true));
            return Ok(Report {
                kind: ReportKind::A,
                body: Value::Object(m),
                sealed: None,
            });
        }
        self.seal_event(outlet, EntryKind::AReport, |head, _, _| {
            let (m, n) = compute(head)?;
            Ok((
                m,
                vec![
                    IndexKey::unique(index::A_REPORT, format!("{outlet}/{n}")),
                    IndexKey::multi(index::A_REPORTS, outlet),
                ],
            ))
        })
    }

    /// Records an abandoned sale (a signed entry; X and Z reports count
    /// them as incomplete sales).
    ///
    /// # Errors
    /// [`SealError::Invalid`] for a negative amount or an overlong reason;
    /// otherwise as sealing.
    pub fn record_incomplete_sale(
        &self,
        outlet: &str,
        sale: &IncompleteSale,
    ) -> Result<Report, SealError> {
        use bonopay_core::{ErrorCode, ValidationError, ValidationErrors};
        let mut errors = Vec::new();
        if sale.amount.is_sign_negative() || sale.amount.scale() > 2 {
            errors.push(ValidationError::new(
                "amount",
                ErrorCode::InvalidValue,
                "amount must be zero or positive, with at most 2 decimals",
            ));
        }
        if sale.reason.chars().count() > 200 || sale.reason.chars().any(char::is_control) {
            errors.push(ValidationError::new(
                "reason",
                ErrorCode::InvalidValue,
                "reason must be at most 200 printable characters",
            ));
        }
        for (path, v) in [
            ("merchant_nif", &sale.merchant_nif),
            ("pos_terminal_id", &sale.pos_terminal_id),
            ("cashier_id", &sale.cashier_id),
        ] {
            // Characters, as the message (and the published schema) says.
            if v.is_empty() || v.chars().count() > 64 || v.chars().any(char::is_control) {
                errors.push(ValidationError::new(
                    path,
                    ErrorCode::InvalidValue,
                    "must be 1 to 64 printable characters",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(SealError::Invalid(ValidationErrors(errors)));
        }
        self.seal_event(outlet, EntryKind::IncompleteSale, |_, _, _| {
            let mut m = Map::new();
            m.insert("schema".into(), json!(INCOMPLETE_SALE_SCHEMA));
            m.insert("amount".into(), json!(dec2::fmt(&sale.amount)));
            m.insert("cashier_id".into(), json!(sale.cashier_id));
            m.insert("merchant_nif".into(), json!(sale.merchant_nif));
            m.insert("pos_terminal_id".into(), json!(sale.pos_terminal_id));
            m.insert("reason".into(), json!(sale.reason));
            Ok((m, Vec::new()))
        })
    }

    /// Seals every daily, monthly and yearly closing of `outlet` whose
    /// period has ended (in the outlet's time zone) and is not closed yet,
    /// oldest first. Days without invoices, credit notes or incomplete
    /// sales get no closing. Safe to call at any time and from several
    /// processes: each period is closed once.
    ///
    /// # Errors
    /// [`SealError`]; closings sealed before the error stay sealed.
    pub fn close_periods(
        &self,
        outlet: &str,
        id: &ReportIdentity,
    ) -> Result<Vec<Report>, SealError> {
        let tz = self.time_zone(outlet);
        let mut done = Vec::new();
        // Daily.
        let last = self.last_indexed(index::CLOSINGS, &format!("{outlet}/daily"))?;
        let mut cursor = last
            .as_ref()
            .and_then(|(_, b)| b.pointer("/period/to_seq").and_then(Value::as_u64))
            .unwrap_or(0)
            + 1;
        loop {
            let head = self.store.head(outlet).map_err(storage)?;
            let today = self.today(&head)?;
            // The first counted entry from the cursor opens day D.
            let mut day: Option<NaiveDate> = None;
            let mut stats = Stats::default();
            let (mut from, mut to) = (0, 0);
            let mut ended = false;
            self.scan(outlet, cursor, head.seq, |e| {
                let date = local_time(e.time_ms, tz)
                    .ok_or_else(|| corrupt_entry("time out of range"))?
                    .date_naive();
                match day {
                    Some(d) if date > d => {
                        ended = true;
                        return Ok(false);
                    }
                    None if !counted(e.kind) => return Ok(true),
                    None if date >= today => return Ok(false),
                    None => {
                        day = Some(date);
                        from = e.seq;
                    }
                    Some(_) => {}
                }
                if counted(e.kind) {
                    stats.add(e).map_err(corrupt_entry)?;
                    to = e.seq;
                }
                Ok(true)
            })?;
            let Some(d) = day else { break };
            let scanned_to = if ended { to } else { head.seq };
            let label = PeriodKind::Daily.label(d);
            let sealed = self.seal_event(outlet, EntryKind::Closing, |h, _, local| {
                if local.date_naive() <= d {
                    return Err(SealError::ClockBehind {
                        behind_ms: 0,
                        tolerance_ms: self.config.clock_tolerance_ms,
                    });
                }
                // Entries appended since the scan that still fall on D
                // (a held clock) belong to it.
                if !ended {
                    let mut rest = Stats::default();
                    let mut rest_to = to;
                    self.scan(outlet, scanned_to.max(to) + 1, h.seq, |e| {
                        let date = local_time(e.time_ms, tz)
                            .ok_or_else(|| corrupt_entry("time out of range"))?
                            .date_naive();
                        if date > d {
                            return Ok(false);
                        }
                        if counted(e.kind) {
                            rest.add(e).map_err(corrupt_entry)?;
                            rest_to = e.seq;
                        }
                        Ok(true)
                    })?;
                    let mut all = stats.clone();
                    all.merge(&rest);
                    return Ok(closing_body(
                        self,
                        id,
                        outlet,
                        PeriodKind::Daily,
                        &label,
                        from,
                        rest_to,
                        &all,
                        &[],
                    ));
                }
                Ok(closing_body(
                    self,
                    id,
                    outlet,
                    PeriodKind::Daily,
                    &label,
                    from,
                    to,
                    &stats,
                    &[],
                ))
            });
            match sealed {
                Ok(r) => {
                    cursor = r
                        .body
                        .pointer("/period/to_seq")
                        .and_then(Value::as_u64)
                        .unwrap_or(to)
                        + 1;
                    done.push(r);
                }
                Err(SealError::Storage(LedgerError::Duplicate { .. })) => {
                    // Another process closed D first: continue after its closing.
                    let last = self.last_indexed(index::CLOSINGS, &format!("{outlet}/daily"))?;
                    let next = last
                        .as_ref()
                        .and_then(|(_, b)| b.pointer("/period/to_seq").and_then(Value::as_u64))
                        .unwrap_or(to)
                        + 1;
                    cursor = next.max(to + 1);
                }
                Err(SealError::ClockBehind { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        // Monthly from daily, yearly from monthly.
        for (kind, below) in [
            (PeriodKind::Monthly, PeriodKind::Daily),
            (PeriodKind::Yearly, PeriodKind::Monthly),
        ] {
            done.extend(self.close_merged(outlet, id, kind, below)?);
        }
        Ok(done)
    }

    fn today(&self, head: &Head) -> Result<NaiveDate, SealError> {
        let (_, local) = self.trusted_time(head)?;
        Ok(local.date_naive())
    }

    fn close_merged(
        &self,
        outlet: &str,
        id: &ReportIdentity,
        kind: PeriodKind,
        below: PeriodKind,
    ) -> Result<Vec<Report>, SealError> {
        let last = self.last_indexed(index::CLOSINGS, &format!("{outlet}/{}", kind.as_str()))?;
        let after = last.as_ref().map_or(0, |(s, _)| *s);
        let mut lower: Vec<u64> = self
            .store
            .find_index(index::CLOSINGS, &format!("{outlet}/{}", below.as_str()))
            .map_err(storage)?
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| *s > after)
            .collect();
        lower.sort_unstable();
        let label_len = if kind == PeriodKind::Monthly { 7 } else { 4 };
        // Group the lower closings by the period they fall in.
        let mut groups: BTreeMap<String, Vec<(u64, Value)>> = BTreeMap::new();
        for seq in lower {
            let e = self
                .store
                .entry(outlet, seq)
                .map_err(storage)?
                .ok_or_else(|| corrupt_entry(format!("closing {seq} missing")))?;
            let body = event_body(&e.payload).map_err(SealError::Corrupt)?;
            let label = body
                .pointer("/period/label")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some(prefix) = label.get(..label_len) else {
                return Err(corrupt_entry(format!("closing {seq} has label `{label}`")));
            };
            groups
                .entry(prefix.to_owned())
                .or_default()
                .push((seq, body));
        }
        let mut done = Vec::new();
        for (label, parts) in groups {
            let head = self.store.head(outlet).map_err(storage)?;
            let current = kind.label(self.today(&head)?);
            if label >= current {
                break;
            }
            let mut stats = Stats::default();
            let mut seqs = Vec::new();
            for (seq, body) in &parts {
                let s: Stats = serde_json::from_value(body["stats"].clone())
                    .map_err(|e| corrupt_entry(format!("closing {seq}: {e}")))?;
                stats.merge(&s);
                seqs.push(*seq);
            }
            let from = parts
                .first()
                .and_then(|(_, b)| b.pointer("/period/from_seq").and_then(Value::as_u64))
                .unwrap_or(0);
            let to = parts
                .last()
                .and_then(|(_, b)| b.pointer("/period/to_seq").and_then(Value::as_u64))
                .unwrap_or(0);
            let sealed = self.seal_event(outlet, EntryKind::Closing, |_, _, _| {
                Ok(closing_body(
                    self, id, outlet, kind, &label, from, to, &stats, &seqs,
                ))
            });
            match sealed {
                Ok(r) => done.push(r),
                Err(SealError::Storage(LedgerError::Duplicate { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Reads a sealed report back from the chain (Z, A, closing or
    /// incomplete sale), verifying its signature with the trusted keys.
    ///
    /// # Errors
    /// [`SealError::Storage`] or [`SealError::Corrupt`].
    pub fn load_report(&self, outlet: &str, seq: u64) -> Result<Option<Report>, SealError> {
        let Some(entry) = self.store.entry(outlet, seq).map_err(storage)? else {
            return Ok(None);
        };
        let kind = match entry.kind {
            EntryKind::ZReport => ReportKind::Z,
            EntryKind::AReport => ReportKind::A,
            EntryKind::Closing => ReportKind::Closing,
            EntryKind::IncompleteSale => ReportKind::IncompleteSale,
            _ => return Ok(None),
        };
        let mut keys = self.config.trusted_keys.clone();
        keys.push(self.signer.public_key().clone());
        let body = crate::event::verify_event(&entry, &keys).map_err(SealError::Corrupt)?;
        let signature = serde_json::from_slice::<Value>(&entry.payload)
            .ok()
            .and_then(|v| v["signature"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Ok(Some(Report {
            kind,
            body,
            sealed: Some(SealedRef {
                seq,
                entry_hash: hex::encode(entry.entry_hash),
                signature,
            }),
        }))
    }

    /// The outlet's Z reports, newest first: `(z_number, seq)`.
    ///
    /// # Errors
    /// [`SealError::Storage`].
    pub fn z_reports(&self, outlet: &str) -> Result<Vec<(u64, u64)>, SealError> {
        let head = self.store.head(outlet).map_err(storage)?;
        let mut out = Vec::new();
        for z in (1..=head.z_number).rev() {
            for (o, seq) in self
                .store
                .find_index(index::Z_REPORT, &format!("{outlet}/{z}"))
                .map_err(storage)?
            {
                if o == outlet {
                    out.push((z, seq));
                }
            }
        }
        Ok(out)
    }
}

fn period_json(prev_seq: u64, to_seq: u64, prev: Option<&Value>) -> Value {
    json!({
        "from_seq": prev_seq + 1,
        "since": prev.and_then(|b| b.get("timestamp")).cloned().unwrap_or(Value::Null),
        "previous_seq": prev_seq,
        "to_seq": to_seq,
    })
}

#[allow(clippy::too_many_arguments)]
fn closing_body(
    f: &Fiscalizer,
    id: &ReportIdentity,
    outlet: &str,
    kind: PeriodKind,
    label: &str,
    from: u64,
    to: u64,
    stats: &Stats,
    closings: &[u64],
) -> (Map<String, Value>, Vec<IndexKey>) {
    let mut m = Map::new();
    f.identity_fields(&mut m, id, outlet);
    m.insert("schema".into(), json!(CLOSING_SCHEMA));
    let mut period = json!({
        "from_seq": from,
        "kind": kind.as_str(),
        "label": label,
        "to_seq": to,
    });
    if kind != PeriodKind::Daily {
        period["closings"] = json!(closings);
    }
    m.insert("period".into(), period);
    m.insert("stats".into(), stats.to_json());
    (
        m,
        vec![
            IndexKey::unique(
                index::CLOSING,
                format!("{outlet}/{}/{label}", kind.as_str()),
            ),
            IndexKey::multi(index::CLOSINGS, format!("{outlet}/{}", kind.as_str())),
        ],
    )
}
