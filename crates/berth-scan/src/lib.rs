//! Vulnerability matching: packages identified by purl, against a local index of OSV
//! records, with each ecosystem's own version ordering. No network I/O: the index is
//! built beforehand by [`db::import`] (`berth db update`) from osv.dev's dumps.
//!
//! # Layout
//! - [`version`]: one comparator per ecosystem (dpkg, apk, PEP 440, SemVer, Maven).
//! - [`ecosystem`]: the supported ecosystems, their purl types and OSV names.
//! - [`purl`]: package URL parsing and the name OSV files a package under.
//! - [`osv`]: the OSV schema's records and the evaluation of affected ranges.
//! - [`cvss`]: CVSS v3 base scores and severity ratings.
//! - [`db`]: the import of OSV dumps into a compact per-ecosystem index, and lookups.
//! - [`sbom`]: the purls of an SPDX or CycloneDX JSON document.
//! - [`report`]: findings as a table, JSON or SARIF 2.1.0.
//!
//! [`scan`] ties them together: for each package, the advisories filed under its name
//! in its ecosystem, kept when the package's distribution release (if the ecosystem
//! has releases) and version fall in an affected entry.
//!
//! **Architecture Invariant:** this crate knows nothing of images or registries: its
//! input is a list of purls, so any SBOM producer (`berth sbom`, syft, trivy) can feed
//! it. The only I/O is the index directory's files and the import's sources.

pub mod cvss;
pub mod db;
pub mod ecosystem;
pub mod osv;
pub mod purl;
pub mod report;
pub mod sbom;
pub mod version;

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

pub use cvss::Severity;
pub use db::{Db, DbError};
pub use ecosystem::Ecosystem;
pub use purl::Purl;

/// A package to scan, identified by its package URL
/// (`pkg:deb/debian/openssl@3.0.11-1?arch=amd64&distro=debian-12`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Package {
    pub purl: String,
}

impl Package {
    pub fn new(purl: impl Into<String>) -> Package {
        Package { purl: purl.into() }
    }
}

/// A vulnerability that affects a package.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// The OSV id (`DSA-5532-1`, `GHSA-jfh8-c2jp-5v3q`, `PYSEC-2023-74`).
    pub id: String,
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub purl: String,
    /// The package's name in its ecosystem (`golang.org/x/net`, `@babel/core`,
    /// `org.apache.logging.log4j:log4j-core`; the binary package for distributions).
    pub package: String,
    /// The ecosystem, with the release for distributions (`Debian:12`).
    pub ecosystem: String,
    pub installed: String,
    /// The first version that fixes it, when one exists.
    pub fixed: Option<String>,
    pub severity: Severity,
    /// The CVSS v3 base score, when the record has a vector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// Matches packages against the index. Packages whose purl does not parse, has no
/// version, or names an ecosystem without records in the index are skipped (with a
/// debug log). A record is reported once per package even when several of its
/// entries match. Findings come most severe first, then by package and id.
///
/// A distribution package whose purl has no `distro` qualifier is matched against the
/// records of every release of its distribution.
pub fn scan(packages: &[Package], db: &Db) -> Vec<Finding> {
    let mut findings = Vec::new();
    for package in packages {
        let purl = match Purl::parse(&package.purl) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "skipping a package");
                continue;
            }
        };
        let (Some(eco), Some(version)) = (Ecosystem::from_purl(&purl), purl.version.as_deref())
        else {
            continue;
        };
        if !db.has(eco) {
            continue;
        }
        let distro = purl.distro_version();
        let mut seen = HashSet::new();
        let names = purl.osv_names(eco);
        // Findings name the installed package (the first name), not the source package
        // a distribution record may be filed under.
        let display = names.first().cloned().unwrap_or_default();
        for name in &names {
            let advisories = match db.lookup(eco, &eco.normalize_name(name)) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable index entry");
                    continue;
                }
            };
            for advisory in advisories {
                if seen.contains(&advisory.id) {
                    continue;
                }
                if let Some(finding) =
                    match_advisory(eco, &advisory, &display, version, distro, package)
                {
                    seen.insert(advisory.id.clone());
                    findings.push(finding);
                }
            }
        }
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.package.cmp(&b.package))
            .then_with(|| a.id.cmp(&b.id))
    });
    findings
}

/// Packages [`scan`] could not check, by reason: `"unsupported"` (a purl that does not
/// parse, has no version, or is of a type the matcher does not know) or the name of a
/// supported ecosystem the index holds no records of (`"PyPI"`: run an import).
pub fn unchecked(packages: &[Package], db: &Db) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for package in packages {
        let reason = match Purl::parse(&package.purl) {
            Ok(purl) => match Ecosystem::from_purl(&purl) {
                Some(_) if purl.version.is_none() => "unsupported",
                Some(eco) if !db.has(eco) => eco.osv_name(),
                Some(_) => continue,
                None => "unsupported",
            },
            Err(_) => "unsupported",
        };
        *out.entry(reason).or_insert(0) += 1;
    }
    out
}

/// The finding of an advisory for a package version, if one of its entries (of the
/// package's release) affects the version.
fn match_advisory(
    eco: Ecosystem,
    advisory: &db::Advisory,
    name: &str,
    version: &str,
    distro: Option<&str>,
    package: &Package,
) -> Option<Finding> {
    let scheme = eco.scheme();
    for entry in &advisory.entries {
        if let (Some(release), Some(distro)) = (&entry.release, distro) {
            if eco.has_releases() && !ecosystem::release_matches(release, distro) {
                continue;
            }
        }
        let in_range = entry
            .ranges
            .iter()
            .find_map(|r| osv::range_affects(scheme, r, version));
        let listed = || {
            entry
                .versions
                .iter()
                .any(|v| scheme.compare(v, version) == std::cmp::Ordering::Equal)
        };
        let mut fixed = match in_range {
            Some(fixed) => fixed,
            None if listed() => None,
            None => continue,
        };
        // Go's OSV records write versions without the `v` every Go tool shows; print the
        // fix the way the installed version is written.
        if eco == Ecosystem::Go && version.starts_with('v') {
            fixed = fixed.map(|f| {
                if f.starts_with('v') {
                    f
                } else {
                    format!("v{f}")
                }
            });
        }
        let ecosystem = match &entry.release {
            Some(r) => format!("{}:{r}", eco.osv_name()),
            None => eco.osv_name().to_owned(),
        };
        return Some(Finding {
            id: advisory.id.clone(),
            aliases: advisory.aliases.clone(),
            summary: advisory.summary.clone(),
            purl: package.purl.clone(),
            package: name.to_owned(),
            ecosystem,
            installed: version.to_owned(),
            fixed,
            severity: entry.severity,
            score: entry.score,
        });
    }
    None
}
