//! Scanning on push (`[[scan]]`): an image pushed into a covered repository is scanned in
//! the background against the OSV index at `scan_db` (berth-scan's fixtures) and its
//! counts appear in the stats API, the scan API and the dashboard; a repository no rule
//! covers is not scanned; a new import is applied by re-matching the stored packages;
//! and a push queued while no index exists is scanned after a restart.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_oci::Digest;
use berth_server::events::Actor;
use berth_server::service::{GcOptions, GcRule};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const STATUS: &str = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u7\nArchitecture: amd64\n\nPackage: openssl\nStatus: install ok installed\nVersion: 3.0.9-1\nArchitecture: amd64\n";
const OS: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../berth-scan/tests/fixtures/osv")
        .join(name)
}

/// Imports the named fixtures into the index at `dir` (replacing their ecosystems).
fn import(dir: &Path, records: &[&str]) {
    let sources: Vec<PathBuf> = records.iter().map(|r| fixture(r)).collect();
    berth_scan::db::import(&sources, &[], dir).unwrap();
}

fn gz_layer(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, text) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, text.as_bytes()).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

/// Pushes a Debian 12 image with a vulnerable openssl (dpkg) and lodash (npm) under
/// `repo:tag`; returns its digest.
async fn push_vulnerable(reg: &TestRegistry, repo: &str, tag: &str, arch: &str) -> Digest {
    let base = gz_layer(&[("etc/os-release", OS), ("var/lib/dpkg/status", STATUS)]);
    let app = gz_layer(&[(
        "app/node_modules/lodash/package.json",
        r#"{"name":"lodash","version":"4.17.20","license":"MIT"}"#,
    )]);
    push_layers(reg, repo, tag, arch, &[base, app]).await.0
}

