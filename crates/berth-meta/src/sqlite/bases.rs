//! The stale-base report on SQLite: recording an image's layers with its base, and the
//! query for images whose base tag moved, as bodies for the `registry` implementation.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{db_err, now, parse_digest};
use crate::bases::{layers_key, prefix_keys, ImageBase, ImageLayers, StaleImage};
use crate::MetaError;

/// The digest `repo:tag` points at, if both exist.
fn tag_digest(tx: &Transaction<'_>, repo: &str, tag: &str) -> Result<Option<String>, MetaError> {
    tx.prepare_cached(
        "SELECT t.digest FROM tags t JOIN repositories r ON r.id = t.repo_id
         WHERE r.name = ?1 AND t.name = ?2",
    )
    .and_then(|mut s| s.query_row(params![repo, tag], |r| r.get(0)).optional())
    .map_err(db_err("reading a base tag"))
}

/// The tagged image whose layer list is the longest proper prefix of `image`'s.
fn prefix_base(tx: &Transaction<'_>, image: &ImageLayers) -> Result<Option<ImageBase>, MetaError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT r.name, t.name, t.digest FROM image_layers il
             JOIN tags t ON t.repo_id = il.repo_id AND t.digest = il.digest
             JOIN repositories r ON r.id = t.repo_id
             WHERE il.layers = ?1
             ORDER BY t.updated_at DESC, r.name, t.name LIMIT 1",
        )
        .map_err(db_err("finding a base image"))?;
    // Longest first, so the first prefix with a tagged image is the base; each probe
    // is one lookup in the index on `layers`.
    for key in prefix_keys(&image.layers) {
        let found: Option<(String, String, String)> = stmt
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(db_err("finding a base image"))?;
        if let Some((repo, tag, digest)) = found {
            return Ok(Some(ImageBase {
                repo,
                tag,
                digest: parse_digest(digest)?,
                declared: false,
            }));
        }
    }
    Ok(None)
}

/// The base columns of a row: repository, tag, digest (all or none set) and declared.
type BaseColumns = (Option<String>, Option<String>, Option<String>, bool);

/// The base recorded for the image `digest` of `repo_id`: `None` when the image is not
/// recorded, `Some(None)` when it is, on no base.
fn recorded(
    tx: &Transaction<'_>,
    repo_id: i64,
    digest: &str,
) -> Result<Option<Option<ImageBase>>, MetaError> {
    let row: Option<BaseColumns> = tx
        .prepare_cached(
            "SELECT base_repo, base_tag, base_digest, base_declared FROM image_layers
             WHERE repo_id = ?1 AND digest = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![repo_id, digest], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(db_err("reading image layers"))?;
    row.map(|(repo, tag, digest, declared)| match (repo, tag, digest) {
        (Some(repo), Some(tag), Some(digest)) => Ok(Some(ImageBase {
            repo,
            tag,
            digest: parse_digest(digest)?,
            declared,
        })),
        _ => Ok(None),
    })
    .transpose()
}

/// Records `image` in the repository `repo_id` and returns its base. An image already
/// recorded keeps its record: pushed again (to add a tag), it is still built on what it
/// was built on, even if the base tag has moved since.
pub(super) fn put(
    tx: &Transaction<'_>,
    repo_id: i64,
    image: &ImageLayers,
) -> Result<Option<ImageBase>, MetaError> {
    if let Some(base) = recorded(tx, repo_id, &image.digest.to_string())? {
        return Ok(base);
    }
    let base = match &image.declared {
        Some(d) => {
            let digest = match &d.digest {
                Some(digest) => Some(digest.clone()),
                None => tag_digest(tx, &d.repo, &d.tag)?
                    .map(parse_digest)
                    .transpose()?,
            };
            digest.map(|digest| ImageBase {
                repo: d.repo.clone(),
                tag: d.tag.clone(),
                digest,
                declared: true,
            })
        }
        None => prefix_base(tx, image)?,
    };
    tx.prepare_cached(
        "INSERT INTO image_layers
           (repo_id, digest, layers, base_repo, base_tag, base_digest, base_declared, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            repo_id,
            image.digest.to_string(),
            layers_key(&image.layers),
            base.as_ref().map(|b| b.repo.as_str()),
            base.as_ref().map(|b| b.tag.as_str()),
            base.as_ref().map(|b| b.digest.to_string()),
            base.as_ref().is_some_and(|b| b.declared),
            now(),
        ])
    })
    .map_err(db_err("recording image layers"))?;
    Ok(base)
}

