//! Server cost from `/proc`: CPU seconds (user + system, all threads, live and exited)
//! and peak resident memory (`VmHWM`); CPU seconds of a whole process tree (a storage
//! backend such as SeaweedFS or a PostgreSQL cluster, whose work is in its children).

use anyhow::{ensure, Context, Result};

/// CPU seconds used so far by process `pid` (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_seconds(pid: u32, clk_tck: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (has the server died?)"))?;
    parse_cpu(&stat, clk_tck)
}

/// The fields of a stat line from field 3 (state) on: the command name may contain
/// spaces and parentheses, so they start after the last ')'.
fn stat_fields(stat: &str) -> Result<Vec<&str>> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    Ok(rest.split_whitespace().collect())
}

/// Field `n` (1-based, as in proc(5)) of the fields from [`stat_fields`].
fn field(f: &[&str], n: usize) -> Result<f64> {
    Ok(f.get(n - 3)
        .with_context(|| format!("no field {n} in stat"))?
        .parse()?)
}

fn parse_cpu(stat: &str, clk_tck: f64) -> Result<f64> {
    let f = stat_fields(stat)?;
    // utime (14) + stime (15).
    Ok((field(&f, 14)? + field(&f, 15)?) / clk_tck)
}

/// CPU seconds used so far by process `root` and every process below it: for each live
/// one its own time and that of its children already reaped (cutime, cstime), so a
/// process that exited counts once, in its parent. A child that exits between two
/// readings is counted once its parent reaps it.
pub fn tree_cpu_seconds(root: u32, clk_tck: f64) -> Result<f64> {
    // pid -> (ppid, ticks)
    let mut procs: Vec<(u32, u32, f64)> = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit while the table is read.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((ppid, ticks)) = parse_tree_entry(&stat) {
            procs.push((pid, ppid, ticks));
        }
    }
    ensure!(
        procs.iter().any(|p| p.0 == root),
        "process {root} is gone (has the backend died?)"
    );
    Ok(sum_tree(&procs, root) / clk_tck)
}

/// The parent pid and utime+stime+cutime+cstime (fields 4, 14-17) of a stat line.
fn parse_tree_entry(stat: &str) -> Option<(u32, f64)> {
    let f = stat_fields(stat).ok()?;
    let ppid = field(&f, 4).ok()? as u32;
    let ticks = (14..=17).map(|n| field(&f, n).ok()).sum::<Option<f64>>()?;
    Some((ppid, ticks))
}

/// The ticks of `root` and all its descendants in `procs` (pid, ppid, ticks).
fn sum_tree(procs: &[(u32, u32, f64)], root: u32) -> f64 {
    let mut total = 0.0;
    let mut todo = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(pid) = todo.pop() {
        if !seen.insert(pid) {
            continue;
        }
        for &(p, ppid, ticks) in procs {
            if p == pid {
                total += ticks;
            }
            if ppid == pid && p != pid {
                todo.push(p);
            }
        }
    }
    total
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

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// Resets the peak resident set size of `pid` (`VmHWM`) to its current one, so that the
/// next reading is the peak of what follows. Writing `5` to `/proc/PID/clear_refs` does
/// that (Linux 4.0 and later); it needs the rights to trace `pid` (the same user, or
/// root). Whether it worked is returned; a failure leaves the peak running on, so later
/// readings are upper bounds of what they measure.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
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
    fn sums_a_tree_once() {
        // 1 -> 2 -> 3, and 4 elsewhere.
        let procs = [(1, 0, 1.0), (2, 1, 10.0), (3, 2, 100.0), (4, 9, 1000.0)];
        assert_eq!(sum_tree(&procs, 1), 111.0);
        assert_eq!(sum_tree(&procs, 2), 110.0);
        let stat = "42 (a) b) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 3 2 20 0 9 0 100 0 0";
        assert_eq!(parse_tree_entry(stat), Some((7, 305.0)));
    }

    #[test]
    fn reads_own_tree() {
        let me = std::process::id();
        assert!(tree_cpu_seconds(me, 100.0).unwrap() >= cpu_seconds(me, 100.0).unwrap());
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me, 100.0).unwrap() >= 0.0);
        assert!(peak_rss_kib(me).unwrap() > 0);
    }
}
