//! The publish gate on SQLite: pending tags and recorded signatures (migration
//! `0009_publish_gate.sql`). Every function runs inside the caller's transaction, so
//! holding a push's tags and revealing them when a signature arrives are each part of
//! the transaction that stores the manifest concerned (see the crate docs).

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::registry::target_of;
use super::{db_err, parse_digest};
use crate::{MetaError, PendingTag, RecordedSignature, SignatureRecord, TagChange, TagGuard};

/// Whether a signature of `digest` by one of `keys` is recorded.
pub(super) fn signed_by(
    c: &Connection,
    repo_id: i64,
    digest: &str,
    keys: &[String],
) -> Result<bool, MetaError> {
    let mut q = c
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM signatures WHERE repo_id = ?1 AND subject = ?2 AND key = ?3)",
        )
        .map_err(db_err("reading signatures"))?;
    for key in keys {
        let found: bool = q
            .query_row(params![repo_id, digest, key], |r| r.get(0))
            .map_err(db_err("reading signatures"))?;
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Makes `tags` pending on `digest`, replacing pending tags of the same names.
pub(super) fn hold(
    c: &Connection,
    repo_id: i64,
    digest: &str,
    tags: &[String],
    t: i64,
) -> Result<(), MetaError> {
    let mut q = c
        .prepare_cached(
            "INSERT INTO pending_tags (repo_id, name, digest, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, created_at = excluded.created_at",
        )
        .map_err(db_err("holding a tag"))?;
    for name in tags {
        q.execute(params![repo_id, name, digest, t])
            .map_err(db_err("holding a tag"))?;
    }
    Ok(())
}

/// Drops the pending tag `name`; whether there was one.
pub(super) fn unhold(c: &Connection, repo_id: i64, name: &str) -> Result<bool, MetaError> {
    c.prepare_cached("DELETE FROM pending_tags WHERE repo_id = ?1 AND name = ?2")
        .and_then(|mut q| q.execute(params![repo_id, name]))
        .map(|n| n > 0)
        .map_err(db_err("dropping a pending tag"))
}

/// Records that `signature` signs `record.subject` with each of `record.keys`.
pub(super) fn record(
    c: &Connection,
    repo_id: i64,
    signature: &str,
    record: &SignatureRecord,
    t: i64,
) -> Result<(), MetaError> {
    let mut q = c
        .prepare_cached(
            "INSERT INTO signatures (repo_id, subject, signature, key, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
        )
        .map_err(db_err("recording a signature"))?;
    let subject = record.subject.to_string();
    for key in &record.keys {
        q.execute(params![repo_id, subject, signature, key, t])
            .map_err(db_err("recording a signature"))?;
    }
    Ok(())
}

/// The tags a reveal makes visible, and those it drops with the guard's reason.
type Reveal = (Vec<String>, Vec<(String, String)>);

/// Takes every pending tag of `subject` out of waiting: those `guard` accepts are
/// returned to be made visible, those it refuses are dropped with its reason.
pub(super) fn reveal(
    c: &Connection,
    guard: &Option<Arc<dyn TagGuard>>,
    repo: &str,
    repo_id: i64,
    subject: &str,
) -> Result<Reveal, MetaError> {
    let names: Vec<String> = c
        .prepare_cached(
            "SELECT name FROM pending_tags WHERE repo_id = ?1 AND digest = ?2 ORDER BY name",
        )
        .and_then(|mut q| {
            q.query_map(params![repo_id, subject], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(db_err("reading pending tags"))?;
    if names.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut revealed = Vec::new();
    let mut dropped = Vec::new();
    match guard
        .as_ref()
        .filter(|g| names.iter().any(|n| g.concerns(n)))
    {
        None => revealed = names.clone(),
        Some(g) => {
            // The target after the change carries every tag being revealed, as a push of
            // them all would, so the guard sees the release tags that give its version.
            let mut after = target_of(c, repo_id, subject)?;
            for n in &names {
                if !after.tags.contains(n) {
                    after.tags.push(n.clone());
                }
            }
            after.tags.sort();
            let mut seen = HashMap::new();
            for name in &names {
                if !g.concerns(name) {
                    revealed.push(name.clone());
                    continue;
                }
                let current = current_target(c, repo_id, name, &mut seen)?;
                if current.as_ref().is_some_and(|cur| cur.digest == subject) {
                    revealed.push(name.clone());
                    continue;
                }
                let change = TagChange {
                    repo: repo.to_owned(),
                    tag: name.clone(),
                    current,
                    new: Some(after.clone()),
                };
                match g.check(&change) {
                    Ok(()) => revealed.push(name.clone()),
                    Err(why) => dropped.push((name.clone(), why)),
                }
            }
        }
    }
    c.prepare_cached("DELETE FROM pending_tags WHERE repo_id = ?1 AND digest = ?2")
        .and_then(|mut q| q.execute(params![repo_id, subject]))
        .map_err(db_err("revealing pending tags"))?;
    Ok((revealed, dropped))
}

/// Where the visible tag `name` points now.
fn current_target(
    c: &Connection,
    repo_id: i64,
    name: &str,
    seen: &mut HashMap<String, crate::TagTarget>,
) -> Result<Option<crate::TagTarget>, MetaError> {
    let digest: Option<String> = c
        .prepare_cached("SELECT digest FROM tags WHERE repo_id = ?1 AND name = ?2")
        .and_then(|mut q| q.query_row(params![repo_id, name], |r| r.get(0)).optional())
        .map_err(db_err("reading a tag"))?;
    let Some(digest) = digest else {
        return Ok(None);
    };
    if let Some(t) = seen.get(&digest) {
        return Ok(Some(t.clone()));
    }
    let t = target_of(c, repo_id, &digest)?;
    seen.insert(digest, t.clone());
    Ok(Some(t))
}

/// Forgets a deleted manifest's pending tags and every signature recorded by or of it.
pub(super) fn forget_manifest(c: &Connection, repo_id: i64, digest: &str) -> Result<(), MetaError> {
    for sql in [
        "DELETE FROM pending_tags WHERE repo_id = ?1 AND digest = ?2",
        "DELETE FROM signatures WHERE repo_id = ?1 AND (subject = ?2 OR signature = ?2)",
    ] {
        c.execute(sql, params![repo_id, digest])
            .map_err(db_err("deleting a manifest"))?;
    }
    Ok(())
}

/// Forgets the signatures of `subject` recorded by the manifest the cosign v2 tag `name`
/// points at, which stops being a referrer of it when the tag goes.
pub(super) fn forget_legacy_tag(
    c: &Connection,
    repo_id: i64,
    name: &str,
    subject: &str,
) -> Result<(), MetaError> {
    c.execute(
        "DELETE FROM signatures WHERE repo_id = ?1 AND subject = ?3
         AND signature = (SELECT digest FROM tags WHERE repo_id = ?1 AND name = ?2)",
        params![repo_id, name, subject],
    )
    .map_err(db_err("deleting a tag"))?;
    Ok(())
}

/// The pending tags of a repository, in lexical order.
pub(super) fn pending(c: &Connection, repo_id: i64) -> Result<Vec<PendingTag>, MetaError> {
    let rows: Vec<(String, String, i64)> = c
        .prepare_cached(
            "SELECT name, digest, created_at FROM pending_tags WHERE repo_id = ?1 ORDER BY name",
        )
        .and_then(|mut q| {
            q.query_map([repo_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(db_err("listing pending tags"))?;
    rows.into_iter()
        .map(|(tag, digest, since)| {
            Ok(PendingTag {
                tag,
                digest: parse_digest(digest)?,
                since,
            })
        })
        .collect()
}

/// The recorded signatures of a repository, of one subject if given.
pub(super) fn signatures(
    c: &Connection,
    repo_id: i64,
    subject: Option<&str>,
) -> Result<Vec<RecordedSignature>, MetaError> {
    let rows: Vec<(String, String, String, i64)> = c
        .prepare_cached(
            "SELECT subject, signature, key, created_at FROM signatures
             WHERE repo_id = ?1 AND (?2 IS NULL OR subject = ?2)
             ORDER BY subject, signature, key",
        )
        .and_then(|mut q| {
            q.query_map(params![repo_id, subject], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()
        })
        .map_err(db_err("listing signatures"))?;
    rows.into_iter()
        .map(|(subject, signature, key, at)| {
            Ok(RecordedSignature {
                subject: parse_digest(subject)?,
                signature: parse_digest(signature)?,
                key,
                at,
            })
        })
        .collect()
}
