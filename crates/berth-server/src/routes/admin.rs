//! The admin API (JSON): garbage collection, storage usage, webhooks and replication,
//! for `berth admin gc`, `berth admin usage`, `berth admin webhooks`, `berth admin
//! replication status` and `berth admin replicate` with `--registry URL`, and remote
//! operators. Every route needs `admin` on `*` (or an open registry).
//!
//! - `POST /api/v1/admin/gc` with `{"dry_run": bool, "grace": "1h"}` (both optional):
//!   runs a collection now and answers its report.
//! - `GET /api/v1/admin/gc[?limit=20]`: the last run of this server (its report) and the
//!   runs the audit log records, newest first.
//! - `GET /api/v1/admin/gc/explain/<digest>`: why a blob or manifest is kept, or that it
//!   is garbage.
//! - `GET /api/v1/admin/usage`: every repository's stored bytes with its quota.
//! - `GET /api/v1/admin/webhooks`: every hook with its delivery status
//!   ([`crate::webhooks::WebhookReport`]).
//! - `POST /api/v1/admin/webhooks/<name>/redeliver`: every delivery of the hook, dead
//!   ones included, is due now (`{"redelivered": n}`).
//! - `POST /api/v1/admin/webhooks/<name>/ping`: queues a `dev.berth.ping` event for that
//!   hook only (`{"id": "<event id>"}`).
//! - `GET /api/v1/admin/replication`: every replication rule with its status (pending,
//!   lag, failures, dead) and the latest failing changes
//!   ([`crate::replication::ReplicationReport`]).
//! - `POST /api/v1/admin/replication/<name>/sync`: queues every tag of every repository
//!   the rule matches, a full sync ([`crate::replication::SyncReport`]).

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use berth_auth::Action;
use berth_oci::ErrorCode;
use serde::Deserialize;

use super::{client_ip, error_response};
use crate::auth::{AuthError, Principal};
use crate::error::{ApiError, ApiResult};
use crate::events::Actor;
use crate::service::{GcOptions, RegistryError};
use crate::AppState;

/// The largest request body accepted: a few settings.
const MAX_BODY: usize = 64 << 10;

/// The body of `POST /api/v1/admin/gc`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcRequest {
    #[serde(default)]
    dry_run: bool,
    /// A duration (`"30m"`, or seconds); the configured `gc_grace` when absent.
    #[serde(default, deserialize_with = "crate::config::duration_str::option")]
    grace: Option<std::time::Duration>,
}

/// The caller, who must hold `admin` on `*`.
pub(super) async fn administrator(
    state: &AppState,
    parts: &axum::http::request::Parts,
) -> ApiResult<Actor> {
    let client = client_ip(&parts.extensions);
    let p = state.auth.authenticate(&parts.headers, client).await?;
    let allowed = match &p {
        Principal::Open => true,
        Principal::Account { grants, .. } => grants
            .iter()
            .any(|g| g.pattern.as_str() == "*" && g.actions.allows(Action::Admin)),
        _ => false,
    };
    if !allowed {
        const NEEDS: &str = "the admin API needs an account with admin on *";
        // Basic, not a token: tokens carry repository scopes, and the admin API is about
        // the whole registry.
        return Err(match p {
            Principal::Anonymous { .. } => ApiError::new(ErrorCode::Unauthorized, NEEDS)
                .header("www-authenticate", "Basic realm=\"berth admin\""),
            _ => AuthError::Denied(NEEDS.into()).into(),
        });
    }
    Ok(Actor {
        name: p.name().to_owned(),
        client,
    })
}

