//! Typed server configuration: defaults, then the TOML file, then `BERTH_*` variables,
//! then command-line flags, each overriding the one before.
//!
//! Every setting is defined once, as a field of [`Settings`]: its name is the TOML key,
//! its `#[arg]` gives the `berth serve` flag and the `BERTH_*` variable (clap's `env`),
//! and its type gives the one parser all three share (booleans take
//! `true/false/yes/no/on/off/1/0` wherever they come from). [`Config`] is the result of
//! layering settings over the defaults. The binary flattens [`Settings`] into
//! `berth serve`, so clap merges variables and flags (flags win); [`Settings::from_env`]
//! reads variables through the same definitions for commands without those flags.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_auth::proxy::Cidr;
use clap::{Args, CommandFactory as _, FromArgMatches as _};
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
    #[error(
        "unknown environment variable {var}: no setting has that name (see `berth serve --help`)"
    )]
    UnknownEnv { var: String },
    #[error("database_url: {0}")]
    DatabaseUrl(String),
}

/// One layer of settings: the TOML file, or the variables and flags of `berth serve`.
/// A field left `None` leaves the layer below it in force.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on, `HOST:PORT` with an IP address or a host name such as
    /// `localhost` [default: 127.0.0.1:5000].
    #[arg(long, env = "BERTH_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    #[serde(default, deserialize_with = "listen_str::option")]
    pub listen: Option<SocketAddr>,
    /// Directory for blobs and metadata [default: ./berth-data].
    #[arg(long, env = "BERTH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Largest manifest body accepted, in bytes [default: 4194304].
    #[arg(long, env = "BERTH_MAX_MANIFEST_BYTES", value_name = "BYTES")]
    pub max_manifest_bytes: Option<usize>,
    /// Delete upload sessions idle this long (e.g. 30m, 24h) [default: 24h].
    #[arg(long, env = "BERTH_UPLOAD_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_str::option")]
    pub upload_idle_timeout: Option<Duration>,
    /// PEM certificate chain: serve HTTPS (HTTP/1.1 and HTTP/2) instead of plain HTTP.
    #[arg(long, env = "BERTH_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "BERTH_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The key that signs bearer tokens [default: <data_dir>/token.key, created on first
    /// start]. Replicas behind one load balancer must share it (32 random bytes).
    #[arg(long, env = "BERTH_TOKEN_KEY_FILE", value_name = "FILE")]
    pub token_key_file: Option<PathBuf>,
    /// Allow a non-loopback address while no account exists (anyone could push and delete).
    #[arg(long, env = "BERTH_INSECURE_OPEN", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = boolish())]
    pub insecure_open: Option<bool>,
    /// The `service` of issued tokens and of the WWW-Authenticate challenge [default: berth].
    #[arg(long, env = "BERTH_TOKEN_SERVICE", value_name = "NAME")]
    pub token_service: Option<String>,
    /// The token endpoint URL in challenges [default: http(s)://<Host>/token].
    #[arg(long, env = "BERTH_TOKEN_REALM", value_name = "URL")]
    pub token_realm: Option<String>,
    /// Lifetime of issued bearer tokens [default: 5m].
    #[arg(long, env = "BERTH_TOKEN_TTL", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_str::option")]
    pub token_ttl: Option<Duration>,
    /// Tag policy rules (`[[tag_policy]]`, in the file only).
    #[arg(skip)]
    pub tag_policy: Option<Vec<crate::policy::TagPolicyRule>>,
    /// Trust policy rules (`[[trust_policy]]`, in the file only); key paths are relative
    /// to the file.
    #[arg(skip)]
    pub trust_policy: Option<Vec<crate::policy::TrustPolicyRule>>,
    /// How often download counters are written to the database [default: 5s].
    #[arg(long, env = "BERTH_ANALYTICS_FLUSH_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_str::option")]
    pub analytics_flush_interval: Option<Duration>,
    /// Count downloads by version, platform and client [default: true].
    #[arg(long, env = "BERTH_ANALYTICS", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = boolish())]
    pub analytics: Option<bool>,
    /// How blob bodies go out on plain HTTP/1.x: auto, sendfile or copy [default: auto].
    #[arg(long, env = "BERTH_BLOB_TRANSFER", value_name = "HOW")]
    pub blob_transfer: Option<BlobTransfer>,
    /// Where blobs are stored: fs (files under the data directory) or s3 [default: fs].
    #[arg(long, env = "BERTH_STORAGE", value_name = "BACKEND")]
    pub storage: Option<Storage>,
    /// The S3 bucket of `storage = "s3"`, which must already exist.
    #[arg(long, env = "BERTH_S3_BUCKET", value_name = "NAME")]
    pub s3_bucket: Option<String>,
    /// The S3 endpoint URL; an http:// one is used without TLS [default: AWS].
    #[arg(long, env = "BERTH_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The S3 region [default: AWS_REGION, else us-east-1].
    #[arg(long, env = "BERTH_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// The key prefix under which Berth keeps its objects in the bucket [default: none].
    #[arg(long, env = "BERTH_S3_PREFIX", value_name = "PREFIX")]
    pub s3_prefix: Option<String>,
    /// Answer blob downloads with a 307 to a presigned S3 URL instead of streaming the
    /// bytes through Berth [default: false].
    #[arg(long, env = "BERTH_S3_REDIRECT", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = boolish())]
    pub s3_redirect: Option<bool>,
    /// Metadata database: sqlite:///abs/path, sqlite://relative/path or postgres://...
    /// [default: SQLite at <data_dir>/metadata.db].
    #[arg(long, env = "BERTH_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Reverse proxies whose Forwarded / X-Forwarded-For headers name the client:
    /// addresses or ranges, comma-separated (e.g. 127.0.0.1,10.0.0.0/8) [default: none].
    #[arg(
        long,
        env = "BERTH_TRUSTED_PROXIES",
        value_name = "ADDRS",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<Cidr>>,
    /// Serve /metrics to loopback clients without credentials even once accounts exist
    /// [default: false].
    #[arg(long, env = "BERTH_METRICS_OPEN", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = boolish())]
    pub metrics_open: Option<bool>,
    /// Re-hash every stored blob in the background this long after the previous pass
    /// ended, slowly, moving damaged ones aside (e.g. 24h; 0 turns it off) [default: off].
    #[arg(long, env = "BERTH_SCRUB_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_str::option")]
    pub scrub_interval: Option<Duration>,
    // Garbage collection (service::gc): the grace window, the schedule and the rules.
    /// Never collect blobs or untagged manifests younger than this (e.g. 1h, 30m): a push
    /// that uploads its blobs before its manifest finishes within it [default: 1h].
    #[arg(long, env = "BERTH_GC_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_str::option")]
    pub gc_grace: Option<Duration>,
    /// Run a garbage collection this long after the previous one ended (e.g. 6h; 0 turns
    /// it off) [default: off].
    #[arg(long, env = "BERTH_GC_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_str::option")]
    pub gc_interval: Option<Duration>,
    /// Garbage collection rules by repository pattern (`[[gc]]`, in the file only).
    #[arg(skip)]
    pub gc: Option<Vec<crate::service::GcRule>>,
    /// Tag retention rules by repository pattern (`[[retention]]`, in the file only),
    /// applied by every garbage collection.
    #[arg(skip)]
    pub retention: Option<Vec<crate::service::RetentionRule>>,
    /// Storage quotas by repository pattern (`[[quota]]`, in the file only).
    #[arg(skip)]
    pub quota: Option<Vec<crate::service::QuotaRule>>,
    /// Pull-through mirrors by repository prefix (`[[mirror]]`, in the file only).
    #[arg(skip)]
    pub mirror: Option<Vec<crate::service::MirrorRule>>,
    // Vulnerability scanning on push (crate::scanning).
    /// The vulnerability database that pushed images are matched against: the directory
    /// `berth db update --db DIR` writes [default: <data_dir>/vulndb].
    #[arg(long, env = "BERTH_SCAN_DB", value_name = "DIR")]
    pub scan_db: Option<PathBuf>,
    /// Scanning rules by repository pattern (`[[scan]]`, in the file only).
    #[arg(skip)]
    pub scan: Option<Vec<crate::scanning::ScanRule>>,
    // Retention of Berth's own tables (crate::retention).
    /// Roll hourly download, byte and request counters older than this up into daily
    /// totals (e.g. 30d; 0 keeps them hourly forever) [default: 30d].
    #[arg(long, env = "BERTH_STATS_HOURLY_RETENTION", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_str::option")]
    pub stats_hourly_retention: Option<Duration>,
    /// Delete audit log entries older than this (e.g. 365d; 0 keeps them forever)
    /// [default: keep forever].
    #[arg(long, env = "BERTH_AUDIT_RETENTION", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_str::option")]
    pub audit_retention: Option<Duration>,
    // Webhooks (crate::webhooks).
    /// Webhooks (`[[webhook]]`, in the file only).
    #[arg(skip)]
    pub webhook: Option<Vec<crate::webhooks::WebhookConfig>>,
    /// Replication rules (`[[replication]]`, in the file only).
    #[arg(skip)]
    pub replication: Option<Vec<crate::replication::ReplicationRule>>,
    /// The CloudEvents `source` of webhook events, e.g. the registry's URL
    /// [default: berth://<host name>].
    #[arg(long, env = "BERTH_WEBHOOK_SOURCE", value_name = "URI")]
    pub webhook_source: Option<String>,
    /// Close a connection whose request head has not arrived this long after it opened
    /// or after the head's first byte [default: 30s].
    #[arg(long, env = "BERTH_HEADER_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_str::option")]
    pub header_timeout: Option<Duration>,
    /// Close a connection with no request in flight after this long [default: 120s].
    #[arg(long, env = "BERTH_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_str::option")]
    pub idle_timeout: Option<Duration>,
    /// End a request body (an upload) that sends nothing for this long [default: 60s].
    #[arg(long, env = "BERTH_BODY_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_str::option")]
    pub body_idle_timeout: Option<Duration>,
    /// Connections served at once; more wait to be accepted [default: 4096, lowered to
    /// what the open-file limit allows].
    #[arg(long, env = "BERTH_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<NonZeroUsize>,
}

