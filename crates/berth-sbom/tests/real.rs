//! Real package databases from this machine, packed into real layers (tar + gzip):
//! what the catalogers find is compared with what `dpkg-query` and `pip list` say about
//! the same files, and the documents written are validated with each format's own
//! validator (CycloneDX's Python library against the 1.5 JSON schema, SPDX's
//! `pyspdxtools`). Set `BERTH_TEST_SKIP_PY=1` to skip the Python validators.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers panic on failure by design.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_sbom::layers::{merge, scan_layer, Limits};
use berth_sbom::{Format, Inventory, Kind, Stamp, Subject};

/// A gzip-compressed tar of these `(path in the image, contents)` files.
fn layer(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, &bytes[..]).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn file(path: &Path) -> (String, Vec<u8>) {
    let inside = path.to_string_lossy().trim_start_matches('/').to_owned();
    (inside, std::fs::read(path).unwrap())
}

/// This Python's site-packages directory.
fn site_packages() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .ok()?;
    Some(PathBuf::from(String::from_utf8(out.stdout).ok()?.trim()))
}

/// The `METADATA`/`PKG-INFO` files of the distributions directly in `dir`.
fn metadata_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let meta = if name.ends_with(".dist-info") {
            e.path().join("METADATA")
        } else if name.ends_with(".egg-info") {
            e.path().join("PKG-INFO")
        } else {
            continue;
        };
        if meta.is_file() {
            out.push(meta);
        }
    }
    out
}

/// PEP 503 names, as `pip list` compares them.
fn normal(name: &str) -> String {
    name.to_lowercase().replace(['_', '.'], "-")
}

fn scan(layers: &[Vec<u8>]) -> Inventory {
    let scans = layers
        .iter()
        .enumerate()
        .map(|(i, l)| scan_layer(&l[..], &format!("sha256:{i:064}"), &Limits::default()).unwrap())
        .collect();
    merge(scans)
}

fn found(inv: &Inventory, kind: Kind) -> BTreeSet<(String, String)> {
    inv.packages
        .iter()
        .filter(|p| p.kind == kind)
        .map(|p| (normal(&p.name), p.version.clone()))
        .collect()
}

#[test]
fn dpkg_status_matches_dpkg_query() {
    let status = Path::new("/var/lib/dpkg/status");
    if !status.exists() {
        eprintln!("skipped: not a Debian machine");
        return;
    }
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}\t${Package}\t${Version}\n"])
        .output()
        .expect("dpkg-query is installed beside /var/lib/dpkg/status");
    let expected: BTreeSet<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 3 && f[0] == "installed").then(|| (normal(f[1]), f[2].to_owned()))
        })
        .collect();
    let inv = scan(&[layer(&[file(Path::new("/etc/os-release")), file(status)])]);
    assert!(expected.len() > 10, "{expected:?}");
    assert_eq!(found(&inv, Kind::Deb), expected);
    let os = inv.os.clone().unwrap();
    let first = inv.packages.iter().find(|p| p.kind == Kind::Deb).unwrap();
    assert!(
        first.purl.starts_with(&format!("pkg:deb/{}/", os.id)),
        "{}",
        first.purl
    );
    assert!(first.purl.contains("distro="), "{}", first.purl);
}

