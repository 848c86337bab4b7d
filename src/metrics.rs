//! The Prometheus metrics of one server, in a registry of its own (so servers in one
//! test process do not mix their counts), exposed in the Prometheus text format.
//! Label values are bounded: route templates, operation names and outcomes, never
//! lock names.

use crate::domain::Kind;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder, exponential_buckets,
};

/// Every metric fencelock keeps.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by method, route template and status.
    http_requests: IntCounterVec,
    http_latency: HistogramVec,
    /// DynamoDB requests by operation (acquire, heartbeat, update, extend, release,
    /// read, list, reclaim_scan, reclaim, ready) and outcome (granted: done;
    /// conflict: a condition failed; throttled; error).
    dynamodb_requests: IntCounterVec,
    dynamodb_latency: HistogramVec,
    /// DynamoDB capacity units consumed, by operation (the request labels above),
    /// unit (`read`, `write`) and source (`reported`: DynamoDB said so in the answer;
    /// `computed`: from the item's size, for refused conditional writes, which
    /// DynamoDB bills without reporting them).
    dynamodb_capacity: prometheus::CounterVec,
    /// Grants by kind (lock, semaphore, group).
    grants_by_kind: IntCounterVec,
    /// Acquires refused because every slot was held, by kind.
    conflicts_by_kind: IntCounterVec,
    /// Operators' break-glass actions, by action and whether they changed anything.
    admin_actions: IntCounterVec,
    /// How long holdings lasted, grant to release (or to the end of a lease taken
    /// over), by kind.
    hold_time: HistogramVec,
    /// How long acquires took, waiting included, by kind and outcome.
    acquire_wait: HistogramVec,
    /// The part of the lease that was left when a heartbeat arrived, by kind.
    lease_left: HistogramVec,
    /// Takeovers of a lease that ended without a release, by namespace.
    takeovers_by_namespace: IntCounterVec,
    /// The namespaces [`Metrics::takeovers_by_namespace`] has a series of.
    takeover_namespaces: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    pub locks_granted: IntCounter,
    pub lock_conflicts: IntCounter,
    pub expired_takeovers: IntCounter,
    pub heartbeats: IntCounter,
    pub releases: IntCounter,
    pub waiters: IntGauge,
    /// DynamoDB's clock minus this server's, as last estimated from a `Date` header.
    clock_offset: prometheus::Gauge,
    /// 1 while the clock check finds this server's clock off by more than the margin.
    clock_suspect: IntGauge,
    /// Takeovers of unreleased leases refused because the clock was suspect.
    pub takeovers_refused: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        // The names and labels below are constants; the unit test builds them.
        Self::build().expect("the metric definitions are valid")
    }
}

