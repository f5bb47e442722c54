//! Retag, delete, digest and multi-platform index assembly.

use berth_client::index::{self, Removal};
use berth_client::{CopyOptions, Location};
use berth_oci::{media_types as mt, Reference, RepoName, Tag};

use crate::fixtures::*;

#[tokio::test(flavor = "multi_thread")]
async fn retag_and_delete_on_both_registries() {
    let berth = TestBerth::start().await;
    let dist = TestDistribution::start();
    let c = clients();
    for host in [berth.host(), dist.host()] {
        let reg = c.registry(&host).unwrap();
        let img = image(20, 2, 1000, "amd64", false);
        push_image(&reg, "app", &img, Some("build-7")).await;
        let src = image_ref(&host, "app:build-7");
        let d = index::retag(
            &c,
            &src,
            &[
                Tag::parse("stable").unwrap(),
                Tag::parse("candidate").unwrap(),
            ],
        )
        .await
        .unwrap();
        assert_eq!(d, img.manifest.digest);
        let repo = RepoName::parse("app").unwrap();
        for t in ["stable", "candidate"] {
            let got = reg
                .get_manifest(&repo, &Reference::parse(t).unwrap())
                .await
                .unwrap();
            assert_eq!(got.bytes, img.manifest.bytes);
        }
        assert_eq!(
            index::resolve(&c, &image_ref(&host, "app:candidate"))
                .await
                .unwrap(),
            d
        );

        reg.delete_manifest(&repo, &d).await.unwrap();
        let e = index::resolve(&c, &image_ref(&host, "app:build-7"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, berth_client::ClientError::NotFound(_)),
            "{host}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn index_create_add_remove() {
    let berth = TestBerth::start().await;
    let dist = TestDistribution::start();
    let c = clients();
    let amd = image(30, 1, 2000, "amd64", true);
    let arm = image(31, 1, 2000, "arm64", true);
    let riscv = image(32, 1, 2000, "riscv64", false);
    let breg = c.registry(&berth.host()).unwrap();
    push_image(&breg, "app", &amd, Some("1-amd64")).await;
    // The arm64 image lives on another registry: create copies it over.
    push_image(
        &c.registry(&dist.host()).unwrap(),
        "elsewhere",
        &arm,
        Some("1-arm64"),
    )
    .await;
    push_image(&breg, "app", &riscv, Some("1-riscv64")).await;

    let dst = image_ref(&berth.host(), "app:1");
    let sources = [
        Location::parse(&format!("{}/app:1-amd64", berth.host())).unwrap(),
        Location::parse(&format!("{}/elsewhere:1-arm64", dist.host())).unwrap(),
    ];
    let d = index::create(&c, &dst, &sources, &CopyOptions::default(), quiet())
        .await
        .unwrap();
    let repo = RepoName::parse("app").unwrap();
    let idx = breg
        .get_manifest(&repo, &Reference::parse("1").unwrap())
        .await
        .unwrap();
    assert_eq!(idx.digest, d);
    assert_eq!(
        idx.media_type,
        mt::DOCKER_MANIFEST_LIST,
        "all children are Docker manifests"
    );
    let parsed = idx.parse().unwrap();
    let plats: Vec<String> = parsed
        .manifests
        .iter()
        .map(|m| m.platform.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(plats, ["linux/amd64", "linux/arm64"]);
    assert_eq!(parsed.manifests[1].digest, arm.manifest.digest);
    // The arm64 image is now in the destination repository.
    breg.get_manifest(&repo, &Reference::Digest(arm.manifest.digest.clone()))
        .await
        .unwrap();

    let d2 = index::add(
        &c,
        &dst,
        &[Location::parse(&format!("{}/app:1-riscv64", berth.host())).unwrap()],
        &CopyOptions::default(),
        quiet(),
    )
    .await
    .unwrap();
    let idx = breg
        .get_manifest(&repo, &Reference::Digest(d2))
        .await
        .unwrap();
    assert_eq!(idx.parse().unwrap().manifests.len(), 3);

    index::remove(
        &c,
        &dst,
        &[Removal::Platform("linux/amd64".parse().unwrap())],
    )
    .await
    .unwrap();
    let idx = breg
        .get_manifest(&repo, &Reference::parse("1").unwrap())
        .await
        .unwrap();
    let plats: Vec<String> = idx
        .parse()
        .unwrap()
        .manifests
        .iter()
        .map(|m| m.platform.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(plats, ["linux/arm64", "linux/riscv64"]);
    let e = index::remove(
        &c,
        &dst,
        &[Removal::Platform("linux/amd64".parse().unwrap())],
    )
    .await
    .unwrap_err();
    assert!(matches!(e, berth_client::ClientError::NotFound(_)));
}
