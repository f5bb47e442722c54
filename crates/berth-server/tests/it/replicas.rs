//! Two replicas over one SeaweedFS bucket and one PostgreSQL database (issue 15,
//! "Scale-out"): what one replica writes the other serves, a chunked upload moves between
//! them, bearer tokens signed by one are accepted by the other (one shared
//! `token_key_file`), floating tags raced through both never move backwards and no
//! release tag is lost, and the OCI conformance replay passes with its requests spread
//! over the pair. The kill -9 of a replica mid-upload is in the `berth` crate's process
//! tests (`crates/berth/tests/serve/replicas.rs`): an in-process server cannot be killed.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_meta::postgres::testing;
use berth_oci::Digest;
use berth_server::accounts::Admin;
use berth_storage::s3::seaweed::{SeaweedFs, ACCESS_KEY, BUCKET, SECRET_KEY};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{error_code, image_manifest, TestRegistry, OCI_INDEX, OCI_MANIFEST};

const USER: &str = "ci";
const PW: &str = "replica-password-1";

/// Two servers sharing a bucket prefix, a database and a token key; separate data dirs.
struct Pair {
    a: TestRegistry,
    b: TestRegistry,
    /// Holds the shared token key file.
    _key_dir: tempfile::TempDir,
}

/// Starts a replica pair; `None` when the S3 or PostgreSQL tests are skipped. With
/// `accounts`, an account `ci` (pull and push everywhere) exists, so anonymous requests
/// are refused, and B's challenges name A's `/token` as the realm: a client of B gets
/// its tokens from A.
async fn pair(accounts: bool) -> Option<Pair> {
    pair_on(testing::fresh_url()?, accounts).await
}

/// [`pair`] over the database at `url`.
async fn pair_on(url: String, accounts: bool) -> Option<Pair> {
    let s3 = SeaweedFs::shared()?;
    s3.ready().await;
    // The servers read their S3 credentials from the environment, as in production;
    // every S3 test sets the same values.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("token.key");
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let config = berth_server::Config {
        storage: berth_server::config::Storage::S3,
        s3_bucket: Some(BUCKET.to_owned()),
        s3_endpoint: Some(s3.endpoint.clone()),
        s3_region: Some("us-east-1".to_owned()),
        s3_prefix: format!("replicas-{}", uuid::Uuid::new_v4().simple()),
        database_url: Some(url),
        token_key_file: Some(key_file),
        ..berth_server::Config::default()
    };
    let a = TestRegistry::start_with(config.clone()).await;
    let b = TestRegistry::start_with(berth_server::Config {
        token_realm: Some(format!("{}/token", a.base)),
        ..config.clone()
    })
    .await;
    // A server answers its first request only after its start-up checks, among them the
    // reconciliation of upload sessions with the bucket, which on a replica pair would
    // drop an upload the other replica is in the middle of creating (its state object is
    // written before its session row). So no test begins before both have finished
    // starting.
    for reg in [&a, &b] {
        wait_status(reg, "/readyz", StatusCode::OK).await;
    }
    if accounts {
        let admin = Admin::open(
            &berth_server::Config {
                data_dir: a.data_dir().to_owned(),
                ..config
            },
            "test",
        )
        .unwrap();
        admin
            .user_add(USER, PW, &["*:pull,push".parse().unwrap()])
            .await
            .unwrap();
        // The account was made beside the servers: drop what they cached.
        a.state.auth.invalidate();
        b.state.auth.invalidate();
    }
    Some(Pair {
        a,
        b,
        _key_dir: key_dir,
    })
}

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PW}"))
    )
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run ({e}): scripts/test-all installs it"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs skopeo off the runtime's worker threads (the servers share them).
async fn skopeo(args: &[&str]) -> String {
    let mut all = vec!["--insecure-policy".to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        run("skopeo", &args)
    })
    .await
    .unwrap()
}

fn host(reg: &TestRegistry) -> String {
    reg.base.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_one_replica_is_accepted_by_the_other() {
    let Some(p) = pair(true).await else {
        return;
    };
    // B's challenge sends the client to A's token endpoint.
    let r = p.b.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains(&format!("realm=\"{}/token\"", p.a.base)),
        "{challenge}"
    );
    for (issuer, user) in [(&p.a, &p.b), (&p.b, &p.a)] {
        let v: Value = issuer
            .req(
                Method::GET,
                "/token?scope=repository:team/app:pull,push&service=berth",
            )
            .header("authorization", basic())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bearer = format!("Bearer {}", v["token"].as_str().unwrap());
        let content = format!("pushed with a token of {}", issuer.base);
        let d = Digest::sha256(content.as_bytes());
        let r = user
            .req(
                Method::POST,
                &format!("/v2/team/app/blobs/uploads/?digest={d}"),
            )
            .header("authorization", &bearer)
            .body(content.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        // Read back through the issuer with the same token.
        let r = issuer
            .req(Method::GET, &format!("/v2/team/app/blobs/{d}"))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), content);
        // The token's scope holds on the other replica too.
        let r = user
            .req(Method::GET, &format!("/v2/other/app/blobs/{d}"))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}

