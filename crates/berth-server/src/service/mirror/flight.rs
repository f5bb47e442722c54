//! One download of a mirror blob, shared by every client that asks for the blob while it
//! runs, and streamed to each of them as it arrives.
//!
//! The download is a task of its own (spawned by [`Registry::mirror_flight`]), owned by
//! no client: a client that goes away costs the others nothing, and the cache fills
//! whoever is still reading. The task tees the upstream body into two sinks:
//!
//! - the blob store's verified [`Registry::put_blob`], the ordinary commit path: the
//!   digest is checked before the blob becomes visible, and a mismatch stores nothing;
//! - a spill file, anonymous (unlinked as it is created) so that nothing is left behind
//!   whatever happens, which clients read with positioned reads as it grows.
//!
//! A [`watch`] channel publishes the flight's [`FlightState`]: the size the upstream's
//! HEAD gave, how many bytes the spill file holds, and the outcome. A client's body
//! ([`MirrorPull::open`]) reads the spill file up to what is written but holds back the
//! last [`HELD_BACK`] bytes of what it asked for until the blob is committed, so that no
//! client ever receives a complete body of content that turns out not to match its
//! digest: on a mismatch or an upstream failure the body ends with an error instead.
//!
//! Memory stays bounded whatever the blob's size: at most [`STORE_QUEUE`] upstream chunks
//! wait for the blob store (the tee waits for it, so a slow store slows the download
//! rather than filling memory), and each client holds one read of at most
//! [`READ_CHUNK`] bytes at a time.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use berth_oci::{Digest, RepoName};
use berth_storage::ByteStream;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::super::{Registry, RegistryError, Result};

/// The bytes at the end of a requested range that a client receives only once the blob
/// is verified and stored. Holding back any byte is enough to make a wrong body
/// incomplete; 64 KiB also covers a client that would act on a body as soon as it has
/// seen most of it.
pub const HELD_BACK: u64 = 64 << 10;

/// The most bytes read from the spill file for one chunk of a client's body.
const READ_CHUNK: u64 = 256 << 10;

/// Upstream chunks that may wait for the blob store before the tee stops reading.
const STORE_QUEUE: usize = 8;

/// What the clients of a download see of it.
#[derive(Clone, Default)]
pub(super) struct FlightState {
    /// The blob's size as the upstream's HEAD gave it, once known.
    pub size: Option<u64>,
    /// The spill file, once the upstream's body is on its way (`None` when it could not
    /// be created: clients then wait for the commit).
    pub spill: Option<Arc<std::fs::File>>,
    /// Bytes of the blob, from its start, that the spill file holds.
    pub written: u64,
    /// The spill file could not be written to: bytes past `written` come from the blob
    /// store once the blob is committed.
    pub spill_failed: bool,
    /// The stored size once the blob is committed, or why it was not.
    pub outcome: Option<std::result::Result<u64, Arc<RegistryError>>>,
}

/// A running download of a mirror blob that a `GET` reads as it arrives.
pub struct MirrorPull {
    registry: Arc<Registry>,
    repo: RepoName,
    digest: Digest,
    size: u64,
    spill: Arc<std::fs::File>,
    state: watch::Receiver<FlightState>,
}

impl MirrorPull {
    pub(super) fn new(
        registry: Arc<Registry>,
        repo: RepoName,
        digest: Digest,
        size: u64,
        spill: Arc<std::fs::File>,
        state: watch::Receiver<FlightState>,
    ) -> MirrorPull {
        MirrorPull {
            registry,
            repo,
            digest,
            size,
            spill,
            state,
        }
    }

    /// The blob's size (from the upstream's HEAD): what the response announces.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes of `range` (or of the whole blob) as they arrive. Waits until the first
    /// of them may be sent, so that a download that fails before (a small blob, whose
    /// bytes are all held back, most of all) is an ordinary error answer; later failures
    /// end the stream with an error. Counts the bytes as served.
    pub async fn open(self, range: Option<Range<u64>>) -> Result<ByteStream> {
        let want = range.unwrap_or(0..self.size);
        let hold = want.end.saturating_sub(HELD_BACK).max(want.start);
        let mut state = self.state;
        let start = want.start;
        let ready = state
            .wait_for(|s| s.outcome.is_some() || (!s.spill_failed && s.written.min(hold) > start))
            .await
            .map(|s| s.outcome.clone());
        match ready {
            Ok(Some(Err(e))) => return Err(shared(&e)),
            Ok(_) => {}
            Err(_) => return Err(abandoned(&self.digest)),
        }
        self.registry
            .served(&self.repo, want.end - want.start)
            .await;
        let reader = Reader {
            registry: self.registry,
            digest: self.digest,
            size: self.size,
            spill: self.spill,
            state,
            pos: want.start,
            end: want.end,
            hold,
            store: None,
            done: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(reader, Reader::next)))
    }
}

