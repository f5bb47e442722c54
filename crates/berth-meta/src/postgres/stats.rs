//! [`StatsStore`] on PostgreSQL: download, inspection, bytes-served and request counters,
//! aggregated per hour. Several replicas flush counters into the same rows: each flush is
//! one transaction of `INSERT ... ON CONFLICT DO UPDATE SET count = count + n` (an
//! atomic increment under the row's lock), over keys in sorted order so that two
//! flushes of overlapping keys cannot deadlock. Manifest pulls are upserts that keep
//! the latest time (`GREATEST`), so flushes from two replicas in either order agree.

use berth_oci::Digest;

use super::{execute, get, parse_digest, pg_err, query, query_one, PgStore};
use crate::{DownloadKey, FetchKind, GroupBy, MetaError, RequestKey, StatsStore};

/// The advisory lock key that serialises roll-ups across replicas ("rollup").
const ROLL_UP_LOCK: i64 = 0x726f_6c6c_7570;

impl PgStore {
    /// Counts of one kind of fetch of `repo` since `since_hour`, grouped by `by`.
    async fn fetches(
        &self,
        repo: &str,
        since_hour: i64,
        kind: FetchKind,
        by: GroupBy,
    ) -> Result<Vec<(String, u64)>, MetaError> {
        let key = match by {
            GroupBy::Version => "version",
            GroupBy::Platform => "platform",
            GroupBy::Client => "client",
            // Days as YYYY-MM-DD (UTC).
            GroupBy::Day => {
                "to_char(to_timestamp(hour * 3600) AT TIME ZONE 'UTC', 'YYYY-MM-DD') COLLATE \"C\""
            }
        };
        let c = self.client().await?;
        query(
            &c,
            "reading downloads",
            &format!(
                "SELECT {key} AS k, sum(count)::bigint FROM downloads
                 WHERE repo = $1 AND hour >= $2 AND kind = $3 GROUP BY k ORDER BY k"
            ),
            &[&repo, &since_hour, &kind.as_str()],
        )
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get::<i64>(r, 1)? as u64)))
        .collect()
    }
}

#[async_trait::async_trait]
impl StatsStore for PgStore {
    async fn downloads_add(
        &self,
        mut counts: Vec<(DownloadKey, u64)>,
        mut bytes: Vec<(String, i64, u64)>,
    ) -> Result<(), MetaError> {
        if counts.is_empty() && bytes.is_empty() {
            return Ok(());
        }
        counts.sort();
        bytes.sort();
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(pg_err("recording downloads"))?;
        for (k, n) in &counts {
            execute(
                &tx,
                "recording downloads",
                "INSERT INTO downloads (repo, version, platform, client, account, kind, hour, count)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (repo, hour, kind, version, platform, client, account)
                 DO UPDATE SET count = downloads.count + excluded.count",
                &[
                    &k.repo,
                    &k.version,
                    &k.platform,
                    &k.client,
                    &k.account,
                    &k.kind.as_str(),
                    &k.hour,
                    &(*n as i64),
                ],
            )
            .await?;
        }
        for (repo, hour, n) in &bytes {
            execute(
                &tx,
                "recording bytes served",
                "INSERT INTO bytes_served (repo, hour, bytes) VALUES ($1, $2, $3)
                 ON CONFLICT (repo, hour) DO UPDATE SET bytes = bytes_served.bytes + excluded.bytes",
                &[repo, hour, &(*n as i64)],
            )
            .await?;
        }
        tx.commit().await.map_err(pg_err("recording downloads"))
    }

