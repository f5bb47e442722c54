//! The pull-through mirror (`[[mirror]]`): a second Berth, or a fake registry, as the
//! upstream on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_oci::Digest;
use reqwest::{Method, StatusCode};

use crate::common::{error_code, TestRegistry, OCI_MANIFEST};

fn mirror_config(upstream: &str, tag_ttl: Duration) -> berth_server::Config {
    berth_server::Config {
        mirror: vec![berth_server::service::MirrorRule {
            prefix: "docker.io".into(),
            upstream: upstream.into(),
            tag_ttl: Some(tag_ttl),
            credentials: None,
        }],
        ..Default::default()
    }
}

async fn get(reg: &TestRegistry, path: &str) -> reqwest::Response {
    reg.req(Method::GET, path)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
}

/// The sum of `berth_http_requests_total` samples of `route` and `method` with status
/// 200 in a registry's metrics.
async fn served(reg: &TestRegistry, route: &str, method: &str) -> u64 {
    let text = get(reg, "/metrics").await.text().await.unwrap();
    let prefix = format!(
        "berth_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"200\"}}"
    );
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn pulls_through_and_serves_the_cache_when_the_upstream_is_down() {
    let upstream = TestRegistry::start().await;
    let (manifest, digest) = upstream.push_image("library/alpine", "3.20", "one").await;
    // A TTL of zero asks the upstream on every pull, so a stopped upstream shows at once.
    let mirror = TestRegistry::start_with(mirror_config(&upstream.base, Duration::ZERO)).await;

    let r = get(&mirror, "/v2/docker.io/library/alpine/manifests/3.20").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["docker-content-digest"].to_str().unwrap(),
        digest.to_string()
    );
    assert!(r.headers().get("x-berth-mirror-stale").is_none());
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = parsed["layers"][0]["digest"].as_str().unwrap().to_owned();
    let config = parsed["config"]["digest"].as_str().unwrap().to_owned();
    let r = get(
        &mirror,
        &format!("/v2/docker.io/library/alpine/blobs/{layer}"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), "layer-one".as_bytes());

    // containerd's form: the upstream registry in `ns`, Docker Hub's `library/` implied.
    let r = get(&mirror, "/v2/alpine/manifests/3.20?ns=docker.io").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let r = get(&mirror, &format!("/v2/alpine/blobs/{config}?ns=docker.io")).await;
    assert_eq!(r.status(), StatusCode::OK);

    // Pushes and deletions under the prefix are refused.
    let r = mirror
        .req(Method::POST, "/v2/docker.io/library/alpine/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body = r.text().await.unwrap();
    assert!(body.contains("DENIED"), "{body}");
    assert!(
        body.contains("repository docker.io/library/alpine is a read-only mirror of http://"),
        "{body}"
    );
    let r = mirror
        .put_manifest("docker.io/library/alpine", "3.21", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(error_code(r).await, "DENIED");

    // The upstream moves its tag: the mirror follows.
    let (moved, moved_digest) = upstream.push_image("library/alpine", "3.20", "two").await;
    let r = get(&mirror, "/v2/docker.io/library/alpine/manifests/3.20").await;
    assert_eq!(
        r.headers()["docker-content-digest"].to_str().unwrap(),
        moved_digest.to_string()
    );
    assert_eq!(r.bytes().await.unwrap(), moved);

    // A signature pushed upstream is listed by the mirror's referrers API (and cached).
    let sig_config = upstream.push_blob("library/alpine", b"{}").await;
    let subject = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": moved_digest.to_string(), "size": moved.len()});
    let sig = crate::common::image_manifest(&sig_config, 2, &[], Some(subject));
    let sig_digest = Digest::sha256(&sig);
    let r = upstream
        .put_manifest(
            "library/alpine",
            &sig_digest.to_string(),
            OCI_MANIFEST,
            &sig,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let referrers_path = format!("/v2/docker.io/library/alpine/referrers/{moved_digest}");
    let listed = get(&mirror, &referrers_path).await.text().await.unwrap();
    assert!(listed.contains(&sig_digest.to_string()), "{listed}");

    // The upstream stops: what was pulled is still served, the tag marked stale.
    let _kept = upstream.stop().await;
    let r = get(&mirror, "/v2/docker.io/library/alpine/manifests/3.20").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-berth-mirror-stale"], "true");
    assert_eq!(r.headers()["warning"], "110 - \"Response is stale\"");
    assert_eq!(r.bytes().await.unwrap(), moved);
    let r = get(
        &mirror,
        &format!("/v2/docker.io/library/alpine/manifests/{digest}"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("x-berth-mirror-stale").is_none());
    let r = get(
        &mirror,
        &format!("/v2/docker.io/library/alpine/blobs/{layer}"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), "layer-one".as_bytes());
    let listed = get(&mirror, &referrers_path).await.text().await.unwrap();
    assert!(listed.contains(&sig_digest.to_string()), "{listed}");
    // What was never pulled cannot be served.
    let r = get(&mirror, "/v2/docker.io/library/alpine/manifests/edge").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = get(&mirror, "/v2/docker.io/library/alpine/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn unknown_upstream_content_is_unknown_here() {
    let upstream = TestRegistry::start().await;
    let mirror =
        TestRegistry::start_with(mirror_config(&upstream.base, Duration::from_secs(600))).await;
    let r = get(&mirror, "/v2/docker.io/library/nothing/manifests/1").await;
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = get(
        &mirror,
        &format!(
            "/v2/docker.io/library/nothing/blobs/{}",
            Digest::sha256(b"x")
        ),
    )
    .await;
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn concurrent_pulls_of_an_uncached_blob_fetch_it_once() {
    const SIZE: usize = 256 << 20;
    let upstream = TestRegistry::start().await;
    let content: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let digest = upstream.push_blob("library/big", &content).await;
    drop(content);
    let before = served(&upstream, "blob", "GET").await;
    let mirror =
        TestRegistry::start_with(mirror_config(&upstream.base, Duration::from_secs(600))).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let url = mirror.url(&format!("/v2/docker.io/library/big/blobs/{digest}"));
    let pulls = (0..16).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let mut r = http.get(&url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let mut hasher = berth_oci::Hasher::new(berth_oci::Algorithm::Sha256);
            let mut n = 0usize;
            while let Some(chunk) = r.chunk().await.unwrap() {
                n += chunk.len();
                hasher.update(&chunk);
            }
            (n, hasher.finish())
        })
    });
    for pull in futures_util::future::join_all(pulls).await {
        let (n, got) = pull.unwrap();
        assert_eq!(n, SIZE);
        assert_eq!(got, digest);
    }
    assert_eq!(served(&upstream, "blob", "GET").await - before, 1);
}

/// A fake upstream that answers every blob request with bytes that do not match the
/// digest asked for, and counts the downloads.
async fn corrupt_upstream(gets: Arc<AtomicUsize>) -> (String, tokio::task::JoinHandle<()>) {
    use axum::http::{header, Method as M};
    let app = axum::Router::new()
        .route("/v2/", axum::routing::get(|| async { "{}" }))
        .fallback(move |req: axum::extract::Request| {
            let gets = gets.clone();
            async move {
                let body = b"not what you asked for".to_vec();
                if req.method() == M::GET {
                    gets.fetch_add(1, Ordering::SeqCst);
                }
                let mut r = axum::response::Response::new(axum::body::Body::from(
                    if req.method() == M::HEAD {
                        Vec::new()
                    } else {
                        body.clone()
                    },
                ));
                r.headers_mut().insert(
                    header::CONTENT_LENGTH,
                    body.len().to_string().parse().unwrap(),
                );
                r
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn a_corrupted_upstream_blob_is_refused_and_not_stored() {
    let gets = Arc::new(AtomicUsize::new(0));
    let (base, task) = corrupt_upstream(gets.clone()).await;
    let mirror = TestRegistry::start_with(mirror_config(&base, Duration::from_secs(600))).await;
    let digest = Digest::sha256(b"the real content");
    let path = format!("/v2/docker.io/library/bad/blobs/{digest}");
    let r = get(&mirror, &path).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert!(body.contains("was not stored"), "{body}");
    // Nothing was stored: the next pull asks the upstream again and is refused again.
    let r = get(&mirror, &path).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(gets.load(Ordering::SeqCst), 2);
    let repo = berth_oci::RepoName::parse("docker.io/library/bad").unwrap();
    assert!(matches!(
        mirror.state.registry.blob_check(&repo, &digest).await,
        Err(berth_server::service::RegistryError::BlobUnknown { .. })
    ));
    task.abort();
}

/// CNCF Distribution (`docker-registry`) on a loopback port, killed on drop.
pub struct Distribution {
    pub base: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Distribution {
    pub fn start() -> Distribution {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker-registry is installed by scripts/test-all");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let (false, Some(rest)) = (sent, line.split("listening on ").nth(1)) {
                    let _ = tx.send(rest.split('"').next().unwrap_or("").to_owned());
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("docker-registry reports its address within 20s");
        Distribution {
            base: format!("http://{addr}"),
            child,
            _dir: dir,
        }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes a blob to any registry with a POST then a PUT (what every registry takes).
async fn push_blob_to(http: &reqwest::Client, base: &str, repo: &str, bytes: &[u8]) -> Digest {
    let d = Digest::sha256(bytes);
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("{base}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = http
        .put(format!("{url}{sep}digest={d}"))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    d
}

/// Pushes a real single-file image (a gzip layer podman can unpack) and returns its
/// manifest digest.
async fn push_real_image(base: &str, repo: &str, tag: &str) -> Digest {
    let http = reqwest::Client::new();
    let content = format!("mirrored {repo}:{tag}\n");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "etc/berth-mirror", content.as_bytes())
        .unwrap();
    let tar = b.into_inner().unwrap();
    let diff_id = Digest::sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let layer = gz.finish().unwrap();
    let l = push_blob_to(&http, base, repo, &layer).await;
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    })
    .to_string();
    let c = push_blob_to(&http, base, repo, config.as_bytes()).await;
    let m = crate::common::image_manifest(&c, config.len(), &[(&l, layer.len())], None);
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    Digest::sha256(&m)
}

fn tool(name: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is installed by scripts/test-all: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// skopeo copies an image through the mirror into an OCI layout; returns the digest
/// of the manifest it wrote.
fn skopeo_pull(image: &str, into: &std::path::Path) -> Digest {
    let dest = format!("oci:{}:x", into.display());
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--preserve-digests",
            &format!("docker://{image}"),
            &dest,
        ],
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(into.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn podman_pull(store: &std::path::Path, image: &str) -> String {
    let root = format!("--root={}", store.join("root").display());
    let runroot = format!("--runroot={}", store.join("run").display());
    let common = [
        "--storage-driver=vfs",
        root.as_str(),
        runroot.as_str(),
        "--events-backend=file",
        "--cgroup-manager=cgroupfs",
    ];
    let mut pull = common.to_vec();
    pull.extend_from_slice(&["pull", "-q", "--tls-verify=false", image]);
    tool("podman", &pull);
    let mut inspect = common.to_vec();
    inspect.extend_from_slice(&["image", "inspect", "--format", "{{.Digest}}", image]);
    tool("podman", &inspect).trim().to_owned()
}

#[tokio::test]
async fn skopeo_and_podman_pull_through_berth_and_distribution_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let berth = TestRegistry::start().await;
    let distribution = Distribution::start();
    let from_berth = push_real_image(&berth.base, "library/tiny", "1").await;
    let from_distribution = push_real_image(&distribution.base, "team/tiny", "1").await;
    let mut config = mirror_config(&berth.base, Duration::ZERO);
    config.mirror.push(berth_server::service::MirrorRule {
        prefix: "dist".into(),
        upstream: distribution.base.clone(),
        tag_ttl: Some(Duration::ZERO),
        credentials: None,
    });
    let mirror = TestRegistry::start_with(config).await;
    let host = mirror.base.trim_start_matches("http://").to_owned();
    let cases = [
        (
            format!("{host}/docker.io/library/tiny:1"),
            from_berth.clone(),
        ),
        (
            format!("{host}/dist/team/tiny:1"),
            from_distribution.clone(),
        ),
    ];
    for (i, (image, digest)) in cases.iter().enumerate() {
        let image = image.clone();
        let out = dir.path().join(format!("skopeo-{i}"));
        let got = tokio::task::spawn_blocking(move || skopeo_pull(&image, &out))
            .await
            .unwrap();
        assert_eq!(&got, digest);
    }
    // podman pulls what skopeo cached, and the rest from the upstream.
    let (store, image) = (dir.path().join("podman"), cases[1].0.clone());
    let got = tokio::task::spawn_blocking(move || podman_pull(&store, &image))
        .await
        .unwrap();
    assert_eq!(got, from_distribution.to_string());

    // Both upstreams stop: cached images still pull.
    let _kept = berth.stop().await;
    drop(distribution);
    for (i, (image, digest)) in cases.iter().enumerate() {
        let image = image.clone();
        let out = dir.path().join(format!("offline-{i}"));
        let got = tokio::task::spawn_blocking(move || skopeo_pull(&image, &out))
            .await
            .unwrap();
        assert_eq!(&got, digest);
    }
    let (store, image) = (dir.path().join("podman-offline"), cases[0].0.clone());
    let got = tokio::task::spawn_blocking(move || podman_pull(&store, &image))
        .await
        .unwrap();
    assert_eq!(got, from_berth.to_string());
}

#[tokio::test]
async fn collection_and_scrub_respect_partly_fetched_mirrored_images() {
    use berth_server::events::Actor;
    use berth_server::service::{GcOptions, ScrubOptions};
    let upstream = TestRegistry::start().await;
    let (manifest, _) = upstream.push_image("library/app", "1", "gc").await;
    let mirror =
        TestRegistry::start_with(mirror_config(&upstream.base, Duration::from_secs(600))).await;
    let r = get(&mirror, "/v2/docker.io/library/app/manifests/1").await;
    assert_eq!(r.status(), StatusCode::OK);
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = parsed["layers"][0]["digest"].as_str().unwrap().to_owned();
    let r = get(&mirror, &format!("/v2/docker.io/library/app/blobs/{layer}")).await;
    assert_eq!(r.status(), StatusCode::OK);

    // The config was never pulled: not a missing blob, just not fetched yet.
    let report = mirror
        .state
        .registry
        .scrub(ScrubOptions {
            repair: false,
            pace: None,
        })
        .await
        .unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert_eq!(report.checked, 1);
    // The fetched layer is referenced by the cached manifest: collection keeps it.
    let actor = Actor {
        name: "test".into(),
        client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    };
    let gc = GcOptions {
        grace: Some(Duration::ZERO),
        ..GcOptions::default()
    };
    let report = mirror.state.registry.gc(gc, actor).await.unwrap();
    assert_eq!(report.blobs_deleted, 0);
    let _kept = upstream.stop().await;
    let r = get(&mirror, &format!("/v2/docker.io/library/app/blobs/{layer}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), "layer-gc".as_bytes());
}

/// A fake upstream holding one blob, `content`, under whatever digest is asked for: a
/// GET sends the first half at once and the rest only when the test opens the gate. It
/// counts the GETs.
struct GatedUpstream {
    base: String,
    gets: Arc<AtomicUsize>,
    gate: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl GatedUpstream {
    async fn start(content: bytes::Bytes) -> GatedUpstream {
        use axum::http::{header, Method as M};
        let gets = Arc::new(AtomicUsize::new(0));
        let (gate, opened) = tokio::sync::watch::channel(false);
        let counted = gets.clone();
        let app = axum::Router::new()
            .route("/v2/", axum::routing::get(|| async { "{}" }))
            .fallback(move |req: axum::extract::Request| {
                let (gets, content, mut opened) =
                    (counted.clone(), content.clone(), opened.clone());
                async move {
                    let len = content.len();
                    let body = if req.method() == M::HEAD {
                        // A body of no announced size, so that the server keeps the
                        // Content-Length set below (an empty body would set it to 0).
                        axum::body::Body::from_stream(futures_util::stream::empty::<
                            Result<bytes::Bytes, std::convert::Infallible>,
                        >())
                    } else {
                        gets.fetch_add(1, Ordering::SeqCst);
                        let half = len / 2;
                        let first: Vec<Result<bytes::Bytes, std::convert::Infallible>> = (0..half)
                            .step_by(64 << 10)
                            .map(|at| Ok(content.slice(at..(at + (64 << 10)).min(half))))
                            .collect();
                        let rest = content.slice(half..);
                        let second = futures_util::stream::once(async move {
                            let _ = opened.wait_for(|open| *open).await;
                            Ok(rest)
                        });
                        axum::body::Body::from_stream(futures_util::StreamExt::chain(
                            futures_util::stream::iter(first),
                            second,
                        ))
                    };
                    let mut r = axum::response::Response::new(body);
                    r.headers_mut()
                        .insert(header::CONTENT_LENGTH, len.to_string().parse().unwrap());
                    r
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        GatedUpstream {
            base: format!("http://{addr}"),
            gets,
            gate,
            task,
        }
    }

    fn release(&self) {
        self.gate.send_replace(true);
    }
}

/// Content of `len` bytes that no two offsets of a small period share.
fn pattern(len: usize) -> bytes::Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Reads `r` until `buf` holds at least `n` bytes (at most 20 s).
async fn read_until(r: &mut reqwest::Response, buf: &mut Vec<u8>, n: usize) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while buf.len() < n {
            let chunk = r.chunk().await.unwrap().expect("the body goes on");
            buf.extend_from_slice(&chunk);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} bytes arrived within 20 s", buf.len()));
}

/// Reads the rest of `r` into `buf` (at most 60 s); the body's error, if it ends with one.
async fn read_rest(r: &mut reqwest::Response, buf: &mut Vec<u8>) -> Result<(), reqwest::Error> {
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = r.chunk().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    })
    .await
    .expect("the body ends within 60 s")
}

/// Waits until the mirror has stored `digest` in `repo` (at most 30 s).
async fn stored(mirror: &TestRegistry, repo: &str, digest: &Digest) -> u64 {
    let repo = berth_oci::RepoName::parse(repo).unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(size) = mirror.state.registry.blob_check(&repo, digest).await {
                return size;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the blob is stored within 30 s")
}

#[tokio::test]
async fn a_pull_streams_the_blob_while_the_upstream_sends_it() {
    const SIZE: usize = 4 << 20;
    let content = pattern(SIZE);
    let digest = Digest::sha256(&content);
    let upstream = GatedUpstream::start(content.clone()).await;
    let mirror =
        TestRegistry::start_with(mirror_config(&upstream.base, Duration::from_secs(600))).await;
    let path = format!("/v2/docker.io/library/big/blobs/{digest}");

    let mut r = get(&mirror, &path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.content_length(), Some(SIZE as u64));
    assert_eq!(r.headers()["docker-content-digest"], digest.to_string());
    // The first half arrives while the upstream still holds back the second.
    let mut got = Vec::new();
    read_until(&mut r, &mut got, SIZE / 2).await;
    assert_eq!(got.len(), SIZE / 2, "nothing the upstream has not sent");
    assert_eq!(got[..], content[..SIZE / 2]);
    let repo = berth_oci::RepoName::parse("docker.io/library/big").unwrap();
    assert!(
        mirror
            .state
            .registry
            .blob_check(&repo, &digest)
            .await
            .is_err(),
        "not stored before it is complete"
    );

    upstream.release();
    read_rest(&mut r, &mut got).await.unwrap();
    assert_eq!(got.len(), SIZE);
    assert!(got[..] == content[..], "the same bytes");
    assert_eq!(
        stored(&mirror, "docker.io/library/big", &digest).await,
        SIZE as u64
    );
    assert_eq!(upstream.gets.load(Ordering::SeqCst), 1);
    // The next pull is served from the cache.
    let r = get(&mirror, &path).await;
    assert_eq!(r.bytes().await.unwrap(), content);
    assert_eq!(upstream.gets.load(Ordering::SeqCst), 1);
    upstream.task.abort();
}

#[tokio::test]
async fn sixteen_pulls_share_one_download_and_all_stream() {
    const SIZE: usize = 2 << 20;
    let content = pattern(SIZE);
    let digest = Digest::sha256(&content);
    let upstream = GatedUpstream::start(content.clone()).await;
    let mirror =
        TestRegistry::start_with(mirror_config(&upstream.base, Duration::from_secs(600))).await;
    let url = mirror.url(&format!("/v2/docker.io/library/shared/blobs/{digest}"));
    let (halves_tx, mut halves) = tokio::sync::mpsc::channel(16);
    let pulls: Vec<_> = (0..16)
        .map(|_| {
            let (url, halves_tx) = (url.clone(), halves_tx.clone());
            tokio::spawn(async move {
                // One connection each: sixteen clients, not one client's pool.
                let http = reqwest::Client::new();
                let mut r = http.get(&url).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let mut got = Vec::new();
                read_until(&mut r, &mut got, SIZE / 2).await;
                halves_tx.send(got.len()).await.unwrap();
                read_rest(&mut r, &mut got).await.unwrap();
                Digest::sha256(&got)
            })
        })
        .collect();
    // Every client has the first half before the upstream sends the second.
    for _ in 0..16 {
        let n = tokio::time::timeout(Duration::from_secs(30), halves.recv())
            .await
            .expect("every client streams the first half")
            .unwrap();
        assert_eq!(n, SIZE / 2);
    }
    upstream.release();
    for pull in futures_util::future::join_all(pulls).await {
        assert_eq!(pull.unwrap(), digest);
    }
    assert_eq!(upstream.gets.load(Ordering::SeqCst), 1, "one upstream GET");
    assert_eq!(
        stored(&mirror, "docker.io/library/shared", &digest).await,
        SIZE as u64
    );
    upstream.task.abort();
}

#[tokio::test]
async fn a_client_that_leaves_does_not_stop_the_download() {
    const SIZE: usize = 2 << 20;
    let content = pattern(SIZE);
    let digest = Digest::sha256(&content);
    let upstream = GatedUpstream::start(content.clone()).await;
    let mirror =
        TestRegistry::start_with(mirror_config(&upstream.base, Duration::from_secs(600))).await;
    let path = format!("/v2/docker.io/library/left/blobs/{digest}");
    let mut r = get(&mirror, &path).await;
    let mut got = Vec::new();
    read_until(&mut r, &mut got, SIZE / 2).await;
    // The only client goes away mid-download.
    drop(r);
    upstream.release();
    assert_eq!(
        stored(&mirror, "docker.io/library/left", &digest).await,
        SIZE as u64
    );
    // With the upstream gone, the cache serves the whole blob.
    upstream.task.abort();
    let _ = upstream.task.await;
    let r = get(&mirror, &path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), content);
    assert_eq!(upstream.gets.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_corrupted_blob_ends_every_streaming_body_with_an_error() {
    const SIZE: usize = 2 << 20;
    let content = pattern(SIZE);
    let digest = Digest::sha256(&content);
    // The upstream sends the right length with one byte changed at the end.
    let mut wrong = content.to_vec();
    wrong[SIZE - 1] ^= 0xff;
    let upstream = GatedUpstream::start(wrong.into()).await;
    let mirror =
        TestRegistry::start_with(mirror_config(&upstream.base, Duration::from_secs(600))).await;
    let url = mirror.url(&format!("/v2/docker.io/library/bad/blobs/{digest}"));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut r = reqwest::Client::new().get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let mut got = Vec::new();
        read_until(&mut r, &mut got, SIZE / 2).await;
        clients.push((r, got));
    }
    upstream.release();
    for (mut r, mut got) in clients {
        let end = read_rest(&mut r, &mut got).await;
        assert!(end.is_err(), "the body ends with an error");
        assert!(
            got.len() as u64 <= SIZE as u64 - berth_server::service::HELD_BACK,
            "the end of the body is held back: {} bytes arrived",
            got.len()
        );
        assert!(got[..] == content[..got.len()]);
    }
    // Nothing was stored: the next pull asks the upstream again.
    let repo = berth_oci::RepoName::parse("docker.io/library/bad").unwrap();
    assert!(matches!(
        mirror.state.registry.blob_check(&repo, &digest).await,
        Err(berth_server::service::RegistryError::BlobUnknown { .. })
    ));
    assert_eq!(upstream.gets.load(Ordering::SeqCst), 1);
    // The upstream now sends everything at once: the download may fail before the
    // answer starts (an error answer) or after (a body that ends with an error).
    let mut r = reqwest::Client::new().get(&url).send().await.unwrap();
    if r.status() == StatusCode::OK {
        assert!(read_rest(&mut r, &mut Vec::new()).await.is_err());
    } else {
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(upstream.gets.load(Ordering::SeqCst), 2);
    upstream.task.abort();
}
