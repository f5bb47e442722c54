//! Operator safety under hostile load and faults: `/metrics` once accounts exist, login
//! timing, an audit log that a password flood cannot turn into an fsync flood, a
//! registry that had accounts never starting open, and a metadata database removed
//! under a running server.

use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_server::accounts::Admin;
use reqwest::{Method, StatusCode};

use crate::common::{TestRegistry, OCI_MANIFEST};

const PW: &str = "password-123";

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

async fn add_users(reg: &TestRegistry) -> Admin {
    let admin = Admin::open_dir(reg.data_dir(), "test").unwrap();
    admin
        .user_add("boss", PW, &["*:admin".parse().unwrap()])
        .await
        .unwrap();
    admin
        .user_add("alice", PW, &["team/*:pull".parse().unwrap()])
        .await
        .unwrap();
    admin
}

#[tokio::test]
async fn metrics_need_credentials_from_loopback_once_accounts_exist() {
    let reg = TestRegistry::start().await;
    let get = |auth: Option<String>| {
        let mut rb = reg.req(Method::GET, "/metrics");
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        async move { rb.send().await.unwrap().status() }
    };
    assert_eq!(
        get(None).await,
        StatusCode::OK,
        "open while no account exists"
    );
    add_users(&reg).await;
    reg.state.auth.invalidate();
    assert_eq!(get(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(Some(basic("alice", PW))).await,
        StatusCode::FORBIDDEN,
        "pull rights are not enough"
    );
    assert_eq!(get(Some(basic("boss", PW))).await, StatusCode::OK);

    let open = TestRegistry::start_with(berth_server::Config {
        metrics_open: true,
        ..Default::default()
    })
    .await;
    add_users(&open).await;
    let r = open.req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "metrics_open lets loopback in");
}

/// The time of one `/token` login as `user` with a wrong password.
async fn time_login(reg: &TestRegistry, user: &str) -> Duration {
    let t = Instant::now();
    let r = reg
        .req(Method::GET, "/token?service=berth")
        .header("authorization", basic(user, "not-the-password"))
        .send()
        .await
        .unwrap();
    let elapsed = t.elapsed();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{user}");
    elapsed
}

#[tokio::test]
async fn login_timing_does_not_tell_which_names_exist() {
    let reg = TestRegistry::start().await;
    let admin = add_users(&reg).await;
    admin
        .user_add("gone", PW, &["team/*:pull".parse().unwrap()])
        .await
        .unwrap();
    admin.set_disabled("gone", true).await.unwrap();
    admin
        .robot_create("ci", &["team/*:pull".parse().unwrap()], None)
        .await
        .unwrap();
    reg.state.auth.invalidate();
    let users = ["alice", "nobody-at-all", "gone", "ci"];
    // Warm up (the dummy hash is made on first use), then measure in rounds, so that
    // the load of other tests weighs on every name alike.
    time_login(&reg, "nobody").await;
    let mut times = vec![Vec::new(); users.len()];
    for _ in 0..5 {
        for (i, user) in users.iter().enumerate() {
            times[i].push(time_login(&reg, user).await);
        }
    }
    let medians: Vec<Duration> = times
        .iter_mut()
        .map(|t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    let known = medians[0];
    for (user, t) in users.iter().zip(&medians).skip(1) {
        assert!(
            *t * 2 >= known,
            "{user}: {t:?} against {known:?} for a real user with a wrong password ({medians:?})"
        );
    }
}

#[tokio::test]
async fn a_password_flood_writes_few_audit_rows() {
    let reg = TestRegistry::start().await;
    let admin = add_users(&reg).await;
    reg.state.auth.invalidate();
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let r = reg
            .req(Method::GET, "/token?service=berth")
            .header("authorization", basic("alice", "guess"))
            .send()
            .await
            .unwrap();
        *statuses.entry(r.status().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&401), Some(&10), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&190), "{statuses:?}");
    let rows: Vec<_> = admin
        .audit_log(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == "alice" && e.action.starts_with("login"))
        .collect();
    // Ten failures and the first refusal; the other 189 refusals become one row when
    // the window ends.
    assert_eq!(rows.len(), 11, "{rows:?}");
    assert_eq!(
        rows.iter()
            .filter(|e| e.action == "login_rate_limited")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_registry_that_had_accounts_refuses_to_start_open() {
    let reg = TestRegistry::start().await;
    add_users(&reg).await;
    let marker = reg.data_dir().join(berth_server::accounts::MARKER);
    assert!(marker.exists(), "berth admin records that accounts exist");
    // The server writes the marker itself when it sees accounts (a registry from before
    // the marker existed).
    std::fs::remove_file(&marker).unwrap();
    let dir = reg.stop().await.unwrap();
    let reg = TestRegistry::start_in(dir.path(), berth_server::Config::default()).await;
    // Answered once start-up is done.
    reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert!(marker.exists(), "the server wrote the marker at start");
    reg.stop().await;

    // The accounts are lost (the database deleted): no open start. The stopped server's
    // store closes its SQLite connection on its own thread once the last reference goes;
    // deleting the files under an open connection made the next open fail with a disk
    // I/O error, so wait until this process holds none of them.
    let db = dir.path().join("metadata.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open_here(&db) {
        assert!(
            std::time::Instant::now() < deadline,
            "the stopped server still holds {}",
            db.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("metadata.db{suffix}")));
    }
    let config = berth_server::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    let start = || async {
        let state = berth_server::build_state(&config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            berth_server::run(listener, state, std::future::ready(())),
        )
        .await
        .unwrap()
    };
    let err = start().await.unwrap_err().to_string();
    assert!(
        err.contains("had accounts") && err.contains("berth admin user add"),
        "{err}"
    );
    assert!(err.contains(&marker.display().to_string()), "{err}");

    // Deleting the marker is the deliberate way back to an open registry.
    std::fs::remove_file(&marker).unwrap();
    start().await.unwrap();
}

#[tokio::test]
async fn a_running_server_with_lost_accounts_is_closed_not_open() {
    let reg = TestRegistry::start().await;
    reg.push_image("team/app", "v1", "x").await;
    let admin = add_users(&reg).await;
    admin.delete("alice").await.unwrap();
    admin.delete("boss").await.unwrap();
    reg.state.auth.invalidate();
    let r = reg
        .req(Method::GET, "/v2/team/app/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .req(
            Method::GET,
            "/token?service=berth&scope=repository:team/app:push",
        )
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let r = reg
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "an anonymous token grants nothing"
    );
}

#[tokio::test]
async fn removing_the_metadata_database_refuses_later_pushes() {
    let reg = TestRegistry::start().await;
    let (manifest, _) = reg.push_image("team/app", "v1", "before").await;
    let r = reg
        .req(Method::GET, "/v2/team/app/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    std::fs::remove_file(reg.data_dir().join("metadata.db")).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let r = reg
            .req(Method::POST, "/v2/team/app/blobs/uploads/")
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = refused.text().await.unwrap();
    assert!(
        body.contains("UNAVAILABLE") && body.contains("metadata database file was removed"),
        "{body}"
    );
    let r = reg
        .put_manifest("team/app", "v2", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = reg
        .req(Method::DELETE, "/v2/team/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Reads are not refused: what the caches still hold is served.
    let r = reg
        .req(Method::GET, "/v2/team/app/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Whether this process has `path` (or its `-wal`/`-shm` files) open.
fn open_here(path: &std::path::Path) -> bool {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    let path = path.to_string_lossy();
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().starts_with(&*path))
    })
}
