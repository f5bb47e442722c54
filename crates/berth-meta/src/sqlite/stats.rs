//! [`StatsStore`] on SQLite: download, inspection, bytes-served and request counters,
//! aggregated per hour. Downloads and inspections share one table, told apart by `kind`.

use berth_oci::Digest;
use rusqlite::params;

use super::{db_err, SqliteStore};
use crate::{DownloadKey, FetchKind, GroupBy, MetaError, RequestKey, StatsStore};

impl SqliteStore {
    /// Counts of one kind of fetch of `repo` since `since_hour`, grouped by `by`.
    async fn fetches(
        &self,
        repo: &str,
        since_hour: i64,
        kind: FetchKind,
        by: GroupBy,
    ) -> Result<Vec<(String, u64)>, MetaError> {
        let repo = repo.to_owned();
        let key = match by {
            GroupBy::Version => "version",
            GroupBy::Platform => "platform",
            GroupBy::Client => "client",
            // Days as YYYY-MM-DD (UTC).
            GroupBy::Day => "strftime('%Y-%m-%d', hour * 3600, 'unixepoch')",
        };
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {key} AS k, sum(count) FROM downloads WHERE repo = ?1 AND hour >= ?2 AND kind = ?3 GROUP BY k ORDER BY k"
            ))
            .and_then(|mut s| {
                s.query_map(params![repo, since_hour, kind.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading downloads"))
        })
        .await
    }
}

#[async_trait::async_trait]
impl StatsStore for SqliteStore {
    async fn downloads_add(
        &self,
        counts: Vec<(DownloadKey, u64)>,
        bytes: Vec<(String, i64, u64)>,
    ) -> Result<(), MetaError> {
        if counts.is_empty() && bytes.is_empty() {
            return Ok(());
        }
        self.write(move |tx| {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO downloads (repo, version, platform, client, account, kind, hour, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (repo, hour, kind, version, platform, client, account) DO UPDATE SET count = count + excluded.count",
                )
                .map_err(db_err("recording downloads"))?;
            for (k, n) in &counts {
                add.execute(params![k.repo, k.version, k.platform, k.client, k.account, k.kind.as_str(), k.hour, *n as i64])
                    .map_err(db_err("recording downloads"))?;
            }
            let mut add_bytes = tx
                .prepare_cached(
                    "INSERT INTO bytes_served (repo, hour, bytes) VALUES (?1, ?2, ?3)
                     ON CONFLICT (repo, hour) DO UPDATE SET bytes = bytes + excluded.bytes",
                )
                .map_err(db_err("recording bytes served"))?;
            for (repo, hour, n) in &bytes {
                add_bytes
                    .execute(params![repo, hour, *n as i64])
                    .map_err(db_err("recording bytes served"))?;
            }
            Ok(())
        })
        .await
    }

    async fn pulls_add(&self, pulls: Vec<(String, Digest, i64)>) -> Result<(), MetaError> {
        if pulls.is_empty() {
            return Ok(());
        }
        self.write(move |tx| {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO manifest_pulls (repo, digest, pulled_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (repo, digest) DO UPDATE SET pulled_at = max(pulled_at, excluded.pulled_at)",
                )
                .map_err(db_err("recording pulls"))?;
            for (repo, digest, at) in &pulls {
                add.execute(params![repo, digest.to_string(), at])
                    .map_err(db_err("recording pulls"))?;
            }
            Ok(())
        })
        .await
    }

