//! The trust policy over HTTP: pulls of unsigned manifests refused, signed ones (cosign
//! v3 bundle referrers and v2 `.sig` tags, made with berth-trust) allowed, children of a
//! signed index allowed, and the publish gate hiding release tags until a signature
//! arrives, atomically under concurrent pushes; then the same with skopeo and podman.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_oci::Digest;
use berth_server::policy::TrustPolicyRule;
use berth_trust::bundle::Bundle;
use berth_trust::intoto::{Statement, COSIGN_SIGN_PREDICATE};
use berth_trust::oci::{
    append_legacy_layer, bundle_referrer, legacy_tag, LegacyKind, LegacyLayer, SubjectDescriptor,
};
use berth_trust::{simple_signing, KeySigner, PrivateKey};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{error_code, TestRegistry, OCI_INDEX, OCI_MANIFEST};

/// A signing key and its public key written where a rule can name it.
struct Key {
    signer: KeySigner,
    path: PathBuf,
    fingerprint: String,
}

fn key(dir: &Path, name: &str) -> Key {
    let private = PrivateKey::generate_p256().unwrap();
    let public = private.public_key();
    let path = dir.join(name);
    std::fs::write(&path, public.to_pem()).unwrap();
    Key {
        signer: KeySigner::new(private),
        path,
        fingerprint: public.fingerprint(),
    }
}

fn rule(repositories: &str, keys: &[&Key], gate: bool) -> TrustPolicyRule {
    TrustPolicyRule {
        repositories: repositories.into(),
        require_signature: keys.iter().map(|k| k.path.clone()).collect(),
        gate_release_tags: gate,
    }
}

async fn start(rules: Vec<TrustPolicyRule>) -> TestRegistry {
    let config = berth_server::Config {
        trust_policy: rules,
        ..Default::default()
    };
    TestRegistry::start_with(config).await
}

/// Pushes a runnable image (one empty uncompressed tar layer, so podman can unpack it)
/// under `tags` and returns its manifest and digest; `seed` makes it unique.
async fn push_image(
    reg: &TestRegistry,
    repo: &str,
    seed: &str,
    tags: &[&str],
) -> (Vec<u8>, Digest) {
    let layer = vec![0u8; 1024];
    let l = reg.push_blob(repo, &layer).await;
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": [l.to_string()]},
    })
    .to_string();
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l.to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let d = Digest::sha256(&m);
    let r = put(reg, repo, &d, &m, OCI_MANIFEST, tags).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    (m, d)
}

async fn put(
    reg: &TestRegistry,
    repo: &str,
    d: &Digest,
    body: &[u8],
    media_type: &str,
    tags: &[&str],
) -> reqwest::Response {
    let q: Vec<String> = tags.iter().map(|t| format!("tag={t}")).collect();
    reg.req(
        Method::PUT,
        &format!("/v2/{repo}/manifests/{d}?{}", q.join("&")),
    )
    .header("content-type", media_type)
    .body(body.to_vec())
    .send()
    .await
    .unwrap()
}

