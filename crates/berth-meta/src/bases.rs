//! The values of the stale-base report: an image's ordered layers as recorded at push
//! ([`ImageLayers`]), the base it was built on ([`ImageBase`]) and a stale image
//! ([`StaleImage`]), with the backend-neutral rules: how a layer list is keyed
//! ([`layers_key`], [`prefix_keys`]) and how `org.opencontainers.image.base.name` names
//! a local repository and tag ([`DeclaredBase::parse`]).
//!
//! The base of an image is found once, when it is pushed: the tagged image whose whole
//! layer list is the longest proper prefix of the image's layers, unless the image
//! declares its base with annotations. Finding it later would be wrong, since by then the
//! base tag may have moved and the old base no longer be tagged at all.

use berth_oci::Digest;

/// The annotation naming the base image (`docker.io/library/debian:12`, `base:12`).
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
/// The annotation giving the base image's manifest digest.
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// A base named by annotations: a repository and tag of this registry, and the digest
/// the image was built on when declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredBase {
    pub repo: String,
    pub tag: String,
    pub digest: Option<Digest>,
}

impl DeclaredBase {
    /// Reads the base annotations; `None` without a usable `base.name` (a name without
    /// a tag cannot move, so it cannot go stale). A registry host (a first path
    /// component with a `.` or `:`, or `localhost`) is dropped, so that
    /// `registry.example/team/base:12` names the local `team/base:12`.
    pub fn parse(name: Option<&str>, digest: Option<&str>) -> Option<DeclaredBase> {
        let name = name?.trim();
        let name = name.split_once('@').map_or(name, |(n, _)| n);
        let path = match name.split_once('/') {
            Some((host, rest))
                if host.contains('.') || host.contains(':') || host == "localhost" =>
            {
                rest
            }
            _ => name,
        };
        let slash = path.rfind('/').map_or(0, |i| i + 1);
        let colon = path[slash..].rfind(':')? + slash;
        let (repo, tag) = (&path[..colon], &path[colon + 1..]);
        if repo.is_empty() || tag.is_empty() {
            return None;
        }
        Some(DeclaredBase {
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            digest: digest.and_then(|d| d.trim().parse().ok()),
        })
    }
}

/// An image manifest's layers, in order, as pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayers {
    pub digest: Digest,
    pub layers: Vec<Digest>,
    /// The base the annotations declare; it takes precedence over the layer prefix.
    pub declared: Option<DeclaredBase>,
}

/// The base an image was built on, as recorded when it was pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBase {
    pub repo: String,
    pub tag: String,
    /// What the tag pointed to then (or the declared `base.digest`).
    pub digest: Digest,
    /// True when annotations declared the base, false when the layers revealed it.
    pub declared: bool,
}

/// A tagged image whose base tag now points elsewhere than when it was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleImage {
    pub repo: String,
    pub digest: Digest,
    /// The image's tags: what to rebuild.
    pub tags: Vec<String>,
    pub base: ImageBase,
    /// Where the base tag points now.
    pub base_now: Digest,
    /// Unix seconds of the base tag's last move.
    pub base_moved_at: i64,
}

/// The stored key of a layer list: the digests joined by single spaces.
pub fn layers_key(layers: &[Digest]) -> String {
    layers
        .iter()
        .map(Digest::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The keys of every proper, non-empty prefix of `layers`, longest first.
pub fn prefix_keys(layers: &[Digest]) -> Vec<String> {
    (1..layers.len())
        .rev()
        .map(|n| layers_key(&layers[..n]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
            .parse()
            .unwrap()
    }

    #[test]
    fn prefix_keys_are_the_proper_prefixes_longest_first() {
        let keys = prefix_keys(&[d(1), d(2), d(3)]);
        assert_eq!(keys, vec![format!("{} {}", d(1), d(2)), d(1).to_string()]);
        assert!(prefix_keys(&[d(1)]).is_empty());
    }

    #[test]
    fn base_names_drop_the_registry_host_and_need_a_tag() {
        let b = DeclaredBase::parse(Some("docker.io/library/debian:12"), None).unwrap();
        assert_eq!((b.repo.as_str(), b.tag.as_str()), ("library/debian", "12"));
        let b = DeclaredBase::parse(
            Some("localhost:5000/base:12"),
            Some(d(7).to_string().as_str()),
        )
        .unwrap();
        assert_eq!((b.repo.as_str(), b.tag.as_str()), ("base", "12"));
        assert_eq!(b.digest, Some(d(7)));
        let b = DeclaredBase::parse(Some("team/base:1.0"), Some("not a digest")).unwrap();
        assert_eq!(
            (b.repo.as_str(), b.tag.as_str(), b.digest),
            ("team/base", "1.0", None)
        );
        assert_eq!(DeclaredBase::parse(Some("localhost:5000/base"), None), None);
        assert_eq!(
            DeclaredBase::parse(None, Some(d(1).to_string().as_str())),
            None
        );
    }
}
