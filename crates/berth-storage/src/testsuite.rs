//! The conformance suite every [`BlobStore`] backend must pass.
//!
//! Backends call [`run`] from their own tests with a fresh, empty store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_oci::{Algorithm, Digest};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::{BlobStore, ByteStream, StorageError};

fn body(parts: &[&'static [u8]]) -> ByteStream {
    let items: Vec<Result<Bytes, std::io::Error>> =
        parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    Box::pin(futures_util::stream::iter(items))
}

async fn read_all(
    store: &dyn BlobStore,
    d: &Digest,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let mut b = store.get(d, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = b.stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// Runs every check against an empty store.
pub async fn run(store: &dyn BlobStore) {
    let content = b"0123456789abcdef";
    let d = Digest::sha256(content);

    // Absent blobs.
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert!(matches!(
        store.get(&d, None).await,
        Err(StorageError::BlobUnknown(_))
    ));
    assert!(!store.delete(&d).await.unwrap());

    // A chunked upload, an out-of-order chunk, a wrong digest, then the right one.
    store.upload_create("a1").await.unwrap();
    assert_eq!(store.upload_size("a1").await.unwrap(), Some(0));
    assert_eq!(
        store
            .upload_append("a1", 0, body(&[b"01234", b"567"]))
            .await
            .unwrap(),
        8
    );
    assert!(matches!(
        store.upload_append("a1", 3, body(&[b"x"])).await,
        Err(StorageError::OffsetMismatch {
            expected: 8,
            got: 3
        })
    ));
    assert_eq!(
        store
            .upload_append("a1", 8, body(&[b"89abcdef"]))
            .await
            .unwrap(),
        16
    );
    let wrong = Digest::sha256(b"other");
    assert!(matches!(
        store.upload_commit("a1", &wrong).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_eq!(store.stat(&wrong).await.unwrap(), None);
    assert_eq!(
        store.stat(&d).await.unwrap(),
        None,
        "nothing visible before commit"
    );
    assert_eq!(store.upload_commit("a1", &d).await.unwrap(), 16);
    assert_eq!(store.upload_size("a1").await.unwrap(), None);
    assert_eq!(store.stat(&d).await.unwrap(), Some(16));

    // Whole and ranged reads.
    assert_eq!(read_all(store, &d, None).await, content);
    assert_eq!(read_all(store, &d, Some(2..6)).await, b"2345");
    assert_eq!(store.get(&d, Some(0..1)).await.unwrap().total_size, 16);

    // Committing identical content again is harmless.
    store.upload_create("a2").await.unwrap();
    store
        .upload_append("a2", 0, body(&[content]))
        .await
        .unwrap();
    assert_eq!(store.upload_commit("a2", &d).await.unwrap(), 16);

    // sha512 is verified too.
    let d512 = Digest::of(Algorithm::Sha512, b"sha512 content");
    store.upload_create("a3").await.unwrap();
    store
        .upload_append("a3", 0, body(&[b"sha512 ", b"content"]))
        .await
        .unwrap();
    assert_eq!(store.upload_commit("a3", &d512).await.unwrap(), 14);
    assert_eq!(store.stat(&d512).await.unwrap(), Some(14));

    // A body error keeps the bytes received before it.
    store.upload_create("a4").await.unwrap();
    let broken: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"abc")),
        Err(std::io::Error::other("connection reset")),
    ]));
    assert!(matches!(
        store.upload_append("a4", 0, broken).await,
        Err(StorageError::Body(_))
    ));
    assert_eq!(store.upload_size("a4").await.unwrap(), Some(3));
    store.upload_append("a4", 3, body(&[b"def"])).await.unwrap();
    assert_eq!(
        store
            .upload_commit("a4", &Digest::sha256(b"abcdef"))
            .await
            .unwrap(),
        6
    );

    // Aborts and listing.
    store.upload_create("a5").await.unwrap();
    assert!(store
        .upload_list()
        .await
        .unwrap()
        .contains(&"a5".to_owned()));
    store.upload_abort("a5").await.unwrap();
    store.upload_abort("a5").await.unwrap();
    assert_eq!(store.upload_size("a5").await.unwrap(), None);
    assert!(matches!(
        store.upload_append("a5", 0, body(&[b"x"])).await,
        Err(StorageError::UploadUnknown(_))
    ));

    // Deletion.
    assert!(store.delete(&d).await.unwrap());
    assert_eq!(store.stat(&d).await.unwrap(), None);
}