/// One client's position in a download.
struct Reader {
    registry: Arc<Registry>,
    digest: Digest,
    size: u64,
    spill: Arc<std::fs::File>,
    state: watch::Receiver<FlightState>,
    pos: u64,
    end: u64,
    /// Bytes from here to `end` wait for the commit.
    hold: u64,
    /// The rest read from the blob store, when the spill file stopped short.
    store: Option<ByteStream>,
    done: bool,
}

impl Reader {
    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Reader)> {
        if let Some(store) = self.store.as_mut() {
            let item = store.next().await?;
            return Some((item, self));
        }
        if self.done || self.pos >= self.end {
            return None;
        }
        loop {
            let st = self.state.borrow_and_update().clone();
            let committed = match &st.outcome {
                Some(Ok(stored)) if *stored == self.size => true,
                Some(Ok(stored)) => {
                    let message = format!(
                        "the upstream announced {} bytes for {} but sent {stored}",
                        self.size, self.digest
                    );
                    return Some(self.fail(message));
                }
                Some(Err(e)) => {
                    let message = e.to_string();
                    return Some(self.fail(message));
                }
                None => false,
            };
            let ready = if committed { self.end } else { self.hold };
            let limit = ready.min(st.written);
            if self.pos < limit {
                let len = (limit - self.pos).min(READ_CHUNK);
                return match read_at(self.spill.clone(), self.pos, len).await {
                    Ok(bytes) => {
                        self.pos += len;
                        Some((Ok(bytes), self))
                    }
                    Err(e) => Some(self.fail(format!("reading the mirror's spill file: {e}"))),
                };
            }
            if committed {
                // The spill file stopped short of the end: the blob is stored, so the
                // rest comes from the store.
                return match self
                    .registry
                    .blobs
                    .get(&self.digest, Some(self.pos..self.end))
                    .await
                {
                    Ok(body) => {
                        let mut stream = body.stream;
                        let item = stream.next().await?;
                        self.store = Some(stream);
                        Some((item, self))
                    }
                    Err(e) => Some(self.fail(format!("reading the stored blob: {e}"))),
                };
            }
            if self.state.changed().await.is_err() {
                let message = abandoned(&self.digest).to_string();
                return Some(self.fail(message));
            }
        }
    }

    /// Ends the body with an error, which makes the server abort the response: the client
    /// sees a body shorter than announced, never a complete one.
    fn fail(mut self, message: String) -> (std::io::Result<Bytes>, Reader) {
        self.done = true;
        (Err(std::io::Error::other(message)), self)
    }
}

async fn read_at(file: Arc<std::fs::File>, at: u64, len: u64) -> std::io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0; usize::try_from(len).map_err(std::io::Error::other)?];
        file.read_exact_at(&mut buf, at)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)?
}

async fn write_at(file: Arc<std::fs::File>, chunk: Bytes, at: u64) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || file.write_all_at(&chunk, at))
        .await
        .map_err(std::io::Error::other)?
}

/// The error of a flight whose task ended without an outcome (it panicked, or the
/// runtime is shutting down).
pub(super) fn abandoned(digest: &Digest) -> RegistryError {
    RegistryError::MirrorUpstream(format!("the mirror's download of {digest} was abandoned"))
}

/// The outcome of a shared download as each of its clients gets it (an error is not
/// `Clone`): what a client can act on is kept, an internal cause (logged by the flight)
/// becomes a general answer.
pub(super) fn shared(e: &RegistryError) -> RegistryError {
    match e {
        RegistryError::BlobUnknown { repo, digest } => RegistryError::BlobUnknown {
            repo: repo.clone(),
            digest: digest.clone(),
        },
        RegistryError::MirrorUpstream(m) => RegistryError::MirrorUpstream(m.clone()),
        RegistryError::QuotaExceeded {
            repo,
            used,
            limit,
            attempted,
        } => RegistryError::QuotaExceeded {
            repo: repo.clone(),
            used: *used,
            limit: *limit,
            attempted: *attempted,
        },
        RegistryError::BlobBusy(d) => RegistryError::BlobBusy(d.clone()),
        RegistryError::StorageFull(cause) => RegistryError::StorageFull(cause.to_string().into()),
        RegistryError::Exhausted(cause) => RegistryError::Exhausted(cause.to_string().into()),
        _ => RegistryError::MirrorUpstream(
            "the mirror could not store the blob it fetched; the server's log says why".into(),
        ),
    }
}

