//! Retention of Berth's own tables: hourly download, byte and request counters older
//! than `stats_hourly_retention` are rolled up into daily totals, and audit entries
//! older than `audit_retention` are deleted. Runs in the background once an hour; each
//! step is small transactions through the stores, so pushes and pulls keep going.

use std::sync::Arc;
use std::time::Duration;

use berth_meta::{AccountStore, MetaError, StatsStore};

/// How often the tables are looked at.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    /// Days whose hourly counters were rolled up.
    pub days_rolled_up: u64,
    /// Audit entries deleted.
    pub audit_deleted: u64,
}

/// The stores and the windows of the retention task.
pub struct Retention {
    pub stats: Arc<dyn StatsStore>,
    pub accounts: Arc<dyn AccountStore>,
    /// Hourly counters older than this become daily; `None` keeps them hourly.
    pub hourly: Option<Duration>,
    /// Audit entries older than this are deleted; `None` keeps them.
    pub audit: Option<Duration>,
}

impl Retention {
    /// One pass at unix time `now`.
    pub async fn run_once(&self, now: i64) -> Result<Retained, MetaError> {
        let mut done = Retained::default();
        if let Some(hourly) = self.hourly {
            let before_hour = (now - secs(hourly)).div_euclid(3600);
            done.days_rolled_up = self.stats.stats_roll_up(before_hour).await?;
        }
        if let Some(audit) = self.audit {
            done.audit_deleted = self.accounts.audit_prune(now - secs(audit)).await?;
        }
        Ok(done)
    }

    /// Runs a pass every [`INTERVAL`] (the first one right away), logging what it did;
    /// a failed pass is logged and tried again at the next.
    pub async fn run_forever(self) {
        if self.hourly.is_none() && self.audit.is_none() {
            return;
        }
        loop {
            match self.run_once(berth_oci::time::now()).await {
                Ok(r) if r != Retained::default() => tracing::info!(
                    days_rolled_up = r.days_rolled_up,
                    audit_deleted = r.audit_deleted,
                    "table retention: rolled up {} day(s) of hourly counters, deleted {} audit entries",
                    r.days_rolled_up,
                    r.audit_deleted
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "table retention failed; retrying in an hour"),
            }
            tokio::time::sleep(INTERVAL).await;
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_meta::sqlite::SqliteStore;
    use berth_meta::{AuditEvent, DownloadKey};

    #[tokio::test]
    async fn a_pass_rolls_up_old_hours_and_prunes_old_audit_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(SqliteStore::open(dir.path().join("meta.db")).unwrap());
        let day = 24 * 3600;
        let now = 100 * day;
        let hour_of = |t: i64| t / 3600;
        let key = |t: i64| DownloadKey {
            repo: "a".into(),
            version: "1.0".into(),
            hour: hour_of(t),
            ..DownloadKey::default()
        };
        // Two hours of a day 40 days ago, and one hour of yesterday.
        db.downloads_add(
            vec![
                (key(now - 40 * day + 3600), 1),
                (key(now - 40 * day + 7200), 2),
                (key(now - day + 3600), 4),
            ],
            vec![],
        )
        .await
        .unwrap();
        for at in [now - 400 * day, now - 10 * day] {
            db.audit_append(&AuditEvent {
                at,
                actor: "a".into(),
                action: "login".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let retention = Retention {
            stats: db.clone(),
            accounts: db.clone(),
            hourly: Some(Duration::from_secs(30 * 24 * 3600)),
            audit: Some(Duration::from_secs(365 * 24 * 3600)),
        };
        let done = retention.run_once(now).await.unwrap();
        assert_eq!(
            done,
            Retained {
                days_rolled_up: 1,
                audit_deleted: 1
            }
        );
        // Nothing is lost: the old day's total, now at its first hour, and yesterday's hour.
        let all = db
            .downloads("a", 0, berth_meta::GroupBy::Version)
            .await
            .unwrap();
        assert_eq!(all, [("1.0".to_owned(), 7)]);
        assert_eq!(
            db.downloads(
                "a",
                hour_of(now - 40 * day) + 1,
                berth_meta::GroupBy::Version
            )
            .await
            .unwrap(),
            [("1.0".to_owned(), 4)],
            "the old day's hours were merged into its first hour"
        );
        assert_eq!(db.audit_list(0, 10).await.unwrap().len(), 1);
        assert_eq!(retention.run_once(now).await.unwrap(), Retained::default());
    }
}
