//! Signing keys: generation, the PEM formats cosign reads and writes, fingerprints,
//! and raw signing and verification.
//!
//! Supported algorithms are ECDSA P-256 (SHA-256), ECDSA P-384 (SHA-384) and Ed25519,
//! which is what cosign accepts for `--key` besides RSA. ECDSA signatures are ASN.1 DER,
//! as cosign writes them; Ed25519 signatures are the 64 raw bytes.
//!
//! Private keys are read from cosign's encrypted PEM (`ENCRYPTED SIGSTORE PRIVATE KEY`,
//! and the older `ENCRYPTED COSIGN PRIVATE KEY` label; see [`crate::encrypted`]), plain
//! PKCS#8 (`PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`); public keys from PKIX
//! (`PUBLIC KEY`). New keys are written as cosign writes them: an encrypted PKCS#8 key
//! and a PKIX public key. Passwords are bytes the caller obtained; this module never
//! asks for one.

use std::fmt;

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{
    AssociatedOid, DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey,
    ObjectIdentifier,
};
use sha2::{Digest as _, Sha256, Sha512};
use zeroize::Zeroizing;

use crate::encrypted;
use crate::error::KeyError;

/// PEM label of the encrypted private keys cosign writes today.
pub const SIGSTORE_PRIVATE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM label of the encrypted private keys older cosign versions wrote.
pub const COSIGN_PRIVATE_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
const PKCS8_LABEL: &str = "PRIVATE KEY";
const SEC1_LABEL: &str = "EC PRIVATE KEY";
const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";

/// id-ecPublicKey, the algorithm of every ECDSA key in PKCS#8 and PKIX.
const EC_PUBLIC_KEY_OID: ObjectIdentifier = p256::elliptic_curve::ALGORITHM_OID;
const ED25519_OID: ObjectIdentifier = ed25519_dalek::pkcs8::ALGORITHM_OID;

/// A key's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeyAlgorithm {
    /// The name people know it by (`ECDSA P-256`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA P-256",
            KeyAlgorithm::EcdsaP384 => "ECDSA P-384",
            KeyAlgorithm::Ed25519 => "Ed25519",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A private signing key.
#[derive(Clone)]
pub struct PrivateKey(PrivateInner);

#[derive(Clone)]
enum PrivateInner {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// A public key, to verify signatures and to name the signer.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(PublicInner);

#[derive(Clone, PartialEq, Eq)]
enum PublicInner {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl fmt::Debug for PrivateKey {
    /// Shows the algorithm and the public key's fingerprint, never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm())
            .field("fingerprint", &self.public_key().fingerprint())
            .finish()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm())
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

/// Fills a buffer from the system's random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, KeyError> {
    let mut buf = Zeroizing::new([0u8; N]);
    getrandom::fill(buf.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(buf)
}

/// Decodes one PEM block, tolerating text before it and whitespace around it (files
/// written by hand or copied from a terminal), and returns its label and bytes.
fn decode_pem(input: &[u8]) -> Result<(String, Zeroizing<Vec<u8>>), KeyError> {
    let text = std::str::from_utf8(input).map_err(|_| KeyError::Pem("not UTF-8 text".into()))?;
    let start = text
        .find("-----BEGIN ")
        .ok_or_else(|| KeyError::Pem("no -----BEGIN line".into()))?;
    let block = text[start..].trim_end();
    let (label, der) =
        pem_rfc7468::decode_vec(block.as_bytes()).map_err(|e| KeyError::Pem(e.to_string()))?;
    Ok((label.to_string(), Zeroizing::new(der)))
}

fn encode_pem(label: &str, der: &[u8]) -> Result<String, KeyError> {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der)
        .map_err(|e| KeyError::Malformed(e.to_string()))
}

impl PrivateKey {
    /// A new random ECDSA P-256 key, the algorithm cosign generates.
    pub fn generate_p256() -> Result<PrivateKey, KeyError> {
        // A random 32-byte string is a valid scalar except with probability ~2^-32, so a
        // few attempts suffice; the bound keeps a broken random source from looping.
        for _ in 0..16 {
            let bytes = random_bytes::<32>()?;
            let field = p256::FieldBytes::from(*bytes);
            if let Ok(key) = p256::ecdsa::SigningKey::from_bytes(&field) {
                return Ok(PrivateKey(PrivateInner::P256(key)));
            }
        }
        Err(KeyError::Random(
            "no valid P-256 scalar in 16 random draws".into(),
        ))
    }

