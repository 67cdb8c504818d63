//! Prometheus metrics with upstream's names

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub durations: HistogramVec,
    pub inflight_watches: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("apiserver_request_total", "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code."),
            &["verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component", "code"],
        )
        .expect("static metric definition");
        let durations = HistogramVec::new(
            HistogramOpts::new("apiserver_request_duration_seconds", "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.")
                .buckets(vec![0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0]),
            &["verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component"],
        )
        .expect("static metric definition");
        let inflight_watches = IntGauge::new(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests (watches).",
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(durations.clone()),
            Box::new(inflight_watches.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            durations,
            inflight_watches,
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The labels of one request, filled in as routing learns them.
#[derive(Debug, Clone, Default)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub dry_run: bool,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub scope: &'static str,
}

impl Metrics {
    pub fn observe(&self, l: &RequestLabels, code: u16, seconds: f64) {
        let dry = if l.dry_run { "All" } else { "" };
        let code = code.to_string();
        self.requests
            .with_label_values(&[
                l.verb,
                dry,
                &l.group,
                &l.version,
                &l.resource,
                &l.subresource,
                l.scope,
                "apiserver",
                &code,
            ])
            .inc();
        if l.verb != "WATCH" && l.verb != "CONNECT" {
            self.durations
                .with_label_values(&[
                    l.verb,
                    dry,
                    &l.group,
                    &l.version,
                    &l.resource,
                    &l.subresource,
                    l.scope,
                    "apiserver",
                ])
                .observe(seconds);
        }
    }
}
