//! Prometheus metrics of one server instance.
//!
//! Each [`Metrics`] owns its own `metrics-exporter-prometheus` recorder
//! instead of installing the process-global one: the library never touches
//! global state, and several routers in one process (the tests run many)
//! keep separate counts. `GET /metrics` renders this recorder.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram, Key, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

/// Invoices sealed (new seals only, not idempotent replays).
pub const SEALED_TOTAL: &str = "bonopay_invoices_sealed_total";
/// Idempotent replays answered.
pub const REPLAYED_TOTAL: &str = "bonopay_invoices_replayed_total";
/// Signer failures while sealing.
pub const SIGNER_ERRORS_TOTAL: &str = "bonopay_signer_errors_total";
/// Seals refused for contention (the outlet's chain kept moving; 503).
pub const CONTENTION_TOTAL: &str = "bonopay_seal_contention_total";
/// Time to seal one invoice (validation, signing and the durable append), seconds.
pub const SEAL_SECONDS: &str = "bonopay_seal_duration_seconds";

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The server's metrics.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    sealed: Counter,
    replayed: Counter,
    signer_errors: Counter,
    contention: Counter,
    seal_seconds: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh recorder with the five series registered (at zero).
    #[must_use]
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(SEAL_SECONDS.to_owned()), BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            // The bucket list is a non-empty constant, so this never fails;
            // fall back to summaries rather than panicking.
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        recorder.describe_counter(
            SEALED_TOTAL.into(),
            Some(Unit::Count),
            "Invoices sealed (new seals, not replays)".into(),
        );
        recorder.describe_counter(
            REPLAYED_TOTAL.into(),
            Some(Unit::Count),
            "Idempotent replays answered with the original seal".into(),
        );
        recorder.describe_counter(
            SIGNER_ERRORS_TOTAL.into(),
            Some(Unit::Count),
            "Signer failures while sealing (answered 503)".into(),
        );
        recorder.describe_counter(
            CONTENTION_TOTAL.into(),
            Some(Unit::Count),
            "Seals answered 503 because the outlet's chain kept moving (retryable)".into(),
        );
        recorder.describe_histogram(
            SEAL_SECONDS.into(),
            Some(Unit::Seconds),
            "Time to seal one invoice: validation, signing, durable append".into(),
        );
        let sealed = recorder.register_counter(&Key::from_static_name(SEALED_TOTAL), &meta);
        let replayed = recorder.register_counter(&Key::from_static_name(REPLAYED_TOTAL), &meta);
        let signer_errors =
            recorder.register_counter(&Key::from_static_name(SIGNER_ERRORS_TOTAL), &meta);
        let contention = recorder.register_counter(&Key::from_static_name(CONTENTION_TOTAL), &meta);
        let seal_seconds = recorder.register_histogram(&Key::from_static_name(SEAL_SECONDS), &meta);
        sealed.absolute(0);
        replayed.absolute(0);
        signer_errors.absolute(0);
        contention.absolute(0);
        Self {
            recorder: Arc::new(recorder),
            sealed,
            replayed,
            signer_errors,
            contention,
            seal_seconds,
        }
    }

    /// One invoice sealed in `elapsed`.
    pub fn sealed(&self, elapsed: Duration) {
        self.sealed.increment(1);
        self.seal_seconds.record(elapsed);
    }

    /// One replay answered.
    pub fn replayed(&self) {
        self.replayed.increment(1);
    }

    /// One signer failure.
    pub fn signer_error(&self) {
        self.signer_errors.increment(1);
    }

    /// One seal refused for contention.
    pub fn contention(&self) {
        self.contention.increment(1);
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }
}
