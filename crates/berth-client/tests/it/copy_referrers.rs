//! Copies carry their trust: the referrers of every manifest copied (signatures,
//! attestations, SBOMs, and their own referrers) and the manifests under cosign v2's
//! `sha256-<hex>.sig` tags go along, with identical digests, between Berth servers,
//! through CNCF Distribution (no referrers API: the tag schema) and through an OCI
//! layout; `referrers: false` leaves them behind.

use berth_client::image::Manifest;
use berth_client::layout::{LayoutIndex, REF_NAME};
use berth_client::{copy_image, open_destination, open_source, CopyOptions, Location, Registry};
use berth_oci::{media_types as mt, Descriptor, Digest, Reference, RepoName, Tag};
use bytes::Bytes;

use crate::fixtures::*;

const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";
const NOTE: &str = "application/vnd.example.note";

fn blob_desc(media_type: &str, data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: Digest::sha256(data),
        size: data.len() as u64,
        urls: vec![],
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    }
}

/// An artifact manifest: one layer of `payload`, the empty config, `artifact_type` and
/// `subject` when given (cosign v2 manifests have neither), an annotation to tell them
/// apart.
fn artifact(
    subject: Option<&Manifest>,
    artifact_type: Option<&str>,
    payload: &[u8],
) -> (Manifest, Vec<(Descriptor, Bytes)>) {
    let config = Bytes::from_static(b"{}");
    let config_desc = blob_desc(
        if artifact_type.is_some() {
            mt::OCI_EMPTY
        } else {
            mt::OCI_CONFIG
        },
        &config,
    );
    let layer = Bytes::copy_from_slice(payload);
    let layer_desc = blob_desc("application/octet-stream", &layer);
    let mut body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "config": config_desc,
        "layers": [layer_desc],
        "annotations": {"org.example.payload": String::from_utf8_lossy(payload)},
    });
    if let Some(t) = artifact_type {
        body["artifactType"] = t.into();
    }
    if let Some(s) = subject {
        body["subject"] = serde_json::to_value(s.descriptor()).unwrap();
    }
    let m = Manifest::from_bytes(
        Bytes::from(serde_json::to_vec_pretty(&body).unwrap()),
        Some(mt::OCI_MANIFEST),
    )
    .unwrap();
    (m, vec![(config_desc, config), (layer_desc, layer)])
}

async fn push_artifact(
    reg: &Registry,
    repo: &str,
    (m, blobs): &(Manifest, Vec<(Descriptor, Bytes)>),
    tag: Option<&Tag>,
) {
    let repo = RepoName::parse(repo).unwrap();
    for (d, b) in blobs {
        reg.put_blob_bytes(&repo, d, b.clone()).await.unwrap();
    }
    let reference = match tag {
        Some(t) => Reference::Tag(t.clone()),
        None => Reference::Digest(m.digest.clone()),
    };
    reg.put_manifest(&repo, &reference, m).await.unwrap();
}

fn legacy_sig_tag(subject: &Digest) -> Tag {
    Tag::parse(&format!("sha256-{}.sig", subject.hex())).unwrap()
}

/// What a source repository holds: a two-platform index and its trust.
struct Signed {
    index: Manifest,
    /// A signature of the index (subject field).
    sig: Manifest,
    /// A note about the signature: a referrer of a referrer.
    note: Manifest,
    /// An SBOM of the amd64 image.
    sbom: Manifest,
    /// cosign v2's signature of the index, under `sha256-<hex>.sig`.
    legacy: Manifest,
    amd: Digest,
}

async fn push_signed(reg: &Registry, repo: &str) -> Signed {
    let (index, amd, _) = push_multiarch(reg, repo, "v1", 40).await;
    let sig = artifact(Some(&index), Some(SIG), b"signature of the index");
    let note = artifact(Some(&sig.0), Some(NOTE), b"note on the signature");
    let amd_manifest = amd.manifest.clone();
    let sbom = artifact(Some(&amd_manifest), Some(SBOM), b"sbom of amd64");
    let legacy = artifact(None, None, b"cosign v2 simple signing payload");
    push_artifact(reg, repo, &sig, None).await;
    push_artifact(reg, repo, &note, None).await;
    push_artifact(reg, repo, &sbom, None).await;
    push_artifact(reg, repo, &legacy, Some(&legacy_sig_tag(&index.digest))).await;
    Signed {
        index,
        sig: sig.0,
        note: note.0,
        sbom: sbom.0,
        legacy: legacy.0,
        amd: amd_manifest.digest,
    }
}

async fn referrer_digests(reg: &Registry, repo: &str, subject: &Digest) -> Vec<Digest> {
    let mut d: Vec<Digest> = reg
        .referrers(&RepoName::parse(repo).unwrap(), subject, None)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.digest)
        .collect();
    d.sort_by_key(|d| d.to_string());
    d
}

