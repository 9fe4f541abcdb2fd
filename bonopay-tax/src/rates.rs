//! The versioned, replaceable table of group rates and VAT treatments.
//!
//! Rates are not in any DGI request: the e-MCF applies its own table
//! (`GET …/info/taxGroups`). Keeping ours as data lets an operator load the
//! DGI's current table without a release, and lets every computed result
//! name the table version it used.

use std::collections::BTreeMap;

use bonopay_core::TaxGroup;
use rust_decimal::Decimal;

/// How a group's amounts relate to VAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Treatment {
    /// VAT is invoiced at the group's rate (B, C, E at 0 %, F, G).
    Vat,
    /// No VAT is invoiced (A, D, H–K, M): base = total, tax = 0.
    NoInvoicedVat,
    /// A levy outside the VAT base (L): counted in `levies`, not in HT or VAT.
    Levy,
    /// The amount *is* VAT (N): base = 0, tax = total.
    SpecificVat,
}

/// One group's entry in the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupRate {
    /// The group.
    #[serde(with = "group_code")]
    pub group: TaxGroup,
    /// The official label.
    pub label: String,
    /// Rate in percent (e.g. `16` for 16 %), used only by [`Treatment::Vat`].
    #[serde(with = "rust_decimal::serde::str")]
    pub rate_percent: Decimal,
    /// VAT treatment.
    pub treatment: Treatment,
}

mod group_code {
    use bonopay_core::TaxGroup;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(g: &TaxGroup, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(g.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TaxGroup, D::Error> {
        let s = String::deserialize(d)?;
        TaxGroup::from_code(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown tax group `{s}`")))
    }
}

/// Why a rate table was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RateTableError {
    /// The JSON is malformed or has the wrong shape.
    #[error("rate table is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    /// A group is listed twice.
    #[error("tax group {0} appears twice in the rate table")]
    DuplicateGroup(TaxGroup),
    /// A rate is negative, above 100 % or has more than 4 decimal places.
    #[error("tax group {0} has an invalid rate {1}")]
    InvalidRate(TaxGroup, Decimal),
}

/// A versioned rate table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateTable {
    /// Version label, copied into every result so a sealed invoice records
    /// which rates it was computed with.
    pub version: String,
    groups: Vec<GroupRate>,
}

impl RateTable {
    /// The table of the DGI SFE specification (May 2025, §1.12).
    #[must_use]
    pub fn dgi_2025() -> Self {
        use Treatment::{Levy, NoInvoicedVat, SpecificVat, Vat};
        let g = |group, label: &str, rate: i64, treatment| GroupRate {
            group,
            label: label.to_owned(),
            rate_percent: Decimal::from(rate),
            treatment,
        };
        Self {
            version: "dgi-sfe-2025-05".to_owned(),
            groups: vec![
                g(TaxGroup::A, "Exonéré", 0, NoInvoicedVat),
                g(TaxGroup::B, "Taxable 16%", 16, Vat),
                g(TaxGroup::C, "Taxable 8%", 8, Vat),
                g(TaxGroup::D, "Régimes dérogatoires TVA", 0, NoInvoicedVat),
                g(TaxGroup::E, "Exportation et opérations assimilées", 0, Vat),
                g(
                    TaxGroup::F,
                    "TVA marché public à financement extérieur (16%)",
                    16,
                    Vat,
                ),
                g(
                    TaxGroup::G,
                    "TVA marché public à financement extérieur (8%)",
                    8,
                    Vat,
                ),
                g(
                    TaxGroup::H,
                    "Consignation/déconsignation d'emballage",
                    0,
                    NoInvoicedVat,
                ),
                g(TaxGroup::I, "Garantie et caution", 0, NoInvoicedVat),
                g(TaxGroup::J, "Débours", 0, NoInvoicedVat),
                g(
                    TaxGroup::K,
                    "Opérations réalisées par les non assujettis",
                    0,
                    NoInvoicedVat,
                ),
                g(TaxGroup::L, "Prélèvements sur ventes", 0, Levy),
                g(
                    TaxGroup::M,
                    "Ventes réglementées avec TVA spécifique",
                    0,
                    NoInvoicedVat,
                ),
                g(TaxGroup::N, "TVA spécifique", 0, SpecificVat),
            ],
        }
    }

    /// Loads a table from JSON: `{"version": "...", "groups": [{"group":
    /// "B", "label": "...", "rate_percent": "16", "treatment": "vat"}, …]}`.
    /// Groups left out have no rate, and invoices using them are refused.
    ///
    /// # Errors
    /// [`RateTableError`] naming the problem.
    pub fn from_json(text: &str) -> Result<Self, RateTableError> {
        let table: RateTable =
            serde_json::from_str(text).map_err(|e| RateTableError::Malformed(e.to_string()))?;
        let mut seen = BTreeMap::new();
        for g in &table.groups {
            if seen.insert(g.group, ()).is_some() {
                return Err(RateTableError::DuplicateGroup(g.group));
            }
            let r = g.rate_percent;
            if r < Decimal::ZERO || r > Decimal::ONE_HUNDRED || r.normalize().scale() > 4 {
                return Err(RateTableError::InvalidRate(g.group, r));
            }
        }
        Ok(table)
    }

    /// The entry for a group, if the table has one.
    #[must_use]
    pub fn get(&self, group: TaxGroup) -> Option<&GroupRate> {
        self.groups.iter().find(|g| g.group == group)
    }

    /// All entries.
    #[must_use]
    pub fn groups(&self) -> &[GroupRate] {
        &self.groups
    }

    /// The VAT rate the DGI invoices per group letter (`B` → 16): the
    /// table's rate for VAT groups, 0 for the others. This is what the
    /// e-MCF's `GET /api/info/taxGroups` reports, so a client compares it
    /// with that.
    #[must_use]
    pub fn invoiced_rates(&self) -> std::collections::BTreeMap<String, Decimal> {
        self.groups
            .iter()
            .map(|g| {
                let rate = match g.treatment {
                    Treatment::Vat => g.rate_percent,
                    _ => Decimal::ZERO,
                };
                (g.group.as_str().to_owned(), rate)
            })
            .collect()
    }
}

impl Default for RateTable {
    fn default() -> Self {
        Self::dgi_2025()
    }
}