/// Pushes an image of `layers` under `repo:tag`; returns its digest and size.
async fn push_layers(
    reg: &TestRegistry,
    repo: &str,
    tag: &str,
    arch: &str,
    layers: &[Vec<u8>],
) -> (Digest, usize) {
    let config = json!({"architecture": arch, "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}).to_string();
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let mut descs = Vec::new();
    for l in layers {
        descs.push((reg.push_blob(repo, l).await, l.len()));
    }
    let refs: Vec<(&Digest, usize)> = descs.iter().map(|(d, n)| (d, *n)).collect();
    let m = image_manifest(&c, config.len(), &refs, None);
    let r = reg.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    (Digest::sha256(&m), m.len())
}

fn scan_config(db: &Path) -> berth_server::Config {
    let settings: berth_server::config::Settings = toml::from_str(&format!(
        "scan_db = {db:?}\n[[scan]]\nrepositories = [\"team/*\", \"library/**\"]\nscan_on_push = true\n"
    ))
    .unwrap();
    berth_server::Config::from(settings)
}

async fn get_json(reg: &TestRegistry, path: &str) -> Value {
    let r = reg.req(Method::GET, path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.unwrap()
}

/// The stats API's scan of `tag` in `repo`.
async fn tag_scan(reg: &TestRegistry, repo: &str, tag: &str) -> Value {
    let v = get_json(reg, &format!("/api/v1/stats/repositories/{repo}")).await;
    v["vulnerabilities"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == tag)
        .cloned()
        .unwrap_or_else(|| panic!("no tag {tag} in {v}"))
}

/// Waits (at most 30 s) until the stats API shows counts for `repo:tag`.
async fn counts_of(reg: &TestRegistry, repo: &str, tag: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = tag_scan(reg, repo, tag).await;
        if !t["counts"].is_null() {
            return t["counts"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{repo}:{tag} was not scanned: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pushes_are_scanned_counted_and_rematched() {
    let db = tempfile::tempdir().unwrap();
    import(db.path(), &["DSA-5532-1.json", "GHSA-35jh-r3h4-6jhm.json"]);
    let reg = TestRegistry::start_with(scan_config(db.path())).await;

    let digest = push_vulnerable(&reg, "team/app", "1.0", "amd64").await;
    push_vulnerable(&reg, "other/app", "1.0", "amd64").await;
    let counts = counts_of(&reg, "team/app", "1.0").await;
    assert_eq!(
        counts,
        json!({"critical": 0, "high": 1, "medium": 0, "low": 0, "unknown": 1}),
        "lodash (CVSS 7.2) and openssl (a DSA without a score)"
    );
    let t = tag_scan(&reg, "team/app", "1.0").await;
    assert_eq!(t["digest"], digest.to_string());
    let image = &t["images"][0];
    assert_eq!(image["state"], "done");
    assert_eq!(image["platform"], "linux/amd64");
    assert_eq!(image["packages"], 3, "libc6, openssl, lodash");
    assert!(image["db_imported"].as_str().unwrap().ends_with('Z'));
    assert!(image["scanned_at"].as_str().unwrap().ends_with('Z'));

    // A repository no rule covers is not scanned.
    let stats = get_json(&reg, "/api/v1/stats/repositories/other/app").await;
    assert_eq!(stats["vulnerabilities"]["scan_on_push"], false);
    let other = &stats["vulnerabilities"]["tags"][0];
    assert!(other["counts"].is_null(), "{other}");
    assert_eq!(other["images"][0]["state"], "none");

    // The findings of one image, as `berth scan --json` lists them.
    let v = get_json(&reg, "/api/v1/scan/team/app/1.0").await;
    assert_eq!(v["digest"], digest.to_string());
    let findings = v["images"][0]["findings"].as_array().unwrap();
    let ids: Vec<&str> = findings.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["GHSA-35jh-r3h4-6jhm", "DSA-5532-1"],
        "most severe first"
    );
    assert_eq!(findings[1]["package"], "openssl");
    assert_eq!(findings[1]["installed"], "3.0.9-1");
    assert_eq!(findings[1]["fixed"], "3.0.11-1~deb12u2");
    assert_eq!(findings[0]["severity"], "high");
    let by_digest = get_json(&reg, &format!("/api/v1/scan/team/app/{digest}")).await;
    assert_eq!(by_digest["images"], v["images"]);
    let r = reg
        .req(Method::GET, "/api/v1/scan/team/app/2.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    // A new advisory: the stored packages are matched again, the layers are not read.
    import(db.path(), &["DSA-5532-1.json", "DEBIAN-CVE-2023-5678.json"]);
    let r = reg
        .req(Method::POST, "/api/v1/admin/scan/rematch")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let rematch: Value = r.json().await.unwrap();
    assert_eq!(
        (rematch["rematched"].as_u64(), rematch["changed"].as_u64()),
        (Some(1), Some(1)),
        "{rematch}"
    );
    let counts = counts_of(&reg, "team/app", "1.0").await;
    assert_eq!(
        counts,
        json!({"critical": 0, "high": 1, "medium": 0, "low": 0, "unknown": 2}),
        "DEBIAN-CVE-2023-5678 joins; npm's records were kept by the Debian import"
    );
    let v = get_json(&reg, "/api/v1/scan/team/app/1.0").await;
    assert_eq!(v["images"][0]["findings"].as_array().unwrap().len(), 3);

    // The dashboard shows the counts with their severity colours.
    let page = reg
        .req(Method::GET, "/ui/r/team/app")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<th>Vulnerabilities</th>"), "{page}");
    assert!(
        page.contains(r#"<span class="sev high" title="high">1</span>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<span class="sev unknown" title="unknown">2</span>"#),
        "{page}"
    );

    let metrics = reg
        .req(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("berth_scan_images_total 1"), "{metrics}");
    assert!(metrics.contains("berth_scan_failures_total 0"), "{metrics}");
    assert!(
        metrics.contains("berth_scan_rematched_total 1"),
        "{metrics}"
    );

    // Deleting the manifest forgets its scan.
    let r = reg
        .req(Method::DELETE, &format!("/v2/team/app/manifests/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let states = reg.state.scanner.store().scan_states().await.unwrap();
    assert!(states.is_empty(), "{states:?}");
}

/// Regression: a manifest that garbage collection deleted kept its scan row forever
/// (only a deletion through the API forgot it). Now the collector's transaction deletes
/// it; the scan of a manifest still tagged stays.
#[tokio::test]
async fn collected_manifests_lose_their_scans() {
    let db = tempfile::tempdir().unwrap();
    import(db.path(), &["DSA-5532-1.json", "GHSA-35jh-r3h4-6jhm.json"]);
    let mut config = scan_config(db.path());
    config.gc_grace = Duration::ZERO;
    config.gc = vec![GcRule {
        repositories: "*".into(),
        untagged_ttl: Some(Duration::ZERO),
    }];
    let reg = TestRegistry::start_with(config).await;
    let old = push_vulnerable(&reg, "team/app", "old", "amd64").await;
    let kept = push_vulnerable(&reg, "team/app", "kept", "arm64").await;
    counts_of(&reg, "team/app", "old").await;
    counts_of(&reg, "team/app", "kept").await;
    let store = reg.state.scanner.store().clone();
    let both = [old.clone(), kept.clone()];
    assert_eq!(store.scan_get("team/app", &both).await.unwrap().len(), 2);

    // Untagged, the old image is the collector's; its scan goes with it.
    let r = reg
        .req(Method::DELETE, "/v2/team/app/manifests/old")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let actor = Actor {
        name: "test".into(),
        client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    };
    let report = reg
        .state
        .registry
        .gc(GcOptions::default(), actor)
        .await
        .unwrap();
    assert_eq!(report.manifests_deleted, 1);
    let left = store.scan_get("team/app", &both).await.unwrap();
    let left: Vec<&Digest> = left.iter().map(|s| &s.digest).collect();
    assert_eq!(left, [&kept], "only the tagged image keeps its scan");
    let r = reg
        .req(Method::GET, &format!("/api/v1/scan/team/app/{old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        tag_scan(&reg, "team/app", "kept").await["images"][0]["state"],
        "done"
    );
}

#[tokio::test]
async fn a_push_queued_without_a_database_is_scanned_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vulndb");
    let config = scan_config(&db);
    let reg = TestRegistry::start_in(&dir.path().join("data"), config.clone()).await;
    push_vulnerable(&reg, "library/debian/app", "1", "arm64").await;
    let t = tag_scan(&reg, "library/debian/app", "1").await;
    assert_eq!(t["images"][0]["state"], "pending", "{t}");
    reg.stop().await;

    import(&db, &["DSA-5532-1.json"]);
    let reg = TestRegistry::start_in(&dir.path().join("data"), config).await;
    let counts = counts_of(&reg, "library/debian/app", "1").await;
    assert_eq!(counts["unknown"], 1, "{counts}");
    assert_eq!(
        tag_scan(&reg, "library/debian/app", "1").await["images"][0]["platform"],
        "linux/arm64"
    );
}

#[tokio::test]
async fn an_index_shows_each_platform_and_its_worst() {
    let db = tempfile::tempdir().unwrap();
    import(db.path(), &["DSA-5532-1.json", "GHSA-35jh-r3h4-6jhm.json"]);
    let reg = TestRegistry::start_with(scan_config(db.path())).await;
    let base = gz_layer(&[("etc/os-release", OS), ("var/lib/dpkg/status", STATUS)]);
    let app = gz_layer(&[(
        "app/node_modules/lodash/package.json",
        r#"{"name":"lodash","version":"4.17.20","license":"MIT"}"#,
    )]);
    let (amd, amd_len) = push_layers(&reg, "team/multi", "amd", "amd64", &[base, app]).await;
    // The arm64 image has only its OS: nothing known to be vulnerable.
    let (arm, arm_len) = push_layers(
        &reg,
        "team/multi",
        "arm",
        "arm64",
        &[gz_layer(&[("etc/os-release", OS)])],
    )
    .await;
    // A layer that is no archive at all fails its scan, and says so.
    let (bad, _) = push_layers(&reg, "team/multi", "bad", "amd64", &[b"not a tar".to_vec()]).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.to_string(), "size": amd_len, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.to_string(), "size": arm_len, "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }))
    .unwrap();
    let r = reg
        .put_manifest("team/multi", "2.0", OCI_INDEX, &index)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = loop {
        let t = tag_scan(&reg, "team/multi", "2.0").await;
        if t["images"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] != "pending")
        {
            break t;
        }
        assert!(Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let images = t["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0]["platform"], "linux/amd64");
    assert_eq!(images[0]["counts"]["high"], 1);
    assert_eq!(images[1]["platform"], "linux/arm64");
    assert_eq!(images[1]["state"], "done");
    assert_eq!(images[1]["counts"]["high"], 0);
    assert_eq!(t["counts"]["high"], 1, "the worst platform's");
    assert_eq!(t["counts"]["unknown"], 1, "the worst platform's");

    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let t = tag_scan(&reg, "team/multi", "bad").await;
        if t["images"][0]["state"] != "pending" {
            break t;
        }
        assert!(Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed["digest"], bad.to_string());
    assert_eq!(failed["images"][0]["state"], "failed", "{failed}");
    assert!(failed["counts"].is_null());
    let error = failed["images"][0]["error"].as_str().unwrap();
    assert!(error.contains("layer"), "{error}");
    let metrics = reg
        .req(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("berth_scan_failures_total 1"), "{metrics}");
}