/// The one boolean parser of flags and variables.
fn boolish() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

impl Settings {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut settings: Settings = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        // Key files are named relative to the file that names them, not to the directory
        // the server happens to start in.
        if let (Some(rules), Some(dir)) = (settings.trust_policy.as_mut(), path.parent()) {
            for rule in rules {
                for key in &mut rule.require_signature {
                    *key = dir.join(&*key);
                }
            }
        }
        Ok(settings)
    }

    /// The `BERTH_*` variables of every setting, with the flag each one stands for.
    pub fn env_vars() -> Vec<(String, String)> {
        Settings::augment_args(clap::Command::new("berth"))
            .get_arguments()
            .filter_map(|a| {
                let var = a.get_env()?.to_str()?.to_owned();
                Some((var, a.get_long()?.to_owned()))
            })
            .collect()
    }

    /// The settings given by `vars` (e.g. `std::env::vars_os()`), parsed by the same
    /// definitions as the flags; variables of no setting are ignored (see
    /// [`check_env`]) and empty ones count as unset, as clap counts them.
    pub fn from_env(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Settings, ConfigError> {
        let known = Settings::env_vars();
        let mut args: Vec<OsString> = vec!["berth".into()];
        for (var, value) in vars {
            let Some((var, long)) = known.iter().find(|(v, _)| var == v.as_str()) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            let mut arg = OsString::from(format!("--{long}="));
            arg.push(&value);
            // Parsed one at a time so that an error names its variable.
            Settings::parse_args([OsString::from("berth"), arg.clone()]).map_err(|message| {
                ConfigError::Env {
                    var: var.clone(),
                    value: value.to_string_lossy().into_owned(),
                    message,
                }
            })?;
            args.push(arg);
        }
        Settings::parse_args(args).map_err(|message| ConfigError::Env {
            var: "BERTH_*".into(),
            value: String::new(),
            message,
        })
    }

    fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Settings, String> {
        // The command is only this struct's arguments, with the process environment
        // ignored: these are the arguments the caller built.
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        let mut cmd = Only::command();
        let cmd_args: Vec<_> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
        for id in cmd_args {
            cmd = cmd.mut_arg(id, |a| a.env(None::<&str>));
        }
        cmd.try_get_matches_from(args)
            .and_then(|m| Settings::from_arg_matches(&m))
            .map_err(|e| {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                first.trim_start_matches("error: ").to_owned()
            })
    }
}

