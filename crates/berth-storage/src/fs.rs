//! The filesystem blob store: the embedded default.
//!
//! Layout under the root directory:
//! - `blobs/<algorithm>/<hex>`: committed, verified, immutable blobs (flat, as in an OCI
//!   image layout; a data directory of the older `blobs/<algorithm>/<xx>/<hex>` layout is
//!   moved over when opened);
//! - `uploads/<id>`: the bytes of an upload session so far;
//! - `reserve`: space held back for a full disk (see below).
//!
//! Writes are hashed as they arrive, in 1 MiB batches on the blocking pool, so memory
//! stays flat whatever the blob size; every 64 MiB an `fdatasync` starts in the background
//! (`BackgroundSync`). A commit fdatasyncs the upload file, renames it into
//! place and fsyncs the directory: a blob path exists only with its full, verified bytes.
//! Concurrent commits share directory fsyncs (`DirSync`): one fsync that starts after a
//! rename makes it durable, so eight parallel pushers pay for far fewer than eight.
//! The hash state of an upload lives in memory; after a restart it is rebuilt by reading
//! the upload file once.
//!
//! # A full disk
//!
//! Freeing space through the API needs a few writes: a deletion is recorded in the
//! metadata database (its WAL grows) before the blob's file is unlinked. On a full disk
//! those writes would fail too, and nothing could be deleted. The store therefore keeps
//! [`RESERVE_FILE`], a file of [`RESERVE_BYTES`] allocated on the same filesystem as the
//! data directory (where the SQLite database lives by default). When one of its own
//! writes fails for want of space, or when [`BlobStore::release_reserve`] is called
//! because the database found the disk full, the file is deleted, which gives deletions
//! room to be recorded. While the reserve is released, every write that adds bytes
//! (starting or appending to an upload) first takes the reserve back, and is refused
//! with [`StorageError::Full`] (without writing anything) while less than twice the
//! reserve is free: new pushes cannot eat the space kept for deletions, and the registry
//! accepts pushes again by itself once space was freed.
//!
//! Listing ([`BlobStore::list`]) reads the whole algorithm directory for every page, since
//! a directory has no order to resume from: it keeps only the `limit + 1` smallest names in
//! memory and stats only the blobs it returns, but a full walk of `n` blobs in pages of
//! `limit` reads `n * n / limit` directory entries. Walkers such as a garbage collector
//! should ask for pages of thousands.
//!
//! Blobs moved aside by [`BlobStore::quarantine`] go to `quarantine/<algorithm>-<hex>`
//! (see the `scrub` submodule).

mod scrub;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use berth_oci::{Algorithm, Digest, Hasher};
use futures_util::StreamExt;
use tokio::io::AsyncSeekExt;
use tokio::task::spawn_blocking;

use crate::{BlobBody, BlobInfo, BlobPage, BlobStore, ByteStream, LocalBlob, StorageError};

/// Bytes gathered before one write+hash step on the blocking pool.
const BATCH: usize = 1 << 20;
/// Uploads up to this size gather their bytes in a buffer that grows as they arrive;
/// larger ones get [`BATCH`]-sized buffers at once.
const SMALL: usize = 64 << 10;
/// Read buffer when serving a blob.
const READ_CHUNK: usize = 1 << 20;
/// Bytes of a blob about to be served that are read ahead when it is opened.
const READ_AHEAD: u64 = 32 << 20;

/// In-memory state of an upload whose bytes are all written and hashed.
struct UploadState {
    size: u64,
    hasher: Hasher,
    /// Bytes written since the last `fdatasync` started (carried across chunks, so a
    /// chunked upload is flushed while it streams just like a monolithic one).
    unsynced: u64,
    /// The `fdatasync` running in the background, if any.
    flushing: Option<BackgroundSync>,
}

/// An `fdatasync` of an upload file running on another thread while the upload goes on
/// writing, so that the disk works while the next bytes are received and hashed instead
/// of the whole pipeline stopping for each flush.
///
/// It only paces the writes (at most two [`SYNC_EVERY`] steps of an upload are dirty at a
/// time, and the commit's own `fdatasync` finds little left to write); durability still
/// comes from the commit, which waits for it and then syncs the file once more.
struct BackgroundSync(std::sync::mpsc::Receiver<std::io::Result<()>>);

/// How upload files are made durable: [`std::fs::File::sync_data`], except in tests that
/// make it fail.
type SyncFn = fn(&std::fs::File) -> std::io::Result<()>;

fn sync_data(file: &std::fs::File) -> std::io::Result<()> {
    file.sync_data()
}

/// The context of every error of an upload's `fdatasync` (see [`discard_unsynced`]).
const SYNCING: &str = "syncing an upload";

/// After a failed `fdatasync` the page cache may still hold bytes that the disk lost, and
/// the kernel has marked them clean: a later sync would report success without writing
/// them. An upload whose sync failed can therefore not be trusted: its file is deleted
/// (the client starts the upload over) instead of being resumed or committed.
fn discard_unsynced(path: &Path, e: StorageError) -> StorageError {
    // Whatever the class of the failure (an fdatasync may also report ENOSPC).
    if e.io_context() == Some(SYNCING) {
        if let Err(rm) = std::fs::remove_file(path) {
            if rm.kind() != std::io::ErrorKind::NotFound {
                tracing::error!(path = %path.display(), error = %rm, "cannot delete an upload whose sync failed");
            }
        }
    }
    e
}

