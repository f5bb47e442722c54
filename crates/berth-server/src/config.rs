//! Typed server configuration: defaults, then the TOML file, then `BERTH_*` variables,
//! then command-line flags (applied by the binary), each overriding the one before.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}={value:?} is invalid: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
}

/// The whole server configuration (`berth.toml`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory holding blobs (`blobs/`, `uploads/`) and the metadata database.
    pub data_dir: PathBuf,
    /// Largest manifest body accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// An upload session idle for this long is deleted (e.g. `"30m"`, `"24h"`).
    #[serde(with = "duration_str")]
    pub upload_idle_timeout: Duration,
    /// PEM certificate chain; with `tls_key`, the server speaks HTTPS (HTTP/1.1 and HTTP/2).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Allow listening on a non-loopback address while no account exists (anyone could push).
    pub insecure_open: bool,
    /// The `service` of issued tokens and of the `WWW-Authenticate` challenge.
    pub token_service: String,
    /// The token endpoint URL in challenges; by default `http(s)://<Host>/token`.
    pub token_realm: Option<String>,
    /// Lifetime of issued bearer tokens.
    #[serde(with = "duration_str")]
    pub token_ttl: Duration,
    /// Tag policy rules by repository pattern (`[[tag_policy]]`); without a matching
    /// rule release tags are immutable and floating tags only move forward.
    pub tag_policy: Vec<crate::policy::TagPolicyRule>,
    /// How often download counters are written to the database; a crash loses at most
    /// this much of them.
    #[serde(with = "duration_str")]
    pub analytics_flush_interval: Duration,
    /// Count downloads by version, platform and client (on by default).
    pub analytics: bool,
    /// How blob bodies go out on plain-HTTP/1.x connections.
    pub blob_transfer: BlobTransfer,
}

/// How blob bodies of 64 KiB or more are sent on plain-HTTP/1.x connections (TLS and
/// HTTP/2 connections always stream them through user space).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BlobTransfer {
    /// `copy` for clients on a loopback address, `sendfile` for everyone else.
    #[default]
    Auto,
    /// `sendfile(2)` from the page cache to the socket: no copy through user space.
    Sendfile,
    /// Read into a reused buffer, then write. Faster on loopback, where the receiving
    /// side of the same kernel pays more for `sendfile`'s page-sized fragments than the
    /// sender saves (measured in docs/benchmarks.md).
    Copy,
}

impl BlobTransfer {
    /// The transfer for a connection from `peer`.
    pub fn for_peer(self, peer: std::net::IpAddr) -> crate::zerocopy::Transfer {
        use crate::zerocopy::Transfer;
        match self {
            BlobTransfer::Sendfile => Transfer::Sendfile,
            BlobTransfer::Copy => Transfer::Copy,
            BlobTransfer::Auto if peer.to_canonical().is_loopback() => Transfer::Copy,
            BlobTransfer::Auto => Transfer::Sendfile,
        }
    }
}

impl std::str::FromStr for BlobTransfer {
    type Err = String;

