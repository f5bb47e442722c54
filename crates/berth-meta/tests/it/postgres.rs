//! PostgreSQL: the conformance suite (plain and behind the cache), and what only
//! several replicas sharing one database can show: floating tags stay monotonic under
//! concurrent pushes through two stores, counter flushes from two stores add up, a
//! write through one store clears the other's cache, quota reservations through two
//! stores never grant more than the limit, pulls recorded by two stores keep
//! the latest time, two stores reading the webhook outbox at once never get the same
//! delivery, and an outage of the database is a clean, passing error.
//!
//! Each test gets a fresh database of one throwaway cluster
//! (`berth_meta::postgres::testing`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_meta::cache::CachingStore;
use berth_meta::postgres::{testing, PgStore};
use berth_meta::{
    AccountStore, DownloadKey, GroupBy, MetaError, MetadataStore, NewManifest, OutboxNew,
    QuotaReservation, Reserved, ReservedKind, StatsStore, TagChange, TagGuard,
};
use berth_oci::{Digest, RepoName, Tag};
use bytes::Bytes;

async fn fresh_pg() -> Option<((), PgStore)> {
    let url = testing::fresh_url()?;
    Some(((), PgStore::open(&url).unwrap()))
}

mod suite {
    use super::*;

    async fn fresh_meta() -> Option<((), Arc<dyn MetadataStore>)> {
        let (keep, db) = fresh_pg().await?;
        Some((keep, Arc::new(db)))
    }

    berth_meta::metadata_store_suite!(fresh_meta);
    berth_meta::account_store_suite!(fresh_pg);
    berth_meta::stats_store_suite!(fresh_pg);
    berth_meta::scan_store_suite!(fresh_pg);
}

mod cached {
    use super::*;

    async fn fresh_meta() -> Option<((), Arc<dyn MetadataStore>)> {
        let (keep, db) = fresh_pg().await?;
        let cache = Arc::new(CachingStore::new(
            Arc::new(db.clone()),
            1 << 20,
            Duration::from_secs(60),
        ));
        db.invalidate_on_change(&cache).unwrap();
        Some((keep, cache))
    }

    berth_meta::metadata_store_suite!(fresh_meta);
}

fn repo() -> RepoName {
    RepoName::parse("team/app").unwrap()
}

fn manifest(version: u32) -> NewManifest {
    let content = format!(r#"{{"schemaVersion":2,"v":{version}}}"#);
    NewManifest {
        digest: Digest::sha256(content.as_bytes()),
        media_type: berth_oci::media_types::OCI_MANIFEST.into(),
        content: Bytes::from(content),
        blobs: vec![],
        children: vec![],
        subject: None,
        artifact_type: None,
        annotations_json: String::new(),
        version: Some(version.to_string()),
        platform: None,
        mirrored: false,
    }
}

/// The floating-tag rule in its simplest form: `latest` only ever moves to a higher
/// version.
struct Monotonic;

impl TagGuard for Monotonic {
    fn check(&self, change: &TagChange) -> Result<(), String> {
        let version = |t: &Option<berth_meta::TagTarget>| {
            t.as_ref()
                .and_then(|t| t.version.as_deref())
                .and_then(|v| v.parse::<u32>().ok())
        };
        match (version(&change.current), version(&change.new)) {
            (Some(cur), Some(new)) if new < cur => {
                Err(format!("latest is at {cur}; {new} is older"))
            }
            _ => Ok(()),
        }
    }

    fn concerns(&self, tag: &str) -> bool {
        tag == "latest"
    }
}

/// Two replicas commit blobs into one repository under a quota at once, each reserving
/// before it links and releasing after: exactly as many blobs are granted as the limit
/// holds, every granted one is stored, and the repository never holds more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_reservations_from_two_stores_never_exceed_the_limit() {
    let Some(url) = testing::fresh_url() else {
        return;
    };
    let a = Arc::new(PgStore::open(&url).unwrap());
    let b = Arc::new(PgStore::open(&url).unwrap());
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let r = QuotaReservation {
                id: format!("upload-{i}"),
                repo: repo(),
                kind: ReservedKind::Blob,
                digest: Digest::sha256(format!("blob {i}").as_bytes()),
                bytes: 10,
            };
            match store.quota_reserve(&r, 105).await.unwrap() {
                Reserved::Granted => {
                    store.blob_link(&r.repo, &r.digest, r.bytes).await.unwrap();
                    store.quota_release(&r.id).await.unwrap();
                    true
                }
                Reserved::Refused { used } => {
                    assert!(used + 10 > 105, "refused at {used}");
                    false
                }
            }
        }));
    }
    let mut granted = 0;
    for t in tasks {
        if t.await.unwrap() {
            granted += 1;
        }
    }
    let used = a.repository_usage(Some(&repo())).await.unwrap()[0].bytes();
    assert_eq!(granted, 10, "105 bytes hold ten blobs of 10");
    assert_eq!(used, 100, "every granted blob is stored, and no other");
}

