//! Blob fetch, ranged fetch, HEAD and DELETE.

use berth_oci::Digest;
use reqwest::{Method, StatusCode};

use berth_server::config::BlobTransfer;

use crate::common::{error_code, TestRegistry};

/// Servers sending large blobs each way a plain-HTTP/1.1 connection can (`Auto` is
/// `Copy` here, the client being on loopback).
async fn each_transfer() -> Vec<(BlobTransfer, TestRegistry)> {
    let mut regs = Vec::new();
    for t in [BlobTransfer::Sendfile, BlobTransfer::Copy] {
        let config = berth_server::Config {
            blob_transfer: t,
            ..Default::default()
        };
        regs.push((t, TestRegistry::start_with(config).await));
    }
    regs
}

#[tokio::test]
async fn version_check() {
    let reg = TestRegistry::start().await;
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

#[tokio::test]
async fn get_head_and_ranges() {
    let reg = TestRegistry::start().await;
    let content = b"0123456789";
    let d = reg.push_blob("a/b", content).await;
    let path = format!("/v2/a/b/blobs/{d}");

    let r = reg.req(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "10");
    assert_eq!(r.headers()["docker-content-digest"], d.to_string().as_str());

    let r = reg.req(Method::GET, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), content);

    for (range, want, cr) in [
        ("bytes=2-4", &b"234"[..], "bytes 2-4/10"),
        ("bytes=7-", b"789", "bytes 7-9/10"),
        ("bytes=-2", b"89", "bytes 8-9/10"),
    ] {
        let r = reg
            .req(Method::GET, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(r.headers()["content-range"], cr);
        assert_eq!(r.bytes().await.unwrap().as_ref(), want);
    }
    let r = reg
        .req(Method::GET, &path)
        .header("range", "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */10");
}

#[tokio::test]
async fn unknown_and_invalid_blobs() {
    let reg = TestRegistry::start().await;
    let d = reg.push_blob("a", b"x").await;
    // Present in another repository only: unknown here.
    let r = reg
        .req(Method::GET, &format!("/v2/b/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = reg
        .req(Method::HEAD, &format!("/v2/b/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for bad in ["sha256:abc", "md5:abc", "nodigest"] {
        let r = reg
            .req(Method::GET, &format!("/v2/a/blobs/{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(r).await, "DIGEST_INVALID");
    }
}

#[tokio::test]
async fn delete_blob_and_shared_storage() {
    let reg = TestRegistry::start().await;
    let d = reg.push_blob("a", b"shared").await;
    reg.push_blob("b", b"shared").await;
    let r = reg
        .req(Method::DELETE, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::GET, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Still linked in b, so still served there.
    let r = reg
        .req(Method::GET, &format!("/v2/b/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"shared");
    let r = reg
        .req(Method::DELETE, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    // Last link gone: the bytes are gone from disk.
    let path = reg.data_dir().join("blobs/sha256").join(d.hex());
    assert!(path.exists());
    reg.req(Method::DELETE, &format!("/v2/b/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn blob_in_use_is_not_deleted() {
    let reg = TestRegistry::start().await;
    let (m, md) = reg.push_image("app", "v1", "s").await;
    let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let layer = v["layers"][0]["digest"].as_str().unwrap();
    let r = reg
        .req(Method::DELETE, &format!("/v2/app/blobs/{layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    reg.req(Method::DELETE, &format!("/v2/app/manifests/{md}"))
        .send()
        .await
        .unwrap();
    let r = reg
        .req(Method::DELETE, &format!("/v2/app/blobs/{layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn sha512_blobs() {
    let reg = TestRegistry::start().await;
    let d = Digest::of(berth_oci::Algorithm::Sha512, b"five twelve");
    let r = reg
        .req(Method::POST, &format!("/v2/a/blobs/uploads/?digest={d}"))
        .body("five twelve")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .req(Method::GET, &format!("/v2/a/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"], d.to_string().as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"five twelve");
}

/// Blobs large enough to be sent with `sendfile` (or the copy path) on plain HTTP/1.1,
/// several on one keep-alive connection, whole and ranged, and the same over HTTP/2
/// (always streamed).
#[tokio::test]
async fn large_blobs_whole_and_ranged_over_http1_and_h2c() {
    for (transfer, reg) in each_transfer().await {
        eprintln!("transfer {transfer:?}");
        large_blobs(reg).await;
    }
}

async fn large_blobs(reg: TestRegistry) {
    // Not a multiple of the 1 MiB frame, and no two MiB alike.
    let content: Vec<u8> = (0..(3 << 20) + 4321u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let d = reg.push_blob("big/one", &content).await;
    let small = reg.push_blob("big/one", b"small blob").await;
    let path = format!("/v2/big/one/blobs/{d}");
    let len = content.len();
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (proto, client) in [("http/1.1", &h1), ("h2c", &h2)] {
        for round in 0..2 {
            let r = client.get(reg.url(&path)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{proto}");
            assert_eq!(r.headers()["content-length"], len.to_string().as_str());
            let body = r.bytes().await.unwrap();
            assert!(
                body.as_ref() == &content[..],
                "{proto} round {round}: whole blob differs"
            );
            for (range, start, end) in [
                ("bytes=1000-2500000".to_string(), 1000, 2_500_001),
                (format!("bytes={}-", len - 70_000), len - 70_000, len),
                ("bytes=-100000".to_string(), len - 100_000, len),
                ("bytes=0-65535".to_string(), 0, 65_536),
                ("bytes=5-9".to_string(), 5, 10),
            ] {
                let r = client
                    .get(reg.url(&path))
                    .header("range", &range)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{proto} {range}");
                assert_eq!(
                    r.headers()["content-range"],
                    format!("bytes {}-{}/{len}", start, end - 1).as_str()
                );
                let body = r.bytes().await.unwrap();
                assert!(
                    body.as_ref() == &content[start..end],
                    "{proto} {range} differs"
                );
            }
            let r = client
                .get(reg.url(&format!("/v2/big/one/blobs/{small}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.bytes().await.unwrap().as_ref(), b"small blob");
        }
    }
    // Several whole-blob GETs at once on separate connections.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = reg.url(&path);
        tasks.push(tokio::spawn(async move {
            reqwest::get(url).await.unwrap().bytes().await.unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().as_ref() == &content[..]);
    }
}

/// Many clients pulling at once, more than the 16 copy buffers a server lends (those
/// beyond the budget are sent with sendfile): every client gets its own bytes.
#[tokio::test]
async fn more_concurrent_pulls_than_copy_buffers() {
    let reg = TestRegistry::start().await;
    let content: Vec<u8> = (0..(2 << 20) + 99u32).map(|i| (i % 239) as u8).collect();
    let d = reg.push_blob("many/pulls", &content).await;
    let url = reg.url(&format!("/v2/many/pulls/blobs/{d}"));
    let content = std::sync::Arc::new(content);
    let mut tasks = Vec::new();
    for _ in 0..80 {
        let (url, content) = (url.clone(), content.clone());
        tasks.push(tokio::spawn(async move {
            // A client of its own: one connection each.
            let client = reqwest::Client::builder().http1_only().build().unwrap();
            let body = client.get(url).send().await.unwrap().bytes().await.unwrap();
            assert!(body.as_ref() == &content[..], "bytes differ");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A blob file shorter than its recorded size is refused, never padded or cut short.
#[tokio::test]
async fn a_damaged_blob_file_is_not_served() {
    for (transfer, reg) in each_transfer().await {
        let content = vec![7u8; 1 << 20];
        let d = reg.push_blob("big/two", &content).await;
        let file = find_file(&reg.data_dir().join("blobs"), d.hex()).expect("blob file");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(1000)
            .unwrap();
        let r = reg
            .req(Method::GET, &format!("/v2/big/two/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{transfer:?}");
        assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    }
}

/// A small blob file truncated or deleted under the registry answers `BLOB_UNKNOWN` to
/// `HEAD` and `GET` alike, so a client that checks before pushing pushes it again.
#[tokio::test]
async fn heads_and_small_gets_check_the_stored_file() {
    let reg = TestRegistry::start().await;
    let d = reg
        .push_blob("a/b", b"a small blob of forty bytes, more or less")
        .await;
    let file = find_file(&reg.data_dir().join("blobs"), d.hex()).expect("blob file");
    let url = format!("/v2/a/b/blobs/{d}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(10)
        .unwrap();
    for method in [Method::HEAD, Method::GET] {
        let r = reg.req(method.clone(), &url).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "{method} of a short file"
        );
    }
    std::fs::remove_file(&file).unwrap();
    for method in [Method::HEAD, Method::GET] {
        let r = reg.req(method.clone(), &url).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "{method} of a missing file"
        );
    }
    let r = reg.req(Method::GET, &url).send().await.unwrap();
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    // Pushing it again heals it.
    let again = reg
        .push_blob("a/b", b"a small blob of forty bytes, more or less")
        .await;
    assert_eq!(again, d);
    let r = reg.req(Method::HEAD, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let p = entry.ok()?.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if p.file_name().and_then(|n| n.to_str()) == Some(name) {
            return Some(p);
        }
    }
    None
}

/// HTTP/1.1 pipelining: four blob GETs (three sent with sendfile or the copy path, one
/// small) written in one go on one connection come back in order, each with its own bytes.
#[tokio::test]
async fn pipelined_blob_gets_come_back_in_order() {
    for (transfer, reg) in each_transfer().await {
        eprintln!("transfer {transfer:?}");
        pipelined(reg).await;
    }
}

async fn pipelined(reg: TestRegistry) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a: Vec<u8> = (0..(2 << 20) + 17u32).map(|i| (i % 253) as u8).collect();
    let b: Vec<u8> = (0..(1 << 20) + 5u32).map(|i| (i % 241) as u8).collect();
    let da = reg.push_blob("pipe/line", &a).await;
    let db = reg.push_blob("pipe/line", &b).await;
    let ds = reg.push_blob("pipe/line", b"tiny").await;
    let addr = reg.base.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET /v2/pipe/line/blobs/{da} HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /v2/pipe/line/blobs/{db} HTTP/1.1\r\nHost: {addr}\r\nRange: bytes=100-200099\r\n\r\n\
         GET /v2/pipe/line/blobs/{ds} HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /v2/pipe/line/blobs/{db} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let want: [(&str, &[u8]); 4] = [
        ("200", &a),
        ("206", &b[100..200_100]),
        ("200", b"tiny"),
        ("200", &b),
    ];
    let mut rest = &all[..];
    for (i, (status, body)) in want.iter().enumerate() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("response {i}: no head"));
        let head = std::str::from_utf8(&rest[..end])
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "response {i}: {head}"
        );
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(len, body.len(), "response {i}");
        let got = &rest[end + 4..end + 4 + len];
        assert!(got == *body, "response {i}: body differs");
        rest = &rest[end + 4 + len..];
    }
    assert!(rest.is_empty(), "{} unexpected trailing bytes", rest.len());
}
