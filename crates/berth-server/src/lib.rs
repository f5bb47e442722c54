//! The Berth registry server: the OCI Distribution Spec v1.1 over HTTP.
//!
//! # Layout
//! - [`config`]: typed configuration (file, environment); [`backends`] builds the
//!   stores it names (the one place that knows which backends exist); [`build_state`]
//!   wires them into an [`AppState`].
//! - [`endpoint`]: parses every `/v2/...` path once into an [`endpoint::Endpoint`].
//! - [`routes`]: thin handlers, one file per OCI resource: they read the request, call
//!   the [`service`], and write the response headers the spec requires.
//! - [`service`]: every registry operation (uploads, blobs, manifests, tags) over the
//!   blob and metadata stores; returns a domain [`service::RegistryError`].
//! - [`error`]: the one [`error::ApiError`] type and the one mapping of domain errors
//!   to the OCI error table.
//! - [`events`]: what happened ([`events::Event`]), delivered to [`subscribers`]:
//!   [`metrics`] (Prometheus counters at `/metrics`), [`analytics`] (download counters,
//!   flushed in batches) and the audit log.
//! - [`access_log`]: one structured log line per request, and the request metrics.
//! - [`auth`]: who is calling (open, anonymous, Basic, bearer token) and what they may do;
//!   [`accounts`]: account administration shared by `berth admin` and the server.
//! - [`policy`]: the tag policy (immutable releases, forward-only floating tags) and the
//!   trust policy's rules and keys (required signatures, the publish gate).
//! - [`retention`]: hourly counters rolled up into days, old audit entries deleted.
//! - [`scanning`]: vulnerability scans of pushed images (`[[scan]]`), queued by a
//!   subscriber, made by a background worker, re-matched when the database changes.
//! - [`webhooks`]: events as signed CloudEvents POSTed to configured URLs from a durable
//!   outbox (a subscriber writes it, a background task delivers it).
//! - [`replication`]: pushes, tag moves and (optionally) deletions copied to other
//!   registries from a durable queue (a subscriber writes it, a background task copies
//!   from the local stores with the client's copy engine).
//! - [`listener`]: the accept loop (plain or TLS, HTTP/1.1 and HTTP/2, graceful drain);
//!   [`zerocopy`]: `sendfile`/copy for blob GETs on plain HTTP/1.x.
//!
//! Layers call one way: routes → service → stores. Stores never call back up, the
//! service knows no HTTP type, and side effects hang off events.

pub mod access_log;
pub mod accounts;
pub mod analytics;
pub mod auth;
pub mod backends;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod listener;
pub mod metrics;
pub mod migrate;
pub mod policy;
pub mod replication;
pub mod retention;
pub mod routes;
pub mod scanning;
pub mod service;
mod state;
pub mod subscribers;
pub mod webhooks;
pub mod zerocopy;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::Config;
pub use state::{AppState, StateParts};

