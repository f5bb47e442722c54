//! Replication end to end: a source Berth replicating to a second Berth (in process, on
//! 127.0.0.1:0) and to CNCF Distribution (`docker-registry`): tags with cosign
//! signatures and an OCI referrer arrive once with identical digests; tag moves follow;
//! deletions only where the rule says so; a stopped target leaves failing rows that the
//! status shows, and a restarted source resumes its queue; a full sync queues what was
//! pushed before the rule existed.

use std::time::{Duration, Instant};

use berth_oci::Digest;
use berth_server::replication::{ReplicationReport, ReplicationRule};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{image_manifest, TestRegistry, OCI_MANIFEST};

/// A rule replicating every repository to `url`, retrying at most a second apart.
fn rule(name: &str, url: &str, delete: bool) -> ReplicationRule {
    toml::from_str(&format!(
        "name = \"{name}\"\nurl = \"{url}\"\ndelete = {delete}\nretry_max_interval = \"1s\"\n"
    ))
    .unwrap()
}

fn config(rules: Vec<ReplicationRule>) -> berth_server::Config {
    berth_server::Config {
        replication: rules,
        ..Default::default()
    }
}

async fn report(source: &TestRegistry) -> ReplicationReport {
    let r = source
        .req(Method::GET, "/api/v1/admin/replication")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// Waits until no rule has a pending change (at most 60 s).
async fn drained(source: &TestRegistry) -> ReplicationReport {
    let start = Instant::now();
    loop {
        let r = report(source).await;
        if r.rules.iter().all(|x| x.pending == 0) {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "replication did not finish: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The digest a registry at `base` answers for `repo:reference`, if any.
async fn head(base: &str, repo: &str, reference: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .head(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await
        .unwrap();
    if r.status() == StatusCode::NOT_FOUND {
        return None;
    }
    assert_eq!(r.status(), StatusCode::OK, "HEAD {repo}:{reference}");
    Some(
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned(),
    )
}

/// Pushes a cosign-style signature of `subject` under `sha256-<hex>.sig`; its digest.
async fn push_signature(reg: &TestRegistry, repo: &str, subject: &Digest) -> Digest {
    let payload =
        json!({"critical": {"image": {"docker-manifest-digest": subject.to_string()}}}).to_string();
    let config = b"{}";
    let c = reg.push_blob(repo, config).await;
    let p = reg.push_blob(repo, payload.as_bytes()).await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": p.to_string(), "size": payload.len(),
                    "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ=="}}],
    }))
    .unwrap();
    let tag = format!("sha256-{}.sig", subject.hex());
    let r = reg.put_manifest(repo, &tag, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    Digest::sha256(&m)
}

