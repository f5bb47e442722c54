//! Manifests as exact bytes, and the small pieces every transport shares: blob streams,
//! digest verification while streaming, platform matching.
//!
//! **Invariant:** a manifest that is copied is never re-serialized. [`Manifest::bytes`]
//! are the bytes that were fetched, and its digest is computed over them.

use std::pin::Pin;
use std::task::{Context, Poll};

use berth_oci::{media_types as mt, Descriptor, Digest, Hasher, ParsedManifest, Platform};
use bytes::Bytes;
use futures_util::Stream;

use crate::error::{ClientError, Result};

/// A stream of blob bytes.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Largest manifest the client will read (Distribution's limit is 4 MiB too).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A manifest or index: its exact bytes, media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaTypeOnly {
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
}

impl Manifest {
    /// Wraps fetched bytes; the media type comes from the body's `mediaType` when it has
    /// one, else from `content_type` unless that is generic, else from the shape.
    pub fn from_bytes(bytes: Bytes, content_type: Option<&str>) -> Result<Manifest> {
        let digest = Digest::sha256(&bytes);
        Self::with_digest(bytes, content_type, digest)
    }

    /// Like [`Manifest::from_bytes`] with a digest computed by the caller.
    pub fn with_digest(
        bytes: Bytes,
        content_type: Option<&str>,
        digest: Digest,
    ) -> Result<Manifest> {
        let probe: MediaTypeOnly = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::invalid(format!("manifest {digest}"), e))?;
        let header = content_type
            .map(berth_oci::manifest::essence)
            .filter(|t| mt::MANIFEST_TYPES.contains(t));
        let media_type = match (probe.media_type, header) {
            (Some(t), _) => t,
            (None, Some(h)) => h.to_owned(),
            (None, None) if probe.manifests.is_some() => mt::OCI_INDEX.to_owned(),
            (None, None) => mt::OCI_MANIFEST.to_owned(),
        };
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Checks that the bytes hash to `expected` (with `expected`'s algorithm).
    pub fn verify(&self, expected: &Digest) -> Result<()> {
        let actual = Digest::of(expected.algorithm(), &self.bytes);
        if &actual != expected {
            return Err(ClientError::DigestMismatch {
                what: "manifest".into(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Parses the manifest for its references.
    pub fn parse(&self) -> Result<ParsedManifest> {
        ParsedManifest::parse(&self.bytes, Some(&self.media_type))
            .map_err(|e| ClientError::invalid(format!("manifest {}", self.digest), e))
    }

    /// True for an OCI index or Docker manifest list.
    pub fn is_index(&self) -> bool {
        mt::is_index(&self.media_type)
    }

    /// A descriptor pointing at this manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            urls: Vec::new(),
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        }
    }
}

/// A `--platform` filter: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformFilter {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::str::FromStr for PlatformFilter {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(PlatformFilter {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
                Ok(PlatformFilter {
                    os: (*os).into(),
                    architecture: (*arch).into(),
                    variant: Some((*v).into()),
                })
            }
            _ => Err(ClientError::Usage(format!(
                "platform {s:?} is not of the form os/arch[/variant], e.g. linux/arm64"
            ))),
        }
    }
}

