//! `berth db update` and `berth scan` as a user runs them: an index built from the OSV
//! fixtures of berth-scan, SBOMs in SPDX and CycloneDX JSON, the three output formats
//! and the exit status of `--severity`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../berth-scan/tests/fixtures/osv")
}

/// Runs `berth` with a cache directory of its own, so the default index is never the
/// user's.
fn berth(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("BERTH_OSV_DB")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An SPDX 2.3 document with a vulnerable log4j-core, requests and openssl, and a
/// package that is not.
fn spdx(dir: &Path) -> PathBuf {
    let purls = [
        "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
        "pkg:pypi/requests@2.31.0",
        "pkg:deb/debian/libssl3@3.0.11-1~deb12u1?arch=amd64&upstream=openssl&distro=debian-12",
        "pkg:npm/lodash@4.17.21",
    ];
    let packages: Vec<_> = purls
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "SPDXID": format!("SPDXRef-Package-{i}"),
                "name": format!("p{i}"),
                "downloadLocation": "NOASSERTION",
                "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p}]
            })
        })
        .collect();
    let doc = serde_json::json!({
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": "app", "documentNamespace": "https://example.invalid/app",
        "creationInfo": {"created": "2024-05-06T07:08:09Z", "creators": ["Tool: test"]},
        "packages": packages
    });
    let path = dir.join("app.spdx.json");
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    path
}

#[test]
fn scan_without_an_index_says_how_to_build_one() {
    let cache = tempfile::tempdir().unwrap();
    let sbom = spdx(cache.path());
    let out = berth(&["scan", sbom.to_str().unwrap()], cache.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("run `berth db update --from"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn update_then_scan_in_every_format_with_the_severity_exit_status() {
    let cache = tempfile::tempdir().unwrap();
    let db = cache.path().join("index");
    let db = db.to_str().unwrap();
    let from = format!("file://{}", fixtures().display());
    let out = berth(&["db", "update", "--from", &from, "--db", db], cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Maven: 1 records"),
        "{}",
        text(&out.stdout)
    );

    let sbom = spdx(cache.path());
    let sbom = sbom.to_str().unwrap();

    // The table: every finding, most severe first; no threshold, so exit 0.
    let out = berth(&["scan", "--sbom", sbom, "--db", db], cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID "), "{table}");
    let first: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        first,
        [
            "GHSA-jfh8-c2jp-5v3q",
            "org.apache.logging.log4j:log4j-core",
            "2.14.1",
            "2.15.0",
            "critical",
            "(10.0)"
        ],
        "{table}"
    );
    assert!(table.contains("DSA-5532-1"), "{table}");
    assert!(
        table.contains("4 vulnerabilities in 4 packages (1 critical, 1 medium, 2 unknown)."),
        "{table}"
    );

    // The threshold: a critical finding fails `--severity high`; nothing reaches a
    // threshold above critical, and the medium one is below high.
    let out = berth(
        &["scan", sbom, "--db", db, "--severity", "high"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("1 vulnerability at or above high"),
        "{}",
        text(&out.stderr)
    );
    let out = berth(
        &["scan", sbom, "--db", db, "--severity", "unknown"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("4 vulnerabilities at or above unknown"));

    // JSON.
    let out = berth(&["scan", sbom, "--db", db, "--json"], cache.path());
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packages"], 4);
    assert_eq!(v["findings"].as_array().unwrap().len(), 4);
    assert_eq!(v["findings"][0]["id"], "GHSA-jfh8-c2jp-5v3q");
    assert_eq!(v["findings"][0]["fixed"], "2.15.0");
    assert_eq!(v["findings"][0]["severity"], "critical");

    // SARIF 2.1.0.
    let out = berth(
        &[
            "scan",
            sbom,
            "--db",
            db,
            "--sarif",
            "--severity",
            "critical",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "berth");
    assert_eq!(run["tool"]["driver"]["rules"].as_array().unwrap().len(), 4);
    let result = &run["results"][0];
    assert_eq!(result["ruleId"], "GHSA-jfh8-c2jp-5v3q");
    assert_eq!(result["level"], "error");
    assert_eq!(
        result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
        "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"
    );

    let out = berth(&["db", "info", "--db", db], cache.path());
    assert!(
        text(&out.stdout).contains("PyPI: 3 records, 1 packages"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn cyclonedx_and_the_default_index_directory() {
    let cache = tempfile::tempdir().unwrap();
    let out = berth(
        &["db", "update", "--from", fixtures().to_str().unwrap()],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(cache.path().join("berth/osv/meta.json").is_file());
    let doc = serde_json::json!({
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "components": [
            {"type": "library", "name": "net", "version": "v0.23.0", "purl": "pkg:golang/golang.org/x/net@v0.23.0"},
            {"type": "library", "name": "openssl", "version": "0.10.66", "purl": "pkg:cargo/openssl@0.10.66"}
        ]
    });
    let sbom = cache.path().join("bom.cdx.json");
    std::fs::write(&sbom, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = berth(
        &["scan", sbom.to_str().unwrap(), "--severity", "low"],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "No known vulnerabilities in 2 packages."
    );
}

/// Regression: a reader that closes the pipe early (`berth scan ... --json | head -c1`)
/// made `berth` print a panic about a broken pipe; it now ends quietly, as a Unix filter
/// killed by SIGPIPE does (status 141).
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::process::Stdio;
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let from = fixtures();
    let out = berth(
        &[
            "db",
            "update",
            "--from",
            from.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sbom = spdx(dir.path());
    // The read end is closed before the child writes: its first write fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "scan",
            sbom.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--json",
            "-q",
        ])
        .env("XDG_CACHE_HOME", cache.path())
        .env_remove("BERTH_OSV_DB")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
