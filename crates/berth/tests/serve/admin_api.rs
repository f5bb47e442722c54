//! The admin HTTP API through `berth admin --registry URL`: users, robots, grants,
//! public patterns and the audit log of a running registry, with the same output as on
//! the data directory, and refusals for callers without `admin` on `*`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;

use crate::process::{client, wait_for_status, ServerProcess};

/// Runs `berth admin ARGS` with a Docker config directory and standard input.
fn admin(docker_config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("admin")
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

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker_config(dir: &Path, reg: &str, user: &str, secret: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"auths":{{"{reg}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
}

#[tokio::test]
async fn admin_commands_work_through_a_running_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = ServerProcess::start(&data, &[]);
    let reg = server.addr.clone();
    let none = tmp.path().join("no-config");
    // The first administrator comes from the data directory (the registry is open).
    ok(&admin(
        &none,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "user",
            "add",
            "root",
            "--password-stdin",
            "--grant",
            "*:pull,push,delete,admin",
        ],
        "root-password",
    ));
    // The server re-reads accounts within a second: from then on it needs credentials.
    wait_for_status(&reg, "/v2/", 401);
    let root = tmp.path().join("root");
    docker_config(&root, &reg, "root", "root-password");
    let remote = |args: &[&str], stdin: &str| {
        let mut all = vec!["--registry", reg.as_str()];
        all.extend_from_slice(args);
        admin(&root, &all, stdin)
    };

    ok(&remote(
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--grant",
            "team/*:pull,push",
        ],
        "alice-password",
    ));
    let out = ok(&remote(
        &[
            "robot",
            "create",
            "ci",
            "--grant",
            "team/*:pull",
            "--expires",
            "30d",
            "--json",
        ],
        "",
    ));
    let robot: Value = serde_json::from_str(&out).unwrap();
    let secret = robot["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32, "{robot}");
    assert!(
        robot["expires_at"].as_str().unwrap().ends_with('Z'),
        "RFC 3339: {robot}"
    );

    // The list answers the same shape as on the data directory.
    let list: Value = serde_json::from_str(&ok(&remote(&["user", "list", "--json"], ""))).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{list}");
    for n in ["root", "alice", "ci"] {
        assert!(names.contains(&n), "{list}");
    }
    let local: Value = serde_json::from_str(&ok(&admin(
        &none,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "user",
            "list",
            "--json",
        ],
        "",
    )))
    .unwrap();
    assert_eq!(local, list);
    let robots: Value =
        serde_json::from_str(&ok(&remote(&["robot", "list", "--json"], ""))).unwrap();
    assert_eq!(robots.as_array().unwrap().len(), 1, "{robots}");
    assert_eq!(robots[0]["grants"][0], "team/*:pull");

    // The robot's secret works, then stops working after a rotation.
    let auth = |user: &str, secret: &str| {
        client()
            .get(format!("{}/v2/", server.base))
            .basic_auth(user, Some(secret))
            .send()
    };
    assert_eq!(auth("ci", &secret).await.unwrap().status(), StatusCode::OK);
    let out = ok(&remote(&["robot", "rotate", "ci", "--json"], ""));
    let rotated: Value = serde_json::from_str(&out).unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(
        auth("ci", new_secret).await.unwrap().status(),
        StatusCode::OK
    );

    // Grants, revokes, public patterns.
    ok(&remote(&["grant", "alice", "team/app:delete"], ""));
    ok(&remote(&["revoke", "alice", "team/*"], ""));
    let list: Value = serde_json::from_str(&ok(&remote(&["user", "list", "--json"], ""))).unwrap();
    let alice = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "alice")
        .unwrap();
    assert_eq!(alice["grants"], serde_json::json!(["team/app:delete"]));
    ok(&remote(&["public", "library/*"], ""));
    let public: Value =
        serde_json::from_str(&ok(&remote(&["public", "--list", "--json"], ""))).unwrap();
    assert_eq!(public, serde_json::json!(["library/*"]));
    ok(&remote(&["public", "--remove", "library/*"], ""));

    // A refused change says why and changes nothing.
    let out = remote(&["robot", "delete", "alice"], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a user, not a robot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = remote(
        &["user", "add", "alice", "--password-stdin"],
        "another-password",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = remote(&["user", "add", "carol", "--password-stdin"], "short");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least 8 characters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Disable, password change, delete.
    ok(&remote(
        &["user", "passwd", "alice", "--password-stdin"],
        "new-password",
    ));
    assert_eq!(
        auth("alice", "new-password").await.unwrap().status(),
        StatusCode::OK
    );
    ok(&remote(&["user", "disable", "alice"], ""));
    ok(&remote(&["robot", "delete", "ci"], ""));

    // The audit log names the administrator and the client address.
    let audit: Value = serde_json::from_str(&ok(&remote(
        &["audit", "--since", "1h", "--limit", "50", "--json"],
        "",
    )))
    .unwrap();
    let entries = audit.as_array().unwrap();
    let by_api: Vec<&Value> = entries
        .iter()
        .filter(|e| e["actor"] == "root" && e["client"] == "127.0.0.1")
        .collect();
    for action in [
        "user_add",
        "robot_add",
        "robot_rotate",
        "grant",
        "revoke",
        "public_add",
        "public_remove",
        "passwd",
        "disable",
        "account_delete",
    ] {
        assert!(
            by_api.iter().any(|e| e["action"] == action),
            "{action} missing from {audit}"
        );
    }
    assert!(by_api[0]["at"].as_str().unwrap().ends_with('Z'));

    // Without admin on *: anonymous gets 401 with a Basic challenge, a user gets 403.
    ok(&remote(
        &[
            "user",
            "add",
            "bob",
            "--password-stdin",
            "--grant",
            "team/*:pull,push,delete",
        ],
        "bob-password",
    ));
    let r = client()
        .get(format!("{}/api/v1/admin/accounts", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client()
        .post(format!("{}/api/v1/admin/users", server.base))
        .basic_auth("bob", Some("bob-password"))
        .json(&serde_json::json!({"name": "mallory", "password": "x", "grants": ["*:admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let bob = tmp.path().join("bob");
    docker_config(&bob, &reg, "bob", "bob-password");
    let out = admin(&bob, &["--registry", &reg, "user", "list"], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin on *"), "{err}");
    let list: Value = serde_json::from_str(&ok(&remote(&["user", "list", "--json"], ""))).unwrap();
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "mallory"),
        "{list}"
    );

    // GC runs: one started through the API shows in the list of runs, with its report.
    ok(&remote(&["gc", "--json"], ""));
    let r = client()
        .get(format!("{}/api/v1/admin/gc", server.base))
        .basic_auth("root", Some("root-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let runs: Value = r.json().await.unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs["runs"][0]["actor"], "root");
    assert_eq!(runs["last"]["dry_run"], false, "{runs}");

    // The dashboard's admin page: administrators only.
    let page = |user: Option<(&str, &str)>| {
        let rb = client().get(format!("{}/ui/admin", server.base));
        match user {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
        .send()
    };
    let r = page(Some(("root", "root-password"))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    for needle in [
        "Administration",
        "alice",
        "bob",
        "team/app:delete",
        "robot_rotate",
    ] {
        assert!(
            html.contains(needle),
            "{needle} missing from the admin page"
        );
    }
    let r = page(Some(("bob", "bob-password"))).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(page(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Scrub reads files: refused through the API with a pointer to where it runs.
    let out = remote(&["scrub"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scrub_interval"));
    assert!(server.terminate().success());
}
