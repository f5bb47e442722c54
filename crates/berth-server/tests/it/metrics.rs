//! `/metrics`: counters move with traffic, labels stay bounded.

use reqwest::Method;

use crate::common::TestRegistry;

/// The value of one sample line (`name{labels} value`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn counters_follow_traffic() {
    let reg = TestRegistry::start().await;
    reg.push_image("team/app", "v1", "m").await;
    for _ in 0..3 {
        reg.req(Method::GET, "/v2/team/app/manifests/v1")
            .send()
            .await
            .unwrap();
    }
    reg.req(Method::HEAD, "/v2/team/app/manifests/v1")
        .send()
        .await
        .unwrap();
    reg.req(Method::GET, "/v2/team/app/manifests/nope")
        .send()
        .await
        .unwrap();
    let r = reg.req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        berth_server::metrics::TEXT_CONTENT_TYPE
    );
    let text = r.text().await.unwrap();
    assert_eq!(
        sample(&text, "berth_pulls_total{repository=\"team/app\"}"),
        Some(3.0),
        "HEAD is not a pull:\n{text}"
    );
    assert_eq!(
        sample(
            &text,
            "berth_http_requests_total{route=\"manifest\",method=\"GET\",status=\"200\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "berth_errors_total{code=\"MANIFEST_UNKNOWN\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "berth_manifests_pushed_total"), Some(1.0));
    assert_eq!(sample(&text, "berth_blobs_committed_total"), Some(2.0));
    assert_eq!(sample(&text, "berth_storage_blobs"), Some(2.0));
    assert!(
        sample(
            &text,
            "berth_http_request_duration_seconds_count{route=\"manifest\"}"
        )
        .unwrap()
            >= 5.0
    );
    // Every sample line is `name{labels} number` and every metric has HELP and TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        // The text format names a counter by its `_total` samples, a histogram by its base.
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            text.contains(&format!("# TYPE {base} ")),
            "no TYPE for {name}"
        );
        assert!(!series.contains("sha256:"), "a digest in a label: {line}");
    }
}

/// A scraper that asks for OpenMetrics gets it, `# EOF` included.
#[tokio::test]
async fn openmetrics_on_request() {
    let reg = TestRegistry::start().await;
    let r = reg
        .req(Method::GET, "/metrics")
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        berth_server::metrics::CONTENT_TYPE
    );
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert!(text.contains("# TYPE berth_pulls counter"), "{text}");
}
