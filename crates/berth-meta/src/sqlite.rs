//! The SQLite metadata backend: one file in the data directory, WAL mode.
//!
//! One writer connection (SQLite allows one writer at a time anyway) and a small pool
//! of reader connections; every call runs on tokio's blocking pool. Migrations are the
//! files of `migrations/sqlite/`, applied in order and tracked by `PRAGMA user_version`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::time::{SystemTime, UNIX_EPOCH};

use berth_oci::{Digest, RepoName, Tag};
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::{
    Account, AccountKind, AccountStore, AuditEvent, DownloadKey, GroupBy, MetaError, MetadataStore,
    NewManifest, Page, Referrer, RepositorySummary, RequestKey, StatsStore, StoredGrant,
    StoredManifest, TagChange, TagDetail, TagGuard, TagTarget, Unlinked,
};

const MIGRATIONS: [&str; 5] = [
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_accounts.sql"),
    include_str!("../migrations/sqlite/0003_manifest_version.sql"),
    include_str!("../migrations/sqlite/0004_downloads.sql"),
    include_str!("../migrations/sqlite/0005_requests.sql"),
];
/// Reader connections kept open for reuse.
const MAX_IDLE_READERS: usize = 16;

/// SQLite-backed [`MetadataStore`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Write jobs for the writer thread, which owns the one writing connection.
    jobs: std::sync::mpsc::Sender<Job>,
    readers: Mutex<Vec<Connection>>,
}

/// Runs after the batch's commit, with its outcome, to answer the caller.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
/// One caller's write, run inside the batch's transaction (or told why there is none).
type JobFn = Box<dyn FnOnce(Result<&mut rusqlite::Transaction<'_>, String>) -> Completion + Send>;

/// A queued write and whether its caller needs it on disk before the answer.
struct Job {
    run: JobFn,
    /// `false` for upload-session bookkeeping: such a write is committed without an
    /// fsync (WAL, `synchronous=NORMAL`) and becomes durable with the next durable
    /// commit. A crash may lose it, which only loses an upload session (the client
    /// starts again; start-up removes what is left on either side).
    durable: bool,
}

/// Most writes committed together by one transaction.
const MAX_BATCH: usize = 256;

/// The writer thread: takes every write queued while the previous commit was under way
/// and commits them in one transaction (group commit), each in its own savepoint so that
/// one refused write does not undo the others. One fsync then covers the whole batch.
///
/// A batch of only non-durable jobs commits at `synchronous=NORMAL` (no fsync); any
/// durable job makes the whole batch commit at `synchronous=FULL`, which also makes
/// every earlier non-durable commit durable (the WAL is append-only).
fn writer_loop(mut conn: Connection, jobs: std::sync::mpsc::Receiver<Job>) {
    let mut synced = true;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|j| j.durable);
        if durable != synced {
            let pragma = if durable {
                "PRAGMA synchronous=FULL"
            } else {
                "PRAGMA synchronous=NORMAL"
            };
            match conn.execute_batch(pragma) {
                Ok(()) => synced = durable,
                Err(e) => tracing::warn!(error = %e, "changing the commit durability failed"),
            }
        }
        if durable && !synced {
            // Could not switch back to fsynced commits: refuse rather than acknowledge
            // a durable write that is not on disk.
            let msg = "the database cannot commit durably".to_string();
            for job in batch {
                (job.run)(Err(msg.clone()))(Err(msg.clone()));
            }
            continue;
        }
        let batch: Vec<JobFn> = batch.into_iter().map(|j| j.run).collect();
        match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(mut tx) => {
                let mut done: Vec<Completion> = Vec::with_capacity(batch.len());
                for job in batch {
                    // A panicking write must not take the writer (and every later write)
                    // down: undo its savepoint; its caller sees the write fail.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job(Ok(&mut tx))
                    })) {
                        Ok(d) => done.push(d),
                        Err(_) => {
                            tracing::error!("a metadata write panicked; it was rolled back");
                            let _ = tx.execute_batch("ROLLBACK TO job; RELEASE job");
                        }
                    }
                }
                let outcome = tx.commit().map_err(|e| e.to_string());
                for d in done {
                    d(outcome.clone());
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in batch {
                    job(Err(msg.clone()))(Err(msg.clone()));
                }
            }
        }
    }
}

fn db_err(context: &'static str) -> impl Fn(rusqlite::Error) -> MetaError {
    move |e| MetaError::Database {
        context,
        message: e.to_string(),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn open_conn(path: &Path) -> Result<Connection, MetaError> {
    let conn = Connection::open(path).map_err(db_err("opening the database"))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;",
    )
    .map_err(db_err("configuring the database"))?;
    Ok(conn)
}

fn parse_digest(s: String) -> Result<Digest, MetaError> {
    s.parse()
        .map_err(|_| MetaError::Corrupt(format!("bad digest {s:?}")))
}

fn limit(page: &Page) -> i64 {
    page.n
        .map(|n| n.min(i64::MAX as usize) as i64)
        .unwrap_or(-1)
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<SqliteStore, MetaError> {
        let path = path.into();
        let mut writer = open_conn(&path)?;
        migrate(&mut writer)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("berth-sqlite-writer".into())
            .spawn(move || writer_loop(writer, queue))
            .map_err(|e| MetaError::Database {
                context: "starting the writer thread",
                message: e.to_string(),
            })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                jobs,
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, MetaError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_conn(&inner.path)?,
            };
            let out = f(&conn);
            let mut pool = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| MetaError::Database {
            context: "running a query",
            message: e.to_string(),
        })?
    }

    /// Runs `f` in a transaction on the writer thread and returns once it is committed.
    async fn write<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Transaction<'_>) -> Result<T, MetaError> + Send + 'static,
    {
        self.write_with(true, f).await
    }

    /// A write that need not be on disk when answered (see [`Job::durable`]).
    async fn write_lazy<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Transaction<'_>) -> Result<T, MetaError> + Send + 'static,
    {
        self.write_with(false, f).await
    }

    async fn write_with<T, F>(&self, durable: bool, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Transaction<'_>) -> Result<T, MetaError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel::<Result<T, MetaError>>();
        let run: JobFn = Box::new(move |tx| -> Completion {
            let staged: Result<T, MetaError> = (|| {
                let tx = tx.map_err(|message| MetaError::Database {
                    context: "starting a transaction",
                    message,
                })?;
                tx.execute_batch("SAVEPOINT job")
                    .map_err(db_err("starting a savepoint"))?;
                match f(tx) {
                    Ok(value) => {
                        tx.execute_batch("RELEASE job")
                            .map_err(db_err("releasing a savepoint"))?;
                        Ok(value)
                    }
                    Err(e) => {
                        // Undo only this job; the rest of the batch commits.
                        let _ = tx.execute_batch("ROLLBACK TO job; RELEASE job");
                        Err(e)
                    }
                }
            })();
            Box::new(move |outcome: Result<(), String>| {
                let result = staged.and_then(|value| {
                    outcome
                        .map(|()| value)
                        .map_err(|message| MetaError::Database {
                            context: "committing",
                            message,
                        })
                });
                let _ = answer.send(result);
            })
        });
        let stopped = || MetaError::Database {
            context: "writing",
            message: "the database writer thread has stopped".into(),
        };
        self.inner
            .jobs
            .send(Job { run, durable })
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn migrate(conn: &mut Connection) -> Result<(), MetaError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err("reading the schema version"))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction().map_err(db_err("migrating"))?;
        tx.execute_batch(sql).map_err(db_err("migrating"))?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(db_err("migrating"))?;
        tx.commit().map_err(db_err("migrating"))?;
        tracing::info!(version = i + 1, "applied metadata migration");
    }
    Ok(())
}