/// Tagged images whose base tag moved since they were pushed. Images whose manifest is
/// gone have no tags, so they drop out by the join on tags.
pub(super) fn stale(c: &Connection) -> Result<Vec<StaleImage>, MetaError> {
    let rows = c
        .prepare_cached(
            "SELECT r.name, il.digest, il.base_repo, il.base_tag, il.base_digest,
                    il.base_declared, bt.digest, bt.updated_at,
                    (SELECT group_concat(name, ' ') FROM
                        (SELECT name FROM tags WHERE repo_id = il.repo_id AND digest = il.digest
                         ORDER BY name))
             FROM image_layers il
             JOIN repositories r ON r.id = il.repo_id
             JOIN repositories br ON br.name = il.base_repo
             JOIN tags bt ON bt.repo_id = br.id AND bt.name = il.base_tag
             WHERE bt.digest != il.base_digest
               AND EXISTS (SELECT 1 FROM tags WHERE repo_id = il.repo_id AND digest = il.digest)
             ORDER BY r.name, il.digest",
        )
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(db_err("listing stale images"))?;
    rows.into_iter()
        .map(
            |(
                repo,
                digest,
                base_repo,
                base_tag,
                base_digest,
                declared,
                now_digest,
                moved,
                tags,
            )| {
                Ok(StaleImage {
                    repo,
                    digest: parse_digest(digest)?,
                    tags: tags
                        .unwrap_or_default()
                        .split(' ')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    base: ImageBase {
                        repo: base_repo,
                        tag: base_tag,
                        digest: parse_digest(base_digest)?,
                        declared,
                    },
                    base_now: parse_digest(now_digest)?,
                    base_moved_at: moved,
                })
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use berth_oci::{Digest, RepoName, Tag};
    use bytes::Bytes;

    use crate::bases::ImageLayers;
    use crate::sqlite::SqliteStore;
    use crate::{MetadataStore, NewManifest};

    fn manifest(name: &str) -> NewManifest {
        NewManifest {
            digest: Digest::sha256(name.as_bytes()),
            media_type: berth_oci::media_types::OCI_MANIFEST.into(),
            content: Bytes::from(name.to_owned()),
            blobs: vec![],
            children: vec![],
            subject: None,
            artifact_type: None,
            annotations_json: String::new(),
            version: None,
            platform: None,
            mirrored: false,
        }
    }

    /// The cost of finding bases among 10,000 images (50 bases of 2 to 6 layers, each
    /// extended by 200 images of 1 to 5 more layers): every push finds its base, and one
    /// query lists every image once all bases move. `cargo test -p berth-meta --lib --
    /// --ignored ten_thousand --nocapture` prints the timings (docs/security.md).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: 10,000 pushes"]
    async fn ten_thousand_images_find_their_bases() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(dir.path().join("m.db")).unwrap();
        let layer = |s: String| Digest::sha256(s.as_bytes());
        let tag = Tag::parse("1").unwrap();
        let mut bases = Vec::new();
        for b in 0..50 {
            let repo = RepoName::parse(&format!("base{b}")).unwrap();
            let m = manifest(&format!("base {b}"));
            db.manifest_put(&repo, &m, std::slice::from_ref(&tag), None)
                .await
                .unwrap();
            let layers: Vec<Digest> = (0..2 + b % 5).map(|i| layer(format!("b{b}-{i}"))).collect();
            let image = ImageLayers {
                digest: m.digest.clone(),
                layers: layers.clone(),
                declared: None,
            };
            db.image_layers_put(&repo, &image).await.unwrap();
            bases.push((repo, m.digest, layers));
        }
        let mut pushes = std::time::Duration::ZERO;
        for i in 0..10_000usize {
            let (base_repo, base_digest, base_layers) = &bases[i % 50];
            let repo = RepoName::parse(&format!("app{}", i % 500)).unwrap();
            let m = manifest(&format!("app {i}"));
            db.manifest_put(&repo, &m, &[Tag::parse(&format!("v{i}")).unwrap()], None)
                .await
                .unwrap();
            let mut layers = base_layers.clone();
            layers.extend((0..1 + i % 5).map(|j| layer(format!("a{i}-{j}"))));
            let image = ImageLayers {
                digest: m.digest,
                layers,
                declared: None,
            };
            let start = Instant::now();
            let base = db.image_layers_put(&repo, &image).await.unwrap().unwrap();
            pushes += start.elapsed();
            assert_eq!(
                (&base.repo, &base.digest),
                (&base_repo.to_string(), base_digest)
            );
        }
        for (b, (repo, _, _)) in bases.iter().enumerate() {
            let m = manifest(&format!("base {b} rebuilt"));
            db.manifest_put(repo, &m, std::slice::from_ref(&tag), None)
                .await
                .unwrap();
        }
        let start = Instant::now();
        let stale = db.stale_images().await.unwrap();
        let query = start.elapsed();
        assert_eq!(stale.len(), 10_000);
        println!(
            "10000 image_layers_put: {pushes:?} ({:?} each); stale_images over 10000: {query:?}",
            pushes / 10_000
        );
    }
}
