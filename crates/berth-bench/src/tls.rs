//! TLS, HTTP/2 and rollout fan-out (`berth-bench tls`): the servers are started with
//! one certificate (`--ca`, trusted as the only root), and measured on
//!
//! - **blob GET** of one big blob over TLS, HTTP/1.1 (the minimal client of [`http`])
//!   and HTTP/2 (hyper's client connection, ALPN `h2`, windows as Go's HTTP/2
//!   transport sets them: 4 MiB per stream, 1 GiB per connection);
//! - **fan-out**: `N` clients at once, each on its own connection, pulling one
//!   multi-layer image (manifest, config, every layer; over HTTP/2 the blobs of one
//!   client run as parallel streams), as a rollout does: aggregate MB/s, p50/p99 of the
//!   clients' completion times (from the common start, handshake included), server CPU
//!   per GiB, and the server's peak RSS sampled every 20 ms during the fan-out;
//! - **connection memory**: server RSS growth per idle TLS connection (handshake and
//!   one request done) and per slow one (a blob GET whose body the client stops
//!   reading after 64 KiB);
//! - **limits**, in the same run: one-core AES-128-GCM and AES-256-GCM sealing with both
//!   of rustls' providers, raw and through rustls' record layer ([`seal`]; Berth's provider
//!   marked), and the throughput of a minimal blocking rustls sender and receiver over
//!   loopback.
//!
//! The client side seals and opens records with the same library as Berth's listener (the
//! faster on this CPU, `berth_tls::AeadImpl`) and offers the cipher suites in Go's order,
//! as pull clients do (see `client_provider`).
//!
//! `--plain` measures plain-HTTP servers instead (fan-out and memory over HTTP/1.1).
//! Output: JSON lines like the suite's (`kind`: `limit`, `workload`, `fanout`,
//! `connmem`), appended to `--out`.

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

use crate::http::{with_query, Conn, Io, Sink};
use crate::suite::Target;
use crate::workloads::{check, upload_start, OCI_MANIFEST, OCTETS};
use crate::{data, procstat, seal};

/// The receive windows of the HTTP/2 client: those of Go's HTTP/2 transport
/// (containerd, Docker), so the server's sending is not throttled by a small window.
const H2_STREAM_WINDOW: u32 = 4 << 20;
const H2_CONN_WINDOW: u32 = (1 << 30) - 1;

/// Read buffer of each HTTP/1.1 client connection.
const READ_BUF: usize = 256 << 10;

#[derive(clap::Args, Clone, Debug)]
pub struct TlsArgs {
    /// A registry to measure: NAME=ADDR@PID (repeat; the first is "A" in the table).
    #[arg(long = "target", required = true)]
    pub targets: Vec<Target>,
    /// The servers' certificate (PEM), trusted as the only root. Required unless --plain.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Its private key (PEM), for the loopback rustls limit.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The targets speak plain HTTP: fan-out and connection memory over HTTP/1.1 only.
    #[arg(long)]
    pub plain: bool,
    /// Rounds; the order of the targets alternates every round.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Size of the blob of the blob GET rows (MiB).
    #[arg(long, default_value_t = 1024)]
    pub blob_mib: usize,
    /// Clients of the fan-out (0: no fan-out).
    #[arg(long, default_value_t = 0)]
    pub fanout: usize,
    /// Layers of the fan-out image.
    #[arg(long, default_value_t = 5)]
    pub layers: usize,
    /// Total size of the fan-out image's layers (MiB).
    #[arg(long, default_value_t = 50)]
    pub image_mib: usize,
    /// Protocols of the fan-out (h1, h2).
    #[arg(long, value_delimiter = ',', default_value = "h1,h2")]
    pub fanout_protocols: Vec<String>,
    /// Idle connections of the connection-memory measurement (0: none).
    #[arg(long, default_value_t = 200)]
    pub idle_conns: usize,
    /// Slow connections (a blob GET that stops reading) of the same measurement.
    #[arg(long, default_value_t = 100)]
    pub slow_conns: usize,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100.0)]
    pub clk_tck: f64,
    /// Only these parts (comma-separated: get,fanout,connmem,limits).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// JSON-lines file the results are appended to.
    #[arg(long)]
    pub out: PathBuf,
}

