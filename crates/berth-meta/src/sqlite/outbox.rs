//! The webhook outbox on SQLite: deliveries still to make (`webhook_outbox`) and the
//! last outcome of each hook (`webhook_hooks`), for the [`AccountStore`] outbox methods,
//! which call these. Adding is a durable write; the outcome of an attempt is not (a
//! success lost to a crash is delivered again, which at-least-once delivery allows).
//!
//! [`AccountStore`]: crate::AccountStore

use rusqlite::params;

use super::{db_err, SqliteStore};
use crate::{MetaError, OutboxEntry, OutboxNew, OutboxStatus};

const ENTRY_COLUMNS: &str =
    "id, hook, event_id, event_type, body, since, attempts, next_attempt, last_error, dead";

fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: r.get(0)?,
        hook: r.get(1)?,
        event_id: r.get(2)?,
        event_type: r.get(3)?,
        body: r.get(4)?,
        since_ms: r.get(5)?,
        attempts: u32::try_from(r.get::<_, i64>(6)?).unwrap_or(u32::MAX),
        next_attempt_ms: r.get(7)?,
        last_error: r.get(8)?,
        dead: r.get::<_, i64>(9)? != 0,
    })
}

impl SqliteStore {
    pub(super) async fn outbox_insert(
        &self,
        entries: &[OutboxNew],
        now_ms: i64,
    ) -> Result<(), MetaError> {
        if entries.is_empty() {
            return Ok(());
        }
        let entries = entries.to_vec();
        self.write(move |tx| {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO webhook_outbox (hook, event_id, event_type, body, since, next_attempt)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                )
                .map_err(db_err("adding webhook deliveries"))?;
            for e in &entries {
                add.execute(params![e.hook, e.event_id, e.event_type, e.body, now_ms])
                    .map_err(db_err("adding webhook deliveries"))?;
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn outbox_list_due(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM webhook_outbox WHERE dead = 0 AND next_attempt <= ?1
                 ORDER BY next_attempt, id LIMIT ?2"
            ))
            .and_then(|mut s| {
                s.query_map(params![now_ms, limit], entry_row)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading due webhook deliveries"))
        })
        .await
    }

    pub(super) async fn outbox_done(&self, id: i64, at_ms: i64) -> Result<bool, MetaError> {
        self.write_lazy(move |tx| {
            let hook: Option<String> = tx
                .query_row(
                    "DELETE FROM webhook_outbox WHERE id = ?1 RETURNING hook",
                    [id],
                    |r| r.get(0),
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })
                .map_err(db_err("ending a webhook delivery"))?;
            let Some(hook) = hook else {
                return Ok(false);
            };
            tx.prepare_cached(
                "INSERT INTO webhook_hooks (hook, last_success) VALUES (?1, ?2)
                 ON CONFLICT (hook) DO UPDATE SET last_success = excluded.last_success",
            )
            .and_then(|mut s| s.execute(params![hook, at_ms]))
            .map_err(db_err("recording a webhook success"))?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn outbox_attempt_failed(
        &self,
        id: i64,
        error: &str,
        retry_at_ms: Option<i64>,
        at_ms: i64,
    ) -> Result<bool, MetaError> {
        let error = error.to_owned();
        self.write_lazy(move |tx| {
            let hook: Option<String> = tx
                .query_row(
                    "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?2,
                       next_attempt = coalesce(?3, next_attempt), dead = (?3 IS NULL)
                     WHERE id = ?1 RETURNING hook",
                    params![id, error, retry_at_ms],
                    |r| r.get(0),
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })
                .map_err(db_err("recording a failed webhook delivery"))?;
            let Some(hook) = hook else {
                return Ok(false);
            };
            tx.prepare_cached(
                "INSERT INTO webhook_hooks (hook, last_failure, last_error) VALUES (?1, ?2, ?3)
                 ON CONFLICT (hook) DO UPDATE SET last_failure = excluded.last_failure,
                   last_error = excluded.last_error",
            )
            .and_then(|mut s| s.execute(params![hook, at_ms, error]))
            .map_err(db_err("recording a webhook failure"))?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn outbox_hooks(&self) -> Result<Vec<OutboxStatus>, MetaError> {
        self.read(move |c| {
            c.prepare_cached(
                "WITH counts AS (
                   SELECT hook,
                          sum(dead = 0) AS pending,
                          sum(dead = 0 AND attempts > 0) AS failing,
                          sum(dead) AS dead,
                          min(CASE WHEN dead = 0 THEN since END) AS oldest
                   FROM webhook_outbox GROUP BY hook),
                 names AS (SELECT hook FROM counts UNION SELECT hook FROM webhook_hooks)
                 SELECT n.hook, coalesce(c.pending, 0), coalesce(c.failing, 0), coalesce(c.dead, 0),
                        c.oldest, h.last_success, h.last_failure, h.last_error
                 FROM names n LEFT JOIN counts c ON c.hook = n.hook
                 LEFT JOIN webhook_hooks h ON h.hook = n.hook
                 ORDER BY n.hook",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok(OutboxStatus {
                        hook: r.get(0)?,
                        pending: r.get::<_, i64>(1)? as u64,
                        failing: r.get::<_, i64>(2)? as u64,
                        dead: r.get::<_, i64>(3)? as u64,
                        oldest_pending_ms: r.get(4)?,
                        last_success_ms: r.get(5)?,
                        last_failure_ms: r.get(6)?,
                        last_error: r.get(7)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading webhook status"))
        })
        .await
    }

    pub(super) async fn outbox_retry_all(&self, hook: &str, now_ms: i64) -> Result<u64, MetaError> {
        let hook = hook.to_owned();
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE webhook_outbox SET dead = 0, attempts = 0, since = ?2, next_attempt = ?2
                 WHERE hook = ?1",
            )
            .and_then(|mut s| s.execute(params![hook, now_ms]))
            .map(|n| n as u64)
            .map_err(db_err("redelivering webhook deliveries"))
        })
        .await
    }
}
