//! The ecosystems the matcher knows: how a purl names them, how OSV names them, and
//! which version ordering they use.

use crate::purl::Purl;
use crate::version::Scheme;

/// A package ecosystem, as OSV groups its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ecosystem {
    Debian,
    Ubuntu,
    Alpine,
    PyPI,
    Npm,
    Go,
    CratesIo,
    Maven,
}

impl Ecosystem {
    /// Every supported ecosystem.
    pub const ALL: [Ecosystem; 8] = [
        Ecosystem::Debian,
        Ecosystem::Ubuntu,
        Ecosystem::Alpine,
        Ecosystem::PyPI,
        Ecosystem::Npm,
        Ecosystem::Go,
        Ecosystem::CratesIo,
        Ecosystem::Maven,
    ];

    /// OSV's name, without the release suffix (`Debian` of `Debian:12`); also the name
    /// of the ecosystem's index file.
    pub fn osv_name(self) -> &'static str {
        match self {
            Ecosystem::Debian => "Debian",
            Ecosystem::Ubuntu => "Ubuntu",
            Ecosystem::Alpine => "Alpine",
            Ecosystem::PyPI => "PyPI",
            Ecosystem::Npm => "npm",
            Ecosystem::Go => "Go",
            Ecosystem::CratesIo => "crates.io",
            Ecosystem::Maven => "Maven",
        }
    }

    /// The ecosystem of an OSV `affected[].package.ecosystem` value and its release
    /// (`Debian:12` is Debian, release `12`; `Alpine:v3.19` is Alpine, release `3.19`).
    pub fn from_osv(value: &str) -> Option<(Ecosystem, Option<&str>)> {
        let (name, release) = match value.split_once(':') {
            Some((name, release)) => (name, Some(release)),
            None => (value, None),
        };
        let eco = Ecosystem::ALL.into_iter().find(|e| e.osv_name() == name)?;
        let release = release.map(|r| r.strip_prefix('v').unwrap_or(r));
        Some((eco, release))
    }

    /// The ecosystem of a purl (`pkg:deb/debian/...` is Debian).
    pub fn from_purl(purl: &Purl) -> Option<Ecosystem> {
        match (purl.ty.as_str(), purl.namespace.as_deref()) {
            ("deb", Some("debian")) => Some(Ecosystem::Debian),
            ("deb", Some("ubuntu")) => Some(Ecosystem::Ubuntu),
            ("apk", Some("alpine")) => Some(Ecosystem::Alpine),
            ("pypi", _) => Some(Ecosystem::PyPI),
            ("npm", _) => Some(Ecosystem::Npm),
            ("golang", _) => Some(Ecosystem::Go),
            ("cargo", _) => Some(Ecosystem::CratesIo),
            ("maven", Some(_)) => Some(Ecosystem::Maven),
            _ => None,
        }
    }

    /// The version ordering of the ecosystem.
    pub fn scheme(self) -> Scheme {
        match self {
            Ecosystem::Debian | Ecosystem::Ubuntu => Scheme::Dpkg,
            Ecosystem::Alpine => Scheme::Apk,
            Ecosystem::PyPI => Scheme::Pep440,
            Ecosystem::Npm | Ecosystem::Go | Ecosystem::CratesIo => Scheme::Semver,
            Ecosystem::Maven => Scheme::Maven,
        }
    }

    /// Whether records are split by distribution release (and a package's release must
    /// match the record's).
    pub fn has_releases(self) -> bool {
        matches!(
            self,
            Ecosystem::Debian | Ecosystem::Ubuntu | Ecosystem::Alpine
        )
    }

    /// The key a package name is indexed under: PyPI names are compared in their
    /// PEP 503 normal form (`Foo_Bar` is `foo-bar`); other names as they are.
    pub fn normalize_name(self, name: &str) -> String {
        match self {
            Ecosystem::PyPI => {
                let mut out = String::with_capacity(name.len());
                for c in name.chars() {
                    let c = c.to_ascii_lowercase();
                    if matches!(c, '-' | '_' | '.') {
                        if !out.ends_with('-') {
                            out.push('-');
                        }
                    } else {
                        out.push(c);
                    }
                }
                out
            }
            _ => name.to_owned(),
        }
    }
}

/// Whether a record's release (`12`, `3.19`, `22.04:LTS`) is the release a package's
/// purl names in its `distro` qualifier (`debian-12`, `alpine-3.19.1`, `ubuntu-22.04`).
/// The release must be a prefix of the qualifier's version ending at a dot or at its
/// end, so Alpine `3.19` matches `3.19.1` but not `3.1`.
pub fn release_matches(record_release: &str, distro_version: &str) -> bool {
    let release = record_release.split(':').next().unwrap_or(record_release);
    match distro_version.strip_prefix(release) {
        Some(rest) => rest.is_empty() || rest.starts_with('.'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osv_ecosystem_names_carry_a_release() {
        assert_eq!(
            Ecosystem::from_osv("Debian:12"),
            Some((Ecosystem::Debian, Some("12")))
        );
        assert_eq!(
            Ecosystem::from_osv("Alpine:v3.19"),
            Some((Ecosystem::Alpine, Some("3.19")))
        );
        assert_eq!(
            Ecosystem::from_osv("crates.io"),
            Some((Ecosystem::CratesIo, None))
        );
        assert_eq!(Ecosystem::from_osv("Packagist"), None);
    }

    #[test]
    fn releases_match_by_whole_components() {
        assert!(release_matches("12", "12"));
        assert!(release_matches("3.19", "3.19.1"));
        assert!(!release_matches("3.1", "3.19.1"));
        assert!(!release_matches("11", "12"));
        assert!(release_matches("22.04:LTS", "22.04"));
    }

    #[test]
    fn pypi_names_are_normalized_as_pep_503_says() {
        assert_eq!(
            Ecosystem::PyPI.normalize_name("Friendly-Bard"),
            "friendly-bard"
        );
        assert_eq!(
            Ecosystem::PyPI.normalize_name("friendly__bard"),
            "friendly-bard"
        );
        assert_eq!(
            Ecosystem::PyPI.normalize_name("FRIENDLY.-bArD"),
            "friendly-bard"
        );
        assert_eq!(Ecosystem::Npm.normalize_name("@Scope/Name"), "@Scope/Name");
    }
}