/// Two replicas push versions in scrambled order, each with `latest`: every push is
/// either stored with its tags or refused whole, and `latest` ends on the highest
/// version, as if the pushes had run one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floating_tags_stay_monotonic_across_two_stores() {
    let Some(url) = testing::fresh_url() else {
        return;
    };
    let a = Arc::new(PgStore::open(&url).unwrap());
    let b = Arc::new(PgStore::open(&url).unwrap());
    let guard: Arc<dyn TagGuard> = Arc::new(Monotonic);
    // A fixed scramble of 1..=40, so that later pushes often carry lower versions.
    let versions: Vec<u32> = (0..40u32).map(|i| (i * 17) % 40 + 1).collect();
    let mut tasks = Vec::new();
    for (i, v) in versions.iter().copied().enumerate() {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let guard = guard.clone();
        tasks.push(tokio::spawn(async move {
            let tags = [
                Tag::parse(&format!("v{v}")).unwrap(),
                Tag::parse("latest").unwrap(),
            ];
            let outcome = store
                .manifest_put(&repo(), &manifest(v), &tags, Some(guard))
                .await;
            (v, outcome)
        }));
    }
    let mut stored = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (v, Ok(())) => stored.push(v),
            (_, Err(MetaError::TagRefused(_))) => {}
            (v, Err(e)) => panic!("push of {v} failed: {e}"),
        }
    }
    let latest = a
        .manifest_by_tag(&repo(), &Tag::parse("latest").unwrap())
        .await
        .unwrap()
        .unwrap();
    let highest = stored.iter().max().copied().unwrap();
    assert_eq!(highest, 40, "the highest version is never refused");
    assert_eq!(latest.version.as_deref(), Some("40"));
    // A refused push left nothing: exactly the stored versions have their tag.
    for v in 1..=40 {
        let tag = Tag::parse(&format!("v{v}")).unwrap();
        let found = b.manifest_by_tag(&repo(), &tag).await.unwrap().is_some();
        assert_eq!(found, stored.contains(&v), "v{v}");
    }
}