/// Writes a blob into an OCI layout and returns its descriptor fields.
fn write_blob(layout: &std::path::Path, content: &[u8]) -> (String, usize) {
    let d = Digest::sha256(content);
    std::fs::write(layout.join("blobs/sha256").join(d.hex()), content).unwrap();
    (d.to_string(), content.len())
}

/// Writes an OCI layout holding a two-platform index tagged `v1` and returns the index
/// digest.
fn two_platform_layout(layout: &std::path::Path) -> String {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut children = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        // One layer above the multipart part size, so it crosses the bucket in parts.
        let len = if i == 0 { 6 << 20 } else { 300_000 };
        let layer: Vec<u8> = (0..len).map(|n| ((n * 7 + i * 13) % 251) as u8).collect();
        let (ld, ln) = write_blob(layout, &layer);
        let config =
            json!({"architecture":arch,"os":"linux","rootfs":{"type":"layers","diff_ids":[]}});
        let (cd, cn) = write_blob(layout, config.to_string().as_bytes());
        let manifest = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":cn},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":ld,"size":ln}]});
        let (md, mn) = write_blob(layout, &serde_json::to_vec(&manifest).unwrap());
        children.push(json!({"mediaType":OCI_MANIFEST,"digest":md,"size":mn,
            "platform":{"architecture":arch,"os":"linux"}}));
    }
    let index = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":children});
    let (id, iz) = write_blob(layout, &serde_json::to_vec(&index).unwrap());
    let top = json!({"schemaVersion":2,"manifests":[{"mediaType":OCI_INDEX,"digest":id,"size":iz,
        "annotations":{"org.opencontainers.image.ref.name":"v1"}}]});
    std::fs::write(layout.join("index.json"), top.to_string()).unwrap();
    id
}

/// The files of a layout's blob directory, sorted by name.
fn blobs_of(layout: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_through_one_replica_and_pulls_through_the_other() {
    let Some(p) = pair(true).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let index_digest = two_platform_layout(&src);
    let creds = format!("{USER}:{PW}");
    let (a, b) = (host(&p.a), host(&p.b));
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{a}/team/multi:v1"),
    ])
    .await;

    // B serves the index byte for byte (its token comes from A's realm).
    let from_b = format!("docker://{b}/team/multi:v1");
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &from_b,
    ])
    .await;
    assert_eq!(Digest::sha256(raw.as_bytes()).to_string(), index_digest);

    let out = dir.path().join("out");
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &from_b,
        &format!("oci:{}:v1", out.display()),
    ])
    .await;
    let idx: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], index_digest.as_str());
    assert_eq!(
        blobs_of(&src),
        blobs_of(&out),
        "every blob pulled from B is the one pushed to A"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_started_on_one_replica_is_finished_on_the_other() {
    let Some(p) = pair(false).await else {
        return;
    };
    // Chunks that fill a multipart part, leave a tail, and cross a part boundary.
    let blob: Vec<u8> = (0..(13 << 20) + 12_345u32)
        .map(|n| (n % 241) as u8)
        .collect();
    let cuts = [0, 6 << 20, (7 << 20) + 1, (12 << 20) + 3, blob.len()];
    let r =
        p.a.req(Method::POST, "/v2/team/big/blobs/uploads/")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut location = r.headers()["location"].to_str().unwrap().to_owned();
    for (i, w) in cuts.windows(2).enumerate() {
        // Chunks alternate: A, B, A, B.
        let via = if i % 2 == 0 { &p.a } else { &p.b };
        let r = via
            .req(Method::PATCH, &location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{}-{}", w[0], w[1] - 1))
            .body(blob[w[0]..w[1]].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "chunk {i}: {}",
            r.text().await.unwrap()
        );
        assert_eq!(r.headers()["range"], format!("0-{}", w[1] - 1).as_str());
        location = r.headers()["location"].to_str().unwrap().to_owned();
        // The other replica reports the same offset.
        let other = if i % 2 == 0 { &p.b } else { &p.a };
        let r = other.req(Method::GET, &location).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()["range"], format!("0-{}", w[1] - 1).as_str());
    }
    let d = Digest::sha256(&blob);
    let sep = if location.contains('?') { '&' } else { '?' };
    let r =
        p.b.req(Method::PUT, &format!("{location}{sep}digest={d}"))
            .send()
            .await
            .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    for reg in [&p.a, &p.b] {
        let r = reg
            .req(Method::GET, &format!("/v2/team/big/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["docker-content-digest"], d.to_string().as_str());
        let got = r.bytes().await.unwrap();
        assert_eq!(Digest::sha256(&got), d, "{} serves the blob", reg.base);
    }
}

/// The version in a manifest's `org.opencontainers.image.version` annotation.
fn version_of(manifest: &Value) -> (u64, u64, u64) {
    let v = manifest["annotations"]["org.opencontainers.image.version"]
        .as_str()
        .unwrap();
    let v = semver::Version::parse(v).unwrap();
    (v.major, v.minor, v.patch)
}

/// A release of `team/race` with its version annotation, its blobs pushed; returns the
/// manifest bytes.
async fn release(reg: &TestRegistry, patch: u64) -> Vec<u8> {
    let config =
        json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}})
            .to_string();
    let layer = format!("release 1.0.{patch}");
    let c = reg.push_blob("team/race", config.as_bytes()).await;
    let l = reg.push_blob("team/race", layer.as_bytes()).await;
    let mut m: Value = serde_json::from_slice(&image_manifest(
        &c,
        config.len(),
        &[(&l, layer.len())],
        None,
    ))
    .unwrap();
    m["annotations"] = json!({"org.opencontainers.image.version": format!("1.0.{patch}")});
    serde_json::to_vec(&m).unwrap()
}

