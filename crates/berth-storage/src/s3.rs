//! The blob store on an object store: S3 (and, with the `gcs` and `azure` features,
//! Google Cloud Storage and Azure Blob Storage, through the same code), on the
//! `object_store` crate.
//!
//! # Keys (under the configured prefix)
//! - `blobs/<algorithm>/<hex>`: the **index entry** of a committed blob, a small JSON
//!   object naming its data object and its size. Its presence is what makes a blob
//!   visible; a commit writes it last, a delete removes it first.
//! - `data/<session>/blob` or `data/<session>/tail-<size>`: the **bytes** of a blob,
//!   written once, where the upload put them. `<session>` is unique per upload session.
//! - `_uploads/<id>`: the state of an open upload (JSON, see [`UploadState`]): the
//!   multipart upload id and the part ids, the byte count, the SHA-256 mid-state and the
//!   key of the unflushed tail. Any replica can load it and continue the upload.
//! - `quarantine/<algorithm>/<hex>`: the index entry of a blob moved aside.
//!
//! # Why an index entry instead of the bytes under the digest
//! S3 has no rename, and a multipart upload names its object when it starts, long before
//! the digest is known. Putting the bytes under their digest would take a server-side
//! copy of every blob at commit (what Distribution does): a second full write of the data.
//! Here the bytes stay where the upload wrote them and the digest key points at them: a
//! commit writes a few hundred bytes, whatever the blob size, and a read by digest is one
//! small GET of the index entry and then the ranged GET of the bytes.
//!
//! # Uploads
//! Bytes are hashed as they arrive and buffered; a part of the part size (at least 5 MiB,
//! the S3 minimum) is sent as soon as a second one has begun to fill behind it, as one part
//! of a multipart upload started at the first flush. Up to [`PARTS_IN_FLIGHT`] parts are
//! sent at the same time, each in its own task, while the body goes on being read (S3
//! parts may differ in size; only their order counts). What is left at the end of an
//! append is sent as one more part when it is at least a part, so a client's chunks of a
//! part or more leave nothing behind; a rest under one part is stored as its own object,
//! the tail, and read back by the next append. Memory per upload is bounded by the parts
//! in flight plus two being filled ([`BUFFERS_PER_APPEND`] buffers of the part size),
//! whatever the blob size. The buffers come from a pool of the store and go back to it
//! when their part is sent, so they are allocated once, not once per part: freed and
//! allocated again, they stayed resident in the allocator's arenas and made the peak
//! memory grow with the blob size (see `buffers`). A blob that never filled a
//! part is its tail: its commit writes only the index entry, so a small monolithic push
//! writes its bytes once, in one PUT. A larger one sends the tail as its last part and
//! completes the multipart upload.
//!
//! The state object is written after the bytes it names, so a crash between the two
//! leaves the previous state, which is consistent, and at worst an orphaned object.
//! Operations on one upload are serialized within a process. Two replicas appending to
//! the same upload at the same moment are not kept apart yet: a client sends its chunks one
//! after another, but a retried request could race with its first attempt. (A conditional
//! PUT of the state object, `If-Match` on its ETag, would close that gap.)
//!
//! A commit against SHA-256 is verified from the stored mid-state, before anything is
//! written. Against another algorithm the bytes must be read back: the multipart upload
//! is completed first and the session is then *sealed* (it can be committed, not appended
//! to).
//!
//! **Architecture Invariant:** a blob is visible only through its index entry, which is
//! written after its bytes were verified and made durable by the object store.

mod buffers;
mod hash;
#[cfg(any(test, feature = "testsuite"))]
pub mod seaweed;

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_oci::{Algorithm, Digest};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};

pub use hash::ResumableSha256;

use buffers::BufferPool;

use crate::{BlobBody, BlobInfo, BlobPage, BlobStore, ByteStream, StorageError};

/// The smallest part S3 accepts in a multipart upload (except the last one).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// How many parts of one upload are sent to the object store at the same time, while the
/// rest of the body is read and hashed.
pub const PARTS_IN_FLIGHT: usize = 2;

/// How many part buffers one append holds at most: the parts in flight, the full part
/// kept back, and the one being filled. The buffer pool keeps as many idle.
const BUFFERS_PER_APPEND: usize = PARTS_IN_FLIGHT + 2;

