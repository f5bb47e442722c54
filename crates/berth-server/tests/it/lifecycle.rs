//! Storage lifecycle: quotas refused with real clients (skopeo) and over HTTP, held by
//! uploads committed at the same moment, usage in the admin and stats APIs, and
//! retention rules applied by garbage collection.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_oci::{Digest, RepoName};
use berth_server::events::Actor;
use berth_server::service::{GcOptions, GcRule, QuotaRule, RetentionRule};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{error_code, image_manifest, TestRegistry, OCI_MANIFEST};

fn actor() -> Actor {
    Actor {
        name: "test".into(),
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

pub(crate) fn quota(pattern: &str, max_bytes: u64) -> berth_server::Config {
    berth_server::Config {
        quota: vec![QuotaRule {
            repositories: pattern.into(),
            max_bytes,
        }],
        ..Default::default()
    }
}

/// Bytes that do not compress or repeat: a layer of `n` bytes unique to `seed`.
fn noise(seed: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut block = Digest::sha256(seed.as_bytes()).to_string().into_bytes();
    while out.len() < n {
        block = Digest::sha256(&block).to_string().into_bytes();
        out.extend_from_slice(&block);
    }
    out.truncate(n);
    out
}

/// Pushes an image whose layer is `layer_len` bytes under `tag`: (layer, manifest).
async fn push_sized(
    reg: &TestRegistry,
    repo: &str,
    tag: &str,
    layer_len: usize,
) -> (Digest, Digest) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{tag}"}}"#);
    let layer = noise(tag, layer_len);
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let l = reg.push_blob(repo, &layer).await;
    let m = image_manifest(&c, config.len(), &[(&l, layer.len())], None);
    let r = reg.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (l, Digest::sha256(&m))
}

/// Regular files under `dir` (none when it does not exist).
fn files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                files(&p)
            } else {
                1
            }
        })
        .sum()
}

/// Uploads `n` distinct blobs of `size` bytes into `repo`, spread over `regs`, as clients
/// that push layers in parallel do: every body is sent first (one streamed `PATCH`
/// declaring no size, as skopeo and containerd send them, so nothing can be refused
/// early), then every commit at once. Returns the digests committed and those refused
/// over the quota (`403 DENIED`).
pub(crate) async fn race_uploads(
    regs: &[&TestRegistry],
    repo: &str,
    n: usize,
    size: usize,
) -> (Vec<Digest>, Vec<Digest>) {
    let mut sessions = Vec::new();
    for i in 0..n {
        let reg = regs[i % regs.len()];
        let blob = noise(&format!("racing upload {i}"), size);
        let r = reg
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let digest = Digest::sha256(&blob);
        let r = reg
            .req(Method::PATCH, &location)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                vec![Ok::<_, std::io::Error>(blob)],
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        sessions.push((reg, location, digest));
    }
    let commits = sessions.iter().map(|(reg, location, digest)| async move {
        let r = reg
            .req(Method::PUT, &format!("{location}?digest={digest}"))
            .send()
            .await
            .unwrap();
        (digest.clone(), r.status(), r.text().await.unwrap())
    });
    let (mut committed, mut refused) = (Vec::new(), Vec::new());
    for (digest, status, body) in futures_util::future::join_all(commits).await {
        match status {
            StatusCode::CREATED => committed.push(digest),
            StatusCode::FORBIDDEN => {
                assert!(body.contains("DENIED"), "{body}");
                assert!(body.contains("over its storage quota"), "{body}");
                refused.push(digest);
            }
            other => panic!("a commit answered {other}: {body}"),
        }
    }
    (committed, refused)
}

