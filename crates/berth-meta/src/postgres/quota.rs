//! Quota reservations (see [`MetadataStore::quota_reserve`](crate::MetadataStore::quota_reserve))
//! as rows of `quota_reservations` (migration 0006), since every replica must see them.
//!
//! A reservation's transaction takes the repository's quota advisory lock, so two
//! reservations of one repository, from any replica, are decided one after the other;
//! the second one's count runs after the first committed and so includes it. The count
//! is one statement, hence one snapshot: a reservation being turned into usage (its
//! blob linked or manifest stored, in another transaction) is seen either before that
//! commit, as a reservation, or after it, as usage, never as neither. Links and
//! manifest writes need not take the lock: they only ever move bytes from reserved to
//! stored.

use super::{execute, get, now, pg_err, query_one, PgStore};
use crate::{MetaError, QuotaReservation, Reserved, ReservedKind, RESERVATION_STALE_SECS};

/// The first key of the quota advisory locks ("quot" in ASCII), apart from the digest
/// locks' key.
const QUOTA_LOCK: i32 = 0x7175_6f74;

/// The stored form of a kind.
fn kind_code(kind: ReservedKind) -> i16 {
    match kind {
        ReservedKind::Blob => 0,
        ReservedKind::Manifest => 1,
    }
}

/// What the repository stores, the live reservations of other ids whose content it does
/// not hold yet (each kind and digest once, at its largest), whether it holds the
/// reserved content already, and what other reservations of that same content hold:
/// one statement, so one snapshot.
const COUNT: &str = "
SELECT
  coalesce((SELECT (SELECT coalesce(sum(b.size), 0) FROM blobs b WHERE b.repo_id = r.id)
                 + (SELECT coalesce(sum(octet_length(m.content)), 0) FROM manifests m WHERE m.repo_id = r.id)
            FROM repositories r WHERE r.name = $1), 0)::bigint,
  coalesce((SELECT sum(x.bytes) FROM (
              SELECT max(q.bytes) AS bytes FROM quota_reservations q
              WHERE q.repo = $1 AND q.id <> $2 AND q.created_at > $3
                AND NOT (q.kind = 0 AND EXISTS (SELECT 1 FROM blobs b JOIN repositories r ON r.id = b.repo_id
                                                WHERE r.name = q.repo AND b.digest = q.digest))
                AND NOT (q.kind = 1 AND EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repo_id
                                                WHERE r.name = q.repo AND m.digest = q.digest))
              GROUP BY q.kind, q.digest) x), 0)::bigint,
  CASE WHEN $4::smallint = 0
       THEN EXISTS (SELECT 1 FROM blobs b JOIN repositories r ON r.id = b.repo_id
                    WHERE r.name = $1 AND b.digest = $5)
       ELSE EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repo_id
                    WHERE r.name = $1 AND m.digest = $5)
  END,
  coalesce((SELECT max(q.bytes) FROM quota_reservations q
            WHERE q.repo = $1 AND q.id <> $2 AND q.created_at > $3
              AND q.kind = $4::smallint AND q.digest = $5), 0)::bigint";

impl PgStore {
    pub(super) async fn reserve(
        &self,
        r: &QuotaReservation,
        limit: u64,
    ) -> Result<Reserved, MetaError> {
        let ctx = "reserving quota";
        let (repo, digest, kind) = (r.repo.as_str(), r.digest.to_string(), kind_code(r.kind));
        let cutoff = now() - RESERVATION_STALE_SECS as i64;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err(ctx))?;
        execute(
            &tx,
            ctx,
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&QUOTA_LOCK, &repo],
        )
        .await?;
        let row = query_one(&tx, ctx, COUNT, &[&repo, &r.id, &cutoff, &kind, &digest]).await?;
        let stored = get::<i64>(&row, 0)?.max(0) as u64;
        let reserved = get::<i64>(&row, 1)?.max(0) as u64;
        if get::<bool>(&row, 2)? {
            return Ok(Reserved::Granted);
        }
        // What another reservation of the same content holds is part of this one's bytes.
        let same = get::<i64>(&row, 3)?.max(0) as u64;
        let used = stored.saturating_add(reserved);
        if used.saturating_add(r.bytes.saturating_sub(same)) > limit {
            return Ok(Reserved::Refused { used });
        }
        // Reservations of holders that died go here, one repository at a time.
        execute(
            &tx,
            ctx,
            "DELETE FROM quota_reservations WHERE repo = $1 AND created_at <= $2",
            &[&repo, &cutoff],
        )
        .await?;
        let bytes = i64::try_from(r.bytes).unwrap_or(i64::MAX);
        execute(
            &tx,
            ctx,
            "INSERT INTO quota_reservations (id, repo, kind, digest, bytes, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET repo = excluded.repo, kind = excluded.kind,
               digest = excluded.digest, bytes = excluded.bytes, created_at = excluded.created_at",
            &[&r.id, &repo, &kind, &digest, &bytes, &now()],
        )
        .await?;
        tx.commit().await.map_err(pg_err(ctx))?;
        Ok(Reserved::Granted)
    }

    pub(super) async fn release(&self, id: &str) -> Result<(), MetaError> {
        let c = self.client().await?;
        execute(
            &c,
            "releasing a quota reservation",
            "DELETE FROM quota_reservations WHERE id = $1",
            &[&id],
        )
        .await?;
        Ok(())
    }
}
