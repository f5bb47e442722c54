//! Scrubbing: blob files damaged under a running registry are found, moved aside with
//! `repair`, answered as unknown afterwards, and healed by a push.

use std::path::PathBuf;
use std::time::Duration;

use berth_oci::Digest;
use berth_server::service::{Damage, ScrubOptions};
use reqwest::{Method, StatusCode};

use crate::common::{error_code, image_manifest, TestRegistry, OCI_MANIFEST};

const REPO: &str = "team/app";
const CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
const FLIPPED: &[u8] = b"layer one: a byte of it will be flipped on disk";
const CUT: &[u8] = b"layer two: its file will be cut short on disk";
const GONE: &[u8] = b"layer three: its file will be deleted";

fn blob_file(reg: &TestRegistry, d: &Digest) -> PathBuf {
    reg.data_dir()
        .join("blobs")
        .join(d.algorithm().as_str())
        .join(d.hex())
}

/// Pushes an image of a config and the three layers under `REPO:v1`; their digests.
async fn push(reg: &TestRegistry) -> [Digest; 4] {
    let mut digests = Vec::new();
    for content in [CONFIG, FLIPPED, CUT, GONE] {
        digests.push(reg.push_blob(REPO, content).await);
    }
    let layers: Vec<(&Digest, usize)> = digests[1..]
        .iter()
        .zip([FLIPPED.len(), CUT.len(), GONE.len()])
        .collect();
    let m = image_manifest(&digests[0], CONFIG.len(), &layers, None);
    let r = reg.put_manifest(REPO, "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    digests.try_into().unwrap()
}

/// Flips one byte of `flipped`, cuts `cut` to 10 bytes and deletes `gone`.
fn damage(reg: &TestRegistry, flipped: &Digest, cut: &Digest, gone: &Digest) -> Vec<u8> {
    let mut bytes = std::fs::read(blob_file(reg, flipped)).unwrap();
    bytes[5] ^= 0x20;
    std::fs::write(blob_file(reg, flipped), &bytes).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(blob_file(reg, cut))
        .unwrap()
        .set_len(10)
        .unwrap();
    std::fs::remove_file(blob_file(reg, gone)).unwrap();
    bytes
}

async fn status(reg: &TestRegistry, method: Method, d: &Digest) -> StatusCode {
    let url = format!("/v2/{REPO}/blobs/{d}");
    reg.req(method, &url).send().await.unwrap().status()
}

/// The value of an unlabelled sample on `/metrics`.
async fn metric(reg: &TestRegistry, name: &str) -> Option<f64> {
    let text = reg
        .req(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn scrub_finds_flipped_cut_and_deleted_blobs_and_repair_heals_them() {
    let reg = TestRegistry::start().await;
    let [config, flipped, cut, gone] = push(&reg).await;
    let flipped_bytes = damage(&reg, &flipped, &cut, &gone);
    // Before a scrub, a file of the right size with a flipped byte still looks stored.
    assert_eq!(status(&reg, Method::HEAD, &flipped).await, StatusCode::OK);

    let registry = reg.state.registry.clone();
    let report = registry.scrub(ScrubOptions::default()).await.unwrap();
    assert_eq!(report.checked, 3, "config, flipped and cut are stored");
    let stored = CONFIG.len() + FLIPPED.len() + 10;
    assert_eq!(report.bytes, stored as u64);
    let mut expected = vec![
        (
            flipped.clone(),
            Damage::DigestMismatch {
                actual: Digest::sha256(&flipped_bytes),
            },
        ),
        (
            cut.clone(),
            Damage::SizeMismatch {
                recorded: CUT.len() as u64,
                stored: 10,
            },
        ),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let found: Vec<(Digest, Damage)> = report
        .corrupt
        .iter()
        .map(|c| (c.digest.clone(), c.reason.clone()))
        .collect();
    assert_eq!(found, expected);
    for c in &report.corrupt {
        assert_eq!(c.repositories, [REPO]);
        assert_eq!(
            c.path.as_deref(),
            Some(blob_file(&reg, &c.digest).to_str().unwrap())
        );
        assert_eq!(c.quarantined, None, "no repair was asked for");
    }
    let missing: Vec<_> = report.missing.iter().map(|m| &m.digest).collect();
    assert_eq!(missing, [&gone]);
    assert_eq!(report.missing[0].repositories, [REPO]);
    assert!(
        blob_file(&reg, &flipped).exists(),
        "a report changes nothing"
    );
    assert_eq!(
        metric(&reg, "berth_scrub_blobs_checked_total").await,
        Some(3.0)
    );
    assert_eq!(
        metric(&reg, "berth_scrub_corrupt_blobs_total").await,
        Some(3.0),
        "two damaged and one missing"
    );

    let repair = ScrubOptions {
        repair: true,
        ..ScrubOptions::default()
    };
    let report = registry.scrub(repair).await.unwrap();
    assert_eq!(report.quarantined().count(), 2);
    let moved = reg
        .data_dir()
        .join(format!("quarantine/sha256-{}", flipped.hex()));
    assert_eq!(std::fs::read(&moved).unwrap(), flipped_bytes);
    let quarantined = report
        .corrupt
        .iter()
        .find(|c| c.digest == flipped)
        .and_then(|c| c.quarantined.clone());
    assert_eq!(quarantined.as_deref(), moved.to_str());
    // The blobs moved aside are reported as damaged, not once more as missing.
    let missing: Vec<_> = report.missing.iter().map(|m| &m.digest).collect();
    assert_eq!(missing, [&gone]);

    for d in [&flipped, &cut, &gone] {
        assert_eq!(status(&reg, Method::HEAD, d).await, StatusCode::NOT_FOUND);
        let r = reg
            .req(Method::GET, &format!("/v2/{REPO}/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    }
    assert_eq!(status(&reg, Method::HEAD, &config).await, StatusCode::OK);

    // A client that checked before pushing pushes them again, which heals them.
    for content in [FLIPPED, CUT, GONE] {
        let d = reg.push_blob(REPO, content).await;
        assert_eq!(status(&reg, Method::HEAD, &d).await, StatusCode::OK);
        let got = reg
            .req(Method::GET, &format!("/v2/{REPO}/blobs/{d}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], content);
    }
    let report = registry.scrub(ScrubOptions::default()).await.unwrap();
    assert_eq!(report.checked, 4);
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
    assert!(report.missing.is_empty(), "{:?}", report.missing);
}

/// The background scrub finds and moves aside a damaged blob on its own.
#[tokio::test]
async fn the_background_scrub_moves_a_damaged_blob_aside() {
    let reg = TestRegistry::start().await;
    let d = reg.push_blob("a/b", b"read back by the background").await;
    std::fs::write(blob_file(&reg, &d), b"READ BACK BY THE BACKGROUND").unwrap();
    let task = tokio::spawn(
        reg.state
            .registry
            .clone()
            .scrub_forever(Duration::from_millis(50)),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let url = format!("/v2/a/b/blobs/{d}");
    loop {
        let r = reg.req(Method::HEAD, &url).send().await.unwrap();
        if r.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the damaged blob is still served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert!(reg
        .data_dir()
        .join(format!("quarantine/sha256-{}", d.hex()))
        .exists());
}