impl Metrics {
    fn build() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("fencelock".into()), None)?;
        // 0.5 ms to about 16 s.
        let buckets = exponential_buckets(0.0005, 2.0, 16)?;
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let metric = IntCounter::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let metrics = Self {
            http_requests: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests answered"),
                &["method", "route", "status"],
            )?,
            http_latency: HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                    .buckets(buckets.clone()),
                &["method", "route"],
            )?,
            dynamodb_requests: IntCounterVec::new(
                Opts::new(
                    "dynamodb_requests_total",
                    "DynamoDB requests by operation and outcome",
                ),
                &["operation", "outcome"],
            )?,
            dynamodb_latency: HistogramVec::new(
                HistogramOpts::new(
                    "dynamodb_request_duration_seconds",
                    "DynamoDB request latency, retries included",
                )
                .buckets(buckets),
                &["operation"],
            )?,
            dynamodb_capacity: prometheus::CounterVec::new(
                Opts::new(
                    "dynamodb_capacity_units_total",
                    "DynamoDB capacity units consumed, by operation, unit (read, write) and source (reported by DynamoDB, or computed from the item's size for refused conditional writes)",
                ),
                &["operation", "unit", "source"],
            )?,
            grants_by_kind: IntCounterVec::new(
                Opts::new("grants_total", "Acquisitions granted, by kind"),
                &["kind"],
            )?,
            conflicts_by_kind: IntCounterVec::new(
                Opts::new(
                    "conflicts_total",
                    "Acquisitions refused because what they asked for was held, by kind",
                ),
                &["kind"],
            )?,
            admin_actions: IntCounterVec::new(
                Opts::new(
                    "admin_actions_total",
                    "Operators' break-glass actions (force_release, disable, enable, ask_release), by whether they changed anything",
                ),
                &["action", "changed"],
            )?,
            hold_time: HistogramVec::new(
                HistogramOpts::new(
                    "hold_seconds",
                    "How long holdings lasted: grant to release, or to the end of a lease another holder took over",
                )
                // 0.1 s to about 5 days.
                .buckets(exponential_buckets(0.1, 4.0, 12)?),
                &["kind"],
            )?,
            acquire_wait: HistogramVec::new(
                HistogramOpts::new(
                    "acquire_wait_seconds",
                    "How long acquires took to be answered, waiting included",
                )
                // 1 ms to about 65 s.
                .buckets(exponential_buckets(0.001, 2.0, 17)?),
                &["kind", "outcome"],
            )?,
            lease_left: HistogramVec::new(
                HistogramOpts::new(
                    "heartbeat_lease_left_ratio",
                    "The part of the lease left when a heartbeat arrived (1: just renewed; near 0: almost too late)",
                )
                .buckets(vec![0.05, 0.1, 0.2, 1.0 / 3.0, 0.5, 2.0 / 3.0, 0.8, 0.9, 1.0]),
                &["kind"],
            )?,
            takeovers_by_namespace: IntCounterVec::new(
                Opts::new(
                    "expired_takeovers_by_namespace_total",
                    "Acquisitions that took over a lease that ended without a release, by namespace (past 100 namespaces, as `_other`)",
                ),
                &["namespace"],
            )?,
            takeover_namespaces: Default::default(),
            locks_granted: counter("locks_granted_total", "Acquisitions granted")?,
            lock_conflicts: counter(
                "lock_conflicts_total",
                "Acquisitions refused because the lock was held",
            )?,
            expired_takeovers: counter(
                "expired_takeovers_total",
                "Acquisitions that took over a lease that ended without a release",
            )?,
            heartbeats: counter("heartbeats_total", "Leases extended by heartbeat")?,
            releases: counter("releases_total", "Leases released")?,
            waiters: IntGauge::new("waiters", "Acquire requests waiting on this server")?,
            clock_offset: prometheus::Gauge::new(
                "clock_offset_seconds",
                "DynamoDB's clock minus this server's, estimated from the Date header of its last answer (whole seconds: coarse)",
            )?,
            clock_suspect: IntGauge::new(
                "clock_suspect",
                "1 while this server's clock is certainly further from DynamoDB's than the skew margin (takeovers refused, /readyz failing)",
            )?,
            takeovers_refused: counter(
                "takeovers_refused_total",
                "Acquisitions that would have taken over a lease that ended unreleased, refused because this server's clock was suspect",
            )?,
            registry: registry.clone(),
        };
        registry.register(Box::new(metrics.http_requests.clone()))?;
        registry.register(Box::new(metrics.http_latency.clone()))?;
        registry.register(Box::new(metrics.dynamodb_requests.clone()))?;
        registry.register(Box::new(metrics.dynamodb_latency.clone()))?;
        registry.register(Box::new(metrics.dynamodb_capacity.clone()))?;
        registry.register(Box::new(metrics.waiters.clone()))?;
        registry.register(Box::new(metrics.clock_offset.clone()))?;
        registry.register(Box::new(metrics.clock_suspect.clone()))?;
        registry.register(Box::new(metrics.grants_by_kind.clone()))?;
        registry.register(Box::new(metrics.conflicts_by_kind.clone()))?;
        registry.register(Box::new(metrics.admin_actions.clone()))?;
        registry.register(Box::new(metrics.hold_time.clone()))?;
        registry.register(Box::new(metrics.acquire_wait.clone()))?;
        registry.register(Box::new(metrics.lease_left.clone()))?;
        registry.register(Box::new(metrics.takeovers_by_namespace.clone()))?;
        Ok(metrics)
    }

    /// Counts one DynamoDB request.
    pub fn dynamodb(&self, operation: &str, outcome: &str, took: Duration) {
        self.dynamodb_requests
            .with_label_values(&[operation, outcome])
            .inc();
        self.dynamodb_latency
            .with_label_values(&[operation])
            .observe(took.as_secs_f64());
    }

    /// How many DynamoDB requests have been counted, of every operation and outcome.
    pub fn dynamodb_requests_total(&self) -> u64 {
        use prometheus::core::Collector;
        self.dynamodb_requests
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum()
    }

    /// Counts `units` of DynamoDB capacity consumed by a request of `operation`.
    pub fn capacity(&self, operation: &str, unit: CapacityUnit, units: f64, source: UnitSource) {
        self.dynamodb_capacity
            .with_label_values(&[operation, unit.as_str(), source.as_str()])
            .inc_by(units);
    }

    /// Counts one grant of a `kind`: a lock, a semaphore slot or a group.
    pub fn grants(&self, kind: Kind) {
        self.grants_by_kind
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Counts one acquire of a `kind` refused because what it asked for was held.
    pub fn conflicts(&self, kind: Kind) {
        self.conflicts_by_kind
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Counts one operator's `action` (`force_release`, …), which `changed` the record
    /// or found nothing to do.
    pub fn admin(&self, action: &str, changed: bool) {
        self.admin_actions
            .with_label_values(&[action, if changed { "true" } else { "false" }])
            .inc();
    }

    /// Notes a holding of `kind` that lasted `held`.
    pub fn held(&self, kind: Kind, held: Duration) {
        self.hold_time
            .with_label_values(&[kind.as_str()])
            .observe(held.as_secs_f64());
    }

    /// Notes an acquire of `kind` answered `outcome` (`granted`, `held`, …) after `took`.
    pub fn acquired(&self, kind: Kind, outcome: &str, took: Duration) {
        self.acquire_wait
            .with_label_values(&[kind.as_str(), outcome])
            .observe(took.as_secs_f64());
    }

    /// Notes a heartbeat of `kind` that arrived with `left` of its lease (0 to 1).
    pub fn heartbeat_left(&self, kind: Kind, left: f64) {
        self.lease_left
            .with_label_values(&[kind.as_str()])
            .observe(left.clamp(0.0, 1.0));
    }

    /// Counts a takeover of a lease in `namespace` that ended without a release. The
    /// first 100 namespaces seen have a series each, the rest share `_other`: names
    /// are the clients' to choose, and series are not free.
    pub fn took_over(&self, namespace: &str) {
        const MOST: usize = 100;
        let mut seen = self
            .takeover_namespaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let label = if seen.contains(namespace) {
            namespace
        } else if seen.len() < MOST {
            seen.insert(namespace.to_owned());
            namespace
        } else {
            "_other"
        };
        self.takeovers_by_namespace
            .with_label_values(&[label])
            .inc();
        self.expired_takeovers.inc();
    }

    /// Notes the clock check's estimate of DynamoDB's clock minus this server's.
    pub fn clock_offset(&self, offset_ms: i64) {
        self.clock_offset.set(offset_ms as f64 / 1000.0);
    }

    /// Notes whether the clock check finds this server's clock suspect.
    pub fn clock_suspect(&self, suspect: bool) {
        self.clock_suspect.set(i64::from(suspect));
    }

    /// Counts one HTTP request.
    pub fn http(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.http_requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.http_latency
            .with_label_values(&[method, route])
            .observe(took.as_secs_f64());
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = Vec::new();
        // Encoding gathered metrics into memory does not fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut text);
        String::from_utf8(text).unwrap_or_default()
    }
}

/// Which capacity a DynamoDB request consumed: reads are billed in read units,
/// writes (transactions included) in write units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityUnit {
    Read,
    Write,
}