    fn from_str(s: &str) -> Result<BlobTransfer, String> {
        match s {
            "auto" => Ok(BlobTransfer::Auto),
            "sendfile" => Ok(BlobTransfer::Sendfile),
            "copy" => Ok(BlobTransfer::Copy),
            _ => Err("use auto, sendfile or copy".into()),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("./berth-data"),
            max_manifest_bytes: 4 << 20,
            upload_idle_timeout: Duration::from_secs(24 * 3600),
            tls_cert: None,
            tls_key: None,
            insecure_open: false,
            token_service: "berth".to_owned(),
            token_realm: None,
            token_ttl: Duration::from_secs(300),
            tag_policy: Vec::new(),
            analytics_flush_interval: Duration::from_secs(5),
            analytics: true,
            blob_transfer: BlobTransfer::Auto,
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Applies `BERTH_LISTEN`, `BERTH_DATA_DIR`, `BERTH_MAX_MANIFEST_BYTES`,
    /// `BERTH_UPLOAD_IDLE_TIMEOUT`, `BERTH_TLS_CERT`, `BERTH_TLS_KEY`, `BERTH_INSECURE_OPEN`,
    /// `BERTH_TOKEN_SERVICE`, `BERTH_TOKEN_REALM`, `BERTH_TOKEN_TTL`, `BERTH_ANALYTICS`,
    /// `BERTH_ANALYTICS_FLUSH_INTERVAL` and `BERTH_BLOB_TRANSFER` from `vars`.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (var, value) in vars {
            let bad = |message: String| ConfigError::Env {
                var: var.clone(),
                value: value.clone(),
                message,
            };
            match var.as_str() {
                "BERTH_LISTEN" => self.listen = value.parse().map_err(|e| bad(format!("{e}")))?,
                "BERTH_DATA_DIR" => self.data_dir = PathBuf::from(&value),
                "BERTH_MAX_MANIFEST_BYTES" => {
                    self.max_manifest_bytes = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "BERTH_UPLOAD_IDLE_TIMEOUT" => {
                    self.upload_idle_timeout = parse_duration(&value).map_err(bad)?
                }
                "BERTH_TLS_CERT" => self.tls_cert = Some(PathBuf::from(&value)),
                "BERTH_TLS_KEY" => self.tls_key = Some(PathBuf::from(&value)),
                "BERTH_INSECURE_OPEN" => {
                    self.insecure_open = match value.as_str() {
                        "1" | "true" | "yes" => true,
                        "0" | "false" | "no" | "" => false,
                        _ => return Err(bad("use true or false".into())),
                    }
                }
                "BERTH_TOKEN_SERVICE" => self.token_service = value.clone(),
                "BERTH_TOKEN_REALM" => self.token_realm = Some(value.clone()),
                "BERTH_TOKEN_TTL" => self.token_ttl = parse_duration(&value).map_err(bad)?,
                "BERTH_ANALYTICS" => {
                    self.analytics = match value.as_str() {
                        "1" | "true" | "yes" | "on" => true,
                        "0" | "false" | "no" | "off" => false,
                        _ => return Err(bad("use true or false".into())),
                    }
                }
                "BERTH_ANALYTICS_FLUSH_INTERVAL" => {
                    self.analytics_flush_interval = parse_duration(&value).map_err(bad)?
                }
                "BERTH_BLOB_TRANSFER" => self.blob_transfer = value.parse().map_err(bad)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Parses `90`, `90s`, `15m`, `24h` or `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 24h or 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?} has an unknown unit (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => super::parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:6000\"\nupload_idle_timeout = \"2h\"\n",
        )
        .unwrap();
        let mut c = Config::from_file(&path).unwrap();
        assert_eq!(c.listen.port(), 6000);
        assert_eq!(c.upload_idle_timeout, Duration::from_secs(7200));
        assert_eq!(c.data_dir, PathBuf::from("./berth-data"));
        c.apply_env([
            ("BERTH_DATA_DIR".to_string(), "/tmp/x".to_string()),
            ("BERTH_UPLOAD_IDLE_TIMEOUT".to_string(), "90".to_string()),
            ("OTHER".to_string(), "ignored".to_string()),
        ])
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.upload_idle_timeout, Duration::from_secs(90));
        assert!(c
            .apply_env([("BERTH_LISTEN".to_string(), "nope".to_string())])
            .is_err());
        c.apply_env([
            ("BERTH_INSECURE_OPEN".to_string(), "true".to_string()),
            ("BERTH_TOKEN_TTL".to_string(), "10m".to_string()),
            ("BERTH_TLS_CERT".to_string(), "/c.pem".to_string()),
            (
                "BERTH_ANALYTICS_FLUSH_INTERVAL".to_string(),
                "1s".to_string(),
            ),
        ])
        .unwrap();
        assert!(c.insecure_open);
        assert_eq!(c.token_ttl, Duration::from_secs(600));
        assert_eq!(c.tls_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(c.analytics_flush_interval, Duration::from_secs(1));
        assert!(c
            .apply_env([("BERTH_INSECURE_OPEN".to_string(), "maybe".to_string())])
            .is_err());
    }

    #[test]
    fn blob_transfer_from_file_env_and_peer() {
        use crate::zerocopy::Transfer;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, "blob_transfer = \"sendfile\"\n").unwrap();
        let mut c = Config::from_file(&path).unwrap();
        assert_eq!(c.blob_transfer, BlobTransfer::Sendfile);
        c.apply_env([("BERTH_BLOB_TRANSFER".to_string(), "copy".to_string())])
            .unwrap();
        assert_eq!(c.blob_transfer, BlobTransfer::Copy);
        let err = c
            .apply_env([("BERTH_BLOB_TRANSFER".to_string(), "splice".to_string())])
            .unwrap_err();
        assert!(err.to_string().contains("auto, sendfile or copy"), "{err}");
        std::fs::write(&path, "blob_transfer = \"fast\"\n").unwrap();
        assert!(Config::from_file(&path).is_err());

        let auto = Config::default().blob_transfer;
        for (ip, want) in [
            ("127.0.0.1", Transfer::Copy),
            ("127.8.9.10", Transfer::Copy),
            ("::1", Transfer::Copy),
            ("::ffff:127.0.0.1", Transfer::Copy),
            ("10.0.0.7", Transfer::Sendfile),
            ("2001:db8::1", Transfer::Sendfile),
        ] {
            assert_eq!(auto.for_peer(ip.parse().unwrap()), want, "{ip}");
        }
        let lo = "127.0.0.1".parse().unwrap();
        assert_eq!(BlobTransfer::Sendfile.for_peer(lo), Transfer::Sendfile);
        assert_eq!(
            BlobTransfer::Copy.for_peer("10.0.0.7".parse().unwrap()),
            Transfer::Copy
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:6000\"\n").unwrap();
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
    }
}
