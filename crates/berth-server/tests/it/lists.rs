//! Tags list, catalog, referrers and repository names.

use berth_oci::Digest;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{error_code, image_manifest, TestRegistry, OCI_MANIFEST};

#[tokio::test]
async fn tags_paginate_lexically() {
    let reg = TestRegistry::start().await;
    let (m, _) = reg.push_image("a", "b", "s").await;
    for t in ["a", "c", "B", "d"] {
        reg.put_manifest("a", t, OCI_MANIFEST, &m).await;
    }
    let r = reg
        .req(Method::GET, "/v2/a/tags/list")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("link"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"name":"a","tags":["B","a","b","c","d"]}));

    let r = reg
        .req(Method::GET, "/v2/a/tags/list?n=2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["link"],
        "</v2/a/tags/list?last=a&n=2>; rel=\"next\""
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["B", "a"]));
    let r = reg
        .req(Method::GET, "/v2/a/tags/list?n=2&last=a")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["b", "c"]));
    // The last page has no Link.
    let r = reg
        .req(Method::GET, "/v2/a/tags/list?n=2&last=c")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("link"));
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["d"]));
    // Exactly n left: no Link either.
    let r = reg
        .req(Method::GET, "/v2/a/tags/list?n=5")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("link"));
    let r = reg
        .req(Method::GET, "/v2/a/tags/list?n=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    let r = reg
        .req(Method::GET, "/v2/a/tags/list?last=zzz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    let r = reg
        .req(Method::GET, "/v2/a/tags/list?n=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = reg
        .req(Method::GET, "/v2/unknown/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

#[tokio::test]
async fn catalog_paginates() {
    let reg = TestRegistry::start().await;
    for repo in ["b", "a/x", "c", "a"] {
        reg.push_blob(repo, b"x").await;
    }
    let v: Value = reg
        .req(Method::GET, "/v2/_catalog")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"repositories":["a","a/x","b","c"]}));
    let r = reg
        .req(Method::GET, "/v2/_catalog?n=3")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["link"],
        "</v2/_catalog?last=b&n=3>; rel=\"next\""
    );
    let r = reg
        .req(Method::GET, "/v2/_catalog?n=3&last=b")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["repositories"],
        json!(["c"])
    );
}

