//! Reading committed blobs back ([`BlobStore::verify`]) and moving damaged ones aside
//! ([`BlobStore::quarantine`]) in the filesystem store.
//!
//! A verification reads the blob file in [`BATCH`]-sized pieces on the blocking pool and
//! hashes them, so memory stays flat and no runtime thread waits on the disk. It reads
//! through the page cache like every other read: a scrub finds what a client would be
//! served.
//!
//! A blob is moved aside by one `rename` to `quarantine/<algorithm>-<hex>` under the
//! store's root, on the same filesystem: at every instant the blob path holds either the
//! damaged file or nothing, so a concurrent `stat` or `get` never sees half a move, and
//! the next commit of the digest renames a fresh file into the empty place. Both
//! directories are then fsynced so that the move survives a crash (were it lost, the
//! damaged file would only be found again by the next scrub).

use std::io::Read;
use std::path::{Path, PathBuf};

use berth_oci::{Algorithm, Digest, Hasher};

use super::{blocking, FsBlobStore, BATCH};
use crate::{StorageError, Verified};

/// The directory under the store's root that holds blobs moved aside.
const QUARANTINE: &str = "quarantine";

impl FsBlobStore {
    /// Where [`BlobStore::quarantine`](crate::BlobStore::quarantine) puts the blob
    /// `digest`: a flat name, so that every quarantined blob is in one directory.
    fn quarantine_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join(QUARANTINE)
            .join(format!("{}-{}", digest.algorithm().as_str(), digest.hex()))
    }

    /// [`BlobStore::verify`](crate::BlobStore::verify) of this store.
    pub(super) async fn verify_blob(
        &self,
        digest: &Digest,
    ) -> Result<Option<Verified>, StorageError> {
        let path = self.blob_path(digest);
        let algorithm = digest.algorithm();
        blocking(move || verify_file(&path, algorithm)).await
    }

    /// [`BlobStore::quarantine`](crate::BlobStore::quarantine) of this store.
    pub(super) async fn quarantine_blob(
        &self,
        digest: &Digest,
    ) -> Result<Option<String>, StorageError> {
        let from = self.blob_path(digest);
        let to = self.quarantine_path(digest);
        let place = to.display().to_string();
        let moved = blocking(move || move_aside(&from, &to)).await?;
        Ok(moved.then_some(place))
    }
}

/// Reads the file at `path` whole and hashes it with `algorithm`; `None` when there is
/// no such file.
fn verify_file(path: &Path, algorithm: Algorithm) -> Result<Option<Verified>, StorageError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("opening a blob to verify it")(e)),
    };
    // A scrub reads each blob once from start to end: tell the kernel, so that it reads
    // ahead generously. Advice only; a failure changes nothing but speed.
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; BATCH];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StorageError::io("reading a blob to verify it")(e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Some(Verified {
        size,
        actual: hasher.finish(),
    }))
}

/// Renames the blob file `from` to `to` (creating its directory) and makes the move
/// durable; `false` when `from` does not exist.
fn move_aside(from: &Path, to: &Path) -> Result<bool, StorageError> {
    let err = StorageError::io("moving a blob into quarantine");
    let no_parent = || StorageError::Io {
        context: "moving a blob into quarantine",
        source: std::io::Error::other("path has no parent directory"),
    };
    let (from_dir, to_dir) = (
        from.parent().ok_or_else(no_parent)?,
        to.parent().ok_or_else(no_parent)?,
    );
    std::fs::create_dir_all(to_dir).map_err(StorageError::io("creating the quarantine"))?;
    match std::fs::rename(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(err(e)),
    }
    for dir in [from_dir, to_dir] {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(StorageError::io("syncing a directory after a quarantine"))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlobStore, ByteStream};
    use bytes::Bytes;

    async fn put(store: &FsBlobStore, id: &str, content: &[u8]) -> Digest {
        let d = Digest::sha256(content);
        let body: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::copy_from_slice(
            content,
        ))]));
        store.upload_create(id).await.unwrap();
        store.upload_append(id, 0, body).await.unwrap();
        store.upload_commit(id, &d).await.unwrap();
        d
    }

    fn blob_file(dir: &Path, d: &Digest) -> PathBuf {
        dir.join("blobs").join(d.algorithm().as_str()).join(d.hex())
    }

    #[tokio::test]
    async fn a_flipped_byte_and_a_cut_file_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        // More than one read buffer, so that the hash spans several reads.
        let content: Vec<u8> = (0..(BATCH + 4321)).map(|i| (i % 251) as u8).collect();
        let flipped = put(&store, "a", &content).await;
        let cut = put(&store, "b", &content[..5000]).await;
        let intact = put(&store, "c", b"left alone").await;

        let mut bytes = std::fs::read(blob_file(dir.path(), &flipped)).unwrap();
        bytes[BATCH + 7] ^= 0x01;
        std::fs::write(blob_file(dir.path(), &flipped), &bytes).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(blob_file(dir.path(), &cut))
            .unwrap()
            .set_len(1000)
            .unwrap();

        let v = store.verify(&flipped).await.unwrap().unwrap();
        assert_eq!(v.size, content.len() as u64, "same size, other bytes");
        assert!(!v.is_intact(&flipped));
        assert_eq!(v.actual, Digest::sha256(&bytes));
        let v = store.verify(&cut).await.unwrap().unwrap();
        assert_eq!(v.size, 1000);
        assert!(!v.is_intact(&cut));
        assert_eq!(v.actual, Digest::sha256(&content[..1000]));
        let v = store.verify(&intact).await.unwrap().unwrap();
        assert!(v.is_intact(&intact));
    }

    #[tokio::test]
    async fn quarantined_bytes_are_kept_under_a_flat_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let d = put(&store, "a", b"to be moved aside").await;
        std::fs::write(blob_file(dir.path(), &d), b"damaged bytes").unwrap();
        assert_eq!(
            store.locate(&d),
            Some(blob_file(dir.path(), &d).display().to_string())
        );

        let place = store.quarantine(&d).await.unwrap().unwrap();
        let expected = dir.path().join(format!("quarantine/sha256-{}", d.hex()));
        assert_eq!(place, expected.display().to_string());
        assert_eq!(std::fs::read(&expected).unwrap(), b"damaged bytes");
        assert!(!blob_file(dir.path(), &d).exists());
        // The quarantine is not a blob directory: reopening the store leaves it alone.
        drop(store);
        let store = FsBlobStore::open(dir.path()).unwrap();
        assert_eq!(store.stat(&d).await.unwrap(), None);
        assert!(store.list(None, 10).await.unwrap().blobs.is_empty());
        assert!(expected.exists());
    }
}
