//! The gateway's Prometheus metrics: requests, latency and time-to-first-byte histograms, tokens
//! and errors, per route.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Counters and histograms the gateway updates on every request.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub ttfb: HistogramVec,
    pub tokens: IntCounterVec,
    pub errors: IntCounterVec,
    pub retries: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("ferrostack_gateway_requests_total", "Requests answered by the gateway, by route and status"),
            &["route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("ferrostack_gateway_request_duration_seconds", "Time until the response ended")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let ttfb = HistogramVec::new(
            HistogramOpts::new("ferrostack_gateway_time_to_first_byte_seconds", "Time until the first body byte")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new("ferrostack_gateway_tokens_total", "Tokens reported by backends, by route and kind"),
            &["route", "kind"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("ferrostack_gateway_errors_total", "Requests the gateway refused or failed, by route and reason"),
            &["route", "reason"],
        )?;
        let retries =
            IntCounter::new("ferrostack_gateway_retries_total", "Connect failures retried on another instance")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(ttfb.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        Ok(Metrics { registry, requests, duration, ttfb, tokens, errors, retries })
    }

    /// Counts a refused or failed request.
    pub fn error(&self, route: &str, reason: &str) {
        self.errors.with_label_values(&[route, reason]).inc();
    }

    /// The Prometheus text exposition of every gateway metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode gateway metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
