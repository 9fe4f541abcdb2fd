//! The steps of the state machine drawn on [`crate::dgi::outbox`]: POST,
//! the totals check, CONFIRM, recording in the ledger, and the recovery of
//! a POST or CONFIRM whose answer was lost. Each step stores the state
//! that says what it is about to send before sending it (write-ahead).

use super::*;

impl SyncAgent {
    /// The request to send: a credit note's reference becomes its
    /// original's Code DEF/DGI, which the e-MCF checks (errors 10, 11). A
    /// credit note whose original is not certified yet waits behind it.
    pub(super) fn request_to_send(
        &self,
        item: &mut OutboxItem,
    ) -> Result<Result<crate::dgi::DgiInvoiceRequest, Next>, AgentError> {
        let mut req = item.request.clone();
        let is_credit = matches!(req.invoice_type.as_str(), "FA" | "EA");
        if !is_credit || req.reference.is_empty() || req.reference == "RRR" {
            return Ok(Ok(req));
        }
        let Some(recorder) = &self.recorder else {
            return Ok(Ok(req));
        };
        let original = match recorder.original(&req.reference) {
            Ok(Some(o)) => o,
            Ok(None) => {
                item.state = ItemState::Rejected;
                item.error = Some(format!(
                    "the original invoice {} of this credit note is not in the ledger",
                    req.reference
                ));
                self.save(item)?;
                return Ok(Err(Next::Stop));
            }
            Err(e) => return self.fail(item, e.to_string()).map(Err),
        };
        match recorder.dgi_code(&original.0, original.1) {
            Ok(Some(code)) => {
                req.reference = code;
                Ok(Ok(req))
            }
            Ok(None) => {
                let why = format!(
                    "waiting for the original invoice {}:{} to be certified by the DGI",
                    original.0, original.1
                );
                let ms = self.config.backoff_base_ms.saturating_mul(2);
                self.wait(item, why, ms).map(Err)
            }
            Err(e) => self.fail(item, e.to_string()).map(Err),
        }
    }

    pub(super) fn submit(
        &self,
        t: &dyn DgiTransport,
        item: &mut OutboxItem,
    ) -> Result<Next, AgentError> {
        let in_flight = self.outbox.in_flight()?.len();
        if in_flight >= self.config.max_pending {
            // The e-MCF's cap: wait, untouched (no write), until an
            // in-flight item settles; it stays due for the next pass.
            return Ok(Next::Stop);
        }
        let request = match self.request_to_send(item)? {
            Ok(r) => r,
            Err(next) => return Ok(next),
        };
        item.state = ItemState::Submitting;
        item.uid = None;
        item.theirs = None;
        self.save(item)?;
        match t.submit(&request) {
            Ok(sub) => {
                item.state = ItemState::Submitted;
                item.uid = Some(sub.uid);
                item.theirs = Some(crate::dgi::DgiTotals {
                    total: sub.total,
                    vtotal: sub.vtotal,
                });
                item.error = None;
                // Not stored here: the next step stores `confirming` (or
                // `rejected`) with the uid before anything else is sent,
                // and a crash before that leaves `submitting`, which
                // reconciliation resolves by `rn`. One fsync fewer.
                Ok(Next::Continue)
            }
            Err(TransportError::Rejected { code, desc, .. })
                if code == codes::TOO_MANY_PENDING || code == codes::ORIGINAL_NOT_CERTIFIED =>
            {
                // Not created; worth trying again later (a slot frees up,
                // the original becomes verifiable).
                item.state = ItemState::Queued;
                self.fail(item, format!("DGI error {code}: {desc}"))
            }
            Err(TransportError::Rejected { status, code, desc }) if status < 500 => {
                item.state = ItemState::Rejected;
                item.error = Some(format!("DGI refused the invoice: error {code}: {desc}"));
                self.save(item)?;
                Ok(Next::Stop)
            }
            Err(TransportError::Unauthorized(why)) => {
                // Refused at the door: certainly not created.
                item.state = ItemState::Queued;
                self.unauthorized(item, &why)
            }
            Err(e @ TransportError::Unreachable(_)) => {
                // Certainly not created: the e-MCF cannot be reached. An
                // outage is no reason to give up on a sale (the DGI allows
                // 48 h, and health turns red then): the outlet's MCF
                // certifies it, or the item backs off, never dead.
                item.state = ItemState::Queued;
                if let Some(next) = self.fallback(item)? {
                    return Ok(next);
                }
                self.outage(item, e.to_string())
            }
            Err(e) => {
                // Maybe created: stay `submitting` and reconcile next time,
                // unless the outlet's MCF takes over (a pending uid that
                // is never confirmed expires on the e-MCF).
                if let Some(next) = self.fallback(item)? {
                    return Ok(next);
                }
                self.fail(item, e.to_string())
            }
        }
    }

