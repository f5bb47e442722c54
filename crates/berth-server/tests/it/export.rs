//! Tarball downloads (`/api/v1/export/<name>:<tag>`): a two-platform image exported per
//! platform as docker-archive and oci-archive loads with skopeo and podman with the
//! pushed digests; ranges resume to the same bytes; HEAD gives the length; the pull
//! rule applies; artifacts are refused; a download counts once; memory stays flat.

use std::path::Path;
use std::process::Command;

use berth_oci::Digest;
use berth_server::accounts::Admin;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{error_code, TestRegistry, OCI_INDEX, OCI_MANIFEST};

/// One platform image as pushed: its manifest, config and layer digests.
struct Pushed {
    manifest: Digest,
    config: Digest,
    layer: Digest,
    /// The digest of the layer uncompressed (the config's diff_id).
    diff_id: Digest,
    /// The manifest's length in bytes.
    size: usize,
}

/// A layer tarball holding one file, gzip-compressed or not.
fn layer(content: &str, gzip: bool) -> (Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "etc/berth-export", content.as_bytes())
        .unwrap();
    let tar = b.into_inner().unwrap();
    let diff_id = Digest::sha256(&tar);
    if !gzip {
        return (tar, diff_id);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

async fn push_platform(reg: &TestRegistry, repo: &str, arch: &str, gzip: bool) -> Pushed {
    let (bytes, diff_id) = layer(&format!("built for {arch}\n"), gzip);
    let l = reg.push_blob(repo, &bytes).await;
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": [format!("ARCH={arch}")]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    })
    .to_string();
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let layer_type = if gzip {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    };
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.to_string(), "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": l.to_string(), "size": bytes.len()}],
    }))
    .unwrap();
    let d = Digest::sha256(&m);
    let r = reg
        .put_manifest(repo, &d.to_string(), OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    Pushed {
        manifest: d,
        config: c,
        layer: l,
        diff_id,
        size: m.len(),
    }
}

/// Pushes an index of linux/amd64 (uncompressed layer) and linux/arm64 (gzip layer)
/// under `tag`.
async fn push_two_platforms(reg: &TestRegistry, repo: &str, tag: &str) -> (Digest, Pushed, Pushed) {
    let amd = push_platform(reg, repo, "amd64", false).await;
    let arm = push_platform(reg, repo, "arm64", true).await;
    let entry = |p: &Pushed, arch: &str| {
        json!({"mediaType": OCI_MANIFEST, "digest": p.manifest.to_string(), "size": p.size,
               "platform": {"os": "linux", "architecture": arch}})
    };
    let entries = vec![entry(&amd, "amd64"), entry(&arm, "arm64")];
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
    }))
    .unwrap();
    let r = reg.put_manifest(repo, tag, OCI_INDEX, &index).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (Digest::sha256(&index), amd, arm)
}

async fn download(reg: &TestRegistry, path: &str) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let r = reg.req(Method::GET, path).send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap().to_vec();
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    (headers, body)
}

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name)
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

fn podman(store: &Path, args: &[&str]) -> String {
    let root = format!("--root={}", store.join("root").display());
    let runroot = format!("--runroot={}", store.join("run").display());
    let mut all = vec![
        "--storage-driver=vfs",
        root.as_str(),
        runroot.as_str(),
        "--events-backend=file",
        "--cgroup-manager=cgroupfs",
    ];
    all.extend_from_slice(args);
    tool("podman", &all)
}

/// The image manifest of the only image of an OCI layout directory.
fn layout_image(dir: &Path) -> (Digest, Value) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let d: Digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let m = std::fs::read(dir.join("blobs/sha256").join(d.hex())).unwrap();
    (d, serde_json::from_slice(&m).unwrap())
}

