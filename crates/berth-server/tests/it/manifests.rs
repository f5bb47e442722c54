//! Manifests: push by tag and digest, every manifest kind, negotiation, references,
//! size limit, deletion by tag and by digest, multi-tag pushes.

use berth_oci::Digest;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{error_code, image_manifest, TestRegistry, OCI_INDEX, OCI_MANIFEST};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[tokio::test]
async fn push_and_fetch_byte_for_byte() {
    let reg = TestRegistry::start().await;
    let (m, d) = reg.push_image("team/app", "v1", "a").await;
    for reference in ["v1".to_string(), d.to_string()] {
        let r = reg
            .req(Method::GET, &format!("/v2/team/app/manifests/{reference}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(r.headers()["docker-content-digest"], d.to_string().as_str());
        assert_eq!(r.bytes().await.unwrap().as_ref(), &m[..], "exact bytes");
        let r = reg
            .req(Method::HEAD, &format!("/v2/team/app/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-length"], m.len().to_string().as_str());
    }
}

#[tokio::test]
async fn put_by_digest_checks_the_digest() {
    let reg = TestRegistry::start().await;
    let c = reg.push_blob("a", b"{}").await;
    let m = image_manifest(&c, 2, &[], None);
    let d = Digest::sha256(&m);
    let r = reg
        .put_manifest("a", &d.to_string(), OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/a/manifests/{d}").as_str()
    );
    let wrong = Digest::sha256(b"other");
    let r = reg
        .put_manifest("a", &wrong.to_string(), OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn missing_blobs_and_children_are_refused() {
    let reg = TestRegistry::start().await;
    let c = reg.push_blob("a", b"{}").await;
    let missing = Digest::sha256(b"not pushed");
    let m = image_manifest(&c, 2, &[(&missing, 10)], None);
    let r = reg.put_manifest("a", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // Blob present in another repository does not count.
    let c2 = reg.push_blob("other", b"{\"x\":1}").await;
    let m = image_manifest(&c2, 7, &[], None);
    let r = reg.put_manifest("a", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // An index whose child manifest is absent.
    let index = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[
        {"mediaType":OCI_MANIFEST,"digest":missing.to_string(),"size":5,"platform":{"os":"linux","architecture":"amd64"}}]});
    let r = reg
        .put_manifest("a", "idx", OCI_INDEX, index.to_string().as_bytes())
        .await;
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    let r = reg
        .req(Method::GET, "/v2/a/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_manifest_kind() {
    let reg = TestRegistry::start().await;
    let (_, amd) = reg.push_image("multi", "amd", "amd").await;
    let (_, arm) = reg.push_image("multi", "arm", "arm").await;
    let child = |d: &Digest, arch: &str, mt: &str| json!({"mediaType":mt,"digest":d.to_string(),"size":1,"platform":{"os":"linux","architecture":arch}});
    let oci_index = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[child(&amd,"amd64",OCI_MANIFEST),child(&arm,"arm64",OCI_MANIFEST)]});
    let r = reg
        .put_manifest("multi", "oci", OCI_INDEX, oci_index.to_string().as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Docker schema 2 manifest and list.
    let cfg = reg
        .push_blob("multi", b"{\"architecture\":\"amd64\",\"os\":\"linux\"}")
        .await;
    let dm = json!({"schemaVersion":2,"mediaType":DOCKER_MANIFEST,
        "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":cfg.to_string(),"size":38},
        "layers":[]});
    let r = reg
        .put_manifest(
            "multi",
            "docker",
            DOCKER_MANIFEST,
            dm.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let dmd = Digest::sha256(dm.to_string().as_bytes());
    let list = json!({"schemaVersion":2,"mediaType":DOCKER_LIST,"manifests":[child(&dmd,"amd64",DOCKER_MANIFEST)]});
    let r = reg
        .put_manifest("multi", "list", DOCKER_LIST, list.to_string().as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // A Helm chart: artifact config media type, custom layer type.
    let chart_cfg = reg
        .push_blob("charts/app", b"{\"name\":\"app\",\"version\":\"1.0.0\"}")
        .await;
    let chart = reg.push_blob("charts/app", b"chart tarball").await;
    let helm = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":chart_cfg.to_string(),"size":32},
        "layers":[{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":chart.to_string(),"size":13}]});
    let r = reg
        .put_manifest(
            "charts/app",
            "1.0.0",
            OCI_MANIFEST,
            helm.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Negotiation: the index type is served to clients accepting it...
    let r = reg
        .req(Method::GET, "/v2/multi/manifests/oci")
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    // ...a client accepting only image manifests gets the linux/amd64 image...
    let r = reg
        .req(Method::GET, "/v2/multi/manifests/oci")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["docker-content-digest"],
        amd.to_string().as_str()
    );
    // ...and a type the client cannot read at all is not served.
    let r = reg
        .req(Method::GET, "/v2/multi/manifests/docker")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn invalid_and_oversize_manifests() {
    let reg = TestRegistry::start().await;
    let r = reg
        .put_manifest("a", "v1", OCI_MANIFEST, b"{not json")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let r = reg
        .put_manifest(
            "a",
            "v1",
            DOCKER_MANIFEST,
            json!({"schemaVersion":2,"mediaType":OCI_MANIFEST})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let r = reg
        .put_manifest(
            "a",
            "v1",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            b"{\"schemaVersion\":1}",
        )
        .await;
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let big = vec![b' '; (4 << 20) + 1];
    let r = reg.put_manifest("a", "v1", OCI_MANIFEST, &big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let r = reg.put_manifest("a", "-bad-tag", OCI_MANIFEST, b"{}").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_manifests() {
    let reg = TestRegistry::start().await;
    let r = reg
        .req(Method::GET, "/v2/none/manifests/latest")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = reg
        .req(Method::HEAD, "/v2/none/manifests/latest")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    let r = reg
        .req(
            Method::GET,
            &format!("/v2/none/manifests/{}", Digest::sha256(b"x")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn delete_tag_versus_digest() {
    let reg = TestRegistry::start().await;
    let (m, d) = reg.push_image("a", "v1", "x").await;
    let r = reg.put_manifest("a", "v1.0", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Deleting a tag leaves the manifest and the other tag.
    let r = reg
        .req(Method::DELETE, "/v2/a/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::GET, "/v2/a/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::GET, &format!("/v2/a/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Deleting by digest removes the manifest and every tag on it.
    let r = reg
        .req(Method::DELETE, &format!("/v2/a/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::GET, "/v2/a/manifests/v1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::DELETE, &format!("/v2/a/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = reg
        .req(Method::DELETE, "/v2/a/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn several_tags_in_one_put() {
    let reg = TestRegistry::start().await;
    let c = reg.push_blob("a", b"{}").await;
    let m = image_manifest(&c, 2, &[], None);
    let d = Digest::sha256(&m);
    let r = reg
        .req(
            Method::PUT,
            &format!("/v2/a/manifests/{d}?tag=1.2.3&tag=1.2&tag=latest"),
        )
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let applied: Vec<_> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(applied, ["1.2.3", "1.2", "latest"]);
    for t in ["1.2.3", "1.2", "latest"] {
        let r = reg
            .req(Method::HEAD, &format!("/v2/a/manifests/{t}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["docker-content-digest"], d.to_string().as_str());
    }
}
