//! The registry side of [`ImageSource`]/[`ImageDestination`], and opening any
//! [`Location`] as a source or a destination.
//!
//! Naming rules for destinations that name no tag: the source's tag is used (so
//! `berth copy alpine:3.19 localhost:5000/alpine` writes `:3.19`), else `latest` for a
//! registry and no name for a layout.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use berth_oci::{Descriptor, Digest, Reference, RepoName, Tag};

use crate::archive::{
    familiar_name, DockerArchiveSource, DockerArchiveWriter, OciArchiveSource, OciArchiveWriter,
};
use crate::copy::{ImageDestination, ImageSource};
use crate::error::{ClientError, Result};
use crate::image::{BlobStream, Manifest};
use crate::layout::{LayoutSource, LayoutWriter};
use crate::location::Location;
use crate::reference::{latest, ImageRef};
use crate::registry::{Clients, Registry};

/// Reads images from a registry repository.
pub struct RegistrySource {
    reg: Registry,
    image: ImageRef,
}

impl RegistrySource {
    pub fn new(reg: Registry, image: ImageRef) -> RegistrySource {
        RegistrySource { reg, image }
    }
}

#[async_trait]
impl ImageSource for RegistrySource {
    fn describe(&self) -> String {
        self.image.to_string()
    }
    async fn root(&self) -> Result<Manifest> {
        self.reg
            .get_manifest(&self.image.repository, &self.image.reference())
            .await
    }
    async fn manifest(&self, desc: &Descriptor) -> Result<Manifest> {
        self.reg
            .get_manifest(
                &self.image.repository,
                &Reference::Digest(desc.digest.clone()),
            )
            .await
    }
    async fn blob(&self, desc: &Descriptor) -> Result<BlobStream> {
        self.reg.get_blob(&self.image.repository, desc).await
    }
    fn registry_origin(&self) -> Option<(&str, &RepoName)> {
        Some((self.reg.host(), &self.image.repository))
    }
    fn tag(&self) -> Option<String> {
        self.image.tag.as_ref().map(|t| t.to_string())
    }
    fn image_name(&self) -> Option<String> {
        let tag = self.image.tag_or_default()?;
        Some(familiar_name(&format!("{}:{tag}", self.image.name())))
    }
    async fn referrers(
        &self,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<Descriptor>>> {
        self.reg
            .referrers(&self.image.repository, digest, artifact_type)
            .await
            .map(Some)
    }
    async fn legacy_referrers(&self, subject: &Digest) -> Result<Vec<(Tag, Manifest)>> {
        self.reg
            .legacy_referrers(&self.image.repository, subject)
            .await
    }
}

/// Writes images into a registry repository.
pub struct RegistryDestination {
    reg: Registry,
    image: ImageRef,
    /// Upload sessions opened by mount attempts that the registry turned into uploads.
    sessions: Mutex<HashMap<Digest, String>>,
}

impl RegistryDestination {
    pub fn new(reg: Registry, image: ImageRef) -> RegistryDestination {
        RegistryDestination {
            reg,
            image,
            sessions: Mutex::default(),
        }
    }
}

#[async_trait]
impl ImageDestination for RegistryDestination {
    fn describe(&self) -> String {
        self.image.to_string()
    }
    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self
            .reg
            .head_blob(&self.image.repository, &desc.digest)
            .await?
            .is_some())
    }
    async fn mount_blob(&self, desc: &Descriptor, host: &str, from: &RepoName) -> Result<bool> {
        if host != self.reg.host() || from == &self.image.repository {
            return Ok(false);
        }
        match self
            .reg
            .mount_blob(&self.image.repository, &desc.digest, from)
            .await?
        {
            None => Ok(true),
            Some(location) => {
                if let Ok(mut s) = self.sessions.lock() {
                    s.insert(desc.digest.clone(), location);
                }
                Ok(false)
            }
        }
    }
    async fn put_blob(&self, desc: &Descriptor, stream: BlobStream) -> Result<()> {
        let session = self
            .sessions
            .lock()
            .ok()
            .and_then(|mut s| s.remove(&desc.digest));
        self.reg
            .put_blob(&self.image.repository, desc, stream, session)
            .await
    }
    async fn put_manifest(&self, m: &Manifest, root: bool) -> Result<()> {
        let reference = match (&self.image.tag, &self.image.digest, root) {
            (_, Some(d), true) => {
                if d != &m.digest {
                    return Err(ClientError::DigestMismatch {
                        what: format!("destination {}", self.image),
                        expected: d.clone(),
                        actual: m.digest.clone(),
                    });
                }
                Reference::Digest(d.clone())
            }
            (Some(t), None, true) => Reference::Tag(t.clone()),
            _ => Reference::Digest(m.digest.clone()),
        };
        self.reg
            .put_manifest(&self.image.repository, &reference, m)
            .await
    }
    fn accepts_referrers(&self) -> bool {
        true
    }
    async fn put_referrer(&self, m: &Manifest, tag: Option<&Tag>) -> Result<()> {
        // By digest, `put_manifest` lists a referrer in the referrers tag schema's index
        // when the registry does not process its subject.
        let reference = match tag {
            Some(t) => Reference::Tag(t.clone()),
            None => Reference::Digest(m.digest.clone()),
        };
        self.reg
            .put_manifest(&self.image.repository, &reference, m)
            .await
    }
    async fn commit(&self) -> Result<()> {
        Ok(())
    }
}

/// Opens a location for reading.
pub async fn open_source(clients: &Clients, loc: &Location) -> Result<Box<dyn ImageSource>> {
    Ok(match loc {
        Location::Registry(r) => Box::new(RegistrySource::new(
            clients.registry(&r.registry)?,
            r.clone(),
        )),
        Location::Layout { path, tag } => {
            Box::new(LayoutSource::open(path, tag.clone(), loc.to_string())?)
        }
        Location::OciArchive { path, tag } => {
            Box::new(OciArchiveSource::open(path, tag.clone()).await?)
        }
        Location::DockerArchive { path, name } => {
            Box::new(DockerArchiveSource::open(path, name.clone()).await?)
        }
    })
}

/// Opens a location for writing; `src` supplies the default tag or name.
pub fn open_destination(
    clients: &Clients,
    loc: &Location,
    src: &dyn ImageSource,
) -> Result<Box<dyn ImageDestination>> {
    Ok(match loc {
        Location::Registry(r) => {
            let mut image = r.clone();
            if image.tag.is_none() && image.digest.is_none() {
                let tag = src
                    .tag()
                    .and_then(|t| Tag::parse(&t).ok())
                    .unwrap_or_else(latest);
                image.tag = Some(tag);
            }
            Box::new(RegistryDestination::new(
                clients.registry(&image.registry)?,
                image,
            ))
        }
        Location::Layout { path, tag } => Box::new(LayoutWriter::create(
            path,
            tag.clone().or_else(|| src.tag()),
        )?),
        Location::OciArchive { path, tag } => Box::new(OciArchiveWriter::create(
            path,
            tag.clone().or_else(|| src.tag()),
        )?),
        Location::DockerArchive { path, name } => {
            let name = match name {
                Some(n) if n.rsplit_once(':').is_some_and(|(_, t)| !t.contains('/')) => {
                    Some(n.clone())
                }
                Some(n) => Some(format!("{n}:latest")),
                None => src.image_name(),
            };
            Box::new(DockerArchiveWriter::create(path, name)?)
        }
    })
}
