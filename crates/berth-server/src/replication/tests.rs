use std::net::{IpAddr, Ipv4Addr};

use berth_oci::{Digest, RepoName, Tag};

use super::*;
use crate::events::Actor;

fn rule(name: &str, toml_rest: &str) -> ReplicationRule {
    toml::from_str(&format!(
        "name = \"{name}\"\nurl = \"http://127.0.0.1:9\"\n{toml_rest}"
    ))
    .unwrap()
}

fn stores() -> (
    tempfile::TempDir,
    Arc<dyn AccountStore>,
    Arc<dyn MetadataStore>,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(berth_meta::sqlite::SqliteStore::open(dir.path().join("m.db")).unwrap());
    (dir, db.clone(), db)
}

fn replication(rules: &[ReplicationRule]) -> (tempfile::TempDir, Replication) {
    let (dir, accounts, meta) = stores();
    (dir, Replication::new(rules, accounts, meta, true).unwrap())
}

fn actor() -> Actor {
    Actor {
        name: "alice".into(),
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

fn moved(repo: &str, tag: &str) -> Event {
    Event::TagMoved {
        repo: RepoName::parse(repo).unwrap(),
        tag: Tag::parse(tag).unwrap(),
        digest: Digest::sha256(b"m"),
    }
}

fn keys(rows: &[ReplicationNew]) -> Vec<(String, String, ReplicationOp)> {
    rows.iter()
        .map(|r| (r.rule.clone(), r.reference.clone(), r.op))
        .collect()
}

#[test]
fn invalid_rules_are_refused_with_their_name() {
    let (_dir, accounts, meta) = stores();
    let refused = |c: ReplicationRule| {
        Replication::new(&[c], accounts.clone(), meta.clone(), true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(refused(rule("Bad Name", "")).contains("name"));
    let mut c = rule("a", "");
    c.url = "ftp://x".into();
    assert!(refused(c.clone()).contains("http:// or https://"));
    c.url = "https://registry.example.com/some/path".into();
    assert!(refused(c.clone()).contains("without a path"));
    c.url = "https://u:p@registry.example.com".into();
    let e = refused(c.clone());
    assert!(e.contains("credentials") && !e.contains("u:p"), "{e}");
    assert!(refused(rule("a", "repositories = [\"Team/*\"]")).contains("Team/*"));
    assert!(refused(rule("a", "tags = [\"v 1\"]")).contains("tag pattern"));
    assert!(refused(rule("a", "namespace = \"Up\"")).contains("namespace"));
    assert!(
        refused(rule("a", "credentials = \"env:BERTHTEST_UNSET_VARIABLE\"")).contains("not set")
    );
    assert!(refused(rule("a", "credentials = \"plain\"")).contains("env:VARIABLE or file:PATH"));
    // Without connecting (berth admin on a data directory), credentials are not read.
    Replication::new(
        &[rule("a", "credentials = \"env:BERTHTEST_UNSET_VARIABLE\"")],
        accounts.clone(),
        meta.clone(),
        false,
    )
    .unwrap();
    let two = Replication::new(&[rule("a", ""), rule("a", "")], accounts, meta, true);
    assert!(two
        .err()
        .unwrap()
        .to_string()
        .contains("two replication rules"));
    // Unknown keys are refused by the configuration parser.
    assert!(toml::from_str::<ReplicationRule>(
        "name = \"a\"\nurl = \"http://127.0.0.1:9\"\ndelete_tags = true\n"
    )
    .is_err());
}

#[test]
fn credentials_come_from_a_file_or_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds");
    std::fs::write(&path, "robot:s3cret\n").unwrap();
    let c = credentials(&format!("file:{}", path.display())).unwrap();
    assert_eq!(
        (c.username.as_str(), c.password.as_str()),
        ("robot", "s3cret")
    );
    std::fs::write(&path, "tok3n").unwrap();
    let c = credentials(&format!("file:{}", path.display())).unwrap();
    assert_eq!(
        (c.username.as_str(), c.password.as_str()),
        ("token", "tok3n")
    );
    assert!(credentials("file:/nonexistent/creds").is_err());
    // The rule's Debug output never shows where credentials are.
    let r = rule("a", &format!("credentials = \"file:{}\"", path.display()));
    assert!(!format!("{r:?}").contains("creds"));
}

#[test]
fn tag_patterns_glob() {
    assert!(glob("v*", "v1.2.3"));
    assert!(glob("*", ""));
    assert!(glob("*-release", "2024-01-release"));
    assert!(glob("v*.*", "v1.2"));
    assert!(!glob("v*.*", "v12"));
    assert!(!glob("latest", "latest2"));
    assert!(glob("a*b*c", "aXXbYYc"));
    assert!(!glob("a*b*c", "aXXbYY"));
}

#[test]
fn tag_moves_queue_copies_for_matching_rules_and_tags() {
    let (_dir, r) = replication(&[
        rule("all", ""),
        rule("team", "repositories = [\"team/*\"]\ntags = [\"v*\"]"),
    ]);
    let k = |e: &Event| keys(&r.changes(e));
    assert_eq!(
        k(&moved("team/app", "v1")),
        [
            ("all".into(), "v1".into(), ReplicationOp::Copy),
            ("team".into(), "v1".into(), ReplicationOp::Copy)
        ]
    );
    assert_eq!(k(&moved("team/app", "latest")).len(), 1);
    assert_eq!(k(&moved("other", "v1")).len(), 1);
    // A signature's cosign tag follows its subject whatever the tag patterns.
    let sig = format!("sha256-{}.sig", Digest::sha256(b"m").hex());
    assert_eq!(k(&moved("team/app", &sig)).len(), 2);
    // The referrers tag schema's tags are the client's business at the target.
    let schema = format!("sha256-{}", Digest::sha256(b"m").hex());
    assert!(k(&moved("team/app", &schema)).is_empty());
}

#[test]
fn referrers_pushed_by_digest_queue_their_digest_and_other_pushes_nothing() {
    let (_dir, r) = replication(&[rule("all", "")]);
    let pushed = |tags: Vec<Tag>, subject: Option<Digest>| Event::ManifestPushed {
        repo: RepoName::parse("app").unwrap(),
        digest: Digest::sha256(b"referrer"),
        tags,
        subject,
        forced: false,
        actor: actor(),
    };
    let rows = r.changes(&pushed(vec![], Some(Digest::sha256(b"m"))));
    assert_eq!(
        keys(&rows),
        [(
            "all".into(),
            Digest::sha256(b"referrer").to_string(),
            ReplicationOp::Copy
        )]
    );
    // Tags are queued by their TagMoved events; an index's children come with it.
    assert!(r
        .changes(&pushed(vec![Tag::parse("v1").unwrap()], None))
        .is_empty());
    assert!(r.changes(&pushed(vec![], None)).is_empty());
}

#[test]
fn deletions_are_queued_only_for_rules_that_delete() {
    let (_dir, r) = replication(&[rule("keep", ""), rule("mirror", "delete = true")]);
    let tag_deleted = Event::TagDeleted {
        repo: RepoName::parse("app").unwrap(),
        tag: Tag::parse("v1").unwrap(),
        actor: actor(),
    };
    assert_eq!(
        keys(&r.changes(&tag_deleted)),
        [("mirror".into(), "v1".into(), ReplicationOp::Delete)]
    );
    let manifest_deleted = Event::ManifestDeleted {
        repo: RepoName::parse("app").unwrap(),
        digest: Digest::sha256(b"m"),
        actor: actor(),
    };
    assert_eq!(
        keys(&r.changes(&manifest_deleted)),
        [(
            "mirror".into(),
            Digest::sha256(b"m").to_string(),
            ReplicationOp::Delete
        )]
    );
}

#[test]
fn the_namespace_prefixes_target_repositories() {
    let (_dir, r) = replication(&[rule("a", "namespace = \"backup/eu\"")]);
    let rule = r.rule("a").unwrap();
    assert_eq!(
        rule.target_repo("team/app").unwrap().as_str(),
        "backup/eu/team/app"
    );
}

#[tokio::test]
async fn the_subscriber_queues_before_the_event_returns_and_reports_lag() {
    let (_dir, r) = replication(&[rule("all", "")]);
    let r = Arc::new(r);
    let events = crate::events::Events::new(vec![Arc::new(ReplicationSubscriber(r.clone()))]);
    events.emit(moved("app", "v1")).await;
    events.emit(moved("app", "v1")).await;
    events.emit(moved("app", "v2")).await;
    let report = r.report().await.unwrap();
    assert_eq!(report.rules.len(), 1);
    let s = &report.rules[0];
    assert_eq!(
        (s.name.as_str(), s.pending, s.failing, s.dead),
        ("all", 2, 0, 0)
    );
    assert_eq!(s.url.as_deref(), Some("http://127.0.0.1:9/"));
    assert!(s.lag_seconds.is_some() && s.oldest_pending.is_some());
    assert!(report.unconfigured.is_empty() && report.failing.is_empty());
}
