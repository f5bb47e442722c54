//! Garbage collection: explanations, dry runs, collections racing pushes and tag moves,
//! and runs stopped after each step as a crash would stop them.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_oci::Digest;
use berth_server::events::Actor;
use berth_server::service::{GcOptions, GcRule, GcStep};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{image_manifest, TestRegistry, OCI_INDEX, OCI_MANIFEST};

fn actor() -> Actor {
    Actor {
        name: "test".into(),
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// A registry whose collector has no grace window and deletes untagged manifests of
/// every repository as soon as nothing keeps them.
async fn eager() -> TestRegistry {
    let config = berth_server::Config {
        gc_grace: Duration::ZERO,
        gc: vec![GcRule {
            repositories: "*".into(),
            untagged_ttl: Some(Duration::ZERO),
        }],
        ..Default::default()
    };
    TestRegistry::start_with(config).await
}

fn descriptor(media_type: &str, d: &Digest, len: usize) -> Value {
    json!({"mediaType": media_type, "digest": d.to_string(), "size": len})
}

/// Pushes an image by digest (untagged), a one-platform index over it under `tag`, and
/// a signature whose subject is the image: (image, index, signature, image layer,
/// signature layer).
async fn push_signed_index(reg: &TestRegistry, repo: &str, tag: &str, seed: &str) -> [Digest; 5] {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
    let layer = format!("layer of {seed}");
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let l = reg.push_blob(repo, layer.as_bytes()).await;
    let image = image_manifest(&c, config.len(), &[(&l, layer.len())], None);
    let image_d = Digest::sha256(&image);
    let r = reg
        .put_manifest(repo, &image_d.to_string(), OCI_MANIFEST, &image)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut child = descriptor(OCI_MANIFEST, &image_d, image.len());
    child["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child],
    }))
    .unwrap();
    let index_d = Digest::sha256(&index);
    let r = reg.put_manifest(repo, tag, OCI_INDEX, &index).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let empty = reg.push_blob(repo, b"{}").await;
    let sig_layer = format!("signature of {seed}");
    let s = reg.push_blob(repo, sig_layer.as_bytes()).await;
    let sig = image_manifest(
        &empty,
        2,
        &[(&s, sig_layer.len())],
        Some(descriptor(OCI_MANIFEST, &image_d, image.len())),
    );
    let sig_d = Digest::sha256(&sig);
    let r = reg
        .put_manifest(repo, &sig_d.to_string(), OCI_MANIFEST, &sig)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    [image_d, index_d, sig_d, l, s]
}

