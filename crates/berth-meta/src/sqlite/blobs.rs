//! Blob links and the claim/tombstone protocol that orders placing a blob's bytes against
//! deleting them across processes (see the crate docs). Each function is the body of one
//! transaction; [`registry`](super::registry) runs them on the writer thread.

use berth_oci::{Digest, RepoName};
use rusqlite::{params, OptionalExtension, Transaction};

use super::registry::{ensure_repo, repo_id};
use super::{db_err, now};
use crate::{BlobClaim, MetaError, Unlinked, CLAIM_STALE_SECS, TOMBSTONE_STALE_SECS};

/// Unix seconds before which a claim is stale.
fn claim_cutoff() -> i64 {
    now() - CLAIM_STALE_SECS as i64
}

/// Refuses with [`MetaError::BlobBusy`] while a fresh deletion tombstone of `digest`
/// exists, and removes a stale one: its deleter died before saying it was done.
fn check_not_deleting(tx: &Transaction<'_>, digest: &Digest) -> Result<(), MetaError> {
    let d = digest.to_string();
    let since: Option<i64> = tx
        .prepare_cached("SELECT created_at FROM blob_tombstones WHERE digest = ?1")
        .and_then(|mut s| s.query_row([&d], |r| r.get(0)).optional())
        .map_err(db_err("checking blob deletions"))?;
    match since {
        None => Ok(()),
        Some(at) if now() - at < TOMBSTONE_STALE_SECS as i64 => {
            Err(MetaError::BlobBusy(digest.clone()))
        }
        Some(_) => {
            tracing::warn!(digest = %d, "removing a stale blob deletion tombstone");
            tx.execute("DELETE FROM blob_tombstones WHERE digest = ?1", [&d])
                .map_err(db_err("removing a stale tombstone"))?;
            Ok(())
        }
    }
}

