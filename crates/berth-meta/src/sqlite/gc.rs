//! The garbage collector's queries and conditional writes on SQLite. Each write is the
//! body of one short transaction over a small batch, and re-checks, row by row, the
//! condition the collector decided on, so that a push, tag move or mount committed
//! since the collector read wins (see [`crate::gc`]).

use std::collections::HashMap;

use berth_oci::{Digest, RepoName};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::registry::repo_id;
use super::{db_err, now, parse_digest};
use crate::gc::{BlobHolders, Link, LinkCursor, ManifestNode};
use crate::{MetaError, TOMBSTONE_STALE_SECS};

pub(super) fn unreferenced_links(
    c: &Connection,
    after: Option<&LinkCursor>,
    linked_before: i64,
    limit: usize,
) -> Result<Vec<Link>, MetaError> {
    let (repo, digest) = after
        .map(|a| (a.repo.clone(), a.digest.to_string()))
        .unwrap_or_default();
    let limit = limit.clamp(1, i64::MAX as usize) as i64;
    let rows = c
        .prepare_cached(
            "SELECT r.name, b.digest, b.size, b.created_at
             FROM repositories r JOIN blobs b ON b.repo_id = r.id
             WHERE (r.name > ?1 OR (r.name = ?1 AND b.digest > ?2))
               AND b.created_at <= ?3
               AND NOT EXISTS (SELECT 1 FROM manifest_refs m
                               WHERE m.repo_id = b.repo_id AND m.target = b.digest AND m.kind = 0)
             ORDER BY r.name, b.digest LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![repo, digest, linked_before, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(db_err("listing unreferenced blob links"))?;
    rows.into_iter()
        .map(|(repo, digest, size, linked_at)| {
            Ok(Link {
                repo,
                digest: parse_digest(digest)?,
                size: size as u64,
                linked_at,
            })
        })
        .collect()
}

pub(super) fn unlink(
    tx: &Transaction<'_>,
    links: &[Link],
    linked_before: i64,
) -> Result<Vec<Link>, MetaError> {
    let mut delete = tx
        .prepare_cached(
            "DELETE FROM blobs
             WHERE repo_id = (SELECT id FROM repositories WHERE name = ?1) AND digest = ?2
               AND created_at <= ?3
               AND NOT EXISTS (SELECT 1 FROM manifest_refs m
                               WHERE m.repo_id = blobs.repo_id AND m.target = blobs.digest AND m.kind = 0)",
        )
        .map_err(db_err("unlinking unreferenced blobs"))?;
    let mut removed = Vec::new();
    for link in links {
        let n = delete
            .execute(params![link.repo, link.digest.to_string(), linked_before])
            .map_err(db_err("unlinking unreferenced blobs"))?;
        if n > 0 {
            removed.push(link.clone());
        }
    }
    Ok(removed)
}

pub(super) fn tombstone(
    tx: &Transaction<'_>,
    claims: &super::blobs::Claims,
    digests: &[Digest],
) -> Result<Vec<Digest>, MetaError> {
    let t = now();
    // A tombstone younger than TOMBSTONE_STALE_SECS belongs to a deleter at work (another
    // collector, a DELETE request): it is left alone and the digest skipped. An older one
    // was abandoned and is taken over.
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO blob_tombstones (digest, created_at)
             SELECT ?1, ?2
             WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)
             ON CONFLICT (digest) DO UPDATE SET created_at = excluded.created_at
             WHERE blob_tombstones.created_at <= ?3",
        )
        .map_err(db_err("recording blob deletions"))?;
    let mut taken = Vec::new();
    for d in digests {
        // A live claim (this process's, in memory: see `blobs::Claims`) is a commit
        // placing these bytes right now.
        if claims.any_live(d) {
            continue;
        }
        let n = insert
            .execute(params![d.to_string(), t, t - TOMBSTONE_STALE_SECS as i64])
            .map_err(db_err("recording blob deletions"))?;
        if n > 0 {
            taken.push(d.clone());
        }
    }
    Ok(taken)
}

pub(super) fn deletions_done(tx: &Transaction<'_>, digests: &[Digest]) -> Result<(), MetaError> {
    let mut delete = tx
        .prepare_cached("DELETE FROM blob_tombstones WHERE digest = ?1")
        .map_err(db_err("ending blob deletions"))?;
    for d in digests {
        delete
            .execute([d.to_string()])
            .map_err(db_err("ending blob deletions"))?;
    }
    Ok(())
}

