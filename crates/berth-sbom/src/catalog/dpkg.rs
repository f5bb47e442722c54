//! dpkg's database: `var/lib/dpkg/status`, and distroless's `var/lib/dpkg/status.d/*`
//! (one stanza per file, often without a `Status` field).
//!
//! A package counts when its `Status` says `installed` (not `config-files` or
//! `half-installed`), which is what `dpkg-query -W` lists as installed. dpkg records no
//! licence (that lives in `/usr/share/doc/<name>/copyright`, free text).

use super::stanzas;
use crate::{Kind, Package};

/// The installed packages of a status file.
pub fn parse(text: &str) -> Vec<Package> {
    stanzas(text)
        .into_iter()
        .filter_map(|fields| {
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(f, _)| f.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.as_str())
            };
            let installed =
                get("Status").is_none_or(|s| s.split_whitespace().nth(2) == Some("installed"));
            let (name, version) = (get("Package")?, get("Version")?);
            if !installed || name.is_empty() || version.is_empty() {
                return None;
            }
            let mut p = Package::new(Kind::Deb, name, version);
            p.arch = get("Architecture").map(str::to_owned);
            // `Source: openssl`, or `Source: gcc-12 (12.2.0-14)` when the source version
            // differs from the binary's.
            p.upstream = get("Source").and_then(|s| {
                let (source, version) = match s.split_once('(') {
                    Some((n, v)) => (n.trim(), Some(v.trim_end_matches(')').trim())),
                    None => (s.trim(), None),
                };
                match version {
                    _ if source.is_empty() => None,
                    Some(v) if !v.is_empty() => Some(format!("{source}@{v}")),
                    _ if source == name => None,
                    _ => Some(source.to_owned()),
                }
            });
            Some(p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_packages_count() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1:2.3-4\nArchitecture: amd64\nDescription: x\n long\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: distroless\nVersion: 5\nArchitecture: all\n";
        let p = parse(text);
        let names: Vec<_> = p
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(names, [("a", "1:2.3-4"), ("distroless", "5")]);
        assert_eq!(p[0].arch.as_deref(), Some("amd64"));
    }

    #[test]
    fn the_source_package_is_the_upstream() {
        let text = "Package: libssl3\nStatus: install ok installed\nSource: openssl\nVersion: 3.0.11-1\n\n\
                    Package: libgcc-s1\nStatus: install ok installed\nSource: gcc-12 (12.2.0-14)\nVersion: 12.2.0-14\n\n\
                    Package: bash\nStatus: install ok installed\nSource: bash\nVersion: 5.2-15\n\n\
                    Package: curl\nStatus: install ok installed\nVersion: 7.88.1-10\n";
        let up: Vec<Option<String>> = parse(text).into_iter().map(|p| p.upstream).collect();
        assert_eq!(
            up,
            [
                Some("openssl".into()),
                Some("gcc-12@12.2.0-14".into()),
                None,
                None
            ]
        );
    }
}
