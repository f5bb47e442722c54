//! The writer thread: the one connection that writes, committing queued writes in
//! groups so that one fsync covers many callers.
//!
//! Callers never see this module: [`SqliteStore`](super::SqliteStore)'s write helpers
//! wrap their closure with [`job`] and queue it.

use rusqlite::{Connection, TransactionBehavior};

use super::db_err;
use crate::MetaError;

/// Runs after the batch's commit, with its outcome, to answer the caller.
pub(super) type Completion = Box<dyn FnOnce(Result<(), Failure>) + Send>;
/// One caller's write, run inside the batch's transaction (or told why there is none).
pub(super) type JobFn =
    Box<dyn FnOnce(Result<&mut rusqlite::Transaction<'_>, Failure>) -> Completion + Send>;

/// Why a batch could not start or commit, told to each of its callers. Whether the disk
/// was full survives the trip, so that a commit refused for want of space is
/// [`MetaError::Full`] like any other write that is.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    message: String,
    full: bool,
}

impl Failure {
    pub(super) fn of(e: &rusqlite::Error) -> Failure {
        Failure {
            message: e.to_string(),
            full: e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
        }
    }

    fn other(message: &str) -> Failure {
        Failure {
            message: message.to_owned(),
            full: false,
        }
    }

    pub(super) fn into_error(self, context: &'static str) -> MetaError {
        let Failure { message, full } = self;
        if full {
            MetaError::Full { context, message }
        } else {
            MetaError::Database { context, message }
        }
    }
}

/// A queued write and whether its caller needs it on disk before the answer.
pub(super) struct Job {
    pub(super) run: JobFn,
    /// `false` for upload-session bookkeeping: such a write is committed without an
    /// fsync (WAL, `synchronous=NORMAL`) and becomes durable with the next durable
    /// commit. A crash may lose it, which only loses an upload session (the client
    /// starts again; start-up removes what is left on either side).
    pub(super) durable: bool,
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
pub(super) fn writer_loop(mut conn: Connection, jobs: std::sync::mpsc::Receiver<Job>) {
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
            let msg = Failure::other("the database cannot commit durably");
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
                let outcome = tx.commit().map_err(|e| Failure::of(&e));
                for d in done {
                    d(outcome.clone());
                }
            }
            Err(e) => {
                let msg = Failure::of(&e);
                for job in batch {
                    job(Err(msg.clone()))(Err(msg.clone()));
                }
            }
        }
    }
}
/// Wraps a caller's write into a job: `f` runs in its own savepoint of the batch's
/// transaction (so that its failure undoes only itself), and `answer` receives its value
/// once the batch's commit is known to have succeeded or failed.
pub(super) fn job<T, F>(f: F, answer: tokio::sync::oneshot::Sender<Result<T, MetaError>>) -> JobFn
where
    T: Send + 'static,
    F: FnOnce(&mut rusqlite::Transaction<'_>) -> Result<T, MetaError> + Send + 'static,
{
    Box::new(move |tx| -> Completion {
        let staged: Result<T, MetaError> = (|| {
            let tx = tx.map_err(|failure| failure.into_error("starting a transaction"))?;
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
        Box::new(move |outcome: Result<(), Failure>| {
            let result = staged.and_then(|value| {
                outcome
                    .map(|()| value)
                    .map_err(|failure| failure.into_error("committing"))
            });
            let _ = answer.send(result);
        })
    })
}

#[cfg(test)]
mod tests {
    use berth_oci::{Digest, RepoName, Tag};
    use bytes::Bytes;

    use crate::sqlite::{db_err, SqliteStore};
    use crate::{MetaError, MetadataStore, NewManifest, Page};

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
                        mirrored: false,
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

    #[test]
    fn a_full_database_is_told_apart_from_other_failures() {
        // `max_page_count` makes SQLite answer SQLITE_FULL exactly as a full disk does.
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA max_page_count=8; CREATE TABLE t(x BLOB);")
            .unwrap();
        let full = (0..100)
            .find_map(|_| {
                conn.execute("INSERT INTO t VALUES (zeroblob(4096))", [])
                    .err()
            })
            .unwrap();
        match db_err("filling")(full) {
            MetaError::Full { context, message } => {
                assert_eq!(context, "filling");
                assert!(message.contains("full"), "{message}");
            }
            other => panic!("expected Full, got {other:?}"),
        }
        let other = conn.execute("INSERT INTO nope VALUES (1)", []).unwrap_err();
        assert!(matches!(
            db_err("inserting")(other),
            MetaError::Database {
                context: "inserting",
                ..
            }
        ));
        // A commit's outcome keeps the distinction on its way to every caller.
        let failure = super::Failure::of(&rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        ));
        assert!(matches!(
            failure.clone().into_error("committing"),
            MetaError::Full {
                context: "committing",
                ..
            }
        ));
    }
}
