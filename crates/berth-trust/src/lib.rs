//! Release trust without I/O: signing keys, the signature and attestation formats
//! cosign reads and writes, the OCI manifests that carry them, and their verification.
//!
//! Everything here is a pure function over bytes, so both the client (`berth sign`,
//! `berth verify`) and the server (its trust policy, which must verify without network
//! I/O and caches verdicts) call the same code. Fetching and pushing manifests and blobs
//! is the caller's job.
//!
//! # Layout
//! - [`keys`]: ECDSA P-256/P-384 and Ed25519 keys: generation, cosign's encrypted PEM,
//!   PKCS#8, SEC1 and PKIX, fingerprints, raw signing and verification.
//! - [`encrypted`]: cosign's scrypt + NaCl secretbox private key encryption.
//! - [`signer`]: the [`Signer`] trait (the seam for keyless signing) and [`KeySigner`].
//! - [`simple_signing`]: cosign v2 signatures (simple-signing payloads).
//! - [`intoto`]: in-toto v1 statements and predicate type names.
//! - [`dsse`]: DSSE envelopes and their pre-authentication encoding.
//! - [`bundle`]: Sigstore bundles v0.3.
//! - [`oci`]: the bundle referrer manifest and the legacy `.sig` / `.att` manifests.
//! - [`verify`]: verification into a [`Verdict`] or a typed [`VerifyError`].
//! - [`error`]: the error types.
//!
//! **Invariant:** no network, file or terminal I/O, no async runtime, no HTTP types; no
//! `unwrap` on input: malformed, truncated or hostile bytes give an error, never a panic.
//! Keyless signing and verification (Fulcio, Rekor) are not implemented, not faked.

pub mod bundle;
pub mod dsse;
pub mod encrypted;
pub mod error;
pub mod intoto;
pub mod keys;
pub mod oci;
pub mod signer;
pub mod simple_signing;
pub mod verify;

pub use error::{FormatError, KeyError, SignError, VerifyError};
pub use keys::{KeyAlgorithm, PrivateKey, PublicKey};
pub use signer::{KeySigner, Signer};
pub use verify::{Requirements, SignatureFormat, Verdict};
