//! The matcher against a small set of OSV records in the real schema's shape
//! (`tests/fixtures/osv`): known matches and known non-matches per ecosystem, imported
//! from a directory and from an `all.zip`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on failure by design.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use berth_scan::{db, scan, Db, DbError, Finding, Package, Severity};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/osv")
}

/// An index of every fixture, in a temporary directory.
fn index() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    db::import(&[fixtures()], &[], dir.path()).unwrap();
    let db = Db::open(dir.path()).unwrap();
    (dir, db)
}

/// The findings of one package, as (id, fixed version) pairs in id order.
fn found(db: &Db, purl: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<_> = scan(&[Package::new(purl)], db)
        .into_iter()
        .map(|f| (f.id, f.fixed))
        .collect();
    out.sort();
    out
}

fn pair(id: &str, fixed: Option<&str>) -> (String, Option<String>) {
    (id.to_owned(), fixed.map(str::to_owned))
}

#[test]
fn debian_matches_by_release_and_source_package() {
    let (_dir, db) = index();
    // 3.0.11-1~deb12u2 is DSA-5532-1's fix; the later DEBIAN-CVE fix is not installed.
    assert_eq!(
        found(
            &db,
            "pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12"
        ),
        [pair("DEBIAN-CVE-2023-5678", Some("3.0.13-1~deb12u1"))]
    );
    // deb12u1 sorts before deb12u2, and the binary package libssl3 is found through
    // its source package.
    assert_eq!(
        found(
            &db,
            "pkg:deb/debian/libssl3@3.0.11-1~deb12u1?arch=amd64&upstream=openssl&distro=debian-12"
        ),
        [
            pair("DEBIAN-CVE-2023-5678", Some("3.0.13-1~deb12u1")),
            pair("DSA-5532-1", Some("3.0.11-1~deb12u2")),
        ]
    );
}

#[test]
fn a_record_of_another_release_does_not_match() {
    let (_dir, db) = index();
    // DSA-5532-1 concerns bookworm only: a bullseye 3.0.9-1 (which bookworm's range
    // would cover) is not affected by it, and bullseye's own fix is older.
    assert_eq!(
        found(&db, "pkg:deb/debian/openssl@3.0.9-1?distro=debian-11"),
        []
    );
    assert_eq!(
        found(
            &db,
            "pkg:deb/debian/openssl@1.1.1w-0+deb11u1?distro=debian-11"
        ),
        [pair("DEBIAN-CVE-2023-5678", Some("1.1.1w-0+deb11u2"))]
    );
    // No release of the record at all.
    assert_eq!(
        found(&db, "pkg:deb/debian/openssl@3.0.9-1?distro=debian-10"),
        []
    );
}

#[test]
fn alpine_versions_and_releases() {
    let (_dir, db) = index();
    assert_eq!(
        found(
            &db,
            "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1"
        ),
        [pair("ALPINE-CVE-2025-26519", Some("1.2.4_git20230717-r5"))]
    );
    assert_eq!(
        found(
            &db,
            "pkg:apk/alpine/musl@1.2.4_git20230717-r5?distro=alpine-3.19.1"
        ),
        []
    );
    assert_eq!(
        found(&db, "pkg:apk/alpine/musl@1.2.5-r9?distro=alpine-3.21.2"),
        []
    );
    assert_eq!(
        found(&db, "pkg:apk/alpine/musl@1.2.5-r8?distro=alpine-3.21.2"),
        [pair("ALPINE-CVE-2025-26519", Some("1.2.5-r9"))]
    );
    // Alpine 3.20 is in neither entry.
    assert_eq!(
        found(&db, "pkg:apk/alpine/musl@1.2.5-r0?distro=alpine-3.20.0"),
        []
    );
}

#[test]
fn pypi_ranges_versions_lists_and_fixed_boundaries() {
    let (_dir, db) = index();
    // 2.31.0 is PYSEC-2023-74's fix but before GHSA-9wx4-h78v-vm56's.
    let findings = scan(&[Package::new("pkg:pypi/requests@2.31.0")], &db);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].id, "GHSA-9wx4-h78v-vm56");
    assert_eq!(findings[0].severity, Severity::Medium);
    assert_eq!(findings[0].score, Some(5.6));
    assert_eq!(
        found(&db, "pkg:pypi/Requests@2.30.0"),
        [
            pair("GHSA-9wx4-h78v-vm56", Some("2.32.0")),
            pair("PYSEC-2023-74", Some("2.31.0"))
        ]
    );
    // PYSEC-2014-14 lists versions only: 2.2.1 is listed, 2.3.0 is not; PYSEC-2023-74
    // starts at 2.3.0.
    assert_eq!(
        found(&db, "pkg:pypi/requests@2.2.1"),
        [
            pair("GHSA-9wx4-h78v-vm56", Some("2.32.0")),
            pair("PYSEC-2014-14", None)
        ]
    );
    assert_eq!(
        found(&db, "pkg:pypi/requests@2.3.0"),
        [
            pair("GHSA-9wx4-h78v-vm56", Some("2.32.0")),
            pair("PYSEC-2023-74", Some("2.31.0"))
        ]
    );
    assert_eq!(found(&db, "pkg:pypi/requests@2.32.3"), []);
}