#[test]
fn python_dist_info_matches_pip_list_and_whiteouts_remove() {
    let Some(site) = site_packages().filter(|s| s.is_dir()) else {
        eprintln!("skipped: no python3 here");
        return;
    };
    let out = Command::new("python3")
        .args(["-m", "pip", "list", "--format", "json", "--path"])
        .arg(&site)
        .output()
        .expect("pip runs");
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("pip list's JSON");
    let expected: BTreeSet<(String, String)> = listed
        .iter()
        .map(|d| {
            (
                normal(d["name"].as_str().unwrap()),
                d["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let files: Vec<_> = metadata_files(&site).iter().map(|p| file(p)).collect();
    let lower = layer(&files);
    let inv = scan(std::slice::from_ref(&lower));
    assert!(expected.len() > 3, "{expected:?}");
    assert_eq!(found(&inv, Kind::Python), expected);

    // A later layer deletes one distribution's metadata directory: that distribution is
    // gone, the rest stay.
    let (victim_file, _) = &files[0];
    let victim = inv
        .packages
        .iter()
        .find(|p| &p.path == victim_file)
        .unwrap();
    let victim_name = normal(&victim.name);
    let dir = victim_file.rsplit_once('/').unwrap().0;
    let (parent, name) = dir.rsplit_once('/').unwrap();
    let whiteout = layer(&[(format!("{parent}/.wh.{name}"), Vec::new())]);
    let after = scan(&[lower, whiteout]);
    let names: BTreeSet<String> = found(&after, Kind::Python)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        !names.contains(&victim_name),
        "{victim_name} survived its whiteout"
    );
    assert_eq!(names.len(), expected.len() - 1);
}

/// Runs a Python validator over `doc`; `Ok(false)` when Python validation is skipped.
fn python_validates(script: &str, doc: &Path) -> bool {
    if std::env::var_os("BERTH_TEST_SKIP_PY").is_some_and(|v| v == "1") {
        return false;
    }
    let out = Command::new("python3").args(["-c", script]).arg(doc).output().unwrap_or_else(|e| {
        panic!("python3 is needed to validate SBOMs ({e}): install python3, `pip install cyclonedx-python-lib[json-validation] spdx-tools`, or set BERTH_TEST_SKIP_PY=1")
    });
    assert!(
        out.status.success(),
        "{} rejected {}:\n{}{}\n(missing validators: `pip install cyclonedx-python-lib[json-validation] spdx-tools`, or set BERTH_TEST_SKIP_PY=1)",
        script.lines().next().unwrap_or(""),
        doc.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

const CYCLONEDX: &str = "# CycloneDX 1.5 strict JSON schema validation
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
err = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())
if err is not None:
    print(err)
    sys.exit(1)
";

const SPDX: &str = "# SPDX 2.3 validation with spdx-tools (pyspdxtools)
import sys
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
doc = parse_file(sys.argv[1])
errors = validate_full_spdx_document(doc, spdx_version='SPDX-2.3')
for e in errors:
    print(e.validation_message)
sys.exit(1 if errors else 0)
";

/// An image with every kind of package, from real files where this machine has them.
fn everything() -> Inventory {
    let mut base = vec![file(Path::new("/etc/os-release"))];
    if Path::new("/var/lib/dpkg/status").exists() {
        base.push(file(Path::new("/var/lib/dpkg/status")));
    }
    if let Some(site) = site_packages().filter(|s| s.is_dir()) {
        base.extend(metadata_files(&site).iter().map(|p| file(p)));
    }
    let apk = "P:musl\nV:1.2.5-r0\nA:x86_64\nL:MIT\n\nP:busybox\nV:1.36.1-r28\nA:x86_64\nL:GPL-2.0-only\n\nP:odd\nV:1\nL:custom licence text\n\n";
    let npm = [
        (
            "app/node_modules/@types/node/package.json",
            r#"{"name":"@types/node","version":"20.1.0","license":"MIT"}"#,
        ),
        (
            "app/node_modules/left-pad/package.json",
            r#"{"name":"left-pad","version":"1.3.0","license":"WTFPL OR MIT"}"#,
        ),
        (
            "app/node_modules/x/package.json",
            r#"{"name":"x","version":"0.0.1","license":"SEE LICENSE IN LICENSE"}"#,
        ),
    ];
    let mut extra: Vec<(String, Vec<u8>)> =
        vec![("lib/apk/db/installed".into(), apk.as_bytes().to_vec())];
    extra.extend(
        npm.iter()
            .map(|(p, j)| (p.to_string(), j.as_bytes().to_vec())),
    );
    scan(&[layer(&base), layer(&extra)])
}

#[test]
fn documents_validate_against_their_schemas() {
    let inv = everything();
    let subject = Subject {
        name: "localhost:5000/team/app".into(),
        digest: format!("sha256:{}", "ab".repeat(32)),
        tag: Some("1.0".into()),
        platform: Some("linux/amd64".into()),
    };
    let stamp = Stamp {
        tool_version: "0.1.0".into(),
        created: "2026-01-02T03:04:05Z".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    for (format, script, name) in [
        (Format::CycloneDxJson, CYCLONEDX, "sbom.cdx.json"),
        (Format::SpdxJson, SPDX, "sbom.spdx.json"),
    ] {
        let doc = format.write(&inv, &subject, &stamp).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        let text = v.to_string();
        for p in &inv.packages {
            assert!(
                text.contains(&serde_json::to_string(&p.purl).unwrap()),
                "{} missing",
                p.purl
            );
        }
        let path = dir.path().join(name);
        std::fs::write(&path, &doc).unwrap();
        if !python_validates(script, &path) {
            eprintln!("skipped the Python validation of {name}");
        }
    }
}
