//! Prometheus metrics: requests by route template and status, request latency, database
//! timings, build info. Rendered in the text exposition format at `/metrics`.
//!
//! Requests are counted apart from the rest (see [`RequestMetrics`]): every request is counted,
//! on whichever core serves it, and a shared counter would be written from every core.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{text::encode, DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::{family::Family, gauge::Gauge, histogram::Histogram, MetricType};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
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

/// The route label of every request no route template matched: raw paths never become label
/// values.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A route template's number in the request metrics (see [`Metrics::route`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteId(usize);

/// Requests by method, route template and status, and their latency by route template: the
/// `http_requests` counter and the `http_request_duration_seconds` histogram.
///
/// Each thread that serves requests counts into a shard of its own (a shard is a lock that only
/// that thread takes in practice, on memory of its own), and a scrape adds the shards up. A
/// `Family` of shared counters and histograms would cost each request two read locks, a mutex
/// and a counter that every core writes: with the route label's reference count, a dozen
/// atomic operations whose cache lines move between cores on every request.
#[derive(Debug)]
struct RequestMetrics {
    /// Route template by [`RouteId`].
    routes: RwLock<Vec<Arc<String>>>,
    shards: Box<[Shard]>,
}

/// One shard's counts, by [`RouteId`]; aligned so that two shards never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Vec<RouteCounts>>);

