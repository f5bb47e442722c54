//! Schema upgrades: a database written by the first schema, opened by today's store,
//! keeps its data and takes every kind of write.

use std::path::Path;

use berth_meta::sqlite::SqliteStore;
use berth_meta::{
    Account, AccountKind, AccountStore, DownloadKey, GroupBy, MetaError, MetadataStore,
    NewManifest, Page, StatsStore, TagListing, Unlinked,
};
use berth_oci::{Digest, RepoName, Tag};
use bytes::Bytes;
use rusqlite::{params, Connection};

const FIRST: &str = include_str!("../../migrations/sqlite/0001_init.sql");
const MANIFEST: &str = r#"{"schemaVersion":2,"layers":["layer"]}"#;
const SIGNATURE: &str = r#"{"schemaVersion":2,"subject":"m"}"#;

/// Number of migration files, hence the schema version after opening.
fn migrations() -> i64 {
    std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count() as i64
}

/// A database at schema version 1 with a repository holding a blob, a tagged manifest
/// referencing it, a referrer of that manifest and an upload session.
fn write_first_schema(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(FIRST).unwrap();
    conn.execute_batch("PRAGMA user_version = 1").unwrap();
    let layer = Digest::sha256(b"layer").to_string();
    let manifest = Digest::sha256(MANIFEST.as_bytes()).to_string();
    let signature = Digest::sha256(SIGNATURE.as_bytes()).to_string();
    let oci = berth_oci::media_types::OCI_MANIFEST;
    conn.execute(
        "INSERT INTO repositories (id, name, created_at) VALUES (1, 'team/app', 100), (2, 'other', 100)",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO blobs (repo_id, digest, size, created_at) VALUES (1, ?1, 5, 100)",
        [&layer],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO manifests (repo_id, digest, media_type, content, subject, artifact_type, annotations, created_at)
         VALUES (1, ?1, ?2, ?3, NULL, NULL, '', 100), (1, ?4, ?2, ?5, ?1, 'application/sig', '{\"a\":\"b\"}', 101)",
        params![manifest, oci, MANIFEST.as_bytes(), signature, SIGNATURE.as_bytes()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO manifest_refs (repo_id, manifest, target, kind) VALUES (1, ?1, ?2, 0)",
        [&manifest, &layer],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (1, 'v1', ?1, 100), (1, 'latest', ?1, 100)",
        [&manifest],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO uploads (id, repo, created_at, updated_at) VALUES ('u1', 'team/app', 100, 100)",
        [],
    )
    .unwrap();
    // Tags that cosign v2 would give artifacts of the signature (pointing, for the test,
    // at the manifest), and every lookalike name.
    for name in artifact_tag_names(&signature) {
        conn.execute(
            "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (1, ?1, ?2, 100)",
            [&name, &manifest],
        )
        .unwrap();
    }
}

/// Tags that are or look like artifact tags of `subject`: the migration must sort them
/// exactly as `berth_meta::artifact_tags` does.
fn artifact_tag_names(subject: &str) -> Vec<String> {
    let hex = subject.trim_start_matches("sha256:");
    vec![
        format!("sha256-{hex}.sig"),
        format!("sha256-{hex}.att"),
        format!("sha256-{hex}.sbom"),
        format!("sha256-{hex}"),
        format!("sha512-{hex}"),
        format!("sha256-{hex}.sig2"),
        format!("sha256-{}.sig", &hex[1..]),
        format!("sha256-{}.sig", hex.to_uppercase()),
        format!("sha256-{hex}-x"),
        format!("sha384-{hex}"),
        "sha256-abc.sig".to_owned(),
    ]
}

#[tokio::test]
async fn a_first_schema_database_upgrades_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    write_first_schema(&path);
    let db = SqliteStore::open(&path).unwrap();
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, migrations());

    // The data written by the first schema is intact.
    let app = RepoName::parse("team/app").unwrap();
    let layer = Digest::sha256(b"layer");
    let manifest = Digest::sha256(MANIFEST.as_bytes());
    assert_eq!(
        db.repositories(&Page::default()).await.unwrap(),
        ["other", "team/app"]
    );
    let signature = Digest::sha256(SIGNATURE.as_bytes());
    let mut visible: Vec<String> = artifact_tag_names(&signature.to_string())
        .into_iter()
        .filter(|t| !berth_meta::artifact_tags::is_hidden(t))
        .chain(["latest".to_owned(), "v1".to_owned()])
        .collect();
    visible.sort();
    assert_eq!(visible.len(), 8);
    assert_eq!(
        db.tags(&app, &Page::default()).await.unwrap().unwrap(),
        visible
    );
    assert_eq!(
        db.tag_list(&app, &Page::default(), TagListing::All)
            .await
            .unwrap()
            .unwrap()
            .len(),
        13
    );
    let m = db
        .manifest_by_tag(&app, &Tag::parse("v1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.digest, manifest);
    assert_eq!(m.content, MANIFEST);
    assert_eq!((m.version, m.platform), (None, None));
    assert_eq!(db.blob_size(&app, &layer).await.unwrap(), Some(5));
    let refs = db.referrers(&app, &manifest, None).await.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].digest, signature);
    assert_eq!(refs[0].artifact_type.as_deref(), Some("application/sig"));
    assert_eq!(refs[0].annotations_json, r#"{"a":"b"}"#);
    // The migration indexed the cosign v2 tags: the manifest they point at is a referrer
    // of the digest they name, listed once for its three tags.
    let legacy = db.referrers(&app, &signature, None).await.unwrap();
    assert_eq!(
        legacy.iter().map(|r| &r.digest).collect::<Vec<_>>(),
        [&manifest]
    );
    assert_eq!(
        db.upload_touch("u1").await.unwrap().as_deref(),
        Some("team/app")
    );
    // Its references still hold: the layer is in use.
    assert!(matches!(
        db.blob_unlink(&app, &layer).await,
        Err(MetaError::BlobInUse(_))
    ));

    // And it takes writes that need the later migrations.
    let config = Digest::sha256(b"config");
    let claim = db.blob_claim(&config).await.unwrap();
    db.blob_link_claimed(&claim, &app, 2, None).await.unwrap();
    let v2 = NewManifest {
        digest: Digest::sha256(b"v2"),
        media_type: berth_oci::media_types::OCI_MANIFEST.into(),
        content: Bytes::from_static(b"v2"),
        blobs: vec![layer.clone(), config.clone()],
        children: vec![],
        subject: None,
        artifact_type: None,
        annotations_json: String::new(),
        version: Some("2.0".into()),
        platform: Some("linux/amd64".into()),
        mirrored: false,
    };
    db.manifest_put(&app, &v2, &[Tag::parse("v1").unwrap()], None)
        .await
        .unwrap();
    let m = db
        .manifest_by_tag(&app, &Tag::parse("v1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.version.as_deref(), Some("2.0"));
    assert_eq!(m.platform.as_deref(), Some("linux/amd64"));
    assert!(db.manifest_delete(&app, &manifest, None).await.unwrap());
    assert!(db.manifest_delete(&app, &v2.digest, None).await.unwrap());
    assert_eq!(
        db.blob_unlink(&app, &layer).await.unwrap(),
        Unlinked::Removed { orphaned: true }
    );
    db.blob_deletion_done(&layer).await.unwrap();
    db.account_create(&Account {
        name: "alice".into(),
        kind: AccountKind::User,
        secret_hash: "h".into(),
        disabled: false,
        expires_at: None,
        created_at: 0,
    })
    .await
    .unwrap();
    assert_eq!(db.account_count().await.unwrap(), 1);
    let key = DownloadKey {
        repo: "team/app".into(),
        version: "2.0".into(),
        platform: "linux/amd64".into(),
        client: "docker".into(),
        hour: 10,
        ..DownloadKey::default()
    };
    db.downloads_add(vec![(key, 3)], vec![]).await.unwrap();
    assert_eq!(
        db.downloads("team/app", 0, GroupBy::Version).await.unwrap(),
        [("2.0".to_owned(), 3)]
    );
}

/// Downloads counted before fetch kinds existed: an `index-only` row (an index fetched
/// with no platform pull after it) becomes an inspection, the others stay downloads.
#[tokio::test]
async fn index_only_downloads_become_inspections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    {
        let conn = Connection::open(&path).unwrap();
        for sql in [
            FIRST,
            include_str!("../../migrations/sqlite/0002_accounts.sql"),
            include_str!("../../migrations/sqlite/0003_manifest_version.sql"),
            include_str!("../../migrations/sqlite/0004_downloads.sql"),
            include_str!("../../migrations/sqlite/0005_requests.sql"),
            include_str!("../../migrations/sqlite/0006_blob_lifecycle.sql"),
        ] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch("PRAGMA user_version = 6").unwrap();
        conn.execute(
            "INSERT INTO downloads (repo, version, platform, client, hour, count) VALUES
             ('team/app', '1.0', 'index-only', 'berth', 10, 4),
             ('team/app', '1.0', 'linux/amd64', 'docker', 10, 3)",
            [],
        )
        .unwrap();
    }
    let db = SqliteStore::open(&path).unwrap();
    assert_eq!(
        db.downloads("team/app", 0, GroupBy::Platform)
            .await
            .unwrap(),
        [("linux/amd64".to_owned(), 3)]
    );
    assert_eq!(
        db.inspections("team/app", 0, GroupBy::Platform)
            .await
            .unwrap(),
        [("index".to_owned(), 4)]
    );
    assert_eq!(
        db.downloads_by_account("team/app", 0).await.unwrap(),
        [(String::new(), "1.0".to_owned(), 3)]
    );
    assert_eq!(
        db.top_repositories(0, 10).await.unwrap(),
        [("team/app".to_owned(), 3)]
    );
}
