//! Domain events: what happened in the registry, for everything that is a side effect.
//!
//! Routes and the [`crate::service`] layer emit an [`Event`] when something happens (a
//! blob committed, a manifest pushed or served, a tag deleted, a login refused); they do
//! not know who listens. Subscribers (request metrics, download analytics, the audit log,
//! webhooks, replication) register once, when the server is built, and each
//! sees every event in the order it was emitted. A new variant that webhooks should
//! report needs one arm in [`crate::webhooks::describe`].
//!
//! Delivery is in-process and awaited: [`Events::emit`] returns after every subscriber
//! has handled the event, so an audit row is written before the request that caused it
//! is answered, as it was before events existed. Subscribers must therefore be quick
//! (counters in memory) or do the one write they exist for; nothing on the pull path
//! writes to the database.

use std::net::IpAddr;
use std::sync::Arc;

use berth_meta::StoredManifest;
use berth_oci::{Digest, RepoName, Tag};

/// Who caused an event: the name recorded in the audit log and the client address.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub client: IpAddr,
}

/// Something that happened in the registry.
#[derive(Debug, Clone)]
pub enum Event {
    /// An upload session was started.
    UploadStarted { repo: RepoName },
    /// Verified bytes were committed and linked into `repo` (an upload or a monolithic push).
    BlobCommitted {
        repo: RepoName,
        digest: Digest,
        size: u64,
    },
    /// A blob of another repository was linked into `repo` without moving bytes.
    BlobMounted {
        from: RepoName,
        repo: RepoName,
        digest: Digest,
    },
    /// A blob was unlinked from `repo` (and its bytes deleted if no repository holds it).
    BlobDeleted {
        repo: RepoName,
        digest: Digest,
        actor: Actor,
    },
    /// A manifest was stored, with the tags that now point to it.
    ManifestPushed {
        repo: RepoName,
        digest: Digest,
        tags: Vec<Tag>,
        /// The manifest's `subject`: it is a referrer of that digest.
        subject: Option<Digest>,
        /// The tag policy was skipped by an administrator (`?force=true`).
        forced: bool,
        actor: Actor,
    },
    /// A tag was set to a manifest (one event per tag of a push).
    TagMoved {
        repo: RepoName,
        tag: Tag,
        digest: Digest,
    },
    /// A tag was removed; the manifest stays.
    TagDeleted {
        repo: RepoName,
        tag: Tag,
        actor: Actor,
    },
    /// A manifest and the tags on it were deleted.
    ManifestDeleted {
        repo: RepoName,
        digest: Digest,
        actor: Actor,
    },
    /// A manifest was fetched: its bytes were sent (GET), or only its headers (`head`:
    /// a HEAD checked it exists).
    ManifestFetched {
        head: bool,
        repo: RepoName,
        /// The tag it was asked by, if it was.
        tag: Option<Tag>,
        manifest: Arc<StoredManifest>,
        client: IpAddr,
        user_agent: String,
        /// The account that fetched, empty for anonymous callers and open registries.
        account: String,
    },
    /// Blob bytes are being sent to a client.
    BlobServed { repo: RepoName, bytes: u64 },
    /// A registry request about a repository was answered (for per-repository request
    /// counts). `repo` is `None` when access control refused the request: a refused
    /// caller learns nothing and leaves no per-repository trace.
    RepositoryRequest {
        repo: Option<RepoName>,
        route: &'static str,
        status: u16,
        /// The OCI error code of an error answer.
        code: Option<&'static str>,
    },
    /// A login failed; `reason` is for the audit log only, never sent to the client.
    LoginFailed {
        account: String,
        reason: &'static str,
        client: IpAddr,
    },
    /// A login was refused without checking because of too many recent failures.
    LoginRateLimited { account: String, client: IpAddr },
    /// `/token` issued a token to an account that logged in.
    TokenIssued { account: String, client: IpAddr },
    /// A scrub read a stored blob back and hashed it (`bytes` long as stored).
    BlobChecked { digest: Digest, bytes: u64 },
    /// A scrub found a stored blob damaged: its bytes no longer have its digest or its
    /// recorded size, or a manifest references it and its bytes are gone. `reason` is
    /// for logs and operators; `quarantined` says the bytes were moved aside (so that
    /// clients push the blob again).
    BlobCorrupt {
        digest: Digest,
        reason: String,
        quarantined: bool,
    },
    /// A push was refused because storing `attempted` more bytes would take `repo` over
    /// its `[[quota]]` of `limit` bytes, of which `used` were in use. Nothing was stored.
    QuotaRefused {
        repo: RepoName,
        used: u64,
        limit: u64,
        attempted: u64,
    },
    /// A retention rule deleted a tag during a garbage collection (not a dry run);
    /// `rule` says which, in words. `actor` is the collection's.
    TagExpired {
        repo: RepoName,
        tag: Tag,
        rule: String,
        actor: Actor,
    },
    /// The replication rule `rule` attempted a queued change of `repo` (`reference`, a
    /// tag or digest): `error` is `None` when the target now holds it.
    Replicated {
        rule: String,
        repo: String,
        reference: String,
        delete: bool,
        error: Option<String>,
    },
    /// A garbage collection (not a dry run) finished; `actor` started it (the
    /// scheduler's runs are the server's own).
    GcFinished {
        report: Arc<crate::service::GcReport>,
        actor: Actor,
    },
}

/// A side effect that reacts to events. Errors are the subscriber's to log: an event is
/// never refused.
///
/// Most subscribers only count (`notice`, synchronous, no allocation), which keeps the
/// pull path as cheap as a direct call; one that must write before the request is
/// answered (the audit log) says which events it `awaits` and handles them in `on`.
#[async_trait::async_trait]
pub trait Subscriber: Send + Sync + 'static {
    /// Handles an event at once, without waiting (counters in memory).
    fn notice(&self, _event: &Event) {}

    /// Whether `on` must run, and be waited for, for this event.
    fn awaits(&self, _event: &Event) -> bool {
        false
    }

    /// Handles an event that `awaits` asked for.
    async fn on(&self, _event: &Event) {}
}

/// The registered subscribers. Cheap to clone.
#[derive(Clone, Default)]
pub struct Events {
    subscribers: Arc<Vec<Arc<dyn Subscriber>>>,
}

impl Events {
    /// Events delivered to `subscribers`, in this order.
    pub fn new(subscribers: Vec<Arc<dyn Subscriber>>) -> Events {
        Events {
            subscribers: Arc::new(subscribers),
        }
    }

    /// Delivers `event` to every subscriber, in registration order.
    pub async fn emit(&self, event: Event) {
        for s in self.subscribers.iter() {
            s.notice(&event);
            if s.awaits(&event) {
                s.on(&event).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Record(&'static str, Arc<Mutex<Vec<String>>>);

    #[async_trait::async_trait]
    impl Subscriber for Record {
        fn notice(&self, event: &Event) {
            if let Event::UploadStarted { repo } = event {
                self.1.lock().unwrap().push(format!("{}:{repo}", self.0));
            }
        }
    }

    #[tokio::test]
    async fn every_subscriber_sees_every_event_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let events = Events::new(vec![
            Arc::new(Record("a", seen.clone())),
            Arc::new(Record("b", seen.clone())),
        ]);
        for r in ["x", "y"] {
            events
                .emit(Event::UploadStarted {
                    repo: RepoName::parse(r).unwrap(),
                })
                .await;
        }
        assert_eq!(*seen.lock().unwrap(), ["a:x", "b:x", "a:y", "b:y"]);
    }
}