    /// A new random Ed25519 key.
    pub fn generate_ed25519() -> Result<PrivateKey, KeyError> {
        let bytes = random_bytes::<32>()?;
        Ok(PrivateKey(PrivateInner::Ed25519(
            ed25519_dalek::SigningKey::from_bytes(&bytes),
        )))
    }

    /// Whether PEM text holds an encrypted key, i.e. whether reading it needs a password.
    pub fn pem_is_encrypted(pem: &[u8]) -> bool {
        matches!(decode_pem(pem), Ok((label, _))
            if label == SIGSTORE_PRIVATE_KEY_LABEL || label == COSIGN_PRIVATE_KEY_LABEL)
    }

    /// Reads a private key from PEM: cosign's encrypted formats (decrypted with
    /// `password`), PKCS#8 or SEC1 (for which `password` is ignored).
    pub fn from_pem(pem: &[u8], password: &[u8]) -> Result<PrivateKey, KeyError> {
        let (label, der) = decode_pem(pem)?;
        match label.as_str() {
            SIGSTORE_PRIVATE_KEY_LABEL | COSIGN_PRIVATE_KEY_LABEL => {
                let pkcs8 = encrypted::decrypt(&der, password)?;
                // Old cosign versions encrypted SEC1 keys under this label; Go's cosign
                // refuses them, but they are unambiguous, so read them too.
                PrivateKey::from_pkcs8_der(&pkcs8).or_else(|e| match e {
                    KeyError::Malformed(_) => PrivateKey::from_sec1_der(&pkcs8).map_err(|_| e),
                    other => Err(other),
                })
            }
            PKCS8_LABEL => PrivateKey::from_pkcs8_der(&der),
            SEC1_LABEL => PrivateKey::from_sec1_der(&der),
            other => Err(KeyError::UnsupportedLabel(other.to_string())),
        }
    }

    /// Reads a PKCS#8 `PrivateKeyInfo` (DER).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, KeyError> {
        let info = pkcs8::PrivateKeyInfo::try_from(der)
            .map_err(|e| KeyError::Malformed(format!("PKCS#8: {e}")))?;
        let malformed = |e: pkcs8::Error| KeyError::Malformed(format!("PKCS#8: {e}"));
        if info.algorithm.oid == ED25519_OID {
            let key = ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(malformed)?;
            return Ok(PrivateKey(PrivateInner::Ed25519(key)));
        }
        if info.algorithm.oid != EC_PUBLIC_KEY_OID {
            return Err(KeyError::UnsupportedAlgorithm(algorithm_name(
                info.algorithm.oid,
            )));
        }
        match info.algorithm.parameters_oid().ok() {
            Some(curve) if curve == p256::NistP256::OID => Ok(PrivateKey(PrivateInner::P256(
                p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(malformed)?,
            ))),
            Some(curve) if curve == p384::NistP384::OID => Ok(PrivateKey(PrivateInner::P384(
                p384::ecdsa::SigningKey::from_pkcs8_der(der).map_err(malformed)?,
            ))),
            Some(curve) => Err(KeyError::UnsupportedAlgorithm(format!(
                "ECDSA on curve {curve}"
            ))),
            None => Err(KeyError::Malformed("ECDSA key without a curve".into())),
        }
    }

