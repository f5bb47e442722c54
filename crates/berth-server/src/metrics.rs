//! Prometheus metrics, rendered in the text exposition format at `/metrics`.
//!
//! Counters are updated on the request path with atomics and short-held locks; labels
//! are bounded: route (a fixed set), method, status, OCI error code, and repository for
//! pulls, capped at [`MAX_REPO_LABELS`] distinct names (the rest count as `_other`).
//! No digest or client address is ever a label.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Distinct repository label values before the rest are pooled as `_other`.
pub const MAX_REPO_LABELS: usize = 1000;

/// Upper bounds (seconds) of the request latency histogram.
const BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// The route a response came from, set by the router for the metrics layer.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// The OCI error code of an error response.
#[derive(Debug, Clone, Copy)]
pub struct ErrorLabel(pub &'static str);

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// All metrics of one server.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(&'static str, &'static str, u16), u64>>,
    latency: Mutex<HashMap<&'static str, Histogram>>,
    errors: Mutex<HashMap<&'static str, u64>>,
    pulls: Mutex<HashMap<String, u64>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    uploads_started: AtomicU64,
    blobs_committed: AtomicU64,
    manifests_pushed: AtomicU64,
}

impl Metrics {
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
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route, method_label(method), status))
            .or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let mut lat = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = lat.entry(route).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn error(&self, code: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// Counts a manifest download of `repo`.
    pub fn pull(&self, repo: &str) {
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pulls.get_mut(repo) {
            *n += 1;
        } else if pulls.len() < MAX_REPO_LABELS {
            pulls.insert(repo.to_owned(), 1);
        } else {
            *pulls.entry("_other".to_owned()).or_default() += 1;
        }
    }

    pub fn upload_started(&self) {
        self.uploads_started.fetch_add(1, Ordering::Relaxed);
    }

    pub fn blob_committed(&self) {
        self.blobs_committed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn manifest_pushed(&self) {
        self.manifests_pushed.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition format; `stored` is (distinct blobs, bytes) from the store.
    pub fn render(&self, stored: (u64, u64)) -> String {
        let mut out = String::with_capacity(4096);
        let w = &mut out;
        let _ = writeln!(
            w,
            "# HELP berth_http_requests_total HTTP requests by route, method and status."
        );
        let _ = writeln!(w, "# TYPE berth_http_requests_total counter");
        let mut reqs: Vec<_> = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((r, m, s), n)| (*r, *m, *s, *n))
            .collect();
        reqs.sort();
        for (r, m, s, n) in reqs {
            let _ = writeln!(
                w,
                "berth_http_requests_total{{route=\"{r}\",method=\"{m}\",status=\"{s}\"}} {n}"
            );
        }
        let _ = writeln!(
            w,
            "# HELP berth_http_request_duration_seconds Request latency by route."
        );
        let _ = writeln!(w, "# TYPE berth_http_request_duration_seconds histogram");
        let lat = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let mut routes: Vec<_> = lat.keys().copied().collect();
        routes.sort();
        for r in routes {
            let Some(h) = lat.get(r) else { continue };
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    w,
                    "berth_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                w,
                "berth_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                w,
                "berth_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                w,
                "berth_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                h.count
            );
        }
        drop(lat);
        let _ = writeln!(
            w,
            "# HELP berth_errors_total Error responses by OCI error code."
        );
        let _ = writeln!(w, "# TYPE berth_errors_total counter");
        let mut errs: Vec<_> = self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        errs.sort();
        for (c, n) in errs {
            let _ = writeln!(w, "berth_errors_total{{code=\"{c}\"}} {n}");
        }
        let _ = writeln!(
            w,
            "# HELP berth_pulls_total Manifest downloads (GET) by repository."
        );
        let _ = writeln!(w, "# TYPE berth_pulls_total counter");
        let mut pulls: Vec<_> = self
            .pulls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        pulls.sort();
        for (r, n) in pulls {
            let _ = writeln!(w, "berth_pulls_total{{repository=\"{}\"}} {n}", escape(&r));
        }
        for (name, help, kind, v) in [
            (
                "berth_http_request_bytes_total",
                "Request body bytes received.",
                "counter",
                self.bytes_in.load(Ordering::Relaxed),
            ),
            (
                "berth_http_response_bytes_total",
                "Response body bytes sent.",
                "counter",
                self.bytes_out.load(Ordering::Relaxed),
            ),
            (
                "berth_uploads_started_total",
                "Blob upload sessions started.",
                "counter",
                self.uploads_started.load(Ordering::Relaxed),
            ),
            (
                "berth_blobs_committed_total",
                "Blobs verified and committed.",
                "counter",
                self.blobs_committed.load(Ordering::Relaxed),
            ),
            (
                "berth_manifests_pushed_total",
                "Manifests pushed.",
                "counter",
                self.manifests_pushed.load(Ordering::Relaxed),
            ),
            (
                "berth_storage_blobs",
                "Distinct blobs stored.",
                "gauge",
                stored.0,
            ),
            (
                "berth_storage_bytes",
                "Bytes of distinct blobs stored.",
                "gauge",
                stored.1,
            ),
        ] {
            let _ = writeln!(w, "# HELP {name} {help}");
            let _ = writeln!(w, "# TYPE {name} {kind}");
            let _ = writeln!(w, "{name} {v}");
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

/// Escapes a label value (repository names cannot hold these, but be safe).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bounded_labels() {
        let m = Metrics::default();
        m.request("manifest", "GET", 200, Duration::from_micros(700), 0, 512);
        m.request("manifest", "GET", 200, Duration::from_millis(30), 0, 512);
        m.error("MANIFEST_UNKNOWN");
        for i in 0..(MAX_REPO_LABELS + 5) {
            m.pull(&format!("r{i}"));
        }
        let text = m.render((3, 1000));
        assert!(text.contains(
            "berth_http_requests_total{route=\"manifest\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "berth_http_request_duration_seconds_bucket{route=\"manifest\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "berth_http_request_duration_seconds_bucket{route=\"manifest\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("berth_pulls_total{repository=\"_other\"} 5"));
        assert!(text.contains("berth_errors_total{code=\"MANIFEST_UNKNOWN\"} 1"));
        assert!(text.contains("berth_storage_bytes 1000"));
        assert!(text.contains("berth_http_response_bytes_total 1024"));
    }
}
