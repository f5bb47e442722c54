//! Prometheus metrics, rendered at `/metrics` by the `prometheus-client` crate in the
//! OpenMetrics text format (which Prometheus also reads as its classic text format).
//!
//! Counters are atomics inside label families; labels are bounded: route (a fixed set),
//! method, status, OCI error code, and repository for pulls and inspections, capped at
//! [`MAX_REPO_LABELS`] distinct names (the rest count as `_other`). No digest, client
//! address or account is ever a label.
//!
//! `berth_pulls_total` and `berth_inspections_total` are not counted from requests here:
//! [`crate::analytics`] decides what a download is and counts it both here and in the
//! stats API, so the two agree (see the README for what still differs: restarts and the
//! `since` window).
//!
//! The byte counters are the body bytes actually received and sent, counted by
//! [`crate::access_log`] as the bodies stream, not read from `Content-Length`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Distinct repository label values before the rest are pooled as `_other`.
pub const MAX_REPO_LABELS: usize = 1000;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The media type of the Prometheus text format 0.0.4, answered to clients that do not ask for
/// OpenMetrics (older scrapers and most text parsers).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text (what `prometheus-client` encodes) into the Prometheus text
/// format 0.0.4: a counter's `HELP` and `TYPE` lines name its samples (`x_total`, as 0.0.4
/// parsers expect), and the OpenMetrics-only `UNIT` and `# EOF` lines are dropped. Samples
/// are the same in both formats.
pub fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Upper bounds (seconds) of the request latency histogram.
const BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// Upper bounds (seconds) of the scan duration histogram: an image takes from well
/// under a second to minutes (gigabytes of layers).
const SCAN_BUCKETS: [f64; 9] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0];

/// The route a response came from, set by the router for the metrics layer.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepositoryLabels {
    repository: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// All metrics of one server.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    errors: Family<CodeLabels, Counter>,
    pulls: Family<RepositoryLabels, Counter>,
    inspections: Family<RepositoryLabels, Counter>,
    /// Repositories that have their own `pulls` and `inspections` label; the rest count
    /// as `_other`.
    pull_repos: Mutex<HashSet<String>>,
    bytes_in: Counter,
    bytes_out: Counter,
    uploads_started: Counter,
    blobs_committed: Counter,
    manifests_pushed: Counter,
    scrub_checked: Counter,
    scrub_corrupt: Counter,
    storage_blobs: Gauge,
    storage_bytes: Gauge,
    gc_runs: Counter,
    gc_freed_bytes: Counter,
    gc_blobs_deleted: Counter,
    gc_manifests_deleted: Counter,
    /// Milliseconds the last collection took.
    gc_last_duration_ms: Gauge,
    scans: Counter,
    scan_failures: Counter,
    scan_rematched: Counter,
    scan_duration: Histogram,
    /// Replication by configured rule (a bounded label: rules come from the file).
    replication_copied: Family<RuleLabels, Counter>,
    replication_failures: Family<RuleLabels, Counter>,
    replication_pending: Family<RuleLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            pulls: Family::default(),
            inspections: Family::default(),
            pull_repos: Mutex::new(HashSet::new()),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            uploads_started: Counter::default(),
            blobs_committed: Counter::default(),
            manifests_pushed: Counter::default(),
            scrub_checked: Counter::default(),
            scrub_corrupt: Counter::default(),
            storage_blobs: Gauge::default(),
            storage_bytes: Gauge::default(),
            gc_runs: Counter::default(),
            gc_freed_bytes: Counter::default(),
            gc_blobs_deleted: Counter::default(),
            gc_manifests_deleted: Counter::default(),
            gc_last_duration_ms: Gauge::default(),
            scans: Counter::default(),
            scan_failures: Counter::default(),
            scan_rematched: Counter::default(),
            scan_duration: Histogram::new(SCAN_BUCKETS),
            replication_copied: Family::default(),
            replication_failures: Family::default(),
            replication_pending: Family::default(),
        };
        m.registered()
    }
}

