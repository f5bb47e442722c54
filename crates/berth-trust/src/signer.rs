//! The [`Signer`] seam: what produces signatures for the formats of this crate.
//!
//! [`KeySigner`] signs with a private key held in memory. Keyless signing (an
//! ephemeral key certified by Fulcio, the signature logged in Rekor) needs the public
//! Sigstore services and is deliberately not implemented: a keyless signer would
//! implement this trait by returning a certificate chain as its verification material,
//! and the caller would add the transparency log entry to the bundle after signing.

use crate::bundle::VerificationMaterial;
use crate::error::SignError;
use crate::keys::{PrivateKey, PublicKey};

/// Produces signatures over bytes.
pub trait Signer: Send + Sync {
    /// Signs `message` (a simple-signing payload, or the PAE of a DSSE envelope). The
    /// signature is in the key's own format: ASN.1 DER for ECDSA, 64 bytes for Ed25519.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;

    /// What a verifier needs to find the signer's key, as a Sigstore bundle carries it.
    fn verification_material(&self) -> VerificationMaterial;
}

/// A signer holding a private key.
#[derive(Debug, Clone)]
pub struct KeySigner {
    key: PrivateKey,
    public: PublicKey,
}

impl KeySigner {
    pub fn new(key: PrivateKey) -> KeySigner {
        let public = key.public_key();
        KeySigner { key, public }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

impl Signer for KeySigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        Ok(self.key.sign(message))
    }

    fn verification_material(&self) -> VerificationMaterial {
        VerificationMaterial::public_key_hint(self.public.hint())
    }
}