impl BackgroundSync {
    /// Starts syncing `file` (through a duplicate of its descriptor) with `sync`.
    fn start(file: &std::fs::File, sync: SyncFn) -> Result<BackgroundSync, StorageError> {
        // Not a failed sync (nothing was lost): out of descriptors, say.
        let dup = file
            .try_clone()
            .map_err(StorageError::io("starting an upload sync"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job = move || {
            // The receiver is gone only when the upload was dropped: nothing to report.
            let _ = tx.send(sync(&dup));
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(job);
            }
            Err(_) => job(),
        }
        Ok(BackgroundSync(rx))
    }

    /// Blocks until the sync has finished; its error, if any.
    fn wait(self) -> Result<(), StorageError> {
        match self.0.recv() {
            Ok(result) => result.map_err(StorageError::io(SYNCING)),
            Err(_) => Err(StorageError::from_io(
                SYNCING,
                std::io::Error::other("the background sync stopped without a result"),
            )),
        }
    }
}

/// Group fsync of one directory: callers whose rename finished before an fsync started
/// are all covered by it, so concurrent commits wait for one shared fsync instead of
/// issuing one each. A commit announces itself ([`DirSync::begin`]) before its own file
/// sync; the caller that starts a directory fsync first waits (at most [`GATHER`]) for
/// the commits announced so far to finish their renames, so that one fsync covers them.
/// A lone commit never waits.
#[derive(Default)]
struct DirSync {
    state: Mutex<DirSyncState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct DirSyncState {
    /// Commits announced but not yet renamed.
    pending: u64,
    /// Renames registered so far (a ticket number each).
    requested: u64,
    /// Every ticket up to this one is covered by a finished fsync.
    synced: u64,
    running: bool,
}

/// Longest wait for announced commits before a directory fsync starts.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// A commit announced to a [`DirSync`]; withdrawn when dropped unsynced.
struct Announced<'a> {
    dir_sync: &'a DirSync,
    done: bool,
}

impl DirSync {
    fn lock(&self) -> std::sync::MutexGuard<'_, DirSyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces a commit that will rename a file into the directory soon.
    fn begin(&self) -> Announced<'_> {
        self.lock().pending += 1;
        Announced {
            dir_sync: self,
            done: false,
        }
    }
}

impl Announced<'_> {
    /// Makes this commit's rename (done before the call) durable. Blocking.
    fn sync(mut self, dir: &Path) -> Result<(), StorageError> {
        self.done = true;
        let ds = self.dir_sync;
        let mut st = ds.lock();
        st.pending -= 1;
        st.requested += 1;
        let ticket = st.requested;
        ds.changed.notify_all();
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if !st.running {
                st.running = true;
                let deadline = std::time::Instant::now() + GATHER;
                while st.pending > 0 {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    st = ds
                        .changed
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                let target = st.requested;
                drop(st);
                let result = std::fs::File::open(dir).and_then(|d| d.sync_all());
                st = ds.lock();
                st.running = false;
                if result.is_ok() {
                    st.synced = st.synced.max(target);
                }
                ds.changed.notify_all();
                // On failure the waiters try again themselves; this caller reports it.
                return result.map_err(StorageError::io("syncing a blob directory"));
            }
            st = ds.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.dir_sync.lock().pending -= 1;
            self.dir_sync.changed.notify_all();
        }
    }
}

/// Name of the reserve file in the store's root directory.
pub const RESERVE_FILE: &str = "reserve";

/// Size of the reserve: room for the metadata writes of many deletions (a few database
/// pages each, plus their audit rows) on a full disk.
pub const RESERVE_BYTES: u64 = 4 << 20;

/// What the reserve file is being written for, in errors.
const RESERVING: &str = "reserving space for deletions";

/// Space held back for deletions on a full disk (see the module docs).
struct Reserve {
    path: PathBuf,
    size: u64,
    /// The file is absent (released, or never made for want of space); writes must take
    /// it back before adding bytes.
    released: AtomicBool,
}

impl Reserve {
    /// The reserve at `path`, made now if the disk has room (otherwise it stays
    /// released: a store on a full disk still opens, so that space can be freed).
    fn open(path: PathBuf, size: u64) -> Result<Reserve, StorageError> {
        let reserve = Reserve {
            path,
            size,
            released: AtomicBool::new(true),
        };
        match reserve.fill() {
            Ok(()) => reserve.released.store(false, Ordering::SeqCst),
            Err(StorageError::Full { .. }) => tracing::warn!(
                path = %reserve.path.display(),
                "the disk is full: no space is held back for deletions until some is freed"
            ),
            Err(e) => return Err(e),
        }
        Ok(reserve)
    }

    /// Makes the reserve file hold `size` allocated bytes. Blocking. On failure nothing
    /// is left of it.
    fn fill(&self) -> Result<(), StorageError> {
        use std::os::unix::fs::MetadataExt;
        let made = (|| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)?;
            // Allocated blocks, not the length: a sparse file holds no space.
            if file.metadata()?.blocks().saturating_mul(512) >= self.size {
                return Ok(());
            }
            allocate(&file, self.size)?;
            file.sync_all()
        })();
        made.map_err(|e| {
            if let Err(rm) = std::fs::remove_file(&self.path) {
                if rm.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %rm, "cannot remove a partial reserve file");
                }
            }
            StorageError::from_io(RESERVING, e)
        })
    }

    /// Deletes the reserve file; whether this call released it. Blocking.
    fn release(&self) -> bool {
        if self.released.swap(true, Ordering::SeqCst) {
            return false;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                tracing::warn!(
                    bytes = self.size,
                    "the disk is full: released the space reserve so that deletions can proceed; pushes are refused until space is freed"
                );
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot release the space reserve");
                false
            }
        }
    }

    /// Before a write that adds bytes: takes a released reserve back, or refuses the
    /// write with `Full` while the disk has less than twice the reserve free. Blocking.
    ///
    /// Twice, not once: the space a release freed always fits the reserve again, and
    /// taking it back at once would leave the next write to fail and release it again,
    /// with nothing ever left over for deletions. Waiting for as much again to be free
    /// keeps the released space for them until something was actually deleted.
    fn restore(&self) -> Result<(), StorageError> {
        if !self.released.load(Ordering::SeqCst) {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let stat =
            rustix::fs::statvfs(dir).map_err(|e| StorageError::from_io(RESERVING, e.into()))?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if free < self.size.saturating_mul(2) {
            return Err(StorageError::from_io(
                RESERVING,
                std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
            ));
        }
        self.fill()?;
        if self.released.swap(false, Ordering::SeqCst) {
            tracing::info!(
                bytes = self.size,
                "space is available again: the space reserve is back"
            );
        }
        Ok(())
    }
}