fn tar_names(tarball: &[u8]) -> Vec<String> {
    tar::Archive::new(tarball)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_platform_loads_with_skopeo_and_podman_with_the_pushed_digests() {
    let reg = TestRegistry::start().await;
    let (_, amd, arm) = push_two_platforms(&reg, "team/app", "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    for (arch, pushed) in [("amd64", &amd), ("arm64", &arm)] {
        // docker-archive (the default format).
        let (headers, body) = download(
            &reg,
            &format!("/api/v1/export/team/app:1.0?platform=linux/{arch}"),
        )
        .await;
        assert_eq!(headers["content-length"], body.len().to_string().as_str());
        assert_eq!(headers["content-type"], "application/x-tar");
        assert_eq!(headers["accept-ranges"], "bytes");
        assert_eq!(
            headers["content-disposition"],
            format!("attachment; filename=\"team_app_1.0_linux-{arch}.tar\"").as_str()
        );
        let names = tar_names(&body);
        assert!(names.contains(&"manifest.json".to_owned()), "{names:?}");
        let file = dir.path().join(format!("{arch}-docker.tar"));
        std::fs::write(&file, &body).unwrap();

        // skopeo reads it (into `dir:`, which keeps the Docker manifest and config as
        // they are): the config is the pushed one, and the layer's digest is the pushed
        // layer's uncompressed digest (skopeo decompresses docker-archive layers).
        let out = dir.path().join(format!("{arch}-skopeo"));
        tool(
            "skopeo",
            &[
                "copy",
                &format!("docker-archive:{}", file.display()),
                &format!("dir:{}", out.display()),
            ],
        );
        let m: Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["config"]["digest"], pushed.config.to_string());
        assert_eq!(m["layers"][0]["digest"], pushed.diff_id.to_string());
        if arch == "amd64" {
            assert_eq!(pushed.diff_id, pushed.layer, "uncompressed layer");
        }

        // podman loads it: the image id is the pushed config's digest.
        let store = dir.path().join(format!("{arch}-podman"));
        podman(&store, &["load", "-i", &file.display().to_string()]);
        let ids = podman(&store, &["images", "--no-trunc", "--format", "{{.ID}}"]);
        assert!(ids.contains(pushed.config.hex()), "{ids}");

        // oci-archive: skopeo copies it with the exact pushed manifest, and podman loads it.
        let (headers, body) = download(
            &reg,
            &format!("/api/v1/export/team/app:1.0?platform=linux/{arch}&format=oci-archive"),
        )
        .await;
        assert_eq!(headers["content-length"], body.len().to_string().as_str());
        let file = dir.path().join(format!("{arch}-oci.tar"));
        std::fs::write(&file, &body).unwrap();
        let out = dir.path().join(format!("{arch}-oci-layout"));
        tool(
            "skopeo",
            &[
                "copy",
                // Without it skopeo compresses the uncompressed layer for an OCI layout.
                "--preserve-digests",
                &format!("oci-archive:{}:1.0", file.display()),
                &format!("oci:{}:x", out.display()),
            ],
        );
        let (d, m) = layout_image(&out);
        assert_eq!(d, pushed.manifest);
        assert_eq!(m["layers"][0]["digest"], pushed.layer.to_string());
        let store = dir.path().join(format!("{arch}-podman-oci"));
        podman(&store, &["load", "-i", &file.display().to_string()]);
        let ids = podman(&store, &["images", "--no-trunc", "--format", "{{.ID}}"]);
        assert!(ids.contains(pushed.config.hex()), "{ids}");
    }
}

