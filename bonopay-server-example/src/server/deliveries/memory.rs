//! [`DeliveryStore`] in memory.

#[allow(clippy::wildcard_imports)]
use super::*;

/// [`DeliveryStore`] in memory (tests, embedding examples): the records,
/// and the claim of each record taken for sending.
#[derive(Debug, Default)]
pub struct MemoryDeliveryStore(Mutex<Vec<(DeliveryRecord, Option<i64>)>>);

impl DeliveryStore for MemoryDeliveryStore {
    fn record(&self, delivery: &DeliveryRecord) -> Result<(), DeliveryStoreError> {
        let mut all = self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        // As the databases' primary key: an id is recorded once.
        if all.iter().any(|(d, _)| d.id == delivery.id) {
            return Err(DeliveryStoreError::Storage(format!(
                "delivery {} is recorded already",
                delivery.id
            )));
        }
        all.push((delivery.clone(), None));
        Ok(())
    }

    fn list(
        &self,
        merchant_nif: &str,
        invoice_id: &str,
    ) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        Ok(self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?
            .iter()
            .filter(|(d, _)| d.merchant_nif == merchant_nif && d.invoice_id == invoice_id)
            .map(|(d, _)| d.clone())
            .collect())
    }

    fn waiting(&self) -> Result<Vec<DeliveryRecord>, DeliveryStoreError> {
        Ok(self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?
            .iter()
            .filter(|(d, _)| d.status == DeliveryStatus::Waiting)
            .map(|(d, _)| d.clone())
            .collect())
    }

    fn transition(
        &self,
        from: DeliveryStatus,
        to: &DeliveryRecord,
    ) -> Result<bool, DeliveryStoreError> {
        let mut all = self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        match all
            .iter_mut()
            .find(|(d, _)| d.id == to.id && d.status == from)
        {
            Some((d, _)) => {
                d.status = to.status;
                d.error.clone_from(&to.error);
                d.completed_at.clone_from(&to.completed_at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn claim(
        &self,
        id: &str,
        from: DeliveryStatus,
        held: Option<i64>,
        until_ms: i64,
    ) -> Result<bool, DeliveryStoreError> {
        let mut all = self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?;
        match all
            .iter_mut()
            .find(|(d, claim)| d.id == id && d.status == from && *claim == held)
        {
            Some((d, claim)) => {
                d.status = DeliveryStatus::Sending;
                *claim = Some(until_ms);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn stalled(&self, now_ms: i64) -> Result<Vec<StalledDelivery>, DeliveryStoreError> {
        Ok(self
            .0
            .lock()
            .map_err(|_| DeliveryStoreError::Storage("lock poisoned".into()))?
            .iter()
            .filter(|(d, claim)| {
                d.status == DeliveryStatus::Sending && claim.is_none_or(|until| until < now_ms)
            })
            .map(|(d, claim)| StalledDelivery {
                record: d.clone(),
                held: *claim,
            })
            .collect())
    }
}