#[test]
fn npm_fixed_and_last_affected_and_withdrawn() {
    let (_dir, db) = index();
    let findings = scan(&[Package::new("pkg:npm/lodash@4.17.20")], &db);
    assert_eq!(
        findings.len(),
        1,
        "the withdrawn record must not match: {findings:?}"
    );
    assert_eq!(findings[0].severity, Severity::High);
    assert_eq!(findings[0].score, Some(7.2));
    assert_eq!(found(&db, "pkg:npm/lodash@4.17.21"), []);
    assert_eq!(
        found(&db, "pkg:npm/lodash.template@4.5.0"),
        [pair("GHSA-35jh-r3h4-6jhm", None)]
    );
    assert_eq!(found(&db, "pkg:npm/lodash.template@4.5.1"), []);
}

#[test]
fn go_cargo_and_maven() {
    let (_dir, db) = index();
    assert_eq!(
        found(&db, "pkg:golang/golang.org/x/net@v0.17.0"),
        [pair("GO-2024-2687", Some("v0.23.0"))]
    );
    assert_eq!(
        found(&db, "pkg:golang/golang.org/x/net@v0.16.0"),
        [
            pair("GO-2023-2102", Some("v0.17.0")),
            pair("GO-2024-2687", Some("v0.23.0"))
        ]
    );
    assert_eq!(found(&db, "pkg:golang/golang.org/x/net@v0.23.0"), []);
    assert_eq!(
        found(&db, "pkg:cargo/openssl@0.10.55"),
        [pair("RUSTSEC-2024-0357", Some("0.10.66"))]
    );
    assert_eq!(
        found(&db, "pkg:cargo/openssl@0.10.54"),
        [
            pair("RUSTSEC-2023-0044", Some("0.10.55")),
            pair("RUSTSEC-2024-0357", Some("0.10.66"))
        ]
    );
    let log4j = scan(
        &[Package::new(
            "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
        )],
        &db,
    );
    assert_eq!(log4j.len(), 1);
    assert_eq!(
        (log4j[0].fixed.as_deref(), log4j[0].severity),
        (Some("2.15.0"), Severity::Critical)
    );
    assert_eq!(
        found(&db, "pkg:maven/org.apache.logging.log4j/log4j-core@2.12.1"),
        [pair("GHSA-jfh8-c2jp-5v3q", Some("2.12.2"))]
    );
    // Between the first fix and the second introduction, and before 2.0-beta9.
    assert_eq!(
        found(&db, "pkg:maven/org.apache.logging.log4j/log4j-core@2.3.1"),
        []
    );
    assert_eq!(
        found(
            &db,
            "pkg:maven/org.apache.logging.log4j/log4j-core@2.0-beta8"
        ),
        []
    );
    assert_eq!(
        found(&db, "pkg:maven/org.apache.logging.log4j/log4j-core@2.17.1"),
        []
    );
}

#[test]
fn findings_come_most_severe_first() {
    let (_dir, db) = index();
    let packages = [
        "pkg:pypi/requests@2.31.0",
        "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
        "pkg:npm/lodash@4.17.20",
        "pkg:not-a-purl",
        "pkg:gem/rails@7.0.0",
    ]
    .map(Package::new);
    let findings: Vec<Finding> = scan(&packages, &db);
    let severities: Vec<Severity> = findings.iter().map(|f| f.severity).collect();
    assert_eq!(
        severities,
        [Severity::Critical, Severity::High, Severity::Medium]
    );
}

