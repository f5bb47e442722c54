//! Secrets: user passwords hashed with argon2id, robot secrets (long random strings,
//! hashed with SHA-256 since they carry 256 bits of entropy), constant-time checks.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Why a secret could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the system random source failed: {0}")]
    Random(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password must be at least {MIN_PASSWORD_LEN} characters")]
    TooShort,
}

/// Shortest password accepted for a user.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Prefix of robot secrets, so they are recognisable in leaked-secret scanners.
pub const ROBOT_PREFIX: &str = "berth_";

/// `n` bytes from the operating system's random source.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, SecretError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(buf)
}

/// Hashes a user password with argon2id (PHC string format).
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(SecretError::TooShort);
    }
    let salt =
        SaltString::encode_b64(&random_bytes(16)?).map_err(|e| SecretError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// A new robot secret: the prefix and 32 random bytes, base64url.
pub fn new_robot_secret() -> Result<String, SecretError> {
    let b = random_bytes(32)?;
    Ok(format!(
        "{ROBOT_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    ))
}

/// The stored form of a robot secret.
pub fn hash_robot_secret(secret: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(secret.as_bytes())))
}

/// Checks a presented secret against its stored hash, in constant time for robot
/// secrets and with argon2's own verification for passwords.
pub fn verify(presented: &str, stored: &str) -> bool {
    if let Some(_hex) = stored.strip_prefix("sha256:") {
        let computed = hash_robot_secret(presented);
        return computed.as_bytes().ct_eq(stored.as_bytes()).into();
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(presented.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A password hash of a random password, made once per process with the parameters of
/// [`hash_password`]: what [`verify_nothing`] checks against.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let password = hex::encode(random_bytes(16).ok()?);
            hash_password(&password).ok()
        })
        .as_deref()
}

/// Spends the time of one password verification and refuses: run for a login whose
/// account does not exist or may not log in, so that its answer takes as long as a
/// wrong password for a real user and does not tell which names exist.
pub fn verify_nothing(presented: &str) -> bool {
    if let Some(stored) = dummy_hash() {
        // The dummy password is random and never shown, so this cannot match; the
        // result is consumed only so that the work is not optimised away.
        let matched = verify(presented, stored);
        std::hint::black_box(matched);
    }
    false
}

/// Whether `stored` is a password hash (argon2) rather than a robot secret's digest.
pub fn is_password_hash(stored: &str) -> bool {
    !stored.starts_with("sha256:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(matches!(hash_password("short"), Err(SecretError::TooShort)));
        assert!(!verify("x", "garbage"));
    }

    #[test]
    fn robot_secrets() {
        let s = new_robot_secret().unwrap();
        assert!(s.starts_with(ROBOT_PREFIX) && s.len() > 40);
        let h = hash_robot_secret(&s);
        assert!(verify(&s, &h));
        assert!(!verify("berth_nope", &h));
        assert_ne!(new_robot_secret().unwrap(), s);
        assert!(!is_password_hash(&h));
    }

    #[test]
    fn verifying_nothing_costs_a_verification() {
        let h = hash_password("correct horse").unwrap();
        assert!(is_password_hash(&h));
        assert!(dummy_hash().is_some_and(|d| d.starts_with("$argon2id$")));
        assert!(!verify_nothing("correct horse"));
        assert!(!verify_nothing(""));
        // The same work as a real check: no faster than a fifth of it (generous, so
        // that a busy machine does not make this flaky).
        let time = |f: &dyn Fn() -> bool| {
            let t = std::time::Instant::now();
            for _ in 0..3 {
                f();
            }
            t.elapsed()
        };
        let real = time(&|| verify("wrong horse", &h));
        let dummy = time(&|| verify_nothing("wrong horse"));
        assert!(dummy * 5 >= real, "dummy {dummy:?} vs real {real:?}");
    }
}
