//! The e-MCF API's behaviour behind the HTTP routes: status and info
//! tables, `POST` with its checks (credit notes against their originals,
//! the pending cap), CONFIRM with the DGI's counters and Code DEF/DGI,
//! CANCEL, the details echo and the pending expiry. The routes themselves
//! are in `http`.

use super::*;

/// An error answer: HTTP status and the e-MCF error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub desc: String,
}

impl ApiError {
    pub(super) fn new(status: u16, code: &'static str, desc: impl Into<String>) -> Self {
        Self {
            status,
            code,
            desc: desc.into(),
        }
    }

    /// A business refusal: HTTP 200 with the error body, as the platform
    /// answers them.
    pub(crate) fn refusal(code: &'static str, desc: impl Into<String>) -> Self {
        Self::new(200, code, desc)
    }

    /// The answer to injected faults, errors and drops alike.
    pub(crate) fn internal() -> Self {
        Self::new(500, codes::PROCESSING, "internal server error")
    }

    pub(super) fn unknown(uid: &str) -> Self {
        Self::refusal(
            codes::UNKNOWN_OR_FINAL,
            format!("invoice {uid} is unknown, expired or already finalised"),
        )
    }
}

impl From<convert::Refusal> for ApiError {
    fn from(r: convert::Refusal) -> Self {
        Self::refusal(r.code, r.desc)
    }
}

/// A decimal written as a JSON number with its own digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Num(pub Decimal);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::dgi::number::serialize(&self.0, s)
    }
}

/// Money as the e-MCF writes it: 2 places.
pub(super) fn money(d: Decimal) -> Num {
    let mut v = d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    v.rescale(2);
    Num(v)
}

/// The status answer: the DRC fields plus Benin's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusBody {
    pub(super) status: bool,
    pub(super) version: &'static str,
    pub(super) nif: String,
    pub(super) emcf_id: String,
    #[serde(flatten)]
    pub(super) emcf: DgiStatus,
}

/// The `POST` answer.
#[derive(Debug, Serialize)]
pub(crate) struct SubmitBody {
    pub(super) uid: String,
    /// `ta`…`tn`, `taa`…`tan`, `haa`…`han`, `vaa`…`van`.
    #[serde(flatten)]
    pub(super) groups: BTreeMap<String, Num>,
    pub(super) ts: Num,
    pub(super) total: Num,
    pub(super) vtotal: Num,
    #[serde(rename = "curTotal")]
    pub(super) cur_total: Num,
}

/// One row of `GET /api/info/currencyRates`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RateRow {
    pub(super) cur_code: &'static str,
    pub(super) cur_rate: Num,
    pub(super) cur_date: String,
}

/// What `GET /api/info/{table}` answers.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum InfoBody {
    Status(StatusBody),
    TaxGroups(BTreeMap<String, Num>),
    Codes(Vec<convert::CodeRow>),
    Rates(Vec<RateRow>),
}

pub(super) fn kinshasa(ms: i64) -> DateTime<Tz> {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&chrono_tz::Africa::Kinshasa)
}

