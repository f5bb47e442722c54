//! The admin API's accounts, grants, public patterns and audit log (JSON): what
//! `berth admin` does on a data directory, for a running registry, so that a remote
//! operator (`berth admin --registry URL`) or the dashboard can manage it. Every route
//! needs `admin` on `*`; on an open registry (no account yet) only loopback clients may
//! change accounts, so that nobody else can close it by creating the first one.
//!
//! - `GET /api/v1/admin/accounts`: users and robots with their grants.
//! - `POST /api/v1/admin/users` `{"name", "password", "grants": ["team/*:pull,push"]}`.
//! - `POST /api/v1/admin/robots` `{"name", "grants", "expires": "90d"}`: answers the
//!   secret, shown only this once.
//! - `POST /api/v1/admin/robots/<name>/rotate`: a new secret; the old one stops working.
//! - `PATCH /api/v1/admin/accounts/<name>` `{"disabled": bool, "password": "..."}`.
//! - `DELETE /api/v1/admin/accounts/<name>[?kind=robot|user]`: `kind` refuses the other.
//! - `POST /api/v1/admin/accounts/<name>/grants` `{"grants": [...]}`;
//!   `DELETE /api/v1/admin/accounts/<name>/grants?pattern=P`.
//! - `GET /api/v1/admin/public`; `POST /api/v1/admin/public` `{"patterns": [...]}`;
//!   `DELETE /api/v1/admin/public?pattern=P`.
//! - `GET /api/v1/admin/audit[?since=1d][&limit=100]`: the newest entries first.
//!
//! Times are RFC 3339. A password travels in the request body: use TLS (or loopback).

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_auth::{Grant, Pattern};
use berth_oci::time::rfc3339;
use serde::Deserialize;

use super::{error_response, Query};
use crate::accounts::{AccountInfo, Admin};
use crate::error::{ApiError, ApiResult};
use crate::service::RegistryError;
use crate::AppState;

/// The largest request body accepted: an account with its grants.
const MAX_BODY: usize = 64 << 10;

/// The most audit entries one request returns.
const MAX_AUDIT: usize = 10_000;

/// Runs `f` for an administrator with the request's body, rendering its error.
async fn handle<F, Fut>(state: AppState, req: Request, mutates: bool, f: F) -> Response
where
    F: FnOnce(Admin, Parts, Bytes) -> Fut,
    Fut: Future<Output = ApiResult<Response>>,
{
    let (parts, body) = req.into_parts();
    let result = async {
        let actor = super::admin::administrator(&state, &parts).await?;
        if mutates && !actor.client.is_loopback() && state.auth.is_open().await? {
            return Err(ApiError::from(crate::auth::AuthError::Denied(
                "this registry has no account yet: create the first one from the registry's own machine (berth admin user add, or the admin API over loopback)".into(),
            )));
        }
        let bytes = axum::body::to_bytes(Body::new(body), MAX_BODY)
            .await
            .map_err(|e| RegistryError::ParameterInvalid(format!("cannot read the body: {e}")))?;
        let admin = state.auth.admin(&actor.name, actor.client);
        f(admin, parts.clone(), bytes).await
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        error_response(&state, e, parts.headers.get(header::HOST), false)
    })
}

fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::ParameterInvalid(format!("invalid request: {e}")).into())
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn grants(raw: &[String]) -> ApiResult<Vec<Grant>> {
    raw.iter()
        .map(|g| {
            g.parse::<Grant>().map_err(|e| {
                ApiError::from(RegistryError::ParameterInvalid(format!("grant {g:?}: {e}")))
            })
        })
        .collect()
}

fn pattern(raw: Option<&str>) -> ApiResult<Pattern> {
    let raw = raw.ok_or_else(|| RegistryError::ParameterInvalid("pass ?pattern=P".into()))?;
    Pattern::parse(raw)
        .map_err(|e| RegistryError::ParameterInvalid(format!("pattern {raw:?}: {e}")).into())
}

/// An account as the admin API and `berth admin ... list --json` show it.
pub fn account_json(a: &AccountInfo) -> serde_json::Value {
    serde_json::json!({
        "name": a.name,
        "kind": a.kind,
        "disabled": a.disabled,
        "expires_at": a.expires_at.map(rfc3339),
        "created_at": rfc3339(a.created_at),
        "grants": a.grants,
    })
}

