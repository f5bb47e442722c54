//! [`AccountStore`] on PostgreSQL: accounts, grants, public patterns and the audit log.
//! Each method is one statement or one transaction; none needs a lock beyond the rows
//! it writes. The webhook outbox's queries are in `outbox`.

use tokio_postgres::Row;

use super::{execute, get, now, query, query_one, query_opt, PgStore};
use crate::{
    Account, AccountKind, AccountStore, AuditEvent, MetaError, OutboxEntry, OutboxNew,
    OutboxStatus, ReplicationNew, ReplicationStatus, ReplicationTask, StoredGrant,
};

const ACCOUNT_COLUMNS: &str = "name, kind, secret_hash, disabled, expires_at, created_at";

fn account(r: &Row) -> Result<Account, MetaError> {
    let kind: String = get(r, 1)?;
    Ok(Account {
        name: get(r, 0)?,
        kind: if kind == "robot" {
            AccountKind::Robot
        } else {
            AccountKind::User
        },
        secret_hash: get(r, 2)?,
        disabled: get(r, 3)?,
        expires_at: get(r, 4)?,
        created_at: get(r, 5)?,
    })
}

#[async_trait::async_trait]
impl AccountStore for PgStore {
    async fn account_create(&self, a: &Account) -> Result<(), MetaError> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "creating an account",
            "INSERT INTO accounts (name, kind, secret_hash, disabled, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
            &[
                &a.name,
                &a.kind.as_str(),
                &a.secret_hash,
                &a.disabled,
                &a.expires_at,
                // A given time is kept (`berth migrate` carries accounts over).
                &if a.created_at == 0 {
                    now()
                } else {
                    a.created_at
                },
            ],
        )
        .await?;
        if n == 0 {
            return Err(MetaError::Conflict(format!("account {}", a.name)));
        }
        Ok(())
    }

    async fn account_get(&self, name: &str) -> Result<Option<Account>, MetaError> {
        let c = self.client().await?;
        query_opt(
            &c,
            "reading an account",
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"),
            &[&name],
        )
        .await?
        .map(|r| account(&r))
        .transpose()
    }

    async fn account_list(&self) -> Result<Vec<Account>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "listing accounts",
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"),
            &[],
        )
        .await?
        .iter()
        .map(account)
        .collect()
    }

    async fn account_count(&self) -> Result<u64, MetaError> {
        let c = self.client().await?;
        let r = query_one(
            &c,
            "counting accounts",
            "SELECT count(*) FROM accounts",
            &[],
        )
        .await?;
        Ok(get::<i64>(&r, 0)? as u64)
    }

    async fn account_set_secret(&self, name: &str, secret_hash: &str) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "changing a secret",
            "UPDATE accounts SET secret_hash = $2 WHERE name = $1",
            &[&name, &secret_hash],
        )
        .await?;
        Ok(n > 0)
    }

    async fn account_set_disabled(&self, name: &str, disabled: bool) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "disabling an account",
            "UPDATE accounts SET disabled = $2 WHERE name = $1",
            &[&name, &disabled],
        )
        .await?;
        Ok(n > 0)
    }

    async fn account_delete(&self, name: &str) -> Result<bool, MetaError> {
        // Its grants go with it (ON DELETE CASCADE), in the same statement.
        let c = self.client().await?;
        let n = execute(
            &c,
            "deleting an account",
            "DELETE FROM accounts WHERE name = $1",
            &[&name],
        )
        .await?;
        Ok(n > 0)
    }

    async fn grant_set(
        &self,
        account: &str,
        pattern: &str,
        actions: &str,
    ) -> Result<bool, MetaError> {
        // One statement: granting to an account deleted concurrently inserts nothing
        // (the SELECT finds no row) rather than failing on the foreign key.
        let c = self.client().await?;
        let n = execute(
            &c,
            "granting",
            "INSERT INTO grants (account, pattern, actions)
             SELECT name, $2, $3 FROM accounts WHERE name = $1
             ON CONFLICT (account, pattern) DO UPDATE SET actions = excluded.actions",
            &[&account, &pattern, &actions],
        )
        .await?;
        Ok(n > 0)
    }

    async fn grant_remove(&self, account: &str, pattern: &str) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "revoking",
            "DELETE FROM grants WHERE account = $1 AND pattern = $2",
            &[&account, &pattern],
        )
        .await?;
        Ok(n > 0)
    }

    async fn grants(&self, account: &str) -> Result<Vec<StoredGrant>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "reading grants",
            "SELECT pattern, actions FROM grants WHERE account = $1 ORDER BY pattern",
            &[&account],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(StoredGrant {
                pattern: get(r, 0)?,
                actions: get(r, 1)?,
            })
        })
        .collect()
    }

    async fn public_add(&self, pattern: &str) -> Result<(), MetaError> {
        let c = self.client().await?;
        execute(
            &c,
            "making a pattern public",
            "INSERT INTO public_patterns (pattern, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&pattern, &now()],
        )
        .await?;
        Ok(())
    }

    async fn public_remove(&self, pattern: &str) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "making a pattern private",
            "DELETE FROM public_patterns WHERE pattern = $1",
            &[&pattern],
        )
        .await?;
        Ok(n > 0)
    }

    async fn public_patterns(&self) -> Result<Vec<String>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "listing public patterns",
            "SELECT pattern FROM public_patterns ORDER BY pattern",
            &[],
        )
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect()
    }

    async fn audit_append(&self, e: &AuditEvent) -> Result<(), MetaError> {
        let at = if e.at == 0 { now() } else { e.at };
        let c = self.client().await?;
        execute(
            &c,
            "writing the audit log",
            "INSERT INTO audit (at, actor, action, target, detail, client) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&at, &e.actor, &e.action, &e.target, &e.detail, &e.client],
        )
        .await?;
        Ok(())
    }

    async fn audit_list(&self, since: i64, limit: usize) -> Result<Vec<AuditEvent>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let c = self.client().await?;
        let mut rows = query(
            &c,
            "reading the audit log",
            "SELECT at, actor, action, target, detail, client FROM audit WHERE at >= $1
             ORDER BY id DESC LIMIT $2",
            &[&since, &limit],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(AuditEvent {
                at: get(r, 0)?,
                actor: get(r, 1)?,
                action: get(r, 2)?,
                target: get(r, 3)?,
                detail: get(r, 4)?,
                client: get(r, 5)?,
            })
        })
        .collect::<Result<Vec<_>, MetaError>>()?;
        rows.reverse();
        Ok(rows)
    }

    async fn audit_prune(&self, before: i64) -> Result<u64, MetaError> {
        let mut pruned = 0;
        loop {
            // Small batches: each is a short transaction that holds few row locks.
            let c = self.client().await?;
            let n = execute(
                &c,
                "pruning the audit log",
                "DELETE FROM audit WHERE id IN
                   (SELECT id FROM audit WHERE at < $1 ORDER BY at LIMIT 1000)",
                &[&before],
            )
            .await?;
            pruned += n;
            if n < 1000 {
                return Ok(pruned);
            }
        }
    }

    async fn outbox_add(&self, entries: &[OutboxNew], now_ms: i64) -> Result<(), MetaError> {
        self.outbox_insert(entries, now_ms).await
    }

    async fn outbox_due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEntry>, MetaError> {
        self.outbox_list_due(now_ms, limit).await
    }

    async fn outbox_delivered(&self, id: i64, at_ms: i64) -> Result<bool, MetaError> {
        self.outbox_done(id, at_ms).await
    }

    async fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        retry_at_ms: Option<i64>,
        at_ms: i64,
    ) -> Result<bool, MetaError> {
        self.outbox_attempt_failed(id, error, retry_at_ms, at_ms)
            .await
    }

    async fn outbox_status(&self) -> Result<Vec<OutboxStatus>, MetaError> {
        self.outbox_hooks().await
    }

    async fn outbox_redeliver(&self, hook: &str, now_ms: i64) -> Result<u64, MetaError> {
        self.outbox_retry_all(hook, now_ms).await
    }

    async fn replication_enqueue(
        &self,
        tasks: &[ReplicationNew],
        now_ms: i64,
    ) -> Result<(), MetaError> {
        self.replication_insert(tasks, now_ms).await
    }

    async fn replication_claim(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<ReplicationTask>, MetaError> {
        self.replication_due(now_ms, lease_ms, limit).await
    }

    async fn replication_done(&self, id: i64, seq: i64, at_ms: i64) -> Result<bool, MetaError> {
        self.replication_success(id, seq, at_ms).await
    }

    async fn replication_failed(
        &self,
        id: i64,
        seq: i64,
        error: &str,
        retry_at_ms: Option<i64>,
        at_ms: i64,
    ) -> Result<bool, MetaError> {
        self.replication_failure(id, seq, error, retry_at_ms, at_ms)
            .await
    }

    async fn replication_status(&self) -> Result<Vec<ReplicationStatus>, MetaError> {
        self.replication_rules().await
    }

    async fn replication_failing(&self, limit: usize) -> Result<Vec<ReplicationTask>, MetaError> {
        self.replication_failing_rows(limit).await
    }
}
