//! Version ordering, one comparator per ecosystem: a vulnerability range is only as good
//! as the ordering it is evaluated with (`1.0~rc1` is *before* `1.0` for dpkg, `1.0-r1`
//! *after* `1.0` for apk, `1.0.dev0` before `1.0a1` for Python).
//!
//! Each comparator is total: a version its scheme cannot parse still compares, as a
//! string, so a malformed record never stops a scan.

pub mod apk;
pub mod dpkg;
pub mod maven;
pub mod pep440;
pub mod semver;

use std::cmp::Ordering;

/// A version ordering scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Debian and Ubuntu packages (Debian Policy 5.6.12).
    Dpkg,
    /// Alpine packages (apk-tools).
    Apk,
    /// Python packages (PEP 440).
    Pep440,
    /// npm, crates.io and Go modules (SemVer 2.0.0).
    Semver,
    /// Maven artifacts (`ComparableVersion`).
    Maven,
}

impl Scheme {
    /// Compares two versions under this scheme.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Scheme::Dpkg => dpkg::compare(a, b),
            Scheme::Apk => apk::compare(a, b),
            Scheme::Pep440 => pep440::compare(a, b),
            Scheme::Semver => semver::compare(a, b),
            Scheme::Maven => maven::compare(a, b),
        }
    }
}
