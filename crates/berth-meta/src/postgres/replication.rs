//! The replication queue on PostgreSQL: changes still to replicate (`replication_queue`)
//! and what each rule achieved (`replication_rules`), for the [`AccountStore`]
//! replication methods, which call these.
//!
//! Several replicas work one queue, and one copy should run per row: claiming due rows
//! is therefore a lease, as for the webhook outbox. [`PgStore::replication_due`] picks
//! rows with `FOR UPDATE SKIP LOCKED` and marks them with this store's instance name and
//! a lease end; the other replicas leave them alone until then, the holder itself still
//! gets them (so one replica behaves as the SQLite store). An outcome ends the lease. A
//! replica that dies holding a lease delays its rows by at most the lease; a copy slower
//! than its lease may run twice at once, which only repeats writes the target already
//! has (manifests are written with their exact bytes, blobs by digest).
//!
//! [`AccountStore`]: crate::AccountStore

use tokio_postgres::Row;

use super::{execute, get, query, query_one, PgStore};
use crate::{MetaError, ReplicationNew, ReplicationOp, ReplicationStatus, ReplicationTask};

const TASK_COLUMNS: &str =
    "id, rule, repo, reference, op, seq, created_at, attempts, next_attempt, last_error, dead";

fn task(r: &Row) -> Result<ReplicationTask, MetaError> {
    let attempts: i32 = get(r, 7)?;
    Ok(ReplicationTask {
        id: get(r, 0)?,
        rule: get(r, 1)?,
        repo: get(r, 2)?,
        reference: get(r, 3)?,
        op: ReplicationOp::parse(&get::<String>(r, 4)?)?,
        seq: get(r, 5)?,
        created_ms: get(r, 6)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| MetaError::Corrupt(format!("replication attempts {attempts}")))?,
        next_attempt_ms: get(r, 8)?,
        last_error: get(r, 9)?,
        dead: get(r, 10)?,
    })
}

impl PgStore {
    pub(super) async fn replication_insert(
        &self,
        new: &[ReplicationNew],
        now_ms: i64,
    ) -> Result<(), MetaError> {
        if new.is_empty() {
            return Ok(());
        }
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(super::pg_err("queueing replications"))?;
        for t in new {
            // The lease stays: a copy in flight at a replica is followed by the newer
            // change once its outcome (of an older seq) is recorded.
            execute(
                &tx,
                "queueing replications",
                "INSERT INTO replication_queue (rule, repo, reference, op, created_at, next_attempt)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (rule, repo, reference) DO UPDATE SET
                   op = excluded.op, seq = replication_queue.seq + 1, attempts = 0,
                   next_attempt = excluded.next_attempt,
                   created_at = CASE WHEN replication_queue.dead THEN excluded.created_at
                                     ELSE replication_queue.created_at END,
                   dead = FALSE",
                &[&t.rule, &t.repo, &t.reference, &t.op.as_str(), &now_ms],
            )
            .await?;
        }
        tx.commit()
            .await
            .map_err(super::pg_err("queueing replications"))
    }

