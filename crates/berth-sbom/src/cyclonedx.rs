//! The CycloneDX 1.5 JSON writer.
//!
//! A hand-written serde model rather than the `cyclonedx-bom` crate (CycloneDX's own
//! Rust library): that crate models every field of every spec version, reads and writes
//! XML, and brings regex, time, xml-rs, the spdx crate and more into the tree, for the
//! dozen fields an image inventory fills. Tests validate the output with CycloneDX's
//! own Python library against the published 1.5 JSON schema.
//!
//! `metadata.component` is the image (type `container`), the OS is an
//! `operating-system` component, and each package a `library` with its purl, licences
//! and `berth:layer`/`berth:path` properties saying where it was found.

use serde::Serialize;

use crate::license::{declared, Declared};
use crate::{purl, Inventory, Stamp, Subject};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bom {
    #[serde(rename = "$schema")]
    pub schema: &'static str,
    pub bom_format: &'static str,
    pub spec_version: &'static str,
    pub serial_number: String,
    pub version: u32,
    pub metadata: Metadata,
    pub components: Vec<Component>,
    pub dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
pub struct Metadata {
    pub timestamp: String,
    pub tools: Tools,
    pub component: Component,
}

#[derive(Serialize)]
pub struct Tools {
    pub components: Vec<Component>,
}

#[derive(Serialize, Default)]
pub struct Component {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    pub bom_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<LicenseChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
}

/// One entry of `licenses`: a licence (by SPDX id or name) or one expression.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenseChoice {
    License(License),
    Expression(String),
}

#[derive(Serialize)]
pub struct License {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Serialize)]
pub struct Property {
    pub name: &'static str,
    pub value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    #[serde(rename = "ref")]
    pub reference: String,
    pub depends_on: Vec<String>,
}

fn licenses(recorded: &[String]) -> Vec<LicenseChoice> {
    match declared(recorded) {
        Declared::None => Vec::new(),
        // A single identifier is a licence; anything with operators an expression
        // (the schema allows either a list of licences or exactly one expression).
        Declared::Expression(e) if !e.contains(' ') && !e.ends_with('+') => {
            vec![LicenseChoice::License(License {
                id: Some(e),
                name: None,
            })]
        }
        Declared::Expression(e) => vec![LicenseChoice::Expression(e)],
        Declared::Text(t) => t
            .into_iter()
            .map(|n| {
                LicenseChoice::License(License {
                    id: None,
                    name: Some(n),
                })
            })
            .collect(),
    }
}

/// The CycloneDX BOM for `inventory` of `subject`.
pub fn document(inventory: &Inventory, subject: &Subject, stamp: &Stamp) -> Bom {
    let image_ref = "image".to_owned();
    let mut components = Vec::new();
    if let Some(os) = &inventory.os {
        components.push(Component {
            kind: "operating-system",
            bom_ref: Some("os".into()),
            name: os.id.clone(),
            version: Some(os.version_id.clone()).filter(|v| !v.is_empty()),
            description: Some(os.pretty_name.clone()).filter(|d| !d.is_empty()),
            ..Component::default()
        });
    }
    for (i, p) in inventory.packages.iter().enumerate() {
        components.push(Component {
            kind: "library",
            bom_ref: Some(format!("pkg-{}", i + 1)),
            group: p.namespace.clone(),
            name: p.name.clone(),
            version: Some(p.version.clone()),
            licenses: licenses(&p.licenses),
            purl: Some(p.purl.clone()),
            properties: vec![
                Property {
                    name: "berth:package-type",
                    value: p.kind.purl_type().to_owned(),
                },
                Property {
                    name: "berth:layer",
                    value: p.layer.clone(),
                },
                Property {
                    name: "berth:path",
                    value: format!("/{}", p.path),
                },
            ],
            ..Component::default()
        });
    }
    let depends_on = components
        .iter()
        .filter_map(|c| c.bom_ref.clone())
        .collect();
    let uuid = crate::uuid_from(&[&subject.name, &subject.digest, &stamp.created, "cyclonedx"]);
    Bom {
        schema: "http://cyclonedx.org/schema/bom-1.5.schema.json",
        bom_format: "CycloneDX",
        spec_version: "1.5",
        serial_number: format!("urn:uuid:{uuid}"),
        version: 1,
        metadata: Metadata {
            timestamp: stamp.created.clone(),
            tools: Tools {
                components: vec![Component {
                    kind: "application",
                    name: "berth".into(),
                    version: Some(stamp.tool_version.clone()),
                    ..Component::default()
                }],
            },
            component: Component {
                kind: "container",
                bom_ref: Some(image_ref.clone()),
                name: subject.name.clone(),
                version: Some(subject.digest.clone()),
                description: subject.platform.as_ref().map(|p| format!("platform {p}")),
                purl: Some(purl::image(&subject.name, &subject.digest)),
                ..Component::default()
            },
        },
        components,
        dependencies: vec![Dependency {
            reference: image_ref,
            depends_on,
        }],
    }
}
