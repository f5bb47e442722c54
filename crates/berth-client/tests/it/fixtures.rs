//! Test registries (Berth in-process, CNCF Distribution as a child process) and test
//! images built from scratch: random layers as real tar.gz, a config with a platform, a
//! manifest, and two-platform indexes.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth_client::image::Manifest;
use berth_client::progress::Quiet;
use berth_client::{ClientOptions, Clients, ImageRef, Registry};
use berth_oci::{media_types as mt, Descriptor, Digest, Reference, RepoName};
use bytes::Bytes;

/// Berth running in this process on 127.0.0.1:0, shut down on drop.
pub struct TestBerth {
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestBerth {
    pub async fn start() -> TestBerth {
        let dir = tempfile::tempdir().unwrap();
        let config = berth_server::Config {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        let state = berth_server::build_state(&config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = berth_server::run(listener, state, async {
                let _ = rx.await;
            })
            .await;
        });
        TestBerth {
            addr,
            _dir: dir,
            shutdown: Some(tx),
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The file in which the registry keeps a blob, so a test can alter it behind the
    /// registry's back (bit rot).
    pub fn blob_path(&self, digest: &Digest) -> std::path::PathBuf {
        fn find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
            for entry in std::fs::read_dir(dir).ok()?.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if let Some(found) = find(&path, name) {
                        return Some(found);
                    }
                } else if entry.file_name() == name {
                    return Some(path);
                }
            }
            None
        }
        find(self._dir.path(), digest.hex()).expect("the blob's file in the data directory")
    }
}

impl Drop for TestBerth {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// CNCF Distribution (`docker-registry`) on a loopback port, killed on drop.
pub struct TestDistribution {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TestDistribution {
    pub fn start() -> TestDistribution {
        let bin = "/usr/bin/docker-registry";
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: install the Debian package docker-registry"
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read the log until the listening line, then keep draining it.
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr = rest.split('"').next().unwrap_or("").to_owned();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("distribution listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!("docker-registry did not report its address within 20s");
            }
        };
        TestDistribution {
            addr,
            child,
            _dir: dir,
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TestDistribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Client options for tests: a config file that does not exist, fast retries.
pub fn options() -> ClientOptions {
    ClientOptions {
        docker_config: Some("/nonexistent/berth-test/config.json".into()),
        retry_base: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

pub fn clients() -> Clients {
    Clients::new(options()).unwrap()
}

pub fn quiet() -> Arc<dyn berth_client::progress::Progress> {
    Arc::new(Quiet)
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A tar with one file of random content, gzip-compressed; returns (gzip, diff_id).
pub fn layer(seed: u64, size: usize) -> (Bytes, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let data = random_bytes(seed, size);
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, format!("file-{seed}.bin"), data.as_slice())
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = Digest::sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (Bytes::from(gz.finish().unwrap()), diff_id)
}

/// A complete image: manifest, config and layer blobs.
#[derive(Clone)]
pub struct TestImage {
    pub manifest: Manifest,
    pub config: (Descriptor, Bytes),
    pub layers: Vec<(Descriptor, Bytes)>,
}

fn desc(media_type: &str, data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: Digest::sha256(data),
        size: data.len() as u64,
        urls: vec![],
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    }
}

/// Builds an image with `layers` layers of `size` random bytes each. `docker` picks
/// Docker schema 2 media types instead of OCI ones.
pub fn image(seed: u64, layers: usize, size: usize, arch: &str, docker: bool) -> TestImage {
    let (layer_type, config_type, manifest_type) = if docker {
        (
            mt::DOCKER_LAYER_GZIP,
            mt::DOCKER_CONFIG,
            mt::DOCKER_MANIFEST,
        )
    } else {
        (mt::OCI_LAYER_GZIP, mt::OCI_CONFIG, mt::OCI_MANIFEST)
    };
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let (gz, diff) = layer(seed * 1000 + i as u64, size);
        blobs.push((desc(layer_type, &gz), gz));
        diff_ids.push(diff.to_string());
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {
            "Entrypoint": ["/bin/app"],
            "Env": ["PATH=/usr/bin", format!("SEED={seed}")],
            "Labels": {"org.example.seed": seed.to_string()},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [],
    });
    let config = Bytes::from(serde_json::to_vec(&config).unwrap());
    let config_desc = desc(config_type, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config_desc,
        "layers": blobs.iter().map(|(d, _)| d).collect::<Vec<_>>(),
    });
    // Pretty-printed on purpose: a client that re-serializes would change the digest.
    let bytes = Bytes::from(serde_json::to_vec_pretty(&manifest).unwrap());
    TestImage {
        manifest: Manifest::from_bytes(bytes, Some(manifest_type)).unwrap(),
        config: (config_desc, config),
        layers: blobs,
    }
}

/// An OCI index over images, with their platforms.
pub fn index(images: &[(&TestImage, &str)]) -> Manifest {
    let entries: Vec<serde_json::Value> = images
        .iter()
        .map(|(img, arch)| {
            serde_json::json!({
                "mediaType": img.manifest.media_type,
                "digest": img.manifest.digest,
                "size": img.manifest.bytes.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    let body =
        serde_json::json!({"schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": entries});
    Manifest::from_bytes(
        Bytes::from(serde_json::to_vec_pretty(&body).unwrap()),
        Some(mt::OCI_INDEX),
    )
    .unwrap()
}

/// Pushes an image's blobs and manifest by digest, and by tag when given.
pub async fn push_image(reg: &Registry, repo: &str, img: &TestImage, tag: Option<&str>) {
    let repo = RepoName::parse(repo).unwrap();
    reg.put_blob_bytes(&repo, &img.config.0, img.config.1.clone())
        .await
        .unwrap();
    for (d, b) in &img.layers {
        reg.put_blob_bytes(&repo, d, b.clone()).await.unwrap();
    }
    let reference = match tag {
        Some(t) => Reference::parse(t).unwrap(),
        None => Reference::Digest(img.manifest.digest.clone()),
    };
    reg.put_manifest(&repo, &reference, &img.manifest)
        .await
        .unwrap();
}

/// Pushes a two-platform (amd64, arm64) index under `tag`; returns (index, images).
pub async fn push_multiarch(
    reg: &Registry,
    repo: &str,
    tag: &str,
    seed: u64,
) -> (Manifest, TestImage, TestImage) {
    let amd = image(seed, 2, 3000, "amd64", false);
    let arm = image(seed + 1, 2, 3000, "arm64", false);
    push_image(reg, repo, &amd, None).await;
    push_image(reg, repo, &arm, None).await;
    let idx = index(&[(&amd, "amd64"), (&arm, "arm64")]);
    reg.put_manifest(
        &RepoName::parse(repo).unwrap(),
        &Reference::parse(tag).unwrap(),
        &idx,
    )
    .await
    .unwrap();
    (idx, amd, arm)
}

pub fn image_ref(host: &str, rest: &str) -> ImageRef {
    ImageRef::parse(&format!("{host}/{rest}")).unwrap()
}