/// Pushes an OCI referrer (an SBOM-like artifact) of `subject` by digest; its digest.
async fn push_referrer(reg: &TestRegistry, repo: &str, subject: &Digest, size: usize) -> Digest {
    let blob = format!("{{\"sbom\":\"{subject}\"}}");
    let b = reg.push_blob(repo, blob.as_bytes()).await;
    let empty = reg.push_blob(repo, b"{}").await;
    let mut m: Value = serde_json::from_slice(&image_manifest(
        &empty,
        2,
        &[(&b, blob.len())],
        Some(json!({"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": size})),
    ))
    .unwrap();
    m["artifactType"] = json!("application/spdx+json");
    m["config"]["mediaType"] = json!("application/vnd.oci.empty.v1+json");
    let m = serde_json::to_vec(&m).unwrap();
    let d = Digest::sha256(&m);
    let r = reg
        .put_manifest(repo, &d.to_string(), OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    d
}

/// What was pushed: (tag, image digest, signature digest) and the referrer of the first.
struct Pushed {
    images: Vec<(String, Digest, Digest)>,
    referrer: Digest,
}

async fn push_tags(reg: &TestRegistry, repo: &str, n: usize) -> Pushed {
    let mut images = Vec::new();
    for i in 0..n {
        let tag = format!("v{i}");
        let (_, d) = reg.push_image(repo, &tag, &format!("{repo}-{i}")).await;
        let sig = push_signature(reg, repo, &d).await;
        images.push((tag, d, sig));
    }
    let (m, _) = {
        let r = reg
            .req(Method::GET, &format!("/v2/{repo}/manifests/v0"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        (r.bytes().await.unwrap(), ())
    };
    let referrer = push_referrer(reg, repo, &images[0].1, m.len()).await;
    Pushed { images, referrer }
}

/// Every tag and signature of `p` is at `base` with the source's digests.
async fn assert_arrived(base: &str, repo: &str, p: &Pushed) {
    for (tag, d, sig) in &p.images {
        assert_eq!(
            head(base, repo, tag).await.as_deref(),
            Some(d.to_string().as_str()),
            "{tag}"
        );
        let sig_tag = format!("sha256-{}.sig", d.hex());
        assert_eq!(
            head(base, repo, &sig_tag).await.as_deref(),
            Some(sig.to_string().as_str()),
            "signature of {tag}"
        );
    }
    assert!(head(base, repo, &p.referrer.to_string()).await.is_some());
}

/// `berth_manifests_pushed_total` of a registry: every manifest PUT it stored.
fn manifests_pushed(reg: &TestRegistry) -> u64 {
    let text = reg.state.metrics.render((0, 0));
    text.lines()
        .find_map(|l| l.strip_prefix("berth_manifests_pushed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn tags_signatures_and_referrers_reach_a_second_berth_once() {
    let target = TestRegistry::start().await;
    let source = TestRegistry::start_with(config(vec![rule("dr", &target.base, false)])).await;
    let pushed = push_tags(&source, "team/app", 20).await;
    let r = drained(&source).await;
    assert_arrived(&target.base, "team/app", &pushed).await;
    // The referrer is found through the target's referrers API.
    let v0 = &pushed.images[0].1;
    let listed: Value = target
        .req(Method::GET, &format!("/v2/team/app/referrers/{v0}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&pushed.referrer.to_string().as_str()),
        "{listed:?}"
    );
    // Each manifest was written to the target once: 20 images, 20 signatures, 1 referrer.
    assert_eq!(manifests_pushed(&target), 41);
    let s = &r.rules[0];
    assert_eq!(
        (s.name.as_str(), s.pending, s.failing, s.dead, s.failures),
        ("dr", 0, 0, 0, 0)
    );
    assert!(s.copied >= 41 && s.last_success.is_some() && s.lag_seconds.is_none());

    // A tag move follows; a deletion does not (delete = false).
    let (_, moved) = source.push_image("team/app", "v1", "moved").await;
    let r = source
        .req(Method::DELETE, "/v2/team/app/manifests/v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    drained(&source).await;
    assert_eq!(
        head(&target.base, "team/app", "v1").await,
        Some(moved.to_string())
    );
    assert!(head(&target.base, "team/app", "v2").await.is_some());
    assert!(head(&source.base, "team/app", "v2").await.is_none());
    assert_eq!(manifests_pushed(&target), 42);
}

#[tokio::test]
async fn deletions_reach_only_targets_whose_rule_deletes() {
    let keep = TestRegistry::start().await;
    let mirror = TestRegistry::start().await;
    let source = TestRegistry::start_with(config(vec![
        rule("keep", &keep.base, false),
        rule("mirror", &mirror.base, true),
    ]))
    .await;
    let (_, a) = source.push_image("app", "a", "a").await;
    let (_, b) = source.push_image("app", "b", "b").await;
    drained(&source).await;
    for t in [&keep, &mirror] {
        assert_eq!(head(&t.base, "app", "a").await, Some(a.to_string()));
        assert_eq!(head(&t.base, "app", "b").await, Some(b.to_string()));
    }
    // A tag deletion, and a manifest deletion by digest.
    for path in [
        "/v2/app/manifests/a".to_owned(),
        format!("/v2/app/manifests/{b}"),
    ] {
        let r = source.req(Method::DELETE, &path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{path}");
    }
    drained(&source).await;
    assert_eq!(head(&keep.base, "app", "a").await, Some(a.to_string()));
    assert_eq!(head(&keep.base, "app", "b").await, Some(b.to_string()));
    assert!(head(&mirror.base, "app", "a").await.is_none());
    // The tag went, its manifest stayed (a tag deletion is not a manifest deletion).
    assert!(head(&mirror.base, "app", &a.to_string()).await.is_some());
    assert!(head(&mirror.base, "app", "b").await.is_none());
    assert!(head(&mirror.base, "app", &b.to_string()).await.is_none());
}

#[tokio::test]
async fn a_stopped_target_leaves_failing_rows_and_a_restarted_source_resumes() {
    // The target's address, with nothing listening yet: connections are refused.
    let spot = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = spot.local_addr().unwrap();
    drop(spot);
    let url = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let source = TestRegistry::start_in(dir.path(), config(vec![rule("dr", &url, false)])).await;
    let pushed = push_tags(&source, "app", 5).await;
    let start = Instant::now();
    let failing = loop {
        let r = report(&source).await;
        if r.rules[0].failing >= 5 && !r.failing.is_empty() {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no failures: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let s = &failing.rules[0];
    assert_eq!(s.dead, 0);
    assert!(s.pending >= 11, "{s:?}");
    assert!(s.lag_seconds.is_some() && s.last_failure.is_some());
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains(&addr.to_string()),
        "{s:?}"
    );
    let f = &failing.failing[0];
    assert_eq!(
        (f.rule.as_str(), f.repository.as_str(), f.dead),
        ("dr", "app", false)
    );
    assert!(f.attempts >= 1 && f.last_error.is_some() && f.next_attempt.is_some());

    // The source restarts over the same data: its queue is still there.
    source.stop().await;
    let source = TestRegistry::start_in(dir.path(), config(vec![rule("dr", &url, false)])).await;
    assert!(report(&source).await.rules[0].pending >= 11);
    // The target comes up on its address; everything arrives, each manifest once.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let target =
        TestRegistry::start_on(listener, target_dir.path(), berth_server::Config::default()).await;
    let r = drained(&source).await;
    assert_arrived(&target.base, "app", &pushed).await;
    assert_eq!(manifests_pushed(&target), 11);
    assert_eq!(r.rules[0].failing, 0);
    assert!(r.rules[0].failures >= 5);
    assert!(r.failing.is_empty());
}

#[tokio::test]
async fn a_full_sync_queues_what_was_pushed_before_the_rule() {
    let target = TestRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let plain = TestRegistry::start_in(dir.path(), berth_server::Config::default()).await;
    let pushed = push_tags(&plain, "old/app", 3).await;
    let (_, other) = plain.push_image("elsewhere", "x", "x").await;
    plain.stop().await;
    let mut only_old = rule("dr", &target.base, false);
    only_old.repositories = "old/*".into();
    let source = TestRegistry::start_in(dir.path(), config(vec![only_old])).await;
    assert_eq!(report(&source).await.rules[0].pending, 0);
    let r = source
        .req(Method::POST, "/api/v1/admin/replication/nope/sync")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = source
        .req(Method::POST, "/api/v1/admin/replication/dr/sync")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sync: Value = r.json().await.unwrap();
    // Visible tags only: the signatures travel with their subjects.
    assert_eq!(sync, json!({"rule": "dr", "repositories": 1, "queued": 3}));
    drained(&source).await;
    assert_arrived(&target.base, "old/app", &pushed).await;
    assert!(head(&target.base, "elsewhere", &other.to_string())
        .await
        .is_none());
    let before = manifests_pushed(&target);
    // Again: everything is there, nothing is written twice.
    let r = source
        .req(Method::POST, "/api/v1/admin/replication/dr/sync")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drained(&source).await;
    assert_eq!(manifests_pushed(&target), before);
}

#[tokio::test]
async fn tags_and_signatures_reach_cncf_distribution() {
    if std::process::Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: docker-registry (CNCF Distribution) is not installed");
        return;
    }
    let distribution = crate::mirror::Distribution::start();
    let source =
        TestRegistry::start_with(config(vec![rule("cncf", &distribution.base, false)])).await;
    let pushed = push_tags(&source, "team/app", 20).await;
    let r = drained(&source).await;
    assert_eq!(r.rules[0].failures, 0, "{r:?}");
    assert_arrived(&distribution.base, "team/app", &pushed).await;
    // Distribution 2.8 has no referrers API: the referrer is listed in the tag schema's
    // index, as the OCI Distribution Spec asks of clients.
    let v0 = &pushed.images[0].1;
    let index: Value = reqwest::Client::new()
        .get(format!(
            "{}/v2/team/app/manifests/sha256-{}",
            distribution.base,
            v0.hex()
        ))
        .header("accept", "application/vnd.oci.image.index.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [pushed.referrer.to_string().as_str()]);
}

/// The dashboard's admin page shows each rule's status, the same as the status API's,
/// and only to administrators.
#[tokio::test]
async fn the_dashboard_shows_replication_to_administrators_only() {
    let target = TestRegistry::start().await;
    // A target with nothing listening: connections are refused.
    let spot = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = spot.local_addr().unwrap();
    drop(spot);
    let source = TestRegistry::start_with(config(vec![
        rule("dr", &target.base, false),
        rule("offsite", &format!("http://{down}"), false),
    ]))
    .await;
    source.push_image("team/app", "v1", "dashboard").await;
    let start = Instant::now();
    let r = loop {
        let r = report(&source).await;
        let (dr, offsite) = (&r.rules[0], &r.rules[1]);
        if dr.pending == 0 && dr.last_success.is_some() && offsite.last_error.is_some() {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "replication did not settle: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (dr, offsite) = (&r.rules[0], &r.rules[1]);

    let admin = berth_server::accounts::Admin::open_dir(source.data_dir(), "test").unwrap();
    admin
        .user_add("boss", "password-123", &["*:admin".parse().unwrap()])
        .await
        .unwrap();
    admin
        .user_add("alice", "password-123", &["team/*:pull".parse().unwrap()])
        .await
        .unwrap();
    source.state.auth.invalidate();
    let page = |user: Option<&str>| {
        let rb = source.req(Method::GET, "/ui/admin");
        match user {
            Some(u) => rb.basic_auth(u, Some("password-123")),
            None => rb,
        }
        .send()
    };
    assert_eq!(page(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        page(Some("alice")).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let r = page(Some("boss")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    let section = html
        .split("<section id=\"replication\">")
        .nth(1)
        .and_then(|s| s.split("</section>").next())
        .expect("a replication section");
    let rows: Vec<&str> = section.split("<tr class=\"rule\">").skip(1).collect();
    assert_eq!(rows.len(), 2, "{section}");
    let cells = |row: &str| -> Vec<String> {
        row.split("<td>")
            .skip(1)
            .map(|c| c.split("</td>").next().unwrap().to_owned())
            .collect()
    };
    let ok = cells(rows[0]);
    assert_eq!(ok[0], "dr");
    assert_eq!(
        Some(ok[1].as_str()),
        dr.url.as_deref(),
        "the target as the API gives it"
    );
    assert!(ok[1].starts_with(&target.base));
    assert_eq!(ok[2], "0", "nothing queued");
    assert_eq!(ok[3], "none", "no lag");
    assert_eq!(ok[6], dr.copied.to_string());
    assert_eq!(&ok[8], dr.last_success.as_ref().unwrap(), "RFC 3339");
    assert!(ok[8].ends_with('Z'), "{}", ok[8]);
    let failing = cells(rows[1]);
    assert_eq!(failing[0], "offsite");
    assert_eq!(Some(failing[1].as_str()), offsite.url.as_deref());
    assert!(failing[2].parse::<u64>().unwrap() >= 1, "{failing:?}");
    assert!(failing[3].contains(" s"), "a lag: {failing:?}");
    assert!(failing[7].parse::<u64>().unwrap() >= offsite.failures.max(1));
    assert_eq!(failing[8], "never");
    assert!(failing[9].contains(&down.to_string()), "{failing:?}");
    assert!(section.contains("Failing changes"), "{section}");
}
