//! The benchmark schedule: every workload against every target, alternating the order
//! of the targets each round (A B, then B A) so that drift in the machine's load hits
//! both alike, with the server's CPU seconds and peak memory read around each step.
//!
//! Output is one JSON object per line (`kind`: `limit`, `setup`, `workload`, `server`),
//! aggregated by `bench/report.py`.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::http::Conn;
use crate::{data, limits, procstat, workloads as w};

/// A registry under test.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    /// The server's process id, for CPU and memory (optional: without it only wall
    /// clock is reported).
    pub pid: Option<u32>,
}

impl std::str::FromStr for Target {
    type Err = String;

    /// `NAME=ADDR` or `NAME=ADDR@PID`.
    fn from_str(s: &str) -> Result<Target, String> {
        let (name, rest) = s.split_once('=').ok_or("expected NAME=ADDR[@PID]")?;
        let (addr, pid) = match rest.split_once('@') {
            Some((a, p)) => (a, Some(p.parse().map_err(|_| format!("bad pid {p:?}"))?)),
            None => (rest, None),
        };
        let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address: the harness only targets this machine"
            ));
        }
        Ok(Target {
            name: name.to_owned(),
            addr,
            pid,
        })
    }
}

/// A process tree the servers depend on (the S3 server, the metadata database), whose
/// CPU is recorded beside the server's in every step: `NAME=PID`.
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Backend, String> {
        let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
        Ok(Backend {
            name: name.to_owned(),
            pid: pid.parse().map_err(|_| format!("bad pid {pid:?}"))?,
        })
    }
}

/// A client that copies an OCI layout into a registry and back (`NAME|IN|OUT`, shell
/// templates with `{src}` (OCI layout directory), `{registry}` (host:port), `{repo}` and
/// `{out}` (a fresh directory to copy back into)).
#[derive(Clone, Debug)]
pub struct CopyClient {
    pub name: String,
    pub copy_in: String,
    pub copy_out: String,
}

impl std::str::FromStr for CopyClient {
    type Err = String;

    fn from_str(s: &str) -> Result<CopyClient, String> {
        let mut parts = s.splitn(3, '|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(o)) if !n.is_empty() => Ok(CopyClient {
                name: n.to_owned(),
                copy_in: i.to_owned(),
                copy_out: o.to_owned(),
            }),
            _ => Err("expected NAME|IN-TEMPLATE|OUT-TEMPLATE".into()),
        }
    }
}

/// Sizes, counts and durations of one run (defaults are issue 6's).
#[derive(clap::Args, Clone, Debug)]
pub struct SuiteArgs {
    /// A registry to measure: NAME=ADDR[@PID] (repeat; the first is "A" in the table).
    #[arg(long = "target", required = true)]
    pub targets: Vec<Target>,
    /// A backend shared by the targets (NAME=PID, repeat): the CPU of its process tree
    /// is recorded in every step as `backend_cpu_s.NAME`.
    #[arg(long = "backend")]
    pub backends: Vec<Backend>,
    /// Rounds; the order of the targets alternates every round.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Size of the big blob (MiB) for pushes and pulls.
    #[arg(long, default_value_t = 1024)]
    pub blob_mib: usize,
    /// Chunk size of the chunked push (MiB).
    #[arg(long, default_value_t = 16)]
    pub chunk_mib: usize,
    /// Size of each ranged GET of the ranged pull (MiB).
    #[arg(long, default_value_t = 64)]
    pub range_mib: u64,
    /// Small blobs per round.
    #[arg(long, default_value_t = 2000)]
    pub small_count: usize,
    /// Size of a small blob (KiB).
    #[arg(long, default_value_t = 4)]
    pub small_kib: usize,
    /// Parallel clients pushing small blobs.
    #[arg(long, default_value_t = 8)]
    pub small_parallel: usize,
    /// Connection counts for manifest GETs.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub conns: Vec<usize>,
    /// Duration of each manifest GET measurement (seconds).
    #[arg(long, default_value_t = 5.0)]
    pub manifest_secs: f64,
    /// Upper bound on manifest GETs per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    pub manifest_max: u64,
    /// Tags in the tags-list repository.
    #[arg(long, default_value_t = 10_000)]
    pub tags: u64,
    /// Page size of the tags list.
    #[arg(long, default_value_t = 100)]
    pub page: u64,
    /// Duration of each tags-list measurement (seconds; at least one full listing).
    #[arg(long, default_value_t = 5.0)]
    pub tags_secs: f64,
    /// Upper bound on full listings per tags-list measurement.
    #[arg(long, default_value_t = 200)]
    pub tags_max_walks: u64,
    /// Parallel clients tagging during setup.
    #[arg(long, default_value_t = 8)]
    pub tag_parallel: usize,
    /// Shell command that writes a fresh multi-platform OCI layout: run as
    /// `CMD DIR SEED` once per round. Without it the copy workload is skipped.
    #[arg(long)]
    pub image_cmd: Option<String>,
    /// A copy client: NAME|IN-TEMPLATE|OUT-TEMPLATE (repeat).
    #[arg(long = "copy-client")]
    pub copy_clients: Vec<CopyClient>,
    /// Scratch directory on the data disk (disk probe, OCI layouts).
    #[arg(long)]
    pub work_dir: PathBuf,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100.0)]
    pub clk_tck: f64,
    /// Hash pulled bytes and check them against the digest (costs client CPU).
    #[arg(long)]
    pub verify: bool,
    /// Run only these workloads (comma-separated: push,pull,small,manifest,tags,copy,limits).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Fail on a copy client's error (without it, the error is recorded and the run goes
    /// on: a client under development must not void a long run).
    #[arg(long)]
    pub strict: bool,
    /// Where to write the JSON lines (also echoed in short to stderr).
    #[arg(long)]
    pub out: PathBuf,
}