#[tokio::test]
async fn an_index_needs_a_platform_except_as_a_whole_oci_archive() {
    let reg = TestRegistry::start().await;
    let (index, amd, arm) = push_two_platforms(&reg, "app", "2").await;
    let r = reg
        .req(Method::GET, "/api/v1/export/app:2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    let message = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("linux/amd64") && message.contains("linux/arm64"),
        "{message}"
    );
    assert_eq!(
        v["errors"][0]["detail"]["platforms"],
        json!(["linux/amd64", "linux/arm64"])
    );
    let r = reg
        .req(Method::GET, "/api/v1/export/app:2?platform=linux/s390x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = reg
        .req(Method::GET, "/api/v1/export/app:2?format=zip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The dashboard links each platform's download.
    let page = reg
        .req(Method::GET, "/ui/r/app")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for arch in ["amd64", "arm64"] {
        assert!(
            page.contains(&format!(
                "href=\"/api/v1/export/app:2?platform=linux/{arch}\""
            )),
            "{page}"
        );
    }
    assert!(page.contains("Download for air-gapped install"));

    // The whole index as an oci-archive, by digest too.
    for target in ["app:2".to_owned(), format!("app@{index}")] {
        let (headers, body) =
            download(&reg, &format!("/api/v1/export/{target}?format=oci-archive")).await;
        let names = tar_names(&body);
        for d in [&index, &amd.manifest, &arm.manifest, &amd.layer, &arm.layer] {
            assert!(names.contains(&format!("blobs/sha256/{}", d.hex())), "{d}");
        }
        let disposition = headers["content-disposition"].to_str().unwrap().to_owned();
        assert!(disposition.contains("_all.tar"), "{disposition}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, body) = download(&reg, "/api/v1/export/app:2?format=oci-archive").await;
    let file = dir.path().join("all.tar");
    std::fs::write(&file, &body).unwrap();
    let out = dir.path().join("all");
    tool(
        "skopeo",
        &[
            "copy",
            "--all",
            "--preserve-digests",
            &format!("oci-archive:{}:2", file.display()),
            &format!("oci:{}:x", out.display()),
        ],
    );
    assert_eq!(layout_image(&out).0, index);

    // An index whose only image is one platform needs none.
    let r = reg
        .put_manifest(
            "app",
            "solo",
            OCI_INDEX,
            &serde_json::to_vec(
                &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": arm.manifest.to_string(),
                 "size": arm.size,
                 "platform": {"os": "linux", "architecture": "arm64"}}]}),
            )
            .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (headers, _) = download(&reg, "/api/v1/export/app:solo").await;
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .ends_with("app_solo_linux-arm64.tar\""));
}

#[tokio::test]
async fn a_ranged_resume_gives_the_same_bytes_and_head_the_same_length() {
    let reg = TestRegistry::start().await;
    push_two_platforms(&reg, "app", "1").await;
    let path = "/api/v1/export/app:1?platform=linux/arm64";
    let (headers, whole) = download(&reg, path).await;
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let half = whole.len() / 2 + 7;
    let first = reg
        .req(Method::GET, path)
        .header("range", format!("bytes=0-{}", half - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::PARTIAL_CONTENT);
    let mut joined = first.bytes().await.unwrap().to_vec();
    let rest = reg
        .req(Method::GET, path)
        .header("range", format!("bytes={half}-"))
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        rest.headers()["content-range"],
        format!("bytes {half}-{}/{}", whole.len() - 1, whole.len()).as_str()
    );
    joined.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(joined, whole);

    // Another validator in If-Range asks for the whole, changed content.
    let r = reg
        .req(Method::GET, path)
        .header("range", "bytes=10-")
        .header("if-range", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), whole.len());
    let r = reg
        .req(Method::GET, path)
        .header("range", format!("bytes={}-", whole.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let head = reg.req(Method::HEAD, path).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        whole.len().to_string().as_str()
    );
    assert_eq!(head.headers()["etag"], etag.as_str());
}

