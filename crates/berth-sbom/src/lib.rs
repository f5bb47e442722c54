//! Software bills of materials for container images: what is installed in an image,
//! read from its layers, written as SPDX 2.3 or CycloneDX 1.5 JSON.
//!
//! # Layout
//! - [`layers`]: reads one layer as a stream (gzip, zstd or plain tar, sniffed from its
//!   first bytes) without unpacking it, keeping only the files a cataloger wants
//!   ([`layers::scan_layer`]), and merges the layers in order, applying whiteouts
//!   ([`layers::merge`]).
//! - [`catalog`]: one cataloger per package database or file kind (dpkg, apk, RPM's
//!   SQLite database, Python, npm, Go build info, `cargo auditable`, Maven
//!   `pom.properties` in jars, `os-release`), each a pure function over a file's bytes.
//! - [`purl`]: package URLs; [`license`]: SPDX licence expressions.
//! - [`spdx`] and [`cyclonedx`]: the two JSON writers.
//!
//! Nothing here talks to a registry or knows the command line: the caller streams the
//! layer blobs in (the client, `berth sbom`), in any order and in parallel, and
//! [`layers::merge`] puts them in the image's order. The only file written is a
//! temporary copy of an RPM SQLite database, which SQLite can only open from a file.
//!
//! **Memory is bounded**: a layer is read as a stream; only files whose path a cataloger
//! claims are read, each up to a limit ([`layers::Limits`]), and only what was found in
//! them (packages, not bytes) is kept.

pub mod catalog;
pub mod cyclonedx;
pub mod elf;
pub mod layers;
pub mod license;
pub mod purl;
pub mod spdx;

use serde::Serialize;

/// Why a layer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// The layer is not a (compressed) tar archive, or it is cut short.
    #[error("layer {layer}: {source}")]
    Layer {
        layer: String,
        #[source]
        source: std::io::Error,
    },
    /// The document could not be serialised.
    #[error("cannot write the SBOM: {0}")]
    Write(#[from] serde_json::Error),
}

/// Which ecosystem a package belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A Debian/Ubuntu package (dpkg).
    Deb,
    /// An Alpine package (apk).
    Apk,
    /// An RPM package.
    Rpm,
    /// A Python distribution (`.dist-info`, `.egg-info`).
    Python,
    /// A Node package (`node_modules/**/package.json`).
    Npm,
    /// A Go module built into a binary.
    Go,
    /// A Rust crate built into a binary with `cargo auditable`.
    Rust,
    /// A Maven artifact in a jar.
    Maven,
}

impl Kind {
    /// The package URL type (`pkg:<type>/...`).
    pub fn purl_type(self) -> &'static str {
        match self {
            Kind::Deb => "deb",
            Kind::Apk => "apk",
            Kind::Rpm => "rpm",
            Kind::Python => "pypi",
            Kind::Npm => "npm",
            Kind::Go => "golang",
            Kind::Rust => "cargo",
            Kind::Maven => "maven",
        }
    }

    /// Whether the package manager of the operating system installed it.
    pub fn is_os_package(self) -> bool {
        matches!(self, Kind::Deb | Kind::Apk | Kind::Rpm)
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub kind: Kind,
    /// The purl namespace where the ecosystem has one: a Maven group id, an npm scope
    /// (`@types`). Operating system packages get theirs from the OS release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub version: String,
    /// The architecture an OS package was built for (`amd64`, `x86_64`, `noarch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// An RPM epoch (dpkg keeps the epoch in the version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The source package an OS package was built from, when its name differs (dpkg's
    /// `Source`, apk's origin `o`): `openssl` for `libssl3`, or `gcc-12@12.2.0-14` when
    /// the source version differs too, as syft writes the purl's `upstream` qualifier.
    /// Distributions' advisories name source packages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Licences as the package records them (an SPDX expression or free text), in order.
    pub licenses: Vec<String>,
    /// The digest of the layer the package was found in (set by [`layers::merge`]).
    pub layer: String,
    /// The file it was read from, without a leading `/`.
    pub path: String,
    /// The package URL (set by [`layers::merge`] once the OS release is known).
    pub purl: String,
}

