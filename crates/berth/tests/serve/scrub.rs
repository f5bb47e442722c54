//! `berth admin scrub` on the data directory of a running server: its JSON report and
//! its exit status, before and after `--repair`.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::process::{client, digest, ServerProcess};

/// Runs `berth admin scrub` with `args`; its exit success and its JSON report.
fn scrub(data: &std::path::Path, args: &[&str]) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["admin", "scrub", "--json", "--data-dir"])
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "scrub {args:?} printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

fn digests(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["digest"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn admin_scrub_reports_damage_and_fails_until_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &[]);
    let http = client();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layers: [&[u8]; 2] = [b"a layer to flip a byte of", b"a layer to delete"];
    for content in [&config[..], layers[0], layers[1]] {
        let r = http
            .post(format!(
                "{}/v2/team/app/blobs/uploads/?digest={}",
                server.base,
                digest(content)
            ))
            .body(content.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config).to_string(), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest(l).to_string(), "size": l.len()})).collect::<Vec<_>>(),
    });
    let r = http
        .put(format!("{}/v2/team/app/manifests/v1", server.base))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let (ok, report) = scrub(&data, &[]);
    assert!(ok, "an intact store scrubs clean: {report}");
    assert_eq!(report["checked"], 3);
    assert_eq!(report["corrupt"], serde_json::json!([]));

    let (flipped, gone) = (digest(layers[0]), digest(layers[1]));
    let file = |d: &berth_oci::Digest| data.join("blobs/sha256").join(d.hex());
    let mut bytes = std::fs::read(file(&flipped)).unwrap();
    bytes[0] ^= 1;
    std::fs::write(file(&flipped), &bytes).unwrap();
    std::fs::remove_file(file(&gone)).unwrap();

    let (ok, report) = scrub(&data, &[]);
    assert!(!ok, "damage left in place fails: {report}");
    assert_eq!(digests(&report["corrupt"]), [flipped.to_string()]);
    let corrupt = &report["corrupt"][0];
    assert_eq!(corrupt["reason"]["kind"], "digest_mismatch");
    assert_eq!(corrupt["reason"]["actual"], digest(&bytes).to_string());
    assert_eq!(corrupt["path"], file(&flipped).to_str().unwrap());
    assert_eq!(corrupt["quarantined"], Value::Null);
    assert_eq!(digests(&report["missing"]), [gone.to_string()]);

    let (ok, report) = scrub(&data, &["--repair"]);
    assert!(ok, "everything damaged was moved aside: {report}");
    let moved = data.join(format!("quarantine/sha256-{}", flipped.hex()));
    assert_eq!(report["corrupt"][0]["quarantined"], moved.to_str().unwrap());
    assert_eq!(std::fs::read(&moved).unwrap(), bytes);
    // The running server answers the blob as unknown at once, so clients push it again.
    let r = http
        .head(format!("{}/v2/team/app/blobs/{flipped}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
