//! Interoperability with a real client: skopeo copies a multi-layer, multi-platform image
//! from an OCI layout into Berth and back out, with identical digests.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::process::{bytes, digest, ServerProcess};

fn write_blob(layout: &Path, content: &[u8]) -> (String, usize) {
    let d = digest(content);
    let path = layout.join("blobs/sha256").join(d.hex());
    std::fs::write(path, content).unwrap();
    (d.to_string(), content.len())
}

/// Writes an OCI layout holding a two-platform index (3 layers per platform) tagged `v1`.
fn make_layout(layout: &Path) -> String {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut children = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let layers: Vec<Value> = (0..3)
            .map(|k| {
                let (d, n) = write_blob(layout, &bytes((i * 10 + k) as u64 + 1, 150_000 + k * 50_000));
                json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d,"size":n})
            })
            .collect();
        let config = json!({"architecture":arch,"os":"linux","config":{"Entrypoint":["/app"]},
            "rootfs":{"type":"layers","diff_ids":[]}});
        let (cd, cn) = write_blob(layout, config.to_string().as_bytes());
        let manifest = json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":cn},
            "layers":layers});
        let (md, mn) = write_blob(
            layout,
            serde_json::to_vec_pretty(&manifest).unwrap().as_slice(),
        );
        children.push(
            json!({"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":md,"size":mn,
            "platform":{"architecture":arch,"os":"linux"}}),
        );
    }
    let index = json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":children});
    let (id, iz) = write_blob(layout, serde_json::to_vec(&index).unwrap().as_slice());
    let top = json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json",
        "digest":id,"size":iz,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]});
    std::fs::write(layout.join("index.json"), top.to_string()).unwrap();
    id
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo must be installed (scripts/test-all installs it)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sorted_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn skopeo_copies_a_multi_platform_image_in_and_out() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let index_digest = make_layout(&src);
    let server = ServerProcess::start(&tmp.path().join("data"), &[]);
    let reg = &server.addr;

    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{reg}/interop/app:v1"),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reg}/interop/app:v1"),
    ]);
    assert_eq!(
        digest(raw.as_bytes()).to_string(),
        index_digest,
        "index stored byte for byte"
    );
    let tags = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{reg}/interop/app"),
    ]);
    let tags: Value = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags["Tags"], json!(["v1"]));

    // Registry to registry within Berth (blobs can be mounted), then back out to a layout.
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{reg}/interop/app:v1"),
        &format!("docker://{reg}/interop/copy:v1"),
    ]);
    let out = tmp.path().join("out");
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{reg}/interop/copy:v1"),
        &format!("oci:{}:v1", out.display()),
    ]);
    let idx: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], index_digest.as_str());
    assert_eq!(
        sorted_files(&src),
        sorted_files(&out),
        "every blob identical after the round trip"
    );

    // A single platform pulled by an arm64 client.
    let arm = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        &format!("docker://{reg}/interop/app:v1"),
    ]);
    let arm: Value = serde_json::from_str(&arm).unwrap();
    assert_eq!(arm["Architecture"], "arm64");
    assert_eq!(arm["Layers"].as_array().unwrap().len(), 3);
}