/// `repo` stores exactly the `committed` blobs of `size` bytes, within its quota, their
/// files in the blob directory of one of `regs`; the `refused` ones are nowhere on any of
/// `regs`: not linked, no file, no upload left.
pub(crate) async fn assert_stores_only(
    regs: &[&TestRegistry],
    repo: &str,
    committed: &[Digest],
    refused: &[Digest],
    size: usize,
) {
    let usage = regs[0]
        .state
        .registry
        .repository_usage(&RepoName::parse(repo).unwrap())
        .await
        .unwrap();
    assert_eq!(usage.bytes, (committed.len() * size) as u64, "{usage:?}");
    assert!(usage.bytes <= usage.limit.unwrap(), "{usage:?}");
    let stored = |reg: &TestRegistry, d: &Digest| {
        let hex = d.to_string().trim_start_matches("sha256:").to_owned();
        let blobs = reg.data_dir().join("blobs/sha256");
        blobs.join(&hex).exists() || blobs.join(&hex[..2]).join(&hex).exists()
    };
    // Replicas here keep blob files apart: a committed blob is in the one it went to.
    for d in committed {
        assert!(regs.iter().any(|reg| stored(reg, d)), "{d}");
    }
    for reg in regs {
        for d in refused {
            let r = reg
                .req(Method::HEAD, &format!("/v2/{repo}/blobs/{d}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{d}");
            assert!(!stored(reg, d), "{d}");
        }
        assert_eq!(
            files(&reg.data_dir().join("uploads")),
            0,
            "no upload file stays"
        );
    }
}

/// Regression: eight 1 MiB uploads committed at once into a 4 MiB quota each saw the
/// usage before the others committed, and together went over it. Now exactly four fit
/// and are stored; the other four are refused and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_never_take_a_repository_over_its_quota() {
    const MIB: usize = 1 << 20;
    let reg = TestRegistry::start_with(quota("team-a/*", 4 * MIB as u64)).await;
    let (committed, refused) = race_uploads(&[&reg], "team-a/app", 8, MIB).await;
    assert_eq!((committed.len(), refused.len()), (4, 4));
    assert_stores_only(&[&reg], "team-a/app", &committed, &refused, MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copy_over_quota_is_refused_with_used_and_limit_and_stores_nothing() {
    let source = TestRegistry::start().await;
    let (layer, _) = push_sized(&source, "src/app", "1", 300 * 1024).await;
    let target = TestRegistry::start_with(quota("team-a/*", 100 * 1024)).await;
    let host = |r: &TestRegistry| r.url("").trim_start_matches("http://").to_owned();
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--retry-times=0",
            &format!("docker://{}/src/app:1", host(&source)),
            &format!("docker://{}/team-a/app:1", host(&target)),
        ])
        .output()
        .expect("skopeo is installed by scripts/test-all");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("over its storage quota"), "{err}");
    assert!(err.contains("used"), "{err}");
    assert!(err.contains("limit 100.0 KiB (102400 bytes)"), "{err}");

    // The refused layer is nowhere: not linked, no file, no upload left; no tag.
    let r = target
        .req(Method::HEAD, &format!("/v2/team-a/app/blobs/{layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let hex = layer.to_string().trim_start_matches("sha256:").to_owned();
    let data = target.data_dir().to_owned();
    assert!(!data.join("blobs/sha256").join(&hex).exists());
    assert!(!data
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .exists());
    assert_eq!(files(&data.join("uploads")), 0, "no upload file stays");
    let r = target
        .req(Method::GET, "/v2/team-a/app/manifests/1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let usage = target.state.registry.usage().await.unwrap();
    assert!(
        usage.repositories.iter().all(|r| r.bytes < 1024),
        "at most the small config blob fit: {usage:?}"
    );
}

#[tokio::test]
async fn declared_sizes_manifests_and_mounts_are_checked_and_usage_is_reported() {
    let reg = TestRegistry::start_with(quota("team-a/*", 10_000)).await;
    // Fits: 6,000 bytes.
    let six = noise("six", 6_000);
    let six_d = reg.push_blob("team-a/app", &six).await;
    // A declared monolithic push over the limit is refused before its body is read.
    let five = noise("five", 5_000);
    let five_d = Digest::sha256(&five);
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/team-a/app/blobs/uploads/?digest={five_d}"),
        )
        .body(five.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    assert_eq!(body["errors"][0]["detail"]["used"], 6_000);
    assert_eq!(body["errors"][0]["detail"]["limit"], 10_000);
    assert_eq!(body["errors"][0]["detail"]["attempted"], 5_000);
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("5.9 KiB (6000 bytes) used"), "{msg}");
    // A chunked upload with no declared size is refused at its commit, and ends.
    let r = reg
        .req(Method::POST, "/v2/team-a/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let r = reg
        .req(Method::PATCH, &location)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            vec![Ok::<_, std::io::Error>(five.clone())],
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::PUT, &format!("{location}?digest={five_d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "DENIED");
    let r = reg.req(Method::GET, &location).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "the refused session ended"
    );
    // Pushing a blob the repository holds adds nothing, so it is never refused.
    reg.push_blob("team-a/app", &six).await;
    // Another repository without a quota takes it; a mount back over the limit is not.
    let other = reg.push_blob("free/app", &five).await;
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/team-a/app/blobs/uploads/?mount={other}&from=free/app"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "DENIED");
    // A manifest counts its own bytes: one over the 4,000 left is refused.
    let big = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{six_d}","size":6000}},"layers":[],"annotations":{{"pad":"{}"}}}}"#,
        "x".repeat(4_100)
    );
    let r = reg
        .put_manifest("team-a/app", "big", OCI_MANIFEST, big.as_bytes())
        .await;
    assert_eq!(error_code(r).await, "DENIED");

    // Usage: the admin API, the stats API.
    let usage: Value = reg
        .req(Method::GET, "/api/v1/admin/usage")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let repos = usage["repositories"].as_array().unwrap();
    let a = repos
        .iter()
        .find(|r| r["repository"] == "team-a/app")
        .unwrap();
    assert_eq!(
        (a["bytes"].as_u64(), a["limit"].as_u64()),
        (Some(6_000), Some(10_000))
    );
    let free = repos
        .iter()
        .find(|r| r["repository"] == "free/app")
        .unwrap();
    assert_eq!(
        (free["bytes"].as_u64(), free["limit"].as_u64()),
        (Some(5_000), None)
    );
    assert_eq!(usage["stored_bytes"], 11_000);
    let stats: Value = reg
        .req(Method::GET, "/api/v1/stats/repositories/team-a/app")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["storage"]["bytes"], 6_000);
    assert_eq!(stats["storage"]["limit"], 10_000);
    // The server recorded its quotas in the data directory, where `berth admin usage
    // --data-dir` reads them without the configuration file.
    let recorded = berth_server::service::read_rules_file(reg.data_dir())
        .unwrap()
        .unwrap();
    assert_eq!(
        recorded,
        [QuotaRule {
            repositories: "team-a/*".into(),
            max_bytes: 10_000,
        }]
    );
}

