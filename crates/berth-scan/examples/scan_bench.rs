//! The scan benchmark (not a test): 1,000 packages against a synthetic Debian dump the
//! size of osv.dev's (about 60,000 records over three releases, a few source packages
//! with thousands of records as `linux` and `chromium` have). Writes the dump as an
//! `all.zip`, imports it, then times opening the index and scanning, which issue 14
//! wants under one second.
//!
//! `cargo run --release -p berth-scan --example scan_bench [-- RECORDS PACKAGES]`

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark panics on failure.

use std::io::Write as _;
use std::time::Instant;

use berth_scan::{db, scan, Db, Package};

/// A small deterministic generator (xorshift), so every run builds the same dump.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn version(rng: &mut Rng) -> String {
    format!(
        "{}.{}.{}-{}",
        rng.below(5),
        rng.below(20),
        rng.below(30),
        1 + rng.below(4)
    )
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let records = args.first().copied().unwrap_or(60_000);
    let packages = args.get(1).copied().unwrap_or(1_000);
    let names = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    let started = Instant::now();
    let zip_path = dir.path().join("all.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for i in 0..records {
        // One record in ten for two very busy packages, the rest spread evenly.
        let pkg = match rng.below(10) {
            0 => "linux".to_owned(),
            1 => "chromium".to_owned(),
            _ => format!("src{}", rng.below(names)),
        };
        let affected: Vec<_> = ["11", "12", "13"]
            .iter()
            .map(|release| {
                serde_json::json!({
                    "package": {"ecosystem": format!("Debian:{release}"), "name": pkg,
                                "purl": format!("pkg:deb/debian/{pkg}?arch=source")},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": version(&mut rng)}]}],
                    "ecosystem_specific": {"urgency": "not yet assigned"}
                })
            })
            .collect();
        let record = serde_json::json!({
            "schema_version": "1.6.0",
            "id": format!("DEBIAN-CVE-2024-{i}"),
            "modified": "2025-01-01T00:00:00Z",
            "upstream": [format!("CVE-2024-{i}")],
            "details": "A synthetic record of the size and shape of a Debian security tracker record, for the scan benchmark.",
            "affected": affected,
        });
        zip.start_file(format!("DEBIAN-CVE-2024-{i}.json"), options)
            .unwrap();
        zip.write_all(&serde_json::to_vec(&record).unwrap())
            .unwrap();
    }
    zip.finish().unwrap();
    let zip_size = std::fs::metadata(&zip_path).unwrap().len();
    println!(
        "dump: {records} records, all.zip {:.1} MiB, written in {:.2}s",
        zip_size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    let index = dir.path().join("index");
    let summary = db::import(&[zip_path], &[], &index).unwrap();
    let idx_size = std::fs::metadata(index.join("Debian.idx")).unwrap().len();
    println!(
        "import: {:.2}s, Debian.idx {:.1} MiB",
        summary.seconds,
        idx_size as f64 / 1048576.0
    );

    let purls: Vec<Package> = (0..packages)
        .map(|i| {
            let name = match i {
                0 => "linux-libc-dev".to_owned(),
                1 => "chromium".to_owned(),
                _ => format!("bin{i}"),
            };
            let source = if i == 0 {
                "linux".to_owned()
            } else {
                format!("src{}", rng.below(names * 2))
            };
            Package::new(format!(
                "pkg:deb/debian/{name}@{}?arch=amd64&upstream={source}&distro=debian-12",
                version(&mut rng)
            ))
        })
        .collect();
    let started = Instant::now();
    let db = Db::open(&index).unwrap();
    let opened = started.elapsed().as_secs_f64();
    let findings = scan(&purls, &db);
    let total = started.elapsed().as_secs_f64();
    println!(
        "scan: {packages} packages, {} findings; open {opened:.3}s, open + scan {total:.3}s ({})",
        findings.len(),
        if total < 1.0 {
            "under the 1 s target"
        } else {
            "OVER the 1 s target"
        }
    );
}
