//! Catalogers: which files hold package information ([`wants`]), and what they hold
//! ([`catalogue`]). Each submodule reads one format from bytes and returns packages
//! without their location or package URL, which [`crate::layers::merge`] adds once the
//! layers are stacked.
//!
//! A cataloger never fails: a file it cannot read yields a note instead, so one damaged
//! file does not hide the rest of the image.

pub mod apk;
pub mod binary;
pub mod dpkg;
pub mod java;
pub mod npm;
pub mod os;
pub mod python;
pub mod rpm;

use crate::{OsRelease, Package};

/// What a file held.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub packages: Vec<Package>,
    /// The OS release, for `os-release` files.
    pub os: Option<OsRelease>,
    /// What could not be read.
    pub notes: Vec<String>,
}

impl Found {
    /// Packages only.
    pub fn packages(packages: Vec<Package>) -> Found {
        Found {
            packages,
            ..Found::default()
        }
    }

    /// A note only.
    pub fn note(note: String) -> Found {
        Found {
            notes: vec![note],
            ..Found::default()
        }
    }
}

/// Which read limit applies to a wanted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// A package database or metadata file.
    Database,
    /// An executable that may carry Go build info or `cargo auditable` data.
    Binary,
    /// A jar, war or ear.
    Archive,
}

/// Whether a regular file at `path` (normalised, no leading `/`) with `mode` is read.
pub fn wants(path: &str, mode: u32) -> Option<Wanted> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let db = Some(Wanted::Database);
    match path {
        "var/lib/dpkg/status"
        | "lib/apk/db/installed"
        | "etc/os-release"
        | "usr/lib/os-release"
        | "var/lib/rpm/rpmdb.sqlite"
        | "usr/lib/sysimage/rpm/rpmdb.sqlite"
        | "var/lib/rpm/Packages"
        | "usr/lib/sysimage/rpm/Packages"
        | "usr/lib/sysimage/rpm/Packages.db" => return db,
        _ => {}
    }
    if let Some(entry) = path.strip_prefix("var/lib/dpkg/status.d/") {
        // Distroless keeps one stanza per package here, beside `<name>.md5sums`.
        return (!entry.contains('/') && !entry.ends_with(".md5sums")).then_some(Wanted::Database);
    }
    if name == "METADATA" && parent(path).is_some_and(|d| d.ends_with(".dist-info")) {
        return db;
    }
    if name == "PKG-INFO" && parent(path).is_some_and(|d| d.ends_with(".egg-info")) {
        return db;
    }
    if name == "package.json" && npm::is_package_dir(path) {
        return db;
    }
    if [".jar", ".war", ".ear"].iter().any(|e| name.ends_with(e)) {
        return Some(Wanted::Archive);
    }
    if mode & 0o111 != 0 {
        return Some(Wanted::Binary);
    }
    None
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/')
        .map(|(d, _)| d.rsplit('/').next().unwrap_or(d))
}

/// Reads what a wanted file holds.
pub fn catalogue(path: &str, wanted: Wanted, bytes: &[u8]) -> Found {
    let name = path.rsplit('/').next().unwrap_or(path);
    match wanted {
        Wanted::Binary => binary::catalogue(path, bytes),
        Wanted::Archive => java::catalogue(path, bytes),
        Wanted::Database => match name {
            "status" => Found::packages(dpkg::parse(&String::from_utf8_lossy(bytes))),
            _ if path.starts_with("var/lib/dpkg/status.d/") => {
                Found::packages(dpkg::parse(&String::from_utf8_lossy(bytes)))
            }
            "installed" => Found::packages(apk::parse(&String::from_utf8_lossy(bytes))),
            "os-release" => Found {
                os: Some(os::parse(&String::from_utf8_lossy(bytes))),
                ..Found::default()
            },
            "rpmdb.sqlite" => rpm::catalogue(path, bytes),
            "Packages" | "Packages.db" => Found::note(format!(
                "/{path}: an RPM Berkeley DB or NDB database, which no pure-Rust reader reads; its packages are not listed"
            )),
            "METADATA" | "PKG-INFO" => {
                Found::packages(python::parse(&String::from_utf8_lossy(bytes)).into_iter().collect())
            }
            "package.json" => Found::packages(npm::parse(bytes).into_iter().collect()),
            _ => Found::default(),
        },
    }
}

/// Splits RFC 822-style stanzas (dpkg, Python metadata) into `(field, value)` pairs,
/// joining continuation lines; a blank line ends a stanza.
pub(crate) fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_paths() {
        assert_eq!(wants("var/lib/dpkg/status", 0o644), Some(Wanted::Database));
        assert_eq!(
            wants("var/lib/dpkg/status.d/libc6", 0o644),
            Some(Wanted::Database)
        );
        assert_eq!(wants("var/lib/dpkg/status.d/libc6.md5sums", 0o644), None);
        assert_eq!(
            wants(
                "usr/lib/python3/dist-packages/idna-3.3.dist-info/METADATA",
                0o644
            ),
            Some(Wanted::Database)
        );
        assert_eq!(
            wants("usr/lib/x.egg-info/PKG-INFO", 0o644),
            Some(Wanted::Database)
        );
        assert_eq!(wants("srv/METADATA", 0o644), None);
        assert_eq!(wants("opt/app/lib/app.jar", 0o644), Some(Wanted::Archive));
        assert_eq!(wants("usr/bin/app", 0o755), Some(Wanted::Binary));
        assert_eq!(wants("usr/share/doc/readme", 0o644), None);
    }

    #[test]
    fn stanzas_join_continuations() {
        let s = stanzas("A: 1\nB: two\n more\n\n\nA: 3\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0][1], ("B".into(), "two\nmore".into()));
        assert_eq!(s[1][0], ("A".into(), "3".into()));
    }
}