    /// Reads a SEC1 `ECPrivateKey` (DER), as OpenSSL's `ecparam -genkey` writes it.
    pub fn from_sec1_der(der: &[u8]) -> Result<PrivateKey, KeyError> {
        let key = sec1::EcPrivateKey::try_from(der)
            .map_err(|e| KeyError::Malformed(format!("SEC1: {e}")))?;
        let malformed = |e: p256::elliptic_curve::Error| KeyError::Malformed(format!("SEC1: {e}"));
        // The curve is optional in SEC1; without it the scalar's length tells.
        let curve = match key.parameters.and_then(|p| p.named_curve()) {
            Some(curve) => curve,
            None if key.private_key.len() == 32 => p256::NistP256::OID,
            None if key.private_key.len() == 48 => p384::NistP384::OID,
            None => return Err(KeyError::Malformed("SEC1 key without a curve".into())),
        };
        if curve == p256::NistP256::OID {
            let secret = p256::SecretKey::from_sec1_der(der).map_err(malformed)?;
            Ok(PrivateKey(PrivateInner::P256(secret.into())))
        } else if curve == p384::NistP384::OID {
            let secret = p384::SecretKey::from_sec1_der(der).map_err(malformed)?;
            Ok(PrivateKey(PrivateInner::P384(secret.into())))
        } else {
            Err(KeyError::UnsupportedAlgorithm(format!(
                "ECDSA on curve {curve}"
            )))
        }
    }

    /// The key as PKCS#8 DER (secret: zeroed when dropped).
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let doc = match &self.0 {
            PrivateInner::P256(k) => k.to_pkcs8_der(),
            PrivateInner::P384(k) => k.to_pkcs8_der(),
            PrivateInner::Ed25519(k) => k.to_pkcs8_der(),
        }
        .map_err(|e| KeyError::Malformed(e.to_string()))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// The key as unencrypted PKCS#8 PEM (`PRIVATE KEY`).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        Ok(Zeroizing::new(encode_pem(
            PKCS8_LABEL,
            &self.to_pkcs8_der()?,
        )?))
    }

    /// The key as cosign writes it: PKCS#8 encrypted with `password` (scrypt and NaCl
    /// secretbox) in an `ENCRYPTED SIGSTORE PRIVATE KEY` PEM block.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<String, KeyError> {
        let sealed = encrypted::encrypt(&self.to_pkcs8_der()?, password)?;
        encode_pem(SIGSTORE_PRIVATE_KEY_LABEL, &sealed)
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match &self.0 {
            PrivateInner::P256(_) => KeyAlgorithm::EcdsaP256,
            PrivateInner::P384(_) => KeyAlgorithm::EcdsaP384,
            PrivateInner::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(match &self.0 {
            PrivateInner::P256(k) => PublicInner::P256(*k.verifying_key()),
            PrivateInner::P384(k) => PublicInner::P384(*k.verifying_key()),
            PrivateInner::Ed25519(k) => PublicInner::Ed25519(k.verifying_key()),
        })
    }

    /// Signs `message`: ECDSA over its SHA-256 (P-256) or SHA-384 (P-384) digest with
    /// deterministic nonces (RFC 6979), DER-encoded; or pure Ed25519.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.0 {
            PrivateInner::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            PrivateInner::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            PrivateInner::Ed25519(k) => {
                let sig: ed25519_dalek::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
        }
    }
}

/// A readable name of an algorithm OID the crate does not support.
fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA".to_string(),
        "1.3.101.113" => "Ed448".to_string(),
        other => format!("OID {other}"),
    }
}

impl PublicKey {
    /// Reads a PKIX public key (`PUBLIC KEY` PEM).
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, KeyError> {
        let (label, der) = decode_pem(pem)?;
        if label != PUBLIC_KEY_LABEL {
            return Err(KeyError::UnsupportedLabel(label));
        }
        PublicKey::from_der(&der)
    }