/// Inserts the link of `digest` into repository `repo_id` (kept if already there).
fn insert_link(
    tx: &Transaction<'_>,
    repo_id: i64,
    digest: &str,
    size: u64,
) -> Result<(), MetaError> {
    tx.prepare_cached(
        "INSERT INTO blobs (repo_id, digest, size, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (repo_id, digest) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![repo_id, digest, size as i64, now()]))
    .map_err(db_err("linking a blob"))?;
    Ok(())
}

/// Plain link: refused while the digest is being deleted.
pub(super) fn link(
    tx: &Transaction<'_>,
    repo: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<(), MetaError> {
    check_not_deleting(tx, digest)?;
    let id = ensure_repo(tx, repo.as_str())?;
    insert_link(tx, id, &digest.to_string(), size)
}

/// Takes a claim on `digest`, also forgetting every stale claim.
pub(super) fn claim(tx: &Transaction<'_>, digest: &Digest) -> Result<BlobClaim, MetaError> {
    check_not_deleting(tx, digest)?;
    let t = now();
    tx.prepare_cached("DELETE FROM blob_claims WHERE created_at <= ?1")
        .and_then(|mut s| s.execute([t - CLAIM_STALE_SECS as i64]))
        .map_err(db_err("forgetting stale claims"))?;
    let id: String = tx
        .prepare_cached(
            "INSERT INTO blob_claims (id, digest, created_at)
             VALUES (lower(hex(randomblob(16))), ?1, ?2) RETURNING id",
        )
        .and_then(|mut s| s.query_row(params![digest.to_string(), t], |r| r.get(0)))
        .map_err(db_err("claiming a blob"))?;
    Ok(BlobClaim {
        id,
        digest: digest.clone(),
    })
}

/// Links the claimed digest into `repo` and ends the claim.
pub(super) fn link_claimed(
    tx: &Transaction<'_>,
    claim: &BlobClaim,
    repo: &RepoName,
    size: u64,
) -> Result<(), MetaError> {
    let d = claim.digest.to_string();
    let since: Option<i64> = tx
        .prepare_cached("SELECT created_at FROM blob_claims WHERE id = ?1 AND digest = ?2")
        .and_then(|mut s| s.query_row(params![claim.id, d], |r| r.get(0)).optional())
        .map_err(db_err("reading a blob claim"))?;
    // A stale claim may have let a deletion through (and that deletion may even be done,
    // its tombstone gone): the bytes cannot be trusted to be there.
    if since.is_none_or(|at| at <= claim_cutoff()) {
        return Err(MetaError::ClaimLost(claim.id.clone()));
    }
    let id = ensure_repo(tx, repo.as_str())?;
    insert_link(tx, id, &d, size)?;
    release(tx, claim)
}

/// Ends a claim without linking.
pub(super) fn release(tx: &Transaction<'_>, claim: &BlobClaim) -> Result<(), MetaError> {
    tx.prepare_cached("DELETE FROM blob_claims WHERE id = ?1")
        .and_then(|mut s| s.execute([&claim.id]))
        .map_err(db_err("releasing a blob claim"))?;
    Ok(())
}

/// Removes the tombstone of a finished deletion.
pub(super) fn deletion_done(tx: &Transaction<'_>, digest: &Digest) -> Result<(), MetaError> {
    tx.prepare_cached("DELETE FROM blob_tombstones WHERE digest = ?1")
        .and_then(|mut s| s.execute([digest.to_string()]))
        .map_err(db_err("ending a blob deletion"))?;
    Ok(())
}

/// Removes a link, refusing while manifests of the repository reference the blob; when
/// nothing links or claims the digest any more, records a tombstone and says so.
pub(super) fn unlink(
    tx: &Transaction<'_>,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Unlinked, MetaError> {
    let Some(id) = repo_id(tx, repo.as_str())? else {
        return Ok(Unlinked::NotLinked);
    };
    let d = digest.to_string();
    let users: Vec<String> = tx
        .prepare_cached(
            "SELECT manifest FROM manifest_refs WHERE repo_id = ?1 AND target = ?2 AND kind = 0 LIMIT 5",
        )
        .and_then(|mut s| {
            s.query_map(params![id, d], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .map_err(db_err("checking blob references"))?;
    let removed = tx
        .execute(
            "DELETE FROM blobs WHERE repo_id = ?1 AND digest = ?2",
            params![id, d],
        )
        .map_err(db_err("unlinking a blob"))?;
    if removed == 0 {
        return Ok(Unlinked::NotLinked);
    }
    if !users.is_empty() {
        return Err(MetaError::BlobInUse(users));
    }
    let (linked, claimed): (bool, bool) = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1),
                    EXISTS (SELECT 1 FROM blob_claims WHERE digest = ?1 AND created_at > ?2)",
            params![d, claim_cutoff()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(db_err("checking blob links"))?;
    if linked || claimed {
        return Ok(Unlinked::Removed { orphaned: false });
    }
    tx.execute(
        "INSERT INTO blob_tombstones (digest, created_at) VALUES (?1, ?2)
         ON CONFLICT (digest) DO UPDATE SET created_at = excluded.created_at",
        params![d, now()],
    )
    .map_err(db_err("recording a blob deletion"))?;
    Ok(Unlinked::Removed { orphaned: true })
}

/// Links `digest` into `to` if `from` links it, answering its size.
pub(super) fn mount(
    tx: &Transaction<'_>,
    from: &RepoName,
    to: &RepoName,
    digest: &Digest,
) -> Result<Option<u64>, MetaError> {
    let Some(from_id) = repo_id(tx, from.as_str())? else {
        return Ok(None);
    };
    let d = digest.to_string();
    let size: Option<i64> = tx
        .prepare_cached("SELECT size FROM blobs WHERE repo_id = ?1 AND digest = ?2")
        .and_then(|mut s| s.query_row(params![from_id, d], |r| r.get(0)).optional())
        .map_err(db_err("looking up a blob"))?;
    let Some(size) = size else {
        return Ok(None);
    };
    let size = size as u64;
    let to_id = ensure_repo(tx, to.as_str())?;
    insert_link(tx, to_id, &d, size)?;
    Ok(Some(size))
}

#[cfg(test)]
mod tests {
    use berth_oci::{Digest, RepoName};

    use crate::sqlite::{db_err, SqliteStore};
    use crate::{MetaError, MetadataStore, Unlinked, CLAIM_STALE_SECS, TOMBSTONE_STALE_SECS};

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(dir.path().join("meta.db")).unwrap();
        (dir, db)
    }

    /// Moves every claim and tombstone `secs` seconds into the past.
    async fn age(db: &SqliteStore, secs: u64) {
        db.write(move |tx| {
            tx.execute(
                "UPDATE blob_claims SET created_at = created_at - ?1",
                [secs],
            )
            .map_err(db_err("ageing claims"))?;
            tx.execute(
                "UPDATE blob_tombstones SET created_at = created_at - ?1",
                [secs],
            )
            .map_err(db_err("ageing tombstones"))?;
            Ok(())
        })
        .await
        .unwrap();
    }

    /// Staleness needs rows aged by hand, which only the backend can do; the rest of the
    /// protocol is in the conformance suite.
    #[tokio::test]
    async fn stale_tombstones_and_claims_are_ignored() {
        let (_dir, db) = open();
        let a = repo("a");
        let d = Digest::sha256(b"layer");
        // A deleter that died: its tombstone blocks for a while, then no more.
        db.blob_link(&a, &d, 5).await.unwrap();
        assert_eq!(
            db.blob_unlink(&a, &d).await.unwrap(),
            Unlinked::Removed { orphaned: true }
        );
        assert!(matches!(
            db.blob_claim(&d).await,
            Err(MetaError::BlobBusy(_))
        ));
        age(&db, TOMBSTONE_STALE_SECS + 1).await;
        let claim = db.blob_claim(&d).await.unwrap();
        db.blob_link_claimed(&claim, &a, 5, None).await.unwrap();
        // The same for a plain link.
        assert_eq!(
            db.blob_unlink(&a, &d).await.unwrap(),
            Unlinked::Removed { orphaned: true }
        );
        age(&db, TOMBSTONE_STALE_SECS + 1).await;
        db.blob_link(&a, &d, 5).await.unwrap();
        // A placer that died: its claim protects the bytes for a while, then no more, and
        // it can no longer be linked.
        let claim = db.blob_claim(&d).await.unwrap();
        age(&db, CLAIM_STALE_SECS + 1).await;
        assert_eq!(
            db.blob_unlink(&a, &d).await.unwrap(),
            Unlinked::Removed { orphaned: true }
        );
        db.blob_deletion_done(&d).await.unwrap();
        assert!(matches!(
            db.blob_link_claimed(&claim, &a, 5, None).await,
            Err(MetaError::ClaimLost(_))
        ));
        assert_eq!(db.blob_size(&a, &d).await.unwrap(), None);
    }
}
