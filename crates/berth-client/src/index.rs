//! Multi-platform indexes: `index create` assembles one from per-platform images (each
//! platform read from the image's config, as `docker buildx imagetools create` does),
//! `index add` and `index remove` edit one in place.
//!
//! Sources in other repositories or registries are first copied into the destination
//! repository by digest (mounted when on the same registry), so the index never points
//! at a manifest its repository lacks.

use std::sync::Arc;

use berth_oci::config::platform_of_config;
use berth_oci::{media_types as mt, Descriptor, Digest, Reference};
use bytes::Bytes;

use crate::copy::{copy_image, CopyOptions, ImageSource};
use crate::error::{ClientError, Result};
use crate::image::{Manifest, PlatformFilter};
use crate::inspect::read_config;
use crate::location::Location;
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::registry::Clients;
use crate::transport::{open_source, RegistryDestination};

/// The index entries a source contributes: its children if it is an index, else the
/// image itself with the platform of its config.
pub async fn entries_of(src: &dyn ImageSource) -> Result<(Manifest, Vec<Descriptor>)> {
    let root = src.root().await?;
    if root.is_index() {
        let parsed = root.parse()?;
        return Ok((root, parsed.manifests));
    }
    let parsed = root.parse()?;
    let config = parsed
        .config
        .ok_or_else(|| ClientError::invalid(src.describe(), "image manifest without config"))?;
    let mut desc = root.descriptor();
    if config.media_type != mt::OCI_EMPTY {
        let (bytes, _) = read_config(src, &config).await?;
        let platform = platform_of_config(&bytes).ok_or_else(|| {
            ClientError::invalid(
                src.describe(),
                "the image config declares no os/architecture",
            )
        })?;
        desc.platform = Some(platform);
    }
    Ok((root, vec![desc]))
}

/// Copies a source into the destination repository by digest unless it is already there.
pub async fn bring_into(
    clients: &Clients,
    dst: &ImageRef,
    src_loc: &Location,
    src: &dyn ImageSource,
    root: &Manifest,
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    if let Location::Registry(r) = src_loc {
        if r.registry == dst.registry && r.repository == dst.repository {
            return Ok(());
        }
    }
    let target =
        ImageRef::new(&dst.registry, dst.repository.clone()).with_digest(root.digest.clone());
    let dest = RegistryDestination::new(clients.registry(&dst.registry)?, target);
    let mut opts = opts.clone();
    opts.platform = None;
    copy_image(src, &dest, &opts, progress).await?;
    Ok(())
}

/// Serializes an index over `entries`: a Docker manifest list when every entry is a
/// Docker manifest, an OCI index otherwise.
pub fn build_index(entries: &[Descriptor]) -> Result<Manifest> {
    let docker = !entries.is_empty() && entries.iter().all(|d| d.media_type == mt::DOCKER_MANIFEST);
    let media_type = if docker {
        mt::DOCKER_MANIFEST_LIST
    } else {
        mt::OCI_INDEX
    };
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": entries,
    });
    let bytes = serde_json::to_vec_pretty(&body).map_err(|e| ClientError::invalid("index", e))?;
    Manifest::from_bytes(Bytes::from(bytes), Some(media_type))
}

fn same_platform(a: &Descriptor, b: &Descriptor) -> bool {
    match (&a.platform, &b.platform) {
        (Some(p), Some(q)) => {
            p.os == q.os
                && p.architecture == q.architecture
                && p.variant == q.variant
                && p.os != "unknown"
        }
        _ => false,
    }
}

/// Adds `new` entries to `entries`, each replacing an entry of the same digest or platform.
fn merge(entries: &mut Vec<Descriptor>, new: Vec<Descriptor>) {
    for n in new {
        entries.retain(|e| e.digest != n.digest && !same_platform(e, &n));
        entries.push(n);
    }
}

/// Gathers entries from `sources`, copying them into `dst`'s repository as needed.
pub async fn collect(
    clients: &Clients,
    dst: &ImageRef,
    sources: &[Location],
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<Vec<Descriptor>> {
    let mut entries = Vec::new();
    for loc in sources {
        let src = open_source(clients, loc).await?;
        let (root, new) = entries_of(src.as_ref()).await?;
        bring_into(
            clients,
            dst,
            loc,
            src.as_ref(),
            &root,
            opts,
            progress.clone(),
        )
        .await?;
        merge(&mut entries, new);
    }
    Ok(entries)
}

async fn push(clients: &Clients, dst: &ImageRef, index: &Manifest) -> Result<Digest> {
    let reg = clients.registry(&dst.registry)?;
    reg.put_manifest(&dst.repository, &dst.reference(), index)
        .await?;
    Ok(index.digest.clone())
}

/// `index create DST SRC...`: returns the new index's digest.
pub async fn create(
    clients: &Clients,
    dst: &ImageRef,
    sources: &[Location],
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<Digest> {
    if sources.is_empty() {
        return Err(ClientError::Usage(
            "index create needs at least one source image".into(),
        ));
    }
    let entries = collect(clients, dst, sources, opts, progress).await?;
    push(clients, dst, &build_index(&entries)?).await
}

async fn current(
    clients: &Clients,
    dst: &ImageRef,
) -> Result<(serde_json::Value, Vec<Descriptor>)> {
    let reg = clients.registry(&dst.registry)?;
    let m = reg.get_manifest(&dst.repository, &dst.reference()).await?;
    if !m.is_index() {
        return Err(ClientError::Usage(format!(
            "{dst} is an image, not an index; use `berth index create`"
        )));
    }
    let parsed = m.parse()?;
    let json: serde_json::Value =
        serde_json::from_slice(&m.bytes).map_err(|e| ClientError::invalid(dst.to_string(), e))?;
    Ok((json, parsed.manifests))
}

fn rebuild(mut json: serde_json::Value, entries: &[Descriptor]) -> Result<Manifest> {
    let media_type = json
        .get("mediaType")
        .and_then(|v| v.as_str())
        .unwrap_or(mt::OCI_INDEX)
        .to_owned();
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "manifests".into(),
            serde_json::to_value(entries).map_err(|e| ClientError::invalid("index", e))?,
        );
    }
    let bytes = serde_json::to_vec_pretty(&json).map_err(|e| ClientError::invalid("index", e))?;
    Manifest::from_bytes(Bytes::from(bytes), Some(&media_type))
}