/// Refuses a `BERTH_*` variable in `vars` that is neither a setting's nor in `others`
/// (the variables the rest of the program reads: logging, the client), so that a
/// misspelt `BERTH_LISTN` fails at start instead of being ignored.
pub fn check_env<'a>(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    others: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<(), ConfigError> {
    let known = Settings::env_vars();
    for (var, _) in vars {
        let var = var.to_string_lossy();
        if var.starts_with("BERTH_")
            && !known.iter().any(|(k, _)| *k == var)
            && !others.clone().into_iter().any(|o| o == var)
        {
            return Err(ConfigError::UnknownEnv {
                var: var.into_owned(),
            });
        }
    }
    Ok(())
}

/// The whole server configuration, every setting resolved. It also reads from TOML
/// directly (as one [`Settings`] layer over the defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "Settings")]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory holding blobs (`blobs/`, `uploads/`) and the metadata database.
    pub data_dir: PathBuf,
    /// Largest manifest body accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// An upload session idle for this long is deleted (e.g. `"30m"`, `"24h"`).
    pub upload_idle_timeout: Duration,
    /// PEM certificate chain; with `tls_key`, the server speaks HTTPS (HTTP/1.1 and HTTP/2).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The token signing key's file; `None`: `<data_dir>/token.key`.
    pub token_key_file: Option<PathBuf>,
    /// Allow listening on a non-loopback address while no account exists (anyone could push).
    pub insecure_open: bool,
    /// The `service` of issued tokens and of the `WWW-Authenticate` challenge.
    pub token_service: String,
    /// The token endpoint URL in challenges; by default `http(s)://<Host>/token`.
    pub token_realm: Option<String>,
    /// Lifetime of issued bearer tokens.
    pub token_ttl: Duration,
    /// Tag policy rules by repository pattern (`[[tag_policy]]`); without a matching
    /// rule release tags are immutable and floating tags only move forward.
    pub tag_policy: Vec<crate::policy::TagPolicyRule>,
    /// Trust policy rules by repository pattern (`[[trust_policy]]`, first match wins):
    /// required signatures and the publish gate.
    pub trust_policy: Vec<crate::policy::TrustPolicyRule>,
    /// How often download counters are written to the database; a crash loses at most
    /// this much of them.
    pub analytics_flush_interval: Duration,
    /// Count downloads by version, platform and client (on by default).
    pub analytics: bool,
    /// How blob bodies go out on plain-HTTP/1.x connections.
    pub blob_transfer: BlobTransfer,
    /// The blob storage backend.
    pub storage: Storage,
    /// The bucket of `storage = "s3"` (required then). Credentials come from the usual
    /// `AWS_*` variables, not from the settings.
    pub s3_bucket: Option<String>,
    /// The S3 endpoint; `None` is AWS. An `http://` endpoint is used without TLS.
    pub s3_endpoint: Option<String>,
    /// The S3 region; `None` takes `AWS_REGION`, else `us-east-1`.
    pub s3_region: Option<String>,
    /// The key prefix of Berth's objects in the bucket (empty: the bucket root).
    pub s3_prefix: String,
    /// Blob downloads answer `307` to a presigned URL of the object store.
    pub s3_redirect: bool,
    /// The metadata database as a URL; `None` is SQLite at `<data_dir>/metadata.db`.
    /// Read it through [`Config::metadata_backend`].
    pub database_url: Option<String>,
    /// Reverse proxies (addresses or ranges) whose `Forwarded: for=` or
    /// `X-Forwarded-For` is believed: the client address used for rate limiting, the
    /// audit log, analytics and the `/metrics` rule is the right-most address in those
    /// headers that is not a trusted proxy. Empty: the headers are ignored.
    pub trusted_proxies: Vec<Cidr>,
    /// Once accounts exist, `/metrics` needs an account with `admin` on `*`; with this,
    /// clients on a loopback address (the real client, behind a trusted proxy) read it
    /// without credentials, as before accounts existed.
    pub metrics_open: bool,
    /// How long after the end of one background scrub the next starts; `None` (the
    /// default, or `0` in the settings) runs none. See [`crate::service::Registry::scrub`].
    pub scrub_interval: Option<Duration>,
    /// Blobs and untagged manifests younger than this are never collected.
    pub gc_grace: Duration,
    /// How long after one scheduled garbage collection the next starts; `None` (the
    /// default, or `0` in the settings) runs none. See [`crate::service::Registry::gc`].
    pub gc_interval: Option<Duration>,
    /// Garbage collection rules by repository pattern (`[[gc]]`): the first matching rule
    /// applies; without one, untagged manifests are kept.
    pub gc: Vec<crate::service::GcRule>,
    /// Tag retention rules by repository pattern (`[[retention]]`): the first matching
    /// rule applies; without one, no tag is deleted.
    pub retention: Vec<crate::service::RetentionRule>,
    /// Storage quotas by repository pattern (`[[quota]]`): the first matching rule
    /// applies; without one, a repository has no quota.
    pub quota: Vec<crate::service::QuotaRule>,
    /// Pull-through mirrors (`[[mirror]]`): repositories under `prefix` are read-only
    /// copies of `upstream`, filled as clients pull. See [`crate::service::Mirrors`].
    pub mirror: Vec<crate::service::MirrorRule>,
    /// The vulnerability database directory; `None` is `<data_dir>/vulndb`. Read it
    /// through [`Config::scan_db_dir`].
    pub scan_db: Option<PathBuf>,
    /// Scanning rules (`[[scan]]`): the first rule whose `repositories` match decides
    /// whether a push is scanned. See [`crate::scanning`].
    pub scan: Vec<crate::scanning::ScanRule>,
    /// Hourly counters older than this are rolled up into daily totals; `None` (or `0` in
    /// the settings) keeps them hourly. See [`crate::retention`].
    pub stats_hourly_retention: Option<Duration>,
    /// Audit log entries older than this are deleted; `None` (the default, or `0` in the
    /// settings) keeps them.
    pub audit_retention: Option<Duration>,
    /// Webhooks (`[[webhook]]`): where events are POSTed as CloudEvents, for which
    /// repositories and event types. See [`crate::webhooks`].
    pub webhook: Vec<crate::webhooks::WebhookConfig>,
    /// Replication (`[[replication]]`): changes of matching repositories and tags pushed
    /// to other registries from a durable queue. See [`crate::replication`].
    pub replication: Vec<crate::replication::ReplicationRule>,
    /// The CloudEvents `source` of webhook events; `None`: `berth://<host name>`.
    pub webhook_source: Option<String>,
    /// A connection must send its first request head within this long of opening, and
    /// an HTTP/1 request head within this long of its first byte.
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long ends with an error (an upload
    /// keeps the bytes received and can be resumed).
    pub body_idle_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog. The server
    /// lowers it to what its open-file limit allows.
    pub max_connections: NonZeroUsize,
}

