//! Package URLs (`pkg:type/namespace/name@version?qualifiers#subpath`), parsed as the
//! purl specification says, and the package name OSV uses for each type.

use std::collections::BTreeMap;

use crate::ecosystem::Ecosystem;

/// A parsed package URL. Every component is percent-decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purl {
    /// The type, in lower case (`deb`, `apk`, `pypi`, `npm`, `golang`, `cargo`, `maven`).
    pub ty: String,
    /// The namespace segments joined by `/` (`debian`, `golang.org/x`, `@babel`).
    pub namespace: Option<String>,
    pub name: String,
    pub version: Option<String>,
    pub qualifiers: BTreeMap<String, String>,
}

/// Why a purl was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PurlError {
    #[error("not a package URL (no pkg: scheme): {0}")]
    Scheme(String),
    #[error("package URL without a type or a name: {0}")]
    Incomplete(String),
    #[error("package URL with a bad percent-encoding: {0}")]
    Encoding(String),
}

impl Purl {
    /// Parses a package URL.
    pub fn parse(s: &str) -> Result<Purl, PurlError> {
        let rest = s
            .strip_prefix("pkg:")
            .ok_or_else(|| PurlError::Scheme(s.to_owned()))?
            .trim_start_matches('/');
        let rest = rest.split_once('#').map_or(rest, |(r, _subpath)| r);
        let (rest, qualifiers) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (rest, version) = match rest.rsplit_once('@') {
            // An `@` inside the path (an npm scope written unencoded) is not a version.
            Some((r, v)) if !v.contains('/') => (r, Some(decode(v, s)?)),
            _ => (rest, None),
        };
        let rest = rest.trim_end_matches('/');
        let (ty, path) = rest
            .split_once('/')
            .ok_or_else(|| PurlError::Incomplete(s.to_owned()))?;
        let (namespace, name) = match path.rsplit_once('/') {
            Some((ns, name)) => {
                let ns = ns
                    .split('/')
                    .filter(|seg| !seg.is_empty())
                    .map(|seg| decode(seg, s))
                    .collect::<Result<Vec<_>, _>>()?
                    .join("/");
                ((!ns.is_empty()).then_some(ns), name)
            }
            None => (None, path),
        };
        if ty.is_empty() || name.is_empty() {
            return Err(PurlError::Incomplete(s.to_owned()));
        }
        let mut map = BTreeMap::new();
        for pair in qualifiers.into_iter().flat_map(|q| q.split('&')) {
            if let Some((k, v)) = pair.split_once('=') {
                map.insert(k.to_ascii_lowercase(), decode(v, s)?);
            }
        }
        Ok(Purl {
            ty: ty.to_ascii_lowercase(),
            namespace,
            name: decode(name, s)?,
            version,
            qualifiers: map,
        })
    }

    /// The names OSV may file this package under in `ecosystem`: the module path for Go,
    /// `@scope/name` for npm, `group:artifact` for Maven, the name otherwise; for Debian
    /// and Alpine packages also the source package of the `upstream` qualifier (OSV's
    /// distribution records name source packages, SBOMs name binary ones).
    pub fn osv_names(&self, ecosystem: Ecosystem) -> Vec<String> {
        let joined = |sep: &str| match &self.namespace {
            Some(ns) => format!("{ns}{sep}{}", self.name),
            None => self.name.clone(),
        };
        match ecosystem {
            Ecosystem::Go | Ecosystem::Npm => vec![joined("/")],
            Ecosystem::Maven => vec![joined(":")],
            Ecosystem::Debian | Ecosystem::Ubuntu | Ecosystem::Alpine => {
                let mut names = vec![self.name.clone()];
                if let Some(upstream) = self.qualifiers.get("upstream") {
                    // Syft writes `upstream=src` or `upstream=src@version`.
                    let source = upstream.split(['@', ' ']).next().unwrap_or(upstream);
                    if !source.is_empty() && source != self.name {
                        names.push(source.to_owned());
                    }
                }
                names
            }
            Ecosystem::PyPI | Ecosystem::CratesIo => vec![self.name.clone()],
        }
    }

    /// The version of the distribution the package belongs to, from the `distro`
    /// qualifier (`debian-12` gives `12`, `alpine-3.19.1` gives `3.19.1`).
    pub fn distro_version(&self) -> Option<&str> {
        let distro = self.qualifiers.get("distro")?;
        Some(distro.rsplit_once('-').map_or(distro.as_str(), |(_, v)| v))
    }
}

/// Percent-decodes one component.
fn decode(s: &str, whole: &str) -> Result<String, PurlError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| PurlError::Encoding(whole.to_owned()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PurlError::Encoding(whole.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purls_of_each_ecosystem() {
        let p = Purl::parse(
            "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&upstream=openssl&distro=debian-12",
        )
        .unwrap();
        assert_eq!(p.ty, "deb");
        assert_eq!(p.namespace.as_deref(), Some("debian"));
        assert_eq!(p.version.as_deref(), Some("3.0.11-1~deb12u2"));
        assert_eq!(p.distro_version(), Some("12"));
        assert_eq!(p.osv_names(Ecosystem::Debian), ["libssl3", "openssl"]);

        let p = Purl::parse("pkg:golang/golang.org/x/net@v0.17.0").unwrap();
        assert_eq!(p.osv_names(Ecosystem::Go), ["golang.org/x/net"]);

        let p = Purl::parse("pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1").unwrap();
        assert_eq!(
            p.osv_names(Ecosystem::Maven),
            ["org.apache.logging.log4j:log4j-core"]
        );

        let p = Purl::parse("pkg:npm/%40babel/core@7.0.0").unwrap();
        assert_eq!(p.osv_names(Ecosystem::Npm), ["@babel/core"]);

        let p = Purl::parse("pkg:apk/alpine/musl@1.2.4-r2?distro=alpine-3.19.1").unwrap();
        assert_eq!(p.distro_version(), Some("3.19.1"));
        assert_eq!(p.version.as_deref(), Some("1.2.4-r2"));
    }

    #[test]
    fn a_syft_upstream_with_a_version_names_the_source_package() {
        let p =
            Purl::parse("pkg:deb/debian/libgcc-s1@12.2.0-14?upstream=gcc-12%4012.2.0-14").unwrap();
        assert_eq!(p.osv_names(Ecosystem::Debian), ["libgcc-s1", "gcc-12"]);
    }

    #[test]
    fn malformed_purls_are_refused() {
        assert!(matches!(
            Purl::parse("deb/debian/x@1"),
            Err(PurlError::Scheme(_))
        ));
        assert!(matches!(
            Purl::parse("pkg:deb"),
            Err(PurlError::Incomplete(_))
        ));
        assert!(matches!(
            Purl::parse("pkg:npm/x%zz@1"),
            Err(PurlError::Encoding(_))
        ));
    }
}
