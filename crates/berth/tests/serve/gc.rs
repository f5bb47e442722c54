//! `berth admin gc`: refused in process while a server holds the data directory, run
//! through the server's admin API instead (dry run, explanation, collection), and in
//! process once the server is gone.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::process::{client, digest, ServerProcess};

/// Runs `berth admin gc --json` with `args`; its exit success, JSON answer and stderr.
fn gc(data: &Path, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["admin", "gc", "--json", "--data-dir"])
        .arg(data)
        .args(args)
        .env("DOCKER_CONFIG", data.join("no-docker-config"))
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn admin_gc_goes_through_the_server_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(&data, &["--gc-grace", "0"]);
    let stray: &[u8] = b"a blob no manifest references";
    let r = client()
        .post(format!(
            "{}/v2/team/app/blobs/uploads/?digest={}",
            server.base,
            digest(stray)
        ))
        .body(stray.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let file = data.join("blobs/sha256").join(digest(stray).hex());

    let (ok, _, err) = gc(&data, &[]);
    assert!(!ok);
    assert!(err.contains("--registry"), "{err}");

    let (ok, dry, err) = gc(&data, &["--registry", &server.addr, "--dry-run"]);
    assert!(ok, "{err}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["blobs_deleted"], 1, "{dry}");
    assert_eq!(dry["repositories"][0]["repository"], "team/app");
    assert!(file.exists());

    let d = digest(stray).to_string();
    let (ok, why, err) = gc(&data, &["--registry", &server.addr, "--explain", &d]);
    assert!(ok, "{err}");
    assert_eq!(why["verdict"], "garbage", "{why}");

    let (ok, run, err) = gc(&data, &["--registry", &server.addr]);
    assert!(ok, "{err}");
    assert_eq!(run["blobs_deleted"], 1, "{run}");
    assert!(!file.exists());

    assert!(server.terminate().success());
    let (ok, run, err) = gc(&data, &[]);
    assert!(ok, "in process once the server is gone: {err}");
    assert_eq!(run["blobs_deleted"], 0, "{run}");
}
