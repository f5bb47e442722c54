//! The SQLite metadata backend: one file in the data directory, WAL mode.
//!
//! One writer connection (SQLite allows one writer at a time anyway) and a small pool
//! of reader connections; every call runs on tokio's blocking pool. Migrations are the
//! files of `migrations/sqlite/`, applied in order and tracked by `PRAGMA user_version`.
//!
//! # Layout
//! - this module: [`SqliteStore`], opening, and the read and write helpers every
//!   query goes through;
//! - `writer`: the writer thread, which commits queued writes in groups;
//! - `migrate`: the schema migrations;
//! - `registry`, `accounts`, `stats`: the [`MetadataStore`], [`AccountStore`] and
//!   [`StatsStore`] implementations, one per trait;
//! - `blobs`: blob links with the claims and tombstones that order placing bytes against
//!   deleting them, as transaction bodies for `registry`;
//! - `bases`: the stale-base report's recording and query, for `registry`;
//! - `gc`: the garbage collector's candidate queries and conditional batch writes;
//! - `quota`: quota reservations, held in memory and checked on the writer thread;
//! - `outbox`: the webhook outbox, for the [`AccountStore`] implementation;
//! - `scans`: the [`ScanStore`](crate::ScanStore) implementation (scans and their queue).
//! - `outbox`: the webhook outbox, and `replication`: the replication queue, for the
//!   [`AccountStore`] implementation.
//!
//! The trait implementations call only the helpers of this module; they never touch the
//! writer thread or the reader pool directly.
//!
//! [`MetadataStore`]: crate::MetadataStore
//! [`AccountStore`]: crate::AccountStore
//! [`StatsStore`]: crate::StatsStore

mod accounts;
mod bases;
mod blobs;
mod gate;
mod gc;
mod migrate;
mod outbox;
mod quota;
mod registry;
mod replication;
mod scans;
mod stats;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_oci::Digest;
use rusqlite::Connection;

use crate::{MetaError, Page};
use writer::Job;

/// Reader connections kept open for reuse.
const MAX_IDLE_READERS: usize = 16;

/// SQLite-backed [`MetadataStore`](crate::MetadataStore), [`AccountStore`](crate::AccountStore)
/// and [`StatsStore`](crate::StatsStore).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Write jobs for the writer thread, which owns the one writing connection.
    jobs: std::sync::mpsc::Sender<Job>,
    readers: Mutex<Vec<Connection>>,
    /// Live blob claims (see [`blobs::Claims`]), used on the writer thread only.
    claims: Arc<blobs::Claims>,
    /// Live quota reservations (see [`quota::Reservations`]), taken on the writer thread.
    reservations: Arc<quota::Reservations>,
}

/// The error of a failed SQLite call while `context`: [`MetaError::Full`] when the disk
/// is full (so that callers can free space and answer "insufficient storage"),
/// [`MetaError::Database`] otherwise.
fn db_err(context: &'static str) -> impl Fn(rusqlite::Error) -> MetaError {
    move |e| writer::Failure::of(&e).into_error(context)
}

fn now() -> i64 {
    berth_oci::time::now()
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

/// The SQL `LIMIT` of a page: `-1` (no limit) when the page sets none.
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
        migrate::migrate(&mut writer)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("berth-sqlite-writer".into())
            .spawn(move || writer::writer_loop(writer, queue))
            .map_err(|e| MetaError::Database {
                context: "starting the writer thread",
                message: e.to_string(),
            })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                jobs,
                readers: Mutex::new(Vec::new()),
                claims: Arc::default(),
                reservations: Arc::default(),
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
        let run = writer::job(f, answer);
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
