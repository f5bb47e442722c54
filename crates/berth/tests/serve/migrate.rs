//! `berth migrate`: a registry copied into another data directory serves the same
//! digests (an index with two images, a referrer, tags, accounts), a second run copies
//! nothing, and a copy back gives the same registry again.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::process::{bytes, client, digest, ServerProcess};

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

async fn put_blob(base: &str, repo: &str, b: &[u8]) -> Value {
    let d = digest(b);
    let r = client()
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(b.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    json!({"mediaType": "application/octet-stream", "digest": d.to_string(), "size": b.len()})
}

async fn put_manifest(
    base: &str,
    repo: &str,
    reference: &str,
    media: &str,
    body: &Value,
) -> String {
    let raw = serde_json::to_vec(body).unwrap();
    let r = client()
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", media)
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    digest(&raw).to_string()
}

async fn image(base: &str, repo: &str, seed: u64) -> (String, usize) {
    let mut config = put_blob(base, repo, format!("{{\"seed\":{seed}}}").as_bytes()).await;
    config["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let layer = put_blob(base, repo, &bytes(seed, 300_000)).await;
    let m = json!({"schemaVersion": 2, "mediaType": IMAGE, "config": config, "layers": [layer]});
    let raw = serde_json::to_vec(&m).unwrap();
    let d = put_manifest(base, repo, &digest(&raw).to_string(), IMAGE, &m).await;
    (d, raw.len())
}

/// Every tag of `repo` with its digest, and the referrers of `subject`.
async fn snapshot(base: &str, repo: &str, subject: &str, auth: Option<(&str, &str)>) -> Value {
    let get = |url: String| {
        let rb = client().get(url);
        match auth {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    };
    let tags: Value = get(format!("{base}/v2/{repo}/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = serde_json::Map::new();
    for t in tags["tags"].as_array().unwrap() {
        let t = t.as_str().unwrap();
        let r = get(format!("{base}/v2/{repo}/manifests/{t}"))
            .header("accept", format!("{INDEX}, {IMAGE}"))
            .send()
            .await
            .unwrap();
        let d = r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = r.bytes().await.unwrap();
        assert_eq!(digest(&body).to_string(), d, "the bytes are the digest's");
        out.insert(t.to_owned(), json!(d));
    }
    let referrers: Value = get(format!("{base}/v2/{repo}/referrers/{subject}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    json!({"tags": out, "referrers": referrers["manifests"]})
}

fn migrate(from: &Path, to: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["migrate", "--json", "--from"])
        .arg(from)
        .arg("--to")
        .arg(to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_migrated_registry_serves_the_same_digests_and_a_second_run_copies_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    let mut server = ServerProcess::start(&a, &[]);
    let base = server.base.clone();
    let (amd, amd_len) = image(&base, "team/app", 1).await;
    let (arm, arm_len) = image(&base, "team/app", 2).await;
    let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": IMAGE, "digest": amd, "size": amd_len, "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": IMAGE, "digest": arm, "size": arm_len, "platform": {"os": "linux", "architecture": "arm64"}}
    ]});
    let index_digest = put_manifest(&base, "team/app", "1.0.0", INDEX, &index).await;
    let raw_index = serde_json::to_vec(&index).unwrap();
    // A referrer (an SBOM-like artifact) of the index.
    let mut empty = put_blob(&base, "team/app", b"{}").await;
    empty["mediaType"] = json!("application/vnd.oci.empty.v1+json");
    let doc = put_blob(&base, "team/app", b"{\"spdxVersion\":\"SPDX-2.3\"}").await;
    let artifact = json!({"schemaVersion": 2, "mediaType": IMAGE,
        "artifactType": "application/spdx+json", "config": empty, "layers": [doc],
        "subject": {"mediaType": INDEX, "digest": index_digest, "size": raw_index.len()}});
    let raw = serde_json::to_vec(&artifact).unwrap();
    put_manifest(
        &base,
        "team/app",
        &digest(&raw).to_string(),
        IMAGE,
        &artifact,
    )
    .await;
    // The same layer in a second repository: one blob, two links.
    put_blob(&base, "other/app", &bytes(1, 300_000)).await;
    let before = snapshot(&base, "team/app", &index_digest, None).await;
    assert_eq!(before["referrers"].as_array().unwrap().len(), 1, "{before}");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["admin", "--data-dir"])
        .arg(&a)
        .args(["robot", "create", "ci", "--grant", "team/*:pull", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let robot: Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = robot["secret"].as_str().unwrap().to_owned();

    // A running server holds its data directory: refused, nothing written.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["migrate", "--from"])
        .arg(&a)
        .arg("--to")
        .arg(&b)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop its server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.terminate().success());

    let first = migrate(&a, &b);
    assert_eq!(first["blobs_copied"], 6, "{first}");
    assert_eq!(first["links_made"], 1, "{first}");
    assert_eq!(first["manifests_pushed"], 4, "{first}");
    assert_eq!(first["accounts_created"], 1, "{first}");
    let again = migrate(&a, &b);
    assert_eq!(again["blobs_copied"], 0, "{again}");
    assert_eq!(again["links_made"], 0, "{again}");
    assert_eq!(again["manifests_pushed"], 0, "{again}");
    assert_eq!(again["manifests_present"], 4, "{again}");
    assert_eq!(again["audit_entries"], 0, "{again}");

    // And back out into a third directory: still the same registry.
    migrate(&b, &c);
    for dir in [&b, &c] {
        let mut server = ServerProcess::start(dir, &[]);
        let after = snapshot(
            &server.base,
            "team/app",
            &index_digest,
            Some(("ci", &secret)),
        )
        .await;
        assert_eq!(after, before, "{}", dir.display());
        let r = client()
            .head(format!(
                "{}/v2/other/app/blobs/{}",
                server.base,
                digest(&bytes(1, 300_000))
            ))
            .basic_auth("ci", Some("wrong"))
            .send()
            .await
            .unwrap();
        // Accounts came along: the registry is closed now, and a wrong secret is refused.
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(server.terminate().success());
    }
}
