//! Webhooks end to end: a receiver on 127.0.0.1 that checks every signature and
//! de-duplicates by event id; events survive a server restart in the middle of delivery;
//! filters by repository and type; aggregated pulls; the admin API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use berth_server::webhooks::{WebhookConfig, WebhookReport};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::Value;
use sha2::Sha256;

use crate::common::{TestRegistry, OCI_MANIFEST};

const SECRET: &str = "correct horse battery staple";

/// How the receiver answers.
const OK: u8 = 0;
const FAIL: u8 = 1;
/// Records the delivery, then answers 200 only after a long pause (a server stopped
/// meanwhile never learns that it was received).
const SLOW: u8 = 2;

/// What a receiver saw, per hook path.
#[derive(Default)]
struct Seen {
    /// Every accepted delivery's event id, in order, duplicates included.
    deliveries: Vec<String>,
    /// Each event once, by id.
    events: HashMap<String, Value>,
}

struct Receiver {
    url: String,
    mode: Arc<AtomicU8>,
    attempts: Arc<AtomicUsize>,
    bad_signatures: Arc<AtomicUsize>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    _task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ReceiverState {
    mode: Arc<AtomicU8>,
    attempts: Arc<AtomicUsize>,
    bad_signatures: Arc<AtomicUsize>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

async fn receive(
    State(s): State<ReceiverState>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    s.attempts.fetch_add(1, Ordering::SeqCst);
    let signature = headers
        .get("x-berth-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|hex| hex::decode(hex).ok())
        .unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    if mac.verify_slice(&signature).is_err() {
        s.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let mode = s.mode.load(Ordering::SeqCst);
    if mode == FAIL {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    assert_eq!(
        headers["content-type"],
        "application/cloudevents+json; charset=utf-8"
    );
    let event: Value = serde_json::from_slice(&body).unwrap();
    let id = event["id"].as_str().unwrap().to_owned();
    assert_eq!(headers["ce-id"], id.as_str());
    {
        let mut seen = s.seen.lock().unwrap();
        let seen = seen.entry(hook).or_default();
        seen.deliveries.push(id.clone());
        if let Some(earlier) = seen.events.get(&id) {
            assert_eq!(*earlier, event, "a repeated id carries the same event");
        }
        seen.events.insert(id, event);
    }
    if mode == SLOW {
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    StatusCode::OK
}

impl Receiver {
    async fn start() -> Receiver {
        let state = ReceiverState {
            mode: Arc::new(AtomicU8::new(OK)),
            attempts: Arc::default(),
            bad_signatures: Arc::default(),
            seen: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/{hook}", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url: format!("http://{addr}"),
            mode: state.mode,
            attempts: state.attempts,
            bad_signatures: state.bad_signatures,
            seen: state.seen,
            _task: task,
        }
    }

    fn hook(&self, name: &str) -> WebhookConfig {
        WebhookConfig {
            name: name.into(),
            url: format!("{}/{name}", self.url),
            secret: SECRET.into(),
            repositories: Default::default(),
            events: vec![],
            timeout: Some(Duration::from_secs(5)),
            // Retries at most a second apart, so that the test does not wait long.
            retry_max_interval: Some(Duration::from_secs(1)),
            give_up_after: None,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// `(type, subject)` of each distinct event `hook` received, sorted.
    fn events(&self, hook: &str) -> Vec<(String, String)> {
        let seen = self.seen.lock().unwrap();
        let mut v: Vec<(String, String)> = seen
            .get(hook)
            .map(|s| {
                s.events
                    .values()
                    .map(|e| {
                        (
                            e["type"].as_str().unwrap().to_owned(),
                            e["subject"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn deliveries(&self, hook: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.get(hook).map_or(0, |s| s.deliveries.len())
    }

    /// Waits (at most 30 s) until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&Receiver) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn report(reg: &TestRegistry) -> WebhookReport {
    let r = reg
        .req(Method::GET, "/api/v1/admin/webhooks")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Waits (at most 30 s) until no delivery is pending for any hook.
async fn drained(reg: &TestRegistry) -> WebhookReport {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = report(reg).await;
        if r.webhooks.iter().all(|h| h.pending == 0) {
            return r;
        }
        assert!(Instant::now() < deadline, "deliveries still pending: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delete_tag(reg: &TestRegistry, repo: &str, tag: &str) {
    let r = reg
        .req(Method::DELETE, &format!("/v2/{repo}/manifests/{tag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_arrives_once_per_id_across_a_restart_in_mid_delivery() {
    let receiver = Receiver::start().await;
    receiver.set(FAIL);
    let config = berth_server::Config {
        webhook: vec![receiver.hook("all")],
        webhook_source: Some("https://registry.test".into()),
        ..Default::default()
    };
    let reg = TestRegistry::start_with(config.clone()).await;
    let mut want = Vec::new();
    for (repo, tag) in [("team/app", "v1"), ("team/app", "v2"), ("other", "latest")] {
        let (_, digest) = reg.push_image(repo, tag, &format!("{repo}{tag}")).await;
        want.push((
            "dev.berth.manifest.pushed".to_owned(),
            format!("{repo}@{digest}"),
        ));
        want.push(("dev.berth.tag.moved".to_owned(), format!("{repo}:{tag}")));
    }
    delete_tag(&reg, "team/app", "v1").await;
    want.push(("dev.berth.tag.deleted".to_owned(), "team/app:v1".to_owned()));
    want.sort();

    // Every delivery fails at least once, then they are in flight, received, when the
    // server stops: it never learns they arrived.
    receiver
        .until("failed attempts", |r| {
            r.attempts.load(Ordering::SeqCst) >= 2 * want.len()
        })
        .await;
    let failing = report(&reg).await;
    assert_eq!(failing.webhooks[0].pending, want.len() as u64);
    assert!(failing.webhooks[0].failing > 0, "{failing:?}");
    assert_eq!(
        failing.webhooks[0].last_error.as_deref(),
        Some("HTTP 500 Internal Server Error")
    );
    receiver.set(SLOW);
    receiver
        .until("a delivery in flight", |r| r.deliveries("all") > 0)
        .await;
    let in_flight = receiver.deliveries("all");
    let dir = reg.stop().await.unwrap();

    receiver.set(OK);
    let reg = TestRegistry::start_in(dir.path(), config).await;
    receiver
        .until("every event", |r| r.events("all").len() >= want.len())
        .await;
    let after = drained(&reg).await;
    assert_eq!(
        receiver.events("all"),
        want,
        "each event once, none missing"
    );
    assert!(
        receiver.deliveries("all") >= want.len() + in_flight,
        "the deliveries in flight at the stop came again, with their ids"
    );
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
    let hook = &after.webhooks[0];
    assert_eq!((hook.pending, hook.dead), (0, 0));
    assert!(hook.last_success.is_some());
    let seen = receiver.seen.lock().unwrap();
    let event = seen["all"].events.values().next().unwrap();
    assert_eq!(event["source"], "https://registry.test");
    assert_eq!(event["specversion"], "1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hooks_filter_by_repository_and_event_type_and_pulls_are_aggregated() {
    let receiver = Receiver::start().await;
    let mut team = receiver.hook("team");
    team.repositories = "team/*".into();
    let mut deletions = receiver.hook("deletions");
    deletions.events = vec!["tag.deleted".into(), "dev.berth.manifest.deleted".into()];
    let mut pulls = receiver.hook("pulls");
    pulls.events = vec!["pulls".into()];
    let reg = TestRegistry::start_with(berth_server::Config {
        webhook: vec![team, deletions, pulls],
        ..Default::default()
    })
    .await;
    let (_, app) = reg.push_image("team/app", "v1", "a").await;
    let (_, other) = reg.push_image("other/x", "v1", "b").await;
    delete_tag(&reg, "other/x", "v1").await;
    for _ in 0..3 {
        let r = reg
            .req(Method::GET, "/v2/team/app/manifests/v1")
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = reg
        .req(Method::GET, &format!("/v2/other/x/manifests/{other}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        receiver.deliveries("pulls"),
        0,
        "pulls wait for their window"
    );
    reg.state.webhooks.flush_pulls().await;
    let report = drained(&reg).await;
    assert!(report
        .webhooks
        .iter()
        .all(|h| h.dead == 0 && h.failing == 0));

    let s = |t: &str, subject: String| (format!("dev.berth.{t}"), subject);
    // Every type of team/* (its pulls included), nothing of other/x.
    let mut want_team = vec![
        s("manifest.pushed", format!("team/app@{app}")),
        s("tag.moved", "team/app:v1".into()),
        s("pulls", "team/app:v1".into()),
    ];
    want_team.sort();
    assert_eq!(receiver.events("team"), want_team);
    assert_eq!(
        receiver.events("deletions"),
        [s("tag.deleted", "other/x:v1".into())]
    );
    let mut want_pulls = vec![
        s("pulls", "team/app:v1".into()),
        s("pulls", format!("other/x@{other}")),
    ];
    want_pulls.sort();
    assert_eq!(receiver.events("pulls"), want_pulls);
    let seen = receiver.seen.lock().unwrap();
    let counts: Vec<u64> = seen["pulls"]
        .events
        .values()
        .filter(|e| e["subject"] == "team/app:v1")
        .map(|e| e["data"]["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [3], "three pulls, one event");
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn admin_api_pings_redelivers_and_refuses_unknown_hooks() {
    let receiver = Receiver::start().await;
    receiver.set(FAIL);
    let mut hook = receiver.hook("ops");
    // Gives up at the first failure.
    hook.give_up_after = Some(Duration::from_millis(1));
    let reg = TestRegistry::start_with(berth_server::Config {
        webhook: vec![hook],
        ..Default::default()
    })
    .await;
    let r = reg
        .req(Method::POST, "/api/v1/admin/webhooks/ops/ping")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while report(&reg).await.webhooks[0].dead == 0 {
        assert!(Instant::now() < deadline, "the ping never died");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = report(&reg).await;
    assert_eq!((dead.webhooks[0].pending, dead.webhooks[0].dead), (0, 1));

    receiver.set(OK);
    let r = reg
        .req(Method::POST, "/api/v1/admin/webhooks/ops/redeliver")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["redelivered"], 1);
    receiver
        .until("the ping", |r| r.deliveries("ops") == 1)
        .await;
    let ping = receiver.seen.lock().unwrap()["ops"].events[&id].clone();
    assert_eq!(ping["type"], "dev.berth.ping");
    assert_eq!(ping["data"]["webhook"], "ops");
    assert_eq!(drained(&reg).await.webhooks[0].dead, 0);

    for path in [
        "/api/v1/admin/webhooks/nope/ping",
        "/api/v1/admin/webhooks/nope/redeliver",
    ] {
        let r = reg.req(Method::POST, path).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn the_webhooks_api_needs_admin_on_everything() {
    let receiver = Receiver::start().await;
    let reg = TestRegistry::start_with(berth_server::Config {
        webhook: vec![receiver.hook("ops")],
        ..Default::default()
    })
    .await;
    let admin = berth_server::accounts::Admin::open_dir(reg.data_dir(), "test").unwrap();
    let g = |s: &str| vec![s.parse().unwrap()];
    admin
        .user_add("boss", "pw-123456", &g("*:admin"))
        .await
        .unwrap();
    admin
        .user_add("teamlead", "pw-123456", &g("team/*:pull,push,delete,admin"))
        .await
        .unwrap();
    reg.state.auth.invalidate();
    let get = |user: Option<&str>| {
        let r = reg.req(Method::GET, "/api/v1/admin/webhooks");
        match user {
            Some(u) => r.basic_auth(u, Some("pw-123456")),
            None => r,
        }
    };
    assert_eq!(get(None).send().await.unwrap().status(), 401);
    assert_eq!(get(Some("teamlead")).send().await.unwrap().status(), 403);
    let r = get(Some("boss")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let report: WebhookReport = r.json().await.unwrap();
    assert_eq!(report.webhooks[0].name, "ops");
    let r = reg
        .req(Method::POST, "/api/v1/admin/webhooks/ops/ping")
        .basic_auth("teamlead", Some("pw-123456"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}
