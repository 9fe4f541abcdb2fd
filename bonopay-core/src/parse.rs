//! JSON → [`InvoiceRequest`], reporting every problem at once.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};

use crate::decimal::{DecimalError, ExchangeRate, Money, Percent, Quantity, parse_decimal};
use crate::error::{ErrorCode, ValidationError, ValidationErrors};
use crate::json::Json;
use crate::model::{
    Cashier, Client, ClientTaxGroup, ClientTotals, ClientType, CommentLine, CreditNature,
    CreditNoteRef, Currency, ExchangeRateInfo, InvoiceRequest, InvoiceType, Item, ItemKind,
    Payment, PaymentMethod, PriceMode, SpecificTax, TaxGroup,
};
use crate::valid::ValidInvoice;

/// The schema identifier of this version of the invoice request format.
pub const SCHEMA_V1: &str = "bonopay/invoice/v1";

/// Most items accepted on one invoice.
pub const MAX_ITEMS: usize = 5_000;
/// Most payments accepted on one invoice.
pub const MAX_PAYMENTS: usize = 50;
/// Longest identifier (NIF, outlet, terminal, cashier id, article code).
pub const MAX_ID_LEN: usize = 64;
/// Longest free text (names, addresses, comment lines), in characters.
pub const MAX_TEXT_LEN: usize = 256;
/// Longest NIF (seller's or client's).
pub const MAX_NIF_LEN: usize = 32;
/// Longest decimal string once trailing fractional zeros are dropped;
/// longer ones are refused before they reach the decimal parser.
pub const MAX_DECIMAL_TEXT_LEN: usize = 64;
/// Most decimal places of the rate a client may echo in `tax_groups` (at
/// most 100 in magnitude; only its type is checked, see
/// `client_tax_groups`).
pub(crate) const ECHOED_RATE_SCALE: u32 = 4;

/// Keys that name a security element. Only the trusted core produces these;
/// a request that carries one, at any depth, is refused with
/// [`ErrorCode::SecurityElementForbidden`] rather than a plain unknown-field
/// error, so forgery attempts are visible in logs and metrics.
pub const SECURITY_ELEMENT_KEYS: &[&str] = &[
    "fiscal_number",
    "invoice_number",
    "rn",
    "counters",
    "fiscal_authority_id",
    "authority_id",
    "device_id",
    "nim",
    "nid",
    "mid",
    "authentication_code",
    "auth_code",
    "code_def_dgi",
    "codedefdgi",
    "sig",
    "timestamp",
    "trusted_timestamp",
    "certified_at",
    "datetime",
    "date_time",
    "qr",
    "qr_code",
    "qrcode",
    "qr_payload",
    "signature",
    "key_id",
    "hash",
    "prev_hash",
    "entry_hash",
    "payload_hash",
    "security_elements",
    "sealed",
];

fn is_security_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SECURITY_ELEMENT_KEYS.contains(&lower.as_str())
}

/// Parses and validates an invoice request from JSON text.
///
/// # Errors
/// Every problem found, each with its path and code. A request that passes
/// here still needs [`bonopay-tax`]'s computation for the checks that depend
/// on totals (payments, client-computed totals, exchange-rate tolerance).
pub fn parse_invoice(text: &str) -> Result<ValidInvoice, ValidationErrors> {
    let json = Json::parse(text).map_err(|e| {
        let code = if e.to_string().contains("recursion limit") {
            ErrorCode::TooDeep
        } else {
            ErrorCode::InvalidJson
        };
        ValidationErrors(vec![ValidationError::new("", code, e.to_string())])
    })?;
    parse_invoice_json(&json)
}

/// Parses and validates an already-parsed JSON tree.
///
/// # Errors
/// As [`parse_invoice`].
pub fn parse_invoice_json(json: &Json) -> Result<ValidInvoice, ValidationErrors> {
    let mut w = Walker::default();
    let parsed = w.invoice(json);
    match parsed {
        Some(req) if w.errors.is_empty() => {
            crate::validate::check_cross_fields(&req, &mut w.errors);
            if w.errors.is_empty() {
                Ok(ValidInvoice::checked(req))
            } else {
                Err(ValidationErrors(w.errors))
            }
        }
        _ => {
            if w.errors.is_empty() {
                // Defensive: an incomplete parse always records why.
                w.err("", ErrorCode::InvalidJson, "invoice could not be read");
            }
            Err(ValidationErrors(w.errors))
        }
    }
}

