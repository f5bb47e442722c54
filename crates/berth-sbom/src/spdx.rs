//! The SPDX 2.3 JSON writer.
//!
//! A hand-written serde model of the part of SPDX 2.3 an image inventory fills, rather
//! than the `spdx-rs` crate, which has had no release since 2023, stops at SPDX 2.2's
//! model for some fields and brings a parser stack (nom, chrono) a writer does not need.
//! Tests validate the output with the SPDX project's own `pyspdxtools`.
//!
//! The document describes one package for the image (purpose `CONTAINER`), which
//! `CONTAINS` the OS (purpose `OPERATING-SYSTEM`) and every package found. Each package
//! has a `purl` external reference and, in `sourceInfo`, the layer and file it came
//! from. Licences that are not SPDX expressions of known identifiers become
//! `LicenseRef-` identifiers with the recorded text in `hasExtractedLicensingInfos`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::license::{declared, Declared};
use crate::{purl, Inventory, Stamp, Subject};

const NOASSERTION: &str = "NOASSERTION";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub spdx_version: &'static str,
    pub data_license: &'static str,
    #[serde(rename = "SPDXID")]
    pub spdx_id: &'static str,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    pub packages: Vec<SpdxPackage>,
    pub relationships: Vec<Relationship>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub has_extracted_licensing_infos: Vec<ExtractedLicense>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationInfo {
    pub created: String,
    pub creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpdxPackage {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    pub download_location: &'static str,
    pub files_analyzed: bool,
    pub license_concluded: &'static str,
    pub license_declared: String,
    pub copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_package_purpose: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: &'static str,
    pub reference_type: &'static str,
    pub reference_locator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: &'static str,
    pub related_spdx_element: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractedLicense {
    pub license_id: String,
    pub extracted_text: String,
    pub name: String,
}

fn purl_ref(locator: String) -> Vec<ExternalRef> {
    vec![ExternalRef {
        reference_category: "PACKAGE-MANAGER",
        reference_type: "purl",
        reference_locator: locator,
    }]
}

/// The SPDX document for `inventory` of `subject`.
pub fn document(inventory: &Inventory, subject: &Subject, stamp: &Stamp) -> Document {
    let image_id = "SPDXRef-Image".to_owned();
    let mut packages = vec![SpdxPackage {
        spdx_id: image_id.clone(),
        name: subject.name.clone(),
        version_info: Some(subject.digest.clone()),
        download_location: NOASSERTION,
        files_analyzed: false,
        license_concluded: NOASSERTION,
        license_declared: NOASSERTION.into(),
        copyright_text: NOASSERTION,
        source_info: None,
        primary_package_purpose: Some("CONTAINER"),
        description: subject.platform.as_ref().map(|p| format!("platform {p}")),
        external_refs: purl_ref(purl::image(&subject.name, &subject.digest)),
    }];
    let mut relationships = vec![Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES",
        related_spdx_element: image_id.clone(),
    }];
    if let Some(os) = &inventory.os {
        packages.push(SpdxPackage {
            spdx_id: "SPDXRef-OperatingSystem".into(),
            name: os.id.clone(),
            version_info: Some(os.version_id.clone()).filter(|v| !v.is_empty()),
            download_location: NOASSERTION,
            files_analyzed: false,
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION.into(),
            copyright_text: NOASSERTION,
            source_info: None,
            primary_package_purpose: Some("OPERATING-SYSTEM"),
            description: Some(os.pretty_name.clone()).filter(|d| !d.is_empty()),
            external_refs: Vec::new(),
        });
    }
    let mut extracted: BTreeMap<String, String> = BTreeMap::new();
    for (i, p) in inventory.packages.iter().enumerate() {
        let license_declared = match declared(&p.licenses) {
            Declared::None => NOASSERTION.to_owned(),
            Declared::Expression(e) => e,
            Declared::Text(t) => {
                let text = t.join("; ");
                let next = format!("LicenseRef-{}", extracted.len() + 1);
                extracted.entry(text).or_insert(next).clone()
            }
        };
        packages.push(SpdxPackage {
            spdx_id: format!("SPDXRef-Package-{}-{}", p.kind.purl_type(), i + 1),
            name: match &p.namespace {
                Some(ns) if p.kind == crate::Kind::Npm => format!("{ns}/{}", p.name),
                _ => p.name.clone(),
            },
            version_info: Some(p.version.clone()),
            download_location: NOASSERTION,
            files_analyzed: false,
            license_concluded: NOASSERTION,
            license_declared,
            copyright_text: NOASSERTION,
            source_info: Some(format!("found in layer {} at /{}", p.layer, p.path)),
            primary_package_purpose: None,
            description: None,
            external_refs: purl_ref(p.purl.clone()),
        });
    }
    for p in &packages[1..] {
        relationships.push(Relationship {
            spdx_element_id: image_id.clone(),
            relationship_type: "CONTAINS",
            related_spdx_element: p.spdx_id.clone(),
        });
    }
    let mut extracted: Vec<ExtractedLicense> = extracted
        .into_iter()
        .map(|(text, id)| ExtractedLicense {
            license_id: id,
            name: text.chars().take(120).collect(),
            extracted_text: text,
        })
        .collect();
    extracted.sort_by(|a, b| a.license_id.cmp(&b.license_id));
    let uuid = crate::uuid_from(&[&subject.name, &subject.digest, &stamp.created, "spdx"]);
    Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: match &subject.tag {
            Some(t) => format!("{}:{t}", subject.name),
            None => format!("{}@{}", subject.name, subject.digest),
        },
        document_namespace: format!(
            "https://spdx.org/spdxdocs/berth/{}-{uuid}",
            purl::encode(&subject.name)
        ),
        creation_info: CreationInfo {
            created: stamp.created.clone(),
            creators: vec![format!("Tool: berth-{}", stamp.tool_version)],
        },
        packages,
        relationships,
        has_extracted_licensing_infos: extracted,
    }
}
