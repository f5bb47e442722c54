//! The data-directory lock: one Berth process per data directory.
//!
//! Two servers on one directory would each believe their in-memory upload state and
//! group fsyncs cover every writer, and a garbage collector in one would delete blobs the
//! other is committing. [`DirLock`] takes an exclusive `flock` on `<dir>/berth.lock` and
//! writes the holder's pid into it, so that a second process fails at start with a message
//! naming the one to stop.
//!
//! `flock` locks belong to the open file description: the lock goes when the file is
//! closed (the [`DirLock`] dropped) or the process dies, so a crash never leaves a stale
//! lock behind, and a second acquisition in the same process conflicts like one from
//! another process. The file is opened close-on-exec, so child processes do not inherit
//! the lock. The file itself stays: deleting it on release would let two processes lock
//! two different files of the same name.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::StorageError;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "berth.lock";

/// An exclusive lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    /// The locked lock file; closing it releases the lock.
    _file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Locks `dir` (which must exist) for this process without waiting.
    ///
    /// [`StorageError::Locked`] when another holder has it, with that holder's pid when
    /// its lock file says it.
    pub fn acquire(dir: &Path) -> Result<DirLock, StorageError> {
        let path = dir.join(LOCK_FILE);
        // Not truncated on open: until the lock is ours, the pid in it is the holder's.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StorageError::io("opening the data directory lock"))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(StorageError::Locked {
                    path: dir.to_owned(),
                    pid: holder_pid(&mut file),
                });
            }
            Err(e) => {
                return Err(StorageError::Io {
                    context: "locking the data directory",
                    source: e.into(),
                })
            }
        }
        // The pid first, then the length: a process reading meanwhile sees the new pid on
        // the first line, never an empty file or a mix of two numbers on it.
        let pid = format!("{}\n", std::process::id());
        file.write_all_at(pid.as_bytes(), 0)
            .and_then(|()| file.set_len(pid.len() as u64))
            .map_err(StorageError::io("writing the data directory lock"))?;
        Ok(DirLock {
            _file: file,
            dir: dir.to_owned(),
        })
    }

    /// The locked data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The pid on the first line of a held lock file, if it has one. Only for the message:
/// a file being rewritten or a foreign one gives `None`.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.lines().next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        assert_eq!(first.dir(), dir.path());
        let err = DirLock::acquire(dir.path()).unwrap_err();
        match &err {
            StorageError::Locked { path, pid } => {
                assert_eq!(path, dir.path());
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!(
                "data directory {} is in use by another berth process (pid {}); stop it first",
                dir.path().display(),
                std::process::id()
            )
        );
        drop(first);
        let again = DirLock::acquire(dir.path()).unwrap();
        drop(again);
    }

    #[test]
    fn a_stale_lock_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // What a process that died holding the lock leaves: its pid, longer than ours.
        std::fs::write(dir.path().join(LOCK_FILE), "4294967295\n").unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        drop(lock);
    }

    #[test]
    fn a_holder_without_a_readable_pid_is_reported_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        std::fs::write(&path, "not a pid\n").unwrap();
        // Held through a file of our own, as a process that has not written its pid yet.
        let held = File::open(&path).unwrap();
        flock(&held, FlockOperation::NonBlockingLockExclusive).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StorageError::Locked { pid: None, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "data directory {} is in use by another berth process; stop it first",
                dir.path().display()
            )
        );
    }
}