    async fn last_pulls(&self, repo: &str) -> Result<Vec<(Digest, i64)>, MetaError> {
        let repo = repo.to_owned();
        let rows = self
            .read(move |c| {
                c.prepare_cached(
                    "SELECT digest, pulled_at FROM manifest_pulls WHERE repo = ?1 ORDER BY digest",
                )
                .and_then(|mut s| {
                    s.query_map([repo], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err("reading pulls"))
            })
            .await?;
        rows.into_iter()
            .map(|(d, at)| Ok((super::parse_digest(d)?, at)))
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
        let repo = repo.to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT account, version, sum(count) FROM downloads WHERE repo = ?1 AND hour >= ?2 AND kind = 'download'
                 GROUP BY account, version ORDER BY account, version",
            )
            .and_then(|mut s| {
                s.query_map(params![repo, since_hour], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)? as u64))
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading downloads by account"))
        })
        .await
    }

    async fn bytes_served(&self, repo: &str, since_hour: i64) -> Result<u64, MetaError> {
        let repo = repo.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT coalesce(sum(bytes), 0) FROM bytes_served WHERE repo = ?1 AND hour >= ?2",
                params![repo, since_hour],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db_err("reading bytes served"))
        })
        .await
    }

    async fn requests_add(&self, counts: Vec<(RequestKey, u64)>) -> Result<(), MetaError> {
        if counts.is_empty() {
            return Ok(());
        }
        self.write(move |tx| {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO requests (repo, hour, route, class, code, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (repo, hour, route, class, code) DO UPDATE SET count = count + excluded.count",
                )
                .map_err(db_err("recording requests"))?;
            for (k, n) in &counts {
                add.execute(params![k.repo, k.hour, k.route, k.class, k.code, *n as i64])
                    .map_err(db_err("recording requests"))?;
            }
            Ok(())
        })
        .await
    }

    async fn requests(
        &self,
        repo: &str,
        since_hour: i64,
    ) -> Result<Vec<(RequestKey, u64)>, MetaError> {
        let repo = repo.to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT route, class, code, sum(count) FROM requests WHERE repo = ?1 AND hour >= ?2
                 GROUP BY route, class, code ORDER BY route, class, code",
            )
            .and_then(|mut s| {
                s.query_map(params![repo, since_hour], |r| {
                    Ok((
                        RequestKey {
                            repo: repo.clone(),
                            hour: since_hour,
                            route: r.get(0)?,
                            class: r.get(1)?,
                            code: r.get(2)?,
                        },
                        r.get::<_, i64>(3)? as u64,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading requests"))
        })
        .await
    }

    async fn top_repositories(
        &self,
        since_hour: i64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |c| {
            c.prepare_cached(
                "SELECT repo, sum(count) AS n FROM downloads WHERE hour >= ?1 AND kind = 'download' GROUP BY repo ORDER BY n DESC, repo LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![since_hour, limit], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading top repositories"))
        })
        .await
    }

    async fn stats_roll_up(&self, before_hour: i64) -> Result<u64, MetaError> {
        let mut days = 0;
        loop {
            // The oldest day, wholly before `before_hour`, that still has an hourly row.
            let day: Option<i64> = self
                .read(move |c| {
                    c.prepare_cached(
                        "SELECT min(h) / 24 FROM (
                           SELECT min(hour) AS h FROM downloads WHERE hour % 24 <> 0 AND hour < ?1
                           UNION ALL
                           SELECT min(hour) FROM bytes_served WHERE hour % 24 <> 0 AND hour < ?1
                           UNION ALL
                           SELECT min(hour) FROM requests WHERE hour % 24 <> 0 AND hour < ?1)",
                    )
                    .and_then(|mut s| {
                        s.query_row([before_hour - before_hour.rem_euclid(24)], |r| r.get(0))
                    })
                    .map_err(db_err("finding hourly counters to roll up"))
                })
                .await?;
            let Some(day) = day else {
                return Ok(days);
            };
            // Lazy: a roll-up lost to a power loss is done again by the next one.
            self.write_lazy(move |tx| roll_up_day(tx, day)).await?;
            days += 1;
        }
    }
}

/// Merges the hourly rows of `day` (days since the epoch) into the row of its first hour.
fn roll_up_day(tx: &rusqlite::Transaction<'_>, day: i64) -> Result<(), MetaError> {
    let (first, end) = (day * 24, day * 24 + 24);
    for (what, merge, delete) in [
        (
            "rolling up downloads",
            "INSERT INTO downloads (repo, version, platform, client, account, kind, hour, count)
             SELECT repo, version, platform, client, account, kind, ?1, sum(count) FROM downloads
             WHERE hour > ?1 AND hour < ?2
             GROUP BY repo, version, platform, client, account, kind
             ON CONFLICT (repo, hour, kind, version, platform, client, account)
             DO UPDATE SET count = count + excluded.count",
            "DELETE FROM downloads WHERE hour > ?1 AND hour < ?2",
        ),
        (
            "rolling up bytes served",
            "INSERT INTO bytes_served (repo, hour, bytes)
             SELECT repo, ?1, sum(bytes) FROM bytes_served WHERE hour > ?1 AND hour < ?2
             GROUP BY repo
             ON CONFLICT (repo, hour) DO UPDATE SET bytes = bytes + excluded.bytes",
            "DELETE FROM bytes_served WHERE hour > ?1 AND hour < ?2",
        ),
        (
            "rolling up requests",
            "INSERT INTO requests (repo, hour, route, class, code, count)
             SELECT repo, ?1, route, class, code, sum(count) FROM requests
             WHERE hour > ?1 AND hour < ?2
             GROUP BY repo, route, class, code
             ON CONFLICT (repo, hour, route, class, code) DO UPDATE SET count = count + excluded.count",
            "DELETE FROM requests WHERE hour > ?1 AND hour < ?2",
        ),
    ] {
        tx.prepare_cached(merge)
            .and_then(|mut s| s.execute(params![first, end]))
            .map_err(db_err(what))?;
        tx.prepare_cached(delete)
            .and_then(|mut s| s.execute(params![first, end]))
            .map_err(db_err(what))?;
    }
    Ok(())
}
