//! The scan API (JSON) of scanning on push ([`crate::scanning`]):
//!
//! - `GET /api/v1/scan/<name>/<tag or digest>`: the scan of the image (or of each
//!   platform image of an index) with its findings, matched from the stored package
//!   URLs against the vulnerability database as it is now, in the shape of
//!   `berth scan --json`'s findings. Needs pull on the repository, as pulling it.
//! - `POST /api/v1/admin/scan/rematch`: reloads the database at `scan_db` and matches
//!   every stored scan against it (`{"db_version", "db_imported", "rematched",
//!   "changed"}`). Needs `admin` on `*`.
//!
//! The counts per tag are part of the stats API (`routes::stats`) and the dashboard.

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use berth_auth::Action;
use berth_oci::RepoName;

use super::{client_ip, error_response};
use crate::auth::{AuthError, Principal};
use crate::error::{ApiError, ApiResult};
use crate::service::RegistryError;
use crate::AppState;

fn json<T: serde::Serialize>(v: &T) -> ApiResult<Response> {
    let body = serde_json::to_string(v)
        .map_err(|e| RegistryError::ParameterInvalid(format!("cannot encode the answer: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Refuses a caller who may not pull `repo`: a challenge for anonymous callers, `DENIED`
/// for the others (who learn nothing they could not learn by pulling).
pub(super) async fn require_pull(
    state: &AppState,
    parts: &axum::http::request::Parts,
    repo: &RepoName,
) -> ApiResult<Principal> {
    let p = state
        .auth
        .authenticate(&parts.headers, client_ip(&parts.extensions))
        .await?;
    if p.may(repo.as_str(), Action::Pull) {
        return Ok(p);
    }
    Err(match p {
        Principal::Account { .. } => {
            AuthError::Denied(format!("you may not pull {repo}, so not see its scans"))
        }
        _ => state.auth.challenge(
            Some(&format!("repository:{repo}:pull")),
            None,
            "authentication required",
        ),
    }
    .into())
}

/// `GET /api/v1/scan/<name>/<reference>`.
pub async fn get(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let result = async {
        let target = parts
            .uri
            .path()
            .strip_prefix("/api/v1/scan/")
            .unwrap_or("")
            .to_owned();
        let Some((name, reference)) = target.rsplit_once('/') else {
            return Err(RegistryError::ParameterInvalid(
                "name the image as /api/v1/scan/<repository>/<tag or digest>".into(),
            )
            .into());
        };
        let repo = RepoName::parse(name)?;
        require_pull(&state, &parts, &repo).await?;
        let manifest = state
            .scanner
            .resolve(&repo, reference)
            .await?
            .ok_or_else(|| RegistryError::ManifestUnknown {
                repo: repo.clone(),
                reference: reference.to_owned(),
            })?;
        let images = state.scanner.findings(repo.as_str(), &manifest).await?;
        json(&serde_json::json!({
            "repository": repo.as_str(),
            "reference": reference,
            "digest": manifest.digest.to_string(),
            "media_type": manifest.media_type,
            "images": images,
        }))
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        error_response(&state, e, parts.headers.get(header::HOST), false)
    })
}

/// `POST /api/v1/admin/scan/rematch`.
pub async fn rematch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let result = async {
        super::admin::administrator(&state, &parts).await?;
        json(&state.scanner.rematch_now().await?)
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        error_response(&state, e, parts.headers.get(header::HOST), false)
    })
}