#[derive(Default)]
struct Walker {
    errors: Vec<ValidationError>,
}

/// A JSON path built only when an error needs it: parsing a valid invoice
/// allocates no path strings.
#[derive(Clone, Copy)]
struct P<'a> {
    base: &'a str,
    key: &'a str,
}

impl<'a> P<'a> {
    fn s(key: &'a str) -> Self {
        P { base: "", key }
    }
}

impl std::fmt::Display for P<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.base.is_empty(), self.key.is_empty()) {
            (true, _) => f.write_str(self.key),
            (false, true) => f.write_str(self.base),
            (false, false) => write!(f, "{}.{}", self.base, self.key),
        }
    }
}

/// An object's members, with the ones already taken tracked so unknown keys
/// can be reported.
struct Fields<'a> {
    path: String,
    members: &'a [(String, Json)],
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Json> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Json::Null))
    }
    fn path<'k>(&'k self, key: &'k str) -> P<'k> {
        P {
            base: &self.path,
            key,
        }
    }
}

impl Walker {
    fn err(&mut self, path: impl std::fmt::Display, code: ErrorCode, msg: impl Into<String>) {
        self.errors
            .push(ValidationError::new(path.to_string(), code, msg));
    }

    fn object<'a>(&mut self, v: &'a Json, path: &str, allowed: &[&str]) -> Option<Fields<'a>> {
        let Json::Object(members) = v else {
            self.err(
                path,
                ErrorCode::WrongType,
                format!("expected an object, found {}", v.type_name()),
            );
            return None;
        };
        for (i, (key, _)) in members.iter().enumerate() {
            let p = P { base: path, key };
            if members[..i].iter().any(|(k, _)| k == key) {
                self.err(p, ErrorCode::InvalidJson, format!("duplicate key `{key}`"));
            } else if allowed.contains(&key.as_str()) {
                // known
            } else if is_security_key(key) {
                self.err(
                    p,
                    ErrorCode::SecurityElementForbidden,
                    format!("`{key}` is a security element: only the fiscal core issues it"),
                );
            } else {
                self.err(p, ErrorCode::UnknownField, format!("unknown field `{key}`"));
            }
        }
        Some(Fields {
            path: path.to_owned(),
            members,
        })
    }

    fn required<'a>(&mut self, f: &Fields<'a>, key: &str) -> Option<&'a Json> {
        let v = f.get(key);
        if v.is_none() {
            self.err(
                f.path(key),
                ErrorCode::MissingField,
                format!("`{key}` is required"),
            );
        }
        v
    }

    fn string(&mut self, v: &Json, path: P<'_>, max_len: usize) -> Option<String> {
        let Json::String(s) = v else {
            self.err(
                path,
                ErrorCode::WrongType,
                format!("expected a string, found {}", v.type_name()),
            );
            return None;
        };
        if s.is_empty() {
            self.err(
                path,
                ErrorCode::Empty,
                "must not be empty (omit the field instead)",
            );
            return None;
        }
        if s.chars().count() > max_len {
            self.err(
                path,
                ErrorCode::TooLong,
                format!("longer than {max_len} characters"),
            );
            return None;
        }
        if s.chars().any(char::is_control) {
            self.err(
                path,
                ErrorCode::ControlCharacter,
                "contains a control character",
            );
            return None;
        }
        Some(s.clone())
    }

    fn req_string(&mut self, f: &Fields<'_>, key: &str, max_len: usize) -> Option<String> {
        let v = self.required(f, key)?;
        self.string(v, f.path(key), max_len)
    }

    fn opt_string(&mut self, f: &Fields<'_>, key: &str, max_len: usize) -> Option<Option<String>> {
        match f.get(key) {
            None => Some(None),
            Some(v) => self.string(v, f.path(key), max_len).map(Some),
        }
    }

    /// An identifier: ASCII letters, digits, `.`, `_` and `-`. These end up
    /// in storage keys and URLs, so anything else is refused.
    fn req_id(&mut self, f: &Fields<'_>, key: &str) -> Option<String> {
        let s = self.req_string(f, key, MAX_ID_LEN)?;
        if is_identifier(&s) {
            Some(s)
        } else {
            self.err(
                f.path(key),
                ErrorCode::InvalidValue,
                "only ASCII letters, digits, `.`, `_` and `-` are allowed",
            );
            None
        }
    }

    fn nif(&mut self, v: &Json, path: P<'_>) -> Option<String> {
        let s = self.string(v, path, MAX_NIF_LEN)?;
        if is_nif(&s) {
            Some(s)
        } else {
            self.err(
                path,
                ErrorCode::InvalidValue,
                "a NIF holds only ASCII letters and digits",
            );
            None
        }
    }

    fn code<T>(
        &mut self,
        v: &Json,
        path: P<'_>,
        from: fn(&str) -> Option<T>,
        codes: fn() -> String,
    ) -> Option<T> {
        let Json::String(s) = v else {
            self.err(
                path,
                ErrorCode::WrongType,
                format!("expected a string, found {}", v.type_name()),
            );
            return None;
        };
        let parsed = from(s);
        if parsed.is_none() {
            self.err(
                path,
                ErrorCode::InvalidValue,
                format!("`{s}` is not one of {}", codes()),
            );
        }
        parsed
    }

    fn req_code<T>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        from: fn(&str) -> Option<T>,
        codes: fn() -> String,
    ) -> Option<T> {
        let v = self.required(f, key)?;
        self.code(v, f.path(key), from, codes)
    }

    fn decimal(&mut self, v: &Json, path: P<'_>, scale: u32, max: Decimal) -> Option<Decimal> {
        let res = match v {
            Json::String(s) => parse_decimal(s, scale, max),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Decimal::from(i)
                        .abs()
                        .le(&max)
                        .then(|| Decimal::from(i))
                        .ok_or(DecimalError::OutOfRange)
                } else if let Some(u) = n.as_u64() {
                    Decimal::from(u)
                        .le(&max)
                        .then(|| Decimal::from(u))
                        .ok_or(DecimalError::OutOfRange)
                } else if Decimal::from_scientific(&n.to_string())
                    .or_else(|_| Decimal::from_str_exact(&n.to_string()))
                    .is_ok_and(|d| d.abs() <= max)
                {
                    self.err(
                        path,
                        ErrorCode::InexactNumber,
                        "send fractional amounts as decimal strings such as \"12.50\": binary floating point cannot hold them exactly",
                    );
                    return None;
                } else {
                    Err(DecimalError::OutOfRange)
                }
            }
            other => {
                self.err(
                    path,
                    ErrorCode::WrongType,
                    format!("expected a decimal string, found {}", other.type_name()),
                );
                return None;
            }
        };
        match res {
            Ok(d) => Some(d),
            Err(DecimalError::Syntax) => {
                self.err(path, ErrorCode::InvalidDecimal, "expected a decimal like \"12.50\" (no exponent, sign `+`, spaces or separators)");
                None
            }
            Err(DecimalError::TooManyDecimals) => {
                self.err(
                    path,
                    ErrorCode::TooManyDecimals,
                    format!("at most {scale} decimal places"),
                );
                None
            }
            Err(_) => {
                self.err(
                    path,
                    ErrorCode::OutOfRange,
                    format!("magnitude above {max}"),
                );
                None
            }
        }
    }

    fn positive(&mut self, d: Decimal, path: P<'_>) -> Option<Decimal> {
        if d > Decimal::ZERO {
            Some(d)
        } else {
            self.err(path, ErrorCode::NotPositive, "must be greater than zero");
            None
        }
    }

    fn money(&mut self, v: &Json, path: P<'_>) -> Option<Money> {
        self.decimal(v, path, Money::SCALE, Money::max())
            .and_then(|d| Money::new(d).ok())
    }

    fn positive_money(&mut self, v: &Json, path: P<'_>) -> Option<Money> {
        let m = self.money(v, path)?;
        self.positive(m.value(), path).map(|_| m)
    }

    fn invoice(&mut self, v: &Json) -> Option<InvoiceRequest> {
        const KEYS: &[&str] = &[
            "schema",
            "merchant_nif",
            "outlet_id",
            "pos_terminal_id",
            "cashier",
            "invoice_type",
            "price_mode",
            "client",
            "items",
            "payments",
            "currency",
            "exchange_rate",
            "comments",
            "credit_note",
            "tax_groups",
            "totals",
        ];
        let f = self.object(v, "", KEYS)?;
        if let Some(s) = f.get("schema") {
            match s {
                Json::String(s) if s == SCHEMA_V1 => {}
                Json::String(s) => self.err(
                    "schema",
                    ErrorCode::UnsupportedSchema,
                    format!("unknown schema `{s}`; this build reads `{SCHEMA_V1}`"),
                ),
                other => self.err(
                    "schema",
                    ErrorCode::WrongType,
                    format!("expected a string, found {}", other.type_name()),
                ),
            }
        }
        let merchant_nif = self
            .required(&f, "merchant_nif")
            .and_then(|v| self.nif(v, P::s("merchant_nif")));
        let outlet_id = self.req_id(&f, "outlet_id");
        let pos_terminal_id = self.req_id(&f, "pos_terminal_id");
        let cashier = self.required(&f, "cashier").and_then(|v| self.cashier(v));
        let invoice_type = self.req_code(
            &f,
            "invoice_type",
            InvoiceType::from_code,
            InvoiceType::codes,
        );
        let price_mode = self.req_code(&f, "price_mode", PriceMode::from_code, PriceMode::codes);
        let client = self.required(&f, "client").and_then(|v| self.client(v));
        let items = self.required(&f, "items").and_then(|v| self.items(v));
        let payments = self.required(&f, "payments").and_then(|v| self.payments(v));
        let currency = match f.get("currency") {
            None => Some(Currency::Cdf),
            Some(v) => self.code(v, P::s("currency"), Currency::from_code, Currency::codes),
        };
        let exchange_rate = match f.get("exchange_rate") {
            None => Some(None),
            Some(v) => self.exchange_rate(v).map(Some),
        };
        let comments = match f.get("comments") {
            None => Some(BTreeMap::new()),
            Some(v) => self.comments(v),
        };
        let credit_note = match f.get("credit_note") {
            None => Some(None),
            Some(v) => self.credit_note(v).map(Some),
        };
        let client_tax_groups = match f.get("tax_groups") {
            None => Some(None),
            Some(v) => self.client_tax_groups(v).map(Some),
        };
        let client_totals = match f.get("totals") {
            None => Some(None),
            Some(v) => self.client_totals(v).map(Some),
        };
        Some(InvoiceRequest {
            merchant_nif: merchant_nif?,
            outlet_id: outlet_id?,
            pos_terminal_id: pos_terminal_id?,
            cashier: cashier?,
            invoice_type: invoice_type?,
            price_mode: price_mode?,
            client: client?,
            items: items?,
            payments: payments?,
            currency: currency?,
            exchange_rate: exchange_rate?,
            comments: comments?,
            credit_note: credit_note?,
            client_tax_groups: client_tax_groups?,
            client_totals: client_totals?,
        })
    }

    fn cashier(&mut self, v: &Json) -> Option<Cashier> {
        let f = self.object(v, "cashier", &["id", "name"])?;
        let id = self.req_id(&f, "id");
        let name = self.req_string(&f, "name", MAX_TEXT_LEN);
        Some(Cashier {
            id: id?,
            name: name?,
        })
    }

    fn client(&mut self, v: &Json) -> Option<Client> {
        let f = self.object(
            v,
            "client",
            &[
                "type",
                "nif",
                "name",
                "contact",
                "address",
                "email",
                "exemption_reference",
            ],
        )?;
        let client_type = self.req_code(&f, "type", ClientType::from_code, ClientType::codes);
        let nif = match f.get("nif") {
            None => Some(None),
            Some(v) => self
                .nif(
                    v,
                    P {
                        base: "client",
                        key: "nif",
                    },
                )
                .map(Some),
        };
        let name = self.opt_string(&f, "name", MAX_TEXT_LEN);
        let contact = self.opt_string(&f, "contact", MAX_TEXT_LEN);
        let address = self.opt_string(&f, "address", MAX_TEXT_LEN);
        let email = self.opt_string(&f, "email", MAX_TEXT_LEN);
        let exemption_reference = self.opt_string(&f, "exemption_reference", MAX_TEXT_LEN);
        Some(Client {
            client_type: client_type?,
            nif: nif?,
            name: name?,
            contact: contact?,
            address: address?,
            email: email?,
            exemption_reference: exemption_reference?,
        })
    }

    fn array<'a>(&mut self, v: &'a Json, path: &str, max: usize) -> Option<&'a [Json]> {
        let Json::Array(a) = v else {
            self.err(
                path,
                ErrorCode::WrongType,
                format!("expected an array, found {}", v.type_name()),
            );
            return None;
        };
        if a.len() > max {
            self.err(
                path,
                ErrorCode::TooManyEntries,
                format!("at most {max} entries"),
            );
            return None;
        }
        Some(a)
    }

    fn items(&mut self, v: &Json) -> Option<Vec<Item>> {
        let arr = self.array(v, "items", MAX_ITEMS)?;
        if arr.is_empty() {
            self.err(
                "items",
                ErrorCode::NoItems,
                "an invoice needs at least one item",
            );
            return None;
        }
        let mut out = Vec::with_capacity(arr.len());
        let mut ok = true;
        for (i, it) in arr.iter().enumerate() {
            match self.item(it, &format!("items[{i}]")) {
                Some(item) => out.push(item),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn item(&mut self, v: &Json, path: &str) -> Option<Item> {
        const KEYS: &[&str] = &[
            "code",
            "kind",
            "name",
            "unit_price",
            "quantity",
            "tax_group",
            "specific_tax",
            "original_price",
            "price_modification",
        ];
        let f = self.object(v, path, KEYS)?;
        let code = self.req_id(&f, "code");
        let kind = self.req_code(&f, "kind", ItemKind::from_code, ItemKind::codes);
        let name = self.req_string(&f, "name", MAX_TEXT_LEN);
        let unit_price = self
            .required(&f, "unit_price")
            .and_then(|v| self.positive_money(v, f.path("unit_price")));
        let quantity = self.required(&f, "quantity").and_then(|v| {
            let p = f.path("quantity");
            let d = self.decimal(v, p, Quantity::SCALE, Quantity::max())?;
            self.positive(d, p).and_then(|d| Quantity::new(d).ok())
        });
        let tax_group = self.req_code(&f, "tax_group", TaxGroup::from_code, TaxGroup::codes);
        let specific_tax = match f.get("specific_tax") {
            None => Some(None),
            Some(v) => self
                .specific_tax(v, &f.path("specific_tax").to_string())
                .map(Some),
        };
        let original_price = match f.get("original_price") {
            None => Some(None),
            Some(v) => self.positive_money(v, f.path("original_price")).map(Some),
        };
        let price_modification = self.opt_string(&f, "price_modification", MAX_TEXT_LEN);
        let item = Item {
            code: code?,
            kind: kind?,
            name: name?,
            unit_price: unit_price?,
            quantity: quantity?,
            tax_group: tax_group?,
            specific_tax: specific_tax?,
            original_price: original_price?,
            price_modification: price_modification?,
        };
        let before = self.errors.len();
        crate::validate::check_item(&item, path, &mut self.errors);
        (self.errors.len() == before).then_some(item)
    }

    fn specific_tax(&mut self, v: &Json, path: &str) -> Option<SpecificTax> {
        let f = self.object(v, path, &["amount", "rate"])?;
        let amount = self
            .required(&f, "amount")
            .and_then(|v| self.positive_money(v, f.path("amount")));
        let rate = match f.get("rate") {
            None => Some(None),
            Some(v) => {
                let p = f.path("rate");
                self.decimal(v, p, Percent::SCALE, Percent::max())
                    .and_then(|d| self.positive(d, p))
                    .and_then(|d| Percent::new(d).ok())
                    .map(Some)
            }
        };
        Some(SpecificTax {
            amount: amount?,
            rate: rate?,
        })
    }

    fn payments(&mut self, v: &Json) -> Option<Vec<Payment>> {
        let arr = self.array(v, "payments", MAX_PAYMENTS)?;
        if arr.is_empty() {
            self.err(
                "payments",
                ErrorCode::NoPayments,
                "an invoice needs at least one payment summing to its total",
            );
            return None;
        }
        let mut out = Vec::with_capacity(arr.len());
        let mut ok = true;
        for (i, p) in arr.iter().enumerate() {
            let path = format!("payments[{i}]");
            let parsed = self.object(p, &path, &["method", "amount"]).and_then(|f| {
                let method =
                    self.req_code(&f, "method", PaymentMethod::from_code, PaymentMethod::codes);
                let amount = self
                    .required(&f, "amount")
                    .and_then(|v| self.positive_money(v, f.path("amount")));
                Some(Payment {
                    method: method?,
                    amount: amount?,
                })
            });
            match parsed {
                Some(p) => out.push(p),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn exchange_rate(&mut self, v: &Json) -> Option<ExchangeRateInfo> {
        let f = self.object(v, "exchange_rate", &["rate", "date"])?;
        let rate = self.required(&f, "rate").and_then(|v| {
            let p = f.path("rate");
            let d = self.decimal(v, p, ExchangeRate::SCALE, ExchangeRate::max())?;
            self.positive(d, p).and_then(|d| ExchangeRate::new(d).ok())
        });
        let date = self.req_string(&f, "date", 10).and_then(|d| {
            if is_valid_date(&d) {
                Some(d)
            } else {
                self.err(
                    f.path("date"),
                    ErrorCode::InvalidDate,
                    "expected a calendar date `YYYY-MM-DD`",
                );
                None
            }
        });
        Some(ExchangeRateInfo {
            rate: rate?,
            date: date?,
        })
    }

    fn comments(&mut self, v: &Json) -> Option<BTreeMap<CommentLine, String>> {
        let keys: Vec<&str> = CommentLine::ALL.iter().map(|c| c.as_str()).collect();
        let f = self.object(v, "comments", &keys)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for line in CommentLine::ALL {
            if let Some(v) = f.get(line.as_str()) {
                match self.string(v, f.path(line.as_str()), MAX_TEXT_LEN) {
                    Some(s) => {
                        out.insert(*line, s);
                    }
                    None => ok = false,
                }
            }
        }
        ok.then_some(out)
    }

    fn credit_note(&mut self, v: &Json) -> Option<CreditNoteRef> {
        let f = self.object(v, "credit_note", &["reference", "nature"])?;
        let reference = self.req_string(&f, "reference", 32).and_then(|r| match normalize_reference(&r) {
            Some(r) => Some(r),
            None => {
                self.err(
                    f.path("reference"),
                    ErrorCode::InvalidCreditReference,
                    "expected the original's 24-character authentication code (A-Z, 0-9; dashes between groups of 4 allowed) or `RRR`",
                );
                None
            }
        });
        let nature = self.req_code(&f, "nature", CreditNature::from_code, CreditNature::codes);
        Some(CreditNoteRef {
            reference: reference?,
            nature: nature?,
        })
    }

    fn client_tax_groups(&mut self, v: &Json) -> Option<Vec<ClientTaxGroup>> {
        let arr = self.array(v, "tax_groups", TaxGroup::ALL.len())?;
        let mut out: Vec<ClientTaxGroup> = Vec::with_capacity(arr.len());
        let mut ok = true;
        for (i, g) in arr.iter().enumerate() {
            let path = format!("tax_groups[{i}]");
            let parsed = self
                .object(g, &path, &["group", "base", "tax", "total", "rate"])
                .and_then(|f| {
                    let group = self.req_code(&f, "group", TaxGroup::from_code, TaxGroup::codes);
                    // A client may echo the rate it used; it is checked through
                    // base/tax/total, so its value is only type-checked here.
                    if let Some(r) = f.get("rate") {
                        self.decimal(r, f.path("rate"), ECHOED_RATE_SCALE, Decimal::ONE_HUNDRED);
                    }
                    let base = self
                        .required(&f, "base")
                        .and_then(|v| self.money(v, f.path("base")));
                    let tax = self
                        .required(&f, "tax")
                        .and_then(|v| self.money(v, f.path("tax")));
                    let total = self
                        .required(&f, "total")
                        .and_then(|v| self.money(v, f.path("total")));
                    Some(ClientTaxGroup {
                        group: group?,
                        base: base?,
                        tax: tax?,
                        total: total?,
                    })
                });
            match parsed {
                Some(g) if out.iter().any(|o| o.group == g.group) => {
                    self.err(
                        format!("{path}.group"),
                        ErrorCode::DuplicateGroup,
                        format!("group {} appears twice", g.group),
                    );
                    ok = false;
                }
                Some(g) => out.push(g),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn client_totals(&mut self, v: &Json) -> Option<ClientTotals> {
        let f = self.object(
            v,
            "totals",
            &["ht", "vat", "specific_tax", "ttc", "total", "vtotal"],
        )?;
        let get = |w: &mut Walker, key: &str| -> Option<Option<Money>> {
            match f.get(key) {
                None => Some(None),
                Some(v) => w.money(v, f.path(key)).map(Some),
            }
        };
        let ht = get(self, "ht");
        let vat = get(self, "vat");
        let specific_tax = get(self, "specific_tax");
        let ttc = get(self, "ttc");
        // `total`/`vtotal` are the DGI spellings of ttc/vat.
        let total = get(self, "total");
        let vtotal = get(self, "vtotal");
        let (ttc, total, vat, vtotal) = (ttc?, total?, vat?, vtotal?);
        for (a, b, name) in [(ttc, total, "total"), (vat, vtotal, "vtotal")] {
            if let (Some(a), Some(b)) = (a, b)
                && a != b
            {
                self.err(
                    f.path(name),
                    ErrorCode::ClientTotalMismatch,
                    format!("`{name}` ({b}) disagrees with its twin field ({a})"),
                );
                return None;
            }
        }
        Some(ClientTotals {
            ht: ht?,
            vat: vat.or(vtotal),
            specific_tax: specific_tax?,
            ttc: ttc.or(total),
        })
    }
}

/// What is wrong with a text field, if anything (shared by the parser and
/// [`crate::validate`], so both apply the same rules).
pub(crate) fn text_problem(s: &str, max_len: usize) -> Option<(ErrorCode, String)> {
    if s.is_empty() {
        return Some((
            ErrorCode::Empty,
            "must not be empty (omit the field instead)".into(),
        ));
    }
    if s.len() > max_len && s.chars().count() > max_len {
        return Some((
            ErrorCode::TooLong,
            format!("longer than {max_len} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Some((
            ErrorCode::ControlCharacter,
            "contains a control character".into(),
        ));
    }
    None
}

/// The one identifier rule of Bono Pay (outlet ids, item codes, terminal
/// and cashier ids): 1 to [`MAX_ID_LEN`] characters of `A-Z a-z 0-9 . _ -`,
/// because identifiers end up in storage keys, file names and URLs. The
/// server's outlet registration and the simulator apply this function,
/// not a copy of it.
#[must_use]
pub fn is_valid_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && is_identifier(s)
}

/// The one NIF rule: 1 to [`MAX_NIF_LEN`] ASCII letters and digits.
#[must_use]
pub fn is_valid_nif(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NIF_LEN && is_nif(s)
}

/// Identifiers end up in storage keys and URLs.
pub(crate) fn is_identifier(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A NIF holds only ASCII letters and digits.
pub(crate) fn is_nif(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Accepts `XXXX-XXXX-XXXX-XXXX-XXXX-XXXX` or the 24 characters without
/// dashes (the printed and the stored form of the same code) and returns
/// the stored form; `RRR` stays `RRR`.
#[must_use]
pub fn normalize_reference(text: &str) -> Option<String> {
    if text == "RRR" {
        return Some(text.to_owned());
    }
    let compact: String = if text.len() == 29 {
        let groups: Vec<&str> = text.split('-').collect();
        if groups.len() != 6 || groups.iter().any(|g| g.len() != 4) {
            return None;
        }
        groups.concat()
    } else {
        text.to_owned()
    };
    (compact.len() == 24
        && compact
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
    .then_some(compact)
}

/// `YYYY-MM-DD`, a real Gregorian date from year 2000 on.
#[must_use]
pub fn is_valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    y >= 2000 && (1..=days).contains(&d)
}

/// A line's amount, unit price × quantity, rounded half-up to 2 places. Only
/// used to refuse lines that round to nothing; the tax engine sums the exact
/// products.
#[must_use]
pub fn rounded_line_amount(item: &Item) -> Option<Decimal> {
    item.unit_price
        .value()
        .checked_mul(item.quantity.value())
        .map(|d| d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero))
}

#[cfg(test)]
mod identifier_rule {
    use super::{MAX_ID_LEN, MAX_NIF_LEN, is_valid_identifier, is_valid_nif};

    #[test]
    fn identifiers_are_short_ascii_words() {
        assert!(is_valid_identifier("kin-gombe_01.a"));
        assert!(is_valid_identifier(&"a".repeat(MAX_ID_LEN)));
        for bad in [
            "",
            "a b",
            "é",
            "a/b",
            "a:1",
            "a\u{0}",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(!is_valid_identifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn nifs_are_letters_and_digits() {
        assert!(is_valid_nif("A1309334L"));
        assert!(is_valid_nif(&"9".repeat(MAX_NIF_LEN)));
        for bad in ["", "A-1", "A 1", "Ä1", &"9".repeat(MAX_NIF_LEN + 1)] {
            assert!(!is_valid_nif(bad), "{bad:?}");
        }
    }
}
