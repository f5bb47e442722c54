//! The conformance suite every [`BlobStore`] backend must pass.
//!
//! Each `pub async fn` here checks one behaviour of the trait's contract against a fresh,
//! empty store, using nothing but the trait, so that every backend (files today, an object
//! store later) runs the same checks. A backend runs all of them, each as its own test, with
//! [`blob_store_conformance!`](crate::blob_store_conformance):
//!
//! ```ignore
//! async fn fresh() -> (tempfile::TempDir, FsBlobStore) { /* an empty store */ }
//! berth_storage::blob_store_conformance!(fresh);
//! ```
//!
//! A check added here must also be listed in that macro, which is what makes every backend
//! run it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use berth_oci::{Algorithm, Digest};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::{BlobStore, ByteStream, StorageError};

/// Defines one `#[tokio::test]` per check of this suite for a backend.
///
/// `$fresh` is the path of an async function without arguments that returns
/// `(guard, store)`: `store` implements [`BlobStore`] and is empty, `guard` is kept alive
/// until the test ends (a temporary directory, a test bucket). With `skip_if = $skip`,
/// each test returns at once when `$skip()` says so: for a backend whose server may be
/// missing on purpose (`BERTH_TEST_SKIP_S3=1`), never silently. The calling crate needs
/// `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! blob_store_conformance {
    ($fresh:path) => {
        $crate::blob_store_conformance!($fresh, skip_if = $crate::testsuite::never);
    };
    ($fresh:path, skip_if = $skip:path) => {
        $crate::blob_store_conformance!(@each $fresh, $skip;
            absent_blobs_are_unknown,
            put_then_get,
            stat_sees_committed_blobs_only,
            range_in_the_middle,
            range_at_the_end,
            empty_range,
            range_past_the_end,
            whole_blob_as_a_range,
            zero_byte_blob,
            sha512_is_verified,
            digest_mismatch_stores_nothing,
            append_at_another_offset_is_refused,
            upload_resumes_at_its_size,
            failed_body_keeps_a_resumable_prefix,
            unknown_upload_is_refused,
            abort_drops_the_upload,
            delete_removes_only_that_blob,
            verify_reads_back_what_was_committed,
            quarantine_hides_a_blob_until_it_is_committed_again,
            upload_list_shows_open_sessions,
            recommitting_a_blob_is_harmless,
            concurrent_commits_of_one_digest,
            listing_pages_in_digest_order,
            listing_reports_size_and_modification_time,
        );
    };
    (@each $fresh:path, $skip:path; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if $skip() {
                    return;
                }
                let (_guard, store) = $fresh().await;
                $crate::testsuite::$check(&store).await;
            }
        )+
    };
}

/// The skip predicate of a backend that is always tested.
pub fn never() -> bool {
    false
}

/// The blob most checks store: 16 bytes whose values show their offsets.
const CONTENT: &[u8] = b"0123456789abcdef";

