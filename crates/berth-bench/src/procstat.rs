//! Server cost from `/proc`: CPU seconds (user + system, all threads, live and exited)
//! and peak resident memory (`VmHWM`).

use anyhow::{Context, Result};

/// CPU seconds used so far by process `pid` (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_seconds(pid: u32, clk_tck: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (has the server died?)"))?;
    parse_cpu(&stat, clk_tck)
}

fn parse_cpu(stat: &str, clk_tck: f64) -> Result<f64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / clk_tck)
}

/// CPU seconds used so far by this process.
pub fn self_cpu_seconds(clk_tck: f64) -> Result<f64> {
    parse_cpu(&std::fs::read_to_string("/proc/self/stat")?, clk_tck)
}

/// Peak resident set size of `pid` in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu(stat, 100.0).unwrap(), 3.0);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me, 100.0).unwrap() >= 0.0);
        assert!(peak_rss_kib(me).unwrap() > 0);
    }
}