/// Allocates `len` bytes to `file`: `fallocate` where the filesystem has it, written
/// zeros elsewhere.
fn allocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => return Ok(()),
        Err(e) if e != rustix::io::Errno::OPNOTSUPP && e != rustix::io::Errno::NOSYS => {
            return Err(e.into())
        }
        Err(_) => {}
    }
    let zeros = vec![0u8; 64 << 10];
    let mut left = len;
    let mut w = file;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        w.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Blobs as files under one directory.
pub struct FsBlobStore {
    root: PathBuf,
    /// One group fsync per algorithm directory.
    dir_sync: [Arc<DirSync>; 2],
    /// One async lock per active upload, holding its hash state once known.
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<UploadState>>>>>,
    /// Bytes of an upload written between two background syncs ([`SYNC_EVERY`]).
    sync_every: u64,
    /// `fdatasync` of upload files.
    sync: SyncFn,
    /// Batch buffers of finished appends, for the next ones.
    batches: BatchPool,
    /// Space held back for deletions on a full disk.
    reserve: Arc<Reserve>,
}

/// A few [`BATCH`]-sized buffers kept between appends, so that a chunked upload (one
/// append per `PATCH`) or a series of pushes reuses the same memory instead of
/// allocating, faulting in and freeing two buffers per request.
#[derive(Default)]
struct BatchPool(Mutex<Vec<Vec<u8>>>);

/// Buffers a [`BatchPool`] keeps: two per upload appending at the same time.
const POOLED_BATCHES: usize = 4;

impl BatchPool {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() < BATCH {
            return;
        }
        buf.clear();
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOLED_BATCHES {
            pool.push(buf);
        }
    }
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore, StorageError> {
        let root = root.into();
        for sub in ["blobs/sha256", "blobs/sha512", "uploads"] {
            std::fs::create_dir_all(root.join(sub))
                .map_err(StorageError::io("creating the data directory"))?;
        }
        for alg in ["sha256", "sha512"] {
            flatten_shards(&root.join("blobs").join(alg))?;
        }
        let reserve = Arc::new(Reserve::open(root.join(RESERVE_FILE), RESERVE_BYTES)?);
        Ok(FsBlobStore {
            reserve,
            root,
            dir_sync: Default::default(),
            uploads: Mutex::new(HashMap::new()),
            sync_every: SYNC_EVERY,
            sync: sync_data,
            batches: BatchPool::default(),
        })
    }

    /// The same store syncing uploads every `bytes` (tests: many syncs from small uploads).
    #[cfg(test)]
    fn with_sync_every(mut self, bytes: u64) -> FsBlobStore {
        self.sync_every = bytes;
        self
    }

    /// The same store keeping a reserve of `bytes` (tests: a reserve that cannot fit).
    #[cfg(test)]
    fn with_reserve(mut self, bytes: u64) -> Result<FsBlobStore, StorageError> {
        let path = self.root.join(RESERVE_FILE);
        let _ = std::fs::remove_file(&path);
        self.reserve = Arc::new(Reserve::open(path, bytes)?);
        Ok(self)
    }

    /// Takes a released reserve back before bytes are added (see [`Reserve::restore`]).
    async fn restore_reserve(&self) -> Result<(), StorageError> {
        if !self.reserve.released.load(Ordering::SeqCst) {
            return Ok(());
        }
        let reserve = self.reserve.clone();
        blocking(move || reserve.restore()).await
    }

    /// Releases the reserve when `result` failed for want of space.
    async fn note<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e @ StorageError::Full { .. }) = &result {
            tracing::debug!(error = %e, "a write found the disk full");
            let reserve = self.reserve.clone();
            let _ = spawn_blocking(move || reserve.release()).await;
        }
        result
    }

    /// The same store syncing upload files with `sync` (tests: failing syncs).
    #[cfg(test)]
    fn with_sync(mut self, sync: SyncFn) -> FsBlobStore {
        self.sync = sync;
        self
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    fn dir_sync(&self, alg: Algorithm) -> Arc<DirSync> {
        match alg {
            Algorithm::Sha256 => self.dir_sync[0].clone(),
            Algorithm::Sha512 => self.dir_sync[1].clone(),
        }
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf, StorageError> {
        // Ids come from the server, but never let one escape the uploads directory.
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(StorageError::UploadUnknown(id.to_owned()));
        }
        Ok(self.root.join("uploads").join(id))
    }

    fn upload_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<Option<UploadState>>> {
        let mut map = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_owned()).or_default().clone()
    }

    fn forget_upload(&self, id: &str) {
        let mut map = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}

/// Moves blobs of the older sharded layout (`<alg>/<xx>/<hex>`) to `<alg>/<hex>`.
/// Idempotent, so a crash in the middle is finished by the next start.
fn flatten_shards(alg_dir: &Path) -> Result<(), StorageError> {
    let err = |e| StorageError::io("moving blobs to the flat layout")(e);
    let mut moved = 0u64;
    for entry in std::fs::read_dir(alg_dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name();
        let is_shard = name.len() == 2
            && name
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()));
        if !is_shard || !entry.file_type().map_err(err)?.is_dir() {
            continue;
        }
        for blob in std::fs::read_dir(entry.path()).map_err(err)? {
            let blob = blob.map_err(err)?;
            std::fs::rename(blob.path(), alg_dir.join(blob.file_name())).map_err(err)?;
            moved += 1;
        }
        std::fs::File::open(alg_dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        std::fs::remove_dir(entry.path()).map_err(err)?;
    }
    if moved > 0 {
        tracing::info!(moved, dir = %alg_dir.display(), "moved blobs to the flat layout");
    }
    Ok(())
}