fn body(parts: &[&[u8]]) -> ByteStream {
    let items: Vec<Result<Bytes, std::io::Error>> = parts
        .iter()
        .map(|p| Ok(Bytes::copy_from_slice(p)))
        .collect();
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

/// Stores `content` through upload `id` in one append; its digest.
async fn put(store: &dyn BlobStore, id: &str, algorithm: Algorithm, content: &[u8]) -> Digest {
    let d = Digest::of(algorithm, content);
    store.upload_create(id).await.unwrap();
    store.upload_append(id, 0, body(&[content])).await.unwrap();
    assert_eq!(
        store.upload_commit(id, &d).await.unwrap(),
        content.len() as u64
    );
    d
}

/// Every blob of the store, read page by page with `limit`.
async fn list_all(store: &dyn BlobStore, limit: usize) -> Vec<crate::BlobInfo> {
    let mut all = Vec::new();
    let mut cursor: Option<Digest> = None;
    // Bounded: a store that never ends its listing fails instead of hanging.
    for _ in 0..1000 {
        let page = store.list(cursor.as_ref(), limit).await.unwrap();
        assert!(
            page.blobs.len() <= limit.max(1),
            "page longer than its limit"
        );
        all.extend(page.blobs);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
    panic!("the listing did not end");
}

/// A blob that was never stored is absent everywhere.
pub async fn absent_blobs_are_unknown(store: &dyn BlobStore) {
    let d = Digest::sha256(CONTENT);
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert!(matches!(
        store.get(&d, None).await,
        Err(StorageError::BlobUnknown(got)) if got == d
    ));
    assert!(matches!(
        store.get(&d, Some(0..1)).await,
        Err(StorageError::BlobUnknown(_))
    ));
    assert!(!store.delete(&d).await.unwrap());
    let page = store.list(None, 10).await.unwrap();
    assert!(page.blobs.is_empty());
    assert_eq!(page.next, None);
}

/// A chunked upload, once committed, reads back as the same bytes and is gone as an
/// upload.
pub async fn put_then_get(store: &dyn BlobStore) {
    let d = Digest::sha256(CONTENT);
    store.upload_create("u1").await.unwrap();
    assert_eq!(store.upload_size("u1").await.unwrap(), Some(0));
    assert_eq!(
        store
            .upload_append("u1", 0, body(&[b"01234", b"567"]))
            .await
            .unwrap(),
        8
    );
    assert_eq!(
        store
            .upload_append("u1", 8, body(&[b"89ab", b"cdef"]))
            .await
            .unwrap(),
        16
    );
    assert_eq!(store.upload_commit("u1", &d).await.unwrap(), 16);
    assert_eq!(store.upload_size("u1").await.unwrap(), None);
    let whole = store.get(&d, None).await.unwrap();
    assert_eq!(whole.total_size, 16);
    drop(whole);
    assert_eq!(read_all(store, &d, None).await, CONTENT);
}

/// `stat` sees a blob only once committed, with its size.
pub async fn stat_sees_committed_blobs_only(store: &dyn BlobStore) {
    let d = Digest::sha256(CONTENT);
    store.upload_create("u1").await.unwrap();
    store
        .upload_append("u1", 0, body(&[CONTENT]))
        .await
        .unwrap();
    assert_eq!(
        store.stat(&d).await.unwrap(),
        None,
        "an upload with every byte is not a blob before its commit"
    );
    store.upload_commit("u1", &d).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(16));
}

/// A range inside the blob: those bytes, with the size of the whole blob.
pub async fn range_in_the_middle(store: &dyn BlobStore) {
    let d = put(store, "u1", Algorithm::Sha256, CONTENT).await;
    assert_eq!(read_all(store, &d, Some(2..6)).await, b"2345");
    assert_eq!(store.get(&d, Some(2..6)).await.unwrap().total_size, 16);
}

/// A range ending exactly at the end of the blob.
pub async fn range_at_the_end(store: &dyn BlobStore) {
    let d = put(store, "u1", Algorithm::Sha256, CONTENT).await;
    assert_eq!(read_all(store, &d, Some(12..16)).await, b"cdef");
    assert_eq!(read_all(store, &d, Some(15..16)).await, b"f");
}

/// An empty range yields no bytes, wherever it is.
pub async fn empty_range(store: &dyn BlobStore) {
    let d = put(store, "u1", Algorithm::Sha256, CONTENT).await;
    for at in [0, 5, 16] {
        let b = store.get(&d, Some(at..at)).await.unwrap();
        assert_eq!(b.total_size, 16);
        drop(b);
        assert_eq!(read_all(store, &d, Some(at..at)).await, b"");
    }
}

/// A range reaching past the end is cut at the end; one starting at or past the end
/// yields no bytes. `total_size` still tells the caller the real size.
pub async fn range_past_the_end(store: &dyn BlobStore) {
    let d = put(store, "u1", Algorithm::Sha256, CONTENT).await;
    assert_eq!(read_all(store, &d, Some(12..100)).await, b"cdef");
    assert_eq!(read_all(store, &d, Some(16..20)).await, b"");
    assert_eq!(read_all(store, &d, Some(50..60)).await, b"");
    assert_eq!(store.get(&d, Some(50..60)).await.unwrap().total_size, 16);
}

/// The range of the whole blob reads the same as no range.
pub async fn whole_blob_as_a_range(store: &dyn BlobStore) {
    let d = put(store, "u1", Algorithm::Sha256, CONTENT).await;
    assert_eq!(read_all(store, &d, Some(0..16)).await, CONTENT);
}

/// An upload committed without a single append stores the empty blob.
pub async fn zero_byte_blob(store: &dyn BlobStore) {
    let d = Digest::sha256(b"");
    store.upload_create("u1").await.unwrap();
    assert_eq!(store.upload_commit("u1", &d).await.unwrap(), 0);
    assert_eq!(store.stat(&d).await.unwrap(), Some(0));
    assert_eq!(store.get(&d, None).await.unwrap().total_size, 0);
    assert_eq!(read_all(store, &d, None).await, b"");
    assert_eq!(read_all(store, &d, Some(0..0)).await, b"");
    // An empty append is an append of nothing, not an error.
    store.upload_create("u2").await.unwrap();
    assert_eq!(store.upload_append("u2", 0, body(&[])).await.unwrap(), 0);
    assert_eq!(store.upload_commit("u2", &d).await.unwrap(), 0);
    let page = store.list(None, 10).await.unwrap();
    assert_eq!(page.blobs.len(), 1);
    assert_eq!((&page.blobs[0].digest, page.blobs[0].size), (&d, 0));
}

/// A sha512 digest is verified too.
pub async fn sha512_is_verified(store: &dyn BlobStore) {
    let d512 = Digest::of(Algorithm::Sha512, b"sha512 content");
    store.upload_create("u1").await.unwrap();
    store
        .upload_append("u1", 0, body(&[b"sha512 ", b"content"]))
        .await
        .unwrap();
    let wrong = Digest::of(Algorithm::Sha512, b"something else");
    assert!(matches!(
        store.upload_commit("u1", &wrong).await,
        Err(StorageError::DigestMismatch { actual, .. }) if actual == d512
    ));
    assert_eq!(store.upload_commit("u1", &d512).await.unwrap(), 14);
    assert_eq!(store.stat(&d512).await.unwrap(), Some(14));
    assert_eq!(read_all(store, &d512, None).await, b"sha512 content");
}

/// A commit against the wrong digest makes nothing visible and keeps the upload, which
/// the right digest then commits.
pub async fn digest_mismatch_stores_nothing(store: &dyn BlobStore) {
    let d = Digest::sha256(CONTENT);
    let wrong = Digest::sha256(b"other");
    store.upload_create("u1").await.unwrap();
    store
        .upload_append("u1", 0, body(&[CONTENT]))
        .await
        .unwrap();
    match store.upload_commit("u1", &wrong).await {
        Err(StorageError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, d);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_eq!(store.stat(&wrong).await.unwrap(), None);
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert!(store.list(None, 10).await.unwrap().blobs.is_empty());
    assert_eq!(store.upload_size("u1").await.unwrap(), Some(16));
    assert_eq!(store.upload_commit("u1", &d).await.unwrap(), 16);
    assert_eq!(read_all(store, &d, None).await, CONTENT);
}

/// An append that does not start at the current size is refused and changes nothing.
pub async fn append_at_another_offset_is_refused(store: &dyn BlobStore) {
    store.upload_create("u1").await.unwrap();
    store
        .upload_append("u1", 0, body(&[b"01234567"]))
        .await
        .unwrap();
    for got in [0, 3, 7, 9, 100] {
        match store.upload_append("u1", got, body(&[b"x"])).await {
            Err(StorageError::OffsetMismatch {
                expected: 8,
                got: g,
            }) => assert_eq!(g, got),
            other => panic!("append at {got}: expected an offset mismatch, got {other:?}"),
        }
        assert_eq!(store.upload_size("u1").await.unwrap(), Some(8));
    }
    store
        .upload_append("u1", 8, body(&[b"89abcdef"]))
        .await
        .unwrap();
    let d = Digest::sha256(CONTENT);
    assert_eq!(store.upload_commit("u1", &d).await.unwrap(), 16);
    assert_eq!(read_all(store, &d, None).await, CONTENT);
}

/// An upload grows one append at a time, each starting at the size the previous one
/// returned, as a client resuming a chunked push does.
pub async fn upload_resumes_at_its_size(store: &dyn BlobStore) {
    store.upload_create("u1").await.unwrap();
    let mut size = 0;
    for chunk in CONTENT.chunks(5) {
        let at = store.upload_size("u1").await.unwrap().unwrap();
        assert_eq!(at, size);
        size = store.upload_append("u1", at, body(&[chunk])).await.unwrap();
        assert_eq!(size, at + chunk.len() as u64);
    }
    let d = Digest::sha256(CONTENT);
    assert_eq!(store.upload_commit("u1", &d).await.unwrap(), 16);
    assert_eq!(read_all(store, &d, None).await, CONTENT);
}

/// A body that fails midway is reported as such; the upload keeps a prefix of what was
/// sent (all of it, or what the backend had made durable), says how much, and resumes
/// from there.
pub async fn failed_body_keeps_a_resumable_prefix(store: &dyn BlobStore) {
    store.upload_create("u1").await.unwrap();
    store
        .upload_append("u1", 0, body(&[b"0123"]))
        .await
        .unwrap();
    let broken: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"4567")),
        Err(std::io::Error::other("connection reset")),
    ]));
    assert!(matches!(
        store.upload_append("u1", 4, broken).await,
        Err(StorageError::Body(_))
    ));
    let kept = store.upload_size("u1").await.unwrap().unwrap();
    assert!((4..=8).contains(&kept), "kept {kept} bytes of 8 received");
    let rest = &CONTENT[kept as usize..];
    assert_eq!(
        store
            .upload_append("u1", kept, body(&[rest]))
            .await
            .unwrap(),
        16
    );
    let d = Digest::sha256(CONTENT);
    assert_eq!(store.upload_commit("u1", &d).await.unwrap(), 16);
    assert_eq!(read_all(store, &d, None).await, CONTENT);
}