pub(super) fn rfc3339(ms: i64) -> String {
    kinshasa(ms).to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// RFC 4648 base32 (`[A-Z2-7]`, the Code DEF/DGI's characters), without
/// padding: the code is made of 15 bytes, a whole number of 5-byte groups,
/// so no padding would ever be written anyway.
pub(super) fn base32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// Quantity per article of a request.
pub(super) fn articles_of(req: &DgiInvoiceRequest) -> BTreeMap<String, Decimal> {
    let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
    for it in &req.items {
        *out.entry(convert::article_key(&it.code, &it.name))
            .or_default() += it.quantity;
    }
    out
}

/// An article key as a person reads it.
pub(super) fn article_name(key: &str) -> &str {
    key.split_once(':').map_or(key, |(_, k)| k)
}

impl Simulator {
    /// Expires the pending invoices whose time is up.
    pub(super) fn sweep(&self, st: &mut State) {
        let now = self.clock.now_ms();
        let ttl = i64::try_from(self.config.pending_ttl_ms).unwrap_or(i64::MAX);
        let State {
            pending,
            invoices,
            stats,
            ..
        } = st;
        pending.retain(|uid| {
            let Some(r) = invoices.get_mut(uid) else {
                return false;
            };
            if now.saturating_sub(r.created_ms) >= ttl {
                r.status = DgiInvoiceState::Expired;
                stats.expired += 1;
                false
            } else {
                true
            }
        });
    }

    /// `GET /api/invoice` and `GET /api/info/status`.
    pub(crate) fn status(&self, claims: &jwt::Claims) -> StatusBody {
        let nif = claims.nif.as_str();
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let pending: Vec<PendingRef> = st
            .pending
            .iter()
            .filter_map(|uid| {
                let r = st.invoices.get(uid)?;
                (r.nif == nif).then(|| PendingRef {
                    date: rfc3339(r.created_ms),
                    uid: uid.clone(),
                })
            })
            .collect();
        StatusBody {
            status: true,
            version: "1.0",
            nif: nif.to_owned(),
            emcf_id: claims.emcf_id.clone(),
            emcf: DgiStatus {
                nim: self.config.nim.clone(),
                pending_count: u32::try_from(pending.len()).unwrap_or(u32::MAX),
                pending,
                token_valid: rfc3339(claims.exp.saturating_mul(1000)),
                server_date_time: rfc3339(self.clock.now_ms()),
            },
        }
    }

    /// `GET /api/info/{table}`; `None` for a table the e-MCF does not
    /// have.
    pub(crate) fn info(&self, claims: &jwt::Claims, table: &str) -> Option<InfoBody> {
        Some(match table {
            "status" => InfoBody::Status(self.status(claims)),
            "taxGroups" => InfoBody::TaxGroups(
                self.tax_groups()
                    .into_iter()
                    .map(|(g, r)| (g.to_ascii_lowercase(), Num(r)))
                    .collect(),
            ),
            "invoiceTypes" => InfoBody::Codes(convert::invoice_types()),
            "paymentTypes" => InfoBody::Codes(convert::payment_types()),
            "clientTypes" => InfoBody::Codes(convert::client_types()),
            "referenceTypes" => InfoBody::Codes(convert::reference_types()),
            "itemTypes" => InfoBody::Codes(convert::item_types()),
            "currencyRates" => InfoBody::Rates(vec![RateRow {
                cur_code: "USD",
                cur_rate: Num(self.settings().usd_rate),
                cur_date: kinshasa(self.clock.now_ms()).format("%Y-%m-%d").to_string(),
            }]),
            _ => return None,
        })
    }

    pub(super) fn new_uid(st: &mut State) -> String {
        loop {
            let a = st.uid_rng.next_u64();
            let b = st.uid_rng.next_u64();
            let uid = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                (a & 0x0fff) | 0x4000,
                ((b >> 48) & 0x3fff) | 0x8000,
                b & 0xffff_ffff_ffff
            );
            if !st.invoices.contains_key(&uid) {
                return uid;
            }
        }
    }

    /// Counts a `POST` refused before it reached [`Simulator::submit`].
    pub(crate) fn count_rejected(&self) {
        lock(&self.state).stats.rejected += 1;
    }

    /// `POST /api/invoice`. `raw` is the body as received (echoed by the
    /// details of the pending invoice).
    pub(crate) fn submit(
        &self,
        nif: &str,
        req: &DgiInvoiceRequest,
        raw: Arc<str>,
    ) -> Result<SubmitBody, ApiError> {
        let result = self.submit_inner(nif, req, raw);
        if result.is_err() {
            self.count_rejected();
        }
        result
    }

    pub(super) fn submit_inner(
        &self,
        nif: &str,
        req: &DgiInvoiceRequest,
        raw: Arc<str>,
    ) -> Result<SubmitBody, ApiError> {
        if req.nif != nif {
            return Err(Self::foreign_nif(&req.nif, nif));
        }
        let now = self.clock.now_ms();
        let today = kinshasa(now).format("%Y-%m-%d").to_string();
        let (table, usd_rate, delay) = {
            let st = lock(&self.state);
            (
                st.table.clone(),
                st.settings.usd_rate,
                st.settings.reference_delay_ms,
            )
        };
        let computed = convert::compute(req, &today, &table, usd_rate)?;
        let articles = articles_of(req);

        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let reference = Self::check_reference(&st, nif, req, &articles, now, delay)?;
        let pending_here = st
            .pending
            .iter()
            .filter(|uid| st.invoices.get(*uid).is_some_and(|r| r.nif == nif))
            .count();
        if pending_here >= self.config.max_pending {
            return Err(ApiError::refusal(
                codes::TOO_MANY_PENDING,
                format!(
                    "too many pending invoices ({pending_here}, at most {}): confirm or cancel them first",
                    self.config.max_pending
                ),
            ));
        }
        let mut answered = computed.totals;
        let rate = st.faults.wrong_totals_rate;
        if faults::hit(&st.fault_rng, rate) {
            answered.total += Decimal::ONE;
            st.stats.wrong_totals_injected += 1;
            st.stats.faults_injected += 1;
        }
        let uid = Self::new_uid(&mut st);
        st.invoices.insert(
            uid.clone(),
            Record {
                rn: req.rn.clone(),
                nif: nif.to_owned(),
                invoice_type: req.invoice_type.clone(),
                created_ms: now,
                answered,
                status: DgiInvoiceState::Pending,
                confirmation: None,
                confirmed_ms: None,
                raw,
                articles,
                reference,
            },
        );
        st.pending.push(uid.clone());
        st.stats.posted += 1;
        let mut groups = BTreeMap::new();
        for g in bonopay_core::TaxGroup::ALL {
            let l = g.as_str().to_ascii_lowercase();
            let rate = table.get(*g).map_or(Decimal::ZERO, |r| r.rate_percent);
            let line = computed.groups.iter().find(|c| c.group == *g);
            let (base, tax, total) = line
                .map_or((Decimal::ZERO, Decimal::ZERO, Decimal::ZERO), |c| {
                    (c.base, c.tax, c.total)
                });
            groups.insert(format!("t{l}"), Num(rate));
            groups.insert(format!("ta{l}"), money(total));
            groups.insert(format!("ha{l}"), money(base));
            groups.insert(format!("va{l}"), money(tax));
        }
        Ok(SubmitBody {
            uid,
            groups,
            ts: money(computed.specific_tax),
            total: money(answered.total),
            vtotal: money(answered.vtotal),
            cur_total: money(computed.cur_total),
        })
    }

    /// The refusal of an invoice whose `nif` is not the token's.
    pub(crate) fn foreign_nif(invoice_nif: &str, token_nif: &str) -> ApiError {
        ApiError::new(
            403,
            codes::PROCESSING,
            format!("the invoice's nif {invoice_nif:?} is not the token's NIF {token_nif:?}"),
        )
    }

    /// A credit note's reference (errors 10, 11, 12). Returns the
    /// original's code for a credit note against a code, `None` for an
    /// invoice or an `RRR` note.
    pub(super) fn check_reference(
        st: &State,
        nif: &str,
        req: &DgiInvoiceRequest,
        articles: &BTreeMap<String, Decimal>,
        now: i64,
        delay_ms: u64,
    ) -> Result<Option<String>, ApiError> {
        if !convert::is_credit_note(&req.invoice_type) {
            return Ok(None);
        }
        let Some(code) = convert::normalized_reference(&req.reference) else {
            return Err(ApiError::refusal(
                codes::REFERENCE_FORMAT,
                format!(
                    "reference {:?} is neither a 24-character code nor RRR",
                    req.reference
                ),
            ));
        };
        if code == "RRR" {
            return Ok(None);
        }
        let original = st
            .by_code
            .get(&code)
            .and_then(|uid| st.invoices.get(uid))
            .filter(|r| r.nif == nif && !convert::is_credit_note(&r.invoice_type));
        let Some(original) = original else {
            return Err(ApiError::refusal(
                codes::ORIGINAL_UNKNOWN,
                format!("no invoice of NIF {nif} has the Code DEF/DGI {code}"),
            ));
        };
        let delay = i64::try_from(delay_ms).unwrap_or(i64::MAX);
        let confirmed = original.confirmed_ms.unwrap_or(now);
        if now.saturating_sub(confirmed) < delay {
            return Err(ApiError::refusal(
                codes::ORIGINAL_NOT_CERTIFIED,
                format!("the invoice {code} cannot be verified yet: try again later"),
            ));
        }
        let mut credited: BTreeMap<&str, Decimal> = BTreeMap::new();
        for r in st.invoices.values() {
            if r.nif == nif
                && r.status == DgiInvoiceState::Confirmed
                && r.reference.as_deref() == Some(code.as_str())
            {
                for (k, q) in &r.articles {
                    *credited.entry(k.as_str()).or_default() += *q;
                }
            }
        }
        for (key, qty) in articles {
            let Some(sold) = original.articles.get(key) else {
                return Err(ApiError::refusal(
                    codes::OVER_CREDIT,
                    format!(
                        "article {:?} is not on the original invoice {code}",
                        article_name(key)
                    ),
                ));
            };
            let before = credited.get(key.as_str()).copied().unwrap_or_default();
            if before + *qty > *sold {
                return Err(ApiError::refusal(
                    codes::OVER_CREDIT,
                    format!(
                        "article {:?}: {} credited before and {qty} now exceed the {sold} sold on {code}",
                        article_name(key),
                        before
                    ),
                ));
            }
        }
        Ok(Some(code))
    }

    /// The pending invoice `uid` of `nif`, or error 20.
    pub(super) fn pending_of<'a>(
        st: &'a mut State,
        nif: &str,
        uid: &str,
    ) -> Result<&'a mut Record, ApiError> {
        match st.invoices.get_mut(uid) {
            Some(r) if r.nif == nif && r.status == DgiInvoiceState::Pending => Ok(r),
            _ => Err(ApiError::unknown(uid)),
        }
    }

    pub(super) fn code_def_dgi(&self, uid: &str) -> String {
        // Deterministic per uid, unpredictable without the secret.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.config.secret) else {
            return String::new();
        };
        mac.update(b"bonopay/dgi-sim/code-def-dgi\0");
        mac.update(uid.as_bytes());
        let digest = mac.finalize().into_bytes();
        // 15 bytes = 120 bits = 24 base32 characters.
        base32(digest.get(..15).unwrap_or_default())
    }

    /// `PUT /api/invoice/{uid}/CONFIRM`.
    pub(crate) fn confirm(
        &self,
        nif: &str,
        uid: &str,
        totals: &DgiTotals,
    ) -> Result<DgiConfirmation, ApiError> {
        let now = self.clock.now_ms();
        let code = self.code_def_dgi(uid);
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let record = Self::pending_of(&mut st, nif, uid)?;
        if record.answered.total != totals.total || record.answered.vtotal != totals.vtotal {
            return Err(ApiError::refusal(
                codes::PROCESSING,
                format!(
                    "totals differ: received total {} vtotal {}, computed total {} vtotal {}",
                    totals.total, totals.vtotal, record.answered.total, record.answered.vtotal
                ),
            ));
        }
        let invoice_type = record.invoice_type.clone();
        let rn = record.rn.clone();
        let counters = {
            let c = st.counters.entry(nif.to_owned()).or_default();
            let fc = {
                let n = c.per_type.entry(invoice_type.clone()).or_default();
                *n += 1;
                *n
            };
            c.total += 1;
            format!("{fc}/{} {invoice_type}", c.total)
        };
        let at = kinshasa(now);
        let confirmation = DgiConfirmation {
            code_def_dgi: code.clone(),
            counters: counters.clone(),
            nim: self.config.nim.clone(),
            date_time: at.format("%Y-%m-%d %H:%M:%S").to_string(),
            qr_code: format!(
                "RDCDEF01;{};{code};{nif};{}",
                self.config.nim,
                at.format("%Y%m%d%H%M%S")
            ),
        };
        if let Some(r) = st.invoices.get_mut(uid) {
            r.status = DgiInvoiceState::Confirmed;
            r.confirmation = Some(confirmation.clone());
            r.confirmed_ms = Some(now);
        }
        st.by_code.insert(code.clone(), uid.to_owned());
        st.pending.retain(|u| u != uid);
        st.confirms.push(ConfirmRecord {
            uid: uid.to_owned(),
            rn,
            nif: nif.to_owned(),
            counters,
            code,
            nim: confirmation.nim.clone(),
            date_time: confirmation.date_time.clone(),
            qr_code: confirmation.qr_code.clone(),
            at_ms: now,
        });
        st.stats.confirmed += 1;
        Ok(confirmation)
    }

    /// `PUT /api/invoice/{uid}/CANCEL`: the cancellation time.
    pub(crate) fn cancel(&self, nif: &str, uid: &str) -> Result<String, ApiError> {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        let record = Self::pending_of(&mut st, nif, uid)?;
        record.status = DgiInvoiceState::Cancelled;
        st.pending.retain(|u| u != uid);
        st.stats.cancelled += 1;
        Ok(kinshasa(self.clock.now_ms())
            .format("%Y-%m-%d %H:%M:%S")
            .to_string())
    }

    /// `GET /api/invoice/{uid}`: the `POST` body of a pending invoice of
    /// `nif`, as received; error 20 for any other.
    pub(crate) fn echo(&self, nif: &str, uid: &str) -> Result<Arc<str>, ApiError> {
        let mut st = lock(&self.state);
        self.sweep(&mut st);
        Self::pending_of(&mut st, nif, uid).map(|r| Arc::clone(&r.raw))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base32_of_15_bytes_is_24_chars() {
        let s = base32(&[0xff; 15]);
        assert_eq!(s, "777777777777777777777777");
        assert_eq!(base32(&[0; 15]).len(), 24);
    }

    #[test]
    fn base32_is_rfc_4648() {
        // RFC 4648 §10 test vectors, on whole 5-byte groups as the code uses.
        assert_eq!(base32(b"fooba"), "MZXW6YTB");
        assert_eq!(base32(b"foobarbazq"), "MZXW6YTBOJRGC6TR");
    }
}