    async fn pulls_add(&self, mut pulls: Vec<(String, Digest, i64)>) -> Result<(), MetaError> {
        if pulls.is_empty() {
            return Ok(());
        }
        // Sorted keys: two flushes of overlapping pulls lock their rows in the same order.
        pulls.sort();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err("recording pulls"))?;
        for (repo, digest, at) in &pulls {
            execute(
                &tx,
                "recording pulls",
                "INSERT INTO manifest_pulls (repo, digest, pulled_at) VALUES ($1, $2, $3)
                 ON CONFLICT (repo, digest)
                 DO UPDATE SET pulled_at = GREATEST(manifest_pulls.pulled_at, excluded.pulled_at)",
                &[repo, &digest.to_string(), at],
            )
            .await?;
        }
        tx.commit().await.map_err(pg_err("recording pulls"))
    }

    async fn last_pulls(&self, repo: &str) -> Result<Vec<(Digest, i64)>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "reading pulls",
            "SELECT digest, pulled_at FROM manifest_pulls WHERE repo = $1 ORDER BY digest",
            &[&repo],
        )
        .await?
        .iter()
        .map(|r| Ok((parse_digest(get(r, 0)?)?, get(r, 1)?)))
        .collect()
    }

    async fn downloads(
        &self,
        repo: &str,
        since_hour: i64,
        by: GroupBy,
    ) -> Result<Vec<(String, u64)>, MetaError> {
        self.fetches(repo, since_hour, FetchKind::Download, by)
            .await
    }

    async fn inspections(
        &self,
        repo: &str,
        since_hour: i64,
        by: GroupBy,
    ) -> Result<Vec<(String, u64)>, MetaError> {
        self.fetches(repo, since_hour, FetchKind::Inspection, by)
            .await
    }

    async fn downloads_by_account(
        &self,
        repo: &str,
        since_hour: i64,
    ) -> Result<Vec<(String, String, u64)>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "reading downloads by account",
            "SELECT account, version, sum(count)::bigint FROM downloads
             WHERE repo = $1 AND hour >= $2 AND kind = 'download'
             GROUP BY account, version ORDER BY account, version",
            &[&repo, &since_hour],
        )
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?, get::<i64>(r, 2)? as u64)))
        .collect()
    }

    async fn bytes_served(&self, repo: &str, since_hour: i64) -> Result<u64, MetaError> {
        let c = self.client().await?;
        let r = query_one(
            &c,
            "reading bytes served",
            "SELECT coalesce(sum(bytes), 0)::bigint FROM bytes_served WHERE repo = $1 AND hour >= $2",
            &[&repo, &since_hour],
        )
        .await?;
        Ok(get::<i64>(&r, 0)? as u64)
    }

    async fn requests_add(&self, mut counts: Vec<(RequestKey, u64)>) -> Result<(), MetaError> {
        if counts.is_empty() {
            return Ok(());
        }
        counts.sort();
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(pg_err("recording requests"))?;
        for (k, n) in &counts {
            execute(
                &tx,
                "recording requests",
                "INSERT INTO requests (repo, hour, route, class, code, count) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (repo, hour, route, class, code) DO UPDATE SET count = requests.count + excluded.count",
                &[&k.repo, &k.hour, &k.route, &i32::from(k.class), &k.code, &(*n as i64)],
            )
            .await?;
        }
        tx.commit().await.map_err(pg_err("recording requests"))
    }

    async fn requests(
        &self,
        repo: &str,
        since_hour: i64,
    ) -> Result<Vec<(RequestKey, u64)>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "reading requests",
            "SELECT route, class, code, sum(count)::bigint FROM requests WHERE repo = $1 AND hour >= $2
             GROUP BY route, class, code ORDER BY route, class, code",
            &[&repo, &since_hour],
        )
        .await?
        .iter()
        .map(|r| {
            let class: i32 = get(r, 1)?;
            Ok((
                RequestKey {
                    repo: repo.to_owned(),
                    hour: since_hour,
                    route: get(r, 0)?,
                    class: u16::try_from(class)
                        .map_err(|_| MetaError::Corrupt(format!("status class {class}")))?,
                    code: get(r, 2)?,
                },
                get::<i64>(r, 3)? as u64,
            ))
        })
        .collect()
    }

    async fn top_repositories(
        &self,
        since_hour: i64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let c = self.client().await?;
        query(
            &c,
            "reading top repositories",
            "SELECT repo, sum(count)::bigint AS n FROM downloads WHERE hour >= $1 AND kind = 'download'
             GROUP BY repo ORDER BY n DESC, repo LIMIT $2",
            &[&since_hour, &limit],
        )
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get::<i64>(r, 1)? as u64)))
        .collect()
    }

    async fn stats_roll_up(&self, before_hour: i64) -> Result<u64, MetaError> {
        let end = before_hour - before_hour.rem_euclid(24);
        let mut days = 0;
        loop {
            let mut c = self.client().await?;
            let tx = c
                .transaction()
                .await
                .map_err(pg_err("rolling up counters"))?;
            // One roll-up at a time across replicas: two would both merge the same day.
            execute(
                &tx,
                "rolling up counters",
                "SELECT pg_advisory_xact_lock($1)",
                &[&ROLL_UP_LOCK],
            )
            .await?;
            // The oldest day, wholly before `before_hour`, that still has an hourly row.
            let row = query_one(
                &tx,
                "finding hourly counters to roll up",
                "SELECT min(h) / 24 FROM (
                   SELECT min(hour) AS h FROM downloads WHERE hour % 24 <> 0 AND hour < $1
                   UNION ALL
                   SELECT min(hour) FROM bytes_served WHERE hour % 24 <> 0 AND hour < $1
                   UNION ALL
                   SELECT min(hour) FROM requests WHERE hour % 24 <> 0 AND hour < $1) AS firsts",
                &[&end],
            )
            .await?;
            let Some(day) = get::<Option<i64>>(&row, 0)? else {
                return Ok(days);
            };
            let (first, last) = (day * 24, day * 24 + 24);
            // Each table in one statement: the rows deleted are exactly the rows summed
            // (a flush adding to one of them meanwhile waits for its row lock, then
            // finds it gone and inserts a new hourly row, rolled up next time).
            for (what, sql) in [
                (
                    "rolling up downloads",
                    "WITH moved AS (DELETE FROM downloads WHERE hour > $1 AND hour < $2 RETURNING *)
                     INSERT INTO downloads (repo, version, platform, client, account, kind, hour, count)
                     SELECT repo, version, platform, client, account, kind, $1, sum(count)::bigint FROM moved
                     GROUP BY repo, version, platform, client, account, kind
                     ON CONFLICT (repo, hour, kind, version, platform, client, account)
                     DO UPDATE SET count = downloads.count + excluded.count",
                ),
                (
                    "rolling up bytes served",
                    "WITH moved AS (DELETE FROM bytes_served WHERE hour > $1 AND hour < $2 RETURNING *)
                     INSERT INTO bytes_served (repo, hour, bytes)
                     SELECT repo, $1, sum(bytes)::bigint FROM moved GROUP BY repo
                     ON CONFLICT (repo, hour) DO UPDATE SET bytes = bytes_served.bytes + excluded.bytes",
                ),
                (
                    "rolling up requests",
                    "WITH moved AS (DELETE FROM requests WHERE hour > $1 AND hour < $2 RETURNING *)
                     INSERT INTO requests (repo, hour, route, class, code, count)
                     SELECT repo, $1, route, class, code, sum(count)::bigint FROM moved
                     GROUP BY repo, route, class, code
                     ON CONFLICT (repo, hour, route, class, code) DO UPDATE SET count = requests.count + excluded.count",
                ),
            ] {
                execute(&tx, what, sql, &[&first, &last]).await?;
            }
            tx.commit().await.map_err(pg_err("rolling up counters"))?;
            days += 1;
        }
    }
}
