//! The webhook outbox on PostgreSQL: deliveries still to make (`webhook_outbox`) and the
//! last outcome of each hook (`webhook_hooks`), for the [`AccountStore`] outbox methods,
//! which call these.
//!
//! Several replicas read the same outbox. Delivery is at least once, but two replicas
//! should not send the same row at the same moment: reading due rows is therefore also
//! a lease. [`PgStore::outbox_list_due`] picks the rows with `FOR UPDATE SKIP LOCKED`
//! (a row another replica is picking right now is skipped, not waited for) and marks
//! them with this store's instance name and a lease end [`LEASE_MS`] after the caller's
//! `now_ms`. Until then the other replicas leave them out of their due rows; the holder
//! itself still gets them (so one replica behaves exactly as the SQLite store). The
//! outcome of an attempt ends the lease: a success deletes the row, a failure clears
//! it, so the retry may go to any replica. A replica that dies holding a lease delays
//! those rows by at most [`LEASE_MS`], after which any replica takes them, and a batch
//! slower than the lease may be sent twice: both within at-least-once.
//!
//! The lease is hidden state: [`OutboxEntry::next_attempt_ms`] stays the time the
//! attempt was due, as on SQLite.
//!
//! A hook's last success and last failure keep the latest time reported (replicas may
//! report out of order), with the error of that failure. Each method is one statement.
//!
//! [`AccountStore`]: crate::AccountStore

use tokio_postgres::Row;

use super::{execute, get, pg_err, query, query_one, PgStore};
use crate::{MetaError, OutboxEntry, OutboxNew, OutboxStatus};

/// How long, in milliseconds, the other replicas leave rows read as due to the replica
/// that read them: longer than a batch of attempts usually takes (64 rows, 8 at a time,
/// each bounded by its hook's timeout, 10 seconds by default), short enough that the
/// rows of a replica that died are soon delivered by another.
pub const LEASE_MS: i64 = 120_000;

const ENTRY_COLUMNS: &str =
    "id, hook, event_id, event_type, body, since, attempts, next_attempt, last_error, dead";

fn entry(r: &Row) -> Result<OutboxEntry, MetaError> {
    let attempts: i32 = get(r, 6)?;
    Ok(OutboxEntry {
        id: get(r, 0)?,
        hook: get(r, 1)?,
        event_id: get(r, 2)?,
        event_type: get(r, 3)?,
        body: get(r, 4)?,
        since_ms: get(r, 5)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| MetaError::Corrupt(format!("webhook delivery attempts {attempts}")))?,
        next_attempt_ms: get(r, 7)?,
        last_error: get(r, 8)?,
        dead: get(r, 9)?,
    })
}