impl TlsArgs {
    fn wants(&self, w: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == w)
    }
}

/// The TLS client settings of the run: one per ALPN offer.
#[derive(Clone)]
struct Connectors {
    h1: TlsConnector,
    h2: TlsConnector,
}

fn client_config(ca: &Path, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("reading {}", ca.display()))?)?;
    }
    let provider = Arc::new(client_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// The load generator's TLS: the faster AES-GCM on this CPU (so the client takes as
/// little of the shared cores as it can), offering the cipher suites in the order of Go's
/// TLS client on a CPU with AES instructions (containerd, Docker, skopeo): AES-128-GCM,
/// then AES-256-GCM, then ChaCha20-Poly1305. The servers see the offer real pull clients
/// make.
fn client_provider() -> rustls::crypto::CryptoProvider {
    let mut p = berth_tls::provider_with(seal::server_provider());
    p.cipher_suites.sort_by_key(|s| go_rank(s.suite()));
    p
}

/// Rank of a cipher suite in Go's client preference (lower first).
fn go_rank(suite: rustls::CipherSuite) -> u8 {
    let name = format!("{suite:?}");
    if name.contains("AES_128_GCM") {
        0
    } else if name.contains("AES_256_GCM") {
        1
    } else {
        2
    }
}

fn connectors(ca: &Path) -> Result<Connectors> {
    Ok(Connectors {
        h1: TlsConnector::from(client_config(ca, b"http/1.1")?),
        h2: TlsConnector::from(client_config(ca, b"h2")?),
    })
}

/// An HTTP/1.1 connection to `addr`, over TLS when `tls` is given.
fn h1_conn(addr: SocketAddr, tls: Option<&Connectors>) -> Conn {
    match tls {
        Some(c) => Conn::with_tls(addr, READ_BUF, c.h1.clone()),
        None => Conn::new(addr, READ_BUF),
    }
}

/// An HTTP/2 connection over TLS; the server must choose `h2` by ALPN.
async fn h2_connect(addr: SocketAddr, tls: &Connectors) -> Result<SendRequest<Empty<Bytes>>> {
    let io = Io::connect(addr, Some(&tls.h2)).await?;
    ensure!(
        io.alpn() == Some(b"h2".as_slice()),
        "{addr} did not choose h2 by ALPN"
    );
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .handshake(TokioIo::new(io))
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("HTTP/2 connection ended: {e}");
        }
    });
    Ok(send)
}