/// Operations on an upload that was never created.
pub async fn unknown_upload_is_refused(store: &dyn BlobStore) {
    assert_eq!(store.upload_size("never").await.unwrap(), None);
    assert!(matches!(
        store.upload_append("never", 0, body(&[b"x"])).await,
        Err(StorageError::UploadUnknown(_))
    ));
    assert!(matches!(
        store.upload_commit("never", &Digest::sha256(b"x")).await,
        Err(StorageError::UploadUnknown(_))
    ));
    assert!(store.upload_list().await.unwrap().is_empty());
}

/// An aborted upload is gone with its bytes; aborting again, or an unknown id, is fine.
pub async fn abort_drops_the_upload(store: &dyn BlobStore) {
    store.upload_create("u1").await.unwrap();
    store
        .upload_append("u1", 0, body(&[CONTENT]))
        .await
        .unwrap();
    store.upload_abort("u1").await.unwrap();
    store.upload_abort("u1").await.unwrap();
    store.upload_abort("never").await.unwrap();
    assert_eq!(store.upload_size("u1").await.unwrap(), None);
    assert!(matches!(
        store.upload_append("u1", 16, body(&[b"x"])).await,
        Err(StorageError::UploadUnknown(_))
    ));
    assert!(matches!(
        store.upload_commit("u1", &Digest::sha256(CONTENT)).await,
        Err(StorageError::UploadUnknown(_))
    ));
    let left = store.upload_list().await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(store.stat(&Digest::sha256(CONTENT)).await.unwrap(), None);
    // The id can start over.
    store.upload_create("u1").await.unwrap();
    assert_eq!(store.upload_size("u1").await.unwrap(), Some(0));
}