    pub(super) async fn replication_due(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<ReplicationTask>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let lease_end = now_ms.saturating_add(lease_ms);
        let c = self.client().await?;
        let mut due = query(
            &c,
            "claiming due replications",
            &format!(
                "WITH due AS (
                   SELECT id FROM replication_queue
                   WHERE NOT dead AND next_attempt <= $1
                     AND (leased_by IS NULL OR leased_by = $3 OR leased_until <= $1)
                   ORDER BY next_attempt, id LIMIT $2
                   FOR UPDATE SKIP LOCKED)
                 UPDATE replication_queue q SET leased_by = $3, leased_until = $4
                 FROM due WHERE q.id = due.id
                 RETURNING {}",
                TASK_COLUMNS
                    .split(", ")
                    .map(|c| format!("q.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[&now_ms, &limit, &self.instance, &lease_end],
        )
        .await?
        .iter()
        .map(task)
        .collect::<Result<Vec<_>, _>>()?;
        // `RETURNING` keeps no order.
        due.sort_by_key(|t| (t.next_attempt_ms, t.id));
        Ok(due)
    }

    pub(super) async fn replication_success(
        &self,
        id: i64,
        seq: i64,
        at_ms: i64,
    ) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let row = query_one(
            &c,
            "ending a replication",
            "WITH hit AS (SELECT rule FROM replication_queue WHERE id = $1),
             gone AS (DELETE FROM replication_queue WHERE id = $1 AND seq = $2 RETURNING id),
             released AS (
               UPDATE replication_queue SET leased_by = NULL, leased_until = NULL
               WHERE id = $1 AND seq <> $2),
             recorded AS (
               INSERT INTO replication_rules (rule, copied, last_success)
               SELECT rule, 1, $3 FROM hit
               ON CONFLICT (rule) DO UPDATE
               SET copied = replication_rules.copied + 1,
                   last_success = GREATEST(replication_rules.last_success, excluded.last_success))
             SELECT count(*) FROM gone",
            &[&id, &seq, &at_ms],
        )
        .await?;
        Ok(get::<i64>(&row, 0)? > 0)
    }

    pub(super) async fn replication_failure(
        &self,
        id: i64,
        seq: i64,
        error: &str,
        retry_at_ms: Option<i64>,
        at_ms: i64,
    ) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let row = query_one(
            &c,
            "recording a failed replication",
            "WITH hit AS (
               UPDATE replication_queue SET
                 attempts = CASE WHEN seq = $2 THEN attempts + 1 ELSE attempts END,
                 last_error = $3::text,
                 next_attempt = CASE WHEN seq = $2 THEN coalesce($4::bigint, next_attempt)
                                     ELSE next_attempt END,
                 dead = CASE WHEN seq = $2 THEN ($4::bigint IS NULL) ELSE dead END,
                 leased_by = NULL, leased_until = NULL
               WHERE id = $1 RETURNING rule),
             recorded AS (
               INSERT INTO replication_rules (rule, failures, last_failure, last_error)
               SELECT rule, 1, $5, $3::text FROM hit
               ON CONFLICT (rule) DO UPDATE
               SET failures = replication_rules.failures + 1,
                   last_failure = GREATEST(replication_rules.last_failure, excluded.last_failure),
                   last_error = CASE WHEN replication_rules.last_failure IS NULL
                                       OR replication_rules.last_failure <= excluded.last_failure
                                     THEN excluded.last_error
                                     ELSE replication_rules.last_error END)
             SELECT count(*) FROM hit",
            &[&id, &seq, &error, &retry_at_ms, &at_ms],
        )
        .await?;
        Ok(get::<i64>(&row, 0)? > 0)
    }

    pub(super) async fn replication_rules(&self) -> Result<Vec<ReplicationStatus>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "reading replication status",
            "WITH counts AS (
               SELECT rule,
                      count(*) FILTER (WHERE NOT dead) AS pending,
                      count(*) FILTER (WHERE NOT dead AND attempts > 0) AS failing,
                      count(*) FILTER (WHERE dead) AS dead,
                      min(created_at) FILTER (WHERE NOT dead) AS oldest
               FROM replication_queue GROUP BY rule),
             names AS (SELECT rule FROM counts UNION SELECT rule FROM replication_rules)
             SELECT n.rule, coalesce(c.pending, 0), coalesce(c.failing, 0), coalesce(c.dead, 0),
                    c.oldest, coalesce(r.copied, 0), coalesce(r.failures, 0),
                    r.last_success, r.last_failure, r.last_error
             FROM names n LEFT JOIN counts c ON c.rule = n.rule
             LEFT JOIN replication_rules r ON r.rule = n.rule
             ORDER BY n.rule",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(ReplicationStatus {
                rule: get(r, 0)?,
                pending: get::<i64>(r, 1)? as u64,
                failing: get::<i64>(r, 2)? as u64,
                dead: get::<i64>(r, 3)? as u64,
                oldest_pending_ms: get(r, 4)?,
                copied: get::<i64>(r, 5)? as u64,
                failures: get::<i64>(r, 6)? as u64,
                last_success_ms: get(r, 7)?,
                last_failure_ms: get(r, 8)?,
                last_error: get(r, 9)?,
            })
        })
        .collect()
    }

    pub(super) async fn replication_failing_rows(
        &self,
        limit: usize,
    ) -> Result<Vec<ReplicationTask>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let c = self.client().await?;
        query(
            &c,
            "reading failing replications",
            &format!(
                "SELECT {TASK_COLUMNS} FROM replication_queue
                 WHERE attempts > 0 OR dead ORDER BY id DESC LIMIT $1"
            ),
            &[&limit],
        )
        .await?
        .iter()
        .map(task)
        .collect()
    }
}