    /// Reads a PKIX `SubjectPublicKeyInfo` (DER).
    pub fn from_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        let info = spki::SubjectPublicKeyInfoRef::try_from(der)
            .map_err(|e| KeyError::Malformed(format!("PKIX: {e}")))?;
        let malformed = |e: spki::Error| KeyError::Malformed(format!("PKIX: {e}"));
        if info.algorithm.oid == ED25519_OID {
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(malformed)?;
            return Ok(PublicKey(PublicInner::Ed25519(key)));
        }
        if info.algorithm.oid != EC_PUBLIC_KEY_OID {
            return Err(KeyError::UnsupportedAlgorithm(algorithm_name(
                info.algorithm.oid,
            )));
        }
        match info.algorithm.parameters_oid().ok() {
            Some(curve) if curve == p256::NistP256::OID => Ok(PublicKey(PublicInner::P256(
                p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(malformed)?,
            ))),
            Some(curve) if curve == p384::NistP384::OID => Ok(PublicKey(PublicInner::P384(
                p384::ecdsa::VerifyingKey::from_public_key_der(der).map_err(malformed)?,
            ))),
            Some(curve) => Err(KeyError::UnsupportedAlgorithm(format!(
                "ECDSA on curve {curve}"
            ))),
            None => Err(KeyError::Malformed("ECDSA key without a curve".into())),
        }
    }

    /// The PKIX `SubjectPublicKeyInfo` DER.
    pub fn to_der(&self) -> Vec<u8> {
        let doc = match &self.0 {
            PublicInner::P256(k) => k.to_public_key_der(),
            PublicInner::P384(k) => k.to_public_key_der(),
            PublicInner::Ed25519(k) => k.to_public_key_der(),
        };
        // Encoding a valid key into a growable buffer cannot fail; an empty result would
        // only make fingerprints and hints fail to match, never verify wrongly.
        doc.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// The PKIX PEM (`PUBLIC KEY`), as cosign writes `cosign.pub`.
    pub fn to_pem(&self) -> String {
        encode_pem(PUBLIC_KEY_LABEL, &self.to_der()).unwrap_or_default()
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match &self.0 {
            PublicInner::P256(_) => KeyAlgorithm::EcdsaP256,
            PublicInner::P384(_) => KeyAlgorithm::EcdsaP384,
            PublicInner::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// The SHA-256 of the PKIX DER in lower-case hex: the key's name for people
    /// (`berth verify` output, the dashboard, logs).
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.to_der()))
    }

    /// The SHA-256 of the PKIX DER in standard base64: the `publicKey.hint` of a Sigstore
    /// bundle, as sigstore-go computes it.
    pub fn hint(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(self.to_der()))
    }

    /// Whether `signature` is a valid signature of `message` under this key.
    ///
    /// ECDSA signatures are DER (a fixed-size `r || s` is accepted too), over the
    /// message's SHA-256 (P-256) or SHA-384 (P-384) digest; both `s` and its negation are
    /// accepted, as Go does. Ed25519 signatures are checked as pure Ed25519, then as
    /// Ed25519ph (SHA-512 prehash), which cosign uses for keys it loads since v2.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.0 {
            PublicInner::P256(k) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p256::ecdsa::Signature::from_slice(signature));
                match sig {
                    Ok(sig) => {
                        let sig = sig.normalize_s().unwrap_or(sig);
                        k.verify(message, &sig).is_ok()
                    }
                    Err(_) => false,
                }
            }
            PublicInner::P384(k) => {
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p384::ecdsa::Signature::from_slice(signature));
                match sig {
                    Ok(sig) => {
                        let sig = sig.normalize_s().unwrap_or(sig);
                        k.verify(message, &sig).is_ok()
                    }
                    Err(_) => false,
                }
            }
            PublicInner::Ed25519(k) => {
                let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                    return false;
                };
                if k.verify_strict(message, &sig).is_ok() {
                    return true;
                }
                let mut prehash = Sha512::new();
                prehash.update(message);
                k.verify_prehashed_strict(prehash, None, &sig).is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys from cosign's own tests (pkg/cosign/keys_test.go, Apache-2.0), with their
    // password "hello": published vectors of the formats cosign reads and writes.
    const COSIGN_SIGSTORE_KEY: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjozMjc2OCwiciI6
