//! The PostgreSQL metadata backend, for several replicas sharing one database.
//!
//! Connections come from a `deadpool-postgres` pool over `tokio-postgres` (no TLS: the
//! database is reached over loopback or a trusted network). Migrations are the files of
//! `migrations/postgres/`, applied in order under a session advisory lock (so that two
//! replicas starting together do not race) and recorded in `schema_version`.
//!
//! Every invariant the SQLite store gets from its single writer is enforced here with
//! row and advisory locks inside each transaction, since several processes write:
//!
//! - a change of a repository's manifests, tags or references locks the repository's
//!   row (`SELECT ... FOR UPDATE`) first, so the tag policy's check and the write it
//!   allows see no concurrent change of the same repository: floating tags stay
//!   monotonic under concurrent pushes from two replicas;
//! - a change of what protects a digest's bytes (a link made or removed, a claim, a
//!   tombstone) takes a transaction advisory lock of the digest, so a collector on one
//!   replica and an upload commit on another are ordered as the crate docs require.
//!   Claims are rows of `blob_claims`, not memory: every replica must see them. Locks are
//!   taken repository first, then digests in sorted order, so transactions cannot
//!   deadlock on each other.
//!
//! Writes that can change what a cache holds send a notification (`NOTIFY`, delivered on
//! commit) naming the repository; [`PgStore::invalidate_on_change`] applies them to a
//! [`CachingStore`](crate::cache::CachingStore) of another replica.
//!
//! # Layout
//! - this module: [`PgStore`], opening, errors and the query helpers;
//! - `migrate`: the schema migrations;
//! - `registry`, `accounts`, `stats`: the trait implementations;
//! - `bases`: the stale-base report's recording and query, for `registry`;
//! - `quota`: quota reservations, decided one at a time per repository under an
//!   advisory lock, for `registry`;
//! - `outbox`: the webhook outbox's queries, leased to one replica at a time, for the
//!   [`AccountStore`](crate::AccountStore) implementation;
//! - `scans`: the [`ScanStore`](crate::ScanStore) implementation (scans and their queue);
//!   [`AccountStore`](crate::AccountStore) implementation; `replication`: the replication
//!   queue, leased the same way;
//! - `listen`: the notification listener that invalidates caches;
//! - `testing` (feature `testsuite`): a throwaway PostgreSQL cluster for tests.

mod accounts;
mod bases;
mod gate;
mod listen;
mod migrate;
mod outbox;
mod quota;
mod registry;
mod replication;
mod scans;
mod stats;

use std::time::Duration;

use berth_oci::Digest;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{NoTls, Row};

use crate::MetaError;

pub use outbox::LEASE_MS as OUTBOX_LEASE_MS;

/// Connections kept by the pool of one store.
const POOL_SIZE: usize = 16;

/// How long a caller waits for a connection (from the pool, or a new one) before the
/// database counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel of change notifications.
const CHANNEL: &str = "berth_meta";

/// PostgreSQL-backed [`MetadataStore`](crate::MetadataStore),
/// [`AccountStore`](crate::AccountStore) and [`StatsStore`](crate::StatsStore).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// Names this store in its notifications, so that it can skip its own (its cache,
    /// if any, already dropped what its writes changed).
    instance: String,
}

/// The error of a failed PostgreSQL call while `context`: [`MetaError::Unavailable`]
/// when the connection is gone or the server is shutting down or starting,
/// [`MetaError::Full`] when its disk is full, [`MetaError::Database`] otherwise.
fn pg_err(context: &'static str) -> impl Fn(tokio_postgres::Error) -> MetaError {
    move |e| classify(context, &e)
}

fn classify(context: &'static str, e: &tokio_postgres::Error) -> MetaError {
    let message = describe(e);
    match e.code() {
        Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::OUT_OF_MEMORY => {
            MetaError::Full { context, message }
        }
        Some(c)
            if c.code().starts_with("08")
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::TOO_MANY_CONNECTIONS =>
        {
            MetaError::Unavailable { context, message }
        }
        Some(_) => MetaError::Database { context, message },
        None if connection_lost(e) => MetaError::Unavailable { context, message },
        // A driver error of this process (a parameter or column of the wrong type).
        None => MetaError::Database { context, message },
    }
}

/// Whether an error without SQL state is the connection failing (closed, refused,
/// broken, timed out) rather than a mistake of the caller's.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    // The driver's own words for the kinds it does not expose (connect, I/O, timeout).
    let text = e.to_string();
    [
        "error connecting",
        "error communicating",
        "timeout",
        "connection closed",
    ]
    .iter()
    .any(|p| text.starts_with(p))
}

