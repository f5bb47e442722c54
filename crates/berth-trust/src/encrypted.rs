//! cosign's encrypted private key format (from go-securesystemslib's `encrypted`
//! package): a JSON document
//!
//! ```json
//! {"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"<base64>"},
//!  "cipher":{"name":"nacl/secretbox","nonce":"<base64>"},
//!  "ciphertext":"<base64>"}
//! ```
//!
//! The key is scrypt(password, salt) of 32 bytes; the ciphertext is NaCl's secretbox
//! (XSalsa20-Poly1305, the 16-byte tag first) of the PKCS#8 DER under a 24-byte nonce.
//! We write cosign's parameters (N = 32768, r = 8, p = 1, 32-byte salt) and read any
//! scrypt parameters within a memory bound, so a key file cannot make us allocate
//! gigabytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use crypto_secretbox::aead::{AeadInPlace, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::keys::random_bytes;

const KDF_NAME: &str = "scrypt";
const CIPHER_NAME: &str = "nacl/secretbox";
/// cosign's scrypt cost: N = 2^15, r = 8, p = 1.
const LOG_N: u8 = 15;
const R: u32 = 8;
const P: u32 = 1;
const TAG_LEN: usize = 16;
/// The most memory (128 * r * N bytes) a key file may ask scrypt for: 256 MiB, four
/// times cosign's "sensitive" setting (N = 2^16) and eight times its default.
const MAX_SCRYPT_MEMORY: u64 = 256 << 20;

