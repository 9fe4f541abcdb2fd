//! The typed invoice request, as the untrusted client sends it.
//!
//! Nothing here is a security element: fiscal numbers, device ids,
//! authentication codes, timestamps, QR payloads, signatures and hashes are
//! produced by the trusted core and can never be part of a request.

use std::collections::BTreeMap;
use std::fmt;

use crate::decimal::{ExchangeRate, Money, Percent, Quantity};

macro_rules! code_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The DGI code, as it appears in canonical JSON.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the exact DGI code (case-sensitive).
            #[must_use]
            pub fn from_code(code: &str) -> Option<Self> {
                match code {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The accepted codes, for error messages.
            #[must_use]
            pub fn codes() -> String {
                [$($text),+].join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

code_enum!(
    /// DGI invoice type (SFE spec §1.7).
    InvoiceType {
        /// Facture de vente.
        Fv = "FV",
        /// Facture d'acompte ou d'avance.
        Ft = "FT",
        /// Facture d'avoir (credit note).
        Fa = "FA",
        /// Vente export.
        Ev = "EV",
        /// Acompte export.
        Et = "ET",
        /// Avoir export.
        Ea = "EA",
    }
);

impl InvoiceType {
    /// Credit notes (FA, EA) must reference an original invoice.
    #[must_use]
    pub const fn is_credit_note(self) -> bool {
        matches!(self, InvoiceType::Fa | InvoiceType::Ea)
    }

    /// Export types (EV, ET, EA).
    #[must_use]
    pub const fn is_export(self) -> bool {
        matches!(self, InvoiceType::Ev | InvoiceType::Et | InvoiceType::Ea)
    }
}

code_enum!(
    /// Whether unit prices include the taxes (TTC) or not (HT).
    PriceMode {
        /// Hors taxes: prices exclude VAT and specific tax.
        Ht = "HT",
        /// Toutes taxes comprises: prices include every tax.
        Ttc = "TTC",
    }
);

code_enum!(
    /// DGI client type (annex I).
    ClientType {
        /// Personne physique: every field optional.
        Pp = "PP",
        /// Personne morale: name (dénomination) and NIF required.
        Pm = "PM",
        /// Personne physique commerçante: name and NIF required.
        Pc = "PC",
        /// Profession libérale: name and NIF required.
        Pl = "PL",
        /// Ambassade ou organisation internationale: name and exemption
        /// document reference required, and comment line A must carry it.
        Ao = "AO",
    }
);

impl ClientType {
    /// The client fields this type requires, besides `type`: the one rule
    /// the validator and the published JSON Schema
    /// ([`crate::schema::invoice_request`]) both read.
    #[must_use]
    pub const fn required_fields(self) -> &'static [&'static str] {
        match self {
            ClientType::Pp => &[],
            ClientType::Pm | ClientType::Pc | ClientType::Pl => &["name", "nif"],
            ClientType::Ao => &["name", "exemption_reference"],
        }
    }

    /// Whether comment line A must carry the client's exemption reference
    /// (embassies and international organizations).
    #[must_use]
    pub const fn requires_exemption_line(self) -> bool {
        matches!(self, ClientType::Ao)
    }
}

code_enum!(
    /// DGI item type.
    ItemKind {
        /// Bien (goods).
        Bie = "BIE",
        /// Service.
        Ser = "SER",
        /// Taxe: only allowed in groups L and N.
        Tax = "TAX",
    }
);

code_enum!(
    /// The 14 DGI tax groups (SFE spec §1.12). Rates live in the tax crate's
    /// replaceable rate table, not here.
    TaxGroup {
        /// Exonéré.
        A = "A",
        /// Taxable 16 %.
        B = "B",
        /// Taxable 8 %.
        C = "C",
        /// Régimes dérogatoires TVA.
        D = "D",
        /// Exportation et opérations assimilées.
        E = "E",
        /// TVA marché public à financement extérieur 16 %.
        F = "F",
        /// TVA marché public à financement extérieur 8 %.
        G = "G",
        /// Consignation/déconsignation d'emballage.
        H = "H",
        /// Garantie et caution.
        I = "I",
        /// Débours.
        J = "J",
        /// Opérations réalisées par les non assujettis.
        K = "K",
        /// Prélèvements sur ventes (levies outside the VAT base).
        L = "L",
        /// Ventes réglementées avec TVA spécifique.
        M = "M",
        /// TVA spécifique.
        N = "N",
    }
);

impl TaxGroup {
    /// Groups L and N hold levies: only TAX items, which carry no specific
    /// tax themselves.
    #[must_use]
    pub const fn is_levy(self) -> bool {
        matches!(self, TaxGroup::L | TaxGroup::N)
    }
}

code_enum!(
    /// Payment method, with the e-MCF JSON names.
    PaymentMethod {
        /// Cash.
        Especes = "ESPECES",
        /// Bank transfer.
        Virement = "VIREMENT",
        /// Bank card.
        CarteBancaire = "CARTEBANCAIRE",
        /// Mobile money.
        MobileMoney = "MOBILEMONEY",
        /// Cheques.
        Cheques = "CHEQUES",
        /// On credit.
        Credit = "CREDIT",
        /// Other.
        Autre = "AUTRE",
    }
);

code_enum!(
    /// Credit-note nature (annex III).
    CreditNature {
        /// Correction before payment or delivery.
        Cor = "COR",
        /// Annulation without payment or delivery.
        Ran = "RAN",
        /// Avoir after goods returned or after payment.
        Ram = "RAM",
        /// Rabais, remise, ristourne: the reference is the literal `RRR`.
        Rrr = "RRR",
    }
);

code_enum!(
    /// Invoice currency. CDF is the base currency; USD invoices carry the
    /// exchange rate and its date.
    Currency {
        /// Franc congolais.
        Cdf = "CDF",
        /// US dollar.
        Usd = "USD",
    }
);

code_enum!(
    /// The eight DGI comment lines.
    CommentLine {
        /// Line A (for AO clients: the exemption reference).
        A = "A",
        /// Line B.
        B = "B",
        /// Line C.
        C = "C",
        /// Line D.
        D = "D",
        /// Line E.
        E = "E",
        /// Line F.
        F = "F",
        /// Line G.
        G = "G",
        /// Line H.
        H = "H",
    }
);

impl Currency {
    /// A foreign-currency invoice states its exchange rate to CDF; a CDF
    /// invoice has none.
    #[must_use]
    pub const fn needs_exchange_rate(self) -> bool {
        !matches!(self, Currency::Cdf)
    }
}

/// The cashier, the DGI "operator".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cashier {
    /// Operator id.
    pub id: String,
    /// Operator name, printed on the invoice.
    pub name: String,
}

/// The buyer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Client {
    /// Client type; decides which fields are required.
    #[serde(rename = "type")]
    pub client_type: ClientType,
    /// Client NIF.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nif: Option<String>,
    /// Name or dénomination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Phone or other contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// E-mail, for receipt delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// For AO clients: the exemption document reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption_reference: Option<String>,
}

