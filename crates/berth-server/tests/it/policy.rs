//! The tag policy over HTTP: immutable release tags, forward-only floating tags,
//! all-or-nothing multi-tag pushes, forced moves, per-repository rules.

use berth_oci::Digest;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{error_code, image_manifest, TestRegistry, OCI_MANIFEST};

/// A manifest carrying `org.opencontainers.image.version`.
async fn release(reg: &TestRegistry, repo: &str, version: &str) -> (Vec<u8>, Digest) {
    let config = format!("{{\"v\":\"{version}\"}}");
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let mut m: Value =
        serde_json::from_slice(&image_manifest(&c, config.len(), &[], None)).unwrap();
    m["annotations"] = serde_json::json!({"org.opencontainers.image.version": version});
    let m = serde_json::to_vec(&m).unwrap();
    let d = Digest::sha256(&m);
    (m, d)
}

async fn put_tags(
    reg: &TestRegistry,
    repo: &str,
    m: &[u8],
    d: &Digest,
    tags: &[&str],
    extra: &str,
) -> reqwest::Response {
    let q: Vec<String> = tags.iter().map(|t| format!("tag={t}")).collect();
    reg.req(
        Method::PUT,
        &format!("/v2/{repo}/manifests/{d}?{}{extra}", q.join("&")),
    )
    .header("content-type", OCI_MANIFEST)
    .body(m.to_vec())
    .send()
    .await
    .unwrap()
}

async fn digest_of(reg: &TestRegistry, repo: &str, tag: &str) -> Option<String> {
    let r = reg
        .req(Method::HEAD, &format!("/v2/{repo}/manifests/{tag}"))
        .send()
        .await
        .unwrap();
    (r.status() == StatusCode::OK).then(|| {
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    })
}