fn repo_id(conn: &Connection, repo: &str) -> Result<Option<i64>, MetaError> {
    conn.prepare_cached("SELECT id FROM repositories WHERE name = ?1")
        .and_then(|mut s| s.query_row([repo], |r| r.get(0)).optional())
        .map_err(db_err("looking up a repository"))
}

fn ensure_repo(tx: &rusqlite::Transaction<'_>, repo: &str) -> Result<i64, MetaError> {
    if let Some(id) = repo_id(tx, repo)? {
        return Ok(id);
    }
    tx.execute(
        "INSERT INTO repositories (name, created_at) VALUES (?1, ?2)",
        params![repo, now()],
    )
    .map_err(db_err("creating a repository"))?;
    Ok(tx.last_insert_rowid())
}

/// The manifest `digest` as a tag policy sees it: its version and its tags.
fn target_of(conn: &Connection, repo_id: i64, digest: &str) -> Result<TagTarget, MetaError> {
    let version: Option<String> = conn
        .prepare_cached("SELECT version FROM manifests WHERE repo_id = ?1 AND digest = ?2")
        .and_then(|mut s| {
            s.query_row(params![repo_id, digest], |r| r.get(0))
                .optional()
        })
        .map_err(db_err("reading a tag target"))?
        .flatten();
    let tags = conn
        .prepare_cached("SELECT name FROM tags WHERE repo_id = ?1 AND digest = ?2 ORDER BY name")
        .and_then(|mut s| {
            s.query_map(params![repo_id, digest], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .map_err(db_err("reading a tag target"))?;
    Ok(TagTarget {
        digest: digest.to_owned(),
        version,
        tags,
    })
}

/// Where `tag` points now. `seen` keeps the targets read so far in one transaction: the
/// tags being changed often share a target, and reading one lists all of its tags.
fn tag_target(
    conn: &Connection,
    repo_id: i64,
    tag: &str,
    seen: &mut HashMap<String, TagTarget>,
) -> Result<Option<TagTarget>, MetaError> {
    let digest: Option<String> = conn
        .prepare_cached("SELECT digest FROM tags WHERE repo_id = ?1 AND name = ?2")
        .and_then(|mut s| s.query_row(params![repo_id, tag], |r| r.get(0)).optional())
        .map_err(db_err("reading a tag"))?;
    let Some(digest) = digest else {
        return Ok(None);
    };
    if let Some(t) = seen.get(&digest) {
        return Ok(Some(t.clone()));
    }
    let target = target_of(conn, repo_id, &digest)?;
    seen.insert(digest, target.clone());
    Ok(Some(target))
}

/// Asks `guard` about removing every tag in `tags` of `repo`.
fn check_deletions(
    conn: &Connection,
    guard: &Option<Arc<dyn TagGuard>>,
    repo: &str,
    repo_id: i64,
    tags: &[String],
) -> Result<(), MetaError> {
    let Some(g) = guard else { return Ok(()) };
    let mut seen = HashMap::new();
    for tag in tags.iter().filter(|t| g.concerns(t)) {
        let current = tag_target(conn, repo_id, tag, &mut seen)?;
        if current.is_none() {
            continue;
        }
        g.check(&TagChange {
            repo: repo.to_owned(),
            tag: tag.clone(),
            current,
            new: None,
        })
        .map_err(MetaError::TagRefused)?;
    }
    Ok(())
}

type ManifestRow = (String, String, Vec<u8>, Option<String>, Option<String>);

fn manifest_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManifestRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn stored(row: ManifestRow) -> Result<StoredManifest, MetaError> {
    Ok(StoredManifest {
        digest: parse_digest(row.0)?,
        media_type: row.1,
        content: Bytes::from(row.2),
        version: row.3,
        platform: row.4,
    })
}

#[async_trait::async_trait]
impl MetadataStore for SqliteStore {
    async fn blob_link(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            let id = ensure_repo(tx, &repo)?;
            tx.prepare_cached(
                "INSERT INTO blobs (repo_id, digest, size, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (repo_id, digest) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![id, digest, size as i64, now()]))
            .map_err(db_err("linking a blob"))?;
            Ok(())
        })
        .await
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT b.size FROM blobs b JOIN repositories r ON r.id = b.repo_id
                 WHERE r.name = ?1 AND b.digest = ?2",
            )
            .and_then(|mut s| {
                s.query_row([repo, digest], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|o| o.map(|v| v as u64))
            .map_err(db_err("looking up a blob"))
        })
        .await
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<Unlinked, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else {
                return Ok(Unlinked::NotLinked);
            };
            let users: Vec<String> = tx
                .prepare_cached(
                    "SELECT manifest FROM manifest_refs WHERE repo_id = ?1 AND target = ?2 AND kind = 0 LIMIT 5",
                )
                .and_then(|mut s| {
                    s.query_map(params![id, digest], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .map_err(db_err("checking blob references"))?;
            let removed = tx
                .execute("DELETE FROM blobs WHERE repo_id = ?1 AND digest = ?2", params![id, digest])
                .map_err(db_err("unlinking a blob"))?;
            if removed == 0 {
                return Ok(Unlinked::NotLinked);
            }
            if !users.is_empty() {
                return Err(MetaError::BlobInUse(users));
            }
            let still: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)", [&digest], |r| r.get(0))
                .map_err(db_err("checking blob links"))?;
            Ok(Unlinked::Removed { orphaned: !still })
        })
        .await
    }

    async fn blob_repositories(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<String>, MetaError> {
        let digest = digest.to_string();
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |c| {
            c.prepare_cached(
                "SELECT r.name FROM blobs b JOIN repositories r ON r.id = b.repo_id
                 WHERE b.digest = ?1 ORDER BY r.name LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![digest, limit], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()
            })
            .map_err(db_err("finding repositories of a blob"))
        })
        .await
    }

    async fn repository_summaries(&self) -> Result<Vec<RepositorySummary>, MetaError> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT r.name,
                        (SELECT count(*) FROM tags t WHERE t.repo_id = r.id),
                        (SELECT coalesce(sum(b.size), 0) FROM blobs b WHERE b.repo_id = r.id),
                        (SELECT max(m.created_at) FROM manifests m WHERE m.repo_id = r.id)
                 FROM repositories r ORDER BY r.name",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok(RepositorySummary {
                        name: r.get(0)?,
                        tags: r.get::<_, i64>(1)? as u64,
                        size: r.get::<_, i64>(2)? as u64,
                        last_push: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("summarising repositories"))
        })
        .await
    }

    async fn tag_details(&self, repo: &RepoName) -> Result<Vec<TagDetail>, MetaError> {
        let repo = repo.to_string();
        self.read(move |c| {
            let rows = c
                .prepare_cached(
                    "SELECT m.digest, m.media_type, m.content, m.version, m.platform, t.name, t.updated_at
                     FROM tags t JOIN repositories r ON r.id = t.repo_id
                     JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                     WHERE r.name = ?1 ORDER BY t.name",
                )
                .and_then(|mut s| {
                    s.query_map([repo], |r| Ok((manifest_row(r)?, r.get::<_, String>(5)?, r.get::<_, i64>(6)?)))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err("reading tags"))?;
            rows.into_iter()
                .map(|(m, tag, updated_at)| {
                    Ok(TagDetail {
                        tag,
                        manifest: stored(m)?,
                        updated_at,
                    })
                })
                .collect()
        })
        .await
    }

    async fn tags_of(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.read(move |c| match repo_id(c, &repo)? {
            Some(id) => Ok(target_of(c, id, &digest)?.tags),
            None => Ok(Vec::new()),
        })
        .await
    }

    async fn stored_bytes(&self) -> Result<(u64, u64), MetaError> {
        self.read(move |c| {
            c.query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM (SELECT max(size) AS size FROM blobs GROUP BY digest)",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(db_err("summing stored bytes"))
        })
        .await
    }

    async fn blob_linked_anywhere(&self, digest: &Digest) -> Result<bool, MetaError> {
        let digest = digest.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)",
                [digest],
                |r| r.get(0),
            )
            .map_err(db_err("checking blob links"))
        })
        .await
    }

    async fn manifest_put(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tags: &[Tag],
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<(), MetaError> {
        let repo = repo.to_string();
        let m = m.clone();
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        self.write(move |tx| {
            let id = ensure_repo(tx, &repo)?;
            let mut missing = Vec::new();
            {
                let mut has_blob = tx
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM blobs WHERE repo_id = ?1 AND digest = ?2)")
                    .map_err(db_err("checking references"))?;
                for b in &m.blobs {
                    let ok: bool = has_blob
                        .query_row(params![id, b.to_string()], |r| r.get(0))
                        .map_err(db_err("checking references"))?;
                    if !ok {
                        missing.push(b.clone());
                    }
                }
                let mut has_manifest = tx
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM manifests WHERE repo_id = ?1 AND digest = ?2)")
                    .map_err(db_err("checking references"))?;
                for c in &m.children {
                    let ok: bool = has_manifest
                        .query_row(params![id, c.to_string()], |r| r.get(0))
                        .map_err(db_err("checking references"))?;
                    if !ok {
                        missing.push(c.clone());
                    }
                }
            }
            if !missing.is_empty() {
                return Err(MetaError::MissingReferences(missing));
            }
            let digest = m.digest.to_string();
            let t = now();
            if let Some(g) = guard.as_ref().filter(|g| tags.iter().any(|t| g.concerns(t))) {
                let mut after = target_of(tx, id, &digest)?;
                after.version = m.version.clone().or(after.version);
                for name in &tags {
                    if !after.tags.contains(name) {
                        after.tags.push(name.clone());
                    }
                }
                after.tags.sort();
                let mut seen = HashMap::new();
                for name in tags.iter().filter(|t| g.concerns(t)) {
                    let current = tag_target(tx, id, name, &mut seen)?;
                    if current.as_ref().is_some_and(|c| c.digest == digest) {
                        continue;
                    }
                    g.check(&TagChange {
                        repo: repo.clone(),
                        tag: name.clone(),
                        current,
                        new: Some(after.clone()),
                    })
                    .map_err(MetaError::TagRefused)?;
                }
            }
            tx.prepare_cached(
                "INSERT INTO manifests (repo_id, digest, media_type, content, subject, artifact_type, annotations, created_at, version, platform)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (repo_id, digest) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    digest,
                    m.media_type,
                    &m.content[..],
                    m.subject.as_ref().map(|d| d.to_string()),
                    m.artifact_type,
                    m.annotations_json,
                    t,
                    m.version,
                    m.platform
                ])
            })
            .map_err(db_err("storing a manifest"))?;
            {
                let mut r = tx
                    .prepare_cached(
                        "INSERT INTO manifest_refs (repo_id, manifest, target, kind) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT DO NOTHING",
                    )
                    .map_err(db_err("storing manifest references"))?;
                for b in &m.blobs {
                    r.execute(params![id, digest, b.to_string(), 0])
                        .map_err(db_err("storing manifest references"))?;
                }
                for c in &m.children {
                    r.execute(params![id, digest, c.to_string(), 1])
                        .map_err(db_err("storing manifest references"))?;
                }
                let mut tag = tx
                    .prepare_cached(
                        "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                    )
                    .map_err(db_err("tagging"))?;
                for name in &tags {
                    tag.execute(params![id, name, digest, t]).map_err(db_err("tagging"))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT m.digest, m.media_type, m.content, m.version, m.platform FROM manifests m
                 JOIN repositories r ON r.id = m.repo_id WHERE r.name = ?1 AND m.digest = ?2",
            )
            .and_then(|mut s| s.query_row([repo, digest], manifest_row).optional())
            .map_err(db_err("reading a manifest"))?
            .map(stored)
            .transpose()
        })
        .await
    }

    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>, MetaError> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT m.digest, m.media_type, m.content, m.version, m.platform FROM tags t
                 JOIN repositories r ON r.id = t.repo_id
                 JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                 WHERE r.name = ?1 AND t.name = ?2",
            )
            .and_then(|mut s| s.query_row([repo, tag], manifest_row).optional())
            .map_err(db_err("reading a manifest"))?
            .map(stored)
            .transpose()
        })
        .await
    }

    async fn manifest_delete(
        &self,
        repo: &RepoName,
        digest: &Digest,
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else {
                return Ok(false);
            };
            let tags = target_of(tx, id, &digest)?.tags;
            check_deletions(tx, &guard, &repo, id, &tags)?;
            let n = tx
                .execute(
                    "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2",
                    params![id, digest],
                )
                .map_err(db_err("deleting a manifest"))?;
            tx.execute(
                "DELETE FROM manifest_refs WHERE repo_id = ?1 AND manifest = ?2",
                params![id, digest],
            )
            .map_err(db_err("deleting a manifest"))?;
            tx.execute(
                "DELETE FROM tags WHERE repo_id = ?1 AND digest = ?2",
                params![id, digest],
            )
            .map_err(db_err("deleting a manifest"))?;
            Ok(n > 0)
        })
        .await
    }

    async fn tag_delete(
        &self,
        repo: &RepoName,
        tag: &Tag,
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<bool, MetaError> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else {
                return Ok(false);
            };
            check_deletions(tx, &guard, &repo, id, std::slice::from_ref(&tag))?;
            let n = tx
                .execute(
                    "DELETE FROM tags WHERE repo_id = ?1 AND name = ?2",
                    params![id, tag],
                )
                .map_err(db_err("deleting a tag"))?;
            Ok(n > 0)
        })
        .await
    }

    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>, MetaError> {
        let repo = repo.to_string();
        let page = page.clone();
        self.read(move |c| {
            let Some(id) = repo_id(c, &repo)? else {
                return Ok(None);
            };
            let last = page.last.clone().unwrap_or_default();
            c.prepare_cached(
                "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(params![id, last, limit(&page)], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()
            })
            .map(Some)
            .map_err(db_err("listing tags"))
        })
        .await
    }

    async fn repositories(&self, page: &Page) -> Result<Vec<String>, MetaError> {
        let page = page.clone();
        self.read(move |c| {
            let last = page.last.clone().unwrap_or_default();
            c.prepare_cached("SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2")
                .and_then(|mut s| {
                    s.query_map(params![last, limit(&page)], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .map_err(db_err("listing repositories"))
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, MetaError> {
        let (repo, subject) = (repo.to_string(), subject.to_string());
        let artifact_type = artifact_type.map(str::to_owned);
        self.read(move |c| {
            let rows = c
                .prepare_cached(
                    "SELECT m.digest, m.media_type, length(m.content), m.artifact_type, m.annotations
                     FROM manifests m JOIN repositories r ON r.id = m.repo_id
                     WHERE r.name = ?1 AND m.subject = ?2 AND (?3 IS NULL OR m.artifact_type = ?3)
                     ORDER BY m.created_at, m.digest",
                )
                .and_then(|mut s| {
                    s.query_map(params![repo, subject, artifact_type], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, Option<String>>(4)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err("listing referrers"))?;
            rows.into_iter()
                .map(|(d, media_type, size, artifact_type, ann)| {
                    Ok(Referrer {
                        digest: parse_digest(d)?,
                        media_type,
                        size: size as u64,
                        artifact_type,
                        annotations_json: ann.unwrap_or_default(),
                    })
                })
                .collect()
        })
        .await
    }

    async fn upload_create(&self, id: &str, repo: &RepoName) -> Result<(), MetaError> {
        let (id, repo) = (id.to_owned(), repo.to_string());
        self.write_lazy(move |tx| {
            let t = now();
            tx.execute(
                "INSERT INTO uploads (id, repo, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                params![id, repo, t],
            )
            .map_err(db_err("registering an upload"))?;
            Ok(())
        })
        .await
    }

    async fn upload_touch(&self, id: &str) -> Result<Option<String>, MetaError> {
        let id = id.to_owned();
        // A read first: the common case needs no write when touched within the last second.
        let row: Option<(String, i64)> = {
            let id = id.clone();
            self.read(move |c| {
                c.prepare_cached("SELECT repo, updated_at FROM uploads WHERE id = ?1")
                    .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                    .map_err(db_err("reading an upload"))
            })
            .await?
        };
        let Some((repo, updated)) = row else {
            return Ok(None);
        };
        if now() - updated >= 1 {
            self.write_lazy(move |tx| {
                tx.execute(
                    "UPDATE uploads SET updated_at = ?2 WHERE id = ?1",
                    params![id, now()],
                )
                .map_err(db_err("touching an upload"))?;
                Ok(())
            })
            .await?;
        }
        Ok(Some(repo))
    }

    async fn upload_delete(&self, id: &str) -> Result<(), MetaError> {
        let id = id.to_owned();
        self.write_lazy(move |tx| {
            tx.execute("DELETE FROM uploads WHERE id = ?1", [id])
                .map_err(db_err("deleting an upload"))?;
            Ok(())
        })
        .await
    }

    async fn uploads_idle(&self, idle_secs: u64) -> Result<Vec<String>, MetaError> {
        let cutoff = now() - idle_secs.min(i64::MAX as u64) as i64;
        self.read(move |c| {
            c.prepare_cached("SELECT id FROM uploads WHERE updated_at <= ?1")
                .and_then(|mut s| {
                    s.query_map([cutoff], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .map_err(db_err("listing idle uploads"))
        })
        .await
    }

    async fn upload_ids(&self) -> Result<Vec<String>, MetaError> {
        self.read(move |c| {
            c.prepare_cached("SELECT id FROM uploads")
                .and_then(|mut s| {
                    s.query_map([], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .map_err(db_err("listing uploads"))
        })
        .await
    }
}

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    let kind: String = r.get(1)?;
    Ok(Account {
        name: r.get(0)?,
        kind: if kind == "robot" {
            AccountKind::Robot
        } else {
            AccountKind::User
        },
        secret_hash: r.get(2)?,
        disabled: r.get::<_, i64>(3)? != 0,
        expires_at: r.get(4)?,
        created_at: r.get(5)?,
    })
}

const ACCOUNT_COLUMNS: &str = "name, kind, secret_hash, disabled, expires_at, created_at";

#[async_trait::async_trait]
impl AccountStore for SqliteStore {
    async fn account_create(&self, account: &Account) -> Result<(), MetaError> {
        let a = account.clone();
        self.write(move |tx| {
            let n = tx
                .execute(
                    "INSERT INTO accounts (name, kind, secret_hash, disabled, expires_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
                    params![a.name, a.kind.as_str(), a.secret_hash, a.disabled as i64, a.expires_at, now()],
                )
                .map_err(db_err("creating an account"))?;
            if n == 0 {
                return Err(MetaError::Conflict(format!("account {}", a.name)));
            }
            Ok(())
        })
        .await
    }

    async fn account_get(&self, name: &str) -> Result<Option<Account>, MetaError> {
        let name = name.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?1"
            ))
            .and_then(|mut s| s.query_row([name], account_row).optional())
            .map_err(db_err("reading an account"))
        })
        .await
    }

    async fn account_list(&self) -> Result<Vec<Account>, MetaError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"
            ))
            .and_then(|mut s| s.query_map([], account_row)?.collect::<Result<Vec<_>, _>>())
            .map_err(db_err("listing accounts"))
        })
        .await
    }

    async fn account_count(&self) -> Result<u64, MetaError> {
        self.read(move |c| {
            c.query_row("SELECT count(*) FROM accounts", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(db_err("counting accounts"))
        })
        .await
    }

    async fn account_set_secret(&self, name: &str, secret_hash: &str) -> Result<bool, MetaError> {
        let (name, hash) = (name.to_owned(), secret_hash.to_owned());
        self.write(move |tx| {
            tx.execute(
                "UPDATE accounts SET secret_hash = ?2 WHERE name = ?1",
                params![name, hash],
            )
            .map(|n| n > 0)
            .map_err(db_err("changing a secret"))
        })
        .await
    }

    async fn account_set_disabled(&self, name: &str, disabled: bool) -> Result<bool, MetaError> {
        let name = name.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE accounts SET disabled = ?2 WHERE name = ?1",
                params![name, disabled as i64],
            )
            .map(|n| n > 0)
            .map_err(db_err("disabling an account"))
        })
        .await
    }

    async fn account_delete(&self, name: &str) -> Result<bool, MetaError> {
        let name = name.to_owned();
        self.write(move |tx| {
            tx.execute("DELETE FROM grants WHERE account = ?1", [&name])
                .map_err(db_err("deleting an account"))?;
            tx.execute("DELETE FROM accounts WHERE name = ?1", [&name])
                .map(|n| n > 0)
                .map_err(db_err("deleting an account"))
        })
        .await
    }

    async fn grant_set(
        &self,
        account: &str,
        pattern: &str,
        actions: &str,
    ) -> Result<bool, MetaError> {
        let (account, pattern, actions) =
            (account.to_owned(), pattern.to_owned(), actions.to_owned());
        self.write(move |tx| {
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM accounts WHERE name = ?1)",
                    [&account],
                    |r| r.get(0),
                )
                .map_err(db_err("granting"))?;
            if !exists {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO grants (account, pattern, actions) VALUES (?1, ?2, ?3)
                 ON CONFLICT (account, pattern) DO UPDATE SET actions = excluded.actions",
                params![account, pattern, actions],
            )
            .map_err(db_err("granting"))?;
            Ok(true)
        })
        .await
    }

    async fn grant_remove(&self, account: &str, pattern: &str) -> Result<bool, MetaError> {
        let (account, pattern) = (account.to_owned(), pattern.to_owned());
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM grants WHERE account = ?1 AND pattern = ?2",
                params![account, pattern],
            )
            .map(|n| n > 0)
            .map_err(db_err("revoking"))
        })
        .await
    }

    async fn grants(&self, account: &str) -> Result<Vec<StoredGrant>, MetaError> {
        let account = account.to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT pattern, actions FROM grants WHERE account = ?1 ORDER BY pattern",
            )
            .and_then(|mut s| {
                s.query_map([account], |r| {
                    Ok(StoredGrant {
                        pattern: r.get(0)?,
                        actions: r.get(1)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading grants"))
        })
        .await
    }

    async fn public_add(&self, pattern: &str) -> Result<(), MetaError> {
        let pattern = pattern.to_owned();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO public_patterns (pattern, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![pattern, now()],
            )
            .map_err(db_err("making a pattern public"))?;
            Ok(())
        })
        .await
    }

    async fn public_remove(&self, pattern: &str) -> Result<bool, MetaError> {
        let pattern = pattern.to_owned();
        self.write(move |tx| {
            tx.execute("DELETE FROM public_patterns WHERE pattern = ?1", [pattern])
                .map(|n| n > 0)
                .map_err(db_err("making a pattern private"))
        })
        .await
    }

    async fn public_patterns(&self) -> Result<Vec<String>, MetaError> {
        self.read(move |c| {
            c.prepare_cached("SELECT pattern FROM public_patterns ORDER BY pattern")
                .and_then(|mut s| {
                    s.query_map([], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .map_err(db_err("listing public patterns"))
        })
        .await
    }

    async fn audit_append(&self, event: &AuditEvent) -> Result<(), MetaError> {
        let e = event.clone();
        self.write(move |tx| {
            let at = if e.at == 0 { now() } else { e.at };
            tx.prepare_cached(
                "INSERT INTO audit (at, actor, action, target, detail, client) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| s.execute(params![at, e.actor, e.action, e.target, e.detail, e.client]))
            .map_err(db_err("writing the audit log"))?;
            Ok(())
        })
        .await
    }

    async fn audit_list(&self, since: i64, limit: usize) -> Result<Vec<AuditEvent>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |c| {
            let mut rows = c
                .prepare_cached(
                    "SELECT at, actor, action, target, detail, client FROM audit WHERE at >= ?1
                     ORDER BY id DESC LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![since, limit], |r| {
                        Ok(AuditEvent {
                            at: r.get(0)?,
                            actor: r.get(1)?,
                            action: r.get(2)?,
                            target: r.get(3)?,
                            detail: r.get(4)?,
                            client: r.get(5)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err("reading the audit log"))?;
            rows.reverse();
            Ok(rows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn manifest(content: &str, blobs: Vec<Digest>, subject: Option<Digest>) -> NewManifest {
        NewManifest {
            digest: Digest::sha256(content.as_bytes()),
            media_type: berth_oci::media_types::OCI_MANIFEST.into(),
            content: Bytes::from(content.to_owned()),
            blobs,
            children: vec![],
            subject,
            artifact_type: Some("application/x".into()),
            annotations_json: String::new(),
            version: None,
            platform: None,
        }
    }

    #[tokio::test]
    async fn manifest_requires_linked_blobs_and_tags_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(dir.path().join("meta.db")).unwrap();
        let r = repo("team/app");
        let blob = Digest::sha256(b"layer");
        let m = manifest("m1", vec![blob.clone()], None);
        let tag = Tag::parse("v1").unwrap();
        match db
            .manifest_put(&r, &m, std::slice::from_ref(&tag), None)
            .await
        {
            Err(MetaError::MissingReferences(d)) => assert_eq!(d, vec![blob.clone()]),
            other => panic!("expected missing references, got {other:?}"),
        }
        assert!(db.manifest_by_tag(&r, &tag).await.unwrap().is_none());
        db.blob_link(&r, &blob, 5).await.unwrap();
        db.manifest_put(&r, &m, std::slice::from_ref(&tag), None)
            .await
            .unwrap();
        assert_eq!(
            db.manifest_by_tag(&r, &tag).await.unwrap().unwrap().digest,
            m.digest
        );
        assert_eq!(
            db.tags(&r, &Page::default()).await.unwrap().unwrap(),
            vec!["v1"]
        );
        // The blob is in use: unlinking is refused and nothing changes.
        assert!(matches!(
            db.blob_unlink(&r, &blob).await,
            Err(MetaError::BlobInUse(_))
        ));
        assert_eq!(db.blob_size(&r, &blob).await.unwrap(), Some(5));
        assert!(db.manifest_delete(&r, &m.digest, None).await.unwrap());
        assert_eq!(
            db.tags(&r, &Page::default()).await.unwrap().unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            db.blob_unlink(&r, &blob).await.unwrap(),
            Unlinked::Removed { orphaned: true }
        );
    }

    /// Concerned with tags whose names start with `r`; records every change it is asked
    /// about and refuses those of `r-refused`.
    struct Recording(Mutex<Vec<TagChange>>);

    impl TagGuard for Recording {
        fn concerns(&self, tag: &str) -> bool {
            tag.starts_with('r')
        }

        fn check(&self, change: &TagChange) -> Result<(), String> {
            self.0.lock().unwrap().push(change.clone());
            if change.tag == "r-refused" {
                return Err("refused".into());
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn guards_see_only_the_tags_they_concern() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(dir.path().join("meta.db")).unwrap();
        let r = repo("a");
        let guard = Arc::new(Recording(Mutex::new(Vec::new())));
        let dyn_guard = || Some(guard.clone() as Arc<dyn TagGuard>);
        let tags =
            |names: &[&str]| -> Vec<Tag> { names.iter().map(|t| Tag::parse(t).unwrap()).collect() };
        let m = manifest("m", vec![], None);
        // Unconcerned tags only: the guard is not asked at all.
        db.manifest_put(&r, &m, &tags(&["x1", "x2"]), dyn_guard())
            .await
            .unwrap();
        assert!(guard.0.lock().unwrap().is_empty());
        // One concerned tag among others: asked once, with every tag of the target.
        db.manifest_put(&r, &m, &tags(&["x3", "r1"]), dyn_guard())
            .await
            .unwrap();
        {
            let asked = guard.0.lock().unwrap();
            assert_eq!(asked.len(), 1);
            assert_eq!(asked[0].tag, "r1");
            assert!(asked[0].current.is_none());
            let new = asked[0].new.as_ref().unwrap();
            assert_eq!(new.tags, ["r1", "x1", "x2", "x3"]);
        }
        // A refusal still refuses the whole request.
        let e = db
            .manifest_put(&r, &m, &tags(&["x4", "r-refused"]), dyn_guard())
            .await
            .unwrap_err();
        assert!(matches!(e, MetaError::TagRefused(_)));
        assert_eq!(
            db.tags(&r, &Page::default()).await.unwrap().unwrap().len(),
            4
        );
        guard.0.lock().unwrap().clear();
        // Deletions: unconcerned tags go without asking; a manifest's concerned tags are
        // each asked about, with the target read once.
        assert!(db
            .tag_delete(&r, &Tag::parse("x1").unwrap(), dyn_guard())
            .await
            .unwrap());
        assert!(guard.0.lock().unwrap().is_empty());
        db.manifest_put(&r, &m, &tags(&["r2"]), dyn_guard())
            .await
            .unwrap();
        guard.0.lock().unwrap().clear();
        assert!(db
            .manifest_delete(&r, &m.digest, dyn_guard())
            .await
            .unwrap());
        let asked = guard.0.lock().unwrap();
        let names: Vec<&str> = asked.iter().map(|c| c.tag.as_str()).collect();
        assert_eq!(names, ["r1", "r2"]);
        for c in asked.iter() {
            assert!(c.new.is_none());
            assert_eq!(c.current.as_ref().unwrap().tags, ["r1", "r2", "x2", "x3"]);
        }
    }

    #[tokio::test]
    async fn pagination_and_referrers_and_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(dir.path().join("meta.db")).unwrap();
        let r = repo("a");
        let base = manifest("base", vec![], None);
        let tags: Vec<Tag> = ["b", "a", "c", "B"]
            .iter()
            .map(|t| Tag::parse(t).unwrap())
            .collect();
        db.manifest_put(&r, &base, &tags, None).await.unwrap();
        let p = |last: Option<&str>, n| Page {
            last: last.map(str::to_owned),
            n,
        };
        assert_eq!(
            db.tags(&r, &p(None, None)).await.unwrap().unwrap(),
            ["B", "a", "b", "c"]
        );
        assert_eq!(
            db.tags(&r, &p(Some("a"), Some(1))).await.unwrap().unwrap(),
            ["b"]
        );
        assert_eq!(
            db.tags(&r, &p(None, Some(0))).await.unwrap().unwrap(),
            Vec::<String>::new()
        );
        assert!(db
            .tags(&repo("nope"), &p(None, None))
            .await
            .unwrap()
            .is_none());

        let sig = manifest("sig", vec![], Some(base.digest.clone()));
        db.manifest_put(&r, &sig, &[], None).await.unwrap();
        let refs = db.referrers(&r, &base.digest, None).await.unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].digest, sig.digest);
        assert!(db
            .referrers(&r, &base.digest, Some("other"))
            .await
            .unwrap()
            .is_empty());

        db.upload_create("u1", &r).await.unwrap();
        assert_eq!(db.upload_touch("u1").await.unwrap().as_deref(), Some("a"));
        assert_eq!(db.uploads_idle(0).await.unwrap(), ["u1"]);
        assert!(db.uploads_idle(3600).await.unwrap().is_empty());
        db.upload_delete("u1").await.unwrap();
        assert_eq!(db.upload_touch("u1").await.unwrap(), None);
        assert_eq!(db.repositories(&p(None, None)).await.unwrap(), ["a"]);
    }
}

#[async_trait::async_trait]
impl StatsStore for SqliteStore {
    async fn downloads_add(
        &self,
        counts: Vec<(DownloadKey, u64)>,
        bytes: Vec<(String, i64, u64)>,
    ) -> Result<(), MetaError> {
        if counts.is_empty() && bytes.is_empty() {
            return Ok(());
        }
        self.write(move |tx| {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO downloads (repo, version, platform, client, hour, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (repo, hour, version, platform, client) DO UPDATE SET count = count + excluded.count",
                )
                .map_err(db_err("recording downloads"))?;
            for (k, n) in &counts {
                add.execute(params![k.repo, k.version, k.platform, k.client, k.hour, *n as i64])
                    .map_err(db_err("recording downloads"))?;
            }
            let mut add_bytes = tx
                .prepare_cached(
                    "INSERT INTO bytes_served (repo, hour, bytes) VALUES (?1, ?2, ?3)
                     ON CONFLICT (repo, hour) DO UPDATE SET bytes = bytes + excluded.bytes",
                )
                .map_err(db_err("recording bytes served"))?;
            for (repo, hour, n) in &bytes {
                add_bytes
                    .execute(params![repo, hour, *n as i64])
                    .map_err(db_err("recording bytes served"))?;
            }
            Ok(())
        })
        .await
    }

    async fn downloads(
        &self,
        repo: &str,
        since_hour: i64,
        by: GroupBy,
    ) -> Result<Vec<(String, u64)>, MetaError> {
        let repo = repo.to_owned();
        let key = match by {
            GroupBy::Version => "version",
            GroupBy::Platform => "platform",
            GroupBy::Client => "client",
            // Days as YYYY-MM-DD (UTC).
            GroupBy::Day => "strftime('%Y-%m-%d', hour * 3600, 'unixepoch')",
        };
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {key} AS k, sum(count) FROM downloads WHERE repo = ?1 AND hour >= ?2 GROUP BY k ORDER BY k"
            ))
            .and_then(|mut s| {
                s.query_map(params![repo, since_hour], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading downloads"))
        })
        .await
    }

    async fn bytes_served(&self, repo: &str, since_hour: i64) -> Result<u64, MetaError> {
        let repo = repo.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT coalesce(sum(bytes), 0) FROM bytes_served WHERE repo = ?1 AND hour >= ?2",
                params![repo, since_hour],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db_err("reading bytes served"))
        })
        .await
    }

    async fn requests_add(&self, counts: Vec<(RequestKey, u64)>) -> Result<(), MetaError> {
        if counts.is_empty() {
            return Ok(());
        }
        self.write(move |tx| {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO requests (repo, hour, route, class, code, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (repo, hour, route, class, code) DO UPDATE SET count = count + excluded.count",
                )
                .map_err(db_err("recording requests"))?;
            for (k, n) in &counts {
                add.execute(params![k.repo, k.hour, k.route, k.class, k.code, *n as i64])
                    .map_err(db_err("recording requests"))?;
            }
            Ok(())
        })
        .await
    }

    async fn requests(
        &self,
        repo: &str,
        since_hour: i64,
    ) -> Result<Vec<(RequestKey, u64)>, MetaError> {
        let repo = repo.to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT route, class, code, sum(count) FROM requests WHERE repo = ?1 AND hour >= ?2
                 GROUP BY route, class, code ORDER BY route, class, code",
            )
            .and_then(|mut s| {
                s.query_map(params![repo, since_hour], |r| {
                    Ok((
                        RequestKey {
                            repo: repo.clone(),
                            hour: since_hour,
                            route: r.get(0)?,
                            class: r.get(1)?,
                            code: r.get(2)?,
                        },
                        r.get::<_, i64>(3)? as u64,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading requests"))
        })
        .await
    }

    async fn top_repositories(
        &self,
        since_hour: i64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |c| {
            c.prepare_cached(
                "SELECT repo, sum(count) AS n FROM downloads WHERE hour >= ?1 GROUP BY repo ORDER BY n DESC, repo LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![since_hour, limit], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading top repositories"))
        })
        .await
    }
}

#[cfg(test)]
mod group_commit_tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_refused_write_does_not_undo_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(dir.path().join("meta.db")).unwrap();
        let repo = RepoName::parse("r").unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let db = db.clone();
            let repo = repo.clone();
            tasks.push(tokio::spawn(async move {
                if i % 10 == 0 {
                    // Refused: references a blob that is not linked.
                    let m = NewManifest {
                        digest: Digest::sha256(format!("m{i}").as_bytes()),
                        media_type: berth_oci::media_types::OCI_MANIFEST.into(),
                        content: Bytes::from(format!("m{i}")),
                        blobs: vec![Digest::sha256(b"absent")],
                        children: vec![],
                        subject: None,
                        artifact_type: None,
                        annotations_json: String::new(),
                        version: None,
                        platform: None,
                    };
                    let t = Tag::parse(&format!("t{i}")).unwrap();
                    assert!(matches!(
                        db.manifest_put(&repo, &m, &[t], None).await,
                        Err(MetaError::MissingReferences(_))
                    ));
                } else {
                    db.blob_link(&repo, &Digest::sha256(&i.to_le_bytes()), i as u64)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for i in 0..200u32 {
            let size = db
                .blob_size(&repo, &Digest::sha256(&i.to_le_bytes()))
                .await
                .unwrap();
            assert_eq!(size, (i % 10 != 0).then_some(i as u64), "{i}");
        }
        assert_eq!(
            db.tags(&repo, &Page::default()).await.unwrap().unwrap(),
            Vec::<String>::new()
        );
    }

    /// Session bookkeeping (lazy commits) and durable writes interleaved from many tasks:
    /// every write lands, the connection ends in fsynced mode, and all of it is there
    /// after reopening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lazy_and_durable_writes_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let db = SqliteStore::open(&path).unwrap();
        let repo = RepoName::parse("r").unwrap();
        let mut tasks = Vec::new();
        for i in 0..100u32 {
            let (db, repo) = (db.clone(), repo.clone());
            tasks.push(tokio::spawn(async move {
                let id = format!("u{i}");
                db.upload_create(&id, &repo).await.unwrap();
                db.blob_link(&repo, &Digest::sha256(&i.to_le_bytes()), 1)
                    .await
                    .unwrap();
                if i % 2 == 0 {
                    db.upload_delete(&id).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // A last lazy write, then a durable one: the durable commit runs at FULL.
        db.upload_create("last", &repo).await.unwrap();
        db.blob_link(&repo, &Digest::sha256(b"last"), 1)
            .await
            .unwrap();
        let sync: i64 = db
            .write(|tx| {
                tx.query_row("PRAGMA synchronous", [], |r| r.get(0))
                    .map_err(db_err("reading a pragma"))
            })
            .await
            .unwrap();
        assert_eq!(sync, 2, "durable writes commit at synchronous=FULL");
        drop(db);
        let db = SqliteStore::open(&path).unwrap();
        let mut open = db.uploads_idle(0).await.unwrap();
        open.sort();
        let mut want: Vec<String> = (0..100)
            .filter(|i| i % 2 == 1)
            .map(|i| format!("u{i}"))
            .collect();
        want.push("last".into());
        want.sort();
        // uploads_idle(0) lists every session whose last touch is not in the future.
        assert_eq!(open, want);
        for i in 0..100u32 {
            assert_eq!(
                db.blob_size(&repo, &Digest::sha256(&i.to_le_bytes()))
                    .await
                    .unwrap(),
                Some(1)
            );
        }
    }
}

#[cfg(test)]
mod account_tests {
    use super::*;

    fn account(name: &str) -> Account {
        Account {
            name: name.into(),
            kind: AccountKind::User,
            secret_hash: "h".into(),
            disabled: false,
            expires_at: None,
            created_at: 0,
        }
    }

    #[tokio::test]
    async fn accounts_grants_public_audit() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(dir.path().join("meta.db")).unwrap();
        assert_eq!(db.account_count().await.unwrap(), 0);
        db.account_create(&account("alice")).await.unwrap();
        assert!(matches!(
            db.account_create(&account("alice")).await,
            Err(MetaError::Conflict(_))
        ));
        assert_eq!(db.account_count().await.unwrap(), 1);
        assert!(db.account_set_disabled("alice", true).await.unwrap());
        assert!(db.account_get("alice").await.unwrap().unwrap().disabled);
        assert!(!db.account_set_secret("nobody", "x").await.unwrap());
        assert!(db.grant_set("alice", "team/*", "pull,push").await.unwrap());
        assert!(db.grant_set("alice", "team/*", "pull").await.unwrap());
        assert!(!db.grant_set("nobody", "x", "pull").await.unwrap());
        assert_eq!(
            db.grants("alice").await.unwrap(),
            vec![StoredGrant {
                pattern: "team/*".into(),
                actions: "pull".into()
            }]
        );
        db.public_add("pub/*").await.unwrap();
        db.public_add("pub/*").await.unwrap();
        assert_eq!(db.public_patterns().await.unwrap(), ["pub/*"]);
        assert!(db.account_delete("alice").await.unwrap());
        assert!(db.grants("alice").await.unwrap().is_empty());
        for i in 0..3 {
            db.audit_append(&AuditEvent {
                actor: "a".into(),
                action: format!("e{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let log = db.audit_list(0, 2).await.unwrap();
        assert_eq!(
            log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["e1", "e2"]
        );
    }
}