/// `index add DST SRC...`: adds (or replaces, by platform) entries of an existing index.
pub async fn add(
    clients: &Clients,
    dst: &ImageRef,
    sources: &[Location],
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<Digest> {
    let (json, mut entries) = current(clients, dst).await?;
    let new = collect(clients, dst, sources, opts, progress).await?;
    merge(&mut entries, new);
    push(clients, dst, &rebuild(json, &entries)?).await
}

/// What `index remove` removes.
#[derive(Debug, Clone)]
pub enum Removal {
    Platform(PlatformFilter),
    Digest(Digest),
}

/// `index remove DST (--platform P | --digest D)...`.
pub async fn remove(clients: &Clients, dst: &ImageRef, what: &[Removal]) -> Result<Digest> {
    let (json, mut entries) = current(clients, dst).await?;
    for r in what {
        let before = entries.len();
        entries.retain(|e| match r {
            Removal::Platform(f) => !e.platform.as_ref().is_some_and(|p| f.matches(p)),
            Removal::Digest(d) => &e.digest != d,
        });
        if entries.len() == before {
            let what = match r {
                Removal::Platform(f) => format!("platform {f}"),
                Removal::Digest(d) => format!("manifest {d}"),
            };
            return Err(ClientError::NotFound(format!("{what} in index {dst}")));
        }
    }
    push(clients, dst, &rebuild(json, &entries)?).await
}

/// The digest a reference resolves to, without downloading more than needed.
pub async fn resolve(clients: &Clients, r: &ImageRef) -> Result<Digest> {
    if let Some(d) = &r.digest {
        return Ok(d.clone());
    }
    let reg = clients.registry(&r.registry)?;
    match reg.head_manifest(&r.repository, &r.reference()).await? {
        Some(d) => Ok(d.digest),
        None => Err(ClientError::NotFound(format!("image {r}"))),
    }
}

/// Pushes the exact manifest `src` names under more tags in the same repository.
pub async fn retag(clients: &Clients, src: &ImageRef, tags: &[berth_oci::Tag]) -> Result<Digest> {
    retag_with(clients, src, tags, false).await
}

/// [`retag`]; `force` overrides a Berth registry's tag policy (moving a release tag, or a
/// floating tag backwards), which needs the `admin` action on the repository.
pub async fn retag_with(
    clients: &Clients,
    src: &ImageRef,
    tags: &[berth_oci::Tag],
    force: bool,
) -> Result<Digest> {
    let reg = clients.registry(&src.registry)?;
    let m = reg.get_manifest(&src.repository, &src.reference()).await?;
    for t in tags {
        reg.put_manifest_with(&src.repository, &Reference::Tag(t.clone()), &m, force)
            .await?;
    }
    Ok(m.digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::Platform;

    fn d(n: u8, os: &str, arch: &str, mt: &str) -> Descriptor {
        Descriptor {
            media_type: mt.into(),
            digest: Digest::sha256(&[n]),
            size: 10,
            urls: vec![],
            annotations: Default::default(),
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
                ..Default::default()
            }),
            artifact_type: None,
        }
    }

    #[test]
    fn builds_and_merges() {
        let mut e = vec![d(1, "linux", "amd64", mt::DOCKER_MANIFEST)];
        merge(&mut e, vec![d(2, "linux", "arm64", mt::DOCKER_MANIFEST)]);
        let idx = build_index(&e).unwrap();
        assert_eq!(idx.media_type, mt::DOCKER_MANIFEST_LIST);
        assert_eq!(idx.parse().unwrap().manifests.len(), 2);
        // The same platform replaces the old entry.
        merge(&mut e, vec![d(3, "linux", "arm64", mt::OCI_MANIFEST)]);
        assert_eq!(e.len(), 2);
        let idx = build_index(&e).unwrap();
        assert_eq!(idx.media_type, mt::OCI_INDEX);
        let json: serde_json::Value = serde_json::from_slice(&idx.bytes).unwrap();
        let rebuilt = rebuild(json, &e[..1]).unwrap();
        assert_eq!(rebuilt.parse().unwrap().manifests.len(), 1);
    }
}
