//! The stale-base report on PostgreSQL: recording an image's layers with its base, and
//! the query for images whose base tag moved (the same rules as SQLite's `bases`).

use deadpool_postgres::GenericClient;

use super::{execute, get, now, parse_digest, query, query_opt};
use crate::bases::{layers_key, prefix_keys, ImageBase, ImageLayers, StaleImage};
use crate::MetaError;

/// The base recorded for the image `digest` of `repo_id`: `None` when the image is not
/// recorded, `Some(None)` when it is, on no base.
async fn recorded<C: GenericClient>(
    c: &C,
    repo_id: i64,
    digest: &str,
) -> Result<Option<Option<ImageBase>>, MetaError> {
    let Some(row) = query_opt(
        c,
        "reading image layers",
        "SELECT base_repo, base_tag, base_digest, base_declared FROM image_layers
         WHERE repo_id = $1 AND digest = $2",
        &[&repo_id, &digest],
    )
    .await?
    else {
        return Ok(None);
    };
    let (repo, tag, digest): (Option<String>, Option<String>, Option<String>) =
        (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
    Ok(Some(match (repo, tag, digest) {
        (Some(repo), Some(tag), Some(digest)) => Some(ImageBase {
            repo,
            tag,
            digest: parse_digest(digest)?,
            declared: get(&row, 3)?,
        }),
        _ => None,
    }))
}

/// The tagged image whose layer list is the longest proper prefix of `image`'s.
async fn prefix_base<C: GenericClient>(
    c: &C,
    image: &ImageLayers,
) -> Result<Option<ImageBase>, MetaError> {
    // Longest first, so the first prefix with a tagged image is the base.
    for key in prefix_keys(&image.layers) {
        let found = query_opt(
            c,
            "finding a base image",
            "SELECT r.name, t.name, t.digest FROM image_layers il
             JOIN tags t ON t.repo_id = il.repo_id AND t.digest = il.digest
             JOIN repositories r ON r.id = t.repo_id
             WHERE il.layers = $1
             ORDER BY t.updated_at DESC, r.name, t.name LIMIT 1",
            &[&key],
        )
        .await?;
        if let Some(row) = found {
            return Ok(Some(ImageBase {
                repo: get(&row, 0)?,
                tag: get(&row, 1)?,
                digest: parse_digest(get(&row, 2)?)?,
                declared: false,
            }));
        }
    }
    Ok(None)
}

/// Records `image` in the repository `repo_id` (an image already recorded keeps its
/// record) and returns its base.
pub(super) async fn put<C: GenericClient>(
    c: &C,
    repo_id: i64,
    image: &ImageLayers,
) -> Result<Option<ImageBase>, MetaError> {
    let digest = image.digest.to_string();
    if let Some(base) = recorded(c, repo_id, &digest).await? {
        return Ok(base);
    }
    let base = match &image.declared {
        Some(d) => {
            let digest = match &d.digest {
                Some(digest) => Some(digest.clone()),
                None => query_opt(
                    c,
                    "reading a base tag",
                    "SELECT t.digest FROM tags t JOIN repositories r ON r.id = t.repo_id
                     WHERE r.name = $1 AND t.name = $2",
                    &[&d.repo, &d.tag],
                )
                .await?
                .map(|row| get::<String>(&row, 0).and_then(parse_digest))
                .transpose()?,
            };
            digest.map(|digest| ImageBase {
                repo: d.repo.clone(),
                tag: d.tag.clone(),
                digest,
                declared: true,
            })
        }
        None => prefix_base(c, image).await?,
    };
    let base_digest = base.as_ref().map(|b| b.digest.to_string());
    execute(
        c,
        "recording image layers",
        "INSERT INTO image_layers
           (repo_id, digest, layers, base_repo, base_tag, base_digest, base_declared, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (repo_id, digest) DO NOTHING",
        &[
            &repo_id,
            &digest,
            &layers_key(&image.layers),
            &base.as_ref().map(|b| b.repo.as_str()),
            &base.as_ref().map(|b| b.tag.as_str()),
            &base_digest,
            &base.as_ref().is_some_and(|b| b.declared),
            &now(),
        ],
    )
    .await?;
    Ok(base)
}

/// Tagged images whose base tag moved since they were pushed.
pub(super) async fn stale<C: GenericClient>(c: &C) -> Result<Vec<StaleImage>, MetaError> {
    let rows = query(
        c,
        "listing stale images",
        "SELECT r.name, il.digest, il.base_repo, il.base_tag, il.base_digest,
                il.base_declared, bt.digest, bt.updated_at,
                (SELECT string_agg(name, ' ' ORDER BY name) FROM tags
                  WHERE repo_id = il.repo_id AND digest = il.digest)
         FROM image_layers il
         JOIN repositories r ON r.id = il.repo_id
         JOIN repositories br ON br.name = il.base_repo
         JOIN tags bt ON bt.repo_id = br.id AND bt.name = il.base_tag
         WHERE bt.digest <> il.base_digest
           AND EXISTS (SELECT 1 FROM tags WHERE repo_id = il.repo_id AND digest = il.digest)
         ORDER BY r.name, il.digest",
        &[],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let tags: Option<String> = get(row, 8)?;
            Ok(StaleImage {
                repo: get(row, 0)?,
                digest: parse_digest(get(row, 1)?)?,
                tags: tags
                    .unwrap_or_default()
                    .split(' ')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                base: ImageBase {
                    repo: get(row, 2)?,
                    tag: get(row, 3)?,
                    digest: parse_digest(get(row, 4)?)?,
                    declared: get(row, 5)?,
                },
                base_now: parse_digest(get(row, 6)?)?,
                base_moved_at: get(row, 7)?,
            })
        })
        .collect()
}
