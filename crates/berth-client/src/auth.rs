//! Credentials and registry authentication.
//!
//! - The Docker config file (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
//!   reading `auths` entries (base64 `auth`, or `username`/`password`, or `identitytoken`)
//!   and writing them for `berth login`/`logout` without disturbing other keys; and
//!   Docker credential helpers (`credHelpers`, `credsStore`): `docker-credential-NAME
//!   get|store|erase`, the server on standard input and JSON on standard output.
//! - `WWW-Authenticate` challenges: `Basic realm=…` and
//!   `Bearer realm=…,service=…,scope=…`.
//! - Token fetches from a Bearer realm (anonymous or with Basic credentials).
//!
//! This module knows nothing about manifests or blobs; [`crate::registry`] calls it when
//! a request comes back 401.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::{ClientError, Result};
use crate::reference::DOCKER_HUB;

/// The key Docker uses for Docker Hub in `auths`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A user name and a password (or a token used as one).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic …` value.
    pub fn basic_header(&self) -> String {
        format!("Basic {}", encode_auth(&self.username, &self.password))
    }
}

/// `base64(user:password)`, the `auth` field of the Docker config.
pub fn encode_auth(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Decodes an `auth` field into credentials.
pub fn decode_auth(auth: &str) -> Option<Credentials> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credentials {
        username: u.to_owned(),
        password: p.to_owned(),
    })
}

/// The Docker config file and the credentials in it.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    json: serde_json::Map<String, serde_json::Value>,
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn default_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// Reduces an `auths` key (`https://host/v1/`, `http://host`, `host`) to the host.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// The `auths` key to store credentials for a registry under.
pub fn auth_key(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_AUTH_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        DOCKER_HUB | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    )
}

impl DockerConfig {
    /// Loads the file at `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfig> {
        let json = match std::fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => serde_json::Map::new(),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::invalid(path.display().to_string(), e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
            Err(e) => return Err(ClientError::io(path, e)),
        };
        Ok(DockerConfig {
            path: path.to_owned(),
            json,
        })
    }

    /// The file this config was read from and is saved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn auths(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.json.get("auths").and_then(|a| a.as_object())
    }

    /// Credentials for a registry host, if the config has an entry for it.
    pub fn credentials(&self, registry: &str) -> Option<Credentials> {
        let auths = self.auths()?;
        let hub = is_docker_hub(registry);
        let entry = auths
            .iter()
            .find(|(k, _)| {
                let h = key_host(k);
                h == registry || (hub && is_docker_hub(h))
            })
            .map(|(_, v)| v)?;
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        if let Some(token) = field("identitytoken") {
            // Docker sends identity tokens as the password of the `<token>` user.
            return Some(Credentials {
                username: "<token>".into(),
                password: token.to_owned(),
            });
        }
        if let Some(c) = field("auth").and_then(decode_auth) {
            return Some(c);
        }
        match (field("username"), field("password")) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.to_owned(),
                password: p.to_owned(),
            }),
            _ => None,
        }
    }

    /// The credential helper for a registry, if any: its `credHelpers` entry, else the
    /// `credsStore` (Docker's order). The name is the part after `docker-credential-`.
    pub fn helper(&self, registry: &str) -> Option<String> {
        let hub = is_docker_hub(registry);
        let specific = self
            .json
            .get("credHelpers")
            .and_then(|h| h.as_object())
            .and_then(|h| {
                h.iter().find(|(k, _)| {
                    let h = key_host(k);
                    h == registry || (hub && is_docker_hub(h))
                })
            })
            .and_then(|(_, v)| v.as_str());
        specific
            .or_else(|| self.json.get("credsStore").and_then(|v| v.as_str()))
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    }

    /// Credentials for a registry host from its credential helper (see
    /// [`DockerConfig::helper`]), else from `auths`. A helper that does not know the
    /// host is no error: the `auths` entry, if any, is used.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(helper) = self.helper(registry) {
            if let Some(c) = helper_get(&helper, &auth_key(registry))? {
                return Ok(Some(c));
            }
        }
        Ok(self.credentials(registry))
    }

    /// Stores credentials for a registry (as a base64 `auth` entry).
    pub fn set_credentials(&mut self, registry: &str, creds: &Credentials) {
        self.remove_credentials(registry);
        let auths = self
            .json
            .entry("auths")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !auths.is_object() {
            *auths = serde_json::Value::Object(Default::default());
        }
        if let Some(map) = auths.as_object_mut() {
            map.insert(
                auth_key(registry),
                serde_json::json!({ "auth": encode_auth(&creds.username, &creds.password) }),
            );
        }
    }

    /// Records a login whose secret a credential helper keeps: an empty `auths` entry,
    /// as `docker login` writes, so tools listing `auths` see the registry.
    pub fn mark_logged_in(&mut self, registry: &str) {
        self.remove_credentials(registry);
        let auths = self
            .json
            .entry("auths")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !auths.is_object() {
            *auths = serde_json::Value::Object(Default::default());
        }
        if let Some(map) = auths.as_object_mut() {
            map.insert(auth_key(registry), serde_json::json!({}));
        }
    }

    /// Removes every entry for a registry; true if there was one.
    pub fn remove_credentials(&mut self, registry: &str) -> bool {
        let hub = is_docker_hub(registry);
        let Some(map) = self.json.get_mut("auths").and_then(|a| a.as_object_mut()) else {
            return false;
        };
        let keys: Vec<String> = map
            .keys()
            .filter(|k| {
                let h = key_host(k);
                h == registry || (hub && is_docker_hub(h))
            })
            .cloned()
            .collect();
        for k in &keys {
            map.remove(k);
        }
        !keys.is_empty()
    }

    /// Writes the file atomically (temp file + rename), mode 0600 on Unix.
    pub fn save(&self) -> Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| ClientError::io(dir, e))?;
        let bytes = serde_json::to_vec_pretty(&self.json)
            .map_err(|e| ClientError::invalid("docker config", e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| ClientError::io(dir, e))?;
        std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| ClientError::io(dir, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600));
        }
        tmp.persist(&self.path)
            .map_err(|e| ClientError::io(&self.path, e.error))?;
        Ok(())
    }
}