/// Pulls `reference` of `repo` completely, verifying every digest: the manifest, the
/// children of an index, the referrers of each manifest, and every blob. Returns the
/// blobs and manifests it read.
async fn pull_verified(reg: &TestRegistry, repo: &str, reference: &str) -> HashSet<Digest> {
    let mut seen = HashSet::new();
    let mut queue = vec![reference.to_owned()];
    while let Some(reference) = queue.pop() {
        let r = reg
            .req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{repo}:{reference}");
        let bytes = r.bytes().await.unwrap();
        let d = Digest::sha256(&bytes);
        if reference.starts_with("sha256:") {
            assert_eq!(
                d.to_string(),
                reference,
                "manifest bytes match their digest"
            );
        }
        if !seen.insert(d.clone()) {
            continue;
        }
        let m: Value = serde_json::from_slice(&bytes).unwrap();
        for child in m["manifests"].as_array().into_iter().flatten() {
            queue.push(child["digest"].as_str().unwrap().to_owned());
        }
        let blobs = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(m.get("config"));
        for b in blobs {
            let bd: Digest = b["digest"].as_str().unwrap().parse().unwrap();
            let r = reg
                .req(Method::GET, &format!("/v2/{repo}/blobs/{bd}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{repo} blob {bd}");
            assert_eq!(Digest::sha256(&r.bytes().await.unwrap()), bd);
            seen.insert(bd);
        }
        let r = reg
            .req(Method::GET, &format!("/v2/{repo}/referrers/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let list: Value = r.json().await.unwrap();
        for referrer in list["manifests"].as_array().into_iter().flatten() {
            queue.push(referrer["digest"].as_str().unwrap().to_owned());
        }
    }
    seen
}

/// Every tag of `repo` (hidden ones included) pulls completely; what they need.
async fn pull_all_tags(reg: &TestRegistry, repo: &str) -> HashSet<Digest> {
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/tags/list?all=true"))
        .send()
        .await
        .unwrap();
    let tags: Value = r.json().await.unwrap();
    let mut needed = HashSet::new();
    for tag in tags["tags"].as_array().into_iter().flatten() {
        needed.extend(pull_verified(reg, repo, tag.as_str().unwrap()).await);
    }
    needed
}

/// Digests of the blob files in the data directory.
fn blob_files(reg: &TestRegistry) -> HashSet<Digest> {
    std::fs::read_dir(reg.data_dir().join("blobs/sha256"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            format!("sha256:{name}").parse().ok()
        })
        .collect()
}

async fn explain(reg: &TestRegistry, d: &Digest) -> Value {
    let r = reg
        .req(Method::GET, &format!("/api/v1/admin/gc/explain/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn explain_names_the_tag_index_manifest_path_and_the_signature_referrer() {
    let reg = eager().await;
    let [image, index, sig, layer, sig_layer] =
        push_signed_index(&reg, "team/app", "v1", "a").await;
    let stray = reg.push_blob("team/app", b"never referenced").await;

    let e = explain(&reg, &layer).await;
    assert_eq!(e["verdict"], "kept");
    assert_eq!(
        e["reasons"][0]["path"],
        json!([
            "tag v1",
            format!("index {index}"),
            format!("manifest {image}"),
            format!("blob {layer}")
        ])
    );
    assert_eq!(e["reasons"][0]["repository"], "team/app");
    let e = explain(&reg, &sig_layer).await;
    assert_eq!(e["verdict"], "kept");
    assert_eq!(
        e["reasons"][0]["path"],
        json!([
            "tag v1",
            format!("index {index}"),
            format!("manifest {image}"),
            format!("referrer {sig}"),
            format!("blob {sig_layer}")
        ])
    );
    let e = explain(&reg, &stray).await;
    assert_eq!(e["verdict"], "garbage", "{e}");
    let e = explain(&reg, &Digest::sha256(b"nothing")).await;
    assert_eq!(e["verdict"], "unknown");

    // A dry run says what would go, per repository, and frees nothing.
    let r = reg
        .req(Method::POST, "/api/v1/admin/gc")
        .json(&json!({"dry_run": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let dry: Value = r.json().await.unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["blobs_deleted"], 1, "{dry}");
    assert_eq!(dry["bytes_freed"], "never referenced".len());
    assert_eq!(
        dry["repositories"],
        json!([{"repository": "team/app", "manifests": 0, "links": 1, "bytes": 16}])
    );
    assert!(blob_files(&reg).contains(&stray));

    let r = reg
        .req(Method::POST, "/api/v1/admin/gc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let run: Value = r.json().await.unwrap();
    assert_eq!(run["blobs_deleted"], 1, "{run}");
    assert!(!blob_files(&reg).contains(&stray));
    let needed = pull_all_tags(&reg, "team/app").await;
    assert!(needed.contains(&sig_layer) && needed.contains(&layer));

    // Runs are counted and audited.
    let text = reg
        .req(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("berth_gc_runs_total 1"), "{text}");
    assert!(text.contains("berth_gc_blobs_deleted_total 1"));
    // And shown to administrators on the dashboard.
    let page = reg
        .req(Method::GET, "/ui/")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Garbage collection") && page.contains("1 blobs, 0 manifests"),
        "{page}"
    );
}

#[tokio::test]
async fn the_grace_window_keeps_young_blobs_and_an_admin_grace_overrides_it() {
    let config = berth_server::Config {
        gc_grace: Duration::from_secs(3600),
        ..Default::default()
    };
    let reg = TestRegistry::start_with(config).await;
    let stray = reg.push_blob("app", b"young stray").await;
    let e = explain(&reg, &stray).await;
    assert_eq!(e["verdict"], "kept");
    assert_eq!(
        e["reasons"][0]["why"],
        "a blob linked within the grace window"
    );
    let report = reg
        .state
        .registry
        .gc(GcOptions::default(), actor())
        .await
        .unwrap();
    assert_eq!(report.blobs_deleted, 0);
    assert!(blob_files(&reg).contains(&stray));
    let report = reg
        .state
        .registry
        .gc(
            GcOptions {
                grace: Some(Duration::ZERO),
                ..GcOptions::default()
            },
            actor(),
        )
        .await
        .unwrap();
    assert_eq!(report.blobs_deleted, 1);
    assert!(!blob_files(&reg).contains(&stray));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_and_tag_moves_survive_repeated_collections() {
    let config = berth_server::Config {
        // Long enough for a pusher's blobs to wait for their manifest, short enough
        // that each run of the loop below has garbage from a second ago.
        gc_grace: Duration::from_secs(2),
        gc: vec![GcRule {
            repositories: "*".into(),
            untagged_ttl: Some(Duration::ZERO),
        }],
        ..Default::default()
    };
    let reg = Arc::new(TestRegistry::start_with(config).await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut pushers = Vec::new();
    for p in 0..4 {
        let reg = reg.clone();
        let stop = stop.clone();
        pushers.push(tokio::spawn(async move {
            let repo = format!("ci/app{}", p % 2);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let seed = format!("{p}-{i}");
                // A kept image, a moving tag (its previous target becomes garbage), a
                // signed index, and a stray blob.
                reg.push_image(&repo, &format!("keep-{seed}"), &seed).await;
                reg.push_image(&repo, &format!("latest-{p}"), &format!("moving-{seed}"))
                    .await;
                if i % 3 == 0 {
                    push_signed_index(&reg, &repo, &format!("signed-{seed}"), &seed).await;
                }
                reg.push_blob(&repo, format!("stray {seed}").as_bytes())
                    .await;
                i += 1;
            }
            i
        }));
    }
    let mut runs = 0;
    let mut freed = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < deadline {
        let report = reg
            .state
            .registry
            .gc(GcOptions::default(), actor())
            .await
            .unwrap();
        freed += report.blobs_deleted;
        runs += 1;
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut pushed = 0;
    for p in pushers {
        pushed += tokio::time::timeout(Duration::from_secs(60), p)
            .await
            .unwrap()
            .unwrap();
    }
    assert!(runs >= 2 && pushed >= 4, "runs {runs}, images {pushed}");
    assert!(freed > 0, "runs while pushing collected older garbage");

    let mut needed = HashSet::new();
    for repo in ["ci/app0", "ci/app1"] {
        needed.extend(pull_all_tags(&reg, repo).await);
    }
    // Once the pushes are over, a run without a grace window leaves only what tags need.
    reg.state
        .registry
        .gc(
            GcOptions {
                grace: Some(Duration::ZERO),
                ..GcOptions::default()
            },
            actor(),
        )
        .await
        .unwrap();
    let mut after = HashSet::new();
    for repo in ["ci/app0", "ci/app1"] {
        after.extend(pull_all_tags(&reg, repo).await);
    }
    assert_eq!(after, needed, "the collection lost nothing a tag needs");
    let files = blob_files(&reg);
    let blobs_needed: HashSet<Digest> = files.intersection(&needed).cloned().collect();
    assert_eq!(files, blobs_needed, "every file left is needed by a tag");
}

#[tokio::test]
async fn a_run_stopped_after_any_step_loses_nothing_referenced() {
    for step in [
        GcStep::Manifests,
        GcStep::Links,
        GcStep::Tombstones,
        GcStep::FilesDeleted,
    ] {
        let reg = eager().await;
        push_signed_index(&reg, "app", "v1", "kept").await;
        // Garbage: an image whose tag moved away, and a stray blob.
        let (_, old) = reg.push_image("app", "moving", "old").await;
        reg.push_image("app", "moving", "new").await;
        let stray = reg.push_blob("app", b"stray").await;
        let needed = pull_all_tags(&reg, "app").await;

        let halted = GcOptions {
            halt_after: Some(step),
            ..GcOptions::default()
        };
        reg.state.registry.gc(halted, actor()).await.unwrap();
        assert_eq!(pull_all_tags(&reg, "app").await, needed, "after {step:?}");

        // The next run finishes the work, except files whose tombstone the stopped run
        // left: those wait until the tombstone goes stale.
        let report = reg
            .state
            .registry
            .gc(GcOptions::default(), actor())
            .await
            .unwrap();
        assert_eq!(
            pull_all_tags(&reg, "app").await,
            needed,
            "after {step:?}, then a run"
        );
        let r = reg
            .req(Method::GET, &format!("/v2/app/manifests/{old}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{step:?}");
        let r = reg
            .req(Method::HEAD, &format!("/v2/app/blobs/{stray}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{step:?}");
        let files = blob_files(&reg);
        match step {
            GcStep::Tombstones => assert!(files.contains(&stray), "{report:?}"),
            _ => assert!(!files.contains(&stray), "{step:?}: {report:?}"),
        }
        let left: HashSet<Digest> = files.difference(&needed).cloned().collect();
        match step {
            GcStep::Tombstones => assert!(!left.is_empty()),
            _ => assert!(left.is_empty(), "{step:?}: {left:?}"),
        }
    }
}

/// A number from the environment, for the benchmark's sizes.
fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The collector at scale (bench/gc runs it; ignored otherwise): 200,000 manifests of 4
/// blobs each in 100 repositories (a fifth untagged, under a rule that collects them),
/// 100,000 linked blobs no manifest references and 100,000 orphan files: 1,000,000 blob
/// files. One collection runs while a client keeps pushing images; printed: the run's
/// time, its longest write, and the pushes and their slowest answer during it.
/// `BERTH_GC_BENCH_SCALE` scales every count (0.01 for a quick check).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: run by bench/gc"]
async fn gc_at_scale() {
    use berth_meta::{MetadataStore, NewManifest};
    use futures_util::StreamExt;

    let scale = env_num("BERTH_GC_BENCH_SCALE", 1.0);
    let images = (200_000.0 * scale) as usize;
    let loose = (100_000.0 * scale) as usize;
    let repos = 100usize;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let blob_dir = data.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).unwrap();
    let started = std::time::Instant::now();
    {
        let meta: Arc<dyn MetadataStore> =
            Arc::new(berth_meta::sqlite::SqliteStore::open(data.join("metadata.db")).unwrap());
        let blob =
            |kind: &str, i: usize, j: usize| Digest::sha256(format!("{kind}/{i}/{j}").as_bytes());
        // Files first (empty: the collector never reads them), then the database.
        for i in 0..images {
            for j in 0..4 {
                std::fs::write(blob_dir.join(blob("layer", i, j).hex()), b"").unwrap();
            }
        }
        for i in 0..loose {
            std::fs::write(blob_dir.join(blob("loose", i, 0).hex()), b"").unwrap();
            std::fs::write(blob_dir.join(blob("orphan", i, 0).hex()), b"").unwrap();
        }
        let jobs = futures_util::stream::iter(0..images + loose).map(|i| {
            let meta = meta.clone();
            async move {
                let repo = berth_oci::RepoName::parse(&format!("bench/r{}", i % repos)).unwrap();
                if i >= images {
                    meta.blob_link(&repo, &blob("loose", i - images, 0), 0)
                        .await
                        .unwrap();
                    return;
                }
                let layers: Vec<Digest> = (0..4).map(|j| blob("layer", i, j)).collect();
                for l in &layers {
                    meta.blob_link(&repo, l, 0).await.unwrap();
                }
                let content = format!("manifest {i}");
                let m = NewManifest {
                    digest: Digest::sha256(content.as_bytes()),
                    media_type: OCI_MANIFEST.into(),
                    content: content.into_bytes().into(),
                    blobs: layers,
                    children: vec![],
                    subject: None,
                    artifact_type: None,
                    annotations_json: String::new(),
                    version: None,
                    platform: None,
                    mirrored: false,
                };
                // Every fifth image is untagged: its tag moved on.
                let tags: Vec<berth_oci::Tag> = if i % 5 == 0 {
                    vec![]
                } else {
                    vec![berth_oci::Tag::parse(&format!("t{i}")).unwrap()]
                };
                meta.manifest_put(&repo, &m, &tags, None).await.unwrap();
            }
        });
        jobs.buffer_unordered(512).collect::<Vec<()>>().await;
    }
    let populated = started.elapsed();
    let config = berth_server::Config {
        gc_grace: Duration::ZERO,
        gc: vec![GcRule {
            repositories: "bench/*".into(),
            untagged_ttl: Some(Duration::ZERO),
        }],
        ..Default::default()
    };
    let reg = Arc::new(TestRegistry::start_in(&data, config).await);
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (reg, stop) = (reg.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut n, mut slowest) = (0u32, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let t = std::time::Instant::now();
                reg.push_image("bench/live", &format!("v{n}"), &format!("live-{n}"))
                    .await;
                slowest = slowest.max(t.elapsed());
                n += 1;
            }
            (n, slowest)
        })
    };
    let report = reg
        .state
        .registry
        .gc(GcOptions::default(), actor())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let (pushes, slowest) = pusher.await.unwrap();
    println!(
        "gc-bench files={} manifests={} populate_s={:.1} gc_s={:.1} steps_ms={:?} longest_write_ms={:.1} writes={} \
         manifests_deleted={} links_removed={} blobs_deleted={} pushes_during={} slowest_push_ms={:.1}",
        images * 4 + 2 * loose,
        images,
        populated.as_secs_f64(),
        report.duration_ms as f64 / 1000.0,
        report.step_ms,
        report.longest_write_ms,
        report.writes,
        report.manifests_deleted,
        report.links_removed,
        report.blobs_deleted,
        pushes,
        slowest.as_secs_f64() * 1000.0,
    );
    assert_eq!(report.manifests_deleted as usize, images.div_ceil(5));
    assert_eq!(
        report.blobs_deleted as usize,
        images.div_ceil(5) * 4 + 2 * loose
    );
}
