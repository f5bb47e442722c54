//! Cross-checks with skopeo: what Berth writes, skopeo reads with identical digests, and
//! the other way round.

use std::process::Command;

use berth_client::{copy_image, open_destination, open_source, CopyOptions, Location};
use berth_oci::Digest;

use crate::fixtures::*;

fn skopeo(args: &[&str]) -> Vec<u8> {
    let bin = "/usr/bin/skopeo";
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} is missing: install the Debian package skopeo"
    );
    let out = Command::new(bin)
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn copy_loc(c: &berth_client::Clients, src: &str, dst: &str) -> berth_client::CopyReport {
    let s = open_source(c, &Location::parse(src).unwrap())
        .await
        .unwrap();
    let d = open_destination(c, &Location::parse(dst).unwrap(), s.as_ref()).unwrap();
    copy_image(s.as_ref(), d.as_ref(), &CopyOptions::default(), quiet())
        .await
        .unwrap()
}

fn config_digest(raw_manifest: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(raw_manifest).unwrap();
    v["config"]["digest"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_reads_what_berth_pulls() {
    let berth = TestBerth::start().await;
    let c = clients();
    let tmp = tempfile::tempdir().unwrap();
    let img = image(90, 2, 8000, "amd64", false);
    push_image(&c.registry(&berth.host()).unwrap(), "app", &img, Some("1")).await;

    let layout = tmp.path().join("layout");
    copy_loc(
        &c,
        &format!("{}/app:1", berth.host()),
        &format!("oci:{}:1", layout.display()),
    )
    .await;
    let raw = tokio::task::spawn_blocking({
        let l = layout.clone();
        move || skopeo(&["inspect", "--raw", &format!("oci:{}:1", l.display())])
    })
    .await
    .unwrap();
    assert_eq!(Digest::sha256(&raw), img.manifest.digest);

    let archive = tmp.path().join("app.tar");
    copy_loc(
        &c,
        &format!("{}/app:1", berth.host()),
        &format!("docker-archive:{}", archive.display()),
    )
    .await;
    let a = archive.display().to_string();
    let out = tmp.path().join("from-archive");
    let o = out.display().to_string();
    let raw = tokio::task::spawn_blocking(move || {
        // skopeo decompresses the layers and checks them against the config's diff_ids.
        skopeo(&[
            "copy",
            &format!("docker-archive:{a}"),
            &format!("oci:{o}:x"),
        ]);
        skopeo(&["inspect", "--raw", &format!("docker-archive:{a}")])
    })
    .await
    .unwrap();
    assert_eq!(config_digest(&raw), img.config.0.digest.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn berth_reads_what_skopeo_writes() {
    let berth = TestBerth::start().await;
    let c = clients();
    let tmp = tempfile::tempdir().unwrap();
    // An OCI image (skopeo keeps it as is in a layout) and a Docker one (for the archive).
    let oci = image(91, 2, 8000, "amd64", false);
    let docker = image(92, 2, 8000, "amd64", true);
    push_image(&c.registry(&berth.host()).unwrap(), "oci", &oci, Some("1")).await;
    push_image(
        &c.registry(&berth.host()).unwrap(),
        "docker",
        &docker,
        Some("1"),
    )
    .await;

    let layout = tmp.path().join("sk-layout");
    let archive = tmp.path().join("sk.tar");
    let (host, l, a) = (
        berth.host(),
        layout.display().to_string(),
        archive.display().to_string(),
    );
    let raw_archive = tokio::task::spawn_blocking(move || {
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{host}/oci:1"),
            &format!("oci:{l}:1"),
        ]);
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{host}/docker:1"),
            &format!("docker-archive:{a}:docker:1"),
        ]);
        skopeo(&["inspect", "--raw", &format!("docker-archive:{a}")])
    })
    .await
    .unwrap();

    // The OCI layout keeps the manifest exactly; pushing it back preserves the digest.
    let r = copy_loc(
        &c,
        &format!("oci:{}:1", layout.display()),
        &format!("{}/via-layout:1", berth.host()),
    )
    .await;
    assert_eq!(r.digest, oci.manifest.digest);

    // skopeo's docker-archive has uncompressed layers: Berth computes the same layer
    // digests from the files as skopeo does, and the config travels unchanged.
    let r = copy_loc(
        &c,
        &format!("docker-archive:{}", archive.display()),
        &format!("{}/via-archive:1", berth.host()),
    )
    .await;
    let m = c
        .registry(&berth.host())
        .unwrap()
        .get_manifest(
            &berth_oci::RepoName::parse("via-archive").unwrap(),
            &berth_oci::Reference::Digest(r.digest),
        )
        .await
        .unwrap();
    assert_eq!(config_digest(&m.bytes), docker.config.0.digest.to_string());
    let theirs: serde_json::Value = serde_json::from_slice(&raw_archive).unwrap();
    let ours = m.parse().unwrap();
    assert_eq!(ours.layers.len(), 2);
    for (i, l) in ours.layers.iter().enumerate() {
        assert_eq!(
            theirs["layers"][i]["digest"].as_str().unwrap(),
            l.digest.to_string(),
            "layer {i}"
        );
    }
}
