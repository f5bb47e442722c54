//! `GET /token` and `POST /token`: the Docker token endpoint.
//!
//! `GET` takes HTTP Basic credentials (or none, for public pulls) and `scope`
//! parameters; `POST` is the OAuth2 password grant some clients use. The answer is a
//! short-lived signed token whose `access` claim holds only the actions actually granted.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_auth::Scope;

use super::{client_ip, error_response, Query};
use crate::auth::{decode_basic, AuthError, LoginError, Principal};
use crate::error::{ApiError, ApiResult};
use crate::events::Event;
use crate::AppState;

async fn principal_for(
    state: &AppState,
    credentials: Option<(String, String)>,
    client: IpAddr,
) -> ApiResult<Principal> {
    let public = state.auth.public().await?;
    if state.auth.is_open().await? {
        return Ok(Principal::Open);
    }
    let Some((name, secret)) = credentials else {
        return Ok(Principal::Anonymous { public });
    };
    match state.auth.login(&name, &secret, client).await? {
        Ok((name, grants)) => {
            state
                .events
                .emit(Event::TokenIssued {
                    account: name.clone(),
                    client,
                })
                .await;
            Ok(Principal::Account {
                name,
                grants,
                public,
            })
        }
        Err(LoginError::RateLimited) => Err(AuthError::RateLimited.into()),
        Err(LoginError::Invalid) => {
            Err(AuthError::Unauthenticated("invalid username or password".into()).into())
        }
    }
}

fn answer(state: &AppState, principal: &Principal, scopes: &[Scope]) -> ApiResult {
    let (token, granted) = state.auth.issue(principal, scopes)?;
    let now = berth_oci::time::now();
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": state.auth.token_ttl.as_secs(),
        "issued_at": berth_oci::time::rfc3339(now),
        "scope": granted.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" "),
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response())
}

fn basic(headers: &HeaderMap) -> ApiResult<Option<(String, String)>> {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::Unauthenticated(
            "the token endpoint takes Basic credentials".into(),
        )
        .into());
    }
    decode_basic(rest)
        .map(Some)
        .ok_or_else(|| AuthError::Unauthenticated("malformed Basic credentials".into()).into())
}

pub async fn get(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let client = client_ip(&parts.extensions);
    let query = Query::parse(parts.uri.query());
    let result = async {
        let creds = basic(&parts.headers)?;
        let principal = principal_for(&state, creds, client).await?;
        answer(&state, &principal, &Scope::parse_all(query.all("scope")))
    }
    .await;
    result.unwrap_or_else(|e| error_response(&state, e, None, false))
}

pub async fn post(State(state): State<AppState>, req: Request) -> Response {
    let client = client_ip(req.extensions());
    let result = async {
        let body = axum::body::to_bytes(req.into_body(), 64 << 10)
            .await
            .map_err(|_| AuthError::BadRequest("token request body is too large".into()))?;
        let form = Query::parse(std::str::from_utf8(&body).ok());
        match form.get("grant_type") {
            Some("password") => {}
            other => {
                return Ok((
                    StatusCode::BAD_REQUEST,
                    [(header::CONTENT_TYPE, "application/json")],
                    serde_json::json!({"error": "unsupported_grant_type",
                        "error_description": format!("grant_type {:?} is not supported; use password", other.unwrap_or(""))})
                    .to_string(),
                )
                    .into_response())
            }
        }
        let creds = match (form.get("username"), form.get("password")) {
            (Some(u), Some(p)) => Some((u.to_owned(), p.to_owned())),
            _ => None,
        };
        let principal = principal_for(&state, creds, client).await?;
        answer(&state, &principal, &Scope::parse_all(form.all("scope")))
    }
    .await;
    result.unwrap_or_else(|e: ApiError| error_response(&state, e, None, false))
}