/// How long a presigned URL of a redirected blob download stays valid (Distribution uses
/// 20 minutes too): long enough for a slow start, short enough that a leaked URL expires.
const REDIRECT_EXPIRY: Duration = Duration::from_secs(20 * 60);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Backend(#[from] backends::BackendError),
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] listener::TlsError),
    #[error("cannot read or create the token signing key {path}: {source}")]
    Key {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to listen on {0} with no account: anyone could push and delete. Create one with `berth admin user add`, listen on a loopback address, or pass --insecure-open")]
    Unsafe(std::net::SocketAddr),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Trust(#[from] policy::TrustPolicyError),
    #[error(transparent)]
    Gc(#[from] service::GcRuleError),
    #[error(transparent)]
    Retention(#[from] service::RetentionRuleError),
    #[error(transparent)]
    Quota(#[from] service::QuotaRuleError),
    #[error(transparent)]
    Mirror(#[from] service::MirrorRuleError),
    #[error(transparent)]
    Webhook(#[from] webhooks::WebhookConfigError),
    #[error(transparent)]
    Scan(#[from] scanning::ScanRuleError),
    #[error(transparent)]
    Replication(#[from] replication::ReplicationConfigError),
    #[error("--tls-cert and --tls-key must be given together")]
    TlsHalf,
    #[error("cannot read the accounts: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("cannot reconcile upload sessions: {0}")]
    Registry(#[from] service::RegistryError),
    #[error("refusing to start: this registry had accounts ({0} exists) but the metadata database holds none, so it would be open to anyone. Was the database deleted or replaced? Restore it, or create an account with `berth admin user add`; delete {0} only to make the registry open deliberately")]
    AccountsLost(std::path::PathBuf),
}

/// Builds the server's state from the configuration: the backends it names (through
/// [`backends`]), the registry service, access control, and the event subscribers.
pub fn build_state(config: &Config) -> Result<AppState, StartError> {
    let data_lock = Arc::new(backends::lock_data_dir(config)?);
    let blobs = backends::open_blobs(config)?;
    let stores = backends::open_meta(config, backends::Create::Yes)?;
    let meta_watch = Arc::new(backends::MetaWatch::new(config)?);
    let scan_store = stores.scans.clone();
    // Pulls read manifests and blob links through a bounded cache; every write goes
    // through it too and invalidates what it changes.
    let cache = Arc::new(berth_meta::cache::CachingStore::new(
        stores.meta,
        64 << 20,
        Duration::from_secs(10),
    ));
    // Replicas sharing a PostgreSQL database also clear what the others change.
    if let Some(subscribe) = &stores.invalidate_on_change {
        subscribe(&cache).map_err(backends::BackendError::Meta)?;
    }
    let meta: Arc<dyn berth_meta::MetadataStore> = cache;
    let key_path = config
        .token_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("token.key"));
    let key = auth::load_or_create_key(&key_path).map_err(|source| StartError::Key {
        path: key_path,
        source,
    })?;
    let metrics = Arc::new(metrics::Metrics::default());
    let mut analytics =
        analytics::Analytics::new(stores.stats, meta.clone(), config.analytics_flush_interval)
            .with_metrics(metrics.clone());
    analytics.enabled = config.analytics;
    analytics.track_pulls = config
        .retention
        .iter()
        .any(|r| r.keep_pulled_within.is_some());
    let analytics = Arc::new(analytics);
    let audit = Arc::new(subscribers::AuditSubscriber::new(stores.accounts.clone()));
    let webhooks = Arc::new(webhooks::Webhooks::new(
        &config.webhook,
        &webhook_source(config),
        stores.accounts.clone(),
    )?);
    let scanner = Arc::new(scanning::Scanner::new(
        scanning::ScanRules::new(&config.scan)?,
        config.scan_db_dir(),
        scan_store,
        meta.clone(),
        blobs.clone(),
        metrics.clone(),
    ));
    let replication = Arc::new(replication::Replication::new(
        &config.replication,
        stores.accounts.clone(),
        meta.clone(),
        true,
    )?);
    let mut subscribers: Vec<Arc<dyn events::Subscriber>> = vec![
        Arc::new(subscribers::MetricsSubscriber(metrics.clone())),
        Arc::new(subscribers::AnalyticsSubscriber(analytics.clone())),
        audit.clone(),
    ];
    // Without hooks the subscriber would only cost every event a check.
    if !webhooks.is_empty() {
        subscribers.push(Arc::new(webhooks::WebhookSubscriber(webhooks.clone())));
    }
    // Without a rule that scans, pushes are not queued at all.
    if scanner.enabled() {
        subscribers.push(Arc::new(scanning::ScanSubscriber(scanner.clone())));
    }
    if !replication.is_empty() {
        subscribers.push(Arc::new(replication::ReplicationSubscriber(
            replication.clone(),
        )));
    }
    let events = events::Events::new(subscribers);
    let auth = Arc::new(
        auth::Auth::new(
            stores.accounts,
            key,
            config.token_service.clone(),
            config.token_realm.clone(),
            config.token_ttl,
            config.tls_cert.is_some(),
            events.clone(),
        )
        .with_network(
            berth_auth::proxy::TrustedProxies::new(config.trusted_proxies.clone()),
            config.metrics_open,
        )
        .with_accounts_marker(config.data_dir.join(accounts::MARKER)),
    );
    let registry = Arc::new(
        service::Registry::new(service::RegistryParts {
            blobs,
            meta: meta.clone(),
            policy: Arc::new(policy::Policy::new(&config.tag_policy)?),
            events: events.clone(),
            max_manifest_bytes: config.max_manifest_bytes,
            upload_idle_timeout: config.upload_idle_timeout,
        })
        .with_trust(Arc::new(policy::TrustPolicy::new(&config.trust_policy)?))
        .with_gc(service::GcSettings::new(config.gc_grace, &config.gc)?)
        .with_retention(service::TagRetention::new(
            &config.retention,
            Some(analytics.stats().clone()),
        )?)
        .with_quotas(service::Quotas::new(&config.quota)?)
        .with_redirect(config.s3_redirect.then_some(REDIRECT_EXPIRY))
        .with_mirrors(mirrors(config)?),
    );
    // `berth admin usage --data-dir` reads the quotas from here; a data directory it
    // cannot write to only costs that command its quota column, never the start.
    if config.data_dir.is_dir() {
        if let Err(e) = service::write_rules_file(&config.data_dir, &config.quota) {
            tracing::warn!(dir = %config.data_dir.display(), error = %e, "cannot record the quota rules in the data directory");
        }
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(listener::tls_acceptor(c, k)?),
        (None, None) => None,
        _ => return Err(StartError::TlsHalf),
    };
    Ok(AppState::new(state::StateParts {
        registry,
        auth,
        events,
        metrics,
        analytics,
        insecure_open: config.insecure_open,
        tls,
        blob_transfer: config.blob_transfer,
        limits: listener::Limits::from_config(config),
        data_lock,
        meta_watch,
        scrub_interval: config.scrub_interval,
        gc_interval: config.gc_interval,
        audit,
        stats_hourly_retention: config.stats_hourly_retention,
        audit_retention: config.audit_retention,
        shared_metadata: matches!(
            config.metadata_backend(),
            Ok(config::MetadataBackend::Postgres(_))
        ),
        webhooks,
        scanner,
        replication,
    }))
}

/// The pull-through mirrors; their downloads spill into the filesystem store's upload
/// directory (with S3 storage, into the system's temporary directory).
fn mirrors(config: &Config) -> Result<service::Mirrors, StartError> {
    let mirrors = service::Mirrors::new(&config.mirror)?;
    Ok(match config.storage {
        config::Storage::Fs => mirrors.with_spill_dir(config.data_dir.join("uploads")),
        config::Storage::S3 => mirrors,
    })
}

/// The CloudEvents `source` of webhook events: the configured one, else
/// `berth://<host name>` (Linux's, or `localhost` where it cannot be read).
pub fn webhook_source(config: &Config) -> String {
    config.webhook_source.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        format!(
            "berth://{}",
            if host.is_empty() { "localhost" } else { host }
        )
    })
}

/// The HTTP application: the router with the access-log layer (which also resolves the
/// client address and adds the API version header).
fn app(state: AppState) -> axum::Router {
    routes::router(state.clone()).layer(axum::middleware::from_fn_with_state(
        state,
        access_log::log_request,
    ))
}

/// How long an upload must disagree with its session (bytes without a session, or the
/// reverse) before a server sharing its metadata with replicas removes it at start.
const UPLOAD_SETTLE: Duration = Duration::from_secs(10);

/// Serves the registry on `listener` until `shutdown` completes, then lets in-flight
/// requests finish. Also runs upload-session housekeeping in the background.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    run_with_ready(listener, state, shutdown, |_| {}).await
}

/// [`run`], calling `ready` with the address once every start-up check has passed and
/// requests are about to be served (where `berth serve` says it is listening: a refused
/// start never claims to listen).
pub async fn run_with_ready(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), StartError> {
    let addr = listener.local_addr()?;
    if let Some(marker) = state.auth.accounts_lost().await? {
        return Err(StartError::AccountsLost(marker));
    }
    let accounts_exist = state.auth.accounts_exist().await?;
    if !accounts_exist && !addr.ip().is_loopback() {
        if !state.insecure_open {
            return Err(StartError::Unsafe(addr));
        }
        tracing::warn!(
            "no account exists and --insecure-open is set: anyone who can reach {addr} may push and delete"
        );
    }
    // Alone on its data (SQLite: the directory lock keeps other servers out), nothing
    // creates uploads yet, so what disagrees is left over and goes now. Beside replicas,
    // an upload being created elsewhere disagrees for an instant (its bytes' state is
    // written before its session row): only what still disagrees after a while goes, in
    // the background.
    let reconciler = if state.shared_metadata {
        Some(tokio::spawn({
            let registry = state.registry.clone();
            async move {
                if let Err(e) = registry.reconcile_uploads(UPLOAD_SETTLE).await {
                    tracing::warn!(error = %e, "cannot reconcile upload sessions with their bytes");
                }
            }
        }))
    } else {
        state
            .registry
            .reconcile_uploads(std::time::Duration::ZERO)
            .await?;
        None
    };
    let janitor = tokio::spawn(state.registry.clone().expire_uploads_forever());
    let flusher = tokio::spawn(state.analytics.clone().flush_forever());
    let retention = tokio::spawn(
        retention::Retention {
            stats: state.analytics.stats().clone(),
            accounts: state.auth.accounts().clone(),
            hourly: state.stats_hourly_retention,
            audit: state.audit_retention,
        }
        .run_forever(),
    );
    let watcher = tokio::spawn(
        state
            .meta_watch
            .clone()
            .watch_forever(backends::META_WATCH_INTERVAL),
    );
    let scrubber = state
        .scrub_interval
        .map(|every| tokio::spawn(state.registry.clone().scrub_forever(every)));
    let collector = state
        .gc_interval
        .map(|every| tokio::spawn(state.registry.clone().gc_forever(every)));
    // Without hooks nothing is delivered (rows of hooks removed since stay pending, shown
    // by `berth admin webhooks`), and an idle registry does not poll the outbox.
    let hooks = !state.webhooks.is_empty();
    let deliverer =
        hooks.then(|| tokio::spawn(webhooks::delivery::deliver_forever(state.webhooks.clone())));
    let pulls = hooks.then(|| tokio::spawn(state.webhooks.clone().flush_pulls_forever()));
    // Scans pending at the last stop are made now; new ones as pushes queue them.
    let scanner = state
        .scanner
        .enabled()
        .then(|| tokio::spawn(state.scanner.clone().run_forever()));
    let webhooks = state.webhooks.clone();
    // Without rules nothing is replicated (rows of removed rules stay, shown by `berth
    // admin replication status`).
    let replicator = (!state.replication.is_empty()).then(|| {
        tokio::spawn(replication::worker::replicate_forever(
            state.replication.clone(),
            state.registry.clone(),
            state.events.clone(),
            state.metrics.clone(),
        ))
    });
    let tls = state.tls.clone();
    let analytics = state.analytics.clone();
    let audit = state.audit.clone();
    let transfer = state.blob_transfer;
    let limits = state.limits;
    let app = app(state);
    ready(addr);
    let result = listener::serve(
        listener,
        tls,
        transfer,
        limits,
        app,
        shutdown,
        Duration::from_secs(30),
    )
    .await;
    janitor.abort();
    if let Some(r) = reconciler {
        r.abort();
    }
    flusher.abort();
    retention.abort();
    watcher.abort();
    if let Some(s) = scrubber {
        s.abort();
    }
    if let Some(c) = collector {
        c.abort();
    }
    // A scan in flight stays pending and is made again at the next start.
    if let Some(s) = scanner {
        s.abort();
    }
    // An attempt in flight is made again at the next start (same event id; a copy
    // finds what it wrote already at the target).
    for task in deliverer.into_iter().chain(pulls).chain(replicator) {
        task.abort();
    }
    webhooks.flush_pulls().await;
    // Refusals counted in the current window would otherwise never be written.
    audit.flush_refusals().await;
    if let Err(e) = analytics.flush(true).await {
        tracing::error!(error = %e, "could not write the last download counters");
    }
    result.map_err(StartError::Serve)
}