/// Deleting a blob removes it and leaves the others.
pub async fn delete_removes_only_that_blob(store: &dyn BlobStore) {
    let d = put(store, "u1", Algorithm::Sha256, CONTENT).await;
    let other = put(store, "u2", Algorithm::Sha256, b"other").await;
    assert!(store.delete(&d).await.unwrap());
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert!(matches!(
        store.get(&d, None).await,
        Err(StorageError::BlobUnknown(_))
    ));
    assert!(!store.delete(&d).await.unwrap());
    let listed: Vec<Digest> = list_all(store, 10)
        .await
        .into_iter()
        .map(|b| b.digest)
        .collect();
    assert_eq!(listed, vec![other.clone()]);
    assert_eq!(read_all(store, &other, None).await, b"other");
}

/// `verify` re-hashes a committed blob whole with its own algorithm (whatever its size,
/// empty included) and finds nothing for an absent one.
pub async fn verify_reads_back_what_was_committed(store: &dyn BlobStore) {
    let large: Vec<u8> = (0..(3u32 << 20) + 17).map(|i| (i % 253) as u8).collect();
    for (id, algorithm, content) in [
        ("u1", Algorithm::Sha256, CONTENT),
        ("u2", Algorithm::Sha512, CONTENT),
        ("u3", Algorithm::Sha256, &b""[..]),
        ("u4", Algorithm::Sha256, &large[..]),
    ] {
        let d = put(store, id, algorithm, content).await;
        let v = store.verify(&d).await.unwrap().expect("a committed blob");
        assert_eq!(v.size, content.len() as u64, "{d}");
        assert_eq!(v.actual, d);
        assert!(v.is_intact(&d));
    }
    let absent = Digest::sha256(b"never stored");
    assert_eq!(store.verify(&absent).await.unwrap(), None);
}