#[tokio::test]
async fn retention_deletes_what_no_rule_keeps_and_the_sweep_frees_it() {
    let config = berth_server::Config {
        gc_grace: Duration::ZERO,
        gc: vec![GcRule {
            repositories: "*".into(),
            untagged_ttl: Some(Duration::ZERO),
        }],
        retention: vec![RetentionRule {
            repositories: "ci/*".into(),
            keep_last: Some(1),
            keep_pulled_within: Some(Duration::from_secs(86_400)),
            keep_semver: true,
            delete_matching: vec!["sha-*".into()],
            delete_older_than: None,
        }],
        ..Default::default()
    };
    let reg = TestRegistry::start_with(config).await;
    push_sized(&reg, "ci/app", "sha-b", 100).await;
    let (_, c) = push_sized(&reg, "ci/app", "sha-c", 100).await;
    push_sized(&reg, "ci/app", "main", 100).await;
    push_sized(&reg, "ci/app", "1.0.0", 100).await;
    // Pushed last, sha-a is the newest (and first by name should the second be shared).
    let (_, a) = push_sized(&reg, "ci/app", "sha-a", 100).await;
    // sha-c is pulled; the pull time is written by the analytics flush.
    let r = reg
        .req(Method::GET, &format!("/v2/ci/app/manifests/{c}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    reg.state.analytics.flush(false).await.unwrap();

    // The dry run explains every tag; nothing changes.
    let dry: Value = reg
        .req(Method::POST, "/api/v1/admin/gc")
        .json(&serde_json::json!({"dry_run": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let verdicts: Vec<(String, bool, String)> = dry["retention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["tag"].as_str().unwrap().to_owned(),
                v["delete"].as_bool().unwrap(),
                v["why"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let tag = |t: &str| verdicts.iter().find(|v| v.0 == t).unwrap().clone();
    assert_eq!(verdicts.len(), 5);
    assert_eq!(tag("1.0.0").2, "keep_semver: a release tag");
    assert!(tag("main").2.starts_with("matches none of delete_matching"));
    assert_eq!(
        tag("sha-a").2,
        "keep_last: one of the 1 most recently pushed"
    );
    assert!(
        tag("sha-c").2.starts_with("keep_pulled_within"),
        "{:?}",
        tag("sha-c")
    );
    assert!(tag("sha-b").1, "{:?}", tag("sha-b"));
    assert_eq!(dry["tags_deleted"], 1);
    assert_eq!(
        dry["manifests_deleted"], 1,
        "the dry run's mark sees sha-b gone"
    );

    let report = reg
        .state
        .registry
        .gc(GcOptions::default(), actor())
        .await
        .unwrap();
    assert_eq!(report.tags_deleted, 1);
    assert_eq!(report.retention.len(), 1);
    assert_eq!(report.manifests_deleted, 1);
    let r = reg
        .req(Method::GET, "/v2/ci/app/manifests/sha-b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let tags: Value = reg
        .req(Method::GET, "/v2/ci/app/tags/list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        tags["tags"],
        serde_json::json!(["1.0.0", "main", "sha-a", "sha-c"])
    );
    let r = reg
        .req(Method::HEAD, &format!("/v2/ci/app/manifests/{a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
