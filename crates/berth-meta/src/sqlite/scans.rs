//! [`ScanStore`] on SQLite: the `scans` table (migration 0014). Queuing is a durable
//! write (a push must not be forgotten by a crash); recording outcomes and re-match
//! counts are too, since they are few and each replaces the work of a scan.

use berth_oci::Digest;
use rusqlite::{params, OptionalExtension};

use super::{db_err, parse_digest, SqliteStore};
use crate::scans::{
    packages_from_text, packages_text, DbStamp, ScanOutcome, ScanRecord, ScanState, ScanStore,
    SeverityCounts,
};
use crate::MetaError;

const COLUMNS: &str = "repo, digest, state, queued_at, packages, critical, high, medium, low, unknown, db_version, db_imported, scanned_at, matched_at, error";

/// A row's raw columns, converted outside the row callback (where errors are rusqlite's).
type Raw = (
    String,
    String,
    String,
    i64,
    String,
    [i64; 5],
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        [r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?],
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
        r.get(14)?,
    ))
}

fn record(raw: Raw) -> Result<ScanRecord, MetaError> {
    let (repo, digest, state, queued_at, packages, c, version, imported, scanned, matched, error) =
        raw;
    let state = ScanState::parse(&state)
        .ok_or_else(|| MetaError::Corrupt(format!("scan state {state:?}")))?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(ScanRecord {
        repo,
        digest: parse_digest(digest)?,
        state,
        queued_at,
        packages: packages_from_text(&packages),
        counts: SeverityCounts {
            critical: n(c[0]),
            high: n(c[1]),
            medium: n(c[2]),
            low: n(c[3]),
            unknown: n(c[4]),
        },
        db: version.map(|version| DbStamp {
            version,
            imported: imported.unwrap_or_default(),
        }),
        scanned_at: scanned,
        matched_at: matched,
        error,
    })
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl ScanStore for SqliteStore {
    async fn scan_enqueue(&self, repo: &str, digest: &Digest, now: i64) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.to_owned(), digest.to_string());
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO scans (repo, digest, state, queued_at) VALUES (?1, ?2, 'pending', ?3)
                 ON CONFLICT (repo, digest) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![repo, digest, now]))
            .map(|n| n > 0)
            .map_err(db_err("queuing a scan"))
        })
        .await
    }

    async fn scan_claim(
        &self,
        limit: usize,
        now: i64,
        lease: i64,
    ) -> Result<Vec<(String, Digest)>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let before = now.saturating_sub(lease);
        // A claim need not survive a crash: a lost one only lets the row be taken again.
        let rows = self
            .write_lazy(move |tx| {
                let rows = tx
                    .prepare_cached(
                        "SELECT repo, digest FROM scans
                         WHERE state = 'pending' AND (claimed_at IS NULL OR claimed_at <= ?2)
                         ORDER BY queued_at, repo, digest LIMIT ?1",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![limit, before], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(db_err("reading pending scans"))?;
                let mut claim = tx
                    .prepare_cached(
                        "UPDATE scans SET claimed_at = ?3 WHERE repo = ?1 AND digest = ?2",
                    )
                    .map_err(db_err("claiming scans"))?;
                for (repo, digest) in &rows {
                    claim
                        .execute(params![repo, digest, now])
                        .map_err(db_err("claiming scans"))?;
                }
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(r, d)| Ok((r, parse_digest(d)?)))
            .collect()
    }

    async fn scan_record(
        &self,
        repo: &str,
        digest: &Digest,
        outcome: &ScanOutcome,
    ) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.to_owned(), digest.to_string());
        let o = outcome.clone();
        self.write(move |tx| {
            let (version, imported) = match &o.db {
                Some(db) => (Some(db.version.clone()), Some(db.imported.clone())),
                None => (None, None),
            };
            let matched = o.db.is_some().then_some(o.at);
            tx.prepare_cached(
                "UPDATE scans SET state = ?3, packages = ?4, critical = ?5, high = ?6, medium = ?7,
                   low = ?8, unknown = ?9, db_version = ?10, db_imported = ?11, scanned_at = ?12,
                   matched_at = ?13, error = ?14
                 WHERE repo = ?1 AND digest = ?2",
            )
            .and_then(|mut s| {
                s.execute(params![
                    repo,
                    digest,
                    o.state.as_str(),
                    packages_text(&o.packages),
                    count(o.counts.critical),
                    count(o.counts.high),
                    count(o.counts.medium),
                    count(o.counts.low),
                    count(o.counts.unknown),
                    version,
                    imported,
                    o.at,
                    matched,
                    o.error,
                ])
            })
            .map(|n| n > 0)
            .map_err(db_err("recording a scan"))
        })
        .await
    }

    async fn scan_get(&self, repo: &str, digests: &[Digest]) -> Result<Vec<ScanRecord>, MetaError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let repo = repo.to_owned();
        let wanted: Vec<String> = digests.iter().map(Digest::to_string).collect();
        let rows = self
            .read(move |c| {
                let mut s = c
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM scans WHERE repo = ?1 AND digest = ?2"
                    ))
                    .map_err(db_err("reading scans"))?;
                let mut out = Vec::new();
                for d in &wanted {
                    if let Some(r) = s
                        .query_row(params![repo, d], raw)
                        .optional()
                        .map_err(db_err("reading scans"))?
                    {
                        out.push(r);
                    }
                }
                Ok(out)
            })
            .await?;
        rows.into_iter().map(record).collect()
    }

    async fn scan_done_page(
        &self,
        after: Option<(&str, &Digest)>,
        limit: usize,
    ) -> Result<Vec<ScanRecord>, MetaError> {
        let (repo, digest) = match after {
            Some((r, d)) => (r.to_owned(), d.to_string()),
            None => (String::new(), String::new()),
        };
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = self
            .read(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM scans WHERE state = 'done' AND (repo, digest) > (?1, ?2)
                     ORDER BY repo, digest LIMIT ?3"
                ))
                .and_then(|mut s| {
                    s.query_map(params![repo, digest, limit], raw)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err("reading scans"))
            })
            .await?;
        rows.into_iter().map(record).collect()
    }

    async fn scan_rematched(
        &self,
        repo: &str,
        digest: &Digest,
        counts: &SeverityCounts,
        db: &DbStamp,
        at: i64,
    ) -> Result<bool, MetaError> {
        let (repo, digest, c, db) = (repo.to_owned(), digest.to_string(), *counts, db.clone());
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE scans SET critical = ?3, high = ?4, medium = ?5, low = ?6, unknown = ?7,
                   db_version = ?8, db_imported = ?9, matched_at = ?10
                 WHERE repo = ?1 AND digest = ?2 AND state = 'done'",
            )
            .and_then(|mut s| {
                s.execute(params![
                    repo,
                    digest,
                    count(c.critical),
                    count(c.high),
                    count(c.medium),
                    count(c.low),
                    count(c.unknown),
                    db.version,
                    db.imported,
                    at,
                ])
            })
            .map(|n| n > 0)
            .map_err(db_err("recording a re-match"))
        })
        .await
    }

    async fn scan_forget(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.to_owned(), digest.to_string());
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM scans WHERE repo = ?1 AND digest = ?2")
                .and_then(|mut s| s.execute(params![repo, digest]))
                .map(|n| n > 0)
                .map_err(db_err("forgetting a scan"))
        })
        .await
    }

    async fn scan_states(&self) -> Result<Vec<(ScanState, u64)>, MetaError> {
        let rows = self
            .read(|c| {
                c.prepare_cached("SELECT state, count(*) FROM scans GROUP BY state ORDER BY state")
                    .and_then(|mut s| {
                        s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(db_err("counting scans"))
            })
            .await?;
        rows.into_iter()
            .map(|(s, n)| {
                let state = ScanState::parse(&s)
                    .ok_or_else(|| MetaError::Corrupt(format!("scan state {s:?}")))?;
                Ok((state, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}
