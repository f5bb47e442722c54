//! The S3 store against a real S3 server (SeaweedFS, see [`super::seaweed`]): the shared
//! conformance suite, and what only a shared bucket can show (a second replica continuing
//! an upload, multipart parts, presigned URLs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use berth_oci::Digest;
use bytes::Bytes;
use futures_util::StreamExt;

use super::seaweed::SeaweedFs;
use super::*;

/// A fresh store on the shared SeaweedFS (callers check [`skipped`] first).
async fn fresh() -> (String, S3BlobStore) {
    SeaweedFs::shared()
        .expect("S3 tests are not skipped")
        .fresh_store()
        .await
}

/// Whether S3 tests are skipped here (`BERTH_TEST_SKIP_S3=1` without `weed`).
fn skipped() -> bool {
    SeaweedFs::shared().is_none()
}

mod conformance {
    async fn fresh() -> (String, super::S3BlobStore) {
        super::fresh().await
    }

    crate::blob_store_conformance!(fresh, skip_if = super::skipped);
}

fn body(parts: Vec<Vec<u8>>) -> crate::ByteStream {
    Box::pin(futures_util::stream::iter(
        parts.into_iter().map(|p| Ok(Bytes::from(p))),
    ))
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

async fn read_all(store: &S3BlobStore, d: &Digest, range: Option<Range<u64>>) -> Vec<u8> {
    let mut b = store.get(d, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = b.stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_continues_a_chunked_upload_across_parts() {
    if skipped() {
        return;
    }
    let (prefix, a) = fresh().await;
    let b = SeaweedFs::shared().unwrap().store_at(&prefix);
    // Three chunks alternating between the replicas: over one part (sent whole), then a
    // tail, then enough to send it with a second part; each continues the other's upload.
    let data = content(MIN_PART_SIZE * 2 + 1234);
    let cuts = [0, MIN_PART_SIZE + 100, MIN_PART_SIZE + 4000, data.len()];
    a.upload_create("u1").await.unwrap();
    for (i, w) in cuts.windows(2).enumerate() {
        let replica = if i % 2 == 0 { &a } else { &b };
        let at = replica.upload_size("u1").await.unwrap().unwrap();
        assert_eq!(at, w[0] as u64);
        let got = replica
            .upload_append("u1", at, body(vec![data[w[0]..w[1]].to_vec()]))
            .await
            .unwrap();
        assert_eq!(got, w[1] as u64);
    }
    let d = Digest::sha256(&data);
    assert_eq!(b.upload_commit("u1", &d).await.unwrap(), data.len() as u64);
    assert!(a.upload_list().await.unwrap().is_empty());
    assert_eq!(a.stat(&d).await.unwrap(), Some(data.len() as u64));
    assert!(read_all(&a, &d, None).await == data, "bytes differ");
    let mid = (MIN_PART_SIZE as u64 - 10)..(MIN_PART_SIZE as u64 + 10);
    assert_eq!(
        read_all(&b, &d, Some(mid.clone())).await,
        &data[mid.start as usize..mid.end as usize]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_blob_is_its_one_tail_object() {
    if skipped() {
        return;
    }
    let (prefix, store) = fresh().await;
    store.upload_create("u1").await.unwrap();
    store
        .upload_append("u1", 0, body(vec![b"small".to_vec()]))
        .await
        .unwrap();
    let d = Digest::sha256(b"small");
    store.upload_commit("u1", &d).await.unwrap();
    // Data objects: the one PUT of the append, nothing copied at commit.
    let client = SeaweedFs::shared().unwrap().client();
    let data: Vec<_> = client
        .list(Some(&Path::from(format!("{prefix}/data"))))
        .collect::<Vec<_>>()
        .await;
    assert_eq!(data.len(), 1, "{data:?}");
    assert_eq!(data[0].as_ref().unwrap().size, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_url_serves_the_blob_without_credentials() {
    if skipped() {
        return;
    }
    let (_prefix, store) = fresh().await;
    store.upload_create("u1").await.unwrap();
    store
        .upload_append("u1", 0, body(vec![b"fetch me".to_vec()]))
        .await
        .unwrap();
    let d = Digest::sha256(b"fetch me");
    store.upload_commit("u1", &d).await.unwrap();
    let url = store
        .redirect_url(&d, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let got = reqwest::get(&url).await.unwrap();
    assert!(got.status().is_success(), "{}", got.status());
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"fetch me");
    assert!(matches!(
        store
            .redirect_url(&Digest::sha256(b"absent"), Duration::from_secs(60))
            .await,
        Err(StorageError::BlobUnknown(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_sees_a_missing_bucket() {
    if skipped() {
        return;
    }
    let (_prefix, store) = fresh().await;
    store.ping().await.unwrap();
    let s3 = SeaweedFs::shared().unwrap();
    let missing = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("no-such-bucket")
        .with_access_key_id(super::seaweed::ACCESS_KEY)
        .with_secret_access_key(super::seaweed::SECRET_KEY)
        .build()
        .unwrap();
    let store = S3BlobStore::new(Arc::new(missing), "", "s3://no-such-bucket".into());
    assert!(store.ping().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_a_part_or_more_leave_no_tail_and_parts_keep_their_order() {
    if skipped() {
        return;
    }
    let (_prefix, store) = fresh().await;
    let data = content(MIN_PART_SIZE * 5 + 4321);
    // A first chunk of three parts and a little, in 1 MiB pieces: parts are sent while
    // the body is read, and the end of the body is sent as a part, not stored as a tail.
    let first = MIN_PART_SIZE * 3 + 17;
    store.upload_create("u1").await.unwrap();
    let pieces: Vec<Vec<u8>> = data[..first].chunks(1 << 20).map(<[u8]>::to_vec).collect();
    assert_eq!(
        store.upload_append("u1", 0, body(pieces)).await.unwrap(),
        first as u64
    );
    let state = store.load_state("u1").await.unwrap().unwrap();
    assert_eq!(state.tail, None);
    assert_eq!(state.parts.len(), 3, "two parts and the rest as the third");
    assert_eq!(state.parts_len, first as u64);
    // A chunk under a part becomes the tail, and the next one sends it with its bytes.
    let second = first + 1000;
    store
        .upload_append("u1", first as u64, body(vec![data[first..second].to_vec()]))
        .await
        .unwrap();
    let state = store.load_state("u1").await.unwrap().unwrap();
    assert!(state.tail.is_some());
    store
        .upload_append("u1", second as u64, body(vec![data[second..].to_vec()]))
        .await
        .unwrap();
    let state = store.load_state("u1").await.unwrap().unwrap();
    assert_eq!(state.tail, None);
    let d = Digest::sha256(&data);
    assert_eq!(
        store.upload_commit("u1", &d).await.unwrap(),
        data.len() as u64
    );
    assert!(read_all(&store, &d, None).await == data, "bytes differ");
}

/// Regression test for the peak memory that grew with the blob size on S3: every part
/// buffer was allocated anew and freed, and the allocator kept the freed ones resident.
/// The buffers now go back to the store's pool once their part is sent, and the next
/// parts and appends are filled in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_buffers_are_reused_across_parts_and_appends() {
    if skipped() {
        return;
    }
    let (_prefix, store) = fresh().await;
    let data = content(MIN_PART_SIZE * 9 + 999);
    store.upload_create("u1").await.unwrap();
    let mut at = 0;
    for chunk in data.chunks(MIN_PART_SIZE * 3 + 1) {
        let pieces: Vec<Vec<u8>> = chunk.chunks(256 << 10).map(<[u8]>::to_vec).collect();
        at = store.upload_append("u1", at, body(pieces)).await.unwrap();
        let idle = store.buffers.idle();
        assert!(
            (2..=BUFFERS_PER_APPEND).contains(&idle),
            "after an append its buffers are back in the pool, no more than it keeps: {idle}"
        );
    }
    let d = Digest::sha256(&data);
    assert_eq!(
        store.upload_commit("u1", &d).await.unwrap(),
        data.len() as u64
    );
    assert!(read_all(&store, &d, None).await == data, "bytes differ");
}