/// A quarantined blob is gone from `stat`, `get`, `verify` and `list` while the others
/// stay; quarantining it again (or an absent blob) finds nothing; committing the digest
/// again stores it afresh.
pub async fn quarantine_hides_a_blob_until_it_is_committed_again(store: &dyn BlobStore) {
    let d = put(store, "u1", Algorithm::Sha256, CONTENT).await;
    let other = put(store, "u2", Algorithm::Sha256, b"other").await;
    assert!(store.quarantine(&d).await.unwrap().is_some());
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert!(matches!(
        store.get(&d, None).await,
        Err(StorageError::BlobUnknown(_))
    ));
    assert_eq!(store.verify(&d).await.unwrap(), None);
    let listed: Vec<Digest> = list_all(store, 10)
        .await
        .into_iter()
        .map(|b| b.digest)
        .collect();
    assert_eq!(listed, vec![other.clone()]);
    assert_eq!(store.quarantine(&d).await.unwrap(), None);
    assert_eq!(
        store
            .quarantine(&Digest::sha256(b"never stored"))
            .await
            .unwrap(),
        None
    );

    let again = put(store, "u3", Algorithm::Sha256, CONTENT).await;
    assert_eq!(again, d);
    assert_eq!(store.stat(&d).await.unwrap(), Some(CONTENT.len() as u64));
    assert_eq!(read_all(store, &d, None).await, CONTENT);
    assert_eq!(read_all(store, &other, None).await, b"other");
}

/// `upload_list` names exactly the open sessions, empty or not.
pub async fn upload_list_shows_open_sessions(store: &dyn BlobStore) {
    assert!(store.upload_list().await.unwrap().is_empty());
    for id in ["u1", "u2", "u3"] {
        store.upload_create(id).await.unwrap();
    }
    store
        .upload_append("u2", 0, body(&[CONTENT]))
        .await
        .unwrap();
    let ids = |v: Vec<String>| v.into_iter().collect::<HashSet<_>>();
    let expected = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
    assert_eq!(
        ids(store.upload_list().await.unwrap()),
        expected(&["u1", "u2", "u3"])
    );
    store.upload_abort("u1").await.unwrap();
    store
        .upload_commit("u2", &Digest::sha256(CONTENT))
        .await
        .unwrap();
    assert_eq!(ids(store.upload_list().await.unwrap()), expected(&["u3"]));
}

/// Committing content that is already stored succeeds and leaves one blob.
pub async fn recommitting_a_blob_is_harmless(store: &dyn BlobStore) {
    let d = put(store, "u1", Algorithm::Sha256, CONTENT).await;
    assert_eq!(put(store, "u2", Algorithm::Sha256, CONTENT).await, d);
    let listed = list_all(store, 10).await;
    assert_eq!(listed.len(), 1);
    assert_eq!((&listed[0].digest, listed[0].size), (&d, 16));
    assert_eq!(read_all(store, &d, None).await, CONTENT);
}

