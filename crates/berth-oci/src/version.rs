//! Release versions in tags: which tags name a release (`1.2.3`, `v1.2.3-rc.1`), which
//! float over a range (`latest`, `1`, `1.2`, `v1`), and the version a tag or an
//! `org.opencontainers.image.version` annotation names.
//!
//! The server's tag policy, its download analytics and `berth publish` all read tags
//! this way, so they live here, once: a tag the policy protects as a release is the same
//! tag the publisher counts as published.

use semver::Version;

/// What kind of tag a name is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagKind {
    /// A full semver version (`1.2.3`, `v1.2.3-rc.1`): names one release.
    Release(Version),
    /// `latest`: the newest stable release.
    Latest,
    /// `1` or `v1`: the newest release of a major version.
    Major(u64),
    /// `1.2` or `v1.2`: the newest release of a minor version.
    Minor(u64, u64),
    /// Anything else (`main`, `sha-abc1234`, `edge`).
    Other,
}

impl TagKind {
    /// True for tags that move from release to release (`latest`, major, minor).
    pub fn is_floating(&self) -> bool {
        matches!(
            self,
            TagKind::Latest | TagKind::Major(_) | TagKind::Minor(..)
        )
    }
}

/// `s` without a leading `v` or `V` when a digit follows it (`v1.2` → `1.2`); other
/// strings (`vnext`, `1.2`) are returned as they are.
pub fn strip_v(s: &str) -> &str {
    match s.strip_prefix(['v', 'V']) {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest,
        _ => s,
    }
}

/// The semver version `s` names, ignoring surrounding spaces and a `v`/`V` prefix
/// (`" v1.2.3 "` → `1.2.3`); `None` when it is not a full version.
pub fn parse_version(s: &str) -> Option<Version> {
    Version::parse(strip_v(s.trim())).ok()
}

/// Classifies a tag name. Tags cannot hold `+`, so build metadata never appears here.
pub fn classify(tag: &str) -> TagKind {
    if tag == "latest" {
        return TagKind::Latest;
    }
    let s = strip_v(tag);
    if let Ok(v) = Version::parse(s) {
        return TagKind::Release(v);
    }
    // Like semver's own numbers: digits only, and no leading zero (so `01` is no major).
    let num = |p: &str| -> Option<u64> {
        (!p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && (p == "0" || !p.starts_with('0')))
        .then(|| p.parse().ok())
        .flatten()
    };
    let mut parts = s.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), None, None) => num(a).map_or(TagKind::Other, TagKind::Major),
        (Some(a), Some(b), None) => match (num(a), num(b)) {
            (Some(a), Some(b)) => TagKind::Minor(a, b),
            _ => TagKind::Other,
        },
        _ => TagKind::Other,
    }
}

/// The release version a tag names, if it is a release tag.
pub fn release_of(tag: &str) -> Option<Version> {
    match classify(tag) {
        TagKind::Release(v) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify("1.2.3"), TagKind::Release(Version::new(1, 2, 3)));
        assert!(matches!(classify("v1.3.0-rc.1"), TagKind::Release(_)));
        assert!(matches!(classify("V2.0.0"), TagKind::Release(_)));
        assert_eq!(classify("latest"), TagKind::Latest);
        assert_eq!(classify("1"), TagKind::Major(1));
        assert_eq!(classify("v1.2"), TagKind::Minor(1, 2));
        assert_eq!(classify("main"), TagKind::Other);
        assert_eq!(classify("vnext"), TagKind::Other);
        assert_eq!(classify("sha-abc1234"), TagKind::Other);
        assert_eq!(classify("01"), TagKind::Other);
        assert_eq!(classify("1.2.3.4"), TagKind::Other);
        assert!(classify("1.2").is_floating() && !classify("1.2.3").is_floating());
    }

    #[test]
    fn versions_with_and_without_v() {
        assert_eq!(strip_v("v1.2"), "1.2");
        assert_eq!(strip_v("V1.2"), "1.2");
        assert_eq!(strip_v("vnext"), "vnext");
        assert_eq!(parse_version(" V1.2.3 "), Some(Version::new(1, 2, 3)));
        assert_eq!(parse_version("1.2"), None);
        assert_eq!(release_of("v3.1.4"), Some(Version::new(3, 1, 4)));
        assert_eq!(release_of("3.1"), None);
    }
}
