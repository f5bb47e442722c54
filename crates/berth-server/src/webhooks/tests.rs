use std::net::{IpAddr, Ipv4Addr};

use berth_meta::StoredManifest;
use berth_oci::{Digest, RepoName, Tag};
use serde_json::Value;

use super::*;
use crate::events::Actor;

fn hook(name: &str, repositories: &[&str], events: &[&str]) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url: format!("http://127.0.0.1:9/{name}"),
        secret: "s".into(),
        repositories: repositories.iter().map(|s| s.to_string()).collect(),
        events: events.iter().map(|s| s.to_string()).collect(),
        timeout: None,
        retry_max_interval: None,
        give_up_after: None,
    }
}

fn store() -> (tempfile::TempDir, Arc<dyn AccountStore>) {
    let dir = tempfile::tempdir().unwrap();
    let db = berth_meta::sqlite::SqliteStore::open(dir.path().join("m.db")).unwrap();
    (dir, Arc::new(db))
}

fn actor() -> Actor {
    Actor {
        name: "alice".into(),
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

fn pushed(repo: &str) -> Event {
    Event::ManifestPushed {
        repo: RepoName::parse(repo).unwrap(),
        digest: Digest::sha256(b"m"),
        tags: vec![Tag::parse("v1").unwrap()],
        subject: None,
        forced: false,
        actor: actor(),
    }
}

fn fetched(repo: &str, tag: Option<&str>, head: bool) -> Event {
    Event::ManifestFetched {
        head,
        repo: RepoName::parse(repo).unwrap(),
        tag: tag.map(|t| Tag::parse(t).unwrap()),
        manifest: Arc::new(StoredManifest {
            digest: Digest::sha256(b"m"),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            content: bytes::Bytes::from_static(b"m"),
            version: None,
            platform: None,
        }),
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        user_agent: "test".into(),
        account: String::new(),
    }
}

#[test]
fn invalid_hooks_are_refused_with_their_name() {
    let (_dir, store) = store();
    let refused = |c: WebhookConfig| {
        Webhooks::new(&[c], "berth://t", store.clone())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let mut c = hook("Bad Name", &[], &[]);
    assert!(refused(c.clone()).contains("name"));
    c = hook("a", &[], &["manifest.pushd"]);
    assert!(refused(c.clone()).contains("unknown event type \"manifest.pushd\""));
    c = hook("a", &["Team/*"], &[]);
    assert!(refused(c.clone()).contains("Team/*"));
    c = hook("a", &[], &[]);
    c.url = "ftp://x/".into();
    assert!(refused(c.clone()).contains("http"));
    c = hook("a", &[], &[]);
    c.secret = String::new();
    assert!(refused(c).contains("secret"));
    let twice = Webhooks::new(
        &[hook("a", &[], &[]), hook("a", &[], &[])],
        "s",
        store.clone(),
    );
    assert!(twice.err().unwrap().to_string().contains("two webhooks"));
    // Full type names are accepted as well as short ones.
    let ok = Webhooks::new(
        &[hook("a", &["team/*"], &["dev.berth.tag.moved", "pulls"])],
        "s",
        store,
    )
    .unwrap();
    assert!(ok.wanted("tag.moved", Some("team/app")));
    assert!(!ok.wanted("tag.moved", Some("other")));
    assert!(!ok.wanted("manifest.pushed", Some("team/app")));
}

#[test]
fn urls_lose_credentials_in_reports_and_logs() {
    assert_eq!(
        redact("https://user:pw@hooks.example/x?token=abc"),
        "https://hooks.example/x?..."
    );
    assert_eq!(redact("http://h/p"), "http://h/p");
    assert_eq!(redact("::"), "<invalid url>");
}

#[test]
fn events_are_described_once_for_every_reported_variant() {
    let d = describe(&pushed("team/app")).unwrap();
    assert_eq!(d.kind, "manifest.pushed");
    assert_eq!(d.repo.as_deref(), Some("team/app"));
    assert_eq!(d.subject, format!("team/app@{}", Digest::sha256(b"m")));
    assert_eq!(d.data["tags"], serde_json::json!(["v1"]));
    assert_eq!(d.data["actor"], "alice");
    let moved = describe(&Event::TagMoved {
        repo: RepoName::parse("r").unwrap(),
        tag: Tag::parse("latest").unwrap(),
        digest: Digest::sha256(b"m"),
    })
    .unwrap();
    assert_eq!(
        (moved.kind, moved.subject.as_str()),
        ("tag.moved", "r:latest")
    );
    let gc = describe(&Event::GcFinished {
        report: Arc::default(),
        actor: actor(),
    })
    .unwrap();
    assert_eq!((gc.kind, gc.repo.as_deref()), ("gc.finished", None));
    assert_eq!(gc.data["report"]["dry_run"], false);
    assert!(
        describe(&fetched("r", None, false)).is_none(),
        "pulls are counted instead"
    );
    assert!(describe(&Event::UploadStarted {
        repo: RepoName::parse("r").unwrap()
    })
    .is_none());
    let quota = describe(&Event::QuotaRefused {
        repo: RepoName::parse("team/app").unwrap(),
        used: 900,
        limit: 1000,
        attempted: 200,
    })
    .unwrap();
    assert_eq!(quota.kind, "quota.refused");
    assert_eq!(
        (
            &quota.data["used"],
            &quota.data["limit"],
            &quota.data["attempted"]
        ),
        (
            &serde_json::json!(900),
            &serde_json::json!(1000),
            &serde_json::json!(200)
        )
    );
    let expired = describe(&Event::TagExpired {
        repo: RepoName::parse("ci/app").unwrap(),
        tag: Tag::parse("sha-0123abc").unwrap(),
        rule: "ci/*".into(),
        actor: actor(),
    })
    .unwrap();
    assert_eq!(
        (expired.kind, expired.subject.as_str()),
        ("tag.deleted", "ci/app:sha-0123abc")
    );
    assert_eq!(expired.data["retention_rule"], "ci/*");
    // Every kind described is one a hook may name.
    for d in [d, moved, gc, quota, expired] {
        assert!(EVENT_TYPES.contains(&d.kind), "{}", d.kind);
    }
}

#[tokio::test]
async fn wanted_events_are_in_the_outbox_before_emit_returns() {
    let (_dir, store) = store();
    let hooks = Arc::new(
        Webhooks::new(
            &[
                hook("team", &["team/*"], &[]),
                hook("pushes", &[], &["manifest.pushed"]),
                hook("gc", &[], &["gc.finished"]),
            ],
            "berth://test",
            store.clone(),
        )
        .unwrap(),
    );
    let events = crate::events::Events::new(vec![Arc::new(WebhookSubscriber(hooks.clone()))]);
    events.emit(pushed("team/app")).await;
    events.emit(pushed("other")).await;
    events.emit(fetched("team/app", Some("v1"), false)).await;
    let due = store.outbox_due(i64::MAX, 100).await.unwrap();
    let rows: Vec<(&str, &str)> = due
        .iter()
        .map(|e| (e.hook.as_str(), e.event_type.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("team", "dev.berth.manifest.pushed"),
            ("pushes", "dev.berth.manifest.pushed"),
            ("pushes", "dev.berth.manifest.pushed"),
        ]
    );
    // One event, one id, for every hook it goes to; another event, another id.
    assert_eq!(due[0].event_id, due[1].event_id);
    assert_ne!(due[1].event_id, due[2].event_id);
    assert_eq!(due[0].body, due[1].body);
    let ce: Value = serde_json::from_str(&due[0].body).unwrap();
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["id"], due[0].event_id.as_str());
    assert_eq!(ce["source"], "berth://test");
    assert_eq!(ce["type"], "dev.berth.manifest.pushed");
    assert_eq!(ce["datacontenttype"], "application/json");
    assert_eq!(ce["data"]["repository"], "team/app");
    let time = ce["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.len() == 20, "{time}");
}

#[tokio::test]
async fn pulls_are_counted_and_written_as_one_event_per_reference() {
    let (_dir, store) = store();
    let hooks = Arc::new(
        Webhooks::new(
            &[hook("pulls", &["team/*"], &["pulls"])],
            "berth://test",
            store.clone(),
        )
        .unwrap(),
    );
    let sub = WebhookSubscriber(hooks.clone());
    for _ in 0..3 {
        sub.notice(&fetched("team/app", Some("v1"), false));
    }
    sub.notice(&fetched("team/app", None, false));
    sub.notice(&fetched("team/app", Some("v1"), true));
    sub.notice(&fetched("elsewhere", Some("v1"), false));
    assert!(
        store.outbox_due(i64::MAX, 10).await.unwrap().is_empty(),
        "nothing is written on the pull path"
    );
    hooks.flush_pulls().await;
    let due = store.outbox_due(i64::MAX, 10).await.unwrap();
    let events: Vec<Value> = due
        .iter()
        .map(|e| serde_json::from_str(&e.body).unwrap())
        .collect();
    let summary: Vec<(String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["subject"].as_str().unwrap().to_owned(),
                e["data"]["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let digest = Digest::sha256(b"m");
    let mut want = vec![
        (format!("team/app@{digest}"), 1),
        ("team/app:v1".to_owned(), 3),
    ];
    want.sort();
    let mut summary = summary;
    summary.sort();
    assert_eq!(
        summary, want,
        "HEADs and other repositories are not counted"
    );
    assert!(events.iter().all(|e| e["type"] == "dev.berth.pulls"));
    // A new window starts empty.
    hooks.flush_pulls().await;
    assert_eq!(store.outbox_due(i64::MAX, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn ping_and_redeliver_name_a_configured_hook() {
    let (_dir, store) = store();
    let hooks = Webhooks::new(
        &[
            hook("a", &["team/*"], &["manifest.pushed"]),
            hook("b", &[], &[]),
        ],
        "berth://test",
        store.clone(),
    )
    .unwrap();
    let id = hooks.ping("a", "alice").await.unwrap();
    let due = store.outbox_due(i64::MAX, 10).await.unwrap();
    assert_eq!(
        due.len(),
        1,
        "a ping goes to its hook only, whatever its filters"
    );
    assert_eq!(
        (due[0].hook.as_str(), due[0].event_id.as_str()),
        ("a", id.as_str())
    );
    assert!(matches!(
        hooks.ping("c", "alice").await,
        Err(WebhookError::Unknown(_))
    ));
    store
        .outbox_failed(due[0].id, "HTTP 500", None, 1)
        .await
        .unwrap();
    let report = hooks.report().await.unwrap();
    assert_eq!(report.webhooks.len(), 2);
    assert_eq!(report.webhooks[0].dead, 1);
    assert_eq!(report.webhooks[0].last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(
        report.webhooks[0].url.as_deref(),
        Some("http://127.0.0.1:9/a")
    );
    assert_eq!(report.webhooks[1].pending, 0);
    assert!(report.unconfigured.is_empty());
    assert_eq!(hooks.redeliver("a").await.unwrap(), 1);
    assert!(matches!(
        hooks.redeliver("z").await,
        Err(WebhookError::Unknown(_))
    ));
    assert_eq!(hooks.report().await.unwrap().webhooks[0].pending, 1);

    // A hook removed from the configuration is reported apart.
    let fewer = Webhooks::new(&[hook("b", &[], &[])], "berth://test", store).unwrap();
    let report = fewer.report().await.unwrap();
    assert_eq!(report.unconfigured.len(), 1);
    assert_eq!(report.unconfigured[0].name, "a");
    assert_eq!(report.unconfigured[0].url, None);
}