/// GET over HTTP/2: status and body bytes (collected into `into` when given).
async fn h2_get(
    send: &mut SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
    mut into: Option<&mut Vec<u8>>,
) -> Result<(u16, u64)> {
    send.ready().await.context("HTTP/2 connection")?;
    let mut req = hyper::Request::get(format!("https://{addr}{path}"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = send
        .send_request(req.body(Empty::new())?)
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame
            .with_context(|| format!("body of {path}"))?
            .into_data()
        {
            n += d.len() as u64;
            if let Some(v) = into.as_deref_mut() {
                v.extend_from_slice(&d);
            }
        }
    }
    Ok((status, n))
}

/// Pushes `blob` (POST, then one PUT) on connection `c`.
async fn push(c: &mut Conn, repo: &str, blob: &[u8], digest: &str) -> Result<()> {
    let mut body = Vec::new();
    let head = c
        .send(
            "HEAD",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            b"",
            Sink::Discard,
        )
        .await?;
    if head.status == 200 {
        return Ok(());
    }
    let loc = upload_start(c, repo, &mut body).await?;
    body.clear();
    let r = c
        .send(
            "PUT",
            &with_query(&loc, "digest", digest),
            &[OCTETS],
            blob,
            Sink::Collect(&mut body),
        )
        .await?;
    check(&r, 201, "monolithic PUT", &body)
}

/// The fan-out image: `layers` random layers of `total` bytes in all, a config and a
/// manifest tagged `latest` in `repo`. Returns the image's total size (manifest
/// included).
async fn push_image(c: &mut Conn, repo: &str, layers: usize, total: usize) -> Result<u64> {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let cd = data::digest(config);
    push(c, repo, config, &cd).await?;
    let mut descs = Vec::new();
    let mut size = config.len() as u64;
    let each = (total / layers.max(1)).max(1);
    for i in 0..layers.max(1) {
        let blob = data::random_bytes(7_000 + i as u64, each);
        let d = data::digest(&blob);
        push(c, repo, &blob, &d).await?;
        size += blob.len() as u64;
        descs.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d, "size": blob.len()}),
        );
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))?;
    let mut body = Vec::new();
    let r = c
        .send(
            "PUT",
            &format!("/v2/{repo}/manifests/latest"),
            &[("Content-Type", OCI_MANIFEST)],
            &manifest,
            Sink::Collect(&mut body),
        )
        .await?;
    check(&r, 201, "manifest PUT", &body)?;
    Ok(size + manifest.len() as u64)
}

