//! The server on `storage = "s3"` against a real S3 server (SeaweedFS, started by
//! `berth_storage::s3::seaweed`): skopeo pushes an image through it and pulls it back,
//! and `s3_redirect` answers blob downloads with a presigned URL that works.

use std::process::Command;

use berth_oci::Digest;
use berth_storage::s3::seaweed::{SeaweedFs, ACCESS_KEY, BUCKET, SECRET_KEY};
use reqwest::{Method, StatusCode};

use crate::common::*;

/// A server on a fresh prefix of the test bucket; `None` when S3 tests are skipped
/// (`BERTH_TEST_SKIP_S3=1` without `weed`).
async fn start(redirect: bool) -> Option<TestRegistry> {
    let s3 = SeaweedFs::shared()?;
    s3.ready().await;
    // The server reads its credentials from the environment, as in production; every
    // S3 test sets the same values.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    let config = berth_server::Config {
        storage: berth_server::config::Storage::S3,
        s3_bucket: Some(BUCKET.to_owned()),
        s3_endpoint: Some(s3.endpoint.clone()),
        s3_region: Some("us-east-1".to_owned()),
        s3_prefix: format!("server-{}", uuid::Uuid::new_v4().simple()),
        s3_redirect: redirect,
        ..berth_server::Config::default()
    };
    Some(TestRegistry::start_with(config).await)
}

fn skopeo(args: &[&str]) {
    let bin = "/usr/bin/skopeo";
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} is missing: install the Debian package skopeo"
    );
    let out = Command::new(bin)
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_to_s3_and_pulls_back() {
    let Some(reg) = start(false).await else {
        return;
    };
    // An image whose layer spans several multipart parts (skopeo streams it in one
    // PATCH), pushed with HTTP first and then copied by skopeo both ways.
    let layer: Vec<u8> = (0..(12u32 << 20)).map(|i| (i % 249) as u8).collect();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let c = reg.push_blob("src/app", config).await;
    let l = reg.push_blob("src/app", &layer).await;
    let m = image_manifest(&c, config.len(), &[(&l, layer.len())], None);
    let r = reg.put_manifest("src/app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let host = reg.base.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let layout = format!("oci:{}:v1", dir.path().join("img").display());
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{host}/src/app:v1"),
        &layout,
    ]);
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &layout,
        &format!("docker://{host}/copy/app:v1"),
    ]);
    let back = format!("oci:{}:v1", dir.path().join("back").display());
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{host}/copy/app:v1"),
        &back,
    ]);

    // The layer came back byte for byte, through S3 twice.
    let blob = dir.path().join("back/blobs/sha256").join(l.hex());
    let got = std::fs::read(&blob).unwrap();
    assert!(got == layer, "the pulled layer differs");
    let r = reg
        .req(Method::GET, &format!("/v2/copy/app/blobs/{l}"))
        .header("range", "bytes=6291450-6291459")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &layer[6291450..6291460]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_redirect_answers_a_presigned_url() {
    let Some(reg) = start(true).await else {
        return;
    };
    let d: Digest = reg.push_blob("app", b"redirected bytes").await;
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow
        .get(reg.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("http://127.0.0.1:"), "{location}");
    // The URL works without any credentials, and a client following redirects gets
    // the bytes in one go.
    let fetched = no_follow.get(&location).send().await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), b"redirected bytes");
    let followed = reg
        .req(Method::GET, &format!("/v2/app/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), StatusCode::OK);
    assert_eq!(
        followed.bytes().await.unwrap().as_ref(),
        b"redirected bytes"
    );
    // HEAD is answered by Berth itself; an unknown blob is still BLOB_UNKNOWN.
    let head = no_follow
        .head(reg.url(&format!("/v2/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let absent = Digest::sha256(b"absent");
    let r = reg
        .req(Method::GET, &format!("/v2/app/blobs/{absent}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