fn sorted(mut d: Vec<Digest>) -> Vec<Digest> {
    d.sort_by_key(|d| d.to_string());
    d
}

/// Checks that `repo` on `reg` holds every piece of `s` with identical bytes: the
/// referrers found from their subjects, the cosign v2 signature under its tag.
async fn assert_carried(reg: &Registry, repo: &str, s: &Signed, legacy_listed: bool) {
    let name = RepoName::parse(repo).unwrap();
    let mut of_index = vec![s.sig.digest.clone()];
    if legacy_listed {
        of_index.push(s.legacy.digest.clone());
    }
    assert_eq!(
        referrer_digests(reg, repo, &s.index.digest).await,
        sorted(of_index)
    );
    assert_eq!(
        referrer_digests(reg, repo, &s.sig.digest).await,
        std::slice::from_ref(&s.note.digest)
    );
    assert_eq!(
        referrer_digests(reg, repo, &s.amd).await,
        std::slice::from_ref(&s.sbom.digest)
    );
    for m in [&s.sig, &s.note, &s.sbom] {
        let got = reg
            .get_manifest(&name, &Reference::Digest(m.digest.clone()))
            .await
            .unwrap();
        assert_eq!(got.bytes, m.bytes);
    }
    let legacy = reg
        .get_manifest(&name, &Reference::Tag(legacy_sig_tag(&s.index.digest)))
        .await
        .unwrap();
    assert_eq!(legacy.bytes, s.legacy.bytes);
}