/// Zips the fixtures as osv.dev's `all.zip` does: one `<ID>.json` member per record.
fn all_zip(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut names: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        zip.start_file(name, options).unwrap();
        zip.write_all(&std::fs::read(&path).unwrap()).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn an_all_zip_imports_like_the_directory_and_meta_json_counts_records() {
    let src = tempfile::tempdir().unwrap();
    let zip_path = src.path().join("all.zip");
    all_zip(&zip_path);
    let dir = tempfile::tempdir().unwrap();
    let summary = db::import(
        &[zip_path],
        &["https://osv.example/all.zip".into()],
        dir.path(),
    )
    .unwrap();
    assert_eq!(summary.records.get("PyPI"), Some(&3));
    assert_eq!(summary.records.get("Debian"), Some(&2));
    assert_eq!(summary.records.get("npm"), Some(&1));
    // The withdrawn record.
    assert_eq!(summary.skipped, 1);

    let from_zip = Db::open(dir.path()).unwrap();
    let (_d, from_dir) = index();
    let purls = [
        "pkg:deb/debian/libssl3@3.0.11-1~deb12u1?upstream=openssl&distro=debian-12",
        "pkg:apk/alpine/musl@1.2.4-r2?distro=alpine-3.19",
        "pkg:pypi/requests@2.30.0",
        "pkg:golang/golang.org/x/net@v0.16.0",
        "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
    ]
    .map(Package::new);
    assert_eq!(scan(&purls, &from_zip), scan(&purls, &from_dir));
    assert_eq!(scan(&purls, &from_zip).len(), 8);

    let meta = from_zip.meta();
    assert_eq!(meta.ecosystems["PyPI"].records, 3);
    assert_eq!(meta.ecosystems["PyPI"].packages, 1);
    assert_eq!(
        meta.ecosystems["PyPI"].sources,
        ["https://osv.example/all.zip"]
    );
}

#[test]
fn an_import_replaces_its_ecosystems_and_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    db::import(&[fixtures()], &[], dir.path()).unwrap();
    // A second import of Go records only.
    let go = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("GO-2023-2102.json"),
        go.path().join("GO-2023-2102.json"),
    )
    .unwrap();
    db::import(&[go.path().to_owned()], &[], dir.path()).unwrap();
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(
        found(&db, "pkg:golang/golang.org/x/net@v0.16.0"),
        [pair("GO-2023-2102", Some("v0.17.0"))]
    );
    assert_eq!(found(&db, "pkg:npm/lodash@4.17.20").len(), 1);
}

#[test]
fn packages_of_an_ecosystem_missing_from_the_index_are_counted_as_unchecked() {
    let dir = tempfile::tempdir().unwrap();
    let go = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("GO-2023-2102.json"),
        go.path().join("GO-2023-2102.json"),
    )
    .unwrap();
    db::import(&[go.path().to_owned()], &[], dir.path()).unwrap();
    let db = Db::open(dir.path()).unwrap();
    let packages = [
        "pkg:pypi/requests@2.30.0",
        "pkg:pypi/idna@3.4",
        "pkg:golang/golang.org/x/net@v0.16.0",
    ]
    .map(Package::new);
    assert_eq!(scan(&packages, &db).len(), 1);
    assert_eq!(
        berth_scan::unchecked(&packages, &db)
            .into_iter()
            .collect::<Vec<_>>(),
        [("PyPI", 2)]
    );
}

#[test]
fn a_missing_index_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = Db::open(&dir.path().join("nothing")).err().unwrap();
    assert!(matches!(err, DbError::Missing { .. }));
    assert!(err.to_string().contains("berth db update --from"), "{err}");
}

#[test]
fn sources_without_records_are_refused() {
    let empty = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = db::import(&[empty.path().to_owned()], &[], dir.path()).unwrap_err();
    assert!(matches!(err, DbError::Empty { .. }));
    assert!(!dir.path().join("meta.json").exists());
}

#[test]
fn a_damaged_index_file_is_reported_not_misread() {
    let (dir, _db) = index();
    let path = dir.path().join("PyPI.idx");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..20]).unwrap();
    assert!(matches!(Db::open(dir.path()), Err(DbError::Corrupt { .. })));
}

#[test]
fn an_index_of_another_format_is_refused_and_rebuilt_by_an_update() {
    let (dir, _db) = index();
    let meta = dir.path().join("meta.json");
    let text = std::fs::read_to_string(&meta)
        .unwrap()
        .replace("\"format\": 1", "\"format\": 2");
    std::fs::write(&meta, text).unwrap();
    let err = Db::open(dir.path()).err().unwrap();
    assert!(
        err.to_string().contains("run `berth db update` again"),
        "{err}"
    );

    let go = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("GO-2023-2102.json"),
        go.path().join("GO-2023-2102.json"),
    )
    .unwrap();
    db::import(&[go.path().to_owned()], &[], dir.path()).unwrap();
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.meta().ecosystems.keys().collect::<Vec<_>>(), ["Go"]);
}