/// The blobs a manifest names (config first), with their sizes.
fn blobs_of(manifest: &[u8]) -> Result<Vec<(String, u64)>> {
    let m: Value = serde_json::from_slice(manifest).context("manifest is not JSON")?;
    let mut out = Vec::new();
    let descs = std::iter::once(&m["config"]).chain(
        m["layers"]
            .as_array()
            .map(|v| v.iter())
            .into_iter()
            .flatten(),
    );
    for d in descs {
        let digest = d["digest"].as_str().context("descriptor without digest")?;
        let size = d["size"].as_u64().context("descriptor without size")?;
        out.push((digest.to_owned(), size));
    }
    Ok(out)
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// One fan-out client over HTTP/1.1: manifest, then each blob in turn on one
/// connection. Returns the bytes received.
async fn pull_image_h1(addr: SocketAddr, tls: Option<&Connectors>, repo: &str) -> Result<u64> {
    let mut c = h1_conn(addr, tls);
    let mut manifest = Vec::new();
    let r = c
        .send(
            "GET",
            &format!("/v2/{repo}/manifests/latest"),
            &[("Accept", ACCEPT)],
            b"",
            Sink::Collect(&mut manifest),
        )
        .await?;
    check(&r, 200, "manifest GET", &manifest)?;
    let mut total = manifest.len() as u64;
    for (digest, size) in blobs_of(&manifest)? {
        let r = c
            .send(
                "GET",
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                b"",
                Sink::Discard,
            )
            .await?;
        ensure!(
            r.status == 200 && r.body_len == size,
            "blob GET: HTTP {} with {} of {size} bytes",
            r.status,
            r.body_len
        );
        total += size;
    }
    Ok(total)
}

/// One fan-out client over HTTP/2: manifest, then every blob at once as parallel
/// streams of one connection.
async fn pull_image_h2(addr: SocketAddr, tls: &Connectors, repo: &str) -> Result<u64> {
    let mut send = h2_connect(addr, tls).await?;
    let mut manifest = Vec::new();
    let path = format!("/v2/{repo}/manifests/latest");
    let (status, _) = h2_get(&mut send, addr, &path, Some(ACCEPT), Some(&mut manifest)).await?;
    ensure!(status == 200, "manifest GET: HTTP {status}");
    let mut tasks = Vec::new();
    for (digest, size) in blobs_of(&manifest)? {
        let mut send = send.clone();
        let path = format!("/v2/{repo}/blobs/{digest}");
        tasks.push(tokio::spawn(async move {
            let (status, n) = h2_get(&mut send, addr, &path, None, None).await?;
            ensure!(
                status == 200 && n == size,
                "blob GET: HTTP {status} with {n} of {size} bytes"
            );
            Ok::<u64, anyhow::Error>(n)
        }));
    }
    let mut total = manifest.len() as u64;
    for t in tasks {
        total += t.await.context("blob task")??;
    }
    Ok(total)
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// Samples `VmRSS` of `pid` every 20 ms until stopped; yields the maximum (KiB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak.max(rss_kib(pid).unwrap_or(0))
        });
        RssSampler { stop, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or(0)
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn emit(out: &Path, v: &Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    writeln!(f, "{v}")?;
    Ok(())
}

/// Server CPU seconds so far (0 without a pid).
fn cpu(t: &Target, clk: f64) -> Result<f64> {
    t.pid.map_or(Ok(0.0), |p| procstat::cpu_seconds(p, clk))
}

pub async fn run(a: TlsArgs) -> Result<()> {
    let tls = match (&a.ca, a.plain) {
        (_, true) => None,
        (Some(ca), false) => Some(connectors(ca)?),
        (None, false) => bail!("--ca is required unless --plain"),
    };
    let clk = a.clk_tck;
    let scheme = if a.plain { "plain" } else { "tls" };
    emit(
        &a.out,
        &json!({"kind": "config", "tls_rounds": a.rounds, "tls_blob_mib": a.blob_mib,
            "fanout": a.fanout, "fanout_layers": a.layers, "fanout_image_mib": a.image_mib,
            "scheme": scheme,
            "targets": a.targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>()}),
    )?;

    if a.wants("limits") {
        limits(&a)?;
    }

    // Setup: the big blob and the fan-out image on every target.
    let blob_len = a.blob_mib << 20;
    let blob = if a.wants("get") || a.wants("connmem") {
        eprintln!("generating a {} MiB blob", a.blob_mib);
        let mut b = data::random_bytes(31, blob_len.max(1 << 20));
        b.truncate(blob_len);
        b
    } else {
        Vec::new()
    };
    let digest = data::digest(&blob);
    let mut image_size = 0;
    for t in &a.targets {
        let mut c = h1_conn(t.addr, tls.as_ref());
        if !blob.is_empty() {
            push(&mut c, "bench/tlsblob", &blob, &digest)
                .await
                .with_context(|| format!("pushing the blob to {}", t.name))?;
        }
        if a.fanout > 0 && a.wants("fanout") {
            image_size = push_image(&mut c, "bench/fanout", a.layers, a.image_mib << 20)
                .await
                .with_context(|| format!("pushing the fan-out image to {}", t.name))?;
        }
    }

    // Connection memory first, while the servers hold little else (a fan-out leaves
    // freed memory that new connections would reuse unseen).
    if a.wants("connmem") && (a.idle_conns > 0 || a.slow_conns > 0) {
        for t in &a.targets {
            let v = conn_memory(t, tls.as_ref(), &a, &digest).await?;
            eprintln!(
                "{:<12} {scheme} connections: {:.0} KiB per idle, {:.0} KiB per slow",
                t.name,
                v["idle_kib_per_conn"].as_f64().unwrap_or(0.0),
                v["slow_kib_per_conn"].as_f64().unwrap_or(0.0)
            );
            emit(&a.out, &with(v, json!({"scheme": scheme})))?;
        }
    }
    for round in 1..=a.rounds {
        let mut order: Vec<&Target> = a.targets.iter().collect();
        if round % 2 == 0 {
            order.reverse();
        }
        if a.wants("get") && !blob.is_empty() {
            let protocols: &[&str] = if tls.is_some() {
                &["h1", "h2"]
            } else {
                &["h1"]
            };
            for proto in protocols {
                for t in &order {
                    let path = format!("/v2/bench/tlsblob/blobs/{digest}");
                    rustix::fs::sync();
                    let cpu0 = cpu(t, clk)?;
                    let client0 = procstat::self_cpu_seconds(clk)?;
                    let start = Instant::now();
                    let n = match (*proto, &tls) {
                        ("h2", Some(c)) => {
                            let mut send = h2_connect(t.addr, c).await?;
                            let (status, n) = h2_get(&mut send, t.addr, &path, None, None).await?;
                            ensure!(status == 200, "blob GET over h2: HTTP {status}");
                            n
                        }
                        _ => {
                            let mut c = h1_conn(t.addr, tls.as_ref());
                            let r = c.send("GET", &path, &[], b"", Sink::Discard).await?;
                            ensure!(r.status == 200, "blob GET: HTTP {}", r.status);
                            r.body_len
                        }
                    };
                    let wall = start.elapsed().as_secs_f64();
                    ensure!(n == blob_len as u64, "got {n} of {blob_len} bytes");
                    let server = cpu(t, clk)? - cpu0;
                    let v = json!({"kind": "workload", "round": round, "target": t.name,
                        "workload": format!("{scheme}_get_{proto}"), "wall_s": wall,
                        "server_cpu_s": t.pid.map(|_| server),
                        "client_cpu_s": procstat::self_cpu_seconds(clk)? - client0,
                        "server_peak_rss_kib": t.pid.map(procstat::peak_rss_kib).transpose()?,
                        "ops": 1, "bytes": n, "value": n as f64 / wall / 1e6, "unit": "MB/s"});
                    eprintln!(
                        "[round {round}] {:<12} {scheme}_get_{proto:<8} {:>8.1} MB/s  server cpu {server:.2}s",
                        t.name,
                        n as f64 / wall / 1e6
                    );
                    emit(&a.out, &v)?;
                }
            }
        }
        if a.fanout > 0 && a.wants("fanout") {
            for proto in &a.fanout_protocols {
                if proto == "h2" && tls.is_none() {
                    continue;
                }
                for t in &order {
                    let v = fanout(t, tls.as_ref(), proto, a.fanout, clk).await?;
                    let v = with(
                        v,
                        json!({"round": round, "image_bytes": image_size,
                        "workload": format!("{scheme}_fanout_{proto}")}),
                    );
                    eprintln!(
                        "[round {round}] {:<12} {scheme}_fanout_{proto} x{}: {:>8.1} MB/s  p50 {:.2}s p99 {:.2}s  cpu {:.2}s/GiB  peak RSS {:.0} MiB",
                        t.name,
                        a.fanout,
                        v["value"].as_f64().unwrap_or(0.0),
                        v["p50_s"].as_f64().unwrap_or(0.0),
                        v["p99_s"].as_f64().unwrap_or(0.0),
                        v["server_cpu_s_per_gib"].as_f64().unwrap_or(0.0),
                        v["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                    );
                    emit(&a.out, &v)?;
                }
            }
        }
    }

    Ok(())
}

fn with(mut v: Value, extra: Value) -> Value {
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

/// `n` clients pull the fan-out image at once.
async fn fanout(
    t: &Target,
    tls: Option<&Connectors>,
    proto: &str,
    n: usize,
    clk: f64,
) -> Result<Value> {
    rustix::fs::sync();
    let sampler = t.pid.map(RssSampler::start);
    let rss_before = t.pid.map(rss_kib).transpose()?;
    let cpu0 = cpu(t, clk)?;
    let client0 = procstat::self_cpu_seconds(clk)?;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (addr, tls, h2) = (t.addr, tls.cloned(), proto == "h2");
        tasks.push(tokio::spawn(async move {
            let bytes = match (&tls, h2) {
                (Some(c), true) => pull_image_h2(addr, c, "bench/fanout").await?,
                _ => pull_image_h1(addr, tls.as_ref(), "bench/fanout").await?,
            };
            Ok::<_, anyhow::Error>((start.elapsed().as_secs_f64(), bytes))
        }));
    }
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0u64;
    let mut failed = 0usize;
    let mut first_err = None;
    for task in tasks {
        match task.await.context("fan-out client")? {
            Ok((s, b)) => {
                times.push(s);
                bytes += b;
            }
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(format!("{e:#}"));
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let server = cpu(t, clk)? - cpu0;
    let client = procstat::self_cpu_seconds(clk)? - client0;
    let peak = match sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };
    // A client that failed is reported, not fatal: the others' figures still stand (a
    // server that drops connections under the load is itself a result).
    if let Some(e) = &first_err {
        eprintln!(
            "{}: {failed} of {n} fan-out clients failed; first: {e}",
            t.name
        );
    }
    ensure!(
        !times.is_empty(),
        "every fan-out client against {} failed",
        t.name
    );
    times.sort_by(f64::total_cmp);
    let (p50, p99) = (quantile(&times, 0.5), quantile(&times, 0.99));
    Ok(
        json!({"kind": "fanout", "target": t.name, "clients": n, "bytes": bytes,
        "wall_s": wall, "value": bytes as f64 / wall / 1e6, "unit": "MB/s",
        "p50_s": p50, "p99_s": p99, "p99_over_p50": p99 / p50,
        "min_s": times.first(), "max_s": times.last(),
        "server_cpu_s": t.pid.map(|_| server), "client_cpu_s": client,
        "server_cpu_s_per_gib": t.pid.map(|_| server / (bytes as f64 / (1u64 << 30) as f64)),
        "rss_before_kib": rss_before, "peak_rss_kib": peak}),
    )
}

/// Server memory per idle and per slow connection: RSS growth over opening them.
async fn conn_memory(
    t: &Target,
    tls: Option<&Connectors>,
    a: &TlsArgs,
    digest: &str,
) -> Result<Value> {
    let pid = t.pid.context("connection memory needs the server's pid")?;
    // Let earlier work's memory settle (Go returns it lazily; Berth's allocator too).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss0 = rss_kib(pid)?;
    let mut idle = Vec::with_capacity(a.idle_conns);
    for _ in 0..a.idle_conns {
        let mut c = h1_conn(t.addr, tls);
        let r = c.send("GET", "/v2/", &[], b"", Sink::Discard).await?;
        ensure!(r.status == 200, "GET /v2/: HTTP {}", r.status);
        idle.push(c);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss1 = rss_kib(pid)?;
    // Slow readers: a blob GET whose body the client stops reading after 64 KiB.
    let mut slow = Vec::with_capacity(a.slow_conns);
    let head = format!(
        "GET /v2/bench/tlsblob/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nUser-Agent: berth-bench\r\n\r\n",
        t.addr
    );
    for _ in 0..a.slow_conns {
        let mut io = Io::connect(t.addr, tls.map(|c| &c.h1)).await?;
        io.write_all(head.as_bytes()).await?;
        io.flush().await?;
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0;
        while got < buf.len() {
            let n = tokio::time::timeout(Duration::from_secs(30), io.read(&mut buf[got..]))
                .await
                .context("slow reader: no bytes within 30 s")??;
            ensure!(n > 0, "slow reader: connection closed");
            got += n;
        }
        slow.push(io);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss2 = rss_kib(pid)?;
    drop(slow);
    drop(idle);
    let per = |d: u64, n: usize| (n > 0).then(|| d as f64 / n as f64);
    Ok(json!({"kind": "connmem", "target": t.name,
        "idle_conns": a.idle_conns, "slow_conns": a.slow_conns,
        "rss_before_kib": rss0, "rss_idle_kib": rss1, "rss_slow_kib": rss2,
        "idle_kib_per_conn": per(rss1.saturating_sub(rss0), a.idle_conns),
        "slow_kib_per_conn": per(rss2.saturating_sub(rss1), a.slow_conns)}))
}

fn limits(a: &TlsArgs) -> Result<()> {
    let data = data::random_bytes(41, 64 << 20);
    let mut rows = Vec::new();
    for p in seal::Provider::ALL {
        for (bits, suite) in [
            (128, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
            (256, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384),
        ] {
            let aead = seal::aead_seal(p, bits == 256, &data, 1 << 30)?;
            rows.push((format!("aes_{bits}_gcm_one_core"), p, aead));
            if let (Some(ca), Some(key)) = (&a.ca, &a.key) {
                let rec = seal::record_seal(p, suite, ca, key, &data, 1 << 30)?;
                rows.push((format!("rustls_records_aes_{bits}_one_core"), p, rec));
            }
        }
    }
    if let (Some(ca), Some(key)) = (&a.ca, &a.key) {
        rows.push((
            "rustls_loopback".to_owned(),
            seal::server_provider(),
            rustls_loopback(ca, key, &data, (a.blob_mib.max(64) as u64) << 20)?,
        ));
    }
    for (name, p, bps) in rows {
        let berth = p == seal::server_provider();
        let v = json!({"kind": "limit", "round": 0, "workload": name, "provider": p.name(),
            "berth_provider": berth, "value": bps / 1e6, "unit": "MB/s"});
        eprintln!(
            "limit {name:<34} {:<10}{} {:>10.1} MB/s",
            p.name(),
            if berth { "*" } else { " " },
            bps / 1e6
        );
        emit(&a.out, &v)?;
    }
    Ok(())
}

/// A minimal rustls sender and receiver (blocking, one thread each, the run's
/// certificate, default cipher suites) over loopback TCP: `total` bytes sent in 1 MiB
/// writes, in bytes per second.
pub fn rustls_loopback(ca: &Path, key: &Path, data: &[u8], total: u64) -> Result<f64> {
    let certs = CertificateDer::pem_file_iter(ca)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(berth_tls::provider_with(seal::server_provider()));
    let server = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?,
    );
    let client = client_config(ca, b"http/1.1")?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> Result<(u64, String)> {
        let s = TcpStream::connect(addr)?;
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(client, name)?;
        let mut tls = rustls::StreamOwned::new(conn, s);
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.into()),
            }
        }
        let suite = tls
            .conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        Ok((got, suite))
    });
    let (s, _) = listener.accept()?;
    s.set_nodelay(true)?;
    let conn = rustls::ServerConnection::new(server)?;
    let mut tls = rustls::StreamOwned::new(conn, s);
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let off = (sent % (data.len() as u64 - (1 << 20))) as usize;
        let n = usize::try_from(total - sent)
            .unwrap_or(usize::MAX)
            .min(1 << 20);
        tls.write_all(&data[off..off + n])?;
        sent += n as u64;
    }
    tls.conn.send_close_notify();
    tls.flush()?;
    drop(tls);
    let (got, suite) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("rustls reader panicked"))??;
    ensure!(got == total, "rustls probe received {got} of {total} bytes");
    eprintln!("rustls loopback cipher suite: {suite}");
    Ok(total as f64 / t.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_offers_aes_128_first_as_go_does() {
        let p = client_provider();
        let first13 = p
            .cipher_suites
            .iter()
            .find(|s| s.version() == &rustls::version::TLS13)
            .unwrap();
        assert_eq!(
            first13.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(go_rank(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384), 1);
        assert_eq!(
            go_rank(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
            2
        );
    }

    #[test]
    fn quantiles_pick_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn manifest_blobs_config_first() {
        let m = br#"{"config":{"digest":"sha256:c","size":2},"layers":[{"digest":"sha256:a","size":5},{"digest":"sha256:b","size":7}]}"#;
        let b = blobs_of(m).unwrap();
        assert_eq!(
            b,
            vec![
                ("sha256:c".to_owned(), 2),
                ("sha256:a".to_owned(), 5),
                ("sha256:b".to_owned(), 7)
            ]
        );
    }
}
