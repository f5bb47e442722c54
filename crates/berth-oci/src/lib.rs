//! Pure OCI types shared by the Berth server and client.
//!
//! # Layout
//! - [`archive`]: the entries, order and tar headers of `docker-archive` and
//!   `oci-archive` tarballs, as a plan of byte segments (shared by the server's tarball
//!   downloads and the client's archive writer).
//! - [`digest`]: content digests (`sha256:…`, `sha512:…`) and streaming hashers.
//! - [`name`]: validated repository names and tags ([`RepoName`], [`Tag`]).
//! - [`reference`]: the `<reference>` part of a manifest URL (tag or digest).
//! - [`media_types`]: the media type constants of OCI and Docker.
//! - [`manifest`]: tolerant parsing of manifests and indexes into what a registry
//!   needs to know (references, subject, platform, annotations).
//! - [`config`]: the platform an image config declares.
//! - [`version`]: release and floating tags, and the versions they name.
//! - [`error`]: the one table of OCI Distribution error codes and HTTP statuses.
//! - [`time`]: the current unix time, RFC 3339 timestamps and dates of unix times.
//!
//! **Invariant:** this crate does no I/O. It knows nothing about HTTP servers, storage
//! or databases, so both the server and the client can depend on it.

pub mod archive;
pub mod config;
pub mod digest;
pub mod error;
pub mod manifest;
pub mod media_types;
pub mod name;
pub mod reference;
pub mod time;
pub mod version;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::ErrorCode;
pub use manifest::{Descriptor, ManifestError, ManifestKind, ParsedManifest, Platform};
pub use name::{NameError, RepoName, Tag};
pub use reference::Reference;
