//! Memory as blob size grows: one fresh server, one blob of a given size pushed
//! monolithically, pushed again in chunks, and pulled whole; the server's peak resident
//! memory (`VmHWM`) over each of the three operations and over all of them. The peak is
//! reset before each operation (`/proc/PID/clear_refs`), so a growth is pinned to the
//! operation that caused it, not only seen at the end. The blob is generated while it is
//! sent, so the load generator's own memory stays flat too and any size fits.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use sha2::Digest as _;

use crate::data::Rng;
use crate::http::{with_query, Conn, Sink};
use crate::procstat;
use crate::suite::Target;
use crate::workloads::{self, check, location, upload_start, OCTETS};

#[derive(clap::Args)]
pub struct MemoryArgs {
    /// `NAME=ADDR@PID` of a freshly started server (loopback only).
    #[arg(long)]
    target: Target,
    /// Blob size in MiB.
    #[arg(long)]
    mib: u64,
    /// Chunk size of the chunked push, in MiB.
    #[arg(long, default_value_t = 16)]
    chunk_mib: u64,
    /// JSON-lines file the result is appended to.
    #[arg(long)]
    out: PathBuf,
}

/// `sha256:<hex>` of the `len` bytes generated from `seed`.
fn digest_of(seed: u64, len: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        rng.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

fn mb_per_s(bytes: u64, t: Instant) -> f64 {
    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
}

pub async fn run(args: MemoryArgs) -> Result<()> {
    let pid = args
        .target
        .pid
        .context("--target needs @PID to read the server's memory")?;
    let addr = args.target.addr;
    let len = args.mib.max(1) << 20;
    let chunk = (args.chunk_mib.max(1) << 20) as usize;
    let repo = "bench/memory";
    let rss_before = procstat::peak_rss_kib(pid)?;
    let mut whole = rss_before;
    // Each operation's peak, then the peak reset for the next one (when the kernel lets
    // us; otherwise every phase reports the peak so far, which is still an upper bound).
    let phase_peak = |whole: &mut u64| -> Result<(u64, u64)> {
        let peak = procstat::peak_rss_kib(pid)?;
        let after = procstat::rss_kib(pid)?;
        *whole = (*whole).max(peak);
        procstat::reset_peak_rss(pid);
        Ok((peak, after))
    };
    procstat::reset_peak_rss(pid);

    // Monolithic: POST, then one PUT streaming the whole blob.
    let (seed_mono, seed_chunked) = (1_000 + args.mib, 2_000 + args.mib);
    let digest = digest_of(seed_mono, len);
    let mut c = Conn::new(addr, 64 << 10);
    let mut body = Vec::new();
    let t = Instant::now();
    let loc = upload_start(&mut c, repo, &mut body).await?;
    let mut rng = Rng::new(seed_mono);
    body.clear();
    let r = c
        .send_generated(
            "PUT",
            &with_query(&loc, "digest", &digest),
            &[OCTETS],
            len,
            |b| rng.fill(b),
            Sink::Collect(&mut body),
        )
        .await?;
    check(&r, 201, "monolithic PUT", &body)?;
    let push_mbps = mb_per_s(len, t);
    let (push_peak, push_after) = phase_peak(&mut whole)?;

    // Chunked: PATCH per chunk, then PUT.
    let digest_chunked = digest_of(seed_chunked, len);
    let t = Instant::now();
    let mut loc = upload_start(&mut c, repo, &mut body).await?;
    let mut rng = Rng::new(seed_chunked);
    let mut part = vec![0u8; chunk];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from(len - at).unwrap_or(usize::MAX).min(chunk);
        rng.fill(&mut part[..n]);
        let range = format!("{}-{}", at, at + n as u64 - 1);
        body.clear();
        let r = c
            .send(
                "PATCH",
                &loc,
                &[OCTETS, ("Content-Range", &range)],
                &part[..n],
                Sink::Collect(&mut body),
            )
            .await?;
        check(&r, 202, "PATCH of a chunk", &body)?;
        loc = location(&r, "PATCH of a chunk")?;
        at += n as u64;
    }
    body.clear();
    let r = c
        .send(
            "PUT",
            &with_query(&loc, "digest", &digest_chunked),
            &[],
            b"",
            Sink::Collect(&mut body),
        )
        .await?;
    check(&r, 201, "closing PUT", &body)?;
    let chunked_mbps = mb_per_s(len, t);
    let (chunked_peak, chunked_after) = phase_peak(&mut whole)?;

    // Pull whole.
    let t = Instant::now();
    let got = workloads::pull(addr, repo, &digest, len, None, false).await?;
    ensure!(got == len, "pulled {got} bytes of {len}");
    let pull_mbps = mb_per_s(len, t);
    let (pull_peak, pull_after) = phase_peak(&mut whole)?;

    let peak = whole;
    let line = serde_json::json!({
        "kind": "memory",
        "target": args.target.name,
        "blob_mib": args.mib,
        "peak_rss_kib": peak,
        "rss_before_kib": rss_before,
        "push_peak_rss_kib": push_peak,
        "chunked_peak_rss_kib": chunked_peak,
        "pull_peak_rss_kib": pull_peak,
        "push_after_rss_kib": push_after,
        "chunked_after_rss_kib": chunked_after,
        "pull_after_rss_kib": pull_after,
        "push_MBps": push_mbps,
        "chunked_MBps": chunked_mbps,
        "pull_MBps": pull_mbps,
    });
    let mib = |kib: u64| kib as f64 / 1024.0;
    eprintln!(
        "[memory] {:<12} {:>6} MiB blob: peak RSS {:>7.1} MiB (push {:.1}, chunked {:.1}, pull {:.1} MiB; \
         push {:.0}, chunked {:.0}, pull {:.0} MB/s)",
        args.target.name,
        args.mib,
        mib(peak),
        mib(push_peak),
        mib(chunked_peak),
        mib(pull_peak),
        push_mbps,
        chunked_mbps,
        pull_mbps
    );
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    writeln!(f, "{line}")?;
    Ok(())
}
