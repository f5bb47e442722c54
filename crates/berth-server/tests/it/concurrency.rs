//! Many clients pushing the same blob or the same tag at once end in one consistent state.

use berth_oci::Digest;
use reqwest::{Method, StatusCode};

use crate::common::{image_manifest, TestRegistry, OCI_MANIFEST};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_blob_and_same_tag_from_many_clients() {
    let reg = std::sync::Arc::new(TestRegistry::start().await);
    let content: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let d = Digest::sha256(&content);

    // Sixteen clients push the same blob, half monolithic and half chunked.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (reg, content, d) = (reg.clone(), content.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let r = reg
                    .req(Method::POST, &format!("/v2/race/blobs/uploads/?digest={d}"))
                    .body(content)
                    .send()
                    .await
                    .unwrap();
                r.status()
            } else {
                let r = reg
                    .req(Method::POST, "/v2/race/blobs/uploads/")
                    .send()
                    .await
                    .unwrap();
                let loc = r.headers()["location"].to_str().unwrap().to_owned();
                let half = content.len() / 2;
                let r = reg
                    .req(Method::PATCH, &loc)
                    .header("content-range", format!("0-{}", half - 1))
                    .body(content[..half].to_vec())
                    .send()
                    .await
                    .unwrap();
                let loc = r.headers()["location"].to_str().unwrap().to_owned();
                let r = reg
                    .req(Method::PUT, &format!("{loc}?digest={d}"))
                    .body(content[half..].to_vec())
                    .send()
                    .await
                    .unwrap();
                r.status()
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    let got = reg
        .req(Method::GET, &format!("/v2/race/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(Digest::sha256(&got.bytes().await.unwrap()), d);
    assert_eq!(
        std::fs::read_dir(reg.data_dir().join("uploads"))
            .unwrap()
            .count(),
        0
    );

    // Sixteen clients move the same tag to sixteen different manifests.
    let config = reg.push_blob("race", b"{}").await;
    let manifests: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            let mut m: serde_json::Value =
                serde_json::from_slice(&image_manifest(&config, 2, &[(&d, content.len())], None))
                    .unwrap();
            m["annotations"] = serde_json::json!({"n": i.to_string()});
            serde_json::to_vec(&m).unwrap()
        })
        .collect();
    let mut tasks = Vec::new();
    for m in manifests.clone() {
        let reg = reg.clone();
        tasks.push(tokio::spawn(async move {
            reg.put_manifest("race", "latest", OCI_MANIFEST, &m)
                .await
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    // The tag points at exactly one of them, and every one is stored by digest.
    let r = reg
        .req(Method::GET, "/v2/race/manifests/latest")
        .send()
        .await
        .unwrap();
    let body = r.bytes().await.unwrap();
    assert!(manifests.iter().any(|m| m[..] == body[..]));
    for m in &manifests {
        let r = reg
            .req(
                Method::HEAD,
                &format!("/v2/race/manifests/{}", Digest::sha256(m)),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let tags: serde_json::Value = reg
        .req(Method::GET, "/v2/race/tags/list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["latest"]));
}