impl SuiteArgs {
    fn wants(&self, w: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == w)
    }
}

struct Recorder {
    out: File,
}

impl Recorder {
    fn emit(&mut self, v: Value) -> Result<()> {
        writeln!(self.out, "{v}")?;
        self.out.flush()?;
        Ok(())
    }
}

/// CPU readings before a measured step.
struct Mark {
    at: Instant,
    server: Option<f64>,
    client: f64,
    /// (name, pid, CPU seconds of its tree) of each backend.
    backends: Vec<(String, u32, f64)>,
}

/// Starts a measurement. First flushes every dirty page on the machine (`sync`, not
/// measured), so that no step pays for the writeback of an earlier one: Distribution
/// never fsyncs, and without this the server measured next would find up to 1 GiB of
/// its data still being written back.
fn mark(t: &Target, clk: f64, backends: &[Backend]) -> Result<Mark> {
    rustix::fs::sync();
    let backends = backends
        .iter()
        .map(|b| {
            Ok((
                b.name.clone(),
                b.pid,
                procstat::tree_cpu_seconds(b.pid, clk)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Mark {
        at: Instant::now(),
        server: t.pid.map(|p| procstat::cpu_seconds(p, clk)).transpose()?,
        client: procstat::self_cpu_seconds(clk)?,
        backends,
    })
}

/// A finished measurement: wall clock, server and client CPU, and its figures.
fn record(
    m: Mark,
    t: &Target,
    clk: f64,
    kind: &str,
    round: u32,
    workload: &str,
    mut fields: Value,
) -> Result<Value> {
    let wall = m.at.elapsed().as_secs_f64();
    let server = match (t.pid, m.server) {
        (Some(p), Some(before)) => Some(procstat::cpu_seconds(p, clk)? - before),
        _ => None,
    };
    let rss = t.pid.map(procstat::peak_rss_kib).transpose()?;
    let client = procstat::self_cpu_seconds(clk)? - m.client;
    let mut backend = serde_json::Map::new();
    for (name, pid, before) in &m.backends {
        let now = procstat::tree_cpu_seconds(*pid, clk)?;
        backend.insert(name.clone(), json!(now - before));
    }
    if let Value::Object(map) = &mut fields {
        let mut base = serde_json::Map::new();
        base.insert("kind".into(), json!(kind));
        base.insert("round".into(), json!(round));
        base.insert("target".into(), json!(t.name));
        base.insert("workload".into(), json!(workload));
        base.insert("wall_s".into(), json!(wall));
        base.insert("server_cpu_s".into(), json!(server));
        base.insert("client_cpu_s".into(), json!(client));
        base.insert("server_peak_rss_kib".into(), json!(rss));
        if !backend.is_empty() {
            base.insert("backend_cpu_s".into(), Value::Object(backend));
        }
        base.append(map);
        return Ok(Value::Object(base));
    }
    bail!("record fields must be an object")
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn brief(v: &Value) -> String {
    let g = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let value = g("value")
        .as_f64()
        .map(|x| format!("{x:.1}"))
        .unwrap_or_default();
    let cpu = g("server_cpu_s")
        .as_f64()
        .map(|x| format!("{x:.2}"))
        .unwrap_or_else(|| "-".into());
    format!(
        "[round {}] {:<12} {:<20} {:>10} {:<10} wall {:>6.2}s  server cpu {}s",
        g("round"),
        g("target").as_str().unwrap_or(""),
        g("workload").as_str().unwrap_or(""),
        value,
        g("unit").as_str().unwrap_or(""),
        g("wall_s").as_f64().unwrap_or(0.0),
        cpu
    )
}

/// Runs the whole schedule.
pub async fn run(a: SuiteArgs) -> Result<()> {
    std::fs::create_dir_all(&a.work_dir)?;
    let mut rec = Recorder {
        out: File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?,
    };
    let clk = a.clk_tck;
    let blob_len = a.blob_mib << 20;
    eprintln!("generating a {} MiB blob", a.blob_mib);
    let mut blob = data::random_bytes(1, blob_len.max(1 << 20));
    blob.truncate(blob_len);

    rec.emit(json!({"kind": "config", "rounds": a.rounds, "blob_mib": a.blob_mib, "chunk_mib": a.chunk_mib,
        "range_mib": a.range_mib, "small_count": a.small_count, "small_kib": a.small_kib,
        "small_parallel": a.small_parallel, "conns": a.conns, "manifest_secs": a.manifest_secs,
        "tags": a.tags, "page": a.page, "tags_secs": a.tags_secs,
        "targets": a.targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "copy_clients": a.copy_clients.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "image": a.image_cmd.is_some(),
        "backends": a.backends.iter().map(|b| b.name.clone()).collect::<Vec<_>>()}))?;

    // Setup, once per target: the manifest to GET and the repository of many tags.
    let mut manifest_len = Vec::new();
    for t in &a.targets {
        let m = if a.wants("manifest") {
            let m = w::setup_image(t.addr, "bench/manifest", 1).await?;
            w::put_manifest(
                &mut Conn::new(t.addr, 64 << 10),
                "bench/manifest",
                "latest",
                &m,
            )
            .await?;
            m.len() as u64
        } else {
            0
        };
        manifest_len.push(m);
        if a.wants("tags") {
            let image = Arc::new(w::setup_image(t.addr, "bench/tags", 2).await?);
            let mk = mark(t, clk, &a.backends)?;
            w::setup_tags(t.addr, "bench/tags", image, a.tags, a.tag_parallel).await?;
            let wall = mk.at.elapsed().as_secs_f64();
            let v = record(
                mk,
                t,
                clk,
                "setup",
                0,
                "tag_put",
                json!({
                "ops": a.tags, "value": a.tags as f64 / wall, "unit": "tags/s"}),
            )?;
            eprintln!("{}", brief(&v));
            rec.emit(v)?;
        }
    }

    for round in 1..=a.rounds {
        // A B in odd rounds, B A in even ones.
        let mut order: Vec<usize> = (0..a.targets.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        let seed =
            |ti: usize, kind: u32| (u64::from(round) << 32) | ((ti as u64) << 8) | u64::from(kind);

        if a.wants("push") || a.wants("pull") {
            let mut mono = vec![String::new(); a.targets.len()];
            let mut chunked = vec![String::new(); a.targets.len()];
            for &ti in &order {
                data::stamp(&mut blob, round, ti as u32, 0);
                mono[ti] = data::digest(&blob);
                let t = &a.targets[ti];
                let mk = mark(t, clk, &a.backends)?;
                w::push_monolithic(t.addr, "bench/blob", &blob, &mono[ti])
                    .await
                    .context("monolithic push")?;
                let wall = mk.at.elapsed().as_secs_f64();
                emit(
                    &mut rec,
                    record(
                        mk,
                        t,
                        clk,
                        "workload",
                        round,
                        "push_mono",
                        json!({
                    "ops": 1, "bytes": blob.len(), "value": mbps(blob.len() as u64, wall), "unit": "MB/s"}),
                    )?,
                )?;
            }
            if a.wants("push") {
                for &ti in &order {
                    data::stamp(&mut blob, round, ti as u32, 1);
                    chunked[ti] = data::digest(&blob);
                    let t = &a.targets[ti];
                    let mk = mark(t, clk, &a.backends)?;
                    w::push_chunked(t.addr, "bench/blob", &blob, &chunked[ti], a.chunk_mib << 20)
                        .await
                        .context("chunked push")?;
                    let wall = mk.at.elapsed().as_secs_f64();
                    emit(
                        &mut rec,
                        record(
                            mk,
                            t,
                            clk,
                            "workload",
                            round,
                            "push_chunked",
                            json!({
                        "ops": 1, "bytes": blob.len(), "value": mbps(blob.len() as u64, wall), "unit": "MB/s"}),
                        )?,
                    )?;
                }
            }
            if a.wants("pull") {
                for (name, range) in [
                    ("pull_full", None),
                    ("pull_ranged", Some(a.range_mib << 20)),
                ] {
                    for &ti in &order {
                        let t = &a.targets[ti];
                        let mk = mark(t, clk, &a.backends)?;
                        let n = w::pull(
                            t.addr,
                            "bench/blob",
                            &mono[ti],
                            blob.len() as u64,
                            range,
                            a.verify,
                        )
                        .await
                        .context(name)?;
                        let wall = mk.at.elapsed().as_secs_f64();
                        let reqs = range
                            .map(|r| (blob.len() as u64).div_ceil(r.max(1)))
                            .unwrap_or(1);
                        emit(
                            &mut rec,
                            record(
                                mk,
                                t,
                                clk,
                                "workload",
                                round,
                                name,
                                json!({
                            "ops": 1, "requests": reqs, "bytes": n, "value": mbps(n, wall), "unit": "MB/s"}),
                            )?,
                        )?;
                    }
                }
            }
            for &ti in &order {
                for d in [&mono[ti], &chunked[ti]] {
                    if !d.is_empty() {
                        w::delete_blob(a.targets[ti].addr, "bench/blob", d).await?;
                    }
                }
            }
        }

        if a.wants("small") {
            for &ti in &order {
                let blobs: Vec<(Vec<u8>, String)> = (0..a.small_count)
                    .map(|i| {
                        let b =
                            data::random_bytes(seed(ti, 2) ^ ((i as u64) << 40), a.small_kib << 10);
                        let d = data::digest(&b);
                        (b, d)
                    })
                    .collect();
                let t = &a.targets[ti];
                let mk = mark(t, clk, &a.backends)?;
                w::small_blobs(t.addr, "bench/small", Arc::new(blobs), a.small_parallel)
                    .await
                    .context("small blobs")?;
                let wall = mk.at.elapsed().as_secs_f64();
                emit(
                    &mut rec,
                    record(
                        mk,
                        t,
                        clk,
                        "workload",
                        round,
                        "small_blobs",
                        json!({
                    "ops": a.small_count, "bytes": a.small_count * (a.small_kib << 10),
                    "value": a.small_count as f64 / wall, "unit": "blobs/s"}),
                    )?,
                )?;
            }
        }

        if a.wants("manifest") {
            for &conns in &a.conns {
                for &ti in &order {
                    let t = &a.targets[ti];
                    let mk = mark(t, clk, &a.backends)?;
                    let r = w::manifest_get(
                        t.addr,
                        "/v2/bench/manifest/manifests/latest",
                        conns,
                        Duration::from_secs_f64(a.manifest_secs),
                        a.manifest_max,
                        manifest_len[ti],
                    )
                    .await
                    .context("manifest GET")?;
                    let wall = mk.at.elapsed().as_secs_f64();
                    emit(
                        &mut rec,
                        record(
                            mk,
                            t,
                            clk,
                            "workload",
                            round,
                            &format!("manifest_get_c{conns}"),
                            json!({
                        "ops": r.requests, "value": r.requests as f64 / wall, "unit": "req/s",
                        "p50_us": w::quantile(&r.latencies_us, 0.50),
                        "p99_us": w::quantile(&r.latencies_us, 0.99),
                        "max_us": r.latencies_us.last().copied().unwrap_or(0)}),
                        )?,
                    )?;
                }
            }
        }

        if a.wants("tags") {
            for &ti in &order {
                let t = &a.targets[ti];
                let mk = mark(t, clk, &a.backends)?;
                let r = w::tag_walks(
                    t.addr,
                    "bench/tags",
                    a.page,
                    Duration::from_secs_f64(a.tags_secs),
                    a.tags_max_walks,
                    a.tags,
                )
                .await
                .context("tags list")?;
                let wall = mk.at.elapsed().as_secs_f64();
                emit(
                    &mut rec,
                    record(
                        mk,
                        t,
                        clk,
                        "workload",
                        round,
                        "tags_list",
                        json!({
                    "ops": r.pages, "walks": r.walks, "tags_received": r.tags,
                    "value": r.pages as f64 / wall, "unit": "pages/s",
                    "listings_per_s": r.walks as f64 / wall}),
                    )?,
                )?;
            }
        }

        if a.wants("copy") {
            if let Some(cmd) = &a.image_cmd {
                copy_round(&a, &mut rec, cmd, round, &order).await?;
            }
        }

        if a.wants("limits") {
            measure_limits(&a, &mut rec, round, &blob)?;
        }
    }

    for t in &a.targets {
        if let Some(pid) = t.pid {
            rec.emit(json!({"kind": "server", "target": t.name,
                "cpu_s": procstat::cpu_seconds(pid, clk)?,
                "peak_rss_kib": procstat::peak_rss_kib(pid)?}))?;
        }
    }
    Ok(())
}

fn emit(rec: &mut Recorder, v: Value) -> Result<()> {
    eprintln!("{}", brief(&v));
    rec.emit(v)
}

fn fill(template: &str, src: &str, registry: &str, repo: &str, out: &str) -> String {
    template
        .replace("{src}", src)
        .replace("{registry}", registry)
        .replace("{repo}", repo)
        .replace("{out}", out)
}

async fn sh(cmd: &str) -> Result<()> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "`{cmd}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(2000)
                .collect::<String>()
        );
    }
    Ok(())
}

/// A fresh image per round (so no client cache or registry already holds its blobs),
/// copied by every client into every target and back out.
async fn copy_round(
    a: &SuiteArgs,
    rec: &mut Recorder,
    cmd: &str,
    round: u32,
    order: &[usize],
) -> Result<()> {
    let clk = a.clk_tck;
    let src = a.work_dir.join(format!("image-r{round}"));
    let _ = std::fs::remove_dir_all(&src);
    sh(&format!("{cmd} {} {round}", src.display())).await?;
    let size = dir_size(&src)?;
    for client in &a.copy_clients {
        for &ti in order {
            let t = &a.targets[ti];
            let registry = t.addr.to_string();
            let repo = format!("bench/copy-{}-r{round}", client.name);
            let out = a
                .work_dir
                .join(format!("out-{}-{}-r{round}", client.name, t.name));
            let _ = std::fs::remove_dir_all(&out);
            let (s, o) = (src.display().to_string(), out.display().to_string());
            for (name, template) in [("copy_in", &client.copy_in), ("copy_out", &client.copy_out)] {
                let mk = mark(t, clk, &a.backends)?;
                let result = sh(&fill(template, &s, &registry, &repo, &o))
                    .await
                    .with_context(|| format!("{name} with {}", client.name));
                if let Err(e) = result {
                    if a.strict {
                        return Err(e);
                    }
                    eprintln!(
                        "[round {round}] {} {name}_{} FAILED: {e:#}",
                        t.name, client.name
                    );
                    rec.emit(json!({"kind": "error", "round": round, "target": t.name,
                        "workload": format!("{name}_{}", client.name), "error": format!("{e:#}")}))?;
                    break;
                }
                let wall = mk.at.elapsed().as_secs_f64();
                emit(
                    rec,
                    record(
                        mk,
                        t,
                        clk,
                        "workload",
                        round,
                        &format!("{name}_{}", client.name),
                        json!({
                    "ops": 1, "bytes": size, "value": wall, "unit": "s", "client": client.name}),
                    )?,
                )?;
            }
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    let _ = std::fs::remove_dir_all(&src);
    Ok(())
}

fn dir_size(p: &std::path::Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(p)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

fn measure_limits(a: &SuiteArgs, rec: &mut Recorder, round: u32, blob: &[u8]) -> Result<()> {
    let sha = limits::sha256(blob);
    let disk = limits::disk_write_sync(&a.work_dir, blob)?;
    let fsyncs = limits::fsyncs_per_second(&a.work_dir, 200)?;
    let tcp = limits::loopback_tcp(blob, (blob.len() as u64 * 2).max(64 << 20))?;
    for (name, value, unit) in [
        ("sha256_one_core", sha / 1e6, "MB/s"),
        ("disk_write_fdatasync", disk / 1e6, "MB/s"),
        ("fdatasync_4k", fsyncs, "syncs/s"),
        ("loopback_tcp", tcp / 1e6, "MB/s"),
    ] {
        let v = json!({"kind": "limit", "round": round, "workload": name, "value": value, "unit": unit});
        eprintln!("[round {round}] limit {name:<22} {value:>10.1} {unit}");
        rec.emit(v)?;
    }
    Ok(())
}