/// Where blobs are stored (`storage = "fs"` or `"s3"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Storage {
    /// Files under `<data_dir>/blobs` and `<data_dir>/uploads`.
    #[default]
    Fs,
    /// An S3 bucket (`s3_bucket`, `s3_endpoint`, `s3_region`, `s3_prefix`), shared by
    /// every replica. Needs the `s3` feature (see [`crate::backends`]).
    S3,
}

impl std::str::FromStr for Storage {
    type Err = String;

    fn from_str(s: &str) -> Result<Storage, String> {
        match s {
            "fs" => Ok(Storage::Fs),
            "s3" => Ok(Storage::S3),
            _ => Err(format!("unknown storage backend {s:?}: use fs or s3")),
        }
    }
}

impl<'de> Deserialize<'de> for Storage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Storage, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The metadata database [`Config::metadata_backend`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataBackend {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`), as given.
    Postgres(String),
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
            token_key_file: None,
            insecure_open: false,
            token_service: "berth".to_owned(),
            token_realm: None,
            token_ttl: Duration::from_secs(300),
            tag_policy: Vec::new(),
            trust_policy: Vec::new(),
            analytics_flush_interval: Duration::from_secs(5),
            analytics: true,
            blob_transfer: BlobTransfer::Auto,
            storage: Storage::Fs,
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: None,
            s3_prefix: String::new(),
            s3_redirect: false,
            database_url: None,
            trusted_proxies: Vec::new(),
            metrics_open: false,
            scrub_interval: None,
            gc_grace: Duration::from_secs(3600),
            gc_interval: None,
            stats_hourly_retention: Some(Duration::from_secs(30 * 24 * 3600)),
            audit_retention: None,
            gc: Vec::new(),
            retention: Vec::new(),
            quota: Vec::new(),
            mirror: Vec::new(),
            scan_db: None,
            scan: Vec::new(),
            webhook: Vec::new(),
            replication: Vec::new(),
            webhook_source: None,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            body_idle_timeout: Duration::from_secs(60),
            max_connections: NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl From<Settings> for Config {
    fn from(layer: Settings) -> Config {
        let mut config = Config::default();
        config.apply(layer);
        config
    }
}

impl Config {
    /// The defaults, then the TOML file at `file` if any, then `over` (the variables and
    /// flags, already merged by clap).
    pub fn load(file: Option<&Path>, over: Settings) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = file {
            config.apply(Settings::from_file(path)?);
        }
        config.apply(over);
        config.metadata_backend()?;
        Ok(config)
    }

    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::load(Some(path), Settings::default())
    }

    /// Overrides every setting `layer` gives.
    pub fn apply(&mut self, layer: Settings) {
        // Destructured so that a new setting cannot be forgotten here.
        let Settings {
            listen,
            data_dir,
            max_manifest_bytes,
            upload_idle_timeout,
            tls_cert,
            tls_key,
            token_key_file,
            insecure_open,
            token_service,
            token_realm,
            token_ttl,
            tag_policy,
            trust_policy,
            analytics_flush_interval,
            analytics,
            blob_transfer,
            storage,
            s3_bucket,
            s3_endpoint,
            s3_region,
            s3_prefix,
            s3_redirect,
            database_url,
            trusted_proxies,
            metrics_open,
            scrub_interval,
            gc_grace,
            gc_interval,
            gc,
            retention,
            quota,
            mirror,
            scan_db,
            scan,
            stats_hourly_retention,
            audit_retention,
            webhook,
            replication,
            webhook_source,
            header_timeout,
            idle_timeout,
            body_idle_timeout,
            max_connections,
        } = layer;
        fn set<T>(to: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *to = v;
            }
        }
        set(&mut self.listen, listen);
        set(&mut self.data_dir, data_dir);
        set(&mut self.max_manifest_bytes, max_manifest_bytes);
        set(&mut self.upload_idle_timeout, upload_idle_timeout);
        set(&mut self.tls_cert, tls_cert.map(Some));
        set(&mut self.tls_key, tls_key.map(Some));
        set(&mut self.token_key_file, token_key_file.map(Some));
        set(&mut self.insecure_open, insecure_open);
        set(&mut self.token_service, token_service);
        set(&mut self.token_realm, token_realm.map(Some));
        set(&mut self.token_ttl, token_ttl);
        set(&mut self.tag_policy, tag_policy);
        set(&mut self.trust_policy, trust_policy);
        set(&mut self.analytics_flush_interval, analytics_flush_interval);
        set(&mut self.analytics, analytics);
        set(&mut self.blob_transfer, blob_transfer);
        set(&mut self.storage, storage);
        set(&mut self.s3_bucket, s3_bucket.map(Some));
        set(&mut self.s3_endpoint, s3_endpoint.map(Some));
        set(&mut self.s3_region, s3_region.map(Some));
        set(&mut self.s3_prefix, s3_prefix);
        set(&mut self.s3_redirect, s3_redirect);
        set(&mut self.database_url, database_url.map(Some));
        set(&mut self.trusted_proxies, trusted_proxies);
        set(&mut self.metrics_open, metrics_open);
        // `0` turns the scrub off, so that a variable or flag can override a file's.
        set(
            &mut self.scrub_interval,
            scrub_interval.map(|d| (!d.is_zero()).then_some(d)),
        );
        set(&mut self.gc_grace, gc_grace);
        // `0` turns scheduled collection off, as for the scrub.
        set(
            &mut self.gc_interval,
            gc_interval.map(|d| (!d.is_zero()).then_some(d)),
        );
        set(
            &mut self.stats_hourly_retention,
            stats_hourly_retention.map(|d| (!d.is_zero()).then_some(d)),
        );
        set(
            &mut self.audit_retention,
            audit_retention.map(|d| (!d.is_zero()).then_some(d)),
        );
        set(&mut self.gc, gc);
        set(&mut self.retention, retention);
        set(&mut self.quota, quota);
        set(&mut self.mirror, mirror);
        set(&mut self.scan_db, scan_db.map(Some));
        set(&mut self.scan, scan);
        set(&mut self.webhook, webhook);
        set(&mut self.replication, replication);
        set(&mut self.webhook_source, webhook_source.map(Some));
        set(&mut self.header_timeout, header_timeout);
        set(&mut self.idle_timeout, idle_timeout);
        set(&mut self.body_idle_timeout, body_idle_timeout);
        set(&mut self.max_connections, max_connections);
    }

    /// The vulnerability database directory: `scan_db`, else `<data_dir>/vulndb`.
    pub fn scan_db_dir(&self) -> PathBuf {
        self.scan_db
            .clone()
            .unwrap_or_else(|| self.data_dir.join("vulndb"))
    }

    /// The metadata database to open: SQLite at `<data_dir>/metadata.db` without a
    /// `database_url`, else the database the URL names (`sqlite:///abs/path`,
    /// `sqlite://relative/path`, `postgres://...` or `postgresql://...`). Whether a
    /// backend is compiled in is for the code that builds it to say.
    pub fn metadata_backend(&self) -> Result<MetadataBackend, ConfigError> {
        let Some(url) = self.database_url.as_deref() else {
            return Ok(MetadataBackend::Sqlite(self.data_dir.join("metadata.db")));
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(ConfigError::DatabaseUrl(
                    "sqlite:// needs a path, e.g. sqlite:///var/lib/berth/metadata.db".into(),
                ));
            }
            return Ok(MetadataBackend::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(MetadataBackend::Postgres(url.to_owned()));
        }
        // Only the scheme is repeated: the rest of a URL may hold a password.
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        Err(ConfigError::DatabaseUrl(format!(
            "unsupported scheme {scheme:?}: use sqlite://<path> or postgres://..."
        )))
    }
}

/// Parses a duration: a bare number of seconds (`90`), or `humantime`'s form (`90s`,
/// `15m`, `24h`, `7d`, `1h 30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("{s:?} is too many seconds"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 90s, 15m, 24h or 7d: {e}"))
}