/// Two replicas flush counters of the same keys at the same time: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counter_flushes_from_two_stores_add_up() {
    let Some(url) = testing::fresh_url() else {
        return;
    };
    let a = Arc::new(PgStore::open(&url).unwrap());
    let b = Arc::new(PgStore::open(&url).unwrap());
    let key = |platform: &str| DownloadKey {
        repo: "team/app".into(),
        version: "1.0".into(),
        platform: platform.into(),
        client: "docker".into(),
        hour: 490_000,
        ..DownloadKey::default()
    };
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        // Both keys in each flush, in either order: the store sorts them, so two
        // flushes never wait on each other's rows crosswise.
        let mut counts = vec![(key("linux/amd64"), 1), (key("linux/arm64"), 2)];
        if i % 3 == 0 {
            counts.reverse();
        }
        tasks.push(tokio::spawn(async move {
            store
                .downloads_add(counts, vec![("team/app".into(), 490_000, 10)])
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        a.downloads("team/app", 0, GroupBy::Platform).await.unwrap(),
        vec![("linux/amd64".into(), 40), ("linux/arm64".into(), 80)]
    );
    assert_eq!(b.bytes_served("team/app", 0).await.unwrap(), 400);
}

/// Two replicas record pulls of the same manifests at the same time, with their times
/// in any order: each manifest keeps the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_from_two_stores_keep_the_latest_time() {
    let Some(url) = testing::fresh_url() else {
        return;
    };
    let a = Arc::new(PgStore::open(&url).unwrap());
    let b = Arc::new(PgStore::open(&url).unwrap());
    let one = Digest::sha256(b"one");
    let two = Digest::sha256(b"two");
    let mut tasks = Vec::new();
    for i in 0..40i64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        // Times rise and fall across the flushes; the largest given is 1_000 + 39 * 7.
        let at = 1_000 + (i * 7) % 40 * 7;
        let mut pulls = vec![
            ("team/app".to_owned(), one.clone(), at),
            ("team/app".to_owned(), two.clone(), at - 500),
        ];
        if i % 3 == 0 {
            pulls.reverse();
        }
        tasks.push(tokio::spawn(async move { store.pulls_add(pulls).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let latest = 1_000 + 39 * 7;
    let mut want = vec![(one, latest), (two, latest - 500)];
    // In digest order, as the store lists them.
    want.sort_by_key(|(d, _)| d.to_string());
    assert_eq!(a.last_pulls("team/app").await.unwrap(), want);
}

fn delivery(n: usize) -> OutboxNew {
    OutboxNew {
        hook: "ci".into(),
        event_id: format!("e{n}"),
        event_type: "dev.berth.test".into(),
        body: format!("{{\"n\":{n}}}"),
    }
}

/// Two replicas read the due deliveries at the same moment: each delivery goes to one
/// of them. The other replica gets a delivery once its holder reports a failure (the
/// retry may go anywhere) or once the lease ends (the holder died); the holder itself
/// always sees its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_never_read_the_same_due_delivery() {
    let Some(url) = testing::fresh_url() else {
        return;
    };
    let a = Arc::new(PgStore::open(&url).unwrap());
    let b = Arc::new(PgStore::open(&url).unwrap());
    let added: Vec<OutboxNew> = (0..20).map(delivery).collect();
    a.outbox_add(&added, 1_000).await.unwrap();

    let (got_a, got_b) = {
        let (a, b) = (a.clone(), b.clone());
        tokio::join!(
            tokio::spawn(async move { a.outbox_due(1_000, 15).await }),
            tokio::spawn(async move { b.outbox_due(1_000, 15).await })
        )
    };
    let (got_a, got_b) = (got_a.unwrap().unwrap(), got_b.unwrap().unwrap());
    let ids_a: std::collections::BTreeSet<i64> = got_a.iter().map(|e| e.id).collect();
    let ids_b: std::collections::BTreeSet<i64> = got_b.iter().map(|e| e.id).collect();
    assert!(ids_a.is_disjoint(&ids_b), "{ids_a:?} and {ids_b:?} overlap");
    assert_eq!(
        ids_a.len() + ids_b.len(),
        20,
        "every due delivery went somewhere"
    );

    // Within the lease each replica sees only its own, however often it asks.
    let again_a: Vec<i64> = a
        .outbox_due(2_000, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(again_a, ids_a.iter().copied().collect::<Vec<_>>());
    let (held, holder, other) = if ids_a.is_empty() {
        (ids_b.clone(), b.clone(), a.clone())
    } else {
        (ids_a.clone(), a.clone(), b.clone())
    };
    let first = *held.iter().next().unwrap();
    assert!(!other
        .outbox_due(2_000, 100)
        .await
        .unwrap()
        .iter()
        .any(|e| held.contains(&e.id)));

    // A failure ends the holder's lease: the retry is due for anyone.
    assert!(holder
        .outbox_failed(first, "HTTP 503", Some(3_000), 2_500)
        .await
        .unwrap());
    let retried = other.outbox_due(3_000, 100).await.unwrap();
    assert!(retried.iter().any(|e| e.id == first && e.attempts == 1));

    // The holder stops reporting: once the lease it last renewed (reading at 2_000)
    // ends, the other replica takes the rest.
    let after = 2_000 + berth_meta::postgres::OUTBOX_LEASE_MS;
    let taken: std::collections::BTreeSet<i64> = other
        .outbox_due(after, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(taken.len(), 20);
    assert!(holder.outbox_due(after, 100).await.unwrap().is_empty());
}

/// Replica B caches a tag; replica A moves it; B's cache lets go of the old target on
/// A's notification, long before the cache's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_through_one_store_clears_the_other_stores_cache() {
    let Some(url) = testing::fresh_url() else {
        return;
    };
    let a = PgStore::open(&url).unwrap();
    let b = PgStore::open(&url).unwrap();
    let cache = Arc::new(CachingStore::new(
        Arc::new(b.clone()),
        1 << 20,
        Duration::from_secs(3600),
    ));
    b.invalidate_on_change(&cache).unwrap();
    let latest = Tag::parse("latest").unwrap();
    a.manifest_put(&repo(), &manifest(1), std::slice::from_ref(&latest), None)
        .await
        .unwrap();
    let seen = cache.manifest_by_tag(&repo(), &latest).await.unwrap();
    assert_eq!(seen.unwrap().version.as_deref(), Some("1"));
    // The listener connects in the background: wait until it clears the cache on a
    // change, pushing new versions until one is seen.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut v = 1;
    loop {
        v += 1;
        a.manifest_put(&repo(), &manifest(v), std::slice::from_ref(&latest), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = cache.manifest_by_tag(&repo(), &latest).await.unwrap();
        if now.unwrap().version == Some(v.to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "B's cache never saw A's write");
    }
    // Once listening, every move is seen promptly.
    for _ in 0..3 {
        v += 1;
        a.manifest_put(&repo(), &manifest(v), std::slice::from_ref(&latest), None)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = cache.manifest_by_tag(&repo(), &latest).await.unwrap();
            if now.unwrap().version == Some(v.to_string()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "version {v} not seen through B's cache"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The database stops (connections cut) and comes back: meanwhile calls fail with
/// [`MetaError::Unavailable`], quickly; afterwards the pool reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_is_unavailable_and_passes() {
    // A cluster of its own: stopping the shared one would fail every other test.
    let Some(cluster) = testing::Cluster::start_new() else {
        return;
    };
    let db = PgStore::open(&cluster.fresh_database()).unwrap();
    let latest = Tag::parse("latest").unwrap();
    db.manifest_put(&repo(), &manifest(1), std::slice::from_ref(&latest), None)
        .await
        .unwrap();
    db.ping().await.unwrap();
    cluster.stop();
    let started = Instant::now();
    match db.ping().await {
        Err(MetaError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    match db
        .manifest_put(&repo(), &manifest(2), std::slice::from_ref(&latest), None)
        .await
    {
        Err(MetaError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "an outage must fail fast, took {:?}",
        started.elapsed()
    );
    cluster.start();
    db.ping().await.unwrap();
    db.manifest_put(&repo(), &manifest(2), std::slice::from_ref(&latest), None)
        .await
        .unwrap();
    let now = db.manifest_by_tag(&repo(), &latest).await.unwrap().unwrap();
    assert_eq!(now.version.as_deref(), Some("2"));
}
