//! Which attestation type a predicate file attached by `berth publish --attest FILE`
//! most likely is, when the user gives none: decided from the file's name alone, as
//! SBOM and provenance tools name their outputs (`*.spdx.json`, `*.cdx.json`,
//! `*.intoto.jsonl`…). The binary turns the name into a predicate type URI.

/// The `--type` name (as `berth attest --type` and `cosign attest --type` take it) for a
/// predicate file named `path`: `spdxjson`, `cyclonedx`, `slsaprovenance`, `openvex`, or
/// `custom` when the name says nothing.
pub fn attestation_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    if name.contains("spdx") {
        "spdxjson"
    } else if name.contains("cyclonedx") || name.contains(".cdx") || name.starts_with("bom.") {
        "cyclonedx"
    } else if name.contains("provenance") || name.contains("slsa") || name.contains("intoto") {
        "slsaprovenance"
    } else if name.contains("vex") {
        "openvex"
    } else {
        "custom"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_give_types() {
        for (path, want) in [
            ("build/sbom.spdx.json", "spdxjson"),
            ("SBOM.SPDX.JSON", "spdxjson"),
            ("out/app.cdx.json", "cyclonedx"),
            ("bom.json", "cyclonedx"),
            ("app.cyclonedx.json", "cyclonedx"),
            ("provenance.json", "slsaprovenance"),
            ("multiple.intoto.jsonl", "slsaprovenance"),
            ("release.openvex.json", "openvex"),
            ("notes.json", "custom"),
            // Only the file name counts, not the directories.
            ("spdx/notes.json", "custom"),
        ] {
            assert_eq!(attestation_type(path), want, "{path}");
        }
    }
}