/// Downloads counted from real clients: skopeo pulling two platforms, the berth client,
/// by version, platform and client family; a restart keeps the flushed counts.
#[test]
fn downloads_of_real_clients_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_layout(&src);
    let data = tmp.path().join("data");
    let mut server = ServerProcess::start(&data, &[]);
    let reg = server.addr.clone();
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{reg}/stats/app:1.4.0"),
    ]);
    for (arch, n) in [("arm64", 3), ("amd64", 2)] {
        for _ in 0..n {
            skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--override-arch",
                arch,
                &format!("docker://{reg}/stats/app:1.4.0"),
            ]);
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "inspect",
            "--platform",
            "linux/amd64",
            &format!("{reg}/stats/app:1.4.0"),
        ])
        .env("DOCKER_CONFIG", tmp.path().join("docker"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stats = |by: &str| -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["stats", &format!("{reg}/stats/app"), "--by", by, "--json"])
            .env("DOCKER_CONFIG", tmp.path().join("docker"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let count = |v: &Value, key: &str| -> u64 {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"] == key)
            .map(|g| g["downloads"].as_u64().unwrap())
            .unwrap_or(0)
    };
    let by_platform = stats("platform");
    assert_eq!(count(&by_platform, "linux/arm64"), 3, "{by_platform}");
    assert_eq!(count(&by_platform, "linux/amd64"), 3, "{by_platform}");
    let by_client = stats("client");
    assert_eq!(count(&by_client, "podman"), 5, "{by_client}");
    assert_eq!(count(&by_client, "berth"), 1, "{by_client}");
    let by_version = stats("version");
    assert_eq!(
        count(&by_version, "1.4.0"),
        6,
        "version from the release tag: {by_version}"
    );

    // SIGTERM flushes; a new process reads the same numbers.
    assert!(server.terminate().success());
    let server = ServerProcess::start(&data, &[]);
    assert!(!server.addr.is_empty());
    let reg2 = server.addr.clone();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "stats",
            &format!("{reg2}/stats/app"),
            "--by",
            "platform",
            "--json",
        ])
        .env("DOCKER_CONFIG", tmp.path().join("docker"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"], 6, "{v}");
}

/// Writes an OCI layout holding release `version` as a two-platform index, the way release
/// tooling annotates it (the index and each child carry `org.opencontainers.image.version`),
/// tagged `version`.
fn release_layout(layout: &Path, version: &str, seed: u64) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let ann = json!({"org.opencontainers.image.version": version});
    let mut children = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let (ld, ln) = write_blob(layout, &bytes(seed * 100 + i as u64, 20_000));
        let config =
            json!({"architecture":arch,"os":"linux","rootfs":{"type":"layers","diff_ids":[]}});
        let (cd, cn) = write_blob(layout, config.to_string().as_bytes());
        let manifest = json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":cn},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":ld,"size":ln}],
            "annotations": ann});
        let (md, mn) = write_blob(layout, serde_json::to_vec(&manifest).unwrap().as_slice());
        children.push(
            json!({"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":md,
            "size":mn,"platform":{"architecture":arch,"os":"linux"}}),
        );
    }
    let index = json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
        "manifests":children,"annotations":ann});
    let (id, iz) = write_blob(layout, serde_json::to_vec(&index).unwrap().as_slice());
    let top = json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json",
        "digest":id,"size":iz,"annotations":{"org.opencontainers.image.ref.name":version}}]});
    std::fs::write(layout.join("index.json"), top.to_string()).unwrap();
}

/// The policy holes skopeo opened: copying an older release onto `latest` made skopeo
/// retry with a converted Docker manifest list (new digest, no annotations), which was
/// accepted as "version unknown". Now the list keeps the version its children agree on,
/// every attempt is refused, skopeo fails, and `latest` still serves the newer release.
#[test]
fn skopeo_cannot_roll_a_floating_tag_back_by_converting_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&tmp.path().join("data"), &[]);
    let reg = &server.addr;
    for (version, seed) in [("1.0.0", 1), ("1.0.1", 2)] {
        let layout = tmp.path().join(version);
        release_layout(&layout, version, seed);
        for tag in [version, "latest"] {
            skopeo(&[
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
                &format!("oci:{}:{version}", layout.display()),
                &format!("docker://{reg}/acme/roll:{tag}"),
            ]);
        }
    }
    let digest_of = |tag: &str| {
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reg}/acme/roll:{tag}"),
        ])
    };
    let newest = digest_of("latest");
    assert_eq!(newest, digest_of("1.0.1"));

    // The whole release, with skopeo's own format conversions on refusal.
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{reg}/acme/roll:1.0.0"),
            &format!("docker://{reg}/acme/roll:latest"),
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "skopeo rolled latest back: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // One platform image of the old release, converted to Docker schema 2.
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--override-arch",
            "amd64",
            "--format",
            "v2s2",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{reg}/acme/roll:1.0.0"),
            &format!("docker://{reg}/acme/roll:latest"),
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a converted single image replaced latest: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(digest_of("latest"), newest, "latest still serves 1.0.1");
}