/// `GET /api/v1/admin/accounts`.
pub async fn accounts(State(state): State<AppState>, req: Request) -> Response {
    handle(state, req, false, |admin, _, _| async move {
        let list: Vec<_> = admin.list().await?.iter().map(account_json).collect();
        Ok(json(StatusCode::OK, &list.into()))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: String,
    #[serde(default)]
    grants: Vec<String>,
}

/// `POST /api/v1/admin/users`.
pub async fn user_add(State(state): State<AppState>, req: Request) -> Response {
    handle(state, req, true, |admin, _, bytes| async move {
        let u: NewUser = body(&bytes)?;
        if u.password.is_empty() {
            return Err(RegistryError::ParameterInvalid("the password is empty".into()).into());
        }
        admin
            .user_add(&u.name, &u.password, &grants(&u.grants)?)
            .await?;
        Ok(json(
            StatusCode::CREATED,
            &serde_json::json!({"name": u.name, "kind": "user"}),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRobot {
    name: String,
    grants: Vec<String>,
    /// A duration (`"90d"`, or seconds); never expires when absent.
    #[serde(default, deserialize_with = "crate::config::duration_str::option")]
    expires: Option<std::time::Duration>,
}

/// `POST /api/v1/admin/robots`: answers the secret, shown only this once.
pub async fn robot_create(State(state): State<AppState>, req: Request) -> Response {
    handle(state, req, true, |admin, _, bytes| async move {
        let r: NewRobot = body(&bytes)?;
        if r.grants.is_empty() {
            return Err(
                RegistryError::ParameterInvalid("a robot needs at least one grant".into()).into(),
            );
        }
        let secret = admin
            .robot_create(&r.name, &grants(&r.grants)?, r.expires)
            .await?;
        let expires_at = r.expires.map(|d| {
            rfc3339(
                berth_oci::time::now()
                    .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            )
        });
        Ok(json(
            StatusCode::CREATED,
            &serde_json::json!({"name": r.name, "kind": "robot", "secret": secret,
                "expires_at": expires_at}),
        ))
    })
    .await
}

/// `POST /api/v1/admin/robots/<name>/rotate`.
pub async fn robot_rotate(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    handle(state, req, true, |admin, _, _| async move {
        let secret = admin.robot_rotate(&name).await?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({"name": name, "secret": secret}),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountChange {
    disabled: Option<bool>,
    password: Option<String>,
}

/// `PATCH /api/v1/admin/accounts/<name>`.
pub async fn account_change(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    handle(state, req, true, |admin, _, bytes| async move {
        let c: AccountChange = body(&bytes)?;
        if c.disabled.is_none() && c.password.is_none() {
            return Err(RegistryError::ParameterInvalid(
                "nothing to change: send \"disabled\" and/or \"password\"".into(),
            )
            .into());
        }
        if let Some(p) = &c.password {
            if p.is_empty() {
                return Err(RegistryError::ParameterInvalid("the password is empty".into()).into());
            }
            admin.passwd(&name, p).await?;
        }
        if let Some(d) = c.disabled {
            admin.set_disabled(&name, d).await?;
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `DELETE /api/v1/admin/accounts/<name>[?kind=robot|user]`.
pub async fn account_delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    handle(state, req, true, |admin, parts, _| async move {
        let query = Query::parse(parts.uri.query());
        match query.get("kind") {
            Some("robot") => admin.robot_delete(&name).await?,
            Some("user") => admin.user_delete(&name).await?,
            None => admin.delete(&name).await?,
            Some(other) => {
                return Err(RegistryError::ParameterInvalid(format!(
                    "kind {other:?}: use robot or user"
                ))
                .into())
            }
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantList {
    grants: Vec<String>,
}

/// `POST /api/v1/admin/accounts/<name>/grants`.
pub async fn grant(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    handle(state, req, true, |admin, _, bytes| async move {
        let g: GrantList = body(&bytes)?;
        let list = grants(&g.grants)?;
        for g in &list {
            admin.grant(&name, g).await?;
        }
        let granted: Vec<String> = list.iter().map(ToString::to_string).collect();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({"name": name, "granted": granted}),
        ))
    })
    .await
}

/// `DELETE /api/v1/admin/accounts/<name>/grants?pattern=P`.
pub async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    handle(state, req, true, |admin, parts, _| async move {
        let query = Query::parse(parts.uri.query());
        admin.revoke(&name, &pattern(query.get("pattern"))?).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `GET /api/v1/admin/public`.
pub async fn public_list(State(state): State<AppState>, req: Request) -> Response {
    handle(state, req, false, |admin, _, _| async move {
        Ok(json(StatusCode::OK, &admin.public_list().await?.into()))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternList {
    patterns: Vec<String>,
}

/// `POST /api/v1/admin/public`.
pub async fn public_add(State(state): State<AppState>, req: Request) -> Response {
    handle(state, req, true, |admin, _, bytes| async move {
        let p: PatternList = body(&bytes)?;
        let list = p
            .patterns
            .iter()
            .map(|p| pattern(Some(p)))
            .collect::<ApiResult<Vec<_>>>()?;
        for p in &list {
            admin.public_add(p).await?;
        }
        Ok(json(StatusCode::OK, &admin.public_list().await?.into()))
    })
    .await
}

/// `DELETE /api/v1/admin/public?pattern=P`.
pub async fn public_remove(State(state): State<AppState>, req: Request) -> Response {
    handle(state, req, true, |admin, parts, _| async move {
        let query = Query::parse(parts.uri.query());
        admin.public_remove(&pattern(query.get("pattern"))?).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `GET /api/v1/admin/audit[?since=1d][&limit=N]`.
pub async fn audit(State(state): State<AppState>, req: Request) -> Response {
    handle(state, req, false, |admin, parts, _| async move {
        let query = Query::parse(parts.uri.query());
        let since = match query.get("since") {
            None => 0,
            Some(raw) => {
                let d = crate::config::parse_duration(raw)
                    .map_err(|e| RegistryError::ParameterInvalid(format!("since {raw:?}: {e}")))?;
                berth_oci::time::now()
                    .saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            }
        };
        let limit = match query.get("limit") {
            None => 100,
            Some(raw) => raw.parse::<usize>().map_err(|_| {
                RegistryError::ParameterInvalid(format!("limit {raw:?} is not a number"))
            })?,
        }
        .min(MAX_AUDIT);
        let events: Vec<_> = admin
            .audit_log(since, limit)
            .await?
            .iter()
            .map(|e| {
                serde_json::json!({"at": rfc3339(e.at), "actor": e.actor, "action": e.action,
                    "target": e.target, "detail": e.detail, "client": e.client})
            })
            .collect();
        Ok(json(StatusCode::OK, &events.into()))
    })
    .await
}
