//! Stale bases: the layers of every image pushed are recorded with the base it was built
//! on, and [`Registry::stale_images`] lists the images whose base tag has moved since.
//!
//! Recording happens after the manifest is stored, in `push_manifest`; a failure to
//! record is logged and does not fail the push (the image is stored; only the report
//! misses it). Indexes and artifacts are not recorded: an index has no layers of its
//! own, and an artifact's "layers" are not file systems another image could extend.

use berth_meta::bases::{DeclaredBase, ImageLayers, StaleImage, BASE_DIGEST, BASE_NAME};
use berth_oci::{Digest, ParsedManifest, RepoName};

use super::{Registry, Result};

/// True for the config media types of runnable images.
fn is_image(parsed: &ParsedManifest) -> bool {
    parsed.artifact_type.is_none()
        && parsed.manifests.is_empty()
        && parsed.config.as_ref().is_some_and(|c| {
            c.media_type == berth_oci::media_types::OCI_CONFIG
                || c.media_type == berth_oci::media_types::DOCKER_CONFIG
        })
}

impl Registry {
    /// Records the layers of the image `digest` of `repo` and its base, when `parsed`
    /// is an image with layers.
    pub(super) async fn record_layers(
        &self,
        repo: &RepoName,
        digest: &Digest,
        parsed: &ParsedManifest,
    ) {
        if !is_image(parsed) || parsed.layers.is_empty() {
            return;
        }
        let image = ImageLayers {
            digest: digest.clone(),
            layers: parsed.layers.iter().map(|l| l.digest.clone()).collect(),
            declared: DeclaredBase::parse(
                parsed.annotations.get(BASE_NAME).map(String::as_str),
                parsed.annotations.get(BASE_DIGEST).map(String::as_str),
            ),
        };
        match self.meta.image_layers_put(repo, &image).await {
            Ok(Some(base)) => {
                tracing::debug!(repo = %repo, digest = %digest, base = %format!("{}:{}", base.repo, base.tag), base_digest = %base.digest, declared = base.declared, "recorded the base of an image");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(repo = %repo, digest = %digest, error = %e, "could not record the layers of an image for the stale-base report");
            }
        }
    }

    /// Tagged images whose base tag has moved since they were pushed, among those for
    /// which `visible(image_repo, base_repo)` holds.
    pub async fn stale_images(
        &self,
        visible: impl Fn(&str, &str) -> bool,
    ) -> Result<Vec<StaleImage>> {
        Ok(self
            .meta
            .stale_images()
            .await?
            .into_iter()
            .filter(|s| visible(&s.repo, &s.base.repo))
            .collect())
    }
}