impl PgStore {
    pub(super) async fn outbox_insert(
        &self,
        entries: &[OutboxNew],
        now_ms: i64,
    ) -> Result<(), MetaError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(pg_err("adding webhook deliveries"))?;
        for e in entries {
            execute(
                &tx,
                "adding webhook deliveries",
                "INSERT INTO webhook_outbox (hook, event_id, event_type, body, since, next_attempt)
                 VALUES ($1, $2, $3, $4, $5, $5)",
                &[&e.hook, &e.event_id, &e.event_type, &e.body, &now_ms],
            )
            .await?;
        }
        tx.commit()
            .await
            .map_err(pg_err("adding webhook deliveries"))
    }

    pub(super) async fn outbox_list_due(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let lease_end = now_ms.saturating_add(LEASE_MS);
        let c = self.client().await?;
        let mut due = query(
            &c,
            "reading due webhook deliveries",
            &format!(
                "WITH due AS (
                   SELECT id FROM webhook_outbox
                   WHERE NOT dead AND next_attempt <= $1
                     AND (leased_by IS NULL OR leased_by = $3 OR leased_until <= $1)
                   ORDER BY next_attempt, id LIMIT $2
                   FOR UPDATE SKIP LOCKED)
                 UPDATE webhook_outbox o SET leased_by = $3, leased_until = $4
                 FROM due WHERE o.id = due.id
                 RETURNING {}",
                qualified("o")
            ),
            &[&now_ms, &limit, &self.instance, &lease_end],
        )
        .await?
        .iter()
        .map(entry)
        .collect::<Result<Vec<_>, _>>()?;
        // `RETURNING` keeps no order.
        due.sort_by_key(|e| (e.next_attempt_ms, e.id));
        Ok(due)
    }

    pub(super) async fn outbox_done(&self, id: i64, at_ms: i64) -> Result<bool, MetaError> {
        let c = self.client().await?;
        // Both changes in one statement: the hook's row is written only when the
        // delivery was still there.
        let row = query_one(
            &c,
            "ending a webhook delivery",
            "WITH gone AS (DELETE FROM webhook_outbox WHERE id = $1 RETURNING hook),
             recorded AS (
               INSERT INTO webhook_hooks (hook, last_success) SELECT hook, $2 FROM gone
               ON CONFLICT (hook) DO UPDATE
               SET last_success = GREATEST(webhook_hooks.last_success, excluded.last_success))
             SELECT count(*) FROM gone",
            &[&id, &at_ms],
        )
        .await?;
        Ok(get::<i64>(&row, 0)? > 0)
    }

    pub(super) async fn outbox_attempt_failed(
        &self,
        id: i64,
        error: &str,
        retry_at_ms: Option<i64>,
        at_ms: i64,
    ) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let row = query_one(
            &c,
            "recording a failed webhook delivery",
            "WITH hit AS (
               UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $2::text,
                 next_attempt = coalesce($3::bigint, next_attempt), dead = ($3::bigint IS NULL),
                 leased_by = NULL, leased_until = NULL
               WHERE id = $1 RETURNING hook),
             recorded AS (
               INSERT INTO webhook_hooks (hook, last_failure, last_error)
               SELECT hook, $4, $2::text FROM hit
               ON CONFLICT (hook) DO UPDATE
               SET last_failure = excluded.last_failure, last_error = excluded.last_error
               WHERE webhook_hooks.last_failure IS NULL
                  OR webhook_hooks.last_failure <= excluded.last_failure)
             SELECT count(*) FROM hit",
            &[&id, &error, &retry_at_ms, &at_ms],
        )
        .await?;
        Ok(get::<i64>(&row, 0)? > 0)
    }

    pub(super) async fn outbox_hooks(&self) -> Result<Vec<OutboxStatus>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "reading webhook status",
            "WITH counts AS (
               SELECT hook,
                      count(*) FILTER (WHERE NOT dead) AS pending,
                      count(*) FILTER (WHERE NOT dead AND attempts > 0) AS failing,
                      count(*) FILTER (WHERE dead) AS dead,
                      min(since) FILTER (WHERE NOT dead) AS oldest
               FROM webhook_outbox GROUP BY hook),
             names AS (SELECT hook FROM counts UNION SELECT hook FROM webhook_hooks)
             SELECT n.hook, coalesce(c.pending, 0), coalesce(c.failing, 0), coalesce(c.dead, 0),
                    c.oldest, h.last_success, h.last_failure, h.last_error
             FROM names n LEFT JOIN counts c ON c.hook = n.hook
             LEFT JOIN webhook_hooks h ON h.hook = n.hook
             ORDER BY n.hook",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(OutboxStatus {
                hook: get(r, 0)?,
                pending: get::<i64>(r, 1)? as u64,
                failing: get::<i64>(r, 2)? as u64,
                dead: get::<i64>(r, 3)? as u64,
                oldest_pending_ms: get(r, 4)?,
                last_success_ms: get(r, 5)?,
                last_failure_ms: get(r, 6)?,
                last_error: get(r, 7)?,
            })
        })
        .collect()
    }

    pub(super) async fn outbox_retry_all(&self, hook: &str, now_ms: i64) -> Result<u64, MetaError> {
        let c = self.client().await?;
        // A lease is left alone: a row in flight at a replica stays with it, whose
        // outcome then applies to the new retry window.
        execute(
            &c,
            "redelivering webhook deliveries",
            "UPDATE webhook_outbox SET dead = FALSE, attempts = 0, since = $2, next_attempt = $2
             WHERE hook = $1",
            &[&hook, &now_ms],
        )
        .await
    }
}

/// [`ENTRY_COLUMNS`] of the table aliased `alias`.
fn qualified(alias: &str) -> String {
    ENTRY_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