impl std::fmt::Display for PlatformFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl PlatformFilter {
    /// The platform of this machine (Linux images are what runs here, even on macOS).
    pub fn host() -> PlatformFilter {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        PlatformFilter {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// True when `p` matches; a filter without variant matches any variant.
    pub fn matches(&self, p: &Platform) -> bool {
        p.os == self.os
            && p.architecture == self.architecture
            && self
                .variant
                .as_ref()
                .is_none_or(|v| p.variant.as_deref() == Some(v.as_str()))
    }
}

/// Wraps a blob stream so that it fails at its end unless it delivered exactly
/// `expected.size` bytes hashing to `expected.digest`; `on_bytes` sees each chunk's size.
pub fn verify_stream(
    inner: BlobStream,
    expected: &Descriptor,
    on_bytes: Box<dyn Fn(u64) + Send + Sync>,
) -> BlobStream {
    Box::pin(Verify {
        inner,
        hasher: Some(Hasher::new(expected.digest.algorithm())),
        digest: expected.digest.clone(),
        size: expected.size,
        seen: 0,
        on_bytes,
        finished: false,
    })
}

struct Verify {
    inner: BlobStream,
    hasher: Option<Hasher>,
    digest: Digest,
    size: u64,
    seen: u64,
    on_bytes: Box<dyn Fn(u64) + Send + Sync>,
    /// Set once an error or the end was returned; the stream is fused after that.
    finished: bool,
}

impl Stream for Verify {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        let item = Self::step(this, cx);
        if matches!(item, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.finished = true;
        }
        item
    }
}

impl Verify {
    fn step(this: &mut Verify, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.size {
                    this.hasher = None;
                    return Poll::Ready(Some(Err(ClientError::SizeMismatch {
                        what: format!("blob {}", this.digest),
                        expected: this.size,
                        actual: this.seen,
                    })));
                }
                if let Some(h) = this.hasher.as_mut() {
                    h.update(&chunk);
                }
                // Check the digest before handing over the last bytes: an HTTP body with
                // a Content-Length is complete once they are sent, so a later error
                // would come too late to stop the upload.
                if this.seen == this.size {
                    if let Some(h) = this.hasher.take() {
                        let actual = h.finish();
                        if actual != this.digest {
                            return Poll::Ready(Some(Err(ClientError::DigestMismatch {
                                what: "blob".into(),
                                expected: this.digest.clone(),
                                actual,
                            })));
                        }
                    }
                }
                (this.on_bytes)(chunk.len() as u64);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                if this.seen != this.size {
                    this.hasher = None;
                    return Poll::Ready(Some(Err(ClientError::SizeMismatch {
                        what: format!("blob {}", this.digest),
                        expected: this.size,
                        actual: this.seen,
                    })));
                }
                // An empty blob never saw a chunk: check it here.
                if let Some(h) = this.hasher.take() {
                    let actual = h.finish();
                    if actual != this.digest {
                        return Poll::Ready(Some(Err(ClientError::DigestMismatch {
                            what: "blob".into(),
                            expected: this.digest.clone(),
                            actual,
                        })));
                    }
                }
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{stream, StreamExt, TryStreamExt};

    fn desc(data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: mt::OCI_LAYER_GZIP.into(),
            digest: Digest::sha256(data),
            size: data.len() as u64,
            urls: vec![],
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> BlobStream {
        let v: Vec<Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        stream::iter(v).boxed()
    }

    #[tokio::test]
    async fn verifies_digest_and_size() {
        let d = desc(b"hello world");
        let ok: Vec<Bytes> = verify_stream(chunks(&[b"hello ", b"world"]), &d, Box::new(|_| {}))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(ok.concat(), b"hello world");
        let bad = verify_stream(chunks(&[b"hello ", b"there"]), &d, Box::new(|_| {}))
            .try_collect::<Vec<_>>()
            .await;
        assert!(matches!(bad, Err(ClientError::DigestMismatch { .. })));
        let short = verify_stream(chunks(&[b"hello"]), &d, Box::new(|_| {}))
            .try_collect::<Vec<_>>()
            .await;
        assert!(matches!(short, Err(ClientError::SizeMismatch { .. })));
        let long = verify_stream(chunks(&[b"hello world!"]), &d, Box::new(|_| {}))
            .try_collect::<Vec<_>>()
            .await;
        assert!(matches!(long, Err(ClientError::SizeMismatch { .. })));
    }

    #[test]
    fn media_type_inference_and_platforms() {
        let m = Manifest::from_bytes(
            Bytes::from_static(br#"{"schemaVersion":2,"manifests":[]}"#),
            Some("application/json"),
        )
        .unwrap();
        assert_eq!(m.media_type, mt::OCI_INDEX);
        assert!(m.is_index());
        let m = Manifest::from_bytes(
            Bytes::from_static(br#"{"schemaVersion":2}"#),
            Some(mt::DOCKER_MANIFEST),
        )
        .unwrap();
        assert_eq!(m.media_type, mt::DOCKER_MANIFEST);
        m.verify(&m.digest).unwrap();
        assert!(m.verify(&Digest::sha256(b"x")).is_err());

        let f: PlatformFilter = "linux/arm64".parse().unwrap();
        let p = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
            ..Default::default()
        };
        assert!(f.matches(&p));
        assert!(!"linux/arm64/v7"
            .parse::<PlatformFilter>()
            .unwrap()
            .matches(&p));
        assert!("linux".parse::<PlatformFilter>().is_err());
        assert_eq!(f.to_string(), "linux/arm64");
    }
}
