//! Access control end to end: `berth admin` on the data directory of a running server,
//! skopeo through the token flow (with --creds and with an auth file), the loopback-only
//! default, and TLS with HTTP/2.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine as _;
use reqwest::StatusCode;

use crate::process::ServerProcess;

fn admin(data: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("admin")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "berth admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a `berth` client command with its own Docker config directory.
fn berth(docker_config: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by scripts/test-all")
}

fn oci_layout(dir: &std::path::Path) {
    // A minimal one-layer image written as an OCI layout.
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |b: &[u8]| {
        let d = berth_oci::Digest::sha256(b);
        std::fs::write(dir.join("blobs/sha256").join(d.hex()), b).unwrap();
        (d.to_string(), b.len())
    };
    let (ld, ln) = put(&crate::process::bytes(7, 10_000));
    let (cd, cn) =
        put(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
    let m = serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":cn},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":ld,"size":ln}]});
    let (md, mn) = put(serde_json::to_vec(&m).unwrap().as_slice());
    let idx = serde_json::json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "digest":md,"size":mn,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]});
    std::fs::write(dir.join("index.json"), idx.to_string()).unwrap();
}

#[test]
fn skopeo_through_the_token_flow() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = ServerProcess::start(&data, &[]);
    let reg = server.addr.clone();
    let src = tmp.path().join("img");
    oci_layout(&src);

    // Accounts made while the server runs take effect at once.
    admin(
        &data,
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--grant",
            "team/*:pull,push",
        ],
        Some("alice-password\n"),
    );
    let secret = admin(
        &data,
        &[
            "robot",
            "create",
            "ci",
            "--grant",
            "team/*:pull",
            "--expires",
            "1d",
        ],
        None,
    );
    let secret = secret.trim();
    // The server sees the first account within its one-second cache: wait for the
    // challenge on `/v2/` instead of sleeping a fixed time.
    crate::process::wait_for_status(&reg, "/v2/", 401);

    let dest = format!("docker://{reg}/team/app:v1");
    let src_ref = format!("oci:{}:v1", src.display());
    // Anonymous push is refused now that an account exists.
    let out = skopeo(&["copy", "--dest-tls-verify=false", &src_ref, &dest]);
    assert!(!out.status.success());
    // With --creds, through the Bearer challenge and /token.
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:alice-password",
        &src_ref,
        &dest,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A robot with an auth file (base64 "auth" entry) pulls, but may not push.
    let authfile = tmp.path().join("auth.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("ci:{secret}"));
    std::fs::write(
        &authfile,
        format!(r#"{{"auths":{{"{reg}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--authfile",
        authfile.to_str().unwrap(),
        &dest,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-authfile",
        authfile.to_str().unwrap(),
        &src_ref,
        &format!("docker://{reg}/team/robot:v1"),
    ]);
    assert!(!out.status.success(), "a pull-only robot must not push");

    // The berth client logs in (token flow) and copies; credentials land in the Docker
    // config, and a pull-only robot is refused a push with the auth exit code.
    let cfg = tmp.path().join("docker");
    let out = berth(
        &cfg,
        &["login", &reg, "-u", "alice", "--password-stdin"],
        "alice-password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(cfg.join("config.json"))
        .unwrap()
        .contains(&reg));
    let out = berth(
        &cfg,
        &["copy", "--quiet", &src_ref, &format!("{reg}/team/berth:v1")],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = berth(&cfg, &["tags", &format!("{reg}/team/berth")], "");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1");
    let bad = berth(
        &cfg,
        &["login", &reg, "-u", "alice", "--password-stdin"],
        "wrong-password\n",
    );
    assert!(!bad.status.success());
    let robot_cfg = tmp.path().join("robot");
    let out = berth(
        &robot_cfg,
        &["login", &reg, "-u", "ci", "--password-stdin"],
        secret,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = berth(
        &robot_cfg,
        &[
            "copy",
            "--quiet",
            &src_ref,
            &format!("{reg}/team/robot2:v1"),
        ],
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = berth(&robot_cfg, &["digest", &format!("{reg}/team/berth:v1")], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The audit log has the pushes, logins and grants.
    let log = admin(&data, &["audit", "--json"], None);
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["user_add", "grant", "robot_add", "login", "push"] {
        assert!(actions.contains(&a), "audit log lacks {a}: {actions:?}");
    }
    let users = admin(&data, &["user", "list", "--json"], None);
    assert!(!users.contains("alice-password") && !users.contains(secret));
    drop(server);
}

#[test]
fn refuses_a_public_address_without_accounts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--insecure-open")
            && err.lines().filter(|l| l.contains("refusing")).count() == 1,
        "{err}"
    );
    // With an account it starts.
    admin(
        tmp.path(),
        &[
            "user",
            "add",
            "root",
            "--password-stdin",
            "--grant",
            "*:admin",
        ],
        Some("root-password"),
    );
    let server = ServerProcess::start_on("0.0.0.0:0", tmp.path(), &[]);
    assert!(server.addr.starts_with("0.0.0.0:"));
}

#[tokio::test]
async fn tls_with_http2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cert, key, ca_pem) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    // A throwaway CA, and a server certificate it signs (webpki refuses a self-signed leaf).
    let steps: Vec<Vec<String>> = vec![
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=Berth test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_owned).collect())
    .collect();
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let server = ServerProcess::start(
        &tmp.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_pem).unwrap()).unwrap();
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    // A blob above the 64 KiB that TLS sends in page-cache frames, not a multiple of them.
    let blob: Vec<u8> = (0..300_001u32).map(|i| (i % 253) as u8).collect();
    let digest = berth_oci::Digest::sha256(&blob);
    for http2 in [false, true] {
        let mut b = reqwest::Client::builder().add_root_certificate(ca.clone());
        if !http2 {
            b = b.http1_only();
        }
        let http = b.build().unwrap();
        let r = http
            .get(format!("https://localhost:{port}/v2/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let want = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(r.version(), want);
        if !http2 {
            let r = http
                .post(format!(
                    "https://localhost:{port}/v2/team/tlsblob/blobs/uploads/?digest={digest}"
                ))
                .body(blob.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
        let url = format!("https://localhost:{port}/v2/team/tlsblob/blobs/{digest}");
        let r = http.get(&url).send().await.unwrap();
        assert_eq!((r.status(), r.version()), (StatusCode::OK, want));
        assert!(r.bytes().await.unwrap() == blob, "whole blob over {want:?}");
        let r = http
            .get(&url)
            .header("range", "bytes=70000-230000")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert!(
            r.bytes().await.unwrap() == blob[70_000..=230_000],
            "range over {want:?}"
        );
    }
    // The berth client pushes and lists over HTTPS when told to trust the CA.
    let src = tmp.path().join("img");
    oci_layout(&src);
    let cfg = tmp.path().join("docker");
    let ca_arg = ca_pem.to_str().unwrap();
    let dest = format!("127.0.0.1:{port}/team/tls:v1");
    let out = berth(
        &cfg,
        &[
            "copy",
            "--quiet",
            "--ca-cert",
            ca_arg,
            &format!("oci:{}:v1", src.display()),
            &dest,
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = berth(
        &cfg,
        &[
            "tags",
            "--ca-cert",
            ca_arg,
            &format!("127.0.0.1:{port}/team/tls"),
        ],
        "",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1");
    // Without the CA the client speaks plain HTTP to loopback, which a TLS port refuses.
    let out = berth(&cfg, &["tags", &format!("127.0.0.1:{port}/team/tls")], "");
    assert!(!out.status.success());

    // An untrusted client refuses the self-signed certificate.
    assert!(reqwest::get(format!("https://localhost:{port}/v2/"))
        .await
        .is_err());
    // Plain HTTP to the TLS port does not work.
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/v2/"))
        .await
        .is_err());
}

/// Issue 18: `admin robot` had only `create`, printed epoch seconds, and a permission
/// refusal read "authentication failed". Robots are listed (RFC 3339 times), rotated (the
/// old secret stops working) and deleted; a robot pushing where it may only pull is told
/// which action on which repository it lacks.
#[test]
fn robot_lifecycle_and_permission_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = ServerProcess::start(&data, &[]);
    let reg = server.addr.clone();
    let src = tmp.path().join("img");
    oci_layout(&src);
    let old = admin(
        &data,
        &[
            "robot",
            "create",
            "ci",
            "--grant",
            "team/*:pull",
            "--expires",
            "1d",
        ],
        None,
    );
    let old = old.trim().to_owned();
    crate::process::wait_for_status(&reg, "/v2/", 401);

    let list: serde_json::Value =
        serde_json::from_str(&admin(&data, &["robot", "list", "--json"], None)).unwrap();
    assert_eq!(list[0]["name"], "ci");
    let expires = list[0]["expires_at"].as_str().unwrap();
    assert!(
        expires.len() == 20 && expires.ends_with('Z') && expires.contains('T'),
        "{expires}"
    );
    let text = admin(&data, &["robot", "list"], None);
    assert!(text.contains(expires), "{text}");
    let audit: serde_json::Value =
        serde_json::from_str(&admin(&data, &["audit", "--json"], None)).unwrap();
    assert!(audit[0]["at"].as_str().unwrap().ends_with('Z'), "{audit}");

    let cfg = tmp.path().join("docker");
    let login = |secret: &str| {
        berth(
            &cfg,
            &["login", &reg, "-u", "ci", "--password-stdin"],
            secret,
        )
    };
    let out = login(&old);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Pushing with a pull-only grant: a permission refusal, not a failed login.
    let out = berth(
        &cfg,
        &[
            "copy",
            "--quiet",
            &format!("oci:{}:v1", src.display()),
            &format!("{reg}/team/app:v1"),
        ],
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("account ci lacks push on repository team/app"),
        "{err}"
    );
    assert!(!err.contains("authentication failed"), "{err}");

    // Rotation: the new secret works, the old one no longer does (the server re-reads
    // accounts within a second; poll with a deadline).
    let new = admin(&data, &["robot", "rotate", "ci"], None);
    let new = new.trim().to_owned();
    assert!(new.starts_with("berth_") && new != old);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if !login(&old).status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old secret still works after rotation"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = login(&new);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    admin(&data, &["robot", "delete", "ci"], None);
    let list: serde_json::Value =
        serde_json::from_str(&admin(&data, &["robot", "list", "--json"], None)).unwrap();
    assert_eq!(list, serde_json::json!([]));
}

/// A self-signed certificate as `openssl req -x509` makes it (`CA:TRUE`, used as the
/// server's own certificate, with the host in subjectAltName).
fn self_signed(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "the certificate under test must be a CA certificate"
    );
    (cert, key)
}

/// Issue 18: a self-signed `openssl req -x509` certificate given with --ca-cert was
/// refused (webpki rejects a CA certificate as a server's own), and plain HTTP to a TLS
/// registry failed with "invalid HTTP version parsed".
#[test]
fn self_signed_ca_certificate_and_plain_http_to_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(tmp.path(), "server");
    let (other, _) = self_signed(tmp.path(), "other");
    let server = ServerProcess::start(
        &tmp.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let src = tmp.path().join("img");
    oci_layout(&src);
    let cfg = tmp.path().join("docker");
    for host in ["127.0.0.1", "localhost"] {
        let out = berth(
            &cfg,
            &[
                "copy",
                "--quiet",
                "--ca-cert",
                cert.to_str().unwrap(),
                &format!("oci:{}:v1", src.display()),
                &format!("{host}:{port}/team/tls:v1"),
            ],
            "",
        );
        assert!(
            out.status.success(),
            "{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Another self-signed certificate does not vouch for this server.
    let out = berth(
        &cfg,
        &[
            "tags",
            "--ca-cert",
            other.to_str().unwrap(),
            &format!("127.0.0.1:{port}/team/tls"),
        ],
        "",
    );
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(6));
    // Plain HTTP to the TLS port: a message that says what to do.
    let out = berth(&cfg, &["tags", &format!("127.0.0.1:{port}/team/tls")], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("speaks HTTPS") && err.contains("--ca-cert"),
        "{err}"
    );
}

/// Writes `docker-credential-<name>`, a fake credential helper: `get` answers `user` and
/// `secret` for `server` (else "credentials not found"), `store` and `erase` append what
/// they read to `<dir>/<name>.log`.
fn fake_helper(dir: &std::path::Path, name: &str, server: &str, user: &str, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join(format!("{name}.log"));
    let script = format!(
        r#"#!/bin/sh
input=$(cat)
case "$1" in
get)
    if [ "$input" = "{server}" ]; then
        printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}' "$input"
        exit 0
    fi
    echo "credentials not found in native keychain"
    exit 1;;
store|erase)
    printf '%s %s\n' "$1" "$input" >> '{log}';;
esac
"#,
        log = log.display()
    );
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Issue 18: credentials from Docker credential helpers (`credHelpers`, `credsStore`)
/// for every command, and `berth login` storing through `credsStore`.
#[test]
fn docker_credential_helpers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = ServerProcess::start(&data, &[]);
    let reg = server.addr.clone();
    admin(
        &data,
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--grant",
            "team/*:pull,push",
        ],
        Some("alice-password\n"),
    );
    crate::process::wait_for_status(&reg, "/v2/", 401);
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    fake_helper(&bin, "store", &reg, "alice", "alice-password");
    fake_helper(&bin, "wrong", "elsewhere.example", "x", "y");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cfg = tmp.path().join("docker");
    std::fs::create_dir(&cfg).unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .env("DOCKER_CONFIG", &cfg)
            .env("PATH", &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let src = tmp.path().join("img");
    oci_layout(&src);
    let push = || {
        run(
            &[
                "copy",
                "--quiet",
                &format!("oci:{}:v1", src.display()),
                &format!("{reg}/team/app:v1"),
            ],
            "",
        )
    };

    // credsStore: the helper knows the registry, so a push works with no `auths`.
    std::fs::write(cfg.join("config.json"), r#"{"credsStore":"store"}"#).unwrap();
    let out = push();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // credHelpers wins over credsStore for its host: this helper does not know the
    // registry and there is no `auths` entry, so the push needs credentials.
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"credsStore":"store","credHelpers":{{"{reg}":"wrong"}}}}"#),
    )
    .unwrap();
    let out = push();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"credHelpers":{{"{reg}":"store"}}}}"#),
    )
    .unwrap();
    let out = run(&["tags", &format!("{reg}/team/app")], "");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1");

    // `berth login` with a credsStore hands the secret to the helper, not the file.
    std::fs::write(cfg.join("config.json"), r#"{"credsStore":"store"}"#).unwrap();
    let out = run(
        &["login", &reg, "-u", "alice", "--password-stdin"],
        "alice-password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(bin.join("store.log")).unwrap();
    let stored: serde_json::Value =
        serde_json::from_str(log.trim().strip_prefix("store ").unwrap()).unwrap();
    assert_eq!(
        stored,
        serde_json::json!({"ServerURL": reg, "Username": "alice", "Secret": "alice-password"})
    );
    let file = std::fs::read_to_string(cfg.join("config.json")).unwrap();
    assert!(!file.contains("alice-password"), "{file}");
    let file: serde_json::Value = serde_json::from_str(&file).unwrap();
    assert_eq!(file["auths"][reg.as_str()], serde_json::json!({}));
    assert_eq!(file["credsStore"], "store");
    let out = run(&["logout", &reg], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(bin.join("store.log")).unwrap();
    assert!(log.contains(&format!("erase {reg}")), "{log}");
}