impl CapacityUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// Where a count of capacity units comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitSource {
    /// DynamoDB's `ConsumedCapacity` in its answer.
    Reported,
    /// Computed by fencelock from the size of the item, where DynamoDB bills a
    /// request but reports nothing (a refused conditional write).
    Computed,
}

impl UnitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Computed => "computed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_defined_and_rendered() {
        let metrics = Metrics::build().unwrap();
        metrics.dynamodb("acquire", "granted", Duration::from_millis(3));
        metrics.capacity("acquire", CapacityUnit::Write, 1.0, UnitSource::Reported);
        metrics.capacity("read", CapacityUnit::Read, 0.5, UnitSource::Reported);
        metrics.capacity("acquire", CapacityUnit::Write, 2.0, UnitSource::Computed);
        metrics.http("POST", "/locks/{name}", 200, Duration::from_millis(4));
        metrics.locks_granted.inc();
        metrics.grants(Kind::Semaphore);
        metrics.conflicts(Kind::Lock);
        metrics.admin("disable", true);
        metrics.held(Kind::Lock, Duration::from_secs(3));
        metrics.acquired(Kind::Lock, "granted", Duration::from_millis(3));
        metrics.heartbeat_left(Kind::Lock, 0.7);
        for namespace in 0..101 {
            metrics.took_over(&format!("ns{namespace}"));
        }
        let text = metrics.render();
        for name in [
            "fencelock_http_requests_total",
            "fencelock_http_request_duration_seconds_bucket",
            "fencelock_dynamodb_requests_total",
            "fencelock_dynamodb_request_duration_seconds_count",
            "fencelock_locks_granted_total 1",
            "fencelock_dynamodb_capacity_units_total{operation=\"acquire\",source=\"reported\",unit=\"write\"} 1",
            "fencelock_dynamodb_capacity_units_total{operation=\"acquire\",source=\"computed\",unit=\"write\"} 2",
            "fencelock_waiters 0",
            "fencelock_grants_total{kind=\"semaphore\"} 1",
            "fencelock_conflicts_total{kind=\"lock\"} 1",
            "fencelock_admin_actions_total{action=\"disable\",changed=\"true\"} 1",
            "fencelock_hold_seconds_count{kind=\"lock\"} 1",
            "fencelock_acquire_wait_seconds_count{kind=\"lock\",outcome=\"granted\"} 1",
            "fencelock_heartbeat_lease_left_ratio_bucket{kind=\"lock\",le=\"0.8\"} 1",
            "fencelock_expired_takeovers_by_namespace_total{namespace=\"ns99\"} 1",
            "fencelock_expired_takeovers_by_namespace_total{namespace=\"_other\"} 1",
            "fencelock_expired_takeovers_total 101",
            "fencelock_clock_suspect 0",
            "fencelock_clock_offset_seconds 0",
            "fencelock_takeovers_refused_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
