//! Blob links and the claim/tombstone protocol that orders placing a blob's bytes against
//! deleting them (see the crate docs). Each function is the body of one transaction;
//! [`registry`](super::registry) runs them on the writer thread.
//!
//! Claims live in memory ([`Claims`]), not in the `blob_claims` table: a SQLite database
//! is written by one process only (the data directory's lock excludes a second server),
//! so only that process's claims can protect bytes, and a crash ends every placement the
//! claims protected. Kept in memory, a claim costs no database page: it was four WAL
//! pages per pushed blob (the claim's row and index entry, written and then deleted).
//! Claims are still taken, checked and ended on the writer thread, inside the same
//! transactions as the tombstones and links they are ordered against, so the protocol is
//! the one the shared-database backends follow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use berth_oci::{Digest, RepoName};
use rusqlite::{params, OptionalExtension, Transaction};

use super::registry::{ensure_repo, repo_id};
use super::{db_err, now};
use crate::{BlobClaim, MetaError, Unlinked, CLAIM_STALE_SECS, TOMBSTONE_STALE_SECS};

/// The live claims of this process: id -> (digest, when taken, unix seconds).
#[derive(Debug, Default)]
pub(super) struct Claims {
    live: Mutex<HashMap<String, (Digest, i64)>>,
    next: AtomicU64,
}

impl Claims {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Digest, i64)>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a claim of `digest`; forgets stale ones (their placers died or hung).
    fn insert(&self, digest: &Digest) -> String {
        let id = format!("{:016x}", self.next.fetch_add(1, Ordering::Relaxed));
        let cutoff = claim_cutoff();
        let mut live = self.live();
        live.retain(|_, (_, at)| *at > cutoff);
        live.insert(id.clone(), (digest.clone(), now()));
        id
    }

    /// Whether `claim` exists and is not stale.
    fn is_live(&self, claim: &BlobClaim) -> bool {
        self.live()
            .get(&claim.id)
            .is_some_and(|(d, at)| *d == claim.digest && *at > claim_cutoff())
    }

    /// Whether any live claim of `digest` exists.
    pub(super) fn any_live(&self, digest: &Digest) -> bool {
        let cutoff = claim_cutoff();
        self.live()
            .values()
            .any(|(d, at)| d == digest && *at > cutoff)
    }

    fn end(&self, claim: &BlobClaim) {
        self.live().remove(&claim.id);
    }

    /// Moves every claim `secs` seconds into the past (tests of staleness).
    #[cfg(test)]
    pub(super) fn age(&self, secs: i64) {
        for (_, at) in self.live().values_mut() {
            *at -= secs;
        }
    }
}

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
pub(super) fn claim(
    tx: &Transaction<'_>,
    claims: &Claims,
    digest: &Digest,
) -> Result<BlobClaim, MetaError> {
    check_not_deleting(tx, digest)?;
    Ok(BlobClaim {
        id: claims.insert(digest),
        digest: digest.clone(),
    })
}

/// Links the claimed digest into `repo` and ends the claim.
pub(super) fn link_claimed(
    tx: &Transaction<'_>,
    claims: &Claims,
    claim: &BlobClaim,
    repo: &RepoName,
    size: u64,
) -> Result<(), MetaError> {
    // A stale claim may have let a deletion through (and that deletion may even be done,
    // its tombstone gone): the bytes cannot be trusted to be there.
    if !claims.is_live(claim) {
        return Err(MetaError::ClaimLost(claim.id.clone()));
    }
    let id = ensure_repo(tx, repo.as_str())?;
    insert_link(tx, id, &claim.digest.to_string(), size)?;
    // Ended only once the link is in the transaction: should the commit still fail, the
    // claim outlives it and at worst goes stale.
    claims.end(claim);
    Ok(())
}

/// Ends a claim without linking.
pub(super) fn release(claims: &Claims, claim: &BlobClaim) {
    claims.end(claim);
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
    claims: &Claims,
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
    let linked: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)",
            [&d],
            |r| r.get(0),
        )
        .map_err(db_err("checking blob links"))?;
    if linked || claims.any_live(digest) {
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
        db.inner.claims.age(secs as i64);
        db.write(move |tx| {
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
