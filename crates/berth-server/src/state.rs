//! The server's shared state: the registry service, access control, the event bus and
//! the observers, and the listener settings. Cloned for every request by the router and
//! each middleware, so it is one `Arc` (one reference count to touch, not one per field).

use std::sync::Arc;

use crate::analytics::Analytics;
use crate::auth::Auth;
use crate::config::BlobTransfer;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::service::Registry;

/// Shared state of the server, handed to every route (its fields through `Deref`).
#[derive(Clone)]
pub struct AppState(Arc<StateParts>);

impl AppState {
    pub fn new(parts: StateParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = StateParts;

    fn deref(&self) -> &StateParts {
        &self.0
    }
}

/// What the state holds.
pub struct StateParts {
    /// Every registry operation (routes call nothing below it).
    pub registry: Arc<Registry>,
    pub auth: Arc<Auth>,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub analytics: Arc<Analytics>,
    pub insecure_open: bool,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub blob_transfer: BlobTransfer,
    /// Timeouts and the connection limit of the accept loop.
    pub limits: crate::listener::Limits,
    /// The data directory's lock, held while any clone of the state lives.
    pub data_lock: Arc<berth_storage::lock::DirLock>,
    /// Whether the metadata database file is still the one opened (writes are refused
    /// once it is not).
    pub meta_watch: Arc<crate::backends::MetaWatch>,
    /// How long after one background scrub the next starts (`None`: no background scrub).
    pub scrub_interval: Option<std::time::Duration>,
    /// How long after one scheduled garbage collection the next starts (`None`: none).
    pub gc_interval: Option<std::time::Duration>,
    /// The audit log's subscriber, whose counted refusals are written at shutdown.
    pub audit: Arc<crate::subscribers::AuditSubscriber>,
    /// The windows of [`crate::retention`]: hourly counters, audit entries.
    pub stats_hourly_retention: Option<std::time::Duration>,
    pub audit_retention: Option<std::time::Duration>,
    /// The configured webhooks and their outbox (delivered by a task of `run`).
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Scanning on push (`[[scan]]`): the queue's worker and what the APIs read.
    pub scanner: Arc<crate::scanning::Scanner>,
    /// The replication rules and their queue (replicated by a task of `run`).
    pub replication: Arc<crate::replication::Replication>,
    /// Whether other servers share the metadata database (PostgreSQL replicas), so that
    /// another process may be creating uploads while this one starts.
    pub shared_metadata: bool,
}