#[tokio::test]
async fn the_pull_rule_applies_with_basic_and_bearer_credentials() {
    let reg = TestRegistry::start().await;
    push_two_platforms(&reg, "team/app", "1").await;
    let admin = Admin::open_dir(reg.data_dir(), "test").unwrap();
    let pw = "password-123";
    admin
        .user_add("reader", pw, &["team/*:pull".parse().unwrap()])
        .await
        .unwrap();
    admin
        .user_add("outsider", pw, &["other/*:pull".parse().unwrap()])
        .await
        .unwrap();
    reg.state.auth.invalidate();
    let path = "/api/v1/export/team/app:1?platform=linux/amd64";

    let r = reg.req(Method::GET, path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("scope=\"repository:team/app:pull\""),
        "{challenge}"
    );
    // Refused before anything is looked up: a missing tag answers the same.
    let r = reg
        .req(Method::GET, "/api/v1/export/team/app:nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .req(Method::GET, path)
        .basic_auth("outsider", Some(pw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let r = reg
        .req(Method::GET, path)
        .basic_auth("reader", Some(pw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let by_basic = r.bytes().await.unwrap();

    // A bearer token from /token, as `curl -O -H "Authorization: Bearer $TOKEN"` sends it.
    let v: Value = reg
        .req(
            Method::GET,
            "/token?service=berth&scope=repository:team/app:pull",
        )
        .basic_auth("reader", Some(pw))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = v["token"].as_str().unwrap();
    let r = reg
        .req(Method::GET, path)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), by_basic);
}

#[tokio::test]
async fn artifacts_are_refused_with_a_clear_message() {
    let reg = TestRegistry::start().await;
    let chart = reg.push_blob("charts/web", b"a chart").await;
    let config = reg.push_blob("charts/web", b"{}").await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": chart.to_string(), "size": 7}],
    }))
    .unwrap();
    let r = reg
        .put_manifest("charts/web", "1.0.0", OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    for format in ["docker-archive", "oci-archive"] {
        let r = reg
            .req(
                Method::GET,
                &format!("/api/v1/export/charts/web:1.0.0?format={format}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let v: Value = r.json().await.unwrap();
        let message = v["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("not a container image")
                && message.contains("application/vnd.cncf.helm.config.v1+json"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_download_counts_once_as_its_platform() {
    let reg = TestRegistry::start().await;
    push_two_platforms(&reg, "team/app", "1.2.3").await;
    let path = "/api/v1/export/team/app:1.2.3?platform=linux/arm64";
    let (_, whole) = download(&reg, path).await;
    // A resume is the same download; a HEAD is none.
    let r = reg
        .req(Method::GET, path)
        .header("range", format!("bytes={}-", whole.len() / 2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    reg.req(Method::HEAD, path).send().await.unwrap();
    let dir = reg.stop().await.unwrap();
    let reg = TestRegistry::start_in(dir.path(), berth_server::Config::default()).await;
    let v: Value = reg
        .req(
            Method::GET,
            "/api/v1/stats/repositories/team/app?by=platform&since=1d",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["groups"][0]["key"], "linux/arm64", "{v}");
    assert_eq!(v["inspections"]["total"], 0, "{v}");
}

/// Resident memory of this process in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_layer_streams_without_growing_memory() {
    const CHUNK: usize = 8 << 20;
    const CHUNKS: usize = 32; // 256 MiB
    let reg = TestRegistry::start().await;
    // The layer is uploaded in chunks so the test itself never holds it.
    let r = reg
        .req(Method::POST, "/v2/big/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let mut location = r.headers()["location"].to_str().unwrap().to_owned();
    let chunk = vec![0x5au8; CHUNK];
    let mut hasher = berth_oci::Hasher::new(berth_oci::Algorithm::Sha256);
    for i in 0..CHUNKS {
        hasher.update(&chunk);
        let r = reg
            .http
            .patch(reg.url(&location))
            .header(
                "content-range",
                format!("{}-{}", i * CHUNK, (i + 1) * CHUNK - 1),
            )
            .body(chunk.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        location = r.headers()["location"].to_str().unwrap().to_owned();
    }
    let layer = hasher.finish();
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = reg
        .http
        .put(reg.url(&format!("{location}{sep}digest={layer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    drop(chunk);
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.to_string()]}})
    .to_string();
    let c = reg.push_blob("big", config.as_bytes()).await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": CHUNK * CHUNKS}],
    }))
    .unwrap();
    assert_eq!(
        reg.put_manifest("big", "1", OCI_MANIFEST, &m)
            .await
            .status(),
        StatusCode::CREATED
    );

    let before = rss();
    let mut r = reg
        .req(Method::GET, "/api/v1/export/big:1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let announced = r.content_length().unwrap();
    assert!(announced > (CHUNK * CHUNKS) as u64);
    let (mut received, mut peak) = (0u64, before);
    while let Some(piece) = r.chunk().await.unwrap() {
        received += piece.len() as u64;
        peak = peak.max(rss());
    }
    assert_eq!(received, announced);
    // The server and this reader run in one process: neither held the layer.
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "memory grew by {} MiB while streaming a 256 MiB layer",
        grown >> 20
    );
}