/// A driver error with its cause: `tokio_postgres::Error`'s own text is often only
/// "db error" or "error connecting to server".
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn pool_err(context: &'static str) -> impl Fn(deadpool_postgres::PoolError) -> MetaError {
    move |e| match e {
        deadpool_postgres::PoolError::Backend(e) => classify(context, &e),
        other => MetaError::Unavailable {
            context,
            message: other.to_string(),
        },
    }
}

fn now() -> i64 {
    berth_oci::time::now()
}

fn parse_digest(s: String) -> Result<Digest, MetaError> {
    s.parse()
        .map_err(|_| MetaError::Corrupt(format!("bad digest {s:?}")))
}

/// Column `idx` of `row`; a type mismatch is corrupt metadata, not a panic.
fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, MetaError> {
    row.try_get(idx)
        .map_err(|e| MetaError::Corrupt(format!("column {idx}: {}", describe(&e))))
}

/// Runs `sql` (prepared once per connection) and returns its rows.
async fn query<C: GenericClient>(
    c: &C,
    context: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, MetaError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_err(context))?;
    c.query(&stmt, params).await.map_err(pg_err(context))
}

/// [`query`] for at most one row.
async fn query_opt<C: GenericClient>(
    c: &C,
    context: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, MetaError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_err(context))?;
    c.query_opt(&stmt, params).await.map_err(pg_err(context))
}

/// [`query`] for exactly one row.
async fn query_one<C: GenericClient>(
    c: &C,
    context: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, MetaError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_err(context))?;
    c.query_one(&stmt, params).await.map_err(pg_err(context))
}

/// Runs a statement; the number of rows it changed.
async fn execute<C: GenericClient>(
    c: &C,
    context: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, MetaError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_err(context))?;
    c.execute(&stmt, params).await.map_err(pg_err(context))
}

/// A page's `LIMIT`: `NULL` (no limit) when the page sets none.
fn limit(n: Option<usize>) -> Option<i64> {
    n.map(|n| n.min(i64::MAX as usize) as i64)
}

impl PgStore {
    /// Connects to the database `url` names (`postgres://user:password@host:port/db`)
    /// and brings its schema up to date. Blocking (the migrations run on a thread of
    /// their own); the pool connects lazily, on the runtime of its first caller.
    pub fn open(url: &str) -> Result<PgStore, MetaError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| MetaError::Database {
            context: "parsing database_url",
            message: describe(&e),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("berth");
        }
        let for_migrations = config.clone();
        std::thread::Builder::new()
            .name("berth-pg-migrate".into())
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| MetaError::Database {
                        context: "starting the migration runtime",
                        message: e.to_string(),
                    })?
                    .block_on(migrate::migrate(&for_migrations))
            })
            .map_err(|e| MetaError::Database {
                context: "starting the migration thread",
                message: e.to_string(),
            })?
            .join()
            .map_err(|_| MetaError::Database {
                context: "migrating",
                message: "the migration thread panicked".into(),
            })??;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection that the server closed (restart, failover) is noticed by
                // the driver; `Fast` drops it on its return without a round trip.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| MetaError::Database {
                context: "building the connection pool",
                message: e.to_string(),
            })?;
        Ok(PgStore {
            pool,
            config,
            instance: instance_id(),
        })
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Object, MetaError> {
        self.pool
            .get()
            .await
            .map_err(pool_err("connecting to the database"))
    }

    /// Queues a notification that `repo`'s metadata changed, in `tx`: delivered to every
    /// listener when (and only if) the transaction commits.
    async fn notify<C: GenericClient>(&self, tx: &C, repo: &str) -> Result<(), MetaError> {
        let payload = format!("{}\t{repo}", self.instance);
        execute(
            tx,
            "notifying a change",
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &payload],
        )
        .await
        .map(|_| ())
    }
}

/// A name for this store instance, unique enough among the replicas of one database.
fn instance_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Takes the transaction advisory lock of each of `digests` (sorted, so that two
/// transactions locking overlapping sets cannot deadlock): held until commit.
async fn lock_digests<C: GenericClient>(c: &C, digests: &[String]) -> Result<(), MetaError> {
    let mut sorted: Vec<&String> = digests.iter().collect();
    sorted.sort();
    sorted.dedup();
    for d in sorted {
        // Two-key form: the first key keeps Berth's locks apart from any other user of
        // advisory locks in the same database.
        execute(
            c,
            "locking a digest",
            "SELECT pg_advisory_xact_lock(1651470952, hashtext($1))",
            &[d],
        )
        .await?;
    }
    Ok(())
}

#[cfg(any(test, feature = "testsuite"))]
pub mod testing;
