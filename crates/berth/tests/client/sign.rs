//! `berth sign`, `berth attest` and `berth publish --sign-key` as a user runs them: keys
//! made by `berth key generate`, the password from `COSIGN_PASSWORD`, and every stored
//! signature fetched back and verified with `berth_trust`.

use std::collections::BTreeMap;
use std::path::Path;

use berth_client::Registry as Client;
use berth_oci::{Descriptor, Digest, Reference, RepoName};
use berth_trust::bundle::BUNDLE_MEDIA_TYPE;
use berth_trust::oci;
use berth_trust::verify::{verify_bundle_referrer, verify_legacy_layer};
use berth_trust::{PublicKey, Requirements, Verdict};
use futures_util::StreamExt as _;

use super::*;

const PASSWORD: &str = "correct horse";
const SPDX: &str = "https://spdx.dev/Document";

/// Runs berth with `COSIGN_PASSWORD` set to `password`.
pub(super) fn berth_pw(args: &[&str], cfg: &Path, password: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("DOCKER_CONFIG", cfg)
        .env("COSIGN_PASSWORD", password)
        .env_remove("BERTH_DOCKER_CONFIG")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_REF")
        .env_remove("GITLAB_CI")
        .env_remove("CI_COMMIT_SHA")
        .output()
        .expect("run berth")
}

