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
}