impl Metrics {
    /// Registers every metric under its exposition name (counters get `_total`, the
    /// histogram `_seconds` from its unit). The registry keeps clones: each clone shares
    /// its atomics with the field it was made from.
    fn registered(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "berth_http_requests",
            "HTTP requests by route, method and status",
            self.requests.clone(),
        );
        r.register_with_unit(
            "berth_http_request_duration",
            "Request latency by route",
            Unit::Seconds,
            self.latency.clone(),
        );
        r.register(
            "berth_errors",
            "Error responses by OCI error code",
            self.errors.clone(),
        );
        r.register(
            "berth_pulls",
            "Downloads (image content fetched: a platform manifest GET) by repository, as the stats API counts them",
            self.pulls.clone(),
        );
        r.register(
            "berth_inspections",
            "Inspections (metadata only: an index alone, or a HEAD with no GET after it) by repository",
            self.inspections.clone(),
        );
        for (name, help, counter) in [
            (
                "berth_http_request_bytes",
                "Request body bytes received",
                &self.bytes_in,
            ),
            (
                "berth_http_response_bytes",
                "Response body bytes sent",
                &self.bytes_out,
            ),
            (
                "berth_uploads_started",
                "Blob upload sessions started",
                &self.uploads_started,
            ),
            (
                "berth_blobs_committed",
                "Blobs verified and committed",
                &self.blobs_committed,
            ),
            (
                "berth_manifests_pushed",
                "Manifests pushed",
                &self.manifests_pushed,
            ),
            (
                "berth_scrub_blobs_checked",
                "Stored blobs read back and hashed by a scrub",
                &self.scrub_checked,
            ),
            (
                "berth_scrub_corrupt_blobs",
                "Damaged or missing blobs found by a scrub",
                &self.scrub_corrupt,
            ),
            ("berth_gc_runs", "Garbage collections run", &self.gc_runs),
            (
                "berth_gc_freed_bytes",
                "Bytes of blob files deleted by garbage collection",
                &self.gc_freed_bytes,
            ),
            (
                "berth_gc_blobs_deleted",
                "Blob files deleted by garbage collection",
                &self.gc_blobs_deleted,
            ),
            (
                "berth_gc_manifests_deleted",
                "Untagged manifests deleted by garbage collection",
                &self.gc_manifests_deleted,
            ),
            (
                "berth_scan_images",
                "Images scanned for vulnerabilities on push (failed scans included)",
                &self.scans,
            ),
            (
                "berth_scan_failures",
                "Image scans that failed (a layer unreadable, a blob gone)",
                &self.scan_failures,
            ),
            (
                "berth_scan_rematched",
                "Stored scans matched again after the vulnerability database changed",
                &self.scan_rematched,
            ),
        ] {
            r.register(name, help, counter.clone());
        }
        r.register_with_unit(
            "berth_scan_duration",
            "How long scanning one image took (reading its layers and matching)",
            Unit::Seconds,
            self.scan_duration.clone(),
        );
        r.register(
            "berth_gc_last_duration_milliseconds",
            "How long the last garbage collection took",
            self.gc_last_duration_ms.clone(),
        );
        r.register(
            "berth_replication_copied",
            "Changes replicated to a target (copies and deletions), by replication rule",
            self.replication_copied.clone(),
        );
        r.register(
            "berth_replication_failures",
            "Failed replication attempts, by replication rule",
            self.replication_failures.clone(),
        );
        r.register(
            "berth_replication_pending",
            "Changes queued and not yet replicated (dead ones excluded), by replication rule",
            self.replication_pending.clone(),
        );
        r.register(
            "berth_storage_blobs",
            "Distinct blobs stored",
            self.storage_blobs.clone(),
        );
        r.register(
            "berth_storage_bytes",
            "Bytes of distinct blobs stored",
            self.storage_bytes.clone(),
        );
        self
    }

    /// Records one finished request.
    pub fn request(
        &self,
        route: &'static str,
        method: &str,
        status: u16,
        elapsed: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: method_label(method),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one error response with OCI error `code`.
    pub fn error(&self, code: &'static str) {
        self.errors.get_or_create(&CodeLabels { code }).inc();
    }

    /// The label of `repo`: itself, or `_other` past [`MAX_REPO_LABELS`] names.
    fn repo_label(&self, repo: &str) -> RepositoryLabels {
        let labelled = {
            let mut seen = self.pull_repos.lock().unwrap_or_else(|p| p.into_inner());
            seen.contains(repo) || (seen.len() < MAX_REPO_LABELS && seen.insert(repo.to_owned()))
        };
        let repository = if labelled { repo } else { "_other" };
        RepositoryLabels {
            repository: repository.to_owned(),
        }
    }

    /// Counts a download of `repo` (called by [`crate::analytics`] only).
    pub fn pull(&self, repo: &str) {
        self.pulls.get_or_create(&self.repo_label(repo)).inc();
    }

    /// Counts an inspection of `repo` (called by [`crate::analytics`] only).
    pub fn inspection(&self, repo: &str) {
        self.inspections.get_or_create(&self.repo_label(repo)).inc();
    }

    pub fn upload_started(&self) {
        self.uploads_started.inc();
    }

    pub fn blob_committed(&self) {
        self.blobs_committed.inc();
    }

    pub fn manifest_pushed(&self) {
        self.manifests_pushed.inc();
    }

    /// Counts a blob a scrub read back.
    pub fn scrub_checked(&self) {
        self.scrub_checked.inc();
    }

    /// Counts a finished garbage collection (not a dry run) and what it freed.
    pub fn gc_finished(&self, report: &crate::service::GcReport) {
        self.gc_runs.inc();
        self.gc_freed_bytes.inc_by(report.bytes_freed);
        self.gc_blobs_deleted.inc_by(report.blobs_deleted);
        self.gc_manifests_deleted.inc_by(report.manifests_deleted);
        self.gc_last_duration_ms
            .set(i64::try_from(report.duration_ms).unwrap_or(i64::MAX));
    }

    /// Counts a finished image scan (called by [`crate::scanning`] only).
    pub fn scan_finished(&self, failed: bool, took: Duration) {
        self.scans.inc();
        if failed {
            self.scan_failures.inc();
        }
        self.scan_duration.observe(took.as_secs_f64());
    }

    /// Counts stored scans matched again against a new database.
    pub fn scans_rematched(&self, n: u64) {
        self.scan_rematched.inc_by(n);
    }

    /// Counts a replication attempt of `rule`: a change replicated, or a failure.
    pub fn replicated(&self, rule: &str, ok: bool) {
        let labels = RuleLabels {
            rule: rule.to_owned(),
        };
        if ok {
            self.replication_copied.get_or_create(&labels).inc();
        } else {
            self.replication_failures.get_or_create(&labels).inc();
        }
    }

    /// Sets how many changes of `rule` wait to be replicated.
    pub fn replication_pending(&self, rule: &str, pending: u64) {
        self.replication_pending
            .get_or_create(&RuleLabels {
                rule: rule.to_owned(),
            })
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Counts a damaged or missing blob a scrub found.
    pub fn scrub_corrupt(&self) {
        self.scrub_corrupt.inc();
    }

    /// The exposition text (see [`CONTENT_TYPE`]); `stored` is (distinct blobs, bytes)
    /// from the store.
    pub fn render(&self, stored: (u64, u64)) -> String {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.storage_blobs.set(gauge(stored.0));
        self.storage_bytes.set(gauge(stored.1));
        let mut out = String::with_capacity(4096);
        // Writing into a `String` cannot fail, and every label value is text or a
        // number, so an error here would be a bug in the encoder; it is logged rather
        // than answered with a half-written page.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// A bounded label for an HTTP method (no allocation per request).
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_by_their_samples() {
        let om = "# HELP berth_pulls Downloads.\n# TYPE berth_pulls counter\nberth_pulls_total{repository=\"a\"} 2\n# HELP berth_storage_bytes Bytes.\n# TYPE berth_storage_bytes gauge\nberth_storage_bytes 5\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP berth_pulls_total Downloads.\n# TYPE berth_pulls_total counter\nberth_pulls_total{repository=\"a\"} 2\n# HELP berth_storage_bytes Bytes.\n# TYPE berth_storage_bytes gauge\nberth_storage_bytes 5\n"
        );
    }

    #[test]
    fn renders_bounded_labels() {
        let m = Metrics::default();
        m.request("manifest", "GET", 200, Duration::from_micros(700), 0, 512);
        m.request("manifest", "GET", 200, Duration::from_millis(30), 0, 512);
        m.request("blob", "BREW", 405, Duration::from_millis(1), 7, 0);
        m.error("MANIFEST_UNKNOWN");
        for i in 0..(MAX_REPO_LABELS + 5) {
            m.pull(&format!("r{i}"));
        }
        m.pull("r0");
        let text = m.render((3, 1000));
        assert!(text.contains(
            "berth_http_requests_total{route=\"manifest\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "berth_http_requests_total{route=\"blob\",method=\"other\",status=\"405\"} 1"
        ));
        // The encoder writes `le` before the family's labels; the order means nothing.
        assert!(text.contains(
            "berth_http_request_duration_seconds_bucket{le=\"0.001\",route=\"manifest\"} 1"
        ));
        assert!(text.contains(
            "berth_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"manifest\"} 2"
        ));
        assert!(text.contains("berth_http_request_duration_seconds_count{route=\"manifest\"} 2"));
        assert!(text.contains("berth_pulls_total{repository=\"_other\"} 5"));
        assert!(text.contains("berth_pulls_total{repository=\"r0\"} 2"));
        assert_eq!(
            text.matches("berth_pulls_total{").count(),
            MAX_REPO_LABELS + 1
        );
        assert!(text.contains("berth_errors_total{code=\"MANIFEST_UNKNOWN\"} 1"));
        assert!(text.contains("berth_storage_blobs 3"));
        assert!(text.contains("berth_storage_bytes 1000"));
        assert!(text.contains("berth_http_response_bytes_total 1024"));
        assert!(text.contains("berth_http_request_bytes_total 7"));
        assert!(text.contains("berth_scrub_blobs_checked_total 0"));
        assert!(text.contains("berth_scrub_corrupt_blobs_total 0"));
        assert!(text.contains("berth_gc_runs_total 0"));
        assert!(text.contains("berth_gc_freed_bytes_total 0"));
        assert!(text.contains("berth_gc_blobs_deleted_total 0"));
        assert!(text.contains("berth_gc_manifests_deleted_total 0"));
        assert!(text.contains("berth_gc_last_duration_milliseconds 0"));
        m.scan_finished(true, Duration::from_millis(300));
        let text = m.render((3, 1000));
        assert!(text.contains("berth_scan_images_total 1"));
        assert!(text.contains("berth_scan_failures_total 1"));
        assert!(text.contains("berth_scan_rematched_total 0"));
        assert!(text.contains("berth_scan_duration_seconds_count 1"));
        assert!(text.contains("# TYPE berth_http_requests counter"));
        assert!(text.ends_with("# EOF\n"));
    }
}