impl Package {
    /// A package of `kind` with no licence, arch or location yet.
    pub fn new(kind: Kind, name: impl Into<String>, version: impl Into<String>) -> Package {
        Package {
            kind,
            namespace: None,
            name: name.into(),
            version: version.into(),
            arch: None,
            epoch: None,
            upstream: None,
            licenses: Vec::new(),
            layer: String::new(),
            path: String::new(),
            purl: String::new(),
        }
    }
}

/// The operating system an image says it is (`etc/os-release`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsRelease {
    /// `ID`: `debian`, `alpine`, `fedora`.
    pub id: String,
    /// `VERSION_ID`: `12`, `3.20.3`, `40`.
    pub version_id: String,
    /// `PRETTY_NAME`, for people.
    pub pretty_name: String,
}

/// What an image holds: its OS release and its packages, in layer order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<OsRelease>,
    pub packages: Vec<Package>,
    /// What could not be read and why (an RPM Berkeley DB, a jar too large…).
    pub notes: Vec<String>,
}

/// The image an SBOM describes, as the writers name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// `registry/repository`, e.g. `localhost:5000/app`.
    pub name: String,
    /// The image manifest's digest (`sha256:…`).
    pub digest: String,
    /// The tag it was named by, if any.
    pub tag: Option<String>,
    /// `linux/amd64`, when known.
    pub platform: Option<String>,
}

/// How an SBOM document is stamped: by whom and when. Kept apart from the inventory so
/// that the writers stay pure functions (the caller reads the clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The tool's version, e.g. `0.1.0`.
    pub tool_version: String,
    /// Creation time, RFC 3339 in UTC to the second (`2026-01-02T03:04:05Z`).
    pub created: String,
}

/// The output format of an SBOM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// SPDX 2.3 JSON.
    SpdxJson,
    /// CycloneDX 1.5 JSON.
    CycloneDxJson,
}

impl Format {
    /// The media type of the document, also the `artifactType` of its referrer.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::SpdxJson => "application/spdx+json",
            Format::CycloneDxJson => "application/vnd.cyclonedx+json",
        }
    }

    /// The in-toto predicate type of an attestation carrying the document.
    pub fn predicate_type(self) -> &'static str {
        match self {
            Format::SpdxJson => "https://spdx.dev/Document",
            Format::CycloneDxJson => "https://cyclonedx.org/bom",
        }
    }

    /// Writes `inventory` about `subject` in this format, as pretty JSON.
    pub fn write(
        self,
        inventory: &Inventory,
        subject: &Subject,
        stamp: &Stamp,
    ) -> Result<Vec<u8>, SbomError> {
        // Serialised straight from the models, so fields keep the order the specs list.
        let mut out = match self {
            Format::SpdxJson => {
                serde_json::to_vec_pretty(&spdx::document(inventory, subject, stamp))?
            }
            Format::CycloneDxJson => {
                serde_json::to_vec_pretty(&cyclonedx::document(inventory, subject, stamp))?
            }
        };
        out.push(b'\n');
        Ok(out)
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "spdx-json" | "spdx" => Ok(Format::SpdxJson),
            "cyclonedx-json" | "cyclonedx" => Ok(Format::CycloneDxJson),
            other => Err(format!(
                "unknown SBOM format {other:?}: use spdx-json or cyclonedx-json"
            )),
        }
    }
}

/// A UUID (RFC 9562 version 8: application-defined bits) derived from `parts`, so
/// that a document's identifier is stable for the same image and time without a
/// random source.
pub fn uuid_from(parts: &[&str]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let mut b: [u8; 16] = [0; 16];
    b.copy_from_slice(&h.finalize()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let u = uuid_from(&["a", "b"]);
        assert_eq!(u, uuid_from(&["a", "b"]));
        assert_ne!(u, uuid_from(&["ab", ""]));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "8");
    }

    #[test]
    fn formats_parse_and_name_their_media_types() {
        let spdx: Format = "spdx-json".parse().unwrap();
        assert_eq!(spdx.media_type(), "application/spdx+json");
        let cdx: Format = "cyclonedx-json".parse().unwrap();
        assert_eq!(cdx.media_type(), "application/vnd.cyclonedx+json");
        assert_eq!(cdx.predicate_type(), "https://cyclonedx.org/bom");
        assert!("xml".parse::<Format>().is_err());
    }
}