#[tokio::test]
async fn referrers_with_filter() {
    let reg = TestRegistry::start().await;
    let (m, subject) = reg.push_image("app", "v1", "s").await;
    let subj = json!({"mediaType":OCI_MANIFEST,"digest":subject.to_string(),"size":m.len()});
    let empty = reg.push_blob("app", b"{}").await;
    let sbom_blob = reg.push_blob("app", b"sbom").await;
    let mut sbom: Value = serde_json::from_slice(&image_manifest(
        &empty,
        2,
        &[(&sbom_blob, 4)],
        Some(subj.clone()),
    ))
    .unwrap();
    sbom["artifactType"] = "application/spdx+json".into();
    sbom["annotations"] = json!({"org.opencontainers.image.created":"2026-01-01T00:00:00Z"});
    let sbom = serde_json::to_vec(&sbom).unwrap();
    let r = reg
        .put_manifest(
            "app",
            &Digest::sha256(&sbom).to_string(),
            OCI_MANIFEST,
            &sbom,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["oci-subject"], subject.to_string().as_str());
    let mut sig: Value =
        serde_json::from_slice(&image_manifest(&empty, 2, &[], Some(subj))).unwrap();
    sig["config"]["mediaType"] = "application/vnd.dev.cosign.artifact.sig.v1+json".into();
    let sig = serde_json::to_vec(&sig).unwrap();
    reg.put_manifest("app", &Digest::sha256(&sig).to_string(), OCI_MANIFEST, &sig)
        .await;

    let r = reg
        .req(Method::GET, &format!("/v2/app/referrers/{subject}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(!r.headers().contains_key("oci-filters-applied"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2);
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["artifactType"], "application/spdx+json");
    assert_eq!(
        list[0]["annotations"]["org.opencontainers.image.created"],
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(
        list[1]["artifactType"],
        "application/vnd.dev.cosign.artifact.sig.v1+json"
    );

    let r = reg
        .req(
            Method::GET,
            &format!("/v2/app/referrers/{subject}?artifactType=application/spdx%2Bjson"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);

    // Unknown subject: an empty index, not a 404.
    let r = reg
        .req(
            Method::GET,
            &format!("/v2/app/referrers/{}", Digest::sha256(b"none")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["manifests"], json!([]));
    let r = reg
        .req(Method::GET, "/v2/app/referrers/sha256:zz")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // Deleting the referrer removes it from the list.
    reg.req(
        Method::DELETE,
        &format!("/v2/app/manifests/{}", Digest::sha256(&sig)),
    )
    .send()
    .await
    .unwrap();
    let v: Value = reg
        .req(Method::GET, &format!("/v2/app/referrers/{subject}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
}

/// cosign v2 keeps a signature under `sha256-<hex>.sig`: the referrers API lists it as
/// a referrer of `sha256:<hex>` (artifact type from its config, with its annotations),
/// and the tags list hides it and the referrers tag schema's tag unless `all=true`.
#[tokio::test]
async fn legacy_signature_tags_are_hidden_referrers() {
    let reg = TestRegistry::start().await;
    let (_, subject) = reg.push_image("app", "v1", "s").await;
    let hex = subject.hex().to_owned();
    let empty = reg.push_blob("app", b"{}").await;
    let payload = reg.push_blob("app", b"simple signing payload").await;
    let mut sig: Value =
        serde_json::from_slice(&image_manifest(&empty, 2, &[(&payload, 22)], None)).unwrap();
    sig["annotations"] = json!({"dev.cosignproject.cosign/signature": "MEUC"});
    let sig = serde_json::to_vec(&sig).unwrap();
    let r = reg
        .put_manifest("app", &format!("sha256-{hex}.sig"), OCI_MANIFEST, &sig)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // A referrers tag schema index, as a client keeps it on registries without the API.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": crate::common::OCI_INDEX, "manifests": []
    }))
    .unwrap();
    let r = reg
        .put_manifest(
            "app",
            &format!("sha256-{hex}"),
            crate::common::OCI_INDEX,
            &index,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    reg.push_image("app", "v2", "t").await;

    let v: Value = reg
        .req(Method::GET, &format!("/v2/app/referrers/{subject}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["manifests"],
        json!([{
            "mediaType": OCI_MANIFEST,
            "digest": Digest::sha256(&sig).to_string(),
            "size": sig.len(),
            "artifactType": "application/vnd.oci.image.config.v1+json",
            "annotations": {"dev.cosignproject.cosign/signature": "MEUC"},
        }])
    );

    let tags = |path: &'static str| {
        let req = reg.req(Method::GET, path);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let link = r
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_owned());
            (r.json::<Value>().await.unwrap()["tags"].clone(), link)
        }
    };
    assert_eq!(tags("/v2/app/tags/list").await.0, json!(["v1", "v2"]));
    assert_eq!(
        tags("/v2/app/tags/list?all=false").await.0,
        json!(["v1", "v2"])
    );
    let (all, _) = tags("/v2/app/tags/list?all=true").await;
    assert_eq!(
        all,
        json!([
            format!("sha256-{hex}"),
            format!("sha256-{hex}.sig"),
            "v1",
            "v2"
        ])
    );
    // The next page's link keeps `all=true`.
    let (first, link) = tags("/v2/app/tags/list?all=true&n=1").await;
    assert_eq!(first, json!([format!("sha256-{hex}")]));
    let link = link.unwrap();
    assert!(link.contains("&all=true>"), "{link}");
    let next = link
        .trim_start_matches('<')
        .split_once('>')
        .unwrap()
        .0
        .to_owned();
    let r = reg.req(Method::GET, &next).send().await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["tags"],
        json!([format!("sha256-{hex}.sig")])
    );
    let r = reg
        .req(Method::GET, "/v2/app/tags/list?all=maybe")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    // Hidden tags still resolve.
    let r = reg
        .req(Method::GET, &format!("/v2/app/manifests/sha256-{hex}.sig"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn invalid_names() {
    let reg = TestRegistry::start().await;
    for path in [
        "/v2/UPPER/tags/list",
        "/v2/a..b/manifests/latest",
        "/v2/a//b/blobs/uploads/",
        "/v2/-a/tags/list",
    ] {
        let r = reg.req(Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(error_code(r).await, "NAME_INVALID", "{path}");
    }
    let r = reg
        .req(Method::POST, "/v2/Bad/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "NAME_INVALID");
    let r = reg
        .req(Method::GET, "/v2/a/nothing-here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::POST, "/v2/a/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}