pub(super) fn link_counts(c: &Connection, digests: &[Digest]) -> Result<Vec<u64>, MetaError> {
    let mut count = c
        .prepare_cached("SELECT count(*) FROM blobs WHERE digest = ?1")
        .map_err(db_err("counting blob links"))?;
    digests
        .iter()
        .map(|d| {
            count
                .query_row([d.to_string()], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(db_err("counting blob links"))
        })
        .collect()
}

pub(super) fn manifests(c: &Connection, repo: &RepoName) -> Result<Vec<ManifestNode>, MetaError> {
    let Some(id) = repo_id(c, repo.as_str())? else {
        return Ok(Vec::new());
    };
    let err = db_err("reading the manifest graph");
    let mut tags: HashMap<String, Vec<String>> = HashMap::new();
    let rows = c
        .prepare_cached("SELECT digest, name FROM tags WHERE repo_id = ?1 ORDER BY name")
        .and_then(|mut s| {
            s.query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(&err)?;
    for (digest, name) in rows {
        tags.entry(digest).or_default().push(name);
    }
    let mut children: HashMap<String, Vec<Digest>> = HashMap::new();
    let rows = c
        .prepare_cached(
            "SELECT manifest, target FROM manifest_refs WHERE repo_id = ?1 AND kind = 1
             ORDER BY manifest, target",
        )
        .and_then(|mut s| {
            s.query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(&err)?;
    for (manifest, target) in rows {
        children
            .entry(manifest)
            .or_default()
            .push(parse_digest(target)?);
    }
    let rows = c
        .prepare_cached(
            "SELECT digest, created_at, subject FROM manifests WHERE repo_id = ?1 ORDER BY digest",
        )
        .and_then(|mut s| {
            s.query_map([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(&err)?;
    rows.into_iter()
        .map(|(digest, created_at, subject)| {
            Ok(ManifestNode {
                tags: tags.remove(&digest).unwrap_or_default(),
                children: children.remove(&digest).unwrap_or_default(),
                subject: subject.map(parse_digest).transpose()?,
                digest: parse_digest(digest)?,
                created_at,
            })
        })
        .collect()
}

pub(super) fn delete_manifests(
    tx: &Transaction<'_>,
    repo: &RepoName,
    digests: &[Digest],
    created_before: i64,
) -> Result<Vec<Digest>, MetaError> {
    let Some(id) = repo_id(tx, repo.as_str())? else {
        return Ok(Vec::new());
    };
    let err = db_err("deleting unreferenced manifests");
    let mut delete = tx
        .prepare_cached(
            "DELETE FROM manifests
             WHERE repo_id = ?1 AND digest = ?2 AND created_at <= ?3
               AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = ?1 AND t.digest = ?2)
               AND NOT EXISTS (SELECT 1 FROM pending_tags p WHERE p.repo_id = ?1 AND p.digest = ?2)
               AND NOT EXISTS (SELECT 1 FROM manifest_refs r
                               WHERE r.repo_id = ?1 AND r.target = ?2 AND r.kind = 1 AND r.manifest <> ?2)
               AND (subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s
                                                   WHERE s.repo_id = ?1 AND s.digest = manifests.subject))",
        )
        .map_err(&err)?;
    let mut refs = tx
        .prepare_cached("DELETE FROM manifest_refs WHERE repo_id = ?1 AND manifest = ?2")
        .map_err(&err)?;
    let mut scans = tx
        .prepare_cached("DELETE FROM scans WHERE repo = ?1 AND digest = ?2")
        .map_err(&err)?;
    let mut deleted = Vec::new();
    for d in digests {
        let s = d.to_string();
        if delete
            .execute(params![id, s, created_before])
            .map_err(&err)?
            > 0
        {
            refs.execute(params![id, s]).map_err(&err)?;
            // What the publish gate recorded about it goes with it, as in `manifest_delete`.
            super::gate::forget_manifest(tx, id, &s)?;
            // So does its scan, done or still queued: nothing else would ever remove it,
            // since no `ManifestDeleted` event follows a collection.
            scans.execute(params![repo.as_str(), s]).map_err(&err)?;
            deleted.push(d.clone());
        }
    }
    Ok(deleted)
}

pub(super) fn blob_holders(
    c: &Connection,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<BlobHolders>, MetaError> {
    let Some(id) = repo_id(c, repo.as_str())? else {
        return Ok(None);
    };
    let err = db_err("reading what holds a blob");
    let d = digest.to_string();
    let link: Option<(i64, i64)> = c
        .prepare_cached("SELECT size, created_at FROM blobs WHERE repo_id = ?1 AND digest = ?2")
        .and_then(|mut s| {
            s.query_row(params![id, d], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(&err)?;
    let Some((size, linked_at)) = link else {
        return Ok(None);
    };
    let manifests = c
        .prepare_cached(
            "SELECT manifest FROM manifest_refs WHERE repo_id = ?1 AND target = ?2 AND kind = 0
             ORDER BY manifest",
        )
        .and_then(|mut s| {
            s.query_map(params![id, d], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(&err)?
        .into_iter()
        .map(parse_digest)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(BlobHolders {
        size: size as u64,
        linked_at,
        manifests,
    }))
}
