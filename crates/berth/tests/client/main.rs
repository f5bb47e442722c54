//! Tests of the `berth` client commands as a user runs them: the real binary against a
//! Berth registry started in this process on 127.0.0.1:0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers panic on failure by design.

mod scan;
mod verify;

use std::process::{Command, Output};

mod sbom;
mod sign;

use berth_client::image::Manifest;
use berth_client::{ClientOptions, Clients};
use berth_oci::{media_types as mt, Descriptor, Digest, Reference, RepoName};

type Bytes = Vec<u8>;

/// A Berth registry on a loopback port, running on its own runtime until dropped.
struct Registry {
    host: String,
    rt: tokio::runtime::Runtime,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = berth_server::Config {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        let state = berth_server::build_state(&config).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let host = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let _ = berth_server::run(listener, state, async {
                    let _ = rx.await;
                })
                .await;
            });
            addr.to_string()
        });
        Registry {
            host,
            rt,
            shutdown: Some(tx),
            _dir: dir,
        }
    }

    /// Pushes a one-layer image for `arch` under `repo:tag`; returns its digest.
    fn push_image(&self, repo: &str, tag: &str, arch: &str) -> Digest {
        let clients = Clients::new(ClientOptions {
            docker_config: Some("/nonexistent/config.json".into()),
            ..ClientOptions::default()
        })
        .unwrap();
        let reg = clients.registry(&self.host).unwrap();
        let repo = RepoName::parse(repo).unwrap();
        let layer: Bytes = format!("layer of {repo} {tag} {arch}").into_bytes();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux", "created": "2024-05-06T07:08:09Z",
            "config": {"Entrypoint": ["/app"], "Env": ["A=1"], "Labels": {"l": "v"}},
            "rootfs": {"type": "layers", "diff_ids": [Digest::sha256(&layer)]},
        }))
        .unwrap();
        let d = |t: &str, b: &[u8]| Descriptor {
            media_type: t.into(),
            digest: Digest::sha256(b),
            size: b.len() as u64,
            urls: vec![],
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        };
        let (cd, ld) = (d(mt::OCI_CONFIG, &config), d(mt::OCI_LAYER_TAR, &layer));
        let manifest = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST, "config": cd, "layers": [ld],
        }))
        .unwrap();
        let m = Manifest::from_bytes(manifest.into(), Some(mt::OCI_MANIFEST)).unwrap();
        self.rt.block_on(async {
            reg.put_blob_bytes(&repo, &cd, config.into()).await.unwrap();
            reg.put_blob_bytes(&repo, &ld, layer.into()).await.unwrap();
            reg.put_manifest(&repo, &Reference::parse(tag).unwrap(), &m)
                .await
                .unwrap();
        });
        m.digest
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn berth(args: &[&str], docker_config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("BERTH_DOCKER_CONFIG")
        .output()
        .expect("run berth")
}

