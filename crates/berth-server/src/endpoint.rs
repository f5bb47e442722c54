//! Parses the path after `/v2/` into an [`Endpoint`], once, for every registry route.
//!
//! Repository names may have any number of components (`team/app/api`), so the path is
//! matched from its end: the last `manifests/<ref>`, `blobs/<digest>`, `blobs/uploads/…`,
//! `tags/list` or `referrers/<digest>` decides the resource and everything before it is
//! the name. A name that looks like a resource (`a/blobs/b`) is thus still reachable.

use berth_oci::{NameError, RepoName};

/// Why a path or method addresses no registry resource.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("repository name is empty")]
    EmptyName,
    #[error("no registry endpoint at /v2/{0}")]
    Unknown(String),
    #[error("no endpoint at {0}")]
    NoRoute(String),
    #[error("method {method} is not supported on the {route} endpoint")]
    Method { method: String, route: &'static str },
}

/// A registry resource addressed by a `/v2/...` path. Names are validated; references
/// and digests are kept raw so each handler reports them with the right error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Catalog,
    Manifest { name: RepoName, reference: String },
    Blob { name: RepoName, digest: String },
    UploadStart { name: RepoName },
    Upload { name: RepoName, id: String },
    Tags { name: RepoName },
    Referrers { name: RepoName, digest: String },
}

impl Endpoint {
    /// Parses `rest`, the path after `/v2/` (no leading slash).
    pub fn parse(rest: &str) -> Result<Endpoint, EndpointError> {
        if rest == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let n = parts.len();
        let name = |upto: usize| -> Result<RepoName, EndpointError> {
            if upto == 0 {
                return Err(EndpointError::EmptyName);
            }
            Ok(RepoName::parse(&parts[..upto].join("/"))?)
        };
        let last = |k: usize| parts.get(n.wrapping_sub(k)).copied().unwrap_or("");
        if n >= 3 && last(2) == "tags" && last(1) == "list" {
            return Ok(Endpoint::Tags { name: name(n - 2)? });
        }
        if n >= 3 && last(3) == "blobs" && last(2) == "uploads" {
            if last(1).is_empty() {
                return Ok(Endpoint::UploadStart { name: name(n - 3)? });
            }
            return Ok(Endpoint::Upload {
                name: name(n - 3)?,
                id: last(1).to_owned(),
            });
        }
        if n >= 3 && last(2) == "blobs" && last(1) == "uploads" {
            return Ok(Endpoint::UploadStart { name: name(n - 2)? });
        }
        if n >= 2 {
            let item = last(1).to_owned();
            match last(2) {
                "manifests" if !item.is_empty() => {
                    return Ok(Endpoint::Manifest {
                        name: name(n - 2)?,
                        reference: item,
                    })
                }
                "blobs" if !item.is_empty() => {
                    return Ok(Endpoint::Blob {
                        name: name(n - 2)?,
                        digest: item,
                    })
                }
                "referrers" if !item.is_empty() => {
                    return Ok(Endpoint::Referrers {
                        name: name(n - 2)?,
                        digest: item,
                    })
                }
                _ => {}
            }
        }
        Err(EndpointError::Unknown(rest.to_owned()))
    }

    /// The repository the endpoint addresses, if any.
    pub fn repository(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Catalog => None,
            Endpoint::Manifest { name, .. }
            | Endpoint::Blob { name, .. }
            | Endpoint::UploadStart { name }
            | Endpoint::Upload { name, .. }
            | Endpoint::Tags { name }
            | Endpoint::Referrers { name, .. } => Some(name),
        }
    }

    /// The same resource in repository `name` (the catalog has none and stays as is).
    pub fn with_repository(self, name: RepoName) -> Endpoint {
        match self {
            Endpoint::Catalog => Endpoint::Catalog,
            Endpoint::Manifest { reference, .. } => Endpoint::Manifest { name, reference },
            Endpoint::Blob { digest, .. } => Endpoint::Blob { name, digest },
            Endpoint::UploadStart { .. } => Endpoint::UploadStart { name },
            Endpoint::Upload { id, .. } => Endpoint::Upload { name, id },
            Endpoint::Tags { .. } => Endpoint::Tags { name },
            Endpoint::Referrers { digest, .. } => Endpoint::Referrers { name, digest },
        }
    }

    /// The route template, for logs and metrics (bounded cardinality).
    pub fn route(&self) -> &'static str {
        match self {
            Endpoint::Catalog => "catalog",
            Endpoint::Manifest { .. } => "manifest",
            Endpoint::Blob { .. } => "blob",
            Endpoint::UploadStart { .. } | Endpoint::Upload { .. } => "upload",
            Endpoint::Tags { .. } => "tags",
            Endpoint::Referrers { .. } => "referrers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn parses_every_resource() {
        assert_eq!(Endpoint::parse("_catalog").unwrap(), Endpoint::Catalog);
        assert_eq!(
            Endpoint::parse("team/app/api/manifests/v1").unwrap(),
            Endpoint::Manifest {
                name: n("team/app/api"),
                reference: "v1".into()
            }
        );
        assert_eq!(
            Endpoint::parse("a/blobs/sha256:x").unwrap(),
            Endpoint::Blob {
                name: n("a"),
                digest: "sha256:x".into()
            }
        );
        assert_eq!(
            Endpoint::parse("a/b/blobs/uploads/").unwrap(),
            Endpoint::UploadStart { name: n("a/b") }
        );
        assert_eq!(
            Endpoint::parse("a/b/blobs/uploads").unwrap(),
            Endpoint::UploadStart { name: n("a/b") }
        );
        assert_eq!(
            Endpoint::parse("a/blobs/uploads/abc").unwrap(),
            Endpoint::Upload {
                name: n("a"),
                id: "abc".into()
            }
        );
        assert_eq!(
            Endpoint::parse("x/tags/list").unwrap(),
            Endpoint::Tags { name: n("x") }
        );
        assert_eq!(
            Endpoint::parse("x/referrers/sha256:y").unwrap(),
            Endpoint::Referrers {
                name: n("x"),
                digest: "sha256:y".into()
            }
        );
    }

    #[test]
    fn names_that_look_like_resources() {
        assert_eq!(
            Endpoint::parse("blobs/manifests/manifests/latest").unwrap(),
            Endpoint::Manifest {
                name: n("blobs/manifests"),
                reference: "latest".into()
            }
        );
        assert_eq!(
            Endpoint::parse("tags/tags/list").unwrap(),
            Endpoint::Tags { name: n("tags") }
        );
    }

    #[test]
    fn invalid_names_and_unknown_paths() {
        for bad in [
            "UP/manifests/x",
            "a/../b/manifests/x",
            "a//b/blobs/sha256:x",
            "/manifests/x",
            "..//tags/list",
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(
                matches!(e, EndpointError::Name(_) | EndpointError::EmptyName),
                "{bad}: {e:?}"
            );
        }
        for unknown in ["", "a", "a/manifests/", "a/unknown/x"] {
            let e = Endpoint::parse(unknown).unwrap_err();
            assert!(matches!(e, EndpointError::Unknown(_)), "{unknown}: {e:?}");
        }
    }
}