pub(super) fn ok_pw(args: &[&str], cfg: &Path) -> serde_json::Value {
    let out = berth_pw(args, cfg, PASSWORD);
    assert!(
        out.status.success(),
        "berth {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A key pair in `dir` made by `berth key generate`; returns the key's path and the
/// public key.
pub(super) fn key_pair(dir: &Path) -> (String, PublicKey) {
    let key = dir.join("cosign.key");
    let public = dir.join("cosign.pub");
    let out = berth_pw(
        &[
            "key",
            "generate",
            "--output-key",
            key.to_str().unwrap(),
            "--output-pub",
            public.to_str().unwrap(),
        ],
        dir,
        PASSWORD,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = PublicKey::from_pem(&std::fs::read(public).unwrap()).unwrap();
    (key.to_str().unwrap().to_owned(), public)
}

pub(super) fn client(host: &str) -> Client {
    Clients::new(ClientOptions {
        docker_config: Some("/nonexistent/config.json".into()),
        ..ClientOptions::default()
    })
    .unwrap()
    .registry(host)
    .unwrap()
}

pub(super) async fn blob(reg: &Client, repo: &RepoName, layer: &oci::Descriptor) -> Vec<u8> {
    let d = Descriptor {
        media_type: layer.media_type.clone(),
        digest: layer.digest.parse().unwrap(),
        size: layer.size,
        urls: vec![],
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    };
    let mut s = reg.get_blob(repo, &d).await.unwrap();
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

/// Every bundle referrer of `subject` that verifies against `req`.
pub(super) async fn verified_bundles(
    reg: &Client,
    repo: &RepoName,
    subject: &Digest,
    req: &Requirements<'_>,
) -> Vec<(Digest, Verdict)> {
    let mut out = Vec::new();
    for r in reg
        .referrers(repo, subject, Some(BUNDLE_MEDIA_TYPE))
        .await
        .unwrap()
    {
        let m = reg
            .get_manifest(repo, &Reference::Digest(r.digest.clone()))
            .await
            .unwrap();
        let layer = oci::Manifest::from_json(&m.bytes).unwrap().layers[0].clone();
        let bundle = blob(reg, repo, &layer).await;
        if let Ok(v) = verify_bundle_referrer(&m.bytes, &bundle, req) {
            out.push((r.digest, v));
        }
    }
    out
}

#[test]
fn sign_and_attest_have_examples_and_say_keyless_is_unsupported() {
    let cfg = tempfile::tempdir().unwrap();
    for cmd in ["sign", "attest"] {
        let help = ok(&[cmd, "--help"], cfg.path());
        assert!(help.contains("Examples:"), "{cmd}: {help}");
        assert!(help.contains("Keyless"), "{cmd}: {help}");
        assert!(help.contains("Sigstore services"), "{cmd}: {help}");
        assert!(help.contains("--legacy"), "{cmd}: {help}");
    }
    let help = ok(&["publish", "--help"], cfg.path());
    assert!(help.contains("--sign-key"), "{help}");
    assert!(help.contains("--attest"), "{help}");
}

#[test]
fn sign_and_attest_from_the_command_line() {
    let reg = Registry::start();
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let h = &reg.host;
    let digest = reg.push_image("app", "1", "amd64");
    let (key, public) = key_pair(c);
    let repo = RepoName::parse("app").unwrap();
    let api = client(h);
    let none = BTreeMap::new();

    // A wrong password fails before anything is pushed.
    let out = berth_pw(&["sign", &format!("{h}/app:1"), "--key", &key], c, "wrong");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nothing = reg
        .rt
        .block_on(async { api.referrers(&repo, &digest, None).await.unwrap() });
    assert!(nothing.is_empty());

    // The default: a bundle referrer, with the -a annotations signed.
    let report = ok_pw(
        &[
            "sign",
            &format!("{h}/app:1"),
            "--key",
            &key,
            "-a",
            "build=42",
            "--json",
        ],
        c,
    );
    assert_eq!(report["key_fingerprint"], public.fingerprint());
    assert_eq!(report["signed"][0]["subject"], digest.to_string());
    assert_eq!(report["signed"][0]["format"], "bundle");
    let annotations = BTreeMap::from([("build".to_owned(), "42".to_owned())]);
    let verified = reg.rt.block_on(verified_bundles(
        &api,
        &repo,
        &digest,
        &Requirements::signature(&public, &digest, &annotations),
    ));
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].0.to_string(), report["signed"][0]["artifact"]);

    // --legacy: the .sig tag, verified layer by layer.
    let report = ok_pw(
        &[
            "sign",
            &format!("{h}/app@{digest}"),
            "--key",
            &key,
            "--legacy",
            "--json",
        ],
        c,
    );
    let tag = format!("sha256-{}.sig", digest.hex());
    assert_eq!(report["signed"][0]["tag"], tag);
    reg.rt.block_on(async {
        let m = api
            .get_manifest(&repo, &Reference::parse(&tag).unwrap())
            .await
            .unwrap();
        let layer = oci::Manifest::from_json(&m.bytes).unwrap().layers[0].clone();
        let bytes = blob(&api, &repo, &layer).await;
        verify_legacy_layer(
            &layer,
            &bytes,
            &Requirements::signature(&public, &digest, &none),
        )
        .unwrap();
    });

    // attest: an SPDX predicate, as a bundle and as a legacy .att.
    let sbom = c.join("sbom.spdx.json");
    std::fs::write(&sbom, r#"{"spdxVersion":"SPDX-2.3","name":"app"}"#).unwrap();
    let report = ok_pw(
        &[
            "attest",
            &format!("{h}/app:1"),
            "--key",
            &key,
            "--predicate",
            sbom.to_str().unwrap(),
            "--type",
            "spdxjson",
            "--json",
        ],
        c,
    );
    assert_eq!(report["signed"][0]["predicate_type"], SPDX);
    let attested = reg.rt.block_on(verified_bundles(
        &api,
        &repo,
        &digest,
        &Requirements::attestation(&public, &digest, Some(SPDX), &none),
    ));
    assert_eq!(attested.len(), 1);
    assert_eq!(attested[0].1.predicate_type, SPDX);
    let report = ok_pw(
        &[
            "attest",
            &format!("{h}/app:1"),
            "--key",
            &key,
            "--predicate",
            sbom.to_str().unwrap(),
            "--type",
            "spdxjson",
            "--legacy",
            "--json",
        ],
        c,
    );
    assert_eq!(
        report["signed"][0]["tag"],
        format!("sha256-{}.att", digest.hex())
    );

    // A predicate type that is neither a name nor a URI is a usage error (exit 2).
    let out = berth_pw(
        &[
            "attest",
            &format!("{h}/app:1"),
            "--key",
            &key,
            "--predicate",
            sbom.to_str().unwrap(),
            "--type",
            "nonsense",
        ],
        c,
        PASSWORD,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn publish_signs_every_manifest_before_any_tag() {
    let reg = Registry::start();
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let h = &reg.host;
    reg.push_image("src", "amd64", "amd64");
    reg.push_image("src", "arm64", "arm64");
    let (key, public) = key_pair(c);
    let sbom = c.join("sbom.spdx.json");
    std::fs::write(&sbom, r#"{"spdxVersion":"SPDX-2.3","name":"rel"}"#).unwrap();

    let report = ok_pw(
        &[
            "publish",
            &format!("{h}/src:amd64"),
            &format!("{h}/src:arm64"),
            "--repo",
            &format!("{h}/rel"),
            "--version",
            "1.2.3",
            "--sha",
            "860c1904a1ce19322e91ac35af1ab07466440c37",
            "--created",
            "2024-01-01T00:00:00Z",
            "--sign-key",
            &key,
            "--attest",
            sbom.to_str().unwrap(),
            "--json",
        ],
        c,
    );
    let top: Digest = report["digest"].as_str().unwrap().parse().unwrap();
    let repo = RepoName::parse("rel").unwrap();
    let api = client(h);
    let none = BTreeMap::new();

    // Every tag names the index, and the index and each platform carry a valid signature
    // and the SBOM attestation.
    let tags: Vec<String> = report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert!(tags.contains(&"1.2.3".to_owned()) && tags.contains(&"latest".to_owned()));
    let subjects = reg.rt.block_on(async {
        for t in &tags {
            let d = api
                .head_manifest(&repo, &Reference::parse(t).unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(d.digest, top, "tag {t}");
        }
        let index = api
            .get_manifest(&repo, &Reference::Digest(top.clone()))
            .await
            .unwrap();
        let mut subjects = vec![top.clone()];
        subjects.extend(
            index
                .parse()
                .unwrap()
                .manifests
                .into_iter()
                .map(|d| d.digest),
        );
        subjects
    });
    assert_eq!(subjects.len(), 3);
    let mut signature_artifacts = Vec::new();
    for s in &subjects {
        let sigs = reg.rt.block_on(verified_bundles(
            &api,
            &repo,
            s,
            &Requirements::signature(&public, s, &none),
        ));
        assert_eq!(sigs.len(), 1, "signatures of {s}");
        let atts = reg.rt.block_on(verified_bundles(
            &api,
            &repo,
            s,
            &Requirements::attestation(&public, s, Some(SPDX), &none),
        ));
        assert_eq!(atts.len(), 1, "SBOM attestations of {s}");
        signature_artifacts.push(sigs[0].0.clone());
    }
    assert_eq!(report["signed"].as_array().unwrap().len(), 6);

    // The audit log shows the order of the pushes: every signature was stored before
    // the first push that carried a tag.
    let log = reg.rt.block_on(async {
        berth_server::accounts::Admin::open_dir(&reg._dir.path().join("data"), "test")
            .unwrap()
            .audit_log(0, 100_000)
            .await
            .unwrap()
    });
    let pushes: Vec<&str> = log
        .iter()
        .filter(|e| e.action == "push" && e.target == "rel")
        .map(|e| e.detail.as_str())
        .collect();
    let first_tagged = pushes
        .iter()
        .position(|d| !d.ends_with("tags="))
        .expect("a tagged push");
    assert!(pushes[first_tagged].starts_with(&top.to_string()));
    for a in &signature_artifacts {
        let at = pushes
            .iter()
            .position(|d| d.starts_with(&a.to_string()))
            .unwrap_or_else(|| panic!("no push of {a} in {pushes:?}"));
        assert!(
            at < first_tagged,
            "signature {a} pushed after a tag: {pushes:?}"
        );
    }
}
