//! What this machine allows, measured in the same run as the workloads: the ceilings a
//! registry cannot beat on a durable, verified push (one-core SHA-256, sequential
//! write+fdatasync) and on a pull (loopback TCP).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};

/// One-core SHA-256 throughput over `data`, in bytes per second.
pub fn sha256(data: &[u8]) -> f64 {
    let t = Instant::now();
    let d = Sha256::digest(data);
    std::hint::black_box(d);
    data.len() as f64 / t.elapsed().as_secs_f64()
}

/// Sequential write of `data` to a new file in `dir` in 1 MiB writes, then one
/// `fdatasync`: bytes per second over the whole (what a blob commit must do).
pub fn disk_write_sync(dir: &Path, data: &[u8]) -> Result<f64> {
    let path = dir.join(".berth-bench-disk-probe");
    let t = Instant::now();
    let result = (|| -> Result<()> {
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        for chunk in data.chunks(1 << 20) {
            f.write_all(chunk)?;
        }
        f.sync_data()?;
        Ok(())
    })();
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    result?;
    Ok(data.len() as f64 / secs)
}

/// Small durable writes per second: a 4 KiB append followed by `fdatasync`, `n` times.
/// Bounds any server that syncs once or more per small blob.
pub fn fsyncs_per_second(dir: &Path, n: u32) -> Result<f64> {
    let path = dir.join(".berth-bench-fsync-probe");
    let block = [0x5au8; 4096];
    let t = Instant::now();
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&path)?;
        for _ in 0..n {
            f.write_all(&block)?;
            f.sync_data()?;
        }
        Ok(())
    })();
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    result?;
    Ok(f64::from(n) / secs)
}

/// Loopback TCP throughput: `total` bytes from one thread to another over 127.0.0.1,
/// sent from `data` in 1 MiB writes, in bytes per second.
pub fn loopback_tcp(data: &[u8], total: u64) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n as u64;
        }
    });
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    let mut sent = 0u64;
    let chunk = data.len().clamp(1, 1 << 20);
    while sent < total {
        let off = (sent % data.len().max(1) as u64) as usize;
        let end = (off + chunk).min(data.len());
        let want = usize::try_from(total - sent)
            .unwrap_or(usize::MAX)
            .min(end - off);
        s.write_all(&data[off..off + want])?;
        sent += want as u64;
    }
    drop(s);
    let got = reader
        .join()
        .map_err(|_| anyhow::anyhow!("loopback reader panicked"))??;
    anyhow::ensure!(
        got == total,
        "loopback probe received {got} of {total} bytes"
    );
    Ok(total as f64 / t.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_run() {
        let data = crate::data::random_bytes(7, 4 << 20);
        assert!(sha256(&data) > 0.0);
        let dir = tempfile_dir();
        assert!(disk_write_sync(&dir, &data).unwrap() > 0.0);
        assert!(fsyncs_per_second(&dir, 3).unwrap() > 0.0);
        assert!(loopback_tcp(&data, 9 << 20).unwrap() > 0.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("berth-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
