//! Start-up and the data directory: reconciliation of upload sessions, the exclusive
//! lock, and what a push learns from an image config.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{image_manifest, TestRegistry, OCI_MANIFEST};

#[tokio::test]
async fn start_up_removes_orphaned_upload_files_and_sessions() {
    let reg = TestRegistry::start().await;
    let loc = |r: reqwest::Response| r.headers()["location"].to_str().unwrap().to_owned();
    let kept = loc(reg
        .req(Method::POST, "/v2/a/blobs/uploads/")
        .send()
        .await
        .unwrap());
    let bytes_lost = loc(reg
        .req(Method::POST, "/v2/a/blobs/uploads/")
        .send()
        .await
        .unwrap());
    let dir = reg.stop().await.unwrap();
    let uploads = dir.path().join("uploads");
    // A file without a session (a crash after creating the file) ...
    std::fs::write(uploads.join("0123456789abcdef0123456789abcdef"), b"orphan").unwrap();
    // ... and a session whose file is gone (a crash while ending it).
    let lost_id = bytes_lost.rsplit('/').next().unwrap();
    std::fs::remove_file(uploads.join(lost_id)).unwrap();

    let reg = TestRegistry::start_in(dir.path(), berth_server::Config::default()).await;
    // The server answers only once start-up (and its reconciliation) is done.
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut left: Vec<String> = std::fs::read_dir(&uploads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [kept.rsplit('/').next().unwrap()]);
    let r = reg.req(Method::GET, &bytes_lost).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg.req(Method::GET, &kept).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_second_server_on_one_data_directory_is_refused() {
    let reg = TestRegistry::start().await;
    let config = berth_server::Config {
        data_dir: reg.data_dir().to_owned(),
        ..Default::default()
    };
    let err = match berth_server::build_state(&config) {
        Ok(_) => panic!("a second server started on a locked data directory"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("in use by another berth process"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    // The first server is untouched and, once stopped, frees the directory.
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let dir = reg.stop().await.unwrap();
    let config = berth_server::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    assert!(berth_server::build_state(&config).is_ok());
}

/// The platform recorded for a manifest pushed with `config` declared as `declared` bytes.
async fn platform_of(
    reg: &TestRegistry,
    repo: &str,
    config: &[u8],
    declared: usize,
) -> Option<String> {
    let c = reg.push_blob(repo, config).await;
    let l = reg.push_blob(repo, b"layer").await;
    let m = image_manifest(&c, declared, &[(&l, 5)], None);
    let r = reg.put_manifest(repo, "t", OCI_MANIFEST, &m).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let repo = berth_oci::RepoName::parse(repo).unwrap();
    let digest = berth_oci::Digest::sha256(&m).to_string();
    let (_, stored) = reg
        .state
        .registry
        .manifest(&repo, &digest, &[])
        .await
        .unwrap();
    stored.platform
}

#[tokio::test]
async fn the_platform_is_read_only_from_a_small_matching_config() {
    let reg = TestRegistry::start().await;
    let config = json!({"architecture":"arm64","os":"linux","variant":"v8"}).to_string();
    assert_eq!(
        platform_of(&reg, "ok", config.as_bytes(), config.len())
            .await
            .as_deref(),
        Some("linux/arm64/v8")
    );
    // A config whose declared size is not its size is not read.
    assert_eq!(
        platform_of(&reg, "mismatch", config.as_bytes(), config.len() + 1).await,
        None
    );
    // Nor is a config over 1 MiB, however it is declared.
    let padding = "x".repeat(1 << 20);
    let big = json!({"architecture":"amd64","os":"linux","pad":padding}).to_string();
    assert_eq!(
        platform_of(&reg, "big", big.as_bytes(), big.len()).await,
        None
    );
    // A config that is not JSON yields no platform and does not fail the push.
    assert_eq!(
        platform_of(&reg, "garbage", b"\xff\xfe not json", 12).await,
        None
    );
}