#[derive(Serialize, Deserialize)]
struct Document {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn derive_key(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let params = scrypt::Params::new(log_n, r, p, 32)
        .map_err(|e| KeyError::UnsupportedEncryption(format!("scrypt parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, key.as_mut())
        .map_err(|e| KeyError::UnsupportedEncryption(format!("scrypt: {e}")))?;
    Ok(key)
}

/// Encrypts `plaintext` (a PKCS#8 key) under `password` into the JSON document.
pub fn encrypt(plaintext: &[u8], password: &[u8]) -> Result<Vec<u8>, KeyError> {
    let salt = random_bytes::<32>()?;
    let nonce = random_bytes::<24>()?;
    let key = derive_key(password, salt.as_ref(), LOG_N, R, P)?;
    let cipher = XSalsa20Poly1305::new(key.as_ref().into());
    let mut buffer = Zeroizing::new(plaintext.to_vec());
    let tag = cipher
        .encrypt_in_place_detached(nonce.as_ref().into(), b"", &mut buffer)
        .map_err(|e| KeyError::MalformedEncryption(e.to_string()))?;
    // NaCl's secretbox puts the tag before the ciphertext.
    let mut sealed = Vec::with_capacity(TAG_LEN + buffer.len());
    sealed.extend_from_slice(&tag);
    sealed.extend_from_slice(&buffer);
    let doc = Document {
        kdf: Kdf {
            name: KDF_NAME.into(),
            params: ScryptParams {
                n: 1 << LOG_N,
                r: R,
                p: P,
            },
            salt: STANDARD.encode(salt.as_ref()),
        },
        cipher: Cipher {
            name: CIPHER_NAME.into(),
            nonce: STANDARD.encode(nonce.as_ref()),
        },
        ciphertext: STANDARD.encode(&sealed),
    };
    serde_json::to_vec(&doc).map_err(|e| KeyError::MalformedEncryption(e.to_string()))
}

/// Decrypts the JSON document with `password`; the result is the PKCS#8 key.
pub fn decrypt(document: &[u8], password: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let doc: Document = serde_json::from_slice(document)
        .map_err(|e| KeyError::MalformedEncryption(format!("not the expected JSON: {e}")))?;
    if doc.kdf.name != KDF_NAME {
        return Err(KeyError::UnsupportedEncryption(format!(
            "key derivation {:?}",
            doc.kdf.name
        )));
    }
    if doc.cipher.name != CIPHER_NAME {
        return Err(KeyError::UnsupportedEncryption(format!(
            "cipher {:?}",
            doc.cipher.name
        )));
    }
    let ScryptParams { n, r, p } = doc.kdf.params;
    if n < 2 || !n.is_power_of_two() {
        return Err(KeyError::MalformedEncryption(format!(
            "scrypt N = {n} is not a power of two"
        )));
    }
    let memory = 128u64.saturating_mul(u64::from(r)).saturating_mul(n);
    if memory > MAX_SCRYPT_MEMORY || p > 16 {
        return Err(KeyError::UnsupportedEncryption(format!(
            "scrypt N = {n}, r = {r}, p = {p} asks for more than {} MiB",
            MAX_SCRYPT_MEMORY >> 20
        )));
    }
    let log_n = u8::try_from(n.trailing_zeros())
        .map_err(|_| KeyError::MalformedEncryption("scrypt N out of range".into()))?;
    let decode = |what: &str, s: &str| {
        STANDARD
            .decode(s)
            .map_err(|e| KeyError::MalformedEncryption(format!("{what}: {e}")))
    };
    let salt = decode("salt", &doc.kdf.salt)?;
    let nonce = decode("nonce", &doc.cipher.nonce)?;
    let sealed = decode("ciphertext", &doc.ciphertext)?;
    if nonce.len() != 24 {
        return Err(KeyError::MalformedEncryption(format!(
            "nonce of {} bytes, expected 24",
            nonce.len()
        )));
    }
    if sealed.len() < TAG_LEN {
        return Err(KeyError::MalformedEncryption(
            "ciphertext shorter than its tag".into(),
        ));
    }
    let key = derive_key(password, &salt, log_n, r, p)?;
    let cipher = XSalsa20Poly1305::new(key.as_ref().into());
    let (tag, body) = sealed.split_at(TAG_LEN);
    let mut buffer = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_in_place_detached(nonce.as_slice().into(), b"", &mut buffer, tag.into())
        .map_err(|_| KeyError::WrongPassword)?;
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let sealed = encrypt(b"secret key bytes", b"pw").unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(doc["kdf"]["params"]["N"], 32768);
        assert_eq!(doc["kdf"]["params"]["r"], 8);
        assert_eq!(doc["kdf"]["params"]["p"], 1);
        assert_eq!(doc["cipher"]["name"], "nacl/secretbox");
        assert_eq!(
            decrypt(&sealed, b"pw").unwrap().as_slice(),
            b"secret key bytes"
        );
    }

    #[test]
    fn wrong_password_is_refused() {
        let sealed = encrypt(b"secret key bytes", b"pw").unwrap();
        assert!(matches!(
            decrypt(&sealed, b"other"),
            Err(KeyError::WrongPassword)
        ));
    }

    #[test]
    fn excessive_scrypt_cost_is_refused_before_deriving() {
        let doc = r#"{"kdf":{"name":"scrypt","params":{"N":1073741824,"r":8,"p":1},"salt":"AA=="},
            "cipher":{"name":"nacl/secretbox","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},"ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}"#;
        assert!(matches!(
            decrypt(doc.as_bytes(), b"pw"),
            Err(KeyError::UnsupportedEncryption(_))
        ));
    }

    #[test]
    fn truncated_ciphertext_is_malformed() {
        let doc = r#"{"kdf":{"name":"scrypt","params":{"N":1024,"r":8,"p":1},"salt":"AA=="},
            "cipher":{"name":"nacl/secretbox","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},"ciphertext":"AAAA"}"#;
        assert!(matches!(
            decrypt(doc.as_bytes(), b"pw"),
            Err(KeyError::MalformedEncryption(_))
        ));
    }

    #[test]
    fn other_ciphers_are_unsupported() {
        let doc = r#"{"kdf":{"name":"pbkdf2","params":{"N":1024,"r":8,"p":1},"salt":"AA=="},
            "cipher":{"name":"nacl/secretbox","nonce":"AA=="},"ciphertext":"AA=="}"#;
        assert!(matches!(
            decrypt(doc.as_bytes(), b"pw"),
            Err(KeyError::UnsupportedEncryption(_))
        ));
    }
}
