//! `berth sbom` and `berth publish --sbom` as a user runs them, on an image whose real
//! gzip layers hold a dpkg database, npm packages and a whiteout: the document lists
//! what the stacked layers hold, `--attach` stores it as a referrer of the image (and
//! with `--key` as a verified attestation), and `publish --sbom` attaches one per
//! platform before tagging.

use std::collections::BTreeMap;
use std::io::Write as _;

use berth_oci::{Descriptor, Digest, Reference, RepoName};
use berth_trust::Requirements;

use super::sign::{client, key_pair, ok_pw, verified_bundles};
use super::*;

const STATUS: &str = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u7\nArchitecture: amd64\n\nPackage: openssl\nStatus: install ok installed\nVersion: 3.0.11-1~deb12u2\nArchitecture: amd64\n";
const OS: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";

fn gz_layer(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, text) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, text.as_bytes()).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

/// Pushes a two-layer linux/`arch` image under `repo:tag`: a Debian base with two npm
/// packages, then a layer deleting one of them.
fn push_app(reg: &Registry, repo: &str, tag: &str, arch: &str) -> Digest {
    let api = client(&reg.host);
    let repo = RepoName::parse(repo).unwrap();
    let layers = [
        gz_layer(&[
            ("etc/os-release", OS),
            ("var/lib/dpkg/status", STATUS),
            (
                "app/node_modules/left-pad/package.json",
                r#"{"name":"left-pad","version":"1.3.0","license":"WTFPL"}"#,
            ),
            (
                "app/node_modules/@scope/kept/package.json",
                r#"{"name":"@scope/kept","version":"2.0.0","license":"MIT"}"#,
            ),
        ]),
        gz_layer(&[("app/node_modules/.wh.left-pad", "")]),
    ];
    let d = |t: &str, b: &[u8]| Descriptor {
        media_type: t.into(),
        digest: Digest::sha256(b),
        size: b.len() as u64,
        urls: vec![],
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let cd = d(mt::OCI_CONFIG, &config);
    let lds: Vec<Descriptor> = layers.iter().map(|l| d(mt::OCI_LAYER_GZIP, l)).collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST, "config": cd, "layers": lds,
    }))
    .unwrap();
    let m = Manifest::from_bytes(manifest.into(), Some(mt::OCI_MANIFEST)).unwrap();
    reg.rt.block_on(async {
        api.put_blob_bytes(&repo, &cd, config.into()).await.unwrap();
        for (desc, bytes) in lds.iter().zip(layers) {
            api.put_blob_bytes(&repo, desc, bytes.into()).await.unwrap();
        }
        api.put_manifest(&repo, &Reference::parse(tag).unwrap(), &m)
            .await
            .unwrap();
    });
    m.digest
}

fn purls(doc: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

#[test]
fn sbom_lists_what_the_stacked_layers_hold() {
    let reg = Registry::start();
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let h = &reg.host;
    let digest = push_app(&reg, "app", "1", "amd64");

    let doc: serde_json::Value = serde_json::from_str(&ok(
        &["sbom", &format!("{h}/app:1"), "--format", "cyclonedx-json"],
        c,
    ))
    .unwrap();
    assert_eq!(doc["specVersion"], "1.5");
    assert_eq!(doc["metadata"]["component"]["version"], digest.to_string());
    assert_eq!(
        purls(&doc),
        [
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u7?arch=amd64&distro=debian-12",
            "pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12",
            "pkg:npm/%40scope/kept@2.0.0",
        ]
    );
    let kept = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "kept")
        .unwrap();
    let first_layer = kept["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "berth:layer")
        .unwrap();
    assert!(first_layer["value"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    // --output writes SPDX to a file; stdout stays empty.
    let out = c.join("app.spdx.json");
    let printed = ok(
        &[
            "sbom",
            "-q",
            &format!("{h}/app:1"),
            "-o",
            out.to_str().unwrap(),
        ],
        c,
    );
    assert!(printed.is_empty());
    let spdx: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    assert_eq!(spdx["packages"].as_array().unwrap().len(), 5); // image, OS, 3 packages

    // A usage error for an unknown format; a missing image is "not found".
    assert_eq!(
        berth(&["sbom", &format!("{h}/app:1"), "--format", "xml"], c)
            .status
            .code(),
        Some(2)
    );
    assert!(!berth(&["sbom", &format!("{h}/app:nope")], c)
        .status
        .success());
}

#[test]
fn sbom_attach_stores_a_referrer_and_a_signed_attestation() {
    let reg = Registry::start();
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let h = &reg.host;
    let digest = push_app(&reg, "app", "1", "amd64");
    let (key, public) = key_pair(c);
    let out = super::sign::berth_pw(
        &[
            "sbom",
            &format!("{h}/app:1"),
            "--attach",
            "--key",
            &key,
            "-o",
            "/dev/null",
        ],
        c,
        "correct horse",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let api = client(h);
    let repo = RepoName::parse("app").unwrap();
    let referrers = reg
        .rt
        .block_on(api.referrers(&repo, &digest, Some("application/spdx+json")))
        .unwrap();
    assert_eq!(referrers.len(), 1);
    let m = reg
        .rt
        .block_on(api.get_manifest(&repo, &Reference::Digest(referrers[0].digest.clone())))
        .unwrap();
    let layer = berth_trust::oci::Manifest::from_json(&m.bytes)
        .unwrap()
        .layers[0]
        .clone();
    assert_eq!(layer.media_type, "application/spdx+json");
    let doc: serde_json::Value =
        serde_json::from_slice(&reg.rt.block_on(super::sign::blob(&api, &repo, &layer))).unwrap();
    assert_eq!(doc["packages"][0]["versionInfo"], digest.to_string());

    let none = BTreeMap::new();
    let attested = reg.rt.block_on(verified_bundles(
        &api,
        &repo,
        &digest,
        &Requirements::attestation(&public, &digest, Some("https://spdx.dev/Document"), &none),
    ));
    assert_eq!(attested.len(), 1);

    // --attach needs a registry image; --key needs --attach.
    assert_eq!(
        berth(&["sbom", "oci:/nonexistent:1", "--attach"], c)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        berth(&["sbom", &format!("{h}/app:1"), "--key", &key], c)
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn publish_sbom_attaches_one_per_platform() {
    let reg = Registry::start();
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let h = &reg.host;
    let amd = push_app(&reg, "src", "amd64", "amd64");
    let arm = push_app(&reg, "src", "arm64", "arm64");
    let report = ok_pw(
        &[
            "publish",
            &format!("{h}/src:amd64"),
            &format!("{h}/src:arm64"),
            "--repo",
            &format!("{h}/rel"),
            "--version",
            "1.0.0",
            "--sbom",
            "cyclonedx-json",
            "--json",
        ],
        c,
    );
    let sboms = report["sboms"].as_array().unwrap();
    let mut subjects: Vec<&str> = sboms
        .iter()
        .map(|s| s["subject"].as_str().unwrap())
        .collect();
    subjects.sort();
    let mut expected = [amd.to_string(), arm.to_string()];
    expected.sort();
    assert_eq!(subjects, expected);
    assert!(sboms.iter().all(|s| s["packages"] == 3));
    let api = client(h);
    let repo = RepoName::parse("rel").unwrap();
    for d in [&amd, &arm] {
        let r = reg
            .rt
            .block_on(api.referrers(&repo, d, Some("application/vnd.cyclonedx+json")))
            .unwrap();
        assert_eq!(r.len(), 1, "{d}");
    }
}