/// Runs buildah on its own throwaway storage (vfs: no kernel overlay needed) and returns
/// its output; `ok` says whether it must succeed.
fn buildah(store: &Path, args: &[&str], ok: bool) -> std::process::Output {
    let out = Command::new("buildah")
        .arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("run"))
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .expect("buildah must be installed (scripts/test-all installs it)");
    if ok {
        assert!(
            out.status.success(),
            "buildah {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The other hole: `buildah push` of a single-platform image whose version is only in its
/// config (`LABEL org.opencontainers.image.version=0.9.0`, the usual Dockerfile way)
/// replaced a multi-arch `latest` holding 1.0.1. Now the label is the image's version:
/// an older one is refused in OCI and in Docker format, an image with no version at
/// all is refused too (the floating tag's target has a known version), and a newer
/// one moves `latest`.
#[test]
fn buildah_cannot_roll_a_floating_tag_back_with_a_config_label() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&tmp.path().join("data"), &[]);
    let reg = &server.addr;
    let layout = tmp.path().join("1.0.1");
    release_layout(&layout, "1.0.1", 7);
    for tag in ["1.0.1", "latest"] {
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:1.0.1", layout.display()),
            &format!("docker://{reg}/acme/roll:{tag}"),
        ]);
    }
    let latest = || {
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reg}/acme/roll:latest"),
        ])
    };
    let newest = latest();
    let store = tmp.path().join("buildah");
    let image = |name: &str, label: Option<&str>| {
        let ctr = buildah(&store, &["from", "scratch"], true);
        let ctr = String::from_utf8(ctr.stdout).unwrap().trim().to_owned();
        if let Some(v) = label {
            let l = format!("org.opencontainers.image.version={v}");
            buildah(&store, &["config", "--label", &l, &ctr], true);
        }
        buildah(&store, &["commit", "--quiet", &ctr, name], true);
    };
    image("old", Some("0.9.0"));
    image("unversioned", None);
    image("new", Some("1.1.0"));
    let push = |name: &str, format: &str| {
        buildah(
            &store,
            &[
                "push",
                "--tls-verify=false",
                "--format",
                format,
                name,
                &format!("docker://{reg}/acme/roll:latest"),
            ],
            false,
        )
    };
    for format in ["oci", "docker"] {
        let out = push("old", format);
        assert!(
            !out.status.success(),
            "buildah pushed 0.9.0 over latest ({format})"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("1.0.1") || err.contains("denied"), "{err}");
        assert_eq!(latest(), newest, "latest still serves 1.0.1 ({format})");
        let out = push("unversioned", format);
        assert!(
            !out.status.success(),
            "an image without a version replaced latest ({format})"
        );
        assert_eq!(latest(), newest);
    }
    let out = push("new", "oci");
    assert!(
        out.status.success(),
        "1.1.0 must move latest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(latest(), newest);
}

/// Runs the berth client; returns stdout, failing the test on a non-zero exit.
fn berth_ok(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "berth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The publish gate end to end with ordinary tools: skopeo pushes a release to a gated
/// repository, `berth tags --all` shows its tag waiting for a signature (and `berth
/// tags` does not show it), `berth sign` signs the digest, and the tag appears.
#[test]
fn a_gated_release_tag_waits_for_berth_sign() {
    let tmp = tempfile::tempdir().unwrap();
    let password = [("COSIGN_PASSWORD", "gate-test")];
    let key = tmp.path().join("cosign.key");
    std::fs::create_dir_all(tmp.path().join("keys")).unwrap();
    let public = tmp.path().join("keys/cosign.pub");
    berth_ok(
        &[
            "key",
            "generate",
            "--output-key",
            key.to_str().unwrap(),
            "--output-pub",
            public.to_str().unwrap(),
        ],
        &password,
    );
    let config = tmp.path().join("berth.toml");
    std::fs::write(
        &config,
        "[[trust_policy]]\nrepositories = \"release/*\"\nrequire_signature = [\"keys/cosign.pub\"]\ngate_release_tags = true\n",
    )
    .unwrap();
    let server = ServerProcess::start(
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let reg = &server.addr;
    let layout = tmp.path().join("layout");
    release_layout(&layout, "2.0.0", 11);
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:2.0.0", layout.display()),
        &format!("docker://{reg}/release/app:2.0.0"),
    ]);
    let repo = format!("{reg}/release/app");
    let common = ["--insecure"];
    let tags = |all: bool| {
        let mut args = vec!["tags", repo.as_str()];
        if all {
            args.push("--all");
        }
        args.extend(common);
        berth_ok(&args, &[])
    };
    assert_eq!(tags(false).trim(), "", "a gated tag is hidden");
    let waiting = tags(true);
    let line = waiting
        .lines()
        .find(|l| l.starts_with("2.0.0\twaiting for signature of sha256:"))
        .unwrap_or_else(|| panic!("no waiting line in {waiting:?}"));
    let digest = line
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap()
        .to_owned();
    let json: Value = serde_json::from_str(&berth_ok(
        &["tags", repo.as_str(), "--all", "--json", "--insecure"],
        &[],
    ))
    .unwrap();
    assert_eq!(json["pending"][0]["tag"], "2.0.0");
    assert_eq!(json["pending"][0]["digest"], digest.as_str());
    berth_ok(
        &[
            "sign",
            &format!("{repo}@{digest}"),
            "--key",
            key.to_str().unwrap(),
            "--insecure",
        ],
        &password,
    );
    assert_eq!(tags(false).trim(), "2.0.0", "signing revealed the tag");
    assert!(!tags(true).contains("waiting for signature"));
}
