//! Numbers with real clients (issue 18, section 4): `skopeo inspect --raw`, `berth inspect`
//! and a bare `curl` of an index are inspections, not downloads; a `skopeo copy` is one
//! download; `berth_pulls_total` equals the stats API; `berth stats --by account`.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::process::{bytes, digest, ServerProcess};

fn write_blob(layout: &Path, content: &[u8]) -> (String, usize) {
    let d = digest(content);
    std::fs::write(layout.join("blobs/sha256").join(d.hex()), content).unwrap();
    (d.to_string(), content.len())
}

/// An OCI layout with a two-platform index (version 2.1.0) named `v1` in the layout.
fn layout(dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut children = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let (ld, ln) = write_blob(dir, &bytes(i as u64 + 40, 20_000));
        let config = json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}});
        let (cd, cn) = write_blob(dir, config.to_string().as_bytes());
        let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ln}]});
        let (md, mn) = write_blob(dir, manifest.to_string().as_bytes());
        children.push(
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
            "size": mn, "platform": {"architecture": arch, "os": "linux"}}),
        );
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "annotations": {"org.opencontainers.image.version": "2.1.0"}, "manifests": children});
    let (id, iz) = write_blob(dir, index.to_string().as_bytes());
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": id, "size": iz, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
}

fn run(cmd: &str, args: &[&str], docker_config: &Path) -> String {
    let out = Command::new(cmd)
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} must be installed: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// Regression: `berth inspect`, `skopeo inspect` and `curl` of an index were downloads
/// (`index-only` the largest bucket), and `berth_pulls_total` disagreed with the stats
/// API. Real clients now give: inspections apart, one download for one pull, and equal
/// numbers in both places.
#[test]
fn inspections_of_real_clients_are_not_downloads() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    layout(&src);
    let cfg = tmp.path().join("docker");
    let data = tmp.path().join("data");
    let mut server = ServerProcess::start(&data, &[]);
    let reg = server.addr.clone();
    // A release tag: the tag policy would refuse version 2.1.0 under the floating `v1`.
    let image = format!("docker://{reg}/num/app:2.1.0");
    run(
        "skopeo",
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", src.display()),
            &image,
        ],
        &cfg,
    );

    // Metadata only: skopeo's raw manifest twice, berth inspect, a bare curl.
    for _ in 0..2 {
        run(
            "skopeo",
            &["inspect", "--raw", "--tls-verify=false", &image],
            &cfg,
        );
    }
    let berth = env!("CARGO_BIN_EXE_berth");
    run(berth, &["inspect", &format!("{reg}/num/app:2.1.0")], &cfg);
    run(
        "curl",
        &[
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json",
            &format!("http://{reg}/v2/num/app/manifests/2.1.0"),
        ],
        &cfg,
    );
    // One real pull of one platform.
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--override-arch",
            "arm64",
            &image,
            &format!("oci:{}:pulled", tmp.path().join("dst").display()),
        ],
        &cfg,
    );

    let stats = |by: &str| -> Value {
        let out = run(
            berth,
            &["stats", &format!("{reg}/num/app"), "--by", by, "--json"],
            &cfg,
        );
        serde_json::from_str(&out).unwrap()
    };
    let v = stats("platform");
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(
        v["groups"],
        json!([{"key": "linux/arm64", "downloads": 1}]),
        "{v}"
    );
    let metrics = run("curl", &["-sf", &format!("http://{reg}/metrics")], &cfg);
    assert_eq!(
        sample(&metrics, "berth_pulls_total{repository=\"num/app\"}"),
        v["total"].as_u64().unwrap(),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "berth_inspections_total{repository=\"num/app\"}"),
        v["inspections"]["total"].as_u64().unwrap(),
        "{metrics}"
    );

    // The last index fetches still waiting are settled at shutdown.
    assert!(server.terminate().success());
    let server = ServerProcess::start(&data, &[]);
    let reg = server.addr.clone();
    let out = run(
        berth,
        &[
            "stats",
            &format!("{reg}/num/app"),
            "--by",
            "client",
            "--json",
        ],
        &cfg,
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["inspections"]["total"], 4, "{v}");
    let inspections: Vec<(String, u64)> = v["inspections"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_owned(),
                g["inspections"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        inspections,
        [
            ("berth".to_owned(), 1),
            ("other".to_owned(), 1),
            ("podman".to_owned(), 2)
        ]
    );

    // Downloads by account on an open registry: every download is anonymous.
    let table = run(
        berth,
        &["stats", &format!("{reg}/num/app"), "--by", "account"],
        &cfg,
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("(anonymous)"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("2.1.0") && row.contains(" 1 "), "{table}");
    assert!(
        table.contains("inspections (metadata only, not downloads): 4"),
        "{table}"
    );
}
