//! Image references parsed by Docker's rules: `[host[:port]/]path/name[:tag][@digest]`.
//!
//! The first path component is a registry host when it contains a `.` or a `:`, is
//! `localhost`, or has an uppercase letter; otherwise the image is on Docker Hub
//! (`docker.io`), and a one-component name gets the `library/` prefix. Without a tag or
//! digest the tag is `latest`.

use std::fmt;

use berth_oci::{Digest, Reference, RepoName, Tag};

use crate::error::ClientError;

/// Docker Hub's canonical name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API endpoint.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference such as `localhost:5000/team/app:1.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host with optional port, e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    pub repository: RepoName,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

fn bad(input: &str, reason: impl Into<String>) -> ClientError {
    ClientError::InvalidReference {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

/// True when the first path component names a registry host.
fn is_host(component: &str) -> bool {
    component.contains(['.', ':'])
        || component == "localhost"
        || component.chars().any(|c| c.is_ascii_uppercase())
}

impl ImageRef {
    /// Parses a reference by Docker's rules.
    pub fn parse(input: &str) -> Result<ImageRef, ClientError> {
        let s = input.strip_prefix("docker://").unwrap_or(input);
        if s.is_empty() {
            return Err(bad(input, "it is empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| bad(input, e.to_string()))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                let tag = Tag::parse(&rest[at + 1..]).map_err(|e| bad(input, e.to_string()))?;
                (&rest[..at], Some(tag))
            }
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_host(first) => (first.to_owned(), path.to_owned()),
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" || registry == DOCKER_HUB_API {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let repository = RepoName::parse(&path).map_err(|e| bad(input, e.to_string()))?;
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// A reference to a repository on a registry, without tag or digest.
    pub fn new(registry: &str, repository: RepoName) -> ImageRef {
        ImageRef {
            registry: registry.to_owned(),
            repository,
            tag: None,
            digest: None,
        }
    }

    /// What to ask the registry for: the digest if given, else the tag, else `latest`.
    pub fn reference(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Reference::Digest(d.clone()),
            (None, Some(t)) => Reference::Tag(t.clone()),
            (None, None) => Reference::Tag(latest()),
        }
    }

    /// The tag, or `latest` when neither a tag nor a digest was given.
    pub fn tag_or_default(&self) -> Option<Tag> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(latest()),
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: Tag) -> ImageRef {
        ImageRef {
            tag: Some(tag),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository pinned to a digest (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host to send API requests to (Docker Hub's API lives on another name).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }
}

/// The API host of a registry name.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// True for hosts that speak plain HTTP by default: `localhost` and loopback addresses.
pub fn is_local_host(host: &str) -> bool {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    bare == "localhost"
        || bare == "::1"
        || bare
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The default tag.
pub fn latest() -> Tag {
    Tag::parse("latest").unwrap_or_else(|_| unreachable!("\"latest\" is a valid tag"))
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn docker_hub_defaults() {
        let r = p("ubuntu");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository.as_str(), "library/ubuntu");
        assert_eq!(r.tag, None);
        assert_eq!(r.reference().to_string(), "latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(
            p("ubuntu")
                .with_tag(Tag::parse("latest").unwrap())
                .to_string(),
            "docker.io/library/ubuntu:latest"
        );
        assert_eq!(p("team/app:1.0").to_string(), "docker.io/team/app:1.0");
        assert_eq!(p("docker.io/ubuntu").repository.as_str(), "library/ubuntu");
        assert_eq!(p("index.docker.io/library/ubuntu").registry, "docker.io");
        assert_eq!(
            p("docker://alpine:3").to_string(),
            "docker.io/library/alpine:3"
        );
    }

    #[test]
    fn hosts_ports_and_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("localhost:5000/a/b@{d}"));
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository.as_str(), "a/b");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().unwrap().to_string(), d);
        assert_eq!(r.reference().to_string(), d);
        assert_eq!(r.tag_or_default(), None);

        let r = p(&format!("127.0.0.1:5000/app:v1@{d}"));
        assert_eq!(r.tag.as_ref().unwrap().as_str(), "v1");
        assert_eq!(r.reference().to_string(), d);

        assert_eq!(p("localhost/app").registry, "localhost");
        assert_eq!(p("ghcr.io/o/r:t").registry, "ghcr.io");
        assert_eq!(p("Registry/app").registry, "Registry");
        // A first component without '.', ':' or "localhost" is a path on Docker Hub.
        assert_eq!(p("myhost/app").registry, "docker.io");
        assert_eq!(p("myhost/app").repository.as_str(), "myhost/app");
        assert_eq!(p("[::1]:5000/x").registry, "[::1]:5000");
    }

    #[test]
    fn rejects_bad_references() {
        for s in [
            "",
            "UPPER",
            "a:",
            "a@sha256:zz",
            "a//b",
            "localhost:5000/",
            "a:b:c",
        ] {
            assert!(ImageRef::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn local_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]:5000",
            "127.1.2.3:1",
        ] {
            assert!(is_local_host(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "example.com:5000",
            "localhost.example.com",
        ] {
            assert!(!is_local_host(h), "{h}");
        }
    }
}