/// The page of [`BlobStore::list`] from the blob directories under `blobs`.
fn list_page(blobs: &Path, after: Option<&Digest>, limit: usize) -> Result<BlobPage, StorageError> {
    let err = |e| StorageError::io("listing blobs")(e);
    // One more than asked for: whether it exists says if a following page does.
    let keep = limit.max(1).saturating_add(1);
    // The `keep` smallest digests seen so far, the largest on top. `Digest` orders by
    // algorithm then hex, which is the order of the digest strings (`sha256` < `sha512`,
    // and hex of one algorithm has one length).
    let mut smallest: std::collections::BinaryHeap<Digest> = std::collections::BinaryHeap::new();
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        if after.is_some_and(|a| a.algorithm() > alg) || smallest.len() == keep {
            // Every blob of this algorithm sorts before the cursor, or after the
            // blobs already kept.
            continue;
        }
        for entry in std::fs::read_dir(blobs.join(alg.as_str())).map_err(err)? {
            let name = entry.map_err(err)?.file_name();
            // Temporary files, shard directories of the old layout and anything else
            // that is not a blob are skipped here by their name.
            let Some(hex) = name.to_str().filter(|n| n.len() == alg.hex_len()) else {
                continue;
            };
            let Ok(digest) = format!("{}:{hex}", alg.as_str()).parse::<Digest>() else {
                continue;
            };
            if after.is_some_and(|a| &digest <= a) {
                continue;
            }
            if smallest.len() < keep {
                smallest.push(digest);
            } else if smallest.peek().is_some_and(|top| &digest < top) {
                smallest.pop();
                smallest.push(digest);
            }
        }
    }
    let mut digests = smallest.into_sorted_vec();
    let next = if digests.len() == keep {
        digests.pop();
        digests.last().cloned()
    } else {
        None
    };
    let mut blobs_out = Vec::with_capacity(digests.len());
    for digest in digests {
        let path = blobs.join(digest.algorithm().as_str()).join(digest.hex());
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            // Deleted since the directory was read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(e)),
        };
        if !meta.is_file() {
            continue;
        }
        blobs_out.push(BlobInfo {
            digest,
            size: meta.len(),
            modified: meta.modified().map_err(err)?,
        });
    }
    Ok(BlobPage {
        blobs: blobs_out,
        next,
    })
}

