//! The server over PostgreSQL (`database_url = "postgres://..."`), each test on a fresh
//! database of a throwaway cluster (`berth_meta::postgres::testing`): skopeo pushes and
//! pulls through it; uploads committed at once through two replicas never take a
//! repository over its quota; `/healthz` and `/readyz` answer probes; while the database is down
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

/// Two replicas over one database, each with its own blob directory (the quota is the
/// database's business): eight 1 MiB uploads committed at once, half through each, into
/// a 4 MiB quota store exactly four; the others are refused and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_through_two_replicas_hold_the_quota() {
    const MIB: usize = 1 << 20;
    let Some(url) = testing::fresh_url() else {
        return;
    };
    let config = berth_server::Config {
        database_url: Some(url),
        ..crate::lifecycle::quota("team-a/*", 4 * MIB as u64)
    };
    let a = TestRegistry::start_with(config.clone()).await;
    let b = TestRegistry::start_with(config).await;
    // Each replica's start-up reconciles upload sessions with its own blob directory,
    // which would drop the other's sessions: no upload begins before both are ready.
    for reg in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while reg
            .req(Method::GET, "/readyz")
            .send()
            .await
            .unwrap()
            .status()
            != StatusCode::OK
        {
            assert!(Instant::now() < deadline, "{} is not ready", reg.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (committed, refused) =
        crate::lifecycle::race_uploads(&[&a, &b], "team-a/app", 8, MIB).await;
    assert_eq!((committed.len(), refused.len()), (4, 4));
    crate::lifecycle::assert_stores_only(&[&a, &b], "team-a/app", &committed, &refused, MIB).await;
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

/// What the client saw of one request while the database went away and came back.
struct Seen {
    what: String,
    status: Option<StatusCode>,
    /// For a 503: its `Retry-After` header and OCI error code.
    retry_after: bool,
    code: Option<String>,
    took: Duration,
    at: Instant,
}

/// One round of what a client does: list, pull, check a blob, push a blob and a
/// manifest, read the catalog. Each request is bounded by the client's timeout.
async fn round(
    http: &reqwest::Client,
    base: &str,
    i: u64,
    layer: &berth_oci::Digest,
    manifest: &[u8],
    out: &std::sync::Mutex<Vec<Seen>>,
) {
    let blob = format!("blob of round {i}");
    let d = berth_oci::Digest::sha256(blob.as_bytes());
    let requests = [
        (
            "GET tags",
            http.get(format!("{base}/v2/team/app/tags/list")),
        ),
        (
            "GET manifest",
            http.get(format!("{base}/v2/team/app/manifests/1.0"))
                .header("accept", crate::common::OCI_MANIFEST),
        ),
        (
            "HEAD blob",
            http.head(format!("{base}/v2/team/app/blobs/{layer}")),
        ),
        (
            "POST blob",
            http.post(format!("{base}/v2/team/app/blobs/uploads/?digest={d}"))
                .body(blob.clone()),
        ),
        (
            "PUT manifest",
            http.put(format!("{base}/v2/team/app/manifests/r{i}"))
                .header("content-type", crate::common::OCI_MANIFEST)
                .body(manifest.to_vec()),
        ),
        ("GET catalog", http.get(format!("{base}/v2/_catalog"))),
    ];
    for (what, rb) in requests {
        let started = Instant::now();
        let seen = match rb.send().await {
            Ok(r) => {
                let status = r.status();
                let retry_after = r.headers().contains_key("retry-after");
                let code = if status.is_success() || what.starts_with("HEAD") {
                    None
                } else {
                    r.json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
                };
                Seen {
                    what: what.to_owned(),
                    status: Some(status),
                    retry_after,
                    code,
                    took: started.elapsed(),
                    at: started,
                }
            }
            Err(_) => Seen {
                what: what.to_owned(),
                status: None,
                retry_after: false,
                code: None,
                took: started.elapsed(),
                at: started,
            },
        };
        out.lock().unwrap().push(seen);
    }
}

/// Polls `cond` until it holds, for at most `within`.
async fn wait_until(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_across_a_database_restart_fail_cleanly_and_recover() {
    // A cluster of its own: stopping the shared one would fail the other tests.
    let Some(cluster) = testing::Cluster::start_new() else {
        return;
    };
    let reg = TestRegistry::start_with(config(cluster.fresh_database())).await;
    let (manifest, _) = reg.push_image("team/app", "1.0", "restart").await;
    let layer = berth_oci::Digest::sha256(b"layer-restart");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A client making requests all along, each bounded by a 30 s timeout.
    let client = tokio::spawn({
        let (seen, stop, base) = (seen.clone(), stop.clone(), reg.base.clone());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round(&http, &base, i, &layer, &manifest, &seen).await;
                i += 1;
            }
        }
    });
    let count =
        |pred: &dyn Fn(&Seen) -> bool| seen.lock().unwrap().iter().filter(|s| pred(s)).count();
    wait_until(
        "a few rounds before the outage",
        Duration::from_secs(20),
        || count(&|s| s.status.is_some_and(|st| st.is_success())) >= 12,
    )
    .await;

    // (Taken before: the stop itself takes a moment, during which requests fail.)
    let stopped = Instant::now();
    cluster.stop();
    wait_until("503s during the outage", Duration::from_secs(20), || {
        count(&|s| s.status == Some(StatusCode::SERVICE_UNAVAILABLE)) >= 6
    })
    .await;
    wait_for(
        &reg,
        "/readyz",
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;

    cluster.start();
    let restarted = Instant::now();
    wait_for(&reg, "/readyz", StatusCode::OK, Duration::from_secs(20)).await;
    // Recovered by itself: a full round of requests, all answered, after readiness.
    let ready = Instant::now();
    wait_until(
        "a clean round after the restart",
        Duration::from_secs(30),
        || {
            let seen = seen.lock().unwrap();
            let after: Vec<&Seen> = seen.iter().filter(|s| s.at > ready).collect();
            after.len() >= 12
                && after
                    .iter()
                    .rev()
                    .take(6)
                    .all(|s| s.status.is_some_and(|st| st.is_success()))
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .unwrap()
        .unwrap();

    let seen = seen.lock().unwrap();
    let mut unavailable = 0;
    for s in seen.iter() {
        assert!(
            s.took < Duration::from_secs(15),
            "{} took {:?} (status {:?})",
            s.what,
            s.took,
            s.status
        );
        match s.status {
            Some(st) if st.is_success() => {}
            Some(StatusCode::SERVICE_UNAVAILABLE) => {
                unavailable += 1;
                assert!(s.retry_after, "{}: a 503 without Retry-After", s.what);
                if !s.what.starts_with("HEAD") {
                    assert_eq!(s.code.as_deref(), Some("UNAVAILABLE"), "{}", s.what);
                }
                assert!(
                    s.at + s.took >= stopped && s.at <= ready,
                    "{}: a 503 outside the outage: started {:?} before the stop, {:?} after \
                     readiness returned; took {:?}",
                    s.what,
                    stopped.saturating_duration_since(s.at),
                    s.at.saturating_duration_since(ready),
                    s.took
                );
            }
            other => panic!(
                "{}: {other:?} (code {:?}) {:?} after the stop, {:?} after the restart",
                s.what,
                s.code,
                s.at.saturating_duration_since(stopped),
                s.at.saturating_duration_since(restarted)
            ),
        }
    }
    assert!(unavailable >= 6);
}