/// The JSON a credential helper reads (`store`) and writes (`get`).
#[derive(serde::Serialize, serde::Deserialize)]
struct HelperCredentials {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-<helper> <verb>` with `input` on standard input; returns its
/// standard output, or `None` when it says it has no credentials for the server.
fn run_helper(helper: &str, verb: &str, input: &[u8]) -> Result<Option<Vec<u8>>> {
    use std::io::Write as _;
    let program = format!("docker-credential-{helper}");
    let usage = |detail: String| {
        ClientError::Usage(format!("credential helper {program} {verb}: {detail}"))
    };
    let mut child = std::process::Command::new(&program)
        .arg(verb)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| usage(format!("cannot run it ({e}); is it on PATH?")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| usage(format!("cannot write to it: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| usage(e.to_string()))?;
    if out.status.success() {
        return Ok(Some(out.stdout));
    }
    let said = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .trim()
    .to_owned();
    // The helpers' protocol: this exact message on standard output for an unknown server.
    if said.contains("credentials not found") {
        return Ok(None);
    }
    Err(usage(format!("failed ({}): {said}", out.status)))
}

/// `docker-credential-<helper> get` for `server` (the `auths` key of the registry).
pub fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>> {
    let Some(out) = run_helper(helper, "get", server.as_bytes())? else {
        return Ok(None);
    };
    let c: HelperCredentials = serde_json::from_slice(&out).map_err(|e| {
        ClientError::invalid(format!("the answer of docker-credential-{helper} get"), e)
    })?;
    if c.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: c.username,
        password: c.secret,
    }))
}

/// `docker-credential-<helper> store`: keeps `creds` for `server` in the helper.
pub fn helper_store(helper: &str, server: &str, creds: &Credentials) -> Result<()> {
    let input = serde_json::to_vec(&HelperCredentials {
        server_url: server.to_owned(),
        username: creds.username.clone(),
        secret: creds.password.clone(),
    })
    .map_err(|e| ClientError::invalid("credential helper input", e))?;
    run_helper(helper, "store", &input)?;
    Ok(())
}

/// `docker-credential-<helper> erase`: true if the helper had credentials for `server`.
pub fn helper_erase(helper: &str, server: &str) -> Result<bool> {
    Ok(run_helper(helper, "erase", server.as_bytes())?.is_some())
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        /// The OAuth error (`invalid_token`, `insufficient_scope`) of a refused token.
        error: Option<String>,
    },
}

/// The most demanding action of a `repository:NAME:ACTIONS` scope and the repository,
/// for messages: `repository:team/app:pull,push` is "push" on "team/app", `*` "admin".
pub fn describe_scope(scope: &str) -> Option<(String, String)> {
    let rest = scope.strip_prefix("repository:")?;
    let (repo, actions) = rest.rsplit_once(':')?;
    let last = actions.rsplit(',').next()?.trim();
    let action = match last {
        "*" => "admin",
        "" => return None,
        a => a,
    };
    Some((action.to_owned(), repo.to_owned()))
}

/// Parses `auth-param`s: `key=value` or `key="quoted, value"`, comma separated.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = q[end.min(q.len())..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches([',', ' ']);
        out.insert(key, value);
    }
    out
}

impl Challenge {
    /// Parses one `WWW-Authenticate` value; `None` for schemes Berth does not speak.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => {
                let mut p = parse_params(params);
                Some(Challenge::Bearer {
                    realm: p.remove("realm")?,
                    service: p.remove("service"),
                    scope: p.remove("scope"),
                    error: p.remove("error"),
                })
            }
            _ => None,
        }
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Fetches a Bearer token for `scopes` from the challenge's realm, with Basic
/// credentials when there are some (anonymous otherwise).
pub async fn fetch_token(
    http: &reqwest::Client,
    host: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    creds: Option<&Credentials>,
) -> Result<String> {
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = service {
        query.push(("service", s));
    }
    for s in scopes {
        query.push(("scope", s));
    }
    let mut req = http.get(realm).query(&query);
    if let Some(c) = creds {
        req = req.basic_auth(&c.username, Some(&c.password));
    }
    let resp = req.send().await.map_err(|e| ClientError::Network {
        host: host.to_owned(),
        detail: format!(
            "token request to {realm}: {}",
            crate::registry::error_chain(&e)
        ),
    })?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| ClientError::Network {
        host: host.to_owned(),
        detail: format!("token response from {realm}: {e}"),
    })?;
    if !status.is_success() {
        return Err(ClientError::Auth {
            host: host.to_owned(),
            detail: if creds.is_some() {
                format!("the token service refused the credentials (HTTP {status})")
            } else {
                format!("anonymous token refused (HTTP {status}); run `berth login {host}`")
            },
        });
    }
    let t: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| ClientError::invalid(format!("token response from {realm}"), e))?;
    t.token
        .or(t.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ClientError::Auth {
            host: host.to_owned(),
            detail: "the token service returned no token".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_described_for_refusals() {
        assert_eq!(
            describe_scope("repository:team/app:pull,push"),
            Some(("push".into(), "team/app".into()))
        );
        assert_eq!(
            describe_scope("repository:team/app:*"),
            Some(("admin".into(), "team/app".into()))
        );
        assert_eq!(
            describe_scope("repository:a:delete"),
            Some(("delete".into(), "a".into()))
        );
        assert_eq!(describe_scope("registry:catalog:*"), None);
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="http://h/token",scope="repository:a:pull,push",error="insufficient_scope""#
            ),
            Some(Challenge::Bearer {
                realm: "http://h/token".into(),
                service: None,
                scope: Some("repository:a:pull,push".into()),
                error: Some("insufficient_scope".into()),
            })
        );
    }

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
                error: None,
            })
        );
        assert_eq!(
            Challenge::parse("bearer realm=http://127.0.0.1:1/t, service=x"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("x".into()),
                scope: None,
                error: None,
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn config_round_trip_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"other.io":{{"username":"u","password":"p"}}}},"credsStore":"desktop","psFormat":"x"}}"#,
                encode_auth("hub", "s3cr:et")
            ),
        )
        .unwrap();
        let mut c = DockerConfig::load(&path).unwrap();
        assert_eq!(
            c.credentials("docker.io"),
            Some(Credentials {
                username: "hub".into(),
                password: "s3cr:et".into()
            })
        );
        assert_eq!(c.credentials("other.io").unwrap().username, "u");
        assert_eq!(c.credentials("nope.io"), None);
        c.set_credentials(
            "127.0.0.1:5000",
            &Credentials {
                username: "me".into(),
                password: "pw".into(),
            },
        );
        c.save().unwrap();
        let mut c = DockerConfig::load(&path).unwrap();
        assert_eq!(c.credentials("127.0.0.1:5000").unwrap().password, "pw");
        assert!(c.remove_credentials("docker.io"));
        assert!(!c.remove_credentials("docker.io"));
        c.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("psFormat") && text.contains("127.0.0.1:5000"));
        assert!(!text.contains("index.docker.io"));
        assert!(DockerConfig::load(&dir.path().join("missing.json"))
            .unwrap()
            .credentials("x")
            .is_none());
    }

    #[test]
    fn identity_tokens_and_url_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://reg.example.com/v1/":{"identitytoken":"tok"}}}"#,
        )
        .unwrap();
        let c = DockerConfig::load(&path).unwrap();
        let creds = c.credentials("reg.example.com").unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("<token>", "tok")
        );
        assert_eq!(decode_auth("bad!"), None);
    }
}