async fn copy(c: &berth_client::Clients, src: &str, dst: &str, o: &CopyOptions) -> usize {
    let src = Location::parse(src).unwrap();
    let dst = Location::parse(dst).unwrap();
    let s = open_source(c, &src).await.unwrap();
    let d = open_destination(c, &dst, s.as_ref()).unwrap();
    let report = copy_image(s.as_ref(), d.as_ref(), o, quiet())
        .await
        .unwrap();
    report.referrers
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_between_berth_servers_carries_referrers_recursively() {
    let a = TestBerth::start().await;
    let b = TestBerth::start().await;
    let c = clients();
    let (ra, rb) = (
        c.registry(&a.host()).unwrap(),
        c.registry(&b.host()).unwrap(),
    );
    let s = push_signed(&ra, "app").await;
    // The source lists the cosign v2 signature among the index's referrers.
    assert_carried(&ra, "app", &s, true).await;

    let n = copy(
        &c,
        &format!("{}/app:v1", a.host()),
        &format!("{}/mirror/app:v1", b.host()),
        &CopyOptions::default(),
    )
    .await;
    assert_eq!(n, 4);
    assert_carried(&rb, "mirror/app", &s, true).await;
    // The cosign v2 tag is hidden from the default list, like on the source.
    let mirror = RepoName::parse("mirror/app").unwrap();
    assert_eq!(rb.tags(&mirror).await.unwrap(), ["v1"]);
    assert!(rb
        .tags_all(&mirror)
        .await
        .unwrap()
        .contains(&legacy_sig_tag(&s.index.digest).to_string()));

    // Copying again finds everything in place and writes the same.
    let n = copy(
        &c,
        &format!("{}/app:v1", a.host()),
        &format!("{}/mirror/app:v1", b.host()),
        &CopyOptions::default(),
    )
    .await;
    assert_eq!(n, 4);

    // Without referrers, only the image moves.
    let o = CopyOptions {
        referrers: false,
        ..CopyOptions::default()
    };
    let n = copy(
        &c,
        &format!("{}/app:v1", a.host()),
        &format!("{}/bare/app:v1", b.host()),
        &o,
    )
    .await;
    assert_eq!(n, 0);
    assert!(referrer_digests(&rb, "bare/app", &s.index.digest)
        .await
        .is_empty());
    assert!(referrer_digests(&rb, "bare/app", &s.amd).await.is_empty());
}

/// Distribution has no referrers API: the copy keeps its tag schema's index and the
/// cosign v2 tag, and a copy back reads both.
#[tokio::test(flavor = "multi_thread")]
async fn referrers_survive_a_round_trip_through_distribution() {
    let berth = TestBerth::start().await;
    let dist = TestDistribution::start();
    let c = clients();
    let (rb, rd) = (
        c.registry(&berth.host()).unwrap(),
        c.registry(&dist.host()).unwrap(),
    );
    let s = push_signed(&rb, "app").await;

    let n = copy(
        &c,
        &format!("{}/app:v1", berth.host()),
        &format!("{}/mirror/app:v1", dist.host()),
        &CopyOptions::default(),
    )
    .await;
    assert_eq!(n, 4);
    // Distribution lists referrers only through the tag schema, which knows nothing of
    // the cosign v2 tag; the tag itself is there.
    assert_carried(&rd, "mirror/app", &s, false).await;
    let tags = rd
        .tags(&RepoName::parse("mirror/app").unwrap())
        .await
        .unwrap();
    assert!(tags.contains(&legacy_sig_tag(&s.index.digest).to_string()));
    assert!(tags.contains(&format!("sha256-{}", s.index.digest.hex())));

    let n = copy(
        &c,
        &format!("{}/mirror/app:v1", dist.host()),
        &format!("{}/back/app:v1", berth.host()),
        &CopyOptions::default(),
    )
    .await;
    assert_eq!(n, 4);
    assert_carried(&rb, "back/app", &s, true).await;
}

/// A pull into an OCI layout keeps the referrers as entries of `index.json`; a push of
/// the layout carries them on, and the layout still names one image.
#[tokio::test(flavor = "multi_thread")]
async fn referrers_go_through_an_oci_layout() {
    let berth = TestBerth::start().await;
    let c = clients();
    let rb = c.registry(&berth.host()).unwrap();
    let s = push_signed(&rb, "app").await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");

    let n = copy(
        &c,
        &format!("{}/app:v1", berth.host()),
        &format!("oci:{}", dir.display()),
        &CopyOptions::default(),
    )
    .await;
    assert_eq!(n, 4);
    let index = LayoutIndex::read(&dir).unwrap();
    let listed: Vec<Digest> = index.manifests.iter().map(|d| d.digest.clone()).collect();
    for m in [&s.index, &s.sig, &s.note, &s.sbom, &s.legacy] {
        assert!(listed.contains(&m.digest), "{} in index.json", m.digest);
    }
    let sbom = index
        .manifests
        .iter()
        .find(|d| d.digest == s.sbom.digest)
        .unwrap();
    assert_eq!(sbom.artifact_type.as_deref(), Some(SBOM));
    assert_eq!(sbom.annotations["org.example.payload"], "sbom of amd64");
    let legacy = index
        .manifests
        .iter()
        .find(|d| d.digest == s.legacy.digest)
        .unwrap();
    assert_eq!(
        legacy.annotations[REF_NAME],
        legacy_sig_tag(&s.index.digest).as_str()
    );
    // Without a tag, the layout's one image is still found among its referrers.
    assert_eq!(index.find(None, "layout").unwrap().digest, s.index.digest);
    let untagged = tmp.path().join("untagged");
    copy(
        &c,
        &format!("{}/app@{}", berth.host(), s.amd),
        &format!("oci:{}", untagged.display()),
        &CopyOptions::default(),
    )
    .await;
    let u = LayoutIndex::read(&untagged).unwrap();
    assert_eq!(u.manifests.len(), 2);
    assert_eq!(u.find(None, "layout").unwrap().digest, s.amd);

    // And from the layout to another repository, everything arrives.
    let n = copy(
        &c,
        &format!("oci:{}:v1", dir.display()),
        &format!("{}/from-layout/app:v1", berth.host()),
        &CopyOptions::default(),
    )
    .await;
    assert_eq!(n, 4);
    assert_carried(&rb, "from-layout/app", &s, true).await;
}

/// An oci-archive is a tarred layout: signatures, attestations and SBOMs go into the
/// tarball with the image and come out of it onto a registry again (the air-gapped path).
#[tokio::test(flavor = "multi_thread")]
async fn referrers_go_through_an_oci_archive() {
    let berth = TestBerth::start().await;
    let c = clients();
    let rb = c.registry(&berth.host()).unwrap();
    let s = push_signed(&rb, "app").await;
    let tmp = tempfile::tempdir().unwrap();
    let tarball = tmp.path().join("app.tar");

    let n = copy(
        &c,
        &format!("{}/app:v1", berth.host()),
        &format!("oci-archive:{}", tarball.display()),
        &CopyOptions::default(),
    )
    .await;
    assert_eq!(n, 4);
    let unpacked = berth_client::archive::unpack(&tarball).await.unwrap();
    let index = LayoutIndex::read(unpacked.path()).unwrap();
    let listed: Vec<Digest> = index.manifests.iter().map(|d| d.digest.clone()).collect();
    for m in [&s.index, &s.sig, &s.note, &s.sbom, &s.legacy] {
        assert!(
            listed.contains(&m.digest),
            "{} in the tarball's index.json",
            m.digest
        );
    }

    let n = copy(
        &c,
        &format!("oci-archive:{}", tarball.display()),
        &format!("{}/from-archive/app:v1", berth.host()),
        &CopyOptions::default(),
    )
    .await;
    assert_eq!(n, 4);
    assert_carried(&rb, "from-archive/app", &s, true).await;
}
