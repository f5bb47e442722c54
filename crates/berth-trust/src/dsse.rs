//! DSSE (Dead Simple Signing Envelope) v1: the envelope JSON and the pre-authentication
//! encoding (PAE) that is what actually gets signed.
//!
//! PAE is exactly the spec's
//! `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal bytes,
//! so the payload type is signed along with the payload.

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{SignError, VerifyError};
use crate::keys::PublicKey;
use crate::signer::Signer;

/// The layer media type of a DSSE envelope in a legacy `.att` manifest.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";

/// The pre-authentication encoding of a payload and its type.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope (the JSON form, also the `dsseEnvelope` of a Sigstore bundle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The payload in standard base64.
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The signature over the PAE, in standard base64.
    pub sig: String,
    /// An unauthenticated hint of the key; cosign writes it empty.
    #[serde(default)]
    pub keyid: String,
}

/// Decodes base64 as DSSE allows it: standard or URL-safe, padded or not.
pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .ok()
}

impl Envelope {
    /// Signs `payload` of `payload_type` with `signer`.
    pub fn sign(
        signer: &dyn Signer,
        payload_type: &str,
        payload: &[u8],
    ) -> Result<Envelope, SignError> {
        let signature = signer.sign(&pae(payload_type, payload))?;
        Ok(Envelope {
            payload: STANDARD.encode(payload),
            payload_type: payload_type.to_string(),
            signatures: vec![EnvelopeSignature {
                sig: STANDARD.encode(signature),
                keyid: String::new(),
            }],
        })
    }

    /// Reads an envelope's JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, VerifyError> {
        serde_json::from_slice(bytes).map_err(|e| VerifyError::malformed("DSSE envelope", e))
    }

    pub fn to_json(&self) -> Result<Vec<u8>, SignError> {
        serde_json::to_vec(self).map_err(|e| SignError::Serialise(e.to_string()))
    }

    /// The decoded payload, unverified.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, VerifyError> {
        decode_base64(&self.payload)
            .ok_or_else(|| VerifyError::malformed("DSSE envelope", "payload is not base64"))
    }

    /// Verifies that at least one signature is `key`'s over the PAE of the payload, and
    /// returns the payload.
    pub fn verify(&self, key: &PublicKey) -> Result<Vec<u8>, VerifyError> {
        let payload = self.payload_bytes()?;
        if self.signatures.is_empty() {
            return Err(VerifyError::malformed("DSSE envelope", "no signatures"));
        }
        let message = pae(&self.payload_type, &payload);
        let mut decodable = false;
        for signature in &self.signatures {
            let Some(sig) = decode_base64(&signature.sig) else {
                continue;
            };
            decodable = true;
            if key.verify(&message, &sig) {
                return Ok(payload);
            }
        }
        if decodable {
            Err(VerifyError::BadSignature)
        } else {
            Err(VerifyError::malformed(
                "DSSE envelope",
                "no signature is base64",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_spec_example() {
        // The DSSE protocol document's example.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn pae_counts_bytes_not_characters() {
        assert_eq!(
            pae("t", "é".as_bytes()),
            "DSSEv1 1 t 2 é".as_bytes().to_vec()
        );
    }
}