#[tokio::test]
async fn release_tags_are_immutable_and_floating_tags_move_forward() {
    let reg = TestRegistry::start().await;
    let all = ["1.2.3", "1.2", "1", "latest"];
    let (m123, d123) = release(&reg, "app", "1.2.3").await;
    assert_eq!(
        put_tags(&reg, "app", &m123, &d123, &all, "").await.status(),
        StatusCode::CREATED
    );
    // Re-pushing the same digest is fine.
    assert_eq!(
        put_tags(&reg, "app", &m123, &d123, &["1.2.3"], "")
            .await
            .status(),
        StatusCode::CREATED
    );

    // Another digest under a release tag is refused, naming the tag and what it holds.
    let (m124, d124) = release(&reg, "app", "1.2.4").await;
    let r = put_tags(&reg, "app", &m124, &d124, &["1.2.3"], "").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "DENIED");
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("1.2.3") && msg.contains(&d123.to_string()),
        "{msg}"
    );

    // 2.0.0 takes latest; then patching 1.2 moves 1.2 and 1 but never latest.
    let (m200, d200) = release(&reg, "app", "2.0.0").await;
    assert_eq!(
        put_tags(
            &reg,
            "app",
            &m200,
            &d200,
            &["2.0.0", "2.0", "2", "latest"],
            ""
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    let r = put_tags(
        &reg,
        "app",
        &m124,
        &d124,
        &["1.2.4", "1.2", "1", "latest"],
        "",
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "latest would roll back from 2.0.0"
    );
    // All or nothing: not even the exact tag was applied.
    assert_eq!(digest_of(&reg, "app", "1.2.4").await, None);
    assert_eq!(digest_of(&reg, "app", "1.2").await, Some(d123.to_string()));
    assert_eq!(
        put_tags(&reg, "app", &m124, &d124, &["1.2.4", "1.2", "1"], "")
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(digest_of(&reg, "app", "1").await, Some(d124.to_string()));
    assert_eq!(
        digest_of(&reg, "app", "latest").await,
        Some(d200.to_string())
    );

    // An old CI job re-run cannot roll 1.2 back, by tag PUT either.
    let r = reg.put_manifest("app", "1.2", OCI_MANIFEST, &m123).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(r).await, "DENIED");
    // A floating tag only holds versions of its range.
    let r = reg.put_manifest("app", "1.2", OCI_MANIFEST, &m200).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // Release tags cannot be deleted, and a manifest holding one neither.
    let r = reg
        .req(Method::DELETE, "/v2/app/manifests/1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = reg
        .req(Method::DELETE, &format!("/v2/app/manifests/{d123}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // Floating tags can be deleted.
    let r = reg
        .req(Method::DELETE, "/v2/app/manifests/2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // An administrator forces (the open registry's caller is one).
    let r = put_tags(&reg, "app", &m123, &d123, &["latest"], "&force=true").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        digest_of(&reg, "app", "latest").await,
        Some(d123.to_string())
    );
    let r = reg
        .req(Method::DELETE, "/v2/app/manifests/1.2.3?force=true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Tags without versions (branches, commits) are free.
    let (mx, dx) = release(&reg, "app", "not-semver").await;
    assert_eq!(
        put_tags(&reg, "app", &mx, &dx, &["main", "sha-abc1234"], "")
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put_tags(&reg, "app", &m200, &d200, &["main"], "")
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn policy_can_be_switched_off_per_repository() {
    let dir = tempfile::tempdir().unwrap();
    let config: berth_server::Config = toml::from_str(
        "[[tag_policy]]\nrepositories = \"sandbox/*\"\nimmutable_releases = false\nmonotonic_floating = false\n",
    )
    .unwrap();
    let reg = TestRegistry::start_in(dir.path(), config).await;
    for repo in ["sandbox/a", "prod/a"] {
        let (m1, d1) = release(&reg, repo, "1.0.0").await;
        let (m2, d2) = release(&reg, repo, "1.0.1").await;
        assert_eq!(
            put_tags(&reg, repo, &m2, &d2, &["1.0.0"], "")
                .await
                .status(),
            StatusCode::CREATED
        );
        let want = if repo.starts_with("sandbox") {
            StatusCode::CREATED
        } else {
            StatusCode::CONFLICT
        };
        assert_eq!(
            put_tags(&reg, repo, &m1, &d1, &["1.0.0"], "")
                .await
                .status(),
            want,
            "{repo}"
        );
    }
}

/// An image whose version is only in its config's labels (the Dockerfile `LABEL` way).
async fn labelled(
    reg: &TestRegistry,
    repo: &str,
    version: Option<&str>,
    seed: &str,
) -> (Vec<u8>, Digest) {
    let mut config = serde_json::json!({"architecture":"amd64","os":"linux","seed":seed,
        "rootfs":{"type":"layers","diff_ids":[]}});
    if let Some(v) = version {
        config["config"] = serde_json::json!({"Labels": {"org.opencontainers.image.version": v}});
    }
    let config = config.to_string();
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let m = image_manifest(&c, config.len(), &[], None);
    let d = Digest::sha256(&m);
    (m, d)
}

/// The two-step bypass (an unversioned push, then an older release) and the `LABEL`-only
/// rollback are refused; the refusal says how to fix it.
#[tokio::test]
async fn floating_tags_do_not_give_way_to_unknown_or_labelled_older_versions() {
    let reg = TestRegistry::start().await;
    let (m2, d2) = release(&reg, "app", "2.0.0").await;
    assert_eq!(
        put_tags(&reg, "app", &m2, &d2, &["2.0.0", "latest"], "")
            .await
            .status(),
        StatusCode::CREATED
    );

    let (mu, du) = labelled(&reg, "app", None, "unversioned").await;
    let r = put_tags(&reg, "app", &mu, &du, &["latest"], "").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("LABEL org.opencontainers.image.version"),
        "{message}"
    );

    let (ml, dl) = labelled(&reg, "app", Some("1.5.0"), "old").await;
    let r = put_tags(&reg, "app", &ml, &dl, &["latest"], "").await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "a LABEL-only older version is a rollback"
    );
    let (mn, dn) = labelled(&reg, "app", Some("2.1.0"), "new").await;
    assert_eq!(
        put_tags(&reg, "app", &mn, &dn, &["latest"], "")
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(digest_of(&reg, "app", "latest").await, Some(dn.to_string()));
}

/// A platform image of an index tagged as a release cannot be deleted out from under it.
#[tokio::test]
async fn a_child_of_an_index_cannot_be_deleted() {
    let reg = TestRegistry::start().await;
    let (_, child) = reg.push_image("team/app", "child", "c").await;
    let index = serde_json::json!({"schemaVersion":2,"mediaType":crate::common::OCI_INDEX,
        "manifests":[{"mediaType":OCI_MANIFEST,"digest":child.to_string(),"size":1,
        "platform":{"os":"linux","architecture":"amd64"}}]});
    let index = serde_json::to_vec(&index).unwrap();
    let r = reg
        .put_manifest("team/app", "3.0.0", crate::common::OCI_INDEX, &index)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .req(Method::DELETE, &format!("/v2/team/app/manifests/{child}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&Digest::sha256(&index).to_string()),
        "{message}"
    );
    let r = reg
        .req(Method::GET, &format!("/v2/team/app/manifests/{child}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the child is still there");
}
