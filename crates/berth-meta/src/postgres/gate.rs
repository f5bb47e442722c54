//! The publish gate on PostgreSQL: pending tags and recorded signatures. Every function
//! runs inside the caller's transaction, which holds the repository's row lock, so
//! holding a push's tags and revealing them when a signature arrives are ordered as on
//! SQLite's single writer (see the crate docs).

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::GenericClient;

use super::registry::{tag_target, target_of};
use super::{execute, get, parse_digest, query};
use crate::{
    MetaError, PendingTag, RecordedSignature, SignatureRecord, TagChange, TagGuard, TagTarget,
};

/// Whether a signature of `digest` by one of `keys` is recorded.
pub(super) async fn signed_by<C: GenericClient>(
    c: &C,
    repo_id: i64,
    digest: &str,
    keys: &[String],
) -> Result<bool, MetaError> {
    let rows = query(
        c,
        "reading signatures",
        "SELECT 1 FROM signatures WHERE repo_id = $1 AND subject = $2 AND key = ANY($3) LIMIT 1",
        &[&repo_id, &digest, &keys],
    )
    .await?;
    Ok(!rows.is_empty())
}

/// Makes `tags` pending on `digest`, replacing pending tags of the same names.
pub(super) async fn hold<C: GenericClient>(
    c: &C,
    repo_id: i64,
    digest: &str,
    tags: &[String],
    t: i64,
) -> Result<(), MetaError> {
    for name in tags {
        execute(
            c,
            "holding a tag",
            "INSERT INTO pending_tags (repo_id, name, digest, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, created_at = excluded.created_at",
            &[&repo_id, name, &digest, &t],
        )
        .await?;
    }
    Ok(())
}

/// Drops the pending tag `name`; whether there was one.
pub(super) async fn unhold<C: GenericClient>(
    c: &C,
    repo_id: i64,
    name: &str,
) -> Result<bool, MetaError> {
    let n = execute(
        c,
        "dropping a pending tag",
        "DELETE FROM pending_tags WHERE repo_id = $1 AND name = $2",
        &[&repo_id, &name],
    )
    .await?;
    Ok(n > 0)
}

/// Records that `signature` signs `record.subject` with each of `record.keys`.
pub(super) async fn record<C: GenericClient>(
    c: &C,
    repo_id: i64,
    signature: &str,
    record: &SignatureRecord,
    t: i64,
) -> Result<(), MetaError> {
    let subject = record.subject.to_string();
    for key in &record.keys {
        execute(
            c,
            "recording a signature",
            "INSERT INTO signatures (repo_id, subject, signature, key, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&repo_id, &subject, &signature, key, &t],
        )
        .await?;
    }
    Ok(())
}

/// The tags a reveal makes visible, and those it drops with the guard's reason.
pub(super) type Reveal = (Vec<String>, Vec<(String, String)>);

/// Takes every pending tag of `subject` out of waiting: those `guard` accepts are
/// returned to be made visible, those it refuses are dropped with its reason.
pub(super) async fn reveal<C: GenericClient>(
    c: &C,
    guard: &Option<Arc<dyn TagGuard>>,
    repo: &str,
    repo_id: i64,
    subject: &str,
) -> Result<Reveal, MetaError> {
    let names: Vec<String> = query(
        c,
        "reading pending tags",
        "SELECT name FROM pending_tags WHERE repo_id = $1 AND digest = $2 ORDER BY name",
        &[&repo_id, &subject],
    )
    .await?
    .iter()
    .map(|r| get(r, 0))
    .collect::<Result<_, _>>()?;
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
            let mut after = target_of(c, repo_id, subject).await?;
            for n in &names {
                if !after.tags.contains(n) {
                    after.tags.push(n.clone());
                }
            }
            after.tags.sort();
            let mut seen: HashMap<String, TagTarget> = HashMap::new();
            for name in &names {
                if !g.concerns(name) {
                    revealed.push(name.clone());
                    continue;
                }
                let current = tag_target(c, repo_id, name, &mut seen).await?;
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
    execute(
        c,
        "revealing pending tags",
        "DELETE FROM pending_tags WHERE repo_id = $1 AND digest = $2",
        &[&repo_id, &subject],
    )
    .await?;
    Ok((revealed, dropped))
}

/// Forgets a deleted manifest's pending tags and every signature recorded by or of it.
pub(super) async fn forget_manifest<C: GenericClient>(
    c: &C,
    repo_id: i64,
    digest: &str,
) -> Result<(), MetaError> {
    for sql in [
        "DELETE FROM pending_tags WHERE repo_id = $1 AND digest = $2",
        "DELETE FROM signatures WHERE repo_id = $1 AND (subject = $2 OR signature = $2)",
    ] {
        execute(c, "deleting a manifest", sql, &[&repo_id, &digest]).await?;
    }
    Ok(())
}

/// Forgets the signatures of `subject` recorded by the manifest the cosign v2 tag `name`
/// points at, which stops being a referrer of it when the tag goes.
pub(super) async fn forget_legacy_tag<C: GenericClient>(
    c: &C,
    repo_id: i64,
    name: &str,
    subject: &str,
) -> Result<(), MetaError> {
    execute(
        c,
        "deleting a tag",
        "DELETE FROM signatures WHERE repo_id = $1 AND subject = $3
         AND signature = (SELECT digest FROM tags WHERE repo_id = $1 AND name = $2)",
        &[&repo_id, &name, &subject],
    )
    .await?;
    Ok(())
}

/// The pending tags of a repository, in lexical order.
pub(super) async fn pending<C: GenericClient>(
    c: &C,
    repo_id: i64,
) -> Result<Vec<PendingTag>, MetaError> {
    query(
        c,
        "listing pending tags",
        "SELECT name, digest, created_at FROM pending_tags WHERE repo_id = $1 ORDER BY name",
        &[&repo_id],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(PendingTag {
            tag: get(r, 0)?,
            digest: parse_digest(get(r, 1)?)?,
            since: get(r, 2)?,
        })
    })
    .collect()
}

/// The recorded signatures of a repository, of one subject if given.
pub(super) async fn signatures<C: GenericClient>(
    c: &C,
    repo_id: i64,
    subject: Option<&str>,
) -> Result<Vec<RecordedSignature>, MetaError> {
    query(
        c,
        "listing signatures",
        "SELECT subject, signature, key, created_at FROM signatures
         WHERE repo_id = $1 AND ($2::text IS NULL OR subject = $2)
         ORDER BY subject, signature, key",
        &[&repo_id, &subject],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(RecordedSignature {
            subject: parse_digest(get(r, 0)?)?,
            signature: parse_digest(get(r, 1)?)?,
            key: get(r, 2)?,
            at: get(r, 3)?,
        })
    })
    .collect()
}