/// Rebuilds the hash state of an upload by reading its file.
fn rehash(path: &Path, algorithm: Algorithm) -> Result<UploadState, StorageError> {
    let mut f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StorageError::UploadUnknown(path.display().to_string()),
        _ => StorageError::from_io("opening an upload", e),
    })?;
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; BATCH];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(StorageError::io("reading an upload"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(UploadState {
        size,
        hasher,
        unsynced: size,
        flushing: None,
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    spawn_blocking(f).await.map_err(|e| StorageError::Io {
        context: "running a blocking storage task",
        source: std::io::Error::other(e.to_string()),
    })?
}

/// Bytes written between two background `fdatasync`s while an upload streams in, so
/// that the commit's final sync has little left to flush, the disk works while bytes
/// arrive, and an upload never has more than twice this much unwritten in the page cache.
const SYNC_EVERY: u64 = 64 << 20;

/// The file and hash state of an upload, moved into each blocking write step.
struct Writer {
    file: std::fs::File,
    hasher: Hasher,
    unsynced: u64,
    flushing: Option<BackgroundSync>,
    sync_every: u64,
    sync: SyncFn,
}

/// Hashes and writes one batch; returns the writer and the emptied buffer for reuse.
fn write_batch(mut w: Writer, mut batch: Vec<u8>) -> Result<(Writer, Vec<u8>), StorageError> {
    w.hasher.update(&batch);
    w.file
        .write_all(&batch)
        .map_err(StorageError::io("writing an upload"))?;
    w.unsynced += batch.len() as u64;
    batch.clear();
    if w.unsynced >= w.sync_every {
        // The previous flush has had a whole step to finish; waiting for it here is what
        // holds a writer faster than the disk back.
        if let Some(previous) = w.flushing.take() {
            previous.wait()?;
        }
        w.flushing = Some(BackgroundSync::start(&w.file, w.sync)?);
        w.unsynced = 0;
    }
    Ok((w, batch))
}

/// The upload operations that add bytes; the [`BlobStore`] methods wrap them to release
/// the reserve when they find the disk full.
impl FsBlobStore {
    async fn create(&self, id: &str) -> Result<(), StorageError> {
        let path = self.upload_path(id)?;
        self.restore_reserve().await?;
        let lock = self.upload_lock(id);
        let mut state = lock.lock().await;
        blocking(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(StorageError::io("creating an upload"))?;
            Ok(())
        })
        .await?;
        *state = Some(UploadState {
            size: 0,
            hasher: Hasher::new(Algorithm::Sha256),
            unsynced: 0,
            flushing: None,
        });
        Ok(())
    }

    async fn append(&self, id: &str, at: u64, mut data: ByteStream) -> Result<u64, StorageError> {
        let path = self.upload_path(id)?;
        self.restore_reserve().await?;
        let lock = self.upload_lock(id);
        let mut guard = lock.lock().await;
        let state = match guard.take() {
            Some(s) => s,
            None => {
                let p = path.clone();
                blocking(move || rehash(&p, Algorithm::Sha256))
                    .await
                    .map_err(|e| match e {
                        StorageError::UploadUnknown(_) => {
                            StorageError::UploadUnknown(id.to_owned())
                        }
                        e => e,
                    })?
            }
        };
        if at != state.size {
            let expected = state.size;
            *guard = Some(state);
            return Err(StorageError::OffsetMismatch { expected, got: at });
        }
        let p = path.clone();
        let file = blocking(move || {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(StorageError::io("opening an upload"))?;
            // Truncate anything a failed earlier write may have left past the hashed size
            // (only then: a truncate to the same size still costs ext4 real work).
            let len = f
                .metadata()
                .map_err(StorageError::io("reading upload metadata"))?
                .len();
            if len != at {
                f.set_len(at)
                    .map_err(StorageError::io("truncating an upload"))?;
            }
            f.seek(SeekFrom::Start(at))
                .map_err(StorageError::io("seeking in an upload"))?;
            Ok(f)
        })
        .await?;

        let mut size = state.size;
        let mut pending: Option<WriteTask> = None;
        let mut writer = Some(Writer {
            file,
            hasher: state.hasher,
            unsynced: state.unsynced,
            flushing: state.flushing,
            sync_every: self.sync_every,
            sync: self.sync,
        });
        // Received bytes are copied into one of two reused buffers (one filling while the
        // other is written) and each chunk is dropped at once: the HTTP server can then
        // reuse its read buffer instead of allocating fresh (page-faulting) memory for
        // every read while a batch is being written.
        let mut batch: Vec<u8> = self.batches.take();
        let mut spare: Option<Vec<u8>> = None;
        let mut body_error = None;
        let lost = || StorageError::Io {
            context: "writing an upload",
            source: std::io::Error::other("writer state lost"),
        };
        // Receives the next batch while the previous one is hashed and written.
        loop {
            let next = data.next().await;
            let done = match next {
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    let mut rest = &chunk[..];
                    if batch.capacity() < BATCH && batch.len() + rest.len() > SMALL {
                        // A large upload: one allocation of the final size, not a series of
                        // doublings that leave freed chunks of every size in the allocator.
                        batch.reserve_exact(BATCH - batch.len());
                    }
                    while !rest.is_empty() {
                        let take = (BATCH - batch.len()).min(rest.len());
                        batch.extend_from_slice(&rest[..take]);
                        rest = &rest[take..];
                        if batch.len() == BATCH {
                            if let Some(h) = pending.take() {
                                let (w, buf) = join_write(h)
                                    .await
                                    .map_err(|e| discard_unsynced(&path, e))?;
                                writer = Some(w);
                                spare = Some(buf);
                            }
                            let w = writer.take().ok_or_else(lost)?;
                            let full = std::mem::replace(
                                &mut batch,
                                spare.take().unwrap_or_else(|| self.batches.take()),
                            );
                            pending = Some(spawn_blocking(move || write_batch(w, full)));
                        }
                    }
                    false
                }
                Some(Err(e)) => {
                    body_error = Some(e);
                    true
                }
                None => true,
            };
            if done {
                break;
            }
        }
        if let Some(h) = pending.take() {
            let (w, buf) = join_write(h)
                .await
                .map_err(|e| discard_unsynced(&path, e))?;
            writer = Some(w);
            self.batches.give_back(buf);
        }
        if !batch.is_empty() {
            let w = writer.take().ok_or_else(lost)?;
            let (w, buf) = blocking(move || write_batch(w, batch))
                .await
                .map_err(|e| discard_unsynced(&path, e))?;
            writer = Some(w);
            batch = buf;
        }
        self.batches.give_back(batch);
        if let Some(buf) = spare {
            self.batches.give_back(buf);
        }
        let w = writer.ok_or_else(lost)?;
        *guard = Some(UploadState {
            size,
            hasher: w.hasher,
            unsynced: w.unsynced,
            flushing: w.flushing,
        });
        match body_error {
            Some(e) => Err(StorageError::Body(e)),
            None => Ok(size),
        }
    }

    async fn commit(&self, id: &str, expected: &Digest) -> Result<u64, StorageError> {
        let path = self.upload_path(id)?;
        let lock = self.upload_lock(id);
        let mut guard = lock.lock().await;
        let state = match guard.take() {
            Some(s) if expected.algorithm() == Algorithm::Sha256 => s,
            _ => {
                // Another algorithm (or a restarted server): hash the file once more.
                let p = path.clone();
                let alg = expected.algorithm();
                blocking(move || rehash(&p, alg))
                    .await
                    .map_err(|e| match e {
                        StorageError::UploadUnknown(_) => {
                            StorageError::UploadUnknown(id.to_owned())
                        }
                        e => e,
                    })?
            }
        };
        let size = state.size;
        let actual = state.hasher.clone().finish();
        if &actual != expected {
            if expected.algorithm() == Algorithm::Sha256 {
                *guard = Some(state);
            }
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let dest = self.blob_path(expected);
        let dir_sync = self.dir_sync(expected.algorithm());
        let flushing = state.flushing;
        let sync = self.sync;
        blocking(move || {
            if let Some(f) = flushing {
                f.wait().map_err(|e| discard_unsynced(&path, e))?;
            }
            let announced = dir_sync.begin();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(StorageError::io("opening an upload"))?;
            f.set_len(size)
                .map_err(StorageError::io("truncating an upload"))?;
            // fdatasync also writes the size: what reading the data back needs.
            sync(&f)
                .map_err(StorageError::io(SYNCING))
                .map_err(|e| discard_unsynced(&path, e))?;
            drop(f);
            let dir = dest.parent().ok_or(StorageError::Io {
                context: "placing a blob",
                source: std::io::Error::other("blob path has no parent"),
            })?;
            std::fs::rename(&path, &dest).map_err(StorageError::io("moving a blob into place"))?;
            announced.sync(dir)
        })
        .await?;
        drop(guard);
        self.forget_upload(id);
        Ok(size)
    }
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    async fn ping(&self) -> Result<(), StorageError> {
        // The data directory must still be there and be a directory (an unmounted volume
        // or a deleted directory makes every later write fail).
        let meta = tokio::fs::metadata(&self.root)
            .await
            .map_err(StorageError::io("checking the data directory"))?;
        if !meta.is_dir() {
            return Err(StorageError::Io {
                context: "checking the data directory",
                source: std::io::Error::other(format!(
                    "{} is not a directory",
                    self.root.display()
                )),
            });
        }
        Ok(())
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::from_io("reading blob metadata", e)),
        }
    }

    async fn verify(&self, digest: &Digest) -> Result<Option<crate::Verified>, StorageError> {
        self.verify_blob(digest).await
    }

    fn locate(&self, digest: &Digest) -> Option<String> {
        Some(self.blob_path(digest).display().to_string())
    }

    async fn quarantine(&self, digest: &Digest) -> Result<Option<String>, StorageError> {
        self.quarantine_blob(digest).await
    }

    async fn open_local(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<LocalBlob>, StorageError> {
        let path = self.blob_path(digest);
        let d = digest.clone();
        blocking(move || {
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StorageError::BlobUnknown(d))
                }
                Err(e) => return Err(StorageError::io("opening a blob")(e)),
            };
            let size = file
                .metadata()
                .map_err(StorageError::io("reading blob metadata"))?
                .len();
            // Start reading the first part ahead now, so that serving it seldom waits for
            // the disk; the kernel's own read-ahead follows the sequential reads after
            // that. Only the requested part: advice over a whole large file costs a
            // page-cache walk per request even when every page is cached. Advice only: a
            // failure changes nothing but speed.
            let r = range.unwrap_or(0..size);
            let ahead = r.end.saturating_sub(r.start).min(READ_AHEAD);
            if let Some(len) = std::num::NonZeroU64::new(ahead) {
                let _ =
                    rustix::fs::fadvise(&file, r.start, Some(len), rustix::fs::Advice::WillNeed);
            }
            Ok(Some(LocalBlob { file, size }))
        })
        .await
    }

    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobBody, StorageError> {
        let mut file = match tokio::fs::File::open(self.blob_path(digest)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::BlobUnknown(digest.clone()))
            }
            Err(e) => return Err(StorageError::io("opening a blob")(e)),
        };
        let total_size = file
            .metadata()
            .await
            .map_err(StorageError::io("reading blob metadata"))?
            .len();
        let stream: ByteStream = match range {
            Some(r) => {
                file.seek(SeekFrom::Start(r.start))
                    .await
                    .map_err(StorageError::io("seeking in a blob"))?;
                let limited = tokio::io::AsyncReadExt::take(file, r.end.saturating_sub(r.start));
                Box::pin(tokio_util::io::ReaderStream::with_capacity(
                    limited, READ_CHUNK,
                ))
            }
            None => Box::pin(tokio_util::io::ReaderStream::with_capacity(
                file, READ_CHUNK,
            )),
        };
        Ok(BlobBody { total_size, stream })
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StorageError> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io("deleting a blob")(e)),
        }
    }

    async fn list(&self, after: Option<&Digest>, limit: usize) -> Result<BlobPage, StorageError> {
        let blobs = self.root.join("blobs");
        let after = after.cloned();
        blocking(move || list_page(&blobs, after.as_ref(), limit)).await
    }

    async fn upload_create(&self, id: &str) -> Result<(), StorageError> {
        let result = self.create(id).await;
        if result.is_err() {
            // A session that was never made keeps no lock entry (one whose id was taken
            // keeps its own).
            if let Ok(path) = self.upload_path(id) {
                if !tokio::fs::try_exists(&path).await.unwrap_or(true) {
                    self.forget_upload(id);
                }
            }
        }
        self.note(result).await
    }
    async fn upload_append(
        &self,
        id: &str,
        at: u64,
        data: ByteStream,
    ) -> Result<u64, StorageError> {
        let result = self.append(id, at, data).await;
        self.note(result).await
    }
    async fn upload_size(&self, id: &str) -> Result<Option<u64>, StorageError> {
        let path = self.upload_path(id)?;
        let lock = self.upload_lock(id);
        let guard = lock.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(Some(s.size));
        }
        drop(guard);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget_upload(id);
                Ok(None)
            }
            Err(e) => Err(StorageError::io("reading upload metadata")(e)),
        }
    }

    async fn upload_commit(&self, id: &str, expected: &Digest) -> Result<u64, StorageError> {
        let result = self.commit(id, expected).await;
        self.note(result).await
    }
    async fn upload_abort(&self, id: &str) -> Result<(), StorageError> {
        let path = self.upload_path(id)?;
        let lock = self.upload_lock(id);
        let guard = lock.lock().await;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("deleting an upload")(e)),
        }
        drop(guard);
        self.forget_upload(id);
        Ok(())
    }

    async fn upload_abort_if_idle(&self, id: &str) -> Result<bool, StorageError> {
        let path = self.upload_path(id)?;
        let lock = self.upload_lock(id);
        // An append holds the lock while it receives its body, for as long as the client
        // takes: never wait for it.
        let Ok(guard) = lock.try_lock() else {
            return Ok(false);
        };
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::from_io("deleting an upload", e)),
        }
        drop(guard);
        self.forget_upload(id);
        Ok(true)
    }

    async fn release_reserve(&self) -> bool {
        let reserve = self.reserve.clone();
        spawn_blocking(move || reserve.release())
            .await
            .unwrap_or(false)
    }

    async fn upload_list(&self) -> Result<Vec<String>, StorageError> {
        let dir = self.root.join("uploads");
        blocking(move || {
            let mut ids = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(StorageError::io("listing uploads"))? {
                let entry = entry.map_err(StorageError::io("listing uploads"))?;
                if let Some(name) = entry.file_name().to_str() {
                    ids.push(name.to_owned());
                }
            }
            Ok(ids)
        })
        .await
    }
}

