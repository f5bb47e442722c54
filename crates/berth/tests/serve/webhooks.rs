//! `berth admin webhooks`: the delivery status read from the data directory's outbox
//! while the server runs, a ping through the server's admin API, and a redelivery.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::ServerProcess;

/// Runs `berth admin webhooks --json --config <config> --data-dir <data>` with `args`.
fn webhooks(config: &Path, data: &Path, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["admin", "webhooks", "--json", "--config"])
        .arg(config)
        .arg("--data-dir")
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

#[test]
fn admin_webhooks_reports_pings_and_redelivers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("berth.toml");
    // Port 9 on loopback refuses connections: every attempt fails, quickly.
    std::fs::write(
        &config,
        "[[webhook]]\nname = \"ci\"\nurl = \"http://127.0.0.1:9/hook?token=abc\"\nsecret = \"s\"\n\
         retry_max_interval = \"1s\"\n",
    )
    .unwrap();
    let mut server = ServerProcess::start(&data, &["--config", config.to_str().unwrap()]);

    let (ok, ping, err) = webhooks(
        &config,
        &data,
        &["--registry", &server.addr, "--ping", "ci"],
    );
    assert!(ok, "{err}");
    assert!(
        ping["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{ping}"
    );

    // The data directory's outbox shows the failing ping while the server runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let (ok, report, err) = webhooks(&config, &data, &[]);
        assert!(ok, "{err}");
        if report["webhooks"][0]["failing"] == 1 {
            break report;
        }
        assert!(Instant::now() < deadline, "the ping never failed: {report}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let hook = &report["webhooks"][0];
    assert_eq!(hook["name"], "ci");
    assert_eq!(
        hook["url"], "http://127.0.0.1:9/hook?...",
        "no credentials shown"
    );
    assert_eq!(hook["pending"], 1);
    assert!(hook["last_error"].as_str().is_some(), "{report}");

    let (ok, remote, err) = webhooks(&config, &data, &["--registry", &server.addr]);
    assert!(ok, "{err}");
    assert_eq!(remote["webhooks"][0]["pending"], 1, "{remote}");
    let (ok, again, err) = webhooks(&config, &data, &["--redeliver", "ci"]);
    assert!(ok, "{err}");
    assert_eq!(again["redelivered"], 1);
    let (ok, _, err) = webhooks(&config, &data, &["--redeliver", "nope"]);
    assert!(!ok);
    assert!(err.contains("no webhook named \"nope\""), "{err}");
    assert!(server.terminate().success());
}
