//! Process lifecycle: graceful shutdown on SIGTERM, configuration sources.

use std::time::Duration;

use reqwest::StatusCode;

use crate::process::{client, ServerProcess};

#[tokio::test]
async fn sigterm_lets_an_in_flight_upload_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let http = client();
    let r = http
        .post(format!("{}/v2/a/blobs/uploads/", server.base))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let url = format!("{}{loc}", server.base);
    let req = tokio::spawn(async move { client().patch(url).body(body).send().await });
    tx.send(Ok(vec![1u8; 1000])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(vec![2u8; 1000])).await.unwrap();
    drop(tx);
    let resp = tokio::time::timeout(Duration::from_secs(10), req)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["range"], "0-1999");
    let status = server.terminate();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}

#[test]
fn config_file_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("berth.toml");
    std::fs::write(
        &cfg,
        "max_manifest_bytes = 100\nupload_idle_timeout = \"1h\"\n",
    )
    .unwrap();
    // An unknown key is a clear startup error.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "no_such_key = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
    // So is an unknown BERTH_* variable, by name, before the file is read (the bad file
    // keeps the server from starting should the variable be let through).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config"])
        .arg(&bad)
        .env("BERTH_LISTN", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown environment variable BERTH_LISTN"),
        "{stderr}"
    );

    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let r = client()
            .put(format!("{}/v2/a/manifests/v1", server.base))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(vec![b' '; 101])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "limit from the config file applies"
        );
    });
}

#[test]
fn a_second_server_on_one_data_directory_exits_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(dir.path(), &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another berth process"), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    // The first server still serves.
    assert_eq!(crate::process::status_of(&first.addr, "/v2/"), 200);
}

/// The port is bound before anything is written: a port in use leaves no data directory
/// behind, and a refused start never says it is listening.
#[test]
fn a_refused_start_leaves_nothing_behind_and_never_claims_to_listen() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let data = dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "serve",
            "--listen",
            &format!("localhost:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");
    assert!(!data.exists(), "a data directory was created: {err}");
    // An open registry on a public address is refused before it says "listening".
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .env("BERTH_LOG", "info")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen"), "{err}");
    assert!(!err.contains("registry listening"), "{err}");
    // An OS error is said once.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}