/// A batch being hashed and written on the blocking pool.
type WriteTask = tokio::task::JoinHandle<Result<(Writer, Vec<u8>), StorageError>>;

async fn join_write(h: WriteTask) -> Result<(Writer, Vec<u8>), StorageError> {
    h.await.map_err(|e| StorageError::Io {
        context: "writing an upload",
        source: std::io::Error::other(e.to_string()),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// An empty store in a temporary directory, for the conformance suite.
    async fn fresh_store() -> (tempfile::TempDir, FsBlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        (dir, store)
    }

    mod conformance {
        crate::blob_store_conformance!(super::fresh_store);
    }

    fn stream_of(parts: Vec<Vec<u8>>) -> ByteStream {
        Box::pin(futures_util::stream::iter(
            parts.into_iter().map(|p| Ok(Bytes::from(p))),
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploads_flushed_in_the_background_keep_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        // A sync every 64 KiB: a background sync is running during most batches and is
        // carried from one append to the next.
        let store = FsBlobStore::open(dir.path())
            .unwrap()
            .with_sync_every(64 << 10);
        let data: Vec<u8> = (0..(5u32 << 20) + 12_345)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        store.upload_create("u").await.unwrap();
        let mut at = 0usize;
        for len in [1, (1 << 20) + 7, 300_000, 3 << 20, 0, 1_000_000] {
            let end = (at + len).min(data.len());
            // Pieces of 100 KiB, as a socket would deliver them.
            let parts = data[at..end].chunks(100_000).map(<[u8]>::to_vec).collect();
            let size = store
                .upload_append("u", at as u64, stream_of(parts))
                .await
                .unwrap();
            assert_eq!(size, end as u64);
            at = end;
        }
        let rest = stream_of(vec![data[at..].to_vec()]);
        store.upload_append("u", at as u64, rest).await.unwrap();
        let d = Digest::sha256(&data);
        assert_eq!(
            store.upload_commit("u", &d).await.unwrap(),
            data.len() as u64
        );
        let mut got = Vec::new();
        let mut body = store.get(&d, None).await.unwrap();
        while let Some(chunk) = body.stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert!(got == data, "committed bytes differ from the uploaded ones");

        // An upload dropped while its sync runs leaves nothing behind.
        store.upload_create("v").await.unwrap();
        let parts = vec![data[..3 << 20].to_vec()];
        store.upload_append("v", 0, stream_of(parts)).await.unwrap();
        store.upload_abort("v").await.unwrap();
        assert_eq!(store.upload_list().await.unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_background_sync_reports_its_result_with_or_without_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("f")).unwrap();
        BackgroundSync::start(&f, sync_data)
            .unwrap()
            .wait()
            .unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = BackgroundSync::start(&f, sync_data).unwrap();
            tokio::task::spawn_blocking(move || s.wait()).await.unwrap()
        })
        .unwrap();
        let failed = BackgroundSync::start(&f, failing_sync).unwrap().wait();
        assert!(matches!(
            failed,
            Err(StorageError::Io {
                context: SYNCING,
                ..
            })
        ));
    }

    fn failing_sync(_: &std::fs::File) -> std::io::Result<()> {
        Err(std::io::Error::other("injected fdatasync failure"))
    }

    fn assert_gone(dir: &Path, id: &str) {
        assert!(!dir.join("uploads").join(id).exists(), "upload file kept");
    }

    #[tokio::test]
    async fn an_upload_whose_background_sync_failed_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path())
            .unwrap()
            .with_sync_every(64 << 10)
            .with_sync(failing_sync);
        store.upload_create("u").await.unwrap();
        let chunk = vec![7u8; 100 << 10];
        // The first append starts a background sync (which fails); the second one waits
        // for it before starting the next.
        let n = store
            .upload_append("u", 0, stream_of(vec![chunk.clone()]))
            .await
            .unwrap();
        let e = store
            .upload_append("u", n, stream_of(vec![chunk.clone()]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::Io {
                    context: SYNCING,
                    ..
                }
            ),
            "{e}"
        );
        assert_gone(dir.path(), "u");
        // Nothing to resume or commit: the client has to start over.
        assert_eq!(store.upload_size("u").await.unwrap(), None);
        let e = store
            .upload_append("u", n, stream_of(vec![chunk.clone()]))
            .await
            .unwrap_err();
        assert!(matches!(e, StorageError::UploadUnknown(_)), "{e}");
        let e = store
            .upload_commit("u", &Digest::sha256(&chunk))
            .await
            .unwrap_err();
        assert!(matches!(e, StorageError::UploadUnknown(_)), "{e}");
    }

    #[tokio::test]
    async fn a_commit_whose_sync_failed_places_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path())
            .unwrap()
            .with_sync(failing_sync);
        store.upload_create("c").await.unwrap();
        let data = b"not durable".to_vec();
        let digest = Digest::sha256(&data);
        store
            .upload_append("c", 0, stream_of(vec![data]))
            .await
            .unwrap();
        let e = store.upload_commit("c", &digest).await.unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::Io {
                    context: SYNCING,
                    ..
                }
            ),
            "{e}"
        );
        assert_gone(dir.path(), "c");
        assert_eq!(store.stat(&digest).await.unwrap(), None);
        assert_eq!(store.upload_size("c").await.unwrap(), None);
    }

    #[tokio::test]
    async fn upload_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        store.upload_create("u1").await.unwrap();
        let body: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(
            b"hello ",
        ))]));
        store.upload_append("u1", 0, body).await.unwrap();
        drop(store);
        let store = FsBlobStore::open(dir.path()).unwrap();
        assert_eq!(store.upload_size("u1").await.unwrap(), Some(6));
        let body: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(
            b"world",
        ))]));
        assert_eq!(store.upload_append("u1", 6, body).await.unwrap(), 11);
        let d = Digest::sha256(b"hello world");
        assert_eq!(store.upload_commit("u1", &d).await.unwrap(), 11);
        assert_eq!(store.upload_list().await.unwrap(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn the_sharded_layout_is_moved_to_the_flat_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::sha256(b"old layout");
        let shard = dir.path().join("blobs/sha256").join(&d.hex()[..2]);
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::write(shard.join(d.hex()), b"old layout").unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        assert_eq!(store.stat(&d).await.unwrap(), Some(10));
        assert!(!shard.exists());
        // Opening again is harmless.
        drop(store);
        let store = FsBlobStore::open(dir.path()).unwrap();
        assert_eq!(store.stat(&d).await.unwrap(), Some(10));
    }

    #[test]
    fn concurrent_directory_syncs_share_fsyncs_and_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(DirSync::default());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (sync, path) = (sync.clone(), dir.path().to_owned());
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let announced = sync.begin();
                        if i % 7 == 3 {
                            // A commit that fails before its rename withdraws.
                            drop(announced);
                            continue;
                        }
                        announced.sync(&path).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let st = sync.state.lock().unwrap();
        assert_eq!(st.requested, 16 * 17);
        assert_eq!(st.synced, 16 * 17);
        assert_eq!(st.pending, 0);
        assert!(!st.running);
    }

    #[tokio::test]
    async fn listing_skips_what_is_not_a_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let d = Digest::sha256(b"listed");
        store.upload_create("u").await.unwrap();
        let body: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(
            b"listed",
        ))]));
        store.upload_append("u", 0, body).await.unwrap();
        store.upload_commit("u", &d).await.unwrap();
        // An upload in progress, a temporary file, a name of the wrong length, upper-case
        // hex, and a directory with a blob's name.
        store.upload_create("pending").await.unwrap();
        let sha256 = dir.path().join("blobs/sha256");
        std::fs::write(sha256.join(".tmp-123"), b"x").unwrap();
        std::fs::write(sha256.join(&d.hex()[..10]), b"x").unwrap();
        std::fs::write(sha256.join(d.hex().to_uppercase()), b"x").unwrap();
        std::fs::create_dir(sha256.join(Digest::sha256(b"dir").hex())).unwrap();
        let page = store.list(None, 10).await.unwrap();
        let listed: Vec<_> = page.blobs.iter().map(|b| (&b.digest, b.size)).collect();
        assert_eq!(listed, vec![(&d, 6)]);
        assert_eq!(page.next, None);
    }

    #[tokio::test]
    async fn upload_ids_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.upload_create("../x").await,
            Err(StorageError::UploadUnknown(_))
        ));
    }

    /// A body that sends `first` and then waits for `rest` (for as long as its sender
    /// lives, as a stalled client does).
    fn stalled_body(first: &'static [u8]) -> (tokio::sync::mpsc::Sender<Bytes>, ByteStream) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let head = futures_util::stream::iter([Ok(Bytes::from_static(first))]);
        let tail = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok(b), rx))
        });
        (tx, Box::pin(head.chain(tail)))
    }

    #[tokio::test]
    async fn abort_if_idle_skips_an_upload_whose_append_is_under_way() {
        let (dir, store) = fresh_store().await;
        let store = Arc::new(store);
        store.upload_create("busy").await.unwrap();
        store.upload_create("idle").await.unwrap();
        let (tx, body) = stalled_body(b"first bytes");
        let appending = {
            let store = store.clone();
            tokio::spawn(async move { store.upload_append("busy", 0, body).await })
        };
        // Until the append holds the upload, an abort would still find it idle.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.upload_lock("busy").try_lock().is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the append never started"
            );
            tokio::task::yield_now().await;
        }
        let answered = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            store.upload_abort_if_idle("busy"),
        )
        .await
        .expect("abort_if_idle waited for a busy upload");
        assert!(!answered.unwrap());
        assert!(
            dir.path().join("uploads/busy").exists(),
            "the busy upload was touched"
        );
        assert!(store.upload_abort_if_idle("idle").await.unwrap());
        assert_gone(dir.path(), "idle");
        assert!(store.upload_abort_if_idle("never").await.unwrap());
        // Once the client finishes, the upload is intact and can be dropped.
        tx.send(Bytes::from_static(b", then the rest"))
            .await
            .unwrap();
        drop(tx);
        assert_eq!(appending.await.unwrap().unwrap(), 26);
        assert_eq!(store.upload_size("busy").await.unwrap(), Some(26));
        assert!(store.upload_abort_if_idle("busy").await.unwrap());
        assert_gone(dir.path(), "busy");
    }

    #[tokio::test]
    async fn the_reserve_is_made_released_once_and_taken_back_by_the_next_write() {
        use std::os::unix::fs::MetadataExt;
        let (dir, store) = fresh_store().await;
        let reserve = dir.path().join(RESERVE_FILE);
        let blocks = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
        assert!(blocks(&reserve) >= RESERVE_BYTES);
        assert!(store.release_reserve().await);
        assert!(!reserve.exists());
        assert!(!store.release_reserve().await, "released twice");
        store.upload_create("u").await.unwrap();
        assert!(blocks(&reserve) >= RESERVE_BYTES, "not taken back");
        // Reopening keeps the file as it is.
        drop(store);
        let _store = FsBlobStore::open(dir.path()).unwrap();
        assert!(blocks(&reserve) >= RESERVE_BYTES);
    }

    /// A tmpfs of `size` mounted on a temporary directory, unmounted when dropped; `None`
    /// (with a message) when this process may not mount one (not root, or a sandbox).
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Option<Tmpfs> {
            let dir = tempfile::tempdir().unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("skipped: cannot mount a tmpfs (needs root)");
                return None;
            }
            Some(Tmpfs(dir))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[tokio::test]
    async fn a_full_disk_is_full_releases_the_reserve_and_refuses_writes_until_space_is_back() {
        let Some(fs) = Tmpfs::mount("4m") else {
            return;
        };
        let root = fs.0.path();
        let store = FsBlobStore::open(root)
            .unwrap()
            .with_reserve(1 << 20)
            .unwrap();
        assert!(root.join(RESERVE_FILE).exists());
        // A 4 MiB upload cannot fit next to the reserve: the write fails as Full.
        store.upload_create("big").await.unwrap();
        let e = store
            .upload_append("big", 0, stream_of(vec![vec![1u8; 4 << 20]]))
            .await
            .unwrap_err();
        assert!(matches!(e, StorageError::Full { .. }), "{e:?}");
        assert!(
            !root.join(RESERVE_FILE).exists(),
            "reserve kept on a full disk"
        );
        // Released space is for deletions: while the upload's bytes fill the disk, a new
        // upload is refused and leaves no file behind.
        let e = store.upload_create("next").await.unwrap_err();
        assert!(matches!(e, StorageError::Full { .. }), "{e:?}");
        assert_gone(root, "next");
        assert!(!root.join(RESERVE_FILE).exists());
        // Freeing space lets writes (and the reserve) back.
        store.upload_abort("big").await.unwrap();
        store.upload_create("next").await.unwrap();
        assert!(root.join(RESERVE_FILE).exists());
        let d = Digest::sha256(b"fits");
        store
            .upload_append("next", 0, stream_of(vec![b"fits".to_vec()]))
            .await
            .unwrap();
        assert_eq!(store.upload_commit("next", &d).await.unwrap(), 4);
        drop(store);
        drop(fs);
    }

    #[tokio::test]
    async fn a_store_opened_on_a_full_disk_opens_without_a_reserve() {
        let Some(fs) = Tmpfs::mount("1m") else {
            return;
        };
        let root = fs.0.path();
        std::fs::write(root.join("filler"), vec![0u8; 1 << 20]).unwrap_or(());
        let store = FsBlobStore::open(root).unwrap();
        assert!(!root.join(RESERVE_FILE).exists());
        let e = store.upload_create("u").await.unwrap_err();
        assert!(matches!(e, StorageError::Full { .. }), "{e:?}");
        drop(store);
        drop(fs);
    }
}