/// Signs `digest` the cosign v3 way: a bundle referrer, pushed by digest.
async fn sign_bundle(
    reg: &TestRegistry,
    repo: &str,
    digest: &Digest,
    media_type: &str,
    size: usize,
    key: &Key,
) -> Digest {
    let statement =
        Statement::cosign_signature(Some(&format!("localhost/{repo}")), digest, &BTreeMap::new());
    let bundle = Bundle::sign_statement(&key.signer, &statement)
        .unwrap()
        .to_json()
        .unwrap();
    let subject = SubjectDescriptor {
        media_type: media_type.into(),
        digest: digest.clone(),
        size: size as u64,
    };
    let art = bundle_referrer(
        bundle,
        &subject,
        COSIGN_SIGN_PREDICATE,
        "2026-01-01T00:00:00Z",
    )
    .unwrap();
    for b in &art.blobs {
        reg.push_blob(repo, &b.bytes).await;
    }
    let r = put(
        reg,
        repo,
        &art.manifest_digest,
        &art.manifest,
        art.media_type,
        &[],
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    art.manifest_digest
}

/// Signs `digest` the cosign v2 way: a simple-signing layer under `sha256-<hex>.sig`.
async fn sign_legacy(reg: &TestRegistry, repo: &str, digest: &Digest, key: &Key) -> String {
    let payload =
        simple_signing::Payload::new(&format!("localhost/{repo}"), digest, &BTreeMap::new());
    let signed = simple_signing::sign(&key.signer, &payload).unwrap();
    let art = append_legacy_layer(None, LegacyLayer::signature(&signed)).unwrap();
    for b in &art.blobs {
        reg.push_blob(repo, &b.bytes).await;
    }
    let tag = legacy_tag(digest, LegacyKind::Signature);
    let r = reg
        .put_manifest(repo, &tag, art.media_type, &art.manifest)
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    tag
}

async fn status(reg: &TestRegistry, method: Method, repo: &str, reference: &str) -> StatusCode {
    reg.req(method, &format!("/v2/{repo}/manifests/{reference}"))
        .send()
        .await
        .unwrap()
        .status()
}

async fn tags_list(reg: &TestRegistry, repo: &str, query: &str) -> Value {
    reg.req(Method::GET, &format!("/v2/{repo}/tags/list{query}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn dashboard(reg: &TestRegistry, repo: &str) -> String {
    let r = reg
        .req(Method::GET, &format!("/ui/r/{repo}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

#[tokio::test]
async fn the_dashboard_shows_unverified_signatures_and_attestation_types() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(dir.path(), "k.pub");
    let reg = start(vec![]).await;
    let repo = "plain";
    let (m, d) = push_image(&reg, repo, "a", &["1.0.0"]).await;
    push_image(&reg, repo, "b", &["2.0.0"]).await;
    sign_bundle(&reg, repo, &d, OCI_MANIFEST, m.len(), &k).await;
    // An SBOM attestation as a bundle referrer.
    let predicate = "https://spdx.dev/Document";
    let statement = Statement::new(
        None,
        &d,
        predicate,
        json!({"spdxVersion": "SPDX-2.3"}),
        &BTreeMap::new(),
    );
    let bundle = Bundle::sign_statement(&k.signer, &statement)
        .unwrap()
        .to_json()
        .unwrap();
    let subject = SubjectDescriptor {
        media_type: OCI_MANIFEST.into(),
        digest: d.clone(),
        size: m.len() as u64,
    };
    let art = bundle_referrer(bundle, &subject, predicate, "2026-01-01T00:00:00Z").unwrap();
    for b in &art.blobs {
        reg.push_blob(repo, &b.bytes).await;
    }
    let r = put(
        &reg,
        repo,
        &art.manifest_digest,
        &art.manifest,
        art.media_type,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let page = dashboard(&reg, repo).await;
    assert_eq!(
        page.matches("signature attached (not verified)").count(),
        1,
        "{page}"
    );
    assert_eq!(page.matches(">unsigned<").count(), 1, "{page}");
    // The attestation's type shows on its tag and in the list of signatures.
    assert_eq!(page.matches(predicate).count(), 2, "{page}");
    assert_eq!(
        page.matches("not verified (no trust policy)").count(),
        2,
        "{page}"
    );
}

#[tokio::test]
async fn unsigned_pulls_are_refused_and_signed_ones_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (good, other) = (key(dir.path(), "good.pub"), key(dir.path(), "other.pub"));
    let reg = start(vec![rule("release/*", &[&good], false)]).await;
    let repo = "release/app";
    let (m, d) = push_image(&reg, repo, "a", &["main"]).await;

    // GET by tag and by digest: 403 DENIED naming the key the signature must be made with.
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/manifests/main"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&good.fingerprint) && message.contains("signature"),
        "{message}"
    );
    assert_eq!(
        status(&reg, Method::GET, repo, &d.to_string()).await,
        StatusCode::FORBIDDEN
    );
    // HEAD by digest stays open to those who may push (here everyone: an open registry),
    // so that a signer can learn the subject's size; HEAD by tag does not.
    assert_eq!(
        status(&reg, Method::HEAD, repo, &d.to_string()).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&reg, Method::HEAD, repo, "main").await,
        StatusCode::FORBIDDEN
    );
    // Repositories no rule matches are unaffected.
    push_image(&reg, "scratch/app", "a", &["main"]).await;
    assert_eq!(
        status(&reg, Method::GET, "scratch/app", "main").await,
        StatusCode::OK
    );

    // A signature by a key the rule does not name changes nothing, and stays pullable.
    let wrong = sign_bundle(&reg, repo, &d, OCI_MANIFEST, m.len(), &other).await;
    assert_eq!(
        status(&reg, Method::GET, repo, "main").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&reg, Method::GET, repo, &wrong.to_string()).await,
        StatusCode::OK
    );

    // A valid bundle referrer opens it (the verdict cache was invalidated by the push).
    let sig = sign_bundle(&reg, repo, &d, OCI_MANIFEST, m.len(), &good).await;
    assert_eq!(
        status(&reg, Method::GET, repo, "main").await,
        StatusCode::OK
    );
    assert_eq!(
        status(&reg, Method::GET, repo, &d.to_string()).await,
        StatusCode::OK
    );
    let referrers: Value = reg
        .req(Method::GET, &format!("/v2/{repo}/referrers/{d}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 2);

    // Deleting the signature closes it again.
    let r = reg
        .req(Method::DELETE, &format!("/v2/{repo}/manifests/{sig}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        status(&reg, Method::GET, repo, "main").await,
        StatusCode::FORBIDDEN
    );
}

/// `HEAD` of an unsigned manifest by digest is for those who may push (a signer learns
/// the subject's size that way); readers get `403` like a `GET`.
#[tokio::test]
async fn only_pushers_may_check_an_unsigned_manifest_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let good = key(dir.path(), "good.pub");
    let reg = start(vec![rule("team/*", &[&good], false)]).await;
    let repo = "team/app";
    let (_, d) = push_image(&reg, repo, "a", &["main"]).await;
    let admin = berth_server::accounts::Admin::open_dir(reg.data_dir(), "test").unwrap();
    let grants = |s: &str| vec![s.parse().unwrap()];
    let pw = "password-123";
    admin
        .user_add("reader", pw, &grants("team/*:pull"))
        .await
        .unwrap();
    admin
        .user_add("writer", pw, &grants("team/*:pull,push"))
        .await
        .unwrap();
    reg.state.auth.invalidate();
    let head = |user: &'static str, reference: String| {
        reg.req(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
            .basic_auth(user, Some(pw))
            .send()
    };
    assert_eq!(
        head("writer", d.to_string()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        head("reader", d.to_string()).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        head("writer", "main".into()).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let get = reg
        .req(Method::GET, &format!("/v2/{repo}/manifests/{d}"))
        .basic_auth("writer", Some(pw))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get.status(),
        StatusCode::FORBIDDEN,
        "a pusher may not GET it either"
    );
}

#[tokio::test]
async fn a_legacy_sig_tag_signs_and_its_deletion_unsigns() {
    let dir = tempfile::tempdir().unwrap();
    let good = key(dir.path(), "good.pub");
    let reg = start(vec![rule("*", &[&good], false)]).await;
    let repo = "app";
    let (_, d) = push_image(&reg, repo, "a", &["main"]).await;
    assert_eq!(
        status(&reg, Method::GET, repo, "main").await,
        StatusCode::FORBIDDEN
    );
    let tag = sign_legacy(&reg, repo, &d, &good).await;
    assert_eq!(
        status(&reg, Method::GET, repo, "main").await,
        StatusCode::OK
    );
    // The .sig manifest itself is pullable by its tag, as cosign v2 fetches it.
    assert_eq!(status(&reg, Method::GET, repo, &tag).await, StatusCode::OK);
    let r = reg
        .req(Method::DELETE, &format!("/v2/{repo}/manifests/{tag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        status(&reg, Method::GET, repo, "main").await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn children_of_a_signed_index_are_pullable_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let good = key(dir.path(), "good.pub");
    let reg = start(vec![rule("*", &[&good], false)]).await;
    let repo = "multi";
    let (amd, amd_d) = push_image(&reg, repo, "amd64", &[]).await;
    let (arm, arm_d) = push_image(&reg, repo, "arm64", &[]).await;
    let (_, loose) = push_image(&reg, repo, "loose", &[]).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd_d.to_string(), "size": amd.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm_d.to_string(), "size": arm.len(), "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }))
    .unwrap();
    let index_d = Digest::sha256(&index);
    let r = put(&reg, repo, &index_d, &index, OCI_INDEX, &["1.0.0"]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    for d in [&index_d, &amd_d, &arm_d] {
        assert_eq!(
            status(&reg, Method::GET, repo, &d.to_string()).await,
            StatusCode::FORBIDDEN
        );
    }
    sign_bundle(&reg, repo, &index_d, OCI_INDEX, index.len(), &good).await;
    for d in [&index_d, &amd_d, &arm_d] {
        assert_eq!(
            status(&reg, Method::GET, repo, &d.to_string()).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        status(&reg, Method::GET, repo, "1.0.0").await,
        StatusCode::OK
    );
    // A manifest no signed index lists gains nothing.
    assert_eq!(
        status(&reg, Method::GET, repo, &loose.to_string()).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_gate_holds_release_tags_until_a_signature_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let good = key(dir.path(), "good.pub");
    let reg = start(vec![rule("release/*", &[&good], true)]).await;
    let repo = "release/app";
    let (m, d) = push_image(&reg, repo, "a", &["1.0.0", "1.0", "1", "latest"]).await;
    // Stored, but no tag is visible: not in the list, unknown to a pull.
    assert_eq!(tags_list(&reg, repo, "").await["tags"], json!([]));
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/manifests/1.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let all = tags_list(&reg, repo, "?all=true").await;
    assert_eq!(all["tags"], json!([]));
    let pending: Vec<&str> = all["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["digest"], d.to_string());
            assert_eq!(p["waiting"], "signature");
            p["tag"].as_str().unwrap()
        })
        .collect();
    assert_eq!(pending, ["1", "1.0", "1.0.0", "latest"]);

    // The dashboard lists the held tags as waiting.
    let page = dashboard(&reg, repo).await;
    assert_eq!(page.matches("waiting for signature").count(), 4, "{page}");

    // A non-release tag is not gated (pulls of it are refused until signed, though).
    let r = put(&reg, repo, &d, &m, OCI_MANIFEST, &["candidate"]).await;
    assert!(r.headers().get("berth-tag-waiting-for-signature").is_none());
    assert_eq!(
        tags_list(&reg, repo, "").await["tags"],
        json!(["candidate"])
    );

    // The signature reveals all of them at once.
    sign_bundle(&reg, repo, &d, OCI_MANIFEST, m.len(), &good).await;
    assert_eq!(
        tags_list(&reg, repo, "").await["tags"],
        json!(["1", "1.0", "1.0.0", "candidate", "latest"])
    );
    assert_eq!(
        tags_list(&reg, repo, "?all=true").await["pending"],
        json!([])
    );
    assert_eq!(
        status(&reg, Method::GET, repo, "1.0.0").await,
        StatusCode::OK
    );
    // Now each tag shows as signed by the key, and the signature is listed with the
    // key's full fingerprint and its format.
    let page = dashboard(&reg, repo).await;
    assert!(!page.contains("waiting for signature"), "{page}");
    assert_eq!(page.matches(">signed<").count(), 5, "{page}");
    assert!(page.contains(&good.fingerprint), "{page}");
    assert!(page.contains("Sigstore bundle (cosign v3)"), "{page}");

    // Signed first, tagged after (what `berth publish --sign-key` does): visible at once.
    let (_, d2) = push_image(&reg, repo, "b", &[]).await;
    let m2 = reg
        .req(Method::HEAD, &format!("/v2/{repo}/manifests/{d2}"))
        .send()
        .await
        .unwrap();
    let size: usize = m2.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    sign_bundle(&reg, repo, &d2, OCI_MANIFEST, size, &good).await;
    let (_, d2_again) = push_image(&reg, repo, "b", &["1.1.0"]).await;
    assert_eq!(d2, d2_again);
    assert_eq!(
        status(&reg, Method::GET, repo, "1.1.0").await,
        StatusCode::OK
    );
}

/// Many releases pushed and signed at once, while a reader watches the tags list: a
/// release tag is never visible before its signature (every visible tag pulls), and in
/// the end every tag is visible, whichever of tag and signature came first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gate_reveals_atomically_under_concurrent_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::sync::Arc::new(key(dir.path(), "good.pub"));
    let reg = std::sync::Arc::new(start(vec![rule("release/*", &[&good], true)]).await);
    let repo = "release/race";
    let n = 12;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (reg, stop) = (reg.clone(), stop.clone());
        tokio::spawn(async move {
            let mut checks = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let list = reg
                    .req(Method::GET, &format!("/v2/{repo}/tags/list"))
                    .send()
                    .await
                    .unwrap();
                if list.status() == StatusCode::OK {
                    let v: Value = list.json().await.unwrap();
                    for t in v["tags"].as_array().unwrap() {
                        let t = t.as_str().unwrap();
                        assert_eq!(
                            status(&reg, Method::GET, repo, t).await,
                            StatusCode::OK,
                            "tag {t} is visible but its manifest is not signed"
                        );
                        checks += 1;
                    }
                }
                tokio::task::yield_now().await;
            }
            checks
        })
    };
    let mut tasks = Vec::new();
    for i in 0..n {
        let (reg, good) = (reg.clone(), good.clone());
        tasks.push(tokio::spawn(async move {
            // The first push holds the release tag; then its signature and a second
            // push of the tags race.
            let version = format!("1.{i}.0");
            let (m, d) = push_image(&reg, repo, &format!("race-{i}"), &[&version]).await;
            let signing = sign_bundle(&reg, repo, &d, OCI_MANIFEST, m.len(), &good);
            let tags = [version.as_str(), "latest-race"];
            let retag = put(&reg, repo, &d, &m, OCI_MANIFEST, &tags);
            let (_, r) = tokio::join!(signing, retag);
            assert_eq!(r.status(), StatusCode::CREATED);
            version
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let checks = tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .unwrap()
        .unwrap();
    let tags = tags_list(&reg, repo, "?all=true").await;
    assert_eq!(tags["pending"], json!([]), "{tags}");
    let visible: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for v in &versions {
        assert!(
            visible.contains(&v.as_str()),
            "{v} missing from {visible:?}"
        );
        assert_eq!(status(&reg, Method::GET, repo, v).await, StatusCode::OK);
    }
    assert!(visible.contains(&"latest-race"));
    eprintln!("the watcher pulled {checks} visible tags");
}

#[tokio::test]
async fn a_bad_trust_policy_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth_server::Config {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    let bad = dir.path().join("not-a-key.pub");
    std::fs::write(&bad, "hello").unwrap();
    config.trust_policy = vec![TrustPolicyRule {
        repositories: "*".into(),
        require_signature: vec![bad.clone()],
        gate_release_tags: false,
    }];
    let e = berth_server::build_state(&config)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not-a-key.pub"), "{e}");
    config.trust_policy = vec![TrustPolicyRule {
        repositories: "*".into(),
        require_signature: vec![],
        gate_release_tags: true,
    }];
    let e = berth_server::build_state(&config)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("gate_release_tags") && e.contains("require_signature"),
        "{e}"
    );
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by scripts/test-all")
}

fn podman(store: &Path, args: &[&str]) -> std::process::Output {
    let root = store.join("root");
    let runroot = store.join("run");
    Command::new("podman")
        .arg("--storage-driver=vfs")
        .arg(format!("--root={}", root.display()))
        .arg(format!("--runroot={}", runroot.display()))
        .arg("--events-backend=file")
        .arg("--cgroup-manager=cgroupfs")
        .args(args)
        .output()
        .expect("podman is installed by scripts/test-all")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_podman_pull_only_signed_images() {
    let dir = tempfile::tempdir().unwrap();
    let good = key(dir.path(), "good.pub");
    let reg = start(vec![rule("release/*", &[&good], true)]).await;
    let host = reg.base.trim_start_matches("http://").to_owned();
    let repo = "release/tool";
    let (m, d) = push_image(&reg, repo, "tool", &["2.0.0"]).await;
    let by_digest = format!("{host}/{repo}@{d}");

    // Unsigned: skopeo cannot read it by digest (403) nor by its held tag (unknown).
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{by_digest}"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("denied") || err.contains("403"), "{err}");
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{host}/{repo}:2.0.0"),
    ]);
    assert!(!out.status.success());
    let store = dir.path().join("podman");
    let out = podman(&store, &["pull", "--tls-verify=false", &by_digest]);
    assert!(!out.status.success(), "podman pulled an unsigned image");

    sign_bundle(&reg, repo, &d, OCI_MANIFEST, m.len(), &good).await;
    let out = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/{repo}:2.0.0"),
        &format!("dir:{}", dir.path().join("copy").display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = podman(
        &store,
        &[
            "pull",
            "--tls-verify=false",
            &format!("{host}/{repo}:2.0.0"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = podman(
        &store,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Digest}}",
            &format!("{host}/{repo}:2.0.0"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), d.to_string());
}