/// Specific tax recorded on an item (SFE spec §1.13). It raises the VAT base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SpecificTax {
    /// Amount for the whole quantity, in the invoice currency.
    pub amount: Money,
    /// The rate it was computed from, when the POS records one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Percent>,
}

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    /// Article code.
    pub code: String,
    /// BIE, SER or TAX.
    pub kind: ItemKind,
    /// Article name, as printed.
    pub name: String,
    /// Unit price in the invoice's price mode (at most 2 places).
    pub unit_price: Money,
    /// Quantity (at most 3 places).
    pub quantity: Quantity,
    /// DGI tax group.
    pub tax_group: TaxGroup,
    /// Specific tax, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specific_tax: Option<SpecificTax>,
    /// Price before a commercial reduction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_price: Option<Money>,
    /// Why the price changed, e.g. `remise 10%`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_modification: Option<String>,
}

/// A payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Payment {
    /// Method.
    pub method: PaymentMethod,
    /// Amount in the invoice currency.
    pub amount: Money,
}

/// Exchange rate of a foreign-currency invoice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExchangeRateInfo {
    /// CDF per unit of the invoice currency.
    pub rate: ExchangeRate,
    /// The rate's date, `YYYY-MM-DD`.
    pub date: String,
}

/// The original invoice a credit note refers to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CreditNoteRef {
    /// The original's 24-character authentication code (no dashes), or
    /// `RRR` for nature RRR.
    pub reference: String,
    /// COR, RAN, RAM or RRR.
    pub nature: CreditNature,
}

/// A per-group line the client computed itself (queued payloads carry them).
/// The core recomputes every value and refuses a mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTaxGroup {
    /// Group.
    pub group: TaxGroup,
    /// Taxable base.
    pub base: Money,
    /// VAT.
    pub tax: Money,
    /// Group total.
    pub total: Money,
}

/// Invoice totals the client computed itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientTotals {
    /// Total excluding taxes.
    pub ht: Option<Money>,
    /// Total VAT.
    pub vat: Option<Money>,
    /// Total specific tax.
    pub specific_tax: Option<Money>,
    /// Total including taxes.
    pub ttc: Option<Money>,
}

/// The invoice request as parsed from the client's JSON. Build it with
/// [`crate::parse_invoice`], which checks the shape and every field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRequest {
    /// Seller NIF.
    pub merchant_nif: String,
    /// Outlet (point of sale) id.
    pub outlet_id: String,
    /// Till id within the outlet.
    pub pos_terminal_id: String,
    /// Cashier.
    pub cashier: Cashier,
    /// Invoice type.
    pub invoice_type: InvoiceType,
    /// HT or TTC.
    pub price_mode: PriceMode,
    /// Buyer.
    pub client: Client,
    /// Lines, in the order the client sent them.
    pub items: Vec<Item>,
    /// Payments, in order.
    pub payments: Vec<Payment>,
    /// Currency (CDF when absent from the input).
    pub currency: Currency,
    /// Exchange rate, for USD invoices.
    pub exchange_rate: Option<ExchangeRateInfo>,
    /// DGI comment lines A–H.
    pub comments: BTreeMap<CommentLine, String>,
    /// Credit-note reference, for FA and EA.
    pub credit_note: Option<CreditNoteRef>,
    /// Client-computed per-group lines, checked against ours.
    pub client_tax_groups: Option<Vec<ClientTaxGroup>>,
    /// Client-computed totals, checked against ours.
    pub client_totals: Option<ClientTotals>,
}
