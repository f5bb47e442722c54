//! The dashboard in a real browser: headless Chromium loads `/ui/` and a repository page
//! against a running server and the numbers and charts are checked; a screenshot is
//! left in the test output for review.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::process::{client, ServerProcess};

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("which")
            .arg(c)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            return c;
        }
    }
    panic!("chromium is required (scripts/test-all installs Debian's chromium)");
}

fn browse(profile: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn push(base: &str, repo: &str, tag: &str, body: serde_json::Value) -> String {
    let http = client();
    let bytes = serde_json::to_vec(&body).unwrap();
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", body["mediaType"].as_str().unwrap())
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    berth_oci::Digest::sha256(&bytes).to_string()
}

async fn blob(base: &str, repo: &str, content: &[u8]) -> String {
    let d = berth_oci::Digest::sha256(content);
    let r = client()
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(content.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    d.to_string()
}

#[tokio::test]
async fn dashboard_shows_downloads_and_renders_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&tmp.path().join("data"), &[]);
    let base = server.base.clone();
    let repo = "team/app";
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let cfg = json!({"architecture": arch, "os": "linux"}).to_string();
        let c = blob(&base, repo, cfg.as_bytes()).await;
        let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": cfg.len()}, "layers": []});
        let d = push(&base, repo, &format!("build-{arch}"), m.clone()).await;
        children.push(json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d,
            "size": serde_json::to_vec(&m).unwrap().len(), "platform": {"os": "linux", "architecture": arch}}));
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "annotations": {"org.opencontainers.image.version": "1.4.0"}, "manifests": children});
    push(&base, repo, "1.4.0", index).await;

    // 3 arm64 pulls by skopeo, 2 amd64 pulls by containerd.
    let http = client();
    for (ua, child, n) in [("skopeo/1.13", 1, 3), ("containerd/1.7", 0, 2)] {
        for _ in 0..n {
            for path in [
                "1.4.0".to_owned(),
                children[child]["digest"].as_str().unwrap().to_owned(),
            ] {
                let r = http
                    .get(format!("{base}/v2/{repo}/manifests/{path}"))
                    .header("user-agent", ua)
                    .header("accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            }
        }
    }

    let profile = tmp.path().join("chromium-profile");
    let index_dom = browse(&profile, &["--dump-dom", &format!("{base}/ui/")]);
    assert!(index_dom.contains("href=\"/ui/r/team/app\""), "{index_dom}");

    let page = format!("{base}/ui/r/{repo}");
    let dom = browse(&profile, &["--dump-dom", &page]);
    assert!(
        dom.contains("id=\"downloads-total\">5<"),
        "total downloads:\n{dom}"
    );
    assert!(dom.contains("1.4.0"));
    assert!(dom.contains("linux/arm64") && dom.contains("linux/amd64"));
    assert!(dom.contains("podman") && dom.contains("containerd"));
    assert!(
        dom.contains("60%") && dom.contains("40%"),
        "platform and client shares"
    );
    assert_eq!(
        dom.matches("class=\"chart bar\"").count(),
        3,
        "three bar charts"
    );
    assert!(dom.contains("<polyline"), "the line chart");
    assert!(
        dom.matches("class=\"tag\"").count() >= 3,
        "every tag listed"
    );
    assert!(dom.contains("org.opencontainers.image.version=1.4.0"));

    // A screenshot for review, kept beside the test output.
    let shot_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let shot = shot_dir.join("dashboard.png");
    browse(
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1400",
            &page,
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG"),
        "screenshot looks empty"
    );
    println!("dashboard screenshot: {}", shot.display());

    // The same numbers through `berth stats`, as JSON and as a table.
    let stats = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["stats", &format!("{}/{repo}", server.addr)])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let v: serde_json::Value =
        serde_json::from_str(&stats(&["--by", "platform", "--json"])).unwrap();
    assert_eq!(v["total"], 5);
    assert_eq!(
        v["groups"],
        json!([{"key": "linux/amd64", "downloads": 2}, {"key": "linux/arm64", "downloads": 3}])
    );
    let v: serde_json::Value =
        serde_json::from_str(&stats(&["--by", "client", "--since", "1d", "--json"])).unwrap();
    assert_eq!(
        v["groups"],
        json!([{"key": "containerd", "downloads": 2}, {"key": "podman", "downloads": 3}])
    );
    let table = stats(&["--by", "version"]);
    assert!(
        table.contains("1.4.0") && table.contains("100.0%"),
        "{table}"
    );
}