const FLOATING: [&str; 3] = ["latest", "1", "1.0"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_pushers_on_both_replicas_never_move_a_floating_tag_back() {
    let Some(p) = pair(false).await else {
        return;
    };
    let p = Arc::new(p);
    const VERSIONS: u64 = 24;
    const PUSHERS: u64 = 8;
    let done = Arc::new(AtomicBool::new(false));

    // The reader: polls the floating tags on both replicas; what each replica serves
    // never goes back.
    let reader = {
        let (p, done) = (p.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen: BTreeMap<(usize, &str), (u64, u64, u64)> = BTreeMap::new();
            let mut reads = 0u32;
            while !done.load(Ordering::SeqCst) {
                for (i, reg) in [&p.a, &p.b].into_iter().enumerate() {
                    for tag in FLOATING {
                        let r = reg
                            .req(Method::GET, &format!("/v2/team/race/manifests/{tag}"))
                            .header("accept", OCI_MANIFEST)
                            .send()
                            .await
                            .unwrap();
                        if r.status() == StatusCode::NOT_FOUND {
                            assert!(!seen.contains_key(&(i, tag)), "{tag} disappeared");
                            continue;
                        }
                        assert_eq!(r.status(), StatusCode::OK);
                        let v = version_of(&r.json().await.unwrap());
                        let before = seen.insert((i, tag), v);
                        assert!(
                            before.is_none_or(|b| b <= v),
                            "replica {i} moved {tag} back from {before:?} to {v:?}"
                        );
                        reads += 1;
                    }
                }
            }
            reads
        })
    };

    // Pusher `k` pushes the versions `1.0.j` with `j % 4 == k % 4`, through A for
    // k < 4 and B otherwise, half of them in ascending order and half descending: every
    // version is pushed by one pusher on each replica, and late pushes of old versions
    // try to move the floating tags back.
    let mut pushers = Vec::new();
    for k in 0..PUSHERS {
        let p = p.clone();
        pushers.push(tokio::spawn(async move {
            let reg = if k < PUSHERS / 2 { &p.a } else { &p.b };
            let mut mine: Vec<u64> = (0..VERSIONS).filter(|j| j % 4 == k % 4).collect();
            if k % 2 == 1 {
                mine.reverse();
            }
            let mut refused = 0u32;
            for j in mine {
                let m = release(reg, j).await;
                let d = Digest::sha256(&m);
                // The release tag first, on its own: it must never be lost to a refusal
                // of a floating tag.
                let r = reg
                    .put_manifest("team/race", &format!("1.0.{j}"), OCI_MANIFEST, &m)
                    .await;
                assert_eq!(
                    r.status(),
                    StatusCode::CREATED,
                    "{}",
                    r.text().await.unwrap()
                );
                let r = reg
                    .req(
                        Method::PUT,
                        &format!("/v2/team/race/manifests/{d}?tag=1.0&tag=1&tag=latest"),
                    )
                    .header("content-type", OCI_MANIFEST)
                    .body(m)
                    .send()
                    .await
                    .unwrap();
                match r.status() {
                    StatusCode::CREATED => {}
                    StatusCode::CONFLICT => {
                        assert_eq!(error_code(r).await, "DENIED");
                        refused += 1;
                    }
                    s => panic!("floating tags of 1.0.{j}: {s} {}", r.text().await.unwrap()),
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in pushers {
        refused += t.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let reads = reader.await.unwrap();
    assert!(reads > 0, "the reader saw the tags");
    assert!(refused > 0, "descending pushers tried to move tags back");

    // Every release tag is there, on both replicas, and every floating tag is on the
    // highest version.
    for reg in [&p.a, &p.b] {
        let body: Value = reg
            .req(Method::GET, "/v2/team/race/tags/list")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tags: Vec<&str> = body["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        for j in 0..VERSIONS {
            assert!(
                tags.contains(&format!("1.0.{j}").as_str()),
                "1.0.{j} lost: {tags:?}"
            );
        }
        for tag in FLOATING {
            // The other replica's cache is cleared through NOTIFY: allow it a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let r = reg
                    .req(Method::GET, &format!("/v2/team/race/manifests/{tag}"))
                    .header("accept", OCI_MANIFEST)
                    .send()
                    .await
                    .unwrap();
                let v = version_of(&r.json().await.unwrap());
                if v == (1, 0, VERSIONS - 1) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} keeps {tag} on {v:?}",
                    reg.base
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A reverse proxy on loopback that sends each request to the next of `upstreams` in
/// turn, so consecutive requests of one client (one upload's POST, PATCH and PUT) land
/// on different replicas. Redirects and `Location` headers pass through unchanged: the
/// registry's are relative.
async fn round_robin(upstreams: Vec<String>) -> String {
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (next, client, upstreams) = (next.clone(), client.clone(), upstreams.clone());
        async move {
            let upstream = &upstreams[next.fetch_add(1, Ordering::SeqCst) % upstreams.len()];
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut headers = parts.headers.clone();
            headers.remove("host");
            headers.remove("content-length");
            let r = client
                .request(parts.method.clone(), format!("{upstream}{path}"))
                .headers(headers)
                .body(body)
                .send()
                .await
                .unwrap();
            let mut out = axum::response::Response::builder().status(r.status());
            for (name, value) in r.headers() {
                if name != "transfer-encoding" && name != "connection" {
                    out = out.header(name, value);
                }
            }
            out.body(axum::body::Body::from(r.bytes().await.unwrap()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_replay_passes_across_the_pair() {
    let Some(p) = pair(false).await else {
        return;
    };
    let proxy = round_robin(vec![p.a.base.clone(), p.b.base.clone()]).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/conformance/run.py"
    );
    // The replay is blocking Python: off the worker threads the servers run on.
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &proxy])
            .output()
            .expect("python3 with requests (scripts/test-all installs it)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the replay failed across the pair:\n{}\n{}",
        stdout
            .lines()
            .filter(|l| l.starts_with("FAIL"))
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.ends_with(" 0 failed"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_fails_both_replicas_cleanly_and_both_recover() {
    // A cluster of its own: stopping the shared one would fail the other tests.
    let Some(cluster) = testing::Cluster::start_new() else {
        return;
    };
    let Some(p) = pair_on(cluster.fresh_database(), false).await else {
        return;
    };
    p.a.push_image("team/app", "1.0", "before").await;
    cluster.stop();
    for reg in [&p.a, &p.b] {
        // A request that needs the database (a tag listing is never answered from the
        // manifest cache): a clean, retryable 503 within seconds, not a 500 or a hang.
        let started = Instant::now();
        let r = reg
            .req(Method::GET, "/v2/team/app/tags/list")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{}", reg.base);
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(error_code(r).await, "UNAVAILABLE");
        assert!(started.elapsed() < Duration::from_secs(15));
        wait_status(reg, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;
    }
    cluster.start();
    // Both recover by themselves: no restart, no intervention.
    for reg in [&p.a, &p.b] {
        wait_status(reg, "/readyz", StatusCode::OK).await;
    }
    p.b.push_image("team/app", "2.0", "after").await;
    for reg in [&p.a, &p.b] {
        let body: Value = reg
            .req(Method::GET, "/v2/team/app/tags/list")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["tags"], json!(["1.0", "2.0"]));
    }
}

/// Polls `GET path` until it answers `want`, for 20 seconds at most.
async fn wait_status(reg: &TestRegistry, path: &str, want: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = reg.req(Method::GET, path).send().await.unwrap().status();
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}{path} still answers {status}, not {want}",
            reg.base
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
