//! Faults a registry must survive: a client stalled in the middle of an upload, and a full
//! disk (on a real, small tmpfs where the tests may mount one).

use std::path::Path;
use std::time::Duration;

use berth_oci::Digest;
use bytes::Bytes;
use reqwest::{Method, StatusCode};

use crate::common::{error_code, image_manifest, TestRegistry, OCI_MANIFEST};

/// Starts an upload session in `repo`; returns its `Location`.
async fn start_upload(reg: &TestRegistry, repo: &str) -> reqwest::Response {
    reg.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap()
}

fn upload_files(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits (at most `limit`) until `done` holds.
async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stalled_upload_does_not_stop_the_expiry_of_idle_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = berth_server::Config {
        upload_idle_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let reg = TestRegistry::start_in(dir.path(), config).await;

    // A PATCH whose body stops after its first MiB, its sender kept open.
    let r = start_upload(&reg, "a").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let stalled_loc = r.headers()["location"].to_str().unwrap().to_owned();
    let stalled_id = r.headers()["docker-upload-uuid"]
        .to_str()
        .unwrap()
        .to_owned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let first = Bytes::from(vec![7u8; (1 << 20) + 1]);
    tx.send(Ok(first.clone())).await.unwrap();
    let patch = tokio::spawn(
        reg.req(Method::PATCH, &stalled_loc)
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    // The store writes in 1 MiB batches: a MiB on disk means the append holds the upload.
    let stalled_file = dir.path().join("uploads").join(&stalled_id);
    wait_for(
        Duration::from_secs(10),
        "the PATCH reached the store",
        || std::fs::metadata(&stalled_file).is_ok_and(|m| m.len() >= 1 << 20),
    )
    .await;
    // Long enough for the stalled session to be idle and for expiry to have tried it:
    // an expiry that waited on it would be stuck from now on.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let mut idle = Vec::new();
    for _ in 0..5 {
        let r = start_upload(&reg, "a").await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        idle.push(
            r.headers()["docker-upload-uuid"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Poll the disk, not the API: a status request would refresh the idle timer.
    wait_for(Duration::from_secs(15), "the idle uploads expired", || {
        let left = upload_files(dir.path());
        idle.iter().all(|id| !left.contains(id))
    })
    .await;
    assert!(upload_files(dir.path()).contains(&stalled_id));
    assert!(
        std::fs::metadata(&stalled_file).unwrap().len() >= 1 << 20,
        "the stalled upload was touched"
    );

    // The stalled client finishes: its upload kept every byte.
    tx.send(Ok(Bytes::from_static(b"rest"))).await.unwrap();
    drop(tx);
    let r = tokio::time::timeout(Duration::from_secs(10), patch)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.headers()["range"],
        format!("0-{}", first.len() + 4 - 1).as_str()
    );
}

/// A tmpfs mounted on a temporary directory, unmounted when dropped; `None` (with a
/// message) when this process may not mount one (not root, or a sandbox that forbids it).
struct Tmpfs(Option<tempfile::TempDir>);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (the full-disk test needs root)");
            return None;
        }
        Some(Tmpfs(Some(dir)))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().map(|d| d.path()).unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::process::Command::new("umount")
                .arg(dir.path())
                .status();
        }
    }
}

/// A blob of `len` bytes that differs for each `seed`.
fn blob(seed: u8, len: usize) -> Vec<u8> {
    let mut b = vec![seed; len];
    b[0] = seed.wrapping_add(1);
    b
}

async fn put_blob(reg: &TestRegistry, repo: &str, content: &[u8]) -> reqwest::Response {
    let d = Digest::sha256(content);
    reg.req(
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
    )
    .body(content.to_vec())
    .send()
    .await
    .unwrap()
}

async fn delete(reg: &TestRegistry, path: &str) -> StatusCode {
    reg.req(Method::DELETE, path).send().await.unwrap().status()
}

#[tokio::test]
async fn a_full_disk_answers_507_and_deletes_still_free_space() {
    let Some(fs) = Tmpfs::mount("16m") else {
        return;
    };
    let reg = TestRegistry::start_in(fs.path(), berth_server::Config::default()).await;
    const MIB: usize = 1 << 20;

    // An image with a 2 MiB layer, then 2 MiB blobs until the disk is full.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = blob(0, 2 * MIB);
    let (c, l) = (Digest::sha256(config), Digest::sha256(&layer));
    assert_eq!(
        put_blob(&reg, "a", config).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put_blob(&reg, "a", &layer).await.status(),
        StatusCode::CREATED
    );
    let manifest = image_manifest(&c, config.len(), &[(&l, layer.len())], None);
    let m = Digest::sha256(&manifest);
    let r = reg.put_manifest("a", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut stored = Vec::new();
    let full = loop {
        assert!(stored.len() < 16, "16 MiB never filled up");
        let content = blob(stored.len() as u8 + 10, 2 * MIB);
        let r = put_blob(&reg, "a", &content).await;
        if r.status() != StatusCode::CREATED {
            break r;
        }
        stored.push(Digest::sha256(&content));
    };
    assert_eq!(full.status().as_u16(), 507);
    assert_eq!(full.headers()["content-type"], "application/json");
    assert_eq!(error_code(full).await, "UNAVAILABLE");
    assert!(!stored.is_empty());
    // Neither the failed monolithic push nor a refused upload start leaves a file.
    let r = start_upload(&reg, "a").await;
    assert_eq!(r.status().as_u16(), 507);
    assert_eq!(error_code(r).await, "UNAVAILABLE");
    assert_eq!(upload_files(fs.path()), Vec::<String>::new());

    // Deletions work on the full disk and free its space.
    for d in &stored {
        assert_eq!(
            delete(&reg, &format!("/v2/a/blobs/{d}")).await,
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(
        delete(&reg, &format!("/v2/a/manifests/{m}")).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        delete(&reg, &format!("/v2/a/blobs/{l}")).await,
        StatusCode::ACCEPTED
    );
    // Pushes work again.
    let again = blob(200, MIB);
    assert_eq!(
        put_blob(&reg, "a", &again).await.status(),
        StatusCode::CREATED
    );
    let r = reg
        .put_manifest(
            "a",
            "v2",
            OCI_MANIFEST,
            &image_manifest(&c, config.len(), &[], None),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // A disk filled by someone else while the reserve is held: the database finds it
    // full, and a deletion still goes through.
    let filler = fs.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
    }
    assert_eq!(
        delete(&reg, "/v2/a/manifests/v2").await,
        StatusCode::ACCEPTED
    );
    let d = Digest::sha256(&again);
    assert_eq!(
        delete(&reg, &format!("/v2/a/blobs/{d}")).await,
        StatusCode::ACCEPTED
    );
    std::fs::remove_file(&filler).unwrap();

    reg.stop().await;
    drop(fs);
}
