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

/// Pushes the registry both tests migrate into `base`: an index of two images, an
/// SBOM-like referrer of it, and one of its layers linked from a second repository.
/// Returns the index's digest.
async fn seed(base: &str) -> String {
    let (amd, amd_len) = image(base, "team/app", 1).await;
    let (arm, arm_len) = image(base, "team/app", 2).await;
    let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": IMAGE, "digest": amd, "size": amd_len, "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": IMAGE, "digest": arm, "size": arm_len, "platform": {"os": "linux", "architecture": "arm64"}}
    ]});
    let index_digest = put_manifest(base, "team/app", "1.0.0", INDEX, &index).await;
    let raw_index = serde_json::to_vec(&index).unwrap();
    // A referrer (an SBOM-like artifact) of the index.
    let mut empty = put_blob(base, "team/app", b"{}").await;
    empty["mediaType"] = json!("application/vnd.oci.empty.v1+json");
    let doc = put_blob(base, "team/app", b"{\"spdxVersion\":\"SPDX-2.3\"}").await;
    let artifact = json!({"schemaVersion": 2, "mediaType": IMAGE,
        "artifactType": "application/spdx+json", "config": empty, "layers": [doc],
        "subject": {"mediaType": INDEX, "digest": index_digest, "size": raw_index.len()}});
    let raw = serde_json::to_vec(&artifact).unwrap();
    put_manifest(
        base,
        "team/app",
        &digest(&raw).to_string(),
        IMAGE,
        &artifact,
    )
    .await;
    // The same layer in a second repository: one blob, two links.
    put_blob(base, "other/app", &bytes(1, 300_000)).await;
    index_digest
}

#[tokio::test]
async fn a_migrated_registry_serves_the_same_digests_and_a_second_run_copies_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    let mut server = ServerProcess::start(&a, &[]);
    let base = server.base.clone();
    let index_digest = seed(&base).await;
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