OCwicCI6MX0sInNhbHQiOiI3T3VGd2VsbWZZNXVId2NoaURSc210anNwZ2ZlZjFG
Mk5lOGFDTjVLYVpZPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJQNHk4OGhCb3ZTa09MbXN0bFVBaGJwdDJ0K2xTNUxQSCJ9LCJj
aXBoZXJ0ZXh0IjoiMnB1QzdyZldJOWh3bnJlQ2s4aUZDRlVwQlRrSzRJNlIvbFBF
cnBDekpXUGpJWXl4eGVIL1A2VW52cFJHdVhla1NNb3JMdGhLamdoQ1JlNy82NDVH
QWtoVm1LRC92eEF0S2EvbE1abENSQ3FlekJGUFd1dzNpeFRtZ2xhb2J1ZFVSbUVs
bmNGOGlZbzBTMVl6Y1ZOMVFwY2J2c0dNcUlYRzVlbmdteGp5dCtBcXlyZTF0Q0Y0
V01tU1BlaEljNlBqd2h1Q2xHaVpJUWRvTGc9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----";

    const COSIGN_LEGACY_EC_KEY: &str = "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJHK3F5WTYrNzhNS0JzMXNGTGs1ajYwcS9kS3Z1czBW
VkhlSHZybC9POTF3PSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJRc2JGdG13WDRDK2ttV3ZCcVRaMEFGOUFYdk1jRmg1SCJ9LCJj
aXBoZXJ0ZXh0IjoiREM5T28zeldiYVQzSXYwdFVnWEdycjUxYW1samwwNlQ5MTNP
VkxPbWpuMWhnK2o2WXRUbWg3SGhZSlY1N2J5eGE0Q281bE9YYmRqbTJ3aklubEd1
Um5aZCt5OExnekpSNzFSeEhKVzgrWmRlcFJmYWJMTjdHbDgrSFZEcERVQ3NxQnRh
VngyblpGbFEwWUl1anZwbFphblNGaUVvdERLVGkxZ3VhUXIwUHNzYU01NXZxbTRY
WS9rPSJ9
-----END ENCRYPTED COSIGN PRIVATE KEY-----";

    const SEC1_P256: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIIGhcmCI5F7BPMH4r3pWCpQdAsveErdU5DjvVQerErJuoAoGCCqGSM49
AwEHoUQDQgAE+9E3Qe+h25ofmz3Uo2T004Dfy49iX06MMbxf9rsGmLkOPrS0KYDl
1QMfFuSbrtf8wTWNT9HNxrW/Foz39mDhHw==
-----END EC PRIVATE KEY-----";

    const SEC1_P384: &str = "-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDDWIebxSdyJVber6J/l5MKnD0+VU0b7fcjY/RbIxuIsHLVIvwJrSohY
r3gJ/iJmIKGgBwYFK4EEACKhZANiAAQeoKZkkc1GafmIgp1tbNbMBjr2EdvX2dtT
lGhzHJgE0YB6TavazcYH1iOBNmX7/pInCopiyWbjF/5olrRKJMG6DQz80td++fYf
O4tr+Z3nyUgRGmf/fqYA4PSN30CuOMU=
-----END EC PRIVATE KEY-----";

    const SEC1_P521: &str = "-----BEGIN EC PRIVATE KEY-----
MIHcAgEBBEIA3JhHw1bhJyNnK80SPnvuIY9h++IaEhZcHR7SDHzMnFf72O5fF/RI
c+Dbd9lTfrP3Oy9BOC1opvXHvr5tqzV0MregBwYFK4EEACOhgYkDgYYABAALA20e
WqTf2chokKaCmxfnhs1lW70/J8slBzKBG6x3OjJX+yrpkDqe8zpkN08E+RZA8RSE
9TqbcXVHGtR6tj0IMgEFmybW+efJr4nz/iBvchGeIg1HtOX5V97z0bmwsCgQCD8L
4cNcYkeNJazrzzXte5Y5DK4Vm8QE4Jkux6FCw19QhQ==
-----END EC PRIVATE KEY-----";

    const PKCS8_P256: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgmKnLL81dCEYc6Spq
rFukFeTnU5JjtXfeNHAXJj3hYTahRANCAATjp4/Z4tUbZwUdId07GQeUdwLll4Br
YLP25Fk+mBY2G0lyKqjqLG5hxhimbEJH6j+lzg5tcYpQgzXtOJ66Zi0N
-----END PRIVATE KEY-----";

    const PKCS8_ED25519: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIALEbo1EFnWFqBK/wC+hhypG/8hXEerwdNetAoFoFVdv
