//! Bearer tokens: compact JWTs signed with HMAC-SHA256 by a key only the registry has.
//!
//! The registry is both the token issuer and the only verifier, so a symmetric key is
//! enough; clients treat tokens as opaque. Claims follow the Docker token spec: `iss`,
//! `sub`, `aud` (the service), `exp`, `nbf`, `iat`, `jti` and `access`, the list of
//! `{type, name, actions}` actually granted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::action::Actions;
use crate::scope::Scope;

/// Length of a signing key in bytes.
pub const KEY_LEN: usize = 32;

/// The registry's token signing key.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is for another service")]
    WrongAudience,
    #[error("signing key is too short")]
    ShortKey,
}

/// One `access` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    /// The access entry for a granted scope.
    pub fn from_scope(scope: &Scope) -> Access {
        match scope {
            Scope::Repository { name, actions } => Access {
                kind: "repository".into(),
                name: name.clone(),
                actions: actions.iter().map(|a| a.as_str().to_owned()).collect(),
            },
            Scope::Catalog => Access {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            },
        }
    }
}

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub access: Vec<Access>,
}

impl Claims {
    /// The actions this token grants on repository `name`.
    pub fn actions_on(&self, name: &str) -> Actions {
        self.access
            .iter()
            .filter(|a| a.kind == "repository" && a.name == name)
            .flat_map(|a| a.actions.iter())
            .filter_map(|a| a.parse().ok())
            .fold(Actions::NONE, Actions::with)
    }

    pub fn allows_catalog(&self) -> bool {
        self.access
            .iter()
            .any(|a| a.kind == "registry" && a.name == "catalog")
    }
}

impl TokenKey {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<TokenKey, TokenError> {
        if bytes.len() < KEY_LEN {
            return Err(TokenError::ShortKey);
        }
        Ok(TokenKey(bytes))
    }

    fn mac(&self) -> Result<Hmac<Sha256>, TokenError> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).map_err(|_| TokenError::ShortKey)
    }

    /// Signs claims into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac()?;
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        Ok(format!("{signing_input}.{sig}"))
    }

    /// Verifies signature (in constant time), audience and validity window at `now`.
    pub fn verify(&self, token: &str, audience: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = B64.decode(s).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac()?;
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(h).map_err(|_| TokenError::Malformed)?)
                .map_err(|_| TokenError::Malformed)?;
        if header["alg"] != "HS256" {
            return Err(TokenError::Malformed);
        }
        let claims: Claims =
            serde_json::from_slice(&B64.decode(p).map_err(|_| TokenError::Malformed)?)
                .map_err(|_| TokenError::Malformed)?;
        if claims.aud != audience {
            return Err(TokenError::WrongAudience);
        }
        // One second of leeway for clocks that read the same second differently.
        if now >= claims.exp || now + 1 < claims.nbf {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            iss: "berth".into(),
            sub: "alice".into(),
            aud: "berth".into(),
            exp,
            nbf: 100,
            iat: 100,
            jti: "j".into(),
            access: vec![Access::from_scope(
                &Scope::parse("repository:a/b:pull,push").unwrap(),
            )],
        }
    }

    #[test]
    fn sign_and_verify() {
        let key = TokenKey::from_bytes(vec![7; 32]).unwrap();
        let t = key.sign(&claims(400)).unwrap();
        let c = key.verify(&t, "berth", 200).unwrap();
        assert!(c.actions_on("a/b").allows(crate::Action::Push));
        assert!(c.actions_on("a/c").is_empty());
        assert_eq!(key.verify(&t, "other", 200), Err(TokenError::WrongAudience));
        assert_eq!(key.verify(&t, "berth", 400), Err(TokenError::Expired));
        let forged = TokenKey::from_bytes(vec![8; 32])
            .unwrap()
            .sign(&claims(400))
            .unwrap();
        assert_eq!(
            key.verify(&forged, "berth", 200),
            Err(TokenError::BadSignature)
        );
        // Tampering with the payload breaks the signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let evil = B64.encode(
            serde_json::to_vec(&Claims {
                sub: "root".into(),
                ..claims(400)
            })
            .unwrap(),
        );
        parts[1] = &evil;
        assert_eq!(
            key.verify(&parts.join("."), "berth", 200),
            Err(TokenError::BadSignature)
        );
        assert_eq!(key.verify("a.b", "berth", 200), Err(TokenError::Malformed));
        assert!(TokenKey::from_bytes(vec![1; 4]).is_err());
    }
}
