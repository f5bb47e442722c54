//! The replication queue on SQLite: changes still to replicate (`replication_queue`)
//! and what each rule achieved (`replication_rules`), for the [`AccountStore`]
//! replication methods, which call these. Queueing is a durable write; the outcome of
//! an attempt is not (a success lost to a crash is replicated again and finds the
//! target holding it). One process writes a SQLite database (the data directory's
//! lock), so a claim needs no lease here: the worker never runs a row twice at once.
//!
//! [`AccountStore`]: crate::AccountStore

use rusqlite::{params, OptionalExtension};

use super::{db_err, SqliteStore};
use crate::{MetaError, ReplicationNew, ReplicationOp, ReplicationStatus, ReplicationTask};

const TASK_COLUMNS: &str =
    "id, rule, repo, reference, op, seq, created_at, attempts, next_attempt, last_error, dead";

fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ReplicationTask, String)> {
    Ok((
        ReplicationTask {
            id: r.get(0)?,
            rule: r.get(1)?,
            repo: r.get(2)?,
            reference: r.get(3)?,
            op: ReplicationOp::Copy,
            seq: r.get(5)?,
            created_ms: r.get(6)?,
            attempts: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(u32::MAX),
            next_attempt_ms: r.get(8)?,
            last_error: r.get(9)?,
            dead: r.get::<_, i64>(10)? != 0,
        },
        r.get(4)?,
    ))
}

/// The rows with their stored operation parsed.
fn tasks(rows: Vec<(ReplicationTask, String)>) -> Result<Vec<ReplicationTask>, MetaError> {
    rows.into_iter()
        .map(|(mut t, op)| {
            t.op = ReplicationOp::parse(&op)?;
            Ok(t)
        })
        .collect()
}

impl SqliteStore {
    pub(super) async fn replication_insert(
        &self,
        new: &[ReplicationNew],
        now_ms: i64,
    ) -> Result<(), MetaError> {
        if new.is_empty() {
            return Ok(());
        }
        let new = new.to_vec();
        self.write(move |tx| {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO replication_queue (rule, repo, reference, op, created_at, next_attempt)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                     ON CONFLICT (rule, repo, reference) DO UPDATE SET
                       op = excluded.op, seq = seq + 1, attempts = 0,
                       next_attempt = excluded.next_attempt,
                       created_at = CASE WHEN dead = 1 THEN excluded.created_at ELSE created_at END,
                       dead = 0",
                )
                .map_err(db_err("queueing replications"))?;
            for t in &new {
                add.execute(params![t.rule, t.repo, t.reference, t.op.as_str(), now_ms])
                    .map_err(db_err("queueing replications"))?;
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn replication_due(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<ReplicationTask>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = self
            .read(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM replication_queue
                     WHERE dead = 0 AND next_attempt <= ?1
                     ORDER BY next_attempt, id LIMIT ?2"
                ))
                .and_then(|mut s| {
                    s.query_map(params![now_ms, limit], task_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err("reading due replications"))
            })
            .await?;
        tasks(rows)
    }

    pub(super) async fn replication_success(
        &self,
        id: i64,
        seq: i64,
        at_ms: i64,
    ) -> Result<bool, MetaError> {
        self.write_lazy(move |tx| {
            let rule: Option<String> = tx
                .query_row(
                    "SELECT rule FROM replication_queue WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err("ending a replication"))?;
            let Some(rule) = rule else {
                return Ok(false);
            };
            let deleted = tx
                .execute(
                    "DELETE FROM replication_queue WHERE id = ?1 AND seq = ?2",
                    params![id, seq],
                )
                .map_err(db_err("ending a replication"))?;
            tx.prepare_cached(
                "INSERT INTO replication_rules (rule, copied, last_success) VALUES (?1, 1, ?2)
                 ON CONFLICT (rule) DO UPDATE SET copied = copied + 1,
                   last_success = excluded.last_success",
            )
            .and_then(|mut s| s.execute(params![rule, at_ms]))
            .map_err(db_err("recording a replication"))?;
            Ok(deleted > 0)
        })
        .await
    }

    pub(super) async fn replication_failure(
        &self,
        id: i64,
        seq: i64,
        error: &str,
        retry_at_ms: Option<i64>,
        at_ms: i64,
    ) -> Result<bool, MetaError> {
        let error = error.to_owned();
        self.write_lazy(move |tx| {
            // A superseded row keeps its fresh state (due at once, no attempt counted):
            // the newer change is what the next attempt replicates.
            let rule: Option<String> = tx
                .query_row(
                    "UPDATE replication_queue SET
                       attempts = CASE WHEN seq = ?2 THEN attempts + 1 ELSE attempts END,
                       last_error = ?3,
                       next_attempt = CASE WHEN seq = ?2 THEN coalesce(?4, next_attempt)
                                           ELSE next_attempt END,
                       dead = CASE WHEN seq = ?2 THEN (?4 IS NULL) ELSE dead END
                     WHERE id = ?1 RETURNING rule",
                    params![id, seq, error, retry_at_ms],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err("recording a failed replication"))?;
            let Some(rule) = rule else {
                return Ok(false);
            };
            tx.prepare_cached(
                "INSERT INTO replication_rules (rule, failures, last_failure, last_error)
                 VALUES (?1, 1, ?2, ?3)
                 ON CONFLICT (rule) DO UPDATE SET failures = failures + 1,
                   last_failure = excluded.last_failure, last_error = excluded.last_error",
            )
            .and_then(|mut s| s.execute(params![rule, at_ms, error]))
            .map_err(db_err("recording a replication failure"))?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn replication_rules(&self) -> Result<Vec<ReplicationStatus>, MetaError> {
        self.read(move |c| {
            c.prepare_cached(
                "WITH counts AS (
                   SELECT rule,
                          sum(dead = 0) AS pending,
                          sum(dead = 0 AND attempts > 0) AS failing,
                          sum(dead) AS dead,
                          min(CASE WHEN dead = 0 THEN created_at END) AS oldest
                   FROM replication_queue GROUP BY rule),
                 names AS (SELECT rule FROM counts UNION SELECT rule FROM replication_rules)
                 SELECT n.rule, coalesce(c.pending, 0), coalesce(c.failing, 0),
                        coalesce(c.dead, 0), c.oldest, coalesce(r.copied, 0),
                        coalesce(r.failures, 0), r.last_success, r.last_failure, r.last_error
                 FROM names n LEFT JOIN counts c ON c.rule = n.rule
                 LEFT JOIN replication_rules r ON r.rule = n.rule
                 ORDER BY n.rule",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok(ReplicationStatus {
                        rule: r.get(0)?,
                        pending: r.get::<_, i64>(1)? as u64,
                        failing: r.get::<_, i64>(2)? as u64,
                        dead: r.get::<_, i64>(3)? as u64,
                        oldest_pending_ms: r.get(4)?,
                        copied: r.get::<_, i64>(5)? as u64,
                        failures: r.get::<_, i64>(6)? as u64,
                        last_success_ms: r.get(7)?,
                        last_failure_ms: r.get(8)?,
                        last_error: r.get(9)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading replication status"))
        })
        .await
    }

    pub(super) async fn replication_failing_rows(
        &self,
        limit: usize,
    ) -> Result<Vec<ReplicationTask>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = self
            .read(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM replication_queue
                     WHERE attempts > 0 OR dead = 1 ORDER BY id DESC LIMIT ?1"
                ))
                .and_then(|mut s| {
                    s.query_map(params![limit], task_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err("reading failing replications"))
            })
            .await?;
        tasks(rows)
    }
}
