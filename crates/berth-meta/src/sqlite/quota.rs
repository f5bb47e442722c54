//! Quota reservations (see [`MetadataStore::quota_reserve`](crate::MetadataStore::quota_reserve)):
//! the bytes a push is about to add to a repository under a quota, held from just before
//! its write until just after.
//!
//! Reservations live in memory ([`Reservations`]), as claims do (see
//! [`blobs`](super::blobs)): a SQLite database is written by one process only, so only
//! that process's pushes can compete for a repository's quota, and a crash ends every
//! push that held one. Reserving runs on the writer thread, so it is ordered against
//! every other reservation and every link and manifest write: the count it makes is
//! one consistent state, and a reservation stops counting in the very transaction that
//! links its blob or stores its manifest (the content is then in the repository).

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::{OptionalExtension, Transaction};

use super::{db_err, now};
use crate::{MetaError, QuotaReservation, Reserved, ReservedKind, RESERVATION_STALE_SECS};

/// One live reservation.
#[derive(Debug, Clone)]
struct Held {
    repo: String,
    kind: ReservedKind,
    digest: String,
    bytes: u64,
    /// Unix seconds.
    at: i64,
}

/// The live reservations of this process, by id.
#[derive(Debug, Default)]
pub(super) struct Reservations {
    live: Mutex<HashMap<String, Held>>,
}

impl Reservations {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends reservation `id`, if it exists.
    pub(super) fn release(&self, id: &str) {
        self.live().remove(id);
    }
}

/// The body of a reservation's transaction (on the writer thread).
pub(super) fn reserve(
    tx: &Transaction<'_>,
    held: &Reservations,
    r: &QuotaReservation,
    limit: u64,
) -> Result<Reserved, MetaError> {
    let repo = r.repo.as_str();
    let digest = r.digest.to_string();
    if holds(tx, repo, r.kind, &digest)? {
        return Ok(Reserved::Granted);
    }
    let cutoff = now() - RESERVATION_STALE_SECS as i64;
    // Each pending (kind, digest) once, at its largest: two uploads of one blob add it once.
    let mut pending: HashMap<(ReservedKind, String), u64> = HashMap::new();
    {
        let mut live = held.live();
        live.retain(|_, h| h.at > cutoff);
        for (id, h) in live.iter() {
            if h.repo == repo && *id != r.id {
                let bytes = pending.entry((h.kind, h.digest.clone())).or_default();
                *bytes = (*bytes).max(h.bytes);
            }
        }
    }
    // What another reservation of the same content holds is part of this one's bytes.
    let same = pending.get(&(r.kind, digest.clone())).copied().unwrap_or(0);
    let mut used = stored(tx, repo)?;
    for ((kind, d), bytes) in pending {
        if !holds(tx, repo, kind, &d)? {
            used = used.saturating_add(bytes);
        }
    }
    if used.saturating_add(r.bytes.saturating_sub(same)) > limit {
        return Ok(Reserved::Refused { used });
    }
    held.live().insert(
        r.id.clone(),
        Held {
            repo: repo.to_owned(),
            kind: r.kind,
            digest,
            bytes: r.bytes,
            at: now(),
        },
    );
    Ok(Reserved::Granted)
}

/// Whether `repo` holds the content a reservation is for.
fn holds(
    tx: &Transaction<'_>,
    repo: &str,
    kind: ReservedKind,
    digest: &str,
) -> Result<bool, MetaError> {
    let sql = match kind {
        ReservedKind::Blob => {
            "SELECT 1 FROM blobs b JOIN repositories r ON r.id = b.repo_id
             WHERE r.name = ?1 AND b.digest = ?2"
        }
        ReservedKind::Manifest => {
            "SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = ?1 AND m.digest = ?2"
        }
    };
    tx.prepare_cached(sql)
        .and_then(|mut s| {
            s.query_row([repo, digest], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map(|found| found.is_some())
        .map_err(db_err("checking reserved content"))
}

/// What `repo` stores, as [`crate::RepositoryUsage::bytes`] counts it (0 when unknown).
fn stored(tx: &Transaction<'_>, repo: &str) -> Result<u64, MetaError> {
    tx.prepare_cached(
        "SELECT (SELECT coalesce(sum(b.size), 0) FROM blobs b WHERE b.repo_id = r.id)
              + (SELECT coalesce(sum(length(m.content)), 0) FROM manifests m WHERE m.repo_id = r.id)
         FROM repositories r WHERE r.name = ?1",
    )
    .and_then(|mut s| s.query_row([repo], |r| r.get::<_, i64>(0)).optional())
    .map(|n| n.unwrap_or(0).max(0) as u64)
    .map_err(db_err("reading repository usage"))
}
