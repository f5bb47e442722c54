//! `berth publish` end to end: a two-platform release to Berth (atomic multi-tag push,
//! annotations, idempotence, floating tags that only move forward, an immutable-tag
//! conflict, dry runs), and the ordered fallback against CNCF Distribution.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::process::{bytes, client, digest, ServerProcess};

const SHA: &str = "860c1904a1ce19322e91ac35af1ab07466440c37";
/// The commits of later releases in `release_to_berth` (one commit builds one release).
const SHA_200: &str = "200200a1ce19322e91ac35af1ab07466440c3700";
const SHA_124: &str = "124124a1ce19322e91ac35af1ab07466440c3700";

/// Writes a one-layer image for `arch` as an OCI layout tagged `latest`.
fn image_layout(dir: &Path, arch: &str) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |b: &[u8]| {
        let d = digest(b);
        std::fs::write(dir.join("blobs/sha256").join(d.hex()), b).unwrap();
        (d.to_string(), b.len())
    };
    let (ld, ln) = put(&bytes(arch.len() as u64 * 7, 20_000));
    let cfg =
        json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
            .to_string();
    let (cd, cn) = put(cfg.as_bytes());
    let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ln}]});
    let (md, mn) = put(serde_json::to_vec(&m).unwrap().as_slice());
    let idx = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(dir.join("index.json"), idx.to_string()).unwrap();
}

fn publish(cfg: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("publish")
        .args(args)
        .env("DOCKER_CONFIG", cfg)
        // No CI here: the context comes from the flags only.
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_REF")
        .env_remove("GITLAB_CI")
        .env_remove("CI_COMMIT_SHA")
        .output()
        .unwrap()
}