-----END PRIVATE KEY-----";

    // The public key shown in cosign's signature specification.
    const COSIGN_DOC_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELigCnlLNKgOglRTx1D7JhI7eRw99
QolE9Jo4QUxnbMy5nUuBL+UZF9qqfm/Dg1BNeHRThHzWh2ki9vAEgWEDOw==
-----END PUBLIC KEY-----";

    const RSA_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAx5piWVlE62NnZ0UzJ8Z6
oKiKOC4dbOZ1HsNhIRtqkM+Oq4G+25yq6P+0JU/Qvr9veOGEb3R/J9u8JBo+hv2i
5X8OtgvP2V2pi6f1s6vK7L0+6uRb4YTT/UdMshaVf97MgEqbq41Jf/cuvh+3AV0t
Z1BpixZg4aXMKpY6HUP69lbsu27oSUN1myMv7TSgZiV4CYs3l/gkEfpysBptWlcH
Ruw5RsB+C0RbjRtbJ/5VxmE/vd3Mlafd5t1WSpMb8yf0a84u5NFaXwZ7CweMfXeO
ddS0yb19ShSuW3PPRadruBM1mq15js9GfagPxDS75Imcs+fA62lWvHxEujTGjYHx
awIDAQAB
-----END PUBLIC KEY-----";

    #[test]
    fn generated_key_round_trips_through_cosigns_encrypted_pem() {
        let key = PrivateKey::generate_p256().unwrap();
        let pem = key.to_encrypted_pem(b"correct horse").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        assert!(pem
            .trim_end()
            .ends_with("-----END ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        assert!(PrivateKey::pem_is_encrypted(pem.as_bytes()));
        let back = PrivateKey::from_pem(pem.as_bytes(), b"correct horse").unwrap();
        assert_eq!(back.algorithm(), KeyAlgorithm::EcdsaP256);
        assert_eq!(back.public_key(), key.public_key());
        assert!(matches!(
            PrivateKey::from_pem(pem.as_bytes(), b"wrong"),
            Err(KeyError::WrongPassword)
        ));
    }

    #[test]
    fn public_key_pem_round_trips() {
        let key = PrivateKey::generate_p256().unwrap().public_key();
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let back = PublicKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(back, key);
        assert_eq!(back.fingerprint(), key.fingerprint());
        assert_eq!(key.fingerprint().len(), 64);
        assert_eq!(key.fingerprint(), hex::encode(Sha256::digest(key.to_der())));
    }

    #[test]
    fn cosigns_published_encrypted_key_decrypts() {
        let key = PrivateKey::from_pem(COSIGN_SIGSTORE_KEY.as_bytes(), b"hello").unwrap();
        let sig = key.sign(b"payload");
        assert!(key.public_key().verify(b"payload", &sig));
        assert!(matches!(
            PrivateKey::from_pem(COSIGN_SIGSTORE_KEY.as_bytes(), b"hell0"),
            Err(KeyError::WrongPassword)
        ));
    }

    #[test]
    fn cosigns_older_label_with_a_sec1_key_inside_is_read() {
        let key = PrivateKey::from_pem(COSIGN_LEGACY_EC_KEY.as_bytes(), b"hello").unwrap();
        assert_eq!(key.algorithm(), KeyAlgorithm::EcdsaP256);
        assert!(PrivateKey::pem_is_encrypted(
            COSIGN_LEGACY_EC_KEY.as_bytes()
        ));
    }

    #[test]
    fn plain_pkcs8_and_sec1_keys_are_read() {
        let cases = [
            (SEC1_P256, KeyAlgorithm::EcdsaP256),
            (SEC1_P384, KeyAlgorithm::EcdsaP384),
            (PKCS8_P256, KeyAlgorithm::EcdsaP256),
            (PKCS8_ED25519, KeyAlgorithm::Ed25519),
        ];
        for (pem, algorithm) in cases {
            let key = PrivateKey::from_pem(pem.as_bytes(), b"").unwrap();
            assert_eq!(key.algorithm(), algorithm);
            assert!(!PrivateKey::pem_is_encrypted(pem.as_bytes()));
            let sig = key.sign(b"message");
            assert!(key.public_key().verify(b"message", &sig), "{algorithm}");
            assert!(!key.public_key().verify(b"messagE", &sig), "{algorithm}");
            // Through PKCS#8 and back, and the public key through PKIX and back.
            let again = PrivateKey::from_pem(key.to_pkcs8_pem().unwrap().as_bytes(), b"").unwrap();
            assert_eq!(again.public_key(), key.public_key());
            let public = PublicKey::from_pem(key.public_key().to_pem().as_bytes()).unwrap();
            assert_eq!(public.algorithm(), algorithm);
        }
    }

    #[test]
    fn other_algorithms_are_unsupported() {
        assert!(matches!(
            PrivateKey::from_pem(SEC1_P521.as_bytes(), b""),
            Err(KeyError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            PublicKey::from_pem(RSA_PUB.as_bytes()),
            Err(KeyError::UnsupportedAlgorithm(name)) if name == "RSA"
        ));
        assert!(matches!(
            PrivateKey::from_pem(RSA_PUB.as_bytes(), b""),
            Err(KeyError::UnsupportedLabel(label)) if label == "PUBLIC KEY"
        ));
        assert!(matches!(
            PrivateKey::from_pem(b"-----BEGIN PGP PRIVATE KEY BLOCK-----\nAAAA\n-----END PGP PRIVATE KEY BLOCK-----\n", b""),
            Err(KeyError::UnsupportedLabel(_))
        ));
    }

    #[test]
    fn cosigns_documented_public_key_is_read() {
        let key = PublicKey::from_pem(COSIGN_DOC_PUB.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), KeyAlgorithm::EcdsaP256);
        assert_eq!(key.to_pem().trim(), COSIGN_DOC_PUB);
    }

    #[test]
    fn garbage_and_truncated_keys_are_errors() {
        assert!(matches!(
            PrivateKey::from_pem(b"", b""),
            Err(KeyError::Pem(_))
        ));
        assert!(matches!(
            PublicKey::from_pem(&[0xff, 0xfe]),
            Err(KeyError::Pem(_))
        ));
        let truncated = &PKCS8_P256[..PKCS8_P256.len() - 40];
        assert!(PrivateKey::from_pem(truncated.as_bytes(), b"").is_err());
        assert!(matches!(
            PublicKey::from_der(&[0x30, 0x03, 0x02, 0x01, 0x00]),
            Err(KeyError::Malformed(_))
        ));
        // One base64 character of the sealed key changed: the secretbox tag fails.
        let (label, json) = decode_pem(COSIGN_SIGSTORE_KEY.as_bytes()).unwrap();
        let json = String::from_utf8(json.to_vec())
            .unwrap()
            .replacen("2puC7", "2puC8", 1);
        let tampered = encode_pem(&label, json.as_bytes()).unwrap();
        assert!(matches!(
            PrivateKey::from_pem(tampered.as_bytes(), b"hello"),
            Err(KeyError::WrongPassword)
        ));
    }

    #[test]
    fn text_around_the_pem_block_is_tolerated() {
        let with_text = format!("my key:\n{PKCS8_P256}\n\n");
        assert!(PrivateKey::from_pem(with_text.as_bytes(), b"").is_ok());
    }

    #[test]
    fn high_s_and_fixed_size_ecdsa_signatures_verify() {
        let key = PrivateKey::from_pem(PKCS8_P256.as_bytes(), b"").unwrap();
        let der = key.sign(b"m");
        let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
        // Go does not normalise s; its signatures may carry the high one.
        let (r, s) = sig.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        assert!(key.public_key().verify(b"m", high.to_der().as_bytes()));
        assert!(key.public_key().verify(b"m", &sig.to_bytes()));
        assert!(!key.public_key().verify(b"m", b"not a signature"));
    }

    #[test]
    fn debug_output_has_no_secret() {
        let key = PrivateKey::from_pem(PKCS8_P256.as_bytes(), b"").unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("EcdsaP256"));
        assert!(shown.contains(&key.public_key().fingerprint()));
    }
}