/// How many index entries a listing reads at the same time (for their sizes).
const LIST_CONCURRENCY: usize = 16;

/// Where and how an [`S3BlobStore`] keeps its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// The bucket, which must already exist.
    pub bucket: String,
    /// The S3 endpoint (`http://127.0.0.1:8333` for a local server); `None` for AWS.
    pub endpoint: Option<String>,
    /// The region; `None` takes `AWS_REGION` or `us-east-1`.
    pub region: Option<String>,
    /// The key prefix under which every object of the store lives (empty: the bucket root).
    pub prefix: String,
}

/// The object store operations the blob store needs: S3, GCS and Azure all provide them.
pub trait Backend: ObjectStore + MultipartStore + Signer {}
impl<T: ObjectStore + MultipartStore + Signer> Backend for T {}

/// Content-addressed blobs in an object store bucket (see the module docs).
pub struct S3BlobStore {
    store: Arc<dyn Backend>,
    /// The key prefix without a trailing slash (may be empty).
    prefix: String,
    /// A name for messages (`s3://bucket/prefix`).
    name: String,
    /// The part buffers, of the part size, reused from part to part (see `buffers`).
    buffers: BufferPool,
    /// Serializes the operations on one upload within this process.
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The state of an open upload, stored as JSON at `_uploads/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadState {
    /// Unique per session: the folder of its data objects, so that an id used again after
    /// an abort never writes over the bytes of a blob committed before.
    session: String,
    /// Bytes received and kept.
    size: u64,
    /// The multipart upload, once the first part was flushed.
    multipart: Option<String>,
    /// The ids of the parts flushed, in order.
    parts: Vec<String>,
    /// Bytes in those parts; the tail holds `size - parts_len`.
    parts_len: u64,
    /// The key (relative to the prefix) of the tail object, when the tail is not empty.
    tail: Option<String>,
    /// SHA-256 of every byte received.
    hash: ResumableSha256,
    /// The data object, once a commit against another algorithm completed the upload.
    sealed: Option<String>,
}

/// An index entry: where the bytes of a committed blob are, and how many.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    /// The data object's key, relative to the prefix.
    data: String,
    size: u64,
}

/// The error of an object store failure while `context`.
fn os_err(context: &'static str) -> impl FnOnce(object_store::Error) -> StorageError {
    move |e| StorageError::Io {
        context,
        source: std::io::Error::other(e),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

fn corrupt(context: &'static str, e: serde_json::Error) -> StorageError {
    StorageError::Io {
        context,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    }
}

impl S3BlobStore {
    /// Opens the store on S3 as `options` say. Credentials come from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity,
    /// container or instance credentials, as `object_store` finds them). An `http://`
    /// endpoint is used as given (a local S3 server without TLS); requests are path-style.
    /// Nothing is sent yet: see [`BlobStore::ping`].
    pub fn open_s3(options: &S3Options) -> Result<S3BlobStore, StorageError> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&options.bucket)
            // Tags cost a request on servers that do not keep them; Berth sets none.
            .with_disable_tagging(true);
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        let store = builder
            .build()
            .map_err(os_err("configuring the S3 client"))?;
        let name = format!(
            "s3://{}/{}",
            options.bucket,
            options.prefix.trim_matches('/')
        );
        Ok(S3BlobStore::new(Arc::new(store), &options.prefix, name))
    }

    /// A store on any backend (GCS, Azure, or S3 built by the caller), its objects under
    /// `prefix`; `name` is how messages refer to it.
    pub fn new(store: Arc<dyn Backend>, prefix: &str, name: String) -> S3BlobStore {
        S3BlobStore {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            name,
            buffers: BufferPool::new(MIN_PART_SIZE, BUFFERS_PER_APPEND),
            uploads: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the part size of multipart uploads (at least [`MIN_PART_SIZE`]).
    pub fn with_part_size(mut self, bytes: usize) -> S3BlobStore {
        self.buffers = BufferPool::new(bytes.max(MIN_PART_SIZE), BUFFERS_PER_APPEND);
        self
    }

    /// The full key of `relative`.
    fn key(&self, relative: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(relative)
        } else {
            Path::from(format!("{}/{relative}", self.prefix))
        }
    }

    fn index_key(digest: &Digest) -> String {
        format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
    }

    fn state_key(id: &str) -> String {
        format!("_uploads/{id}")
    }

    fn upload_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_owned()).or_default().clone()
    }

    /// Forgets the lock of an upload that ended (nobody else waits on it).
    fn forget_lock(&self, id: &str) {
        let mut map = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(id).is_some_and(|l| Arc::strong_count(l) <= 2) {
            map.remove(id);
        }
    }

    /// A small object read whole, or `None` when absent.
    async fn read_small(
        &self,
        key: &Path,
        context: &'static str,
    ) -> Result<Option<Bytes>, StorageError> {
        match self.store.get(key).await {
            Ok(got) => Ok(Some(got.bytes().await.map_err(os_err(context))?)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(os_err(context)(e)),
        }
    }

    async fn put_json<T: Serialize>(
        &self,
        key: &Path,
        value: &T,
        context: &'static str,
    ) -> Result<(), StorageError> {
        let body = serde_json::to_vec(value).map_err(|e| corrupt(context, e))?;
        self.store
            .put(key, PutPayload::from(body))
            .await
            .map_err(os_err(context))?;
        Ok(())
    }

    /// Deletes an object; an absent one is not an error.
    async fn delete_quietly(&self, key: &Path, context: &'static str) -> Result<(), StorageError> {
        match self.store.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(os_err(context)(e)),
        }
    }

    async fn load_state(&self, id: &str) -> Result<Option<UploadState>, StorageError> {
        const CONTEXT: &str = "reading an upload's state";
        let Some(bytes) = self
            .read_small(&self.key(&Self::state_key(id)), CONTEXT)
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| corrupt(CONTEXT, e))
    }

    async fn save_state(&self, id: &str, state: &UploadState) -> Result<(), StorageError> {
        self.put_json(
            &self.key(&Self::state_key(id)),
            state,
            "writing an upload's state",
        )
        .await
    }

    async fn load_index(&self, key: &Path) -> Result<Option<IndexEntry>, StorageError> {
        const CONTEXT: &str = "reading a blob's index entry";
        let Some(bytes) = self.read_small(key, CONTEXT).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| corrupt(CONTEXT, e))
    }

    fn data_key(state: &UploadState) -> String {
        format!("data/{}/blob", state.session)
    }

    /// Starts sending `pieces` (in order) as part number `index` of the upload in a task
    /// of its own, starting the multipart upload first when there is none yet.
    async fn start_part(
        &self,
        state: &mut UploadState,
        index: usize,
        pieces: Vec<Bytes>,
    ) -> Result<PartTask, StorageError> {
        let key = self.key(&Self::data_key(state));
        let multipart = match &state.multipart {
            Some(id) => id.clone(),
            None => {
                let id = self
                    .store
                    .create_multipart(&key)
                    .await
                    .map_err(os_err("starting a multipart upload"))?;
                state.multipart = Some(id.clone());
                id
            }
        };
        let store = Arc::clone(&self.store);
        // The task sends clones of the pieces; the originals stay here, to go back to the
        // buffer pool once the task (and with it every clone) is done.
        let data = PutPayload::from_iter(pieces.iter().cloned());
        let len = data.content_length() as u64;
        let handle = tokio::spawn(async move {
            store
                .put_part(&key, &multipart, index, data)
                .await
                .map(|part| (part.content_id, len))
        });
        Ok(PartTask { handle, pieces })
    }

    /// Sends `data` as the next part of the upload and waits for it.
    async fn flush_part(&self, state: &mut UploadState, data: Bytes) -> Result<(), StorageError> {
        let task = self
            .start_part(state, state.parts.len(), vec![data])
            .await?;
        let (id, len) = task.finish(&self.buffers).await?;
        state.parts.push(id);
        state.parts_len += len;
        Ok(())
    }

    /// Writes `tail` (the bytes after the last part) as the upload's tail object and
    /// then the state naming it, and deletes the tail it replaces.
    async fn store_tail(
        &self,
        id: &str,
        state: &mut UploadState,
        tail: Bytes,
    ) -> Result<(), StorageError> {
        let old = state.tail.take();
        if !tail.is_empty() {
            let key = format!("data/{}/tail-{}", state.session, state.size);
            self.store
                .put(&self.key(&key), PutPayload::from(tail))
                .await
                .map_err(os_err("writing an upload's tail"))?;
            state.tail = Some(key);
        }
        self.save_state(id, state).await?;
        if let Some(old) = old.filter(|old| Some(old) != state.tail.as_ref()) {
            self.delete_quietly(&self.key(&old), "deleting a replaced tail")
                .await?;
        }
        Ok(())
    }

    async fn read_tail(&self, state: &UploadState) -> Result<Bytes, StorageError> {
        const CONTEXT: &str = "reading an upload's tail";
        match &state.tail {
            None => Ok(Bytes::new()),
            Some(key) => self
                .read_small(&self.key(key), CONTEXT)
                .await?
                .ok_or_else(|| StorageError::Io {
                    context: CONTEXT,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("tail object {key} is missing"),
                    ),
                }),
        }
    }

    /// Makes the upload's bytes one object and returns its key: the tail alone when no
    /// part was flushed (or an empty object), else the completed multipart upload, the
    /// tail sent as its last part. The state is left untouched; the caller records it.
    async fn finish_data(&self, state: &mut UploadState) -> Result<String, StorageError> {
        if let Some(sealed) = &state.sealed {
            return Ok(sealed.clone());
        }
        if state.multipart.is_none() {
            if let Some(tail) = &state.tail {
                return Ok(tail.clone());
            }
            let key = Self::data_key(state);
            self.store
                .put(&self.key(&key), PutPayload::default())
                .await
                .map_err(os_err("writing an empty blob"))?;
            return Ok(key);
        }
        let tail = self.read_tail(state).await?;
        if !tail.is_empty() {
            self.flush_part(state, tail).await?;
        }
        let key = Self::data_key(state);
        let parts = state
            .parts
            .iter()
            .map(|p| PartId {
                content_id: p.clone(),
            })
            .collect();
        let multipart = state.multipart.clone().unwrap_or_default();
        self.store
            .complete_multipart(&self.key(&key), &multipart, parts)
            .await
            .map_err(os_err("completing a multipart upload"))?;
        if let Some(tail) = state.tail.take() {
            self.delete_quietly(&self.key(&tail), "deleting a sent tail")
                .await?;
        }
        state.multipart = None;
        state.parts.clear();
        Ok(key)
    }

    /// Reads the data object `key` whole and hashes it with `algorithm`.
    async fn hash_object(&self, key: &str, algorithm: Algorithm) -> Result<Digest, StorageError> {
        const CONTEXT: &str = "reading an upload back to verify it";
        let mut stream = self
            .store
            .get(&self.key(key))
            .await
            .map_err(os_err(CONTEXT))?
            .into_stream();
        let mut hasher = berth_oci::Hasher::new(algorithm);
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk.map_err(os_err(CONTEXT))?);
        }
        Ok(hasher.finish())
    }
}

