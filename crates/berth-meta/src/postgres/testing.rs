//! A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` from the Debian
//! `postgresql` package, on a free port of 127.0.0.1, in a temporary directory under
//! `/var/tmp`, removed afterwards. [`shared`] gives one cluster per test binary;
//! [`Cluster::fresh_database`] a new, empty database in it per test.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the cluster runs as
//! the `postgres` user (which the package creates) and owns its directory.
//!
//! Tests must not pass by skipping: when PostgreSQL is not installed, [`shared`] panics
//! with how to install it, unless `BERTH_TEST_SKIP_PG=1` says to skip (then it returns
//! `None` and says so on stderr).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// How to get PostgreSQL, for the message of a missing installation.
const INSTALL: &str = "PostgreSQL is needed by these tests: install it (Debian/Ubuntu: `apt-get install postgresql`), or set BERTH_TEST_SKIP_PG=1 to skip them";

/// The user the cluster runs as when the tests run as root.
const PG_USER: &str = "postgres";

/// A running PostgreSQL cluster; stopped and removed when dropped (or, for the shared
/// one, which is never dropped, by a watchdog when the test process exits).
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Serialises `CREATE DATABASE` (concurrent ones copying template1 can fail).
    create: Mutex<()>,
}

static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();

/// The cluster shared by the tests of this binary, started on first use; `None` only
/// when PostgreSQL is missing and `BERTH_TEST_SKIP_PG=1`.
pub fn shared() -> Option<&'static Cluster> {
    SHARED
        .get_or_init(|| {
            let cluster = Cluster::start_new()?;
            cluster.watch_parent();
            Some(cluster)
        })
        .as_ref()
}

/// A URL of a fresh database of the shared cluster (see [`shared`]).
pub fn fresh_url() -> Option<String> {
    shared().map(Cluster::fresh_database)
}

/// The directory of PostgreSQL's server binaries: the newest
/// `/usr/lib/postgresql/<version>/bin`, else `pg_config --bindir`.
fn find_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    bin.join("initdb").exists().then_some(bin)
}

fn is_root() -> bool {
    // The owner of our own process's /proc entry: no libc call needed.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A free TCP port on 127.0.0.1 (free when asked: the cluster binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Starts a new cluster of its own (for a test that stops and restarts it); `None`
    /// as [`shared`].
    pub fn start_new() -> Option<Cluster> {
        let Some(bin) = find_bin() else {
            if std::env::var("BERTH_TEST_SKIP_PG").as_deref() == Ok("1") {
                eprintln!("skipping PostgreSQL tests: PostgreSQL is not installed and BERTH_TEST_SKIP_PG=1");
                return None;
            }
            panic!("{INSTALL}");
        };
        static DIRS: AtomicU64 = AtomicU64::new(0);
        let dir = PathBuf::from(format!(
            "/var/tmp/berth-pg-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier process with the same pid is ours to replace.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        if is_root() {
            let uid = user_id(PG_USER).unwrap_or_else(|| panic!("running as root, the tests run PostgreSQL as the {PG_USER} user, which does not exist; {INSTALL}"));
            std::os::unix::fs::chown(&dir, Some(uid.0), Some(uid.1)).unwrap();
        }
        let cluster = Cluster {
            bin,
            dir,
            port: free_port(),
            create: Mutex::new(()),
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data().to_str().unwrap(),
                "-U",
                "berth",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        );
        cluster.start();
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs one of the cluster's binaries as the cluster's user; panics on failure.
    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", PG_USER, "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server (again, after [`Cluster::stop`]) on the same port and data.
    pub fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once (connections are cut, as in a crash or a failover).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a new, empty database and returns its URL.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let _one = self.create.lock().unwrap_or_else(|p| p.into_inner());
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "berth",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                &format!("CREATE DATABASE {name}"),
            ],
        );
        format!("postgres://berth@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the cluster and removes its directory once this process exits: statics
    /// are never dropped, so a watchdog shell waits for the process to end.
    fn watch_parent(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if is_root() {
            format!(
                "runuser -u {PG_USER} -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data().display()
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data().display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop()));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The uid and gid of `user`, from `/etc/passwd`.
fn user_id(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&user) && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}
