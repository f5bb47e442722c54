//! Upload sessions: monolithic, POST+PUT, chunked, streamed, status, cancel, mount,
//! restart survival and expiry.

use std::time::Duration;

use berth_oci::Digest;
use reqwest::{Method, StatusCode};

use crate::common::{error_code, TestRegistry};

async fn start(reg: &TestRegistry, repo: &str) -> String {
    let r = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-0");
    assert!(r.headers().contains_key("docker-upload-uuid"));
    r.headers()["location"].to_str().unwrap().to_owned()
}

fn with_digest(loc: &str, d: &Digest) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={d}")
}

#[tokio::test]
async fn post_then_put() {
    let reg = TestRegistry::start().await;
    let loc = start(&reg, "a").await;
    let d = Digest::sha256(b"whole");
    let r = reg
        .req(Method::PUT, &with_digest(&loc, &d))
        .body("whole")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"], format!("/v2/a/blobs/{d}").as_str());
    assert_eq!(r.headers()["docker-content-digest"], d.to_string().as_str());
    // The session is over.
    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn chunked_with_out_of_order_chunk() {
    let reg = TestRegistry::start().await;
    let loc = start(&reg, "a").await;
    let r = reg
        .req(Method::PATCH, &loc)
        .header("content-range", "0-4")
        .header("content-type", "application/octet-stream")
        .body("01234")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-4");
    let loc = r.headers()["location"].to_str().unwrap().to_owned();

    // A chunk that does not start where the upload ends.
    let r = reg
        .req(Method::PATCH, &loc)
        .header("content-range", "3-5")
        .body("345")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["range"], "0-4");
    assert!(r.headers().contains_key("location"));

    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-4");

    let r = reg
        .req(Method::PATCH, &loc)
        .header("content-range", "5-9")
        .body("56789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-9");
    let d = Digest::sha256(b"0123456789abc");
    let r = reg
        .req(Method::PUT, &with_digest(&loc, &d))
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .req(Method::GET, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"0123456789abc");
}

#[tokio::test]
async fn streamed_patch_without_content_range() {
    let reg = TestRegistry::start().await;
    let loc = start(&reg, "a").await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let r = reg
        .req(Method::PATCH, &loc)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.headers()["range"],
        format!("0-{}", big.len() - 1).as_str()
    );
    let d = Digest::sha256(&big);
    let r = reg
        .req(Method::PUT, &with_digest(&loc, &d))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .req(Method::GET, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &big[..]);
}

#[tokio::test]
async fn wrong_digest_stores_nothing() {
    let reg = TestRegistry::start().await;
    let wrong = Digest::sha256(b"something else");
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?digest={wrong}"),
        )
        .body("content")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    for d in [wrong, Digest::sha256(b"content")] {
        let r = reg
            .req(Method::HEAD, &format!("/v2/a/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let loc = start(&reg, "a").await;
    let r = reg
        .req(Method::PUT, &with_digest(&loc, &Digest::sha256(b"nope")))
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest=sha256:bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a failed commit ends the session"
    );
    // No upload left on disk.
    assert_eq!(
        std::fs::read_dir(reg.data_dir().join("uploads"))
            .unwrap()
            .count(),
        0
    );
    // A PUT without digest is refused.
    let loc = start(&reg, "a").await;
    let r = reg.req(Method::PUT, &loc).send().await.unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn cancel_and_unknown_uploads() {
    let reg = TestRegistry::start().await;
    let loc = start(&reg, "a").await;
    let r = reg.req(Method::DELETE, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for m in [Method::GET, Method::PATCH, Method::DELETE] {
        let r = reg.req(m.clone(), &loc).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{m}");
        assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    }
    // An upload of one repository is unknown in another.
    let loc = start(&reg, "a").await;
    let other = loc.replace("/v2/a/", "/v2/b/");
    let r = reg.req(Method::GET, &other).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::GET, "/v2/a/blobs/uploads/not-an-id")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cross_repository_mount() {
    let reg = TestRegistry::start().await;
    let d = reg.push_blob("src/repo", b"mount me").await;
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/dst/blobs/{d}").as_str()
    );
    let r = reg
        .req(Method::GET, &format!("/v2/dst/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"mount me");
    // Not in the source: fall back to a session.
    let missing = Digest::sha256(b"missing");
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={missing}&from=src/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .contains("/blobs/uploads/"));
}

#[tokio::test]
async fn upload_survives_restart() {
    let reg = TestRegistry::start().await;
    let loc = start(&reg, "a").await;
    reg.req(Method::PATCH, &loc)
        .body("first-")
        .send()
        .await
        .unwrap();
    let dir = reg.stop().await.unwrap();
    let reg = TestRegistry::start_in(dir.path(), berth_server::Config::default()).await;
    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-5");
    let d = Digest::sha256(b"first-second");
    let r = reg
        .req(Method::PUT, &with_digest(&loc, &d))
        .body("second")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn idle_uploads_expire() {
    let dir = tempfile::tempdir().unwrap();
    let config = berth_server::Config {
        upload_idle_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let reg = TestRegistry::start_in(dir.path(), config).await;
    let loc = start(&reg, "a").await;
    // Poll the disk, not the API: a status request would refresh the idle timer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while std::fs::read_dir(dir.path().join("uploads"))
        .unwrap()
        .count()
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upload did not expire"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .count(),
        0
    );
}
