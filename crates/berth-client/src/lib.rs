//! The Berth client: copy, push, pull and inspect images between any OCI registry, OCI
//! image layout directories and `docker save`/OCI tarballs.
//!
//! # Layout
//! - [`reference`]: Docker-style image references (`host[:port]/path[:tag][@digest]`).
//! - [`location`]: a registry reference or a local transport (`oci:`, `oci-archive:`,
//!   `docker-archive:`).
//! - [`auth`]: the Docker config file, `WWW-Authenticate` challenges, token fetches.
//! - [`registry`]: the HTTP client for one registry (manifests, blobs, uploads, tags,
//!   catalog) with auth, retries and resumable transfers.
//! - [`referrers`]: the OCI 1.1 referrers API, with the referrers tag schema as the
//!   fallback for listing and kept up to date when pushing or deleting referrers.
//! - [`sign`]: signing images and attaching attestations (cosign v3 bundle referrers
//!   or cosign v2 `.sig`/`.att` layers) with a [`berth_trust::Signer`].
//! - [`image`]: manifests as exact bytes, blob streams, digest verification, platforms.
//! - [`layout`] and [`archive`]: OCI layout directories and tarballs, read and written.
//! - [`tls`]: trusted roots, `--ca-cert`, and accepting a self-signed certificate the
//!   user gave (even a CA certificate used as the server's own).
//! - [`transport`]: registries as sources and destinations; opening any location.
//! - [`copy`]: the copy engine over the [`copy::ImageSource`]/[`copy::ImageDestination`]
//!   pair, with parallel blob transfer, skip, mount and retry.
//! - [`inspect`]: what an image is made of (platforms, config, layers, sizes).
//! - [`layers`]: the layer report (sizes, wasted and duplicate bytes, the zstd
//!   estimate, the efficiency score), each layer streamed once.
//! - [`sbom`]: an image's inventory (with `berth_sbom`, layers streamed in parallel)
//!   and SBOM referrers.
//! - [`index`]: assembling and editing multi-platform indexes.
//! - [`verify`]: finding a digest's signatures, attestations and SBOMs and checking
//!   them with `berth_trust`; the release check (`berth verify --release`).
//! - [`progress`]: progress bars, plain event lines, or nothing.
//! - [`error`]: [`ClientError`] and its exit codes.
//!
//! Layers call one way: commands → copy/inspect/index → transports → registry/layout/
//! archive → image/reference (the referrers module extends the registry client). Nothing here prints except the progress renderers, and
//! nothing knows about the command line.

pub mod archive;
pub mod auth;
pub mod copy;
pub mod error;
pub mod image;
pub mod index;
pub mod inspect;
pub mod layers;
pub mod layout;
pub mod location;
pub mod progress;
pub mod reference;
pub mod referrers;
pub mod registry;
pub mod sbom;
pub mod sign;
pub mod tls;
pub mod transport;
pub mod verify;

pub use copy::{copy_image, CopyOptions, CopyReport, ImageDestination, ImageSource};
pub use error::{ClientError, Result};
pub use image::{Manifest, PlatformFilter};
pub use location::Location;
pub use reference::ImageRef;
pub use registry::{ClientOptions, Clients, Registry};
pub use transport::{open_destination, open_source};