#[derive(Debug, Default, Clone)]
struct RouteCounts {
    /// Requests by (method, status).
    answers: Vec<(&'static str, u16, u64)>,
    /// Requests by latency bucket (`LATENCY_BUCKETS`, then +Inf), each counted once.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl RouteCounts {
    fn add(&mut self, other: &RouteCounts) {
        for &(method, status, n) in &other.answers {
            self.count_answer(method, status, n);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    fn count_answer(&mut self, method: &'static str, status: u16, n: u64) {
        match self.answers.iter_mut().find(|(m, s, _)| *s == status && *m == method) {
            Some(answer) => answer.2 += n,
            None => self.answers.push((method, status, n)),
        }
    }
}

impl RequestMetrics {
    fn new() -> Self {
        // More shards than cores, so that the threads serving requests rarely share one.
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get()) * 4;
        Self { routes: RwLock::new(Vec::new()), shards: (0..shards).map(|_| Shard::default()).collect() }
    }

    fn route(&self, label: &str) -> RouteId {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        match routes.iter().position(|r| r.as_str() == label) {
            Some(i) => RouteId(i),
            None => {
                routes.push(Arc::new(label.to_string()));
                RouteId(routes.len() - 1)
            }
        }
    }

    /// This thread's shard: threads take numbers in the order they first count a request.
    fn shard(&self) -> &Shard {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        let n = NUMBER.try_with(|n| *n).unwrap_or(0);
        &self.shards[n % self.shards.len()]
    }

    fn observe(&self, method: &'static str, route: RouteId, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|upper| seconds <= *upper).unwrap_or(LATENCY_BUCKETS.len());
        let mut routes = self.shard().0.lock().unwrap_or_else(PoisonError::into_inner);
        if routes.len() <= route.0 {
            routes.resize_with(route.0 + 1, RouteCounts::default);
        }
        let counts = &mut routes[route.0];
        counts.count_answer(method, status, 1);
        counts.buckets[bucket] += 1;
        counts.sum += seconds;
        counts.count += 1;
    }

    /// The shards added up, by [`RouteId`].
    fn totals(&self) -> Vec<RouteCounts> {
        let mut totals: Vec<RouteCounts> = Vec::new();
        for shard in self.shards.iter() {
            let routes = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            if totals.len() < routes.len() {
                totals.resize_with(routes.len(), RouteCounts::default);
            }
            for (total, counts) in totals.iter_mut().zip(routes.iter()) {
                total.add(counts);
            }
        }
        totals
    }
}

/// Encodes [`RequestMetrics`] on each scrape, with the names and labels a `Family` would have.
#[derive(Debug)]
struct RequestCollector(Arc<RequestMetrics>);

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let totals = self.0.totals();
        if totals.iter().all(|t| t.count == 0) {
            return Ok(());
        }
        let routes = self.0.routes.read().unwrap_or_else(PoisonError::into_inner).clone();
        let unknown = Arc::new(String::from(UNMATCHED_ROUTE));
        let label = |i: usize| routes.get(i).cloned().unwrap_or_else(|| unknown.clone());
        let mut requests = encoder.encode_descriptor(
            "http_requests",
            // As `Registry::register` writes help texts: with a full stop.
            "HTTP requests by method, route template and status.",
            None,
            MetricType::Counter,
        )?;
        for (i, counts) in totals.iter().enumerate() {
            let mut answers = counts.answers.clone();
            answers.sort_unstable();
            for (method, status, n) in answers {
                let labels = RequestLabels { method, route: label(i), status };
                ConstCounter::new(n).encode(requests.encode_family(&labels)?)?;
            }
        }
        let mut latency = encoder.encode_descriptor(
            "http_request_duration_seconds",
            "HTTP request latency by route template.",
            None,
            MetricType::Histogram,
        )?;
        let bounds: Vec<f64> = LATENCY_BUCKETS.iter().copied().chain(std::iter::once(f64::INFINITY)).collect();
        for (i, counts) in totals.iter().enumerate().filter(|(_, c)| c.count > 0) {
            let buckets: Vec<(f64, u64)> = bounds.iter().copied().zip(counts.buckets).collect();
            let labels = RouteLabels { route: label(i) };
            latency.encode_family(&labels)?.encode_histogram::<RouteLabels>(
                counts.sum,
                counts.count,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}

/// The process's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Arc<RequestMetrics>,
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
        let requests = Arc::new(RequestMetrics::new());
        registry.register_collector(Box::new(RequestCollector(requests.clone())));
        let db = Family::<DbLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
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
        Self { registry, requests, db, security, siem_forwarded, siem_errors, siem_backlog, alerts, deliveries }
    }

    /// The number requests to the route template `label` are counted under (the same label gets
    /// the same number). Route templates (or `unmatched`), never raw paths: each is a label value.
    pub fn route(&self, label: &str) -> RouteId {
        self.requests.route(label)
    }

    /// Count a request to a route numbered by [`Metrics::route`].
    pub fn observe_request(&self, method: &'static str, route: RouteId, status: u16, elapsed: Duration) {
        self.requests.observe(method, route, status, elapsed);
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
        m.observe_request("GET", m.route("/healthz"), 200, std::time::Duration::from_millis(2));
        m.observe_db("read", std::time::Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains("gatehouse_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("gatehouse_db_operation_duration_seconds_bucket"));
        assert!(text.contains("gatehouse_build_info{version="));
    }

    /// The sharded request counts render exactly as prometheus-client's own families of counters
    /// and histograms render the same requests, counted from several threads.
    #[test]
    fn request_counts_render_as_a_family_would() {
        use super::*;
        let requests: Vec<(&'static str, &str, u16, f64)> = vec![
            ("GET", "/healthz", 200, 0.0004),
            ("GET", "/healthz", 200, 0.0005),
            ("HEAD", "/healthz", 200, 0.001),
            ("GET", "/v1/users/{id}", 404, 0.25),
            ("POST", "/v1/users/{id}", 200, 0.5),
            ("DELETE", "/v1/users/{id}", 204, 10.0),
            ("GET", "unmatched", 404, 20.0),
            ("GET", "/v1/users/{id}", 404, 0.003),
        ];
        let sharded = Metrics::new();
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for &(method, route, status, seconds) in &requests {
                        let id = sharded.route(route);
                        sharded.observe_request(method, id, status, Duration::from_secs_f64(seconds));
                    }
                });
            }
        });

        let mut registry = Registry::with_prefix("gatehouse");
        let counts = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("http_requests", "HTTP requests by method, route template and status", counts.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route template", latency.clone());
        for _ in 0..3 {
            for &(method, route, status, seconds) in &requests {
                let route = Arc::new(route.to_string());
                latency.get_or_create(&RouteLabels { route: route.clone() }).observe(seconds);
                counts.get_or_create(&RequestLabels { method, route, status }).inc();
            }
        }
        let mut reference = String::new();
        encode(&mut reference, &registry).unwrap();

        // Lines in order of appearance may differ; sums may differ in their last digit (added in
        // another order).
        let lines = |text: &str| {
            let mut lines: Vec<(String, Option<f64>)> = text
                .lines()
                .filter(|l| l.contains("http_request") && !l.starts_with("# EOF"))
                .map(|l| match l.split_once("_sum{") {
                    Some(_) => {
                        let (name, value) = l.rsplit_once(' ').unwrap();
                        (name.to_string(), Some(value.parse::<f64>().unwrap()))
                    }
                    None => (l.to_string(), None),
                })
                .collect();
            lines.sort_by(|a, b| a.0.cmp(&b.0));
            lines
        };
        let (got, want) = (lines(&sharded.render()), lines(&reference));
        assert_eq!(got.len(), want.len(), "{}\n---\n{reference}", sharded.render());
        for ((got_line, got_sum), (want_line, want_sum)) in got.iter().zip(&want) {
            assert_eq!(got_line, want_line);
            if let (Some(a), Some(b)) = (got_sum, want_sum) {
                assert!((a - b).abs() < 1e-9, "{got_line}: {a} != {b}");
            }
        }
        assert!(got.iter().any(|(l, _)| l.contains("le=\"+Inf\"")), "{got:?}");
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