fn json<T: serde::Serialize>(v: &T) -> ApiResult<Response> {
    let body = serde_json::to_string(v)
        .map_err(|e| RegistryError::ParameterInvalid(format!("cannot encode the answer: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `POST /api/v1/admin/gc`.
pub async fn gc(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let result = async {
        let actor = administrator(&state, &parts).await?;
        let bytes = axum::body::to_bytes(Body::new(body), MAX_BODY)
            .await
            .map_err(|e| RegistryError::ParameterInvalid(format!("cannot read the body: {e}")))?;
        let request: GcRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
            GcRequest::default()
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| RegistryError::ParameterInvalid(format!("invalid request: {e}")))?
        };
        let options = GcOptions {
            dry_run: request.dry_run,
            grace: request.grace,
            halt_after: None,
        };
        let report = state.registry.gc(options, actor).await?;
        json(&report)
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        error_response(&state, e, parts.headers.get(header::HOST), false)
    })
}

/// How many audit entries `GET /api/v1/admin/gc` searches for runs.
const GC_RUN_SEARCH: usize = 2_000;

/// `GET /api/v1/admin/gc`: the last run this server made (its full report) and the runs
/// the audit log records (newest first, at most `?limit=`, default 20), from every
/// server of the registry.
pub async fn gc_runs(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let result = async {
        let actor = administrator(&state, &parts).await?;
        let query = super::Query::parse(parts.uri.query());
        let limit = match query.get("limit") {
            None => 20,
            Some(raw) => raw.parse::<usize>().map_err(|_| {
                RegistryError::ParameterInvalid(format!("limit {raw:?} is not a number"))
            })?,
        };
        let admin = state.auth.admin(&actor.name, actor.client);
        let runs: Vec<serde_json::Value> = admin
            .audit_log(0, GC_RUN_SEARCH)
            .await?
            .into_iter()
            .filter(|e| e.action == "gc")
            .take(limit)
            .map(|e| {
                serde_json::json!({"at": berth_oci::time::rfc3339(e.at), "actor": e.actor,
                    "detail": e.detail, "client": e.client})
            })
            .collect();
        json(&serde_json::json!({"last": state.registry.last_gc().as_deref(), "runs": runs}))
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        error_response(&state, e, parts.headers.get(header::HOST), false)
    })
}

/// `GET /api/v1/admin/gc/explain/<digest>`.
pub async fn explain(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let result = async {
        administrator(&state, &parts).await?;
        let raw = parts
            .uri
            .path()
            .strip_prefix("/api/v1/admin/gc/explain/")
            .unwrap_or("");
        let digest = crate::service::parse_digest(raw)?;
        json(&state.registry.gc_explain(&digest).await?)
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        error_response(&state, e, parts.headers.get(header::HOST), false)
    })
}

/// `GET /api/v1/admin/usage`.
pub async fn usage(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let result = async {
        administrator(&state, &parts).await?;
        json(&state.registry.usage().await?)
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        error_response(&state, e, parts.headers.get(header::HOST), false)
    })
}
/// Runs `f` for an administrator, answering its JSON or the error.
async fn as_admin<T, F>(state: &AppState, req: Request, f: F) -> Response
where
    T: serde::Serialize,
    F: AsyncFnOnce(Actor) -> ApiResult<T>,
{
    let (parts, _) = req.into_parts();
    let result = async {
        let actor = administrator(state, &parts).await?;
        json(&f(actor).await?)
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        error_response(state, e, parts.headers.get(header::HOST), false)
    })
}

/// `GET /api/v1/admin/webhooks`.
pub async fn webhooks(State(state): State<AppState>, req: Request) -> Response {
    let hooks = state.webhooks.clone();
    as_admin(&state, req, async |_| Ok(hooks.report().await?)).await
}

/// `POST /api/v1/admin/webhooks/<name>/redeliver`.
pub async fn webhook_redeliver(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let hooks = state.webhooks.clone();
    as_admin(&state, req, async |_| {
        let n = hooks.redeliver(&name).await?;
        Ok(serde_json::json!({ "redelivered": n }))
    })
    .await
}

/// `POST /api/v1/admin/webhooks/<name>/ping`.
pub async fn webhook_ping(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let hooks = state.webhooks.clone();
    as_admin(&state, req, async |actor| {
        let id = hooks.ping(&name, &actor.name).await?;
        Ok(serde_json::json!({ "id": id }))
    })
    .await
}

/// `GET /api/v1/admin/replication`.
pub async fn replication(State(state): State<AppState>, req: Request) -> Response {
    let repl = state.replication.clone();
    as_admin(&state, req, async |_| Ok(repl.report().await?)).await
}

/// `POST /api/v1/admin/replication/<name>/sync`.
pub async fn replication_sync(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let repl = state.replication.clone();
    as_admin(&state, req, async |actor| {
        let report = repl.sync(&name).await?;
        tracing::info!(rule = %name, actor = %actor.name, queued = report.queued,
            repositories = report.repositories, "full replication sync queued");
        Ok(report)
    })
    .await
}
