//! [`AccountStore`] on SQLite: accounts, grants, public patterns and the audit log; the
//! webhook outbox's queries are in `outbox`.

use rusqlite::{params, OptionalExtension};

use super::{db_err, now, SqliteStore};
use crate::{
    Account, AccountKind, AccountStore, AuditEvent, MetaError, OutboxEntry, OutboxNew,
    OutboxStatus, ReplicationNew, ReplicationStatus, ReplicationTask, StoredGrant,
};

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
                    params![a.name, a.kind.as_str(), a.secret_hash, a.disabled as i64, a.expires_at,
                        if a.created_at == 0 { now() } else { a.created_at }],
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

    async fn audit_prune(&self, before: i64) -> Result<u64, MetaError> {
        let mut pruned = 0;
        loop {
            // Small batches: the audit log shares the writer with pushes.
            let n = self
                .write_lazy(move |tx| {
                    tx.prepare_cached(
                        "DELETE FROM audit WHERE id IN
                           (SELECT id FROM audit WHERE at < ?1 ORDER BY at LIMIT 1000)",
                    )
                    .and_then(|mut s| s.execute([before]))
                    .map_err(db_err("pruning the audit log"))
                })
                .await?;
            pruned += n as u64;
            if n < 1000 {
                return Ok(pruned);
            }
        }
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
        _lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<ReplicationTask>, MetaError> {
        self.replication_due(now_ms, limit).await
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
