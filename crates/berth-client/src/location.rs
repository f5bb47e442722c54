//! Where an image lives: a registry, an OCI layout directory, or a tarball.
//!
//! Syntax, as skopeo writes it: `oci:PATH[:TAG]`, `oci-archive:FILE[:TAG]`,
//! `docker-archive:FILE[:NAME[:TAG]]`, and anything else (optionally `docker://`) is a
//! registry reference. The path ends at the first `:` after the transport prefix.

use std::fmt;
use std::path::PathBuf;

use crate::error::ClientError;
use crate::reference::ImageRef;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Registry(ImageRef),
    /// An OCI image layout directory; the tag is the `org.opencontainers.image.ref.name`.
    Layout {
        path: PathBuf,
        tag: Option<String>,
    },
    /// A tarball of an OCI image layout.
    OciArchive {
        path: PathBuf,
        tag: Option<String>,
    },
    /// A `docker save`/`docker load` tarball; `name` is the `RepoTags` entry.
    DockerArchive {
        path: PathBuf,
        name: Option<String>,
    },
}

fn split_path(input: &str, rest: &str) -> Result<(PathBuf, Option<String>), ClientError> {
    let (path, suffix) = match rest.split_once(':') {
        Some((p, s)) => (p, Some(s.to_owned()).filter(|s| !s.is_empty())),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(ClientError::InvalidReference {
            input: input.to_owned(),
            reason: "the path is empty".into(),
        });
    }
    Ok((PathBuf::from(path), suffix))
}

impl Location {
    /// Parses a transport-prefixed location or a registry reference.
    pub fn parse(input: &str) -> Result<Location, ClientError> {
        if let Some(rest) = input.strip_prefix("oci:") {
            let (path, tag) = split_path(input, rest)?;
            if let Some(t) = &tag {
                berth_oci::Tag::parse(t).map_err(|e| ClientError::InvalidReference {
                    input: input.to_owned(),
                    reason: e.to_string(),
                })?;
            }
            Ok(Location::Layout { path, tag })
        } else if let Some(rest) = input.strip_prefix("oci-archive:") {
            let (path, tag) = split_path(input, rest)?;
            Ok(Location::OciArchive { path, tag })
        } else if let Some(rest) = input.strip_prefix("docker-archive:") {
            let (path, name) = split_path(input, rest)?;
            Ok(Location::DockerArchive { path, name })
        } else {
            Ok(Location::Registry(ImageRef::parse(input)?))
        }
    }

    /// Parses a local location for `push`/`pull`: a bare path is an OCI layout
    /// directory, or a docker-archive when it ends in `.tar`.
    pub fn parse_local(input: &str) -> Result<Location, ClientError> {
        if ["oci:", "oci-archive:", "docker-archive:"]
            .iter()
            .any(|p| input.starts_with(p))
        {
            return Location::parse(input);
        }
        if input.ends_with(".tar") || input.ends_with(".tar.gz") {
            Ok(Location::DockerArchive {
                path: PathBuf::from(input),
                name: None,
            })
        } else {
            Ok(Location::Layout {
                path: PathBuf::from(input),
                tag: None,
            })
        }
    }

    /// True for registry references.
    pub fn is_registry(&self) -> bool {
        matches!(self, Location::Registry(_))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, path, suffix) = match self {
            Location::Registry(r) => return r.fmt(f),
            Location::Layout { path, tag } => ("oci", path, tag),
            Location::OciArchive { path, tag } => ("oci-archive", path, tag),
            Location::DockerArchive { path, name } => ("docker-archive", path, name),
        };
        write!(f, "{prefix}:{}", path.display())?;
        if let Some(s) = suffix {
            write!(f, ":{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports() {
        assert_eq!(
            Location::parse("oci:/tmp/x:v1").unwrap(),
            Location::Layout {
                path: "/tmp/x".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Location::parse("oci:dir").unwrap(),
            Location::Layout {
                path: "dir".into(),
                tag: None
            }
        );
        assert_eq!(
            Location::parse("docker-archive:a.tar:app:1").unwrap(),
            Location::DockerArchive {
                path: "a.tar".into(),
                name: Some("app:1".into())
            }
        );
        assert!(matches!(
            Location::parse("oci-archive:a.tar").unwrap(),
            Location::OciArchive { tag: None, .. }
        ));
        assert!(Location::parse("localhost:5000/a:b").unwrap().is_registry());
        assert!(Location::parse("oci:").is_err());
        assert!(Location::parse("oci:x:bad/tag").is_err());
        assert_eq!(
            Location::parse("oci:/tmp/x:v1").unwrap().to_string(),
            "oci:/tmp/x:v1"
        );
    }

    #[test]
    fn local_shortcuts() {
        assert!(matches!(
            Location::parse_local("img.tar").unwrap(),
            Location::DockerArchive { .. }
        ));
        assert!(matches!(
            Location::parse_local("out/dir").unwrap(),
            Location::Layout { .. }
        ));
        assert!(matches!(
            Location::parse_local("oci-archive:x.tar").unwrap(),
            Location::OciArchive { .. }
        ));
    }
}
