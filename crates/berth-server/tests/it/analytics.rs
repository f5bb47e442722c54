//! Download analytics: attribution by version, platform and client; index + child is
//! one download; an index alone is an inspection; counts survive a restart.

use berth_oci::Digest;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{TestRegistry, OCI_INDEX, OCI_MANIFEST};

/// Pushes a single-platform image whose config names `arch`; returns its digest and size.
async fn image(reg: &TestRegistry, repo: &str, arch: &str, tag: &str) -> (Digest, usize) {
    let config =
        json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
            .to_string();
    let c = reg.push_blob(repo, config.as_bytes()).await;
    let l = reg
        .push_blob(repo, format!("layer {arch}").as_bytes())
        .await;
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l.to_string(), "size": 11}]})
    .to_string();
    let r = reg
        .put_manifest(repo, tag, OCI_MANIFEST, m.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (Digest::sha256(m.as_bytes()), m.len())
}

async fn get(reg: &TestRegistry, ua: &str, path: &str) {
    let r = reg
        .req(Method::GET, path)
        .header("user-agent", ua)
        .header("accept", format!("{OCI_INDEX}, {OCI_MANIFEST}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
}

async fn stats(reg: &TestRegistry, by: &str) -> Value {
    let r = reg
        .req(
            Method::GET,
            &format!("/api/v1/stats/repositories/team/app?by={by}&since=1d"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

fn groups(v: &Value) -> Vec<(String, u64)> {
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_owned(),
                g["downloads"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn downloads_by_version_platform_and_client() {
    let reg = TestRegistry::start().await;
    let (amd, amd_len) = image(&reg, "team/app", "amd64", "amd64-build").await;
    let (arm, arm_len) = image(&reg, "team/app", "arm64", "arm64-build").await;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "annotations": {"org.opencontainers.image.version": "1.4.0"},
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.to_string(), "size": amd_len, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.to_string(), "size": arm_len, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]})
    .to_string();
    assert_eq!(
        reg.put_manifest("team/app", "1.4", OCI_INDEX, index.as_bytes())
            .await
            .status(),
        StatusCode::CREATED
    );
    // A single-platform release without annotation: its version comes from its tag.
    let (single, _) = image(&reg, "team/app", "s390x", "2.0.0").await;

    // skopeo pulls arm64 three times, containerd amd64 twice: index then child each time.
    for _ in 0..3 {
        get(&reg, "skopeo/1.13.3", "/v2/team/app/manifests/1.4").await;
        get(
            &reg,
            "skopeo/1.13.3",
            &format!("/v2/team/app/manifests/{arm}"),
        )
        .await;
    }
    for _ in 0..2 {
        get(&reg, "containerd/v1.7.2", "/v2/team/app/manifests/1.4").await;
        get(
            &reg,
            "containerd/v1.7.2",
            &format!("/v2/team/app/manifests/{amd}"),
        )
        .await;
    }
    // berth fetches the index alone once.
    get(&reg, "berth/0.1.0", "/v2/team/app/manifests/1.4").await;
    // helm pulls the single-platform image by digest; a HEAD alone is an inspection.
    get(
        &reg,
        "Helm/3.14.0",
        &format!("/v2/team/app/manifests/{single}"),
    )
    .await;
    reg.req(Method::HEAD, "/v2/team/app/manifests/1.4")
        .send()
        .await
        .unwrap();
    // Two failed requests, for the error rate.
    reg.req(Method::GET, "/v2/team/app/manifests/9.9.9")
        .send()
        .await
        .unwrap();
    reg.req(
        Method::GET,
        &format!("/v2/team/app/blobs/{}", Digest::sha256(b"no")),
    )
    .send()
    .await
    .unwrap();

    // Before the one-minute window closes, a lone index is still waiting for a child.
    let v = stats(&reg, "platform").await;
    assert_eq!(
        groups(&v),
        vec![
            ("linux/amd64".to_owned(), 2),
            ("linux/arm64/v8".to_owned(), 3),
            ("linux/s390x".to_owned(), 1)
        ]
    );
    assert_eq!(v["total"], 6);
    assert!(v["bytes_served"].as_u64().unwrap() > 0);
    let req = &v["requests"];
    assert_eq!(req["errors"], 2, "{req}");
    assert_eq!(req["errors_by_code"]["MANIFEST_UNKNOWN"], 1);
    assert_eq!(req["errors_by_code"]["BLOB_UNKNOWN"], 1);
    assert!(req["total"].as_u64().unwrap() >= 14);
    assert!(req["error_rate"].as_f64().unwrap() > 0.0);
    let v = stats(&reg, "version").await;
    assert_eq!(
        groups(&v),
        vec![("1.4.0".to_owned(), 5), ("2.0.0".to_owned(), 1)]
    );
    let v = stats(&reg, "client").await;
    assert_eq!(
        groups(&v),
        vec![
            ("containerd".to_owned(), 2),
            ("helm".to_owned(), 1),
            ("podman".to_owned(), 3)
        ]
    );
    let v = stats(&reg, "day").await;
    assert_eq!(v["groups"].as_array().unwrap().len(), 1);

    // A restart flushes what is waiting (the lone index and the HEAD become
    // inspections, not downloads) and keeps it.
    let dir = reg.stop().await.unwrap();
    let reg = TestRegistry::start_in(dir.path(), berth_server::Config::default()).await;
    let v = stats(&reg, "platform").await;
    assert_eq!(groups(&v).len(), 3, "{v}");
    assert_eq!(v["total"], 6);
    assert_eq!(v["inspections"]["total"], 2, "{v}");
    assert_eq!(v["inspections"]["groups"][0]["key"], "index");
    let top: Value = reg
        .req(Method::GET, "/api/v1/stats/top")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        top["repositories"][0],
        json!({"repository": "team/app", "downloads": 6})
    );
    let r = reg
        .req(Method::GET, "/api/v1/stats/repositories/team/app?by=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
