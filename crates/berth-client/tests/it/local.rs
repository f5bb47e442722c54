//! Registry to and from OCI layouts, oci-archives and docker-archives; failed writes
//! leave nothing behind.

use berth_client::{
    copy_image, open_destination, open_source, ClientError, CopyOptions, CopyReport, Location,
};
use berth_oci::{Reference, RepoName};

use crate::fixtures::*;

async fn copy_loc(
    c: &berth_client::Clients,
    src: &str,
    dst: &str,
    o: &CopyOptions,
) -> Result<CopyReport, ClientError> {
    let s = open_source(c, &Location::parse(src)?).await?;
    let d = open_destination(c, &Location::parse(dst)?, s.as_ref())?;
    copy_image(s.as_ref(), d.as_ref(), o, quiet()).await
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_layout_round_trip_on_both_registries() {
    let berth = TestBerth::start().await;
    let dist = TestDistribution::start();
    let c = clients();
    let tmp = tempfile::tempdir().unwrap();
    let (idx, _, _) = push_multiarch(&c.registry(&berth.host()).unwrap(), "multi", "2", 40).await;
    let layout = tmp.path().join("layout");
    let l = layout.display();

    // A whole index into a layout, then a second tag into the same layout.
    let r = copy_loc(
        &c,
        &format!("{}/multi:2", berth.host()),
        &format!("oci:{l}:v2"),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.digest, idx.digest);
    let img = image(41, 2, 4000, "amd64", false);
    push_image(
        &c.registry(&berth.host()).unwrap(),
        "single",
        &img,
        Some("s"),
    )
    .await;
    copy_loc(
        &c,
        &format!("{}/single:s", berth.host()),
        &format!("oci:{l}"),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    let index = berth_client::layout::LayoutIndex::read(&layout).unwrap();
    assert_eq!(
        index.tags(),
        ["v2", "s"],
        "untagged destination takes the source tag"
    );

    // Layout to Distribution and back to Berth, digests unchanged.
    let r = copy_loc(
        &c,
        &format!("oci:{l}:v2"),
        &format!("{}/from-layout:v2", dist.host()),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.digest, idx.digest);
    let got = c
        .registry(&dist.host())
        .unwrap()
        .get_manifest(
            &RepoName::parse("from-layout").unwrap(),
            &Reference::parse("v2").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(got.bytes, idx.bytes);
    let r = copy_loc(
        &c,
        &format!("oci:{l}:s"),
        &format!("{}/from-layout:s", berth.host()),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.digest, img.manifest.digest);
    // A layout with several images needs a tag.
    let e = copy_loc(
        &c,
        &format!("oci:{l}"),
        &format!("{}/x:1", berth.host()),
        &CopyOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("name one with a tag"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_archives_round_trip() {
    let berth = TestBerth::start().await;
    let dist = TestDistribution::start();
    let c = clients();
    let tmp = tempfile::tempdir().unwrap();
    let (idx, amd, arm) =
        push_multiarch(&c.registry(&dist.host()).unwrap(), "multi", "3", 50).await;

    // oci-archive keeps the whole index.
    let oa = tmp.path().join("multi-oci.tar");
    let r = copy_loc(
        &c,
        &format!("{}/multi:3", dist.host()),
        &format!("oci-archive:{}", oa.display()),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.digest, idx.digest);
    let r = copy_loc(
        &c,
        &format!("oci-archive:{}", oa.display()),
        &format!("{}/from-oa:3", berth.host()),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.digest, idx.digest);

    // docker-archive holds one image: --platform picks it.
    let da = tmp.path().join("arm.tar");
    let o = CopyOptions {
        platform: Some("linux/arm64".parse().unwrap()),
        ..CopyOptions::default()
    };
    let r = copy_loc(
        &c,
        &format!("{}/multi:3", dist.host()),
        &format!("docker-archive:{}", da.display()),
        &o,
    )
    .await
    .unwrap();
    assert_eq!(r.digest, arm.manifest.digest);
    let r = copy_loc(
        &c,
        &format!("docker-archive:{}", da.display()),
        &format!("{}/from-da:arm", berth.host()),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        r.digest, arm.manifest.digest,
        "the exact manifest travels inside the archive"
    );
    // Without --platform, the host's platform (amd64 here, or the only image) is chosen.
    let da2 = tmp.path().join("host.tar");
    let r = copy_loc(
        &c,
        &format!("{}/multi:3", dist.host()),
        &format!("docker-archive:{}", da2.display()),
        &CopyOptions::default(),
    )
    .await;
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(r.unwrap().digest, amd.manifest.digest);
    }
    assert!(
        leftovers(tmp.path())
            .iter()
            .all(|n| !n.starts_with(".berth-tmp")),
        "{:?}",
        leftovers(tmp.path())
    );

    // The archive's manifest.json names the image.
    let unpacked = berth_client::archive::unpack(&da).await.unwrap();
    let mj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.path().join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(mj[0]["RepoTags"][0], format!("{}/multi:3", dist.host()));
    assert_eq!(mj[0]["Layers"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_docker_archive_is_read_with_file_digests() {
    // A docker save tarball of the classic kind: <id>/layer.tar, uncompressed.
    let berth = TestBerth::start().await;
    let c = clients();
    let tmp = tempfile::tempdir().unwrap();
    let (gz, diff_id) = layer(60, 5000);
    let mut tar_bytes = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar_bytes).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let cfg_digest = berth_oci::Digest::sha256(&config);
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", cfg_digest.hex()),
        "RepoTags": ["legacy/app:7"],
        "Layers": ["abc/layer.tar"],
    }]);
    let path = tmp.path().join("legacy.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    for (name, data) in [
        (
            "manifest.json".to_string(),
            serde_json::to_vec(&manifest).unwrap(),
        ),
        (format!("{}.json", cfg_digest.hex()), config.clone()),
        ("abc/layer.tar".to_string(), tar_bytes.clone()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
    drop(b);

    let r = copy_loc(
        &c,
        &format!("docker-archive:{}", path.display()),
        &format!("{}/legacy", berth.host()),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    let m = c
        .registry(&berth.host())
        .unwrap()
        .get_manifest(
            &RepoName::parse("legacy").unwrap(),
            &Reference::parse("7").unwrap(),
        )
        .await
        .expect("tag taken from RepoTags");
    assert_eq!(m.digest, r.digest);
    let parsed = m.parse().unwrap();
    assert_eq!(parsed.config.unwrap().digest, cfg_digest);
    assert_eq!(
        parsed.layers[0].digest, diff_id,
        "an uncompressed layer's digest is its diff_id"
    );
    assert_eq!(
        parsed.layers[0].media_type,
        berth_client::archive::DOCKER_LAYER_TAR
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_copies_leave_nothing_under_the_final_name() {
    let berth = TestBerth::start().await;
    let c = clients();
    let tmp = tempfile::tempdir().unwrap();
    let img = image(70, 2, 3000, "amd64", false);
    push_image(&c.registry(&berth.host()).unwrap(), "app", &img, Some("1")).await;
    let good = tmp.path().join("good");
    copy_loc(
        &c,
        &format!("{}/app:1", berth.host()),
        &format!("oci:{}:1", good.display()),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    // Corrupt one layer in the layout: every copy out of it must fail with a digest error.
    let layer_path = berth_client::layout::blob_path(&good, &img.layers[1].0.digest);
    let mut bytes = std::fs::read(&layer_path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&layer_path, bytes).unwrap();

    let out = tempfile::tempdir().unwrap();
    for dst in [
        format!("oci:{}/layout:1", out.path().display()),
        format!("oci-archive:{}/a.tar", out.path().display()),
        format!("docker-archive:{}/d.tar", out.path().display()),
        format!("{}/copy:1", berth.host()),
    ] {
        let e = copy_loc(
            &c,
            &format!("oci:{}:1", good.display()),
            &dst,
            &CopyOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, ClientError::DigestMismatch { .. }),
            "{dst}: {e}"
        );
        assert_eq!(e.exit_code(), 5);
    }
    assert!(
        leftovers(out.path()).is_empty(),
        "{:?}",
        leftovers(out.path())
    );
    let e = berth_client::index::resolve(&c, &image_ref(&berth.host(), "copy:1"))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::NotFound(_)));
}

/// Issue 18: pulling a Helm chart into a docker-archive wrote a tarball that `podman
/// load` rejects. It is refused, naming the artifact type and suggesting `oci:`, and
/// nothing is written; the same chart goes to an OCI layout.
#[tokio::test(flavor = "multi_thread")]
async fn artifacts_are_refused_as_docker_archives() {
    let berth = TestBerth::start().await;
    let c = clients();
    let reg = c.registry(&berth.host()).unwrap();
    let repo = RepoName::parse("charts/app").unwrap();
    let config = bytes::Bytes::from_static(br#"{"name":"app","version":"0.1.0"}"#);
    let chart = bytes::Bytes::from_static(b"not really a gzip, but content all the same");
    let d = |media_type: &str, data: &bytes::Bytes| berth_oci::Descriptor {
        media_type: media_type.into(),
        digest: berth_oci::Digest::sha256(data),
        size: data.len() as u64,
        urls: vec![],
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    };
    let config_desc = d("application/vnd.cncf.helm.config.v1+json", &config);
    let chart_desc = d(
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        &chart,
    );
    reg.put_blob_bytes(&repo, &config_desc, config.clone())
        .await
        .unwrap();
    reg.put_blob_bytes(&repo, &chart_desc, chart.clone())
        .await
        .unwrap();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": berth_oci::media_types::OCI_MANIFEST,
        "config": config_desc,
        "layers": [chart_desc],
    });
    let m = berth_client::Manifest::from_bytes(
        bytes::Bytes::from(serde_json::to_vec(&body).unwrap()),
        Some(berth_oci::media_types::OCI_MANIFEST),
    )
    .unwrap();
    reg.put_manifest(&repo, &Reference::parse("0.1.0").unwrap(), &m)
        .await
        .unwrap();

    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("chart.tar");
    let e = copy_loc(
        &c,
        &format!("{}/charts/app:0.1.0", berth.host()),
        &format!("docker-archive:{}", tar.display()),
        &CopyOptions::default(),
    )
    .await
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ClientError::Unsupported(_))
            && msg.contains("application/vnd.cncf.helm.config.v1+json")
            && msg.contains("oci:"),
        "{msg}"
    );
    assert!(!tar.exists());
    assert!(
        leftovers(out.path()).is_empty(),
        "{:?}",
        leftovers(out.path())
    );
    // The library check alone (as `berth pull` runs it before moving any blob).
    assert!(berth_client::archive::check_docker_image(&m, "chart").is_err());
    copy_loc(
        &c,
        &format!("{}/charts/app:0.1.0", berth.host()),
        &format!("oci:{}:0.1.0", out.path().join("layout").display()),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
}
