//! Starting and stopping a real `berth serve` process on an ephemeral loopback port.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use berth_oci::Digest;

pub struct ServerProcess {
    pub child: Child,
    pub base: String,
    pub addr: String,
}

impl ServerProcess {
    /// Starts `berth serve` over `data_dir` and waits (10 s at most) for its address.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        Self::start_on("127.0.0.1:0", data_dir, extra)
    }

    /// Like [`ServerProcess::start`], on a given listen address.
    pub fn start_on(listen: &str, data_dir: &Path, extra: &[&str]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("BERTH_LOG", "info")
            .env("BERTH_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    log2.lock().unwrap().push_str(&format!("{line}\n"));
                    // The machine-readable line: a JSON log event with a `url` field.
                    let url = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| v["fields"]["url"].as_str().map(str::to_owned));
                    if let Some(url) = url {
                        let addr = url
                            .split_once("://")
                            .map(|(_, a)| a)
                            .unwrap_or(&url)
                            .to_owned();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(a) => a,
            Err(_) => {
                // Never leave the process behind when a test fails here.
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not report its address; its log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        ServerProcess {
            child,
            base: format!("http://{addr}"),
            addr,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (10 s at most) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn digest(b: &[u8]) -> Digest {
    Digest::sha256(b)
}

/// Status of a plain `GET path` on `addr` (HTTP/1.0, no client library, so sync tests can
/// poll too).
pub fn status_of(addr: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

/// Waits (10 s at most) until `GET path` on `addr` answers `status`.
pub fn wait_for_status(addr: &str, path: &str, status: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = status_of(addr, path);
        if got == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "GET {path} still answers {got}, not {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
