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
