//! Python distributions: `*.dist-info/METADATA` (wheels, pip) and `*.egg-info/PKG-INFO`
//! (setuptools), both in the core metadata format: email-style headers up to the first
//! blank line, after which the description follows.
//!
//! The licence is `License-Expression` (PEP 639, an SPDX expression) when present, else
//! a one-line `License` field, else the names of `License ::` classifiers.

use super::stanzas;
use crate::{Kind, Package};

/// The distribution a metadata file describes.
pub fn parse(text: &str) -> Option<Package> {
    let headers = stanzas(text).into_iter().next()?;
    let get = |k: &str| {
        headers
            .iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let (name, version) = (get("Name")?, get("Version")?);
    if name.is_empty() || version.is_empty() {
        return None;
    }
    let mut p = Package::new(Kind::Python, name, version);
    if let Some(expr) = get("License-Expression").filter(|l| !l.is_empty()) {
        p.licenses = vec![expr.to_owned()];
    } else if let Some(l) = get("License").filter(|l| {
        !l.is_empty() && !l.contains('\n') && l.len() <= 80 && !l.eq_ignore_ascii_case("UNKNOWN")
    }) {
        p.licenses = vec![l.to_owned()];
    } else {
        p.licenses = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("Classifier"))
            .filter_map(|(_, v)| v.strip_prefix("License ::"))
            .filter_map(|v| v.rsplit("::").next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_version_and_the_best_licence() {
        let p = parse("Metadata-Version: 2.4\nName: Requests\nVersion: 2.32.3\nLicense-Expression: Apache-2.0\nLicense: Apache 2.0\n\nLicense: not a header\n").unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str()),
            ("Requests", "2.32.3")
        );
        assert_eq!(p.licenses, ["Apache-2.0"]);
        let p = parse("Name: six\nVersion: 1.16.0\nLicense: MIT\n").unwrap();
        assert_eq!(p.licenses, ["MIT"]);
        let p = parse("Name: x\nVersion: 1\nLicense: UNKNOWN\nClassifier: License :: OSI Approved :: BSD License\n").unwrap();
        assert_eq!(p.licenses, ["BSD License"]);
        assert!(parse("Name: x\n").is_none());
    }
}