fn ok_json(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn tag_digest(base: &str, repo: &str, tag: &str) -> Option<String> {
    let r = client()
        .head(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header(
            "accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await
        .unwrap();
    r.status().is_success().then(|| {
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    })
}

#[tokio::test]
async fn release_to_berth() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd, arm) = (tmp.path().join("amd64"), tmp.path().join("arm64"));
    image_layout(&amd, "amd64");
    image_layout(&arm, "arm64");
    let cfg = tmp.path().join("docker");
    let server = ServerProcess::start(&tmp.path().join("data"), &[]);
    let repo = format!("{}/team/app", server.addr);
    let srcs = [
        format!("oci:{}", amd.display()),
        format!("oci:{}", arm.display()),
    ];
    let release = |version: &str, sha: &str, extra: &[&str]| {
        let mut a: Vec<String> = srcs.to_vec();
        a.extend(
            [
                "--repo",
                &repo,
                "--version",
                version,
                "--sha",
                sha,
                "--created",
                "2026-01-01T00:00:00Z",
                "--json",
                "--quiet",
            ]
            .map(str::to_owned),
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        publish(&cfg, &refs)
    };

    // A dry run plans and pushes nothing.
    let v = ok_json(release("v1.2.3", SHA, &["--dry-run"]));
    assert_eq!(v["plan"]["tags"].as_array().unwrap().len(), 5);
    assert_eq!(tag_digest(&server.base, "team/app", "1.2.3").await, None);

    let v = ok_json(release("v1.2.3", SHA, &[]));
    // The release is also tagged with its commit, as docker/metadata-action does.
    assert_eq!(
        v["tags"],
        json!(["1.2.3", "sha-860c190", "1.2", "1", "latest"])
    );
    assert_eq!(v["atomic"], true);
    assert_eq!(v["platforms"], json!(["linux/amd64", "linux/arm64"]));
    let d123 = v["digest"].as_str().unwrap().to_owned();
    for t in ["1.2.3", "sha-860c190", "1.2", "1", "latest"] {
        assert_eq!(
            tag_digest(&server.base, "team/app", t).await.as_deref(),
            Some(d123.as_str()),
            "{t}"
        );
    }
    let index: Value = client()
        .get(format!("{}/v2/team/app/manifests/1.2.3", server.base))
        .header("accept", "application/vnd.oci.image.index.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a = &index["annotations"];
    assert_eq!(a["org.opencontainers.image.version"], "1.2.3");
    assert_eq!(a["org.opencontainers.image.revision"], SHA);
    assert_eq!(
        a["org.opencontainers.image.created"],
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(a["org.opencontainers.image.title"], "app");
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    // `berth inspect` shows the index's annotations and its (empty) referrers, in text
    // and JSON.
    let inspect = |json: bool| {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("inspect")
            .args(json.then_some("--json"))
            .arg(format!("{repo}:1.2.3"))
            .env("DOCKER_CONFIG", &cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let v: Value = serde_json::from_str(&inspect(true)).unwrap();
    assert_eq!(
        v["annotations"]["org.opencontainers.image.version"],
        "1.2.3"
    );
    assert_eq!(v["manifests"][1]["platform"], "linux/arm64");
    assert_eq!(v["referrers"], json!([]));
    let text = inspect(false);
    assert!(
        text.contains("Annotations:\n")
            && text.contains("  org.opencontainers.image.version=1.2.3\n"),
        "{text}"
    );
    assert!(text.contains("Referrers:  none"), "{text}");

    // Idempotent: the same inputs give the same digest.
    let v = ok_json(release("v1.2.3", SHA, &[]));
    assert_eq!(v["digest"], d123.as_str());

    // 2.0.0 takes latest; a 1.2 patch then moves 1.2 and 1 but never latest.
    let d200 = ok_json(release("2.0.0", SHA_200, &[]))["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = ok_json(release("1.2.4", SHA_124, &[]));
    assert_eq!(v["tags"], json!(["1.2.4", "sha-124124a", "1.2", "1"]));
    assert!(v["plan"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["tag"] == "latest" && s["reason"].as_str().unwrap().contains("2.0.0")));
    assert_eq!(
        tag_digest(&server.base, "team/app", "latest")
            .await
            .as_deref(),
        Some(d200.as_str())
    );
    let d124 = v["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        tag_digest(&server.base, "team/app", "1").await.as_deref(),
        Some(d124.as_str())
    );

    // Re-running the old release job moves nothing back.
    let v = ok_json(release("v1.2.3", SHA, &[]));
    assert_eq!(v["tags"], json!(["1.2.3", "sha-860c190"]));
    assert_eq!(
        tag_digest(&server.base, "team/app", "1.2").await.as_deref(),
        Some(d124.as_str())
    );

    // A different build under an existing release tag is refused by the server.
    let out = release("v1.2.3", "0000000000000000000000000000000000000000", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1.2.3") && err.contains("immutable"), "{err}");

    // `berth tag` moves `latest` back to 1.2.3 only with --force (issue 18: the refusal
    // told administrators to force, but only `delete` could).
    let tag = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("tag")
            .args(extra)
            .arg(format!("{repo}:1.2.3"))
            .arg("latest")
            .env("DOCKER_CONFIG", &cfg)
            .output()
            .unwrap()
    };
    let out = tag(&[]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("force"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tag_digest(&server.base, "team/app", "latest")
            .await
            .as_deref(),
        Some(d200.as_str())
    );
    let out = tag(&["--force", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tag_digest(&server.base, "team/app", "latest")
            .await
            .as_deref(),
        Some(d123.as_str())
    );

    // Release tags cannot be deleted without --force (an administrator's override).
    let del = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("delete")
            .args(extra)
            .arg(format!("{repo}:1.2.4"))
            .env("DOCKER_CONFIG", &cfg)
            .output()
            .unwrap()
    };
    let out = del(&[]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = del(&["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tag_digest(&server.base, "team/app", "1.2.4").await, None);

    // Without a version: branch and sha tags.
    let mut a: Vec<String> = srcs.to_vec();
    a.extend(
        [
            "--repo",
            &repo,
            "--branch",
            "feature/Login",
            "--sha",
            SHA,
            "--json",
            "--quiet",
        ]
        .map(str::to_owned),
    );
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let v = ok_json(publish(&cfg, &refs));
    assert_eq!(v["tags"], json!(["sha-860c190", "feature-Login"]));
}

struct Distribution(Child);

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_distribution(dir: &Path) -> (Distribution, String) {
    // Distribution cannot report an ephemeral port, so ask the kernel for a free one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("distribution.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            dir.join("dist-data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry is installed by scripts/test-all");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "distribution did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Distribution(child), addr)
}

#[tokio::test]
async fn ordered_fallback_on_distribution() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    image_layout(&img, "amd64");
    let (_dist, addr) = start_distribution(tmp.path());
    let cfg = tmp.path().join("docker");
    let src = format!("oci:{}", img.display());
    let repo = format!("{addr}/team/app");
    let v = ok_json(publish(
        &cfg,
        &[
            &src,
            "--repo",
            &repo,
            "--version",
            "1.0.0",
            "--sha",
            SHA,
            "--created",
            "2026-01-01T00:00:00Z",
            "--json",
            "--quiet",
        ],
    ));
    assert_eq!(v["atomic"], false, "Distribution 2.8 ignores ?tag=");
    let d = v["digest"].as_str().unwrap().to_owned();
    for t in ["1.0.0", "1.0", "1", "latest"] {
        assert_eq!(
            tag_digest(&format!("http://{addr}"), "team/app", t)
                .await
                .as_deref(),
            Some(d.as_str()),
            "{t}"
        );
    }
}

/// A reader polling during releases never sees a floating tag ahead of `latest`: with
/// one atomic multi-tag push, `1.0` read before `latest` is never newer than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_mixed_release() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    image_layout(&img, "amd64");
    let cfg = tmp.path().join("docker");
    let server = ServerProcess::start(&tmp.path().join("data"), &[]);
    let repo = format!("{}/team/app", server.addr);
    let src = format!("oci:{}", img.display());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let base = server.base.clone();
    let stop2 = stop.clone();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let minor = tag_digest(&base, "team/app", "1.0").await;
            let latest = tag_digest(&base, "team/app", "latest").await;
            seen.push((minor, latest));
        }
        seen
    });
    let mut digests = Vec::new();
    for patch in 0..8 {
        let version = format!("1.0.{patch}");
        let v = ok_json(publish(
            &cfg,
            &[
                &src,
                "--repo",
                &repo,
                "--version",
                &version,
                "--sha",
                SHA,
                "--created",
                "2026-01-01T00:00:00Z",
                "--json",
                "--quiet",
            ],
        ));
        assert_eq!(v["atomic"], true);
        digests.push(v["digest"].as_str().unwrap().to_owned());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.unwrap();
    let rank = |d: &Option<String>| d.as_ref().and_then(|d| digests.iter().position(|x| x == d));
    let mut checked = 0;
    for (minor, latest) in &seen {
        if let (Some(m), Some(l)) = (rank(minor), rank(latest)) {
            assert!(
                l >= m,
                "1.0 was at release {m} but latest, read after it, at {l}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "the reader observed no release");
}

/// Runs a berth client command with the test's Docker config and the key's password.
fn berth_cmd(cfg: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("DOCKER_CONFIG", cfg)
        .env("COSIGN_PASSWORD", "carried")
        // No CI here: a publish takes its context from the flags only.
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_REF")
        .env_remove("GITLAB_CI")
        .env_remove("CI_COMMIT_SHA")
        .output()
        .unwrap()
}

fn berth_ok(cfg: &Path, args: &[&str]) -> String {
    let out = berth_cmd(cfg, args);
    assert!(
        out.status.success(),
        "berth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Copies carry their trust: a release published to Berth with `--sign-key` (a bundle
/// referrer per manifest) and signed once more in cosign's v2 layout is copied to CNCF
/// Distribution (no referrers API: the tag schema), and `berth verify` on Distribution
/// finds both signatures valid; a key that did not sign finds none.
#[tokio::test]
async fn signatures_stay_verifiable_after_a_copy_to_distribution() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("docker");
    let img = tmp.path().join("img");
    image_layout(&img, "amd64");
    let (key, public, other) = (
        tmp.path().join("cosign.key"),
        tmp.path().join("cosign.pub"),
        tmp.path().join("other.pub"),
    );
    for (k, p) in [(&key, &public), (&tmp.path().join("other.key"), &other)] {
        berth_ok(
            &cfg,
            &[
                "key",
                "generate",
                "--output-key",
                k.to_str().unwrap(),
                "--output-pub",
                p.to_str().unwrap(),
            ],
        );
    }
    let server = ServerProcess::start(&tmp.path().join("data"), &[]);
    let src = format!("oci:{}", img.display());
    let repo = format!("{}/team/app", server.addr);
    ok_json(berth_cmd(
        &cfg,
        &[
            "publish",
            &src,
            "--repo",
            &repo,
            "--version",
            "1.0.0",
            "--sha",
            SHA,
            "--sign-key",
            key.to_str().unwrap(),
            "--json",
        ],
    ));
    berth_ok(
        &cfg,
        &[
            "sign",
            &format!("{repo}:1.0.0"),
            "--key",
            key.to_str().unwrap(),
            "--legacy",
        ],
    );
    let (_dist, addr) = start_distribution(tmp.path());
    let far = format!("{addr}/mirror/app");
    berth_ok(
        &cfg,
        &["copy", &format!("{repo}:1.0.0"), &format!("{far}:1.0.0")],
    );
    let out = berth_ok(
        &cfg,
        &[
            "verify",
            &format!("{far}:1.0.0"),
            "--key",
            public.to_str().unwrap(),
            "--json",
        ],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    let text = report.to_string();
    assert!(text.contains("\"bundle\""), "{text}");
    assert!(text.contains("\"simple-signing\""), "{text}");
    let stranger = berth_cmd(
        &cfg,
        &[
            "verify",
            &format!("{far}:1.0.0"),
            "--key",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(stranger.status.code(), Some(7), "a key that did not sign");
}
