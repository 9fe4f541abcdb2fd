//! Certification through the outlet's physical MCF
//! ([`crate::mcf::certifier`]), as the device-only path or as the backup
//! when the e-MCF fails (Arrêté 033 arts 7 e) and 11: an outage of the
//! e-MCF is no excuse, the backup device certifies).
//!
//! **When the device may take an invoice over from the e-MCF.** Only
//! before a CONFIRM was sent: from `queued` (not posted, or certainly not
//! created), `submitting` (the POST's answer was lost) or `submitted` (a
//! uid is pending). A pending uid that is never confirmed expires on the
//! e-MCF (two minutes) or is cancelled by reconciliation, so the sale is
//! certified once, by the device. From `confirming` on, the e-MCF may have
//! certified it and the device is never asked.
//!
//! **Recording.** The device's elements are stored on the item like the
//! e-MCF's (`confirmed`), with `uid` = [`DEVICE_UID_PREFIX`] + the device's
//! id, and bound into the ledger with the source `mcf`.

use super::*;
use crate::mcf::certifier::{CertifyError, DeviceCertifier};

/// The `uid` of an item certified by a physical MCF: this prefix and the
/// device's NIM. e-MCF uids never start with it.
pub const DEVICE_UID_PREFIX: &str = "mcf:";

/// How an outlet uses its physical MCF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DevicePolicy {
    /// Every invoice goes to the device; the e-MCF is not used.
    Only,
    /// The e-MCF first; the device when the e-MCF cannot be reached, times
    /// out, or has no account for the merchant.
    Fallback,
}

impl SyncAgent {
    /// Gives `outlet` a physical MCF, used as `policy` says.
    #[must_use]
    pub fn with_device(
        mut self,
        outlet: impl Into<String>,
        certifier: Arc<dyn DeviceCertifier>,
        policy: DevicePolicy,
    ) -> Self {
        self.devices.insert(outlet.into(), (certifier, policy));
        self
    }

    /// The device's id of each outlet that has one (for health).
    #[must_use]
    pub fn devices(&self) -> Vec<(String, DevicePolicy, Option<String>)> {
        self.devices
            .iter()
            .map(|(o, (d, p))| (o.clone(), *p, d.device_id()))
            .collect()
    }

    /// The device takes the item over, when the outlet has one as a backup
    /// and the item is still before its CONFIRM.
    pub(super) fn fallback(&self, item: &mut OutboxItem) -> Result<Option<Next>, AgentError> {
        let Some((dev, DevicePolicy::Fallback)) = self.devices.get(&item.outlet).cloned() else {
            return Ok(None);
        };
        if !matches!(
            item.state,
            ItemState::Queued | ItemState::Submitting | ItemState::Submitted
        ) {
            return Ok(None);
        }
        self.by_device(dev.as_ref(), item).map(Some)
    }

    /// Elements the device already gave this item, if any: it is then
    /// `confirmed` with them and never sent anywhere again.
    pub(super) fn recalled(
        &self,
        dev: &dyn DeviceCertifier,
        item: &mut OutboxItem,
    ) -> Result<Option<Next>, AgentError> {
        match dev.recall(&item.request) {
            Ok(Some(elements)) => self.device_confirmed(dev, item, elements).map(Some),
            Ok(None) => Ok(None),
            // The device cannot be asked: it may hold this invoice, so
            // nothing else may certify it until it answers.
            Err(e) => self.device_failed(item, &e).map(Some),
        }
    }

    /// Certifies the item on the device.
    pub(super) fn by_device(
        &self,
        dev: &dyn DeviceCertifier,
        item: &mut OutboxItem,
    ) -> Result<Next, AgentError> {
        let request = match self.request_to_send(item)? {
            Ok(r) => r,
            Err(next) => return Ok(next),
        };
        match dev.certify(&request, &item.ours) {
            Ok(elements) => self.device_confirmed(dev, item, elements),
            Err(e) => self.device_failed(item, &e),
        }
    }

    fn device_confirmed(
        &self,
        dev: &dyn DeviceCertifier,
        item: &mut OutboxItem,
        elements: crate::dgi::DgiConfirmation,
    ) -> Result<Next, AgentError> {
        let id = dev.device_id().unwrap_or_else(|| elements.nim.clone());
        item.state = ItemState::Confirmed;
        item.uid = Some(format!("{DEVICE_UID_PREFIX}{id}"));
        item.theirs = None;
        item.confirmation = Some(elements);
        item.error = None;
        self.save(item)?;
        Ok(Next::Continue)
    }

    fn device_failed(&self, item: &mut OutboxItem, e: &CertifyError) -> Result<Next, AgentError> {
        if e.is_retryable() {
            // A device off or unplugged is an outage, not a verdict on the
            // sale: back off, never dead.
            return self.back_off(item, format!("the MCF: {e}"));
        }
        item.state = match e {
            CertifyError::Unrecoverable { .. } => ItemState::Dead,
            _ => ItemState::Rejected,
        };
        item.error = Some(format!("the MCF: {e}"));
        self.save(item)?;
        Ok(Next::Stop)
    }
}
