//! A registry started in-process on `127.0.0.1:0`, shut down when dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_oci::Digest;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

pub struct TestRegistry {
    pub base: String,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    /// The server's state, for explicit cache invalidation in tests.
    pub state: berth_server::AppState,
}

impl TestRegistry {
    pub async fn start() -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_owned();
        let mut reg = TestRegistry::start_in(&data_dir, berth_server::Config::default()).await;
        reg.dir = Some(dir);
        reg
    }

    /// Starts a server with `config` (its data directory replaced by a fresh one).
    pub async fn start_with(config: berth_server::Config) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_owned();
        let mut reg = TestRegistry::start_in(&data_dir, config).await;
        reg.dir = Some(dir);
        reg
    }

    /// Starts a server over an existing data directory (to test restarts).
    pub async fn start_in(data_dir: &Path, config: berth_server::Config) -> TestRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        TestRegistry::start_on(listener, data_dir, config).await
    }

    /// Starts a server on `listener` (a known address, to test a peer coming back).
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        data_dir: &Path,
        mut config: berth_server::Config,
    ) -> TestRegistry {
        config.data_dir = data_dir.to_owned();
        let state = berth_server::build_state(&config).unwrap();
        let kept = state.clone();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            berth_server::run(listener, state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestRegistry {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            shutdown: Some(tx),
            task: Some(task),
            dir: None,
            data_dir: data_dir.to_owned(),
            state: kept,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server and waits for it, keeping the data directory.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .unwrap()
                .unwrap();
        }
        self.dir.take()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// Pushes a blob monolithically and returns its digest.
    pub async fn push_blob(&self, repo: &str, content: &[u8]) -> Digest {
        let d = Digest::sha256(content);
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            )
            .body(content.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        d
    }

    /// Pushes a manifest under `reference` and returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a small image (config + one layer) and returns (manifest bytes, digest).
    pub async fn push_image(&self, repo: &str, tag: &str, seed: &str) -> (Vec<u8>, Digest) {
        let config = json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"seed":seed})
            .to_string();
        let layer = format!("layer-{seed}");
        let c = self.push_blob(repo, config.as_bytes()).await;
        let l = self.push_blob(repo, layer.as_bytes()).await;
        let m = image_manifest(&c, config.len(), &[(&l, layer.len())], None);
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        let d = Digest::sha256(&m);
        (m, d)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An OCI image manifest over a config and layers, with an optional subject.
pub fn image_manifest(
    config: &Digest,
    config_len: usize,
    layers: &[(&Digest, usize)],
    subject: Option<Value>,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_len},
        "layers": layers.iter().map(|(d, n)| json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d.to_string(),"size":n})).collect::<Vec<_>>(),
    });
    if let Some(s) = subject {
        m["subject"] = s;
    }
    serde_json::to_vec_pretty(&m).unwrap()
}

/// Reads an OCI error body and returns its first code.
pub async fn error_code(r: Response) -> String {
    let v: Value = r.json().await.unwrap();
    v["errors"][0]["code"].as_str().unwrap().to_owned()
}