/// Two uploads of the same content committed at the same time both succeed and leave one
/// blob with the right bytes.
pub async fn concurrent_commits_of_one_digest(store: &dyn BlobStore) {
    // Large enough for both commits to be flushing at the same time.
    let content: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256(&content);
    for id in ["u1", "u2"] {
        store.upload_create(id).await.unwrap();
        store.upload_append(id, 0, body(&[&content])).await.unwrap();
    }
    let (a, b) = tokio::join!(store.upload_commit("u1", &d), store.upload_commit("u2", &d));
    assert_eq!(a.unwrap(), content.len() as u64);
    assert_eq!(b.unwrap(), content.len() as u64);
    let listed = list_all(store, 10).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (&listed[0].digest, listed[0].size),
        (&d, content.len() as u64)
    );
    assert!(
        read_all(store, &d, None).await == content,
        "the committed bytes differ from the uploaded ones"
    );
    assert!(store.upload_list().await.unwrap().is_empty());
}

/// Listing walks every blob once, in ascending order of the digest string, page by page
/// from any cursor, and leaves uploads out.
pub async fn listing_pages_in_digest_order(store: &dyn BlobStore) {
    let mut stored = Vec::new();
    for i in 0..7u8 {
        let alg = if i % 3 == 0 {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        };
        let content = vec![i; usize::from(i) + 1];
        stored.push((
            put(store, &format!("u{i}"), alg, &content).await,
            content.len(),
        ));
    }
    store.upload_create("pending").await.unwrap();
    store
        .upload_append("pending", 0, body(&[CONTENT]))
        .await
        .unwrap();
    stored.sort_by_key(|(d, _)| d.to_string());
    let expected: Vec<(String, u64)> = stored
        .iter()
        .map(|(d, len)| (d.to_string(), *len as u64))
        .collect();

    for limit in [0, 1, 2, 3, 7, 8, 100] {
        let got: Vec<(String, u64)> = list_all(store, limit)
            .await
            .into_iter()
            .map(|b| (b.digest.to_string(), b.size))
            .collect();
        assert_eq!(got, expected, "listing in pages of {limit}");
    }

    // A full page says where the next one starts; the last page says there is none.
    let first = store.list(None, 3).await.unwrap();
    let firsts: Vec<&Digest> = first.blobs.iter().map(|b| &b.digest).collect();
    let sorted: Vec<&Digest> = stored.iter().map(|(d, _)| d).collect();
    assert_eq!(firsts, sorted[..3]);
    assert_eq!(first.next.as_ref(), Some(sorted[2]));
    let rest = store.list(Some(sorted[2]), 100).await.unwrap();
    assert_eq!(rest.blobs.len(), 4);
    assert_eq!(rest.next, None);
    let after_last = store.list(Some(sorted[6]), 10).await.unwrap();
    assert!(after_last.blobs.is_empty());
    assert_eq!(after_last.next, None);

    // A cursor need not be a stored digest: listing resumes after where it would sort.
    let absent = Digest::sha256(b"not stored");
    let after_absent: Vec<String> = store
        .list(Some(&absent), 100)
        .await
        .unwrap()
        .blobs
        .iter()
        .map(|b| b.digest.to_string())
        .collect();
    let expected_after: Vec<String> = expected
        .iter()
        .map(|(d, _)| d.clone())
        .filter(|d| *d > absent.to_string())
        .collect();
    assert_eq!(after_absent, expected_after);
}

/// How far a store's clock or timestamp resolution may put a modification time outside
/// the interval in which the test wrote the blob (object stores keep whole seconds).
const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// Listed blobs carry their size and a modification time from when they were written.
pub async fn listing_reports_size_and_modification_time(store: &dyn BlobStore) {
    let before = SystemTime::now();
    let d = put(store, "u1", Algorithm::Sha256, CONTENT).await;
    let after = SystemTime::now();
    let page = store.list(None, 10).await.unwrap();
    assert_eq!(page.blobs.len(), 1);
    let info = &page.blobs[0];
    assert_eq!((&info.digest, info.size), (&d, 16));
    assert!(
        info.modified >= before - CLOCK_SLACK && info.modified <= after + CLOCK_SLACK,
        "modified {:?} is not between {before:?} and {after:?}",
        info.modified
    );
}
