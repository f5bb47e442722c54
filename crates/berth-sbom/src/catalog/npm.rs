//! Node packages: the `package.json` at the top of each package directory under a
//! `node_modules` (`node_modules/<name>/` or `node_modules/@<scope>/<name>/`), which
//! is where npm, yarn and pnpm install. Other `package.json` files (an application's
//! own, or ones inside a package's sources) are not installed packages.

use serde::Deserialize;

use crate::{Kind, Package};

/// Whether `path` is `…/node_modules/<name>/package.json` or
/// `…/node_modules/@<scope>/<name>/package.json`.
pub fn is_package_dir(path: &str) -> bool {
    let Some((before, _)) = path
        .rsplit_once("/package.json")
        .filter(|(_, a)| a.is_empty())
    else {
        return false;
    };
    let Some(idx) = before.rfind("node_modules/") else {
        return false;
    };
    if idx > 0 && !before[..idx].ends_with('/') {
        return false;
    }
    let rest = &before[idx + "node_modules/".len()..];
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [name] => !name.is_empty() && !name.starts_with('.'),
        [scope, name] => scope.starts_with('@') && !name.is_empty(),
        _ => false,
    }
}

#[derive(Deserialize)]
struct Manifest {
    name: Option<String>,
    version: Option<String>,
    license: Option<License>,
    licenses: Option<Vec<License>>,
}

/// `"license": "MIT"`, or the deprecated `{"type": "MIT", "url": …}` forms.
#[derive(Deserialize)]
#[serde(untagged)]
enum License {
    Text(String),
    Object {
        #[serde(rename = "type")]
        kind: Option<String>,
    },
}

impl License {
    fn into_text(self) -> Option<String> {
        match self {
            License::Text(s) => Some(s),
            License::Object { kind } => kind,
        }
    }
}

/// The package a `package.json` describes.
pub fn parse(bytes: &[u8]) -> Option<Package> {
    let m: Manifest = serde_json::from_slice(bytes).ok()?;
    let (full, version) = (m.name?, m.version?);
    if full.is_empty() || version.is_empty() {
        return None;
    }
    let (namespace, name) = match full.split_once('/') {
        Some((scope, name)) if scope.starts_with('@') => (Some(scope.to_owned()), name.to_owned()),
        _ => (None, full),
    };
    let mut p = Package::new(Kind::Npm, name, version);
    p.namespace = namespace;
    p.licenses = m
        .license
        .into_iter()
        .chain(m.licenses.into_iter().flatten())
        .filter_map(License::into_text)
        .filter(|l| !l.is_empty())
        .collect();
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_directories() {
        assert!(is_package_dir("usr/lib/node_modules/npm/package.json"));
        assert!(is_package_dir("app/node_modules/@types/node/package.json"));
        assert!(is_package_dir("node_modules/a/node_modules/b/package.json"));
        assert!(!is_package_dir("app/package.json"));
        assert!(!is_package_dir("app/node_modules/a/lib/package.json"));
        assert!(!is_package_dir("app/my_node_modules/a/package.json"));
        assert!(!is_package_dir("app/node_modules/.bin/package.json"));
    }

    #[test]
    fn reads_scoped_names_and_licences() {
        let p = parse(br#"{"name":"@types/node","version":"20.1.0","license":"MIT"}"#).unwrap();
        assert_eq!(p.namespace.as_deref(), Some("@types"));
        assert_eq!(
            (p.name.as_str(), p.licenses.as_slice()),
            ("node", &["MIT".to_owned()][..])
        );
        let p = parse(br#"{"name":"old","version":"0.1.0","licenses":[{"type":"MIT"},{"type":"Apache-2.0"}]}"#).unwrap();
        assert_eq!(p.licenses, ["MIT", "Apache-2.0"]);
        assert!(parse(br#"{"name":"noversion"}"#).is_none());
        assert!(parse(b"not json").is_none());
    }
}
