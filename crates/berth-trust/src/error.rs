//! The errors of this crate, one enum per concern: reading and writing keys
//! ([`KeyError`]), signing ([`SignError`]), building or reading formats ([`FormatError`])
//! and verifying ([`VerifyError`]).
//!
//! Verification failures name what is wrong (the digest, the key, the bytes) so that the
//! client can print it and the server can log it; none of them carries secret material.

use berth_oci::Digest;

/// Why a key could not be read, written or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM key: {0}")]
    Pem(String),
    #[error("unsupported PEM block {0:?} (expected ENCRYPTED SIGSTORE PRIVATE KEY, ENCRYPTED COSIGN PRIVATE KEY, PRIVATE KEY, EC PRIVATE KEY or PUBLIC KEY)")]
    UnsupportedLabel(String),
    #[error("malformed key: {0}")]
    Malformed(String),
    #[error("unsupported key algorithm: {0} (supported: ECDSA P-256, ECDSA P-384, Ed25519)")]
    UnsupportedAlgorithm(String),
    #[error("malformed encrypted key: {0}")]
    MalformedEncryption(String),
    #[error("unsupported key encryption: {0} (supported: scrypt with nacl/secretbox)")]
    UnsupportedEncryption(String),
    #[error("wrong password for the encrypted private key (or the key file is corrupt)")]
    WrongPassword,
    #[error("the system random source failed: {0}")]
    Random(String),
}

/// Why something could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signing failed: {0}")]
    Failed(String),
    #[error("cannot serialise the payload: {0}")]
    Serialise(String),
}

/// Why a trust format could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("malformed manifest: {0}")]
    Manifest(String),
    #[error("unknown predicate type {0:?}: use slsaprovenance, slsaprovenance02, slsaprovenance1, spdx, spdxjson, cyclonedx, link, vuln, openvex, custom or a URI")]
    PredicateType(String),
    #[error("cannot serialise: {0}")]
    Serialise(String),
}

/// Why a signature or attestation did not verify.
///
/// A signature that does not verify is reported as [`VerifyError::WrongKey`] when the
/// signature names another key (a bundle's key hint), else as
/// [`VerifyError::BadSignature`]: cryptographically a tampered payload and a signature
/// by another key look the same, so the message says both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature does not match the signed payload under this key: the payload was altered or another key signed it")]
    BadSignature,
    #[error("signed by another key (hint {hint}) than the one given (hint {expected})")]
    WrongKey { expected: String, hint: String },
    #[error("the signature is for {signed}, not for {expected}")]
    DigestMismatch { expected: Digest, signed: String },
    #[error("the predicate type is {found:?}, not {expected:?}")]
    PredicateTypeMismatch { expected: String, found: String },
    #[error("the signed annotation {key}={expected:?} is missing (found {found:?})")]
    AnnotationMismatch {
        key: String,
        expected: String,
        found: Option<String>,
    },
    #[error("the layer's bytes do not match its digest {0}: they were altered")]
    LayerDigestMismatch(String),
    #[error("malformed or truncated {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl VerifyError {
    pub(crate) fn malformed(what: &'static str, reason: impl std::fmt::Display) -> VerifyError {
        VerifyError::Malformed {
            what,
            reason: reason.to_string(),
        }
    }
}
