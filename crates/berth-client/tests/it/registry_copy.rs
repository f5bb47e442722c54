//! Registry to registry: copies between Berth and Distribution, skip by HEAD, mounts,
//! platforms, tags and errors.

use berth_client::transport::{RegistryDestination, RegistrySource};
use berth_client::{copy_image, ClientError, CopyOptions, PlatformFilter};
use berth_oci::{Reference, RepoName};

use crate::fixtures::*;

fn opts() -> CopyOptions {
    CopyOptions {
        jobs: 4,
        ..CopyOptions::default()
    }
}

async fn copy(
    clients: &berth_client::Clients,
    src: &str,
    dst: &str,
    o: &CopyOptions,
) -> Result<berth_client::CopyReport, ClientError> {
    let s = berth_client::ImageRef::parse(src).unwrap();
    let d = berth_client::ImageRef::parse(dst).unwrap();
    let s = RegistrySource::new(clients.registry(&s.registry)?, s);
    let d = RegistryDestination::new(clients.registry(&d.registry)?, d);
    copy_image(&s, &d, o, quiet()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_berth_to_distribution_and_back_preserves_digests() {
    let berth = TestBerth::start().await;
    let dist = TestDistribution::start();
    let c = clients();
    let img = image(1, 3, 20_000, "amd64", false);
    push_image(&c.registry(&berth.host()).unwrap(), "app", &img, Some("v1")).await;

    let r = copy(
        &c,
        &format!("{}/app:v1", berth.host()),
        &format!("{}/mirror/app:v1", dist.host()),
        &opts(),
    )
    .await
    .unwrap();
    assert_eq!(r.digest, img.manifest.digest);
    assert_eq!((r.blobs, r.copied), (4, 4));
    let got = c
        .registry(&dist.host())
        .unwrap()
        .get_manifest(
            &RepoName::parse("mirror/app").unwrap(),
            &Reference::parse("v1").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(got.bytes, img.manifest.bytes, "exact bytes preserved");

    // And back into another Berth repository.
    let r = copy(
        &c,
        &format!("{}/mirror/app:v1", dist.host()),
        &format!("{}/back:v1", berth.host()),
        &opts(),
    )
    .await
    .unwrap();
    assert_eq!(r.digest, img.manifest.digest);

    // A second copy finds every blob by HEAD and moves nothing.
    let r = copy(
        &c,
        &format!("{}/app:v1", berth.host()),
        &format!("{}/mirror/app:v1", dist.host()),
        &opts(),
    )
    .await
    .unwrap();
    assert_eq!((r.skipped, r.copied, r.bytes_copied), (4, 0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_are_mounted_between_repositories() {
    let berth = TestBerth::start().await;
    let dist = TestDistribution::start();
    let c = clients();
    for host in [berth.host(), dist.host()] {
        let img = image(2, 2, 5000, "amd64", true);
        push_image(&c.registry(&host).unwrap(), "team/a", &img, Some("1")).await;
        let r = copy(
            &c,
            &format!("{host}/team/a:1"),
            &format!("{host}/team/b:1"),
            &opts(),
        )
        .await
        .unwrap();
        assert_eq!((r.mounted, r.copied), (3, 0), "on {host}");
        assert_eq!(r.digest, img.manifest.digest);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn multiarch_copies_every_platform_or_one() {
    let berth = TestBerth::start().await;
    let dist = TestDistribution::start();
    let c = clients();
    let (idx, _amd, arm) =
        push_multiarch(&c.registry(&berth.host()).unwrap(), "multi", "1", 10).await;

    let r = copy(
        &c,
        &format!("{}/multi:1", berth.host()),
        &format!("{}/multi:1", dist.host()),
        &opts(),
    )
    .await
    .unwrap();
    assert_eq!(r.digest, idx.digest);
    assert_eq!((r.manifests, r.blobs), (3, 6));
    let d = c.registry(&dist.host()).unwrap();
    let repo = RepoName::parse("multi").unwrap();
    let got = d
        .get_manifest(&repo, &Reference::parse("1").unwrap())
        .await
        .unwrap();
    assert_eq!(got.bytes, idx.bytes);

    let o = CopyOptions {
        platform: Some("linux/arm64".parse().unwrap()),
        ..opts()
    };
    let r = copy(
        &c,
        &format!("{}/multi:1", berth.host()),
        &format!("{}/arm-only:1", dist.host()),
        &o,
    )
    .await
    .unwrap();
    assert_eq!(r.digest, arm.manifest.digest);
    assert_eq!(r.blobs, 3);

    let o = CopyOptions {
        platform: Some(PlatformFilter {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        }),
        ..opts()
    };
    let e = copy(
        &c,
        &format!("{}/multi:1", berth.host()),
        &format!("{}/x:1", dist.host()),
        &o,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ClientError::NotFound(_)), "{e}");
    assert!(e.to_string().contains("linux/amd64, linux/arm64"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_images_and_repositories_are_not_found() {
    let berth = TestBerth::start().await;
    let dist = TestDistribution::start();
    let c = clients();
    for host in [berth.host(), dist.host()] {
        let e = copy(
            &c,
            &format!("{host}/nope:1"),
            &format!("{host}/x:1"),
            &opts(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ClientError::NotFound(_)), "{host}: {e}");
        assert_eq!(e.exit_code(), 3);
    }
    // A closed port is a network error, after the retries.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let e = copy(
        &c,
        &format!("{closed}/a:1"),
        &format!("{}/x:1", berth.host()),
        &opts(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ClientError::Network { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_follow_pagination_and_catalog_lists_repositories() {
    let berth = TestBerth::start().await;
    let dist = TestDistribution::start();
    let c = clients();
    let img = image(3, 1, 100, "amd64", false);
    for host in [berth.host(), dist.host()] {
        let reg = c.registry(&host).unwrap();
        for t in ["a", "b", "c", "d", "e"] {
            push_image(&reg, "paged", &img, Some(t)).await;
        }
        push_image(&reg, "other/repo", &img, Some("x")).await;
        let repo = RepoName::parse("paged").unwrap();
        let mut tags = reg.tags_paged(&repo, Some(2)).await.unwrap();
        tags.sort();
        assert_eq!(tags, ["a", "b", "c", "d", "e"], "{host}");
        assert_eq!(reg.tags(&repo).await.unwrap().len(), 5);
        let repos = reg.catalog().await.unwrap();
        assert!(
            repos.contains(&"paged".to_string()) && repos.contains(&"other/repo".to_string()),
            "{repos:?}"
        );
    }
}