    /// The POST's answer was lost: look for a pending uid with our `rn`. The
    /// e-MCF's details echo the request without the DGI's totals, so a uid
    /// found is cancelled (it was never confirmed) and the invoice posted
    /// again, whose answer carries the totals the two-phase check needs.
    pub(super) fn find_lost_post(
        &self,
        t: &dyn DgiTransport,
        item: &mut OutboxItem,
    ) -> Result<Next, AgentError> {
        let status = match t.status() {
            Ok(s) => s,
            Err(TransportError::Unauthorized(why)) => return self.unauthorized(item, &why),
            Err(e) => {
                if let Some(next) = self.fallback(item)? {
                    return Ok(next);
                }
                return self.fail(item, e.to_string());
            }
        };
        let owned: BTreeSet<String> = self
            .outbox
            .in_flight()?
            .into_iter()
            .filter_map(|i| i.uid)
            .collect();
        for p in status.pending {
            if owned.contains(&p.uid) {
                continue;
            }
            match t.details(&p.uid) {
                Ok(d) if d.rn == item.request.rn => match t.cancel(&p.uid) {
                    Ok(()) => {}
                    Err(TransportError::Rejected { code, .. })
                        if code == codes::UNKNOWN_OR_FINAL => {}
                    Err(e) => return self.fail(item, format!("cancelling {}: {e}", p.uid)),
                },
                Ok(_) => {}
                // Finalised since the status call: a uid of ours is only
                // ever confirmed by the item holding it, so not ours.
                Err(TransportError::Rejected { code, .. }) if code == codes::UNKNOWN_OR_FINAL => {}
                Err(TransportError::Unauthorized(why)) => return self.unauthorized(item, &why),
                Err(e) => return self.fail(item, e.to_string()),
            }
        }
        // Nothing of ours is pending now: the POST never arrived, expired,
        // or was just cancelled. Nothing was confirmed: post again.
        item.state = ItemState::Queued;
        item.uid = None;
        item.theirs = None;
        self.save(item)?;
        Ok(Next::Continue)
    }

    pub(super) fn confirm(
        &self,
        t: &dyn DgiTransport,
        item: &mut OutboxItem,
    ) -> Result<Next, AgentError> {
        let (Some(uid), Some(theirs)) = (item.uid.clone(), item.theirs) else {
            item.state = ItemState::Queued;
            self.save(item)?;
            return Ok(Next::Continue);
        };
        if theirs != item.ours {
            match t.cancel(&uid) {
                Ok(()) => {}
                Err(TransportError::Rejected { code, .. }) if code == codes::UNKNOWN_OR_FINAL => {}
                Err(TransportError::Unauthorized(why)) => return self.unauthorized(item, &why),
                Err(e) => return self.fail(item, format!("cancelling {uid}: {e}")),
            }
            item.state = ItemState::Rejected;
            item.error = Some(format!(
                "totals differ: ours total {} vtotal {}, DGI total {} vtotal {}; uid {uid} cancelled",
                item.ours.total, item.ours.vtotal, theirs.total, theirs.vtotal
            ));
            self.save(item)?;
            return Ok(Next::Stop);
        }
        item.state = ItemState::Confirming;
        self.save(item)?;
        self.send_confirm(t, item, &uid, false)
    }

    /// The CONFIRM's answer was lost: ask the DGI whether the uid is still
    /// pending. If it is, the CONFIRM never took effect: confirm it now. If
    /// the e-MCF no longer knows it (error 20), it was confirmed by that
    /// CONFIRM or expired before it arrived, and the e-MCF reports the
    /// elements of a finalised invoice to nobody: a person reads the DGI
    /// portal and either enters the elements ([`SyncAgent::resolve`]) or
    /// requeues the invoice ([`SyncAgent::requeue`]). Posting it again
    /// could certify one sale twice, so the agent never does.
    pub(super) fn find_lost_confirm(
        &self,
        t: &dyn DgiTransport,
        item: &mut OutboxItem,
    ) -> Result<Next, AgentError> {
        let Some(uid) = item.uid.clone() else {
            item.state = ItemState::Queued;
            self.save(item)?;
            return Ok(Next::Continue);
        };
        match t.details(&uid) {
            Ok(d) if d.rn == item.request.rn => {
                // Still pending: confirm it now, staying `confirming`. An
                // earlier CONFIRM of ours may still land (a timeout does
                // not stop the DGI), so if this one finds the uid final,
                // it is the lost-answer case, never an expiry.
                self.send_confirm(t, item, &uid, true)
            }
            Ok(d) => {
                item.state = ItemState::Dead;
                item.error = Some(format!(
                    "the e-MCF reports uid {uid} for SFE number {}, not {}: check on the DGI portal",
                    d.rn, item.request.rn
                ));
                self.save(item)?;
                Ok(Next::Stop)
            }
            Err(TransportError::Rejected { code, desc, .. }) if code == codes::UNKNOWN_OR_FINAL => {
                self.lost_confirm(item, &uid, &desc)
            }
            Err(TransportError::Unauthorized(why)) => self.unauthorized(item, &why),
            Err(e) => self.fail(item, e.to_string()),
        }
    }

