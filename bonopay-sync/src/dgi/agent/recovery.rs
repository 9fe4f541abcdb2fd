//! What the agent does beyond the happy path: reconciling the e-MCF's
//! pending list with the outbox (cancelling orphans of ours), and a
//! person's decisions on dead items (requeue, resolve with the elements
//! read on the DGI portal).

use super::*;

impl SyncAgent {
    /// Whether an `rn` is one of ours: an SFE number of an outlet this agent
    /// uploads, or the `{outlet}:{seq}` of older outbox rows.
    pub(super) fn is_ours(&self, rn: &str) -> Result<bool, AgentError> {
        let outlet = match bonopay_signer::certification::parse_sfe_number(rn) {
            Some((outlet, _, _)) => outlet,
            None => match rn.rsplit_once(':') {
                Some((outlet, seq)) if seq.parse::<u64>().is_ok() => outlet,
                _ => return Ok(false),
            },
        };
        if !self.uploads(outlet) {
            return Ok(false);
        }
        Ok(self.ledger.outlets()?.iter().any(|o| o == outlet))
    }

    /// Handles each account's pending list: cancels pending uids of ours
    /// that no item holds (a POST whose answer was lost; its item posts
    /// again). Run at start and now and then.
    ///
    /// # Errors
    /// [`AgentError`]; transport failures are reported, not raised, and
    /// leave things for the next run.
    pub fn reconcile(&self) -> Result<ReconcileReport, AgentError> {
        let mut report = ReconcileReport::default();
        for (_, t) in self.all_accounts() {
            self.reconcile_account(t.as_ref(), &mut report)?;
        }
        Ok(report)
    }

    pub(super) fn reconcile_account(
        &self,
        transport: &dyn DgiTransport,
        report: &mut ReconcileReport,
    ) -> Result<(), AgentError> {
        let Ok(status) = transport.status() else {
            return Ok(());
        };
        let in_flight = self.outbox.in_flight()?;
        let owned: BTreeSet<String> = in_flight.iter().filter_map(|i| i.uid.clone()).collect();
        // Items whose POST answer was lost, by the `rn` they were sent with.
        let lost: HashMap<String, OutboxItem> = in_flight
            .into_iter()
            .filter(|i| i.state == ItemState::Submitting)
            .map(|i| (i.request.rn.clone(), i))
            .collect();
        for p in status.pending {
            if owned.contains(&p.uid) {
                continue;
            }
            // The details echo the request of a pending invoice; only its
            // `rn` is read (the e-MCF reports nothing else, `dgi-emcf.md` §8).
            let Ok(d) = transport.details(&p.uid) else {
                continue;
            };
            if !self.is_ours(&d.rn)? {
                report.foreign.push(p.uid);
                continue;
            }
            // Ours, and no item holds this uid: an orphan of a POST whose
            // answer was lost (or that arrived late). Never confirmed, so
            // cancelling it is safe; the item posts again, and only the
            // answer it then reads is ever confirmed.
            if transport.cancel(&p.uid).is_ok() {
                if let Some(it) = lost.get(&d.rn) {
                    self.repost_after_cancel(it)?;
                }
                report.cancelled.push(p.uid);
            }
        }
        Ok(())
    }

    pub(super) fn repost_after_cancel(&self, it: &OutboxItem) -> Result<(), AgentError> {
        let Some(_held) = self.hold(&it.outlet, it.seq) else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        if let Some(mut it) = self
            .outbox
            .claim(&it.outlet, it.seq, now, self.config.lease_ms)?
            && it.state == ItemState::Submitting
        {
            it.state = ItemState::Queued;
            it.uid = None;
            it.theirs = None;
            match self.save(&mut it) {
                Ok(()) | Err(AgentError::Outbox(OutboxError::ClaimLost(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Holds and claims a dead item for a person's decision.
    pub(super) fn take_dead(
        &self,
        outlet: &str,
        seq: u64,
    ) -> Result<(Busy<'_>, OutboxItem), AgentError> {
        let held = self
            .hold(outlet, seq)
            .ok_or_else(|| OutboxError::ClaimLost(format!("{outlet}:{seq}")))?;
        let item = self
            .outbox
            .claim(outlet, seq, self.clock.now_ms(), self.config.lease_ms)?
            .ok_or_else(|| OutboxError::NotFound(format!("{outlet}:{seq}")))?;
        if item.state != ItemState::Dead {
            return Err(OutboxError::WrongState {
                id: item.id(),
                state: item.state.as_str(),
                wanted: "dead",
            }
            .into());
        }
        Ok((held, item))
    }

    /// Puts a dead item back in the queue (after a person checked it was
    /// not confirmed), with a fresh retry budget.
    ///
    /// # Errors
    /// [`OutboxError::WrongState`] unless the item is dead.
    pub fn requeue(&self, outlet: &str, seq: u64) -> Result<OutboxItem, AgentError> {
        let (_held, mut item) = self.take_dead(outlet, seq)?;
        item.state = ItemState::Queued;
        item.uid = None;
        item.theirs = None;
        item.attempts = 0;
        item.next_attempt_ms = 0;
        self.save(&mut item)?;
        Ok(item)
    }

    /// Settles a dead item whose CONFIRM answer was lost, with the elements
    /// a person read on the DGI portal for its SFE number: they are bound
    /// into the ledger (source `operator`, so a verifier sees they were
    /// typed in) and the item is synced.
    ///
    /// # Errors
    /// [`OutboxError::WrongState`] unless the item is dead;
    /// [`AgentError::Record`] when the ledger refuses the elements.
    pub fn resolve(
        &self,
        outlet: &str,
        seq: u64,
        elements: &crate::dgi::DgiConfirmation,
    ) -> Result<OutboxItem, AgentError> {
        let (_held, mut item) = self.take_dead(outlet, seq)?;
        elements
            .check()
            .map_err(|e| AgentError::Record(RecordError::Refused(e)))?;
        if let Some(recorder) = &self.recorder {
            recorder
                .record(
                    outlet,
                    seq,
                    elements,
                    CertificationSource::Operator,
                    item.uid.as_deref(),
                )
                .map_err(AgentError::Record)?;
        }
        item.state = ItemState::Synced;
        item.confirmation = Some(elements.clone());
        item.error = Some("resolved by a person from the DGI portal".into());
        self.save(&mut item)?;
        Ok(item)
    }
}
