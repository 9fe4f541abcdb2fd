//! The exporter: streams an outlet's ledger over a period as a bundle.

use bonopay_ledger::{Entry, Head, LedgerError, LedgerStore};
use chrono_tz::Tz;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{BUNDLE_FORMAT, head_from_json};
use crate::index;
use crate::reports::head_json;
use crate::signer::PublicKey;

/// One JSON Lines line: the value in JCS form and a newline.
fn json_line(v: &Value) -> Vec<u8> {
    let mut b = serde_json_canonicalizer::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    b
}

/// Why an export could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The ledger failed.
    #[error("ledger: {0}")]
    Storage(#[from] LedgerError),
    /// The Z report the bundle must start at does not read back.
    #[error("the Z report at seq {seq} that starts the bundle is unreadable: {why}")]
    BadStart {
        /// Its position.
        seq: u64,
        /// Why.
        why: String,
    },
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Outlet.
    pub outlet: String,
    /// The outlet's time zone (closings are checked in it).
    pub time_zone: Tz,
    /// Entries at or after this trusted time (ms); the bundle starts at the
    /// last Z report at or before it, or at the genesis. `None`: the whole
    /// chain.
    pub from_ms: Option<i64>,
    /// Entries at or before this trusted time (ms). `None`: up to the head.
    pub to_ms: Option<i64>,
    /// Every public key the outlet signed with.
    pub keys: Vec<PublicKey>,
    /// Creation time, RFC 3339 (informative).
    pub created: String,
}

/// Streams a bundle: the header line, one line per entry, the end line.
/// Memory stays constant whatever the number of entries.
pub struct Exporter<'a> {
    entries: bonopay_ledger::EntryIter<'a>,
    to_ms: Option<i64>,
    to_seq: u64,
    head: Head,
    count: u64,
    hasher: Sha256,
    header: Option<Vec<u8>>,
    done: bool,
}

impl std::fmt::Debug for Exporter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("outlet", &self.head.outlet)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl<'a> Exporter<'a> {
    /// Plans the export: finds the starting Z report (or the genesis).
    ///
    /// # Errors
    /// [`ExportError`] when the ledger cannot be read.
    pub fn new(store: &'a dyn LedgerStore, req: &ExportRequest) -> Result<Self, ExportError> {
        let outlet = req.outlet.as_str();
        let head = store.head(outlet)?;
        // The latest Z at or before `from_ms`.
        let mut start: Option<Entry> = None;
        if let Some(from) = req.from_ms {
            for z in (1..=head.z_number).rev() {
                let hits = store.find_index(index::Z_REPORT, &format!("{outlet}/{z}"))?;
                let Some((_, seq)) = hits.into_iter().find(|(o, _)| o == outlet) else {
                    continue;
                };
                if let Some(e) = store.entry(outlet, seq)?
                    && e.time_ms <= from
                {
                    start = Some(e);
                    break;
                }
            }
        }
        let (anchor, from_seq) = match &start {
            None => (Head::genesis(outlet), 1),
            Some(z) => {
                let body =
                    crate::event::event_body(&z.payload).map_err(|e| ExportError::BadStart {
                        seq: z.seq,
                        why: e.to_string(),
                    })?;
                let h = head_from_json(outlet, &body["closing_head"]).ok_or_else(|| {
                    ExportError::BadStart {
                        seq: z.seq,
                        why: "closing_head is malformed".into(),
                    }
                })?;
                (h, z.seq)
            }
        };
        let keys: Vec<Value> = req
            .keys
            .iter()
            .map(|k| json!({"key_id": k.key_id(), "spki_pem": k.to_pem()}))
            .collect();
        let header = json_line(&json!({"bundle": {
            "created": req.created,
            "format": BUNDLE_FORMAT,
            "keys": keys,
            "outlet": outlet,
            "period": {"from_ms": req.from_ms, "to_ms": req.to_ms},
            "start": head_json(&anchor),
            "time_zone": req.time_zone.name(),
        }}));
        Ok(Self {
            entries: store.iter_from(outlet, from_seq),
            to_ms: req.to_ms,
            to_seq: head.seq,
            head: anchor,
            count: 0,
            hasher: Sha256::new(),
            header: Some(header),
            done: false,
        })
    }

    /// The head after the last entry exported so far.
    #[must_use]
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Entries exported so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    fn emit(&mut self, line: Vec<u8>) -> Vec<u8> {
        self.hasher.update(&line);
        line
    }
}

impl Iterator for Exporter<'_> {
    type Item = Result<Vec<u8>, ExportError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(h) = self.header.take() {
            return Some(Ok(self.emit(h)));
        }
        if self.done {
            return None;
        }
        match self.entries.next() {
            Some(Err(e)) => {
                self.done = true;
                Some(Err(e.into()))
            }
            Some(Ok(e)) if e.seq <= self.to_seq && self.to_ms.is_none_or(|t| e.time_ms <= t) => {
                let line = json_line(&json!({"entry": {
                    "entry_hash": hex::encode(e.entry_hash),
                    "header": String::from_utf8_lossy(&e.header),
                    "kind": e.kind.as_str(),
                    "payload": String::from_utf8_lossy(&e.payload),
                    "prev_hash": hex::encode(e.prev_hash),
                    "seq": e.seq,
                }}));
                self.head = self.head.advance(&e);
                self.count += 1;
                Some(Ok(self.emit(line)))
            }
            _ => {
                self.done = true;
                let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
                Some(Ok(json_line(&json!({"end": {
                    "entries": self.count,
                    "head": head_json(&self.head),
                    "sha256": digest,
                }}))))
            }
        }
    }
}
