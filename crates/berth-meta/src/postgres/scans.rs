//! [`ScanStore`] on PostgreSQL: the `scans` table (migration 0005), one statement per
//! method. Replicas read the same pending rows: two of them may scan one image at the
//! same moment, which costs the work twice and records the same outcome (a scan is a
//! pure function of the image and the database), so no lease is taken.

use berth_oci::Digest;
use tokio_postgres::Row;

use super::{execute, get, parse_digest, query, PgStore};
use crate::scans::{
    packages_from_text, packages_text, DbStamp, ScanOutcome, ScanRecord, ScanState, ScanStore,
    SeverityCounts,
};
use crate::MetaError;

const COLUMNS: &str = "repo, digest, state, queued_at, packages, critical, high, medium, low, unknown, db_version, db_imported, scanned_at, matched_at, error";

fn record(r: &Row) -> Result<ScanRecord, MetaError> {
    let state: String = get(r, 2)?;
    let state = ScanState::parse(&state)
        .ok_or_else(|| MetaError::Corrupt(format!("scan state {state:?}")))?;
    let n =
        |i: usize| -> Result<u64, MetaError> { Ok(u64::try_from(get::<i64>(r, i)?).unwrap_or(0)) };
    let packages: String = get(r, 4)?;
    let version: Option<String> = get(r, 10)?;
    let imported: Option<String> = get(r, 11)?;
    Ok(ScanRecord {
        repo: get(r, 0)?,
        digest: parse_digest(get(r, 1)?)?,
        state,
        queued_at: get(r, 3)?,
        packages: packages_from_text(&packages),
        counts: SeverityCounts {
            critical: n(5)?,
            high: n(6)?,
            medium: n(7)?,
            low: n(8)?,
            unknown: n(9)?,
        },
        db: version.map(|version| DbStamp {
            version,
            imported: imported.unwrap_or_default(),
        }),
        scanned_at: get(r, 12)?,
        matched_at: get(r, 13)?,
        error: get(r, 14)?,
    })
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl ScanStore for PgStore {
    async fn scan_enqueue(&self, repo: &str, digest: &Digest, now: i64) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "queuing a scan",
            "INSERT INTO scans (repo, digest, state, queued_at) VALUES ($1, $2, 'pending', $3)
             ON CONFLICT (repo, digest) DO NOTHING",
            &[&repo, &digest.to_string(), &now],
        )
        .await?;
        Ok(n > 0)
    }

    async fn scan_claim(
        &self,
        limit: usize,
        now: i64,
        lease: i64,
    ) -> Result<Vec<(String, Digest)>, MetaError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let before = now.saturating_sub(lease);
        let c = self.client().await?;
        // SKIP LOCKED: a replica claiming at the same moment takes other rows instead of
        // waiting for these and then taking them too.
        let rows = query(
            &c,
            "claiming scans",
            "UPDATE scans SET claimed_at = $2
             WHERE (repo, digest) IN (
               SELECT repo, digest FROM scans
               WHERE state = 'pending' AND (claimed_at IS NULL OR claimed_at <= $3)
               ORDER BY queued_at, repo, digest LIMIT $1
               FOR UPDATE SKIP LOCKED)
             RETURNING queued_at, repo, digest",
            &[&limit, &now, &before],
        )
        .await?;
        let mut taken = rows
            .iter()
            .map(|r| {
                Ok((
                    get::<i64>(r, 0)?,
                    get::<String>(r, 1)?,
                    get::<String>(r, 2)?,
                ))
            })
            .collect::<Result<Vec<_>, MetaError>>()?;
        // RETURNING follows no order: oldest queued first, as the trait says.
        taken.sort();
        taken
            .into_iter()
            .map(|(_, repo, digest)| Ok((repo, parse_digest(digest)?)))
            .collect()
    }

    async fn scan_record(
        &self,
        repo: &str,
        digest: &Digest,
        o: &ScanOutcome,
    ) -> Result<bool, MetaError> {
        let (version, imported) = match &o.db {
            Some(db) => (Some(db.version.as_str()), Some(db.imported.as_str())),
            None => (None, None),
        };
        let matched = o.db.is_some().then_some(o.at);
        let c = self.client().await?;
        let n = execute(
            &c,
            "recording a scan",
            "UPDATE scans SET state = $3, packages = $4, critical = $5, high = $6, medium = $7,
               low = $8, unknown = $9, db_version = $10, db_imported = $11, scanned_at = $12,
               matched_at = $13, error = $14
             WHERE repo = $1 AND digest = $2",
            &[
                &repo,
                &digest.to_string(),
                &o.state.as_str(),
                &packages_text(&o.packages),
                &count(o.counts.critical),
                &count(o.counts.high),
                &count(o.counts.medium),
                &count(o.counts.low),
                &count(o.counts.unknown),
                &version,
                &imported,
                &o.at,
                &matched,
                &o.error,
            ],
        )
        .await?;
        Ok(n > 0)
    }

    async fn scan_get(&self, repo: &str, digests: &[Digest]) -> Result<Vec<ScanRecord>, MetaError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<String> = digests.iter().map(Digest::to_string).collect();
        let c = self.client().await?;
        let rows = query(
            &c,
            "reading scans",
            &format!("SELECT {COLUMNS} FROM scans WHERE repo = $1 AND digest = ANY($2)"),
            &[&repo, &wanted],
        )
        .await?;
        let mut found: Vec<ScanRecord> = rows.iter().map(record).collect::<Result<_, _>>()?;
        found.sort_by_key(|r| {
            wanted
                .iter()
                .position(|d| *d == r.digest.to_string())
                .unwrap_or(usize::MAX)
        });
        Ok(found)
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
        let c = self.client().await?;
        let rows = query(
            &c,
            "reading scans",
            &format!(
                "SELECT {COLUMNS} FROM scans WHERE state = 'done' AND (repo, digest) > ($1, $2)
                 ORDER BY repo, digest LIMIT $3"
            ),
            &[&repo, &digest, &limit],
        )
        .await?;
        rows.iter().map(record).collect()
    }

    async fn scan_rematched(
        &self,
        repo: &str,
        digest: &Digest,
        counts: &SeverityCounts,
        db: &DbStamp,
        at: i64,
    ) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "recording a re-match",
            "UPDATE scans SET critical = $3, high = $4, medium = $5, low = $6, unknown = $7,
               db_version = $8, db_imported = $9, matched_at = $10
             WHERE repo = $1 AND digest = $2 AND state = 'done'",
            &[
                &repo,
                &digest.to_string(),
                &count(counts.critical),
                &count(counts.high),
                &count(counts.medium),
                &count(counts.low),
                &count(counts.unknown),
                &db.version,
                &db.imported,
                &at,
            ],
        )
        .await?;
        Ok(n > 0)
    }

    async fn scan_forget(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "forgetting a scan",
            "DELETE FROM scans WHERE repo = $1 AND digest = $2",
            &[&repo, &digest.to_string()],
        )
        .await?;
        Ok(n > 0)
    }

    async fn scan_states(&self) -> Result<Vec<(ScanState, u64)>, MetaError> {
        let c = self.client().await?;
        let rows = query(
            &c,
            "counting scans",
            "SELECT state, count(*) FROM scans GROUP BY state ORDER BY state",
            &[],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let s: String = get(r, 0)?;
                let state = ScanState::parse(&s)
                    .ok_or_else(|| MetaError::Corrupt(format!("scan state {s:?}")))?;
                Ok((state, u64::try_from(get::<i64>(r, 1)?).unwrap_or(0)))
            })
            .collect()
    }
}
