//! Replication between two `berth serve` processes: a full sync queued on the stopped
//! source's data directory (`berth admin replicate --all`), the source killed with
//! SIGKILL in the middle of the queue and restarted, and every tag and signature at the
//! target once, with the source's digests; `berth admin replication status` read from
//! the data directory and through the admin API.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_oci::Digest;
use serde_json::{json, Value};

use crate::process::{bytes, client, ServerProcess};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Runs `berth admin <args> --config <config> --data-dir <data>`: (success, stdout,
/// stderr).
fn admin(config: &Path, data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("admin")
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env("DOCKER_CONFIG", data.join("no-docker-config"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_json(config: &Path, data: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["replication", "status", "--json"];
    args.extend_from_slice(extra);
    let (ok, out, err) = admin(config, data, &args);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

async fn push_blob(http: &reqwest::Client, base: &str, repo: &str, content: &[u8]) -> Digest {
    let d = Digest::sha256(content);
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(content.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    d
}

async fn put_manifest(
    http: &reqwest::Client,
    base: &str,
    repo: &str,
    reference: &str,
    m: &Value,
) -> Digest {
    let body = serde_json::to_vec(m).unwrap();
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    Digest::sha256(&body)
}

fn manifest(
    config: &Digest,
    config_len: usize,
    layer: &Digest,
    layer_len: usize,
    layer_type: &str,
) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_len},
        "layers": [{"mediaType": layer_type, "digest": layer.to_string(), "size": layer_len}],
    })
}

/// Pushes `n` images (a 4 MiB layer each) with a cosign-style signature each; returns
/// (tag, image digest, signature digest).
async fn push_signed(base: &str, repo: &str, n: u64) -> Vec<(String, Digest, Digest)> {
    let http = client();
    let mut out = Vec::new();
    for i in 0..n {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{i}}}");
        let layer = bytes(i + 1, 4 << 20);
        let c = push_blob(&http, base, repo, config.as_bytes()).await;
        let l = push_blob(&http, base, repo, &layer).await;
        let tag = format!("v{i}");
        let m = manifest(
            &c,
            config.len(),
            &l,
            layer.len(),
            "application/vnd.oci.image.layer.v1.tar",
        );
        let d = put_manifest(&http, base, repo, &tag, &m).await;
        let payload =
            format!("{{\"critical\":{{\"image\":{{\"docker-manifest-digest\":\"{d}\"}}}}}}");
        let p = push_blob(&http, base, repo, payload.as_bytes()).await;
        let sig = manifest(
            &c,
            config.len(),
            &p,
            payload.len(),
            "application/vnd.dev.cosign.simplesigning.v1+json",
        );
        let s = put_manifest(&http, base, repo, &format!("sha256-{}.sig", d.hex()), &sig).await;
        out.push((tag, d, s));
    }
    out
}

async fn head(base: &str, repo: &str, reference: &str) -> Option<String> {
    let r = client()
        .head(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    (r.status() == 200).then(|| {
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    })
}

/// `berth_manifests_pushed_total` of the server at `base` (open to loopback).
async fn manifests_pushed(base: &str) -> u64 {
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("berth_manifests_pushed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn sigkill_mid_queue_and_restart_replicate_every_tag_and_signature_once() {
    let dir = tempfile::tempdir().unwrap();
    let source_data = dir.path().join("source");
    let target = ServerProcess::start(&dir.path().join("target"), &[]);
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[[replication]]\nname = \"dr\"\nurl = \"{}\"\nrepositories = [\"team/*\"]\nretry_max_interval = \"1s\"\n",
            target.base
        ),
    )
    .unwrap();

    // Pushed before the rule existed: nothing is queued.
    let mut plain = ServerProcess::start(&source_data, &[]);
    let images = push_signed(&plain.base, "team/app", 20).await;
    plain.terminate();

    // A full sync queued on the stopped source's data directory.
    let (ok, out, err) = admin(
        &config,
        &source_data,
        &["replicate", "--rule", "dr", "--all"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "20 tag(s) of 1 repositor(ies) queued for replication by dr"
    );
    let status = status_json(&config, &source_data, &[]);
    assert_eq!(status["rules"][0]["pending"], 20, "{status}");

    // The source replicates; it is killed once the target holds a few manifests.
    let cfg = config.to_str().unwrap().to_owned();
    let mut source = ServerProcess::start(&source_data, &["--config", &cfg]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while manifests_pushed(&target.base).await < 4 {
        assert!(Instant::now() < deadline, "replication did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    source.kill9();
    let status = status_json(&config, &source_data, &[]);
    let pending = status["rules"][0]["pending"].as_u64().unwrap();
    assert!(pending > 0 && pending < 20, "killed mid-queue: {status}");

    // Restarted, it resumes the queue.
    let source = ServerProcess::start(&source_data, &["--config", &cfg]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status = status_json(&config, &source_data, &["--registry", &source.addr]);
        if status["rules"][0]["pending"] == 0 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "replication did not finish: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["rules"][0]["dead"], 0);
    for (tag, d, sig) in &images {
        assert_eq!(
            head(&target.base, "team/app", tag).await,
            Some(d.to_string()),
            "{tag}"
        );
        let sig_tag = format!("sha256-{}.sig", d.hex());
        assert_eq!(
            head(&target.base, "team/app", &sig_tag).await,
            Some(sig.to_string())
        );
    }
    // Each image and each signature was written to the target once.
    assert_eq!(manifests_pushed(&target.base).await, 40);

    // The text status, read from the data directory beside the running server.
    let (ok, out, err) = admin(&config, &source_data, &["replication", "status"]);
    assert!(ok, "{err}");
    let row = out.lines().nth(1).unwrap();
    assert!(row.starts_with("dr "), "{out}");
    assert!(row.contains(&target.base), "{out}");
}
