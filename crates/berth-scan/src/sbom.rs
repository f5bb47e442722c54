//! Packages from an SBOM document: SPDX 2.3 JSON (`packages[].externalRefs[]` whose
//! `referenceType` is `purl`) or CycloneDX JSON (`components[].purl`, nested components
//! included). Only the purls are read: they are all the matcher needs.

use crate::Package;

/// Why an SBOM was refused.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("the SBOM is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not an SPDX (spdxVersion) or CycloneDX (bomFormat) JSON document")]
    Format,
}

/// The packages of an SPDX or CycloneDX JSON document, in document order, each purl once.
pub fn packages(bytes: &[u8]) -> Result<Vec<Package>, SbomError> {
    let doc: serde_json::Value = serde_json::from_slice(bytes)?;
    let mut purls = Vec::new();
    if doc.get("spdxVersion").is_some() {
        for package in doc["packages"].as_array().into_iter().flatten() {
            for r in package["externalRefs"].as_array().into_iter().flatten() {
                if r["referenceType"].as_str() == Some("purl") {
                    if let Some(purl) = r["referenceLocator"].as_str() {
                        purls.push(purl.to_owned());
                    }
                }
            }
        }
    } else if doc["bomFormat"].as_str() == Some("CycloneDX") {
        collect_components(&doc["components"], &mut purls);
    } else {
        return Err(SbomError::Format);
    }
    let mut seen = std::collections::HashSet::new();
    purls.retain(|p| seen.insert(p.clone()));
    Ok(purls.into_iter().map(|purl| Package { purl }).collect())
}

fn collect_components(components: &serde_json::Value, out: &mut Vec<String>) {
    for c in components.as_array().into_iter().flatten() {
        if let Some(purl) = c["purl"].as_str() {
            out.push(purl.to_owned());
        }
        collect_components(&c["components"], out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdx_purls_come_from_external_refs() {
        let doc = serde_json::json!({
            "spdxVersion": "SPDX-2.3",
            "packages": [
                {"SPDXID": "SPDXRef-a", "name": "openssl", "externalRefs": [
                    {"referenceCategory": "SECURITY", "referenceType": "cpe23Type",
                     "referenceLocator": "cpe:2.3:a:openssl:openssl:3.0.11:*:*:*:*:*:*:*"},
                    {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                     "referenceLocator": "pkg:deb/debian/openssl@3.0.11-1?distro=debian-12"}
                ]},
                {"SPDXID": "SPDXRef-b", "name": "no-refs"}
            ]
        });
        let got = packages(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(
            got,
            [Package {
                purl: "pkg:deb/debian/openssl@3.0.11-1?distro=debian-12".into()
            }]
        );
    }

    #[test]
    fn cyclonedx_purls_include_nested_components_once() {
        let doc = serde_json::json!({
            "bomFormat": "CycloneDX", "specVersion": "1.5",
            "components": [
                {"type": "library", "name": "a", "purl": "pkg:npm/a@1.0.0", "components": [
                    {"type": "library", "name": "b", "purl": "pkg:npm/b@2.0.0"}
                ]},
                {"type": "library", "name": "a", "purl": "pkg:npm/a@1.0.0"}
            ]
        });
        let got = packages(&serde_json::to_vec(&doc).unwrap()).unwrap();
        let purls: Vec<_> = got.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(purls, ["pkg:npm/a@1.0.0", "pkg:npm/b@2.0.0"]);
    }

    #[test]
    fn other_documents_are_refused() {
        assert!(matches!(packages(b"{\"x\": 1}"), Err(SbomError::Format)));
        assert!(matches!(packages(b"not json"), Err(SbomError::Json(_))));
    }
}