/// `berth admin ARGS --json` on one side (`--data-dir DIR` or `--config FILE`).
fn admin(side: &[&std::ffi::OsStr], args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("admin")
        .args(side)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Everything a side holds that a migration carries, as its clients and its
/// administrator see it: tags and digests, referrers, the blobs of `big/data`, accounts.
async fn registry_view(base: &str, index_digest: &str, secret: &str, big: &[String]) -> Value {
    let app = snapshot(base, "team/app", index_digest, Some(("ci", secret))).await;
    let mut blobs = Vec::new();
    for d in big {
        let r = client()
            .get(format!("{base}/v2/big/data/blobs/{d}"))
            .basic_auth("ci", Some(secret))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{d}");
        let body = r.bytes().await.unwrap();
        blobs.push(digest(&body).to_string());
    }
    assert_eq!(blobs, big, "every blob of big/data, byte for byte");
    json!({"app": app, "big": blobs})
}

#[cfg(all(feature = "s3", feature = "postgres"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_moves_into_s3_and_postgres_resumably_and_back() {
    use berth_meta::postgres::testing;
    use berth_storage::s3::seaweed::{SeaweedFs, ACCESS_KEY, BUCKET, SECRET_KEY};
    use berth_storage::BlobStore;
    use std::time::{Duration, Instant};

    let Some(s3) = SeaweedFs::shared() else {
        return;
    };
    s3.ready().await;
    let Some(url) = testing::fresh_url() else {
        return;
    };
    // The child processes inherit the S3 credentials, as from a service manager.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let c = tmp.path().join("c");
    let prefix = format!("migrate-{}", std::process::id());
    let toml = tmp.path().join("berth.toml");
    std::fs::write(
        &toml,
        format!(
            "data_dir = {:?}\nstorage = \"s3\"\ns3_bucket = \"{BUCKET}\"\ns3_endpoint = \"{}\"\n\
             s3_region = \"us-east-1\"\ns3_prefix = \"{prefix}\"\ndatabase_url = \"{url}\"\n",
            tmp.path().join("scaled").to_str().unwrap(),
            s3.endpoint
        ),
    )
    .unwrap();
    let on_a = [std::ffi::OsStr::new("--data-dir"), a.as_os_str()];
    let on_toml = [std::ffi::OsStr::new("--config"), toml.as_os_str()];
    let on_c = [std::ffi::OsStr::new("--data-dir"), c.as_os_str()];

    // The embedded registry: images, an index, a referrer, a second repository, and
    // enough large blobs that a copy can be interrupted in the middle.
    let mut server = ServerProcess::start(&a, &[]);
    let index_digest = seed(&server.base).await;
    let mut big = Vec::new();
    for i in 0..16 {
        let v = put_blob(&server.base, "big/data", &bytes(100 + i, 4 << 20)).await;
        big.push(v["digest"].as_str().unwrap().to_owned());
    }
    assert!(server.terminate().success());
    let robot = admin(&on_a, &["robot", "create", "ci", "--grant", "*:pull"]);
    let secret = robot["secret"].as_str().unwrap().to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["admin", "--data-dir"])
        .arg(&a)
        .args(["public", "team/*"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let public_before = admin(&on_a, &["public"]);
    assert_eq!(public_before, json!(["team/*"]));
    let users_before = admin(&on_a, &["robot", "list"]);
    let audit_before = admin(&on_a, &["audit", "--limit", "1000"]);
    assert!(
        audit_before.as_array().unwrap().len() >= 3,
        "{audit_before}"
    );
    let mut server = ServerProcess::start(&a, &[]);
    let before = registry_view(&server.base, &index_digest, &secret, &big).await;
    assert!(server.terminate().success());

    // A first run killed in the middle of the blobs: once two index entries are in
    // the bucket, the first blob is linked in PostgreSQL too (blobs are copied one
    // after another, each linked before the next begins).
    let mut first = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["migrate", "--json", "--from"])
        .arg(&a)
        .arg("--to")
        .arg(&toml)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let bucket = s3.store_at(&prefix);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(page) = bucket.list(None, 100).await {
            if page.blobs.len() >= 2 {
                break;
            }
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the migration ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "no blob reached the bucket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    let status = first.wait().unwrap();
    assert!(!status.success(), "killed mid-copy: {status}");

    // Run again: it resumes (what the first run finished is not copied again).
    let resumed = migrate(&a, &toml);
    let blobs = 6 + big.len() as u64;
    assert!(resumed["blobs_present"].as_u64().unwrap() >= 1, "{resumed}");
    assert_eq!(
        resumed["blobs_copied"].as_u64().unwrap() + resumed["blobs_present"].as_u64().unwrap(),
        blobs,
        "{resumed}"
    );
    assert_eq!(resumed["manifests_pushed"], 4, "{resumed}");
    let again = migrate(&a, &toml);
    for k in [
        "blobs_copied",
        "links_made",
        "manifests_pushed",
        "accounts_created",
        "audit_entries",
    ] {
        assert_eq!(again[k], 0, "{k}: {again}");
    }
    assert_eq!(again["blobs_present"], blobs, "{again}");
    assert_eq!(admin(&on_toml, &["robot", "list"]), users_before);
    assert_eq!(admin(&on_toml, &["public"]), public_before);
    assert_eq!(admin(&on_toml, &["audit", "--limit", "1000"]), audit_before);

    // Served from S3 + PostgreSQL: the same registry.
    let mut server = ServerProcess::start(
        &tmp.path().join("scaled"),
        &["--config", toml.to_str().unwrap()],
    );
    let scaled = registry_view(&server.base, &index_digest, &secret, &big).await;
    assert_eq!(scaled, before);
    assert!(server.terminate().success());

    // And back into a fresh data directory: the same registry again.
    let audit_scaled = admin(&on_toml, &["audit", "--limit", "1000"]);
    let back = migrate(&toml, &c);
    assert_eq!(back["blobs_copied"], blobs, "{back}");
    assert_eq!(back["manifests_pushed"], 4, "{back}");
    assert_eq!(admin(&on_c, &["robot", "list"]), users_before);
    assert_eq!(admin(&on_c, &["public"]), public_before);
    assert_eq!(admin(&on_c, &["audit", "--limit", "1000"]), audit_scaled);
    let mut server = ServerProcess::start(&c, &[]);
    let home = registry_view(&server.base, &index_digest, &secret, &big).await;
    assert_eq!(home, before);
    assert!(server.terminate().success());
    let again = migrate(&toml, &c);
    assert_eq!(again["blobs_copied"], 0, "{again}");
    assert_eq!(again["manifests_pushed"], 0, "{again}");
}