#[async_trait::async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let entry = self.load_index(&self.key(&Self::index_key(digest))).await?;
        Ok(entry.map(|e| e.size))
    }

    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobBody, StorageError> {
        let entry = self
            .load_index(&self.key(&Self::index_key(digest)))
            .await?
            .ok_or_else(|| StorageError::BlobUnknown(digest.clone()))?;
        let size = entry.size;
        let range = range.unwrap_or(0..size);
        let range = range.start.min(size)..range.end.min(size);
        if range.start >= range.end {
            return Ok(BlobBody {
                total_size: size,
                stream: Box::pin(futures_util::stream::empty()),
            });
        }
        let options = GetOptions {
            range: (range != (0..size)).then_some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(&self.key(&entry.data), options).await {
            Ok(got) => got,
            // Deleted between the two reads.
            Err(e) if is_not_found(&e) => return Err(StorageError::BlobUnknown(digest.clone())),
            Err(e) => return Err(os_err("opening a blob")(e)),
        };
        let stream = got.into_stream().map_err(std::io::Error::other);
        Ok(BlobBody {
            total_size: size,
            stream: Box::pin(stream),
        })
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StorageError> {
        let index = self.key(&Self::index_key(digest));
        let Some(entry) = self.load_index(&index).await? else {
            return Ok(false);
        };
        // The index entry first: the blob is gone the moment it is, and a failure
        // afterwards leaves orphaned bytes, never an entry without bytes.
        self.delete_quietly(&index, "deleting a blob's index entry")
            .await?;
        self.delete_quietly(&self.key(&entry.data), "deleting a blob's bytes")
            .await?;
        Ok(true)
    }

    async fn list(&self, after: Option<&Digest>, limit: usize) -> Result<BlobPage, StorageError> {
        const CONTEXT: &str = "listing blobs";
        let limit = limit.max(1);
        let prefix = self.key("blobs");
        let offset = match after {
            Some(d) => self.key(&Self::index_key(d)),
            None => prefix.clone(),
        };
        // One more than a page, to know whether another page follows.
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list_with_offset(Some(&prefix), &offset)
            .take(limit + 1)
            .try_collect()
            .await
            .map_err(os_err(CONTEXT))?;
        let more = metas.len() > limit;
        let page: Vec<(Digest, object_store::ObjectMeta)> = metas
            .into_iter()
            .take(limit)
            .filter_map(|m| {
                // `<prefix>/blobs/<algorithm>/<hex>`: the last two parts are the digest.
                let parts: Vec<String> =
                    m.location.parts().map(|p| p.as_ref().to_owned()).collect();
                let [.., algorithm, hex] = parts.as_slice() else {
                    return None;
                };
                let digest: Digest = format!("{algorithm}:{hex}").parse().ok()?;
                Some((digest, m))
            })
            .collect();
        let next = if more {
            page.last().map(|(d, _)| d.clone())
        } else {
            None
        };
        // The sizes are in the entries: read them a few at a time, in order.
        let blobs: Vec<Option<BlobInfo>> = futures_util::stream::iter(page)
            .map(|(digest, meta)| async move {
                let entry = self.load_index(&meta.location).await?;
                Ok::<_, StorageError>(entry.map(|e| BlobInfo {
                    digest,
                    size: e.size,
                    modified: SystemTime::from(meta.last_modified),
                }))
            })
            .buffered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(BlobPage {
            blobs: blobs.into_iter().flatten().collect(),
            next,
        })
    }

    fn locate(&self, digest: &Digest) -> Option<String> {
        Some(format!("{}/{}", self.name, Self::index_key(digest)))
    }

    async fn quarantine(&self, digest: &Digest) -> Result<Option<String>, StorageError> {
        let index = self.key(&Self::index_key(digest));
        let Some(entry) = self.load_index(&index).await? else {
            return Ok(None);
        };
        let aside = self.key(&format!(
            "quarantine/{}/{}",
            digest.algorithm().as_str(),
            digest.hex()
        ));
        // Only the later bytes are kept when a digest is moved aside twice.
        if let Some(previous) = self.load_index(&aside).await? {
            self.delete_quietly(&self.key(&previous.data), "deleting quarantined bytes")
                .await?;
        }
        self.put_json(&aside, &entry, "moving a blob aside").await?;
        self.delete_quietly(&index, "moving a blob aside").await?;
        Ok(Some(format!("{}/{}", self.name, entry.data)))
    }

    async fn upload_create(&self, id: &str) -> Result<(), StorageError> {
        let state = UploadState {
            session: format!("{id}-{}", uuid::Uuid::new_v4().simple()),
            size: 0,
            multipart: None,
            parts: Vec::new(),
            parts_len: 0,
            tail: None,
            hash: ResumableSha256::default(),
            sealed: None,
        };
        self.save_state(id, &state).await
    }

    async fn upload_append(
        &self,
        id: &str,
        at: u64,
        mut data: ByteStream,
    ) -> Result<u64, StorageError> {
        let lock = self.upload_lock(id);
        let _held = lock.lock().await;
        let mut state = self
            .load_state(id)
            .await?
            .ok_or_else(|| StorageError::UploadUnknown(id.to_owned()))?;
        if at != state.size {
            return Err(StorageError::OffsetMismatch {
                expected: state.size,
                got: at,
            });
        }
        if state.sealed.is_some() {
            return Err(StorageError::Io {
                context: "appending to an upload",
                source: std::io::Error::other(
                    "the upload was completed by a commit against a digest other than sha256 \
                     and takes no more bytes",
                ),
            });
        }
        // Each part is filled in a buffer of its own, of the part size, taken from the
        // pool and given back once sent: no buffer grows or is copied while parts cut from
        // it are still being sent, and none is allocated again for every part.
        let part_size = self.buffers.size();
        let mut buffer = self.buffers.take();
        buffer.extend_from_slice(&self.read_tail(&state).await?);
        // A full part kept back, so that the end of the body finds a whole part to send
        // rather than a tail to store and read back.
        let mut held: Option<Bytes> = None;
        let mut failure = None;
        // Parts being sent, oldest first; dropping the queue (on an error) aborts them.
        let mut sending: VecDeque<PartTask> = VecDeque::new();
        while let Some(chunk) = data.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            state.hash.update(&chunk);
            state.size += chunk.len() as u64;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let n = rest.len().min(part_size.saturating_sub(buffer.len()));
                buffer.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if buffer.len() >= part_size {
                    let full = std::mem::replace(&mut buffer, self.buffers.take());
                    if let Some(part) = held.replace(full.freeze()) {
                        if sending.len() >= PARTS_IN_FLIGHT {
                            self.part_done(&mut state, &mut sending).await?;
                        }
                        let index = state.parts.len() + sending.len();
                        sending.push_back(self.start_part(&mut state, index, vec![part]).await?);
                    }
                }
            }
        }
        // Every byte received is kept, also when the body failed: the parts are sent, the
        // part kept back with the rest as the last one (two pieces, no copy), and a rest
        // under one part alone becomes the tail.
        if let Some(part) = held.take() {
            // The rest goes with its whole buffer (not a split-off piece), so that the
            // buffer returns to the pool at its full capacity.
            let rest = std::mem::take(&mut buffer).freeze();
            let index = state.parts.len() + sending.len();
            sending.push_back(self.start_part(&mut state, index, vec![part, rest]).await?);
        }
        while !sending.is_empty() {
            self.part_done(&mut state, &mut sending).await?;
        }
        let tail = buffer.freeze();
        self.store_tail(id, &mut state, tail.clone()).await?;
        self.buffers.give(tail);
        match failure {
            Some(e) => Err(StorageError::Body(e)),
            None => Ok(state.size),
        }
    }

    async fn upload_size(&self, id: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.load_state(id).await?.map(|s| s.size))
    }

    async fn upload_commit(&self, id: &str, expected: &Digest) -> Result<u64, StorageError> {
        let lock = self.upload_lock(id);
        let held = lock.lock().await;
        let mut state = self
            .load_state(id)
            .await?
            .ok_or_else(|| StorageError::UploadUnknown(id.to_owned()))?;
        let data = if expected.algorithm() == Algorithm::Sha256 && state.sealed.is_none() {
            let actual = state.hash.hex();
            if actual != expected.hex() {
                let actual = format!("sha256:{actual}")
                    .parse()
                    .map_err(|e| StorageError::Io {
                        context: "hashing an upload",
                        source: std::io::Error::other(e),
                    })?;
                return Err(StorageError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            let had_parts = state.multipart.is_some();
            let data = self.finish_data(&mut state).await?;
            if had_parts {
                // The multipart upload is completed and cannot be completed again: a
                // commit retried after a failure below must find the object instead.
                state.sealed = Some(data.clone());
                self.save_state(id, &state).await?;
            }
            data
        } else {
            // The bytes must be read back: complete the upload, record that it is sealed,
            // then hash what was stored.
            let data = self.finish_data(&mut state).await?;
            if state.sealed.is_none() {
                state.sealed = Some(data.clone());
                self.save_state(id, &state).await?;
            }
            let actual = self.hash_object(&data, expected.algorithm()).await?;
            if &actual != expected {
                return Err(StorageError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            data
        };

        let index = self.key(&Self::index_key(expected));
        let entry = IndexEntry {
            data: data.clone(),
            size: state.size,
        };
        match self.load_index(&index).await? {
            // Already stored: these bytes are a duplicate.
            Some(_) => {
                self.delete_quietly(&self.key(&data), "deleting duplicate bytes")
                    .await?
            }
            None => {
                self.put_json(&index, &entry, "writing a blob's index entry")
                    .await?;
                // Two commits of one digest at the same time may both have written the
                // entry: the one whose entry did not stay drops its bytes. (A loser that
                // reads back before the winner writes keeps its bytes, which are then
                // orphaned: space, never a wrong blob.)
                if let Some(now) = self.load_index(&index).await? {
                    if now.data != data {
                        self.delete_quietly(&self.key(&data), "deleting duplicate bytes")
                            .await?;
                    }
                }
            }
        }
        self.delete_quietly(&self.key(&Self::state_key(id)), "ending an upload")
            .await?;
        drop(held);
        self.forget_lock(id);
        Ok(state.size)
    }

    async fn upload_abort(&self, id: &str) -> Result<(), StorageError> {
        let lock = self.upload_lock(id);
        let held = lock.lock().await;
        let result = self.abort_locked(id).await;
        drop(held);
        self.forget_lock(id);
        result
    }

    async fn upload_abort_if_idle(&self, id: &str) -> Result<bool, StorageError> {
        let lock = self.upload_lock(id);
        let Ok(held) = lock.try_lock() else {
            return Ok(false);
        };
        let result = self.abort_locked(id).await;
        drop(held);
        self.forget_lock(id);
        result.map(|()| true)
    }

    async fn upload_list(&self) -> Result<Vec<String>, StorageError> {
        let folder = self.key("_uploads");
        let listed = self
            .store
            .list_with_delimiter(Some(&folder))
            .await
            .map_err(os_err("listing uploads"))?;
        // The state objects themselves, not folders: some servers (SeaweedFS) keep a
        // folder after its last object is deleted, and list an empty folder as an object.
        Ok(listed
            .objects
            .iter()
            .filter(|m| m.location != folder)
            .filter_map(|m| m.location.filename().map(str::to_owned))
            .collect())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        // A listing fails on a missing bucket or bad credentials, unlike a HEAD of an
        // absent key, whose 404 says nothing about the bucket.
        self.store
            .list_with_delimiter(Some(&self.key("_uploads")))
            .await
            .map_err(os_err("checking the bucket"))?;
        Ok(())
    }

    async fn redirect_url(
        &self,
        digest: &Digest,
        expires: Duration,
    ) -> Result<Option<String>, StorageError> {
        let entry = self
            .load_index(&self.key(&Self::index_key(digest)))
            .await?
            .ok_or_else(|| StorageError::BlobUnknown(digest.clone()))?;
        let url = self
            .store
            .signed_url(http::Method::GET, &self.key(&entry.data), expires)
            .await
            .map_err(os_err("signing a blob URL"))?;
        Ok(Some(url.to_string()))
    }
}

/// A part being sent in a task of its own; aborted when dropped unfinished (an append
/// that failed does not leave parts being sent behind it).
struct PartTask {
    handle: tokio::task::JoinHandle<Result<(String, u64), object_store::Error>>,
    /// The bytes of the part, which the task sends clones of.
    pieces: Vec<Bytes>,
}

impl PartTask {
    /// Waits for the part: its id and length. Its buffers then go back to `buffers`: the
    /// task is over, so nothing else holds their bytes.
    async fn finish(mut self, buffers: &BufferPool) -> Result<(String, u64), StorageError> {
        let sent = (&mut self.handle).await;
        for piece in std::mem::take(&mut self.pieces) {
            buffers.give(piece);
        }
        match sent {
            Ok(sent) => sent.map_err(os_err("uploading a part")),
            Err(e) => Err(StorageError::Io {
                context: "uploading a part",
                source: std::io::Error::other(e),
            }),
        }
    }
}

impl Drop for PartTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl S3BlobStore {
    /// Waits for the oldest part being sent and records it in `state`.
    async fn part_done(
        &self,
        state: &mut UploadState,
        sending: &mut VecDeque<PartTask>,
    ) -> Result<(), StorageError> {
        if let Some(task) = sending.pop_front() {
            let (id, len) = task.finish(&self.buffers).await?;
            state.parts.push(id);
            state.parts_len += len;
        }
        Ok(())
    }

    /// Drops an upload's objects; the caller holds its lock.
    async fn abort_locked(&self, id: &str) -> Result<(), StorageError> {
        let Some(state) = self.load_state(id).await? else {
            return Ok(());
        };
        if let Some(multipart) = &state.multipart {
            let key = self.key(&Self::data_key(&state));
            match self.store.abort_multipart(&key, multipart).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(os_err("aborting a multipart upload")(e)),
            }
        }
        for key in state.tail.iter().chain(state.sealed.iter()) {
            self.delete_quietly(&self.key(key), "deleting an upload's bytes")
                .await?;
        }
        self.delete_quietly(&self.key(&Self::state_key(id)), "ending an upload")
            .await
    }
}

#[cfg(test)]
mod tests;