/// Parses the address to listen on: `IP:PORT`, `[IPv6]:PORT`, or `HOST:PORT` with a
/// host name resolved now (an IPv4 address preferred, as `localhost` then serves the
/// clients that try 127.0.0.1 first).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?} is not HOST:PORT (for example 127.0.0.1:5000 or localhost:5000)"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} in {s:?} is not a port number"))?;
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("cannot resolve {host:?} in {s:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host:?} in {s:?} resolves to no address"))
}

mod listen_str {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer};

    /// An address to listen on, as [`super::parse_listen`] reads it.
    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_listen(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

pub(crate) mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// A duration as seconds (`90`) or text (`"90s"`, `"24h"`).
    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Some(Duration::from_secs(s))),
            Raw::Text(t) => super::parse_duration(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_host_names_and_addresses() {
        let local = parse_listen("localhost:5000").unwrap();
        assert!(local.ip().is_loopback(), "{local}");
        assert_eq!(local.port(), 5000);
        assert_eq!(
            parse_listen("0.0.0.0:443").unwrap(),
            SocketAddr::from(([0, 0, 0, 0], 443))
        );
        assert_eq!(parse_listen("[::1]:80").unwrap().port(), 80);
        assert!(parse_listen("localhost").unwrap_err().contains("HOST:PORT"));
        assert!(parse_listen("localhost:http")
            .unwrap_err()
            .contains("port number"));
        let from_file: Settings = toml::from_str("listen = \"localhost:6000\"").unwrap();
        assert!(from_file.listen.unwrap().ip().is_loopback());
        let flags =
            Settings::parse_args(["serve", "--listen", "localhost:7000"].map(OsString::from))
                .unwrap();
        assert_eq!(flags.listen.unwrap().port(), 7000);
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn from_env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_env(env(pairs))
    }

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:6000\"\nupload_idle_timeout = \"2h\"\ninsecure_open = true\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.listen.port(), 6000);
        assert_eq!(c.upload_idle_timeout, Duration::from_secs(7200));
        assert_eq!(c.data_dir, PathBuf::from("./berth-data"));
        assert!(c.insecure_open);

        let over = from_env(&[
            ("BERTH_DATA_DIR", "/tmp/x"),
            ("BERTH_UPLOAD_IDLE_TIMEOUT", "90"),
            ("BERTH_INSECURE_OPEN", "off"),
            ("BERTH_TOKEN_TTL", "10m"),
            ("BERTH_TLS_CERT", "/c.pem"),
            ("BERTH_ANALYTICS_FLUSH_INTERVAL", "1s"),
            ("OTHER", "ignored"),
        ])
        .unwrap();
        let c = Config::load(Some(&path), over).unwrap();
        assert_eq!(
            c.listen.port(),
            6000,
            "the file's value stays where env is silent"
        );
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.upload_idle_timeout, Duration::from_secs(90));
        assert!(!c.insecure_open, "env overrides the file, also to false");
        assert_eq!(c.token_ttl, Duration::from_secs(600));
        assert_eq!(c.tls_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(c.analytics_flush_interval, Duration::from_secs(1));
    }

    #[test]
    fn booleans_parse_alike_for_every_setting() {
        for (text, want) in [
            ("true", true),
            ("on", true),
            ("yes", true),
            ("1", true),
            ("false", false),
            ("off", false),
            ("no", false),
            ("0", false),
        ] {
            for var in [
                "BERTH_INSECURE_OPEN",
                "BERTH_ANALYTICS",
                "BERTH_METRICS_OPEN",
            ] {
                let s = from_env(&[(var, text)]).unwrap();
                let got = s.insecure_open.or(s.analytics).or(s.metrics_open);
                assert_eq!(got, Some(want), "{var}={text}");
            }
        }
        // An empty variable is unset, as clap treats one given to `berth serve`.
        assert_eq!(
            from_env(&[("BERTH_ANALYTICS", "")]).unwrap(),
            Settings::default()
        );
    }

    #[test]
    fn a_bad_variable_is_named() {
        for (var, value) in [
            ("BERTH_LISTEN", "nope"),
            ("BERTH_INSECURE_OPEN", "maybe"),
            ("BERTH_TOKEN_TTL", "soon"),
            ("BERTH_BLOB_TRANSFER", "splice"),
            ("BERTH_STORAGE", "gcs"),
            ("BERTH_TRUSTED_PROXIES", "10.0.0.0/8,proxy.local"),
        ] {
            match from_env(&[(var, value)]) {
                Err(ConfigError::Env {
                    var: v,
                    value: x,
                    message,
                }) => {
                    assert_eq!((v.as_str(), x.as_str()), (var, value));
                    assert!(!message.is_empty());
                }
                other => panic!("{var}={value}: {other:?}"),
            }
        }
        let err = from_env(&[("BERTH_BLOB_TRANSFER", "splice")]).unwrap_err();
        assert!(err.to_string().contains("auto, sendfile or copy"), "{err}");
        let err = from_env(&[("BERTH_STORAGE", "gcs")]).unwrap_err();
        assert!(
            err.to_string().contains("unknown storage backend \"gcs\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_berth_variables_are_refused() {
        let others = ["BERTH_LOG", "BERTH_DOCKER_CONFIG"];
        check_env(
            env(&[
                ("BERTH_LISTEN", "x"),
                ("BERTH_LOG", "debug"),
                ("BERTH_DOCKER_CONFIG", "/c"),
                ("HOME", "/root"),
            ]),
            others,
        )
        .unwrap();
        match check_env(env(&[("BERTH_LISTN", "127.0.0.1:1")]), others) {
            Err(e @ ConfigError::UnknownEnv { .. }) => {
                assert!(e.to_string().contains("BERTH_LISTN"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn trust_policy_keys_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(
            &path,
            "[[trust_policy]]\nrepositories = \"release/*\"\nrequire_signature = [\"keys/a.pub\", \"/abs/b.pub\"]\ngate_release_tags = true\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.trust_policy.len(), 1);
        assert_eq!(
            c.trust_policy[0].require_signature,
            [dir.path().join("keys/a.pub"), PathBuf::from("/abs/b.pub")]
        );
        assert!(c.trust_policy[0].gate_release_tags);
        std::fs::write(
            &path,
            "[[trust_policy]]\nrepositories = \"*\"\nrequire_signatures = []\n",
        )
        .unwrap();
        assert!(
            Config::from_file(&path).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn every_setting_has_a_key_a_variable_and_a_flag() {
        let vars = Settings::env_vars();
        // All but `tag_policy`, `trust_policy`, `gc`, `retention`, `quota`, `mirror`, `scan`,
        // `webhook` and `replication`, lists of tables, which only the file can hold.
        assert_eq!(vars.len(), 34);
        for (var, long) in &vars {
            let key = long.replace('-', "_");
            assert_eq!(*var, format!("BERTH_{}", key.to_uppercase()));
            // A value of the wrong type (a table, which no setting here is): the key is
            // known, so the error is about the value.
            let err = toml::from_str::<Settings>(&format!("{key} = {{ bad = 1 }}"))
                .unwrap_err()
                .to_string();
            assert!(!err.contains("unknown field"), "{key}: {err}");
        }
    }

    #[test]
    fn mirror_tables_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(
            &path,
            "[[mirror]]\nprefix = \"docker.io\"\nupstream = \"https://registry-1.docker.io\"\ntag_ttl = \"5m\"\n\n[[mirror]]\nprefix = \"ghcr\"\nupstream = \"https://ghcr.io\"\ncredentials = \"env:GHCR_AUTH\"\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.mirror.len(), 2);
        assert_eq!(c.mirror[0].prefix, "docker.io");
        assert_eq!(c.mirror[0].tag_ttl, Some(Duration::from_secs(300)));
        assert_eq!(c.mirror[1].tag_ttl, None);
        assert_eq!(c.mirror[1].credentials.as_deref(), Some("env:GHCR_AUTH"));
        std::fs::write(
            &path,
            "[[mirror]]\nprefix = \"x\"\nupstream = \"https://x\"\nttl = \"1m\"\n",
        )
        .unwrap();
        assert!(
            Config::from_file(&path).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn blob_transfer_from_file_env_and_peer() {
        use crate::zerocopy::Transfer;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, "blob_transfer = \"sendfile\"\n").unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.blob_transfer, BlobTransfer::Sendfile);
        let c = Config::load(
            Some(&path),
            from_env(&[("BERTH_BLOB_TRANSFER", "copy")]).unwrap(),
        )
        .unwrap();
        assert_eq!(c.blob_transfer, BlobTransfer::Copy);
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
    fn storage_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, "storage = \"fs\"\n").unwrap();
        assert_eq!(Config::from_file(&path).unwrap().storage, Storage::Fs);
        std::fs::write(&path, "storage = \"floppy\"\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("unknown storage backend \"floppy\""), "{err}");
        assert_eq!(
            from_env(&[("BERTH_STORAGE", "fs")]).unwrap().storage,
            Some(Storage::Fs)
        );
        std::fs::write(
            &path,
            "storage = \"s3\"\ns3_bucket = \"registry\"\n\
             s3_endpoint = \"http://127.0.0.1:8333\"\ns3_region = \"us-east-1\"\n\
             s3_prefix = \"berth\"\ns3_redirect = true\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.storage, Storage::S3);
        assert_eq!(c.s3_bucket.as_deref(), Some("registry"));
        assert_eq!(c.s3_endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(c.s3_region.as_deref(), Some("us-east-1"));
        assert_eq!(c.s3_prefix, "berth");
        assert!(c.s3_redirect);
        let over = from_env(&[
            ("BERTH_S3_BUCKET", "other"),
            ("BERTH_S3_PREFIX", "mirror/"),
            ("BERTH_S3_REDIRECT", "false"),
        ])
        .unwrap();
        let c = Config::load(Some(&path), over).unwrap();
        assert_eq!(c.s3_bucket.as_deref(), Some("other"));
        assert_eq!(c.s3_prefix, "mirror/");
        assert!(!c.s3_redirect);
    }

    #[test]
    fn metadata_backends() {
        let backend = |url: Option<&str>| {
            let c = Config {
                data_dir: PathBuf::from("/srv/berth"),
                database_url: url.map(str::to_owned),
                ..Config::default()
            };
            c.metadata_backend()
        };
        assert_eq!(
            backend(None).unwrap(),
            MetadataBackend::Sqlite(PathBuf::from("/srv/berth/metadata.db"))
        );
        assert_eq!(
            backend(Some("sqlite:///var/lib/berth/meta.db")).unwrap(),
            MetadataBackend::Sqlite(PathBuf::from("/var/lib/berth/meta.db"))
        );
        assert_eq!(
            backend(Some("sqlite://data/meta.db")).unwrap(),
            MetadataBackend::Sqlite(PathBuf::from("data/meta.db"))
        );
        for url in ["postgres://u:p@db/berth", "postgresql://db/berth"] {
            assert_eq!(
                backend(Some(url)).unwrap(),
                MetadataBackend::Postgres(url.to_owned())
            );
        }
        assert!(backend(Some("sqlite://")).is_err());
        let err = backend(Some("mysql://root:hunter2@db/berth"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"mysql\"") && !err.contains("hunter2"),
            "{err}"
        );

        // A bad URL stops the server at start, from the file or the environment.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, "database_url = \"redis://x\"\n").unwrap();
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::DatabaseUrl(_))
        ));
        let over = from_env(&[("BERTH_DATABASE_URL", "sqlite:///tmp/m.db")]).unwrap();
        assert_eq!(
            Config::load(None, over).unwrap().database_url.as_deref(),
            Some("sqlite:///tmp/m.db")
        );
    }

    #[test]
    fn trusted_proxies_and_metrics_open_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(
            &path,
            "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\nmetrics_open = true\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        let want: Vec<Cidr> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        assert_eq!(c.trusted_proxies, want);
        assert!(c.metrics_open);
        assert!(Config::default().trusted_proxies.is_empty() && !Config::default().metrics_open);

        let over = from_env(&[
            ("BERTH_TRUSTED_PROXIES", "::1, 192.168.0.0/16"),
            ("BERTH_METRICS_OPEN", "off"),
        ])
        .unwrap();
        let c = Config::load(Some(&path), over).unwrap();
        let want: Vec<Cidr> = vec!["::1".parse().unwrap(), "192.168.0.0/16".parse().unwrap()];
        assert_eq!(
            c.trusted_proxies, want,
            "the variable replaces the file's list"
        );
        assert!(!c.metrics_open);

        std::fs::write(&path, "trusted_proxies = [\"proxy.local\"]\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("not an IP address"), "{err}");
    }

    #[test]
    fn every_rule_table_takes_one_pattern_or_a_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(
            &path,
            "[[gc]]\nrepositories = [\"ci/*\", \"pr/*\"]\nuntagged_ttl = \"1d\"\n\n\
             [[retention]]\nrepositories = [\"ci/*\"]\nkeep_last = 3\n\n\
             [[quota]]\nrepositories = [\"team-a/*\", \"team-b/*\"]\nmax_bytes = \"1GiB\"\n\n\
             [[tag_policy]]\nrepositories = [\"sandbox/*\"]\nimmutable_releases = false\n\n\
             [[webhook]]\nname = \"h\"\nurl = \"http://127.0.0.1:9/\"\nsecret = \"s\"\nrepositories = \"team/*\"\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.gc[0].repositories.as_slice(), ["ci/*", "pr/*"]);
        assert_eq!(c.retention[0].repositories, "ci/*".into());
        assert!(c.quota[0]
            .repositories
            .compile()
            .unwrap()
            .matches("team-b/x"));
        assert_eq!(c.tag_policy[0].repositories, "sandbox/*".into());
        assert_eq!(c.webhook[0].repositories.as_slice(), ["team/*"]);
    }

    #[test]
    fn gc_settings_and_rules_from_the_file() {
        let c = Config::default();
        assert_eq!(c.gc_grace, Duration::from_secs(3600));
        assert_eq!(c.gc_interval, None);
        assert!(c.gc.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(
            &path,
            "gc_grace = \"30m\"\ngc_interval = \"6h\"\n\n[[gc]]\nrepositories = \"ci/*\"\nuntagged_ttl = \"7d\"\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.gc_grace, Duration::from_secs(1800));
        assert_eq!(c.gc_interval, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(c.gc.len(), 1);
        assert_eq!(c.gc[0].repositories, "ci/*".into());
        assert_eq!(c.gc[0].untagged_ttl, Some(Duration::from_secs(7 * 86400)));
        let off = Settings {
            gc_interval: Some(Duration::ZERO),
            ..Settings::default()
        };
        let c = Config::load(Some(&path), off).unwrap();
        assert_eq!(c.gc_interval, None, "0 turns a file's schedule off");
        std::fs::write(&path, "[[gc]]\nrepositories = \"x\"\nuntagged = 1\n").unwrap();
        assert!(
            Config::from_file(&path).is_err(),
            "unknown keys of a rule are refused"
        );
    }

    #[test]
    fn webhooks_from_the_file_and_their_source_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(
            &path,
            "[[webhook]]\nname = \"ci\"\nurl = \"https://ci.example/hook\"\nsecret = \"s3cret\"\n\
             repositories = [\"team/*\"]\nevents = [\"manifest.pushed\"]\nretry_max_interval = \"1m\"\n\n\
             [[webhook]]\nname = \"all\"\nurl = \"http://127.0.0.1:9/\"\nsecret = \"x\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            from_env(&[("BERTH_WEBHOOK_SOURCE", "https://registry.example")]).unwrap(),
        )
        .unwrap();
        assert_eq!(c.webhook.len(), 2);
        assert_eq!(c.webhook[0].name, "ci");
        assert_eq!(c.webhook[0].repositories.as_slice(), ["team/*"]);
        assert_eq!(c.webhook[0].events, ["manifest.pushed"]);
        assert_eq!(
            c.webhook[0].retry_max_interval,
            Some(Duration::from_secs(60))
        );
        assert!(c.webhook[1].repositories.is_empty() && c.webhook[1].timeout.is_none());
        assert_eq!(
            c.webhook_source.as_deref(),
            Some("https://registry.example")
        );
        assert!(
            !format!("{:?}", c.webhook[0]).contains("s3cret"),
            "the secret stays out of logs"
        );
        std::fs::write(
            &path,
            "[[webhook]]\nname = \"a\"\nurl = \"http://x/\"\nsecret = \"s\"\nsecrets = 1\n",
        )
        .unwrap();
        assert!(
            Config::from_file(&path).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn scrub_interval_is_off_unless_set() {
        assert_eq!(Config::default().scrub_interval, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, "scrub_interval = \"24h\"\n").unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.scrub_interval, Some(Duration::from_secs(24 * 3600)));
        let c = Config::load(
            Some(&path),
            from_env(&[("BERTH_SCRUB_INTERVAL", "0")]).unwrap(),
        )
        .unwrap();
        assert_eq!(c.scrub_interval, None, "0 turns a file's scrub off");
        let c = Config::load(
            None,
            from_env(&[("BERTH_SCRUB_INTERVAL", "1h 30m")]).unwrap(),
        )
        .unwrap();
        assert_eq!(c.scrub_interval, Some(Duration::from_secs(5400)));
        assert!(from_env(&[("BERTH_SCRUB_INTERVAL", "weekly")]).is_err());
    }

    #[test]
    fn limits_from_file_and_env() {
        let c = Config::default();
        assert_eq!(c.header_timeout, Duration::from_secs(30));
        assert_eq!(c.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.body_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.max_connections.get(), 4096);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(
            &path,
            "header_timeout = \"10s\"\nidle_timeout = 300\nbody_idle_timeout = \"2m\"\nmax_connections = 100\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.body_idle_timeout, Duration::from_secs(120));
        assert_eq!(c.max_connections.get(), 100);

        let over = from_env(&[
            ("BERTH_HEADER_TIMEOUT", "5"),
            ("BERTH_MAX_CONNECTIONS", "20"),
        ])
        .unwrap();
        let c = Config::load(Some(&path), over).unwrap();
        assert_eq!(c.header_timeout, Duration::from_secs(5));
        assert_eq!(
            c.idle_timeout,
            Duration::from_secs(300),
            "the file's value stays"
        );
        assert_eq!(c.max_connections.get(), 20);

        // No connection at all is not a limit: refused from the file and the environment.
        std::fs::write(&path, "max_connections = 0\n").unwrap();
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::Parse { .. })
        ));
        for (var, value) in [
            ("BERTH_MAX_CONNECTIONS", "0"),
            ("BERTH_MAX_CONNECTIONS", "many"),
            ("BERTH_IDLE_TIMEOUT", "forever"),
        ] {
            assert!(
                matches!(from_env(&[(var, value)]), Err(ConfigError::Env { .. })),
                "{var}={value}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration(" 90 ").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
    }
}