    /// Dead-letters an item whose uid is final while a CONFIRM of ours may
    /// have reached it: confirmed or expired, nobody can tell through the
    /// API, so a person decides from the DGI portal.
    pub(super) fn lost_confirm(
        &self,
        item: &mut OutboxItem,
        uid: &str,
        desc: &str,
    ) -> Result<Next, AgentError> {
        item.state = ItemState::Dead;
        item.error = Some(format!(
            "{LOST_CONFIRM}: the answer to a CONFIRM of uid {uid} was lost and the e-MCF no longer reports it ({desc}); it was confirmed or it expired. Look up SFE number {} on the DGI portal: if it is certified, enter its elements (resolve); if not, requeue it",
            item.request.rn
        ));
        self.save(item)?;
        Ok(Next::Stop)
    }

    /// Sends CONFIRM for an item stored `confirming`. `earlier` says
    /// whether an earlier CONFIRM of this uid may have reached the DGI (its
    /// outcome was unknown; the uid was seen pending since, but a timeout
    /// does not stop the DGI, so it may still land). Without one, error 20
    /// means the uid expired or was cancelled and the sale is posted again;
    /// with one, it is the lost-answer case, for a person.
    pub(super) fn send_confirm(
        &self,
        t: &dyn DgiTransport,
        item: &mut OutboxItem,
        uid: &str,
        earlier: bool,
    ) -> Result<Next, AgentError> {
        match t.confirm(uid, &item.ours) {
            Ok(c) => {
                // Stored before anything else: the e-MCF never tells them
                // again.
                item.state = ItemState::Confirmed;
                item.confirmation = Some(c);
                item.error = None;
                self.save(item)?;
                Ok(Next::Continue)
            }
            Err(TransportError::Rejected { code, desc, .. }) if code == codes::UNKNOWN_OR_FINAL => {
                if earlier {
                    return self.lost_confirm(item, uid, &desc);
                }
                // Final, and not by a CONFIRM of ours: it expired (or was
                // cancelled), nothing was certified: post again.
                item.state = ItemState::Queued;
                item.uid = None;
                item.theirs = None;
                item.error = Some(format!("uid {uid} expired before its CONFIRM ({desc})"));
                self.save(item)?;
                Ok(Next::Continue)
            }
            Err(TransportError::Rejected { status, code, desc }) if status < 500 => {
                // The DGI refused the confirm itself (its totals check):
                // nothing was confirmed (an earlier one neither: the uid
                // was pending after it). Cancel the uid so it does not
                // linger, and report.
                let _ = t.cancel(uid);
                item.state = ItemState::Rejected;
                item.error = Some(format!(
                    "DGI refused CONFIRM of {uid}: error {code}: {desc}"
                ));
                self.save(item)?;
                Ok(Next::Stop)
            }
            // Refused at the door, or never sent: this CONFIRM did not take
            // effect. Without an earlier one the item is `submitted` again,
            // so a later error 20 can only mean an expiry.
            Err(TransportError::Unauthorized(why)) => {
                if !earlier {
                    item.state = ItemState::Submitted;
                }
                self.unauthorized(item, &why)
            }
            Err(e @ TransportError::Unreachable(_)) => {
                if !earlier {
                    item.state = ItemState::Submitted;
                }
                self.outage(item, e.to_string())
            }
            // Otherwise ask the DGI where the uid stands (on the next
            // attempt) rather than guess.
            Err(e) => self.fail(item, e.to_string()),
        }
    }

    /// Binds a confirmed item's elements into the ledger, then marks it
    /// synced. Retried until it succeeds.
    pub(super) fn record(&self, item: &mut OutboxItem) -> Result<Next, AgentError> {
        let Some(elements) = item.confirmation.clone() else {
            // Cannot happen (confirmed is stored with its elements); never
            // lose the item over it.
            return self.fail(item, "confirmed without elements".into());
        };
        // A device's elements carry its id in place of an e-MCF uid.
        let (source, uid) = match item.uid.as_deref() {
            Some(u) if u.starts_with(DEVICE_UID_PREFIX) => (CertificationSource::Mcf, None),
            other => (CertificationSource::Emcf, other),
        };
        if let Some(recorder) = &self.recorder {
            match recorder.record(&item.outlet, item.seq, &elements, source, uid) {
                Ok(()) => {}
                Err(e) => {
                    return self.fail(item, format!("recording the DGI's elements: {e}"));
                }
            }
        }
        item.state = ItemState::Synced;
        item.error = None;
        self.save(item)?;
        Ok(Next::Stop)
    }
}
