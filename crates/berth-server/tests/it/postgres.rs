//! The server over PostgreSQL (`database_url = "postgres://..."`), each test on a fresh
//! database of a throwaway cluster (`berth_meta::postgres::testing`): skopeo pushes and
//! pulls through it; `/healthz` and `/readyz` answer probes; while the database is down
//! requests fail with a clean 503 and readiness says why, and both recover by
//! themselves when it returns.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_meta::postgres::testing;
use reqwest::{Method, StatusCode};

use crate::common::{error_code, TestRegistry};

fn config(url: String) -> berth_server::Config {
    berth_server::Config {
        database_url: Some(url),
        ..Default::default()
    }
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by scripts/test-all")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_and_pulls_through_postgres() {
    let Some(url) = testing::fresh_url() else {
        return;
    };
    let reg = TestRegistry::start_with(config(url.clone())).await;
    let host = reg.base.trim_start_matches("http://").to_owned();
    let (_, digest) = reg.push_image("team/app", "1.0", "pg").await;
    let dir = tempfile::tempdir().unwrap();
    let layout = format!("oci:{}:img", dir.path().join("layout").display());

    // Pull into an OCI layout, then push it back under another name.
    let out = skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{host}/team/app:1.0"),
        &layout,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &layout,
        &format!("docker://{host}/team/copy:1.0"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{host}/team/copy:1.0"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        berth_oci::Digest::sha256(&out.stdout),
        digest,
        "the copy is byte for byte the pushed manifest"
    );

    // What the server wrote is in the database: a second server over the same
    // database (another replica) lists both repositories and the tag.
    reg.stop().await;
    let other = TestRegistry::start_with(config(url)).await;
    let r = other.req(Method::GET, "/v2/_catalog").send().await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["repositories"],
        serde_json::json!(["team/app", "team/copy"])
    );
    let r = other
        .req(Method::GET, "/v2/team/copy/tags/list")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tags"], serde_json::json!(["1.0"]));
}

/// Polls `path` until it answers `want`, for at most `within`.
async fn wait_for(reg: &TestRegistry, path: &str, want: StatusCode, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let r = reg.req(Method::GET, path).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {status} {body:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_follow_a_database_outage_and_requests_recover() {
    // A cluster of its own: stopping the shared one would fail the other tests.
    let Some(cluster) = testing::Cluster::start_new() else {
        return;
    };
    let reg = TestRegistry::start_with(config(cluster.fresh_database())).await;
    reg.push_image("team/app", "1.0", "before").await;
    let r = reg.req(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    assert_eq!(
        wait_for(&reg, "/readyz", StatusCode::OK, Duration::from_secs(5)).await,
        "ready\n"
    );

    cluster.stop();
    // Not ready, with a plain reason; still healthy (the process is fine).
    let reason = wait_for(
        &reg,
        "/readyz",
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;
    assert!(reason.contains("database"), "{reason}");
    let r = reg.req(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A request that needs the database: a clean, retryable 503, not a 500. (A tag
    // listing: the cache in front of the store never answers it.)
    let r = reg
        .req(Method::GET, "/v2/team/app/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await, "UNAVAILABLE");

    cluster.start();
    wait_for(&reg, "/readyz", StatusCode::OK, Duration::from_secs(15)).await;
    reg.push_image("team/app", "2.0", "after").await;
    let r = reg
        .req(Method::GET, "/v2/team/app/tags/list")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tags"], serde_json::json!(["1.0", "2.0"]));
}
