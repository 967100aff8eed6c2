//! Prometheus metrics: requests by route template and status, request latency, database
//! timings, build info. Rendered in the text exposition format at `/metrics`.

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Arc<String>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SecurityLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiemLabels {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The process's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    db: Family<DbLabels, Histogram, fn() -> Histogram>,
    security: Family<SecurityLabels, Counter>,
    siem_forwarded: Family<SiemLabels, Counter>,
    siem_errors: Family<SiemLabels, Counter>,
    siem_backlog: Family<SiemLabels, Gauge>,
    alerts: Family<AlertLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let db = Family::<DbLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("http_requests", "HTTP requests by method, route template and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route template", latency.clone());
        registry.register(
            "db_operation_duration_seconds",
            "Database transaction time by kind (read, write)",
            db.clone(),
        );
        let security = Family::<SecurityLabels, Counter>::default();
        registry.register(
            "security_events",
            "Security-relevant events: failed and throttled logins, rejected tokens, CSRF refusals, refresh reuse",
            security.clone(),
        );
        let siem_forwarded = Family::<SiemLabels, Counter>::default();
        registry.register(
            "siem_forwarded_records",
            "Audit records delivered to a syslog collector ([[audit.syslog]] name)",
            siem_forwarded.clone(),
        );
        let siem_errors = Family::<SiemLabels, Counter>::default();
        registry.register(
            "siem_send_errors",
            "Failed connections and writes to a syslog collector (each is retried from the cursor)",
            siem_errors.clone(),
        );
        let siem_backlog = Family::<SiemLabels, Gauge>::default();
        registry.register(
            "siem_backlog_records",
            "Audit records a syslog collector has not confirmed yet",
            siem_backlog.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register("security_alerts", "Security alerts raised by the monitor, by rule", alerts.clone());
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "security_alert_webhook_deliveries",
            "Alert webhook delivery attempts by outcome (delivered, failed, gave_up)",
            deliveries.clone(),
        );
        registry.register("build_info", "Build information", build);
        Self {
            registry,
            requests,
            latency,
            db,
            security,
            siem_forwarded,
            siem_errors,
            siem_backlog,
            alerts,
            deliveries,
        }
    }

    /// Count a request. `route` is a route template (or `unmatched`), never a raw path.
    pub fn observe_request(&self, method: &'static str, route: Arc<String>, status: u16, elapsed: Duration) {
        self.latency.get_or_create(&RouteLabels { route: route.clone() }).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    }

    /// Count a security event (`auth.login.failed`, `auth.token.rejected`, …).
    pub fn security_event(&self, event: &'static str) {
        self.security.get_or_create(&SecurityLabels { event }).inc();
    }

    /// Count records delivered to the syslog collector `target`.
    pub fn siem_forwarded(&self, target: &str, records: u64) {
        self.siem_forwarded.get_or_create(&SiemLabels { target: target.to_string() }).inc_by(records);
    }

    /// Count a failed connection or write to the syslog collector `target`.
    pub fn siem_error(&self, target: &str) {
        self.siem_errors.get_or_create(&SiemLabels { target: target.to_string() }).inc();
    }

    /// Records the syslog collector `target` has not confirmed yet.
    pub fn siem_backlog(&self, target: &str, records: i64) {
        self.siem_backlog.get_or_create(&SiemLabels { target: target.to_string() }).set(records);
    }

    /// Count an alert raised by `rule`.
    pub fn alert_raised(&self, rule: &'static str) {
        self.alerts.get_or_create(&AlertLabels { rule }).inc();
    }

    /// Count a webhook delivery attempt: `delivered`, `failed` (will retry) or `gave_up`.
    pub fn alert_delivery(&self, outcome: &'static str) {
        self.deliveries.get_or_create(&DeliveryLabels { outcome }).inc();
    }

    pub fn observe_db(&self, op: &'static str, elapsed: Duration) {
        self.db.get_or_create(&DbLabels { op }).observe(elapsed.as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_families() {
        let m = super::Metrics::new();
        m.observe_request("GET", std::sync::Arc::new("/healthz".into()), 200, std::time::Duration::from_millis(2));
        m.observe_db("read", std::time::Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains("gatehouse_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("gatehouse_db_operation_duration_seconds_bucket"));
        assert!(text.contains("gatehouse_build_info{version="));
    }

    #[test]
    fn renders_siem_families() {
        let m = super::Metrics::new();
        m.siem_forwarded("central", 3);
        m.siem_error("central");
        m.siem_backlog("central", 7);
        let text = m.render();
        assert!(text.contains("gatehouse_siem_forwarded_records_total{target=\"central\"} 3"), "{text}");
        assert!(text.contains("gatehouse_siem_send_errors_total{target=\"central\"} 1"), "{text}");
        assert!(text.contains("gatehouse_siem_backlog_records{target=\"central\"} 7"), "{text}");
    }
}