fn ok(args: &[&str], cfg: &std::path::Path) -> String {
    let out = berth(args, cfg);
    assert!(
        out.status.success(),
        "berth {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_client_command_has_examples_in_help() {
    let cfg = tempfile::tempdir().unwrap();
    for cmd in [
        &["copy"][..],
        &["push"],
        &["pull"],
        &["inspect"],
        &["tags"],
        &["catalog"],
        &["digest"],
        &["tag"],
        &["delete"],
        &["index", "create"],
        &["index", "add"],
        &["index", "remove"],
        &["login"],
        &["logout"],
        &["verify"],
        &["verify-attestation"],
        &["sbom"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let help = ok(&args, cfg.path());
        assert!(
            help.contains("Examples:"),
            "berth {cmd:?} --help has no examples"
        );
    }
}

#[test]
fn copy_pull_push_inspect_tag_delete_from_the_command_line() {
    let reg = Registry::start();
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let h = &reg.host;
    let digest = reg.push_image("app", "1", "amd64").to_string();

    // copy prints the digest; --json a report.
    assert_eq!(
        ok(
            &["copy", "-q", &format!("{h}/app:1"), &format!("{h}/copy:1")],
            c
        )
        .trim(),
        digest
    );
    let report: serde_json::Value = serde_json::from_str(&ok(
        &[
            "copy",
            "--json",
            &format!("{h}/app:1"),
            &format!("{h}/copy:1"),
        ],
        c,
    ))
    .unwrap();
    assert_eq!(report["digest"], digest);
    assert_eq!(report["skipped"], 2);

    // pull to a layout and a docker-archive, push them back.
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let archive = tmp.path().join("app.tar");
    ok(
        &[
            "pull",
            "-q",
            &format!("{h}/app:1"),
            layout.to_str().unwrap(),
        ],
        c,
    );
    assert!(layout.join("index.json").is_file());
    ok(
        &[
            "pull",
            "-q",
            &format!("{h}/app:1"),
            archive.to_str().unwrap(),
        ],
        c,
    );
    assert_eq!(
        ok(
            &[
                "push",
                "-q",
                layout.to_str().unwrap(),
                &format!("{h}/pushed:2")
            ],
            c
        )
        .trim(),
        digest
    );
    assert_eq!(
        ok(
            &[
                "push",
                "-q",
                archive.to_str().unwrap(),
                &format!("{h}/from-tar:3")
            ],
            c
        )
        .trim(),
        digest
    );

    // inspect: text, raw bytes, JSON.
    let text = ok(&["inspect", &format!("{h}/app:1")], c);
    for want in [
        "Platform:   linux/amd64",
        "Entrypoint: /app",
        "A=1",
        "l=v",
        "Total size:",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let raw = berth(&["inspect", "--raw", &format!("{h}/app:1")], c).stdout;
    assert_eq!(Digest::sha256(&raw).to_string(), digest);
    let json: serde_json::Value = serde_json::from_str(&ok(
        &["inspect", "--json", &format!("oci:{}", layout.display())],
        c,
    ))
    .unwrap();
    assert_eq!(json["image"]["layers"].as_array().unwrap().len(), 1);

    // tag, tags, digest, catalog, delete.
    ok(&["tag", "-q", &format!("{h}/app:1"), "1.0", "latest"], c);
    let tags: Vec<String> =
        serde_json::from_str(&ok(&["tags", "--json", &format!("{h}/app")], c)).unwrap();
    assert_eq!(tags, ["1", "1.0", "latest"]);
    assert_eq!(
        ok(&["digest", &format!("{h}/app:latest")], c).trim(),
        digest
    );
    ok(
        &[
            "copy",
            "-q",
            "--all-tags",
            &format!("{h}/app"),
            &format!("{h}/mirror/app"),
        ],
        c,
    );
    let mirrored: Vec<String> =
        serde_json::from_str(&ok(&["tags", "--json", &format!("{h}/mirror/app")], c)).unwrap();
    assert_eq!(mirrored, tags);
    let catalog = ok(&["catalog", h], c);
    assert!(catalog.lines().any(|l| l == "from-tar"), "{catalog}");
    ok(&["delete", "-q", &format!("{h}/copy:1")], c);

    // An unknown image: exit code 3 and one line on stderr.
    let out = berth(&["digest", &format!("{h}/copy:1")], c);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("berth: not found: image"), "{err}");
    // A bad reference is a usage error.
    assert_eq!(
        berth(&["digest", "localhost/a//b"], c).status.code(),
        Some(2)
    );
}

#[test]
fn index_create_and_platform_selection_from_the_command_line() {
    let reg = Registry::start();
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let h = &reg.host;
    let amd = reg.push_image("app", "amd64", "amd64");
    let arm = reg.push_image("app", "arm64", "arm64");
    let idx = ok(
        &[
            "index",
            "create",
            "-q",
            &format!("{h}/app:multi"),
            &format!("{h}/app:amd64"),
            &format!("{h}/app:arm64"),
        ],
        c,
    );
    let text = ok(&["inspect", &format!("{h}/app:multi")], c);
    assert!(
        text.contains("linux/amd64") && text.contains("linux/arm64"),
        "{text}"
    );
    assert_eq!(
        ok(
            &[
                "digest",
                &format!("{h}/app:multi"),
                "--platform",
                "linux/arm64"
            ],
            c
        )
        .trim(),
        arm.to_string()
    );
    let copied = ok(
        &[
            "copy",
            "-q",
            "--platform",
            "linux/amd64",
            &format!("{h}/app:multi"),
            &format!("{h}/only-amd:1"),
        ],
        c,
    );
    assert_eq!(copied.trim(), amd.to_string());
    ok(
        &[
            "index",
            "remove",
            "-q",
            &format!("{h}/app:multi"),
            "--platform",
            "linux/amd64",
        ],
        c,
    );
    let text = ok(&["inspect", &format!("{h}/app:multi")], c);
    assert!(!text.contains("linux/amd64"), "{text}");
    assert_ne!(
        ok(&["digest", &format!("{h}/app:multi")], c).trim(),
        idx.trim()
    );
}

#[test]
fn login_and_logout_edit_the_docker_config() {
    let reg = Registry::start();
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    std::fs::write(c.join("config.json"), r#"{"psFormat":"keep me"}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["login", &reg.host, "-u", "ci", "--password-stdin"])
        .env("DOCKER_CONFIG", c)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"s3cret\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.join("config.json")).unwrap()).unwrap();
    assert_eq!(json["psFormat"], "keep me");
    assert_eq!(
        json["auths"][&reg.host]["auth"],
        berth_client::auth::encode_auth("ci", "s3cret")
    );
    ok(&["logout", &reg.host], c);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.join("config.json")).unwrap()).unwrap();
    assert!(json["auths"].get(&reg.host).is_none());
    assert!(!berth(&["logout", &reg.host], c).status.success());
}

#[test]
fn copies_carry_signatures_and_tags_hides_their_tags() {
    let reg = Registry::start();
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let h = &reg.host;
    let digest = reg.push_image("app", "1", "amd64");
    // A manifest under cosign v2's signature tag of the image stands in for a signature.
    let sig_tag = format!("sha256-{}.sig", digest.hex());
    let sig = reg.push_image("app", &sig_tag, "signature").to_string();
    let lines = |s: String| s.lines().map(str::to_owned).collect::<Vec<_>>();

    assert_eq!(lines(ok(&["tags", &format!("{h}/app")], c)), ["1"]);
    assert_eq!(
        lines(ok(&["tags", "--all", &format!("{h}/app")], c)),
        ["1", sig_tag.as_str()]
    );

    let report =
        |args: &[&str]| -> serde_json::Value { serde_json::from_str(&ok(args, c)).unwrap() };
    let r = report(&[
        "copy",
        "--json",
        &format!("{h}/app:1"),
        &format!("{h}/copy:1"),
    ]);
    assert_eq!(r["referrers"], 1);
    assert_eq!(
        ok(&["digest", &format!("{h}/copy:{sig_tag}")], c).trim(),
        sig
    );
    let r = report(&[
        "copy",
        "--json",
        "--no-referrers",
        &format!("{h}/app:1"),
        &format!("{h}/bare:1"),
    ]);
    assert_eq!(r["referrers"], 0);
    assert_eq!(
        lines(ok(&["tags", "--all", &format!("{h}/bare")], c)),
        ["1"]
    );

    // --all-tags copies the signature with its image, not as an image of its own.
    let out = ok(
        &[
            "copy",
            "-q",
            "--all-tags",
            &format!("{h}/app"),
            &format!("{h}/mirror"),
        ],
        c,
    );
    assert_eq!(lines(out), [format!("1 {digest}")]);
    assert_eq!(
        lines(ok(&["tags", "--all", &format!("{h}/mirror")], c)),
        ["1", sig_tag.as_str()]
    );
}

#[test]
fn key_generate_writes_a_cosign_key_pair_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let public = dir.path().join("release.pub");
    let generate = || {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["key", "generate", "--output-key"])
            .arg(&key)
            .arg("--output-pub")
            .arg(&public)
            .env("COSIGN_PASSWORD", "correct horse")
            .output()
            .unwrap()
    };
    let out = generate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read(&key).unwrap();
    assert!(pem.starts_with(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    let private = berth_trust::PrivateKey::from_pem(&pem, b"correct horse").unwrap();
    let public_key = berth_trust::PublicKey::from_pem(&std::fs::read(&public).unwrap()).unwrap();
    assert_eq!(private.public_key(), public_key);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&public_key.fingerprint()), "{stdout}");

    let again = generate();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not overwriting"));
    assert_eq!(std::fs::read(&key).unwrap(), pem);
}
