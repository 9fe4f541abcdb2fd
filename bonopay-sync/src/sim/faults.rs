//! Fault injection ([`Faults`]): latency, errors before anything is done,
//! answers dropped after committing, wrong totals, and expiring every
//! pending invoice. Decided by a seeded generator so a single-threaded run
//! is reproducible.

use super::*;

/// Faults to inject. Rates are per-mille (0 = never, 1000 = always), so no
/// float is involved. See the module documentation for what each does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every `/api` call.
    pub latency_ms: u64,
    /// Per-mille of `/api` calls answered 500 before doing anything.
    pub error_rate: u32,
    /// Per-mille of successful `POST`/`PUT` calls committed, then answered
    /// 500 as if the response was lost.
    pub drop_rate: u32,
    /// Per-mille of `POST`s answering a `total` 1.00 off.
    pub wrong_totals_rate: u32,
    /// Seed of the fault generator.
    pub seed: u64,
}

/// True with probability `per_mille / 1000`, drawn from `rng` (the crate's
/// one SplitMix64 generator, [`SplitMix`], seeded with [`Faults::seed`]).
/// Draws nothing for 0 and for 1000 or more, so a fault that is off does
/// not shift the others.
pub(super) fn hit(rng: &SplitMix, per_mille: u32) -> bool {
    match per_mille {
        0 => false,
        1000.. => true,
        p => rng.next_u64() % 1000 < u64::from(p),
    }
}

impl Simulator {
    /// Replaces the faults and reseeds the fault generator with
    /// `faults.seed`.
    pub fn set_faults(&self, faults: Faults) {
        let mut st = lock(&self.state);
        st.faults = faults;
        st.fault_rng = SplitMix::new(faults.seed);
    }

    /// The faults in force.
    #[must_use]
    pub fn faults(&self) -> Faults {
        lock(&self.state).faults
    }

    /// Expires every pending invoice now, whatever its age. Returns how
    /// many expired.
    pub fn expire_all(&self) -> usize {
        let mut st = lock(&self.state);
        let uids = std::mem::take(&mut st.pending);
        for uid in &uids {
            if let Some(r) = st.invoices.get_mut(uid) {
                r.status = DgiInvoiceState::Expired;
            }
        }
        st.stats.expired += uids.len() as u64;
        uids.len()
    }

    /// Decides whether this call fails before doing anything.
    pub(crate) fn roll_error(&self) -> bool {
        let mut st = lock(&self.state);
        let rate = st.faults.error_rate;
        let hit = hit(&st.fault_rng, rate);
        if hit {
            st.stats.errors_injected += 1;
            st.stats.faults_injected += 1;
        }
        hit
    }

    /// Decides whether the response of this committed call is lost.
    pub(crate) fn roll_drop(&self) -> bool {
        let mut st = lock(&self.state);
        let rate = st.faults.drop_rate;
        let hit = hit(&st.fault_rng, rate);
        if hit {
            st.stats.drops_injected += 1;
            st.stats.faults_injected += 1;
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rates_are_exact_at_the_ends() {
        let r = SplitMix::new(7);
        assert!(!(0..100).any(|_| hit(&r, 0)));
        assert!((0..100).all(|_| hit(&r, 1000)));
        let hits = (0..10_000).filter(|_| hit(&r, 500)).count();
        assert!((4_500..5_500).contains(&hits), "{hits}");
    }
}
