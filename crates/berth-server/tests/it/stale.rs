//! Stale bases: the base of each pushed image is recorded (by layer prefix, or by the
//! base annotations, which take precedence), and `GET /api/v1/stale` lists the images
//! whose base tag moved, only where the caller may pull.

use std::collections::BTreeMap;

use base64::Engine as _;
use berth_oci::Digest;
use berth_server::accounts::Admin;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{TestRegistry, OCI_MANIFEST};

const PW: &str = "password-123";

fn basic(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{PW}"))
    )
}

/// Pushes `repo:tag`, an image of the given layer contents, with manifest annotations.
async fn push(
    reg: &TestRegistry,
    repo: &str,
    tag: &str,
    layers: &[&str],
    annotations: &[(&str, &str)],
) -> Digest {
    let config = json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"seed":format!("{repo}:{tag}:{}", layers.join(","))}).to_string();
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let mut descs = Vec::new();
    for l in layers {
        let d = reg.push_blob(repo, l.as_bytes()).await;
        descs.push(json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d.to_string(),"size":l.len()}));
    }
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":c.to_string(),"size":config.len()},
        "layers": descs,
    });
    if !annotations.is_empty() {
        let a: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        m["annotations"] = json!(a);
    }
    let body = serde_json::to_vec(&m).unwrap();
    let r = reg.put_manifest(repo, tag, OCI_MANIFEST, &body).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    Digest::sha256(&body)
}

async fn stale(reg: &TestRegistry, query: &str, auth: Option<String>) -> Vec<Value> {
    let mut rb = reg.req(Method::GET, &format!("/api/v1/stale{query}"));
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    v["images"].as_array().unwrap().clone()
}

fn repos(images: &[Value]) -> Vec<&str> {
    images
        .iter()
        .map(|i| i["repository"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_moved_base_tag_lists_the_images_built_on_it() {
    let reg = TestRegistry::start().await;
    let old_base = push(&reg, "base", "12", &["debian-1", "debian-2"], &[]).await;
    let app = push(&reg, "app", "1", &["debian-1", "debian-2", "app-1"], &[]).await;
    push(&reg, "other", "1", &["alpine-1"], &[]).await;
    // On base:12's layers, but declaring other:1 as its base: the annotation wins.
    push(
        &reg,
        "pref",
        "1",
        &["debian-1", "debian-2", "pref-1"],
        &[(
            "org.opencontainers.image.base.name",
            "registry.example.com/other:1",
        )],
    )
    .await;
    // Sharing no layer with base:12 but declaring it (by name only: the digest is what
    // the tag pointed at when this was pushed).
    let declared = push(
        &reg,
        "decl",
        "2",
        &["copied-1"],
        &[(
            "org.opencontainers.image.base.name",
            "localhost:5000/base:12",
        )],
    )
    .await;
    assert!(stale(&reg, "", None).await.is_empty(), "nothing moved yet");

    // debian:12 rebuilt with security fixes.
    let new_base = push(&reg, "base", "12", &["debian-1b", "debian-2b"], &[]).await;
    let images = stale(&reg, "", None).await;
    assert_eq!(repos(&images), ["app", "decl"], "{images:#?}");
    let a = &images[0];
    assert_eq!(a["digest"], app.to_string());
    assert_eq!(a["tags"], json!(["1"]));
    assert_eq!(a["base"]["name"], "base:12");
    assert_eq!(a["base"]["declared"], false);
    assert_eq!(a["base"]["built_on"], old_base.to_string());
    assert_eq!(a["base"]["now"], new_base.to_string());
    assert!(a["base"]["moved_seconds_ago"].as_i64().unwrap() >= 0);
    assert!(a["base"]["moved_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(images[1]["digest"], declared.to_string());
    assert_eq!(images[1]["base"]["declared"], true);
    assert_eq!(images[1]["base"]["built_on"], old_base.to_string());

    // The dashboard's repository page says so beside the tag.
    let page = reg
        .req(Method::GET, "/ui/r/app")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("base moved: base:12"), "{page}");

    // A pattern narrows the list; rebuilding the app on the new base clears it.
    assert_eq!(repos(&stale(&reg, "?repo=de*", None).await), ["decl"]);
    push(&reg, "app", "1", &["debian-1b", "debian-2b", "app-1"], &[]).await;
    assert_eq!(repos(&stale(&reg, "", None).await), ["decl"]);
    let r = reg
        .req(Method::GET, "/api/v1/stale?repo=Bad%20Pattern")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn only_images_and_bases_the_caller_may_pull_are_listed() {
    let reg = TestRegistry::start().await;
    push(&reg, "base/os", "12", &["os-1"], &[]).await;
    push(&reg, "team/app", "1", &["os-1", "app-1"], &[]).await;
    push(&reg, "pub/tool", "1", &["os-1", "tool-1"], &[]).await;
    push(&reg, "base/os", "12", &["os-2"], &[]).await;

    let admin = Admin::open_dir(reg.data_dir(), "test").unwrap();
    let g = |s: &[&str]| s.iter().map(|g| g.parse().unwrap()).collect::<Vec<_>>();
    admin
        .user_add("dev", PW, &g(&["team/*:pull", "base/*:pull"]))
        .await
        .unwrap();
    admin
        .user_add("nobase", PW, &g(&["team/*:pull"]))
        .await
        .unwrap();
    admin.user_add("boss", PW, &g(&["*:admin"])).await.unwrap();
    admin
        .public_add(&berth_auth::Pattern::parse("pub/*").unwrap())
        .await
        .unwrap();
    reg.state.auth.invalidate();

    assert_eq!(
        repos(&stale(&reg, "", Some(basic("boss"))).await),
        ["pub/tool", "team/app"]
    );
    // A public repository is pullable by every account.
    assert_eq!(
        repos(&stale(&reg, "", Some(basic("dev"))).await),
        ["pub/tool", "team/app"]
    );
    // The base's digests are news about base/os: not for who may not pull it.
    assert!(stale(&reg, "", Some(basic("nobase"))).await.is_empty());
    assert!(stale(&reg, "", None).await.is_empty());
    // A token with the catalog scope lists what its account may pull.
    let v: Value = reg
        .req(Method::GET, "/token?scope=registry:catalog:*")
        .header("authorization", basic("dev"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", v["token"].as_str().unwrap());
    assert_eq!(
        repos(&stale(&reg, "?repo=team/*", Some(bearer)).await),
        ["team/app"]
    );
}