/// Tees the upstream body into the blob store's upload (`store`) and the spill file,
/// publishing the bytes the spill file holds. Returns when the upstream body ends or
/// fails (the failure is handed to the store, whose upload then fails) or the store
/// stops reading; dropping `store` ends the upload's body.
pub(super) async fn tee(
    mut upstream: ByteStream,
    store: mpsc::Sender<std::io::Result<Bytes>>,
    spill: Option<Arc<std::fs::File>>,
    state: &watch::Sender<FlightState>,
) {
    let mut spill = spill;
    let mut written = 0u64;
    while let Some(item) = upstream.next().await {
        let chunk = match item {
            Ok(chunk) => chunk,
            Err(e) => {
                // The store's upload fails with it: nothing is committed.
                let _ = store.send(Err(e)).await;
                return;
            }
        };
        let len = chunk.len() as u64;
        let to_spill = async {
            match &spill {
                Some(file) => Some(write_at(file.clone(), chunk.clone(), written).await),
                None => None,
            }
        };
        let (sent, spilled) = tokio::join!(store.send(Ok(chunk.clone())), to_spill);
        if sent.is_err() {
            // The upload stopped reading (it failed): its error is the outcome.
            return;
        }
        match spilled {
            Some(Ok(())) => {
                written += len;
                state.send_modify(|s| s.written = written);
            }
            Some(Err(e)) => {
                // The download goes on into the store; clients past this point wait
                // for the commit and read the rest from there.
                tracing::warn!(error = %e, "cannot write the mirror's spill file; clients wait for the stored blob");
                spill = None;
                state.send_modify(|s| s.spill_failed = true);
            }
            None => {}
        }
    }
}

/// The body of the blob store's upload: what the tee sends.
pub(super) fn store_body(mut rx: mpsc::Receiver<std::io::Result<Bytes>>) -> ByteStream {
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// The queue between the tee and the blob store.
pub(super) fn store_queue() -> (
    mpsc::Sender<std::io::Result<Bytes>>,
    mpsc::Receiver<std::io::Result<Bytes>>,
) {
    mpsc::channel(STORE_QUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_tee_fills_the_spill_file_and_the_store_alike() {
        let spill = Arc::new(tempfile::tempfile().unwrap());
        let chunks: Vec<std::io::Result<Bytes>> = (0..20u8)
            .map(|i| Ok(Bytes::from(vec![i; 1000 + usize::from(i)])))
            .collect();
        let expected: Vec<u8> = chunks
            .iter()
            .flat_map(|c| c.as_ref().unwrap().to_vec())
            .collect();
        let upstream: ByteStream = Box::pin(futures_util::stream::iter(chunks));
        let (tx, rx) = store_queue();
        let (state, watcher) = watch::channel(FlightState::default());
        let reading = tokio::spawn(async move {
            let mut body = store_body(rx);
            let mut got = Vec::new();
            while let Some(chunk) = body.next().await {
                got.extend_from_slice(&chunk.unwrap());
            }
            got
        });
        tee(upstream, tx, Some(spill.clone()), &state).await;
        assert_eq!(reading.await.unwrap(), expected);
        assert_eq!(watcher.borrow().written, expected.len() as u64);
        let mut back = vec![0; expected.len()];
        spill.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, expected);
    }

    #[tokio::test]
    async fn an_upstream_failure_reaches_the_store() {
        let items: Vec<std::io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"some")),
            Err(std::io::Error::other("connection reset")),
            Ok(Bytes::from_static(b"never")),
        ];
        let upstream: ByteStream = Box::pin(futures_util::stream::iter(items));
        let (tx, rx) = store_queue();
        let (state, _watcher) = watch::channel(FlightState::default());
        tee(upstream, tx, None, &state).await;
        let got: Vec<_> = store_body(rx).collect().await;
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok() && got[1].is_err());
    }

    #[test]
    fn shared_errors_keep_what_clients_act_on() {
        let repo = RepoName::parse("docker.io/library/x").unwrap();
        let digest = Digest::sha256(b"x");
        let unknown = RegistryError::BlobUnknown {
            repo: repo.clone(),
            digest: digest.clone(),
        };
        assert!(matches!(
            shared(&unknown),
            RegistryError::BlobUnknown { .. }
        ));
        let internal = RegistryError::DigestMissing;
        let RegistryError::MirrorUpstream(m) = shared(&internal) else {
            panic!("an internal cause is not shown");
        };
        assert!(m.contains("log"), "{m}");
    }
}
